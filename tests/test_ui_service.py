"""ui/service.py with ui/stream.py, ui/files.py and ui/benchmarks.py: the Generate stream, the
count of running decodes, the output folder and the on-demand measurement, without a server."""
import os
import time

import numpy as np
import pytest
from PIL import Image

from ui.files import JobFiles, animation_fps, link_or_copy, slug
from ui.service import Service


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def service(tiny_checkpoints, tmp_path_factory):
    return Service.from_folder(tiny_checkpoints["vq"].parent, device="cpu", out_dir=tmp_path_factory.mktemp("out"))


def test_generate_streams_every_step_then_the_files(service):
    request = service.request(["nar"], class_name="dog", num_images=2, seed=3)
    updates = list(service.generate(request, write_mp4=False))
    # 7 steps: a sample of the 6 live steps in order (the view never holds the decoder back), then the
    # images, then the animation files
    live = [u.step for u in updates[:-2]]
    assert live == sorted(set(live)) and set(live) <= set(range(1, 7))
    assert updates[-2].done and updates[-2].gif is None and updates[-2].images
    final = updates[-1]
    assert final.done and final.mp4 is None and final.gif.is_file()
    assert [p.name for p in final.images] == ["nar-dog-seed3.png", "nar-dog-seed4.png"]
    assert final.labels == ["dog, seed 3", "dog, seed 4"] and final.summary["steps"] == 7
    assert final.frame.shape[0] == 4 * 16 and final.frame.shape[2] == 3     # two images upscaled 4x, tiled
    # the same request gives the same images (the request is not changed by being served)
    again = list(service.generate(request, write_mp4=False))[-1]
    assert all(np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
               for a, b in zip(final.images, again.images))
    assert service.decodes.finished >= 2 and service.decodes.running == 0


def test_a_stream_closed_early_is_counted_as_stopped(service):
    stream = service.generate(service.request(["raster"], class_name="cat"))
    next(stream)
    before = service.decodes.stopped
    stream.close()                                  # what Gradio does when the visitor leaves
    assert service.decodes.stopped == before + 1 and service.decodes.running == 0


def test_results_scrubbing_and_stop_belong_to_their_session(service):
    request = service.request(["nar"], class_name="dog", num_images=1, seed=3, session="a")
    final = list(service.generate(request, write_mp4=False, session="a"))[-1]
    result_id = final.summary["result_id"]
    picture, caption = service.scrub(result_id, 3, overlay=True, session="a")
    assert picture.ndim == 3 and caption.startswith("step 3/7") and "sampled-token probability" in caption
    with pytest.raises(ValueError, match="no longer kept"):     # another visitor cannot read it
        service.scrub(result_id, 3, session="b")
    assert service.stop("b") == "nothing is decoding in this session"
    # a replay of 0.2 s a step: Stop, sent from the right session, ends it long before its 16 steps
    stream = service.generate(service.request(["raster"], class_name="cat", session="b"), 0.2, session="b")
    started = time.perf_counter()
    next(stream)
    assert service.stop("a") == "nothing is decoding in this session"
    assert service.stop("b") == "stopping 1 decode"
    rest = list(stream)
    assert rest[-1].done and len([u for u in rest if u.caption.startswith("replay")]) <= 1
    assert time.perf_counter() - started < 2.5


def test_stop_ends_waiting_requests_as_they_begin_once_each(service):
    assert service.stop("a", waiting=2) == "2 waiting requests will not run"
    assert not service.stopped_while_waiting("b")            # another session's requests run
    assert [service.stopped_while_waiting("a") for _ in range(3)] == [True, True, False]
    assert service.stop("a") == "nothing is decoding in this session"
    assert not service.stopped_while_waiting("a")


def test_gallery_labels_say_what_a_seed_reproduces():
    import torch
    from ui.stream import seed_label
    assert seed_label(5, 2, torch.float32) == "seed 7"          # in fp32 the single image seeded 7
    assert seed_label(5, 2, torch.bfloat16) == "seed 7 (image 3 of a batch seeded 5)"


def test_benchmark_files_say_when_they_replayed_cuda_graphs(tmp_path):
    import json
    from ui.benchmarks import uses_cuda_graphs
    (tmp_path / "graphs.json").write_text(json.dumps({"cuda_graphs": True, "results": []}))
    (tmp_path / "row.json").write_text(json.dumps({"results": [{"batch": 1, "cuda_graphs": True}]}))
    (tmp_path / "eager.json").write_text(json.dumps({"cuda_graphs": False, "results": [{"batch": 1}]}))
    (tmp_path / "broken.json").write_text("{")
    assert [uses_cuda_graphs(tmp_path / f"{n}.json") for n in ("graphs", "row", "eager", "broken")] == \
        [True, True, False, False]


def test_measure_runs_the_benchmarks_interleaved_timer(service, monkeypatch):
    import nar.bench
    import ui.benchmarks
    calls = []
    real = nar.bench.time_interleaved

    def spy(cases, rounds, warmup, progress):
        calls.append(([(c.order, c.batch, c.window) for c in cases], rounds, warmup))
        return real(cases, rounds, warmup, progress)
    monkeypatch.setattr(ui.benchmarks, "time_interleaved", spy)
    fractions = []
    rows = service.measure([1], window=2, rounds=1, progress=lambda f, m: fractions.append(f))
    assert calls == [([("raster", 1, None), ("zipar", 1, 2), ("nar", 1, None)], 1, 1)]
    assert [r["label"] for r in rows] == ["raster", "zipar-2", "nar"] and all(r["images_per_s"] > 0 for r in rows)
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_job_files(tmp_path):
    files = JobFiles(tmp_path / "out", keep_seconds=60, keep_jobs=2)
    first, second = files.new("generate"), files.new("compare")
    old = time.time() - 120
    os.utime(first, (old, old))
    third = files.new("compare")                     # an hour-old job goes as a new one starts
    assert not first.exists() and second.exists() and third.exists()
    files.new("compare")
    files.new("compare")                             # keep_jobs earlier jobs stay beside the new one
    assert not second.exists() and len(list((tmp_path / "out").iterdir())) == 3
    src = tmp_path / "w.bin"
    src.write_bytes(b"weights")
    assert link_or_copy(src, tmp_path / "copy.bin").read_bytes() == b"weights"
    assert slug("Bird / Fish!") == "bird---fish" and slug("???") == "image"
    assert animation_fps(8) == 4.0 and animation_fps(256) == 30.0


def test_history_restores_a_prompt_into_the_prompt_box_not_the_class_picker():
    import gradio as gr

    from ui.history import INPUT_ORDER, History
    text = History.values({"class": "cat face", "seed": 4, "order": "nar", "text": True})
    assert len(text) == len(INPUT_ORDER) + 1 and text[-1] == "cat face" and text[2] == 4
    assert isinstance(text[0], dict) and text[0].get("__type__") == "update" and "value" not in text[0]
    klass = History.values({"class": "dog", "seed": 1, "order": "raster"})
    assert klass[0] == "dog" and klass[-1] == gr.update()
