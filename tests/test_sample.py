"""python -m nar.sample: sharding over gloo processes, the .npz for the evaluators, resuming."""
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

from nar.sample import (LineProgress, batch_ranges, batches_of_rank, png_name, read_png, spread_classes,
                        write_npz)

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(ckpts, out, *extra, processes=1, kind="nar"):
    launcher = [sys.executable, "-m", "nar.sample"] if processes == 1 else \
        [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
         "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "nar.sample"]
    # one torch thread per process in every run: CPU kernels may round differently with
    # another thread count, and torchrun gives each of several processes one thread
    return [*launcher, "--out", str(out), "--checkpoint", str(ckpts[kind]), "--vq", str(ckpts["vq"]),
            "--threads", "1", *extra]


def sample(ckpts, out, *extra, processes=1, kind="nar"):
    return subprocess.run(command(ckpts, out, *extra, processes=processes, kind=kind), cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def in_process(ckpts, out, *extra, kind="nar", capsys=None):
    """The same command as main() in this process (no interpreter start): (exit code, stdout, stderr)."""
    from nar.sample import main
    threads = torch.get_num_threads()
    code = 0
    try:
        main(command(ckpts, out, *extra, kind=kind)[3:])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
        if not isinstance(e.code, int):
            sys.stderr.write(f"{e.code}\n")
    finally:
        torch.set_num_threads(threads)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def descendants(pid: int) -> list[int]:
    """The processes started by `pid`, and theirs (torchrun puts its workers in their own sessions)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def pngs(out: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted((out / "images").glob("*.png"))}


def test_plan_is_balanced_and_independent_of_the_world_size():
    labels = spread_classes(14, [0, 1, 2])
    assert np.bincount(labels).tolist() == [5, 5, 4]
    ranges = batch_ranges(14, 4)
    assert [list(r) for r in ranges] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13]]
    for world in (1, 2, 3, 8):   # every batch is handed to exactly one rank
        handed = sorted(b for rank in range(world) for b in batches_of_rank(len(ranges), rank, world))
        assert handed == list(range(len(ranges)))
    assert png_name(123, 50_000) == "000123.png" and png_name(5, 2_000_000) == "0000005.png"


def test_npz_streams_one_image_at_a_time_in_the_evaluator_layout(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 8, 6, 3), dtype=np.uint8)
    reads = []
    write_npz(tmp_path / "s.npz", 5, (8, 6, 3), lambda i: reads.append(i) or images[i], np.arange(5) % 2)
    assert reads == [0, 1, 2, 3, 4]
    with np.load(tmp_path / "s.npz") as npz:
        assert npz["arr_0"].dtype == np.uint8 and np.array_equal(npz["arr_0"], images)
        assert npz["arr_1"].tolist() == [0, 1, 0, 1, 0]
    with zipfile.ZipFile(tmp_path / "s.npz") as zf, zf.open("arr_0.npy") as member:  # as the ADM evaluator reads
        assert np.lib.format.read_magic(member) == (1, 0)
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
        assert (shape, fortran, dtype) == ((5, 8, 6, 3), False, np.uint8)
        assert member.read(8 * 6 * 3) == images[0].tobytes()


def test_line_progress_reports_rate_and_time_left():
    stream = io.StringIO()
    progress = LineProgress(total=10, initial=4, desc="rank 0/1", every=0.0, stream=stream)
    time.sleep(0.05)
    progress.update(2)
    line = stream.getvalue().strip()
    assert line.startswith("rank 0/1: 6/10 images, ") and "img/s" in line and "left" in line
    assert "unknown" not in line


def test_one_and_two_processes_give_the_same_samples(tiny_checkpoints, tmp_path):
    args = ["--num-samples", "14", "--batch-size", "4", "--seed", "5", "--cfg-scale", "2.0", "--top-k", "0"]
    one = sample(tiny_checkpoints, tmp_path / "one", *args)
    two = sample(tiny_checkpoints, tmp_path / "two", *args, processes=2)
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stderr[-3000:]
    assert "arr_0 uint8 [14, 16, 16, 3]" in two.stdout
    with np.load(tmp_path / "one" / "samples.npz") as a, np.load(tmp_path / "two" / "samples.npz") as b:
        images, labels = a["arr_0"], a["arr_1"]
        assert images.shape == (14, 16, 16, 3) and images.dtype == np.uint8
        assert labels.tolist() == [i % 3 for i in range(14)] and np.bincount(labels).tolist() == [5, 5, 4]
        assert np.array_equal(images, b["arr_0"]) and np.array_equal(labels, b["arr_1"])
    assert len({im.tobytes() for im in images}) > 10      # varied samples, not one image repeated
    files_one, files_two = pngs(tmp_path / "one"), pngs(tmp_path / "two")
    assert list(files_one) == [f"{i:06d}.png" for i in range(14)] and files_one == files_two
    assert np.array_equal(read_png(tmp_path / "one" / "images" / "000009.png"), images[9])

    record = json.loads((tmp_path / "two" / "sample.json").read_text())
    assert record["complete"] and record["steps"] == 7 and record["settings"]["batch_size"] == 4
    run = record["runs"][-1]
    assert run["processes"] == 2 and [p["images"] for p in run["per_process"]] == [8, 6]  # batches 0, 2 | 1, 3
    assert all(p["images_per_second"] > 0 for p in run["per_process"])

    # batch 1 is samples 4..7: classes 1, 2, 0, 1 with seeds 9..12, as a direct decode gives them
    from nar.decode import generate
    from nar.generate import build_parser, load_models
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gen_args = build_parser().parse_args(["--checkpoint", str(tiny_checkpoints["nar"]), "--vq",
                                              str(tiny_checkpoints["vq"]), "--seed", "9", "--cfg-scale", "2.0",
                                              "--top-k", "0", "--device", "cpu"])
        studio, sampling, _ = load_models(gen_args)
        grid = generate(studio.model_for("nar").model, studio.schedule("nar"), torch.tensor([1, 2, 0, 1]), sampling)
        assert np.array_equal(studio.images(grid), images[4:8])
    finally:
        torch.set_num_threads(threads)


def test_killed_run_resumes_to_the_same_files(tiny_checkpoints, tmp_path, capsys):
    """SIGKILL a two-process ZipAR run once some PNGs exist, continue it with one process:
    the files equal an uninterrupted run's; other settings on that folder are refused."""
    args = ["--num-samples", "128", "--batch-size", "2", "--order", "zipar", "--window", "2", "--seed", "1"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(command(tiny_checkpoints, killed, *args, processes=2, kind="raster"), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((killed / "images").glob("*.png"))) < 4 and proc.poll() is None:
        time.sleep(0.005)
    workers = descendants(proc.pid)
    for pid in [proc.pid, *workers]:         # the launcher and both of its processes
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    while any(alive(pid) for pid in workers):   # killed, and no longer able to write
        time.sleep(0.01)
    assert len(workers) >= 2 and proc.returncode == -signal.SIGKILL
    partial = pngs(killed)
    assert 4 <= len(partial) < 128, len(partial)
    assert not (killed / "samples.npz").exists()
    for name in partial:                     # every PNG under its final name is whole
        assert read_png(killed / "images" / name).shape == (16, 16, 3)

    code, _, err = in_process(tiny_checkpoints, killed, *args[:-1], "2", kind="raster", capsys=capsys)
    assert code != 0 and "other settings" in err and "seed 1 there, 2 now" in err
    assert "Traceback" not in err and pngs(killed) == partial

    code, _, err = in_process(tiny_checkpoints, killed, *args, kind="raster", capsys=capsys)   # one process now
    assert code == 0, err[-3000:]
    code, _, err = in_process(tiny_checkpoints, tmp_path / "whole", *args, kind="raster", capsys=capsys)
    assert code == 0, err[-3000:]
    record = json.loads((killed / "sample.json").read_text())
    assert record["runs"][-1]["images"] <= 128 - len(partial) + 2   # only the unfinished batches again
    assert pngs(killed) == pngs(tmp_path / "whole") and len(pngs(killed)) == 128
    with np.load(killed / "samples.npz") as a, np.load(tmp_path / "whole" / "samples.npz") as b:
        assert a["arr_0"].shape == (128, 16, 16, 3) and np.array_equal(a["arr_0"], b["arr_0"])
    assert not list(killed.rglob(".*.tmp"))


def test_max_batches_stops_early_without_packing(tiny_checkpoints, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = in_process(tiny_checkpoints, out, "--num-samples", "9", "--batch-size", "3",
                                   "--max-batches", "1", capsys=capsys)
    assert code == 0, err[-3000:]
    assert "6 of 9 samples still missing" in stdout
    assert len(pngs(out)) == 3 and not (out / "samples.npz").exists()
    code, _, err = in_process(tiny_checkpoints, out, "--num-samples", "9", "--class-id", "unicorn", capsys=capsys)
    assert code != 0 and "unknown class" in err and "Traceback" not in err
    code, stdout, err = in_process(tiny_checkpoints, out, "--num-samples", "9", "--batch-size", "3", capsys=capsys)
    assert code == 0 and "6 images decoded" in stdout and "arr_0 uint8 [9, 16, 16, 3]" in stdout, err
