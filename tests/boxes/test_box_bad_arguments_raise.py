"""Bad input to ``box_glimpse``: every documented misuse raises a ``TypeError``/``ValueError``
that names the argument, from the public operator and from the reference alike; the checks read
only metadata (they run on meta tensors)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from gdram_ext import MODES, box_glimpse, reference
from gdram_ext.validation import check_box_arguments

FUNCTIONS = pytest.mark.parametrize("fn", [box_glimpse, reference.box_glimpse], ids=["operator", "reference"])


def good_arguments() -> dict:
    return {
        "images": torch.randn(2, 3, 8, 9),
        "centres": torch.zeros(2, 4, 2),
        "sides": torch.full((2, 4), 3.0),
        "size": 4,
        "mode": "bilinear",
    }


# (id, changes to the good arguments, word the message must contain)
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
    ("images-no-columns", {"images": torch.randn(2, 3, 8, 0)}, "images"),
    ("centres-2d", {"centres": torch.zeros(2, 2)}, "centres"),
    ("centres-3-columns", {"centres": torch.zeros(2, 4, 3)}, "centres"),
    ("centres-4d", {"centres": torch.zeros(2, 4, 2, 1)}, "centres"),
    ("centres-int", {"centres": torch.zeros(2, 4, 2, dtype=torch.int32)}, "centres"),
    ("centres-bool", {"centres": torch.zeros(2, 4, 2, dtype=torch.bool)}, "centres"),
    ("centres-list", {"centres": [[[0.0, 0.0]] * 4] * 2}, "centres"),
    ("sides-1d", {"sides": torch.ones(2)}, "sides"),
    ("sides-3-columns", {"sides": torch.ones(2, 4, 3)}, "sides"),
    ("sides-1-column", {"sides": torch.ones(2, 4, 1)}, "sides"),
    ("sides-4d", {"sides": torch.ones(2, 4, 2, 1)}, "sides"),
    ("sides-int", {"sides": torch.ones(2, 4, dtype=torch.int64)}, "sides"),
    ("sides-float", {"sides": 3.0}, "sides"),
    ("batch-mismatch-centres", {"centres": torch.zeros(3, 4, 2)}, "batch"),
    ("batch-mismatch-sides", {"sides": torch.ones(1, 4)}, "batch"),
    ("batch-mismatch-rectangles", {"sides": torch.ones(3, 4, 2)}, "batch"),
    ("boxes-mismatch", {"sides": torch.ones(2, 5)}, "boxes"),
    ("boxes-mismatch-rectangles", {"sides": torch.ones(2, 3, 2)}, "boxes"),
    ("centres-on-meta", {"centres": torch.zeros(2, 4, 2, device="meta")}, "device"),
    ("sides-on-meta", {"sides": torch.ones(2, 4, device="meta")}, "device"),
    ("images-on-meta", {"images": torch.randn(2, 3, 8, 9, device="meta")}, "device"),
    ("size-0", {"size": 0}, "size"),
    ("size-negative", {"size": -3}, "size"),
    ("size-float", {"size": 4.0}, "size"),
    ("size-bool", {"size": True}, "size"),
    ("size-none", {"size": None}, "size"),
    ("size-string", {"size": "4"}, "size"),
    ("size-tensor", {"size": torch.tensor(4)}, "size"),
    ("size-pair-with-0", {"size": (4, 0)}, "size"),
    ("size-pair-with-negative", {"size": (-1, 4)}, "size"),
    ("size-pair-with-float", {"size": (4, 2.0)}, "size"),
    ("size-pair-with-bool", {"size": (True, 4)}, "size"),
    ("size-triple", {"size": (4, 4, 4)}, "size"),
    ("size-single", {"size": (4,)}, "size"),
    ("size-empty", {"size": ()}, "size"),
    ("size-set", {"size": {4, 5}}, "size"),
    ("size-numpy-array", {"size": np.array([4, 4])}, "size"),
    ("mode-unknown", {"mode": "nearest"}, "mode"),
    ("mode-capitalised", {"mode": "Bilinear"}, "mode"),
    ("mode-none", {"mode": None}, "mode"),
]


@FUNCTIONS
@pytest.mark.parametrize(("changes", "name"), [pytest.param(c, n, id=i) for i, c, n in BAD_ARGUMENTS])
def test_bad_argument_raises_a_python_error_naming_it(fn: Callable, changes: dict, name: str) -> None:
    arguments = {**good_arguments(), **changes}
    with pytest.raises((TypeError, ValueError), match=rf"\b{name}\b"):
        fn(**arguments)


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"images": np.zeros((2, 3, 8, 9), dtype=np.float32)}, TypeError),
        ({"images": torch.zeros(2, 3, 8, 9, dtype=torch.int64)}, TypeError),
        ({"centres": torch.zeros(2, 4, 2, dtype=torch.int32)}, TypeError),
        ({"sides": torch.ones(2, 4, dtype=torch.int64)}, TypeError),
        ({"images": torch.randn(3, 8, 9)}, ValueError),
        ({"sides": torch.ones(2, 5)}, ValueError),
        ({"size": 0}, ValueError),
        ({"mode": "nearest"}, ValueError),
    ],
)
def test_wrong_types_raise_type_errors_and_wrong_values_value_errors(changes: dict, error: type) -> None:
    with pytest.raises(error):
        box_glimpse(**{**good_arguments(), **changes})


@pytest.mark.parametrize(
    ("size", "expected"),
    [(4, (4, 4)), ((2, 7), (2, 7)), ([3, 1], (3, 1)), (np.int64(5), (5, 5)), ((np.int32(2), 3), (2, 3))],
)
def test_check_box_arguments_returns_the_output_rows_and_columns(size, expected: tuple[int, int]) -> None:
    arguments = {**good_arguments(), "size": size}
    got = check_box_arguments(**arguments)
    assert got == expected
    assert all(type(value) is int for value in got)


@pytest.mark.parametrize("mode", MODES)
def test_bad_argument_in_area_mode_raises_too(mode: str) -> None:
    arguments = {**good_arguments(), "mode": mode}
    with pytest.raises(ValueError, match=r"\bsize\b"):
        box_glimpse(**{**arguments, "size": (3, 0)})
    with pytest.raises(ValueError, match=r"\bbatch\b"):
        box_glimpse(**{**arguments, "centres": torch.zeros(1, 4, 2)})


@FUNCTIONS
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("square", [True, False])
def test_checks_read_only_metadata_so_the_call_runs_on_meta_tensors(fn: Callable, mode: str, square: bool) -> None:
    """Meta tensors hold no values: any check reading a value back to the host would fail here."""
    images = torch.empty(3, 2, 9, 7, device="meta", requires_grad=True)
    centres = torch.empty(3, 4, 2, device="meta", requires_grad=True)
    sides = torch.empty((3, 4) if square else (3, 4, 2), device="meta", requires_grad=True)
    out = fn(images, centres, sides, (5, 6), mode)
    assert out.shape == (3, 4, 2, 5, 6)
    assert out.device.type == "meta"
    out.sum().backward()
    assert images.grad.shape == images.shape
    assert centres.grad.shape == centres.shape
    assert sides.grad.shape == sides.shape
