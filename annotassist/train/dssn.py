"""DSSN: dual-level Siamese structure network (Tian et al., ACM MM 2023), as in its released code.

Per iteration, with labeled (x, y) and unlabeled u (weak view u_w, strong views u_s1, u_s2, CutMix partner):
  - the EMA teacher predicts the weak views of u and of the partner; its class-aware pseudo-labels supervise
    the strong views (the partner's fill the CutMix boxes);
  - the student decodes clean + two Dropout2d copies of its features (need_fp); its own detached clean
    prediction, class-aware selected, supervises the two feature-perturbed views;
  - two Siamese alignment terms: z-scored logits of s1 vs s2 (image level) and fp vs Fp (feature level);
  - loss (VOC)        = 0.5 * (Lx + 0.25*(Ls1 + Ls2 + Lfp + LFp) + 0.01*(MSEs + MSEfp))
    loss (Cityscapes) = 0.5 * (Lx + 0.25*(Ls1 + Ls2 + Lfp + LFp)) + 0.005*(MSEs + MSEfp)
Each unlabeled CE sums over kept pixels and divides by the number of valid (non-padding) pixels.

The short-schedule recipe (rounds of a few hundred CPU steps; every piece a `dssn.*` key, off by default):
  - loss (additive)   = Lx + ramp(step) * w_u * (0.25*(Ls1 + Ls2 + Lfp + LFp) + 0.01*(MSEs + MSEfp)),
    with the supervised baseline's labeled batch (`labeled_batch_mult: 2`): the labeled signal of a step is
    the baseline's, the unlabeled terms come on top;
  - ramp(step) = 0 for a supervised warm-up (no unlabeled forward at all, teacher := student), then rises;
  - `selection: class_rank`: the top share of each predicted class's pixels in each image, no absolute gate;
  - `class_balance`: each class's kept pixels weigh inversely to their share, so background does not
    swallow the rare classes.
The loop, AMP, DDP and checkpoints live in trainer.py; this file is the method alone.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..models.discriminator import cells_to_pixels
from ..predict import view_logits
from ..pseudo_label import class_aware_keep, class_rank_keep, global_keep
from ..data.transforms import StrongAug
from .common import StepContext, StepOutput, unwrap

NEEDS_UNLABELED = True


# -- pieces, each testable on hand-made tensors ------------------------------------------------------------

def zscore(logits: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Standardise each pixel's logit vector over the class dimension."""
    mean = logits.mean(dim=1, keepdim=True)
    std = logits.std(dim=1, keepdim=True)
    return (logits - mean) / (std + eps)


def zscore_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The released 'pixel-wise contrastive' alignment: MSE of z-scored logits, gradients into both views."""
    return F.mse_loss(zscore(a.float()), zscore(b.float()))


def pixel_infonce(a: torch.Tensor, b: torch.Tensor, valid: torch.Tensor, temperature: float = 0.5,
                  n_pixels: int = 1024, generator: torch.Generator | None = None) -> torch.Tensor:
    """The paper's wording: InfoNCE over pixels; the same pixel in the other view is the positive, the other
    sampled pixels are negatives. Sampling keeps the similarity matrix small."""
    c = a.shape[1]
    fa = F.normalize(zscore(a.float()).permute(0, 2, 3, 1).reshape(-1, c), dim=1)
    fb = F.normalize(zscore(b.float()).permute(0, 2, 3, 1).reshape(-1, c), dim=1)
    idx = valid.flatten().nonzero().squeeze(1)
    if idx.numel() < 2:
        return a.sum() * 0.0
    pick = idx[torch.randperm(idx.numel(), device=idx.device, generator=generator)[:n_pixels]] \
        if generator is not None else idx[torch.randperm(idx.numel(), device=idx.device)[:n_pixels]]
    za, zb = fa[pick], fb[pick]
    logits = za @ zb.t() / temperature
    target = torch.arange(len(pick), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def masked_ce(logits: torch.Tensor, pseudo_label: torch.Tensor, keep_mask: torch.Tensor,
              valid: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """CE summed over kept pixels (times a per-pixel weight, if any), divided by the number of valid pixels
    (the released normalisation)."""
    loss = F.cross_entropy(logits.float(), pseudo_label, reduction="none") * (keep_mask & valid)
    if weight is not None:
        loss = loss * weight
    return loss.sum() / valid.sum().clamp_min(1)


def class_balance_weights(pseudo_label: torch.Tensor, keep_mask: torch.Tensor, num_classes: int,
                          power: float = 1.0) -> torch.Tensor:
    """Per-pixel weights that give each pseudo-class's kept pixels a weight ~ (share of that class)^-power,
    scaled so that the kept pixels' total weight is unchanged: power 1 = every class present in the batch
    weighs the same in the loss, 0 = plain. Without it background, most of every image, decides the loss and
    a rare class's few pseudo-labels hardly count.

    pseudo_label (B, H, W) long, keep_mask (B, H, W) bool. Returns (B, H, W) float, 0 off the kept pixels.
    """
    kept = keep_mask.flatten()
    counts = torch.bincount(pseudo_label.flatten()[kept], minlength=num_classes).float()
    present = counts > 0
    if not present.any():
        return torch.zeros_like(pseudo_label, dtype=torch.float32)
    per_class = torch.where(present, (counts.sum() / present.sum() / counts.clamp_min(1)) ** power, 0.0)
    weight = per_class[pseudo_label] * keep_mask
    return weight * (keep_mask.sum() / weight.sum())


def kept_per_class(pseudo_label: torch.Tensor, keep_mask: torch.Tensor, valid: torch.Tensor,
                   classes: list[str]) -> dict[str, float | None]:
    """For each class, the share of the valid pixels pseudo-labeled as it that the selection kept (None when
    no pixel was labeled as it): shows whether rare classes get pseudo-labels at all."""
    n = len(classes)
    labels = pseudo_label[valid]
    total = torch.bincount(labels, minlength=n)
    kept = torch.bincount(labels[keep_mask[valid]], minlength=n)
    return {name: (float(kept[i]) / int(total[i]) if int(total[i]) else None) for i, name in enumerate(classes)}


class DistAlign(nn.Module):
    """Distribution alignment (ReMixMatch, per pixel): scale the teacher's class probabilities by
    prior / predicted, where prior is the labeled images' class share of pixels and predicted the running mean
    of the teacher's probabilities on the unlabeled views, then renormalise. A model that under-predicts a
    class (early on: every object class, swallowed by background) gets its pseudo-labels pushed toward the
    share the labels show. Both means are running averages over steps (buffers, so a resumed run continues
    them); under DDP each rank keeps its own."""

    def __init__(self, num_classes: int, momentum: float = 0.9):
        super().__init__()
        self.momentum = momentum  # ~10 steps of memory: a short run's predictions change fast
        self.register_buffer("prior", torch.full((num_classes,), 1.0 / num_classes))
        self.register_buffer("predicted", torch.full((num_classes,), 1.0 / num_classes))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, label: torch.Tensor, probs: torch.Tensor, valid: torch.Tensor) -> None:
        """label: the labeled batch (B, H, W), 255 = ignore; probs: teacher softmax (B, C, H, W) of the weak
        unlabeled views; valid: their non-padding pixels."""
        c = probs.shape[1]
        counts = torch.bincount(label[label != 255].flatten(), minlength=c)[:c].float()
        pred = (probs * valid[:, None]).sum(dim=(0, 2, 3)) / valid.sum().clamp_min(1)
        m = self.momentum if int(self.steps) > 0 else 0.0  # the first step sets both means
        if counts.sum() > 0:
            self.prior.mul_(m).add_(counts / counts.sum(), alpha=1 - m)
        self.predicted.mul_(m).add_(pred, alpha=1 - m)
        self.steps += 1

    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        ratio = (self.prior + 1e-6) / (self.predicted + 1e-6)
        aligned = probs * ratio[None, :, None, None]
        return aligned / aligned.sum(dim=1, keepdim=True)


def unlabeled_ramp(step: int, total_iters: int, warmup: float = 0.0, rampup: float = 0.0) -> float:
    """The weight (0..1) of the unlabeled terms at `step`: 0 during the supervised warm-up (the first
    `warmup` share of the run), then exp(-5 (1 - t)^2) over the next `rampup` share (the Mean Teacher ramp:
    the pseudo-labels of a barely trained teacher are let in slowly), then 1."""
    start = warmup * total_iters
    if step < start:
        return 0.0
    length = rampup * total_iters
    if length <= 0 or step >= start + length:
        return 1.0
    t = (step - start) / length
    return math.exp(-5.0 * (1.0 - t) ** 2)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """t = decay * t + (1 - decay) * s over the whole state dict: weights AND BatchNorm buffers."""
    t_state, s_state = teacher.state_dict(), student.state_dict()
    for k, t in t_state.items():
        s = s_state[k]
        if t.dtype.is_floating_point:
            t.mul_(decay).add_(s.detach(), alpha=1 - decay)
        else:
            t.copy_(s)


def total_loss(t: dict[str, torch.Tensor], weighting: str, unlabeled_weight: float = 1.0) -> torch.Tensor:
    unl = 0.25 * (t["loss_s1"] + t["loss_s2"] + t["loss_fp"] + t["loss_Fp"])
    align = t["align_s"] + t["align_fp"]
    w = unlabeled_weight  # 1 as released; the short recipe ramps it in and may scale it
    if weighting == "additive":  # the short-schedule recipe: the labeled loss at full weight, the rest on top
        return t["loss_x"] + w * (unl + 0.01 * align)
    if weighting == "cityscapes":
        return 0.5 * (t["loss_x"] + w * unl) + w * 0.005 * align
    return 0.5 * (t["loss_x"] + w * (unl + 0.01 * align))


# -- the method --------------------------------------------------------------------------------------------

def batch_mult(cfg) -> int:
    """Labeled images per step, as a multiple of train.batch_size (the trainer loads this many items; the
    unlabeled views of the first train.batch_size are used). Released: 1; the supervised baseline: 2."""
    return cfg.dssn.labeled_batch_mult


def views(cfg) -> tuple[StrongAug, float]:
    """The strong views' recipe (as released: colour jitter p=0.8, grayscale, blur) and the CutMix probability."""
    d = cfg.dssn
    return StrongAug(tuple(d.color_jitter), 0.8, d.grayscale_p, d.blur_p, d.intensity_ops), d.cutmix_p


def init_state(model: nn.Module, cfg) -> dict[str, nn.Module]:
    """The EMA teacher: a frozen copy of the student (teacher := student at the first iteration)."""
    teacher = copy.deepcopy(unwrap(model))
    for p in teacher.parameters():
        p.requires_grad_(False)
    teacher.eval()
    state = {"teacher": teacher}
    if cfg.dssn.dist_align:
        state["dist_align"] = DistAlign(cfg.num_classes)
    return state


def result_model(model: nn.Module, extra: dict[str, nn.Module], cfg) -> nn.Module:
    """The network a run evaluates and saves: the student as released; the EMA teacher with
    dssn.eval_teacher (an average of the last ~1/(1-decay) students, smoother than the last one)."""
    return extra["teacher"] if cfg.dssn.eval_teacher else model


def _select(probs: torch.Tensor, cfg, valid: torch.Tensor) -> torch.Tensor:
    if cfg.dssn.selection == "global":
        return global_keep(probs, cfg.dssn.global_thresh)
    if cfg.dssn.selection == "class_rank":
        return class_rank_keep(probs, cfg.dssn.rank_keep, valid)
    return class_aware_keep(probs, cfg.dssn.peak_gate, cfg.dssn.peak_ratio)


def _pseudo_label(logits: torch.Tensor, cfg, ctx: StepContext, image: torch.Tensor, valid: torch.Tensor,
                  dist_align: nn.Module | None = None):
    """(pseudo_label, keep_mask, confidence) of teacher logits, distribution-aligned if `dist_align`; the region
    filter drops unreliable cells."""
    probs = logits.softmax(dim=1)
    if dist_align is not None:
        probs = dist_align(probs)
    keep = _select(probs, cfg, valid)
    if ctx.discriminator is not None and cfg.region.filter and ctx.step >= cfg.region.filter_start_iter:
        ctx.discriminator.eval()
        rel = ctx.discriminator.reliability(probs, image)
        keep &= cells_to_pixels(rel, probs.shape[-2:]) >= cfg.region.threshold
    conf, label = probs.max(dim=1)
    return label, keep, conf


def teacher_logits(teacher: nn.Module, image: torch.Tensor, flip: bool) -> torch.Tensor:
    """The teacher's logits; with `flip`, the log of the mean of its probabilities on the image and on its
    mirror image (predict.view_logits, as pre-annotations use it). On CamVid's unlabeled frames the mirror view
    lifts a 500-step model's pseudo-label mIoU 48.7 -> 50.2 for one more teacher forward
    (benchmarks/pseudo_label_quality.py)."""
    return view_logits(teacher, image, (1.0,), flip).float()


@dataclass
class StrongTargets:
    """What supervises the two strong views: CutMix-mixed pseudo-labels, the pixels kept, the valid pixels."""

    pseudo_label: tuple[torch.Tensor, torch.Tensor]
    keep_mask: tuple[torch.Tensor, torch.Tensor]
    valid: tuple[torch.Tensor, torch.Tensor]
    conf: torch.Tensor


@torch.no_grad()
def teacher_targets(teacher: nn.Module, batch: dict, cfg, ctx: StepContext,
                    dist_align: DistAlign | None = None) -> StrongTargets:
    """The EMA teacher's pseudo-labels for the strong views. As released, the teacher runs in train mode
    (BatchNorm with the batch's own statistics; a plain forward has no dropout; `dssn.teacher_bn: running`
    uses its running statistics instead, `dssn.teacher_flip` adds the mirror view), the weak view and the CutMix
    partner in separate forwards; the partner's prediction fills the boxes and the selection is made on the
    mixed map."""
    teacher.train(not cfg.train.freeze_bn and cfg.dssn.teacher_bn == "batch")
    u_w, m_w = batch["u_w"], batch["mix_w"]
    flip = cfg.dssn.teacher_flip
    t_mix, t_u = teacher_logits(teacher, m_w, flip), teacher_logits(teacher, u_w, flip)
    if dist_align is not None:
        dist_align.update(batch["y"], t_u.softmax(dim=1), batch["u_valid"])
    out = []
    for box in (batch["box1"].bool(), batch["box2"].bool()):
        logits = torch.where(box[:, None], t_mix, t_u)
        valid = torch.where(box, batch["mix_valid"], batch["u_valid"])
        label, keep, conf = _pseudo_label(logits, cfg, ctx, torch.where(box[:, None], m_w, u_w), valid, dist_align)
        out.append((label, keep, conf, valid))
    (l1, k1, c1, v1), (l2, k2, _, v2) = out
    return StrongTargets((l1, l2), (k1, k2), (v1, v2), c1)


@torch.no_grad()
def student_targets(pred_w: torch.Tensor, batch: dict, cfg,
                    dist_align: DistAlign | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The student's own detached clean prediction, aligned and selected like the teacher's: the target of
    both fp views."""
    probs = pred_w.detach().float().softmax(dim=1)
    if dist_align is not None:
        probs = dist_align(probs)
    return probs.argmax(dim=1), _select(probs, cfg, batch["u_valid"])


def _unlabeled_part(batch: dict, n: int) -> dict:
    """The unlabeled views of the first n items (with labeled_batch_mult > 1 the rest are not used)."""
    return {k: (v[:n] if k not in ("x", "y") else v) for k, v in batch.items()}


def _balance(cfg, label: torch.Tensor, keep: torch.Tensor) -> torch.Tensor | None:
    if cfg.dssn.class_balance == "none":
        return None
    return class_balance_weights(label, keep, cfg.num_classes, cfg.dssn.class_balance_power)


def _warmup_step(model: nn.Module, batch: dict, ctx: StepContext) -> StepOutput:
    """Supervised warm-up: the labeled loss alone, and no unlabeled forward (a step costs what a supervised
    one does). The same terms are reported (as 0) so that the log's columns do not change."""
    pred_x = model(batch["x"])
    loss_x = ctx.criterion(pred_x, batch["y"])
    zero = loss_x.detach() * 0.0
    terms = {"loss_x": loss_x, **{k: zero for k in ("loss_s1", "loss_s2", "loss_fp", "loss_Fp", "align_s",
                                                    "align_fp")}}
    return StepOutput(loss_x, terms, {"kept": 0.0, "ramp": 0.0}, [pred_x.detach()])


def training_step(model: nn.Module, extra: dict[str, nn.Module], batch: dict, ctx: StepContext) -> StepOutput:
    cfg = ctx.cfg
    ramp = unlabeled_ramp(ctx.step, ctx.total_iters, cfg.dssn.warmup, cfg.dssn.rampup)
    if ramp == 0.0:
        return _warmup_step(model, batch, ctx)
    batch = _unlabeled_part(batch, cfg.train.batch_size)
    x, y, u_w, u_valid = batch["x"], batch["y"], batch["u_w"], batch["u_valid"]
    box1, box2 = batch["box1"].bool(), batch["box2"].bool()
    nb = x.shape[0]
    dist_align = extra.get("dist_align")  # None unless dssn.dist_align
    strong = teacher_targets(extra["teacher"], batch, cfg, ctx, dist_align)
    img_s1 = torch.where(box1[:, None], batch["mix_s1"], batch["u_s1"])
    img_s2 = torch.where(box2[:, None], batch["mix_s2"], batch["u_s2"])

    if cfg.dssn.labeled_forward == "joint":
        # as released: clean + two feature-perturbed decodes of (labeled, weak unlabeled) in one batch
        preds, preds_fp, preds_Fp = model(torch.cat([x, u_w]), need_fp=True)
        pred_x, pred_w = preds.split([nb, u_w.shape[0]])
        pred_fp, pred_Fp = preds_fp[nb:], preds_Fp[nb:]
        labeled_preds = [pred_x.detach(), preds_fp[:nb].detach()]
    else:
        # labeled images in a plain forward: their perturbed decodes only fed the region discriminator
        pred_x = model(x)
        pred_w, pred_fp, pred_Fp = model(u_w, need_fp=True)
        labeled_preds = [pred_x.detach()]
    pred_s1, pred_s2 = model(torch.cat([img_s1, img_s2])).chunk(2)
    label_w, keep_w = student_targets(pred_w, batch, cfg, dist_align)

    terms = {"loss_x": ctx.criterion(pred_x, y)}
    # strong-view CE waits for the teacher: one step (teacher := student), or strong_warmup_epochs
    strong_on = ctx.epoch >= cfg.dssn.strong_warmup_epochs and ctx.step > 0
    zero = pred_s1.sum() * 0.0
    for k, pred in ((0, pred_s1), (1, pred_s2)):
        label, keep = strong.pseudo_label[k], strong.keep_mask[k]
        terms[f"loss_s{k + 1}"] = masked_ce(pred, label, keep, strong.valid[k], _balance(cfg, label, keep)) \
            if strong_on else zero
    w_fp = _balance(cfg, label_w, keep_w & u_valid)
    terms["loss_fp"] = masked_ce(pred_fp, label_w, keep_w, u_valid, w_fp)
    terms["loss_Fp"] = masked_ce(pred_Fp, label_w, keep_w, u_valid, w_fp)
    if cfg.dssn.align == "infonce":
        t = cfg.dssn.infonce_temperature
        terms["align_s"] = pixel_infonce(pred_s1, pred_s2, strong.valid[0] & strong.valid[1], t,
                                         cfg.dssn.infonce_pixels)
        terms["align_fp"] = pixel_infonce(pred_fp, pred_Fp, u_valid, t, cfg.dssn.infonce_pixels)
    elif cfg.dssn.align == "mse":
        terms["align_s"] = zscore_mse(pred_s1, pred_s2)
        terms["align_fp"] = zscore_mse(pred_fp, pred_Fp)
    else:
        terms["align_s"] = terms["align_fp"] = zero
    loss = total_loss(terms, cfg.dssn.weighting, cfg.dssn.unlabeled_weight * ramp)

    kept = (strong.keep_mask[0] & strong.valid[0]).sum() / strong.valid[0].sum().clamp_min(1)
    stats = {"kept": float(kept), "teacher_conf": float(strong.conf.mean()), "ramp": ramp,
             "kept_per_class": kept_per_class(strong.pseudo_label[0], strong.keep_mask[0], strong.valid[0],
                                              cfg.dataset.classes)}
    # the labeled predictions (clean, and one perturbed when joint) train the region-relevance discriminator
    return StepOutput(loss, terms, stats, labeled_preds)


def after_step(model: nn.Module, extra: dict[str, nn.Module], ctx: StepContext) -> None:
    # teacher := student until the EMA starts (ema_warmup_epochs) and through the supervised warm-up, so the
    # first pseudo-labels come from the warmed-up model, not from an average with the ImageNet start
    warm = unlabeled_ramp(ctx.step, ctx.total_iters, ctx.cfg.dssn.warmup, ctx.cfg.dssn.rampup) == 0.0
    decay = 0.0 if ctx.epoch < ctx.cfg.dssn.ema_warmup_epochs or warm else ctx.cfg.dssn.ema_decay
    ema_update(extra["teacher"], unwrap(model), decay)
