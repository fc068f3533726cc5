"""Glimpse pictures: geometry, colours by outcome, one frame per glimpse, file formats."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gdram.analysis.visualize import CORRECT, WRONG, draw_frames, draw_grid, draw_tile, glimpse_sides, save_picture
from gdram.models.gdram import create_model
from tiny import tiny_config


def _model(variant: str = "gdram"):
    torch.manual_seed(0)
    return create_model(tiny_config(variant, image_size=32)).eval()


def _has_colour(picture, colour) -> bool:
    return bool((np.asarray(picture) == np.array(colour, dtype=np.uint8)).all(axis=2).any())


def test_glimpse_sides_follow_the_retina_scales():
    assert glimpse_sides(_model()) == [8.0, 16.0]


def test_tile_colours_a_correct_prediction_green_and_a_wrong_one_red():
    image = torch.zeros(1, 32, 32)
    locations = torch.tensor([[0.0, 0.0], [0.5, -0.5]])
    weights = torch.tensor([1.0, 0.4])
    right = draw_tile(image, locations, weights, [8.0, 16.0], label=1, prediction=1, steps=2, zoom=3)
    wrong = draw_tile(image, locations, weights, [8.0, 16.0], label=1, prediction=2, steps=2, zoom=3)
    assert right.size == (96, 96)
    assert _has_colour(right, CORRECT) and not _has_colour(right, WRONG)
    assert _has_colour(wrong, WRONG) and not _has_colour(wrong, CORRECT)


def test_the_largest_square_is_drawn_around_the_glimpse_centre():
    image = torch.zeros(1, 32, 32)
    tile = np.asarray(draw_tile(image, torch.zeros(1, 2), torch.ones(1), [16.0], 0, 0, steps=1, zoom=2))
    greenish = np.abs(tile.astype(int) - np.array(CORRECT)).sum(axis=2) < 120
    greenish[:14] = False  # the caption bar
    rows, columns = np.nonzero(greenish)
    assert abs(rows.min() - (32 - 16)) <= 1 and abs(rows.max() - (32 + 16)) <= 1
    assert abs(columns.min() - (32 - 16)) <= 1 and abs(columns.max() - (32 + 16)) <= 1


def test_frames_grow_one_glimpse_at_a_time_and_the_grid_is_the_last(tmp_path):
    model = _model()
    images, labels = torch.rand(5, 1, 32, 32), torch.tensor([0, 1, 2, 0, 1])
    frames = draw_frames(model, images, labels, zoom=1)
    assert len(frames) == 3 and frames[0].size == (3 * 32 + 2 * 4, 2 * 32 + 4)
    assert np.array_equal(np.asarray(frames[-1]), np.asarray(draw_grid(model, images, labels, zoom=1)))
    assert not np.array_equal(np.asarray(frames[0]), np.asarray(frames[-1]))
    gif = save_picture(frames, tmp_path / "a.gif")
    png = save_picture(frames, tmp_path / "a.png")
    assert gif.stat().st_size > 0 and png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="must be a .png or .gif"):
        save_picture(frames, tmp_path / "a.jpg")


def test_the_cnn_baseline_has_no_glimpses_to_draw():
    with pytest.raises(ValueError, match="only attention models"):
        draw_grid(_model("cnn"), torch.rand(2, 1, 32, 32), torch.tensor([0, 1]))
