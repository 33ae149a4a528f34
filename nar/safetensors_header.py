"""A safetensors header read and bounded by us before anything parses it.

The header is JSON written by whoever made the file: a few bytes can ask a parser for deep
recursion (JSON nested 200,000 deep raises RecursionError in `json.loads`) or for seconds of work
(hundreds of thousands of tensor entries). So the 8-byte length and the header are read here,
their size, nesting depth, entry count and metadata sizes checked (depth and entries with a numpy
scan that neither parses nor recurses), and only then is anything parsed; the tensors are left to safetensors.

The limits are far above the largest official models: a NAR GPT-XXL state dict (48 layers and
NAR's extra block, dim 1536) has 349 tensors, a LlamaGen GPT-XXL 340 and the VQ-16 tokenizer 344
(counted from the models built on the meta device); our metadata (config, class names, training
state) is a few KB nested at most 3 deep.
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np


class HeaderRefused(ValueError):
    """The header is over a limit or malformed; the message names which."""


@dataclass(frozen=True)
class HeaderLimits:
    max_header_bytes: int = 8 * 2 ** 20
    max_tensors: int = 10_000
    max_metadata_value_bytes: int = 2 ** 20
    max_depth: int = 64          # JSON nesting, in the header and in every metadata value


def _outside_strings(raw: bytes) -> np.ndarray:
    """The bytes of a JSON text that are not inside strings, found with numpy (no Python loop
    over characters, no recursion): a quote opens or closes a string unless an odd number of
    backslashes precedes it."""
    chars = np.frombuffer(raw, np.uint8)
    quote = chars == ord('"')
    if b"\\" in raw:
        idx = np.arange(len(chars), dtype=np.int32)
        last_other = np.maximum.accumulate(np.where(chars == ord("\\"), -1, idx))
        backslashes = np.zeros(len(chars), np.int32)
        backslashes[1:] = idx[:-1] - last_other[:-1]     # how many backslashes run up to each byte
        quote &= backslashes % 2 == 0
    return chars[np.cumsum(quote, dtype=np.int32) % 2 == 0]


def json_shape(text: bytes | str) -> tuple[int, int]:
    """(how deep brackets nest, how many keys the top-level object has) of a JSON text, without
    parsing it."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    structure = _outside_strings(raw)
    if not len(structure):
        return 0, 0
    opens = (structure == ord("[")) | (structure == ord("{"))
    closes = (structure == ord("]")) | (structure == ord("}"))
    depth = np.cumsum(opens.astype(np.int32) - closes, dtype=np.int32)
    top_keys = int(np.count_nonzero((structure == ord(":")) & (depth == 1)))
    return int(depth.max(initial=0)), top_keys


def json_depth(text: bytes | str) -> int:
    return json_shape(text)[0]


def parse_json_bounded(text: bytes | str, max_depth: int, what: str, depth: Optional[int] = None) -> object:
    """json.loads after the nesting check: no input can reach the recursion limit."""
    depth = json_depth(text) if depth is None else depth
    if depth > max_depth:
        raise HeaderRefused(f"{what} is JSON nested {depth:,} deep; the limit is {max_depth}")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HeaderRefused(f"{what} is not valid JSON ({str(e)[:120]})") from None
    except RecursionError:   # unreachable after the depth check; kept so no file can raise it
        raise HeaderRefused(f"{what} is nested too deeply to read") from None


def read_header(path: str | os.PathLike, limits: HeaderLimits = HeaderLimits()) -> dict[str, str]:
    """The metadata of a safetensors file, every bound checked; HeaderRefused names the one that
    failed. The metadata values are checked too (their size and nesting), since NAR Studio parses
    its config and extra fields as JSON."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise HeaderRefused(f"the file is {size} bytes, too short for a safetensors header")
        (length,) = struct.unpack("<Q", head)
        if length > limits.max_header_bytes:
            raise HeaderRefused(f"the header is {length:,} bytes; the limit is "
                                f"{limits.max_header_bytes // 2 ** 20} MiB")
        if length > size - 8:
            raise HeaderRefused(f"the header claims {length:,} bytes but the file has only {size - 8:,} after it")
        raw = f.read(length)
    depth, keys = json_shape(raw)
    if keys - 1 > limits.max_tensors:   # counted before parsing: parsing 100,000 entries takes a second
        tensors = keys - (b'"__metadata__"' in raw)
        raise HeaderRefused(f"the header lists {tensors:,} tensors; the limit is {limits.max_tensors:,}")
    header = parse_json_bounded(raw, limits.max_depth, "the header", depth)
    if not isinstance(header, dict):
        raise HeaderRefused("the header is not a JSON object")
    tensors = len(header) - ("__metadata__" in header)
    if tensors > limits.max_tensors:
        raise HeaderRefused(f"the header lists {tensors:,} tensors; the limit is {limits.max_tensors:,}")
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise HeaderRefused("the header's metadata is not a map of strings")
    for key, value in metadata.items():
        if len(value.encode("utf-8", "surrogatepass")) > limits.max_metadata_value_bytes:
            raise HeaderRefused(f"metadata value {key[:60]!r} is {len(value):,} characters; the limit is "
                                f"{limits.max_metadata_value_bytes // 2 ** 20} MiB")
        depth = json_depth(value)
        if depth > limits.max_depth:
            raise HeaderRefused(f"metadata value {key[:60]!r} is JSON nested {depth:,} deep; the limit is "
                                f"{limits.max_depth}")
    return metadata
