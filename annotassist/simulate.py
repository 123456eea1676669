"""The field's active-learning benchmark, with a simulated annotator standing in for the person.

For each seed: a random initial labeled set, one round-0 model (shared by every strategy: they all start from
the same labels). For each strategy: score -> select B -> the simulated annotator returns the truth (and
counts what it had to correct in the pushed pre-annotation) -> retrain; R rounds. `--full` trains once on
every pool label for the "share of fully supervised mIoU".

    <out>/seed<k>/base/          the seed's workspace after round 0
    <out>/seed<k>/<strategy>/    each strategy's workspace (a copy of base, then its own rounds)
    <out>/full/                  the fully labeled reference
    <out>/results.csv, results.json, learning_curve.png, summary.md
"""
from __future__ import annotations

import copy
import csv
import json
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .acquire.strategies import resolve
from .importer import create_workspace
from .loop import RunOptions, run_loop
from .report import round_rows, table
from .workspace import Workspace


@dataclass
class SimulationPlan:
    strategies: list[str]
    init: int = 16
    budget: int = 16
    rounds: int = 5
    seeds: int = 3
    full: bool = False
    warm_start: bool = False
    profile: str = ""  # stated in the output: which reduced profile produced these numbers
    device: str | None = None
    progress: bool = False  # progress bars for training and scoring


def _quiet(*_a, **_k) -> None:
    pass


def _fresh_workspace(path: Path, cfg, data_root: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    ws, _ = create_workspace(path, cfg, data_root, progress=False)
    ws.close()


def _copy_workspace(src: Path, dst: Path, overrides: list[str]) -> None:
    """A strategy's own copy of the seed's base workspace (its models are stored relative to the workspace,
    so the copy uses its own files), with the strategy's plan in its config."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoint.pt", "*.lock"))
    with Workspace(dst) as ws:
        ws.apply_config(overrides=overrides, why="simulate")


def _rows(strategy: str, seed: int, ws_path: Path, pool_size: int) -> list[dict]:
    """One row per trained round, with the effort spent on the labels that round trained on."""
    out, pixels, regions = [], 0, 0
    with Workspace(ws_path) as ws:
        for r in round_rows(ws):
            info = ws.round_info(r["round"])
            out.append({"strategy": strategy, "seed": seed, "round": r["round"], "labeled": r["labeled"],
                        "labeled_share": r["labeled"] / pool_size, "mIoU": r["mIoU"],
                        "per_class_iou": r["per_class_iou"], "pixels_corrected": pixels,
                        "regions_corrected": regions, "train_seconds": (info["metrics"] or {}).get("seconds")})
            pixels += r["pixels_changed"]
            regions += r["regions_changed"]
    return out


def auc(labeled: list[float], miou: list[float]) -> float:
    """Area under the mIoU-vs-labels curve divided by the labels spanned: the curve's mean mIoU."""
    x, y = np.asarray(labeled, float), np.asarray(miou, float)
    if len(x) < 2 or x[-1] == x[0]:
        return float(y.mean())
    return float(np.trapezoid(y, x) / (x[-1] - x[0]))


def summarize(rows: list[dict], full_miou: float | None, pool_size: int) -> list[dict]:
    out = []
    for s in dict.fromkeys(r["strategy"] for r in rows):
        mine = [r for r in rows if r["strategy"] == s]
        seeds = sorted({r["seed"] for r in mine})
        aucs, finals, at10, pix = [], [], [], []
        for k in seeds:
            curve = sorted((r for r in mine if r["seed"] == k), key=lambda r: r["round"])
            aucs.append(auc([r["labeled"] for r in curve], [r["mIoU"] * 100 for r in curve]))
            finals.append(curve[-1]["mIoU"] * 100)
            within = [r["mIoU"] * 100 for r in curve if r["labeled"] <= 0.10 * pool_size]
            at10.append(max(within) if within else float("nan"))
            pix.append(curve[-1]["pixels_corrected"])
        row = {"strategy": s, "seeds": len(seeds), "auc": float(np.mean(aucs)), "auc_std": float(np.std(aucs)),
               "final_mIoU": float(np.mean(finals)), "best_mIoU_at_10pct": float(np.mean(at10)),
               "pixels_corrected": float(np.mean(pix))}
        if full_miou:
            row["share_of_full_at_10pct"] = row["best_mIoU_at_10pct"] / (full_miou * 100)
            row["share_of_full_final"] = row["final_mIoU"] / (full_miou * 100)
        out.append(row)
    base = next((r for r in out if r["strategy"] == "random"), None)
    for r in out:
        r["auc_vs_random"] = r["auc"] - base["auc"] if base else None
    return out


def plot(rows: list[dict], full_miou: float | None, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s in dict.fromkeys(r["strategy"] for r in rows):
        mine = [r for r in rows if r["strategy"] == s]
        xs = sorted({r["labeled"] for r in mine})
        ys = [[r["mIoU"] * 100 for r in mine if r["labeled"] == x] for x in xs]
        mean = np.array([np.mean(v) for v in ys])
        lo, hi = np.array([np.min(v) for v in ys]), np.array([np.max(v) for v in ys])
        line, = ax.plot(xs, mean, marker="o", label=s)
        if any(len(v) > 1 for v in ys):
            ax.fill_between(xs, lo, hi, alpha=0.2, color=line.get_color())
    if full_miou:
        ax.axhline(full_miou * 100, ls="--", c="k", lw=1, label="all labels")
        ax.axhline(full_miou * 95, ls=":", c="k", lw=1, label="95% of all labels")
    ax.set_xlabel("labeled images")
    ax.set_ylabel("mIoU (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def simulate(cfg, plan: SimulationPlan, out: str | Path, data_root: Path, log=print) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for s in plan.strategies:
        resolve(s)  # unknown names fail before any training
    started = time.time()
    rows: list[dict] = []
    pool_size = 0
    run = RunOptions(device=plan.device, progress=plan.progress)
    for seed in range(plan.seeds):
        scfg = copy.deepcopy(cfg)
        scfg.pool.initial_labeled, scfg.pool.seed, scfg.train.seed = plan.init, seed, seed
        scfg.loop.rounds, scfg.loop.annotator, scfg.loop.warm_start = 0, "simulated", plan.warm_start
        scfg.acquire.budget = plan.budget
        base_dir = out / f"seed{seed}" / "base"
        _fresh_workspace(base_dir, scfg, data_root)
        with Workspace(base_dir) as ws:
            pool_size = ws.count("pool")
            log(f"seed {seed}: pool {pool_size}, evaluation {ws.count('val')}; training round 0 "
                f"({ws.count('pool', 'labeled')} labeled)")
        run_loop(base_dir, run, log=_quiet)  # loop.rounds = 0: round 0's model only, shared by every strategy
        for s in plan.strategies:
            sws = out / f"seed{seed}" / s
            _copy_workspace(base_dir, sws, [f"acquire.strategy={s}", f"loop.rounds={plan.rounds}"])
            run_loop(sws, run, log=_quiet)
            rows += _rows(s, seed, sws, pool_size)
            for r in rows[-(plan.rounds + 1):]:
                log(f"  {s:>16} seed {seed} round {r['round']}: {r['labeled']} labeled, mIoU {r['mIoU'] * 100:.2f}")
    full_miou = None
    if plan.full:
        fcfg = copy.deepcopy(cfg)
        fcfg.pool.initial_labeled, fcfg.loop.rounds, fcfg.train.method = 0, 0, "supervised"
        log("training once on every pool label (the fully supervised reference)")
        _fresh_workspace(out / "full", fcfg, data_root)
        run_loop(out / "full", run, log=_quiet)
        with Workspace(out / "full") as fws:
            full_miou = fws.round_info(0)["metrics"]["mIoU"]
    summary = summarize(rows, full_miou, pool_size)
    machine = _machine()
    title = (f"{cfg.dataset.name}: init {plan.init}, +{plan.budget}/round, {plan.seeds} seed(s)"
             + (f", profile {plan.profile}" if plan.profile else "") + f" - {machine}")
    result = {"dataset": cfg.dataset.name, "plan": plan.__dict__, "machine": machine, "pool_size": pool_size,
              "method": cfg.train.method, "backbone": cfg.model.backbone, "max_iters": cfg.train.max_iters,
              "image_scale": cfg.train.image_scale, "full_mIoU": full_miou, "summary": summary, "rows": rows,
              "seconds": time.time() - started}
    (out / "results.json").write_text(json.dumps(result, indent=2))
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        classes = cfg.dataset.classes
        w.writerow(["strategy", "seed", "round", "labeled", "labeled_share", "mIoU", "pixels_corrected",
                    "regions_corrected"] + [f"iou_{c}" for c in classes])
        for r in rows:
            per = r["per_class_iou"] or {}
            w.writerow([r["strategy"], r["seed"], r["round"], r["labeled"], f"{r['labeled_share']:.4f}",
                        f"{r['mIoU']:.4f}", r["pixels_corrected"], r["regions_corrected"]] +
                       ["" if per.get(c) is None else f"{per[c]:.4f}" for c in classes])
    plot(rows, full_miou, out / "learning_curve.png", title)
    text = summary_markdown(summary, full_miou, title, time.time() - started)
    (out / "summary.md").write_text(text)
    log("\n" + text)
    return result


def summary_markdown(summary: list[dict], full_miou: float | None, title: str, seconds: float) -> str:
    headers = ["strategy", "AUC mIoU", "+/-", "vs random", "final mIoU", "best mIoU <=10% labels",
               "% of full <=10%", "pixels corrected"]
    rows = [[s["strategy"], s["auc"], s["auc_std"], s["auc_vs_random"], s["final_mIoU"], s["best_mIoU_at_10pct"],
             None if "share_of_full_at_10pct" not in s else s["share_of_full_at_10pct"] * 100,
             int(s["pixels_corrected"])] for s in summary]
    full = f"fully supervised mIoU: {full_miou * 100:.2f}\n" if full_miou else ""
    return (f"{title}\n{full}wall time {seconds / 60:.1f} min\n\n" + table(headers, rows) + "\n")


def _machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA)"
    import os
    return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
