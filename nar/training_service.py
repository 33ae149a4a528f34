"""The training tab without the UI: reading an upload for a preview, starting, watching,
cancelling and resuming fine-tuning runs, and handing their weights to the user and to the
Generate and Compare tabs.

Runs live in `runs_dir/<run id>/` (the folder `nar.finetune` writes: the upload as npz, its
tokens, `last.safetensors` with the optimiser state, `best.safetensors` with the weights).
Only weights are offered for download, and only as links or copies in the app's own output
folder, so the runs folder itself is never served.

A run starts from the active NAR model's own file: the checkpoint it was loaded from (startup
folder, upload or Hub), or the `best.safetensors` of the run it was fine-tuned in. That file is
kept on `LoadedModel.path`.
"""
from __future__ import annotations

import html
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from .checkpoint import build_transformer, class_names_of, read_checkpoint, remove_stale_temp_files
from .finetune import (ACTIVE, RUN_ID, Busy, FineTuneJob, FineTuneManager, FineTuneOptions, read_run_file,
                       write_run_file)
from .pipeline import LoadedModel, pick_dtype
from .service import Service, _as_float, _as_int, quoted
from .uploads import UploadLimits, UploadRefused, UploadReport, UploadScanner

__all__ = ["Busy", "UploadRefused", "TrainingService", "ScanSummary", "RunView", "RunInfo", "DEFAULTS", "BOUNDS",
           "duration", "loss_frame", "progress_html"]

DEFAULTS = FineTuneOptions()
# what FineTuneOptions.validate accepts; the UI's sliders and boxes span the same ranges
BOUNDS = {"steps": (1, 5000), "lr": (1e-6, 1e-2), "batch_size": (1, 128), "preview_every": (1, 5000)}
THUMBS_PER_CLASS = 6        # one row of the gallery per class
MAX_THUMBS = 36
FINISHED = ("done", "cancelled", "failed")
log = logging.getLogger(__name__)


@dataclass
class ScanSummary:
    """What an upload holds, for the preview next to the upload box."""
    text: str                                       # markdown
    classes: list[list]                             # [class, images, in the model]
    thumbnails: list[tuple[np.ndarray, str]]        # (image, caption)
    skipped: list[list[str]]                        # [file, reason]
    refused: Optional[str] = None
    report: Optional[UploadReport] = None


@dataclass
class RunView:
    """One look at a run, for the progress panel and the API."""
    run_id: str
    status: str                                     # starting, tokenizing, training, done, cancelled, failed, stopped
    text: str                                       # markdown status line
    progress_html: str
    losses: list[tuple[int, float]] = field(default_factory=list)
    preview: Optional[np.ndarray] = None
    preview_step: int = 0
    preview_caption: str = ""
    finished: bool = False
    info: dict = field(default_factory=dict)


@dataclass
class RunInfo:
    run_id: str
    step: int
    total_steps: int
    classes: list[str]
    modified: float
    running: bool = False
    has_weights: bool = False
    interrupted: bool = False       # the server stopped while it trained; Resume continues it

    def label(self) -> str:
        if self.running:
            state = f"training now, step {self.step}/{self.total_steps}"
        elif self.interrupted and self.step < self.total_steps:
            state = f"interrupted at step {self.step} of {self.total_steps} (the server stopped)"
        elif self.step >= self.total_steps:
            state = f"finished, {self.step} steps"
        else:
            state = f"stopped at step {self.step} of {self.total_steps}"
        classes = ", ".join(self.classes[:6]) + (" …" if len(self.classes) > 6 else "")
        return f"{self.run_id} · {state} · {classes} · {time.strftime('%d %b %H:%M', time.localtime(self.modified))}"


# -- formatting --------------------------------------------------------------------------------
def duration(seconds: Optional[float]) -> str:
    if seconds is None or not np.isfinite(seconds):
        return "?"
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def progress_html(fraction: float, label: str, state: str = "running") -> str:
    """A progress bar (styled by the app's CSS: .train-progress)."""
    pct = max(0.0, min(1.0, float(fraction))) * 100
    return (f'<div class="train-progress {html.escape(state)}" role="progressbar" aria-valuemin="0" '
            f'aria-valuemax="100" aria-valuenow="{pct:.0f}"><div class="track"><div class="fill" '
            f'style="width:{pct:.1f}%"></div></div><div class="label">{html.escape(label)}</div></div>')


def loss_frame(losses: Sequence[tuple[int, float]], max_points: int = 400):
    """The loss curve as a table for gr.LinePlot: every step (thinned out to at most max_points)
    and a moving average over a tenth of the steps (up to 50), told apart by the `curve` column."""
    import pandas as pd
    if not losses:
        return pd.DataFrame({"step": pd.Series(dtype="int64"), "loss": pd.Series(dtype="float64"),
                             "curve": pd.Series(dtype="str")})
    steps = np.array([s for s, _ in losses], dtype=np.int64)
    values = np.array([v for _, v in losses], dtype=np.float64)
    window = int(max(1, min(50, len(values) // 10)))
    smooth = np.convolve(values, np.ones(window) / window, mode="full")[:len(values)]
    smooth[:window] = np.cumsum(values[:window]) / np.arange(1, min(window, len(values)) + 1)
    keep = np.unique(np.linspace(0, len(values) - 1, min(len(values), max_points)).round().astype(int))
    return pd.concat([
        pd.DataFrame({"step": steps[keep], "loss": values[keep], "curve": "loss per step"}),
        pd.DataFrame({"step": steps[keep], "loss": smooth[keep], "curve": "moving average"}),
    ], ignore_index=True)


def _link_or_copy(src: Path, dst: Path) -> Path:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
    return dst


def _header(path: Path) -> tuple[dict, dict]:
    """(model config, `extra.*` fields) of one of our safetensors files, read from its header only;
    empty for a file that cannot be read."""
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        return (json.loads(meta.get("config", "{}")),
                {k[len("extra."):]: json.loads(v) for k, v in meta.items() if k.startswith("extra.")})
    except Exception:  # noqa: BLE001 - a damaged file only hides the run from the list
        return {}, {}


def _metadata(path: Path) -> dict:
    return _header(path)[1]


# -- the service -------------------------------------------------------------------------------
class TrainingService:
    """Fine-tuning for the app over a `Service` (whose Studio holds the active models)."""

    def __init__(self, service: Service, runs_dir: Path, limits: UploadLimits = UploadLimits(),
                 poll_seconds: float = 1.0):
        self.service = service
        self.runs_dir = Path(runs_dir).expanduser().resolve()
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.manager = FineTuneManager(self.runs_dir)
        self.limits = limits
        self.scanner = UploadScanner(limits)   # the preview's scan is reused by the start
        self.poll_seconds = poll_seconds
        self.interrupted = self.recover()

    def recover(self) -> list[str]:
        """At start: remove the partial writes a killed server left in the runs, and mark the runs it
        was training as interrupted (they are offered first under Runs; Resume continues them from
        their last checkpoint). Returns their ids, newest first. Nothing is restarted on its own: a
        run that brought the server down would otherwise do it again on every start."""
        found = []
        for run_dir in self.runs_dir.iterdir():
            if not RUN_ID.match(run_dir.name) or not run_dir.is_dir() or run_dir.is_symlink():
                continue
            for tmp in remove_stale_temp_files(run_dir):
                log.info("run %s: removed %s, a partial write of a stopped server", run_dir.name, tmp.name)
            info = read_run_file(run_dir)
            if info.get("status") not in ACTIVE:
                continue
            last = run_dir / "last.safetensors"
            step = int(_metadata(last).get("step", 0)) if last.is_file() else 0
            try:
                write_run_file(run_dir, status="interrupted", step=step,
                               message=f"the server stopped while this run trained; its checkpoint at step "
                                       f"{step} is kept")
            except OSError:
                pass
            log.info("run %s was interrupted at step %d of %s; Resume continues it", run_dir.name, step,
                     info.get("target_steps", "?"))
            found.append((info.get("updated", 0), run_dir.name))
        return [run_id for _, run_id in sorted(found, reverse=True)]

    def interrupted_note(self) -> str:
        """What the Train tab says about the runs the last server left unfinished."""
        current = self.manager.current
        notes = []
        for run_id in self.interrupted:
            run_dir = self.runs_dir / run_id
            if (current is not None and current.run_id == run_id) or \
                    read_run_file(run_dir).get("status") != "interrupted":
                continue   # resumed since
            last = run_dir / "last.safetensors"
            if not last.is_file():
                notes.append(f"Run {run_id} was interrupted before its first checkpoint; start it again.")
                continue
            meta = _metadata(last)
            step = int(meta.get("step", 0))
            total = int((meta.get("train_config") or {}).get("steps", step) or step)
            if step < total:
                notes.append(f"Run {run_id} was interrupted at step {step} of {total} when the server stopped. "
                             f"Pick it under **Runs**, set **Steps** to {total} and press **Resume** to continue "
                             f"from its last checkpoint.")
        return " ".join(notes[:3])

    # -- facts for the UI -----------------------------------------------------------------
    def limits_text(self) -> str:
        return self.limits.describe()

    def _active(self) -> LoadedModel:
        loaded = self.service.studio.models.get("nar")
        if loaded is None:
            raise ValueError("no NAR model is active; load one in the Model tab first")
        return loaded

    def layer_choices(self) -> list[tuple[str, str]]:
        try:
            blocks = len(self._active().model.layers)
        except ValueError:
            blocks = 0
        choices = [("All layers", "all"), ("Output heads and class embeddings only", "heads")]
        for k in (1, 2, 3, 4, 6, 8, 12, 16, 24):
            if k < blocks:
                choices.append((f"Last {k} block{'s' if k > 1 else ''}, heads and class embeddings", f"last:{k}"))
        return choices

    def base_checkpoint(self) -> Path:
        """The file of the active NAR model: where a new run starts."""
        loaded = self._active()
        path = loaded.path
        if path is None:
            raise ValueError(f"the active NAR model ({loaded.source}) was not loaded from a file, so it cannot be "
                             f"fine-tuned; load a checkpoint in the Model tab first")
        if not Path(path).is_file():
            raise ValueError(f"the file of the active NAR model ({loaded.source}) is gone (uploads are kept for "
                             f"an hour); load it again in the Model tab")
        return Path(path)

    def options(self, steps=DEFAULTS.steps, lr=DEFAULTS.lr, batch_size=DEFAULTS.batch_size,
                layers=DEFAULTS.train_layers, preview_every=DEFAULTS.preview_every, seed=0) -> FineTuneOptions:
        """Validated options; every bad field is named in one ValueError."""
        problems: list[str] = []
        values = {"steps": _as_int("steps", steps, problems), "lr": _as_float("learning rate", lr, problems),
                  "batch_size": _as_int("batch size", batch_size, problems),
                  "preview_every": _as_int("preview interval", preview_every, problems),
                  "seed": _as_int("seed", seed, problems)}
        layers = str(layers or "all").strip()
        if layers.startswith("last:"):
            try:
                k, blocks = int(layers.split(":", 1)[1]), len(self._active().model.layers)
                if not 1 <= k <= blocks:
                    problems.append(f"the model has {blocks} blocks; train the last 1 to {blocks}, not {k}")
            except ValueError:
                pass  # FineTuneOptions.validate names it
        if problems:
            raise ValueError("; ".join(problems))
        return FineTuneOptions(train_layers=layers, **values).validate()

    # -- uploads --------------------------------------------------------------------------
    @staticmethod
    def paths(files) -> list[str]:
        if files is None:
            return []
        if isinstance(files, (str, os.PathLike)):
            files = [files]
        return [f if isinstance(f, str) else getattr(f, "name", None) or str(f) for f in files if f]

    def scan(self, files, loose_class: str = "") -> ScanSummary:
        """Read an upload (never raising for its content): classes, counts, thumbnails, skips."""
        paths = self.paths(files)
        if not paths:
            return ScanSummary("Upload images or a zip to see what will be learned.", [], [], [])
        try:
            report = self.scanner.scan(paths, self.service.image_size(), (loose_class or "").strip())
        except UploadRefused as e:
            return ScanSummary(f"**Upload refused:** {e}", [], [], [], refused=str(e))
        known = self.service.class_names()
        counts = report.counts()
        classes = [[name, count, f"yes, class {known.index(name)}" if name in known else "new class"]
                   for name, count in counts.items()]
        thumbs: list[tuple[np.ndarray, str]] = []
        for i, name in enumerate(report.class_names):
            for image in report.images[report.labels == i][:THUMBS_PER_CLASS]:
                if len(thumbs) < MAX_THUMBS:
                    thumbs.append((image, name))
        skipped = [[name, why] for name, why in report.skipped]
        total = int(len(report.labels))
        new = [n for n in report.class_names if n not in known]
        if total:
            text = (f"Found **{total} image{'s' if total != 1 else ''}** in **{len(counts)} "
                    f"class{'es' if len(counts) != 1 else ''}**"
                    + (f" ({len(new)} new: {', '.join(new)})" if new else " (all already known to the model)"))
        else:
            text = "**No usable images** in this upload."
        if skipped:
            text += f" · **{len(skipped)} file{'s' if len(skipped) != 1 else ''} skipped** (see below)"
        return ScanSummary(text + ".", classes, thumbs, skipped, report=report)

    # -- jobs -----------------------------------------------------------------------------
    def busy_message(self) -> str:
        job = self.manager.current
        where = ""
        if job is not None:
            st = job.state
            where = (f" (run {job.run_id}, step {st.step}/{st.total_steps}"
                     + (f", about {duration(st.eta_s)} left" if st.eta_s is not None else "") + ")")
        return (f"The server is busy: another training job is running{where}. One training job runs at a "
                f"time on this server; try again when it finishes. Generating images keeps working meanwhile.")

    def _check_free(self) -> None:
        if self.manager.busy():
            raise Busy(self.busy_message())

    def start(self, files, loose_class: str, options: FineTuneOptions) -> FineTuneJob:
        """Read the upload and start a run on the active NAR model. Raises Busy, UploadRefused or
        ValueError (no usable images, no model) with a message for the user."""
        self._check_free()  # answer a second user before reading their upload
        paths = self.paths(files)
        if not paths:
            raise ValueError("upload images or a zip of class folders first")
        report = self.scanner.scan(paths, self.service.image_size(), (loose_class or "").strip())
        if not len(report.labels):
            reasons = "; ".join(f"{name}: {why}" for name, why in report.skipped[:8])
            more = f" and {len(report.skipped) - 8} more" if len(report.skipped) > 8 else ""
            raise ValueError("the upload has no usable images" + (f" ({reasons}{more})" if reasons else ""))
        base = self.base_checkpoint()
        known = list(self._active().class_names)   # the model in `base`
        try:
            job = self.manager.start(self.service.studio, base, report, options)
        except Busy:
            raise Busy(self.busy_message()) from None
        job.skipped = report.skipped
        job.new_classes = [n for n in report.class_names if n not in known]
        return job

    def resume(self, run_id: str, options: FineTuneOptions) -> FineTuneJob:
        """Continue a run from its last checkpoint up to options.steps (or watch it, when it is the
        run that is training now)."""
        run_id = self._check_id(run_id)
        job = self.manager.current
        if job is not None and job.run_id == run_id and job.thread.is_alive():
            return job
        self._check_free()
        last = self.runs_dir / run_id / "last.safetensors"
        if not last.is_file():
            raise ValueError(f"run {run_id} has no checkpoint to resume from")
        config, extra = _header(last)
        saved = int(extra.get("step", 0))
        if options.steps <= saved:
            raise ValueError(f"run {run_id} has already trained {saved} steps; set Steps above {saved} to "
                             f"train it further")
        vq = self.service.studio.vq.cfg
        if config.get("vocab_size") != vq.codebook_size or config.get("grid_size") != vq.grid_size:
            raise ValueError(f"run {run_id} was trained with another tokenizer (vocabulary "
                             f"{config.get('vocab_size')}, grid {config.get('grid_size')}) than the active one "
                             f"({vq.codebook_size}, {vq.grid_size}); load that tokenizer first")
        try:
            # the run's own checkpoint is the base: its class table already holds the upload's classes
            job = self.manager.start(self.service.studio, last, None, options, resume_run=run_id)
        except Busy:
            raise Busy(self.busy_message()) from None
        if job.state.step == 0:
            job.state.step = saved
        return job

    def cancel(self, run_id: str) -> str:
        run_id = self._check_id(run_id)
        job = self.manager.current
        if job is None or job.run_id != run_id or not job.thread.is_alive():
            raise ValueError(f"run {run_id} is not training now")
        job.cancel_event.set()
        return (f"Cancelling run {run_id} at step {job.state.step}: it stops after the current step and "
                f"keeps its checkpoint.")

    def _check_id(self, run_id) -> str:
        run_id = str(run_id or "").strip().split(" ")[0]
        if not run_id:
            raise ValueError("pick a run first")
        if not RUN_ID.match(run_id):
            raise ValueError(f"{quoted(run_id)} is not a run id")
        return run_id

    # -- looking at runs --------------------------------------------------------------------
    def view(self, run_id: str) -> RunView:
        """The state of a run: live for a run of this server, from its folder otherwise."""
        run_id = self._check_id(run_id)
        job = self.manager.jobs.get(run_id)
        if job is not None:
            return self.job_view(job)
        return self._disk_view(run_id)

    def job_view(self, job: FineTuneJob) -> RunView:
        st = job.state
        alive = job.thread.is_alive()
        status = st.status if (alive or st.status in FINISHED) else "failed"
        losses = list(st.losses)
        total = st.total_steps
        rid = f"`{job.run_id}`"
        last_loss = f" · loss {losses[-1][1]:.3f}" if losses else ""
        if status in ("starting", "tokenizing"):
            text = f"**Preparing** run {rid}: {st.message or 'starting'}…"
            bar = progress_html(st.tokenized, f"tokenizing the upload · {st.tokenized * 100:.0f}%")
        elif status == "training":
            eta = f" · about {duration(st.eta_s)} left" if st.eta_s is not None else ""
            text = f"**Training** run {rid} · step {st.step}/{total}{last_loss}{eta}"
            bar = progress_html(st.step / max(1, total), f"step {st.step}/{total}{eta}")
        elif status == "done":
            took = duration(time.time() - st.started) if alive else duration(_finished_after(job))
            first = f" (from {losses[0][1]:.3f})" if losses else ""
            text = (f"**Finished** run {rid}: {st.step} steps in {took}; final loss "
                    f"{losses[-1][1]:.3f}{first}. Download the weights below, or press **Use this model** to "
                    f"generate with them." if losses else f"**Finished** run {rid}: {st.message}.")
            bar = progress_html(1.0, f"done · {st.step}/{total} steps", "done")
        elif status == "cancelled":
            text = (f"**Cancelled** run {rid} at step {st.step} of {total}; its checkpoint at step {st.step} "
                    f"is kept. Pick it under **Runs** and press **Resume** to continue.")
            bar = progress_html(st.step / max(1, total), f"cancelled at step {st.step}/{total}", "stopped")
        else:
            text = f"**Failed** run {rid}: {st.message or 'the training thread stopped'}"
            bar = progress_html(st.step / max(1, total), "failed", "failed")
        new = list(getattr(job, "new_classes", []))
        caption = (f"NAR samples at step {st.preview_step}: " + ", ".join(job.upload.class_names[:8])
                   if st.preview is not None else "")
        info = {"run_id": job.run_id, "status": status, "message": st.message, "step": st.step,
                "total_steps": total, "eta_s": st.eta_s, "losses": [[s, float(v)] for s, v in losses],
                "class_names": list(st.class_names), "upload_classes": list(job.upload.class_names),
                "new_classes": new, "preview_step": st.preview_step,
                "skipped": [list(x) for x in getattr(job, "skipped", [])],
                "checkpoint": st.checkpoint.name if st.checkpoint else None}
        return RunView(job.run_id, status, text, bar, losses, st.preview, st.preview_step, caption,
                       finished=not alive, info=info)

    def _disk_view(self, run_id: str) -> RunView:
        run_dir = self.runs_dir / run_id
        last = run_dir / "last.safetensors"
        if not last.is_file():
            raise ValueError(f"there is no run {run_id} with a checkpoint on this server")
        meta = _metadata(last)
        step = int(meta.get("step", 0))
        total = int((meta.get("train_config") or {}).get("steps", step) or step)
        losses = []
        metrics = run_dir / "metrics.jsonl"
        if metrics.is_file():
            for line in metrics.read_text().splitlines():
                try:
                    record = json.loads(line)
                    losses.append((int(record["step"]), float(record["loss"])))
                except (ValueError, KeyError, TypeError):
                    continue
        status = "done" if step >= total else "stopped"
        if status == "stopped" and read_run_file(run_dir).get("status") == "interrupted":
            status = "interrupted"
        if status == "done":
            text = (f"**Finished** run `{run_id}`: {step} steps. Download the weights, press **Use this model**, "
                    f"or raise Steps and press **Resume** to train it further.")
        elif status == "interrupted":
            text = (f"**Interrupted** run `{run_id}` at step {step} of {total}: the server stopped while it "
                    f"trained. Its checkpoint at step {step} is intact; set Steps to {total} and press "
                    f"**Resume** to continue it.")
        else:
            text = f"**Stopped** run `{run_id}` at step {step} of {total}. Press **Resume** to continue it."
        bar = progress_html(step / max(1, total), f"{'done' if status == 'done' else 'stopped'} · step "
                                                  f"{step}/{total}", "done" if status == "done" else "stopped")
        info = {"run_id": run_id, "status": status, "message": "", "step": step, "total_steps": total,
                "eta_s": None, "losses": [[s, v] for s, v in losses], "class_names": meta.get("class_names", []),
                "preview_step": 0, "checkpoint": last.name}
        return RunView(run_id, status, text, bar, losses, finished=True, info=info)

    def watch(self, job: FineTuneJob, interval: Optional[float] = None,
              heartbeat: float = 5.0) -> Iterator[RunView]:
        """Views of a job as it changes, ending with the finished one: at once when its status
        changes or a preview is ready, else at most one per interval (steps and loss)."""
        interval = self.poll_seconds if interval is None else interval
        last_key, last_time = None, 0.0
        seen = job.version
        while True:
            alive = job.thread.is_alive()
            view = self.job_view(job)
            st = job.state
            key = (view.status, st.step, st.message, st.preview_step, round(st.tokenized, 2))
            now = time.monotonic()
            if not alive:
                yield view
                return
            if key != last_key or now - last_time >= heartbeat:
                last_key, last_time = key, now
                yield view
            seen = job.wait_change(seen, interval)
            if job.state.status in FINISHED:
                job.thread.join(5.0)      # it is writing its last files

    def runs(self) -> list[RunInfo]:
        """Runs in the runs folder that can be resumed, downloaded or used, newest first."""
        current = self.manager.current
        running_id = current.run_id if current is not None and current.thread.is_alive() else None
        found = []
        for run_dir in self.runs_dir.iterdir() if self.runs_dir.is_dir() else []:
            if not RUN_ID.match(run_dir.name) or not run_dir.is_dir() or run_dir.is_symlink():
                continue
            last = run_dir / "last.safetensors"
            running = run_dir.name == running_id
            record = read_run_file(run_dir)
            interrupted = not running and record.get("status") == "interrupted"
            if not last.is_file() and not running:
                continue
            if running:
                st = current.state
                step, total, classes = st.step, st.total_steps, list(current.upload.class_names)
                modified = time.time()
            else:
                meta = _metadata(last)
                step = int(meta.get("step", 0))
                total = int((meta.get("train_config") or {}).get("steps", step) or step)
                classes = _upload_classes(run_dir)
                modified = last.stat().st_mtime
            found.append(RunInfo(run_dir.name, step, total, classes, modified, running,
                                 (run_dir / "best.safetensors").is_file(), interrupted))
        # the run training now and interrupted runs first, then the newest
        return sorted(found, key=lambda r: (not (r.running or (r.interrupted and r.step < r.total_steps)),
                                            -r.modified))

    def run_choices(self) -> list[tuple[str, str]]:
        return [(r.label(), r.run_id) for r in self.runs()]

    def _finished(self, run_id: str) -> Path:
        """The weights of a run that is not training now."""
        run_id = self._check_id(run_id)
        job = self.manager.current
        if job is not None and job.run_id == run_id and job.thread.is_alive():
            raise ValueError(f"run {run_id} is still training; wait for it to finish or cancel it")
        best = self.runs_dir / run_id / "best.safetensors"
        if not best.is_file():
            raise ValueError(f"run {run_id} has no weights yet")
        return best

    def downloads(self, run_id: str) -> list[Path]:
        """The run's weights (best.safetensors) and its resumable checkpoint (last.safetensors, with
        the optimiser state), linked or copied into the app's output folder for download."""
        best = self._finished(run_id)
        run_id = best.parent.name
        step = int(_metadata(best).get("step", 0))
        out = self.service.files.new("weights")
        files = [_link_or_copy(best, out / f"nar-finetuned-{run_id}-step{step}.safetensors")]
        last = best.parent / "last.safetensors"
        if last.is_file():
            files.append(_link_or_copy(last, out / f"nar-finetuned-{run_id}-resumable.safetensors"))
        return files

    def use(self, run_id: str) -> str:
        """Make a run's weights the active NAR model (Generate and Compare use it from now on)."""
        best = self._finished(run_id)
        ckpt = read_checkpoint(best)
        studio = self.service.studio
        model = build_transformer(ckpt).to(device=studio.device, dtype=pick_dtype(studio.device))
        names = class_names_of(ckpt)
        studio.swap(LoadedModel(model, names, f"fine-tuned run {best.parent.name}", best))
        step = ckpt.extra.get("step", "?")
        return (f"The NAR model is now fine-tuned run {best.parent.name} (step {step}; {len(names)} classes: "
                f"{', '.join(names[:20])}{' …' if len(names) > 20 else ''}). The Generate and Compare tabs use it; "
                f"**Back to the startup checkpoints** in the Model tab undoes this.")


def _finished_after(job: FineTuneJob) -> float:
    last = job.run_dir / "best.safetensors"
    try:
        return last.stat().st_mtime - job.state.started
    except OSError:
        return 0.0


def _upload_classes(run_dir: Path) -> list[str]:
    try:
        with np.load(run_dir / "upload.npz", allow_pickle=False) as f:
            return [str(n) for n in f["class_names"]]
    except (OSError, ValueError, KeyError):
        return []
