"""`annotassist loop`: rounds end to end, killed (SIGKILL) in every step and rerun, a lock, a full disk.

The loop runs in a subprocess with a tiny model (32 px images, Lite0 without weights, 7 steps a round), so a
whole 2-round loop takes seconds. Kills land at named points (annotassist/faults.py): the process SIGKILLs
itself there, which is a kill with no clean-up, at a moment the test chooses.
"""
from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys

import pytest
import torch

from annotassist.lock import WorkspaceLock
from annotassist.workspace import Workspace

from conftest import REPO

TINY = ["synthetic.num_pool=24", "synthetic.num_val=10", "synthetic.size=32", "train.max_iters=7",
        "train.crop_size=32", "train.batch_size=4", "model.weights=none", "pool.initial_labeled=4",
        "train.num_workers=0", "acquire.num_workers=0", "acquire.batch_size=4", "train.eval_every=0",
        "train.adaptive_threads=false"]  # bit-exact reruns need a thread count that does not follow the load


def loop(ws, *extra, kill_at: str | None = None, preexec=None, rounds: int = 2):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("ANNOTASSIST_KILL_AT", None)
    if kill_at:
        env["ANNOTASSIST_KILL_AT"] = kill_at
    args = [sys.executable, "-m", "annotassist", "loop", "--project", "demo", "--workspace", str(ws),
            "--rounds", str(rounds), "--budget", "4", "--device", "cpu", *extra]
    for s in TINY:
        args += ["--set", s]
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
                          preexec_fn=preexec)


def snapshot(ws_path) -> dict:
    """Everything a finished loop leaves that must not depend on crashes: labels, masks, rounds, selections."""
    with Workspace(ws_path) as ws:
        images = {r.name: r.state for r in ws.images("pool")}
        masks = {}
        for r in ws.images(None):
            masks[r.name] = [(m.kind, m.round, m.changed_pixels, m.changed_regions,
                              hashlib.sha256(m.path.read_bytes()).hexdigest()) for m in ws.masks(r.id)]
        rounds = [(r["round"], r["status"], r["labeled_count"], round(r["metrics"]["mIoU"], 6),
                   json.dumps(r["metrics"]["per_class_iou"], sort_keys=True)) for r in ws.rounds()]
        sel = {r: sorted(ws.selections(r)) for r in range(len(rounds))}
        steps = [(s["round"], s["step"], s["status"]) for s in ws.loop_steps()]
        # the final model bit for bit: resumed training must replay exactly
        saved = torch.load(ws.round_dir(len(rounds) - 1) / "model.pt", map_location="cpu", weights_only=False)
        digest = hashlib.sha256()
        for part in ("model", "discriminator"):
            for k, v in sorted((saved[part] or {}).items()):
                digest.update(k.encode() + v.numpy().tobytes())
        model = digest.hexdigest()
    return {"images": images, "masks": masks, "rounds": rounds, "selections": sel, "steps": steps, "model": model}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    ws = tmp_path_factory.mktemp("loop") / "ws"
    r = loop(ws)
    assert r.returncode == 0, r.stderr[-3000:]
    return ws, r.stdout


def test_loop_runs_rounds_end_to_end(uninterrupted):
    ws, out = uninterrupted
    snap = snapshot(ws)
    assert [r[0] for r in snap["rounds"]] == [0, 1, 2]
    assert [r[2] for r in snap["rounds"]] == [4, 8, 12]  # 4 labeled to start, +4 a round
    assert sum(s == "labeled" for s in snap["images"].values()) == 12
    # every corrected image went pseudo -> human in its round, with the effort recorded
    corrected = [m for ms in snap["masks"].values() for m in ms if m[0] == "human"]
    assert len(corrected) == 8 and all(m[2] is not None for m in corrected)
    assert all(any(m[0] == "pseudo" and m[1] == h[1] for m in ms) for ms in snap["masks"].values()
               for h in ms if h[0] == "human")
    assert "all 2 rounds done" in out
    # a rerun of a finished loop does nothing
    before = snapshot(ws)
    r = loop(ws)
    assert r.returncode == 0 and "round" not in r.stdout.split("loop stopped")[0], r.stdout
    assert snapshot(ws) == before


def test_killed_in_every_step_then_rerun_equals_an_uninterrupted_run(uninterrupted, tmp_path):
    ws = tmp_path / "ws"
    # each kill fires the first time the loop reaches it after the rerun; 5 steps make an epoch here (20 unlabeled
    # images, 4 a batch), 4 in round 1
    kills = ["train.step:6",    # after the epoch-end checkpoint at step 5: training continues from it
             "score.batch:3",   # mid-way through scoring the pool
             "push.image:2",    # pseudo-masks half stored
             "pull.image:2",    # corrections half pulled
             "train.step:3"]    # round 1, before its first checkpoint: that round starts over
    resumed = []
    for point in kills:
        r = loop(ws, kill_at=point)
        assert r.returncode == -signal.SIGKILL, (point, r.returncode, r.stderr[-2000:])
        resumed.append(r.stdout)
    r = loop(ws)
    assert r.returncode == 0, r.stderr[-3000:]
    resumed.append(r.stdout)
    # every run after a kill picked up the step it died in
    assert all("continuing after an interruption" in out for out in resumed[1:]), resumed
    assert snapshot(ws) == snapshot(uninterrupted[0])


def test_second_loop_on_a_workspace_is_refused(uninterrupted, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(uninterrupted[0], ws)
    with WorkspaceLock(ws):
        r = loop(ws, rounds=3)
    assert r.returncode == 2
    assert "another annotassist loop is running" in r.stderr and str(os.getpid()) in r.stderr
    with Workspace(ws) as w:
        assert len(w.rounds()) == 3 and w.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _small_files():
    # a file-size limit is a full disk as far as the writer can tell (ENOSPC and EFBIG both fail the write)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))


def test_full_disk_gives_a_clear_error_and_keeps_the_last_round(uninterrupted, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(uninterrupted[0], ws)
    before = snapshot(ws)
    r = loop(ws, rounds=3, preexec=_small_files)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "disk may be full" in r.stderr or "cannot write to the workspace" in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    with Workspace(ws) as w:
        assert w.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    after = snapshot(ws)
    assert after["rounds"] == before["rounds"]
    # nothing stored before was lost or rewritten (corrections of the queued images, each one transaction, may
    # have come in before the disk filled up: the finished loop queued them, so the rerun pulls them first)
    assert all(after["masks"][name][:len(ms)] == ms for name, ms in before["masks"].items())
    # with space again, the same command finishes the round
    r = loop(ws, rounds=3)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(snapshot(ws)["rounds"]) == 4


@pytest.mark.distributed
def test_loop_waits_for_the_editor_and_goes_on_when_the_round_is_saved(tmp_path):
    """--annotator gradio: the loop opens the editor, waits, and trains the next round once every queued image
    is saved (here a person accepts each pre-annotation through the editor's own API)."""
    from gradio_client import Client

    ws = tmp_path / "ws"
    args = [sys.executable, "-m", "annotassist", "loop", "--project", "demo", "--workspace", str(ws), "--rounds", "1",
            "--budget", "3", "--device", "cpu", "--annotator", "gradio"] + [a for s in TINY for a in ("--set", s)]
    proc = subprocess.Popen(args, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url, seen = None, []
        for line in proc.stdout:
            seen.append(line)
            if "in the editor: http" in line:
                url = line.split("in the editor: ")[1].split()[0]
                break
        assert url, "".join(seen[-30:])
        client = Client(url, verbose=False)
        client.predict(api_name="/start")
        for _ in range(3):
            client.predict(api_name="/accept")
        rest = proc.communicate(timeout=300)[0]
    finally:
        proc.kill()
    assert proc.returncode == 0, rest[-3000:]
    with Workspace(ws) as w:
        assert [x["labeled_count"] for x in w.rounds()] == [4, 7]
        picked = [i for i, *_ in w.selections(0)]
        assert all(w.image(i).state == "labeled" and w.masks(i, "human")[-1].source.startswith("editor")
                   for i in picked), [w.masks(i, "human") for i in picked]


def test_demo_then_report(tmp_path):
    """`annotassist demo` (tiny sizes) runs the loop, plots, exports, and points at the editor; `report` reads
    the same workspace back as a table with per-class IoU and three PNGs."""
    from PIL import Image

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = tmp_path / "demo"
    args = [sys.executable, "-m", "annotassist", "demo", "--out", str(out), "--rounds", "1", "--device", "cpu"]
    sets = [s for s in TINY if not s.startswith("pool.")] + ["acquire.budget=4", "pool.initial_labeled=4"]
    r = subprocess.run(args + [a for s in sets for a in ("--set", s)], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "all 1 rounds done" in r.stdout and f"annotassist ui --workspace {out / 'workspace'}" in r.stdout
    assert (out / "export" / "labeled.txt").read_text().count("\n") == 8
    r = subprocess.run([sys.executable, "-m", "annotassist", "report", "--workspace", str(out / "workspace")],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    header = r.stdout.splitlines()[0].split()
    assert header[:3] == ["round", "labeled", "mIoU"] and "star" in header
    for name in ("learning_curve", "per_class_iou", "selected_classes"):
        png = out / "workspace" / "report" / f"{name}.png"
        assert Image.open(png).size[0] > 300, png
