"""The Generate stream: the decoder runs at full speed in its own thread and the view samples it
(ui/live.py); then the final images and the animation files. Also what the streams share: replay
pacing, captions, and the count of decodes running now.

Timing: the decode time reported everywhere is `StepRecord.elapsed`, which counts only the
decoder's own work. Drawing frames, writing files and the optional replay happen beside or after
the decode and are never counted.
"""
from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch

from nar.conditions import condition_labels
from nar.config import SamplingConfig
from nar.pipeline import Studio
from nar.render import compose_frame, save_gif, save_mp4, save_png, tile, upscale

from .files import JobFiles, animation_fps, slug
from .live import KeptSteps, LiveDecode, animation_steps, sample_view
from .requests import GenerateRequest

ORDER_LABELS = {"raster": "Raster", "zipar": "ZipAR", "nar": "NAR"}
WARM_UP_ORDERS = ("raster", "zipar", "nar")
FRAME_SCALE = 4                 # live frames of one image are upscaled this much
ANIMATION_SCALE = 2             # animation files: the images upscaled this much (keeps them quick to write)

log = logging.getLogger("nar.ui")


def wait_until(last: Optional[float], min_seconds: float) -> float:
    """Sleep so that at least `min_seconds` pass between shown frames; returns the time now."""
    if last is not None and min_seconds > 0:
        left = min_seconds - (time.perf_counter() - last)
        if left > 0:
            time.sleep(left)
    return time.perf_counter()


def no_wait(last: Optional[float], min_seconds: float) -> float:
    """wait_until that never sleeps: a ZeroGPU call draws the replay's frames, the caller paces them."""
    return time.perf_counter()


def seed_label(seed: int, i: int, dtype: torch.dtype) -> str:
    """Image i's seed as the gallery says it: in fp32 it is exactly the single image seeded s + i;
    in lower precision the batch size changes the logits' rounding, so it is only that batch's."""
    if dtype == torch.float32:
        return f"seed {seed + i}"
    return f"seed {seed + i} (image {i + 1} of a batch seeded {seed})"


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
    done: bool = False                # the decode is over (finished or stopped) and the images are in
    images: list[Path] = field(default_factory=list)   # final images (PNG, model resolution)
    labels: list[str] = field(default_factory=list)
    gif: Optional[Path] = None        # the animation files come in the last update
    mp4: Optional[Path] = None
    summary: dict = field(default_factory=dict)
    stopped: bool = False
    kept: Optional[KeptSteps] = None  # every step's tokens, for the scrubber (set once done)


def live_scale(images: int, image_px: int, width: int = 640) -> int:
    """How much a live frame is upscaled: 4x for one 64 px image, less as the tile gets wider
    (a wider frame costs more to draw and to send, and the view is 640 px wide at most)."""
    columns = min(4, images)
    return max(1, min(FRAME_SCALE, width // max(1, columns * image_px)))


def stop_caption(order: str, step: int, num_steps: int, elapsed: float) -> str:
    return f"{ORDER_LABELS.get(order, order)} · stopped at step {step}/{num_steps} - {elapsed:.2f} s"


WAITED_CAPTION = "stopped before it began: Stop was pressed while it waited in the queue"


def animation_frames(studio: Studio, kept: KeptSteps, final_images: np.ndarray, columns: int,
                     scale: int) -> list[np.ndarray]:
    """The animation: at most ANIMATION_STEPS evenly spaced steps and the last, each drawn from
    the final images' pixels (no decode per frame), undecoded tokens blank, the front outlined."""
    n = int(round(kept.num_tokens ** 0.5))
    decoded_step = np.full(kept.num_tokens, np.iinfo(np.int32).max)
    for s, pos in enumerate(kept.positions, start=1):
        decoded_step[pos.numpy()] = s
    frames = []
    for step in animation_steps(kept.done):
        decoded = (decoded_step <= step).reshape(n, n)
        front = np.zeros(kept.num_tokens, dtype=bool)
        front[kept.positions[step - 1].numpy()] = True
        frames.append(tile([compose_frame(img, decoded, front.reshape(n, n), scale) for img in final_images],
                           columns))
    return frames


def generate_stream(studio: Studio, files: JobFiles, request: GenerateRequest, replay: float, write_mp4: bool,
                    run: DecodeRun, started: Callable[[LiveDecode], None] = lambda d: None,
                    wait: Callable[[Optional[float], float], float] = wait_until) -> Iterator[GenerateUpdate]:
    """The newest step while the decoder runs at full speed in its own thread (ui/live.py); then,
    when `replay` > 0, the kept steps again at `replay` seconds a step; then the final images, and
    last the animation files. `started` gets the running decode (the Stop button stops it)."""
    order, sampling = request.order, request.sampling
    condition = request.conditions[order]
    count = condition.batch
    columns = min(4, count)
    n, image_px = studio.vq.cfg.grid_size, studio.vq.cfg.image_size
    scale = live_scale(count, image_px)
    num_steps = len(studio.schedule(order, request.window))
    kept = KeptSteps(order, num_steps, count, n * n)
    run.num_steps = num_steps
    decode = LiveDecode(studio.decode_steps(order, condition, sampling, window=request.window,
                                            record_confidence=True), kept.keep).start()
    started(decode)

    def render(step: int):
        run.step = step
        return step, tile(studio.frames(kept.record_at(step), scale=scale), columns)

    try:
        for step, frame in sample_view(decode, render, images=count):
            if step < num_steps:
                yield GenerateUpdate(frame, step, num_steps, kept.elapsed[step - 1],
                                     step_caption(order, step, num_steps, kept.elapsed[step - 1]))
    except GeneratorExit:             # the request was cancelled, or its client left
        decode.stop()
        decode.join()
        raise
    decode.join()
    done, seconds = kept.done, kept.seconds
    kept.stopped = done < num_steps
    run.step = done
    shown = None
    if replay > 0 and done:
        for step in range(1, done + 1):
            if decode.stopping:       # Stop ends the replay too
                break
            frame = tile(studio.frames(kept.record_at(step), scale=scale), columns)
            shown = wait(shown, replay)
            yield GenerateUpdate(frame, step, num_steps, kept.elapsed[step - 1],
                                 f"replay · {step_caption(order, step, num_steps, kept.elapsed[step - 1])}")
    images = studio.images(kept.grid_at(done))
    loaded = studio.model_for(order)
    dtype = next(loaded.model.parameters()).dtype
    subjects = condition_labels(loaded.class_names, condition)
    job = files.new("generate")
    paths, labels = [], []
    for i, (image, subject) in enumerate(zip(images, subjects)):
        labels.append(f"{subject}, {seed_label(sampling.seed, i, dtype)}")
        paths.append(save_png(image, job / f"{order}-{slug(subject)}-seed{sampling.seed + i}.png"))
    summary = {"order": order, "window": request.window if order == "zipar" else None,
               "steps": num_steps, "steps_done": done, "seconds": round(seconds, 4), "images": count,
               "images_per_s": round(count / max(seconds, 1e-9), 3),
               "class" if not request.is_text else "prompt": subjects[0], "seed": sampling.seed,
               "device": str(studio.device)}
    if kept.stopped:
        caption = stop_caption(order, done, num_steps, seconds)
        final = tile(studio.frames(kept.record_at(done), scale=scale), columns) if done else \
            tile([upscale(image, scale) for image in images], columns)
    else:
        caption = (f"{step_caption(order, num_steps, num_steps, seconds)} · "
                   f"{summary['images_per_s']:.2f} images/s")
        final = tile([upscale(image, scale) for image in images], columns)  # without the front
    shown = wait(shown, replay)
    update = GenerateUpdate(final, done, num_steps, seconds, caption, done=True, images=paths, labels=labels,
                            summary=summary, stopped=kept.stopped, kept=kept)
    yield update
    if done:
        frames = animation_frames(studio, kept, images, columns, ANIMATION_SCALE)
        fps = animation_fps(len(frames))
        gif = save_gif(frames, job / f"{order}-decoding.gif", fps=fps)
        mp4 = save_mp4(frames, job / f"{order}-decoding.mp4", fps=fps) if write_mp4 else None
        yield replace(update, gif=gif, mp4=mp4, summary=dict(update.summary))


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
