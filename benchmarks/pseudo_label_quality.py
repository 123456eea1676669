"""How good are a short run's pseudo-labels? mIoU of a model's predictions on CamVid's UNLABELED frames.

DSSN learns from its teacher's pseudo-labels; with the ground truth in their place it beats supervised training
by 8 mIoU (benchmarks/dssn_oracle.py), with the real teacher by 0.2. This measures the teacher's side on the
frames DSSN pseudo-labels (the split `benchmarks/dssn_short.py --set-name camvid` uses for that seed), with the
masks those frames have but training never sees:
  - whole frames, BatchNorm running statistics: plain, + the mirror view (`dssn.teacher_flip`, `loop.tta:
    flip`), + scales 0.75/1/1.25 (`loop.tta: multiscale`), with the share of pixels each gets wrong (what a
    person correcting that pre-annotation would have to change);
  - the pixels the short recipe keeps (`class_rank`, top 50% of each predicted class in each frame);
  - 160-px crops in batches of 4, as the teacher sees them in a step: BatchNorm with the batch's own statistics
    (as released) against the running ones (`dssn.teacher_bn: running`).

    python benchmarks/dssn_short.py --set-name camvid --variant supervised --seed 0 --iters 500   # the model
    python benchmarks/pseudo_label_quality.py --seed 0

Writes benchmarks/results/pseudo_label_quality_camvid.json (one record per model, replaced on a rerun).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from annotassist.config import load_config  # noqa: E402
from annotassist.data.datasets import EvalDataset  # noqa: E402
from annotassist.data.layouts import read_list  # noqa: E402
from annotassist.predict import TTA_VIEWS, mean_probs, view_probs  # noqa: E402
from annotassist.pseudo_label import class_rank_keep  # noqa: E402
from annotassist.runtime.checkpoint import load_model  # noqa: E402
from annotassist.runtime.threads import configure  # noqa: E402
from annotassist.train.evaluate import confusion, iou_from_confusion  # noqa: E402
from dssn_short import camvid_data  # noqa: E402

IGNORE = 255


@torch.no_grad()
def measure(model, ds, num_classes: int, crop: int, seed: int) -> tuple[dict[str, float], dict[str, float], float]:
    """(mIoU % per label source, % of wrong pixels per `loop.tta` setting, % of pixels class_rank keeps)."""
    c = num_classes
    conf = {k: torch.zeros(c, c, dtype=torch.long) for k in
            ("plain", "flip", "multiscale_flip", "kept_class_rank_50", "crops_bn_batch", "crops_bn_running")}
    kept_share = []
    model.eval()
    for i in range(len(ds)):
        x, y = ds[i]
        x, y = x[None], y[None]
        # the six views once (scale 0.75, 1, 1.25, each plain then mirrored): the plain and mirror settings are
        # the scale-1 pair of the multiscale set, so they are averaged from it instead of computed again
        views = list(view_probs(model, x, *TTA_VIEWS["multiscale"]))
        p = views[2]
        conf["plain"] += confusion(p.argmax(1), y, c)
        keep = class_rank_keep(p, 0.5)
        kept_share.append(float(keep.float().mean()))
        conf["kept_class_rank_50"] += confusion(p.argmax(1), torch.where(keep, y, IGNORE), c)
        conf["flip"] += confusion(mean_probs(views[2:4]).argmax(1), y, c)
        conf["multiscale_flip"] += confusion(mean_probs(views).argmax(1), y, c)
    g = torch.Generator().manual_seed(seed)
    for i in range(0, len(ds) - 3, 4):
        xs, ys = zip(*(ds[j] for j in range(i, i + 4)))
        x, y = torch.stack(xs), torch.stack(ys)
        top = int(torch.randint(0, x.shape[-2] - crop + 1, (1,), generator=g))
        left = int(torch.randint(0, x.shape[-1] - crop + 1, (1,), generator=g))
        x, y = x[..., top:top + crop, left:left + crop], y[..., top:top + crop, left:left + crop]
        model.eval()
        conf["crops_bn_running"] += confusion(model(x).argmax(1), y, c)
        model.train()  # batch statistics; a forward in train mode also moves the running ones: restored below
        state = {k: v.clone() for k, v in model.state_dict().items()}
        conf["crops_bn_batch"] += confusion(model(x).argmax(1), y, c)
        model.load_state_dict(state)
    model.eval()
    miou = {k: 100 * iou_from_confusion(v)["mIoU"] for k, v in conf.items()}
    # the pixels a person would have to change in a pre-annotation made with each view set (`loop.tta`)
    wrong = {t: 100 * (1 - iou_from_confusion(conf[k])["pixel_acc"])
             for t, k in (("none", "plain"), ("flip", "flip"), ("multiscale", "multiscale_flip"))}
    return miou, wrong, 100 * sum(kept_share) / len(kept_share)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0, help="the dssn_short split (and the crops' randomness)")
    ap.add_argument("--model", default=None, help="model.pt (default: dssn_short's 'supervised' run of that seed)")
    ap.add_argument("--labeled", type=int, default=46)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "camvid"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "pseudo_label_quality_camvid.json"))
    args = ap.parse_args()
    model_path = Path(args.model or ROOT / "benchmarks" / "results" / "runs" /
                      f"dssn_short_camvid_supervised_s{args.seed}" / "model.pt")
    if not model_path.is_file():
        sys.exit(f"no model at {model_path}: train one with `python benchmarks/dssn_short.py --set-name camvid "
                 f"--variant supervised --seed {args.seed} --iters 500`, or pass --model")
    threads = configure(0)
    cfg = load_config(ROOT / "configs" / "camvid.yaml", profile="cpu")
    root = Path(args.data)
    _, unlabeled, _ = camvid_data(root, args.labeled, args.seed)
    masks = {s.name: s for s in read_list(root / "train.txt", root)[0]}
    ds = EvalDataset([masks[s.name] for s in unlabeled], cfg.num_classes, cfg.train.image_scale,
                     cfg.dataset.ignore_index)
    model = load_model(model_path, cfg)[0]
    meta = json.loads((model_path.parent / "metrics.json").read_text()) if \
        (model_path.parent / "metrics.json").is_file() else {}
    print(f"pseudo-label quality: {model_path} ({meta.get('method', '?')}, {meta.get('steps', '?')} steps, "
          f"{meta.get('labeled', '?')} labeled) on {len(ds)} unlabeled CamVid frames; {threads.describe()}")
    t0 = time.time()
    miou, wrong, kept = measure(model, ds, cfg.num_classes, cfg.train.crop_size, args.seed)
    rec = {"model": str(model_path.relative_to(ROOT)) if model_path.is_relative_to(ROOT) else str(model_path),
           "seed": args.seed, "method": meta.get("method"), "steps": meta.get("steps"),
           "val_mIoU": 100 * meta["mIoU"] if "mIoU" in meta else None, "unlabeled_frames": len(ds),
           "mIoU_on_unlabeled": {k: round(v, 2) for k, v in miou.items()}, "kept_share_pct": round(kept, 1),
           "wrong_pixels_pct": {k: round(v, 2) for k, v in wrong.items()}, "seconds": round(time.time() - t0, 1),
           "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, CPU", "time": time.time()}
    for k, v in rec["mIoU_on_unlabeled"].items():
        print(f"  {k:20s} {v:5.1f} mIoU")
    for k, v in rec["wrong_pixels_pct"].items():
        print(f"  pre-annotation, loop.tta={k:10s} {v:5.2f}% of the pixels wrong")
    print(f"  class_rank 50% keeps {rec['kept_share_pct']}% of the pixels; {rec['seconds']} s")
    out = Path(args.out)
    data = json.loads(out.read_text()) if out.is_file() else {"runs": []}
    data["runs"] = [r for r in data["runs"] if r["model"] != rec["model"]] + [rec]
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
