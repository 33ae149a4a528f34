"""Speed of raster, ZipAR and NAR decoding, measured side by side in one run.

    python -m nar.bench --quick --json       # bundled models, batch 1, CFG on: under a minute on 2 CPU cores
    python -m nar.bench                      # + the paper's sizes (random weights), batches, CFG on/off

Every configuration is timed in interleaved rounds (round r runs each configuration once) after
a warm-up, so slow drifts of the machine hit all of them alike; latency is the median over
rounds with the interquartile range as spread. Results go to benchmarks/<device>.json with
plots next to it; --json prints the same object as the last line.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterable, Optional

import torch

from .config import SamplingConfig, model_config
from .decode import decode_steps
from .graphs import GraphedDecode
from .model import Transformer
from .loading import BUNDLED_DIR, ROOT, load_folder, pick_device, pick_dtype
from .roofline import MachineLimits, bound_seconds, measure_limits, memory_bound_steps, memory_bytes, step_costs
from .schedules import Schedule, make_schedule, nar, raster, zipar

ZIPAR_WINDOWS = (4, 8)


@dataclass
class Case:
    """One thing to time: a model, an order and a batch."""
    label: str
    suite: str            # "bundled" or a paper size such as "GPT-L"
    model: Transformer
    order: str
    window: Optional[int]
    batch: int
    cfg: bool
    graphs: bool = False   # replay CUDA graphs (built during warm-up) instead of launching eagerly
    _graphed: Optional[GraphedDecode] = field(default=None, init=False, repr=False)

    @cached_property
    def schedule(self) -> Schedule:
        return make_schedule(self.order, self.model.config.grid_size, self.window or 8)

    def run(self) -> None:
        ids = torch.zeros(self.batch, dtype=torch.long)
        sampling = SamplingConfig(cfg_scale=4.0 if self.cfg else 1.0, top_k=2000)
        if self.graphs:
            if self._graphed is None:
                self._graphed = GraphedDecode(self.model, self.schedule, self.batch, sampling)
            grid = self._graphed(ids)
        else:
            for record in decode_steps(self.model, self.schedule, ids, sampling, sync=False):
                pass
            grid = record.grid
        synchronize(grid.device)

    @property
    def steps(self) -> int:
        return len(self.schedule)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device).replace(" ", "-")
    return f"cpu-{torch.get_num_threads()}threads"


def cases_for(label: str, suite: str, nar_model: Transformer, raster_model: Transformer,
              batches: Iterable[int], cfgs: Iterable[bool], graphs: bool = False) -> list[Case]:
    out = []
    for batch in batches:
        for cfg in cfgs:
            out.append(Case(f"{label} nar", suite, nar_model, "nar", None, batch, cfg, graphs))
            for w in ZIPAR_WINDOWS:
                out.append(Case(f"{label} zipar-{w}", suite, raster_model, "zipar", w, batch, cfg, graphs))
            out.append(Case(f"{label} raster", suite, raster_model, "raster", None, batch, cfg, graphs))
    return out


def random_pair(size: str, device, dtype, grid: int = 16, vocab: int = 16384) -> tuple[Transformer, Transformer]:
    """NAR (with its extra block) and raster models of a paper size; weights do not affect speed."""
    torch.manual_seed(0)
    models = []
    for kind in ("nar", "raster"):
        m = Transformer(model_config(size, kind=kind, vocab_size=vocab, grid_size=grid, num_classes=1000))
        models.append(m.to(device=device, dtype=dtype).eval())
    return models[0], models[1]


def time_interleaved(cases: list[Case], rounds: int, warmup: int,
                     progress: Callable[[str], None]) -> dict[int, list[float]]:
    """Seconds per run of each case (by index); a case that runs out of GPU memory while warming
    up gets no times and is left out of the rounds, so "up to what fits" needs no guessing."""
    times: dict[int, list[float]] = {i: [] for i in range(len(cases))}
    fits = []
    for i, case in enumerate(cases):
        try:
            for _ in range(max(1, warmup)):
                case.run()
            fits.append(i)
            progress(f"warm-up {i + 1}/{len(cases)}: {case.label} b={case.batch} cfg={case.cfg}")
        except torch.cuda.OutOfMemoryError:
            case._graphed = None
            torch.cuda.empty_cache()
            progress(f"warm-up {i + 1}/{len(cases)}: {case.label} b={case.batch} cfg={case.cfg} "
                     "does not fit in GPU memory: left out")
    for r in range(rounds):
        for i in fits:
            case = cases[i]
            start = time.perf_counter()
            case.run()
            times[i].append(time.perf_counter() - start)
        progress(f"round {r + 1}/{rounds} done")
    return times


def peak_memory(case: Case) -> Optional[int]:
    """Peak GPU bytes of one run (None on CPU, where torch does not track allocations)."""
    device = case.model.tok_embeddings.weight.device
    if device.type != "cuda":
        return None
    torch.cuda.reset_peak_memory_stats(device)
    case.run()
    return int(torch.cuda.max_memory_allocated(device))


def summarise(case: Case, seconds: list[float], limits: MachineLimits) -> dict:
    q = statistics.quantiles(seconds, n=4) if len(seconds) >= 2 else [seconds[0]] * 3
    median = statistics.median(seconds)
    cfg = case.model.config
    costs = step_costs(case.model, case.schedule, case.batch, case.cfg)
    bound = bound_seconds(costs, limits)
    return {"suite": case.suite, "label": case.label, "order": case.order, "window": case.window,
            "model": cfg.kind, "params": sum(p.numel() for p in case.model.parameters()),
            "batch": case.batch, "cfg": case.cfg, "steps": case.steps, "grid": cfg.grid_size,
            "latency_median_s": median, "latency_iqr_s": [q[0], q[2]],
            "latency_per_image_s": median / case.batch, "images_per_s": case.batch / median,
            "rounds": len(seconds), "peak_memory_bytes": peak_memory(case), "cuda_graphs": case.graphs,
            **memory_bytes(case.model, case.schedule, case.batch, case.cfg),
            "bound_per_image_s": bound / case.batch, "times_bound": median / bound,
            "memory_bound_steps": memory_bound_steps(costs, limits),
            "bytes_read": sum(c.bytes for c in costs), "flops": sum(c.flops for c in costs)}


@torch.inference_mode()
def vq_decode_time(vq, rounds: int = 5) -> dict:
    n = vq.cfg.grid_size
    tokens = torch.zeros(1, n, n, dtype=torch.long, device=next(vq.parameters()).device)
    vq.decode(tokens)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        vq.decode(tokens)
        synchronize(tokens.device)
        times.append(time.perf_counter() - start)
    return {"vq_decode_median_s": statistics.median(times), "image_size": vq.cfg.image_size}


def speedups(results: list[dict], suite: str = "bundled", batch: int = 1, cfg: bool = True) -> dict:
    """Per-image wall-clock ratios against raster for one suite, batch and CFG setting."""
    pick = {r["label"].split(" ", 1)[1]: r["latency_per_image_s"] for r in results
            if r["suite"] == suite and r["batch"] == batch and r["cfg"] == cfg}
    if "raster" not in pick or "nar" not in pick:
        return {}
    out = {"nar_vs_raster": pick["raster"] / pick["nar"]}
    zipars = {k: pick["raster"] / v for k, v in pick.items() if k.startswith("zipar")}
    if zipars:
        out["zipar_vs_raster"] = zipars.get("zipar-8", max(zipars.values()))
        out.update({f"{k}_vs_raster": v for k, v in zipars.items()})
    return out


def plot(results: list[dict], out_dir: Path, device: str) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    paths = []
    for metric, ylabel, name in (("latency_per_image_s", "seconds per image", "latency"),
                                 ("images_per_s", "images per second", "throughput")):
        suites = sorted({r["suite"] for r in results})
        fig, axes = plt.subplots(1, len(suites), figsize=(5 * len(suites), 4), squeeze=False)
        for ax, suite in zip(axes[0], suites):
            for label in sorted({r["label"] for r in results if r["suite"] == suite}):
                rows = sorted((r for r in results if r["suite"] == suite and r["label"] == label and r["cfg"]),
                              key=lambda r: r["batch"])
                if rows:
                    ax.plot([r["batch"] for r in rows], [r[metric] for r in rows], "o-", label=label.split(" ", 1)[1])
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("batch size (CFG on)")
            ax.set_ylabel(ylabel)
            ax.set_title(suite)
            ax.grid(alpha=0.3)
            ax.legend()
        fig.suptitle(f"{name} vs batch on {device}")
        fig.tight_layout()
        path = out_dir / f"{device}_{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(str(path))
    paths.append(plot_steps(out_dir / "steps_vs_grid.png"))
    return paths


def plot_steps(path: Path) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ns = list(range(4, 33, 2))
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(ns, [len(raster(n)) for n in ns], "o-", label="raster (n²)")
    for w in ZIPAR_WINDOWS:
        ax.plot(ns, [len(zipar(n, min(w, n))) for n in ns], "o-", label=f"ZipAR window {w}")
    ax.plot(ns, [len(nar(n)) for n in ns], "o-", label="NAR (2n-1)")
    ax.set_yscale("log")
    ax.set_xlabel("grid side n (tokens)")
    ax.set_ylabel("forward passes per image")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


# -- reading reports back -----------------------------------------------------------------------
def read_report(path: Path) -> tuple[str, list[dict]]:
    """(device name, result rows) of a report this benchmark wrote; tolerant of missing keys (an
    older or hand-made file): rows without a batch size or any time are skipped, the rest filled in."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{Path(path).name} is not a readable benchmark file ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{Path(path).name} is not a benchmark report (no results)")
    device = str(data.get("device") or Path(path).stem)
    rows = [row for row in (normalise_result(r) for r in data.get("results") or [] if isinstance(r, dict))
            if row is not None]
    return device, rows


def normalise_result(r: dict) -> Optional[dict]:
    """One result row with its time per image, or None when it has no usable time."""
    try:
        batch = int(r.get("batch", 1) or 1)
    except (TypeError, ValueError):
        return None
    per_image = None
    for key, conv in (("latency_per_image_s", lambda v: v), ("latency_median_s", lambda v: v / batch),
                      ("images_per_s", lambda v: 1.0 / v if v else None)):
        value = r.get(key)
        if isinstance(value, (int, float)) and value > 0:
            per_image = conv(float(value))
            break
    if per_image is None:
        return None
    order = r.get("order") or str(r.get("label", "?")).split(" ")[-1]
    window = r.get("window")
    label = str(r.get("label") or order).split(" ")[-1] if r.get("label") else (
        f"{order}-{window}" if order == "zipar" and window else str(order))
    return {"suite": str(r.get("suite", "")), "label": label, "order": str(order), "window": window,
            "batch": batch, "cfg": bool(r.get("cfg", True)), "per_image_s": per_image,
            "images_per_s": 1.0 / per_image}


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(prog="python -m nar.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="bundled models, batch 1, CFG on")
    p.add_argument("--sizes", default="GPT-B,GPT-L,GPT-XL", help="paper sizes to time (random weights)")
    p.add_argument("--batches", default=None,
                   help="batch sizes (default 1,4,16 on a CPU; 1,16,64,256,1024 on a GPU, those that fit)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--checkpoints", default=str(BUNDLED_DIR),
                   help="folder with nar.safetensors, raster.safetensors and vq.safetensors")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                   help="auto: bfloat16 on a GPU, float32 on a CPU")
    p.add_argument("--no-cuda-graphs", action="store_true",
                   help="on a GPU, launch every step's kernels instead of replaying captured CUDA graphs")
    p.add_argument("--out-dir", default=str(ROOT / "benchmarks"))
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    device = pick_device(args.device)
    dtype = pick_dtype(device) if args.dtype == "auto" else getattr(torch, args.dtype)
    log = lambda msg: print(f"[bench] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    try:
        vq, nar_loaded, raster_loaded = load_folder(Path(args.checkpoints), device=device, dtype=dtype)
        nar_model, raster_model = nar_loaded.model, raster_loaded.model
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: the bundled models are needed ({e})")
    default_batches = "1,16,64,256,1024" if device.type == "cuda" else "1,4,16"
    batches = [1] if args.quick else [int(b) for b in (args.batches or default_batches).split(",")]
    cfgs = [True] if args.quick else [True, False]
    graphs = device.type == "cuda" and not args.no_cuda_graphs
    cases = cases_for("bundled", "bundled", nar_model, raster_model, batches, cfgs, graphs)
    if not args.quick:
        for size in filter(None, args.sizes.split(",")):
            pair = random_pair(size, device, dtype)
            cases += cases_for(size, size, pair[0], pair[1], batches, cfgs, graphs)
    rounds = 3 if args.quick else args.rounds
    limits = measure_limits(device, dtype)
    log(f"measured limits: {limits.bandwidth_bytes_per_s / 1e9:.0f} GB/s copy, "
        f"{limits.matmul_flops_per_s / 1e12:.2f} TFLOP/s matmul ({dtype})")
    log(f"{len(cases)} configurations x {rounds} interleaved rounds on {device_name(device)} ({dtype})")
    start = time.perf_counter()
    times = time_interleaved(cases, rounds, args.warmup, log)
    results = [summarise(c, times[i], limits) for i, c in enumerate(cases) if times[i]]
    report_left_out = [{"label": c.label, "batch": c.batch, "cfg": c.cfg, "reason": "out of GPU memory"}
                       for i, c in enumerate(cases) if not times[i]]
    name = device_name(device)
    report = {"device": name, "dtype": str(dtype).replace("torch.", ""), "torch": torch.__version__,
              "machine": platform.machine(), "quick": args.quick,
              "speedup": speedups(results), "vq": vq_decode_time(vq), "limits": limits.to_json(),
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "wall_seconds": time.perf_counter() - start, "results": results,
              "left_out": report_left_out}
    for size in {r["suite"] for r in results} - {"bundled"}:
        report.setdefault("speedup_by_suite", {})[size] = speedups(results, suite=size)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not args.quick:
        report["plots"] = plot(results, out_dir, name)
    suffix = "-quick" if args.quick else ""
    (out_dir / f"{name}{suffix}.json").write_text(json.dumps(report, indent=1))
    for r in results:
        log(f"{r['label']:>22} b={r['batch']:<3} cfg={'on ' if r['cfg'] else 'off'} steps={r['steps']:<4} "
            f"{r['latency_per_image_s'] * 1000:9.1f} ms/image  {r['images_per_s']:8.2f} img/s  "
            f"{r['times_bound']:6.1f}x bound")
    log(f"speedup vs raster (bundled, batch 1, CFG on): {report['speedup']}")
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
