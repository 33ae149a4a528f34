"""Text prompts -> token features for text-to-image models: a byte tokenizer and a small
bidirectional transformer encoder trained from scratch (nar/text_train.py).

Bytes, not a vocabulary: any language CLDR names an emoji in (15 here) and any emoji character
are covered by 256 ids. Padding is on the LEFT, so the valid tokens end every row, as the
official LlamaGen / NAR text-to-image code arranges its T5 features before the image tokens.
"""
from __future__ import annotations

import dataclasses
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checkpoint import load_module, save_module

TEXT_ENCODER_KIND = "text_encoder"


class ByteTokenizer:
    """NFC-normalised UTF-8 bytes as ids 0-255, PAD = 256, left-padded to `max_len`."""

    def __init__(self, max_len: int = 48):
        self.max_len = max_len
        self.pad_id = 256
        self.vocab_size = 257

    def check(self, prompt) -> bytes:
        """The prompt's NFC UTF-8 bytes, or a ValueError a person can act on."""
        if not isinstance(prompt, str):
            raise ValueError(f"a prompt must be text (str), not {type(prompt).__name__}")
        text = unicodedata.normalize("NFC", prompt)
        if not text.strip():
            raise ValueError("the prompt is empty: describe the emoji, e.g. 'grinning face'")
        bad = sorted({c for c in text if unicodedata.category(c) in ("Cc", "Cs")})
        if bad:
            shown = ", ".join(f"U+{ord(c):04X}" for c in bad[:5])
            raise ValueError(f"the prompt contains control characters ({shown}); use one line of plain text")
        data = text.encode("utf-8")
        if len(data) > self.max_len:
            raise ValueError(
                f"the prompt is {len(data)} bytes in UTF-8; the limit is {self.max_len} bytes (about "
                f"{self.max_len} Latin letters, {self.max_len // 2} Cyrillic, Greek or Arabic letters, or "
                f"{self.max_len // 3} Chinese, Japanese, Korean or Hindi characters)")
        return data

    def truncate(self, text: str) -> str:
        """Training side: NFC `text` cut to at most max_len UTF-8 bytes at a character boundary
        (control characters replaced by spaces)."""
        text = "".join(" " if unicodedata.category(c) in ("Cc", "Cs") else c
                       for c in unicodedata.normalize("NFC", text))
        data = text.encode("utf-8")
        if len(data) <= self.max_len:
            return text
        return data[:self.max_len].decode("utf-8", errors="ignore").rstrip()

    def __call__(self, prompts: str | Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """ids int64 [B, max_len] and mask bool [B, max_len] (True on the prompt's bytes, which
        end each row)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(prompts, Sequence) or len(prompts) == 0:
            raise ValueError("give at least one prompt (a list of str)")
        rows = [self.check(p) for p in prompts]
        ids = torch.full((len(rows), self.max_len), self.pad_id, dtype=torch.int64)
        mask = torch.zeros((len(rows), self.max_len), dtype=torch.bool)
        for i, row in enumerate(rows):
            if row:
                ids[i, -len(row):] = torch.tensor(list(row), dtype=torch.int64)
                mask[i, -len(row):] = True
        return ids, mask

    def decode(self, ids: torch.Tensor) -> str:
        """One row of ids back to text (padding dropped)."""
        return bytes(int(i) for i in ids.tolist() if i != self.pad_id).decode("utf-8", errors="replace")


@dataclass
class TextEncoderConfig:
    max_len: int = 48
    vocab_size: int = 257       # 256 bytes + PAD
    dim: int = 128
    n_layer: int = 2
    n_head: int = 4
    mlp_ratio: float = 4.0
    embed_dim: int = 128        # the pooled (contrastive) embedding
    dropout: float = 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TextEncoderConfig":
        if not isinstance(d, dict):
            raise ValueError("the config is not a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config fields {unknown}")
        cfg = cls(**d)
        cfg.check()
        return cfg

    def check(self) -> None:
        """Bounds first: a config is file metadata, and a hostile one could ask for a huge model."""
        bounds = {"max_len": (1, 4096), "vocab_size": (257, 257), "dim": (8, 4096), "n_layer": (1, 64),
                  "n_head": (1, 64), "mlp_ratio": (0.25, 16), "embed_dim": (1, 4096), "dropout": (0.0, 0.9)}
        bad = [f"{k}={getattr(self, k)!r} (allowed {lo} to {hi})" for k, (lo, hi) in bounds.items()
               if isinstance(getattr(self, k), bool) or not isinstance(getattr(self, k), (int, float))
               or not lo <= getattr(self, k) <= hi]
        if not bad and self.dim % self.n_head:
            bad.append(f"dim {self.dim} is not a multiple of n_head {self.n_head}")
        if bad:
            raise ValueError("text encoder config out of range: " + ", ".join(bad))


class EncoderLayer(nn.Module):
    """Pre-norm bidirectional self-attention + MLP; padding keys are masked out."""

    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.norm1, self.norm2 = nn.LayerNorm(cfg.dim), nn.LayerNorm(cfg.dim)
        self.qkv, self.proj = nn.Linear(cfg.dim, 3 * cfg.dim), nn.Linear(cfg.dim, cfg.dim)
        hidden = int(cfg.mlp_ratio * cfg.dim)
        self.mlp = nn.Sequential(nn.Linear(cfg.dim, hidden), nn.GELU(), nn.Linear(hidden, cfg.dim))
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.n_head, d // self.n_head).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :])
        x = x + self.dropout(self.proj(attn.transpose(1, 2).reshape(b, n, d)))
        return x + self.dropout(self.mlp(self.norm2(x)))


class TextEncoder(nn.Module):
    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        cfg.check()
        self.config = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.pos_embeddings = nn.Parameter(torch.randn(cfg.max_len, cfg.dim) * 0.02)
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.n_layer))
        self.norm = nn.LayerNorm(cfg.dim)
        self.pool_proj = nn.Linear(cfg.dim, cfg.embed_dim)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids int64 [B, L], mask bool [B, L] (L <= max_len; every row has a valid token) ->
        features [B, L, dim]; padding rows are exactly zero."""
        if ids.shape != mask.shape or ids.dim() != 2 or ids.shape[1] > self.config.max_len:
            raise ValueError(f"ids and mask must both be [B, L <= {self.config.max_len}], "
                             f"got {tuple(ids.shape)} and {tuple(mask.shape)}")
        if not bool(mask.any(dim=1).all()):
            raise ValueError("every row needs at least one valid token (an empty prompt has no features)")
        mask = mask.bool()
        # positions counted from the end: with left padding a prompt's bytes keep their positions
        # whatever the padded length
        x = self.tok_embeddings(ids) + self.pos_embeddings[-ids.shape[1]:]
        for layer in self.layers:
            x = layer(x, mask)
        return torch.where(mask[..., None], self.norm(x), torch.zeros((), dtype=x.dtype, device=x.device))

    def pool(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Masked mean of the valid tokens' features, projected: [B, embed_dim] (not normalised)."""
        m = mask[..., None].to(features.dtype)
        return self.pool_proj((features * m).sum(1) / m.sum(1).clamp_min(1.0))

    def embed(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.pool(self(ids, mask), mask)


def encode_prompts(encoder: TextEncoder, tokenizer: ByteTokenizer, prompts: str | Sequence[str]
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(features float [B, max_len, dim], mask bool [B, max_len]) of checked prompts, on the
    encoder's device, without gradients."""
    ids, mask = tokenizer(prompts)
    device = next(encoder.parameters()).device
    ids, mask = ids.to(device), mask.to(device)
    with torch.no_grad():
        return encoder(ids, mask), mask


def save_text_encoder(path: str | Path, encoder: TextEncoder, extra: dict | None = None) -> Path:
    """safetensors with the config in metadata, written atomically, fp16 storage."""
    return save_module(path, TEXT_ENCODER_KIND, encoder, extra)


def load_text_encoder(path: str | Path, device: str | torch.device = "cpu"
                      ) -> tuple[TextEncoder, ByteTokenizer, dict]:
    """(encoder in eval mode, float32, its tokenizer, the file's extra metadata); a file that is
    not a text encoder gives a CheckpointError that says what it is."""
    encoder, ckpt = load_module(path, TEXT_ENCODER_KIND, TextEncoder, TextEncoderConfig, "a text encoder")
    return encoder.to(device), ByteTokenizer(encoder.config.max_len), ckpt.extra


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
