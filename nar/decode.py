"""The one decoding engine: a model kind + a schedule -> forward passes with a KV cache.

A schedule (nar/schedules.py) only lists which grid positions of a T x n x n grid (images:
T = 1) are decoded at each step. This module compiles it, once per (model kind, schedule), into
a `DecodePlan`: for every step, the tokens to feed (those decoded at the previous step, in
raster order), where their keys and values go in the cache, the attention mask of each fed
token, and how the logits of the step's targets are read off the heads.

The first step feeds the condition prefix (one class token, or L text tokens; grid token p
sits at sequence position L + p). How a target's logits are formed depends on the model kind:
  * nar:    mean of the "right" head at (t, h, w-1), the "below" head at (t, h-1, w) and, for
            video, the "frame" head at (t-1, h, w), over those that exist (every head of the
            prefix's last token for (0, 0, 0));
  * raster: the "right" (only) head at the raster predecessor p - 1 (the prefix's last token
            for p = 0).

A fed token at sequence position q attends key k when the model's training order allows it
(causal for raster, proximity for NAR) and k was fed no later than q. For NAR and raster with
their own schedules this is exactly the training mask. A text prefix's padding is masked out
of the keys per sequence at run time (`DecodeState.keys_ok`), as in training. If a step needs a predictor that is not
fed at that step (ZipAR starting a row while the row above is unfinished) the plan adds a
*probe*: a query at the predictor's position, fed with its token if decoded or else a stand-in
token (schedules.stand_in_position), written to a scratch slot that only the probe itself sees.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator, Optional

import torch

from .conditions import ClassCondition, Condition, TextCondition, as_condition, concatenated
from .config import SamplingConfig
from .devices import wait_for_stream
from .model import Transformer, may_attend
from .sampling import cfg_combine, noise_table, sample
from .schedules import Schedule, stand_in_position
from .threads import decode_threads, running_on, threads_for_rows

PREFIX_TOKEN = -1  # token_src value meaning "a condition prefix token"


@dataclass
class StepPlan:
    seq_pos: torch.Tensor      # [T] sequence positions of the inputs (< L: the prefix)
    token_src: torch.Tensor    # [T] grid position whose token is fed, PREFIX_TOKEN for the prefix
    slots: torch.Tensor        # [T] cache slots the inputs' keys/values are written to
    mask: Optional[torch.Tensor]  # [T, key_len] bool: may input i attend slot j (None: all)
    targets: torch.Tensor      # [Q] grid positions decoded at this step
    right_idx: torch.Tensor    # [Q] input whose right head predicts the target
    right_w: torch.Tensor      # [Q] its weight (0 when unused)
    below_idx: torch.Tensor    # [Q] same for the below head
    below_w: torch.Tensor
    frame_idx: torch.Tensor    # [Q] same for the frame head (video NAR; weights 0 otherwise)
    frame_w: torch.Tensor
    key_len: int               # cache slots [0, key_len) are the keys of this step
    slot_start: int = 0        # slots are consecutive: slots == range(slot_start, slot_start + T)

    def to(self, device) -> "StepPlan":
        return StepPlan(**{k: v.to(device) if isinstance(v, torch.Tensor) else v
                           for k, v in self.__dict__.items()})


# One cache slot more than a plan reads: the last step's keys are then a slice of the cache, like
# every other step's, not all of it (torch.compile would specialise a graph for that step alone).
SPARE_SLOTS = 1


@dataclass
class DecodePlan:
    kind: str
    schedule: Schedule
    cache_len: int
    steps: list[StepPlan]
    prefix_len: int = 1

    @property
    def cache_slots(self) -> int:
        """KV-cache length a decode allocates: what its steps read, and the spare slot."""
        return self.cache_len + SPARE_SLOTS

    def to(self, device) -> "DecodePlan":
        return DecodePlan(self.kind, self.schedule, self.cache_len, [s.to(device) for s in self.steps],
                          self.prefix_len)


HEADS = ("right", "below", "frame")


def predictors(kind: str, shape: tuple[int, int, int], p: int, prefix_len: int = 1) -> list[tuple[int, str]]:
    """(sequence position, head) pairs whose logits are averaged to predict grid position p of
    a T x H x W grid after a prefix of prefix_len tokens."""
    T, H, W = shape
    L = prefix_len
    t, h, w = p // (H * W), p // W % H, p % W
    if kind == "raster":
        return [(L - 1 + p, "right")]  # grid token p - 1, or the prefix's last token for p = 0
    if p == 0:
        return [(L - 1, "right"), (L - 1, "below")] + ([(L - 1, "frame")] if T > 1 else [])
    out = []
    if w > 0:
        out.append((L + p - 1, "right"))
    if h > 0:
        out.append((L + p - W, "below"))
    if t > 0:
        out.append((L + p - H * W, "frame"))
    return out


@lru_cache(maxsize=64)
def compile_plan(kind: str, schedule: Schedule, prefix_len: int = 1) -> DecodePlan:
    schedule.validate()
    L = prefix_len
    step_of = schedule.step_of()
    allowed = may_attend(kind, schedule.shape, L)
    # Cache slots are handed out in feeding order, so after any step the written entries are
    # a prefix of the cache and a step attends only that prefix (its mask is [T, key_len]):
    # early steps read a short cache, and the raster order needs no mask at all.
    seq_at_slot: list[int] = []       # slot -> sequence position of the token written there
    steps = []
    for t, targets in enumerate(schedule.steps):
        if t == 0:
            fed = [(q, PREFIX_TOKEN) for q in range(L)]       # (seq_pos, token_src)
        else:
            fed = [(L + p, p) for p in sorted(schedule.steps[t - 1])]
        inputs = [(q, src, len(seq_at_slot) + i) for i, (q, src) in enumerate(fed)]
        seq_at_slot.extend(q for q, _ in fed)
        index = {q: i for i, (q, _, _) in enumerate(inputs)}
        picked = {head: [] for head in HEADS}
        for p in targets:
            preds = predictors(kind, schedule.shape, p, L)
            picks = {head: (0, 0.0) for head in HEADS}
            for q, head in preds:
                if q not in index:
                    # a probe: written past the prefix, later overwritten by real tokens
                    src = q - L if step_of[q - L] < t else stand_in_position(schedule, q - L, t)
                    index[q] = len(inputs)
                    inputs.append((q, src, len(seq_at_slot) + len(inputs) - len(fed)))
                picks[head] = (index[q], 1.0 / len(preds))
            for head in HEADS:
                picked[head].append(picks[head])
        written = len(seq_at_slot)
        key_len = written + len(inputs) - len(fed)
        slot_seq = torch.tensor(seq_at_slot)
        mask = torch.zeros(len(inputs), key_len, dtype=torch.bool)
        for i, (q, _, slot) in enumerate(inputs):
            mask[i, :written] = allowed[q][slot_seq]
            if slot >= written:     # a probe replaces any earlier copy of itself and sees only
                mask[i, :written] &= slot_seq != q  # its own scratch slot, never another probe
                mask[i, slot] = True
        steps.append(StepPlan(
            seq_pos=torch.tensor([q for q, _, _ in inputs]),
            token_src=torch.tensor([s for _, s, _ in inputs]),
            slots=torch.tensor([s for _, _, s in inputs]),
            mask=None if bool(mask.all()) else mask,
            targets=torch.tensor(targets),
            right_idx=torch.tensor([i for i, _ in picked["right"]]),
            right_w=torch.tensor([w for _, w in picked["right"]]),
            below_idx=torch.tensor([i for i, _ in picked["below"]]),
            below_w=torch.tensor([w for _, w in picked["below"]]),
            frame_idx=torch.tensor([i for i, _ in picked["frame"]]),
            frame_w=torch.tensor([w for _, w in picked["frame"]]),
            key_len=key_len,
            slot_start=inputs[0][2],
        ))
    return DecodePlan(kind, schedule, max(sp.key_len for sp in steps), steps, L)


@lru_cache(maxsize=64)
def plan_on(kind: str, schedule: Schedule, device: str, prefix_len: int = 1) -> DecodePlan:
    """The compiled plan with its tensors on `device` (cached: built once per device)."""
    return compile_plan(kind, schedule, prefix_len).to(device)


def plan_for(model: Transformer, schedule: Schedule) -> DecodePlan:
    """The model's plan for a schedule, on the model's device."""
    cfg = model.config
    return plan_on(cfg.kind, schedule, str(model.tok_embeddings.weight.device), cfg.prefix_len)


@dataclass
class StepRecord:
    """What one decoding step did, reported as it happens."""
    step: int                      # 0-based
    num_steps: int
    positions: torch.Tensor        # [Q] grid positions decoded at this step (raster indices)
    tokens: torch.Tensor           # [B, Q] their tokens
    grid: torch.Tensor             # [B, T*n*n] all tokens so far, -1 where not decoded yet (live)
    elapsed: float                 # seconds spent decoding so far (not counting the consumer's time)
    logits: Optional[torch.Tensor] = None  # [B, Q, V] the logits sampled from, if asked for
    confidence: Optional[torch.Tensor] = None  # [B, Q] probability of each sampled token, if asked for


def check_request(model: Transformer, schedule: Schedule, condition: Condition | torch.Tensor,
                  sampling: SamplingConfig) -> Condition:
    """The condition, checked against the model and schedule (a tensor is read as class ids)."""
    cfg = model.config
    sampling.validate()
    if schedule.shape != cfg.grid_shape:
        def name(shape):
            return "x".join(map(str, shape if shape[0] > 1 else shape[1:]))
        raise ValueError(f"schedule is for a {name(schedule.shape)} grid, the model for {name(cfg.grid_shape)}")
    condition = as_condition(condition)
    if cfg.condition == "text":
        if not isinstance(condition, TextCondition):
            raise ValueError("this is a text-to-image model: give it a prompt, not class ids")
        expected = (cfg.cls_token_num, cfg.caption_dim)
        if condition.batch == 0 or tuple(condition.features.shape[1:]) != expected:
            raise ValueError(f"text features must be [B >= 1, {expected[0]}, {expected[1]}], "
                             f"got {tuple(condition.features.shape)}")
        if not bool(condition.mask.any(dim=1).all()):
            raise ValueError("every prompt needs at least one real token")
        return condition
    if not isinstance(condition, ClassCondition):
        raise ValueError("this is a class-conditional model: give it class ids, not a prompt")
    class_ids = condition.class_ids
    if class_ids.ndim != 1 or class_ids.numel() == 0:
        raise ValueError("class_ids must be a non-empty 1-D tensor")
    if int(class_ids.min()) < 0 or int(class_ids.max()) >= cfg.num_classes:
        raise ValueError(f"class ids must be in [0, {cfg.num_classes - 1}]")
    return condition


@dataclass
class DecodeState:
    """The buffers one decode works in: written in place at every step."""
    batch: int
    condition: Condition           # [B'] the condition, then its null for CFG's second half
    keys_ok: Optional[torch.Tensor]  # [B', cache_len] bool: False at a text prefix's padding (None: none)
    seeds: torch.Tensor            # [B] one sampling seed per image
    grid: torch.Tensor             # [B, T*n*n] tokens so far, -1 where not decoded yet
    caches: list
    noise: Optional[torch.Tensor] = None   # [B, T*n*n, V] this decode's Gumbel noise (CPU), drawn at step 0

    @property
    def rows(self) -> int:
        """Sequences in the forward pass: the batch, twice with CFG."""
        return self.condition.batch


def with_null(model: Transformer, condition: Condition, sampling: SamplingConfig) -> Condition:
    """The condition, followed by its null condition when CFG is on."""
    return concatenated(condition, model.null_condition(condition)) if sampling.cfg_scale > 1.0 else condition


def prefix_keys(condition: Condition, cache_len: int) -> Optional[torch.Tensor]:
    """[B', cache_len] bool, False at prefix padding (the prefix fills cache slots 0..L-1)."""
    if not isinstance(condition, TextCondition):
        return None
    keys_ok = torch.ones(condition.batch, cache_len, dtype=torch.bool, device=condition.mask.device)
    keys_ok[:, :condition.mask.shape[1]] = condition.mask
    return keys_ok


def new_state(model: Transformer, plan: DecodePlan, condition: Condition | torch.Tensor,
              sampling: SamplingConfig) -> DecodeState:
    device = model.tok_embeddings.weight.device
    condition = as_condition(condition).to(device)
    batch = condition.batch
    rows = with_null(model, condition, sampling)
    return DecodeState(batch=batch, condition=rows, keys_ok=prefix_keys(rows, plan.cache_len),
                       seeds=sampling.seed + torch.arange(batch, device=device),
                       grid=torch.full((batch, plan.schedule.num_tokens), -1, dtype=torch.long, device=device),
                       caches=model.new_caches(rows.batch, plan.cache_slots))


def load_condition(state: DecodeState, condition: Condition) -> None:
    """Write a new condition of the same batch and kind into the state's buffers in place (a
    CUDA graph replays the buffers it was captured with); the null half stays as it is."""
    rows, batch = state.condition, state.batch
    if isinstance(rows, ClassCondition):
        rows.class_ids[:batch].copy_(condition.class_ids)
        return
    rows.features[:batch].copy_(condition.features)
    rows.mask.copy_(condition.mask.repeat(rows.batch // batch, 1))   # the null half keeps the prompt's mask
    state.keys_ok[:, :rows.mask.shape[1]].copy_(rows.mask)


def step_mask(state: DecodeState, t: int, sp: StepPlan) -> Optional[torch.Tensor]:
    """The step's attention mask: the plan's [T, key_len], or with prefix padding masked out
    per sequence [B', 1, T, key_len] (at the first step each prefix token still attends itself)."""
    if state.keys_ok is None:
        return sp.mask
    keys_ok = state.keys_ok[:, None, :sp.key_len]
    mask = keys_ok if sp.mask is None else sp.mask[None] & keys_ok
    if t == 0:
        mask = mask | torch.eye(len(sp.seq_pos), sp.key_len, dtype=torch.bool, device=mask.device)
    return mask[:, None]


def guidance(plan: DecodePlan, sampling: SamplingConfig) -> list[bool]:
    """Whether CFG applies at each step: off once more than cfg_interval tokens are decoded."""
    flags, decoded = [], 0
    for sp in plan.steps:
        flags.append(sampling.cfg_scale > 1.0 and (sampling.cfg_interval < 0 or decoded <= sampling.cfg_interval))
        decoded += len(sp.targets)
    return flags


def step_logits(model: Transformer, x: torch.Tensor, sp: StepPlan, mask: Optional[torch.Tensor],
                caches: list, batch: int, cfg_scale: Optional[float]) -> torch.Tensor:
    """The trunk and heads of one step: embeddings x [B', T, dim] of the fed inputs -> logits
    [B, Q, V] of the step's targets (CFG-combined with cfg_scale, the conditional half without).
    The part of a step worth compiling: tensors in, tensors out, no host read."""
    feats = model.features(x, sp.seq_pos, mask, caches, sp.slot_start, sp.key_len)
    logits = model.logits_right(feats.right[:, sp.right_idx]) * sp.right_w[:, None]
    if feats.below is not None:
        logits = logits + model.logits_below(feats.below[:, sp.below_idx]) * sp.below_w[:, None]
    if feats.frame is not None:
        logits = logits + model.logits_frame(feats.frame[:, sp.frame_idx]) * sp.frame_w[:, None]
    if logits.shape[0] > batch:
        logits = cfg_combine(logits, cfg_scale) if cfg_scale is not None else logits[:batch]
    return logits


@lru_cache(maxsize=None)
def compiled_step_logits():
    """`step_logits` through torch.compile (inductor: fused C++ / Triton kernels instead of a few
    hundred small eager ops a step), built on first use. dynamic=True makes the front size, the
    batch and the cache length symbols, so graphs are not built per step: torch.compile
    specialises size 1, so a model gets at most one graph per kind of step (one or several
    inputs x one or several targets, with or without a mask; a batch of 1 apart). The limit
    below bounds them; compile time is paid once per process at the first decode of each kind
    (the benchmark counts it as warm-up)."""
    import torch._dynamo
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, COMPILED_GRAPH_LIMIT)
    return torch.compile(step_logits, dynamic=True)


COMPILED_GRAPH_LIMIT = 64   # graphs per process before torch.compile falls back to eager steps


def compiled_graph_count() -> int:
    """Graphs torch.compile has built in this process so far (the benchmark reports them)."""
    from torch._dynamo.utils import counters
    return int(counters["stats"]["unique_graphs"])


def run_step(model: Transformer, state: DecodeState, t: int, sp: StepPlan, sampling: SamplingConfig,
             guided: bool, with_probability: bool = False, compiled: bool = False):
    """One step: feed the previous step's tokens, sample this step's targets into the grid.
    No host synchronisation, so a GPU can run ahead (and a CUDA graph can capture it).
    compiled: run `step_logits` through torch.compile (`compiled_step_logits`).
    Returns (tokens, logits), and the sampled tokens' probabilities third with `with_probability`."""
    if t == 0:
        x = model.embed_condition(state.condition)[0]
    else:
        x = model.embed_tokens(state.grid[:, sp.token_src].repeat(state.rows // state.batch, 1))
    trunk = compiled_step_logits() if compiled else step_logits
    logits = trunk(model, x, sp, step_mask(state, t, sp), state.caches, state.batch,
                   sampling.cfg_scale if guided else None)
    if t == 0:   # from the seeds of this decode (a reused state gets new ones)
        state.noise = noise_table(state.seeds, state.grid.shape[1], logits.shape[-1])
    drawn = sample(logits, state.seeds, sp.targets, sampling.temperature, sampling.top_k, sampling.top_p,
                   with_probability=with_probability, table=state.noise)
    tokens = drawn[0] if with_probability else drawn
    state.grid[:, sp.targets] = tokens
    return (tokens, logits, drawn[1]) if with_probability else (tokens, logits)


@torch.inference_mode()
def decode_steps(model: Transformer, schedule: Schedule, condition: Condition | torch.Tensor,
                 sampling: SamplingConfig = SamplingConfig(), *, sync: bool = True,
                 record_logits: bool = False, record_confidence: bool = False,
                 compiled: bool = False) -> Iterator[StepRecord]:
    """Decode a batch of images (or clips) step by step, yielding a StepRecord after every step.

    `condition` is a tensor of class ids, a ClassCondition or a TextCondition (nar/conditions.py).

    sync=True waits for the device at each step so `elapsed` is the true decoding time (what a
    UI shows); a benchmark that only needs the end result passes sync=False. Time the caller
    spends between steps (drawing frames) is not counted in `elapsed`. record_confidence fills
    StepRecord.confidence with the probability of every sampled token. compiled runs each step's
    trunk and heads through torch.compile (`compiled_step_logits`; the first decode compiles).
    """
    condition = check_request(model, schedule, condition, sampling)
    device = model.tok_embeddings.weight.device
    plan = plan_for(model, schedule)
    state = new_state(model, plan, condition, sampling)
    guided, busy = guidance(plan, sampling), 0.0
    budget = decode_threads() if device.type == "cpu" else None   # CPU threads: nar/threads.py
    for t, sp in enumerate(plan.steps):
        started = time.perf_counter()
        with running_on(budget and threads_for_rows(budget, state.rows * len(sp.slots))):
            out = run_step(model, state, t, sp, sampling, guided[t], with_probability=record_confidence,
                           compiled=compiled)
        tokens, logits = out[0], out[1]
        if sync:
            wait_for_stream(device)  # this request's stream only, not the whole device
        busy += time.perf_counter() - started
        yield StepRecord(step=t, num_steps=len(plan.steps), positions=sp.targets, tokens=tokens,
                         grid=state.grid, elapsed=busy,
                         logits=logits if record_logits else None,
                         confidence=out[2] if record_confidence else None)


def generate(model: Transformer, schedule: Schedule, condition: Condition | torch.Tensor,
             sampling: SamplingConfig = SamplingConfig(), compiled: bool = False) -> torch.Tensor:
    """Decode to the end; returns the token grids [B, n, n] (clips: [B, T, n, n])."""
    record = None
    for record in decode_steps(model, schedule, condition, sampling, sync=False, compiled=compiled):
        pass
    return record.grid.view(-1, *token_grid_shape(schedule))


def token_grid_shape(schedule: Schedule) -> tuple[int, ...]:
    """(n, n) for images, (T, n, n) for clips: how a decoded grid is shaped."""
    return schedule.shape if schedule.frames > 1 else schedule.shape[1:]
