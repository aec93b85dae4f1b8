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
    "ALL_LAYERS",
    "NeuronFaults",
    "check_layer_types",
    "check_neuron_faults",
    "check_weight_faults",
    "check_weight_index",
    "layer_info",
    "module_output_shape",
    "normalise",
]

_DIM_NAMES = ("dim1 (channel)", "dim2 (row)", "dim3 (column)")

#: PyTorchFI's ``layer_types`` entry for "every leaf module".
ALL_LAYERS = "all"


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


def module_output_shape(info: LayerInfo) -> tuple[int, ...]:
    """Per-image shape of what the layer's module writes: PyTorchFI indexes neurons in it."""
    return tuple(getattr(info, "module_output_shape", info.output_shape))


def _first_values(values: list[Any], n: int) -> list[Any]:
    """PyTorchFI uses the first ``n`` values for ``n`` fault locations; fewer is an error."""
    if len(values) < n:
        raise ValueError(f"got {len(values)} values for {n} fault locations: give one per fault")
    return values[:n]


def layer_info(catalogue: Sequence[LayerInfo], layer_num: object) -> LayerInfo:
    """The catalogue entry of ``layer_num``; ``ValueError`` names the valid range."""
    n = _as_int(layer_num, "layer_num")
    if not 0 <= n < len(catalogue):
        raise ValueError(
            f"layer_num {n} out of range [0, {len(catalogue)}): the model has "
            f"{len(catalogue)} injectable layers"
        )
    return catalogue[n]


def check_layer_types(layer_types: object) -> tuple[type[nn.Module], ...] | None:
    """Validate PyTorchFI's ``layer_types``: the injectable types, or ``None`` for ``["all"]``.

    The default is ``[nn.Conv2d]``, as in PyTorchFI 0.6.0. A list holding ``"all"`` means every
    leaf module (as in 0.6.0); otherwise every entry must subclass ``nn.Conv2d`` or ``nn.Linear``.
    """
    if layer_types is None:
        return (nn.Conv2d,)
    if not isinstance(layer_types, (list, tuple)) or not layer_types:
        raise ValueError(
            f"expected layer_types as a non-empty list of layer types, got {layer_types!r}"
        )
    if any(isinstance(t, str) and t == ALL_LAYERS for t in layer_types):
        return None
    for t in layer_types:
        if not (isinstance(t, type) and issubclass(t, SUPPORTED_LAYERS)):
            name = t.__name__ if isinstance(t, type) else repr(t)
            raise ValueError(
                f"unsupported layer type {name}: pass subclasses of nn.Conv2d and nn.Linear, "
                "or layer_types=['all'] to inject into every leaf module"
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
    values = None if value is None else _first_values(normalise(value, "value"), n)
    lengths = {
        "layer_num": n,
        "batch": len(batches),
        "dim1": len(d1),
        "dim2": len(d2),
        "dim3": len(d3),
    }
    if values is not None and n == 0:
        raise ValueError("declare_neuron_fi got value=[...] but no fault location (layer_num=[])")
    if len(set(lengths.values())) > 1:
        raise ValueError(f"fault lists must have one entry per fault, got lengths {lengths}")
    for i in range(n):
        info = layer_info(catalogue, layers[i])
        shape = module_output_shape(info)
        where = f"of layer {info.layer_num} ({info.name}, output {shape}) in fault {i}"
        batches[i] = _check_range(
            batches[i], batch_size, "batch", f"(batch_size {batch_size}) in fault {i}"
        )
        rank = len(shape)
        if not 1 <= rank <= 3:
            raise ValueError(
                f"layer {info.layer_num} ({info.name}, {info.kind}) outputs {shape} "
                "per image: neuron faults need 1 to 3 dimensions per image (N, C[, H[, W]])"
            )
        for k, (col, size) in enumerate(zip([d1, d2, d3][:rank], shape, strict=True)):
            col[i] = _check_range(col[i], size, _DIM_NAMES[k], where)
        ignored = [
            name for name, col in (("dim2", d2), ("dim3", d3))[rank - 1 :] if col[i] is not None
        ]
        if ignored:
            warnings.warn(
                f"fault {i}: {'/'.join(ignored)} ignored, layer {info.layer_num} ({info.kind}) "
                f"has {rank}-D outputs per image",
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
    if not shape:
        raise ValueError(f"layer {info.layer_num} ({info.name}, {info.kind}) has no weight")
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
    values = [None] * n if value is None else _first_values(normalise(value, "value"), n)
    lengths = {"layer_num": n, "k": len(ks), "dim1": len(d1), "dim2": len(d2), "dim3": len(d3)}
    if n == 0:
        raise ValueError("declare_weight_fi got no fault location (layer_num=[])")
    if len(set(lengths.values())) > 1:
        raise ValueError(f"fault lists must have one entry per fault, got lengths {lengths}")
    faults = []
    for i in range(n):
        info = layer_info(catalogue, layers[i])
        faults.append((info, check_weight_index(info, (ks[i], d1[i], d2[i], d3[i])), values[i]))
    return faults
