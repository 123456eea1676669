"""Training-step speed, the reference: per shape and method, seconds per step WITH data loading (the real
Trainer, its DataLoader and decode cache, real images), the compute FLOOR (the same steps on batches already in
memory), their ratio, and the SLOWDOWN when a second copy of the same run shares the machine.

Shapes (each the config a profile really uses):
  demo        configs/demo.yaml: the generated demo set (300 + 100 images, 128 px, at scale 0.5), crop 64, 4+4
  camvid_cpu  configs/camvid.yaml --profile cpu: the CamVid frames at half size, crop 160, 4+4
  value       configs/camvid.yaml --profile value: the effort benchmark's rounds (a third of the size, crop 112)
  published   DeepLabV3+ ResNet-101 (published decoder), crop 513, 2+2, generated 512 px images: on a GPU,
              fp32 vs bf16 autocast, channels_last off/on

Every measurement runs in a fresh process (`--tiny`: one process takes them all, in order). Steady state: a
few warm-up steps, then R repeats of N steps with data and N steps of the floor, alternating; the table gives
the median and the spread (min-max). The slowdown starts two copies of the with-data measurement at once
(they wait for each other after warm-up, and each keeps stepping until the other is done, so both are measured
under load). A fresh loader's first batch (worker start-up, once an epoch) is reported on its own.

    python benchmarks/train_speed.py                          # CPU: demo and camvid_cpu, both methods
    python benchmarks/train_speed.py --shapes published       # on a GPU (no second copy: one GPU)
    python benchmarks/train_speed.py --tiny --out /tmp/x      # seconds: the code paths, for CI

Writes benchmarks/results/train_speed_<cpu|cuda>.json. Reference for the published shape: the released DSSN
code takes ~1 s/iteration for 4 GPUs x (2+2) images at crop 513 in fp32 on RTX 3090s (~4 images/s per GPU).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import annotassist  # noqa: E402,F401  (sets the OpenMP wait policy before torch loads)

CAMVID = Path(os.environ.get("CAMVID", ROOT.parent / "shared" / "data" / "camvid"))
if not (CAMVID / "train.txt").is_file() and Path("/work/shared/data/camvid/train.txt").is_file():
    CAMVID = Path("/work/shared/data/camvid")

# shape -> how to build its config and its data; `tiny` shrinks each to seconds (CI)
SHAPES = {
    "demo": {"config": "demo.yaml", "profile": None, "data": "synthetic", "size": 128, "pool": 300, "val": 100},
    "camvid_cpu": {"config": "camvid.yaml", "profile": "cpu", "data": "camvid"},
    # the effort benchmark's rounds (benchmarks/value_camvid.py): a third of the size, crop 112, light decoder
    "value": {"config": "camvid.yaml", "profile": "value", "data": "camvid"},
    "published": {"config": "camvid.yaml", "profile": None, "data": "synthetic", "size": 512, "pool": 48, "val": 16,
                  "set": ["model.weights=none", "train.crop_size=513", "train.image_scale=1.0",
                          "train.batch_size=2"]},
}
TINY = {
    "demo": ["train.crop_size=32", "train.batch_size=2", "model.weights=none"],
    "camvid_cpu": ["train.crop_size=48", "train.batch_size=2", "train.image_scale=0.2", "model.weights=none"],
    # bf16 autocast is emulated on CPUs without bf16 units (30 s a ResNet-101 DSSN step at crop 64 on 2 EPYC
    # cores, 14 s a ResNet-50 one at crop 32, 4 s with Lite0): crop 32, one step and Lite0 under the published
    # DeepLabV3+ decoder keep the CI run of the suite's code paths (methods x precisions x channels_last, data vs
    # floor, the JSON) short; the ResNet backbones have their own tests (tests/test_trainer.py), and
    # tests/test_gpu_suite.py checks the untouched published shape is ResNet-101
    "published": ["train.crop_size=32", "train.batch_size=2", "train.image_scale=1.0",
                  "model.backbone=efficientnet_lite0"],
}


def machine_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from annotassist.runtime.threads import available_cores

    return f"{model}, {available_cores()} cores"


def shape_config(shape: str, method: str, tiny: bool = False, extra: list[str] | None = None):
    from annotassist.config import load_config

    s = SHAPES[shape]
    # a measured dssn step is a DSSN step: no warm-up share (with a long schedule it would make every measured
    # step a supervised one)
    overrides = list(s.get("set", [])) + (TINY[shape] if tiny else []) + ["dssn.warmup=0", "dssn.rampup=0"] + \
        list(extra or [])
    cfg = load_config(ROOT / "configs" / s["config"], profile=s["profile"], overrides=overrides)
    cfg.train.method = method
    return cfg


def shape_data(shape: str, data_dir: Path, labeled: int, tiny: bool = False):
    """(labeled, unlabeled, val) samples of the shape's images; the generated ones are made in data_dir."""
    from annotassist.data.layouts import read_list
    from annotassist.data.synthetic import generate

    s = SHAPES[shape]
    if s["data"] == "synthetic":
        size, pool = (32 if shape == "demo" else 64, 12) if tiny else (s["size"], s["pool"])
        if not (data_dir / "train.txt").is_file():
            generate(data_dir, pool, 8 if tiny else s["val"], size, 0, progress=False)
        root = data_dir
    else:
        root = CAMVID
        if not (root / "train.txt").is_file():
            raise SystemExit(f"CamVid not found at {root}: set CAMVID=/path/to/camvid")
    pool = read_list(root / "train.txt", root)[0]
    val = read_list(root / "val.txt", root)[0]
    if tiny:
        pool = pool[:12]
    unl = [type(x)(x.name, x.image, None) for x in pool[labeled:]]
    return pool[:labeled], unl, val


# -- one measurement, in a child process ------------------------------------------------------------------

def _wait_for(paths: list[Path], timeout: float = 900.0) -> None:
    t0 = time.time()
    while not all(p.exists() for p in paths):
        if time.time() - t0 > timeout:
            raise SystemExit(f"the other copy never reached {paths}")
        time.sleep(0.05)


def child(spec: dict) -> dict:
    import torch

    from annotassist.train.trainer import Trainer

    extra = [f"train.amp={'bf16' if spec['bf16'] else 'off'}", f"train.channels_last={spec['channels_last']}",
             "train.max_iters=1000000"]  # the lr schedule must not run out while we measure
    cfg = shape_config(spec["shape"], spec["method"], spec["tiny"], extra + spec.get("set", []))
    lab, unl, _ = shape_data(spec["shape"], Path(spec["data"]), spec["labeled"], spec["tiny"])
    cuda = spec["device"].startswith("cuda")

    def sync():
        if cuda:
            torch.cuda.synchronize()

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        tr = Trainer(cfg, lab, unl, [], tmp, device=spec["device"], progress=False)
        setup_s = time.perf_counter() - t0
        epoch = [0]

        def batches():
            while True:  # epochs as fit() runs them: a new loader (and its workers) per epoch
                for b in tr._loader(epoch[0], 0):
                    yield b
                epoch[0] += 1

        it = batches()
        t0 = time.perf_counter()
        first = next(it)
        loader_start_s = time.perf_counter() - t0
        tr.train_step(first)
        for _ in range(spec["warmup"]):
            tr.train_step(next(it))
        sync()
        n, with_data, floor = spec["steps"], [], []
        if spec.get("sync_dir"):
            d = Path(spec["sync_dir"])
            (d / f"ready-{spec['copy']}").touch()
            _wait_for([d / f"ready-{k}" for k in range(spec["copies"])])
        for _ in range(spec["repeats"]):
            t0 = time.perf_counter()
            for _ in range(n):
                tr.train_step(next(it))
            sync()
            with_data.append((time.perf_counter() - t0) / n)
            if spec["floor"]:
                held = [next(it) for _ in range(n)]
                held = [{k: v.to(tr.device) for k, v in b.items()} for b in held]  # in memory, on the device
                sync()
                t0 = time.perf_counter()
                for b in held:
                    tr.train_step(b)
                sync()
                floor.append((time.perf_counter() - t0) / n)
        if spec.get("sync_dir"):
            (d / f"done-{spec['copy']}").touch()
            others = [d / f"done-{k}" for k in range(spec["copies"])]
            while not all(p.exists() for p in others):  # keep the machine busy until the other copy is done
                tr.train_step(next(it))
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
        return {"with_data": with_data, "floor": floor, "setup_s": setup_s, "loader_start_s": loader_start_s,
                "threads": tr.threads.describe(), "threads_at_end": tr.governor.threads,
                "foreign_cores_at_end": tr.governor.foreign, "thread_changes": tr.governor.changes, "decoder": cfg.model.decoder, "backbone": cfg.model.backbone,
                "crop": cfg.train.crop_size, "batch": cfg.train.batch_size, "peak_gpu_gib": peak,
                "images_per_step": cfg.train.batch_size * 2}


def _run_children(specs: list[dict]) -> list[dict]:
    procs = [subprocess.Popen([sys.executable, __file__, "--child", json.dumps(s)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for s in specs]
    out = []
    for p in procs:
        stdout, stderr = p.communicate()
        line = [x for x in stdout.splitlines() if x.startswith("RESULT ")]
        if p.returncode != 0 or not line:
            for q in procs:
                q.kill()
            raise SystemExit(f"a measurement failed:\n{stderr[-4000:]}")
        out.append(json.loads(line[-1][7:]))
    return out


def _med(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _spec(shape: str, method: str, bf16: bool, channels_last: bool, args, data: Path) -> dict:
    return {"shape": shape, "method": method, "bf16": bf16, "channels_last": channels_last, "tiny": args.tiny,
            "device": args.device, "data": str(data), "labeled": args.labeled, "warmup": args.warmup,
            "steps": args.steps, "repeats": args.repeats, "set": args.overrides}


def measure(base: dict, pairs: bool, quiet: dict | None = None) -> dict:
    """One row: the step alone (with data and on tensors in memory), and with `pairs` two copies at once.
    `quiet`: the alone measurement already taken (tiny runs take them all in one process)."""
    shape, method, bf16, channels_last = base["shape"], base["method"], base["bf16"], base["channels_last"]
    quiet = quiet or _run_children([{**base, "floor": True}])[0]
    row = {"shape": shape, "method": method, "precision": "bf16" if bf16 else "fp32",
           "channels_last": channels_last, **{k: quiet[k] for k in ("backbone", "decoder", "crop", "batch",
                                                                    "threads", "setup_s", "loader_start_s",
                                                                    "peak_gpu_gib")},
           "with_data_s": _med(quiet["with_data"]), "with_data_runs": quiet["with_data"],
           "floor_s": _med(quiet["floor"]), "floor_runs": quiet["floor"]}
    row["ratio"] = row["with_data_s"] / row["floor_s"]
    row["images_per_s"] = quiet["images_per_step"] / row["with_data_s"]
    if pairs:
        with tempfile.TemporaryDirectory() as sync_dir:
            two = _run_children([{**base, "floor": False, "sync_dir": sync_dir, "copy": k, "copies": 2}
                                 for k in range(2)])
        per_copy = [_med(t["with_data"]) for t in two]
        row["shared_s"] = _med(per_copy)
        row["shared_runs"] = [t["with_data"] for t in two]
        row["shared_threads_at_end"] = [t["threads_at_end"] for t in two]
        row["slowdown"] = row["shared_s"] / row["with_data_s"]
    return row


def _spread(xs: list[float]) -> str:
    return f"{min(xs):.3f}-{max(xs):.3f}" if xs else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default=None, help="comma-separated: demo,camvid_cpu,value,published (default: "
                    "demo,camvid_cpu on CPU; published on a GPU)")
    ap.add_argument("--methods", default="supervised,dssn")
    ap.add_argument("--steps", type=int, default=None, help="steps per repeat")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--labeled", type=int, default=16)
    ap.add_argument("--no-pairs", action="store_true", help="skip the two-copies measurement")
    ap.add_argument("--precisions", default=None, help="fp32,bf16 (default: both on a GPU, fp32 on CPU)")
    ap.add_argument("--channels-last", default=None, help="off,on (default: both on a GPU, the config's on CPU)")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes: seconds, for CI")
    ap.add_argument("--set", action="append", default=[], dest="overrides", help="config override for every run")
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--name", default=None, help="output file name (default train_speed_<cpu|cuda>.json)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        spec = json.loads(args.child)
        print("RESULT " + json.dumps([child(s) for s in spec] if isinstance(spec, list) else child(spec)), flush=True)
        return
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    gpu = args.device.startswith("cuda")
    shapes = args.shapes.split(",") if args.shapes else (["published"] if gpu else ["demo", "camvid_cpu"])
    args.steps = args.steps or (1 if args.tiny else 10)
    args.repeats = args.repeats or (1 if args.tiny else 3)
    if args.tiny:
        args.warmup = 0  # the first step (its own timing) already warms up; each tiny step is seconds on a CPU
        args.labeled = min(args.labeled, 4)
    precisions = (args.precisions or ("fp32,bf16" if gpu else "fp32")).split(",")
    cl_modes = args.channels_last.split(",") if args.channels_last else (["off", "on"] if gpu else ["config"])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        specs = []
        for shape in shapes:
            data = Path(tmp) / shape
            shape_data(shape, data, args.labeled, args.tiny)  # generate once, before any timing
            for method in args.methods.split(","):
                for prec in precisions:
                    for cl in cl_modes:
                        cfg_cl = shape_config(shape, method, args.tiny, args.overrides).train.channels_last
                        channels_last = cfg_cl if cl == "config" else cl == "on"
                        specs.append(_spec(shape, method, prec == "bf16", channels_last, args, data))
        # a real measurement gets a fresh process each (no allocator, cache or thread state carried over); a
        # tiny run's steps take less than starting Python and torch, so one child takes them all, in order
        quiet = _run_children([[{**b, "floor": True} for b in specs]])[0] if args.tiny else [None] * len(specs)
        for base, q in zip(specs, quiet):
            r = measure(base, pairs=not (gpu or args.no_pairs), quiet=q)
            rows.append(r)
            shared = f", 2 copies {r['shared_s']:.3f} s ({r['slowdown']:.2f}x)" if "slowdown" in r else ""
            print(f"{r['shape']:10s} {r['method']:10s} {r['precision']} cl={r['channels_last']!s:5s} with data "
                  f"{r['with_data_s']:.3f} s/step, floor {r['floor_s']:.3f} ({r['ratio']:.2f}x)"
                  f"{shared}", flush=True)
    machine = machine_name(args.device)
    print(f"\ntraining step on {machine}, torch {torch.__version__}; {rows[0]['threads'] if rows else ''}")
    from annotassist.report import table

    print(table(["shape", "method", "decoder", "crop", "precision", "channels_last", "s/step with data", "spread",
                 "floor s/step", "spread", "ratio", "2 copies s/step", "slowdown", "img/s"],
                [[r["shape"], r["method"], r["decoder"], r["crop"], r["precision"], str(r["channels_last"]),
                  r["with_data_s"], _spread(r["with_data_runs"]), r["floor_s"], _spread(r["floor_runs"]),
                  r["ratio"], r.get("shared_s", ""), r.get("slowdown", ""), r["images_per_s"]] for r in rows]))
    ref = 4.0  # published: 4 GPUs x (2+2) images per ~1 s -> 4 images/s per GPU
    pub = [r for r in rows if r["shape"] == "published" and r["method"] == "dssn"]
    if pub and not args.tiny:
        best = max(pub, key=lambda r: r["images_per_s"])
        print(f"\nDSSN at the published shape: best {best['images_per_s']:.2f} img/s ({best['precision']}, "
              f"channels_last={best['channels_last']}) vs ~{ref:.0f} img/s per RTX 3090 in the released fp32 "
              f"code: {best['images_per_s'] / ref:.2f}x")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = args.name or f"train_speed_{'cuda' if gpu else 'cpu'}{'_tiny' if args.tiny else ''}.json"
    (out / name).write_text(json.dumps(
        {"machine": machine, "torch": torch.__version__, "device": args.device, "tiny": args.tiny,
         "steps": args.steps, "repeats": args.repeats, "warmup": args.warmup,
         "reference_images_per_s_per_gpu": ref, "rows": rows}, indent=2))
    print(f"wrote {out / name}")


if __name__ == "__main__":
    main()
