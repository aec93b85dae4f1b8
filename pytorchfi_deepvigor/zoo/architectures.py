"""CIFAR-form VGG, ResNet and MobileNetV2 with a width multiplier.

The CIFAR forms follow the layouts commonly used for 32x32 inputs (a 3x3 stride-1 stem, no
initial max-pool): VGG with batch normalisation, ResNet with basic blocks, MobileNetV2 with
inverted residual blocks whose middle convolution is depthwise. Every module is created once
and used once (no shared ``ReLU``), so a forward hook on any module fires exactly once per
forward, and the forward code is plain tensor code that ``torch.fx`` traces.

Module names follow torchvision: ``features``/``avgpool``/``classifier`` for VGG and
MobileNetV2, ``conv1``/``bn1``/``layer1``...``layer4``/``avgpool``/``fc`` for ResNet, with
``downsample`` on projection shortcuts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "VGG_LAYOUTS",
    "VGG",
    "BasicBlock",
    "ResNet",
    "InvertedResidual",
    "MobileNetV2",
    "scale_channels",
]

#: Convolution widths of the VGG variants ("M" is a 2x2 max-pool).
VGG_LAYOUTS: dict[str, tuple[int | str, ...]] = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (
        64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
        512, 512, 512, "M", 512, 512, 512, "M",
    ),
}  # fmt: skip

#: MobileNetV2 stages: (expansion, output channels, blocks, first stride); CIFAR strides.
_MOBILENET_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def scale_channels(channels: int, width: float) -> int:
    """Channels of a layer at a width multiplier, rounded, at least 1.

    Args:
        channels: Channels of the layer at width 1.
        width: Width multiplier, > 0.

    Returns:
        ``max(1, round(channels * width))``.
    """
    return max(1, int(round(channels * width)))


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    ]


class VGG(nn.Module):
    """VGG with batch normalisation, CIFAR form (3x3 convolutions, five 2x2 max-pools).

    Args:
        layout: Convolution widths and ``"M"`` pools, e.g. ``VGG_LAYOUTS["vgg11"]``.
        width: Width multiplier applied to every convolution.
        in_channels: Channels of the input images.
        num_classes: Number of output classes.

    Example:
        >>> model = VGG(VGG_LAYOUTS["vgg11"], width=1 / 16, in_channels=1)
        >>> model(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        layout: Sequence[int | str],
        *,
        width: float = 1.0,
        in_channels: int = 3,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in layout:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                out_channels = scale_channels(int(item), width)
                layers.extend(_conv_bn_relu(channels, out_channels))
                channels = out_channels
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        return self.classifier(torch.flatten(x, 1))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convolutions and a shortcut (projection when needed)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.downsample(x))


class ResNet(nn.Module):
    """ResNet with basic blocks, CIFAR form (3x3 stride-1 stem, no max-pool).

    Args:
        blocks: Basic blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
        width: Width multiplier applied to every convolution.
        in_channels: Channels of the input images.
        num_classes: Number of output classes.

    Example:
        >>> model = ResNet((2, 2, 2, 2), width=1 / 16, in_channels=1)
        >>> model(torch.zeros(2, 1, 16, 16)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        blocks: Sequence[int],
        *,
        width: float = 1.0,
        in_channels: int = 3,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        channels = scale_channels(64, width)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        stages: list[nn.Sequential] = []
        for stage, count in enumerate(blocks):
            out_channels = scale_channels(64 * 2**stage, width)
            first_stride = 1 if stage == 0 else 2
            stage_blocks = []
            for index in range(count):
                stride = first_stride if index == 0 else 1
                stage_blocks.append(BasicBlock(channels, out_channels, stride))
                channels = out_channels
            stages.append(nn.Sequential(*stage_blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.avgpool(x)
        return self.fc(torch.flatten(x, 1))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expansion, 3x3 depthwise, 1x1 linear projection.

    The identity shortcut is added when the stride is 1 and the channels match.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += [nn.Conv2d(in_channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden)]
            layers.append(nn.ReLU6())
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_residual:  # fixed at construction: not data-dependent, fx traces it
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2, CIFAR form (stride-1 stem and second stage: 8x total downsampling).

    Args:
        width: Width multiplier applied to every convolution, the last 1x1 included.
        in_channels: Channels of the input images.
        num_classes: Number of output classes.

    Example:
        >>> model = MobileNetV2(width=1 / 8, in_channels=1)
        >>> model(torch.zeros(2, 1, 16, 16)).shape
        torch.Size([2, 10])
    """

    def __init__(self, *, width: float = 1.0, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        channels = scale_channels(32, width)
        layers: list[nn.Module] = [
            nn.Sequential(
                nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU6(),
            )
        ]
        for expansion, stage_channels, count, first_stride in _MOBILENET_STAGES:
            out_channels = scale_channels(stage_channels, width)
            for index in range(count):
                stride = first_stride if index == 0 else 1
                layers.append(InvertedResidual(channels, out_channels, stride, expansion))
                channels = out_channels
        last_channels = scale_channels(1280, width)
        layers.append(
            nn.Sequential(
                nn.Conv2d(channels, last_channels, 1, bias=False),
                nn.BatchNorm2d(last_channels),
                nn.ReLU6(),
            )
        )
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))
