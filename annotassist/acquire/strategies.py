"""Strategies: pick the B images to label next from stored scores. Each is one small function registered by name.

A strategy gets the candidates (unlabeled pool images), their stored scores and embeddings, the labeled
images' embeddings, and returns [(image_id, score)] in pick order. Any registered score name also works as a
strategy: the top-k of that score (`entropy`, `margin`, `classbal`, `ripu`, `class_aware`, ...).

The project's default, `dssn`:
    s_i    = alpha * Phi(z(class_aware_i)) + (1 - alpha) * Phi(z(region_relevance_i))
    pick   = argmax_i  s_i - lambda * max(0, max_{j in picked or labeled} cos(f_i - mean f, f_j - mean f))
repeated B times (greedy). z standardises a score over the candidates and the normal CDF Phi maps it to
[0, 1]: scores of different scales become comparable and an image high on both beats one high on either.
f = pooled high-level encoder features. The similarity penalty keeps the batch from being B frames of the same
video shot; centring the features makes cosine tell images apart.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .registry import registrar
from .scores import SCORES


@dataclass
class Candidates:
    ids: list[int]  # unlabeled images, in pool order
    scores: dict[int, dict[str, float | None]]  # image id -> score name -> value (None = NaN)
    embeddings: dict[int, np.ndarray]  # image id -> pooled features (candidates and labeled images)
    labeled_ids: list[int]


Strategy = Callable[[Candidates, int, object], list[tuple[int, float | None]]]
STRATEGIES: dict[str, Strategy] = {}
# the scores each strategy reads (the scoring pass computes only these)
NEEDS: dict[str, list[str]] = {}


register = registrar(STRATEGIES, NEEDS)


def _value(c: Candidates, i: int, name: str) -> float:
    v = c.scores.get(i, {}).get(name)
    return float("nan") if v is None else float(v)


def topk(c: Candidates, budget: int, name: str) -> list[tuple[int, float | None]]:
    """Highest score first; images whose score is NaN go last (they are reported by the scoring pass)."""
    vals = [(i, _value(c, i, name)) for i in c.ids]
    vals.sort(key=lambda t: (np.isnan(t[1]), -t[1] if not np.isnan(t[1]) else 0.0))
    return [(i, None if np.isnan(v) else v) for i, v in vals[:budget]]


def standardize01(values: np.ndarray) -> np.ndarray:
    """Phi((v - mean) / std) over the candidates, in [0, 1]; NaN -> 0 (ranked last)."""
    v = np.asarray(values, dtype=np.float64)
    ok = ~np.isnan(v)
    out = np.zeros_like(v)
    if ok.sum() == 0:
        return out
    std = v[ok].std()
    z = (v[ok] - v[ok].mean()) / std if std > 0 else np.zeros(ok.sum())
    out[ok] = 0.5 * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))
    return out


def centred_unit(emb: np.ndarray, mean: np.ndarray) -> np.ndarray:
    e = emb - mean
    return e / np.maximum(np.linalg.norm(e, axis=-1, keepdims=True), 1e-8)


def greedy_diverse(ids: list[int], base: np.ndarray, embeddings: dict[int, np.ndarray], labeled_ids: list[int],
                   budget: int, weight: float) -> list[tuple[int, float]]:
    """Greedy picks of base score minus `weight` x the max cosine to anything picked or labeled."""
    have = [i for i in ids if i in embeddings]
    if weight <= 0 or len(have) < len(ids):
        order = np.argsort(-base, kind="stable")[:budget]
        return [(ids[k], float(base[k])) for k in order]
    known = [i for i in labeled_ids if i in embeddings]
    mean = np.mean([embeddings[i] for i in ids + known], axis=0)
    f = centred_unit(np.stack([embeddings[i] for i in ids]), mean)
    sim = np.full(len(ids), -1.0)
    if known:
        sim = (f @ centred_unit(np.stack([embeddings[i] for i in known]), mean).T).max(axis=1)
    picks, taken = [], np.zeros(len(ids), dtype=bool)
    for _ in range(min(budget, len(ids))):
        gain = base - weight * np.maximum(sim, 0.0)
        gain[taken] = -np.inf
        k = int(np.argmax(gain))
        picks.append((ids[k], float(base[k])))
        taken[k] = True
        sim = np.maximum(sim, f @ f[k])
    return picks


@register("random", needs=["random"])
def random_strategy(c: Candidates, budget: int, cfg) -> list[tuple[int, float | None]]:
    return topk(c, budget, "random")


def _dssn_gain(c: Candidates, cfg) -> np.ndarray:
    a = cfg.acquire
    ca = standardize01(np.array([_value(c, i, "class_aware") for i in c.ids]))
    rr_raw = np.array([_value(c, i, "region_relevance") for i in c.ids])
    # without a discriminator every region score is NaN: fall back to class-aware alone
    rr = standardize01(rr_raw) if not np.isnan(rr_raw).all() else ca
    return a.alpha * ca + (1 - a.alpha) * rr


@register("dssn", needs=["class_aware", "region_relevance"])
def dssn_strategy(c: Candidates, budget: int, cfg) -> list[tuple[int, float | None]]:
    return greedy_diverse(c.ids, _dssn_gain(c, cfg), c.embeddings, c.labeled_ids, budget, cfg.acquire.diversity)


@register("dssn_cost", needs=["class_aware", "region_relevance", "expected_cost"])
def dssn_cost_strategy(c: Candidates, budget: int, cfg) -> list[tuple[int, float | None]]:
    """`dssn`'s gain minus cost_weight x the standardised expected correction cost: the uncertain images
    `dssn` prefers are the ones whose pre-annotations need the most pixels changed, so gain is weighed
    against what a person pays for it."""
    cost = standardize01(np.array([_value(c, i, "expected_cost") for i in c.ids]))
    base = _dssn_gain(c, cfg) - cfg.acquire.cost_weight * cost
    return greedy_diverse(c.ids, base, c.embeddings, c.labeled_ids, budget, cfg.acquire.diversity)


def resolve(name: str) -> tuple[Strategy, list[str]]:
    """A registered strategy, or top-k of a registered score of that name."""
    if name in STRATEGIES:
        return STRATEGIES[name], NEEDS[name]
    if name in SCORES:
        return (lambda c, b, cfg: topk(c, b, name)), [name]
    known = sorted(set(STRATEGIES) | set(SCORES))
    from ..errors import AnnotassistError
    raise AnnotassistError(f"unknown strategy {name!r} (known: {', '.join(known)})")
