"""Text-to-image training: the captioned emoji set, its captions as text conditions, and a text
model started from a class-conditional one.

    python -m nar.train nar --text --data data/emoji_text --init checkpoints/nar.safetensors \
        --text-encoder checkpoints/text_encoder.safetensors --run-dir runs/t2i_nar --no-flip

The training loop is nar/train.py's, unchanged; a run's labels are emoji ids, and each step the
`CaptionConditioner` draws one caption per image (a name or keywords, in one of the set's
locales; nar/captions.py) and encodes it with the frozen text encoder. Only the condition
changes from the image model: the caption embedder is new, everything after it starts from
the class model's weights. No flips: "left arrow" mirrored is "right arrow".
"""
from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .captions import sample_caption
from .conditions import TextCondition
from .config import ModelConfig, model_config
from .images import ImageSet, TextImageSet, load_text_split
from .loading import load
from .model import Transformer
from .prompts import OwnPromptEncoder
from .tokens import tokenize

HELD_OUT_IMAGES = 512   # held-out loss over this many test images (every few hundred steps)


def text_config(base: ModelConfig, prefix_len: int, caption_dim: int) -> ModelConfig:
    """The class model's config as a text model: same transformer, a text prefix."""
    return dataclasses.replace(base, condition="text", cls_token_num=prefix_len, caption_dim=caption_dim,
                               num_classes=1)


def text_model_from(base: Transformer, prefix_len: int, caption_dim: int, seed: int = 0) -> Transformer:
    """A text model with every weight of `base` but its class embedding (the caption embedder
    starts fresh; its output projection at zero, as LlamaGen's)."""
    torch.manual_seed(seed)
    model = Transformer(text_config(base.config, prefix_len, caption_dim))
    kept = {k: v for k, v in base.state_dict().items() if not k.startswith("cls_embedding.")}
    missing, unexpected = model.load_state_dict(kept, strict=False)
    assert not unexpected and all(k.startswith("cls_embedding.") for k in missing), (missing, unexpected)
    return model


class CaptionConditioner:
    """Emoji ids -> text conditions: a random caption per image each step (seeded), or a fixed
    English name for the held-out loss. The encoder is frozen (as T5 is in the official code)."""

    def __init__(self, prompt_encoder: OwnPromptEncoder, captions: list[dict]):
        self.prompt_encoder, self.captions = prompt_encoder, captions

    def _condition(self, prompts: list[str]) -> TextCondition:
        return self.prompt_encoder([self.prompt_encoder.truncate(p) for p in prompts])

    def __call__(self, emoji_ids: torch.Tensor, seed: int) -> TextCondition:
        rng = random.Random(seed)
        return self._condition([sample_caption(self.captions[int(i)], rng) for i in emoji_ids])

    def fixed(self, emoji_ids: torch.Tensor) -> TextCondition:
        return self._condition([self.captions[int(i)]["names"]["en"] for i in emoji_ids])

    def build_model(self, cfg, vocab_size: int, grid_size: int) -> Transformer:
        """From `cfg.init` (a class model of this grid and vocabulary), or fresh."""
        prefix_len, caption_dim = self.prompt_encoder.max_len, self.prompt_encoder.dim
        if cfg.init:
            base = load(cfg.init, device=torch.device("cpu"), dtype=torch.float32).model
            if (base.config.vocab_size, base.config.grid_size) != (vocab_size, grid_size):
                raise ValueError(f"{cfg.init} is for a {base.config.grid_size}x{base.config.grid_size} grid of "
                                 f"{base.config.vocab_size} codes, the tokens are {grid_size}x{grid_size} of {vocab_size}")
            if base.config.kind != cfg.kind:
                raise ValueError(f"{cfg.init} is a {base.config.kind} model, the run trains {cfg.kind}")
            return text_model_from(base, prefix_len, caption_dim, cfg.seed)
        torch.manual_seed(cfg.seed)
        return Transformer(model_config(
            cfg.size, kind=cfg.kind, vocab_size=vocab_size, grid_size=grid_size, num_classes=1,
            condition="text", cls_token_num=prefix_len, caption_dim=caption_dim,
            token_dropout_p=cfg.dropout, resid_dropout_p=cfg.dropout, ffn_dropout_p=cfg.dropout,
            class_dropout_prob=cfg.class_dropout))


def as_image_set(data: TextImageSet, limit: Optional[int] = None) -> ImageSet:
    """The images with their emoji ids as labels (what tokenize caches)."""
    keep = slice(None) if limit is None else np.random.default_rng(0).permutation(len(data))[:limit]
    names = [c["hexcode"] for c in data.captions]
    return ImageSet(data.images[keep], data.emoji[keep], names)


def prepare_text_tokens(cfg, vq, cache: Path):
    """(train tokens, held-out tokens, conditioner, vocab, grid) of a text run."""
    train_set, test_set = load_text_split(cfg.data, "train"), load_text_split(cfg.data, "test")
    prompt_encoder = OwnPromptEncoder.from_file(cfg.text_encoder)
    train = tokenize(vq, cfg.vq, as_image_set(train_set), cache, flip_view=False)
    test = tokenize(vq, cfg.vq, as_image_set(test_set, HELD_OUT_IMAGES), cache, flip_view=False)
    conditioner = CaptionConditioner(prompt_encoder, train_set.captions)
    return train, test, conditioner, vq.cfg.codebook_size, train.tokens.shape[-1]
