"""The image side of the text encoder's contrastive training: a small CNN that embeds 64 px
emoji images in the same space as the text encoder's pooled embedding (nar/text_train.py).

Kept with the text encoder, it also gives generated images features to score with
nar/retrieval.py: a generated image's embedding against the mean embedding of each emoji's
real images.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .checkpoint import load_module, save_module
from .images import to_tensor

IMAGE_TOWER_KIND = "image_tower"


@dataclass
class ImageTowerConfig:
    image_size: int = 64
    widths: tuple[int, ...] = (32, 64, 128, 256)
    embed_dim: int = 128

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "widths": list(self.widths)}

    @classmethod
    def from_dict(cls, d: dict) -> "ImageTowerConfig":
        cfg = cls(**{**d, "widths": tuple(d["widths"])})
        if not (8 <= cfg.image_size <= 1024 and 1 <= len(cfg.widths) <= 8 and 1 <= cfg.embed_dim <= 4096
                and all(isinstance(w, int) and 1 <= w <= 2048 for w in cfg.widths)):
            raise ValueError(f"image tower config out of range: {cfg}")
        return cfg


class ImageTower(nn.Module):
    """Stride-2 conv stages (each conv + BN + ReLU, then one more at the reduced size), mean pool,
    projection: [B, 3, S, S] in [-1, 1] -> [B, embed_dim] (not normalised)."""

    def __init__(self, cfg: ImageTowerConfig):
        super().__init__()
        self.config = cfg
        layers: list[nn.Module] = []
        c_in = 3
        for i, c_out in enumerate(cfg.widths):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU(inplace=True)]
            if i > 0:   # a second conv where the maps are small enough to be cheap
                layers += [nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                           nn.ReLU(inplace=True)]
            c_in = c_out
        self.body = nn.Sequential(*layers)
        self.proj = nn.Linear(c_in, cfg.embed_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != self.config.image_size:
            images = F.interpolate(images, size=self.config.image_size, mode="bilinear", antialias=True,
                                   align_corners=False)
        return self.proj(self.body(images).mean(dim=(2, 3)))


@torch.no_grad()
def image_embeddings(tower: ImageTower, images: np.ndarray, batch: int = 256) -> torch.Tensor:
    """uint8 [N, H, W, 3] images -> embeddings [N, embed_dim] (eval mode, no gradients)."""
    tower.eval()
    device = next(tower.parameters()).device
    return torch.cat([tower(to_tensor(images[i:i + batch]).to(device)).float().cpu()
                      for i in range(0, len(images), batch)])


def save_image_tower(path: str | Path, tower: ImageTower, extra: dict | None = None) -> Path:
    return save_module(path, IMAGE_TOWER_KIND, tower, extra)


def load_image_tower(path: str | Path, device: str | torch.device = "cpu") -> tuple[ImageTower, dict]:
    """(tower in eval mode, the file's extra metadata)."""
    tower, ckpt = load_module(path, IMAGE_TOWER_KIND, ImageTower, ImageTowerConfig, "an image tower")
    return tower.to(device), ckpt.extra
