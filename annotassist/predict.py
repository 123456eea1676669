"""Pseudo-masks from a round's model, at each image's own size (the pre-annotations a person corrects).

Only the images queued for a person are pre-annotated (a round's budget, not the pool), so they can afford
test-time views (`loop.tta`): the mirror image and two more scales change fewer pixels a person must fix."""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from .data.cache import shared_cache
from .data.datasets import image_loader
from .runtime import precision


# test-time views of the pre-annotations (loop.tta): scales and the mirror image
TTA_VIEWS = {"none": ((1.0,), False), "flip": ((1.0,), True), "multiscale": ((0.75, 1.0, 1.25), True)}


def view_probs(model, images: torch.Tensor, scales: tuple[float, ...] = (1.0,),
               flip: bool = False) -> Iterator[torch.Tensor]:
    """Each test-time view's softmax at the images' size: every scale, plain then mirrored (and mirrored back)."""
    h, w = images.shape[-2:]
    for s in scales:
        x = images if s == 1.0 else F.interpolate(images, scale_factor=s, mode="bilinear", align_corners=False)
        for mirrored in ((False, True) if flip else (False,)):
            out = model(x.flip(-1) if mirrored else x).float()
            if mirrored:
                out = out.flip(-1)
            if out.shape[-2:] != (h, w):
                out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
            yield out.softmax(dim=1)


def view_logits(model, images: torch.Tensor, scales: tuple[float, ...] = (1.0,), flip: bool = False) -> torch.Tensor:
    """The model's logits on `images`; with more than one view (other scales, the mirror image, mirrored back)
    the log of the mean of the views' softmax, at the images' size: softmax of the result is that mean, and
    bilinear resizing before the softmax acts on it as on plain logits (a per-pixel constant cancels)."""
    if scales == (1.0,) and not flip:
        return model(images)
    return mean_probs(view_probs(model, images, scales, flip)).clamp_min(1e-8).log()


def mean_probs(views: Iterable[torch.Tensor]) -> torch.Tensor:
    """The mean of the views' softmax (summed in their order): what a pre-annotation's argmax is taken from."""
    total, n = 0.0, 0
    for p in views:
        total, n = total + p, n + 1
    return total / n


@torch.no_grad()
def predict_masks(model, records, cfg, device: torch.device, batch_size: int = 4,
                  num_workers: int = 0) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield (image id, mask uint8 (H, W), confidence float16 (H, W)) for image records of the workspace."""
    loader = image_loader(records, cfg.train.image_scale, batch_size, num_workers=num_workers,
                          cache=shared_cache(cfg.train.decode_cache_mb))
    model.eval()
    for index, images in loader:
        with precision.autocast(cfg, device):
            logits = view_logits(model, images.to(device), *TTA_VIEWS[cfg.loop.tta])
        for j, k in enumerate(index.tolist()):
            rec = records[k]
            full = F.interpolate(logits[j: j + 1].float(), size=(rec.height, rec.width), mode="bilinear",
                                 align_corners=False)
            conf, pred = full.softmax(dim=1).max(dim=1)
            yield rec.id, pred[0].to(torch.uint8).cpu().numpy(), conf[0].half().cpu().numpy()
