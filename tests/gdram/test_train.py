"""The trainer: a full run's outputs, exact resume after a kill, divergence handling, random policy."""

from __future__ import annotations

import dataclasses
import json

import gdram.training.families as families
import gdram.training.trainer as train
import pytest
import torch
from gdram.models.config import GDRAMConfig
from gdram.models.gdram import GDRAM, create_model
from gdram.models.networks import FixedEmission
from gdram.training.attention import COARSE_WINDOW, salient_locations
from gdram.training.checkpoint import load_checkpoint, save_checkpoint
from gdram.training.evaluate import load_model
from gdram.training.loss import LossParts
from gdram.training.trainer import Trainer, TrainingDiverged, TrainSettings
from tiny import tiny_config, tiny_data

TIMING_KEYS = {"train_seconds", "images_per_second"}


pytestmark = pytest.mark.usefixtures("one_thread")


def _settings(**changes) -> TrainSettings:
    return TrainSettings(
        **{"epochs": 3, "batch_size": 8, "eval_batch_size": 16, "lr_patience": 0, "seed": 7, "device": "cpu", **changes}
    )


def _without_timings(history):
    return [{key: value for key, value in record.items() if key not in TIMING_KEYS} for record in history]


def test_fit_writes_the_run_directory_and_a_test_summary(tmp_path):
    summary = Trainer(tiny_config(), tiny_data(), _settings(epochs=2), tmp_path, quiet=True).fit()
    assert {path.name for path in tmp_path.iterdir()} >= {
        "best.pt",
        "last.pt",
        "metrics.jsonl",
        "metrics.csv",
        "config.json",
        "summary.json",
    }
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 3
    assert summary["test_n"] == 8 and 0 <= summary["test_top1"] <= summary["test_top5"] <= 1
    assert summary == json.loads((tmp_path / "summary.json").read_text())
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["epoch"] == 2 and GDRAMConfig(**state["config"]) == tiny_config()
    assert {"optimizer", "scheduler", "rng", "metrics", "train"} <= set(state)
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["epoch"] == summary["best_epoch"]


class _Killed(Exception):
    pass


def _kill_after(epoch: int):
    def callback(trainer: Trainer, record: dict) -> None:
        if record["epoch"] == epoch:
            raise _Killed

    return callback


def test_resume_after_a_kill_ends_exactly_like_an_uninterrupted_run(tmp_path):
    data = tiny_data()
    whole = Trainer(tiny_config(), data, _settings(), tmp_path / "whole", quiet=True)
    whole_summary = whole.fit()

    killed = Trainer(tiny_config(), data, _settings(), tmp_path / "killed", quiet=True, callbacks=[_kill_after(1)])
    with pytest.raises(_Killed):
        killed.fit()
    assert load_checkpoint(tmp_path / "killed" / "last.pt")["epoch"] == 1
    resumed = Trainer.resume(tmp_path / "killed", data, quiet=True)
    assert resumed.epoch == 1
    resumed_summary = resumed.fit()

    for name, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    assert _without_timings(whole.history) == _without_timings(resumed.history)
    assert whole_summary["test_top1"] == resumed_summary["test_top1"]
    lines = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_resume_can_extend_the_number_of_epochs(tmp_path):
    data = tiny_data()
    Trainer(tiny_config(), data, _settings(epochs=1), tmp_path, quiet=True).fit()
    resumed = Trainer.resume(tmp_path, data, epochs=2, quiet=True)
    assert resumed.fit()["epochs"] == 2


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real_loss = families.hybrid_loss

    def poisoned(result, labels, **options):
        parts = real_loss(result, labels, **options)
        if torch.is_grad_enabled() and torch.initial_seed() == train.epoch_seed(7, 2):
            return LossParts(parts.total * float("nan"), *parts[1:])
        return parts

    monkeypatch.setattr(families, "hybrid_loss", poisoned)
    trainer = Trainer(tiny_config(), tiny_data(), _settings(), tmp_path, quiet=True)
    with pytest.raises(TrainingDiverged, match="loss became nan at epoch 2, step 1.*last.pt \\(epoch 1\\)"):
        trainer.fit()
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1


def test_random_policy_moves_at_random_and_learns_no_policy():
    model = create_model(dataclasses.replace(tiny_config(), policy="random"))
    assert isinstance(model.emission, FixedEmission) and model.emission.kind == "random"
    model.eval()
    images = torch.rand(4, 1, 24, 24)
    first, second = model(images).locations, model(images).locations
    assert not torch.equal(first, second)  # random even in evaluation
    assert torch.equal(model(images).weights, torch.ones(3, 4))
    with pytest.raises(ValueError, match="attention variant"):
        dataclasses.replace(tiny_config("cnn"), policy="random")


def test_policy_warmup_keeps_the_policy_still_while_the_classifier_learns(tmp_path):
    config = dataclasses.replace(tiny_config(), recipe="robust", policy_warmup=1, warmup_glimpses="initial")
    trainer = Trainer(config, tiny_data(), _settings(epochs=2), tmp_path / "run", quiet=True)
    policy = {name: value.clone() for name, value in trainer.model.named_parameters() if name.startswith("emission.")}
    classifier = trainer.model.prediction.mlp[0].weight.clone()
    trainer.train_epoch()
    assert all(torch.equal(value, dict(trainer.model.named_parameters())[name]) for name, value in policy.items())
    assert not torch.equal(classifier, trainer.model.prediction.mlp[0].weight)
    trainer.train_epoch()
    assert not all(torch.equal(value, dict(trainer.model.named_parameters())[name]) for name, value in policy.items())


@pytest.mark.parametrize("warmup", ["salient", "initial"])
def test_salient_warmup_trains_the_classifier_and_pulls_the_first_glimpse_to_the_salient_place(tmp_path, warmup):
    config = dataclasses.replace(tiny_config(), recipe="robust", policy_warmup=6, warmup_glimpses=warmup)
    settings = _settings(epochs=6, lr=0.01, lr_patience=10)
    trainer = Trainer(config, tiny_data(), settings, tmp_path / "run", quiet=True)
    model = trainer.model
    images = tiny_data().val.batch(torch.arange(8))[0]
    target = model.clip_location(salient_locations(images, 2 * config.glimpse_size))

    def first_glimpse_distance() -> float:
        model.eval()
        with torch.no_grad():
            return float((model(images).locations[0] - target).norm(dim=1).mean())

    before, classifier = first_glimpse_distance(), model.prediction.mlp[0].weight.clone()
    for _ in range(6):
        trainer.train_epoch()
    assert not torch.equal(classifier, model.prediction.mlp[0].weight)
    if warmup == "salient":  # the guidance pulls the policy's first mean glimpse towards the salient place
        assert first_glimpse_distance() < 0.85 * before
    else:  # the warm-up trains no policy: the first glimpse stays where it started
        assert first_glimpse_distance() == pytest.approx(before)


def test_salient_locations_find_the_densest_blob_of_the_window_size():
    images = torch.zeros(2, 1, 32, 32)
    images[0, :, 2:8, 20:26] = 1.0  # x 20..26, y 2..8
    images[1, :, 24:30, 4:10] = 1.0
    images[1, :, 0:2, 0:2] = 1.0  # a smaller fragment
    places = (salient_locations(images, 6) + 1) / 2 * 32
    torch.testing.assert_close(places, torch.tensor([[23.5, 5.5], [7.5, 27.5]]), atol=1.0, rtol=0)


def test_a_coarse_salient_place_is_the_exact_one_within_the_downscale_factor():
    images = torch.zeros(3, 1, 256, 256)
    images[0, :, 30:54, 180:204] = 1.0
    images[1, :, 200:224, 10:34] = 1.0
    images[1, :, 0:10, 0:10] = 1.0  # a smaller fragment
    images[2, :, 100:124, 101:125] = 1.0
    exact, coarse = (salient_locations(images, 24, coarse=flag) for flag in (False, True))
    assert (coarse - exact).abs().max().item() * 128 <= 24 // COARSE_WINDOW


def test_glimpses_at_given_places_per_step_keep_the_policys_own_means():
    model = GDRAM(tiny_config()).eval()
    images = tiny_data().val.batch(torch.arange(4))[0]
    places = torch.linspace(-0.5, 0.5, 3 * 4 * 2).view(3, 4, 2)
    with torch.no_grad():
        told, own = model(images, locations=places), model(images)
    torch.testing.assert_close(told.locations, model.clip_location(places))
    torch.testing.assert_close(told.mean_locations[0], own.mean_locations[0])  # the policy's first mean


def test_a_checkpoint_with_the_policy_in_its_training_settings_still_loads_and_resumes(tmp_path):
    data = tiny_data()
    config = dataclasses.replace(tiny_config(), policy="center")
    Trainer(config, data, _settings(epochs=1), tmp_path, quiet=True).fit()
    state = load_checkpoint(tmp_path / "last.pt")
    del state["format"], state["config"]["policy"]
    state["train"]["policy"] = "center"  # where checkpoints written before the policy moved into the config kept it
    save_checkpoint(state, tmp_path / "last.pt")
    loaded = load_model(tmp_path / "last.pt")
    assert loaded.model.config.policy == "center" and isinstance(loaded.model.emission, FixedEmission)
    resumed = Trainer.resume(tmp_path, data, epochs=2, quiet=True)
    assert resumed.config == config and resumed.fit()["policy"] == "center"


def test_init_from_starts_a_run_on_larger_images_from_an_earlier_runs_weights(tmp_path):
    Trainer(tiny_config(), tiny_data(), _settings(epochs=1), tmp_path / "small", quiet=True).fit()
    start = str(tmp_path / "small" / "best.pt")
    larger = tiny_config(image_size=32)
    trainer = Trainer(larger, tiny_data(size=32), _settings(epochs=2, init_from=start), tmp_path / "large", quiet=True)
    earlier = load_checkpoint(start)["model"]
    assert all(torch.equal(value, earlier[name]) for name, value in trainer.model.state_dict().items())
    trainer.fit()
    resumed = Trainer.resume(tmp_path / "large", tiny_data(size=32), epochs=3, quiet=True)
    assert resumed.settings.init_from == start and resumed.epoch == 2  # its own last.pt, not the start
    assert not all(torch.equal(value, earlier[name]) for name, value in resumed.model.state_dict().items())


def test_init_from_a_checkpoint_that_does_not_fit_says_so(tmp_path):
    Trainer(tiny_config(), tiny_data(), _settings(epochs=1), tmp_path / "gdram", quiet=True).fit()
    other = dataclasses.replace(tiny_config(), hidden_size=8)
    fits_not = r"init_from .*best.pt: its weights do not fit this model \(gdram \(learned policy\)\)"
    with pytest.raises(ValueError, match=fits_not):
        Trainer(other, tiny_data(), _settings(init_from=str(tmp_path / "gdram" / "best.pt")), tmp_path / "x")


def test_cnn_baseline_trains_with_the_same_trainer(tmp_path):
    summary = Trainer(tiny_config("cnn"), tiny_data(), _settings(epochs=1), tmp_path, quiet=True).fit()
    assert summary["variant"] == "cnn" and summary["epochs"] == 1


def test_settings_and_data_mismatch_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="lr must be"):
        TrainSettings(lr=-1.0)
    with pytest.raises(ValueError, match="policy must be one of"):
        GDRAMConfig(policy="greedy")
    config = GDRAMConfig(num_classes=5, in_channels=1, image_size=24, glimpse_size=8, num_scales=2)
    with pytest.raises(ValueError, match="the model expects"):
        Trainer(config, tiny_data(), _settings(), tmp_path)


def test_training_learns_an_easy_task(tmp_path):
    settings = _settings(epochs=10, lr=3e-3, lr_patience=5)
    summary = Trainer(tiny_config(), tiny_data(count=120), settings, tmp_path, quiet=True).fit()
    assert summary["best_val_top1"] >= 0.7 and summary["test_top1"] >= 0.6  # chance is 1/3
