"""Text-to-image end to end on a tiny offline set: the captioned data, a few training steps of the
text models started from class models, generation from a prompt on the command line, in the
Studio and through the app's API (the bundled-text model set); bad prompts get clear messages."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from nar.text_encoder import TextEncoder, TextEncoderConfig, save_text_encoder
from tests.text_fixture import build_text_set


@pytest.fixture(scope="module")
def t2i_folder(tmp_path_factory, tiny_checkpoints):
    """A checkpoint folder with the tiny class models, a tiny text encoder and text models trained
    for 3 steps from the class models on a tiny captioned set."""
    from nar import train
    tmp = tmp_path_factory.mktemp("t2i")
    text_set = build_text_set(tmp)
    folder = tmp / "checkpoints"
    folder.mkdir()
    for name in ("vq", "nar", "raster"):
        shutil.copy(tiny_checkpoints[name], folder / f"{name}.safetensors")
    torch.manual_seed(0)
    save_text_encoder(folder / "text_encoder.safetensors",
                      TextEncoder(TextEncoderConfig(dim=16, n_layer=1, n_head=2, embed_dim=16)))
    for kind in ("nar", "raster"):
        train.main([kind, "--text", "--data", str(text_set), "--init", str(folder / f"{kind}.safetensors"),
                    "--vq", str(folder / "vq.safetensors"), "--text-encoder", str(folder / "text_encoder.safetensors"),
                    "--run-dir", str(tmp / f"run_{kind}"), "--no-flip", "--steps", "3", "--batch-size", "4",
                    "--eval-every", "3", "--log-every", "1", "--threads", "1", "--warmup", "1"])
        shutil.copy(tmp / f"run_{kind}" / "best.safetensors", folder / f"t2i_{kind}.safetensors")
    return folder


def test_training_starts_from_the_class_model(t2i_folder):
    from nar.loading import load
    text, base = (load(t2i_folder / f"{name}.safetensors", expect="nar") for name in ("t2i_nar", "nar"))
    cfg = text.model.config
    assert cfg.condition == "text" and cfg.cls_token_num == 48 and cfg.caption_dim == 16
    assert not hasattr(text.model.cls_embedding, "embedding_table")
    # a few steps moved the blocks, from the class model's weights (not from a fresh start)
    moved = (text.model.layers[0].attention.wqkv.weight - base.model.layers[0].attention.wqkv.weight).abs().max()
    assert 0 < moved < 0.05


def test_studio_decodes_prompts_and_refuses_bad_ones(t2i_folder):
    from nar.config import SamplingConfig
    from nar.pipeline import Studio
    studio = Studio.from_pretrained(t2i_folder, "cpu", text=True)
    assert studio.is_text
    for order, steps in (("nar", 7), ("raster", 16), ("zipar", None)):
        out = studio(["grinning face", "Flagge: Japan"], order=order, sampling=SamplingConfig(seed=1), window=2)
        assert out.images.shape == (2, 16, 16, 3) and (out.tokens >= 0).all()
        if steps:
            assert out.steps == steps
    again = studio(["grinning face"], order="nar", sampling=SamplingConfig(seed=1))
    first = studio(["grinning face", "Flagge: Japan"], order="nar", sampling=SamplingConfig(seed=1))
    assert torch.equal(again.tokens[0], first.tokens[0])        # same prompt and seed, same image
    for bad, message in (("", "empty"), ("x" * 49, "49 bytes"), ("a\x00b", "control characters"),
                         ("猫" * 17, "bytes")):
        with pytest.raises(ValueError, match=message):
            studio([bad], order="nar")
    with pytest.raises(ValueError, match="prompt|text"):
        studio.decode_steps("nar", torch.tensor([0]), SamplingConfig()).__next__()


def test_cli_generates_from_a_prompt(t2i_folder, tmp_path, capsys):
    from nar import generate
    out = tmp_path / "cat.png"
    generate.main(["--prompt", "cat face", "--checkpoint", str(t2i_folder / "t2i_nar.safetensors"),
                   "--vq", str(t2i_folder / "vq.safetensors"), "--text-encoder",
                   str(t2i_folder / "text_encoder.safetensors"), "--order", "nar", "--seed", "3",
                   "--out", str(out), "--gif", str(tmp_path / "front.gif"), "--json", "--device", "cpu"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["prompts"] == ["cat face"] and summary["steps"] == 7 and summary["grid"] == [4, 4]
    assert out.is_file() and (tmp_path / "front.gif").is_file()
    with pytest.raises(SystemExit, match="give --prompt, not --class-id"):
        generate.main(["--class-id", "0", "--checkpoint", str(t2i_folder / "t2i_nar.safetensors"),
                       "--vq", str(t2i_folder / "vq.safetensors"), "--out", str(out)])
    with pytest.raises(SystemExit, match="give --class-id, not --prompt"):
        generate.main(["--prompt", "cat face", "--checkpoint", str(t2i_folder / "nar.safetensors"),
                       "--vq", str(t2i_folder / "vq.safetensors"), "--text-encoder",
                       str(t2i_folder / "text_encoder.safetensors"), "--out", str(out)])


def test_app_serves_the_text_models_to_the_visitor_who_picks_them(t2i_folder):
    from gradio_client import Client
    from tests.test_app import running_app
    with running_app(t2i_folder, threads=None, extra_args=("--threads", 1, "--device", "cpu")) as url:
        text_visitor, class_visitor = Client(url, verbose=False), Client(url, verbose=False)
        text_visitor.predict("bundled-text", "dog", "dog", 2, 2, api_name="/use_model_set")
        args = ("dog", 2, 5, "nar", 2, 4.0, -1, 1.0, 2000, 1.0, 0.0)
        frame, caption, gallery, gif, mp4 = text_visitor.predict(*args, "red heart", api_name="/generate")
        assert "done: 7 steps" in caption and len(gallery) == 2
        assert all("red heart" in item["caption"] for item in gallery)
        race = text_visitor.predict("dog", 1, 2, 4.0, 0.0, "cat face", api_name="/compare")
        assert "done" in race[5]
        # the other visitor still has the class models
        _, caption, gallery, *_ = class_visitor.predict(*args, "", api_name="/generate")
        assert all("dog" in item["caption"] for item in gallery)
        with pytest.raises(Exception, match="bytes"):
            text_visitor.predict(*args, "x" * 48 + "é", api_name="/generate")


def test_text_eval_reports_both_orders(t2i_folder, tmp_path, capsys):
    from nar import t2i_eval
    from nar.checkpoint import save_checkpoint
    from nar.data import CLASS_NAMES
    from nar.judge import Judge, JudgeConfig
    judge = Judge(JudgeConfig(num_classes=len(CLASS_NAMES), image_size=16))
    save_checkpoint(tmp_path / "judge.safetensors", "classifier", judge.state_dict(), judge.config.to_dict(),
                    {"class_names": list(CLASS_NAMES)})
    t2i_eval.main(["--text", "--json", "--checkpoints", str(t2i_folder), "--judge", str(tmp_path / "judge.safetensors"),
                   "--data", str(t2i_folder.parent / "out"), "--prompts", "4", "--samples-dir", str(tmp_path),
                   "--device", "cpu"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(report["orders"]) == {"nar", "raster"} and report["retrieval_ways"] >= 5
    for order, steps in (("nar", 7), ("raster", 16)):
        scores = report["orders"][order]
        assert scores["steps"] == steps and scores["frechet_distance"] >= 0
        for key in ("retrieval_top1_train", "retrieval_top5_train", "retrieval_top1_held_out", "class_accuracy"):
            assert 0.0 <= scores[key] <= 1.0, key
        assert (tmp_path / f"t2i_{order}.png").is_file()
    assert 0.0 <= report["real_retrieval_ceiling"]["top1"] <= 1.0
