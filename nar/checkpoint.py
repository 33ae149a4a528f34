"""Checkpoint files: our safetensors format, the official .pt layouts, and the bounds on their configs.
(Building models from them, and Hub resolution, are nar/loading.py.)

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

from .names import NameTooLong, check_path_length, quoted, shown
from .safetensors_header import HeaderLimits, HeaderRefused, parse_json_bounded, read_header

FORMAT_KEY = "nar_studio_kind"
CHECKPOINT_KINDS = ("nar", "raster", "vq", "classifier", "video_classifier", "text_encoder", "image_tower")


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
    head_count_inferred: bool = False   # an official file whose n_head nobody stated (dim / 64 assumed)


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


def read_safetensors(path: str | os.PathLike, limits: HeaderLimits = HeaderLimits()) -> Checkpoint:
    """Our checkpoint format; the header is bounded (size, entries, metadata, nesting) before
    anything parses it, so a hostile header is refused at once and can never recurse."""
    path = Path(path)
    try:
        metadata = read_header(path, limits)
    except HeaderRefused as e:
        raise CheckpointError(f"{path.name} is not a readable safetensors file ({e})") from None
    except OSError as e:
        raise CheckpointError(f"{path.name} is not a readable safetensors file ({e.strerror or e})") from None
    kind = metadata.get(FORMAT_KEY)
    if kind not in CHECKPOINT_KINDS:
        raise CheckpointError(
            f"{path.name} is a safetensors file but not a NAR Studio checkpoint "
            f"(metadata key {FORMAT_KEY!r} is {quoted(kind)})")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path.name} is not a readable safetensors file ({e})") from e
    try:   # depth and size already checked by read_header
        config = parse_json_bounded(metadata.get("config", "{}"), limits.max_depth, "the config")
        extra = {k[len("extra."):]: parse_json_bounded(v, limits.max_depth, k)
                 for k, v in metadata.items() if k.startswith("extra.")}
    except HeaderRefused as e:
        raise CheckpointError(f"{path.name} has corrupt metadata ({e})") from e
    return Checkpoint(kind=kind, state_dict=tensors, config=config, extra=extra, source=str(path))


def _checked_length(path: str | os.PathLike) -> str:
    try:
        return check_path_length(path)
    except NameTooLong as e:
        raise CheckpointError(str(e)) from None


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
    except RecursionError:   # a pickle nested deeper than the interpreter's stack
        raise CheckpointError(f"{path.name} is not a readable torch checkpoint (it is nested too deeply "
                              f"to read)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(f"{path.name} is not a readable torch checkpoint ({str(e)[:300]})") from e


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


TEXT_KEY = "cls_embedding.cap_proj.fc1.weight"   # only text-to-image models have it


def infer_transformer_config(kind: str, sd: Mapping[str, torch.Tensor],
                             grid_size: int = 16, n_head: Optional[int] = None) -> dict[str, Any]:
    """Config of an official GPT checkpoint from its tensor shapes. Head count is not in the
    weights: `n_head` when stated, else dim / 64 (the official sizes all use 64-dim heads)."""
    vocab, dim = sd["tok_embeddings.weight"].shape
    n_blocks = _count_indexed(sd, "layers.")
    n_layer = n_blocks - 1 if kind == "nar" else n_blocks
    n_head = n_head or max(1, dim // 64)
    q_and_kv = sd["layers.0.attention.wqkv.weight"].shape[0]
    n_kv_head = (q_and_kv - dim) // 2 // (dim // n_head)
    config = dict(kind=kind, dim=dim, n_layer=n_layer, n_head=n_head,
                  n_kv_head=None if n_kv_head == n_head else n_kv_head, vocab_size=vocab, grid_size=grid_size)
    if TEXT_KEY in sd:   # a t2i model: LlamaGen's caption embedder, its prefix length from the null caption
        prefix = sd["cls_embedding.uncond_embedding"].shape[0] if "cls_embedding.uncond_embedding" in sd else 120
        return dict(config, condition="text", num_classes=1, cls_token_num=prefix,
                    caption_dim=sd[TEXT_KEY].shape[1])
    return dict(config, num_classes=sd["cls_embedding.embedding_table.weight"].shape[0] - 1)


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


def read_official(path: str | os.PathLike, grid_size: int = 16, arch=None) -> Checkpoint:
    """An official file; `arch` (a size name or config fields, nar/arch.py) or `<file>.json` states
    what the shapes cannot tell. Official 1000-class models are ImageNet-1k: they get its names."""
    from .arch import ArchitectureError, check_against_shapes, sidecar_architecture, stated_architecture
    from .classes import IMAGENET_CLASSES, imagenet_labels
    path = Path(path)
    sd = unwrap_state_dict(torch_load_weights(path), path.name)
    kind = infer_kind(sd)
    try:
        stated = stated_architecture(arch) if arch is not None else sidecar_architecture(path)
        grid_size = stated.get("grid_size", grid_size)
        if kind == "vq":
            config = infer_vq_config(sd, grid_size)
        else:
            config = infer_transformer_config(kind, sd, grid_size, n_head=stated.get("n_head"))
            check_against_shapes(config, stated, path.name)
    except KeyError as e:
        raise CheckpointError(f"{path.name} looks like a {kind} checkpoint but lacks {e}") from e
    except ArchitectureError as e:
        raise CheckpointError(str(e)) from e
    imagenet = kind != "vq" and config["num_classes"] == IMAGENET_CLASSES
    return Checkpoint(kind=kind, state_dict=sd, config=config, source=str(path),
                      extra={"class_names": imagenet_labels()} if imagenet else {},
                      head_count_inferred=kind != "vq" and "n_head" not in stated)


def read_checkpoint(path: str | os.PathLike, grid_size: int = 16, arch=None) -> Checkpoint:
    """Our safetensors files, or official .pt/.pth/.bin files (read weights-only; `arch`: see
    read_official)."""
    path = Path(_checked_length(path))
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {shown(str(path))}")
    with open(path, "rb") as f:
        head = f.read(8)
    if path.suffix == ".safetensors" or (len(head) == 8 and not head.startswith(b"PK")
                                         and not head.startswith(b"\x80")):
        return read_safetensors(path)
    return read_official(path, grid_size, arch)


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
                "extra_blocks": (0, 16), "frames": (1, 64), "multiple_of": (1, 1 << 16), "ffn_dim_multiplier": (0.01, 64.0),
                "cls_token_num": (1, 1024), "caption_dim": (1, 16384)}
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


# -- metadata of our checkpoints ------------------------------------------------------------
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


# -- small modules stored in half precision (the text encoder, its image tower) ---------------
def save_module(path: str | os.PathLike, kind: str, module: torch.nn.Module,
                extra: Optional[Mapping[str, Any]] = None, dtype: torch.dtype = torch.float16) -> Path:
    """A module with a `config.to_dict()`, its floating tensors stored as `dtype`."""
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in module.state_dict().items()}
    return save_checkpoint(path, kind, state, module.config.to_dict(), extra)


def load_module(path: str | os.PathLike, kind: str, model_cls, config_cls, what: str):
    """(module in eval mode, float32, its checkpoint) of a `save_module` file; a file of another
    kind, a config out of range (`config_cls.from_dict` raises) or mismatched tensors give a
    CheckpointError that says so."""
    ckpt = read_checkpoint(path)
    name = Path(path).name
    if ckpt.kind != kind:
        raise CheckpointError(f"{name} is a {ckpt.kind} checkpoint, not {what}")
    try:
        config = config_cls.from_dict(ckpt.config)
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{name} has an unusable config for {what} ({e})") from None
    module = model_cls(config)
    load_state_strict(module, {k: v.float() if v.is_floating_point() else v for k, v in ckpt.state_dict.items()},
                      name)
    return module.eval(), ckpt
