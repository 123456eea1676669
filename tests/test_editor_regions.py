"""The editor's region view (acquire.unit: region): the session's click, save and work list without a browser,
then the real page in chromium: choose a class, click a region, Save, and read the partial mask from the pool."""
from __future__ import annotations

import json
import os
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import ndimage

from annotassist.acquire.regions import compute_superpixels
from annotassist.data.masks import IGNORE, read_image, read_mask
from annotassist.errors import WorkspaceError
from annotassist.ui import session

from test_editor import CHROMIUM, CHROMIUM_ARGS, REPO, _chromium, free_port, pre_annotation


def quadrants(h: int, w: int) -> np.ndarray:
    """0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right."""
    seg = np.zeros((h, w), np.int32)
    seg[:, w // 2:] += 1
    seg[h // 2:, :] += 2
    return seg


def queue_regions(ws, segments_of, picks_of, n: int = 2):
    """Round 0 with a pseudo mask on `n` unlabeled images, their regions stored and `picks_of(seg)` queried."""
    r = ws.start_round("dssn")
    ids = [rec.id for rec in ws.images("pool", state="unlabeled")][:n]
    picks = {}
    for i in ids:
        ws.add_mask(i, pre_annotation(ws, i), "pseudo", r, source="model", mark_labeled=False)
        seg = segments_of(ws, i)
        ws.set_superpixels(i, seg)
        picks[i] = picks_of(seg)
    ws.record_region_selection(r, picks, {i: 1.0 - k / 10 for k, i in enumerate(ids)}, "dssn")
    ws.ids, ws.picks = ids, picks
    return ws


@pytest.fixture
def quad_ws(synth_ws):
    """Two images queued in region mode, quadrant regions, the two right quadrants (1, 3) asked."""
    return queue_regions(synth_ws, lambda ws, i: quadrants(ws.image(i).height, ws.image(i).width),
                         lambda seg: [1, 3])


def editor_events(ws):
    return [json.loads(d) for (d,) in ws.db.execute("SELECT detail FROM events WHERE kind = 'editor_save'")]


# -- the session, without a browser -------------------------------------------------------------------------


def test_open_shows_the_region_query_and_a_click_fills_the_whole_region(quad_ws):
    ws = quad_ws
    first = ws.ids[0]
    o = session.open_image(ws, first)
    h, w = o.start_mask.shape
    assert o.region is not None and o.region.regions == [1, 3] and o.region.round == 0
    assert o.start_kind == "pseudo" and (o.start_mask == pre_annotation(ws, first)).all()
    assert o.region.inside[:, w // 2:].all() and not o.region.inside[:, : w // 2].any()
    assert o.region.share == pytest.approx(0.5)
    click = session.click_region(o, o.start_mask, w - 3, h - 3, 4)  # bottom-right: region 3
    assert click.region == 3
    want = o.start_mask.copy()
    want[h // 2:, w // 2:] = 4
    assert (click.mask == want).all() and click.pixels == int((o.start_mask[h // 2:, w // 2:] != 4).sum())
    assert (o.start_mask == pre_annotation(ws, first)).all()  # the start mask itself is left as opened
    # the region view: outside dimmed, the regions' edges in the outline colour
    colour = session.outline_colour(ws.config.palette())
    view = session.region_view(o.image, o, colour)
    assert (view[:, : w // 2] <= np.ceil(o.image[:, : w // 2] * 0.35)).all()
    assert (view[h // 2, w // 2 + 5] == colour).all() and (view[h // 4, w - 1] == colour).all()
    assert (view[h // 4, 3 * w // 4] == o.image[h // 4, 3 * w // 4]).all()  # the inside shows as it is
    big = session.region_view(o.image, o, colour, scale=8)
    assert big.shape == (h * 8, w * 8, 3)


def test_a_click_outside_the_regions_or_without_a_class_changes_nothing(quad_ws):
    o = session.open_image(quad_ws, quad_ws.ids[0])
    h, w = o.start_mask.shape
    for x, y, c, says in [(2, 2, 4, "outside the regions to check"), (w - 2, 2, None, "Choose a class"),
                          (w + 5, 2, 4, "not in the image")]:
        click = session.click_region(o, o.start_mask, x, y, c)
        assert click.region is None and says in click.message
        assert click.mask is o.start_mask


def test_save_keeps_only_the_regions_reports_outside_pixels_and_counts_done(quad_ws):
    ws = quad_ws
    first = ws.ids[0]
    items = session.work_list(ws)
    assert [it.unit for it in items] == ["region", "region"] and not any(it.done for it in items)
    assert session.progress_text(items) == "0 of 2 corrected"
    o = session.open_image(ws, first)
    h, w = o.start_mask.shape
    mask = session.click_region(o, o.start_mask, w - 3, 2, 5).mask  # region 1 (top-right) -> star
    mask[h - 6:h - 2, 2:6] = np.where(o.start_mask[h - 6:h - 2, 2:6] == 3, 2, 3)  # painted outside: 16 pixels
    saved = session.save_correction(ws, o, mask)
    assert not saved.stale and saved.unit == "region" and saved.regions == 2
    assert saved.reviewed_pixels == h * w // 2 and saved.outside_pixels == 16
    top_right = o.start_mask[: h // 2, w // 2:]
    assert saved.changed_pixels == int((top_right != 5).sum())  # the outside strokes cost nothing
    partial = ws.partial_mask(first)
    stored = read_mask(partial.path, ws.config.num_classes)
    assert (stored[: h // 2, w // 2:] == 5).all()
    assert (stored[h // 2:, w // 2:] == o.start_mask[h // 2:, w // 2:]).all()  # checked, left as it was
    assert (stored[:, : w // 2] == IGNORE).all()  # nothing outside, the strokes there neither
    assert partial.source == "editor" and partial.reviewed_pixels == h * w // 2
    assert ws.image(first).state == "unlabeled" and ws.open_region_query(first) is None
    assert ws.label_mask(first) is None  # not labeled whole
    ev = editor_events(ws)[-1]
    assert ev["unit"] == "region" and ev["outside_pixels"] == 16 and ev["regions"] == 2
    assert ev["changed_pixels"] == saved.changed_pixels and ev["mask_id"] == partial.id
    items = session.work_list(ws)
    assert [it.done for it in items] == [True, False] and session.progress_text(items) == "1 of 2 corrected"
    # opened again, the image is an ordinary one (nothing left to check)
    assert session.open_image(ws, first).region is None


def test_a_second_save_of_an_answered_query_is_refused(quad_ws):
    ws = quad_ws
    first = ws.ids[0]
    tab_a, tab_b = session.open_image(ws, first), session.open_image(ws, first)
    assert not session.save_correction(ws, tab_a, tab_a.start_mask, accepted=True).stale
    n = len(ws.masks(first, "partial"))
    again = session.save_correction(ws, tab_b, tab_b.start_mask, force=True)
    assert again.stale and again.unit == "region" and again.mask_id is None
    assert len(ws.masks(first, "partial")) == n and len(editor_events(ws)) == 1
    with pytest.raises(WorkspaceError, match="already saved"):
        ws.add_partial(first, tab_b.start_mask, 0)


def test_image_mode_items_are_unchanged(quad_ws):
    """An image queued as a whole next to region queries: an image item, saved as a whole label."""
    ws = quad_ws
    other = [rec.id for rec in ws.images("pool", state="unlabeled")][0]
    ws.set_state([other], "queued")
    items = {it.image_id: it for it in session.work_list(ws)}
    assert items[other].unit == "image" and not items[other].done
    o = session.open_image(ws, other)
    assert o.region is None
    session.save_correction(ws, o, o.start_mask)
    assert ws.image(other).state == "labeled" and ws.label_mask(other).kind == "human"
    # queued by hand, it leaves the list once labeled, as before region mode
    assert other not in [it.image_id for it in session.work_list(ws)]


# -- the real page --------------------------------------------------------------------------------------------


def slic_segments(ws, image_id):
    image = torch.from_numpy(np.array(read_image(ws.image(image_id).image_path))).permute(2, 0, 1) / 255.0
    return compute_superpixels(image, SimpleNamespace(acquire=SimpleNamespace(superpixels=24, slic_compactness=10.0)))


def largest_regions(seg, k=3):
    ids, counts = np.unique(seg, return_counts=True)
    return sorted(int(i) for i in ids[np.argsort(-counts)[:k]])


@pytest.fixture
def region_server(synth_ws):
    from annotassist.ui.editor import build_app

    ws = queue_regions(synth_ws, slic_segments, largest_regions)
    app = build_app(ws.root)
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/", ws
    app.close()


def test_real_browser_region_click_and_save_store_the_region(region_server, tmp_path):
    sync_playwright = _chromium()
    url, ws = region_server
    first = ws.ids[0]
    seg = ws.region_map_full(first)
    asked = ws.picks[first]
    target = asked[0]
    # a pixel deep inside the region to click
    depth = ndimage.distance_transform_edt(np.pad(seg == target, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(depth.argmax()), depth.shape)
    box_class = 2  # "box"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        page.wait_for_selector("#editor canvas", timeout=60_000)
        page.wait_for_function("document.querySelector('#progress').innerText.includes('0 of 2')", timeout=30_000)
        page.wait_for_selector("#regions img", timeout=30_000)
        info = page.inner_text("#info")
        assert f"region mode: check {len(asked)} regions" in info, info
        page.keyboard.press(str(box_class + 1))  # the class shortcut picks the region class too
        page.wait_for_timeout(1500)
        page.keyboard.press("Escape")
        page.mouse.click(5, 5)  # close the brush's colour popup
        assert page.is_checked(f"#region_class input[value='{box_class}']")
        # where pixel (x, y) of the image lies in the preview: Gradio fits the blown-up image into its box
        geo = page.evaluate("""() => { const i = document.querySelector('#regions img'); const r =
            i.getBoundingClientRect(); return [r.left, r.top, r.width, r.height, i.naturalWidth, i.naturalHeight]; }""")
        left, top, width, height, nw, nh = geo
        k = nw // seg.shape[1]
        scale = min(width / nw, height / nh, 1)
        ox, oy = (width - nw * scale) / 2, (height - nh * scale) / 2
        page.mouse.click(left + ox + (x * k + k / 2) * scale, top + oy + (y * k + k / 2) * scale)
        page.wait_for_function("document.querySelector('#status').innerText.includes('Region')", timeout=30_000)
        status = page.inner_text("#status")
        assert f"Region {target} " in status and "Class: box" in status, status
        page.wait_for_function("document.querySelector('#unsaved').innerText.includes('Unsaved')", timeout=10_000)
        # a click outside the regions says so and changes nothing
        out_y, out_x = np.argwhere(~np.isin(seg, asked))[0]
        page.mouse.click(left + ox + (out_x * k + k / 2) * scale, top + oy + (out_y * k + k / 2) * scale)
        page.wait_for_function("document.querySelector('#status').innerText.includes('outside the regions')",
                               timeout=30_000)
        page.wait_for_timeout(3000)  # the canvas reloads its background
        shot = tmp_path / "editor-regions.png"
        page.screenshot(path=str(shot))
        page.click("#save")
        page.wait_for_function("document.querySelector('#progress').innerText.includes('1 of 2')", timeout=30_000)
        message = page.inner_text("#status")
        browser.close()
    readme_copy = REPO / "docs" / "img" / "editor-regions.png"
    if not readme_copy.exists() or os.environ.get("ANNOTASSIST_UPDATE_SCREENSHOTS") == "1":
        shutil.copy(shot, readme_copy)
    assert not errors, errors
    assert f"Saved {len(asked)} regions" in message and "not stored" not in message, message
    stored = read_mask(ws.partial_mask(first).path, ws.config.num_classes)
    pre = pre_annotation(ws, first)
    clicked, other = seg == target, np.isin(seg, asked) & (seg != target)
    assert (stored[clicked] == box_class).all()
    assert (stored[other] == pre[other]).all()
    assert (stored[~np.isin(seg, asked)] == IGNORE).all()
    assert ws.open_region_query(first) is None and ws.image(first).state == "unlabeled"
    ev = editor_events(ws)[-1]
    assert ev["unit"] == "region" and ev["changed_pixels"] == int((pre[clicked] != box_class).sum())


def test_save_through_gradio_client_says_what_was_painted_outside(quad_ws, tmp_path):
    from gradio_client import Client, handle_file

    from annotassist.ui.editor import build_app
    from test_editor import edit_layer

    ws = quad_ws
    first = ws.ids[0]
    app = build_app(ws.root)
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        out = client.predict(api_name="/start")
        assert "region mode: check 2 regions (50% of the image)" in out[2] and "0 of 2 corrected" in out[5]
        rec, pal = ws.image(first), ws.config.palette()
        pre = pre_annotation(ws, first)
        # one stroke of class 4 over the left edge of the right half: 10 rows x 4 columns inside, 4 outside
        h, w = rec.height, rec.width
        layer = edit_layer(tmp_path, (h, w), pal[4], (40, 50, w // 2 - 4, w // 2 + 4))
        out = client.predict({"background": None, "layers": [handle_file(layer)], "composite": None}, api_name="/save")
        outside = int((pre[40:50, w // 2 - 4:w // 2] != 4).sum())
        assert "Saved 2 regions" in out[3] and f"{h * w // 2} pixels stored" in out[3], out[3]
        assert f"{outside} pixels painted outside the regions to check were not stored" in out[3], out[3]
        assert "1 of 2 corrected" in out[5]
        stored = read_mask(ws.partial_mask(first).path, ws.config.num_classes)
        assert (stored[40:50, w // 2:w // 2 + 4] == 4).all() and (stored[:, :w // 2] == IGNORE).all()
        # the editor moved on to the other queued image, in region mode too
        assert ws.image(ws.ids[1]).name in out[2] and "region mode: check 2 regions" in out[2]
    finally:
        app.close()
