"""One writer per workspace: every verb that changes the pool takes the workspace lock; reads say who holds it;
the editor's saves and the loop's own torchrun children are let through (annotassist/lock.py).

Real processes throughout: a real `annotassist loop` holds the lock while it waits for the editor, and the
refused commands are real `python -m annotassist` runs."""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time

import pytest

from annotassist.errors import WorkspaceError
from annotassist.lock import LOCK_FILE, TOKEN_ENV, WorkspaceLock, holder
from annotassist.workspace import Workspace

from conftest import REPO, list_config_dict, write_yaml
from test_bad_input import free_port
from test_loop import TINY

ENV = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}


def cli(*args, cwd=REPO, env=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "annotassist", *map(str, args)], cwd=cwd, env=env or ENV,
                          capture_output=True, text=True, timeout=timeout)


def pool_rows(ws_path) -> dict:
    """What a refused writer must not change: states, mask versions, rounds, selections, loop steps."""
    with Workspace(ws_path, write=False) as ws:
        q = lambda sql: [tuple(r) for r in ws.db.execute(sql).fetchall()]  # noqa: E731
        return {"images": q("SELECT id, state FROM images ORDER BY id"),
                "masks": q("SELECT id, image_id, kind FROM masks ORDER BY id"),
                "rounds": q("SELECT round, status FROM rounds ORDER BY round"),
                "selections": q("SELECT round, image_id FROM selections ORDER BY round, image_id"),
                "steps": q("SELECT round, step, status FROM loop_steps ORDER BY round, step"),
                "config": (ws.root / "config.yaml").read_text()}


def read_until(proc: subprocess.Popen, marker: str, timeout: float) -> str:
    """What a process printed, up to and including the line holding `marker`; fails after `timeout` seconds
    (a process that never prints it must not hang the test)."""
    out, deadline = b"", time.monotonic() + timeout
    while True:
        text = out.decode(errors="replace")
        at = text.find(marker)
        if at >= 0 and "\n" in text[at:]:
            return text
        left = deadline - time.monotonic()
        assert left > 0 and proc.poll() is None, text[-3000:]
        ready, _, _ = select.select([proc.stdout], [], [], min(left, 1.0))
        if ready:
            out += os.read(proc.stdout.fileno(), 65536)


def assert_refused(proc, verb: str, holder_pid: int) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-1500:], proc.stderr[-1500:])
    assert "Traceback" not in proc.stderr
    assert "another annotassist loop is running" in proc.stderr, proc.stderr
    assert f"pid {holder_pid} " in proc.stderr and f"'{verb}' changes the pool" in proc.stderr, proc.stderr


def test_writers_are_refused_beside_a_running_loop_but_reads_and_the_editor_go_on(tmp_path):
    """The issue's case: select and train beside a running loop queued images the loop never saw and left a
    stray round as the latest. Now they are refused (naming the loop's pid), status and export say who is
    writing, and a person's saves in the editor, which the loop is waiting for, still go in."""
    from gradio_client import Client

    ws = tmp_path / "ws"
    args = [sys.executable, "-m", "annotassist", "loop", "--project", "demo", "--workspace", str(ws), "--rounds",
            "1", "--budget", "3", "--device", "cpu", "--annotator", "gradio", "--port", str(free_port())] + \
        [a for s in TINY for a in ("--set", s)]
    loop = subprocess.Popen(args, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        seen = read_until(loop, "in the editor: http", timeout=600)
        url = seen.split("in the editor: ")[1].split()[0]
        before = pool_rows(ws)

        assert_refused(cli("select", "--workspace", ws, "--budget", "2"), "select", loop.pid)
        assert_refused(cli("train", "--workspace", ws, "--device", "cpu", "--max-iters", "2"), "train", loop.pid)
        assert_refused(cli("score", "--workspace", ws, "--device", "cpu"), "score", loop.pid)
        assert_refused(cli("loop", "--project", ws), "loop", loop.pid)
        assert_refused(cli("init", "--config", ws / "config.yaml", "--workspace", ws), "init", loop.pid)
        assert pool_rows(ws) == before  # nothing queued, no stray round, no config change

        status = cli("status", "--workspace", ws)
        assert status.returncode == 0, status.stderr
        assert f"note: annotassist loop (pid {loop.pid} on " in status.stdout, status.stdout
        exported = cli("export", "--workspace", ws, "--out", tmp_path / "export")
        assert exported.returncode == 0, exported.stderr
        assert f"annotassist loop (pid {loop.pid} on " in exported.stdout

        # the person the loop waits for: the editor's saves are not blocked by the lock
        client = Client(url, verbose=False)
        client.predict(api_name="/start")
        for _ in range(3):
            client.predict(api_name="/accept")
        rest = loop.communicate(timeout=300)[0].decode(errors="replace")
    finally:
        loop.kill()
        loop.wait()
    assert loop.returncode == 0, rest[-3000:]
    with Workspace(ws) as w:
        assert [x["labeled_count"] for x in w.rounds()] == [4, 7]
    # the loop is gone: status says nothing about a writer, and select runs
    status = cli("status", "--workspace", ws)
    assert status.returncode == 0 and "note:" not in status.stdout
    assert holder(ws) is None


HOLD = """
import sys, time
from annotassist.lock import WorkspaceLock
with WorkspaceLock(sys.argv[1], "loop"):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.fixture
def held(tmp_path):
    """A workspace whose lock another process (a stand-in loop) holds; yields (workspace, that process)."""
    ws = tmp_path / "ws"
    ws.mkdir()
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(ws)], env=ENV, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    yield ws, p
    p.kill()
    p.wait()


def test_a_second_writer_is_refused_and_a_killed_holder_leaves_no_stale_lock(held):
    ws, p = held
    assert holder(ws)["pid"] == p.pid and holder(ws)["verb"] == "loop"
    with pytest.raises(WorkspaceError, match=rf"another annotassist loop is running .*pid {p.pid} .*'select'"):
        WorkspaceLock(ws, "select").acquire()
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert holder(ws) is None
    with WorkspaceLock(ws, "select"):  # the kernel dropped the dead holder's lock
        assert json.loads((ws / LOCK_FILE).read_text())["verb"] == "select"
        with WorkspaceLock(ws, "loop"):  # re-entrant within one process (the loop verb around run_loop)
            pass
        assert holder(ws) is None  # this process holds it: nobody else does


def test_the_holders_children_join_its_lock_and_nobody_else_does(held, monkeypatch):
    """The loop's torchrun children carry the holder's token (lock.child_env); a stale or guessed token does not
    get in."""
    ws, p = held
    token = json.loads((ws / LOCK_FILE).read_text())["token"]
    monkeypatch.setenv(TOKEN_ENV, "not-" + token)
    with pytest.raises(WorkspaceError, match="another annotassist loop"):
        WorkspaceLock(ws, "train").acquire()
    # a real child process of the holder's job: `annotassist select` with the token runs (and changes nothing
    # here, the workspace has no pool: it gets as far as opening it)
    r = cli("select", "--workspace", ws, env={**ENV, TOKEN_ENV: token})
    assert r.returncode == 2 and "no workspace here" in r.stderr, r.stderr
    r = cli("select", "--workspace", ws)
    assert r.returncode == 2 and f"pid {p.pid} " in r.stderr, r.stderr


def test_an_init_refused_before_it_wrote_leaves_no_folder_behind(tmp_path):
    """init takes the lock in the folder it makes; refused (here: no data), it takes the folder away again."""
    cfg = write_yaml(tmp_path / "c.yaml", list_config_dict())
    r = cli("init", "--config", cfg, "--data", tmp_path / "missing", "--workspace", tmp_path / "new", cwd=tmp_path)
    assert r.returncode == 2 and "missing not found" in r.stderr, r.stderr
    assert not (tmp_path / "new").exists()


def test_status_beside_a_writer_that_has_not_written_its_name_yet_waits_briefly(tmp_path):
    """holder() reads the lock file's JSON, which the holder writes just after taking the lock."""
    import fcntl

    ws = tmp_path / "ws"
    ws.mkdir()
    fd = os.open(ws / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        t0 = time.monotonic()
        info = holder(ws)
        assert info == {"verb": "command"} and time.monotonic() - t0 < 5
    finally:
        os.close(fd)
