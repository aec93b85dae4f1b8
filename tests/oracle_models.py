"""Small models of the shapes users bring, for the ground-truth tests (:mod:`oracle`).

Each covers a family of layers whose kernels may behave differently under extreme values:
normalisations (BatchNorm, GroupNorm, InstanceNorm, LayerNorm), activations (SiLU, GELU, ReLU6,
LeakyReLU, PReLU, Hardswish), max/avg/adaptive pooling, residual adds, depthwise and dilated
convolutions, channels-last Linears, attention, a layer that standardises its weight in
``forward`` and a head nobody reads. Weights are seeded; a few are set to exactly 1.0 and 1.5
so that flips of the exponent's MSB give +-Inf and NaN, not only 2^64..2^128.
"""

from __future__ import annotations

import math

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

__all__ = ["ORACLE_MODELS", "oracle_images"]


def _randomise(model: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d | nn.InstanceNorm2d) and m.running_mean is not None:
                m.running_mean.normal_(0, 0.2, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
            if isinstance(m, nn.GroupNorm | nn.LayerNorm | nn.BatchNorm2d | nn.InstanceNorm2d):
                if getattr(m, "weight", None) is not None:
                    m.weight.uniform_(0.5, 1.5, generator=g)
                    m.bias.normal_(0, 0.1, generator=g)
        for m in model.modules():  # exact 1.0 and 1.5: bit 30 flips to +-Inf and NaN
            w = getattr(m, "weight", None)
            if isinstance(m, nn.Conv2d | nn.Linear) and isinstance(w, torch.Tensor):
                w.view(-1)[0] = 1.0
                w.view(-1)[1] = -1.5
    return model.eval()


class NormsNet(nn.Module):
    """GroupNorm after a conv, dilated conv, BatchNorm, ReLU6, max pool, depthwise conv,
    InstanceNorm, LeakyReLU, a residual add, avg pool, 1x1 conv, PReLU, adaptive pool."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(1, 4, 3, padding=1)
        self.gn = nn.GroupNorm(2, 4)
        self.conv1 = nn.Conv2d(4, 6, 3, padding=2, dilation=2)
        self.bn = nn.BatchNorm2d(6)
        self.pool = nn.MaxPool2d(2)
        self.dw = nn.Conv2d(6, 6, 3, padding=1, groups=6)
        self.inorm = nn.InstanceNorm2d(6, affine=True)
        self.avg = nn.AvgPool2d(2, ceil_mode=True)
        self.pw = nn.Conv2d(6, 8, 1)
        self.prelu = nn.PReLU(8)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.silu(self.gn(self.conv0(x)))
        x = self.pool(F.relu6(self.bn(self.conv1(x))))
        x = x + F.leaky_relu(self.inorm(self.dw(x)), 0.1)
        x = self.prelu(self.pw(self.avg(x)))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class TokenNet(nn.Module):
    """A patch embedding, LayerNorm, multi-head attention and a GELU MLP on tokens (channels-last
    Linears), residual adds, a mean over tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(1, 8, 2, stride=2)
        self.ln1 = nn.LayerNorm(8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.ln2 = nn.LayerNorm(8)
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 8)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        y = self.ln1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        x = x + self.fc2(F.gelu(self.fc1(self.ln2(x))))
        return self.head(x.mean(dim=1))


class ConvNeXtNet(nn.Module):
    """A ConvNeXt-shaped block: depthwise conv, channels-last LayerNorm and Linears on (N, H, W,
    C) maps, Hardswish, a residual add, adaptive max pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 2, stride=2)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.ln = nn.LayerNorm(8)
        self.pw1 = nn.Linear(8, 16)
        self.pw2 = nn.Linear(16, 8)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.ln(self.dw(x).permute(0, 2, 3, 1))
        y = self.pw2(F.hardswish(self.pw1(y))).permute(0, 3, 1, 2)
        x = x + y
        return self.head(torch.flatten(F.adaptive_max_pool2d(x, 1), 1))


class PermuteNormNet(nn.Module):
    """A channels-last Linear between permutes, then a GroupNorm on the permuted-back map: the
    model's own GroupNorm reads a channels-last tensor here, a contiguous one elsewhere."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, stride=2, padding=1)
        self.lin = nn.Linear(8, 8)
        self.gn = nn.GroupNorm(2, 8)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.lin(self.stem(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.head(F.gelu(self.gn(x)).mean(dim=(2, 3)))


class InPlaceNet(nn.Module):
    """In-place ops: a layer's output added into another tensor (``y.add_``), a ReLU written
    into a view of a chunk, reflect and circular padding, ``padding="same"``, no biases."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 6, 3, padding=1, padding_mode="reflect", bias=False)
        self.c2 = nn.Conv2d(1, 6, 3, padding="same", dilation=2, bias=False)
        self.c3 = nn.Conv2d(6, 6, 3, padding=1, padding_mode="circular")
        self.head = nn.Linear(6, 10, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c1(x)
        y.add_(self.c2(x))
        a, _ = y.chunk(2, dim=1)
        a.relu_()
        return self.head(self.c3(y).amax(dim=(2, 3)))


class StdConv2d(nn.Conv2d):
    """A convolution that standardises each filter in ``forward`` (as timm's BiT ``StdConv2d``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.reshape(1, self.out_channels, -1)
        w = F.batch_norm(w, None, None, training=True, momentum=0.0, eps=1e-6)
        return self._conv_forward(x, w.reshape_as(self.weight), self.bias)


def same_pad(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int]) -> torch.Tensor:
    """TensorFlow's "same" padding: asymmetric where the stride needs it (a traced leaf, as
    timm registers its ``pad_same``)."""
    ih, iw = x.shape[-2:]
    ph = max((math.ceil(ih / stride[0]) - 1) * stride[0] + kernel[0] - ih, 0)
    pw = max((math.ceil(iw / stride[1]) - 1) * stride[1] + kernel[1] - iw, 0)
    return F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])


torch.fx.wrap("same_pad")


class SamePadConv2d(nn.Conv2d):
    """ "Same" padding applied inside ``forward`` (as timm's ``Conv2dSame``); the module's own
    ``padding`` is 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = same_pad(x, self.kernel_size, self.stride)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class OptionalArgsNet(nn.Module):
    """A forward with optional arguments that default to ``None`` (timm's ViT passes
    ``attn_mask=None`` to attention) and a same-padding convolution with stride 2."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = SamePadConv2d(1, 6, 3, stride=2)
        self.qkv = nn.Linear(6, 18)
        self.head = nn.Linear(6, 10)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = F.relu(self.conv(x)).flatten(2).transpose(1, 2)
        qkv = self.qkv(x)
        q, k, v = qkv[..., :6], qkv[..., 6:12], qkv[..., 12:]
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.head(x.mean(dim=1))


class StdConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(1, 4, 3, padding=1)
        self.std = StdConv2d(4, 6, 3, padding=1)
        self.head = nn.Linear(6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.std(F.relu(self.conv0(x))))
        return self.head(x.mean(dim=(2, 3)))


class TwoHeads(nn.Module):
    """A detector-shaped network returning (box regression, class scores)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, stride=2)
        self.box = nn.Linear(4 * 4 * 4, 4)
        self.cls = nn.Linear(4 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.flatten(F.relu(self.conv(x)), 1)
        return self.box(h), self.cls(h)


class ClassScores(nn.Module):
    """The user's wrapper: only the class scores of :class:`TwoHeads` (its box head is dead)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = TwoHeads()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[-1]


def _build(cls: type[nn.Module], seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return _randomise(cls(), seed)


ORACLE_MODELS = {
    "norms": lambda: _build(NormsNet, 1),
    "tokens": lambda: _build(TokenNet, 2),
    "convnext": lambda: _build(ConvNeXtNet, 3),
    "stdconv": lambda: _build(StdConvNet, 4),
    "two_heads": lambda: _build(ClassScores, 5),
    "optional_args": lambda: _build(OptionalArgsNet, 6),
    "permute_norm": lambda: _build(PermuteNormNet, 7),
    "in_place": lambda: _build(InPlaceNet, 8),
}


def oracle_images(n: int = 12, size: int = 10, seed: int = 0) -> torch.Tensor:
    """Seeded images ``(n, 1, size, size)``, with pixels of exactly 1.0 and 1.5 (operand flips
    of bit 30 to +Inf and NaN)."""
    x = torch.randn(n, 1, size, size, generator=torch.Generator().manual_seed(seed))
    x[:, 0, 1, 1] = 1.0
    x[:, 0, 2, 3] = 1.5
    return x
