"""The effort benchmark's arithmetic on hand-made curves, and a short run of its arms on the tiny set."""
from __future__ import annotations

import json

import pytest

from annotassist.simulate import (Arm, SimulationPlan, effort_auc, effort_to_reach, miou_at_effort, parse_arm,
                                  simulate, summarize)

from conftest import REPO, make_config

TINY = ["model.backbone=efficientnet_lite0", "model.decoder=light", "train.crop_size=32", "train.batch_size=2",
        "model.weights=none", "train.num_workers=0", "train.max_iters=2", "train.eval_every=0",
        "acquire.num_workers=0", "acquire.batch_size=4"]


def test_the_step_curve_of_mIoU_against_effort():
    curve = [(0, 20.0), (100, 30.0), (250, 40.0)]  # (cumulative effort, mIoU of the model it paid for)
    assert miou_at_effort(curve, 99) == 20.0 and miou_at_effort(curve, 100) == 30.0
    assert miou_at_effort(curve, 10_000) == 40.0
    assert effort_to_reach(curve, 30.0) == 100 and effort_to_reach(curve, 35) == 250
    assert effort_to_reach(curve, 41) is None
    # mean over 0..200: 20 for half the range, 30 for the other half
    assert effort_auc(curve, 200, points=2001) == pytest.approx(25.0, abs=0.05)


def test_summary_effort_to_target_and_auc_over_the_common_range():
    def rows(arm, seed, pts):
        return [{"arm": arm, "strategy": arm, "method": "dssn", "seed": seed, "round": k, "labeled": 10 + 10 * k,
                 "mIoU": m / 100, "pixels_corrected": e, "regions_corrected": 0, "scratch_pixels": 4 * e}
                for k, (e, m) in enumerate(pts)]
    r = rows("cheap", 0, [(0, 20), (50, 40), (100, 45)]) + rows("cheap", 1, [(0, 22), (60, 38), (120, 46)]) + \
        rows("dear", 0, [(0, 20), (400, 40), (800, 45)])
    out = {s["arm"]: s for s in summarize(r, full_miou=0.5, pool_size=100)}
    assert out["cheap"]["target_mIoU"] == pytest.approx(45.0)
    # seed 0 reaches 45 at 100 px, seed 1 at 120 px
    assert out["cheap"]["effort_to_target"] == pytest.approx(110) and out["cheap"]["seeds_reaching_target"] == 2
    assert out["dear"]["effort_to_target"] == pytest.approx(800)
    assert out["cheap"]["effort_auc_upto_pixels"] == 100  # the smallest total effort of any arm and seed
    assert out["cheap"]["effort_auc"] > out["dear"]["effort_auc"] == pytest.approx(20.0)


def test_region_arms_are_read_against_the_pixels_reviewed(tmp_path):
    """A region arm's labeled images never change; its AUC, its best mIoU within 10% of the pool and the plot's
    first axis follow the share of pool pixels reviewed instead (an image arm's is its labeled share)."""
    from annotassist.simulate import plot

    def rows(arm, unit, pts):
        return [{"arm": arm, "strategy": "dssn", "method": "supervised", "seed": 0, "round": k,
                 "labeled": 10 if unit == "region" else 10 + 10 * k, "labeled_share": 0.1, "unit": unit,
                 "reviewed_share": share, "mIoU": m / 100, "pixels_corrected": 100 * k, "regions_corrected": 5 * k,
                 "regions_reviewed": 40 * k if unit == "region" else 0, "scratch_pixels": 0}
                for k, (share, m) in enumerate(pts)]
    r = rows("regions", "region", [(0.04, 30), (0.06, 40), (0.12, 50)]) + \
        rows("image", "image", [(0.04, 30), (0.08, 34), (0.12, 38)])
    out = {s["arm"]: s for s in summarize(r, full_miou=None, pool_size=100)}
    assert out["regions"]["auc"] == pytest.approx((35 * 0.02 + 45 * 0.06) / 0.08)
    assert out["regions"]["best_mIoU_at_10pct"] == 40 and out["image"]["best_mIoU_at_10pct"] == 34
    assert out["regions"]["regions_reviewed"] == 80
    plot(r, None, tmp_path / "curve.png", "regions")
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_a_reference_only_run_has_an_empty_summary():
    assert summarize([], full_miou=0.5, pool_size=100) == []


def test_parse_arm():
    assert parse_arm("scratch=random:supervised:scratch") == Arm("scratch", "random", "supervised", False)
    assert parse_arm("dssn") == Arm("dssn", "dssn", "", True)
    assert parse_arm("ent=entropy") == Arm("ent", "entropy", "", True)


def test_arms_on_the_tiny_set(synth_dir, tmp_path):
    """The no-assistant arm draws every label (its effort is the from-scratch cost); an assisted arm corrects
    pre-annotations (never more than drawing). Both start from their own method's round-0 model."""
    cfg = make_config(TINY, initial_labeled=4)
    plan = SimulationPlan(init=4, budget=3, rounds=1, seeds=1, arms=[parse_arm("scratch=random:supervised:scratch"),
                                                                      parse_arm("dssn")])
    result = simulate(cfg, plan, tmp_path / "sim", synth_dir, log=lambda *a: None)
    rows = {(r["arm"], r["round"]): r for r in result["rows"]}
    assert rows[("scratch", 0)]["method"] == "supervised" and rows[("dssn", 0)]["method"] == "dssn"
    scratch, dssn = rows[("scratch", 1)], rows[("dssn", 1)]
    assert scratch["pixels_corrected"] == scratch["scratch_pixels"] > 0
    assert 0 < dssn["pixels_corrected"] <= dssn["scratch_pixels"]
    assert (tmp_path / "sim" / "seed0" / "base-supervised").is_dir()
    assert (tmp_path / "sim" / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_the_no_assistant_arm_read_from_its_assisted_twin_equals_running_it(synth_dir, tmp_path):
    """The no-assistant arm labels the same images and trains the same models as random selection with
    pre-annotations; read from that arm's workspace (no second run) it must match a real run of it: the same
    mIoU, and the from-scratch effort (every labeled pixel, the regions drawing them takes)."""
    cfg = make_config(TINY, initial_labeled=4)
    arms = "scratch=random:supervised:scratch", "random=random:supervised"
    ran, read = (simulate(cfg, SimulationPlan(init=4, budget=3, rounds=2, seeds=1, arms=[parse_arm(a) for a in arms],
                                              share_drawn=share), tmp_path / str(share), synth_dir, log=lambda *a: None)
                 for share in (False, True))
    assert (tmp_path / "False" / "seed0" / "scratch").is_dir()
    assert not (tmp_path / "True" / "seed0" / "scratch").exists()
    keys = ("arm", "round", "labeled", "mIoU", "pixels_corrected", "regions_corrected", "scratch_pixels")
    assert [[r[k] for k in keys] for r in read["rows"]] == [[r[k] for k in keys] for r in ran["rows"]]
    scratch = [r for r in read["rows"] if r["arm"] == "scratch"]
    assert scratch[-1]["pixels_corrected"] == scratch[-1]["scratch_pixels"] > 0
    assert scratch[-1]["regions_corrected"] > 0
    assert [r["arm"] for r in read["summary"]] == ["scratch", "random"]


def test_value_benchmark_merges_arms_with_a_longer_reference_run_apart(tmp_path, monkeypatch):
    """benchmarks/value_camvid.py --merge: the committed 200-step arms and the 2400-step reference (run on the
    100-step profile: another round length, no rows) make one summary whose 90% line is the reference's; arms
    of another round length are refused."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import value_camvid

    results = REPO / "benchmarks" / "results"
    arms, ref = results / "value_camvid_cpu_200steps.json", results / "value_camvid_cpu_reference2400.json"
    merged = value_camvid.merge([arms, ref], tmp_path, "merged")
    assert merged["full_mIoU"] == json.loads(ref.read_text())["full_mIoU"]
    assert (tmp_path / "merged.png").stat().st_size > 0 and "54.9" in (tmp_path / "merged.md").read_text()
    target = 0.9 * merged["full_mIoU"]
    by_arm = {s["arm"]: s for s in merged["summary"]}
    # the effort to the line, recomputed from the rows: each seed's first round at or above it
    for arm in ("dssn_cost", "random"):
        hits = []
        for seed in range(3):
            rows = sorted((r for r in merged["rows"] if r["arm"] == arm and r["seed"] == seed),
                          key=lambda r: r["labeled"])
            hits += [next((r["pixels_corrected"] for r in rows if r["mIoU"] >= target), None)]
        reached = [h for h in hits if h is not None]
        assert by_arm[arm]["effort_to_target"] == pytest.approx(sum(reached) / len(reached))
    other = json.loads(arms.read_text())
    other["max_iters"] = 100
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="max_iters"):
        value_camvid.merge([arms, tmp_path / "other.json"], tmp_path, "refused")
