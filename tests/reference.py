"""A slow, obviously correct decoder to check the fast one against.

No KV cache, no compiled plan: for every step it runs full forwards over the whole sequence
with a dense mask written out from first principles, then applies the head rule per target.
It is teacher-forced with the tokens the fast decoder sampled, so the two can be compared
logit for logit at every step. Grids are T x n x n (images: T = 1), after a condition prefix of
L tokens (a class: L = 1; a text prompt: L tokens, left-padded, padding masked out of the keys).
"""
from __future__ import annotations

import torch

from nar.conditions import ClassCondition, TextCondition, as_condition
from nar.model import Transformer
from nar.schedules import Schedule, stand_in_position


def coords(n: int, p: int) -> tuple[int, int, int]:
    """(t, h, w) of raster position p in a grid of n x n frames."""
    return p // (n * n), (p // n) % n, p % n


def allowed(kind: str, n: int, q: int, k: int, L: int = 1) -> bool:
    """May sequence position q attend sequence position k in the model's training order?
    Positions below L are the prefix."""
    if kind == "raster" or k < L:
        return k <= q                       # causal; the prefix is seen by every grid token
    if q < L:
        return False
    return sum(coords(n, k - L)) <= sum(coords(n, q - L))   # plane t + h + w


def head_rule(kind: str, n: int, p: int, frames: int = 1, L: int = 1) -> list[tuple[int, str]]:
    t, h, w = coords(n, p)
    if kind == "raster":
        return [(L - 1 + p, "right")]       # grid token p - 1, or the prefix's last token
    if (t, h, w) == (0, 0, 0):
        return [(L - 1, "right"), (L - 1, "below")] + ([(L - 1, "frame")] if frames > 1 else [])
    preds = []
    if w > 0:
        preds.append((L + (t * n + h) * n + (w - 1), "right"))
    if h > 0:
        preds.append((L + (t * n + h - 1) * n + w, "below"))
    if t > 0:
        preds.append((L + ((t - 1) * n + h) * n + w, "frame"))
    return preds


def prefix_rows(model: Transformer, condition, guided: bool):
    """The prefix embeddings [B', L, dim] and key validity [B', L] (condition, then null)."""
    condition = as_condition(condition)
    if isinstance(condition, ClassCondition):
        labels = condition.class_ids
        if guided:
            labels = torch.cat([labels, torch.full_like(labels, model.config.num_classes)])
        x = model.cls_embedding.embedding_table(labels)[:, None]
        return x, torch.ones(x.shape[0], 1, dtype=torch.bool)
    assert isinstance(condition, TextCondition)
    features, mask = condition.features, condition.mask
    if guided:
        null = model.cls_embedding.uncond_embedding.expand_as(features)
        features, mask = torch.cat([features, null]), torch.cat([mask, mask])
    return model.cls_embedding.cap_proj(features), mask


@torch.no_grad()
def reference_step_logits(model: Transformer, schedule: Schedule, condition,
                          grid: torch.Tensor, cfg_scale: float = 1.0,
                          cfg_interval: int = -1) -> list[torch.Tensor]:
    """Logits [B, Q_t, V] the decoder should have sampled step t's targets from. `condition`
    is a tensor of class ids or a Condition."""
    kind, n = model.config.kind, schedule.grid_size
    L = model.config.cls_token_num
    N = schedule.num_tokens
    S = L + N
    step_of = schedule.step_of()
    fed = [0] * L + [step_of[p] + 1 for p in range(N)]  # tokens are fed the step after decoding
    guided = cfg_scale > 1.0
    prefix, prefix_ok = prefix_rows(model, condition, guided)
    tokens = grid.repeat(2, 1) if guided else grid
    x = torch.cat([prefix, model.embed_tokens(tokens)], dim=1)
    key_ok = torch.cat([prefix_ok, torch.ones(x.shape[0], N, dtype=torch.bool)], dim=1)  # [B', S]
    order_mask = torch.tensor([[allowed(kind, n, q, k, L) and fed[k] <= fed[q] for k in range(S)]
                               for q in range(S)])
    own = torch.eye(S, dtype=torch.bool)
    base_mask = (order_mask[None] & key_ok[:, None, :]) | own                 # [B', S, S]
    full = model.features(x, torch.arange(S), base_mask[:, None])

    def hidden(q: int, t: int, head: str) -> torch.Tensor:
        if fed[q] == t:
            feats = full
            index = q
        else:
            # A probe: an extra query at position q that sees the context of step t.
            src = q - L if step_of[q - L] < t else stand_in_position(schedule, q - L, t)
            probe = model.embed_tokens(tokens[:, src:src + 1])
            mask = torch.zeros(x.shape[0], S + 1, S + 1, dtype=torch.bool)
            mask[:, :S, :S] = base_mask
            mask[:, -1, :S] = torch.tensor(
                [allowed(kind, n, q, k, L) and fed[k] <= t and k != q for k in range(S)]) & key_ok
            mask[:, -1, -1] = True
            feats = model.features(torch.cat([x, probe], dim=1),
                                   torch.cat([torch.arange(S), torch.tensor([q])]), mask[:, None])
            index = S
        h = getattr(feats, head)
        head_fn = {"right": model.logits_right, "below": model.logits_below,
                   "frame": model.logits_frame}[head]
        return head_fn(h[:, index])

    out, decoded = [], 0
    for t, targets in enumerate(schedule.steps):
        per_target = []
        for p in targets:
            preds = head_rule(kind, n, p, schedule.frames, L)
            per_target.append(sum(hidden(q, t, head) for q, head in preds) / len(preds))
        logits = torch.stack(per_target, dim=1)
        if guided:
            cond, uncond = logits.chunk(2)
            use = cfg_interval < 0 or decoded <= cfg_interval
            logits = uncond + cfg_scale * (cond - uncond) if use else cond
        out.append(logits)
        decoded += len(targets)
    return out
