"""Video end to end on tiny local data: clips -> a few training steps -> generation -> eval."""
import json
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import pytest
import torch

from conftest import random_model, write_tiny_image_set
from nar.checkpoint import read_checkpoint
from nar.loading import build_transformer
from nar.moving_emoji import MOTIONS, build
from nar.train import TrainConfig, train
from nar.video_train import video_from_image

ROOT = Path(__file__).resolve().parent.parent
FRAMES = 2            # 2 frames of 16 px -> 2 x 4 x 4 tokens with the tiny tokenizer


@pytest.fixture(scope="module")
def video_run(tiny_checkpoints, tmp_path_factory):
    """Tiny clips, tiny NAR and raster video models (3 steps each, from the tiny image models)
    and tiny judges: everything generation and eval need, built here without downloads."""
    from nar.judge import JudgeTrainConfig, train_judge
    from nar.video_judge import VideoJudgeTrainConfig, train_video_judge
    root = tmp_path_factory.mktemp("video")
    emoji = write_tiny_image_set(root / "emoji", per_class=2, size=16)
    build(emoji, root / "clips", frames=FRAMES, size=16)
    files = {"vq": tiny_checkpoints["vq"], "clips": root / "clips"}
    for kind in ("nar", "raster"):
        files[kind] = root / f"video_{kind}.safetensors"
        train(TrainConfig(kind=kind, video=True, data=str(root / "clips"), vq=str(tiny_checkpoints["vq"]),
                          init=str(tiny_checkpoints[kind]), run_dir=str(root / f"run_{kind}"), out=str(files[kind]),
                          steps=3, batch_size=4, warmup=1, eval_every=3, threads=1))
    files["judge"] = root / "judge.safetensors"
    train_judge(JudgeTrainConfig(data=str(emoji), out=str(files["judge"]), epochs=1, batch_size=8))
    files["video_judge"] = root / "video_judge.safetensors"
    train_video_judge(VideoJudgeTrainConfig(data=str(root / "clips"), out=str(files["video_judge"]), epochs=1,
                                            batch_size=16))
    return files


def test_video_model_starts_from_the_image_model():
    image = random_model("nar", grid=4, classes=3)
    video = video_from_image(image, frames=3, grid_size=2, class_names=list(MOTIONS))
    cfg = video.config
    assert cfg.grid_shape == (3, 2, 2) and cfg.num_classes == 8 and cfg.n_blocks == cfg.n_layer + 2
    state, base = video.state_dict(), image.state_dict()
    n = cfg.n_layer
    assert torch.equal(state["frame_output.weight"], base["medusa_output.weight"])
    assert torch.equal(state[f"layers.{n + 1}.attention.wqkv.weight"], base[f"layers.{n}.attention.wqkv.weight"])
    table = state["cls_embedding.embedding_table.weight"]
    assert torch.allclose(table[:8], base["cls_embedding.embedding_table.weight"][:3].mean(0).expand(8, -1))
    assert torch.equal(table[8], base["cls_embedding.embedding_table.weight"][3])   # the null class
    raster = video_from_image(random_model("raster", grid=4, classes=3), 3, 2, list(MOTIONS))
    assert raster.config.n_blocks == raster.config.n_layer and not raster.has_frame_head


def test_training_wrote_video_models_that_load(video_run):
    for kind in ("nar", "raster"):
        ckpt = read_checkpoint(video_run[kind])
        model = build_transformer(ckpt)
        assert model.config.grid_shape == (FRAMES, 4, 4) and model.config.kind == kind
        assert ckpt.extra["class_names"] == list(MOTIONS) and ckpt.extra["step"] == 3


@pytest.mark.parametrize("order,steps", [("nar", FRAMES + 4 + 4 - 2), ("raster", FRAMES * 16), ("zipar", 18)])
def test_generate_cli_writes_the_clip_and_the_front_animation(video_run, tmp_path, order, steps):
    kind = "nar" if order == "nar" else "raster"
    out, gif = tmp_path / "clip.mp4", tmp_path / "front.gif"
    result = subprocess.run([sys.executable, "-m", "nar.generate", "--video", "--order", order, "--window", "2",
                             "--checkpoint", str(video_run[kind]), "--vq", str(video_run["vq"]),
                             "--class-id", "zoom_in", "--seed", "1", "--out", str(out), "--gif", str(gif), "--json"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["order"] == order and summary["steps"] == steps and summary["grid"] == [FRAMES, 4, 4]
    assert summary["class_names"] == ["zoom_in"] and summary["seconds"] > 0
    assert out.stat().st_size > 0
    views = iio.imread(gif, index=None)
    assert views.shape[0] == steps                       # one live view per step
    assert views.shape[2] == FRAMES * 16 * 4 + (FRAMES - 1) * 4   # the frames side by side


def test_generate_cli_refuses_an_unknown_motion(video_run, tmp_path):
    result = subprocess.run([sys.executable, "-m", "nar.generate", "--video", "--checkpoint", str(video_run["nar"]),
                             "--vq", str(video_run["vq"]), "--class-id", "moonwalk", "--out", str(tmp_path / "c.mp4")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "unknown class" in result.stderr and "Traceback" not in result.stderr


def test_video_eval_reports_every_order(video_run, tmp_path):
    result = subprocess.run([sys.executable, "-m", "nar.eval", "--video", "--json", "--per-class", "2", "--window", "2",
                             "--nar", str(video_run["nar"]), "--raster", str(video_run["raster"]),
                             "--vq", str(video_run["vq"]), "--judge", str(video_run["judge"]),
                             "--video-judge", str(video_run["video_judge"]), "--data", str(video_run["clips"]),
                             "--samples-dir", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert 0 <= report["judge_real_accuracy"] <= 1 and report["real_warp_error"] > 0
    assert set(report["orders"]) == {"nar", "raster", "zipar"}
    for order, steps in (("nar", 8), ("raster", 32), ("zipar", 18)):
        scores = report["orders"][order]
        assert scores["steps"] == steps and scores["grid"] == [FRAMES, 4, 4]
        assert 0 <= scores["class_accuracy"] <= 1 and scores["frechet_distance"] >= 0 and scores["warp_error"] > 0
    assert (tmp_path / "video_samples_nar.png").is_file()
