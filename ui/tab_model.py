"""The Model tab: the session's models, the server's model sets and the presets by name, loading
checkpoints from the Hub or an upload (into the visitor's session only), and the admin's
replacement of the server's models. Every load runs in the main process (never under spaces.GPU:
there it would change only a GPU worker's copy)."""
from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from nar.presets import PRESETS

from .context import Context, session
from .inputs import PROBLEMS, Number, fail
from .server_models import admin_credentials, is_admin, parse_names, preset_markdown, preset_models, shared_loader

SERVER = " (server)"


def model_choices(ctx: Context) -> list[tuple[str, str]]:
    shared = ctx.service.registry.shared_names
    return [(name + SERVER, name) for name in shared] + [(name, name) for name in PRESETS if name not in shared]


def build(ctx: Context) -> SimpleNamespace:
    t = SimpleNamespace()
    t.table = gr.Dataframe(label="Active models", interactive=False, elem_id="model-table", max_height=720,
                           column_widths=["16%", "28%", "28%", "28%"])
    t.classes = gr.Markdown(elem_id="model-classes")
    gr.Markdown("### Models by name\nThe server's model sets are shared (switching costs nothing); a "
                "preset of the official NAR and LlamaGen models loads for your page only. Your own models "
                "(a preset, a load or a fine-tune) are yours: other visitors never see them.")
    choices = model_choices(ctx)
    with gr.Row(equal_height=True):
        t.preset = gr.Dropdown(choices, value=choices[0][1], label="Model set", scale=3, elem_id="preset-pick")
        t.preset_button = gr.Button("Use this model set", scale=1)
    t.preset_info = gr.Markdown(preset_markdown(choices[0][1]), elem_id="preset-info")
    gr.Markdown("### Load a checkpoint\nOur safetensors files, official NAR / LlamaGen GPT "
                "checkpoints and the LlamaGen VQ tokenizer (`.pt`, read weights-only). The kind is "
                "read from each file; load a model and its tokenizer together when the vocabulary "
                "changes. If a file cannot be used, the active models stay as they are.")
    with gr.Row(equal_height=True):
        with gr.Column():
            t.hub_repo = gr.Textbox(label="Hugging Face Hub repo id", placeholder="owner/name")
            t.hub_files = gr.Textbox(label="File name(s) in the repo, comma-separated",
                                     placeholder="c2i_L_256.pt, vq_ds16_c2i.pt")
            t.hub_button = gr.Button("Load from the Hub")
        with gr.Column():
            # any file type: Gradio would refuse the whole upload over one file of another
            # type; a file that is not a checkpoint is refused with the reason when loaded
            t.upload_files = gr.File(label="Checkpoint file(s): .safetensors, or official .pt, .pth, .bin",
                                     file_count="multiple", height=140)
            t.upload_button = gr.Button("Load uploaded files")
    with gr.Row(equal_height=True):
        t.grid = Number(ctx.models.grid_size(), label="Token grid of official checkpoints (tokens per side)",
                        precision=0, minimum=1, maximum=64, scale=2)
        t.reset_button = gr.Button("Back to the server's models", scale=1)
    t.status = gr.Markdown(elem_id="load-status")
    with gr.Accordion("Admin: replace the server's models", open=False, visible=admin_credentials() is not None):
        gr.Markdown("For the login in `NAR_STUDIO_ADMIN`. The old models are released before the new ones "
                    "load; new pages and pages on the server's models use the new ones.")
        with gr.Row(equal_height=True):
            t.admin_user = gr.Textbox(label="Admin user", max_lines=1)
            t.admin_password = gr.Textbox(label="Password", type="password", max_lines=1)
            t.admin_names = gr.Textbox(label="Model sets, comma-separated (the first is the default)",
                                       placeholder="NAR-B, bundled", max_lines=1)
        t.admin_button = gr.Button("Replace the server's models", variant="stop")
    return t


def sampling_updates(ctx: Context, key) -> tuple:
    """The session's sampling defaults (a preset's) applied to the Generate and Compare controls."""
    nar = ctx.service.sampling_for(key).get("nar")
    if nar is None:
        return (gr.skip(),) * 5
    return (gr.update(value=nar.cfg_scale), gr.update(value=nar.top_k), gr.update(value=nar.top_p),
            gr.update(value=nar.temperature), gr.update(value=nar.cfg_scale))


def wire(ctx: Context, t: SimpleNamespace) -> None:
    service = ctx.service
    g, c = ctx.tabs["generate"], ctx.tabs["compare"]
    sampling_outputs = [g.cfg, g.top_k, g.top_p, g.temperature, c.cfg]

    def answer(change, view, request) -> tuple:
        """Run a change of the session's models: its message and every view of them."""
        ctx.check_unlocked()
        try:
            message = change(session(request))
        except PROBLEMS as e:
            raise fail(e) from None
        return (message, *ctx.refresh(*view, request=request))

    def load_from_hub(repo_id, filenames, grid, gen_class, cmp_class, gen_window, cmp_window,
                      request: gr.Request = None):
        return answer(lambda key: service.load(key, (), repo_id, filenames, grid),
                      (gen_class, cmp_class, gen_window, cmp_window), request)

    def load_upload(files, grid, gen_class, cmp_class, gen_window, cmp_window, request: gr.Request = None):
        paths = [f if isinstance(f, str) else getattr(f, "name", str(f)) for f in (files or [])]

        def change(key):
            if not paths:
                raise ValueError("choose one or more checkpoint files to upload first")
            return service.load(key, paths, "", "", grid)
        return answer(change, (gen_class, cmp_class, gen_window, cmp_window), request)

    def reset_models(gen_class, cmp_class, gen_window, cmp_window, request: gr.Request = None):
        return answer(service.reset, (gen_class, cmp_class, gen_window, cmp_window), request)

    def use_model_set(name, gen_class, cmp_class, gen_window, cmp_window, request: gr.Request = None):
        def change(key):
            name_ = str(name or "")
            if name_ in service.registry.shared_names:
                return service.choose(key, name_)
            if name_ not in PRESETS:
                raise ValueError(f"unknown model set {name_[:40]!r}")
            ctx.check_unlocked()
            shared = preset_models(name_, str(service.studio.device))
            service.registry.set_own(key, shared.studio, f"preset {shared.name}", shared.sampling)
            return (f"Loaded preset {shared.name} for this page" +
                    (f" ({'; '.join(shared.notes)})" if shared.notes else "") + ".")
        try:
            message = change(session(request))
        except PROBLEMS as e:
            raise fail(e) from None
        return (message, *ctx.refresh(gen_class, cmp_class, gen_window, cmp_window, request=request),
                *sampling_updates(ctx, session(request)))

    def admin_replace(user, password, names, request: gr.Request = None):
        if not is_admin(user, password, admin_credentials()):
            raise gr.Error("wrong admin login (set NAR_STUDIO_ADMIN=user:password on the server)",
                           title="Not allowed", print_exception=False)
        try:
            folder, device = service.checkpoint_dir, str(service.studio.device)
            loaders = [shared_loader(n, folder, device) for n in parse_names(names)]
            now = service.registry.replace_shared(loaders)
        except PROBLEMS as e:
            raise fail(e) from None
        return (f"The server's models are now {', '.join(now)} (default {now[0]}).",
                gr.update(choices=model_choices(ctx), value=now[0]))

    view_inputs, outputs = ctx.view_inputs(), [t.status, *ctx.view_outputs()]
    t.hub_button.click(load_from_hub, [t.hub_repo, t.hub_files, t.grid, *view_inputs], outputs,
                       api_name="load_from_hub", **ctx.heavy)
    t.upload_button.click(load_upload, [t.upload_files, t.grid, *view_inputs], outputs, api_name="load_upload",
                          **ctx.heavy)
    t.reset_button.click(reset_models, view_inputs, outputs, api_name="reset_models", **ctx.heavy)
    t.preset.change(preset_markdown, t.preset, t.preset_info, api_name="preset_info", **ctx.light)
    t.preset_button.click(use_model_set, [t.preset, *view_inputs], [*outputs, *sampling_outputs],
                          api_name="use_model_set", **ctx.heavy)
    t.admin_button.click(admin_replace, [t.admin_user, t.admin_password, t.admin_names], [t.status, t.preset],
                         api_name="admin_replace", api_visibility="undocumented", **ctx.heavy)
