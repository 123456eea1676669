"""Export the pool for any trainer: VOC-layout palette PNGs plus DSSN/UniMatch split files.

    <out>/JPEGImages/<name>.<ext>        the images (copied, or symlinked with link=True)
    <out>/SegmentationClass/<name>.png   the current label of every labeled image (255 = ignore)
    <out>/labeled.txt                    "JPEGImages/... SegmentationClass/..." per labeled pool image
    <out>/unlabeled.txt                  "JPEGImages/..." per pool image without a label (with a partial one too)
    <out>/partial.txt                    region mode: "JPEGImages/... SegmentationClass/..." per image labeled only
                                         in the regions a person reviewed (255 everywhere else)
    <out>/val.txt                        the evaluation set, with masks
    <out>/classes.txt, export.json       class names, palette and counts
    <out>/.annotassist-export            the files this export wrote (so a later export may replace them)

The split files are read unchanged by the published training scripts and by `annotassist train --labeled-list`.

An export never touches what it did not write. It goes into a new folder or one an earlier export made (the
marker file lists what that export wrote); a folder that holds anything else, or that contains or lies inside
the dataset or the workspace, is refused unless `force`, and even then no file that is already there is
replaced. Everything is first written to a staging folder beside `out`, so a label that cannot be read stops
the export before `out` changes; the staged files are then moved in, the split files last.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path


from . import faults
from .data.layouts import stays_inside
from .data.masks import read_mask, write_mask
from .errors import AnnotassistError, DataError, Problem
from .progress import progress as progress_bar
from .workspace import Workspace

MARKER = ".annotassist-export"
LISTS = ("labeled", "unlabeled", "val", "partial")


class ExportError(AnnotassistError):
    pass


def export(ws: Workspace, out: str | Path, link: bool = False, progress: bool = True, force: bool = False) -> dict:
    out = Path(out)
    ours = check_destination(ws, out, force)
    with ws.snapshot():  # one consistent pool, even beside a running loop
        plan, skipped = _plan(ws)
        written = [rel for item in plan for rel in (item["image"], item["mask"]) if rel] + \
            [f"{n}.txt" for n in LISTS] + ["classes.txt", "export.json"]
        foreign = [rel for rel in written if rel not in ours and (os.path.lexists(out / rel))]
        if foreign:
            raise ExportError(f"{out} already holds {len(foreign)} file(s) that annotassist did not write there "
                              f"(e.g. {', '.join(foreign[:3])}); they are never replaced: export into a new folder")
        stage = _staging(out)
        try:
            summary = _write(ws, plan, stage, link, progress)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
    summary["skipped"] = [str(p) for p in skipped]
    (stage / "export.json").write_text(json.dumps(summary, indent=2))
    _commit(stage, out, written, ours)
    return summary


def check_destination(ws: Workspace, out: Path, force: bool) -> set[str]:
    """Refuse a destination that could lose someone's files; return what earlier exports wrote there."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file, not a folder; choose a folder for the export")
    target = out.resolve()
    if not force:
        for what, root in (("dataset", ws.data_root), ("workspace", ws.root)):
            root = root.resolve()
            if target == root or root in target.parents or target in root.parents:
                relation = "is" if target == root else ("lies inside" if root in target.parents else "contains")
                raise ExportError(f"--out {out} {relation} the {what} folder {root}; an export there could mix "
                                  f"with or replace its files. Export into a folder outside both the dataset "
                                  f"and the workspace (or pass --force to add it beside them; nothing already "
                                  f"there is replaced)")
    ours = _manifest(out)
    if out.is_dir() and not force:
        others = [p for p in _files(out) if p not in ours and p != MARKER]
        if others:
            raise ExportError(f"--out {out} holds files an annotassist export did not write (e.g. "
                              f"{', '.join(others[:3])}); export into a new or empty folder, or pass --force to "
                              "add the export beside them (files already there are never replaced)")
    return ours


def _manifest(out: Path) -> set[str]:
    marker = out / MARKER
    if not marker.is_file():
        return set()
    try:
        return set(json.loads(marker.read_text())["files"])
    except (ValueError, KeyError, TypeError, OSError):
        raise ExportError(f"{marker} is damaged; delete it only if everything in {out} may be replaced, or "
                          "export into a new folder") from None


def _files(root: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            out.append(Path(os.path.relpath(os.path.join(dirpath, name), root)).as_posix())
    return sorted(out)


def _plan(ws: Workspace) -> tuple[list[dict], list[Problem]]:
    items, skipped = [], []
    for rec in ws.images(split=None):
        which = "val" if rec.split == "val" else ("labeled" if rec.state == "labeled" else "unlabeled")
        label = ws.label_mask(rec.id) if which != "unlabeled" else None
        if which != "unlabeled" and label is None:
            which = "unlabeled"  # a labeled state without a label cannot happen through the workspace API
        if which == "unlabeled" and rec.split == "pool":
            label = ws.partial_mask(rec.id)  # region mode: the reviewed regions, 255 elsewhere
            which = "partial" if label is not None else which
        if rec.split == "val" and label is None:
            continue
        image = f"JPEGImages/{rec.name}{rec.image_path.suffix}"
        mask = f"SegmentationClass/{rec.name}.png" if label is not None else None
        if not stays_inside(image):
            skipped.append(Problem(str(rec.image_path), f"its name {rec.name!r} would place it outside the export "
                                   "folder", "fix the dataset's list and run init again"))
            continue
        items.append({"rec": rec, "which": which, "image": image, "mask": mask,
                      "label": label.path if label is not None else None})
    return items, skipped


def _staging(out: Path) -> Path:
    parent = out.absolute().parent
    stage = parent / f".{out.name}.annotassist-staging"
    if stage.exists():
        if not (stage / MARKER).is_file():
            raise ExportError(f"{stage} is in the way of the export's staging folder; move it away")
        shutil.rmtree(stage)  # what a killed export left behind (it holds our marker)
    try:
        stage.mkdir(parents=True)
        (stage / MARKER).write_text(json.dumps({"files": []}))
    except OSError as e:
        raise ExportError(f"cannot write next to --out {out} ({e.strerror}); choose a folder you can write "
                          "to") from None
    return stage


def _write(ws: Workspace, plan: list[dict], stage: Path, link: bool, progress: bool) -> dict:
    cfg = ws.config
    palette = cfg.palette()
    lists: dict[str, list[str]] = {n: [] for n in LISTS}
    reviewed = partial_px = 0
    for item in progress_bar(plan, desc="export", unit="image", disable=not progress, leave=False):
        rec = item["rec"]
        dst = stage / item["image"]
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not rec.image_path.is_file():
            raise ExportError(f"image {rec.name} is gone from {rec.image_path}; nothing was exported. Restore it, "
                              f"or run 'annotassist init' again so the workspace marks it missing")
        if link:
            os.symlink(rec.image_path.resolve(), dst)
        else:
            shutil.copy2(rec.image_path, dst)
        if item["mask"] is None:
            if rec.split == "pool":
                lists["unlabeled"].append(item["image"])
            continue
        try:
            # re-written rather than copied so that the export never depends on workspace file names
            mask = read_mask(item["label"], cfg.num_classes)
        except DataError as e:
            raise ExportError(f"the label of image {rec.name} cannot be read ({e}); nothing was exported. "
                              f"Restore {item['label']} from a backup, or see 'annotassist status --workspace "
                              f"{ws.root}'") from None
        write_mask(mask, stage / item["mask"], palette)
        faults.point("export.image")
        lists[item["which"]].append(f"{item['image']} {item['mask']}")
        if item["which"] == "partial":  # still unlabeled outside what was reviewed: semi-supervised trainers use it
            lists["unlabeled"].append(item["image"])
            reviewed += int((mask != 255).sum())
            partial_px += mask.size
    for name, lines in lists.items():
        (stage / f"{name}.txt").write_text("".join(line + "\n" for line in lines))
    (stage / "classes.txt").write_text("\n".join(cfg.dataset.classes) + "\n")
    summary = {"classes": cfg.dataset.classes, "palette": [list(c) for c in palette], "ignore_index": 255,
               **{f"{k}_count": len(v) for k, v in lists.items()}}
    if lists["partial"]:
        summary["partial_note"] = (f"{len(lists['partial'])} images are labeled only in the regions a person "
                                   f"reviewed ({reviewed / max(1, partial_px) * 100:.1f}% of their pixels); their "
                                   "masks in SegmentationClass/ hold 255 (ignore) everywhere else (partial.txt lists "
                                   "them; they are in unlabeled.txt too)")
    return summary


def _commit(stage: Path, out: Path, written: list[str], ours: set[str]) -> None:
    """Move the staged files into `out` (split files last) and record what the export wrote there."""
    out.mkdir(parents=True, exist_ok=True)
    new = set(written)
    # the marker first names old and new files, so a kill while moving never orphans a file of ours
    _write_marker(out, ours | new)
    last = {f"{n}.txt" for n in LISTS} | {"export.json"}
    for rel in sorted(new, key=lambda r: r in last):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(stage / rel, out / rel)
    for rel in sorted(ours - new):  # files an earlier export wrote that this one no longer has
        if os.path.lexists(out / rel):
            os.unlink(out / rel)
    _write_marker(out, new)
    shutil.rmtree(stage, ignore_errors=True)


def _write_marker(out: Path, files: set[str]) -> None:
    tmp = out / f"{MARKER}.tmp"
    tmp.write_text(json.dumps({"files": sorted(files)}))
    os.replace(tmp, out / MARKER)
