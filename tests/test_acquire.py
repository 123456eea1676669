"""The scoring pass, selection and the simulated annotator on a real (tiny) trained workspace."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from annotassist.acquire.scoring import score_pool
from annotassist.acquire.select import select_next
from annotassist.annotate.simulated import annotate_queue
from annotassist.errors import AnnotassistError
from annotassist.runtime.checkpoint import load_model
from annotassist.rounds import train_round
from annotassist.workspace import Workspace
from annotassist.importer import import_dataset

from conftest import REPO, lopsided_conv, make_config

TINY = ["model.backbone=efficientnet_lite0", "model.weights=none", "train.crop_size=64", "train.batch_size=2",
        "train.num_workers=0", "train.max_iters=2", "train.eval_every=0", "acquire.num_workers=0",
        "acquire.batch_size=4", "acquire.budget=3"]


@pytest.fixture(scope="module")
def trained(synth_dir, tmp_path_factory):
    """A workspace (4 of 24 pool images labeled) with one trained round, copied fresh for each test."""
    root = tmp_path_factory.mktemp("trained")
    cfg = make_config(TINY, initial_labeled=4)
    ws = Workspace.create(root / "ws", cfg, synth_dir)
    import_dataset(ws, progress=False)
    train_round(ws, progress=False)
    ws.close()
    return root / "ws"


@pytest.fixture
def ws(trained, tmp_path):
    shutil.copytree(trained, tmp_path / "ws")
    w = Workspace(tmp_path / "ws")
    yield w
    w.close()


def test_scoring_pass_stores_scores_maps_and_embeddings(ws):
    names = ["class_aware", "region_relevance", "entropy", "margin", "classbal", "ripu", "random"]
    report = score_pool(ws, ws.config, names, progress=False)
    unlabeled = ws.images("pool", state="unlabeled")
    labeled = ws.images("pool", state="labeled")
    assert report.scored == len(unlabeled) == 20 and report.embedded == len(labeled) == 4
    scores = ws.scores(0)
    assert set(scores) == {r.id for r in unlabeled}
    for r in unlabeled:
        assert set(scores[r.id]) == set(names)
        assert all(np.isfinite(v) for v in scores[r.id].values())
    emb = ws.embeddings(0)
    assert set(emb) == {r.id for r in unlabeled + labeled} and len(next(iter(emb.values()))) == 320
    m = ws.region_map(0, unlabeled[0].id, "region_relevance")
    assert m.shape == (4, 4) and ((0 <= m) & (m <= 1)).all()
    assert ws.region_map(0, unlabeled[0].id, "class_aware").shape == (4, 4)
    again = score_pool(ws, ws.config, names, progress=False)
    assert again.scored == 0 and again.skipped == 24  # nothing is scored twice


def test_interrupted_scoring_resumes_without_rescoring(ws):
    first = score_pool(ws, ws.config, ["entropy"], batch_size=4, limit_batches=2, progress=False)
    assert 0 < first.scored + first.embedded <= 8
    done = set(ws.scores(0))
    second = score_pool(ws, ws.config, ["entropy"], batch_size=4, progress=False)
    assert second.skipped == first.scored + first.embedded
    assert second.scored + len(done) == 20
    assert set(ws.scores(0)) == {r.id for r in ws.images("pool", state="unlabeled")}


def test_scoring_without_a_model_says_which_command_to_run(synth_ws):
    with pytest.raises(AnnotassistError, match="annotassist train --workspace"):
        score_pool(synth_ws, synth_ws.config, ["entropy"], progress=False)


def test_select_queues_the_top_images_and_records_them(ws):
    score_pool(ws, ws.config, ["entropy"], progress=False)
    sel = select_next(ws, ws.config, "entropy", 3)
    scores = ws.scores(0, "entropy")
    expected = sorted(scores, key=lambda i: -scores[i]["entropy"])[:3]
    assert [i for i, _ in sel.picks] == expected
    assert {r.id for r in ws.images("pool", state="queued")} == set(expected)
    assert [s[0] for s in ws.selections(0)] == expected


def test_select_needs_scores_first(ws):
    with pytest.raises(AnnotassistError, match="annotassist score"):
        select_next(ws, ws.config, "dssn", 3)


def test_budget_larger_than_pool_and_empty_pool(ws):
    score_pool(ws, ws.config, ["random"], progress=False)
    sel = select_next(ws, ws.config, "random", 100)
    assert len(sel.picks) == 20 and "taking them all" in sel.message
    sel = select_next(ws, ws.config, "random", 5)
    assert sel.picks == [] and "nothing left to label" in sel.message


def test_nan_scores_are_reported_and_ranked_last(ws):
    ws.apply_config(overrides=["region.enabled=false"])  # a round without the discriminator: NaN scores
    cfg = ws.config
    round_, _ = train_round(ws, progress=False)
    assert round_ == 1 and torch.load(ws.latest_model()[1], weights_only=False)["discriminator"] is None
    report = score_pool(ws, cfg, ["region_relevance"], progress=False)
    assert len(report.nan["region_relevance"]) == 20
    picks = select_next(ws, cfg, "region_relevance", 2).picks
    assert len(picks) == 2 and all(v is None for _, v in picks)


def test_a_new_strategy_is_one_registered_function(ws):
    """The extension point the README promises: a function and a decorator, then select by its name."""
    from annotassist.acquire import strategies

    @strategies.register("lowest_entropy_test", needs=["entropy"])
    def lowest_entropy(c, budget, cfg):
        order = sorted(c.ids, key=lambda i: c.scores[i]["entropy"])
        return [(i, c.scores[i]["entropy"]) for i in order[:budget]]

    try:
        score_pool(ws, ws.config, strategies.resolve("lowest_entropy_test")[1], progress=False)
        sel = select_next(ws, ws.config, "lowest_entropy_test", 2)
        scores = ws.scores(0, "entropy")
        assert [i for i, _ in sel.picks] == sorted(scores, key=lambda i: scores[i]["entropy"])[:2]
        with pytest.raises(TypeError, match="needs"):
            strategies.register("no_needs_test")
    finally:
        strategies.STRATEGIES.pop("lowest_entropy_test", None)
        strategies.NEEDS.pop("lowest_entropy_test", None)


def test_dssn_selection_end_to_end(ws):
    score_pool(ws, ws.config, ["class_aware", "region_relevance"], progress=False)
    sel = select_next(ws, ws.config, "dssn", 3)
    assert len({i for i, _ in sel.picks}) == 3


def test_simulated_annotator_records_the_correction_cost(ws):
    score_pool(ws, ws.config, ["random"], progress=False)
    sel = select_next(ws, ws.config, "random", 2)
    model, _ = load_model(ws.latest_model()[1], ws.config)
    out = annotate_queue(ws, ws.config, model, torch.device("cpu"), 0)
    assert {c.image_id for c in out} == {i for i, _ in sel.picks}
    for c in out:
        assert ws.image(c.image_id).state == "labeled"
        pseudo = ws.masks(c.image_id, "pseudo")[-1]
        human = ws.masks(c.image_id, "human")[-1]
        from annotassist.data.masks import read_mask
        pre = read_mask(pseudo.path, 6)
        truth = ws.read_oracle(c.image_id)
        assert np.array_equal(ws.read_label(c.image_id), truth)
        assert human.changed_pixels == c.changed_pixels == int(((pre != truth) & (truth != 255)).sum())
        assert human.changed_regions == c.changed_regions
        assert pre.shape == truth.shape == (64, 64)


def test_short_simulate_run(synth_dir, tmp_path):
    from annotassist.simulate import SimulationPlan, simulate

    cfg = make_config(TINY + ["train.max_iters=1"], initial_labeled=4)
    plan = SimulationPlan(strategies=["random", "dssn"], init=4, budget=3, rounds=2, seeds=1, full=True)
    result = simulate(cfg, plan, tmp_path / "sim", synth_dir, log=lambda *a: None)
    rows = result["rows"]
    assert [(r["strategy"], r["round"], r["labeled"]) for r in rows] == [
        ("random", 0, 4), ("random", 1, 7), ("random", 2, 10), ("dssn", 0, 4), ("dssn", 1, 7), ("dssn", 2, 10)]
    assert rows[0]["mIoU"] == rows[3]["mIoU"]  # round 0 is shared by every strategy
    assert rows[2]["pixels_corrected"] > rows[1]["pixels_corrected"] > 0
    assert result["full_mIoU"] is not None
    out = tmp_path / "sim"
    for f in ("results.csv", "results.json", "learning_curve.png", "summary.md"):
        assert (out / f).is_file(), f
    assert (out / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = {s["strategy"]: s for s in result["summary"]}
    assert set(summary) == {"random", "dssn"} and summary["random"]["auc_vs_random"] == 0.0
    assert "share_of_full_at_10pct" in summary["dssn"]
    assert "AUC (mIoU vs effort)" in (out / "summary.md").read_text()
    # the two strategies labeled different images in their own workspaces
    a = Workspace(out / "seed0" / "random")
    b = Workspace(out / "seed0" / "dssn")
    assert a.count("pool", "labeled") == b.count("pool", "labeled") == 10
    a.close(), b.close()


def test_cli_score_and_select(trained, tmp_path):
    shutil.copytree(trained, tmp_path / "ws")
    run = lambda *a: subprocess.run([sys.executable, "-m", "annotassist", *a], cwd=REPO, capture_output=True,
                                    text=True, timeout=300)
    r = run("score", "--workspace", str(tmp_path / "ws"), "--strategy", "dssn")
    assert r.returncode == 0, r.stderr
    assert "scored 20 unlabeled images" in r.stdout
    r = run("select", "--workspace", str(tmp_path / "ws"), "--strategy", "dssn", "--budget", "2")
    assert r.returncode == 0, r.stderr
    assert "queued 2 images" in r.stdout
    r = run("status", "--workspace", str(tmp_path / "ws"))
    assert "queued" in r.stdout


@pytest.mark.distributed
def test_torchrun_sharded_scoring_matches_one_process(trained, tmp_path):
    """2 ranks each score half of the pool; rank 0 folds the other's shard into the pool."""
    import os

    for name in ("one", "two"):
        shutil.copytree(trained, tmp_path / name)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["score", "--scores", "class_aware,region_relevance,entropy", "--batch-size", "4"]
    r = subprocess.run([sys.executable, "-m", "annotassist", *args, "--workspace", str(tmp_path / "one")],
                       cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    r = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "annotassist", *args,
                        "--workspace", str(tmp_path / "two")], cwd=REPO, capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = Workspace(tmp_path / "one"), Workspace(tmp_path / "two")
    sa, sb = a.scores(0), b.scores(0)
    assert set(sa) == set(sb) and len(sa) == 20
    for i in sa:
        for n in sa[i]:
            assert sb[i][n] == pytest.approx(sa[i][n], rel=1e-4, abs=1e-6), (i, n)
    assert set(a.embeddings(0)) == set(b.embeddings(0))
    assert not list((tmp_path / "two" / "rounds").rglob("scores-rank*.jsonl"))  # shards folded and removed
    a.close(), b.close()


@pytest.mark.parametrize("amp, expect", [("bf16", True), ("off", False)])
def test_scoring_and_prelabel_run_at_the_training_precision(ws, amp, expect):
    """One precision policy: with train.amp=bf16 on a CPU, training, scoring and pre-annotation all run under
    bf16 autocast (before, training did and scoring did not). Seen from inside every module's forward."""
    from annotassist.predict import predict_masks
    from annotassist.runtime import precision

    ws.apply_config(overrides=[f"train.amp={amp}"])
    seen = []
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda m, i, o: seen.append(torch.is_autocast_enabled("cpu")))
    try:
        score_pool(ws, ws.config, ["class_aware"], round_=0, progress=False)
        scoring = set(seen)
        seen.clear()
        model, _ = load_model(ws.latest_model()[1], ws.config)
        list(predict_masks(model, ws.images("pool", "unlabeled")[:2], ws.config, torch.device("cpu")))
        prelabel = set(seen)
    finally:
        hook.remove()
    assert scoring == prelabel == {expect}
    assert precision.bf16_enabled(ws.config, "cpu") is expect


def test_view_logits_average_the_views_softmax():
    from annotassist.predict import TTA_VIEWS, view_logits, view_probs

    model = lopsided_conv(seed=2).eval()
    x = torch.randn(2, 3, 12, 10, generator=torch.Generator().manual_seed(3))
    assert torch.equal(view_logits(model, x, *TTA_VIEWS["none"]), model(x))  # one view: the logits untouched
    views = []
    for s in (0.75, 1.0, 1.25):
        xs = torch.nn.functional.interpolate(x, scale_factor=s, mode="bilinear") if s != 1.0 else x
        for out in (model(xs), model(xs.flip(-1)).flip(-1)):
            views.append(torch.nn.functional.interpolate(out, size=(12, 10), mode="bilinear").softmax(1))
    multi = view_logits(model, x, *TTA_VIEWS["multiscale"])
    assert multi.shape == (2, 4, 12, 10)
    assert torch.allclose(multi.softmax(1), torch.stack(views).mean(0), atol=1e-5)
    # each view on its own, in that order (benchmarks/pseudo_label_quality.py averages subsets of them)
    alone = list(view_probs(model, x, *TTA_VIEWS["multiscale"]))
    assert len(alone) == 6 and all(torch.allclose(a, v, atol=1e-6) for a, v in zip(alone, views))
    assert not torch.allclose(multi.softmax(1), model(x).softmax(1), atol=1e-3)  # the views do change it
    # with the mirror view, mirroring the image mirrors the pre-annotation (at scale 1: a resized grid of odd
    # size is not itself symmetric)
    both = view_logits(model, x, *TTA_VIEWS["flip"])
    assert torch.allclose(view_logits(model, x.flip(-1), *TTA_VIEWS["flip"]).flip(-1), both, atol=1e-5)


def test_prelabel_uses_the_configured_views(ws):
    """loop.tta decides how many forwards each pre-annotated image gets (none 1, flip 2, multiscale 6), and every
    setting gives a mask at the image's own size."""
    from annotassist.predict import predict_masks

    model, _ = load_model(ws.latest_model()[1], ws.config)
    images = ws.images("pool", "unlabeled")[:2]
    confs = {}
    for tta, per_image in (("none", 1), ("flip", 2), ("multiscale", 6)):
        ws.apply_config(overrides=[f"loop.tta={tta}"])
        calls = []
        handle = model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
        try:
            out = list(predict_masks(model, images, ws.config, torch.device("cpu"), batch_size=2))
        finally:
            handle.remove()
        assert sum(calls) == per_image * len(images), tta
        for (image_id, mask, conf), rec in zip(out, images):
            assert mask.shape == conf.shape == (rec.height, rec.width)
        confs[tta] = [c for _, _, c in out]
    # a 2-step model's argmax is background almost everywhere; its confidence shows the views were averaged
    assert any(not np.array_equal(a, b) for a, b in zip(confs["none"], confs["multiscale"]))
