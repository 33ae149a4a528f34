"""The Gradio app end to end: `python app.py` in a subprocess on tiny random checkpoints, driven
through its API with gradio_client (generate streams one frame per step, compare races the
three orders, bad input comes back as a readable error, loading refuses bad files)."""
from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

import imageio.v3 as iio
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
STEPS = {"nar": 7, "raster": 16}          # 4x4 grid: NAR 2n - 1, raster n^2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(proc: subprocess.Popen, url: str, timeout: float, read_log,
                       accept_status: tuple[int, ...] = (200,)) -> None:
    """Poll `url`config until it answers with one of `accept_status`; fail early, with the
    server's output, if the process exits or the timeout passes."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"app exited with {proc.returncode}:\n{read_log()}")
        try:
            with urllib.request.urlopen(url + "config", timeout=2) as r:
                if r.status in accept_status:
                    return
        except urllib.error.HTTPError as e:
            if e.code in accept_status:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"app did not start within {timeout} s:\n{read_log()}")
        time.sleep(0.3)


@contextlib.contextmanager
def running_app(checkpoints: Path, timeout: float = 120.0, threads: Optional[int] = 1, extra_args=(),
                env: Optional[dict] = None):
    """`python app.py --checkpoints DIR [extra_args]` on a free loopback port; yields its URL.
    One torch thread by default: the tiny models gain nothing from more, and CI shares two cores."""
    port = free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1", **(env or {}))
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen([sys.executable, "app.py", "--checkpoints", str(checkpoints), "--port", str(port),
                             *map(str, extra_args)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    def read_log() -> str:
        log.seek(0)
        return log.read()

    try:
        wait_until_serving(proc, url, timeout, read_log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def app_url(tiny_checkpoints):
    # --device cpu: the device line is checked; --threads (not OMP_NUM_THREADS) keeps it to one thread
    with running_app(tiny_checkpoints["vq"].parent, threads=None, extra_args=("--threads", 1, "--device", "cpu")) as url:
        yield url


@pytest.fixture(scope="module")
def client(app_url):
    from gradio_client import Client
    return Client(app_url, verbose=False)


def generate(client, cls="dog", num=1, seed=0, order="nar", window=2, cfg=4.0, cfg_interval=-1,
             temperature=1.0, top_k=2000, top_p=1.0, pace=0.0):
    return client.submit(cls, num, seed, order, window, cfg, cfg_interval, temperature, top_k, top_p, pace,
                         api_name="/generate")


def test_api_names_and_served_files(client, app_url, tiny_checkpoints):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/generate", "/compare", "/load_upload", "/load_from_hub", "/model_info", "/measure"} <= set(endpoints)
    with urllib.request.urlopen(app_url + "config") as r:
        config = json.loads(r.read())
    assert "cpu (1 thread)" in json.dumps(config)   # --threads 1
    named = [d["api_name"] for d in config["dependencies"] if d.get("backend_fn")]
    assert named and all(name and not name.startswith("unnamed") for name in named)
    # the checkpoints are not served, only the app's own outputs
    for route in ("gradio_api/file=", "file="):
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(app_url + route + str(tiny_checkpoints["nar"]))


def test_heavy_events_share_one_slot(client):
    from gradio_client.utils import Status
    first = generate(client, seed=1, pace=0.4)           # 7 frames, at least 2.4 s
    deadline = time.monotonic() + 60
    while not first.outputs() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.outputs(), "the first job never started streaming"
    second = client.submit("cat", 0, 2, 4.0, 0.0, api_name="/compare")
    time.sleep(0.8)
    assert not first.done()
    assert second.status().code == Status.IN_QUEUE      # waits for the device, behind the decode
    first.result(timeout=120)
    assert "done" in second.result(timeout=120)[5]


def test_generate_streams_one_frame_per_step_and_returns_files(client):
    job = generate(client, cls="dog", num=2, seed=3)
    final = job.result(timeout=120)
    updates = job.outputs()
    # the view samples the decode (it never waits for the view): some of the 6 intermediate steps,
    # in order, then the final images, then the same with the animation files
    captions = [u[1] for u in updates]
    live = [int(re.search(r"step (\d+)/7", c).group(1)) for c in captions if "done" not in c]
    assert live and live == sorted(set(live)) and 1 <= live[0] and live[-1] <= 6
    assert len(updates) == len(live) + 2 and updates[-2][2] and not updates[-2][3]
    assert "done: 7 steps" in captions[-1] and "images/s" in captions[-1]
    live, caption, gallery, gif, mp4 = final
    # final images at the model's resolution (4x4 tokens x 4 px = 16 px), one per requested image
    assert len(gallery) == 2
    images = [iio.imread(item["image"]) for item in gallery]
    assert all(img.shape == (16, 16, 3) for img in images)
    assert [item["caption"] for item in gallery] == ["dog, seed 3", "dog, seed 4"]
    frames = iio.imread(gif, index=None)
    assert frames.shape[0] == STEPS["nar"]          # the animation: one frame per step
    first, last = frames[0], frames[-1]
    blank = np.isin(first[..., 0], (214, 236)) & (first[..., 0] == first[..., 1])
    assert blank.mean() > 0.5 and not np.array_equal(first, last)
    assert Path(mp4).stat().st_size > 0 and Path(mp4).suffix == ".mp4"
    # the first streamed frame is mostly blank, the live view ends on the full image
    assert np.isin(iio.imread(updates[0][0])[..., 0], (214, 236)).mean() > 0.5


@pytest.mark.parametrize("order,window,steps", [("raster", 2, 16), ("zipar", 3, 13)])
def test_generate_other_orders(client, order, window, steps):
    job = generate(client, order=order, window=window, seed=1)
    _, caption, gallery, gif, _ = job.result(timeout=120)
    assert f"done: {steps} steps" in caption
    assert iio.imread(gif, index=None).shape[0] == steps


def test_same_seed_same_image(client):
    a = generate(client, cls="sun", seed=11).result(timeout=120)[2][0]["image"]
    b = generate(client, cls="sun", seed=11).result(timeout=120)[2][0]["image"]
    c = generate(client, cls="sun", seed=12).result(timeout=120)[2][0]["image"]
    assert np.array_equal(iio.imread(a), iio.imread(b))
    assert not np.array_equal(iio.imread(a), iio.imread(c))


@pytest.mark.parametrize("window", [2, 1])
def test_compare_returns_three_orders_with_step_counts(client, window):
    job = client.submit("cat", 5, window, 4.0, 0.0, api_name="/compare")
    result = job.result(timeout=120)
    raster_img, zipar_img, nar_img, raster_cap, zipar_cap, nar_cap, table, gif = result
    rows = {row[0].split(" ")[0].lower(): row for row in table["data"]}
    assert table["headers"][:4] == ["Order", "Steps", "Decode time (s)", "Images/s"]
    zipar_steps = (4 - 1) * window + 4
    assert (rows["nar"][1], rows["raster"][1], rows["zipar"][1]) == (7, 16, zipar_steps)
    assert f"window {window}" in rows["zipar"][0]
    assert all(float(r[2]) > 0 and float(r[3]) > 0 for r in rows.values())
    assert "done: 7 steps" in nar_cap and "done: 16 steps" in raster_cap and f"done: {zipar_steps}" in zipar_cap
    for img in (raster_img, zipar_img, nar_img):
        assert iio.imread(img).shape == (64, 64, 3)   # one 16 px image, upscaled 4x with the front
    # streamed: the view samples the race (it may show only its first frame when the tiny models
    # finish first), then all three finished
    updates = job.outputs()
    assert len(updates) >= 2 and all(re.search(r"step \d+/16", u[3]) for u in updates[:-1])
    assert all("done" in caption for caption in updates[-1][3:6])


def test_compare_interleaves_by_decode_clock(tiny_checkpoints):
    """With a deterministic clock (every raster step 1.0 s, ZipAR 1.25 s, NAR 2.0 s), the scheduler
    always advances the decoder that is behind, so all panels show the same decode time and NAR
    (7 steps, 14 s) is shown finished while raster (16 steps, 16 s) is still decoding."""
    import torch
    from ui.race import COMPARE_ORDERS
    from ui.service import Service
    threads = torch.get_num_threads()
    torch.set_num_threads(1)          # tiny convolutions: extra threads only wait on a busy CI box
    service = Service.from_folder(tiny_checkpoints["vq"].parent, device="cpu")
    request = service.request(COMPARE_ORDERS, class_name="dog", seed=4, window=2)
    try:
        updates = _compare_on_fake_clock(service, request)
    finally:
        torch.set_num_threads(threads)
    final = updates[-1]
    frames = final.kept               # the race's frames, kept as tokens (the view shows a sample of them)
    assert final.done and len(frames) >= 3
    for u in frames[:-1]:
        running = [o for o in u.elapsed if u.steps[o] < {"nar": 7, "raster": 16, "zipar": 10}[o]]
        # every running panel is within one of its own steps of the shared clock
        assert all(u.clock <= u.elapsed[o] < u.clock + COST[o] + 1e-9 for o in running), u
    nar_done = next(u for u in frames if u.steps["nar"] == 7)
    assert nar_done.elapsed["nar"] == 14.0 and 13 <= nar_done.steps["raster"] < 16
    assert "done: 7 steps" in final.captions["nar"] and "done: 16 steps" in final.captions["raster"]
    assert [r[1] for r in final.rows] == [16, 10, 7]
    assert final.rows[2][4] == f"{16 / 14:.2f}x"          # NAR's speed-up over raster on this clock


COST = {"raster": 1.0, "zipar": 1.25, "nar": 2.0}


def _compare_on_fake_clock(service, request) -> list:
    def fake_clock(order, record):
        return COST[order] * (record.step + 1)
    return list(service.compare(request, max_frames=20, clock=fake_clock))


@pytest.mark.parametrize("args,message", [
    (dict(cls="unicorn"), "unknown class 'unicorn'; the model knows cat, dog, sun"),
    (dict(temperature=5.0), "greater than maximum"),
    (dict(cfg_interval=-5), "cfg_interval must be -1"),
    (dict(top_k=-1), "less than minimum value 0"),
    (dict(order="zipar", window=9), "greater than maximum value 4"),
    (dict(order="spiral"), "not in the list of choices"),
    (dict(seed=-3), "less than minimum value 0"),
    (dict(cfg=4.5, top_p=0.5, temperature=0.5, cls=""), "pick a class"),
    (dict(num=0), "less than minimum"),
])
def test_bad_parameters_are_readable_errors(client, args, message):
    from gradio_client.exceptions import AppError
    with pytest.raises(AppError) as info:
        generate(client, **args).result(timeout=60)
    text = str(info.value)
    assert message in text and "Traceback" not in text


def test_compare_bad_class_is_readable(client):
    from gradio_client.exceptions import AppError
    with pytest.raises(AppError, match="unknown class 'moon'"):
        client.predict("moon", 0, 2, 4.0, 0.0, api_name="/compare")


class Hostile:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/nar-studio-pwned",))


def test_loading_refuses_bad_files_and_keeps_the_model(client, tmp_path, tiny_checkpoints):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError
    before = client.predict(api_name="/model_info")[0]["value"]["data"]
    hostile = tmp_path / "c2i_L_256.pt"
    with open(hostile, "wb") as f:
        pickle.dump({"model": Hostile()}, f)
    import torch
    torch.save({"model": {"model": Hostile()}}, tmp_path / "evil.pt")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    for path, message in ((tmp_path / "evil.pt", "refused evil.pt"), (hostile, "c2i_L_256.pt"),
                          (junk, "not a readable safetensors file")):
        with pytest.raises(AppError) as info:
            client.predict([handle_file(str(path))], 4, "cat", "cat", 2, 2, api_name="/load_upload")
        assert message in str(info.value) and "Traceback" not in str(info.value)
    assert not Path("/tmp/nar-studio-pwned").exists()
    with pytest.raises(AppError, match="is not a Hub repo id"):
        client.predict("not a repo", "x.pt", 4, "cat", "cat", 2, 2, api_name="/load_from_hub")
    assert client.predict(api_name="/model_info")[0]["value"]["data"] == before
    # the previous model is still active and decodes
    assert "done: 7 steps" in generate(client, seed=2).result(timeout=120)[1]
    # a model whose vocabulary does not fit the active tokenizer is refused, naming both sizes
    from conftest import random_model
    from nar.checkpoint import save_transformer
    save_transformer(tmp_path / "wide.safetensors", random_model("nar", grid=4, vocab=48, classes=2), ["a", "b"])
    with pytest.raises(AppError, match=r"vocabulary \(48\) does not match the active tokenizer's codebook \(32\)"):
        client.predict([handle_file(str(tmp_path / "wide.safetensors"))], 4, "cat", "cat", 2, 2,
                       api_name="/load_upload")
    assert client.predict(api_name="/model_info")[0]["value"]["data"] == before
    # good files load together (the kind is read from each file) and the message says what changed
    status = client.predict([handle_file(str(tiny_checkpoints[k])) for k in ("vq", "raster")], 4, "cat", "cat",
                            2, 2, api_name="/load_upload")[0]
    assert "Loaded tokenizer from vq.safetensors; raster model from raster.safetensors" in status
    assert "done: 16 steps" in generate(client, order="raster", seed=2).result(timeout=120)[1]


def test_missing_checkpoints_exit_with_instructions(tmp_path):
    result = subprocess.run([sys.executable, "app.py", "--checkpoints", str(tmp_path / "none")], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "nar.safetensors" in result.stderr and "python -m nar.train" in result.stderr
    assert "--checkpoints" in result.stderr and "Traceback" not in result.stderr


def test_measure_on_demand(client):
    figure, table, source = client.predict([1, 2], 2, api_name="/measure")
    assert figure["type"] == "matplotlib" and figure["plot"].startswith("data:image/png;base64,")
    rows = table["value"]["data"]
    assert sorted((r[0].split(" ")[0], r[1]) for r in rows) == sorted(
        (o, b) for o in ("Raster", "ZipAR", "NAR") for b in (1, 2))
    assert all(r[2] > 0 and r[3] > 0 for r in rows)


def test_benchmark_files_are_read_tolerantly(tmp_path):
    import json as _json
    from nar import plots
    from nar.bench import read_report as read_benchmark
    from ui.benchmarks import benchmark_files
    report = {"device": "cpu-2threads", "results": [
        {"order": "nar", "model": "nar", "batch": 1, "cfg": True, "latency_median_s": 0.5, "images_per_s": 2.0},
        {"order": "nar", "batch": 4, "latency_median_s": 1.0},                    # no cfg, images/s
        {"order": "raster", "batch": 2, "images_per_s": 1.0},                     # only images/s
        {"label": "bundled zipar-4", "order": "zipar", "window": 4, "batch": 1, "latency_per_image_s": 0.7},
        {"order": "raster", "batch": 8},                                          # no time: skipped
        "not a row"]}
    (tmp_path / "cpu-2threads.json").write_text(_json.dumps(report))
    (tmp_path / "other.json").write_text("{broken")
    assert [p.name for p in benchmark_files(tmp_path)] == ["cpu-2threads.json", "other.json"]
    device, rows = read_benchmark(tmp_path / "cpu-2threads.json")
    assert device == "cpu-2threads" and len(rows) == 4
    per_image = {(r["label"], r["batch"]): r["per_image_s"] for r in rows}
    assert per_image == {("nar", 1): 0.5, ("nar", 4): 0.25, ("raster", 2): 1.0, ("zipar-4", 1): 0.7}
    with pytest.raises(ValueError, match="not a readable benchmark file"):
        read_benchmark(tmp_path / "other.json")
    figure = plots.latency_figure(rows, "test")
    assert len(figure.axes) == 1 and len(figure.axes[0].lines) == 3
    steps = plots.steps_figure(16, 8)
    ys = {line.get_label(): list(line.get_ydata()) for line in steps.axes[0].lines
          if not line.get_label().startswith("_")}
    xs = list(steps.axes[0].lines[0].get_xdata())
    i = xs.index(16)
    assert (ys["Raster (n²)"][i], ys["ZipAR, window 8"][i], ys["NAR (2n-1)"][i]) == (256, 15 * 8 + 16, 31)


def test_zerogpu_shim(monkeypatch):
    """`spaces.GPU` wraps the handlers when the package is importable; a no-op without it."""
    import types
    from ui.zerogpu import gpu

    def handler():
        return "ran"
    monkeypatch.setitem(sys.modules, "spaces", None)          # import spaces -> ImportError
    assert gpu(handler) is handler and gpu(duration=60)(handler) is handler
    calls = []

    def fake_gpu(fn=None, duration=None):
        calls.append(duration)
        if fn is None:
            return lambda f: fake_gpu(f, duration)
        return lambda *a, **k: ("on gpu", fn(*a, **k))
    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=fake_gpu))
    assert gpu(handler)() == ("on gpu", "ran")
    assert gpu(duration=90)(handler)() == ("on gpu", "ran") and 90 in calls


def test_api_page_names_and_types(client):
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    generate = api["/generate"]
    params = {p["parameter_name"]: p["type"].get("type") for p in generate["parameters"]}
    assert list(params)[:4] == ["class_name", "num_images", "seed", "order"]
    assert all(params[k] == "integer" for k in ("num_images", "seed", "window", "cfg_interval", "top_k"))
    returns = [r["label"] for r in generate["returns"]]
    assert len(returns) == 5 and all(label and not label.startswith("value_") for label in returns), returns
    assert {"/stop_generate", "/stop_compare", "/show_step"} <= set(api)
    compare = {p["parameter_name"]: p["type"].get("type") for p in api["/compare"]["parameters"]}
    assert compare["seed"] == compare["window"] == "integer"


def test_frames_arrive_while_decoding_and_stop_through_the_client(app_url):
    from gradio_client import Client
    client = Client(app_url, verbose=False)            # its own session: Stop reaches only its decodes
    started = time.monotonic()
    job = generate(client, order="raster", num=8, seed=5)
    caption = job.result(timeout=120)[1]
    assert time.monotonic() - started < 60             # generous: the report has the tight figures
    live = [u[1] for u in job.outputs() if "done" not in u[1]]
    assert live and all(re.search(r"Raster · step \d+/16", c) for c in live)   # a frame before the end
    assert "done: 16 steps" in caption
    # Stop through the client: a slow replay (16 steps x 1 s) ends at once, the result comes whole
    job = generate(client, order="raster", seed=5, pace=1.0)
    deadline = time.monotonic() + 60
    while not any("replay" in u[1] for u in job.outputs()) and time.monotonic() < deadline:
        time.sleep(0.05)
    stopped_at = time.monotonic()
    assert "stopping 1 decode" in client.predict(api_name="/stop_generate")
    final = job.result(timeout=60)
    assert time.monotonic() - stopped_at < 8 and final[2] and "done: 16 steps" in final[1]
    assert client.predict(api_name="/stop_generate") == "nothing is decoding in this session"


def test_stop_while_queued_ends_the_waiting_request_as_it_begins(app_url):
    from gradio_client import Client
    from gradio_client.utils import Status
    other, me = Client(app_url, verbose=False), Client(app_url, verbose=False)   # two sessions
    running = generate(other, seed=1, pace=0.4)          # holds the one device slot for at least 2.4 s
    deadline = time.monotonic() + 60
    while not running.outputs() and time.monotonic() < deadline:
        time.sleep(0.05)
    mine = generate(me, seed=2)
    while mine.status().code != Status.IN_QUEUE and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running.done() and mine.status().code == Status.IN_QUEUE
    assert me.predict(api_name="/stop_generate") == "1 waiting request will not run"
    assert "stopped before it began" in mine.result(timeout=120)[1]
    assert "done: 7 steps" in running.result(timeout=120)[1]     # the other session's decode is untouched
    assert "done: 7 steps" in generate(me, seed=2).result(timeout=120)[1]   # the next one runs


def test_scrub_any_step_and_load_endpoints_without_page_state(client):
    """/show_step takes any step of the client's last decode (its maximum is the models' most
    steps, not the page's initial 2); /model_info and /train_use take only what a caller has."""
    assert "done: 16 steps" in generate(client, order="raster", seed=6).result(timeout=120)[1]
    image, caption = client.predict(12, False, api_name="/show_step")
    assert "step 12/16" in caption and iio.imread(image).shape[0] >= 16
    assert "probability" in client.predict(12, True, api_name="/show_step")[1]
    with pytest.raises(Exception, match="greater than maximum"):
        client.predict(17, False, api_name="/show_step")
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert all(p["parameter_has_default"] for p in api["/model_info"]["parameters"])
    table, classes = client.predict(api_name="/model_info")[:2]
    assert "NAR model" in json.dumps(table) and "Classes (3):** cat, dog, sun" in classes
    required = [p["parameter_name"] for p in api["/train_use"]["parameters"] if not p["parameter_has_default"]]
    assert required == ["run_id"], required
    with pytest.raises(Exception, match="is not a run id"):
        client.predict("../x", api_name="/train_use")
