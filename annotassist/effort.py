"""The effort measure: what a person changes to turn a pre-annotation into a label.

Every annotator (the simulated one, the editor, Label Studio) and every report counts effort with this one
function, so the numbers in a benchmark and in a real labeling session mean the same thing:

- pixels:  pixels whose label differs between what the person was shown and what they handed back;
- regions: the connected groups (8-connectivity) those pixels form, i.e. the strokes or fills it took.

`reviewed` limits the count to the pixels the person was responsible for: the simulated annotator and Label
Studio hand back ignore (255) where nobody labeled a pixel, which costs nothing; a region query counts only
inside the regions asked about. Drawing from scratch costs every labeled pixel (`drawing_effort`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.measure import label as connected_components

from .data.masks import IGNORE


@dataclass(frozen=True)
class Effort:
    pixels: int
    regions: int


def correction_effort(before: np.ndarray, after: np.ndarray, reviewed: np.ndarray | None = None) -> Effort:
    changed = np.asarray(before) != np.asarray(after)
    if reviewed is not None:
        changed &= reviewed
    if not changed.any():
        return Effort(0, 0)
    return Effort(int(changed.sum()), int(connected_components(changed, connectivity=2).max()))


def labeled_pixels(mask: np.ndarray) -> np.ndarray:
    """The pixels a label says something about (everything but ignore)."""
    return np.asarray(mask) != IGNORE


def drawing_effort(mask: np.ndarray) -> Effort:
    """What the same label costs drawn from scratch, with no pre-annotation: every labeled pixel."""
    return correction_effort(np.full_like(mask, IGNORE), mask, labeled_pixels(mask))
