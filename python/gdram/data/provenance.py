"""Where a run's data set lives and what it held, so that ``eval`` and ``--resume`` find and check it.

A run stores its data description (the ``load_data`` arguments) in ``config.json`` and every
checkpoint. :func:`locate` completes it when the run starts: a path becomes absolute and gets a
``fingerprint`` (SHA-256 of an ``.npz`` file's bytes, or of an image folder's file names and
sizes); the embedded sets get their generator's parameters. :func:`verify` checks, before the stored
description is used again, that the data is still there and still the same.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from gdram.data.datasets import DataError
from gdram.data.loading import DATASETS

_CHUNK = 1 << 20


def fingerprint(path: Path) -> str:
    """``sha256:<hex>`` of a file's bytes, or ``files-sha256:<hex>`` of a directory's file names and sizes."""
    digest = hashlib.sha256()
    if path.is_dir():
        for folder, subfolders, files in os.walk(path):
            subfolders.sort()
            for name in sorted(files):
                file = Path(folder) / name
                digest.update(f"{file.relative_to(path).as_posix()}\t{file.stat().st_size}\n".encode())
        return f"files-sha256:{digest.hexdigest()}"
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def generator_parameters(source: str) -> dict[str, Any] | None:
    """The parameters a generated data set is made from (the embedded sets, stored or drawn on demand), or None
    for other sources."""
    from gdram.data.canvas import CANVAS_SPECS
    from gdram.data.cluttered import EMBEDDED_SPECS

    spec = EMBEDDED_SPECS.get(source) or CANVAS_SPECS.get(source)
    return None if spec is None else dataclasses.asdict(spec)


def locate(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` with what finds its data again: an absolute path and its fingerprint, or the generator's
    parameters, and an absolute ``root`` for the torchvision sets."""
    located = dict(spec)
    source = spec["source"]
    if source in DATASETS:
        generator = generator_parameters(source)
        if generator is not None:
            located["generator"] = generator
        if spec.get("root"):
            located["root"] = str(Path(spec["root"]).expanduser().resolve())
        return located
    path = Path(source).expanduser().resolve()
    located["source"] = str(path)
    if path.exists():
        located["fingerprint"] = fingerprint(path)
    return located


def verify(spec: dict[str, Any], owner: str) -> None:
    """Check that the data ``spec`` describes is still where it was and unchanged since ``owner`` used it.

    Raises:
        DataError: the file or folder is gone or its fingerprint differs; the generated set's
            parameters differ from this version's. Descriptions without a fingerprint pass.
    """
    source = spec["source"]
    if spec.get("in_memory"):
        raise DataError(
            f"{owner} was trained on arrays given in memory ({source}), which no file holds: pass that data "
            "again (--data or --dataset on the command line, data= in Python)"
        )
    if "generator" in spec:
        if _plain(spec["generator"]) != _plain(generator_parameters(source)):
            raise DataError(
                f"{owner} was trained on {source} generated with other parameters than this version "
                "of gdram uses; evaluate it with the gdram version that trained it"
            )
        return
    path = Path(source)
    if "fingerprint" not in spec:  # stored by an older gdram, maybe relative to the folder it was trained in
        if source not in DATASETS and not path.exists():
            raise DataError(
                f"{source}: no such file or directory (the data set of {owner}, as it was given then); "
                "pass --data with its place"
            )
        return
    if not path.exists():
        raise DataError(
            f"{source}: no such file or directory (the data set of {owner}); pass --data with its new place"
        )
    if fingerprint(path) != spec["fingerprint"]:
        raise DataError(
            f"{source} has changed since {owner} was trained on it (its fingerprint differs); pass "
            f"--data {source} to use it anyway"
        )


def same_data(saved: dict[str, Any] | None, given: dict[str, Any]) -> bool:
    """Whether ``given`` (a :func:`locate`-d description) names the data of the ``saved`` one: the same
    fingerprint, or the same source when either has none."""
    if saved is None:
        return True
    if "fingerprint" in saved and "fingerprint" in given:
        return saved["fingerprint"] == given["fingerprint"]
    if saved["source"] in DATASETS or given["source"] in DATASETS:
        return saved["source"] == given["source"]
    return Path(saved["source"]).expanduser().resolve() == Path(given["source"]).expanduser().resolve()


def _plain(value: Any) -> Any:
    """``value`` as it comes back from JSON (tuples become lists), to compare stored and current parameters."""
    return json.loads(json.dumps(value))
