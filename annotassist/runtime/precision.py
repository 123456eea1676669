"""The one mixed-precision policy: training, evaluation, scoring and pre-annotation all ask here.

`train.amp`: auto = bf16 autocast on CUDA, fp32 elsewhere; bf16 = bf16 autocast on any device (CPUs with
AVX512-BF16/AMX gain from it); off = fp32. Scoring and pre-annotation run at the precision the model was
trained at, so a score never comes from different numerics than the round's evaluation.
"""
from __future__ import annotations

import torch


def bf16_enabled(cfg, device: torch.device | str) -> bool:
    amp = cfg.train.amp
    if amp == "off":
        return False
    if amp == "bf16":
        return True
    return torch.device(device).type == "cuda"


def autocast(cfg, device: torch.device | str):
    """The autocast context for a forward pass of `cfg`'s model on `device`."""
    device = torch.device(device)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16_enabled(cfg, device))


def describe(cfg, device: torch.device | str) -> str:
    return "bf16 autocast" if bf16_enabled(cfg, device) else "fp32"
