"""The supervised baseline: the same network on labeled images only (published: double batch)."""
from __future__ import annotations

from torch import nn

from ..data.transforms import StrongAug
from .common import StepContext, StepOutput

NEEDS_UNLABELED = False


def batch_mult(cfg) -> int:
    """Labeled images per step as a multiple of train.batch_size: the published baseline doubles the batch
    (it has no unlabeled half)."""
    return 2


def views(cfg) -> tuple[StrongAug, float]:
    """Labeled crops only: no strong views are made (NEEDS_UNLABELED is False)."""
    return StrongAug(), 0.0


def init_state(model: nn.Module, cfg) -> dict[str, nn.Module]:
    return {}


def result_model(model: nn.Module, extra: dict, cfg) -> nn.Module:
    return model


def training_step(model: nn.Module, extra: dict, batch: dict, ctx: StepContext) -> StepOutput:
    pred_x = model(batch["x"])
    loss_x = ctx.criterion(pred_x, batch["y"])
    return StepOutput(loss_x, {"loss_x": loss_x}, {}, [pred_x.detach()])


def after_step(model: nn.Module, extra: dict, ctx: StepContext) -> None:
    pass
