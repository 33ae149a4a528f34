"""The Compare race: raster, ZipAR and NAR on the same class and seed, interleaved by their own
decode clocks. `Race` is the scheduler alone (no pixels, no sleeping): the decoder whose clock is
smallest always runs next, so at every frame all panels show their state after (nearly) the same
decode time. Its clock is injectable, so its order is tested with a made-up clock. The race runs
in its own thread at full speed; the view draws its newest frame when it has time (ui/live.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from nar.decode import StepRecord
from nar.pipeline import Studio
from nar.render import compose_frame, save_gif, save_png, tile, upscale

from .files import JobFiles
from .live import LiveDecode, StepView, animation_steps, sample_view
from .requests import GenerateRequest
from .stream import (ANIMATION_SCALE, FRAME_SCALE, ORDER_LABELS, DecodeRun, step_caption, stop_caption,
                     wait_until)

COMPARE_ORDERS = ("raster", "zipar", "nar")
COMPARE_HEADERS = ["Order", "Steps", "Decode time (s)", "Images/s", "Speed-up vs raster"]
Clock = Callable[[str, StepRecord], float]   # (order, record) -> that decoder's seconds so far


def decode_clock(order: str, record: StepRecord) -> float:
    """The decoder's own measured time (what the app shows)."""
    return record.elapsed


@dataclass
class PanelState:
    order: str
    num_steps: int
    step: int = 0                     # steps done
    elapsed: float = 0.0
    record: Optional[StepRecord] = None
    frame: Optional[np.ndarray] = None
    dirty: bool = True

    @property
    def done(self) -> bool:
        return self.step >= self.num_steps


class Race:
    """Iterating yields the shared clock each time a frame is due: spaced evenly over the expected
    decode time of the slowest order (at most `max_frames`), and whenever a decoder finishes (the
    last of them too: then `done` is true)."""

    def __init__(self, steppers: dict[str, Iterator[StepRecord]], num_steps: dict[str, int],
                 clock: Clock = decode_clock, max_frames: int = 90):
        self.steppers, self.clock_of, self.max_frames = steppers, clock, max_frames
        self.panels = {order: PanelState(order, num_steps[order]) for order in steppers}
        self.clock = 0.0

    @property
    def done(self) -> bool:
        return all(p.done for p in self.panels.values())

    def __iter__(self) -> Iterator[float]:
        panels, next_clock = self.panels, 0.0
        try:
            while not self.done:
                panel = min((p for p in panels.values() if not p.done), key=lambda p: p.elapsed)
                record = next(self.steppers[panel.order])
                panel.record, panel.step, panel.dirty = record, record.step + 1, True
                panel.elapsed = self.clock_of(panel.order, record)
                running = [p for p in panels.values() if not p.done]
                # the shared clock: every running panel has decoded at least this long
                self.clock = min((p.elapsed for p in running), default=max(p.elapsed for p in panels.values()))
                expected = max(p.elapsed / max(p.step, 1) * p.num_steps for p in panels.values())
                if (self.clock >= next_clock or panel.done) and all(p.record is not None for p in panels.values()):
                    next_clock = self.clock + expected / self.max_frames
                    yield self.clock
        finally:
            for stepper in self.steppers.values():
                stepper.close()


@dataclass
class RaceFrame:
    """The race at one of its frames, as tokens (cheap; drawn later if at all)."""
    clock: float
    steps: dict                       # order -> steps done
    elapsed: dict                     # order -> decode seconds so far
    grids: dict                       # order -> [1, n*n] tokens so far (a copy)
    fronts: dict                      # order -> positions of its last step


@dataclass
class CompareUpdate:
    frames: dict                      # order -> frame
    captions: dict                    # order -> caption
    clock: float                      # the shared decode time the panels show
    elapsed: dict = field(default_factory=dict)       # order -> its decode seconds so far
    steps: dict = field(default_factory=dict)         # order -> steps done
    done: bool = False
    rows: list[list] = field(default_factory=list)
    images: dict = field(default_factory=dict)        # order -> final PNG
    gif: Optional[Path] = None
    stopped: bool = False
    kept: list = field(default_factory=list)          # every RaceFrame, in order (set once done)


def race_frames(race: Race) -> Iterator[RaceFrame]:
    """The race run to its end, a RaceFrame at every frame it calls for."""
    for clock in race:
        panels = race.panels.values()
        yield RaceFrame(clock, {p.order: p.step for p in panels}, {p.order: p.elapsed for p in panels},
                        {p.order: p.record.grid[:1].detach().cpu().clone() for p in panels},
                        {p.order: p.record.positions.detach().cpu() for p in panels})


def race_captions(frame: RaceFrame, num_steps: dict, stopped: bool) -> dict:
    """Each order's caption at a race frame: its step, or done, or (a stopped race's last frame)
    where it stopped."""
    caption = stop_caption if stopped else step_caption
    return {o: (step_caption if frame.steps[o] >= num_steps[o] else caption)(
        o, frame.steps[o], num_steps[o], frame.elapsed[o]) for o in frame.steps}


def race_row(last: RaceFrame, order: str, num_steps: int, window: int, stopped: bool) -> list:
    """One order's row of a race's table (one image or clip each): its label, steps, decode
    seconds, images (clips) per second and speed-up against raster."""
    label = ORDER_LABELS[order] + (f" (window {window})" if order == "zipar" else "")
    seconds, raster_s = last.elapsed[order], last.elapsed["raster"]
    return [label, last.steps[order] if stopped else num_steps, round(seconds, 4),
            round(1.0 / max(seconds, 1e-9), 2), f"{raster_s / max(seconds, 1e-9):.2f}x" if not stopped else "stopped"]


def compare_stream(studio: Studio, files: JobFiles, request: GenerateRequest, replay: float, max_frames: int,
                   run: DecodeRun, clock: Clock = decode_clock,
                   started: Callable[[LiveDecode], None] = lambda d: None,
                   wait: Callable[[Optional[float], float], float] = wait_until) -> Iterator[CompareUpdate]:
    """The race in its own thread at full speed (three decoders interleaved in it), its newest
    frame drawn whenever the view has time (ui/live.py); the kept frames replayed when `replay`
    > 0; then the final update with a table of steps, seconds and images/s, the final images
    and a side-by-side GIF (at most ANIMATION_STEPS frames and the last)."""
    steppers = {o: studio.decode_steps(o, request.conditions[o], request.sampling, window=request.window)
                for o in COMPARE_ORDERS}
    num_steps = {o: len(studio.schedule(o, request.window)) for o in COMPARE_ORDERS}
    race = Race(steppers, num_steps, clock, max_frames)
    kept: list[RaceFrame] = []
    run.num_steps = sum(num_steps.values())
    decode = LiveDecode(race_frames(race), kept.append).start()
    started(decode)
    n = studio.vq.cfg.grid_size

    def draw(frame: RaceFrame, final: bool = False) -> CompareUpdate:
        pictures = {}
        for o in COMPARE_ORDERS:
            view = StepView(frame.steps[o] - 1, num_steps[o], frame.fronts[o], frame.grids[o], frame.elapsed[o])
            finished = frame.steps[o] >= num_steps[o]
            pictures[o] = (upscale(studio.images(view.grid)[0], FRAME_SCALE) if finished
                           else studio.frames(view, scale=FRAME_SCALE)[0])    # no front once done
        run.step = sum(frame.steps.values())
        captions = race_captions(frame, num_steps, final and decode.stopping)
        return CompareUpdate(pictures, captions, frame.clock, elapsed=dict(frame.elapsed), steps=dict(frame.steps))

    try:
        for update in sample_view(decode, lambda k: draw(kept[k - 1]), images=len(COMPARE_ORDERS)):
            yield update
    except GeneratorExit:
        decode.stop()
        decode.join()
        raise
    decode.join()
    if not kept:          # stopped before every decoder had a step: nothing to show
        raise ValueError("the race was stopped before it started")
    shown = None
    if replay > 0:
        for frame in kept:
            update = draw(frame)
            shown = wait(shown, replay)
            update.captions = {o: f"replay · {c}" for o, c in update.captions.items()}
            yield update
    last = kept[-1]
    update = draw(last, final=True)
    update.stopped = any(last.steps[o] < num_steps[o] for o in COMPARE_ORDERS)
    job = files.new("compare")
    finals = {}
    for order in COMPARE_ORDERS:
        update.rows.append(race_row(last, order, num_steps[order], request.window, update.stopped))
        finals[order] = studio.images(last.grids[order])
        update.images[order] = save_png(finals[order][0], job / f"{order}.png")
    movie = []
    for i in animation_steps(len(kept)):
        frame = kept[i - 1]
        panels = []
        for o in COMPARE_ORDERS:      # drawn from the final images' pixels: no decode per frame
            decoded = (frame.grids[o][0] >= 0).reshape(n, n).numpy()
            front = np.zeros(n * n, dtype=bool)
            if frame.steps[o] < num_steps[o]:
                front[frame.fronts[o].numpy()] = True
            panels.append(compose_frame(finals[o][0], decoded, front.reshape(n, n), ANIMATION_SCALE))
        movie.append(tile(panels, gap=2))
    update.gif = save_gif(movie, job / "compare.gif", fps=min(20.0, max(4.0, len(movie) / 5)))
    update.done, update.kept = True, kept
    wait(shown, replay)
    yield update
