"""Fixtures of the gdram tests: a tiny data set on disk and a run trained on it by ``gdram train``."""

from __future__ import annotations

from pathlib import Path

import pytest
from gdram.cli.main import main
from tiny import TINY_MODEL, write_npz


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory) -> str:
    """:func:`tiny.write_npz` with its defaults (3 classes, 24x24, no boxes)."""
    return write_npz(tmp_path_factory.mktemp("data") / "tiny.npz")


@pytest.fixture(scope="module")
def trained_run(tiny_npz, tmp_path_factory) -> Path:
    """The run directory of one epoch of the tiny model on ``tiny_npz``."""
    run = tmp_path_factory.mktemp("run") / "r"
    assert (
        main(
            [
                "train",
                "--data",
                tiny_npz,
                "--epochs",
                "1",
                "--batch-size",
                "8",
                "--out",
                str(run),
                "--quiet",
                "--device",
                "cpu",
                *TINY_MODEL,
            ]
        )
        == 0
    )
    return run
