"""The correction editor, for real: in-process Gradio server, gradio_client sessions, and Debian's chromium
driven by Playwright drawing a stroke on the canvas."""
from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotassist.ui.layers import LAYER_ALPHA

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pre_annotation(ws, image_id: int) -> np.ndarray:
    """The truth with a wrong 12x12 corner, as a model's pseudo-mask would be partly wrong."""
    m = ws.read_oracle(image_id).copy()
    m[:12, :12] = 1
    return m


@pytest.fixture
def queued_ws(synth_ws):
    """synth_ws with 3 images selected in round 0, each with a pseudo-mask and a region-relevance map."""
    ws = synth_ws
    r = ws.start_round("dssn")
    ids = [rec.id for rec in ws.images("pool", state="unlabeled")][:3]
    rng = np.random.default_rng(0)
    for i in ids:
        ws.add_mask(i, pre_annotation(ws, i), "pseudo", r, source="model", mark_labeled=False)
        ws.write_scores(r, [(i, "region_relevance", 0.5)], region_maps=[(i, "region_relevance", rng.random((4, 4)))])
    # picked in reverse id order, so the editor's order (rank) differs from id order
    ws.record_selection(r, [(i, 1.0 - k / 10) for k, i in enumerate(reversed(ids))], "dssn")
    ws.ids = list(reversed(ids))
    return ws


@pytest.fixture
def server(queued_ws):
    from annotassist.ui.editor import build_app

    app = build_app(queued_ws.root)
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/", queued_ws
    app.close()


def human_masks(ws, image_id):
    return ws.masks(image_id, "human")


def edit_layer(tmp_path: Path, shape, colour, box) -> str:
    layer = np.zeros(shape + (4,), np.uint8)
    y0, y1, x0, x1 = box
    layer[y0:y1, x0:x1, :3] = colour
    layer[y0:y1, x0:x1, 3] = round(LAYER_ALPHA * 255)
    path = tmp_path / "layer.png"
    Image.fromarray(layer).save(path)
    return str(path)


def editor_events(ws):
    return [json.loads(d) for (d,) in ws.db.execute("SELECT detail FROM events WHERE kind = 'editor_save'")]


def test_save_through_gradio_client_stores_a_human_mask_with_its_effort(server, tmp_path):
    from gradio_client import Client, handle_file

    url, ws = server
    first = ws.ids[0]
    client = Client(url, verbose=False)
    out = client.predict(api_name="/start")
    assert "0 of 3 corrected" in out[5]
    rec = ws.image(first)
    pal = ws.config.palette()
    layer = edit_layer(tmp_path, (rec.height, rec.width), pal[2], (30, 40, 20, 50))
    out = client.predict({"background": None, "layers": [handle_file(layer)], "composite": None}, api_name="/save")
    assert "Saved" in out[3] and "1 of 3 corrected" in out[5]
    got = ws.read_label(first)
    want = pre_annotation(ws, first)
    want[30:40, 20:50] = 2
    assert (got == want).all()
    assert ws.image(first).state == "labeled"
    m = human_masks(ws, first)[-1]
    changed = int((pre_annotation(ws, first)[30:40, 20:50] != 2).sum())
    assert m.source == "editor" and m.changed_pixels == changed and m.changed_regions >= 1
    ev = editor_events(ws)[-1]
    assert ev["image"] == rec.name and ev["seconds"] >= 0 and ev["changed_pixels"] == changed
    # the editor moved on to the next image in rank order; accept it as is
    out = client.predict(api_name="/accept")
    assert (ws.read_label(ws.ids[1]) == pre_annotation(ws, ws.ids[1])).all()
    assert editor_events(ws)[-1]["accepted_as_is"] is True and "2 of 3 corrected" in out[5]


def test_second_tab_is_told_the_mask_changed_and_may_overwrite(server, tmp_path):
    from gradio_client import Client, handle_file

    url, ws = server
    first = ws.ids[0]
    tab_a, tab_b = Client(url, verbose=False), Client(url, verbose=False)
    tab_a.predict(api_name="/start")
    tab_b.predict(api_name="/start")  # both tabs opened the same image
    rec, pal = ws.image(first), ws.config.palette()
    value_a = {"background": None, "layers": [handle_file(edit_layer(tmp_path, (rec.height, rec.width), pal[3],
                                                                     (0, 10, 0, 10)))], "composite": None}
    tab_a.predict(value_a, api_name="/save")
    (tmp_path / "b").mkdir()
    value_b = {"background": None, "layers": [handle_file(edit_layer(tmp_path / "b", (rec.height, rec.width),
                                                                     pal[4], (50, 60, 50, 60)))], "composite": None}
    out = tab_b.predict(value_b, api_name="/save")
    assert "changed since you opened it" in out[3]
    assert len(human_masks(ws, first)) == 1 and (ws.read_label(first)[:10, :10] == 3).all()
    tab_b.predict(value_b, api_name="/overwrite")
    assert len(human_masks(ws, first)) == 2
    label = ws.read_label(first)
    assert (label[50:60, 50:60] == 4).all() and (label[:10, :10] == 1).all()  # B's version, over A's
    assert editor_events(ws)[-1]["overwrote"] == human_masks(ws, first)[0].id


def test_only_workspace_images_can_be_opened(server):
    from gradio_client import Client

    url, ws = server
    client = Client(url, verbose=False)
    client.predict(api_name="/start")
    with pytest.raises(Exception):
        client.predict("/etc/passwd", api_name="/open")
    with pytest.raises(Exception):
        client.predict(10_000, api_name="/open")


def _chromium():
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} not found: run 'bash scripts/browser.sh' to install Debian's chromium")
    from playwright.sync_api import sync_playwright
    return sync_playwright


def test_real_browser_stroke_paints_that_class_and_nothing_else(server, tmp_path):
    sync_playwright = _chromium()
    url, ws = server
    first = ws.ids[0]
    pre = pre_annotation(ws, first)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 950})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        page.wait_for_selector("#editor canvas", timeout=60_000)
        page.wait_for_function("document.querySelector('#progress').innerText.includes('0 of 3')", timeout=30_000)
        page.wait_for_timeout(4000)  # the background image settles into the canvas (slow on a loaded machine)
        page.keyboard.press("3")  # shortcut: the third class's brush (class id 2, "box")
        page.wait_for_timeout(1500)
        page.keyboard.press("Escape")
        page.mouse.click(5, 5)  # close the colour popup
        box = page.query_selector("#editor canvas").bounding_box()
        # the image sits centred in the canvas; stroke across its lower-right part
        cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(cx + 10, cy + 40)
        page.mouse.down()
        page.mouse.move(cx + 90, cy + 40, steps=12)
        page.mouse.up()
        page.wait_for_function("document.querySelector('#unsaved').innerText.includes('Unsaved')", timeout=10_000)
        # the editor turns the stroke into its layer image asynchronously (canvas -> blob); on a loaded machine
        # that lags behind the pointer release, and a save sent before it would carry the old, empty layer
        page.wait_for_timeout(4000)
        shot = tmp_path / "editor.png"
        page.screenshot(path=str(shot))
        page.keyboard.press("s")  # shortcut: save
        page.wait_for_function("document.querySelector('#progress').innerText.includes('1 of 3')", timeout=30_000)
        browser.close()
    readme_copy = REPO / "docs" / "img" / "editor.png"
    if not readme_copy.exists() or os.environ.get("ANNOTASSIST_UPDATE_SCREENSHOTS") == "1":
        shutil.copy(shot, readme_copy)  # the README's screenshot; test runs leave the tree clean
    assert not errors, errors
    got = ws.read_label(first)
    changed = got != pre
    assert changed.any(), "the stroke changed nothing"
    assert (got[changed] == 2).all(), f"classes written: {np.unique(got[changed])}"
    ys, xs = np.nonzero(changed)
    # one horizontal stroke of radius 3 below the centre: a band at most ~8 pixels high, nothing elsewhere
    h, w = got.shape
    assert ys.max() - ys.min() <= 9 and ys.min() > h // 2, (ys.min(), ys.max())
    assert xs.min() >= w // 2 - 4 and xs.max() - xs.min() >= 10, (xs.min(), xs.max())
    assert ws.image(first).state == "labeled"


def test_basic_auth_from_the_environment_guards_the_page(queued_ws, monkeypatch):
    import httpx

    from annotassist.ui.editor import launch

    monkeypatch.setenv("ANNOTASSIST_AUTH", "ann:s3cret")
    port = free_port()
    app = launch(queued_ws, port=port, prevent_thread_lock=True, quiet=True)
    try:
        url = f"http://127.0.0.1:{port}"
        assert app.server_name == "127.0.0.1"
        assert httpx.get(f"{url}/config", timeout=10).status_code == 401
        s = httpx.Client()
        assert s.post(f"{url}/login", data={"username": "ann", "password": "s3cret"}, timeout=10).is_success
        assert s.get(f"{url}/config", timeout=10).status_code == 200
    finally:
        app.close()


def test_cli_ui_names_a_missing_workspace_and_a_bad_auth(tmp_path, capsys):
    from annotassist.auth import parse_auth
    from annotassist.cli import main
    from annotassist.errors import AnnotassistError

    assert main(["ui", "--workspace", str(tmp_path / "nope")]) == 2
    assert "no workspace here" in capsys.readouterr().err
    assert parse_auth("a:b:c") == ("a", "b:c") and parse_auth(None) is None
    with pytest.raises(AnnotassistError, match="USER:PASSWORD"):
        parse_auth("justuser")
