"""The model registry: CIFAR-form zoo models and torchvision's ImageNet models by name.

Zoo names: ``vgg11``, ``vgg16``, ``resnet18``, ``resnet34``, ``mobilenetv2``, and two transformer
families: ``vit`` (a 4-block ViT on 4x4 patches, LayerNorm + GELU, see
:class:`~pytorchfi_deepvigor.zoo.architectures.ViT`) and ``convnext`` (ConvNeXt blocks, depths
1-1-3-1, see :class:`~pytorchfi_deepvigor.zoo.architectures.ConvNeXt`). torchvision's
classification models are built as ``"torchvision:<name>"`` (e.g. ``"torchvision:resnet50"``)
with random weights: no weights are ever downloaded.

:data:`DEFAULT_WIDTHS` holds the width multiplier at which each zoo model is trained on the
digits by default (:func:`~pytorchfi_deepvigor.zoo.train.get_trained_model`, the CLI, the demo):
narrow enough for an analysis in seconds on a 2-core CPU, wide enough for >= 96 % test accuracy
(``validation/results/zoo_accuracy.csv`` records what each reaches). The paper-table validation
(``validation/specs.py``) trains narrower models still, because exhaustive FI there grows with
the 4th power of the width. ``VALIDATION_WIDTHS`` is the same dict under its former name.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from pytorchfi_deepvigor.zoo.architectures import (
    VGG,
    VGG_LAYOUTS,
    ConvNeXt,
    MobileNetV2,
    ResNet,
    ViT,
)

__all__ = [
    "TORCHVISION_PREFIX",
    "DEFAULT_WIDTHS",
    "VALIDATION_WIDTHS",
    "INPUT_SIZE_MULTIPLE",
    "list_models",
    "build_model",
    "count_parameters",
]

TORCHVISION_PREFIX = "torchvision:"

_BUILDERS: dict[str, Callable[[float, int, int, int], nn.Module]] = {
    "vgg11": lambda w, c, k, s: VGG(VGG_LAYOUTS["vgg11"], width=w, in_channels=c, num_classes=k),
    "vgg16": lambda w, c, k, s: VGG(VGG_LAYOUTS["vgg16"], width=w, in_channels=c, num_classes=k),
    "resnet18": lambda w, c, k, s: ResNet((2, 2, 2, 2), width=w, in_channels=c, num_classes=k),
    "resnet34": lambda w, c, k, s: ResNet((3, 4, 6, 3), width=w, in_channels=c, num_classes=k),
    "mobilenetv2": lambda w, c, k, s: MobileNetV2(width=w, in_channels=c, num_classes=k),
    "vit": lambda w, c, k, s: ViT(width=w, depth=4, input_size=s, in_channels=c, num_classes=k),
    "convnext": lambda w, c, k, s: ConvNeXt(width=w, depths=(1, 1, 3, 1), in_channels=c, num_classes=k),
}

#: Width multiplier of each zoo model by default (VGG-11 at 1/8: 8..64 channels).
DEFAULT_WIDTHS: dict[str, float] = {
    "vgg11": 1 / 8,
    "vgg16": 1 / 8,
    "resnet18": 1 / 8,
    "resnet34": 1 / 8,
    "mobilenetv2": 1 / 4,
    "vit": 1 / 4,
    "convnext": 1 / 8,
}
#: Former name of :data:`DEFAULT_WIDTHS` (kept for existing scripts).
VALIDATION_WIDTHS = DEFAULT_WIDTHS

#: The input side of a zoo model must be a multiple of this (its total downsampling).
INPUT_SIZE_MULTIPLE: dict[str, int] = {
    "vgg11": 32,
    "vgg16": 32,
    "resnet18": 8,
    "resnet34": 8,
    "mobilenetv2": 8,
    "vit": 4,
    "convnext": 16,
}


def list_models(*, include_torchvision: bool = False) -> list[str]:
    """Names :func:`build_model` accepts.

    Args:
        include_torchvision: Also list torchvision's classification models, prefixed
            ``"torchvision:"``.

    Returns:
        Sorted zoo names, then the torchvision names.

    Example:
        >>> list_models()
        ['convnext', 'mobilenetv2', 'resnet18', 'resnet34', 'vgg11', 'vgg16', 'vit']
    """
    names = sorted(_BUILDERS)
    if include_torchvision:
        import torchvision

        tv_names = torchvision.models.list_models(module=torchvision.models)
        names += [TORCHVISION_PREFIX + name for name in sorted(tv_names)]
    return names


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected {name} to be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"expected {name} >= 1, got {value}")
    return value


def build_model(
    name: str,
    *,
    width: float = 1.0,
    in_channels: int | None = None,
    input_size: int | None = None,
    num_classes: int | None = None,
) -> nn.Module:
    """Build a zoo model (random weights, train mode) by name.

    Args:
        name: A name from :func:`list_models`, or ``"torchvision:<name>"``.
        width: Width multiplier of every layer (zoo models only; torchvision models take 1).
        in_channels: Input channels; default 3. A torchvision model gets its first
            convolution replaced by one with these input channels.
        input_size: Side of the square input; default 32 (zoo) or 224 (torchvision). Zoo
            models check it is a multiple of :data:`INPUT_SIZE_MULTIPLE` (VGG: 32; ResNet and
            MobileNetV2: 8, so 16 works; ViT: 4; ConvNeXt: 16); the layers do not depend on
            it, except ViT's position embedding (one per 4x4 patch).
        num_classes: Output classes; default 10 (zoo) or 1000 (torchvision).

    Returns:
        The model, with random weights from torch's global generator.

    Raises:
        ValueError: If the name is unknown or an argument is out of range.
        TypeError: If an argument has the wrong type.

    Example:
        >>> import torch
        >>> model = build_model("resnet18", width=1 / 16, in_channels=1, input_size=16)
        >>> model(torch.zeros(1, 1, 16, 16)).shape
        torch.Size([1, 10])
    """
    if not isinstance(name, str):
        raise TypeError(f"expected name to be a str, got {type(name).__name__}")
    if isinstance(width, bool) or not isinstance(width, int | float) or not width > 0:
        raise ValueError(f"expected width > 0, got {width!r}")
    in_channels = _check_positive_int("in_channels", 3 if in_channels is None else in_channels)
    if name.startswith(TORCHVISION_PREFIX):
        return _build_torchvision(name[len(TORCHVISION_PREFIX) :], width, in_channels, num_classes)
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; expected one of {list_models()} "
                         f"or '{TORCHVISION_PREFIX}<name>'")  # fmt: skip
    input_size = _check_positive_int("input_size", 32 if input_size is None else input_size)
    multiple = INPUT_SIZE_MULTIPLE[name]
    if input_size % multiple:
        raise ValueError(f"{name} needs input_size a multiple of {multiple}, got {input_size}")
    num_classes = _check_positive_int("num_classes", 10 if num_classes is None else num_classes)
    return _BUILDERS[name](float(width), in_channels, num_classes, input_size)


def _build_torchvision(
    name: str, width: float, in_channels: int, num_classes: int | None
) -> nn.Module:
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        raise ValueError(f"unknown torchvision model {name!r}; expected one of {sorted(known)}")
    if width != 1:
        raise ValueError(f"torchvision models have no width multiplier; got width={width}")
    num_classes = _check_positive_int("num_classes", 1000 if num_classes is None else num_classes)
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    if in_channels != 3:
        _replace_first_conv(model, in_channels)
    return model


def _pair(values: tuple[int, ...]) -> tuple[int, int]:
    return int(values[0]), int(values[-1])


def _replace_first_conv(model: nn.Module, in_channels: int) -> None:
    for module_name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            padding = module.padding if isinstance(module.padding, str) else _pair(module.padding)
            conv = nn.Conv2d(
                in_channels,
                module.out_channels,
                _pair(module.kernel_size),
                stride=_pair(module.stride),
                padding=padding,
                dilation=_pair(module.dilation),
                bias=module.bias is not None,
            )
            parent_name, _, child = module_name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, conv)
            return
    raise ValueError("the torchvision model has no Conv2d whose input channels can be changed")


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not) of a model.

    Example:
        >>> count_parameters(nn.Linear(3, 2))
        8
    """
    return sum(p.numel() for p in model.parameters())
