"""Layers the engine can cut at: traceable twins of modules that apply their weights
functionally or pad inside their forward.

Some weights are never the weight of a ``Conv2d``/``Linear`` call the catalogue, the engine,
the analysis or fault injection can cut at: ``nn.MultiheadAttention`` keeps its q, k and v
projections packed in one ``in_proj_weight`` (``3E x E``) and applies it, and ``out_proj``,
inside ``F.multi_head_attention_forward`` (or one fused kernel); torchvision's Swin passes
``qkv.weight`` and ``proj.weight`` to ``shifted_window_attention``, which applies them to
windows folded into the batch; a convolution that pads inside its forward hides which input
each weight meets; an ONNX conversion hands a buffer to a ``MatMul`` module.
:func:`twin_view` gives the engine a *view* of the user's model in which each such module is
replaced by a twin that computes the same thing as layers it can cut at:

- ``MultiheadAttention`` (self-attention): ``in_proj`` is a ``Linear`` whose weight **is** the
  module's ``in_proj_weight`` (the same tensor: a fault written into it is written into the
  user's memory), its ``3E`` output features being the q, k and v features in that order;
  ``out_proj`` is the module's own ``out_proj``. A fault in a q/k/v weight changes that feature
  of every token; the attention that follows (scores, softmax, the weighted sum) is part of the
  suffix the engine runs.
- ``ShiftedWindowAttention`` (V1 and V2): ``qkv`` and ``proj`` run on the padded ``(N, H, W,
  C)`` map, before the windows are formed and after they are merged back: a per-token linear
  map commutes with the padding, the cyclic shift and the window partition, so every
  projection output is the one the module computes, at a per-image position. (V2 zeroes the
  key part of the qkv bias: its twin ``qkv`` holds the user's weight with that bias.)
- A convolution that pads inside its forward (timm's ``Conv2dSame``, efficientnet_pytorch's
  ``Conv2dStaticSamePadding``): a :class:`PaddedConv2d` holding its weight, with the padding it
  really applies recorded, so its operands and the analysis know which input each weight meets;
  any other ``Conv2d`` subclass whose forward is the plain convolution: a plain ``Conv2d``
  holding its weight (torch.fx traces through a subclass, leaving no layer to cut at).
- A weightless module handed a weight of the model as its second input and computing ``x @ W``
  (an ONNX conversion's ``MatMul`` on a buffer): an :class:`ArgumentLinear` holding ``W.T``, a
  view of the same memory.
- A module (the model itself included) whose own forward applies a weight of its own with
  ``F.linear``, ``F.conv2d`` or a matrix product ``x @ W`` (found in the torch.fx trace of its
  own code, its children kept as calls): a ``torch.fx.GraphModule`` of that code in which each
  such product is a call of a ``Linear``/``Conv2d`` child ``<weight>_layer`` holding the weight
  (``x @ W``: an :class:`ArgumentLinear`); a ``Linear`` subclass whose forward is the plain
  one: a plain ``Linear`` holding its weight and bias.

Nothing of the user's model is copied or changed: the view shares every module, parameter and
buffer, and only the containers on the path to a replaced module are shallow copies. A twin is
used only where it reproduces the module's output on the profiled images (to float rounding);
otherwise, and for the cases it does not model (cross-attention, masks, ``add_bias_kv``,
unbatched inputs), the module stays as it is and :func:`refusals` gives the reason, which the
catalogue's ``unsupported`` list reports.
"""

from __future__ import annotations

import copy
import math
import operator
import sys
import weakref
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ._guard import eval_mode

__all__ = [
    "LEAF_TWINS",
    "ArgumentLinear",
    "PaddedConv2d",
    "refusals",
    "same_pads",
    "twin_view",
]

_REFUSALS: weakref.WeakKeyDictionary[nn.Module, dict[str, str]] = weakref.WeakKeyDictionary()


def refusals(model: nn.Module) -> dict[str, str]:
    """The attention modules the last :func:`twin_view` of ``model`` (or of the model it
    is a view of) left as they are, with the reason."""
    return dict(_REFUSALS.get(model, {}))


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """A ``Linear`` holding ``weight`` itself (not a copy) and ``bias`` (a buffer when it is
    not a parameter of the model: a derived bias)."""
    out_features, in_features = weight.shape
    lin = nn.Linear(in_features, out_features, bias=False, device="meta")
    lin.weight = weight if isinstance(weight, nn.Parameter) else nn.Parameter(weight)
    if isinstance(bias, nn.Parameter):
        lin.bias = bias
    else:
        del lin.bias  # the None parameter nn.Linear(bias=False) registers
        lin.register_buffer("bias", bias)
    return lin


# --------------------------------------------------------------------------- MultiheadAttention
class MultiheadSelfAttention(nn.Module):
    """``nn.MultiheadAttention`` on self-attention, its packed projection an ``in_proj`` Linear.

    Returns what the module returns: ``(output, weights)`` (``weights`` ``None`` unless
    ``need_weights``), in the module's batch layout. The scores are computed in the order of
    the kernel the module runs in evaluation: its fused fast path (batch first, an even number
    of heads, a bias) and its weights path scale the queries before the product, the other
    path calls ``scaled_dot_product_attention``; the order decides where extreme values
    overflow (measured: an exponent-bit fault in ``in_proj_weight`` gave NaN logits in one
    order and finite ones in the other).
    """

    def __init__(self, mha: Any) -> None:
        super().__init__()
        self.in_proj = _linear(mha.in_proj_weight, mha.in_proj_bias)
        self.out_proj = mha.out_proj
        self.num_heads = mha.num_heads
        self.batch_first = mha.batch_first
        self.training = mha.training
        self.fused = (
            mha.batch_first
            and mha.num_heads % 2 == 0
            and mha.in_proj_bias is not None
            and torch.backends.mha.get_fastpath_enabled()
        )

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = query if self.batch_first else query.transpose(0, 1)
        n, t, e = x.shape
        heads = self.num_heads
        qkv = self.in_proj(x).reshape(n, t, 3, heads, e // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (N, heads, T, d)
        weights = None
        if need_weights or self.fused:
            attn = torch.softmax((q * (e // heads) ** -0.5) @ k.transpose(-2, -1), dim=-1)
            out = attn @ v
            if need_weights:
                weights = attn.mean(dim=1) if average_attn_weights else attn
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        out = self.out_proj(out.transpose(1, 2).reshape(n, t, e))
        return (out if self.batch_first else out.transpose(0, 1)), weights


def _mha_refusal(m: Any, calls: list[tuple[tuple, dict]]) -> str:
    """Why ``m``'s twin would not model it ("" when it does)."""
    if not m._qkv_same_embed_dim or m.in_proj_weight is None:
        return "separate q/k/v weights (kdim or vdim differ from embed_dim)"
    if m.bias_k is not None or m.add_zero_attn:
        return "add_bias_kv or add_zero_attn"
    for args, kwargs in calls:
        names = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask")
        given = {**dict(zip(names, args, strict=False)), **kwargs}
        query, key, value = (given.get(k) for k in names[:3])
        if not (query is key and key is value):
            return "cross-attention (query, key and value are not the same tensor)"
        if not isinstance(query, torch.Tensor) or query.dim() != 3:
            return "unbatched input"
        if any(given.get(k) is not None for k in ("key_padding_mask", "attn_mask")):
            return "an attention or key padding mask"
        if given.get("is_causal"):
            return "is_causal"
    return ""


# --------------------------------------------------------------------------- Swin's windows
@torch.fx.wrap
def _pad_to_windows(x: torch.Tensor, window_size: list[int]) -> torch.Tensor:
    """``x`` ``(N, H, W, C)`` zero-padded at the bottom and right to whole windows."""
    pad_r = (window_size[1] - x.shape[2] % window_size[1]) % window_size[1]
    pad_b = (window_size[0] - x.shape[1] % window_size[0]) % window_size[0]
    return F.pad(x, (0, 0, 0, pad_r, 0, pad_b))


@torch.fx.wrap
def _crop_like(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``x`` cropped to the height and width of ``like``."""
    return x[:, : like.shape[1], : like.shape[2], :].contiguous()


@torch.fx.wrap
def _shifted_windows(
    qkv: torch.Tensor,
    relative_position_bias: torch.Tensor,
    window_size: list[int],
    shift_size: list[int],
    num_heads: int,
    logit_scale: torch.Tensor | None,
) -> torch.Tensor:
    """torchvision's ``shifted_window_attention`` between its two projections: from the
    projected ``qkv`` ``(N, pH, pW, 3C)`` of the padded map to the attention output ``(N, pH,
    pW, C)`` before ``proj``, windows merged and shifted back."""
    n, pad_h, pad_w, c3 = qkv.shape
    c = c3 // 3
    shift = list(shift_size)
    if window_size[0] >= pad_h:
        shift[0] = 0
    if window_size[1] >= pad_w:
        shift[1] = 0
    if sum(shift) > 0:
        qkv = torch.roll(qkv, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    windows = (pad_h // window_size[0]) * (pad_w // window_size[1])
    tokens = window_size[0] * window_size[1]
    x = qkv.view(
        n, pad_h // window_size[0], window_size[0], pad_w // window_size[1], window_size[1], c3
    )
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(n * windows, tokens, c3)
    x = x.reshape(n * windows, tokens, 3, num_heads, c // num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = x[0], x[1], x[2]
    if logit_scale is not None:
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * torch.clamp(logit_scale, max=math.log(100.0)).exp()
    else:
        attn = (q * (c // num_heads) ** -0.5).matmul(k.transpose(-2, -1))
    attn = attn + relative_position_bias
    if sum(shift) > 0:
        mask = qkv.new_zeros((pad_h, pad_w))
        h_slices = ((0, -window_size[0]), (-window_size[0], -shift[0]), (-shift[0], None))
        w_slices = ((0, -window_size[1]), (-window_size[1], -shift[1]), (-shift[1], None))
        count = 0
        for h in h_slices:
            for w in w_slices:
                mask[h[0] : h[1], w[0] : w[1]] = count
                count += 1
        mask = mask.view(
            pad_h // window_size[0], window_size[0], pad_w // window_size[1], window_size[1]
        )
        mask = mask.permute(0, 2, 1, 3).reshape(windows, tokens)
        mask = mask.unsqueeze(1) - mask.unsqueeze(2)
        mask = mask.masked_fill(mask != 0, (-100.0)).masked_fill(mask == 0, 0.0)
        attn = attn.view(n, windows, num_heads, tokens, tokens) + mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, num_heads, tokens, tokens)
    attn = F.softmax(attn, dim=-1)
    x = attn.matmul(v).transpose(1, 2).reshape(n * windows, tokens, c)
    x = x.view(
        n, pad_h // window_size[0], pad_w // window_size[1], window_size[0], window_size[1], c
    )
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(n, pad_h, pad_w, c)
    if sum(shift) > 0:
        x = torch.roll(x, shifts=(shift[0], shift[1]), dims=(1, 2))
    return x


class WindowAttention(nn.Module):
    """torchvision's ``ShiftedWindowAttention`` (V1 or V2) with ``qkv`` and ``proj`` as Linear
    calls on the padded ``(N, H, W, C)`` map of each image.

    Holds the module's own children, parameters and buffers under their names (so the module's
    ``get_relative_position_bias`` runs on it); V2's ``qkv`` is a Linear holding the module's
    ``qkv.weight`` with the key part of the bias zeroed, as V2's forward does.
    """

    window_size: list[int]
    shift_size: list[int]
    num_heads: int
    qkv: nn.Module
    proj: nn.Module

    def __init__(self, swa: Any) -> None:
        super().__init__()
        for name, child in swa.named_children():
            self.add_module(name, child)
        for name, p in swa.named_parameters(recurse=False):
            self.register_parameter(name, p)
        for name, b in swa.named_buffers(recurse=False):
            self.register_buffer(name, b, persistent=name not in swa._non_persistent_buffers_set)
        for name in ("window_size", "shift_size", "num_heads", "training"):
            setattr(self, name, copy.copy(getattr(swa, name)))
        self._relative_position_bias = type(swa).get_relative_position_bias
        if getattr(self, "logit_scale", None) is not None and swa.qkv.bias is not None:
            bias = swa.qkv.bias.detach().clone()
            length = bias.numel() // 3
            bias[length : 2 * length] = 0
            self.qkv = _linear(swa.qkv.weight, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = _pad_to_windows(x, self.window_size)
        bias = self._relative_position_bias(self)
        logit_scale = getattr(self, "logit_scale", None)
        out = _shifted_windows(
            self.qkv(padded), bias, self.window_size, self.shift_size, self.num_heads, logit_scale
        )
        return _crop_like(self.proj(out), x)


def _swin_classes() -> tuple[type[nn.Module], ...]:
    """torchvision's window attention classes, if torchvision's Swin is loaded (a model that
    holds one has imported it)."""
    swin = sys.modules.get("torchvision.models.swin_transformer")
    return (swin.ShiftedWindowAttention,) if swin is not None else ()


def _swin_refusal(m: nn.Module, calls: list[tuple[tuple, dict]]) -> str:
    """Why ``m``'s twin would not model it ("" when it does; the engine runs in eval mode, so
    its dropouts do nothing)."""
    for args, kwargs in calls:
        x = args[0] if args else kwargs.get("x")
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            return "input is not (N, H, W, C)"
    return ""


# --------------------------------------------------------------------------- same padding
class PaddedConv2d(nn.Conv2d):
    """A ``Conv2d`` that zero-pads its input by explicit ``padding`` ``(left, right, top,
    bottom)`` (as ``F.pad`` takes it) and convolves without padding: the twin of a convolution
    that pads inside its forward (timm's ``Conv2dSame``, efficientnet_pytorch's
    ``Conv2dStaticSamePadding``: TensorFlow's "same", the extra row and column at the bottom
    and right), holding the module's own weight and bias. The engine traces it as a leaf, so it
    is a layer the catalogue, the analysis and fault injection know the geometry of.
    """

    def __init__(self, conv: nn.Conv2d, pads: tuple[int, int, int, int]) -> None:
        super().__init__(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,  # type: ignore[arg-type]
            stride=conv.stride,  # type: ignore[arg-type]
            dilation=conv.dilation,  # type: ignore[arg-type]
            groups=conv.groups,
            bias=False,
            device="meta",
        )
        self.weight = conv.weight
        self.register_parameter("bias", conv.bias)  # type: ignore[arg-type]
        self.padding = pads  # type: ignore[assignment]
        self.training = conv.training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(
            F.pad(x, self.padding),  # type: ignore[arg-type]
            self.weight,
            self.bias,
            self.stride,
            0,
            self.dilation,
            self.groups,
        )


def same_pads(
    conv: nn.Conv2d, in_hw: tuple[int, ...], out_hw: tuple[int, ...]
) -> tuple[int, int, int, int] | None:
    """The ``(left, right, top, bottom)`` zero padding that gives ``conv`` (its kernel, stride
    and dilation, no padding of its own) ``out_hw`` maps from ``in_hw`` ones, TensorFlow's way
    (half before, the odd one after); ``None`` when its recorded padding already does or none
    would."""
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return None
    pads = []
    for i, (n_in, n_out) in enumerate(zip(in_hw, out_hw, strict=True)):
        k, s, d, p = conv.kernel_size[i], conv.stride[i], conv.dilation[i], conv.padding[i]
        if (n_in + 2 * p - d * (k - 1) - 1) // s + 1 == n_out:
            return None
        total = (n_out - 1) * s + d * (k - 1) + 1 - n_in
        if total < 0:
            return None
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    return (left, right, top, bottom)


def _plain_conv(m: nn.Conv2d) -> nn.Conv2d:
    """A plain ``nn.Conv2d`` with ``m``'s geometry, holding its weight and bias."""
    twin = nn.Conv2d(
        m.in_channels,
        m.out_channels,
        m.kernel_size,  # type: ignore[arg-type]
        stride=m.stride,  # type: ignore[arg-type]
        padding=m.padding,  # type: ignore[arg-type]
        dilation=m.dilation,  # type: ignore[arg-type]
        groups=m.groups,
        bias=False,
        padding_mode=m.padding_mode,
        device="meta",
    )
    twin.weight = m.weight
    twin.register_parameter("bias", m.bias)  # type: ignore[arg-type]
    twin.training = m.training
    return twin


def _pad_twin(m: nn.Module, calls: list[tuple[tuple, dict, object]]) -> nn.Module | None:
    """For a Conv2d subclass called once: a :class:`PaddedConv2d` if it pads inside its
    forward, a plain ``nn.Conv2d`` if its forward is the plain one (efficientnet_pytorch's 1x1
    convolutions with an empty padding child; torch.fx would trace through the subclass and
    leave no layer to cut at), each only if it reproduces the module's output on the images;
    ``None`` otherwise (a weight transform: the catalogue records it)."""
    if len(calls) != 1 or not isinstance(m.weight, nn.Parameter):
        return None
    (args, kwargs, output) = calls[0]
    x = args[0] if args else None
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not isinstance(output, torch.Tensor):
        return None
    pads = same_pads(m, tuple(x.shape[2:]), tuple(output.shape[2:]))  # type: ignore[arg-type]
    twin: nn.Conv2d
    if pads is not None:
        twin = PaddedConv2d(m, pads)  # type: ignore[arg-type]
    else:  # its own geometry: a plain Conv2d if that is what its forward computes
        twin = _plain_conv(m)  # type: ignore[arg-type]
    with eval_mode(twin), torch.no_grad():
        return twin if _same(twin(x), output) else None


# --------------------------------------------------------------------------- a weight as an argument
class ArgumentLinear(nn.Linear):
    """A module that multiplies its input by a weight it is handed as an argument (a model
    converted from ONNX: ``MatMul(x, W)`` with ``W`` a buffer of the model, ``x @ W``), as a
    Linear holding that very weight (``W.T``: a view of the same memory, so a fault written
    into it is written into the model's buffer). Called as the module was, ``(x, W)``; the
    handed weight is not read again."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__(w.shape[0], w.shape[1], bias=False, device="meta")
        del self.weight
        self.register_buffer("weight", w.detach().t(), persistent=False)

    def forward(self, x: torch.Tensor, *handed: object) -> torch.Tensor:
        return F.linear(x, self.weight)


LEAF_TWINS: tuple[type[nn.Module], ...] = (PaddedConv2d, ArgumentLinear)
"""Twins the engine's tracer keeps as modules (the layers themselves)."""


def _weights_of(model: nn.Module) -> dict[int, torch.Tensor]:
    """The model's floating-point parameters and buffers of two dimensions, by identity."""
    tensors = [*model.parameters(), *model.buffers()]
    return {id(t): t for t in tensors if t.is_floating_point() and t.dim() == 2}


def _argument_twin(
    m: nn.Module, calls: list[tuple[tuple, dict, object]], weights: dict[int, torch.Tensor]
) -> nn.Module | None:
    """An :class:`ArgumentLinear` for a weightless module called once as ``m(x, W)`` with ``W``
    a 2-D weight of the model, whose output is ``x @ W``; ``None`` otherwise."""
    if len(calls) != 1 or not _weightless(m):
        return None
    args, kwargs, output = calls[0]
    if kwargs or len(args) != 2 or id(args[1]) not in weights:
        return None
    x, w = args[0], weights[id(args[1])]
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[-1] != w.shape[0]:
        return None  # not a product x @ W (an add of a table, say)
    twin = ArgumentLinear(w)
    with torch.no_grad():
        return twin if _same(twin(*args), output) else None


# --------------------------------------------------------------------------- functional layers
_MAC_OPS: dict[object, tuple[str, ...]] = {
    F.linear: ("input", "weight", "bias"),
    F.conv2d: ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
    torch.matmul: ("input", "other"),
    operator.matmul: ("input", "other"),
    "matmul": ("input", "other"),  # Tensor.matmul
}
"""The products on a module's own weight that :func:`_functional_twin` makes layers of, with
their argument names."""


class _FunctionalUses(TorchFunctionMode):
    """Records the tensors passed to ``F.linear``, ``F.conv2d`` and matrix products."""

    _FUNCS = (F.linear, F.conv2d, torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__)

    def __init__(self) -> None:
        super().__init__()
        self.used: set[int] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func in self._FUNCS:
            self.used.update(
                id(a) for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)
            )
        return func(*args, **kwargs)


class _OwnCode(torch.fx.Tracer):
    """Traces one module's own forward: every child module stays one call."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return True


def _conv2d(weight: torch.Tensor, bias: torch.Tensor | None, given: dict[str, Any]) -> nn.Conv2d:
    """A ``Conv2d`` holding ``weight`` itself and ``bias``, with the geometry ``F.conv2d`` was
    given."""
    groups = given.get("groups", 1)
    conv = nn.Conv2d(
        weight.shape[1] * groups,
        weight.shape[0],
        tuple(weight.shape[2:]),  # type: ignore[arg-type]
        stride=given.get("stride", 1),
        padding=given.get("padding", 0),
        dilation=given.get("dilation", 1),
        groups=groups,
        bias=False,
        device="meta",
    )
    conv.weight = weight if isinstance(weight, nn.Parameter) else nn.Parameter(weight)
    del conv.bias
    if isinstance(bias, nn.Parameter):
        conv.bias = bias
    else:
        conv.register_buffer("bias", bias)
    return conv


def _own_attr(a: object, own: dict[str, torch.Tensor]) -> bool:
    """Whether ``a`` reads a tensor of the traced module's own, and nothing else reads it."""
    return (
        isinstance(a, torch.fx.Node)
        and a.op == "get_attr"
        and a.target in own
        and len(a.users) == 1
    )


def _op_layer(node: torch.fx.Node, own: dict[str, torch.Tensor]) -> tuple[str, nn.Module] | None:
    """For a product of ``node``'s input and a weight of the traced module's own (``F.linear``,
    ``F.conv2d``, ``x @ W``), read nowhere else: the weight's name and a layer computing it."""
    names = _MAC_OPS.get(node.target) if node.op in ("call_function", "call_method") else None
    if names is None or (node.op == "call_method") != (node.target == "matmul"):
        return None
    given = {**dict(zip(names, node.args, strict=False)), **node.kwargs}
    weight, bias = given.pop("weight", given.pop("other", None)), given.pop("bias", None)
    given.pop("input", None)
    if not _own_attr(weight, own) or (bias is not None and not _own_attr(bias, own)):
        return None
    if any(isinstance(v, torch.fx.Node) for v in given.values()):
        return None  # a geometry computed in the forward
    assert isinstance(weight, torch.fx.Node)
    w = own[str(weight.target)]
    b = own[str(bias.target)] if isinstance(bias, torch.fx.Node) else None
    if not w.is_floating_point() or (b is not None and b.dim() != 1):
        return None
    if node.target is F.conv2d:
        return (str(weight.target), _conv2d(w, b, given)) if w.dim() == 4 else None
    if w.dim() != 2:
        return None
    if node.target is F.linear:
        return str(weight.target), _linear(w, b)
    return str(weight.target), ArgumentLinear(w)


def _registration(
    graph: torch.fx.Graph, children: list[str], layers: dict[str, nn.Module]
) -> list[str]:
    """The module's children in their order, each new layer registered just before the first
    child its forward calls after it (at the end if none): the layer numbering (registration
    order, as PyTorchFI's) of the module's own layers does not change."""
    called = [str(n.target).split(".")[0] for n in graph.nodes if n.op == "call_module"]
    order = list(children)
    for i, name in enumerate(called):
        if name not in layers:
            continue
        after = next((c for c in called[i + 1 :] if c in children), None)
        order.insert(order.index(after) if after is not None else len(order), name)
    return order


def _functional_twin(m: nn.Module, calls: list[tuple[tuple, dict, object]]) -> nn.Module | None:
    """``m`` with every ``F.linear``/``F.conv2d``/``x @ W`` of its own forward on a weight of
    its own made a call of a ``Linear``/``Conv2d`` child holding that weight (named after it,
    ``<weight>_layer``): a ``torch.fx.GraphModule`` of ``m``'s own code, its other children
    called as they were; ``None`` where its forward does not trace, has no such product, or the
    twin does not reproduce its output on the images."""
    if not calls:
        return None
    own = {**dict(m.named_parameters(recurse=False)), **dict(m.named_buffers(recurse=False))}
    try:
        with eval_mode(m):
            graph = _OwnCode().trace(m)
    except Exception:  # noqa: BLE001 - a forward torch.fx cannot trace keeps its module
        return None
    layers: dict[str, nn.Module] = {}
    for node in list(graph.nodes):
        found = _op_layer(node, own)
        if found is None or f"{found[0]}_layer" in layers or hasattr(m, f"{found[0]}_layer"):
            continue
        name = f"{found[0]}_layer"
        layers[name] = found[1]
        with graph.inserting_before(node):
            call = graph.call_module(name, (node.args[0] if node.args else node.kwargs["input"],))
        attrs = [a for a in node.all_input_nodes if a.op == "get_attr"]
        node.replace_all_uses_with(call)
        graph.erase_node(node)
        for a in attrs:
            if not a.users:
                graph.erase_node(a)
    if not layers:
        return None
    holder = copy.copy(m)
    holder._modules = {**layers, **m._modules}
    twin = torch.fx.GraphModule(holder, graph, class_name=type(m).__name__)
    twin._modules = {n: holder._modules[n] for n in _registration(graph, list(m._modules), layers)}
    twin.training = m.training
    with eval_mode(twin), torch.no_grad():
        ok = all(_same(twin(*args, **kwargs), out) for args, kwargs, out in calls)
    return twin if ok else None


# --------------------------------------------------------------------------- the view
def _candidates(model: nn.Module) -> list[tuple[str, nn.Module]]:
    swin = _swin_classes()
    return [
        (name, m)
        for name, m in model.named_modules()
        if (not name and _functional(m))
        or name
        and (
            isinstance(m, nn.MultiheadAttention)
            or (swin and isinstance(m, swin))
            or (isinstance(m, nn.Conv2d) and type(m) is not nn.Conv2d)
            or (not list(m.children()) and _weightless(m) and _takes_two(m))
            or _functional(m)
            or _linear_subclass(m)
        )
    ]


def _own_code(m: nn.Module) -> bool:
    """Whether ``m``'s class is not one of PyTorch's own (whose forwards the engine knows)."""
    return not type(m).__module__.startswith("torch.")


def _functional(m: nn.Module) -> bool:
    """Whether ``m`` (not a Conv2d or Linear) holds a 2-D or 4-D floating-point tensor of its
    own that its own code may apply functionally."""
    own = [*m.parameters(recurse=False), *m.buffers(recurse=False)]
    return (
        _own_code(m)
        and not isinstance(m, (nn.Conv2d, nn.Linear, nn.MultiheadAttention, *_swin_classes()))
        and any(t.is_floating_point() and t.dim() in (2, 4) for t in own)
    )


def _linear_subclass(m: nn.Module) -> bool:
    return isinstance(m, nn.Linear) and type(m) is not nn.Linear and _own_code(m)


def _linear_twin(m: nn.Linear, calls: list[tuple[tuple, dict, object]]) -> nn.Module | None:
    """A plain ``nn.Linear`` holding the weight and bias of a ``Linear`` subclass whose forward
    is the plain one (torch.fx would trace through the subclass and leave no layer to cut at),
    only if it reproduces the module's output on the images."""
    if not calls:
        return None
    twin = _linear(m.weight, m.bias)
    twin.training = m.training
    with torch.no_grad():
        ok = all(
            len(args) == 1 and not kwargs and _same(twin(*args), out) for args, kwargs, out in calls
        )
    return twin if ok else None


def _weightless(m: nn.Module) -> bool:
    return not list(m.parameters(recurse=False)) and not list(m.buffers(recurse=False))


def _takes_two(m: nn.Module) -> bool:
    """Whether ``m.forward`` takes (at least) two positional inputs: a matrix product of its
    input and a handed weight could be one."""
    import inspect

    try:
        params = list(inspect.signature(m.forward).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)


def _calls(
    model: nn.Module,
    modules: list[tuple[str, nn.Module]],
    example: torch.Tensor,
    uses: _FunctionalUses,
) -> dict[str, list[tuple[tuple, dict, object]]]:
    """One eval-mode, no-grad forward of ``example``: each module's calls (args, kwargs,
    output); ``uses`` records the tensors applied functionally."""
    calls: dict[str, list[tuple[tuple, dict, object]]] = {n: [] for n, _ in modules}
    handles = []

    def make_hook(name: str):  # type: ignore[no-untyped-def]
        def hook(_m, args, kwargs, output):  # type: ignore[no-untyped-def]
            calls[name].append((args, dict(kwargs), output))

        return hook

    try:
        for name, m in modules:
            handles.append(m.register_forward_hook(make_hook(name), with_kwargs=True))
        with eval_mode(model), torch.no_grad(), uses:
            model(example)
    finally:
        for h in handles:
            h.remove()
    return calls


def _same(got: object, want: object) -> bool:
    """Whether the twin's output equals the module's to float rounding."""
    if isinstance(want, (tuple, list)):
        return (
            isinstance(got, (tuple, list))
            and len(got) == len(want)
            and all(_same(g, w) for g, w in zip(got, want, strict=True))
        )
    if want is None or not isinstance(want, torch.Tensor):
        return got is None if want is None else True
    if not isinstance(got, torch.Tensor) or got.shape != want.shape:
        return False
    scale = max(float(want.abs().max()), 1.0) if want.numel() else 1.0
    return bool(torch.allclose(got, want, rtol=1e-4, atol=1e-5 * scale))


def _replace(model: nn.Module, twins: dict[str, nn.Module]) -> nn.Module:
    """A shallow copy of ``model`` with the modules named in ``twins`` replaced; only the
    containers on the paths to them are copied (new ``_modules`` dicts), everything else is
    shared."""
    copies: dict[str, nn.Module] = {}

    def copied(path: str) -> nn.Module:
        if path not in copies:
            original = model.get_submodule(path)
            c = copy.copy(original)
            c._modules = dict(original._modules)
            copies[path] = c
            if path:
                parent, _, child = path.rpartition(".")
                copied(parent)._modules[child] = c
        return copies[path]

    if "" in twins:
        return twins[""]
    for name, twin in twins.items():
        parent, _, child = name.rpartition(".")
        copied(parent)._modules[child] = twin
    return copied("")


def twin_view(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """``model`` with the modules above replaced by their twins (see the module docs);
    ``model`` itself when it has none.

    Each twin is checked on ``example`` (two images: one eval-mode, no-grad forward) against
    the module it replaces; a module the twin does not model is kept, with the reason in
    :func:`refusals`. ``model`` is not changed.

    Example:
        >>> class Tokens(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        ...     def forward(self, x):
        ...         return self.attn(x, x, x, need_weights=False)[0].mean(1)
        >>> net = Tokens()
        >>> view = twin_view(net, torch.randn(2, 5, 16))
        >>> type(view.attn).__name__, view.attn.in_proj.weight is net.attn.in_proj_weight
        ('MultiheadSelfAttention', True)
        >>> type(net.attn).__name__  # the model itself is unchanged
        'MultiheadAttention'
    """
    modules = _candidates(model)
    if not modules:
        return model
    twins: dict[str, nn.Module] = {}
    refused: dict[str, str] = {}
    uses = _FunctionalUses()
    calls = _calls(model, modules, example, uses)
    weights = _weights_of(model)
    functional = []
    for name, m in modules:
        if _functional(m):
            own = [*m.parameters(recurse=False), *m.buffers(recurse=False)]
            if any(id(t) in uses.used for t in own):
                functional.append(name)
            continue
        if isinstance(m, nn.Conv2d) or not isinstance(m, (nn.MultiheadAttention, *_swin_classes())):
            if isinstance(m, nn.Conv2d):
                twin = _pad_twin(m, calls[name])
            elif isinstance(m, nn.Linear):
                twin = _linear_twin(m, calls[name])
            else:
                twin = _argument_twin(m, calls[name], weights)
            if twin is not None:
                twins[name] = twin
            continue
        seen = [(a, k) for a, k, _ in calls[name]]
        make: type[nn.Module]
        if isinstance(m, nn.MultiheadAttention):
            reason, make = _mha_refusal(m, seen), MultiheadSelfAttention
        else:
            reason, make = _swin_refusal(m, seen), WindowAttention
        if not calls[name]:
            continue  # never called: the catalogue says so
        if not reason:
            twin = make(m)
            with eval_mode(twin), torch.no_grad():
                for args, kwargs, output in calls[name]:
                    if not _same(twin(*args, **kwargs), output):
                        reason = "its traceable twin does not reproduce its output on the images"
                        break
        if reason:
            refused[name] = reason
        elif twin is not None:
            twins[name] = twin
    view = _replace(model, twins) if twins else model
    for name in sorted(functional, key=lambda n: -n.count(".") - bool(n)):  # innermost first
        try:
            m = view.get_submodule(name)
        except AttributeError:  # inside a twin
            continue
        twin = _functional_twin(m, calls[name])
        if twin is not None:
            view = _replace(view, {name: twin})
    _REFUSALS[model] = refused
    _REFUSALS[view] = refused
    return view
