"""DSSN in short schedules: the released recipe, the short-schedule recipe and its pieces, against supervised.

One call trains one (variant, seed) and appends its record to benchmarks/results/dssn_short_<set>.json (so a
sweep is one short `cpu` call per run, and a re-run of a (variant, seed, steps) replaces its record);
`--summary` prints the table (mean +- std over seeds).

  - demo: the embedded synthetic set of configs/demo.yaml (300 pool + 100 val, 128 px, trained at 64 px),
    16 labeled images picked as `annotassist init` picks them (pool.seed 0, the same split for every seed);
    the seed changes the training randomness.
  - camvid: configs/camvid.yaml with its `cpu` profile, 46 of 367 labeled; as in benchmarks/camvid_ssl.py the
    seed picks the labeled split as well as the training randomness.

    python benchmarks/dssn_short.py --set-name demo --variant released --seed 0 --iters 250
    python benchmarks/dssn_short.py --set-name demo --summary

Each record has the mIoU, per-class IoU, wall time, seconds per step and, from the run's log.jsonl, the
kept-pixel ratio per pseudo-class averaged over the second half of the run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from annotassist.config import CPU_RECIPE, Config, load_config  # noqa: E402
from annotassist.data.layouts import Sample, read_list  # noqa: E402
from annotassist.data.synthetic import generate  # noqa: E402
from annotassist.report import table  # noqa: E402
from annotassist.train.trainer import Trainer  # noqa: E402

# the released recipe: configs/demo.yaml and CamVid's cpu profile now ship the short one (config.CPU_RECIPE), so
# `released` sets back each key that recipe changes
RELEASED = [f"dssn.{k}={str(v).lower() if isinstance(v, bool) else v}"
            for k, v in ((k, getattr(Config().dssn, k)) for k in CPU_RECIPE["dssn"])]
# the short-schedule recipe, piece by piece (each list adds to the one before unless said otherwise)
LABELED = ["dssn.weighting=additive", "dssn.labeled_batch_mult=2"]
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "supervised": ("supervised", []),
    "released": ("dssn", RELEASED),
    # the recipe the config (and its profile) ships: for demo and CamVid cpu, config.CPU_RECIPE
    "shipped": ("dssn", []),
    # the labeled loss not weighed by class (CamVid's cpu profile weighs it: train.class_balance=balanced)
    "supervised_unbalanced": ("supervised", ["train.class_balance=none"]),
    "shipped_unbalanced": ("dssn", ["train.class_balance=none"]),
    # the shipped recipe, its EMA teacher evaluated (an average of the last ~100 students) instead of the student
    "shipped_teacher": ("dssn", ["dssn.eval_teacher=true"]),
    # the shipped recipe with the unlabeled terms at twice the weight
    "shipped_w2": ("dssn", ["dssn.unlabeled_weight=2.0"]),
    # better pseudo-labels: the teacher's running BatchNorm statistics and its mirror view
    "shipped_tq": ("dssn", ["dssn.teacher_bn=running", "dssn.teacher_flip=true"]),
    # the unlabeled terms from the first step (no supervised warm-up, no ramp): with --oracle, the most the
    # unlabeled branch could add in the run's steps
    "shipped_nowarm": ("dssn", ["dssn.warmup=0", "dssn.rampup=0"]),
    # the labeled signal of the supervised baseline, the released unlabeled terms on top
    "labeled": ("dssn", LABELED),
    "labeled_w05": ("dssn", LABELED + ["dssn.unlabeled_weight=0.5"]),
    "labeled_b1": ("dssn", ["dssn.weighting=additive"]),
    "rank": ("dssn", LABELED + ["dssn.selection=class_rank"]),
    "rank_released_loss": ("dssn", ["dssn.selection=class_rank"]),
    "rank_q03": ("dssn", LABELED + ["dssn.selection=class_rank", "dssn.rank_keep=0.3"]),
    "rank_q07": ("dssn", LABELED + ["dssn.selection=class_rank", "dssn.rank_keep=0.7"]),
    "rank_warm": ("dssn", LABELED + ["dssn.selection=class_rank", "dssn.warmup=0.2", "dssn.rampup=0.3"]),
    "rank_ramp": ("dssn", LABELED + ["dssn.selection=class_rank", "dssn.rampup=0.4"]),
    "rank_bal": ("dssn", LABELED + ["dssn.selection=class_rank", "dssn.class_balance=inverse_freq",
                                    "dssn.class_balance_power=0.5"]),
    "rank_bal1": ("dssn", LABELED + ["dssn.selection=class_rank", "dssn.class_balance=inverse_freq"]),
    "rank_region": ("dssn", LABELED + ["dssn.selection=class_rank", "region.filter=true",
                                       "region.filter_start_iter=50"]),
    "rank_ema99": ("dssn", LABELED + ["dssn.selection=class_rank", "dssn.ema_decay=0.99"]),
    "labeled_ema99": ("dssn", LABELED + ["dssn.ema_decay=0.99"]),
    "rank_da": ("dssn", LABELED + ["dssn.selection=class_rank", "dssn.dist_align=true"]),
    "rank_ema99_da": ("dssn", LABELED + ["dssn.selection=class_rank", "dssn.ema_decay=0.99",
                                         "dssn.dist_align=true"]),
    "rank_ema99_bal": ("dssn", LABELED + ["dssn.selection=class_rank", "dssn.ema_decay=0.99",
                                          "dssn.class_balance=inverse_freq", "dssn.class_balance_power=0.5"]),
}
# the full short-schedule recipe, and each piece taken out of it (leave-one-out ablation)
RANK = ["dssn.selection=class_rank", "dssn.rank_keep=0.5"]
WARM = ["dssn.warmup=0.2", "dssn.rampup=0.3"]
BAL = ["dssn.class_balance=inverse_freq", "dssn.class_balance_power=0.5"]
EMA = ["dssn.ema_decay=0.99"]
SHORT = LABELED + RANK + WARM + BAL + EMA
VARIANTS.update({
    "short": ("dssn", SHORT),
    "short_da": ("dssn", SHORT + ["dssn.dist_align=true"]),
    "short_region": ("dssn", SHORT + ["region.filter=true", "region.filter_start_iter=100"]),
    "short_no_labeled": ("dssn", RANK + WARM + BAL + EMA),
    "short_no_rank": ("dssn", LABELED + WARM + BAL + EMA),
    "short_no_warm": ("dssn", LABELED + RANK + BAL + EMA),
    "short_no_bal": ("dssn", LABELED + RANK + WARM + EMA),
    "short_no_ema": ("dssn", LABELED + RANK + WARM + BAL),
    "short_q03": ("dssn", SHORT + ["dssn.rank_keep=0.3"]),
    "short_q07": ("dssn", SHORT + ["dssn.rank_keep=0.7"]),
    "short_da_sep": ("dssn", SHORT + ["dssn.dist_align=true", "dssn.labeled_forward=separate"]),
    "short_da_sep_teacher": ("dssn", SHORT + ["dssn.dist_align=true", "dssn.labeled_forward=separate",
                                              "dssn.eval_teacher=true"]),
})


def demo_data(root: Path, cfg) -> tuple[list[Sample], list[Sample], list[Sample]]:
    s = cfg.synthetic
    if not (root / "val.txt").is_file():
        generate(root, num_pool=s.num_pool, num_val=s.num_val, size=s.size, seed=s.seed, progress=False)
    pool = read_list(root / "train.txt", root)[0]
    val = read_list(root / "val.txt", root)[0]
    # as Workspace.sync_from_source picks pool.initial_labeled images
    names = sorted(p.name for p in pool)
    picked = set(np.random.default_rng(cfg.pool.seed).permutation(names)[: cfg.pool.initial_labeled].tolist())
    labeled = [p for p in pool if p.name in picked]
    unlabeled = [Sample(p.name, p.image, None) for p in pool if p.name not in picked]
    return labeled, unlabeled, val


CAMVID_LABELED = 46  # the labeled frames of every CamVid run unless --labeled says otherwise


def camvid_data(root: Path, n_labeled: int, seed: int, keep_masks: bool = False):
    """(labeled, unlabeled, val); the unlabeled samples lose their mask paths unless `keep_masks` (the oracle)."""
    pool = read_list(root / "train.txt", root)[0]
    val = read_list(root / "val.txt", root)[0]
    perm = np.random.default_rng(seed).permutation(len(pool))
    labeled = [pool[i] for i in perm[:n_labeled]]
    unlabeled = [Sample(pool[i].name, pool[i].image, pool[i].mask if keep_masks else None)
                 for i in perm[n_labeled:]]
    return labeled, unlabeled, val


def kept_summary(log_path: Path, total: int) -> dict:
    """Mean kept ratio per pseudo-class (and overall) over the logged steps of the second half of the run."""
    per: dict[str, list[float]] = {}
    overall = []
    for line in log_path.read_text().splitlines():
        rec = json.loads(line)
        if "eval" in rec or rec.get("step", 0) <= total // 2 or not rec.get("ramp", 1.0):
            continue
        overall.append(rec.get("kept", 0.0))
        for name, v in (rec.get("kept_per_class") or {}).items():
            if v is not None:
                per.setdefault(name, []).append(v)
    return {"kept": float(np.mean(overall)) if overall else None,
            "kept_per_class": {k: float(np.mean(v)) for k, v in per.items()}}


def run(args) -> None:
    method, overrides = VARIANTS[args.variant] if args.variant in VARIANTS else ("dssn", [])
    if args.variant not in VARIANTS and not args.set:
        sys.exit(f"unknown variant {args.variant!r}: one of {', '.join(VARIANTS)}, or name your own with --set")
    if args.oracle and (args.set_name != "camvid" or method != "dssn"):
        sys.exit("--oracle: a DSSN variant on --set-name camvid (benchmarks/dssn_oracle.py covers the demo set)")
    overrides = overrides + list(args.set) + [f"train.max_iters={args.iters}", f"train.seed={args.seed}",
                                              "train.log_every=5", "train.eval_every=0"]
    if args.set_name == "demo":
        cfg = load_config(ROOT / "configs" / "demo.yaml", overrides=overrides)
        labeled, unlabeled, val = demo_data(Path(args.data or "/tmp/annotassist-demo-data"), cfg)
    else:
        cfg = load_config(ROOT / "configs" / "camvid.yaml", profile=args.profile, overrides=overrides)
        n_labeled = args.labeled or CAMVID_LABELED
        labeled, unlabeled, val = camvid_data(Path(args.data or ROOT.parent / "shared" / "data" / "camvid"),
                                              n_labeled, args.seed, keep_masks=args.oracle)
        if n_labeled != CAMVID_LABELED:
            args.variant += f"_l{n_labeled}"  # e.g. supervised_l367: every pool frame labeled
    if args.oracle:
        # the ceiling of this variant's unlabeled branch: the true masks in place of every pseudo-label
        from dssn_oracle import install_oracle

        install_oracle()
        args.variant += "_oracle"
    out = ROOT / "benchmarks" / "results" / "runs" / f"dssn_short_{args.set_name}_{args.variant}_s{args.seed}"
    if (out / "log.jsonl").exists():
        (out / "log.jsonl").unlink()
    t0 = time.time()
    res = Trainer(cfg, labeled, unlabeled, val, out, method=method, progress=args.progress).fit()
    seconds = time.time() - t0
    m = res.metrics
    rec = {"variant": args.variant, "method": method, "overrides": overrides, "seed": args.seed,
           "steps": res.steps, "labeled": len(labeled), "mIoU": m["mIoU"], "per_class_iou": m["per_class_iou"],
           "seconds": seconds, "train_seconds": m["seconds"], "sec_per_step": m["seconds"] / max(1, res.steps),
           **(kept_summary(out / "log.jsonl", res.steps) if method == "dssn" else {}),
           "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, CPU", "time": time.time()}
    path = ROOT / "benchmarks" / "results" / f"dssn_short_{args.set_name}.json"
    data = json.loads(path.read_text()) if path.is_file() else {"runs": []}
    data["runs"] = [r for r in data["runs"] if (r["variant"], r["seed"], r["steps"]) !=
                    (args.variant, args.seed, res.steps)] + [rec]
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)
    print(f"{args.set_name} {args.variant} seed {args.seed}: mIoU {m['mIoU'] * 100:.2f} in {res.steps} steps, "
          f"{seconds:.0f} s ({rec['sec_per_step']:.2f} s/step), kept {rec.get('kept')}")
    if rec.get("kept_per_class"):
        print("  kept per class:", {k: round(v, 3) for k, v in rec["kept_per_class"].items()})


def summary(args) -> None:
    path = ROOT / "benchmarks" / "results" / f"dssn_short_{args.set_name}.json"
    if not path.is_file():
        sys.exit(f"no runs recorded for {args.set_name} yet ({path}): run one first, e.g. "
                 f"python benchmarks/dssn_short.py --set-name {args.set_name} --variant supervised --seed 0")
    runs = json.loads(path.read_text())["runs"]
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["variant"], r["steps"]), []).append(r)
    rows = []
    for (variant, steps), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        miou = np.array([r["mIoU"] for r in rs]) * 100
        kept = [r.get("kept") for r in rs if r.get("kept") is not None]
        kpc = [r.get("kept_per_class", {}) for r in rs]
        classes = sorted({c for d in kpc for c in d})
        obj = [np.mean([d[c] for c in d if c != "background"]) for d in kpc if d]
        rows.append([variant, steps, len(rs), f"{miou.mean():.1f} ± {miou.std(ddof=1) if len(rs) > 1 else 0:.1f}",
                     " ".join(f"{x:.1f}" for x in miou),
                     f"{np.mean([r['sec_per_step'] for r in rs]):.2f}",
                     f"{np.mean(kept):.2f}" if kept else "-",
                     f"{np.mean(obj):.2f}" if obj and classes else "-"])
    print(table(["variant", "steps", "seeds", "mIoU", "per seed", "s/step", "kept", "kept obj/cls"], rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set-name", choices=["demo", "camvid"], default="demo")
    ap.add_argument("--variant", default="released")
    ap.add_argument("--set", action="append", default=[], help="more config overrides (KEY=VALUE)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--iters", type=int, default=250)
    ap.add_argument("--profile", default="cpu", help="camvid: the config profile")
    ap.add_argument("--labeled", type=int, default=None, help=f"camvid: labeled images (default {CAMVID_LABELED})")
    ap.add_argument("--data", default=None)
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--oracle", action="store_true",
                    help="camvid: the unlabeled images' true masks in place of the pseudo-labels (recorded as "
                         "VARIANT_oracle): what the variant's unlabeled branch could give with perfect labels")
    ap.add_argument("--summary", action="store_true")
    args = ap.parse_args()
    summary(args) if args.summary else run(args)


if __name__ == "__main__":
    main()
