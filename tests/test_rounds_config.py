"""One resolved config per workspace, one owner of the round: what used to disagree, pinned.

Each test drives the real command in a subprocess on a tiny generated set (32 px, Lite0 without weights)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from annotassist.workspace import Workspace

from conftest import REPO, list_config_dict, write_yaml

TINY = ["synthetic.num_pool=24", "synthetic.num_val=10", "synthetic.size=32", "train.max_iters=7",
        "train.crop_size=32", "train.batch_size=4", "model.weights=none", "pool.initial_labeled=4",
        "train.num_workers=0", "acquire.num_workers=0", "acquire.batch_size=4", "train.eval_every=0"]


def run(*args, env_extra: dict | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env_extra or {})}
    env.pop("ANNOTASSIST_KILL_AT", None) if not env_extra else None
    return subprocess.run([sys.executable, "-m", "annotassist", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def tiny_loop(ws: Path, *extra, env_extra=None) -> subprocess.CompletedProcess:
    sets = [a for s in TINY for a in ("--set", s)]
    return run("loop", "--project", "demo", "--workspace", ws, "--device", "cpu", "--budget", "4", *sets, *extra,
               env_extra=env_extra)


def test_a_set_on_a_later_loop_is_stored_and_reaches_the_annotator(tmp_path):
    ws = tmp_path / "ws"
    r = tiny_loop(ws, "--rounds", "0")
    assert r.returncode == 0, r.stderr[-2000:]
    r = run("loop", "--project", ws, "--rounds", "0", "--set", "loop.labelstudio_url=http://127.0.0.1:9")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "loop.labelstudio_url: 'http://localhost:8080' -> 'http://127.0.0.1:9'" in r.stdout
    r = run("loop", "--project", ws, "--rounds", "0")  # a plain rerun remembers it
    assert r.returncode == 0 and "updated" not in r.stdout
    with Workspace(ws) as w:
        assert w.config.loop.labelstudio_url == "http://127.0.0.1:9"
        from annotassist.annotate.annotators import make_annotator
        annotator = make_annotator("labelstudio", w, api_key="unused: nothing is sent")
        assert annotator.sync.url == "http://127.0.0.1:9"
        annotator.close()


def test_a_round_resumed_with_other_training_settings_is_refused_then_restarted(tmp_path):
    ws = tmp_path / "ws"
    r = tiny_loop(ws, "--rounds", "0", env_extra={"ANNOTASSIST_KILL_AT": "train.step:6"})
    assert r.returncode == -9
    # round 0 checkpointed at the end of its first epoch (5 steps); now the crop changes
    r = tiny_loop(ws, "--rounds", "0", "--set", "train.crop_size=40")
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert "train.crop_size: 32 -> 40" in r.stderr and "--restart-round" in r.stderr and "Traceback" not in r.stderr
    with Workspace(ws) as w:
        assert w.round_info(0)["status"] == "training" and w.round_config(0).train.crop_size == 32
    r = tiny_loop(ws, "--rounds", "0", "--set", "train.crop_size=40", "--restart-round")
    assert r.returncode == 0, r.stderr[-2000:]
    with Workspace(ws) as w:
        # trained again from its start, then (the loop ends with the next queue ready) scored and selected
        assert w.round_info(0)["status"] == "selected"
        assert w.round_config(0).to_dict() == w.config.to_dict() and w.config.train.crop_size == 40
        # every logged step of the finished round ran at the new crop: it started over, nothing was mixed
        assert (w.round_dir(0) / "log.jsonl").is_file()


def test_init_again_applies_a_corrected_config_when_the_first_init_failed(tmp_path, synth_dir):
    bad = write_yaml(tmp_path / "bad.yaml", list_config_dict(root=str(synth_dir), pool="no-such-list.txt"))
    r = run("init", "--config", bad, "--workspace", tmp_path / "ws", cwd=tmp_path)
    assert r.returncode == 2 and "no-such-list.txt" in r.stderr
    good = write_yaml(tmp_path / "good.yaml", list_config_dict(root=str(synth_dir), initial_labeled=4))
    r = run("init", "--config", good, "--workspace", tmp_path / "ws", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "held no images yet" in r.stdout and "added 32 images (4 labeled)" in r.stdout
    with Workspace(tmp_path / "ws") as w:
        assert w.config.dataset.pool == "train.txt" and w.count("pool") == 24
    # on a workspace that holds images, another config is not applied silently: it is named
    other = write_yaml(tmp_path / "other.yaml", {**list_config_dict(root=str(synth_dir), initial_labeled=4),
                                                 "train": {"crop_size": 99}})
    r = run("init", "--config", other, "--workspace", tmp_path / "ws", cwd=tmp_path)
    assert r.returncode == 0 and "train.crop_size: 513 -> 99" in r.stdout and "not applied" in r.stdout


def test_a_profile_chosen_at_creation_stays_for_the_next_plain_loop(tmp_path, synth_dir):
    """The GPU recipe here asks for ResNet-50 ImageNet weights, which cannot be fetched offline; the profile
    swaps in Lite0. A plain loop after `init --profile small` must keep the profile."""
    data = list_config_dict(root=str(synth_dir), initial_labeled=4)
    data["model"] = {"backbone": "resnet50", "weights": "imagenet"}
    data["train"] = {"max_iters": 4, "crop_size": 32, "batch_size": 2, "num_workers": 0, "eval_every": 0}
    data["acquire"] = {"num_workers": 0}
    data["profiles"] = {"small": {"model": {"backbone": "efficientnet_lite0", "weights": "none"}}}
    cfg = write_yaml(tmp_path / "c.yaml", data)
    r = run("init", "--config", cfg, "--profile", "small", "--workspace", tmp_path / "ws", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = run("loop", "--project", tmp_path / "ws", "--rounds", "0", "--device", "cpu", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    with Workspace(tmp_path / "ws") as w:
        assert w.config.profile == "small" and w.round_config(0).model.backbone == "efficientnet_lite0"


@pytest.mark.distributed
def test_torchrun_processes_train_and_score_with_the_stored_config(tmp_path):
    """--gpus N runs training and scoring as N torchrun processes (gloo on CPU, NCCL on GPUs), and those
    processes read the workspace's stored config, including a --set given to this later loop."""
    ws = tmp_path / "ws"
    r = tiny_loop(ws, "--rounds", "0")
    assert r.returncode == 0, r.stderr[-2000:]
    r = run("loop", "--project", ws, "--rounds", "1", "--gpus", "2", "--device", "cpu", "--set", "train.lr=0.02")
    assert r.returncode == 0, r.stderr[-3000:]
    with Workspace(ws) as w:
        assert [x["status"] for x in w.rounds()] == ["selected", "selected"]  # the next queue is ready
        assert [x["labeled_count"] for x in w.rounds()] == [4, 8]
        # both ranks' shards of round 1's pool were scored and folded into the workspace
        assert len(w.scores(1)) == 16 and len(w.selections(1)) == 4  # 24 - 8 labeled
        assert w.round_config(1).train.lr == 0.02 and w.round_config(1).to_dict() == w.config.to_dict()
        saved = torch.load(w.round_dir(1) / "model.pt", map_location="cpu", weights_only=False)
        assert saved["config"] == w.config.to_dict()
