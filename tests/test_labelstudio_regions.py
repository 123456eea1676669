"""Region mode (acquire.unit: region) in Label Studio, against the real Label Studio 1.23.2 server: a queued
region query becomes a task whose prediction carries the pre-annotation and a region layer marking the regions
to check; a pull stores only the person's labels inside those regions, as a partial mask version."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from annotassist.annotate.labelstudio import (BACKEND, DESCRIPTION, NOTE_KEY, QUERY_KEY, REGION_EDGE, REGION_INSIDE,
                                              LabelStudioSync, label_config, pending, region_colour)
from annotassist.annotate.lsclient import LabelStudioError
from annotassist.annotate.rle import rle_to_mask
from annotassist.data.masks import read_mask
from annotassist.data.synthetic import CLASSES
from annotassist.effort import correction_effort
from annotassist.importer import import_dataset
from annotassist.workspace import Workspace

from conftest import REPO, make_config
from labelstudio_server import annotations_when_submitted, logged_in_page, magenta_of, screenshot_when
from test_labelstudio import PALETTE, RUN, annotate, brushes, project_tasks, sync_for, task_id

QUERIED = [0, 3]  # of the four quadrants: top left and bottom right


@pytest.fixture
def ws(ls, synth_src, request, tmp_path):
    data = ls.document_root / f"data-{RUN}-{request.node.name}"[:80]
    shutil.copytree(synth_src, data)
    w = Workspace.create(tmp_path / f"ws{RUN}", make_config(["acquire.unit=region"], initial_labeled=2,
                                                              palette=PALETTE), data)
    assert import_dataset(w, progress=False).problems == []
    yield w
    w.close()


def quadrants(h: int, w: int) -> np.ndarray:
    seg = np.zeros((h, w), np.int32)
    seg[:, w // 2:] += 1
    seg[h // 2:] += 2
    return seg


def queue_regions(ws, n: int = 1, round_: int = 0, regions=QUERIED, pseudo: bool = True) -> list[int]:
    """Queue n unlabeled images in region mode: quadrant superpixels, a pseudo mask (the truth with a wrong
    12x12 box in the top left corner), a region query for `regions`."""
    ids = [r.id for r in ws.images("pool", state="unlabeled")[:n]]
    for i in ids:
        rec = ws.image(i)
        ws.set_superpixels(i, quadrants(rec.height, rec.width))
        if pseudo:
            ws.add_mask(i, pseudo_mask(ws, i), "pseudo", round_, source="test model", mark_labeled=False)
    ws.record_region_selection(round_, {i: list(regions) for i in ids}, {i: 1.0 for i in ids}, "dssn")
    return ids


def pseudo_mask(ws, i: int) -> np.ndarray:
    m = ws.read_oracle(i).copy()
    m[:12, :12] = 2
    return m


def region_results(task_or_pred: dict) -> list[dict]:
    return [r for r in task_or_pred["result"] if r["from_name"] == "regions"]


def test_region_task_push_and_pull(ws, ls, api, request):
    (i,) = queue_regions(ws)
    (plain,) = [r.id for r in ws.images("pool", state="unlabeled")[:1]]  # an ordinary whole-image task beside it
    ws.add_mask(plain, pseudo_mask(ws, plain), "pseudo", 0, mark_labeled=False)
    ws.set_state([plain], "queued")
    sync = sync_for(ws, ls, request)
    report = sync.push()
    assert sorted(report.created) == sorted([ws.image(i).name, ws.image(plain).name])
    assert ws.image(i).state == "in_review" and pending(ws) == 2

    # the project was made with the region layer's control; the task carries the query and a note
    config = api.get(f"/api/projects/{report.project_id}").json()["label_config"]
    r, g, b = region_colour(PALETTE)
    assert 'name="regions"' in config and f'background="#{r:02x}{g:02x}{b:02x}"' in config
    task = api.get(f"/api/tasks/{task_id(ws, i)}").json()
    assert task["data"][QUERY_KEY] == 0 and "2 regions" in task["data"][NOTE_KEY]
    (pred,) = task["predictions"]
    (layer,) = region_results(pred)
    assert layer["value"]["brushlabels"] == ["check"] and layer["to_name"] == "image"
    inside = ws.region_pixels(i, QUERIED)
    alpha = rle_to_mask(layer["value"]["rle"], *inside.shape)
    assert np.array_equal(alpha > 0, inside)  # exactly the queried regions' pixels
    assert set(np.unique(alpha[inside])) == {REGION_INSIDE, REGION_EDGE}  # outlined, faint inside
    h, w = inside.shape
    assert (alpha[:h // 2, w // 2 - 2:w // 2] == REGION_EDGE).all()  # the top left quadrant's right edge
    pseudo = pseudo_mask(ws, i)
    for res in pred["result"]:
        if res["from_name"] == "tag":
            cls = CLASSES.index(res["value"]["brushlabels"][0])
            assert np.array_equal(rle_to_mask(res["value"]["rle"], h, w) == 255, pseudo == cls)
    # the ordinary task beside it: exactly as in image mode (no region layer, no query)
    other = api.get(f"/api/tasks/{task_id(ws, plain)}").json()
    assert QUERY_KEY not in other["data"] and not region_results(other["predictions"][0])

    # a person paints classes inside AND outside the regions (the region layer comes along from the prediction)
    truth = ws.read_oracle(i)
    painted = truth.copy()
    painted[:, :] = np.where(inside, truth, 4)  # outside: a class the person had no business painting
    painted[40:44, 40:44] = 3  # and a correction inside the top left region
    annotate(api, task_id(ws, i), painted, extra=region_results(pred))
    pulled = sync.pull()
    (change,) = pulled.pulled
    assert change.name == ws.image(i).name and change.regions_reviewed == 2
    assert change.labeled_pixels == int(inside.sum()) and change.outside_pixels == int((~inside).sum())
    effort = correction_effort(pseudo, painted, inside)
    assert (change.changed_pixels, change.changed_regions) == (effort.pixels, effort.regions)
    (partial,) = ws.masks(i, "partial")
    stored = read_mask(partial.path, len(CLASSES))
    assert np.array_equal(stored[inside], painted[inside]) and (stored[~inside] == 255).all()
    assert (partial.changed_pixels, partial.reviewed_pixels) == (effort.pixels, int(inside.sum()))
    assert partial.source.startswith(f"labelstudio task {task_id(ws, i)} annotation")
    assert ws.open_region_query(i) is None and ws.image(i).state == "unlabeled"
    assert ws.masks(i, "human") == [] and ws.label_mask(i) is None
    assert pulled.waiting == [ws.image(plain).name] and pending(ws) == 1

    # pulling again (e.g. after a kill right after the save): unchanged, stored once; the webhook path too
    again = sync.pull()
    assert again.pulled == [] and again.problems == [] and again.unchanged == 1
    hook = sync.pull_tasks([task_id(ws, i)])
    assert hook.pulled == [] and hook.unknown == [] and hook.unchanged == 1
    assert len(ws.masks(i, "partial")) == 1
    # an edit made after the regions were stored is reported, never stored over a closed query
    (ann,) = api.get(f"/api/tasks/{task_id(ws, i)}").json()["annotations"]
    api.patch(f"/api/annotations/{ann['id']}", json={"result": brushes(truth) + region_results(pred)}
              ).raise_for_status()
    edited = sync.pull_tasks([task_id(ws, i)])
    assert edited.pulled == [] and len(edited.problems) == 1 and "not stored" in edited.problems[0]
    assert len(ws.masks(i, "partial")) == 1


def test_annotation_without_the_region_layer_is_skipped(ws, ls, api, request):
    ids = queue_regions(ws, 2)
    sync = sync_for(ws, ls, request)
    sync.push()
    truth = [ws.read_oracle(i) for i in ids]
    annotate(api, task_id(ws, ids[0]), truth[0])  # the person deleted the region layer (or made it elsewhere)
    annotate(api, task_id(ws, ids[1]), truth[1], cancelled=True)
    report = sync.pull()
    assert report.pulled == [] and report.skipped == [ws.image(ids[1]).name]
    (msg,) = report.problems
    assert msg.startswith(ws.image(ids[0]).name) and "has no region layer" in msg and "skipped" in msg
    assert [ws.image(i).state for i in ids] == ["in_review"] * 2
    assert all(ws.masks(i, "partial") == [] and ws.open_region_query(i) is not None for i in ids)

    # restored in Label Studio (the layer back from the prediction): the next pull stores it
    pred = api.get(f"/api/tasks/{task_id(ws, ids[0])}").json()["predictions"][0]
    (ann,) = api.get(f"/api/tasks/{task_id(ws, ids[0])}").json()["annotations"]
    api.patch(f"/api/annotations/{ann['id']}", json={"result": brushes(truth[0]) + region_results(pred)}
              ).raise_for_status()
    assert [c.name for c in sync.pull().pulled] == [ws.image(ids[0]).name]
    assert ws.image(ids[0]).state == "unlabeled" and len(ws.masks(ids[0], "partial")) == 1


def test_cli_pull_of_region_tasks_and_a_deleted_one(ws, ls, api, monkeypatch, capsys):
    """`annotassist pull` says what a region task stored (regions, pixels inside, paint outside not stored); a
    task deleted in Label Studio hands its image back: unlabeled, its regions not asked any more."""
    from annotassist.cli import main

    answered, deleted = queue_regions(ws, 2)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", ls.token)
    monkeypatch.setenv("LOCAL_FILES_DOCUMENT_ROOT", str(ls.document_root))
    assert main(["push", "--workspace", str(ws.root), "--to", "labelstudio", "--url", ls.url]) == 0
    capsys.readouterr()
    pred = api.get(f"/api/tasks/{task_id(ws, answered)}").json()["predictions"][0]
    painted = ws.read_oracle(answered).copy()
    painted[~ws.region_pixels(answered, QUERIED)] = 4  # paint outside the regions: reported, not stored
    annotate(api, task_id(ws, answered), painted, extra=region_results(pred))
    api.delete(f"/api/tasks/{task_id(ws, deleted)}").raise_for_status()
    assert main(["pull", "--workspace", str(ws.root), "--url", ls.url]) == 0
    out = capsys.readouterr().out
    a, d = ws.image(answered), ws.image(deleted)
    assert f"{a.name}: task" in out and "2 regions reviewed" in out and "not stored" in out
    assert "1 tasks deleted in Label Studio" in out and d.name in out
    assert a.state == d.state == "unlabeled" and len(ws.masks(answered, "partial")) == 1
    assert ws.open_region_query(deleted) is None and ws.masks(deleted, "partial") == []
    assert ws.reviewed_regions(deleted) == set() and ws.reviewed_regions(answered) == set(QUERIED)


def test_a_region_task_without_pseudo_mask_and_a_later_query_gets_its_own_task(ws, ls, api, request):
    (i,) = queue_regions(ws, pseudo=False)
    sync = sync_for(ws, ls, request)
    first = sync.push()
    assert first.without_prediction == [ws.image(i).name]
    task = api.get(f"/api/tasks/{task_id(ws, i)}").json()
    (pred,) = task["predictions"]
    assert [r["from_name"] for r in pred["result"]] == ["regions"]  # the layer alone: nothing to pre-annotate
    assert sync.push().unchanged == [ws.image(i).name]
    annotate(api, task_id(ws, i), ws.read_oracle(i), extra=region_results(pred))
    (change,) = sync.pull().pulled
    assert change.changed_pixels is None and ws.image(i).state == "unlabeled"

    # round 1 asks about the other two regions of the same image: a new task, the answered one stays
    old = task_id(ws, i)
    ws.record_region_selection(1, {i: [1, 2]}, {i: 1.0}, "dssn")
    assert sync.push().without_prediction == [ws.image(i).name] and task_id(ws, i) != old
    assert len(project_tasks(api, first.project_id)) == 2
    new = api.get(f"/api/tasks/{task_id(ws, i)}").json()
    (layer,) = region_results(new["predictions"][0])
    alpha = rle_to_mask(layer["value"]["rle"], ws.image(i).height, ws.image(i).width)
    assert np.array_equal(alpha > 0, ws.region_pixels(i, [1, 2])) and new["data"][QUERY_KEY] == 1
    annotate(api, task_id(ws, i), ws.read_oracle(i), extra=region_results(new["predictions"][0]))
    sync.pull()
    stored = read_mask(ws.partial_mask(i).path, len(CLASSES))
    assert np.array_equal(stored, ws.read_oracle(i))  # both queries' regions: the whole image
    assert len(ws.masks(i, "partial")) == 2


def test_projects_without_the_region_control(ws, ls, api, request):
    """A project an older annotassist made gets the control added; a user's own project is refused, clearly,
    before anything is pushed."""
    title = f"t{RUN} {request.node.name}"[:50]
    old = api.post("/api/projects", json={"title": title, "description": f"{DESCRIPTION} {ws.root}",
                                          "label_config": label_config(list(CLASSES), PALETTE)}).json()
    (i,) = queue_regions(ws)
    assert sync_for(ws, ls, request).push().created == [ws.image(i).name]
    config = api.get(f"/api/projects/{old['id']}").json()["label_config"]
    assert config.count("<BrushLabels") == 2 and 'name="regions"' in config
    assert region_results(api.get(f"/api/tasks/{task_id(ws, i)}").json()["predictions"][0])

    mine = api.post("/api/projects", json={"title": f"u{RUN} own", "label_config": label_config(
        list(CLASSES), PALETTE)}).json()
    (j,) = queue_regions(ws)
    sync = LabelStudioSync(ws, ls.url, ls.token, project=mine["id"], document_root=ls.document_root)
    with pytest.raises(LabelStudioError, match=r"has no region layer.*Add <BrushLabels name=\"regions\".*"
                                               r"nothing was pushed"):
        sync.push(image_ids=[j])
    assert ws.image(j).state == "queued" and ws.sync_id(j, BACKEND) is None
    assert project_tasks(api, mine["id"]) == []


def test_browser_shows_the_regions_to_check(ws, ls, api, request, tmp_path):
    """Chromium opens a region task in Label Studio's labeling UI: the pre-annotation and the region layer's
    outlines are both visible; submitted as is, the annotation keeps the layer and pulls as a partial."""
    (i,) = queue_regions(ws, regions=[3])
    pseudo = ws.read_oracle(i).copy()
    pseudo[20:76, 20:76] = 1  # a large 'disc', magenta in this palette, across all four quadrants
    ws.add_mask(i, pseudo, "pseudo", 0, mark_labeled=False)
    sync = sync_for(ws, ls, request)
    report = sync.push()
    tid = task_id(ws, i)
    shot = tmp_path / "labelstudio-regions.png"
    with logged_in_page(ls) as page:
        page.goto(f"{ls.url}/projects/{report.project_id}/data?task={tid}")
        page.wait_for_selector("canvas", timeout=60000)
        area = page.locator("canvas").first.bounding_box()
        x0, y0 = int(area["x"]), int(area["y"])
        x1, y1 = x0 + int(area["width"]), y0 + int(area["height"])

        def green_of(px):
            image = px[y0:y1, x0:x1]
            return image[..., 1] - np.maximum(image[..., 0], image[..., 2]) > 40

        def painted(px):  # both brush layers: the pre-annotation and the region's outline
            g = green_of(px)
            return magenta_of(px).sum() > 20000 and g[g.shape[0] // 2:, g.shape[1] // 2:].sum() > 5000

        px = screenshot_when(page, shot, painted)
        page.get_by_role("button", name="Submit").click()
        (ann,) = annotations_when_submitted(api, tid)
    readme_copy = REPO / "docs" / "img" / "labelstudio-regions.png"
    if not readme_copy.exists() or os.environ.get("ANNOTASSIST_UPDATE_SCREENSHOTS"):
        shutil.copyfile(shot, readme_copy)
    assert magenta_of(px).sum() > 20000, f"the pre-annotation is not visible in {shot}"
    # the region layer (green for this palette; Label Studio draws brushes translucent): an outline around the
    # bottom right quadrant of the image, the queried region, and nowhere else on it
    assert region_colour(PALETTE) == (0, 255, 0)
    green = green_of(px)
    h, w = green.shape
    assert green[h // 2:, w // 2:].sum() > 5000, f"the region layer's outline is not visible in {shot}"
    assert green[:h // 2].sum() + green[:, :w // 2].sum() < 1000, f"the region layer is off the region in {shot}"

    assert region_results(ann), "the browser dropped the region layer on submit"
    (change,) = sync.pull().pulled
    assert change.name == ws.image(i).name and ws.image(i).state == "unlabeled"
    inside = ws.region_pixels(i, [3])
    stored = read_mask(ws.partial_mask(i).path, len(CLASSES))
    assert np.array_equal(stored[inside], pseudo[inside]) and (stored[~inside] == 255).all()
