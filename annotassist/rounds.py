"""The round: the one owner of which round and step come next, of starting or continuing a round's training,
and of the config a round trains with.

A round r is five steps, each begun and ended as a workspace transaction (the `loop_steps` table):

    train   round r's model, on the labels so far plus the unlabeled pool; evaluated
    score   the unlabeled pool, with round r's model
    select  the next images to label (queued)
    push    their pseudo-masks, to the annotator
    pull    the corrections, into the pool

`train` begins with the round itself (Workspace.start_round stores the config it trains with) and ends with
its model (Workspace.finish_round_training). The trainer (train/trainer.py) knows nothing of rounds: it gets
a config, the data and a run folder. The loop (loop.py) and the `train` verb both train through here.
"""
from __future__ import annotations

from pathlib import Path

from .config import config_diff
from .errors import TrainingError, WorkspaceError
from .runtime import distributed as dist_utils
from .runtime.summary import training_line
from .workspace import Workspace

STEPS = ("train", "score", "select", "push", "pull")
# settings that decide what a model learns: changing one halfway through a round's training would mix two
# recipes in one model, so a round continues only with the settings it started with
TRAINING_SECTIONS = ("model", "train", "dssn", "region")
HARMLESS = {"train.num_workers", "train.log_every", "train.eval_every"}


def next_step(ws: Workspace) -> tuple[int, str]:
    """Where the workspace stands: the (round, step) to run next (an unfinished step is run again). Only the
    latest round counts: a round trained by hand after another is the one the loop goes on with."""
    r = ws.current_round()
    if r is None:
        return 0, "train"
    if ws.round_info(r)["status"] == "training":
        return r, "train"
    for step in STEPS[1:]:
        if ws.step_status(r, step) != "done":
            return r, step
    return r + 1, "train"


def unfinished_round(ws: Workspace) -> int | None:
    """The latest round if its training has not finished (it was interrupted, or is running)."""
    r = ws.current_round()
    return r if r is not None and ws.round_info(r)["status"] == "training" else None


def changed_settings(ws: Workspace, round_: int) -> list[str]:
    """Training settings of the workspace's config that differ from those round `round_` started with."""
    started = ws.round_config(round_)
    if started is None:  # a round recorded before rounds kept their config
        return []
    return [c for c in config_diff(started, ws.config, TRAINING_SECTIONS) if c.split(":")[0] not in HARMLESS]


def describe_resume(ws: Workspace, round_: int) -> str:
    ckpt = ws.round_dir(round_) / "checkpoint.pt"
    if ckpt.is_file():
        return f"continuing round {round_}'s training from its last checkpoint"
    return f"training round {round_} from its start (the last attempt stopped before its first checkpoint)"


def train_round(ws: Workspace, *, method: str | None = None, warm_start: bool = False,
                init_weights: str | Path | None = None, restart: bool = False, stop_after: int | None = None,
                device: str | None = None, progress: bool = True):
    """Continue the latest round if its training did not finish, else train a new round; returns
    (round, TrainResult). `warm_start` starts a new round from the previous round's model; `restart` trains
    an unfinished round again from its start with the current settings. Runs under torchrun too (rank 0 is
    the only one that writes to the workspace)."""
    from .train.trainer import Trainer, class_coverage_warning

    dist = dist_utils.setup(device)
    cfg = ws.config
    round_ = unfinished_round(ws)
    # every rank reads the pool before rank 0 may start a new round in it: a rank that looked later would see
    # that new round as unfinished, take the resume path and skip the barrier below (a deadlock)
    dist_utils.barrier()
    resume = False
    if round_ is not None:
        started_as = ws.round_info(round_)["method"]
        if method and method != started_as:
            raise TrainingError(f"round {round_} of {ws.root} started training with method {started_as}; "
                                f"finish it with --method {started_as}, or train it again with --restart-round")
        method = started_as
        changes = changed_settings(ws, round_)
        ckpt = ws.round_dir(round_) / "checkpoint.pt"
        if restart:
            if dist.is_main:
                ckpt.unlink(missing_ok=True)
                ws.set_round_config(round_, cfg)
            dist_utils.barrier()
        elif changes:
            key, old = changes[0].split(": ")[0], changes[0].split(": ")[1].split(" -> ")[0]
            raise WorkspaceError(
                f"round {round_} of {ws.root} started training with other settings ({'; '.join(changes)}); "
                f"continuing would mix two recipes in one model. Put them back to continue it (e.g. --set "
                f"{key}={old}), or pass --restart-round to train round {round_} again from its start")
        resume = ckpt.is_file()
    else:
        method = method or cfg.train.method
        if dist.is_main:
            round_ = ws.start_round(method, cfg)
        dist_utils.barrier()
        if not dist.is_main:
            round_ = ws.current_round()
    if init_weights is None and warm_start and not resume and round_ > 0:
        prev = ws.round_info(round_ - 1)
        init_weights = prev["checkpoint"] if prev else None
    labeled = ws.labeled_samples()
    partial = len(ws.partial_samples())  # of `labeled`: images with reviewed regions only (region mode)
    if not labeled:
        raise TrainingError(f"{ws.root}: no labeled images in the pool; start with 'annotassist init --labeled N' "
                            "or label some images first")
    class_pixels = ws.class_pixels("pool")
    warning = class_coverage_warning(class_pixels, cfg.dataset.classes)
    if warning and dist.is_main:
        print(warning)
    trainer = Trainer(cfg, labeled, ws.unlabeled_samples(), ws.val_samples(), ws.round_dir(round_), method=method,
                      resume=resume, init_weights=init_weights, device=device, progress=progress,
                      class_pixels=class_pixels)
    if dist.is_main:
        print(training_line(cfg, trainer.device, method, trainer.total_iters, cfg.train.batch_size, len(labeled),
                            len(trainer.unlabeled), what=f"round {round_}", init_weights=init_weights,
                            partial=partial))
    result = trainer.fit(stop_after=stop_after)
    if not result.interrupted and dist.is_main:
        ws.finish_round_training(round_, result.model_path, result.metrics)
    return round_, result
