"""Retrieval accuracy: does a query (a prompt's text embedding, or a generated image's features)
pick out its emoji among others, scored against each emoji's real images?

For every query its own emoji and n_way - 1 other emojis drawn at random (seeded) are the
candidates; each candidate is the MEAN feature of that emoji's gallery images and is scored by
cosine similarity. Chance is k / n_way for top-k (0.01 / 0.05 at 100-way). Ties count against
the query, so a feature space that says nothing scores 0, never 1.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def _tensor(x, dtype) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).to(dtype)


def emoji_means(features: torch.Tensor, emoji: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(distinct emoji ids [E], mean feature of each [E, D])."""
    ids, inverse = torch.unique(emoji, return_inverse=True)
    sums = torch.zeros(len(ids), features.shape[1], dtype=features.dtype).index_add_(0, inverse, features)
    counts = torch.bincount(inverse, minlength=len(ids)).to(features.dtype)
    return ids, sums / counts[:, None]


def retrieval_accuracy(query_features, query_emoji, gallery_features, gallery_emoji, n_way: int = 100,
                       ks: Sequence[int] = (1, 5), seed: int = 0) -> dict[str, float]:
    """{"top1": ..., "top5": ...} (one key per k in ks) over the queries [Q, D] with emoji ids [Q],
    against gallery features [G, D] with emoji ids [G]."""
    q = _tensor(query_features, torch.float64)
    q_emoji = _tensor(query_emoji, torch.int64)
    g = _tensor(gallery_features, torch.float64)
    g_emoji = _tensor(gallery_emoji, torch.int64)
    if q.dim() != 2 or g.dim() != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"features must be [Q, D] and [G, D], got {tuple(q.shape)} and {tuple(g.shape)}")
    if len(q) != len(q_emoji) or len(g) != len(g_emoji) or len(q) == 0:
        raise ValueError("each query and gallery feature needs one emoji id, and there must be queries")
    ids, means = emoji_means(g, g_emoji)
    if len(ids) < n_way:
        raise ValueError(f"{n_way}-way retrieval needs {n_way} emojis in the gallery, it has {len(ids)}")
    true = torch.searchsorted(ids, q_emoji)
    if bool((true >= len(ids)).any()) or not torch.equal(ids[true.clamp_max(len(ids) - 1)], q_emoji):
        raise ValueError("every query's emoji must have images in the gallery")
    sims = F.normalize(q, dim=1) @ F.normalize(means, dim=1).T            # [Q, E]
    gen = torch.Generator().manual_seed(seed)
    # n_way - 1 distinct others per query: a random subset of the E - 1 other emojis
    others = torch.rand(len(q), len(ids) - 1, generator=gen).topk(n_way - 1, dim=1).indices
    others = others + (others >= true[:, None]).long()                  # skip the query's own emoji
    true_score = sims.gather(1, true[:, None])
    rank = (sims.gather(1, others) >= true_score).sum(1)
    return {f"top{k}": float((rank < k).double().mean()) for k in ks}
