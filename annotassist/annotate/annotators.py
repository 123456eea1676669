"""The three ways a round's images reach a person, behind the same verbs the loop uses:

    push(round, ids)   hand the queued images, whose pseudo-masks are stored, to the person (or stand-in)
    pull(round, ids)   bring in whatever corrections are ready, without waiting (each image one transaction)
    pending(ids)       the images still waiting for a person (queued or in review)

`simulated` hands back the dataset's own masks at once (benchmarks, tests, the demo); `labelstudio` pushes
tasks with pre-annotations and pulls submitted annotations; `gradio` opens the correction editor, whose saves
go straight into the pool. The loop does not care which (loop.py polls pull/pending until nothing is pending).
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
        return f"{len(done)} corrected ({sum(c.changed_pixels for c in done)} pixels changed)"

    def pending(self, ids: list[int]) -> list[int]:
        return waiting(self.ws, ids)

    def close(self) -> None:
        pass


class LabelStudioAnnotator:
    """Tasks with pre-annotations in one Label Studio project; submitted annotations become human masks."""

    def __init__(self, ws: Workspace, url: str | None = None, api_key: str | None = None, **_):
        from .labelstudio import LabelStudioSync

        self.ws = ws
        self.sync = LabelStudioSync(ws, url or ws.config.loop.labelstudio_url, api_key=api_key)
        self.where = f"in Label Studio ({self.sync.url})"

    def push(self, round_: int, ids: list[int]) -> str:
        r = self.sync.push(round_=round_, image_ids=ids)
        return (f"project {r.project_id}: {len(r.created)} new tasks, {len(r.updated)} given this round's "
                f"prediction, {len(r.unchanged)} unchanged; label them at {self.sync.url}/projects/{r.project_id}")

    def pull(self, round_: int, ids: list[int]) -> str:
        r = self.sync.pull()
        if not r.pulled and not r.problems:
            return ""
        notes = "".join(f"\n  not pulled (fix it in Label Studio): {p}" for p in r.problems)
        return f"{len(r.pulled)} corrections pulled ({sum(c.changed_pixels or 0 for c in r.pulled)} pixels " \
               f"changed){notes}"

    def pending(self, ids: list[int]) -> list[int]:
        return waiting(self.ws, ids)

    def close(self) -> None:
        self.sync.close()


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
