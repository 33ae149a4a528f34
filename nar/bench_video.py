"""The benchmark's video cases: NAR, ZipAR and raster decoding of clips, timed side by side.

    python -m nar.bench --video --quick          # the bundled 4 x 8 x 8 models, batch 1, CFG on
    python -m nar.bench --video                  # + the paper's UCF-101 latent, 4 x 16 x 16, at several batches

Two suites: the bundled video models (4 x 8 x 8 tokens: NAR 18 steps, raster 256), and random-weight
models of the same size at the paper's latent (4 x 16 x 16: NAR 34 steps, raster 1,024; speed does
not depend on the weights). The cases, the interleaved timer and the roofline bound are nar.bench's;
results go to <out-dir>/<device>-video.json (rewritten after every group).
"""
from __future__ import annotations

import dataclasses
import json
import platform
import resource
import time
from pathlib import Path
from typing import Callable, Optional

import torch

from .bench import (Case, Outcome, cases_for, free_device_bytes, free_memory, plan_groups, speedups, summarise,
                    time_interleaved, vq_decode_time)
from .checkpoint import CheckpointError, atomic_write
from .devices import device_name
from .loading import load
from .model import Transformer
from .roofline import measure_limits
from .video import BUNDLED_VIDEO, load_video_model

VIDEO_WINDOWS = (4,)                 # window 8 on an 8-token row is raster again
PAPER_GRID = (4, 16, 16)             # UCF-101 through the LARP tokenizer
PAPER = {"dataset": "UCF-101", "grid": list(PAPER_GRID), "nar_steps": 34, "raster_steps": 1024,
         "nar_vs_par4x_throughput": 8.6,
         "source": "arXiv 2503.10696 abstract: 8.6x the throughput of PAR-4X with a better FVD; "
                   "its per-clip times are not stated in the text this project has"}


def suite_name(shape) -> str:
    return "video-" + "x".join(map(str, shape))


def video_cases(suite: str, nar_model: Transformer, raster_model: Transformer, batches, graphs: bool) -> list[Case]:
    """NAR, ZipAR and raster for each batch, CFG on (the paper samples clips with CFG)."""
    return cases_for(suite, suite, nar_model, raster_model, batches, [True], graphs, VIDEO_WINDOWS)


def by_suite_and_batch(cases: list[Case]) -> list[list[int]]:
    groups: dict[tuple, list[int]] = {}
    for i, case in enumerate(cases):
        groups.setdefault((case.suite, case.batch), []).append(i)
    return list(groups.values())


def random_video_pair(nar_like: Transformer, raster_like: Transformer, shape: tuple[int, int, int], device,
                      dtype) -> tuple[Transformer, Transformer]:
    """NAR and raster video models configured as the given ones but over a clip of `shape`, with
    random weights."""
    torch.manual_seed(0)
    frames, n, _ = shape
    return tuple(Transformer(dataclasses.replace(like.config, grid_size=n, frames=frames))
                 .to(device=device, dtype=dtype).eval() for like in (nar_like, raster_like))


def per_clip(row: dict, shape) -> dict:
    """A nar.bench result row with its clip shape and per-clip names (a clip is its "image")."""
    return {**row, "grid_shape": list(shape), "tokens": int(shape[0] * shape[1] * shape[2]),
            "latency_per_clip_s": row["latency_per_image_s"], "clips_per_s": row["images_per_s"],
            "bound_per_clip_s": row["bound_per_image_s"]}


def run_video(args, device: torch.device, dtype: torch.dtype, log: Callable[[str], None]) -> dict:
    """The video benchmark for nar.bench's parsed arguments; returns the report it wrote."""
    folder = Path(args.checkpoints)
    files = {k: folder / Path(v).name for k, v in BUNDLED_VIDEO.items()}
    try:
        vq = load(files["vq"], expect="vq", device=device).eval()
        nar_model = load_video_model(files["nar"], "nar", device).model.to(dtype)
        raster_model = load_video_model(files["raster"], "raster", device).model.to(dtype)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: the bundled video models are needed ({e})")
    shape = nar_model.config.grid_shape
    default_batches = "1,16,64,256" if device.type == "cuda" else "1,4,16"
    batches = [1] if args.quick else [int(b) for b in (args.batches or default_batches).split(",")]
    graphs = device.type == "cuda" and not args.no_cuda_graphs
    shapes = {suite_name(shape): shape}
    cases = video_cases(suite_name(shape), nar_model, raster_model, batches, graphs)
    if not args.quick:
        pair = random_video_pair(nar_model, raster_model, PAPER_GRID, device, dtype)
        shapes[suite_name(PAPER_GRID)] = PAPER_GRID
        cases += video_cases(suite_name(PAPER_GRID), *pair, batches, graphs)
    rounds = 3 if args.quick else args.rounds
    limits = measure_limits(device, dtype)
    name = device_name(device)
    out_path = Path(args.out_dir) / f"{name}-video{'-quick' if args.quick else ''}.json"
    free_memory(device)
    # interleaved within one suite and batch (what is compared), written after each: a long CPU run
    # cut off part-way keeps what it measured
    groups = plan_groups(cases, free_device_bytes(device)) if graphs else by_suite_and_batch(cases)
    log(f"video: {len(cases)} configurations in {len(groups)} group(s) x {rounds} rounds on {name} ({dtype})")
    report = {"device": name, "dtype": str(dtype).replace("torch.", ""), "torch": torch.__version__,
              "machine": platform.machine(), "video": True, "quick": args.quick, "cuda_graphs": graphs,
              "complete": False, "vq": vq_decode_time(vq, frames=shape[0], n=shape[1]), "limits": limits.to_json(), "paper": PAPER,
              "note": "latency per clip: the whole clip's decode (all T frames' tokens); CFG 4 on, top-k 2000"}
    start = time.perf_counter()

    def write_report(outcomes: dict[int, Outcome]) -> None:
        results = [per_clip(summarise(cases[i], o, limits), shapes[cases[i].suite])
                   for i, o in sorted(outcomes.items()) if o.times]
        report.update(results=results,
                      left_out=[{"suite": cases[i].suite, "label": cases[i].label, "batch": cases[i].batch,
                                 "reason": o.left_out} for i, o in sorted(outcomes.items()) if o.left_out],
                      speedup_by_suite={suite: {b: speedups(results, suite=suite, batch=b) for b in batches}
                                        for suite in shapes},
                      peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      wall_seconds=time.perf_counter() - start)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out_path, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=1)))

    outcomes = time_interleaved(cases, rounds, args.warmup, log, groups, write_report)
    report["complete"] = True
    write_report(outcomes)
    for r in report["results"]:
        log(f"{r['label']:>24} b={r['batch']:<3} steps={r['steps']:<5} {r['latency_per_clip_s'] * 1000:9.1f} ms/clip "
            f"{r['clips_per_s']:8.2f} clips/s  {r['times_bound']:6.1f}x bound")
    return report


def table(report: dict, batch: Optional[int] = None) -> str:
    """The report as a markdown table (the README's): steps, ms per clip, vs raster, time / bound."""
    lines = ["| clip (T x H x W) | batch | order | steps | ms / clip | clips/s | vs raster | time / roofline bound |",
             "|---|---|---|---|---|---|---|---|"]
    rows = [r for r in report["results"] if batch is None or r["batch"] == batch]
    for r in rows:
        raster = next(x for x in report["results"]
                      if x["suite"] == r["suite"] and x["batch"] == r["batch"] and x["order"] == "raster")
        order = r["order"] if r["order"] != "zipar" else f"zipar w{r['window']}"
        lines.append(f"| {' x '.join(map(str, r['grid_shape']))} | {r['batch']} | {order} | {r['steps']} | "
                     f"{r['latency_per_clip_s'] * 1000:.1f} | {r['clips_per_s']:.2f} | "
                     f"{raster['latency_per_clip_s'] / r['latency_per_clip_s']:.2f}x | {r['times_bound']:.1f}x |")
    return "\n".join(lines)
