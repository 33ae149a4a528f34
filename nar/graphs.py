"""Replaying a decode's steps as CUDA graphs.

A decode plan is fixed per (model kind, schedule), and every step has fixed shapes for a given
batch and sampling config, so each step can be captured once as a CUDA graph and replayed: one
launch per step instead of hundreds of small kernel launches, which is what limits batch-1
decoding on a GPU. All buffers live in a `DecodeState` that the graphs read and write in place;
a new request only copies its condition (class ids or text features) and seeds into it.

On a CPU (or with use_graphs=False) the same object runs the steps eagerly on its reused
buffers, which is how the buffer logic is tested without a GPU.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Iterator

import torch

from .conditions import ClassCondition, Condition, TextCondition
from .config import SamplingConfig
from .decode import (StepRecord, check_request, guidance, load_condition, new_state, plan_for, run_step,
                     token_grid_shape)
from .devices import wait_for_stream
from .model import Transformer
from .schedules import Schedule


class CaptureError(RuntimeError):
    """Capturing the graphs failed; the half-built decode is already released.
    out_of_memory: the cause was the GPU running out of memory (the case does not fit)."""

    def __init__(self, message: str, out_of_memory: bool):
        super().__init__(message)
        self.out_of_memory = out_of_memory


def is_out_of_memory(error: BaseException) -> bool:
    """An OOM, or an error raised while handling one: an OOM inside `torch.cuda.graph` makes its
    exit call capture_end(), which can raise a different error with the OOM as its context."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, torch.cuda.OutOfMemoryError) or getattr(error, "out_of_memory", False) \
                or "out of memory" in str(error).lower():
            return True
        error = error.__cause__ or error.__context__
    return False


def can_capture(device: torch.device) -> bool:
    return device.type == "cuda"


class GraphedDecode:
    """One (model, schedule, batch, sampling options) decode, ready to replay for any condition
    (class ids or text features) and seed. Build it once and call it many times; the seed in
    `sampling` is only a default."""

    def __init__(self, model: Transformer, schedule: Schedule, batch: int, sampling: SamplingConfig,
                 use_graphs: bool = True):
        self.model, self.schedule, self.sampling = model, schedule, sampling
        self.device = model.tok_embeddings.weight.device
        self.use_graphs = use_graphs and can_capture(self.device)
        self.plan = plan_for(model, schedule)
        probe = check_request(model, schedule, probe_condition(model, batch), sampling)
        self.state = new_state(model, self.plan, probe, sampling)
        self.guided = guidance(self.plan, sampling)
        self.tokens: list[torch.Tensor] = []
        self.graphs: list[torch.cuda.CUDAGraph] = []
        if self.use_graphs:
            failure = None
            try:
                self._capture()
            except RuntimeError as e:   # torch.cuda.OutOfMemoryError is one
                failure = (f"CUDA graph capture failed: {type(e).__name__}: {e}", is_out_of_memory(e))
            if failure is not None:
                # Out of the except block, so no traceback holds the half-built graphs' frames;
                # the caller can empty the CUDA cache right away.
                self.release()
                raise CaptureError(*failure)

    def release(self) -> None:
        """Drop the graphs, their memory pool and the buffers (the object cannot run after)."""
        self.graphs.clear()
        self.tokens.clear()
        self.state = None

    @torch.inference_mode()
    def _capture(self) -> None:
        # Warm up on a side stream (lazy initialisations must not happen during capture).
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            self._run_eagerly()
        torch.cuda.current_stream(self.device).wait_stream(side)
        pool = torch.cuda.graph_pool_handle()
        for t, sp in enumerate(self.plan.steps):
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                tokens, _ = run_step(self.model, self.state, t, sp, self.sampling, self.guided[t])
            self.graphs.append(graph)
            self.tokens.append(tokens)  # the graph's output buffer, rewritten at every replay
        torch.cuda.synchronize(self.device)

    def _run_eagerly(self) -> None:
        for t, sp in enumerate(self.plan.steps):
            run_step(self.model, self.state, t, sp, self.sampling, self.guided[t])

    def _load(self, condition: Condition | torch.Tensor, seed: int) -> None:
        state = self.state
        # check_request also validates the seed
        condition = check_request(self.model, self.schedule, condition, replace(self.sampling, seed=seed))
        if condition.batch != state.batch:
            raise ValueError(f"this decode was built for a batch of {state.batch}, got {condition.batch}")
        load_condition(state, condition.to(self.device))
        state.seeds.copy_(seed + torch.arange(state.batch))
        state.grid.fill_(-1)

    @torch.inference_mode()
    def steps(self, condition: Condition | torch.Tensor, seed: int | None = None,
              sync: bool = True) -> Iterator[StepRecord]:
        """Like decode.decode_steps, from the captured graphs."""
        self._load(condition, self.sampling.seed if seed is None else seed)
        busy = 0.0
        for t, sp in enumerate(self.plan.steps):
            started = time.perf_counter()
            if self.use_graphs:
                self.graphs[t].replay()
                tokens = self.tokens[t]
            else:
                tokens, _ = run_step(self.model, self.state, t, sp, self.sampling, self.guided[t])
            if sync:
                wait_for_stream(self.device)
            busy += time.perf_counter() - started
            yield StepRecord(step=t, num_steps=len(self.plan.steps), positions=sp.targets, tokens=tokens,
                             grid=self.state.grid, elapsed=busy)

    def __call__(self, condition: Condition | torch.Tensor, seed: int | None = None) -> torch.Tensor:
        """Decode to the end; the token grids [B, n, n] or [B, T, n, n] (a copy: the buffers are reused)."""
        for record in self.steps(condition, seed, sync=False):
            pass
        return record.grid.view(-1, *token_grid_shape(self.schedule)).clone()


def probe_condition(model: Transformer, batch: int) -> Condition:
    """A placeholder condition of the model's kind that a decode is built (and captured) with."""
    cfg = model.config
    if cfg.condition == "text":
        return TextCondition(torch.zeros(batch, cfg.cls_token_num, cfg.caption_dim),
                             torch.ones(batch, cfg.cls_token_num, dtype=torch.bool))
    return ClassCondition(torch.zeros(batch, dtype=torch.long))
