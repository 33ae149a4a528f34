"""Quality of the decoding orders, judged on the same classes and seeds.

    python -m nar.eval --json
    python -m nar.eval --video --json     # the video models (nar/video_eval.py)
    python -m nar.eval --text --json      # the text-to-image models (nar/t2i_eval.py)

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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .config import SamplingConfig
from .images import load_split, to_tensor
from .judge import load_judge, predict
from .loading import ROOT
from .pipeline import Studio
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
    images, seconds, out = [], 0.0, None
    for c in classes:
        out = studio([c] * per_class, order=order, sampling=sampling, window=window)
        seconds += out.seconds
        images.append(out.images)
    return np.concatenate(images), seconds / (len(classes) * per_class), out.steps


@dataclass
class Reference:
    """The judge and the real images' features every order is compared against."""
    judge: torch.nn.Module
    class_names: list[str]
    test_accuracy: Optional[float]
    test_feats: np.ndarray
    train_vs_test_fd: float


def load_reference(judge_path: str, data_dir: str) -> Reference:
    judge, names, meta = load_judge(judge_path)
    _, test_feats = predict(judge, to_tensor(load_split(data_dir, "test").images))
    _, train_feats = predict(judge, to_tensor(load_split(data_dir, "train").images))
    return Reference(judge, names, meta.get("test_accuracy"), test_feats, frechet_distance(train_feats, test_feats))


def judge_order(studio: Studio, ref: Reference, order: str, per_class: int, sampling: SamplingConfig,
                window: int) -> tuple[dict, np.ndarray]:
    """One order's scores at one sampling config, and its images (class-major)."""
    names = studio.model_for(order).class_names
    if names != ref.class_names:
        raise ValueError(f"the {order} model's classes {names} differ from the judge's {ref.class_names}")
    classes = list(range(len(names)))
    start = time.perf_counter()
    images, sec_per_image, steps = generate_all(studio, order, classes, per_class, sampling, window)
    wanted = np.repeat(classes, per_class)
    predicted, feats = predict(ref.judge, to_tensor(images))
    scores = {
        "model": studio.model_for(order).model.config.kind, "steps": steps,
        "window": window if order == "zipar" else None,
        "class_accuracy": float((predicted == wanted).mean()),
        "per_class_accuracy": {names[c]: float((predicted[wanted == c] == c).mean()) for c in classes},
        "frechet_distance": frechet_distance(feats, ref.test_feats),
        "seconds_per_image": sec_per_image, "wall_seconds": time.perf_counter() - start}
    print(f"[eval] {order} (CFG {sampling.cfg_scale:g}): accuracy {scores['class_accuracy']:.3f}, "
          f"FD {scores['frechet_distance']:.2f}, {steps} steps, {sec_per_image:.3f} s/image", flush=True)
    return scores, images


def evaluate(studio: Studio, ref: Reference, orders: list[str], per_class: int, sampling: SamplingConfig,
             window: int, samples_dir: Optional[Path]) -> dict:
    results = {"judge": {"test_accuracy": ref.test_accuracy, "classes": ref.class_names},
               "per_class": per_class, "seed": sampling.seed, "cfg_scale": sampling.cfg_scale,
               "top_k": sampling.top_k, "temperature": sampling.temperature,
               "real_train_vs_test_fd": ref.train_vs_test_fd, "orders": {}}
    for order in orders:
        scores, images = judge_order(studio, ref, order, per_class, sampling, window)
        results["orders"][order] = scores
        if samples_dir is not None:
            shown = min(per_class, 8)
            rows = [tile([images[c * per_class + j] for j in range(shown)]) for c in range(len(ref.class_names))]
            save_png(np.concatenate([np.pad(r, ((0, 4), (0, 0), (0, 0)), constant_values=255) for r in rows]),
                     samples_dir / f"samples_{order}.png")
    o = results["orders"]
    if "nar" in o and "raster" in o:
        results["nar_vs_raster"] = nar_vs_raster(o, "image")
    return results


def nar_vs_raster(orders: dict, unit: str) -> dict:
    """NAR's scores relative to raster's; unit is what seconds are counted per (image, clip)."""
    nar, raster = orders["nar"], orders["raster"]
    return {"fd_ratio": nar["frechet_distance"] / raster["frechet_distance"],
            "accuracy_difference": nar["class_accuracy"] - raster["class_accuracy"],
            "step_ratio": raster["steps"] / nar["steps"],
            f"speedup_per_{unit}": raster[f"seconds_per_{unit}"] / nar[f"seconds_per_{unit}"]}


def sweep_cfg(studio: Studio, ref: Reference, orders: list[str], per_class: int, sampling: SamplingConfig,
              window: int, scales: list[float]) -> list[dict]:
    """Accuracy and Frechet distance of every order at every CFG scale (same classes and seeds):
    guidance trades diversity for class fidelity, and orders may peak at different scales."""
    rows = []
    for scale in scales:
        at = replace(sampling, cfg_scale=scale).validate()
        for order in orders:
            scores, _ = judge_order(studio, ref, order, per_class, at, window)
            rows.append({"order": order, "cfg_scale": scale, "class_accuracy": scores["class_accuracy"],
                         "frechet_distance": scores["frechet_distance"]})
    return rows


def with_headline(results: dict) -> list[dict]:
    """The sweep's rows plus the headline run's (its CFG scale), ordered by scale."""
    rows = list(results["cfg_sweep"])
    if all(r["cfg_scale"] != results["cfg_scale"] for r in rows):
        rows += [{"order": o, "cfg_scale": results["cfg_scale"], "class_accuracy": v["class_accuracy"],
                  "frechet_distance": v["frechet_distance"]} for o, v in results["orders"].items()]
    return sorted(rows, key=lambda r: r["cfg_scale"])


def plot_sweep(rows: list[dict], path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for order in dict.fromkeys(r["order"] for r in rows):
        mine = [r for r in rows if r["order"] == order]
        scales = [r["cfg_scale"] for r in mine]
        axes[0].plot(scales, [100 * r["class_accuracy"] for r in mine], "o-", label=order)
        axes[1].plot(scales, [r["frechet_distance"] for r in mine], "o-", label=order)
    axes[0].set(xlabel="CFG scale", ylabel="class accuracy (%)", title="Judged class accuracy")
    axes[1].set(xlabel="CFG scale", ylabel="Frechet distance", title="Frechet distance to real test images")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def set_precision(studio: Studio, dtype: str) -> None:
    if dtype != "auto":
        for loaded in studio.models.values():
            if loaded is not None:
                loaded.model.to(dtype=getattr(torch, dtype))


def main(argv: Optional[list[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--video" in argv:  # the video orders: nar/video_eval.py
        from .video_eval import main as video_main
        return video_main(argv)
    if "--text" in argv:   # the text-to-image models: nar/t2i_eval.py
        from .t2i_eval import main as text_main
        return text_main(argv)
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
    p.add_argument("--sweep-cfg", default="", metavar="S1,S2,...",
                   help="also score every order at these CFG scales and plot them (assets/quality_vs_cfg.png)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                   help="the transformers' precision (auto: bfloat16 on a GPU with native bf16, else float32)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    sampling = SamplingConfig(cfg_scale=args.cfg_scale, temperature=args.temperature, top_k=args.top_k,
                              seed=args.seed).validate()
    try:
        scales = [float(x) for x in args.sweep_cfg.split(",") if x.strip()]
        for scale in scales:
            replace(sampling, cfg_scale=scale).validate()
        studio = Studio.from_pretrained(Path(args.checkpoints), args.device)
        set_precision(studio, args.dtype)
        ref = load_reference(args.judge, args.data)
        orders = args.orders.split(",")
        samples_dir = Path(args.samples_dir) if args.samples_dir else None
        results = evaluate(studio, ref, orders, args.per_class, sampling, args.window, samples_dir)
        if scales:
            results["cfg_sweep"] = sweep_cfg(studio, ref, orders, args.per_class, sampling, args.window, scales)
            if samples_dir is not None:
                results["cfg_sweep_plot"] = str(plot_sweep(with_headline(results), samples_dir / "quality_vs_cfg.png"))
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    if args.json:
        print(json.dumps(results))
    else:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
