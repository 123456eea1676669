"""The two ways to start training: one round on a workspace's pools, or split files like the published scripts.

Both run as one process or under torchrun (`torchrun --nproc_per_node N -m annotassist.cli train ...`); only
rank 0 writes to the workspace.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.layouts import read_list
from ..data.masks import class_histogram, read_mask
from ..errors import TrainingError, WorkspaceError
from . import distributed as dist_utils
from .trainer import Trainer, TrainResult, class_coverage_warning


def train_workspace(ws, cfg, *, method: str | None = None, resume: bool | str = False, stop_after: int | None = None,
                    init_weights: str | Path | None = None, device: str | None = None,
                    progress: bool = True) -> tuple[int, TrainResult]:
    """Train on the workspace's labeled + unlabeled pool and record the result as a round's model.

    `init_weights` (a model.pt) warm-starts from an earlier round instead of ImageNet weights. `resume="auto"`
    continues an unfinished round if there is one (from its checkpoint, or from the start) and else starts a new
    one: what `annotassist loop` needs after a crash."""
    method = method or cfg.train.method
    info = dist_utils.setup(device)
    labeled, unlabeled, val = ws.labeled_samples(), ws.unlabeled_samples(), ws.val_samples()
    if not labeled:
        raise TrainingError(f"{ws.root}: no labeled images in the pool; start with 'annotassist init --labeled N' "
                            "or label some images first")
    round_ = ws.current_round()
    info_round = ws.round_info(round_) if round_ is not None else None
    interrupted = info_round is not None and info_round["status"] == "training"
    reuse = False
    if resume == "auto":
        # the loop after a crash: continue the unfinished round from its checkpoint, or start that same round
        # over when it died before its first checkpoint; otherwise a new round
        reuse = interrupted
        resume = interrupted and (ws.round_dir(round_) / "checkpoint.pt").is_file()
    if resume:
        if not interrupted:
            raise TrainingError(f"{ws.root}: no interrupted training round to resume; run without --resume")
    elif info.is_main and not reuse:
        round_ = ws.start_round(method)
    dist_utils.barrier()
    if not info.is_main and not resume:
        round_ = ws.current_round()
    warning = class_coverage_warning(ws.class_pixels("pool"), cfg.dataset.classes)
    if warning and info.is_main:
        print(warning)
    trainer = Trainer(cfg, labeled, unlabeled, val, ws.round_dir(round_), method=method, resume=resume,
                      init_weights=init_weights, device=device, progress=progress)
    result = trainer.fit(stop_after=stop_after)
    if not result.interrupted and info.is_main:
        ws.finish_round_training(round_, result.model_path, result.metrics)
    return round_, result


def train_lists(cfg, labeled_list: Path, unlabeled_list: Path | None, val_list: Path | None, out: Path,
                data_root: Path, *, method: str | None = None, resume: bool = False,
                stop_after: int | None = None, device: str | None = None, progress: bool = True) -> TrainResult:
    """Train from split files ("IMAGE MASK" lines relative to data_root), like the published scripts."""
    labeled, problems = read_list(Path(labeled_list), data_root)
    labeled = [s for s in labeled if s.mask is not None]
    unlabeled = read_list(Path(unlabeled_list), data_root)[0] if unlabeled_list else []
    unlabeled = [type(s)(s.name, s.image, None) for s in unlabeled]  # masks in an unlabeled list are not used
    val = [s for s in read_list(Path(val_list), data_root)[0] if s.mask is not None] if val_list else []
    if problems:
        raise WorkspaceError(f"{labeled_list}: {len(problems)} problem(s):\n  - " +
                             "\n  - ".join(str(p) for p in problems))
    if len(labeled) <= 2000 and dist_utils.is_main():
        pixels = np.zeros(cfg.num_classes, dtype=np.int64)
        for s in labeled:
            pixels += class_histogram(read_mask(s.mask, cfg.num_classes, cfg.dataset.ignore_index,
                                                cfg.palette()), cfg.num_classes)
        warning = class_coverage_warning(pixels, cfg.dataset.classes)
        if warning:
            print(warning)
    trainer = Trainer(cfg, labeled, unlabeled, val, out, method=method, resume=resume, device=device,
                      progress=progress)
    return trainer.fit(stop_after=stop_after)
