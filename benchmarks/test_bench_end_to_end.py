"""The retina in the real loop: a GDRAM training step and batch-1 GDRAM / F-GDRAM inference.

The paper's model (``GDRAMConfig()``: 128x128 RGB, T = 8 glimpses of 4 scales of 12, bilinear)
runs with its fused retina and with a peer swapped in as ``model.retina``; both start from the
same seeded weights and are checked to give the same logits before they are timed. The default
run compares the fused retina with peer 2 (per-scale ``grid_sample``, the published Gaussian-RAM
retina); ``--full`` adds every other bilinear peer.

* ``train-...``: zero grads, forward on a batch of 128, hybrid loss, backward, Adam step.
* ``infer-gdram-...`` / ``infer-fgdram-...``: eval mode, no grad, one image, ``fast=False`` /
  ``fast=True`` (F-GDRAM early stopping; the glimpses it used are recorded, as an untrained model
  may not stop early).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from benchmarks.cases import EXACT, FUSED
from benchmarks.harness import full_sweep, synchronised
from benchmarks.peers import PEERS, GlimpseFn
from gdram_ext import RetinaGlimpse

TRAIN_BATCH = 128
WARMUP_STEPS = 1


class PeerRetina(nn.Module):
    """A peer glimpse function with a ``RetinaGlimpse``'s hyper-parameters:
    ``forward(images (B, C, H, W), locations (B, 2)) -> (B, S*C, g, g)``.

    ``exact``: whether ``fn`` computes the fused op's function to float rounding.
    """

    def __init__(self, fn: GlimpseFn, retina: RetinaGlimpse, exact: bool) -> None:
        super().__init__()
        self.fn = fn
        self.exact = exact
        self.hyper = (retina.size, retina.num_scales, retina.scale_factor, retina.mode, retina.base_size)

    def forward(self, images: torch.Tensor, locations: torch.Tensor) -> torch.Tensor:
        return self.fn(images, locations, *self.hyper)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "retina" in metafunc.fixturenames:
        extra = ["grid_sample_vectorised", "roi_align", "naive_crop"] if full_sweep(metafunc.config) else []
        metafunc.parametrize("retina", [FUSED, "grid_sample_per_scale", *extra])


def _model(retina: str, device: torch.device) -> nn.Module:
    """The paper's GDRAM from seeded weights, with the named retina."""
    from gdram.models.config import GDRAMConfig
    from gdram.models.gdram import create_model

    torch.manual_seed(0)
    model = create_model(GDRAMConfig()).to(device)
    if retina != FUSED:
        model.retina = PeerRetina(PEERS[retina].fn, model.retina, retina in EXACT)
    return model


def _data(model: nn.Module, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded images (B, C, H, W) in [0, 1) and labels (B,) for ``model``'s config."""
    config = model.config
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch, config.in_channels, *config.image_hw, generator=generator)
    labels = torch.randint(0, config.num_classes, (batch,), generator=generator)
    return images.to(device), labels.to(device)


def _check_same_glimpses(model: nn.Module, images: torch.Tensor, fast: bool = False) -> None:
    """A swapped-in exact peer gives the fused retina's glimpses at every location the model visits
    (approximate peers: the same shape). Logits would compare float rounding amplified by T steps."""
    if not isinstance(model.retina, PeerRetina):
        return
    fused = RetinaGlimpse(*model.retina.hyper)
    with torch.no_grad():
        for location in model(images, fast=fast).locations:
            got, expected = model.retina(images, location), fused(images, location)
            assert got.shape == expected.shape
            if model.retina.exact:
                torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def _case(model: nn.Module, kind: str, batch: int, device: torch.device) -> tuple[str, dict[str, object]]:
    """The group name and the case's ``extra_info`` of a model benchmark."""
    config = model.config
    height, width = config.image_hw
    group = f"{kind}-B{batch}-T{config.num_glimpses}-{height}x{width}-{device}"
    info = {"kind": kind, "batch": batch, "num_glimpses": config.num_glimpses, "height": height, "width": width}
    return group, info


def test_train_step(benchmark, retina: str, device: torch.device, extra_info: dict[str, object]) -> None:
    from gdram.training.loss import hybrid_loss

    model = _model(retina, device).train()
    images, labels = _data(model, TRAIN_BATCH, device)
    _check_same_glimpses(model, images)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        hybrid_loss(model(images), labels).total.backward()
        optimizer.step()

    benchmark.group, info = _case(model, "train-gdram", TRAIN_BATCH, device)
    benchmark.extra_info.update(extra_info, implementation=retina, **info)
    benchmark(synchronised(step, device, warmup=WARMUP_STEPS))


@pytest.mark.parametrize("fast", [False, True], ids=["gdram", "fgdram"])
def test_inference_latency(
    benchmark, retina: str, fast: bool, device: torch.device, extra_info: dict[str, object]
) -> None:
    model = _model(retina, device).eval()
    images, _ = _data(model, 1, device)
    _check_same_glimpses(model, images, fast)
    with torch.no_grad():
        used = int(model(images, fast=fast).glimpses_used.sum())

    def infer() -> None:
        with torch.no_grad():
            model(images, fast=fast)

    benchmark.group, info = _case(model, "infer-fgdram" if fast else "infer-gdram", 1, device)
    benchmark.extra_info.update(extra_info, implementation=retina, glimpses_used=used, **info)
    benchmark(synchronised(infer, device, warmup=WARMUP_STEPS))
