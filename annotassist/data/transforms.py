"""Weak and strong views (torchvision.transforms.v2 on uint8 tensors) and CutMix boxes.

The weak view: random rescale (scale_range of the image size), pad to the crop (image 0, mask 255), random
crop, horizontal flip. Strong views are made from the weak crop, each independently: ColorJitter(0.5, 0.5,
0.5, 0.25) p=0.8, grayscale p=0.2, Gaussian blur p=0.5 (sigma 0.1-2.0), optionally 1-3 random intensity ops
(the VOC recipe), and a CutMix box (p=0.5, area 2%-40%, aspect 0.3-3.3) that the method fills with the strong
view of a second unlabeled image.

All randomness comes from torch's generator, seeded per sample by the dataset (see datasets.py), so a view is
a pure function of (seed, epoch, index): the same on every worker, rank and resumed run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as TF

IGNORE = 255


def _rand(lo: float = 0.0, hi: float = 1.0) -> float:
    return lo + (hi - lo) * torch.rand(()).item()


def _scaled(t: torch.Tensor, scale: float) -> list[int]:
    h, w = t.shape[-2:]
    return [max(1, round(h * scale)), max(1, round(w * scale))]


def resize_image(image: torch.Tensor, scale: float) -> torch.Tensor:
    if scale == 1.0:
        return image
    return TF.resize(image, _scaled(image, scale), interpolation=InterpolationMode.BILINEAR, antialias=True)


def resize_mask(mask: torch.Tensor, scale: float) -> torch.Tensor:
    if scale == 1.0:
        return mask
    return TF.resize(mask, _scaled(mask, scale), interpolation=InterpolationMode.NEAREST)


def resize_pair(image: torch.Tensor, mask: torch.Tensor | None, scale: float):
    return resize_image(image, scale), (resize_mask(mask, scale) if mask is not None else None)


def weak_view(image: torch.Tensor, mask: torch.Tensor, crop: int, scale_range: tuple[float, float]):
    """image uint8 (3, H, W), mask uint8 (1, H, W) (IGNORE where unknown) -> cropped, flipped pair."""
    image, mask = resize_pair(image, mask, _rand(*scale_range))
    h, w = image.shape[-2:]
    ph, pw = max(0, crop - h), max(0, crop - w)
    if ph or pw:
        image = TF.pad(image, [0, 0, pw, ph], fill=0)
        mask = TF.pad(mask, [0, 0, pw, ph], fill=IGNORE)
        h, w = image.shape[-2:]
    top = int(torch.randint(0, h - crop + 1, ()).item())
    left = int(torch.randint(0, w - crop + 1, ()).item())
    image, mask = TF.crop(image, top, left, crop, crop), TF.crop(mask, top, left, crop, crop)
    if torch.rand(()) < 0.5:
        image, mask = TF.horizontal_flip(image), TF.horizontal_flip(mask)
    return image, mask


@dataclass(frozen=True)
class StrongAug:
    """The strong-view recipe (published: ColorJitter(0.5, 0.5, 0.5, 0.25) p=0.8, grayscale 0.2, blur 0.5)."""

    color_jitter: tuple[float, float, float, float] = (0.5, 0.5, 0.5, 0.25)
    color_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    intensity_ops: bool = False


def _intensity_ops(image: torch.Tensor) -> torch.Tensor:
    ops = [
        lambda x: TF.autocontrast(x),
        lambda x: TF.equalize(x),
        lambda x: TF.posterize(x, int(torch.randint(4, 9, ()).item())),
        lambda x: TF.solarize(x, int(torch.randint(128, 256, ()).item())),
        lambda x: TF.adjust_sharpness(x, _rand(0.05, 0.95) * 2),
        lambda x: TF.adjust_contrast(x, _rand(0.05, 0.95) * 2),
        lambda x: TF.adjust_brightness(x, _rand(0.05, 0.95) * 2),
        lambda x: TF.adjust_hue(x, _rand(-0.1, 0.1)),
    ]
    n = int(torch.randint(1, 4, ()).item())
    for i in torch.randperm(len(ops))[:n].tolist():
        image = ops[i](image)
    return image


def strong_view(image: torch.Tensor, aug: StrongAug = StrongAug()) -> torch.Tensor:
    if any(aug.color_jitter) and torch.rand(()) < aug.color_p:
        image = v2.ColorJitter(*aug.color_jitter)(image)
    if torch.rand(()) < aug.grayscale_p:
        image = TF.rgb_to_grayscale(image, num_output_channels=3)
    if torch.rand(()) < aug.blur_p:
        sigma = _rand(0.1, 2.0)
        k = 2 * math.ceil(3 * sigma) + 1
        image = TF.gaussian_blur(image, [k, k], [sigma, sigma])
    if aug.intensity_ops:
        image = _intensity_ops(image)
    return image


def cutmix_box(size: int, p: float = 0.5, area: tuple[float, float] = (0.02, 0.4),
               ratio: tuple[float, float] = (0.3, 1 / 0.3)) -> torch.Tensor:
    """A (size, size) uint8 mask, 1 inside the box (all 0 with probability 1 - p)."""
    box = torch.zeros(size, size, dtype=torch.uint8)
    if torch.rand(()) >= p:
        return box
    while True:
        a = _rand(*area) * size * size
        r = _rand(*ratio)
        w, h = int(math.sqrt(a / r)), int(math.sqrt(a * r))
        x, y = int(torch.randint(0, size + 1, ()).item()), int(torch.randint(0, size + 1, ()).item())
        if 0 < w and 0 < h and x + w <= size and y + h <= size:
            break
    box[y: y + h, x: x + w] = 1
    return box


def to_tensors(image, mask=None):
    """PIL image (+ mask array) -> tv_tensors (uint8)."""
    img = tv_tensors.Image(TF.pil_to_tensor(image))
    if mask is None:
        return img, None
    return img, tv_tensors.Mask(torch.as_tensor(mask)[None])


def to_float(image: torch.Tensor) -> torch.Tensor:
    return image.float().div_(255.0)
