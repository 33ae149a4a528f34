"""nar/sampling.py directly: CFG combine, top-k, top-p, temperature and the counter-based seeding."""
import pytest
import torch

from nar.sampling import cfg_combine, filter_logits, sample, uniform_noise


def test_cfg_combine_is_uncond_plus_scale_times_the_difference():
    cond, uncond = torch.tensor([[[2.0, 0.0, -1.0]]]), torch.tensor([[[1.0, 1.0, 1.0]]])
    both = torch.cat([cond, uncond])
    assert torch.equal(cfg_combine(both, 1.0), cond)            # scale 1: the conditional logits
    assert torch.equal(cfg_combine(both, 0.0), uncond)          # scale 0: the unconditional ones
    assert torch.allclose(cfg_combine(both, 4.0), uncond + 4.0 * (cond - uncond))


def test_top_k_keeps_the_k_best():
    logits = torch.tensor([[[0.5, 3.0, -1.0, 2.0, 1.0]]])
    kept = filter_logits(logits, top_k=2)
    assert torch.isfinite(kept).flatten().tolist() == [False, True, False, True, False]
    assert torch.equal(filter_logits(logits, top_k=0), logits)  # 0 = off
    assert torch.equal(filter_logits(logits, top_k=5), logits)  # k >= vocab = off


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().view(1, 1, 4)
    keep = lambda p: torch.isfinite(filter_logits(logits, top_p=p)).flatten().tolist()  # noqa: E731
    assert keep(0.5) == [True, False, False, False]        # 0.5 alone reaches 0.5
    assert keep(0.6) == [True, True, False, False]         # 0.5 + 0.3
    assert keep(0.9) == [True, True, True, False]          # 0.95 >= 0.9
    assert keep(0.01) == [True, False, False, False]       # the best token always stays
    shuffled = logits[..., [2, 0, 3, 1]]                   # the rule follows probability, not index
    assert torch.isfinite(filter_logits(shuffled, top_p=0.6)).flatten().tolist() == [False, True, False, True]


def test_temperature_sharpens_and_flattens():
    logits = torch.tensor([[[1.0, 0.0]]]).expand(1, 4000, 2)
    positions = torch.arange(4000)
    seeds = torch.tensor([7])
    share = lambda t: (sample(logits, seeds, positions, temperature=t) == 0).float().mean().item()  # noqa: E731
    expected = lambda t: torch.softmax(torch.tensor([1.0, 0.0]) / t, 0)[0].item()  # noqa: E731
    for t in (0.25, 1.0, 4.0):
        assert share(t) == pytest.approx(expected(t), abs=0.03)
    assert share(0.25) > share(1.0) > share(4.0)


def test_sampling_is_a_pure_function_of_seed_and_position():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 50)
    positions = torch.tensor([3, 9, 10, 17, 40])
    seeds = torch.tensor([11, 12, 13])
    batch = sample(logits, seeds, positions)
    # image i of a batch seeded s equals a single image seeded s + i, whatever else is in the batch
    for i in range(3):
        alone = sample(logits[i:i + 1], seeds[i:i + 1], positions)
        assert torch.equal(alone, batch[i:i + 1])
    assert torch.equal(sample(logits, seeds, positions), batch)               # repeatable
    assert not torch.equal(sample(logits, seeds + 100, positions), batch)     # another seed, other tokens
    noise = uniform_noise(seeds, positions, 50)
    assert noise.shape == (3, 5, 50) and 0 < noise.min() and noise.max() < 1
    # a position's noise does not depend on which other positions are drawn with it
    assert torch.equal(uniform_noise(seeds, positions[2:3], 50), noise[:, 2:3])


def test_sampling_draws_only_from_the_filtered_set():
    torch.manual_seed(1)
    logits = torch.randn(2, 64, 20)
    tokens = sample(logits, torch.tensor([0, 1]), torch.arange(64), top_k=3)
    top3 = logits.topk(3, dim=-1).indices
    assert (tokens[..., None] == top3).any(-1).all()


@pytest.mark.parametrize("vocab", [1024, 37])
def test_a_decode_wide_noise_table_draws_exactly_the_per_front_noise(vocab, monkeypatch):
    import nar.sampling as sampling
    from nar.sampling import gumbel_noise, noise_table
    torch.manual_seed(2)
    seeds = torch.tensor([5, 6, 2 ** 40 + 3])
    table = noise_table(seeds, 64, vocab)
    assert table.shape == (3, 64, vocab) and table.dtype == torch.float64
    for front in (torch.tensor([0]), torch.tensor([9, 16, 23, 30]), torch.arange(40, 64)):
        assert torch.equal(table[:, front], gumbel_noise(seeds, front, vocab))
        logits = torch.randn(3, len(front), vocab) * 3
        for kwargs in (dict(), dict(temperature=0.7, top_k=5), dict(top_p=0.8)):
            assert torch.equal(sample(logits, seeds, front, table=table, **kwargs), sample(logits, seeds, front, **kwargs))
    assert not torch.equal(noise_table(seeds + 1, 64, vocab), table)
    monkeypatch.setattr(sampling, "NOISE_TABLE_MAX_BYTES", 3 * 64 * vocab * 8 - 1)   # one byte short: no table
    assert noise_table(seeds, 64, vocab) is None
