"""Scoring-pass speed and memory: the full pass (forward + discriminator + scores + pool writes) against a
bare forward pass of the same model on the same images, and peak memory for a 1k vs a 10k image pool.

    python benchmarks/score_speed.py                       # 1k and 10k synthetic pools, the dssn scores
    python benchmarks/score_speed.py --sizes 1000 --scores class_aware,region_relevance,entropy

Each pool size runs in its own process so that its peak RSS (and, on GPU, peak allocated memory) is its own.
Writes benchmarks/results/score_speed_<device>.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def one_pool(n: int, size: int, scores: list[str], batch: int, workers: int, device: str, data: Path) -> dict:
    """Runs inside a child process: build a workspace of n images, train nothing (random weights suffice for
    speed), then time a bare forward pass and the scoring pass over the same images."""
    import torch

    from annotassist.acquire.scoring import score_pool
    from annotassist.config import load_config
    from annotassist.importer import import_dataset
    from annotassist.data.datasets import image_loader
    from annotassist.models import RegionDiscriminator, build_model
    from annotassist.runtime import precision
    from annotassist.runtime.checkpoint import atomic_torch_save, fingerprint
    from annotassist.workspace import Workspace

    cfg = load_config(ROOT / "configs" / "demo.yaml", overrides=[
        f"synthetic.num_pool={n}", "synthetic.num_val=0", f"synthetic.size={size}", "dataset.val=",
        "pool.initial_labeled=16", "model.weights=none", f"acquire.batch_size={batch}",
        f"acquire.num_workers={workers}"])
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.create(Path(tmp) / "ws", cfg, data)
        import_dataset(ws, progress=False)
        torch.manual_seed(0)
        model, disc = build_model(cfg), RegionDiscriminator(cfg.num_classes, cfg.region.width)
        round_ = ws.start_round("dssn")
        path = ws.round_dir(round_) / "model.pt"
        atomic_torch_save({"fingerprint": fingerprint(cfg), "model": model.state_dict(),
                           "discriminator": disc.state_dict()}, path)
        ws.finish_round_training(round_, path, {})
        dev = torch.device(device)
        model.to(dev).eval()
        recs = ws.images("pool", state="unlabeled")
        loader = image_loader(recs, cfg.train.image_scale, batch, num_workers=workers)
        t0 = time.perf_counter()
        with torch.inference_mode(), precision.autocast(cfg, dev):
            for _, images in loader:
                model(images.to(dev)).float().softmax(1)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        bare = len(recs) / (time.perf_counter() - t0)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        report = score_pool(ws, cfg, scores, device=device, progress=False)
        full = (report.scored + report.embedded) / report.seconds
        ws.close()
    gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else None
    return {"pool": n, "image_size": size, "scores": scores, "bare_forward_img_s": bare, "scoring_img_s": full,
            "overhead_pct": (bare / full - 1) * 100, "peak_rss_mib": resource.getrusage(
                resource.RUSAGE_SELF).ru_maxrss / 1024, "peak_gpu_mib": gpu_peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--scores", default="class_aware,region_relevance")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--child", nargs=2, metavar=("N", "DATA"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    scores = args.scores.split(",")
    if args.child:
        r = one_pool(int(args.child[0]), args.image_size, scores, args.batch, args.workers, device,
                     Path(args.child[1]))
        print("RESULT " + json.dumps(r))
        return
    from annotassist.data.synthetic import generate
    from annotassist.report import table

    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            data = Path(tmp) / f"pool{n}"
            print(f"generating a {n}-image synthetic pool ({args.image_size}px) ...", flush=True)
            generate(data, n, 0, args.image_size, seed=0, progress=False)
            proc = subprocess.run([sys.executable, __file__, "--child", str(n), str(data), "--image-size",
                                   str(args.image_size), "--scores", args.scores, "--batch", str(args.batch),
                                   "--workers", str(args.workers), "--device", device],
                                  capture_output=True, text=True)
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode != 0 or not line:
                raise SystemExit(f"pool {n} failed:\n{proc.stderr[-3000:]}")
            rows.append(json.loads(line[0][7:]))
            r = rows[-1]
            print(f"  pool {n}: scoring {r['scoring_img_s']:.1f} img/s, bare forward {r['bare_forward_img_s']:.1f} "
                  f"img/s (overhead {r['overhead_pct']:.1f}%), peak RSS {r['peak_rss_mib']:.0f} MiB", flush=True)
    machine = torch.cuda.get_device_name(0) if device.startswith("cuda") else \
        f"CPU {platform.machine()}, {torch.get_num_threads()} threads"
    print(f"\nscoring pass on {machine}, EfficientNet-Lite0 DeepLabV3+, scores {args.scores}")
    print(table(["pool", "image px", "bare fwd img/s", "scoring img/s", "overhead %", "peak RSS MiB",
                 "peak GPU MiB"],
                [[r["pool"], r["image_size"], r["bare_forward_img_s"], r["scoring_img_s"], r["overhead_pct"],
                  r["peak_rss_mib"], r["peak_gpu_mib"]] for r in rows]))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = "cuda" if device.startswith("cuda") else "cpu"
    (out / f"score_speed_{dev}.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    print(f"wrote {out / f'score_speed_{dev}.json'}")


if __name__ == "__main__":
    main()
