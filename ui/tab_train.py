"""The Train tab: an upload's classes, fine-tuning with live progress, and the runs on this server."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Optional

import gradio as gr

from nar.finetune import OPTION_RANGES, shown

from .context import Context, session
from .inputs import PROBLEMS, Number, Slider, fail
from .training import DEFAULTS, Busy
from .training_view import loss_frame, progress_html
from . import zerogpu


def build(ctx: Context) -> SimpleNamespace:
    if zerogpu.active():
        gr.Markdown("**On this ZeroGPU Space fine-tuning runs on the CPU** (the GPU is lent per request, "
                    "never to a background job): keep runs short.", elem_id="train-cpu-note")
    gr.Markdown("Teach the active NAR model new images. Upload PNG, JPEG or WebP files, or a zip with "
                "one folder per class (the folder names the class). New class names get new rows in "
                "the class table; names the model knows keep theirs. Images are centre-cropped to "
                f"squares and resized to the tokenizer's {ctx.models.image_size()} px before training.")
    with gr.Row():
        with gr.Column(scale=2, min_width=340):
            # any file type: one unsupported file would make Gradio refuse the whole upload;
            # the scan uses the good files and lists the others as skipped with the reason
            train_files = gr.File(label="Images (PNG, JPEG, WebP), or a zip of class folders",
                                  file_count="multiple", height=150, elem_id="train-files")
            train_loose = gr.Textbox(label="Class name for loose images", placeholder="e.g. star",
                                     info="images that are not inside a class folder of a zip",
                                     max_lines=1)
            gr.Markdown(f"Limits: {ctx.training.limits_text()}.", elem_classes="hint", elem_id="train-limits")
            with gr.Accordion("Training options", open=True):
                with gr.Row():
                    train_steps = Slider(*OPTION_RANGES["steps"], value=DEFAULTS.steps, step=1, label="Steps")
                    train_batch = Slider(*OPTION_RANGES["batch_size"], value=DEFAULTS.batch_size, step=1,
                                         label="Batch size")
                with gr.Row():
                    lo, hi = OPTION_RANGES["lr"]
                    train_lr = Number(DEFAULTS.lr, label="Learning rate", minimum=lo, maximum=hi,
                                      info=f"{shown(lo)} to {shown(hi)}; warm-up, then cosine decay",
                                      elem_id="train-lr")
                    train_every = Number(DEFAULTS.preview_every, label="Preview and checkpoint every",
                                         precision=0, minimum=OPTION_RANGES["preview_every"][0],
                                         maximum=OPTION_RANGES["preview_every"][1], info="steps",
                                         elem_id="train-every")
                train_layers = gr.Dropdown(ctx.training.layer_choices(), value=DEFAULTS.train_layers,
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
                                height=260, scale=3, x_title="step", x_axis_format="d", y_title="cross-entropy (nats/token)",
                                color_title="", elem_id="loss-plot",
                                color_map={"loss per step": "#94a3b8", "moving average": "#ea580c"})
        train_preview = gr.Image(label="NAR samples (every few steps while training)", format="png",
                                 interactive=False, height=260, scale=2, elem_id="train-preview",
                                 buttons=["download", "fullscreen"])
    gr.Markdown("### Runs")
    with gr.Row(elem_id="runs-row"):
        runs = ctx.training.run_choices()
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

    return SimpleNamespace(
        cancel_box=cancel_box, download_button=download_button, loss_plot=loss_plot,
        resume_button=resume_button, run_box=run_box, run_info=run_info, runs_pick=runs_pick,
        scan_classes=scan_classes, scan_skipped=scan_skipped, scan_text=scan_text, scan_thumbs=scan_thumbs,
        train_bar=train_bar, train_batch=train_batch, train_button=train_button, train_cancel=train_cancel,
        train_every=train_every, train_files=train_files, train_layers=train_layers,
        train_loose=train_loose, train_lr=train_lr, train_note=train_note, train_preview=train_preview,
        train_status=train_status, train_steps=train_steps, train_weights=train_weights,
        use_button=use_button)


def wire(ctx: Context, t: SimpleNamespace) -> None:
    def scan_view(files, loose_class):
        s = ctx.training.scan(files, loose_class)
        return (s.text, gr.update(value=s.classes, visible=bool(s.classes)),
                gr.update(value=s.thumbnails or None, visible=bool(s.thumbnails)),
                gr.update(value=s.skipped, visible=bool(s.skipped)))

    def runs_update(value: Optional[str] = None):
        choices = ctx.training.run_choices()
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
        for view in ctx.training.watch(job):
            if not view.finished:
                yield run_outputs(view, shown, [] if first else None)   # the first update hides old weights
                first = False
        try:
            files = [str(f) for f in ctx.training.downloads(view.run_id)]
        except ValueError:
            files = []
        yield run_outputs(view, shown, files, runs_update(view.run_id))
        if view.status == "failed":
            raise gr.Error(f"run {view.run_id} failed: {view.info.get('message') or 'see the server log'}",
                           title="Training failed", print_exception=False)

    def start_training(files, loose_class, steps, lr, batch_size, layers, preview_every, request: gr.Request = None):
        ctx.check_unlocked()
        key = session(request)       # the run is this visitor's (only they cancel it)
        try:
            options = ctx.training.options(steps, lr, batch_size, layers, preview_every, session=key)
            job = ctx.training.start(files, loose_class, options, session=key)
        except Busy as e:
            raise gr.Error(str(e), title="Server busy", print_exception=False) from None
        except PROBLEMS as e:
            raise fail(e) from None
        yield from follow(job)

    def resume_training(run_id, steps, lr, batch_size, layers, preview_every, request: gr.Request = None):
        ctx.check_unlocked()
        key = session(request)
        try:
            job = ctx.training.resume(run_id, ctx.training.options(steps, lr, batch_size, layers, preview_every,
                                                                   session=key), session=key)
        except Busy as e:
            raise gr.Error(str(e), title="Server busy", print_exception=False) from None
        except PROBLEMS as e:
            raise fail(e) from None
        yield from follow(job)

    def cancel_training(run_id, request: gr.Request = None):
        try:
            message = ctx.training.cancel(run_id, session=session(request))
        except ValueError as e:
            raise fail(e) from None
        gr.Info(message)
        return message

    def show_run(run_id):
        try:
            view = ctx.training.view(run_id)
        except ValueError as e:
            raise fail(e) from None
        return run_outputs(view, {"preview": -1})[:4] + (view.run_id, view.info)

    def download_run(run_id):
        try:
            return [str(f) for f in ctx.training.downloads(run_id)]
        except PROBLEMS as e:
            raise fail(e) from None

    def use_run(run_id, gen_class, cmp_class, gen_window, cmp_window, request: gr.Request = None):
        ctx.check_unlocked()   # main process, never under spaces.GPU (a worker's copy would change)
        try:
            message = ctx.training.use(run_id, session=session(request))
        except PROBLEMS as e:
            raise fail(e) from None
        return (message, *ctx.refresh(gen_class, cmp_class, gen_window, cmp_window, request=request))

    def train_overview(current_run, layers, request: gr.Request = None):
        job = ctx.training.manager.current
        note = ""
        if job is not None and job.thread.is_alive():
            note = (f"A training job is running on this server now (run {job.run_id}, step {job.state.step}/"
                    f"{job.state.total_steps}). Pick it under **Runs** and press **Resume** to follow it.")
        else:
            note = ctx.training.interrupted_note()
        try:
            choices = ctx.training.layer_choices(session(request))
        except ValueError:   # the session's own model was dropped: the refresh says so
            choices = ctx.training.layer_choices()
        runs = runs_update(current_run)
        picked = runs.get("value")
        shown = (gr.skip(),) * 5
        if picked:    # a reloaded page shows the latest run's state and its whole loss curve
            try:
                view = ctx.training.view(picked)
                shown = run_outputs(view, {"preview": -1})[:3] + (view.run_id, view.info)
            except ValueError:
                pass
        return (runs, note,
                gr.update(choices=choices, value=layers if layers in [v for _, v in choices] else "all"), *shown)

    scan = dict(concurrency_id="scan", concurrency_limit=2, show_progress="minimal")
    stream = dict(concurrency_limit=None, show_progress="hidden")  # watching costs nothing; one job runs
    light = ctx.light
    run_outputs_list = [t.train_status, t.train_bar, t.loss_plot, t.train_preview, t.train_weights, t.runs_pick,
                        t.run_box, t.run_info]
    options = [t.train_steps, t.train_lr, t.train_batch, t.train_layers, t.train_every]
    gr.on([t.train_files.change, t.train_loose.submit, t.train_loose.blur], scan_view, [t.train_files, t.train_loose],
          [t.scan_text, t.scan_classes, t.scan_thumbs, t.scan_skipped], api_name="train_scan",
          api_description="What an upload holds: a summary, the classes with counts, thumbnails, and every "
                          "skipped file with the reason.", **scan)
    t.train_button.click(start_training, [t.train_files, t.train_loose, *options], run_outputs_list, api_name="train",
                         api_description="Fine-tune the active NAR model on uploaded images or zips; streams "
                                         "progress every second and ends with the final status, losses and the "
                                         "weights. Fails at once with 'server is busy' while another run trains.",
                         **stream)
    t.resume_button.click(resume_training, [t.runs_pick, *options], run_outputs_list, api_name="train_resume",
                          api_description="Continue a stopped run up to Steps (or follow the run training now).",
                          **stream)
    t.train_cancel.click(cancel_training, t.run_box, t.cancel_box, api_name="train_cancel",
                         api_description="Stop a run after its current step; its checkpoint is kept.", **light)
    t.runs_pick.input(show_run, t.runs_pick, [t.train_status, t.train_bar, t.loss_plot, t.train_preview, t.run_box,
                                              t.run_info],
                      api_name="train_status", api_description="The state and losses of a run.", **light)
    t.download_button.click(download_run, t.runs_pick, t.train_weights, api_name="train_download", **light)
    t.use_button.click(use_run, [t.runs_pick, *ctx.view_inputs()], [t.train_note, *ctx.view_outputs()],
                       api_name="train_use",
                       api_description="Make a run's weights the active NAR model of the Generate and Compare tabs.",
                       **ctx.heavy)
    t.overview = train_overview     # run on page load (ui/layout.py)
