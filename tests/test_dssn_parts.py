"""DSSN's pieces on hand-made tensors: selection, EMA, alignment, losses, gradients."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from annotassist.train import dssn
from annotassist.train.common import StepContext
from annotassist.train.losses import cross_entropy, ohem_cross_entropy

from conftest import lopsided_conv, make_config


def probs_from(table: list[list[float]]) -> torch.Tensor:
    """(C, N) per-pixel class probabilities -> (1, C, 1, N)."""
    return torch.tensor(table, dtype=torch.float32)[None, :, None, :]


def test_class_aware_keeps_top_of_each_class_peak():
    # class 0 peaks at 0.99: thr = 0.9504; class 1 peaks at 0.95: thr = 0.912
    p = probs_from([[0.99, 0.96, 0.94, 0.05, 0.08],
                    [0.01, 0.04, 0.06, 0.95, 0.92]])
    keep = dssn.class_aware_keep(p)[0, 0].tolist()
    # 0.94 < 0.9504 is dropped; the rare class keeps 0.95 and 0.92 (> 0.912): judged against its own peak
    assert keep == [True, True, False, True, True]


def test_class_aware_strict_gate_at_092():
    # a class whose peak is exactly 0.92 is NOT > 0.92: its threshold is its peak, and conf > peak never holds
    p = probs_from([[0.92, 0.90, 0.10], [0.08, 0.10, 0.90]])
    keep = dssn.class_aware_keep(p)[0, 0]
    assert not keep.any()
    # just above the gate, the ratio applies: 0.9201 * 0.96 = 0.8833 -> 0.9201 and 0.90 pass
    p2 = probs_from([[0.9201, 0.90, 0.10], [0.0799, 0.10, 0.90]])
    assert dssn.class_aware_keep(p2)[0, 0].tolist() == [True, True, False]


def test_class_aware_constants_are_configurable():
    p = probs_from([[0.85, 0.80, 0.2], [0.15, 0.2, 0.8]])
    assert not dssn.class_aware_keep(p).any()  # default gate 0.92: nothing passes
    keep = dssn.class_aware_keep(p, peak_gate=0.8, peak_ratio=0.9)[0, 0].tolist()
    assert keep == [True, True, False]  # 0.85 > 0.8: thr 0.765


def test_class_aware_is_per_image():
    a = probs_from([[0.99, 0.93], [0.01, 0.07]])
    b = probs_from([[0.95, 0.93], [0.05, 0.07]])
    keep = dssn.class_aware_keep(torch.cat([a, b]))
    # 0.93 fails against image a's peak 0.99 (thr .9504) but passes against image b's 0.95 (thr .912)
    assert keep[0, 0].tolist() == [True, False]
    assert keep[1, 0].tolist() == [True, True]


def test_ema_update_weights_and_buffers():
    student = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    teacher = copy.deepcopy(student)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
        student[1].running_mean.fill_(2.0)
        student[1].num_batches_tracked.fill_(7)
    t0 = {k: v.clone() for k, v in teacher.state_dict().items()}
    dssn.ema_update(teacher, student, 0.996)
    s = student.state_dict()
    for k, v in teacher.state_dict().items():
        if v.dtype.is_floating_point:
            assert torch.allclose(v, 0.996 * t0[k] + 0.004 * s[k], atol=1e-6), k
    assert teacher[1].running_mean.allclose(torch.full((4,), 0.008))  # 0.996 * 0 + 0.004 * 2
    assert int(teacher[1].num_batches_tracked) == 7  # integer buffers are copied
    dssn.ema_update(teacher, student, 0.0)  # decay 0 = teacher := student
    assert all(torch.equal(v, s[k]) for k, v in teacher.state_dict().items())


def test_zscore_mse_matches_formula_and_is_scale_invariant():
    torch.manual_seed(0)
    a, b = torch.randn(2, 5, 3, 3), torch.randn(2, 5, 3, 3)
    za = (a - a.mean(1, keepdim=True)) / a.std(1, keepdim=True)
    zb = (b - b.mean(1, keepdim=True)) / b.std(1, keepdim=True)
    assert torch.allclose(dssn.zscore_mse(a, b), ((za - zb) ** 2).mean(), atol=1e-5)
    # z-scoring removes per-pixel offset and scale: the same logits shifted and scaled align perfectly
    assert dssn.zscore_mse(a, 3 * a + 7) < 1e-8
    assert dssn.zscore_mse(a, b) > 0.1


def test_zscore_mse_sends_gradients_into_both_views():
    a = torch.randn(1, 4, 2, 2, requires_grad=True)
    b = torch.randn(1, 4, 2, 2, requires_grad=True)
    dssn.zscore_mse(a, b).backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0


def test_infonce_prefers_aligned_views():
    torch.manual_seed(0)
    a = torch.randn(1, 6, 8, 8)
    valid = torch.ones(1, 8, 8, dtype=torch.bool)
    aligned = dssn.pixel_infonce(a, a + 0.01 * torch.randn_like(a), valid, 0.1, 64)
    shuffled = dssn.pixel_infonce(a, torch.randn_like(a), valid, 0.1, 64)
    assert aligned < shuffled


def test_masked_ce_divides_by_valid_not_kept():
    logits = torch.zeros(1, 2, 1, 4)  # CE = log 2 everywhere
    label = torch.zeros(1, 1, 4, dtype=torch.long)
    keep = torch.tensor([[[True, False, False, False]]])
    valid = torch.tensor([[[True, True, False, False]]])
    # one kept pixel over two valid ones
    assert torch.isclose(dssn.masked_ce(logits, label, keep, valid), torch.log(torch.tensor(2.0)) / 2)


def test_loss_weightings():
    t = {k: torch.tensor(1.0) for k in ("loss_x", "loss_s1", "loss_s2", "loss_fp", "loss_Fp", "align_s",
                                         "align_fp")}
    assert torch.isclose(dssn.total_loss(t, "voc"), torch.tensor(0.5 * (1 + 0.25 * 4 + 0.01 * 2)))
    assert torch.isclose(dssn.total_loss(t, "cityscapes"), torch.tensor(0.5 * (1 + 0.25 * 4) + 0.005 * 2))


def test_ohem_focuses_on_hard_pixels():
    logits = torch.tensor([[[[5.0, 5.0, -5.0, 0.0]], [[-5.0, -5.0, 5.0, 0.0]]]])  # (1, 2, 1, 4)
    target = torch.tensor([[[0, 0, 0, 0]]])  # pixel 2 is badly wrong, pixel 3 a tie
    plain = cross_entropy(logits, target)
    hard = ohem_cross_entropy(logits, target, thresh=0.7, min_kept=1)
    assert hard > plain  # easy pixels left out
    ce = F.cross_entropy(logits, target, reduction="none")[0, 0]
    assert torch.isclose(hard, ce[2:].mean())


@pytest.fixture(scope="module")
def tiny_batch(synth_dir):
    from annotassist.data.datasets import SemiDataset
    from annotassist.data.layouts import read_list

    samples = read_list(synth_dir / "train.txt", synth_dir)[0]
    labeled = samples[:4]
    unlabeled = [type(s)(s.name, s.image, None) for s in samples[4:]]
    ds = SemiDataset(labeled, unlabeled, 6, 64, (0.75, 1.25), seed=0)
    items = [ds[i] for i in range(2)]
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def test_every_dssn_loss_term_is_finite_and_reaches_the_right_parameters(tiny_batch):
    from annotassist.models import build_model

    cfg = make_config(["model.backbone=efficientnet_lite0", "model.weights=none", "train.crop_size=64",
                       # a permissive selection so that the strong-view terms are not all zero at init
                       "dssn.peak_gate=0.0", "dssn.peak_ratio=0.5"])
    torch.manual_seed(0)
    model = build_model(cfg)
    extra = dssn.init_state(model, cfg)
    ctx = StepContext(cfg, 1, 0, 10, cross_entropy)
    out = dssn.training_step(model, extra, tiny_batch, ctx)
    assert set(out.terms) == {"loss_x", "loss_s1", "loss_s2", "loss_fp", "loss_Fp", "align_s", "align_fp"}
    params = dict(model.named_parameters())
    for name, term in out.terms.items():
        assert torch.isfinite(term), name
        assert term.item() > 0, name
        grads = torch.autograd.grad(term, list(params.values()), retain_graph=True, allow_unused=True)
        reached = {n for n, g in zip(params, grads) if g is not None and g.abs().sum() > 0}
        assert any(n.startswith("backbone.") for n in reached), f"{name} does not reach the encoder"
        assert "classifier.weight" in reached, f"{name} does not reach the classifier"
    # the teacher only makes labels: nothing flows into it
    assert all(not p.requires_grad for p in extra["teacher"].parameters())
    assert 0.0 <= out.stats["kept"] <= 1.0
    assert len(out.labeled_preds) == 2 and not out.labeled_preds[0].requires_grad


def test_strong_view_ce_switched_off_during_warmup(tiny_batch):
    from annotassist.models import build_model

    cfg = make_config(["model.backbone=efficientnet_lite0", "model.weights=none", "dssn.peak_gate=0.0",
                       "dssn.strong_warmup_epochs=5"])
    torch.manual_seed(0)
    model = build_model(cfg)
    extra = dssn.init_state(model, cfg)
    out = dssn.training_step(model, extra, tiny_batch, StepContext(cfg, 7, 0, 10, cross_entropy))
    assert out.terms["loss_s1"].item() == 0.0 and out.terms["loss_s2"].item() == 0.0
    out = dssn.training_step(model, extra, tiny_batch, StepContext(cfg, 7, 5, 10, cross_entropy))
    assert out.terms["loss_s1"].item() > 0.0
    # the very first step has no strong-view CE either: the teacher is still the untrained student
    first = dssn.training_step(model, extra, tiny_batch, StepContext(cfg, 0, 5, 10, cross_entropy))
    assert first.terms["loss_s1"].item() == 0.0


def test_need_fp_gives_three_views_that_differ_only_under_dropout():
    from annotassist.models import build_model

    cfg = make_config(["model.backbone=efficientnet_lite0", "model.weights=none"])
    torch.manual_seed(0)
    model = build_model(cfg)
    x = torch.rand(2, 3, 64, 64)
    model.train()
    pred, fp, Fp = model(x, need_fp=True)
    assert pred.shape == fp.shape == Fp.shape == (2, 6, 64, 64)
    assert not torch.allclose(fp, Fp) and not torch.allclose(pred, fp)  # two independent dropout masks
    model.eval()
    pred, fp, Fp = model(x, need_fp=True)
    assert torch.allclose(pred, fp) and torch.allclose(fp, Fp)  # no dropout at eval


def test_teacher_flip_averages_the_mirror_view_and_is_mirror_equivariant():
    torch.manual_seed(0)
    teacher = lopsided_conv().eval()
    x = torch.randn(2, 3, 5, 7)
    plain = dssn.teacher_logits(teacher, x, flip=False)
    both = dssn.teacher_logits(teacher, x, flip=True)
    mirrored = teacher(x.flip(-1)).flip(-1)
    assert not torch.allclose(plain.softmax(1), mirrored.softmax(1), atol=1e-3)  # the mirror view differs
    assert torch.allclose(both.softmax(1), 0.5 * (plain.softmax(1) + mirrored.softmax(1)), atol=1e-5)
    # mirroring the input mirrors the pseudo-labels: the same map whichever way the image faces
    assert torch.allclose(dssn.teacher_logits(teacher, x.flip(-1), flip=True).flip(-1), both, atol=1e-5)


@pytest.mark.parametrize("teacher_bn,training", [("batch", True), ("running", False)])
def test_teacher_bn_picks_batch_or_running_statistics(tiny_batch, teacher_bn, training):
    from annotassist.models import build_model

    cfg = make_config(["model.backbone=efficientnet_lite0", "model.weights=none", "train.crop_size=64",
                       f"dssn.teacher_bn={teacher_bn}", "dssn.teacher_flip=true"])
    torch.manual_seed(0)
    model = build_model(cfg)
    teacher = dssn.init_state(model, cfg)["teacher"]
    seen = []
    teacher.register_forward_hook(lambda m, i, o: seen.append(m.training))
    before = {k: v.clone() for k, v in teacher.state_dict().items() if "running_mean" in k}
    targets = dssn.teacher_targets(teacher, tiny_batch, cfg, StepContext(cfg, 1, 0, 10, cross_entropy))
    # two inputs (weak view, CutMix partner) x two views (plain, mirrored)
    assert seen == [training] * 4
    after = {k: v for k, v in teacher.state_dict().items() if "running_mean" in k}
    moved = any(not torch.equal(before[k], after[k]) for k in before)
    assert moved == training  # running statistics stay put when the teacher reads them
    assert targets.pseudo_label[0].shape == tiny_batch["u_w"].shape[:1] + tiny_batch["u_w"].shape[-2:]
