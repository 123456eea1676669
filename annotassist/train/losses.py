"""Labeled-image criteria shared by every method: plain CE and OHEM CE (the Cityscapes recipe), optionally
class-balanced so that a rare or thin class (a few % of the labeled pixels) is not drowned by the background."""
from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = 255


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean CE over the labeled pixels; 0 (not NaN) for a batch with none: in region mode a crop of a partial
    mask may hold no reviewed pixel at all."""
    if not (target != IGNORE).any():
        return logits.float().sum() * 0.0
    return F.cross_entropy(logits.float(), target, weight=weight, ignore_index=IGNORE)


def balanced_weights(class_pixels, power: float = 0.5) -> torch.Tensor:
    """w_c = share_c^-power over the labeled pixels, scaled so the average labeled pixel keeps weight 1 (the
    loss keeps its size; only the mix between classes changes). A class with no labeled pixel gets the largest
    weight of the others (it has nothing to weigh yet)."""
    px = torch.as_tensor(class_pixels, dtype=torch.float64)
    share = px / px.sum().clamp_min(1)
    w = torch.where(share > 0, share.clamp_min(1e-6) ** -power, torch.zeros_like(share))
    w = torch.where(share > 0, w, w.max().clamp_min(1.0))
    w = w / (share * w).sum().clamp_min(1e-12)
    return w.float()


def ohem_cross_entropy(logits: torch.Tensor, target: torch.Tensor, thresh: float = 0.7,
                       min_kept: int = 200000, weight: torch.Tensor | None = None) -> torch.Tensor:
    """CE over the hard pixels: those whose true-class probability is below `thresh`, at least `min_kept`."""
    logits = logits.float()
    pixel_loss = F.cross_entropy(logits, target, weight=weight, ignore_index=IGNORE, reduction="none").flatten()
    valid = target.flatten() != IGNORE
    n_valid = int(valid.sum())
    if n_valid == 0:
        return logits.sum() * 0.0
    with torch.no_grad():
        prob = torch.softmax(logits, 1).gather(1, target.clamp(max=logits.shape[1] - 1).unsqueeze(1)).flatten()
        prob = torch.where(valid, prob, torch.ones_like(prob))
        k = min(n_valid, min_kept)
        threshold = max(thresh, float(prob.kthvalue(k).values)) if k > 0 else thresh
        hard = (prob <= threshold) & valid
    return pixel_loss[hard].mean() if hard.any() else pixel_loss[valid].mean()


def labeled_criterion(cfg, class_pixels=None, device=None):
    """The labeled loss of a TrainConfig; `class_pixels` (labeled pixels per class) weighs it when
    `class_balance` asks for it."""
    weight = None
    if cfg.class_balance == "balanced" and class_pixels is not None:
        weight = balanced_weights(class_pixels, cfg.class_balance_power).to(device)
    if cfg.criterion == "ohem":
        return lambda logits, target: ohem_cross_entropy(logits, target, cfg.ohem_thresh, cfg.ohem_min_kept, weight)
    return lambda logits, target: cross_entropy(logits, target, weight)
