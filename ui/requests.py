"""What a visitor sends, parsed and validated once: every bad field is named in one ValueError,
and what comes out (a GenerateRequest holding a SamplingConfig, FineTuneOptions, a batch list) is
frozen and never changed afterwards.

The Gradio inputs (ui/inputs.py) only check that a number is a number; the ranges are checked
here, by the library's own validators (SamplingConfig.validate, FineTuneOptions.validate).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from nar.classes import ClassPicker, is_imagenet
from nar.conditions import ClassCondition, TextCondition
from nar.config import SamplingConfig
from nar.finetune import FineTuneOptions
from nar.names import quoted
from nar.pipeline import Studio
from nar.schedules import ORDERS

MAX_IMAGES = 16
MAX_FRAME_SECONDS = 2.0
MAX_NAME_CHARS = 200            # a class name, a Hub repo id or file name as typed (longer is refused)
MAX_MEASURE_BATCH = 64
MAX_MEASURE_ROUNDS = 20
MAX_GRID = 64


def as_float(name: str, value, problems: list[str], whole: bool = False):
    """`value` as a finite float (an int when `whole`), or None with the problem appended."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        problems.append(f"{name} must be a number, got {value!r}")
        return None
    if not math.isfinite(f) or (whole and f != int(f)):
        problems.append(f"{name} must be a {'whole' if whole else 'finite'} number, got {value!r}")
        return None
    return int(f) if whole else f


def as_int(name: str, value, problems: list[str]) -> Optional[int]:
    return as_float(name, value, problems, whole=True)


def in_range(name: str, value, lo, hi, problems: list[str], convert=as_int, unit: str = ""):
    parsed = convert(name, value, problems)
    if parsed is not None and not lo <= parsed <= hi:
        problems.append(f"{name} must be in [{lo}, {hi}]{unit}, got {value}")
        return None
    return parsed


def raise_if(problems: list[str]) -> None:
    if problems:
        raise ValueError("; ".join(problems))


def frame_seconds(value) -> float:
    """The playback delay: at least this many seconds between shown frames."""
    problems: list[str] = []
    seconds = in_range("seconds per frame", 0.0 if value is None else value, 0, MAX_FRAME_SECONDS, problems,
                       as_float)
    raise_if(problems)
    return float(seconds)


@dataclass(frozen=True)
class GenerateRequest:
    """A checked decode request: the condition for each order it is decoded in, the sampling.
    `class_name` is what the visitor asked for: a class name or id, or a text model's prompt."""
    class_name: str | int
    num_images: int
    order: str
    window: int
    sampling: SamplingConfig
    conditions: dict = field(default_factory=dict)     # order -> Condition of num_images rows

    @property
    def is_text(self) -> bool:
        return any(isinstance(c, TextCondition) for c in self.conditions.values())


def parse_request(studio: Studio, orders: Sequence[str], class_name=0, num_images=1, window=8,
                  cfg_scale=4.0, cfg_interval=-1, temperature=1.0, top_k=2000, top_p=1.0,
                  seed=0, grid_size: Optional[int] = None, max_images: int = MAX_IMAGES,
                  count_name: str = "number of images") -> GenerateRequest:
    """Validate a request for the given orders (the first is the request's order). Raises
    ValueError naming every problem. `studio` is a Studio or a VideoStudio (then `grid_size` is
    its frames' side, `max_images` and `count_name` are about clips)."""
    problems: list[str] = []
    for order in orders:
        if order not in ORDERS:
            problems.append(f"unknown order {order!r}; choose from {', '.join(ORDERS)}")
    num = in_range(count_name, num_images, 1, max_images, problems)
    n = int(grid_size or studio.vq.cfg.grid_size)
    if "zipar" in orders:
        w = as_int("ZipAR window", window, problems)
        if w is not None and not 1 <= w <= n:
            problems.append(f"ZipAR window must be in [1, {n}] for a {n}x{n} grid, got {w}")
    else:
        w = min(8, n)   # unused by the other orders
    values = {}
    for name, raw, conv in (("cfg_scale", cfg_scale, as_float), ("cfg_interval", cfg_interval, as_int),
                            ("temperature", temperature, as_float), ("top_k", top_k, as_int),
                            ("top_p", top_p, as_float), ("seed", seed, as_int)):
        values[name] = conv(name.replace("_", " ").replace("cfg", "CFG"), raw, problems)
    sampling = None
    if None not in values.values():
        try:
            sampling = SamplingConfig(**values).validate()
        except ValueError as e:
            problems.append(str(e))
    known = [o for o in orders if o in ORDERS]
    if known and studio.is_text:
        conditions = prompt_conditions(studio, known, class_name, num or 1, problems)
    else:
        conditions = {o: ClassCondition(ids) for o, ids in class_ids(studio, known, class_name, num or 1, problems).items()}
    raise_if(problems)
    return GenerateRequest(class_name, num, orders[0], w, sampling, conditions)


def prompt_conditions(studio: Studio, orders: Sequence[str], prompt, count: int,
                      problems: list[str]) -> dict[str, TextCondition]:
    """The text condition of `prompt` for each order's text model, `count` times."""
    if not isinstance(prompt, str) or not prompt.strip():
        problems.append("type a prompt, e.g. 'cat face'")
        return {}
    if len(prompt) > MAX_NAME_CHARS:
        problems.append(f"the prompt is {len(prompt)} characters; prompts are far shorter (see the hint)")
        return {}
    conditions = {}
    for order in orders:
        try:
            conditions[order] = studio.condition(order, [prompt.strip()] * count)
        except ValueError as e:
            if str(e) not in problems:
                problems.append(str(e))
    return conditions


def class_ids(studio: Studio, orders: Sequence[str], class_name, count: int,
              problems: list[str]) -> dict[str, torch.Tensor]:
    """The ids of `class_name` in the model of each order, `count` times."""
    if class_name is None or str(class_name).strip() == "":
        problems.append("pick a class")
    elif not isinstance(class_name, (str, int)) or isinstance(class_name, bool):
        problems.append(f"the class must be a name or a class id, got {quoted(class_name)}")
    elif len(str(class_name)) > MAX_NAME_CHARS:
        problems.append(f"unknown class {quoted(class_name)}: class names are at most {MAX_NAME_CHARS} characters")
    else:
        ids, lacking = {}, []
        for order in orders:
            try:
                ids[order] = order_class_ids(studio, order, class_name, count)
            except ValueError as e:
                lacking.append((order, str(e)))
        unknown = [(o, m) for o, m in lacking if m.startswith("unknown class")]
        if unknown and ids:   # some model knows the class: say which one lacks it, before decoding
            lacking = [(o, m) for o, m in lacking if (o, m) not in unknown]
            kinds = sorted({"NAR" if o == "nar" else "raster" for o, _ in unknown})
            uses = {"NAR": "the NAR order", "raster": "the raster and ZipAR orders"}
            problems.append(" and ".join(f"the {k} model ({uses[k]})" for k in kinds) +
                            f" does not know class {quoted(class_name)}; pick a class every model of these "
                            f"orders knows")
        for _, message in lacking:
            if message not in problems:
                problems.append(message)
        return ids
    return {}


def order_class_ids(studio: Studio, order: str, class_name, count: int) -> torch.Tensor:
    """`count` copies of the id of `class_name` in the model of `order`. ImageNet models also take
    what ClassPicker finds ("207", "207 golden retriever", "golden retriever", "tabby cat")."""
    names = studio.model_for(order).class_names
    if is_imagenet(names):
        return torch.full((count,), ClassPicker(names).lookup(class_name), dtype=torch.long)
    return studio.class_ids(order, [class_name] * count)


@dataclass(frozen=True)
class MeasureRequest:
    batches: tuple[int, ...]
    window: int
    rounds: int


def parse_measure(batches, window, rounds, grid_size: int) -> MeasureRequest:
    problems: list[str] = []
    parsed = sorted({b for b in (as_int("batch size", x, problems) for x in batches or []) if b})
    if not parsed:
        problems.append("pick at least one batch size")
    elif parsed[0] < 1 or parsed[-1] > MAX_MEASURE_BATCH:
        problems.append(f"batch sizes must be in [1, {MAX_MEASURE_BATCH}]")
    r = in_range("rounds", rounds, 1, MAX_MEASURE_ROUNDS, problems)
    w = as_int("ZipAR window", window, problems)
    if w is not None and not 1 <= w <= grid_size:
        problems.append(f"ZipAR window must be in [1, {grid_size}]")
    raise_if(problems)
    return MeasureRequest(tuple(parsed), w, r)


def parse_grid(value, default: int) -> int:
    """The token grid an official checkpoint is read with (its files do not store it)."""
    if value in (None, "", 0):
        return default
    problems: list[str] = []
    grid = in_range("token grid", value, 1, MAX_GRID, problems)
    raise_if(problems)
    return grid


def parse_options(steps, lr, batch_size, layers, preview_every, seed=0, blocks: int = 0) -> FineTuneOptions:
    """Fine-tuning options; the ranges are FineTuneOptions.validate's, every bad field named once."""
    problems: list[str] = []
    values = {"steps": as_int("steps", steps, problems), "lr": as_float("learning rate", lr, problems),
              "batch_size": as_int("batch size", batch_size, problems),
              "preview_every": as_int("preview interval", preview_every, problems),
              "seed": as_int("seed", seed, problems)}
    layers = str(layers or "all").strip()
    if layers.startswith("last:") and blocks:
        try:
            k = int(layers.split(":", 1)[1])
            if not 1 <= k <= blocks:
                problems.append(f"the model has {blocks} blocks; train the last 1 to {blocks}, not {k}")
        except ValueError:
            pass  # FineTuneOptions.validate names it
    raise_if(problems)
    return FineTuneOptions(train_layers=layers, **values).validate()
