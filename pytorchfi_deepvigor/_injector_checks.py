"""Boundary checks of :class:`~pytorchfi_deepvigor.injector.DeepVigorFI`'s arguments.

Every function raises ``TypeError`` / ``ValueError`` with a message naming the bad argument, its
value and the allowed range, before anything touches the model.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .catalogue import SUPPORTED_LAYERS, LayerInfo

__all__ = [
    "NeuronFaults",
    "check_layer_types",
    "check_neuron_faults",
    "check_weight_faults",
    "check_weight_index",
    "layer_info",
    "normalise",
]

_DIM_NAMES = ("dim1 (channel)", "dim2 (row)", "dim3 (column)")


@dataclass(frozen=True)
class NeuronFaults:
    """One ``declare_neuron_fi`` declaration, frozen (the i-th entries form fault i)."""

    layer: tuple[int, ...]
    batch: tuple[int, ...]
    dim1: tuple[int, ...]
    dim2: tuple[int | None, ...]
    dim3: tuple[int | None, ...]
    value: tuple[Any, ...] | None
    function: Callable[..., Any] | None

    @classmethod
    def empty(cls) -> NeuronFaults:
        return cls((), (), (), (), (), None, None)

    def at_layer(self, layer_num: int) -> list[int]:
        """Indices of the faults declared in ``layer_num``."""
        return [i for i, layer in enumerate(self.layer) if layer == layer_num]


def _as_int(v: object, what: str) -> int:
    if isinstance(v, torch.Tensor) and v.numel() == 1 and not v.is_floating_point():
        v = int(v.item())
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{what} must be an int, got {type(v).__name__} ({v!r})")
    return v


def normalise(arg: object, name: str) -> list[Any]:
    """PyTorchFI takes lists; accept a scalar (one fault) and ``None`` (no entries) too."""
    if arg is None:
        return []
    if isinstance(arg, torch.Tensor):
        return arg.reshape(-1).tolist()
    if isinstance(arg, (list, tuple)):
        return list(arg)
    if isinstance(arg, (int, float)):
        return [arg]
    raise TypeError(f"{name} must be a list (one entry per fault), got {type(arg).__name__}")


def layer_info(catalogue: Sequence[LayerInfo], layer_num: object) -> LayerInfo:
    """The catalogue entry of ``layer_num``; ``ValueError`` names the valid range."""
    n = _as_int(layer_num, "layer_num")
    if not 0 <= n < len(catalogue):
        raise ValueError(
            f"layer_num {n} out of range [0, {len(catalogue)}): the model has "
            f"{len(catalogue)} injectable layers"
        )
    return catalogue[n]


def check_layer_types(layer_types: object) -> tuple[type[nn.Module], ...]:
    """Validate PyTorchFI's ``layer_types`` (default: Conv2d and Linear)."""
    if layer_types is None:
        return SUPPORTED_LAYERS
    if not isinstance(layer_types, (list, tuple)) or not layer_types:
        raise ValueError(
            f"expected layer_types as a non-empty list of layer types, got {layer_types!r}"
        )
    if "all" in layer_types:
        raise ValueError(
            "layer_types=['all'] is not supported: only nn.Conv2d and nn.Linear layers are "
            "injectable; pass layer_types=[nn.Conv2d, nn.Linear] (the default)"
        )
    for t in layer_types:
        if not (isinstance(t, type) and issubclass(t, SUPPORTED_LAYERS)):
            name = t.__name__ if isinstance(t, type) else repr(t)
            raise ValueError(
                f"unsupported layer type {name}: only nn.Conv2d and nn.Linear are injectable"
            )
    return tuple(layer_types)


def _check_range(v: object, size: int, what: str, where: str) -> int:
    i = _as_int(v, what)
    if not 0 <= i < size:
        raise ValueError(f"{what} index {i} out of range [0, {size}) {where}")
    return i


def check_neuron_faults(
    catalogue: Sequence[LayerInfo],
    batch_size: int,
    *,
    layer_num: object,
    batch: object,
    dims: tuple[object, object, object],
    value: object,
    function: Callable[..., Any] | None,
) -> NeuronFaults:
    """Validate one ``declare_neuron_fi`` call and freeze it."""
    if (value is None) == (function is None):
        raise ValueError("declare_neuron_fi needs exactly one of value=[...] or function=f")
    layers, batches = normalise(layer_num, "layer_num"), normalise(batch, "batch")
    d1, d2, d3 = (normalise(d, f"dim{k + 1}") for k, d in enumerate(dims))
    n = len(layers)
    d2, d3 = d2 or [None] * n, d3 or [None] * n
    values = None if value is None else normalise(value, "value")
    lengths = {
        "layer_num": n,
        "batch": len(batches),
        "dim1": len(d1),
        "dim2": len(d2),
        "dim3": len(d3),
    }
    if values is not None:
        lengths["value"] = len(values)
        if n == 0:
            raise ValueError(
                "declare_neuron_fi got value=[...] but no fault location (layer_num=[])"
            )
    if len(set(lengths.values())) > 1:
        raise ValueError(f"fault lists must have one entry per fault, got lengths {lengths}")
    for i in range(n):
        info = layer_info(catalogue, layers[i])
        where = f"of layer {info.layer_num} ({info.name}, output {info.output_shape}) in fault {i}"
        batches[i] = _check_range(
            batches[i], batch_size, "batch", f"(batch_size {batch_size}) in fault {i}"
        )
        coords = [d1, d2, d3][: len(info.output_shape)]
        for k, (col, size) in enumerate(zip(coords, info.output_shape, strict=True)):
            col[i] = _check_range(col[i], size, _DIM_NAMES[k], where)
        if len(info.output_shape) == 1 and (d2[i] is not None or d3[i] is not None):
            warnings.warn(
                f"fault {i}: dim2/dim3 ignored, layer {info.layer_num} ({info.kind}) has 1-D outputs",
                stacklevel=3,
            )
    return NeuronFaults(
        tuple(_as_int(v, "layer_num") for v in layers),
        tuple(batches),
        tuple(d1),
        tuple(d2),
        tuple(d3),
        None if values is None else tuple(values),
        function,
    )


def check_weight_index(info: LayerInfo, index: object) -> tuple[int, ...]:
    """A full weight index of ``info``'s weight from a tuple or a flat int index."""
    shape = info.weight_shape
    where = f"of layer {info.layer_num} ({info.name}, weight {shape})"
    if isinstance(index, (int, torch.Tensor)) and not isinstance(index, bool):
        flat = _check_range(index, math.prod(shape), "flat weight", where)
        return tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), shape))
    if not isinstance(index, (list, tuple)):
        raise TypeError(
            f"weight index must be a tuple of ints or a flat int, got {type(index).__name__}"
        )
    entries = [i for i in index]
    while len(entries) > len(shape) and entries[-1] is None:  # PyTorchFI's dim2=dim3=None
        entries.pop()
    if len(entries) != len(shape):
        raise ValueError(f"weight index {tuple(index)} needs {len(shape)} entries {where}")
    names = ["k", "dim1", "dim2", "dim3"]
    return tuple(
        _check_range(v, size, names[d], where)
        for d, (v, size) in enumerate(zip(entries, shape, strict=True))
    )


def check_weight_faults(
    catalogue: Sequence[LayerInfo],
    *,
    layer_num: object,
    k: object,
    dims: tuple[object, object, object],
    value: object,
    function: Callable[..., Any] | None,
) -> list[tuple[LayerInfo, tuple[int, ...], Any]]:
    """Validate one ``declare_weight_fi`` call: ``(layer, weight index, value or None)`` per fault."""
    if (value is None) == (function is None):
        raise ValueError("declare_weight_fi needs exactly one of value=[...] or function=f")
    layers, ks = normalise(layer_num, "layer_num"), normalise(k, "k")
    d1, d2, d3 = (normalise(d, f"dim{i + 1}") for i, d in enumerate(dims))
    n = len(layers)
    d2, d3 = d2 or [None] * n, d3 or [None] * n
    values = [None] * n if value is None else normalise(value, "value")
    lengths = {"layer_num": n, "k": len(ks), "dim1": len(d1), "dim2": len(d2), "dim3": len(d3)}
    lengths["value"] = len(values)
    if n == 0:
        raise ValueError("declare_weight_fi got no fault location (layer_num=[])")
    if len(set(lengths.values())) > 1:
        raise ValueError(f"fault lists must have one entry per fault, got lengths {lengths}")
    faults = []
    for i in range(n):
        info = layer_info(catalogue, layers[i])
        faults.append((info, check_weight_index(info, (ks[i], d1[i], d2[i], d3[i])), values[i]))
    return faults
