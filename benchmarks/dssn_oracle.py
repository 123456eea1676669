"""Does DSSN's machinery turn unlabeled images into accuracy when its pseudo-labels are right?

A diagnostic for short CPU budgets, where the real EMA teacher's pseudo-labels are too poor for DSSN to beat
supervised training (see the README). Everything DSSN does with unlabeled images is kept (weak and strong
views, CutMix with the partner's labels, the fp/Fp decodes, the kept-pixel normalisation, the alignment
terms); only the two label sources, `dssn.teacher_targets` and `dssn.student_targets`, are replaced by the
ground truth taken through the same crops and boxes. If this does not beat supervised training at the same
labels and steps, the unlabeled branch is broken; if it does, the gap to real DSSN is pseudo-label quality.

    python benchmarks/dssn_oracle.py [--steps 600] [--labeled 4]

Writes benchmarks/results/dssn_oracle.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from annotassist.config import from_dict  # noqa: E402
from annotassist.data import datasets as ds_mod  # noqa: E402
from annotassist.data.layouts import read_list  # noqa: E402
from annotassist.data.masks import IGNORE  # noqa: E402
from annotassist.data.synthetic import CLASSES, generate  # noqa: E402
from annotassist.data.transforms import strong_view, weak_view  # noqa: E402
from annotassist.train import dssn  # noqa: E402
from annotassist.train.trainer import Trainer  # noqa: E402


def views_with_truth(self, s, prefix):
    """SemiDataset's unlabeled views plus the true mask cropped and flipped with them (the oracle's labels)."""
    img, mask = self._load(s, with_mask=True)
    w, truth = weak_view(img, mask, self.crop, self.scale_range)
    return {f"{prefix}_w": self._out(w), f"{prefix}_s1": self._out(strong_view(w, self.strong)),
            f"{prefix}_s2": self._out(strong_view(w, self.strong)), f"{prefix}_valid": truth[0] != IGNORE,
            f"{prefix}_truth": truth[0].long()}


def oracle_teacher(teacher, batch, cfg, ctx, dist_align=None):
    labels, keeps, valids = [], [], []
    for box in (batch["box1"].bool(), batch["box2"].bool()):
        truth = torch.where(box, batch["mix_truth"], batch["u_truth"])
        valid = truth != IGNORE
        labels.append(torch.where(valid, truth, 0))
        keeps.append(valid)
        valids.append(torch.where(box, batch["mix_valid"], batch["u_valid"]))
    return dssn.StrongTargets(tuple(labels), tuple(keeps), tuple(valids), torch.ones(1))


def oracle_student(pred_w, batch, cfg, dist_align=None):
    valid = batch["u_truth"] != IGNORE
    return torch.where(valid, batch["u_truth"], 0), valid


def install_oracle() -> None:
    """From here on, DSSN's unlabeled images are served with their true masks and both label sources read
    them (the unlabeled samples must carry their mask paths)."""
    ds_mod.SemiDataset._unlabeled_views = views_with_truth
    dssn.teacher_targets, dssn.student_targets = oracle_teacher, oracle_student


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--labeled", type=int, default=4)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    tmp = Path(tempfile.mkdtemp(prefix="oracle-"))
    generate(tmp / "data", num_pool=120, num_val=40, size=64, seed=1, progress=False)
    pool = read_list(tmp / "data" / "train.txt", tmp / "data")[0]
    val = read_list(tmp / "data" / "val.txt", tmp / "data")[0]
    labeled, unlabeled = pool[: args.labeled], pool[args.labeled:]
    cfg = from_dict({"dataset": {"name": "synth", "layout": "list", "classes": list(CLASSES)}}, source="<oracle>",
                    overrides=["model.backbone=efficientnet_lite0", "model.weights=imagenet", "train.crop_size=64",
                               "train.batch_size=4", "train.num_workers=0", f"train.max_iters={args.steps}",
                               "train.eval_every=0", "train.lr=0.01", "dssn.ema_decay=0.99", "region.enabled=false"])
    results = {}
    t0 = time.time()
    results["supervised"] = Trainer(cfg, labeled, unlabeled, val, tmp / "sup", method="supervised").fit().metrics
    results["dssn"] = Trainer(cfg, labeled, unlabeled, val, tmp / "dssn", method="dssn").fit().metrics
    install_oracle()
    results["dssn_oracle"] = Trainer(cfg, labeled, unlabeled, val, tmp / "oracle", method="dssn").fit().metrics
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, CPU"
    print(f"\n{args.labeled} labeled + {len(unlabeled)} unlabeled synthetic 64px images, {args.steps} steps, "
          f"Lite0 ImageNet, {machine} ({(time.time() - t0) / 60:.1f} min)")
    for k, m in results.items():
        print(f"  {k:>12}: mIoU {m['mIoU'] * 100:.1f}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "dssn_oracle.json").write_text(json.dumps(
        {"steps": args.steps, "labeled": args.labeled, "unlabeled": len(unlabeled), "machine": machine,
         "mIoU": {k: m["mIoU"] for k, m in results.items()},
         "per_class_iou": {k: m["per_class_iou"] for k, m in results.items()}}, indent=1))


if __name__ == "__main__":
    main()
