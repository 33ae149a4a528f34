"""The Video tab end to end: `python app.py` on tiny random image and video checkpoints (4 x 8 x 8
clips: NAR 18 steps, raster 256), driven through gradio_client: a clip decoded live and its files,
scrubbing, Stop, the race, another visitor's result, bad input."""
from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from conftest import random_model, write_tiny_checkpoints
from test_app import running_app

NAR_STEPS, RASTER_STEPS = 18, 256
BLANK = (214, 236)                    # the checkerboard of undecoded tokens (nar/render.py)


def video(client, motion="zoom_in", clips=1, seed=0, order="nar", window=4, cfg=3.0, cfg_interval=-1,
          temperature=1.0, top_k=0, top_p=1.0):
    return client.submit(motion, clips, seed, order, window, cfg, cfg_interval, temperature, top_k, top_p,
                         api_name="/generate_video")


def blank_share(path) -> float:
    image = iio.imread(path)[..., :3]
    return float((np.isin(image[..., 0], BLANK) & (image[..., 0] == image[..., 1])).mean())


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    from nar.checkpoint import save_transformer
    from nar.model import Transformer
    from nar.moving_emoji import MOTIONS
    folder = tmp_path_factory.mktemp("video_app")
    write_tiny_checkpoints(folder)
    for kind in ("nar", "raster"):
        model = random_model(kind, grid=8, vocab=32, classes=len(MOTIONS), frames=4)
        if kind == "raster":      # 6 blocks, not 2: a raster decode of 4 clips lasts seconds, long enough to Stop
            model = Transformer(dataclasses.replace(model.config, n_layer=6)).eval()
            for p in model.parameters():
                torch.nn.init.normal_(p, std=0.3)
        save_transformer(folder / f"video_{kind}.safetensors", model, list(MOTIONS))
    with running_app(folder, threads=None, extra_args=("--threads", 1, "--device", "cpu")) as url:
        yield url


@pytest.fixture(scope="module")
def client(app_url):
    from gradio_client import Client
    return Client(app_url, verbose=False)


def test_a_clip_decodes_live_then_comes_as_gif_and_mp4_and_any_step_is_shown(client, app_url):
    job = video(client, seed=3)
    live, caption, gif, mp4 = job.result(timeout=120)
    assert f"NAR · done: {NAR_STEPS} steps" in caption and "4 x 8 x 8 tokens" in caption and "clips/s" in caption
    updates = job.outputs()
    steps = [int(re.search(r"step (\d+)/18", u[1]).group(1)) for u in updates[:-1]]
    assert steps == sorted(set(steps)) and all(1 <= s < NAR_STEPS for s in steps)
    # the view: the 4 frames side by side (32 px frames at 4x, 4 px gaps), mostly blank at first
    assert iio.imread(live).shape[:2] == (128, 4 * 128 + 3 * 4) and blank_share(live) < 0.05
    # the clip: one GIF frame per clip frame, the MP4 beside it
    frames = iio.imread(gif, index=None)
    assert frames.shape[0] == 4 and not np.array_equal(frames[0], frames[-1])
    assert Path(mp4).suffix == ".mp4" and Path(mp4).stat().st_size > 0
    # scrubbing this session's last clip: the frames differ as tokens are decoded, and fill up step by step
    shown = [client.predict(step, api_name="/show_video_step") for step in (1, 9, NAR_STEPS)]
    assert [c for _, c in shown][0].startswith(f"step 1/{NAR_STEPS}")
    blanks = [blank_share(image) for image, _ in shown]
    assert blanks[0] > 0.9 and blanks[0] > blanks[1] > blanks[2]
    pictures = [iio.imread(image) for image, _ in shown]
    assert not np.array_equal(pictures[0], pictures[1]) and not np.array_equal(pictures[1], pictures[2])
    # another visitor's page has no clip to show
    from gradio_client import Client
    other = Client(app_url, verbose=False)
    with pytest.raises(Exception, match="no longer kept"):
        other.predict(1, api_name="/show_video_step")


def test_stop_ends_a_clip_decode_with_a_stopped_caption(client):
    job = video(client, clips=4, order="raster", seed=1)
    # Stop as soon as the decode runs (the live view holds its first frame back, so do not wait for one)
    deadline, answer = time.monotonic() + 60, ""
    while "stopping 1 decode" not in answer and not job.done() and time.monotonic() < deadline:
        answer = client.predict(api_name="/stop_video")
        time.sleep(0.02)
    assert "stopping 1 decode" in answer, answer
    live, caption, gif, mp4 = job.result(timeout=60)
    found = re.search(rf"Raster · stopped at step (\d+)/{RASTER_STEPS}", caption)
    assert found, caption
    stopped = int(found.group(1))
    assert 1 <= stopped < RASTER_STEPS
    assert 0.0 < blank_share(live) < 1.0             # the partial clip: decoded tokens and blank ones
    # its files (a GIF merges the identical all-blank frames at the end into one)
    assert iio.imread(gif, index=None).shape[0] >= 1 and Path(mp4).stat().st_size > 0
    image, step_caption = client.predict(RASTER_STEPS, api_name="/show_video_step")
    assert step_caption.startswith(f"step {stopped}/{RASTER_STEPS}") and f"(stopped at {stopped})" in step_caption
    assert client.predict(api_name="/stop_video") == "nothing is decoding in this session"


def test_the_race_shows_both_orders_and_its_table(client):
    job = client.submit("pan_up", 2, 3.0, api_name="/race_video")
    raster, nar, raster_caption, nar_caption, table = job.result(timeout=120)
    rows = {row[0].lower(): row for row in table["data"]}
    assert table["headers"][:4] == ["Order", "Steps", "Decode time (s)", "Clips/s"]
    assert (rows["raster"][1], rows["nar"][1]) == (RASTER_STEPS, NAR_STEPS)
    assert float(rows["nar"][2]) < float(rows["raster"][2]) and rows["raster"][4] == "1.00x"
    assert f"done: {RASTER_STEPS} steps" in raster_caption and f"done: {NAR_STEPS} steps" in nar_caption
    assert iio.imread(raster).shape == iio.imread(nar).shape == (128, 524, 3)


def test_bad_input_is_named(client):
    with pytest.raises(Exception, match="unknown class 'moonwalk'.*pan_right"):
        video(client, motion="moonwalk").result(timeout=60)
    with pytest.raises(Exception, match="greater than maximum value 4"):      # the slider's range
        video(client, clips=9).result(timeout=60)
    with pytest.raises(Exception, match="must be a whole number"):
        video(client, seed=1.5).result(timeout=60)
    with pytest.raises(Exception, match="'spiral'.* not in the list of choices"):
        video(client, order="spiral").result(timeout=60)
