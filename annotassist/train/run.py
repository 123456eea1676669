"""Training from split files, like the published scripts (a workspace's rounds train through rounds.py).

Runs as one process or under torchrun (`torchrun --nproc_per_node N -m annotassist.cli train ...`).
"""
from __future__ import annotations

from pathlib import Path

from ..data.layouts import read_list
from ..errors import WorkspaceError
from ..runtime import distributed as dist_utils
from ..runtime.summary import training_line
from .trainer import Trainer, TrainResult, class_coverage_warning, labeled_class_pixels


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
    pixels = None  # the Trainer counts them itself where train.class_balance needs them
    if len(labeled) <= 2000 and dist_utils.is_main():
        pixels = labeled_class_pixels(labeled, cfg)
        warning = class_coverage_warning(pixels, cfg.dataset.classes)
        if warning:
            print(warning)
    trainer = Trainer(cfg, labeled, unlabeled, val, out, method=method, resume=resume, device=device,
                      progress=progress, class_pixels=pixels)
    if dist_utils.is_main():
        print(training_line(cfg, trainer.device, trainer.method_name, trainer.total_iters, cfg.train.batch_size,
                            len(labeled), len(trainer.unlabeled), what=f"training into {out}"))
    return trainer.fit(stop_after=stop_after)
