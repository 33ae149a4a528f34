"""A small clip classifier that judges the motion of generated clips.

    python -m nar.train video-judge --data data/moving_emoji --out checkpoints/video_judge.safetensors

The T frames of a clip are stacked as channels of one 2-D CNN (the motion is in how they
differ), trained on real clips. Generated clips pass through the tokenizer, so training adds a
random blur of the frames (the tokenizer's 32 px reconstructions are soft); frames are never
mirrored, which would change the motion class.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .checkpoint import save_checkpoint
from .images import load_clips, to_tensor
from .judge import conv_block, fit_classifier, read_classifier


@dataclass
class VideoJudgeConfig:
    num_classes: int = 8
    frames: int = 4
    frame_size: int = 32
    widths: tuple[int, ...] = (32, 64, 128)
    dropout: float = 0.2

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "widths": list(self.widths)}

    @classmethod
    def from_dict(cls, d: dict) -> "VideoJudgeConfig":
        return cls(**{**d, "widths": tuple(d["widths"])})


class VideoJudge(nn.Module):
    def __init__(self, cfg: VideoJudgeConfig):
        super().__init__()
        self.config = cfg
        chans = (3 * cfg.frames,) + tuple(cfg.widths)
        self.body = nn.Sequential(*[conv_block(a, b, 2) for a, b in zip(chans[:-1], chans[1:])])
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.widths[-1], cfg.num_classes)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """clips [B, T, 3, H, W] in [-1, 1] -> logits [B, classes]."""
        b, t, c, h, w = clips.shape
        x = clips.reshape(b, t * c, h, w)
        if h != self.config.frame_size:
            x = F.interpolate(x, size=self.config.frame_size, mode="bilinear", antialias=True, align_corners=False)
        return self.head(self.dropout(self.body(x).mean(dim=(2, 3))))


def clips_to_tensor(clips: np.ndarray) -> torch.Tensor:
    """uint8 [N, T, H, W, 3] -> float [N, T, 3, H, W] in [-1, 1]."""
    n, t = clips.shape[:2]
    return to_tensor(clips.reshape(n * t, *clips.shape[2:])).reshape(n, t, 3, *clips.shape[2:4])


def blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Gaussian blur of [B, C, H, W] with one sigma (pixels) per item; white at the borders."""
    radius = 2
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-offsets[None] ** 2 / (2 * sigma[:, None].clamp(min=1e-3) ** 2))
    kernel = kernel / kernel.sum(-1, keepdim=True)                       # [B, 5]
    b, c, h, w = x.shape
    padded = F.pad(x, (radius,) * 4, value=1.0)
    rows = sum(kernel[:, i, None, None, None] * padded[:, :, :, i:i + w] for i in range(2 * radius + 1))
    return sum(kernel[:, i, None, None, None] * rows[:, :, i:i + h, :] for i in range(2 * radius + 1))


def augment(clips: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """The same blur (sigma 0 to 1.2 px) and brightness for every frame of a clip."""
    b, t, c, h, w = clips.shape
    sigma = torch.rand(b, generator=g) * 1.2
    x = blur(clips.reshape(b, t * c, h, w), sigma).reshape(b, t, c, h, w)
    scale = 1 + 0.2 * (torch.rand(b, 1, 1, 1, 1, generator=g) - 0.5)
    return (x * scale).clamp(-1, 1)


@torch.no_grad()
def predict_motion(judge: VideoJudge, clips: torch.Tensor, batch: int = 256) -> np.ndarray:
    judge.eval()
    return torch.cat([judge(clips[i:i + batch]).argmax(-1) for i in range(0, len(clips), batch)]).numpy()


@dataclass
class VideoJudgeTrainConfig:
    data: str = "data/moving_emoji"
    out: str = "checkpoints/video_judge.safetensors"
    epochs: int = 2
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 5e-4
    seed: int = 0
    threads: int = 0


def train_video_judge(cfg: VideoJudgeTrainConfig) -> dict:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    train, test = load_clips(cfg.data, "train"), load_clips(cfg.data, "test")
    x_train, y_train = clips_to_tensor(train.clips), torch.from_numpy(train.labels)
    x_test = clips_to_tensor(test.clips)
    judge = VideoJudge(VideoJudgeConfig(num_classes=len(train.class_names), frames=train.clips.shape[1],
                                        frame_size=train.clips.shape[2]))

    def save(best: dict) -> None:
        save_checkpoint(cfg.out, "video_classifier", judge.state_dict(), judge.config.to_dict(),
                        {"class_names": train.class_names, **best, "train_clips": len(x_train),
                         "test_clips": len(x_test)})

    return fit_classifier(judge, x_train, y_train,
                          lambda: float((predict_motion(judge, x_test) == test.labels).mean()),
                          augment, cfg, g, label_smoothing=0.05, save=save, name="video-judge")


def load_video_judge(path: str | Path) -> tuple[VideoJudge, list[str], dict]:
    judge, ckpt = read_classifier(path, "video_classifier", VideoJudge, VideoJudgeConfig, "a video classifier")
    return judge, list(ckpt.extra.get("class_names", [])), ckpt.extra


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(prog="python -m nar.train video-judge", description="Train the motion classifier.")
    for f in dataclasses.fields(VideoJudgeTrainConfig):
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    print(json.dumps(train_video_judge(VideoJudgeTrainConfig(**vars(p.parse_args(argv))))))


if __name__ == "__main__":
    main()
