"""Quality of the video decoding orders, judged on the same motion classes and seeds.

    python -m nar.eval --video --json

For each order (nar on the NAR video model; raster and zipar on the raster video model) it
generates `--per-class` clips of every motion class with the same seeds, then reports
  * class_accuracy: how often the video judge (trained on real clips) names the motion the clip
    was generated for;
  * frechet_distance: single frames of the generated clips against frames of real test clips in
    the image judge's feature space (lower is better; real train vs real test frames as a floor);
  * warp_error (temporal consistency): the mean absolute error between each frame and the
    previous frame moved by the class's nominal motion (nar/moving_emoji.py `warp_error`), for
    the generated clips and, beside it, for real test clips of the same classes;
  * steps and decoding seconds per clip.
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
from .images import load_clips, to_tensor
from .eval import frechet_distance, nar_vs_raster
from .judge import load_judge, predict
from .moving_emoji import warp_error
from .render import save_png, tile
from .loading import BUNDLED_DIR, ROOT
from .video import VideoStudio
from .video_judge import clips_to_tensor, load_video_judge, predict_motion

REAL_CLIPS = 512   # real clips per split for the Frechet and warp references (class-balanced)


def generate_clips(studio: VideoStudio, order: str, classes: list[int], per_class: int,
                   sampling: SamplingConfig, window: int) -> tuple[np.ndarray, float, int]:
    """uint8 clips [len(classes) * per_class, T, H, W, 3] (class-major), decoding seconds per
    clip and the step count; clip j of every class uses seed + j."""
    shape = studio.model_for(order).model.config.grid_shape
    clips, seconds, record = [], 0.0, None
    for c in classes:
        for record in studio.decode_steps(order, torch.full((per_class,), c), sampling, window=window, sync=False):
            pass
        seconds += record.elapsed
        clips.append(studio.clips(record.grid, shape[0]))
    return np.concatenate(clips), seconds / (len(classes) * per_class), record.num_steps


def frame_features(judge, clips: np.ndarray) -> np.ndarray:
    frames = clips.reshape(-1, *clips.shape[2:])
    return predict(judge, to_tensor(frames))[1]


def evaluate_video(studio: VideoStudio, orders: list[str], per_class: int, sampling: SamplingConfig,
                   window: int, video_judge_path: str, image_judge_path: str, data_dir: str,
                   samples_dir: Optional[Path]) -> dict:
    video_judge, motions, meta = load_video_judge(video_judge_path)
    image_judge, _, _ = load_judge(image_judge_path)
    test, train = load_clips(data_dir, "test"), load_clips(data_dir, "train")
    judge_real = float((predict_motion(video_judge, clips_to_tensor(test.clips)) == test.labels).mean())
    real_test, real_labels = test.clips[:REAL_CLIPS], test.labels[:REAL_CLIPS]
    test_feats = frame_features(image_judge, real_test)
    floor = frechet_distance(frame_features(image_judge, train.clips[:REAL_CLIPS]), test_feats)
    results = {"judge_real_accuracy": judge_real, "video_judge_saved_accuracy": meta.get("test_accuracy"),
               "classes": motions, "per_class": per_class, "seed": sampling.seed,
               "cfg_scale": sampling.cfg_scale, "top_k": sampling.top_k,
               "real_train_vs_test_frame_fd": floor, "real_warp_error": warp_error(real_test, real_labels),
               "temporal_metric": "warp_error: mean |frame k+1 - frame k warped by the class's nominal "
                                  "motion| in [0, 1]; lower is more consistent",
               "orders": {}}
    classes = list(range(len(motions)))
    for order in orders:
        names = studio.model_for(order).class_names
        if names != motions:
            raise ValueError(f"the {order} video model's classes {names} differ from the judge's {motions}")
        start = time.perf_counter()
        clips, sec_per_clip, steps = generate_clips(studio, order, classes, per_class, sampling, window)
        wanted = np.repeat(classes, per_class)
        predicted = predict_motion(video_judge, clips_to_tensor(clips))
        scores = {"model": studio.model_for(order).model.config.kind, "steps": steps,
                  "window": window if order == "zipar" else None,
                  "grid": list(studio.model_for(order).model.config.grid_shape),
                  "class_accuracy": float((predicted == wanted).mean()),
                  "per_class_accuracy": {motions[c]: float((predicted[wanted == c] == c).mean()) for c in classes},
                  "frechet_distance": frechet_distance(frame_features(image_judge, clips), test_feats),
                  "warp_error": warp_error(clips, wanted),
                  "seconds_per_clip": sec_per_clip, "wall_seconds": time.perf_counter() - start}
        results["orders"][order] = scores
        print(f"[eval] {order}: motion accuracy {scores['class_accuracy']:.3f}, FD {scores['frechet_distance']:.2f}, "
              f"warp error {scores['warp_error']:.4f} (real {results['real_warp_error']:.4f}), {steps} steps, "
              f"{sec_per_clip:.3f} s/clip", flush=True)
        if samples_dir is not None:
            rows = [tile([tile(list(clips[c * per_class + j]), gap=1) for j in range(min(per_class, 4))], gap=6)
                    for c in classes]
            save_png(tile(rows, columns=1, gap=4), samples_dir / f"video_samples_{order}.png")
    if "nar" in results["orders"] and "raster" in results["orders"]:
        results["nar_vs_raster"] = nar_vs_raster(results["orders"], "clip")
    return results


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(prog="python -m nar.eval --video", description="Judge the video decoding orders.")
    p.add_argument("--video", action="store_true", help="(selects this evaluation in python -m nar.eval)")
    p.add_argument("--nar", default=str(BUNDLED_DIR / "video_nar.safetensors"))
    p.add_argument("--raster", default=str(BUNDLED_DIR / "video_raster.safetensors"))
    p.add_argument("--vq", default=str(BUNDLED_DIR / "vq.safetensors"))
    p.add_argument("--video-judge", default=str(BUNDLED_DIR / "video_judge.safetensors"))
    p.add_argument("--judge", default=str(BUNDLED_DIR / "judge.safetensors"), help="the image judge")
    p.add_argument("--data", default=str(ROOT / "data" / "moving_emoji"))
    p.add_argument("--orders", default="nar,raster,zipar")
    p.add_argument("--per-class", type=int, default=16)
    p.add_argument("--window", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cfg-scale", type=float, default=3.0)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--samples-dir", default=str(ROOT / "assets"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    try:
        sampling = SamplingConfig(cfg_scale=args.cfg_scale, temperature=args.temperature, top_k=args.top_k,
                                  seed=args.seed).validate()
        orders = [o for o in args.orders.split(",") if o]
        kinds = tuple(dict.fromkeys("nar" if o == "nar" else "raster" for o in orders))
        studio = VideoStudio.bundled(torch.device(args.device), {"nar": args.nar, "raster": args.raster, "vq": args.vq},
                                     kinds=kinds)
        results = evaluate_video(studio, orders, args.per_class, sampling, args.window, args.video_judge,
                                 args.judge, args.data, Path(args.samples_dir) if args.samples_dir else None)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    print(json.dumps(results) if args.json else json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
