"""benchmarks/gpu.sh at tiny sizes on the CPU: every part runs and lands in the one JSON it writes."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO, needs_camvid


@needs_camvid
def test_gpu_suite_runs_its_parts_at_tiny_sizes(tmp_path):
    out = tmp_path / "suite.json"
    env = {**os.environ, "GPU_SUITE_TINY": "1", "PYTHON": sys.executable, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu.sh"), str(out)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    suite = json.loads(out.read_text())
    assert suite["tiny"] and set(suite["parts"]) == {"train_speed", "score_speed", "camvid_dssn"}
    assert all(p["ok"] for p in suite["parts"].values())

    speed = suite["parts"]["train_speed"]["result"]
    combos = {(r["method"], r["precision"], r["channels_last"]) for r in speed["rows"]}
    assert combos == {(m, p, c) for m in ("supervised", "dssn") for p in ("fp32", "bf16") for c in (False, True)}
    for r in speed["rows"]:  # tiny: Lite0 under the published decoder (bf16 is emulated on a CPU: ResNets take minutes)
        assert r["shape"] == "published" and r["backbone"] == "efficientnet_lite0" and r["decoder"] == "deeplabv3plus"
        assert r["with_data_s"] > 0 and r["floor_s"] > 0 and r["ratio"] == r["with_data_s"] / r["floor_s"]
        assert "slowdown" not in r  # one GPU: no second copy

    score = suite["parts"]["score_speed"]["result"]["rows"]
    assert [r["pool"] for r in score] == [24] and score[0]["scoring_img_s"] > 0

    camvid = suite["parts"]["camvid_dssn"]["result"]
    assert camvid["method"] == "dssn" and camvid["steps"] == 2 and 0 <= camvid["mIoU"] <= 1
    assert camvid["labeled"] == 8


def test_the_published_shape_is_the_released_one():
    """What gpu.sh measures on a GPU (the tiny run above shrinks it): ResNet-101, DeepLabV3+, crop 513, 2+2."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from train_speed import shape_config

    for method in ("supervised", "dssn"):
        cfg = shape_config("published", method)
        assert (cfg.model.backbone, cfg.model.decoder, cfg.train.crop_size, cfg.train.batch_size) == \
            ("resnet101", "deeplabv3plus", 513, 2)
        assert cfg.train.image_scale == 1.0 and cfg.train.method == method
