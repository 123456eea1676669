"""Export never loses a user's files: not the dataset's, not the workspace's, not anything else in --out.

Each case here lost data before the export was rewritten (issue: "Never lose a user's data")."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotassist.config import voc_palette
from annotassist.export import MARKER, ExportError, export
from annotassist.workspace import Workspace

from conftest import CONFIGS, list_config_dict, write_yaml

RNG = np.random.default_rng(3)


def cli(*args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "annotassist.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120, env=env)


def snapshot(root: Path) -> dict[str, tuple[bool, str]]:
    """Every entry under root: (is a symlink, sha256 of its bytes)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() or p.is_symlink():
            out[str(p.relative_to(root))] = (p.is_symlink(), hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def assert_clean_error(proc, *parts):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for part in parts:
        assert part in proc.stderr, (part, proc.stderr)


@pytest.fixture
def voc_ws(tmp_path):
    """A VOC-layout dataset (4 images, 3 with masks) and a workspace on it made with `annotassist init`."""
    root = tmp_path / "VOC"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    pal = [c for rgb in voc_palette(21) for c in rgb] + [0] * (768 - 63)
    for k in range(4):
        Image.fromarray(RNG.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(root / "JPEGImages" / f"im{k}.jpg")
        if k < 3:
            m = Image.fromarray(RNG.integers(0, 21, (20, 24)).astype(np.uint8), mode="P")
            m.putpalette(pal)
            m.save(root / "SegmentationClass" / f"im{k}.png")
    (sets / "train.txt").write_text("im0\nim1\nim3\n")
    (sets / "val.txt").write_text("im2\n")
    proc = cli("init", "--config", CONFIGS / "voc.yaml", "--data", root, "--workspace", tmp_path / "ws",
               "--set", "dataset.pool=train", "--set", "dataset.val=val", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return root, tmp_path / "ws"


@pytest.mark.parametrize("link", [True, False])
def test_export_into_the_dataset_root_is_refused(voc_ws, tmp_path, link):
    root, ws = voc_ws
    before = snapshot(root)
    proc = cli("export", "--workspace", ws, "--out", root, *(["--link"] if link else []), cwd=tmp_path)
    assert_clean_error(proc, str(root.resolve()), "dataset")
    assert snapshot(root) == before  # no image replaced by a link to itself, none deleted
    # inside the dataset root, or around it, is refused too; so is the workspace
    for out in (root / "export", tmp_path, ws, ws / "out"):
        assert_clean_error(cli("export", "--workspace", ws, "--out", out, cwd=tmp_path), "--out")
    assert snapshot(root) == before
    assert not (root / "export").exists() and not (ws / "out").exists()


def test_force_never_replaces_what_is_there(voc_ws, tmp_path):
    """--force adds the export beside the dataset's files; where a name collides, nothing is written at all."""
    root, ws = voc_ws
    before = snapshot(root)
    proc = cli("export", "--workspace", ws, "--out", root, "--force", cwd=tmp_path)
    assert_clean_error(proc, "did not write", "JPEGImages/im0.jpg")
    assert snapshot(root) == before
    assert not any(p.name.endswith("annotassist-staging") for p in root.parent.iterdir())


def test_folder_holding_another_dataset_is_refused(synth_ws, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "val.txt").write_text("images/a.png masks/a.png\n")
    (other / "labeled.txt").write_text("images/b.png masks/b.png\n")
    before = snapshot(other)
    with pytest.raises(ExportError, match="did not write"):
        export(synth_ws, other, progress=False)
    with pytest.raises(ExportError, match="never replaced"):
        export(synth_ws, other, progress=False, force=True)  # its val.txt would be overwritten
    assert snapshot(other) == before


def test_force_writes_beside_unrelated_files(synth_ws, tmp_path):
    out = tmp_path / "mixed"
    out.mkdir()
    (out / "notes.md").write_text("my notes")
    summary = export(synth_ws, out, progress=False, force=True)
    assert summary["labeled_count"] == 4
    assert (out / "notes.md").read_text() == "my notes"
    assert (out / "labeled.txt").is_file()


def test_reexport_replaces_only_its_own_files(synth_ws, tmp_path):
    out = tmp_path / "e"
    export(synth_ws, out, progress=False)
    assert (out / MARKER).is_file()
    ws = synth_ws
    unl = ws.images("pool", "unlabeled")[0]
    ws.add_mask(unl.id, np.full((64, 64), 2, np.uint8), "human")
    summary = export(ws, out, progress=False)  # a folder an export made: no --force needed
    assert summary["labeled_count"] == 5
    (out / "my_run").mkdir()
    (out / "my_run" / "log.txt").write_text("keep me")
    with pytest.raises(ExportError, match="did not write"):
        export(ws, out, progress=False)
    export(ws, out, progress=False, force=True)
    assert (out / "my_run" / "log.txt").read_text() == "keep me"


def test_list_paths_outside_the_root_are_reported(tmp_path):
    """`../../outside/evil.png` in a list is a bad input (file and line), never read, never exported over."""
    root = tmp_path / "data" / "set"
    outside = tmp_path / "outside"
    for d in (root / "images", root / "masks", outside):
        d.mkdir(parents=True)
    for name, where in (("good", root / "images"), ("evil", outside)):
        Image.fromarray(RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(where / f"{name}.png")
    Image.fromarray(RNG.integers(0, 6, (16, 16)).astype(np.uint8)).save(root / "masks" / "good.png")
    Image.fromarray(RNG.integers(0, 6, (16, 16)).astype(np.uint8)).save(outside / "evil_mask.png")
    (root / "train.txt").write_text("images/good.png masks/good.png\n../../outside/evil.png "
                                    "../../outside/evil_mask.png\n/etc/passwd\n")
    (root / "val.txt").write_text("")
    before = snapshot(outside)
    cfg = write_yaml(tmp_path / "c.yaml", list_config_dict(root=str(root)))
    proc = cli("init", "--config", cfg, "--workspace", tmp_path / "ws", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"{root / 'train.txt'}:2: path ../../outside/evil.png leads outside the dataset root" in proc.stdout
    assert f"{root / 'train.txt'}:3: path /etc/passwd leads outside the dataset root" in proc.stdout
    with Workspace(tmp_path / "ws") as ws:
        assert [r.name for r in ws.images("pool")] == ["images/good"]
    proc = cli("export", "--workspace", tmp_path / "ws", "--out", tmp_path / "exp", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert snapshot(outside) == before


def test_names_leaving_the_export_folder_are_skipped(synth_ws, tmp_path):
    """A workspace made before the check (its pool holds a '..' name) exports everything else, nothing outside."""
    ws = synth_ws
    rec = ws.images("pool", "labeled")[0]
    with ws.transaction() as db:  # what an older annotassist could store
        db.execute("UPDATE images SET name = ? WHERE id = ?", ("../../escaped", rec.id))
    out = tmp_path / "deep" / "e"
    summary = export(ws, out, progress=False)
    assert summary["labeled_count"] == 3 and len(summary["skipped"]) == 1
    assert "outside the export folder" in summary["skipped"][0]
    assert not (tmp_path / "escaped.png").exists() and not list(tmp_path.glob("escaped*"))


def test_unreadable_label_stops_before_out_changes(synth_ws, tmp_path):
    ws = synth_ws
    out = tmp_path / "e"
    export(ws, out, progress=False)
    before = snapshot(out)
    lab = ws.images("pool", "labeled")[0]
    ws.label_mask(lab.id).path.unlink()  # a mask file lost from the workspace
    with pytest.raises(ExportError, match=f"label of image {lab.name}.*nothing was exported"):
        export(ws, out, progress=False)
    assert snapshot(out) == before
    assert not any("staging" in p.name for p in tmp_path.iterdir())


def test_killed_export_leaves_out_untouched_and_reruns(synth_ws, tmp_path):
    ws_path = synth_ws.root
    out = tmp_path / "e"
    env = {**os.environ, "ANNOTASSIST_KILL_AT": "export.image:3"}
    proc = cli("export", "--workspace", ws_path, "--out", out, cwd=tmp_path, env=env)
    assert proc.returncode == -9
    assert not out.exists()  # everything was still in the staging folder
    env.pop("ANNOTASSIST_KILL_AT")
    proc = cli("export", "--workspace", ws_path, "--out", out, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "exported 4 labeled, 20 unlabeled, 8 val images" in proc.stdout
    assert not any("staging" in p.name for p in tmp_path.iterdir())


def test_out_that_is_a_file_or_unwritable(synth_ws, tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    proc = cli("export", "--workspace", synth_ws.root, "--out", f, cwd=tmp_path)
    assert_clean_error(proc, "is a file")
    proc = cli("export", "--workspace", synth_ws.root, "--out", "/dev/null", cwd=tmp_path)
    assert_clean_error(proc, "is a file")
    assert f.read_text() == "x"
