"""`annotassist serve`: a workspace as a Label Studio ML backend (Settings > Model > Connect model).

Label Studio's ML backend protocol, on FastAPI + uvicorn (both come with Gradio):

    GET  /health   {"status": "UP", "model_class": ..., "model_version": "round-R", ...}, at once
    POST /setup    checks the project's label config (a BrushLabels control on an Image, its labels among the
                   workspace's classes) and answers {"model_version": "round-R"}; a config that does not fit is
                   refused with the reason (HTTP 422 {"error": ...}; Label Studio then refuses the connection)
    POST /predict  per task: the round's pseudo-mask as brushlabels results (one per class, the project's own
                   control names) and the model's confidence in the image as `score`, so Label Studio's
                   uncertainty sampling serves the least sure images first. A task pushed from the workspace
                   gets the image's stored pseudo-mask (made and stored when the round has none yet); any other
                   image is fetched through Label Studio (key from LABEL_STUDIO_API_KEY) and predicted at its
                   own size. A task that fails gets {"error": ...} and no result (Label Studio stores nothing
                   for it and asks again later); the other tasks are still predicted.
    POST /webhook  ANNOTATION_CREATED / ANNOTATION_UPDATED / deletions: the task's annotation is pulled into the
                   pool at once as a `human` mask version (by a worker thread: the answer does not wait);
                   START_TRAINING ("Start training"): the next round in the background, see below
    POST /train    START_TRAINING as older Label Studio versions send it

/health and /setup never load a model (Label Studio gives them 1 s and 3 s); /predict loads the round's model
once and keeps it until a newer round is trained.

A round is the loop's steps in a child process (annotate/backend_round.py): train (continuing an interrupted
round from its checkpoint), score, select, push the new queue into the project with this round's predictions.
One at a time: a second request while one runs is answered with its state, not queued. `annotassist serve`
is one of the workspace's writers: it holds the workspace lock while it runs (lock.py), so it does not start
beside a running loop, train or pull, nor they beside it; its round joins that lock. If the server stops or is
killed mid-round, the child stops at a checkpoint; the next start of the server continues it.

Basic auth (ANNOTASSIST_AUTH=USER:PASSWORD, as Label Studio's "Basic Auth" connection option sends it) guards
every route except annotation webhooks: Label Studio's automatic webhook sends no credentials, and their content
is never trusted anyway (the worker reads the annotation from the API with the backend's own key).
"""
from __future__ import annotations

import json
import os
import secrets
import socket
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from fastapi import FastAPI, Request  # module level: FastAPI reads the handlers' annotations from here
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from ..auth import AUTH_ENV, parse_auth
from ..errors import AnnotassistError
from ..workspace import Workspace
from .backend_round import RoundJob
from .labelstudio import BACKEND, NAME_KEY, BrushTarget, brush_target, model_version, prediction
from .lsclient import ENV_KEY, LabelStudioClient, LabelStudioError, check_url
from .webhook import PULLED, Event, EventPuller, WebhookError, parse_event

URL_ENV = "LABEL_STUDIO_URL"
UNTRAINED = "untrained"  # the model version before any round is trained


class BackendError(AnnotassistError):
    """A request the backend refuses, with the reason (answered as HTTP 4xx {"error": reason})."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class ServeOptions:
    workspace: Path
    url: str | None = None  # Label Studio; default LABEL_STUDIO_URL, else the address it gives at /setup
    auth: tuple[str, str] | None = None
    device: str | None = None


class Backend:
    """The protocol's logic, without HTTP: each method takes the decoded body and returns the JSON answer."""

    def __init__(self, opts: ServeOptions, log=print):
        self.opts, self.log = opts, log
        self.ws_path = Path(opts.workspace)
        with Workspace(self.ws_path) as ws:
            cfg = ws.config
            self.classes = list(cfg.dataset.classes)
            self.model_class = f"annotassist DSSN ({cfg.model.backbone}, {len(self.classes)} classes)"
        url = opts.url or os.environ.get(URL_ENV)
        self.ls_url = check_url(url, "--url" if opts.url else URL_ENV) if url else None
        self.has_key = bool(os.environ.get(ENV_KEY))
        self.project: int | None = None  # the last project Label Studio set up or asked about
        self._model = None  # (checkpoint path, model, device)
        self._model_lock = threading.Lock()
        self._client: LabelStudioClient | None = None
        self._client_lock = threading.Lock()
        self.puller = EventPuller(self.ws_path, self._sync, log)
        self.rounds = RoundJob(self.ws_path, log)

    def start(self) -> None:
        """A round this backend started and that was interrupted (the server stopped or was killed) goes on.
        torch is imported in the background meanwhile: the server answers at once, and the first /predict or
        /health during a round does not pay for the import (Label Studio gives /health 1 s)."""
        import importlib

        threading.Thread(target=importlib.import_module, args=("annotassist.rounds",), daemon=True).start()
        said = self.rounds.resume_interrupted(self.ls_url, self.opts.device)
        if said:
            self.log(said)

    def close(self) -> None:
        self.rounds.stop()
        self.puller.close()
        if self._client is not None:
            self._client.close()

    # -- routes --------------------------------------------------------------------------------------------

    def health(self) -> dict:
        with Workspace(self.ws_path) as ws:
            round_, _ = _current_model(ws)
            labeled = ws.count("pool", "labeled")
        return {"status": "UP", "model_class": self.model_class, "model_version": _version(round_),
                "workspace": self.ws_path.resolve().name, "labeled_images": labeled,
                "training": self.rounds.status()}

    def setup(self, body: dict) -> dict:
        schema = body.get("schema") or body.get("label_config")
        if not isinstance(schema, str) or not schema.strip():
            raise BackendError("the setup request holds no label config ('schema')", 422)
        try:
            brush_target(schema, self.classes)
        except LabelStudioError as e:
            raise BackendError(f"this project cannot use the annotassist backend of {self.ws_path.name}: {e}", 422)
        self._remember(body)
        with Workspace(self.ws_path) as ws:
            return {"model_version": _version(_current_model(ws)[0])}

    def predict(self, body: dict) -> dict:
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
            raise BackendError("the body must hold 'tasks': a list of Label Studio tasks")
        try:
            target = brush_target(str(body.get("label_config") or ""), self.classes) \
                if body.get("label_config") else BrushTarget()
        except LabelStudioError as e:
            raise BackendError(str(e), 422)
        self._remember(body)
        with Workspace(self.ws_path) as ws:
            round_, checkpoint = _current_model(ws)
            version = _version(round_)
            results = []
            for task in tasks:
                try:
                    if round_ is None:
                        raise BackendError("no model is trained yet: press 'Start training' in the model's "
                                           "settings (or run 'annotassist train' on the workspace)")
                    results.append(self._predict_task(ws, task, target, round_, checkpoint))
                except AnnotassistError as e:
                    self.log(f"predict: task {task.get('id')}: {e}")
                    results.append({"model_version": version, "error": f"task {task.get('id')}: {e}"})
        return {"results": results, "model_version": version}

    def webhook(self, body, authorized: bool) -> dict:
        event = parse_event(body)
        self._remember(body)
        if event.action == "START_TRAINING":
            if not authorized:
                raise BackendError("START_TRAINING needs the backend's basic-auth user and password", 401)
            return self.train(body)
        if event.action not in PULLED:
            return {"status": "ignored", "reason": f"{event.action}: annotassist acts on annotation events and "
                                                   "START_TRAINING only"}
        with Workspace(self.ws_path) as ws:
            known = [t for t in event.tasks if ws.synced_image(BACKEND, str(t)) is not None]
        unknown = [t for t in event.tasks if t not in known]
        if not known and not event.annotations:
            return {"status": "ignored", "reason": f"task {', '.join(map(str, unknown))} was never pushed from the "
                                                   f"workspace {self.ws_path.name}: there is no pool image to store "
                                                   "its annotation in"}
        if not self.has_key:
            return {"status": "ignored", "reason": f"the backend has no {ENV_KEY}, so it cannot read annotations "
                                                   "from Label Studio: restart it with the key in the environment, "
                                                   "or run 'annotassist pull'"}
        self.puller.submit(Event(event.action, event.project, known, event.annotations))
        return {"status": "queued", "tasks": known, "ignored_tasks": unknown}

    def train(self, body: dict) -> dict:
        """/train (older Label Studio versions) and START_TRAINING: the next round, in the background."""
        self._remember(body)
        return self.rounds.start(self.project, self.ls_url, self.opts.device)

    # -- helpers -------------------------------------------------------------------------------------------

    def _remember(self, body: dict) -> None:
        """Label Studio names its project ('<id>.<timestamp>' or an object) and its own address (/setup)."""
        project = body.get("project")
        if isinstance(project, dict):
            project = project.get("id")
        if isinstance(project, str):
            project = project.split(".")[0]
        try:
            self.project = int(project) if project is not None else self.project
        except (TypeError, ValueError):
            pass
        host = body.get("hostname")
        if self.ls_url is None and isinstance(host, str) and host.startswith(("http://", "https://")):
            try:
                self.ls_url = check_url(host, "the hostname Label Studio sent")
            except LabelStudioError:
                pass

    def _client_for_media(self) -> LabelStudioClient:
        with self._client_lock:
            if self._client is None:
                if self.ls_url is None:
                    raise BackendError(f"the backend does not know Label Studio's address: start it with --url or "
                                       f"{URL_ENV}")
                self._client = LabelStudioClient(self.ls_url, retries=2, timeout=30)
            return self._client

    def _sync(self, ws: Workspace):
        from .labelstudio import LabelStudioSync

        if self.ls_url is None:
            raise BackendError(f"the backend does not know Label Studio's address: start it with --url or {URL_ENV}")
        return LabelStudioSync(ws, self.ls_url)

    def _predict_task(self, ws: Workspace, task: dict, target: BrushTarget, round_: int, checkpoint: str) -> dict:
        from ..data.masks import read_mask
        from .prelabel import newest_pseudo, prelabel

        data = task.get("data") if isinstance(task.get("data"), dict) else {}
        image_id = ws.synced_image(BACKEND, str(task.get("id"))) if task.get("id") is not None else None
        if image_id is None and isinstance(data.get(NAME_KEY), str):
            try:
                image_id = ws.image_by_name(data[NAME_KEY]).id
            except AnnotassistError:
                image_id = None
        if image_id is not None:  # the workspace's own image: the round's stored pseudo-mask
            if newest_pseudo(ws, image_id, round_) is None:
                with self._model_lock:
                    model, device = self._load(ws, checkpoint)
                    prelabel(ws, ws.config, model, device, round_, [image_id])
            mask = read_mask(newest_pseudo(ws, image_id, round_).path, len(self.classes))
            score = ws.scores(round_, "confidence").get(image_id, {}).get("confidence")
            return prediction(mask, self.classes, score, round_, target)
        url = data.get(target.data_key)
        if not isinstance(url, str) or not url:
            raise BackendError(f"the task has no image URL under data.{target.data_key} (the label config's "
                               f"<Image value=\"${target.data_key}\">)")
        content = self._client_for_media().media(url)
        mask, score = self._predict_bytes(ws, content, url, checkpoint)
        return prediction(mask, self.classes, score, round_, target)

    def _predict_bytes(self, ws: Workspace, content: bytes, url: str, checkpoint: str):
        """An image the workspace does not hold, predicted at its own size (as pre-annotation does)."""
        import io

        import numpy as np
        from PIL import Image

        from ..predict import predict_masks

        try:
            with Image.open(io.BytesIO(content)) as im:
                width, height = im.size
                im.convert("RGB").load()
        except Exception as e:  # any decoder failure (not an image, truncated, too large) is this task's error
            raise BackendError(f"the image at {url} cannot be read as an image ({e.__class__.__name__}: "
                               f"{str(e)[:120]})") from None
        with tempfile.TemporaryDirectory(prefix="annotassist-predict-") as tmp:
            path = Path(tmp) / "image"
            path.write_bytes(content)
            record = SimpleNamespace(id=-1, image_path=path, width=width, height=height)
            with self._model_lock:
                model, device = self._load(ws, checkpoint)
                (_, mask, conf), = predict_masks(model, [record], ws.config, device, batch_size=1)
        return mask, float(np.mean(conf, dtype=np.float64))

    def _load(self, ws: Workspace, checkpoint: str):
        """The round's model (loaded once; a newer round replaces it). Called with the model lock held."""
        if self._model is None or self._model[0] != checkpoint:
            import torch

            from ..runtime.checkpoint import load_model

            device = torch.device(self.opts.device or ("cuda" if torch.cuda.is_available() else "cpu"))
            model, _ = load_model(checkpoint, ws.config, device)
            self._model = (checkpoint, model, device)
            self.log(f"predict: loaded {Path(checkpoint).parent.name}'s model ({device})")
        return self._model[1], self._model[2]


def _current_model(ws: Workspace) -> tuple[int | None, str | None]:
    """The newest round with a trained model (the one predictions come from), or (None, None)."""
    trained = [r for r in ws.rounds() if r["checkpoint"]]
    return (trained[-1]["round"], trained[-1]["checkpoint"]) if trained else (None, None)


def _version(round_: int | None) -> str:
    return UNTRAINED if round_ is None else model_version(round_)


# -- HTTP ------------------------------------------------------------------------------------------------------

def create_app(backend: Backend):
    """The FastAPI app around a Backend."""
    import base64
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(_app):
        await run_in_threadpool(backend.start)
        yield
        await run_in_threadpool(backend.close)

    app = FastAPI(title="annotassist ML backend", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)

    def authorized(request: Request) -> bool:
        if backend.opts.auth is None:
            return True
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except ValueError:
            return False
        want_user, want_password = backend.opts.auth
        return scheme.lower() == "basic" and secrets.compare_digest(user.encode(), want_user.encode()) and \
            secrets.compare_digest(password.encode(), want_password.encode())

    def refused() -> JSONResponse:
        return JSONResponse({"error": "wrong or missing basic-auth user and password (the backend's "
                                      f"{AUTH_ENV}; in Label Studio: the model's Basic Auth settings)"},
                            status_code=401, headers={"WWW-Authenticate": 'Basic realm="annotassist"'})

    async def answer(request: Request, handler, needs_auth: bool = True):
        if needs_auth and not authorized(request):
            return refused()
        raw = await request.body()
        try:
            body = json.loads(raw or b"{}")
        except ValueError as e:
            return JSONResponse({"error": f"the body is not JSON ({e})"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"error": f"the body must be a JSON object, got {type(body).__name__}"},
                                status_code=400)
        try:
            return await run_in_threadpool(handler, body)
        except BackendError as e:
            return JSONResponse({"error": str(e)}, status_code=e.status)
        except WebhookError as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        except AnnotassistError as e:
            return JSONResponse({"error": str(e)}, status_code=500)

    @app.get("/health")
    @app.get("/")
    async def health(request: Request):
        if not authorized(request):
            return refused()
        return await run_in_threadpool(backend.health)

    @app.post("/setup")
    async def setup(request: Request):
        return await answer(request, backend.setup)

    @app.post("/predict")
    async def predict(request: Request):
        return await answer(request, backend.predict)

    @app.post("/webhook")
    async def webhook(request: Request):
        ok = authorized(request)  # annotation events need none (see the module doc); START_TRAINING does
        return await answer(request, lambda body: backend.webhook(body, ok), needs_auth=False)

    @app.post("/train")
    async def train(request: Request):
        return await answer(request, backend.train)

    return app


def serve(workspace: str | Path, host: str = "127.0.0.1", port: int = 9090, url: str | None = None,
          device: str | None = None, log=print) -> None:
    """Run the backend until Ctrl-C."""
    import uvicorn

    auth = parse_auth(os.environ.get(AUTH_ENV), AUTH_ENV)
    backend = Backend(ServeOptions(Path(workspace), url, auth, device), log)
    with socket.socket() as s:  # a clear message instead of uvicorn's, before anything starts
        try:
            s.bind((host, port))
        except OSError as e:
            backend.close()
            raise AnnotassistError(f"cannot listen on {host}:{port} ({e.strerror}): another program uses it; pass "
                                   "--port with a free port") from None
    shown = f"http://{'localhost' if host in ('127.0.0.1', '::1') else host}:{port}"
    log(f"annotassist ML backend for {workspace} at {shown}: in Label Studio, open the project's Settings > Model > "
        f"Connect model and give this URL" + (" and the Basic Auth user and password" if auth else ""))
    if not backend.has_key:
        log(f"note: no {ENV_KEY}: submitted annotations are not stored at once and images Label Studio serves "
            "cannot be fetched; set it to your Label Studio token to enable both")
    if auth is None and host not in ("127.0.0.1", "localhost", "::1"):
        log(f"warning: listening on {host} without a password: anyone who reaches it can start training; set "
            f"{AUTH_ENV}=USER:PASSWORD")
    uvicorn.run(create_app(backend), host=host, port=port, log_level="warning")
