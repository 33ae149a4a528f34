"""The Train tab end to end: `python app.py` on tiny random checkpoints (4x4 tokens, 16 px images,
classes cat/dog/sun) with its own runs folder, driven through the API with gradio_client.

A tiny zip made here (an existing class "cat" and a new one "star") is fine-tuned on: the loss
falls, the weights come back, load, know the new class, and generate it once they are made the
active model. Hostile uploads are skipped or refused with their reasons and the server keeps
generating. A run is cancelled and resumed, and a second user is told the server is busy."""
from __future__ import annotations

import io
import struct
import sys
import time
import urllib.request
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_app import generate, running_app  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def app_with_runs(checkpoints: Path, runs_dir: Path):
    """The app on a free loopback port with its fine-tuning runs in `runs_dir`."""
    return running_app(checkpoints, extra_args=("--runs-dir", runs_dir))


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("runs") / "finetune"


@pytest.fixture(scope="module")
def app_url(tiny_checkpoints, runs_dir):
    with app_with_runs(tiny_checkpoints["vq"].parent, runs_dir) as url:
        yield url


@pytest.fixture(scope="module")
def client(app_url):
    from gradio_client import Client
    return Client(app_url, verbose=False)


# -- uploads made here -------------------------------------------------------------------------
def square_png(colour, seed: int, size: int = 16) -> bytes:
    """A coloured square at a random place on white."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), 255, np.uint8)
    lo = int(rng.integers(1, size // 3))
    img[lo:lo + size // 2, lo:lo + size // 2] = colour
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def pets_zip(tmp_path_factory):
    """Two class folders: "cat" (known to the model) and "star" (new), six images each."""
    path = tmp_path_factory.mktemp("upload") / "pets.zip"
    with zipfile.ZipFile(path, "w") as z:
        for i in range(6):
            z.writestr(f"cat/{i}.png", square_png((200, 20, 20), i))
            z.writestr(f"star/{i}.png", square_png((250, 200, 0), 100 + i))
    return path


def huge_header_png(width: int = 30000, height: int = 30000) -> bytes:
    """A valid PNG signature and IHDR claiming width x height, with a tiny IDAT."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + \
        chunk(b"IEND", b"")


def write_zip(path: Path, members: dict, symlinks=()) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
        for name, target in symlinks:
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16
            z.writestr(info, target)
    return path


def bomb_zip(path: Path, megabytes: int = 410) -> Path:
    """One member that expands to more than the 400 MB the app accepts, in about 0.4 MB."""
    with zipfile.ZipFile(path, "w") as z:
        info = zipfile.ZipInfo("cat/zeros.png")
        info.compress_type = zipfile.ZIP_DEFLATED
        with z.open(info, "w", force_zip64=True) as f:
            block = b"\0" * 2 ** 20
            for _ in range(megabytes):
                f.write(block)
    return path


def scan(client, paths, loose=""):
    from gradio_client import handle_file
    return client.predict([handle_file(str(p)) for p in paths], loose, api_name="/train_scan")


def value(output):
    """The value of an output that the app sent as an update (value + visibility)."""
    if isinstance(output, dict) and output.get("__type__") == "update":
        return output.get("value")
    return output


def rows(table) -> list[list]:
    return (value(table) or {}).get("data") or []


def train(client, paths, loose="", steps=60, lr=3e-3, batch=8, layers="all", every=20):
    from gradio_client import handle_file
    return client.submit([handle_file(str(p)) for p in paths], loose, steps, lr, batch, layers, every,
                         api_name="/train")


# -- tests -------------------------------------------------------------------------------------
def test_endpoints_and_limits_are_stated(client, app_url):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/train", "/train_scan", "/train_cancel", "/train_resume", "/train_status", "/train_use",
            "/train_download"} <= set(endpoints)
    with urllib.request.urlopen(app_url + "config") as r:
        page = r.read().decode()
    assert "Limits: up to 2000 images" in page and "4096x4096 pixels per image" in page


def test_hostile_uploads_are_skipped_or_refused_with_reasons(client, tmp_path, runs_dir):
    from gradio_client.exceptions import AppError
    outside = tmp_path.parent / "evil_written.png"
    runs_before = set(runs_dir.iterdir())
    good = square_png((200, 20, 20), 0)
    uploads = {
        "traversal": write_zip(tmp_path / "traversal.zip", {"../evil_written.png": good, "cat/ok.png": good}),
        "symlink": write_zip(tmp_path / "link.zip", {"cat/ok.png": good}, symlinks=[("cat/passwd.png", "/etc/passwd")]),
        "truncated": tmp_path / "truncated.png",
        "text": tmp_path / "notes.png",
        "huge": tmp_path / "huge.png",
    }
    uploads["truncated"].write_bytes(square_png((0, 0, 200), 1, size=64)[:60])
    uploads["text"].write_text("this is a text file, not a picture\n")
    uploads["huge"].write_bytes(huge_header_png())
    expected = {"traversal": ("traversal.zip:../evil_written.png", "path leaves the upload folder"),
                "symlink": ("link.zip:cat/passwd.png", "symbolic link"),
                "truncated": ("truncated.png", "corrupt or truncated"),
                "text": ("notes.png", "not an image"),
                "huge": ("huge.png", "pixels")}           # over our limit, or Pillow's bomb guard (900000000 pixels)
    for kind, (name, reason) in expected.items():
        summary, classes, thumbs, skipped = scan(client, [uploads[kind]], loose="moon")
        skipped_rows = {r[0]: r[1] for r in rows(skipped)}
        assert name in skipped_rows, (kind, skipped_rows)
        assert reason in skipped_rows[name], (kind, skipped_rows)
        if kind == "huge":
            assert "over the limit" in skipped_rows[name] or "decompression bomb" in skipped_rows[name]
        assert "skipped" in summary
        if kind in ("traversal", "symlink"):      # the good member next to the hostile one is kept
            assert [r[:2] for r in rows(classes)] == [["cat", 1]]
    # a compression bomb is refused as a whole
    bomb = bomb_zip(tmp_path / "bomb.zip")
    summary, classes, thumbs, skipped = scan(client, [bomb])
    assert "Upload refused" in summary and "compression bomb" in summary
    with pytest.raises(AppError, match="compression bomb"):
        train(client, [bomb], steps=5).result(timeout=60)
    # an upload with nothing usable does not start a run, and says why
    with pytest.raises(AppError) as info:
        train(client, [uploads["truncated"], uploads["text"], uploads["huge"]], loose="moon",
              steps=5).result(timeout=60)
    text = str(info.value)
    assert "no usable images" in text and "not an image" in text and "Traceback" not in text
    assert not outside.exists()
    assert set(runs_dir.iterdir()) == runs_before        # no run was started for the refused uploads
    # the server is unharmed
    assert "done: 7 steps" in generate(client, cls="sun", seed=5).result(timeout=120)[1]


def test_fine_tune_learns_a_new_class_and_generates_it(client, pets_zip, runs_dir):
    import torch
    from nar.checkpoint import class_names_of, read_checkpoint
    from nar.loading import build_transformer
    from nar.config import SamplingConfig
    from nar.decode import generate as decode
    from nar.schedules import nar
    from nar.run_files import split_run_checkpoint

    summary, classes, thumbs, skipped = scan(client, [pets_zip])
    assert "Found **12 images** in **2 classes** (1 new: star)" in summary
    assert [r for r in rows(classes)] == [["cat", 6, "yes, class 0"], ["star", 6, "new class"]]
    assert len(value(thumbs)) == 12 and rows(skipped) == []

    job = train(client, [pets_zip], steps=60, lr=3e-3, batch=8, every=20)
    status, bar, plot, preview, files, runs, run_id, info = job.result(timeout=300)
    assert info["status"] == "done", info["message"]
    assert "Finished" in status and "60 steps" in status and "done" in bar
    assert len(job.outputs()) >= 3                        # progress was streamed while it trained
    assert any("Training" in out[0] for out in job.outputs()[:-1])
    losses = [loss for _, loss in info["losses"]]
    assert len(losses) == 60 and np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    assert info["class_names"] == ["cat", "dog", "sun", "star"] and info["new_classes"] == ["star"]
    assert preview is not None and info["preview_step"] == 60
    assert (run_dir := runs_dir / run_id).is_dir() and (run_dir / "best.safetensors").is_file()
    # the weights come back, load and know the new class; the resumable file holds the optimiser too
    weights = next(f for f in files if "resumable" not in Path(f).name)
    resumable = next(f for f in files if "resumable" in Path(f).name)
    ckpt = read_checkpoint(weights)
    assert class_names_of(ckpt) == ["cat", "dog", "sun", "star"]
    model = build_transformer(ckpt)
    grid = decode(model, nar(4), torch.tensor([3]), SamplingConfig(seed=0))
    assert grid.shape == (1, 4, 4) and ((grid >= 0) & (grid < 32)).all()
    model_part, optimiser = split_run_checkpoint(Path(resumable))
    assert optimiser and build_transformer(model_part).config.num_classes == 4
    # the weights served are copies in the app's output folder, never files of the runs folder
    assert runs_dir.as_posix() not in weights
    # the class pickers learn "star" once the run is the active model, and it generates
    out = client.predict(run_id, "cat", "cat", 2, 2, api_name="/train_use")
    assert "fine-tuned run" in out[0] and "star" in out[0]
    assert "star" in client.predict(api_name="/model_info")[1]
    caption = generate(client, cls="star", seed=1).result(timeout=120)[1]
    assert "done: 7 steps" in caption
    # the run is listed and its state can be read back
    status, *_, info_again = client.predict(run_id, api_name="/train_status")
    assert info_again["run_id"] == run_id and info_again["status"] == "done"


def test_cancel_resume_and_a_second_user_is_told_the_server_is_busy(client, app_url, pets_zip):
    from gradio_client import Client
    from gradio_client.exceptions import AppError
    job = train(client, [pets_zip], steps=5000, lr=1e-3, batch=4, every=5)
    deadline = time.monotonic() + 120
    run_id, step = None, 0
    while time.monotonic() < deadline and step < 10:
        outputs = job.outputs()
        if outputs:
            run_id, step = outputs[-1][6], outputs[-1][7]["step"]
        if job.done():
            break
        time.sleep(0.2)
    assert run_id and step >= 10, job.outputs()[-1:] or job.result()
    # another user: told at once that the server is busy
    other = Client(app_url, verbose=False)
    started = time.monotonic()
    with pytest.raises(AppError, match="server is busy") as info:
        train(other, [pets_zip], steps=10).result(timeout=60)
    assert time.monotonic() - started < 30 and run_id in str(info.value)
    # generation keeps serving while the run trains
    assert "done: 7 steps" in generate(other, cls="dog", seed=3).result(timeout=120)[1]
    assert not job.done()
    # cancel: only the visitor who started it may; it stops cleanly and keeps the checkpoint
    with pytest.raises(AppError, match="started by another visitor; only they can cancel it"):
        other.predict(run_id, api_name="/train_cancel")
    assert not job.done()
    assert "Cancelling run" in client.predict(run_id, api_name="/train_cancel")
    status, bar, plot, preview, files, runs, rid, info = job.result(timeout=120)
    assert info["status"] == "cancelled" and "Cancelled" in status and rid == run_id
    saved = info["step"]
    assert 10 <= saved < 5000 and files                  # the weights at the cancel step are offered
    with pytest.raises(AppError, match="not training now"):
        client.predict(run_id, api_name="/train_cancel")
    # resume: continues from the saved step, does not restart
    with pytest.raises(AppError, match=f"already trained {saved} steps"):
        client.predict(run_id, saved, 1e-3, 4, "all", 5, api_name="/train_resume")
    resumed = client.submit(run_id, saved + 8, 1e-3, 4, "all", 5, api_name="/train_resume")
    status, bar, plot, preview, files, runs, rid, info = resumed.result(timeout=180)
    assert info["status"] == "done", info["message"]
    assert rid == run_id and info["step"] == saved + 8
    # the curve covers the whole run: the steps before the resume (from the run's log) and after
    steps = [s for s, _ in info["losses"]]
    assert steps[0] < saved + 1 and saved + 1 in steps and steps == sorted(set(steps))
    from nar.checkpoint import read_checkpoint
    weights = next(f for f in files if "resumable" not in Path(f).name)
    assert read_checkpoint(weights).extra["step"] == saved + 8   # the result of the resumed run
