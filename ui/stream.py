"""The Generate stream: decode, and hand out a frame after every step, then the final images and
the animation files. Also what the streams share: playback pacing, captions, and the count of
decodes running now.

Timing: the decode time reported everywhere is `StepRecord.elapsed`, which counts only the
decoder's own work. Drawing frames, writing files and the optional playback delay happen
between steps and are never counted.
"""
from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from nar.config import SamplingConfig
from nar.pipeline import Studio
from nar.render import save_gif, save_mp4, save_png, tile, upscale

from .files import JobFiles, animation_fps, slug
from .requests import GenerateRequest

ORDER_LABELS = {"raster": "Raster", "zipar": "ZipAR", "nar": "NAR"}
WARM_UP_ORDERS = ("raster", "zipar", "nar")
FRAME_SCALE = 4                 # animation frames are the images upscaled this much

log = logging.getLogger("nar.ui")


def wait_until(last: Optional[float], min_seconds: float) -> float:
    """Sleep so that at least `min_seconds` pass between shown frames; returns the time now."""
    if last is not None and min_seconds > 0:
        left = min_seconds - (time.perf_counter() - last)
        if left > 0:
            time.sleep(left)
    return time.perf_counter()


def step_caption(order: str, step: int, num_steps: int, elapsed: float) -> str:
    if step >= num_steps:
        return f"{ORDER_LABELS.get(order, order)} · done: {num_steps} steps in {elapsed:.2f} s"
    return f"{ORDER_LABELS.get(order, order)} · step {step}/{num_steps} - {elapsed:.2f} s"


# -- running decodes ----------------------------------------------------------------------------
@dataclass
class DecodeRun:
    kind: str
    step: int = 0
    num_steps: int = 0


class DecodeTracker:
    """Counts the decodes running now. A decode whose consumer goes away (a cancelled request,
    a client that disconnected: Gradio closes the generator) stops at its next frame; that is
    logged with the step it reached, so an operator can see the work was freed."""

    def __init__(self):
        self._lock = threading.Lock()
        self.running = 0
        self.started = self.finished = self.stopped = self.failed = 0

    @contextlib.contextmanager
    def track(self, kind: str) -> Iterator[DecodeRun]:
        run = DecodeRun(kind)
        with self._lock:
            self.running += 1
            self.started += 1
        outcome = "failed"
        try:
            yield run
            outcome = "finished"
        except GeneratorExit:
            outcome = "stopped"
            raise
        finally:
            with self._lock:
                self.running -= 1
                setattr(self, outcome, getattr(self, outcome) + 1)
                running = self.running
            if outcome == "stopped":
                log.info("%s stopped at step %d/%d: the request was cancelled or its client left; "
                         "decode freed (%d running)", kind, run.step, run.num_steps, running)
            elif outcome == "failed":
                log.warning("%s failed at step %d/%d (%d running)", kind, run.step, run.num_steps, running)


# -- generate -----------------------------------------------------------------------------------
@dataclass
class GenerateUpdate:
    frame: np.ndarray                 # the batch's frames tiled, undecoded tokens blank, front outlined
    step: int                         # 1-based
    num_steps: int
    elapsed: float                    # decode seconds so far
    caption: str
    done: bool = False
    images: list[Path] = field(default_factory=list)   # final images (PNG, model resolution)
    labels: list[str] = field(default_factory=list)
    gif: Optional[Path] = None
    mp4: Optional[Path] = None
    summary: dict = field(default_factory=dict)


def generate_stream(studio: Studio, files: JobFiles, request: GenerateRequest, pace: float, write_mp4: bool,
                    run: DecodeRun) -> Iterator[GenerateUpdate]:
    """A frame after every step (at least `pace` seconds apart); the last update has the final
    images and the animation files."""
    order, sampling = request.order, request.sampling
    class_ids = request.class_ids[order]
    columns = min(4, len(class_ids))
    frames, shown, record = [], None, None
    for record in studio.decode_steps(order, class_ids, sampling, window=request.window):
        run.step, run.num_steps = record.step + 1, record.num_steps
        frame = tile(studio.frames(record, scale=FRAME_SCALE), columns)
        frames.append(frame)
        if record.step + 1 < record.num_steps:
            shown = wait_until(shown, pace)
            yield GenerateUpdate(frame, record.step + 1, record.num_steps, record.elapsed,
                                 step_caption(order, record.step + 1, record.num_steps, record.elapsed))
    seconds = record.elapsed
    images = studio.images(record.grid)
    names = studio.model_for(order).class_names
    job = files.new("generate")
    paths, labels = [], []
    for i, (image, cid) in enumerate(zip(images, class_ids.tolist())):
        labels.append(f"{names[cid]}, seed {sampling.seed + i}")
        paths.append(save_png(image, job / f"{order}-{slug(names[cid])}-seed{sampling.seed + i}.png"))
    fps = animation_fps(len(frames))
    gif = save_gif(frames, job / f"{order}-decoding.gif", fps=fps)
    mp4 = save_mp4(frames, job / f"{order}-decoding.mp4", fps=fps) if write_mp4 else None
    summary = {"order": order, "window": request.window if order == "zipar" else None,
               "steps": record.num_steps, "seconds": round(seconds, 4), "images": len(class_ids),
               "images_per_s": round(len(class_ids) / max(seconds, 1e-9), 3),
               "class": names[int(class_ids[0])], "seed": sampling.seed, "device": str(studio.device)}
    caption = (f"{step_caption(order, record.num_steps, record.num_steps, seconds)} · "
               f"{summary['images_per_s']:.2f} images/s")
    final = tile([upscale(image, FRAME_SCALE) for image in images], columns)  # without the front
    shown = wait_until(shown, pace)
    yield GenerateUpdate(final, record.num_steps, record.num_steps, seconds, caption, done=True,
                         images=paths, labels=labels, gif=gif, mp4=mp4, summary=summary)


def warm_up(studio: Studio) -> None:
    """Run two steps of every order once, so the first request does not pay one-time costs
    (allocator growth, lazy kernels) inside its measured time."""
    for order in WARM_UP_ORDERS:
        try:
            steps = studio.decode_steps(order, torch.zeros(1, dtype=torch.long), SamplingConfig())
        except ValueError:
            continue
        for i, record in enumerate(steps):
            studio.frames(record)
            if i >= 1:
                break
        steps.close()


SEED_MAX = 2 ** 31 - 1          # what the seed button draws from (any seed < 2**63 is accepted)


def random_seed() -> int:
    return random.randint(0, SEED_MAX)
