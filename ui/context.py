"""What every tab's handlers share: the service, the training service, how heavy and light events
are queued, and the view updates that several tabs send after the active models change."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import gradio as gr

from nar import plots

from .service import Service
from .training import TrainingService


@dataclass
class Context:
    service: Service
    training: TrainingService
    benchmarks: Path
    concurrency: int = 1
    tabs: dict = field(default_factory=dict)     # tab name -> its components (a namespace)

    @property
    def heavy(self) -> dict:
        """Decoding and loading: one device, `concurrency` jobs at a time."""
        return dict(concurrency_id="device", concurrency_limit=self.concurrency)

    light = dict(concurrency_limit=None, show_progress="hidden")

    @property
    def models(self):
        return self.service.models

    def default_window(self) -> int:
        return max(1, min(8, self.models.grid_size() // 2))   # 8 on a 16x16 grid; below n, so never just raster

    def device_line(self) -> str:
        n = self.models.grid_size()
        return (f"Running on **{self.models.device_label()}** in **{self.models.dtype()}** · "
                f"{n}×{n} tokens → {self.models.image_size()} px images · "
                f"NAR needs {2 * n - 1} steps where raster needs {n ** 2}")

    def class_update(self, current: Optional[str] = None):
        names = self.models.class_names()
        value = current if current in names else (names[0] if names else None)
        return gr.update(choices=names, value=value)

    def window_update(self, value):
        grid = self.models.grid_size()
        return gr.update(maximum=grid, value=max(1, min(int(value or 1), grid)))

    def steps_plot(self, window):
        try:
            w = int(window)
        except (TypeError, ValueError):
            w = 8
        grid = self.models.grid_size()
        return plots.steps_figure(grid, max(1, min(w, grid)))

    def model_view(self):
        headers, rows = self.models.rows()
        names = self.models.class_names()
        shown = ", ".join(names[:60]) + (f", … ({len(names)} in all)" if len(names) > 60 else "")
        return gr.update(value=rows, headers=headers), f"**Classes ({len(names)}):** {shown}"

    # -- after the active models change --------------------------------------------------------
    def view_inputs(self) -> list:
        """The inputs the refresh below reads: both classes and both ZipAR windows."""
        g, c = self.tabs["generate"], self.tabs["compare"]
        return [g.cls, c.cls, g.window, c.window]

    def view_outputs(self) -> list:
        """What the refresh below updates, in its order."""
        g, c, m = self.tabs["generate"], self.tabs["compare"], self.tabs["model"]
        return [m.table, m.classes, g.cls, c.cls, g.window, c.window, c.steps_fig, self.tabs["header"]]

    def refresh(self, gen_class, cmp_class, gen_window, cmp_window) -> tuple:
        """Every view of the active models (another session may have swapped them)."""
        return (*self.model_view(), self.class_update(gen_class), self.class_update(cmp_class),
                self.window_update(gen_window), self.window_update(cmp_window), self.steps_plot(cmp_window),
                self.device_line())
