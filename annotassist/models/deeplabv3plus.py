"""DeepLabV3+ with the dual feature-perturbation forward of DSSN.

ASPP (1x1, three dilated 3x3, image pooling; 256 channels each, then 1x1 to 256), low-level features reduced
to 48 channels, two 3x3 convs of 256, a 1x1 classifier, bilinear upsampling to the input size.

`model.decoder: light` keeps that structure with 128 channels and depthwise-separable 3x3 convolutions (a
depthwise 3x3, BN, ReLU, then a pointwise 1x1, BN, ReLU), as the mobile DeepLabV3+ variants do: behind a small
encoder on a CPU the published decoder is most of the cost of every forward and backward.

`forward(x, need_fp=True)` decodes three copies of the encoder features in ONE batch: the clean features and
two independent Dropout2d copies of both the low- and the high-level features. It returns
(pred, pred_fp, pred_Fp): the clean prediction and the two feature-perturbed views of DSSN's feature-level
Siamese pair.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import Backbone, build_backbone


def _conv_bn_relu(cin: int, cout: int, k: int = 1, dilation: int = 1) -> nn.Sequential:
    pad = 0 if k == 1 else dilation
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=pad, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _separable(cin: int, cout: int, dilation: int = 1) -> nn.Sequential:
    """Depthwise 3x3 (dilated) then pointwise 1x1, each with BN and ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cin, 3, padding=dilation, dilation=dilation, groups=cin, bias=False),
                         nn.BatchNorm2d(cin), nn.ReLU(inplace=True), _conv_bn_relu(cin, cout, 1))


# decoder name -> (channels, low-level channels)
DECODERS = {"deeplabv3plus": (256, 48), "light": (128, 48)}


def _conv3x3(kind: str, cin: int, cout: int, dilation: int = 1) -> nn.Sequential:
    return _conv_bn_relu(cin, cout, 3, dilation) if kind == "deeplabv3plus" else _separable(cin, cout, dilation)


class ASPP(nn.Module):
    def __init__(self, cin: int, dilations: list[int], cout: int = 256, kind: str = "deeplabv3plus"):
        super().__init__()
        self.branches = nn.ModuleList([_conv_bn_relu(cin, cout, 1)] +
                                      [_conv3x3(kind, cin, cout, d) for d in dilations])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), _conv_bn_relu(cin, cout, 1))
        self.project = _conv_bn_relu(cout * (len(dilations) + 2), cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.interpolate(self.pool(x), size=x.shape[-2:], mode="bilinear", align_corners=True)
        return self.project(torch.cat([b(x) for b in self.branches] + [pooled], dim=1))


class DeepLabV3Plus(nn.Module):
    def __init__(self, backbone: Backbone, num_classes: int, dilations: list[int] = (6, 12, 18),
                 fp_dropout: float = 0.5, decoder: str = "deeplabv3plus"):
        super().__init__()
        if decoder not in DECODERS:
            raise ValueError(f"unknown model.decoder {decoder!r} ({', '.join(DECODERS)})")
        ch, low_ch = DECODERS[decoder]
        self.backbone = backbone
        self.num_classes = num_classes
        self.decoder = decoder
        self.aspp = ASPP(backbone.high_channels, list(dilations), ch, decoder)
        self.reduce = _conv_bn_relu(backbone.low_channels, low_ch, 1)
        self.fuse = nn.Sequential(_conv3x3(decoder, ch + low_ch, ch), _conv3x3(decoder, ch, ch))
        self.classifier = nn.Conv2d(ch, num_classes, 1)
        self.fp_dropout = fp_dropout

    def head_parameters(self):
        """Everything but the encoder: trained at lr * head_lr_mult."""
        return [p for n, p in self.named_parameters() if not n.startswith("backbone.")]

    def _decode(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        high = F.interpolate(self.aspp(high), size=low.shape[-2:], mode="bilinear", align_corners=True)
        return self.classifier(self.fuse(torch.cat([self.reduce(low), high], dim=1)))

    def forward(self, x: torch.Tensor, need_fp: bool = False):
        size = x.shape[-2:]
        low, high = self.backbone(x)
        if not need_fp:
            return F.interpolate(self._decode(low, high), size=size, mode="bilinear", align_corners=True)
        p = self.fp_dropout
        # two independent dropout masks on both feature levels; one batched decode for all three copies
        low3 = torch.cat([low, F.dropout2d(low, p, self.training), F.dropout2d(low, p, self.training)])
        high3 = torch.cat([high, F.dropout2d(high, p, self.training), F.dropout2d(high, p, self.training)])
        out = F.interpolate(self._decode(low3, high3), size=size, mode="bilinear", align_corners=True)
        return out.chunk(3)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits at the input size and a pooled embedding of the high-level encoder features (for diversity)."""
        size = x.shape[-2:]
        low, high = self.backbone(x)
        logits = F.interpolate(self._decode(low, high), size=size, mode="bilinear", align_corners=True)
        return logits, high.float().mean(dim=(2, 3))


def build_model(cfg) -> DeepLabV3Plus:
    """The segmentation network of a Config (annotassist.config.Config)."""
    m = cfg.model
    backbone = build_backbone(m.backbone, m.output_stride, m.weights)
    return DeepLabV3Plus(backbone, cfg.num_classes, m.aspp_dilations, m.fp_dropout, m.decoder)
