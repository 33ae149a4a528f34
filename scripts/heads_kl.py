"""How much computing the output heads in bf16 changes the guided next-token distribution.

    nice -n 19 python scripts/heads_kl.py [--per-class 2] [--cfg 4]

On the bundled models: image token grids are decoded in fp32 in each model's own order; every
position's guided distribution softmax(u + s (c - u)) is then computed teacher-forced (the full
forward, conditional and null class) by the fp32 model and by the bf16 model three ways:
its heads' logits rounded to bf16 (as a plain bf16 matmul returns them, the heads before
nar.model.head_logits), the bf16 x bf16 products kept in fp32 (head_logits, the default), and
the heads cast to fp32 altogether. Prints KL(fp32 || variant) per position:
mean and max over all positions of all images, as JSON.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import nar.model  # noqa: E402
from nar.config import SamplingConfig  # noqa: E402
from nar.decode import generate  # noqa: E402
from nar.loading import BUNDLED_DIR, load  # noqa: E402
from nar.sampling import cfg_combine  # noqa: E402
from nar.schedules import make_schedule  # noqa: E402


@torch.inference_mode()
def guided_log_probs(model, class_ids: torch.Tensor, tokens: torch.Tensor, scale: float) -> torch.Tensor:
    null = torch.full_like(class_ids, model.config.num_classes)
    logits, _ = model(torch.cat([class_ids, null]), torch.cat([tokens, tokens]))
    return torch.log_softmax(cfg_combine(logits.float(), scale), dim=-1)


def fp32_heads(model):
    """The final norms and output projections cast to fp32 (from the bf16-rounded weights)."""
    for name in ("norm", "output", "medusa_norm", "medusa_output"):
        if hasattr(model, name):
            getattr(model, name).float()
    return model


@contextlib.contextmanager
def logits_rounded_to_bf16():
    """The heads as they were: a bf16 matmul whose bf16 logits are then cast to fp32."""
    kept = nar.model.head_logits
    nar.model.head_logits = lambda proj, x: proj(x).float()
    try:
        yield
    finally:
        nar.model.head_logits = kept


def kl_stats(ref: torch.Tensor, other: torch.Tensor) -> dict:
    kl = (ref.exp() * (ref - other)).sum(-1)          # [B, N]
    return {"mean": float(kl.mean()), "max": float(kl.max()), "median": float(kl.median())}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--per-class", type=int, default=2)
    p.add_argument("--cfg", type=float, default=4.0)
    p.add_argument("--kinds", default="nar,raster")
    args = p.parse_args()
    torch.manual_seed(0)
    out = {"cfg_scale": args.cfg, "per_class": args.per_class}
    for kind in args.kinds.split(","):
        fp32 = load(BUNDLED_DIR / f"{kind}.safetensors", expect=kind, device=torch.device("cpu"),
                    dtype=torch.float32).model.eval()
        cfg = fp32.config
        classes = torch.arange(cfg.num_classes).repeat_interleave(args.per_class)
        tokens = generate(fp32, make_schedule(kind, cfg.grid_size), classes,
                          SamplingConfig(cfg_scale=args.cfg, top_k=2000, seed=0)).flatten(1)
        bf16 = copy.deepcopy(fp32).to(torch.bfloat16)
        heads32 = fp32_heads(copy.deepcopy(fp32).to(torch.bfloat16))
        ref = guided_log_probs(fp32, classes, tokens, args.cfg)
        with logits_rounded_to_bf16():
            rounded = kl_stats(ref, guided_log_probs(bf16, classes, tokens, args.cfg))
        out[kind] = {"images": len(classes), "positions": int(tokens.numel()),
                     "bf16_logits_rounded_to_bf16": rounded,
                     "bf16_fp32_logits": kl_stats(ref, guided_log_probs(bf16, classes, tokens, args.cfg)),
                     "bf16_fp32_heads": kl_stats(ref, guided_log_probs(heads32, classes, tokens, args.cfg))}
        print(kind, json.dumps(out[kind]), file=sys.stderr, flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
