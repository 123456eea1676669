"""The start-up line: what is about to run, where, and how big, said once before a long step starts."""
from __future__ import annotations

import os

import torch

from . import precision


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def device_text(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    return f"CPU ({cores()} cores, {torch.get_num_threads()} torch threads)"


def weights_text(cfg, init_weights=None) -> str:
    if init_weights:
        return f"warm start from {init_weights}"
    w = cfg.model.weights
    if w == "none":
        return "no pretrained weights"
    if w == "imagenet":
        source = "offline, from the efficientnet-lite0 package" if cfg.model.backbone == "efficientnet_lite0" \
            else "torchvision's, downloaded once"
        return f"ImageNet weights ({source})"
    return f"weights from {w}"


def training_line(cfg, device, method: str, steps: int, batch_size: int, labeled: int, unlabeled: int,
                  what: str = "training", init_weights=None, partial: int = 0) -> str:
    """`labeled` counts every image with labels; `partial` of them (region mode) have only reviewed regions."""
    t = cfg.train
    views = f"{batch_size}+{batch_size}" if unlabeled else f"{batch_size}"
    profile = f", profile {cfg.profile}" if cfg.profile else ""
    return (f"{what}: {method} on {device_text(device)}, {precision.describe(cfg, device)}; "
            f"{cfg.model.backbone}, {weights_text(cfg, init_weights)}{profile}; images at {t.image_scale:g}x, "
            f"crop {t.crop_size}, batch {views}, {steps} steps; {labeled - partial} labeled "
            + (f"+ {partial} with reviewed regions (ignore outside them) " if partial else "")
            + f"+ {unlabeled} unlabeled images; {judge_text(cfg)}")


def judge_text(cfg) -> str:
    from ..acquire.select import reads_region_judge

    if reads_region_judge(cfg):
        return "region judge trained"
    why = "region.enabled: false" if not cfg.region.enabled else f"{cfg.acquire.strategy} does not read it"
    return f"no region judge ({why})"


def scoring_line(cfg, device, round_: int, images: int, names: list[str]) -> str:
    return (f"scoring {images} images with round {round_}'s model on {device_text(device)}, "
            f"{precision.describe(cfg, device)}; images at {cfg.train.image_scale:g}x; scores: {', '.join(names)}")
