"""The app's state over a Studio, in one object the tabs share: the models (ui/models.py), the
output folder (ui/files.py), the decodes running now, and the requests each tab serves (the
Generate stream, the Compare race, a measurement). Plain Python: driven and tested without Gradio.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

from nar.pipeline import Studio

from . import benchmarks
from .files import JobFiles
from .models import Models
from .race import COMPARE_ORDERS, Clock, CompareUpdate, compare_stream, decode_clock
from .requests import GenerateRequest, frame_seconds, parse_measure, parse_request
from .stream import DecodeTracker, GenerateUpdate, generate_stream


class Service:
    def __init__(self, studio: Studio, out_dir: Optional[Path] = None, checkpoint_dir: Optional[Path] = None):
        self.studio = studio
        self.files = JobFiles(out_dir)
        self.models = Models(studio, checkpoint_dir)
        self.decodes = DecodeTracker()

    @classmethod
    def from_folder(cls, folder: Path, device: Optional[str] = None, out_dir: Optional[Path] = None) -> "Service":
        return cls(Studio.from_pretrained(folder, device), out_dir=out_dir, checkpoint_dir=folder)

    @property
    def out_dir(self) -> Path:
        return self.files.root

    def request(self, orders: Sequence[str], **fields) -> GenerateRequest:
        """A checked request (see ui.requests.parse_request) for these orders."""
        return parse_request(self.studio, orders, **fields)

    def generate(self, request: GenerateRequest, min_frame_seconds: float = 0.0,
                 write_mp4: bool = True) -> Iterator[GenerateUpdate]:
        """Decode and yield a frame after every step; the last update has the final images and
        the animation files."""
        pace = frame_seconds(min_frame_seconds)
        with self.decodes.track("generate") as run:
            yield from generate_stream(self.studio, self.files, request, pace, write_mp4, run)

    def compare(self, request: GenerateRequest, min_frame_seconds: float = 0.0, max_frames: int = 90,
                clock: Clock = decode_clock) -> Iterator[CompareUpdate]:
        """Raster, ZipAR and NAR on the same class and seed, interleaved by `clock` (ui/race.py)."""
        pace = frame_seconds(min_frame_seconds)
        missing = [o for o in COMPARE_ORDERS if o not in request.class_ids]
        if missing:
            raise ValueError(f"the request was not checked for {', '.join(missing)}")
        with self.decodes.track("compare") as run:
            yield from compare_stream(self.studio, self.files, request, pace, max_frames, run, clock)

    def measure(self, batches: Sequence[int], window: int = 8, cfg: bool = True, rounds: int = 2,
                progress: Optional[Callable[[float, str], None]] = None) -> list[dict]:
        """Time per image against batch size for the three orders, measured now (ui/benchmarks.py)."""
        request = parse_measure(batches, window, rounds, self.models.grid_size())
        return benchmarks.measure(self.studio, request, cfg, progress)
