"""How fast the Generate stream feels, measured through gradio_client on the bundled models.

    python scripts/live_view_report.py [--repeats 3] [--out reports/live_view.json]

For raster, ZipAR and NAR with 1 and 8 images:
  * decode time, view off: the same decode in this process through Studio, nothing drawn;
  * decode time, view on: what the caption of the streamed request reports;
  * submit -> images: seconds from submitting the request until the final images arrived;
  * submit -> files: until the GIF (and MP4) arrived;
and the Compare race's wall time against the sum of its three decode times. Each figure is the
median of `--repeats` runs. The server runs `python app.py` on a free loopback port with the
machine's default torch threads (as a user starts it).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = [(order, n) for order in ("raster", "zipar", "nar") for n in (1, 8)]
CLASS, WINDOW = "smiley", 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(root: Path):
    port = free_port()
    log = tempfile.TemporaryFile("w+")
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=root, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(log.read())
        try:
            urllib.request.urlopen(url + "config", timeout=2)
            return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise TimeoutError("the app did not start")


def decode_seconds(caption: str) -> float:
    return float(re.search(r"in ([0-9.]+) s", caption).group(1))


def streamed(client, order: str, n: int, seed: int) -> dict:
    """One generate request: its caption's decode time and when the images and the files came."""
    t0 = time.perf_counter()
    job = client.submit(CLASS, n, seed, order, WINDOW, 4.0, -1, 1.0, 2000, 1.0, 0.0, api_name="/generate")
    images_at = files_at = None
    frames = 0
    while True:
        outs = job.outputs()
        frames = len(outs)
        for out in outs:
            if images_at is None and out[2]:
                images_at = time.perf_counter() - t0
            if files_at is None and out[3]:
                files_at = time.perf_counter() - t0
        if job.done() and (files_at is not None or images_at is not None):
            break
        time.sleep(0.01)
    final = job.result()
    now = time.perf_counter() - t0
    return {"decode_view_on": decode_seconds(final[1]), "submit_to_images": images_at or now,
            "submit_to_files": files_at or now, "updates": frames}


class ViewOff:
    """The same decodes in this process through Studio, nothing drawn (warmed up once)."""

    def __init__(self, root: Path):
        sys.path.insert(0, str(root))
        # the server's allocator settings (app.py), so that the view is the only difference: its
        # fixed mmap threshold alone costs a decode with large logits many page faults
        from ui.server import tune_allocator
        tune_allocator()
        from nar.config import SamplingConfig
        from nar.pipeline import Studio
        self.sampling = SamplingConfig
        self.studio = Studio.from_pretrained(root / "checkpoints")
        for order in ("raster", "zipar", "nar"):
            self(order, 1, 0)

    def __call__(self, order: str, n: int, seed: int) -> float:
        """Decoded in a worker thread, as the server decodes (on a busy machine torch's threads in
        the main thread wait on each other many times longer)."""
        ids = self.studio.class_ids(order, [CLASS] * n)
        out = []

        def run():
            record = None
            for record in self.studio.decode_steps(order, ids, self.sampling(seed=seed), window=WINDOW):
                pass
            out.append(record.elapsed)
        worker = threading.Thread(target=run)
        worker.start()
        worker.join()
        return out[0]


def race(client, seed: int) -> dict:
    t0 = time.perf_counter()
    result = client.submit(CLASS, seed, WINDOW, 4.0, 0.0, api_name="/compare").result()
    wall = time.perf_counter() - t0
    table = result[6]
    decodes = sum(float(row[2]) for row in table["data"])
    return {"race_wall": wall, "race_decodes": decodes}


def median(runs: list[dict], key: str) -> float:
    return round(statistics.median(r[key] for r in runs), 2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=ROOT, help="the checkout to measure (default: this one)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--label", default="")
    p.add_argument("--cases", default=None, help="only these, e.g. nar:1,nar:8,zipar:1 (default: all six)")
    p.add_argument("--race", action=argparse.BooleanOptionalAction, default=True, help="measure the Compare race")
    args = p.parse_args()
    cases = CASES if not args.cases else [(o, int(n)) for o, n in (c.split(":") for c in args.cases.split(","))]
    from gradio_client import Client
    view_off = ViewOff(args.root)
    proc, url = start_app(args.root)
    try:
        client = Client(url, verbose=False)
        rows = []
        for order, n in cases:
            runs = []
            for r in range(args.repeats):
                run = streamed(client, order, n, seed=r)
                run["decode_view_off"] = view_off(order, n, seed=r)
                runs.append(run)
                print(order, n, run, flush=True)
            rows.append({"order": order, "images": n,
                         **{k: median(runs, k) for k in ("decode_view_off", "decode_view_on", "submit_to_images",
                                                         "submit_to_files")}})
        races = [race(client, seed=r) for r in range(args.repeats)] if args.race else []
        summary = {"label": args.label, "rows": rows, "repeats": args.repeats, "cpu_threads": os.cpu_count(),
                   "load_average": os.getloadavg()}
        if races:
            summary.update(race_wall=median(races, "race_wall"), race_decodes=median(races, "race_decodes"))
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    print("| order | images | decode, view off (s) | decode, view on (s) | submit -> images (s) | submit -> files (s) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['order']} | {r['images']} | {r['decode_view_off']} | {r['decode_view_on']} | "
              f"{r['submit_to_images']} | {r['submit_to_files']} |")
    if races:
        print(f"race: {summary['race_wall']} s wall for {summary['race_decodes']} s of decoding")
    print(f"load average at the end: {summary['load_average']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
