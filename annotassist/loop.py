"""`annotassist loop`: rounds of train -> score -> select -> push -> pull, resumable after any crash.

What a round is, and where the workspace stands, is rounds.py's; what to run (rounds, budget, strategy,
annotator, target) is the workspace's config (`loop.*`, `acquire.*`), so a rerun after a kill goes on with the
same plan. Every step is idempotent given what is already stored, so a rerun (after SIGKILL too) redoes the
step it died in without doing anything twice:

    train   continues from its last checkpoint (rounds.train_round)
    score   skips the images already scored (score_pool)
    select  is skipped if the round has a selection
    push    skips pseudo-masks already stored; never duplicates a Label Studio task
    pull    never pulls a correction twice (each image one transaction); with Label Studio it waits on webhooks
            when Label Studio can reach it (corrections land in the pool the moment they are submitted, also
            while a later round trains) and polls when it cannot

After the last round a final model is trained on everything labeled. One writer per workspace (lock.py): a
second loop, or a select or train beside this one, is refused; the correction editor's saves are not.
"""
from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import rounds
from .annotate.annotators import make_annotator
from .errors import AnnotassistError, CheckpointError, WorkspaceError
from .lock import WorkspaceLock, child_env
from .report import rounds_table
from .workspace import Workspace

SAFETY_PULL_S = 300.0  # with webhooks: a full pull this often anyway, in case Label Studio lost an event


@dataclass
class RunOptions:
    """How to run, never what: nothing here changes a result (what to run is the workspace's config)."""
    gpus: int = 0  # >= 1: train and score under torchrun with this many processes
    device: str | None = None
    progress: bool = True
    restart_round: bool = False  # train an unfinished round again from its start with the current settings
    # after the last round's model: score, select and pre-annotate the next images, so a person (the editor,
    # Label Studio) finds work waiting; benchmarks that only read the models turn it off
    queue_next: bool = True
    annotator_options: dict = field(default_factory=dict)  # Label Studio url and key, editor host/port


@dataclass
class LoopResult:
    rounds_done: int
    stopped_because: str


# -- the steps -----------------------------------------------------------------------------------------------

def _torchrun(ws: Workspace, opts: RunOptions, args: list[str]) -> None:
    """Run a verb under torchrun; the processes read the workspace's stored config (nothing is replayed). They
    write under the lock this loop holds: its token in their environment lets them join it (lock.py)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={opts.gpus}",
           "-m", "annotassist.cli", *args, "--workspace", str(ws.root)] + \
          (["--device", opts.device] if opts.device else [])
    if subprocess.run(cmd, env=child_env(ws.root)).returncode != 0:
        raise AnnotassistError(f"{args[0]} under torchrun failed (see its output above); the step continues "
                               "from where it stopped when you run the loop again")


def _train(ws: Workspace, opts: RunOptions) -> dict:
    warm = ws.config.loop.warm_start
    if opts.gpus:
        _torchrun(ws, opts, ["train"] + (["--warm-start"] if warm else []) +
                  (["--restart-round"] if opts.restart_round else []))
        round_ = ws.current_round()
        interrupted = ws.round_info(round_)["status"] == "training"
    else:
        round_, result = rounds.train_round(ws, warm_start=warm, restart=opts.restart_round, device=opts.device,
                                            progress=opts.progress)
        interrupted = result.interrupted
    opts.restart_round = False  # once
    if interrupted:
        raise KeyboardInterrupt  # stopped before the end of training (Ctrl-C, here or under torchrun)
    metrics = ws.round_info(round_)["metrics"] or {}
    return {k: metrics.get(k) for k in ("mIoU", "steps", "seconds")}


def _score(ws: Workspace, round_: int, opts: RunOptions) -> dict:
    from .acquire.select import score_names

    strategy = ws.config.acquire.strategy
    if opts.gpus:
        _torchrun(ws, opts, ["score", "--round", str(round_), "--strategy", strategy])
        return {}
    from .acquire.scoring import score_pool

    names, region_names = score_names(ws.config, strategy)
    report = score_pool(ws, ws.config, names, round_=round_, device=opts.device, progress=opts.progress,
                        region_names=region_names)
    return {"scored": report.scored, "images_per_s": report.images_per_s}


def _select(ws: Workspace, round_: int) -> dict:
    from .acquire.select import select_for

    done = ws.selections(round_)
    if done:  # selected before a crash: the queue is already recorded
        return {"picked": len(done)}
    sel = select_for(ws, ws.config, round_=round_)
    return {"picked": len(sel.picks), "message": sel.message}


def _round_ids(ws: Workspace, round_: int) -> list[int]:
    return [i for i, _rank, _s, _v in sorted(ws.selections(round_), key=lambda s: s[1])]


def _push(ws: Workspace, round_: int, opts: RunOptions, annotator) -> dict:
    import torch

    from .annotate.prelabel import prelabel
    from .runtime.checkpoint import load_model

    ids = annotator.pending(_round_ids(ws, round_))
    made = 0
    if ws.config.loop.pre_annotate:
        device = torch.device(opts.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model, _ = load_model(ws.round_info(round_)["checkpoint"], ws.config, device)
        made = prelabel(ws, ws.config, model, device, round_, ids)
        del model
    return {"pseudo_masks": made, "pushed": annotator.push(round_, ids)}


def _pull(ws: Workspace, round_: int, annotator, log) -> dict:
    """Bring in corrections until none of the round's images waits for a person. An annotator that is told of
    changes (Label Studio's webhooks) is waited on instead of polled; it stores them itself, and a full pull
    every SAFETY_PULL_S seconds catches an event that got lost."""
    ids = _round_ids(ws, round_)
    poll = min(ws.config.loop.poll_seconds, getattr(annotator, "max_poll_seconds", float("inf")))
    notes: list[str] = []

    def pull() -> None:
        said = annotator.pull(round_, ids)
        if said:
            notes.append(said)
            log(f"  {said}")

    pull()
    told = None
    while left := annotator.pending(ids):
        listening = getattr(annotator, "listening", False)
        if told is None or time.monotonic() - told >= 300:
            where = f" {annotator.where}" if getattr(annotator, "where", "") else ""
            how = "stored the moment Label Studio reports them (webhooks)" if listening else \
                f"checking every {poll:g} s"
            log(f"  waiting for {len(left)} of {len(ids)} images{where}; {how}")
            told = time.monotonic()
        if listening:
            if not annotator.wait(SAFETY_PULL_S):
                pull()
        else:
            time.sleep(poll)
            pull()
    return {"pulled": "; ".join(notes)}


def run_step(ws: Workspace, round_: int, step: str, opts: RunOptions, annotator, log) -> dict:
    """Run one step of a round, begun and ended as workspace transactions (train: by rounds.train_round), so
    a rerun after a kill redoes only this step. `annotator` is needed by push and pull only. The loop runs
    every step this way; the ML backend (annotate/backend_round.py) runs train to push."""
    if step == "train":
        resumed = rounds.unfinished_round(ws) == round_
        log(f"round {round_}: train" + (f" (continuing after an interruption: "
                                         f"{rounds.describe_resume(ws, round_)})" if resumed else ""))
        detail = _train(ws, opts)  # the round and its train step are begun and ended by rounds.train_round
        log(rounds_table(ws))
        return detail
    resumed = ws.step_status(round_, step) == "started"
    log(f"round {round_}: {step}{' (continuing after an interruption)' if resumed else ''}")
    ws.begin_step(round_, step)
    if step == "score":
        detail = _score(ws, round_, opts)
    elif step == "select":
        detail = _select(ws, round_)
    elif step == "push":
        detail = _push(ws, round_, opts, annotator)
    else:
        detail = _pull(ws, round_, annotator, log)
    ws.end_step(round_, step, detail)
    return detail


# -- the loop ------------------------------------------------------------------------------------------------

def run_loop(workspace: str | Path, opts: RunOptions | None = None, log=print) -> LoopResult:
    """Run rounds on a workspace until `loop.rounds`, the pool or `loop.target_miou` runs out."""
    opts = opts or RunOptions()
    ws_path = Path(workspace)
    with WorkspaceLock(ws_path), Workspace(ws_path) as ws:
        try:
            return _run(ws, opts, log)
        except KeyboardInterrupt:
            r, step = rounds.next_step(ws)
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


def _run(ws: Workspace, opts: RunOptions, log) -> LoopResult:
    plan = ws.config.loop
    annotator = None
    try:
        while True:
            round_, step = rounds.next_step(ws)
            if step == "train":
                if rounds.unfinished_round(ws) is None and round_ > plan.rounds:
                    return LoopResult(round_ - 1, f"all {plan.rounds} rounds done")
            else:
                if round_ >= plan.rounds and (step == "pull" or not opts.queue_next):
                    # the final model is trained (and the next images wait for a person): no more rounds asked for
                    waiting = len(_round_ids(ws, round_)) if opts.queue_next else 0
                    return LoopResult(round_, f"all {plan.rounds} rounds done" +
                                      (f"; the next {waiting} images are queued with pre-annotations" if waiting
                                       else ""))
                miou = (ws.round_info(round_)["metrics"] or {}).get("mIoU")
                if plan.target_miou and miou is not None and miou >= plan.target_miou:
                    return LoopResult(round_, f"target mIoU {plan.target_miou * 100:.1f}% reached "
                                              f"({miou * 100:.1f}%)")
                if step in ("push", "pull") and not _round_ids(ws, round_):
                    return LoopResult(round_, "nothing left to label in the pool")
            if step in ("push", "pull") and annotator is None:
                annotator = make_annotator(plan.annotator, ws, **opts.annotator_options)
            detail = run_step(ws, round_, step, opts, annotator, log)
            if step == "select" and detail["picked"] == 0:
                return LoopResult(round_, "nothing left to label in the pool")
    finally:
        if annotator is not None:
            annotator.close()
