"""CIFAR-form VGG, ResNet and MobileNetV2, a small ViT and a small ConvNeXt, with a width multiplier.

The CIFAR forms follow the layouts commonly used for 32x32 inputs (a 3x3 stride-1 stem, no
initial max-pool): VGG with batch normalisation, ResNet with basic blocks, MobileNetV2 with
inverted residual blocks whose middle convolution is depthwise. Every module is created once
and used once (no shared ``ReLU``), so a forward hook on any module fires exactly once per
forward, and the forward code is plain tensor code that ``torch.fx`` traces.

The transformers carry LayerNorm and GELU instead of BatchNorm and ReLU; their Linear layers
see ``(N, T, D)`` tokens (ViT) or ``(N, H, W, C)`` channels-last maps (ConvNeXt's pointwise
layers), and ConvNeXt multiplies by a layer-scale parameter after the analysed layer.

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
    "ViT",
    "EncoderBlock",
    "ConvNeXt",
    "ConvNeXtBlock",
    "LayerNorm2d",
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


# --------------------------------------------------------------------------- transformers
class _Attention(nn.Module):
    """Multi-head self-attention with its projections as plain ``nn.Linear`` modules (``qkv``
    and ``proj``, as timm's ViT has them), so each is an analysable layer on ``(N, T, D)``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"embedding dim {dim} is not a multiple of {heads} heads")
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (N, heads, T, d_head)
        attn = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(n, t, d))


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))`` with GELU."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp_ratio * dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(mlp_ratio * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    """A small Vision Transformer: patch embedding, class token, learnt position embedding,
    pre-norm encoder blocks, LayerNorm and a linear head on the class token.

    The embedding dim is ``scale_channels(192, width)`` (ViT-Tiny's 192 at width 1) rounded up
    to a multiple of 16 (one head per 16 dims).

    Args:
        width: Width multiplier of the embedding dim.
        depth: Encoder blocks.
        patch_size: Side of the square patches (the input side must be a multiple of it).
        input_size: Side of the square input (fixes the number of tokens).
        mlp_ratio: Hidden features of the MLP per embedding dim.
        in_channels: Channels of the input images.
        num_classes: Number of output classes.

    Example:
        >>> model = ViT(width=1 / 4, depth=2, in_channels=1, input_size=16)
        >>> model(torch.zeros(2, 1, 16, 16)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        *,
        width: float = 1.0,
        depth: int = 4,
        patch_size: int = 4,
        input_size: int = 32,
        mlp_ratio: int = 2,
        in_channels: int = 3,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        if input_size % patch_size:
            raise ValueError(f"input_size {input_size} is not a multiple of patch {patch_size}")
        dim = -(-scale_channels(192, width) // 16) * 16
        tokens = (input_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        self.blocks = nn.Sequential(
            *[EncoderBlock(dim, dim // 16, mlp_ratio) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (N, T, D)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an ``(N, C, H, W)`` map (ConvNeXt's downsampling norm)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block: 7x7 depthwise conv, then channels-last LayerNorm, pointwise Linear to 4x,
    GELU, pointwise Linear back, layer scale, and the residual."""

    def __init__(self, dim: int, layer_scale: float) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)  # (N, H, W, C)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y)))) * self.gamma
        return x + y.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    """A small ConvNeXt for 32x32 inputs: a 2x2 stride-2 stem, four stages of
    :class:`ConvNeXtBlock` separated by LayerNorm + 2x2 stride-2 convolutions, global average
    pooling, LayerNorm and a linear head. Stage widths ``(96, 192, 384, 768) * width``.

    The layer scale starts at ``layer_scale`` (ConvNeXt's 1e-6 suits its long AdamW schedule;
    the zoo's short SGD recipe trains with 1.0).

    Args:
        width: Width multiplier of every stage.
        depths: Blocks per stage.
        layer_scale: Initial value of every block's layer scale.
        in_channels: Channels of the input images.
        num_classes: Number of output classes.

    Example:
        >>> model = ConvNeXt(width=1 / 16, depths=(1, 1, 1, 1), in_channels=1)
        >>> model(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        *,
        width: float = 1.0,
        depths: Sequence[int] = (1, 1, 3, 1),
        layer_scale: float = 1.0,
        in_channels: int = 3,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        dims = [scale_channels(c, width) for c in (96, 192, 384, 768)][: len(depths)]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, dims[0], 2, stride=2), LayerNorm2d(dims[0]))
        stages: list[nn.Module] = []
        for i, (dim, depth) in enumerate(zip(dims, depths, strict=True)):
            layers: list[nn.Module] = []
            if i:
                layers += [LayerNorm2d(dims[i - 1]), nn.Conv2d(dims[i - 1], dim, 2, stride=2)]
            layers += [ConvNeXtBlock(dim, layer_scale) for _ in range(depth)]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(dims[-1])
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.head(self.norm(x.mean(dim=(2, 3))))
