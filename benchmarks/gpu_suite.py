"""Every measurement a CPU cannot make, in one call of at most 8 minutes on one H100/H200 (benchmarks/gpu.sh).

Parts, each a subprocess with its own time limit (a part that fails or runs out is recorded, the others run):
  train_speed  benchmarks/train_speed.py at the published shape (DeepLabV3+ ResNet-101, crop 513, 2+2):
               supervised and DSSN, fp32 vs bf16 autocast, channels_last off/on
  score_speed  benchmarks/score_speed.py: the scoring pass over a 10,000-image pool vs a bare forward pass
  camvid_dssn  `annotassist train` from split files: DSSN on CamVid (46 of 367 labeled) with the GPU recipe of
               configs/camvid.yaml for a few hundred steps, evaluated on the 101 val frames

    python benchmarks/gpu_suite.py --out benchmarks/results/gpu_suite.json
    python benchmarks/gpu_suite.py --tiny --out /tmp/suite.json       # tiny sizes, any machine (CI)

Environment: CAMVID (default ../shared/data/camvid), R101_WEIGHTS (torchvision's ResNet-101 ImageNet file
for the CamVid run when the machine cannot download it; default: torchvision's cache, else random init).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CAMVID = Path(os.environ.get("CAMVID", ROOT.parent / "shared" / "data" / "camvid"))
if not (CAMVID / "train.txt").is_file() and Path("/work/shared/data/camvid/train.txt").is_file():
    CAMVID = Path("/work/shared/data/camvid")

# seconds per part: 210 + 90 + 150 = 450, under the 8 minutes with start-up to spare
LIMITS = {"train_speed": 210, "score_speed": 90, "camvid_dssn": 150}


def r101_weights() -> str:
    if os.environ.get("R101_WEIGHTS"):
        return os.environ["R101_WEIGHTS"]
    hub = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"
    cached = sorted(hub.glob("resnet101-*.pth")) if hub.is_dir() else []
    return str(cached[0]) if cached else "none"


def split_lists(out: Path, labeled: int, tiny: bool) -> tuple[Path, Path, Path]:
    """46 seeded labeled CamVid frames, the rest unlabeled, val as it is (paths relative to CAMVID)."""
    import numpy as np

    lines = [x for x in (CAMVID / "train.txt").read_text().splitlines() if x.strip()]
    val = [x for x in (CAMVID / "val.txt").read_text().splitlines() if x.strip()]
    perm = np.random.default_rng(0).permutation(len(lines))
    lab = [lines[i] for i in perm[:labeled]]
    unl = [lines[i].split()[0] for i in perm[labeled:]]
    if tiny:
        unl, val = unl[:8], val[:4]
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("labeled.txt", lab), ("unlabeled.txt", unl), ("val.txt", val)):
        (out / name).write_text("\n".join(rows) + "\n")
    return out / "labeled.txt", out / "unlabeled.txt", out / "val.txt"


def commands(tmp: Path, tiny: bool, device: str) -> dict[str, tuple[list[str], Path]]:
    py = sys.executable
    speed = [py, str(ROOT / "benchmarks" / "train_speed.py"), "--shapes", "published", "--precisions",
             "fp32,bf16", "--channels-last", "off,on", "--no-pairs", "--out", str(tmp), "--name",
             "train_speed.json", "--device", device]
    speed += ["--tiny"] if tiny else ["--steps", "10", "--repeats", "2"]
    score = [py, str(ROOT / "benchmarks" / "score_speed.py"), "--out", str(tmp), "--device", device]
    score += ["--sizes", "24", "--image-size", "32", "--batch", "8", "--workers", "0"] if tiny else \
        ["--sizes", "10000", "--batch", "64", "--workers", "8"]
    lab, unl, val = split_lists(tmp / "lists", 8 if tiny else 46, tiny)
    run_dir = tmp / "camvid_dssn"
    train = [py, "-m", "annotassist", "train", "--config", str(ROOT / "configs" / "camvid.yaml"),
             "--labeled-list", str(lab), "--unlabeled-list", str(unl), "--val-list", str(val), "--data",
             str(CAMVID), "--out", str(run_dir), "--method", "dssn", "--device", device]
    if tiny:
        train += ["--profile", "cpu", "--max-iters", "2", "--set", "model.weights=none", "--set",
                  "train.image_scale=0.2", "--set", "train.crop_size=48", "--set", "train.batch_size=2"]
    else:
        train += ["--max-iters", "400", "--set", f"model.weights={r101_weights()}", "--set", "train.num_workers=8"]
    return {"train_speed": (speed, tmp / "train_speed.json"),
            "score_speed": (score, tmp / f"score_speed_{'cuda' if device.startswith('cuda') else 'cpu'}.json"),
            "camvid_dssn": (train, run_dir / "metrics.json")}


def run_part(name: str, cmd: list[str], result: Path, limit: float) -> dict:
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        ok = proc.returncode == 0 and result.is_file()
        tail = (proc.stdout[-3000:] + proc.stderr[-3000:]) if not ok else proc.stdout[-2000:]
    except subprocess.TimeoutExpired as e:
        ok, tail = False, f"timed out after {limit} s\n" + ((e.stdout or b"")[-2000:].decode(errors="replace")
                                                            if isinstance(e.stdout, bytes) else str(e.stdout or ""))
    part = {"ok": ok, "seconds": time.time() - t0, "command": " ".join(cmd), "log_tail": tail}
    if ok:
        part["result"] = json.loads(result.read_text())
    print(f"{name}: {'ok' if ok else 'FAILED'} in {part['seconds']:.0f} s", flush=True)
    return part


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu_suite.json"))
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--device", default=None)
    ap.add_argument("--parts", default=",".join(LIMITS))
    args = ap.parse_args()
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if not args.tiny and not device.startswith("cuda"):
        raise SystemExit("the GPU suite needs a GPU (use --tiny to try its parts on a CPU)")
    if not (CAMVID / "train.txt").is_file():
        raise SystemExit(f"CamVid not found at {CAMVID}: set CAMVID=/path/to/camvid")
    t0 = time.time()
    parts = {}
    with tempfile.TemporaryDirectory() as tmp:
        cmds = commands(Path(tmp), args.tiny, device)
        for name in args.parts.split(","):
            cmd, result = cmds[name]
            parts[name] = run_part(name, cmd, result, LIMITS[name] * (3 if args.tiny else 1))
    machine = torch.cuda.get_device_name(0) if device.startswith("cuda") else platform.processor() or "CPU"
    summary = {"machine": machine, "torch": torch.__version__, "device": device, "tiny": args.tiny,
               "seconds": time.time() - t0, "camvid": str(CAMVID), "parts": parts}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(f"GPU suite: {sum(p['ok'] for p in parts.values())}/{len(parts)} parts ok in {summary['seconds']:.0f} s; "
          f"wrote {out}")
    if not all(p["ok"] for p in parts.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
