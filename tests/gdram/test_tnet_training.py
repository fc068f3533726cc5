"""TNet through the shared trainer and the command line: train, resume, evaluate, draw, refuse."""

from __future__ import annotations

import json
import re

import pytest
import torch
from gdram import TNet, TNetConfig, resume, train
from gdram.cli.main import main
from gdram.data.loading import load_data
from gdram.experiments.tnet import arm_fields, level_cell
from gdram.training.checkpoint import load_checkpoint
from gdram.training.evaluate import evaluation_totals, summarize
from gdram.training.families import FAMILIES, family_of
from PIL import Image
from tiny import one_error_line, write_npz, write_quadrant_npz

pytestmark = pytest.mark.usefixtures("one_thread")

# A TNet that reads the 64 px quadrant task at a 16 px base, its overview too (the reference's; at the default
# 32 px the class shows on the overview): the 2x2 grid's half cells are the quadrants.
QUADRANT_FLAGS = ["--model", "tnet", "--base-size", "16", "--overview-size", "16", "--levels", "2"]
QUADRANT_FLAGS += ["--grid-size", "2", "--cells-per-level", "1", "--feature-size", "32"]
QUADRANT_FIELDS = {
    "base_size": 16,
    "overview_size": 16,
    "levels": 2,
    "grid_size": 2,
    "cells_per_level": (1,),
    "feature_size": 32,
}
QUICK = ["--batch-size", "32", "--device", "cpu", "--workers", "0", "--quiet", "--lr", "0.003"]


@pytest.fixture(scope="module")
def quadrants(tmp_path_factory) -> str:
    return write_quadrant_npz(tmp_path_factory.mktemp("data") / "quadrants.npz")


def _summary(run) -> dict:
    return json.loads((run / "summary.json").read_text())


def test_a_learned_cell_choice_beats_random_cells_through_the_trainer(quadrants, tmp_path):
    """SLOW (about 15 s): the class is visible only in the striped square's quadrant; learned cells find it."""
    for policy in ("learned", "random"):
        run = tmp_path / policy
        flags = [*QUADRANT_FLAGS, "--policy", policy, "--epochs", "8", *QUICK, "--out", str(run)]
        assert main(["train", "--data", quadrants, *flags]) == 0
    learned, random = _summary(tmp_path / "learned"), _summary(tmp_path / "random")
    assert learned["test_top1"] >= random["test_top1"] + 0.15, (learned["test_top1"], random["test_top1"])
    assert learned["test_hit_rate"] >= 2 * random["test_hit_rate"] and random["test_hit_rate"] < 0.4


def test_the_salient_warmup_reads_the_salient_cells_and_teaches_the_location_module_to_choose_them(tmp_path):
    """On black quadrants the striped square is each image's salient place; three warm-up epochs keep the
    cells nearest it, and the location module, trained only to imitate them (no reward), then finds it."""
    data = write_quadrant_npz(tmp_path / "dark.npz", dark=True)
    settings = {"epochs": 3, "batch_size": 32, "device": "cpu", "num_workers": 0, "lr": 0.003}
    fields = {**QUADRANT_FIELDS, "policy_warmup": 3}
    summary = train(data, fields, settings, out=tmp_path / "run", model="tnet", quiet=True)
    assert summary["test_hit_rate"] >= 0.9 and summary["test_top1"] >= 0.9
    model = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    assert model["reward_baseline.value"].item() == TNetConfig().baseline_init  # REINFORCE never ran


def test_a_resumed_tnet_run_ends_exactly_like_an_uninterrupted_one(quadrants, tmp_path):
    settings = {"epochs": 2, "batch_size": 32, "device": "cpu", "num_workers": 0}
    fields = {**QUADRANT_FIELDS, "sampling": "gumbel"}
    train(quadrants, fields, settings, out=tmp_path / "whole", model="tnet", quiet=True)
    train(quadrants, fields, {**settings, "epochs": 1}, out=tmp_path / "parts", model="tnet", quiet=True)
    assert resume(tmp_path / "parts", epochs=2, quiet=True)["epochs"] == 2
    whole, parts = (load_checkpoint(tmp_path / name / "last.pt") for name in ("whole", "parts"))
    assert whole["family"] == parts["family"] == "tnet"
    assert all(torch.equal(whole["model"][name], parts["model"][name]) for name in whole["model"])
    assert whole["metrics"][-1]["val_top1"] == parts["metrics"][-1]["val_top1"]


def test_eval_reports_cells_per_level_hit_rate_flops_and_latency(quadrants, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", quadrants, *QUADRANT_FLAGS, "--epochs", "1", *QUICK, "--out", str(run)]) == 0
    assert "tnet (learned policy) on quadrants.npz" in capsys.readouterr().out
    assert main(["eval", str(run / "best.pt"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["variant"] == "tnet" and result["boxes_per_level"] == [1, 1] and result["mean_glimpses"] == 2
    assert 0 <= result["hit_rate"] <= 1 and result["latency_ms_batch1"] > 0
    assert result["level_hit_rates"] == [pytest.approx(result["hit_rate"])]  # one level of cells
    assert main(["eval", str(run / "best.pt"), "--no-latency"]) == 0
    assert f"cell hit rate {result['hit_rate']:.3f} (levels 2: {result['hit_rate']:.3f})" in capsys.readouterr().out
    # two backbone passes on 16 px crops: the small CNN's three convolutions and the location module, a few MFLOPs
    assert 1e5 < result["flops_per_image"] < 1e7


def test_the_oracle_policy_trains_and_every_cell_it_keeps_holds_the_target(quadrants, tmp_path, capsys):
    run = tmp_path / "oracle"
    flags = [*QUADRANT_FLAGS, "--policy", "oracle", "--epochs", "1", *QUICK, "--out", str(run)]
    assert main(["train", "--data", quadrants, *flags]) == 0
    assert "tnet (oracle policy) on quadrants.npz" in capsys.readouterr().out
    assert _summary(run)["test_hit_rate"] == 1.0
    assert main(["eval", str(run / "best.pt"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["policy"] == "oracle" and result["hit_rate"] == 1.0 and result["box_distance_px"] == 0.0
    assert result["latency_ms_batch1"] > 0 and result["flops_per_image"] > 0  # measured without boxes
    assert main(["visualize", str(run / "best.pt"), "--n", "2", "--out", str(tmp_path / "cells.png")]) == 1
    one_error_line(capsys, "trained with the oracle policy", "no learned trajectory to draw")


def test_the_oracle_policy_needs_the_datas_boxes(tmp_path, capsys):
    data = write_npz(tmp_path / "plain.npz", size=32)  # no box_* arrays
    flags = ["--model", "tnet", "--base-size", "16", "--feature-size", "8", "--policy", "oracle", *QUICK]
    assert main(["train", "--data", data, *flags, "--out", str(tmp_path / "run")]) == 1
    one_error_line(capsys, "the oracle policy needs a target box for every training image")
    assert not (tmp_path / "run" / "last.pt").exists()


def test_visualize_draws_the_chosen_cells_of_every_level(quadrants, tmp_path):
    run = tmp_path / "run"
    flags = ["--model", "tnet", "--base-size", "16", "--cells-per-level", "2", "1", "--feature-size", "16"]
    assert main(["train", "--data", quadrants, *flags, "--epochs", "1", *QUICK, "--out", str(run)]) == 0
    assert main(["visualize", str(run / "best.pt"), "--n", "4", "--out", str(tmp_path / "cells.gif")]) == 0
    with Image.open(tmp_path / "cells.gif") as picture:
        assert picture.n_frames == 2  # one frame per level after the first
    assert main(["visualize", str(run / "best.pt"), "--n", "4", "--out", str(tmp_path / "cells.png")]) == 0
    assert Image.open(tmp_path / "cells.png").size == (2 * 64 * 2 + 4, 2 * 64 * 2 + 4)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--model", "tnet", "--glimpses", "3"], "--glimpses: GDRAM's (--model gdram) flags, not --model tnet's"),
        (["--levels", "2"], "--levels: TNet's (--model tnet) flags, not --model gdram's"),
        (["--pooling", "mean"], "--pooling: TNet's (--model tnet) flags, not --model gdram's"),
        (["--model", "tnet", "--pooling", "sum"], "argument --pooling: invalid choice: 'sum'"),
        (
            ["--model", "tnet", "--salient-window", "100000"],
            "argument --salient-window: salient_window (100000) must not exceed image_size",
        ),
        (
            ["--model", "tnet", "--overview-size", "128"],
            "argument --overview-size: overview_size (128) must not exceed image_size (64)",
        ),
        (["--model", "tnet", "--overview-size", "0"], "argument --overview-size:"),
        (
            ["--model", "tnet", "--policy", "center"],
            "argument --policy: policy must be one of ('learned', 'random', 'oracle')",
        ),
        (["--model", "tnet", "--location-guidance", "0.1"], "--location-guidance: GDRAM's"),
        (["--model", "tnet", "--cells-per-level", "2"], "argument --cells-per-level: cells_per_level must be a tuple"),
    ],
)
def test_flags_of_the_other_family_or_refused_by_tnet_are_usage_errors(quadrants, tmp_path, flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", quadrants, *flags, "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_tnet_reads_square_images_only(tmp_path):
    from tiny import tiny_data

    data = tiny_data()
    data.image_size = (24, 32)
    with pytest.raises(ValueError, match="TNet reads square images; tiny has 24x32 images"):
        train(data, {"base_size": 8, "feature_size": 8}, {"epochs": 1}, out=tmp_path / "run", model="tnet")


def test_every_config_finds_its_family_and_a_checkpoint_without_one_is_gdrams(trained_run):
    assert family_of(TNetConfig(num_classes=2, in_channels=1, image_size=64, base_size=16)) is FAMILIES["tnet"]
    state = load_checkpoint(trained_run / "last.pt")
    assert state["family"] == "gdram"


def test_the_study_reads_the_whole_image_downscaled_to_the_base_size_and_at_full_resolution():
    downscaled = TNetConfig(**arm_fields("downscaled", 512))
    assert downscaled.levels == 1 and downscaled.overview_side == downscaled.base_size == 64
    assert TNetConfig(**arm_fields("full-res", 512)).overview_side == 512
    assert TNetConfig(**arm_fields("tnet", 512)) == TNetConfig()
    assert TNetConfig(**arm_fields("tnet-random", 512)).overview_side == 128
    assert TNetConfig(**arm_fields("tnet-gumbel", 512)) == TNetConfig(sampling="gumbel")


def level_hit_rates(model, dataset) -> list:
    return summarize(evaluation_totals(model, dataset))["level_hit_rates"]


def test_evaluation_and_the_study_report_each_levels_hit_rate(quadrants):
    data = load_data(quadrants)
    fields = {**QUADRANT_FIELDS, "num_classes": 2, "in_channels": 1, "image_size": 64}
    assert level_hit_rates(TNet(TNetConfig(**fields, policy="oracle")), data.test) == [1.0]
    random = level_hit_rates(TNet(TNetConfig(**fields, policy="random")), data.test)
    three = TNet(TNetConfig(**{**fields, "levels": 3, "cells_per_level": (1, 1), "policy": "oracle"}))
    assert level_hit_rates(three, data.test) == [1.0, 1.0]  # the striped square's centre: in its quadrant, and in
    # the quadrant's cell nearest it
    assert len(random) == 1 and 0.1 < random[0] < 0.45  # 1 quadrant in 4
    seeds = [{"test_level_hit_rates": [0.6, 0.5]}, {"test_level_hit_rates": [0.62, 0.58]}]
    assert level_cell(seeds) == "61 / 54"
    assert level_cell([{"test_level_hit_rates": []}]) == level_cell([{}]) == "-"


def test_the_tnet_study_trains_its_arms_and_tabulates_each_levels_hit_rate(quadrants, tmp_path, capsys):
    from gdram.experiments.studies import main as study

    out = tmp_path / "study"
    argv = ["tnet", "--dataset", quadrants, "--arms", "tnet", "downscaled", "--seeds", "0", "--epochs", "1"]
    assert study([*argv, "--batch-size", "32", "--out", str(out)]) == 0
    markdown = (out / "results.md").read_text()
    title = markdown.splitlines()[0]
    assert "quadrants.npz, 1 epochs, batch 32;" in title and "full-res" not in title  # none run, none named
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in markdown.splitlines() if "| 1 |" in line}
    assert set(rows) == {"tnet", "downscaled"}
    assert re.fullmatch(r"\d+ / \d+", rows["tnet"][4]) and rows["downscaled"][4] == "-"  # levels 2 and 3; none
    assert (out / "tnet.png").stat().st_size > 0
