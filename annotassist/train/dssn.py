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
The loop, AMP, DDP and checkpoints live in trainer.py; this file is the method alone.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..models.discriminator import cells_to_pixels
from .common import StepContext, StepOutput, unwrap

NEEDS_UNLABELED = True


# -- pieces, each testable on hand-made tensors ------------------------------------------------------------

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
              valid: torch.Tensor) -> torch.Tensor:
    """CE summed over kept pixels, divided by the number of valid pixels (the released normalisation)."""
    loss = F.cross_entropy(logits.float(), pseudo_label, reduction="none")
    return (loss * (keep_mask & valid)).sum() / valid.sum().clamp_min(1)


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


def total_loss(t: dict[str, torch.Tensor], weighting: str) -> torch.Tensor:
    unl = 0.25 * (t["loss_s1"] + t["loss_s2"] + t["loss_fp"] + t["loss_Fp"])
    align = t["align_s"] + t["align_fp"]
    if weighting == "cityscapes":
        return 0.5 * (t["loss_x"] + unl) + 0.005 * align
    return 0.5 * (t["loss_x"] + unl + 0.01 * align)


# -- the method --------------------------------------------------------------------------------------------

def init_state(model: nn.Module, cfg) -> dict[str, nn.Module]:
    """The EMA teacher: a frozen copy of the student (teacher := student at the first iteration)."""
    teacher = copy.deepcopy(unwrap(model))
    for p in teacher.parameters():
        p.requires_grad_(False)
    teacher.eval()
    return {"teacher": teacher}


def _select(probs: torch.Tensor, cfg) -> torch.Tensor:
    if cfg.dssn.selection == "global":
        return global_keep(probs, cfg.dssn.global_thresh)
    return class_aware_keep(probs, cfg.dssn.peak_gate, cfg.dssn.peak_ratio)


def _pseudo_label(logits: torch.Tensor, cfg, ctx: StepContext, image: torch.Tensor):
    """(pseudo_label, keep_mask, confidence) of teacher logits; the region filter drops unreliable cells."""
    probs = logits.softmax(dim=1)
    keep = _select(probs, cfg)
    if ctx.discriminator is not None and cfg.region.filter and ctx.step >= cfg.region.filter_start_iter:
        ctx.discriminator.eval()
        rel = ctx.discriminator.reliability(probs, image)
        keep &= cells_to_pixels(rel, probs.shape[-2:]) >= cfg.region.threshold
    conf, label = probs.max(dim=1)
    return label, keep, conf


@dataclass
class StrongTargets:
    """What supervises the two strong views: CutMix-mixed pseudo-labels, the pixels kept, the valid pixels."""

    pseudo_label: tuple[torch.Tensor, torch.Tensor]
    keep_mask: tuple[torch.Tensor, torch.Tensor]
    valid: tuple[torch.Tensor, torch.Tensor]
    conf: torch.Tensor


@torch.no_grad()
def teacher_targets(teacher: nn.Module, batch: dict, cfg, ctx: StepContext) -> StrongTargets:
    """The EMA teacher's pseudo-labels for the strong views. As released, the teacher runs in train mode
    (BatchNorm with the batch's own statistics; a plain forward has no dropout), the weak view and the CutMix
    partner in separate forwards; the partner's prediction fills the boxes and the selection is made on the
    mixed map."""
    teacher.train(not cfg.train.freeze_bn)
    u_w, m_w = batch["u_w"], batch["mix_w"]
    t_mix, t_u = teacher(m_w).float(), teacher(u_w).float()
    out = []
    for box in (batch["box1"].bool(), batch["box2"].bool()):
        logits = torch.where(box[:, None], t_mix, t_u)
        label, keep, conf = _pseudo_label(logits, cfg, ctx, torch.where(box[:, None], m_w, u_w))
        out.append((label, keep, conf, torch.where(box, batch["mix_valid"], batch["u_valid"])))
    (l1, k1, c1, v1), (l2, k2, _, v2) = out
    return StrongTargets((l1, l2), (k1, k2), (v1, v2), c1)


@torch.no_grad()
def student_targets(pred_w: torch.Tensor, batch: dict, cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """The student's own detached clean prediction, class-aware selected: the target of both fp views."""
    probs = pred_w.detach().float().softmax(dim=1)
    return probs.argmax(dim=1), _select(probs, cfg)


def training_step(model: nn.Module, extra: dict[str, nn.Module], batch: dict, ctx: StepContext) -> StepOutput:
    cfg = ctx.cfg
    x, y, u_w, u_valid = batch["x"], batch["y"], batch["u_w"], batch["u_valid"]
    box1, box2 = batch["box1"].bool(), batch["box2"].bool()
    nb = x.shape[0]
    strong = teacher_targets(extra["teacher"], batch, cfg, ctx)
    img_s1 = torch.where(box1[:, None], batch["mix_s1"], batch["u_s1"])
    img_s2 = torch.where(box2[:, None], batch["mix_s2"], batch["u_s2"])

    # student: clean + two feature-perturbed decodes of (labeled, weak unlabeled) in one batch
    preds, preds_fp, preds_Fp = model(torch.cat([x, u_w]), need_fp=True)
    pred_x, pred_w = preds.split([nb, u_w.shape[0]])
    pred_fp, pred_Fp = preds_fp[nb:], preds_Fp[nb:]
    pred_s1, pred_s2 = model(torch.cat([img_s1, img_s2])).chunk(2)
    label_w, keep_w = student_targets(pred_w, batch, cfg)

    terms = {"loss_x": ctx.criterion(pred_x, y)}
    # strong-view CE waits for the teacher: one step (teacher := student), or strong_warmup_epochs
    strong_on = ctx.epoch >= cfg.dssn.strong_warmup_epochs and ctx.step > 0
    zero = pred_s1.sum() * 0.0
    for k, pred in ((0, pred_s1), (1, pred_s2)):
        terms[f"loss_s{k + 1}"] = masked_ce(pred, strong.pseudo_label[k], strong.keep_mask[k],
                                            strong.valid[k]) if strong_on else zero
    terms["loss_fp"] = masked_ce(pred_fp, label_w, keep_w, u_valid)
    terms["loss_Fp"] = masked_ce(pred_Fp, label_w, keep_w, u_valid)
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
    loss = total_loss(terms, cfg.dssn.weighting)

    kept = (strong.keep_mask[0] & strong.valid[0]).sum() / strong.valid[0].sum().clamp_min(1)
    stats = {"kept": float(kept), "teacher_conf": float(strong.conf.mean())}
    # the labeled predictions (clean and one perturbed) train the region-relevance discriminator
    labeled_preds = [pred_x.detach(), preds_fp[:nb].detach()]
    return StepOutput(loss, terms, stats, labeled_preds)


def after_step(model: nn.Module, extra: dict[str, nn.Module], ctx: StepContext) -> None:
    decay = 0.0 if ctx.epoch < ctx.cfg.dssn.ema_warmup_epochs else ctx.cfg.dssn.ema_decay
    ema_update(extra["teacher"], unwrap(model), decay)
