"""model.decoder: light - shapes, need_fp, gradients, cost, checkpoints and the fingerprint across decoders."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from annotassist.data.layouts import read_list
from annotassist.errors import CheckpointError
from annotassist.models import build_model
from annotassist.runtime import checkpoint as ckpt_io
from annotassist.train.trainer import Trainer

from conftest import make_config

BASE = ["model.backbone=efficientnet_lite0", "model.weights=none"]


def _model(decoder: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(make_config(BASE + [f"model.decoder={decoder}"]))


@pytest.mark.parametrize("size", [(64, 64), (70, 90)])
def test_light_decoder_output_shapes_and_need_fp(size):
    model = _model("light").train()
    x = torch.rand(2, 3, *size)
    out = model(x)
    assert out.shape == (2, 6, *size)
    pred, fp, Fp = model(x, need_fp=True)
    assert pred.shape == fp.shape == Fp.shape == (2, 6, *size)
    assert not torch.allclose(fp, Fp) and not torch.allclose(pred, fp)  # two independent dropout masks
    model.eval()
    pred, fp, Fp = model(x, need_fp=True)
    assert torch.allclose(pred, fp) and torch.allclose(fp, Fp)
    logits, emb = model.predict(x)
    assert logits.shape == (2, 6, *size) and emb.shape == (2, model.backbone.high_channels)


def test_light_decoder_gradients_reach_every_parameter():
    model = _model("light").train()
    x = torch.rand(4, 3, 64, 64)
    target = torch.randint(0, 6, (4, 64, 64))
    pred, fp, Fp = model(x, need_fp=True)
    loss = sum(F.cross_entropy(p, target) for p in (pred, fp, Fp))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_light_decoder_is_depthwise_separable_and_much_smaller():
    light, published = _model("light"), _model("deeplabv3plus")

    def head(m):
        return sum(p.numel() for n, p in m.named_parameters() if not n.startswith("backbone."))

    def head_convs(m):
        return [c for n, c in m.named_modules() if isinstance(c, torch.nn.Conv2d) and not n.startswith("backbone.")]

    depthwise = [c for c in head_convs(light) if c.groups > 1]
    assert len(depthwise) == 5  # three dilated ASPP branches and the two fuse convs
    assert all(c.groups == c.in_channels == c.out_channels and c.kernel_size == (3, 3) for c in depthwise)
    assert [c.dilation for c in depthwise[:3]] == [(6, 6), (12, 12), (18, 18)]
    assert head(light) * 8 < head(published)
    # the published decoder is unchanged: its state dict keys are those of checkpoints written before the key
    assert "fuse.0.0.weight" in published.state_dict() and published.fuse[0][0].weight.shape == (256, 304, 3, 3)
    assert all(c.groups == 1 for c in head_convs(published))


def test_unknown_decoder_is_a_config_error():
    from annotassist.errors import ConfigError

    with pytest.raises(ConfigError, match="model.decoder"):
        make_config(BASE + ["model.decoder=tiny"])


@pytest.fixture(scope="module")
def splits(synth_dir):
    samples = read_list(synth_dir / "train.txt", synth_dir)[0]
    unlabeled = [type(s)(s.name, s.image, None) for s in samples[4:12]]
    return samples[:4], unlabeled, read_list(synth_dir / "val.txt", synth_dir)[0][:2]


SMALL = BASE + ["train.crop_size=64", "train.batch_size=2", "train.num_workers=0", "train.eval_every=0",
                "train.max_iters=2", "train.lr=0.01"]


def test_light_decoder_checkpoint_round_trip_and_refusal_across_decoders(splits, tmp_path):
    labeled, unlabeled, val = splits
    light = make_config(SMALL + ["model.decoder=light"])
    res = Trainer(light, labeled, unlabeled, val, tmp_path / "light", progress=False).fit()
    saved = torch.load(res.model_path, weights_only=False)
    assert saved["fingerprint"]["decoder"] == "light"
    model, disc = ckpt_io.load_model(res.model_path, light)
    assert disc is not None
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64)
    fresh = build_model(make_config(SMALL + ["model.decoder=light"]))
    fresh.load_state_dict(saved["model"])
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(model(x), fresh(x))
    # resume from the light checkpoint continues (same decoder)
    Trainer(light, labeled, unlabeled, val, tmp_path / "light", resume=True, progress=False)
    published = make_config(SMALL)
    for path in (res.model_path, res.checkpoint):
        with pytest.raises(CheckpointError, match="decoder: checkpoint 'light' vs config 'deeplabv3plus'"):
            ckpt_io.load_model(path, published)
    with pytest.raises(CheckpointError, match="decoder"):
        Trainer(published, labeled, unlabeled, val, tmp_path / "light", resume=True, progress=False)
    with pytest.raises(CheckpointError, match="decoder"):
        Trainer(published, labeled, unlabeled, val, tmp_path / "warm", init_weights=res.model_path,
                progress=False)


def test_checkpoint_from_before_the_decoder_key_is_a_published_decoder(splits, tmp_path):
    labeled, unlabeled, val = splits
    cfg = make_config(SMALL + ["train.method=supervised"])
    res = Trainer(cfg, labeled, unlabeled, val, tmp_path / "run", progress=False).fit()
    old = torch.load(res.model_path, weights_only=False)
    del old["fingerprint"]["decoder"]  # as written before model.decoder existed
    torch.save(old, tmp_path / "old.pt")
    ckpt_io.load_model(tmp_path / "old.pt", cfg)  # accepted: it was the published decoder
    with pytest.raises(CheckpointError, match="decoder"):
        ckpt_io.load_model(tmp_path / "old.pt", make_config(SMALL + ["model.decoder=light"]))


def test_discriminator_width_round_trip_and_resume_refusal(splits, tmp_path):
    """region.width: a narrower judge trains, its checkpoint scores under any width (sized from the file), and
    resuming with another width is refused with the fix, not a size-mismatch trace."""
    labeled, unlabeled, val = splits
    narrow = make_config(SMALL + ["model.decoder=light", "region.width=16"])
    res = Trainer(narrow, labeled, unlabeled, val, tmp_path / "narrow", progress=False).fit()
    saved = torch.load(res.model_path, weights_only=False)["discriminator"]
    assert saved["features.0.weight"].shape[0] == 16
    assert ckpt_io.disc_width(saved) == 16
    wide = make_config(SMALL + ["model.decoder=light"])  # region.width 64, the default
    _, disc = ckpt_io.load_model(res.model_path, wide)
    assert disc.features[0].out_channels == 16
    rel = disc.reliability(torch.rand(1, wide.num_classes, 64, 64).softmax(1), torch.rand(1, 3, 64, 64))
    assert rel.shape == (1, 1, 4, 4)
    with pytest.raises(CheckpointError, match="region.width=16"):
        Trainer(wide, labeled, unlabeled, val, tmp_path / "narrow", resume=True, progress=False)
    Trainer(narrow, labeled, unlabeled, val, tmp_path / "narrow", resume=True, progress=False)


def test_discriminator_width_must_be_positive():
    from annotassist.errors import ConfigError
    with pytest.raises(ConfigError, match="region.width"):
        make_config(SMALL + ["region.width=0"])
