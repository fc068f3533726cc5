"""Data sets: the cluttered generator, the embedded set, npz and ImageFolder loaders, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gdram.data.cluttered import (
    EMBEDDED_SPECS,
    ClutterSpec,
    EmbeddedSpec,
    cluttered_digits,
    generate_cluttered,
    split_by_source,
)
from gdram.data.datasets import DataError, TensorImages, batches, num_batches
from gdram.data.loading import load_data, load_npz
from PIL import Image

SMALL = ClutterSpec(canvas_size=32, digit_size=12, num_clutter=3, fragment_size=4)


def _digits(count: int = 10, size: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Digit k is a full square of intensity 10 * (k + 1), so every pixel tells its source."""
    digits = np.stack([np.full((size, size), 10 * (k + 1), dtype=np.uint8) for k in range(count)])
    return digits, np.arange(count) % 10


def test_generator_is_deterministic_in_its_seed():
    digits, labels = _digits()
    first = generate_cluttered(digits, labels, 20, SMALL, seed=3)
    again = generate_cluttered(digits, labels, 20, SMALL, seed=3)
    other = generate_cluttered(digits, labels, 20, SMALL, seed=4)
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_generator_places_the_labelled_digit_whole_and_clutter_only_from_its_sources():
    digits, labels = _digits()
    clutter = np.full((2, 12, 12), 7, dtype=np.uint8)
    images, targets, _ = generate_cluttered(digits, labels, 30, SMALL, seed=0, clutter_digits=clutter)
    assert images.shape == (30, 32, 32) and images.dtype == np.uint8
    assert np.array_equal(targets, labels[np.arange(30) % 10])
    for image, target in zip(images, targets, strict=True):
        value = 10 * (int(target) + 1)
        assert (image == value).sum() == 12 * 12  # the digit is pasted whole, on top
        assert set(np.unique(image)) <= {0, 7, value}
        assert (image == 7).sum() > 0 or SMALL.num_clutter == 0


def test_generator_rejects_inconsistent_inputs():
    digits, labels = _digits()
    with pytest.raises(ValueError, match="digits must be uint8"):
        generate_cluttered(digits.astype(np.float32), labels, 5, SMALL, seed=0)
    with pytest.raises(ValueError, match="labels for"):
        generate_cluttered(digits, labels[:3], 5, SMALL, seed=0)
    with pytest.raises(ValueError, match="exceeds canvas_size"):
        ClutterSpec(canvas_size=10, digit_size=12)


def test_split_by_source_is_disjoint_stratified_and_complete():
    labels = np.repeat(np.arange(10), 20)
    train, val, test = split_by_source(labels, 40, 50, seed=0)
    assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)
    assert len(train) + len(val) + len(test) == len(labels)
    assert np.bincount(labels[test], minlength=10).min() == 5


def test_embedded_set_keeps_test_digits_out_of_training(tmp_path, monkeypatch):
    """No 8x8 source digit of the test split appears in the training images, not even as clutter."""
    monkeypatch.setenv("GDRAM_CACHE", str(tmp_path))
    spec = EmbeddedSpec(clutter=SMALL, train_placements=1, eval_placements=1, val_digits=100, test_digits=100)
    arrays = cluttered_digits(spec)
    assert arrays["x_train"].shape == (1597, 1, 32, 32) and arrays["x_test"].shape == (100, 1, 32, 32)
    assert np.bincount(arrays["y_test"], minlength=10).min() >= 9
    cached = cluttered_digits(spec)  # read back from the on-disk cache
    assert len(list(tmp_path.glob("cluttered-digits-*.npz"))) == 1
    assert all(np.array_equal(arrays[key], cached[key]) for key in arrays)


@pytest.mark.parametrize(
    ("name", "side"),
    [("cluttered-digits", EMBEDDED_SPECS["cluttered-digits"].clutter.canvas_size), ("cluttered-digits-128", 128)],
)
def test_embedded_sets_have_their_canvas_size_10_classes_and_every_box(tmp_path, monkeypatch, name, side):
    monkeypatch.setenv("GDRAM_CACHE", str(tmp_path))
    data = load_data(name)
    assert (data.num_classes, data.in_channels, data.image_size) == (10, 1, (side, side))
    image, label = data.test[0]
    assert image.shape == (1, side, side) and image.dtype == torch.float32 and 0 <= label < 10
    for split in (data.train, data.val, data.test):
        boxes = split.stored_boxes
        assert boxes.shape == (len(split), 4) and bool(torch.isfinite(boxes).all())


@pytest.mark.parametrize("layout", ["NHW", "NHWC", "NCHW", "NHWC-rgb", "float"])
def test_npz_accepts_every_documented_layout(tmp_path, layout):
    rng = np.random.default_rng(0)
    shape = {
        "NHW": (30, 16, 20),
        "NHWC": (30, 16, 20, 1),
        "NCHW": (30, 1, 16, 20),
        "NHWC-rgb": (30, 16, 20, 3),
        "float": (30, 16, 20),
    }[layout]
    images = rng.integers(0, 256, size=shape, dtype=np.uint8)
    if layout == "float":
        images = images.astype(np.float32) / 255
    labels = rng.integers(0, 4, size=30)
    path = tmp_path / "data.npz"
    np.savez(path, x_train=images[:20], y_train=labels[:20], x_test=images[20:], y_test=labels[20:])
    data = load_npz(path)
    channels = 3 if layout == "NHWC-rgb" else 1
    assert (data.in_channels, data.image_size, data.num_classes) == (channels, (16, 20), int(labels.max()) + 1)
    assert len(data.train) + len(data.val) == 20 and len(data.val) == 2 and len(data.test) == 10
    image, _ = data.test[0]
    expected = images[20, ..., 0] if layout == "NHWC" else images[20, 0] if layout == "NCHW" else images[20]
    if layout == "NHWC-rgb":
        expected = images[20].transpose(2, 0, 1)
    scale = 1 if layout == "float" else 255
    assert torch.allclose(image.reshape(expected.shape), torch.as_tensor(expected / scale, dtype=torch.float32))


def test_npz_uses_its_validation_split_and_resizes(tmp_path):
    images = np.zeros((12, 8, 8), dtype=np.uint8)
    labels = np.arange(12) % 3
    path = tmp_path / "d.npz"
    np.savez(
        path,
        x_train=images[:6],
        y_train=labels[:6],
        x_val=images[6:9],
        y_val=labels[6:9],
        x_test=images[9:],
        y_test=labels[9:],
    )
    data = load_data(str(path), image_size=16)
    assert (len(data.train), len(data.val), len(data.test)) == (6, 3, 3)
    assert data.image_size == (16, 16) and data.train[0][0].shape == (1, 16, 16)


def _save(path, **arrays):
    base = {
        "x_train": np.zeros((4, 8, 8), np.uint8),
        "y_train": np.array([0, 1, 2, 1]),
        "x_test": np.zeros((2, 8, 8), np.uint8),
        "y_test": np.array([0, 1]),
    }
    base.update(arrays)
    np.savez(path, **{key: value for key, value in base.items() if value is not None})
    return path


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"y_test": None}, "missing array\\(s\\) y_test"),
        ({"x_val": np.zeros((2, 8, 8), np.uint8)}, "missing array\\(s\\) y_val"),
        ({"y_train": np.array([0, 1, 2])}, "y_train has 3 labels but there are 4 images"),
        ({"y_test": np.array([0, -1])}, "labels out of range"),
        ({"x_train": np.zeros((4, 8, 8), np.int64)}, "dtype int64; expected uint8"),
        ({"y_train": np.array([0.0, 1.0, 2.0, 1.0])}, "expected integer class indices"),
        ({"x_train": np.full((4, 8, 8), 2.0, np.float32)}, "must lie in \\[0, 1\\]"),
        ({"x_train": np.zeros((4, 2, 2, 8, 8), np.uint8)}, "has shape"),
        ({"x_test": np.zeros((2, 9, 9), np.uint8)}, "image shapes differ"),
    ],
)
def test_npz_rejects_malformed_files_clearly(tmp_path, arrays, message):
    path = _save(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message) as error:
        load_npz(path)
    assert "bad.npz" in str(error.value)


def test_npz_rejects_labels_beyond_num_classes_and_unreadable_files(tmp_path):
    with pytest.raises(DataError, match="out of range \\[0, 2\\)"):
        load_npz(_save(tmp_path / "a.npz"), num_classes=2)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_npz(garbage)
    with pytest.raises(DataError, match="unknown data set"):
        load_data(str(tmp_path / "nowhere"))


def _image_folder(root, classes=("cat", "dog"), count=5, mode="RGB", size=(10, 12)):
    for index, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for k in range(count):
            Image.new(mode, size, color=40 * index + k if mode == "L" else (40 * index, k, 0)).save(
                root / name / f"{k}.png"
            )


def test_image_folder_with_train_and_test_subfolders(tmp_path):
    _image_folder(tmp_path / "train", count=10)
    _image_folder(tmp_path / "test", count=2)
    data = load_data(str(tmp_path))
    assert (data.num_classes, data.in_channels, data.image_size) == (2, 3, (12, 10))
    assert (len(data.train), len(data.val), len(data.test)) == (18, 2, 4)
    image, label = data.test[0]
    assert image.shape == (3, 12, 10) and label == 0


def test_image_folder_single_directory_grayscale_is_split(tmp_path):
    _image_folder(tmp_path / "all", count=10, mode="L")
    data = load_data(str(tmp_path / "all"), image_size=(8, 8))
    assert (data.in_channels, data.image_size) == (1, (8, 8))
    assert (len(data.train), len(data.val), len(data.test)) == (16, 2, 2)
    assert data.train[0][0].shape == (1, 8, 8)


def test_image_folder_errors_name_the_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not an ImageFolder"):
        load_data(str(tmp_path / "empty"))
    _image_folder(tmp_path / "nt" / "train")
    with pytest.raises(DataError, match="no test/ folder"):
        load_data(str(tmp_path / "nt"))


def test_paper_data_set_without_files_or_network_fails_clearly(tmp_path):
    with pytest.raises(DataError, match="MNIST is not under .*--download"):
        load_data("mnist", root=tmp_path)
    with pytest.raises(DataError, match="CIFAR10 is not under"):
        load_data("cifar10", root=tmp_path)


def test_batches_share_every_index_out_over_ranks():
    images = torch.arange(10, dtype=torch.uint8).reshape(10, 1, 1, 1)
    dataset = TensorImages(images, torch.arange(10))
    seen = [
        torch.cat([labels for _, labels in batches(dataset, 3, shuffle=True, seed=5, rank=r, world_size=2)])
        for r in range(2)
    ]
    assert len(seen[0]) == len(seen[1]) == 5 == -(-10 // 2)
    assert sorted(torch.cat(seen).tolist()) == list(range(10))
    again = torch.cat([labels for _, labels in batches(dataset, 3, shuffle=True, seed=5, rank=0, world_size=2)])
    assert torch.equal(again, seen[0])
    assert num_batches(dataset, 3, shuffle=True, world_size=2) == 2
    evaluation = [torch.cat([labels for _, labels in batches(dataset, 4, rank=r, world_size=3)]) for r in range(3)]
    assert sorted(torch.cat(evaluation).tolist()) == list(range(10))
