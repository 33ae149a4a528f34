"""The architecture of an official checkpoint, as a person states it.

An official NAR / LlamaGen `.pt` holds tensors only. Their shapes give the width, depth,
vocabulary and class count, but not the head count nor the token grid. Both can be stated: a
named size of nar/config.py ("GPT-L"), a mapping of config fields, or a JSON file next to the
checkpoint (`c2i_L_256.pt.json` holding {"arch": "GPT-L"} or the fields themselves). Whatever is
stated is checked against the shapes; a head count that nobody stated is inferred as dim / 64
(right for every published size) and the load says so.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from .config import MODEL_SIZES

STATABLE = ("n_layer", "dim", "n_head", "n_kv_head", "vocab_size", "num_classes", "grid_size")
SIDECAR_MAX_BYTES = 64 * 1024
Arch = Union[str, Mapping[str, Any]]


class ArchitectureError(ValueError):
    """A stated architecture that is malformed or contradicts the checkpoint's tensors."""


def stated_architecture(arch: Optional[Arch]) -> dict[str, int]:
    """{} for None; a size name or a mapping of config fields ("arch" may name the size) -> fields."""
    if arch is None:
        return {}
    if isinstance(arch, str):
        arch = {"arch": arch}
    if not isinstance(arch, Mapping):
        raise ArchitectureError(f"an architecture is a size name or an object of fields, not {type(arch).__name__}")
    fields: dict[str, Any] = {}
    size = arch.get("arch")
    if size is not None:
        if size not in MODEL_SIZES:
            raise ArchitectureError(f"unknown architecture {str(size)[:40]!r}; choose from {', '.join(MODEL_SIZES)}")
        fields.update(zip(("n_layer", "dim", "n_head"), MODEL_SIZES[size]))
    unknown = sorted(set(arch) - set(STATABLE) - {"arch"})
    if unknown:
        raise ArchitectureError(f"unknown architecture field(s) {unknown}; known: arch, {', '.join(STATABLE)}")
    for key in STATABLE:
        if key in arch and arch[key] is not None:
            value = arch[key]
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1 << 20:
                raise ArchitectureError(f"architecture field {key}={str(value)[:40]} is not a positive integer")
            fields[key] = value
    return fields


def sidecar_path(checkpoint: Union[str, Path]) -> Path:
    path = Path(checkpoint)
    return path.with_name(path.name + ".json")


def sidecar_architecture(checkpoint: Union[str, Path]) -> dict[str, int]:
    """The architecture stated in `<checkpoint>.json`, or {} when there is no such file."""
    side = sidecar_path(checkpoint)
    if not side.is_file():
        return {}
    if side.stat().st_size > SIDECAR_MAX_BYTES:
        raise ArchitectureError(f"{side.name} is larger than {SIDECAR_MAX_BYTES // 1024} KB; it should hold a few fields")
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArchitectureError(f"{side.name} is not readable JSON ({e})") from e
    try:
        return stated_architecture(data)
    except ArchitectureError as e:
        raise ArchitectureError(f"{side.name}: {e}") from e


def check_against_shapes(config: Mapping[str, Any], stated: Mapping[str, int], name: str) -> None:
    """ArchitectureError naming each stated field the tensors contradict (the head count and the
    grid are not in the tensors, so they are taken as stated)."""
    wrong = [f"{key} is {config[key]} in the file but {value} as stated"
             for key, value in stated.items()
             if key in ("n_layer", "dim", "vocab_size", "num_classes") and config.get(key) != value]
    if "n_head" in stated and config["dim"] % stated["n_head"]:
        wrong.append(f"dim {config['dim']} is not divisible by the stated n_head {stated['n_head']}")
    if wrong:
        raise ArchitectureError(f"{name} does not have the stated architecture: " + "; ".join(wrong))


def head_count_note(n_head: int, dim: int) -> str:
    return (f"head count inferred: {n_head} heads of 64 (dim {dim} / 64), as in every published size; "
            f"state it with a preset, --arch or a .json next to the file if this checkpoint differs")
