"""Configuration dataclasses and the named model sizes.

Every model in the project is built from one of these configs, and every checkpoint we write
stores its config as JSON in the safetensors metadata, so a file is enough to rebuild its model.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional


def _from_dict(cls, data: dict[str, Any]):
    """Build a dataclass from a dict, naming any key the dataclass does not know."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {unknown}")
    return cls(**data)


@dataclass
class ModelConfig:
    """A LlamaGen-style conditional transformer over a T x n x n token grid.

    Images are T = 1 (`frames`), video clips T > 1. kind="nar" adds NAR's dimension-oriented
    heads, each `extra_blocks` more blocks after the previous one (the "below" head for images;
    "below" and then "frame" for video) and trains with the proximity mask; kind="raster" is
    plain next-token LlamaGen.

    condition="class": one class-embedding token (with a null class for CFG) before the grid;
    condition="text": `cls_token_num` text-feature tokens of width `caption_dim` through the
    caption embedder (LlamaGen / NAR t2i: 120 x 2048 FLAN-T5-XL features; our own text models
    use a shorter prefix, nar/text_encoder.py).
    """
    kind: str = "nar"
    dim: int = 256
    n_layer: int = 6
    n_head: int = 8
    n_kv_head: Optional[int] = None
    multiple_of: int = 256           # SwiGLU hidden size is rounded up to this
    ffn_dim_multiplier: Optional[float] = None
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    initializer_range: float = 0.02
    token_dropout_p: float = 0.1
    attn_dropout_p: float = 0.0
    resid_dropout_p: float = 0.1
    ffn_dropout_p: float = 0.1
    num_classes: int = 1000
    class_dropout_prob: float = 0.1  # labels dropped to the null class in training (for CFG)
    vocab_size: int = 16384
    grid_size: int = 16              # tokens per side of a frame (H = W)
    condition: str = "class"         # "class" or "text"
    cls_token_num: int = 1           # condition tokens before the grid (the prefix)
    caption_dim: int = 2048          # width of the text features (condition="text")
    extra_blocks: int = 1            # NAR's extra blocks feeding each further head
    frames: int = 1                  # T: 1 for images, the clip length for video

    def __post_init__(self):
        if self.kind not in ("nar", "raster"):
            raise ValueError(f"model kind must be 'nar' or 'raster', not {self.kind!r}")
        if self.dim % self.n_head:
            raise ValueError(f"dim {self.dim} is not divisible by n_head {self.n_head}")
        if (self.dim // self.n_head) % 4:
            raise ValueError("head_dim must be divisible by 4 for 2-D RoPE")
        if self.condition not in ("class", "text"):
            raise ValueError(f"condition must be 'class' or 'text', not {self.condition!r}")
        if self.condition == "class" and self.cls_token_num != 1:
            raise ValueError("a class-conditional model has exactly one prefix token (cls_token_num = 1)")
        if not 1 <= self.cls_token_num <= 1024:
            raise ValueError(f"cls_token_num must be in [1, 1024], got {self.cls_token_num}")
        if self.frames < 1:
            raise ValueError(f"frames must be at least 1, got {self.frames}")
        if self.frames > 1 and self.head_dim % 8:
            raise ValueError("head_dim must be divisible by 8 for video RoPE (frame, row, column)")

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        """(T, H, W) of the token grid; images are (1, n, n)."""
        return (self.frames, self.grid_size, self.grid_size)

    @property
    def prefix_len(self) -> int:
        """Sequence positions before the grid: grid token p sits at prefix_len + p."""
        return self.cls_token_num

    @property
    def is_video(self) -> bool:
        return self.frames > 1

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_head

    @property
    def n_blocks(self) -> int:
        """Blocks actually built: the raster model has none of NAR's extra blocks; NAR has one
        set per head after the first (one for images, two for video)."""
        extra_heads = (2 if self.is_video else 1) if self.kind == "nar" else 0
        return self.n_layer + self.extra_blocks * extra_heads

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        return _from_dict(cls, data)


# (n_layer, dim, n_head) of the paper's sizes and of small sizes that train on a CPU.
MODEL_SIZES: dict[str, tuple[int, int, int]] = {
    "GPT-B": (12, 768, 12),
    "GPT-M": (18, 1024, 16),
    "GPT-L": (24, 1024, 16),
    "GPT-XL": (36, 1280, 20),
    "GPT-XXL": (48, 1536, 24),
    "GPT-S": (6, 256, 8),      # CPU size of the bundled models
    "GPT-XS": (4, 192, 6),
    "GPT-tiny": (2, 64, 4),    # tests
}


def model_config(size: str, **overrides) -> ModelConfig:
    """ModelConfig for a named size, e.g. model_config("GPT-L", kind="raster")."""
    try:
        n_layer, dim, n_head = MODEL_SIZES[size]
    except KeyError:
        raise ValueError(f"unknown model size {size!r}; choose from {sorted(MODEL_SIZES)}") from None
    return ModelConfig(n_layer=n_layer, dim=dim, n_head=n_head, **overrides)


@dataclass
class VQConfig:
    """LlamaGen VQ-16 architecture, configurable: downsample = 2 ** (len(ch_mult) - 1)."""
    codebook_size: int = 16384
    codebook_embed_dim: int = 8
    codebook_l2_norm: bool = True
    codebook_show_usage: bool = True
    commit_loss_beta: float = 0.25
    entropy_loss_ratio: float = 0.0
    encoder_ch_mult: list[int] = field(default_factory=lambda: [1, 1, 2, 2, 4])
    decoder_ch_mult: list[int] = field(default_factory=lambda: [1, 1, 2, 2, 4])
    z_channels: int = 256
    base_channels: int = 128
    num_res_blocks: int = 2
    dropout_p: float = 0.0
    image_size: int = 256

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.encoder_ch_mult) - 1)

    @property
    def grid_size(self) -> int:
        return self.image_size // self.downsample

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "VQConfig":
        return _from_dict(cls, data)


@dataclass
class SamplingConfig:
    """Sampling options shared by every decoding order (reference c2i defaults)."""
    cfg_scale: float = 4.0
    cfg_interval: int = -1      # guidance is switched off once more tokens than this are decoded; -1 never
    temperature: float = 1.0
    top_k: int = 2000           # 0 disables
    top_p: float = 1.0          # 1.0 disables
    seed: int = 0

    def validate(self) -> "SamplingConfig":
        problems = []
        if not (0.0 <= self.cfg_scale <= 50.0):
            problems.append(f"cfg_scale must be in [0, 50], got {self.cfg_scale}")
        if not -1 <= self.cfg_interval < 2 ** 31:
            problems.append(f"cfg_interval must be -1 (always) or in [0, 2**31), got {self.cfg_interval}")
        if not (0.0 < self.temperature <= 10.0):
            problems.append(f"temperature must be in (0, 10], got {self.temperature}")
        if not 0 <= self.top_k < 2 ** 31:
            problems.append(f"top_k must be in [0, 2**31) (0 = off), got {self.top_k}")
        if not (0.0 < self.top_p <= 1.0):
            problems.append(f"top_p must be in (0, 1], got {self.top_p}")
        if not (0 <= self.seed < 2 ** 63):
            problems.append(f"seed must be in [0, 2**63), got {self.seed}")
        if problems:
            raise ValueError("; ".join(problems))
        return self
