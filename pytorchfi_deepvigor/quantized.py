"""int8 networks (``torch.ao.quantization``, eager or FX, fbgemm/x86 on the CPU): layer twins
the engine can cut at, and the binding of the int8 fault model to a layer's stored words.

A converted network computes with ``torch.ao.nn.quantized`` modules: a ``Conv2d``/``Linear``
(or its ReLU-fused ``ConvReLU2d``/``LinearReLU``) holds a packed int8 weight ``q_w`` with
per-channel (or per-tensor) scales ``s_w`` and reads and writes ``quint8`` activations ``(q -
z) * s``; its kernel accumulates ``sum (q_x - z_x) q_w`` exactly in int32, adds the bias and
requantises to the output's scale and zero point once (rounding, the ReLU, saturation to
``[0, 255]``). :func:`quantized_view` gives the engine a view of the model in which each such
module is a :class:`QuantizedConv2d` / :class:`QuantizedLinear`: a ``Conv2d``/``Linear`` whose
``weight`` is the dequantized int8 weight (what the catalogue, the analysis and fault
injection read) and whose forward **is the module's own quantized kernel** (the suffix the
engine runs is the user's quantized network). Two more faces of the twin:

- a weight handed to it (``torch.func.functional_call``, as fault injection writes a faulty
  weight) is quantized back to the module's int8 grid (exact for values on it) and run by a
  copy of the module holding that packed weight: the kernel with the faulty word;
- :meth:`~QuantizedConv2d.accumulate` and :meth:`~QuantizedConv2d.requantize`: the layer's
  sum before requantisation (float32: the dequantized product) and the requantisation itself,
  with which the engine adds an analysis probe's error to the sum and requantises once, as
  the kernel does (checked against the kernel's golden output, see the engine).

A float input (the engine keeps the dequantized values) is quantized with the scale and zero
point the module receives in the model (recorded from the example images). The view shares
every module of the user's model; nothing of the model is changed. ``torch.ao.quantization``
is deprecated in recent PyTorch (its successor is torchao's pt2e flow): where it is gone, no
module is a quantized layer and this module does nothing.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .bits import DEFAULT_FAULT_MODEL, AnyFaultModel, IntegerFlip

__all__ = [
    "QUANTIZED_TWINS",
    "QuantizedConv2d",
    "QuantizedLinear",
    "bind_words",
    "is_quantized_layer",
    "network_words",
    "quantized_view",
]


def _quantized_classes() -> tuple[tuple[type[nn.Module], ...], tuple[type[nn.Module], ...]]:
    """(conv classes, linear classes) of ``torch.ao``'s quantized layers; empty where gone."""
    try:
        import torch.ao.nn.quantized as nnq
    except ImportError:  # pragma: no cover - a torch without torch.ao.quantization
        return (), ()
    return (nnq.Conv2d,), (nnq.Linear,)


def _fused_relu(m: nn.Module) -> bool:
    try:
        import torch.ao.nn.intrinsic.quantized as nniq
    except ImportError:  # pragma: no cover
        return False
    return isinstance(m, (nniq.ConvReLU2d, nniq.LinearReLU))


class _Twin:
    """What the two twins share (a mixin before ``nn.Conv2d``/``nn.Linear``)."""

    weight: nn.Parameter
    bias: Any
    qmod: nn.Module
    relu: bool
    out_scale: float
    out_zero_point: int
    in_qparams: tuple[float, int, torch.dtype] | None
    _stored: nn.Parameter

    def _bind(self, qmod: nn.Module, in_qparams: tuple[float, int, torch.dtype] | None) -> None:
        w = qmod.weight()  # type: ignore[operator]
        b = qmod.bias()  # type: ignore[operator]
        self.weight = nn.Parameter(w.dequantize(), requires_grad=False)
        self.bias = None if b is None else nn.Parameter(b.detach().clone(), requires_grad=False)
        # the kernel module and the golden weight, unregistered (not a child of the view)
        object.__setattr__(self, "qmod", qmod)
        object.__setattr__(self, "_stored", self.weight)
        self.relu = _fused_relu(qmod)
        self.out_scale = float(qmod.scale)  # type: ignore[arg-type]
        self.out_zero_point = int(qmod.zero_point)  # type: ignore[arg-type]
        self.in_qparams = in_qparams

    # ------------------------------------------------------------------ the stored words
    def weight_qparams(self) -> tuple[torch.dtype, torch.Tensor, torch.Tensor]:
        """``(qdtype, scales, zero_points)`` of the int8 weight, one per output channel."""
        w = self.qmod.weight()  # type: ignore[operator]
        if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            scales = w.q_per_channel_scales()  # float64, as dequantize uses them
            zps = w.q_per_channel_zero_points().long()
        else:
            n = w.shape[0]
            scales = torch.full((n,), float(w.q_scale()), dtype=torch.float32)
            zps = torch.full((n,), int(w.q_zero_point()), dtype=torch.long)
        return w.dtype, scales, zps

    def _requantized_weight(self, w: torch.Tensor) -> torch.Tensor:
        """A (faulty) dequantized weight on the module's int8 grid, as a quantized tensor."""
        stored = self.qmod.weight()  # type: ignore[operator]
        if stored.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            return torch.quantize_per_channel(
                w.detach().float(),
                stored.q_per_channel_scales(),
                stored.q_per_channel_zero_points(),
                stored.q_per_channel_axis(),
                stored.dtype,
            )
        return torch.quantize_per_tensor(
            w.detach().float(), stored.q_scale(), stored.q_zero_point(), stored.dtype
        )

    # ------------------------------------------------------------------------ forward
    def _quantized_input(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_quantized:
            return x
        if self.in_qparams is None:
            raise ValueError(
                f"{type(self).__name__}: a float input, but the scale of the quantized input "
                "this layer reads in the model is unknown"
            )
        scale, zero_point, dtype = self.in_qparams
        return torch.quantize_per_tensor(x.float(), scale, zero_point, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._quantized_input(x)
        if self.weight is self._stored:
            return self.qmod(x)
        faulty = copy.deepcopy(self.qmod)  # the kernel with the handed (faulty) weight
        faulty.set_weight_bias(  # type: ignore[operator]
            self._requantized_weight(self.weight),
            self.qmod.bias(),  # type: ignore[operator]
        )
        return faulty(x)

    def accumulate(self, x: torch.Tensor) -> torch.Tensor:
        """The layer's sum before requantisation, float32, on dequantized inputs ``x``."""
        raise NotImplementedError

    def requantize(self, y: torch.Tensor) -> torch.Tensor:
        """The kernel's requantisation of a sum ``y``: the fused ReLU, rounding to the output
        scale, saturation; returned dequantized (float32)."""
        if self.relu:
            y = torch.relu(y)
        q = torch.quantize_per_tensor(y.float(), self.out_scale, self.out_zero_point, torch.quint8)
        return q.dequantize()

    def output_qparams(self) -> tuple[float, int, torch.dtype]:
        return self.out_scale, self.out_zero_point, torch.quint8


class QuantizedConv2d(_Twin, nn.Conv2d):  # type: ignore[misc]
    """The twin of a ``torch.ao`` quantized ``Conv2d``/``ConvReLU2d`` (see the module docs)."""

    def __init__(
        self, qmod: nn.Module, in_qparams: tuple[float, int, torch.dtype] | None = None
    ) -> None:
        w = qmod.weight()  # type: ignore[operator]
        nn.Conv2d.__init__(
            self,
            int(qmod.in_channels),  # type: ignore[arg-type]
            int(qmod.out_channels),  # type: ignore[arg-type]
            tuple(qmod.kernel_size),  # type: ignore[arg-type]
            stride=tuple(qmod.stride),  # type: ignore[arg-type]
            padding=tuple(qmod.padding),  # type: ignore[arg-type]
            dilation=tuple(qmod.dilation),  # type: ignore[arg-type]
            groups=int(qmod.groups),  # type: ignore[arg-type]
            bias=qmod.bias() is not None,  # type: ignore[operator]
            padding_mode=str(qmod.padding_mode),  # type: ignore[arg-type]
            device="meta",
        )
        assert tuple(w.shape) == tuple(self.weight.shape)
        self._bind(qmod, in_qparams)

    def accumulate(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        return F.conv2d(
            x.float(), self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )


class QuantizedLinear(_Twin, nn.Linear):  # type: ignore[misc]
    """The twin of a ``torch.ao`` quantized ``Linear``/``LinearReLU`` (see the module docs)."""

    def __init__(
        self, qmod: nn.Module, in_qparams: tuple[float, int, torch.dtype] | None = None
    ) -> None:
        w = qmod.weight()  # type: ignore[operator]
        nn.Linear.__init__(
            self,
            w.shape[1],
            w.shape[0],
            bias=qmod.bias() is not None,  # type: ignore[operator]
            device="meta",
        )
        self._bind(qmod, in_qparams)

    def accumulate(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.float(), self.weight, self.bias)


QUANTIZED_TWINS: tuple[type[nn.Module], ...] = (QuantizedConv2d, QuantizedLinear)


def is_quantized_layer(m: object) -> bool:
    """Whether ``m`` is the engine's twin of an int8 quantized layer."""
    return isinstance(m, QUANTIZED_TWINS)


def quantized_view(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """``model`` with each ``torch.ao`` quantized Conv2d/Linear replaced by its twin (shallow
    copies of the containers on the way, everything else shared); ``model`` itself when it has
    none. The input scale of each layer is recorded from one eval-mode forward of ``example``.
    """
    from ._guard import eval_mode
    from .twins import _replace

    convs, linears = _quantized_classes()
    found: list[tuple[str, nn.Module]] = [
        (name, m) for name, m in model.named_modules() if name and isinstance(m, convs + linears)
    ]
    if not found:
        return model
    seen: dict[str, tuple[float, int, torch.dtype]] = {}
    handles = []

    def make_hook(name: str):  # type: ignore[no-untyped-def]
        def hook(_m: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0] if args else None
            if isinstance(x, torch.Tensor) and x.is_quantized and name not in seen:
                seen[name] = (float(x.q_scale()), int(x.q_zero_point()), x.dtype)

        return hook

    try:
        for name, m in found:
            handles.append(m.register_forward_pre_hook(make_hook(name)))
        with eval_mode(model), torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    twins: dict[str, nn.Module] = {}
    for name, m in found:
        make = QuantizedConv2d if isinstance(m, convs) else QuantizedLinear
        twins[name] = make(m, seen.get(name))
    return _replace(model, twins)


def network_words(words: AnyFaultModel, quantized: bool) -> AnyFaultModel:
    """The network's fault model: the default (``"flip"``: every single bit flip of a stored
    word) on an int8 network is :class:`~pytorchfi_deepvigor.bits.IntegerFlip` (its words are
    8 bits); any other model is kept (and checked per layer by :func:`bind_words`)."""
    if quantized and not isinstance(words, IntegerFlip) and words.name == DEFAULT_FAULT_MODEL:
        return IntegerFlip(words.dtype)
    return words


def bind_words(words: AnyFaultModel, module: nn.Module, target: str, name: str) -> AnyFaultModel:
    """``words`` for one layer's target: on an int8 layer, the int8 flip bound to the words
    the target hits (``weights``: the int8 weight, per output channel; ``operands``: the
    ``quint8`` input; ``stored``: the ``quint8`` output); a float layer keeps ``words``.

    Raises:
        ValueError: a float word model on an int8 layer, or the int8 model on a float layer.
    """
    if not is_quantized_layer(module):
        if isinstance(words, IntegerFlip):
            raise ValueError(
                f"layer {name!r} computes in floating point: the int8 fault model applies to "
                "the layers of a torch.ao quantized network; use 'flip' for this model"
            )
        return words
    twin: Any = module
    if not isinstance(words, IntegerFlip):
        if words.name != DEFAULT_FAULT_MODEL:
            raise ValueError(
                f"layer {name!r} is int8 (torch.ao quantized): its words take the 'int8' fault "
                f"model (single bit flips of the stored 8-bit word), not {words.name!r}"
            )
        words = IntegerFlip(words.dtype)
    if target == "weights":
        qdtype, scales, zps = twin.weight_qparams()
        return words.bound(qdtype, scales, zps)
    if target in ("operands", "activations"):
        if twin.in_qparams is None:
            raise ValueError(f"layer {name!r}: the scale of its quantized input is unknown")
        scale, zp, qdtype = twin.in_qparams
    else:
        scale, zp, qdtype = twin.output_qparams()
    return words.bound(qdtype, torch.tensor(scale), torch.tensor(zp))
