"""A seconds-short case for ``compute-sanitizer`` (step 1 of ``benchmarks/gpu/run.sh``): every CUDA kernel of
gdram_ext, forward and backward, once per dtype and mode, on small inputs.

The retina op on contiguous, channels_last and strided (every other pixel) images, with locations inside,
on the edge of and outside the image and one NaN; ``box_glimpse`` (when present: ``images (B, C, H, W),
centres (B, K, 2), sides (B, K) px, size, mode -> (B, K, C, h, w)``) with boxes inside, across the border and
outside, a rectangular output, gradients to images, centres and sides. Exit status 0 when every call ran and
its output is finite where the inputs are; 1 otherwise (the sanitizer's own findings set its exit status:
run it with ``--error-exitcode``). Run under memcheck with ``PYTORCH_NO_CUDA_MEMORY_CACHING=1`` so that every
tensor is its own allocation and an access past one is caught.

``compute-sanitizer --tool memcheck --error-exitcode 3 python3 benchmarks/gpu/sanitize_case.py [--device cpu]``
"""

from __future__ import annotations

import argparse
import sys
import traceback

import torch
from gpubench import pick_device

import gdram_ext
from gdram_ext import MODES, retina_glimpse

DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def layouts(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The same images contiguous, channels_last and as a strided view (every other pixel of a larger one)."""
    batch, channels, height, width = images.shape
    big = images.new_zeros(batch, channels, 2 * height, 2 * width)
    big[:, :, ::2, ::2] = images
    return {
        "contiguous": images.contiguous(),
        "channels_last": images.contiguous(memory_format=torch.channels_last),
        "strided": big[:, :, ::2, ::2],
    }


def retina_case(device: torch.device, dtype: torch.dtype, mode: str, layout: str) -> None:
    """Forward and backward of the retina op on 4 images of 2x13x17, 3 scales of 5 (factor 1.7)."""
    images = layouts(torch.randn(4, 2, 13, 17, device=device).to(dtype))[layout].requires_grad_()
    locations = torch.tensor([[0.1, -0.3], [0.99, -1.0], [1.6, 1.4], [float("nan"), 0.0]], device=device)
    locations.requires_grad_()
    out = retina_glimpse(images, locations, 5, 3, 1.7, mode, 4.0)
    grad_images, grad_locations = torch.autograd.grad(out, (images, locations), torch.randn_like(out))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    if not bool(out[:3].isfinite().all()) or not bool(grad_images.isfinite().all()):
        raise AssertionError("a non-finite retina output or image gradient from finite inputs")
    del grad_locations


def box_case(device: torch.device, dtype: torch.dtype, mode: str, layout: str) -> None:
    """Forward and backward of ``box_glimpse`` on 2 images of 3x20x24, 3 boxes each, 5x4 output."""
    box_glimpse = gdram_ext.box_glimpse
    images = layouts(torch.randn(2, 3, 20, 24, device=device).to(dtype))[layout].requires_grad_()
    centres = torch.tensor(
        [[[0.0, 0.1], [0.95, -0.9], [1.5, 0.2]], [[-0.4, 0.3], [0.2, 0.2], [-1.3, -1.2]]], device=device
    ).requires_grad_()
    sides = torch.tensor([[6.0, 9.5, 4.0], [3.0, 17.0, 8.0]], device=device).requires_grad_()
    out = box_glimpse(images, centres, sides, (5, 4), mode)
    grads = torch.autograd.grad(out, (images, centres, sides), torch.randn_like(out))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    if not all(bool(tensor.isfinite().all()) for tensor in (out, *grads)):
        raise AssertionError("a non-finite box output or gradient from finite inputs")


def main(argv: list[str] | None = None) -> int:
    """Run every case once; print one line per case; 1 if any raised."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cuda or cpu")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    torch.manual_seed(0)
    print(f"gdram_ext {gdram_ext.backend()} from {gdram_ext.__file__}; device {device}", flush=True)
    cases = [("retina", retina_case)]
    if hasattr(gdram_ext, "box_glimpse"):
        cases.append(("box_glimpse", box_case))
    else:
        print("box_glimpse: not in this gdram_ext (skipped)", flush=True)
    failed = 0
    for name, case in cases:
        for dtype in DTYPES:
            for mode in MODES:
                for layout in ("contiguous", "channels_last", "strided"):
                    try:
                        case(device, dtype, mode, layout)
                        print(f"ok     {name} {dtype} {mode} {layout}", flush=True)
                    except Exception:
                        failed += 1
                        print(f"FAILED {name} {dtype} {mode} {layout}", flush=True)
                        traceback.print_exc()
    print(f"sanitize_case: {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
