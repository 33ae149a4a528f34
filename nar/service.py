"""What the app does, without the UI: request validation, streamed decoding with playback pacing,
the side-by-side comparison schedule, files for download, speed measurements and model loading.

app.py only wires these functions to Gradio components; everything here is plain Python and
numpy, so it can be driven (and tested) without a browser.

Timing: the decode time reported everywhere is `StepRecord.elapsed`, which counts only the
decoder's own work. Drawing frames, writing files and the optional playback delay happen
between steps and are never counted.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch

from .checkpoint import (CheckpointError, build_transformer, build_vq, class_names_of, read_checkpoint, resolve,
                         validate_repo_id)
from .bench import Case
from .config import SamplingConfig
from .pipeline import LoadedModel, Studio, pick_dtype
from .render import save_gif, save_mp4, save_png, tile, upscale
from .schedules import ORDERS

ORDER_LABELS = {"raster": "Raster", "zipar": "ZipAR", "nar": "NAR"}
COMPARE_ORDERS = ("raster", "zipar", "nar")
MAX_IMAGES = 16
MAX_FRAME_SECONDS = 2.0
MAX_NAME_CHARS = 200            # a class name, a Hub repo id or file name as typed (longer is refused)
MAX_LOAD_FILES = 3              # a tokenizer, a NAR and a raster model
SEED_MAX = 2 ** 31 - 1          # what the seed button draws from (any seed < 2**63 is accepted)
FRAME_SCALE = 4                 # animation frames are the images upscaled this much

log = logging.getLogger(__name__)


def quoted(value, limit: int = 60) -> str:
    """repr(value) for a message, cut to about `limit` characters: a hostile 1 MB string is not
    echoed back whole."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(str(value)):,} characters)"


# -- ZeroGPU -----------------------------------------------------------------------------------
def gpu(fn: Optional[Callable] = None, *, duration: Optional[int] = None):
    """`spaces.GPU` on Hugging Face ZeroGPU (when the `spaces` package is importable), a no-op
    decorator elsewhere. Use as @gpu or @gpu(duration=120)."""
    try:
        import spaces  # type: ignore
    except ImportError:
        spaces = None
    if spaces is None or not hasattr(spaces, "GPU"):
        return fn if fn is not None else (lambda f: f)
    decorator = spaces.GPU(duration=duration) if duration else spaces.GPU
    return decorator(fn) if fn is not None else decorator


# -- requests ----------------------------------------------------------------------------------
@dataclass
class GenerateRequest:
    """Everything a decode needs; `validate` names every bad field in one message."""
    class_name: str | int = 0
    num_images: int = 1
    order: str = "nar"
    window: int = 8
    cfg_scale: float = 4.0
    cfg_interval: int = -1
    temperature: float = 1.0
    top_k: int = 2000
    top_p: float = 1.0
    seed: int = 0

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(cfg_scale=float(self.cfg_scale), cfg_interval=int(self.cfg_interval),
                              temperature=float(self.temperature), top_k=int(self.top_k),
                              top_p=float(self.top_p), seed=int(self.seed))


def _as_int(name: str, value, problems: list[str]) -> Optional[int]:
    try:
        f = float(value)
    except (TypeError, ValueError):
        problems.append(f"{name} must be a number, got {value!r}")
        return None
    if not math.isfinite(f) or f != int(f):
        problems.append(f"{name} must be a whole number, got {value!r}")
        return None
    return int(f)


def _as_float(name: str, value, problems: list[str]) -> Optional[float]:
    try:
        f = float(value)
    except (TypeError, ValueError):
        problems.append(f"{name} must be a number, got {value!r}")
        return None
    if not math.isfinite(f):
        problems.append(f"{name} must be a finite number, got {value!r}")
        return None
    return f


def check_frame_seconds(value) -> float:
    problems: list[str] = []
    seconds = _as_float("seconds per frame", 0.0 if value is None else value, problems)
    if seconds is not None and not 0.0 <= seconds <= MAX_FRAME_SECONDS:
        problems.append(f"seconds per frame must be in [0, {MAX_FRAME_SECONDS}], got {value}")
    if problems:
        raise ValueError("; ".join(problems))
    return float(seconds)


# -- output files ------------------------------------------------------------------------------
class JobFiles:
    """The app's own output folder: one subfolder per job, old ones removed as new ones start.
    This folder is the only one the app asks Gradio to serve files from."""

    def __init__(self, root: Optional[Path] = None, keep_seconds: float = 3600.0, keep_jobs: int = 200):
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="nar-studio-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep_seconds, self.keep_jobs = keep_seconds, keep_jobs
        self._lock = threading.Lock()

    def new(self, kind: str) -> Path:
        with self._lock:
            self._prune()
            path = self.root / f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}-{uuid.uuid4().hex[:8]}"
            path.mkdir()
            return path

    def _prune(self) -> None:
        jobs = sorted((p for p in self.root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
        now = time.time()
        for i, job in enumerate(jobs):
            if now - job.stat().st_mtime > self.keep_seconds or len(jobs) - i > self.keep_jobs:
                shutil.rmtree(job, ignore_errors=True)


def animation_fps(steps: int) -> float:
    """Frames per second of a saved animation: about 4 s long, 4 to 30 fps."""
    return float(min(30.0, max(4.0, steps / 4.0)))


# -- streamed results --------------------------------------------------------------------------
@dataclass
class GenerateUpdate:
    frame: np.ndarray                 # the batch's frames tiled, undecoded tokens blank, front outlined
    step: int                         # 1-based
    num_steps: int
    elapsed: float                    # decode seconds so far
    caption: str
    done: bool = False
    images: list[Path] = field(default_factory=list)   # final images (PNG, model resolution)
    labels: list[str] = field(default_factory=list)
    gif: Optional[Path] = None
    mp4: Optional[Path] = None
    summary: dict = field(default_factory=dict)


@dataclass
class PanelState:
    order: str
    num_steps: int
    step: int = 0                     # steps done
    elapsed: float = 0.0
    record: object = None
    frame: Optional[np.ndarray] = None
    dirty: bool = True

    @property
    def done(self) -> bool:
        return self.step >= self.num_steps


@dataclass
class CompareUpdate:
    frames: dict                      # order -> frame
    captions: dict                    # order -> caption
    clock: float                      # the shared decode time the panels show
    elapsed: dict = field(default_factory=dict)       # order -> its decode seconds so far
    steps: dict = field(default_factory=dict)         # order -> steps done
    done: bool = False
    rows: list[list] = field(default_factory=list)
    images: dict = field(default_factory=dict)        # order -> final PNG
    gif: Optional[Path] = None


COMPARE_HEADERS = ["Order", "Steps", "Decode time (s)", "Images/s", "Speed-up vs raster"]


def wait_until(last: Optional[float], min_seconds: float) -> float:
    """Sleep so that at least `min_seconds` pass between shown frames; returns the time now."""
    if last is not None and min_seconds > 0:
        left = min_seconds - (time.perf_counter() - last)
        if left > 0:
            time.sleep(left)
    return time.perf_counter()


def step_caption(order: str, step: int, num_steps: int, elapsed: float) -> str:
    if step >= num_steps:
        return f"{ORDER_LABELS.get(order, order)} · done: {num_steps} steps in {elapsed:.2f} s"
    return f"{ORDER_LABELS.get(order, order)} · step {step}/{num_steps} - {elapsed:.2f} s"


# -- running decodes --------------------------------------------------------------------------
@dataclass
class DecodeRun:
    kind: str
    step: int = 0
    num_steps: int = 0


class DecodeTracker:
    """Counts the decodes running now. A decode whose consumer goes away (a cancelled request,
    a client that disconnected: Gradio closes the generator) stops at its next frame; that is
    logged with the step it reached, so an operator can see the work was freed."""

    def __init__(self):
        self._lock = threading.Lock()
        self.running = 0
        self.started = self.finished = self.stopped = self.failed = 0

    @contextlib.contextmanager
    def track(self, kind: str) -> Iterator[DecodeRun]:
        run = DecodeRun(kind)
        with self._lock:
            self.running += 1
            self.started += 1
        outcome = "failed"
        try:
            yield run
            outcome = "finished"
        except GeneratorExit:
            outcome = "stopped"
            raise
        finally:
            with self._lock:
                self.running -= 1
                setattr(self, outcome, getattr(self, outcome) + 1)
                running = self.running
            if outcome == "stopped":
                log.info("%s stopped at step %d/%d: the request was cancelled or its client left; "
                         "decode freed (%d running)", kind, run.step, run.num_steps, running)
            elif outcome == "failed":
                log.warning("%s failed at step %d/%d (%d running)", kind, run.step, run.num_steps, running)

    def snapshot(self) -> dict:
        with self._lock:
            return {"running": self.running, "started": self.started, "finished": self.finished,
                    "stopped": self.stopped, "failed": self.failed}


# -- the service -------------------------------------------------------------------------------
class Service:
    """The app's logic over a `Studio`."""

    def __init__(self, studio: Studio, out_dir: Optional[Path] = None,
                 checkpoint_dir: Optional[Path] = None):
        self.studio = studio
        self.files = JobFiles(out_dir)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self._load_lock = threading.Lock()
        self.decodes = DecodeTracker()

    @classmethod
    def from_folder(cls, folder: Path, device: Optional[str] = None, out_dir: Optional[Path] = None) -> "Service":
        return cls(load_folder(folder, device), out_dir=out_dir, checkpoint_dir=folder)

    @property
    def out_dir(self) -> Path:
        return self.files.root

    # -- facts for the UI -----------------------------------------------------------------
    def class_names(self) -> list[str]:
        for kind in ("nar", "raster"):
            loaded = self.studio.models.get(kind)
            if loaded is not None:
                return list(loaded.class_names)
        return []

    def grid_size(self) -> int:
        return int(self.studio.vq.cfg.grid_size)

    def image_size(self) -> int:
        return int(self.studio.vq.cfg.image_size)

    def dtype(self) -> str:
        for loaded in self.studio.models.values():
            if loaded is not None:
                return str(next(loaded.model.parameters()).dtype).replace("torch.", "")
        return "float32"

    def device_label(self) -> str:
        device = self.studio.device
        if device.type == "cuda":
            return f"{device} ({torch.cuda.get_device_name(device)})"
        threads = torch.get_num_threads()
        return f"cpu ({threads} thread{'s' if threads != 1 else ''})"

    def model_rows(self) -> tuple[list[str], list[list]]:
        """The active models side by side: headers and rows for a table."""
        columns = {}
        for kind in ("nar", "raster"):
            loaded = self.studio.models.get(kind)
            if loaded is None:
                columns[f"{kind.upper() if kind == 'nar' else 'Raster'} model"] = {"source": "(not loaded)"}
                continue
            d = loaded.describe()
            d["dtype"] = str(next(loaded.model.parameters()).dtype).replace("torch.", "")
            d["device"] = str(next(loaded.model.parameters()).device)
            d["parameters"] = f"{d['parameters'] / 1e6:.2f} M"
            columns["NAR model" if kind == "nar" else "Raster model"] = d
        vq = self.studio.vq
        cfg = vq.cfg
        columns["Tokenizer (VQ)"] = {
            "source": getattr(vq, "source", "") or "", "kind": "vq",
            "parameters": f"{sum(p.numel() for p in vq.parameters()) / 1e6:.2f} M",
            "vocab": cfg.codebook_size, "grid": f"{cfg.grid_size}x{cfg.grid_size}",
            "image": f"{cfg.image_size} px (downsample {cfg.downsample})",
            "dtype": str(next(vq.parameters()).dtype).replace("torch.", ""),
            "device": str(next(vq.parameters()).device)}
        fields = ["source", "kind", "parameters", "layers", "extra_blocks", "dim", "heads", "vocab",
                  "grid", "image", "classes", "device", "dtype"]
        names = {"extra_blocks": "extra blocks"}
        rows = [[names.get(f, f)] + [str(col.get(f, "")) for col in columns.values()] for f in fields]
        return ["", *columns.keys()], rows

    # -- validation -----------------------------------------------------------------------
    def check(self, request: GenerateRequest, orders: Sequence[str]) -> tuple[dict, SamplingConfig]:
        """Validate a request for the given orders: class ids per order and the sampling config.
        Raises ValueError with every problem named."""
        problems: list[str] = []
        for order in orders:
            if order not in ORDERS:
                problems.append(f"unknown order {order!r}; choose from {', '.join(ORDERS)}")
        num = _as_int("number of images", request.num_images, problems)
        if num is not None and not 1 <= num <= MAX_IMAGES:
            problems.append(f"number of images must be in [1, {MAX_IMAGES}], got {num}")
        n = self.grid_size()
        if "zipar" in orders:
            window = _as_int("ZipAR window", request.window, problems)
            if window is not None and not 1 <= window <= n:
                problems.append(f"ZipAR window must be in [1, {n}] for a {n}x{n} grid, got {window}")
        else:
            window = min(8, n)  # unused by the other orders
        values = {}
        for name, conv in (("cfg_scale", _as_float), ("cfg_interval", _as_int), ("temperature", _as_float),
                           ("top_k", _as_int), ("top_p", _as_float), ("seed", _as_int)):
            values[name] = conv(name.replace("_", " ").replace("cfg", "CFG"), getattr(request, name), problems)
        sampling = None
        if None not in values.values():
            try:
                sampling = SamplingConfig(**values).validate()
            except ValueError as e:
                problems.append(str(e))
        ids = {}
        if request.class_name is None or str(request.class_name).strip() == "":
            problems.append("pick a class")
        elif not isinstance(request.class_name, (str, int)) or isinstance(request.class_name, bool):
            problems.append(f"the class must be a name or a class id, got {quoted(request.class_name)}")
        elif len(str(request.class_name)) > MAX_NAME_CHARS:
            problems.append(f"unknown class {quoted(request.class_name)}: class names are at most "
                            f"{MAX_NAME_CHARS} characters")
        else:
            for order in orders:
                if order not in ORDERS:
                    continue
                try:
                    ids[order] = self.studio.class_ids(order, [request.class_name] * (num or 1))
                except ValueError as e:
                    if str(e) not in problems:
                        problems.append(str(e))
        if problems:
            raise ValueError("; ".join(problems))
        request.num_images, request.window = num, window
        return ids, sampling

    # -- generate -------------------------------------------------------------------------
    def generate(self, request: GenerateRequest, min_frame_seconds: float = 0.0,
                 write_mp4: bool = True) -> Iterator[GenerateUpdate]:
        """Decode and yield a frame after every step; the last update has the final images and
        the animation files. Raises ValueError (before the first update) on a bad request."""
        pace = check_frame_seconds(min_frame_seconds)
        ids, sampling = self.check(request, [request.order])
        with self.decodes.track("generate") as run:
            yield from self._generate(request, ids[request.order], sampling, pace, write_mp4, run)

    def _generate(self, request: GenerateRequest, class_ids: torch.Tensor, sampling: SamplingConfig,
                  pace: float, write_mp4: bool, run: DecodeRun) -> Iterator[GenerateUpdate]:
        order = request.order
        columns = min(4, len(class_ids))
        frames, shown, record = [], None, None
        for record in self.studio.decode_steps(order, class_ids, sampling, window=request.window):
            run.step, run.num_steps = record.step + 1, record.num_steps
            frame = tile(self.studio.frames(record, scale=FRAME_SCALE), columns)
            frames.append(frame)
            if record.step + 1 < record.num_steps:
                shown = wait_until(shown, pace)
                yield GenerateUpdate(frame, record.step + 1, record.num_steps, record.elapsed,
                                     step_caption(order, record.step + 1, record.num_steps, record.elapsed))
        seconds = record.elapsed
        images = self.studio.images(record.grid)
        names = self.studio.model_for(order).class_names
        job = self.files.new("generate")
        paths, labels = [], []
        for i, (image, cid) in enumerate(zip(images, class_ids.tolist())):
            label = f"{names[cid]}, seed {sampling.seed + i}"
            paths.append(save_png(image, job / f"{order}-{_slug(names[cid])}-seed{sampling.seed + i}.png"))
            labels.append(label)
        fps = animation_fps(len(frames))
        gif = save_gif(frames, job / f"{order}-decoding.gif", fps=fps)
        mp4 = save_mp4(frames, job / f"{order}-decoding.mp4", fps=fps) if write_mp4 else None
        summary = {"order": order, "window": request.window if order == "zipar" else None,
                   "steps": record.num_steps, "seconds": round(seconds, 4), "images": len(class_ids),
                   "images_per_s": round(len(class_ids) / max(seconds, 1e-9), 3),
                   "class": names[int(class_ids[0])], "seed": sampling.seed,
                   "device": str(self.studio.device)}
        caption = (f"{step_caption(order, record.num_steps, record.num_steps, seconds)} · "
                   f"{summary['images_per_s']:.2f} images/s")
        final = tile([upscale(image, FRAME_SCALE) for image in images], columns)  # without the front
        shown = wait_until(shown, pace)
        yield GenerateUpdate(final, record.num_steps, record.num_steps, seconds, caption, done=True,
                             images=paths, labels=labels, gif=gif, mp4=mp4, summary=summary)

    # -- compare --------------------------------------------------------------------------
    def compare(self, request: GenerateRequest, min_frame_seconds: float = 0.0,
                max_frames: int = 90) -> Iterator[CompareUpdate]:
        """Raster, ZipAR and NAR on the same class and seed, interleaved by their own measured
        clocks: the decoder whose accumulated decode time is smallest always runs next, so at
        every update all panels show their state at (nearly) the same decode time. Updates are
        spaced evenly in decode time (at most `max_frames`), plus one whenever a decoder finishes."""
        pace = check_frame_seconds(min_frame_seconds)
        request.num_images = 1
        ids, sampling = self.check(request, COMPARE_ORDERS)
        with self.decodes.track("compare") as run:
            yield from self._compare(request, ids, sampling, pace, max_frames, run)

    def _compare(self, request: GenerateRequest, ids: dict, sampling: SamplingConfig, pace: float,
                 max_frames: int, run: DecodeRun) -> Iterator[CompareUpdate]:
        iters, panels = {}, {}
        for order in COMPARE_ORDERS:
            iters[order] = self.studio.decode_steps(order, ids[order], sampling, window=request.window)
            panels[order] = PanelState(order, len(self.studio.schedule(order, request.window)))
        movie, shown, next_clock = [], None, 0.0

        def render() -> CompareUpdate:
            for p in panels.values():
                if p.dirty and p.record is not None:
                    p.frame = (upscale(self.studio.images(p.record.grid)[0], FRAME_SCALE) if p.done
                               else self.studio.frames(p.record, scale=FRAME_SCALE)[0])  # no front once done
                    p.dirty = False
            frames = {o: p.frame for o, p in panels.items()}
            if all(f is not None for f in frames.values()):  # the GIF at half size keeps it small
                movie.append(tile([frames[o][::2, ::2] for o in COMPARE_ORDERS], gap=2))
            return CompareUpdate(frames, {o: step_caption(o, p.step, p.num_steps, p.elapsed)
                                          for o, p in panels.items()}, clock,
                                 elapsed={o: p.elapsed for o, p in panels.items()},
                                 steps={o: p.step for o, p in panels.items()})

        clock = 0.0
        while not all(p.done for p in panels.values()):
            running = [p for p in panels.values() if not p.done]
            panel = min(running, key=lambda p: p.elapsed)
            record = next(iters[panel.order])
            panel.record, panel.step, panel.elapsed, panel.dirty = record, record.step + 1, record.elapsed, True
            run.step = sum(p.step for p in panels.values())
            run.num_steps = sum(p.num_steps for p in panels.values())
            running = [p for p in panels.values() if not p.done]
            # the shared clock: every running panel has decoded at least this long
            clock = min((p.elapsed for p in running), default=max(p.elapsed for p in panels.values()))
            # space frames evenly over the expected total decode time of the slowest order
            expected = max(p.elapsed / max(p.step, 1) * p.num_steps for p in panels.values())
            finished_now = panel.done
            if (clock >= next_clock or finished_now) and all(p.record is not None for p in panels.values()):
                next_clock = clock + expected / max_frames
                update = render()
                if not all(p.done for p in panels.values()):
                    shown = wait_until(shown, pace)
                    yield update
        for it in iters.values():
            it.close()
        update = render()
        raster_s = panels["raster"].elapsed
        rows = []
        job = self.files.new("compare")
        for order in COMPARE_ORDERS:
            p = panels[order]
            label = ORDER_LABELS[order] + (f" (window {min(request.window, self.grid_size())})"
                                           if order == "zipar" else "")
            rows.append([label, p.num_steps, round(p.elapsed, 4), round(1.0 / max(p.elapsed, 1e-9), 2),
                         f"{raster_s / max(p.elapsed, 1e-9):.2f}x"])
            update.images[order] = save_png(self.studio.images(p.record.grid)[0], job / f"{order}.png")
        update.rows = rows
        update.gif = save_gif(movie, job / "compare.gif", fps=min(20.0, max(4.0, len(movie) / 5)))
        update.done = True
        wait_until(shown, pace)
        yield update

    # -- speed vs batch -------------------------------------------------------------------
    def measure(self, batches: Sequence[int], window: int = 8, cfg: bool = True, rounds: int = 2,
                progress: Optional[Callable[[float, str], None]] = None) -> list[dict]:
        """Time per image against batch size for the three orders, measured now on this
        device (one warm-up, then the median of `rounds` runs); rows as in benchmarks/*.json."""
        problems: list[str] = []
        batch_list = sorted({b for b in (_as_int("batch size", x, problems) for x in batches or []) if b})
        if not batch_list:
            problems.append("pick at least one batch size")
        elif batch_list[0] < 1 or batch_list[-1] > 64:
            problems.append("batch sizes must be in [1, 64]")
        rounds_i = _as_int("rounds", rounds, problems)
        if rounds_i is not None and not 1 <= rounds_i <= 20:
            problems.append("rounds must be in [1, 20]")
        w = _as_int("ZipAR window", window, problems)
        if w is not None and not 1 <= w <= self.grid_size():
            problems.append(f"ZipAR window must be in [1, {self.grid_size()}]")
        if problems:
            raise ValueError("; ".join(problems))
        for order in COMPARE_ORDERS:
            self.studio.model_for(order)
        # the benchmark's own case runner: the whole decode is timed, device sync included
        cases = [Case(order, "measured", self.studio.model_for(order).model, order, w if order == "zipar" else None,
                      batch, bool(cfg)) for batch in batch_list for order in COMPARE_ORDERS]
        results, total = [], len(cases) * (rounds_i + 1)
        done = 0
        for case in cases:
            order, batch = case.order, case.batch
            times = []
            for r in range(rounds_i + 1):
                if progress:
                    progress(done / total, f"{ORDER_LABELS[order]}, batch {batch}")
                start = time.perf_counter()
                case.run()
                if r:  # the first run is the warm-up
                    times.append(time.perf_counter() - start)
                done += 1
            median = float(np.median(times))
            results.append({"suite": "measured", "label": f"{order}" + (f"-{w}" if order == "zipar" else ""),
                            "order": order, "window": case.window,
                            "model": case.model.config.kind, "batch": batch,
                            "cfg": cfg, "steps": case.steps, "latency_median_s": median,
                            "latency_per_image_s": median / batch, "images_per_s": batch / median,
                            "rounds": rounds_i})
        if progress:
            progress(1.0, "done")
        return results

    # -- models ---------------------------------------------------------------------------
    def load(self, upload_paths: Sequence[str] = (), repo_id: str = "", filenames: str = "",
             grid_size: Optional[int] = None) -> str:
        """Load checkpoints (NAR, raster and/or VQ; the kind is read from each file) from uploads
        or a Hugging Face Hub repo and make them active together. Any error leaves the active
        models as they were; returns a message saying what changed."""
        return self.load_sources(self._sources(upload_paths, repo_id, filenames), grid_size)

    def reset(self) -> str:
        """Back to the checkpoints the app was started with."""
        if self.checkpoint_dir is None:
            raise ValueError("the app was started without a checkpoint folder")
        return self.load_sources([(str(self.checkpoint_dir / f"{k}.safetensors"),
                                   self.checkpoint_dir / f"{k}.safetensors") for k in ("vq", "nar", "raster")])

    def load_sources(self, sources: list[tuple[str, Path]], grid_size: Optional[int] = None) -> str:
        with self._load_lock:
            grid = self.grid_size() if grid_size in (None, "", 0) else _checked_grid(grid_size)
            device = self.studio.device
            dtype = pick_dtype(device)
            models: list[LoadedModel] = []
            vq = None
            for label, path in sources:
                ckpt = read_checkpoint(path, grid_size=grid)
                if ckpt.kind in ("nar", "raster"):
                    if any(m.model.config.kind == ckpt.kind for m in models):
                        raise CheckpointError(f"two {ckpt.kind} checkpoints given; load one of each kind")
                    model = build_transformer(ckpt).to(device=device, dtype=dtype)
                    models.append(LoadedModel(model, class_names_of(ckpt), label, Path(path)))
                elif ckpt.kind == "vq":
                    if vq is not None:
                        raise CheckpointError("two tokenizer checkpoints given; load one of each kind")
                    vq = build_vq(ckpt).to(device)
                    vq.source = label
                else:
                    raise CheckpointError(f"{label} is a {ckpt.kind} checkpoint, not a NAR, raster or "
                                          f"VQ tokenizer checkpoint")
            if vq is not None:
                unloaded = self.studio.swap_tokenizer(vq, tuple(models))
            else:
                for loaded in models:  # all checked first, so a mismatch changes nothing
                    self._check_fits(loaded)
                for loaded in models:
                    self.studio.swap(loaded)
                unloaded = []
            parts = ([f"tokenizer from {vq.source}"] if vq is not None else []) + \
                    [f"{m.model.config.kind} model from {m.source}" for m in models]
            message = "Loaded " + "; ".join(parts) + "."
            if unloaded:
                message += (" Unloaded the " + " and ".join(unloaded) + " model (it does not match the new "
                            "tokenizer); load a matching one to use " +
                            ("raster and ZipAR" if "raster" in unloaded else "NAR") + " again.")
            return message

    def _check_fits(self, loaded: LoadedModel) -> None:
        cfg, vq = loaded.model.config, self.studio.vq.cfg
        if cfg.vocab_size != vq.codebook_size:
            raise CheckpointError(f"the {cfg.kind} model's vocabulary ({cfg.vocab_size}) does not match the "
                                  f"active tokenizer's codebook ({vq.codebook_size}); load its tokenizer "
                                  f"together with it")
        if cfg.grid_size != vq.grid_size:
            raise CheckpointError(f"the {cfg.kind} model's {cfg.grid_size}x{cfg.grid_size} grid does not match "
                                  f"the active tokenizer's {vq.grid_size}x{vq.grid_size}")

    @staticmethod
    def _sources(upload_paths, repo_id: str, filenames: str) -> list[tuple[str, Path]]:
        if isinstance(upload_paths, (str, os.PathLike)):
            upload_paths = [upload_paths]
        uploads = [str(p) for p in (upload_paths or []) if p]
        repo_id = str(repo_id or "").strip()
        filenames = str(filenames or "")
        if len(repo_id) > MAX_NAME_CHARS:
            raise ValueError(f"{quoted(repo_id)} is not a Hub repo id (owner/name, at most {MAX_NAME_CHARS} "
                             f"characters)")
        if len(filenames) > MAX_LOAD_FILES * (MAX_NAME_CHARS + 2):
            raise ValueError(f"the file names are {len(filenames):,} characters long; give at most "
                             f"{MAX_LOAD_FILES} names of at most {MAX_NAME_CHARS} characters each")
        names = [f.strip() for f in filenames.replace("\n", ",").split(",") if f.strip()]
        if uploads and repo_id:
            raise ValueError("give either uploaded files or a Hub repository, not both")
        if len(uploads) > MAX_LOAD_FILES or len(names) > MAX_LOAD_FILES:
            raise ValueError(f"load at most {MAX_LOAD_FILES} files at once (a tokenizer, a NAR and a raster "
                             f"model), got {max(len(uploads), len(names))}")
        if uploads:
            return [(Path(p).name, Path(p)) for p in uploads]
        if not repo_id:
            raise ValueError("upload a checkpoint file, or give a Hugging Face Hub repo id and file name")
        validate_repo_id(repo_id)
        if not names:
            raise ValueError(f"give the file name(s) inside {repo_id}")
        return [(f"{repo_id}/{name}", resolve(repo_id, name)) for name in names]


def _checked_grid(value) -> int:
    problems: list[str] = []
    grid = _as_int("token grid", value, problems)
    if grid is not None and not 1 <= grid <= 64:
        problems.append(f"token grid must be in [1, 64], got {grid}")
    if problems:
        raise ValueError("; ".join(problems))
    return grid


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text.lower()).strip("-") or "image"


def load_folder(folder: Path, device: Optional[str] = None) -> Studio:
    """The Studio of a folder holding nar.safetensors, raster.safetensors and vq.safetensors."""
    return Studio.from_folder(folder, device)


def warm_up(studio: Studio) -> None:
    """Run two steps of every order once, so the first request does not pay one-time costs
    (allocator growth, lazy kernels) inside its measured time."""
    for order in COMPARE_ORDERS:
        try:
            steps = studio.decode_steps(order, torch.zeros(1, dtype=torch.long), SamplingConfig())
        except ValueError:
            continue
        for i, record in enumerate(steps):
            studio.frames(record)
            if i >= 1:
                break
        steps.close()


def random_seed() -> int:
    return random.randint(0, SEED_MAX)


# -- benchmark files ---------------------------------------------------------------------------
def device_file_stem(device: torch.device) -> str:
    """The file name `python -m nar.bench` gives this device's results."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device).replace(" ", "-")
    return f"cpu-{torch.get_num_threads()}threads"


def benchmark_files(folder: Path, device: Optional[torch.device] = None) -> list[Path]:
    """benchmarks/*.json, this device's first (full run before quick run), then the others."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    files = sorted(folder.glob("*.json"))
    stem = device_file_stem(device) if device is not None else None

    def rank(p: Path):
        if stem and p.stem == stem:
            return (0, p.name)
        if stem and p.stem == f"{stem}-quick":
            return (1, p.name)
        return (2, p.name)
    return sorted(files, key=rank)


def read_benchmark(path: Path) -> tuple[str, list[dict]]:
    """(device name, result rows) of a benchmark JSON; tolerant of missing keys: rows without a
    batch size or any time are skipped, the rest are filled in."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{Path(path).name} is not a readable benchmark file ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{Path(path).name} is not a benchmark report (no results)")
    device = str(data.get("device") or Path(path).stem)
    rows = []
    for r in data.get("results") or []:
        if not isinstance(r, dict):
            continue
        row = normalise_result(r)
        if row is not None:
            rows.append(row)
    return device, rows


def normalise_result(r: dict) -> Optional[dict]:
    try:
        batch = int(r.get("batch", 1) or 1)
    except (TypeError, ValueError):
        return None
    per_image = None
    for key, conv in (("latency_per_image_s", lambda v: v), ("latency_median_s", lambda v: v / batch),
                      ("images_per_s", lambda v: 1.0 / v if v else None)):
        value = r.get(key)
        if isinstance(value, (int, float)) and value > 0:
            per_image = conv(float(value))
            break
    if per_image is None:
        return None
    order = r.get("order") or str(r.get("label", "?")).split(" ")[-1]
    window = r.get("window")
    label = str(r.get("label") or order).split(" ")[-1] if r.get("label") else (
        f"{order}-{window}" if order == "zipar" and window else str(order))
    return {"suite": str(r.get("suite", "")), "label": label, "order": str(order), "window": window,
            "batch": batch, "cfg": bool(r.get("cfg", True)), "per_image_s": per_image,
            "images_per_s": 1.0 / per_image}
