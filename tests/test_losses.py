"""The class-balanced labeled loss, on hand-made logits."""
from __future__ import annotations

import torch

from annotassist.config import TrainConfig
from annotassist.train.losses import balanced_weights, labeled_criterion


def test_balanced_weights_favour_the_rare_class_and_keep_the_loss_scale():
    w = balanced_weights([970, 30])  # a thin class with 3% of the labeled pixels
    share = torch.tensor([0.97, 0.03])
    assert w[1] / w[0] == torch.tensor((0.03 / 0.97) ** -0.5).float()
    assert torch.isclose((share * w).sum(), torch.tensor(1.0))  # the average labeled pixel keeps weight 1
    absent = balanced_weights([500, 500, 0])  # nothing labeled yet: as heavy as the heaviest class
    assert absent[2] == absent.max() and torch.isclose(absent[0], absent[1])


def test_criterion_weighs_only_when_asked():
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 0] = 2.0  # every pixel predicted background
    target = torch.tensor([[[0, 0], [0, 1]]])  # one thin-class pixel
    plain = labeled_criterion(TrainConfig())(logits, target)
    balanced = labeled_criterion(TrainConfig(class_balance="balanced"), [3, 1])(logits, target)
    assert balanced > plain  # the missed thin-class pixel now costs more than the three right ones gain
    target[0, 0, 0] = 255
    assert torch.isfinite(labeled_criterion(TrainConfig(class_balance="balanced"), [2, 1])(logits, target))
