"""The simulated annotator: stands in for a person in benchmarks, tests and the demo.

For each image handed to it, it takes the pushed pre-annotation (the newest `pseudo` mask version) and returns
the dataset's own mask as the `human` correction, recording what a person would have had to change: the pixels
where the pre-annotation differs from the truth, and the number of connected regions those pixels form (each a
stroke or fill to fix).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import faults
from ..data.masks import read_mask
from ..effort import correction_effort, drawing_effort, labeled_pixels
from .prelabel import newest_pseudo, prelabel

if TYPE_CHECKING:
    from ..workspace import Workspace


@dataclass
class Correction:
    image_id: int
    changed_pixels: int
    changed_regions: int
    labeled_pixels: int


def correct(ws: Workspace, round_: int, image_ids: list[int]) -> list[Correction]:
    """'Correct' every listed image that is not labeled yet; each image's correction is one transaction."""
    out = []
    for image_id in image_ids:
        rec = ws.image(image_id)
        if rec.state == "labeled":
            continue  # corrected before a crash
        truth = ws.read_oracle(image_id)
        pseudo = newest_pseudo(ws, image_id)
        if pseudo is not None:  # where the dataset labels nothing (ignore) the person does nothing either
            effort = correction_effort(read_mask(pseudo.path, ws.config.num_classes), truth, labeled_pixels(truth))
        else:  # nothing was pushed: the person draws everything
            effort = drawing_effort(truth)
        if rec.state != "in_review":
            ws.set_state([image_id], "in_review", reason="simulated annotator")
        ws.add_mask(image_id, truth, "human", round_, source="simulated annotator", changed_pixels=effort.pixels,
                    changed_regions=effort.regions)
        out.append(Correction(image_id, effort.pixels, effort.regions, int(labeled_pixels(truth).sum())))
        faults.point("pull.image")
    return out


def annotate_queue(ws: Workspace, cfg, model, device, round_: int, image_ids: list[int] | None = None) -> list[Correction]:
    """Pre-annotate and 'correct' every queued image (or the given ones)."""
    ids = [r.id for r in ws.images("pool", state="queued") if image_ids is None or r.id in image_ids]
    prelabel(ws, cfg, model, device, round_, ids)
    return correct(ws, round_, ids)
