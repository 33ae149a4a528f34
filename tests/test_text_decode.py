"""Text conditions in the one engine: a left-padded prefix of text features instead of a class
token. The cached decode against the slow reference (tests/reference.py) at every step, with
and without CFG, for NAR, raster and ZipAR; padding masked out; the training forward."""
import pytest
import torch

from nar.conditions import TextCondition
from nar.config import SamplingConfig
from nar.decode import decode_steps
from nar.schedules import make_schedule
from reference import reference_step_logits

ATOL, RTOL = 2e-4, 2e-4
L, D = 5, 12          # prefix tokens, text feature width


def prompts(lengths=(2, 5), seed=0, pad_value=0.0) -> TextCondition:
    """Random text features, left-padded to L: sequence i has lengths[i] real tokens at the end."""
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(len(lengths), L, D, generator=g)
    mask = torch.zeros(len(lengths), L, dtype=torch.bool)
    for i, n in enumerate(lengths):
        mask[i, L - n:] = True
    features[~mask] = pad_value
    return TextCondition(features, mask)


def decode(model, order, window, cond, sampling):
    schedule = make_schedule(order, model.config.grid_size, window=window)
    records = [(r.positions.clone(), r.logits.clone(), r.grid.clone())
               for r in decode_steps(model, schedule, cond, sampling, record_logits=True)]
    return schedule, records


@pytest.mark.parametrize("kind,order,window", [("nar", "nar", 0), ("raster", "raster", 0), ("raster", "zipar", 2)])
@pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
def test_cached_text_decode_matches_slow_reference(make_model, kind, order, window, cfg_scale):
    model = make_model(kind, grid=4, text_prefix=L, caption_dim=D)
    cond = prompts()
    sampling = SamplingConfig(cfg_scale=cfg_scale, top_k=0, seed=3)
    schedule, records = decode(model, order, window, cond, sampling)
    expected = reference_step_logits(model, schedule, cond, records[-1][2], cfg_scale)
    assert len(expected) == len(records) == len(schedule)
    for t, ((positions, logits, _), ref) in enumerate(zip(records, expected)):
        assert positions.tolist() == list(schedule.steps[t])
        torch.testing.assert_close(logits, ref, atol=ATOL, rtol=RTOL, msg=f"step {t}")


@pytest.mark.parametrize("kind,order", [("nar", "nar"), ("raster", "raster")])
def test_padding_is_not_read(make_model, kind, order):
    """Whatever the padded rows hold, the logits are the same; and they differ when a real
    token changes (so the check can fail)."""
    model = make_model(kind, grid=4, text_prefix=L, caption_dim=D)
    sampling = SamplingConfig(cfg_scale=2.0, top_k=0, seed=1)
    _, clean = decode(model, order, 0, prompts(pad_value=0.0), sampling)
    _, noisy = decode(model, order, 0, prompts(pad_value=7.0), sampling)
    for (_, a, ga), (_, b, gb) in zip(clean, noisy):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        assert torch.equal(ga, gb)
    changed = prompts()
    changed.features[0, -1] += 1.0
    _, other = decode(model, order, 0, changed, sampling)
    assert not torch.allclose(clean[0][1][0], other[0][1][0], atol=1e-4)


@pytest.mark.parametrize("kind,order", [("nar", "nar"), ("raster", "raster")])
def test_a_padded_prompt_decodes_as_the_unpadded_one(make_model, kind, order):
    """A 2-token prompt left-padded to 5 gives the logits the same weights give with a 2-token
    prefix and no padding (prefix positions carry no rotary angle, so only the mask differs)."""
    padded_model = make_model(kind, grid=4, text_prefix=L, caption_dim=D)
    short_model = make_model(kind, grid=4, text_prefix=2, caption_dim=D)
    weights = {k: v for k, v in padded_model.state_dict().items() if k != "cls_embedding.uncond_embedding"}
    short_model.load_state_dict(weights, strict=False)
    cond = prompts(lengths=(2, 2))
    short = TextCondition(cond.features[:, L - 2:], cond.mask[:, L - 2:])
    sampling = SamplingConfig(cfg_scale=1.0, top_k=0, seed=2)
    _, a = decode(padded_model, order, 0, cond, sampling)
    _, b = decode(short_model, order, 0, short, sampling)
    for (pa, la, _), (pb, lb, _) in zip(a, b):
        assert torch.equal(pa, pb)
        torch.testing.assert_close(la, lb, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("kind,order", [("nar", "nar"), ("raster", "raster")])
def test_text_decode_matches_the_training_forward(make_model, kind, order):
    model = make_model(kind, grid=4, text_prefix=L, caption_dim=D)
    cond = prompts(lengths=(1, 3, 5))
    _, records = decode(model, order, 0, cond, SamplingConfig(cfg_scale=1.0, top_k=0, seed=4))
    with torch.no_grad():
        full, _ = model(cond, records[-1][2])
    for t, (positions, logits, _) in enumerate(records):
        torch.testing.assert_close(logits, full[:, positions], atol=ATOL, rtol=RTOL, msg=f"step {t}")


def test_a_text_model_refuses_class_ids_and_the_wrong_width(make_model):
    model = make_model("nar", grid=4, text_prefix=L, caption_dim=D)
    schedule = make_schedule("nar", 4)
    with pytest.raises(ValueError, match="prompt"):
        next(decode_steps(model, schedule, torch.tensor([0]), SamplingConfig()))
    wrong = TextCondition(torch.zeros(1, L, D + 1), torch.ones(1, L, dtype=torch.bool))
    with pytest.raises(ValueError, match="text features"):
        next(decode_steps(model, schedule, wrong, SamplingConfig()))
    empty = TextCondition(torch.zeros(1, L, D), torch.zeros(1, L, dtype=torch.bool))
    with pytest.raises(ValueError, match="real token"):
        next(decode_steps(model, schedule, empty, SamplingConfig()))
    class_model = make_model("nar", grid=4)
    with pytest.raises(ValueError, match="class ids"):
        next(decode_steps(class_model, schedule, prompts(), SamplingConfig()))


def test_a_reused_decode_takes_new_prompts_in_place(make_model):
    """GraphedDecode's buffers (what CUDA graphs replay; eager on a CPU) take a new text condition
    in place and give what a fresh decode gives, padding masks included."""
    from nar.graphs import GraphedDecode
    from nar.decode import generate
    model = make_model("nar", grid=4, text_prefix=L, caption_dim=D)
    schedule = make_schedule("nar", 4)
    sampling = SamplingConfig(cfg_scale=2.0, top_k=0, seed=9)
    reused = GraphedDecode(model, schedule, 2, sampling, use_graphs=False)
    for cond in (prompts(lengths=(2, 5), seed=1), prompts(lengths=(4, 1), seed=2)):
        assert torch.equal(reused(cond), generate(model, schedule, cond, sampling))
