"""Label Studio pre-annotation sync: push queued images with their pseudo-masks, pull the corrected masks back.

push: one Label Studio task per queued image, its newest pseudo mask as a prediction (one brushlabels result
per class present, 0/255 masks of the image's exact size), `score` = the model's confidence in the image and
`model_version` = "round-R". The project is set to that model version and to uncertainty sampling, so Label
Studio serves the LEAST confident images first. Task ids go into the workspace's sync table; a task that
already exists is never created again (tasks carry the image name, so even a push interrupted between Label
Studio and the workspace is recognised), and a newer round's prediction is added to the existing task.

pull: for every pushed image, the task's latest annotation. Submitted ones become `human` mask versions (the
image becomes labeled); skipped/cancelled ones are noted and left in review; a task deleted in Label Studio
sends its image back to the unlabeled pool. Each image's change is one workspace transaction, so an
interrupted pull leaves every image either done or untouched, and running it again continues.

Turning brushes into one class-id mask: results are painted in the order Label Studio lists them and a LATER
result wins where brushes overlap (what the person sees: the last stroke is on top). A pixel counts as painted
where the brush's alpha is >= 128 (browser strokes have soft edges). Unpainted pixels are `unpainted`: 255
(ignore) by default, or a class id such as a background class.
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
    from ..workspace import Workspace

BACKEND = "labelstudio"
FROM_NAME, TO_NAME = "tag", "image"
NAME_KEY = "annotassist_image"  # task data key holding the workspace's image name
PAINTED = 128


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
    problems: list[str] = field(default_factory=list)  # bad annotation: task skipped, image left in review
    unchanged: int = 0  # labeled images whose annotation did not change since the last pull


def label_config(classes: list[str], palette: list[tuple[int, int, int]]) -> str:
    """An image with one BrushLabels control: a label per class in the class's palette colour."""
    labels = "".join(f'<Label value={quoteattr(c)} background="#{r:02x}{g:02x}{b:02x}"/>'
                     for c, (r, g, b) in zip(classes, palette))
    return (f'<View><Image name="{TO_NAME}" value="$image" zoom="true"/>'
            f'<BrushLabels name="{FROM_NAME}" toName="{TO_NAME}">{labels}</BrushLabels></View>')


def prediction(mask: np.ndarray, classes: list[str], score: float | None, round_: int) -> dict:
    """One brushlabels result per class present in a class-id mask (255 = ignore is left out)."""
    h, w = mask.shape
    results = []
    for c in np.unique(mask):
        if c == IGNORE or c >= len(classes):
            continue
        results.append({"id": f"c{int(c)}", "from_name": FROM_NAME, "to_name": TO_NAME, "type": "brushlabels",
                        "original_width": w, "original_height": h, "image_rotation": 0,
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


class LabelStudioSync:
    """Push to and pull from one Label Studio project for one workspace. Holds the HTTP session."""

    def __init__(self, ws, url: str, api_key: str | None = None, *, document_root: str | Path | None = None,
                 unpainted: int = IGNORE, title: str | None = None, **client_kw):
        self.ws, self.url = ws, url.rstrip("/")
        self.client = LabelStudioClient(url, api_key, **client_kw)
        cfg = ws.config
        self.classes, self.palette = list(cfg.dataset.classes), cfg.palette()
        # Label Studio allows 3..50 characters
        self.title = (title or f"annotassist {cfg.dataset.name} ({Path(ws.root).resolve().name})")[:50]
        root = document_root if document_root is not None else os.environ.get("LOCAL_FILES_DOCUMENT_ROOT")
        self.document_root = Path(root).resolve() if root else None
        if unpainted != IGNORE and not 0 <= unpainted < len(self.classes):
            raise LabelStudioError(f"unpainted must be 255 (ignore) or a class id 0..{len(self.classes) - 1}")
        self.unpainted = unpainted
        self._project: int | None = None

    def close(self) -> None:
        self.client.close()

    # -- project -----------------------------------------------------------------------------------------

    def project_id(self) -> int:
        """The project with this workspace's title, created with the class config when there is none."""
        if self._project is None:
            found = self.client.get("/api/projects", params={"title": self.title, "page_size": 1000})
            rows = found["results"] if isinstance(found, dict) else found
            same = [p for p in rows if p.get("title") == self.title]
            if same:
                self._project = int(min(p["id"] for p in same))
            else:
                body = {"title": self.title, "label_config": label_config(self.classes, self.palette),
                        "description": f"pre-annotations from annotassist workspace {Path(self.ws.root).resolve()}"}
                self._project = int(self.client.post("/api/projects", json=body)["id"])
        return self._project

    def _tasks_by_name(self, project: int) -> dict[str, dict]:
        """Every task of the project that carries one of our image names (to recognise earlier pushes)."""
        out, page = {}, 1
        while True:
            r = self.client.request("GET", "/api/tasks", params={"project": project, "page": page,
                                                                 "page_size": 500, "fields": "all"}, allow=(404,))
            body = r.json() if r.status_code != 404 else {}
            tasks = body.get("tasks", []) if isinstance(body, dict) else body
            for t in tasks:
                name = (t.get("data") or {}).get(NAME_KEY)
                if name is not None:
                    out.setdefault(name, t)
            if not tasks or len(out) >= body.get("total", 0) or len(tasks) < 500:
                return out
            page += 1

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
        local = self._local_folders(records)
        report = PushReport(project, self.title, "local-files" if local is not None else "upload")
        if local:
            self._ensure_storages(project, local)
        existing = self._tasks_by_name(project) if records else {}
        latest_round = None
        for rec in records:
            pred, r = self._prediction_for(rec, round_)
            latest_round = r if latest_round is None else max(latest_round, r)
            task = existing.get(rec.name)
            if task is None and ws.sync_id(rec.id, BACKEND) is not None:
                task = self._task(ws.sync_id(rec.id, BACKEND))  # tasks listed under another name/project
            if task is None:
                task_id = self._create_task(project, rec, pred, local is not None)
                (report.created if pred else report.without_prediction).append(rec.name)
            else:
                task_id = int(task["id"])
                versions = {p.get("model_version") for p in task.get("predictions", [])}
                if pred and pred["model_version"] not in versions:
                    self.client.post("/api/predictions", json={"task": task_id, **pred})
                    report.updated.append(rec.name)
                else:
                    (report.unchanged if pred or versions else report.without_prediction).append(rec.name)
            with ws.transaction():  # the sync id and the state change land together or not at all
                ws.set_sync_id(rec.id, BACKEND, str(task_id), str(project))
                ws.set_state([rec.id], "in_review", reason=f"pushed to Label Studio task {task_id}")
            faults.point("labelstudio.push")
        if latest_round is not None:
            self.client.patch(f"/api/projects/{project}", json={"model_version": model_version(latest_round),
                                                                 "sampling": "Uncertainty sampling"})
        with ws.transaction():
            ws.log_event("labelstudio_push", {"url": self.url, "project": project, "created": len(report.created),
                                              "updated": len(report.updated)})
        return report

    def _prediction_for(self, rec, round_: int | None) -> tuple[dict | None, int]:
        pseudo = self.ws.masks(rec.id, "pseudo")
        if round_ is not None:
            pseudo = [m for m in pseudo if m.round is None or m.round <= round_]
        if not pseudo:
            return None, round_ if round_ is not None else (self.ws.current_round() or 0)
        m = pseudo[-1]
        r = round_ if round_ is not None else (m.round if m.round is not None else self.ws.current_round() or 0)
        mask = read_mask(m.path, len(self.classes))
        conf = self.ws.scores(r, "confidence").get(rec.id, {}).get("confidence")
        return prediction(mask, self.classes, conf, r), r

    def _task(self, task_id) -> dict | None:
        r = self.client.request("GET", f"/api/tasks/{task_id}", allow=(404,))
        return None if r.status_code == 404 else r.json()

    def _create_task(self, project: int, rec, pred: dict | None, local: bool) -> int:
        if local:
            rel = Path(rec.image_path).resolve().relative_to(self.document_root).as_posix()
            data = {"image": f"/data/local-files/?d={quote(rel)}", NAME_KEY: rec.name}
            body = [{"data": data, "predictions": [pred] if pred else []}]
            out = self.client.post(f"/api/projects/{project}/import", params={"return_task_ids": "true"}, json=body)
            return int(out["task_ids"][0])
        # a remote server: upload the file (which makes a task), then name it and add the prediction
        with open(rec.image_path, "rb") as f:
            out = self.client.post(f"/api/projects/{project}/import", params={"return_task_ids": "true"},
                                   files={"file": (Path(rec.image_path).name, f)})
        task_id = int(out["task_ids"][0])
        task = self.client.get(f"/api/tasks/{task_id}")
        self.client.patch(f"/api/tasks/{task_id}", json={"data": {**task["data"], NAME_KEY: rec.name}})
        if pred:
            self.client.post("/api/predictions", json={"task": task_id, **pred})
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
        have = {Path(s["path"]) for s in self.client.get("/api/storages/localfiles", params={"project": project})}
        for folder in folders:
            if folder not in have:
                self.client.post("/api/storages/localfiles", json={
                    "project": project, "path": str(folder), "use_blob_urls": True,
                    "title": f"annotassist {folder.name}"})

    # -- pull --------------------------------------------------------------------------------------------

    def pull(self) -> PullReport:
        ws, report = self.ws, PullReport()
        self.client.get("/api/current-user/whoami")  # reachable, key accepted: fail before touching anything
        for rec in ws.images("pool", state=["in_review", "labeled"]):
            task_id = ws.sync_id(rec.id, BACKEND)
            if task_id is None:
                continue
            task = self._task(task_id)
            if task is None:
                if rec.state == "in_review":
                    ws.set_state([rec.id], "unlabeled", reason=f"Label Studio task {task_id} was deleted")
                    report.deleted.append(rec.name)
                continue  # a labeled image keeps the label it already has
            annotations = task.get("annotations") or []
            if not annotations:
                report.waiting.append(rec.name)
                continue
            ann = max(annotations, key=lambda a: (a.get("updated_at") or "", a["id"]))
            source = f"labelstudio task {task_id} annotation {ann['id']} at {ann.get('updated_at')}"
            if rec.state == "labeled":
                current = ws.label_mask(rec.id)
                if current is None or current.source == source or not (current.source or "").startswith(
                        f"labelstudio task {task_id} "):
                    report.unchanged += 1  # pulled already, or labeled by someone else since
                    continue
            if ann.get("was_cancelled"):
                report.skipped.append(rec.name)
                continue
            try:
                mask = annotation_to_mask(ann.get("result") or [], self.classes, rec.height, rec.width,
                                          self.unpainted)
            except LabelStudioError as e:
                report.problems.append(f"{rec.name} (Label Studio task {task_id}, annotation {ann['id']}): {e}; "
                                       "skipped, fix it in Label Studio and pull again")
                continue
            pseudo = ws.masks(rec.id, "pseudo")
            if pseudo:  # unpainted pixels (ignore) are pixels the person left alone
                effort = correction_effort(read_mask(pseudo[-1].path, len(self.classes)), mask, labeled_pixels(mask))
                pixels, regions = effort.pixels, effort.regions
            else:
                pixels = regions = None
            round_ = pseudo[-1].round if pseudo else ws.current_round()
            ws.add_mask(rec.id, mask, "human", round_, source=source, changed_pixels=pixels,
                        changed_regions=regions)
            report.pulled.append(ImageChange(rec.name, int(task_id), int(ann["id"]), pixels, regions,
                                             int((mask != IGNORE).sum())))
            faults.point("labelstudio.pull")
        return report

    # -- webhooks ----------------------------------------------------------------------------------------

    def register_webhook(self, url: str) -> int:
        """Ask Label Studio to POST annotation events for this project to `url` (see annotate/webhook.py)."""
        project = self.project_id()
        for hook in self.client.get("/api/webhooks", params={"project": project}):
            if hook.get("url") == url:
                return int(hook["id"])
        body = {"project": project, "url": url, "send_payload": True, "send_for_all_actions": False,
                "actions": ["ANNOTATION_CREATED", "ANNOTATION_UPDATED"], "is_active": True}
        return int(self.client.post("/api/webhooks", json=body)["id"])
