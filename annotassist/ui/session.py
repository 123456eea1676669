"""What the correction editor does to a workspace, without any UI: the work list, opening an image, saving.

Everything is addressed by workspace image id; image files are read from the paths the workspace stored,
never from anything a browser sent.

Region mode (acquire.unit: region): an image with an open region query opens with its `RegionQuery` (the
regions to check, the superpixel map at the image's size). A click inside a queried region gives the whole
region one class (`click_region`); `region_view` draws the regions outlined and the rest dimmed; a save
stores the labels inside the regions only (`Workspace.add_partial`), closes the query and returns the image
to `unlabeled`, which the work list counts as done.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from scipy import ndimage

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
    unit: str = "image"  # 'region' when a region query asked about part of the image
    done: bool = False  # labeled (image) or its regions saved (region: the image is 'unlabeled' again)


@dataclass
class RegionQuery:
    """The regions a person is asked to check in an image (region mode)."""
    round: int
    regions: list[int]
    segments: np.ndarray  # (H, W) int32 superpixel ids at the image's size
    inside: np.ndarray  # (H, W) bool: the pixels of the queried regions

    @property
    def share(self) -> float:
        return float(self.inside.mean()) if self.inside.size else 0.0


@dataclass
class Click:
    """What a click on the region view did: the new mask, or (region None) why nothing changed."""
    mask: np.ndarray
    region: int | None
    pixels: int  # pixels of the region whose class changed
    message: str


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
    region: RegionQuery | None = None  # region mode: the open query; None = the whole image is corrected


@dataclass
class Saved:
    mask_id: int | None  # None when refused as stale
    changed_pixels: int = 0
    changed_regions: int = 0
    seconds: float = 0.0
    stale: bool = False  # image: another label was stored since opening; region: the query was answered already
    unit: str = "image"
    regions: int = 0  # region mode: the regions stored
    reviewed_pixels: int = 0  # region mode: the pixels inside them
    outside_pixels: int = 0  # region mode: labels painted outside the regions, not stored


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
            items.append(_item(ws, image_id, rec.name, rec.state, sel_round, rank))
            seen.add(image_id)
    for rec in ws.images("pool", state=OPEN_STATES):
        if rec.id not in seen:
            items.append(_item(ws, rec.id, rec.name, rec.state, None, None))
    return items


def _item(ws: Workspace, image_id: int, name: str, state: str, round_: int | None, rank: int | None) -> WorkItem:
    """A work item; a region query of its selection round (or an open one) makes it a region item, done once
    no query of the image waits for a person any more."""
    asked = ws.region_query(round_, image_id) if round_ is not None else None
    waiting = ws.open_region_query(image_id)
    if asked is None and waiting is None:
        return WorkItem(image_id, name, state, round_, rank, "image", state == "labeled")
    return WorkItem(image_id, name, state, round_, rank, "region", state == "labeled" or waiting is None)


def progress_text(items: list[WorkItem]) -> str:
    done = sum(it.done for it in items)
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
    query = ws.open_region_query(image_id)
    if query is not None:
        return _open_region(ws, rec, image, pseudo, query)
    round_ = ws.selection_round(image_id)
    if round_ is None and pseudo:
        round_ = pseudo[-1].round
    return Opened(image_id, rec.name, image, start, kind, label.id if label else None, round_,
                  _unsure_map(ws, round_, image_id), time.time())


def _open_region(ws: Workspace, rec, image: np.ndarray, pseudo, query: tuple[int, list[int]]) -> Opened:
    """Region mode: the start mask is the pre-annotation, with what earlier queries of the image stored."""
    round_, regions = query
    segments = ws.region_map_full(rec.id)
    num = ws.config.num_classes
    if pseudo:
        start, kind = read_mask(pseudo[-1].path, num), "pseudo"
    else:
        start, kind = np.full((rec.height, rec.width), IGNORE, dtype=np.uint8), "none"
    earlier = ws.partial_mask(rec.id)
    if earlier is not None:
        stored = read_mask(earlier.path, num)
        start = np.where(stored != IGNORE, stored, start).astype(np.uint8)
    region = RegionQuery(round_, list(regions), segments, np.isin(segments, np.asarray(regions, dtype=np.int32)))
    return Opened(rec.id, rec.name, image, start, kind, None, round_, _unsure_map(ws, round_, rec.id), time.time(),
                  region)


def click_region(opened: Opened, mask: np.ndarray, x: int, y: int, class_id: int | None) -> Click:
    """The fast path: a click at pixel (x, y) of the image gives the whole queried region under it
    `class_id` (IGNORE un-labels it). Outside the queried regions, or with no class chosen, nothing changes."""
    q = opened.region
    if q is None:
        return Click(mask, None, 0, "This image has no regions to check: paint with the brush.")
    if class_id is None:
        return Click(mask, None, 0, "Choose a class first, then click a region.")
    h, w = q.segments.shape
    if not (0 <= x < w and 0 <= y < h):
        return Click(mask, None, 0, f"({x}, {y}) is not in the image: nothing changed.")
    if not q.inside[y, x]:
        return Click(mask, None, 0, f"({x}, {y}) is outside the regions to check: nothing changed. Click inside "
                                    "an outlined region.")
    region = int(q.segments[y, x])
    pixels = q.segments == region
    out = np.array(mask, dtype=np.uint8)
    changed = int((out[pixels] != class_id).sum())
    out[pixels] = class_id
    return Click(out, region, changed, f"Region {region} ({int(pixels.sum())} pixels) set; {changed} changed.")


def region_labels(opened: Opened, mask: np.ndarray) -> np.ndarray:
    """What a region save hands the workspace: the mask inside the queried regions; outside, only what the
    person changed from the start mask (the rest of the pre-annotation is not theirs to hand back), else
    IGNORE. The workspace stores the inside and reports the changed outside pixels."""
    q = opened.region
    mask = np.asarray(mask, dtype=np.uint8)
    changed = mask != opened.start_mask
    return np.where(q.inside | changed, mask, IGNORE).astype(np.uint8)


def save_region(ws: Workspace, opened: Opened, mask: np.ndarray, *, accepted: bool = False) -> Saved:
    """Answer the open region query: the labels inside its regions become the image's newest partial mask,
    effort counted inside them only, the query closed and the image `unlabeled` again, in one transaction.
    Refused (stale=True) when the query was answered since opening (another tab or tool)."""
    q = opened.region
    seconds = round(time.time() - opened.opened_at, 1)
    with ws.transaction():
        waiting = ws.open_region_query(opened.image_id)
        if waiting is None or waiting[0] != q.round:
            return Saved(None, seconds=seconds, stale=True, unit="region")
        effort = correction_effort(opened.start_mask, mask, q.inside)
        saved = ws.add_partial(opened.image_id, region_labels(opened, mask), q.round, source="editor",
                               changed_pixels=effort.pixels, changed_regions=effort.regions)
        ws.log_event("editor_save", {"image": opened.name, "mask_id": saved.mask_id, "seconds": seconds,
                                     "unit": "region", "round": q.round, "regions": saved.regions,
                                     "reviewed_pixels": saved.reviewed_pixels,
                                     "outside_pixels": saved.outside_pixels, "changed_pixels": effort.pixels,
                                     "changed_regions": effort.regions, "accepted_as_is": accepted,
                                     "started_from": opened.start_kind})
    return Saved(saved.mask_id, effort.pixels, effort.regions, seconds, unit="region", regions=saved.regions,
                 reviewed_pixels=saved.reviewed_pixels, outside_pixels=saved.outside_pixels)


def outline_colour(palette) -> tuple[int, int, int]:
    """A bright colour for region outlines, as far as possible from every class colour."""
    pal = np.asarray(palette, dtype=np.int32).reshape(-1, 3)
    candidates = np.array([(255, 255, 0), (0, 255, 255), (255, 0, 255), (255, 128, 0), (255, 255, 255)], np.int32)
    if not len(pal):
        return tuple(int(v) for v in candidates[0])
    far = np.abs(candidates[:, None, :] - pal[None]).sum(-1).min(1)
    return tuple(int(v) for v in candidates[int(far.argmax())])


def preview_scale(opened: Opened, target: int = 512) -> int:
    """How much the clickable region preview blows a small image up (nearest), so its outlines stay crisp."""
    h, w = opened.image.shape[:2]
    return max(1, target // max(h, w))


def region_view(shown: np.ndarray, opened: Opened, colour, scale: int = 1, dim: float = 0.35) -> np.ndarray:
    """`shown` (the image with its mask overlaid, (H, W, 3) uint8) with everything outside the queried regions
    dimmed and the regions' boundaries drawn in `colour`, blown up `scale` times (nearest)."""
    q = opened.region
    out = np.asarray(shown)[..., :3].astype(np.float32)
    out[~q.inside] *= dim
    out = out.round().astype(np.uint8)
    seg = q.segments
    if scale > 1:
        out, seg = (a.repeat(scale, 0).repeat(scale, 1) for a in (out, seg))
    inside = np.isin(seg, np.asarray(q.regions, dtype=np.int32))
    edge = np.zeros_like(inside)
    edge[:-1] |= seg[:-1] != seg[1:]
    edge[1:] |= seg[1:] != seg[:-1]
    edge[:, :-1] |= seg[:, :-1] != seg[:, 1:]
    edge[:, 1:] |= seg[:, 1:] != seg[:, :-1]
    edge &= inside
    edge[[0, -1], :] |= inside[[0, -1], :]  # a region at the image's border is closed there too
    edge[:, [0, -1]] |= inside[:, [0, -1]]
    thick = max(1, round(max(seg.shape) / 300))
    if thick > 1:
        edge = ndimage.binary_dilation(edge, iterations=thick - 1) & inside
    out[edge] = colour
    return out


def save_correction(ws: Workspace, opened: Opened, mask: np.ndarray, *, force: bool = False,
                    accepted: bool = False) -> Saved:
    """Store `mask` as a human version and mark the image labeled, with its effort, in one transaction.

    Refused (stale=True) when another tab or tool stored a label since `opened` was read, unless `force`.
    """
    if opened.region is not None:  # region mode; an answered query cannot be saved again, so no `force`
        return save_region(ws, opened, mask, accepted=accepted)
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
