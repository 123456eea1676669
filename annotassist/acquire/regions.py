"""Region queries (acquire.unit: region): ask a person about superpixels, not whole images.

Regions are SLIC superpixels of each image at the working scale, computed once and stored in the workspace.
A region score is one small function registered by name, like the image scores: it gets one image's model
outputs and its superpixel map and returns one value per region (higher = ask sooner). A region strategy
combines stored region scores into one base value per region; selection then picks the top regions across the
whole pool, greedily, multiplying an image's remaining regions by (1 - region_spread) for every region already
taken from it, so one hard image does not take the whole budget. Regions a person already reviewed are never
asked again.

Notation as in scores.py; for region r: mean_r(m) is the mean of pixel map m over the region's pixels.

    class_aware       mean_r(unreliable * w[pred]), DSSN's class-aware selection with the pool's class weights
    region_relevance  mean_r(1 - reliability), from the region-relevance discriminator (NaN without one)
    impurity          RIPU: entropy of the predicted-class histogram in r times mean_r(H / log C)
    random            uniform, seeded by (seed, round, image, region)

    strategy dssn     alpha * Phi(z(class_aware)) + (1 - alpha) * Phi(z(region_relevance))
                      + impurity_weight * Phi(z(impurity)), z over every candidate region of the pool
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from ..errors import AnnotassistError
from ..models.discriminator import CELL
from ..pseudo_label import class_aware_keep
from .registry import registrar
from .scores import ScoreInput, _entropy
from .select import require_scores
from .strategies import standardize01

if TYPE_CHECKING:
    from ..workspace import Workspace


def compute_superpixels(image: torch.Tensor, cfg) -> np.ndarray:
    """SLIC superpixels of a (3, H, W) image in [0, 1] at the working scale, ids 0..n-1 with no gaps."""
    from skimage.segmentation import slic

    a = cfg.acquire
    img = image.permute(1, 2, 0).float().cpu().numpy()
    seg = slic(img, n_segments=a.superpixels, compactness=a.slic_compactness, start_label=0)
    _, seg = np.unique(seg, return_inverse=True)  # SLIC may skip ids: every id a real region
    return seg.reshape(img.shape[:2]).astype(np.int32)


def stored_superpixels(ws: Workspace, image_id: int, image: torch.Tensor, cfg, log=print) -> np.ndarray:
    """The image's stored superpixels, or new ones (stored) if there are none or the working-scale size
    changed since they were made (the image was replaced, or train.image_scale changed): said once per image."""
    seg = ws.superpixels(image_id)
    shape = tuple(image.shape[-2:])
    if seg is not None and seg.shape == shape:
        return seg
    if seg is not None:
        log(f"note: {ws.image(image_id).name}: its regions were made at {seg.shape[1]}x{seg.shape[0]}, the image is "
            f"now {shape[1]}x{shape[0]} at the working scale; its superpixels are computed again")
    seg = compute_superpixels(image, cfg)
    ws.set_superpixels(image_id, seg)
    return seg


def region_means(pixel_map: np.ndarray, seg: np.ndarray, n: int) -> np.ndarray:
    counts = np.bincount(seg.ravel(), minlength=n)
    sums = np.bincount(seg.ravel(), weights=np.asarray(pixel_map, dtype=np.float64).ravel(), minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


# -- region scores ---------------------------------------------------------------------------------------

RegionScore = Callable[[ScoreInput, np.ndarray], np.ndarray]
REGION_SCORES: dict[str, RegionScore] = {}


register_score = registrar(REGION_SCORES)


def _n(seg: np.ndarray) -> int:
    return int(seg.max()) + 1 if seg.size else 0


@register_score("class_aware")
def class_aware(x: ScoreInput, seg: np.ndarray) -> np.ndarray:
    d = x.cfg.dssn
    keep = class_aware_keep(x.probs[None], d.peak_gate, d.peak_ratio)[0]
    pred = x.probs.argmax(dim=0)
    unreliable = (~keep).float() * x.class_weights.to(x.probs.device)[pred]
    return region_means(unreliable.cpu().numpy(), seg, _n(seg))


@register_score("region_relevance")
def region_relevance(x: ScoreInput, seg: np.ndarray) -> np.ndarray:
    if x.reliability is None:
        return np.full(_n(seg), np.nan)
    h, w = seg.shape
    unrel = (1 - x.reliability.float()).clamp(0, 1)
    pix = unrel.repeat_interleave(CELL, 0).repeat_interleave(CELL, 1)[:h, :w].cpu().numpy()
    return region_means(pix, seg, _n(seg))


@register_score("impurity")
def impurity(x: ScoreInput, seg: np.ndarray) -> np.ndarray:
    """RIPU's region impurity (entropy of the predicted-class histogram inside the region) times its mean
    normalised prediction entropy: high where the region straddles a boundary the model is unsure of."""
    n, c = _n(seg), x.probs.shape[0]
    pred = x.probs.argmax(dim=0).cpu().numpy()
    hist = np.bincount(seg.ravel() * c + pred.ravel(), minlength=n * c).reshape(n, c).astype(np.float64)
    share = hist / np.maximum(hist.sum(axis=1, keepdims=True), 1)
    purity = -(share * np.log(np.clip(share, 1e-12, None))).sum(axis=1) / np.log(c)
    return purity * region_means(_entropy(x.probs).cpu().numpy(), seg, n)


@register_score("expected_cost")
def expected_cost(x: ScoreInput, seg: np.ndarray) -> np.ndarray:
    """The share of the region's pixels the pre-annotation is expected to get wrong (mean 1 - p1): what a
    person will repaint there. Not a gain: `dssn_cost` weighs the gain against it."""
    return region_means((1 - x.probs.amax(dim=0)).cpu().numpy(), seg, _n(seg))


@register_score("random")
def random_regions(x: ScoreInput, seg: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng([x.cfg.pool.seed, x.round, x.image_id, 29])
    return rng.random(_n(seg))


# -- strategies: stored region scores -> one base value per candidate region ------------------------------

RegionStrategy = Callable[[dict[str, np.ndarray], object], np.ndarray]
REGION_STRATEGIES: dict[str, RegionStrategy] = {}
REGION_NEEDS: dict[str, list[str]] = {}


register_strategy = registrar(REGION_STRATEGIES, REGION_NEEDS)


@register_strategy("dssn", needs=["class_aware", "region_relevance", "impurity"])
def dssn_regions(v: dict[str, np.ndarray], cfg) -> np.ndarray:
    a = cfg.acquire
    ca = standardize01(v["class_aware"])
    rr = standardize01(v["region_relevance"]) if not np.isnan(v["region_relevance"]).all() else ca
    return a.alpha * ca + (1 - a.alpha) * rr + a.impurity_weight * standardize01(v["impurity"])


@register_strategy("dssn_cost", needs=["class_aware", "region_relevance", "impurity", "expected_cost"])
def dssn_cost_regions(v: dict[str, np.ndarray], cfg) -> np.ndarray:
    """`dssn`'s region gain minus cost_weight x the standardised expected correction cost. On CamVid the plain
    `dssn` regions cost 2.8x the pixels changed of random regions for +1.1 mIoU: they are the regions the
    model gets wrong, which a person must repaint; this prefers informative regions that are cheap to check."""
    return dssn_regions(v, cfg) - cfg.acquire.cost_weight * standardize01(v["expected_cost"])


@register_strategy("random", needs=["random"])
def random_strategy(v: dict[str, np.ndarray], cfg) -> np.ndarray:
    return v["random"]


def resolve_region(name: str) -> tuple[RegionStrategy, list[str]]:
    """A registered region strategy, or the top regions of a registered region score of that name."""
    if name in REGION_STRATEGIES:
        return REGION_STRATEGIES[name], REGION_NEEDS[name]
    if name in REGION_SCORES:
        return (lambda v, cfg: v[name]), [name]
    known = sorted(set(REGION_STRATEGIES) | set(REGION_SCORES))
    raise AnnotassistError(f"strategy {name!r} has no region form (acquire.unit: region knows: {', '.join(known)}); "
                           "choose one of those, or use acquire.unit: image")


# -- selection ---------------------------------------------------------------------------------------------

@dataclass
class RegionSelection:
    round: int
    strategy: str
    picks: dict[int, list[int]]  # image id -> regions, in pick order
    pixels: int  # pool pixels (at the images' own sizes) inside the picked regions
    message: str = ""

    @property
    def regions(self) -> int:
        return sum(len(r) for r in self.picks.values())


def greedy_regions(items: list[tuple[int, int, float, int]], budget_regions: int | None, budget_pixels: int | None,
                   spread: float) -> list[tuple[int, int, float]]:
    """items: (image id, region, base score, pixels). Pick the highest score; every pick from an image scales
    that image's other regions by (1 - spread). Stops at `budget_regions` picks or once `budget_pixels`
    pixels are taken. Returns (image id, region, base score) in pick order."""
    by_image: dict[int, list[tuple[float, int, int]]] = {}
    for i, r, s, px in items:
        by_image.setdefault(i, []).append((s, r, px))
    for v in by_image.values():
        v.sort(key=lambda t: (-t[0], t[1]))
    heap = [(-v[0][0], i, 0) for i, v in by_image.items() if v]  # (-(best remaining x factor), image, taken)
    heapq.heapify(heap)
    factor = {i: 1.0 for i in by_image}
    nxt = {i: 0 for i in by_image}
    out, taken_px = [], 0
    while heap:
        if budget_regions is not None and len(out) >= budget_regions:
            break
        if budget_pixels is not None and taken_px >= budget_pixels:
            break
        _, i, _ = heapq.heappop(heap)
        s, r, px = by_image[i][nxt[i]]
        out.append((i, r, s))
        taken_px += px
        nxt[i] += 1
        factor[i] *= (1 - spread)
        if nxt[i] < len(by_image[i]):
            heapq.heappush(heap, (-by_image[i][nxt[i]][0] * factor[i], i, nxt[i]))
    return out


def select_regions(ws: Workspace, cfg, strategy: str | None = None, budget: int | None = None,
                   round_: int | None = None) -> RegionSelection:
    """Pick the round's regions from stored region scores and queue them (image by image)."""
    strategy = strategy or cfg.acquire.strategy
    fn, needs = resolve_region(strategy)
    a = cfg.acquire
    if round_ is None:
        round_, _ = ws.latest_model()
    candidates = ws.images("pool", state="unlabeled")
    if not candidates:
        return RegionSelection(round_, strategy, {}, 0, "nothing left to label: every pool image is labeled or queued")
    stored = ws.region_scores(round_)
    require_scores(candidates, stored, needs, f"region scores for round {round_}",
                   f"annotassist score --unit region --workspace {ws.root} --strategy {strategy}")
    ids, regions, pixels, values = [], [], [], {n: [] for n in needs}
    for c in candidates:
        full = ws.region_map_full(c.id)
        n = len(stored[c.id][needs[0]])
        area = np.bincount(full.ravel(), minlength=n)[:n]
        done = ws.reviewed_regions(c.id)
        for r in range(n):
            if r in done or area[r] == 0:
                continue
            ids.append(c.id)
            regions.append(r)
            pixels.append(int(area[r]))
            for name in needs:
                values[name].append(float(stored[c.id][name][r]))
    if not ids:
        return RegionSelection(round_, strategy, {}, 0, "nothing left to ask: every region of the pool is reviewed")
    base = fn({k: np.asarray(v, dtype=np.float64) for k, v in values.items()}, cfg)
    base = np.where(np.isnan(base), -np.inf, base)
    total_px = sum(r.width * r.height for r in ws.images("pool"))
    message = ""
    if a.budget_share > 0:
        budget_regions, budget_pixels = None, int(a.budget_share * total_px)
        if budget is not None:
            budget_regions = budget
    else:
        budget_regions, budget_pixels = (a.region_budget if budget is None else budget), None
    if budget_regions is not None and budget_regions < 1:
        raise AnnotassistError(f"region budget must be at least 1, got {budget_regions}")
    if budget_regions is not None and budget_regions > len(ids):
        message = f"budget {budget_regions} regions is more than the {len(ids)} regions not yet reviewed: taking them all"
    items = list(zip(ids, regions, base.tolist(), pixels))
    picked = greedy_regions(items, budget_regions, budget_pixels, a.region_spread)
    picks: dict[int, list[int]] = {}
    best: dict[int, float] = {}
    area = dict(((i, r), px) for i, r, _, px in items)
    for i, r, s in picked:
        picks.setdefault(i, []).append(r)
        best[i] = max(best.get(i, -np.inf), s if np.isfinite(s) else -1e9)
    ws.record_region_selection(round_, picks, best, strategy)
    return RegionSelection(round_, strategy, picks, sum(area[(i, r)] for i, r, _ in picked), message)
