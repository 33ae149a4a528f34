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

import copy
import logging
import os
import time
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from nar.checkpoint import remove_stale_temp_files
from nar.config import ModelConfig
from nar.finetune import (ACTIVE, RUN_ID, Busy, FineTuneJob, FineTuneManager, FineTuneOptions, read_run_file,
                          write_run_file)
from nar.loading import fit_problem, load
from nar.names import quoted
from nar.pipeline import Studio
from nar.uploads import UploadLimits, UploadRefused, UploadScanner

from . import zerogpu
from .files import link_or_copy
from .requests import parse_options
from .service import Service
from .training_view import (FINISHED, RunInfo, RunView, ScanSummary, disk_view, duration, header, job_view,
                            scan_summary)

__all__ = ["Busy", "UploadRefused", "TrainingService"]

DEFAULTS = FineTuneOptions()
log = logging.getLogger("nar.ui")


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
            # run.json's step may lag its newest checkpoint by one write (a kill in between): the
            # checkpoint says which step Resume continues from
            last = run_dir / "last.safetensors"
            step = int(header(last)[1].get("step", 0)) if last.is_file() else 0
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
            record = read_run_file(run_dir)
            step = int(record.get("step", 0))
            total = int(record.get("target_steps", step) or step)
            if step < total:
                notes.append(f"Run {run_id} was interrupted at step {step} of {total} when the server stopped. "
                             f"Pick it under **Runs**, set **Steps** to {total} and press **Resume** to continue "
                             f"from its last checkpoint.")
        return " ".join(notes[:3])

    # -- facts for the UI -----------------------------------------------------------------
    def limits_text(self) -> str:
        return self.limits.describe()

    def _active(self, session: Optional[str] = None):
        loaded = self.service.studio_for(session).models.get("nar")
        if loaded is None:
            raise ValueError("no NAR model is active; load one in the Model tab first")
        return loaded

    def layer_choices(self, session: Optional[str] = None) -> list[tuple[str, str]]:
        try:
            blocks = len(self._active(session).model.layers)
        except ValueError:
            blocks = 0
        choices = [("All layers", "all"), ("Output heads and class embeddings only", "heads")]
        for k in (1, 2, 3, 4, 6, 8, 12, 16, 24):
            if k < blocks:
                choices.append((f"Last {k} block{'s' if k > 1 else ''}, heads and class embeddings", f"last:{k}"))
        return choices

    def base_checkpoint(self, session: Optional[str] = None) -> Path:
        """The file of the session's NAR model: where a new run starts."""
        loaded = self._active(session)
        path = loaded.path
        if path is None:
            raise ValueError(f"the active NAR model ({loaded.source}) was not loaded from a file, so it cannot be "
                             f"fine-tuned; load a checkpoint in the Model tab first")
        if not Path(path).is_file():
            raise ValueError(f"the file of the active NAR model ({loaded.source}) is gone (uploads are kept for "
                             f"an hour); load it again in the Model tab")
        return Path(path)

    def options(self, steps=DEFAULTS.steps, lr=DEFAULTS.lr, batch_size=DEFAULTS.batch_size,
                layers=DEFAULTS.train_layers, preview_every=DEFAULTS.preview_every, seed=0,
                session: Optional[str] = None) -> FineTuneOptions:
        """Validated options; every bad field is named in one ValueError."""
        try:
            blocks = len(self._active(session).model.layers)
        except ValueError:
            blocks = 0
        return parse_options(steps, lr, batch_size, layers, preview_every, seed, blocks)

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
            report = self.scanner.scan(paths, self.service.models.image_size(), (loose_class or "").strip())
        except UploadRefused as e:
            return ScanSummary(f"**Upload refused:** {e}", [], [], [], refused=str(e))
        return scan_summary(report, self.service.models.class_names())

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

    def start(self, files, loose_class: str, options: FineTuneOptions, session: Optional[str] = None) -> FineTuneJob:
        """Read the upload and start a run on the session's NAR model (the run is the session's:
        only it may cancel it). Raises Busy, UploadRefused or ValueError (no usable images, no
        model) with a message for the user."""
        self._check_free()  # answer a second user before reading their upload
        paths = self.paths(files)
        if not paths:
            raise ValueError("upload images or a zip of class folders first")
        report = self.scanner.scan(paths, self.service.models.image_size(), (loose_class or "").strip())
        if not len(report.labels):
            reasons = "; ".join(f"{name}: {why}" for name, why in report.skipped[:8])
            more = f" and {len(report.skipped) - 8} more" if len(report.skipped) > 8 else ""
            raise ValueError("the upload has no usable images" + (f" ({reasons}{more})" if reasons else ""))
        base = self.base_checkpoint(session)
        known = list(self._active(session).class_names)   # the model in `base`
        try:
            job = self.manager.start(training_studio(self.service.studio_for(session)), base, report, options)
        except Busy:
            raise Busy(self.busy_message()) from None
        job.owner = session
        job.skipped = report.skipped
        job.new_classes = [n for n in report.class_names if n not in known]
        return job

    def resume(self, run_id: str, options: FineTuneOptions, session: Optional[str] = None) -> FineTuneJob:
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
        saved = int(read_run_file(last.parent).get("step", 0))
        if options.steps <= saved:
            raise ValueError(f"run {run_id} has already trained {saved} steps; set Steps above {saved} to "
                             f"train it further")
        try:
            problem = fit_problem(ModelConfig.from_dict(header(last)[0]), self.service.studio_for(session).vq.cfg,
                                  "the active tokenizer")
        except (TypeError, ValueError):
            problem = "its checkpoint has no readable config"
        if problem:
            raise ValueError(f"run {run_id} cannot continue with the active models: {problem}; load the "
                             f"tokenizer it was trained with first")
        try:
            # the run's own checkpoint is the base: its class table already holds the upload's classes
            job = self.manager.start(training_studio(self.service.studio_for(session)), last, None, options,
                                     resume_run=run_id)
        except Busy:
            raise Busy(self.busy_message()) from None
        job.owner = session
        if job.state.step == 0:
            job.state.step = saved
        return job

    def cancel(self, run_id: str, session: Optional[str] = None) -> str:
        """Stop the run training now: only the session that started (or resumed) it may."""
        job = self.manager.current
        if not str(run_id or "").strip() and (job is None or not job.thread.is_alive()):
            raise ValueError("no run is training now: there is nothing to cancel")
        run_id = self._check_id(run_id)
        if job is None or job.run_id != run_id or not job.thread.is_alive():
            raise ValueError(f"run {run_id} is not training now")
        if getattr(job, "owner", None) != session:
            raise ValueError(f"run {run_id} was started by another visitor; only they can cancel it")
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
            return job_view(job)
        if not (self.runs_dir / run_id / "last.safetensors").is_file():
            raise ValueError(f"there is no run {run_id} with a checkpoint on this server")
        return disk_view(self.runs_dir / run_id)

    def watch(self, job: FineTuneJob, interval: Optional[float] = None,
              heartbeat: float = 5.0) -> Iterator[RunView]:
        """Views of a job as it changes, ending with the finished one: at once when its status
        changes or a preview is ready, else at most one per interval (steps and loss)."""
        interval = self.poll_seconds if interval is None else interval
        last_key, last_time = None, 0.0
        seen = job.version
        while True:
            alive = job.thread.is_alive()
            view = job_view(job)
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
                step = int(record.get("step", 0))
                total = int(record.get("target_steps", step) or step)
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
        step = int(header(best)[1].get("step", 0))
        out = self.service.files.new("weights")
        files = [link_or_copy(best, out / f"nar-finetuned-{run_id}-step{step}.safetensors")]
        last = best.parent / "last.safetensors"
        if last.is_file():
            files.append(link_or_copy(last, out / f"nar-finetuned-{run_id}-resumable.safetensors"))
        return files

    def use(self, run_id: str, session: Optional[str] = None) -> str:
        """Make a run's weights the session's NAR model (its Generate and Compare use it from now on;
        other visitors keep theirs). Runs in the main process (never inside a GPU call)."""
        best = self._finished(run_id)
        studio = self.service.studio_for(session)
        loaded = load(best, expect="nar", device=studio.device, dtype=studio.dtype)
        loaded.source = f"fine-tuned run {best.parent.name}"
        self.service.use(session, loaded)
        names = loaded.class_names
        step = header(best)[1].get("step", "?")
        return (f"The NAR model is now fine-tuned run {best.parent.name} (step {step}; {len(names)} classes: "
                f"{', '.join(names[:20])}{' …' if len(names) > 20 else ''}). The Generate and Compare tabs of this "
                f"page use it (other visitors keep theirs); **Back to the server's models** in the Model tab undoes "
                f"this.")


def training_studio(studio: Studio) -> Studio:
    """The Studio a fine-tuning job tokenizes and previews with. On ZeroGPU a background thread
    has no GPU, so the job trains on the CPU there (train_loop reads NAR_TRAIN_DEVICE), with a
    CPU copy of the tokenizer."""
    if not zerogpu.active():
        return studio
    os.environ["NAR_TRAIN_DEVICE"] = "cpu"
    return Studio(copy.deepcopy(studio.vq).to("cpu").float())


def _upload_classes(run_dir: Path) -> list[str]:
    try:
        with np.load(run_dir / "upload.npz", allow_pickle=False) as f:
            return [str(n) for n in f["class_names"]]
    except (OSError, ValueError, KeyError):
        return []
