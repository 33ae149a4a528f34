"""The Generate tab: a class (a prompt, for text models), an order and the sampling; the picture streams while it decodes
(the decoder never waits for it); then a step slider over the kept steps, a confidence overlay,
the session's history of results, and a link that restores a result's parameters."""
from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from nar.classes import is_imagenet

from .context import Context, session
from .sessions import SessionModelGone
from .history import EXAMPLES, History, query_values
from .inputs import PROBLEMS, ClassBox, Number, Slider, fail, sampling_inputs
from .live import ANIMATION_STEPS
from .prompts import prompt_box, subject
from .requests import MAX_FRAME_SECONDS
from .results import share_query
from .stream import WAITED_CAPTION, random_seed


def pick_index(evt: gr.SelectData):
    return evt.index


def build(ctx: Context) -> SimpleNamespace:
    classes = ctx.models.class_names()
    t = SimpleNamespace()
    with gr.Row():
        with gr.Column(scale=1, min_width=320):
            with gr.Column(visible=not ctx.models.is_text, elem_id="gen-class-col") as t.class_col:
                t.cls = ClassBox(classes, value=classes[0] if classes else None, label="Class",
                                 allow_custom_value=is_imagenet(classes), filterable=True,
                                 info=ctx.class_info(ctx.models))
            t.prompt_col, t.prompt = prompt_box(ctx.models.is_text, "gen-prompt")
            with gr.Row(elem_id="seed-row"):
                t.seed = Number(0, label="Seed", precision=0, scale=3, minimum=0)
                t.dice = gr.Button("Random", scale=1, min_width=90, size="md")
            t.num = Slider(1, 8, value=1, step=1, precision=0, label="Number of images")
            t.order = gr.Radio([("NAR (diagonal front)", "nar"), ("Raster", "raster"), ("ZipAR", "zipar")],
                               value="nar", label="Decoding order", elem_id="gen-order")
            t.window = Slider(1, ctx.models.grid_size(), value=ctx.default_window(), step=1, precision=0,
                              label="ZipAR window (tokens)",
                              info="a row starts once the row above holds this many tokens", visible=False)
            t.cfg, t.cfg_interval, t.temperature, t.top_k, t.top_p = sampling_inputs(4.0, 2000)
            t.pace = Slider(0.0, MAX_FRAME_SECONDS, value=0.0, step=0.05, label="Replay: seconds per step",
                            info="0 = real time only. Otherwise, after the decode (at full speed) the view "
                                 "replays every step this slowly, so the front can be followed")
            with gr.Row():
                t.button = gr.Button("Generate", variant="primary", scale=3, min_width=120, elem_id="gen-button")
                t.stop = gr.Button("Stop", variant="stop", scale=1, min_width=60, elem_id="gen-stop")
            t.stop_note = gr.Markdown("", elem_classes="hint", label="Stop", elem_id="gen-stop-note")
        with gr.Column(scale=2):
            t.live = gr.Image(label="Decoding", format="png",
                              interactive=False, height=360, elem_id="live", buttons=["download", "fullscreen"],
                              alt_text="The images being decoded: decoded tokens shown, undecoded ones blank, "
                                       "the current front outlined")
            t.caption = gr.Markdown("Pick a class and press **Generate**. The view shows the newest step "
                                    "(undecoded tokens blank, the front outlined) while the decoder runs at "
                                    "full speed.", elem_id="gen-caption", elem_classes="caption",
                                    label="Caption")
            with gr.Row(elem_id="scrub-row"):
                # its maximum is the most steps a decode of these models takes (raster's n x n), so a
                # client of the API can scrub any step; the page narrows it to each decode's steps
                t.scrub = Slider(1, max(2, ctx.models.grid_size() ** 2), value=1, step=1, precision=0, label="Step",
                                 interactive=False, scale=3,
                                 elem_id="scrub", info="after a decode: any kept step, drawn from its tokens (nothing decoded again)")
                t.overlay = gr.Checkbox(False, label="Confidence overlay", scale=1, elem_id="overlay",
                                        info="probability of each sampled token: red low, green high")
            t.gallery = gr.Gallery(label="Final images (model resolution)", columns=4, height=220,
                                   object_fit="contain", elem_id="final-gallery", format="png", fit_columns=False,
                                   buttons=["download", "download_all", "fullscreen"])
            with gr.Row():
                t.gif = gr.File(label="Animation (GIF)", elem_id="gen-gif", height=90)
                t.mp4 = gr.File(label="Animation (MP4)", elem_id="gen-mp4", height=90)
            gr.Markdown(f"The animations show at most {ANIMATION_STEPS} evenly spaced steps and the last "
                        "(all 256 raster steps would be a film nobody watches), at 2x, drawn from the final "
                        "images; the step slider shows every step.", elem_classes="hint")
            t.share = gr.Markdown("", elem_id="share-link", label="Share link")
    t.result = gr.State(None)              # the id of the shown result (Service.results)
    t.history_state = gr.State([])         # this session's results, newest first
    t.picked = gr.State(None)
    with gr.Accordion("History and examples", open=True, elem_id="history"):
        with gr.Row():
            t.examples = [gr.Button(f"{e['class']} · seed {e['seed']} · {e['order']}", size="sm",
                                    elem_classes="example") for e in EXAMPLES if e["class"] in classes]
        t.history = gr.Gallery(label="This session's results (pick one)", columns=6, height=200, allow_preview=False,
                               fit_columns=False,    # (Gradio's default: one column per result, so one
                                                     # result filled the whole width, blurred)
                               object_fit="contain", elem_id="history-gallery", format="png")
        with gr.Row():
            t.restore = gr.Button("Restore its parameters", size="sm", elem_id="restore")
            t.to_compare = gr.Button("Send to Compare", size="sm", elem_id="to-compare")
    return t


def wire(ctx: Context, t: SimpleNamespace) -> None:
    service = ctx.service

    # not under spaces.GPU: Service.generate asks ZeroGPU for the decode alone (ui/zerogpu.py)
    def generate(class_name, num_images: int, seed: int, order, window: int, cfg_scale, cfg_interval: int,
                 temperature, top_k: int, top_p, replay_seconds_per_step, prompt: str = "",
                 request: gr.Request = None):
        key = session(request)      # the visitor's models (ui/sessions.py)
        if service.stopped_while_waiting(key):
            yield gr.skip(), WAITED_CAPTION, gr.skip(), gr.skip(), gr.skip(), None
            return
        try:
            wanted = subject(service.models_for(key), class_name, prompt)   # a text model takes the prompt
            checked = service.request([order], session=key, class_name=wanted, num_images=num_images,
                                      window=window, cfg_scale=cfg_scale, cfg_interval=cfg_interval,
                                      temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
            for u in service.generate(checked, replay_seconds_per_step, session=key):
                if u.done:
                    yield (u.frame, u.caption, [(str(p), label) for p, label in zip(u.images, u.labels)],
                           str(u.gif) if u.gif else None, str(u.mp4) if u.mp4 else None,
                           u.summary.get("result_id"))
                else:  # the previous results are cleared as the new decode starts. (Not gr.skip():
                    # Gradio builds a new component for every skipped output of every frame, and
                    # that cost memory on each request in the load test; None costs nothing.)
                    yield u.frame, u.caption, None, None, None, None
        except PROBLEMS as e:
            raise fail(e) from None

    def stop(request: gr.Request = None) -> str:
        return service.stop(session(request), ctx.waiting(request))

    def show_step(result_id, step: int, confidence_overlay: bool, request: gr.Request = None):
        try:
            return service.scrub(result_id, step, bool(confidence_overlay), session=session(request))
        except PROBLEMS as e:
            raise fail(e) from None

    def after_generate(result_id, history, request: gr.Request = None):
        """The scrubber over the new result's kept steps, the history and the share link."""
        if not result_id:
            return gr.update(), history, gr.update(), ""
        try:
            result = service.results.get(result_id, session(request))
        except ValueError as e:
            raise fail(e) from None
        history = History(history).add(result)
        return (gr.update(minimum=1, maximum=max(2, result.kept.done), value=result.kept.done,
                          interactive=result.kept.done > 0),
                history.entries, history.gallery(),
                f"[Link to these parameters]({share_query(result.params)}) · {result.caption}")

    t.dice.click(random_seed, None, t.seed, api_name="random_seed", **ctx.light)
    t.order.change(lambda o: gr.update(visible=o == "zipar"), t.order, t.window,
                   api_name="order_changed", api_visibility="undocumented", **ctx.light)
    inputs = [t.cls, t.num, t.seed, t.order, t.window, t.cfg, t.cfg_interval, t.temperature, t.top_k, t.top_p]
    event = t.button.click(
        generate, [*inputs, t.pace, t.prompt],
        [t.live, t.caption, t.gallery, t.gif, t.mp4, t.result], api_name="generate",
        api_description="Decode images of a class (a text model: of the prompt). Streams the newest decoded step "
                        "while the decoder runs at full speed, then the final images, then the animation (GIF, "
                        "MP4). Stop it with /stop_generate from the same client.", show_progress="minimal",
        trigger_mode="always_last", **ctx.heavy)   # a click while the files are written runs next
    event.then(after_generate, [t.result, t.history_state], [t.scrub, t.history_state, t.history, t.share],
               api_name="after_generate", api_visibility="undocumented", **ctx.light)
    t.stop.click(stop, None, t.stop_note, api_name="stop_generate",
                 api_description="Stop this client's running decode; it ends at its next step with the images "
                                 "so far, the caption says where it stopped. Its requests still waiting in the "
                                 "queue end as they begin, without decoding.", **ctx.light)
    gr.on([t.scrub.input, t.overlay.input], show_step, inputs=[t.result, t.scrub, t.overlay],
          outputs=[t.live, t.caption], trigger_mode="always_last",
          api_name="show_step", api_description="The picture of the last result after a step, drawn from its "
          "kept tokens, optionally with the sampled tokens' probabilities as a heat map.", **ctx.light)
    t.history.select(pick_index, None, t.picked, api_name="pick_result", api_visibility="undocumented",
                     **ctx.light)
    t.restore.click(lambda i, h: History(h).restore(i), [t.picked, t.history_state], [*inputs, t.prompt],
                    api_name="restore_result", api_visibility="undocumented", **ctx.light)
    t.to_compare.click(lambda i, h: History(h).to_compare(i), [t.picked, t.history_state], ctx.compare_inputs(),
                       api_name="send_to_compare", api_visibility="undocumented", **ctx.light)
    for i, (button, example) in enumerate(zip(t.examples, [e for e in EXAMPLES if e["class"] in
                                                           ctx.models.class_names()])):
        button.click(lambda e=example: History.values(e), None, [*inputs, t.prompt], api_name=f"example_{i}",
                     api_visibility="undocumented", **ctx.light)

    def from_link(request: gr.Request = None):
        query = dict(getattr(request, "query_params", None) or {})
        try:
            names = ctx.models_for(request).class_names()
        except SessionModelGone:
            names = ctx.models.class_names()
        return query_values(query, names)
    t.from_link, t.inputs = from_link, inputs       # run on page load (ui/layout.py)
