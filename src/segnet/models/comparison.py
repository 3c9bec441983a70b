"""The networks SegNet is compared with (paper Sec. 4, Tables 3 and 6), on its VGG16 encoder,
plus U-Net and a ResNet-50 SegNet. Merged into the registry ``MODELS``."""

from __future__ import annotations

from .deconvnet import deconvnet
from .deeplab import deeplab_largefov
from .fcn import fcn8s, fcn16s, fcn32s
from .registry import DEEP_LR, ModelEntry
from .resnet import segnet_resnet50
from .unet import unet

VGG, RESNET = "vgg16_bn", "resnet50"  # the ImageNet files their encoders load
COMPARISON_MODELS: dict[str, ModelEntry] = {
    "fcn32s": ModelEntry(fcn32s, default_lr=DEEP_LR, imagenet_encoder=VGG),
    "fcn16s": ModelEntry(fcn16s, default_lr=DEEP_LR, imagenet_encoder=VGG),
    "fcn8s": ModelEntry(fcn8s, default_lr=DEEP_LR, imagenet_encoder=VGG),
    "deeplab_largefov": ModelEntry(deeplab_largefov, default_lr=DEEP_LR, imagenet_encoder=VGG),
    "deconvnet": ModelEntry(deconvnet, default_lr=DEEP_LR, imagenet_encoder=VGG),
    "unet": ModelEntry(unet, default_lr=DEEP_LR),
    "segnet_resnet50": ModelEntry(segnet_resnet50, default_lr=DEEP_LR, imagenet_encoder=RESNET),
}
