"""torch Datasets for training, evaluation and scoring.

`SemiDataset` serves one item per unlabeled image per epoch (an epoch is one pass over the unlabeled set, as
in the published code): the unlabeled image's weak and two strong views, a labeled image (the labeled list
repeated and reshuffled to that length), and a second unlabeled image as CutMix partner. Without unlabeled
images (the supervised method) it serves labeled crops only.

Every item's randomness is seeded by (seed, epoch, index), so what a step sees does not depend on the number
of workers, on sharding across ranks, or on where a resumed run starts.

With a `DecodeCache` (data/cache.py) each file is decoded once at the working scale instead of for every item;
the tensors are the same either way. `float_images=False` hands the views over as uint8 (4x fewer bytes
from the loader's workers); the trainer turns them into floats on the device.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .layouts import Sample
from torchvision import tv_tensors

from .cache import DecodeCache
from .masks import IGNORE, read_image, read_mask
from .transforms import StrongAug, cutmix_box, resize_pair, strong_view, to_float, to_tensors, weak_view


def load_pair(s: Sample, with_mask: bool, num_classes: int, ignore_index: int, scale: float,
              cache: DecodeCache | None = None):
    """(image uint8 (3, H, W), mask uint8 (1, H, W)) at the working scale; an all-zero mask without one."""
    if cache is not None:
        img = tv_tensors.Image(cache.image(s.image, scale))
        if with_mask:
            return img, tv_tensors.Mask(cache.mask(s.mask, num_classes, ignore_index, scale))
        return img, tv_tensors.Mask(torch.zeros((1, *img.shape[-2:]), dtype=torch.uint8))
    image = read_image(s.image)
    mask = read_mask(s.mask, num_classes, ignore_index) if with_mask else \
        np.zeros((image.height, image.width), dtype=np.uint8)
    img, m = to_tensors(image, mask)
    return resize_pair(img, m, scale)


def sample_seed(seed: int, epoch: int, index: int, stream: int = 0) -> int:
    return int(np.random.SeedSequence([seed, epoch, index, stream]).generate_state(1)[0])


def _permutation(n: int, seed: int, epoch: int, stream: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch, stream]).permutation(n)


class SemiDataset(Dataset):
    def __init__(self, labeled: list[Sample], unlabeled: list[Sample], num_classes: int, crop_size: int,
                 scale_range=(0.5, 2.0), image_scale: float = 1.0, seed: int = 0, strong: StrongAug = StrongAug(),
                 cutmix_p: float = 0.5, length: int | None = None, ignore_index: int = IGNORE,
                 cache: DecodeCache | None = None, float_images: bool = True):
        if not labeled:
            raise ValueError("SemiDataset needs at least one labeled image")
        self.labeled, self.unlabeled = labeled, unlabeled
        self.num_classes, self.crop = num_classes, crop_size
        self.scale_range, self.image_scale = tuple(scale_range), image_scale
        self.seed, self.strong, self.cutmix_p = seed, strong, cutmix_p
        self.ignore_index = ignore_index  # the dataset's own "not labeled" value (CamVid: 11), read as 255
        self.length = length or max(len(unlabeled), len(labeled))
        self.epoch = 0
        self.cache, self.float_images = cache, float_images
        # region mode: a partial mask labels a few regions of its image. Drawn as often as whole labels, ~350
        # images with two reviewed regions each filled 95% of the batches with mostly-ignore crops of the
        # hardest regions, and the model forgot the rest (CamVid value profile, first region round: 38.4 -> 30.9,
        # 31.1 -> 29.6, 33.7 -> 19.0 mIoU over 3 seeds). Draw each in proportion to its labeled share instead,
        # as if every labeled pixel were one item.
        w = np.array([getattr(s, "weight", 1.0) for s in labeled], dtype=np.float64)
        self.weights = None if np.all(w == 1.0) else np.maximum(w, 1e-6) / np.maximum(w, 1e-6).sum()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def _load(self, s: Sample, with_mask: bool):
        return load_pair(s, with_mask, self.num_classes, self.ignore_index, self.image_scale, self.cache)

    def _out(self, image: torch.Tensor) -> torch.Tensor:
        return to_float(image) if self.float_images else image.as_subclass(torch.Tensor).contiguous()

    def _labeled_index(self, k: int) -> int:
        n = len(self.labeled)
        rep = k // n  # a fresh shuffle for every repetition of the labeled list
        if self.weights is None:
            return int(_permutation(n, self.seed, self.epoch * 1000 + rep, 1)[k % n])
        draws = np.random.default_rng([self.seed, self.epoch * 1000 + rep, 3]).choice(n, size=n, p=self.weights)
        return int(draws[k % n])

    def __getitem__(self, k: int) -> dict:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, self.epoch, k))
            item = {}
            img, mask = self._load(self.labeled[self._labeled_index(k)], with_mask=True)
            x, y = weak_view(img, mask, self.crop, self.scale_range)
            item["x"], item["y"] = self._out(x), y[0].long()
            if self.unlabeled:
                u = k % len(self.unlabeled)
                item.update(self._unlabeled_views(self.unlabeled[u], prefix="u"))
                partner = int(_permutation(len(self.unlabeled), self.seed, self.epoch, 2)[u])
                item.update(self._unlabeled_views(self.unlabeled[partner], prefix="mix"))
                item["box1"] = cutmix_box(self.crop, self.cutmix_p)
                item["box2"] = cutmix_box(self.crop, self.cutmix_p)
                item["index"] = torch.tensor(u)
            return item

    def _unlabeled_views(self, s: Sample, prefix: str) -> dict:
        img, pad = self._load(s, with_mask=False)
        w, valid = weak_view(img, pad, self.crop, self.scale_range)
        return {f"{prefix}_w": self._out(w),
                f"{prefix}_s1": self._out(strong_view(w, self.strong)),
                f"{prefix}_s2": self._out(strong_view(w, self.strong)),
                # padding added by the crop is not image: it is excluded from every unlabeled loss
                f"{prefix}_valid": valid[0] != IGNORE}


class EvalDataset(Dataset):
    """Whole images (rescaled by image_scale) with their masks, for mIoU."""

    def __init__(self, samples: list[Sample], num_classes: int, image_scale: float = 1.0,
                 ignore_index: int = IGNORE, cache: DecodeCache | None = None):
        self.samples, self.num_classes, self.image_scale = samples, num_classes, image_scale
        self.ignore_index, self.cache = ignore_index, cache

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        img, mask = load_pair(self.samples[i], True, self.num_classes, self.ignore_index, self.image_scale,
                              self.cache)
        return to_float(img), mask[0].long()


class ImageDataset(Dataset):
    """Images only (with their pool ids), for scoring and prediction."""

    def __init__(self, items: list[tuple[int, Path]], image_scale: float = 1.0, cache: DecodeCache | None = None):
        self.items, self.image_scale, self.cache = items, image_scale, cache

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        image_id, path = self.items[i]
        if self.cache is not None:
            return image_id, to_float(self.cache.image(path, self.image_scale))
        img, _ = to_tensors(read_image(path))
        img, _ = resize_pair(img, None, self.image_scale)
        return image_id, to_float(img)


class SizeBatches(Sampler[list[int]]):
    """Batches of images of the same size (stacked without padding); rank r takes every world-th batch."""

    def __init__(self, sizes: list[tuple[int, int]], batch_size: int, rank: int = 0, world: int = 1):
        groups = defaultdict(list)
        for i, s in enumerate(sizes):
            groups[s].append(i)
        batches = [idx[k: k + batch_size] for idx in groups.values() for k in range(0, len(idx), batch_size)]
        self.batches = batches[rank::world]

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def image_loader(records, image_scale: float, batch_size: int, *, rank: int = 0, world: int = 1,
                 num_workers: int = 0, pin_memory: bool = False, cache: DecodeCache | None = None) -> DataLoader:
    """Whole pool images at the working scale, batched by size: yields (positions in `records`, images).
    `records` are workspace image records (width, height, image_path). Scoring and pre-annotation share it."""
    sizes = [(max(1, round(r.height * image_scale)), max(1, round(r.width * image_scale))) for r in records]
    ds = ImageDataset([(k, r.image_path) for k, r in enumerate(records)], image_scale, cache)
    return DataLoader(ds, batch_sampler=SizeBatches(sizes, batch_size, rank, world), num_workers=num_workers,
                      pin_memory=pin_memory, prefetch_factor=4 if num_workers else None)
