"""Pseudo-masks from a round's model, at each image's own size (the pre-annotations a person corrects)."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .acquire.scoring import SizeBatches
from .data.cache import shared_cache
from .data.datasets import ImageDataset


@torch.no_grad()
def predict_masks(model, records, cfg, device: torch.device, batch_size: int = 4,
                  num_workers: int = 0) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield (image id, mask uint8 (H, W), confidence float16 (H, W)) for image records of the workspace."""
    scale = cfg.train.image_scale
    sizes = [(max(1, round(r.height * scale)), max(1, round(r.width * scale))) for r in records]
    loader = DataLoader(ImageDataset([(k, r.image_path) for k, r in enumerate(records)], scale,
                                     shared_cache(cfg.train.decode_cache_mb)),
                        batch_sampler=SizeBatches(sizes, batch_size), num_workers=num_workers)
    amp = device.type == "cuda" and cfg.train.amp != "off"
    model.eval()
    for index, images in loader:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(images.to(device))
        for j, k in enumerate(index.tolist()):
            rec = records[k]
            full = F.interpolate(logits[j: j + 1].float(), size=(rec.height, rec.width), mode="bilinear",
                                 align_corners=False)
            conf, pred = full.softmax(dim=1).max(dim=1)
            yield rec.id, pred[0].to(torch.uint8).cpu().numpy(), conf[0].half().cpu().numpy()
