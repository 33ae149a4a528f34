"""The roofline's per-step costs against what a decode actually does."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from nar.config import SamplingConfig
from nar.decode import generate
from nar.roofline import MachineLimits, bound_seconds, measure_limits, memory_bound_steps, step_costs
from nar.schedules import make_schedule


class AttentionFlops(TorchDispatchMode):
    """4 * L * S * E * heads * batch from the shapes of every attention call that runs."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if "scaled_dot_product" in str(func):
            q, k = args[0], args[1]
            b, h, L, e = q.shape
            self.flops += 4 * b * h * L * k.shape[2] * e
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("kind,order,window,cfg", [("nar", "nar", 8, True), ("raster", "raster", 8, True),
                                                   ("raster", "zipar", 2, True), ("nar", "nar", 8, False)])
def test_step_costs_count_the_flops_a_decode_does(make_model, kind, order, window, cfg):
    model = make_model(kind, grid=5)
    schedule = make_schedule(order, 5, window=window)
    sampling = SamplingConfig(cfg_scale=3.0 if cfg else 1.0)
    with FlopCounterMode(display=False) as counter, AttentionFlops() as attention:
        generate(model, schedule, torch.tensor([1, 2]), sampling)
    costs = step_costs(model, schedule, batch=2, cfg=cfg)
    assert len(costs) == len(schedule)
    assert sum(c.linear_flops for c in costs) == counter.get_total_flops()
    assert sum(c.attention_flops for c in costs) == attention.flops


def test_weight_bytes_are_the_linear_weights_a_step_uses(make_model):
    nar_model, raster_model = make_model("nar", grid=4), make_model("raster", grid=4)
    linear = lambda m: sum(p.numel() for n, p in m.named_parameters()  # noqa: E731
                           if n.endswith("weight") and p.ndim == 2 and "embedding" not in n)
    for model, order in ((nar_model, "nar"), (raster_model, "raster")):
        costs = step_costs(model, make_schedule(order, 4), batch=1, cfg=False)
        assert {c.weight_bytes for c in costs} == {4 * linear(model)}  # fp32
    # the cache read grows with the prefix: the last step reads the most
    kv = [c.kv_bytes for c in step_costs(raster_model, make_schedule("raster", 4), 1, False)]
    assert kv == sorted(kv) and kv[0] < kv[-1]


def test_bound_is_the_slower_of_memory_and_compute(make_model):
    model = make_model("nar", grid=4)
    costs = step_costs(model, make_schedule("nar", 4), batch=1, cfg=True)
    memory_bound = MachineLimits(bandwidth_bytes_per_s=1.0, matmul_flops_per_s=1e30)
    compute_bound = MachineLimits(bandwidth_bytes_per_s=1e30, matmul_flops_per_s=1.0)
    assert bound_seconds(costs, memory_bound) == pytest.approx(sum(c.bytes for c in costs))
    assert bound_seconds(costs, compute_bound) == pytest.approx(sum(c.flops for c in costs))
    assert memory_bound_steps(costs, memory_bound) == len(costs)
    assert memory_bound_steps(costs, compute_bound) == 0


def test_measured_limits_are_plausible():
    limits = measure_limits(torch.device("cpu"), torch.float32, repeats=2)
    assert 1e8 < limits.bandwidth_bytes_per_s < 1e13
    assert 1e8 < limits.matmul_flops_per_s < 1e15
    assert limits.datasheet_bandwidth_bytes_per_s is None


def test_memory_bytes_match_what_a_decode_allocates(make_model):
    from nar.decode import plan_on, new_state
    from nar.roofline import memory_bytes
    model = make_model("raster", grid=5)
    schedule = make_schedule("zipar", 5, window=2)
    sampling = SamplingConfig(cfg_scale=3.0)
    state = new_state(model, plan_on("raster", schedule, "cpu"), torch.tensor([0, 1, 2]), sampling)
    allocated = sum(t.numel() * t.element_size() for c in state.caches for t in (c.k, c.v))
    assert memory_bytes(model, schedule, batch=3, cfg=True)["kv_cache_bytes"] == allocated
