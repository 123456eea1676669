"""The loop every method shares: data, SGD + poly schedule, AMP, DDP, checkpoints, evaluation, logs.

A method (dssn.py, supervised.py) is a module with `NEEDS_UNLABELED`, `batch_mult(cfg)` (labeled images per
step as a multiple of train.batch_size), `init_state(model, cfg)`, `views(cfg)` (the strong
augmentation and CutMix probability its unlabeled views get), `training_step(model, extra, batch, ctx)
-> StepOutput`, `after_step(model, extra, ctx)` and `result_model(model, extra, cfg)` (the network a run
evaluates and saves); the trainer knows nothing else about it.

    trainer = Trainer(cfg, labeled, unlabeled, val, run_dir)
    result = trainer.fit()          # or Trainer(..., resume=True).fit() after an interruption
"""
from __future__ import annotations

import json
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from ..acquire.select import reads_region_judge
from ..data.cache import shared_cache
from ..data.datasets import EvalDataset, SemiDataset
from ..data.layouts import Sample, read_source_mask
from ..data.masks import class_histogram
from ..errors import CheckpointError, TrainingError
from ..models import RegionDiscriminator, build_model
from ..runtime import threads
from .. import faults
from ..runtime import checkpoint as ckpt_io
from ..runtime import distributed as dist_utils
from ..runtime import precision
from . import dssn, supervised
from .common import StepContext, unwrap
from .evaluate import evaluate
from .losses import labeled_criterion
from .region import discriminator_step

METHODS = {"dssn": dssn, "supervised": supervised}


@dataclass
class TrainResult:
    run_dir: Path
    checkpoint: Path
    model_path: Path | None
    metrics: dict
    steps: int
    interrupted: bool = False
    history: list[dict] = field(default_factory=list)


class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop checkpoints after the current step and stops cleanly."""

    def __init__(self):
        self.set = False
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        if self.set:  # a second Ctrl-C means "now"
            raise KeyboardInterrupt
        self.set = True

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _freeze_bn(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def class_coverage_warning(class_pixels: np.ndarray, class_names: list[str]) -> str | None:
    absent = [n for n, p in zip(class_names, class_pixels) if p == 0]
    if not absent:
        return None
    return (f"warning: no labeled pixels of {', '.join(absent)}; the model can only learn these from "
            "pseudo-labels (it rarely does): label an image that shows them")


def labeled_class_pixels(labeled: list[Sample], cfg) -> np.ndarray:
    """Labeled pixels per class of samples whose masks are the dataset's own files (split lists); a workspace
    counts its pool's in SQL (Workspace.class_pixels). train.class_balance weighs the labeled loss by these."""
    pixels = np.zeros(cfg.num_classes, dtype=np.int64)
    for s in labeled:
        pixels += class_histogram(read_source_mask(s.mask, cfg), cfg.num_classes)
    return pixels


class Trainer:
    def __init__(self, cfg, labeled: list[Sample], unlabeled: list[Sample], val: list[Sample],
                 run_dir: str | Path, *, method: str | None = None, resume: bool = False,
                 init_weights: str | Path | None = None, device: str | None = None, progress: bool = True,
                 class_pixels=None):
        self.cfg = cfg
        self.method_name = method or cfg.train.method
        if self.method_name not in METHODS:
            raise TrainingError(f"unknown method {self.method_name!r} (one of {', '.join(METHODS)})")
        self.method = METHODS[self.method_name]
        if not labeled:
            raise TrainingError("no labeled images: training needs at least one (label some, or start the "
                                "workspace with 'annotassist init --labeled N')")
        if self.method.NEEDS_UNLABELED and not unlabeled:
            raise TrainingError(f"method {self.method_name} needs unlabeled images and there are none; "
                                "use --method supervised")
        self.labeled, self.unlabeled, self.val = labeled, unlabeled if self.method.NEEDS_UNLABELED else [], val
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.dist = dist_utils.setup(device)
        self.device = self.dist.device
        self.threads = threads.configure(cfg.train.num_workers, self.device.type)
        self.governor = threads.ThreadGovernor(self.threads, self.device.type,
                                                adaptive=cfg.train.adaptive_threads)
        self.amp = precision.bf16_enabled(cfg, self.device)
        t = cfg.train
        # items per step: supervised sees only labeled images, twice the labeled batch as in the published
        # baseline; DSSN's short-schedule recipe may ask for the same labeled batch (dssn.labeled_batch_mult)
        self.batch_size = t.batch_size * self.method.batch_mult(cfg)

        # the same initial weights on every rank (DDP also broadcasts them, but the EMA teacher is made here)
        torch.manual_seed(t.seed)
        model = build_model(cfg)
        if init_weights:
            model.load_state_dict(ckpt_io.load(init_weights, cfg)["model"])
        if self.dist.world_size > 1 and self.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model.to(self.device)
        if t.channels_last:
            model.to(memory_format=torch.channels_last)
        self.extra = {k: v.to(self.device) for k, v in self.method.init_state(model, cfg).items()}
        if t.channels_last:
            for v in self.extra.values():
                v.to(memory_format=torch.channels_last)
        # per-rank randomness from here on (dropout masks differ across ranks, as they would across GPUs)
        torch.manual_seed(t.seed + self.dist.rank)
        np.random.seed(t.seed + self.dist.rank)
        self.model = model
        if self.dist.world_size > 1:
            ids = [self.dist.local_rank] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)
        base = unwrap(self.model)
        self.optimizer = torch.optim.SGD(
            [{"params": list(base.backbone.parameters()), "lr": t.lr, "lr_mult": 1.0},
             {"params": base.head_parameters(), "lr": t.lr * t.head_lr_mult, "lr_mult": t.head_lr_mult}],
            lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
        self.disc, self.disc_opt = None, None
        if reads_region_judge(cfg):  # a fresh judge each round, trained only when scores or the filter read it
            disc = RegionDiscriminator(cfg.num_classes, cfg.region.width).to(self.device)
            if t.channels_last:
                disc.to(memory_format=torch.channels_last)
            self.disc = nn.parallel.DistributedDataParallel(disc) if self.dist.world_size > 1 else disc
            self.disc_opt = torch.optim.Adam(self.disc.parameters(), lr=cfg.region.lr, betas=(0.9, 0.99))
        if t.class_balance != "none" and class_pixels is None:
            # a weighting that silently fell off would change the model without a word: count them here
            class_pixels = labeled_class_pixels(labeled, cfg)
        self.criterion = labeled_criterion(t, class_pixels, self.device)

        self.cache = shared_cache(t.decode_cache_mb)
        self._cache_filled = False
        self.dataset = SemiDataset(labeled, self.unlabeled, cfg.num_classes, t.crop_size, t.scale_range,
                                   t.image_scale, t.seed, *self.method.views(cfg),
                                   ignore_index=cfg.dataset.ignore_index,
                                   # an epoch is one pass over the unlabeled set, for every method alike
                                   length=max(len(labeled), len(unlabeled)),
                                   cache=self.cache, float_images=False)
        self.dataset.length = max(self.dataset.length, self.batch_size * self.dist.world_size)
        self.iters_per_epoch = dist_utils.batches_per_epoch(len(self.dataset), self.batch_size,
                                                            self.dist.world_size)
        self.total_iters = t.max_iters if t.max_iters > 0 else t.epochs * self.iters_per_epoch
        self.total_epochs = math.ceil(self.total_iters / self.iters_per_epoch)
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.best_metrics: dict = {}
        self.history: list[dict] = []
        self.checkpoint_path = self.run_dir / "checkpoint.pt"
        if resume:
            self._restore()

    # -- checkpoints -------------------------------------------------------------------------------------

    def _state(self) -> dict:
        return {
            "fingerprint": ckpt_io.fingerprint(self.cfg),
            "config": self.cfg.to_dict(),
            "method": self.method_name,
            "model": unwrap(self.model).state_dict(),
            "extra": {k: v.state_dict() for k, v in self.extra.items()},
            "discriminator": unwrap(self.disc).state_dict() if self.disc is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "disc_optimizer": self.disc_opt.state_dict() if self.disc_opt is not None else None,
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "total_iters": self.total_iters, "metrics": self.best_metrics, "history": self.history,
            "rng": ckpt_io.rng_state(),
        }

    def save_checkpoint(self) -> None:
        if self.dist.is_main:
            ckpt_io.atomic_torch_save(self._state(), self.checkpoint_path)

    def _restore(self) -> None:
        if not self.checkpoint_path.is_file():
            raise TrainingError(f"--resume: no checkpoint at {self.checkpoint_path}; start without --resume")
        state = ckpt_io.load(self.checkpoint_path, self.cfg)
        if state["method"] != self.method_name:
            raise TrainingError(f"{self.checkpoint_path} is a {state['method']} run; resume it with --method "
                                f"{state['method']}")
        unwrap(self.model).load_state_dict(state["model"])
        for k, v in self.extra.items():
            v.load_state_dict(state["extra"][k])
        if self.disc is not None and state["discriminator"] is not None:
            saved = ckpt_io.disc_width(state["discriminator"])
            if saved != self.cfg.region.width:
                raise CheckpointError(f"{self.checkpoint_path}: its discriminator is {saved} wide and the config "
                                      f"asks for region.width={self.cfg.region.width}; resume with "
                                      f"--set region.width={saved}, or start the round over without --resume")
            unwrap(self.disc).load_state_dict(state["discriminator"])
            self.disc_opt.load_state_dict(state["disc_optimizer"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.best_metrics, self.history = state["metrics"], state["history"]
        ckpt_io.set_rng_state(state["rng"])

    def _result_model(self) -> nn.Module:
        """The network a run evaluates and hands on (model.pt): the student, or what the method says."""
        return self.method.result_model(unwrap(self.model), self.extra, self.cfg)

    def save_model(self, metrics: dict) -> Path:
        path = self.run_dir / "model.pt"
        if self.dist.is_main:
            ckpt_io.atomic_torch_save({
                "fingerprint": ckpt_io.fingerprint(self.cfg), "config": self.cfg.to_dict(),
                "method": self.method_name, "model": self._result_model().state_dict(),
                "discriminator": unwrap(self.disc).state_dict() if self.disc is not None else None,
                "metrics": metrics, "steps": self.step}, path)
        return path

    # -- loop --------------------------------------------------------------------------------------------

    def _fill_cache(self) -> None:
        """Decode this round's images once, in this process, before loader workers fork and share them."""
        if self.cache is not None and not self._cache_filled:
            masked = list(self.labeled) + list(self.val)
            self.cache.prefill([s.image for s in masked + list(self.unlabeled)], [s.mask for s in masked],
                               self.cfg.train.image_scale, self.cfg.num_classes, self.cfg.dataset.ignore_index)
            self._cache_filled = True

    def _loader(self, epoch: int, start_batch: int) -> DataLoader:
        self._fill_cache()
        self.dataset.set_epoch(epoch)
        sampler = dist_utils.ShardSampler(len(self.dataset), self.batch_size, self.dist.rank,
                                          self.dist.world_size, self.cfg.train.seed, epoch, start_batch)
        workers = self.threads.loader_workers
        # the loader's own generator: worker seeding must not consume the global RNG (exact resume)
        return DataLoader(self.dataset, batch_size=self.batch_size, sampler=sampler, num_workers=workers,
                          pin_memory=self.device.type == "cuda", drop_last=True,
                          generator=torch.Generator().manual_seed(self.cfg.train.seed + epoch),
                          persistent_workers=False, prefetch_factor=4 if workers else None)

    def _set_lr(self) -> float:
        t = self.cfg.train
        lr = t.lr * (1 - self.step / max(1, self.total_iters)) ** t.poly_power
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g["lr_mult"]
        return lr

    def _to_device(self, batch: dict) -> dict:
        out = {}
        for k, v in batch.items():
            v = v.to(self.device, non_blocking=True)
            if v.dtype == torch.uint8 and v.ndim == 4:  # the views travel as uint8 until here
                v = v.float().div_(255.0)
            if self.cfg.train.channels_last and v.ndim == 4:
                v = v.contiguous(memory_format=torch.channels_last)
            out[k] = v
        return out

    def train_step(self, batch: dict) -> dict:
        """One optimisation step of the method (and the discriminator); returns the logged numbers."""
        batch = self._to_device(batch)
        self.model.train()
        if self.cfg.train.freeze_bn:
            _freeze_bn(self.model)
        lr = self._set_lr()
        ctx = StepContext(self.cfg, self.step, self.epoch, self.total_iters, self.criterion,
                          unwrap(self.disc) if self.disc is not None else None)
        if self.disc is not None:
            self.disc.eval()
        with precision.autocast(self.cfg, self.device):
            out = self.method.training_step(self.model, self.extra, batch, ctx)
        finite = bool(torch.isfinite(out.loss.detach()))
        if dist_utils.any_rank(not finite, self.device):
            last = self.checkpoint_path if self.checkpoint_path.is_file() else "none yet"
            raise TrainingError(f"the loss is not finite at step {self.step} (epoch {self.epoch}); last good "
                                f"checkpoint: {last}. Lower train.lr, or check the labels of the pool.")
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        self.optimizer.step()
        self.method.after_step(self.model, self.extra, ctx)
        log = {"step": self.step, "epoch": self.epoch, "lr": lr, "loss": out.loss.item()}
        log.update({k: v.item() for k, v in out.terms.items()})
        log.update(out.stats)
        if self.disc is not None and out.labeled_preds:
            self.disc.train()
            log.update(discriminator_step(self.disc, self.disc_opt, batch["x"], batch["y"], out.labeled_preds,
                                          self.cfg.num_classes, self.amp))
        self.step += 1
        log["step"] = self.step  # steps completed, as the progress bar counts them
        self.governor.tick()  # fewer threads while other processes keep the cores busy
        log["threads"], log["foreign_cores"] = self.governor.threads, round(self.governor.foreign, 2)
        return log

    def evaluate(self) -> dict:
        if not self.val:
            return {}
        t = self.cfg.train
        self._fill_cache()
        ds = EvalDataset(self.val, self.cfg.num_classes, t.image_scale, self.cfg.dataset.ignore_index,
                         self.cache)
        ds = Subset(ds, list(range(self.dist.rank, len(ds), self.dist.world_size)))
        # decoded images come from the cache: a worker would only add start-up time
        workers = 0 if self.cache is not None else min(self.threads.loader_workers, 2)
        loader = DataLoader(ds, batch_size=1, num_workers=workers)
        return evaluate(self._result_model(), loader, self.cfg.num_classes, self.device, t.eval_mode, t.crop_size,
                        self.cfg.dataset.classes, self.amp, t.channels_last, self.progress, self.governor.tick)

    def fit(self, stop_after: int | None = None) -> TrainResult:
        """Train to `total_iters`; `stop_after` N = checkpoint and stop after N more steps (like Ctrl-C)."""
        t = self.cfg.train
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log_file = open(self.run_dir / "log.jsonl", "a") if self.dist.is_main else None
        bar = tqdm(total=self.total_iters, initial=self.step, desc=f"train {self.method_name}",
                   disable=not (self.progress and self.dist.is_main), dynamic_ncols=True)
        stop_at = self.step + stop_after if stop_after is not None else None
        interrupted = False
        started, steps_done = time.time(), 0
        try:
            with _StopFlag() as stop:
                while self.step < self.total_iters and not interrupted:
                    loader = self._loader(self.epoch, self.batch_in_epoch)
                    t_last = time.time()
                    for batch in loader:
                        log = self.train_step(batch)
                        self.batch_in_epoch += 1
                        steps_done += 1
                        now = time.time()
                        log["sec_per_step"] = now - t_last
                        t_last = now
                        bar.update(1)
                        bar.set_postfix({k: f"{log[k]:.3f}" for k in ("loss", "loss_x", "loss_s1", "kept")
                                         if k in log})
                        if log_file and (self.step % t.log_every == 0 or self.step == 1):
                            log_file.write(json.dumps(log) + "\n")
                            log_file.flush()
                        self.history.append({k: log[k] for k in ("step", "loss") if k in log})
                        faults.point("train.step")
                        wants_stop = stop.set or (stop_at is not None and self.step >= stop_at)
                        if dist_utils.any_rank(wants_stop, self.device):
                            interrupted = self.step < self.total_iters
                            break
                        if self.step >= self.total_iters:
                            break
                    else:
                        # the epoch ran out
                        self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                        if t.eval_every > 0 and self.epoch % t.eval_every == 0 and self.step < self.total_iters:
                            self._record_eval()
                        self.save_checkpoint()
                        continue
                    if self.batch_in_epoch >= self.iters_per_epoch:
                        self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                    self.save_checkpoint()
        except torch.cuda.OutOfMemoryError:
            raise TrainingError(
                f"out of GPU memory at train.batch_size={t.batch_size}, train.crop_size={t.crop_size}: lower "
                "one of them (or set train.amp: bf16); the last checkpoint is kept for --resume") from None
        finally:
            bar.close()
            if log_file:
                log_file.close()
        elapsed = time.time() - started
        if interrupted:
            return TrainResult(self.run_dir, self.checkpoint_path, None, self.best_metrics, self.step, True,
                               self.history)
        metrics = self._record_eval()
        metrics.update({"steps": self.step, "epochs": self.epoch, "method": self.method_name,
                        "seconds": elapsed, "labeled": len(self.labeled), "unlabeled": len(self.unlabeled),
                        "images_per_s": steps_done * self.dist.world_size * (
                            self.batch_size + (t.batch_size if self.method.NEEDS_UNLABELED else 0))
                        / max(elapsed, 1e-9)})
        self.save_checkpoint()
        model_path = self.save_model(metrics)
        if self.dist.is_main:
            (self.run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        dist_utils.barrier()
        return TrainResult(self.run_dir, self.checkpoint_path, model_path, metrics, self.step, False,
                           self.history)

    def _record_eval(self) -> dict:
        metrics = self.evaluate()
        if metrics and self.dist.is_main:
            with open(self.run_dir / "log.jsonl", "a") as f:
                f.write(json.dumps({"step": self.step, "epoch": self.epoch, "eval": metrics}) + "\n")
        self.best_metrics = metrics
        return dict(metrics)
