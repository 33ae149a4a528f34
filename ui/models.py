"""Model management for the Model tab over one Studio (the server's, or a session's own copy):
loading checkpoints from uploads or the Hub (all of one request or none), going back to the startup
checkpoints, and describing the active models and the classes each order knows."""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Optional, Sequence

import torch

from nar.checkpoint import CheckpointError, read_checkpoint
from nar.loading import KINDS, LoadedModel, from_checkpoint, resolve, validate_repo_id
from nar.names import quoted
from nar.pipeline import Studio

from . import zerogpu
from .requests import MAX_NAME_CHARS, parse_grid

MAX_LOAD_FILES = 3              # a tokenizer, a NAR and a raster model


def dtype_name(module: torch.nn.Module) -> str:
    return str(next(module.parameters()).dtype).replace("torch.", "")


class Models:
    """The active models of a Studio and the ways to change them (one change at a time)."""

    def __init__(self, studio: Studio, checkpoint_dir: Optional[Path] = None):
        self.studio = studio
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self._lock = threading.Lock()

    # -- facts for the UI ---------------------------------------------------------------------
    def class_names(self, orders: Sequence[str] = ()) -> list[str]:
        """The classes every model of `orders` knows (the NAR model's order), or with no orders
        the NAR model's (else the raster model's): a class list offers only what will decode."""
        kinds = [("nar" if o == "nar" else "raster") for o in orders] or \
            [next((k for k in ("nar", "raster") if self.studio.models.get(k) is not None), "nar")]
        lists = [self.studio.models.get(k) for k in dict.fromkeys(kinds)]
        if any(loaded is None for loaded in lists):
            return []
        known = set.intersection(*(set(loaded.class_names) for loaded in lists))
        return [name for name in lists[0].class_names if name in known]

    @property
    def is_text(self) -> bool:
        """Whether the transformers are text-to-image models (a prompt instead of a class)."""
        return self.studio.is_text

    def inferred_heads(self) -> list[str]:
        """The models whose head count was inferred (dim / 64), for a warning."""
        return [kind for kind, loaded in self.studio.models.items()
                if loaded is not None and loaded.head_count_inferred]

    def grid_size(self) -> int:
        return int(self.studio.vq.cfg.grid_size)

    def image_size(self) -> int:
        return int(self.studio.vq.cfg.image_size)

    def dtype(self) -> str:
        return str(self.studio.dtype).replace("torch.", "")

    def device_label(self) -> str:
        device = self.studio.device
        if device.type == "cuda" and zerogpu.active():   # no GPU to ask in the main process there
            return "ZeroGPU (cuda, lent per request)"
        if device.type == "cuda":
            return f"{device} ({torch.cuda.get_device_name(device)})"
        threads = torch.get_num_threads()
        return f"cpu ({threads} thread{'s' if threads != 1 else ''})"

    def rows(self) -> tuple[list[str], list[list]]:
        """The active models side by side: headers and rows for a table."""
        columns = {}
        for kind in ("nar", "raster"):
            title = "NAR model" if kind == "nar" else "Raster model"
            loaded = self.studio.models.get(kind)
            if loaded is None:
                columns[title] = {"source": "(not loaded)"}
                continue
            d = loaded.describe()
            d["dtype"] = dtype_name(loaded.model)
            d["device"] = str(next(loaded.model.parameters()).device)
            d["parameters"] = f"{d['parameters'] / 1e6:.2f} M"
            columns[title] = d
        vq = self.studio.vq
        cfg = vq.cfg
        columns["Tokenizer (VQ)"] = {
            "source": getattr(vq, "source", "") or "", "kind": "vq",
            "parameters": f"{sum(p.numel() for p in vq.parameters()) / 1e6:.2f} M",
            "vocab": cfg.codebook_size, "grid": f"{cfg.grid_size}x{cfg.grid_size}",
            "image": f"{cfg.image_size} px (downsample {cfg.downsample})",
            "dtype": dtype_name(vq), "device": str(next(vq.parameters()).device)}
        fields = ["source", "kind", "parameters", "layers", "extra_blocks", "dim", "heads", "vocab",
                  "grid", "image", "classes", "device", "dtype"]
        names = {"extra_blocks": "extra blocks"}
        rows = [[names.get(f, f)] + [str(col.get(f, "")) for col in columns.values()] for f in fields]
        return ["", *columns.keys()], rows

    # -- changing them ----------------------------------------------------------------------------
    def load(self, upload_paths: Sequence[str] = (), repo_id: str = "", filenames: str = "",
             grid_size=None) -> str:
        """Load checkpoints (NAR, raster and/or VQ; the kind is read from each file) from uploads
        or a Hugging Face Hub repo and make them active together. Any error leaves the active
        models as they were; returns a message saying what changed."""
        return self.load_sources(sources(upload_paths, repo_id, filenames), grid_size)

    def reset(self) -> str:
        """Back to the checkpoints the app was started with."""
        if self.checkpoint_dir is None:
            raise ValueError("the app was started without a checkpoint folder")
        files = [self.checkpoint_dir / f"{kind}.safetensors" for kind in KINDS]
        return self.load_sources([(str(path), path) for path in files])

    def use(self, loaded: LoadedModel) -> None:
        """Make a transformer active (checked against the active tokenizer)."""
        with self._lock:
            self.studio.swap(loaded)

    def load_sources(self, refs: list[tuple[str, Path]], grid_size=None) -> str:
        with self._lock:
            grid = parse_grid(grid_size, self.grid_size())
            device, dtype = self.studio.device, self.studio.dtype
            models: list[LoadedModel] = []
            vq = None
            for label, path in refs:
                loaded = from_checkpoint(read_checkpoint(path, grid_size=grid), label=label, device=device,
                                         dtype=dtype)
                if isinstance(loaded, LoadedModel):
                    if any(m.model.config.kind == loaded.model.config.kind for m in models):
                        raise CheckpointError(f"two {loaded.model.config.kind} checkpoints given; load one of "
                                              f"each kind")
                    models.append(loaded)
                elif vq is not None:
                    raise CheckpointError("two tokenizer checkpoints given; load one of each kind")
                else:
                    vq = loaded
            if vq is not None:
                unloaded = self.studio.swap_tokenizer(vq, models)
            else:
                for loaded in models:   # all checked first, so a mismatch changes nothing
                    self.studio.check_fits(loaded)
                for loaded in models:
                    self.studio.swap(loaded)
                unloaded = []
            parts = ([f"tokenizer from {vq.source}"] if vq is not None else []) + \
                    [f"{m.model.config.kind} model from {m.source}" for m in models]
            message = "Loaded " + "; ".join(parts) + "."
            if unloaded:
                message += (" Unloaded the " + " and ".join(unloaded) + " model (it does not match the new "
                            "tokenizer); load a matching one to use " +
                            ("raster and ZipAR" if "raster" in unloaded else "NAR") + " again.")
            return message


def sources(upload_paths, repo_id: str, filenames: str) -> list[tuple[str, Path]]:
    """(label, local file) of each checkpoint a load request names: uploads, or Hub files."""
    if isinstance(upload_paths, (str, os.PathLike)):
        upload_paths = [upload_paths]
    uploads = [str(p) for p in (upload_paths or []) if p]
    repo_id = str(repo_id or "").strip()
    filenames = str(filenames or "")
    if len(repo_id) > MAX_NAME_CHARS:
        raise ValueError(f"{quoted(repo_id)} is not a Hub repo id (owner/name, at most {MAX_NAME_CHARS} characters)")
    if len(filenames) > MAX_LOAD_FILES * (MAX_NAME_CHARS + 2):
        raise ValueError(f"the file names are {len(filenames):,} characters long; give at most "
                         f"{MAX_LOAD_FILES} names of at most {MAX_NAME_CHARS} characters each")
    names = [f.strip() for f in filenames.replace("\n", ",").split(",") if f.strip()]
    if uploads and repo_id:
        raise ValueError("give either uploaded files or a Hub repository, not both")
    if len(uploads) > MAX_LOAD_FILES or len(names) > MAX_LOAD_FILES:
        raise ValueError(f"load at most {MAX_LOAD_FILES} files at once (a tokenizer, a NAR and a raster "
                         f"model), got {max(len(uploads), len(names))}")
    if uploads:
        return [(Path(p).name, Path(p)) for p in uploads]
    if not repo_id:
        raise ValueError("upload a checkpoint file, or give a Hugging Face Hub repo id and file name")
    validate_repo_id(repo_id)
    if not names:
        raise ValueError(f"give the file name(s) inside {repo_id}")
    return [(f"{repo_id}/{name}", resolve(repo_id, name)) for name in names]
