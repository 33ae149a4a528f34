"""Classifier-free guidance, logit filtering and seeded sampling.

Sampling is Gumbel-max with counter-based noise: the noise for (seed, grid position, vocab
entry) is a hash of those integers. So a token depends only on its logits and (seed,
position), and no random-generator state has to be carried between steps or devices. Image i
of a batch seeded s is sampled with seed s + i; it equals a single image seeded s + i when the
logits do not depend on the batch, which holds in fp32 on the CPU (tests/test_decode.py,
tests/test_precision.py). In bf16 kernels round differently with the batch's row count (bundled
NAR model on the CPU, CFG 4: image 1 of a batch of 4 seeded 5 and a single image seeded 6 differ
in 41 of 256 tokens, 0 in fp32); expect the same on GPUs.
"""
from __future__ import annotations

from typing import Optional

import torch

_MASK32 = 0xFFFFFFFF


def cfg_combine(logits: torch.Tensor, scale: float) -> torch.Tensor:
    """Logits of a doubled batch [cond; uncond] -> u + s (c - u)."""
    cond, uncond = logits.chunk(2, dim=0)
    return uncond + scale * (cond - uncond)


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set logits outside the top-k / nucleus (top-p) to -inf; the best token always stays."""
    vocab = logits.shape[-1]
    if 0 < top_k < vocab:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop_sorted = cum - sorted_logits.softmax(-1) >= top_p  # mass before this token already >= p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """murmur3's 32-bit finaliser on int64 tensors holding values in [0, 2**32)."""
    x = x ^ (x >> 16)
    x = (x * 0x85EBCA6B) & _MASK32
    x = x ^ (x >> 13)
    x = (x * 0xC2B2AE35) & _MASK32
    return x ^ (x >> 16)


def uniform_noise(seeds: torch.Tensor, positions: torch.Tensor, vocab: int) -> torch.Tensor:
    """Uniform (0, 1) noise [B, Q, vocab], a pure function of (seed, position, vocab index)."""
    device = positions.device
    s = _mix32((seeds.to(device).long() & _MASK32) ^ ((seeds.to(device).long() >> 32) & _MASK32))
    h = _mix32((s[:, None] * 0x9E3779B1 + positions.long()[None, :]) & _MASK32)
    v = torch.arange(vocab, device=device, dtype=torch.long)
    bits = _mix32((h[:, :, None] * 0x27D4EB2F + v) & _MASK32)
    return (bits.double() + 0.5) / 2 ** 32


def gumbel_noise(seeds: torch.Tensor, positions: torch.Tensor, vocab: int) -> torch.Tensor:
    """Gumbel noise -log(-log(u)) [B, Q, vocab] in float64 for these seeds and grid positions."""
    return -torch.log(-torch.log(uniform_noise(seeds, positions, vocab)))


# The Gumbel noise of a whole decode is drawn at its first step when it is at most this big
# (a 16 x 16 grid over 1024 codes: 2 MiB per image), so a step only gathers its front's rows.
NOISE_TABLE_MAX_BYTES = 64 << 20


def noise_table(seeds: torch.Tensor, num_positions: int, vocab: int) -> Optional[torch.Tensor]:
    """[B, num_positions, vocab] Gumbel noise of every grid position, or None where it is too
    big or not on a CPU (a GPU computes each front's noise inside its CUDA graph instead). The
    noise is element-wise in (seed, position, code), so a table row is bit for bit what
    gumbel_noise gives that position alone."""
    if seeds.device.type != "cpu" or seeds.numel() * num_positions * vocab * 8 > NOISE_TABLE_MAX_BYTES:
        return None
    return gumbel_noise(seeds, torch.arange(num_positions, device=seeds.device), vocab)


def sample(logits: torch.Tensor, seeds: torch.Tensor, positions: torch.Tensor,
           temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, with_probability: bool = False,
           table: Optional[torch.Tensor] = None):
    """Draw one token per position from softmax(logits / temperature) after filtering.

    logits [B, Q, V]; seeds [B] (one per image); positions [Q] grid positions (raster index).
    table: these seeds' `noise_table`, if there is one (the same draw, fewer small operations).
    With `with_probability`, returns (tokens, probability of each drawn token [B, Q]) instead:
    how sure the model was (the distribution it was drawn from, so it does not change the draw).
    """
    logits = logits.float()
    if temperature != 1.0:   # x / 1.0 is x: skip the copy
        logits = logits / temperature
    logits = filter_logits(logits, top_k, top_p)
    gumbel = table[:, positions] if table is not None else gumbel_noise(seeds, positions, logits.shape[-1])
    tokens = (logits.double() + gumbel).argmax(dim=-1)
    if not with_probability:
        return tokens
    # p(token) = exp(l_token - logsumexp(l)): one reduction over the vocabulary, no softmax tensor
    probability = (logits.gather(-1, tokens[..., None])[..., 0] - logits.logsumexp(-1)).exp()
    return tokens, probability
