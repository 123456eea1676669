"""Training the region-relevance discriminator on labeled images, alongside any method.

Real: ground-truth one-hot maps (target 1 in every cell with labeled pixels). Fake: the model's softmax
predictions, judged per 16x16 cell by the share of pixels they got right (see models/discriminator.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.discriminator import cell_targets


def one_hot(label: torch.Tensor, num_classes: int) -> torch.Tensor:
    valid = label != 255
    oh = F.one_hot(label.clamp(max=num_classes - 1), num_classes).permute(0, 3, 1, 2).float()
    return oh * valid[:, None]


def discriminator_step(disc, optimizer, image: torch.Tensor, label: torch.Tensor,
                       preds: list[torch.Tensor], num_classes: int, amp: bool = False) -> dict[str, float]:
    inputs, targets, weights = [one_hot(label, num_classes)], [], []
    target_real, valid = cell_targets(label, label)  # the truth is right wherever it is labeled
    targets.append(target_real)
    weights.append(valid.float())
    for logits in preds:
        logits = logits.float()
        inputs.append(logits.softmax(dim=1))
        t, v = cell_targets(logits.argmax(dim=1), label)
        targets.append(t)
        weights.append(v.float())
    n = len(inputs)
    with torch.autocast(image.device.type, dtype=torch.bfloat16, enabled=amp):
        out = disc(torch.cat(inputs), image.repeat(n, 1, 1, 1)).float()
    target, weight = torch.cat(targets), torch.cat(weights)
    loss = (F.binary_cross_entropy_with_logits(out, target, reduction="none") * weight).sum() / \
        weight.sum().clamp_min(1)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        fake_err = (torch.sigmoid(out[len(label):]) - target[len(label):]).abs()
        err = float((fake_err * weight[len(label):]).sum() / weight[len(label):].sum().clamp_min(1))
    return {"disc_loss": loss.item(), "disc_err": err}
