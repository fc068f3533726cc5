"""What the arm-by-arm studies (``canvas``, ``tnet``) share to tabulate their runs' summaries."""

from __future__ import annotations

import statistics
from typing import Any


def by_arm(summaries: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The summaries grouped by their ``"arm"``, in the order the arms first appear."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for summary in summaries:
        groups.setdefault(summary["arm"], []).append(summary)
    return groups


def mean_cell(group: list[dict[str, Any]], key: str, scale: float = 1.0, digits: int = 1) -> str:
    """A table cell: the mean of ``key`` x ``scale`` over the group (± sd with several values; "-" with none)."""
    values = [item[key] * scale for item in group if item.get(key) is not None]
    if not values:
        return "-"
    spread = f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.{digits}f}{spread}"
