"""Train the text encoder CLIP-style: symmetric InfoNCE between its pooled prompt embedding and a
small image CNN (nar/image_tower.py), both from scratch, on the text set's real train images.

    python -m nar.text_train --data data/emoji_text --out checkpoints/text_encoder.safetensors --steps 800

Every batch holds distinct base emojis (skin tones of one emoji look alike, so two of them in a
batch would be false negatives), each with one random rendition and one random caption
(nar/captions.py's sample_caption: English name 40%, English keywords 20%, another locale 40%),
cut to the tokenizer's 48 bytes. Writes the encoder, the image tower beside it
(`<out stem>_image_tower.safetensors`) and a JSON log (`<out stem>.json`) with text -> image
retrieval (100-way, nar/retrieval.py) on train and held-out emojis in several locales.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .captions import sample_caption
from .checkpoint import atomic_write
from .image_tower import ImageTower, ImageTowerConfig, image_embeddings, save_image_tower
from .images import TextImageSet, load_text_split, to_tensor
from .judge import augment
from .retrieval import retrieval_accuracy
from .text_encoder import ByteTokenizer, TextEncoder, TextEncoderConfig, parameter_count, save_text_encoder

EVAL_LOCALES = ("en", "de", "ja", "ru")


@dataclass
class TextTrainConfig:
    data: str = "data/emoji_text"
    out: str = "checkpoints/text_encoder.safetensors"
    steps: int = 800
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: int = 60
    seed: int = 0
    eval_every: int = 200          # held-out retrieval and a checkpoint every so many steps
    threads: int = 1
    dim: int = 128
    n_layer: int = 2
    n_head: int = 4
    embed_dim: int = 128
    tower_size: int = 32           # the image tower sees images resized to this (a quarter of the compute of 64)


def sibling(out: str, suffix: str) -> Path:
    path = Path(out)
    return path.with_name(path.stem + suffix)


def trim(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the padding columns no row needs: with left padding and positions counted from the
    end the features are the same, for less compute."""
    longest = int(mask.sum(1).max())
    return ids[:, -longest:], mask[:, -longest:]


class CaptionBatches:
    """Batches of distinct base emojis: one random rendition and one random caption each,
    drawn from a generator seeded by (seed, step), so step s's batch never depends on the past."""

    def __init__(self, train: TextImageSet, tokenizer: ByteTokenizer, batch_size: int, seed: int):
        by_base: dict[str, list[int]] = defaultdict(list)
        for n, e in enumerate(train.emoji.tolist()):
            by_base[train.captions[e]["base"]].append(n)
        self.groups = [by_base[b] for b in sorted(by_base)]
        if batch_size > len(self.groups):
            raise ValueError(f"batch size {batch_size} is more than the {len(self.groups)} distinct emojis")
        self.train, self.tokenizer, self.batch_size, self.seed = train, tokenizer, batch_size, seed

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
        rng = random.Random(self.seed * 1_000_003 + step)
        rows = [rng.choice(self.groups[g]) for g in rng.sample(range(len(self.groups)), self.batch_size)]
        prompts = [self.tokenizer.truncate(sample_caption(self.train.captions[self.train.emoji[n]], rng))
                   for n in rows]
        ids, mask = trim(*self.tokenizer(prompts))
        return to_tensor(self.train.images[rows]), ids, mask, prompts


@torch.no_grad()
def text_embeddings(encoder: TextEncoder, tokenizer: ByteTokenizer, prompts: Sequence[str],
                    batch: int = 512) -> torch.Tensor:
    encoder.eval()
    out = []
    for i in range(0, len(prompts), batch):
        ids, mask = trim(*tokenizer([tokenizer.truncate(p) for p in prompts[i:i + batch]]))
        out.append(encoder.embed(ids, mask))
    return torch.cat(out)


def evaluate(encoder: TextEncoder, tower: ImageTower, tokenizer: ByteTokenizer, split: TextImageSet,
             locales: Sequence[str] = EVAL_LOCALES, seed: int = 0) -> dict:
    """Text -> image retrieval: each emoji of the split queried by its name in each locale,
    against the mean embedding of its real images, 100-way (fewer where the split has fewer)."""
    gallery = image_embeddings(tower, split.images)
    present = np.unique(split.emoji)
    n_way = min(100, len(present))
    result = {}
    for locale in locales:
        ids = [e for e in present.tolist() if locale in split.captions[e]["names"]]
        if not ids:
            continue
        queries = text_embeddings(encoder, tokenizer, [split.captions[e]["names"][locale] for e in ids])
        result[locale] = {"queries": len(ids), "n_way": n_way,
                          **retrieval_accuracy(queries, ids, gallery, split.emoji, n_way=n_way, ks=(1, 5), seed=seed)}
    return result


def contrastive_loss(text: torch.Tensor, image: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over a batch whose i-th text and i-th image belong together."""
    logits = log_scale.clamp(max=math.log(100.0)).exp() * F.normalize(text, dim=1) @ F.normalize(image, dim=1).T
    target = torch.arange(len(text))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def train_text_encoder(cfg: TextTrainConfig) -> dict:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    train, test = load_text_split(cfg.data, "train"), load_text_split(cfg.data, "test")
    tokenizer = ByteTokenizer()
    encoder = TextEncoder(TextEncoderConfig(max_len=tokenizer.max_len, dim=cfg.dim, n_layer=cfg.n_layer,
                                            n_head=cfg.n_head, embed_dim=cfg.embed_dim))
    tower = ImageTower(ImageTowerConfig(image_size=cfg.tower_size, embed_dim=cfg.embed_dim))
    log_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    params = list(encoder.parameters()) + list(tower.parameters()) + [log_scale]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup) * 0.5
                                              * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps)))
    batches = CaptionBatches(train, tokenizer, cfg.batch_size, cfg.seed)
    log = {"config": dataclasses.asdict(cfg), "text_encoder_parameters": parameter_count(encoder),
           "image_tower_parameters": parameter_count(tower), "train_images": len(train),
           "train_emojis": int(len(np.unique(train.emoji))), "test_emojis": int(len(np.unique(test.emoji))),
           "history": [], "evaluations": []}
    _log(f"text encoder {log['text_encoder_parameters']:,} parameters, image tower "
         f"{log['image_tower_parameters']:,}; {len(train)} train images of {log['train_emojis']} emojis")
    start = time.monotonic()

    def save(final: bool) -> None:
        meta = {"data": cfg.data, "steps_done": step + 1, "final": final,
                "image_tower": sibling(cfg.out, "_image_tower.safetensors").name,
                "evaluations": log["evaluations"][-1:]}
        save_text_encoder(cfg.out, encoder, meta)
        save_image_tower(sibling(cfg.out, "_image_tower.safetensors"), tower, {"text_encoder": Path(cfg.out).name})
        atomic_write(sibling(cfg.out, ".json"), lambda tmp: Path(tmp).write_text(json.dumps(log, indent=2)))

    g = torch.Generator().manual_seed(cfg.seed)
    running = []
    for step in range(cfg.steps):
        encoder.train(), tower.train()
        images, ids, mask, _ = batches(step)
        loss = contrastive_loss(encoder.embed(ids, mask), tower(augment(images, g, flip=False)), log_scale)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        running.append(loss.item())
        if (step + 1) % 25 == 0 or step == 0:
            elapsed = time.monotonic() - start
            log["history"].append({"step": step + 1, "loss": float(np.mean(running)), "seconds": round(elapsed, 1),
                                   "scale": round(float(log_scale.detach().exp()), 2)})
            _log(f"step {step + 1}/{cfg.steps} loss {np.mean(running):.3f} scale {float(log_scale.detach().exp()):.1f} "
                 f"({elapsed:.0f} s, {elapsed / (step + 1):.2f} s/step)")
            running = []
        final = step + 1 == cfg.steps
        if final or (step + 1) % cfg.eval_every == 0:
            splits = {"test": test, "train": train} if final else {"test": test}
            result = {"step": step + 1, **{name: evaluate(encoder, tower, tokenizer, s, seed=cfg.seed)
                                           for name, s in splits.items()}}
            log["evaluations"].append(result)
            _log(f"step {step + 1} retrieval (100-way top-1 / top-5): " + "; ".join(
                f"{name} {loc} {r['top1']:.3f}/{r['top5']:.3f}" for name in splits for loc, r in result[name].items()))
            log["train_seconds"] = round(time.monotonic() - start, 1)
            save(final)
    return log


def _log(message: str) -> None:
    print(f"[text train] {message}", flush=True)


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(prog="python -m nar.text_train", description=__doc__.split("\n")[0])
    for f in dataclasses.fields(TextTrainConfig):
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    log = train_text_encoder(TextTrainConfig(**vars(p.parse_args(argv))))
    print(json.dumps({"train_seconds": log["train_seconds"], "retrieval": log["evaluations"][-1]}))


if __name__ == "__main__":
    main()
