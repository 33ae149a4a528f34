"""The conditional transformer (LlamaGen's GPT) in its two kinds: NAR and raster.

Parameter names follow the official NAR / LlamaGen checkpoints (tok_embeddings,
layers.{i}.attention.wqkv, ..., norm, output, medusa_norm, medusa_output) so their state dicts
load unchanged.

The sequence is always [condition prefix, grid tokens in raster order]: L = cls_token_num
prefix positions (one class token, or L text-feature tokens; nar/conditions.py), then grid token
(t, h, w) of a T x n x n grid (images are T = 1) at position L + (t * n + h) * n + w. Only the
attention mask encodes the decoding order: `may_attend(kind, shape, L)` is the proximity mask
for NAR and the causal mask for raster, over the grid; the prefix is causal in itself and seen
by every grid token, as in the official code. KV caches live outside the model
(see `KVCache`), so one model can serve several decodes at once.

NAR's dimension-oriented heads, one per axis, each stacked after the previous one as in the
official code: "right" (next column, w) is the backbone's own norm + output; "below" (next row,
h) is `extra_blocks` more blocks + medusa_norm + medusa_output; for video, "frame" (next frame,
t) is `extra_blocks` more blocks after those + frame_norm + frame_output.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .conditions import ClassCondition, Condition, TextCondition, as_condition, condition_kind
from .config import ModelConfig


def find_multiple(n: int, k: int) -> int:
    return n if n % k == 0 else n + k - (n % k)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:   # one fused op, bit for bit the formula below (tests/test_model.py)
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        xf = x.float()
        out = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return out.type_as(x) * self.weight


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        hidden = int(2 * 4 * cfg.dim / 3)
        if cfg.ffn_dim_multiplier is not None:
            hidden = int(cfg.ffn_dim_multiplier * hidden)
        hidden = find_multiple(hidden, cfg.multiple_of)
        self.w1 = nn.Linear(cfg.dim, hidden, bias=False)
        self.w3 = nn.Linear(cfg.dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, cfg.dim, bias=False)
        self.ffn_dropout = nn.Dropout(cfg.ffn_dropout_p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.w2(F.silu(self.w1(x)) * self.w3(x))
        return self.ffn_dropout(out) if self.training else out   # a decode step skips the no-op call


class KVCache:
    """Keys and values of one attention layer for a whole decode: [B, n_kv_head, length, head_dim].

    Entries are written in place at explicit slots. A step reads only the prefix [0, key_len)
    (the decoder fills slots in feeding order), and the attention mask decides which of those
    slots each query may read, so unwritten slots are never attended.
    """

    def __init__(self, batch: int, n_kv_head: int, length: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device):
        shape = (batch, n_kv_head, length, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)

    def update(self, start: int, k: torch.Tensor, v: torch.Tensor, key_len: int):
        """Write k, v [B, n_kv_head, T, head_dim] at slots [start, start + T) and return the keys
        and values of slots [0, key_len). A plan's slots are consecutive (nar/decode.py), so this
        is a slice copy: no index tensor, no host read, the same on a CPU, a GPU or in a graph."""
        self.k[:, :, start:start + k.shape[2]].copy_(k)
        self.v[:, :, start:start + v.shape[2]].copy_(v)
        return self.k[:, :, :key_len], self.v[:, :, :key_len]


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.n_kv_head = cfg.n_kv_head or cfg.n_head
        self.head_dim = cfg.head_dim
        self.dim = cfg.dim
        kv_dim = self.n_kv_head * self.head_dim
        self.wqkv = nn.Linear(cfg.dim, cfg.dim + 2 * kv_dim, bias=False)
        self.wo = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.attn_dropout_p = cfg.attn_dropout_p
        self.resid_dropout = nn.Dropout(cfg.resid_dropout_p)

    def forward(self, x: torch.Tensor, rope: torch.Tensor, mask: Optional[torch.Tensor],
                cache: Optional[KVCache] = None, slot_start: Optional[int] = None,
                key_len: Optional[int] = None):
        bsz, seqlen, _ = x.shape
        kv_dim = self.n_kv_head * self.head_dim
        qk, v = self.wqkv(x).split([self.dim + kv_dim, kv_dim], dim=-1)
        # queries and keys rotated together: one RoPE instead of two
        qk = apply_rope(qk.view(bsz, seqlen, self.n_head + self.n_kv_head, self.head_dim), rope)
        q, k = (t.transpose(1, 2) for t in qk.split([self.n_head, self.n_kv_head], dim=2))
        v = v.view(bsz, seqlen, self.n_kv_head, self.head_dim).transpose(1, 2)
        if cache is not None:
            k, v = cache.update(slot_start, k, v, key_len)
        if self.n_kv_head != self.n_head:
            k = k.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
            v = v.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.attn_dropout_p if self.training else 0.0)
        out = self.wo(out.transpose(1, 2).reshape(bsz, seqlen, self.dim))
        return self.resid_dropout(out) if self.training else out


class TransformerBlock(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attention = Attention(cfg)
        self.feed_forward = FeedForward(cfg)
        self.attention_norm = RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.ffn_norm = RMSNorm(cfg.dim, eps=cfg.norm_eps)

    def forward(self, x, rope, mask, cache=None, slot_start=None, key_len=None):
        h = x + self.attention(self.attention_norm(x), rope, mask, cache, slot_start, key_len)
        return h + self.feed_forward(self.ffn_norm(h))


class LabelEmbedder(nn.Module):
    """Class embedding with one extra row, the null class used for classifier-free guidance."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, dim)
        self.num_classes = num_classes

    def forward(self, condition: ClassCondition, drop_prob: float = 0.0) -> tuple[torch.Tensor, None]:
        """([B, 1, dim], no key mask); labels dropped to the null class with drop_prob."""
        labels = condition.class_ids
        if drop_prob > 0:
            drop = torch.rand(labels.shape[0], device=labels.device) < drop_prob
            labels = torch.where(drop, torch.full_like(labels, self.num_classes), labels)
        return self.embedding_table(labels).unsqueeze(1), None

    def null(self, condition: ClassCondition) -> ClassCondition:
        return ClassCondition(torch.full_like(condition.class_ids, self.num_classes))


class MLP(nn.Module):
    """LlamaGen's caption projection: fc1, tanh-GELU, fc2, no biases (official key names)."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features, bias=False)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden_features, out_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class CaptionEmbedder(nn.Module):
    """Text features [B, L, caption_dim] -> prefix embeddings [B, L, dim], as LlamaGen / NAR t2i.

    The unconditional caption (CFG's second half, and captions dropped in training) is a fixed
    random [L, caption_dim] table saved with the weights (a buffer, as in the official code),
    used with the same key mask as the prompt it replaces."""

    def __init__(self, caption_dim: int, dim: int, token_num: int):
        super().__init__()
        self.cap_proj = MLP(caption_dim, dim, dim)
        self.register_buffer("uncond_embedding", torch.randn(token_num, caption_dim) / caption_dim ** 0.5)

    def forward(self, condition: TextCondition, drop_prob: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        features = condition.features
        if features.shape[1] != self.uncond_embedding.shape[0] or features.shape[2] != self.uncond_embedding.shape[1]:
            raise ValueError(f"text features are {tuple(features.shape[1:])}, the model takes "
                             f"{tuple(self.uncond_embedding.shape)} (prefix tokens x caption_dim)")
        if drop_prob > 0:
            drop = torch.rand(features.shape[0], device=features.device) < drop_prob
            features = torch.where(drop[:, None, None], self.uncond_embedding.to(features.dtype), features)
        return self.cap_proj(features.to(self.cap_proj.fc1.weight.dtype)), condition.mask

    def null(self, condition: TextCondition) -> TextCondition:
        batch = condition.batch
        table = self.uncond_embedding.to(condition.features.dtype)
        return TextCondition(table.expand(batch, -1, -1).contiguous(), condition.mask)


@dataclass
class Features:
    """Hidden states after block n_layer-1 (feeds the "right" head), after NAR's first extra
    blocks (the "below" head; None for raster) and after the second (the "frame" head; video
    NAR only)."""
    right: torch.Tensor
    below: Optional[torch.Tensor]
    frame: Optional[torch.Tensor] = None


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.cls_embedding = (CaptionEmbedder(cfg.caption_dim, cfg.dim, cfg.cls_token_num)
                              if cfg.condition == "text" else LabelEmbedder(cfg.num_classes, cfg.dim))
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.tok_dropout = nn.Dropout(cfg.token_dropout_p)
        self.layers = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_blocks))
        self.norm = RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.kind == "nar":
            self.medusa_norm = RMSNorm(cfg.dim, eps=cfg.norm_eps)
            self.medusa_output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if self.has_frame_head:
            self.frame_norm = RMSNorm(cfg.dim, eps=cfg.norm_eps)
            self.frame_output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        # Indexed by sequence position; not a parameter, so not saved with the weights.
        self.register_buffer("rope", rope_table(cfg.grid_shape, cfg.head_dim, cfg.rope_base, cfg.prefix_len),
                             persistent=False)
        self.register_buffer("train_mask", may_attend(cfg.kind, cfg.grid_shape, cfg.prefix_len), persistent=False)
        self.apply(self._init_weights)
        nn.init.zeros_(self.output.weight)  # as LlamaGen: start from uniform predictions
        if cfg.condition == "text":
            nn.init.zeros_(self.cls_embedding.cap_proj.fc2.weight)  # as LlamaGen's caption projection

    def _init_weights(self, module: nn.Module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    @property
    def has_below_head(self) -> bool:
        return self.config.kind == "nar"

    @property
    def has_frame_head(self) -> bool:
        return self.config.kind == "nar" and self.config.is_video

    # -- the shared trunk -------------------------------------------------------------------
    def features(self, x: torch.Tensor, seq_pos: torch.Tensor, mask: Optional[torch.Tensor],
                 caches: Optional[list[KVCache]] = None, slot_start: Optional[int] = None,
                 key_len: Optional[int] = None) -> Features:
        """Run the blocks on embeddings x [B, T, dim] at sequence positions seq_pos [T].

        mask [T, K] (or broadcastable to [B, H, T, K]) is True where a query may attend a key
        (None: every key); keys are the T inputs themselves, or with caches, cache slots
        [0, key_len) after writing the inputs at slots [slot_start, slot_start + T).
        """
        rope = rope_factors(self.rope[seq_pos])   # once per forward, not per layer
        h = self.tok_dropout(x) if self.training else x
        cfg = self.config
        taps = {}  # hidden states after the last block of each head's stack
        for i, layer in enumerate(self.layers):
            h = layer(h, rope, mask, caches[i] if caches is not None else None, slot_start, key_len)
            taps[i + 1] = h
        below_at = cfg.n_layer + cfg.extra_blocks
        return Features(right=taps[cfg.n_layer],
                        below=taps[below_at] if self.has_below_head else None,
                        frame=taps[below_at + cfg.extra_blocks] if self.has_frame_head else None)

    def logits_right(self, h: torch.Tensor) -> torch.Tensor:
        return head_logits(self.output, self.norm(h))

    def logits_below(self, h: torch.Tensor) -> torch.Tensor:
        return head_logits(self.medusa_output, self.medusa_norm(h))

    def logits_frame(self, h: torch.Tensor) -> torch.Tensor:
        return head_logits(self.frame_output, self.frame_norm(h))

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.tok_embeddings(tokens)

    def embed_condition(self, condition: Condition, drop_prob: float = 0.0
                        ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The prefix embeddings [B, L, dim] of a condition and its key mask [B, L] (None: all
        real, as for a class), conditions dropped to the null one with drop_prob."""
        if condition_kind(condition) != self.config.condition:
            raise ValueError(f"this model is conditioned on a {self.config.condition}, "
                             f"not a {condition_kind(condition)}")
        return self.cls_embedding(condition, drop_prob)

    def null_condition(self, condition: Condition) -> Condition:
        """The unconditional counterpart of a condition (CFG's second half)."""
        return self.cls_embedding.null(condition)

    def new_caches(self, batch: int, length: int, device=None, dtype=None) -> list[KVCache]:
        cfg = self.config
        weight = self.tok_embeddings.weight
        return [KVCache(batch, cfg.n_kv_head or cfg.n_head, length, cfg.head_dim,
                        dtype or weight.dtype, device or weight.device)
                for _ in range(cfg.n_blocks)]

    # -- training / full forward ------------------------------------------------------------
    def forward(self, condition: Condition | torch.Tensor, tokens: torch.Tensor,
                targets: Optional[torch.Tensor] = None):
        """Teacher-forced forward over [condition prefix, all T*n*n tokens] with the kind's
        training mask (and the prefix's padding masked out of attention).

        `condition` is a Condition or a tensor of class ids. Returns logits [B, T*n*n, vocab]
        where row p predicts grid token p (assembled from NAR's heads, shifted by one for
        raster) and the mean cross-entropy if targets are given. Conditions are dropped to the
        null one with class_dropout_prob while training.
        """
        cfg = self.config
        drop = cfg.class_dropout_prob if self.training else 0.0
        prefix, prefix_ok = self.embed_condition(as_condition(condition), drop)
        x = torch.cat([prefix, self.embed_tokens(tokens)], dim=1)
        seq_pos = torch.arange(x.shape[1], device=x.device)
        feats = self.features(x, seq_pos, with_padding(self.train_mask, prefix_ok))
        logits = self.assemble_training_logits(feats)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        return logits, loss

    def assemble_training_logits(self, feats: Features) -> torch.Tensor:
        """NAR: grid token (t, h, w) gets the mean of the right head at (t, h, w-1), the below
        head at (t, h-1, w) and the frame head at (t-1, h, w), over those that exist; (0, 0, 0)
        gets every head of the prefix's last token."""
        T, H, W = self.config.grid_shape
        L = self.config.prefix_len
        # Only rows from the prefix's last token on predict anything: [B, 1 + T*H*W, V].
        R = self.logits_right(feats.right[:, L - 1:])
        if not self.has_below_head:
            return R[:, :-1]  # output at sequence position L-1+p predicts grid token p
        heads = [(R, 3), (self.logits_below(feats.below[:, L - 1:]), 2)]  # (logits, grid axis it steps)
        if feats.frame is not None:
            heads.append((self.logits_frame(feats.frame[:, L - 1:]), 1))
        bsz, _, vocab = R.shape
        total = torch.zeros(bsz, T, H, W, vocab, dtype=R.dtype, device=R.device)
        count = torch.zeros(T, H, W, 1, dtype=R.dtype, device=R.device)
        for logits, axis in heads:
            grid = logits[:, 1:].reshape(bsz, T, H, W, vocab)
            src = [slice(None)] * 5
            dst = [slice(None)] * 5
            src[axis], dst[axis] = slice(None, -1), slice(1, None)   # neighbour one step back
            total[tuple(dst)] += grid[tuple(src)]
            count[tuple(dst[1:])] += 1
            total[:, 0, 0, 0] += logits[:, 0]
            count[0, 0, 0] += 1
        return (total / count).reshape(bsz, T * H * W, vocab)


def head_logits(proj: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """A head's logits in fp32, never rounded to a bf16 model's dtype: CFG amplifies that rounding
    (scripts/heads_kl.py: it doubles KL(fp32 || bf16) of the guided distribution). On a GPU the
    bf16 weights and inputs go through one bf16 x bf16 -> fp32 matmul (no extra weight memory)."""
    if x.dtype == torch.float32:
        return proj(x).float()   # .float(): under autocast the projection returns bf16
    if x.is_cuda and not torch.is_grad_enabled() and _fp32_out_matmul(x.device):   # decoding
        return torch.mm(x.reshape(-1, x.shape[-1]), proj.weight.t(), out_dtype=torch.float32).view(*x.shape[:-1], -1)
    return F.linear(x.float(), proj.weight.float())   # the same product by upcasting (CPU: no such kernel)


@lru_cache(maxsize=None)
def _fp32_out_matmul(device: torch.device) -> bool:
    """Whether this GPU's torch has the bf16 -> fp32 matmul (probed once, before any graph capture)."""
    a = torch.ones(2, 8, dtype=torch.bfloat16, device=device)
    try:
        return torch.mm(a, a.t(), out_dtype=torch.float32).dtype == torch.float32
    except (RuntimeError, TypeError, NotImplementedError):
        return False


# -- masks ----------------------------------------------------------------------------------
def grid_coords(shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(t, h, w) of each grid position of a T x H x W grid, in raster order."""
    T, H, W = shape
    idx = torch.arange(T * H * W)
    return idx // (H * W), idx // W % H, idx % W


def plane_index(shape: tuple[int, int, int]) -> torch.Tensor:
    """The NAR plane t + h + w of each grid position (h + w for images), in raster order."""
    t, h, w = grid_coords(shape)
    return t + h + w


def may_attend(kind: str, shape: tuple[int, int, int], prefix_len: int = 1) -> torch.Tensor:
    """[L+N, L+N] bool: may sequence position q attend sequence position k under the kind's
    training order, on a T x H x W grid after L = prefix_len condition tokens? Raster: k <= q.
    NAR (proximity): the prefix is causal in itself and every grid token attends all of it;
    a grid token on plane c attends all grid tokens on planes <= c, its own included."""
    L = prefix_len
    n_seq = L + shape[0] * shape[1] * shape[2]
    allowed = torch.ones(n_seq, n_seq, dtype=torch.bool).tril()
    if kind == "raster":
        return allowed
    if kind != "nar":
        raise ValueError(f"unknown model kind {kind!r}")
    plane = plane_index(shape)
    allowed[L:, L:] = plane[None, :] <= plane[:, None]
    return allowed


def with_padding(mask: torch.Tensor, prefix_ok: Optional[torch.Tensor]) -> torch.Tensor:
    """The attention mask [S, K] with each sequence's prefix padding masked out of the keys:
    [B, 1, S, K] (None for prefix_ok: no padding, the mask as it is). Every position may still
    attend itself (the official t2i rule), so a padding query's row is never empty."""
    if prefix_ok is None:
        return mask
    S, K = mask.shape
    keys_ok = torch.ones(prefix_ok.shape[0], K, dtype=torch.bool, device=mask.device)
    keys_ok[:, :prefix_ok.shape[1]] = prefix_ok
    own = torch.eye(S, K, dtype=torch.bool, device=mask.device)
    return ((mask[None] & keys_ok[:, None, :]) | own)[:, None]


# -- rotary position embedding over (t,) h, w -----------------------------------------------
def rope_table(shape: tuple[int, int, int], head_dim: int, base: float = 10000.0,
               prefix_len: int = 1) -> torch.Tensor:
    """[L + T*H*W, head_dim // 2, 2] (cos, sin) per sequence position (L = prefix_len).

    Images (T = 1): half of the rotated pairs turn with the row index, half with the column
    index. Video: the lowest-frequency quarter of each of those halves (pairs that turn by
    under 0.05 rad across a 16-token side, so carry almost nothing spatially) turns with the
    frame index instead, at the highest frequencies; every other pair keeps its image angle,
    so a video model starts close to the image model it is initialised from. The prefix
    rows (the class token, or the text tokens) are all zeros, exactly as in the official code
    (it zeroes their queries and keys, which official checkpoints were trained with).
    """
    half = head_dim // 2
    per_axis = half // 2
    freqs = 1.0 / (base ** (torch.arange(0, half, 2)[:per_axis].float() / half))
    t, h, w = (c.float()[:, None] for c in grid_coords(shape))
    by_row, by_col = h * freqs, w * freqs                               # [N, per_axis]
    if shape[0] > 1:
        k = max(1, per_axis // 4)
        by_frame = t * freqs[:2 * k]
        by_row = torch.cat([by_row[:, :per_axis - k], by_frame[:, :k]], dim=-1)
        by_col = torch.cat([by_col[:, :per_axis - k], by_frame[:, k:]], dim=-1)
    angles = torch.cat([by_row, by_col], dim=-1)                        # [N, half]
    table = torch.stack([angles.cos(), angles.sin()], dim=-1)
    return torch.cat([torch.zeros(prefix_len, half, 2), table])


def rope_factors(rope: torch.Tensor) -> torch.Tensor:
    """Table rows [T, D/2, 2] (cos, sin) -> [2, 1, T, 1, D]: each element's cos, and its sin with
    the sign of its place in the pair (-sin for x0, +sin for x1), for `apply_rope`."""
    cos, sin = rope.unbind(-1)
    factors = torch.stack([torch.stack([cos, cos], dim=-1), torch.stack([-sin, sin], dim=-1)])
    return factors.flatten(-2)[:, None, :, None, :]


def apply_rope(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """x [B, T, H, D], rope [T, D/2, 2] table rows or their `rope_factors`: rotate adjacent pairs
    (x0, x1) by each angle, to (x0 cos - x1 sin, x1 cos + x0 sin). As x * cos + swapped(x) * signed
    sin that is three element-wise ops, bit for bit the pairwise formula (no product is fused)."""
    if rope.dim() == 3:
        rope = rope_factors(rope)
    xf = x.float()
    swapped = xf.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)     # (x1, x0) in every pair
    return (xf * rope[0] + swapped * rope[1]).type_as(x)
