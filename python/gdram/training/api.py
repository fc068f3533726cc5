"""Train from Python: what ``gdram train`` does, as one call (the command line maps its flags onto it).

>>> from gdram import train, resume
>>> summary = train()                                    # GDRAM on the embedded cluttered-digits set
>>> summary = train("cluttered-digits-128", {"num_glimpses": 6}, {"epochs": 12, "seed": 1}, out="runs/c128")
>>> summary = train({"x_train": x, "y_train": y, "x_test": xt, "y_test": yt})   # arrays already in memory
>>> summary = resume("runs/c128", epochs=20)             # continue a stopped (or finished) run

``data`` is a named set (:data:`~gdram.data.loading.DATASETS`), a path (``.npz`` file or image folder), arrays
named as in a ``.npz`` file, or :class:`~gdram.data.datasets.DataSplits`. ``config`` is a
:class:`~gdram.models.config.GDRAMConfig` or a :class:`~gdram.models.tnet_config.TNetConfig`, or a mapping of
the fields of the ``model`` family's config (``"gdram"``, the default, or ``"tnet"``) without the data's
(classes, channels, image size: taken from the data). ``settings`` is a
:class:`~gdram.training.trainer.TrainSettings` or a mapping of its fields; epochs and batch size default to a
few CPU minutes on the embedded sets (:data:`EMBEDDED_EPOCHS`, :data:`EMBEDDED_BATCH_SIZE`) and to 100 and 128
elsewhere.

Everything is checked before the data is read, and the run directory is owned (locked) for the whole run: a
new run takes only a new or empty folder (default ``runs/<variant>-<data>-<time>``), never one inside the
image folder it reads. A run records where its data came from (path and fingerprint, or the generator's
parameters); :func:`resume` reads that data again, refuses data that changed and settings other than the
run's own (only ``epochs`` may grow). The summary is the dict ``summary.json`` holds.

:func:`training_run` and :func:`resumed_run` give the checked, locked :class:`~gdram.training.trainer.Trainer`
before it trains (to report its run directory, add callbacks, ...). Errors: :data:`USER_ERRORS`, with a message
that names what is wrong; :class:`SettingError` (and its kinds) also names the refused settings, so that a
front end can name its own flags.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gdram.data.canvas import CANVAS_SPECS
from gdram.data.classes import check_classes
from gdram.data.cluttered import EMBEDDED_SPECS, check_cache
from gdram.data.datasets import DataError, DataSplits
from gdram.data.imagefiles import MAX_IMAGE_SIDE
from gdram.data.loading import DATASETS, from_arrays, load_data
from gdram.data.provenance import locate, same_data, verify
from gdram.files import check_writable_place, remove_stale_temporaries
from gdram.models.config import GDRAMConfig
from gdram.models.tnet_config import TNetConfig
from gdram.training.checkpoint import CheckpointError, load_checkpoint
from gdram.training.distributed import init_distributed
from gdram.training.families import FAMILIES, Family, ModelConfig, family_named, family_of
from gdram.training.runfiles import claim_new_run_dir, foreign_entries, lock_run_dir
from gdram.training.trainer import Trainer, TrainingDiverged, TrainSettings, check_resumable

EMBEDDED_SETS = (*EMBEDDED_SPECS, *CANVAS_SPECS)  # generated here, no download
EMBEDDED_EPOCHS = 6  # the embedded sets' few-minute CPU budget (see README, "Does it learn?")
EMBEDDED_BATCH_SIZE = 32  # more steps in that budget than the paper's 128
DEFAULT_EPOCHS = 100
DEFAULT_BATCH_SIZE = 128
VAL_FRACTION = 0.1
# The config fields that come from the data, and those that set the glimpses (which the CNN baseline has not).
DATA_FIELDS = ("num_classes", "in_channels", "image_size")
GLIMPSE_FIELDS = ("num_glimpses", "glimpse_size", "num_scales", "retina_mode")
# What a bad input or a failed run raises (each with a message naming what is wrong).
USER_ERRORS = (DataError, CheckpointError, TrainingDiverged, ValueError, OSError)

DataSource = str | os.PathLike | DataSplits | Mapping[str, np.ndarray]
Warn = Callable[[str], None]


class SettingError(ValueError):
    """Settings refused by name: ``names`` are config fields, settings fields or data options
    (``image_size``, ``val_fraction``)."""

    def __init__(self, names: Sequence[str], message: str) -> None:
        super().__init__(message)
        self.names = tuple(names)


class IgnoredSettings(SettingError):
    """Glimpse settings given to the CNN baseline, which has no glimpses."""


class ChangedSettings(SettingError):
    """:func:`resume` asked for settings other than the run's: ``changes`` holds (name, asked, the run's),
    ``trained`` the run's epochs when fewer ``epochs`` than those were asked."""

    def __init__(self, changes: Sequence[tuple[str, Any, Any]], trained: int | None) -> None:
        self.changes, self.trained = list(changes), trained
        refused = [f"{name} {asked} (the run has {kept})" for name, asked, kept in self.changes]
        if trained is not None:
            refused.append(f"epochs below the {trained} the run has already trained")
        super().__init__(
            [name for name, _, _ in self.changes] + (["epochs"] if trained is not None else []),
            f"resume continues a run with its saved settings, refusing {'; '.join(refused)}; only the epochs "
            "change a resumed run (start a new run to change the others)",
        )


def train(
    data: DataSource = "cluttered-digits",
    config: ModelConfig | Mapping[str, Any] | None = None,
    settings: TrainSettings | Mapping[str, Any] | None = None,
    out: str | os.PathLike | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Train a new run and return its summary (test accuracy of the best checkpoint, timings, run directory).

    ``options``: those of :func:`training_run` (``model``, ``root``, ``download``, ``image_size``, ``val_fraction``,
    ``quiet``, ``warn``, ``on_run_dir``).
    """
    with training_run(data, config, settings, out, **options) as trainer:
        return trainer.fit()


def resume(run_dir: str | os.PathLike, data: DataSource | None = None, **options: Any) -> dict[str, Any]:
    """Continue the run in ``run_dir`` from its ``last.pt`` and return its summary (see :func:`resumed_run`)."""
    with resumed_run(run_dir, data, **options) as trainer:
        return trainer.fit()


@contextlib.contextmanager
def training_run(
    data: DataSource = "cluttered-digits",
    config: ModelConfig | Mapping[str, Any] | None = None,
    settings: TrainSettings | Mapping[str, Any] | None = None,
    out: str | os.PathLike | None = None,
    *,
    model: str = "gdram",
    root: str | os.PathLike | None = None,
    download: bool = False,
    image_size: int | tuple[int, int] | None = None,
    val_fraction: float | None = None,
    quiet: bool = False,
    warn: Warn | None = None,
    on_run_dir: Callable[[Path], None] | None = None,
) -> Iterator[Trainer]:
    """The :class:`Trainer` of a new run, checked, its run directory owned while the block runs.

    Args:
        data, config, settings, out: see the module's documentation; ``out`` None: a new
            ``runs/<variant>-<data>-<time>``.
        model: the family of a ``config`` mapping, ``"gdram"`` or ``"tnet"`` (a config object says its own).
        root, download: where torchvision data sets live, and whether to download a missing one.
        image_size: resize the images (side or (H, W)); ``val_fraction``: the training share held out for
            validation when the data has no validation split (default 0.1).
        quiet: no progress bar. ``warn``: receives each warning about the labels (default: ``warnings.warn``).
        on_run_dir: called with the run directory as soon as it is known and owned.
    """
    family = family_of(config) if isinstance(config, (GDRAMConfig, TNetConfig)) else _family(model)
    fields = _config_fields(config, family)
    spec = _new_data_spec(data, root, image_size, val_fraction)
    embedded = spec is not None and spec["source"] in EMBEDDED_SETS
    run_settings = _settings(settings, embedded)
    place = init_distributed(run_settings.device)
    if not isinstance(config, family.config_type):
        _model_config(family, fields, 2, 1, (MAX_IMAGE_SIDE, MAX_IMAGE_SIDE), "")  # the fields alone
    with contextlib.ExitStack() as held:
        run_dir = Path(out) if out is not None else None
        if run_dir is not None:
            _refuse_inside_data(run_dir, spec)
            check_writable_place(run_dir, f"run directory {run_dir}")
            if place.is_main:
                held.enter_context(lock_run_dir(run_dir))
            _report(on_run_dir, run_dir)
            _check_new_run_dir(run_dir)
        splits = _read(data, spec, download, place.is_main, warn)
        if run_dir is None:
            variant = fields.get("variant", "gdram") if family.name == "gdram" else family.name
            run_dir = Path("runs") / f"{variant}-{Path(splits.name).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
            _refuse_inside_data(run_dir, spec, given=False)
            if place.is_main:
                run_dir = held.enter_context(claim_new_run_dir(run_dir)).run_dir
            _report(on_run_dir, run_dir)
        remove_stale_temporaries(run_dir)
        model_config = (
            config
            if isinstance(config, family.config_type)
            else _model_config(family, fields, splits.num_classes, splits.in_channels, splits.image_size, splits.name)
        )
        family.check_size(model_config)
        yield Trainer(model_config, splits, run_settings, run_dir, spec or _in_memory(splits), quiet=quiet)


@contextlib.contextmanager
def resumed_run(
    run_dir: str | os.PathLike,
    data: DataSource | None = None,
    *,
    epochs: int | None = None,
    model: str | None = None,
    config: Mapping[str, Any] | None = None,
    settings: Mapping[str, Any] | None = None,
    root: str | os.PathLike | None = None,
    download: bool = False,
    image_size: int | tuple[int, int] | None = None,
    val_fraction: float | None = None,
    quiet: bool = False,
    warn: Warn | None = None,
    on_run_dir: Callable[[Path], None] | None = None,
) -> Iterator[Trainer]:
    """The :class:`Trainer` that continues the run in ``run_dir``, its directory owned while the block runs.

    Args:
        run_dir: a run directory holding ``last.pt``.
        data: None: the run's own data, found again where it was and checked unchanged; a name, path or arrays:
            the same data (a moved file is found by its fingerprint); arrays are needed for a run trained on
            arrays.
        epochs: the run's new total of epochs (at least those trained), or None to keep it.
        model, config, settings, image_size, val_fraction: the family and settings the caller asks for; each must
            equal the run's (:class:`ChangedSettings`), a resumed run keeps its own.
        root, download, quiet, warn, on_run_dir: as in :func:`training_run`.
    """
    out = Path(run_dir)
    if epochs is None and settings is not None:
        epochs = settings.get("epochs")
    place = init_distributed((settings or {}).get("device", TrainSettings.device))
    if not (out / "last.pt").exists():
        raise ValueError(f"{out} holds no run to continue (no last.pt)")
    with contextlib.ExitStack() as held:
        if place.is_main:
            held.enter_context(lock_run_dir(out, create=False))
        _report(on_run_dir, out)
        saved = load_checkpoint(out / "last.pt")
        check_resumable(saved, out / "last.pt")
        _refuse_changed_settings(saved, model, config or {}, settings or {}, image_size, val_fraction, epochs)
        spec = _resumed_data_spec(data, saved.get("data"), root, out)
        _refuse_inside_data(out, spec)
        splits = _read(data, spec, download, place.is_main, warn)
        remove_stale_temporaries(out)
        trainer = Trainer.resume(out, splits, epochs=epochs, quiet=quiet)
        trainer.data_spec = spec or _in_memory(splits)
        yield trainer


def _family(name: str) -> Family:
    if name not in FAMILIES:
        raise SettingError(["model"], f"model must be one of {tuple(FAMILIES)}, got {name!r}")
    return FAMILIES[name]


def _config_fields(config: ModelConfig | Mapping[str, Any] | None, family: Family) -> dict[str, Any]:
    """The config's fields as a dict (a mapping without the data's fields); glimpse fields refused for the CNN."""
    if isinstance(config, family.config_type):
        return dataclasses.asdict(config)
    fields = dict(config or {})
    kind = family.config_type.__name__
    known = {field.name for field in dataclasses.fields(family.config_type)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise SettingError(unknown, f"{', '.join(unknown)}: not {kind} fields")
    from_data = [name for name in DATA_FIELDS if name in fields]
    if from_data:
        raise SettingError(from_data, f"{', '.join(from_data)}: taken from the data; give a {kind} to set them")
    if family.name == "gdram" and fields.get("variant", GDRAMConfig.variant) == "cnn":
        given = [name for name in GLIMPSE_FIELDS if fields.get(name) is not None]
        if given:
            raise IgnoredSettings(given, f"{', '.join(given)}: the CNN baseline (variant 'cnn') has no glimpses")
    return fields


def _model_config(
    family: Family,
    fields: Mapping[str, Any],
    num_classes: int,
    in_channels: int,
    image_size: tuple[int, int],
    data_name: str,
) -> ModelConfig:
    """The model's config for data of this shape; a field it refuses is a :class:`SettingError` naming it."""
    if family.name == "tnet":
        if image_size[0] != image_size[1]:
            raise ValueError(
                f"TNet reads square images; {data_name} has {image_size[0]}x{image_size[1]} images "
                "(resize them: image_size)"
            )
        size: int | tuple[int, int] = image_size[0]
    else:
        size = image_size
    try:
        return family.config_type(num_classes=num_classes, in_channels=in_channels, image_size=size, **fields)
    except ValueError as error:
        field = str(error).split(" ", 1)[0]
        if field in fields:
            raise SettingError([field], str(error)) from None
        raise


def _settings(settings: TrainSettings | Mapping[str, Any] | None, embedded: bool) -> TrainSettings:
    """The run's settings; epochs and batch size not given: the embedded sets' budget, or 100 and 128."""
    if isinstance(settings, TrainSettings):
        return settings
    given = {name: value for name, value in (settings or {}).items() if value is not None}
    known = {field.name for field in dataclasses.fields(TrainSettings)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise SettingError(unknown, f"{', '.join(unknown)}: not TrainSettings fields")
    given.setdefault("epochs", EMBEDDED_EPOCHS if embedded else DEFAULT_EPOCHS)
    given.setdefault("batch_size", EMBEDDED_BATCH_SIZE if embedded else DEFAULT_BATCH_SIZE)
    try:
        return TrainSettings(**given)
    except ValueError as error:
        field = str(error).split(" ", 1)[0]
        raise SettingError([field] if field in known else [], str(error)) from None


def _new_data_spec(
    data: DataSource, root: Any, image_size: int | tuple[int, int] | None, val_fraction: float | None
) -> dict[str, Any] | None:
    """How to read ``data`` again (located: path and fingerprint, or generator), or None for data in memory."""
    if isinstance(data, (DataSplits, Mapping)):
        return None
    spec = {"source": os.fspath(data), "root": None, "image_size": None, "val_fraction": VAL_FRACTION}
    return locate(_with_options(spec, root, image_size, val_fraction))


def _with_options(spec: dict[str, Any], root: Any, image_size: Any, val_fraction: float | None) -> dict[str, Any]:
    spec = dict(spec)
    if root is not None:
        spec["root"] = os.fspath(root)
    if image_size is not None:
        spec["image_size"] = list(_pair(image_size))
    if val_fraction is not None:
        spec["val_fraction"] = val_fraction
    return spec


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _resumed_data_spec(
    data: DataSource | None, saved: dict[str, Any] | None, root: Any, out: Path
) -> dict[str, Any] | None:
    """The saved data description, checked against the data now found; or the data given, if it is the same."""
    owner = f"the run in {out}"
    if isinstance(data, (DataSplits, Mapping)):
        return None
    if data is not None:
        base = {key: value for key, value in (saved or {}).items() if key not in ("fingerprint", "generator")}
        spec = locate({**base, "source": os.fspath(data), **({"root": os.fspath(root)} if root else {})})
        if saved is not None and (saved.get("in_memory") or not same_data(saved, spec)):
            raise DataError(
                f"{spec['source']} is not the data set {owner} was trained on ({saved['source']}); a "
                "resumed run continues on its own data (start a new run to train on other data)"
            )
        return spec
    if saved is None:
        raise DataError(f"{owner} does not say which data it was trained on; pass that data again")
    verify(saved, owner)
    return _with_options(saved, root, None, None)


def _read(data: Any, spec: dict[str, Any] | None, download: bool, main: bool, warn: Warn | None) -> DataSplits:
    """The data to train on, its classes checked (warnings by the main process only)."""
    if isinstance(data, DataSplits):
        splits = data
    elif isinstance(data, Mapping):
        splits = from_arrays(data, "arrays")
    else:
        splits = read_spec(spec, download)
    if main:
        for warning in check_classes(splits):
            (warn or _warn)(warning)
    return splits


def read_spec(spec: dict[str, Any], download: bool = False) -> DataSplits:
    """Read the data a (stored) data description names, e.g. a checkpoint's ``data``."""
    if spec["source"] in EMBEDDED_SPECS:
        check_cache(EMBEDDED_SPECS[spec["source"]])
    return load_data(
        spec["source"],
        root=spec.get("root"),
        download=download,
        val_fraction=spec.get("val_fraction", VAL_FRACTION),
        seed=spec.get("seed", 0),
        image_size=tuple(spec["image_size"]) if spec.get("image_size") else None,
    )


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=4)


def _in_memory(splits: DataSplits) -> dict[str, Any]:
    return {"source": splits.name, "in_memory": True}


def _report(on_run_dir: Callable[[Path], None] | None, run_dir: Path) -> None:
    if on_run_dir is not None:
        on_run_dir(run_dir)


def _refuse_inside_data(out: Path, spec: dict[str, Any] | None, given: bool = True) -> None:
    """Refuse a run directory inside the image folder the run reads: its files would become images
    (a :class:`SettingError` when the caller chose ``out``, a ``ValueError`` for the default one)."""
    if spec is None or spec["source"] in DATASETS or not Path(spec["source"]).is_dir():
        return
    folder, place = Path(spec["source"]).resolve(), out.resolve()
    if place == folder or folder in place.parents:
        message = (
            f"the run directory {out} lies inside the image folder {spec['source']}: its files would become "
            "images of the data set; choose a run directory outside it"
        )
        raise SettingError(["out"], message) if given else ValueError(message)


def _check_new_run_dir(out: Path) -> None:
    """Refuse, for a new run, a folder that holds a run or files of its own (checked while holding its lock).

    A gdram run stopped before it wrote ``last.pt`` (only ``config.json``, maybe the first ``best.pt``)
    cannot be resumed: a new run takes its place."""
    if (out / "last.pt").exists():
        raise ValueError(f"{out} already holds a run; resume it, or choose another run directory")
    if not out.is_dir():
        return
    foreign = foreign_entries(out)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ValueError(
            f"{out} is a folder that is not a gdram run (it holds {shown}); a new run writes only into a new or "
            "empty folder: choose another run directory"
        )
    if (out / "summary.json").exists():  # a finished run whose last.pt is gone: its results are kept
        raise ValueError(
            f"{out} holds a finished gdram run (summary.json) but no last.pt to resume; choose another run directory"
        )


def _refuse_changed_settings(
    saved: dict[str, Any],
    model: str | None,
    config: Mapping[str, Any],
    settings: Mapping[str, Any],
    image_size: int | tuple[int, int] | None,
    val_fraction: float | None,
    epochs: int | None,
) -> None:
    """A resumed run keeps its saved settings: refuse any asked for with another value."""
    stored_train, data = saved.get("train", {}), saved.get("data") or {}
    family = family_named(saved.get("family", "gdram"), "the run's last.pt")
    kept_config = dataclasses.asdict(family.config_from_dict(saved["config"], stored_train))
    kept_settings = dataclasses.asdict(TrainSettings.from_dict(stored_train))
    asked = [("model", model, family.name)] + [(name, value, kept_config.get(name)) for name, value in config.items()]
    asked += [(name, value, kept_settings.get(name)) for name, value in settings.items() if name != "epochs"]
    if image_size is not None:
        asked.append(("image_size", list(_pair(image_size)), data.get("image_size")))
    asked.append(("val_fraction", val_fraction, data.get("val_fraction", VAL_FRACTION)))
    changes = [
        (name, value, kept)
        for name, value, kept in asked
        if value is not None and _as_stored(value) != _as_stored(kept)
    ]
    trained = saved["epoch"] if epochs is not None and epochs < saved["epoch"] else None
    if changes or trained is not None:
        raise ChangedSettings(changes, trained)


def _as_stored(value: Any) -> Any:
    """A setting as a checkpoint stores it (a pair such as ``sigma_range`` as a list)."""
    return list(value) if isinstance(value, (list, tuple)) else value
