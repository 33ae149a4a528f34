"""What training a video model adds to nar/train.py: clip tokens and the start from an image model.

    python -m nar.train nar --video --data data/moving_emoji --init checkpoints/nar.safetensors \
        --run-dir runs/video_nar --out checkpoints/video_nar.safetensors

Clips are tokenized frame by frame with the image tokenizer (no flipped view: a mirrored clip
would show another motion). A video model starts from an image model of the same kind: every
weight is kept (none depends on the grid size), the motion classes get new class-embedding rows
(the mean of the image classes' rows; the null row is kept for CFG), and NAR's "frame" head
starts as a copy of the "below" head, its extra blocks included.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import torch

from .model import Transformer
from .tokens import TokenSet

HELD_OUT_CLIPS = 512  # held-out loss on the first test clips: 64 unseen images x 8 motions


def clip_tokens(vq, vq_path: str, data_dir: str, split: str, cache: Optional[Path],
                limit: Optional[int] = None) -> tuple[TokenSet, list[str]]:
    """Tokens [1, N, T, n, n] of a moving-emoji split and its motion class names; `limit`
    keeps the first clips (held-out loss on a fixed, class-balanced subset)."""
    from .images import ImageSet, load_clips
    from .tokens import tokenize
    clips = load_clips(data_dir, split)
    frames = clips.clips[:limit]
    labels = clips.labels[:limit]
    n, T = len(frames), frames.shape[1]
    flat = ImageSet(frames.reshape(n * T, *frames.shape[2:]), labels.repeat(T), clips.class_names)
    tokens = tokenize(vq, vq_path, flat, cache, flip_view=False).tokens
    return TokenSet(tokens.reshape(1, n, T, *tokens.shape[-2:]), torch.from_numpy(labels)), clips.class_names


def video_from_image(image_model: Transformer, frames: int, grid_size: int,
                     class_names: list[str]) -> Transformer:
    """A video model of the image model's kind and size, initialised from its weights."""
    base = image_model.config
    cfg = dataclasses.replace(base, frames=frames, grid_size=grid_size, num_classes=len(class_names))
    video = Transformer(cfg)
    state = dict(image_model.state_dict())
    table = state.pop("cls_embedding.embedding_table.weight")
    state["cls_embedding.embedding_table.weight"] = torch.cat(
        [table[:-1].mean(0, keepdim=True).repeat(len(class_names), 1), table[-1:]])
    if video.has_frame_head:
        first_below = base.n_layer
        for i in range(base.extra_blocks):
            src, dst = f"layers.{first_below + i}.", f"layers.{first_below + base.extra_blocks + i}."
            state.update({dst + k[len(src):]: v.clone() for k, v in image_model.state_dict().items()
                          if k.startswith(src)})
        for part in ("norm", "output"):
            state[f"frame_{part}.weight"] = state[f"medusa_{part}.weight"].clone()
    video.load_state_dict(state, strict=True)
    return video
