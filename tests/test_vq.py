"""VQ tokenizer: LlamaGen compatibility, shapes, training and checkpoints."""
import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nar.checkpoint import read_safetensors, save_checkpoint
from nar.config import VQConfig
from nar.loading import load
from nar.vq import VQModel
from nar.vq_train import (VQTrainConfig, batch_indices, complete_steps, restart_dead_codes,
                          train_step, train_vq)

# LlamaGen VQ-16's module tree (tokenizer/tokenizer_image/vq_model.py, ch_mult [1,1,2,2,4],
# two res blocks per level): resnet blocks ("res", "+nin" when channels change), attention
# blocks and single layers. Parameter names inside each kind are expanded below.
LLAMAGEN_VQ16_MODULES = [
    ("encoder.conv_in", "layer"),
    ("encoder.conv_blocks.0.res.0", "res"), ("encoder.conv_blocks.0.res.1", "res"),
    ("encoder.conv_blocks.0.downsample.conv", "layer"),
    ("encoder.conv_blocks.1.res.0", "res"), ("encoder.conv_blocks.1.res.1", "res"),
    ("encoder.conv_blocks.1.downsample.conv", "layer"),
    ("encoder.conv_blocks.2.res.0", "res+nin"), ("encoder.conv_blocks.2.res.1", "res"),
    ("encoder.conv_blocks.2.downsample.conv", "layer"),
    ("encoder.conv_blocks.3.res.0", "res"), ("encoder.conv_blocks.3.res.1", "res"),
    ("encoder.conv_blocks.3.downsample.conv", "layer"),
    ("encoder.conv_blocks.4.res.0", "res+nin"), ("encoder.conv_blocks.4.res.1", "res"),
    ("encoder.conv_blocks.4.attn.0", "attn"), ("encoder.conv_blocks.4.attn.1", "attn"),
    ("encoder.mid.0", "res"), ("encoder.mid.1", "attn"), ("encoder.mid.2", "res"),
    ("encoder.norm_out", "layer"), ("encoder.conv_out", "layer"),
    ("decoder.conv_in", "layer"),
    ("decoder.mid.0", "res"), ("decoder.mid.1", "attn"), ("decoder.mid.2", "res"),
    ("decoder.conv_blocks.0.res.0", "res"), ("decoder.conv_blocks.0.res.1", "res"),
    ("decoder.conv_blocks.0.res.2", "res"),
    ("decoder.conv_blocks.0.attn.0", "attn"), ("decoder.conv_blocks.0.attn.1", "attn"),
    ("decoder.conv_blocks.0.attn.2", "attn"),
    ("decoder.conv_blocks.0.upsample.conv", "layer"),
    ("decoder.conv_blocks.1.res.0", "res+nin"), ("decoder.conv_blocks.1.res.1", "res"),
    ("decoder.conv_blocks.1.res.2", "res"), ("decoder.conv_blocks.1.upsample.conv", "layer"),
    ("decoder.conv_blocks.2.res.0", "res"), ("decoder.conv_blocks.2.res.1", "res"),
    ("decoder.conv_blocks.2.res.2", "res"), ("decoder.conv_blocks.2.upsample.conv", "layer"),
    ("decoder.conv_blocks.3.res.0", "res+nin"), ("decoder.conv_blocks.3.res.1", "res"),
    ("decoder.conv_blocks.3.res.2", "res"), ("decoder.conv_blocks.3.upsample.conv", "layer"),
    ("decoder.conv_blocks.4.res.0", "res"), ("decoder.conv_blocks.4.res.1", "res"),
    ("decoder.conv_blocks.4.res.2", "res"),
    ("decoder.norm_out", "layer"), ("decoder.conv_out", "layer"),
    ("quantize.embedding", "embedding"), ("quantize.codebook_used", "buffer"),
    ("quant_conv", "layer"), ("post_quant_conv", "layer"),
]
LAYERS_OF_KIND = {
    "layer": [""],
    "res": ["norm1", "conv1", "norm2", "conv2"],
    "res+nin": ["norm1", "conv1", "norm2", "conv2", "nin_shortcut"],
    "attn": ["norm", "q", "k", "v", "proj_out"],
}
# sha256 of "name:shape" lines, in order, of LlamaGen's VQ_16() state dict (344 tensors).
LLAMAGEN_VQ16_FINGERPRINT = "0206c7213afce619b97e5cd2b5100548336c0adfbaefab3904919818b19b9957"
LLAMAGEN_VQ16_PARAMS = 71_883_403


def expected_llamagen_keys() -> set[str]:
    keys = set()
    for module, kind in LLAMAGEN_VQ16_MODULES:
        if kind == "embedding":
            keys.add(f"{module}.weight")
        elif kind == "buffer":
            keys.add(module)
        else:
            for layer in LAYERS_OF_KIND[kind]:
                prefix = f"{module}.{layer}" if layer else module
                keys.update({f"{prefix}.weight", f"{prefix}.bias"})
    return keys


def tiny_config(**overrides) -> VQConfig:
    """32 px -> 8 x 8 tokens, 64 codes: small enough for many CPU steps in a test."""
    cfg = dict(codebook_size=64, codebook_embed_dim=8, encoder_ch_mult=[1, 2, 2],
               decoder_ch_mult=[1, 2, 2], z_channels=32, base_channels=32, num_res_blocks=1,
               image_size=32)
    cfg.update(overrides)
    return VQConfig(**cfg)


def images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_default_config_is_llamagen_vq16():
    with torch.device("meta"):
        model = VQModel(VQConfig())
    lines = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in model.state_dict().items())
    assert hashlib.sha256(lines.encode()).hexdigest() == LLAMAGEN_VQ16_FINGERPRINT
    assert sum(p.numel() for p in model.parameters()) == LLAMAGEN_VQ16_PARAMS
    assert VQConfig().downsample == 16 and VQConfig().grid_size == 16


def test_state_dict_names_match_llamagen():
    # VQ-16's depth with narrow channels: names depend only on the depth.
    model = VQModel(tiny_config(encoder_ch_mult=[1, 1, 2, 2, 4], decoder_ch_mult=[1, 1, 2, 2, 4],
                                num_res_blocks=2))
    assert set(model.state_dict()) == expected_llamagen_keys()


def test_encode_decode_shapes():
    model = VQModel(tiny_config()).eval()
    x = images(3)
    codes = model.encode(x)
    assert codes.shape == (3, 8, 8) and codes.dtype == torch.long
    assert 0 <= codes.min() and codes.max() < 64
    out = model.decode(codes)
    assert out.shape == x.shape and out.min() >= -1 and out.max() <= 1
    assert torch.equal(model.decode_codes(codes), out)


def test_forward_in_eval_is_encode_then_decode():
    model = VQModel(tiny_config()).eval()
    x = images(2)
    with torch.no_grad():
        recon, losses = model(x)
    assert torch.allclose(recon.clamp(-1, 1), model.decode(model.encode(x)), atol=1e-5)
    assert torch.equal(losses.indices.view(2, 8, 8), model.encode(x))


def test_codes_are_l2_normalised():
    model = VQModel(tiny_config())
    assert torch.allclose(model.quantize.codebook().norm(dim=-1), torch.ones(64), atol=1e-5)
    codes = torch.randint(0, 64, (2, 4, 4))
    latents = model.quantize.lookup(codes)
    assert latents.shape == (2, 8, 4, 4)
    assert torch.allclose(latents.norm(dim=1), torch.ones(2, 4, 4), atol=1e-5)


def test_vq_losses_and_usage():
    model = VQModel(tiny_config(entropy_loss_ratio=0.1)).train()
    _, losses = model(images(4))
    assert losses.codebook > 0 and losses.commitment > 0
    assert torch.isclose(losses.commitment, 0.25 * losses.codebook)  # beta * the same distance
    assert losses.entropy.requires_grad
    assert 0 < losses.usage <= 1
    assert losses.indices.shape == (4 * 8 * 8,) and losses.latents.shape == (4 * 8 * 8, 8)


def test_training_step_decreases_loss():
    model = VQModel(tiny_config()).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = images(4)
    losses = [train_step(model, opt, x, VQTrainConfig(), lr=1e-3)[1] for _ in range(15)]
    assert losses[-1] < 0.7 * losses[0]


def test_restart_dead_codes_moves_only_unused_codes():
    model = VQModel(tiny_config())
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    recon, losses = model(images(2))
    (recon.mean() + losses.total).backward()  # the codebook learns only from the VQ loss
    opt.step()
    before = model.quantize.embedding.weight.detach().clone()
    counts = torch.ones(64)
    counts[[3, 10]] = 0
    latents = F.normalize(torch.randn(100, 8), dim=-1)
    assert restart_dead_codes(model, opt, counts, latents, torch.Generator().manual_seed(0)) == 2
    after = model.quantize.embedding.weight.detach()
    changed = (after != before).any(dim=1).nonzero().flatten().tolist()
    assert changed == [3, 10]
    assert torch.allclose(after[[3, 10]].norm(dim=-1), torch.ones(2), atol=1e-5)
    assert (opt.state[model.quantize.embedding.weight]["exp_avg"][[3, 10]] == 0).all()


def test_batches_cover_each_epoch_once():
    n, bs = 10, 4
    seen = torch.cat([batch_indices(n, bs, step, seed=0) for step in range(5)])  # 2 epochs
    assert sorted(seen[:10].tolist()) == list(range(10))
    assert sorted(seen[10:20].tolist()) == list(range(10))
    assert torch.equal(batch_indices(n, bs, 3, seed=0), batch_indices(n, bs, 3, seed=0))


def test_save_load_round_trip(tmp_path):
    model = VQModel(tiny_config()).eval()
    path = save_checkpoint(tmp_path / "vq.safetensors", "vq", model.state_dict(),
                           model.cfg.to_dict(), extra={"test_psnr": 1.0})
    loaded = load(path, expect="vq", device=torch.device("cpu"))
    assert loaded.cfg == model.cfg and not loaded.training
    codes = torch.randint(0, 64, (2, 8, 8))
    assert torch.equal(loaded.decode(codes), model.decode(codes))


def _write_dataset(path, n_train=24, n_test=8, size=32):
    rng = np.random.default_rng(0)
    path.mkdir()
    for split, n in (("train", n_train), ("test", n_test)):
        np.savez(path / f"{split}.npz", images=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
                 labels=np.zeros(n, np.int64))
    (path / "meta.json").write_text(json.dumps({"class_names": ["only"]}))


def test_resumed_training_matches_uninterrupted(tmp_path):
    _write_dataset(tmp_path / "data")
    cfg = VQTrainConfig(data=str(tmp_path / "data"), run_dir=str(tmp_path / "run"),
                        out=str(tmp_path / "full.safetensors"), vq=tiny_config(), steps=6,
                        batch_size=4, warmup_steps=2, restart_every=2, log_every=3, eval_every=0,
                        ckpt_every=3, threads=1)
    train_vq(cfg)
    assert complete_steps(tmp_path / "run") == [3, 6]
    # Lose the last checkpoint, as if the run had been killed after step 3, and resume.
    (tmp_path / "run" / "vq_0000006.safetensors").unlink()
    out = train_vq(dataclasses.replace(cfg, out=str(tmp_path / "resumed.safetensors")))
    full, resumed = (load(p, expect="vq", device=torch.device("cpu")) for p in (cfg.out, out))
    for key, value in full.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    extra = read_safetensors(out).extra
    assert extra["step"] == 6 and "test_psnr" in extra
