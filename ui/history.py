"""The session's results history, the curated examples and the share link's query parameters, as
input values for the Generate and Compare tabs (plain values and gr.update's)."""
from __future__ import annotations

from typing import Optional

import gradio as gr

from .results import Result, params_caption

MAX_HISTORY = 24                 # results a session keeps in view
EXAMPLES = [                     # good starting points on the bundled emoji models
    {"class": "smiley", "seed": 0, "order": "nar"},
    {"class": "heart", "seed": 3, "order": "raster"},
    {"class": "flag", "seed": 7, "order": "zipar", "window": 8},
    {"class": "vehicle", "seed": 11, "order": "nar", "images": 4},
]
DEFAULTS = {"images": 1, "window": 8, "cfg": 4.0, "cfg_interval": -1, "temperature": 1.0, "top_k": 2000,
            "top_p": 1.0}
INPUT_ORDER = ("class", "images", "seed", "order", "window", "cfg", "cfg_interval", "temperature", "top_k", "top_p")


class History:
    def __init__(self, entries: Optional[list] = None):
        self.entries = list(entries or [])

    def add(self, result: Result) -> "History":
        entry = {"id": result.id, "params": result.params, "caption": result.caption,
                 "thumbnail": result.thumbnail}
        self.entries = [entry] + [e for e in self.entries if e["id"] != result.id][:MAX_HISTORY - 1]
        return self

    def gallery(self) -> list:
        return [(e["thumbnail"], f"{params_caption(e['params'])} · {e['caption'].split(' · ', 1)[-1]}")
                for e in self.entries if e["thumbnail"]]

    def _params(self, index) -> Optional[dict]:
        shown = [e for e in self.entries if e["thumbnail"]]
        if index is None or not 0 <= int(index) < len(shown):
            return None
        return shown[int(index)]["params"]

    @staticmethod
    def values(params: dict) -> tuple:
        """The Generate tab's inputs (ui.tab_generate's order), then its prompt box, for `params`:
        a text model's result restores the prompt and leaves the class picker as it is."""
        merged = {**DEFAULTS, **params}
        values = tuple(merged[k] for k in INPUT_ORDER)
        if merged.get("text"):
            return (gr.update(), *values[1:], merged["class"])
        return (*values, gr.update())

    def restore(self, index) -> tuple:
        params = self._params(index)
        if params is None:
            raise gr.Error("pick a result in the history first", title="Cannot do that", print_exception=False)
        return self.values(params)

    def to_compare(self, index) -> tuple:
        """The Compare tab's class, seed, ZipAR window, CFG scale and prompt, and the Compare tab shown."""
        params = self._params(index)
        if params is None:
            raise gr.Error("pick a result in the history first", title="Cannot do that", print_exception=False)
        merged = {**DEFAULTS, **params}
        text = bool(merged.get("text"))
        return (gr.update() if text else merged["class"], merged["seed"], merged["window"], merged["cfg"],
                merged["class"] if text else gr.update(), gr.Tabs(selected="compare"))


def query_values(query: dict, classes: list) -> tuple:
    """The Generate tab's inputs from a share link's query parameters (those missing or unusable
    keep the page's value)."""
    parsed = {}
    for key in INPUT_ORDER:
        raw = query.get(key)
        if raw is None:
            continue
        try:
            if key == "class":
                value = raw if raw in classes else None
            elif key == "order":
                value = raw if raw in ("nar", "raster", "zipar") else None
            elif key in ("cfg", "temperature", "top_p"):
                value = float(raw)
            else:
                value = int(raw)
        except (TypeError, ValueError):
            value = None
        if value is not None:
            parsed[key] = value
    return tuple(parsed[k] if k in parsed else gr.update() for k in INPUT_ORDER)
