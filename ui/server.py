"""What a public NAR Studio server adds to Gradio: a cap on request bodies, password protection,
the bind address, and an allocator that keeps a long-running server's memory flat.

Requests other than file uploads carry a few hundred bytes of JSON; `BodyLimit` refuses bodies
over a limit before they are read into memory (file uploads have Gradio's own `max_file_size`).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import ipaddress
import json
import os
from typing import Optional

MAX_BODY_BYTES = 2 * 2 ** 20        # any request but a file upload
AUTH_ENV = "NAR_STUDIO_AUTH"        # user:password[,user:password...]; keeps passwords out of `ps`


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
    if "MALLOC_ARENA_MAX" in os.environ or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8
    return bool(mallopt(M_ARENA_MAX, arenas)) and bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold))
