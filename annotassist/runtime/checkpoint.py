"""Checkpoints: written atomically, refused when they belong to another config.

`checkpoint.pt` holds everything a run needs to continue exactly where it stopped: student, method state
(EMA teacher), discriminator, both optimizers, step, epoch, batch within the epoch, and the RNG states.
`model.pt` holds what inference needs: the student, the discriminator and the fingerprint.
"""
from __future__ import annotations

import os
import shutil
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError


def fingerprint(cfg) -> dict:
    """What must match for weights to be reused: classes and architecture."""
    return {"classes": list(cfg.dataset.classes), "backbone": cfg.model.backbone,
            "output_stride": cfg.model.output_stride, "aspp_dilations": list(cfg.model.aspp_dilations),
            "decoder": cfg.model.decoder}


def check_fingerprint(saved: dict, cfg, path: str | Path) -> None:
    mine = fingerprint(cfg)
    saved = {"decoder": "deeplabv3plus", **saved}  # checkpoints from before model.decoder had the published one
    diffs = [f"{k}: checkpoint {saved.get(k)!r} vs config {v!r}" for k, v in mine.items() if saved.get(k) != v]
    if diffs:
        raise CheckpointError(f"{path} was trained with another config and cannot be used here ("
                              + "; ".join(diffs) + "); train a new model or point to the right checkpoint")


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_torch_save(obj, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, (RuntimeError, OSError)):
            # torch reports a failed write as an opaque "enforce fail ... unexpected pos"
            free = shutil.disk_usage(path.parent).free / 2**20
            raise CheckpointError(f"could not write {path} ({e}); the disk may be full ({free:.0f} MB free there) "
                                  "or the folder unwritable; the previous checkpoint is unchanged") from None
        raise


def load(path: str | Path, cfg=None) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path}: cannot be read as a checkpoint ({e}); it may be truncated - "
                              "delete it to start over") from None
    if not isinstance(ckpt, dict) or "fingerprint" not in ckpt:
        raise CheckpointError(f"{path}: not an annotassist checkpoint")
    if cfg is not None:
        check_fingerprint(ckpt["fingerprint"], cfg, path)
    return ckpt


def disc_width(state: dict) -> int:
    """region.width of a saved discriminator: the output channels of its first conv."""
    return int(state["features.0.weight"].shape[0])


def load_model(path: str | Path, cfg, device: str | torch.device = "cpu"):
    """(model, discriminator or None) from a model.pt or checkpoint.pt, in eval mode."""
    import copy

    from ..models import RegionDiscriminator, build_model

    ckpt = load(path, cfg)
    cfg = copy.deepcopy(cfg)
    cfg.model.weights = "none"  # the checkpoint brings its own weights: no download, no file
    model = build_model(cfg)
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    disc = None
    if ckpt.get("discriminator") is not None:
        # sized from the checkpoint: a model trained before region.width changed still scores
        disc = RegionDiscriminator(cfg.num_classes, disc_width(ckpt["discriminator"]))
        disc.load_state_dict(ckpt["discriminator"])
        disc.to(device).eval()
    return model, disc
