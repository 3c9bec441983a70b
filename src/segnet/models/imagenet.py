"""ImageNet-pretrained encoders: torchvision-format state dicts loaded into ``model.encoder``.

SegNet's encoder is initialised from VGG16 trained on ImageNet (paper Sec. 3.1; Sec. 4 for the
comparison networks). Three torchvision formats are understood, recognised from their keys:

* ``vgg16`` -- ``features.N.weight/bias`` for the 13 convs, N = 0, 2, 5, 7, 10, 12, 14, 17, 19,
  21, 24, 26, 28 (conv, ReLU, and a pool after each block). Our encoder's BN layers keep their
  initialisation (the authors' Caffe VGG16 had no BN either).
* ``vgg16_bn`` -- conv at N = 0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40 and its BN at N+1
  (``weight``, ``bias``, ``running_mean``, ``running_var``, ``num_batches_tracked``).
* ``resnet50`` -- torchvision's own names (``conv1``, ``bn1``, ``layer1.0.downsample.0`` ...),
  which :class:`~segnet.models.resnet.ResNetEncoder` shares, so keys map one to one.

Every encoder key must be in the file with the encoder tensor's shape, and every key of the file
must belong to the encoder, except the ImageNet head (``classifier.*`` / ``fc.*``); the first
violation raises :class:`SegNetError` naming the key, and nothing is copied before all passed.
``num_batches_tracked`` may be absent (files saved before PyTorch 0.4.1 lack it). Models with
VGG's fully connected layers as convs (FCN, DeconvNet: ``fc6`` 7x7 512 -> 4096, ``fc7`` 1x1
4096 -> 4096) also take ``classifier.0`` / ``classifier.3`` reshaped, as their papers did.

Which models have such an encoder, and which file ``source="imagenet"`` downloads for each: the
registry's ``ModelEntry.imagenet_encoder`` (:func:`imagenet_encoders`). Any vgg16 / vgg16_bn
file fits the VGG16 ones (with BN, as SegNet's encoder).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..errors import ArgumentError, SegNetError
from . import MODELS
from .encoders import VGG16_BLOCKS
from .resnet import RESNET50_LAYERS, ResNetEncoder

IMAGENET_URLS = {
    "vgg16": "https://download.pytorch.org/models/vgg16-397923af.pth",
    "vgg16_bn": "https://download.pytorch.org/models/vgg16_bn-6c64b313.pth",
    "resnet50": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
}
FAMILY = {"vgg16": "vgg16", "vgg16_bn": "vgg16", "resnet50": "resnet50"}  # arch -> encoder kind

VGG_FC = (4096, 512 * 7 * 7)  # ImageNet classifier.0 (fc6) and classifier.3 (fc7): 4096 wide


class Target(NamedTuple):
    tensor: Tensor  # the model's parameter or buffer
    shape: tuple[int, ...]  # the shape the file must hold (differs only for fc6 / fc7)


def vgg_feature_indices(*, batch_norm: bool) -> list[int]:
    """Positions of the 13 convs in torchvision's ``features`` Sequential, from the cfg."""
    indices, position = [], 0
    for widths in VGG16_BLOCKS:
        for _ in widths:
            indices.append(position)
            position += 3 if batch_norm else 2  # conv, (BN,) ReLU
        position += 1  # max-pool
    return indices


def _vgg_layers(model: nn.Module) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]] | None:
    """(conv, BN) of each ConvBNReLU in ``model.encoder.blocks`` if they are VGG16's, else None."""
    blocks = getattr(getattr(model, "encoder", None), "blocks", None)
    if not isinstance(blocks, nn.ModuleList):
        return None
    units = [unit for block in blocks for unit in block]  # ConvBNReLU: (conv, BN, ReLU)
    if not all(isinstance(unit, nn.Sequential) and len(unit) >= 2 for unit in units):
        return None
    layers = [(unit[0], unit[1]) for unit in units]
    widths = [width for block in VGG16_BLOCKS for width in block]
    vgg = all(
        isinstance(conv, nn.Conv2d)
        and conv.kernel_size == (3, 3)
        and isinstance(bn, nn.BatchNorm2d)
        for conv, bn in layers
    )
    return layers if vgg and [conv.out_channels for conv, _ in layers] == widths else None


def imagenet_encoders() -> dict[str, str]:
    """Registered model -> the torchvision ImageNet file its encoder loads."""
    return {name: e.imagenet_encoder for name, e in MODELS.items() if e.imagenet_encoder}


def encoder_arch(model: nn.Module) -> str:
    """The ImageNet file that fits ``model.encoder``: ``"vgg16_bn"`` or ``"resnet50"``."""
    encoder = getattr(model, "encoder", None)
    if isinstance(encoder, ResNetEncoder):
        depths = [len(getattr(encoder, f"layer{i}")) for i in range(1, encoder.num_layers + 1)]
        if depths == [spec.blocks for spec in RESNET50_LAYERS]:
            return "resnet50"
    elif _vgg_layers(model) is not None:
        return "vgg16_bn"
    raise SegNetError(
        f"{type(model).__name__} has no ImageNet-pretrained encoder; models that have one: "
        f"{', '.join(imagenet_encoders())}"
    )


def _fc_convs(model: nn.Module) -> list[nn.Conv2d]:
    """fc6, fc7 convs shaped as VGG's fully connected layers, if the model has them."""
    convs = []
    for name, shape in (("fc6", (4096, 512, 7, 7)), ("fc7", (4096, 4096, 1, 1))):
        module = getattr(model, name, None)
        conv = module[0] if isinstance(module, nn.Sequential) else module
        if not isinstance(conv, nn.Conv2d) or tuple(conv.weight.shape) != shape:
            return []
        convs.append(conv)
    return convs


def _vgg_targets(model: nn.Module, arch: str) -> tuple[dict[str, Target], dict[str, Target]]:
    """(required, optional) file keys -> where they go, for a vgg16 / vgg16_bn file."""
    batch_norm = arch == "vgg16_bn"
    required: dict[str, Target] = {}
    optional: dict[str, Target] = {}
    for (conv, bn), i in zip(_vgg_layers(model), vgg_feature_indices(batch_norm=batch_norm)):
        for name in ("weight", "bias"):
            tensor = getattr(conv, name)
            required[f"features.{i}.{name}"] = Target(tensor, tuple(tensor.shape))
        if batch_norm:
            for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                tensor = getattr(bn, name)
                keys = optional if name == "num_batches_tracked" else required
                keys[f"features.{i + 1}.{name}"] = Target(tensor, tuple(tensor.shape))
    for conv, index, in_features in zip(_fc_convs(model), (0, 3), (VGG_FC[1], 4096)):
        # Linear (4096, 512*7*7) is the 7x7 conv (4096, 512, 7, 7) flattened in (C, H, W) order.
        optional[f"classifier.{index}.weight"] = Target(conv.weight, (4096, in_features))
        optional[f"classifier.{index}.bias"] = Target(conv.bias, (4096,))
    return required, optional


def _resnet_targets(model: nn.Module) -> tuple[dict[str, Target], dict[str, Target]]:
    required: dict[str, Target] = {}
    optional: dict[str, Target] = {}
    for key, tensor in model.encoder.state_dict(keep_vars=True).items():
        keys = optional if key.endswith("num_batches_tracked") else required
        keys[key] = Target(tensor, tuple(tensor.shape))
    return required, optional


def detect_arch(state: Mapping[str, object]) -> str | None:
    """``"vgg16"``, ``"vgg16_bn"`` or ``"resnet50"`` from torchvision's key names; else None."""
    if "conv1.weight" in state and "layer1.0.conv1.weight" in state:
        return "resnet50"
    if "features.0.weight" in state:
        return "vgg16_bn" if "features.1.running_mean" in state else "vgg16"
    return None


def _check(
    state: Mapping[str, object],
    required: dict[str, Target],
    optional: dict[str, Target],
    *,
    head: str,
    origin: str,
) -> list[tuple[Tensor, Tensor]]:
    """Every key and shape, first failure raised; returns (destination, value) pairs to copy."""
    pairs = []
    for key, target in {**required, **optional}.items():
        if key not in state:
            if key in required:
                raise SegNetError(f"{origin}: missing key {key!r} (expected shape {target.shape})")
            continue
        value = state[key]
        if not isinstance(value, Tensor):
            raise SegNetError(f"{origin}: {key!r} is a {type(value).__name__}, not a tensor")
        if tuple(value.shape) != target.shape:
            raise SegNetError(
                f"{origin}: {key!r}: expected shape {target.shape}, found {tuple(value.shape)}"
            )
        pairs.append((target.tensor, value))
    for key in state:
        if key not in required and key not in optional and not key.startswith(head):
            raise SegNetError(f"{origin}: unexpected key {key!r}: not part of this encoder")
    return pairs


def _download(arch: str) -> dict[str, Tensor]:
    url = IMAGENET_URLS[arch]
    try:
        return torch.hub.load_state_dict_from_url(
            url, map_location="cpu", progress=True, check_hash=True, weights_only=True
        )
    except Exception as error:  # URLError, timeouts, HTTP errors, a truncated file
        cached = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
        raise SegNetError(
            f"could not download the ImageNet {arch} weights from {url} ({error}). Download that "
            f"file where there is internet access and pass it as `encoder_weights` FILE, or copy "
            f"it to {cached}"
        ) from error


def _read(path: Path) -> Mapping[str, object]:
    if not path.is_file():
        raise ArgumentError("encoder_weights", f"{path}: file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch's unpickler explains itself over many lines: keep one
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        if "weights_only" in str(error) or "Unsupported global" in str(error):
            reason = "it holds Python objects, not only tensors, and is not loaded for safety"
        raise ArgumentError("encoder_weights", f"{path}: not readable: {reason}") from None
    if not isinstance(state, Mapping):
        raise ArgumentError(
            "encoder_weights", f"{path}: holds a {type(state).__name__}, not a state dict"
        )
    return state


def load_encoder_weights(model: nn.Module, source: str | Path, *, arch: str | None = None) -> None:
    """Copies ImageNet weights into ``model.encoder`` (and VGG fc6/fc7 where the model has them).

    ``source``: ``"imagenet"`` downloads torchvision's file for the model's encoder (or for
    ``arch``) into the torch hub cache; anything else is a path to a torchvision-format state
    dict. ``arch`` (``"vgg16"``, ``"vgg16_bn"``, ``"resnet50"``) forces the format; by default
    it is read from the keys. Raises :class:`SegNetError` on any mismatch, before copying.
    """
    family = encoder_arch(model)
    if arch is not None and arch not in IMAGENET_URLS:
        raise SegNetError(
            f"unknown encoder arch {arch!r}; choose one of: {', '.join(IMAGENET_URLS)}"
        )
    first = model.encoder.conv1 if family == "resnet50" else _vgg_layers(model)[0][0]
    if first.in_channels != 3:
        raise SegNetError(
            f"ImageNet encoders take 3-channel RGB images but this model takes {first.in_channels} "
            "channels; build it with in_channels=3 or train it without `encoder_weights`"
        )
    if str(source) == "imagenet":
        arch = arch or family
        origin = IMAGENET_URLS[arch]
        state: Mapping[str, object] = _download(arch)
    else:
        origin = str(source)
        state = _read(Path(source))
    found = detect_arch(state)
    if arch is None and found is None:
        raise SegNetError(
            f"{origin}: not a torchvision vgg16, vgg16_bn or resnet50 state dict: expected keys "
            f"like features.0.weight or layer1.0.conv1.weight, found {', '.join(list(state)[:3])}"
        )
    if arch is not None and found is not None and found != arch:
        raise SegNetError(f"{origin} holds {found} weights, not {arch}")
    arch = arch or found
    if FAMILY[arch] != FAMILY[family]:
        raise SegNetError(f"{origin} holds {arch} weights but this model's encoder is {family}")
    if FAMILY[arch] == "resnet50":
        required, optional = _resnet_targets(model)
        head = "fc."
    else:
        required, optional = _vgg_targets(model, arch)
        head = "classifier."
    pairs = _check(state, required, optional, head=head, origin=origin)
    with torch.no_grad():
        for tensor, value in pairs:
            tensor.copy_(value.reshape(tensor.shape))
