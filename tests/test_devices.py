"""Device and precision choice, and per-request step timing. Tests with `cuda` in their names
need a GPU and skip without one (scripts/gpu_check.sh runs them)."""
import time

import pytest
import torch

from nar.config import SamplingConfig
from nar.decode import decode_steps
from nar.devices import device_name, has_native_bf16, pick_device, pick_dtype
from nar.schedules import make_schedule

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("capability,expected", [((7, 0), torch.float32), ((7, 5), torch.float32),
                                                 ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_bf16_only_where_native(monkeypatch, capability, expected):
    # V100 (7.0) and T4 (7.5) report bf16 as supported (emulated); only 8.0+ has it in hardware
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert pick_dtype(torch.device("cuda")) == expected
    assert pick_dtype(torch.device("cpu")) == torch.float32


def test_device_choice_and_name():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert device_name(torch.device("cpu")) == f"cpu-{torch.get_num_threads()}threads"
    assert not has_native_bf16(torch.device("cpu"))


def test_cpu_step_timing_never_touches_cuda(make_model, monkeypatch):
    def no_cuda(*args, **kwargs):
        raise AssertionError("the CPU path must not use CUDA")
    for name in ("synchronize", "Event", "current_stream"):
        monkeypatch.setattr(torch.cuda, name, no_cuda)
    records = list(decode_steps(make_model("nar", grid=4), make_schedule("nar", 4), torch.tensor([0, 1]),
                                SamplingConfig(), sync=True))
    elapsed = [r.elapsed for r in records]
    assert len(records) == 7 and elapsed == sorted(elapsed) and elapsed[0] > 0


@needs_cuda
def test_cuda_step_timing_waits_for_its_own_stream_only(make_model):
    """Another stream kept busy (another visitor, a training thread) must not count in a
    request's `elapsed` when the request runs on its own stream."""
    model = make_model("nar", grid=4).cuda()
    schedule, ids = make_schedule("nar", 4), torch.tensor([0, 1])
    for _ in decode_steps(model, schedule, ids, SamplingConfig()):   # warm-up (lazy inits)
        pass
    a = torch.randn(8192, 8192, device="cuda")
    busy, mine = torch.cuda.Stream(), torch.cuda.Stream()
    torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.cuda.stream(busy):
        for _ in range(40):
            a @ a
    with torch.cuda.stream(mine):
        for record in decode_steps(model, schedule, ids, SamplingConfig(), sync=True):
            pass
    torch.cuda.synchronize()
    busy_seconds = time.perf_counter() - start
    assert record.elapsed < 0.5 * busy_seconds, (record.elapsed, busy_seconds)
