"""The Generate tab: a class, an order and the sampling; the picture streams while it decodes."""
from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from .context import Context, session
from .inputs import PROBLEMS, Number, Slider, fail
from .requests import MAX_FRAME_SECONDS
from .stream import random_seed


def build(ctx: Context) -> SimpleNamespace:
    classes = ctx.models.class_names()
    t = SimpleNamespace()
    with gr.Row():
        with gr.Column(scale=1, min_width=320):
            t.cls = gr.Dropdown(classes, value=classes[0] if classes else None, label="Class",
                                allow_custom_value=True, filterable=True)
            with gr.Row(elem_id="seed-row"):
                t.seed = Number(0, label="Seed", precision=0, scale=3, minimum=0)
                t.dice = gr.Button("Random", scale=1, min_width=90, size="md")
            t.num = Slider(1, 8, value=1, step=1, label="Number of images")
            t.order = gr.Radio([("NAR (diagonal front)", "nar"), ("Raster", "raster"), ("ZipAR", "zipar")],
                               value="nar", label="Decoding order")
            t.window = Slider(1, ctx.models.grid_size(), value=ctx.default_window(), step=1,
                              label="ZipAR window (tokens)",
                              info="a row starts once the row above holds this many tokens", visible=False)
            with gr.Accordion("Sampling", open=False):
                t.cfg = Slider(1.0, 15.0, value=4.0, step=0.25, label="CFG scale",
                               info="classifier-free guidance; 1 = off")
                t.cfg_interval = Number(-1, label="CFG interval (tokens)", precision=0,
                                        info="guidance stops after this many tokens; -1 = always")
                t.temperature = Slider(0.05, 2.0, value=1.0, step=0.05, label="Temperature")
                with gr.Row():
                    t.top_k = Number(2000, label="Top-k", precision=0, info="0 = off", minimum=0)
                    t.top_p = Slider(0.05, 1.0, value=1.0, step=0.01, label="Top-p", info="1 = off")
            t.pace = Slider(0.0, MAX_FRAME_SECONDS, value=0.1, step=0.05, label="Playback: minimum seconds per frame",
                            info="slows the live view so the front can be followed; never counted in the decode time")
            with gr.Row():
                t.button = gr.Button("Generate", variant="primary", scale=3, min_width=120)
                t.stop = gr.Button("Stop", variant="stop", scale=1, min_width=60)
        with gr.Column(scale=2):
            t.live = gr.Image(label="Decoding (undecoded tokens blank, front outlined)", format="png",
                              interactive=False, height=360, elem_id="live", buttons=["download", "fullscreen"])
            t.caption = gr.Markdown("Pick a class and press **Generate**.", elem_id="gen-caption",
                                    elem_classes="caption")
            t.gallery = gr.Gallery(label="Final images (model resolution)", columns=4, height=220,
                                   object_fit="contain", elem_id="final-gallery", format="png", fit_columns=False,
                                   buttons=["download", "download_all", "fullscreen"])
            with gr.Row():
                t.gif = gr.File(label="Animation (GIF)", elem_id="gen-gif", height=90)
                t.mp4 = gr.File(label="Animation (MP4)", elem_id="gen-mp4", height=90)
    return t


def wire(ctx: Context, t: SimpleNamespace) -> None:
    service = ctx.service

    # not under spaces.GPU: Service.generate asks ZeroGPU for the decode alone (ui/zerogpu.py)
    def generate(class_name, num_images, seed, order, window, cfg_scale, cfg_interval, temperature,
                 top_k, top_p, seconds_per_frame, request: gr.Request = None):
        key = session(request)      # the visitor's models (ui/sessions.py)
        try:
            checked = service.request([order], session=key, class_name=class_name, num_images=num_images,
                                      window=window, cfg_scale=cfg_scale, cfg_interval=cfg_interval,
                                      temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
            for u in service.generate(checked, seconds_per_frame, session=key):
                if u.done:
                    yield (u.frame, u.caption, [(str(p), label) for p, label in zip(u.images, u.labels)],
                           str(u.gif), str(u.mp4) if u.mp4 else None)
                else:  # the previous results are cleared as the new decode starts. (Not gr.skip():
                    # Gradio builds a new component for every skipped output of every frame, and
                    # that cost memory on each request in the load test; None costs nothing.)
                    yield u.frame, u.caption, None, None, None
        except PROBLEMS as e:
            raise fail(e) from None

    t.dice.click(random_seed, None, t.seed, api_name="random_seed", **ctx.light)
    t.order.change(lambda o: gr.update(visible=o == "zipar"), t.order, t.window,
                   api_name="order_changed", api_visibility="undocumented", **ctx.light)
    event = t.button.click(
        generate, [t.cls, t.num, t.seed, t.order, t.window, t.cfg, t.cfg_interval, t.temperature, t.top_k,
                   t.top_p, t.pace],
        [t.live, t.caption, t.gallery, t.gif, t.mp4], api_name="generate",
        api_description="Decode images of a class; streams one frame per step, returns the final "
                        "images and the animation (GIF, MP4).", show_progress="minimal", **ctx.heavy)
    t.stop.click(None, None, None, cancels=[event], api_name="stop_generate", api_visibility="undocumented")
