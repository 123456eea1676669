"""One loop per workspace: an advisory lock file that the kernel releases when the process dies.

flock (not a pid file) because a SIGKILLed loop must not leave a stale lock behind that blocks the rerun.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from .errors import WorkspaceError


class WorkspaceLock:
    def __init__(self, workspace: str | Path, what: str = "loop"):
        self.path = Path(workspace) / f"{what}.lock"
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> "WorkspaceLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:
                holder = {}
            os.close(fd)
            who = (f" (pid {holder.get('pid')} on {holder.get('host')}, since "
                   f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(holder.get('since', 0)))})") if holder else ""
            raise WorkspaceError(f"another annotassist {self.what} is running on {self.path.parent}{who}; wait for "
                                 f"it to finish or stop it (Ctrl-C, or kill {holder.get('pid', 'PID')}), then run "
                                 "this again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode(),
                  0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
