"""Labeled-image criteria shared by every method: plain CE and OHEM CE (the Cityscapes recipe)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = 255


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), target, ignore_index=IGNORE)


def ohem_cross_entropy(logits: torch.Tensor, target: torch.Tensor, thresh: float = 0.7,
                       min_kept: int = 200000) -> torch.Tensor:
    """CE over the hard pixels: those whose true-class probability is below `thresh`, at least `min_kept`."""
    logits = logits.float()
    pixel_loss = F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="none").flatten()
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


def labeled_criterion(cfg):
    """The labeled loss of a TrainConfig."""
    if cfg.criterion == "ohem":
        return lambda logits, target: ohem_cross_entropy(logits, target, cfg.ohem_thresh, cfg.ohem_min_kept)
    return cross_entropy
