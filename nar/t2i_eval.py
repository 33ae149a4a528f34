"""Quality of text-to-image decoding, NAR against raster on the same prompts and seeds.

    python -m nar.eval --text --json

Prompts are the English CLDR names ("cat face") of emoji drawn (seeded) from the captioned set's
train split and, separately, from its held-out emoji, which no model saw, plus the same train
emoji named in German and Japanese. For each order it reports
  * class_accuracy: for prompts naming an emoji of the 12 image classes, how often the image
    judge names that class;
  * retrieval_top1 / retrieval_top5 (train / held-out / per language): is the generated image
    closer, in the judge's feature space, to the mean of the real images of the prompt's emoji
    than to those of 99 other emoji drawn at random (100-way; chance 0.01 and 0.05)? The same
    score for real images (one rendition each, against the mean of the emoji's other
    renditions) is the ceiling of this feature space;
  * frechet_distance of the generated images to real test images (judge features).
Sample grids for a fixed prompt list go to assets/t2i_<order>.png.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .config import SamplingConfig
from .eval import frechet_distance
from .images import load_text_split, to_tensor
from .judge import load_judge, predict
from .loading import ROOT
from .pipeline import Studio
from .render import save_png, tile
from .retrieval import retrieval_accuracy

SAMPLE_PROMPTS = ("cat face", "red heart", "flag: Japan", "grinning face", "red apple", "rocket",
                  "Katzengesicht", "猫の顔")
OTHER_LANGUAGES = ("de", "ja")


def pick_prompts(captions: list[dict], split: str, count: int, seed: int) -> list[int]:
    """`count` emoji ids of a split, drawn with a seed (the same for every order)."""
    ids = [i for i, c in enumerate(captions) if c["split"] == split]
    return sorted(random.Random(seed).sample(ids, min(count, len(ids))))


def generate(studio: Studio, order: str, prompts: list[str], sampling: SamplingConfig, window: int,
             batch: int = 50) -> tuple[np.ndarray, float, int]:
    """uint8 images of the prompts (prompt i sampled with seed + i), seconds per image, steps."""
    images, seconds, out = [], 0.0, None
    for start in range(0, len(prompts), batch):
        chunk = prompts[start:start + batch]
        out = studio(chunk, order=order, sampling=replace(sampling, seed=sampling.seed + start), window=window)
        images.append(out.images)
        seconds += out.seconds
    return np.concatenate(images), seconds / len(prompts), out.steps


def real_ceiling(feats: np.ndarray, emoji: np.ndarray, seed: int, n_way: int) -> dict:
    """Retrieval of real images: one rendition per emoji as the query, the others as its gallery."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(emoji))
    first = {}
    for i in order:
        first.setdefault(int(emoji[i]), int(i))
    counts = np.bincount(emoji)
    queries = np.array([i for e, i in first.items() if counts[e] > 1])
    gallery = np.setdiff1d(np.arange(len(emoji)), queries)
    keep = np.isin(emoji[queries], emoji[gallery])
    return retrieval_accuracy(feats[queries[keep]], emoji[queries[keep]], feats[gallery], emoji[gallery],
                              n_way=n_way, seed=seed)


def evaluate_text(studio: Studio, judge_path: str, data_dir: str, orders: list[str], count: int,
                  sampling: SamplingConfig, window: int, samples_dir: Optional[Path]) -> dict:
    judge, class_names, _ = load_judge(judge_path)
    train, test = load_text_split(data_dir, "train"), load_text_split(data_dir, "test")
    captions = train.captions
    gallery_images = np.concatenate([train.images, test.images])
    gallery_emoji = np.concatenate([train.emoji, test.emoji])
    _, gallery_feats = predict(judge, to_tensor(gallery_images))
    _, test_feats = predict(judge, to_tensor(test.images))
    n_way = min(100, len(np.unique(gallery_emoji)))   # 100 (chance 0.01 / 0.05); fewer only on tiny sets
    sets = {"train": pick_prompts(captions, "train", count, sampling.seed),
            "held_out": pick_prompts(captions, "test", count, sampling.seed + 1)}
    prompts = {name: [captions[i]["names"]["en"] for i in ids] for name, ids in sets.items()}
    for lang in OTHER_LANGUAGES:
        ids = [i for i in sets["train"] if lang in captions[i]["names"]]
        sets[f"train_{lang}"], prompts[f"train_{lang}"] = ids, [captions[i]["names"][lang] for i in ids]
    prompts = {name: [studio.prompt_encoder.truncate(p) for p in ps] for name, ps in prompts.items()}
    results = {"prompts_per_set": {k: len(v) for k, v in sets.items()}, "orders": {}, "retrieval_ways": n_way,
               "real_retrieval_ceiling": real_ceiling(gallery_feats, gallery_emoji, sampling.seed, n_way),
               "judge": judge_path, "feature_space": "image judge (penultimate layer)"}
    for order in orders:
        scores, generated, seconds, steps = {}, [], [], 0
        for name, ids in sets.items():
            images, per_image, steps = generate(studio, order, prompts[name], sampling, window)
            predicted, feats = predict(judge, to_tensor(images))
            top = retrieval_accuracy(feats, np.array(ids), gallery_feats, gallery_emoji, n_way=n_way, seed=sampling.seed)
            scores[f"retrieval_top1_{name}"], scores[f"retrieval_top5_{name}"] = top["top1"], top["top5"]
            if name in ("train", "held_out"):
                labels = np.array([captions[i]["label"] for i in ids])
                named = labels >= 0
                scores[f"class_accuracy_{name}"] = float((predicted[named] == labels[named]).mean())
                scores[f"class_prompts_{name}"] = int(named.sum())
                generated.append(feats)
                seconds.append(per_image)
        all_feats = np.concatenate(generated)
        # the headline keys: train prompts for retrieval, train + held-out for the class score
        scores["retrieval_top1"], scores["retrieval_top5"] = scores["retrieval_top1_train"], scores["retrieval_top5_train"]
        scores["class_accuracy"] = float(np.mean([scores["class_accuracy_train"], scores["class_accuracy_held_out"]]))
        scores["frechet_distance"] = frechet_distance(all_feats, test_feats)
        scores["steps"], scores["seconds_per_image"] = steps, float(np.mean(seconds))
        results["orders"][order] = scores
        if samples_dir is not None:
            images, _, _ = generate(studio, order, [p for p in SAMPLE_PROMPTS for _ in range(4)], sampling, window)
            rows = [tile(list(images[i * 4:(i + 1) * 4])) for i in range(len(SAMPLE_PROMPTS))]
            scores["samples"] = str(save_png(tile(rows, columns=1), samples_dir / f"t2i_{order}.png"))
    if "nar" in results["orders"] and "raster" in results["orders"]:
        n, r = results["orders"]["nar"], results["orders"]["raster"]
        results["nar_vs_raster"] = {"frechet_ratio": n["frechet_distance"] / r["frechet_distance"],
                                    "speedup": r["seconds_per_image"] / n["seconds_per_image"],
                                    "steps": [n["steps"], r["steps"]]}
    results["sample_prompts"] = list(SAMPLE_PROMPTS)
    return results


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(prog="python -m nar.eval --text", description="Judge text-to-image decoding.")
    p.add_argument("--text", action="store_true")
    p.add_argument("--checkpoints", default=str(ROOT / "checkpoints"),
                   help="folder with t2i_nar / t2i_raster / vq / text_encoder .safetensors")
    p.add_argument("--judge", default=str(ROOT / "checkpoints" / "judge.safetensors"))
    p.add_argument("--data", default=str(ROOT / "data" / "emoji_text"))
    p.add_argument("--orders", default="nar,raster")
    p.add_argument("--prompts", type=int, default=100, help="prompts per set (train, held-out)")
    p.add_argument("--window", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cfg-scale", type=float, default=4.0)
    p.add_argument("--top-k", type=int, default=2000)
    p.add_argument("--samples-dir", default=str(ROOT / "assets"))
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    try:
        sampling = SamplingConfig(cfg_scale=args.cfg_scale, top_k=args.top_k, seed=args.seed).validate()
        if not 1 <= args.prompts <= 2000:
            raise ValueError("--prompts must be in [1, 2000]")
        studio = Studio.from_pretrained(Path(args.checkpoints), args.device, text=True)
        with torch.inference_mode():
            results = evaluate_text(studio, args.judge, args.data, args.orders.split(","), args.prompts, sampling,
                                    args.window, Path(args.samples_dir) if args.samples_dir else None)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    print(json.dumps(results) if args.json else json.dumps(results, indent=2, ensure_ascii=False))
