"""Fine-tuning jobs for the app: one at a time per server, in a background thread, with live
progress, cancel, resume and sample previews.

The job drives the same `train_loop` as `python -m nar.train`; it only adds the upload
handling, a run folder per job, and the state a UI polls. A run's progress (status, the step of
its newest checkpoint, the target steps, its status history) is kept in one place, the run
folder's run.json; what a checkpoint needs to load on its own (config, class names)
is in its metadata; the metrics log holds the losses.
"""
from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .checkpoint import atomic_write
from .config import SamplingConfig
from .images import ImageSet
from .decode import generate
from .loading import from_checkpoint
from .pipeline import Studio
from .render import tile
from .schedules import nar as nar_schedule
from .tokens import tokenize
from .run_files import split_run_checkpoint
from .train import Callbacks, TrainConfig, train_loop
from .uploads import UploadReport

RUN_ID = re.compile(r"^[0-9a-f]{12}$")
RUN_FILE = "run.json"                # a run's progress and options, rewritten as it changes
ACTIVE = ("starting", "tokenizing", "training")   # a run file left in one of these: the server died


def read_run_file(run_dir: Path) -> dict:
    """The run's run.json, or {} when it is missing or unreadable."""
    try:
        data = json.loads((Path(run_dir) / RUN_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_run_file(run_dir: Path, **fields) -> dict:
    """Merge fields into run.json (atomically: a kill leaves the old or the new file, never half);
    a change of status is appended to its history."""
    data = read_run_file(run_dir)
    now = time.time()
    if "status" in fields and fields["status"] != data.get("status"):
        data["history"] = [*data.get("history", []), {"status": fields["status"], "step": fields.get(
            "step", data.get("step", 0)), "time": now}]
    data.update(fields, updated=now)
    text = json.dumps(data, indent=1, default=str)
    atomic_write(Path(run_dir) / RUN_FILE, lambda tmp: Path(tmp).write_text(text))
    return data


# what FineTuneOptions.validate accepts (the Train tab's inputs span the same ranges)
OPTION_RANGES = {"steps": (1, 5000), "lr": (1e-6, 1e-2), "batch_size": (1, 128), "preview_every": (1, 5000)}
OPTION_NAMES = {"steps": "steps", "lr": "learning rate", "batch_size": "batch size",
                "preview_every": "preview interval"}


def shown(bound: float) -> str:
    """A range end as people write it: 5000, 1e-6."""
    return str(bound) if isinstance(bound, int) else f"{bound:.0e}".replace("e-0", "e-")


@dataclass(frozen=True)
class FineTuneOptions:
    steps: int = 200
    lr: float = 3e-4
    batch_size: int = 16
    train_layers: str = "all"        # all | heads | last:K
    preview_every: int = 50
    seed: int = 0

    def validate(self) -> "FineTuneOptions":
        problems = []
        for key, (lo, hi) in OPTION_RANGES.items():
            value = getattr(self, key)
            if not lo <= value <= hi:
                problems.append(f"{OPTION_NAMES[key]} must be in [{shown(lo)}, {shown(hi)}], got {value}")
        if not re.fullmatch(r"all|heads|last:\d{1,2}", self.train_layers):
            problems.append(f"layers to train must be all, heads or last:K, got {self.train_layers!r}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class Busy(RuntimeError):
    """Another training job is running on this server."""


@dataclass
class JobState:
    run_id: str
    status: str = "starting"         # starting, tokenizing, training, done, cancelled, failed
    message: str = ""
    step: int = 0
    total_steps: int = 0
    losses: list[tuple[int, float]] = field(default_factory=list)
    eta_s: Optional[float] = None
    preview: Optional[np.ndarray] = None      # uint8 image grid of the newest samples
    preview_step: int = 0
    tokenized: float = 0.0                    # fraction of the upload tokenized (status "tokenizing")
    checkpoint: Optional[Path] = None         # newest complete weights of the run
    class_names: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)


class _JobCallbacks(Callbacks):
    def __init__(self, job: "FineTuneJob"):
        self.job = job

    def on_start(self, class_names: list[str]) -> None:
        self.job.state.class_names = list(class_names)

    def on_metrics(self, metrics: dict) -> None:
        st = self.job.state
        st.step = metrics["step"]
        st.losses.append((metrics["step"], metrics["loss"]))
        if "eta_s" in metrics:
            st.eta_s = metrics["eta_s"]

    def on_checkpoint(self, path: Path, step: int) -> None:
        self.job.state.checkpoint = path
        self.job.record(step=step)
        if step % self.job.options.preview_every == 0 or step >= self.job.options.steps:
            self.job.make_preview(path, step)
            self.job.notify()

    def should_stop(self) -> bool:
        return self.job.cancel_event.is_set()


class FineTuneJob:
    """One fine-tuning run in `runs_dir/<run_id>`, executed in a background thread."""

    def __init__(self, studio: Studio, base_checkpoint: Path, upload: Optional[UploadReport],
                 options: FineTuneOptions, runs_dir: Path, run_id: Optional[str] = None):
        self.studio = studio
        self.base_checkpoint = Path(base_checkpoint)
        self.options = options.validate()
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.run_dir = Path(runs_dir) / self.run_id
        # The upload is kept in the run folder, so a run resumes without uploading again.
        self.upload = upload if upload is not None else load_upload(self.run_dir)
        self.state = JobState(self.run_id, total_steps=options.steps)
        self.cancel_event = threading.Event()
        self._changed = threading.Condition()
        self.version = 0                      # bumped when the status changes or a preview is ready
        self.thread = threading.Thread(target=self._run, name=f"finetune-{self.run_id}", daemon=True)

    def train_config(self) -> TrainConfig:
        o = self.options
        # Checkpoint every preview so a cancel never loses more than one interval of work.
        every = max(1, min(o.preview_every, 50))
        return TrainConfig(kind="nar", run_dir=str(self.run_dir), init=str(self.base_checkpoint),
                           steps=o.steps, batch_size=o.batch_size, lr=o.lr, warmup=min(20, o.steps // 5),
                           train_layers=o.train_layers, eval_every=10 ** 9, ckpt_every=every,
                           log_every=max(1, min(10, o.steps // 20)), seed=o.seed, dropout=0.1)

    def record(self, **fields) -> None:
        """Keep run.json in step with the job; a failed write (a full disk) never stops the job."""
        try:
            if "base" not in read_run_file(self.run_dir):
                fields["base"] = str(self.base_checkpoint)
            write_run_file(self.run_dir, run_id=self.run_id, target_steps=self.options.steps,
                           options=dataclasses.asdict(self.options), **fields)
        except OSError:
            pass

    def _run(self) -> None:
        st = self.state
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.record(status="tokenizing", message="")
            save_upload(self.run_dir, self.upload)
            st.status, st.message = "tokenizing", f"tokenizing {len(self.upload.labels)} images"
            self.notify()
            images = ImageSet(self.upload.images, self.upload.labels, self.upload.class_names)
            count = len(self.upload.labels)

            def progress(done: int, total: int) -> None:  # each image is encoded as-is and flipped
                st.tokenized = done / max(1, total)
                st.message = f"tokenizing {count} images ({done}/{total} views with the flipped ones)"
            tokens = tokenize(self.studio.vq, f"upload-{self.run_id}", images, self.run_dir, progress)
            st.tokenized = 1.0
            st.status, st.message = "training", "training"
            self.notify()
            self.record(status="training")
            # train_loop extends the base model's classes by the upload's and maps the labels
            vq = self.studio.vq.cfg
            best = train_loop(self.train_config(), tokens, None, self.upload.class_names, vq.codebook_size,
                              vq.grid_size, _JobCallbacks(self))
            st.checkpoint = best
            if self.cancel_event.is_set():
                st.status, st.message = "cancelled", f"cancelled at step {st.step}; the last checkpoint is kept"
            else:
                st.status, st.message = "done", f"finished {st.step} steps"
        except Exception as e:  # the UI shows the message; the server keeps running
            st.status, st.message = "failed", f"{type(e).__name__}: {e}"
        self.record(status=st.status, message=st.message, step=st.step)
        self.notify()

    def notify(self) -> None:
        """Wake whoever watches this job (the Train tab shows status changes as they happen)."""
        with self._changed:
            self.version += 1
            self._changed.notify_all()

    def wait_change(self, seen: int, timeout: float) -> int:
        """Block until the job changed since version `seen` (or timeout); the version now."""
        with self._changed:
            self._changed.wait_for(lambda: self.version != seen, timeout)
            return self.version

    def make_preview(self, path: Path, step: int) -> None:
        """Decode one image per uploaded class with NAR from the newest checkpoint, on the Studio's
        device and in its dtype (what Generate will show once the run is used)."""
        loaded = from_checkpoint(split_run_checkpoint(path)[0], device=self.studio.device, dtype=self.studio.dtype,
                                 fits=self.studio.vq.cfg)
        ids = torch.tensor([loaded.class_names.index(n) for n in self.upload.class_names][:8])
        model = loaded.model
        grid = generate(model, nar_schedule(model.config.grid_size), ids, SamplingConfig(seed=self.options.seed))
        self.state.preview = tile(list(self.studio.images(grid)))
        self.state.preview_step = step


def save_upload(run_dir: Path, upload: UploadReport) -> None:
    path = run_dir / "upload.npz"
    if not path.is_file():
        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, images=upload.images, labels=upload.labels,
                                    class_names=np.array(upload.class_names))
        atomic_write(path, write)


def load_upload(run_dir: Path) -> UploadReport:
    path = run_dir / "upload.npz"
    if not path.is_file():
        raise ValueError(f"run {run_dir.name} does not exist or has no saved upload to resume from")
    with np.load(path, allow_pickle=False) as f:
        return UploadReport(f["images"], f["labels"].astype(np.int64), [str(n) for n in f["class_names"]])


class FineTuneManager:
    """At most one running job per server; finished runs stay in runs_dir for download/resume."""

    def __init__(self, runs_dir: Path):
        self.runs_dir = Path(runs_dir)
        self._lock = threading.Lock()
        self.current: Optional[FineTuneJob] = None
        self.jobs: dict[str, FineTuneJob] = {}

    def busy(self) -> bool:
        return self.current is not None and self.current.thread.is_alive()

    def start(self, studio: Studio, base_checkpoint: Path, upload: Optional[UploadReport],
              options: FineTuneOptions, resume_run: Optional[str] = None) -> FineTuneJob:
        """Start a run on an upload, or resume run `resume_run` (its upload is in its folder)."""
        if resume_run is not None and not RUN_ID.match(resume_run):
            raise ValueError(f"{resume_run!r} is not a run id")
        if resume_run is None and (upload is None or not len(upload.labels)):
            raise ValueError("the upload has no usable images")
        with self._lock:
            if self.busy():
                raise Busy("a training job is already running on this server; try again when it finishes")
            job = FineTuneJob(studio, base_checkpoint, upload, options, self.runs_dir, resume_run)
            self.current = job
            self.jobs[job.run_id] = job
            job.thread.start()
            return job

    def cancel(self) -> bool:
        job = self.current
        if job is None or not job.thread.is_alive():
            return False
        job.cancel_event.set()
        return True
