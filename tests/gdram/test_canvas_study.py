"""``python -m gdram.experiments canvas``: every arm trains, a rerun reads the runs back, the table and the
curves measure each arm against the oracle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gdram.experiments.canvas import ARMS, table, time_to_reach
from gdram.experiments.studies import main
from tiny import write_npz


def summary(arm: str, curve: list[float], head_epochs: int = 0, head_seconds: float = 0.0, top1: float = 0.5) -> dict:
    history = [{"epoch": epoch, "val_top1": value, "train_seconds": 60.0} for epoch, value in enumerate(curve, 1)]
    return {
        "arm": arm,
        "seed": 0,
        "test_top1": top1,
        "test_sampled_top1": top1,
        "test_hit_rate": 0.5,
        "test_border_share": 0.0,
        "train_seconds": 60.0 * len(curve),
        "history": history,
        "head_epochs": head_epochs,
        "head_seconds": head_seconds,
    }


def test_time_to_reach_counts_the_curriculums_small_canvas() -> None:
    plain = summary("default", [0.2, 0.5, 0.9])
    assert time_to_reach(plain, 0.5) == (2, 2.0)
    assert time_to_reach(plain, 0.95) is None
    curriculum = summary("curriculum", [0.6, 0.9], head_epochs=3, head_seconds=120.0)
    assert time_to_reach(curriculum, 0.5) == (4, 3.0)


def test_table_reads_every_arm_against_the_oracles_accuracy() -> None:
    rows = [summary("default", [0.3, 0.5, 0.9]), summary("random", [0.1, 0.2, 0.2]), summary("oracle", [0.9], top1=1.0)]
    markdown = table(rows)
    assert "| default | 1 | 50.0 |" in markdown
    assert "| 2 (2) | 3 (3) |" in markdown  # half of the oracle (0.5) at epoch 2, 90% (0.9) at epoch 3
    assert "| random | 1 |" in markdown and "| - | - |" in markdown


def test_canvas_study_trains_every_arm_once(tmp_path: Path, capsys) -> None:
    data = write_npz(tmp_path / "boxed.npz", boxes=(4.0, 4.0, 16.0, 16.0))
    out = tmp_path / "study"
    argv = ["canvas", "--dataset", data, "--small-dataset", data, "--epochs", "1", "--batch-size", "8"]
    argv += ["--main-seeds", "0", "--out", str(out)]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert [item["arm"] for item in results] == list(ARMS)
    assert (out / "canvas.png").stat().st_size > 0
    curriculum = next(item for item in results if item["arm"] == "curriculum")
    assert curriculum["head_epochs"] == 1 and (out / "runs" / "curriculum-small-seed0" / "best.pt").is_file()
    stamps = {path: path.stat().st_mtime_ns for path in out.glob("runs/*/best.pt")}
    assert main(argv) == 0  # every run read back, none trained again
    assert {path: path.stat().st_mtime_ns for path in out.glob("runs/*/best.pt")} == stamps
    assert "| oracle | 1 |" in (out / "results.md").read_text()


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["canvas", "--arms", "fastest"], "argument --arms: invalid choice"),
        (["canvas", "--small-dataset", "nowhere-512"], "argument --small-dataset: nowhere-512 is none of"),
        (["canvas", "--main-seeds", "-1"], "argument --main-seeds"),
        (["canvas", "--main-arms", "best"], "argument --main-arms: invalid choice"),
    ],
)
def test_canvas_study_refuses_bad_arguments_in_one_line(argv: list[str], fragment: str, capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and fragment in err and "Traceback" not in err
