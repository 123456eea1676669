"""Bring a dataset into a workspace: create the workspace once, read the configured layout, add what is new.

The only place a workspace is created (the CLI's init and loop, the demo and the benchmark all call
`create_workspace`), and the only place a dataset's files are read into the pool. It decides what changes;
the workspace applies it in one transaction (`Workspace.apply_import`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .config import Config
from .data.layouts import Sample, _name, check_sample, read_split
from .data.masks import file_sha256, read_mask
from .errors import AnnotassistError, DataError, Problem, WorkspaceError
from .progress import progress as progress_bar
from .workspace import NewImage, PoolUpdate, SyncReport, Workspace


def create_workspace(path: str | Path, cfg: Config, data_root: str | Path,
                     progress: bool = True) -> tuple[Workspace, SyncReport]:
    """A new workspace for `cfg` (resolved: profile and overrides applied) with the dataset read in."""
    ws = Workspace.create(path, cfg, data_root)
    try:
        return ws, import_dataset(ws, progress=progress)
    except BaseException:
        ws.close()
        raise


def import_dataset(ws: Workspace, progress: bool = True) -> SyncReport:
    """Read the configured dataset and bring the pool up to date.

    New images are added (labeled per `pool.initial_labeled` if they have masks); images that vanished
    from the source are flagged `missing` and reported, never deleted; bad images are reported and
    skipped. Masks already in the pool are never dropped.
    """
    cfg = ws.config
    report = SyncReport()
    found: dict[str, tuple[str, object]] = {}
    for split in ("pool", "val"):
        samples, problems = read_split(cfg, ws.data_root, split)
        report.problems += problems
        for s in samples:
            if s.name in found:
                report.problems.append(_at(s, f"image {s.name} is in both the pool and the evaluation set",
                                           "keep it in one of them"))
                continue
            found[s.name] = (split, s)
    existing = {r.name: r for r in ws.images(split=None, include_missing=True)}
    hashes = {r.sha256: r.name for r in existing.values() if not r.missing}
    new_checked, late_masks, changed_sha = [], [], {}
    for name, (split, s) in progress_bar(list(found.items()), desc="checking images", unit="image",
                                         disable=not progress, leave=False):
        try:
            sha = file_sha256(s.image)
        except OSError as e:
            report.problems.append(_at(s, f"cannot be read ({e.strerror or e})", "check permissions"))
            continue
        old = existing.get(name)
        if old is not None:
            if old.sha256 != sha:
                report.changed.append(name)
                changed_sha[name] = sha
            else:
                report.unchanged += 1
            if old.source_mask_path is None and s.mask is not None:
                try:  # a mask appeared in the source for an image we already have
                    late_masks.append((old, check_sample(s, cfg)))
                except DataError as e:
                    report.problems.append(_problem(e, s))
            continue
        if sha in hashes:
            report.problems.append(_at(s, f"same content as image {hashes[sha]} already in the pool (a "
                                       "duplicate)", "remove one of the copies"))
            continue
        try:
            checked = check_sample(s, cfg)
        except DataError as e:
            report.problems.append(_problem(e, s))
            continue
        hashes[sha] = name
        new_checked.append((split, sha, checked))
    report.disappeared = sorted(n for n, r in existing.items() if n not in found and not r.missing)

    # which new pool images start labeled
    pool_with_masks = [c for split, _, c in new_checked if split == "pool" and c.mask is not None]
    n_init = cfg.pool.initial_labeled
    if n_init <= 0:
        initial = {c.sample.name for c in pool_with_masks}
    else:
        need = max(0, n_init - ws.count(split="pool", state="labeled"))
        rng = np.random.default_rng(cfg.pool.seed)
        names = sorted(c.sample.name for c in pool_with_masks)
        initial = set(rng.permutation(names)[:need].tolist()) if names else set()

    new = []
    for split, sha, c in new_checked:
        s = c.sample
        labeled = (split == "val" or s.name in initial) and c.mask is not None
        new.append(NewImage(s.name, split, s.image.resolve(), s.mask.resolve() if s.mask else None, sha, c.width,
                            c.height, c.mask if labeled else None))
        report.added += 1
        report.labeled += labeled and split == "pool"
    late = []
    for old, c in late_masks:
        label = c.mask if (n_init <= 0 or old.split == "val") and old.state == "unlabeled" else None
        late.append((old.id, c.sample.mask.resolve(), label))
        report.labeled += label is not None and old.split == "pool"
    report.restored, report.lost = restore_lost_masks(ws)
    found_again = {name: s.image.resolve() for name, (_, s) in found.items()
                   if name in existing and existing[name].missing}
    ws.apply_import(PoolUpdate(new, late, changed_sha, report.disappeared, found_again,
                               {"added": report.added, "labeled": report.labeled,
                                "disappeared": len(report.disappeared), "problems": len(report.problems)}))
    return report


def restore_lost_masks(ws: Workspace) -> tuple[list[str], list[Problem]]:
    """Mask files lost from the workspace's masks/: a ground-truth one is written again from the dataset's mask
    it was imported from (same content only); the others (a person's corrections, pseudo masks) are reported,
    since only a backup has them."""
    restored, lost = [], []
    cfg = ws.config
    for m in ws.lost_masks():
        src = Path(m.mask.source) if m.mask.kind == "ground_truth" and m.mask.source else None
        if src is not None and src.is_file():
            try:
                ws.restore_mask_file(m, read_mask(src, cfg.num_classes, cfg.dataset.ignore_index, cfg.palette()))
                restored.append(m.image_name)
                continue
            except DataError as e:
                lost.append(Problem(str(m.mask.path), f"the ground-truth mask of {m.image_name} is missing and "
                                    f"cannot be rewritten from the dataset ({e})", f"restore it from a backup of "
                                    f"{ws.root / 'masks'}"))
                continue
        what = "current label" if m.is_label else f"{m.mask.kind} mask version"
        lost.append(Problem(str(m.mask.path), f"the {what} of {m.image_name} is missing from the workspace",
                            f"restore it from a backup of {ws.root / 'masks'}"))
    return restored, lost


def label_from_list(ws: Workspace, list_file: Path) -> int:
    """Mark the images named in a list file (first column, as in split files) labeled with their source
    mask; returns how many became labeled."""
    if not list_file.is_file():
        raise AnnotassistError(f"{list_file}: labeled list not found")
    wanted = []
    for lineno, line in enumerate(list_file.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        first = line.split()[0]
        name = _name(ws.data_root / first, ws.data_root)
        try:
            wanted.append(ws.image_by_name(name))
        except WorkspaceError:
            raise AnnotassistError(f"{list_file}:{lineno}: image {first} is not in the pool") from None
    made = 0
    for rec in wanted:
        if rec.state != "labeled":
            ws.add_mask(rec.id, ws.read_oracle(rec.id), "ground_truth", source=str(rec.source_mask_path))
            made += 1
    return made


def _problem(e: DataError, s: Sample) -> Problem:
    """DataError messages start with the file they are about; the list line that named it goes with it."""
    file, _, message = str(e).partition(": ")
    return Problem(file, message, listed=s.origin)


def _at(s: Sample, message: str, fix: str) -> Problem:
    """A problem with one image, at the image file and the list line that named it."""
    return Problem(str(s.image), message, fix, listed=s.origin)
