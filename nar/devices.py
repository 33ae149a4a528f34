"""Which device and precision to run on, and a short name for the device (file names, reports).

Kept apart from model loading so the benchmark, the loaders and the app choose alike.
"""
from __future__ import annotations

from typing import Optional

import torch

NATIVE_BF16_CAPABILITY = (8, 0)   # Ampere and later have bf16 tensor cores; earlier GPUs emulate it


def pick_device(name: Optional[str] = None) -> torch.device:
    if name and name != "auto":
        return torch.device(name)
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def has_native_bf16(device: torch.device) -> bool:
    """bf16 in hardware. Not torch.cuda.is_bf16_supported(): it also says yes where bf16 is
    emulated (T4, V100), which is slower than fp32 there."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= NATIVE_BF16_CAPABILITY


def pick_dtype(device: torch.device) -> torch.dtype:
    """bf16 on GPUs with native bf16 (the reference sampling precision), fp32 elsewhere."""
    return torch.bfloat16 if has_native_bf16(device) else torch.float32


def device_name(device: torch.device) -> str:
    """e.g. "NVIDIA-H200" or "cpu-2threads"."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device).replace(" ", "-")
    return f"cpu-{torch.get_num_threads()}threads"


def wait_for_stream(device: torch.device) -> None:
    """Wait until the work queued so far on this thread's current stream is done: an event
    recorded there, not torch.cuda.synchronize(), which also waits for every other stream (another
    request's decode, a training thread). A request run under its own `torch.cuda.stream(...)` is
    timed alone. No-op off CUDA (CPU work is done when the call returns)."""
    if device.type == "cuda":
        done = torch.cuda.Event()
        done.record(torch.cuda.current_stream(device))
        done.synchronize()
