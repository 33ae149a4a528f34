"""The app's own output folder: one subfolder per job (images, animations, copies of weights for
download), old ones removed as new ones start. It is the only folder the app asks Gradio to serve.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Optional


class JobFiles:
    def __init__(self, root: Optional[Path] = None, keep_seconds: float = 3600.0, keep_jobs: int = 200):
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="nar-studio-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep_seconds, self.keep_jobs = keep_seconds, keep_jobs
        self._lock = threading.Lock()

    def new(self, kind: str) -> Path:
        """A fresh folder for one job's files."""
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


def link_or_copy(src: Path, dst: Path) -> Path:
    """`dst` as a hard link to `src` (no copy of a large file), or a copy across file systems."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
    return dst


def slug(text: str) -> str:
    """`text` as a safe piece of a file name."""
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text.lower()).strip("-") or "image"


def animation_fps(steps: int) -> float:
    """Frames per second of a saved animation: about 4 s long, 4 to 30 fps."""
    return float(min(30.0, max(4.0, steps / 4.0)))
