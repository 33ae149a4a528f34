"""ui/live.py: the decoder thread, the view's sampling and pacing (a made-up clock), the kept steps."""
import time
from dataclasses import dataclass

import torch

from ui.live import KeptSteps, LiveDecode, animation_steps, sample_view


@dataclass
class Record:                      # what KeptSteps reads of a StepRecord
    step: int
    positions: torch.Tensor
    tokens: torch.Tensor
    elapsed: float
    confidence: torch.Tensor = None


def records(n_steps: int, seconds_per_step: float = 0.0):
    for s in range(n_steps):
        if seconds_per_step:
            time.sleep(seconds_per_step)
        yield Record(s, torch.tensor([s]), torch.tensor([[10 + s]]), 0.01 * (s + 1), torch.tensor([[0.5]]))


def test_the_decoder_never_waits_for_a_slow_view():
    kept = KeptSteps("raster", 40, 1, 40)
    decode = LiveDecode(records(40, 0.005), kept.keep).start()
    started = time.perf_counter()
    shown = []
    for step in sample_view(decode, lambda: kept.done, min_gap=0.0, share=1.0):
        shown.append(step)
        time.sleep(0.05)           # a consumer that takes 10 steps' time per frame
    decode.join()
    wall = time.perf_counter() - started
    assert kept.done == 40 and wall < 40 * 0.05       # the decode ran at its own speed
    assert shown == sorted(set(shown)) and len(shown) < 20   # newest steps only, most frames dropped


class FakeDecode:
    """A decode whose steps appear when the test says so, on a made-up clock."""
    def __init__(self, clock):
        self.clock, self.version, self.finished, self.pauses = clock, 0, False, []

    def wait(self, seen, timeout=None):
        if self.version <= seen:   # the test moves time on: the decoder made a step
            self.version += 1
        return self.version

    def pause(self, seconds):
        self.pauses.append(round(seconds, 6))
        self.clock.now += seconds


class Clock:
    now = 0.0

    def __call__(self):
        return self.now


def test_the_view_waits_so_drawing_takes_at_most_its_share():
    clock = Clock()
    decode = FakeDecode(clock)

    def render():
        clock.now += 0.02              # drawing a frame costs 20 ms
        return decode.version
    view = sample_view(decode, render, clock=clock, share=0.1, min_gap=0.05)
    frames = []
    for frame in view:
        clock.now += 0.01              # sending it out costs 10 ms
        frames.append(frame)
        if len(frames) == 5:
            decode.finished = True
    assert frames == [1, 2, 3, 4, 5]
    # 30 ms busy per frame at a 10% share: 270 ms of waiting after each (more than the 50 ms floor)
    assert decode.pauses == [0.27] * 4
    assert 4 * 0.03 / (4 * 0.03 + sum(decode.pauses)) <= 0.1 + 1e-9    # each frame and its wait


def test_kept_steps_rebuild_any_step_and_animations_pick_evenly():
    kept = KeptSteps("raster", 6, 1, 6)
    for r in records(4):
        kept.keep(r)
    assert kept.grid_at(2).tolist() == [[10, 11, -1, -1, -1, -1]]
    assert kept.record_at(3).positions.tolist() == [2] and kept.seconds == 0.04
    conf = kept.confidence_at(1)
    assert conf[0, 0] == 0.5 and torch.isnan(torch.tensor(conf[0, 1:])).all()
    assert animation_steps(5) == [1, 2, 3, 4, 5]
    picks = animation_steps(256)
    assert len(picks) <= 65 and picks[0] == 1 and picks[-1] == 256
    gaps = [b - a for a, b in zip(picks, picks[1:])]
    assert max(gaps) - min(gaps) <= 1


def test_stop_ends_the_decode_at_its_next_step_and_closes_it():
    closed = []

    def steps():
        try:
            yield from records(1000, 0.002)
        finally:
            closed.append(True)
    kept = KeptSteps("raster", 1000, 1, 1000)
    decode = LiveDecode(steps(), kept.keep).start()
    decode.wait(0)
    decode.stop()
    decode.join()
    assert 1 <= kept.done < 1000 and closed == [True]
