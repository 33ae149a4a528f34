"""NAR Studio: watch neighboring autoregressive (NAR) decoding fill an image diagonal by diagonal,
race it against raster and ZipAR decoding of the same class and seed, and teach it new images.

    python app.py                              # bundled checkpoints, http://127.0.0.1:7860
    python app.py --checkpoints DIR --port 7861
    python app.py --runs-dir /data/runs        # where the Train tab keeps its runs (default runs/finetune)
    NAR_STUDIO_AUTH=alice:secret python app.py --host 0.0.0.0   # on the network, behind a password
    GRADIO_SERVER_NAME=0.0.0.0 python app.py   # Gradio's own environment variables work too

The UI only wires components to nar/service.py (requests, streaming, files, model loading),
nar/training_service.py (the Train tab: uploads, fine-tuning runs) and nar/plots.py (figures).
On Hugging Face ZeroGPU the decoding handlers run under `spaces.GPU`.
"""
from __future__ import annotations

import argparse
import atexit
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Optional

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

CSS = """
.gradio-container { max-width: 1280px !important; margin: 0 auto !important; }
#live img, .panel img, #final-gallery img { image-rendering: pixelated; }
#live img, .panel img { width: 100%; height: 100%; object-fit: contain; }
.caption { font-variant-numeric: tabular-nums; min-height: 1.6em; }
.caption p { margin: 0.25em 0 !important; }
#header p { margin-top: 0 !important; color: var(--body-text-color-subdued); }
#seed-row, #cmp-seed-row { align-items: end; }
#train-preview img, #scan-thumbs img { image-rendering: pixelated; }
#train-preview img { width: 100%; height: 100%; object-fit: contain; }
.hint p { margin: 0 !important; font-size: var(--text-sm); color: var(--body-text-color-subdued); }
#train-status { min-height: 1.6em; font-variant-numeric: tabular-nums; }
#train-status p, #scan-summary p, #train-note p { margin: 0.25em 0 !important; }
.train-progress { display: flex; align-items: center; gap: 12px; font-variant-numeric: tabular-nums; }
.train-progress .track { flex: 1; height: 12px; border-radius: 6px; overflow: hidden;
  background: var(--neutral-200); border: 1px solid var(--border-color-primary); }
.dark .train-progress .track { background: var(--neutral-700); }
.train-progress .fill { height: 100%; background: var(--color-accent); transition: width 0.6s ease; }
.train-progress.done .fill { background: var(--secondary-500); }
.train-progress.stopped .fill { background: var(--neutral-400); }
.train-progress.failed .fill { background: var(--error-500, #ef4444); }
.train-progress .label { min-width: 15em; text-align: right; font-size: var(--text-sm);
  color: var(--body-text-color-subdued); }
#runs-row { align-items: end; }
#train-weights .empty { min-height: 64px !important; height: 64px !important; }
"""


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
    return p.parse_args(argv)


def missing_checkpoints(folder: Path) -> list[str]:
    return [name for name in REQUIRED if not (folder / name).is_file()]


def build_app(service, benchmarks: Path = BENCHMARKS, concurrency: int = 1, training=None):
    """The Gradio Blocks of the app over a nar.service.Service (and a
    nar.training_service.TrainingService for the Train tab; one on runs/finetune by default)."""
    import gradio as gr

    from nar import plots
    from nar.checkpoint import CheckpointError
    from nar.guard import Blocks, Number, Slider   # gr.Slider / gr.Number that answer a non-number clearly,
    #                                                 gr.Blocks that answer an over-long file path clearly
    from nar.service import (COMPARE_HEADERS, COMPARE_ORDERS, MAX_FRAME_SECONDS, ORDER_LABELS,
                             GenerateRequest, benchmark_files, gpu, normalise_result, random_seed,
                             read_benchmark)

    from nar.training_service import BOUNDS, DEFAULTS, Busy, TrainingService, loss_frame, progress_html

    if training is None:
        training = TrainingService(service, RUNS)
    problems = (ValueError, CheckpointError, FileNotFoundError)
    heavy = dict(concurrency_id="device", concurrency_limit=concurrency)
    light = dict(concurrency_limit=None, show_progress="hidden")
    n = service.grid_size()
    default_window = max(1, min(8, n // 2))   # 8 on a 16x16 grid; below n, so never just raster
    classes = service.class_names()
    MEASURE = "This device (press Measure)"

    def fail(e: Exception):
        return gr.Error(str(e), title="Cannot do that", print_exception=False)

    def device_line() -> str:
        return (f"Running on **{service.device_label()}** in **{service.dtype()}** · "
                f"{service.grid_size()}×{service.grid_size()} tokens → {service.image_size()} px images · "
                f"NAR needs {2 * service.grid_size() - 1} steps where raster needs {service.grid_size() ** 2}")

    def class_update(current: Optional[str] = None):
        names = service.class_names()
        value = current if current in names else (names[0] if names else None)
        return gr.update(choices=names, value=value)

    def window_update(value: int):
        grid = service.grid_size()
        return gr.update(maximum=grid, value=max(1, min(int(value or 1), grid)))

    def bench_choices() -> list[str]:
        return [p.name for p in benchmark_files(benchmarks, service.studio.device)] + [MEASURE]

    # -- handlers ------------------------------------------------------------------------------
    @gpu
    def generate(class_name, num_images, seed, order, window, cfg_scale, cfg_interval, temperature,
                 top_k, top_p, seconds_per_frame):
        request = GenerateRequest(class_name=class_name, num_images=num_images, order=order, window=window,
                                  cfg_scale=cfg_scale, cfg_interval=cfg_interval, temperature=temperature,
                                  top_k=top_k, top_p=top_p, seed=seed)
        try:
            for u in service.generate(request, seconds_per_frame):
                if u.done:
                    yield (u.frame, u.caption, [(str(p), label) for p, label in zip(u.images, u.labels)],
                           str(u.gif), str(u.mp4) if u.mp4 else None)
                else:  # the previous results are cleared as the new decode starts. (Not gr.skip():
                    # Gradio builds a new component for every skipped output of every frame, and
                    # that cost memory on each request in the load test; None costs nothing.)
                    yield u.frame, u.caption, None, None, None
        except problems as e:
            raise fail(e) from None

    @gpu
    def compare(class_name, seed, window, cfg_scale, seconds_per_frame):
        request = GenerateRequest(class_name=class_name, seed=seed, window=window, cfg_scale=cfg_scale)
        try:
            for u in service.compare(request, seconds_per_frame):
                images = [u.frames[o] for o in COMPARE_ORDERS]
                captions = [u.captions[o] for o in COMPARE_ORDERS]
                if u.done:
                    yield (*images, *captions, u.rows, str(u.gif))
                else:  # the table and GIF of the previous race clear as this one starts (see generate)
                    yield (*images, *captions, None, None)
        except problems as e:
            raise fail(e) from None

    def steps_plot(window):
        try:
            w = int(window)
        except (TypeError, ValueError):
            w = 8
        return plots.steps_figure(service.grid_size(), max(1, min(w, service.grid_size())))

    def show_benchmark(name):
        if not name or name == MEASURE:
            return (plots.message_figure("Press “Measure” to time the three orders on this device."),
                    gr.update(visible=False))
        path = benchmarks / Path(name).name
        try:
            device, rows = read_benchmark(path)
        except ValueError as e:
            return plots.message_figure(str(e)), gr.update(visible=False)
        if not rows:
            return plots.message_figure(f"{path.name} holds no usable timings."), gr.update(visible=False)
        return (plots.latency_figure(rows, f"Time per image vs batch size on {device} ({path.name})"),
                gr.update(visible=False))

    def refresh_benchmarks(current):
        # python -m nar.bench may have written new files since the app started
        names = bench_choices()
        value = current if current in names else names[0]
        return (gr.update(choices=names, value=value), *show_benchmark(value))

    @gpu
    def measure(batches, window, progress=gr.Progress()):
        try:
            rows = service.measure([int(b) for b in batches or []], window,
                                   progress=lambda f, m: progress(f, desc=m))
        except problems as e:
            raise fail(e) from None
        norm = [normalise_result(r) for r in rows]
        table = [[ORDER_LABELS[r["order"]] + (f" (window {r['window']})" if r["window"] else ""), r["batch"],
                  round(1000 * r["latency_per_image_s"], 2), round(r["images_per_s"], 2)] for r in rows]
        fig = plots.latency_figure([r for r in norm if r], f"Time per image vs batch size, measured now on "
                                                           f"{service.device_label()}")
        return fig, gr.update(value=table, visible=True), gr.update(value=MEASURE)

    def model_view():
        headers, rows = service.model_rows()
        names = service.class_names()
        shown = ", ".join(names[:60]) + (f", … ({len(names)} in all)" if len(names) > 60 else "")
        return (gr.update(value=rows, headers=headers), f"**Classes ({len(names)}):** {shown}")

    def after_load(message: str, gen_class, cmp_class, gen_window, cmp_window):
        return (message, *model_view(), class_update(gen_class), class_update(cmp_class),
                window_update(gen_window), window_update(cmp_window), steps_plot(cmp_window), device_line())

    @gpu
    def load_from_hub(repo_id, filenames, grid, gen_class, cmp_class, gen_window, cmp_window):
        try:
            message = service.load((), repo_id, filenames, grid)
        except problems as e:
            raise fail(e) from None
        return after_load(message, gen_class, cmp_class, gen_window, cmp_window)

    @gpu
    def load_upload(files, grid, gen_class, cmp_class, gen_window, cmp_window):
        paths = [f if isinstance(f, str) else getattr(f, "name", str(f)) for f in (files or [])]
        try:
            if not paths:
                raise ValueError("choose one or more checkpoint files to upload first")
            message = service.load(paths, "", "", grid)
        except problems as e:
            raise fail(e) from None
        return after_load(message, gen_class, cmp_class, gen_window, cmp_window)

    @gpu
    def reset_models(gen_class, cmp_class, gen_window, cmp_window):
        try:
            message = service.reset()
        except problems as e:
            raise fail(e) from None
        return after_load(message, gen_class, cmp_class, gen_window, cmp_window)

    def on_page_load(gen_class, cmp_class, gen_window, cmp_window):
        # another session may have swapped models since this page was built
        return (*model_view(), class_update(gen_class), class_update(cmp_class), window_update(gen_window),
                window_update(cmp_window), steps_plot(cmp_window), device_line())

    # -- train tab ----------------------------------------------------------------------------
    def scan_view(files, loose_class):
        s = training.scan(files, loose_class)
        return (s.text, gr.update(value=s.classes, visible=bool(s.classes)),
                gr.update(value=s.thumbnails or None, visible=bool(s.thumbnails)),
                gr.update(value=s.skipped, visible=bool(s.skipped)))

    def runs_update(value: Optional[str] = None):
        choices = training.run_choices()
        ids = [v for _, v in choices]
        return gr.update(choices=choices, value=value if value in ids else (ids[0] if ids else None))

    def run_outputs(view, shown: dict, files=None, runs=None):
        preview = gr.skip()
        if view.preview is not None and view.preview_step != shown.get("preview"):
            shown["preview"] = view.preview_step
            preview = gr.update(value=view.preview, label=view.preview_caption)
        elif view.preview is None and shown.get("preview", 0) is not None:
            shown["preview"] = None
            preview = gr.update(value=None, label="NAR samples (every few steps while training)")
        return (view.text, view.progress_html, loss_frame(view.losses) if view.losses else None, preview,
                gr.skip() if files is None else files,
                gr.skip() if runs is None else runs, view.run_id, view.info)

    def follow(job):
        shown: dict = {}
        view, first = None, True
        for view in training.watch(job):
            if not view.finished:
                yield run_outputs(view, shown, [] if first else None)   # the first update hides old weights
                first = False
        try:
            files = [str(f) for f in training.downloads(view.run_id)]
        except ValueError:
            files = []
        yield run_outputs(view, shown, files, runs_update(view.run_id))
        if view.status == "failed":
            raise gr.Error(f"run {view.run_id} failed: {view.info.get('message') or 'see the server log'}",
                           title="Training failed", print_exception=False)

    def start_training(files, loose_class, steps, lr, batch_size, layers, preview_every):
        try:
            options = training.options(steps, lr, batch_size, layers, preview_every)
            job = training.start(files, loose_class, options)
        except Busy as e:
            raise gr.Error(str(e), title="Server busy", print_exception=False) from None
        except problems as e:
            raise fail(e) from None
        yield from follow(job)

    def resume_training(run_id, steps, lr, batch_size, layers, preview_every):
        try:
            job = training.resume(run_id, training.options(steps, lr, batch_size, layers, preview_every))
        except Busy as e:
            raise gr.Error(str(e), title="Server busy", print_exception=False) from None
        except problems as e:
            raise fail(e) from None
        yield from follow(job)

    def cancel_training(run_id):
        try:
            message = training.cancel(run_id)
        except ValueError as e:
            raise fail(e) from None
        gr.Info(message)
        return message

    def show_run(run_id):
        try:
            view = training.view(run_id)
        except ValueError as e:
            raise fail(e) from None
        return run_outputs(view, {"preview": -1})[:4] + (view.run_id, view.info)

    def download_run(run_id):
        try:
            return [str(f) for f in training.downloads(run_id)]
        except problems as e:
            raise fail(e) from None

    @gpu
    def use_run(run_id, gen_class, cmp_class, gen_window, cmp_window):
        try:
            message = training.use(run_id)
        except problems as e:
            raise fail(e) from None
        return after_load(message, gen_class, cmp_class, gen_window, cmp_window)

    def train_overview(current_run, layers):
        job = training.manager.current
        note = ""
        if job is not None and job.thread.is_alive():
            note = (f"A training job is running on this server now (run {job.run_id}, step {job.state.step}/"
                    f"{job.state.total_steps}). Pick it under **Runs** and press **Resume** to follow it.")
        else:
            note = training.interrupted_note()
        choices = training.layer_choices()
        return (runs_update(current_run), note,
                gr.update(choices=choices, value=layers if layers in [v for _, v in choices] else "all"))

    # -- layout --------------------------------------------------------------------------------
    with Blocks(title="NAR Studio", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown("# NAR Studio", elem_id="title")
        header = gr.Markdown(device_line(), elem_id="header")
        with gr.Tabs():
            with gr.Tab("Generate", id="generate"):
                with gr.Row():
                    with gr.Column(scale=1, min_width=320):
                        gen_class = gr.Dropdown(classes, value=classes[0] if classes else None, label="Class",
                                                allow_custom_value=True, filterable=True)
                        with gr.Row(elem_id="seed-row"):
                            gen_seed = Number(0, label="Seed", precision=0, scale=3, minimum=0)
                            gen_dice = gr.Button("Random", scale=1, min_width=90, size="md")
                        gen_num = Slider(1, 8, value=1, step=1, label="Number of images")
                        gen_order = gr.Radio([("NAR (diagonal front)", "nar"), ("Raster", "raster"),
                                              ("ZipAR", "zipar")], value="nar", label="Decoding order")
                        gen_window = Slider(1, n, value=default_window, step=1, label="ZipAR window (tokens)",
                                            info="a row starts once the row above holds this many tokens",
                                            visible=False)
                        with gr.Accordion("Sampling", open=False):
                            gen_cfg = Slider(1.0, 15.0, value=4.0, step=0.25, label="CFG scale",
                                             info="classifier-free guidance; 1 = off")
                            gen_cfg_interval = Number(-1, label="CFG interval (tokens)", precision=0,
                                                      info="guidance stops after this many tokens; -1 = always")
                            gen_temperature = Slider(0.05, 2.0, value=1.0, step=0.05, label="Temperature")
                            with gr.Row():
                                gen_top_k = Number(2000, label="Top-k", precision=0, info="0 = off", minimum=0)
                                gen_top_p = Slider(0.05, 1.0, value=1.0, step=0.01, label="Top-p",
                                                   info="1 = off")
                        gen_pace = Slider(0.0, MAX_FRAME_SECONDS, value=0.1, step=0.05,
                                          label="Playback: minimum seconds per frame",
                                          info="slows the live view so the front can be followed; "
                                               "never counted in the decode time")
                        with gr.Row():
                            gen_button = gr.Button("Generate", variant="primary", scale=3, min_width=120)
                            gen_stop = gr.Button("Stop", variant="stop", scale=1, min_width=60)
                    with gr.Column(scale=2):
                        gen_live = gr.Image(label="Decoding (undecoded tokens blank, front outlined)",
                                            format="png", interactive=False, height=360, elem_id="live",
                                            buttons=["download", "fullscreen"])
                        gen_caption = gr.Markdown("Pick a class and press **Generate**.", elem_id="gen-caption",
                                                  elem_classes="caption")
                        gen_gallery = gr.Gallery(label="Final images (model resolution)", columns=4, height=220,
                                                 object_fit="contain", elem_id="final-gallery", format="png",
                                                 fit_columns=False, buttons=["download", "download_all", "fullscreen"])
                        with gr.Row():
                            gen_gif = gr.File(label="Animation (GIF)", elem_id="gen-gif", height=90)
                            gen_mp4 = gr.File(label="Animation (MP4)", elem_id="gen-mp4", height=90)

            with gr.Tab("Compare", id="compare"):
                gr.Markdown("Raster, ZipAR and NAR decode the same class and seed. The three decoders run "
                            "interleaved, always advancing the one with the least decode time so far, so every "
                            "frame shows all three after the same decode time.")
                with gr.Row(equal_height=True):
                    cmp_class = gr.Dropdown(classes, value=classes[0] if classes else None, label="Class",
                                            allow_custom_value=True, filterable=True, scale=3)
                    with gr.Row(elem_id="cmp-seed-row", scale=3):
                        cmp_seed = Number(0, label="Seed", precision=0, minimum=0, scale=3)
                        cmp_dice = gr.Button("Random", scale=1, min_width=90, size="md")
                    cmp_cfg = Slider(1.0, 15.0, value=4.0, step=0.25, label="CFG scale", scale=3)
                with gr.Row(equal_height=True):
                    cmp_window = Slider(1, n, value=default_window, step=1, label="ZipAR window (tokens)", scale=3,
                                        info="a row starts once the row above holds this many tokens")
                    cmp_pace = Slider(0.0, MAX_FRAME_SECONDS, value=0.05, step=0.05, scale=3,
                                      label="Playback: minimum seconds per frame",
                                      info="not counted in the decode times")
                    with gr.Column(scale=3, min_width=200):
                        cmp_button = gr.Button("Compare", variant="primary")
                        cmp_stop = gr.Button("Stop", variant="stop", size="sm")
                cmp_images, cmp_captions = [], []
                with gr.Row(equal_height=True):
                    for order in COMPARE_ORDERS:
                        with gr.Column(min_width=200):
                            cmp_images.append(gr.Image(label=ORDER_LABELS[order], format="png", interactive=False,
                                                       height=280, elem_classes="panel",
                                                       elem_id=f"panel-{order}", buttons=["fullscreen"]))
                            cmp_captions.append(gr.Markdown("", elem_classes="caption",
                                                            elem_id=f"caption-{order}"))
                with gr.Row():
                    cmp_table = gr.Dataframe(headers=COMPARE_HEADERS, label="Measured in this run",
                                             interactive=False, scale=3, elem_id="compare-table",
                                             datatype=["str", "number", "number", "number", "str"])
                    cmp_gif = gr.File(label="Side-by-side animation (GIF)", scale=1, height=90)
                with gr.Accordion("Scaling: steps and time per image", open=True):
                    with gr.Row(equal_height=True):
                        steps_fig = gr.Plot(steps_plot(default_window), label="Steps vs grid size", format="png",
                                            show_label=False)
                        lat_fig = gr.Plot(label="Time per image vs batch size", format="png", show_label=False)
                    with gr.Row(equal_height=True):
                        choices = bench_choices()
                        bench_pick = gr.Dropdown(choices, value=choices[0], label="Timings from",
                                                 info="files written by python -m nar.bench", scale=2)
                        bench_batches = gr.CheckboxGroup([1, 2, 4, 8, 16], value=[1, 2, 4], label="Batch sizes",
                                                         scale=2)
                        measure_button = gr.Button("Measure", scale=1)
                    measured_table = gr.Dataframe(headers=["Order", "Batch", "Time per image (ms)", "Images/s"],
                                                  label="Measured now", interactive=False, visible=False)

            with gr.Tab("Model", id="model"):
                model_table = gr.Dataframe(label="Active models", interactive=False, elem_id="model-table",
                                           max_height=720, column_widths=["16%", "28%", "28%", "28%"])
                model_classes = gr.Markdown()
                gr.Markdown("### Load a checkpoint\nOur safetensors files, official NAR / LlamaGen GPT "
                            "checkpoints and the LlamaGen VQ tokenizer (`.pt`, read weights-only). The kind is "
                            "read from each file; load a model and its tokenizer together when the vocabulary "
                            "changes. If a file cannot be used, the active models stay as they are.")
                with gr.Row(equal_height=True):
                    with gr.Column():
                        hub_repo = gr.Textbox(label="Hugging Face Hub repo id", placeholder="owner/name")
                        hub_files = gr.Textbox(label="File name(s) in the repo, comma-separated",
                                               placeholder="c2i_L_256.pt, vq_ds16_c2i.pt")
                        hub_button = gr.Button("Load from the Hub")
                    with gr.Column():
                        # any file type: Gradio would refuse the whole upload over one file of another
                        # type; a file that is not a checkpoint is refused with the reason when loaded
                        upload_files = gr.File(label="Checkpoint file(s): .safetensors, or official .pt, .pth, .bin",
                                               file_count="multiple", height=140)
                        upload_button = gr.Button("Load uploaded files")
                with gr.Row(equal_height=True):
                    load_grid = Number(n, label="Token grid of official checkpoints (tokens per side)",
                                       precision=0, minimum=1, maximum=64, scale=2)
                    reset_button = gr.Button("Back to the startup checkpoints", scale=1)
                load_status = gr.Markdown(elem_id="load-status")

            with gr.Tab("Train", id="train"):
                gr.Markdown("Teach the active NAR model new images. Upload PNG, JPEG or WebP files, or a zip with "
                            "one folder per class (the folder names the class). New class names get new rows in "
                            "the class table; names the model knows keep theirs. Images are centre-cropped to "
                            f"squares and resized to the tokenizer's {service.image_size()} px before training.")
                with gr.Row():
                    with gr.Column(scale=2, min_width=340):
                        # any file type: one unsupported file would make Gradio refuse the whole upload;
                        # the scan uses the good files and lists the others as skipped with the reason
                        train_files = gr.File(label="Images (PNG, JPEG, WebP), or a zip of class folders",
                                              file_count="multiple", height=150, elem_id="train-files")
                        train_loose = gr.Textbox(label="Class name for loose images", placeholder="e.g. star",
                                                 info="images that are not inside a class folder of a zip",
                                                 max_lines=1)
                        gr.Markdown(f"Limits: {training.limits_text()}.", elem_classes="hint", elem_id="train-limits")
                        with gr.Accordion("Training options", open=True):
                            with gr.Row():
                                train_steps = Slider(*BOUNDS["steps"], value=DEFAULTS.steps, step=1, label="Steps")
                                train_batch = Slider(*BOUNDS["batch_size"], value=DEFAULTS.batch_size, step=1,
                                                     label="Batch size")
                            with gr.Row():
                                lo, hi = BOUNDS["lr"]
                                train_lr = Number(DEFAULTS.lr, label="Learning rate", minimum=lo, maximum=hi,
                                                  info=f"{lo:.0e} to {hi:.0e}; warm-up, then cosine decay".replace("e-0", "e-"),
                                                  elem_id="train-lr")
                                train_every = Number(DEFAULTS.preview_every, label="Preview and checkpoint every",
                                                     precision=0, minimum=BOUNDS["preview_every"][0],
                                                     maximum=BOUNDS["preview_every"][1], info="steps",
                                                     elem_id="train-every")
                            train_layers = gr.Dropdown(training.layer_choices(), value=DEFAULTS.train_layers,
                                                       label="Layers to train")
                        with gr.Row():
                            train_button = gr.Button("Start training", variant="primary", scale=3, min_width=140)
                            train_cancel = gr.Button("Cancel", variant="stop", scale=1, min_width=80)
                    with gr.Column(scale=3):
                        scan_text = gr.Markdown("Upload images or a zip to see what will be learned.",
                                                elem_id="scan-summary")
                        scan_classes = gr.Dataframe(headers=["Class", "Images", "In the model"], label="Classes",
                                                    interactive=False, visible=False, elem_id="scan-classes",
                                                    datatype=["str", "number", "str"], max_height=200)
                        scan_thumbs = gr.Gallery(label="Images as the model will see them", columns=6, height=240,
                                                 object_fit="contain", format="png", visible=False,
                                                 elem_id="scan-thumbs", interactive=False)
                        scan_skipped = gr.Dataframe(headers=["File", "Why it was skipped"], label="Skipped files",
                                                    interactive=False, visible=False, wrap=True, max_height=220,
                                                    elem_id="scan-skipped", column_widths=["40%", "60%"])
                gr.Markdown("### Progress")
                train_status = gr.Markdown("No run yet: upload images and press **Start training**.",
                                           elem_id="train-status")
                train_bar = gr.HTML(progress_html(0.0, "no run yet", "stopped"), elem_id="train-bar")
                with gr.Row(equal_height=True):
                    loss_plot = gr.LinePlot(None, x="step", y="loss", color="curve",
                                            label="Training loss (grey: every step, orange: moving average)",
                                            height=260, scale=3, x_title="step", y_title="cross-entropy (nats/token)",
                                            color_title="", elem_id="loss-plot",
                                            color_map={"loss per step": "#94a3b8", "moving average": "#ea580c"})
                    train_preview = gr.Image(label="NAR samples (every few steps while training)", format="png",
                                             interactive=False, height=260, scale=2, elem_id="train-preview",
                                             buttons=["download", "fullscreen"])
                gr.Markdown("### Runs")
                with gr.Row(elem_id="runs-row"):
                    runs = training.run_choices()
                    runs_pick = gr.Dropdown(runs, value=runs[0][1] if runs else None, label="Runs on this server",
                                            info="resume a stopped run up to Steps, follow the one training now, "
                                                 "download weights or generate with them", scale=4,
                                            allow_custom_value=True, filterable=True, elem_id="runs-pick")
                    resume_button = gr.Button("Resume", scale=1, min_width=90)
                    download_button = gr.Button("Download", scale=1, min_width=90)
                    use_button = gr.Button("Use this model", variant="primary", scale=1, min_width=140)
                train_weights = gr.File(label="Weights (best.safetensors) and resumable checkpoint (with the "
                                              "optimiser state)", file_count="multiple", interactive=False,
                                        elem_id="train-weights")
                train_note = gr.Markdown(elem_id="train-note")
                run_box = gr.Textbox(visible=False, label="Run id")
                cancel_box = gr.Textbox(visible=False, label="Cancel")
                run_info = gr.JSON(visible=False, label="Run")

        # -- events ----------------------------------------------------------------------------
        gen_dice.click(random_seed, None, gen_seed, api_name="random_seed", **light)
        cmp_dice.click(random_seed, None, cmp_seed, api_name="random_seed_compare", **light)
        gen_order.change(lambda o: gr.update(visible=o == "zipar"), gen_order, gen_window,
                         api_name="order_changed", api_visibility="undocumented", **light)
        gen_event = gen_button.click(
            generate, [gen_class, gen_num, gen_seed, gen_order, gen_window, gen_cfg, gen_cfg_interval,
                       gen_temperature, gen_top_k, gen_top_p, gen_pace],
            [gen_live, gen_caption, gen_gallery, gen_gif, gen_mp4], api_name="generate",
            api_description="Decode images of a class; streams one frame per step, returns the final "
                            "images and the animation (GIF, MP4).", show_progress="minimal", **heavy)
        gen_stop.click(None, None, None, cancels=[gen_event], api_name="stop_generate",
                       api_visibility="undocumented")
        cmp_event = cmp_button.click(
            compare, [cmp_class, cmp_seed, cmp_window, cmp_cfg, cmp_pace],
            [*cmp_images, *cmp_captions, cmp_table, cmp_gif], api_name="compare",
            api_description="Raster, ZipAR and NAR on the same class and seed, interleaved by decode time; "
                            "returns the final images, captions and a table of steps, seconds and images/s.",
            show_progress="minimal", **heavy)
        cmp_stop.click(None, None, None, cancels=[cmp_event], api_name="stop_compare",
                       api_visibility="undocumented")
        cmp_window.release(steps_plot, cmp_window, steps_fig, api_name="steps_plot", **light)
        bench_pick.input(show_benchmark, bench_pick, [lat_fig, measured_table], api_name="benchmark_plot",
                          **light)
        measure_button.click(measure, [bench_batches, cmp_window], [lat_fig, measured_table, bench_pick],
                             api_name="measure", show_progress_on=lat_fig, **heavy)
        load_outputs = [load_status, model_table, model_classes, gen_class, cmp_class,
                        gen_window, cmp_window, steps_fig, header]
        view_inputs = [gen_class, cmp_class, gen_window, cmp_window]
        hub_button.click(load_from_hub, [hub_repo, hub_files, load_grid, *view_inputs], load_outputs,
                         api_name="load_from_hub", **heavy)
        upload_button.click(load_upload, [upload_files, load_grid, *view_inputs], load_outputs,
                            api_name="load_upload", **heavy)
        reset_button.click(reset_models, view_inputs, load_outputs, api_name="reset_models", **heavy)
        demo.load(on_page_load, view_inputs, load_outputs[1:], api_name="model_info", **light)
        demo.load(refresh_benchmarks, bench_pick, [bench_pick, lat_fig, measured_table],
                  api_name="benchmark_files", api_visibility="undocumented", **light)

        scan = dict(concurrency_id="scan", concurrency_limit=2, show_progress="minimal")
        stream = dict(concurrency_limit=None, show_progress="hidden")  # watching costs nothing; one job runs
        run_outputs_list = [train_status, train_bar, loss_plot, train_preview, train_weights, runs_pick,
                            run_box, run_info]
        options = [train_steps, train_lr, train_batch, train_layers, train_every]
        gr.on([train_files.change, train_loose.submit, train_loose.blur], scan_view, [train_files, train_loose],
              [scan_text, scan_classes, scan_thumbs, scan_skipped], api_name="train_scan",
              api_description="What an upload holds: a summary, the classes with counts, thumbnails, and every "
                              "skipped file with the reason.", **scan)
        train_button.click(start_training, [train_files, train_loose, *options], run_outputs_list, api_name="train",
                           api_description="Fine-tune the active NAR model on uploaded images or zips; streams "
                                           "progress every second and ends with the final status, losses and the "
                                           "weights. Fails at once with 'server is busy' while another run trains.",
                           **stream)
        resume_button.click(resume_training, [runs_pick, *options], run_outputs_list, api_name="train_resume",
                            api_description="Continue a stopped run up to Steps (or follow the run training now).",
                            **stream)
        train_cancel.click(cancel_training, run_box, cancel_box, api_name="train_cancel",
                           api_description="Stop a run after its current step; its checkpoint is kept.", **light)
        runs_pick.input(show_run, runs_pick, [train_status, train_bar, loss_plot, train_preview, run_box, run_info],
                        api_name="train_status", api_description="The state and losses of a run.", **light)
        download_button.click(download_run, runs_pick, train_weights, api_name="train_download", **light)
        use_button.click(use_run, [runs_pick, *view_inputs], [train_note, *load_outputs[1:]], api_name="train_use",
                         api_description="Make a run's weights the active NAR model of the Generate and Compare tabs.",
                         **heavy)
        demo.load(train_overview, [runs_pick, train_layers], [runs_pick, train_note, train_layers],
                  api_name="train_runs", api_visibility="undocumented", **light)
    return demo


def theme():
    import gradio as gr
    system = ["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"]
    mono = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]
    return gr.themes.Default(primary_hue="orange", secondary_hue="blue", neutral_hue="slate", font=system,
                          font_mono=mono)


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    folder = args.checkpoints.expanduser().resolve()
    missing = missing_checkpoints(folder)
    if missing:
        sys.exit(HOW_TO_GET.format(folder=folder, missing=", ".join(missing)))
    if args.concurrency < 1:
        sys.exit("--concurrency must be at least 1")
    if args.queue_size < 1 or args.max_sessions < 1:
        sys.exit("--queue-size and --max-sessions must be at least 1")
    if args.threads is not None:
        if not 1 <= args.threads <= 1024:
            sys.exit("--threads must be between 1 and 1024")
        import torch
        torch.set_num_threads(args.threads)
    from nar.guard import AUTH_ENV, parse_auth, tune_allocator
    try:
        auth = parse_auth(args.auth if args.auth is not None else os.environ.get(AUTH_ENV))
    except ValueError as e:
        sys.exit(f"error: --auth / {AUTH_ENV}: {e}")
    logging.basicConfig(format="[%(asctime)s] %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("nar").setLevel(logging.INFO)
    tune_allocator()   # before any thread starts: keeps the RSS of a long-running server flat

    from nar.checkpoint import CheckpointError
    from nar.service import Service, warm_up

    try:
        service = Service.from_folder(folder, device=args.device)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        sys.exit(f"error: cannot load the checkpoints in {folder}: {e}")
    atexit.register(shutil.rmtree, service.out_dir, ignore_errors=True)
    from nar.training_service import TrainingService
    try:
        training = TrainingService(service, args.runs_dir)
    except OSError as e:
        sys.exit(f"error: cannot create the runs folder {args.runs_dir}: {e}")
    warm_up(service.studio)
    demo = build_app(service, args.benchmarks, args.concurrency, training)
    demo.queue(default_concurrency_limit=args.concurrency, max_size=args.queue_size)
    demo.launch(**launch_options(args, service.out_dir, auth))


def launch_options(args: argparse.Namespace, out_dir: Path, auth: list) -> dict:
    """demo.launch's arguments: loopback unless told otherwise, only the app's own output folder
    served, request bodies capped, errors shown as messages (never tracebacks)."""
    from starlette.middleware import Middleware

    from nar.guard import BodyLimit, exposure_warning, resolve_host
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
