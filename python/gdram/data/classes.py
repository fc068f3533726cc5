"""Checks of a loaded data set's classes: against absurd label values, missing training classes and a model.

:func:`check_classes` refuses labels that would make a huge model (a label of 10**9 means 10**9
classes) and names the classes the training split lacks; :func:`check_model_classes` refuses data
whose labels a trained model cannot predict.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, Subset

from gdram.data.datasets import BatchedImages, DataError, DataSplits

MAX_CLASSES = 100_000  # ImageNet-21k has 21,841; more is a label that is not a class index


def split_labels(dataset: Dataset) -> torch.Tensor | None:
    """(N,) int64 labels of a :class:`BatchedImages`, an ``ImageFolder`` or a ``Subset`` of one; None otherwise."""
    if isinstance(dataset, Subset):
        labels = split_labels(dataset.dataset)
        return None if labels is None else labels[torch.as_tensor(list(dataset.indices), dtype=torch.long)]
    if isinstance(dataset, BatchedImages):
        return dataset.labels
    targets = getattr(dataset, "targets", None)
    return None if targets is None else torch.as_tensor(targets, dtype=torch.long)


def check_classes(data: DataSplits) -> list[str]:
    """Refuse more than :data:`MAX_CLASSES` classes; return warnings (one line each) about training gaps.

    Raises:
        DataError: the labels make more classes than :data:`MAX_CLASSES`.
    """
    if data.num_classes > MAX_CLASSES:
        raise DataError(
            f"{data.name}: labels go up to {data.num_classes - 1}, which would make "
            f"{data.num_classes:,} classes (at most {MAX_CLASSES:,}); labels must be class indices "
            "0..K-1"
        )
    labels = split_labels(data.train)
    if labels is None:
        return []
    absent = sorted(set(range(data.num_classes)) - set(labels.unique().tolist()))
    if not absent:
        return []
    shown = ", ".join(str(label) for label in absent[:10]) + (", ..." if len(absent) > 10 else "")
    return [
        f"the training split of {data.name} has no image of {len(absent)} of its {data.num_classes} classes "
        f"({shown}): the model cannot learn them"
    ]


def check_model_classes(num_classes: int, data: DataSplits, model_name: str) -> None:
    """Refuse data whose labels reach beyond the ``num_classes`` a model predicts.

    Raises:
        DataError: ``data`` has more classes than the model.
    """
    if data.num_classes > num_classes:
        raise DataError(
            f"{model_name} predicts {num_classes} classes but {data.name} has {data.num_classes} "
            f"(labels 0-{data.num_classes - 1}): it was trained on other data"
        )
