"""Decoding orders as data: for an n x n grid, the grid positions decoded at each step.

Positions are raster indices p = h * n + w. A schedule says nothing about models; the decoding
engine (nar/decode.py) turns a schedule and a model kind into forward passes.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

ORDERS = ("nar", "raster", "zipar")


@dataclass(frozen=True)
class Schedule:
    name: str
    grid_size: int
    steps: tuple[tuple[int, ...], ...]

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def num_tokens(self) -> int:
        return self.grid_size * self.grid_size

    def step_of(self) -> list[int]:
        """The step at which each raster position is decoded."""
        out = [-1] * self.num_tokens
        for t, positions in enumerate(self.steps):
            for p in positions:
                out[p] = t
        return out

    def coords(self, step: int) -> list[tuple[int, int]]:
        n = self.grid_size
        return [(p // n, p % n) for p in self.steps[step]]

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
def raster(n: int) -> Schedule:
    return Schedule("raster", n, tuple((p,) for p in range(n * n)))


@lru_cache(maxsize=None)
def nar(n: int) -> Schedule:
    """One anti-diagonal d = h + w per step: 2n - 1 steps."""
    steps = tuple(tuple(h * n + (d - h) for h in range(n) if 0 <= d - h < n)
                  for d in range(2 * n - 1))
    return Schedule("nar", n, steps)


@lru_cache(maxsize=None)
def zipar(n: int, window: int) -> Schedule:
    """ZipAR next-set order for a raster model: every started row decodes one token per step,
    left to right, and row r + 1 starts once row r holds `window` tokens. window = n is raster;
    the step count is (n - 1) * window + n."""
    if not 1 <= window <= n:
        raise ValueError(f"zipar window must be in [1, {n}], got {window}")
    last_step = (n - 1) * window + n - 1
    steps = tuple(tuple(r * n + (t - r * window) for r in range(n) if 0 <= t - r * window < n)
                  for t in range(last_step + 1))
    return Schedule(f"zipar-{window}", n, steps)


def make_schedule(order: str, n: int, window: int = 8) -> Schedule:
    if order == "nar":
        return nar(n)
    if order == "raster":
        return raster(n)
    if order == "zipar":
        return zipar(n, min(window, n))
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
