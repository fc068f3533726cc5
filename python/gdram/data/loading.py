"""Reading data sets for glimpse classifiers: the paper's, the embedded default, and your own.

:func:`load_data` is the single entry point for a name or a path; :func:`from_arrays` takes arrays already in
memory. Both return :class:`~gdram.data.datasets.DataSplits`. Small sets live in memory as uint8 tensors; folders
of image files go through a ``DataLoader`` with workers and pinned memory.

Sources:

* ``cluttered-digits`` (default) and ``cluttered-digits-128``, no network: see :mod:`gdram.data.cluttered`.
* ``cluttered-digits-512``, no network, drawn on demand (a 512x512 canvas per image, none stored):
  see :mod:`gdram.data.canvas`.
* ``mnist``, ``cluttered-mnist``, ``cifar10``, ``cifar100``: the paper's Large MNIST, Large
  Cluttered MNIST, Large CIFAR-10/100, resized to 128x128 batch by batch, through torchvision
  (``download=True`` fetches them; without network a :class:`DataError` says so). Validation:
  the last 10,000 training images (after a fixed shuffle).
* a ``.npz`` file with ``x_train, y_train, x_test, y_test`` (optional ``x_val, y_val``, and
  ``box_train, box_val, box_test``: each image's target box); the same arrays in memory: :func:`from_arrays`.
* a torchvision ``ImageFolder`` directory (with ``train/``, ``val/``, ``test/`` sub-folders, or one
  folder that is split 80/10/10).

Target boxes ((N, 4) x0, y0, x1, y1 in pixels of the stored image, pixel i spanning [i, i + 1))
are optional; they feed location guidance, the oracle policy and the attention metrics.
``batches(..., boxes=True)`` yields them scaled to the returned image size, NaN where unknown.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset

from gdram.data.canvas import CANVAS_SPECS, load_canvases
from gdram.data.cluttered import (
    EMBEDDED_SPECS,
    ClutterSpec,
    cache_dir,
    cluttered_digits,
    generate_cluttered,
    resize_digits,
)
from gdram.data.datasets import DataError, DataSplits, TensorImages
from gdram.data.imagefiles import GRAY_MODES, MAX_IMAGE_SIDE, check_images, read_image, require_npz, to_mode
from gdram.files import DAMAGED_NPZ

PAPER_SIZE = 128
PAPER_VAL = 10_000
DATASETS = (
    "cluttered-digits",
    "cluttered-digits-128",
    "cluttered-digits-512",
    "mnist",
    "cluttered-mnist",
    "cifar10",
    "cifar100",
)


def load_data(
    source: str = "cluttered-digits",
    root: str | Path | None = None,
    download: bool = False,
    val_fraction: float = 0.1,
    seed: int = 0,
    image_size: int | tuple[int, int] | None = None,
    num_classes: int | None = None,
) -> DataSplits:
    """Load a data set by name (see :data:`DATASETS`) or path (``.npz`` file or ``ImageFolder`` directory).

    Args:
        source: data set name or path.
        root: where torchvision data sets are stored (default ``~/.cache/gdram/data``).
        download: let torchvision download a missing data set.
        val_fraction: share of the training images held out for validation when the source has no
            validation split (npz without ``x_val``, ImageFolder without ``val/``).
        seed: seed of those hold-outs.
        image_size: resize every image to this (H, W) or square side; None keeps the source's size
            (128x128 for the paper's sets).
        num_classes: number of classes; None infers it (largest label + 1, or the folder count).
    """
    size = _pair(image_size) if image_size is not None else None
    if source in EMBEDDED_SPECS:
        arrays = cluttered_digits(EMBEDDED_SPECS[source])
        return _from_arrays(source, arrays, num_classes or 10, size)
    if source in CANVAS_SPECS:
        return load_canvases(source, size, num_classes)
    if source in ("mnist", "cluttered-mnist", "cifar10", "cifar100"):
        return _torchvision(source, Path(root) if root else cache_dir() / "data", download, size or (PAPER_SIZE,) * 2)
    path = Path(source).expanduser()
    if path.is_dir():
        return _image_folder(path, val_fraction, seed, size, num_classes)
    if path.suffix == ".npz" or path.is_file():
        return load_npz(path, val_fraction, seed, size, num_classes)
    raise DataError(f"unknown data set {source!r}: not one of {', '.join(DATASETS)}, and no such file or directory")


def _pair(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or min(pair) < 1:
        raise DataError(f"image size must be a positive int or (H, W), got {size!r}")
    return int(pair[0]), int(pair[1])


# ----------------------------------------------------------------------------------------- npz files


def _to_nchw(name: str, images: np.ndarray, path: Path) -> np.ndarray:
    """(N, H, W), (N, H, W, C) or (N, C, H, W) -> (N, C, H, W); C is 1, 3 or 4."""
    if images.ndim == 3:
        return images[:, None]
    if images.ndim != 4:
        raise DataError(f"{path}: {name} has shape {images.shape}; expected (N, H, W), (N, H, W, C) or (N, C, H, W)")
    first, last = images.shape[1] in (1, 3, 4), images.shape[3] in (1, 3, 4)
    if first and not last:
        return images
    if last and not first:
        return images.transpose(0, 3, 1, 2)
    raise DataError(
        f"{path}: cannot tell the channel axis of {name} with shape {images.shape} "
        "(channels must be 1, 3 or 4, first or last)"
    )


def _check_images(name: str, images: np.ndarray, path: Path) -> torch.Tensor:
    if images.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(images))
    if images.dtype.kind != "f":
        raise DataError(f"{path}: {name} has dtype {images.dtype}; expected uint8 (0-255) or float (0-1)")
    if images.size and not np.isfinite(images).all():
        raise DataError(f"{path}: {name} contains NaN or infinity")
    if images.size and (images.min() < 0 or images.max() > 1):
        raise DataError(f"{path}: float {name} must lie in [0, 1], found [{images.min():g}, {images.max():g}]")
    return torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))


def _check_labels(name: str, labels: np.ndarray, count: int, path: Path) -> torch.Tensor:
    if labels.ndim != 1:
        raise DataError(f"{path}: {name} has shape {labels.shape}; expected (N,)")
    if labels.dtype.kind not in "iu":
        raise DataError(f"{path}: {name} has dtype {labels.dtype}; expected integer class indices")
    if len(labels) != count:
        raise DataError(f"{path}: {name} has {len(labels)} labels but there are {count} images")
    if labels.size and labels.dtype.kind == "u" and int(labels.max()) > np.iinfo(np.int64).max:
        raise DataError(f"{path}: {name} has labels up to {int(labels.max())}; labels must be class indices 0..K-1")
    return torch.from_numpy(labels.astype(np.int64))


def load_npz(
    path: str | Path,
    val_fraction: float = 0.1,
    seed: int = 0,
    image_size: tuple[int, int] | None = None,
    num_classes: int | None = None,
) -> DataSplits:
    """Load ``x_train, y_train, x_test, y_test`` (optional ``x_val, y_val``) from a ``.npz`` file.

    Images: (N, H, W), (N, H, W, C) or (N, C, H, W); uint8 0-255 or float 0-1. Labels: (N,) integers
    in ``[0, num_classes)``. Optional ``box_train``, ``box_val``, ``box_test``: (N, 4) target boxes
    x0, y0, x1, y1 in pixels (0 <= x0 < x1 <= W, 0 <= y0 < y1 <= H). Without ``x_val``, a seeded
    ``val_fraction`` of the training images (and their boxes) is held out for validation.
    """
    path = Path(path)
    require_npz(path)
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except MemoryError:  # a damaged header can claim any shape
        raise DataError(f"{path}: not a readable .npz file (an array asks for more memory than there is)") from None
    except DAMAGED_NPZ as error:
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        raise DataError(f"{path}: truncated, damaged or not a readable .npz file ({reason})") from None
    return from_arrays(arrays, path.name, val_fraction, seed, image_size, num_classes, path)


def from_arrays(
    arrays: Mapping[str, np.ndarray],
    name: str = "arrays",
    val_fraction: float = 0.1,
    seed: int = 0,
    image_size: tuple[int, int] | None = None,
    num_classes: int | None = None,
    path: Path | None = None,
) -> DataSplits:
    """Data splits from in-memory arrays named as in a ``.npz`` file (see :func:`load_npz`), checked the same way.

    ``name`` names the data set (and, without ``path``, the arrays in error messages).
    """
    where = path or Path(name)
    arrays = dict(arrays)
    required = ["x_train", "y_train", "x_test", "y_test"]
    if ("x_val" in arrays) != ("y_val" in arrays):
        required += ["x_val", "y_val"]
    missing = [name for name in required if name not in arrays]
    if missing:
        raise DataError(f"{where}: missing array(s) {', '.join(missing)}; found {', '.join(sorted(arrays)) or 'none'}")
    if "x_val" not in arrays:
        if "box_val" in arrays:
            raise DataError(f"{where}: box_val given without x_val, y_val")
        arrays.update(
            _hold_out(arrays["x_train"], arrays["y_train"], val_fraction, seed, where, arrays.get("box_train"))
        )
    return _from_arrays(name, arrays, num_classes, image_size, where)


def _hold_out(
    images: np.ndarray,
    labels: np.ndarray,
    fraction: float,
    seed: int,
    path: Path,
    boxes: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    if len(images) != len(labels):
        raise DataError(f"{path}: y_train has {len(labels)} labels but there are {len(images)} images")
    if boxes is not None and len(boxes) != len(images):
        raise DataError(f"{path}: box_train has {len(boxes)} rows but there are {len(images)} images")
    val, train = split_indices(len(images), fraction, seed, 1, f"{path}: {len(images)} training images")
    held = {"x_train": images[train], "y_train": labels[train], "x_val": images[val], "y_val": labels[val]}
    if boxes is not None:
        held.update(box_train=boxes[train], box_val=boxes[val])
    return held


def split_indices(total: int, fraction: float, seed: int, parts: int, what: str) -> list[np.ndarray]:
    """A seeded random split of ``range(total)``: ``parts`` held-out chunks of ``fraction`` of it (at
    least 1 each), then the rest; ``[val, rest]`` or ``[val, test, rest]``.

    Raises:
        DataError: ``fraction`` is outside (0, 1), or ``what`` (e.g. "x.npz: 5 training images") is
            too few to leave a rest.
    """
    if not 0 < fraction < 1:
        raise DataError(f"validation fraction must lie in (0, 1), got {fraction}")
    count = max(1, round(total * fraction))
    if parts * count >= total:
        raise DataError(f"{what} are too few to hold out {'a validation split' if parts == 1 else 'val/test splits'}")
    order = np.random.default_rng(seed).permutation(total)
    return [order[part * count : (part + 1) * count] for part in range(parts)] + [order[parts * count :]]


def _check_boxes(name: str, boxes: np.ndarray, count: int, image_hw: tuple[int, int], path: Path) -> torch.Tensor:
    """(N, 4) x0, y0, x1, y1 boxes inside an (H, W) image -> float32 tensor; DataError naming the fault."""
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise DataError(f"{path}: {name} has shape {boxes.shape}; expected (N, 4) rows x0, y0, x1, y1")
    if len(boxes) != count:
        raise DataError(f"{path}: {name} has {len(boxes)} rows but there are {count} images")
    if boxes.dtype.kind not in "iuf":
        raise DataError(f"{path}: {name} has dtype {boxes.dtype}; expected numbers (pixels)")
    boxes = boxes.astype(np.float64)
    height, width = image_hw
    x0, y0, x1, y1 = boxes.T
    faults = {
        "a NaN or infinite coordinate": ~np.isfinite(boxes).all(axis=1),
        "x1 <= x0 or y1 <= y0": (x1 <= x0) | (y1 <= y0),
        f"a corner outside the {width}x{height} image": (x0 < 0) | (y0 < 0) | (x1 > width) | (y1 > height),
    }
    for fault, bad in faults.items():
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"{path}: {name} row {row} {boxes[row].tolist()} has {fault}")
    return torch.from_numpy(boxes.astype(np.float32))


def _from_arrays(
    name: str,
    arrays: dict[str, np.ndarray],
    num_classes: int | None,
    image_size: tuple[int, int] | None,
    path: Path | None = None,
) -> DataSplits:
    where = path or Path(name)
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for split in ("train", "val", "test"):
        images = _check_images(f"x_{split}", _to_nchw(f"x_{split}", arrays[f"x_{split}"], where), where)
        labels = _check_labels(f"y_{split}", arrays[f"y_{split}"], len(images), where)
        if len(images) == 0:
            raise DataError(f"{where}: x_{split} is empty")
        splits[split] = images, labels
    shapes = {split: tuple(images.shape[1:]) for split, (images, _) in splits.items()}
    if len(set(shapes.values())) != 1:
        raise DataError(f"{where}: the splits' image shapes differ: {shapes}")
    boxes = {
        split: _check_boxes(
            f"box_{split}", arrays[f"box_{split}"], len(splits[split][0]), tuple(shapes[split][1:]), where
        )
        for split in splits
        if f"box_{split}" in arrays
    }
    largest = max(int(labels.max()) for _, labels in splits.values())
    classes = num_classes if num_classes is not None else largest + 1
    for split, (_, labels) in splits.items():
        if int(labels.min()) < 0 or int(labels.max()) >= classes:
            raise DataError(
                f"{where}: y_{split} has labels out of range [0, {classes}): "
                f"min {int(labels.min())}, max {int(labels.max())}"
            )
    channels, height, width = shapes["train"]
    size = image_size or (height, width)
    datasets = {
        split: TensorImages(images, labels, size, boxes.get(split)) for split, (images, labels) in splits.items()
    }
    return DataSplits(name, datasets["train"], datasets["val"], datasets["test"], classes, channels, size)


# ------------------------------------------------------------------------------------- image folders


class _Convert:
    """PIL image -> the given mode, 16-bit pixels scaled (a picklable transform, for DataLoader workers)."""

    def __init__(self, mode: str):
        self.mode = mode

    def __call__(self, image):
        return to_mode(image, self.mode)


def _folder_geometry(
    headers: list[tuple[str, tuple[int, int], str]], path: Path, image_size: tuple[int, int] | None
) -> tuple[int, tuple[int, int]]:
    """Channels (3 when any image has colour, else 1) and image size (``image_size``, else the one size all
    images share) of an image folder, from every image's header.

    Raises:
        DataError: without ``image_size``, the images differ in size or exceed :data:`MAX_IMAGE_SIDE`.
    """
    channels = 3 if any(mode not in GRAY_MODES for _, _, mode in headers) else 1
    if image_size is not None:
        return channels, image_size
    sizes: dict[tuple[int, int], str] = {}
    for file, size, _ in headers:
        sizes.setdefault(size, file)
    if len(sizes) > 1:
        shown = ", ".join(f"{h}x{w} ({file})" for (h, w), file in list(sizes.items())[:3])
        raise DataError(
            f"{path}: the images have {len(sizes)} different sizes, e.g. {shown}; pass --image-size HxW "
            "to resize them all to one"
        )
    ((size, file),) = sizes.items()
    if max(size) > MAX_IMAGE_SIDE:
        raise DataError(
            f"{path}: the images are {size[0]}x{size[1]} ({file}), over the {MAX_IMAGE_SIDE}-pixel side "
            "limit; pass --image-size HxW to resize them"
        )
    return channels, size


def _image_folder(
    path: Path, val_fraction: float, seed: int, image_size: tuple[int, int] | None, num_classes: int | None
) -> DataSplits:
    from torchvision import datasets, transforms

    split_dirs = {split: path / split for split in ("train", "val", "test") if (path / split).is_dir()}
    roots = [split_dirs["train"]] if "train" in split_dirs else [path]
    try:
        probe = datasets.ImageFolder(str(roots[0]))
    except (FileNotFoundError, RuntimeError) as error:
        raise DataError(
            f"{roots[0]}: not an ImageFolder directory (one sub-folder of images per class): {error}"
        ) from None
    others = {}
    for split in ("val", "test"):
        if "train" in split_dirs and split in split_dirs:
            try:
                others[split] = datasets.ImageFolder(str(split_dirs[split]))
            except (FileNotFoundError, RuntimeError) as error:
                raise DataError(f"{split_dirs[split]}: not an ImageFolder directory: {error}") from None
    headers = check_images([sample for sample, _ in probe.samples], roots[0])
    for split, other in others.items():
        headers += check_images([sample for sample, _ in other.samples], split_dirs[split])
    channels, size = _folder_geometry(headers, path, image_size)
    mode = "L" if channels == 1 else "RGB"
    transform = transforms.Compose([_Convert(mode), transforms.Resize(size), transforms.ToTensor()])

    def folder(root: Path) -> datasets.ImageFolder:
        loaded = datasets.ImageFolder(str(root), transform=transform, loader=read_image)
        if loaded.classes != probe.classes:
            raise DataError(f"{root}: classes {loaded.classes} differ from the training classes {probe.classes}")
        return loaded

    train = folder(roots[0])
    classes = num_classes or len(probe.classes)
    if len(probe.classes) > classes:
        raise DataError(f"{path}: {len(probe.classes)} class folders but num_classes is {classes}")
    if "train" not in split_dirs:
        val, test, rest = (
            part.tolist() for part in split_indices(len(train), val_fraction, seed, 2, f"{path}: {len(train)} images")
        )
        return DataSplits(
            path.name, Subset(train, rest), Subset(train, val), Subset(train, test), classes, channels, size
        )
    if "test" not in split_dirs:
        raise DataError(f"{path}: has train/ but no test/ folder")
    test = folder(split_dirs["test"])
    if "val" in split_dirs:
        val = folder(split_dirs["val"])
    else:
        held, rest = (
            part.tolist()
            for part in split_indices(
                len(train), val_fraction, seed, 1, f"{split_dirs['train']}: {len(train)} training images"
            )
        )
        train, val = Subset(train, rest), Subset(train, held)
    return DataSplits(path.name, train, val, test, classes, channels, size)


# ------------------------------------------------------------------------------- paper's data sets


def _torchvision(name: str, root: Path, download: bool, size: tuple[int, int]) -> DataSplits:
    from torchvision import datasets

    classes = {
        "mnist": datasets.MNIST,
        "cluttered-mnist": datasets.MNIST,
        "cifar10": datasets.CIFAR10,
        "cifar100": datasets.CIFAR100,
    }[name]
    try:
        train = classes(str(root), train=True, download=download)
        test = classes(str(root), train=False, download=download)
    except RuntimeError as error:
        hint = "" if download else "; pass --download (needs network) to fetch it"
        raise DataError(f"{classes.__name__} is not under {root} ({error}){hint}") from None
    except OSError as error:  # urllib's URLError and socket errors when downloading without network
        raise DataError(f"could not download {classes.__name__} into {root}: {error}") from None
    arrays = {
        "x_train": np.asarray(train.data),
        "y_train": np.asarray(train.targets),
        "x_test": np.asarray(test.data),
        "y_test": np.asarray(test.targets),
    }
    if name == "cluttered-mnist":
        arrays = _clutter_mnist(arrays)
    arrays.update(
        _hold_out(
            arrays["x_train"], arrays["y_train"], PAPER_VAL / len(arrays["x_train"]), 0, root, arrays.get("box_train")
        )
    )
    return _from_arrays(name, arrays, len(train.classes), size, root / classes.__name__)


def _clutter_mnist(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """RAM's cluttered translated MNIST (60x60, four 8x8 fragments), clutter from the same split only."""
    spec = ClutterSpec(canvas_size=60, digit_size=28, num_clutter=4, fragment_size=8)
    out = {}
    for offset, split in enumerate(("train", "test")):
        digits = resize_digits(arrays[f"x_{split}"], spec.digit_size)
        out[f"x_{split}"], out[f"y_{split}"], out[f"box_{split}"] = generate_cluttered(
            digits, arrays[f"y_{split}"], len(digits), spec, seed=offset + 1
        )
    return out
