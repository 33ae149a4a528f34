"""The Train tab's views: what an upload holds, a run's state as markdown, a progress bar and a
loss curve, from a job in memory or a run folder on disk."""
from __future__ import annotations

import html
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd
from safetensors import safe_open

from nar.finetune import FineTuneJob, read_run_file
from nar.run_files import read_metrics
from nar.uploads import UploadReport

THUMBS_PER_CLASS = 6        # one row of the gallery per class
MAX_THUMBS = 36
FINISHED = ("done", "cancelled", "failed")


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


# -- views of runs -------------------------------------------------------------------------------
def job_view(job: FineTuneJob) -> RunView:
    """A run of this server, from its job in memory."""
    st = job.state
    alive = job.thread.is_alive()
    status = st.status if (alive or st.status in FINISHED) else "failed"
    losses = whole_run_losses(job)
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


def whole_run_losses(job: FineTuneJob) -> list[tuple[int, float]]:
    """The losses of the whole run: a resumed job holds only its own steps, the earlier ones are
    in the run's metrics log (read once per job)."""
    own = list(job.state.losses)
    earlier = getattr(job, "_earlier_losses", None)
    if earlier is None:
        first = own[0][0] if own else None
        earlier = [] if first is None else [(s, v) for s, v in read_losses(job.run_dir) if s < first]
        if own:
            job._earlier_losses = earlier
    return earlier + own


def _finished_after(job: FineTuneJob) -> float:
    last = job.run_dir / "best.safetensors"
    try:
        return last.stat().st_mtime - job.state.started
    except OSError:
        return 0.0


def disk_view(run_dir: Path) -> RunView:
    """A run from its folder: run.json for its progress, the metrics log for its losses."""
    run_id = run_dir.name
    record = read_run_file(run_dir)
    step = int(record.get("step", 0))
    total = int(record.get("target_steps", step) or step)
    losses = read_losses(run_dir)
    status = "done" if step >= total else "stopped"
    if status == "stopped" and record.get("status") == "interrupted":
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
            "eta_s": None, "losses": [[s, v] for s, v in losses], "class_names": class_names_in(run_dir),
            "preview_step": 0, "checkpoint": "last.safetensors"}
    return RunView(run_id, status, text, bar, losses, finished=True, info=info)


def read_losses(run_dir: Path) -> list[tuple[int, float]]:
    """(step, loss) of the run's metrics log (nar.train writes it); unreadable lines skipped."""
    losses = []
    for record in read_metrics(run_dir):
        try:
            losses.append((int(record["step"]), float(record["loss"])))
        except (ValueError, KeyError, TypeError):
            continue
    return losses


def class_names_in(run_dir: Path) -> list[str]:
    """The model's class names after the run: those of its checkpoint (read from the header)."""
    return list(header(run_dir / "last.safetensors")[1].get("class_names", []))


def header(path: Path) -> tuple[dict, dict]:
    """(model config, `extra.*` fields) of one of our safetensors files, read from its header only;
    empty for a file that cannot be read."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        return (json.loads(meta.get("config", "{}")),
                {k[len("extra."):]: json.loads(v) for k, v in meta.items() if k.startswith("extra.")})
    except Exception:  # noqa: BLE001 - a damaged file only hides what it holds
        return {}, {}


def scan_summary(report: UploadReport, known: list[str]) -> ScanSummary:
    """What an upload holds, for the preview next to the upload box."""
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

