"""nar/loading.py: the one way to load (file, Hub reference, folder), kinds, device and dtype,
and the check that a transformer fits its tokenizer."""
import pytest
import torch

from conftest import random_model
from nar.checkpoint import CheckpointError, save_transformer
from nar.loading import LoadedModel, check_fits, fit_problem, load, load_folder, resolve
from nar.vq import VQModel

CPU = torch.device("cpu")


def test_load_a_transformer_and_a_tokenizer(tiny_checkpoints):
    nar = load(tiny_checkpoints["nar"], expect="nar", device=CPU)
    assert isinstance(nar, LoadedModel) and nar.class_names == ["cat", "dog", "sun"]
    assert nar.source == str(tiny_checkpoints["nar"]) and nar.path == tiny_checkpoints["nar"]
    assert not nar.model.training and next(nar.model.parameters()).dtype == torch.float32   # fp32 on a CPU
    half = load(tiny_checkpoints["nar"], device=CPU, dtype=torch.bfloat16)
    assert next(half.model.parameters()).dtype == torch.bfloat16
    vq = load(tiny_checkpoints["vq"], device=CPU)
    assert isinstance(vq, VQModel) and vq.source == str(tiny_checkpoints["vq"])


def test_the_wrong_kind_is_named(tiny_checkpoints):
    with pytest.raises(CheckpointError, match="is a raster checkpoint; a nar model was expected"):
        load(tiny_checkpoints["raster"], expect="nar", device=CPU)
    with pytest.raises(CheckpointError, match="not a VQ tokenizer"):
        load(tiny_checkpoints["nar"], expect="vq", device=CPU)
    with pytest.raises(CheckpointError, match="no checkpoint file at"):
        load(tiny_checkpoints["nar"].parent / "missing.safetensors", device=CPU)


def test_fit_check(tiny_checkpoints, tmp_path):
    vq = load(tiny_checkpoints["vq"], device=CPU)
    nar = load(tiny_checkpoints["nar"], device=CPU)
    assert fit_problem(nar.model.config, vq.cfg) is None
    save_transformer(tmp_path / "wide.safetensors", random_model("nar", grid=4, vocab=48, classes=2), ["a", "b"])
    with pytest.raises(CheckpointError, match=r"nar model's vocabulary \(48\) does not match the tokenizer's "
                                              r"codebook \(32\)"):
        load(tmp_path / "wide.safetensors", device=CPU, fits=vq.cfg)
    wide = load(tmp_path / "wide.safetensors", device=CPU)
    with pytest.raises(CheckpointError, match="the new tokenizer's codebook"):
        check_fits(wide.model.config, vq.cfg, "the new tokenizer")


def test_load_folder(tiny_checkpoints, tmp_path):
    vq, nar, raster = load_folder(tiny_checkpoints["vq"].parent, device=CPU)
    assert (nar.model.config.kind, raster.model.config.kind) == ("nar", "raster")
    (tmp_path / "vq.safetensors").write_bytes(tiny_checkpoints["vq"].read_bytes())
    with pytest.raises(FileNotFoundError, match="nar.safetensors"):
        load_folder(tmp_path, device=CPU)


def test_hub_references_are_checked_before_any_download(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="is not a Hub repo id"):
        resolve("not a repo", "x.pt")
    with pytest.raises(CheckpointError, match="not a file name inside a Hub repository"):
        resolve("owner/name", "../secret")
    with pytest.raises(CheckpointError, match="write hf://owner/repo/filename"):
        resolve("hf://owner/name")
    with pytest.raises(CheckpointError, match="checkpoints missing|not in the local Hugging Face cache"):
        load_folder("nar-studio/does-not-exist", device=CPU)
