"""python -m nar.bench runs and reports what it promises (no timing assertions: speed targets
are read from its output, not asserted in unit tests)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def test_bench_quick_json(tiny_checkpoints, tmp_path):
    folder = Path(tiny_checkpoints["nar"]).parent
    result = subprocess.run([sys.executable, "-m", "nar.bench", "--quick", "--json", "--checkpoints", str(folder),
                             "--out-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(report["speedup"]) >= {"nar_vs_raster", "zipar_vs_raster"}
    assert all(v > 0 for v in report["speedup"].values())
    steps = {r["label"]: r["steps"] for r in report["results"]}
    assert steps == {"bundled nar": 7, "bundled zipar-4": 16, "bundled zipar-8": 16, "bundled raster": 16}
    assert all(r["batch"] == 1 and r["cfg"] and r["rounds"] == 3 for r in report["results"])
    assert report["vq"]["vq_decode_median_s"] > 0
    assert report["limits"]["bandwidth_bytes_per_s"] > 0 and report["limits"]["matmul_flops_per_s"] > 0
    for r in report["results"]:
        assert r["bound_per_image_s"] > 0 and r["flops"] > 0 and r["bytes_read"] > 0
        assert r["times_bound"] * r["bound_per_image_s"] == pytest.approx(r["latency_median_s"])
    assert (tmp_path / f"{report['device']}-quick.json").is_file()


def test_bench_full_writes_plots(tiny_checkpoints, tmp_path):
    folder = Path(tiny_checkpoints["nar"]).parent
    result = subprocess.run([sys.executable, "-m", "nar.bench", "--json", "--checkpoints", str(folder), "--sizes", "",
                             "--batches", "1,2", "--rounds", "2", "--out-dir", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert {(r["batch"], r["cfg"]) for r in report["results"]} == {(1, True), (1, False), (2, True), (2, False)}
    for path in report["plots"]:
        assert Path(path).stat().st_size > 1000


def test_cases_that_run_out_of_gpu_memory_are_left_out(make_model):
    from nar.bench import Case, time_interleaved

    class TooBig(Case):
        def run(self):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    model = make_model("nar", grid=4)
    cases = [Case("small", "s", model, "nar", None, 1, True), TooBig("big", "s", model, "nar", None, 64, True)]
    messages = []
    times = time_interleaved(cases, rounds=2, warmup=1, progress=messages.append)
    assert len(times[0]) == 2 and times[1] == []
    assert any("does not fit" in m and "big" in m for m in messages)
