"""The official t2i path offline: a small random model in the official NAR / LlamaGen t2i key
layout (caption embedder `cls_embedding.cap_proj.fc1/fc2`, the null caption buffer) loads strictly
with its config read from the shapes; FLAN-T5-style features come from a tiny T5 built from a
config (no download), left-aligned as the official sample_t2i.py does; without `transformers`
the message says what to install."""
from __future__ import annotations

import sys

import pytest
import torch

from nar.checkpoint import CheckpointError
from nar.config import SamplingConfig
from nar.loading import load
from nar.pipeline import Studio
from nar.prompts import T5PromptEncoder, left_aligned

T5_LEN, T5_DIM = 7, 16
CPU = torch.device("cpu")


def official_t2i_file(tmp_path, make_model, kind: str):
    model = make_model(kind, grid=4, vocab=32, text_prefix=T5_LEN, caption_dim=T5_DIM)
    path = tmp_path / f"t2i_{kind}.pt"
    torch.save({"model": model.state_dict()}, path)      # the official train_t2i.py layout
    return path, model


@pytest.fixture
def tiny_t5():
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers
    words = ["<pad>", "</s>", "<unk>", "red", "apple", "cat", "face", "a", "flag", "japan"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                                     unk_token="<unk>")
    torch.manual_seed(0)
    config = transformers.T5Config(vocab_size=len(words), d_model=T5_DIM, d_kv=4, d_ff=32, num_layers=1,
                                   num_heads=4, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    return T5PromptEncoder(transformers.T5EncoderModel(config), tokenizer, max_len=T5_LEN, source="tiny t5")


def test_official_t2i_layout_loads_strictly(tmp_path, make_model, tiny_checkpoints):
    path, model = official_t2i_file(tmp_path, make_model, "nar")
    loaded = load(path, expect="nar", grid_size=4, device=CPU)
    cfg = loaded.model.config
    assert (cfg.condition, cfg.cls_token_num, cfg.caption_dim) == ("text", T5_LEN, T5_DIM)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
    sd = dict(model.state_dict())
    del sd["cls_embedding.cap_proj.fc2.weight"]
    sd["cls_embedding.cap_proj.fc3.weight"] = torch.zeros(2)
    torch.save({"model": sd}, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError) as err:
        load(tmp_path / "broken.pt", expect="nar", grid_size=4, device=CPU)
    assert "cls_embedding.cap_proj.fc2.weight" in str(err.value) and "cls_embedding.cap_proj.fc3.weight" in str(err.value)
    raster, _ = official_t2i_file(tmp_path, make_model, "raster")    # no medusa_* keys: a raster model
    assert load(raster, expect="raster", grid_size=4, device=CPU).model.config.condition == "text"
    with pytest.raises(CheckpointError, match="raster"):
        load(raster, expect="nar", grid_size=4, device=CPU)


def test_t5_features_are_left_aligned_and_zero_padded(tiny_t5):
    cond = tiny_t5(["red apple", "a cat face"])
    assert cond.features.shape == (2, T5_LEN, T5_DIM)
    n = len(tiny_t5.tokenizer("red apple")["input_ids"])
    assert n >= 2 and cond.mask.tolist()[0] == [False] * (T5_LEN - n) + [True] * n   # valid tokens last
    assert (cond.features[~cond.mask] == 0).all()
    batch = tiny_t5.tokenizer(["red apple"], return_tensors="pt")
    with torch.no_grad():
        direct = tiny_t5.model(**batch).last_hidden_state[0]
    torch.testing.assert_close(cond.features[0, -n:], direct)
    moved = left_aligned(torch.arange(6.).view(1, 3, 2), torch.tensor([[True, True, False]]))
    assert moved.features.tolist() == [[[0, 0], [0, 1], [2, 3]]] and moved.mask.tolist() == [[False, True, True]]


def test_an_official_t2i_model_decodes_t5_prompts(tmp_path, make_model, tiny_checkpoints, tiny_t5):
    path, _ = official_t2i_file(tmp_path, make_model, "nar")
    studio = Studio(load(tiny_checkpoints["vq"], expect="vq", device=CPU), prompt_encoder=tiny_t5)
    studio.swap(load(path, expect="nar", grid_size=4, device=CPU))
    out = studio(["red apple", "flag japan"], order="nar", sampling=SamplingConfig(seed=0, top_k=0))
    assert out.steps == 7 and out.images.shape[0] == 2
    for bad, message in (([], "at least one prompt"), ([3], "must be text"), (["   "], "empty")):
        with pytest.raises(ValueError, match=message):
            studio(bad, order="nar")


def test_without_transformers_the_message_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ValueError, match="pip install transformers"):
        T5PromptEncoder.from_pretrained("google/flan-t5-xl")
