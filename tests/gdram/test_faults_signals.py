"""Stop signals at any moment, and the experiments' command line under bad arguments.

The promise: SIGINT or SIGTERM sent to the whole process group (DataLoader workers included) exits
130 or 143 with one line and no traceback; ``python -m gdram.experiments`` checks every argument
before its first run and reports a bad one in one line (exit 2), bad input in one line (exit 1).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from gdram.experiments.studies import main as experiments
from PIL import Image

pytestmark = pytest.mark.usefixtures("one_thread")


def _image_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, count in (("train", 60), ("val", 8), ("test", 8)):
        for label in ("a", "b"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for index in range(count):
                Image.fromarray(rng.integers(0, 256, (24, 24), dtype=np.uint8), "L").save(folder / f"{index}.png")
    return root


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_signal_to_the_process_group_with_workers_exits_cleanly(tmp_path, signum, code):
    images = _image_folder(tmp_path / "images")
    argv = ["train", "--data", str(images), "--epochs", "100", "--batch-size", "4", "--workers", "2"]
    argv += ["--glimpses", "2", "--glimpse-size", "8", "--scales", "2", "--hidden-size", "16", "--device", "cpu"]
    process = subprocess.Popen(
        [sys.executable, "-m", "gdram", *argv, "--out", str(tmp_path / "run")],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"},
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True)
    reader.start()
    deadline = time.monotonic() + 240
    while not any("parameters, on cpu" in line for line in lines) and time.monotonic() < deadline:
        time.sleep(0.2)  # until training (and its workers) runs
    time.sleep(2.0)
    os.killpg(process.pid, signum)
    try:
        process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail(f"still running 120 s after {signal.Signals(signum).name}")
    reader.join(timeout=30)
    err = "".join(lines)
    assert process.returncode == code, err
    for sign in ("Traceback", "Exception ignored", "internal error"):
        assert sign not in err, err
    assert ("terminated" if signum == signal.SIGTERM else "interrupted") in err.strip().splitlines()[-1]


# ------------------------------------------------------------------ 13: the experiments' arguments


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["attention", "--guidance", "5"], "argument --guidance: must lie between 0 and 1"),
        (["attention", "--epochs", "0"], "argument --epochs"),
        (["attention", "--seeds", "-1"], "argument --seeds"),
        (["attention", "--set", "warp=1"], "argument --set"),
        (["attention", "--set", "policy_warmup=-2"], "argument --set: policy_warmup"),
        (["attention", "--dataset", "nowhere.npz"], "argument --dataset"),
        (["attention", "--init-from", "absent"], "argument --init-from: no absent/runs/learned-seed0/best.pt"),
        (["alignment", "absent.pt"], "argument checkpoint"),
        (["alignment", "x.pt", "--images", "0"], "argument --images"),
        (["corner", "--seeds", "x"], "argument --seeds"),
    ],
)
def test_a_bad_experiment_argument_is_one_line_before_any_run(argv, named, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        experiments(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and named in err, err
    assert not (tmp_path / "experiments").exists()


def test_alignment_on_data_without_boxes_is_one_line_not_a_table_of_nan(trained_run, tiny_npz, capsys):
    assert experiments(["alignment", str(trained_run / "best.pt"), "--dataset", tiny_npz, "--images", "4"]) == 1
    captured = capsys.readouterr()
    assert "nan" not in captured.out.lower() and "Traceback" not in captured.err
    assert "no target box for every validation image" in captured.err and len(captured.err.splitlines()) == 1


def test_alignment_of_a_file_that_is_no_checkpoint_is_one_line(tmp_path, capsys):
    (tmp_path / "noise.pt").write_bytes(b"\x80\x02noise")
    assert experiments(["alignment", str(tmp_path / "noise.pt")]) == 1
    err = capsys.readouterr().err
    assert "noise.pt: " in err and len(err.splitlines()) == 1 and "Traceback" not in err


_STUCK_AFTER_A_STOP = """
import os, signal, threading
from gdram.cli.signals import StopSignals
StopSignals.GRACE_SECONDS = 1.0
with StopSignals(lambda terminated: "gdram train: interrupted (stuck unwinding)") as stop:
    try:
        os.kill(os.getpid(), signal.SIGINT)
        threading.Event().wait(60)
    except KeyboardInterrupt:
        threading.Event().wait(60)  # a cleanup that never returns
"""


def test_a_stop_whose_unwinding_is_stuck_exits_after_the_grace_period_with_the_stop_line():
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", _STUCK_AFTER_A_STOP],
        capture_output=True,
        text=True,
        timeout=50,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert result.returncode == 130, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "gdram train: interrupted (stuck unwinding)"
    assert time.monotonic() - started < 30
