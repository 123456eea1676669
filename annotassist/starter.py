"""A config for data nobody wrote one for: `annotassist init --data DIR --classes a,b [--val-share 0.2]`.

It looks at the folder (which layout, how big the images are, how the masks encode the classes) and writes a
config sized for this machine: on a CPU, EfficientNet-Lite0 with its offline ImageNet weights, images scaled so
their short side is about 256 px, a few hundred steps a round, the light decoder and the short-schedule DSSN
recipe (config.CPU_RECIPE); on a GPU, the published DeepLabV3+ ResNet-101
recipe. `hold_out` turns a share of the masked images into the evaluation set, written as list files in the
workspace so the dataset folder is never touched.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from .config import CPU_RECIPE, Config, from_dict
from .data.layouts import IMAGE_EXTS, read_split
from .errors import AnnotassistError

CPU_SHORT_SIDE = 256  # px after scaling: what a CPU round can afford and thin structures survive


def detect_layout(data: Path) -> dict:
    """The `dataset` settings of the folder's layout, or an error that says how to arrange it."""
    if (data / "JPEGImages").is_dir():
        return {"layout": "voc", "pool": "all", "val": ""}
    if (data / "leftImg8bit").is_dir():
        return {"layout": "cityscapes", "pool": "train", "val": "val"}
    if (data / "train.txt").is_file():
        return {"layout": "list", "pool": "train.txt", "val": "val.txt" if (data / "val.txt").is_file() else ""}
    for images, masks in (("images", "masks"), ("images", "labels"), ("img", "mask")):
        if (data / images).is_dir():
            return {"layout": "folders", "pool": ".", "val": "", "image_dir": images, "mask_dir": masks}
    raise AnnotassistError(
        f"cannot tell how {data} is laid out. Put the images in {data}/images/ and their masks (same relative "
        f"path and name, .png) in {data}/masks/; or give a list file {data}/train.txt of 'IMAGE [MASK]' lines; "
        "or write a config (see configs/) and pass --config")


def class_shares(masks: list[Path], encoding: dict, classes: list[str]) -> np.ndarray:
    """Each class's share of the labeled pixels over (up to 64 of) the masks."""
    from .data.masks import class_histogram, read_mask

    px = np.zeros(len(classes), dtype=np.int64)
    for path in masks[:64]:
        px += class_histogram(read_mask(path, len(classes), values=encoding.get("mask_values")), len(classes))
    return px / max(1, px.sum())


def mask_encoding(masks: list[Path], classes: list[str]) -> dict:
    """How the mask files encode the classes: class ids (0..C-1, 255 = not labeled) as they should be, or one
    value per class (binary masks saved as 0/255). RGB masks need a palette, which only a config can give."""
    seen: set[int] = set()
    for path in masks[:64]:
        with Image.open(path) as im:
            if im.mode in ("RGB", "RGBA"):
                raise AnnotassistError(f"{path} is an RGB colour mask: write a config with dataset.palette (one "
                                       "[r, g, b] per class, in class order) and pass --config")
            seen |= set(np.unique(np.array(im)).tolist())
    n = len(classes)
    if n == 2 and seen == {0, 255}:
        return {"mask_values": [0, 255]}  # a binary mask saved as black/white, not "class 0 and not labeled"
    if seen == {0, 255} and n > 2:
        pass  # only 0 and 255: not the class ids of more than two classes (the error below says so)
    elif seen <= set(range(n)) | {255}:
        return {}
    if len(seen) == n:
        values = sorted(seen)
        return {"mask_values": values}
    raise AnnotassistError(f"the masks hold the values {sorted(seen)[:12]} for {n} classes ({', '.join(classes)}): "
                           f"expected class ids 0..{n - 1} (255 = not labeled) or exactly {n} distinct values; "
                           "write a config with dataset.mask_values and pass --config")


def machine_recipe(short_side: int, has_gpu: bool) -> dict:
    if has_gpu:
        return {"model": {"backbone": "resnet101", "weights": "imagenet"},
                "train": {"epochs": 80, "batch_size": 2, "crop_size": min(321, _multiple(short_side, 32)),
                          "lr": 0.002, "num_workers": 4}}
    scale = min(1.0, round(CPU_SHORT_SIDE / short_side, 2))
    crop = max(64, min(192, _multiple(short_side * scale, 32)))
    return {"model": {"backbone": "efficientnet_lite0", "weights": "imagenet", **CPU_RECIPE["model"]},
            "region": dict(CPU_RECIPE["region"]), "dssn": dict(CPU_RECIPE["dssn"]),
            # supervised, as CamVid's cpu profile: on 2 cores it gets further in a round's minutes than
            # self-training (CamVid, 3 seeds, README "DSSN in short rounds"); the dssn block above is the recipe
            # `--set train.method=dssn` trains with
            "train": {"method": "supervised", "image_scale": scale, "crop_size": crop, "batch_size": 4,
                      "max_iters": 300, "lr": 0.01, "num_workers": 1, "eval_every": 1000},
            "acquire": {"num_workers": 1}}


def _multiple(v: float, k: int) -> int:
    return max(k, int(v) // k * k)


def starter_config(data: Path, classes: list[str], name: str, has_gpu: bool) -> Config:
    if len(classes) < 2:
        raise AnnotassistError("--classes needs at least two names, in the order of the mask values "
                               "(e.g. --classes background,vessel)")
    dataset = {"name": name, "root": str(data.resolve()), "classes": classes, **detect_layout(data)}
    probe = from_dict({"dataset": dataset}, source=f"the layout of {data}")
    samples, _ = read_split(probe, data, "pool")
    if not samples:
        raise AnnotassistError(f"no images found in {data} (layout {dataset['layout']}; image types: "
                               f"{', '.join(sorted(IMAGE_EXTS))})")
    masks = [s.mask for s in samples if s.mask is not None]
    dataset.update(mask_encoding(masks, classes))
    shares = class_shares(masks, dataset, classes) if masks else np.ones(len(classes))
    sides = []
    for s in samples[:: max(1, len(samples) // 32)]:
        with Image.open(s.image) as im:
            sides.append(min(im.size))
    recipe = machine_recipe(int(np.median(sides)), has_gpu)
    budget = max(4, min(16, math.ceil(0.05 * len(samples))))
    data_dict = {"dataset": dataset, "pool": {"initial_labeled": 0}, **recipe}
    data_dict.setdefault("acquire", {})["budget"] = budget
    if shares.min() < 0.05:  # a rare or thin class: weigh the labeled loss by class, or it learns nothing
        data_dict["train"]["class_balance"] = "balanced"
    return from_dict(data_dict, source=f"generated for {data}")


def hold_out(cfg: Config, data: Path, share: float, lists_dir: Path) -> Config:
    """A seeded `share` of the pool's masked images becomes the evaluation set: the pool and the held-out
    images are written as list files under `lists_dir` (relative to the dataset root), the config points at
    them. The dataset folder is not touched."""
    import os

    if not (0 < share < 1):
        raise AnnotassistError(f"--val-share must be between 0 and 1 (e.g. 0.2), got {share}")
    if cfg.dataset.val:
        raise AnnotassistError(f"the config already names an evaluation set (dataset.val: {cfg.dataset.val}); "
                               "drop --val-share, or set dataset.val to '' to hold out a share instead")
    samples, _ = read_split(cfg, data, "pool")
    masked = sorted(s.name for s in samples if s.mask is not None)
    k = max(1, round(share * len(masked)))
    if len(masked) - k < 1:
        raise AnnotassistError(f"--val-share {share}: only {len(masked)} images have masks; nothing would be left "
                               "to train on")
    held = set(np.random.default_rng(cfg.pool.seed).permutation(masked)[:k].tolist())
    lists_dir.mkdir(parents=True, exist_ok=True)

    def line(s) -> str:
        rel = lambda p: Path(os.path.relpath(p, data)).as_posix()  # noqa: E731
        return rel(s.image) + (f" {rel(s.mask)}" if s.mask is not None else "") + "\n"

    (lists_dir / "pool.txt").write_text("".join(line(s) for s in samples if s.name not in held))
    (lists_dir / "val.txt").write_text("".join(line(s) for s in samples if s.name in held))
    d = cfg.to_dict()
    d["dataset"].update({"layout": "list", "pool": str((lists_dir / "pool.txt").resolve()),
                         "val": str((lists_dir / "val.txt").resolve())})
    return from_dict(d, source=cfg.source)
