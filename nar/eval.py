"""Quality of the decoding orders, judged on the same classes and seeds.

    python -m nar.eval --json

For each order (nar on the NAR model; raster and zipar on the raster model) it generates
`--per-class` images of every class with the same seeds, then reports
  * class accuracy: how often the judge classifier (trained on real images) names the class
    the image was generated for;
  * Frechet distance between real test images and the generated ones in the judge's feature
    space (lower is better), beside the same distance between real train and real test
    images as a floor;
  * steps and decoding seconds per image.
Sample grids (one row per class) are written to assets/samples_<order>.png.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .config import SamplingConfig
from .data import load_split, to_tensor
from .judge import load_judge, predict
from .pipeline import ROOT, Studio
from .render import save_png, tile


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2), via symmetric eigh."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    middle = np.linalg.eigvalsh(root_a @ s_b @ root_a)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.sqrt(np.clip(middle, 0, None)).sum())


def generate_all(studio: Studio, order: str, classes: list[int], per_class: int, sampling: SamplingConfig,
                 window: int) -> tuple[np.ndarray, float, int]:
    """uint8 images [len(classes) * per_class, H, W, 3] (class-major), the decoding seconds per
    image and the step count. One batch per class: image j of every class uses seed + j."""
    images, seconds, record = [], 0.0, None
    for c in classes:
        for record in studio.decode_steps(order, torch.full((per_class,), c), sampling, window=window):
            pass
        seconds += record.elapsed
        images.append(studio.images(record.grid))
    return np.concatenate(images), seconds / (len(classes) * per_class), record.num_steps


def evaluate(studio: Studio, judge_path: str, data_dir: str, orders: list[str], per_class: int,
             sampling: SamplingConfig, window: int, samples_dir: Optional[Path]) -> dict:
    judge, judge_names, judge_meta = load_judge(judge_path)
    test = load_split(data_dir, "test")
    train = load_split(data_dir, "train")
    _, real_feats = predict(judge, to_tensor(test.images))
    _, train_feats = predict(judge, to_tensor(train.images))
    results = {"judge": {"test_accuracy": judge_meta.get("test_accuracy"), "classes": judge_names},
               "per_class": per_class, "seed": sampling.seed, "cfg_scale": sampling.cfg_scale,
               "real_train_vs_test_fd": frechet_distance(train_feats, real_feats), "orders": {}}
    for order in orders:
        names = studio.model_for(order).class_names
        if names != judge_names:
            raise ValueError(f"the {order} model's classes {names} differ from the judge's {judge_names}")
        classes = list(range(len(names)))
        start = time.perf_counter()
        images, sec_per_image, steps = generate_all(studio, order, classes, per_class, sampling, window)
        wanted = np.repeat(classes, per_class)
        predicted, feats = predict(judge, to_tensor(images))
        per_class_acc = {names[c]: float((predicted[wanted == c] == c).mean()) for c in classes}
        results["orders"][order] = {
            "model": studio.model_for(order).model.config.kind, "steps": steps,
            "window": window if order == "zipar" else None,
            "class_accuracy": float((predicted == wanted).mean()), "per_class_accuracy": per_class_acc,
            "frechet_distance": frechet_distance(feats, real_feats),
            "seconds_per_image": sec_per_image, "wall_seconds": time.perf_counter() - start}
        print(f"[eval] {order}: accuracy {results['orders'][order]['class_accuracy']:.3f}, "
              f"FD {results['orders'][order]['frechet_distance']:.2f}, {steps} steps, "
              f"{sec_per_image:.3f} s/image", flush=True)
        if samples_dir is not None:
            shown = min(per_class, 8)
            rows = [tile([images[c * per_class + j] for j in range(shown)]) for c in classes]
            save_png(np.concatenate([np.pad(r, ((0, 4), (0, 0), (0, 0)), constant_values=255) for r in rows]),
                     samples_dir / f"samples_{order}.png")
    o = results["orders"]
    if "nar" in o and "raster" in o:
        results["nar_vs_raster"] = {
            "fd_ratio": o["nar"]["frechet_distance"] / o["raster"]["frechet_distance"],
            "accuracy_difference": o["nar"]["class_accuracy"] - o["raster"]["class_accuracy"],
            "step_ratio": o["raster"]["steps"] / o["nar"]["steps"],
            "speedup_per_image": o["raster"]["seconds_per_image"] / o["nar"]["seconds_per_image"]}
    return results


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(prog="python -m nar.eval", description="Judge the decoding orders' samples.")
    p.add_argument("--checkpoints", default=str(ROOT / "checkpoints"),
                   help="folder with nar.safetensors, raster.safetensors and vq.safetensors")
    p.add_argument("--judge", default=str(ROOT / "checkpoints" / "judge.safetensors"))
    p.add_argument("--data", default=str(ROOT / "data" / "emoji"))
    p.add_argument("--orders", default="nar,raster,zipar")
    p.add_argument("--per-class", type=int, default=16)
    p.add_argument("--window", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cfg-scale", type=float, default=4.0)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=2000)
    p.add_argument("--samples-dir", default=str(ROOT / "assets"))
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    sampling = SamplingConfig(cfg_scale=args.cfg_scale, temperature=args.temperature, top_k=args.top_k,
                              seed=args.seed).validate()
    try:
        studio = Studio.from_folder(Path(args.checkpoints), args.device)
        results = evaluate(studio, args.judge, args.data, args.orders.split(","), args.per_class, sampling,
                           args.window, Path(args.samples_dir) if args.samples_dir else None)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    if args.json:
        print(json.dumps(results))
    else:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
