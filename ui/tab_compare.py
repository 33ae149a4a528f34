"""The Compare tab: the race of raster, ZipAR and NAR, and the speed plots (steps vs grid size,
time per image vs batch size from benchmark files or measured now)."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from nar import plots
from nar.bench import normalise_result, read_report
from nar.classes import is_imagenet

from .benchmarks import benchmark_files, measured_table, uses_cuda_graphs
from .context import Context, session
from .inputs import PROBLEMS, ClassBox, Number, Slider, fail
from .prompts import prompt_box, subject
from .race import COMPARE_HEADERS, COMPARE_ORDERS
from .requests import MAX_FRAME_SECONDS
from .stream import ORDER_LABELS, WAITED_CAPTION, random_seed
from .zerogpu import gpu

MEASURE = "This device (press Measure)"


def bench_choices(ctx: Context) -> list[str]:
    return [p.name for p in benchmark_files(ctx.benchmarks, ctx.service.studio.device)] + [MEASURE]


def build(ctx: Context) -> SimpleNamespace:
    classes = ctx.models.class_names(COMPARE_ORDERS)      # the classes both models know
    t = SimpleNamespace()
    gr.Markdown("Raster, ZipAR and NAR decode the same class and seed. The three decoders run "
                "interleaved, always advancing the one with the least decode time so far, so every "
                "frame shows all three after the same decode time.")
    with gr.Row(equal_height=True):
        with gr.Column(visible=not ctx.models.is_text, scale=3, elem_id="cmp-class-col") as t.class_col:
            t.cls = ClassBox(classes, value=classes[0] if classes else None, label="Class",
                             allow_custom_value=is_imagenet(classes), filterable=True,
                             info=ctx.class_info(ctx.models, COMPARE_ORDERS))
        t.prompt_col, t.prompt = prompt_box(ctx.models.is_text, "cmp-prompt")
        with gr.Row(elem_id="cmp-seed-row", scale=3):
            t.seed = Number(0, label="Seed", precision=0, minimum=0, scale=3)
            t.dice = gr.Button("Random", scale=1, min_width=90, size="md")
        t.cfg = Slider(1.0, 15.0, value=4.0, step=0.25, label="CFG scale", scale=3)
    with gr.Row(equal_height=True):
        t.window = Slider(1, ctx.models.grid_size(), value=ctx.default_window(), step=1, precision=0,
                          label="ZipAR window (tokens)", scale=3,
                          info="a row starts once the row above holds this many tokens")
        t.pace = Slider(0.0, MAX_FRAME_SECONDS, value=0.0, step=0.05, scale=3,
                        label="Replay: seconds per frame",
                        info="0 = real time only; else the finished race is replayed this slowly")
        with gr.Column(scale=3, min_width=200):
            t.button = gr.Button("Compare", variant="primary")
            t.stop = gr.Button("Stop", variant="stop", size="sm")
            t.stop_note = gr.Markdown("", elem_classes="hint", label="Stop")
    t.images, t.captions = [], []
    with gr.Row(equal_height=True):
        for order in COMPARE_ORDERS:
            with gr.Column(min_width=200):
                t.images.append(gr.Image(label=ORDER_LABELS[order], format="png", interactive=False, height=280,
                                         elem_classes="panel", elem_id=f"panel-{order}", buttons=["fullscreen"],
                                         alt_text=f"{ORDER_LABELS[order]} decoding of the class, step by step"))
                t.captions.append(gr.Markdown("", elem_classes="caption", elem_id=f"caption-{order}",
                                               label=f"{ORDER_LABELS[order]} caption"))
    with gr.Row():
        t.table = gr.Dataframe(headers=COMPARE_HEADERS, label="Measured in this run", interactive=False, scale=3,
                               elem_id="compare-table", datatype=["str", "number", "number", "number", "str"])
        t.gif = gr.File(label="Side-by-side animation (GIF)", scale=1, height=90)
    with gr.Accordion("Scaling: steps and time per image", open=True):
        with gr.Row(equal_height=True):
            t.steps_fig = gr.Plot(ctx.steps_plot(ctx.default_window()), label="Steps vs grid size", format="png",
                                  show_label=False)
            t.lat_fig = gr.Plot(label="Time per image vs batch size", format="png", show_label=False)
        with gr.Row(equal_height=True):
            choices = bench_choices(ctx)
            t.bench_pick = gr.Dropdown(choices, value=choices[0], label="Timings from",
                                       info="files written by python -m nar.bench", scale=2)
            t.bench_batches = gr.CheckboxGroup([1, 2, 4, 8, 16], value=[1, 2, 4], label="Batch sizes", scale=2)
            t.measure = gr.Button("Measure", scale=1)
        t.measured = gr.Dataframe(headers=["Order", "Batch", "Time per image (ms)", "Images/s"],
                                  label="Measured now, eager decoding", interactive=False, visible=False)
    return t


def wire(ctx: Context, t: SimpleNamespace) -> None:
    service = ctx.service

    # not under spaces.GPU: Service.compare asks ZeroGPU for the decode alone (ui/zerogpu.py)
    def compare(class_name, seed: int, window: int, cfg_scale, replay_seconds_per_frame, prompt: str = "",
                request: gr.Request = None):
        key = session(request)      # the visitor's models (ui/sessions.py)
        if service.stopped_while_waiting(key):
            yield (*[gr.skip()] * len(COMPARE_ORDERS), *[WAITED_CAPTION] * len(COMPARE_ORDERS), gr.skip(), gr.skip())
            return
        try:
            wanted = subject(service.models_for(key), class_name, prompt)   # a text model takes the prompt
            checked = service.request(COMPARE_ORDERS, session=key, class_name=wanted, seed=seed, window=window,
                                      cfg_scale=cfg_scale)
            for u in service.compare(checked, replay_seconds_per_frame, session=key):
                images = [u.frames[o] for o in COMPARE_ORDERS]
                captions = [u.captions[o] for o in COMPARE_ORDERS]
                if u.done:
                    yield (*images, *captions, u.rows, str(u.gif) if u.gif else None)
                else:  # the table and GIF of the previous race clear as this one starts (see generate)
                    yield (*images, *captions, None, None)
        except PROBLEMS as e:
            raise fail(e) from None

    def show_benchmark(name):
        if not name or name == MEASURE:
            return (plots.message_figure("Press “Measure” to time the three orders on this device."),
                    gr.update(visible=False))
        path = ctx.benchmarks / Path(name).name
        try:
            device, rows = read_report(path)
        except ValueError as e:
            return plots.message_figure(str(e)), gr.update(visible=False)
        if not rows:
            return plots.message_figure(f"{path.name} holds no usable timings."), gr.update(visible=False)
        graphs = ", CUDA graphs" if uses_cuda_graphs(path) else ""
        return (plots.latency_figure(rows, f"Time per image vs batch size on {device} ({path.name}{graphs})"),
                gr.update(visible=False))

    def refresh_benchmarks(current):
        # python -m nar.bench may have written new files since the app started
        names = bench_choices(ctx)
        value = current if current in names else names[0]
        return (gr.update(choices=names, value=value), *show_benchmark(value))

    @gpu(duration=120)
    def measure(batches, window, progress=gr.Progress(), request: gr.Request = None):
        try:
            rows = service.measure(list(batches or []), window, progress=lambda f, m: progress(f, desc=m),
                                   session=session(request))
        except PROBLEMS as e:
            raise fail(e) from None
        norm = [normalise_result(r) for r in rows]
        fig = plots.latency_figure([r for r in norm if r], f"Time per image vs batch size, measured now (eager decoding) on "
                                                           f"{ctx.models_for(request).device_label()}")
        return fig, gr.update(value=measured_table(rows), visible=True), gr.update(value=MEASURE)

    t.dice.click(random_seed, None, t.seed, api_name="random_seed_compare", **ctx.light)
    event = t.button.click(
        compare, [t.cls, t.seed, t.window, t.cfg, t.pace, t.prompt], [*t.images, *t.captions, t.table, t.gif],
        api_name="compare",
        api_description="Raster, ZipAR and NAR on the same class and seed, interleaved by decode time; "
                        "returns the final images, captions and a table of steps, seconds and images/s.",
        show_progress="minimal", **ctx.heavy)
    def stop(request: gr.Request = None) -> str:
        return service.stop(session(request), ctx.waiting(request))

    t.stop.click(stop, None, t.stop_note,
                 api_name="stop_compare", api_description="Stop this client's race; it ends with each decoder's "
                 "state and a caption saying where it stopped.", **ctx.light)
    t.window.release(ctx.steps_plot, t.window, t.steps_fig, api_name="steps_plot", **ctx.light)
    t.bench_pick.input(show_benchmark, t.bench_pick, [t.lat_fig, t.measured], api_name="benchmark_plot", **ctx.light)
    t.measure.click(measure, [t.bench_batches, t.window], [t.lat_fig, t.measured, t.bench_pick], api_name="measure",
                    show_progress_on=t.lat_fig, **ctx.heavy)
    t.refresh_benchmarks = refresh_benchmarks     # run on page load (ui/layout.py)
