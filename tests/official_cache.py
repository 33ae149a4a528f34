"""A local Hugging Face cache holding the official files of a preset under their real repo ids
and names, with small random weights saved the way the official files are (no download): shared
by the preset tests of the library (test_presets.py) and of the app (test_sessions.py)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from nar.config import ModelConfig, VQConfig
from nar.model import Transformer
from nar.presets import Preset, get_preset
from nar.vq import VQModel
from test_checkpoint import build_hub_cache

SMALL = dict(dim=128, n_layer=2, n_head=4, vocab_size=64, grid_size=4, num_classes=1000)


def small_official_model(kind: str, seed: int) -> Transformer:
    torch.manual_seed(seed)
    model = Transformer(ModelConfig(kind=kind, **SMALL))
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return model.eval()


def small_official_vq() -> VQModel:
    # VQ-16's five levels (downsample 16), narrow: 64 px images -> 4 x 4 tokens
    torch.manual_seed(2)
    return VQModel(VQConfig(codebook_size=64, codebook_embed_dim=8, base_channels=32, z_channels=32,
                            num_res_blocks=1, image_size=64)).eval()


def torch_bytes(tmp_path: Path, name: str, state_dict) -> bytes:
    path = tmp_path / name
    torch.save({"model": state_dict}, path)   # the official files keep their tensors under "model"
    return path.read_bytes()


def small_preset(name: str) -> Preset:
    """The real preset's Hub files and sampling, with the small architecture."""
    real = get_preset(name)
    return dataclasses.replace(real, arch={k: SMALL[k] for k in ("n_layer", "dim", "n_head")},
                               grid_size=SMALL["grid_size"], vocab_size=SMALL["vocab_size"])


def build_official_cache(tmp: Path, name: str = "NAR-B") -> dict:
    """A Hub cache in tmp/hub with the preset's three files (small random weights)."""
    cache = tmp / "hub"
    nar, raster, vq = small_official_model("nar", 0), small_official_model("raster", 1), small_official_vq()
    preset = get_preset(name)
    build_hub_cache(cache, preset.nar.repo, {preset.nar.file: torch_bytes(tmp, "nar.pt", nar.state_dict())})
    build_hub_cache(cache, preset.vq.repo, {preset.vq.file: torch_bytes(tmp, "vq.pt", vq.state_dict()),
                                           preset.raster.file: torch_bytes(tmp, "raster.pt", raster.state_dict())},
                    commit="b" * 40)
    return {"cache": cache, "nar": nar, "raster": raster, "vq": vq}
