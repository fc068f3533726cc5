"""Faults around run directories: planted links, concurrent runs, folders that are not runs, interruptions.

The promises: the traceback file of an internal error never follows a link; a run directory is
owned by one run at a time, with a lock that a killed run does not leave stale; an existing folder
that is not a run is refused and left as it was; every moment of interruption leaves a run that
resumes to the result of an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gdram.files as files
import gdram.training.api
import gdram.training.runfiles as runfiles
import numpy as np
import pytest
import torch
from gdram.cli.main import main
from gdram.cli.options import write_traceback
from gdram.training.checkpoint import load_checkpoint
from gdram.training.runfiles import LOCK_NAME, RunFiles, claim_new_run_dir, lock_run_dir
from gdram.training.trainer import Trainer, TrainSettings
from PIL import Image
from tiny import one_error_line, tiny_config, tiny_data, train_tiny

pytestmark = pytest.mark.usefixtures("one_thread")


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


# ------------------------------------------------------------------ 1: the traceback file


def test_the_traceback_file_never_follows_a_link_planted_in_the_temporary_folder(tmp_path, monkeypatch):
    shared = tmp_path / "tmp"
    shared.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    monkeypatch.setattr("tempfile.tempdir", str(shared))
    now = time.time()
    for offset in range(-2, 5):  # every name the old scheme could pick in these seconds, for this process
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now + offset))
        (shared / f"gdram-error-{stamp}-{os.getpid()}.txt").symlink_to(victim)
    try:
        raise RuntimeError("boom")
    except RuntimeError as error:
        kept = write_traceback(error, None)
    assert victim.read_text() == "precious"
    assert kept is not None and kept.parent == shared and not kept.is_symlink()
    assert "boom" in kept.read_text() and (kept.stat().st_mode & 0o777) == 0o600


def test_two_traceback_files_of_the_same_second_and_process_do_not_overwrite_each_other(tmp_path):
    errors = [RuntimeError("first"), RuntimeError("second")]
    kept = [write_traceback(error, tmp_path) for error in errors]
    assert kept[0] != kept[1] and "first" in kept[0].read_text() and "second" in kept[1].read_text()


# ------------------------------------------------------------------ 2: one run per directory


_HOLDER = """
import sys, time
from gdram.training.runfiles import lock_run_dir
lock_run_dir(sys.argv[1])
print("locked", flush=True)
time.sleep(600)
"""


def test_a_run_directory_in_use_by_a_live_run_is_refused_and_a_killed_runs_lock_is_not_stale(
    tiny_npz, tmp_path, capsys
):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(run)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert train_tiny(tiny_npz, run) == 1
        one_error_line(capsys, f"{run} is in use by another gdram run (process {holder.pid})")
        assert not (run / "config.json").exists() and not (run / "last.pt").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (run / LOCK_NAME).exists()  # what the killed run left: a lock file no process holds
    assert train_tiny(tiny_npz, run) == 0
    assert load_checkpoint(run / "last.pt")["epoch"] == 1 and not (run / LOCK_NAME).exists()


def test_a_resumed_run_takes_the_lock_too(trained_run, tmp_path, capsys):
    with lock_run_dir(trained_run):
        holder = subprocess.run(
            [sys.executable, "-m", "gdram", "train", "--resume", "--out", str(trained_run), "--epochs", "2"],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            timeout=300,
        )
    assert holder.returncode == 1 and "is in use by another gdram run" in holder.stderr
    assert "Traceback" not in holder.stderr
    assert load_checkpoint(trained_run / "last.pt")["epoch"] == 1


def test_the_lock_is_reentrant_in_one_process_and_released_by_the_last_holder(tmp_path):
    run = tmp_path / "a" / "b"
    outer = lock_run_dir(run)
    inner = lock_run_dir(run)
    assert outer.created == [tmp_path / "a", run] and inner.created == []
    inner.release()
    assert (run / LOCK_NAME).exists()
    outer.release()
    assert not (tmp_path / "a").exists()  # created for the run, left empty: removed


def test_runs_started_in_the_same_second_with_the_default_out_get_their_own_directories(
    tiny_npz, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(gdram.training.api.time, "strftime", lambda pattern: "20250101-000000")
    assert train_tiny(tiny_npz, None) == 0
    assert train_tiny(tiny_npz, None) == 0
    first, second = Path("runs/gdram-tiny-20250101-000000"), Path("runs/gdram-tiny-20250101-000000-2")
    assert load_checkpoint(first / "last.pt")["epoch"] == 1 and load_checkpoint(second / "last.pt")["epoch"] == 1
    assert json.loads((second / "summary.json").read_text())["run_dir"] == str(second)


def test_a_new_run_directory_is_claimed_exclusively(tmp_path):
    with claim_new_run_dir(tmp_path / "r") as first, claim_new_run_dir(tmp_path / "r") as second:
        assert (first.run_dir, second.run_dir) == (tmp_path / "r", tmp_path / "r-2")


def test_a_library_run_takes_the_lock_of_its_directory(tmp_path):
    with lock_run_dir(tmp_path / "r"):
        code = (
            "import sys; from gdram.training.runfiles import RunFiles; "
            "RunFiles(sys.argv[1]).start({'model': {}, 'train': {}, 'data': {}})"
        )
        other = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / "r")],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            timeout=120,
        )
    assert other.returncode != 0 and "RunDirError" in other.stderr and "in use by another gdram run" in other.stderr
    assert not (tmp_path / "r" / "config.json").exists()
    files = RunFiles(tmp_path / "r")
    files.start({"model": {}, "train": {}, "data": {}})
    files.close()
    assert (tmp_path / "r" / "config.json").exists() and not (tmp_path / "r" / LOCK_NAME).exists()


# ------------------------------------------------------------------ 3: folders that are not runs


@pytest.mark.parametrize(
    "contents",
    [
        {"config.json": '{"mine": 1}\n', "summary.json": "{}\n"},
        {"notes.txt": "my notes\n"},
        {"config.json": '{"model": {}, "train": {}, "data": {}}\n', "thesis.tex": "x"},
    ],
)
def test_an_existing_folder_that_is_not_a_run_is_refused_and_left_as_it_was(tiny_npz, tmp_path, contents, capsys):
    project = tmp_path / "project"
    project.mkdir()
    for name, text in contents.items():
        (project / name).write_text(text)
    before = _snapshot(project)
    assert train_tiny(tiny_npz, project) == 1
    one_error_line(capsys, f"{project} is a folder that is not a gdram run", "choose another run directory")
    assert _snapshot(project) == before and sorted(os.listdir(project)) == sorted(contents)


def test_a_finished_run_whose_last_pt_is_gone_is_refused(trained_run, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "best.pt", "summary.json"):
        (run / name).write_bytes((trained_run / name).read_bytes())
    before = _snapshot(run)
    assert train_tiny(json.loads((run / "config.json").read_text())["data"]["source"], run) == 1
    one_error_line(capsys, "holds a finished gdram run (summary.json) but no last.pt")
    assert _snapshot(run) == before


def test_an_empty_folder_or_a_run_stopped_before_its_first_checkpoint_is_used(tiny_npz, trained_run, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert train_tiny(tiny_npz, empty) == 0
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    (stopped / "config.json").write_bytes((trained_run / "config.json").read_bytes())
    (stopped / "best.pt").write_bytes(b"a best.pt of an interrupted first epoch")
    assert train_tiny(tiny_npz, stopped) == 0
    assert load_checkpoint(stopped / "best.pt")["epoch"] == 1


def test_a_failed_start_leaves_no_folder_it_created(tiny_npz, tmp_path, capsys):
    out = tmp_path / "new" / "run"
    assert train_tiny(tiny_npz, out, "--init-from", str(tmp_path / "gone.pt")) == 1
    assert not (tmp_path / "new").exists()


# ------------------------------------------------------------------ 12: run directories inside the data


def _image_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        for label in ("a", "b"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for index in range(3):
                Image.fromarray(rng.integers(0, 256, (24, 24), dtype=np.uint8), "L").save(folder / f"{index}.png")
    return root


@pytest.mark.parametrize("place", ["train/a/run", "run", "."])
def test_a_run_directory_inside_the_image_folder_is_refused_before_anything_is_written(tmp_path, place, capsys):
    images = _image_folder(tmp_path / "images")
    before = _snapshot(images)
    with pytest.raises(SystemExit) as exit_info:
        train_tiny(str(images), images / place, "--workers", "0")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "lies inside the image folder" in err and len(err.splitlines()) == 1
    assert _snapshot(images) == before and not (images / place / LOCK_NAME).exists()


def test_the_default_run_directory_inside_the_image_folder_is_refused(tmp_path, monkeypatch, capsys):
    images = _image_folder(tmp_path / "images")
    monkeypatch.chdir(images)
    assert train_tiny(".", None, "--workers", "0") == 1
    one_error_line(capsys, "lies inside the image folder")
    assert not (images / "runs").exists()


# ------------------------------------------------------------------ 15: an output below a file


def test_visualize_out_below_a_file_names_the_file(trained_run, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert main(["visualize", str(trained_run / "best.pt"), "--out", str(tmp_path / "afile" / "x.png")]) == 1
    one_error_line(capsys, f"{tmp_path / 'afile'} exists and is not a directory")


# ------------------------------------------------------------------ 4: interrupted at every write


def test_best_pt_is_written_before_last_pt(tmp_path, monkeypatch):
    order = []
    monkeypatch.setattr(runfiles, "save_checkpoint", lambda state, path: order.append(Path(path).name))
    RunFiles(tmp_path).checkpoint({"epoch": 1}, best=True)
    assert order == ["best.pt", "last.pt"]


def _fit(run_dir: Path, epochs: int = 3) -> dict:
    settings = TrainSettings(epochs=epochs, batch_size=8, eval_batch_size=16, seed=5, device="cpu", num_workers=0)
    return Trainer(tiny_config(), tiny_data(), settings, run_dir, quiet=True).fit()


def _continue(run_dir: Path) -> dict:
    if (run_dir / "last.pt").is_file():
        return Trainer.resume(run_dir, tiny_data(), quiet=True).fit()
    return _fit(run_dir)  # stopped before its first last.pt: a new run takes its place, as `gdram train` does


class _Stop(KeyboardInterrupt):
    """Raised right after the chosen atomic write completed."""


def test_an_interruption_after_any_write_leaves_a_run_that_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    reference = _fit(tmp_path / "reference")
    weights = load_checkpoint(tmp_path / "reference" / "last.pt")["model"]
    real_replace = os.replace
    writes = []

    def count(source, target):
        real_replace(source, target)
        writes.append(Path(target).name)

    monkeypatch.setattr(files.os, "replace", count)
    _fit(tmp_path / "counted")
    total = len(writes)
    assert writes.index("best.pt") < writes.index("last.pt")
    for stop_after in range(1, total):
        run = tmp_path / f"stop{stop_after}"
        done = []

        def stopping(source, target, stop_after=stop_after, done=done):
            real_replace(source, target)
            done.append(target)
            if len(done) == stop_after:
                raise _Stop

        monkeypatch.setattr(files.os, "replace", stopping)
        with pytest.raises(_Stop):
            _fit(run)
        monkeypatch.setattr(files.os, "replace", real_replace)
        if (run / "last.pt").is_file() and (run / "best.pt").is_file():
            last, best = load_checkpoint(run / "last.pt"), load_checkpoint(run / "best.pt")
            assert best["epoch"] == last["best_epoch"] or best["epoch"] > last["epoch"], stop_after
        summary = _continue(run)
        assert {key: summary[key] for key in ("best_epoch", "best_val_top1", "test_top1", "epochs")} == {
            key: reference[key] for key in ("best_epoch", "best_val_top1", "test_top1", "epochs")
        }, stop_after
        assert load_checkpoint(run / "best.pt")["epoch"] == summary["best_epoch"], stop_after
        resumed = load_checkpoint(run / "last.pt")["model"]
        assert all(torch.equal(resumed[name], value) for name, value in weights.items()), stop_after
        assert not (run / LOCK_NAME).exists()


def test_a_best_pt_ahead_of_last_pt_is_adopted_on_resume(tmp_path):
    _fit(tmp_path / "r", epochs=1)
    best = load_checkpoint(tmp_path / "r" / "best.pt")
    ahead = {**best, "epoch": 2, "best_epoch": 2, "best_accuracy": 2.0}
    torch.save(ahead, tmp_path / "r" / "best.pt")
    trainer = Trainer.resume(tmp_path / "r", tiny_data(), epochs=2, quiet=True)
    assert (trainer.best_epoch, trainer.best_accuracy) == (2, 2.0)
    summary = trainer.fit()
    assert summary["best_epoch"] == 2 and load_checkpoint(tmp_path / "r" / "best.pt")["epoch"] == 2
