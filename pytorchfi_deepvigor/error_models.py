"""Exact IEEE-754 error models for PyTorchFI's ``function=`` hooks.

PyTorchFI 0.6.0's only bit-flip model quantises activations to 8 bits; these flip real float
bits (LSB = 0, via :mod:`pytorchfi_deepvigor.bits`). Three fault models of the method
(spec ``method.md`` section 1):

* :class:`WeightBitFlip`: one bit of one weight, for ``declare_weight_fi(function=...)`` and
  :meth:`~pytorchfi_deepvigor.injector.DeepVigorFI.weight_fault`;
* :class:`ActivationBitFlip`: one bit of one stored activation (a value of a layer's output),
  for ``declare_neuron_fi(function=...)``;
* :class:`OperandBitFlip`: one bit of one input operand of one multiply of one output neuron;
  only that neuron changes, by ``(x' - x) * w``. Zero padding is not a fault site.

The two neuron models read the declared sites from the injector (``corrupt_layer``,
``corrupt_batch``, ``corrupt_dim1..3``) and act on the layer ``get_current_layer()`` names.
``DeepVigorFI`` sets that counter before each hook; with plain PyTorchFI the models advance it
themselves and wrap it around after the last layer, so they work there too.

PyTorchFI's own error models run on ``DeepVigorFI`` as well: the functions of
``pytorchfi.neuron_error_models`` and ``pytorchfi.weight_error_models`` take it as their ``pfi``
unchanged. ``single_bit_flip_func`` is a class that PyTorchFI derives from its own injector, so
:class:`SingleBitFlipFI` (also importable as ``single_bit_flip_func``) is that class on
``DeepVigorFI``: same methods, same draws from ``random``, same faults.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from . import bits as _bits
from ._pytorchfi_compat import SingleBitFlipBase
from .injector import DeepVigorFI

__all__ = [
    "ActivationBitFlip",
    "OperandBitFlip",
    "SingleBitFlipFI",
    "WeightBitFlip",
    "operand_site",
    "single_bit_flip_func",
]


def _check_bit(bit: object) -> int:
    if isinstance(bit, bool) or not isinstance(bit, int):
        raise TypeError(f"expected bit as an int, got {type(bit).__name__}")
    if not 0 <= bit < 32:
        raise ValueError(f"expected bit in [0, 31] (LSB = 0), got {bit}")
    return bit


def _per_fault(values: Any, n: int, what: str) -> list[Any]:
    """One entry per declared fault: a single value is shared, a list must match ``n``."""
    if isinstance(values, list):
        if len(values) != n:
            raise ValueError(f"got {len(values)} {what} for {n} declared faults")
        return values
    return [values] * n


def _check_dtype(t: torch.Tensor, what: str) -> None:
    if t.dtype not in _bits.SUPPORTED_DTYPES:
        raise TypeError(
            f"bit faults need a float32 (or float16/bfloat16) {what}, got {t.dtype}; "
            "convert the model and input with .float()"
        )


def _faults_here(fi: Any) -> list[int]:
    layer = fi.get_current_layer()
    return [i for i, n in enumerate(fi.corrupt_layer) if n == layer]


def _advance(fi: Any) -> None:
    """Advance PyTorchFI's layer counter (plain 0.6.0 never resets it: wrap it around)."""
    fi.updateLayer()
    if fi.get_current_layer() >= fi.get_total_layers():
        fi.reset_current_layer()


@dataclass(frozen=True)
class WeightBitFlip:
    """Flip (or stick) one bit of the weight PyTorchFI points at: ``f(weight, index) -> value``.

    Example:
        >>> WeightBitFlip(30)(torch.tensor([[1.0, 0.5]]), (0, 0))
        tensor(inf)
    """

    bit: int
    stuck_at: int | None = None

    def __post_init__(self) -> None:
        _check_bit(self.bit)
        if self.stuck_at not in (None, 0, 1):
            raise ValueError(f"expected stuck_at None, 0 or 1, got {self.stuck_at!r}")

    def __call__(self, weight: torch.Tensor, index: tuple[Any, ...]) -> torch.Tensor:
        w = weight.detach()
        _check_dtype(w, "weight")
        value = w[tuple(i for i in index if i is not None)]
        if self.stuck_at is None:
            return _bits.flip_bit(value, self.bit)
        return _bits.stuck_at(value, self.bit, self.stuck_at)


@dataclass(frozen=True)
class ActivationBitFlip:
    """Flip one bit of each declared output value of the layer being run (a stored activation).

    Args:
        fi: the injector whose ``declare_neuron_fi(function=self)`` declared the sites.
        bit: the bit (LSB = 0), or one bit per declared fault.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2))
        >>> fi = DeepVigorFI(net, 1, input_shape=[2], layer_types=[nn.Linear])
        >>> bad = fi.declare_neuron_fi(layer_num=[0], batch=[0], dim1=[1], function=ActivationBitFlip(fi, 31))
        >>> bool(torch.equal(bad(torch.ones(1, 2))[0, 1], -net(torch.ones(1, 2))[0, 1]))
        True
    """

    fi: Any
    bit: int | list[int]

    def __post_init__(self) -> None:
        for b in self.bit if isinstance(self.bit, list) else [self.bit]:
            _check_bit(b)

    def __call__(self, module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> Any:
        faults = _faults_here(self.fi)
        bits = _per_fault(self.bit, len(self.fi.corrupt_layer), "bits")
        _advance(self.fi)
        if not faults:
            return None
        _check_dtype(output, "layer output")
        output = output.clone()
        fi = self.fi
        for i in faults:
            site = (fi.corrupt_batch[i], fi.corrupt_dim1[i], fi.corrupt_dim2[i], fi.corrupt_dim3[i])
            site = site[: output.dim()]
            output[site] = _bits.flip_bit(output[site], bits[i])
        return output


def _conv_padding(module: nn.Conv2d) -> tuple[int, int]:
    pad, dil, size = module.padding, module.dilation, module.kernel_size
    if pad == "valid":
        return (0, 0)
    if isinstance(pad, str):  # "same": PyTorch pads total // 2 before, the rest after
        return (dil[0] * (size[0] - 1) // 2, dil[1] * (size[1] - 1) // 2)
    return (int(pad[0]), int(pad[1]))


def operand_site(
    module: nn.Module, neuron: Sequence[int], operand: Sequence[int], input_hw: Sequence[int] = ()
) -> tuple[int, ...] | None:
    """Where an operand of a neuron is read from in the layer's per-image input.

    Args:
        module: an ``nn.Conv2d`` or ``nn.Linear``.
        neuron: ``(k, h, w)`` for Conv2d, ``(k,)`` for Linear.
        operand: the operand as indexed in the weight without ``k``: ``(c, kh, kw)`` for Conv2d
            (``c`` within the group), ``(j,)`` for Linear.
        input_hw: the input's ``(H, W)`` (Conv2d only).

    Returns:
        ``(channel, row, col)`` or ``(j,)`` in the input, or ``None`` when the operand is zero
        padding (not a fault site).

    Example:
        >>> conv = nn.Conv2d(2, 4, 3, padding=1, groups=2)
        >>> operand_site(conv, (3, 0, 0), (0, 1, 2), (5, 5)), operand_site(conv, (3, 0, 0), (0, 0, 0), (5, 5))
        ((1, 0, 1), None)
    """
    if isinstance(module, nn.Linear):
        return (int(operand[0]),)
    if not isinstance(module, nn.Conv2d):
        raise ValueError(
            f"operand faults need an nn.Conv2d or nn.Linear layer, got {type(module).__name__}"
        )
    if module.padding_mode != "zeros":
        raise ValueError(
            f"operand faults need padding_mode='zeros', got {module.padding_mode!r} "
            "(padded values would be copies of stored ones)"
        )
    k, h, w = neuron
    c, kh, kw = operand
    group = k // (module.out_channels // module.groups)
    channel = group * (module.in_channels // module.groups) + c
    pad = _conv_padding(module)
    row = h * module.stride[0] - pad[0] + kh * module.dilation[0]
    col = w * module.stride[1] - pad[1] + kw * module.dilation[1]
    if not (0 <= row < input_hw[0] and 0 <= col < input_hw[1]):
        return None
    return (channel, row, col)


@dataclass(frozen=True)
class OperandBitFlip:
    """Flip one bit of one input operand of each declared neuron: adds ``(x' - x) * w`` to it.

    Args:
        fi: the injector whose ``declare_neuron_fi(function=self)`` declared the neurons.
        operand: ``(c, kh, kw)`` (Conv2d, ``c`` within the group) or ``(j,)`` (Linear), or one
            per declared fault.
        bit: the bit of the operand (LSB = 0), or one per declared fault.

    Raises (when the layer runs):
        ValueError: the operand is zero padding, or lies outside the weight.
        TypeError: the layer input is not float32/float16/bfloat16.
    """

    fi: Any
    operand: tuple[int, ...] | list[tuple[int, ...]]
    bit: int | list[int]

    def __post_init__(self) -> None:
        for b in self.bit if isinstance(self.bit, list) else [self.bit]:
            _check_bit(b)

    def __call__(self, module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> Any:
        fi, faults = self.fi, _faults_here(self.fi)
        n = len(fi.corrupt_layer)
        bits, operands = _per_fault(self.bit, n, "bits"), _per_fault(self.operand, n, "operands")
        _advance(fi)
        if not faults:
            return None
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            raise ValueError(f"operand faults need Conv2d or Linear, got {type(module).__name__}")
        x = inputs[0]
        _check_dtype(x, "layer input")
        weight = module.weight.detach()
        output = output.clone()
        for i in faults:
            op = tuple(operands[i])
            if len(op) != weight.dim() - 1 or any(
                not 0 <= o < s for o, s in zip(op, weight.shape[1:], strict=True)
            ):
                raise ValueError(
                    f"operand {op} outside the weight {tuple(weight.shape)} (without k)"
                )
            k, b = fi.corrupt_dim1[i], fi.corrupt_batch[i]
            neuron = (k,) if output.dim() == 2 else (k, fi.corrupt_dim2[i], fi.corrupt_dim3[i])
            site = operand_site(module, neuron, op, tuple(x.shape[2:]))
            if site is None:
                raise ValueError(
                    f"operand {op} of neuron {neuron} reads zero padding, which is not a fault site"
                )
            golden = x.detach()[(b, *site)]
            delta = (_bits.flip_bit(golden, bits[i]) - golden) * weight[(k, *op)]
            output[(b, *neuron)] += delta.to(output.dtype)
        return output


class SingleBitFlipFI(DeepVigorFI, SingleBitFlipBase):
    """PyTorchFI's ``single_bit_flip_func`` with ``DeepVigorFI`` as its injector.

    PyTorchFI 0.6.0 derives ``pytorchfi.neuron_error_models.single_bit_flip_func`` (a bit flip of
    an 8-bit quantised copy of one activation, ``bits=8``) from its own injector class, so
    swapping the import of the injector does not reach it. This class keeps every method of
    PyTorchFI's (``set_conv_max``, ``single_bit_flip_signed_across_batch``, ...) and takes its
    constructor arguments; the injector underneath is ``DeepVigorFI``. Use it with PyTorchFI's
    ``random_neuron_single_bit_inj`` / ``random_neuron_single_bit_inj_batched``: for the same
    ``random`` seed they draw the same sites and bits as on plain PyTorchFI.

    Only PyTorchFI's ``logging.basicConfig`` call in its constructor is left out; its hooks still
    log through the root logger. The layer ranges (``set_conv_max``) need one entry per layer
    of ``layer_types`` (default ``[nn.Conv2d]``, as in PyTorchFI).

    Example:
        >>> from pytorchfi.neuron_error_models import random_neuron_single_bit_inj
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 1))
        >>> pfi = SingleBitFlipFI(net, 1, input_shape=[1, 5, 5], bits=8)
        >>> pfi.bits, pfi.get_total_layers()
        (8, 2)
        >>> corrupted = random_neuron_single_bit_inj(pfi, layer_ranges=[4.0, 4.0])
    """

    def __init__(
        self,
        model: nn.Module,
        batch_size: int,
        input_shape: Sequence[int] | None = None,
        layer_types: Sequence[type[nn.Module] | str] | None = None,
        use_cuda: bool | None = None,
        *,
        bits: int = 8,
        example_input: torch.Tensor | None = None,
    ) -> None:
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 64:
            raise ValueError(f"expected bits as an int in [1, 64], got {bits!r}")
        DeepVigorFI.__init__(
            self,
            model,
            batch_size,
            input_shape,
            layer_types,
            use_cuda,
            bits=bits,
            example_input=example_input,
        )
        self.bits = bits  # what PyTorchFI's constructor sets, without its logging.basicConfig
        self.LayerRanges: list[float] = []


#: PyTorchFI's name, for ``from pytorchfi_deepvigor.error_models import single_bit_flip_func``.
single_bit_flip_func = SingleBitFlipFI
