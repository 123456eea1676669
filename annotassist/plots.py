"""The pictures of a workspace's rounds, read on the axis the product is judged on: model quality against the
effort a person spent.

    learning_curve.png    mIoU (%) against labeled images, and against human effort: the pixels people changed
                          in pre-annotations next to what drawing the same labels from scratch would have cost
    per_class_iou.png     IoU (%) per class and round, as a table of colours (a class stuck at 0 stays visible)
    selected_classes.png  each class's share of the pixels a round selected, next to its share in the labeled
                          pool (log scale: rare classes are not slivers)
"""
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


def effort_curve(rows: list[dict]) -> list[tuple[int, float, int, int]]:
    """(round, mIoU, pixels changed so far, pixels drawing from scratch would have cost so far) per trained round:
    the effort behind round r's model is what was spent on the images selected in rounds before r."""
    out, changed, scratch = [], 0, 0
    for r in rows:
        if r["mIoU"] is not None:
            out.append((r["round"], r["mIoU"], changed, scratch))
        if r.get("corrected"):
            changed += r["pixels_changed"]
            scratch += r["scratch_pixels"]
    return out


def _pixels_label(v: float) -> str:
    return f"{v / 1e6:.1f}M" if v >= 1e6 else (f"{v / 1e3:.0f}k" if v >= 1e3 else f"{v:.0f}")


def round_plots(rows: list[dict], classes: list[str], out: str | Path, palette=None,
                pool_class_pixels=None) -> list[Path]:
    """Write learning_curve.png, per_class_iou.png and selected_classes.png under `out`; return their paths."""
    out = Path(out)
    trained = [r for r in rows if r["mIoU"] is not None]
    paths = []

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax.plot([r["labeled"] for r in trained], [r["mIoU"] * 100 for r in trained], "o-")
    for r in trained:
        ax.annotate(f"round {r['round']}", (r["labeled"], r["mIoU"] * 100), textcoords="offset points",
                    xytext=(4, -11), fontsize=7)
    ax.set(xlabel="labeled images", ylabel="mIoU (%)", title="mIoU against labeled images")
    ax.grid(alpha=0.3)
    curve = effort_curve(rows)
    if curve:
        miou = [c[1] * 100 for c in curve]
        bx.plot([c[2] for c in curve], miou, "o-", label="correcting pre-annotations (measured)")
        bx.plot([c[3] for c in curve], miou, "s--", color="grey", label="drawing from scratch (same labels)")
        last = curve[-1]
        if last[3]:
            bx.annotate(f"{100 * (1 - last[2] / last[3]):.0f}% of the drawing saved", (last[2], last[1] * 100),
                        textcoords="offset points", xytext=(6, 6), fontsize=8)
        bx.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: _pixels_label(v)))
        bx.legend(fontsize=7, loc="lower right")
    bx.set(xlabel="pixels a person labeled so far", ylabel="mIoU (%)", title="mIoU against human effort")
    bx.grid(alpha=0.3)
    paths.append(_save(fig, out / "learning_curve.png"))

    fig, ax = plt.subplots(figsize=(max(5.0, 0.55 * len(classes) + 2), 0.45 * max(len(trained), 1) + 1.6))
    grid = np.array([[(r["per_class_iou"].get(c) or 0) * 100 for c in classes] for r in trained]).reshape(
        len(trained), len(classes))
    ax.imshow(grid, vmin=0, vmax=100, cmap="viridis", aspect="auto")
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            ax.text(j, i, f"{grid[i, j]:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if grid[i, j] < 60 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(trained)), [f"round {r['round']}" for r in trained], fontsize=8)
    ax.set_title("IoU (%) per class and round", fontsize=10)
    paths.append(_save(fig, out / "per_class_iou.png"))

    picked = [r for r in rows if r.get("corrected")]
    series = []
    if pool_class_pixels is not None and np.sum(pool_class_pixels) > 0:
        series.append(("labeled pool", np.asarray(pool_class_pixels, float)))
    series += [(f"round {r['round']} picks", np.array([r["selected_class_pixels"].get(c, 0) for c in classes],
                                                       float)) for r in picked]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(classes) * max(1, len(series)) / 2 + 1.8))
    height = 0.8 / max(1, len(series))
    y = np.arange(len(classes))
    for k, (name, px) in enumerate(series):
        share = px / max(1.0, px.sum()) * 100
        ax.barh(y + k * height, np.maximum(share, 1e-3), height, label=name,
                color="black" if name == "labeled pool" else None, alpha=0.85)
    ax.set_xscale("log")
    ax.set_xlim(1e-2, 100)
    ax.set_yticks(y + height * (len(series) - 1) / 2, classes, fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel="share of pixels (%, log scale)", title="class mix of the selected images")
    if series:
        ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3, axis="x")
    paths.append(_save(fig, out / "selected_classes.png"))
    return paths
