"""Figures for the app: decoding steps against grid size, and time per image against batch size.

Figures are built with matplotlib's object API (no pyplot), so nothing global accumulates in a
long-running server.
"""
from __future__ import annotations

from typing import Optional, Sequence

from matplotlib.figure import Figure

from .schedules import nar, raster, zipar

COLORS = {"raster": "#7f7f7f", "zipar": "#1f77b4", "nar": "#e8590c"}
LINESTYLES = ("-", "--", ":", "-.")


def _style(ax) -> None:
    ax.grid(True, which="major", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)


def steps_figure(grid: int, window: int = 8, max_grid: int = 32) -> Figure:
    """Forward passes to decode an n x n grid: raster n^2, ZipAR (n-1)*window+n, NAR 2n-1,
    counted from the schedules themselves; the loaded model's grid is marked."""
    sizes = sorted(set(range(2, max(max_grid, grid) + 1, 2)) | {grid})
    fig = Figure(figsize=(6.4, 4.0), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    series = [
        ("raster", "Raster (n²)", [len(raster(n)) for n in sizes]),
        ("zipar", f"ZipAR, window {window}", [len(zipar(n, min(window, n))) for n in sizes]),
        ("nar", "NAR (2n-1)", [len(nar(n)) for n in sizes]),
    ]
    for order, label, steps in series:
        ax.plot(sizes, steps, label=label, color=COLORS[order], linewidth=2)
    for order, _, steps in series:
        value = steps[sizes.index(grid)]
        ax.plot([grid], [value], "o", color=COLORS[order])
        ax.annotate(f"{value}", (grid, value), textcoords="offset points", xytext=(6, -3), fontsize=9,
                    color=COLORS[order])
    ax.axvline(grid, color="#999999", linewidth=1, linestyle=":")
    ax.set_yscale("log")
    ax.set_xlabel("grid size n (tokens per side)")
    ax.set_ylabel("decoding steps (forward passes)")
    ax.set_title(f"Steps to decode an n×n token grid (loaded model: {grid}×{grid})", fontsize=11)
    ax.legend(frameon=False)
    _style(ax)
    return fig


def _label_of(row: dict) -> str:
    label = str(row.get("label") or row.get("order") or "?")
    return label


def _color_of(label: str) -> str:
    for order, color in COLORS.items():
        if label.startswith(order):
            return color
    return "#444444"


def latency_figure(rows: Sequence[dict], title: str, cfg: Optional[bool] = True) -> Figure:
    """Time per image (ms) against batch size, one line per order (ZipAR per window), one panel
    per suite. `rows` are normalised results (nar.bench.normalise_result): keys label, batch,
    per_image_s, optionally suite and cfg. With cfg=True/False only rows with that guidance
    setting are drawn when there are any."""
    rows = list(rows)
    if cfg is not None and any(r.get("cfg") == cfg for r in rows):
        rows = [r for r in rows if r.get("cfg") == cfg]
    suites = sorted({str(r.get("suite", "")) for r in rows}, key=lambda s: (s not in ("bundled", "measured"), s))
    if not rows:
        return message_figure("No timings to plot yet.")
    suites = suites[:4]
    fig = Figure(figsize=(6.4 if len(suites) == 1 else 3.4 * len(suites), 4.0), dpi=100, layout="constrained")
    axes = fig.subplots(1, len(suites), squeeze=False)[0]
    for ax, suite in zip(axes, suites):
        mine = [r for r in rows if str(r.get("suite", "")) == suite]
        labels = sorted({_label_of(r) for r in mine}, key=lambda s: (("raster", "zipar", "nar").index(s.split("-")[0])
                                                                    if s.split("-")[0] in ("raster", "zipar", "nar")
                                                                    else 9, s))
        zipar_seen = 0
        for label in labels:
            points = sorted((int(r["batch"]), 1000.0 * float(r["per_image_s"])) for r in mine if _label_of(r) == label)
            style = "-"
            if label.startswith("zipar"):
                style = LINESTYLES[1 + zipar_seen % 3]
                zipar_seen += 1
            ax.plot([b for b, _ in points], [t for _, t in points], style, marker="o", markersize=4,
                    color=_color_of(label), label=label.replace("zipar-", "ZipAR w=").replace("nar", "NAR")
                    .replace("raster", "Raster"), linewidth=2)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        batches = sorted({int(r["batch"]) for r in mine})
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.set_xlabel("batch size")
        ax.set_ylabel("time per image (ms)")
        if len(suites) > 1 or suite:
            ax.set_title(suite or "", fontsize=10)
        ax.legend(frameon=False, fontsize=8)
        _style(ax)
    fig.suptitle(title, fontsize=11)
    return fig


def message_figure(text: str) -> Figure:
    """An empty figure that says why there is nothing to show."""
    fig = Figure(figsize=(6.4, 1.6), dpi=100)
    fig.text(0.5, 0.5, text, ha="center", va="center", fontsize=11, color="#555555", wrap=True)
    return fig
