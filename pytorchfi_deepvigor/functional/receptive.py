"""Receptive fields: the operands each output neuron of a Conv2d or Linear layer multiplies.

A Linear layer may see N-D inputs ``(I, *positions, F_in)`` (tokens ``(I, T, F_in)``,
channels-last maps ``(I, H, W, C)``): its neuron ``(feature, position)`` multiplies the input
features at that position; positions are flat, row-major.

Pure tensor code (no hooks): given a layer's golden input and its parameters, return the
operands that meet each weight. Conv2d supports any stride, dilation, groups (depthwise
included), non-square kernels and maps, and padding given as numbers, ``"same"`` (asymmetric
when the kernel extent is even, as PyTorch pads) or ``"valid"``.

Zero padding is **not** a fault site: the functions return a validity mask that is ``False``
where an operand is a padded zero. With ``padding_mode`` other than ``"zeros"`` (reflect,
replicate, circular) the padded operands are copies of stored values and count as sites.

Layouts: an output position ``p`` is ``row * W_out + col``; the operands of output channel
``c`` are the input channels of its group in unfold order (channel-major, then kernel row,
kernel column), matching ``weight[c].flatten()``.

Example:
    >>> conv = torch.nn.Conv2d(2, 4, 3, padding=1, groups=2)
    >>> x = torch.randn(5, 2, 4, 4)
    >>> ops, w, valid = conv_operands(x, conv, torch.tensor([3]), torch.tensor([0]))
    >>> tuple(ops.shape), tuple(w.shape), int(valid.sum())  # corner: 4 of 9 operands are real
    ((5, 1, 9), (1, 9), 4)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ConvGeometry",
    "conv_geometry",
    "conv_patches",
    "conv_operands",
    "conv_weight_operands",
    "conv_weight_patterns",
    "linear_weight_patterns",
    "WeightPatterns",
    "conv_operand_means",
    "linear_operands",
    "linear_weight_operands",
    "linear_operand_means",
]


@dataclass(frozen=True)
class ConvGeometry:
    """Everything :func:`conv_patches` needs to know about a Conv2d.

    Attributes:
        in_channels, out_channels, groups: channel counts.
        kernel: ``(kh, kw)``.
        stride, dilation: ``(sh, sw)``, ``(dh, dw)``.
        pad: ``(left, right, top, bottom)`` as ``F.pad`` takes it.
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``.
    """

    in_channels: int
    out_channels: int
    groups: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pad: tuple[int, int, int, int]
    padding_mode: str = "zeros"

    @property
    def operands_per_neuron(self) -> int:
        """Operands of one output neuron: ``in_channels / groups * kh * kw``."""
        return self.in_channels // self.groups * self.kernel[0] * self.kernel[1]


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, tuple) else (int(v), int(v))


def conv_geometry(conv: nn.Conv2d) -> ConvGeometry:
    """Resolve a Conv2d's padding (numbers, ``"same"``, ``"valid"``, or the ``(left, right,
    top, bottom)`` of :class:`~pytorchfi_deepvigor.twins.PaddedConv2d`) into explicit pads."""
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"expected an nn.Conv2d, got {type(conv).__name__}")
    kh, kw = _pair(conv.kernel_size)
    dil = _pair(conv.dilation)
    if conv.padding == "same":
        th, tw = dil[0] * (kh - 1), dil[1] * (kw - 1)
        pad = (tw // 2, tw - tw // 2, th // 2, th - th // 2)
    elif conv.padding == "valid":
        pad = (0, 0, 0, 0)
    elif len(conv.padding) == 4:  # (left, right, top, bottom), as a same-padding twin applies
        pad = tuple(int(p) for p in conv.padding)  # type: ignore[assignment]
    else:
        ph, pw = _pair(conv.padding)  # type: ignore[arg-type]
        pad = (pw, pw, ph, ph)
    return ConvGeometry(
        in_channels=conv.in_channels,
        out_channels=conv.out_channels,
        groups=conv.groups,
        kernel=(kh, kw),
        stride=_pair(conv.stride),
        dilation=dil,
        pad=pad,
        padding_mode=conv.padding_mode,
    )


def _check_input(x: Tensor, geom: ConvGeometry) -> None:
    if x.dim() != 4 or x.shape[1] != geom.in_channels:
        raise ValueError(
            f"expected input (I, {geom.in_channels}, H, W), got shape {tuple(x.shape)}"
        )


def _padded(x: Tensor, geom: ConvGeometry) -> tuple[Tensor, Tensor]:
    """The padded input and a map of which padded positions hold a real operand."""
    ones = torch.ones(1, 1, *x.shape[2:], dtype=x.dtype, device=x.device)
    if geom.padding_mode == "zeros":
        return F.pad(x, geom.pad), F.pad(ones, geom.pad)[0, 0] > 0.5
    # padded operands are copies of stored values: real sites
    return F.pad(x, geom.pad, mode=geom.padding_mode), F.pad(ones, geom.pad, value=1.0)[0, 0] > 0.5


def conv_patches(x: Tensor, geom: ConvGeometry) -> tuple[Tensor, Tensor]:
    """All receptive fields of a convolution.

    Args:
        x: the layer's input ``(I, C_in, H, W)``.
        geom: from :func:`conv_geometry`.

    Returns:
        ``(patches, valid)``: ``patches`` ``(I, C_in * kh * kw, L)`` as ``F.unfold`` lays them out
        (``L`` output positions, row-major); ``valid`` bool ``(kh * kw, L)``, ``False`` where the
        operand is zero padding (the same for every input channel and image).
    """
    _check_input(x, geom)
    unfold = dict(kernel_size=geom.kernel, dilation=geom.dilation, stride=geom.stride)
    xp, mp = _padded(x, geom)
    patches = F.unfold(xp, **unfold)
    valid = F.unfold(mp[None, None].to(x.dtype), **unfold)[0] > 0.5
    return patches, valid


def _gather(
    x: Tensor, conv: nn.Conv2d, channels: Tensor, positions: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Operands ``(I, T, J, *P)`` of filters ``channels`` at output ``positions`` ``(T, *P)``.

    A direct gather from the padded input (no unfold of the whole map): operand ``j`` of output
    channel ``c`` is input channel ``group(c) * C_in/groups + j // (kh kw)`` at kernel offset
    ``j % (kh kw)``.
    """
    geom = conv_geometry(conv)
    _check_input(x, geom)
    xp, mp = _padded(x, geom)
    (kh, kw), (sh, sw), (dh, dw) = geom.kernel, geom.stride, geom.dilation
    w_out = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    dev = x.device
    cg = geom.in_channels // geom.groups
    group = channels.long().to(dev) // (geom.out_channels // geom.groups)
    j = torch.arange(cg * kh * kw, device=dev)
    cin = (group * cg).unsqueeze(1) + j // (kh * kw)  # (T, J)
    dr, dc = (j % (kh * kw)) // kw * dh, j % kw * dw  # (J,)
    pos = positions.long().to(dev)
    extra = pos.dim() - 1  # 0 for one position per target, 1 for (T, P)
    r = (pos // w_out * sh).unsqueeze(1)  # (T, 1, *P)
    c = (pos % w_out * sw).unsqueeze(1)
    shape = (1, -1) + (1,) * extra
    rows, cols = r + dr.view(shape), c + dc.view(shape)  # (T, J, *P)
    cin = cin.view(*cin.shape, *(1,) * extra).expand_as(rows)
    w = conv.weight.detach()[channels.long()].reshape(channels.numel(), -1)
    return xp[:, cin, rows, cols], w, mp[rows, cols]


def conv_operands(
    x: Tensor, conv: nn.Conv2d, channels: Tensor, positions: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Operands, weights and validity of Conv2d output neurons ``(channels[t], positions[t])``.

    Args:
        x: the layer's golden input ``(I, C_in, H, W)``.
        conv: the layer.
        channels: long ``(T,)`` output channels.
        positions: long ``(T,)`` flat output positions (``row * W_out + col``).

    Returns:
        ``(ops, w, valid)``: float32 ``(I, T, J)``, ``(T, J)`` and bool ``(T, J)``.
    """
    return _gather(x, conv, channels, positions)


def _tokens(x: Tensor, linear: nn.Linear) -> Tensor:
    """A Linear layer's input ``(I, *positions, F_in)`` as ``(I, P, F_in)``, positions row-major."""
    if x.dim() < 2 or x.shape[-1] != linear.in_features:
        raise ValueError(
            f"expected Linear input (I, ..., {linear.in_features}), got shape {tuple(x.shape)}"
        )
    return x.reshape(x.shape[0], -1, x.shape[-1])


def linear_operands(
    x: Tensor, linear: nn.Linear, channels: Tensor, positions: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Operands, weights and validity of Linear output neurons ``(channels[t], positions[t])``.

    Args:
        x: the layer's golden input, ``(I, F_in)`` or N-D ``(I, *positions, F_in)`` (tokens,
            channels-last maps).
        linear: the layer.
        channels: long ``(T,)`` output features.
        positions: long ``(T,)`` flat token/position indices (row-major over ``positions``);
            ``None`` (or zeros) for ``(I, F_in)`` inputs.

    Returns:
        ``(ops, w, valid)``: float32 ``(I, T, F_in)``, ``(T, F_in)`` and bool ``(T, F_in)``.

    Example:
        >>> lin = torch.nn.Linear(3, 2); x = torch.randn(4, 5, 3)  # 5 tokens
        >>> ops, w, _ = linear_operands(x, lin, torch.tensor([1, 0]), torch.tensor([4, 2]))
        >>> bool(torch.equal(ops[:, 0], x[:, 4])), tuple(ops.shape)
        (True, (4, 2, 3))
    """
    w = linear.weight.detach()[channels.long()]
    if x.dim() == 2:
        ops = x.unsqueeze(1).expand(-1, channels.numel(), -1)
    else:
        tokens = _tokens(x, linear)
        pos = torch.zeros_like(channels) if positions is None else positions
        ops = tokens[:, pos.long().to(x.device)]
    return ops, w, torch.ones_like(w, dtype=torch.bool)


def conv_weight_operands(
    x: Tensor, conv: nn.Conv2d, channels: Tensor, positions: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Operands each weight of Conv2d filters ``channels`` meets at the given output positions.

    Args:
        x: the layer's golden input ``(I, C_in, H, W)``.
        conv: the layer.
        channels: long ``(T,)`` output channels.
        positions: long ``(T, P)`` flat output positions per target, or ``None`` for all.

    Returns:
        ``(ops, w, valid)``: float32 ``(I, T, J, P)``, ``(T, J)`` and bool ``(T, J, P)``.
    """
    if positions is None:
        geom = conv_geometry(conv)
        _check_input(x, geom)
        out_hw = [
            (x.shape[2 + a] + geom.pad[2 - 2 * a] + geom.pad[3 - 2 * a]
             - geom.dilation[a] * (geom.kernel[a] - 1) - 1) // geom.stride[a] + 1
            for a in (0, 1)
        ]  # fmt: skip
        n_pos = out_hw[0] * out_hw[1]
        positions = torch.arange(n_pos, device=x.device).expand(channels.numel(), -1)
    return _gather(x, conv, channels, positions)


@dataclass(frozen=True)
class WeightPatterns:
    """The operand maps of the weights of some Conv2d filters, gathered per element on demand.

    ``patterns(image, target, weight)`` gives what
    ``conv_weight_operands(x, conv, channels)`` holds at ``[image, target, weight]`` (the
    operands of every output position, and their validity) for ``B`` triples at once: ``B x P``
    values, never the ``I x T x J x P`` of them all. Built by :func:`conv_weight_patterns`.

    Attributes:
        x: the layer's input ``(I, C_in, H, W)``, not copied (any memory layout).
        weights: the filters ``(T, J)``.
        cin: long ``(T, J)``: the input channel each weight reads.
        rows, cols: long ``(J, P)``: where in ``x`` weight ``j`` meets output position ``p``
            (0 at zero padding).
        real: bool ``(J, P)``: ``False`` at zero padding.
    """

    x: Tensor
    weights: Tensor
    cin: Tensor
    rows: Tensor
    cols: Tensor
    real: Tensor

    def __call__(self, image: Tensor, target: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
        """Operands ``(B, P)`` (0 at zero padding) and validity ``(B, P)`` of ``B`` triples."""
        dev = self.x.device
        image, target, weight = image.to(dev), target.to(dev), weight.to(dev)
        rows, cols, real = self.rows[weight], self.cols[weight], self.real[weight]
        ops = self.x[image.unsqueeze(1), self.cin[target, weight].unsqueeze(1), rows, cols]
        return torch.where(real, ops, torch.zeros((), dtype=ops.dtype, device=dev)), real


def conv_weight_patterns(x: Tensor, conv: nn.Conv2d, channels: Tensor) -> WeightPatterns:
    """:func:`conv_weight_operands` at every position, as a gather per element.

    The padded positions are mapped back onto the input (by padding a map of the input's
    indices the way the layer pads), so nothing of the size of the input is copied.

    Args:
        x: the layer's golden input ``(I, C_in, H, W)``.
        conv: the layer.
        channels: long ``(T,)`` output channels.

    Example:
        >>> conv = torch.nn.Conv2d(2, 4, 3, padding=1, groups=2); x = torch.randn(5, 2, 4, 4)
        >>> ops, _, valid = conv_weight_operands(x, conv, torch.tensor([3, 0]))
        >>> pat, real = conv_weight_patterns(x, conv, torch.tensor([3, 0]))(
        ...     torch.tensor([4]), torch.tensor([1]), torch.tensor([7]))
        >>> bool(pat[0].equal(ops[4, 1, 7])), bool(real[0].equal(valid[1, 7]))
        (True, True)
    """
    geom = conv_geometry(conv)
    _check_input(x, geom)
    dev = x.device
    h, w = x.shape[2:]
    index = torch.meshgrid(torch.arange(h, device=dev), torch.arange(w, device=dev), indexing="ij")
    src = torch.stack(index).unsqueeze(0).double()  # (1, 2, H, W): each position's (row, col)
    if geom.padding_mode == "zeros":
        src = F.pad(src, geom.pad, value=-1.0)  # -1: a padded zero
    else:  # padded operands are copies of stored values: the positions they copy
        src = F.pad(src, geom.pad, mode=geom.padding_mode)
    src = src[0].long()
    (kh, kw), (sh, sw), (dh, dw) = geom.kernel, geom.stride, geom.dilation
    h_out = (src.shape[1] - dh * (kh - 1) - 1) // sh + 1
    w_out = (src.shape[2] - dw * (kw - 1) - 1) // sw + 1
    pos = torch.arange(h_out * w_out, device=dev)
    cg = geom.in_channels // geom.groups
    j = torch.arange(cg * kh * kw, device=dev)
    pr = (pos // w_out * sh).unsqueeze(0) + ((j % (kh * kw)) // kw * dh).unsqueeze(1)  # (J, P)
    pc = (pos % w_out * sw).unsqueeze(0) + (j % kw * dw).unsqueeze(1)
    rows, cols = src[0][pr, pc], src[1][pr, pc]
    group = channels.long().to(dev) // (geom.out_channels // geom.groups)
    cin = (group * cg).unsqueeze(1) + j // (kh * kw)  # (T, J)
    weights = conv.weight.detach()[channels.long()].reshape(channels.numel(), -1)
    return WeightPatterns(x, weights, cin, rows.clamp_min(0), cols.clamp_min(0), rows >= 0)


def linear_weight_operands(
    x: Tensor, linear: nn.Linear, channels: Tensor, positions: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Operands the weights of Linear output features ``channels`` meet at the given positions.

    Args:
        x: the layer's golden input, ``(I, F_in)`` (one position) or ``(I, *positions, F_in)``.
        linear: the layer.
        channels: long ``(T,)`` output features.
        positions: long ``(T, P)`` flat token/position indices per target, or ``None`` for all.

    Returns:
        ``(ops, w, valid)``: float32 ``(I, T, F_in, P)``, ``(T, F_in)`` and bool ``(T, F_in, P)``
        (``P = 1`` for ``(I, F_in)`` inputs).
    """
    w = linear.weight.detach()[channels.long()]
    tokens = x.unsqueeze(1) if x.dim() == 2 else _tokens(x, linear)  # (I, P, F_in)
    if positions is None or x.dim() == 2:
        ops = tokens.transpose(1, 2)[:, None].expand(-1, channels.numel(), -1, -1)
    else:
        ops = tokens[:, positions.long().to(x.device)].transpose(2, 3)  # (I, T, F_in, P)
    valid = torch.ones(*w.shape, ops.shape[-1], dtype=torch.bool, device=w.device)
    return ops, w, valid


def conv_operand_means(
    x: Tensor, conv: nn.Conv2d, channels: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Mean over the real output positions of the operands each weight of ``channels`` meets.

    What :func:`conv_weight_operands` gives, averaged over every position (padding excluded),
    without gathering the ``(I, T, J, P)`` operands: the sums depend only on the input channel
    and the kernel offset, one strided slice of the padded input per offset.

    Returns:
        ``(means, w, n_real)``: float32 ``(I, T, J)``, ``(T, J)`` and the real positions per
        weight ``(T, J)``.
    """
    geom = conv_geometry(conv)
    _check_input(x, geom)
    xp, mp = _padded(x, geom)
    (kh, kw), (sh, sw), (dh, dw) = geom.kernel, geom.stride, geom.dilation
    h_out = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    w_out = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    sums, counts = [], []
    for a in range(kh):
        rows = slice(a * dh, a * dh + sh * (h_out - 1) + 1, sh)
        for b in range(kw):
            cols = slice(b * dw, b * dw + sw * (w_out - 1) + 1, sw)
            sums.append(xp[:, :, rows, cols].sum(dim=(2, 3)))  # (I, C_in)
            counts.append(mp[rows, cols].sum())
    total = torch.stack(sums, dim=-1)  # (I, C_in, kh * kw)
    n_real = torch.stack(counts).to(x.dtype)  # (kh * kw,)
    mean = total / n_real.clamp_min(1)
    cg = geom.in_channels // geom.groups
    group = channels.long().to(x.device) // (geom.out_channels // geom.groups)
    cin = (group * cg).unsqueeze(1) + torch.arange(cg, device=x.device)  # (T, cg)
    n_t = channels.numel()
    means = mean[:, cin].reshape(x.shape[0], n_t, cg * kh * kw)
    w = conv.weight.detach()[channels.long()].reshape(n_t, -1)
    return means, w, n_real.repeat(cg).expand(n_t, -1)


def linear_weight_patterns(x: Tensor, linear: nn.Linear, channels: Tensor) -> WeightPatterns:
    """:class:`WeightPatterns` of a Linear layer on N-D inputs (tokens): weight ``j`` of any
    output feature meets input feature ``j`` at every token, so its map is that feature over
    the tokens (positions row-major, as the layer's output channels are laid out). Nothing is
    copied: the patterns read a view of ``x``.

    Example:
        >>> lin = torch.nn.Linear(3, 2); x = torch.randn(4, 5, 3)  # 4 images of 5 tokens
        >>> pat, real = linear_weight_patterns(x, lin, torch.tensor([1]))(
        ...     torch.tensor([2]), torch.tensor([0]), torch.tensor([1]))
        >>> bool(pat[0].equal(x[2, :, 1])), bool(real.all())
        (True, True)
    """
    tokens = _tokens(x, linear)  # (I, P, F_in)
    n_pos, n_in = tokens.shape[1:]
    dev = x.device
    view = tokens.transpose(1, 2).unsqueeze(-1)  # (I, F_in, P, 1): feature j is "channel" j
    ch = channels.long().to(dev)
    return WeightPatterns(
        x=view,
        weights=linear.weight.detach()[ch],
        cin=torch.arange(n_in, device=dev).expand(ch.numel(), -1),
        rows=torch.arange(n_pos, device=dev).expand(n_in, -1),
        cols=torch.zeros(n_in, n_pos, dtype=torch.long, device=dev),
        real=torch.ones(n_in, n_pos, dtype=torch.bool, device=dev),
    )


def linear_operand_means(
    x: Tensor, linear: nn.Linear, channels: Tensor, read: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`conv_operand_means` for a Linear layer: each input feature's mean over the
    tokens/positions (the input itself for ``(I, F_in)``), or over the positions ``read`` (bool
    ``(P,)``) marks."""
    w = linear.weight.detach()[channels.long()]
    tokens = x.unsqueeze(1) if x.dim() == 2 else _tokens(x, linear)  # (I, P, F_in)
    if read is not None and x.dim() > 2:
        tokens = tokens[:, read.to(tokens.device)]
    means = tokens.mean(dim=1).unsqueeze(1).expand(-1, channels.numel(), -1)
    n_real = torch.full(w.shape, float(tokens.shape[1]), dtype=x.dtype, device=w.device)
    return means, w, n_real
