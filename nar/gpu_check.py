"""The first run on a GPU, in one short command (about 8 minutes at most):

    bash scripts/gpu_check.sh OUT_DIR            # = python -m nar.gpu_check OUT_DIR
    python -m nar.gpu_check OUT_DIR --cpu-smoke  # the same steps on the CPU, CUDA-only parts skipped

Steps, each written to OUT_DIR/summary.json and summary.md as soon as it ends (a run cut off
part-way keeps what it did):
  1. the device: name, compute capability, the precision chosen (bf16 only where native);
  2. the CUDA-only tests (`pytest -k cuda`: graph replays, per-stream step timing, ...);
  3. `python -m nar.bench --quick` with CUDA graphs, and again with --no-cuda-graphs
     (OUT_DIR/bench/, OUT_DIR/bench-eager/);
  4. fp32 logits on the GPU against the CPU for the nar, raster and zipar orders: the largest
     absolute difference over the first few decoding steps, per order.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch

from .checkpoint import atomic_write
from .config import SamplingConfig
from .decode import decode_steps
from .devices import device_name, has_native_bf16, pick_dtype
from .loading import BUNDLED_DIR, ROOT, load
from .schedules import make_schedule

CUDA_TEST_FILES = ["tests/test_graphs.py", "tests/test_devices.py", "tests/test_precision.py", "tests/test_bench.py"]
ORDERS = {"nar": "nar", "raster": "raster", "zipar": "raster"}   # order -> model kind


def describe_device(device: torch.device) -> dict:
    info = {"device": device_name(device), "torch": torch.__version__, "cuda_available": torch.cuda.is_available(),
            "dtype_chosen": str(pick_dtype(device)).replace("torch.", ""), "native_bf16": has_native_bf16(device)}
    if device.type == "cuda":
        info.update(capability=list(torch.cuda.get_device_capability(device)),
                    is_bf16_supported=torch.cuda.is_bf16_supported(),
                    memory_bytes=torch.cuda.get_device_properties(device).total_memory)
    return info


def run_command(args: list[str], timeout: float, log_path: Optional[Path] = None) -> dict:
    start = time.perf_counter()
    try:
        done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=max(timeout, 1))
        rc, out, err = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as e:   # its stdout can be bytes even with text=True
        partial = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        rc, out, err = "timeout", partial, f"timed out after {timeout:.0f} s"
    if log_path is not None:
        atomic_write(log_path, lambda tmp: Path(tmp).write_text(f"$ {' '.join(args)}\n{out}\n{err}"))
    return {"returncode": rc, "seconds": round(time.perf_counter() - start, 1),
            "tail": (out + err).strip().splitlines()[-3:]}


def bench_summary(out_dir: Path) -> dict:
    files = sorted(out_dir.glob("*-quick.json"))
    if not files:
        return {"json": None}
    report = json.loads(files[0].read_text())
    return {"json": str(files[0]), "complete": report.get("complete"), "cuda_graphs": report.get("cuda_graphs"),
            "speedup": report.get("speedup"), "left_out": report.get("left_out"),
            "ms_per_image": {r["label"]: round(r["latency_per_image_s"] * 1000, 3) for r in report["results"]},
            "peak_memory_bytes": {r["label"]: r["peak_memory_bytes"] for r in report["results"]}}


@torch.inference_mode()
def step_logits(model, order: str, steps: int, class_ids: torch.Tensor, sampling: SamplingConfig) -> list:
    schedule = make_schedule(order, model.config.grid_size, 8)
    out = []
    for record in decode_steps(model, schedule, class_ids, sampling, record_logits=True):
        out.append((record.logits.float().cpu(), record.tokens.cpu()))
        if len(out) == steps:
            break
    return out


def compare_logits(folder: Path, device: torch.device, steps: int = 6) -> dict:
    """fp32 on `device` against fp32 on the CPU, step by step while the sampled tokens agree
    (after the first disagreement the two decodes see different inputs)."""
    ids, sampling = torch.tensor([0, 1]), SamplingConfig(cfg_scale=4.0, top_k=2000, seed=0)
    models = {}
    out = {}
    for order, kind in ORDERS.items():
        if kind not in models:
            models[kind] = {d.type: load(folder / f"{kind}.safetensors", expect=kind, device=d,
                                         dtype=torch.float32).model for d in (torch.device("cpu"), device)}
        cpu_run = step_logits(models[kind]["cpu"], order, steps, ids, sampling)
        dev_run = step_logits(models[kind][device.type], order, steps, ids, sampling)
        diffs, agree = [], 0
        for (lc, tc), (ld, td) in zip(cpu_run, dev_run):
            diffs.append(float((lc - ld).abs().max()))
            if not torch.equal(tc, td):
                break
            agree += 1
        out[order] = {"max_abs_logit_diff": max(diffs), "per_step": diffs, "steps_compared": len(diffs),
                      "steps_with_equal_tokens": agree}
    return out


def write_summary(out: Path, summary: dict) -> None:
    atomic_write(out / "summary.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=1)))
    lines = [f"# GPU check on {summary['device'].get('device')}", ""]
    for name, step in summary["steps"].items():
        lines.append(f"## {name}\n\n```\n{json.dumps(step, indent=1)}\n```\n")
    atomic_write(out / "summary.md", lambda tmp: Path(tmp).write_text("\n".join(lines)))


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nar.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir", help="folder for summary.json, summary.md, the bench JSON and logs")
    p.add_argument("--cpu-smoke", action="store_true",
                   help="run the same steps on the CPU (the CUDA-only tests are skipped): a dry run")
    p.add_argument("--checkpoints", default=str(BUNDLED_DIR))
    p.add_argument("--budget-s", type=float, default=480.0, help="stop starting new steps after this long")
    args = p.parse_args(argv)
    out, folder = Path(args.out_dir), Path(args.checkpoints)
    out.mkdir(parents=True, exist_ok=True)
    if not args.cpu_smoke and not torch.cuda.is_available():
        print("error: no CUDA device (use --cpu-smoke for a dry run on the CPU)", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.cpu_smoke else "cuda")
    start = time.perf_counter()
    left = lambda: args.budget_s - (time.perf_counter() - start)  # noqa: E731
    summary = {"device": describe_device(device), "cpu_smoke": args.cpu_smoke, "steps": {}}
    write_summary(out, summary)
    py = [sys.executable, "-m"]
    dev_args = ["--device", "cpu"] if args.cpu_smoke else []
    steps: list[tuple[str, Callable[[], dict]]] = [
        ("cuda_tests", lambda: {"skipped": "no GPU (dry run)"} if args.cpu_smoke else run_command(
            py + ["pytest", "-q", "-p", "no:cacheprovider", "-k", "cuda", *CUDA_TEST_FILES],
            min(left(), 200), out / "cuda_tests.txt")),
        ("bench_graphs", lambda: {**run_command(py + ["nar.bench", "--quick", "--checkpoints", str(folder),
                                                      "--out-dir", str(out / "bench"), *dev_args], min(left(), 150)),
                                  **bench_summary(out / "bench")}),
        ("bench_eager", lambda: {**run_command(py + ["nar.bench", "--quick", "--no-cuda-graphs", "--checkpoints",
                                                     str(folder), "--out-dir", str(out / "bench-eager"), *dev_args],
                                               min(left(), 120)),
                                 **bench_summary(out / "bench-eager")}),
        ("fp32_logits_vs_cpu", lambda: compare_logits(folder, device)),
    ]
    for name, step in steps:
        if left() <= 0:
            summary["steps"][name] = {"skipped": "out of time"}
        else:
            try:
                summary["steps"][name] = step()
            except Exception as e:   # report it and go on to the next step
                summary["steps"][name] = {"error": f"{type(e).__name__}: {e}"}
        summary["wall_seconds"] = round(time.perf_counter() - start, 1)
        write_summary(out, summary)
        print(f"[gpu_check] {name}: {json.dumps(summary['steps'][name])[:300]}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
