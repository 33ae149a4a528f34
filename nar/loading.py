"""The one way to load a model: a local file, a Hugging Face Hub reference or a folder -> a
transformer or a tokenizer on a device and dtype, checked to fit the tokenizer it will run with.

Every caller (the app, the Train tab, fine-tune previews, training, evaluation, the benchmark and
the command line) goes through `load`, `from_checkpoint` or `load_folder`; the file formats
themselves live in checkpoint.py.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch

from .checkpoint import (Checkpoint, CheckpointError, check_config_bounds, check_state_matches, class_names_of,
                         read_checkpoint)
from .config import ModelConfig, VQConfig
from .devices import pick_device, pick_dtype
from .hub import HubError, hub_file
from .names import NameTooLong, check_path_length, quoted, shown
from .model import Transformer
from .vq import VQModel

ROOT = Path(__file__).resolve().parent.parent
BUNDLED_DIR = ROOT / "checkpoints"
KINDS = ("vq", "nar", "raster")     # the files of a folder: <kind>.safetensors
HUB_PREFIX = "hf://"


# -- what a load gives ---------------------------------------------------------------------------
@dataclass
class LoadedModel:
    model: Transformer
    class_names: list[str]
    source: str
    path: Optional[Path] = None       # the local file the weights came from (fine-tuning starts there)
    head_count_inferred: bool = False  # an official file whose head count nobody stated (dim / 64)

    def describe(self) -> dict:
        cfg = self.model.config
        params = sum(p.numel() for p in self.model.parameters())
        return {"source": self.source, "kind": cfg.kind, "parameters": params,
                "layers": cfg.n_layer, "extra_blocks": cfg.extra_blocks if cfg.kind == "nar" else 0,
                "dim": cfg.dim, "vocab": cfg.vocab_size,
                "heads": f"{cfg.n_head} (inferred: dim / 64)" if self.head_count_inferred else cfg.n_head,
                "grid": "x".join(map(str, cfg.grid_shape if cfg.is_video else cfg.grid_shape[1:])),
                "classes": len(self.class_names)}


Loaded = Union[LoadedModel, VQModel]   # a tokenizer carries its label as `.source`


def fit_problem(model: ModelConfig, vq: VQConfig, tokenizer: str = "the tokenizer") -> Optional[str]:
    """Why a transformer cannot run with a tokenizer (its vocabulary is the codebook, its grid the
    tokenizer's), or None when it fits."""
    if model.vocab_size != vq.codebook_size:
        return (f"the {model.kind} model's vocabulary ({model.vocab_size}) does not match {tokenizer}'s "
                f"codebook ({vq.codebook_size})")
    if model.grid_size != vq.grid_size:
        return (f"the {model.kind} model's {model.grid_size}x{model.grid_size} grid does not match "
                f"{tokenizer}'s {vq.grid_size}x{vq.grid_size}")
    return None


def check_fits(model: ModelConfig, vq: VQConfig, tokenizer: str = "the tokenizer") -> None:
    problem = fit_problem(model, vq, tokenizer)
    if problem:
        raise CheckpointError(problem)


# -- building ------------------------------------------------------------------------------------
def _checked_build(cls, config, ckpt: Checkpoint, name: str):
    """cls(config) with the checkpoint's weights: shapes checked on the meta device first."""
    with torch.device("meta"):
        skeleton = cls(config)
    check_state_matches(skeleton, ckpt.state_dict, name)
    del skeleton
    model = cls(config)
    model.load_state_dict(ckpt.state_dict, strict=True)
    return model.eval()


def build_transformer(ckpt: Checkpoint) -> Transformer:
    """A Transformer in eval mode (fp32, CPU) with the checkpoint's weights, strictly checked."""
    if ckpt.kind not in ("nar", "raster"):
        raise CheckpointError(f"{Path(ckpt.source).name} is a {ckpt.kind} checkpoint, not a NAR or raster model")
    name = Path(ckpt.source).name or "checkpoint"
    check_config_bounds(ckpt.kind, ckpt.config, name)
    try:
        config = ModelConfig.from_dict(ckpt.config)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{name} has an invalid model config ({str(e)[:300]})") from e
    return _checked_build(Transformer, config, ckpt, name)


def build_vq(ckpt: Checkpoint) -> VQModel:
    """A VQModel in eval mode (fp32, CPU) with the checkpoint's weights, strictly checked."""
    if ckpt.kind != "vq":
        raise CheckpointError(f"{Path(ckpt.source).name} is a {ckpt.kind} checkpoint, not a VQ tokenizer")
    name = Path(ckpt.source).name or "checkpoint"
    check_config_bounds("vq", ckpt.config, name)
    try:
        config = VQConfig.from_dict(ckpt.config)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{name} has an invalid tokenizer config ({str(e)[:300]})") from e
    return _checked_build(VQModel, config, ckpt, name)


def from_checkpoint(ckpt: Checkpoint, *, label: Optional[str] = None, expect: Optional[str] = None,
                    device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None,
                    fits: Optional[VQConfig] = None) -> Loaded:
    """A read checkpoint -> a LoadedModel (transformer) or a VQModel (tokenizer, fp32) on `device`.

    expect: the kind wanted ("nar", "raster", "vq"); dtype: the transformer's (default: pick_dtype);
    fits: a tokenizer config the transformer must fit (CheckpointError otherwise)."""
    label = label or Path(ckpt.source).name or "checkpoint"
    if expect in ("nar", "raster") and ckpt.kind != expect:
        raise CheckpointError(f"{Path(ckpt.source).name or label} is a {ckpt.kind} checkpoint; a {expect} model "
                              f"was expected")
    device = device or pick_device()
    if ckpt.kind == "vq" or expect == "vq":     # build_vq names a file of another kind
        vq = build_vq(ckpt).to(device)
        vq.source = label
        return vq
    if ckpt.kind not in ("nar", "raster"):
        raise CheckpointError(f"{label} is a {ckpt.kind} checkpoint, not a NAR, raster or VQ tokenizer checkpoint")
    model = build_transformer(ckpt)
    if fits is not None:
        check_fits(model.config, fits)
    model = model.to(device=device, dtype=dtype or pick_dtype(device))
    return LoadedModel(model, class_names_of(ckpt), label, Path(ckpt.source) if ckpt.source else None,
                       head_count_inferred=ckpt.head_count_inferred)


def load(source: str | os.PathLike, filename: Optional[str] = None, *, expect: Optional[str] = None,
         device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None, grid_size: int = 16,
         fits: Optional[VQConfig] = None, arch=None) -> Loaded:
    """Load a transformer or a tokenizer from a local file or the Hub (see `resolve`).
    grid_size: the token grid of an official checkpoint, whose files do not store it; arch: its
    architecture (a size name or config fields, nar/arch.py), where the file cannot tell."""
    path = resolve(source, filename)
    label = str(source if filename is None else f"{source}/{filename}")
    return from_checkpoint(read_checkpoint(path, grid_size=grid_size, arch=arch), label=label, expect=expect,
                           device=device, dtype=dtype, fits=fits)


def load_folder(source: str | os.PathLike = BUNDLED_DIR, device: Optional[torch.device] = None,
                dtype: Optional[torch.dtype] = None, prefix: str = "") -> tuple[VQModel, LoadedModel, LoadedModel]:
    """(tokenizer, NAR model, raster model) of a folder, or of a Hub repo ("owner/name" or
    "hf://owner/name"), holding vq.safetensors, <prefix>nar.safetensors and
    <prefix>raster.safetensors (the text models: prefix "t2i_")."""
    names = {kind: f"{kind if kind == 'vq' else prefix + kind}.safetensors" for kind in KINDS}
    refs = {kind: folder_file(source, name) for kind, name in names.items()}
    local = [path for path, filename in refs.values() if filename is None]
    missing = [str(path) for path in local if not Path(path).is_file()]
    if missing:
        raise FileNotFoundError(f"checkpoints missing: {', '.join(missing)}")
    device = device or pick_device()
    vq = load(*refs["vq"], expect="vq", device=device)
    nar, raster = (load(*refs[kind], expect=kind, device=device, dtype=dtype, fits=vq.cfg) for kind in ("nar", "raster"))
    return vq, nar, raster


def folder_file(source: str | os.PathLike, name: str) -> tuple[str | Path, Optional[str]]:
    """(source, filename) to `load` or `resolve` file `name` of a folder or a Hub repo."""
    text = str(source)
    local = Path(text).expanduser()
    if local.is_dir() or not _looks_like_repo(text):
        return local / name, None
    return (text[len(HUB_PREFIX):] if text.startswith(HUB_PREFIX) else text), name


def _looks_like_repo(text: str) -> bool:
    return text.startswith(HUB_PREFIX) or re.fullmatch(f"{_REPO_PART}/{_REPO_PART}", text) is not None


# -- Hugging Face Hub -----------------------------------------------------------------------------
_REPO_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"


def resolve(source: str | os.PathLike, filename: Optional[str] = None, *,
            cache_dir: Optional[str] = None, offline: Optional[bool] = None,
            revision: Optional[str] = None) -> Path:
    """A local file path for `source`: a local path, or a Hub repo id (with `filename`, or as
    "hf://owner/repo/path/in/repo"). Hub files come from huggingface_hub's cache; with
    offline=True (or HF_HUB_OFFLINE=1) only the cache is used."""
    text = str(source)
    if filename is None and not text.startswith(HUB_PREFIX):
        try:
            path = Path(check_path_length(text)).expanduser()
        except NameTooLong as e:
            raise CheckpointError(str(e)) from None
        if not path.is_file():
            raise CheckpointError(f"no checkpoint file at {shown(str(path))}")
        return path
    if text.startswith(HUB_PREFIX):
        parts = text[len(HUB_PREFIX):].split("/")
        if len(parts) < 3:
            raise CheckpointError(f"{text!r}: write hf://owner/repo/filename")
        text, filename = "/".join(parts[:2]), "/".join(parts[2:])
    repo_id = validate_repo_id(text)
    filename = validate_repo_filename(filename)
    try:
        return hub_file(repo_id, filename, cache_dir=cache_dir, revision=revision, offline=offline)
    except HubError as e:
        raise CheckpointError(str(e)) from e


def validate_repo_id(repo_id: str) -> str:
    if not isinstance(repo_id, str) or not re.fullmatch(f"{_REPO_PART}/{_REPO_PART}", repo_id or "") \
            or ".." in repo_id:
        raise CheckpointError(f"{quoted(repo_id)} is not a Hub repo id (owner/name)")
    return repo_id


# One segment of a path inside a Hub repository: letters, digits and . _ - + = @ , ( ) [ ] and
# spaces, not starting with a dot or space (which also rules out ".", ".." and "~").
_HUB_SEGMENT = re.compile(r"[A-Za-z0-9_\-+=@,()\[\]][A-Za-z0-9._\-+=@,()\[\] ]{0,199}")
MAX_HUB_FILENAME = 200


def validate_repo_filename(filename: Optional[str]) -> str:
    """A file name inside a Hub repository, checked before any network call: a relative path
    with no '~', '..', backslash, ':' or other characters the Hub does not use, at most
    MAX_HUB_FILENAME characters."""
    why = None
    if not isinstance(filename, str) or not filename:
        why = "give a file name"
    elif len(filename) > MAX_HUB_FILENAME:
        why = f"longer than {MAX_HUB_FILENAME} characters"
    elif filename.startswith(("/", "~")) or re.match(r"^[A-Za-z]:", filename):
        why = "an absolute or home path; give a path inside the repository"
    elif "\\" in filename:
        why = "backslashes are not allowed; use /"
    elif any(p in (".", "..") for p in filename.split("/")):
        why = "'.' and '..' are not allowed"
    elif not all(_HUB_SEGMENT.fullmatch(p) for p in filename.split("/")):
        why = ("only letters, digits, spaces and . _ - + = @ , ( ) [ ] are allowed, in names that do not "
               "start with a dot, space or '~', separated by single /")
    if why:
        raise CheckpointError(f"{quoted(filename)} is not a file name inside a Hub repository ({why})")
    return filename
