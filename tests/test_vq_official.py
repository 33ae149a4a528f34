"""The official LlamaGen VQ layout (torch file, tensors under "model") loads, strictly checked."""
import pytest
import torch

from nar.checkpoint import CheckpointError, read_checkpoint
from nar.config import VQConfig
from nar.loading import build_vq, load
from nar.vq import VQModel


def small_vq16_shaped() -> VQModel:
    # VQ-16's structure (five levels, downsample 16) with narrow channels to stay fast
    torch.manual_seed(0)
    return VQModel(VQConfig(codebook_size=64, codebook_embed_dim=8, base_channels=32, z_channels=32,
                            num_res_blocks=1, image_size=32)).eval()


def test_official_vq_layout_loads_and_decodes_identically(tmp_path):
    vq = small_vq16_shaped()
    path = tmp_path / "vq_ds16_c2i.pt"
    torch.save({"model": vq.state_dict(), "optimizer": {}, "steps": 1}, path)
    ckpt = read_checkpoint(path, grid_size=2)
    assert ckpt.kind == "vq"
    assert ckpt.config["encoder_ch_mult"] == [1, 1, 2, 2, 4] == ckpt.config["decoder_ch_mult"]
    assert ckpt.config["image_size"] == 32 and ckpt.config["codebook_size"] == 64
    loaded = build_vq(ckpt)
    tokens = torch.randint(0, 64, (2, 2, 2))
    assert torch.equal(vq.decode(tokens), loaded.decode(tokens))
    tokenizer = load(path, expect="vq", device=torch.device("cpu"), grid_size=2)
    assert torch.equal(tokenizer.decode(tokens), vq.decode(tokens))


def test_vq_with_missing_tensors_names_them(tmp_path):
    sd = dict(small_vq16_shaped().state_dict())
    del sd["decoder.conv_out.weight"]
    torch.save({"model": sd}, tmp_path / "vq.pt")
    with pytest.raises(CheckpointError, match="decoder.conv_out.weight"):
        build_vq(read_checkpoint(tmp_path / "vq.pt", grid_size=2))


def test_transformer_file_is_not_a_tokenizer(make_model, tmp_path):
    from nar.checkpoint import save_transformer
    path = save_transformer(tmp_path / "m.safetensors", make_model("nar"), list("abcde"))
    with pytest.raises(CheckpointError, match="not a VQ tokenizer"):
        load(path, expect="vq", device=torch.device("cpu"))
