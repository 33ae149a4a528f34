"""python -m nar.eval end to end on tiny checkpoints, a tiny data set and an untrained judge."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from nar.checkpoint import save_checkpoint
from nar.judge import Judge, JudgeConfig

ROOT = Path(__file__).resolve().parent.parent


def test_eval_reports_every_order(tiny_checkpoints, tmp_path):
    from conftest import write_tiny_image_set
    data = write_tiny_image_set(tmp_path / "data", per_class=8)
    judge = Judge(JudgeConfig(num_classes=3, image_size=16))
    save_checkpoint(tmp_path / "judge.safetensors", "classifier", judge.state_dict(), judge.config.to_dict(),
                    {"class_names": ["cat", "dog", "sun"], "test_accuracy": 0.5})
    result = subprocess.run(
        [sys.executable, "-m", "nar.eval", "--json", "--checkpoints", str(Path(tiny_checkpoints["nar"]).parent),
         "--judge", str(tmp_path / "judge.safetensors"), "--data", str(data), "--per-class", "3",
         "--window", "2", "--samples-dir", str(tmp_path / "samples"), "--sweep-cfg", "1,3"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    orders = report["orders"]
    assert {k: v["steps"] for k, v in orders.items()} == {"nar": 7, "raster": 16, "zipar": 10}
    for order in orders.values():
        assert 0.0 <= order["class_accuracy"] <= 1.0
        assert np.isfinite(order["frechet_distance"]) and order["frechet_distance"] >= 0
        assert set(order["per_class_accuracy"]) == {"cat", "dog", "sun"}
    assert report["nar_vs_raster"]["step_ratio"] == 16 / 7
    assert (tmp_path / "samples" / "samples_nar.png").is_file()
    sweep = report["cfg_sweep"]
    assert [(r["order"], r["cfg_scale"]) for r in sweep] == [(o, s) for s in (1.0, 3.0) for o in ("nar", "raster", "zipar")]
    at_3 = {r["order"]: r for r in sweep if r["cfg_scale"] == 3.0}
    assert report["cfg_scale"] == 4.0 and at_3["nar"]["frechet_distance"] != orders["nar"]["frechet_distance"]
    assert Path(report["cfg_sweep_plot"]).stat().st_size > 5000
    from nar.eval import with_headline
    assert [r["cfg_scale"] for r in with_headline(report)] == [1.0] * 3 + [3.0] * 3 + [4.0] * 3


def test_bad_sweep_is_a_clear_error(tiny_checkpoints):
    for bad, message in (("2,x", "could not convert"), ("2,-1", "cfg_scale must be")):
        result = subprocess.run([sys.executable, "-m", "nar.eval", "--checkpoints", str(Path(tiny_checkpoints["nar"]).parent),
                                 "--orders", "nar", "--sweep-cfg", bad, "--data", "/nonexistent"],
                                cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert result.returncode != 0 and message in result.stderr, result.stderr
