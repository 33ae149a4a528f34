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
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from safetensors import safe_open

FORMAT_KEY = "nar_studio_kind"
CHECKPOINT_KINDS = ("nar", "raster", "vq", "classifier", "video_classifier")


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
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide the file from other readers
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


def remove_stale_temp_files(directory: str | os.PathLike) -> list[Path]:
    """Delete temporary files that atomic_write left behind when its process was killed."""
    removed = []
    for tmp in Path(directory).glob(".*.tmp"):
        try:
            tmp.unlink()
            removed.append(tmp)
        except FileNotFoundError:
            pass
    return removed


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
    except (SafetensorError, OSError, ValueError) as e:
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


# -- official torch layouts -----------------------------------------------------------------
def torch_load_weights(path: str | os.PathLike) -> Any:
    """torch.load that only accepts tensors and plain containers, never code."""
    path = Path(path)
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refused {path.name}: it contains pickled objects other than tensors and plain "
            f"containers, which could run code when loaded. Only weights are accepted "
            f"(details: {str(e).splitlines()[0]})") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(f"{path.name} is not a readable torch checkpoint ({e})") from e


def unwrap_state_dict(obj: Any, name: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The tensors of an official file: under "model", "state_dict" or "module", or the dict
    itself; with DDP's "module." and torch.compile's "_orig_mod." prefixes removed."""
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "module"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{name} holds no state dict under 'model', 'state_dict' or 'module'")
    out = {}
    for key, value in obj.items():
        for prefix in ("module.", "_orig_mod."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def infer_kind(state_dict: Mapping[str, torch.Tensor]) -> str:
    if "quantize.embedding.weight" in state_dict:
        return "vq"
    if "tok_embeddings.weight" in state_dict:
        return "nar" if "medusa_output.weight" in state_dict else "raster"
    raise CheckpointError("not a NAR, LlamaGen GPT or LlamaGen VQ state dict "
                          "(no tok_embeddings.weight or quantize.embedding.weight)")


def _count_indexed(state_dict: Mapping[str, Any], prefix: str) -> int:
    found = {int(k[len(prefix):].split(".")[0]) for k in state_dict if k.startswith(prefix)}
    return max(found) + 1 if found else 0


def infer_transformer_config(kind: str, sd: Mapping[str, torch.Tensor],
                             grid_size: int = 16) -> dict[str, Any]:
    """Config of an official GPT checkpoint from its tensor shapes. Head count is not in the
    weights; the official sizes all use 64-dim heads."""
    vocab, dim = sd["tok_embeddings.weight"].shape
    n_blocks = _count_indexed(sd, "layers.")
    n_layer = n_blocks - 1 if kind == "nar" else n_blocks
    n_head = max(1, dim // 64)
    q_and_kv = sd["layers.0.attention.wqkv.weight"].shape[0]
    n_kv_head = (q_and_kv - dim) // 2 // (dim // n_head)
    return dict(kind=kind, dim=dim, n_layer=n_layer, n_head=n_head,
                n_kv_head=None if n_kv_head == n_head else n_kv_head,
                vocab_size=vocab, grid_size=grid_size,
                num_classes=sd["cls_embedding.embedding_table.weight"].shape[0] - 1)


def infer_vq_config(sd: Mapping[str, torch.Tensor], grid_size: int = 16) -> dict[str, Any]:
    """Config of a LlamaGen VQ checkpoint from its tensor shapes; the image size is not in the
    weights, so it is the token grid (grid_size) times the downsampling the shapes imply."""
    base = sd["encoder.conv_in.weight"].shape[0]
    levels = _count_indexed(sd, "encoder.conv_blocks.")
    ch_mult = [sd[f"encoder.conv_blocks.{i}.res.0.conv2.weight"].shape[0] // base for i in range(levels)]
    dec_levels = _count_indexed(sd, "decoder.conv_blocks.")
    dec_mult = [sd[f"decoder.conv_blocks.{i}.res.0.conv2.weight"].shape[0] // base
                for i in range(dec_levels)][::-1]  # the decoder stores its levels top-down
    size, embed_dim = sd["quantize.embedding.weight"].shape
    return dict(codebook_size=size, codebook_embed_dim=embed_dim, encoder_ch_mult=ch_mult,
                decoder_ch_mult=dec_mult, z_channels=sd["encoder.conv_out.weight"].shape[0],
                base_channels=base, num_res_blocks=_count_indexed(sd, "encoder.conv_blocks.0.res."),
                image_size=grid_size * 2 ** (levels - 1))


def read_official(path: str | os.PathLike, grid_size: int = 16) -> Checkpoint:
    path = Path(path)
    sd = unwrap_state_dict(torch_load_weights(path), path.name)
    kind = infer_kind(sd)
    try:
        if kind == "vq":
            config = infer_vq_config(sd, grid_size)
        else:
            config = infer_transformer_config(kind, sd, grid_size)
    except KeyError as e:
        raise CheckpointError(f"{path.name} looks like a {kind} checkpoint but lacks {e}") from e
    return Checkpoint(kind=kind, state_dict=sd, config=config, source=str(path))


def read_checkpoint(path: str | os.PathLike, grid_size: int = 16) -> Checkpoint:
    """Our safetensors files, or official .pt/.pth/.bin files (read weights-only)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    with open(path, "rb") as f:
        head = f.read(8)
    if path.suffix == ".safetensors" or (len(head) == 8 and not head.startswith(b"PK")
                                         and not head.startswith(b"\x80")):
        return read_safetensors(path)
    return read_official(path, grid_size)


def load_state_strict(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], name: str) -> None:
    """load_state_dict(strict=True) with a message that names what is missing, unexpected or
    mis-shaped."""
    check_state_matches(module, state_dict, name)
    module.load_state_dict(state_dict, strict=True)


def check_state_matches(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], name: str) -> None:
    """CheckpointError naming what is missing, unexpected or mis-shaped; `module` may live on the
    meta device (shapes only)."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    shapes = [f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in state_dict and state_dict[k].shape != v.shape]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
        if items:
            shown = ", ".join(items[:6]) + (f" and {len(items) - 6} more" if len(items) > 6 else "")
            problems.append(f"{len(items)} {label}: {shown}")
    if problems:
        raise CheckpointError(f"{name} does not match its model: " + "; ".join(problems))


# What a checkpoint's config may ask for. A config is only metadata: a tiny hostile file could ask
# for a model of a trillion parameters, so the configs are bounded first, and the model is built
# on the meta device (no memory) and checked against the file's tensors before it is built for real.
# The bounds are far above every official size (GPT-XXL: 48 layers, dim 1536; 16..32 tokens per side).
MODEL_BOUNDS = {"dim": (8, 16384), "n_layer": (1, 256), "n_head": (1, 256), "n_kv_head": (1, 256),
                "num_classes": (1, 1_000_000), "vocab_size": (2, 1 << 20), "grid_size": (1, 64),
                "extra_blocks": (0, 16), "frames": (1, 64), "multiple_of": (1, 1 << 16), "ffn_dim_multiplier": (0.01, 64.0)}
VQ_BOUNDS = {"codebook_size": (2, 1 << 20), "codebook_embed_dim": (1, 4096), "z_channels": (1, 8192),
             "base_channels": (1, 4096), "num_res_blocks": (0, 16), "image_size": (8, 4096)}
MAX_CH_MULT = (8, 64)   # levels, multiplier


def _check_bounds(config: Mapping[str, Any], bounds: Mapping[str, tuple], name: str) -> list[str]:
    problems = []
    for key, (lo, hi) in bounds.items():
        value = config.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
            problems.append(f"{key}={str(value)[:40]} (allowed {lo} to {hi})")
    return problems


def check_config_bounds(kind: str, config: Mapping[str, Any], name: str) -> None:
    """CheckpointError if a checkpoint's config asks for more than any real model of its kind."""
    if not isinstance(config, Mapping):
        raise CheckpointError(f"{name} has an invalid config (not a JSON object)")
    if kind == "vq":
        problems = _check_bounds(config, VQ_BOUNDS, name)
        for key in ("encoder_ch_mult", "decoder_ch_mult"):
            mult = config.get(key)
            if mult is not None and (not isinstance(mult, list) or not 1 <= len(mult) <= MAX_CH_MULT[0]
                                     or not all(isinstance(m, int) and 1 <= m <= MAX_CH_MULT[1] for m in mult)):
                problems.append(f"{key}={str(mult)[:40]} (up to {MAX_CH_MULT[0]} levels of 1 to {MAX_CH_MULT[1]})")
        mult = config.get("encoder_ch_mult")
        size = config.get("image_size")
        if not problems and isinstance(mult, list) and isinstance(size, int) and size // 2 ** (len(mult) - 1) > 64:
            problems.append(f"a {size} px image with {len(mult)} levels is more than 64 tokens per side")
    else:
        problems = _check_bounds(config, MODEL_BOUNDS, name)
    if problems:
        raise CheckpointError(f"{name} asks for a model beyond what NAR Studio loads: " + ", ".join(problems))


def _checked_build(cls, config, ckpt: "Checkpoint", name: str):
    """cls(config) with the checkpoint's weights: shapes checked on the meta device first."""
    with torch.device("meta"):
        skeleton = cls(config)
    check_state_matches(skeleton, ckpt.state_dict, name)
    del skeleton
    model = cls(config)
    model.load_state_dict(ckpt.state_dict, strict=True)
    return model.eval()


# -- Hugging Face Hub -----------------------------------------------------------------------
HUB_PREFIX = "hf://"


def resolve(source: str | os.PathLike, filename: Optional[str] = None, *,
            cache_dir: Optional[str] = None, offline: Optional[bool] = None,
            revision: Optional[str] = None) -> Path:
    """A local file path for `source`: a local path, or a Hub repo id (with `filename`, or as
    "hf://owner/repo/path/in/repo"). Hub files come from huggingface_hub's cache; with
    offline=True (or HF_HUB_OFFLINE=1) only the cache is used."""
    text = str(source)
    if filename is None and not text.startswith(HUB_PREFIX):
        path = Path(text).expanduser()
        if not path.is_file():
            raise CheckpointError(f"no checkpoint file at {path}")
        return path
    if text.startswith(HUB_PREFIX):
        parts = text[len(HUB_PREFIX):].split("/")
        if len(parts) < 3:
            raise CheckpointError(f"{text!r}: write hf://owner/repo/filename")
        text, filename = "/".join(parts[:2]), "/".join(parts[2:])
    repo_id = validate_repo_id(text)
    filename = validate_repo_filename(filename)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError)
    if offline is None:
        offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    try:
        return Path(hf_hub_download(repo_id, filename, cache_dir=cache_dir, revision=revision,
                                    local_files_only=offline))
    except LocalEntryNotFoundError as e:
        why = "offline mode is on" if offline else "the Hub could not be reached"
        raise CheckpointError(f"{repo_id}/{filename} is not in the local Hugging Face cache and "
                              f"{why}; download it once with network access or give a local path") from e
    except RepositoryNotFoundError as e:
        raise CheckpointError(f"Hub repository {repo_id!r} does not exist or is private") from e
    except EntryNotFoundError as e:
        raise CheckpointError(f"{filename!r} is not a file of Hub repository {repo_id!r}") from e
    except (HfHubHTTPError, OSError) as e:
        raise CheckpointError(f"could not fetch {repo_id}/{filename} from the Hub ({e})") from e


_REPO_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"


def validate_repo_id(repo_id: str) -> str:
    import re
    if not isinstance(repo_id, str) or not re.fullmatch(f"{_REPO_PART}/{_REPO_PART}", repo_id or "") \
            or ".." in repo_id:
        raise CheckpointError(f"{_quoted(repo_id)} is not a Hub repo id (owner/name)")
    return repo_id


def validate_repo_filename(filename: Optional[str]) -> str:
    if not isinstance(filename, str) or not filename:
        raise CheckpointError(f"{_quoted(filename)} is not a file name inside a Hub repository")
    parts = filename.split("/")
    if filename.startswith("/") or any(p in ("", ".", "..") for p in parts) \
            or "\\" in filename or ":" in filename or len(filename) > 200:
        raise CheckpointError(f"{_quoted(filename)} is not a file name inside a Hub repository")
    return filename


def _quoted(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(str(value)):,} characters)"


# -- building models from checkpoints -------------------------------------------------------
def build_transformer(ckpt: Checkpoint):
    """A Transformer in eval mode with the checkpoint's weights, strictly checked."""
    from .config import ModelConfig
    from .model import Transformer
    if ckpt.kind not in ("nar", "raster"):
        raise CheckpointError(f"{Path(ckpt.source).name} is a {ckpt.kind} checkpoint, not a NAR or raster model")
    name = Path(ckpt.source).name or "checkpoint"
    check_config_bounds(ckpt.kind, ckpt.config, name)
    try:
        config = ModelConfig.from_dict(ckpt.config)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{name} has an invalid model config ({str(e)[:300]})") from e
    return _checked_build(Transformer, config, ckpt, name)


def class_names_of(ckpt: Checkpoint) -> list[str]:
    """The class names stored with our checkpoints; official ones get "class 0", "class 1", ..."""
    n = int(ckpt.config.get("num_classes", 0))
    names = ckpt.extra.get("class_names")
    if isinstance(names, list) and len(names) == n and all(isinstance(x, str) for x in names):
        return names
    return [f"class {i}" for i in range(n)]


def save_transformer(path: str | os.PathLike, model, class_names: list[str],
                     extra: Optional[Mapping[str, Any]] = None) -> Path:
    return save_checkpoint(path, model.config.kind, model.state_dict(), model.config.to_dict(),
                           {"class_names": list(class_names), **(extra or {})})


def build_vq(ckpt: Checkpoint):
    """A VQModel in eval mode with the checkpoint's weights, strictly checked."""
    from .config import VQConfig
    from .vq import VQModel
    if ckpt.kind != "vq":
        raise CheckpointError(f"{Path(ckpt.source).name} is a {ckpt.kind} checkpoint, not a VQ tokenizer")
    name = Path(ckpt.source).name or "checkpoint"
    check_config_bounds("vq", ckpt.config, name)
    try:
        config = VQConfig.from_dict(ckpt.config)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{name} has an invalid tokenizer config ({str(e)[:300]})") from e
    return _checked_build(VQModel, config, ckpt, name)
