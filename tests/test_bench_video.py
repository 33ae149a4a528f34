"""python -m nar.bench --video: the video cases run and report steps, time per clip and the roofline
(no timing assertions, as in test_bench.py)."""
import json
import shutil

import pytest
import torch

from conftest import random_model


@pytest.fixture
def video_folder(tiny_checkpoints, tmp_path):
    from nar.checkpoint import save_transformer
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    shutil.copy(tiny_checkpoints["vq"], folder / "vq.safetensors")
    for kind in ("nar", "raster"):      # 2 x 4 x 4 clips: NAR 8 steps, raster 32
        save_transformer(folder / f"video_{kind}.safetensors",
                         random_model(kind, grid=4, vocab=32, classes=3, frames=2), ["a", "b", "c"])
    return folder


def test_video_bench_quick_reports_clips(video_folder, tmp_path, capsys, one_thread):
    from nar import bench
    bench.main(["--video", "--quick", "--json", "--checkpoints", str(video_folder), "--out-dir", str(tmp_path)])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["video"] and report["complete"] and report["paper"]["nar_steps"] == 34
    steps = {r["label"]: r["steps"] for r in report["results"]}
    assert steps == {"video-2x4x4 nar": 8, "video-2x4x4 zipar-4": 32, "video-2x4x4 raster": 32}
    for r in report["results"]:
        assert r["grid_shape"] == [2, 4, 4] and r["tokens"] == 32 and r["batch"] == 1 and r["rounds"] == 3
        assert r["latency_per_clip_s"] > 0 and r["bound_per_clip_s"] > 0 and r["flops"] > 0
        assert r["times_bound"] * r["bound_per_clip_s"] == pytest.approx(r["latency_median_s"])
    assert report["speedup_by_suite"]["video-2x4x4"]["1"]["nar_vs_raster"] > 0
    assert report["vq"]["vq_decode_median_s"] > 0 and report["vq"]["frames"] == 2 and report["vq"]["image_size"] == 16
    written = json.loads((tmp_path / f"{report['device']}-video-quick.json").read_text())
    assert written["results"] == report["results"]
    from nar.bench_video import table
    lines = table(report).splitlines()
    assert len(lines) == 2 + 3 and "| 2 x 4 x 4 | 1 | nar | 8 |" in lines[2] and lines[-1].endswith("x |")


def test_the_paper_latent_cases_have_its_step_counts():
    from nar.bench_video import PAPER_GRID, random_video_pair, video_cases
    like = (random_model("nar", grid=4, vocab=32, frames=2), random_model("raster", grid=4, vocab=32, frames=2))
    nar_model, raster_model = random_video_pair(*like, PAPER_GRID, torch.device("cpu"), torch.float32)
    assert nar_model.config.grid_shape == raster_model.config.grid_shape == (4, 16, 16)
    assert nar_model.config.dim == like[0].config.dim and nar_model.has_frame_head
    cases = video_cases("video-4x16x16", nar_model, raster_model, [1, 4], graphs=False)
    assert {(c.order, c.batch): c.steps for c in cases} == {
        ("nar", 1): 34, ("zipar", 1): 268, ("raster", 1): 1024, ("nar", 4): 34, ("zipar", 4): 268, ("raster", 4): 1024}
