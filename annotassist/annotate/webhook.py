"""A tiny webhook receiver so a labeling loop can sleep until Label Studio reports a new or changed annotation,
instead of polling. Standard library only; one background thread.

    with WebhookReceiver(port=0) as hook:            # port 0: any free port; hook.url is what to register
        sync.register_webhook(hook.url)              # Label Studio refuses 127.0.0.1 targets unless the server
        events = hook.wait_for_annotations(600)      # runs with SSRF_PROTECTION_ENABLED=false
        report = sync.pull()

Only ANNOTATION_CREATED / ANNOTATION_UPDATED (and their bulk forms) wake the waiter; anything else is
acknowledged and ignored. The payload's annotation content is not trusted or used: pull() reads the
annotation from the API, so a forged or partial event can at worst cause an extra pull.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ACTIONS = {"ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED"}
MAX_BODY = 16 * 1024 * 1024


@dataclass
class AnnotationEvent:
    action: str
    project: int | None
    task: int | None
    annotation: int | None


class WebhookReceiver:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, path: str = "/annotassist/webhook"):
        self.path = path
        self._events: list[AnnotationEvent] = []
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

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _id(obj, key: str = "id") -> int | None:
    if isinstance(obj, dict):
        obj = obj.get(key)
    return obj if isinstance(obj, int) else None
