"""One writer per workspace: an advisory lock file that the kernel releases when the process dies.

Every command that changes the pool (init, train, score, select, loop, push, pull) holds `workspace.lock` while
it runs; a second writer is refused at once with the holder's pid, host and start time. Reads (status,
report, export) never wait: SQLite's WAL gives them a consistent view, and they say who is writing (`holder`).

flock (not a pid file) because a SIGKILLed writer must not leave a stale lock behind that blocks the rerun.

Two kinds of writer run beside a lock holder on purpose:
- the correction editor (annotassist/ui/) never takes the lock: a person correcting queued images while the
  loop waits for them is the design (`loop --annotator gradio` runs the editor inside the loop's process, and
  `annotassist ui` beside it does the same from another one). Its saves are single transactions on images the
  loop only reads until they are labeled, and a save over a mask that changed meanwhile is refused.
- the loop's own torchrun children (`loop --gpus N` runs `annotassist train/score` under torchrun): the holder
  passes them its token in the environment (`child_env`), and a process carrying the holder's token joins the
  lock instead of being refused. Under torchrun only rank 0 writes to the pool, so only rank 0 locks at all.

Within one process the lock is re-entrant (the CLI's loop verb holds it around `run_loop`, which takes it too).
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import socket
import time
from pathlib import Path

from .errors import WorkspaceError

LOCK_FILE = "workspace.lock"
TOKEN_ENV = "ANNOTASSIST_LOCK_TOKEN"  # set by a holder for its children (the loop's torchrun processes)
_WAIT_S = 1.0  # a reader's momentary shared lock (holder()) must not make a writer fail: retry this long

# lock file path -> [fd or None (joined a parent's lock), depth, token]; what this process holds
_held: dict[str, list] = {}


class WorkspaceLock:
    def __init__(self, workspace: str | Path, what: str = "loop"):
        self.root = Path(workspace)
        self.path = self.root / LOCK_FILE
        self.what = what  # the command taking it, recorded for the message a refused writer gets

    def acquire(self) -> "WorkspaceLock":
        key = _key(self.path)
        if key in _held:
            _held[key][1] += 1
            return self
        fd = _open(self.root, self.path, self.what)
        deadline = time.monotonic() + _WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                info = _read(fd)
                if info.get("token") and info.get("token") == os.environ.get(TOKEN_ENV):
                    os.close(fd)  # a child of the holder: its parent's lock covers it
                    _held[key] = [None, 1, info["token"]]
                    return self
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                os.close(fd)
                raise WorkspaceError(_refusal(self.root, self.what, info)) from None
        token = secrets.token_hex(16)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                                  "verb": self.what, "token": token}).encode(), 0)
        os.fsync(fd)
        _held[key] = [fd, 1, token]
        return self

    def release(self) -> None:
        key = _key(self.path)
        entry = _held.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        del _held[key]
        if entry[0] is not None:
            fcntl.flock(entry[0], fcntl.LOCK_UN)
            os.close(entry[0])

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def child_env(workspace: str | Path) -> dict[str, str]:
    """The environment for a child process that must write under the lock this process holds."""
    entry = _held.get(_key(Path(workspace) / LOCK_FILE))
    env = dict(os.environ)
    if entry is not None:
        env[TOKEN_ENV] = entry[2]
    return env


def holder(workspace: str | Path) -> dict | None:
    """Who holds the workspace's lock ({pid, host, since, verb}), or None; takes nothing, waits for nothing,
    and works on a read-only workspace."""
    path = Path(workspace) / LOCK_FILE
    if _key(path) in _held:
        return None  # this process itself
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None  # no lock file: nobody ever wrote here with this version
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            info = _read(fd)
            for _ in range(20):  # the holder writes who it is just after it takes the lock
                if info:
                    break
                time.sleep(0.05)
                info = _read(fd)
            return info or {"verb": "command"}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def describe(info: dict) -> str:
    """'annotassist loop (pid 123 on host, since 2024-05-01 10:00)'."""
    return f"annotassist {info.get('verb', 'command')} ({_who(info)})"


def _who(info: dict) -> str:
    since = time.strftime("%Y-%m-%d %H:%M", time.localtime(info["since"])) if info.get("since") else "?"
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')}, since {since}"


def _refusal(root: Path, what: str, info: dict) -> str:
    return (f"another annotassist {info.get('verb', 'command')} is running on {root} ({_who(info)}); '{what}' "
            f"changes the pool and must not run beside it. Wait for it to finish or stop it (Ctrl-C, or kill "
            f"{info.get('pid', 'PID')}), then run this again")


def _open(root: Path, path: Path, what: str) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        if root.exists() and not root.is_dir():
            raise WorkspaceError(f"--workspace {root} is a file, not a workspace folder; pass the folder that "
                                 "holds pool.sqlite") from None
        if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise WorkspaceError(read_only_message(root, what, e)) from None
        if e.errno in (errno.ENOTDIR, errno.ENOENT):
            raise WorkspaceError(f"--workspace {root}: no such folder ({e.strerror}); check the path") from None
        raise


def read_only_message(root: Path, what: str | None = None, e: OSError | None = None) -> str:
    why = f" ({e.strerror})" if e is not None and e.strerror else ""
    verb = f"'{what}'" if what else "this command"
    return (f"the workspace {root} is read-only{why}; {verb} changes the pool, so it needs write access. Make "
            f"{root} writable (remount it read-write or fix its permissions), or copy it (cp -a {root} NEW) and "
            f"use --workspace NEW. Reads (status, report --out DIR, export) work on it as it is")


def _read(fd: int) -> dict:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def _key(path: Path) -> str:
    return os.path.abspath(os.path.realpath(path))
