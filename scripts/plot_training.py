"""Training curves of runs side by side: the training loss (smoothed) and the held-out loss of
each run's metrics.jsonl (what `python -m nar.train` writes), one colour per run.

    python scripts/plot_training.py runs/video_nar_stage2 runs/video_raster_stage2 --labels NAR,raster \
        --title "video models, stage 2" --out assets/video_training_curves_stage2.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from matplotlib.figure import Figure

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from nar.run_files import read_metrics  # noqa: E402

COLORS = ("#e8590c", "#7f7f7f", "#1f77b4", "#2f9e44")


def smooth(values: list[float], width: int = 10) -> list[float]:
    return [sum(values[max(0, i - width + 1):i + 1]) / len(values[max(0, i - width + 1):i + 1])
            for i in range(len(values))]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--labels", default=None, help="comma-separated, one per run (default: the folder names)")
    p.add_argument("--title", default="training")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    labels = args.labels.split(",") if args.labels else [r.name for r in args.runs]
    fig = Figure(figsize=(7.0, 4.0), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    for run, label, color in zip(args.runs, labels, COLORS):
        rows = read_metrics(run)
        train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
        held = [(r["step"], r["val_loss"]) for r in rows if r.get("val_loss") is not None]
        if train:
            ax.plot([s for s, _ in train], smooth([v for _, v in train]), color=color, alpha=0.45,
                    label=f"{label}: training loss (mean of 10 logs)")
        if held:
            ax.plot([s for s, _ in held], [v for _, v in held], "o-", color=color, linewidth=2,
                    label=f"{label}: held-out loss")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.set_title(args.title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
