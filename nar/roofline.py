"""Lower bounds on decoding time: what a step must read and compute, against the machine's limits.

A decode step runs the model on T inputs for each of B' sequences (B' = 2 x batch with CFG) and
attends key_len cache slots. It cannot finish faster than either
  * reading every weight it uses once plus the KV cache it attends, at the memory bandwidth, or
  * doing its matrix FLOPs at the peak matmul rate.
Summing max(bytes / bandwidth, flops / peak) over the plan's steps gives a bound per image;
achieved time as a multiple of it says how far a decode is from the hardware limit.
The limits are measured on the spot (a large copy, a large matmul); for known GPUs the data-sheet
figures are reported beside them.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Optional

import torch
from torch import nn

from .decode import compile_plan
from .model import Transformer
from .schedules import Schedule

# Data-sheet memory bandwidth (bytes/s) and dense bf16 tensor throughput (FLOP/s).
DATASHEET = {
    "H100": (3.35e12, 989e12),     # SXM5 80 GB
    "H200": (4.8e12, 989e12),
    "A100": (2.0e12, 312e12),      # 80 GB SXM
}


@dataclass
class StepCost:
    weight_bytes: int
    kv_bytes: int
    linear_flops: int      # projections, MLPs and the heads' logits
    attention_flops: int   # QK^T and AV

    @property
    def bytes(self) -> int:
        return self.weight_bytes + self.kv_bytes

    @property
    def flops(self) -> int:
        return self.linear_flops + self.attention_flops


@dataclass
class MachineLimits:
    bandwidth_bytes_per_s: float   # measured: a large device-to-device copy
    matmul_flops_per_s: float      # measured: a large square matmul in the decode dtype
    datasheet_bandwidth_bytes_per_s: Optional[float] = None
    datasheet_matmul_flops_per_s: Optional[float] = None

    def to_json(self) -> dict:
        return asdict(self)


def linear_params(module: nn.Module) -> int:
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Linear))


def step_costs(model: Transformer, schedule: Schedule, batch: int, cfg: bool) -> list[StepCost]:
    """Bytes that must be read and matmul FLOPs that must be done at each step of a decode."""
    c = model.config
    plan = compile_plan(c.kind, schedule, c.prefix_len)
    elem = model.tok_embeddings.weight.element_size()
    seqs = batch * (2 if cfg else 1)
    block_params = linear_params(model.layers[0])
    heads = 1 + model.has_below_head + model.has_frame_head   # output heads (3 for video NAR)
    head_params = c.vocab_size * c.dim
    weights = (c.n_blocks * block_params + heads * head_params) * elem
    kv_per_slot = 2 * c.n_blocks * (c.n_kv_head or c.n_head) * c.head_dim * elem  # K and V, all layers
    out = []
    for sp in plan.steps:
        inputs, targets = len(sp.slots), len(sp.targets)
        out.append(StepCost(
            weight_bytes=weights, kv_bytes=seqs * sp.key_len * kv_per_slot,
            linear_flops=seqs * 2 * (inputs * c.n_blocks * block_params + targets * heads * head_params),
            attention_flops=seqs * 4 * inputs * sp.key_len * c.n_head * c.head_dim * c.n_blocks))
    return out


def memory_bytes(model: Transformer, schedule: Schedule, batch: int, cfg: bool) -> dict:
    """What a decode holds: the weights, and the KV cache it allocates (exact, on any device)."""
    c = model.config
    elem = model.tok_embeddings.weight.element_size()
    seqs = batch * (2 if cfg else 1)
    cache_len = compile_plan(c.kind, schedule, c.prefix_len).cache_slots
    return {"weight_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
            "kv_cache_bytes": 2 * c.n_blocks * seqs * (c.n_kv_head or c.n_head) * cache_len * c.head_dim * elem}


def _memory_and_compute_seconds(cost: StepCost, limits: MachineLimits) -> tuple[float, float]:
    return cost.bytes / limits.bandwidth_bytes_per_s, cost.flops / limits.matmul_flops_per_s


def bound_seconds(costs: list[StepCost], limits: MachineLimits) -> float:
    return sum(max(_memory_and_compute_seconds(c, limits)) for c in costs)


def memory_bound_steps(costs: list[StepCost], limits: MachineLimits) -> int:
    """Steps whose bound is set by bytes read rather than by FLOPs."""
    return sum(memory > compute for memory, compute in (_memory_and_compute_seconds(c, limits) for c in costs))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_of(fn, device: torch.device, repeats: int) -> float:
    fn()
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


@torch.inference_mode()
def measure_limits(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> MachineLimits:
    """Best of a few runs: a copy much larger than the caches, and a square matmul."""
    big = device.type == "cuda"
    n_bytes = (2 << 30) if big else (128 << 20)   # GPU: far beyond its L2. CPU: about what a small model's weights occupy in a large L3
    src = torch.empty(n_bytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    copy_s = _best_of(lambda: dst.copy_(src), device, repeats)
    n = 8192 if big else 1024
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    mm_s = _best_of(lambda: a @ b, device, repeats)
    sheet = (None, None)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        sheet = next((v for k, v in DATASHEET.items() if k in name), sheet)
    return MachineLimits(bandwidth_bytes_per_s=2 * n_bytes / copy_s,  # read + write
                         matmul_flops_per_s=2 * n ** 3 / mm_s,
                         datasheet_bandwidth_bytes_per_s=sheet[0], datasheet_matmul_flops_per_s=sheet[1])
