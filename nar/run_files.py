"""A training run's files: `last.safetensors` (weights, AdamW moments, step and config in one
file, written atomically, so a kill at any moment leaves a usable checkpoint), the best weights,
and `metrics.jsonl` made consistent with the checkpoint a resumed run starts from."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import torch

from .checkpoint import atomic_write, read_checkpoint, save_checkpoint
from .loading import from_checkpoint
from .model import Transformer


@dataclasses.dataclass
class TrainState:
    step: int = 0
    best_val: float = float("inf")
    history: list = dataclasses.field(default_factory=list)


OPTIM_PREFIX = "optim."


def save_run_checkpoint(path: Path, model: Transformer, optimizer: torch.optim.Optimizer,
                        class_names: list[str], state: TrainState, cfg) -> Path:
    tensors = dict(model.state_dict())
    name_of = {id(p): n for n, p in model.named_parameters()}
    for param, st in optimizer.state.items():
        for key, value in st.items():
            tensors[f"{OPTIM_PREFIX}{name_of[id(param)]}.{key}"] = value.reshape(-1) if key == "step" else value
    extra = {"class_names": class_names, "step": state.step, "best_val": state.best_val,
             "train_config": dataclasses.asdict(cfg)}
    return save_checkpoint(path, model.config.kind, tensors, model.config.to_dict(), extra)


def save_weights(path: Path, model: Transformer, class_names: list[str], state: TrainState,
                 cfg) -> Path:
    extra = {"class_names": class_names, "step": state.step, "val_loss": state.best_val,
             "train_config": dataclasses.asdict(cfg)}
    return save_checkpoint(path, model.config.kind, model.state_dict(), model.config.to_dict(), extra)


def split_run_checkpoint(path: Path):
    """(model checkpoint, optimiser tensors by parameter name) of a run's last.safetensors."""
    ckpt = read_checkpoint(path)
    optim = {k[len(OPTIM_PREFIX):]: v for k, v in ckpt.state_dict.items() if k.startswith(OPTIM_PREFIX)}
    ckpt.state_dict = {k: v for k, v in ckpt.state_dict.items() if not k.startswith(OPTIM_PREFIX)}
    return ckpt, optim


def load_run_checkpoint(path: Path, device: torch.device) -> tuple[Transformer, dict, list[str], TrainState]:
    """Model, optimiser state by parameter name, class names and progress of a run."""
    ckpt, optim = split_run_checkpoint(path)
    loaded = from_checkpoint(ckpt, device=device, dtype=torch.float32)
    state = TrainState(step=int(ckpt.extra.get("step", 0)), best_val=float(ckpt.extra.get("best_val", math.inf)))
    return loaded.model, optim, loaded.class_names, state


def restore_optimizer(optimizer: torch.optim.Optimizer, model: Transformer, saved: dict) -> None:
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        st = {key: saved[f"{name}.{key}"] for key in ("exp_avg", "exp_avg_sq", "step") if f"{name}.{key}" in saved}
        if st:
            st["step"] = st["step"].reshape(())
            optimizer.state[param] = {k: v.to(param.device) if k != "step" else v for k, v in st.items()}


def read_metrics(run_dir: Path) -> list[dict]:
    """The records of a run's metrics.jsonl, oldest first; a line that is not a JSON object (one a
    kill cut short) is skipped; no file, no records."""
    path = Path(run_dir) / "metrics.jsonl"
    records = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


def trim_metrics(path: Path, step: int) -> None:
    """Before a resumed run appends to metrics.jsonl: drop what the stopped run logged after its
    last checkpoint (those steps run again) and a last line a kill cut short."""
    if not path.is_file():
        return
    text = path.read_text()
    keep = []
    for line in text.splitlines(keepends=True):
        try:
            record = json.loads(line)
            complete = line.endswith("\n") and int(record["step"]) <= step
        except (ValueError, KeyError, TypeError):
            complete = False
        if complete:
            keep.append(line)
    if "".join(keep) != text:
        atomic_write(path, lambda tmp: Path(tmp).write_text("".join(keep)))
