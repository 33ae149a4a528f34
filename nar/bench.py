"""Speed of raster, ZipAR and NAR decoding, measured side by side in one run.

    python -m nar.bench --quick --json       # bundled models, batch 1, CFG on: under a minute on 2 CPU cores
    python -m nar.bench                      # + the paper's sizes (random weights), batches, CFG on/off

Configurations are timed in interleaved rounds (round r runs each configuration once) after
a warm-up, so slow drifts of the machine hit all of them alike; latency is the median over
rounds with the interquartile range as spread. With CUDA graphs every configuration holds its
KV cache and graph pool from warm-up to its last round, so only those that fit together are
interleaved (one suite and batch at a time, fewer where the GPU's free memory says so) and each
group is freed before the next. Results go to runs/bench/<device>.json (--out-dir benchmarks
replaces the committed ones), rewritten after every group so a cut-off run keeps what it
measured; --json prints the same object as the last line.

On a CPU each decode picks its threads by nar/threads.py (at most the cores no other program is
busy on; one for a small step); --fixed-threads runs every step on --threads instead.
--busy-neighbour starts one busy-loop process beside the timing (after the limits are measured,
so the bound stays the machine's) and writes <device>[-quick]-busy.json: what a second program on
the machine costs each order.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterable, Optional

import torch

from .bench_plots import plot
from .checkpoint import atomic_write
from .config import SamplingConfig, model_config
from .decode import compiled_graph_count, decode_steps
from .devices import device_name, pick_device, pick_dtype
from .graphs import CaptureError, GraphedDecode, is_out_of_memory, probe_condition
from .model import Transformer
from .loading import BUNDLED_DIR, ROOT, load_folder
from .roofline import MachineLimits, bound_seconds, measure_limits, memory_bound_steps, memory_bytes, step_costs
from .schedules import Schedule, make_schedule
from . import threads as cpu_threads

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
    compiled: bool = False  # each step's trunk through torch.compile (compiled during warm-up)
    _graphed: Optional[GraphedDecode] = field(default=None, init=False, repr=False)

    @cached_property
    def schedule(self) -> Schedule:
        cfg = self.model.config
        return make_schedule(self.order, cfg.grid_size, self.window or 8, frames=cfg.frames)

    def run(self) -> None:
        ids = probe_condition(self.model, self.batch)   # a class id or text features: speed does not depend on them
        sampling = SamplingConfig(cfg_scale=4.0 if self.cfg else 1.0, top_k=2000)
        if self.graphs:
            if self._graphed is None:
                self._graphed = GraphedDecode(self.model, self.schedule, self.batch, sampling)
            grid = self._graphed(ids)
        else:
            for record in decode_steps(self.model, self.schedule, ids, sampling, sync=False,
                                       compiled=self.compiled):
                pass
            grid = record.grid
        synchronize(grid.device)

    @property
    def steps(self) -> int:
        return len(self.schedule)

    @property
    def device(self) -> torch.device:
        return self.model.tok_embeddings.weight.device

    def release(self) -> None:
        """Free the captured graphs and buffers (the next run captures them again)."""
        if self._graphed is not None:
            self._graphed.release()
        self._graphed = None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cases_for(label: str, suite: str, nar_model: Transformer, raster_model: Transformer,
              batches: Iterable[int], cfgs: Iterable[bool], graphs: bool = False,
              windows: Iterable[int] = ZIPAR_WINDOWS) -> list[Case]:
    out = []
    for batch in batches:
        for cfg in cfgs:
            out.append(Case(f"{label} nar", suite, nar_model, "nar", None, batch, cfg, graphs))
            for w in windows:
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


def text_cases(folder: Path, device, dtype, batches, cfgs, graphs: bool) -> list[Case]:
    """Text-to-image cases: the bundled t2i models (a 48-token text prefix) when the folder has
    them, and the bundled size with the official 120 x 2048 FLAN-T5 prefix (random weights), so
    the prefill cost of the prefix shows beside the class models' one token."""
    cases = []
    if (folder / "t2i_nar.safetensors").is_file():
        _, nar_loaded, raster_loaded = load_folder(folder, device=device, dtype=dtype, prefix="t2i_")
        cases += cases_for("t2i", "t2i", nar_loaded.model, raster_loaded.model, batches, cfgs, graphs)
    torch.manual_seed(0)
    pair = [Transformer(model_config("GPT-S", kind=kind, vocab_size=1024, grid_size=16, condition="text",
                                     cls_token_num=120, caption_dim=2048)).to(device=device, dtype=dtype).eval()
            for kind in ("nar", "raster")]
    return cases + cases_for("t2i-120", "t2i-120", pair[0], pair[1], batches, cfgs, graphs)


@dataclass
class Outcome:
    """What timing one case gave: seconds per run, its own peak memory, or why it has no times."""
    times: list[float] = field(default_factory=list)
    peak_memory_bytes: Optional[int] = None   # GPU bytes the case allocated itself (None on a CPU)
    left_out: Optional[str] = None
    warmup_s: Optional[float] = None          # the warm-up runs' time: with --compile, mostly compiling


def free_device_bytes(device: torch.device) -> Optional[int]:
    """Free GPU memory now (None off CUDA, where nothing is kept between runs)."""
    return torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None


def case_bytes(case: Case) -> int:
    """What a case holds beyond the weights while it is kept: its KV cache (exact) and, for the
    logits, CFG and sampling, a few fp32 [B', Q, vocab] buffers (an estimate; a case that needs
    more runs out of memory alone and is reported as not fitting)."""
    seqs = case.batch * (2 if case.cfg else 1)
    widest = max(len(targets) for targets in case.schedule.steps)
    kv = memory_bytes(case.model, case.schedule, case.batch, case.cfg)["kv_cache_bytes"]
    return kv + 4 * seqs * widest * case.model.config.vocab_size * 4


def plan_groups(cases: list[Case], free_bytes: Optional[int], headroom: float = 0.8) -> list[list[int]]:
    """Indices of the cases to interleave together. Eager cases hold memory only while they run:
    one group. Graphed cases keep theirs until freed: one suite and batch per group, split where
    the estimated total exceeds `headroom` of the free memory."""
    if not any(c.graphs for c in cases):
        return [list(range(len(cases)))]
    by_key: dict[tuple, list[int]] = {}
    for i, case in enumerate(cases):
        by_key.setdefault((case.suite, case.batch), []).append(i)
    budget = None if free_bytes is None else headroom * free_bytes
    groups = []
    for members in by_key.values():
        group, used = [], 0
        for i in members:
            need = case_bytes(cases[i])
            if group and budget is not None and used + need > budget:
                groups.append(group)
                group, used = [], 0
            group.append(i)
            used += need
        groups.append(group)
    return groups


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def warm_up(case: Case, warmup: int) -> Outcome:
    """Run a case until it is ready to time (CUDA graphs are captured here), measuring its own
    peak memory: the graph pool is allocated at capture, the replays allocate nothing."""
    device = case.device
    before = 0
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    failure = None
    started = time.perf_counter()
    try:
        for _ in range(max(1, warmup)):
            case.run()
    except (torch.cuda.OutOfMemoryError, CaptureError) as e:
        failure = "does not fit in GPU memory" if is_out_of_memory(e) else str(e)
    if failure is not None:
        # out of the except block: no traceback keeps the half-built decode alive
        case.release()
        free_memory(device)
        return Outcome(left_out=failure)
    peak = torch.cuda.max_memory_allocated(device) - before if device.type == "cuda" else None
    return Outcome(peak_memory_bytes=peak, warmup_s=time.perf_counter() - started)


def time_interleaved(cases: list[Case], rounds: int, warmup: int, progress: Callable[[str], None],
                     groups: Optional[list[list[int]]] = None,
                     group_done: Callable[[dict[int, Outcome]], None] = lambda outcomes: None) -> dict[int, Outcome]:
    """Time each group of cases (default: all together) in interleaved rounds, freeing the group
    before the next; `group_done` gets the outcomes so far after each group. A case that fails
    to warm up (out of GPU memory, a failed capture) gets no times and the run goes on."""
    outcomes: dict[int, Outcome] = {}
    groups = groups if groups is not None else [list(range(len(cases)))]
    for g, group in enumerate(groups):
        for i in group:
            case = cases[i]
            outcomes[i] = warm_up(case, warmup)
            note = f": {outcomes[i].left_out}, left out" if outcomes[i].left_out else ""
            progress(f"group {g + 1}/{len(groups)} warm-up {i + 1}/{len(cases)}: {case.label} "
                     f"b={case.batch} cfg={case.cfg}{note}")
        fits = [i for i in group if outcomes[i].left_out is None]
        for r in range(rounds):
            for i in fits:
                start = time.perf_counter()
                cases[i].run()
                outcomes[i].times.append(time.perf_counter() - start)
        for i in group:
            cases[i].release()
        if group:
            free_memory(cases[group[0]].device)
        progress(f"group {g + 1}/{len(groups)} done ({rounds} rounds)")
        group_done(outcomes)
    return outcomes


def summarise(case: Case, outcome: Outcome, limits: MachineLimits) -> dict:
    seconds = outcome.times
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
            "rounds": len(seconds), "peak_memory_bytes": outcome.peak_memory_bytes, "cuda_graphs": case.graphs,
            "compiled": case.compiled, "warmup_s": outcome.warmup_s,
            **memory_bytes(case.model, case.schedule, case.batch, case.cfg),
            "bound_per_image_s": bound / case.batch, "times_bound": median / bound,
            "memory_bound_steps": memory_bound_steps(costs, limits),
            "bytes_read": sum(c.bytes for c in costs), "flops": sum(c.flops for c in costs)}


@torch.inference_mode()
def vq_decode_time(vq, rounds: int = 5, frames: int = 1, n: Optional[int] = None) -> dict:
    """The tokenizer's time for one image's tokens (a clip's: `frames` grids of n x n)."""
    n = n or vq.cfg.grid_size
    tokens = torch.zeros(frames, n, n, dtype=torch.long, device=next(vq.parameters()).device)
    vq.decode(tokens)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        vq.decode(tokens)
        synchronize(tokens.device)
        times.append(time.perf_counter() - start)
    return {"vq_decode_median_s": statistics.median(times), "image_size": vq.cfg.downsample * n, "frames": frames}


def speedups(results: list[dict], suite: str = "bundled", batch: int = 1, cfg: bool = True,
             compiled: bool = False) -> dict:
    """Per-image wall-clock ratios against raster for one suite, batch and CFG setting (eager
    or compiled steps: each order against raster run the same way)."""
    pick = {r["label"].split(" ", 1)[1]: r["latency_per_image_s"] for r in results
            if r["suite"] == suite and r["batch"] == batch and r["cfg"] == cfg
            and r.get("compiled", False) == compiled}
    if "raster" not in pick or "nar" not in pick:
        return {}
    out = {"nar_vs_raster": pick["raster"] / pick["nar"]}
    zipars = {k: pick["raster"] / v for k, v in pick.items() if k.startswith("zipar")}
    if zipars:
        out["zipar_vs_raster"] = zipars.get("zipar-8", max(zipars.values()))
        out.update({f"{k}_vs_raster": v for k, v in zipars.items()})
    return out


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
    if r.get("compiled"):
        label += " (compiled)"
    return {"suite": str(r.get("suite", "")), "label": label, "order": str(order), "window": window,
            "batch": batch, "cfg": bool(r.get("cfg", True)), "per_image_s": per_image,
            "images_per_s": 1.0 / per_image}


def start_busy_neighbour() -> subprocess.Popen:
    """Another program keeping one core busy (a pure Python loop), at our own priority."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(process: Optional[subprocess.Popen]) -> None:
    if process is not None and process.poll() is None:
        process.kill()
        process.wait()


def load_average() -> Optional[list[float]]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


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
                   help="auto: bfloat16 on a GPU with native bf16 (compute capability 8.0+), else float32")
    p.add_argument("--no-cuda-graphs", action="store_true",
                   help="on a GPU, launch every step's kernels instead of replaying captured CUDA graphs")
    p.add_argument("--out-dir", default=str(ROOT / "runs" / "bench"),
                   help="where the JSON and plots go (pass benchmarks to replace the committed results)")
    p.add_argument("--video", action="store_true",
                   help="the video cases instead (nar/bench_video.py): bundled 4x8x8 clips and random 4x16x16 ones")
    p.add_argument("--text", action="store_true",
                   help="also time text-to-image decoding (bundled t2i models, and a 120-token prefix)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice, one per core); each decode may use fewer")
    p.add_argument("--fixed-threads", action="store_true",
                   help="run every step on --threads, whatever the step size and the machine's load")
    p.add_argument("--busy-neighbour", action="store_true",
                   help="time beside one busy-loop process (written to <device>[-quick]-busy.json)")
    p.add_argument("--compile", action="store_true",
                   help="also time every case with its steps through torch.compile, beside the eager ones "
                        "(compile time is the warm-up, reported as warmup_s; written to <device>[-quick]-compile.json)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            sys.exit("error: --threads must be at least 1")
        torch.set_num_threads(args.threads)
    if args.fixed_threads:
        cpu_threads.set_policy(cpu_threads.ThreadPolicy(adaptive=False))
    device = pick_device(args.device)
    dtype = pick_dtype(device) if args.dtype == "auto" else getattr(torch, args.dtype)
    log = lambda msg: print(f"[bench] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    if args.video:
        from .bench_video import run_video       # imported here: it imports this module
        report = run_video(args, device, dtype, log)
        if args.json:
            print(json.dumps(report))
        return
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
    if args.text:
        cases += text_cases(Path(args.checkpoints), device, dtype, batches, cfgs, graphs)
    if args.compile:   # the compiled twin of each case, timed in the same interleaved rounds
        cases += [replace(c, compiled=True) for c in cases]
    rounds = 3 if args.quick else args.rounds
    limits = measure_limits(device, dtype)
    log(f"measured limits: {limits.bandwidth_bytes_per_s / 1e9:.0f} GB/s copy, "
        f"{limits.matmul_flops_per_s / 1e12:.2f} TFLOP/s matmul ({dtype})")
    name = device_name(device)
    suffix = ("-quick" if args.quick else "") + ("-busy" if args.busy_neighbour else "") + \
        ("-fixed" if args.fixed_threads else "") + ("-compile" if args.compile else "")
    out_path = Path(args.out_dir) / f"{name}{suffix}.json"
    free_memory(device)   # the limits' big buffers are still cached: free them before asking what is free
    groups = plan_groups(cases, free_device_bytes(device))
    log(f"{len(cases)} configurations in {len(groups)} group(s) x {rounds} interleaved rounds on {name} ({dtype})")
    report = {"device": name, "dtype": str(dtype).replace("torch.", ""), "torch": torch.__version__,
              "machine": platform.machine(), "quick": args.quick, "cuda_graphs": graphs, "complete": False,
              "vq": vq_decode_time(vq), "limits": limits.to_json(),
              "threads": {"torch_threads": torch.get_num_threads(), "policy": vars(cpu_threads.POLICY).copy()}
              if device.type == "cpu" else None,
              "busy_neighbour": args.busy_neighbour, "load_average_start": load_average()}
    start = time.perf_counter()

    def write_report(outcomes: dict[int, Outcome]) -> None:
        """Rewritten after every group, so a run cut off part-way still leaves its results."""
        results = [summarise(cases[i], o, limits) for i, o in sorted(outcomes.items()) if o.times]
        report.update(speedup=speedups(results), results=results,
                      speedup_compiled=speedups(results, compiled=True) if args.compile else None,
                      compiled_graphs=compiled_graph_count() if args.compile else None,
                      left_out=[{"suite": cases[i].suite, "label": cases[i].label, "batch": cases[i].batch,
                                 "cfg": cases[i].cfg, "reason": o.left_out}
                                for i, o in sorted(outcomes.items()) if o.left_out],
                      speedup_by_suite={size: speedups(results, suite=size)
                                        for size in sorted({r["suite"] for r in results} - {"bundled"})},
                      peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      load_average_end=load_average(),
                      wall_seconds=time.perf_counter() - start)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        if not args.quick and results:
            # file names beside the report: it stays right when the folder is moved or committed
            report["plots"] = [Path(p).name for p in plot(results, out_path.parent, name, ZIPAR_WINDOWS)]
        atomic_write(out_path, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=1)))

    neighbour = start_busy_neighbour() if args.busy_neighbour else None
    try:
        outcomes = time_interleaved(cases, rounds, args.warmup, log, groups, write_report)
    finally:
        stop(neighbour)
    report["complete"] = True
    write_report(outcomes)
    results = report["results"]
    for r in results:
        log(f"{r['label'] + (' compiled' if r['compiled'] else ''):>31} b={r['batch']:<3} "
            f"cfg={'on ' if r['cfg'] else 'off'} steps={r['steps']:<4} "
            f"{r['latency_per_image_s'] * 1000:9.1f} ms/image  {r['images_per_s']:8.2f} img/s  "
            f"{r['times_bound']:6.1f}x bound" + (f"  (warm-up {r['warmup_s']:.1f} s)" if r['compiled'] else ""))
    log(f"speedup vs raster (bundled, batch 1, CFG on): {report['speedup']}")
    if args.compile:
        log(f"compiled steps, speedup vs compiled raster: {report['speedup_compiled']}; "
            f"{report['compiled_graphs']} graphs compiled")
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
