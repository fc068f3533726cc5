"""Bad input: every documented misuse raises a clear exception that names the argument.

Three entry points are checked: the Python wrapper (``TypeError``/``ValueError``), the
reference (same checks), and the raw dispatcher op (``RuntimeError`` from the C++ checks).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch

from gdram_ext import MODES, RetinaGlimpse, reference, retina_glimpse

RAW = torch.ops.gdram_ext.retina_glimpse.default
RAW_BACKWARD = torch.ops.gdram_ext.retina_glimpse_backward.default


def good_arguments() -> dict:
    return {
        "images": torch.randn(2, 3, 8, 9),
        "locations": torch.zeros(2, 2),
        "size": 4,
        "num_scales": 2,
        "scale_factor": 2.0,
        "mode": "bilinear",
        "base_size": None,
    }


# (id, changes to the good arguments, argument name the message must contain)
BAD_ARGUMENTS = [
    ("images-3d", {"images": torch.randn(3, 8, 9)}, "images"),
    ("images-5d", {"images": torch.randn(2, 3, 8, 9, 1)}, "images"),
    ("images-int", {"images": torch.zeros(2, 3, 8, 9, dtype=torch.int64)}, "images"),
    ("images-uint8", {"images": torch.zeros(2, 3, 8, 9, dtype=torch.uint8)}, "images"),
    ("images-bool", {"images": torch.zeros(2, 3, 8, 9, dtype=torch.bool)}, "images"),
    ("images-complex", {"images": torch.zeros(2, 3, 8, 9, dtype=torch.complex64)}, "images"),
    ("images-float8", {"images": torch.zeros(2, 3, 8, 9).to(torch.float8_e4m3fn)}, "images"),
    ("images-numpy", {"images": np.zeros((2, 3, 8, 9), dtype=np.float32)}, "images"),
    ("images-no-channels", {"images": torch.randn(2, 0, 8, 9)}, "images"),
    ("images-no-rows", {"images": torch.randn(2, 3, 0, 9)}, "images"),
    ("locations-1d", {"locations": torch.zeros(2)}, "locations"),
    ("locations-3-columns", {"locations": torch.zeros(2, 3)}, "locations"),
    ("locations-3d", {"locations": torch.zeros(2, 2, 1)}, "locations"),
    ("locations-int", {"locations": torch.zeros(2, 2, dtype=torch.int32)}, "locations"),
    ("locations-list", {"locations": [[0.0, 0.0], [0.0, 0.0]]}, "locations"),
    ("batch-mismatch", {"locations": torch.zeros(3, 2)}, "batch"),
    ("locations-on-meta", {"locations": torch.zeros(2, 2, device="meta")}, "device"),
    ("images-on-meta", {"images": torch.randn(2, 3, 8, 9, device="meta")}, "device"),
    ("size-0", {"size": 0}, "size"),
    ("size-negative", {"size": -3}, "size"),
    ("size-float", {"size": 4.5}, "size"),
    ("size-bool", {"size": True}, "size"),
    ("num_scales-0", {"num_scales": 0}, "num_scales"),
    ("num_scales-negative", {"num_scales": -1}, "num_scales"),
    ("num_scales-float", {"num_scales": 2.0}, "num_scales"),
    ("scale_factor-0", {"scale_factor": 0.0}, "scale_factor"),
    ("scale_factor-negative", {"scale_factor": -2.0}, "scale_factor"),
    ("scale_factor-nan", {"scale_factor": math.nan}, "scale_factor"),
    ("scale_factor-inf", {"scale_factor": math.inf}, "scale_factor"),
    ("scale_factor-string", {"scale_factor": "2"}, "scale_factor"),
    ("base_size-0", {"base_size": 0.0}, "base_size"),
    ("base_size-negative", {"base_size": -4.0}, "base_size"),
    ("base_size-nan", {"base_size": math.nan}, "base_size"),
    ("base_size-inf", {"base_size": math.inf}, "base_size"),
    ("base_size--inf", {"base_size": -math.inf}, "base_size"),
    ("mode-unknown", {"mode": "nearest"}, "mode"),
    ("mode-capitalised", {"mode": "Bilinear"}, "mode"),
    ("mode-none", {"mode": None}, "mode"),
    # Each number is fine, but the last scale's side overflows to inf.
    ("last-side-overflows", {"num_scales": 2000, "scale_factor": 2.0}, "scale_factor"),
    ("last-side-underflows", {"num_scales": 2000, "scale_factor": 1e-3}, "scale_factor"),
]


@pytest.mark.parametrize(("changes", "name"), [pytest.param(c, n, id=i) for i, c, n in BAD_ARGUMENTS])
@pytest.mark.parametrize("fn", [retina_glimpse, reference.retina_glimpse], ids=["operator", "reference"])
def test_bad_argument_raises_a_python_error_naming_it(fn: Callable, changes: dict, name: str) -> None:
    arguments = {**good_arguments(), **changes}
    with pytest.raises((TypeError, ValueError), match=rf"\b{name}\b"):
        fn(**arguments)


@pytest.mark.parametrize("mode", MODES)
def test_bad_argument_in_area_mode_raises_too(mode: str) -> None:
    arguments = {**good_arguments(), "mode": mode}
    with pytest.raises(ValueError, match=r"\bbase_size\b"):
        retina_glimpse(**{**arguments, "base_size": -1.0})
    with pytest.raises(ValueError, match=r"\bbatch\b"):
        retina_glimpse(**{**arguments, "locations": torch.zeros(1, 2)})


def test_retina_glimpse_module_rejects_a_bad_mode_at_construction() -> None:
    with pytest.raises(ValueError, match=r"\bmode\b"):
        RetinaGlimpse(mode="bicubic")


@pytest.mark.parametrize(
    ("changes", "name"),
    [({"size": 0}, "size"), ({"num_scales": 0}, "num_scales"), ({"scale_factor": -1.0}, "scale_factor")],
)
def test_retina_glimpse_module_rejects_bad_hyper_parameters_at_construction(changes: dict, name: str) -> None:
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        RetinaGlimpse(**{"size": 4, "num_scales": 2, "scale_factor": 2.0, **changes})


def test_retina_glimpse_module_rejects_hyper_parameters_changed_after_construction() -> None:
    module = RetinaGlimpse(size=4, num_scales=2)
    module.size = 0
    with pytest.raises(ValueError, match=r"\bsize\b"):
        module(torch.randn(1, 1, 8, 8), torch.zeros(1, 2))


@pytest.mark.parametrize("mode", MODES)
def test_wrapper_checks_only_metadata_so_it_runs_on_meta_tensors(mode: str) -> None:
    """Meta tensors hold no values: any check reading a value back to the host would fail here."""
    images = torch.empty(3, 2, 9, 7, device="meta", requires_grad=True)
    locations = torch.empty(3, 2, device="meta", requires_grad=True)
    out = retina_glimpse(images, locations, 5, 3, 1.5, mode, 2.0)
    assert out.shape == (3, 6, 5, 5)
    assert out.device.type == "meta"
    out.sum().backward()
    assert images.grad.shape == images.shape
    assert locations.grad.shape == locations.shape


# ----------------------------------------------------------------------------------------------
# The raw dispatcher op: the C++ checks
# ----------------------------------------------------------------------------------------------


def raw_arguments() -> list:
    # Schema order (the wrapper's): images, locations, size, num_scales, scale_factor, mode, base_size.
    return [torch.randn(2, 3, 8, 9), torch.zeros(2, 2), 4, 2, 2.0, "bilinear", 4.0]


RAW_BAD_ARGUMENTS = [
    ("images-3d", 0, torch.randn(3, 8, 9), "images"),
    ("images-int", 0, torch.zeros(2, 3, 8, 9, dtype=torch.int32), "images"),
    # A floating dtype the kernels were not built for: named like the others, not a dispatch error.
    ("images-float8", 0, torch.zeros(2, 3, 8, 9).to(torch.float8_e4m3fn), "images"),
    ("images-no-columns", 0, torch.randn(2, 3, 8, 0), "images"),
    ("locations-3-columns", 1, torch.zeros(2, 3), "locations"),
    ("locations-int", 1, torch.zeros(2, 2, dtype=torch.int64), "locations"),
    ("batch-mismatch", 1, torch.zeros(5, 2), "batch"),
    ("size-0", 2, 0, "size"),
    ("size-negative", 2, -2, "size"),
    ("num_scales-0", 3, 0, "num_scales"),
    ("scale_factor-0", 4, 0.0, "scale_factor"),
    ("scale_factor-nan", 4, math.nan, "scale_factor"),
    ("scale_factor-inf", 4, math.inf, "scale_factor"),
    ("base_size-negative", 6, -1.0, "base_size"),
    ("base_size-nan", 6, math.nan, "base_size"),
    ("base_size-inf", 6, math.inf, "base_size"),
    ("mode-unknown", 5, "nearest", "mode"),
    ("last-side-overflows", 3, 5000, "scale_factor"),
]


@pytest.mark.parametrize(
    ("position", "value", "name"), [pytest.param(p, v, n, id=i) for i, p, v, n in RAW_BAD_ARGUMENTS]
)
def test_raw_op_with_a_bad_argument_raises_a_runtime_error_naming_it(position: int, value: object, name: str) -> None:
    arguments = raw_arguments()
    arguments[position] = value
    with pytest.raises(RuntimeError, match=rf"\b{name}\b"):
        RAW(*arguments)


def test_raw_op_with_images_and_locations_on_different_devices_raises_a_runtime_error() -> None:
    images, locations, *rest = raw_arguments()
    with pytest.raises(RuntimeError, match=r"\bdevice\b"):
        RAW(images, locations.to("meta"), *rest)
    with pytest.raises(RuntimeError, match=r"\bdevice\b"):
        RAW(images.to("meta"), locations, *rest)


@pytest.mark.parametrize(
    ("position", "value", "name"),
    [
        pytest.param(0, torch.empty(2, 3, 8, 9, dtype=torch.int32, device="meta"), "images", id="images-int"),
        pytest.param(1, torch.empty(5, 2, device="meta"), "batch", id="batch-mismatch"),
        pytest.param(2, 0, "size", id="size-0"),
        pytest.param(5, "nearest", "mode", id="mode-unknown"),
    ],
)
def test_raw_op_on_meta_tensors_rejects_bad_arguments_like_the_cpu_kernel(
    position: int, value: object, name: str
) -> None:
    """The meta/fake kernel stands in for the real ones under torch.compile and on meta tensors:
    it must not accept what every real kernel rejects."""
    arguments = raw_arguments()
    arguments[0], arguments[1] = arguments[0].to("meta"), arguments[1].to("meta")
    arguments[position] = value
    with pytest.raises(RuntimeError, match=rf"\b{name}\b"):
        RAW(*arguments)


def test_raw_backward_op_with_a_wrong_grad_output_shape_raises_a_runtime_error() -> None:
    images, locations, *hyper = raw_arguments()
    grad_output = torch.zeros(2, 5, 4, 4)  # should be (2, 2 * 3, 4, 4)
    with pytest.raises(RuntimeError, match=r"\bgrad_output\b"):
        RAW_BACKWARD(grad_output, images, locations, *hyper, True, True)


def test_raw_backward_op_on_meta_tensors_rejects_a_wrong_grad_output_shape_like_the_cpu_kernel() -> None:
    images, locations, *hyper = (x.to("meta") if isinstance(x, torch.Tensor) else x for x in raw_arguments())
    grad_output = torch.empty(2, 5, 4, 4, device="meta")  # should be (2, 2 * 3, 4, 4)
    with pytest.raises(RuntimeError, match=r"\bgrad_output\b"):
        RAW_BACKWARD(grad_output, images, locations, *hyper, True, True)


def test_raw_backward_op_checks_the_forward_arguments_too() -> None:
    images, locations, *hyper = raw_arguments()
    hyper[3] = "nearest"
    with pytest.raises(RuntimeError, match=r"\bmode\b"):
        RAW_BACKWARD(torch.zeros(2, 6, 4, 4), images, locations, *hyper, True, True)
