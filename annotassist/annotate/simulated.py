"""The simulated annotator: stands in for a person in benchmarks and tests.

For each queued image it stores the model's pre-annotation (a `pseudo` mask version, what a real tool would
be pushed), then hands back the dataset's own mask as the `human` correction, recording what a person would
have had to change: the pixels where the pre-annotation differs from the truth, and the number of connected
regions those pixels form (each a stroke or fill to fix).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.measure import label as connected_components

from ..data.masks import IGNORE
from ..predict import predict_masks


@dataclass
class Correction:
    image_id: int
    changed_pixels: int
    changed_regions: int
    labeled_pixels: int


def correction_cost(pre: np.ndarray, truth: np.ndarray) -> tuple[int, int]:
    """(pixels to change, connected regions to fix) to turn the pre-annotation into the truth."""
    wrong = (pre != truth) & (truth != IGNORE)
    return int(wrong.sum()), int(connected_components(wrong, connectivity=2).max()) if wrong.any() else 0


def annotate_queue(ws, cfg, model, device, round_: int, image_ids: list[int] | None = None) -> list[Correction]:
    """Pre-annotate and 'correct' every queued image (or the given ones); each image is one transaction."""
    records = [r for r in ws.images("pool", state="queued") if image_ids is None or r.id in image_ids]
    out = []
    for image_id, pre, _conf in predict_masks(model, records, cfg, device):
        ws.add_mask(image_id, pre, "pseudo", round_, source="model", mark_labeled=False)
        ws.set_state([image_id], "in_review", reason="simulated annotator")
        truth = ws.read_oracle(image_id)
        pixels, regions = correction_cost(pre, truth)
        ws.add_mask(image_id, truth, "human", round_, source="simulated annotator", changed_pixels=pixels,
                    changed_regions=regions)
        out.append(Correction(image_id, pixels, regions, int((truth != IGNORE).sum())))
    return out
