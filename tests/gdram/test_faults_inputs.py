"""Faults and fuzz of what a user gives: damaged files, caches, checkpoints of other versions, images, flags.

The promise: every such input is checked before the work starts and fails with one line naming the
input and what to do (exit 2 for a bad flag, 1 for bad input), never a traceback or an "internal error".
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import time
import zipfile
from pathlib import Path

import gdram.data.cluttered as cluttered
import numpy as np
import pytest
import torch
from gdram.cli.main import main
from gdram.cli.parser import build_parser
from gdram.data.cluttered import ClutterSpec, EmbeddedSpec, cache_path, cluttered_digits
from gdram.data.datasets import DataError
from gdram.data.loading import load_data, load_npz
from gdram.models.config import GDRAMConfig
from gdram.training.checkpoint import CheckpointError, load_checkpoint, load_state_file, save_checkpoint
from gdram.training.evaluate import load_model
from gdram.training.trainer import Trainer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from tiny import one_error_line, train_tiny, write_npz

pytestmark = pytest.mark.usefixtures("one_thread")


def _usage_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# ------------------------------------------------------------------ 5: damaged .npz files


@pytest.fixture(scope="module")
def npz_bytes(tmp_path_factory) -> bytes:
    return Path(write_npz(tmp_path_factory.mktemp("good") / "good.npz")).read_bytes()


def _compressed(tmp_path: Path) -> bytes:
    """A .npz written with compression, so that flipped bytes also reach zlib."""
    rng = np.random.default_rng(1)
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        x_train=rng.integers(0, 256, (12, 8, 8), dtype=np.uint8),
        y_train=np.arange(12) % 2,
        x_test=rng.integers(0, 256, (4, 8, 8), dtype=np.uint8),
        y_test=np.arange(4) % 2,
    )
    return buffer.getvalue()


@settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_a_damaged_npz_either_loads_or_is_one_data_error_naming_it(npz_bytes, tmp_path, data):
    good = npz_bytes if data.draw(st.booleans()) else _compressed(tmp_path)
    kind = data.draw(st.sampled_from(["truncate", "flip", "splice"]))
    damaged = bytearray(good)
    if kind == "truncate":
        damaged = damaged[: data.draw(st.integers(0, len(good) - 1))]
    elif kind == "flip":
        for _ in range(data.draw(st.integers(1, 6))):
            damaged[data.draw(st.integers(0, len(good) - 1))] = data.draw(st.integers(0, 255))
    else:
        start = data.draw(st.integers(0, len(good) - 1))
        damaged[start : start + 32] = data.draw(st.binary(min_size=1, max_size=32))
    path = tmp_path / "damaged.npz"
    path.write_bytes(bytes(damaged))
    try:
        load_npz(path)
    except DataError as error:
        assert str(error).startswith(f"{path}: ") and "\n" not in str(error)


def test_a_npz_with_a_bad_crc_is_one_line_for_train_and_eval(npz_bytes, trained_run, tmp_path, capsys):
    path = tmp_path / "crc.npz"
    with zipfile.ZipFile(io.BytesIO(npz_bytes)) as archive:
        member = archive.infolist()[0]
    damaged = bytearray(npz_bytes)
    data_start = member.header_offset + 30 + len(member.filename) + len(member.extra)
    damaged[data_start + member.file_size - 1] ^= 0xFF  # the last byte of the first array: only the CRC notices
    path.write_bytes(bytes(damaged))
    assert train_tiny(str(path), tmp_path / "r") == 1
    one_error_line(capsys, "crc.npz: truncated, damaged or not a readable .npz file")
    assert not (tmp_path / "r").exists()
    assert main(["eval", str(trained_run / "best.pt"), "--data", str(path), "--no-latency"]) == 1
    one_error_line(capsys, "crc.npz: truncated, damaged")


def test_a_truncated_npz_is_one_line(npz_bytes, tmp_path, capsys):
    path = tmp_path / "cut.npz"
    path.write_bytes(npz_bytes[: len(npz_bytes) // 2])
    assert train_tiny(str(path), tmp_path / "r") == 1
    one_error_line(capsys, "cut.npz: truncated, damaged or not a readable .npz file")


# ------------------------------------------------------------------ 6, 7: the data cache

SMALL_SPEC = EmbeddedSpec(
    clutter=ClutterSpec(canvas_size=32, digit_size=16, num_clutter=1, fragment_size=4),
    train_placements=1,
    eval_placements=1,
)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "incomplete"])
def test_a_damaged_cache_entry_is_rebuilt(tmp_path, monkeypatch, damage):
    monkeypatch.setenv("GDRAM_CACHE", str(tmp_path / "cache"))
    built = cluttered_digits(SMALL_SPEC)
    path = cache_path(SMALL_SPEC)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    elif damage == "garbage":
        path.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    else:
        np.savez(path, x_train=built["x_train"])
    again = cluttered_digits(SMALL_SPEC)
    assert set(again) == set(built) and all(np.array_equal(again[name], built[name]) for name in built)
    with np.load(path) as stored:
        assert set(stored.files) == set(built)


def test_an_unwritable_cache_is_refused_before_the_data_is_built_naming_it(tiny_npz, tmp_path, monkeypatch, capsys):
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("GDRAM_CACHE", str(tmp_path / "afile" / "cache"))

    def never(spec):
        raise AssertionError("the data was built before the cache was checked")

    monkeypatch.setattr(cluttered, "_build_cluttered_digits", never)
    assert main(["train", "--out", str(tmp_path / "r"), "--quiet"]) == 1
    one_error_line(capsys, str(tmp_path / "afile" / "cache"), "set GDRAM_CACHE to a writable folder")
    assert not (tmp_path / "r").exists()


def test_a_cache_write_failing_after_the_build_names_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GDRAM_CACHE", str(tmp_path / "cache"))

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cluttered, "atomic_write", full)
    with pytest.raises(OSError, match="cannot write the data cache .*set GDRAM_CACHE") as failure:
        cluttered_digits(SMALL_SPEC)
    assert failure.value.filename == str(cache_path(SMALL_SPEC))


# ------------------------------------------------------------------ 8: sizes asked for by a file


def _huge(trained_run: Path, path: Path, key: str = "hidden_size", value: int = 30000) -> Path:
    state = load_checkpoint(trained_run / "last.pt")
    state["config"][key] = value
    return save_checkpoint(state, path)


def test_a_checkpoint_asking_for_a_huge_model_is_refused_without_building_it(trained_run, tmp_path, capsys):
    path = _huge(trained_run, tmp_path / "huge.pt")
    start = time.perf_counter()
    assert main(["eval", str(path), "--no-latency"]) == 1
    one_error_line(capsys, "huge.pt: refused to build it", "parameters (at most 1,000,000,000)")
    assert main(["visualize", str(path), "--out", str(tmp_path / "v.png")]) == 1
    one_error_line(capsys, "huge.pt: refused to build it")
    with pytest.raises(CheckpointError, match="refused to build it"):
        load_model(path)
    assert time.perf_counter() - start < 30


def test_resuming_a_run_whose_checkpoint_asks_for_a_huge_model_is_refused(trained_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    _huge(trained_run, run / "last.pt")
    assert main(["train", "--resume", "--out", str(run), "--epochs", "2"]) == 1
    one_error_line(capsys, "last.pt: cannot be resumed", "parameters (at most")


def test_a_cpu_out_of_memory_is_the_out_of_memory_line(tiny_npz, tmp_path, monkeypatch, capsys):
    def allocate(self):
        torch.empty(2**62, dtype=torch.uint8)

    monkeypatch.setattr(Trainer, "fit", allocate)
    assert train_tiny(tiny_npz, tmp_path / "r") == 1
    one_error_line(capsys, "error: out of memory", "lower --batch-size")


# ------------------------------------------------------------------ 9: image folders


def _folder(root: Path, images: dict[str, Image.Image]) -> Path:
    for split in ("train", "val", "test"):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True, exist_ok=True)
            for name, image in images.items():
                image.save(root / split / label / name)
    return root


def _gray(seed: int, size: int = 24) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8), "L")


def test_one_large_image_sorted_first_does_not_set_the_size_of_every_image(tmp_path):
    folder = _folder(tmp_path / "f", {"0.png": Image.new("L", (5000, 5000)), "1.png": _gray(1), "2.png": _gray(2)})
    with pytest.raises(DataError, match="2 different sizes.*5000x5000.*pass --image-size"):
        load_data(str(folder))
    assert load_data(str(folder), image_size=24).image_size == (24, 24)


def test_images_over_the_side_limit_ask_for_image_size(tmp_path):
    folder = _folder(tmp_path / "f", {"0.png": Image.new("L", (5000, 5000))})
    with pytest.raises(DataError, match="5000x5000 .*over the 4096-pixel side limit; pass --image-size"):
        load_data(str(folder))


def test_a_16_bit_png_keeps_its_grey_levels(tmp_path):
    levels = np.full((24, 24), 32768, dtype=np.uint16)
    levels[:12] = 8192
    wide = Image.fromarray(levels)
    assert wide.mode.startswith("I")
    data = load_data(str(_folder(tmp_path / "f", {"0.png": wide, "1.png": wide})))
    image, _ = data.train[0]
    assert data.in_channels == 1
    assert torch.allclose(image[0, 0, 0], torch.tensor(8192 / 65535), atol=2 / 255)
    assert torch.allclose(image[0, -1, 0], torch.tensor(32768 / 65535), atol=2 / 255)


def test_one_grayscale_file_does_not_turn_a_colour_folder_grey(tmp_path):
    colour = Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8), "RGB")
    data = load_data(str(_folder(tmp_path / "f", {"0.png": _gray(0), "1.png": colour, "2.png": colour})))
    assert data.in_channels == 3 and data.train[0][0].shape == (3, 24, 24)


# ------------------------------------------------------------------ 10: the oracle's boxes


def test_the_oracle_without_validation_or_test_boxes_is_refused_before_the_first_epoch(tmp_path, capsys):
    path = tmp_path / "boxes.npz"
    with np.load(write_npz(tmp_path / "b.npz", boxes=(2, 2, 10, 10))) as stored:
        arrays = {name: stored[name] for name in stored.files if name not in ("box_val", "box_test")}
    np.savez(path, **arrays)
    assert train_tiny(str(path), tmp_path / "r", "--policy", "oracle", "--epochs", "3") == 1
    line = one_error_line(capsys, "the oracle policy needs a target box for every image", "val split")
    assert "epoch 1/" not in line and not (tmp_path / "r" / "last.pt").exists()


# ------------------------------------------------------------------ 11: checkpoints of other versions


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda state: state["config"].update(future_knob=1), "does not know (future_knob)"),
        (lambda state: state["train"].update(warp_drive=True), "does not know (warp_drive)"),
        (lambda state: state.pop("optimizer"), "lacks optimizer"),
        (lambda state: state.pop("rng"), "lacks rng"),
        (lambda state: state["config"].update(num_glimpses="three"), "cannot be resumed: num_glimpses"),
        (lambda state: state["optimizer"]["param_groups"].append({"params": [999]}), "does not fit the model"),
    ],
)
def test_resuming_a_checkpoint_of_another_version_is_one_line(trained_run, tmp_path, change, fragment, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    state = load_checkpoint(run / "last.pt")
    change(state)
    save_checkpoint(state, run / "last.pt")
    assert main(["train", "--resume", "--out", str(run), "--epochs", "2", "--quiet"]) == 1
    one_error_line(capsys, "last.pt: cannot be resumed", fragment)
    assert load_checkpoint(run / "last.pt")["epoch"] == 1


# ------------------------------------------------------------------ 15: messages that name the input


def test_uint64_labels_beyond_int64_are_reported_as_they_are(tmp_path, capsys):
    path = tmp_path / "u64.npz"
    images = np.zeros((6, 24, 24), np.uint8)
    labels = np.array([0, 1, 2, 0, 1, 2**63 + 5], dtype=np.uint64)
    np.savez(path, x_train=images, y_train=labels, x_val=images, y_val=labels % 3, x_test=images, y_test=labels % 3)
    assert train_tiny(str(path), tmp_path / "r") == 1
    line = one_error_line(capsys, f"y_train has labels up to {2**63 + 5}", "class indices")
    assert "min -" not in line


def test_a_device_given_as_a_checkpoint_is_not_called_missing(tiny_npz, tmp_path, capsys):
    assert train_tiny(tiny_npz, tmp_path / "r", "--init-from", "/dev/zero") == 1
    one_error_line(capsys, "/dev/zero: not a regular file")
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_state_file(tmp_path / "absent.pt")


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--sigma-range", "0.5", "0.2"], "argument --sigma-range: sigma_range must have low < high"),
        (["--glimpse-size", "3"], "argument --glimpse-size: glimpse_size must be at least 4"),
        (["--glimpse-size", "30"], "argument --glimpse-size: glimpse_size (30) must be smaller"),
        (["--baseline-init", "0.5", "--policy-warmup", "1", "--glimpses", "1"], None),
    ],
)
def test_a_flag_the_model_refuses_is_a_usage_error_naming_the_flag(tiny_npz, tmp_path, flags, named, capsys):
    argv = ["train", "--data", tiny_npz, "--epochs", "1", "--batch-size", "8", "--out", str(tmp_path / "r"), "--quiet"]
    argv += ["--hidden-size", "16", "--scales", "2", *flags]
    if named is None:
        assert main(argv) == 0
        return
    assert named in _usage_error(argv, capsys)
    assert not (tmp_path / "r").exists()


def test_the_config_takes_numpy_numbers_as_python_ones():
    config = GDRAMConfig(
        num_classes=np.int64(3),
        in_channels=np.uint8(1),
        image_size=(np.int32(24), np.int64(24)),
        glimpse_size=np.int64(8),
        sigma_range=(np.float32(0.25), np.float64(1.0)),
        zero_init_mu=np.bool_(True),
    )
    assert type(config.num_classes) is int and config.image_hw == (24, 24) and config.sigma_range == (0.25, 1.0)
    assert json.loads(json.dumps(config.__dict__)) is not None


# ------------------------------------------------------------------ fuzz: every flag's text


NUMERIC_FLAGS = [
    "--epochs",
    "--batch-size",
    "--lr",
    "--lr-patience",
    "--weight-decay",
    "--grad-clip",
    "--seed",
    "--workers",
    "--glimpses",
    "--glimpse-size",
    "--scales",
    "--hidden-size",
    "--image-size",
    "--val-fraction",
    "--location-guidance",
    "--guidance-weight",
    "--baseline-init",
    "--policy-lr-scale",
    "--border-penalty",
    "--policy-warmup",
]


PARSER = build_parser()


@settings(max_examples=200, deadline=None, derandomize=True)
@given(flag=st.sampled_from(NUMERIC_FLAGS), text=st.text(min_size=1, max_size=12).filter(lambda t: t[0] != "-"))
def test_any_text_given_to_a_numeric_flag_parses_or_is_a_one_line_usage_error(flag, text):
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            PARSER.parse_args(["train", flag, text])
    except SystemExit as exit_info:
        assert exit_info.code == 2 and len(err.getvalue().splitlines()) == 1, err.getvalue()
        assert f"argument {flag}:" in err.getvalue() or "expected one argument" in err.getvalue()
