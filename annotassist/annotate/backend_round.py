"""A round for the ML backend ("Start training" in Label Studio): the loop's steps in a child process.

    train   the next round (or the interrupted one, from its checkpoint: rounds.train_round)
    score   the unlabeled pool with it
    select  the next images to label
    push    them into the Label Studio project, with this round's predictions; the project's model version
            becomes round-R, so Label Studio serves the least confident tasks first

and then the round waits for people (the loop's pull step), while the backend's webhooks store each
submission at once. The next "Start training" ends that wait, whatever is still in review stays there, and
trains on what is labeled by then.

A child process, not a thread: the server stays responsive (Label Studio gives /health 1 s), a failing round
cannot take it down, and SIGTERM stops training cleanly at a checkpoint. The child writes under the workspace
lock that `annotassist serve` holds (it joins it with the holder's token, lock.py) and stops (at a checkpoint)
when the server that started it goes away, even by SIGKILL; the server's next start waits for it to be gone and
continues the round, because the round's start is recorded as a workspace event (`ml_backend_round`) that only
its end clears. The Label Studio key reaches the child through the environment, never its command line.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..errors import AnnotassistError
from ..lock import WorkspaceLock, child_env
from ..workspace import Workspace

EVENT = "ml_backend_round"


class RoundJob:
    """The server's side: start the child, one at a time; say how it goes; stop it with the server."""

    STOP_WAIT_S = 60.0  # how long a restarted server waits for its killed predecessor's round to stop

    def __init__(self, workspace: Path, log=print):
        self.workspace, self.log = Path(workspace), log
        self.proc: subprocess.Popen | None = None
        self.target: int | None = None
        self._lock = threading.Lock()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def status(self) -> dict | None:
        if self.proc is None:
            return None
        with Workspace(self.workspace) as ws:
            r, step = _next_step(ws)
        if self.running():
            return {"state": "running", "round": self.target, "step": f"round {r} {step}", "pid": self.proc.pid}
        return {"state": "finished" if self.proc.returncode == 0 else f"stopped (exit {self.proc.returncode})",
                "round": self.target}

    def start(self, project: int | None, url: str | None, device: str | None, resume: int | None = None) -> dict:
        """Start the next round (or continue round `resume`) unless one runs already."""
        with self._lock:
            if self.running():
                return {"status": "already training", **self.status()}
            with Workspace(self.workspace) as ws:
                target = target_round(ws) if resume is None else resume
            cmd = [sys.executable, "-m", "annotassist.annotate.backend_round", "--workspace", str(self.workspace),
                   "--round", str(target)]
            cmd += ["--project", str(project)] if project is not None else []
            cmd += ["--url", url] if url else []
            cmd += ["--device", device] if device else []
            # the child writes under the lock `annotassist serve` holds: its token lets the child join it
            self.proc = subprocess.Popen(cmd, env={**child_env(self.workspace), "PYTHONUNBUFFERED": "1"})
            self.target = target
            with Workspace(self.workspace) as ws, ws.transaction():  # what the next start continues
                ws.log_event(EVENT, {"state": "started", "round": target, "project": project, "pid": self.proc.pid})
            self.log(f"training: round {target} {'continues' if resume is not None else 'started'} "
                     f"(pid {self.proc.pid})")
            return {"status": "started", "round": target, "pid": self.proc.pid}

    def resume_interrupted(self, url: str | None, device: str | None) -> str:
        """Start the child again if the last round this backend started never finished."""
        with Workspace(self.workspace) as ws:
            last = ws.last_event(EVENT)
        if not last or last.get("state") != "started":
            return ""
        if not _gone(last.get("pid"), self.STOP_WAIT_S):  # a killed server's round is still saving its checkpoint
            return (f"training: the interrupted round's process {last['pid']} is still running after "
                    f"{self.STOP_WAIT_S:g} s; stop it, then start the backend again to continue the round")
        said = self.start(last.get("project"), url, device, resume=last.get("round"))
        if said["status"] != "started":
            return f"training: the interrupted round cannot continue now: {said.get('error', said['status'])}"
        return f"training: continuing the round that was interrupted (pid {said['pid']})"

    def stop(self, timeout: float = 120) -> None:
        """SIGTERM: training checkpoints after its current step and stops; the next start continues it."""
        if not self.running():
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _next_step(ws: Workspace) -> tuple[int, str]:
    from ..rounds import next_step  # imported here: rounds imports torch, which the server's start can do without

    return next_step(ws)


def _gone(pid, timeout: float) -> bool:
    """Whether round process `pid` (of a server that was killed) has stopped, waiting up to `timeout` s."""
    if not isinstance(pid, int):
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if b"annotassist.annotate.backend_round" not in cmdline or state == "Z":
            return True  # another program has that pid now, or it is a zombie awaiting its reaper
        time.sleep(0.2)
    return False


# -- the child -------------------------------------------------------------------------------------------------

def target_round(ws: Workspace) -> int:
    """The round a "Start training" trains: the unfinished or next one, never one whose model exists."""
    r, step = _next_step(ws)
    return r if step == "train" else r + 1


def run_round(workspace: Path, target: int, project: int | None, url: str | None, device: str | None,
              log=print) -> None:
    """The loop's steps up to round `target`'s push (the steps of earlier rounds not yet run first); holds the
    workspace lock throughout."""
    from ..loop import RunOptions, run_step
    from .annotators import LabelStudioAnnotator

    with WorkspaceLock(workspace, "serve"), Workspace(workspace) as ws:
        opts = RunOptions(device=device, progress=False)
        annotator = None
        try:
            while True:
                r, step = _next_step(ws)
                if r > target or (r, step) == (target, "pull"):
                    break
                if step == "pull":  # a person asked for the next round: it trains on what is labeled now
                    left = sum(1 for i, *_ in ws.selections(r) if ws.image(i).state in ("queued", "in_review"))
                    ws.begin_step(r, "pull")
                    ws.end_step(r, "pull", {"ended_by": "START_TRAINING", "still_waiting": left})
                    continue
                if step == "push" and annotator is None:
                    if url is None:
                        raise AnnotassistError("the backend does not know Label Studio's address to push the new "
                                               "round's queue to: start it with --url or LABEL_STUDIO_URL")
                    annotator = LabelStudioAnnotator(ws, url, project=project, webhooks=False, log=log)
                run_step(ws, r, step, opts, annotator, log)
        finally:
            if annotator is not None:
                annotator.close()
        with ws.transaction():
            ws.log_event(EVENT, {"state": "done", "round": target, "project": project})
        log(f"training: round {target} is trained and its queue is in Label Studio")


def _stop_with_parent() -> None:
    """SIGTERM ourselves when the server that started us is gone (also when it was SIGKILLed)."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m annotassist.annotate.backend_round")
    p.add_argument("--workspace", required=True)
    p.add_argument("--round", type=int, required=True, help="the round to train (and push)")
    p.add_argument("--project", type=int)
    p.add_argument("--url")
    p.add_argument("--device")
    args = p.parse_args(argv)
    _stop_with_parent()
    try:
        run_round(Path(args.workspace), args.round, args.project, args.url, args.device)
    except AnnotassistError as e:
        print(f"training: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # SIGTERM/SIGINT during training: checkpointed, continued at the next start
        print("training: stopped at a checkpoint; it continues when the backend starts again", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
