"""The command line under bad input and faults: one clear line per error, nothing lost, bounded resources."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import gdram.cli.main as cli
import gdram.files
import gdram.training.checkpoint as checkpoint
import numpy as np
import pytest
import torch
from gdram.cli.main import main
from gdram.cli.parser import build_parser
from gdram.training.checkpoint import load_checkpoint, save_checkpoint
from gdram.training.trainer import Trainer
from PIL import Image
from tiny import one_error_line, train_tiny, write_npz

pytestmark = pytest.mark.usefixtures("one_thread")


def _usage_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


# ------------------------------------------------------------------ 1: bounded picture size


def test_visualize_refuses_a_zoom_that_would_make_a_huge_picture(trained_run, tmp_path, capsys):
    out = tmp_path / "p.png"
    assert main(["visualize", str(trained_run / "best.pt"), "--out", str(out), "--zoom", "1000", "--n", "2"]) == 1
    one_error_line(capsys, "48004x24000 pixels", "over the limit", "use a zoom of at most 241")
    assert not out.exists()


def test_picture_size_limit_counts_every_frame_of_a_gif():
    from gdram.analysis.visualize import MAX_PICTURE_PIXELS, check_picture_size, picture_size

    check_picture_size(16, (128, 128), 2)
    assert picture_size(4, (10, 20), 3) == (2 * 60 + 4, 2 * 30 + 4)
    width, height = picture_size(16, (128, 128), 8)
    assert width * height <= MAX_PICTURE_PIXELS < width * height * 8
    with pytest.raises(ValueError, match="x 8 frames"):
        check_picture_size(16, (128, 128), 8, frames=8)
    with pytest.raises(ValueError, match="draw fewer images"):
        check_picture_size(10**6, (128, 128), 1)


# ------------------------------------------------------------------ 2: numeric flags


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["train", "--epochs", "0"], "--epochs"),
        (["train", "--epochs", "-3"], "--epochs"),
        (["train", "--batch-size", "0"], "--batch-size"),
        (["train", "--lr", "0"], "--lr"),
        (["train", "--lr", "nan"], "--lr"),
        (["train", "--lr", "-1e-3"], "--lr"),
        (["train", "--glimpses", "0"], "--glimpses"),
        (["train", "--glimpse-size", "-1"], "--glimpse-size"),
        (["train", "--scales", "0"], "--scales"),
        (["train", "--hidden-size", "0"], "--hidden-size"),
        (["train", "--lr-patience", "-1"], "--lr-patience"),
        (["train", "--weight-decay", "-0.1"], "--weight-decay"),
        (["train", "--grad-clip", "0"], "--grad-clip"),
        (["train", "--seed", "-1"], "--seed"),
        (["train", "--workers", "-1"], "--workers"),
        (["train", "--val-fraction", "0"], "--val-fraction"),
        (["train", "--val-fraction", "1"], "--val-fraction"),
        (["train", "--image-size", "0"], "--image-size"),
        (["train", "--image-size", "100000"], "--image-size"),
        (["eval", "x.pt", "--batch-size", "0"], "--batch-size"),
        (["eval", "x.pt", "--batch-size", "-1"], "--batch-size"),
        (["visualize", "x.pt", "--n", "0"], "--n"),
        (["visualize", "x.pt", "--zoom", "0"], "--zoom"),
        (["visualize", "x.pt", "--zoom", "-2"], "--zoom"),
        (["train", "--device", "tpu7"], "--device"),
        (["eval", "x.pt", "--device", "cuda:99"], "--device"),
    ],
)
def test_zero_negative_and_nonsense_numbers_are_usage_errors_naming_the_flag(argv, flag, capsys):
    err = _usage_error(argv, capsys)
    assert f"argument {flag}:" in err and "Traceback" not in err


def test_epochs_and_batch_size_given_are_used_not_replaced_by_defaults(tiny_npz, tmp_path, capsys):
    assert train_tiny(tiny_npz, tmp_path / "r", "--epochs", "2", "--batch-size", "5") == 0
    saved = load_checkpoint(tmp_path / "r" / "last.pt")
    assert saved["epoch"] == 2 and saved["train"]["batch_size"] == 5


# ------------------------------------------------------------------ 3: classes against the data


def test_eval_and_visualize_refuse_data_with_more_classes_than_the_model(trained_run, tmp_path, capsys):
    five = write_npz(tmp_path / "five.npz", classes=5)
    assert main(["eval", str(trained_run / "best.pt"), "--data", five, "--no-latency"]) == 1
    one_error_line(capsys, "predicts 3 classes but five.npz has 5")
    assert main(["visualize", str(trained_run / "best.pt"), "--data", five, "--out", str(tmp_path / "v.png")]) == 1
    one_error_line(capsys, "predicts 3 classes")


def test_training_data_lacking_a_class_of_the_other_splits_warns(tmp_path, capsys):
    data = write_npz(tmp_path / "gap.npz", classes=3, train_classes=2)
    assert train_tiny(data, tmp_path / "r") == 0
    err = capsys.readouterr().err
    assert "warning: the training split of gap.npz has no image of 1 of its 3 classes (2)" in err
    assert load_checkpoint(tmp_path / "r" / "last.pt")["config"]["num_classes"] == 3


def test_a_label_of_a_billion_is_refused_before_anything_is_allocated(tmp_path, capsys):
    path = tmp_path / "huge.npz"
    images = np.zeros((6, 24, 24), np.uint8)
    labels = np.array([0, 1, 2, 0, 1, 10**9])
    np.savez(path, x_train=images, y_train=labels, x_val=images, y_val=labels % 3, x_test=images, y_test=labels % 3)
    start = time.perf_counter()
    assert train_tiny(str(path), tmp_path / "r") == 1
    one_error_line(capsys, "labels go up to 1000000000", "labels must be class indices")
    assert time.perf_counter() - start < 30 and not (tmp_path / "r").exists()


# ------------------------------------------------------------------ 4: one line, never a traceback


@pytest.mark.parametrize("seed", range(8))
def test_eval_of_random_bytes_is_one_line(seed, tmp_path, capsys):
    rng = np.random.default_rng(seed)
    path = tmp_path / "noise.pt"
    path.write_bytes(rng.integers(0, 256, size=int(rng.integers(1, 400)), dtype=np.uint8).tobytes())
    assert main(["eval", str(path)]) == 1
    one_error_line(capsys, "noise.pt: ")


def _image_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        for label in ("a", "b"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for index in range(4):
                pixels = rng.integers(0, 256, size=(24, 24), dtype=np.uint8)
                Image.fromarray(pixels, "L").save(folder / f"{index}.png")
    return root


def test_a_corrupt_image_stops_the_run_before_training_naming_the_file(tmp_path, capsys):
    folder = _image_folder(tmp_path / "images")
    (folder / "val" / "b" / "2.png").write_bytes(b"not an image at all")
    assert train_tiny(str(folder), tmp_path / "r", "--workers", "0") == 1
    one_error_line(capsys, "val/b/2.png: unreadable image", "remove or replace it")
    assert not (tmp_path / "r").exists()


def test_an_image_that_fails_to_decode_later_is_named(tmp_path):
    from gdram.data.datasets import DataError
    from gdram.data.imagefiles import read_image

    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8), "L").save(good)
    broken = tmp_path / "broken.png"
    broken.write_bytes(good.read_bytes()[:500])
    assert read_image(str(good)).size == (32, 32)
    with pytest.raises(DataError, match="broken.png: unreadable image"):
        read_image(str(broken))


def test_out_that_is_a_file_or_below_a_file_is_one_line(tiny_npz, tmp_path, capsys):
    file = tmp_path / "taken"
    file.write_text("x")
    assert train_tiny(tiny_npz, file) == 1
    one_error_line(capsys, "taken exists and is not a directory")
    assert train_tiny(tiny_npz, file / "run") == 1
    one_error_line(capsys, "taken exists and is not a directory")


def test_init_from_a_missing_checkpoint_is_one_line_and_leaves_no_run(tiny_npz, tmp_path, capsys):
    assert train_tiny(tiny_npz, tmp_path / "run", "--init-from", str(tmp_path / "gone.pt")) == 1
    one_error_line(capsys, "gone.pt: no such checkpoint file")
    assert not (tmp_path / "run").exists()


def test_a_read_only_run_directory_is_refused_before_loading_data(tiny_npz, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gdram.files.os, "access", lambda path, mode: False)
    assert train_tiny(tiny_npz, tmp_path / "r") == 1
    one_error_line(capsys, "cannot write in", "read-only or no permission")


def test_a_full_disk_during_training_is_one_line_naming_the_checkpoint(tiny_npz, tmp_path, monkeypatch, capsys):
    def disk_full(obj, file, *args, **kwargs):
        file.write(b"PK\x03\x04 half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", disk_full)
    assert train_tiny(tiny_npz, tmp_path / "r") == 1
    one_error_line(capsys, "best.pt: could not write the checkpoint (No space left on device)")  # best.pt first
    assert not [name for name in os.listdir(tmp_path / "r") if name.endswith(".tmp")]


def test_a_write_error_without_a_file_name_names_the_run_directory(tiny_npz, tmp_path, monkeypatch, capsys):
    import gdram.training.runfiles

    def disk_full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(gdram.training.runfiles, "write_text", disk_full)
    assert train_tiny(tiny_npz, tmp_path / "r") == 1
    one_error_line(capsys, f"No space left on device (run directory {tmp_path / 'r'})")


def test_writing_a_picture_on_a_read_only_place_is_one_line(trained_run, tmp_path, monkeypatch, capsys):
    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "p.png"))

    monkeypatch.setattr(Image.Image, "save", read_only)
    assert main(["visualize", str(trained_run / "best.pt"), "--n", "2", "--out", str(tmp_path / "p.png")]) == 1
    one_error_line(capsys, "p.png: Read-only file system")


def test_visualize_out_naming_a_directory_is_a_usage_error(trained_run, tmp_path, capsys):
    folder = tmp_path / "pictures.png"
    folder.mkdir()
    err = _usage_error(["visualize", str(trained_run / "best.pt"), "--out", str(folder)], capsys)
    assert "is a directory" in err


def test_an_unexpected_error_is_one_line_with_the_traceback_kept_in_a_file(trained_run, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(cli, "evaluation_totals", broken)
    assert main(["eval", str(trained_run / "best.pt"), "--no-latency"]) == 1
    line = one_error_line(capsys, "internal error: RuntimeError: boom (full traceback in ")
    kept = Path(line.split("full traceback in ")[1].rstrip(")"))
    assert "Traceback" in kept.read_text() and "boom" in kept.read_text()
    kept.unlink()
    with pytest.raises(RuntimeError, match="boom"):
        main(["eval", str(trained_run / "best.pt"), "--no-latency", "--debug"])


def test_ctrl_c_while_the_command_line_is_imported_exits_130_without_a_traceback(monkeypatch, capsys):
    from gdram.cli import console

    monkeypatch.setitem(sys.modules, "gdram.cli.main", None)  # make `from gdram.cli.main import main` fail ...
    monkeypatch.setattr("builtins.__import__", _interrupting_import(__import__))  # ... with a KeyboardInterrupt
    assert console.main(["eval", "x.pt"]) == 130
    assert "interrupted" in capsys.readouterr().err


def _interrupting_import(real_import):
    def fake(name, *args, **kwargs):
        if name == "gdram.cli.main":
            raise KeyboardInterrupt
        return real_import(name, *args, **kwargs)

    return fake


@pytest.mark.parametrize("delay", [0.1, 0.3])
def test_sigint_in_the_first_second_prints_no_traceback(tmp_path, delay: float):
    process = subprocess.Popen(
        [sys.executable, "-m", "gdram", "eval", str(tmp_path / "x.pt")], stderr=subprocess.PIPE, text=True
    )
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert "Traceback" not in err and process.returncode in (130, -signal.SIGINT)


# ------------------------------------------------------------------ 5: flags that would be ignored


def test_eval_honours_image_size_with_the_checkpoints_own_data(trained_run, capsys):
    assert main(["eval", str(trained_run / "best.pt"), "--image-size", "40", "--no-latency"]) == 1
    one_error_line(capsys, "expects 1x24x24 images but tiny.npz has 1x40x40")


@pytest.mark.parametrize(
    ("flags", "refused"),
    [
        (["--lr", "0.01"], "--lr 0.01 (the run has 0.001)"),
        (["--glimpses", "3"], "--glimpses 3 (the run has 2)"),
        (["--variant", "ram"], "--variant ram (the run has gdram)"),
        (["--epochs", "1", "--batch-size", "4"], "--batch-size 4"),
        (["--epochs", "0"], "argument --epochs"),
    ],
)
def test_resume_refuses_settings_it_would_ignore(trained_run, flags, refused, capsys):
    err = _usage_error(["train", "--resume", "--out", str(trained_run), *flags], capsys)
    assert refused in err and ("only --epochs and --quiet" in err or "argument" in refused)


def test_resume_refuses_fewer_epochs_than_already_trained(tiny_npz, tmp_path, capsys):
    assert train_tiny(tiny_npz, tmp_path / "r", "--epochs", "2") == 0
    err = _usage_error(["train", "--resume", "--out", str(tmp_path / "r"), "--epochs", "1"], capsys)
    assert "--epochs 1 (the total; the run has already trained 2)" in err


def test_resume_accepts_flags_equal_to_the_saved_ones(trained_run, tmp_path, capsys):
    run = tmp_path / "copy"
    shutil.copytree(trained_run, run)
    assert (
        main(["train", "--resume", "--out", str(run), "--epochs", "2", "--lr", "0.001", "--glimpses", "2", "--quiet"])
        == 0
    )
    assert load_checkpoint(run / "last.pt")["epoch"] == 2


def test_the_cnn_baseline_refuses_glimpse_flags(tiny_npz, tmp_path, capsys):
    err = _usage_error(
        [
            "train",
            "--data",
            tiny_npz,
            "--variant",
            "cnn",
            "--glimpses",
            "3",
            "--scales",
            "2",
            "--out",
            str(tmp_path / "r"),
        ],
        capsys,
    )
    assert "--glimpses, --scales: the CNN baseline (--variant cnn) has no glimpses" in err


# ------------------------------------------------------------------ 6: where the data is


def test_a_run_finds_its_data_from_any_folder_and_notices_when_it_changed(tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    write_npz(work / "d.npz")
    monkeypatch.chdir(work)
    assert train_tiny("d.npz", Path("run")) == 0
    data = json.loads((work / "run" / "config.json").read_text())["data"]
    assert data["source"] == str(work / "d.npz") and data["fingerprint"].startswith("sha256:")
    monkeypatch.chdir(tmp_path)
    assert main(["eval", "work/run/best.pt", "--no-latency"]) == 0
    capsys.readouterr()
    write_npz(work / "d.npz", size=24, classes=2)
    assert main(["eval", "work/run/best.pt", "--no-latency"]) == 1
    one_error_line(capsys, "d.npz has changed since work/run/best.pt was trained on it", "pass --data")
    assert main(["eval", "work/run/best.pt", "--no-latency", "--data", "work/d.npz"]) == 0


def test_resume_refuses_other_data_and_records_moved_data(tiny_npz, trained_run, tmp_path, capsys):
    run = tmp_path / "copy"
    shutil.copytree(trained_run, run)
    other = write_npz(tmp_path / "other.npz", classes=2)
    assert main(["train", "--resume", "--out", str(run), "--epochs", "2", "--data", other]) == 1
    one_error_line(capsys, "other.npz is not the data set the run in", "start a new run")
    moved = tmp_path / "moved.npz"
    shutil.copy(tiny_npz, moved)
    assert main(["train", "--resume", "--out", str(run), "--epochs", "2", "--data", str(moved), "--quiet"]) == 0
    assert json.loads((run / "config.json").read_text())["data"]["source"] == str(moved)
    assert load_checkpoint(run / "last.pt")["data"]["source"] == str(moved)


def test_an_older_runs_relative_data_path_that_is_not_found_asks_for_data(tmp_path):
    from gdram.data.datasets import DataError
    from gdram.data.provenance import verify

    with pytest.raises(DataError, match="data/d.npz: no such file or directory .*pass --data"):
        verify({"source": "data/d.npz"}, "run/best.pt")
    verify({"source": "mnist"}, "run/best.pt")


def test_a_run_on_the_embedded_set_records_its_generator(tmp_path):
    from gdram.data.provenance import locate, verify

    spec = locate({"source": "cluttered-digits"})
    assert spec["generator"]["train_placements"] >= 1
    verify(spec, "the run")
    with pytest.raises(ValueError, match="generated with other parameters"):
        verify({**spec, "generator": {**spec["generator"], "seed": -1}}, "the run")


# ------------------------------------------------------------------ 7, 8, 9


def test_eval_json_writes_null_for_a_nan_loss(trained_run, tmp_path, capsys):
    state = load_checkpoint(trained_run / "best.pt")
    state["model"] = {
        name: torch.full_like(value, float("nan")) if value.is_floating_point() else value
        for name, value in state["model"].items()
    }
    save_checkpoint(state, tmp_path / "nan.pt")
    assert main(["eval", str(tmp_path / "nan.pt"), "--json", "--no-latency"]) == 0

    def refuse(constant):
        raise AssertionError(f"not JSON: {constant}")

    result = json.loads(capsys.readouterr().out, parse_constant=refuse)
    assert result["loss"] is None


def test_data_that_is_not_an_npz_file_is_named_for_what_it_is(tmp_path, capsys):
    png = tmp_path / "some.png"
    Image.fromarray(np.zeros((8, 8), np.uint8), "L").save(png)
    assert main(["train", "--data", str(png), "--out", str(tmp_path / "r")]) == 1
    one_error_line(capsys, "some.png: not a readable .npz file, it is a PNG image")
    npy = tmp_path / "array.npy"
    np.save(npy, np.zeros(3))
    assert main(["train", "--data", str(npy), "--out", str(tmp_path / "r")]) == 1
    one_error_line(capsys, "it is a .npy file (one array)")


def test_a_temporary_left_by_a_killed_run_is_removed_on_the_next_start(tiny_npz, trained_run, tmp_path, capsys):
    run = tmp_path / "copy"
    shutil.copytree(trained_run, run)
    stale = run / ".last.pt.999999999.tmp"
    stale.write_bytes(b"")
    assert main(["train", "--resume", "--out", str(run), "--epochs", "2", "--quiet"]) == 0
    assert not stale.exists()
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / ".best.pt.999999998.tmp").write_bytes(b"")
    assert train_tiny(tiny_npz, fresh) == 0
    assert not (fresh / ".best.pt.999999998.tmp").exists()


# ------------------------------------------------------------------ UX


def test_without_a_terminal_there_is_no_progress_bar_but_quiet_keeps_the_epoch_lines(tiny_npz, tmp_path, capsys):
    assert train_tiny(tiny_npz, tmp_path / "r", "--epochs", "2") == 0
    captured = capsys.readouterr()
    assert "\r" not in captured.err and "batch/s" not in captured.err
    assert "epoch 1/2:" in captured.err and "epoch 2/2:" in captured.err
    assert f"run directory {tmp_path / 'r'}" in captured.err
    assert captured.out.count("\n") == 1


def test_an_interrupt_names_the_real_run_and_suggests_resume_only_with_a_checkpoint(
    tiny_npz, trained_run, tmp_path, monkeypatch, capsys
):
    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "fit", interrupted)
    assert train_tiny(tiny_npz, tmp_path / "new") == 130
    err = capsys.readouterr().err
    assert f"\ngdram train: interrupted; no checkpoint was written in {tmp_path / 'new'} yet" in err
    assert "RUNDIR" not in err
    run = tmp_path / "copy"
    shutil.copytree(trained_run, run)
    assert main(["train", "--resume", "--out", str(run), "--epochs", "3"]) == 130
    assert f"resume with: gdram train --resume --out {run}" in capsys.readouterr().err


def test_sigterm_stops_like_ctrl_c_with_exit_code_143(tiny_npz, tmp_path, monkeypatch, capsys):
    def terminated(self):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)

    monkeypatch.setattr(Trainer, "fit", terminated)
    assert train_tiny(tiny_npz, tmp_path / "r") == 143
    assert "gdram train: terminated" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_every_flag_has_help_and_help_shows_the_defaults(capsys):
    parser = build_parser()
    subcommands = parser._subparsers._group_actions[0].choices
    for name, subparser in subcommands.items():
        for action in subparser._actions:
            assert action.help, f"gdram {name} {action.option_strings or action.dest} has no help"
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = capsys.readouterr().out
    assert "(default: 256)" in text and "(default: test)" in text and "(default: None)" not in text
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "(default: 0.001)" in text and "(default: gdram)" in text and "(default: 0.1)" in text


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("gdram ")


def test_eval_fast_on_the_cnn_baseline_is_refused_not_called_f_gdram(tiny_npz, tmp_path, capsys):
    assert (
        main(
            [
                "train",
                "--data",
                tiny_npz,
                "--variant",
                "cnn",
                "--epochs",
                "1",
                "--batch-size",
                "8",
                "--hidden-size",
                "16",
                "--out",
                str(tmp_path / "cnn"),
                "--quiet",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "cnn" / "best.pt"), "--fast", "--no-latency"]) == 1
    line = one_error_line(capsys, "the CNN baseline (no glimpses)")
    assert "F-GDRAM" not in line


@pytest.mark.parametrize("argv", [["train", "--moves", "up"], ["train", "--epochs", "0"], ["bogus"], [], ["eval"]])
def test_a_usage_error_is_one_line_without_the_usage_text(argv: list[str], capsys) -> None:
    err = _usage_error(argv, capsys)
    assert len(err.splitlines()) == 1 and "usage:" not in err, err
    assert err.startswith("gdram") and "error: " in err and "--help" in err
