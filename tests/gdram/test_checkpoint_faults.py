"""Checkpoints under faults: a write failing half-way, damaged files, temporaries of killed runs."""

from __future__ import annotations

import errno
import os
import random

import gdram.files as files
import gdram.training.checkpoint as checkpoint
import pytest
import torch
from gdram.files import remove_stale_temporaries
from gdram.training.checkpoint import (
    CheckpointError,
    CheckpointWriteError,
    load_checkpoint,
    save_checkpoint,
)


def _state(epoch: int) -> dict:
    return {
        "model": {"weight": torch.full((3,), float(epoch))},
        "config": {"hidden_size": 4},
        "epoch": epoch,
        "metrics": [{"val_top1": 0.5, "name": "x"}],
        "rng": {"torch": torch.get_rng_state()},
    }


def test_a_write_failing_half_way_names_the_path_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(_state(1), tmp_path / "last.pt")
    real_save = torch.save

    def disk_full_half_way(obj, file, *args, **kwargs):
        real_save(obj, file, *args, **kwargs)
        file.truncate(file.tell() // 2)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", disk_full_half_way)
    with pytest.raises(CheckpointWriteError) as failure:
        save_checkpoint(_state(2), path)
    assert str(path) in str(failure.value) and "No space left on device" in str(failure.value)
    assert "previous checkpoint there is intact" in str(failure.value)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert os.listdir(tmp_path) == ["last.pt"]


def test_a_failing_fsync_or_rename_is_a_write_error_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = save_checkpoint(_state(1), tmp_path / "best.pt")
    monkeypatch.setattr(files.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with pytest.raises(CheckpointWriteError, match="best.pt: could not write the checkpoint \\(I/O error\\)"):
        save_checkpoint(_state(2), path)
    monkeypatch.undo()
    monkeypatch.setattr(files.os, "replace", lambda *a: (_ for _ in ()).throw(OSError(errno.EROFS, "Read-only")))
    with pytest.raises(CheckpointWriteError, match="Read-only"):
        save_checkpoint(_state(3), path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1 and os.listdir(tmp_path) == ["best.pt"]


def test_a_first_checkpoint_that_cannot_be_written_says_there_was_none(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint.torch, "save", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(CheckpointWriteError, match="no checkpoint was there before"):
        save_checkpoint(_state(1), tmp_path / "last.pt")


def _damaged_files(good: bytes, count: int, rng: random.Random):
    for index in range(count):
        kind = index % 4
        if kind == 0:
            yield bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300)))
        elif kind == 1:
            yield good[: rng.randint(0, len(good) - 1)]
        elif kind == 2:
            flipped = bytearray(good)
            for _ in range(rng.randint(1, 8)):
                flipped[rng.randrange(len(flipped))] = rng.getrandbits(8)
            yield bytes(flipped)
        else:
            start = rng.randint(0, len(good) - 1)
            yield good[:start] + bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64))) + good[start + 64 :]


def test_fuzzed_and_truncated_files_always_give_a_checkpoint_error(tmp_path):
    good = save_checkpoint(_state(1), tmp_path / "good.pt").read_bytes()
    path = tmp_path / "fuzzed.pt"
    outcomes = {"error": 0, "loaded": 0}
    for data in _damaged_files(good, 400, random.Random(12)):
        path.write_bytes(data)
        try:
            state = load_checkpoint(path)
        except CheckpointError as error:
            assert str(error).startswith(f"{path}: ") and "\n" not in str(error)
            outcomes["error"] += 1
        else:  # a flipped byte inside a tensor's data leaves a valid checkpoint
            assert state["format"] == checkpoint.FORMAT
            outcomes["loaded"] += 1
    assert outcomes["error"] > 300


def test_random_bytes_are_called_damaged_not_unsafe_and_warn_nothing(tmp_path, recwarn):
    path = tmp_path / "noise.pt"
    rng = random.Random(3)
    for _ in range(100):
        path.write_bytes(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200))))
        with pytest.raises(CheckpointError) as failure:
            load_checkpoint(path)
        assert "truncated or not a PyTorch checkpoint" in str(failure.value) or "not a gdram checkpoint" in str(
            failure.value
        )
    assert len(recwarn) == 0


def test_stale_temporaries_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    save_checkpoint(_state(1), tmp_path / "last.pt")
    dead = tmp_path / ".last.pt.999999999.tmp"
    own = tmp_path / f".best.pt.{os.getpid()}.tmp"
    live = tmp_path / f".last.pt.{os.getppid()}.tmp"
    for file in (dead, own, live):
        file.write_bytes(b"")
    unrelated = tmp_path / "notes.tmp"
    unrelated.write_text("keep")
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted([dead, own])
    assert live.exists() and unrelated.exists() and load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    assert remove_stale_temporaries(tmp_path / "absent") == []


def test_a_directory_given_as_a_checkpoint_is_named_as_such(tmp_path):
    with pytest.raises(CheckpointError, match="is a directory; give a checkpoint file, such as .*best.pt"):
        load_checkpoint(tmp_path)
