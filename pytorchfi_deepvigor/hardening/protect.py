"""The protected layer: selective TMR of output channels and range restriction, as a module.

:class:`ProtectedLayer` wraps one catalogued ``nn.Conv2d``/``nn.Linear`` (kept as its child
``layer``, so the catalogue, PyTorchFI's numbering and the fault sites stay those of the user's
model) and adds, after it:

* **TMR of chosen output channels**: two replicas of the layer's weights and biases (buffers,
  not fault sites) compute those channels again from the same input, and a voter keeps,
  per value, the layer's own output where it agrees with the first replica and the second
  replica's value otherwise. Under one fault (in the layer's weights, an operand of one of its
  multiplies, or a replica) two of the three copies agree, so the voted value is the fault-free
  one, NaN and Inf included (a NaN never compares equal).
* **Range restriction** (Ranger-style clamping): every output value of a channel is held to
  ``[low, high]``, bounds profiled on fault-free calibration data; NaN becomes 0 (then held to
  the range), +-Inf the bound.

The voter and the clamp act on the layer's output, before anything that follows it (BatchNorm,
ReLU, a residual add): the point where the analysis injects its errors, so the analysis and FI
of the protected model see them. Fault-free, a replica runs the layer's own kernel on the same shapes, so
the protected model computes what the user's model computes, bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ProtectedLayer", "plain_layer"]


def plain_layer(layer: nn.Module) -> str:
    """Why the layer's forward is not the plain ``F.conv2d``/``F.linear`` of its stored weight
    (a subclass with its own forward, a hook or a parametrization), ``""`` when it is: TMR's
    replicas run that plain product, so they would not reproduce another forward."""
    base = nn.Conv2d if isinstance(layer, nn.Conv2d) else nn.Linear
    kind = type(layer)
    if kind.forward is not base.forward or (
        base is nn.Conv2d and getattr(kind, "_conv_forward", None) is not nn.Conv2d._conv_forward
    ):
        return f"{kind.__name__} computes its own forward"
    if layer._forward_hooks or layer._forward_pre_hooks:
        return "it has forward hooks"
    if getattr(layer, "parametrizations", None):
        return "its weight is parametrized"
    return ""


class ProtectedLayer(nn.Module):
    """One layer with TMR on some output channels and/or a clamp of its output.

    Args:
        layer: the ``nn.Conv2d`` or ``nn.Linear`` (held as the child ``layer``; not copied).
        tmr_channels: output channels computed three times and voted (empty: none).
        low, high: per output channel bounds of the clamp (``None``: no clamp).
        channel_last: the Linear writes its features last (always the case for a Linear); a
            Conv2d writes channels at dim 1.

    Example:
        >>> conv = nn.Conv2d(1, 3, 3)
        >>> p = ProtectedLayer(conv, tmr_channels=[1])
        >>> x = torch.randn(2, 1, 5, 5)
        >>> bool(torch.equal(p(x), conv(x)))
        True
    """

    tmr_index: Tensor
    replica_weight: Tensor
    replica_bias: Tensor | None
    low: Tensor | None
    high: Tensor | None
    layer: nn.Conv2d | nn.Linear

    def __init__(
        self,
        layer: nn.Module,
        tmr_channels: list[int] | tuple[int, ...] = (),
        low: Tensor | None = None,
        high: Tensor | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(layer, nn.Conv2d | nn.Linear):
            raise TypeError(f"expected an nn.Conv2d or nn.Linear, got {type(layer).__name__}")
        self.layer = layer
        channels = sorted({int(c) for c in tmr_channels})
        n_out = layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features
        bad = [c for c in channels if not 0 <= c < n_out]
        if bad:
            raise ValueError(f"TMR channels {bad} are not output channels 0..{n_out - 1}")
        why = plain_layer(layer) if channels else ""
        if why:
            raise ValueError(f"cannot triplicate channels of this layer: {why}")
        self.dim = 1 if isinstance(layer, nn.Conv2d) else -1
        weight = layer.weight.detach()
        idx = torch.tensor(channels, dtype=torch.long, device=weight.device)
        self.register_buffer("tmr_index", idx)
        # the replicas are whole copies of the layer, so that a protected channel's replica runs
        # the same kernel on the same shapes as the layer and agrees with it bit for bit; only
        # the protected channels are read (the cost model counts only those)
        copies = (2,) if channels else (0,)
        self.register_buffer(
            "replica_weight", weight.clone().unsqueeze(0).repeat(*copies, *[1] * weight.dim())
        )
        bias = layer.bias.detach() if layer.bias is not None else None
        self.register_buffer(
            "replica_bias", None if bias is None else bias.clone().unsqueeze(0).repeat(*copies, 1)
        )
        if (low is None) != (high is None):
            raise ValueError("give both bounds of the clamp (low and high), or neither")
        if low is not None and high is not None:
            low = torch.as_tensor(low, dtype=weight.dtype, device=weight.device).reshape(-1)
            high = torch.as_tensor(high, dtype=weight.dtype, device=weight.device).reshape(-1)
            if low.numel() != n_out or high.numel() != n_out:
                raise ValueError(
                    f"expected one bound per output channel ({n_out}), got {low.numel()} low "
                    f"and {high.numel()} high"
                )
            if bool((low > high).any()):
                raise ValueError("a clamp's low bound is above its high bound")
            shape = (n_out, 1, 1) if self.dim == 1 else (n_out,)
            low, high = low.reshape(shape), high.reshape(shape)
        self.register_buffer("low", low)
        self.register_buffer("high", high)

    @property
    def tmr_channels(self) -> tuple[int, ...]:
        return tuple(int(c) for c in self.tmr_index.tolist())

    def _replica(self, x: Tensor, copy: int) -> Tensor:
        w = self.replica_weight[copy]
        b = None if self.replica_bias is None else self.replica_bias[copy]
        if isinstance(self.layer, nn.Linear):
            y = F.linear(x, w, b)
        else:
            y = self.layer._conv_forward(x, w, b)
        return y.index_select(self.dim % y.dim(), self.tmr_index)

    def forward(self, x: Tensor) -> Tensor:
        y = self.layer(x)
        if self.tmr_index.numel():
            mine = y.index_select(self.dim, self.tmr_index)
            first, second = self._replica(x, 0), self._replica(x, 1)
            voted = torch.where(mine == first, mine, second)
            y = y.index_copy(self.dim % y.dim(), self.tmr_index, voted)
        if self.low is not None and self.high is not None:
            y = torch.nan_to_num(y, nan=0.0)
            y = torch.minimum(torch.maximum(y, self.low), self.high)
        return y

    def extra_repr(self) -> str:
        clamp = "clamp" if self.low is not None else "no clamp"
        return f"tmr_channels={list(self.tmr_channels)}, {clamp}"
