"""The region-relevance discriminator (RRN, arXiv 2304.11539, adapted to give one score per region).

Input: concat(softmax prediction, normalised image), C + 3 channels. Four 4x4 stride-2 convs (64, 128, 256,
512; LeakyReLU 0.2, dropout 0.5) bring it to stride 16; where RRN pools to one score per image, a 1x1 conv
keeps one logit per 16x16 cell. sigmoid(logit) = how reliable the prediction is in that cell.

It is trained on labeled images (annotassist/train/region.py): ground-truth one-hot maps are real (target 1);
the model's predictions are judged per cell against the ground truth (target = the share of the cell's
pixels the prediction got right). Plain real/fake targets would only teach it to tell soft maps from one-hot
ones; the per-cell correctness target teaches it WHERE predictions go wrong, which is what both the
pseudo-label filter and the region-relevance acquisition score need.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CELL = 16


class RegionDiscriminator(nn.Module):
    def __init__(self, num_classes: int, width: int = 64):
        super().__init__()
        chans = [num_classes + 3, width, width * 2, width * 4, width * 8]
        layers = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True),
                       nn.Dropout2d(0.5)]
        self.features = nn.Sequential(*layers[:-1])  # no dropout right before the scorer
        self.score = nn.Conv2d(chans[-1], 1, 1)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, probs: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Logits (B, 1, ceil(H/16), ceil(W/16)): one per 16x16 cell."""
        h, w = probs.shape[-2:]
        ph, pw = (-h) % CELL, (-w) % CELL
        x = torch.cat([probs, (image - self.mean) / self.std], dim=1)
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        return self.score(self.features(x))

    def reliability(self, probs: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """sigmoid of the cell logits, in [0, 1]: 1 = the prediction in this cell looks right."""
        return torch.sigmoid(self.forward(probs, image).float())


def cells_to_pixels(cell_map: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, 1, h, w) cell values -> (B, H, W) per pixel (each pixel takes its cell's value)."""
    up = cell_map.repeat_interleave(CELL, dim=-2).repeat_interleave(CELL, dim=-1)
    return up[:, 0, : size[0], : size[1]]


def cell_targets(pred: torch.Tensor, label: torch.Tensor, ignore: int = 255) -> tuple[torch.Tensor, torch.Tensor]:
    """Per 16x16 cell: share of valid pixels predicted right, and whether the cell has any valid pixel."""
    valid = (label != ignore).float()
    right = ((pred == label) & (label != ignore)).float()
    h, w = label.shape[-2:]
    ph, pw = (-h) % CELL, (-w) % CELL
    valid = F.pad(valid, (0, pw, 0, ph))[:, None]
    right = F.pad(right, (0, pw, 0, ph))[:, None]
    n_valid = F.avg_pool2d(valid, CELL) * CELL * CELL
    n_right = F.avg_pool2d(right, CELL) * CELL * CELL
    return n_right / n_valid.clamp_min(1), n_valid > 0
