"""The benchmark: model quality against the effort a person spends, with a simulated annotator standing in.

Every arm runs the same loop a team runs (loop.py) with the simulated annotator, which hands back the dataset's
own masks and counts what a person would have changed (effort.py). An arm is a selection strategy, a training
method, and whether the person corrects pre-annotations or draws from scratch:

    scratch   random images, supervised model, no pre-annotation: effort = every labeled pixel (no assistant)
    random    random images, the config's method (DSSN), pre-annotations corrected
    dssn      the dssn selection, DSSN, pre-annotations corrected     ... (any registered strategy)

For each seed: a random initial labeled set and one round-0 model per training method, shared by the arms
that use it. R rounds of +B images. A no-assistant arm whose assisted twin (same selection, method and unit) is
in the plan is not run again: the simulated person hands back the same masks either way, so the twin's images
and models are its own, and only its effort (drawing every label) is read differently. Optionally a fully
labeled reference (the ceiling). Reported, with the mean and spread over seeds: mIoU per round against labeled
images and against cumulative effort, the effort each arm needs to reach 90% of the reference's mIoU, and the
area under mIoU against effort.

    <out>/seed<k>/base-<method>/   the seed's workspace after round 0, per method
    <out>/seed<k>/<arm>/           each arm's workspace (a copy of its base, then its own rounds)
    <out>/full/                    the fully labeled reference
    <out>/results.csv, results.json, learning_curve.png, summary.md
"""
from __future__ import annotations

import copy
import csv
import json
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .acquire.strategies import resolve
from .data.masks import read_mask
from .effort import drawing_effort
from .importer import create_workspace
from .loop import RunOptions, run_loop
from .report import round_rows, table
from .workspace import Workspace

TARGET_SHARE = 0.9  # effort to reach this share of the fully labeled reference's mIoU


@dataclass
class Arm:
    name: str
    strategy: str
    method: str = ""  # "" = the config's train.method
    pre_annotate: bool = True  # False: the person draws every label from scratch
    unit: str = ""  # "" = the plan's unit; "region": the person reviews the regions the strategy picks


def parse_arm(text: str) -> Arm:
    """'NAME=STRATEGY[:METHOD][:scratch][:region]' or just 'STRATEGY' (e.g. 'scratch=random:supervised:scratch',
    'regions=dssn:region')."""
    name, _, spec = text.partition("=")
    if not spec:
        name, spec = text, text
    parts = spec.split(":")
    flags = {"scratch", "region", "image"}
    method = next((p for p in parts[1:] if p not in flags), "")
    unit = "region" if "region" in parts[1:] else ("image" if "image" in parts[1:] else "")
    return Arm(name, parts[0], method, "scratch" not in parts[1:], unit)


@dataclass
class SimulationPlan:
    strategies: list[str] = field(default_factory=list)  # shorthand: one assisted arm per strategy
    init: int = 16
    budget: int = 16
    rounds: int = 5
    seeds: int = 3
    full: bool = False
    full_overrides: list[str] = field(default_factory=list)  # e.g. more steps, so the reference is the ceiling
    warm_start: bool = False
    profile: str = ""  # stated in the output: which reduced profile produced these numbers
    device: str | None = None
    progress: bool = False  # progress bars for training and scoring
    arms: list[Arm] = field(default_factory=list)
    unit: str = "image"  # every arm's unit unless the arm says otherwise
    region_budget: int | None = None  # regions per round in region arms (None: acquire.region_budget)
    share_drawn: bool = True  # a no-assistant arm with an assisted twin is read from the twin, not run again

    def all_arms(self) -> list[Arm]:
        return self.arms or [Arm(s, s) for s in self.strategies]


def _quiet(*_a, **_k) -> None:
    pass


def _fresh_workspace(path: Path, cfg, data_root: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    ws, _ = create_workspace(path, cfg, data_root, progress=False)
    ws.close()


def _copy_workspace(src: Path, dst: Path, overrides: list[str]) -> None:
    """An arm's own copy of the seed's base workspace (its models are stored relative to the workspace, so
    the copy uses its own files), with the arm's plan in its config."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoint.pt", "*.lock"))
    with Workspace(dst) as ws:
        ws.apply_config(overrides=overrides, why="simulate")


def _rows(arm: Arm, seed: int, ws_path: Path, pool_size: int, drawn: bool = False) -> list[dict]:
    """One row per trained round, with the effort spent on the labels that round trained on (everything the
    person changed in the rounds before it) and what drawing those labels from scratch would have cost.
    `drawn`: read an assisted arm's workspace as its no-assistant twin would have spent it, every label drawn
    from scratch (`drawing_effort`): the same images and models, another effort."""
    out, pixels, regions, scratch, asked = [], 0, 0, 0, 0
    with Workspace(ws_path) as ws:
        pool_px = sum(i.width * i.height for i in ws.images("pool"))
        # the initial labeled set counts as reviewed: a person labeled it whole
        initial = sum(ws.image(i).width * ws.image(i).height for i in
                      {m.image_id for rec in ws.images("pool", "labeled") for m in ws.masks(rec.id, "ground_truth")})
        for r in round_rows(ws):
            info = ws.round_info(r["round"])
            out.append({"arm": arm.name, "strategy": arm.strategy, "method": info["method"], "seed": seed,
                        "round": r["round"], "labeled": r["labeled"], "labeled_share": r["labeled"] / pool_size,
                        "mIoU": r["mIoU"], "per_class_iou": r["per_class_iou"], "pixels_corrected": pixels,
                        "regions_corrected": regions, "scratch_pixels": scratch, "regions_reviewed": asked,
                        "reviewed_share": (initial + scratch) / max(1, pool_px), "unit": arm.unit or "image",
                        "train_seconds": (info["metrics"] or {}).get("seconds")})
            if r["corrected"]:
                pixels += r["scratch_pixels"] if drawn else r["pixels_changed"]
                regions += _drawing_regions(ws, r["human"]) if drawn else r["regions_changed"]
                scratch += r["scratch_pixels"]
                asked += r["regions_reviewed"]
    return out


def _drawing_regions(ws: Workspace, human: list) -> int:
    """The connected regions a person draws to label a round's corrected images (`round_rows`' `human`
    versions) from scratch."""
    return sum(drawing_effort(read_mask(m.path, ws.config.num_classes)).regions for m in human)


def _drawn_twin(arm: Arm, arms: list[Arm], method: str) -> Arm | None:
    """The assisted arm a no-assistant arm can be read from instead of being run: the same selection, method
    and unit. The simulated person hands back the dataset's masks either way, so both arms label the same
    images and train the same models; only the effort differs (on a CPU the two runs matched bit for bit)."""
    if arm.pre_annotate or arm.unit == "region":
        return None

    def key(a: Arm) -> tuple:
        return a.strategy, a.method or method, a.unit

    return next((a for a in arms if a.pre_annotate and key(a) == key(arm)), None)


# -- reading the curves ----------------------------------------------------------------------------------------

def auc(labeled: list[float], miou: list[float]) -> float:
    """Area under the mIoU-vs-labels curve divided by the labels spanned: the curve's mean mIoU."""
    x, y = np.asarray(labeled, float), np.asarray(miou, float)
    if len(x) < 2 or x[-1] == x[0]:
        return float(y.mean())
    return float(np.trapezoid(y, x) / (x[-1] - x[0]))


def miou_at_effort(curve: list[tuple[float, float]], effort: float) -> float:
    """The mIoU a person has at `effort`: that of the latest model trained on labels costing at most that
    (a step function: a model exists only once its labels are paid for)."""
    best = curve[0][1]
    for e, m in curve:
        if e <= effort:
            best = m
    return best


def effort_auc(curve: list[tuple[float, float]], upto: float, points: int = 400) -> float:
    """Mean mIoU over effort 0..upto (area under the step curve, per unit of effort)."""
    xs = np.linspace(0, upto, points)
    return float(np.mean([miou_at_effort(curve, x) for x in xs]))


def effort_to_reach(curve: list[tuple[float, float]], target: float) -> float | None:
    """The cumulative effort of the first model at or above `target` mIoU (None if no model reaches it)."""
    for e, m in curve:
        if m >= target:
            return e
    return None


def _curves(rows: list[dict]) -> dict[str, dict[int, list[tuple[float, float]]]]:
    """arm -> seed -> [(cumulative effort in pixels, mIoU %)] in round order."""
    out: dict[str, dict[int, list]] = {}
    for r in sorted(rows, key=lambda r: (r["arm"], r["seed"], r["round"])):
        out.setdefault(r["arm"], {}).setdefault(r["seed"], []).append((r["pixels_corrected"], r["mIoU"] * 100))
    return out


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    v = [x for x in values if x is not None and np.isfinite(x)]
    return (float(np.mean(v)), float(np.std(v))) if v else (None, None)


def summarize(rows: list[dict], full_miou: float | None, pool_size: int) -> list[dict]:
    curves = _curves(rows)
    # the effort range every arm's curve covers: up to the smallest total effort of any arm and seed
    # (no arms: a reference-only run, `--seeds 0`)
    upto = min((c[-1][0] for seeds in curves.values() for c in seeds.values()), default=0) or None
    target = full_miou * 100 * TARGET_SHARE if full_miou else None
    out = []
    for arm in dict.fromkeys(r["arm"] for r in rows):
        mine = [r for r in rows if r["arm"] == arm]
        seeds = sorted({r["seed"] for r in mine})
        aucs, finals, at10, pix, regions, scratch, e_auc, reach, reach_images = [], [], [], [], [], [], [], [], []
        for k in seeds:
            curve = sorted((r for r in mine if r["seed"] == k), key=lambda r: r["round"])
            # against the share of the pool's pixels reviewed: for image arms the labeled images (same AUC, a
            # mean over the span), for region arms what they really looked at
            aucs.append(auc([_reviewed_share(r, pool_size) for r in curve], [r["mIoU"] * 100 for r in curve]))
            finals.append(curve[-1]["mIoU"] * 100)
            within = [r["mIoU"] * 100 for r in curve if _reviewed_share(r, pool_size) <= 0.10 + 1e-9]
            at10.append(max(within) if within else float("nan"))
            pix.append(curve[-1]["pixels_corrected"])
            regions.append(curve[-1]["regions_corrected"])
            scratch.append(curve[-1]["scratch_pixels"])
            if upto:
                e_auc.append(effort_auc(curves[arm][k], upto))
            if target is not None:
                reach.append(effort_to_reach(curves[arm][k], target))
                hit = [r["labeled"] for r in curve if r["mIoU"] * 100 >= target]
                reach_images.append(hit[0] if hit else None)
        row = {"arm": arm, "strategy": mine[0]["strategy"], "method": mine[0]["method"], "seeds": len(seeds),
               "auc": float(np.mean(aucs)), "auc_std": float(np.std(aucs)),
               "final_mIoU": float(np.mean(finals)), "final_mIoU_std": float(np.std(finals)),
               "best_mIoU_at_10pct": float(np.mean(at10)),
               "pixels_corrected": float(np.mean(pix)), "regions_corrected": float(np.mean(regions)),
               "scratch_pixels": float(np.mean(scratch)),
               # rows written before region mode lack these: their labeled share, and no regions asked
               "reviewed_share": float(np.mean([max(_reviewed_share(r, pool_size) for r in mine if r["seed"] == k)
                                                for k in seeds])),
               "regions_reviewed": float(np.mean([max(r.get("regions_reviewed", 0) for r in mine if r["seed"] == k)
                                                  for k in seeds]))}
        row["effort_auc"], row["effort_auc_std"] = _mean_std(e_auc)
        row["effort_auc_upto_pixels"] = upto
        if target is not None:
            row["target_mIoU"] = target
            row["effort_to_target"], row["effort_to_target_std"] = _mean_std(reach)
            row["seeds_reaching_target"] = sum(x is not None for x in reach)
            row["images_to_target"], _ = _mean_std(reach_images)
        if full_miou:
            row["share_of_full_at_10pct"] = row["best_mIoU_at_10pct"] / (full_miou * 100)
            row["share_of_full_final"] = row["final_mIoU"] / (full_miou * 100)
        out.append(row)
    base = next((r for r in out if r["arm"] == "random"), None)
    for r in out:
        r["auc_vs_random"] = r["auc"] - base["auc"] if base else None
    return out


def _reviewed_share(r: dict, pool_size: int | None = None) -> float:
    # rows written before region mode: every labeled image was reviewed whole
    if "reviewed_share" in r:
        return r["reviewed_share"]
    return r["labeled_share"] if "labeled_share" in r else r["labeled"] / max(1, pool_size or 1)


def _clicks(r: dict) -> float:
    """What a person pointed at: the regions they were asked to check (region arms), else the connected regions
    they fixed or drew."""
    if r.get("unit") == "region":
        return r.get("regions_reviewed", 0)
    return r["regions_corrected"]


def plot(rows: list[dict], full_miou: float | None, path: Path, title: str) -> None:
    """mIoU against labeled images and against the pixels a person changed; with region arms, against what they
    reviewed (share of the pool's pixels), what they changed and the regions they clicked, since a region arm's
    'labeled images' says nothing about its effort."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plots import _pixels_label

    regions = any(r.get("unit") == "region" for r in rows)
    axes_of = ([("pool pixels a person reviewed (%)", lambda r: _reviewed_share(r) * 100, None)] if regions else
               [("labeled images", lambda r: r["labeled"], None)])
    axes_of.append(("pixels a person changed or drew (cumulative)", lambda r: r["pixels_corrected"],
                    _pixels_label))
    if regions:
        axes_of.append(("regions a person checked (region arms) or fixed (image arms)", _clicks, None))
    fig, axs = plt.subplots(1, len(axes_of), figsize=(5.5 * len(axes_of), 4.3))
    for arm in dict.fromkeys(r["arm"] for r in rows):
        mine = sorted((r for r in rows if r["arm"] == arm), key=lambda r: (r["seed"], r["round"]))
        seeds = sorted({r["seed"] for r in mine})
        rounds = sorted({r["round"] for r in mine})
        # the mean over seeds of each round's (x, mIoU); the seeds' spread as bars
        full_runs = [[r for r in mine if r["seed"] == k] for k in seeds]
        full_runs = [run for run in full_runs if len(run) == len(rounds)]
        color = None
        for axis, (_, x_of, _) in zip(axs, axes_of):
            if not full_runs:
                continue
            x = np.array([[x_of(r) for r in run] for run in full_runs], dtype=float)
            y = np.array([[r["mIoU"] * 100 for r in run] for run in full_runs])
            bar = axis.errorbar(x.mean(0), y.mean(0), xerr=x.std(0) if len(x) > 1 else None,
                                yerr=y.std(0) if len(y) > 1 else None, marker="o", capsize=2, label=arm,
                                color=color, ls="--" if any(r.get("unit") == "region" for r in mine) else "-")
            color = bar.lines[0].get_color()
    for axis, (label, _, fmt) in zip(axs, axes_of):
        if full_miou:
            axis.axhline(full_miou * 100, ls="--", c="k", lw=1, label="all labels")
            axis.axhline(full_miou * 100 * TARGET_SHARE, ls=":", c="k", lw=1,
                         label=f"{TARGET_SHARE:.0%} of all labels")
        axis.set_ylabel("mIoU (%)")
        axis.set_xlabel(label)
        axis.grid(alpha=0.3)
        if fmt:
            axis.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _, f=fmt: f(v)))
        axis.legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- running it -----------------------------------------------------------------------------------------------

def simulate(cfg, plan: SimulationPlan, out: str | Path, data_root: Path, log=print) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    arms = plan.all_arms()
    for a in arms:
        a.unit = a.unit or plan.unit
        if a.unit == "region":  # unknown names fail before any training
            from .acquire.regions import resolve_region
            resolve_region(a.strategy)
        else:
            resolve(a.strategy)
    started = time.time()
    rows: list[dict] = []
    pool_size = 0
    run = RunOptions(device=plan.device, progress=plan.progress, queue_next=False)
    twins = {a.name: _drawn_twin(a, arms, cfg.train.method) for a in arms} if plan.share_drawn else {}
    # an ETA in trained rounds: a base is one, an arm plan.rounds (the reference comes after, said apart)
    methods = dict.fromkeys(a.method or cfg.train.method for a in arms)
    todo = plan.seeds * (len(methods) + plan.rounds * sum(1 for a in arms if not twins.get(a.name)))
    done = 0

    def eta() -> str:
        left = (time.time() - started) / max(1, done) * (todo - done)
        return f"; ~{left / 60:.0f} min left" + (" before the reference" if plan.full else "") if done < todo else ""

    for seed in range(plan.seeds):
        scfg = copy.deepcopy(cfg)
        scfg.pool.initial_labeled, scfg.pool.seed, scfg.train.seed = plan.init, seed, seed
        scfg.loop.rounds, scfg.loop.annotator, scfg.loop.warm_start = 0, "simulated", plan.warm_start
        scfg.acquire.budget = plan.budget
        for method in methods:
            base_dir = out / f"seed{seed}" / f"base-{method}"
            mcfg = copy.deepcopy(scfg)
            mcfg.train.method = method
            _fresh_workspace(base_dir, mcfg, data_root)
            with Workspace(base_dir) as ws:
                pool_size = ws.count("pool")
                log(f"seed {seed}: pool {pool_size}, evaluation {ws.count('val')}; training round 0 with {method} "
                    f"({ws.count('pool', 'labeled')} labeled)")
            run_loop(base_dir, run, log=_quiet)  # loop.rounds = 0: round 0's model, shared by the method's arms
            done += 1
        for a in arms:
            if twins.get(a.name):
                continue  # read from its twin's workspace below
            method = a.method or cfg.train.method
            aws = out / f"seed{seed}" / a.name
            _copy_workspace(out / f"seed{seed}" / f"base-{method}", aws,
                            [f"acquire.strategy={a.strategy}", f"loop.rounds={plan.rounds}",
                             f"loop.pre_annotate={str(a.pre_annotate).lower()}", f"acquire.unit={a.unit}"] +
                            ([f"acquire.region_budget={plan.region_budget}"] if plan.region_budget else []))
            t0 = time.time()
            run_loop(aws, run, log=_quiet)
            mine = _rows(a, seed, aws, pool_size)
            rows += mine
            done += plan.rounds
            # a region arm's labeled images stay the initial ones: its progress is the share of pixels reviewed
            region = a.unit == "region"
            curve = ", ".join((f"{r['reviewed_share'] * 100:.1f}%" if region else f"{r['labeled']}") +
                              f": {r['mIoU'] * 100:.1f}" for r in mine)
            log(f"  {a.name:>10} seed {seed}: {curve} "
                + ("(pool px reviewed: mIoU %)" if region else "(labeled: mIoU %)")
                + f"; effort {mine[-1]['pixels_corrected'] / 1e3:.0f}k px; reviewed "
                f"{mine[-1]['reviewed_share'] * 100:.1f}% of the pool's pixels; "
                f"{(time.time() - t0) / 60:.1f} min{eta()}")
        for a in arms:
            twin = twins.get(a.name)
            if twin:
                mine = _rows(a, seed, out / f"seed{seed}" / twin.name, pool_size, drawn=True)
                rows += mine
                log(f"  {a.name:>10} seed {seed}: the images and models of {twin.name}, drawn from scratch; "
                    f"effort {mine[-1]['pixels_corrected'] / 1e3:.0f}k px")
    order = {a.name: k for k, a in enumerate(arms)}  # the plan's order, whichever arm ran first
    rows.sort(key=lambda r: (order[r["arm"]], r["seed"], r["round"]))
    full_miou = None
    if plan.full:
        fcfg = copy.deepcopy(cfg)
        fcfg.pool.initial_labeled, fcfg.loop.rounds, fcfg.train.method = 0, 0, "supervised"
        fcfg.region.enabled = False  # nothing scores the reference: its judge would only slow each step
        if plan.full_overrides:
            from .config import from_dict
            fcfg = from_dict(fcfg.to_dict(), source=cfg.source, overrides=plan.full_overrides)
        log("training once on every pool label (the fully supervised reference)")
        _fresh_workspace(out / "full", fcfg, data_root)
        run_loop(out / "full", run, log=_quiet)
        with Workspace(out / "full") as fws:
            full_miou = fws.round_info(0)["metrics"]["mIoU"]
    summary = summarize(rows, full_miou, pool_size)
    machine = _machine()
    title = (f"{cfg.dataset.name}: init {plan.init}, +{plan.budget}/round, {plan.rounds} rounds, {plan.seeds} "
             f"seed(s)" + (f", profile {plan.profile}" if plan.profile else "") + f" - {machine}")
    result = {"dataset": cfg.dataset.name, "plan": {**asdict(plan), "arms": [asdict(a) for a in arms]},
              "machine": machine, "torch": torch.__version__, "pool_size": pool_size, "method": cfg.train.method,
              "backbone": cfg.model.backbone, "decoder": getattr(cfg.model, "decoder", None),
              "max_iters": cfg.train.max_iters, "image_scale": cfg.train.image_scale, "full_mIoU": full_miou,
              "summary": summary, "rows": rows, "seconds": time.time() - started}
    (out / "results.json").write_text(json.dumps(result, indent=2))
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        classes = cfg.dataset.classes
        w.writerow(["arm", "strategy", "method", "seed", "round", "labeled", "labeled_share", "mIoU",
                    "pixels_corrected", "regions_corrected", "scratch_pixels"] + [f"iou_{c}" for c in classes])
        for r in rows:
            per = r["per_class_iou"] or {}
            w.writerow([r["arm"], r["strategy"], r["method"], r["seed"], r["round"], r["labeled"],
                        f"{r['labeled_share']:.4f}", f"{r['mIoU']:.4f}", r["pixels_corrected"],
                        r["regions_corrected"], r["scratch_pixels"]] +
                       ["" if per.get(c) is None else f"{per[c]:.4f}" for c in classes])
    plot(rows, full_miou, out / "learning_curve.png", title)
    text = summary_markdown(summary, full_miou, title, time.time() - started)
    (out / "summary.md").write_text(text)
    log("\n" + text)
    return result


def _pm(mean, std, fmt="{:.1f}") -> str:
    return "-" if mean is None else (fmt.format(mean) + (f" ± {fmt.format(std)}" if std else ""))


def summary_markdown(summary: list[dict], full_miou: float | None, title: str, seconds: float) -> str:
    headers = ["arm", "final mIoU %", "AUC (mIoU vs px reviewed)", "vs random", "effort (px changed)",
               "AUC (mIoU vs effort)", "pool px reviewed %", "regions asked"]
    if full_miou:
        headers += [f"effort to {TARGET_SHARE:.0%} of full", "images to it"]
    rows = []
    for s in summary:
        row = [s["arm"], _pm(s["final_mIoU"], s["final_mIoU_std"]), _pm(s["auc"], s["auc_std"]),
               None if s["auc_vs_random"] is None else f"{s['auc_vs_random']:+.1f}",
               f"{s['pixels_corrected'] / 1e3:.0f}k", _pm(s["effort_auc"], s["effort_auc_std"]),
               f"{s['reviewed_share'] * 100:.1f}", f"{s['regions_reviewed']:.0f}" if s["regions_reviewed"] else "-"]
        if full_miou:
            reached = s.get("seeds_reaching_target", 0)
            e = s.get("effort_to_target")
            row += [("-" if e is None else f"{e / 1e3:.0f}k ± {s['effort_to_target_std'] / 1e3:.0f}k") +
                    (f" ({reached}/{s['seeds']} seeds)" if reached < s["seeds"] else ""),
                    "-" if s.get("images_to_target") is None else f"{s['images_to_target']:.0f}"]
        rows.append(row)
    upto = summary[0].get("effort_auc_upto_pixels") if summary else None
    full = f"fully supervised mIoU: {full_miou * 100:.1f}\n" if full_miou else ""
    note = f"AUC against effort: mean mIoU over 0..{upto / 1e3:.0f}k pixels of effort\n" if upto else ""
    return (f"{title}\n{full}{note}wall time {seconds / 60:.1f} min\n\n" + table(headers, rows) + "\n")


def _machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA)"
    return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
