"""The high-resolution embedded set ``cluttered-digits-512``: drawn on demand, deterministic, bounded in memory."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gdram.data.canvas import CANVAS_SPECS, CanvasImages
from gdram.data.classes import check_classes, split_labels
from gdram.data.cluttered import ClutterSpec, embedded_sources, generate_cluttered, layout_clutter
from gdram.data.datasets import BatchedImages, DataError, batches
from gdram.data.loading import DATASETS, load_data
from gdram.data.provenance import generator_parameters, locate, verify

NAME = "cluttered-digits-512"
SPEC = CANVAS_SPECS[NAME]
SIDE = SPEC.clutter.canvas_size
PROBES = torch.tensor([0, 1, 4321, 9599])
DIGEST_SCRIPT = (
    "import hashlib, torch; from gdram.data.loading import load_data; "
    "canvases = load_data('cluttered-digits-512').train.canvases(torch.tensor([0, 1, 4321, 9599])); "
    "print(hashlib.sha256(canvases.numpy().tobytes()).hexdigest())"
)
Labelled = tuple[torch.Tensor, torch.Tensor]  # features (N, D), labels (N,)


@pytest.fixture(scope="module")
def data():
    """The set at full size."""
    return load_data(NAME)


def _digest(canvases: torch.Tensor) -> str:
    return hashlib.sha256(canvases.numpy().tobytes()).hexdigest()


def _ink_box(image: torch.Tensor) -> list[float]:
    """x0, y0, x1, y1 of the non-zero pixels of an (H, W) image."""
    rows, cols = torch.nonzero(image.any(1)).flatten(), torch.nonzero(image.any(0)).flatten()
    return [float(cols[0]), float(rows[0]), float(cols[-1]) + 1, float(rows[-1]) + 1]


def _tensors(obj: object) -> list[torch.Tensor]:
    """Every tensor an object holds, in its attributes and its dataclass attributes, recursively."""
    found = []
    for value in vars(obj).values():
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif dataclasses.is_dataclass(value):
            found.extend(_tensors(value))
    return found


def test_is_a_named_set_of_10_classes_on_512_canvases_with_every_box(data):
    assert NAME in DATASETS
    assert (data.num_classes, data.in_channels, data.image_size) == (10, 1, (SIDE, SIDE))
    assert (len(data.train), len(data.val), len(data.test)) == (1200 * 8, 297 * 2, 300 * 2)
    assert check_classes(data) == []
    image, label = data.test[3]
    assert image.shape == (1, SIDE, SIDE) and image.dtype == torch.float32 and 0 <= label < 10
    assert float(image.min()) >= 0 and float(image.max()) <= 1
    for split in (data.train, data.val, data.test):
        assert isinstance(split, BatchedImages) and torch.equal(split_labels(split), split.labels)
        boxes = split.stored_boxes
        assert boxes.shape == (len(split), 4) and bool(torch.isfinite(boxes).all())
        assert bool((boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= SIDE).all())
        assert np.bincount(split.labels.numpy(), minlength=10).min() > 0


def test_same_index_draws_the_same_canvas_in_every_object_batch_and_process(data):
    torch.manual_seed(123)
    np.random.seed(123)
    again = load_data(NAME)
    first = data.train.canvases(PROBES)
    assert torch.equal(first, again.train.canvases(PROBES))
    assert torch.equal(first[2], again.train.canvases(torch.tensor([4321]))[0])  # whatever else is in the batch
    assert not torch.equal(first[0], first[1])
    environment = {**os.environ, "PYTHONHASHSEED": "7", "OMP_NUM_THREADS": "1"}
    other = subprocess.run(
        [sys.executable, "-c", DIGEST_SCRIPT], capture_output=True, text=True, check=True, env=environment
    )
    assert other.stdout.strip() == _digest(first)


def test_digit_lies_inside_its_box_and_the_box_has_the_digits_size(data):
    split = data.val
    layout = split.layout
    bare = dataclasses.replace(
        layout,
        fragment_sources=layout.fragment_sources[:, :0],
        fragment_crops=layout.fragment_crops[:, :0],
        fragment_positions=layout.fragment_positions[:, :0],
    )
    indices = torch.arange(0, len(split), 37)
    alone = CanvasImages(split.digits, split.labels.new_zeros(len(split.digits)), bare, split.spec).canvases(indices)
    cluttered = split.canvases(indices)
    sources = layout.sources[indices].long()
    for canvas, busy, box, digit in zip(
        alone, cluttered, split.stored_boxes[indices], split.digits[sources], strict=True
    ):
        assert box.tolist() == _ink_box(canvas)  # every pixel of the digit, and no more
        x0, y0, x1, y1 = _ink_box(digit)
        assert (box[2] - box[0], box[3] - box[1]) == (x1 - x0, y1 - y0) and max(x1 - x0, y1 - y0) > 14
        assert bool((busy >= canvas).all())  # clutter only adds ink: the digit is never hidden
    assert int(cluttered.count_nonzero()) > 4 * int(alone.count_nonzero())  # the clutter makes the canvas busy


def test_splits_share_no_source_digit_not_even_as_clutter(data):
    sources = embedded_sources(SPEC)
    train, val, test = (set(source.indices.tolist()) for source in sources)
    assert not train & val and not train & test and not val & test
    assert len(train | val | test) == 1797
    for source, split in zip(sources, (data.train, data.val, data.test), strict=True):
        assert torch.equal(split.digits, torch.as_tensor(source.digits))  # the only pixels it draws from
        assert int(split.layout.fragment_sources.max()) < len(source.digits)


def test_holds_no_canvas_only_layouts_and_digits_of_a_few_megabytes(data):
    total = 0
    for split in (data.train, data.val, data.test):
        tensors = _tensors(split)
        assert max(math.prod(tensor.shape[1:]) for tensor in tensors) < 64 * 64  # no item is even a 64x64 image
        assert sum(tensor.nbytes for tensor in tensors) == split.nbytes()
        assert split.layout.nbytes() < 1000 * len(split)  # under 1 KB per image, against 256 KiB per canvas
        total += split.nbytes()
    assert total < 12e6


def test_drawn_canvases_equal_the_stored_generators_images():
    spec = ClutterSpec(canvas_size=48, digit_size=12, num_clutter=5, fragment_size=6)
    digits = np.random.default_rng(0).integers(0, 256, size=(7, 12, 12), dtype=np.uint8)
    labels = np.arange(7) % 3
    images, targets, boxes = generate_cluttered(digits, labels, 20, spec, seed=4)
    drawn = CanvasImages(digits, labels, layout_clutter(7, 7, 20, spec, seed=4), spec)
    batch, batch_labels = drawn.batch(torch.arange(20))
    assert torch.equal(batch, torch.from_numpy(images)[:, None].float() / 255)
    assert torch.equal(batch_labels, torch.from_numpy(targets)) and torch.equal(
        drawn.stored_boxes, torch.from_numpy(boxes)
    )


def test_downscaled_rendering_has_the_requested_size_and_averages_the_canvas(data):
    small = load_data(NAME, image_size=64)
    assert small.image_size == (64, 64) and small.train.image_size == (64, 64)
    images, labels = small.train.batch(PROBES)
    full, _ = data.train.batch(PROBES)
    assert images.shape == (4, 1, 64, 64) and torch.equal(labels, data.train.labels[PROBES])
    assert torch.allclose(images, F.avg_pool2d(full, 8), atol=1e-6)
    oblong, _ = load_data(NAME, image_size=(48, 80)).val.batch(torch.arange(3))
    assert oblong.shape == (3, 1, 48, 80)


def test_batches_take_the_fast_path_and_yield_boxes_scaled_to_the_returned_size(monkeypatch):
    half = load_data(NAME, image_size=256).val
    monkeypatch.setattr("gdram.data.datasets.DataLoader", None)  # the per-item path would fail
    order = torch.randperm(len(half), generator=torch.Generator().manual_seed(5))[:8]
    images, labels, boxes = next(batches(half, 8, shuffle=True, seed=5, boxes=True))
    assert images.shape == (8, 1, 256, 256) and torch.equal(labels, half.labels[order])
    assert torch.equal(boxes, half.stored_boxes[order] / 2)


def test_with_boxes_replaces_only_the_boxes(data):
    kept = torch.full_like(data.val.stored_boxes, float("nan"))
    kept[:2] = data.val.stored_boxes[:2]
    guided = data.val.with_boxes(kept)
    assert torch.equal(guided.batch(PROBES[:2])[0], data.val.batch(PROBES[:2])[0])
    assert torch.isnan(guided.boxes(torch.tensor([2]))).all() and torch.isfinite(data.val.stored_boxes).all()


def test_provenance_records_the_generators_parameters():
    parameters = generator_parameters(NAME)
    assert parameters == dataclasses.asdict(SPEC) and parameters["clutter"]["canvas_size"] == SIDE
    located = locate({"source": NAME})
    assert located["generator"] == parameters
    verify(located, "this run")
    with pytest.raises(DataError, match="other parameters"):
        verify({**located, "generator": {**parameters, "seed": 1}}, "this run")


def test_too_few_classes_are_refused():
    with pytest.raises(DataError, match="num_classes is 5"):
        load_data(NAME, num_classes=5)


def _nearest_centroid_accuracy(fit: Labelled, score: Labelled) -> float:
    """Accuracy on ``score`` (features (N, D), labels (N,)) of the class means of ``fit``."""
    features, labels = fit
    centroids = torch.stack([features[labels == label].mean(0) for label in range(10)])
    predicted = torch.cdist(score[0], centroids).argmin(1)
    return float((predicted == score[1]).float().mean())


def _views(split: CanvasImages) -> tuple[Labelled, Labelled]:
    """(features, labels) of the 16x16 window around each digit at 256x256, and of the whole image at 64x64."""
    indices = torch.arange(len(split))
    images, labels = split.batch(indices)
    centres = split.boxes(indices).view(-1, 2, 2).mean(1).round().long().clamp(8, 248)
    crops = torch.stack([image[0, y - 8 : y + 8, x - 8 : x + 8] for image, (x, y) in zip(images, centres, strict=True)])
    return (crops.flatten(1), labels), (F.avg_pool2d(images, 4).flatten(1), labels)


def test_digit_is_readable_at_half_size_but_not_on_the_whole_image_at_64():
    half = load_data(NAME, image_size=256)
    (val_crops, val_whole), (test_crops, test_whole) = _views(half.val), _views(half.test)
    assert _nearest_centroid_accuracy(val_crops, test_crops) > 0.6
    assert _nearest_centroid_accuracy(val_whole, test_whole) < 0.25
