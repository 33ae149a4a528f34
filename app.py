"""NAR Studio: watch neighboring autoregressive (NAR) decoding fill an image diagonal by diagonal,
race it against raster and ZipAR decoding of the same class and seed, and teach it new images.

    python app.py                              # bundled checkpoints, http://127.0.0.1:7860
    python app.py --checkpoints DIR --port 7861
    python app.py --runs-dir /data/runs        # where the Train tab keeps its runs (default runs/finetune)
    NAR_STUDIO_AUTH=alice:secret python app.py --host 0.0.0.0   # on the network, behind a password
    GRADIO_SERVER_NAME=0.0.0.0 python app.py   # Gradio's own environment variables work too
    python app.py --preset NAR-B               # the official NAR-B and LlamaGen-B from the Hub (repeatable)
    NAR_STUDIO_ADMIN=admin:secret python app.py --lock-models   # a public server: visitors only generate

The UI is the `ui` package beside this file (the only code that imports gradio; one module per
tab, ui/layout.py puts them together); the library `nar/` does the work. On Hugging Face ZeroGPU
the decodes run under `spaces.GPU` (ui/zerogpu.py), which must be imported before torch.
"""
from __future__ import annotations

from ui.zerogpu import import_spaces

import_spaces()   # before anything touches torch's CUDA state (ZeroGPU requires it)

import argparse  # noqa: E402
import atexit
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Optional

import torch
from starlette.middleware import Middleware

from nar.checkpoint import CheckpointError
from ui.layout import CSS, build_app, theme
from ui.server import AUTH_ENV, BodyLimit, exposure_warning, parse_auth, resolve_host, tune_allocator
from ui.server_models import shared_loader
from ui.service import BUNDLED, BUNDLED_TEXT, Service, has_text_models
from ui.sessions import DEFAULT_SESSION_MODELS, ModelRegistry
from ui.stream import warm_up
from ui.training import TrainingService
from ui.video import load_video_models
from ui.zerogpu import active as zerogpu_active, startup_device

ROOT = Path(__file__).resolve().parent
DEFAULT_CHECKPOINTS = ROOT / "checkpoints"
BENCHMARKS = ROOT / "benchmarks"
RUNS = ROOT / "runs" / "finetune"
REQUIRED = ("nar.safetensors", "raster.safetensors", "vq.safetensors")
HOW_TO_GET = """\
NAR Studio needs three checkpoints in {folder}: {missing}.
Train them (see README.md):
    python -m nar.vq_train --data data/emoji --run-dir runs/vq --out checkpoints/vq.safetensors
    python -m nar.train nar --data data/emoji --vq checkpoints/vq.safetensors --run-dir runs/nar
    python -m nar.train raster --data data/emoji --vq checkpoints/vq.safetensors --run-dir runs/raster
and copy each run's best.safetensors to checkpoints/nar.safetensors and checkpoints/raster.safetensors,
or start the app on another folder holding all three files: python app.py --checkpoints DIR"""



def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python app.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoints", type=Path, default=DEFAULT_CHECKPOINTS,
                   help="folder with nar.safetensors, raster.safetensors and vq.safetensors "
                        "(default: the bundled checkpoints/)")
    p.add_argument("--host", default=None,
                   help="address to serve on (default 127.0.0.1, or GRADIO_SERVER_NAME); 0.0.0.0 serves the "
                        "network: use it with --auth or behind an authenticating reverse proxy")
    p.add_argument("--port", type=int, default=None, help="port (default 7860, or GRADIO_SERVER_PORT)")
    p.add_argument("--device", default="auto", help="cuda, cpu, ... (default: a GPU when there is one)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for decoding and training (default: torch's choice, one per core; "
                        "fewer on a CPU that other programs share, where oversubscription slows every step)")
    p.add_argument("--concurrency", type=int, default=1,
                   help="decoding jobs run at the same time; more wait in the queue (default 1)")
    p.add_argument("--benchmarks", type=Path, default=BENCHMARKS,
                   help="folder of `python -m nar.bench` results to plot (default benchmarks/)")
    p.add_argument("--max-upload", default="4gb", help="largest checkpoint upload accepted (default 4gb)")
    p.add_argument("--auth", default=None, metavar="USER:PASSWORD[,USER:PASSWORD]",
                   help="require a login (default: $NAR_STUDIO_AUTH, which keeps the password out of the "
                        "process list; no login when neither is set)")
    p.add_argument("--max-sessions", type=int, default=500,
                   help="browser/API sessions whose state the server keeps (about 0.5 MB each; the least "
                        "recently used are dropped first, which costs their users nothing in this app) "
                        "(default 500)")
    p.add_argument("--queue-size", type=int, default=64,
                   help="requests that may wait for the decoder; more are refused with 'queue is full' "
                        "(default 64)")
    p.add_argument("--runs-dir", type=Path, default=Path(os.environ.get("NAR_STUDIO_RUNS_DIR") or RUNS),
                   help="folder for the Train tab's fine-tuning runs (default: $NAR_STUDIO_RUNS_DIR or "
                        "runs/finetune; created at start)")
    presets = [n.strip() for n in os.environ.get("NAR_STUDIO_PRESETS", "").split(",") if n.strip()]
    p.add_argument("--preset", action="append", default=presets, metavar="NAME",
                   help="serve a preset of the official models (nar/presets.py: NAR-B, ...) instead of the bundled "
                        "checkpoints; repeatable, the first is the default; 'bundled' names the checkpoints folder "
                        "(default: $NAR_STUDIO_PRESETS, comma-separated)")
    p.add_argument("--session-models", type=int, default=DEFAULT_SESSION_MODELS,
                   help="visitors' own models (loaded or fine-tuned) held at once; the least recently used is "
                        f"dropped first and its visitor told so; 0 keeps none (default {DEFAULT_SESSION_MODELS})")
    p.add_argument("--lock-models", action="store_true",
                   default=os.environ.get("NAR_STUDIO_LOCK_MODELS", "").lower() in ("1", "true", "yes"),
                   help="turn the Model and Train tabs off for visitors (they generate and compare with the "
                        "server's models; the admin of $NAR_STUDIO_ADMIN may still replace them; default: "
                        "$NAR_STUDIO_LOCK_MODELS=1)")
    return p.parse_args(argv)


def missing_checkpoints(folder: Path) -> list[str]:
    return [name for name in REQUIRED if not (folder / name).is_file()]


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    folder = args.checkpoints.expanduser().resolve()
    missing = missing_checkpoints(folder)
    if missing and (not args.preset or "bundled" in args.preset):
        sys.exit(HOW_TO_GET.format(folder=folder, missing=", ".join(missing)))
    if args.concurrency < 1:
        sys.exit("--concurrency must be at least 1")
    if args.queue_size < 1 or args.max_sessions < 1:
        sys.exit("--queue-size and --max-sessions must be at least 1")
    if args.session_models < 0:
        sys.exit("--session-models must be 0 or more")
    if args.threads is not None:
        if not 1 <= args.threads <= 1024:
            sys.exit("--threads must be between 1 and 1024")
        torch.set_num_threads(args.threads)
    try:
        auth = parse_auth(args.auth if args.auth is not None else os.environ.get(AUTH_ENV))
    except ValueError as e:
        sys.exit(f"error: --auth / {AUTH_ENV}: {e}")
    logging.basicConfig(format="[%(asctime)s] %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("nar").setLevel(logging.INFO)
    tune_allocator()   # before any thread starts: keeps the RSS of a long-running server flat

    device = startup_device(args.device)     # cuda on ZeroGPU: the main process sees no GPU there
    # the bundled class models, and the bundled text-to-image models beside them when the folder has them
    default_sets = [BUNDLED] + ([BUNDLED_TEXT] if not missing and has_text_models(folder) else [])
    names = list(dict.fromkeys(args.preset or default_sets))
    try:
        shared = [shared_loader(name, None if missing else folder, device)() for name in names]
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        sys.exit(f"error: cannot load the server's models ({', '.join(names)}): {e}")
    # the video models are the folder's, shared by every visitor; on ZeroGPU they decode on the CPU
    video, video_note = load_video_models(None if missing else folder, "cpu" if zerogpu_active() else device)
    service = Service(registry=ModelRegistry(shared, args.session_models), checkpoint_dir=None if missing else folder,
                      video=video, video_note=video_note)
    atexit.register(shutil.rmtree, service.out_dir, ignore_errors=True)
    try:
        training = TrainingService(service, args.runs_dir)
    except OSError as e:
        sys.exit(f"error: cannot create the runs folder {args.runs_dir}: {e}")
    if not zerogpu_active():   # on ZeroGPU the main process has no GPU: the first GPU call pays instead
        warm_up(service.studio)
    demo = build_app(service, args.benchmarks, args.concurrency, training, lock_models=args.lock_models)
    demo.queue(default_concurrency_limit=args.concurrency, max_size=args.queue_size)
    demo.launch(**launch_options(args, service.out_dir, auth))


def launch_options(args: argparse.Namespace, out_dir: Path, auth: list) -> dict:
    """demo.launch's arguments: loopback unless told otherwise, only the app's own output folder
    served, request bodies capped, errors shown as messages (never tracebacks)."""
    host = resolve_host(args.host)
    warning = exposure_warning(host, auth)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    launch = dict(server_name=host, allowed_paths=[str(out_dir)], max_file_size=args.max_upload, theme=theme(),
                  css=CSS, footer_links=["api", "settings"], show_error=True,
                  state_session_capacity=args.max_sessions,
                  app_kwargs={"middleware": [Middleware(BodyLimit)]})
    if auth:
        launch["auth"] = auth
    if args.port:
        launch["server_port"] = args.port
    return launch


if __name__ == "__main__":
    main()
