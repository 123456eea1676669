"""Each score pinned on hand-made probability maps; strategies on crafted cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from annotassist.acquire.scores import SCORES, ScoreInput, class_weights, topk_mean
from annotassist.acquire.strategies import Candidates, STRATEGIES, greedy_diverse, resolve, standardize01, topk

from conftest import make_config

C = 6


def cfg(*over):
    return make_config(list(over))


def confident(cls: int = 0, h: int = 32, w: int = 32, p: float = 0.99) -> torch.Tensor:
    probs = torch.full((C, h, w), (1 - p) / (C - 1))
    probs[cls] = p
    return probs


def split(a: int = 0, b: int = 1, h: int = 32, w: int = 32) -> torch.Tensor:
    """Every pixel torn between two classes."""
    probs = torch.full((C, h, w), 0.02)
    probs[a] = 0.46
    probs[b] = 0.44
    return probs


def run(name: str, probs: torch.Tensor, config=None, shares=None, reliability=None, image=None, image_id=1):
    config = config or cfg()
    shares = torch.tensor(shares if shares is not None else [1 / C] * C, dtype=torch.float32)
    weights = torch.tensor(class_weights(shares.numpy(), config.acquire.class_weight), dtype=torch.float32)
    if image is None:
        image = torch.rand(3, *probs.shape[1:], generator=torch.Generator().manual_seed(0))
    x = ScoreInput(probs, image, config, weights, shares, reliability, image_id, 0)
    return SCORES[name](x)


# (ripu scores impurity of the winners, not their confidence: see its own test)
@pytest.mark.parametrize("name", ["class_aware", "entropy", "margin", "classbal"])
def test_confident_map_scores_low_and_split_map_high(name):
    lo, hi = run(name, confident()).value, run(name, split()).value
    assert lo < hi, name
    assert math.isfinite(lo) and math.isfinite(hi)


def test_entropy_and_margin_exact_values():
    assert run("entropy", confident(p=1.0 - 1e-7)).value < 1e-4
    uniform = torch.full((C, 4, 4), 1 / C)
    assert run("entropy", uniform).value == pytest.approx(1.0, abs=1e-5)  # H / log C
    assert run("margin", uniform).value == pytest.approx(1.0, abs=1e-6)  # p2 / p1 = 1 at a tie
    assert run("margin", split()).value == pytest.approx(0.44 / 0.46, abs=1e-5)


def test_class_aware_rare_class_weighs_more():
    # the same unsure region, predicted as a common class (share .9) or as a rare one (share .01)
    probs = confident(0)
    probs[:, :8, :8] = split(3, 0, 8, 8)
    rare = probs.clone()
    rare[:, :8, :8] = split(5, 0, 8, 8)
    shares = [0.9, 0.02, 0.02, 0.03, 0.02, 0.01]
    for kind in ("exp", "hwang"):
        c = cfg(f"acquire.class_weight={kind}")
        common_score = run("class_aware", probs, c, shares=[0.01, 0.02, 0.02, 0.9, 0.04, 0.01]).value
        rare_score = run("class_aware", rare, c, shares=shares).value
        assert rare_score > common_score, kind


def test_class_aware_counts_a_class_the_model_is_unsure_of_everywhere():
    probs = confident(0)
    probs[:, :4, :4] = split(2, 0, 4, 4)  # class 2 predicted but its peak is .46 <= .92
    base = confident(0)
    score = run("class_aware", probs).value
    unreliable_share = 16 / (32 * 32)
    w = class_weights(np.full(C, 1 / C))
    # the failed-class bonus w_c / C is on top of the unreliable-pixel share
    assert score == pytest.approx(unreliable_share * w[2] + w[2] / C, rel=1e-4)
    assert run("class_aware", base).value == 0.0


def test_class_aware_region_map_marks_where_the_model_is_unsure():
    probs = confident(0)
    probs[:, 16:, 16:] = split(1, 0, 16, 16)
    res = run("class_aware", probs)
    assert res.region_map.shape == (2, 2)
    assert res.region_map[1, 1] > 0.5 and res.region_map[0, 0] == 0.0


def test_region_relevance_top_k_and_nan_without_discriminator():
    rel = torch.ones(4, 4)
    rel[0, 0] = 0.0  # one badly wrong cell
    c = cfg("acquire.topk_regions=1")
    assert run("region_relevance", confident(h=64, w=64), c, reliability=rel).value == pytest.approx(1.0)
    c4 = cfg("acquire.topk_regions=4")
    assert run("region_relevance", confident(h=64, w=64), c4, reliability=rel).value == pytest.approx(0.25)
    assert math.isnan(run("region_relevance", confident()).value)


def test_region_relevance_superpixels():
    rel = torch.ones(4, 4)
    rel[:2, :2] = 0.0  # the top-left quarter is unreliable
    image = torch.zeros(3, 64, 64)
    image[:, :32, :32] = 1.0  # and it is one bright square: a superpixel boundary lines up with it
    c = cfg("acquire.regions=superpixels", "acquire.topk_regions=1", "acquire.superpixels=16")
    assert run("region_relevance", confident(h=64, w=64), c, reliability=rel, image=image).value > 0.9


def test_classbal_weighs_rare_dominant_class_more():
    a = split(0, 1)
    b = split(5, 1)
    shares = [0.8, 0.1, 0.04, 0.03, 0.02, 0.01]
    assert run("classbal", b, shares=shares).value > run("classbal", a, shares=shares).value


def test_ripu_is_zero_inside_pure_regions_and_high_on_boundaries():
    pure = confident(0)
    assert run("ripu", pure).value == pytest.approx(0.0, abs=1e-6)
    mixed = split(0, 1)
    mixed[0, :, ::2], mixed[1, :, ::2] = 0.44, 0.46  # alternating winners: impure everywhere
    assert run("ripu", mixed).value > 0.3


def test_random_is_seeded_per_image_and_round():
    a = run("random", confident(), image_id=3).value
    assert a == run("random", confident(), image_id=3).value
    assert a != run("random", confident(), image_id=4).value


def test_topk_ranks_nan_last():
    c = Candidates([1, 2, 3], {1: {"entropy": 0.2}, 2: {"entropy": None}, 3: {"entropy": 0.9}}, {}, [])
    assert [i for i, _ in topk(c, 3, "entropy")] == [3, 1, 2]
    assert topk(c, 3, "entropy")[2][1] is None


def test_standardize01():
    out = standardize01(np.array([1.0, np.nan, 3.0, 2.0]))
    assert out[1] == 0.0  # NaN ranks last
    assert out[0] < out[3] < out[2] and out[3] == pytest.approx(0.5)
    assert (standardize01(np.array([5.0, 5.0])) == 0.5).all()


def test_diversity_skips_a_near_duplicate():
    # images 1 and 2 are near-identical frames with the top scores; 3 is different with a lower score
    e = {1: np.array([1.0, 0.0, 0.0]), 2: np.array([0.99, 0.01, 0.0]), 3: np.array([0.0, 1.0, 0.0]),
         4: np.array([0.0, 0.0, 1.0])}
    ids = [1, 2, 3]
    base = np.array([1.0, 0.95, 0.6])
    assert [i for i, _ in greedy_diverse(ids, base, e, [], 2, 0.0)] == [1, 2]  # no penalty: both duplicates
    assert [i for i, _ in greedy_diverse(ids, base, e, [], 2, 0.5)] == [1, 3]  # penalty: skip the duplicate
    # similarity to an already labeled image counts too
    e[9] = np.array([1.0, 0.0, 0.0])
    assert greedy_diverse(ids, base, e, [9], 1, 0.5)[0][0] == 3


def test_dssn_strategy_combines_both_scores():
    c = cfg("acquire.alpha=0.5", "acquire.diversity=0.0")
    scores = {1: {"class_aware": 0.9, "region_relevance": 0.1},  # high on one score only
              2: {"class_aware": 0.8, "region_relevance": 0.8},  # high on both
              3: {"class_aware": 0.1, "region_relevance": 0.9}}
    picks = STRATEGIES["dssn"](Candidates([1, 2, 3], scores, {}, []), 1, c)
    assert picks[0][0] == 2
    only_ca = cfg("acquire.alpha=1.0", "acquire.diversity=0.0")
    assert STRATEGIES["dssn"](Candidates([1, 2, 3], scores, {}, []), 1, only_ca)[0][0] == 1


def test_dssn_cost_weighs_gain_against_the_expected_correction_cost():
    scores = {1: {"class_aware": 0.9, "region_relevance": 0.9, "expected_cost": 0.40},  # most gain, dearest
              2: {"class_aware": 0.8, "region_relevance": 0.8, "expected_cost": 0.05},  # nearly as useful, cheap
              3: {"class_aware": 0.1, "region_relevance": 0.1, "expected_cost": 0.01}}  # cheap, useless
    c = Candidates([1, 2, 3], scores, {}, [])
    assert STRATEGIES["dssn"](c, 1, cfg("acquire.diversity=0.0"))[0][0] == 1
    assert STRATEGIES["dssn_cost"](c, 1, cfg("acquire.diversity=0.0"))[0][0] == 2
    assert STRATEGIES["dssn_cost"](c, 1, cfg("acquire.diversity=0.0", "acquire.cost_weight=0.0"))[0][0] == 1


def test_expected_cost_is_the_mean_error_rate():
    probs = torch.tensor([[[0.9, 0.6]], [[0.1, 0.4]]])  # (C=2, H=1, W=2)
    x = ScoreInput(probs, torch.zeros(3, 1, 2), cfg(), torch.ones(2), torch.full((2,), 0.5))
    assert SCORES["expected_cost"](x).value == pytest.approx((0.1 + 0.4) / 2)


def test_strategy_names_resolve():
    for name in ("random", "dssn", "dssn_cost", "expected_cost", "entropy", "margin", "classbal", "ripu", "class_aware", "region_relevance"):
        fn, needs = resolve(name)
        assert callable(fn) and needs
    from annotassist.errors import AnnotassistError
    with pytest.raises(AnnotassistError, match="unknown strategy"):
        resolve("best")


def test_topk_mean():
    assert topk_mean(np.array([0.1, 0.9, 0.5]), 2) == pytest.approx(0.7)
