"""`annotassist serve` as Label Studio's ML backend, against the real Label Studio 1.23.2 server (one per session,
the `ls` fixture). Label Studio itself connects the backend (/api/ml: it calls /health and /setup), asks it for
predictions and stores them, sends it its webhooks and "Start training"; the brushes it stores are decoded with
the SDK's own decoder, not ours.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from label_studio_sdk.converter.brush import decode_rle, mask2rle
from PIL import Image

from annotassist.annotate.labelstudio import BACKEND, LabelStudioSync
from annotassist.data.masks import read_mask
from annotassist.data.synthetic import CLASSES
from annotassist.importer import import_dataset
from annotassist.rounds import train_round
from annotassist.workspace import Workspace

import labelstudio_server
from labelstudio_server import logged_in_page, magenta_of, pixels_of, screenshot_when
from conftest import REPO, make_config

PALETTE = [[40, 40, 40], [255, 0, 255], [0, 255, 255], [255, 255, 0], [0, 0, 255], [255, 128, 0]]
RUN = os.getpid()
# a tiny model: round 0 trains in seconds on 2 cores
TINY = ["model.backbone=efficientnet_lite0", "model.weights=none", "train.max_iters=4", "train.crop_size=32",
        "train.image_scale=0.34", "train.batch_size=2", "train.num_workers=0", "acquire.num_workers=0",
        "acquire.batch_size=4", "train.eval_every=0", "acquire.budget=2", "acquire.strategy=entropy"]


@pytest.fixture(scope="module")
def trained(ls, synth_src, tmp_path_factory) -> Path:
    """A workspace (2 labeled images) whose round 0 is trained; tests work on copies of it."""
    data = ls.document_root / f"data-{RUN}-backend"
    shutil.copytree(synth_src, data)
    root = tmp_path_factory.mktemp("backend") / "base"
    with Workspace.create(root, make_config(TINY, initial_labeled=2, palette=PALETTE), data) as ws:
        assert import_dataset(ws, progress=False).problems == []
        train_round(ws, device="cpu", progress=False)
    return root


@pytest.fixture
def ws(trained, tmp_path, request):
    path = tmp_path / f"ws{RUN}-{request.node.name}"[:40]
    shutil.copytree(trained, path)
    w = Workspace(path)
    yield w
    w.close()


class Served:
    """`annotassist serve` in its own process, as a person starts it."""

    def __init__(self, ws_path: Path, ls, log: Path, auth: str | None = None, port: int | None = None):
        self.ws_path, self.ls, self.log_path = ws_path, ls, log
        self.port = port or labelstudio_server.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.auth = auth
        self.start()

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "LABEL_STUDIO_API_KEY": self.ls.token}
        env.pop("ANNOTASSIST_AUTH", None)
        if self.auth:
            env["ANNOTASSIST_AUTH"] = self.auth
        self._log = open(self.log_path, "a")
        self.proc = subprocess.Popen([sys.executable, "-m", "annotassist", "serve", "--workspace", str(self.ws_path),
                                      "--port", str(self.port), "--url", self.ls.url, "--device", "cpu"],
                                     cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            assert self.proc.poll() is None, self.output()
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code in (200, 401):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"the backend did not answer within 60 s:\n{self.output()}")

    def output(self) -> str:
        return self.log_path.read_text()

    def health(self) -> dict:
        return httpx.get(self.url + "/health", auth=self._auth(), timeout=5).json()

    def post(self, route: str, body=None, content: bytes | None = None, auth=True) -> httpx.Response:
        return httpx.post(self.url + route, json=body if content is None else None, content=content,
                          auth=self._auth() if auth else None, timeout=120)

    def _auth(self):
        return tuple(self.auth.split(":", 1)) if self.auth else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture
def served(ws, ls, tmp_path):
    made = []

    def start(**kw) -> Served:
        s = Served(ws.root, ls, tmp_path / "serve.log", **kw)
        made.append(s)
        return s

    yield start
    for s in made:
        s.stop()


def connect(api, project: int, backend: Served, **extra) -> httpx.Response:
    """Settings > Model > Connect model, through Label Studio's API (it checks /health and /setup itself)."""
    return api.post("/api/ml", json={"url": backend.url, "project": project, "title": "annotassist",
                                     "is_interactive": False, **extra})


def layers_to_mask(prediction: dict, height: int, width: int) -> np.ndarray:
    """A stored prediction's brush layers as one class-id mask, decoded with the SDK's reference decoder."""
    out = np.full((height, width), 255, np.uint8)
    for r in prediction["result"]:
        assert (r["original_height"], r["original_width"], r["type"]) == (height, width, "brushlabels")
        alpha = decode_rle(r["value"]["rle"]).reshape(height, width, 4)[..., 3]
        assert set(np.unique(alpha)) <= {0, 255}
        out[alpha == 255] = CLASSES.index(r["value"]["brushlabels"][0])
    return out


def wait_until(condition, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {timeout} s")


def push_bare(ws, ls, n: int, title: str, pseudo: dict | None = None) -> tuple[LabelStudioSync, list[int]]:
    """Queue n unlabeled images (some with a stored round-0 pseudo-mask) and push them as annotassist does."""
    ids = [r.id for r in ws.images("pool", state="unlabeled")[:n]]
    for i, mask in (pseudo or {}).items():
        ws.add_mask(i, mask, "pseudo", 0, source="test", mark_labeled=False)
    ws.set_state(ids, "queued")
    sync = LabelStudioSync(ws, ls.url, ls.token, title=title, document_root=ls.document_root)
    sync.push()
    return sync, ids


def test_label_studio_connects_the_backend_and_stores_its_predictions(ws, ls, api, served, tmp_path):
    """Connect through /api/ml, then Label Studio asks for predictions of three tasks in one request: a pushed
    image with a stored pseudo-mask, a pushed image without one (made and stored now), and an image the workspace
    does not hold (fetched through Label Studio, predicted at its own 72x54 size); a fourth task's image cannot
    be fetched: that task gets an error, the others are stored."""
    held = [r.id for r in ws.images("pool", state="unlabeled")[:2]]
    stored = ws.read_oracle(held[0]).copy()
    stored[10:40, 10:40] = 3
    ws.write_scores(0, [(held[0], "confidence", 0.375)])
    sync, ids = push_bare(ws, ls, 2, f"b{RUN} predictions", {held[0]: stored})
    assert ids == held
    project = sync.project_id()
    tasks = [int(ws.sync_id(i, BACKEND)) for i in ids]
    api.delete(f"/api/predictions/{api.get(f'/api/tasks/{tasks[0]}').json()['predictions'][0]['id']}")
    # an image Label Studio serves from another folder, of another size, and one that is not there
    foreign_dir = ls.document_root / f"foreign-{RUN}"
    foreign_dir.mkdir()
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 255, (54, 72, 3), dtype=np.uint8)).save(foreign_dir / "street.png")
    api.post("/api/storages/localfiles", json={"project": project, "path": str(foreign_dir),
                                               "use_blob_urls": True}).raise_for_status()
    rel = foreign_dir.relative_to(ls.document_root).as_posix()
    imported = api.post(f"/api/projects/{project}/import", params={"return_task_ids": "true"}, json=[
        {"image": f"/data/local-files/?d={rel}/street.png"},
        {"image": f"/data/local-files/?d={rel}/gone.png"}]).json()["task_ids"]

    backend = served()
    r = connect(api, project, backend)
    assert r.status_code == 201, r.text
    assert r.json()["state"] == "CO" and r.json()["model_version"] == "round-0"
    r = api.post("/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project},
                 json={"selectedItems": {"all": True, "excluded": []}})
    assert r.status_code == 200, r.text

    def prediction_of(task_id):
        (p,) = [p for p in api.get(f"/api/tasks/{task_id}").json()["predictions"] if p["model_version"] == "round-0"]
        return p

    h, w = stored.shape
    first = prediction_of(tasks[0])
    assert np.array_equal(layers_to_mask(first, h, w), stored) and first["score"] == pytest.approx(0.375)
    made = ws.masks(ids[1], "pseudo")
    assert len(made) == 1 and made[0].round == 0 and made[0].source == "model round 0"
    second = prediction_of(tasks[1])
    assert np.array_equal(layers_to_mask(second, h, w), read_mask(made[0].path, len(CLASSES)))
    assert second["score"] == pytest.approx(ws.scores(0, "confidence")[ids[1]]["confidence"])

    import torch
    from types import SimpleNamespace

    from annotassist.predict import predict_masks
    from annotassist.runtime.checkpoint import load_model

    model, _ = load_model(ws.round_info(0)["checkpoint"], ws.config, torch.device("cpu"))
    rec = SimpleNamespace(id=0, image_path=foreign_dir / "street.png", width=72, height=54)
    ((_, expect, conf),) = list(predict_masks(model, [rec], ws.config, torch.device("cpu"), batch_size=1))
    third = prediction_of(imported[0])
    assert np.array_equal(layers_to_mask(third, 54, 72), expect)
    assert third["score"] == pytest.approx(float(np.mean(conf, dtype=np.float64)), abs=1e-6)
    assert api.get(f"/api/tasks/{imported[1]}").json()["predictions"] == []
    # the backend's own answer for that task: the reason, and no result (so Label Studio stores nothing)
    task = api.get(f"/api/tasks/{imported[1]}").json()
    answer = backend.post("/predict", {"tasks": [task], "label_config": api.get(f"/api/projects/{project}").json()
                                       ["label_config"], "project": f"{project}.1"}).json()
    (result,) = answer["results"]
    assert "result" not in result and "gone.png" in result["error"] and "HTTP 404" in result["error"]
    assert "gone.png" in backend.output()


def test_a_submitted_annotation_lands_in_the_pool_through_the_webhook(ws, ls, api, served):
    """No pull: Label Studio's webhook (made when the backend was connected) brings each submission, edit and
    deletion into the pool within seconds."""
    sync, ids = push_bare(ws, ls, 2, f"b{RUN} webhook")
    backend = served()
    assert connect(api, sync.project_id(), backend).status_code == 201
    task = int(ws.sync_id(ids[0], BACKEND))
    truth = ws.read_oracle(ids[0])
    h, w = truth.shape
    brushes = [{"from_name": "tag", "to_name": "image", "type": "brushlabels", "original_width": w,
                "original_height": h, "image_rotation": 0,
                "value": {"format": "rle", "rle": mask2rle((truth == c).astype(np.uint8) * 255),
                          "brushlabels": [CLASSES[c]]}} for c in np.unique(truth)]
    ann = api.post(f"/api/tasks/{task}/annotations", json={"result": brushes}).json()
    # nothing else pulls here, so landing at all proves the webhook; how fast is a benchmark's business, and a
    # loaded 2-core CI machine took 5.1 s once
    wait_until(lambda: ws.image(ids[0]).state == "labeled", 60, "the webhook's pull")
    human = ws.label_mask(ids[0])
    assert human.kind == "human" and human.source.startswith(f"labelstudio task {task} annotation {ann['id']} ")
    assert np.array_equal(ws.read_label(ids[0]), truth)
    # an edit becomes a second version, a deleted annotation sends the image back to review
    fixed = truth.copy()
    fixed[:20, :20] = 4
    brushes2 = [{**b, "value": {**b["value"], "rle": mask2rle((fixed == CLASSES.index(b["value"]["brushlabels"][0]))
                                                              .astype(np.uint8) * 255)}} for b in brushes]
    brushes2 += [{**brushes[0], "value": {"format": "rle", "rle": mask2rle((fixed == 4).astype(np.uint8) * 255),
                                          "brushlabels": [CLASSES[4]]}}] if 4 not in np.unique(truth) else []
    api.patch(f"/api/annotations/{ann['id']}", json={"result": brushes2}).raise_for_status()
    wait_until(lambda: len(ws.masks(ids[0], "human")) == 2, 10, "the edit's pull")
    assert np.array_equal(ws.read_label(ids[0]), fixed)
    api.delete(f"/api/annotations/{ann['id']}").raise_for_status()
    wait_until(lambda: ws.image(ids[0]).state == "in_review", 10, "the deletion")
    assert ws.image(ids[1]).state == "in_review" and ws.masks(ids[1], "human") == []
    assert "stored as a human mask" in backend.output()


def test_start_training_runs_one_round_at_a_time_and_continues_after_a_kill(ws, ls, api, served):
    """'Start training' starts round 1 in the background; asking again while it runs is answered, not queued;
    the server SIGKILLed mid-round stops the round at a checkpoint, and the next start continues it: one round 1,
    trained to the end, its queue pushed with round-1 predictions."""
    iters = 16  # enough steps to kill the server in the middle, few enough to finish quickly
    ws.apply_config(overrides=[f"train.max_iters={iters}", "train.log_every=1"], why="test: a round to interrupt")
    sync, ids = push_bare(ws, ls, 2, f"b{RUN} training")
    project = sync.project_id()
    backend = served()
    ml = connect(api, project, backend).json()
    assert api.post(f"/api/ml/{ml['id']}/train").status_code == 200
    status = wait_until(lambda: backend.health()["training"], 10, "the round's start")
    assert status["state"] == "running" and status["round"] == 1
    again = backend.post("/webhook", {"action": "START_TRAINING", "project": {"id": project}})
    assert again.status_code == 200 and again.json()["status"] == "already training"
    assert backend.output().count("round 1 started") == 1
    ckpt = ws.round_dir(1) / "checkpoint.pt"
    wait_until(lambda: ckpt.is_file() and ws.round_info(1) and _steps(ws) >= 3, 120, "round 1's first checkpoints")
    child = status["pid"]
    backend.proc.kill()  # SIGKILL: no clean shutdown of the server
    backend.proc.wait()
    backend.start()  # the same command again, at once (as a supervisor restarts it)
    # it answers only after the killed server's round stopped at its checkpoint (never two trainings at once)
    assert not _alive(child)
    assert ws.round_info(1)["status"] == "training"
    stopped_at = _steps(ws)
    assert 3 <= stopped_at < iters
    wait_until(lambda: (backend.health()["training"] or {}).get("state") == "finished", 180, "round 1")
    out = backend.output()
    assert "continuing round 1's training from its last checkpoint" in out and "round 1 continues" in out
    assert [r["round"] for r in ws.rounds()] == [0, 1] and ws.round_info(1)["status"] != "training"
    assert ws.round_info(1)["metrics"]["steps"] == iters
    assert ws.step_status(0, "pull") == "done" and ws.step_status(1, "push") == "done"
    assert api.get(f"/api/projects/{project}").json()["model_version"] == "round-1"
    pushed = [i for i, *_ in ws.selections(1)]
    assert pushed and all(ws.image(i).state == "in_review" for i in pushed)
    for i in pushed:
        preds = api.get(f"/api/tasks/{ws.sync_id(i, BACKEND)}").json()["predictions"]
        assert [p["model_version"] for p in preds] == ["round-1"]
    assert backend.health()["model_version"] == "round-1"


def _steps(ws) -> int:
    log = ws.round_dir(1) / "log.jsonl"
    if not log.is_file():
        return 0
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
    return max((x.get("step", 0) for x in lines), default=0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (its parent, the killed server, is gone; init reaps it) counts as stopped
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_bad_input_is_refused_with_the_reason(ws, ls, api, served):
    backend = served(auth="annotator:right-password")
    project = api.post("/api/projects", json={"title": f"b{RUN} bad", "label_config": (
        '<View><Image name="image" value="$image"/><BrushLabels name="tag" toName="image">'
        + "".join(f'<Label value="{c}"/>' for c in CLASSES) + "</BrushLabels></View>")}).json()["id"]

    # a wrong basic-auth password: Label Studio says so, and so does the backend
    r = connect(api, project, backend, auth_method="BASIC_AUTH", basic_auth_user="annotator",
                basic_auth_pass="wrong-password")
    assert r.status_code == 400 and "authentication" in r.text
    assert httpx.get(backend.url + "/health").status_code == 401
    assert httpx.post(backend.url + "/predict", json={"tasks": []}, auth=("annotator", "wrong")).status_code == 401
    r = connect(api, project, backend, auth_method="BASIC_AUTH", basic_auth_user="annotator",
                basic_auth_pass="right-password")
    assert r.status_code == 201 and r.json()["state"] == "CO"

    # label configs the backend cannot serve: Label Studio refuses the connection; /setup says why
    configs = {"no BrushLabels control": '<View><Image name="image" value="$image"/><Choices name="c" '
                                         'toName="image"><Choice value="car"/></Choices></View>',
               "not classes of the workspace: cat, dog": (
                   '<View><Image name="image" value="$image"/><BrushLabels name="tag" toName="image">'
                   '<Label value="disc"/><Label value="cat"/><Label value="dog"/></BrushLabels></View>')}
    for reason, config in configs.items():
        other = api.post("/api/projects", json={"title": f"b{RUN} {reason[:20]}", "label_config": config}).json()
        r = connect(api, other["id"], backend, auth_method="BASIC_AUTH", basic_auth_user="annotator",
                    basic_auth_pass="right-password")
        assert r.status_code == 400 and "valid ML backend" in r.text, r.text
        r = backend.post("/setup", {"project": f"{other['id']}.1", "schema": config})
        assert r.status_code == 422 and reason in r.json()["error"], r.text

    # webhooks: malformed bodies, a task the workspace never pushed, training without the password
    assert backend.post("/webhook", content=b"{not json", auth=False).status_code == 400
    assert backend.post("/webhook", content=b"[1, 2]", auth=False).status_code == 400
    r = backend.post("/webhook", {"task": {"id": 1}}, auth=False)
    assert r.status_code == 400 and "action" in r.json()["error"]
    r = backend.post("/webhook", {"action": "ANNOTATION_CREATED", "annotation": "x"}, auth=False)
    assert r.status_code == 400
    r = backend.post("/webhook", {"action": "ANNOTATION_CREATED", "task": {"id": 987654},
                                  "annotation": {"id": 5, "task": 987654}}, auth=False)
    assert r.status_code == 200 and r.json()["status"] == "ignored" and "never pushed" in r.json()["reason"]
    r = backend.post("/webhook", {"action": "START_TRAINING", "project": {"id": project}}, auth=False)
    assert r.status_code == 401 and backend.health()["training"] is None
    assert backend.post("/predict", {"tasks": "none"}).status_code == 400
    assert [r["round"] for r in ws.rounds()] == [0] and ws.count("pool", "labeled") == 2


def test_browser_task_pre_annotated_by_the_backend(ws, ls, api, served, tmp_path):
    """Chromium opens a task that has no prediction: Label Studio asks the backend, shows its brush (the stored
    pseudo-mask's magenta 'disc'), the person paints and submits, and the webhook stores it without a pull."""

    i = ws.images("pool", state="unlabeled")[0].id
    pseudo = ws.read_oracle(i).copy()
    pseudo[20:76, 20:76] = 1  # a large 'disc', magenta in this palette
    # (the README's screenshot shows the title; a reused server, ANNOTASSIST_LS_SERVER, needs a new one per run)
    title = "annotassist ML backend" + (f" {RUN}" if os.environ.get("ANNOTASSIST_LS_SERVER") else "")
    sync, _ = push_bare(ws, ls, 1, title, {i: pseudo})
    task = int(ws.sync_id(i, BACKEND))
    for p in api.get(f"/api/tasks/{task}").json()["predictions"]:
        api.delete(f"/api/predictions/{p['id']}").raise_for_status()  # the backend is to provide it
    backend = served()
    assert connect(api, sync.project_id(), backend).status_code == 201
    shot = tmp_path / "labelstudio-ml-backend.png"
    with logged_in_page(ls) as page:
        page.goto(f"{ls.url}/projects/{sync.project_id()}/data?task={task}")
        page.wait_for_selector("canvas", timeout=60000)
        screenshot_when(page, shot, lambda px: magenta_of(px).sum() > 20000)
        page.wait_for_timeout(500)  # and once more after it settled, for the README's copy
        page.screenshot(path=str(shot))
        page.get_by_text("box", exact=True).first.click()
        area = page.locator("canvas").first.bounding_box()
        scale = area["height"] / pseudo.shape[0]
        y = area["y"] + 84.5 * scale
        page.mouse.move(area["x"] + 8 * scale, y)
        page.mouse.down()
        page.mouse.move(area["x"] + 70 * scale, y, steps=25)
        page.mouse.up()
        page.get_by_role("button", name="Submit").click()
        wait_until(lambda: ws.image(i).state == "labeled", 15, "the browser's submission reaching the pool")
    (pred,) = api.get(f"/api/tasks/{task}").json()["predictions"]
    assert pred["model_version"] == "round-0" and np.array_equal(layers_to_mask(pred, *pseudo.shape), pseudo)
    readme_copy = REPO / "docs" / "img" / "labelstudio-ml-backend.png"
    if not readme_copy.exists() or os.environ.get("ANNOTASSIST_UPDATE_SCREENSHOTS") == "1":
        readme_copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, readme_copy)
    assert _magenta(shot) > 20000, f"the backend's magenta brush is not visible in {shot}"
    label = ws.read_label(i)
    assert (label[78:92, 12:66] == CLASSES.index("box")).sum(axis=0).min() >= 2
    assert (label[22:74, 22:74] == 1).all()


def _magenta(shot: Path) -> int:
    """Pixels of the 'disc' brush's magenta in a screenshot."""
    return int(magenta_of(pixels_of(shot)).sum())
