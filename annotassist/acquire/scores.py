"""Scores: how much labeling one image would teach the model. Each is one small function registered by name.

A score gets one image's model outputs (`ScoreInput`) and returns `ScoreResult(value, region_map)`: a number
(higher = label it sooner) and optionally a small map of per-region scores (16x16 cells) that shows a person
where the model is likely wrong. Notation: p1 >= p2 the top two softmax probabilities of a pixel, H its
entropy, C the number of classes, share_c the class's share of labeled pixels in the pool.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..models.discriminator import CELL
from ..pseudo_label import class_aware_keep
from .registry import registrar


@dataclass
class ScoreInput:
    probs: torch.Tensor  # (C, H, W) softmax, float32
    image: torch.Tensor  # (3, H, W) in [0, 1]
    cfg: object  # annotassist.config.Config
    class_weights: torch.Tensor  # (C,) from the labeled pool's class shares
    class_shares: torch.Tensor  # (C,) labeled pixel share per class
    reliability: torch.Tensor | None = None  # (h, w) per 16x16 cell from the region-relevance discriminator
    image_id: int = 0
    round: int = 0
    _cache: dict = field(default_factory=dict)

    def superpixels(self) -> np.ndarray:
        """SLIC superpixels of the image (computed once, shared by the scores that use regions)."""
        if "slic" not in self._cache:
            from skimage.segmentation import slic

            a = self.cfg.acquire
            img = self.image.permute(1, 2, 0).cpu().numpy()
            self._cache["slic"] = slic(img, n_segments=a.superpixels, compactness=a.slic_compactness,
                                       start_label=0)
        return self._cache["slic"]


@dataclass
class ScoreResult:
    value: float
    region_map: np.ndarray | None = None


ScoreFn = Callable[[ScoreInput], ScoreResult]
SCORES: dict[str, ScoreFn] = {}


register = registrar(SCORES)


def class_weights(shares: np.ndarray, kind: str = "exp") -> np.ndarray:
    """Rarer in the labeled pool -> larger weight. exp: exp(-share) (Cai et al.); hwang: (6*share + 1)^-2."""
    shares = np.asarray(shares, dtype=np.float64)
    if kind == "hwang":
        return (6 * shares + 1) ** -2
    return np.exp(-shares)


def cell_mean(pixel_map: torch.Tensor) -> np.ndarray:
    """(H, W) -> (ceil(H/16), ceil(W/16)) cell means: the region map shown to a person."""
    h, w = pixel_map.shape
    x = F.pad(pixel_map[None, None].float(), (0, (-w) % CELL, 0, (-h) % CELL))
    ones = F.pad(torch.ones_like(pixel_map)[None, None].float(), (0, (-w) % CELL, 0, (-h) % CELL))
    return (F.avg_pool2d(x, CELL) / F.avg_pool2d(ones, CELL).clamp_min(1e-6))[0, 0].cpu().numpy()


def topk_mean(values: np.ndarray, k: int) -> float:
    v = np.sort(np.asarray(values, dtype=np.float64).ravel())[::-1]
    return float(v[: max(1, k)].mean()) if v.size else float("nan")


def region_means(pixel_map: np.ndarray, segments: np.ndarray) -> np.ndarray:
    n = int(segments.max()) + 1
    sums = np.bincount(segments.ravel(), weights=pixel_map.ravel(), minlength=n)
    counts = np.bincount(segments.ravel(), minlength=n)
    return sums[counts > 0] / counts[counts > 0]


# -- the project's scores ----------------------------------------------------------------------------------

@register("class_aware")
def class_aware(x: ScoreInput) -> ScoreResult:
    """DSSN's class-aware selection turned into an image score.

    A pixel is unreliable when it fails the per-image, per-class selection (thr = 0.96 * peak if peak > 0.92,
    else peak). Score = mean over pixels of unreliable * w[predicted class], plus, for each predicted class
    whose peak never passes the gate (the model is unsure of it everywhere), w_c / C.
    """
    d = x.cfg.dssn
    probs = x.probs
    keep = class_aware_keep(probs[None], d.peak_gate, d.peak_ratio)[0]
    pred = probs.argmax(dim=0)
    w = x.class_weights.to(probs.device)
    unreliable = (~keep).float() * w[pred]
    peak = probs.flatten(1).amax(dim=1)
    present = torch.bincount(pred.flatten(), minlength=probs.shape[0]) > 0
    failed = present & (peak <= d.peak_gate)
    value = unreliable.mean() + (w * failed).sum() / probs.shape[0]
    return ScoreResult(float(value), cell_mean(unreliable))


@register("region_relevance")
def region_relevance(x: ScoreInput) -> ScoreResult:
    """1 - reliability of each region, from the region-relevance discriminator; image score = mean of the
    top-k regions, so one badly wrong object is not averaged away. Regions: 16x16 cells, or SLIC superpixels
    (acquire.regions) taking the mean of the cells they cover."""
    if x.reliability is None:
        return ScoreResult(float("nan"))
    unrel = (1 - x.reliability.float()).clamp(0, 1)
    h, w = x.probs.shape[-2:]
    cells = unrel.cpu().numpy()
    k = x.cfg.acquire.topk_regions
    if x.cfg.acquire.regions == "superpixels":
        pix = unrel.repeat_interleave(CELL, 0).repeat_interleave(CELL, 1)[:h, :w].cpu().numpy()
        return ScoreResult(topk_mean(region_means(pix, x.superpixels()), k), cells)
    return ScoreResult(topk_mean(cells, k), cells)


@register("expected_cost")
def expected_cost(x: ScoreInput) -> ScoreResult:
    """The share of its pixels a person is expected to change in the pre-annotation: mean (1 - p1), the
    model's own error rate where it is calibrated. Not a gain: cost-aware strategies weigh gain against it."""
    err = 1 - x.probs.amax(dim=0)
    return ScoreResult(float(err.mean()), cell_mean(err))


# -- baselines ---------------------------------------------------------------------------------------------

@register("random")
def random_score(x: ScoreInput) -> ScoreResult:
    """Uniform, seeded by (seed, round, image): the same draw on every rank and every rerun."""
    rng = np.random.default_rng([x.cfg.pool.seed, x.round, x.image_id, 17])
    return ScoreResult(float(rng.random()))


def _entropy(probs: torch.Tensor) -> torch.Tensor:
    return -(probs * probs.clamp_min(1e-12).log()).sum(dim=0) / np.log(probs.shape[0])


@register("entropy")
def entropy(x: ScoreInput) -> ScoreResult:
    """Mean normalised pixel entropy H / log C."""
    h = _entropy(x.probs)
    return ScoreResult(float(h.mean()), cell_mean(h))


@register("margin")
def margin(x: ScoreInput) -> ScoreResult:
    """Best-versus-second-best: mean p2 / p1 (1 = a tie, 0 = sure)."""
    top2 = x.probs.topk(2, dim=0).values
    r = top2[1] / top2[0].clamp_min(1e-12)
    return ScoreResult(float(r.mean()), cell_mean(r))


@register("classbal")
def classbal(x: ScoreInput) -> ScoreResult:
    """ClassBal (Cai et al., CVPR 2021): per superpixel, mean p2/p1 times exp(-share of its dominant
    predicted class); image score = mean over superpixels."""
    top2 = x.probs.topk(2, dim=0).values
    ratio = (top2[1] / top2[0].clamp_min(1e-12)).cpu().numpy()
    pred = x.probs.argmax(dim=0).cpu().numpy()
    seg = x.superpixels()
    n = int(seg.max()) + 1
    counts = np.bincount(seg.ravel(), minlength=n)
    mean_ratio = np.bincount(seg.ravel(), weights=ratio.ravel(), minlength=n) / np.maximum(counts, 1)
    c = x.probs.shape[0]
    votes = np.bincount(seg.ravel() * c + pred.ravel(), minlength=n * c).reshape(n, c)
    dominant = votes.argmax(axis=1)
    shares = x.class_shares.cpu().numpy()
    scores = mean_ratio * np.exp(-shares[dominant])
    return ScoreResult(float(scores[counts > 0].mean()))


@register("ripu")
def ripu(x: ScoreInput) -> ScoreResult:
    """RIPU (Xie et al., CVPR 2022): per pixel, the region impurity P (entropy of the predicted-class
    histogram in a (2k+1)^2 window) times the window's mean normalised entropy U; image score = mean of P*U."""
    k = x.cfg.acquire.ripu_radius
    size = 2 * k + 1
    c = x.probs.shape[0]
    pred = x.probs.argmax(dim=0)
    onehot = F.one_hot(pred, c).permute(2, 0, 1).float()[None]
    hist = F.avg_pool2d(onehot, size, stride=1, padding=k, count_include_pad=False)[0]
    impurity = -(hist * hist.clamp_min(1e-12).log()).sum(dim=0)
    u = F.avg_pool2d(_entropy(x.probs)[None, None], size, stride=1, padding=k, count_include_pad=False)[0, 0]
    a = impurity * u
    return ScoreResult(float(a.mean()), cell_mean(a))
