"""The ``gdram`` command line: each subcommand on tiny data, its outputs and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from gdram.cli.main import main
from PIL import Image
from tiny import TINY_MODEL

pytestmark = pytest.mark.usefixtures("one_thread")


def test_train_writes_the_run_directory(trained_run):
    names = {path.name for path in Path(trained_run).iterdir()}
    assert {"best.pt", "last.pt", "metrics.jsonl", "metrics.csv", "config.json", "summary.json"} <= names
    config = json.loads((Path(trained_run) / "config.json").read_text())
    assert config["model"]["num_glimpses"] == 2 and config["data"]["source"].endswith("tiny.npz")


def test_train_with_the_area_retina_stores_it_and_resume_refuses_another(tiny_npz, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--data", tiny_npz, "--batch-size", "8", "--out", str(run), "--quiet", *TINY_MODEL]
    assert main([*args, "--epochs", "1", "--retina-mode", "area"]) == 0
    assert json.loads((run / "config.json").read_text())["model"]["retina_mode"] == "area"
    with pytest.raises(SystemExit) as refused:
        main(["train", "--out", str(run), "--resume", "--epochs", "2", "--retina-mode", "bilinear"])
    assert refused.value.code == 2
    assert "--retina-mode bilinear (the run has area)" in capsys.readouterr().err


def test_train_summary_line_and_resume_extends_the_run(tiny_npz, tmp_path, capsys):
    run = str(tmp_path / "run")
    args = ["train", "--data", tiny_npz, "--batch-size", "8", "--out", run, "--quiet", *TINY_MODEL]
    assert main([*args, "--epochs", "1"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.count("\n") == 0 and "test top-1" in line and run in line
    assert main([*args, "--epochs", "1"]) == 1  # refuses to overwrite a run
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", "--out", run, "--resume", "--epochs", "2", "--quiet"]) == 0
    assert "at epoch" in capsys.readouterr().out
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(row)["epoch"] for row in metrics] == [1, 2]


def test_eval_json_reports_accuracy_glimpses_and_latency(trained_run, capsys):
    assert main(["eval", f"{trained_run}/best.pt", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"top1", "top5", "mean_glimpses", "latency_ms_batch1", "latency_ms_batched", "n"} <= set(result)
    assert result["n"] == 8 and result["mean_glimpses"] == 2 and 0 <= result["top1"] <= result["top5"] <= 1
    assert result["latency_ms_batch1"] > 0


def test_eval_fast_prints_one_f_gdram_line(trained_run, capsys):
    assert main(["eval", f"{trained_run}/best.pt", "--fast", "--split", "val", "--no-latency"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("F-GDRAM") and "(n=8)" in out[0]


def test_visualize_writes_a_png_grid_and_an_animated_gif(trained_run, tmp_path, capsys):
    png, gif = tmp_path / "g.png", tmp_path / "g.gif"
    assert main(["visualize", f"{trained_run}/best.pt", "--n", "4", "--out", str(png)]) == 0
    assert main(["visualize", f"{trained_run}/best.pt", "--n", "3", "--out", str(gif), "--zoom", "1"]) == 0
    with Image.open(png) as picture:
        assert picture.format == "PNG" and picture.width == 2 * 48 + 4
    with Image.open(gif) as animation:
        assert animation.format == "GIF" and animation.n_frames == 2


def test_bad_input_exits_1_with_one_clear_line(tiny_npz, tmp_path, capsys):
    assert main(["eval", str(tmp_path / "missing.pt")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.pt: no such checkpoint file" in err
    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=np.zeros((3, 8, 8), np.uint8), y_train=np.zeros(2, np.int64))
    assert main(["train", "--data", str(bad), "--out", str(tmp_path / "r"), "--quiet"]) == 1
    assert "bad.npz: missing array(s) x_test, y_test" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                "--data",
                tiny_npz,
                "--variant",
                "cnn",
                "--policy",
                "random",
                "--quiet",
                "--out",
                str(tmp_path / "r2"),
            ]
        )
        == 1
    )
    assert "random location policy needs an attention variant" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--epochs", "many"],
        ["train", "--resume"],
        ["frobnicate"],
        [],
        ["train", "--dataset", "mnist", "--data", "x.npz"],
        ["eval"],
    ],
)
def test_usage_errors_exit_2(argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2


def test_python_m_gdram_runs_the_cli_without_tracebacks(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "gdram", "eval", str(tmp_path / "nope.pt")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr and "nope.pt" in done.stderr
    helped = subprocess.run(
        [sys.executable, "-m", "gdram", "train", "--help"], capture_output=True, text=True, timeout=120
    )
    assert helped.returncode == 0 and "--resume" in helped.stdout and "--variant" in helped.stdout


def test_eval_accepts_a_published_state_dict_with_a_data_set(tiny_npz, tmp_path, capsys, monkeypatch):
    import gdram.cli.main as cli
    from gdram.models.config import GDRAMConfig
    from gdram.models.gdram import GDRAM
    from gdram.models.official import to_official
    from gdram.training.checkpoint import load_state_file

    model = GDRAM(
        GDRAMConfig(
            num_classes=3,
            in_channels=1,
            image_size=24,
            glimpse_size=8,
            num_scales=2,
            hidden_size=16,
            glimpse_channels=(4, 8),
            context_channels=4,
            mlp_hidden_size=16,
            official_footprint=True,
            recipe="paper",
        )
    )
    path = tmp_path / "published.pth"
    torch.save(to_official(model), path)
    assert main(["eval", str(path), "--json", "--no-latency"]) == 1
    assert "pass --dataset or --data" in capsys.readouterr().err
    reads = []
    monkeypatch.setattr(cli, "load_state_file", lambda *args: reads.append(args) or load_state_file(*args))
    assert main(["eval", str(path), "--data", tiny_npz, "--json", "--no-latency"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["kind"] == "official" and result["n"] == 8 and result["mean_glimpses"] == 8
    assert len(reads) == 1  # the file is read once, then built for the data's image size
