"""nar/threads.py: a decode never runs on more threads than there are free cores, a small step on
fewer, and the caller's thread count is what it was after every step."""
import torch

import nar.threads as threads
from nar.config import SamplingConfig
from nar.decode import decode_steps
from nar.schedules import make_schedule
from nar.threads import ThreadPolicy, decode_threads, running_on, threads_for_rows


def test_budget_is_the_requested_count_capped_by_the_free_cores(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    monkeypatch.setattr(threads, "other_runnable_threads", lambda: 0)
    assert decode_threads(3) == 3 and decode_threads(8) == 4
    monkeypatch.setattr(threads, "other_runnable_threads", lambda: 3)      # a busy neighbour on 3 cores
    assert decode_threads(4) == 1
    monkeypatch.setattr(threads, "other_runnable_threads", lambda: 9)
    assert decode_threads(4) == 1                                        # never 0
    assert decode_threads(4, ThreadPolicy(adaptive=False)) == 4          # the fixed policy ignores load


def test_small_steps_run_on_fewer_threads():
    policy = ThreadPolicy(min_rows_per_thread=8)
    assert [threads_for_rows(2, rows, policy) for rows in (1, 2, 8, 15, 16, 64)] == [1, 1, 1, 1, 2, 2]
    assert threads_for_rows(2, 1, ThreadPolicy(adaptive=False)) == 2


def test_other_runnable_threads_reads_this_machine():
    assert threads.other_runnable_threads() >= 0 and threads.usable_cores() >= 1


def test_each_step_runs_on_the_policy_count_and_the_callers_count_is_kept(make_model, monkeypatch):
    import nar.decode
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "other_runnable_threads", lambda: 0)
    monkeypatch.setattr(threads, "POLICY", ThreadPolicy(min_rows_per_thread=4))
    seen = []
    real = nar.decode.run_step

    def spy(model, state, t, sp, *args, **kwargs):
        seen.append((state.rows * len(sp.slots), torch.get_num_threads()))
        return real(model, state, t, sp, *args, **kwargs)

    monkeypatch.setattr(nar.decode, "run_step", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model = make_model("nar", grid=4)
        for _ in decode_steps(model, make_schedule("nar", 4), torch.tensor([1]), SamplingConfig(cfg_scale=2.0)):
            assert torch.get_num_threads() == 2       # the consumer's code runs on the caller's count
    finally:
        torch.set_num_threads(before)
    assert [n for rows, n in seen] == [1 if rows < 8 else 2 for rows, _ in seen]
    assert {n for _, n in seen} == {1, 2}              # both kinds of step occur (rows 2 ... 8)
    with running_on(None):
        assert torch.get_num_threads() == before
