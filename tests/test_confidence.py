"""The confidence record (StepRecord.confidence): the probability of each sampled token under the
distribution it was drawn from, recorded without changing what is drawn."""
import pytest
import torch

from nar.config import SamplingConfig
from nar.decode import decode_steps
from nar.schedules import make_schedule


@pytest.mark.parametrize("kind,order,window", [("nar", "nar", 0), ("raster", "raster", 0), ("raster", "zipar", 2)])
@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 10, 1.0), (1.3, 0, 0.8)])
def test_confidence_is_the_sampled_tokens_probability(make_model, kind, order, window, temperature, top_k, top_p):
    model = make_model(kind, grid=4)
    schedule = make_schedule(order, 4, window=window)
    sampling = SamplingConfig(cfg_scale=2.0, temperature=temperature, top_k=top_k, top_p=top_p, seed=5)
    classes = torch.tensor([1, 3])
    with_conf = [(r.tokens.clone(), r.logits.clone(), r.confidence.clone())
                 for r in decode_steps(model, schedule, classes, sampling, record_logits=True, record_confidence=True)]
    plain = [r.tokens.clone() for r in decode_steps(model, schedule, classes, sampling)]
    assert len(with_conf) == len(plain) == len(schedule)
    for (tokens, logits, confidence), tokens_plain in zip(with_conf, plain):
        assert torch.equal(tokens, tokens_plain)               # recording does not change the draw
        # computed independently: sort, cut top-k and the nucleus by hand, softmax, read the token
        scaled = logits.double() / temperature
        order_ = scaled.argsort(-1, descending=True)
        ranked = scaled.gather(-1, order_)
        keep = torch.ones_like(ranked, dtype=torch.bool)
        if top_k:
            keep[..., top_k:] = False
        if top_p < 1.0:
            before = ranked.masked_fill(~keep, float("-inf")).softmax(-1).cumsum(-1) \
                - ranked.masked_fill(~keep, float("-inf")).softmax(-1)
            keep &= before < top_p
        probs_ranked = ranked.masked_fill(~keep, float("-inf")).softmax(-1)
        probs = torch.zeros_like(probs_ranked).scatter(-1, order_, probs_ranked)
        expected = probs.gather(-1, tokens[..., None])[..., 0]
        assert (expected > 0).all()                             # a drawn token was never filtered out
        torch.testing.assert_close(confidence.double(), expected, atol=1e-5, rtol=1e-4)
