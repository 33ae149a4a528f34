"""The app's state, in one object the tabs share: the model sets (ui/sessions.py: the server's,
shared and read-only, and each visitor's own), the output folder (ui/files.py), the decodes
running now, and the requests each tab serves (the Generate stream, the Compare race, a
measurement). Plain Python: driven and tested without Gradio.

Every request names its session (Gradio's session hash; None is the server's default models).
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import torch

from nar.loading import LoadedModel
from nar.pipeline import Studio

from . import benchmarks, zerogpu
from .files import JobFiles
from .models import Models
from .race import COMPARE_ORDERS, Clock, CompareUpdate, compare_stream, decode_clock
from .requests import GenerateRequest, frame_seconds, parse_measure, parse_request
from .sessions import ModelRegistry, OwnModels, SharedModels, release_memory
from .stream import DecodeTracker, GenerateUpdate, generate_stream, wait_until

log = logging.getLogger("nar.ui")
BUNDLED = "bundled"


def folder_models(folder: Path, device: Optional[str] = None, name: str = BUNDLED) -> SharedModels:
    """The checkpoints of a folder as one of the server's model sets."""
    return SharedModels(name, Studio.from_pretrained(folder, device), lambda: folder_models(folder, device, name))


@dataclass(frozen=True)
class DecodeJob:
    """A decode as it crosses into a ZeroGPU worker (pickled): the request and whose models."""
    kind: str                                  # "generate" or "compare"
    request: GenerateRequest
    shared: Optional[str]                      # a server model set by name, or
    own: Optional[tuple] = None                # a visitor's (tokenizer, NAR, raster)
    write_mp4: bool = True
    num_steps: int = 1


class Service:
    def __init__(self, studio: Optional[Studio] = None, out_dir: Optional[Path] = None,
                 checkpoint_dir: Optional[Path] = None, registry: Optional[ModelRegistry] = None):
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

    @classmethod
    def from_folder(cls, folder: Path, device: Optional[str] = None, out_dir: Optional[Path] = None) -> "Service":
        return cls(Studio.from_pretrained(folder, device), out_dir=out_dir, checkpoint_dir=folder)

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

    def generate(self, request: GenerateRequest, min_frame_seconds: float = 0.0,
                 write_mp4: bool = True, session: Optional[str] = None) -> Iterator[GenerateUpdate]:
        """Decode and yield a frame after every step; the last update has the final images and
        the animation files. A batch that does not fit in device memory is decoded at half the
        size (down to one image, then a message), and the server keeps serving."""
        pace = frame_seconds(min_frame_seconds)
        studio = self.studio_for(session)
        note, asked = "", request.num_images
        while True:
            try:
                if zerogpu.active():
                    yield from self._on_gpu("generate", request, session, pace, write_mp4, note)
                    return
                with self.decodes.track("generate") as run:
                    for update in generate_stream(studio, self.files, request, pace, write_mp4, run):
                        update.caption = note + update.caption
                        yield update
                return
            except torch.OutOfMemoryError:
                release_memory()
                if request.num_images <= 1:
                    raise ValueError("this request does not fit in the device's memory even for one image "
                                     "(other decodes may hold it now); try again, or a smaller model") from None
                half = request.num_images // 2
                log.warning("generate: %d images did not fit in device memory; decoding %d", request.num_images,
                            half)
                note = f"(did not fit in device memory at {asked} images: decoded {half}) "
                request = dataclasses.replace(request, num_images=half,
                                              class_ids={o: t[:half] for o, t in request.class_ids.items()})

    def compare(self, request: GenerateRequest, min_frame_seconds: float = 0.0, max_frames: int = 90,
                clock: Clock = decode_clock, session: Optional[str] = None) -> Iterator[CompareUpdate]:
        """Raster, ZipAR and NAR on the same class and seed, interleaved by `clock` (ui/race.py)."""
        pace = frame_seconds(min_frame_seconds)
        missing = [o for o in COMPARE_ORDERS if o not in request.class_ids]
        if missing:
            raise ValueError(f"the request was not checked for {', '.join(missing)}")
        studio = self.studio_for(session)
        try:
            if zerogpu.active():
                yield from self._on_gpu("compare", request, session, pace)
                return
            with self.decodes.track("compare") as run:
                yield from compare_stream(studio, self.files, request, pace, max_frames, run, clock)
        except torch.OutOfMemoryError:
            release_memory()
            raise ValueError("the race does not fit in the device's memory now (other decodes may hold it); "
                             "try again in a moment") from None

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

    # -- ZeroGPU: decode in one GPU call, pace here ------------------------------------------------
    def _on_gpu(self, kind: str, request: GenerateRequest, session: Optional[str], pace: float,
                write_mp4: bool = True, note: str = "") -> Iterator:
        entry = self.registry.entry(session)
        studio = entry.studio
        orders = COMPARE_ORDERS if kind == "compare" else (request.order,)
        steps = sum(len(studio.schedule(o, request.window)) for o in orders)
        tokens = len(orders) * int(studio.vq.cfg.grid_size) ** 2
        # a worker forked at start-up holds the start-up model sets: anything else travels with the job
        travels = isinstance(entry, OwnModels) or self.registry.generation > 0
        own = (studio.vq, studio.models.get("nar"), studio.models.get("raster")) if travels else None
        job = DecodeJob(kind, request, None if own else entry.name, own, write_mp4, steps)
        updates = zerogpu.collect_on_gpu(job, zerogpu.decode_seconds(request.num_images, steps, tokens))
        shown = None
        for update in updates:
            shown = wait_until(shown, pace)
            if kind == "generate":
                update.caption = note + update.caption
            yield update

    def run_job(self, job: DecodeJob) -> Iterator:
        """Inside a GPU call: the decode of a job, unpaced (the main process paces the replay)."""
        if job.own is not None:
            studio = Studio(*job.own)
        else:
            studio = self.registry.shared(job.shared).studio
        with self.decodes.track(job.kind) as run:
            if job.kind == "compare":
                yield from compare_stream(studio, self.files, job.request, 0.0, 90, run, decode_clock)
            else:
                yield from generate_stream(studio, self.files, job.request, 0.0, job.write_mp4, run)
