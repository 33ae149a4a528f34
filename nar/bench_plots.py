"""The benchmark's figure files (nar/bench.py writes them beside its JSON)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .schedules import nar, raster, zipar


def plot(results: list[dict], out_dir: Path, device: str, windows: Sequence[int]) -> list[str]:
    """Latency and throughput against batch size per suite, and the steps against grid size."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    paths = []
    for metric, ylabel, name in (("latency_per_image_s", "seconds per image", "latency"),
                                 ("images_per_s", "images per second", "throughput")):
        suites = sorted({r["suite"] for r in results})
        fig, axes = plt.subplots(1, len(suites), figsize=(5 * len(suites), 4), squeeze=False)
        for ax, suite in zip(axes[0], suites):
            for label in sorted({r["label"] for r in results if r["suite"] == suite}):
                rows = sorted((r for r in results if r["suite"] == suite and r["label"] == label and r["cfg"]),
                              key=lambda r: r["batch"])
                if rows:
                    ax.plot([r["batch"] for r in rows], [r[metric] for r in rows], "o-", label=label.split(" ", 1)[1])
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("batch size (CFG on)")
            ax.set_ylabel(ylabel)
            ax.set_title(suite)
            ax.grid(alpha=0.3)
            ax.legend()
        fig.suptitle(f"{name} vs batch on {device}")
        fig.tight_layout()
        path = out_dir / f"{device}_{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(str(path))
    paths.append(plot_steps(out_dir / "steps_vs_grid.png", windows))
    return paths


def plot_steps(path: Path, windows: Sequence[int]) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ns = list(range(4, 33, 2))
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(ns, [len(raster(n)) for n in ns], "o-", label="raster (n²)")
    for w in windows:
        ax.plot(ns, [len(zipar(n, min(w, n))) for n in ns], "o-", label=f"ZipAR window {w}")
    ax.plot(ns, [len(nar(n)) for n in ns], "o-", label="NAR (2n-1)")
    ax.set_yscale("log")
    ax.set_xlabel("grid side n (tokens)")
    ax.set_ylabel("forward passes per image")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
