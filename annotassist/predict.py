"""Pseudo-masks from a round's model, at each image's own size (the pre-annotations a person corrects)."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from .data.cache import shared_cache
from .data.datasets import image_loader
from .runtime import precision


@torch.no_grad()
def predict_masks(model, records, cfg, device: torch.device, batch_size: int = 4,
                  num_workers: int = 0) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield (image id, mask uint8 (H, W), confidence float16 (H, W)) for image records of the workspace."""
    loader = image_loader(records, cfg.train.image_scale, batch_size, num_workers=num_workers,
                          cache=shared_cache(cfg.train.decode_cache_mb))
    model.eval()
    for index, images in loader:
        with precision.autocast(cfg, device):
            logits = model(images.to(device))
        for j, k in enumerate(index.tolist()):
            rec = records[k]
            full = F.interpolate(logits[j: j + 1].float(), size=(rec.height, rec.width), mode="bilinear",
                                 align_corners=False)
            conf, pred = full.softmax(dim=1).max(dim=1)
            yield rec.id, pred[0].to(torch.uint8).cpu().numpy(), conf[0].half().cpu().numpy()
