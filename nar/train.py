"""Training of the class-conditional transformers (NAR and raster) on VQ tokens.

    python -m nar.train nar --data data/emoji --vq checkpoints/vq.safetensors --run-dir runs/nar
    python -m nar.train raster ...          # the same-size raster (LlamaGen) baseline
    python -m nar.train vq ...              # the tokenizer (nar/vq_train.py)
    python -m nar.train judge ...           # the classifier that judges samples (nar/judge.py)
    python -m nar.train nar --video --data data/moving_emoji --init checkpoints/nar.safetensors ...
                                            # a video model on clips (nar/video_train.py)
    python -m nar.train video-judge ...     # the motion classifier (nar/video_judge.py)
    torchrun --nproc_per_node=4 -m nar.train nar ...   # DistributedDataParallel, unchanged

A run directory holds `last.safetensors` (weights, AdamW moments, step, config: one file,
written atomically, so a kill at any moment leaves a usable checkpoint), `best.safetensors`
(lowest held-out loss) and `metrics.jsonl`. Starting again with the same run directory resumes
from `last.safetensors`. Each step's batch and dropout noise are derived from (seed, rank,
step), so a resumed run continues exactly as if it had never stopped.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F

from . import judge, vq_train
from .checkpoint import CheckpointError, atomic_write, remove_stale_temp_files
from .config import model_config
from .images import ImageSet, load_split
from .loading import load
from .model import Transformer
from .run_files import (TrainState, load_run_checkpoint, restore_optimizer, save_run_checkpoint, save_weights,
                        trim_metrics)
from .t2i_train import prepare_text_tokens
from .tokens import TokenSet, tokenize
from .uploads import scan_upload


@dataclass
class TrainConfig:
    kind: str = "nar"                      # nar | raster
    size: str = "GPT-S"                    # a name from config.MODEL_SIZES
    data: str = "data/emoji"               # prepared data set, or a folder of class folders / a zip
    loose_class: str = ""                  # class name for images not in a class folder
    vq: str = "checkpoints/vq.safetensors"
    run_dir: str = "runs/nar"
    out: Optional[str] = None              # copy of the best weights written here at the end
    init: Optional[str] = None             # start from this checkpoint (fine-tuning)
    steps: int = 3000
    batch_size: int = 32
    lr: float = 6e-4
    min_lr_ratio: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.05
    beta2: float = 0.95
    grad_clip: float = 1.0
    dropout: float = 0.1                   # token, residual and FFN dropout
    class_dropout: float = 0.1             # labels dropped to the null class (for CFG)
    flip: bool = True                      # also train on horizontally flipped images
    train_layers: str = "all"              # all | heads | last:K  (K last blocks + heads)
    eval_every: int = 100
    ckpt_every: int = 100
    log_every: int = 10
    seed: int = 0
    threads: int = 0                       # torch CPU threads, 0 = torch's default
    video: bool = False                    # data is a moving emoji set (python -m nar.data moving)
    text: bool = False                     # text-to-image: data is a captioned set (python -m nar.data text)
    text_encoder: str = "checkpoints/text_encoder.safetensors"   # the frozen text encoder (text runs)


class Callbacks:
    """Hooks for a UI: progress reports and a cooperative stop (cancel keeps last.safetensors)."""

    def on_start(self, class_names: list[str]) -> None: ...

    def on_metrics(self, metrics: dict) -> None: ...

    def on_checkpoint(self, path: Path, step: int) -> None: ...

    def should_stop(self) -> bool:
        return False


# -- distributed helpers --------------------------------------------------------------------
def dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed() -> None:
    """Join the process group torchrun describes in the environment, if any."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def default_device() -> torch.device:
    """The GPU when there is one; NAR_TRAIN_DEVICE names another (the app on ZeroGPU trains on the
    CPU: its GPU is lent per request, never to a background thread)."""
    if os.environ.get("NAR_TRAIN_DEVICE"):
        return torch.device(os.environ["NAR_TRAIN_DEVICE"])
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# -- model, optimiser, schedule -------------------------------------------------------------
def build_model(cfg: TrainConfig, vocab_size: int, grid_size: int, class_names: list[str],
                frames: int = 1) -> tuple[Transformer, list[str], torch.Tensor]:
    """A fresh model, or the `init` checkpoint with class-embedding rows added for new classes
    (an image checkpoint for a video run: nar/video_train.py); with its class names and the remap
    of `class_names` indices to its class ids."""
    if cfg.init is None:
        torch.manual_seed(cfg.seed)  # the same config gives the same initial weights
        mcfg = model_config(cfg.size, kind=cfg.kind, vocab_size=vocab_size, grid_size=grid_size,
                            num_classes=len(class_names), token_dropout_p=cfg.dropout,
                            resid_dropout_p=cfg.dropout, ffn_dropout_p=cfg.dropout,
                            class_dropout_prob=cfg.class_dropout, frames=frames)
        return Transformer(mcfg), list(class_names), class_remap(class_names, class_names)
    base = load(cfg.init, device=torch.device("cpu"), dtype=torch.float32)
    if frames > 1 and not base.model.config.is_video:
        from .video_train import video_from_image
        torch.manual_seed(cfg.seed)
        video = video_from_image(base.model, frames, grid_size, class_names)
        return video, list(class_names), class_remap(class_names, class_names)
    return extend_classes(base.model, base.class_names, class_names)


def class_remap(names: list[str], wanted: list[str]) -> torch.Tensor:
    """Index in `wanted` -> class id in a model whose classes are `names`."""
    missing = [n for n in wanted if n not in names]
    if missing:
        raise ValueError(f"the model has no class {', '.join(missing[:5])}")
    return torch.tensor([names.index(n) for n in wanted], dtype=torch.long)


def extend_classes(model: Transformer, old_names: list[str],
                   wanted: list[str]) -> tuple[Transformer, list[str], torch.Tensor]:
    """Model whose classes are old_names + the wanted names it lacks, its class names, and the
    remap of `wanted` indices (data labels) to its class ids. Existing names keep their rows; new
    rows start at the mean class embedding; the null row stays last (for CFG)."""
    new = [n for n in wanted if n not in old_names]
    names = list(old_names) + new
    if not new:
        return model, names, class_remap(names, wanted)
    cfg = dataclasses.replace(model.config, num_classes=len(names))
    grown = Transformer(cfg)
    state = dict(model.state_dict())
    table = state.pop("cls_embedding.embedding_table.weight")
    real, null = table[:-1], table[-1:]
    fresh = real.mean(0, keepdim=True).repeat(len(new), 1)
    state["cls_embedding.embedding_table.weight"] = torch.cat([real, fresh, null])
    grown.load_state_dict(state, strict=True)
    return grown, names, class_remap(names, wanted)


def trainable_parameters(model: Transformer, which: str) -> list[tuple[str, torch.nn.Parameter]]:
    """Parameters to train: all, only the output heads and class embedding, or those plus
    the last K blocks ("last:K")."""
    heads = ("output.", "norm.", "medusa_output.", "medusa_norm.", "cls_embedding.")
    if which == "all":
        keep = lambda name: True  # noqa: E731
    elif which == "heads":
        keep = lambda name: name.startswith(heads)  # noqa: E731
    elif which.startswith("last:"):
        k = int(which.split(":", 1)[1])
        first = len(model.layers) - k
        keep = lambda name: name.startswith(heads) or (  # noqa: E731
            name.startswith("layers.") and int(name.split(".")[1]) >= first)
    else:
        raise ValueError(f"train_layers must be all, heads or last:K, not {which!r}")
    chosen = []
    for name, p in model.named_parameters():
        p.requires_grad_(keep(name))
        if p.requires_grad:
            chosen.append((name, p))
    return chosen


def make_optimizer(params: list[tuple[str, torch.nn.Parameter]], cfg: TrainConfig) -> torch.optim.AdamW:
    decay = [p for _, p in params if p.dim() >= 2]
    no_decay = [p for _, p in params if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=cfg.lr, betas=(0.9, cfg.beta2))


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


# -- the loop -------------------------------------------------------------------------------
def derived_seed(*parts: int) -> int:
    """A seed that is a pure function of integers (Python's str hash differs per process)."""
    value = 0
    for part in parts:
        value = (value * 1_000_003 + int(part)) % (2 ** 61 - 1)
    return value


def batch_indices(n_items: int, batch: int, seed: int, rank: int, step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(derived_seed(seed, rank, step, 1))
    return torch.randint(0, n_items, (batch,), generator=g)


def get_batch(data: TokenSet, idx: torch.Tensor, flip: bool, seed: int, step: int):
    views = data.tokens.shape[0] if flip else 1
    g = torch.Generator().manual_seed(derived_seed(seed, step, 2))
    view = torch.randint(0, views, (idx.shape[0],), generator=g)
    tokens = data.tokens[view, idx].flatten(1)
    return data.labels[idx], tokens


@torch.no_grad()
def evaluate(model: Transformer, data: TokenSet, device: torch.device, batch: int = 64,
             conditioner=None) -> float:
    """Mean held-out cross-entropy (nats/token) over the unflipped test images (text runs: each
    with its fixed held-out caption, `conditioner.fixed`)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(data), batch):
        labels = data.labels[start:start + batch]
        condition = labels if conditioner is None else conditioner.fixed(labels)
        tokens = data.tokens[0, start:start + batch].flatten(1).to(device)
        logits, _ = model(condition.to(device), tokens)
        total += F.cross_entropy(logits.flatten(0, 1), tokens.flatten(), reduction="sum").item()
        count += tokens.numel()
    model.train(was_training)
    return total / max(1, count)


def train_loop(cfg: TrainConfig, train_data: TokenSet, val_data: Optional[TokenSet],
               class_names: list[str], vocab_size: int, grid_size: int,
               callbacks: Optional[Callbacks] = None, conditioner=None) -> Path:
    """Train (or resume) in cfg.run_dir; returns the path of the best weights. The labels of the
    data index `class_names`; they are mapped to the model's class ids (an `init` model keeps its
    classes and gains the new ones). A text run's labels are emoji ids that `conditioner` turns
    into captions' text conditions (nar/t2i_train.py); it has no classes."""
    callbacks = callbacks or Callbacks()
    rank, world = dist_info()
    device = default_device()
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        for tmp in remove_stale_temp_files(run_dir):
            log(f"removed {tmp.name}, a partial write of a killed run")
    last, best = run_dir / "last.safetensors", run_dir / "best.safetensors"
    wanted = list(class_names)
    if last.is_file():
        model, saved_optim, class_names, state = load_run_checkpoint(last, device)
        remap = class_remap(class_names, wanted) if conditioner is None else None
        log(f"resuming {last} at step {state.step}", rank)
        if rank == 0:
            trim_metrics(run_dir / "metrics.jsonl", state.step)
    else:
        frames = train_data.tokens.shape[2] if train_data.tokens.ndim == 5 else 1
        if conditioner is None:
            model, class_names, remap = build_model(cfg, vocab_size, grid_size, wanted, frames)
        else:
            model, class_names, remap = conditioner.build_model(cfg, vocab_size, grid_size), [], None
        model, saved_optim, state = model.to(device), {}, TrainState()
        if rank == 0:   # a run stopped before its first checkpoint starts again from step 0
            trim_metrics(run_dir / "metrics.jsonl", 0)
    if remap is not None:
        train_data = dataclasses.replace(train_data, labels=remap[train_data.labels])
        if val_data is not None:
            val_data = dataclasses.replace(val_data, labels=remap[val_data.labels])
    callbacks.on_start(list(class_names))
    params = trainable_parameters(model, cfg.train_layers)
    optimizer = make_optimizer(params, cfg)
    restore_optimizer(optimizer, model, saved_optim)
    model.train()
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" \
        else torch.autocast("cpu", enabled=False)
    metrics_path = run_dir / "metrics.jsonl"
    per_rank_batch = max(1, cfg.batch_size // world)
    t_last, start_step = time.perf_counter(), state.step
    while state.step < cfg.steps and not callbacks.should_stop():
        step = state.step
        torch.manual_seed(derived_seed(cfg.seed, rank, step, 3))
        idx = batch_indices(len(train_data), per_rank_batch, cfg.seed, rank, step)
        labels, tokens = get_batch(train_data, idx, cfg.flip, cfg.seed + rank, step)
        condition = labels if conditioner is None else conditioner(labels, derived_seed(cfg.seed, rank, step, 4))
        condition, tokens = condition.to(device), tokens.to(device)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        with autocast:
            _, loss = ddp(condition, tokens, targets=tokens)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_([p for _, p in params], cfg.grad_clip)
        optimizer.step()
        state.step += 1
        if rank != 0:
            continue
        record = {"step": state.step, "loss": loss.item(), "lr": lr_at(step, cfg),
                  "grad_norm": float(grad_norm)}
        if state.step % cfg.log_every == 0 or state.step == cfg.steps:
            now = time.perf_counter()
            sec_per_step = (now - t_last) / max(1, state.step - start_step)
            record["sec_per_step"] = sec_per_step
            record["eta_s"] = sec_per_step * (cfg.steps - state.step)
            t_last, start_step = now, state.step
        if val_data is not None and (state.step % cfg.eval_every == 0 or state.step == cfg.steps):
            record["val_loss"] = evaluate(model, val_data, device, conditioner=conditioner)
            if record["val_loss"] < state.best_val:
                state.best_val = record["val_loss"]
                save_weights(best, model, class_names, state, cfg)
        if "sec_per_step" in record or "val_loss" in record:
            log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()), rank)
            with open(metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")
        callbacks.on_metrics(record)
        if state.step % cfg.ckpt_every == 0 or state.step == cfg.steps or callbacks.should_stop():
            save_run_checkpoint(last, model, optimizer, class_names, state, cfg)
            callbacks.on_checkpoint(last, state.step)
    if rank == 0 and (val_data is None or not best.is_file()):
        # no held-out data: the last weights are the result (also after a resumed run)
        save_weights(best, model, class_names, state, cfg)
    if rank == 0 and cfg.out and state.step >= cfg.steps:
        atomic_write(cfg.out, lambda tmp: Path(tmp).write_bytes(best.read_bytes()))
        log(f"wrote {cfg.out}", rank)
    return best


def log(message: str, rank: int = 0) -> None:
    if rank == 0:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- entry points -----------------------------------------------------------------------------
def load_images(cfg: TrainConfig, image_size: int):
    """(train, held-out or None) image sets: a prepared data set (python -m nar.data), or a
    folder of class folders / a zip / image files as the app's training tab accepts them."""
    path = Path(cfg.data)
    if (path / "meta.json").is_file():
        return load_split(path, "train"), load_split(path, "test")
    report = scan_upload([path], size=image_size, loose_class=cfg.loose_class)
    for name, why in report.skipped:
        log(f"skipped {name}: {why}")
    if not len(report.labels):
        raise ValueError(f"no usable images in {path}")
    return ImageSet(report.images, report.labels, report.class_names), None


def prepare_tokens(cfg: TrainConfig, progress=None):
    """Load the tokenizer and the images, and tokenize them (cached in the run directory). A text
    run's third value is its CaptionConditioner (nar/t2i_train.py) instead of class names."""
    vq = load(cfg.vq, expect="vq", device=default_device())
    cache = Path(cfg.run_dir)
    if cfg.text:
        return prepare_text_tokens(cfg, vq, cache)
    if cfg.video:
        from .video_train import HELD_OUT_CLIPS, clip_tokens
        train, class_names = clip_tokens(vq, cfg.vq, cfg.data, "train", cache)
        test, _ = clip_tokens(vq, cfg.vq, cfg.data, "test", cache, limit=HELD_OUT_CLIPS)
        return train, test, class_names, vq.cfg.codebook_size, train.tokens.shape[-1]
    train_images, test_images = load_images(cfg, vq.cfg.image_size)
    train = tokenize(vq, cfg.vq, train_images, cache, progress)
    test = tokenize(vq, cfg.vq, test_images, cache) if test_images is not None else None
    grid = train.tokens.shape[-1]
    return train, test, train_images.class_names, vq.cfg.codebook_size, grid


def train(cfg: TrainConfig, callbacks: Optional[Callbacks] = None) -> Path:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    init_distributed()
    Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)
    # Rank 0 tokenizes and writes the shared token cache while the others wait, then they read
    # it: no two ranks write the same cache, and rank 0's clean-up of a killed run's temporary
    # files (train_loop) can never remove another rank's write in flight.
    rank, world = dist_info()
    if rank > 0:
        dist.barrier()
    train_set, test_set, class_names, vocab, grid = prepare_tokens(cfg)
    if world > 1 and rank == 0:
        dist.barrier()
    conditioner, class_names = (class_names, []) if cfg.text else (None, class_names)
    conditioned_on = "captions" if cfg.text else f"{len(class_names)} classes"
    log(f"{cfg.kind}: {len(train_set)} training {'clips' if cfg.video else 'images'}, "
        f"{len(test_set) if test_set else 0} held out, {conditioned_on}, vocab {vocab}, "
        f"grid {'x'.join(map(str, train_set.tokens.shape[2:]))}", dist_info()[0])
    try:
        return train_loop(cfg, train_set, test_set, class_names, vocab, grid, callbacks, conditioner)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def parse_args(argv: Optional[list[str]] = None) -> TrainConfig:
    parser = argparse.ArgumentParser(prog="python -m nar.train",
                                     description="Train a NAR or raster transformer on VQ tokens.")
    parser.add_argument("kind", choices=["nar", "raster"])
    for f in dataclasses.fields(TrainConfig):
        if f.name == "kind":
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            cast = {"int": int, "float": float}.get(str(f.type), str)
            parser.add_argument(flag, type=cast, default=f.default)
    return TrainConfig(**vars(parser.parse_args(argv)))


def main(argv: Optional[list[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "vq":
        return vq_train.main(argv[1:])
    if argv and argv[0] == "judge":
        return judge.main(argv[1:])
    if argv and argv[0] == "video-judge":
        from .video_judge import main as video_judge_main
        return video_judge_main(argv[1:])
    try:
        train(parse_args(argv))
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
