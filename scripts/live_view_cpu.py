"""Decoder-thread CPU time and wall time, view on (the Generate stream, frames drawn) vs view off
(the bare decode, confidence recorded), interleaved in one process with the server's allocator and
torch threads; medians. On a shared machine the CPU time says whether the view slows the decoder
when the wall time cannot.

    python scripts/live_view_cpu.py nar:1,nar:8,zipar:1,raster:1 3
"""
import os
import statistics
import sys
import threading
import time
ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from ui.server import tune_allocator; tune_allocator()
from pathlib import Path
from nar.config import SamplingConfig
from ui.service import Service
import ui.stream as stream
from ui.live import LiveDecode
last = {}
class Measured(LiveDecode):
    def _run(self):
        c0 = time.thread_time()
        try: super()._run()
        finally: last.update(cpu=time.thread_time() - c0)
stream.LiveDecode = Measured
svc = Service.from_folder(ROOT / "checkpoints"); studio = svc.studio
def off(order, n, seed):
    ids = studio.class_ids(order, ["smiley"] * n); out = {}
    def run():
        c0 = time.thread_time(); rec = None
        for rec in studio.decode_steps(order, ids, SamplingConfig(seed=seed), window=8, record_confidence=True): pass
        out.update(wall=rec.elapsed, cpu=time.thread_time() - c0)
    t = threading.Thread(target=run); t.start(); t.join(); return out
def on(order, n, seed):
    req = svc.request([order], class_name="smiley", num_images=n, seed=seed, window=8)
    out = {}; frames = 0
    def run():
        nonlocal frames
        for u in svc.generate(req, 0.0, write_mp4=False):
            frames += 1
            if u.done: out.update(wall=u.elapsed); break
    t = threading.Thread(target=run); t.start(); t.join(); out.update(cpu=last["cpu"], live_frames=frames - 1); return out
for order, n in [(o, int(k)) for o, k in (c.split(":") for c in sys.argv[1].split(","))]:
    rows = {"off": [], "on": []}
    for seed in range(int(sys.argv[2])):
        rows["off"].append(off(order, n, seed)); rows["on"].append(on(order, n, seed))
    med = {k: {m: round(statistics.median(r[m] for r in v), 3) for m in ("wall", "cpu")} for k, v in rows.items()}
    print(order, n, med, "live frames", [r["live_frames"] for r in rows["on"]], "load", os.getloadavg(), flush=True)
