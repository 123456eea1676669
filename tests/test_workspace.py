"""The SQLite workspace: sync from a source, states, mask versions, atomicity, scores, selections."""
from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotassist.config import voc_palette
from annotassist.data.layouts import read_list
from annotassist.data.masks import class_histogram, file_sha256, read_mask, write_mask
from annotassist.data.synthetic import CLASSES, generate_sample
from annotassist.errors import DataError, WorkspaceError
from annotassist.workspace import STATES, Workspace
from annotassist.importer import import_dataset

from conftest import CAMVID, config_from_file, make_config, save_png

NC = len(CLASSES)


# ---------------------------------------------------------------------------------------------------------
# helpers


def mask_files(ws: Workspace) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted((ws.root / "masks").rglob("*.png"))}


def table_count(ws: Workspace, table: str) -> int:
    return ws.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def pool_state_snapshot(ws: Workspace) -> list[tuple]:
    return [tuple(r) for r in ws.db.execute("SELECT id, state, updated_at, missing FROM images ORDER BY id")]


def add_list_line(list_file: Path, line: str) -> None:
    list_file.write_text(list_file.read_text() + line + "\n")


def remove_list_line(list_file: Path, startswith: str) -> None:
    lines = [ln for ln in list_file.read_text().splitlines() if not ln.startswith(startswith)]
    list_file.write_text("\n".join(lines) + "\n")


def write_new_sample(root: Path, name: str, index: int, with_mask: bool = True) -> str:
    """A new generated image (and mask) under root/extra/; returns its list line."""
    img, mask = generate_sample(0, 0, 1000 + index, 64)
    save_png(img, root / "extra" / f"{name}.png")
    if not with_mask:
        return f"extra/{name}.png"
    write_mask(mask, root / "extra_masks" / f"{name}.png", voc_palette(NC))
    return f"extra/{name}.png extra_masks/{name}.png"


def first(ws: Workspace, state: str, split: str = "pool"):
    return ws.images(split, state)[0]


# ---------------------------------------------------------------------------------------------------------
# creating and syncing


def test_create_and_sync_small_set(synth_ws, synth_copy):
    ws = synth_ws
    assert ws.count("pool") == 24 and ws.count("val") == 8
    assert ws.count("pool", "labeled") == 4 and ws.count("pool", "unlabeled") == 20
    assert ws.count("val", "labeled") == 8
    assert (ws.root / "config.yaml").is_file() and (ws.root / "masks").is_dir()
    assert ws.data_root == synth_copy.resolve()
    assert ws.config.pool.initial_labeled == 4 and ws.config.dataset.classes == CLASSES
    source = {s.name: s for s in read_list(synth_copy / "train.txt", synth_copy)[0]}
    for rec in ws.images("pool"):
        s = source[rec.name]
        assert rec.image_path == s.image.resolve()
        assert rec.source_mask_path == s.mask.resolve()
        assert rec.sha256 == file_sha256(s.image)
        assert (rec.width, rec.height) == (64, 64) and not rec.missing
        masks = ws.masks(rec.id)
        if rec.state == "labeled":
            assert [m.kind for m in masks] == ["ground_truth"]
            np.testing.assert_array_equal(ws.read_label(rec.id), read_mask(s.mask, NC))
            assert masks[0].class_pixels == class_histogram(read_mask(s.mask, NC), NC).tolist()
            assert masks[0].path.is_file() and masks[0].path.is_relative_to(ws.root / "masks")
        else:
            assert masks == [] and ws.label_mask(rec.id) is None
            with pytest.raises(WorkspaceError, match="has no label yet"):
                ws.read_label(rec.id)
        np.testing.assert_array_equal(ws.read_oracle(rec.id), read_mask(s.mask, NC))


def test_sync_report_counts(synth_copy, tmp_path):
    ws = Workspace.create(tmp_path / "ws", make_config(initial_labeled=4), synth_copy)
    report = import_dataset(ws, progress=False)
    assert (report.added, report.labeled, report.unchanged) == (32, 4, 0)
    assert report.problems == [] and report.disappeared == [] and report.changed == []
    again = import_dataset(ws, progress=False)
    assert (again.added, again.labeled, again.unchanged) == (0, 0, 32)
    assert ws.count("pool", "labeled") == 4
    ws.close()


def test_initial_labeled_zero_labels_every_masked_image(synth_copy, tmp_path):
    remove_list_line(synth_copy / "train.txt", "images/train/00005.png")
    add_list_line(synth_copy / "train.txt", "images/train/00005.png")  # listed without its mask
    with Workspace.create(tmp_path / "ws", make_config(initial_labeled=0), synth_copy) as ws:
        report = import_dataset(ws, progress=False)
        assert report.labeled == 23
        assert ws.count("pool", "labeled") == 23
        rec = ws.image_by_name("images/train/00005")
        assert rec.state == "unlabeled" and rec.source_mask_path is None
        # the mask appears in the source later: the image becomes labeled with it
        remove_list_line(synth_copy / "train.txt", "images/train/00005.png")
        add_list_line(synth_copy / "train.txt", "images/train/00005.png masks/train/00005.png")
        report = import_dataset(ws, progress=False)
        assert report.added == 0 and report.labeled == 1
        rec = ws.image(rec.id)
        assert rec.state == "labeled" and rec.source_mask_path == (synth_copy / "masks/train/00005.png").resolve()
        np.testing.assert_array_equal(ws.read_label(rec.id), read_mask(synth_copy / "masks/train/00005.png", NC))


def test_late_mask_with_initial_labeled_keeps_image_unlabeled(synth_copy, tmp_path):
    remove_list_line(synth_copy / "train.txt", "images/train/00005.png")
    add_list_line(synth_copy / "train.txt", "images/train/00005.png")
    with Workspace.create(tmp_path / "ws", make_config(initial_labeled=2), synth_copy) as ws:
        import_dataset(ws, progress=False)
        rec = ws.image_by_name("images/train/00005")
        assert rec.state == "unlabeled"
        remove_list_line(synth_copy / "train.txt", "images/train/00005.png")
        add_list_line(synth_copy / "train.txt", "images/train/00005.png masks/train/00005.png")
        import_dataset(ws, progress=False)
        rec = ws.image(rec.id)
        assert rec.state == "unlabeled" and rec.source_mask_path is not None  # now an oracle, not a label
        assert ws.masks(rec.id) == []
        assert ws.count("pool", "labeled") == 2


def test_pool_sqlite_is_wal(synth_ws):
    assert synth_ws.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn = sqlite3.connect(synth_ws.root / "pool.sqlite")  # a fresh connection sees the file's mode
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 32
    finally:
        conn.close()


def test_open_reopen_and_missing_workspace(synth_ws, tmp_path):
    with Workspace(synth_ws.root) as again:
        assert again.count("pool", "labeled") == 4
        assert again.config.to_dict() == synth_ws.config.to_dict()
        assert again.data_root == synth_ws.data_root
    with pytest.raises(WorkspaceError) as e:
        Workspace(tmp_path / "empty")
    assert "no workspace here" in str(e.value) and "annotassist init" in str(e.value)


def test_workspace_config_with_off_and_small_floats_reopens(synth_copy, tmp_path):
    cfg = make_config(overrides=["train.amp=off", "train.weight_decay=0.00001", "region.lr=1e-6"])
    with Workspace.create(tmp_path / "ws", cfg, synth_copy) as ws:
        pass
    with Workspace(tmp_path / "ws") as ws:
        assert ws.config.train.amp == "off"
        assert ws.config.train.weight_decay == pytest.approx(1e-5)
        assert ws.config.region.lr == pytest.approx(1e-6)


# ---------------------------------------------------------------------------------------------------------
# real CamVid


def test_camvid_workspace(camvid_ws):
    ws = camvid_ws
    report = ws.sync_report
    assert report.problems == []
    assert (report.added, report.labeled) == (468, 16)
    assert ws.count("pool") == 367 and ws.count("val") == 101
    assert ws.count("pool", "labeled") == 16 and ws.count("pool", "unlabeled") == 351
    assert ws.count("val", "labeled") == 101
    assert len(ws.labeled_samples()) == 16 and len(ws.val_samples()) == 101
    rec = first(ws, "labeled")
    assert (rec.width, rec.height) == (480, 360)
    raw = np.array(Image.open(rec.source_mask_path))
    label = ws.read_label(rec.id)
    np.testing.assert_array_equal(label == 255, raw == 11)  # CamVid's unlabelled became 255
    np.testing.assert_array_equal(label[raw != 11], raw[raw != 11])
    np.testing.assert_array_equal(ws.read_oracle(rec.id), label)
    # class pixels of the labeled pool = the sum over the 16 source masks (11 not counted)
    expect = sum(class_histogram(read_mask(r.source_mask_path, 11, 11), 11) for r in ws.images("pool", "labeled"))
    np.testing.assert_array_equal(ws.class_pixels("pool"), expect)
    assert ws.class_pixels("pool").sum() < 16 * 480 * 360


def test_camvid_initial_set_is_seeded(camvid_ws, tmp_path):
    first_set = {r.name for r in camvid_ws.images("pool", "labeled")}
    cfg = config_from_file("camvid")
    with Workspace.create(tmp_path / "same", cfg, CAMVID) as ws:
        import_dataset(ws, progress=False)
        assert {r.name for r in ws.images("pool", "labeled")} == first_set
    cfg = config_from_file("camvid", overrides=["pool.seed=1"])
    with Workspace.create(tmp_path / "other", cfg, CAMVID) as ws:
        import_dataset(ws, progress=False)
        other = {r.name for r in ws.images("pool", "labeled")}
    assert len(other) == 16 and other != first_set


# ---------------------------------------------------------------------------------------------------------
# states


def test_state_transitions(synth_ws):
    ws = synth_ws
    rec = first(ws, "unlabeled")
    for state in ["queued", "in_review", "queued", "unlabeled", "in_review", "labeled", "in_review", "labeled"]:
        ws.set_state([rec.id], state, reason="test")
        assert ws.image(rec.id).state == state
    ws.set_state([rec.id], "labeled")  # same state: nothing to do
    for illegal in ["queued", "unlabeled"]:
        with pytest.raises(WorkspaceError) as e:
            ws.set_state([rec.id], illegal)
        assert f"is labeled; it cannot become {illegal}" in str(e.value) and "allowed: in_review" in str(e.value)
        assert ws.image(rec.id).state == "labeled"
    with pytest.raises(WorkspaceError, match="unknown image state 'done'"):
        ws.set_state([rec.id], "done")
    with pytest.raises(WorkspaceError, match="no image with id 99999"):
        ws.set_state([99999], "queued")
    with pytest.raises(WorkspaceError, match="unknown image state"):
        ws.images("pool", "finished")
    assert set(STATES) == {"unlabeled", "queued", "in_review", "labeled"}
    assert ws.count("pool", "queued") == 0
    assert len(ws.images("pool", ["labeled", "unlabeled"])) == 24


def test_set_state_is_all_or_nothing(synth_ws):
    ws = synth_ws
    a, b = ws.images("pool", "unlabeled")[:2]
    lab = first(ws, "labeled")
    before = pool_state_snapshot(ws)
    with pytest.raises(WorkspaceError):
        ws.set_state([a.id, b.id, lab.id], "queued")
    assert pool_state_snapshot(ws) == before
    with Workspace(ws.root) as other:  # another connection sees the same
        assert other.image(a.id).state == "unlabeled"


# ---------------------------------------------------------------------------------------------------------
# mask versions


def test_mask_versions_newest_human_wins(synth_ws):
    ws = synth_ws
    rec = first(ws, "unlabeled")
    rng = np.random.default_rng(1)
    pixels_before = ws.class_pixels()
    pseudo = rng.integers(0, NC, (64, 64)).astype(np.uint8)
    ws.add_mask(rec.id, pseudo, "pseudo", round_=0, source="model")
    assert ws.image(rec.id).state == "unlabeled"  # a pseudo mask is not a label
    assert ws.label_mask(rec.id) is None
    np.testing.assert_array_equal(ws.class_pixels(), pixels_before)
    assert rec.name not in {s.name for s in ws.labeled_samples()}
    files = mask_files(ws)

    human1 = pseudo.copy()
    human1[:10] = 255
    id1 = ws.add_mask(rec.id, human1, "human", round_=0, source="annotator", changed_pixels=640)
    assert ws.image(rec.id).state == "labeled"
    assert ws.label_mask(rec.id).id == id1 and ws.label_mask(rec.id).changed_pixels == 640
    np.testing.assert_array_equal(ws.read_label(rec.id), human1)
    files_after_1 = mask_files(ws)
    assert all(files_after_1[p] == b for p, b in files.items())  # nothing overwritten

    human2 = np.full((64, 64), 5, dtype=np.uint8)
    id2 = ws.add_mask(rec.id, human2, "human", round_=1)
    assert id2 > id1 and ws.label_mask(rec.id).id == id2
    np.testing.assert_array_equal(ws.read_label(rec.id), human2)
    # a later pseudo mask does not replace the label
    ws.add_mask(rec.id, pseudo, "pseudo", round_=2)
    assert ws.label_mask(rec.id).id == id2
    versions = ws.masks(rec.id)
    assert [m.kind for m in versions] == ["pseudo", "human", "human", "pseudo"]
    assert len({m.path for m in versions}) == 4 and all(m.path.is_file() for m in versions)
    assert [m.kind for m in ws.masks(rec.id, "human")] == ["human", "human"]
    files_now = mask_files(ws)
    assert all(files_now[p] == b for p, b in files_after_1.items())
    np.testing.assert_array_equal(read_mask(versions[1].path, NC), human1)  # the old version is intact
    # class pixels count the newest human version only
    expect = pixels_before.copy()
    expect[5] += 64 * 64
    np.testing.assert_array_equal(ws.class_pixels(), expect)
    sample = {s.name: s for s in ws.labeled_samples()}[rec.name]
    assert sample.mask == versions[2].path


def test_human_mask_replaces_ground_truth(synth_ws):
    ws = synth_ws
    rec = first(ws, "labeled")
    gt = ws.read_label(rec.id)
    fixed = gt.copy()
    fixed[gt == 0] = 1
    ws.add_mask(rec.id, fixed, "human")
    np.testing.assert_array_equal(ws.read_label(rec.id), fixed)
    assert [m.kind for m in ws.masks(rec.id)] == ["ground_truth", "human"]
    np.testing.assert_array_equal(read_mask(ws.masks(rec.id)[0].path, NC), gt)


@pytest.mark.parametrize("bad, error", [
    (np.zeros((64, 60), dtype=np.uint8), r"is 60x64, the image is 64x64"),
    (np.full((64, 64), 6, dtype=np.uint8), r"class ids \[6\] outside 0\.\.5"),
    (np.full((64, 64), 300, dtype=np.int64), r"class ids \[300\]"),
    (np.zeros((64, 64, 3), dtype=np.uint8), r"64x64"),
])
def test_add_bad_mask_changes_nothing(synth_ws, bad, error):
    ws = synth_ws
    rec = first(ws, "unlabeled")
    before = (pool_state_snapshot(ws), table_count(ws, "masks"), table_count(ws, "events"), mask_files(ws))
    with pytest.raises(DataError, match=error) as e:
        ws.add_mask(rec.id, bad, "human")
    assert rec.name in str(e.value)
    after = (pool_state_snapshot(ws), table_count(ws, "masks"), table_count(ws, "events"), mask_files(ws))
    assert after == before
    assert ws.image(rec.id).state == "unlabeled" and ws.masks(rec.id) == []


def test_add_mask_unknown_kind_or_image(synth_ws):
    ws = synth_ws
    rec = first(ws, "unlabeled")
    n = table_count(ws, "masks")
    with pytest.raises(WorkspaceError, match="unknown mask kind 'final'"):
        ws.add_mask(rec.id, np.zeros((64, 64), np.uint8), "final")
    with pytest.raises(WorkspaceError, match="no image with id 99999"):
        ws.add_mask(99999, np.zeros((64, 64), np.uint8), "human")
    assert table_count(ws, "masks") == n


def test_transaction_that_raises_rolls_back(synth_ws):
    ws = synth_ws
    a, b = ws.images("pool", "unlabeled")[:2]
    before = (pool_state_snapshot(ws), table_count(ws, "masks"), table_count(ws, "events"))
    with pytest.raises(RuntimeError, match="midway"):
        with ws.transaction() as db:
            db.execute("UPDATE images SET state = 'queued' WHERE id = ?", (a.id,))
            ws.add_mask(b.id, np.ones((64, 64), np.uint8), "human")  # joins the outer transaction
            assert ws.image(b.id).state == "labeled"  # visible inside
            raise RuntimeError("midway")
    assert (pool_state_snapshot(ws), table_count(ws, "masks"), table_count(ws, "events")) == before
    assert ws.masks(b.id) == [] and ws.label_mask(b.id) is None
    assert not ws.db.in_transaction
    # the workspace is still usable afterwards
    ws.set_state([a.id], "queued")
    assert ws.image(a.id).state == "queued"


def test_writer_lock_and_reader_during_write(synth_ws):
    """WAL: another connection reads the committed state while a write transaction is open."""
    ws = synth_ws
    rec = first(ws, "unlabeled")
    reader = sqlite3.connect(ws.root / "pool.sqlite")
    try:
        with ws.transaction() as db:
            db.execute("UPDATE images SET state = 'queued' WHERE id = ?", (rec.id,))
            state = reader.execute("SELECT state FROM images WHERE id = ?", (rec.id,)).fetchone()[0]
            assert state == "unlabeled"
        assert reader.execute("SELECT state FROM images WHERE id = ?", (rec.id,)).fetchone()[0] == "queued"
    finally:
        reader.close()


# ---------------------------------------------------------------------------------------------------------
# re-syncing an existing workspace


def test_resync_keeps_masks_and_adds_new_images(synth_ws, synth_copy):
    ws = synth_ws
    rec = first(ws, "unlabeled")
    ws.add_mask(rec.id, np.full((64, 64), 2, np.uint8), "human")
    files = mask_files(ws)
    lst = synth_copy / "train.txt"
    add_list_line(lst, write_new_sample(synth_copy, "new0", 0))
    add_list_line(lst, write_new_sample(synth_copy, "new1", 1, with_mask=False))
    report = import_dataset(ws, progress=False)
    assert report.problems == []
    assert report.added == 2 and report.unchanged == 32
    assert ws.count("pool") == 26
    new0, new1 = ws.image_by_name("extra/new0"), ws.image_by_name("extra/new1")
    assert new0.state == "unlabeled" and new0.source_mask_path is not None  # initial set already full
    assert new1.state == "unlabeled" and new1.source_mask_path is None
    assert ws.label_mask(rec.id).kind == "human"
    np.testing.assert_array_equal(ws.read_label(rec.id), np.full((64, 64), 2))
    assert mask_files(ws) == files
    assert ws.count("pool", "labeled") == 5


def test_resync_reports_disappeared_images(synth_ws, synth_copy):
    ws = synth_ws
    lst = synth_copy / "train.txt"
    lab = first(ws, "labeled")
    unl = first(ws, "unlabeled")
    ws.add_mask(unl.id, np.zeros((64, 64), np.uint8), "pseudo")
    lab_masks = ws.masks(lab.id)
    files = mask_files(ws)
    # one line removed, one image file deleted from disk
    remove_list_line(lst, f"{lab.name}.png")
    unl.image_path.unlink()
    report = import_dataset(ws, progress=False)
    assert report.disappeared == sorted([lab.name, unl.name])
    assert len(report.problems) == 1
    p = report.problems[0]
    assert p.file == str(lst) and p.line is not None and f"{unl.name}.png not found" in p.message
    assert ws.count("pool") == 22
    all_pool = {r.name: r for r in ws.images("pool", include_missing=True)}
    assert len(all_pool) == 24 and all_pool[lab.name].missing and all_pool[unl.name].missing
    assert ws.masks(lab.id) == lab_masks and len(ws.masks(unl.id)) == 1
    assert mask_files(ws) == files
    assert ws.count("pool", "labeled") == 3  # the missing one is not counted
    assert lab.name not in {s.name for s in ws.labeled_samples()}
    # a second sync does not report them again; restoring the line brings the image back
    assert import_dataset(ws, progress=False).disappeared == []
    add_list_line(lst, f"{lab.name}.png masks/train/{Path(lab.name).name}.png")
    report = import_dataset(ws, progress=False)
    assert report.added == 0 and report.disappeared == []
    back = ws.image_by_name(lab.name)
    assert not back.missing and back.id == lab.id and back.state == "labeled"
    assert ws.masks(lab.id) == lab_masks


def test_resync_reports_duplicate_content_and_changed_images(synth_ws, synth_copy):
    ws = synth_ws
    lst = synth_copy / "train.txt"
    shutil.copy(synth_copy / "images/train/00000.png", synth_copy / "images/train/copy.png")
    add_list_line(lst, "images/train/copy.png masks/train/00000.png")
    changed = ws.image_by_name("images/train/00007")
    img, _ = generate_sample(9, 0, 7, 64)
    save_png(img, changed.image_path)
    report = import_dataset(ws, progress=False)
    assert report.added == 0
    assert len(report.problems) == 1
    p = report.problems[0]
    assert p.file == str(synth_copy / "images/train/copy.png")
    assert "same content as image images/train/00000" in p.message
    assert report.changed == ["images/train/00007"]
    assert ws.image(changed.id).sha256 == file_sha256(changed.image_path)
    with pytest.raises(WorkspaceError, match="no image named"):
        ws.image_by_name("images/train/copy")


def test_all_bad_inputs_reported_by_one_sync(synth_copy, tmp_path):
    root = synth_copy
    lst = root / "train.txt"
    # 1 corrupt image (random bytes), 2 truncated PNG
    (root / "images/train/00001.png").write_bytes(np.random.default_rng(0).bytes(3000))
    data = (root / "images/train/00002.png").read_bytes()
    (root / "images/train/00002.png").write_bytes(data[: len(data) // 3])
    # 3 a mask of the wrong size, 4 a mask with an unknown class id
    write_mask(np.zeros((60, 64), np.uint8), root / "masks/train/00003.png", voc_palette(NC))
    m = read_mask(root / "masks/train/00004.png", NC)
    m[5, 5] = 9
    write_mask(m, root / "masks/train/00004.png", voc_palette(NC))
    # 5 a missing file in the list, 6 a duplicate line, 7 the same image under another name
    add_list_line(lst, "images/train/99999.png masks/train/99999.png")
    add_list_line(lst, "images/train/00010.png masks/train/00010.png")
    shutil.copy(root / "images/train/00011.png", root / "images/train/twin.png")
    add_list_line(lst, "images/train/twin.png masks/train/00011.png")
    # 8 an image in both pool and evaluation set
    add_list_line(root / "val.txt", "images/train/00012.png masks/train/00012.png")

    with Workspace.create(tmp_path / "ws", make_config(initial_labeled=0), root) as ws:
        report = import_dataset(ws, progress=False)
        text = "\n".join(str(p) for p in report.problems)
        assert len(report.problems) == 8, text
        by_file = {}
        for p in report.problems:
            by_file.setdefault(Path(p.file).name, []).append(p)
        assert "cannot be read as an image" in by_file["00001.png"][0].message
        assert "cannot be read as an image" in by_file["00002.png"][0].message
        assert "mask is 64x60 but its image 00003.png is 64x64" in by_file["00003.png"][0].message
        assert "class ids 9 are outside" in by_file["00004.png"][0].message
        assert str(root / "masks/train/00003.png") == by_file["00003.png"][0].file
        assert str(root / "masks/train/00004.png") == by_file["00004.png"][0].file
        list_problems = sorted(by_file["train.txt"], key=lambda p: p.line)
        assert [p.line for p in list_problems] == [25, 26]
        assert "99999.png not found" in list_problems[0].message
        assert "listed twice" in list_problems[1].message
        assert "same content as image images/train/00011" in by_file["twin.png"][0].message
        assert "both the pool and the evaluation set" in by_file["00012.png"][0].message
        # the bad ones are skipped, the rest added
        names = {r.name for r in ws.images(split=None)}
        for bad in ["00001", "00002", "00003", "00004"]:
            assert f"images/train/{bad}" not in names
        assert "images/train/twin" not in names
        assert ws.count("pool") == 20 and ws.count("val") == 8
        assert ws.image_by_name("images/train/00012").split == "pool"
        assert ws.count("pool", "labeled") == 20
        assert report.added == 28


def test_resync_after_fixing_a_bad_input(synth_copy, tmp_path):
    (synth_copy / "images/train/00001.png").write_bytes(b"garbage")
    with Workspace.create(tmp_path / "ws", make_config(initial_labeled=0), synth_copy) as ws:
        assert len(import_dataset(ws, progress=False).problems) == 1
        img, _ = generate_sample(0, 0, 1, 64)
        save_png(img, synth_copy / "images/train/00001.png")
        report = import_dataset(ws, progress=False)
        assert report.problems == [] and report.added == 1 and report.disappeared == []
        assert ws.image_by_name("images/train/00001").state == "labeled"


def test_sync_with_missing_list_file_changes_nothing(synth_ws, synth_copy):
    ws = synth_ws
    before = pool_state_snapshot(ws)
    (synth_copy / "val.txt").unlink()
    with pytest.raises(DataError, match=r"val\.txt: list file not found"):
        import_dataset(ws, progress=False)
    assert pool_state_snapshot(ws) == before


# ---------------------------------------------------------------------------------------------------------
# class pixels, rounds, scores, selections, sync ids


def test_class_pixels(synth_ws):
    ws = synth_ws
    expect = sum(class_histogram(ws.read_label(r.id), NC) for r in ws.images("pool", "labeled"))
    np.testing.assert_array_equal(ws.class_pixels("pool"), expect)
    assert ws.class_pixels("pool").sum() == 4 * 64 * 64  # the synthetic masks have no ignore pixels
    val_expect = sum(class_histogram(ws.read_label(r.id), NC) for r in ws.images("val"))
    np.testing.assert_array_equal(ws.class_pixels("val"), val_expect)
    # an image leaving the labeled state stops counting (its mask stays)
    rec = first(ws, "labeled")
    own = class_histogram(ws.read_label(rec.id), NC)
    ws.set_state([rec.id], "in_review")
    np.testing.assert_array_equal(ws.class_pixels("pool"), expect - own)
    assert ws.label_mask(rec.id) is not None


def test_rounds(synth_ws, tmp_path):
    ws = synth_ws
    assert ws.current_round() is None and ws.rounds() == []
    with pytest.raises(WorkspaceError, match="no trained model yet"):
        ws.latest_model()
    r0 = ws.start_round("dssn")
    assert r0 == 0 and ws.current_round() == 0
    info = ws.round_info(0)
    assert info["status"] == "training" and info["labeled_count"] == 4 and info["metrics"] is None
    ckpt = tmp_path / "ckpt.pt"
    ckpt.write_bytes(b"x")
    ws.finish_round_training(0, ckpt, {"mIoU": 0.25})
    assert ws.round_info(0)["metrics"] == {"mIoU": 0.25} and ws.round_info(0)["status"] == "trained"
    assert ws.latest_model() == (0, ckpt.resolve())
    assert ws.start_round("supervised") == 1
    assert [r["round"] for r in ws.rounds()] == [0, 1]
    assert ws.round_dir(1) == ws.root / "rounds" / "001"
    assert ws.round_info(5) is None


def test_scores_region_maps_embeddings_round_trip(synth_ws):
    ws = synth_ws
    ids = [r.id for r in ws.images("pool", "unlabeled")[:3]]
    rng = np.random.default_rng(0)
    maps = {i: rng.random((4, 6)).astype(np.float32) for i in ids}
    embs = {i: rng.standard_normal(16).astype(np.float32) for i in ids}
    ws.write_scores(0, [(ids[0], "class_aware", 0.5), (ids[0], "region", 1.25), (ids[1], "class_aware", None),
                        (ids[2], "class_aware", float("nan"))],
                    region_maps=[(i, "relevance", m) for i, m in maps.items()],
                    embeddings=list(embs.items()))
    assert ws.scores(0) == {ids[0]: {"class_aware": 0.5, "region": 1.25}, ids[1]: {"class_aware": None},
                            ids[2]: {"class_aware": None}}
    assert ws.scores(0, "region") == {ids[0]: {"region": 1.25}}
    assert ws.scores(1) == {}
    for i, m in maps.items():
        got = ws.region_map(0, i, "relevance")
        assert got.shape == (4, 6) and got.dtype == np.float32
        np.testing.assert_allclose(got, m, atol=1e-3)
    assert ws.region_map(0, ids[0], "other") is None
    got = ws.embeddings(0)
    assert set(got) == set(ids)
    for i, e in embs.items():
        np.testing.assert_allclose(got[i], e, rtol=1e-3, atol=1e-3)
    # writing again replaces
    ws.write_scores(0, [(ids[0], "class_aware", 2.0)])
    assert ws.scores(0, "class_aware")[ids[0]] == {"class_aware": 2.0}


def test_record_selection_queues_images(synth_ws):
    ws = synth_ws
    r = ws.start_round("dssn")
    picks = [(x.id, 1.0 - k / 10) for k, x in enumerate(ws.images("pool", "unlabeled")[:3])]
    ws.record_selection(r, picks, "dssn")
    assert [ws.image(i).state for i, _ in picks] == ["queued"] * 3
    assert ws.selections(r) == [(i, k, "dssn", s) for k, (i, s) in enumerate(picks)]
    assert ws.round_info(r)["status"] == "selected"
    assert ws.count("pool", "queued") == 3 and ws.count("pool", "unlabeled") == 17


def test_record_selection_refuses_non_unlabeled_all_or_nothing(synth_ws):
    ws = synth_ws
    r = ws.start_round("dssn")
    unl = ws.images("pool", "unlabeled")[:2]
    lab = first(ws, "labeled")
    before = pool_state_snapshot(ws)
    with pytest.raises(WorkspaceError, match="is labeled; only unlabeled images can be selected"):
        ws.record_selection(r, [(unl[0].id, 1.0), (lab.id, 0.5), (unl[1].id, 0.1)], "dssn")
    assert pool_state_snapshot(ws) == before and ws.selections(r) == []
    assert ws.round_info(r)["status"] == "training"
    with pytest.raises(WorkspaceError, match="99999"):
        ws.record_selection(r, [(unl[0].id, 1.0), (99999, 0.5)], "dssn")
    assert pool_state_snapshot(ws) == before and ws.selections(r) == []


def test_sync_ids(synth_ws):
    ws = synth_ws
    a, b = ws.images("pool")[:2]
    assert ws.sync_id(a.id, "label_studio") is None
    ws.set_sync_id(a.id, "label_studio", 42, project="p1")
    ws.set_sync_id(b.id, "label_studio", "task-7")
    assert ws.sync_id(a.id, "label_studio") == "42"
    assert ws.sync_id(b.id, "label_studio") == "task-7"
    assert ws.sync_id(a.id, "cvat") is None
    ws.set_sync_id(a.id, "label_studio", 43)
    assert ws.sync_id(a.id, "label_studio") == "43"
    with Workspace(ws.root) as again:
        assert again.sync_id(a.id, "label_studio") == "43"


def test_samples_lists(synth_ws):
    ws = synth_ws
    lab = ws.labeled_samples()
    assert len(lab) == 4 and all(s.mask is not None and s.mask.is_file() for s in lab)
    assert all(s.mask.is_relative_to(ws.root) for s in lab)
    unl = ws.unlabeled_samples()
    assert len(unl) == 20 and all(s.mask is None for s in unl)
    assert all(s.image.is_file() for s in unl)
    val = ws.val_samples()
    assert len(val) == 8
    for s in val:
        np.testing.assert_array_equal(read_mask(s.mask, NC), ws.read_label(ws.image_by_name(s.name).id))


def test_status_text(synth_ws, synth_copy):
    from annotassist.report import status_text

    ws = synth_ws
    text = status_text(ws)
    for word in STATES + tuple(CLASSES):
        assert word in text
    assert "evaluation set: 8 images" in text and "missing" not in text
    r = ws.start_round("dssn")
    ws.finish_round_training(r, ws.root / "x.pt", {"mIoU": 0.5})
    ws.record_selection(r, [(ws.images("pool", "unlabeled")[-1].id, 1.0)], "dssn")
    remove_list_line(synth_copy / "train.txt", "images/train/00000.png")
    import_dataset(ws, progress=False)
    text = status_text(ws)
    assert "1 pool images missing from the source" in text
    round_line = [ln for ln in text.splitlines() if ln.lstrip().startswith("0  ")]
    assert round_line and "selected" in round_line[0] and "dssn" in round_line[0] and " 50.0 " in round_line[0]
    queued = [ln for ln in text.splitlines() if ln.startswith("queued")][0]
    assert queued.split()[1] == "1"
