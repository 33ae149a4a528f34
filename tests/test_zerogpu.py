"""ZeroGPU, on the CPU: the app in a subprocess with a stand-in `spaces` package
(tests/zerogpu_standin: GPU calls forked, CUDA available only inside them, a duration limit).
Loads must change the models the next request uses (they run in the main process), decodes run
in one GPU call sized by the request and are paced outside it, `spaces` is imported before torch,
and the Train tab says fine-tuning runs on the CPU."""
from __future__ import annotations

import json
import sys
import time
import types
import urllib.request
from pathlib import Path

import pytest
import torch

from conftest import random_model
from nar.checkpoint import save_transformer
from test_app import running_app

STANDIN = Path(__file__).resolve().parent / "zerogpu_standin"


@pytest.fixture(scope="module")
def zerogpu_app(tiny_checkpoints, tmp_path_factory):
    log = tmp_path_factory.mktemp("spaces") / "calls.jsonl"
    env = {"PYTHONPATH": str(STANDIN), "SPACES_ZERO_GPU": "true", "STANDIN_SPACES_LOG": str(log)}
    with running_app(tiny_checkpoints["vq"].parent, extra_args=("--device", "cpu"), env=env) as url:
        yield url, log


def calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def generate(c, cls="dog", num=1, seed=0, pace=0.0):
    return c.predict(cls, num, seed, "nar", 2, 4.0, -1, 1.0, 2000, 1.0, pace, api_name="/generate")


def test_spaces_is_imported_before_torch(zerogpu_app):
    url, log = zerogpu_app
    first = calls(log)[0]
    assert first == {"event": "import", "torch_imported_before": False}


def test_a_load_changes_the_models_the_next_decode_uses(zerogpu_app, tmp_path):
    from gradio_client import Client, handle_file
    url, log = zerogpu_app
    c = Client(url, verbose=False)
    five = save_transformer(tmp_path / "five.safetensors", random_model("nar", grid=4, vocab=32, classes=5, seed=3),
                            list("abcde"))
    status = c.predict([handle_file(str(five))], 4, "cat", "cat", 2, 2, api_name="/load_upload")
    assert "Classes (5)" in status[2]
    for seed in range(3):   # every decode sees it, whichever worker runs it
        assert "done: 7 steps" in generate(c, cls="e", seed=seed)[1]
    assert not [r for r in calls(log) if r.get("fn") in ("load_upload", "load_from_hub", "reset_models", "use_run")]


def test_decodes_run_in_one_gpu_call_sized_by_the_request_and_paced_outside(zerogpu_app):
    from gradio_client import Client
    url, log = zerogpu_app
    c = Client(url, verbose=False)
    generate(c)                                   # a first call pays the one-time costs
    start = len(calls(log))
    t0 = time.monotonic()
    result = generate(c, num=1, pace=1.0)         # 7 frames at least 1 s apart
    paced = time.monotonic() - t0
    assert "done: 7 steps" in result[1] and paced >= 6.0
    generate(c, num=4)
    c.predict("cat", 0, 2, 4.0, 0.0, api_name="/compare")
    one, four, race = [r for r in calls(log)[start:] if r["event"] == "call"]
    assert one["wall"] < paced / 2                # the GPU was not held while the frames were paced
    # sized by the request (batch x steps), not ZeroGPU's fixed 60 s default
    from ui.zerogpu import decode_seconds
    assert (one["duration"], four["duration"]) == (decode_seconds(1, 7, 16), decode_seconds(4, 7, 16))
    assert one["duration"] <= race["duration"] < 60
    assert all(r["wall"] <= r["duration"] for r in (one, four, race))


def test_the_scrubber_draws_a_kept_step_in_a_short_gpu_call(zerogpu_app):
    from gradio_client import Client
    url, log = zerogpu_app
    c = Client(url, verbose=False)
    assert "done: 7 steps" in generate(c, seed=4)[1]      # the session's state now holds its result
    start = len(calls(log))
    picture, caption = c.predict(2, True, api_name="/show_step")
    assert caption.startswith("step 2/7") and "sampled-token probability" in caption and picture
    from ui.zerogpu import BASE_SECONDS
    assert [r["duration"] for r in calls(log)[start:] if r["event"] == "call"] == [BASE_SECONDS]


def test_the_train_tab_says_it_trains_on_the_cpu(zerogpu_app):
    url, _ = zerogpu_app
    with urllib.request.urlopen(url + "config") as r:
        assert "fine-tuning runs on the CPU" in r.read().decode()


def test_models_go_to_cuda_at_start_up_on_zerogpu(monkeypatch):
    from ui import zerogpu
    monkeypatch.setitem(sys.modules, "spaces", types.ModuleType("spaces"))
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert zerogpu.active() and zerogpu.startup_device("auto") == "cuda" and zerogpu.startup_device(None) == "cuda"
    assert zerogpu.startup_device("cpu") == "cpu"
    from ui.models import Models      # the main process never asks the (absent) GPU for its name
    assert Models(types.SimpleNamespace(device=torch.device("cuda"))).device_label().startswith("ZeroGPU")
    monkeypatch.delenv("SPACES_ZERO_GPU")
    assert not zerogpu.active() and zerogpu.startup_device("auto") == "auto"
    # NAR-B's 16 x 16 grid: 31 steps, 256 tokens per image
    assert zerogpu.decode_seconds(1, 31, 256) < zerogpu.decode_seconds(8, 31, 256) <= zerogpu.MAX_SECONDS
