"""What a public NAR Studio server adds to Gradio: numeric inputs that answer a wrong value with a
clear message, file paths length-checked before Gradio touches them, a cap on request bodies,
password protection and the bind address.

Gradio checks a slider's range on the server, but a value of the wrong type ("abc", NaN, a list)
sent to the API fails inside Gradio's own preprocessing with no message for the caller;
`Slider` and `Number` here check the type first. Requests other than file uploads carry a few
hundred bytes of JSON; `BodyLimit` refuses bodies over a limit before they are read into memory
(file uploads have Gradio's own `max_file_size`).
"""
from __future__ import annotations

import ipaddress
from abc import ABCMeta
import json
import math
import os
from typing import Any, Optional

import gradio as gr

from .names import NameTooLong, check_path_length

MAX_BODY_BYTES = 2 * 2 ** 20        # any request but a file upload
AUTH_ENV = "NAR_STUDIO_AUTH"        # user:password[,user:password...]; keeps passwords out of `ps`


# -- numeric inputs ----------------------------------------------------------------------------
def checked_number(payload: Any, label: Optional[str], allow_none: bool = False):
    """The payload as an int or float, or gr.Error naming the input."""
    name = label or "a number input"
    if payload is None:
        if allow_none:
            return None
        raise gr.Error(f"{name}: a number is required", title="Cannot do that", print_exception=False)
    value = payload
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            value = payload
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        shown = repr(payload)
        shown = shown if len(shown) <= 40 else shown[:40] + "…"
        raise gr.Error(f"{name} must be a number, got {shown}", title="Cannot do that", print_exception=False)
    if isinstance(value, float) and not math.isfinite(value):
        raise gr.Error(f"{name} must be a finite number, got {value}", title="Cannot do that",
                       print_exception=False)
    return value


def _checked(base: type, allow_none: bool) -> type:
    """A template of `base` (same front-end component) whose preprocess checks the type first."""
    def preprocess(self, payload):
        return base.preprocess(self, checked_number(payload, self.label, allow_none))
    attrs = {"__module__": __name__, "__qualname__": base.__name__, "is_template": True, "preprocess": preprocess,
             "__doc__": f"gr.{base.__name__} whose API input is checked to be a finite number before its range."}
    # ABCMeta.__new__, not a class statement: Gradio's ComponentMeta would write a type stub of this
    # module (guard.pyi) next to it on every import.
    return ABCMeta.__new__(type(base), base.__name__, (base,), attrs)


Slider = _checked(gr.Slider, allow_none=False)
Number = _checked(gr.Number, allow_none=True)


# -- file paths --------------------------------------------------------------------------------
def _file_paths(value: Any):
    """The "path" of every file payload in an input value (walked without recursion)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("path"), str):
                yield item["path"]
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)


class Blocks(gr.Blocks):
    """gr.Blocks whose events refuse a file path over the file system's limits with "file name too
    long". Gradio stats every file path a client sends while it prepares the inputs, before any
    component's preprocess or handler runs, so an over-long path failed there and the client read
    the OS error ("[Errno 36] File name too long: ..." with the whole path). `validate_inputs` is
    the first thing Gradio runs on a request's inputs."""

    def validate_inputs(self, block_fn, inputs: list[Any]):
        super().validate_inputs(block_fn, inputs)
        for value in inputs:
            for path in _file_paths(value):
                try:
                    check_path_length(path)
                except NameTooLong as e:
                    raise gr.Error(str(e), title="Cannot do that", print_exception=False) from None


# -- request bodies ----------------------------------------------------------------------------
class BodyLimit:
    """ASGI middleware: 413 for a request body over `max_bytes`, except on the paths ending with
    one of `exempt` (file uploads). A declared Content-Length is checked before anything is read
    (the server never delivers more than it declares); a body without one is read up to the limit
    first and then handed on."""

    def __init__(self, app, max_bytes: int = MAX_BODY_BYTES, exempt: tuple[str, ...] = ("/upload",)):
        self.app, self.max_bytes, self.exempt = app, max_bytes, exempt

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path", "").rstrip("/").endswith(self.exempt):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                return await self._refuse(send, 400, "bad Content-Length")
            if declared > self.max_bytes:
                return await self._refuse(send)
            return await self.app(scope, receive, send)
        buffered, size = [], 0
        while True:
            message = await receive()
            buffered.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                return await self._refuse(send)
            if not message.get("more_body", False):
                break

        async def replay():
            return buffered.pop(0) if buffered else await receive()
        return await self.app(scope, replay, send)

    async def _refuse(self, send, status: int = 413, why: str = ""):
        body = json.dumps({"error": why or f"request body over {self.max_bytes:,} bytes (files go through "
                                           f"the upload route)"}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


# -- exposure ----------------------------------------------------------------------------------
def parse_auth(text: Optional[str]) -> list[tuple[str, str]]:
    """"user:password[,user2:password2]" -> [(user, password), ...]; ValueError on a bad entry
    (the message never repeats a password)."""
    pairs = []
    for i, entry in enumerate(e for e in (text or "").split(",") if e.strip()):
        user, sep, password = entry.strip().partition(":")
        if not sep or not user.strip() or not password:
            raise ValueError(f"credential {i + 1} is not user:password")
        pairs.append((user.strip(), password))
    return pairs


def is_loopback(host: Optional[str]) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_host(host: Optional[str]) -> str:
    """--host, else GRADIO_SERVER_NAME, else loopback."""
    return host or os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1"


def exposure_warning(host: str, auth: list) -> Optional[str]:
    if is_loopback(host) or auth:
        return None
    return (f"warning: serving on {host} without --auth: anyone who can reach this port can generate, load "
            f"models and start training. Set {AUTH_ENV}=user:password (or --auth), or put the app behind a "
            f"reverse proxy that authenticates (see README, Exposing the app).")


# -- memory ------------------------------------------------------------------------------------
def tune_allocator(arenas: int = 2, mmap_threshold: int = 128 * 1024) -> bool:
    """Keep a long-running server's memory from creeping up (glibc only; a no-op elsewhere, or
    when MALLOC_ARENA_MAX / MALLOC_MMAP_THRESHOLD_ are set in the environment).

    Every request runs in one of Gradio's worker threads, and glibc gives threads arenas of their
    own (up to 8 per core) whose freed memory is rarely returned; it also raises its mmap threshold
    each time a large buffer is freed, so later frame-sized buffers land in those arenas too. Both
    made the server's RSS grow by about 4 MB per 16 requests without end in the load test; with
    two arenas and a fixed threshold it stays flat (see README, Reliability)."""
    import ctypes
    import ctypes.util
    if "MALLOC_ARENA_MAX" in os.environ or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8
    return bool(mallopt(M_ARENA_MAX, arenas)) and bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold))
