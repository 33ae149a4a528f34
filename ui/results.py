"""Finished (or stopped) decodes a visitor can come back to: each result's kept steps and its
parameters, by id, for the scrubber, the history and the share link. Bounded: the oldest go first.
Plain Python, no Gradio."""
from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Optional
from urllib.parse import urlencode

import numpy as np

from nar.render import heat_overlay, tile

from .live import KeptSteps

KEEP_RESULTS = 256             # about 10 KB of tokens each for one 16 x 16 image


@dataclass
class Result:
    id: str
    kept: KeptSteps
    params: dict                      # what restores the inputs: class, seed, order, window, sampling, images
    caption: str
    thumbnail: Optional[str] = None   # the first final image (a served PNG path)
    session: Optional[str] = None     # whose it is: only that session sees it
    extra: dict = field(default_factory=dict)


class ResultStore:
    def __init__(self, capacity: int = KEEP_RESULTS):
        self.capacity = capacity
        self._items: OrderedDict[str, Result] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, kept: KeptSteps, params: dict, caption: str, thumbnail: Optional[str] = None,
            session: Optional[str] = None) -> Result:
        result = Result(uuid.uuid4().hex[:12], kept, dict(params), caption, thumbnail, session)
        with self._lock:
            self._items[result.id] = result
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return result

    def get(self, result_id: Optional[str], session: Optional[str] = None) -> Result:
        """The session's result by id (another session's is as unknown as a dropped one)."""
        with self._lock:
            result = self._items.get(str(result_id or ""))
        if result is None or result.session != session:
            raise ValueError("that result is no longer kept; generate it again")
        return result


def share_query(params: dict) -> str:
    """The query string that restores `params` when the page is opened with it."""
    keys = ("class", "seed", "order", "window", "images", "cfg", "cfg_interval", "temperature", "top_k", "top_p")
    return "?" + urlencode({k: params[k] for k in keys if params.get(k) is not None})


def params_caption(params: dict) -> str:
    window = f" (window {params['window']})" if params.get("order") == "zipar" else ""
    return (f"{params['class']} · seed {params['seed']} · {params['order']}{window} · "
            f"{params['images']} image{'s' if params['images'] != 1 else ''} · CFG {params['cfg']}")


def kept_step(kept: KeptSteps, step) -> int:
    """A scrubber's step as a kept step (1 to the steps kept), or ValueError."""
    if not kept.done:
        raise ValueError("that decode was stopped before its first step")
    try:
        return max(1, min(int(step), kept.done))
    except (TypeError, ValueError):
        raise ValueError(f"step must be a whole number, got {step!r}") from None


def scrub_caption(kept: KeptSteps, step: int) -> str:
    return (f"step {step}/{kept.num_steps} - {kept.elapsed[step - 1]:.2f} s of decoding"
            f"{' (stopped at ' + str(kept.done) + ')' if kept.stopped else ''}")


def scrub_frame(studio, kept: KeptSteps, step: int, overlay: bool) -> np.ndarray:
    """The picture after `step` kept steps, rendered now from its tokens (no decoding), with the
    sampled tokens' probabilities as a heat map when `overlay`."""
    from .stream import live_scale
    step = max(1, min(int(step), kept.done))
    scale = live_scale(kept.batch, studio.vq.cfg.image_size)
    frames = studio.frames(kept.record_at(step), scale=scale)
    if overlay:
        n = studio.vq.cfg.grid_size
        conf = kept.confidence_at(step).reshape(-1, n, n)
        frames = [heat_overlay(f, c) for f, c in zip(frames, conf)]
    return tile(frames, min(4, kept.batch))
