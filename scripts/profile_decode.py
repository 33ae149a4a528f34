"""Where a decode step's time goes on a CPU: per-component timers around the engine's pieces.

    nice -n 0 python scripts/profile_decode.py [--rounds 3] [--threads 2] [--batch 1] [--aten]

Decodes the bundled models (NAR order with the NAR model, raster order with the raster model;
fp32, CFG 4, top-k 2000, batch 1 by default) and times each component exclusively (a
component's time excludes the components it calls): linears, RMSNorm, RoPE, the KV cache write,
attention, embeddings, the CFG combine, sampling, and "rest" = everything else in the step
(Python of the engine and the blocks, the logit gather and averaging, the CFG repeat, residual
adds, views). The timers cost about a microsecond each, so the total is a little above an
untimed decode's (printed beside it). --aten adds torch.profiler's top ATen ops per order.
Prints a markdown table of ms per step per component for both orders, and JSON with --json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import nar.decode  # noqa: E402
import nar.model  # noqa: E402
import nar.sampling  # noqa: E402
from nar.config import SamplingConfig  # noqa: E402
from nar.decode import decode_steps  # noqa: E402
from nar.loading import BUNDLED_DIR, load_folder  # noqa: E402
from nar.roofline import bound_seconds, measure_limits, step_costs  # noqa: E402
from nar.schedules import make_schedule  # noqa: E402


class ExclusiveTimer:
    """Seconds per component, each excluding the time of the components timed inside it."""

    def __init__(self):
        self.totals = defaultdict(float)
        self.stack: list[list] = []   # [name, start, child seconds]

    @contextmanager
    def part(self, name: str):
        self.stack.append([name, time.perf_counter(), 0.0])
        try:
            yield
        finally:
            name, start, children = self.stack.pop()
            spent = time.perf_counter() - start
            self.totals[name] += spent - children
            if self.stack:
                self.stack[-1][2] += spent

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            with self.part(name):
                return fn(*args, **kwargs)
        timed.__wrapped__ = fn
        return timed


def install(timer: ExclusiveTimer) -> list:
    """Replace the engine's pieces by timed wrappers; returns what to restore."""
    patches = [
        (torch.nn.Linear, "forward", "linear"),
        (nar.model.RMSNorm, "forward", "rmsnorm"),
        (nar.model, "apply_rope", "rope"),
        (nar.model.KVCache, "update", "kv cache write"),
        (F, "scaled_dot_product_attention", "attention (sdpa)"),
        (torch.nn.Embedding, "forward", "embedding"),
        (nar.decode, "cfg_combine", "cfg combine"),
        (nar.decode, "sample", "sampling"),
        (nar.decode, "run_step", "rest"),
    ]
    saved = []
    for owner, attr, label in patches:
        original = getattr(owner, attr)
        saved.append((owner, attr, original))
        setattr(owner, attr, timer.wrap(label, original))
    return saved


def restore(saved: list) -> None:
    for owner, attr, original in saved:
        setattr(owner, attr, original)


def decode_once(model, schedule, batch: int, sampling: SamplingConfig) -> None:
    for _ in decode_steps(model, schedule, torch.zeros(batch, dtype=torch.long), sampling, sync=False):
        pass


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: as the process has them)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--aten", action="store_true", help="also list torch.profiler's top ATen ops")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    _, nar_loaded, raster_loaded = load_folder(Path(BUNDLED_DIR), device=torch.device("cpu"), dtype=torch.float32)
    sampling = SamplingConfig(cfg_scale=4.0, top_k=2000, seed=0)
    limits = measure_limits(torch.device("cpu"), torch.float32)
    cases = {"nar": (nar_loaded.model, make_schedule("nar", 16)),
             "raster": (raster_loaded.model, make_schedule("raster", 16))}
    with torch.inference_mode():
        for model, schedule in cases.values():
            decode_once(model, schedule, args.batch, sampling)   # warm-up
        plain = {k: [] for k in cases}
        timed = {k: [] for k in cases}
        for _ in range(args.rounds):     # interleaved: plain and timed runs of both orders
            for key, (model, schedule) in cases.items():
                start = time.perf_counter()
                decode_once(model, schedule, args.batch, sampling)
                plain[key].append(time.perf_counter() - start)
                timer = ExclusiveTimer()
                saved = install(timer)
                try:
                    start = time.perf_counter()
                    decode_once(model, schedule, args.batch, sampling)
                    total = time.perf_counter() - start
                finally:
                    restore(saved)
                timed[key].append((total, dict(timer.totals)))
    report = {"threads": torch.get_num_threads(), "batch": args.batch, "limits": limits.to_json(), "orders": {}}
    for key, (model, schedule) in cases.items():
        steps = len(schedule)
        parts = defaultdict(list)
        for total, totals in timed[key]:
            for name, s in totals.items():
                parts[name].append(s)
            parts["timed total"].append(total)
        bound = bound_seconds(step_costs(model, schedule, args.batch, True), limits)
        report["orders"][key] = {
            "steps": steps, "untimed_ms_per_step": 1000 * statistics.median(plain[key]) / steps,
            "bound_ms_per_step": 1000 * bound / steps,
            "ms_per_step": {name: 1000 * statistics.median(v) / steps for name, v in parts.items()}}
    names = sorted({n for o in report["orders"].values() for n in o["ms_per_step"]} - {"timed total"})
    lines = [f"threads {report['threads']}, batch {args.batch}, CFG 4, fp32; medians of {args.rounds} decodes; "
             f"limits {limits.bandwidth_bytes_per_s / 1e9:.1f} GB/s, {limits.matmul_flops_per_s / 1e12:.2f} TFLOP/s",
             "", "| component (ms per step) | " + " | ".join(cases) + " |", "|---|" + "---:|" * len(cases)]
    for name in names + ["timed total"]:
        lines.append(f"| {name} | " + " | ".join(f"{report['orders'][k]['ms_per_step'].get(name, 0.0):.3f}"
                                                 for k in cases) + " |")
    for label, field in (("untimed decode", "untimed_ms_per_step"), ("roofline bound", "bound_ms_per_step")):
        lines.append(f"| {label} | " + " | ".join(f"{report['orders'][k][field]:.3f}" for k in cases) + " |")
    print("\n".join(lines))
    if args.aten:
        with torch.inference_mode():
            for key, (model, schedule) in cases.items():
                with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                    decode_once(model, schedule, args.batch, sampling)
                print(f"\n{key}: top ATen ops by self CPU time (one decode, {len(schedule)} steps)")
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
