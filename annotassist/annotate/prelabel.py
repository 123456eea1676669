"""Pre-annotations: the round's pseudo-mask for each image a person is about to correct.

Stored as `pseudo` mask versions (what every annotator starts from: Label Studio predictions, the editor's
layers, the simulated annotator's diff), with the model's confidence in the image (mean max-probability over
its pixels) as the round's `confidence` score, which Label Studio's uncertainty sampling orders by.
Each image is its own write, so a crash loses at most the image in flight and a rerun skips what is stored.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .. import faults
from ..predict import predict_masks

if TYPE_CHECKING:
    from ..workspace import Workspace


def newest_pseudo(ws: Workspace, image_id: int, round_: int | None = None):
    """The newest pseudo mask record of an image (of one round if given), or None."""
    masks = [m for m in ws.masks(image_id, "pseudo") if round_ is None or m.round == round_]
    return masks[-1] if masks else None


def prelabel(ws: Workspace, cfg, model, device, round_: int, image_ids: list[int], batch_size: int = 4) -> int:
    """Store round `round_`'s pseudo-mask of every listed image that has none yet; returns how many were made."""
    todo = [ws.image(i) for i in image_ids if newest_pseudo(ws, i, round_) is None]
    for image_id, pre, conf in predict_masks(model, todo, cfg, device, batch_size=batch_size):
        # the score first: if a kill lands between the two writes, the image has no pseudo mask and is redone
        ws.write_scores(round_, [(image_id, "confidence", float(np.mean(conf, dtype=np.float64)))])
        ws.add_mask(image_id, pre, "pseudo", round_, source=f"model round {round_}", mark_labeled=False)
        faults.point("push.image")
    return len(todo)
