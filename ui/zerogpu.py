"""Hugging Face ZeroGPU: the decoding handlers run under `spaces.GPU` when the package is there."""
from __future__ import annotations

from typing import Callable, Optional


def gpu(fn: Optional[Callable] = None, *, duration: Optional[int] = None):
    """`spaces.GPU` on Hugging Face ZeroGPU (when the `spaces` package is importable), a no-op
    decorator elsewhere. Use as @gpu or @gpu(duration=120)."""
    try:
        import spaces  # type: ignore  # looked up at decoration time: only a Space has it
    except ImportError:
        spaces = None
    if spaces is None or not hasattr(spaces, "GPU"):
        return fn if fn is not None else (lambda f: f)
    decorator = spaces.GPU(duration=duration) if duration else spaces.GPU
    return decorator(fn) if fn is not None else decorator
