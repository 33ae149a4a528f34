"""The models a user works with, together: a NAR model, a raster model and the VQ tokenizer.

`Studio` is what the command line, the app, the evaluation and the benchmark drive. It picks
the model for a decoding order (the NAR model for "nar", the raster model for "raster" and
"zipar"), runs the decoding engine, and turns token grids into images and animation frames.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from .checkpoint import CheckpointError, build_transformer, build_vq, class_names_of, read_checkpoint, resolve
from .config import SamplingConfig
from .decode import StepRecord, decode_steps
from .devices import pick_device, pick_dtype
from .model import Transformer
from .render import compose_frame, to_uint8
from .schedules import Schedule, make_schedule

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = {"nar": ROOT / "checkpoints" / "nar.safetensors",
           "raster": ROOT / "checkpoints" / "raster.safetensors",
           "vq": ROOT / "checkpoints" / "vq.safetensors"}


@dataclass
class LoadedModel:
    model: Transformer
    class_names: list[str]
    source: str
    path: Optional[Path] = None       # the local file the weights came from (fine-tuning starts there)

    def describe(self) -> dict:
        cfg = self.model.config
        params = sum(p.numel() for p in self.model.parameters())
        return {"source": self.source, "kind": cfg.kind, "parameters": params,
                "layers": cfg.n_layer, "extra_blocks": cfg.extra_blocks if cfg.kind == "nar" else 0,
                "dim": cfg.dim, "heads": cfg.n_head, "vocab": cfg.vocab_size,
                "grid": f"{cfg.grid_size}x{cfg.grid_size}", "classes": len(self.class_names)}


def load_transformer(source: str | Path, filename: Optional[str] = None, *, expect_kind: Optional[str] = None,
                     device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None,
                     grid_size: int = 16) -> LoadedModel:
    path = resolve(source, filename)
    ckpt = read_checkpoint(path, grid_size=grid_size)
    if expect_kind and ckpt.kind != expect_kind:
        raise CheckpointError(f"{path.name} is a {ckpt.kind} checkpoint; a {expect_kind} model was expected")
    model = build_transformer(ckpt)
    device = device or pick_device()
    model = model.to(device=device, dtype=dtype or pick_dtype(device))
    return LoadedModel(model, class_names_of(ckpt), str(source if filename is None else f"{source}/{filename}"),
                       Path(path))


def load_tokenizer(source: str | Path, filename: Optional[str] = None, device: Optional[torch.device] = None,
                   grid_size: int = 16):
    """Our VQ safetensors, or an official LlamaGen VQ file (grid_size: its token grid per side)."""
    ckpt = read_checkpoint(resolve(source, filename), grid_size=grid_size)
    return build_vq(ckpt).to(device or pick_device())


class Studio:
    """NAR + raster models and a tokenizer on one device. Thread-safe for concurrent decodes
    (KV caches are per call); `swap` replaces a model atomically."""

    def __init__(self, vq, nar: Optional[LoadedModel] = None, raster: Optional[LoadedModel] = None):
        self.vq = vq
        self.models: dict[str, Optional[LoadedModel]] = {"nar": nar, "raster": raster}
        self._lock = threading.Lock()
        self._blank_token: Optional[int] = None

    @classmethod
    def from_folder(cls, folder: Path, device: Optional[str] = None) -> "Studio":
        """The models in a folder holding nar.safetensors, raster.safetensors and vq.safetensors."""
        files = {name: Path(folder) / f"{name}.safetensors" for name in ("nar", "raster", "vq")}
        missing = [str(p) for p in files.values() if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"checkpoints missing: {', '.join(missing)}")
        dev = pick_device(device)
        vq = load_tokenizer(files["vq"], device=dev)
        vq.source = str(files["vq"])
        studio = cls(vq)
        for kind in ("nar", "raster"):  # swap checks each model against the tokenizer
            studio.swap(load_transformer(files[kind], expect_kind=kind, device=dev))
        return studio

    @classmethod
    def bundled(cls, device: Optional[str] = None) -> "Studio":
        return cls.from_folder(BUNDLED["nar"].parent, device)

    @property
    def device(self) -> torch.device:
        return next(self.vq.parameters()).device

    def swap(self, loaded: LoadedModel) -> None:
        kind = loaded.model.config.kind
        grid = self.vq.cfg.grid_size if hasattr(self.vq, "cfg") else None
        if loaded.model.config.vocab_size != self.vq.cfg.codebook_size:
            raise CheckpointError(f"model vocabulary {loaded.model.config.vocab_size} does not match the "
                                  f"tokenizer's codebook of {self.vq.cfg.codebook_size}")
        if grid is not None and loaded.model.config.grid_size != grid:
            raise CheckpointError(f"model grid {loaded.model.config.grid_size} does not match the tokenizer's {grid}")
        with self._lock:
            self.models[kind] = loaded

    def swap_tokenizer(self, vq, models: tuple = ()) -> list[str]:
        """Replace the tokenizer, together with any of the transformers in `models`, atomically.

        Every new model must match the new tokenizer (vocabulary = codebook, same grid), or
        nothing changes. A model that is kept but does not match the new tokenizer is unloaded;
        the kinds unloaded are returned so the caller can say so."""
        codebook, grid = vq.cfg.codebook_size, vq.cfg.grid_size

        def mismatch(loaded: LoadedModel) -> Optional[str]:
            cfg = loaded.model.config
            if cfg.vocab_size != codebook:
                return f"vocabulary {cfg.vocab_size} vs the tokenizer's codebook of {codebook}"
            if cfg.grid_size != grid:
                return f"grid {cfg.grid_size}x{cfg.grid_size} vs the tokenizer's {grid}x{grid}"
            return None

        new = {}
        for loaded in models:
            problem = mismatch(loaded)
            if problem:
                raise CheckpointError(f"the {loaded.model.config.kind} model does not match the new "
                                      f"tokenizer: {problem}")
            new[loaded.model.config.kind] = loaded
        with self._lock:
            unloaded = [kind for kind, loaded in self.models.items()
                        if kind not in new and loaded is not None and mismatch(loaded)]
            self.models.update(new)
            for kind in unloaded:
                self.models[kind] = None
            self.vq = vq
            self._blank_token = None
        return unloaded

    def model_for(self, order: str) -> LoadedModel:
        kind = "nar" if order == "nar" else "raster"
        loaded = self.models.get(kind)
        if loaded is None:
            raise ValueError(f"no {kind} model is loaded (needed for the {order} order)")
        return loaded

    def schedule(self, order: str, window: int = 8) -> Schedule:
        return make_schedule(order, self.model_for(order).model.config.grid_size, window)

    def class_ids(self, order: str, classes: list) -> torch.Tensor:
        """Class names or indices -> ids of the model used for `order`, with a clear error."""
        names = self.model_for(order).class_names
        ids = []
        for c in classes:
            if isinstance(c, str) and not c.strip().lstrip("-").isdigit():
                if c not in names:
                    raise ValueError(f"unknown class {c!r}; the model knows {', '.join(names)}")
                ids.append(names.index(c))
            else:
                i = int(c)
                if not 0 <= i < len(names):
                    raise ValueError(f"class id {i} is out of range [0, {len(names) - 1}]")
                ids.append(i)
        return torch.tensor(ids, dtype=torch.long)

    def decode_steps(self, order: str, class_ids: torch.Tensor, sampling: SamplingConfig,
                     window: int = 8, sync: bool = True) -> Iterator[StepRecord]:
        loaded = self.model_for(order)
        return decode_steps(loaded.model, self.schedule(order, window), class_ids, sampling, sync=sync)

    # -- pixels -----------------------------------------------------------------------------
    @property
    def blank_token(self) -> int:
        """The token a plain white patch encodes to: stands in for undecoded tokens."""
        if self._blank_token is None:
            size = self.vq.cfg.image_size
            white = torch.ones(1, 3, size, size, device=self.device)
            self._blank_token = int(self.vq.encode(white).flatten().mode().values)
        return self._blank_token

    @torch.inference_mode()
    def images(self, grid: torch.Tensor) -> np.ndarray:
        """Token grids [B, n*n] or [B, n, n] (-1 = not decoded) -> uint8 images [B, H, W, 3]."""
        n = self.vq.cfg.grid_size
        tokens = grid.reshape(-1, n, n).to(self.device)
        tokens = torch.where(tokens < 0, torch.full_like(tokens, self.blank_token), tokens)
        return to_uint8(self.vq.decode(tokens))

    def frames(self, record: StepRecord, scale: int = 4) -> list[np.ndarray]:
        """One animation frame per image of the batch for a decoding step."""
        n = self.vq.cfg.grid_size
        decoded = (record.grid >= 0).reshape(-1, n, n).cpu().numpy()
        front = np.zeros(n * n, dtype=bool)
        front[record.positions.cpu().numpy()] = True
        front = front.reshape(n, n)
        return [compose_frame(img, d, front, scale) for img, d in zip(self.images(record.grid), decoded)]
