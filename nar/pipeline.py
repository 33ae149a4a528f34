"""The models a user works with, together: a NAR model, a raster model and the VQ tokenizer.

`Studio` is what the command line, the app, the evaluation and the benchmark drive. It picks
the model for a decoding order (the NAR model for "nar", the raster model for "raster" and
"zipar"), runs the decoding engine, and turns token grids into images and animation frames:

    studio = Studio.from_pretrained("checkpoints")             # or a Hub repo id
    out = studio(["smiley"], order="nar", sampling=SamplingConfig(seed=0), callback=print)
    out.images, out.tokens, out.seconds

    t2i = Studio.from_pretrained("checkpoints", text=True)     # the text-to-image models
    out = t2i(["cat face", "flag: Japan"], order="nar")
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch

from .checkpoint import CheckpointError
from .conditions import ClassCondition, Condition
from .config import SamplingConfig
from .decode import StepRecord, decode_steps
from .devices import pick_device, pick_dtype
from .loading import BUNDLED_DIR, LoadedModel, fit_problem, folder_file, load_folder, resolve
from .prompts import OwnPromptEncoder
from .render import compose_frame, to_uint8
from .schedules import Schedule, make_schedule


@dataclass
class StudioOutput:
    """What one call of a Studio gives back."""
    images: np.ndarray                 # uint8 [B, H, W, 3]
    tokens: torch.Tensor               # [B, n, n] token grids
    seconds: float                     # decode time (the decoder's own work, no drawing)
    step_seconds: list[float] = field(default_factory=list)   # decode time after each step
    order: str = "nar"

    @property
    def steps(self) -> int:
        return len(self.step_seconds)


class Studio:
    """NAR + raster models and a tokenizer on one device, and for text models the prompt
    encoder. Thread-safe for concurrent decodes (KV caches are per call); `swap` replaces a
    model atomically."""

    def __init__(self, vq, nar: Optional[LoadedModel] = None, raster: Optional[LoadedModel] = None,
                 prompt_encoder=None):
        self.vq = vq
        self.models: dict[str, Optional[LoadedModel]] = {"nar": nar, "raster": raster}
        self.prompt_encoder = prompt_encoder   # a PromptEncoder (nar/prompts.py) for text models
        self._lock = threading.Lock()
        self._blank_token: Optional[int] = None

    @classmethod
    def from_pretrained(cls, source: str | Path = BUNDLED_DIR, device: Optional[str] = None,
                        dtype: Optional[torch.dtype] = None, text: bool = False) -> "Studio":
        """The models of a folder, or of a Hub repo id, holding nar.safetensors, raster.safetensors
        and vq.safetensors (default: the bundled checkpoints); device "auto" picks a GPU if any.
        text=True: the text-to-image models t2i_nar / t2i_raster.safetensors with
        text_encoder.safetensors."""
        device = pick_device(device)
        vq, nar, raster = load_folder(source, device=device, dtype=dtype, prefix="t2i_" if text else "")
        encoder = OwnPromptEncoder.from_file(resolve(*folder_file(source, "text_encoder.safetensors")), device) \
            if text else None
        return cls(vq, nar, raster, encoder)

    @property
    def is_text(self) -> bool:
        """Whether the loaded transformers are text-to-image models (prompts, not classes)."""
        return any(m is not None and m.model.config.condition == "text" for m in self.models.values())

    @property
    def device(self) -> torch.device:
        return next(self.vq.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The precision the transformers run in (fine-tune previews use it too)."""
        for loaded in self.models.values():
            if loaded is not None:
                return next(loaded.model.parameters()).dtype
        return pick_dtype(self.device)

    def check_fits(self, loaded: LoadedModel) -> None:
        """CheckpointError if `loaded` does not fit the active tokenizer."""
        problem = fit_problem(loaded.model.config, self.vq.cfg, "the active tokenizer")
        if problem:
            raise CheckpointError(problem + "; load its tokenizer together with it")

    def swap(self, loaded: LoadedModel) -> None:
        """Make `loaded` the model of its kind; CheckpointError if it does not fit the tokenizer."""
        self.check_fits(loaded)
        with self._lock:
            self.models[loaded.model.config.kind] = loaded

    def swap_tokenizer(self, vq, models: Sequence[LoadedModel] = ()) -> list[str]:
        """Replace the tokenizer, together with any of the transformers in `models`, atomically.

        Every new model must fit the new tokenizer, or nothing changes. A model that is kept but
        does not fit the new tokenizer is unloaded; the kinds unloaded are returned so the caller
        can say so."""
        new = {}
        for loaded in models:
            problem = fit_problem(loaded.model.config, vq.cfg, "the new tokenizer")
            if problem:
                raise CheckpointError(problem)
            new[loaded.model.config.kind] = loaded
        with self._lock:
            unloaded = [kind for kind, loaded in self.models.items()
                        if kind not in new and loaded is not None and fit_problem(loaded.model.config, vq.cfg)]
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

    def condition(self, order: str, entries: Sequence) -> Condition:
        """What the model for `order` is conditioned on: class names or ids for a class model,
        prompts for a text model; a clear ValueError for the wrong kind or a bad entry."""
        config = self.model_for(order).model.config
        if config.condition != "text":
            return ClassCondition(self.class_ids(order, list(entries)))
        if self.prompt_encoder is None:
            raise ValueError("this text-to-image model needs a text encoder; none is loaded")
        if (self.prompt_encoder.max_len, self.prompt_encoder.dim) != (config.cls_token_num, config.caption_dim):
            raise ValueError(f"the text encoder gives {self.prompt_encoder.max_len} x {self.prompt_encoder.dim} "
                             f"features, the model takes {config.cls_token_num} x {config.caption_dim}")
        return self.prompt_encoder(list(entries)).to(self.device)

    def decode_steps(self, order: str, condition: Condition | torch.Tensor, sampling: SamplingConfig,
                     window: int = 8, sync: bool = True, record_confidence: bool = False) -> Iterator[StepRecord]:
        loaded = self.model_for(order)
        return decode_steps(loaded.model, self.schedule(order, window), condition, sampling, sync=sync,
                            record_confidence=record_confidence)

    def __call__(self, entries: Sequence, order: str = "nar", sampling: SamplingConfig = SamplingConfig(),
                 window: int = 8, callback: Optional[Callable[[StepRecord], None]] = None) -> StudioOutput:
        """Decode one image per entry in `order`: class names or ids for class models, prompts for
        text models; `callback` sees the StepRecord of every step (its time is not counted).
        Returns images, tokens and timings."""
        condition = self.condition(order, list(entries))
        record, step_seconds = None, []
        for record in self.decode_steps(order, condition, sampling.validate(), window=window):
            step_seconds.append(record.elapsed)
            if callback is not None:
                callback(record)
        n = self.model_for(order).model.config.grid_size
        return StudioOutput(self.images(record.grid), record.grid.view(-1, n, n), record.elapsed, step_seconds,
                            order)

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
