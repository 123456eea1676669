"""Label Studio pre-annotation sync: push queued images with their pseudo-masks, pull the corrected masks back.

push: one Label Studio task per queued image, its newest pseudo mask as a prediction (one brushlabels result
per class present, 0/255 masks of the image's exact size), `score` = the model's confidence in the image and
`model_version` = "round-R". The project is set to that model version and to uncertainty sampling, so Label
Studio serves the LEAST confident images first. Task ids go into the workspace's sync table; a task that
already exists is never created again (tasks carry the image name, so even a push interrupted between Label
Studio and the workspace is recognised), and a newer round's prediction is added to the existing task.

pull: for every pushed image, the task's latest annotation. Submitted ones become `human` mask versions (the
image becomes labeled); skipped/cancelled ones are noted and left in review; a task deleted in Label Studio
sends its image back to the unlabeled pool, and a labeled image whose annotation was deleted goes back to
review. Each image's change is one workspace transaction, so an interrupted pull leaves every image either
done or untouched, and running it again continues. `pull_tasks` does the same for the tasks a webhook names
(what the ML backend and the loop do the moment Label Studio reports a submission); an annotation already
pulled (by another process too) is never stored twice.

Turning brushes into one class-id mask: results are painted in the order Label Studio lists them and a LATER
result wins where brushes overlap (what the person sees: the last stroke is on top). A pixel counts as painted
where the brush's alpha is >= 128 (browser strokes have soft edges). Unpainted pixels are `unpainted`: 255
(ignore) by default, or a class id such as a background class.

Region mode (acquire.unit: region): an image with an open region query becomes a *region task*, one per query
(its data carries the query's round under `annotassist_query` and a note under `annotassist_regions`). Its
prediction holds the pre-annotation as usual plus a *region layer*: one brush of the label `check` on a second
BrushLabels control, `regions`, in a colour no class has, painted opaque along the queried regions' outlines
and faintly inside them, so the pre-annotation stays visible underneath and the regions to check stand out.
Label Studio copies the prediction into the person's annotation, region layer included. On pull only the
person's class labels inside the queried regions (the workspace's own superpixels, not the layer's pixels)
are stored, as a `partial` mask version that closes the query and returns the image to `unlabeled`; effort
counts inside them only. An annotation of a region task without the region layer (deleted, or made elsewhere)
is reported and skipped. Projects annotassist made before region mode get the `regions` control added to
their label config at the first region push; a user's own project must add it (the error says what to add).

Every call goes through label_studio_sdk (lsclient.py adds the retries, the errors and the upload).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import quoteattr
from typing import TYPE_CHECKING

import numpy as np

from .. import faults
from ..data.masks import IGNORE, read_mask
from ..effort import correction_effort, labeled_pixels
from ..errors import WorkspaceError
from .lsclient import LabelStudioClient, LabelStudioError
from .rle import RLEError, mask_to_rle, rle_to_mask

if TYPE_CHECKING:
    from ..workspace import ImageRecord, Workspace

BACKEND = "labelstudio"
FROM_NAME, TO_NAME = "tag", "image"
NAME_KEY = "annotassist_image"  # task data key holding the workspace's image name
QUERY_KEY = "annotassist_query"  # region tasks: the round of the region query the task asks
NOTE_KEY = "annotassist_regions"  # region tasks: what to do, for people (and the Data Manager's columns)
REGION_NAME, REGION_LABEL = "regions", "check"  # the region layer's BrushLabels control and its one label
REGION_INSIDE, REGION_EDGE = 56, 255  # the region layer's alpha inside the regions and along their outlines
REGION_EDGE_WIDTH = 2  # outline pixels at the image's size (more on large images: 1 per 200 pixels)
# candidates for the region layer's colour: the one farthest from every class colour is used
REGION_COLOURS = [(255, 32, 32), (0, 255, 0), (255, 255, 255), (255, 0, 255), (0, 255, 255), (255, 255, 0),
                  (0, 0, 0)]
PAINTED = 128
DESCRIPTION = "pre-annotations from annotassist workspace"  # how projects annotassist made begin their description
# what a webhook registered by annotassist asks for: submissions, deletions, and PROJECT_UPDATED (the loop
# changes its project once to see whether Label Studio can reach it at all)
WEBHOOK_ACTIONS = ["ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED",
                   "TASKS_DELETED", "PROJECT_UPDATED"]


@dataclass(frozen=True)
class BrushTarget:
    """Where brush masks go in a project: its BrushLabels control, the image it paints on, and the task data
    key holding the image's URL (`$image` -> "image"). `labels` empty = all classes (our own projects)."""
    from_name: str = FROM_NAME
    to_name: str = TO_NAME
    data_key: str = "image"
    labels: tuple[str, ...] = ()


@dataclass
class PushReport:
    project_id: int
    project_title: str
    images: str  # how the server reaches the images: "local-files" or "upload"
    created: list[str] = field(default_factory=list)  # new tasks
    updated: list[str] = field(default_factory=list)  # existing tasks given this round's prediction
    unchanged: list[str] = field(default_factory=list)  # already had it
    without_prediction: list[str] = field(default_factory=list)  # no pseudo mask yet: pushed bare


@dataclass
class ImageChange:
    name: str
    task_id: int
    annotation_id: int
    changed_pixels: int | None  # vs the newest pseudo mask; None when there was none
    changed_regions: int | None
    labeled_pixels: int  # what was stored (region tasks: labeled pixels inside the queried regions)
    regions_reviewed: int | None = None  # region tasks: the regions asked about; None for a whole image
    outside_pixels: int = 0  # region tasks: labels painted outside the queried regions (not stored)


@dataclass
class PullReport:
    pulled: list[ImageChange] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # no annotation yet
    skipped: list[str] = field(default_factory=list)  # latest annotation skipped/cancelled
    deleted: list[str] = field(default_factory=list)  # task gone: image back to unlabeled
    reopened: list[str] = field(default_factory=list)  # its annotation was deleted: labeled image back to review
    problems: list[str] = field(default_factory=list)  # bad annotation: task skipped, image left in review
    unchanged: int = 0  # labeled images whose annotation did not change since the last pull
    unknown: list[int] = field(default_factory=list)  # task ids no image of this workspace was pushed as


def label_config(classes: list[str], palette: list[tuple[int, int, int]], regions: bool = False) -> str:
    """An image with one BrushLabels control: a label per class in the class's palette colour; `regions`:
    and the region layer's control (region mode)."""
    labels = "".join(f'<Label value={quoteattr(c)} background="#{r:02x}{g:02x}{b:02x}"/>'
                     for c, (r, g, b) in zip(classes, palette))
    extra = region_control(palette, TO_NAME) if regions else ""
    return (f'<View><Image name="{TO_NAME}" value="$image" zoom="true"/>'
            f'<BrushLabels name="{FROM_NAME}" toName="{TO_NAME}">{labels}</BrushLabels>{extra}</View>')


def region_colour(palette) -> tuple[int, int, int]:
    """The region layer's colour: of REGION_COLOURS, the one farthest from every class colour."""
    cols = np.asarray([tuple(c)[:3] for c in palette] or [(0, 0, 0)], dtype=float)
    return max(REGION_COLOURS, key=lambda c: float(np.min(np.abs(cols - np.asarray(c, float)).sum(axis=1))))


def region_control(palette, to_name: str = TO_NAME) -> str:
    """The region layer's control: one BrushLabels label, `check`, in a colour no class has."""
    r, g, b = region_colour(palette)
    return (f'<BrushLabels name="{REGION_NAME}" toName={quoteattr(to_name)}>'
            f'<Label value="{REGION_LABEL}" background="#{r:02x}{g:02x}{b:02x}" '
            'hint="region mode: correct the classes inside these regions; only they are stored"/></BrushLabels>')


def _is_region_control(control) -> bool:
    return control.tag.lower() == "brushlabels" and list(control.labels) == [REGION_LABEL]


def _controls(config: str):
    from label_studio_sdk.label_interface import LabelInterface

    try:
        return LabelInterface(config)
    except Exception as e:  # the SDK raises its own XML error types
        raise LabelStudioError(f"the project's label config cannot be read ({str(e)[:200]})") from None


def region_target(config: str, classes: list[str]) -> BrushTarget | None:
    """The project's region-layer control (BrushLabels `regions` with the one label `check`) painting on the
    same image as the class control, or None when the config has none."""
    li = _controls(config)
    target = brush_target(config, classes)
    for c in li.controls:
        if _is_region_control(c) and REGION_LABEL not in classes and target.to_name in c.to_name:
            return BrushTarget(c.name, target.to_name, target.data_key, (REGION_LABEL,))
    return None


def brush_target(config: str, classes: list[str]) -> BrushTarget:
    """Read a project's label config: the BrushLabels control annotassist paints into (not the region layer's).
    Raises a LabelStudioError saying what is missing or wrong (no BrushLabels, no image, labels that are not
    classes)."""
    li = _controls(config)
    brushes = [c for c in li.controls if c.tag.lower() == "brushlabels"
               and not (_is_region_control(c) and REGION_LABEL not in classes)]
    wanted = f"<BrushLabels name=\"tag\" toName=\"image\"> with a <Label> per class ({', '.join(classes)})"
    if not brushes:
        tags = sorted({c.tag for c in li.controls}) or ["none"]
        raise LabelStudioError(f"the project's label config has no BrushLabels control (it has: {', '.join(tags)}); "
                               f"annotassist predicts brush masks: add {wanted}")
    control = brushes[0]
    images = {o.name: o for o in li.objects if o.tag.lower() == "image"}
    to_name = next((n for n in control.to_name if n in images), None)
    if to_name is None:
        raise LabelStudioError(f"the BrushLabels control {control.name!r} paints on {control.to_name}, which is no "
                               "<Image> of the label config; point its toName at the <Image>")
    value = images[to_name].value or ""
    if not value.startswith("$"):
        raise LabelStudioError(f"the <Image name={to_name!r}> takes its URL from {value!r}, not from the task "
                               "data; use value=\"$image\"")
    foreign = [label for label in control.labels if label not in classes]
    if foreign:
        raise LabelStudioError(f"the BrushLabels control {control.name!r} has labels that are not classes of the "
                               f"workspace: {', '.join(foreign)} (its classes: {', '.join(classes)}); name the "
                               "labels exactly as the classes")
    return BrushTarget(control.name, to_name, value[1:], tuple(control.labels))


def prediction(mask: np.ndarray, classes: list[str], score: float | None, round_: int,
               target: BrushTarget = BrushTarget()) -> dict:
    """One brushlabels result per class present in a class-id mask (255 = ignore is left out, and so are
    classes the project's BrushLabels control does not list)."""
    h, w = mask.shape
    results = []
    for c in np.unique(mask):
        if c == IGNORE or c >= len(classes) or (target.labels and classes[c] not in target.labels):
            continue
        results.append({"id": f"c{int(c)}", "from_name": target.from_name, "to_name": target.to_name,
                        "type": "brushlabels", "original_width": w, "original_height": h, "image_rotation": 0,
                        "value": {"format": "rle", "rle": mask_to_rle(mask == c), "brushlabels": [classes[c]]}})
    out = {"model_version": model_version(round_), "result": results}
    if score is not None:
        out["score"] = float(score)
    return out


def region_layer(inside: np.ndarray) -> np.ndarray:
    """The region layer's alpha: REGION_EDGE along the outlines of the queried regions (their pixels near a
    pixel outside them, another region or the image's border), REGION_INSIDE elsewhere inside, 0 outside.
    `inside` is an int region map with -1 outside the queried regions."""
    from scipy.ndimage import grey_dilation, grey_erosion

    width = max(REGION_EDGE_WIDTH, round(min(inside.shape) / 200))
    padded = np.pad(inside, width, constant_values=-1)
    size = 2 * width + 1
    edge = (grey_dilation(padded, size=size) != grey_erosion(padded, size=size))[width:-width, width:-width]
    alpha = np.where(inside >= 0, REGION_INSIDE, 0).astype(np.uint8)
    alpha[edge & (inside >= 0)] = REGION_EDGE
    return alpha


def region_result(region_map: np.ndarray, regions: list[int], target: BrushTarget) -> dict:
    """The region layer as one brushlabels result (`readonly`: a layer to look at, not to paint)."""
    inside = np.where(np.isin(region_map, np.asarray(list(regions), dtype=region_map.dtype)), region_map, -1)
    h, w = inside.shape
    return {"id": "regions", "from_name": target.from_name, "to_name": target.to_name, "type": "brushlabels",
            "original_width": w, "original_height": h, "image_rotation": 0, "readonly": True,
            "value": {"format": "rle", "rle": mask_to_rle(region_layer(inside)), "brushlabels": [REGION_LABEL]}}


def is_region_result(result: dict, classes: list[str]) -> bool:
    """A result of the region layer: a brush of the label `check` (when no class is called so)."""
    labels = (result.get("value") or {}).get("brushlabels") or []
    return result.get("type") == "brushlabels" and labels == [REGION_LABEL] and REGION_LABEL not in classes


def model_version(round_: int) -> str:
    return f"round-{round_}"


def annotation_to_mask(results: list[dict], classes: list[str], height: int, width: int,
                       unpainted: int = IGNORE) -> np.ndarray:
    """Paint an annotation's brush results into one class-id mask (later result wins; see the module doc)."""
    out = np.full((height, width), unpainted, dtype=np.uint8)
    index = {c: i for i, c in enumerate(classes)}
    for r in results:
        if r.get("type") != "brushlabels":
            continue  # other controls (none in our config) carry no mask
        value = r.get("value") or {}
        labels = value.get("brushlabels") or []
        if len(labels) != 1 or labels[0] not in index:
            raise LabelStudioError(f"label {labels} is not one of the workspace's classes ({', '.join(classes)})")
        if value.get("format", "rle") != "rle" or "rle" not in value:
            raise LabelStudioError(f"a {labels[0]} brush has no RLE mask (format {value.get('format')!r})")
        size = (r.get("original_height"), r.get("original_width"))
        if size != (height, width):
            raise LabelStudioError(f"a {labels[0]} brush was drawn on a {size[1]}x{size[0]} image, the image "
                                   f"is {width}x{height}")
        try:
            alpha = rle_to_mask(value["rle"], height, width)
        except RLEError as e:
            raise LabelStudioError(f"the {labels[0]} brush's RLE is malformed: {e}") from None
        out[alpha >= PAINTED] = index[labels[0]]
    return out


def pending(ws: Workspace) -> int:
    """Images pushed to Label Studio that still await a submitted annotation (what a loop polls on)."""
    return sum(1 for r in ws.images("pool", state="in_review") if ws.sync_id(r.id, BACKEND) is not None)


def _source_prefix(task_id) -> str:
    return f"labelstudio task {task_id} "


def _query_of(task: dict) -> int | None:
    """The round of the region query a task asks (None: a whole-image task)."""
    asked = (task.get("data") or {}).get(QUERY_KEY)
    return None if asked is None else int(asked)


class LabelStudioSync:
    """Push to and pull from one Label Studio project for one workspace. Holds the HTTP session.

    The project is the one with this workspace's title (made with the class config when there is none), or
    `project` (an id: a project the user made, e.g. the one the ML backend is connected to)."""

    def __init__(self, ws, url: str, api_key: str | None = None, *, document_root: str | Path | None = None,
                 unpainted: int = IGNORE, title: str | None = None, project: int | None = None, **client_kw):
        self.ws = ws
        cfg = ws.config
        self.classes, self.palette = list(cfg.dataset.classes), cfg.palette()
        if unpainted != IGNORE and not 0 <= unpainted < len(self.classes):
            raise LabelStudioError(f"unpainted must be 255 (ignore) or a class id 0..{len(self.classes) - 1}")
        self.client = LabelStudioClient(url, api_key, **client_kw)
        self.sdk = self.client.sdk
        self.url = self.client.url
        # Label Studio allows 3..50 characters
        self.title = (title or f"annotassist {cfg.dataset.name} ({Path(ws.root).resolve().name})")[:50]
        root = document_root if document_root is not None else os.environ.get("LOCAL_FILES_DOCUMENT_ROOT")
        self.document_root = Path(root).resolve() if root else None
        self.unpainted = unpainted
        self._project: int | None = project
        self._target: BrushTarget | None = None if project is not None else BrushTarget()
        self._region: BrushTarget | None = None

    def close(self) -> None:
        self.client.close()

    # -- project -----------------------------------------------------------------------------------------

    def project_id(self) -> int:
        """The project with this workspace's title, created with the class config when there is none."""
        if self._project is None:
            title = self.title
            rows = self.client.call(lambda: [p.id for p in self.sdk.projects.list(title=title, page_size=1000)
                                             if p.title == title])
            if rows:
                self._project = int(min(rows))
                self._target = None  # an existing project: read its config
            else:
                desc = f"{DESCRIPTION} {Path(self.ws.root).resolve()}"
                regions = self.ws.config.acquire.unit == "region"
                made = self.client.call(self.sdk.projects.create, title=title, description=desc,
                                        label_config=label_config(self.classes, self.palette, regions))
                self._project = int(made.id)
        return self._project

    def target(self) -> BrushTarget:
        """The project's BrushLabels control (ours: 'tag' on 'image'; a user's project: read from its config)."""
        if self._target is None:
            project = self.client.call(self.sdk.projects.get, id=self.project_id())
            self._target = brush_target(project.label_config or "", self.classes)
        return self._target

    def region_target(self) -> BrushTarget:
        """The project's region-layer control. A project annotassist made before region mode gets it added to
        its label config; a user's own project without it raises a LabelStudioError saying what to add."""
        if self._region is None:
            project_id = self.project_id()
            project = self.client.call(self.sdk.projects.get, id=project_id)
            config = project.label_config or ""
            found = region_target(config, self.classes)
            if found is None:
                target = brush_target(config, self.classes)
                snippet = region_control(self.palette, target.to_name)
                if not (project.description or "").startswith(DESCRIPTION) or "</View>" not in config:
                    raise LabelStudioError(
                        f"Label Studio project {project_id} ('{project.title}') cannot show region tasks: its label "
                        f"config has no region layer (a <BrushLabels> with the one label '{REGION_LABEL}' on "
                        f"{target.to_name!r}), and images queued in region mode need it to mark the regions to "
                        f"check. Add {snippet} inside its <View> (Settings > Labeling Interface > Code), then push "
                        "again; nothing was pushed")
                head, tail = config.rsplit("</View>", 1)
                config = f"{head}{snippet}</View>{tail}"
                self.client.call(self.sdk.projects.update, id=project_id, label_config=config)
                found = region_target(config, self.classes)
            self._region = found
        return self._region

    def _tasks_by_name(self, project: int) -> dict[str, list[dict]]:
        """Every task of the project that carries one of our image names (to recognise earlier pushes)."""
        tasks = self.client.call(lambda: [t.model_dump(mode="json") for t in
                                          self.sdk.tasks.list(project=project, fields="all", page_size=500)])
        out: dict[str, list[dict]] = {}
        for t in tasks:
            name = (t.get("data") or {}).get(NAME_KEY)
            if name is not None:
                out.setdefault(name, []).append(t)
        return out

    def _task(self, task_id) -> dict | None:
        task = self.client.call_or_none(self.sdk.tasks.get, id=str(task_id))
        return None if task is None else task.model_dump(mode="json")

    # -- push --------------------------------------------------------------------------------------------

    def push(self, round_: int | None = None, image_ids: list[int] | None = None) -> PushReport:
        ws = self.ws
        project = self.project_id()
        if image_ids is None:
            records = ws.images("pool", state=["queued", "in_review"])
        else:
            records = [ws.image(i) for i in image_ids]
            bad = [r.name for r in records if r.state not in ("queued", "in_review")]
            if bad:
                raise LabelStudioError(f"only queued images can be pushed; {', '.join(bad[:5])} "
                                       f"{'is' if len(bad) == 1 else 'are'} not (run 'annotassist select' first)")
        target = self.target()
        queries = {rec.id: self.ws.open_region_query(rec.id) for rec in records}
        regions = self.region_target() if any(q is not None for q in queries.values()) else None
        local = self._local_folders(records)
        report = PushReport(project, self.title, "local-files" if local is not None else "upload")
        if local:
            self._ensure_storages(project, local)
        existing = self._tasks_by_name(project) if records else {}
        latest_round = None
        for rec in records:
            query = queries[rec.id]
            pred, r = self._prediction_for(rec, round_, target)
            pseudo = pred is not None
            extra = {}
            if query is not None:  # region mode: the regions to check go along, as a layer of the prediction
                pred, r, extra = self._with_regions(rec, query, pred, r, regions)
            if pred:  # Label Studio refuses a model version no prediction carries
                latest_round = r if latest_round is None else max(latest_round, r)
            asked = None if query is None else query[0]
            task = next((t for t in existing.get(rec.name, []) if _query_of(t) == asked), None)
            if task is None and ws.sync_id(rec.id, BACKEND) is not None:
                task = self._task(ws.sync_id(rec.id, BACKEND))  # tasks listed under another name/project
                if task is not None and _query_of(task) != asked:
                    task = None  # another region query's task (or a whole-image one): this query gets its own
            if task is None:
                task_id = self._create_task(project, rec, pred, local is not None, target, extra)
                (report.created if pseudo else report.without_prediction).append(rec.name)
            else:
                task_id = int(task["id"])
                versions = {p.get("model_version") for p in task.get("predictions", [])}
                if pred and pred["model_version"] not in versions:
                    self.client.call(self.sdk.predictions.create, task=task_id, **pred)
                    report.updated.append(rec.name)
                else:
                    (report.unchanged if pseudo or versions else report.without_prediction).append(rec.name)
            with ws.transaction():  # the sync id and the state change land together or not at all
                ws.set_sync_id(rec.id, BACKEND, str(task_id), str(project))
                ws.set_state([rec.id], "in_review", reason=f"pushed to Label Studio task {task_id}")
            faults.point("labelstudio.push")
        if latest_round is not None:
            self.client.call(self.sdk.projects.update, id=project, model_version=model_version(latest_round),
                             sampling="Uncertainty sampling")
        with ws.transaction():
            ws.log_event("labelstudio_push", {"url": self.url, "project": project, "created": len(report.created),
                                              "updated": len(report.updated)})
        return report

    def _prediction_for(self, rec, round_: int | None, target: BrushTarget) -> tuple[dict | None, int]:
        pseudo = self.ws.masks(rec.id, "pseudo")
        if round_ is not None:
            pseudo = [m for m in pseudo if m.round is None or m.round <= round_]
        if not pseudo:
            return None, round_ if round_ is not None else (self.ws.current_round() or 0)
        m = pseudo[-1]
        r = round_ if round_ is not None else (m.round if m.round is not None else self.ws.current_round() or 0)
        mask = read_mask(m.path, len(self.classes))
        conf = self.ws.scores(r, "confidence").get(rec.id, {}).get("confidence")
        return prediction(mask, self.classes, conf, r, target), r

    def _with_regions(self, rec, query: tuple[int, list[int]], pred: dict | None, r: int,
                      regions: BrushTarget) -> tuple[dict, int, dict]:
        """A region task's prediction (the pre-annotation, if any, plus the region layer) and task data."""
        asked, ids = query
        layer = region_result(self.ws.region_map_full(rec.id), ids, regions)
        if pred is None:
            pred, r = {"model_version": model_version(asked), "result": []}, asked
        pred["result"].append(layer)
        note = (f"region task: correct the classes inside the {len(ids)} region{'s' if len(ids) != 1 else ''} "
                f"outlined by the '{REGION_LABEL}' layer; only labels inside them are stored")
        return pred, r, {QUERY_KEY: asked, NOTE_KEY: note}

    def _create_task(self, project: int, rec, pred: dict | None, local: bool, target: BrushTarget,
                     extra: dict | None = None) -> int:
        extra = extra or {}
        if local:
            rel = Path(rec.image_path).resolve().relative_to(self.document_root).as_posix()
            data = {target.data_key: f"/data/local-files/?d={quote(rel)}", NAME_KEY: rec.name, **extra}
            out = self.client.call(self.sdk.projects.import_tasks, id=project, return_task_ids=True,
                                   request=[{"data": data, "predictions": [pred] if pred else []}])
            return int(out.task_ids[0])
        # a remote server: upload the file (which makes a task), add the prediction, then name the task. In that
        # order: reading a task without predictions makes Label Studio ask a connected ML backend for one,
        # which would then be stored twice
        (task_id,) = self.client.upload(project, rec.image_path, Path(rec.image_path).name)
        if pred:
            self.client.call(self.sdk.predictions.create, task=task_id, **pred)
        task = self._task(task_id)
        self.client.call(self.sdk.tasks.update, id=str(task_id), data={**task["data"], NAME_KEY: rec.name, **extra})
        return task_id

    def _local_folders(self, records) -> list[Path] | None:
        """The image folders to register as local-files storage, or None when the server cannot read them
        (no document root configured, or an image outside it): then images are uploaded."""
        root = self.document_root
        if root is None or not records:
            return None
        folders = set()
        for rec in records:
            parent = Path(rec.image_path).resolve().parent
            if parent == root or root not in parent.parents:
                return None  # storage folders must lie strictly inside the document root
            folders.add(parent)
        return sorted(folders)

    def _ensure_storages(self, project: int, folders: list[Path]) -> None:
        """Register each folder as local-files storage (never synced: tasks are imported by us with their
        predictions; the storage only lets Label Studio serve files from it)."""
        have = {Path(s.path) for s in self.client.call(self.sdk.import_storage.local.list, project=project)
                if s.path}
        for folder in folders:
            if folder not in have:
                self.client.call(self.sdk.import_storage.local.create, project=project, path=str(folder),
                                 use_blob_urls=True, title=f"annotassist {folder.name}")

    # -- pull --------------------------------------------------------------------------------------------

    def pull(self) -> PullReport:
        ws, report = self.ws, PullReport()
        self.client.call(self.sdk.users.whoami)  # reachable, key accepted: fail before touching anything
        for rec in ws.images("pool", state=["in_review", "labeled"]):
            task_id = ws.sync_id(rec.id, BACKEND)
            if task_id is not None:
                self._pull_image(rec, task_id, self._task(task_id), report)
        for rec in ws.images("pool", state="unlabeled"):  # region tasks answered by an earlier pull
            task_id = ws.sync_id(rec.id, BACKEND)
            if task_id is not None and self._answered_here(rec.id, task_id):
                report.unchanged += 1
        return report

    def _answered_here(self, image_id: int, task_id) -> bool:
        """Whether the image's newest partial mask came from this Label Studio task (a region task pulled)."""
        partial = self.ws.partial_mask(image_id)
        return partial is not None and (partial.source or "").startswith(_source_prefix(task_id))

    def pull_tasks(self, task_ids) -> PullReport:
        """Pull the named tasks only (what a webhook reports); tasks no image was pushed as are listed in
        `unknown` and change nothing."""
        ws, report = self.ws, PullReport()
        for task_id in dict.fromkeys(int(t) for t in task_ids):
            image_id = ws.synced_image(BACKEND, str(task_id))
            rec = ws.image(image_id) if image_id is not None else None
            if rec is not None and rec.state == "unlabeled" and self._answered_here(rec.id, task_id):
                self._pull_image(rec, task_id, self._task(task_id), report)  # reports it unchanged (or edited)
                continue
            if rec is None or rec.state not in ("in_review", "labeled"):
                report.unknown.append(task_id)
                continue
            self._pull_image(rec, task_id, self._task(task_id), report)
        return report

    def tasks_of_annotations(self, annotation_ids) -> list[int]:
        """The tasks whose annotation with one of these ids is a labeled image's current label (a deleted
        annotation's webhook names only its id)."""
        wanted = {f" annotation {int(a)} at " for a in annotation_ids}
        out = []
        for rec in self.ws.images("pool", state="labeled"):
            task_id = self.ws.sync_id(rec.id, BACKEND)
            label = self.ws.label_mask(rec.id) if task_id is not None else None
            if label is not None and any(w in (label.source or "") for w in wanted):
                out.append(int(task_id))
        return out

    def _pull_image(self, rec: ImageRecord, task_id, task: dict | None, report: PullReport) -> None:
        ws = self.ws
        if task is None:
            if rec.state == "in_review":
                ws.set_state([rec.id], "unlabeled", reason=f"Label Studio task {task_id} was deleted")
                report.deleted.append(rec.name)
            return  # a labeled image keeps the label it already has
        if _query_of(task) is not None:
            self._pull_region(rec, task_id, task, _query_of(task), report)
            return
        current = ws.label_mask(rec.id) if rec.state == "labeled" else None
        from_this_task = current is not None and (current.source or "").startswith(_source_prefix(task_id))
        annotations = task.get("annotations") or []
        if not annotations:
            if from_this_task:  # the annotation it was labeled with was deleted: it needs a person again
                ws.set_state([rec.id], "in_review", reason=f"its annotation in Label Studio task {task_id} was "
                                                           "deleted")
                report.reopened.append(rec.name)
            else:
                report.waiting.append(rec.name)
            return
        ann = max(annotations, key=lambda a: (a.get("updated_at") or "", a["id"]))
        source = f"labelstudio task {task_id} annotation {ann['id']} at {ann.get('updated_at')}"
        if rec.state == "labeled" and (current is None or current.source == source or not from_this_task):
            report.unchanged += 1  # pulled already, or labeled by someone else since
            return
        if ann.get("was_cancelled"):
            report.skipped.append(rec.name)
            return
        mask = self._mask(rec, task_id, ann, [r for r in ann.get("result") or []
                                             if not is_region_result(r, self.classes)], report)
        if mask is None:
            return
        pseudo = ws.masks(rec.id, "pseudo")
        if pseudo:  # unpainted pixels (ignore) are pixels the person left alone
            effort = correction_effort(read_mask(pseudo[-1].path, len(self.classes)), mask, labeled_pixels(mask))
            pixels, regions = effort.pixels, effort.regions
        else:
            pixels = regions = None
        round_ = pseudo[-1].round if pseudo else ws.current_round()
        with ws.transaction():  # checked again under the write lock: another process may have just pulled it
            now = ws.label_mask(rec.id)
            if now is not None and now.source == source:
                report.unchanged += 1
                return
            ws.add_mask(rec.id, mask, "human", round_, source=source, changed_pixels=pixels,
                        changed_regions=regions)
        report.pulled.append(ImageChange(rec.name, int(task_id), int(ann["id"]), pixels, regions,
                                         int((mask != IGNORE).sum())))
        faults.point("labelstudio.pull")

    def _mask(self, rec, task_id, ann: dict, results: list[dict], report: PullReport) -> np.ndarray | None:
        try:
            return annotation_to_mask(results, self.classes, rec.height, rec.width, self.unpainted)
        except LabelStudioError as e:
            report.problems.append(f"{rec.name} (Label Studio task {task_id}, annotation {ann['id']}): {e}; "
                                   "skipped, fix it in Label Studio and pull again")
            return None

    def _pull_region(self, rec: ImageRecord, task_id, task: dict, asked: int, report: PullReport) -> None:
        """A region task: the person's class labels inside the queried regions become a partial mask version
        (ws.add_partial: the query closes, the image returns to unlabeled), effort counted inside them only."""
        ws = self.ws
        where = f"{rec.name} (Label Studio task {task_id}"
        annotations = task.get("annotations") or []
        ann = max(annotations, key=lambda a: (a.get("updated_at") or "", a["id"])) if annotations else None
        source = None if ann is None else f"labelstudio task {task_id} annotation {ann['id']} at {ann.get('updated_at')}"
        query = ws.open_region_query(rec.id)
        if query is None or query[0] != asked:  # answered already (by an earlier pull, or elsewhere)
            stored = [m for m in ws.masks(rec.id, "partial") if (m.source or "").startswith(_source_prefix(task_id))]
            if ann is not None and stored and all(m.source != source for m in stored):
                report.problems.append(f"{where}, annotation {ann['id']}): changed after its regions were stored; "
                                       "the region query is answered, so the change is not stored")
            else:
                report.unchanged += 1
            return
        if ann is None:
            report.waiting.append(rec.name)
            return
        if ann.get("was_cancelled"):
            report.skipped.append(rec.name)
            return
        results = ann.get("result") or []
        if not any(is_region_result(r, self.classes) for r in results):
            report.problems.append(f"{where}, annotation {ann['id']}): the annotation has no region layer (the "
                                   f"'{REGION_LABEL}' brush marking the regions to check; deleted, or the annotation "
                                   "was made elsewhere); skipped: restore the prediction's regions in Label Studio "
                                   "and pull again")
            return
        mask = self._mask(rec, task_id, ann, [r for r in results if not is_region_result(r, self.classes)], report)
        if mask is None:
            return
        inside = ws.region_pixels(rec.id, query[1])
        pseudo = ws.masks(rec.id, "pseudo")
        if pseudo:  # inside the regions only; unpainted pixels (ignore) are pixels the person left alone
            effort = correction_effort(read_mask(pseudo[-1].path, len(self.classes)), mask,
                                       inside & labeled_pixels(mask))
            pixels, regions = effort.pixels, effort.regions
        else:
            pixels = regions = None
        with ws.transaction():  # checked again under the write lock: another process may have just pulled it
            again = ws.open_region_query(rec.id)
            if again is None or again[0] != asked:
                report.unchanged += 1
                return
            try:
                save = ws.add_partial(rec.id, mask, asked, source=source, changed_pixels=pixels,
                                      changed_regions=regions)
            except WorkspaceError as e:
                report.problems.append(f"{where}, annotation {ann['id']}): {e}")
                return
        report.pulled.append(ImageChange(rec.name, int(task_id), int(ann["id"]), pixels, regions,
                                         int(((mask != IGNORE) & inside).sum()), save.regions, save.outside_pixels))
        faults.point("labelstudio.pull")

    # -- webhooks ----------------------------------------------------------------------------------------

    def register_webhook(self, url: str, actions: list[str] | None = None, replaces: str | None = None) -> int:
        """Ask Label Studio to POST this project's annotation events to `url` (see annotate/webhook.py). Hooks
        on the project whose URL path is `replaces` (left behind by a killed loop of this workspace: only one
        runs at a time) are removed first."""
        from urllib.parse import urlsplit

        project = self.project_id()
        for hook in self.client.call(self.sdk.webhooks.list, project=str(project)):
            if hook.url == url:
                return int(hook.id)
            if replaces and urlsplit(hook.url).path == replaces:
                self.remove_webhook(hook.id)
        made = self.client.call(self.sdk.webhooks.create, project=project, url=url, send_payload=True,
                                send_for_all_actions=False, is_active=True,
                                actions=actions or ["ANNOTATION_CREATED", "ANNOTATION_UPDATED"])
        return int(made.id)

    def touch_project(self) -> None:
        """Save the project unchanged: Label Studio announces PROJECT_UPDATED (whether its webhooks reach us)."""
        project = self.project_id()
        title = self.client.call(self.sdk.projects.get, id=project).title
        self.client.call(self.sdk.projects.update, id=project, title=title)

    def remove_webhook(self, hook_id: int) -> None:
        self.client.call_or_none(self.sdk.webhooks.delete, id=int(hook_id))
