"""Speed for the Compare tab: the files `python -m nar.bench` wrote (read by the benchmark's own
reader), and a measurement now, on this device, by the benchmark's own cases and interleaved timer.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Callable, Optional

import torch

from nar.bench import Case, device_name, read_report, time_interleaved
from nar.pipeline import Studio

from .race import COMPARE_ORDERS
from .requests import MeasureRequest
from .stream import ORDER_LABELS


def benchmark_files(folder: Path, device: Optional[torch.device] = None) -> list[Path]:
    """benchmarks/*.json: those with a curve (several batch sizes) first, among them this device's
    first (full run before quick run), then the others."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stem = device_name(device) if device is not None else None

    def curve(p: Path) -> bool:
        try:
            return len({row.get("batch") for row in read_report(p)[1]}) >= 2
        except ValueError:
            return False

    def rank(p: Path):
        flat = not curve(p)
        if stem and p.stem == stem:
            return (flat, 0, p.name)
        if stem and p.stem == f"{stem}-quick":
            return (flat, 1, p.name)
        return (flat, 2, p.name)
    # the video cases' files time clips, not images: the image plot leaves them out
    return sorted((p for p in folder.glob("*.json") if "-video" not in p.stem), key=rank)


def uses_cuda_graphs(path: Path) -> bool:
    """Whether a benchmark file's timings replayed CUDA graphs (its JSON says so, for the whole run
    or for a row); measured-now rows are always eager."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(data, dict):
        return False
    rows = [r for r in data.get("results") or [] if isinstance(r, dict)]
    return data.get("cuda_graphs") is True or any(r.get("cuda_graphs") is True for r in rows)


def measure(studio: Studio, request: MeasureRequest, cfg: bool = True,
            progress: Optional[Callable[[float, str], None]] = None) -> list[dict]:
    """Time per image against batch size for the three orders, measured now on this device: one
    warm-up each, then `rounds` interleaved rounds (the median run); rows as in benchmarks/*.json."""
    for order in COMPARE_ORDERS:
        studio.model_for(order)    # a clear error when a model is missing
    cases = [Case(order, "measured", studio.model_for(order).model, order,
                  request.window if order == "zipar" else None, batch, bool(cfg))
             for batch in request.batches for order in COMPARE_ORDERS]
    total, done = len(cases) + request.rounds, 0

    def report(message: str) -> None:
        nonlocal done
        if progress:
            progress(done / total, message)
        done += 1
    outcomes = time_interleaved(cases, request.rounds, warmup=1, progress=report)
    results = []
    for i, case in enumerate(cases):
        if not outcomes[i].times:      # did not fit in GPU memory
            continue
        median = float(statistics.median(outcomes[i].times))
        results.append({"suite": "measured", "label": case.order + (f"-{case.window}" if case.window else ""),
                        "order": case.order, "window": case.window, "model": case.model.config.kind,
                        "batch": case.batch, "cfg": bool(cfg), "steps": case.steps, "latency_median_s": median,
                        "latency_per_image_s": median / case.batch, "images_per_s": case.batch / median,
                        "rounds": request.rounds, "cuda_graphs": case.graphs})
    if progress:
        progress(1.0, "done")
    return results


def measured_table(rows: list[dict]) -> list[list]:
    """Rows of the "Measured now" table: order, batch, ms per image, images/s."""
    return [[ORDER_LABELS[r["order"]] + (f" (window {r['window']})" if r["window"] else ""), r["batch"],
             round(1000 * r["latency_per_image_s"], 2), round(r["images_per_s"], 2)] for r in rows]
