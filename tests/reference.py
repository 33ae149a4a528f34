"""A slow, obviously correct decoder to check the fast one against.

No KV cache, no compiled plan: for every step it runs full forwards over the whole sequence
with a dense mask written out from first principles, then applies the head rule per target.
It is teacher-forced with the tokens the fast decoder sampled, so the two can be compared
logit for logit at every step. Grids are T x n x n (images: T = 1).
"""
from __future__ import annotations

import torch

from nar.model import Transformer
from nar.schedules import Schedule, stand_in_position


def coords(n: int, p: int) -> tuple[int, int, int]:
    """(t, h, w) of raster position p in a grid of n x n frames."""
    return p // (n * n), (p // n) % n, p % n


def allowed(kind: str, n: int, q: int, k: int) -> bool:
    """May sequence position q attend sequence position k in the model's training order?"""
    if kind == "raster":
        return k <= q
    if k == 0:
        return True
    if q == 0:
        return False
    return sum(coords(n, k - 1)) <= sum(coords(n, q - 1))   # plane t + h + w


def head_rule(kind: str, n: int, p: int, frames: int = 1) -> list[tuple[int, str]]:
    t, h, w = coords(n, p)
    if kind == "raster":
        return [(p, "right")]               # sequence position p holds grid token p - 1
    if (t, h, w) == (0, 0, 0):
        return [(0, "right"), (0, "below")] + ([(0, "frame")] if frames > 1 else [])
    preds = []
    if w > 0:
        preds.append((1 + (t * n + h) * n + (w - 1), "right"))
    if h > 0:
        preds.append((1 + (t * n + h - 1) * n + w, "below"))
    if t > 0:
        preds.append((1 + ((t - 1) * n + h) * n + w, "frame"))
    return preds


@torch.no_grad()
def reference_step_logits(model: Transformer, schedule: Schedule, class_ids: torch.Tensor,
                          grid: torch.Tensor, cfg_scale: float = 1.0,
                          cfg_interval: int = -1) -> list[torch.Tensor]:
    """Logits [B, Q_t, V] the decoder should have sampled step t's targets from."""
    kind, n = model.config.kind, schedule.grid_size
    N = schedule.num_tokens
    step_of = schedule.step_of()
    fed = [0] + [step_of[p] + 1 for p in range(N)]  # tokens are fed the step after decoding
    guided = cfg_scale > 1.0
    labels = torch.cat([class_ids, torch.full_like(class_ids, model.config.num_classes)]) \
        if guided else class_ids
    tokens = grid.repeat(2, 1) if guided else grid
    x = torch.cat([model.embed_class(labels), model.embed_tokens(tokens)], dim=1)
    base_mask = torch.tensor([[allowed(kind, n, q, k) and fed[k] <= fed[q] for k in range(1 + N)]
                              for q in range(1 + N)])
    full = model.features(x, torch.arange(1 + N), base_mask)

    def hidden(q: int, t: int, head: str) -> torch.Tensor:
        if fed[q] == t:
            feats = full
            index = q
        else:
            # A probe: an extra query at position q that sees the context of step t.
            src = q - 1 if step_of[q - 1] < t else stand_in_position(schedule, q - 1, t)
            probe = model.embed_tokens(tokens[:, src:src + 1])
            mask = torch.zeros(2 + N, 2 + N, dtype=torch.bool)
            mask[: 1 + N, : 1 + N] = base_mask
            mask[-1, : 1 + N] = torch.tensor(
                [allowed(kind, n, q, k) and fed[k] <= t and k != q for k in range(1 + N)])
            mask[-1, -1] = True
            feats = model.features(torch.cat([x, probe], dim=1),
                                   torch.cat([torch.arange(1 + N), torch.tensor([q])]), mask)
            index = 1 + N
        h = getattr(feats, head)
        head_fn = {"right": model.logits_right, "below": model.logits_below,
                   "frame": model.logits_frame}[head]
        return head_fn(h[:, index])

    out, decoded = [], 0
    for t, targets in enumerate(schedule.steps):
        per_target = []
        for p in targets:
            preds = head_rule(kind, n, p, schedule.frames)
            per_target.append(sum(hidden(q, t, head) for q, head in preds) / len(preds))
        logits = torch.stack(per_target, dim=1)
        if guided:
            cond, uncond = logits.chunk(2)
            use = cfg_interval < 0 or decoded <= cfg_interval
            logits = uncond + cfg_scale * (cond - uncond) if use else cond
        out.append(logits)
        decoded += len(targets)
    return out
