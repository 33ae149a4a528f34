"""ui/live.py: the decoder thread, the view's sampling and pacing (a made-up clock), the kept steps."""
import time
from dataclasses import dataclass

import torch

from ui.live import FrameCosts, KeptSteps, LiveDecode, animation_steps, sample_view


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
    for step in sample_view(decode, lambda k: k, min_gap=0.0, share=1.0, hold_back=0.0, costs=None):
        shown.append(step)
        time.sleep(0.05)           # a consumer that takes 10 steps' time per frame
    decode.join()
    wall = time.perf_counter() - started
    assert kept.done == 40 and wall < 40 * 0.05       # the decode ran at its own speed
    assert shown == sorted(set(shown)) and len(shown) < 20   # newest steps only, most frames dropped


class FakeDecode:
    """A decode whose steps appear when the test says so, on a made-up clock."""
    def __init__(self, clock):
        self.clock, self.version, self.finished, self.pauses, self.stopping = clock, 0, False, [], False

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

    def render(k):
        clock.now += 0.02              # drawing a frame costs 20 ms
        return k
    view = sample_view(decode, render, clock=clock, share=0.1, min_gap=0.05, hold_back=0.0, costs=None)
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


def test_no_frame_is_drawn_while_a_short_decode_runs():
    """The view holds back its first frame; a decode that ends sooner shows its middle step once,
    drawn after it, and a decode stopped that soon shows nothing."""
    for stop in (False, True):
        kept = KeptSteps("nar", 31, 1, 31)
        decode = LiveDecode(records(31, 0.002), kept.keep).start()
        drawn = []

        def render(k):
            drawn.append((k, decode.finished))
            return k
        if stop:
            decode.stop()
        frames = list(sample_view(decode, render, hold_back=5.0, costs=FrameCosts()))
        decode.join()
        if stop:
            assert frames == [] and kept.done < 31
        else:
            assert kept.done == 31 and frames == [15] and drawn == [(15, True)]


def test_after_the_hold_back_the_view_draws_the_newest_step():
    kept = KeptSteps("raster", 60, 1, 60)
    started = time.perf_counter()
    decode = LiveDecode(records(60, 0.01), kept.keep).start()
    drawn_at = []

    def render(k):
        drawn_at.append(time.perf_counter() - started)
        return k
    frames = list(sample_view(decode, render, hold_back=0.2, share=1.0, min_gap=0.0, costs=None))
    decode.join()
    assert frames and frames == sorted(set(frames)) and frames[-1] < 60
    assert drawn_at[0] >= 0.2 and frames[0] > 1


def test_the_first_frame_waits_until_its_cost_is_its_share():
    """Frames of 8 images that last took 0.1 s each: at a 10% share the first waits 1 s of decode
    (more than the hold-back); what it costs this time is remembered for the next view."""
    clock = Clock()
    decode = FakeDecode(clock)
    costs = FrameCosts(default_per_image=0.01)
    assert costs.estimate(8) == 0.08
    costs.record(8, 0.1)

    def render(k):
        clock.now += 0.05
        decode.finished = True
        return k
    assert list(sample_view(decode, render, clock=clock, share=0.1, hold_back=0.5, images=8, costs=costs)) == [1]
    assert decode.pauses[0] == 1.0 and abs(costs.estimate(8) - 0.05) < 1e-9 and costs.estimate(1) == 0.01


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
