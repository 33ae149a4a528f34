"""Decoding orders as data: for a T x n x n token grid, the grid positions decoded at each step.

Positions are raster indices p = (t * n + h) * n + w; images are T = 1 (p = h * n + w). A
schedule says nothing about models; the decoding engine (nar/decode.py) turns a schedule and a
model kind into forward passes.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

ORDERS = ("nar", "raster", "zipar")


@dataclass(frozen=True)
class Schedule:
    name: str
    grid_size: int                   # tokens per side of a frame (H = W)
    steps: tuple[tuple[int, ...], ...]
    frames: int = 1                  # T: 1 for images

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(T, H, W) of the grid."""
        return (self.frames, self.grid_size, self.grid_size)

    @property
    def num_tokens(self) -> int:
        return self.frames * self.grid_size * self.grid_size

    def step_of(self) -> list[int]:
        """The step at which each raster position is decoded."""
        out = [-1] * self.num_tokens
        for t, positions in enumerate(self.steps):
            for p in positions:
                out[p] = t
        return out

    def validate(self) -> "Schedule":
        seen = [False] * self.num_tokens
        for positions in self.steps:
            if not positions:
                raise ValueError(f"schedule {self.name} has an empty step")
            for p in positions:
                if not 0 <= p < self.num_tokens or seen[p]:
                    raise ValueError(f"schedule {self.name} decodes position {p} twice or out of range")
                seen[p] = True
        if not all(seen):
            raise ValueError(f"schedule {self.name} never decodes {seen.count(False)} position(s)")
        return self


@lru_cache(maxsize=None)
def raster(n: int, frames: int = 1) -> Schedule:
    """One token per step: frame by frame, row by row, left to right; T * n * n steps."""
    return Schedule("raster", n, tuple((p,) for p in range(frames * n * n)), frames)


@lru_cache(maxsize=None)
def nar(n: int, frames: int = 1) -> Schedule:
    """One plane c = t + h + w per step (an anti-diagonal h + w for images): T + 2n - 2 steps."""
    steps = tuple(tuple((t * n + h) * n + (c - t - h) for t in range(frames) for h in range(n)
                        if 0 <= c - t - h < n)
                  for c in range(frames + 2 * n - 2))
    return Schedule("nar", n, steps, frames)


@lru_cache(maxsize=None)
def zipar(n: int, window: int, frames: int = 1) -> Schedule:
    """ZipAR next-set order for a raster model: every started row decodes one token per step,
    left to right, and row r + 1 starts once row r holds `window` tokens. A clip's rows are
    taken frame after frame (row r is row r % n of frame r // n). window = n is raster; the
    step count is (T * n - 1) * window + n."""
    if not 1 <= window <= n:
        raise ValueError(f"zipar window must be in [1, {n}], got {window}")
    rows = frames * n
    last_step = (rows - 1) * window + n - 1
    steps = tuple(tuple(r * n + (t - r * window) for r in range(rows) if 0 <= t - r * window < n)
                  for t in range(last_step + 1))
    return Schedule(f"zipar-{window}", n, steps, frames)


def make_schedule(order: str, n: int, window: int = 8, frames: int = 1) -> Schedule:
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    if order == "nar":
        return nar(n, frames)
    if order == "raster":
        return raster(n, frames)
    if order == "zipar":
        return zipar(n, min(window, n), frames)
    raise ValueError(f"unknown order {order!r}; choose from {ORDERS}")


def stand_in_position(schedule: Schedule, position: int, step: int) -> int:
    """The decoded token that stands in for `position` when a step needs that position as a
    predictor before it is decoded (ZipAR starting a row before the row above is finished):
    the most recently decoded token of the same row. This is ZipAR's trick of feeding a known
    neighbour in place of the missing last token of the row above."""
    n = schedule.grid_size
    row = position // n
    step_of = schedule.step_of()
    decoded = [p for p in range(row * n, row * n + n) if step_of[p] < step]
    if not decoded:
        raise ValueError(f"{schedule.name}: no decoded token in row {row} before step {step}")
    return max(decoded, key=lambda p: step_of[p])
