"""Where the glimpses go: boxes, the attention metrics and the fixed policies."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gdram import GDRAM, GDRAMConfig
from gdram.data.cluttered import ClutterSpec, generate_cluttered
from gdram.data.datasets import DataError, batches
from gdram.data.loading import load_npz
from gdram.models.config import POLICIES
from gdram.models.gdram import create_model
from gdram.training.attention import attention_metrics, box_centres, glimpse_counts, run_policy

SMALL = {
    "num_classes": 3,
    "in_channels": 1,
    "image_size": 32,
    "glimpse_size": 8,
    "num_scales": 2,
    "num_glimpses": 2,
    "hidden_size": 16,
    "glimpse_channels": (4, 8),
    "context_channels": 4,
    "mlp_hidden_size": 16,
}


def result_at(model: GDRAM, locations: torch.Tensor) -> object:
    """A forward whose every glimpse is at ``locations`` (B, 2)."""
    return model.eval()(torch.zeros(len(locations), 1, 32, 32), locations=locations)


def test_hit_rate_distance_and_border_share_on_hand_built_glimpses() -> None:
    model = GDRAM(GDRAMConfig(**SMALL))
    bound = float(model.location_bound[0])  # 1 - 8/32 = 0.75
    locations = torch.tensor([[0.0, 0.0], [bound, 0.0], [-0.5, -0.5]])
    boxes = torch.tensor([[12.0, 12, 20, 20], [0, 0, 4, 4], [float("nan")] * 4])
    counts = glimpse_counts(result_at(model, locations), boxes, (32, 32), model.location_bound)
    metrics = attention_metrics(counts)
    assert metrics["hit_rate"] == pytest.approx(0.5)  # sample 0 hits, sample 1 misses, sample 2 has no box
    sample1 = float(np.hypot((bound + 1) / 2 * 32 - 2, 16 - 2))
    assert metrics["box_distance_px"] == pytest.approx(sample1 / 2)
    assert metrics["border_share"] == pytest.approx(1 / 3)


def test_attention_metrics_are_none_without_boxes_or_glimpses() -> None:
    assert attention_metrics(torch.zeros(5, dtype=torch.float64)) == {
        "hit_rate": None,
        "box_distance_px": None,
        "border_share": None,
    }


def test_box_centres_are_in_normalised_coordinates() -> None:
    centres = box_centres(torch.tensor([[0.0, 0, 32, 16], [8, 8, 16, 16]]), (32, 32))
    torch.testing.assert_close(centres, torch.tensor([[0.0, -0.5], [-0.25, -0.25]]))


def test_generated_boxes_hold_exactly_the_digit_pixels() -> None:
    rng = np.random.default_rng(0)
    digits = np.zeros((3, 10, 10), dtype=np.uint8)
    digits[:, 2:7, 3:9] = rng.integers(1, 255, size=(3, 5, 6))
    spec = ClutterSpec(canvas_size=40, digit_size=10, num_clutter=0, fragment_size=4)
    images, _, boxes = generate_cluttered(digits, np.arange(3), 6, spec, seed=1)
    for image, (x0, y0, x1, y1) in zip(images, boxes.astype(int), strict=True):
        rows, cols = np.flatnonzero(image.any(1)), np.flatnonzero(image.any(0))
        assert (x0, y0, x1, y1) == (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)


def write_npz(path, **changes):
    arrays = {
        "x_train": np.zeros((10, 16, 16), np.uint8),
        "y_train": np.arange(10) % 2,
        "x_test": np.zeros((4, 16, 16), np.uint8),
        "y_test": np.arange(4) % 2,
        "box_train": np.tile([1.0, 2, 9, 12], (10, 1)),
        "box_test": np.tile([0.0, 0, 16, 16], (4, 1)),
    }
    arrays.update(changes)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def test_boxes_survive_the_npz_round_trip_and_the_validation_hold_out(tmp_path) -> None:
    data = load_npz(write_npz(tmp_path / "d.npz"), val_fraction=0.2)
    for split in (data.train, data.val):
        _, _, boxes = next(batches(split, 100, boxes=True))
        torch.testing.assert_close(boxes, torch.tensor([[1.0, 2, 9, 12]]).expand(len(split), 4))


def test_boxes_scale_with_a_resized_image(tmp_path) -> None:
    data = load_npz(write_npz(tmp_path / "d.npz"), image_size=(32, 48))
    _, _, boxes = next(batches(data.test, 4, boxes=True))
    torch.testing.assert_close(boxes[0], torch.tensor([0.0, 0, 48, 32]))


def test_data_without_boxes_yields_nan_boxes(tmp_path) -> None:
    data = load_npz(write_npz(tmp_path / "d.npz", box_train=None, box_test=None))
    _, _, boxes = next(batches(data.test, 4, boxes=True))
    assert bool(torch.isnan(boxes).all())


@pytest.mark.parametrize(
    ("boxes", "message"),
    [
        (np.zeros((4, 3)), "expected \\(N, 4\\)"),
        (np.zeros((3, 4)), "3 rows but there are 4 images"),
        (np.tile([0.0, 0, 17, 8], (4, 1)), "outside the 16x16 image"),
        (np.tile([-1.0, 0, 8, 8], (4, 1)), "outside"),
        (np.tile([8.0, 0, 4, 8], (4, 1)), "x1 <= x0"),
        (np.tile([0.0, 0, np.nan, 8], (4, 1)), "NaN"),
        (np.array([["a"] * 4] * 4), "dtype"),
    ],
)
def test_malformed_boxes_are_rejected_with_the_fault(tmp_path, boxes: np.ndarray, message: str) -> None:
    with pytest.raises(DataError, match=f"box_test.*{message}|{message}"):
        load_npz(write_npz(tmp_path / "d.npz", box_test=boxes))


def test_center_policy_looks_at_the_centre_and_oracle_at_the_box() -> None:
    images = torch.rand(2, 1, 32, 32)
    boxes = torch.tensor([[16.0, 16, 24, 24], [0, 8, 8, 16]])
    centre = create_model(GDRAMConfig(**SMALL, policy="center")).train()
    assert torch.equal(run_policy(centre, images, boxes).locations, torch.zeros(2, 2, 2))
    oracle = create_model(GDRAMConfig(**SMALL, policy="oracle")).eval()
    located = run_policy(oracle, images, boxes).locations
    torch.testing.assert_close(located, torch.tensor([[0.25, 0.25], [-0.75, -0.25]]).expand(2, 2, 2))
    with pytest.raises(ValueError, match="target box"):
        run_policy(oracle, images, torch.full((2, 4), float("nan")))


def test_every_policy_builds_and_the_cnn_refuses_the_ablations() -> None:
    for policy in POLICIES:
        create_model(GDRAMConfig(**SMALL, policy=policy))
    with pytest.raises(ValueError, match="attention variant"):
        GDRAMConfig(**SMALL, variant="cnn", policy="center")
