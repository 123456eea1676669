"""What the correction editor does to a workspace, without any UI: the work list, opening an image, saving.

Everything is addressed by workspace image id; image files are read from the paths the workspace stored,
never from anything a browser sent.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..data.masks import IGNORE, read_image, read_mask
from ..effort import correction_effort
from ..errors import WorkspaceError

if TYPE_CHECKING:
    from ..workspace import Workspace

OPEN_STATES = ("queued", "in_review")
# where the model is unsure, most telling first (names the scoring pass stores region maps under)
UNSURE_MAPS = ("region_relevance", "class_aware", "entropy", "margin", "ripu")


@dataclass
class WorkItem:
    image_id: int
    name: str
    state: str
    round: int | None  # the selection round, None for images queued by hand
    rank: int | None


@dataclass
class Opened:
    """An image as the editor shows it, and what a later save is checked against."""
    image_id: int
    name: str
    image: np.ndarray  # (H, W, 3) uint8
    start_mask: np.ndarray  # what the layers start from: the current label, else the newest pseudo-mask
    start_kind: str  # 'human', 'ground_truth', 'pseudo' or 'none'
    label_id: int | None  # the newest label version at open time; a save refuses if it changed since
    round: int | None
    unsure: tuple[str, np.ndarray] | None  # (map name, (h, w) cell map, higher = less sure)
    opened_at: float


@dataclass
class Saved:
    mask_id: int | None  # None when refused as stale
    changed_pixels: int = 0
    changed_regions: int = 0
    seconds: float = 0.0
    stale: bool = False


def work_list(ws: Workspace) -> list[WorkItem]:
    """Images to correct, most useful first: the latest selection's picks in rank order (labeled ones stay, so
    progress can count them), then other queued / in-review images by id."""
    items, seen = [], set()
    sel_round = ws.latest_selection_round()
    if sel_round is not None:
        for image_id, rank, _strategy, _score in ws.selections(sel_round):
            rec = ws.image(image_id)
            if rec.missing:
                continue
            items.append(WorkItem(image_id, rec.name, rec.state, sel_round, rank))
            seen.add(image_id)
    for rec in ws.images("pool", state=OPEN_STATES):
        if rec.id not in seen:
            items.append(WorkItem(rec.id, rec.name, rec.state, None, None))
    return items


def progress_text(items: list[WorkItem]) -> str:
    done = sum(it.state == "labeled" for it in items)
    return f"{done} of {len(items)} corrected" if items else "nothing queued for labeling"


def open_image(ws: Workspace, image_id: int) -> Opened:
    rec = ws.image(image_id)  # raises for ids not in the workspace
    if rec.missing:
        raise WorkspaceError(f"image {rec.name} is missing from the source data")
    image = np.asarray(read_image(rec.image_path))
    label = ws.label_mask(image_id)
    pseudo = ws.masks(image_id, "pseudo")
    num = ws.config.num_classes
    if label is not None:
        start, kind = read_mask(label.path, num), label.kind
    elif pseudo:
        start, kind = read_mask(pseudo[-1].path, num), "pseudo"
    else:
        start, kind = np.full((rec.height, rec.width), IGNORE, dtype=np.uint8), "none"
    round_ = ws.selection_round(image_id)
    if round_ is None and pseudo:
        round_ = pseudo[-1].round
    return Opened(image_id, rec.name, image, start, kind, label.id if label else None, round_,
                  _unsure_map(ws, round_, image_id), time.time())


def save_correction(ws: Workspace, opened: Opened, mask: np.ndarray, *, force: bool = False,
                    accepted: bool = False) -> Saved:
    """Store `mask` as a human version and mark the image labeled, with its effort, in one transaction.

    Refused (stale=True) when another tab or tool stored a label since `opened` was read, unless `force`.
    """
    seconds = round(time.time() - opened.opened_at, 1)
    with ws.transaction():
        current = ws.label_mask(opened.image_id)
        if (current.id if current else None) != opened.label_id and not force:
            return Saved(None, seconds=seconds, stale=True)
        effort = correction_effort(opened.start_mask, mask)  # erasing to ignore took a stroke too: counted
        pixels, regions = effort.pixels, effort.regions
        round_ = opened.round if opened.round is not None else ws.current_round()
        mask_id = ws.add_mask(opened.image_id, mask, "human", round_, source="editor", changed_pixels=pixels,
                              changed_regions=regions)
        ws.log_event("editor_save", {"image": opened.name, "mask_id": mask_id, "seconds": seconds,
                                     "changed_pixels": pixels, "changed_regions": regions,
                                     "accepted_as_is": accepted, "started_from": opened.start_kind,
                                     "overwrote": current.id if (force and current) else None})
    return Saved(mask_id, pixels, regions, seconds)


def heatmap(image: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """The image greyed, with red where the cell map is high (normalised to the image's own range)."""
    h, w = image.shape[:2]
    lo, hi = float(np.nanmin(cells)), float(np.nanmax(cells))
    norm = np.nan_to_num((cells - lo) / (hi - lo) if hi > lo else np.zeros_like(cells))
    ys = np.minimum(np.arange(h) * cells.shape[0] // h, cells.shape[0] - 1)
    xs = np.minimum(np.arange(w) * cells.shape[1] // w, cells.shape[1] - 1)
    up = norm[ys][:, xs][..., None]
    grey = image.astype(np.float32).mean(-1, keepdims=True) * 0.6
    red = np.array([255, 40, 40], dtype=np.float32)
    out = (grey * (1 - 0.7 * up) + red * 0.7 * up).clip(0, 255).astype(np.uint8)
    k = max(1, 320 // max(h, w))  # small images are blown up (nearest) so the cells stay readable
    return out.repeat(k, 0).repeat(k, 1)


def _unsure_map(ws: Workspace, round_: int | None, image_id: int) -> tuple[str, np.ndarray] | None:
    if round_ is None:
        return None
    for name in UNSURE_MAPS:
        cells = ws.region_map(round_, image_id, name)
        if cells is not None:
            return name, cells
    return None
