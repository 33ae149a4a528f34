"""The GPU check script's dry run on the CPU: the same steps, the CUDA-only tests skipped."""
import json
from pathlib import Path

import pytest
import torch

from nar.gpu_check import main


def test_cpu_smoke_run_writes_every_step(tiny_checkpoints, tmp_path):
    folder = Path(tiny_checkpoints["nar"]).parent
    assert main([str(tmp_path), "--cpu-smoke", "--checkpoints", str(folder)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    steps = summary["steps"]
    assert list(steps) == ["cuda_tests", "bench_graphs", "bench_eager", "fp32_logits_vs_cpu"]
    assert summary["cpu_smoke"] and summary["device"]["dtype_chosen"] == "float32"
    assert "skipped" in steps["cuda_tests"]
    for name in ("bench_graphs", "bench_eager"):
        assert steps[name]["returncode"] == 0, steps[name]
        assert steps[name]["complete"] and steps[name]["cuda_graphs"] is False   # no graphs on a CPU
        assert set(steps[name]["ms_per_image"]) == {"bundled nar", "bundled zipar-4", "bundled zipar-8",
                                                    "bundled raster"}
        assert Path(steps[name]["json"]).is_file()
    logits = steps["fp32_logits_vs_cpu"]
    assert set(logits) == {"nar", "raster", "zipar"}
    for order in logits.values():   # the CPU against itself: identical, step for step
        assert order["max_abs_logit_diff"] == 0.0 and order["steps_compared"] == 6
    assert "fp32_logits_vs_cpu" in (tmp_path / "summary.md").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_without_a_gpu_it_says_so(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "no CUDA device" in capsys.readouterr().err
