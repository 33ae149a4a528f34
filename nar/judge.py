"""A small image classifier that judges generated images: class accuracy, and the feature space
in which the Frechet distance between real and generated images is measured.

    python -m nar.train judge --data data/emoji --out checkpoints/judge.safetensors
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .checkpoint import CheckpointError, class_names_of, load_state_strict, read_checkpoint, save_checkpoint
from .images import load_split, to_tensor


@dataclass
class JudgeConfig:
    num_classes: int = 12
    image_size: int = 64
    widths: tuple[int, ...] = (32, 64, 128, 256)
    dropout: float = 0.3

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "widths": list(self.widths)}

    @classmethod
    def from_dict(cls, d: dict) -> "JudgeConfig":
        return cls(**{**d, "widths": tuple(d["widths"])})


def conv_block(c_in: int, c_out: int, convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1, bias=False),
                   nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.MaxPool2d(2))


class Judge(nn.Module):
    """A VGG-style CNN; `features` is the pooled penultimate layer used for Frechet distance."""

    def __init__(self, cfg: JudgeConfig):
        super().__init__()
        self.config = cfg
        chans = (3,) + tuple(cfg.widths)
        # one conv at full resolution (where convs are most expensive), two further down
        self.body = nn.Sequential(*[conv_block(a, b, 1 if i == 0 else 2)
                                    for i, (a, b) in enumerate(zip(chans[:-1], chans[1:]))])
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.widths[-1], cfg.num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] in [-1, 1] (resized to the judge's size) -> [B, widths[-1]]."""
        if images.shape[-1] != self.config.image_size:
            images = F.interpolate(images, size=self.config.image_size, mode="bilinear", antialias=True,
                                   align_corners=False)
        return self.body(images).mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(images)))


def augment(x: torch.Tensor, g: torch.Generator, flip: bool = True) -> torch.Tensor:
    """Random flips (unless flip=False), shifts of up to 1/8 of the size (white padding) and
    brightness jitter."""
    b, _, h, w = x.shape
    if flip:
        flipped = torch.rand(b, generator=g) < 0.5
        x = torch.where(flipped[:, None, None, None], x.flip(-1), x)
    pad = h // 8
    padded = F.pad(x, (pad, pad, pad, pad), value=1.0)
    dy, dx = torch.randint(0, 2 * pad + 1, (2, b), generator=g)
    x = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])
    scale = 1 + 0.2 * (torch.rand(b, 1, 1, 1, generator=g) - 0.5)
    return (x * scale).clamp(-1, 1)


@torch.no_grad()
def predict(judge: Judge, images: torch.Tensor, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(predicted labels, features) for images [N, 3, H, W] in [-1, 1]."""
    judge.eval()
    labels, feats = [], []
    for start in range(0, len(images), batch):
        f = judge.features(images[start:start + batch])
        feats.append(f)
        labels.append(judge.head(f).argmax(-1))
    return torch.cat(labels).numpy(), torch.cat(feats).double().numpy()


@dataclass
class JudgeTrainConfig:
    data: str = "data/emoji"
    out: str = "checkpoints/judge.safetensors"
    epochs: int = 24
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 5e-4
    seed: int = 0


def train_judge(cfg: JudgeTrainConfig) -> dict:
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    train, test = load_split(cfg.data, "train"), load_split(cfg.data, "test")
    x_train, y_train = to_tensor(train.images), torch.from_numpy(train.labels)
    x_test = to_tensor(test.images)
    judge = Judge(JudgeConfig(num_classes=len(train.class_names), image_size=train.images.shape[1]))

    def save(best: dict) -> None:
        save_checkpoint(cfg.out, "classifier", judge.state_dict(), judge.config.to_dict(),
                        {"class_names": train.class_names, **best, "train_images": len(x_train),
                         "test_images": len(x_test)})

    return fit_classifier(judge, x_train, y_train, lambda: float((predict(judge, x_test)[0] == test.labels).mean()),
                          augment, cfg, g, label_smoothing=0.1, save=save, name="judge")


def fit_classifier(model: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, test_accuracy,
                   augment_fn, cfg, g: torch.Generator, label_smoothing: float, save, name: str) -> dict:
    """AdamW with a one-cycle schedule over cfg.epochs epochs of augmented batches; after each
    epoch `test_accuracy()` is measured and `save(best)` called when it improves."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = -(-len(x_train) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.epochs * steps_per_epoch)
    best = {"test_accuracy": -1.0}
    for epoch in range(cfg.epochs):
        model.train()
        start, total = time.perf_counter(), 0.0
        order = torch.randperm(len(x_train), generator=g)
        for i in range(steps_per_epoch):
            idx = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            loss = F.cross_entropy(model(augment_fn(x_train[idx], g)), y_train[idx], label_smoothing=label_smoothing)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        accuracy = test_accuracy()
        print(f"[{name}] epoch {epoch + 1}/{cfg.epochs} loss {total / steps_per_epoch:.3f} "
              f"test accuracy {accuracy:.3f} ({time.perf_counter() - start:.1f} s)", flush=True)
        if accuracy > best["test_accuracy"]:
            best = {"test_accuracy": accuracy, "epoch": epoch + 1}
            save(best)
    return best


def read_classifier(path: str | Path, kind: str, model_cls, config_cls, what: str):
    """(classifier in eval mode, its checkpoint) of a judge file of `kind`, strictly checked."""
    ckpt = read_checkpoint(path)
    if ckpt.kind != kind:
        raise CheckpointError(f"{Path(path).name} is a {ckpt.kind} checkpoint, not {what}")
    model = model_cls(config_cls.from_dict(ckpt.config))
    load_state_strict(model, ckpt.state_dict, Path(path).name)
    return model.eval(), ckpt


def load_judge(path: str | Path) -> tuple[Judge, list[str], dict]:
    judge, ckpt = read_classifier(path, "classifier", Judge, JudgeConfig, "a classifier")
    names = ckpt.extra.get("class_names") or class_names_of(ckpt)
    return judge, list(names), ckpt.extra


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(prog="python -m nar.train judge", description="Train the judge classifier.")
    for f in dataclasses.fields(JudgeTrainConfig):
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    best = train_judge(JudgeTrainConfig(**vars(p.parse_args(argv))))
    print(json.dumps(best))


if __name__ == "__main__":
    main()
