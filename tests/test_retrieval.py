"""nar.retrieval: perfect features score 1, random ones chance, a blind space 0."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nar.retrieval import retrieval_accuracy


def _gallery(n_emoji=300, per=3, dim=32, noise=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_emoji, dim, generator=g)
    emoji = torch.arange(n_emoji).repeat_interleave(per) * 7 + 5       # ids need not be 0..E-1
    feats = centres.repeat_interleave(per, 0) + noise * torch.randn(n_emoji * per, dim, generator=g)
    return centres, emoji, feats


def test_perfect_feature_space_scores_one():
    centres, emoji, feats = _gallery()
    out = retrieval_accuracy(centres, torch.arange(300) * 7 + 5, feats, emoji, n_way=100, seed=0)
    assert out == {"top1": 1.0, "top5": 1.0}


def test_random_features_score_near_chance():
    _, emoji, feats = _gallery(n_emoji=400)
    queries = torch.randn(4000, 32, generator=torch.Generator().manual_seed(9))
    q_emoji = (torch.arange(4000) % 400) * 7 + 5
    out = retrieval_accuracy(queries, q_emoji, feats, emoji, n_way=100, ks=(1, 5, 10), seed=1)
    assert abs(out["top1"] - 0.01) < 0.006 and abs(out["top5"] - 0.05) < 0.015
    assert abs(out["top10"] - 0.10) < 0.02


def test_a_blind_feature_space_scores_zero_and_noise_lowers_the_score():
    _, emoji, feats = _gallery()
    constant = torch.ones(300, 32)
    assert retrieval_accuracy(constant, torch.arange(300) * 7 + 5, torch.ones_like(feats), emoji)["top5"] == 0.0
    centres, emoji, feats = _gallery()
    noisy = centres + 1.5 * torch.randn(centres.shape, generator=torch.Generator().manual_seed(2))
    out = retrieval_accuracy(noisy, torch.arange(300) * 7 + 5, feats, emoji)
    assert 0.05 < out["top1"] < 0.9 and out["top5"] > out["top1"]


def test_seeded_and_accepts_numpy():
    centres, emoji, feats = _gallery()
    noisy = (centres + 1.5 * torch.randn(centres.shape, generator=torch.Generator().manual_seed(2))).numpy()
    args = (noisy, np.arange(300) * 7 + 5, feats.numpy(), emoji.numpy())
    assert retrieval_accuracy(*args, seed=4) == retrieval_accuracy(*args, seed=4)
    assert retrieval_accuracy(*args, seed=4) != retrieval_accuracy(*args, seed=5)


def test_bad_inputs_are_refused():
    centres, emoji, feats = _gallery(n_emoji=50)
    with pytest.raises(ValueError, match="needs 100 emojis"):
        retrieval_accuracy(centres, torch.arange(50) * 7 + 5, feats, emoji)
    with pytest.raises(ValueError, match="must have images"):
        retrieval_accuracy(centres[:2], torch.tensor([5, 6]), feats, emoji, n_way=10)
    with pytest.raises(ValueError, match="features must be"):
        retrieval_accuracy(centres[:, :3], torch.arange(50) * 7 + 5, feats, emoji, n_way=10)
