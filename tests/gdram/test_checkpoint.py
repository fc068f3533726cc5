"""Checkpoints: atomic writes, weights_only loading, clear errors, RNG state round trip."""

from __future__ import annotations

import os
import random

import gdram.files as files
import gdram.training.checkpoint as checkpoint
import numpy as np
import pytest
import torch
from gdram.training.checkpoint import CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state


def _state(epoch: int) -> dict:
    return {"model": {"weight": torch.full((3,), float(epoch))}, "config": {"hidden_size": 4}, "epoch": epoch}


def test_round_trip_keeps_tensors_and_plain_data(tmp_path):
    path = save_checkpoint({**_state(2), "metrics": [{"val_top1": 0.5}]}, tmp_path / "run" / "last.pt")
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 2 and loaded["metrics"] == [{"val_top1": 0.5}]
    assert torch.equal(loaded["model"]["weight"], torch.full((3,), 2.0))
    assert loaded["format"] == checkpoint.FORMAT


def test_a_crash_while_writing_leaves_the_old_checkpoint_intact(tmp_path, monkeypatch):
    path = save_checkpoint(_state(1), tmp_path / "last.pt")

    def crash_halfway(obj, file, *args, **kwargs):
        file.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", crash_halfway)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(_state(2), path)
    assert load_checkpoint(path)["epoch"] == 1
    assert os.listdir(tmp_path) == ["last.pt"]  # no temporary file left behind


def test_a_crash_before_the_rename_leaves_the_old_checkpoint_intact(tmp_path, monkeypatch):
    path = save_checkpoint(_state(1), tmp_path / "last.pt")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(files.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(_state(2), path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1


class _RunsCode:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_weights_only_loading_refuses_a_pickle_that_runs_code(tmp_path):
    marker = tmp_path / "was-executed"
    path = tmp_path / "evil.pt"
    torch.save({"format": checkpoint.FORMAT, "model": _RunsCode(marker), "config": {}, "epoch": 1}, path)
    with pytest.raises(CheckpointError, match="evil.pt: refused to load"):
        load_checkpoint(path)
    assert not marker.exists()


def test_truncated_foreign_and_missing_files_give_clear_errors(tmp_path):
    good = save_checkpoint(_state(1), tmp_path / "good.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.pt: truncated or not a PyTorch checkpoint"):
        load_checkpoint(truncated)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="notes.pt: truncated or not a PyTorch checkpoint"):
        load_checkpoint(text)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weight": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pt: not a gdram checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="absent.pt: no such checkpoint file"):
        load_checkpoint(tmp_path / "absent.pt")


def test_rng_states_survive_a_weights_only_round_trip(tmp_path):
    path = save_checkpoint({**_state(0), "rng": rng_state()}, tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    set_rng_state(load_checkpoint(path)["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]
