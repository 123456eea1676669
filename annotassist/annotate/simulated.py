"""The simulated annotator: stands in for a person in benchmarks, tests and the demo.

For each image handed to it, it takes the pushed pre-annotation (the newest `pseudo` mask version) and returns
the dataset's own mask as the `human` correction, recording what a person would have had to change: the pixels
where the pre-annotation differs from the truth, and the number of connected regions those pixels form (each a
stroke or fill to fix).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.measure import label as connected_components

from .. import faults
from ..data.masks import IGNORE, read_mask
from .prelabel import newest_pseudo, prelabel


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


def correct(ws, round_: int, image_ids: list[int]) -> list[Correction]:
    """'Correct' every listed image that is not labeled yet; each image's correction is one transaction."""
    out = []
    for image_id in image_ids:
        rec = ws.image(image_id)
        if rec.state == "labeled":
            continue  # corrected before a crash
        truth = ws.read_oracle(image_id)
        pseudo = newest_pseudo(ws, image_id)
        if pseudo is not None:
            pixels, regions = correction_cost(read_mask(pseudo.path, ws.config.num_classes), truth)
        else:  # nothing was pushed: the person draws everything
            pixels, regions = correction_cost(np.full_like(truth, IGNORE - 1), truth)
        if rec.state != "in_review":
            ws.set_state([image_id], "in_review", reason="simulated annotator")
        ws.add_mask(image_id, truth, "human", round_, source="simulated annotator", changed_pixels=pixels,
                    changed_regions=regions)
        out.append(Correction(image_id, pixels, regions, int((truth != IGNORE).sum())))
        faults.point("pull.image")
    return out


def annotate_queue(ws, cfg, model, device, round_: int, image_ids: list[int] | None = None) -> list[Correction]:
    """Pre-annotate and 'correct' every queued image (or the given ones)."""
    ids = [r.id for r in ws.images("pool", state="queued") if image_ids is None or r.id in image_ids]
    prelabel(ws, cfg, model, device, round_, ids)
    return correct(ws, round_, ids)
