"""Where a training step goes: the real Trainer on real images, each phase timed (exclusive wall time).

Phases: data (waiting for the loader: decode + augment, or for its worker), to_device, teacher (the EMA
teacher's forwards and the pseudo-label selection), student_fp (the need_fp forward), student_strong (the
strong views' forward), losses (the rest of the method's step), backward, sgd, ema (after_step), disc (the
region discriminator's step), logging (the .item() calls and the log dict), plus per run: evaluation and one
checkpoint. Also the loader's cost per batch measured in this process alone (num_workers=0).

    python benchmarks/profile_step.py --shape demo --method dssn
    python benchmarks/profile_step.py --shape camvid_cpu --method supervised --steps 10

Prints the table and writes benchmarks/results/profile_<shape>_<method>.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from train_speed import SHAPES, shape_config, shape_data  # noqa: E402  (sets the OpenMP policy before torch loads)

import torch  # noqa: E402

from annotassist.train import dssn, trainer as trainer_mod  # noqa: E402


class Phases:
    """Exclusive wall time per named phase (a nested phase's time is not counted in its parent)."""

    def __init__(self):
        self.total = defaultdict(float)
        self.stack: list[list] = []

    @contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        self.stack.append([name, 0.0])
        try:
            yield
        finally:
            _, child = self.stack.pop()
            dt = time.perf_counter() - t0
            self.total[name] += dt - child
            if self.stack:
                self.stack[-1][1] += dt

    def wrap(self, name: str, fn):
        def wrapped(*a, **kw):
            with self(name):
                return fn(*a, **kw)
        return wrapped


def profile(shape: str, method: str, steps: int, warmup: int, labeled: int, overrides: list[str]) -> dict:
    cfg = shape_config(shape, method, extra=overrides)
    ph = Phases()
    with tempfile.TemporaryDirectory() as tmp:
        lab, unl, val = shape_data(shape, Path(tmp) / "data", labeled)
        t0 = time.perf_counter()
        tr = trainer_mod.Trainer(cfg, lab, unl, val, Path(tmp) / "run", progress=False)
        setup_s = time.perf_counter() - t0
        # instrument the real step: every phase is the trainer's or the method's own code
        orig_forward = tr.model.forward
        orig_teacher = dssn.teacher_targets
        orig_disc = trainer_mod.discriminator_step
        orig_after = tr.method.after_step
        orig_backward = torch.Tensor.backward
        orig_sgd = tr.optimizer.step
        orig_to_device = tr._to_device
        in_disc = [False]

        def student_forward(x, need_fp=False):
            with ph("student_fp" if need_fp else "student_strong"):
                return orig_forward(x, need_fp=need_fp)

        def backward(self, *a, **kw):
            with ph("disc" if in_disc[0] else "backward"):
                return orig_backward(self, *a, **kw)

        def disc_step(*a, **kw):
            in_disc[0] = True
            try:
                with ph("disc"):
                    return orig_disc(*a, **kw)
            finally:
                in_disc[0] = False

        tr.model.forward = student_forward
        dssn.teacher_targets = ph.wrap("teacher", orig_teacher)
        trainer_mod.discriminator_step = disc_step
        tr.method.after_step = ph.wrap("ema", orig_after)
        torch.Tensor.backward = backward
        tr.optimizer.step = ph.wrap("sgd", orig_sgd)
        tr._to_device = ph.wrap("to_device", orig_to_device)
        try:
            loader = iter(tr._loader(0, 0))
            step_times = []
            for i in range(warmup + steps):
                if i == warmup:
                    ph.total.clear()
                t_step = time.perf_counter()
                with ph("data"):
                    batch = next(loader)
                with ph("step_rest"):
                    tr.train_step(batch)
                step_times.append(time.perf_counter() - t_step)
            measured = dict(ph.total)
            # step_rest = what no other phase claims inside train_step: the method's losses and the logging
            rest = measured.pop("step_rest", 0.0)
            measured["losses+logging"] = rest
            t0 = time.perf_counter()
            tr.save_checkpoint()
            ckpt_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            metrics = tr.evaluate()
            eval_s = time.perf_counter() - t0
        finally:
            dssn.teacher_targets = orig_teacher
            trainer_mod.discriminator_step = orig_disc
            tr.method.after_step = orig_after
            torch.Tensor.backward = orig_backward
        # the loader alone, in this process: what one batch of decode + augmentation costs
        ds = tr.dataset
        t0 = time.perf_counter()
        n_items = tr.batch_size * 3
        for k in range(n_items):
            ds[k]
        item_s = (time.perf_counter() - t0) / n_items
    per_step = {k: v / steps for k, v in measured.items()}
    step_s = sum(step_times[warmup:]) / steps
    return {"shape": shape, "method": method, "steps": steps, "sec_per_step": step_s,
            "phases_sec_per_step": per_step, "loader_batch_in_process_s": item_s * tr.batch_size,
            "checkpoint_s": ckpt_s, "eval_s": eval_s, "eval_images": len(val), "eval_mIoU": metrics.get("mIoU"),
            "trainer_setup_s": setup_s, "iters_per_epoch": tr.iters_per_epoch,
            "num_workers": cfg.train.num_workers, "crop": cfg.train.crop_size, "batch": cfg.train.batch_size,
            "decoder": getattr(cfg.model, "decoder", "deeplabv3plus"), "torch_threads": torch.get_num_threads(),
            "overrides": overrides}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="demo", choices=list(SHAPES))
    ap.add_argument("--method", default="dssn", choices=["dssn", "supervised"])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--labeled", type=int, default=16)
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    ap.add_argument("--tag", default="")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    r = profile(args.shape, args.method, args.steps, args.warmup, args.labeled, args.overrides)
    r["machine"] = f"{platform.processor() or platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores"
    r["torch"] = torch.__version__
    print(f"{args.shape} {args.method}: {r['sec_per_step']:.3f} s/step ({r['steps']} steps, torch {torch.__version__},"
          f" {r['torch_threads']} threads, {r['num_workers']} loader workers)")
    for k, v in sorted(r["phases_sec_per_step"].items(), key=lambda kv: -kv[1]):
        print(f"  {k:16s} {v * 1000:8.1f} ms  {100 * v / r['sec_per_step']:5.1f}%")
    print(f"  loader batch in-process: {r['loader_batch_in_process_s'] * 1000:.1f} ms; checkpoint "
          f"{r['checkpoint_s']:.2f} s; eval {r['eval_s']:.2f} s on {r['eval_images']} images")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"profile_{args.shape}_{args.method}{'_' + args.tag if args.tag else ''}.json"
    (out / name).write_text(json.dumps(r, indent=2))
    print(f"wrote {out / name}")


if __name__ == "__main__":
    main()
