"""The real `annotassist` command, run in a subprocess."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from annotassist.data.layouts import read_list
from annotassist.data.masks import read_mask
from annotassist.workspace import Workspace

from conftest import CAMVID, CAMVID_CLASSES, CONFIGS, REPO, list_config_dict, needs_camvid, write_yaml

STATE_NAMES = ["unlabeled", "queued", "in_review", "labeled"]


def cli(*args, cwd: Path, module: str = "annotassist.cli", timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def assert_clean_error(proc: subprocess.CompletedProcess, *parts: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert "\nerror: " in "\n" + proc.stderr
    for part in parts:
        assert part in proc.stderr, (part, proc.stderr)


@pytest.fixture(scope="module")
def camvid_cli_ws(tmp_path_factory):
    """`annotassist init` on real CamVid, run once for the module."""
    if not (CAMVID / "train.txt").is_file():
        pytest.skip("CamVid not available")
    tmp = tmp_path_factory.mktemp("cli_camvid")
    proc = cli("init", "--config", CONFIGS / "camvid.yaml", "--data", CAMVID, "--workspace", tmp / "ws", cwd=tmp)
    return tmp, proc


@needs_camvid
def test_init_on_camvid(camvid_cli_ws):
    tmp, proc = camvid_cli_ws
    assert proc.returncode == 0, proc.stderr
    assert "added 468 images (16 labeled), 0 unchanged" in proc.stdout
    assert "problem" not in proc.stdout
    assert "Traceback" not in proc.stderr
    with Workspace(tmp / "ws") as ws:
        assert ws.count("pool") == 367 and ws.count("pool", "labeled") == 16 and ws.count("val") == 101
        assert ws.data_root == CAMVID.resolve()
        assert ws.config.dataset.classes == CAMVID_CLASSES


@needs_camvid
def test_status_on_camvid(camvid_cli_ws):
    tmp, _ = camvid_cli_ws
    proc = cli("status", "--workspace", tmp / "ws", cwd=tmp)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for state in STATE_NAMES:
        assert state in out
    for name in CAMVID_CLASSES:
        assert name in out
    lines = {}
    for ln in out.splitlines():
        if ln.strip():
            lines.setdefault(ln.split()[0], ln.split())  # the first table is the pool's states
    assert lines["labeled"][1] == "16" and lines["unlabeled"][1] == "351" and lines["total"][1] == "367"
    assert "evaluation set: 101 images" in out
    assert "camvid, 11 classes" in out


@needs_camvid
def test_export_on_camvid(camvid_cli_ws):
    tmp, _ = camvid_cli_ws
    out = tmp / "export"
    proc = cli("export", "--workspace", tmp / "ws", "--out", out, "--link", cwd=tmp)
    assert proc.returncode == 0, proc.stderr
    assert "exported 16 labeled, 351 unlabeled, 101 val images" in proc.stdout
    samples, problems = read_list(out / "labeled.txt", out)
    assert problems == [] and len(samples) == 16
    with Workspace(tmp / "ws") as ws:
        for s in samples[:4]:
            rec = ws.image_by_name(s.name.removeprefix("JPEGImages/"))
            np.testing.assert_array_equal(read_mask(s.mask, 11), ws.read_label(rec.id))
    assert len((out / "unlabeled.txt").read_text().splitlines()) == 351


@needs_camvid
def test_init_again_keeps_workspace(camvid_cli_ws):
    tmp, _ = camvid_cli_ws
    proc = cli("init", "--config", CONFIGS / "camvid.yaml", "--data", CAMVID, "--workspace", tmp / "ws", cwd=tmp)
    assert proc.returncode == 0, proc.stderr
    assert "updating existing workspace" in proc.stdout
    assert "added 0 images (0 labeled), 468 unchanged" in proc.stdout
    with Workspace(tmp / "ws") as ws:
        assert ws.count("pool", "labeled") == 16


def test_synth_then_init_status_export(tmp_path):
    proc = cli("synth", "--out", tmp_path / "data", "--num-pool", 6, "--num-val", 2, "--size", 32, "--seed", 3,
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "train.txt: 6, val.txt: 2" in proc.stdout
    samples, problems = read_list(tmp_path / "data/train.txt", tmp_path / "data")
    assert problems == [] and len(samples) == 6
    cfg = write_yaml(tmp_path / "c.yaml", list_config_dict(initial_labeled=2))
    proc = cli("init", "--config", cfg, "--data", tmp_path / "data", "--workspace", tmp_path / "ws", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "added 8 images (2 labeled)" in proc.stdout
    # --labeled overrides pool.initial_labeled, --seed the seed
    proc = cli("init", "--config", cfg, "--data", tmp_path / "data", "--workspace", tmp_path / "ws3",
               "--labeled", 0, cwd=tmp_path)
    assert "added 8 images (6 labeled)" in proc.stdout
    proc = cli("status", "--workspace", tmp_path / "ws", cwd=tmp_path)
    assert proc.returncode == 0 and "star" in proc.stdout and "in_review" in proc.stdout
    proc = cli("export", "--workspace", tmp_path / "ws", "--out", tmp_path / "exp", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "exported 2 labeled, 4 unlabeled, 2 val images" in proc.stdout
    assert len(list((tmp_path / "exp/JPEGImages").rglob("*.png"))) == 8


def test_init_demo_config_generates_data(tmp_path):
    proc = cli("init", "--config", CONFIGS / "demo.yaml", "--workspace", tmp_path / "ws",
               "--set", "synthetic.num_pool=20", "--set", "synthetic.num_val=4", "--set", "synthetic.size=32",
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "added 24 images (16 labeled)" in proc.stdout
    assert (tmp_path / "ws/data/synthetic.json").is_file()


def test_labeled_list(tmp_path, synth_dir):
    cfg = write_yaml(tmp_path / "c.yaml", list_config_dict(initial_labeled=1))
    lst = tmp_path / "first.txt"
    lst.write_text("# my labeled set\nimages/train/00003.png masks/train/00003.png\nimages/train/00004.png\n")
    proc = cli("init", "--config", cfg, "--data", synth_dir, "--workspace", tmp_path / "ws", "--labeled-list", lst,
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    with Workspace(tmp_path / "ws") as ws:
        for name in ["images/train/00003", "images/train/00004"]:
            assert ws.image_by_name(name).state == "labeled"
        assert 2 <= ws.count("pool", "labeled") <= 3
    lst.write_text("images/train/nope.png\n")
    proc = cli("init", "--config", cfg, "--data", synth_dir, "--workspace", tmp_path / "ws", "--labeled-list", lst,
               cwd=tmp_path)
    assert_clean_error(proc, f"{lst}:1", "not in the pool")


def test_broken_config_exits_2_naming_the_key(tmp_path, synth_dir):
    data = list_config_dict()
    data["train"] = {"epoch": 3, "lr": "abc"}
    cfg = write_yaml(tmp_path / "bad.yaml", data)
    proc = cli("init", "--config", cfg, "--data", synth_dir, "--workspace", tmp_path / "ws", cwd=tmp_path)
    assert_clean_error(proc, str(cfg), "'train.epoch'", "did you mean 'train.epochs'?", "train.lr")
    assert not (tmp_path / "ws").exists()


def test_bad_set_and_profile_exit_2(tmp_path, synth_dir):
    cfg = write_yaml(tmp_path / "c.yaml", list_config_dict())
    base = ["init", "--config", cfg, "--data", synth_dir, "--workspace", tmp_path / "ws"]
    assert_clean_error(cli(*base, "--set", "model.backbone=vgg16", cwd=tmp_path), "model.backbone")
    assert_clean_error(cli(*base, "--set", "train.epochs", cwd=tmp_path), "KEY=VALUE")
    assert_clean_error(cli(*base, "--profile", "cpu", cwd=tmp_path), "no profile 'cpu'")
    assert_clean_error(cli("init", "--config", tmp_path / "missing.yaml", "--data", synth_dir, "--workspace",
                           tmp_path / "ws", cwd=tmp_path), "config file not found")
    bad_yaml = tmp_path / "y.yaml"
    bad_yaml.write_text("dataset: [a\n")
    assert_clean_error(cli("init", "--config", bad_yaml, "--workspace", tmp_path / "ws", cwd=tmp_path),
                       str(bad_yaml), "not valid YAML")


def test_missing_data_root_exits_2(tmp_path):
    proc = cli("init", "--config", CONFIGS / "voc.yaml", "--data", tmp_path / "nope", "--workspace",
               tmp_path / "ws", cwd=tmp_path)
    assert_clean_error(proc, "data root", "nope", "--data")


def test_status_without_workspace_says_how_to_create_one(tmp_path):
    proc = cli("status", "--workspace", tmp_path / "empty", cwd=tmp_path)
    assert_clean_error(proc, "no workspace here", "annotassist init --config CONFIG --workspace")
    proc = cli("export", "--workspace", tmp_path / "empty", "--out", tmp_path / "o", cwd=tmp_path)
    assert_clean_error(proc, "annotassist init")


def test_init_strict_exits_1_when_inputs_were_skipped(tmp_path, synth_dir):
    data = tmp_path / "data"
    data.mkdir()
    for f in ("train.txt", "val.txt"):
        (data / f).write_text((synth_dir / f).read_text())
    (data / "images").symlink_to(synth_dir / "images")
    (data / "masks").symlink_to(synth_dir / "masks")
    with open(data / "train.txt", "a") as f:
        f.write("images/train/gone.png masks/train/gone.png\n")
    cfg = write_yaml(tmp_path / "c.yaml", list_config_dict(initial_labeled=2))
    proc = cli("init", "--config", cfg, "--data", data, "--workspace", tmp_path / "strict", "--strict", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 problem(s)" in proc.stdout and f"{data / 'train.txt'}:25" in proc.stdout
    assert "gone.png not found" in proc.stdout
    assert "Traceback" not in proc.stderr
    # without --strict the same input is accepted, the rest added
    proc = cli("init", "--config", cfg, "--data", data, "--workspace", tmp_path / "lax", cwd=tmp_path)
    assert proc.returncode == 0 and "added 32 images" in proc.stdout and "1 problem(s)" in proc.stdout
    # a clean source passes --strict
    proc = cli("init", "--config", cfg, "--data", synth_dir, "--workspace", tmp_path / "ok", "--strict",
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout


def test_usage_errors():
    proc = cli(cwd=REPO)
    assert proc.returncode == 2 and "usage: annotassist" in proc.stderr
    proc = cli("status", cwd=REPO)
    assert proc.returncode == 2 and "--workspace" in proc.stderr


@pytest.mark.skipif(not (REPO / "annotassist" / "__main__.py").is_file(), reason="no annotassist/__main__.py")
def test_python_dash_m_annotassist(tmp_path):
    proc = cli("status", "--workspace", tmp_path, cwd=tmp_path, module="annotassist")
    assert_clean_error(proc, "no workspace here")
