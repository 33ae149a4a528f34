"""Many class-conditional samples for the standard FID evaluators, sharded over processes.

    python -m nar.sample --out samples/nar --num-samples 1200 --order nar --batch-size 16
    torchrun --nproc_per_node=8 -m nar.sample --out samples/nar ...     # the same, over 8 processes

The samples are spread evenly over the classes (sample i has class i mod C of the classes
given, or of all the model's classes) and cut into batches of --batch-size consecutive samples.
Batch b is decoded by process b mod world_size, always as the same batch (same classes, same
shape, seeds seed + i for its samples), so a seed gives the same samples whatever the number of
processes: the processes share the work, never the randomness. (On a CPU the same bits also need
the same torch threads per process, --threads: kernels may round differently with another count.)

The output folder holds `images/000123.png` (one per sample, each written atomically),
`samples.npz` (`arr_0` uint8 [N, H, W, 3], as the ADM / guided-diffusion evaluator reads it, and
`arr_1` the class ids), packed by streaming the PNGs into it once every sample exists, and
`sample.json` (the settings, the steps, and images/s of every process of every run). Kill it
at any moment and run the same command again: it continues where the processes stopped,
recomputing only the batches with a missing PNG; other settings on the same folder are refused.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import zipfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist

from .checkpoint import CheckpointError, atomic_write, remove_stale_temp_files
from .decode import generate
from .generate import add_sampling_arguments, load_models, sampling_flags
from .config import SamplingConfig
from .devices import pick_dtype
from .loading import BUNDLED_DIR
from .train import default_device, dist_info, init_distributed

SETTINGS_FILE = "sample.json"
NPZ_FILE = "samples.npz"
IMAGES_DIR = "images"
PNG_WRITERS = 4     # threads encoding PNGs while the next batch decodes


class SampleError(ValueError):
    """A request this command refuses, with a message a person can act on."""


# -- what is sampled, and by whom ---------------------------------------------------------------
def spread_classes(num_samples: int, class_ids: Sequence[int]) -> list[int]:
    """Sample i gets class_ids[i mod C]: every class gets num_samples // C samples, the first
    num_samples mod C classes one more, and every batch mixes the classes."""
    return [int(class_ids[i % len(class_ids)]) for i in range(num_samples)]


def batch_ranges(num_samples: int, batch_size: int) -> list[range]:
    """The batches: consecutive samples, batch_size each (the last one may be smaller)."""
    return [range(start, min(start + batch_size, num_samples)) for start in range(0, num_samples, batch_size)]


def batches_of_rank(num_batches: int, rank: int, world: int) -> list[int]:
    """Batches are handed to the processes in turn: batch b to rank b mod world."""
    return list(range(rank, num_batches, world))


def png_name(index: int, num_samples: int) -> str:
    return f"{index:0{max(6, len(str(num_samples - 1)))}d}.png"


# -- files ------------------------------------------------------------------------------------
def write_png(image: np.ndarray, path: Path) -> None:
    from PIL import Image
    atomic_write(path, lambda tmp: Image.fromarray(image).save(tmp, format="PNG"))


def read_png(path: Path) -> np.ndarray:
    from PIL import Image
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def write_npz(path: Path, count: int, image_shape: tuple, read_image: Callable[[int], np.ndarray],
              labels: np.ndarray, on_image: Optional[Callable[[], None]] = None) -> Path:
    """An .npz with arr_0 uint8 [count, *image_shape] read one image at a time (never all in
    memory: 50,000 samples at 256 px are about 10 GB) and arr_1 = labels. Stored uncompressed,
    as numpy.savez does, with a version 1.0 .npy header (what the ADM evaluator streams)."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
              "shape": (count, *image_shape)}

    def write(tmp: str) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            with zf.open("arr_0.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array_header_1_0(member, header)
                for i in range(count):
                    image = read_image(i)
                    if image.shape != tuple(image_shape) or image.dtype != np.uint8:
                        raise SampleError(f"sample {i} is {image.dtype} {list(image.shape)}, "
                                          f"expected uint8 {list(image_shape)}")
                    member.write(np.ascontiguousarray(image).data)
                    if on_image:
                        on_image()
            with zf.open("arr_1.npy", "w") as member:
                np.lib.format.write_array(member, np.asarray(labels, dtype=np.int64))
    return atomic_write(path, write)


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=1) + "\n"))


# -- progress ---------------------------------------------------------------------------------
class LineProgress:
    """A line on stderr every `every` seconds (and at the end): done/total, images/s, time left.
    Used where tqdm is not installed."""

    def __init__(self, total: int, initial: int = 0, desc: str = "", every: float = 10.0, stream=None):
        self.total, self.n, self.desc, self.every = total, initial, desc, every
        self.started_at, self.initial = time.perf_counter(), initial
        self.last_print = self.started_at
        self.stream = stream or sys.stderr

    def update(self, count: int) -> None:
        self.n += count
        now = time.perf_counter()
        if now - self.last_print >= self.every or self.n >= self.total:
            self.last_print = now
            self.stream.write(self.line(now) + "\n")
            self.stream.flush()

    def line(self, now: Optional[float] = None) -> str:
        elapsed = (now or time.perf_counter()) - self.started_at
        rate = (self.n - self.initial) / elapsed if elapsed > 0 else 0.0
        left = f"{format_seconds((self.total - self.n) / rate)} left" if rate > 0 else "time left unknown"
        return f"{self.desc}: {self.n}/{self.total} images, {rate:.2f} img/s, {left}"

    def close(self) -> None:
        pass


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def make_progress(total: int, initial: int, desc: str, position: int = 0):
    """tqdm if installed (with its own estimate of the time left), else LineProgress."""
    try:
        from tqdm import tqdm
    except ImportError:
        return LineProgress(total, initial, desc)
    return tqdm(total=total, initial=initial, desc=desc, position=position, unit="img",
                mininterval=2.0, file=sys.stderr, dynamic_ncols=True)


# -- settings ---------------------------------------------------------------------------------
def source_of(value: Optional[str]) -> Optional[str]:
    """A checkpoint source as recorded: local files by absolute path, Hub sources as given."""
    if value and Path(value).exists():
        return str(Path(value).resolve())
    return value


def settings_of(args, sampling: SamplingConfig, class_ids: list[int], device: torch.device) -> dict:
    """Everything that decides the samples. The number of processes is not part of it: a run
    may continue on another number of processes."""
    kind = "nar" if args.order == "nar" else "raster"
    return {"num_samples": args.num_samples, "class_ids": class_ids, "order": args.order,
            "window": args.window if args.order == "zipar" else None,
            "preset": args.preset,
            "checkpoint": source_of(args.checkpoint) or (None if args.preset else str(BUNDLED_DIR / f"{kind}.safetensors")),
            "filename": args.filename, "vq": None if args.preset else source_of(args.vq),
            "grid_size": args.grid_size, "seed": args.seed,
            "cfg_scale": sampling.cfg_scale, "cfg_interval": sampling.cfg_interval,
            "temperature": sampling.temperature, "top_k": sampling.top_k, "top_p": sampling.top_p,
            "batch_size": args.batch_size, "device_type": device.type,
            "dtype": str(pick_dtype(device)).replace("torch.", "")}


def settings_conflict(recorded: dict, wanted: dict) -> Optional[str]:
    """None if a run with `wanted` may continue the folder made with `recorded`, else why not."""
    diffs = [f"{key} {recorded.get(key)!r} there, {wanted[key]!r} now"
             for key in wanted if recorded.get(key) != wanted[key]]
    return "; ".join(diffs) or None


def open_folder(out: Path, settings: dict, info: dict) -> dict:
    """Rank 0: create the output folder or check that it continues with the same settings;
    remove temporary files a killed run left. Returns the folder's record (sample.json)."""
    record_path = out / SETTINGS_FILE
    images = out / IMAGES_DIR
    if record_path.is_file():
        try:
            record = json.loads(record_path.read_text())
            recorded = record["settings"]
        except (ValueError, KeyError, TypeError) as e:
            raise SampleError(f"{record_path} is not a readable record of this command ({e})") from None
        conflict = settings_conflict(recorded, settings)
        if conflict:
            raise SampleError(f"{out} holds samples made with other settings ({conflict}); "
                              f"use the same settings to continue it, or another --out folder")
    elif images.is_dir() and any(images.iterdir()):
        raise SampleError(f"{images} already holds files but {record_path} is missing; "
                          f"use an empty or new --out folder")
    else:
        record = {"settings": settings, **info, "complete": False, "runs": []}
        write_json(record_path, record)
    images.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(images)   # only rank 0, before the others start writing
    remove_stale_temp_files(out)
    return record


def agree(rank: int, world: int, work: Callable[[], object]):
    """Run `work` on rank 0 and give every rank its result, or its SampleError / CheckpointError
    message, so every process stops with the same clear message instead of waiting forever."""
    result, error = None, None
    if rank == 0:
        try:
            result = work()
        except (SampleError, CheckpointError, OSError) as e:
            error = str(e)
    if world > 1:
        box = [result, error]
        dist.broadcast_object_list(box, src=0)
        result, error = box
    if error:
        raise SampleError(error)
    return result


# -- the run ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m nar.sample", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder: images/, samples.npz, sample.json")
    p.add_argument("--num-samples", type=int, default=50_000)
    p.add_argument("--class-id", action="append", default=None,
                   help="class index or name to spread the samples over; repeat for several "
                        "(default: every class of the model)")
    p.add_argument("--batch-size", type=int, default=32,
                   help="samples a process decodes at once; fixes the batches, whatever the number of processes")
    add_sampling_arguments(p)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads per process (0: torch's default)")
    p.add_argument("--max-batches", type=int, default=0,
                   help="stop after this many batches in each process (0: no limit); run again to continue")
    return p


def check_args(args) -> None:
    if args.num_samples < 1:
        raise SampleError("--num-samples must be at least 1")
    if not 1 <= args.batch_size <= 4096:
        raise SampleError("--batch-size must be in [1, 4096]")
    if args.threads < 0 or args.max_batches < 0:
        raise SampleError("--threads and --max-batches must be 0 or more")
    SamplingConfig(seed=args.seed + args.num_samples - 1, **sampling_flags(args)).validate()   # every seed is valid


def decode_batches(studio, sampling: SamplingConfig, args, todo: list[int], ranges: list[range], labels: list[int],
                   images_dir: Path, progress) -> dict:
    """Decode the batches `todo` and write their PNGs. Returns timings."""
    model = studio.model_for(args.order).model
    schedule = studio.schedule(args.order, args.window)
    decoded_batches, decoded_images, decode_seconds, started = 0, 0, 0.0, time.perf_counter()
    pending: list[Future] = []
    with ThreadPoolExecutor(PNG_WRITERS) as writers:
        for b in todo:
            samples = ranges[b]
            names = [png_name(i, args.num_samples) for i in samples]
            if args.max_batches and decoded_batches >= args.max_batches:
                break
            t0 = time.perf_counter()
            class_ids = torch.tensor([labels[i] for i in samples], dtype=torch.long)
            grid = generate(model, schedule, class_ids, dataclasses.replace(sampling, seed=args.seed + samples.start))
            images = studio.images(grid)         # on the host: the device has finished
            decode_seconds += time.perf_counter() - t0
            for future in pending:               # at most one batch waits to be written
                future.result()
                progress.update(1)
            pending = [writers.submit(write_png, image, images_dir / name) for image, name in zip(images, names)]
            decoded_images += len(samples)
            decoded_batches += 1
        for future in pending:
            future.result()
            progress.update(1)
    seconds = time.perf_counter() - started
    return {"images": decoded_images, "seconds": round(seconds, 3), "decode_seconds": round(decode_seconds, 3),
            "images_per_second": round(decoded_images / seconds, 3) if decoded_images else None}


def pack(out: Path, num_samples: int, labels: list[int], image_shape: tuple) -> Path:
    images = out / IMAGES_DIR
    progress = make_progress(num_samples, 0, "packing")
    try:
        return write_npz(out / NPZ_FILE, num_samples, image_shape,
                         lambda i: read_png(images / png_name(i, num_samples)), np.asarray(labels),
                         on_image=lambda: progress.update(1))
    finally:
        progress.close()


def run(args) -> Optional[dict]:
    """The whole command on this process; returns the folder's record on rank 0."""
    check_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    init_distributed()
    rank, world = dist_info()
    if args.device == "auto":
        args.device = str(default_device())     # cuda:<local rank> under torchrun
    studio, sampling, notes = load_models(args)
    if rank == 0:
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
    loaded = studio.model_for(args.order)
    class_ids = studio.class_ids(args.order, args.class_id or list(range(len(loaded.class_names)))).tolist()
    settings = settings_of(args, sampling, class_ids, studio.device)
    steps = len(studio.schedule(args.order, args.window).steps)
    size = studio.vq.cfg.image_size
    info = {"steps": steps, "image_shape": [size, size, 3],
            "class_names": [loaded.class_names[i] for i in sorted(set(class_ids))]}
    out = Path(args.out)
    record = agree(rank, world, lambda: open_folder(out, settings, info))

    labels = spread_classes(args.num_samples, class_ids)
    ranges = batch_ranges(args.num_samples, args.batch_size)
    mine = batches_of_rank(len(ranges), rank, world)
    existing = {entry.name for entry in os.scandir(out / IMAGES_DIR)}
    # a batch is decoded again only if one of its files is missing (PNGs are written atomically,
    # so a file under its final name is whole)
    todo = [b for b in mine if not all(png_name(i, args.num_samples) in existing for i in ranges[b])]
    my_total = sum(len(ranges[b]) for b in mine)
    progress = make_progress(my_total, my_total - sum(len(ranges[b]) for b in todo), f"rank {rank}/{world}",
                             position=rank)
    try:
        stats = decode_batches(studio, sampling, args, todo, ranges, labels, out / IMAGES_DIR, progress)
    finally:
        progress.close()
    stats.update(rank=rank, threads=torch.get_num_threads())
    every = [None] * world
    if world > 1:
        dist.all_gather_object(every, stats)   # also waits until every process has written its PNGs
    else:
        every = [stats]
    if rank > 0:
        return None

    names = {entry.name for entry in os.scandir(out / IMAGES_DIR)}
    missing = sum(png_name(i, args.num_samples) not in names for i in range(args.num_samples))
    run_record = {"processes": world, "device": str(studio.device), "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "per_process": every, "images": sum(s["images"] for s in every),
                  "images_per_second": round(sum(s["images"] for s in every) / max(max(s["seconds"] for s in every), 1e-9), 3)}
    record = {**record, **info, "runs": record.get("runs", []) + [run_record], "missing": missing}
    if not missing and not (out / NPZ_FILE).is_file():
        pack(out, args.num_samples, labels, (size, size, 3))
    record["complete"] = not missing
    record["npz"] = str(out / NPZ_FILE) if not missing else None
    write_json(out / SETTINGS_FILE, record)
    return record


def main(argv: Optional[list[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        record = run(args)
    except (SampleError, CheckpointError, FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if record is None:
        return
    n, shape = record["settings"]["num_samples"], record["image_shape"]
    last = record["runs"][-1]
    rate = (f"{last['images']} images decoded at {last['images_per_second']} img/s over {last['processes']} "
            f"process(es)" if last["images"] else "no batch left to decode")
    if record["complete"]:
        print(f"{rate}; {record['npz']}: arr_0 uint8 {[n, *shape]}")
    else:
        print(f"{rate}; {record['missing']} of {n} samples still missing: run the same command again to continue")


if __name__ == "__main__":
    main()
