"""GDRAM: Gaussian Deep Recurrent Attention Models on the fused retina glimpse."""
