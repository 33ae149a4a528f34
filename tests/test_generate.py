"""python -m nar.generate end to end on tiny random checkpoints."""
import json
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


def generate(args, cwd):
    return subprocess.run([sys.executable, "-m", "nar.generate", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("order,steps", [("nar", 7), ("raster", 16), ("zipar", 10)])
def test_cli_json_png_and_gif(tiny_checkpoints, tmp_path, order, steps):
    kind = "nar" if order == "nar" else "raster"
    out, gif = tmp_path / "img.png", tmp_path / "front.gif"
    result = generate(["--checkpoint", str(tiny_checkpoints[kind]), "--vq", str(tiny_checkpoints["vq"]),
                       "--order", order, "--window", "2", "--class-id", "dog", "--class-id", "0",
                       "--seed", "3", "--out", str(out), "--gif", str(gif), "--json"], tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["order"] == order and summary["steps"] == steps and summary["grid"] == [4, 4]
    assert summary["class_names"] == ["dog", "cat"] and summary["seconds"] > 0
    image = iio.imread(out)
    assert image.shape == (16, 16 * 2 + 4, 3)  # two 16 px images side by side
    frames = iio.imread(gif, index=None)
    assert frames.shape[0] == steps  # one frame per step
    # not-yet-decoded tokens are blank (checkerboard grey) in the first frame, not in the last
    first, last = frames[0], frames[-1]
    blank = np.isin(first[..., 0], (214, 236)) & (first[..., 0] == first[..., 1])
    assert blank.mean() > 0.5
    assert not np.array_equal(first, last)


def test_cli_same_seed_same_png(tiny_checkpoints, tmp_path):
    args = ["--checkpoint", str(tiny_checkpoints["nar"]), "--vq", str(tiny_checkpoints["vq"]),
            "--class-id", "sun", "--seed", "9"]
    a = generate(args + ["--out", str(tmp_path / "a.png")], tmp_path)
    b = generate(args + ["--out", str(tmp_path / "b.png")], tmp_path)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert np.array_equal(iio.imread(tmp_path / "a.png"), iio.imread(tmp_path / "b.png"))


@pytest.mark.parametrize("args,message", [
    (["--class-id", "unicorn"], "unknown class"),
    (["--class-id", "7"], "out of range"),
    (["--temperature", "0"], "temperature"),
    (["--order", "raster"], "raster model was expected"),
])
def test_cli_bad_input_is_a_clear_error(tiny_checkpoints, tmp_path, args, message):
    result = generate(["--checkpoint", str(tiny_checkpoints["nar"]), "--vq", str(tiny_checkpoints["vq"]),
                       "--out", str(tmp_path / "x.png"), *args], tmp_path)
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr
