"""The three ways a round's images reach a person, behind the same verbs the loop uses:

    push(round, ids)   hand the queued images, whose pseudo-masks are stored, to the person (or stand-in)
    pull(round, ids)   bring in whatever corrections are ready, without waiting (each image one transaction)
    pending(ids)       the images still waiting for a person (queued or in review)

`simulated` hands back the dataset's own masks at once (benchmarks, tests, the demo); `labelstudio` pushes
tasks with pre-annotations and pulls submitted annotations; `gradio` opens the correction editor, whose saves
go straight into the pool. The loop does not care which (loop.py polls pull/pending until nothing is pending,
or, for an annotator that is `listening`, waits on it instead).
"""
from __future__ import annotations

from typing import Protocol

from ..workspace import Workspace

WAITING = ("queued", "in_review")


class Annotator(Protocol):
    def push(self, round_: int, ids: list[int]) -> str: ...

    def pull(self, round_: int, ids: list[int]) -> str: ...

    def pending(self, ids: list[int]) -> list[int]: ...

    def close(self) -> None: ...


def waiting(ws: Workspace, ids: list[int]) -> list[int]:
    return [i for i in ids if ws.image(i).state in WAITING]


class SimulatedAnnotator:
    def __init__(self, ws: Workspace, **_):
        self.ws = ws

    def push(self, round_: int, ids: list[int]) -> str:
        return f"{len(ids)} images to the simulated annotator"

    def pull(self, round_: int, ids: list[int]) -> str:
        from .simulated import correct

        done = correct(self.ws, round_, ids)
        regions = sum(c.regions_reviewed for c in done)
        where = f" in {regions} regions, {sum(c.reviewed_pixels for c in done)} pixels reviewed" if regions else ""
        return f"{len(done)} corrected ({sum(c.changed_pixels for c in done)} pixels changed{where})"

    def pending(self, ids: list[int]) -> list[int]:
        return waiting(self.ws, ids)

    def close(self) -> None:
        pass


class LabelStudioAnnotator:
    """Tasks with pre-annotations in one Label Studio project; submitted annotations become human masks.

    It listens for Label Studio's webhooks when Label Studio can reach it: a receiver on this machine,
    registered with the project (and removed on close), whose events are pulled into the pool at once by a
    worker thread, also while a later round trains. Whether Label Studio reaches it is checked once (the
    project is touched and its PROJECT_UPDATED must arrive); if not (another machine, SSRF protection on), the
    loop polls as before."""

    REACH_TIMEOUT = 5.0  # Label Studio sends webhooks during the request that triggers them

    def __init__(self, ws: Workspace, url: str | None = None, api_key: str | None = None, *,
                 project: int | None = None, title: str | None = None, webhooks: bool = True, log=print, **_):
        from .labelstudio import LabelStudioSync

        self.ws, self.log = ws, log
        self.sync = LabelStudioSync(ws, url or ws.config.loop.labelstudio_url, api_key=api_key, project=project,
                                    title=title)
        self.where = f"in Label Studio ({self.sync.url})"
        self._want_webhooks, self._api_key = webhooks, api_key
        self._receiver = self._puller = self._hook = None
        self._seen = 0

    @property
    def listening(self) -> bool:
        return self._receiver is not None

    def push(self, round_: int, ids: list[int]) -> str:
        r = self.sync.push(round_=round_, image_ids=ids)
        return (f"project {r.project_id}: {len(r.created)} new tasks, {len(r.updated)} given this round's "
                f"prediction, {len(r.unchanged)} unchanged; label them at {self.sync.url}/projects/{r.project_id}")

    def pull(self, round_: int, ids: list[int]) -> str:
        if self._want_webhooks:  # first listen, then pull: nothing submitted in between is missed
            self._want_webhooks = False  # tried once per annotator
            self._listen()
        r = self.sync.pull()
        if not r.pulled and not r.problems:
            return ""
        notes = "".join(f"\n  not pulled (fix it in Label Studio): {p}" for p in r.problems)
        return f"{len(r.pulled)} corrections pulled ({sum(c.changed_pixels or 0 for c in r.pulled)} pixels " \
               f"changed){notes}"

    def wait(self, timeout: float) -> bool:
        """Sleep until a webhook changed the pool (True) or `timeout` seconds passed (False)."""
        now = self._puller.wait(self._seen, timeout)
        changed, self._seen = now > self._seen, now
        return changed

    def pending(self, ids: list[int]) -> list[int]:
        return waiting(self.ws, ids)

    def _listen(self) -> None:
        from .labelstudio import WEBHOOK_ACTIONS
        from .lsclient import LabelStudioError
        from .webhook import EventPuller, WebhookReceiver

        sync, url = self.sync, self.sync.url
        self._puller = EventPuller(self.ws.root, lambda ws: _sync_like(sync, ws, self._api_key), self.log)
        self._receiver = WebhookReceiver(on_event=self._puller.submit)
        try:
            project = sync.project_id()
            self._hook = sync.register_webhook(self._receiver.url, WEBHOOK_ACTIONS, replaces=self._receiver.path)
            sync.touch_project()
            reached = self._receiver.wait_for_action("PROJECT_UPDATED", project, self.REACH_TIMEOUT)
            why = "its test event did not arrive"
        except LabelStudioError as e:
            reached, why = False, str(e)
        if reached:
            self.log(f"  Label Studio reaches this loop's webhook ({self._receiver.url}): corrections are stored the "
                     "moment they are submitted")
            return
        self.log(f"  Label Studio at {url} cannot reach this loop's webhook at {self._receiver.url} ({why}); polling "
                 "instead (a server on another machine, or one without SSRF_PROTECTION_ENABLED=false for local "
                 "addresses)")
        self._stop_listening()

    def _stop_listening(self) -> None:
        if self._hook is not None:
            try:
                self.sync.remove_webhook(self._hook)
            except Exception as e:  # closing: say it, never mask what stopped the loop
                self.log(f"  could not remove the webhook {self._hook} from Label Studio ({e}); delete it in the "
                         "project's Settings > Webhooks")
            self._hook = None
        if self._receiver is not None:
            self._receiver.close()
            self._receiver = None
        if self._puller is not None:
            self._puller.close()
            self._puller = None

    def close(self) -> None:
        self._stop_listening()
        self.sync.close()


def _sync_like(sync, ws: Workspace, api_key: str | None):
    """A second LabelStudioSync on the same server and project, for another thread's workspace handle."""
    from .labelstudio import LabelStudioSync

    return LabelStudioSync(ws, sync.url, api_key=api_key, project=sync.project_id(), unpainted=sync.unpainted)


class EditorAnnotator:
    """The Gradio correction editor on this workspace, open while the round's images wait for a person."""

    max_poll_seconds = 2.0  # saves land in the pool directly: looking is one cheap query

    def __init__(self, ws: Workspace, host: str = "127.0.0.1", port: int | None = None, **_):
        self.ws, self.host, self.port, self.app = ws, host, port, None
        self.where = ""

    def push(self, round_: int, ids: list[int]) -> str:
        return f"{len(ids)} images queued in the editor"

    def pull(self, round_: int, ids: list[int]) -> str:
        if self.app is None:  # opened at the first look for corrections (also after a restart)
            from ..ui.editor import launch

            self.app = launch(self.ws.root, host=self.host, port=self.port, prevent_thread_lock=True, quiet=True)
            self.where = f"in the editor ({self.app.local_url})"
            return f"correct the {len(ids)} queued images in the editor: {self.app.local_url} (saves go into the pool)"
        return ""

    def pending(self, ids: list[int]) -> list[int]:
        return waiting(self.ws, ids)

    def close(self) -> None:
        if self.app is not None:
            self.app.close()
            self.app = None


ANNOTATORS = {"simulated": SimulatedAnnotator, "labelstudio": LabelStudioAnnotator, "gradio": EditorAnnotator}


def make_annotator(name: str, ws: Workspace, **options) -> Annotator:
    return ANNOTATORS[name](ws, **options)
