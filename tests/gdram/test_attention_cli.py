"""Attention on the command line: boxes in, hit rate and sampled-path accuracy out; the experiment's table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from gdram.cli.main import main
from gdram.experiments.studies import plot, table
from tiny import TINY_MODEL, write_npz

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def boxed_npz(tmp_path_factory) -> str:
    """The tiny data set with every target box at (2, 2)-(10, 10): the image centre (12, 12) lies outside."""
    return write_npz(tmp_path_factory.mktemp("data") / "boxed.npz", boxes=(2.0, 2, 10, 10))


@pytest.mark.parametrize("policy", ["learned", "center", "oracle"])
def test_train_and_eval_report_where_the_glimpses_went(boxed_npz, tmp_path, capsys, policy) -> None:
    run = tmp_path / policy
    assert (
        main(
            [
                "train",
                "--data",
                boxed_npz,
                "--epochs",
                "1",
                "--batch-size",
                "8",
                "--out",
                str(run),
                "--quiet",
                "--policy",
                policy,
                "--location-guidance",
                "0.5" if policy == "learned" else "0",
                *TINY_MODEL,
            ]
        )
        == 0
    )
    assert "hit rate" in capsys.readouterr().out
    assert (run / "learning_curve.png").stat().st_size > 0
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert {"val_hit_rate", "val_box_distance_px", "val_border_share", "val_sampled_top1"} <= set(record)
    assert main(["eval", str(run / "best.pt"), "--json", "--no-latency"]) == 0
    result = json.loads(capsys.readouterr().out)
    expected_hits = {"center": 0.0, "oracle": 1.0}
    if policy in expected_hits:
        assert result["hit_rate"] == expected_hits[policy]
    assert 0 <= result["hit_rate"] <= 1 and 0 <= result["sampled_top1"] <= 1 and result["policy"] == policy


def test_location_guidance_needs_boxes(tmp_path, capsys) -> None:
    path = tmp_path / "plain.npz"
    images = np.zeros((20, 24, 24), np.uint8)
    np.savez(path, x_train=images, y_train=np.arange(20) % 2, x_test=images[:4], y_test=np.arange(4) % 2)
    assert (
        main(
            [
                "train",
                "--data",
                str(path),
                "--epochs",
                "1",
                "--out",
                str(tmp_path / "r"),
                "--quiet",
                "--location-guidance",
                "0.1",
                *TINY_MODEL,
            ]
        )
        == 1
    )
    assert "needs a target box" in capsys.readouterr().err


def test_bad_recipe_flags_are_one_line_errors(tmp_path, capsys) -> None:
    for flags in (["--location-guidance", "1.5"], ["--sigma-range", "0.3", "-1"], ["--recipe", "fast"]):
        with pytest.raises(SystemExit) as stopped:
            main(["train", "--out", str(tmp_path / "r"), *flags])
        assert stopped.value.code == 2
        assert "Traceback" not in capsys.readouterr().err


def test_experiment_table_and_plot_summarise_seeds(tmp_path: Path) -> None:
    summaries = [
        {
            "policy": policy,
            "guidance": 0.0,
            "seed": seed,
            "run": f"{policy}-seed{seed}",
            "test_top1": top1,
            "test_sampled_top1": top1,
            "test_hit_rate": hit,
            "test_box_distance_px": 3.0,
            "test_border_share": 0.0,
            "train_seconds": 10.0,
        }
        for policy, seed, top1, hit in (("learned", 0, 0.8, 0.9), ("learned", 1, 0.6, 0.7), ("center", 0, 0.5, 0.5))
    ]
    markdown = table(summaries)
    assert "| learned | 2 | 70.0 ± 14.1 |" in markdown and "| center | 1 | 50.0 |" in markdown
    assert "80.0, 60.0" in markdown
    assert plot(summaries, tmp_path, "title").stat().st_size > 0
