"""The policy learns where to look: a tiny task that only a glimpse at the right place can solve."""

from __future__ import annotations

import torch
from gdram import GDRAMConfig
from gdram.data import DataSplits, TensorImages
from gdram.train import Trainer, TrainSettings

CORNERS = ((3, 3), (23, 3), (3, 23), (23, 23))  # top-left pixel of each 6x6 patch on a 32x32 image


def corner_task(count: int, seed: int) -> TensorImages:
    """Two classes: the orientation of the 1-pixel bars in the top-left patch; the three other corners hold
    bars of random orientation. Bars of 1 pixel vanish at every coarser retina scale (2x, 4x), so only the
    finest scale on the top-left patch tells the class; the box of that patch is known for every image."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (count,), generator=generator)
    vertical = torch.randint(0, 2, (count, 4), generator=generator).bool()
    vertical[:, 0] = labels.bool()
    images = torch.zeros(count, 1, 32, 32)
    for corner, (x, y) in enumerate(CORNERS):
        patch = images[:, 0, y:y + 6, x:x + 6]
        patch[vertical[:, corner], :, ::2] = 1.0
        patch[~vertical[:, corner], ::2, :] = 1.0
    boxes = torch.tensor([[3.0, 3.0, 9.0, 9.0]]).expand(count, 4).clone()
    return TensorImages((images * 255).to(torch.uint8), labels, boxes=boxes)


def train_on_corner_task(tmp_path, policy: str, recipe: str = "robust", guidance: float = 0.0) -> dict:
    data = DataSplits("corner-task", corner_task(2048, 1), corner_task(256, 2), corner_task(256, 3), 2, 1, (32, 32))
    config = GDRAMConfig(num_classes=2, in_channels=1, image_size=32, glimpse_size=4, num_scales=3, num_glimpses=3,
                         hidden_size=32, glimpse_channels=(8, 16), context_channels=8, mlp_hidden_size=32,
                         recipe=recipe)
    settings = TrainSettings(epochs=6, batch_size=32, seed=0, device="cpu", num_workers=0, policy=policy,
                             location_guidance=guidance)
    return Trainer(config, data, settings, tmp_path / f"{policy}-{recipe}-{guidance}", quiet=True).fit()


def test_reinforce_alone_learns_to_look_at_the_only_informative_place(tmp_path, one_thread) -> None:
    assert train_on_corner_task(tmp_path, "learned")["test_top1"] > 0.9
    centre = train_on_corner_task(tmp_path, "center")
    assert centre["test_hit_rate"] == 0.0 and centre["test_top1"] < 0.65


def test_location_guidance_puts_the_glimpses_on_the_box(tmp_path, one_thread) -> None:
    guided = train_on_corner_task(tmp_path, "learned", guidance=0.25)
    assert guided["test_top1"] > 0.9
    assert guided["test_hit_rate"] > 0.9 and guided["test_box_distance_px"] < 2.0
