"""ui/race.py: the Compare scheduler on a made-up clock, without a model or a server."""
from dataclasses import dataclass

import pytest

from ui.race import Race

STEPS = {"raster": 16, "zipar": 10, "nar": 7}
COST = {"raster": 1.0, "zipar": 1.25, "nar": 2.0}      # seconds per step of each decoder


@dataclass
class Record:              # what the race reads of a StepRecord
    step: int


def steppers(log):
    def run(order):
        for step in range(STEPS[order]):
            log.append(order)
            yield Record(step)
    return {order: run(order) for order in STEPS}


def fake_clock(order, record):
    return COST[order] * (record.step + 1)


def test_the_decoder_that_is_behind_always_runs_next():
    log = []
    race = Race(steppers(log), STEPS, clock=fake_clock, max_frames=1000)
    clocks = list(race)
    assert race.done and len(log) == sum(STEPS.values())
    # replay the log: before each step, the chosen decoder had the least decode time of those running
    elapsed = {o: 0.0 for o in STEPS}
    done = {o: 0 for o in STEPS}
    for order in log:
        running = [o for o in STEPS if done[o] < STEPS[o]]
        assert elapsed[order] == min(elapsed[o] for o in running)
        done[order] += 1
        elapsed[order] = COST[order] * done[order]
    assert clocks == sorted(clocks)                              # the shared clock never goes back
    assert {o: p.elapsed for o, p in race.panels.items()} == {"raster": 16.0, "zipar": 12.5, "nar": 14.0}


def test_frames_are_spaced_by_decode_time_and_shown_when_a_decoder_finishes():
    race = Race(steppers([]), STEPS, clock=fake_clock, max_frames=4)
    seen = []
    for clock in race:
        seen.append((clock, {o: p.step for o, p in race.panels.items()}))
    # about max_frames frames plus one per finished decoder (expected total: 16 s of raster)
    assert 4 <= len(seen) <= 4 + 3
    assert any(steps["nar"] == 7 and steps["raster"] < 16 for _, steps in seen)   # NAR shown done first
    assert seen[-1][1] == STEPS and race.done


def test_closing_the_race_closes_every_decoder():
    closed = []

    def run(order):
        try:
            for step in range(STEPS[order]):
                yield Record(step)
        finally:
            closed.append(order)
    race = iter(Race({o: run(o) for o in STEPS}, STEPS, clock=fake_clock, max_frames=90))
    next(race)
    race.close()                                   # a visitor pressed Stop
    assert sorted(closed) == sorted(STEPS)


def test_a_decoder_that_ends_early_is_an_error():
    def short(order):
        yield Record(0)
    with pytest.raises(RuntimeError):              # StopIteration inside a generator
        list(Race({o: short(o) for o in STEPS}, STEPS, clock=fake_clock))
