"""A decode that never waits for its view: the decoder runs at full speed in its own thread and
keeps every step's tokens (cheap); the view samples it, drawing only the newest step and only
when the previous frame has gone out, at a rate that leaves the CPU to the decoder.

`KeptSteps` is what a decode leaves behind (token grids at any step, the confidence of every
token, the decode time of every step): the scrubber, the replay and the animation files are
drawn from it afterwards, without decoding again. `sample_view` is the pacing alone, with an
injectable clock, so it is tested without a model.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Optional

import numpy as np
import torch

VIEW_SHARE = 0.08           # at most this share of the time goes to drawing and sending frames
MIN_FRAME_GAP = 0.05        # and never more than 20 frames a second
HOLD_BACK = 0.5             # no frame before the decoder has run this long: on a busy machine one draw is a
                            # large share of a short decode, so a decode this short shows its images at once
ANIMATION_STEPS = 64        # animation files: at most this many evenly spaced steps, plus the last


@dataclass
class KeptSteps:
    """Every step of one decode as tokens: which positions each step decoded, their tokens and
    the probability each token was drawn with; grids at any step are rebuilt from these."""
    order: str
    num_steps: int
    batch: int
    num_tokens: int
    positions: list = field(default_factory=list)     # per step: [Q] grid positions (CPU)
    tokens: list = field(default_factory=list)        # per step: [B, Q]
    confidence: list = field(default_factory=list)    # per step: [B, Q] or None
    elapsed: list = field(default_factory=list)       # per step: decode seconds so far
    stopped: bool = False

    @property
    def done(self) -> int:
        """Steps kept."""
        return len(self.elapsed)

    @property
    def seconds(self) -> float:
        return self.elapsed[-1] if self.elapsed else 0.0

    def keep(self, record) -> None:
        conf = record.confidence
        self.positions.append(record.positions.detach().cpu())
        self.tokens.append(record.tokens.detach().cpu().clone())
        self.confidence.append(None if conf is None else conf.detach().float().cpu().clone())
        self.elapsed.append(float(record.elapsed))

    def grid_at(self, step: int) -> torch.Tensor:
        """[B, n*n] the tokens after `step` steps (1-based), -1 where not decoded yet."""
        grid = torch.full((self.batch, self.num_tokens), -1, dtype=torch.long)
        for pos, tok in zip(self.positions[:step], self.tokens[:step]):
            grid[:, pos] = tok
        return grid

    def confidence_at(self, step: int) -> np.ndarray:
        """[B, n*n] the probability of every token decoded by `step`; NaN where not decoded."""
        out = torch.full((self.batch, self.num_tokens), float("nan"))
        for pos, conf in zip(self.positions[:step], self.confidence[:step]):
            if conf is not None:
                out[:, pos] = conf
        return out.numpy()

    def record_at(self, step: int) -> "StepView":
        return StepView(step - 1, self.num_steps, self.positions[step - 1], self.grid_at(step),
                        self.elapsed[step - 1])


@dataclass
class StepView:
    """A kept step in the shape Studio.frames reads (a StepRecord's step, positions and grid)."""
    step: int
    num_steps: int
    positions: torch.Tensor
    grid: torch.Tensor
    elapsed: float


def animation_steps(done: int, limit: int = ANIMATION_STEPS) -> list[int]:
    """The steps (1-based) an animation shows: at most `limit` evenly spaced, always the last."""
    if done <= limit + 1:
        return list(range(1, done + 1))
    picks = {int(round(1 + i * (done - 1) / limit)) for i in range(limit)}
    return sorted(picks | {done})


class StopFlag:
    """What Stop sets where no decode thread runs here (a ZeroGPU call's paced replay)."""

    def __init__(self):
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()


class LiveDecode:
    """Runs `steps` (an iterator of StepRecords) to the end in a thread, keeping each into `kept`
    (or calling `keep`); `stop()` ends it at the next step. Readers wait for news with `wait`."""

    def __init__(self, steps: Iterable, keep: Callable[[object], None]):
        self._steps, self._keep = steps, keep
        self._news = threading.Condition()
        self._stop = threading.Event()
        self.version = 0                 # bumps with every kept step
        self.finished = False
        self.error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="nar-decode", daemon=True)

    def start(self) -> "LiveDecode":
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            for record in self._steps:
                self._keep(record)
                with self._news:
                    self.version += 1
                    self._news.notify_all()
                if self._stop.is_set():
                    break
        except BaseException as e:       # handed to the reader, who reports it
            self.error = e
        finally:
            close = getattr(self._steps, "close", None)
            if close is not None:
                close()
            with self._news:
                self.finished = True
                self._news.notify_all()

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def wait(self, seen: int, timeout: Optional[float] = None) -> int:
        """Block until a step newer than version `seen` is kept or the decode ends; the version."""
        with self._news:
            self._news.wait_for(lambda: self.version > seen or self.finished, timeout)
            return self.version

    def pause(self, seconds: float) -> None:
        """Sleep up to `seconds`, waking early when the decode ends."""
        with self._news:
            self._news.wait_for(lambda: self.finished, seconds)

    def join(self) -> None:
        self._thread.join()
        if self.error is not None:
            raise self.error


class FrameCosts:
    """What drawing and sending one live frame took the last time, by the frames' kind (the batch
    size): a view's first frame waits until that cost is at most its share of the decode so far.
    Before any frame of a kind was drawn, `default_per_image` seconds an image is assumed."""

    def __init__(self, default_per_image: float = 0.015):
        self.default_per_image = default_per_image
        self._last: dict = {}

    def estimate(self, images: int) -> float:
        return self._last.get(images, self.default_per_image * images)

    def record(self, images: int, seconds: float) -> None:
        self._last[images] = seconds


FRAME_COSTS = FrameCosts()      # shared by every view of this server


def sample_view(decode: LiveDecode, render: Callable[[int], object], clock: Callable[[], float] = time.perf_counter,
                share: float = VIEW_SHARE, min_gap: float = MIN_FRAME_GAP, hold_back: float = HOLD_BACK,
                images: int = 1, costs: Optional[FrameCosts] = FRAME_COSTS) -> Iterator[object]:
    """Frames while `decode` runs; `render(k)` draws its k-th kept step (1-based), a picture of
    `images` images. The first frame waits until the decode has run `hold_back` seconds and
    drawing it (as `costs` last measured) is at most `share` of the time so far; then the newest
    step is drawn, only after the previous frame has gone out (the consumer asked for the next),
    so none ever queue, and after each the view waits until drawing and sending it are at most
    `share` of the time passed. A decode that ends before any frame was drawn (and was not
    stopped) shows one frame of its middle step, drawn after it: the front is seen once, and the
    decoder never shared the CPU with the view."""
    hold = max(hold_back, costs.estimate(images) / share if costs is not None else 0.0)
    if hold > 0:
        decode.pause(hold)                  # wakes at once if the decode ends first
    seen = shown = 0
    while True:
        seen = decode.wait(seen)
        glimpse = decode.finished
        if glimpse and (shown or decode.version < 2 or decode.stopping):
            return
        started = clock()
        frame = render(decode.version // 2 if glimpse else seen)
        yield frame
        shown += 1
        busy = clock() - started            # drawing, and the consumer sending it out
        if costs is not None:
            costs.record(images, busy)
        if decode.finished:
            return
        decode.pause(max(min_gap, busy * (1.0 / share - 1.0)))


def watch(decode: LiveDecode, render: Callable[[int], object]) -> Iterator[object]:
    """sample_view's frames, then the decode joined; a consumer that goes away (a cancelled
    request, a client that left: the generator is closed) stops the decode at its next step."""
    try:
        yield from sample_view(decode, render)
    except GeneratorExit:
        decode.stop()
        decode.join()
        raise
    decode.join()
