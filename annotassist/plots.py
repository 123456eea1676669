"""The pictures of a workspace's rounds: learning curve, per-class IoU per round, class mix of what was picked."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def round_plots(rows: list[dict], classes: list[str], out: str | Path, palette=None) -> list[Path]:
    """Write learning_curve.png, per_class_iou.png and selected_classes.png under `out`; return their paths."""
    out = Path(out)
    trained = [r for r in rows if r["mIoU"] is not None]
    colors = [tuple(c / 255 for c in p) for p in palette] if palette else None
    paths = []

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot([r["labeled"] for r in trained], [r["mIoU"] * 100 for r in trained], "o-")
    for r in trained:
        ax.annotate(f"r{r['round']}", (r["labeled"], r["mIoU"] * 100), textcoords="offset points", xytext=(4, -10),
                    fontsize=8)
    ax.set(xlabel="labeled images", ylabel="mIoU (%)", title="learning curve")
    ax.grid(alpha=0.3)
    paths.append(_save(fig, out / "learning_curve.png"))

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for k, c in enumerate(classes):
        ys = [(r["per_class_iou"].get(c) or 0) * 100 for r in trained]
        ax.plot([r["round"] for r in trained], ys, "o-", label=c, color=colors[k] if colors else None)
    ax.set(xlabel="round", ylabel="IoU (%)", title="per-class IoU")
    ax.legend(fontsize=7, ncol=2, loc="best")
    ax.grid(alpha=0.3)
    paths.append(_save(fig, out / "per_class_iou.png"))

    picked = [r for r in rows if r["corrected"]]
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    bottom = np.zeros(len(picked))
    for k, c in enumerate(classes):
        px = np.array([r["selected_class_pixels"].get(c, 0) for r in picked], float)
        total = np.array([max(1, sum(r["selected_class_pixels"].values())) for r in picked], float)
        share = px / total * 100
        ax.bar([str(r["round"]) for r in picked], share, bottom=bottom, label=c,
               color=colors[k] if colors else None)
        bottom += share
    ax.set(xlabel="round", ylabel="share of labeled pixels (%)", title="class mix of the selected images")
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1, 1))
    paths.append(_save(fig, out / "selected_classes.png"))
    return paths
