"""The Model tab: the active models, and loading checkpoints from the Hub or an upload."""
from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from .context import Context
from .inputs import PROBLEMS, Number, fail
from .zerogpu import gpu


def build(ctx: Context) -> SimpleNamespace:
    t = SimpleNamespace()
    t.table = gr.Dataframe(label="Active models", interactive=False, elem_id="model-table", max_height=720,
                           column_widths=["16%", "28%", "28%", "28%"])
    t.classes = gr.Markdown()
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
        t.reset_button = gr.Button("Back to the startup checkpoints", scale=1)
    t.status = gr.Markdown(elem_id="load-status")
    return t


def answer(ctx: Context, change, *view) -> tuple:
    """Run a change of the active models: its message and every view of them, or a message."""
    try:
        message = change()
    except PROBLEMS as e:
        raise fail(e) from None
    return (message, *ctx.refresh(*view))


def wire(ctx: Context, t: SimpleNamespace) -> None:
    models = ctx.models

    @gpu
    def load_from_hub(repo_id, filenames, grid, gen_class, cmp_class, gen_window, cmp_window):
        return answer(ctx, lambda: models.load((), repo_id, filenames, grid), gen_class, cmp_class, gen_window,
                      cmp_window)

    @gpu
    def load_upload(files, grid, gen_class, cmp_class, gen_window, cmp_window):
        paths = [f if isinstance(f, str) else getattr(f, "name", str(f)) for f in (files or [])]

        def change():
            if not paths:
                raise ValueError("choose one or more checkpoint files to upload first")
            return models.load(paths, "", "", grid)
        return answer(ctx, change, gen_class, cmp_class, gen_window, cmp_window)

    @gpu
    def reset_models(gen_class, cmp_class, gen_window, cmp_window):
        return answer(ctx, models.reset, gen_class, cmp_class, gen_window, cmp_window)

    view_inputs, outputs = ctx.view_inputs(), [t.status, *ctx.view_outputs()]
    t.hub_button.click(load_from_hub, [t.hub_repo, t.hub_files, t.grid, *view_inputs], outputs,
                       api_name="load_from_hub", **ctx.heavy)
    t.upload_button.click(load_upload, [t.upload_files, t.grid, *view_inputs], outputs, api_name="load_upload",
                          **ctx.heavy)
    t.reset_button.click(reset_models, view_inputs, outputs, api_name="reset_models", **ctx.heavy)
