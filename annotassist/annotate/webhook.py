"""Label Studio's webhooks: what an event names, a worker that pulls it into the pool at once, and a tiny
receiver so a labeling loop sleeps until Label Studio reports a change instead of polling.

    with WebhookReceiver(port=0) as hook:            # port 0: any free port; hook.url is what to register
        sync.register_webhook(hook.url)              # Label Studio refuses 127.0.0.1 targets unless the server
        events = hook.wait_for_annotations(600)      # runs with SSRF_PROTECTION_ENABLED=false
        report = sync.pull()

An event's content is never trusted or used: it only says WHICH tasks to look at, and the worker reads their
annotations from the API (with our own key), exactly as a pull does. So a forged or partial event can at worst
cause an extra read, which is why the ML backend accepts annotation events without its basic auth (Label
Studio's automatic webhook sends none). Only ANNOTATION_CREATED / ANNOTATION_UPDATED (and the bulk form) wake
`wait_for_annotations`; deletions are pulled too (the image goes back to review); anything else is
acknowledged and ignored.
"""
from __future__ import annotations

import json
import queue
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

from ..errors import AnnotassistError

ACTIONS = {"ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED"}
# changes to pull; Label Studio 1.23 names a deletion ANNOTATIONS_DELETED (ids only), older ones ANNOTATION_DELETED
PULLED = ACTIONS | {"ANNOTATIONS_DELETED", "ANNOTATION_DELETED", "TASKS_DELETED"}
MAX_BODY = 16 * 1024 * 1024


class WebhookError(AnnotassistError):
    """A webhook body that is not a Label Studio event."""


@dataclass
class AnnotationEvent:
    action: str
    project: int | None
    task: int | None
    annotation: int | None


@dataclass
class Event:
    """What a Label Studio event names: the tasks to look at, and deleted annotations by id (a deletion's
    payload names nothing else)."""
    action: str
    project: int | None
    tasks: list[int] = field(default_factory=list)
    annotations: list[int] = field(default_factory=list)


def parse_event(payload) -> Event:
    """Read a webhook body (already JSON-decoded); raise WebhookError when it is not a Label Studio event."""
    if not isinstance(payload, dict):
        raise WebhookError(f"the body must be a JSON object (a Label Studio event), got {type(payload).__name__}")
    action = payload.get("action")
    if not isinstance(action, str) or not action:
        raise WebhookError("the body has no 'action' (ANNOTATION_CREATED, ANNOTATION_UPDATED, START_TRAINING, ...)")
    event = Event(action, _id(payload.get("project")))
    if action not in PULLED:
        return event
    for key in ("annotation", "annotations"):
        for ann in _many(payload.get(key)):
            if not isinstance(ann, dict) or _id(ann) is None:
                raise WebhookError(f"{action}: '{key}' must hold objects with an integer 'id'")
            if action in ("ANNOTATIONS_DELETED", "ANNOTATION_DELETED"):
                event.annotations.append(_id(ann))
            if _id(ann, "task") is not None:
                event.tasks.append(_id(ann, "task"))
    for key in ("task", "tasks"):
        for task in _many(payload.get(key)):
            if _id(task) is None:
                raise WebhookError(f"{action}: '{key}' must hold objects with an integer 'id'")
            event.tasks.append(_id(task))
    if not event.tasks and not event.annotations:
        raise WebhookError(f"{action} names no task and no annotation")
    event.tasks = list(dict.fromkeys(event.tasks))
    return event


class EventPuller:
    """Pulls what events name into the workspace, in order, on its own thread with its own workspace handle
    and Label Studio session (SQLite handles are per thread). `make_sync(ws)` makes the LabelStudioSync."""

    def __init__(self, workspace: str | Path, make_sync: Callable, log: Callable[[str], None] = print):
        self.workspace, self.make_sync, self.log = Path(workspace), make_sync, log
        self._queue: queue.Queue = queue.Queue()
        self._done = threading.Condition()
        self.processed = 0  # events handled (pulled or found to change nothing)
        self._thread = threading.Thread(target=self._run, name="annotassist-event-puller", daemon=True)
        self._thread.start()

    def submit(self, event: Event) -> None:
        self._queue.put(event)

    def wait(self, seen: int, timeout: float | None) -> int:
        """Block until more than `seen` events were handled (or `timeout` s); returns the count now."""
        with self._done:
            self._done.wait_for(lambda: self.processed > seen, timeout=timeout)
            return self.processed

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        from ..workspace import Workspace

        ws = sync = None
        try:
            while (event := self._queue.get()) is not None:
                try:
                    if ws is None:
                        ws = Workspace(self.workspace)
                        sync = self.make_sync(ws)
                    self._handle(sync, event)
                except AnnotassistError as e:
                    self.log(f"webhook {event.action} (tasks {event.tasks or event.annotations}): not pulled: {e}")
                except Exception as e:  # keep the worker alive for the next event; say what happened
                    self.log(f"webhook {event.action}: unexpected {e.__class__.__name__}: {e}")
                with self._done:
                    self.processed += 1
                    self._done.notify_all()
        finally:
            if sync is not None:
                sync.close()
            if ws is not None:
                ws.close()

    def _handle(self, sync, event: Event) -> None:
        tasks = list(event.tasks) + sync.tasks_of_annotations(event.annotations)
        report = sync.pull_tasks(tasks)
        for c in report.pulled:
            self.log(f"webhook {event.action}: {c.name} from task {c.task_id} stored as a human mask "
                     f"({c.changed_pixels if c.changed_pixels is not None else 'no pre-annotation:'} pixels "
                     "changed)")
        for name in report.reopened + report.deleted:
            self.log(f"webhook {event.action}: {name} needs labeling again (its annotation or task was deleted)")
        for p in report.problems:
            self.log(f"webhook {event.action}: not pulled (fix it in Label Studio): {p}")


class WebhookReceiver:
    """A stdlib HTTP receiver for the loop: records events, hands the ones that change annotations to
    `on_event` (e.g. EventPuller.submit) and wakes `wait_for_annotations`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, path: str = "/annotassist/webhook",
                 on_event: Callable[[Event], None] | None = None):
        self.path, self.on_event = path, on_event
        self._events: list[AnnotationEvent] = []
        self._actions: list[tuple[str, int | None]] = []  # every action seen (the loop's reachability check)
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                if self.path.split("?")[0] != receiver.path or length > MAX_BODY:
                    self.send_response(404)
                    self.end_headers()
                    return
                try:
                    payload = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    self.send_response(400)
                    self.end_headers()
                    return
                receiver._receive(payload)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):  # keep the loop's output clean
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{self.path}"

    def _receive(self, payload: dict) -> None:
        action = payload.get("action") if isinstance(payload, dict) else None
        with self._cond:
            if isinstance(action, str):
                self._actions.append((action, _id(payload.get("project"))))
                self._cond.notify_all()
        if action in PULLED and self.on_event is not None:
            try:
                self.on_event(parse_event(payload))
            except WebhookError:
                pass  # not an event we can act on; the safety pull catches anything missed
        if action not in ACTIONS:
            return
        ann, task, project = payload.get("annotation"), payload.get("task"), payload.get("project")
        event = AnnotationEvent(action, _id(project), _id(task) or _id(ann, "task"), _id(ann))
        with self._cond:
            self._events.append(event)
            self._cond.notify_all()

    def wait_for_annotations(self, timeout: float | None = None) -> list[AnnotationEvent]:
        """Block until at least one annotation event arrived (or `timeout` seconds); return and clear them."""
        with self._cond:
            self._cond.wait_for(lambda: self._events, timeout=timeout)
            events, self._events = self._events, []
        return events

    def wait_for_action(self, action: str, project: int | None, timeout: float) -> bool:
        """Whether an event `action` for `project` arrives within `timeout` seconds (or arrived already)."""
        with self._cond:
            return self._cond.wait_for(lambda: (action, project) in self._actions, timeout=timeout)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _many(obj) -> list:
    if obj is None:
        return []
    return obj if isinstance(obj, list) else [obj]


def _id(obj, key: str = "id") -> int | None:
    if isinstance(obj, dict):
        obj = obj.get(key)
    return obj if isinstance(obj, int) and not isinstance(obj, bool) else None
