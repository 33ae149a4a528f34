"""The Video tab: a motion class, an order and the sampling; the clip's T frames side by side
stream while it decodes (undecoded tokens blank, the front plane outlined in every frame at once;
the decoder never waits for the view), then the clip as GIF and MP4, a step slider over the kept
steps, and the NAR vs raster race for clips. The logic is ui/video.py's."""
from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from .context import Context, session
from .inputs import PROBLEMS, ClassBox, Number, Slider, fail, sampling_inputs
from .stream import ORDER_LABELS, random_seed
from .video import MAX_CLIPS, RACE_HEADERS, RACE_ORDERS

INTRO = ("A clip is a T x H x W grid of tokens; NAR decodes the whole plane t + h + w = c at step c, so the front "
         "sweeps through space and time at once: {nar} steps where raster needs {raster}.")


def video_facts(ctx: Context) -> tuple[list[str], int, int, str]:
    """The motion classes, the frames' token side, raster's steps and the tab's note, from the server's
    video models."""
    video = ctx.service.video
    if video is None:
        return [], 8, 2, f"**No video models are loaded.** {ctx.service.video_note[:1].upper()}{ctx.service.video_note[1:]}."
    loaded = next(iter(video.models.values()))
    frames, n, _ = loaded.model.config.grid_shape
    note = INTRO.format(nar=frames + 2 * n - 2, raster=frames * n * n)
    if ctx.service.video_note:
        note += f" ({ctx.service.video_note}.)"
    return list(loaded.class_names), n, frames * n * n, note


def build(ctx: Context) -> SimpleNamespace:
    classes, n, steps, note = video_facts(ctx)
    ready = ctx.service.video is not None
    t = SimpleNamespace()
    t.note = gr.Markdown(note, elem_id="video-note")
    with gr.Row():
        with gr.Column(scale=1, min_width=320):
            t.cls = ClassBox(classes, value=classes[0] if classes else None, label="Motion", filterable=True,
                             info=f"one of the {len(classes)} motions of the video models", elem_id="video-class")
            with gr.Row(elem_id="video-seed-row"):
                t.seed = Number(0, label="Seed", precision=0, scale=3, minimum=0)
                t.dice = gr.Button("Random", scale=1, min_width=90, size="md")
            t.num = Slider(1, MAX_CLIPS, value=1, step=1, precision=0, label="Number of clips")
            t.order = gr.Radio([("NAR (plane front)", "nar"), ("Raster", "raster"), ("ZipAR", "zipar")],
                               value="nar", label="Decoding order", elem_id="video-order")
            t.window = Slider(1, n, value=min(4, n), step=1, precision=0, label="ZipAR window (tokens)",
                              info="a row starts once the row above holds this many tokens", visible=False)
            t.cfg, t.cfg_interval, t.temperature, t.top_k, t.top_p = sampling_inputs(3.0, 0)
            with gr.Row():
                t.button = gr.Button("Generate clip", variant="primary", scale=3, min_width=120,
                                     elem_id="video-button", interactive=ready)
                t.stop = gr.Button("Stop", variant="stop", scale=1, min_width=60, elem_id="video-stop")
            t.stop_note = gr.Markdown("", elem_classes="hint", label="Stop", elem_id="video-stop-note")
        with gr.Column(scale=2):
            t.live = gr.Image(label="Decoding: the frames side by side", format="png", interactive=False,
                              height=240, elem_id="video-live", buttons=["download", "fullscreen"],
                              alt_text="The clip's frames being decoded: decoded tokens shown, undecoded ones "
                                       "blank, the front plane outlined in every frame")
            t.caption = gr.Markdown("Pick a motion and press **Generate clip**.", elem_id="video-caption",
                                    elem_classes="caption", label="Caption")
            # the API checks the slider's range as built: up to the longest decode (raster's); a decode narrows it
            t.scrub = Slider(1, max(2, steps), value=1, step=1, precision=0, label="Step", interactive=False,
                             elem_id="video-scrub", info="after a decode: any kept step, drawn from its tokens")
            with gr.Row():
                t.gif = gr.Image(label="The clip (GIF)", interactive=False, height=160, elem_id="video-gif")
                t.mp4 = gr.File(label="The clip (MP4)", elem_id="video-mp4", height=90)
    t.result = gr.State(None)
    with gr.Accordion("Race: NAR vs raster on the same motion and seed", open=True):
        gr.Markdown("Both decoders run interleaved by their own decode time, so every frame shows both after "
                    "the same decode time (the motion, seed and CFG above).", elem_classes="hint")
        with gr.Row():
            t.race = gr.Button("Race", variant="primary", elem_id="video-race", interactive=ready)
            t.race_stop = gr.Button("Stop", variant="stop", size="sm")
        t.race_images, t.race_captions = [], []
        with gr.Row(equal_height=True):
            for order in RACE_ORDERS:
                with gr.Column(min_width=200):
                    t.race_images.append(gr.Image(label=ORDER_LABELS[order], format="png", interactive=False,
                                                  height=160, elem_classes="panel", elem_id=f"video-panel-{order}"))
                    t.race_captions.append(gr.Markdown("", elem_classes="caption", label=f"{ORDER_LABELS[order]} caption",
                                                       elem_id=f"video-caption-{order}"))
        t.race_table = gr.Dataframe(headers=RACE_HEADERS, label="Measured in this race", interactive=False,
                                    elem_id="video-race-table", datatype=["str", "number", "number", "number", "str"])
    return t


def wire(ctx: Context, t: SimpleNamespace) -> None:
    service = ctx.service

    def generate_video(motion, num_clips: int, seed: int, order, window: int, cfg_scale, cfg_interval: int,
                       temperature, top_k: int, top_p, request: gr.Request = None):
        key = session(request)
        try:
            checked = service.video_request([order], class_name=motion, num_clips=num_clips, window=window,
                                            cfg_scale=cfg_scale, cfg_interval=cfg_interval, temperature=temperature,
                                            top_k=top_k, top_p=top_p, seed=seed)
            for u in service.generate_video(checked, session=key):
                if u.done:
                    yield u.frame, u.caption, str(u.gif), str(u.mp4), u.summary.get("result_id")
                else:      # the previous clip clears as this one starts (None, not gr.skip(): see Generate)
                    yield u.frame, u.caption, None, None, None
        except PROBLEMS as e:
            raise fail(e) from None

    def after_video(result_id, request: gr.Request = None):
        if not result_id:
            return gr.update()
        try:
            kept = service.results.get(result_id, session(request)).kept
        except ValueError as e:
            raise fail(e) from None
        return gr.update(minimum=1, maximum=max(2, kept.done), value=kept.done, interactive=kept.done > 0)

    def show_video_step(result_id, step: int, request: gr.Request = None):
        try:
            return service.scrub_video(result_id, step, session=session(request))
        except PROBLEMS as e:
            raise fail(e) from None

    def race_video(motion, seed: int, cfg_scale, request: gr.Request = None):
        key = session(request)
        try:
            checked = service.video_request(RACE_ORDERS, class_name=motion, seed=seed, cfg_scale=cfg_scale)
            for u in service.race_video(checked, session=key):
                images = [u.frames[o] for o in RACE_ORDERS]
                captions = [u.captions[o] for o in RACE_ORDERS]
                yield (*images, *captions, u.rows if u.done else None)
        except PROBLEMS as e:
            raise fail(e) from None

    def stop(request: gr.Request = None) -> str:
        return service.stop(session(request))

    t.dice.click(random_seed, None, t.seed, api_name="random_seed_video", **ctx.light)
    t.order.change(lambda o: gr.update(visible=o == "zipar"), t.order, t.window,
                   api_name="video_order_changed", api_visibility="undocumented", **ctx.light)
    inputs = [t.cls, t.num, t.seed, t.order, t.window, t.cfg, t.cfg_interval, t.temperature, t.top_k, t.top_p]
    event = t.button.click(
        generate_video, inputs, [t.live, t.caption, t.gif, t.mp4, t.result], api_name="generate_video",
        api_description="Decode clips of a motion. Streams the newest decoded step (the T frames side by side) "
                        "while the decoder runs at full speed, then the clip as GIF and MP4. Stop it with "
                        "/stop_video from the same client.", show_progress="minimal", trigger_mode="always_last",
        **ctx.heavy)
    event.then(after_video, t.result, t.scrub, api_name="after_video", api_visibility="undocumented", **ctx.light)
    t.stop.click(stop, None, t.stop_note, api_name="stop_video",
                 api_description="Stop this client's running clip decode or race; it ends at its next step and "
                                 "the caption says where it stopped.", **ctx.light)
    t.scrub.input(show_video_step, [t.result, t.scrub], [t.live, t.caption], trigger_mode="always_last",
                  api_name="show_video_step", api_description="The last clip after a step, drawn from its kept "
                  "tokens (nothing decoded again).", **ctx.light)
    t.race.click(race_video, [t.cls, t.seed, t.cfg], [*t.race_images, *t.race_captions, t.race_table],
                 api_name="race_video", api_description="Raster and NAR decode the same motion and seed, "
                 "interleaved by decode time; the last update has a table of steps, seconds and clips/s.",
                 show_progress="minimal", **ctx.heavy)
    t.race_stop.click(stop, None, t.stop_note, api_name="stop_video_race", api_visibility="undocumented",
                      **ctx.light)
