"""`annotassist loop`: rounds of train -> score -> select -> push -> pull, resumable after any crash.

A round r is five steps, each started and finished as a workspace transaction (the `loop_steps` table):

    train   train round r's model (warm start from round r-1), evaluate it      train_workspace(resume="auto")
    score   score the unlabeled pool with it                                     score_pool (skips what is stored)
    select  queue B images                                                       skipped if round r has a selection
    push    store their pseudo-masks, hand them to the annotator                 prelabel skips stored masks
    pull    wait for the corrections and bring them in                           each image one transaction

Every step is idempotent given what is already stored, so a rerun after a kill (SIGKILL included) redoes the
step it died in without doing anything twice: training continues from its last checkpoint, scoring from its
last batch, pushing never duplicates a Label Studio task, a pulled correction is never pulled again. After the
last round a final model is trained on everything labeled. One loop per workspace (a lock).
"""
from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import AnnotassistError, CheckpointError, WorkspaceError
from .lock import WorkspaceLock
from .report import rounds_table
from .workspace import Workspace

STEPS = ("train", "score", "select", "push", "pull")
WAITING = ("queued", "in_review")


@dataclass
class LoopOptions:
    rounds: int
    budget: int
    annotator: str = "simulated"
    strategy: str | None = None
    warm_start: bool = True
    target_miou: float = 0.0
    gpus: int = 0  # >= 1: train and score under torchrun with this many processes
    device: str | None = None
    progress: bool = True
    poll_seconds: float = 10.0
    annotator_options: dict = field(default_factory=dict)  # url, api key, host/port of the editor
    overrides: list[str] = field(default_factory=list)  # --set for the torchrun processes (they read the workspace)


@dataclass
class LoopResult:
    rounds_done: int
    stopped_because: str


# -- annotators: push the round's images to a person (or a stand-in), then collect the corrections ----------

class SimulatedAnnotator:
    """Returns the dataset's own masks at once (benchmarks, tests, the demo)."""

    def __init__(self, ws, opts: LoopOptions):
        self.ws = ws

    def push(self, round_: int, ids: list[int]) -> str:
        return f"{len(ids)} images to the simulated annotator"

    def collect(self, round_: int, ids: list[int], poll_seconds: float, log) -> str:
        from .annotate.simulated import correct

        done = correct(self.ws, round_, ids)
        return f"{len(done)} corrected ({sum(c.changed_pixels for c in done)} pixels changed)"


class LabelStudioAnnotator:
    """Pushes tasks with pre-annotations to a Label Studio project and polls it for submitted annotations."""

    def __init__(self, ws, opts: LoopOptions):
        from .annotate.labelstudio import LabelStudioSync

        self.ws = ws
        self.sync = LabelStudioSync(ws, opts.annotator_options.get("url") or ws.config.loop.labelstudio_url,
                                    api_key=opts.annotator_options.get("api_key"))

    def push(self, round_: int, ids: list[int]) -> str:
        r = self.sync.push(round_=round_, image_ids=ids)
        return (f"project {r.project_id}: {len(r.created)} new tasks, {len(r.updated)} given this round's "
                f"prediction, {len(r.unchanged)} unchanged; label them at {self.sync.url}/projects/{r.project_id}")

    def collect(self, round_: int, ids: list[int], poll_seconds: float, log) -> str:
        pulled, pixels, waited = 0, 0, 0.0
        while True:
            r = self.sync.pull()
            pulled += len(r.pulled)
            pixels += sum(c.changed_pixels or 0 for c in r.pulled)
            for name in r.problems:
                log(f"  not pulled (fix it in Label Studio): {name}")
            left = _waiting(self.ws, ids)
            if not left:
                return f"{pulled} corrections pulled ({pixels} pixels changed)"
            if waited == 0.0 or waited % 300 < poll_seconds:
                log(f"  waiting for {len(left)} of {len(ids)} images in Label Studio ({self.sync.url}); "
                    f"checking every {poll_seconds:g} s")
            time.sleep(poll_seconds)
            waited += poll_seconds


class EditorAnnotator:
    """Opens the Gradio correction editor on the workspace and waits until the round's images are saved."""

    def __init__(self, ws, opts: LoopOptions):
        self.ws, self.opts, self.app = ws, opts, None

    def push(self, round_: int, ids: list[int]) -> str:
        return f"{len(ids)} images queued in the editor"

    def collect(self, round_: int, ids: list[int], poll_seconds: float, log) -> str:
        from .annotate.editor import launch

        opts = self.opts.annotator_options
        self.app = launch(self.ws.root, host=opts.get("host", "127.0.0.1"), port=opts.get("port"),
                          prevent_thread_lock=True, quiet=True)
        log(f"  correct the {len(ids)} queued images in the editor: {self.app.local_url} (the loop goes on once "
            "they are saved)")
        try:
            while left := _waiting(self.ws, ids):
                time.sleep(min(poll_seconds, 2.0))
        finally:
            self.app.close()
        return f"{len(ids) - len(left)} corrected in the editor"


ANNOTATORS = {"simulated": SimulatedAnnotator, "labelstudio": LabelStudioAnnotator, "gradio": EditorAnnotator}


def _waiting(ws, ids: list[int]) -> list[int]:
    return [i for i in ids if ws.image(i).state in WAITING]


# -- the steps -----------------------------------------------------------------------------------------------

def _torchrun(opts: LoopOptions, args: list[str]) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={opts.gpus}",
           "-m", "annotassist.cli", *args] + (["--device", opts.device] if opts.device else [])
    for override in opts.overrides:
        cmd += ["--set", override]
    if subprocess.run(cmd).returncode != 0:
        raise AnnotassistError(f"{' '.join(args[:1])} under torchrun failed (see its output above); the step "
                               "continues from where it stopped when you run the loop again")


def _train(ws, cfg, round_: int, opts: LoopOptions) -> dict:
    prev = ws.round_info(round_ - 1) if round_ > 0 else None
    init = prev["checkpoint"] if (opts.warm_start and prev and prev["checkpoint"]) else None
    if opts.gpus:
        _torchrun(opts, ["train", "--workspace", str(ws.root), "--auto-resume"]
                  + (["--init-weights", init] if init else []))
        got = ws.current_round()
    else:
        from .train.run import train_workspace

        got, _ = train_workspace(ws, cfg, resume="auto", init_weights=init, device=opts.device,
                                 progress=opts.progress)
    if got != round_:
        raise WorkspaceError(f"{ws.root}: the loop expected to train round {round_} but training recorded round "
                             f"{got}; check 'annotassist status --workspace {ws.root}'")
    info = ws.round_info(round_)
    if info["status"] == "training":
        raise KeyboardInterrupt  # stopped before the end of training (Ctrl-C, here or under torchrun)
    return info["metrics"] or {}


def _score(ws, cfg, round_: int, opts: LoopOptions) -> dict:
    from .acquire.strategies import resolve

    strategy = opts.strategy or cfg.acquire.strategy
    if opts.gpus:
        _torchrun(opts, ["score", "--workspace", str(ws.root), "--round", str(round_), "--strategy", strategy])
        return {}
    from .acquire.scoring import score_pool

    report = score_pool(ws, cfg, resolve(strategy)[1], round_=round_, device=opts.device, progress=opts.progress)
    return {"scored": report.scored, "images_per_s": report.images_per_s}


def _select(ws, cfg, round_: int, opts: LoopOptions) -> dict:
    from .acquire.select import select_next

    done = ws.selections(round_)
    if done:  # selected before a crash: the queue is already recorded
        return {"picked": len(done)}
    sel = select_next(ws, cfg, opts.strategy, opts.budget, round_=round_)
    return {"picked": len(sel.picks), "message": sel.message}


def _round_ids(ws, round_: int) -> list[int]:
    return [i for i, _rank, _s, _v in sorted(ws.selections(round_), key=lambda s: s[1])]


def _push(ws, cfg, round_: int, opts: LoopOptions, annotator) -> dict:
    import torch

    from .annotate.prelabel import prelabel
    from .train.checkpoint import load_model

    ids = [i for i in _round_ids(ws, round_) if ws.image(i).state in WAITING]
    device = torch.device(opts.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, _ = load_model(ws.round_info(round_)["checkpoint"], cfg, device)
    made = prelabel(ws, cfg, model, device, round_, ids)
    del model
    return {"pseudo_masks": made, "pushed": annotator.push(round_, ids)}


def _pull(ws, cfg, round_: int, opts: LoopOptions, annotator, log) -> dict:
    ids = _round_ids(ws, round_)
    return {"pulled": annotator.collect(round_, ids, opts.poll_seconds, log)}


# -- the loop ------------------------------------------------------------------------------------------------

def next_step(ws) -> tuple[int, str]:
    """Where the loop stands: the (round, step) to run next (an unfinished step is run again)."""
    steps = ws.loop_steps()
    if not steps:
        cur = ws.current_round()
        if cur is None:
            return 0, "train"
        info = ws.round_info(cur)
        return (cur, "train") if info["status"] == "training" else (cur + 1, "train")
    last = steps[-1]
    if last["status"] == "started":
        return last["round"], last["step"]
    k = STEPS.index(last["step"])
    return (last["round"], STEPS[k + 1]) if k + 1 < len(STEPS) else (last["round"] + 1, "train")


def run_loop(workspace: str | Path, opts: LoopOptions, cfg=None, log=print) -> LoopResult:
    """Run rounds on a workspace until opts.rounds, the pool or the target runs out. `cfg` defaults to the
    workspace's stored config (pass one to apply --set overrides for this run)."""
    ws_path = Path(workspace)
    with WorkspaceLock(ws_path), Workspace(ws_path) as ws:
        try:
            return _run(ws, cfg or ws.config, opts, log)
        except KeyboardInterrupt:
            r, step = next_step(ws)
            log(f"\nstopped during round {r}, step {step}; everything finished so far is saved. Run the same "
                "command to continue from there.")
            raise
        except (sqlite3.OperationalError, OSError, CheckpointError) as e:
            if isinstance(e, OSError) and e.errno not in (28, 27, 13, 30, 122):  # ENOSPC EFBIG EACCES EROFS EDQUOT
                raise
            done = [r["round"] for r in ws.rounds() if r["checkpoint"]]
            raise WorkspaceError(
                f"cannot write to the workspace {ws_path} ({e}); free disk space there (du -sh {ws_path}/rounds) or "
                f"fix its permissions, then run the loop again: it continues the unfinished step. The last complete "
                f"round ({done[-1] if done else 'none yet'}) is intact.") from None


def _run(ws, cfg, opts: LoopOptions, log) -> LoopResult:
    annotator = None
    while True:
        round_, step = next_step(ws)
        if step == "train" and ws.step_status(round_, "train") is None and round_ > opts.rounds:
            return LoopResult(round_ - 1, f"all {opts.rounds} rounds done")
        if step != "train":
            if round_ >= opts.rounds:  # the final model is trained; no more labeling asked for
                return LoopResult(round_, f"all {opts.rounds} rounds done")
            miou = (ws.round_info(round_)["metrics"] or {}).get("mIoU")
            if opts.target_miou and miou is not None and miou >= opts.target_miou:
                return LoopResult(round_, f"target mIoU {opts.target_miou:.3f} reached ({miou:.3f})")
            if step in ("push", "pull") and not _round_ids(ws, round_):
                return LoopResult(round_, "nothing left to label in the pool")
        if step in ("push", "pull") and annotator is None:
            annotator = ANNOTATORS[opts.annotator](ws, opts)
        resumed = ws.step_status(round_, step) == "started"
        log(f"round {round_}: {step}{' (continuing after an interruption)' if resumed else ''}")
        ws.begin_step(round_, step)
        if step == "train":
            detail = _train(ws, cfg, round_, opts)
            detail = {k: detail.get(k) for k in ("mIoU", "steps", "seconds")}
        elif step == "score":
            detail = _score(ws, cfg, round_, opts)
        elif step == "select":
            detail = _select(ws, cfg, round_, opts)
        elif step == "push":
            detail = _push(ws, cfg, round_, opts, annotator)
        else:
            detail = _pull(ws, cfg, round_, opts, annotator, log)
        ws.end_step(round_, step, detail)
        if step == "train":
            log(rounds_table(ws))
        if step == "select" and detail["picked"] == 0:
            return LoopResult(round_, "nothing left to label in the pool")
