from .deeplabv3plus import DeepLabV3Plus, build_model
from .discriminator import RegionDiscriminator

__all__ = ["DeepLabV3Plus", "build_model", "RegionDiscriminator"]
