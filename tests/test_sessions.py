"""Per-visitor models: the server's model sets are shared and read-only, a visitor's loads and
fine-tunes are theirs alone, at most `cap` of those are held, an admin replaces the server's models
(old ones released first), presets load by name with their ImageNet names and sampling defaults,
and a decode that does not fit in device memory falls back. The app runs in-process on a free
loopback port and is driven by separate gradio_client sessions."""
from __future__ import annotations

import contextlib
import gc
import socket
import threading
import weakref
from pathlib import Path
from types import SimpleNamespace

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from conftest import random_model
from nar.checkpoint import save_transformer
from nar.pipeline import Studio
from ui.service import Service, folder_models
from ui.sessions import ModelRegistry, SessionModelGone, SharedModels

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(service: Service, tmp_path: Path, lock_models: bool = False):
    from ui.layout import build_app
    from ui.training import TrainingService
    demo = build_app(service, ROOT / "benchmarks", 1, TrainingService(service, tmp_path / "runs"), lock_models)
    demo.queue(default_concurrency_limit=1)
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                allowed_paths=[str(service.out_dir)], show_error=True)
    try:
        yield demo.local_url
    finally:
        demo.close()


def client(url):
    from gradio_client import Client
    return Client(url, verbose=False)


def generate(c, cls="dog", seed=0, num=1, order="nar"):
    return c.predict(cls, num, seed, order, 2, 4.0, -1, 1.0, 2000, 1.0, 0.0, api_name="/generate")


def pixels(result) -> np.ndarray:
    return iio.imread(result[2][0]["image"])


@pytest.fixture
def five_classes(tmp_path):
    return save_transformer(tmp_path / "five.safetensors", random_model("nar", grid=4, vocab=32, classes=5, seed=7),
                            list("abcde"))


def bundled_service(tiny_checkpoints, tmp_path, cap=4) -> Service:
    folder = tiny_checkpoints["vq"].parent
    return Service(registry=ModelRegistry([folder_models(folder, "cpu")], cap), checkpoint_dir=folder,
                   out_dir=tmp_path / "out")


def test_a_visitors_load_is_theirs_alone(tiny_checkpoints, five_classes, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError
    service = bundled_service(tiny_checkpoints, tmp_path)
    with serving(service, tmp_path) as url:
        a, b = client(url), client(url)
        before = b.predict(api_name="/model_info")
        image_before = pixels(generate(b, seed=4))
        status = a.predict([handle_file(str(five_classes))], 4, "cat", "cat", 2, 2, api_name="/load_upload")
        assert status[0] == "Loaded nar model from five.safetensors." and "Classes (5)" in status[2]
        assert "your own models" in status[2]
        assert "done: 7 steps" in generate(a, cls="e", seed=1)[1]
        # each order offers only the classes its model knows: Compare and raster lack "e"
        assert [c[0] for c in status[3]["choices"]] == list("abcde")
        assert [c[0] for c in status[4]["choices"]] == []          # no class both models know
        raster = a.predict("raster", "e", api_name="/order_classes")
        assert [c[0] for c in raster["choices"]] == ["cat", "dog", "sun"] and raster["value"] == "cat"
        # the raster model never learned "e": Compare says so before decoding
        with pytest.raises(AppError, match=r"the raster model \(the raster and ZipAR orders\) does not know "
                                           r"class 'e'"):
            a.predict("e", 0, 2, 4.0, 0.0, api_name="/compare")
        # the other visitor: the server's models, classes and images exactly as before
        after = b.predict(api_name="/model_info")
        assert after[0]["value"]["data"] == before[0]["value"]["data"] and after[1] == before[1]
        assert "Classes (3):** cat, dog, sun" in after[1]
        assert np.array_equal(pixels(generate(b, seed=4)), image_before)
        with pytest.raises(AppError, match="unknown class 'e'"):
            generate(b, cls="e")
        # the server's Studio was never changed; back to it drops the visitor's copy
        assert service.studio.models["nar"].class_names == ["cat", "dog", "sun"]
        assert "Back to the server's models" in a.predict("cat", "cat", 2, 2, api_name="/reset_models")[0]
        assert service.registry.held() == 0 and "Classes (3)" in a.predict(api_name="/model_info")[1]


def test_the_session_cap_drops_the_least_recent_with_a_message(tiny_checkpoints, five_classes, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError
    service = bundled_service(tiny_checkpoints, tmp_path, cap=1)
    with serving(service, tmp_path) as url:
        a, c = client(url), client(url)
        for visitor in (a, c):
            visitor.predict([handle_file(str(five_classes))], 4, "cat", "cat", 2, 2, api_name="/load_upload")
        assert service.registry.held() == 1
        with pytest.raises(AppError, match=r"your model \(Loaded nar model from five.safetensors.\) was unloaded "
                                           r"to free memory: this server holds at most 1 visitors' own models"):
            generate(a, cls="a")
        assert "done: 7 steps" in generate(a, cls="dog")[1]          # back on the server's model
        assert "done: 7 steps" in generate(c, cls="e")[1]            # the newest is kept


def test_locked_server_refuses_loads(tiny_checkpoints, five_classes, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError
    service = bundled_service(tiny_checkpoints, tmp_path)
    with serving(service, tmp_path, lock_models=True) as url:
        a = client(url)
        with pytest.raises(AppError, match="turned off on this server"):
            a.predict([handle_file(str(five_classes))], 4, "cat", "cat", 2, 2, api_name="/load_upload")
        assert "done: 7 steps" in generate(a)[1]


def test_presets_by_name_and_the_admin_replacing_the_servers_models(tiny_checkpoints, tmp_path, monkeypatch):
    import huggingface_hub.constants
    import nar.presets
    from gradio_client.exceptions import AppError
    from official_cache import build_official_cache, small_preset
    official = build_official_cache(tmp_path)
    monkeypatch.setitem(nar.presets.PRESETS, "NAR-B", small_preset("NAR-B"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(official["cache"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("NAR_STUDIO_ADMIN", "boss:s3cret")
    service = bundled_service(tiny_checkpoints, tmp_path)
    with serving(service, tmp_path) as url:
        x = client(url)
        # a visitor loads the preset for their page: ImageNet names, its sampling defaults
        out = x.predict("NAR-B", "dog", "dog", 2, 2, api_name="/use_model_set")
        assert out[0].startswith("Loaded preset NAR-B for this page") and "Classes (1000):** 0 tench" in out[2]
        assert out[3]["value"] == "0 tench" and "207 golden retriever" in [c[0] for c in out[3]["choices"]]
        assert [u["value"] for u in out[-5:]] == [2.0, 0, 1.0, 1.0, 2.0]   # CFG 2.0, top-k off
        info = x.predict("NAR-B", api_name="/preset_info")
        assert "chenfeng1271/NAR-imagenet-256-B/last_version.pt" in info and "522 MB" in info
        assert "FoundationVision/LlamaGen/c2i_B_256.pt" in info and "NAR CFG 2.0" in info
        result = generate(x, cls="golden retriever", seed=3)
        assert result[2][0]["caption"] == "207 golden retriever, seed 3"
        assert generate(x, cls="207", seed=3)[1].startswith("NAR · done: 7 steps")
        race = x.predict("207 golden retriever", 1, 2, 2.0, 0.0, api_name="/compare")
        assert [row[0] for row in race[6]["data"]] == ["Raster", "ZipAR (window 2)", "NAR"]
        assert race[3].startswith("Raster · done: 16 steps") and race[5].startswith("NAR · done: 7 steps")
        assert "Classes (3)" in client(url).predict(api_name="/model_info")[1]   # nobody else sees it
        # the admin: a wrong login changes nothing; the right one replaces the defaults for new pages
        with pytest.raises(AppError, match="wrong admin login"):
            x.predict("boss", "guess", "NAR-B", api_name="/admin_replace")
        old = weakref.ref(service.registry.shared().studio)
        assert "now NAR-B, bundled (default NAR-B)" in x.predict("boss", "s3cret", "NAR-B, bundled",
                                                                 api_name="/admin_replace")[0]
        gc.collect()
        assert old() is None                    # the old models were released
        fresh = client(url).predict(api_name="/model_info")
        assert "Classes (1000)" in fresh[1] and "the server's models **NAR-B**" in fresh[1]
        assert service.registry.shared_names == ["NAR-B", "bundled"]


# -- the registry and the service, without a server ----------------------------------------------
def shared(name: str, folder: Path, log: list) -> SharedModels:
    def load():
        log.append(f"load {name}")
        return SharedModels(name, Studio.from_pretrained(folder, "cpu"), load)
    return SharedModels(name, Studio.from_pretrained(folder, "cpu"), load)


def test_replacing_releases_the_old_models_before_loading_and_restores_on_failure(tiny_checkpoints):
    folder = tiny_checkpoints["vq"].parent
    log: list = []
    registry = ModelRegistry([shared("one", folder, log)])
    old = weakref.ref(registry.shared().studio)

    def new():
        gc.collect()
        log.append(f"old alive while loading: {old() is not None}")
        return shared("two", folder, log)
    registry.replace_shared([new])
    assert log == ["old alive while loading: False"] and registry.shared_names == ["two"]

    def broken():
        raise ValueError("no such file")
    with pytest.raises(ValueError, match="no such file"):
        registry.replace_shared([broken])
    assert registry.shared_names == ["two"] and log[-1] == "load two"     # the old set loaded again


def test_own_models_copy_the_session_studio_and_a_failed_change_changes_nothing(tiny_checkpoints):
    studio = Studio.from_pretrained(tiny_checkpoints["vq"].parent, "cpu")
    registry = ModelRegistry([SharedModels("s", studio, lambda: None)], cap=2)

    def boom(s):
        raise ValueError("bad file")
    with pytest.raises(ValueError):
        registry.change("a", boom)
    assert not registry.owns("a") and registry.studio("a") is studio
    registry.change("a", lambda s: s.models.update(nar=None) or "dropped")
    assert registry.studio("a").models["nar"] is None and studio.models["nar"] is not None
    for key in ("b", "c"):
        registry.change(key, lambda s: "x")
    with pytest.raises(SessionModelGone, match="at most 2"):
        registry.studio("a")
    assert registry.studio("a") is studio          # told once, then on the server's models


def test_out_of_memory_halves_the_batch_then_says_so(tiny_checkpoints, tmp_path, monkeypatch):
    service = Service.from_folder(tiny_checkpoints["vq"].parent, device="cpu", out_dir=tmp_path)
    real = Studio.decode_steps

    def small_device(self, order, condition, *args, **kwargs):
        if condition.batch > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(self, order, condition, *args, **kwargs)
    monkeypatch.setattr(Studio, "decode_steps", small_device)
    final = list(service.generate(service.request(["nar"], class_name="dog", num_images=8)))[-1]
    assert len(final.images) == 2
    assert final.caption.startswith("(did not fit in device memory at 8 images: decoded 2) NAR · done")
    monkeypatch.setattr(Studio, "decode_steps", lambda *a, **k: (_ for _ in ()).throw(torch.OutOfMemoryError()))
    with pytest.raises(ValueError, match="does not fit in the device's memory even for one image"):
        list(service.generate(service.request(["nar"], class_name="dog", num_images=1)))
    with pytest.raises(ValueError, match="race does not fit"):
        list(service.compare(service.request(("raster", "zipar", "nar"), class_name="dog", window=2)))
    monkeypatch.setattr(Studio, "decode_steps", real)
    assert list(service.generate(service.request(["nar"], class_name="dog")))[-1].done   # still serving


def test_only_the_visitor_who_started_a_run_cancels_it(tiny_checkpoints, tmp_path):
    from ui.training import TrainingService
    service = Service.from_folder(tiny_checkpoints["vq"].parent, device="cpu", out_dir=tmp_path / "out")
    training = TrainingService(service, tmp_path / "runs")
    stop, alive = threading.Event(), threading.Thread(target=lambda: stop.wait(10))
    alive.start()
    job = SimpleNamespace(run_id="0123456789ab", thread=alive, owner="alice", cancel_event=threading.Event(),
                          state=SimpleNamespace(step=3))
    training.manager.current = job
    try:
        with pytest.raises(ValueError, match="started by another visitor; only they can cancel it"):
            training.cancel(job.run_id, session="mallory")
        assert not job.cancel_event.is_set()
        assert "Cancelling run" in training.cancel(job.run_id, session="alice") and job.cancel_event.is_set()
    finally:
        stop.set()
        alive.join()


def test_an_inferred_head_count_is_shown(tiny_checkpoints, tmp_path):
    from official_cache import small_official_model, small_official_vq, torch_bytes
    from ui.context import Context
    raster = small_official_model("raster", 1).state_dict()
    (tmp_path / "c2i_B_256.pt").write_bytes(torch_bytes(tmp_path, "n.pt", raster))
    (tmp_path / "vq_ds16_c2i.pt").write_bytes(torch_bytes(tmp_path, "v.pt", small_official_vq().state_dict()))
    service = bundled_service(tiny_checkpoints, tmp_path)
    service.load("v", [str(tmp_path / "c2i_B_256.pt"), str(tmp_path / "vq_ds16_c2i.pt")], grid_size=4)
    table, text = Context(service, None, tmp_path).model_view(service.models_for("v"), "v")
    assert "**Head count inferred** (dim / 64) for the raster model" in text
    assert "2 (inferred: dim / 64)" in str(table["value"])
    assert "Head count inferred" not in Context(service, None, tmp_path).model_view(service.models, None)[1]
