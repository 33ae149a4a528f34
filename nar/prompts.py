"""Prompts to text conditions: one interface over our own text encoder and FLAN-T5.

A `PromptEncoder` turns a list of prompts into a `TextCondition` (left-padded token features
and their mask) of the width and length a text model's prefix takes:

  * `OwnPromptEncoder`: the byte-level encoder trained here (nar/text_encoder.py), 48 tokens x
    128, shipped in checkpoints/text_encoder.safetensors;
  * `T5PromptEncoder`: FLAN-T5 through the optional `transformers` library, 120 tokens, as the
    official NAR / LlamaGen t2i models were trained with (FLAN-T5-XL: 2048 wide). T5 pads on
    the right; the features are moved so the valid tokens come last and padding rows are zero,
    as the official sample_t2i.py does.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import torch

from .conditions import TextCondition
from .text_encoder import ByteTokenizer, TextEncoder, encode_prompts, load_text_encoder

MAX_PROMPTS = 64   # prompts per call (the app's batch limit is lower)
T5_INSTALL = "pip install transformers sentencepiece"


def check_prompts(prompts) -> list[str]:
    """A non-empty list of prompts (a single str is one prompt), or a ValueError."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, Sequence) or not prompts:
        raise ValueError("give at least one prompt")
    if len(prompts) > MAX_PROMPTS:
        raise ValueError(f"at most {MAX_PROMPTS} prompts at once, got {len(prompts)}")
    bad = [type(p).__name__ for p in prompts if not isinstance(p, str)]
    if bad:
        raise ValueError(f"prompts must be text (str), got {bad[0]}")
    return list(prompts)


class OwnPromptEncoder:
    """Our byte-level text encoder (frozen) as a PromptEncoder."""

    def __init__(self, encoder: TextEncoder, tokenizer: ByteTokenizer, source: str = ""):
        self.encoder, self.tokenizer, self.source = encoder.eval(), tokenizer, source

    @classmethod
    def from_file(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "OwnPromptEncoder":
        encoder, tokenizer, _ = load_text_encoder(path, device)
        return cls(encoder, tokenizer, str(path))

    @property
    def max_len(self) -> int:
        return self.tokenizer.max_len

    @property
    def dim(self) -> int:
        return self.encoder.config.dim

    def check(self, prompt: str) -> None:
        """ValueError with the reason if the prompt cannot be encoded (empty, too long, ...)."""
        self.tokenizer.check(prompt)

    def truncate(self, text: str) -> str:
        return self.tokenizer.truncate(text)

    def to(self, device) -> "OwnPromptEncoder":
        return OwnPromptEncoder(self.encoder.to(device), self.tokenizer, self.source)

    def __call__(self, prompts: str | Sequence[str]) -> TextCondition:
        prompts = check_prompts(prompts)
        features, mask = encode_prompts(self.encoder, self.tokenizer, prompts)
        return TextCondition(features.float(), mask, tuple(prompts))


class T5PromptEncoder:
    """FLAN-T5 encoder features (transformers), left-aligned as the official t2i code uses them."""

    def __init__(self, model, tokenizer, max_len: int = 120, source: str = ""):
        self.model, self.tokenizer, self.max_len, self.source = model.eval(), tokenizer, max_len, source

    @classmethod
    def from_pretrained(cls, name_or_path: str, max_len: int = 120, device: str | torch.device = "cpu",
                        cache_dir: Optional[str] = None) -> "T5PromptEncoder":
        """A T5 encoder from a local folder or the Hub (e.g. google/flan-t5-xl); without the
        `transformers` library, a clear message says what to install."""
        try:
            from transformers import AutoTokenizer, T5EncoderModel
        except ImportError:
            raise ValueError(f"FLAN-T5 prompts need the transformers library: {T5_INSTALL}") from None
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, cache_dir=cache_dir)
        model = T5EncoderModel.from_pretrained(name_or_path, cache_dir=cache_dir).to(device)
        return cls(model, tokenizer, max_len, str(name_or_path))

    @property
    def dim(self) -> int:
        return int(self.model.config.d_model)

    def check(self, prompt: str) -> None:
        check_prompts([prompt])
        if not prompt.strip():
            raise ValueError("the prompt is empty")

    def truncate(self, text: str) -> str:
        return text

    def __call__(self, prompts: str | Sequence[str]) -> TextCondition:
        prompts = check_prompts(prompts)
        for p in prompts:
            self.check(p)
        device = next(self.model.parameters()).device
        batch = self.tokenizer(prompts, max_length=self.max_len, padding="max_length", truncation=True,
                               add_special_tokens=True, return_tensors="pt")
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device).bool()
        with torch.no_grad():
            features = self.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        return left_aligned(features * mask[..., None], mask, tuple(prompts))


def left_aligned(features: torch.Tensor, mask: torch.Tensor, prompts=None) -> TextCondition:
    """Right-padded features [B, L, D] with mask [B, L] -> the same tokens moved to the end of
    each row (padding first, zeroed), as the official sample_t2i.py arranges T5 features."""
    out = torch.zeros_like(features)
    moved = torch.zeros_like(mask)
    for i in range(features.shape[0]):
        n = int(mask[i].sum())
        if n:
            out[i, -n:] = features[i, mask[i]]
            moved[i, -n:] = True
    return TextCondition(out, moved, prompts)
