"""The Compare race: raster, ZipAR and NAR on the same class and seed, interleaved by their own
decode clocks. `Race` is the scheduler alone (no pixels, no sleeping): the decoder whose clock is
smallest always runs next, so at every frame all panels show their state after (nearly) the same
decode time. Its clock is injectable, so its order is tested with a made-up clock.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from nar.decode import StepRecord
from nar.pipeline import Studio
from nar.render import save_gif, save_png, tile, upscale

from .files import JobFiles
from .requests import GenerateRequest
from .stream import FRAME_SCALE, ORDER_LABELS, DecodeRun, step_caption, wait_until

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


def compare_stream(studio: Studio, files: JobFiles, request: GenerateRequest, pace: float, max_frames: int,
                   run: DecodeRun, clock: Clock = decode_clock) -> Iterator[CompareUpdate]:
    """The race drawn: an update per frame the race calls for, then the final one with a table of
    steps, seconds and images/s, the final images and a side-by-side GIF."""
    steppers = {o: studio.decode_steps(o, request.class_ids[o], request.sampling, window=request.window)
                for o in COMPARE_ORDERS}
    race = Race(steppers, {o: len(studio.schedule(o, request.window)) for o in COMPARE_ORDERS}, clock, max_frames)
    panels, movie, shown = race.panels, [], None
    run.num_steps = sum(p.num_steps for p in panels.values())

    def render() -> CompareUpdate:
        for p in panels.values():
            if p.dirty and p.record is not None:
                p.frame = (upscale(studio.images(p.record.grid)[0], FRAME_SCALE) if p.done
                           else studio.frames(p.record, scale=FRAME_SCALE)[0])  # no front once done
                p.dirty = False
        frames = {o: p.frame for o, p in panels.items()}
        if all(f is not None for f in frames.values()):  # the GIF at half size keeps it small
            movie.append(tile([frames[o][::2, ::2] for o in COMPARE_ORDERS], gap=2))
        run.step = sum(p.step for p in panels.values())
        return CompareUpdate(frames, {o: step_caption(o, p.step, p.num_steps, p.elapsed) for o, p in panels.items()},
                             race.clock, elapsed={o: p.elapsed for o, p in panels.items()},
                             steps={o: p.step for o, p in panels.items()})

    for _ in race:
        update = render()
        if not race.done:
            shown = wait_until(shown, pace)
            yield update
    update = render()
    raster_s = panels["raster"].elapsed
    job = files.new("compare")
    for order in COMPARE_ORDERS:
        p = panels[order]
        label = ORDER_LABELS[order] + (f" (window {request.window})" if order == "zipar" else "")
        update.rows.append([label, p.num_steps, round(p.elapsed, 4), round(1.0 / max(p.elapsed, 1e-9), 2),
                            f"{raster_s / max(p.elapsed, 1e-9):.2f}x"])
        update.images[order] = save_png(studio.images(p.record.grid)[0], job / f"{order}.png")
    update.gif = save_gif(movie, job / "compare.gif", fps=min(20.0, max(4.0, len(movie) / 5)))
    update.done = True
    wait_until(shown, pace)
    yield update
