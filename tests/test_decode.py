"""The cached, batched decoder against the slow reference and the full training forward."""
import pytest
import torch

from nar.config import SamplingConfig
from nar.decode import compile_plan, decode_steps, generate
from nar.schedules import make_schedule
from reference import reference_step_logits

# float32 on CPU: cached attention reduces in a different order than the full forward.
ATOL, RTOL = 2e-4, 2e-4

CASES = [("nar", "nar", 0), ("raster", "raster", 0), ("raster", "zipar", 1),
         ("raster", "zipar", 2), ("raster", "zipar", 3), ("nar", "raster", 0)]


def run(model, order, window, grid, sampling, classes=(1, 3)):
    schedule = make_schedule(order, grid, window=window)
    records = [(r.positions.clone(), r.logits.clone(), r.grid.clone())
               for r in decode_steps(model, schedule, torch.tensor(classes), sampling,
                                     record_logits=True)]
    return schedule, records


@pytest.mark.parametrize("kind,order,window", CASES)
@pytest.mark.parametrize("cfg_scale,cfg_interval", [(1.0, -1), (3.0, -1), (2.5, 5)])
def test_cached_decode_matches_slow_reference(make_model, kind, order, window, cfg_scale, cfg_interval):
    grid = 4
    model = make_model(kind, grid=grid)
    sampling = SamplingConfig(cfg_scale=cfg_scale, cfg_interval=cfg_interval, top_k=0, seed=7)
    schedule, records = run(model, order, window, grid, sampling)
    final = records[-1][2]
    assert (final >= 0).all()
    expected = reference_step_logits(model, schedule, torch.tensor([1, 3]), final,
                                     cfg_scale, cfg_interval)
    assert len(expected) == len(records) == len(schedule)
    for t, ((positions, logits, _), ref) in enumerate(zip(records, expected)):
        assert positions.tolist() == list(schedule.steps[t])
        torch.testing.assert_close(logits, ref, atol=ATOL, rtol=RTOL, msg=f"step {t}")


@pytest.mark.parametrize("kind,order", [("nar", "nar"), ("raster", "raster")])
@pytest.mark.parametrize("cfg_scale", [1.0, 4.0])
def test_cached_decode_matches_training_forward(make_model, kind, order, cfg_scale):
    """With its own order, every step equals one full forward with the training mask
    (proximity for NAR, causal for raster) over the finished grid."""
    grid = 5
    model = make_model(kind, grid=grid, vocab=40)
    sampling = SamplingConfig(cfg_scale=cfg_scale, top_k=0, seed=11)
    schedule, records = run(model, order, 0, grid, sampling, classes=(0, 2, 4))
    final = records[-1][2]
    classes = torch.tensor([0, 2, 4])
    with torch.no_grad():
        cond, _ = model(classes, final)
        if cfg_scale > 1.0:
            uncond, _ = model(torch.full_like(classes, model.config.num_classes), final)
            full = uncond + cfg_scale * (cond - uncond)
        else:
            full = cond
    for t, (positions, logits, _) in enumerate(records):
        torch.testing.assert_close(logits, full[:, positions], atol=ATOL, rtol=RTOL, msg=f"step {t}")


def test_float64_agreement_is_tight(make_model):
    model = make_model("nar", grid=4, dtype=torch.float64)
    schedule, records = run(model, "nar", 0, 4, SamplingConfig(cfg_scale=2.0, top_k=0))
    ref = reference_step_logits(model, schedule, torch.tensor([1, 3]), records[-1][2], 2.0)
    for (_, logits, _), r in zip(records, ref):
        torch.testing.assert_close(logits, r, atol=1e-10, rtol=1e-10)


def test_same_seed_same_images_and_batch_independence(make_model):
    model = make_model("nar", grid=4)
    schedule = make_schedule("nar", 4)
    a = generate(model, schedule, torch.tensor([1, 2, 3]), SamplingConfig(seed=5, top_k=10))
    b = generate(model, schedule, torch.tensor([1, 2, 3]), SamplingConfig(seed=5, top_k=10))
    assert torch.equal(a, b)
    # image i of a batch seeded s is the single image seeded s + i
    single = generate(model, schedule, torch.tensor([2]), SamplingConfig(seed=6, top_k=10))
    assert torch.equal(single[0], a[1])
    c = generate(model, schedule, torch.tensor([1, 2, 3]), SamplingConfig(seed=99, top_k=10))
    assert not torch.equal(a, c)


def test_zipar_with_full_window_is_raster(make_model):
    model = make_model("raster", grid=4)
    s = SamplingConfig(seed=3, cfg_scale=2.0)
    raster = generate(model, make_schedule("raster", 4), torch.tensor([0, 4]), s)
    zipar = generate(model, make_schedule("zipar", 4, window=4), torch.tensor([0, 4]), s)
    assert torch.equal(raster, zipar)


def test_each_position_decoded_once_in_schedule_order(make_model):
    model = make_model("raster", grid=4)
    schedule = make_schedule("zipar", 4, window=2)
    seen = torch.zeros(16, dtype=torch.long)
    for r in decode_steps(model, schedule, torch.tensor([1]), SamplingConfig(cfg_scale=1.0)):
        assert (r.grid[0, r.positions] >= 0).all()
        seen[r.positions] += 1
        undecoded = torch.ones(16, dtype=torch.bool)
        for step in schedule.steps[: r.step + 1]:
            undecoded[list(step)] = False
        assert (r.grid[0, undecoded] == -1).all()
    assert (seen == 1).all()


def probe_count(plan) -> int:
    """Inputs beyond the tokens decoded at the previous step (the class token at step 0)."""
    fed = [1] + [len(step) for step in plan.schedule.steps[:-1]]
    return sum(len(sp.slots) - f for sp, f in zip(plan.steps, fed))


def test_probes_only_where_a_predictor_is_missing():
    assert probe_count(compile_plan("nar", make_schedule("nar", 6))) == 0
    assert probe_count(compile_plan("raster", make_schedule("raster", 6))) == 0
    assert probe_count(compile_plan("raster", make_schedule("zipar", 6, window=2))) == 5  # one per row start after the first


@pytest.mark.parametrize("kind,order,window", [("nar", "nar", 8), ("raster", "raster", 8), ("raster", "zipar", 2),
                                               ("nar", "raster", 8)])
def test_cache_fills_in_feeding_order_and_steps_read_only_the_prefix(kind, order, window):
    plan = compile_plan(kind, make_schedule(order, 5, window=window))
    written = 0
    for t, sp in enumerate(plan.steps):
        fed = 1 if t == 0 else len(plan.schedule.steps[t - 1])
        assert sp.slots[:fed].tolist() == list(range(written, written + fed))  # next free slots
        assert sp.slots.tolist() == list(range(sp.slot_start, sp.slot_start + len(sp.slots)))  # a slice
        written += fed
        assert sp.slots[fed:].tolist() == list(range(written, written + len(sp.slots) - fed))  # probes after them
        assert sp.key_len == len(sp.slots) - fed + written
        assert sp.mask is None or sp.mask.shape == (len(sp.slots), sp.key_len)
    assert written == 1 + 25 - len(plan.schedule.steps[-1])  # the last step's tokens are never fed
    if kind == order == "raster":  # causal over a prefix is no mask at all
        assert all(sp.mask is None for sp in plan.steps)


@pytest.mark.parametrize("bad", [dict(temperature=0.0), dict(top_p=0.0), dict(top_k=-1),
                                 dict(cfg_scale=-1.0), dict(cfg_interval=-2)])
def test_bad_sampling_parameters_are_refused(make_model, bad):
    model = make_model("nar", grid=4)
    with pytest.raises(ValueError):
        generate(model, make_schedule("nar", 4), torch.tensor([0]), SamplingConfig(**bad))


def test_bad_class_and_grid_are_refused(make_model):
    model = make_model("nar", grid=4, classes=5)
    with pytest.raises(ValueError, match="class ids"):
        generate(model, make_schedule("nar", 4), torch.tensor([5]))
    with pytest.raises(ValueError, match="grid"):
        generate(model, make_schedule("nar", 5), torch.tensor([0]))
