"""Training-step throughput: supervised vs DSSN, fp32 vs bf16 autocast, channels_last off/on.

Shapes: the published one (DeepLabV3+ ResNet-101, crop 513, 2 labeled + 2 unlabeled per GPU) and a CPU one
(EfficientNet-Lite0, crop 256). The step timed is the trainer's own `train_step` (method step, backward, SGD,
EMA teacher, discriminator step) on batches already in memory, so data loading is not measured.

    python benchmarks/train_speed.py                  # every shape that fits this machine
    python benchmarks/train_speed.py --shapes cpu --steps 5

Prints a table and writes benchmarks/results/train_speed_<device>.json. Reference: the published DSSN code
takes ~1 s/iteration for 4 GPUs x (2+2) images at crop 513 in fp32 on RTX 3090s, i.e. ~4 images/s per GPU.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from annotassist.config import from_dict  # noqa: E402
from annotassist.data.layouts import Sample  # noqa: E402
from annotassist.data.synthetic import generate  # noqa: E402
from annotassist.report import table  # noqa: E402
from annotassist.train.trainer import Trainer  # noqa: E402

SHAPES = {
    "published": {"backbone": "resnet101", "crop": 513, "batch": 2, "classes": 21},
    "cpu": {"backbone": "efficientnet_lite0", "crop": 256, "batch": 2, "classes": 21},
}


def make_batch(method: str, batch: int, crop: int, classes: int) -> dict:
    g = torch.Generator().manual_seed(0)
    n = batch * (2 if method == "supervised" else 1)  # supervised: double labeled batch, same images per step
    b = {"x": torch.rand(n, 3, crop, crop, generator=g),
         "y": torch.randint(0, classes, (n, crop, crop), generator=g)}
    if method == "dssn":
        for p in ("u", "mix"):
            for v in ("w", "s1", "s2"):
                b[f"{p}_{v}"] = torch.rand(batch, 3, crop, crop, generator=g)
            b[f"{p}_valid"] = torch.ones(batch, crop, crop, dtype=torch.bool)
        box = torch.zeros(batch, crop, crop, dtype=torch.uint8)
        box[:, crop // 4: crop // 2, crop // 4: crop // 2] = 1
        b["box1"], b["box2"] = box, box.clone()
    return b


def measure(shape: str, method: str, amp: bool, channels_last: bool, steps: int, warmup: int, device: str,
            samples: list[Sample]) -> dict:
    s = SHAPES[shape]
    classes = [f"c{i}" for i in range(s["classes"])]
    cfg = from_dict({
        "dataset": {"classes": classes},
        "model": {"backbone": s["backbone"], "weights": "none"},
        "train": {"method": method, "batch_size": s["batch"], "crop_size": s["crop"], "max_iters": 10**6,
                  "amp": "bf16" if amp else "off", "channels_last": channels_last, "num_workers": 0},
        "dssn": {"peak_gate": 0.0},  # keep every pixel: the heaviest case of the unlabeled losses
    }, source=f"benchmark {shape}")
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, samples[:4], samples[4:], [], tmp, method=method, device=device, progress=False)
        batch = make_batch(method, s["batch"], s["crop"], s["classes"])
        dev = trainer.device
        for _ in range(warmup):
            trainer.train_step(batch)
        if dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.train_step(batch)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) / steps
    images = s["batch"] * 2  # 2+2 for DSSN, 4 labeled for supervised
    mem = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"shape": shape, "backbone": s["backbone"], "crop": s["crop"], "method": method,
            "precision": "bf16" if amp else "fp32", "channels_last": channels_last, "sec_per_step": dt,
            "images_per_s": images / dt, "peak_mem_gib": mem, "steps": steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default=None, help="comma-separated: published,cpu (default: both on GPU, "
                    "cpu on CPU plus one fp32 look at the published shape)")
    ap.add_argument("--methods", default="supervised,dssn")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    gpu = args.device.startswith("cuda")
    shapes = args.shapes.split(",") if args.shapes else (["published", "cpu"] if gpu else ["cpu", "published"])
    steps = args.steps or (20 if gpu else 3)
    with tempfile.TemporaryDirectory() as tmp:
        generate(tmp, 8, 0, 64, 0, progress=False)
        samples = [Sample(f"{i}", Path(tmp) / f"images/train/{i:05d}.png", Path(tmp) / f"masks/train/{i:05d}.png")
                   for i in range(8)]
        rows = []
        for shape in shapes:
            for method in args.methods.split(","):
                for amp in ([False, True] if gpu else [False]):
                    for cl in ([False, True] if (gpu or shape == "cpu") else [False]):
                        if not gpu and shape == "published" and (cl or method == "supervised"):
                            continue  # on CPU the published shape is one fp32 DSSN look, it takes minutes
                        st = steps if (gpu or shape == "cpu") else 1
                        r = measure(shape, method, amp, cl, st, args.warmup if st > 1 else 1, args.device,
                                    samples)
                        rows.append(r)
                        print(f"{shape:9s} {method:10s} {r['precision']} channels_last={cl!s:5s} "
                              f"{r['images_per_s']:8.2f} img/s  {r['sec_per_step']:.3f} s/step", flush=True)
    machine = torch.cuda.get_device_name(0) if gpu else f"CPU {platform.machine()}, {torch.get_num_threads()} threads"
    print(f"\ntraining step throughput on {machine} (torch {torch.__version__})")
    print(table(["shape", "backbone", "crop", "method", "precision", "channels_last", "s/step", "img/s", "peak GiB"],
                [[r["shape"], r["backbone"], r["crop"], r["method"], r["precision"], str(r["channels_last"]),
                  r["sec_per_step"], r["images_per_s"], r["peak_mem_gib"]] for r in rows]))
    ref = 4 * 4 / 1.0 / 4  # published: 4 GPUs x (2+2) images per ~1 s -> 4 images/s per GPU
    pub = [r for r in rows if r["shape"] == "published" and r["method"] == "dssn"]
    if pub:
        best = max(pub, key=lambda r: r["images_per_s"])
        print(f"\nDSSN at the published shape: best {best['images_per_s']:.2f} img/s per device "
              f"({best['precision']}, channels_last={best['channels_last']}) vs ~{ref:.0f} img/s per RTX 3090 "
              f"in the published fp32 code: {best['images_per_s'] / ref:.2f}x")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = "cuda" if gpu else "cpu"
    (out / f"train_speed_{dev}.json").write_text(json.dumps(
        {"machine": machine, "torch": torch.__version__, "reference_images_per_s_per_gpu": ref, "rows": rows},
        indent=2))
    print(f"wrote {out / f'train_speed_{dev}.json'}")


if __name__ == "__main__":
    main()
