"""The "moving emoji" video data set: emoji artwork moving over T frames with a known motion.

Moving MNIST's recipe applied to the emoji data set (nar/data.py): every image of the prepared
emoji set becomes one clip per motion class, the emoji moving on white with that motion. The
class is the motion, which a viewer sees only over time: four pans, zoom in and out, rotation
clockwise and anticlockwise. Start position, size, speed and angle are drawn per clip. The
test split's clips are made from the emoji set's test images, so every test clip shows
artwork (whole emojis) the models never saw. Frames are rendered at the source resolution and
reduced to `size` pixels (32 px frames with the downsample-4 tokenizer give 8 x 8 tokens, so a
pan of 4 px per frame is one token).

    python -m nar.data moving --emoji data/emoji --out data/moving_emoji [--frames 4] [--size 32]
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from .checkpoint import atomic_write

MOTIONS: tuple[str, ...] = ("pan_right", "pan_left", "pan_down", "pan_up",
                            "zoom_in", "zoom_out", "rotate_cw", "rotate_ccw")
SPLITS = ("train", "test")
WHITE = (255, 255, 255)


@dataclass(frozen=True)
class MotionRanges:
    """Per-clip random ranges, in fractions of the frame side (so they hold at any size)."""
    pan_step: tuple[float, float] = (0.11, 0.14)      # per frame: 4 px of 32 is 0.125
    pan_scale: tuple[float, float] = (0.5, 0.6)       # sprite size relative to its source image
    cross_offset: float = 0.1                         # off-centre across the pan direction
    zoom_scales: tuple[float, float] = (0.35, 0.9)    # smallest and largest sprite scale
    rotate_step_deg: tuple[float, float] = (25.0, 35.0)
    rotate_scale: tuple[float, float] = (0.6, 0.75)
    jitter: float = 0.06                              # random shift of the clip's centre


def frame_poses(motion: str, frames: int, rng: np.random.Generator,
                ranges: MotionRanges = MotionRanges()) -> list[tuple[float, float, float, float]]:
    """(centre x, centre y, scale, angle in degrees clockwise) of the sprite in each frame;
    centres in fractions of the frame side, 0.5 is the middle."""
    if motion not in MOTIONS:
        raise ValueError(f"unknown motion {motion!r}; choose from {MOTIONS}")
    cx, cy = 0.5 + rng.uniform(-ranges.jitter, ranges.jitter, size=2)
    mid = (frames - 1) / 2
    if motion.startswith("pan_"):
        step = rng.uniform(*ranges.pan_step)
        scale = rng.uniform(*ranges.pan_scale)
        cross = rng.uniform(-ranges.cross_offset, ranges.cross_offset)
        dx, dy = {"pan_right": (1, 0), "pan_left": (-1, 0), "pan_down": (0, 1), "pan_up": (0, -1)}[motion]
        return [(cx + dx * step * (k - mid) + dy * cross, cy + dy * step * (k - mid) + dx * cross, scale, 0.0)
                for k in range(frames)]
    if motion.startswith("zoom_"):
        small, large = ranges.zoom_scales
        ratio = (large / small) ** (1 / max(1, frames - 1))    # the same zoom factor every frame
        scales = [small * ratio ** k for k in range(frames)]
        if motion == "zoom_out":
            scales = scales[::-1]
        return [(cx, cy, s, 0.0) for s in scales]
    step = rng.uniform(*ranges.rotate_step_deg) * (1 if motion == "rotate_cw" else -1)
    scale = rng.uniform(*ranges.rotate_scale)
    start = rng.uniform(-20.0, 20.0)
    return [(cx, cy, scale, start + step * k) for k in range(frames)]


def render_pose(image: Image.Image, cx: float, cy: float, scale: float, angle_deg: float) -> Image.Image:
    """The source image (on white) scaled, turned clockwise and centred at (cx, cy) of a
    canvas of its own size; what falls outside the source is white."""
    side = image.size[0]
    a = math.radians(angle_deg)
    cos, sin = math.cos(a) / scale, math.sin(a) / scale
    px, py = cx * side, cy * side
    # PIL maps each output pixel (x, y) to input (a x + b y + c, d x + e y + f): the inverse pose.
    coeffs = (cos, sin, side / 2 - (cos * px + sin * py),
              -sin, cos, side / 2 - (-sin * px + cos * py))
    return image.transform(image.size, Image.Transform.AFFINE, coeffs,
                           resample=Image.Resampling.BICUBIC, fillcolor=WHITE)


def render_clip(image: np.ndarray, motion: str, frames: int, size: int,
                rng: np.random.Generator) -> np.ndarray:
    """uint8 [frames, size, size, 3]: one source image [S, S, 3] (on white) moving."""
    source = Image.fromarray(image)
    out = []
    for pose in frame_poses(motion, frames, rng):
        frame = render_pose(source, *pose)
        if frame.size[0] != size:
            frame = frame.resize((size, size), Image.Resampling.LANCZOS)
        out.append(np.asarray(frame.convert("RGB")))
    return np.stack(out)


def nominal_step(motion: str, frames: int, ranges: MotionRanges = MotionRanges()
                 ) -> tuple[float, float, float, float]:
    """The class's motion from one frame to the next at the middle of its ranges: (shift x,
    shift y in fractions of the side, scale factor, degrees clockwise)."""
    if motion.startswith("pan_"):
        step = sum(ranges.pan_step) / 2
        dx, dy = {"pan_right": (1, 0), "pan_left": (-1, 0), "pan_down": (0, 1), "pan_up": (0, -1)}[motion]
        return (dx * step, dy * step, 1.0, 0.0)
    if motion.startswith("zoom_"):
        small, large = ranges.zoom_scales
        ratio = (large / small) ** (1 / max(1, frames - 1))
        return (0.0, 0.0, ratio if motion == "zoom_in" else 1 / ratio, 0.0)
    if motion.startswith("rotate_"):
        step = sum(ranges.rotate_step_deg) / 2
        return (0.0, 0.0, 1.0, step if motion == "rotate_cw" else -step)
    raise ValueError(f"unknown motion {motion!r}; choose from {MOTIONS}")


def sprite_centre(frame: np.ndarray) -> tuple[float, float]:
    """Centroid (fractions of the side) of the pixels that are not near-white; the middle if none."""
    ink = (255 - frame.astype(np.float64).min(axis=-1)).clip(0) ** 2
    total = ink.sum()
    if total < 1e-6:
        return 0.5, 0.5
    ys, xs = np.indices(ink.shape)
    side = frame.shape[0]
    return float((xs * ink).sum() / total + 0.5) / side, float((ys * ink).sum() / total + 0.5) / side


def warp_next(frame: np.ndarray, motion: str, frames: int) -> np.ndarray:
    """Frame k moved by the class's nominal motion about its sprite's centre: the prediction of
    frame k + 1 the temporal-consistency metric compares with the real next frame."""
    dx, dy, scale, angle = nominal_step(motion, frames)
    side = frame.shape[0]
    cx, cy = sprite_centre(frame)
    a = math.radians(angle)
    cos, sin = math.cos(a) / scale, math.sin(a) / scale
    px, py = (cx + dx) * side, (cy + dy) * side        # where the centre goes
    coeffs = (cos, sin, cx * side - (cos * px + sin * py),
              -sin, cos, cy * side - (-sin * px + cos * py))
    return np.asarray(Image.fromarray(frame).transform((side, side), Image.Transform.AFFINE, coeffs,
                                                       resample=Image.Resampling.BILINEAR, fillcolor=WHITE))


def warp_error(clips: np.ndarray, labels: np.ndarray) -> float:
    """Temporal consistency: the mean absolute error (in [0, 1] of the pixel range) between each
    frame k + 1 and frame k warped by the clip's class motion (warp_next), over all clips and
    k. Lower is more consistent; real clips give the reference level (not 0: the real speed,
    size and angle vary around the nominal motion)."""
    errors = []
    frames = clips.shape[1]
    for clip, label in zip(clips, labels):
        for k in range(frames - 1):
            predicted = warp_next(clip[k], MOTIONS[int(label)], frames).astype(np.float64)
            errors.append(np.abs(predicted - clip[k + 1]).mean() / 255)
    return float(np.mean(errors))


def build_split(images: np.ndarray, frames: int, size: int, seed: int, split: str
                ) -> dict[str, np.ndarray]:
    """One clip per (source image, motion); a clip's randomness depends only on (seed, split,
    image, motion), so any part of the set can be rebuilt alone."""
    clips, labels, sources = [], [], []
    for i, image in enumerate(images):
        for m, motion in enumerate(MOTIONS):
            rng = np.random.default_rng([seed, SPLITS.index(split), i, m])
            clips.append(render_clip(image, motion, frames, size, rng))
            labels.append(m)
            sources.append(i)
    return {"clips": np.stack(clips) if clips else np.zeros((0, frames, size, size, 3), np.uint8),
            "labels": np.asarray(labels, dtype=np.int64),
            "source_image": np.asarray(sources, dtype=np.int64)}


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    atomic_write(path, write)


def build(emoji_dir: Path, out: Path, frames: int = 4, size: int = 32, seed: int = 0,
          limit: Optional[int] = None) -> dict:
    """Build the clips of both splits from a prepared emoji data set; returns meta.json's dict.
    `limit` keeps only the first images of each split (small sets for tests)."""
    from .images import load_split
    if frames < 2:
        raise ValueError(f"a clip needs at least 2 frames, got {frames}")
    if not 8 <= size <= 256:
        raise ValueError(f"frame size must be in [8, 256] px, got {size}")
    emoji_meta = json.loads((Path(emoji_dir) / "meta.json").read_text())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split in SPLITS:
        started = time.monotonic()
        images = load_split(emoji_dir, split).images[:limit]
        arrays = build_split(images, frames, size, seed, split)
        write_npz(out / f"{split}.npz", arrays)
        counts[split] = {"clips": int(len(arrays["labels"])), "source_images": int(len(images)),
                         "per_class": int(len(images))}
        _log(f"{split}: {len(arrays['labels'])} clips from {len(images)} images "
             f"({time.monotonic() - started:.1f} s)")
    meta = {"kind": "moving_emoji", "class_names": list(MOTIONS), "frames": frames, "frame_size": size,
            "seed": seed, "source_data": str(emoji_dir), "splits": counts,
            "motion_ranges": MotionRanges().__dict__,
            "test_split": "clips of the emoji set's test images: whole emojis held out",
            "sources": emoji_meta.get("sources", []),
            "licences": "the artwork's licences and attributions are those of the emoji data set "
                        "(listed under sources); changes: moved, scaled, rotated, reduced to "
                        f"{size} px on white"}
    atomic_write(out / "meta.json", lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=1)))
    return meta


def _log(message: str) -> None:
    print(f"[data] {message}", flush=True)
