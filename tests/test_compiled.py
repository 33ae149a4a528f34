"""The torch.compile'd step (nar.decode.compiled_step_logits) against the slow reference: the
same logits at every step as a full forward with the mask, and the same tokens as the eager
decode, for NAR, raster and ZipAR, with and without CFG, images and a clip."""
import pytest
import torch

from nar.config import SamplingConfig
from nar.decode import compiled_graph_count, decode_steps
from nar.loading import load
from nar.schedules import make_schedule
from reference import reference_step_logits

# inductor fuses element-wise ops and may reduce in another order than eager
ATOL, RTOL = 5e-4, 5e-4

# (model, order, ZipAR window, frames, CFG scale): each new model or step shape is a compile
# (the image cases are the benchmark test's decodes: batch 1 with CFG, the same graphs)
CASES = [("nar", "nar", 0, 1, 3.0), ("raster", "raster", 0, 1, 3.0), ("raster", "zipar", 4, 1, 3.0),
         ("nar", "nar", 0, 2, 1.0)]


def classes(frames):
    return torch.tensor([2]) if frames == 1 else torch.tensor([1, 2])   # a clip batch of 2: batch is a symbol


def records(model, schedule, sampling, compiled, frames):
    return [(r.positions.clone(), r.logits.clone(), r.grid.clone())
            for r in decode_steps(model, schedule, classes(frames), sampling, record_logits=True, compiled=compiled)]


def small_model(kind, frames, tiny_checkpoints, make_model):
    """The tiny checkpoints' models for images (the benchmark's test compiles the same shapes),
    a random 2 x 3 x 3 clip model for video."""
    if frames == 1:
        return load(tiny_checkpoints[kind]).model.eval()
    return make_model(kind, grid=3, frames=frames)


@pytest.mark.parametrize("kind,order,window,frames,cfg_scale", CASES)
def test_compiled_decode_matches_slow_reference_and_eager(make_model, tiny_checkpoints, one_thread, kind, order,
                                                          window, frames, cfg_scale):
    model = small_model(kind, frames, tiny_checkpoints, make_model)
    grid = model.config.grid_size
    schedule = make_schedule(order, grid, window=window or 8, frames=frames)
    sampling = SamplingConfig(cfg_scale=cfg_scale, top_k=0, seed=5)
    fast = records(model, schedule, sampling, True, frames)
    eager = records(model, schedule, sampling, False, frames)
    final = fast[-1][2]
    assert (final >= 0).all()
    assert torch.equal(final, eager[-1][2]), "compiled and eager decodes drew different tokens"
    expected = reference_step_logits(model, schedule, classes(frames), final, cfg_scale)
    assert len(expected) == len(fast) == len(schedule)
    for t, ((positions, logits, _), ref) in enumerate(zip(fast, expected)):
        assert positions.tolist() == list(schedule.steps[t])
        torch.testing.assert_close(logits, ref, atol=ATOL, rtol=RTOL, msg=f"step {t}")


def test_compiled_graphs_are_bounded(make_model, one_thread):
    """Front sizes, cache lengths and the batch are symbols: a decode compiles at most one graph
    per kind of step (one or more inputs, times one or more targets: torch.compile specialises
    size 1), not one per step, and another decode with a new batch size, classes and seed adds
    none (the clip model and decode of the test above: run alone, this test compiles them)."""
    model = make_model("nar", grid=3, frames=2)
    schedule = make_schedule("nar", 3, frames=2)
    before = compiled_graph_count()
    list(decode_steps(model, schedule, torch.tensor([1, 2]), SamplingConfig(cfg_scale=1.0, top_k=0, seed=5), compiled=True))
    after_first = compiled_graph_count()
    assert len(schedule) == 6 and after_first - before <= 4
    list(decode_steps(model, schedule, torch.tensor([2, 0, 1]), SamplingConfig(cfg_scale=1.0, top_k=0, seed=9), compiled=True))
    assert compiled_graph_count() == after_first
