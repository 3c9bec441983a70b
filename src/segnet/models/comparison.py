"""The networks SegNet is compared with (paper Sec. 4, Tables 3 and 6), on its VGG16 encoder,
plus U-Net and a ResNet-50 SegNet. Merged into the registry ``MODELS``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .deconvnet import deconvnet
from .deeplab import deeplab_largefov
from .fcn import fcn8s, fcn16s, fcn32s
from .resnet import segnet_resnet50
from .unet import unet

COMPARISON_MODELS: dict[str, Callable[..., nn.Module]] = {
    "fcn32s": fcn32s,
    "fcn16s": fcn16s,
    "fcn8s": fcn8s,
    "deeplab_largefov": deeplab_largefov,
    "deconvnet": deconvnet,
    "unet": unet,
    "segnet_resnet50": segnet_resnet50,
}
