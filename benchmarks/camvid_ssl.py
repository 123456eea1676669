"""DSSN vs supervised on CamVid with 1/8 of the training set labeled (46 of 367 images, seeded).

Same backbone, same steps; mIoU on CamVid val (101 images).
  - GPU: the full recipe of configs/camvid.yaml (DeepLabV3+ ResNet-101, crop 321, 80 epochs).
  - CPU: the stated `cpu` profile of configs/camvid.yaml (EfficientNet-Lite0 with offline ImageNet
    weights, images at half size, `--iters` steps).

    python benchmarks/camvid_ssl.py                     # CPU profile on CPU, full recipe on GPU
    python benchmarks/camvid_ssl.py --iters 1500 --seeds 0,1

Writes benchmarks/results/camvid_ssl_<device>.json and prints a per-class table.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from annotassist.config import load_config  # noqa: E402
from annotassist.data.layouts import Sample, read_list  # noqa: E402
from annotassist.report import table  # noqa: E402
from annotassist.train.trainer import Trainer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "camvid"))
    ap.add_argument("--labeled", type=int, default=46, help="labeled images (46 = 1/8 of 367)")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--profile", default=None, help="config profile (default: cpu on CPU, none on GPU)")
    ap.add_argument("--iters", type=int, default=None, help="training steps for both methods")
    ap.add_argument("--set", action="append", default=[], help="more config overrides")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    gpu = torch.cuda.is_available()
    profile = args.profile if args.profile is not None else (None if gpu else "cpu")
    overrides = list(args.set) + ([f"train.max_iters={args.iters}"] if args.iters else [])
    cfg = load_config(ROOT / "configs" / "camvid.yaml", profile=profile or None, overrides=overrides)
    data = Path(args.data)
    pool = read_list(data / "train.txt", data)[0]
    val = read_list(data / "val.txt", data)[0]
    runs = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        perm = np.random.default_rng(seed).permutation(len(pool))
        labeled = [pool[i] for i in perm[: args.labeled]]
        unlabeled = [Sample(pool[i].name, pool[i].image, None) for i in perm[args.labeled:]]
        for method in ("supervised", "dssn"):
            cfg.train.seed = seed
            out = Path(args.out) / "runs" / f"camvid_ssl_{method}_seed{seed}"
            t0 = time.time()
            res = Trainer(cfg, labeled, unlabeled, val, out, method=method).fit()
            m = res.metrics
            runs.append({"seed": seed, "method": method, "mIoU": m["mIoU"], "per_class_iou": m["per_class_iou"],
                         "steps": res.steps, "seconds": time.time() - t0})
            print(f"seed {seed} {method:10s} mIoU {m['mIoU'] * 100:.2f} ({res.steps} steps, "
                  f"{time.time() - t0:.0f} s)", flush=True)
    machine = torch.cuda.get_device_name(0) if gpu else f"CPU {platform.machine()}, {torch.get_num_threads()} threads"
    by = {meth: [r for r in runs if r["method"] == meth] for meth in ("supervised", "dssn")}
    mean = {meth: float(np.mean([r["mIoU"] for r in rs])) for meth, rs in by.items()}
    print(f"\nCamVid, {args.labeled}/{len(pool)} labeled, {cfg.model.backbone}, crop {cfg.train.crop_size}, "
          f"image scale {cfg.train.image_scale}, {runs[0]['steps']} steps, profile {profile or 'full recipe'}, "
          f"{machine}")
    classes = cfg.dataset.classes
    rows = [[c] + [float(np.mean([r["per_class_iou"][c] or 0 for r in by[meth]])) * 100
                   for meth in ("supervised", "dssn")] for c in classes]
    rows.append(["mIoU", mean["supervised"] * 100, mean["dssn"] * 100])
    print(table(["class", "supervised", "dssn"], rows))
    print(f"DSSN - supervised: {(mean['dssn'] - mean['supervised']) * 100:+.2f} mIoU")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = "cuda" if gpu else "cpu"
    (out / f"camvid_ssl_{dev}.json").write_text(json.dumps({
        "machine": machine, "profile": profile or "full", "labeled": args.labeled, "pool": len(pool),
        "backbone": cfg.model.backbone, "crop": cfg.train.crop_size, "image_scale": cfg.train.image_scale,
        "steps": runs[0]["steps"], "mean_mIoU": mean, "runs": runs}, indent=2))
    print(f"wrote {out / f'camvid_ssl_{dev}.json'}")


if __name__ == "__main__":
    main()
