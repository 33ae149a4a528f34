"""Hugging Face ZeroGPU: what runs inside `spaces.GPU` calls, and what must not.

On ZeroGPU the main process has no GPU of its own: each `@spaces.GPU` call runs in a forked worker
(reused only while idle) that holds a GPU for at most the duration the call asks for, and the
arguments and results cross the process boundary pickled. So here:

- `spaces` is imported by app.py before anything touches torch's CUDA state (`import_spaces`);
- the models are moved to `cuda` at start-up in the main process (`startup_device`): ZeroGPU
  moves them into each GPU call;
- model loads, resets and "Use this model" run in the main process, undecorated: a load inside a
  GPU call would change only the worker's copy of the models;
- a decode runs inside one GPU call that asks for time sized by the request (`decode_seconds`:
  batch x steps): the decoder thread at full speed with the view sampling it, then the replay's
  frames drawn without sleeping (the tokenizer's decoder is on the GPU); the frames come back and
  the replay is paced afterwards in the main process, so GPU time is never spent sleeping. Stop
  ends that paced replay. A scrubbed step is drawn in a short call of its own (`BASE_SECONDS`);
- fine-tuning runs on the CPU (a background thread outside any GPU call cannot use the GPU).
"""
from __future__ import annotations

import importlib.util
import os
import sys
from typing import Callable, Iterator, Optional

ZERO_GPU_ENV = "SPACES_ZERO_GPU"      # set by Hugging Face on ZeroGPU hardware
BASE_SECONDS = 10                     # a GPU call's start-up: moving the models in, the first kernels
TOKEN_SECONDS = 0.004                 # per decoded token of one image (both CFG halves), NAR-B class
MAX_SECONDS = 120                     # what one request may ask for
MAX_COLLECTED_FRAMES = 64             # frames a GPU call returns for the replay (the files keep all)


def import_spaces() -> bool:
    """Import `spaces` when it is installed (app.py calls this before importing torch)."""
    if importlib.util.find_spec("spaces") is None:
        return False
    import spaces  # noqa: F401  # type: ignore
    return True


def active() -> bool:
    """Running on ZeroGPU: the `spaces` package is loaded and the Space says it is on ZeroGPU."""
    return "spaces" in sys.modules and os.environ.get(ZERO_GPU_ENV, "").lower() in ("1", "true", "yes")


def startup_device(requested: Optional[str]) -> Optional[str]:
    """The device the models are placed on at start-up: `cuda` on ZeroGPU unless one is named
    (the main process sees no GPU there, so "auto" would pick the CPU)."""
    if active() and requested in (None, "", "auto"):
        return "cuda"
    return requested


def gpu(fn: Optional[Callable] = None, *, duration=None):
    """`spaces.GPU` when the `spaces` package is loaded, a no-op decorator elsewhere. `duration` is
    seconds, or a function of the call's arguments giving them."""
    spaces = sys.modules.get("spaces")
    if spaces is None or not hasattr(spaces, "GPU"):
        return fn if fn is not None else (lambda f: f)
    decorator = spaces.GPU(duration=duration) if duration else spaces.GPU
    return decorator(fn) if fn is not None else decorator


def decode_seconds(num_images: int, steps: int, tokens: int) -> int:
    """GPU seconds to ask for: a fixed start plus the request's work (images x decoded tokens,
    spread over `steps` forward passes), capped. Measure TOKEN_SECONDS per preset on the GPU."""
    work = TOKEN_SECONDS * max(1, num_images) * max(1, tokens) + 0.01 * max(1, steps)
    return int(min(MAX_SECONDS, BASE_SECONDS + work))


def thin(updates: Iterator, num_steps: int, keep: int = MAX_COLLECTED_FRAMES) -> list:
    """Every update of a stream, or every k-th when there are more than `keep` (the last always)."""
    stride = max(1, -(-num_steps // keep))
    out, last = [], None
    for i, update in enumerate(updates):
        last = update
        if i % stride == 0:
            out.append(update)
    if last is not None and (not out or out[-1] is not last):
        out.append(last)
    return out


def _requested(seconds: int, *args, **kwargs) -> int:
    return seconds


_served = None        # the Service whose decodes run here (set in the main process, copied by the fork)
_on_gpu: Optional[Callable] = None


def serve(service) -> None:
    """Name the Service whose decode jobs GPU calls run; decorate the GPU call (before launch)."""
    global _served, _on_gpu
    _served = service
    _on_gpu = gpu(_run_job, duration=_requested)


def _run_job(seconds: int, job) -> list:
    return thin(_served.run_job(job), job.num_steps)


def collect_on_gpu(job, seconds: int) -> list:
    """Run a decode job (picklable: it crosses into the GPU worker) to its end inside one GPU call
    of `seconds`; its updates come back, at most MAX_COLLECTED_FRAMES + 1 of them."""
    if _on_gpu is None:
        raise RuntimeError("zerogpu.serve(service) was not called")
    return _on_gpu(seconds, job)
