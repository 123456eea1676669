"""Dataset layouts: find the images (and masks, where there are any) of a pool and of an evaluation set.

A reader only locates files and reports what is missing; decoding, size and class-id checks happen once, in
`check_sample`, when images enter a workspace. Every reader returns `(samples, problems)`: a bad entry is
reported and skipped, the rest is kept. Images without a mask are unlabeled.

Layouts:
  voc         root/JPEGImages/<id>.jpg, root/SegmentationClass/<id>.png (palette PNG, 255 = ignore),
              split = a file in root/ImageSets/Segmentation/ ("train" -> train.txt) or "all" (every image)
  cityscapes  root/leftImg8bit/<split>/<city>/<x>_leftImg8bit.png,
              root/gtFine/<split>/<city>/<x>_gtFine_labelTrainIds.png
  list        lines "IMAGE [MASK]" relative to root (the DSSN/UniMatch split files); one column = unlabeled
  folders     root/<split>/<image_dir>/**/<x>.<ext> and root/<split>/<mask_dir>/**/<x>.png, matched by
              relative path (split "." = root itself)
  synthetic   the generated demo set, written as a list layout (see synthetic.py)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from ..config import Config
from ..errors import DataError, Problem
from .masks import image_size, read_mask

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class Sample:
    name: str  # unique within a dataset: the image's path relative to the root, without extension
    image: Path
    mask: Path | None = None
    # (list or split file, line) that named it, so a problem found later in its content points at the line
    origin: tuple[str, int] | None = field(default=None, compare=False)
    # the share of the image's pixels its label covers (region mode's partial masks: the reviewed regions);
    # training draws a labeled image in proportion to it, so every labeled pixel counts alike
    weight: float = field(default=1.0, compare=False)


def stays_inside(rel: str) -> bool:
    """A path from a list or split file that, joined to the dataset root, stays inside it: not absolute and
    without '..' (checked on the text, so symlinks inside the root may still point anywhere)."""
    p = PurePosixPath(rel.replace("\\", "/"))
    return not p.is_absolute() and ".." not in p.parts


def _name(path: Path, root: Path) -> str:
    try:
        rel = path.relative_to(root)
    except ValueError:
        rel = Path(path.name)
    return rel.with_suffix("").as_posix()


def read_list(list_file: Path, root: Path) -> tuple[list[Sample], list[Problem]]:
    samples, problems, seen = [], [], {}
    if not list_file.is_file():
        raise DataError(f"{list_file}: list file not found; check dataset.pool / dataset.val and --data")
    for lineno, raw in enumerate(list_file.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) > 2:
            problems.append(Problem(str(list_file), f"expected 'IMAGE [MASK]', got {len(parts)} fields",
                                    "one sample per line, paths without spaces", lineno))
            continue
        outside = [p for p in parts if not stays_inside(p)]
        if outside:
            problems.append(Problem(str(list_file), f"path {outside[0]} leads outside the dataset root {root}",
                                    "list paths relative to the root, without '..' or a leading '/'", lineno))
            continue
        image = root / parts[0]
        mask = root / parts[1] if len(parts) == 2 else None
        if not image.is_file():
            problems.append(Problem(str(list_file), f"image {parts[0]} not found under {root}",
                                    "fix the path or remove the line", lineno))
            continue
        if mask is not None and not mask.is_file():
            problems.append(Problem(str(list_file), f"mask {parts[1]} not found under {root}",
                                    "fix the path, or drop the mask column to add the image unlabeled", lineno))
            continue
        name = _name(image, root)
        if name in seen:
            problems.append(Problem(str(list_file), f"image {parts[0]} is listed twice (first on line "
                                    f"{seen[name]})", "remove the duplicate line", lineno))
            continue
        seen[name] = lineno
        samples.append(Sample(name, image, mask, (str(list_file), lineno)))
    return samples, problems


def _voc_split_file(root: Path, split: str) -> Path:
    return root / "ImageSets" / "Segmentation" / (split if split.endswith(".txt") else f"{split}.txt")


def _voc_ids(root: Path, split: str) -> list[tuple[str, int]] | None:
    """(image id, line) per line of the split file; None for every image ('all')."""
    if split in ("", "all"):
        return None
    f = _voc_split_file(root, split)
    if not f.is_file():
        raise DataError(f"{f}: VOC split file not found; set dataset.pool/val to a file in "
                        "ImageSets/Segmentation (e.g. train, val) or 'all'")
    return [(ln.strip().split()[0], n) for n, ln in enumerate(f.read_text().splitlines(), 1) if ln.strip()]


def read_voc(root: Path, split: str, exclude: set[str] = frozenset()) -> tuple[list[Sample], list[Problem]]:
    images_dir, masks_dir = root / "JPEGImages", root / "SegmentationClass"
    if not images_dir.is_dir():
        raise DataError(f"{images_dir}: not found; a VOC root holds JPEGImages/ and SegmentationClass/")
    ids = _voc_ids(root, split)
    split_file = str(_voc_split_file(root, split))
    problems = []
    if ids is None:
        ids = [(stem, None) for stem in sorted(p.stem for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS)]
    samples = []
    for i, line in ids:
        if i in exclude:
            continue
        if not stays_inside(i):
            problems.append(Problem(split_file, f"image id {i} of split '{split}' leads outside the dataset root",
                                    "use plain image ids, as VOC does", line))
            continue
        image = images_dir / f"{i}.jpg"
        if not image.is_file():
            alt = [p for p in images_dir.glob(f"{i}.*") if p.suffix.lower() in IMAGE_EXTS]
            if not alt:
                problems.append(Problem(split_file if line else str(images_dir),
                                        f"image {i} of split '{split}' not found in {images_dir}",
                                        "restore the image or remove it from the split file", line))
                continue
            image = alt[0]
        mask = masks_dir / f"{i}.png"
        samples.append(Sample(i, image, mask if mask.is_file() else None, (split_file, line) if line else None))
    return samples, problems


def read_cityscapes(root: Path, split: str) -> tuple[list[Sample], list[Problem]]:
    images_dir = root / "leftImg8bit" / split
    if not images_dir.is_dir():
        raise DataError(f"{images_dir}: not found; a Cityscapes root holds leftImg8bit/<split>/<city>/ "
                        "and gtFine/<split>/<city>/ (create *_labelTrainIds.png with cityscapesscripts)")
    samples = []
    for image in sorted(images_dir.glob("*/*_leftImg8bit.png")):
        stem = image.name[: -len("_leftImg8bit.png")]
        city = image.parent.name
        mask = root / "gtFine" / split / city / f"{stem}_gtFine_labelTrainIds.png"
        samples.append(Sample(f"{split}/{city}/{stem}", image, mask if mask.is_file() else None))
    return samples, []


def read_folders(root: Path, image_dir: str, mask_dir: str) -> tuple[list[Sample], list[Problem]]:
    images_root, masks_root = root / image_dir, root / mask_dir
    if not images_root.is_dir():
        raise DataError(f"{images_root}: image folder not found; set dataset.root / dataset.image_dir")
    masks = {}
    if masks_root.is_dir():
        for m in masks_root.rglob("*"):
            if m.suffix.lower() in IMAGE_EXTS:
                masks[m.relative_to(masks_root).with_suffix("").as_posix()] = m
    samples, problems, seen = [], [], {}
    for image in sorted(p for p in images_root.rglob("*") if p.suffix.lower() in IMAGE_EXTS):
        rel = image.relative_to(images_root).with_suffix("").as_posix()
        if rel in seen:
            problems.append(Problem(str(image), f"two images share the name {rel} ({seen[rel].name})",
                                    "rename one of them"))
            continue
        seen[rel] = image
        samples.append(Sample(rel, image, masks.get(rel)))
    return samples, problems


def read_split(cfg: Config, root: Path, which: str) -> tuple[list[Sample], list[Problem]]:
    """The pool ('pool') or the evaluation set ('val') of the configured layout."""
    d = cfg.dataset
    split = d.pool if which == "pool" else d.val
    if which == "val" and not split:
        return [], []
    layout = d.layout
    if layout == "synthetic":
        from .synthetic import ensure_generated
        ensure_generated(cfg, root)
        layout = "list"
    if layout == "list":
        return read_list(root / split, root)
    if layout == "voc":
        exclude = set()
        if which == "pool" and split in ("", "all") and d.val:
            exclude = {i for i, _ in _voc_ids(root, d.val) or []}
        return read_voc(root, split, exclude)
    if layout == "cityscapes":
        return read_cityscapes(root, split)
    if layout == "folders":
        # pool / val name a subfolder of root holding image_dir and mask_dir ("." = root itself)
        return read_folders(root / split, d.image_dir, d.mask_dir)
    raise DataError(f"unknown dataset.layout {layout!r}")


@dataclass
class CheckedSample:
    sample: Sample
    width: int
    height: int
    mask: np.ndarray | None


def read_source_mask(path: Path, cfg: Config):
    """A mask file of the dataset, in the dataset's own encoding (its ignore value, palette or per-class
    values), as class ids with 255 = ignore. Masks inside a workspace or an export are plain class ids."""
    d = cfg.dataset
    return read_mask(path, cfg.num_classes, d.ignore_index, cfg.palette(), d.mask_values or None)


def check_sample(sample: Sample, cfg: Config) -> CheckedSample:
    """Decode the image and its mask; raise DataError naming the file if anything is wrong."""
    w, h = image_size(sample.image)
    mask = None
    if sample.mask is not None:
        mask = read_source_mask(sample.mask, cfg)
        if mask.shape != (h, w):
            raise DataError(f"{sample.mask}: mask is {mask.shape[1]}x{mask.shape[0]} but its image "
                            f"{sample.image.name} is {w}x{h}; re-export the mask at the image's size")
    return CheckedSample(sample, w, h, mask)
