"""Checkpoint files: our safetensors format, the official .pt layouts, and Hub resolution.

Our format is one safetensors file whose metadata carries `nar_studio_kind` (nar, raster, vq,
classifier), the model config as JSON and any extra JSON fields (class names, training state).
Official NAR / LlamaGen files are torch pickles; they are read only with
`torch.load(weights_only=True)`, which refuses pickles that would run code.
"""
from __future__ import annotations

import json
import os
import pickle
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import torch
from safetensors import SafetensorsError
from safetensors.torch import load_file, save_file
from safetensors import safe_open

FORMAT_KEY = "nar_studio_kind"
CHECKPOINT_KINDS = ("nar", "raster", "vq", "classifier")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used, with a message a person can act on."""


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Run `write(tmp_path)` then rename over `path`, so readers never see a partial file.

    If `write` raises (a full disk, a cancelled job) the temporary file is removed and any
    existing file at `path` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


@dataclass
class Checkpoint:
    """Tensors plus what is needed to rebuild and describe the model they belong to."""
    kind: str
    state_dict: dict[str, torch.Tensor]
    config: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)
    source: str = ""


def save_checkpoint(path: str | os.PathLike, kind: str, state_dict: Mapping[str, torch.Tensor],
                    config: Mapping[str, Any], extra: Optional[Mapping[str, Any]] = None) -> Path:
    """Write tensors + config atomically as safetensors."""
    if kind not in CHECKPOINT_KINDS:
        raise ValueError(f"kind must be one of {CHECKPOINT_KINDS}, got {kind!r}")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    metadata = {FORMAT_KEY: kind, "config": json.dumps(dict(config))}
    for key, value in (extra or {}).items():
        metadata[f"extra.{key}"] = json.dumps(value)
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_safetensors(path: str | os.PathLike) -> Checkpoint:
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorsError, OSError, ValueError) as e:
        raise CheckpointError(f"{path.name} is not a readable safetensors file ({e})") from e
    kind = metadata.get(FORMAT_KEY)
    if kind not in CHECKPOINT_KINDS:
        raise CheckpointError(
            f"{path.name} is a safetensors file but not a NAR Studio checkpoint "
            f"(metadata key {FORMAT_KEY!r} is {kind!r})")
    try:
        config = json.loads(metadata.get("config", "{}"))
        extra = {k[len("extra."):]: json.loads(v) for k, v in metadata.items() if k.startswith("extra.")}
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path.name} has corrupt metadata ({e})") from e
    return Checkpoint(kind=kind, state_dict=tensors, config=config, extra=extra, source=str(path))
