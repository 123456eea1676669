"""mIoU and per-class IoU from a confusion matrix; whole-image or sliding-window inference."""
from __future__ import annotations

import torch

from ..progress import progress as progress_bar
from ..runtime.distributed import all_reduce_sum, is_main

IGNORE = 255


def confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, C) counts: rows = truth, columns = prediction; ignore pixels left out."""
    valid = target != IGNORE
    idx = target[valid].long() * num_classes + pred[valid].long()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_from_confusion(conf: torch.Tensor, class_names: list[str] | None = None) -> dict:
    conf = conf.double()
    tp = conf.diag()
    union = conf.sum(0) + conf.sum(1) - tp
    present = conf.sum(1) > 0  # classes that occur in the evaluation set's truth
    iou = tp / union.clamp_min(1)
    names = class_names or [str(i) for i in range(len(tp))]
    return {
        "mIoU": float(iou[present].mean()) if present.any() else 0.0,
        "pixel_acc": float(tp.sum() / conf.sum().clamp_min(1)),
        "per_class_iou": {n: (float(v) if p else None) for n, v, p in zip(names, iou, present)},
    }


def sliding_logits(model, image: torch.Tensor, num_classes: int, crop: int) -> torch.Tensor:
    """Average logits over crops with a 2/3-crop stride (the Cityscapes protocol)."""
    b, _, h, w = image.shape
    stride = max(1, int(crop * 2 / 3))
    out = image.new_zeros(b, num_classes, h, w)
    count = image.new_zeros(b, 1, h, w)
    ys = list(range(0, max(h - crop, 0) + 1, stride))
    xs = list(range(0, max(w - crop, 0) + 1, stride))
    if ys[-1] + crop < h:
        ys.append(h - crop)
    if xs[-1] + crop < w:
        xs.append(w - crop)
    for y in ys:
        for x in xs:
            y0, x0 = max(y, 0), max(x, 0)
            patch = image[:, :, y0: y0 + crop, x0: x0 + crop]
            out[:, :, y0: y0 + crop, x0: x0 + crop] += model(patch).float()
            count[:, :, y0: y0 + crop, x0: x0 + crop] += 1
    return out / count


@torch.no_grad()
def evaluate(model, loader, num_classes: int, device: torch.device, mode: str = "whole", crop: int = 513,
             class_names: list[str] | None = None, amp: bool = False, channels_last: bool = False,
             progress: bool = False, tick=None) -> dict:
    """`tick`: called after every image (the thread governor: fewer threads while the cores are shared)."""
    was_training = model.training
    model.eval()
    conf = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
    for image, target in progress_bar(loader, desc="eval", unit="image", disable=not (progress and is_main()),
                                      leave=False):
        image, target = image.to(device, non_blocking=True), target.to(device, non_blocking=True)
        if channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = sliding_logits(model, image, num_classes, crop) if mode == "sliding" else model(image)
        conf += confusion(logits.argmax(1), target, num_classes)
        if tick is not None:
            tick()
    model.train(was_training)
    return iou_from_confusion(all_reduce_sum(conf), class_names)
