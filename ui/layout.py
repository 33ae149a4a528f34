"""The app's layout: a header and one tab per job (ui/tab_*.py), wired to one Service; the view
updates that cross tabs (the active models changed) and the page-load refreshes are wired here."""
from __future__ import annotations

from pathlib import Path
import gradio as gr

from . import tab_compare, tab_generate, tab_model, tab_train, tab_video, zerogpu
from .context import Context
from .inputs import Blocks
from .service import Service
from .training import TrainingService

CSS = """
/* never wider than the screen: Gradio's container is a flex item that otherwise grows to its
   content's widest line (this rule is top-level: Gradio keeps those as written) */
.gradio-container { max-width: min(1280px, 100vw) !important; min-width: 0 !important; margin: 0 auto !important; }
#live img, .panel img, #final-gallery img, #history-gallery img, #video-live img, #video-gif img { image-rendering: pixelated; }
#live img, .panel img { width: 100%; height: 100%; object-fit: contain; }
.caption { font-variant-numeric: tabular-nums; min-height: 1.6em; }
.caption p { margin: 0.25em 0 !important; }
#header p { margin-top: 0 !important; color: var(--body-text-color-subdued); }
#seed-row, #cmp-seed-row, #video-seed-row { align-items: end; }
/* the history: a grid of small thumbnails, as many a row as fit (Gradio sizes columns to fill) */
#history-gallery .grid-container { grid-template-columns: repeat(auto-fill, minmax(96px, 1fr)) !important;
  grid-auto-rows: 96px !important; }
#history-gallery .grid-container, #final-gallery .grid-container { padding-top: 34px !important; }  /* below the label */
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
/* phones: nothing wider than the screen; tables and plots scroll inside their own box (Gradio
   scopes these rules to the page's content, so they name no .gradio-container) */
.row, .column, .block, .form, .tabitem, .tab-container { min-width: 0 !important; }
.table-wrap, .table-container, .plot-container { max-width: 100%; overflow-x: auto; }
img { max-width: 100%; }
.file-name, .file-preview td { overflow-wrap: anywhere; white-space: normal; }
@media (max-width: 640px) {
  /* the four tab names fit on one line (else Gradio folds the last ones into a "..." menu) */
  .tab-wrapper button, .tab-container button { padding-left: 8px !important; padding-right: 8px !important; }
  .row, .form { flex-wrap: wrap !important; }
  .form > * { min-width: min(150px, 100%) !important; }
  .row > * { min-width: 0 !important; flex: 1 1 100% !important; max-width: 100%; }
  .column > *, .block, .form { max-width: 100%; }
  .gallery, .grid-wrap { max-width: 100%; overflow-x: auto; }
}
/* keyboard: a visible focus ring on every control */
input:focus-visible, button:focus-visible, select:focus-visible, textarea:focus-visible,
[role="slider"]:focus-visible, a:focus-visible, input[type="range"]:focus-visible,
input[type="radio"]:focus-visible, input[type="checkbox"]:focus-visible, [tabindex]:focus-visible {
  outline: 3px solid var(--color-accent, #f97316) !important; outline-offset: 2px !important; }
.example { flex: 0 1 auto !important; }
"""


def theme():
    system = ["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"]
    mono = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]
    return gr.themes.Default(primary_hue="orange", secondary_hue="blue", neutral_hue="slate", font=system,
                             font_mono=mono)


def build_app(service: Service, benchmarks: Path, concurrency: int, training: TrainingService,
              lock_models: bool = False) -> gr.Blocks:
    """The Gradio Blocks of the app over a Service, and a TrainingService for the Train tab;
    `lock_models` turns the Model and Train tabs off for visitors."""
    ctx = Context(service, training, Path(benchmarks), concurrency, lock_models=lock_models)
    zerogpu.serve(service)      # the GPU call is decorated before launch
    tabs = {"generate": tab_generate, "compare": tab_compare, "video": tab_video, "model": tab_model,
            "train": tab_train}
    titles = {"generate": "Generate", "compare": "Compare", "video": "Video", "model": "Model", "train": "Train"}
    with Blocks(title="NAR Studio", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        ctx.blocks = demo
        gr.Markdown("# NAR Studio", elem_id="title")
        ctx.tabs["header"] = gr.Markdown(ctx.device_line(), elem_id="header")
        with gr.Tabs() as ctx.tab_bar:
            for name, module in tabs.items():
                with gr.Tab(titles[name], id=name, visible=not (lock_models and name in ("model", "train"))):
                    ctx.tabs[name] = module.build(ctx)
        for name, module in tabs.items():
            module.wire(ctx, ctx.tabs[name])
        compare, train = ctx.tabs["compare"], ctx.tabs["train"]
        generate = ctx.tabs["generate"]
        generate.order.change(ctx.order_classes, [generate.order, generate.cls], generate.cls,
                              api_name="order_classes", api_visibility="undocumented", **ctx.light)
        # another session may have swapped models, or python -m nar.bench written files, since the page was built
        demo.load(ctx.refresh, ctx.view_inputs(), ctx.view_outputs(), api_name="model_info", **ctx.light)
        demo.load(compare.refresh_benchmarks, compare.bench_pick, [compare.bench_pick, compare.lat_fig,
                                                                   compare.measured],
                  api_name="benchmark_files", api_visibility="undocumented", **ctx.light)
        generate = ctx.tabs["generate"]
        demo.load(generate.from_link, None, generate.inputs, api_name="parameters_from_link",
                  api_visibility="undocumented", **ctx.light)
        demo.load(train.overview, [train.runs_pick, train.train_layers],
                  [train.runs_pick, train.train_note, train.train_layers, train.train_status, train.train_bar,
                   train.loss_plot, train.run_box, train.run_info],
                  api_name="train_runs", api_visibility="undocumented", **ctx.light)
    return demo
