"""Brush RLE speed: annotassist's numpy codec against label_studio_sdk.converter.brush on 1024x1024 masks.

    python benchmarks/rle_speed.py [--size 1024] [--repeats 3]

Two masks: smooth (a few large blobs, what a model predicts) and noisy (every pixel a coin flip, the worst
case: one run per pixel). Each codec's time is the best of `--repeats` runs; the outputs are checked to be
identical. Prints a table and writes benchmarks/results/rle_speed.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def masks(size: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    smooth = np.zeros((size, size), np.uint8)
    for _ in range(6):
        cy, cx, r = rng.integers(0, size, 2).tolist() + [int(rng.integers(size // 10, size // 3))]
        smooth[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 255
    noisy = (rng.random((size, size)) < 0.5).astype(np.uint8) * 255
    return {"smooth": smooth, "noisy": noisy}


def best(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}"


def main() -> int:
    from label_studio_sdk.converter import brush

    from annotassist.annotate.rle import mask_to_rle, rle_to_mask

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "rle_speed.json"))
    args = ap.parse_args()
    rows = []
    for name, m in masks(args.size).items():
        # the SDK takes seconds on the noisy mask: once is enough there to time it within a few percent
        sdk_enc, rle = best(lambda: brush.mask2rle(m), 1)
        if sdk_enc < 0.1:
            sdk_enc, rle = best(lambda: brush.mask2rle(m), args.repeats)
        sdk_dec, flat = best(lambda: brush.decode_rle(rle), 1)
        if sdk_dec < 0.1:
            sdk_dec, flat = best(lambda: brush.decode_rle(rle), args.repeats)
        our_enc, ours = best(lambda: mask_to_rle(m), args.repeats)
        our_dec, back = best(lambda: rle_to_mask(ours, *m.shape), args.repeats)
        assert ours == rle, "encoders disagree"
        assert np.array_equal(back, flat.reshape(*m.shape, 4)[..., 3]), "decoders disagree"
        rows.append({"mask": name, "size": args.size, "rle_bytes": len(rle),
                     "sdk_encode_s": sdk_enc, "ours_encode_s": our_enc, "encode_speedup": sdk_enc / our_enc,
                     "sdk_decode_s": sdk_dec, "ours_decode_s": our_dec, "decode_speedup": sdk_dec / our_dec})
    print(f"machine: {machine()}")
    print(f"{'mask':8} {'bytes':>8} {'sdk enc':>9} {'ours enc':>9} {'x':>6} {'sdk dec':>9} {'ours dec':>9} {'x':>6}")
    for r in rows:
        print(f"{r['mask']:8} {r['rle_bytes']:8d} {r['sdk_encode_s']:8.3f}s {r['ours_encode_s']:8.4f}s "
              f"{r['encode_speedup']:6.0f} {r['sdk_decode_s']:8.3f}s {r['ours_decode_s']:8.4f}s "
              f"{r['decode_speedup']:6.0f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), "results": rows}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
