"""A stand-in for Hugging Face's `spaces` package that behaves like ZeroGPU where the app depends on
it (tests/test_zerogpu.py puts it on the path of an app subprocess):

- each `@spaces.GPU` call runs in a forked process; what the call changes in memory stays there;
- its arguments must pickle (they cross into the worker on ZeroGPU) and so must its results;
- CUDA is "available" only inside a GPU call (torch.cuda.is_available is patched);
- a call that runs past the duration it asked for (seconds, or a function of its arguments;
  default 60) is aborted;
- importing it after torch initialised CUDA raises, and every import and call is logged as a
  JSON line to $STANDIN_SPACES_LOG, so a test can check when it was imported and what was asked.
"""
import functools
import inspect
import json
import os
import pickle
import select
import signal
import struct
import sys
import time

_LOG = os.environ.get("STANDIN_SPACES_LOG")
DEFAULT_DURATION = 60


def _log(**record):
    if _LOG:
        with open(_LOG, "a") as f:
            f.write(json.dumps(record) + "\n")


_log(event="import", torch_imported_before="torch" in sys.modules)
if "torch" in sys.modules and sys.modules["torch"].cuda.is_initialized():
    raise RuntimeError("CUDA has been initialized before importing the `spaces` package")

import torch  # noqa: E402

_inside = False
torch.cuda.is_available = lambda: _inside


def _send(fd, kind, value):
    try:
        data = pickle.dumps((kind, value))
    except Exception as e:   # an unpicklable result or error
        data = pickle.dumps(("error", RuntimeError(f"the GPU call's {kind} could not be pickled: {e}")))
    os.write(fd, struct.pack("<Q", len(data)))
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_exact(fd, n, deadline, child):
    chunks, left = [], n
    while left:
        wait = deadline - time.monotonic()
        if wait <= 0:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
            raise TimeoutError("GPU task aborted: it ran past the duration it asked for")
        ready, _, _ = select.select([fd], [], [], wait)
        if ready:
            chunk = os.read(fd, left)
            if not chunk:
                raise RuntimeError("the GPU worker exited without an answer")
            chunks.append(chunk)
            left -= len(chunk)
    return b"".join(chunks)


def _run(fn, args, kwargs, seconds, stream):
    pickle.dumps((args, kwargs))          # ZeroGPU pickles the arguments into the worker
    read_fd, write_fd = os.pipe()
    start = time.monotonic()
    child = os.fork()
    if child == 0:                        # the GPU worker
        global _inside
        os.close(read_fd)
        _inside = True
        try:
            if stream:
                for item in fn(*args, **kwargs):
                    _send(write_fd, "yield", item)
                _send(write_fd, "return", None)
            else:
                _send(write_fd, "return", fn(*args, **kwargs))
        except BaseException as e:        # handed to the caller
            _send(write_fd, "error", e)
        os._exit(0)
    os.close(write_fd)
    deadline = start + seconds
    try:
        while True:
            (size,) = struct.unpack("<Q", _read_exact(read_fd, 8, deadline, child))
            kind, value = pickle.loads(_read_exact(read_fd, size, deadline, child))
            if kind == "yield":
                yield value
                continue
            os.waitpid(child, 0)
            if kind == "error":
                raise value
            return value
    finally:
        os.close(read_fd)
        _log(event="call", fn=fn.__name__, duration=seconds, wall=round(time.monotonic() - start, 3))


def GPU(fn=None, *, duration=None):
    if fn is None:
        return lambda f: GPU(f, duration=duration)

    def seconds(args, kwargs):
        return duration(*args, **kwargs) if callable(duration) else (duration or DEFAULT_DURATION)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def streamed(*args, **kwargs):
            yield from _run(fn, args, kwargs, seconds(args, kwargs), True)
        return streamed

    @functools.wraps(fn)
    def called(*args, **kwargs):
        gen = _run(fn, args, kwargs, seconds(args, kwargs), False)
        try:
            while True:
                next(gen)
        except StopIteration as done:
            return done.value
    return called
