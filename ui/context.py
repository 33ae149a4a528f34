"""What every tab's handlers share: the service, the training service, how heavy and light events
are queued, whose models a request uses (its session's: `session`), and the view updates that
several tabs send after the session's models change."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import gradio as gr

from nar.classes import is_imagenet

from nar import plots

from .race import COMPARE_ORDERS
from .service import Service
from .sessions import SessionModelGone
from .training import TrainingService


def session(request: Optional[gr.Request]) -> Optional[str]:
    """The key of the visitor's session (Gradio's session hash; None outside a request)."""
    return getattr(request, "session_hash", None) or None


@dataclass
class Context:
    service: Service
    training: TrainingService
    benchmarks: Path
    concurrency: int = 1
    tabs: dict = field(default_factory=dict)     # tab name -> its components (a namespace)
    lock_models: bool = False                    # the Model and Train tabs are off for visitors
    tab_bar: object = None                       # the gr.Tabs (a tab's button may switch to another)
    blocks: object = None                        # the gr.Blocks (its queue says who waits)

    @property
    def heavy(self) -> dict:
        """Decoding and loading: one device, `concurrency` jobs at a time."""
        return dict(concurrency_id="device", concurrency_limit=self.concurrency)

    light = dict(concurrency_limit=None, show_progress="hidden")

    @property
    def models(self):
        """The server's default models (what the page is built with)."""
        return self.service.models

    def models_for(self, request: Optional[gr.Request]):
        return self.service.models_for(session(request))

    def waiting(self, request: Optional[gr.Request], api_names=("generate", "compare")) -> int:
        """How many of the request's session's calls of these endpoints wait in Gradio's queue now
        (read, never changed; 0 where the queue cannot be read)."""
        key = session(request)
        try:
            queues = self.blocks._queue.event_queue_per_concurrency_id.values()
            return sum(1 for q in queues for event in list(q.queue)
                       if key and event.session_hash == key and getattr(event.fn, "api_name", None) in api_names)
        except AttributeError:
            return 0

    def check_unlocked(self) -> None:
        if self.lock_models:
            raise gr.Error("loading and training models is turned off on this server", title="Not available",
                           print_exception=False)

    def default_window(self) -> int:
        return max(1, min(8, self.models.grid_size() // 2))   # 8 on a 16x16 grid; below n, so never just raster

    def device_line(self, models=None) -> str:
        models = models or self.models
        n = models.grid_size()
        return (f"Running on **{models.device_label()}** in **{models.dtype()}** · "
                f"{n}×{n} tokens → {models.image_size()} px images · "
                f"NAR needs {2 * n - 1} steps where raster needs {n ** 2}")

    @staticmethod
    def class_info(models, orders=()) -> str:
        names = models.class_names(orders)
        return f"one of the {len(names)} classes of the loaded model (type to filter)"

    @staticmethod
    def class_update(models, current: Optional[str] = None, orders=()):
        """The class picker of the orders' models: only classes every one of them knows. ImageNet
        names are labels such as "207 golden retriever" (the picker filters as one types)."""
        names = models.class_names(orders)
        value = current if current in names else (names[0] if names else None)
        if value is None and current not in (None, "") and is_imagenet(names):
            value = current      # an id or a name the request's ClassPicker resolves
        return gr.update(choices=names, value=value, info=Context.class_info(models, orders))

    @staticmethod
    def condition_updates(models) -> tuple:
        """The class picker shows for class models, the prompt box for text models."""
        return gr.update(visible=not models.is_text), gr.update(visible=models.is_text)

    def compare_inputs(self) -> list:
        """What Generate's "Send to Compare" sets: the Compare tab's class, seed, window, CFG, prompt, and the tab."""
        c = self.tabs["compare"]
        return [c.cls, c.seed, c.window, c.cfg, c.prompt, self.tab_bar]

    @staticmethod
    def window_update(models, value):
        grid = models.grid_size()
        return gr.update(maximum=grid, value=max(1, min(int(value or 1), grid)))

    def steps_plot(self, window, request: gr.Request = None):
        try:
            w = int(window)
        except (TypeError, ValueError):
            w = 8
        try:
            grid = self.models_for(request).grid_size()
        except SessionModelGone:
            grid = self.models.grid_size()
        return plots.steps_figure(grid, max(1, min(w, grid)))

    def model_view(self, models, key: Optional[str] = None):
        headers, rows = models.rows()
        names = models.class_names()
        shown = ", ".join(names[:60]) + (f", … ({len(names)} in all)" if len(names) > 60 else "")
        text = f"**Classes ({len(names)}):** {shown}"
        if models.is_text:
            encoder = models.studio.prompt_encoder
            text = ("**Text-to-image models**: a prompt conditions them (Generate and Compare show a prompt box), "
                    f"encoded by {getattr(encoder, 'source', '') or 'the text encoder'} into "
                    f"{encoder.max_len} tokens x {encoder.dim} features." if encoder is not None else
                    "**Text-to-image models**, but no text encoder is loaded: they cannot decode.")
        inferred = models.inferred_heads()
        if inferred:
            text += (f"\n\n**Head count inferred** (dim / 64) for the {' and '.join(inferred)} model: the file "
                     f"does not store it; right for the published sizes, load with a preset or a stated "
                     f"architecture otherwise.")
        if key is not None or self.service.registry.held():
            text += f"\n\nThis page uses {self.service.describe_session(key)}."
        return gr.update(value=rows, headers=headers), text

    def order_classes(self, order, current, request: gr.Request = None):
        """Generate's class picker for its order: the classes of that order's model only."""
        try:
            return self.class_update(self.models_for(request), current, (order,) if order else ())
        except SessionModelGone:
            return gr.skip()

    # -- after the session's models change --------------------------------------------------------
    def view_inputs(self) -> list:
        """The inputs the refresh below reads: both classes and both ZipAR windows."""
        g, c = self.tabs["generate"], self.tabs["compare"]
        return [g.cls, c.cls, g.window, c.window]

    def view_outputs(self) -> list:
        """What the refresh below updates, in its order."""
        g, c, m = self.tabs["generate"], self.tabs["compare"], self.tabs["model"]
        return [m.table, m.classes, g.cls, c.cls, g.window, c.window, c.steps_fig, self.tabs["header"],
                g.class_col, g.prompt_col, c.class_col, c.prompt_col]

    def refresh(self, gen_class, cmp_class, gen_window, cmp_window, request: gr.Request = None) -> tuple:
        """Every view of the session's models (its own model may have been dropped meanwhile)."""
        key = session(request)
        gone = None
        try:
            models = self.service.models_for(key)
        except SessionModelGone as e:
            gone, models = str(e), self.service.models_for(key)
        table, classes = self.model_view(models, key)
        if gone:
            gr.Warning(gone)
            classes = f"**{gone}**\n\n{classes}"
        grid = models.grid_size()
        try:
            w = max(1, min(int(cmp_window), grid))
        except (TypeError, ValueError):
            w = 8
        return (table, classes, self.class_update(models, gen_class),
                self.class_update(models, cmp_class, COMPARE_ORDERS),
                self.window_update(models, gen_window), self.window_update(models, cmp_window),
                plots.steps_figure(grid, max(1, min(w, grid))), self.device_line(models),
                *self.condition_updates(models), *self.condition_updates(models))
