"""VQ image tokenizer, architecturally identical to LlamaGen's VQ model.

For a given `VQConfig` the module tree, and so every state-dict key and shape, matches
LlamaGen's `tokenizer/tokenizer_image/vq_model.py`; the default config is VQ-16, so the official
`vq_ds16_c2i.pt` (key "model") loads with `load_state_dict(strict=True)`. The conv encoder maps
an image to an n x n grid of vectors, each is snapped to its nearest (l2-normalised) codebook
entry, and the conv decoder maps the grid back to pixels. Images are float [B, 3, H, W] in
[-1, 1]; tokens are LongTensor [B, n, n] indices into the codebook.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import VQConfig

# LlamaGen keeps the indices of the last 65536 quantised vectors in a buffer to report usage.
USAGE_WINDOW = 65536


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = (nn.Conv2d(in_channels, out_channels, 1)
                             if in_channels != out_channels else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions of a feature map."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x_norm = self.norm(x)
        q, k, v = (conv(x_norm).flatten(2).transpose(1, 2) for conv in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(c)) v
        return x + self.proj_out(out.transpose(1, 2).reshape(b, c, h, w))


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric padding, as in taming / LlamaGen


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution of the encoder or decoder: `res` blocks, `attn` blocks (lowest resolution
    only) and an optional resampler, stored under LlamaGen's attribute names."""

    def __init__(self, in_channels: int, out_channels: int, n_blocks: int, with_attn: bool,
                 dropout: float, resample: Optional[str]):
        super().__init__()
        self.res = nn.ModuleList()
        self.attn = nn.ModuleList()
        for _ in range(n_blocks):
            self.res.append(ResnetBlock(in_channels, out_channels, dropout))
            in_channels = out_channels
            if with_attn:
                self.attn.append(AttnBlock(out_channels))
        if resample == "down":
            self.downsample = Downsample(out_channels)
        elif resample == "up":
            self.upsample = Upsample(out_channels)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for i, res in enumerate(self.res):
            h = res(h)
            if len(self.attn):
                h = self.attn[i](h)
        if hasattr(self, "downsample"):
            h = self.downsample(h)
        if hasattr(self, "upsample"):
            h = self.upsample(h)
        return h


def _mid(channels: int, dropout: float) -> nn.ModuleList:
    return nn.ModuleList([ResnetBlock(channels, channels, dropout), AttnBlock(channels),
                          ResnetBlock(channels, channels, dropout)])


class Encoder(nn.Module):
    def __init__(self, cfg: VQConfig, in_channels: int = 3):
        super().__init__()
        ch, mult = cfg.base_channels, cfg.encoder_ch_mult
        last = len(mult) - 1
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.conv_blocks = nn.ModuleList()
        block_in = ch
        for i, m in enumerate(mult):
            self.conv_blocks.append(Level(block_in, ch * m, cfg.num_res_blocks, with_attn=i == last,
                                          dropout=cfg.dropout_p, resample=None if i == last else "down"))
            block_in = ch * m
        self.mid = _mid(block_in, cfg.dropout_p)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.conv_blocks:
            h = level(h)
        for block in self.mid:
            h = block(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, cfg: VQConfig, out_channels: int = 3):
        super().__init__()
        ch, mult = cfg.base_channels, cfg.decoder_ch_mult
        block_in = ch * mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, block_in, 3, padding=1)
        self.mid = _mid(block_in, cfg.dropout_p)
        # Lowest resolution first; each level has one more res block than the encoder's.
        self.conv_blocks = nn.ModuleList()
        for i in reversed(range(len(mult))):
            self.conv_blocks.append(Level(block_in, ch * mult[i], cfg.num_res_blocks + 1,
                                          with_attn=i == len(mult) - 1, dropout=cfg.dropout_p,
                                          resample=None if i == 0 else "up"))
            block_in = ch * mult[i]
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        for block in self.mid:
            h = block(h)
        for level in self.conv_blocks:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


@dataclass
class VQLosses:
    """Training terms of one forward pass (the loss terms are already weighted)."""
    codebook: torch.Tensor      # ||sg(z) - e||^2: moves the codes towards the encoder outputs
    commitment: torch.Tensor    # beta * ||z - sg(e)||^2: keeps the encoder near its codes
    entropy: torch.Tensor       # entropy_loss_ratio * (per-vector entropy - batch entropy)
    usage: float                # fraction of the codebook used in the recent window
    indices: torch.Tensor       # [N] chosen codes, for codebook statistics
    latents: torch.Tensor       # [N, e_dim] (normalised) encoder outputs, detached

    @property
    def total(self) -> torch.Tensor:
        return self.codebook + self.commitment + self.entropy


def entropy_loss(affinity: torch.Tensor, temperature: float = 0.01) -> torch.Tensor:
    """Low per-vector entropy (confident assignments), high entropy of the batch average (many
    codes in use): LlamaGen's / MaskGIT's codebook entropy loss."""
    logits = affinity.reshape(-1, affinity.shape[-1]) / temperature
    probs = F.softmax(logits, dim=-1)
    log_probs = F.log_softmax(logits + 1e-5, dim=-1)
    avg_probs = probs.mean(dim=0)
    avg_entropy = -torch.sum(avg_probs * torch.log(avg_probs + 1e-5))
    sample_entropy = -torch.mean(torch.sum(probs * log_probs, dim=-1))
    return sample_entropy - avg_entropy


class VectorQuantizer(nn.Module):
    def __init__(self, cfg: VQConfig):
        super().__init__()
        self.cfg = cfg
        n, dim = cfg.codebook_size, cfg.codebook_embed_dim
        self.embedding = nn.Embedding(n, dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / n, 1.0 / n)
        if cfg.codebook_l2_norm:
            with torch.no_grad():
                self.embedding.weight.copy_(F.normalize(self.embedding.weight, dim=-1))
        if cfg.codebook_show_usage:
            # Float, like LlamaGen's, so the official checkpoint loads unchanged.
            self.register_buffer("codebook_used", torch.zeros(USAGE_WINDOW))

    def codebook(self) -> torch.Tensor:
        """[codebook_size, e_dim] code vectors as the decoder sees them."""
        w = self.embedding.weight
        return F.normalize(w, dim=-1) if self.cfg.codebook_l2_norm else w

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices [B, h, w] -> quantised latents [B, e_dim, h, w], in one gather."""
        return self.codebook()[indices].permute(0, 3, 1, 2).contiguous()

    def _distances(self, z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
        return (z.pow(2).sum(1, keepdim=True) + codebook.pow(2).sum(1)
                - 2 * z @ codebook.t())

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Latents [B, e_dim, h, w] -> code indices [B, h, w]."""
        b, c, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, c)
        if self.cfg.codebook_l2_norm:
            flat = F.normalize(flat, dim=-1)
        return self._distances(flat, self.codebook()).argmin(1).view(b, h, w)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, VQLosses]:
        """Quantise with a straight-through gradient; returns ([B, e_dim, h, w], losses)."""
        b, c, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, c)
        if self.cfg.codebook_l2_norm:
            flat = F.normalize(flat, dim=-1)
        codebook = self.codebook()
        d = self._distances(flat, codebook)
        indices = d.argmin(1)
        z_q = F.embedding(indices, codebook)  # unlike indexing, its CPU backward is deterministic
        zero = flat.new_zeros(())
        codebook_loss = torch.mean((z_q - flat.detach()) ** 2)
        commitment = self.cfg.commit_loss_beta * torch.mean((z_q.detach() - flat) ** 2)
        entropy = (self.cfg.entropy_loss_ratio * entropy_loss(-d)
                   if self.cfg.entropy_loss_ratio > 0 else zero)
        usage = self._track_usage(indices) if self.training else 0.0
        z_q = flat + (z_q - flat).detach()
        z_q = z_q.view(b, h, w, c).permute(0, 3, 1, 2).contiguous()
        return z_q, VQLosses(codebook_loss, commitment, entropy, usage, indices, flat.detach())

    @torch.no_grad()
    def _track_usage(self, indices: torch.Tensor) -> float:
        """Push the batch's indices into the sliding window; return the fraction of codes seen."""
        if not self.cfg.codebook_show_usage:
            return 0.0
        indices = indices[-USAGE_WINDOW:].to(self.codebook_used.dtype)
        n = indices.numel()
        self.codebook_used[:-n] = self.codebook_used[n:].clone()
        self.codebook_used[-n:] = indices
        return len(torch.unique(self.codebook_used)) / self.cfg.codebook_size


class VQModel(nn.Module):
    def __init__(self, cfg: Optional[VQConfig] = None):
        super().__init__()
        self.cfg = cfg = cfg or VQConfig()
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quantize = VectorQuantizer(cfg)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.codebook_embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(cfg.codebook_embed_dim, cfg.z_channels, 1)

    def encode_latent(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] -> unquantised latents [B, e_dim, H/ds, W/ds]."""
        return self.quant_conv(self.encoder(images))

    def decode_latent(self, z_q: torch.Tensor) -> torch.Tensor:
        """Quantised latents [B, e_dim, n, n] -> images [B, 3, H, W] (about [-1, 1])."""
        return self.decoder(self.post_quant_conv(z_q))

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] in [-1, 1] -> token grid LongTensor [B, n, n]."""
        return self.quantize.nearest(self.encode_latent(images))

    @torch.no_grad()
    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """Token grid [B, n, n] -> images [B, 3, H, W] clamped to [-1, 1]."""
        return self.decode_latent(self.quantize.lookup(indices.long())).clamp(-1, 1)

    decode_codes = decode  # LlamaGen's name (decode_code) for the same operation

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, VQLosses]:
        z_q, losses = self.quantize(self.encode_latent(images))
        return self.decode_latent(z_q), losses
