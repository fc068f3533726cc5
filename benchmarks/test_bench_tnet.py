"""TNet against its backbone reading the whole image: a training step and batch-1 inference at 512 px.

The arms of ``python -m gdram.experiments tnet`` (:data:`gdram.experiments.tnet.ARMS`) on the
``cluttered-digits-512`` shapes (1x512x512, 10 classes), from seeded weights on seeded random images:

* ``train-tnet-...``: zero grads, forward on a batch of 32, TNet's loss (cross-entropy and REINFORCE on the
  chosen cells), backward, Adam step; the time of an epoch is this step's times the steps per epoch;
* ``infer-tnet-...``: eval mode, no grad, one image.

Each case records its arm as its ``implementation`` (the report's tables leave these kinds out; pytest-benchmark's
own table shows them side by side, ``pytest benchmarks/test_bench_tnet.py --benchmark-only``).

``tnet`` reads the 128 px overview and 4 cells of 64 px; ``downscaled`` the whole image at 64 px; ``full-res``
the whole image at 512 px: the side-by-side cost that TNet's target (<= 0.1x the full-resolution time) is
measured on.
"""

from __future__ import annotations

import pytest
import torch
from gdram.experiments.tnet import arm_fields
from gdram.models.tnet import TNet, tnet_loss
from gdram.models.tnet_config import TNetConfig

from benchmarks.harness import synchronised

ARMS = ("tnet", "downscaled", "full-res")
IMAGE_SIZE = 512
TRAIN_BATCH = 32
WARMUP_STEPS = 1


def _model(arm: str, device: torch.device) -> TNet:
    torch.manual_seed(0)
    config = TNetConfig(in_channels=1, image_size=IMAGE_SIZE, **arm_fields(arm, IMAGE_SIZE))
    return TNet(config).to(device)


def _images(batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 1, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    return images.to(device), torch.randint(0, 10, (batch,), generator=generator).to(device)


@pytest.mark.parametrize("arm", ARMS)
def test_train_step(benchmark, arm: str, device: torch.device, extra_info: dict[str, object]) -> None:
    model = _model(arm, device).train()
    images, labels = _images(TRAIN_BATCH, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        tnet_loss(model(images), labels, model.config, model.reward_baseline).total.backward()
        optimizer.step()

    benchmark.group = f"train-tnet-B{TRAIN_BATCH}-{IMAGE_SIZE}-{device}"
    benchmark.extra_info.update(extra_info, kind="train-tnet", implementation=arm, batch=TRAIN_BATCH)
    benchmark(synchronised(step, device, warmup=WARMUP_STEPS))


@pytest.mark.parametrize("arm", ARMS)
def test_inference_latency(benchmark, arm: str, device: torch.device, extra_info: dict[str, object]) -> None:
    model = _model(arm, device).eval()
    images, _ = _images(1, device)

    def infer() -> None:
        with torch.no_grad():
            model(images)

    benchmark.group = f"infer-tnet-B1-{IMAGE_SIZE}-{device}"
    benchmark.extra_info.update(extra_info, kind="infer-tnet", implementation=arm, batch=1)
    benchmark(synchronised(infer, device, warmup=WARMUP_STEPS))
