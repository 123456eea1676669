"""Export the pool for any trainer: VOC-layout palette PNGs plus DSSN/UniMatch split files.

    <out>/JPEGImages/<name>.<ext>        the images (copied, or symlinked with link=True)
    <out>/SegmentationClass/<name>.png   the current label of every labeled image (255 = ignore)
    <out>/labeled.txt                    "JPEGImages/... SegmentationClass/..." per labeled pool image
    <out>/unlabeled.txt                  "JPEGImages/..." per pool image without a label
    <out>/val.txt                        the evaluation set, with masks
    <out>/classes.txt, export.json       class names, palette and counts

The split files are read unchanged by the published training scripts and by `annotassist train --labeled-list`.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from tqdm import tqdm

from .data.masks import read_mask, write_mask
from .workspace import Workspace


def _place_image(src: Path, dst: Path, link: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    if link:
        os.symlink(src.resolve(), dst)
    else:
        shutil.copy2(src, dst)


def export(ws: Workspace, out: str | Path, link: bool = False, progress: bool = True) -> dict:
    out = Path(out)
    cfg = ws.config
    palette = cfg.palette()
    lists: dict[str, list[str]] = {"labeled": [], "unlabeled": [], "val": []}
    records = [(r, "val" if r.split == "val" else ("labeled" if r.state == "labeled" else "unlabeled"))
               for r in ws.images(split=None)]
    for rec, which in tqdm(records, desc="export", disable=not progress, leave=False):
        label = ws.label_mask(rec.id) if which != "unlabeled" else None
        if which != "unlabeled" and label is None:
            which = "unlabeled"  # a labeled state without a label cannot happen through the workspace API
        rel_img = f"JPEGImages/{rec.name}{rec.image_path.suffix}"
        _place_image(rec.image_path, out / rel_img, link)
        if which == "unlabeled":
            if rec.split == "pool":
                lists["unlabeled"].append(rel_img)
            continue
        rel_mask = f"SegmentationClass/{rec.name}.png"
        # re-written rather than copied so that the export never depends on workspace file names
        write_mask(read_mask(label.path, cfg.num_classes), out / rel_mask, palette)
        lists[which].append(f"{rel_img} {rel_mask}")
    for name, lines in lists.items():
        (out / f"{name}.txt").write_text("".join(line + "\n" for line in lines))
    (out / "classes.txt").write_text("\n".join(cfg.dataset.classes) + "\n")
    summary = {"classes": cfg.dataset.classes, "palette": [list(c) for c in palette], "ignore_index": 255,
               **{f"{k}_count": len(v) for k, v in lists.items()}}
    (out / "export.json").write_text(json.dumps(summary, indent=2))
    return summary
