"""Train the VQ tokenizer on an image folder written by `nar.data`.

    python -m nar.vq_train --data data/emoji --run-dir runs/vq --steps 2000 \
        --out checkpoints/vq.safetensors

Loss: L1 + L2 reconstruction (no perceptual network: it would need pretrained weights) plus the
VQ codebook / commitment (/ entropy) terms. Every `--ckpt-every` steps the run directory gets a
weights file and a training-state file (optimizer, step, RNG, code statistics), each written
atomically and stamped with the step, so a run killed at any moment resumes from the newest
complete pair. Batches and augmentations are drawn from generators seeded by (seed, step), so
a resumed run sees exactly the data the uninterrupted one would have.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F

from .checkpoint import atomic_write, read_safetensors, save_checkpoint
from .config import VQConfig
from .images import load_split, to_tensor
from .vq import VQModel


def small_vq_config() -> VQConfig:
    """The CPU-sized tokenizer: 64 px -> 16 x 16 tokens, 1024 l2-normalised codes of dim 8."""
    return VQConfig(codebook_size=1024, codebook_embed_dim=8, encoder_ch_mult=[1, 2, 2],
                    decoder_ch_mult=[1, 2, 2], z_channels=64, base_channels=32,
                    num_res_blocks=1, image_size=64)


@dataclass
class VQTrainConfig:
    data: str = "data/emoji"
    run_dir: str = "runs/vq"
    out: str = ""                   # final tokenizer; default <run_dir>/vq_final.safetensors
    recon_png: str = ""             # optional test-image / reconstruction comparison
    vq: VQConfig = field(default_factory=small_vq_config)
    steps: int = 2000
    batch_size: int = 16
    lr: float = 4e-4
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05      # cosine decay ends at lr * min_lr_ratio
    betas: tuple[float, float] = (0.9, 0.95)
    l1_weight: float = 1.0
    l2_weight: float = 1.0
    flip: bool = True               # random horizontal flip
    max_shift: int = 2              # random translation, pixels (edges replicated)
    # Codebook restart: every `restart_every` steps the codes no batch picked since the last
    # check are moved onto random encoder outputs of the current batch, so they get used.
    # Stops after `restart_until` of the run so the codebook settles before the end.
    restart_every: int = 50         # 0 disables
    restart_until: float = 0.8
    log_every: int = 20
    eval_every: int = 250           # PSNR on a fixed test subset
    ckpt_every: int = 100
    keep_checkpoints: int = 2
    seed: int = 0
    threads: int = 2
    resume: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------
# Data


def step_generator(seed: int, step: int, stream: int) -> torch.Generator:
    """A generator determined by (seed, step, stream): nothing to carry across a resume."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step * 16 + stream)


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """Indices of the step's batch: consecutive slices of one seeded permutation per epoch."""
    pos = torch.arange(step * batch_size, (step + 1) * batch_size)
    epochs, offsets = pos // n, pos % n
    perms = {int(e): torch.randperm(n, generator=step_generator(seed, -1 - int(e), 0))
             for e in epochs.unique()}
    return torch.stack([perms[int(e)][o] for e, o in zip(epochs, offsets)])


def augment(x: torch.Tensor, cfg: VQTrainConfig, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and translations by up to `max_shift` pixels."""
    if cfg.flip:
        flip = torch.rand(len(x), generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    s = cfg.max_shift
    if s > 0:
        h, w = x.shape[-2:]
        padded = F.pad(x, (s, s, s, s), mode="replicate")
        dy, dx = torch.randint(0, 2 * s + 1, (2, len(x)), generator=gen).tolist()
        x = torch.stack([p[:, i:i + h, j:j + w] for p, i, j in zip(padded, dy, dx)])
    return x


# ---------------------------------------------------------------------------------------------
# Optimisation


def lr_at(step: int, cfg: VQTrainConfig) -> float:
    """Linear warm-up, then cosine decay to lr * min_lr_ratio."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def psnr(recon: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1], measured on the [0, 1] scale."""
    mse = ((recon.clamp(-1, 1) - target) / 2).pow(2).mean().item()
    return 10 * math.log10(1.0 / max(mse, 1e-10))


@torch.no_grad()
def restart_dead_codes(model: VQModel, opt: torch.optim.Optimizer, counts: torch.Tensor,
                       latents: torch.Tensor, gen: torch.Generator) -> int:
    """Point every code with counts == 0 at a random encoder output (plus a little noise) and
    clear its Adam moments, so stale momentum does not drag it back. Returns how many moved."""
    dead = (counts == 0).nonzero().squeeze(1)
    if len(dead) == 0:
        return 0
    weight = model.quantize.embedding.weight
    picks = torch.randint(0, len(latents), (len(dead),), generator=gen)
    noise = 0.01 * torch.randn(len(dead), weight.shape[1], generator=gen)
    new = latents[picks] + noise
    if model.cfg.codebook_l2_norm:
        new = F.normalize(new, dim=-1)
    weight[dead] = new
    for moment in opt.state.get(weight, {}).values():
        if torch.is_tensor(moment) and moment.shape == weight.shape:
            moment[dead] = 0
    return len(dead)


# ---------------------------------------------------------------------------------------------
# Checkpoints


def _weights_path(run_dir: Path, step: int) -> Path:
    return run_dir / f"vq_{step:07d}.safetensors"


def _state_path(run_dir: Path, step: int) -> Path:
    return run_dir / f"state_{step:07d}.pt"


def complete_steps(run_dir: Path) -> list[int]:
    """Steps with both a weights and a state file, oldest first."""
    steps = [int(p.stem.split("_")[1]) for p in run_dir.glob("vq_*.safetensors")]
    return sorted(s for s in steps if _state_path(run_dir, s).is_file())


def save_training(run_dir: Path, step: int, model: VQModel, opt: torch.optim.Optimizer,
                  cfg: VQTrainConfig, counts: torch.Tensor, elapsed: float) -> None:
    save_checkpoint(_weights_path(run_dir, step), "vq", model.state_dict(), model.cfg.to_dict(),
                    extra={"step": step, "train_config": cfg.to_dict()})
    state = {"step": step, "optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state(),
             "code_counts": counts, "elapsed_s": elapsed}
    atomic_write(_state_path(run_dir, step), lambda tmp: torch.save(state, tmp))
    for old in complete_steps(run_dir)[:-cfg.keep_checkpoints]:
        _state_path(run_dir, old).unlink(missing_ok=True)
        _weights_path(run_dir, old).unlink(missing_ok=True)


def load_training(run_dir: Path, step: int, opt_factory) -> tuple[VQModel, torch.optim.Optimizer, dict]:
    ckpt = read_safetensors(_weights_path(run_dir, step))
    model = VQModel(VQConfig.from_dict(ckpt.config))
    model.load_state_dict(ckpt.state_dict)
    state = torch.load(_state_path(run_dir, step), map_location="cpu", weights_only=True)
    opt = opt_factory(model)
    opt.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    return model, opt, state


# ---------------------------------------------------------------------------------------------
# Evaluation and pictures


@torch.no_grad()
def evaluate(model: VQModel, images: torch.Tensor, batch_size: int = 128) -> dict[str, float]:
    """PSNR, share of the codebook used and code perplexity over `images` ([-1, 1])."""
    was_training = model.training
    model.eval()
    sq_err, counts = 0.0, torch.zeros(model.cfg.codebook_size)
    for chunk in images.split(batch_size):
        codes = model.encode(chunk)
        recon = model.decode(codes)
        sq_err += ((recon - chunk) / 2).pow(2).sum().item()
        counts += torch.bincount(codes.flatten(), minlength=len(counts)).float()
    model.train(was_training)
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum().item()
    mse = sq_err / images.numel()
    return {"psnr": 10 * math.log10(1.0 / max(mse, 1e-10)),
            "usage": (counts > 0).float().mean().item(), "perplexity": math.exp(entropy)}


@torch.no_grad()
def save_recon_png(model: VQModel, images: torch.Tensor, path: str | Path, pairs_per_row: int = 4,
                   scale: int = 2) -> Path:
    """A grid of (original | reconstruction) pairs, upscaled `scale` x with nearest neighbours."""
    from PIL import Image

    model.eval()
    recon = model.decode(model.encode(images))
    pairs = torch.cat([images, recon], dim=3)                       # [N, 3, H, 2W]
    rows = [torch.cat(list(pairs[i:i + pairs_per_row]), dim=2)
            for i in range(0, len(pairs), pairs_per_row)]
    rows[-1] = F.pad(rows[-1], (0, rows[0].shape[2] - rows[-1].shape[2]), value=1.0)
    grid = torch.cat(rows, dim=1)
    grid = F.interpolate(grid[None], scale_factor=scale, mode="nearest")[0]
    pixels = ((grid + 1) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
    return atomic_write(path, lambda tmp: Image.fromarray(pixels).save(tmp, format="PNG"))


# ---------------------------------------------------------------------------------------------
# Training


def _log(message: str) -> None:
    print(f"[vq] {message}", flush=True)


def _fmt_time(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _make_optimizer(cfg: VQTrainConfig):
    return lambda model: torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=cfg.betas)


def _start(cfg: VQTrainConfig, run_dir: Path, image_size: int):
    """Model, optimizer, first step, code counts and elapsed time: resumed or fresh."""
    done = complete_steps(run_dir)
    if done and not cfg.resume:
        raise FileExistsError(f"{run_dir} already holds checkpoints; resume, or use another run dir")
    if done:
        model, opt, state = load_training(run_dir, done[-1], _make_optimizer(cfg))
        if model.cfg != cfg.vq:
            _log("note: model settings are taken from the checkpoint, not the command line")
        _log(f"resumed from step {state['step']} in {run_dir}")
        return model, opt, state["step"], state["code_counts"], state["elapsed_s"]
    vq_cfg = dataclasses.replace(cfg.vq, image_size=image_size)
    torch.manual_seed(cfg.seed)
    model = VQModel(vq_cfg)
    return model, _make_optimizer(cfg)(model), 0, torch.zeros(vq_cfg.codebook_size), 0.0


def train_step(model: VQModel, opt: torch.optim.Optimizer, x: torch.Tensor, cfg: VQTrainConfig,
               lr: float):
    for group in opt.param_groups:
        group["lr"] = lr
    recon, vq = model(x)
    rec_loss = cfg.l1_weight * (recon - x).abs().mean() + cfg.l2_weight * (recon - x).pow(2).mean()
    loss = rec_loss + vq.total
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return recon.detach(), loss.item(), rec_loss.item(), vq


def train_vq(cfg: VQTrainConfig) -> Path:
    """Train (or resume) a tokenizer; writes the final safetensors and returns its path."""
    torch.set_num_threads(cfg.threads)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    train_images = load_split(cfg.data, "train").images  # uint8 NHWC, converted per batch
    test_images = to_tensor(load_split(cfg.data, "test").images)
    n_train, image_size = len(train_images), train_images.shape[1]
    eval_picks = torch.randperm(len(test_images), generator=step_generator(cfg.seed, -1, 1))[:256]
    eval_subset = test_images[eval_picks]

    model, opt, step, counts, elapsed = _start(cfg, run_dir, image_size)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    _log(f"{n_train} train / {len(test_images)} test images of {image_size} px; "
         f"{n_params / 1e6:.2f}M parameters; tokens {model.cfg.grid_size}x{model.cfg.grid_size}; "
         f"codebook {model.cfg.codebook_size}x{model.cfg.codebook_embed_dim}; steps {step}->{cfg.steps}")

    window_start, window_steps = time.monotonic(), 0
    sec_per_step = None
    while step < cfg.steps:
        step_start = time.monotonic()
        idx = batch_indices(n_train, cfg.batch_size, step, cfg.seed)
        x = augment(to_tensor(train_images[idx.numpy()]), cfg, step_generator(cfg.seed, step, 1))
        recon, loss, rec_loss, vq = train_step(model, opt, x, cfg, lr_at(step, cfg))
        counts += torch.bincount(vq.indices, minlength=len(counts)).float()
        step += 1
        window_steps += 1

        restarted = 0
        if cfg.restart_every and step % cfg.restart_every == 0:
            if step <= cfg.restart_until * cfg.steps:
                restarted = restart_dead_codes(model, opt, counts, vq.latents,
                                               step_generator(cfg.seed, step, 2))
            counts.zero_()

        if step % cfg.log_every == 0 or step == cfg.steps:
            now = time.monotonic()
            measured = (now - window_start) / window_steps
            sec_per_step = measured if sec_per_step is None else 0.7 * sec_per_step + 0.3 * measured
            window_start, window_steps = now, 0
            _log(f"step {step}/{cfg.steps} loss {loss:.4f} rec {rec_loss:.4f} "
                 f"vq {vq.codebook.item():.4f}+{vq.commitment.item():.4f} psnr {psnr(recon, x):.2f} "
                 f"usage {vq.usage:.1%} lr {lr_at(step - 1, cfg):.2e} {sec_per_step:.2f} s/step "
                 f"ETA {_fmt_time(sec_per_step * (cfg.steps - step))}"
                 + (f" restarted {restarted} codes" if restarted else ""))
        if cfg.eval_every and step % cfg.eval_every == 0:
            m = evaluate(model, eval_subset)
            _log(f"eval step {step}: test-subset psnr {m['psnr']:.2f} usage {m['usage']:.1%} "
                 f"perplexity {m['perplexity']:.0f}")
        elapsed += time.monotonic() - step_start
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            save_training(run_dir, step, model, opt, cfg, counts, elapsed)

    return _finish(cfg, run_dir, model, test_images, step, elapsed)


def _finish(cfg: VQTrainConfig, run_dir: Path, model: VQModel, test_images: torch.Tensor,
            step: int, elapsed: float) -> Path:
    metrics = evaluate(model, test_images)
    _log(f"test: psnr {metrics['psnr']:.2f} dB, codebook usage {metrics['usage']:.1%} "
         f"(perplexity {metrics['perplexity']:.0f}) after {step} steps, {_fmt_time(elapsed)} training")
    out = Path(cfg.out) if cfg.out else run_dir / "vq_final.safetensors"
    save_checkpoint(out, "vq", model.state_dict(), model.cfg.to_dict(), extra={
        "step": step, "test_psnr": round(metrics["psnr"], 3),
        "test_codebook_usage": round(metrics["usage"], 4),
        "test_code_perplexity": round(metrics["perplexity"], 1),
        "train_seconds": round(elapsed), "data": cfg.data, "train_config": cfg.to_dict()})
    _log(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    if cfg.recon_png:
        picks = torch.randperm(len(test_images), generator=step_generator(cfg.seed, -1, 3))[:16]
        _log(f"wrote {save_recon_png(model, test_images[picks], cfg.recon_png)}")
    return out


# ---------------------------------------------------------------------------------------------
# Command line


def _int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def parse_args(argv: Optional[Sequence[str]] = None) -> VQTrainConfig:
    d, v = VQTrainConfig(), small_vq_config()
    p = argparse.ArgumentParser(prog="python -m nar.vq_train", description="Train the VQ tokenizer.")
    p.add_argument("--data", default=d.data, help="directory written by `python -m nar.data prepare`")
    p.add_argument("--run-dir", default=d.run_dir, help="checkpoints and training state go here")
    p.add_argument("--out", default=d.out, help="final tokenizer (.safetensors)")
    p.add_argument("--recon-png", default=d.recon_png, help="write test images vs reconstructions")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    p.add_argument("--max-shift", type=int, default=d.max_shift)
    p.add_argument("--no-flip", dest="flip", action="store_false")
    p.add_argument("--restart-every", type=int, default=d.restart_every)
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--eval-every", type=int, default=d.eval_every)
    p.add_argument("--ckpt-every", type=int, default=d.ckpt_every)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=d.resume,
                   help="continue from the newest checkpoint in --run-dir (default on)")
    p.add_argument("--codebook-size", type=int, default=v.codebook_size)
    p.add_argument("--codebook-dim", type=int, default=v.codebook_embed_dim)
    p.add_argument("--ch-mult", type=_int_list, default=v.encoder_ch_mult, help="e.g. 1,2,2")
    p.add_argument("--base-channels", type=int, default=v.base_channels)
    p.add_argument("--z-channels", type=int, default=v.z_channels)
    p.add_argument("--num-res-blocks", type=int, default=v.num_res_blocks)
    p.add_argument("--entropy-loss-ratio", type=float, default=v.entropy_loss_ratio)
    a = p.parse_args(argv)
    vq = dataclasses.replace(v, codebook_size=a.codebook_size, codebook_embed_dim=a.codebook_dim,
                             encoder_ch_mult=a.ch_mult, decoder_ch_mult=list(a.ch_mult),
                             base_channels=a.base_channels, z_channels=a.z_channels,
                             num_res_blocks=a.num_res_blocks, entropy_loss_ratio=a.entropy_loss_ratio)
    return dataclasses.replace(
        d, data=a.data, run_dir=a.run_dir, out=a.out, recon_png=a.recon_png, vq=vq, steps=a.steps,
        batch_size=a.batch_size, lr=a.lr, warmup_steps=a.warmup_steps, max_shift=a.max_shift,
        flip=a.flip, restart_every=a.restart_every, log_every=a.log_every,
        eval_every=a.eval_every, ckpt_every=a.ckpt_every, seed=a.seed, threads=a.threads,
        resume=a.resume)


def main(argv: Optional[Sequence[str]] = None) -> Path:
    return train_vq(parse_args(argv))


if __name__ == "__main__":
    main()
