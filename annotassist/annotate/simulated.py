"""The simulated annotator: stands in for a person in benchmarks, tests and the demo.

For each image handed to it, it takes the pushed pre-annotation (the newest `pseudo` mask version) and returns
the dataset's own mask as the `human` correction, recording what a person would have had to change: the pixels
where the pre-annotation differs from the truth, and the number of connected regions those pixels form (each a
stroke or fill to fix).

In region mode (the image holds a region query for the round) it answers only the queried regions: the truth
inside them becomes a `partial` mask version, and its effort counts only there: the regions it reviewed (one
look, or one click, each), the pixels it changed inside them, and the pixels it reviewed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .. import faults
from ..data.masks import IGNORE, read_mask
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
    reviewed_pixels: int = 0  # region mode: pixels inside the queried regions
    regions_reviewed: int = 0  # region mode: regions asked about


def correct(ws: Workspace, round_: int, image_ids: list[int]) -> list[Correction]:
    """'Correct' every listed image that is not labeled yet; each image's correction is one transaction."""
    out = []
    for image_id in image_ids:
        rec = ws.image(image_id)
        query = ws.region_query(round_, image_id)
        if query is not None:
            if ws.open_region_query(image_id) is not None:  # else: answered before a crash
                out.append(_answer_regions(ws, round_, rec, query))
                faults.point("pull.image")
            continue
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


def _answer_regions(ws: Workspace, round_: int, rec, query: list[int]) -> Correction:
    truth = ws.read_oracle(rec.id)
    inside = ws.region_pixels(rec.id, query)
    reviewed = inside & labeled_pixels(truth)
    pseudo = newest_pseudo(ws, rec.id)
    if pseudo is not None:
        effort = correction_effort(read_mask(pseudo.path, ws.config.num_classes), truth, reviewed)
    else:
        effort = drawing_effort(np.where(inside, truth, IGNORE).astype(truth.dtype))
    if rec.state != "in_review":
        ws.set_state([rec.id], "in_review", reason="simulated annotator")
    save = ws.add_partial(rec.id, truth, round_, source="simulated annotator", changed_pixels=effort.pixels,
                          changed_regions=effort.regions)
    return Correction(rec.id, effort.pixels, effort.regions, int(reviewed.sum()), save.reviewed_pixels, save.regions)


def annotate_queue(ws: Workspace, cfg, model, device, round_: int, image_ids: list[int] | None = None) -> list[Correction]:
    """Pre-annotate and 'correct' every queued image (or the given ones)."""
    ids = [r.id for r in ws.images("pool", state="queued") if image_ids is None or r.id in image_ids]
    prelabel(ws, cfg, model, device, round_, ids)
    return correct(ws, round_, ids)
