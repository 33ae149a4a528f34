"""The image sets training and evaluation read: a prepared data set folder (train.npz, test.npz
and meta.json, as `python -m nar.data prepare` writes them), the moving emoji clips (as
`python -m nar.data moving` writes them), the captioned text-to-image set (`python -m nar.data
text`), and images as model input.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SPLITS = ("train", "test")


@dataclass
class ImageSet:
    images: np.ndarray       # uint8 [N, H, W, 3]
    labels: np.ndarray       # int64 [N]
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.labels)


class DatasetMissingError(FileNotFoundError):
    """The data set has not been prepared; the message names the command that builds it."""


def _read_split(data_dir: Path, split: str, arrays: str, what: str, command: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """(arrays, labels, meta.json) of a split; a missing file names the command that builds it."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    npz_path, meta_path = data_dir / f"{split}.npz", data_dir / "meta.json"
    missing = [p.name for p in (npz_path, meta_path) if not p.is_file()]
    if missing:
        raise DatasetMissingError(f"{what} in {data_dir} (missing {', '.join(missing)}). Build it with: {command}")
    meta = json.loads(meta_path.read_text())
    with np.load(npz_path) as npz:
        return npz[arrays], npz["labels"].astype(np.int64), meta


def load_split(data_dir: str | os.PathLike, split: str) -> ImageSet:
    """Read `train` or `test` from a directory written by `prepare`."""
    data_dir = Path(data_dir)
    images, labels, meta = _read_split(data_dir, split, "images", "The emoji data set is not prepared",
                                       f"python -m nar.data prepare --out {data_dir}")
    return ImageSet(images=images, labels=labels, class_names=list(meta["class_names"]))


@dataclass
class ClipSet:
    clips: np.ndarray        # uint8 [N, T, H, W, 3]
    labels: np.ndarray       # int64 [N] motion classes
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.labels)


def load_clips(data_dir: str | os.PathLike, split: str) -> ClipSet:
    """Read `train` or `test` from a directory written by `python -m nar.data moving`."""
    data_dir = Path(data_dir)
    clips, labels, meta = _read_split(data_dir, split, "clips", "The moving emoji clips are not built",
                                      f"python -m nar.data moving --emoji data/emoji --out {data_dir}")
    return ClipSet(clips=clips, labels=labels, class_names=list(meta["class_names"]))


@dataclass
class TextImageSet:
    """A split of the text-to-image set (`python -m nar.data text`): each image's emoji is an
    index into `captions`, the caption table shared by both splits (captions.json)."""
    images: np.ndarray       # uint8 [N, H, W, 3]
    emoji: np.ndarray        # int64 [N] index into captions
    labels: np.ndarray       # int64 [N] class of class_names, or -1 where the emoji is in none
    captions: list[dict]     # per emoji: hexcode, char, base, subgroup, label, split, names / keywords per locale
    class_names: list[str]
    locales: list[str]

    def __len__(self) -> int:
        return len(self.labels)


def load_text_split(data_dir: str | os.PathLike, split: str) -> TextImageSet:
    """Read `train` or `test` from a directory written by `python -m nar.data text`."""
    data_dir = Path(data_dir)
    command = f"python -m nar.data text --out {data_dir}"
    images, labels, meta = _read_split(data_dir, split, "images", "The text-to-image emoji set is not built", command)
    if not (data_dir / "captions.json").is_file():
        raise DatasetMissingError(f"{data_dir} has no captions.json. Build it with: {command}")
    with np.load(data_dir / f"{split}.npz") as npz:
        emoji = npz["emoji"].astype(np.int64)
    captions = json.loads((data_dir / "captions.json").read_text(encoding="utf-8"))
    return TextImageSet(images=images, emoji=emoji, labels=labels, captions=captions,
                        class_names=list(meta["class_names"]), locales=list(meta["locales"]))


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC images -> float32 NCHW tensor in [-1, 1]."""
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images [N, H, W, 3], got {images.dtype} {images.shape}")
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
