"""Distributed data parallel training: 2 gloo processes on the CPU end with identical weights."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, run_dir: str, family: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    from gdram.models.tnet_config import TNetConfig
    from gdram.training.distributed import init_distributed
    from gdram.training.trainer import Trainer, TrainSettings
    from tiny import tiny_config, tiny_data

    tnet = {"base_size": 8, "levels": 2, "grid_size": 2, "cells_per_level": (1,), "feature_size": 8}
    config = tiny_config() if family == "gdram" else TNetConfig(num_classes=3, in_channels=1, image_size=24, **tnet)

    place = init_distributed("cpu")
    try:
        settings = TrainSettings(epochs=1, batch_size=4, eval_batch_size=8, seed=3, device="cpu", num_workers=0)
        trained = {}

        def keep_parameters(trainer: Trainer, record: dict) -> None:
            trained.update({name: value.detach().clone() for name, value in trainer.model.named_parameters()})

        trainer = Trainer(config, tiny_data(), settings, run_dir, quiet=True, callbacks=[keep_parameters])
        initial = {name: value.detach().clone() for name, value in trainer.model.named_parameters()}
        summary = trainer.fit()
        torch.save(
            {"initial": initial, "trained": trained, "summary": summary, "world": place.world_size},
            os.path.join(run_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo")
@pytest.mark.parametrize("family", ["gdram", "tnet"])
def test_two_gloo_processes_train_to_identical_weights(tmp_path, family: str):
    arguments = (2, _free_port(), str(tmp_path), family)
    mp.start_processes(_worker, args=arguments, nprocs=2, join=True, start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(2)]
    assert ranks[0]["world"] == ranks[1]["world"] == 2
    for name, value in ranks[0]["trained"].items():  # (buffers are rank 0's at each forward; rank 0 saves them)
        assert torch.equal(value, ranks[1]["trained"][name]), name  # gradients were averaged every step
    assert any(not torch.equal(value, ranks[0]["initial"][name]) for name, value in ranks[0]["trained"].items())
    assert ranks[0]["summary"]["test_top1"] == ranks[1]["summary"]["test_top1"]  # metrics summed over ranks
    assert ranks[0]["summary"]["test_n"] == 8
    assert (tmp_path / "best.pt").is_file() and (tmp_path / "metrics.jsonl").is_file()
