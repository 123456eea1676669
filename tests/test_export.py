"""Export: VOC-layout palette PNGs and split files that read back to exactly the workspace's labels."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from annotassist.data.layouts import read_list
from annotassist.data.masks import read_mask
from annotassist.data.synthetic import CLASSES
from annotassist.export import export
from annotassist.workspace import Workspace
from annotassist.importer import import_dataset

from conftest import make_config

NC = len(CLASSES)


def read_back(out, list_name: str) -> dict[str, np.ndarray]:
    samples, problems = read_list(out / list_name, out)
    assert problems == []
    return {s.name: read_mask(s.mask, NC) for s in samples}


def test_export_round_trip(synth_ws, tmp_path):
    ws = synth_ws
    out = tmp_path / "export"
    summary = export(ws, out, progress=False)
    assert summary["labeled_count"] == 4 and summary["unlabeled_count"] == 20 and summary["val_count"] == 8
    assert summary["classes"] == CLASSES and summary["ignore_index"] == 255
    assert json.loads((out / "export.json").read_text()) == summary
    assert (out / "classes.txt").read_text().split() == CLASSES

    for list_name, split in [("labeled.txt", "pool"), ("val.txt", "val")]:
        got = read_back(out, list_name)
        recs = ws.images(split, "labeled")
        assert len(got) == len(recs) > 0
        for rec in recs:
            name = f"JPEGImages/{rec.name}"
            np.testing.assert_array_equal(got[name], ws.read_label(rec.id))
            exported_image = out / f"{name}.png"
            assert exported_image.read_bytes() == rec.image_path.read_bytes()
            mask_png = out / f"SegmentationClass/{rec.name}.png"
            with Image.open(mask_png) as im:
                assert im.mode == "P"
                assert im.size == (rec.width, rec.height)
                pal = im.getpalette()
                assert [tuple(pal[3 * i:3 * i + 3]) for i in range(NC)] == ws.config.palette()

    unl_lines = (out / "unlabeled.txt").read_text().splitlines()
    assert len(unl_lines) == 20 and all(len(ln.split()) == 1 for ln in unl_lines)
    samples, problems = read_list(out / "unlabeled.txt", out)
    assert problems == [] and all(s.mask is None and s.image.is_file() for s in samples)
    assert {s.name for s in samples} == {f"JPEGImages/{r.name}" for r in ws.images("pool", "unlabeled")}
    # no mask is written for unlabeled images
    assert len(list((out / "SegmentationClass").rglob("*.png"))) == 12


def test_export_writes_newest_human_version(synth_ws, tmp_path):
    ws = synth_ws
    unl = ws.images("pool", "unlabeled")[0]
    lab = ws.images("pool", "labeled")[0]
    export(ws, tmp_path / "e1", progress=False)
    gt = ws.read_label(lab.id)
    fixed = gt.copy()
    fixed[:8, :8] = 255
    fixed[8:16] = 3
    ws.add_mask(lab.id, fixed, "human")
    ws.add_mask(unl.id, np.full((64, 64), 1, np.uint8), "pseudo")
    ws.add_mask(unl.id, np.full((64, 64), 4, np.uint8), "human")
    ws.add_mask(unl.id, np.full((64, 64), 2, np.uint8), "human")
    ws.add_mask(unl.id, np.full((64, 64), 5, np.uint8), "pseudo")
    summary = export(ws, tmp_path / "e2", progress=False)
    assert summary["labeled_count"] == 5 and summary["unlabeled_count"] == 19
    got = read_back(tmp_path / "e2", "labeled.txt")
    np.testing.assert_array_equal(got[f"JPEGImages/{lab.name}"], fixed)
    np.testing.assert_array_equal(got[f"JPEGImages/{unl.name}"], np.full((64, 64), 2))
    assert (got[f"JPEGImages/{lab.name}"] == 255).sum() == 64
    # the first export is untouched
    np.testing.assert_array_equal(read_back(tmp_path / "e1", "labeled.txt")[f"JPEGImages/{lab.name}"], gt)
    # re-exporting into the same folder replaces the lists and masks
    ws.add_mask(unl.id, np.full((64, 64), 0, np.uint8), "human")
    export(ws, tmp_path / "e2", progress=False)
    np.testing.assert_array_equal(read_back(tmp_path / "e2", "labeled.txt")[f"JPEGImages/{unl.name}"],
                                  np.zeros((64, 64)))


def test_export_queued_and_in_review_are_unlabeled(synth_ws, tmp_path):
    ws = synth_ws
    a, b = ws.images("pool", "unlabeled")[:2]
    lab = ws.images("pool", "labeled")[0]
    ws.set_state([a.id], "queued")
    ws.set_state([b.id, lab.id], "in_review")
    summary = export(ws, tmp_path / "e", progress=False)
    assert summary["labeled_count"] == 3 and summary["unlabeled_count"] == 21
    unl = set((tmp_path / "e" / "unlabeled.txt").read_text().split())
    assert {f"JPEGImages/{r.name}.png" for r in (a, b, lab)} <= unl


def test_export_with_links(synth_ws, tmp_path):
    ws = synth_ws
    out = tmp_path / "linked"
    export(ws, out, link=True, progress=False)
    rec = ws.images("pool")[0]
    p = out / f"JPEGImages/{rec.name}.png"
    assert p.is_symlink() and p.resolve() == rec.image_path.resolve()
    export(ws, out, link=False, progress=False)  # replaces the links with copies
    assert not p.is_symlink() and p.read_bytes() == rec.image_path.read_bytes()


def test_export_skips_missing_images(synth_ws, synth_copy, tmp_path):
    ws = synth_ws
    lab = ws.images("pool", "labeled")[0]
    lst = synth_copy / "train.txt"
    lst.write_text("".join(ln + "\n" for ln in lst.read_text().splitlines() if not ln.startswith(lab.name + ".")))
    assert import_dataset(ws, progress=False).disappeared == [lab.name]
    summary = export(ws, tmp_path / "e", progress=False)
    assert summary["labeled_count"] == 3
    assert f"JPEGImages/{lab.name}" not in read_back(tmp_path / "e", "labeled.txt")


def test_exported_lists_feed_a_new_workspace(synth_ws, tmp_path):
    """The export is itself a list-layout dataset: a workspace made from it has the same labels."""
    ws = synth_ws
    out = tmp_path / "e"
    export(ws, out, progress=False)
    cfg = make_config(overrides=["dataset.pool=labeled.txt", "dataset.val=val.txt"], initial_labeled=0)
    with Workspace.create(tmp_path / "ws2", cfg, out) as ws2:
        report = import_dataset(ws2, progress=False)
        assert report.problems == [] and ws2.count("pool", "labeled") == 4 and ws2.count("val") == 8
        for rec in ws.images("pool", "labeled"):
            rec2 = ws2.image_by_name(f"JPEGImages/{rec.name}")
            assert rec2.sha256 == rec.sha256
            np.testing.assert_array_equal(ws2.read_label(rec2.id), ws.read_label(rec.id))


def test_export_camvid_round_trip(camvid_ws, tmp_path):
    """Real data: CamVid's unlabelled (11) is exported as 255, every class id survives exactly."""
    ws = camvid_ws
    out = tmp_path / "camvid_export"
    summary = export(ws, out, link=True, progress=False)
    assert (summary["labeled_count"], summary["unlabeled_count"], summary["val_count"]) == (16, 351, 101)
    for list_name, split in [("labeled.txt", "pool"), ("val.txt", "val")]:
        samples, problems = read_list(out / list_name, out)
        assert problems == []
        recs = {f"JPEGImages/{r.name}": r for r in ws.images(split, "labeled")}
        assert {s.name for s in samples} == set(recs)
        for s in samples[:20]:
            got = read_mask(s.mask, 11)
            np.testing.assert_array_equal(got, ws.read_label(recs[s.name].id))
            raw = np.array(Image.open(recs[s.name].source_mask_path))
            np.testing.assert_array_equal(got == 255, raw == 11)
            assert Image.open(s.mask).mode == "P"
