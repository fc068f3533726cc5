"""Named running sums of a training epoch or an evaluation, shared out over the ranks in one call.

>>> totals = Totals(("loss", "correct", "count"))
>>> totals.add(loss=loss * batch, correct=correct, count=torch.tensor(float(batch)))
>>> totals["loss"] / totals["count"]

The trainer's names are :func:`gdram.training.trainer.train_totals`, the evaluation's
:data:`gdram.training.evaluate.EVAL_TOTALS`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from gdram.training.distributed import Distributed, sum_over_ranks


class Totals:
    """Sums by name, held in one (len(names),) float64 CPU tensor, :attr:`values`.

    Args:
        names: the names of the sums, in the order of :attr:`values`.
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"the names of the sums must differ, got {self.names}")
        self.values = torch.zeros(len(self.names), dtype=torch.float64)

    def add(self, **sums: torch.Tensor) -> None:
        """Add one batch's 0-d sums (floating or integer, all on one device) by name: one copy to the CPU."""
        slots = [self.names.index(name) for name in sums]
        self.values[slots] += torch.stack([value.double() for value in sums.values()]).cpu()

    def __getitem__(self, name: str) -> float:
        return float(self.values[self.names.index(name)])

    def select(self, names: Sequence[str]) -> torch.Tensor:
        """The sums ``names`` as a (len(names),) float64 tensor."""
        return self.values[[self.names.index(name) for name in names]]

    def over_ranks(self, place: Distributed, device: torch.device) -> Totals:
        """These sums summed over every rank of the job (through ``device``)."""
        totals = Totals(self.names)
        totals.values = sum_over_ranks(self.values, place, device)
        return totals
