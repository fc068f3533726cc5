"""The ``gdram_ext::retina_glimpse`` and ``gdram_ext::box_glimpse`` operators: their Python entry
points, fake tensors and autograd.

The compiled kernels (``gdram_ext._C``) register the operators with the PyTorch dispatcher;
this module adds what the dispatcher needs from Python (a fake implementation for
``torch.compile``/meta tensors and the autograd formula, both through ``torch.library``)
and the documented wrappers. When the kernels are missing, the wrappers run
:mod:`gdram_ext.reference` instead.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import warnings
from pathlib import Path
from typing import NamedTuple

import torch

from gdram_ext import reference
from gdram_ext.contract import base_side
from gdram_ext.validation import check_arguments, check_box_arguments

PACKAGE_DIR = Path(__file__).resolve().parent


def compiled_module_files(folder: Path) -> list[Path]:
    """The compiled extension files ``_C<suffix>`` (e.g. ``_C.cpython-311-x86_64-linux-gnu.so``) in ``folder``."""
    found = []
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        try:
            if (folder / f"_C{suffix}").is_file():
                found.append(folder / f"_C{suffix}")
        except OSError:  # an unreadable sys.path entry
            continue
    return found


def other_compiled_copies() -> list[Path]:
    """Folders named ``gdram_ext`` elsewhere on ``sys.path`` that hold a compiled extension: an
    installed copy that the imported package folder shadows."""
    found = []
    for entry in sys.path:
        folder = (Path(entry or ".") / "gdram_ext").resolve()
        if folder != PACKAGE_DIR and folder not in found and compiled_module_files(folder):
            found.append(folder)
    return found


def missing_kernels_message(error: ImportError) -> str:
    """Why the compiled kernels did not load, naming the imported package folder, and what to do."""
    files = compiled_module_files(PACKAGE_DIR)
    if files:
        cause = f"{files[0]} exists but failed to load ({error}); rebuild it against this torch {torch.__version__}"
    else:
        cause = f"the imported package folder {PACKAGE_DIR} has no compiled module _C"
    copies = other_compiled_copies()
    if copies:
        where = (
            f"An installed copy with compiled kernels exists at {copies[0]}, but {PACKAGE_DIR} comes first on "
            "sys.path (usually a source checkout imported from its root directory): run from another directory, "
            "or build in place with `python setup.py build_ext --inplace`."
        )
    else:
        where = (
            "No other copy of gdram_ext with compiled kernels is on sys.path: reinstall with "
            "`pip install --no-build-isolation .` to build them."
        )
    return (
        f"gdram_ext: the compiled kernels could not be loaded: {cause}. {where} "
        "Using the pure-PyTorch reference implementation."
    )


try:
    _C = importlib.import_module("gdram_ext._C")
except ImportError as error:  # no compiler at install time, an ABI mismatch, or a shadowing source folder
    _C = None
    warnings.warn(missing_kernels_message(error), RuntimeWarning, stacklevel=2)


class Backend(NamedTuple):
    """Which implementation runs the operators: ``name`` is ``"compiled"`` or ``"reference"``;
    ``kernels`` lists the devices the compiled kernels were built for (``"cpu"``, ``"cuda"``)."""

    name: str
    kernels: tuple[str, ...]


def backend() -> Backend:
    """The active backend and the compiled kernels, e.g. ``Backend(name='compiled', kernels=('cpu', 'cuda'))``."""
    if _C is None:
        return Backend("reference", ())
    return Backend("compiled", ("cpu", "cuda") if _C.cuda_compiled else ("cpu",))


def _has_kernel(device: torch.device) -> bool:
    if _C is None:
        return False
    return device.type in ("cpu", "meta") or (device.type == "cuda" and _C.cuda_compiled)


def retina_glimpse(
    images: torch.Tensor,
    locations: torch.Tensor,
    size: int = 12,
    num_scales: int = 4,
    scale_factor: float = 2.0,
    mode: str = "bilinear",
    base_size: float | None = None,
) -> torch.Tensor:
    """Multi-scale retina glimpse: crop, resize and concatenate every scale in one fused pass.

    Scale ``i`` covers a square of side ``base_size * scale_factor**i`` pixels centred at the
    location, sampled on a ``size x size`` grid of cells.

    Args:
        images: (B, C, H, W), float32/float64/float16/bfloat16, any strides.
        locations: (B, 2) glimpse centres (x, y): -1 is the left/top edge of the image, +1 the
            right/bottom edge (``grid_sample`` with ``align_corners=False``); may lie outside.
        size: cells per side of every scale's output.
        num_scales: number of scales.
        scale_factor: ratio of each scale's side to the previous one's.
        mode: ``"bilinear"`` (sample at each cell's centre, zeros outside; equals per-scale
            ``affine_grid`` + ``grid_sample`` + ``cat``) or ``"area"`` (exact mean over each cell,
            anti-aliased).
        base_size: side in pixels of the first scale; defaults to ``size``.

    Returns:
        (B, num_scales * C, size, size), scale-major (channels ``[i*C, (i+1)*C)`` hold scale
        ``i``), dtype of ``images``. Differentiable with respect to images and locations.
    """
    check_arguments(images, locations, size, num_scales, scale_factor, mode, base_size)
    if not _has_kernel(images.device):
        return reference.glimpse(images, locations, size, num_scales, scale_factor, mode, base_size)
    return torch.ops.gdram_ext.retina_glimpse.default(
        images, locations, int(size), int(num_scales), float(scale_factor), mode, base_side(size, base_size)
    )


def box_glimpse(
    images: torch.Tensor,
    centres: torch.Tensor,
    sides: torch.Tensor,
    size: int | tuple[int, int],
    mode: str = "bilinear",
) -> torch.Tensor:
    """K boxes per image, each with its own centre and sides, cropped and resized in one fused pass.

    Box ``(b, k)`` covers ``[cx - sx/2, cx + sx/2) x [cy - sy/2, cy + sy/2)`` pixels, with
    ``cx = (x + 1) / 2 * W`` and ``cy = (y + 1) / 2 * H`` from its centre ``(x, y)``, cut into
    ``h`` rows and ``w`` columns of cells of ``sx / w`` by ``sy / h`` pixels. ``retina_glimpse`` is
    the case of ``num_scales`` boxes sharing one centre, box ``i`` of side ``base_size * scale_factor**i``.

    Args:
        images: (B, C, H, W), float32/float64/float16/bfloat16, any strides.
        centres: (B, K, 2) box centres (x, y): -1 is the left/top edge of the image, +1 the
            right/bottom edge (the retina's coordinates); may lie outside.
        sides: (B, K) sides of square boxes, or (B, K, 2) (width, height), in pixels.
        size: cells per box: an int (h = w) or a pair (h, w).
        mode: ``"bilinear"`` (sample at each cell's centre, zeros outside; equals
            ``roi_align(aligned=True, sampling_ratio=1)`` for boxes inside the image) or ``"area"``
            (exact mean over each cell, pixels outside count as zero: the anti-aliased downscale).

    Returns:
        (B, K, C, h, w), dtype of ``images``. Differentiable with respect to images, centres and
        sides. A box whose side is not finite and > 0, or whose centre is not finite, reads zeros.
    """
    h, w = check_box_arguments(images, centres, sides, size, mode)
    if not _has_kernel(images.device):
        return reference.boxes(images, centres, sides, (h, w), mode)
    return torch.ops.gdram_ext.box_glimpse.default(images, centres, sides, [h, w], mode)


if _C is not None:

    def _check_fake(images, locations, size, num_scales, scale_factor, mode, base_size) -> None:
        """The kernels' checks, for calls that reach the fake (meta) implementation: same
        exception type (``RuntimeError``) and the same argument named."""
        try:
            check_arguments(images, locations, size, num_scales, scale_factor, mode, base_size)
        except (TypeError, ValueError) as error:
            raise RuntimeError(f"retina_glimpse: {error}") from error

    @torch.library.register_fake("gdram_ext::retina_glimpse")
    def _fake_forward(images, locations, size, num_scales, scale_factor, mode, base_size):
        _check_fake(images, locations, size, num_scales, scale_factor, mode, base_size)
        batch, channels = images.shape[:2]
        return images.new_empty((batch, num_scales * channels, size, size))

    @torch.library.register_fake("gdram_ext::retina_glimpse_backward")
    def _fake_backward(
        grad_output, images, locations, size, num_scales, scale_factor, mode, base_size, images_grad, locations_grad
    ):
        _check_fake(images, locations, size, num_scales, scale_factor, mode, base_size)
        expected = (images.shape[0], num_scales * images.shape[1], size, size)
        torch._check(
            tuple(grad_output.shape) == expected and grad_output.device == images.device,
            lambda: (
                f"retina_glimpse_backward: grad_output must have shape {expected} on {images.device}, "
                f"got {tuple(grad_output.shape)} on {grad_output.device}"
            ),
        )
        grad_images = (
            torch.empty_like(images, memory_format=torch.contiguous_format) if images_grad else images.new_empty(0)
        )
        grad_locations = (
            torch.empty_like(locations, memory_format=torch.contiguous_format)
            if locations_grad
            else (locations.new_empty(0))
        )
        return grad_images, grad_locations

    def _setup_context(ctx, inputs, output):
        images, locations, *ctx.hyper = inputs
        ctx.save_for_backward(images, locations)

    def _backward(ctx, grad_output):
        images, locations = ctx.saved_tensors
        images_grad, locations_grad = ctx.needs_input_grad[:2]
        grad_images, grad_locations = torch.ops.gdram_ext.retina_glimpse_backward.default(
            grad_output, images, locations, *ctx.hyper, images_grad, locations_grad
        )
        return (
            grad_images if images_grad else None,
            grad_locations if locations_grad else None,
            None,
            None,
            None,
            None,
            None,
        )

    torch.library.register_autograd("gdram_ext::retina_glimpse", _backward, setup_context=_setup_context)

    def _no_double_backward(ctx, grad_images, grad_locations):
        raise RuntimeError(
            "retina_glimpse: the compiled operator has no double backward (second derivatives); "
            "use gdram_ext.reference.retina_glimpse where they are needed"
        )

    torch.library.register_autograd(
        "gdram_ext::retina_glimpse_backward", _no_double_backward, setup_context=lambda ctx, inputs, output: None
    )

    def _check_box_fake(images, centres, sides, size, mode) -> tuple[int, int]:
        """The box kernels' checks for calls that reach the fake implementation (``RuntimeError``)."""
        try:
            return check_box_arguments(images, centres, sides, list(size), mode)
        except (TypeError, ValueError) as error:
            raise RuntimeError(f"box_glimpse: {error}") from error

    @torch.library.register_fake("gdram_ext::box_glimpse")
    def _fake_box_forward(images, centres, sides, size, mode):
        h, w = _check_box_fake(images, centres, sides, size, mode)
        return images.new_empty((images.shape[0], centres.shape[1], images.shape[1], h, w))

    @torch.library.register_fake("gdram_ext::box_glimpse_backward")
    def _fake_box_backward(grad_output, images, centres, sides, size, mode, images_grad, centres_grad, sides_grad):
        h, w = _check_box_fake(images, centres, sides, size, mode)
        expected = (images.shape[0], centres.shape[1], images.shape[1], h, w)
        torch._check(
            tuple(grad_output.shape) == expected and grad_output.device == images.device,
            lambda: (
                f"box_glimpse_backward: grad_output must have shape {expected} on {images.device}, "
                f"got {tuple(grad_output.shape)} on {grad_output.device}"
            ),
        )

        def gradient(tensor: torch.Tensor, wanted: bool) -> torch.Tensor:
            return torch.empty_like(tensor, memory_format=torch.contiguous_format) if wanted else tensor.new_empty(0)

        return gradient(images, images_grad), gradient(centres, centres_grad), gradient(sides, sides_grad)

    def _setup_box_context(ctx, inputs, output):
        images, centres, sides, *ctx.hyper = inputs
        ctx.save_for_backward(images, centres, sides)

    def _box_backward(ctx, grad_output):
        images, centres, sides = ctx.saved_tensors
        wanted = ctx.needs_input_grad[:3]
        grads = torch.ops.gdram_ext.box_glimpse_backward.default(
            grad_output, images, centres, sides, *ctx.hyper, *wanted
        )
        return (*(grad if need else None for grad, need in zip(grads, wanted, strict=True)), None, None)

    torch.library.register_autograd("gdram_ext::box_glimpse", _box_backward, setup_context=_setup_box_context)

    def _no_box_double_backward(ctx, *grads):
        raise RuntimeError(
            "box_glimpse: the compiled operator has no double backward (second derivatives); "
            "use gdram_ext.reference.box_glimpse where they are needed"
        )

    torch.library.register_autograd(
        "gdram_ext::box_glimpse_backward", _no_box_double_backward, setup_context=lambda ctx, inputs, output: None
    )
