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
from .lsclient import LabelStudioClient, LabelStudioError
from .rle import RLEError, mask_to_rle, rle_to_mask

if TYPE_CHECKING:
    from ..workspace import ImageRecord, Workspace

BACKEND = "labelstudio"
FROM_NAME, TO_NAME = "tag", "image"
NAME_KEY = "annotassist_image"  # task data key holding the workspace's image name
PAINTED = 128
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
    labeled_pixels: int


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


def label_config(classes: list[str], palette: list[tuple[int, int, int]]) -> str:
    """An image with one BrushLabels control: a label per class in the class's palette colour."""
    labels = "".join(f'<Label value={quoteattr(c)} background="#{r:02x}{g:02x}{b:02x}"/>'
                     for c, (r, g, b) in zip(classes, palette))
    return (f'<View><Image name="{TO_NAME}" value="$image" zoom="true"/>'
            f'<BrushLabels name="{FROM_NAME}" toName="{TO_NAME}">{labels}</BrushLabels></View>')


def brush_target(config: str, classes: list[str]) -> BrushTarget:
    """Read a project's label config: the BrushLabels control annotassist paints into. Raises a
    LabelStudioError saying what is missing or wrong (no BrushLabels, no image, labels that are not classes)."""
    from label_studio_sdk.label_interface import LabelInterface

    try:
        li = LabelInterface(config)
    except Exception as e:  # the SDK raises its own XML error types
        raise LabelStudioError(f"the project's label config cannot be read ({str(e)[:200]})") from None
    brushes = [c for c in li.controls if c.tag.lower() == "brushlabels"]
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
                desc = f"pre-annotations from annotassist workspace {Path(self.ws.root).resolve()}"
                made = self.client.call(self.sdk.projects.create, title=title, description=desc,
                                        label_config=label_config(self.classes, self.palette))
                self._project = int(made.id)
        return self._project

    def target(self) -> BrushTarget:
        """The project's BrushLabels control (ours: 'tag' on 'image'; a user's project: read from its config)."""
        if self._target is None:
            project = self.client.call(self.sdk.projects.get, id=self.project_id())
            self._target = brush_target(project.label_config or "", self.classes)
        return self._target

    def _tasks_by_name(self, project: int) -> dict[str, dict]:
        """Every task of the project that carries one of our image names (to recognise earlier pushes)."""
        tasks = self.client.call(lambda: [t.model_dump(mode="json") for t in
                                          self.sdk.tasks.list(project=project, fields="all", page_size=500)])
        out = {}
        for t in tasks:
            name = (t.get("data") or {}).get(NAME_KEY)
            if name is not None:
                out.setdefault(name, t)
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
        local = self._local_folders(records)
        report = PushReport(project, self.title, "local-files" if local is not None else "upload")
        if local:
            self._ensure_storages(project, local)
        existing = self._tasks_by_name(project) if records else {}
        latest_round = None
        for rec in records:
            pred, r = self._prediction_for(rec, round_, target)
            if pred:  # Label Studio refuses a model version no prediction carries
                latest_round = r if latest_round is None else max(latest_round, r)
            task = existing.get(rec.name)
            if task is None and ws.sync_id(rec.id, BACKEND) is not None:
                task = self._task(ws.sync_id(rec.id, BACKEND))  # tasks listed under another name/project
            if task is None:
                task_id = self._create_task(project, rec, pred, local is not None, target)
                (report.created if pred else report.without_prediction).append(rec.name)
            else:
                task_id = int(task["id"])
                versions = {p.get("model_version") for p in task.get("predictions", [])}
                if pred and pred["model_version"] not in versions:
                    self.client.call(self.sdk.predictions.create, task=task_id, **pred)
                    report.updated.append(rec.name)
                else:
                    (report.unchanged if pred or versions else report.without_prediction).append(rec.name)
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

    def _create_task(self, project: int, rec, pred: dict | None, local: bool, target: BrushTarget) -> int:
        if local:
            rel = Path(rec.image_path).resolve().relative_to(self.document_root).as_posix()
            data = {target.data_key: f"/data/local-files/?d={quote(rel)}", NAME_KEY: rec.name}
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
        self.client.call(self.sdk.tasks.update, id=str(task_id), data={**task["data"], NAME_KEY: rec.name})
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
        return report

    def pull_tasks(self, task_ids) -> PullReport:
        """Pull the named tasks only (what a webhook reports); tasks no image was pushed as are listed in
        `unknown` and change nothing."""
        ws, report = self.ws, PullReport()
        for task_id in dict.fromkeys(int(t) for t in task_ids):
            image_id = ws.synced_image(BACKEND, str(task_id))
            rec = ws.image(image_id) if image_id is not None else None
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
        try:
            mask = annotation_to_mask(ann.get("result") or [], self.classes, rec.height, rec.width, self.unpainted)
        except LabelStudioError as e:
            report.problems.append(f"{rec.name} (Label Studio task {task_id}, annotation {ann['id']}): {e}; "
                                   "skipped, fix it in Label Studio and pull again")
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
