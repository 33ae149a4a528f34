"""The app's state, in one object the tabs share: the model sets (ui/sessions.py: the server's,
shared and read-only, and each visitor's own), the output folder (ui/files.py), the decodes
running now, and the requests each tab serves (the Generate stream, the Compare race, a
measurement). Plain Python: driven and tested without Gradio.

Every request names its session (Gradio's session hash; None is the server's default models).
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch

from nar.loading import LoadedModel
from nar.pipeline import Studio
from nar.video import VideoStudio

from . import benchmarks, zerogpu
from .files import JobFiles
from .models import Models
from .race import COMPARE_ORDERS, Clock, CompareUpdate, compare_stream, decode_clock
from .requests import GenerateRequest, frame_seconds, parse_measure, parse_request
from .sessions import ModelRegistry, OwnModels, SharedModels, release_memory
from .live import StopFlag
from .results import ResultStore, kept_step, scrub_caption, scrub_frame
from .stream import DecodeTracker, GenerateUpdate, generate_stream, no_wait, wait_until
from .video import (NO_VIDEO, VideoUpdate, load_video_models, parse_video_request, scrub_view, video_race_stream,
                    video_stream)

log = logging.getLogger("nar.ui")
BUNDLED = "bundled"
BUNDLED_TEXT = "bundled-text"    # the folder's text-to-image models (t2i_*.safetensors, text_encoder.safetensors)
TEXT_FILES = ("t2i_nar.safetensors", "t2i_raster.safetensors", "text_encoder.safetensors", "vq.safetensors")


def folder_models(folder: Path, device: Optional[str] = None, name: str = BUNDLED) -> SharedModels:
    """The checkpoints of a folder as one of the server's model sets (BUNDLED_TEXT: its text models)."""
    studio = Studio.from_pretrained(folder, device, text=name == BUNDLED_TEXT)
    return SharedModels(name, studio, lambda: folder_models(folder, device, name))


def has_text_models(folder: Optional[Path]) -> bool:
    return folder is not None and all((Path(folder) / f).is_file() for f in TEXT_FILES)


@dataclass(frozen=True)
class DecodeJob:
    """A decode as it crosses into a ZeroGPU worker (pickled): the request and whose models."""
    kind: str                                  # "generate", "compare" or "scrub"
    request: Optional[GenerateRequest]
    shared: Optional[str]                      # a server model set by name, or
    own: Optional[tuple] = None                # a visitor's (tokenizer, NAR, raster)
    write_mp4: bool = True
    num_steps: int = 1
    replay: float = 0.0                        # seconds a step: the replay's frames are drawn in the call
    scrub: Optional[tuple] = None              # a "scrub" job: (KeptSteps, step, overlay)


class Service:
    def __init__(self, studio: Optional[Studio] = None, out_dir: Optional[Path] = None,
                 checkpoint_dir: Optional[Path] = None, registry: Optional[ModelRegistry] = None,
                 video: Optional[VideoStudio] = None, video_note: str = ""):
        if registry is None:
            if studio is None:
                raise ValueError("give a Studio or a ModelRegistry")
            device = str(studio.device)      # the reload must not keep the old Studio alive
            reload = (lambda: folder_models(checkpoint_dir, device)) if checkpoint_dir else None
            registry = ModelRegistry([SharedModels(BUNDLED, studio, reload)])
        self.registry = registry
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.files = JobFiles(out_dir)
        self.decodes = DecodeTracker()
        self.results = ResultStore()
        self._running: dict[str, list] = {}       # session -> its running decodes (what Stop stops)
        self._stop_waiting: dict[str, int] = {}   # session -> its waiting requests Stop ended before they began
        self._running_lock = threading.Lock()
        self.video = video                        # the server's video models (shared, read-only) or None
        self.video_note = video_note or ("" if video is not None else NO_VIDEO)   # what the Video tab says

    @classmethod
    def from_folder(cls, folder: Path, device: Optional[str] = None, out_dir: Optional[Path] = None) -> "Service":
        studio = Studio.from_pretrained(folder, device)
        video, note = load_video_models(folder, studio.device)
        return cls(studio, out_dir=out_dir, checkpoint_dir=folder, video=video, video_note=note)

    @property
    def out_dir(self) -> Path:
        return self.files.root

    # -- whose models -----------------------------------------------------------------------------
    @property
    def studio(self) -> Studio:
        """The server's default models (what a new session decodes with)."""
        return self.registry.shared().studio

    @property
    def models(self) -> Models:
        return Models(self.studio, self.checkpoint_dir)

    def studio_for(self, session: Optional[str] = None) -> Studio:
        return self.registry.studio(session)

    def models_for(self, session: Optional[str] = None) -> Models:
        return Models(self.studio_for(session), self.checkpoint_dir)

    def sampling_for(self, session: Optional[str] = None) -> dict:
        """The session's sampling defaults by order (a preset's; empty for the bundled models)."""
        return dict(self.registry.entry(session).sampling)

    def describe_session(self, session: Optional[str] = None) -> str:
        entry = self.registry.entry(session)
        if isinstance(entry, OwnModels):
            return (f"your own models ({entry.label[:200]}), started from the server's {entry.base}; "
                    f"other visitors do not see them")
        notes = "; ".join(entry.notes)
        return f"the server's models **{entry.name}**" + (f" ({notes})" if notes else "")

    # -- a session's changes (main process; never inside a GPU call) --------------------------------
    def load(self, session: Optional[str], upload_paths: Sequence[str] = (), repo_id: str = "", filenames: str = "",
             grid_size=None) -> str:
        """Load checkpoints into the session's own models (see Models.load)."""
        return self.registry.change(session, lambda studio: Models(studio).load(upload_paths, repo_id, filenames,
                                                                               grid_size))

    def use(self, session: Optional[str], loaded: LoadedModel) -> None:
        """Make a transformer (a fine-tuned run) the session's own."""
        self.registry.change(session, lambda studio: Models(studio).use(loaded) or f"{loaded.source}")

    def reset(self, session: Optional[str]) -> str:
        """Back to the server's default models."""
        self.registry.forget(session)
        release_memory()
        return f"Back to the server's models ({self.registry.default})."

    def choose(self, session: Optional[str], name: str) -> str:
        shared = self.registry.choose(session, name)
        return f"Now using the server's models **{shared.name}**" + (
            f" ({'; '.join(shared.notes)})" if shared.notes else "") + "."

    # -- requests -----------------------------------------------------------------------------------
    def request(self, orders: Sequence[str], session: Optional[str] = None, **fields) -> GenerateRequest:
        """A checked request (see ui.requests.parse_request) for these orders."""
        return parse_request(self.studio_for(session), orders, **fields)

    def generate(self, request: GenerateRequest, replay_seconds: float = 0.0,
                 write_mp4: bool = True, session: Optional[str] = None) -> Iterator[GenerateUpdate]:
        """The newest decoded step while the decoder runs at full speed (frames the view cannot
        show are dropped), the kept steps replayed when `replay_seconds` > 0, then the final
        images (the update has `result_id` in its summary), then the animation files.
        `stop(session)` ends the decode cleanly at its next step. A batch that does not fit in
        device memory is decoded at half the size (down to one image, then a message), and the
        server keeps serving."""
        replay = frame_seconds(replay_seconds)
        note, asked, result_id = "", request.num_images, None
        registered: list = []
        try:
            while True:
                try:
                    for update in self._generate_once(request, replay, write_mp4, session, registered):
                        if note and not update.caption.startswith(note):
                            update.caption = note + update.caption
                        if update.kept is not None:    # the done update, and the files after it
                            if result_id is None:
                                result_id = self.results.add(update.kept, request_params(request), update.caption,
                                                             str(update.images[0]) if update.images else None,
                                                             session).id
                            update.summary["result_id"] = result_id
                        yield update
                    return
                except torch.OutOfMemoryError:
                    release_memory()
                    if request.num_images <= 1:
                        raise ValueError("this request does not fit in the device's memory even for one image "
                                         "(other decodes may hold it now); try again, or a smaller model") from None
                    half = request.num_images // 2
                    log.warning("generate: %d images did not fit in device memory; decoding %d",
                                request.num_images, half)
                    note = f"(did not fit in device memory at {asked} images: decoded {half}) "
                    request = dataclasses.replace(request, num_images=half,
                                                  conditions={o: c.index(slice(None, half))
                                                              for o, c in request.conditions.items()})
        finally:
            self._forget(session, registered)

    def _generate_once(self, request: GenerateRequest, replay: float, write_mp4: bool, session: Optional[str],
                       registered: list) -> Iterator[GenerateUpdate]:
        if zerogpu.active():
            yield from self._on_gpu("generate", request, session, replay, registered, write_mp4)
            return
        studio = self.studio_for(session)
        with self.decodes.track("generate") as run:
            yield from generate_stream(studio, self.files, request, replay, write_mp4, run,
                                       self._register(session, registered))

    def compare(self, request: GenerateRequest, replay_seconds: float = 0.0, max_frames: int = 90,
                clock: Clock = decode_clock, session: Optional[str] = None) -> Iterator[CompareUpdate]:
        """Raster, ZipAR and NAR on the same class and seed, interleaved by `clock` (ui/race.py);
        `stop(session)` ends the race cleanly."""
        replay = frame_seconds(replay_seconds)
        missing = [o for o in COMPARE_ORDERS if o not in request.conditions]
        if missing:
            raise ValueError(f"the request was not checked for {', '.join(missing)}")
        registered: list = []
        try:
            if zerogpu.active():
                yield from self._on_gpu("compare", request, session, replay, registered)
                return
            studio = self.studio_for(session)
            with self.decodes.track("compare") as run:
                yield from compare_stream(studio, self.files, request, replay, max_frames, run, clock,
                                          self._register(session, registered))
        except torch.OutOfMemoryError:
            release_memory()
            raise ValueError("the race does not fit in the device's memory now (other decodes may hold it); "
                             "try again in a moment") from None
        finally:
            self._forget(session, registered)

    # -- clips (ui/video.py): the server's video models for every session --------------------------
    def video_request(self, orders: Sequence[str], **fields) -> GenerateRequest:
        """A checked clip request (see ui.video.parse_video_request) for these orders."""
        return parse_video_request(self.video, orders, **fields)

    def generate_video(self, request: GenerateRequest, session: Optional[str] = None) -> Iterator[VideoUpdate]:
        """The newest decoded step of the clips while the decoder runs at full speed, then the clips
        with their MP4 and GIF (the last update has `result_id` in its summary); `stop(session)`
        ends the decode at its next step."""
        registered: list = []
        try:
            with self.decodes.track("video") as run:
                for update in video_stream(self.video, self.files, request, run, self._register(session, registered)):
                    if update.kept is not None:
                        update.summary["result_id"] = self.results.add(
                            update.kept, {**request_params(request), "video": True}, update.caption,
                            session=session).id
                    yield update
        except torch.OutOfMemoryError:
            release_memory()
            raise ValueError("these clips do not fit in the device's memory now; try fewer") from None
        finally:
            self._forget(session, registered)

    def race_video(self, request: GenerateRequest, max_frames: int = 90, clock: Clock = decode_clock,
                   session: Optional[str] = None) -> Iterator[CompareUpdate]:
        """Raster and NAR on the same motion and seed, interleaved by `clock`; `stop(session)` ends it."""
        registered: list = []
        try:
            with self.decodes.track("video race") as run:
                yield from video_race_stream(self.video, request, max_frames, run, clock,
                                             self._register(session, registered))
        except torch.OutOfMemoryError:
            release_memory()
            raise ValueError("the race does not fit in the device's memory now; try again in a moment") from None
        finally:
            self._forget(session, registered)

    def scrub_video(self, result_id: str, step, session: Optional[str] = None) -> tuple[np.ndarray, str]:
        """One of the session's kept clip decodes after `step` steps (drawn now) and its caption."""
        result = self.results.get(result_id, session)
        if not result.params.get("video") or self.video is None:
            raise ValueError("that result is not a clip of this server's video models")
        step = kept_step(result.kept, step)
        return scrub_view(self.video, result.kept, step), scrub_caption(result.kept, step)

    # -- Stop, and the kept results ------------------------------------------------------------------
    def _register(self, session: Optional[str], registered: list):
        def started(decode):
            registered.append(decode)
            with self._running_lock:
                self._running.setdefault(session, []).append(decode)
        return started

    def _forget(self, session: Optional[str], decodes: list) -> None:
        with self._running_lock:
            running = self._running.get(session, [])
            for d in decodes:
                if d in running:
                    running.remove(d)
            if not running:
                self._running.pop(session, None)

    def stop(self, session: Optional[str] = None, waiting: int = 0) -> str:
        """Stop the decodes `session` is running (each ends at its next step and shows where), and
        the `waiting` requests it has in the queue (each ends as it begins: `stopped_while_waiting`)."""
        with self._running_lock:
            running = list(self._running.get(session, []))
            if waiting > 0:
                self._stop_waiting[session] = waiting
        for decode in running:
            decode.stop()
        said = []
        if running:
            said.append(f"stopping {len(running)} decode{'s' if len(running) != 1 else ''}")
        if waiting > 0:
            said.append(f"{waiting} waiting request{'s' if waiting != 1 else ''} will not run")
        return "; ".join(said) if said else "nothing is decoding in this session"

    def stopped_while_waiting(self, session: Optional[str] = None) -> bool:
        """Called as a request of `session` begins: True (once per request) when Stop was pressed
        while it waited in the queue, so it ends at once instead of decoding."""
        with self._running_lock:
            left = self._stop_waiting.get(session, 0)
            if left <= 0:
                return False
            if left == 1:
                self._stop_waiting.pop(session)
            else:
                self._stop_waiting[session] = left - 1
            return True

    def scrub(self, result_id: str, step, overlay: bool = False,
              session: Optional[str] = None) -> tuple[np.ndarray, str]:
        """The picture of one of the session's kept results after `step` steps (rendered now,
        nothing decoded again) and its caption; the sampled tokens' probabilities as a heat map
        when `overlay`."""
        result = self.results.get(result_id, session)
        if result.params.get("video"):
            raise ValueError("that result is a clip: the Video tab's step slider (/show_video_step) shows its steps")
        kept = result.kept
        step = kept_step(kept, step)
        conf = kept.confidence_at(step)
        decoded = conf[~np.isnan(conf)]
        note = (f" · sampled-token probability: median {np.median(decoded):.2f}, "
                f"lowest {decoded.min():.2f} (red low, green high)" if overlay and decoded.size else "")
        caption = scrub_caption(kept, step) + note
        if zerogpu.active():      # the tokenizer's decoder is on the GPU: draw it in a short GPU call
            job = self._job("scrub", None, session, scrub=(kept, step, bool(overlay)))
            return zerogpu.collect_on_gpu(job, zerogpu.BASE_SECONDS)[0], caption
        return scrub_frame(self.studio_for(session), kept, step, overlay), caption

    def measure(self, batches: Sequence[int], window: int = 8, cfg: bool = True, rounds: int = 2,
                progress: Optional[Callable[[float, str], None]] = None, session: Optional[str] = None) -> list[dict]:
        """Time per image against batch size for the three orders, measured now (ui/benchmarks.py)."""
        studio = self.studio_for(session)
        request = parse_measure(batches, window, rounds, int(studio.vq.cfg.grid_size))
        try:
            return benchmarks.measure(studio, request, cfg, progress)
        except torch.OutOfMemoryError:
            release_memory()
            raise ValueError("these batch sizes do not fit in the device's memory; pick smaller ones") from None

    # -- ZeroGPU: decode (and draw) in one GPU call, pace here -----------------------------------------
    def _job(self, kind: str, request: Optional[GenerateRequest], session: Optional[str], **fields) -> DecodeJob:
        entry = self.registry.entry(session)
        studio = entry.studio
        # a worker forked at start-up holds the start-up model sets: anything else travels with the job
        travels = isinstance(entry, OwnModels) or self.registry.generation > 0
        own = (studio.vq, studio.models.get("nar"), studio.models.get("raster")) if travels else None
        return DecodeJob(kind, request, None if own else entry.name, own, **fields)

    def _on_gpu(self, kind: str, request: GenerateRequest, session: Optional[str], replay: float,
                registered: list, write_mp4: bool = True) -> Iterator:
        """The decode, its live frames and its replay's frames drawn in one GPU call that never
        sleeps; the replay is paced here. Stop ends the paced replay (the call has finished)."""
        studio = self.studio_for(session)
        orders = COMPARE_ORDERS if kind == "compare" else (request.order,)
        steps = sum(len(studio.schedule(o, request.window)) for o in orders)
        tokens = len(orders) * int(studio.vq.cfg.grid_size) ** 2
        job = self._job(kind, request, session, write_mp4=write_mp4, num_steps=steps, replay=replay)
        updates = zerogpu.collect_on_gpu(job, zerogpu.decode_seconds(request.num_images, steps, tokens))
        stop = StopFlag()
        self._register(session, registered)(stop)
        shown = None
        for update in updates:
            if stop.stopping and not update.done:
                continue
            shown = wait_until(shown, replay)
            yield update

    def run_job(self, job: DecodeJob):
        """Inside a GPU call: the decode of a job, never sleeping (the main process paces the replay)."""
        if job.own is not None:
            studio = Studio(*job.own)
        else:
            studio = self.registry.shared(job.shared).studio
        if job.kind == "scrub":
            return [scrub_frame(studio, *job.scrub)]
        return self._decode_job(studio, job)

    def _decode_job(self, studio: Studio, job: DecodeJob) -> Iterator:
        with self.decodes.track(job.kind) as run:
            if job.kind == "compare":
                yield from compare_stream(studio, self.files, job.request, job.replay, 90, run, decode_clock,
                                          wait=no_wait)
            else:
                yield from generate_stream(studio, self.files, job.request, job.replay, job.write_mp4, run,
                                           wait=no_wait)


def request_params(request: GenerateRequest) -> dict:
    """What restores a request's inputs (the history, the share link)."""
    s = request.sampling
    return {"class": request.class_name, "seed": s.seed, "order": request.order, "window": request.window,
            "images": request.num_images, "cfg": s.cfg_scale, "cfg_interval": s.cfg_interval,
            "temperature": s.temperature, "top_k": s.top_k, "top_p": s.top_p, "text": request.is_text}
