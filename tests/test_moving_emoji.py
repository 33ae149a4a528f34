"""The moving emoji clips: motions as classes, held-out split, the data command; no downloads."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import write_tiny_image_set
from nar.images import DatasetMissingError, load_clips
from nar.moving_emoji import MOTIONS, build, render_clip, sprite_centre, warp_error

ROOT = Path(__file__).resolve().parent.parent


def l_shape(size: int = 64) -> np.ndarray:
    """An asymmetric sprite (an L about the middle) on white: every motion, rotation included,
    changes it visibly."""
    img = np.full((size, size, 3), 255, np.uint8)
    u = size // 16
    img[3 * u:13 * u, 5 * u:8 * u] = (200, 30, 30)
    img[10 * u:13 * u, 5 * u:13 * u] = (30, 30, 200)
    return img


def ink_area(frame: np.ndarray) -> int:
    return int((frame.min(axis=-1) < 200).sum())


@pytest.mark.parametrize("motion,axis,sign", [("pan_right", 0, 1), ("pan_left", 0, -1),
                                              ("pan_down", 1, 1), ("pan_up", 1, -1)])
def test_pans_move_the_sprite_one_token_a_frame(motion, axis, sign):
    clip = render_clip(l_shape(64), motion, frames=4, size=32, rng=np.random.default_rng(1))
    assert clip.shape == (4, 32, 32, 3) and clip.dtype == np.uint8
    centres = np.array([sprite_centre(f) for f in clip]) * 32        # pixels
    steps = np.diff(centres[:, axis])
    assert np.all(sign * steps > 2.5) and np.all(sign * steps < 5.5)  # about 4 px = one 4-px token
    assert np.all(np.abs(np.diff(centres[:, 1 - axis])) < 1.0)


def test_zooms_grow_and_shrink_the_sprite():
    grow = render_clip(l_shape(64), "zoom_in", 4, 32, np.random.default_rng(2))
    shrink = render_clip(l_shape(64), "zoom_out", 4, 32, np.random.default_rng(2))
    assert all(np.diff([ink_area(f) for f in grow]) > 0)
    assert all(np.diff([ink_area(f) for f in shrink]) < 0)


def test_the_class_motion_explains_each_clip_best():
    """warp_error is lowest for the clip's own motion: rotation direction included."""
    rng = np.random.default_rng(3)
    for m, motion in enumerate(MOTIONS):
        clip = render_clip(l_shape(64), motion, 4, 32, rng)[None]
        errors = [warp_error(clip, np.array([k])) for k in range(len(MOTIONS))]
        assert int(np.argmin(errors)) == m, (motion, errors)


def test_build_writes_clips_per_image_and_motion_with_held_out_test_images(tmp_path):
    emoji = write_tiny_image_set(tmp_path / "emoji", per_class=2, size=32)
    meta = build(emoji, tmp_path / "clips", frames=3, size=16, seed=0)
    train, test = load_clips(tmp_path / "clips", "train"), load_clips(tmp_path / "clips", "test")
    assert train.class_names == list(MOTIONS) and meta["frames"] == 3
    assert train.clips.shape == (6 * 8, 3, 16, 16, 3) and test.clips.shape == (6 * 8, 3, 16, 16, 3)
    assert np.bincount(train.labels).tolist() == [6] * 8
    assert meta["splits"]["test"]["source_images"] == 6
    again = build(emoji, tmp_path / "again", frames=3, size=16, seed=0)
    assert again["splits"] == meta["splits"]
    assert np.array_equal(load_clips(tmp_path / "again", "train").clips, train.clips)   # deterministic


def test_data_command_builds_the_clips_and_a_missing_set_names_it(tmp_path):
    emoji = write_tiny_image_set(tmp_path / "emoji", per_class=1, size=32)
    result = subprocess.run([sys.executable, "-m", "nar.data", "moving", "--emoji", str(emoji), "--out",
                             str(tmp_path / "clips"), "--frames", "2", "--size", "16"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    meta = json.loads((tmp_path / "clips" / "meta.json").read_text())
    assert meta["class_names"] == list(MOTIONS) and meta["frame_size"] == 16
    with pytest.raises(DatasetMissingError, match="python -m nar.data moving"):
        load_clips(tmp_path / "nowhere", "train")
