"""Gradio inputs that answer a wrong value with a clear message, and errors shown as messages.

Gradio checks a slider's range on the server, but a value of the wrong type ("abc", NaN, a list)
sent to the API fails inside Gradio's own preprocessing with no message for the caller;
`Slider` and `Number` here check the type first (the ranges are checked by ui/requests.py).
"""
from __future__ import annotations

import math
from abc import ABCMeta
from typing import Any, Optional

import gradio as gr

from nar.checkpoint import CheckpointError
from nar.names import NameTooLong, check_path_length, quoted

PROBLEMS = (ValueError, CheckpointError, FileNotFoundError)   # what a handler answers with a message


def fail(e: Exception) -> gr.Error:
    """A message for the visitor (never a traceback)."""
    return gr.Error(str(e), title="Cannot do that", print_exception=False)


def checked_number(payload: Any, label: Optional[str], allow_none: bool = False):
    """The payload as an int or float, or gr.Error naming the input."""
    name = label or "a number input"
    if payload is None:
        if allow_none:
            return None
        raise gr.Error(f"{name}: a number is required", title="Cannot do that", print_exception=False)
    value = payload
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            value = payload
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise gr.Error(f"{name} must be a number, got {quoted(payload, 40)}", title="Cannot do that",
                       print_exception=False)
    if isinstance(value, float) and not math.isfinite(value):
        raise gr.Error(f"{name} must be a finite number, got {value}", title="Cannot do that",
                       print_exception=False)
    return value


def _checked(base: type, allow_none: bool) -> type:
    """A template of `base` (same front-end component) whose preprocess checks the type first."""
    def preprocess(self, payload):
        value = checked_number(payload, self.label, allow_none)
        if getattr(self, "precision", None) == 0 and isinstance(value, float) and not value.is_integer():
            # Gradio would round it silently: a whole-number input says so instead
            raise gr.Error(f"{self.label or 'a number input'} must be a whole number, got {value}",
                           title="Cannot do that", print_exception=False)
        return base.preprocess(self, value)
    attrs = {"__module__": __name__, "__qualname__": base.__name__, "is_template": True, "preprocess": preprocess,
             "__doc__": f"gr.{base.__name__} whose API input is checked to be a finite number before its range."}
    # ABCMeta.__new__, not a class statement: Gradio's ComponentMeta would write a type stub of this
    # module (inputs.pyi) next to it on every import.
    return ABCMeta.__new__(type(base), base.__name__, (base,), attrs)


Slider = _checked(gr.Slider, allow_none=False)
Number = _checked(gr.Number, allow_none=True)


def sampling_inputs(cfg_scale: float = 4.0, top_k: int = 0) -> tuple:
    """The Sampling accordion of a decoding tab: CFG scale, CFG interval, temperature, top-k, top-p."""
    with gr.Accordion("Sampling", open=False):
        cfg = Slider(1.0, 15.0, value=cfg_scale, step=0.25, label="CFG scale", info="classifier-free guidance; 1 = off")
        interval = Number(-1, label="CFG interval (tokens)", precision=0,
                          info="guidance stops after this many tokens; -1 = always")
        temperature = Slider(0.05, 2.0, value=1.0, step=0.05, label="Temperature")
        with gr.Row():
            k = Number(top_k, label="Top-k", precision=0, info="0 = off", minimum=0)
            p = Slider(0.05, 1.0, value=1.0, step=0.01, label="Top-p", info="1 = off")
    return cfg, interval, temperature, k, p


def _class_preprocess(self, payload):
    # the page offers only the loaded model's classes; a value sent through the API is named by
    # ui/requests.py ("unknown class 'x'; the model knows ..."), not by Gradio's choice check
    return payload


# ABCMeta.__new__ for the same reason as _checked
ClassBox = ABCMeta.__new__(type(gr.Dropdown), "Dropdown", (gr.Dropdown,), {
    "__module__": __name__, "__qualname__": "Dropdown", "is_template": True, "preprocess": _class_preprocess,
    "__doc__": "gr.Dropdown of the model's classes: the page takes only those; the API's value is checked later."})




# -- file paths --------------------------------------------------------------------------------
def _file_paths(value: Any):
    """The "path" of every file payload in an input value (walked without recursion)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("path"), str):
                yield item["path"]
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)


class Blocks(gr.Blocks):
    """gr.Blocks whose events refuse a file path over the file system's limits with "file name too
    long". Gradio stats every file path a client sends while it prepares the inputs, before any
    component's preprocess or handler runs, so an over-long path failed there and the client read
    the OS error ("[Errno 36] File name too long: ..." with the whole path). `validate_inputs` is
    the first thing Gradio runs on a request's inputs."""

    def validate_inputs(self, block_fn, inputs: list[Any]):
        super().validate_inputs(block_fn, inputs)
        for value in inputs:
            for path in _file_paths(value):
                try:
                    check_path_length(path)
                except NameTooLong as e:
                    raise fail(e) from None
