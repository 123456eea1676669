"""DSSN's short-schedule recipe: per-class rank selection, the warm-up/ramp schedule, class balance, the
labeled batch, the per-class kept ratio in the log, and a short run against the released gate."""
from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from annotassist.data.layouts import read_list
from annotassist.errors import ConfigError
from annotassist.train import dssn
from annotassist.train.common import StepContext
from annotassist.train.losses import cross_entropy
from annotassist.train.trainer import Trainer

from conftest import REPO, make_config

SMALL = ["model.backbone=efficientnet_lite0", "model.weights=none", "train.crop_size=64", "train.batch_size=2",
         "train.num_workers=0", "train.eval_every=0", "train.lr=0.01", "train.log_every=1"]
SHORT = ["dssn.selection=class_rank", "dssn.weighting=additive", "dssn.labeled_batch_mult=2",
         "dssn.class_balance=inverse_freq"]


def probs_from(table: list[list[float]]) -> torch.Tensor:
    """(C, N) per-pixel class probabilities -> (1, C, 1, N)."""
    return torch.tensor(table, dtype=torch.float32)[None, :, None, :]


# -- per-class rank selection ------------------------------------------------------------------------------

def test_class_rank_keeps_the_top_share_of_each_predicted_class():
    # class 0 is predicted on pixels 0-3 (conf .9 .7 .6 .55), class 1 on pixels 4-5 (.8 .52); class 2 nowhere
    p = probs_from([[0.90, 0.70, 0.60, 0.55, 0.10, 0.30],
                    [0.05, 0.20, 0.30, 0.40, 0.80, 0.52],
                    [0.05, 0.10, 0.10, 0.05, 0.10, 0.18]])
    keep = dssn.class_rank_keep(p, 0.5)[0, 0].tolist()
    # half of each class: the top 2 of class 0 and the top 1 of class 1, whatever their absolute confidence
    assert keep == [True, True, False, False, True, False]
    # 0.75 of 4 = 3 pixels of class 0; ceil(0.75 * 2) = 2 of class 1
    assert dssn.class_rank_keep(p, 0.75)[0, 0].tolist() == [True, True, True, False, True, True]
    assert dssn.class_rank_keep(p, 1.0).all()


def test_class_rank_ties_are_kept_together():
    # four pixels of class 0 with the same confidence: the top half would cut through a tie, so all stay
    p = probs_from([[0.6, 0.6, 0.6, 0.6, 0.9], [0.4, 0.4, 0.4, 0.4, 0.1]])
    assert dssn.class_rank_keep(p, 0.2)[0, 0].tolist() == [False, False, False, False, True]  # k=1: the 0.9
    assert dssn.class_rank_keep(p, 0.5)[0, 0].tolist() == [True] * 5  # k=3 lands in the tie at 0.6
    # the result does not depend on where the tied pixels are
    perm = torch.tensor([4, 2, 0, 3, 1])
    assert dssn.class_rank_keep(p[..., perm], 0.5)[0, 0].tolist() == [True] * 5


def test_class_rank_a_class_on_one_pixel_keeps_it_and_an_absent_class_keeps_nothing():
    # class 1 wins on one pixel only and with low confidence (0.4): a gate would drop it, the rank keeps it
    p = probs_from([[0.95, 0.9, 0.8, 0.7, 0.3], [0.03, 0.05, 0.1, 0.2, 0.4], [0.02, 0.05, 0.1, 0.1, 0.3]])
    keep = dssn.class_rank_keep(p, 0.1)[0, 0].tolist()
    assert keep == [True, False, False, False, True]
    # class 2 is predicted nowhere: nothing is labeled class 2, and no pixel is kept because of it
    label = p.argmax(dim=1)
    assert not (label == 2).any()
    stats = dssn.kept_per_class(label, dssn.class_rank_keep(p, 0.1), torch.ones_like(label, dtype=torch.bool),
                                ["a", "b", "c"])
    assert stats == {"a": 0.25, "b": 1.0, "c": None}


def test_class_rank_is_per_image_and_ignores_padding():
    a = probs_from([[0.9, 0.8, 0.7, 0.6], [0.1, 0.2, 0.3, 0.4]])
    b = probs_from([[0.6, 0.55, 0.52, 0.51], [0.4, 0.45, 0.48, 0.49]])
    keep = dssn.class_rank_keep(torch.cat([a, b]), 0.5)
    # each image keeps its own top half: b's best pixels are below every pixel of a and still kept
    assert keep[0, 0].tolist() == [True, True, False, False]
    assert keep[1, 0].tolist() == [True, True, False, False]
    # padding is not ranked: with the two best pixels of a marked invalid, the top half of the rest is kept
    valid = torch.tensor([[[False, False, True, True]]])
    assert dssn.class_rank_keep(a, 0.5, valid)[0, 0].tolist() == [False, False, True, False]


def test_class_rank_on_a_batch_matches_a_per_class_loop():
    torch.manual_seed(0)
    probs = torch.randn(3, 5, 7, 9).mul(2).softmax(dim=1)
    share = 0.3
    keep = dssn.class_rank_keep(probs, share)
    conf, label = probs.max(dim=1)
    for b in range(3):
        for c in range(5):
            sel = label[b] == c
            n = int(sel.sum())
            if n == 0:
                continue
            kept = keep[b][sel]
            k = math.ceil(share * n)
            assert int(kept.sum()) == k  # random floats: no ties
            assert conf[b][sel][kept].min() >= conf[b][sel][~kept].max() if k < n else True


# -- schedule -----------------------------------------------------------------------------------------------

def test_unlabeled_ramp_warmup_then_rise():
    r = lambda step: dssn.unlabeled_ramp(step, 100, warmup=0.2, rampup=0.3)  # noqa: E731
    assert [r(s) for s in (0, 10, 19)] == [0.0, 0.0, 0.0]  # warm-up: the first 20 steps
    assert r(20) == pytest.approx(math.exp(-5))  # the ramp starts small, not at 0 (the step is not a warm-up)
    assert r(35) == pytest.approx(math.exp(-5 * 0.25))
    assert r(49) < 1.0 and r(50) == 1.0 and r(99) == 1.0
    assert all(r(s) <= r(s + 1) for s in range(99))
    # the released schedule: full weight from the first step
    assert dssn.unlabeled_ramp(0, 100) == 1.0


@pytest.fixture(scope="module")
def batch4(synth_dir):
    """4 items of the small synthetic set: with batch_size 2 and labeled_batch_mult 2, one short step."""
    from annotassist.data.datasets import SemiDataset

    samples = read_list(synth_dir / "train.txt", synth_dir)[0]
    unlabeled = [type(s)(s.name, s.image, None) for s in samples[4:]]
    ds = SemiDataset(samples[:4], unlabeled, 6, 64, (0.75, 1.25), seed=0)
    items = [ds[i] for i in range(4)]
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def _model_and_teacher(cfg):
    from annotassist.models import build_model

    torch.manual_seed(0)
    model = build_model(cfg)
    return model, dssn.init_state(model, cfg)


def test_warmup_step_is_supervised_and_teacher_follows_the_student(batch4):
    cfg = make_config(SMALL + SHORT + ["dssn.warmup=0.5", "dssn.rampup=0.2"])
    model, extra = _model_and_teacher(cfg)
    calls = []
    extra["teacher"].register_forward_hook(lambda *a: calls.append(1))
    out = dssn.training_step(model, extra, batch4, StepContext(cfg, 3, 0, 10, cross_entropy))
    assert not calls  # no teacher forward during the warm-up
    assert out.stats["ramp"] == 0.0
    assert all(out.terms[k].item() == 0.0 for k in out.terms if k != "loss_x")
    assert torch.equal(out.loss, out.terms["loss_x"])
    assert out.labeled_preds[0].shape[0] == 4  # the whole labeled batch (2 x 2)
    # teacher := student through the warm-up, the EMA afterwards
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)
    dssn.after_step(model, extra, StepContext(cfg, 4, 0, 10, cross_entropy))
    s, t = model.state_dict(), extra["teacher"].state_dict()
    assert all(torch.equal(s[k], t[k]) for k in s)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)
    dssn.after_step(model, extra, StepContext(cfg, 5, 0, 10, cross_entropy))
    assert not torch.equal(model.classifier.weight, extra["teacher"].classifier.weight)
    # after the warm-up: the unlabeled terms are on, weighted by the ramp, the teacher makes pseudo-labels
    out = dssn.training_step(model, extra, batch4, StepContext(cfg, 6, 0, 10, cross_entropy))
    assert calls and 0.0 < out.stats["ramp"] < 1.0 and out.terms["loss_fp"].item() > 0.0
    unl = 0.25 * sum(out.terms[k] for k in ("loss_s1", "loss_s2", "loss_fp", "loss_Fp"))
    align = out.terms["align_s"] + out.terms["align_fp"]
    assert torch.isclose(out.loss, out.terms["loss_x"] + out.stats["ramp"] * (unl + 0.01 * align))


def test_labeled_batch_mult_uses_every_labeled_image_and_the_first_unlabeled(batch4):
    cfg = make_config(SMALL + SHORT)
    model, extra = _model_and_teacher(cfg)
    seen = []
    model.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[0]))
    out = dssn.training_step(model, extra, batch4, StepContext(cfg, 1, 0, 10, cross_entropy))
    # one forward of 4 labeled + 2 weak unlabeled, one of 2 + 2 strong views
    assert seen == [6, 4]
    assert out.labeled_preds[0].shape[0] == 4
    assert len(out.labeled_preds) == 2  # clean and perturbed decodes of the labeled images
    # separate: the labeled images in a plain forward of their own, the perturbed decodes for unlabeled only
    cfg = make_config(SMALL + SHORT + ["dssn.labeled_forward=separate"])
    model, extra = _model_and_teacher(cfg)
    seen.clear()
    model.register_forward_hook(lambda m, inp, out: seen.append((inp[0].shape[0], isinstance(out, tuple))))
    out = dssn.training_step(model, extra, batch4, StepContext(cfg, 1, 0, 10, cross_entropy))
    assert seen == [(4, False), (2, True), (4, False)]
    assert len(out.labeled_preds) == 1 and out.labeled_preds[0].shape[0] == 4
    assert all(torch.isfinite(v) for v in out.terms.values()) and out.terms["loss_fp"] > 0


def test_additive_weighting_keeps_the_labeled_loss_whole():
    t = {k: torch.tensor(1.0) for k in ("loss_x", "loss_s1", "loss_s2", "loss_fp", "loss_Fp", "align_s",
                                         "align_fp")}
    assert torch.isclose(dssn.total_loss(t, "additive", 0.5), torch.tensor(1 + 0.5 * (1 + 0.01 * 2)))
    # the released weightings are unchanged at weight 1 and scale only their unlabeled part otherwise
    assert torch.isclose(dssn.total_loss(t, "voc"), torch.tensor(0.5 * (1 + 0.25 * 4 + 0.01 * 2)))
    assert torch.isclose(dssn.total_loss(t, "voc", 0.0), torch.tensor(0.5))


# -- class balance -------------------------------------------------------------------------------------------

def test_class_balance_gives_each_kept_class_the_same_total_weight():
    label = torch.tensor([[[0, 0, 0, 0, 0, 0, 1, 1, 2]]])
    keep = torch.tensor([[[True, True, True, True, True, True, True, True, False]]])
    w = dssn.class_balance_weights(label, keep, 3, power=1.0)
    assert torch.isclose(w.sum(), torch.tensor(8.0))  # the kept pixels' total weight is unchanged
    assert torch.isclose(w[label == 0].sum(), w[label == 1].sum())  # 6 background vs 2 object pixels
    assert w[~keep].abs().sum() == 0  # a dropped pixel (class 2) gets no weight
    plain = dssn.class_balance_weights(label, keep, 3, power=0.0)
    assert torch.equal(plain, keep.float())
    assert dssn.class_balance_weights(label, torch.zeros_like(keep), 3).sum() == 0  # nothing kept: no NaN


def test_masked_ce_with_weights():
    logits = torch.zeros(1, 2, 1, 4)  # CE = log 2 everywhere
    label = torch.zeros(1, 1, 4, dtype=torch.long)
    keep = torch.tensor([[[True, True, False, False]]])
    valid = torch.ones(1, 1, 4, dtype=torch.bool)
    weight = torch.tensor([[[3.0, 1.0, 5.0, 5.0]]])
    assert torch.isclose(dssn.masked_ce(logits, label, keep, valid, weight), torch.log(torch.tensor(2.0)) * 4 / 4)


def test_dist_align_moves_pseudo_labels_toward_the_labeled_class_shares():
    da = dssn.DistAlign(2, momentum=0.5)
    # labels: half class 1; the teacher predicts class 1 with mean probability 0.1 only
    label = torch.tensor([[[0, 0, 1, 1]]])
    probs = probs_from([[0.9, 0.9, 0.9, 0.6], [0.1, 0.1, 0.1, 0.4]])
    valid = torch.ones(1, 1, 4, dtype=torch.bool)
    da.update(label, probs, valid)
    assert torch.allclose(da.prior, torch.tensor([0.5, 0.5]))  # the first step sets the means
    assert torch.allclose(da.predicted, torch.tensor([0.825, 0.175]))
    aligned = da(probs)
    assert torch.allclose(aligned.sum(dim=1), torch.ones(1, 1, 4))
    # the pixel at 0.6 / 0.4 flips to the under-predicted class; the confident ones stay
    assert aligned.argmax(dim=1)[0, 0].tolist() == [0, 0, 0, 1]
    # the running means move by (1 - momentum) toward the next step's numbers
    da.update(torch.zeros(1, 1, 4, dtype=torch.long), probs, valid)
    assert torch.allclose(da.prior, torch.tensor([0.75, 0.25]))
    # ignored labels (255) do not count; padding does not enter the predicted mean
    da2 = dssn.DistAlign(2)
    da2.update(torch.tensor([[[1, 255, 255, 255]]]), probs, torch.tensor([[[True, False, False, False]]]))
    assert torch.allclose(da2.prior, torch.tensor([0.0, 1.0])) and torch.allclose(da2.predicted,
                                                                                   torch.tensor([0.9, 0.1]))


def test_short_recipe_keys_are_validated():
    with pytest.raises(ConfigError) as e:
        make_config(["dssn.rank_keep=0", "dssn.labeled_batch_mult=0", "dssn.warmup=0.7", "dssn.rampup=0.5",
                     "dssn.selection=rank"])
    msg = str(e.value)
    assert "dssn.selection must be one of" in msg
    with pytest.raises(ConfigError) as e:
        make_config(["dssn.rank_keep=0", "dssn.labeled_batch_mult=0", "dssn.warmup=0.7", "dssn.rampup=0.5"])
    msg = str(e.value)
    assert "dssn.rank_keep" in msg and "dssn.labeled_batch_mult" in msg and "dssn.warmup" in msg


# -- runs --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def splits(synth_dir):
    samples = read_list(synth_dir / "train.txt", synth_dir)[0]
    unlabeled = [type(s)(s.name, s.image, None) for s in samples[4:]]
    return samples[:4], unlabeled


def _object_kept(run_dir) -> tuple[float, list[dict]]:
    """Mean kept ratio of the object (non-background) pseudo-classes over the logged steps."""
    steps = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
    steps = [s for s in steps if "kept_per_class" in s]
    ratios = [v for s in steps for k, v in s["kept_per_class"].items() if k != "background" and v is not None]
    return (sum(ratios) / len(ratios) if ratios else 0.0), steps


def test_short_run_keeps_more_object_pixels_than_the_released_gate(splits, tmp_path):
    labeled, unlabeled = splits
    common = SMALL + ["train.max_iters=10", "region.enabled=false"]
    released = Trainer(make_config(common), labeled, unlabeled, [], tmp_path / "released", progress=False).fit()
    short = Trainer(make_config(common + SHORT + ["dssn.dist_align=true", "dssn.warmup=0.2", "dssn.rampup=0.3"]),
                    labeled, unlabeled, [], tmp_path / "short", progress=False).fit()
    assert released.steps == short.steps == 10
    obj_released, steps_released = _object_kept(tmp_path / "released")
    obj_short, steps_short = _object_kept(tmp_path / "short")
    # every logged DSSN step reports the kept ratio of every class (None = no pixel labeled as it)
    assert len(steps_released) == 10 and len(steps_short) == 8  # the short run's first 2 steps are a warm-up
    names = {"background", "disc", "box", "triangle", "ring", "star"}
    assert all(set(s["kept_per_class"]) == names for s in steps_released + steps_short)
    # the released gate keeps (almost) no object pixel this early; the rank keeps about half of each class
    assert obj_short > obj_released
    assert obj_short >= 0.4


def test_eval_teacher_evaluates_and_saves_the_ema_teacher(splits, tmp_path):
    labeled, unlabeled = splits
    common = SMALL + ["train.max_iters=3", "region.enabled=false", "dssn.ema_decay=0.5"]
    res = Trainer(make_config(common + ["dssn.eval_teacher=true"]), labeled, unlabeled, [], tmp_path / "t",
                  progress=False).fit()
    saved = torch.load(res.model_path, weights_only=False)["model"]
    state = torch.load(res.checkpoint, weights_only=False)
    assert all(torch.equal(saved[k], state["extra"]["teacher"][k]) for k in saved)
    assert not all(torch.equal(saved[k], state["model"][k]) for k in saved)  # the student differs
    # as released: the student
    res = Trainer(make_config(common), labeled, unlabeled, [], tmp_path / "s", progress=False).fit()
    saved = torch.load(res.model_path, weights_only=False)["model"]
    state = torch.load(res.checkpoint, weights_only=False)
    assert all(torch.equal(saved[k], state["model"][k]) for k in saved)


def test_the_oracle_diagnostic_trains_on_the_true_masks(splits, synth_dir, monkeypatch):
    """benchmarks/dssn_oracle.py (and dssn_short.py --oracle) read the README's ceiling of the unlabeled branch
    off this switch: after it, every unlabeled view carries its true mask, cropped with the image, and both
    label sources return exactly that mask (the partner's inside the CutMix boxes), every labeled pixel kept."""
    from annotassist.data import datasets as ds_mod
    from annotassist.data.masks import IGNORE

    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    for obj, name in ((ds_mod.SemiDataset, "_unlabeled_views"), (dssn, "teacher_targets"),
                      (dssn, "student_targets")):
        monkeypatch.setattr(obj, name, getattr(obj, name))  # restored after the test
    sys.modules.pop("dssn_oracle", None)
    from dssn_oracle import install_oracle

    labeled, _ = splits
    samples = read_list(synth_dir / "train.txt", synth_dir)[0]
    install_oracle()
    # a crop of the whole image (scale 1, crop = image size) keeps every pixel, so the truth must be the mask
    size = ds_mod.load_pair(samples[4], True, 6, 255, 1.0)[0].shape[-1]
    ds = ds_mod.SemiDataset(labeled, samples[4:8], 6, size, (1.0, 1.0), seed=0, cutmix_p=1.0)
    items = [ds[i] for i in range(2)]
    batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
    for k in range(2):
        _, mask = ds_mod.load_pair(samples[4 + k], True, 6, 255, 1.0)
        truth = batch["u_truth"][k]
        assert torch.equal(truth, mask[0].long()) or torch.equal(truth, mask[0].long().flip(-1))  # weak flip
        assert torch.equal(batch["u_valid"][k], truth != IGNORE)
    cfg = make_config(SMALL + SHORT)
    targets = dssn.teacher_targets(None, batch, cfg, None)
    for k, box in enumerate((batch["box1"].bool(), batch["box2"].bool())):
        assert box.any() and (~box).any()
        want = torch.where(box, batch["mix_truth"], batch["u_truth"])
        valid = want != IGNORE
        assert torch.equal(targets.pseudo_label[k][valid], want[valid]) and torch.equal(targets.keep_mask[k], valid)
    label_w, keep_w = dssn.student_targets(None, batch, cfg)
    assert torch.equal(label_w[batch["u_valid"]], batch["u_truth"][batch["u_valid"]])
    assert torch.equal(keep_w, batch["u_truth"] != IGNORE)
