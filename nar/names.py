"""Names and paths that come from clients: shown cut short, and length-checked before the file
system sees them (so a client reads "file name too long", never an OS error text)."""
from __future__ import annotations

import os
from pathlib import PurePath

MAX_NAME_BYTES = 255      # one path component (NAME_MAX on Linux and macOS)
MAX_PATH_BYTES = 4096     # a whole path (PATH_MAX on Linux)


class NameTooLong(ValueError):
    """A file name or path over the limits, with a message that shows it cut short."""


def quoted(value, limit: int = 60) -> str:
    """repr(value), cut to about `limit` characters with the full length stated."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(str(value)):,} characters)"


def shown(name: str, limit: int = 120) -> str:
    """A name for a message: as it is, or its start and end with the full length stated."""
    name = str(name)
    if len(name) <= limit:
        return name
    keep = max(8, limit // 2 - 10)
    return f"{name[:keep]}…{name[-keep:]} ({len(name):,} characters)"


def _byte_length(text: str) -> int:
    return len(text.encode("utf-8", "surrogateescape"))


def check_path_length(path: str | os.PathLike) -> str:
    """The path as a string, or NameTooLong: each component at most MAX_NAME_BYTES bytes and the
    whole at most MAX_PATH_BYTES, checked without touching the file system."""
    text = os.fspath(path)
    text = text.decode("utf-8", "surrogateescape") if isinstance(text, bytes) else text
    if _byte_length(text) > MAX_PATH_BYTES:
        raise NameTooLong(f"file name too long: {shown(text)} (a path may have at most {MAX_PATH_BYTES:,} bytes)")
    longest = max(PurePath(text).parts or ("",), key=_byte_length)
    if _byte_length(longest) > MAX_NAME_BYTES:
        raise NameTooLong(f"file name too long: {shown(longest)} (a name may have at most {MAX_NAME_BYTES} bytes)")
    return text
