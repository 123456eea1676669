"""Which pixels of a prediction are trusted as pseudo-labels (keep_mask): one owner for the rules that DSSN's
training (train/dssn.py) and the acquisition scores (acquire/scores.py, `class_aware`) share, so a score
measures exactly what training would throw away.
"""
from __future__ import annotations

import torch


def class_aware_keep(probs: torch.Tensor, peak_gate: float = 0.92, peak_ratio: float = 0.96) -> torch.Tensor:
    """DSSN's class-aware selection: keep a pixel if, for some class, its confidence beats that class's
    per-image threshold, thr[b,c] = ratio * peak[b,c] when peak[b,c] > gate (strictly), else peak[b,c]
    itself - so a class whose peak is <= gate keeps nothing, and a rare class is judged against its own peak.

    probs: (B, C, H, W) softmax. Returns keep (B, H, W) bool.
    """
    peak = probs.flatten(2).amax(dim=2)  # (B, C)
    thr = torch.where(peak > peak_gate, peak * peak_ratio, peak)
    return (probs > thr[:, :, None, None]).any(dim=1)


def global_keep(probs: torch.Tensor, thresh: float = 0.95) -> torch.Tensor:
    """UniMatch's fixed threshold, for ablations."""
    return probs.amax(dim=1) >= thresh


def class_rank_keep(probs: torch.Tensor, share: float = 0.5, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Per-class rank selection ("the top high-confidence predictions of the weak view for each class"): in
    each image, of the n pixels predicted as class c, keep the ceil(share * n) most confident. No absolute
    gate, so a class the model is still unsure of keeps its best pixels too. A pixel whose confidence ties
    the last one kept is kept as well (the rule does not depend on pixel order); a class predicted on one
    pixel keeps it; padding (valid False) is neither ranked nor kept.

    probs: (B, C, H, W) softmax; valid: (B, H, W) bool or None. Returns keep (B, H, W) bool.
    """
    b, c = probs.shape[:2]
    conf, label = probs.max(dim=1)
    conf, label = conf.flatten(1), label.flatten(1)  # (B, N)
    ok = valid.flatten(1) if valid is not None else torch.ones_like(label, dtype=torch.bool)
    # each pixel's confidence in its own class's row, -1 elsewhere: sorting a row ranks one class's pixels
    rows = torch.full((b, c, conf.shape[1]), -1.0, device=probs.device, dtype=conf.dtype)
    rows.scatter_(1, label[:, None], torch.where(ok, conf, -1.0)[:, None])
    n = (rows >= 0).sum(dim=2)  # (B, C) pixels predicted as each class
    k = torch.ceil(share * n).long().clamp(min=1)  # a present class keeps at least one pixel
    ranked = rows.sort(dim=2, descending=True).values
    thr = ranked.gather(2, (k - 1)[:, :, None]).squeeze(2)  # the k-th highest confidence of each class
    thr = torch.where(n > 0, thr, torch.inf)  # an absent class keeps nothing
    keep = (conf >= thr.gather(1, label)) & ok
    return keep.view(probs.shape[0], *probs.shape[2:])
