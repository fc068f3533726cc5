"""The policy learns where to look: a tiny task that only a glimpse at the right place can solve."""

from __future__ import annotations

from gdram.experiments.studies import train_on_corner_task


def test_reinforce_alone_learns_to_look_at_the_only_informative_place(tmp_path, one_thread) -> None:
    assert train_on_corner_task(tmp_path, "robust", "learned")["test_top1"] > 0.9
    centre = train_on_corner_task(tmp_path, "robust", "center", epochs=3)
    assert centre["test_hit_rate"] == 0.0 and centre["test_top1"] < 0.65


def test_location_guidance_puts_the_glimpses_on_the_box(tmp_path, one_thread) -> None:
    guided = train_on_corner_task(tmp_path, "robust", "learned", guidance=0.25)
    assert guided["test_top1"] > 0.9
    # inside the 6x6 box, within half its side of the centre
    assert guided["test_hit_rate"] > 0.9 and guided["test_box_distance_px"] < 3.0
