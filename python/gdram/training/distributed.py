"""Where this process runs: its place in a ``torchrun`` job, its device, and the sums over ranks.

Outside ``torchrun`` every function here is the single-process identity (rank 0 of 1, no
communication), so the trainer and the evaluation call them unconditionally.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Distributed:
    """This process's place in a ``torch.distributed`` job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> Distributed:
    """Join the ``torchrun`` job described by the environment (``WORLD_SIZE`` > 1), if any.

    Uses NCCL when the job runs on CUDA, gloo otherwise. Returns rank 0 of 1 outside ``torchrun``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    if not dist.is_initialized():
        cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        dist.init_process_group("nccl" if cuda else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def current_distributed() -> Distributed:
    """The job this process already belongs to (``init_process_group`` called), or rank 0 of 1."""
    if dist.is_available() and dist.is_initialized():
        return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return Distributed()


def resolve_device(name: str, place: Distributed = Distributed()) -> torch.device:
    """``"auto"`` -> CUDA when available (this rank's GPU) else CPU; ``"cuda"`` without a GPU is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was requested but no CUDA GPU is available")
        if device.index is None:
            device = torch.device("cuda", place.local_rank % torch.cuda.device_count())
    return device


def sum_over_ranks(values: torch.Tensor, place: Distributed, device: torch.device) -> torch.Tensor:
    """``values`` (a CPU tensor) summed over every rank of the job, through ``device``; itself when alone."""
    if not place.enabled:
        return values
    reduced = values.to(device)
    dist.all_reduce(reduced)
    return reduced.cpu()


def any_over_ranks(flag: torch.Tensor, place: Distributed) -> bool:
    """Whether the 0-d boolean ``flag`` holds on any rank (one host-device synchronisation)."""
    value = flag.float().reshape(1)
    if place.enabled:
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def barrier(place: Distributed) -> None:
    """Wait until every rank of the job gets here; nothing when alone."""
    if place.enabled:
        dist.barrier()
