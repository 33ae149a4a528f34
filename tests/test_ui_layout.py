"""ui/layout.py and the tabs, ui/inputs.py and ui/server.py, built and called in-process (no server)."""
import asyncio

import pytest

API_NAMES = {"random_seed", "order_changed", "generate", "stop_generate", "random_seed_compare", "compare",
             "stop_compare", "steps_plot", "benchmark_plot", "measure", "load_from_hub", "load_upload",
             "reset_models", "train_scan", "train", "train_resume", "train_cancel", "train_status",
             "train_download", "train_use", "model_info", "benchmark_files", "train_runs",
             "preset_info", "use_model_set", "admin_replace", "order_classes",
             "show_step", "after_generate", "pick_result", "restore_result", "send_to_compare",
             "parameters_from_link", "generate_video", "after_video", "stop_video", "show_video_step", "race_video",
             "random_seed_video", "video_order_changed", "stop_video_race"}


@pytest.fixture(scope="module")
def demo(tiny_checkpoints, tmp_path_factory):
    from pathlib import Path

    from ui.layout import build_app
    from ui.service import Service
    from ui.training import TrainingService
    service = Service.from_folder(tiny_checkpoints["vq"].parent, device="cpu",
                                  out_dir=tmp_path_factory.mktemp("out"))
    training = TrainingService(service, tmp_path_factory.mktemp("runs"))
    return build_app(service, Path(__file__).resolve().parent.parent / "benchmarks", 1, training)


def test_every_event_has_its_api_name(demo):
    with_backend = {fn.api_name for fn in demo.fns.values() if fn.fn is not None}
    examples = {name for name in with_backend if name.startswith("example_")}
    # Stop is a handler now (it ends the decode cleanly), no longer a front-end cancel
    assert with_backend - examples == API_NAMES


def test_the_page_load_refresh_reads_the_active_models(demo):
    fn = next(f.fn for f in demo.fns.values() if f.api_name == "model_info")
    (table, classes, gen_class, cmp_class, gen_window, cmp_window, steps, header,
     gen_class_col, gen_prompt_col, cmp_class_col, cmp_prompt_col) = fn("dog", "moon", 9, 2)
    # class models: the class pickers show, the prompt boxes do not
    assert gen_class_col["visible"] and cmp_class_col["visible"]
    assert gen_prompt_col["visible"] is False and cmp_prompt_col["visible"] is False
    assert table["headers"] == ["", "NAR model", "Raster model", "Tokenizer (VQ)"]
    assert [row[0] for row in table["value"]][:2] == ["source", "kind"]
    assert "**Classes (3):** cat, dog, sun" == classes
    assert gen_class["value"] == "dog" and cmp_class["value"] == "cat"     # an unknown class falls back
    assert gen_window["value"] == 4 and gen_window["maximum"] == 4 and cmp_window["value"] == 2
    assert "NAR needs 7 steps where raster needs 16" in header


def test_the_video_tab_says_when_no_video_models_are_loaded(demo):
    import gradio as gr
    note = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "video-note")
    assert note.value.startswith("**No video models are loaded.**") and "video_nar.safetensors" in note.value
    fn = next(f.fn for f in demo.fns.values() if f.api_name == "generate_video")
    with pytest.raises(gr.Error, match="no video models are loaded on this server"):
        next(fn("zoom_in", 1, 0, "nar", 4, 3.0, -1, 1.0, 0, 1.0))


def test_number_inputs_name_a_wrong_type():
    import gradio as gr

    from ui.inputs import checked_number
    assert checked_number("2.5", "CFG scale") == 2.5 and checked_number(None, "Seed", allow_none=True) is None
    for bad, message in (("abc", "CFG scale must be a number, got 'abc'"), (float("nan"), "must be a finite"),
                         ([1], "must be a number, got [1]"), (True, "must be a number")):
        with pytest.raises(gr.Error, match=message.replace("[", r"\[").replace("]", r"\]")):
            checked_number(bad, "CFG scale")


def test_body_limit_refuses_a_large_body_before_reading_it():
    from ui.server import BodyLimit, exposure_warning, is_loopback, parse_auth
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["path"])

    async def run(path, headers, chunks):
        sent = []

        async def receive():
            return chunks.pop(0)

        async def send(message):
            sent.append(message)
        await BodyLimit(app, max_bytes=10)({"type": "http", "path": path, "headers": headers}, receive, send)
        return sent
    refused = asyncio.run(run("/gradio_api/queue/join", [(b"content-length", b"11")], []))
    assert refused[0]["status"] == 413 and seen == []
    chunked = [{"type": "http.request", "body": b"x" * 6, "more_body": True},
               {"type": "http.request", "body": b"x" * 6, "more_body": False}]
    assert asyncio.run(run("/x", [], chunked))[0]["status"] == 413
    assert asyncio.run(run("/gradio_api/upload", [(b"content-length", b"999")], [])) == [] and seen == ["/gradio_api/upload"]
    assert parse_auth("a:b, c:d:e") == [("a", "b"), ("c", "d:e")]
    assert is_loopback("127.0.0.1") and is_loopback("[::1]") and not is_loopback("0.0.0.0")
    assert exposure_warning("0.0.0.0", []) and exposure_warning("0.0.0.0", [("a", "b")]) is None
