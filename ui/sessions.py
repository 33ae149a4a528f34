"""Whose models a request decodes with: the server's shared models, or a visitor's own.

The server's models (the bundled checkpoints, or the presets named at start-up) are shared and
never changed by a visitor. A visitor may switch among them for their own session; a model a
visitor loads or fine-tunes becomes a Studio of that session only, which starts as a shallow copy
of the session's current Studio (the unchanged models are shared, not copied) with the change
applied. At most `cap` session Studios are held; the least recently used is dropped first, and
its visitor is told so on their next request.

Plain Python (no Gradio): a session is named by a key, Gradio's session hash in the app.
"""
from __future__ import annotations

import gc
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from nar.config import SamplingConfig
from nar.pipeline import Studio

DEFAULT_SESSION_MODELS = 4
REMEMBERED_EVICTIONS = 10_000      # keys whose eviction is still explained on their next request
ANONYMOUS = "anonymous"            # direct calls without a Gradio request


class SessionModelGone(ValueError):
    """A visitor's own model was dropped to free memory; the session is back on the server's model."""


@dataclass
class SharedModels:
    """One of the server's model sets, read-only for visitors."""
    name: str
    studio: Studio
    load: Callable[[], "SharedModels"]                  # builds it again (after an admin replaced it)
    sampling: dict[str, SamplingConfig] = field(default_factory=dict)   # order -> the preset's defaults
    notes: list[str] = field(default_factory=list)      # e.g. "no raster partner: NAR alone"
    preset: Optional[object] = None                     # nar.presets.Preset when it is one


@dataclass
class OwnModels:
    """A visitor's own Studio, and what it started from."""
    studio: Studio
    label: str
    base: str                                           # the shared set it was copied from
    sampling: dict[str, SamplingConfig] = field(default_factory=dict)


def copy_studio(studio: Studio) -> Studio:
    """A new Studio over the same tokenizer and models: changing it leaves `studio` as it is."""
    return Studio(studio.vq, studio.models.get("nar"), studio.models.get("raster"))


def release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


class ModelRegistry:
    """The shared model sets, the session Studios (LRU, at most `cap`) and each session's choice."""

    def __init__(self, shared: list[SharedModels], cap: int = DEFAULT_SESSION_MODELS):
        if not shared:
            raise ValueError("the server needs at least one model set")
        if cap < 0:
            raise ValueError("the number of session models must be 0 or more")
        self.cap = cap
        self._shared: dict[str, SharedModels] = {s.name: s for s in shared}
        self.default = shared[0].name
        self._own: OrderedDict[str, OwnModels] = OrderedDict()
        self._choice: OrderedDict[str, str] = OrderedDict()   # session -> shared name (small, bounded)
        self._evicted: OrderedDict[str, str] = OrderedDict()  # session -> what was dropped
        self._lock = threading.RLock()
        self.replacing = False
        self.generation = 0       # admin replacements (a GPU worker forked before holds the old sets)

    # -- looking up ---------------------------------------------------------------------------
    @property
    def shared_names(self) -> list[str]:
        return list(self._shared)

    def shared(self, name: Optional[str] = None) -> SharedModels:
        with self._lock:
            if self.replacing:
                raise ValueError("the server's models are being replaced; try again in a moment")
            return self._shared[name or self.default]

    def entry(self, key: str):
        """The session's OwnModels or SharedModels. Raises SessionModelGone once after its own
        model was dropped (the session is on the server's default model from then on)."""
        key = key or ANONYMOUS
        with self._lock:
            own = self._own.get(key)
            if own is not None:
                self._own.move_to_end(key)
                return own
            gone = self._evicted.pop(key, None)
            if gone is not None:
                raise SessionModelGone(
                    f"your model ({gone}) was unloaded to free memory: this server holds at most {self.cap} "
                    f"visitors' own models at once and drops the least recently used. You are back on the "
                    f"server's model {self.default}; load yours again in the Model tab.")
            name = self._choice.get(key)
            if name not in self._shared:
                name = self.default
            return self.shared(name)

    def studio(self, key: str) -> Studio:
        return self.entry(key).studio

    def owns(self, key: str) -> bool:
        with self._lock:
            return (key or ANONYMOUS) in self._own

    def held(self) -> int:
        with self._lock:
            return len(self._own)

    # -- a session's changes ----------------------------------------------------------------------
    def choose(self, key: str, name: str) -> SharedModels:
        """Switch the session to one of the server's model sets (its own model is dropped)."""
        key = key or ANONYMOUS
        with self._lock:
            if name not in self._shared:
                raise ValueError(f"the server has no model set {name!r}; choose from {', '.join(self._shared)}")
            self._own.pop(key, None)
            self._evicted.pop(key, None)
            self._choice[key] = name
            self._choice.move_to_end(key)
            while len(self._choice) > REMEMBERED_EVICTIONS:
                self._choice.popitem(last=False)
            return self._shared[name]

    def change(self, key: str, apply: Callable[[Studio], str], label: Optional[str] = None,
               sampling: Optional[dict] = None) -> str:
        """Give the session its own Studio: a copy of its current one with `apply` run on it (the
        copy is dropped if `apply` raises, so a failed change changes nothing). Returns apply's
        message, with a note when another visitor's model had to be dropped to make room."""
        key = key or ANONYMOUS
        if self.cap == 0:
            raise ValueError("this server keeps no visitors' own models (--session-models 0); only the "
                             "server's models can be used")
        try:
            current = self.entry(key)
        except SessionModelGone:
            current = self.shared()
        studio = copy_studio(current.studio)
        message = apply(studio)
        base = getattr(current, "base", None) or current.name
        kept = dict(current.sampling) if sampling is None else sampling
        self._hold(key, OwnModels(studio, label or message, base, kept))
        return message

    def set_own(self, key: str, studio: Studio, label: str, sampling: Optional[dict] = None) -> None:
        """Make a Studio built elsewhere (a preset the server does not share) the session's own."""
        if self.cap == 0:
            raise ValueError("this server keeps no visitors' own models (--session-models 0); only the "
                             "server's models can be used")
        self._hold(key or ANONYMOUS, OwnModels(studio, label, label, dict(sampling or {})))

    def _hold(self, key: str, own: OwnModels) -> None:
        with self._lock:
            self._own[key] = own
            self._own.move_to_end(key)
            self._evicted.pop(key, None)
            while len(self._own) > self.cap:
                old_key, old = self._own.popitem(last=False)
                self._evicted[old_key] = old.label[:120]
                while len(self._evicted) > REMEMBERED_EVICTIONS:
                    self._evicted.popitem(last=False)
        release_memory()

    def forget(self, key: str) -> None:
        """Back to the server's default model set."""
        key = key or ANONYMOUS
        with self._lock:
            self._own.pop(key, None)
            self._choice.pop(key, None)
            self._evicted.pop(key, None)

    # -- the admin's change -----------------------------------------------------------------------
    def replace_shared(self, loaders: list[Callable[[], SharedModels]]) -> list[str]:
        """Replace the server's model sets (the first becomes the default). The old ones are
        released before the new ones load, so both never need device memory together; if a new
        one fails to load, the old ones are loaded again and the error is raised."""
        with self._lock:
            if self.replacing:
                raise ValueError("the server's models are being replaced already")
            self.replacing = True
            old = list(self._shared.values())
            rebuild = [s.load for s in old]
            self._shared = {}
        del old
        release_memory()
        try:
            new = [load() for load in loaders]
        except Exception:
            restored = [load() for load in rebuild]
            with self._lock:
                self._shared = {s.name: s for s in restored}
                self.replacing = False
            raise
        with self._lock:
            self._shared = {s.name: s for s in new}
            self.default = new[0].name
            self.replacing = False
            self.generation += 1
            return list(self._shared)

