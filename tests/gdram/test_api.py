"""Training from Python (:mod:`gdram.training.api`): what ``gdram train`` does, in one call."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from gdram import GDRAMConfig, TrainSettings, resume, train
from gdram.cli.main import main
from gdram.data.datasets import DataError
from gdram.training.api import ChangedSettings, IgnoredSettings, SettingError
from gdram.training.checkpoint import load_checkpoint
from tiny import TINY_MODEL, tiny_data

pytestmark = pytest.mark.usefixtures("one_thread")

# The fields of the TINY_MODEL flags, and quick settings.
TINY_FIELDS = {"num_glimpses": 2, "glimpse_size": 8, "num_scales": 2, "hidden_size": 16}
QUICK = {"epochs": 1, "batch_size": 8, "device": "cpu", "num_workers": 0}


def _weights(run_dir) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "last.pt")["model"]


def test_train_from_python_gives_the_command_lines_run_bit_for_bit(tiny_npz, tmp_path):
    flags = ["--epochs", "1", "--batch-size", "8", "--device", "cpu", "--workers", "0", "--quiet", *TINY_MODEL]
    assert main(["train", "--data", tiny_npz, "--out", str(tmp_path / "cli"), *flags]) == 0
    summary = train(tiny_npz, TINY_FIELDS, QUICK, out=tmp_path / "python", quiet=True)
    assert summary["run_dir"] == str(tmp_path / "python") and summary["epochs"] == 1
    by_cli, by_python = _weights(tmp_path / "cli"), _weights(tmp_path / "python")
    assert by_cli.keys() == by_python.keys()
    assert all(torch.equal(by_cli[name], by_python[name]) for name in by_cli)
    saved = load_checkpoint(tmp_path / "python" / "last.pt")
    assert saved["data"]["fingerprint"] and saved["train"]["batch_size"] == 8


def test_train_takes_arrays_in_memory_and_resume_asks_for_them_again(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (24, 24, 24), dtype=np.uint8),
        "y_train": np.arange(24) % 3,
        "x_test": rng.integers(0, 256, (8, 24, 24), dtype=np.uint8),
        "y_test": np.arange(8) % 3,
    }
    run = tmp_path / "run"
    summary = train(arrays, TINY_FIELDS, QUICK, out=run, quiet=True)
    assert summary["test_n"] == 8 and summary["dataset"] == "arrays"
    with pytest.raises(DataError, match="arrays given in memory"):
        resume(run, epochs=2, quiet=True)
    assert resume(run, arrays, epochs=2, quiet=True)["epochs"] == 2


def test_train_takes_data_splits_and_a_full_config(tmp_path):
    data = tiny_data()
    config = GDRAMConfig(num_classes=3, in_channels=1, image_size=24, **TINY_FIELDS)
    summary = train(data, config, TrainSettings(**QUICK), out=tmp_path / "run", quiet=True)
    assert summary["dataset"] == "tiny" and summary["epochs"] == 1


def test_the_embedded_sets_default_epochs_and_batch_size_are_a_few_cpu_minutes():
    from gdram.training.api import EMBEDDED_BATCH_SIZE, EMBEDDED_EPOCHS, _settings

    assert dataclasses.astuple(_settings({}, embedded=True))[:2] == (EMBEDDED_EPOCHS, EMBEDDED_BATCH_SIZE)
    assert dataclasses.astuple(_settings({"epochs": 3}, embedded=False))[:2] == (3, 128)


@pytest.mark.parametrize(
    ("config", "settings", "names"),
    [
        ({"num_glimpses": 0}, {}, ("num_glimpses",)),
        ({"num_classes": 4}, {}, ("num_classes",)),
        ({"glimpses": 4}, {}, ("glimpses",)),
        ({}, {"lr": -1.0}, ("lr",)),
        ({}, {"workers": 2}, ("workers",)),
    ],
)
def test_a_refused_setting_is_named_before_the_data_is_read(config, settings, names, tmp_path):
    with pytest.raises(SettingError) as caught:
        train(str(tmp_path / "no-such.npz"), config, settings, out=tmp_path / "run")
    assert caught.value.names == names and not (tmp_path / "run").exists()


def test_glimpse_settings_for_the_cnn_baseline_are_refused(tiny_npz, tmp_path):
    with pytest.raises(IgnoredSettings, match="num_glimpses, num_scales: the CNN baseline"):
        train(tiny_npz, {"variant": "cnn", "num_glimpses": 3, "num_scales": 2}, QUICK, out=tmp_path / "run")


def test_resume_refuses_other_settings_and_fewer_epochs(trained_run):
    with pytest.raises(ChangedSettings) as caught:
        resume(trained_run, settings={"lr": 0.5, "seed": 0}, config={"hidden_size": 16, "variant": "ram"}, epochs=0)
    assert caught.value.changes == [("variant", "ram", "gdram"), ("lr", 0.5, 0.001)]
    assert caught.value.trained == 1
    assert "only the epochs change a resumed run" in str(caught.value)
