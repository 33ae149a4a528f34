"""Video models a user works with: the NAR and raster video models and the image tokenizer.

`VideoStudio` is the video counterpart of the image `Studio`: it picks the model for a decoding
order (NAR for "nar", raster for "raster" and "zipar"), runs the one decoding engine on the
clip's T x n x n grid and turns token grids into frames: the clip itself (each frame through
the image tokenizer), and live views with undecoded tokens blank and the front plane outlined
in every frame at once.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from .checkpoint import CheckpointError
from .config import SamplingConfig
from .decode import StepRecord, decode_steps
from .loading import BUNDLED_DIR, LoadedModel, load
from .render import compose_clip_frame, save_gif, save_mp4, save_png, tile, to_uint8, upscale
from .schedules import Schedule, make_schedule

BUNDLED_VIDEO = {"nar": BUNDLED_DIR / "video_nar.safetensors",
                 "raster": BUNDLED_DIR / "video_raster.safetensors",
                 "vq": BUNDLED_DIR / "vq.safetensors"}


def model_kind(order: str) -> str:
    return "nar" if order == "nar" else "raster"


def load_video_model(path: str | Path, expect_kind: str, device: torch.device) -> LoadedModel:
    """A NAR or raster video model (fp32: 16-bit files load as fp32), refused if it is an image model."""
    loaded = load(path, expect=expect_kind, device=device, dtype=torch.float32)
    if not loaded.model.config.is_video:
        raise CheckpointError(f"{Path(path).name} is an image model, not a video model")
    return loaded


class VideoStudio:
    is_text = False    # the video models are conditioned on a motion class

    def __init__(self, vq, models: dict[str, LoadedModel]):
        self.vq = vq
        self.models = models
        self.device = next(vq.parameters()).device
        self._blank_token: Optional[int] = None
        for loaded in models.values():
            cfg = loaded.model.config
            if cfg.vocab_size != vq.cfg.codebook_size:
                raise CheckpointError(f"{loaded.source}: vocabulary {cfg.vocab_size} vs the tokenizer's "
                                      f"codebook of {vq.cfg.codebook_size}")

    @classmethod
    def bundled(cls, device: torch.device = torch.device("cpu"), files: Optional[dict] = None,
                kinds: tuple[str, ...] = ("nar", "raster")) -> "VideoStudio":
        """The bundled video models of `kinds` (or the files given for them) and the tokenizer."""
        files = {**BUNDLED_VIDEO, **(files or {})}
        vq = load(files["vq"], expect="vq", device=device).eval()
        return cls(vq, {kind: load_video_model(files[kind], kind, device) for kind in kinds})

    def model_for(self, order: str) -> LoadedModel:
        loaded = self.models.get(model_kind(order))
        if loaded is None:
            raise ValueError(f"no {model_kind(order)} video model is loaded (needed for the {order} order)")
        return loaded

    def schedule(self, order: str, window: int = 8) -> Schedule:
        T, n, _ = self.model_for(order).model.config.grid_shape
        return make_schedule(order, n, window, frames=T)

    def class_ids(self, order: str, classes: list) -> torch.Tensor:
        """Motion names or indices -> class ids, with a clear error."""
        names = self.model_for(order).class_names
        ids = []
        for c in classes:
            text = str(c).strip()
            if text.lstrip("-").isdigit():
                i = int(text)
                if not 0 <= i < len(names):
                    raise ValueError(f"class id {i} is out of range [0, {len(names) - 1}]")
            elif text in names:
                i = names.index(text)
            else:
                raise ValueError(f"unknown class {text[:60]!r}; the video model knows {', '.join(names)}")
            ids.append(i)
        return torch.tensor(ids, dtype=torch.long)

    def decode_steps(self, order: str, class_ids: torch.Tensor, sampling: SamplingConfig,
                     window: int = 8, sync: bool = True) -> Iterator[StepRecord]:
        """The engine's step records for a batch of clips (record.grid is [B, T*n*n])."""
        return decode_steps(self.model_for(order).model, self.schedule(order, window), class_ids,
                            sampling, sync=sync)

    # -- pixels -----------------------------------------------------------------------------
    @property
    def blank_token(self) -> int:
        """The token a plain white patch encodes to: stands in for undecoded tokens."""
        if self._blank_token is None:
            size = self.vq.cfg.downsample * 8
            white = torch.ones(1, 3, size, size, device=self.device)
            self._blank_token = int(self.vq.encode(white).flatten().mode().values)
        return self._blank_token

    @torch.inference_mode()
    def clips(self, grid: torch.Tensor, frames: int) -> np.ndarray:
        """Token grids [B, T*n*n] or [B, T, n, n] (-1 = not decoded) -> uint8 [B, T, H, W, 3]."""
        tokens = grid.to(self.device)
        batch = tokens.shape[0]
        n = int(round((tokens[0].numel() // frames) ** 0.5))
        tokens = tokens.reshape(batch * frames, n, n)
        tokens = torch.where(tokens < 0, torch.full_like(tokens, self.blank_token), tokens)
        pictures = to_uint8(self.vq.decode(tokens))
        return pictures.reshape(batch, frames, *pictures.shape[1:])

    def frames(self, record: StepRecord, shape: tuple[int, int, int], scale: int = 4) -> list[np.ndarray]:
        """One live view per clip of the batch for a decoding step: the T frames side by side,
        undecoded tokens blank, this step's positions (the front plane for NAR) outlined."""
        decoded = (record.grid >= 0).reshape(-1, *shape).cpu().numpy()
        front = np.zeros(int(np.prod(shape)), dtype=bool)
        front[record.positions.cpu().numpy()] = True
        front = front.reshape(shape)
        return [compose_clip_frame(clip, d, front, scale)
                for clip, d in zip(self.clips(record.grid, shape[0]), decoded)]


def save_clip(clips: np.ndarray, path: str | Path, scale: int = 4) -> Path:
    """Clips uint8 [B, T, H, W, 3] as a file by its suffix: an MP4 or GIF in which time runs through
    the frames (the clips of a batch side by side, shown `scale` x, at 4 frames a second), or a PNG
    of every clip's frames side by side, one clip a row."""
    played = [upscale(tile([clip[k] for clip in clips]), scale) for k in range(clips.shape[1])]
    path = str(path)
    if path.endswith(".png"):
        return save_png(upscale(tile([tile(list(clip), gap=2) for clip in clips], columns=1), scale), path)
    if path.endswith(".gif"):
        return save_gif(played, path, fps=4, hold_last=0.25)
    return save_mp4(played * 3, path, fps=4, hold_last=0.25)      # three loops: a 1 s clip is too short to see
