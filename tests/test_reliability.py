"""Reliability and security of the app as a public server, measured end to end: `python app.py` on
tiny random checkpoints (4x4 tokens, 16 px images, classes cat/dog/sun) on a loopback port, driven
through its API with gradio_client and plain HTTP.

- Load: two waves of 16 concurrent clients each send a generate request; every result must equal
  the single-user run with the same parameters, and the server's memory (RSS, from
  /proc/<pid>/status) must stay bounded: wave 1 may grow it by at most LOAD_GROWTH_MB over the
  warm baseline, wave 2 by at most SECOND_WAVE_MB more.
- Freed resources: a cancelled request and a disconnected client stop their decode at the next
  frame (the server logs the step), and the next requests are served at once.
- Hostile input: every kind of bad value, file, name, path and upload the UI or API takes is
  refused with a clear message; the file routes serve none of the server's files; another user's
  request running meanwhile, and a normal request afterwards, are unaffected.
- Exposure: the server listens on loopback only; with NAR_STUDIO_AUTH every route needs a login.

The numbers go to reports/reliability.json (see conftest.reliability_report); the faults
(kill -9 during training, a full disk) are in test_faults.py.
"""
from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from pathlib import Path
from typing import Callable, Optional

import imageio.v3 as iio
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_app import free_port, wait_until_serving  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LOAD_CLIENTS = 16
SLOTS = 2                      # --concurrency of the load server: two decodes at a time, more wait
SESSIONS = 20                  # --max-sessions of the load server: wave 2's 16 sessions push out wave 1's
LOAD_GROWTH_MB = 60            # RSS after wave 1 over the warm baseline (16 new sessions, about 0.5 MB each)
SECOND_WAVE_MB = 10            # RSS after wave 2 over RSS after wave 1: the session cap holds it flat
CONFIG_BOMB_MB = 300           # RSS growth allowed while a checkpoint asking for a huge model is refused


# -- a server process --------------------------------------------------------------------------
class AppServer:
    """`python app.py` in a subprocess on a free loopback port, one torch thread, its output in a
    log file that can be read while it runs."""

    def __init__(self, checkpoints: Path, runs_dir: Optional[Path] = None, args=(), env=None,
                 log_dir: Optional[Path] = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.cmd = [sys.executable, "app.py", "--checkpoints", str(checkpoints), "--port", str(self.port),
                    *(["--runs-dir", str(runs_dir)] if runs_dir else []), *args]
        self.env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
                        **(env or {}))
        self.env.pop("GRADIO_SERVER_NAME", None)
        self.log_path = Path(tempfile.mkstemp(prefix="nar-app-", suffix=".log", dir=log_dir)[1])
        self.proc: Optional[subprocess.Popen] = None

    def start(self, timeout: float = 120.0) -> "AppServer":
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        # 401 with --auth: the server is up, asking for a login
        wait_until_serving(self.proc, self.url, timeout, self.log, accept_status=(200, 401))
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_mb(self) -> float:
        """Resident memory of the server process (VmRSS), in MB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no handler runs, as when the machine loses power or the OOM killer strikes."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._log.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._log.closed:
            self._log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        with contextlib.suppress(OSError):
            self.log_path.unlink()


def client_for(server: AppServer, **kwargs):
    from gradio_client import Client
    return Client(server.url, verbose=False, **kwargs)


GEN_DEFAULTS = dict(cls="dog", num=1, seed=0, order="nar", window=2, cfg=4.0, cfg_interval=-1, temperature=1.0,
                    top_k=2000, top_p=1.0, pace=0.0, prompt="")


def gen_args(**kw) -> list:
    p = {**GEN_DEFAULTS, **kw}
    return [p["cls"], p["num"], p["seed"], p["order"], p["window"], p["cfg"], p["cfg_interval"], p["temperature"],
            p["top_k"], p["top_p"], p["pace"], p["prompt"]]


def submit_generate(client, **kw):
    return client.submit(*gen_args(**kw), api_name="/generate")


def final_images(result) -> list[np.ndarray]:
    return [iio.imread(item["image"]) for item in result[2]]


def load_requests() -> list[dict]:
    """The 16 different requests of a wave: all orders, classes, one or two images, own seeds."""
    orders, classes = ("nar", "raster", "zipar"), ("cat", "dog", "sun")
    return [dict(order=orders[i % 3], cls=classes[(i // 3) % 3], num=1 + (i % 2), seed=1000 + 7 * i, window=2)
            for i in range(LOAD_CLIENTS)]


@pytest.fixture(scope="module")
def server(tiny_checkpoints, tmp_path_factory):
    with AppServer(tiny_checkpoints["vq"].parent, tmp_path_factory.mktemp("runs") / "finetune",
                   args=["--concurrency", str(SLOTS), "--max-sessions", str(SESSIONS)]) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    c = client_for(server)
    yield c
    c.close()


@pytest.fixture(scope="module")
def references(client) -> dict:
    """Single-user results of the load requests, one after the other (these runs also warm the
    server up)."""
    out = {}
    for i, req in enumerate(load_requests()):
        out[i] = final_images(submit_generate(client, **req).result(timeout=120))
    return out


# -- load --------------------------------------------------------------------------------------
class RssSampler:
    """The server's peak RSS while a block runs, sampled every 50 ms."""

    def __init__(self, server: AppServer):
        self.server, self.peak, self._stop = server, 0.0, threading.Event()

    def __enter__(self):
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                self.peak = max(self.peak, self.server.rss_mb())
            time.sleep(0.05)

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()


def settled_rss(server: AppServer, seconds: float = 1.5) -> float:
    time.sleep(seconds)       # let finished requests' threads and buffers go
    return server.rss_mb()


def run_wave(server: AppServer, references: dict) -> dict:
    """16 clients at once, each with its own session; every result checked against its reference."""
    clients = [client_for(server) for _ in range(LOAD_CLIENTS)]
    requests = load_requests()
    errors, mismatches, latencies = [], [], [0.0] * LOAD_CLIENTS
    barrier = threading.Barrier(LOAD_CLIENTS)

    def one(i: int):
        barrier.wait()
        started = time.monotonic()
        try:
            result = submit_generate(clients[i], **requests[i]).result(timeout=300)
            latencies[i] = time.monotonic() - started
            images = final_images(result)
            if len(images) != len(references[i]) or not all(np.array_equal(a, b)
                                                           for a, b in zip(images, references[i])):
                mismatches.append(i)
        except Exception as e:  # noqa: BLE001 - counted and reported
            errors.append(f"request {i}: {type(e).__name__}: {e}")
    started = time.monotonic()
    with RssSampler(server) as sampler:
        threads = [threading.Thread(target=one, args=(i,)) for i in range(LOAD_CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    wall = time.monotonic() - started
    for c in clients:
        c.close()
    return {"errors": errors, "mismatches": mismatches, "latencies": latencies, "wall_s": wall,
            "peak_mb": sampler.peak}


def test_load_two_waves_of_16_concurrent_generates(server, references, reliability_report):
    baseline = settled_rss(server)
    first = run_wave(server, references)
    after_first = settled_rss(server)
    second = run_wave(server, references)
    after_second = settled_rss(server)
    latencies = first["latencies"] + second["latencies"]
    reliability_report["load"] = {
        "clients": LOAD_CLIENTS, "waves": 2, "requests": 2 * LOAD_CLIENTS, "server_slots": SLOTS,
        "max_sessions": SESSIONS, "per_session_mb": round((after_first - baseline) / LOAD_CLIENTS, 2),
        "errors": len(first["errors"]) + len(second["errors"]),
        "mismatches": len(first["mismatches"]) + len(second["mismatches"]),
        "latency_p50_s": round(statistics.median(latencies), 2), "latency_max_s": round(max(latencies), 2),
        "wave_s": [round(first["wall_s"], 1), round(second["wall_s"], 1)],
        "rss_mb": {"baseline": round(baseline), "peak": round(max(first["peak_mb"], second["peak_mb"])),
                   "after_wave1": round(after_first), "after_wave2": round(after_second)},
        "limits_mb": {"wave1_growth": LOAD_GROWTH_MB, "wave2_growth": SECOND_WAVE_MB}}
    assert not first["errors"] and not second["errors"], first["errors"] + second["errors"]
    assert not first["mismatches"] and not second["mismatches"], (first["mismatches"], second["mismatches"])
    assert after_first - baseline < LOAD_GROWTH_MB, reliability_report["load"]
    assert after_second - after_first < SECOND_WAVE_MB, reliability_report["load"]


# -- cancelled and disconnected requests --------------------------------------------------------
def raw_join(server: AppServer, api_name: str, data: list, session: Optional[str] = None) -> str:
    """Join the queue with plain HTTP, as a browser does; returns the session hash."""
    import httpx
    config = httpx.get(server.url + "config").json()
    fn_index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == api_name)
    session = session or uuid.uuid4().hex[:12]
    body = json.dumps({"data": data, "fn_index": fn_index, "session_hash": session})   # NaN allowed
    r = httpx.post(server.url + "gradio_api/queue/join", content=body, headers={"content-type": "application/json"})
    r.raise_for_status()
    return session


def raw_messages(server: AppServer, session: str, timeout: float = 120):
    """The queue's server-sent events for a session, as dicts, until the caller stops reading
    (closing the connection: a client that went away)."""
    import httpx
    with httpx.Client(timeout=timeout) as http:
        with http.stream("GET", server.url + "gradio_api/queue/data", params={"session_hash": session}) as r:
            for line in r.iter_lines():
                if line.startswith("data:"):
                    yield json.loads(line[5:])


def stop_lines(server: AppServer) -> list[tuple[int, int, int]]:
    """(step, of steps, decodes still running) of every decode the server logged as stopped."""
    return [tuple(map(int, m)) for m in
            re.findall(r"generate stopped at step (\d+)/(\d+): .*?\((\d+) running\)", server.log())]


def test_cancelled_and_disconnected_requests_free_their_decode(server, client, reliability_report):
    """Two slow decodes (raster, 16 steps, 2 s a frame: 30 s each) fill both slots; one is cancelled
    through gradio_client, the other's client drops its connection. Both stop at their next frame,
    and two new requests are served at once instead of waiting half a minute."""
    before = len(stop_lines(server))
    slow = dict(order="raster", pace=2.0, seed=5)
    cancelled_client = client_for(server)
    cancelled = submit_generate(cancelled_client, **slow)
    session = raw_join(server, "generate", gen_args(**{**slow, "seed": 6}))
    frames = 0
    for message in raw_messages(server, session):
        frames += message.get("msg") == "process_generating"
        if frames >= 2:
            break                                    # the connection closes here: the client left
    deadline = time.monotonic() + 60
    while len(cancelled.outputs()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(cancelled.outputs()) >= 2, "the slow request never streamed"
    cancelled.cancel()
    asked = time.monotonic()
    followers = [submit_generate(client, seed=s) for s in (21, 22)]
    results = [f.result(timeout=120) for f in followers]
    served_s = time.monotonic() - asked
    assert all("done: 7 steps" in r[1] for r in results)
    deadline = time.monotonic() + 20
    while len(stop_lines(server)) < before + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    stops = stop_lines(server)[before:]
    cancelled_client.close()
    reliability_report["freed"] = {"cancelled": 1, "disconnected": 1, "stopped_at": [s[0] for s in stops],
                                   "of_steps": 16, "next_requests_served_s": round(served_s, 1),
                                   "slow_request_s": 32}
    assert len(stops) == 2, server.log()[-3000:]
    # "pace" is a replay now (the decode runs at full speed, then its steps are replayed 2 s each):
    # both streams stop mid-replay, so the decodes may already be whole (step 16 of 16)
    assert all(1 <= step <= total == 16 for step, total, _ in stops)
    # served long before either slow decode could have finished (16 frames x 2 s)
    assert served_s < 12, served_s


# -- hostile input ----------------------------------------------------------------------------
class Sweep:
    """Runs hostile cases, counting them by kind; a case passes when it is refused with a message
    containing what it expects (and no traceback)."""

    def __init__(self):
        self.kinds: dict[str, dict] = {}
        self.failures: list[str] = []

    def case(self, kind: str, label: str, call: Callable[[], object], expect: str | tuple[str, ...],
             max_s: Optional[float] = None):
        """max_s: a bound on the time to the refusal (the slowest of a kind is reported)."""
        from gradio_client.exceptions import AppError
        entry = self.kinds.setdefault(kind, {"tried": 0, "refused": 0, "examples": []})
        entry["tried"] += 1
        expected = (expect,) if isinstance(expect, str) else expect
        started = time.monotonic()
        try:
            result = call()
        except AppError as e:
            message = str(e)
        except RefusedHTTP as e:
            message = str(e)
        except Exception as e:  # noqa: BLE001 - any other failure is a finding
            self.failures.append(f"[{kind}] {label}: {type(e).__name__}: {str(e)[:300]}")
            return
        else:
            self.failures.append(f"[{kind}] {label}: accepted, returned {str(result)[:200]}")
            return
        seconds = time.monotonic() - started
        if not any(x in message for x in expected) or "Traceback" in message or "[Errno" in message:
            self.failures.append(f"[{kind}] {label}: message {message[:300]!r} lacks {expected}")
            return
        if len(message) > 1000:   # long values are cut in messages
            self.failures.append(f"[{kind}] {label}: a {len(message):,} character message")
            return
        if max_s is not None:
            entry["slowest_s"] = round(max(entry.get("slowest_s", 0.0), seconds), 2)
            entry["bound_s"] = max_s
            if seconds > max_s:
                self.failures.append(f"[{kind}] {label}: refused after {seconds:.1f} s (bound {max_s} s)")
                return
        entry["refused"] += 1
        if len(entry["examples"]) < 2:
            entry["examples"].append(f"{label}: {message.splitlines()[0][:140]}")


class RefusedHTTP(Exception):
    pass


def raw_call(server: AppServer, api_name: str, data: list, timeout: float = 60):
    """A call with a JSON body gradio_client would not send (NaN, wrong types, arbitrary file
    paths); raises RefusedHTTP with the server's message when it fails."""
    session = raw_join(server, api_name, data)
    for message in raw_messages(server, session, timeout):
        if message.get("msg") == "process_completed":
            if message.get("success"):
                return message.get("output")
            raise RefusedHTTP((message.get("output") or {}).get("error") or "(no message)")
    raise RefusedHTTP("(the stream ended without a result)")


def http_status(url: str, method: str = "GET", body: Optional[bytes] = None, headers=None) -> tuple[int, bytes]:
    import httpx
    with httpx.Client(timeout=60) as http:
        r = http.request(method, url, content=body, headers=headers)
        return r.status_code, r.content


def file_data(path: str) -> dict:
    return {"path": path, "meta": {"_type": "gradio.FileData"}, "orig_name": Path(path).name}


class Hostile:
    """A pickle that runs a shell command when it is loaded."""
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.marker}",))


def write_safetensors_raw(path: Path, header: dict | bytes, data: bytes = b"", length: Optional[int] = None) -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


def config_bomb(path: Path, kind: str = "nar", **config) -> Path:
    """A few-byte safetensors file whose config asks for a huge model."""
    from nar.checkpoint import save_checkpoint
    import torch
    base = {"kind": kind, "dim": 16384, "n_layer": 256, "n_head": 128, "vocab_size": 32, "grid_size": 4,
            "num_classes": 3}
    base.update(config)
    return save_checkpoint(path, "vq" if kind == "vq" else kind, {"tok_embeddings.weight": torch.zeros(2, 2)},
                           base, {"class_names": ["a", "b", "c"]})


def test_hostile_inputs_are_refused_and_nobody_is_affected(server, client, references, tiny_checkpoints,
                                                           tmp_path, reliability_report):
    import torch
    from gradio_client import handle_file
    from test_training_tab import bomb_zip, huge_header_png, square_png, write_zip
    sweep = Sweep()
    view = (4, "cat", "cat", 2, 2)                        # grid, then the view inputs of the load events
    before_models = client.predict(api_name="/model_info")[0]["value"]["data"]
    # another user decodes slowly all through the sweep
    bystander = client_for(server)
    other = submit_generate(bystander, **load_requests()[1], pace=0.3)
    rss_before = server.rss_mb()

    def gen(**kw):
        return lambda: submit_generate(client, **kw).result(timeout=120)

    def load(*paths):
        return lambda: client.predict([handle_file(str(p)) for p in paths], *view, api_name="/load_upload")

    def hub(repo, names):
        return lambda: client.predict(repo, names, *view, api_name="/load_from_hub")

    def raw(api, data):
        return lambda: raw_call(server, api, data)

    # numbers out of range
    kind = "number out of range"
    for label, kw, expect in [
            ("temperature 5", dict(temperature=5.0), "greater than maximum"),
            ("top-p 0", dict(top_p=0.0), "less than minimum"),
            ("CFG 100", dict(cfg=100.0), "greater than maximum"),
            ("playback 100 s a frame", dict(pace=100.0), "greater than maximum"),
            ("ZipAR window 9 on a 4x4 grid", dict(order="zipar", window=9), "greater than maximum"),
            ("seed -3", dict(seed=-3), "less than minimum"),
            ("seed 2**63", dict(seed=2 ** 63), "seed must be in [0, 2**63)"),
            ("top-k 2**40", dict(top_k=2 ** 40), "top_k must be in"),
            ("CFG interval -5", dict(cfg_interval=-5), "cfg_interval must be -1"),
            ("CFG interval 10**30", dict(cfg_interval=10 ** 30), "cfg_interval must be -1"),
            ("2.5 images", dict(num=2.5), "whole number")]:
        sweep.case(kind, label, gen(**kw), expect)
    sweep.case(kind, "compare CFG 1e300", lambda: client.predict("cat", 0, 2, 1e300, 0.0, api_name="/compare"),
               "greater than maximum")
    sweep.case(kind, "token grid 1000",
               lambda: client.predict("owner/repo", "x.pt", 1000, "cat", "cat", 2, 2, api_name="/load_from_hub"),
               "greater than maximum")
    for label, options, expect in [("10**9 training steps", (10 ** 9, 1e-3, 4, "all", 5), "greater than maximum"),
                                   ("learning rate 1.0", (100, 1.0, 4, "all", 5), "greater than maximum"),
                                   ("preview every 0 steps", (100, 1e-3, 4, "all", 0), "less than minimum")]:
        sweep.case(kind, label, lambda o=options: client.predict([], "x", *o, api_name="/train"), expect)
    # wrong types and non-finite numbers, as a hand-written client could send them
    kind = "wrong type or not finite"
    for label, kw, expect in [("temperature NaN", dict(temperature=float("nan")), "Temperature must be a finite"),
                              ("seed Infinity", dict(seed=float("inf")), "Seed must be a finite"),
                              ("images -Infinity", dict(num=float("-inf")), "must be a finite"),
                              ("CFG 'abc'", dict(cfg="abc"), "CFG scale must be a number"),
                              ("images null", dict(num=None), "a number is required"),
                              ("class as a list", dict(cls=["dog"]), "must be a name or a class id"),
                              ("class as an object", dict(cls={"a": 1}), "must be a name or a class id"),
                              ("top-k as a list", dict(top_k=[1]), "Top-k must be a number")]:
        sweep.case(kind, label, raw("generate", gen_args(**kw)), expect)
    sweep.case(kind, "one input missing", raw("generate", gen_args()[:-1]), "didn't receive enough input values")
    sweep.case(kind, "train steps 'many'", raw("train", [[], "x", "many", 1e-3, 4, "all", 5]),
               "Steps must be a number")
    # unknown classes
    kind = "unknown class"
    for label, cls, expect in [("unicorn", "unicorn", "unknown class 'unicorn'"),
                               ("a path", "../../etc/passwd", "unknown class '../../etc/passwd'"),
                               ("id 99", "99", "class id 99 is out of range"), ("id -1", "-1", "out of range"),
                               ("100,000 characters", "x" * 100_000, "at most 200 characters"),
                               ("empty", "", "pick a class")]:
        sweep.case(kind, label, gen(cls=cls), expect)
    sweep.case(kind, "compare: moon", lambda: client.predict("moon", 0, 2, 4.0, 0.0, api_name="/compare"),
               "unknown class 'moon'")
    # huge batches and counts
    kind = "huge batch or count"
    sweep.case(kind, "10**9 images", gen(num=10 ** 9), "greater than maximum")
    sweep.case(kind, "measure batch 10**6", lambda: client.predict([10 ** 6], 2, api_name="/measure"),
               "not in the list of choices")
    sweep.case(kind, "train batch 10**6", lambda: client.predict([], "x", 100, 1e-3, 10 ** 6, "all", 5,
                                                                api_name="/train"), "greater than maximum")
    sweep.case(kind, "50 Hub files", hub("owner/repo", ",".join(f"f{i}.pt" for i in range(50))),
               "load at most 3 files")
    sweep.case(kind, "1 MB of Hub file names", hub("owner/repo", "a" * 2 ** 20), "give at most 3 names")
    four = [tiny_checkpoints[k] for k in ("vq", "nar", "raster", "nar")]
    sweep.case(kind, "4 checkpoint uploads", load(*four), "load at most 3 files")
    # malformed checkpoints
    kind = "malformed checkpoint"
    good = tiny_checkpoints["nar"].read_bytes()
    (tmp_path / "half.safetensors").write_bytes(good[: len(good) // 2])
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "zip.pt").write_bytes(b"PK\x03\x04 not really a zip")
    torch.save({"model": {"w": "not a tensor"}}, tmp_path / "strings.pt")
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    malformed = [
        ("junk header", write_safetensors_raw(tmp_path / "junk.safetensors", b"{not json at all"),
         "not a readable safetensors file"),
        ("cut in half", tmp_path / "half.safetensors", "not a readable safetensors file"),
        ("header length 2**62", write_safetensors_raw(tmp_path / "long.safetensors", b"{}", length=2 ** 62),
         "not a readable safetensors file"),
        ("tensor past the end", write_safetensors_raw(
            tmp_path / "past.safetensors", {"w": {"dtype": "F32", "shape": [1 << 20], "data_offsets": [0, 1 << 22]},
                                            "__metadata__": {"nar_studio_kind": "nar"}}, b"\0" * 16),
         "not a readable safetensors file"),
        ("not ours", tmp_path / "foreign.safetensors", "not a NAR Studio checkpoint"),
        ("empty .pt", tmp_path / "empty.pt", "not a readable"),
        ("broken zip .pt", tmp_path / "zip.pt", "not a readable torch checkpoint"),
        ("strings instead of tensors", tmp_path / "strings.pt", "holds no state dict"),
        ("config for 50 billion parameters", config_bomb(tmp_path / "bomb.safetensors", grid_size=4, dim=16384,
                                                          n_layer=200), "does not match its model"),
        ("config with 10**6 layers", config_bomb(tmp_path / "layers.safetensors", n_layer=10 ** 6),
         "beyond what NAR Studio loads"),
        ("config with a 10**5 token grid", config_bomb(tmp_path / "grid.safetensors", dim=64, n_layer=2, n_head=4,
                                                        grid_size=10 ** 5), "beyond what NAR Studio loads"),
        ("tokenizer for 10**6 px images", config_bomb(tmp_path / "vq.safetensors", kind="vq", image_size=10 ** 6,
                                                       codebook_size=32, encoder_ch_mult=[1, 1, 1]),
         "beyond what NAR Studio loads")]
    for label, path, expect in malformed:
        sweep.case(kind, label, load(path), expect)
    # pickles that would run code
    kind = "code-running pickle"
    marker = tmp_path / "pwned"
    with open(tmp_path / "c2i_L_256.pt", "wb") as f:
        pickle.dump({"model": Hostile(marker)}, f)
    torch.save({"model": {"w": Hostile(marker)}}, tmp_path / "evil.pt")
    (tmp_path / "evil.bin").write_bytes(pickle.dumps(Hostile(marker)))
    (tmp_path / "eval.pth").write_bytes(pickle.dumps(_EvalOnLoad(marker)))
    for name in ("c2i_L_256.pt", "evil.pt", "evil.bin", "eval.pth"):
        sweep.case(kind, name, load(tmp_path / name), ("refused", "not a readable torch checkpoint"))
    # paths and names that try to leave the allowed folders
    kind = "path outside the allowed folders"
    for label, repo, names, expect in [
            ("repo ../../etc/passwd", "../../etc/passwd", "x.pt", "is not a Hub repo id"),
            ("file ../../x", "owner/repo", "../../x", "is not a file name inside a Hub repository"),
            ("absolute repo", "/etc/passwd", "", "is not a Hub repo id"),
            ("absolute file", "owner/repo", "/etc/passwd", "is not a file name inside"),
            ("file a/../../b", "owner/repo", "a/../../b", "is not a file name inside"),
            ("backslashes", "owner/repo", "..\\..\\x.pt", "is not a file name inside"),
            ("hf:// with ..", "hf://owner/repo/../x.pt", "x.pt", "is not a Hub repo id"),
            ("repo with three parts", "a/b/c", "x.pt", "is not a Hub repo id")]:
        sweep.case(kind, label, hub(repo, names), expect)
    runs_file = next(iter(sorted(Path(server.cmd[server.cmd.index("--runs-dir") + 1]).glob("*/*"))), None)
    for label, api, data in [
            ("checkpoint /etc/passwd", "load_upload", [[file_data("/etc/passwd")], *view]),
            ("checkpoint from the server's folder", "load_upload", [[file_data(str(tiny_checkpoints["nar"]))], *view]),
            ("checkpoint app.py (relative)", "load_upload", [[file_data("app.py")], *view]),
            ("training upload /etc/passwd", "train_scan", [[file_data("/etc/passwd")], "x"]),
            ("training upload of the bundled tokenizer", "train",
             [[file_data(str(ROOT / "checkpoints" / "vq.safetensors"))], "x", 10, 1e-3, 4, "all", 5]),
            ("training upload of a PNG of the app's", "train_scan",
             [[file_data(str(ROOT / "assets" / "screenshot_generate.png"))], "x"])]:
        sweep.case(kind, label, raw(api, data), ("not uploaded by a user", "Invalid file type"))
    for label, api, data in [("run ../../etc", "train_status", ["../../etc"]),
                             ("run /etc/passwd", "train_download", ["/etc/passwd"]),
                             ("run ../x to use", "train_use", ["../x", "cat", "cat", 2, 2]),
                             ("run .. to resume", "train_resume", ["..", 100, 1e-3, 4, "all", 5]),
                             ("run ~ to cancel", "train_cancel", ["~"])]:
        sweep.case(kind, label, (lambda a=api, d=data: client.predict(*d, api_name=f"/{a}")), "is not a run id")
    sweep.case(kind, "benchmark file ../../etc/passwd",
               lambda: client.predict("../../etc/passwd", api_name="/benchmark_plot"), "not in the list of choices")
    # the Train tab's hostile uploads
    kind = "hostile training upload"
    ok = square_png((200, 20, 20), 0)
    (tmp_path / "truncated.png").write_bytes(square_png((0, 0, 200), 1, size=64)[:60])
    (tmp_path / "notes.png").write_text("a text file, not a picture\n")
    (tmp_path / "huge.png").write_bytes(huge_header_png())
    from PIL import Image
    Image.new("RGB", (8, 8)).save(tmp_path / "anim.png", format="GIF")
    uploads = [
        ("zip with ../ path", write_zip(tmp_path / "traversal.zip", {"../evil_written.png": ok, "cat/ok.png": ok}),
         "path leaves the upload folder"),
        ("zip with a symlink to /etc/passwd", write_zip(tmp_path / "link.zip", {"cat/ok.png": ok},
                                                        symlinks=[("cat/passwd.png", "/etc/passwd")]), "symbolic link"),
        ("zip with an absolute path", write_zip(tmp_path / "abs.zip", {"/tmp/abs.png": ok}),
         "path leaves the upload folder"),
        ("truncated PNG", tmp_path / "truncated.png", "corrupt or truncated"),
        ("text named .png", tmp_path / "notes.png", "not an image"),
        ("30000x30000 PNG header", tmp_path / "huge.png", ("over the limit", "decompression bomb")),
        ("GIF named .png", tmp_path / "anim.png", "GIF images are not accepted"),
        ("nested folders", write_zip(tmp_path / "deep.zip", {"a/b/c.png": ok}), "nested folders"),
        ("class folder <script>", write_zip(tmp_path / "names.zip", {"<script>/a.png": ok}),
         "not a usable class name")]
    for label, path, expect in uploads:
        sweep.case(kind, label, _scan_skips(client, path, expect), expect)
    sweep.case(kind, "410 MB zip bomb", _scan_refuses(client, bomb_zip(tmp_path / "bomb.zip")), "compression bomb")
    many = tmp_path / "many.zip"
    with zipfile.ZipFile(many, "w") as z:
        for i in range(2001):
            z.writestr(f"cat/{i}.png", b"x")
    sweep.case(kind, "2001 files", _scan_refuses(client, many), "the limit is 2000")
    sweep.case(kind, "a 100,000 character class name", _scan_skips(client, tmp_path / "truncated.png",
                                                                   "not a usable class name", loose="y" * 100_000),
               "not a usable class name")
    sweep.case(kind, "training on nothing usable",
               lambda: client.predict([handle_file(str(tmp_path / "notes.png"))], "moon", 10, 1e-3, 4, "all", 5,
                                      api_name="/train"), "no usable images")
    # uploads that cannot be read whole, mixed uploads, over-long names, costly checkpoint headers
    from test_checkpoint import deep_config_safetensors, entries_header
    from test_uploads import animated_files, broken_directory_zips, unreadable_members_zip
    kind = "unreadable zip or zip member"
    unreadable = unreadable_members_zip(tmp_path / "unreadable.zip")
    for label, expect in [("password-protected member", "password-protected (encrypted)"),
                          ("damaged member (not deflate data)", "its data cannot be decompressed"),
                          ("member with a bad CRC", "its CRC check failed")]:
        sweep.case(kind, label, _scan_skips(client, unreadable, expect, keeps=2), expect, max_s=30)
    for path in broken_directory_zips(tmp_path):
        sweep.case(kind, f"zip with a broken directory ({path.name})", _scan_refuses(client, path),
                   "its directory is broken or missing", max_s=30)
    kind = "mixed upload (good files kept)"
    good = [tmp_path / "good0.png", tmp_path / "good1.png"]
    for i, path in enumerate(good):
        path.write_bytes(square_png((20, 200, 20), 10 + i))
    (tmp_path / "readme.txt").write_text("not a picture")
    for label, extra, expect in [("animated GIF beside 2 PNGs", animated_files(tmp_path)[0], "GIF images are not accepted"),
                                 ("animated PNG beside 2 PNGs", tmp_path / "anim.png", "animated PNG (2 frames)"),
                                 ("a .txt file beside 2 PNGs", tmp_path / "readme.txt", "not an image")]:
        sweep.case(kind, label, _scan_skips(client, [*good, extra], expect, keeps=2), expect, max_s=30)
    kind = "over-long file name"
    long_path, long_name = "/tmp/gradio/" + "x" * 5000 + ".png", "/tmp/gradio/" + "y" * 300 + ".png"
    for label, api, data in [
            ("checkpoint upload, 5,000-character path", "load_upload", [[file_data(long_path)], *view]),
            ("checkpoint upload, 300-character name", "load_upload", [[file_data(long_name)], *view]),
            ("training preview, 5,000-character path", "train_scan", [[file_data(long_path)], "x"]),
            ("training preview, 300-character name", "train_scan", [[file_data(long_name)], "x"]),
            ("training start, 5,000-character path", "train", [[file_data(long_path)], "x", 10, 1e-3, 4, "all", 5])]:
        sweep.case(kind, label, raw(api, data), "file name too long", max_s=10)
    kind = "costly checkpoint header"
    for label, path, expect in [
            ("config nested 200,000 deep", deep_config_safetensors(tmp_path / "deep.safetensors"),
             "is JSON nested 200,000 deep; the limit is 64"),
            ("100,000 tensor entries", write_safetensors_raw(tmp_path / "many.safetensors", entries_header(100_000)),
             "lists 100,000 tensors; the limit is 10,000"),
            ("300,000 tensor entries (a 17 MB header)",
             write_safetensors_raw(tmp_path / "more.safetensors", entries_header(300_000)), "the limit is 8 MiB"),
            ("a 2 MB metadata value", write_safetensors_raw(tmp_path / "meta.safetensors", {"__metadata__": {
                "nar_studio_kind": "nar", "extra.notes": "x" * 2 ** 21}}), "the limit is 1 MiB")]:
        sweep.case(kind, label, load(path), expect, max_s=15)       # upload included
    kind = "hostile Hub file name"
    for name in ("~/.ssh/id_rsa", "~root/.bashrc", "weights/../../x.pt", "a?.pt", ".git/config"):
        sweep.case(kind, name, hub("owner/repo", name), "is not a file name inside a Hub repository", max_s=5)
    # Gradio's file routes serve the app's outputs, nothing else
    kind = "file route"
    served = submit_generate(client, seed=3).result(timeout=120)[2][0]["image"]
    runs_dir = Path(server.cmd[server.cmd.index("--runs-dir") + 1])
    targets = [("/etc/passwd", "/etc/passwd"), ("/proc/self/environ", "/proc/self/environ"),
               ("the checkpoints folder", str(tiny_checkpoints["nar"])), ("app.py", str(ROOT / "app.py")),
               ("app.py, relative", "app.py"), ("the bundled tokenizer, relative", "checkpoints/vq.safetensors"),
               ("the runs folder", str(runs_dir)), ("the output folder itself", str(Path(served).parent.parent)),
               ("../ out of Gradio's cache", "/tmp/gradio/../../etc/passwd"),
               ("encoded ../", "/tmp/gradio/..%2F..%2Fetc%2Fpasswd")]
    if runs_file is not None:
        targets.append(("a run's checkpoint", str(runs_file)))
    for label, target in targets:
        for route in ("gradio_api/file=", "gradio_api/file/"):
            sweep.case(kind, f"{route}{label}", _refused_route(server.url + route + target.lstrip("/")
                                                               if route.endswith("/") else server.url + route + target),
                       "refused")
    for label, path in [("/static/../app.py", "static/../app.py"), ("/assets/ encoded ../", "assets/..%2F..%2F..%2Fapp.py"),
                        ("/svelte/ encoded ../", "svelte/..%2F..%2Fapp.py"),
                        ("proxy to the server itself", f"gradio_api/proxy={server.url}config"),
                        ("file= with a URL", f"gradio_api/file={server.url}config")]:
        sweep.case(kind, label, _refused_route(server.url + path), "refused")
    # a file the app did create is served (so the refusals above are not a broken route)
    import httpx
    assert httpx.get(server.url + "gradio_api/file=" + served).status_code == 200
    # request bodies
    kind = "oversized request"
    big = json.dumps({"data": ["x" * (3 * 2 ** 20)], "fn_index": 0, "session_hash": "big"}).encode()
    sweep.case(kind, "3 MB JSON", _refused_post(server.url + "gradio_api/queue/join", big), "413")
    sweep.case(kind, "4 MB chunked", _refused_post(server.url + "gradio_api/queue/join",
                                                   (b"x" * 2 ** 20 for _ in range(4))), "413")

    # nobody was affected: the bystander's slow decode, then a normal request, give the right images
    other_images = final_images(other.result(timeout=180))
    bystander.close()
    again = final_images(submit_generate(client, **load_requests()[0]).result(timeout=120))
    after_models = client.predict(api_name="/model_info")[0]["value"]["data"]
    rss_growth = server.rss_mb() - rss_before
    assert not marker.exists() and not (tmp_path.parent / "evil_written.png").exists()
    reliability_report["hostile"] = {
        "kinds": {k: {key: v[key] for key in ("tried", "refused", "examples", "slowest_s", "bound_s") if key in v}
                  for k, v in sweep.kinds.items()},
        "tried": sum(v["tried"] for v in sweep.kinds.values()),
        "refused_with_message": sum(v["refused"] for v in sweep.kinds.values()),
        "failures": sweep.failures, "rss_growth_mb": round(rss_growth),
        "bystander_ok": all(np.array_equal(a, b) for a, b in zip(other_images, references[1])),
        "normal_request_after_ok": all(np.array_equal(a, b) for a, b in zip(again, references[0]))}
    assert not sweep.failures, "\n".join(sweep.failures)
    assert reliability_report["hostile"]["bystander_ok"] and reliability_report["hostile"]["normal_request_after_ok"]
    assert after_models == before_models                # no refused file replaced a model
    assert rss_growth < CONFIG_BOMB_MB, rss_growth       # the huge configs were never allocated
    assert server.proc.poll() is None


def _gallery_images(value) -> list[np.ndarray]:
    items = value.get("value") if isinstance(value, dict) and value.get("__type__") == "update" else value
    return [iio.imread(item["image"] if isinstance(item, dict) else item[0]) for item in items or []]


def test_costly_and_rotated_uploads_through_the_app(server, client, references, tmp_path, reliability_report):
    """A decode-cost bomb (12 solid 4096x4096 PNGs, 58 KB each and 16.7 Mpixel decoded) is read in
    bounded time, and the same upload again comes from the scan cache; a phone photo stored
    sideways with an EXIF orientation is previewed (and so trained) upright; a generate request
    afterwards gives the same images as before."""
    import io as _io
    from gradio_client import handle_file
    from PIL import Image
    from test_uploads import assert_upright, exif_rotated_jpeg
    buf = _io.BytesIO()
    Image.new("RGB", (4096, 4096), (10, 200, 30)).save(buf, format="PNG")
    bomb = tmp_path / "solid.zip"
    with zipfile.ZipFile(bomb, "w") as z:
        for i in range(12):
            z.writestr(f"cat/{i}.png", buf.getvalue())
    times = []
    for _ in range(2):
        started = time.monotonic()
        summary = client.predict([handle_file(str(bomb))], "", api_name="/train_scan")[0]
        times.append(time.monotonic() - started)
        assert "Found **12 images**" in summary, summary
    photo = exif_rotated_jpeg(tmp_path / "phone.jpg")
    summary, _, thumbs, _ = client.predict([handle_file(str(photo))], "photo", api_name="/train_scan")
    shown = _gallery_images(thumbs)
    assert "Found **1 image**" in summary and len(shown) == 1, summary
    assert_upright(shown[0][..., :3])
    again = final_images(submit_generate(client, **load_requests()[0]).result(timeout=120))
    assert all(np.array_equal(a, b) for a, b in zip(again, references[0]))
    reliability_report["uploads"] = {"bomb_images": 12, "bomb_bytes": bomb.stat().st_size,
                                     "first_scan_s": round(times[0], 2), "second_scan_s": round(times[1], 2),
                                     "exif_upright": True}
    assert times[0] < 60, times                     # measured about 3 s
    assert times[1] < times[0] / 2, times            # answered from the scan cache


class _EvalOnLoad:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def _scan_skips(client, path: Path | list[Path], expect, loose: str = "moon", keeps: Optional[int] = None):
    """The upload preview lists the file as skipped with the reason (and, with `keeps`, uses that
    many good images): raised as a refusal."""
    from gradio_client import handle_file
    expected = (expect,) if isinstance(expect, str) else expect
    paths = path if isinstance(path, list) else [path]

    def call():
        summary, classes, thumbs, skipped = client.predict([handle_file(str(p)) for p in paths], loose,
                                                           api_name="/train_scan")
        table = skipped.get("value") if isinstance(skipped, dict) and skipped.get("__type__") == "update" else skipped
        reasons = [row[1] for row in (table or {}).get("data") or []]
        hits = [r for r in reasons if any(x in r for x in expected)]
        kept = keeps is None or f"Found **{keeps} image" in summary
        if hits and "skipped" in summary and kept:
            raise RefusedHTTP(f"skipped: {hits[0]}")
        return summary, reasons
    return call


def _scan_refuses(client, path: Path):
    from gradio_client import handle_file

    def call():
        summary = client.predict([handle_file(str(path))], "", api_name="/train_scan")[0]
        if "Upload refused" in summary:
            raise RefusedHTTP(summary)
        return summary
    return call


def _refused_route(url: str):
    def call():
        import urllib.parse as up
        parsed = up.urlsplit(url)
        import http.client
        conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
        conn.request("GET", parsed.path + (f"?{parsed.query}" if parsed.query else ""))   # sent as written
        r = conn.getresponse()
        body = r.read()
        conn.close()
        leaked = b"root:" in body or b"nar_studio_kind" in body or b"def build_app" in body or b"PATH=" in body
        if r.status in (400, 403, 404, 405) and not leaked:
            raise RefusedHTTP(f"refused with HTTP {r.status}")
        return f"HTTP {r.status}, {len(body)} bytes{' with file content' if leaked else ''}"
    return call


def _refused_post(url: str, body):
    def call():
        import httpx
        r = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=60)
        if r.status_code == 413:
            raise RefusedHTTP(f"413 {r.text[:120]}")
        return f"HTTP {r.status_code}"
    return call


# -- exposure ---------------------------------------------------------------------------------
def listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket listening on `port` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                local, _, state = line.split()[1:4]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:
                    if len(address) == 8:
                        found.add(".".join(str(b) for b in bytes.fromhex(address)[::-1]))
                    else:
                        found.add("ipv6:" + address)
    return found


def test_binds_to_loopback_and_serves_behind_a_login(server, tiny_checkpoints, reliability_report):
    import httpx
    from gradio_client import Client
    assert listening_addresses(server.port) == {"127.0.0.1"}
    with AppServer(tiny_checkpoints["vq"].parent, env={"NAR_STUDIO_AUTH": "alice:s3cret-pw"}) as locked:
        assert listening_addresses(locked.port) == {"127.0.0.1"}
        statuses = {route: httpx.get(locked.url + route).status_code
                    for route in ("config", "gradio_api/info", "gradio_api/file=/etc/passwd")}
        join = httpx.post(locked.url + "gradio_api/queue/join",
                          json={"data": gen_args(), "fn_index": 0, "session_hash": "x"}).status_code
        assert all(code in (401, 403) for code in statuses.values()) and join in (401, 403), (statuses, join)
        with pytest.raises(Exception):
            Client(locked.url, auth=("alice", "wrong"), verbose=False)
        c = Client(locked.url, auth=("alice", "s3cret-pw"), verbose=False)
        assert "done: 7 steps" in submit_generate(c).result(timeout=120)[1]
        c.close()
        assert "s3cret-pw" not in locked.log()
    reliability_report["exposure"] = {"default_bind": sorted(listening_addresses(server.port)),
                                      "without_login": sorted(set(statuses.values()) | {join}),
                                      "with_login": "served"}


def test_launch_options_warn_about_an_open_network_bind(tmp_path, capsys, monkeypatch):
    import app
    from ui.server import parse_auth
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    options = app.launch_options(app.parse_args([]), tmp_path, [])
    assert options["server_name"] == "127.0.0.1" and options["allowed_paths"] == [str(tmp_path)]
    assert "auth" not in options and capsys.readouterr().err == ""
    options = app.launch_options(app.parse_args(["--host", "0.0.0.0"]), tmp_path, [])
    assert options["server_name"] == "0.0.0.0" and "without --auth" in capsys.readouterr().err
    options = app.launch_options(app.parse_args(["--host", "0.0.0.0"]), tmp_path, parse_auth("a:b,c:d:e"))
    assert options["auth"] == [("a", "b"), ("c", "d:e")] and capsys.readouterr().err == ""
    with pytest.raises(ValueError, match="credential 2 is not user:password") as info:
        parse_auth("a:b,nopassword")
    assert "nopassword" not in str(info.value)


def test_bad_auth_setting_stops_the_server_before_it_serves(tiny_checkpoints):
    result = subprocess.run([sys.executable, "app.py", "--checkpoints", str(tiny_checkpoints["vq"].parent),
                             "--auth", "no-password-here"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "credential 1 is not user:password" in result.stderr
    assert "no-password-here" not in result.stderr and "Running on" not in result.stdout
