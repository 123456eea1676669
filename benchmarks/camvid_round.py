"""One active-learning round on CamVid, as `annotassist loop` runs it: train, score, select, pre-annotate.

A fresh workspace on the CamVid frames (configs/camvid.yaml, `--profile cpu` by default) with N seeded labeled
images; then round 0's steps, each timed: train (DSSN from ImageNet weights, evaluated on the 101 val frames),
score the unlabeled pool, select the next 16, store their pseudo-masks. The loop's own step functions do the
work, so this is what a person waits for between two batches of corrections.

    python benchmarks/camvid_round.py                     # cpu profile, 46 labeled (1/8 of 367)
    python benchmarks/camvid_round.py --labeled 16 --set train.max_iters=200

Writes benchmarks/results/camvid_round_<profile>.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from train_speed import CAMVID, machine_name  # noqa: E402  (sets the OpenMP policy before torch loads)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--labeled", type=int, default=46)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--name", default=None, help="results file stem (default camvid_round_<profile>)")
    args = ap.parse_args()
    import torch

    from annotassist.config import load_config
    from annotassist.annotate.annotators import SimulatedAnnotator
    from annotassist.importer import create_workspace
    from annotassist.loop import RunOptions, run_step
    from annotassist.runtime.threads import current_plan

    cfg = load_config(ROOT / "configs" / "camvid.yaml", profile=args.profile or None, overrides=[
        f"pool.initial_labeled={args.labeled}", f"pool.seed={args.seed}", f"train.seed={args.seed}"] + args.overrides)
    plan = current_plan(cfg.train.num_workers)
    print(f"CamVid round, profile {args.profile}: {cfg.model.backbone} + {cfg.model.decoder} decoder, crop "
          f"{cfg.train.crop_size}, scale {cfg.train.image_scale}, {cfg.train.max_iters} steps, {args.labeled} "
          f"labeled; {plan.describe()}", flush=True)
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        ws, _ = create_workspace(Path(tmp) / "ws", cfg, CAMVID, progress=False)
        times["init (not part of a round)"] = time.time() - t0
        # the loop's own step function: each step begun and ended as it is in `annotassist loop`
        opts = RunOptions(device=args.device, progress=False)
        annotator = SimulatedAnnotator(ws)
        steps = {name: (lambda step=step: run_step(ws, 0, step, opts, annotator, log=lambda *_: None))
                 for name, step in (("train", "train"), ("score", "score"), ("select", "select"),
                                    ("pre-annotate", "push"))}
        details = {}
        for name, fn in steps.items():
            t0 = time.time()
            details[name] = fn()
            times[name] = time.time() - t0
            print(f"  {name:14s} {times[name]:7.1f} s", flush=True)
        metrics = ws.round_info(0)["metrics"]
        ws.close()
    round_s = sum(v for k, v in times.items() if not k.startswith("init"))
    print(f"round (train + score + select + pre-annotate): {round_s:.0f} s = {round_s / 60:.1f} min; mIoU "
          f"{metrics['mIoU'] * 100:.1f} at {args.labeled} labeled ({metrics['steps']} steps, "
          f"{metrics['seconds'] / metrics['steps']:.2f} s/step)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = args.name or f"camvid_round_{args.profile or 'full'}"
    name = name if name.endswith(".json") else name + ".json"
    (out / name).write_text(json.dumps({
        "machine": machine_name(args.device or ("cuda" if torch.cuda.is_available() else "cpu")),
        "torch": torch.__version__, "threads": plan.describe(), "profile": args.profile, "labeled": args.labeled,
        "seed": args.seed, "overrides": args.overrides, "backbone": cfg.model.backbone,
        "decoder": cfg.model.decoder, "crop": cfg.train.crop_size, "image_scale": cfg.train.image_scale,
        "steps": metrics["steps"], "seconds": times, "round_seconds": round_s, "mIoU": metrics["mIoU"],
        "per_class_iou": metrics["per_class_iou"], "details": {k: v for k, v in details.items() if k != "train"}},
        indent=2, default=str))
    print(f"wrote {out / name}")


if __name__ == "__main__":
    main()
