"""What a method and the trainer exchange: the step's context in, the loss and what to log out."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn


@dataclass
class StepContext:
    cfg: object  # annotassist.config.Config
    step: int  # global iteration, 0-based
    epoch: int
    total_iters: int
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    discriminator: nn.Module | None = None  # the region-relevance judge, read-only for methods


@dataclass
class StepOutput:
    loss: torch.Tensor
    terms: dict[str, torch.Tensor]  # each loss term, for logs and checks
    stats: dict[str, float] = field(default_factory=dict)  # e.g. the kept-pixel ratio
    labeled_preds: list[torch.Tensor] = field(default_factory=list)  # detached logits of the labeled images


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the module itself)."""
    return model.module if hasattr(model, "module") else model
