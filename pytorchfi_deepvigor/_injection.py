"""The mechanics behind :class:`~pytorchfi_deepvigor.injector.DeepVigorFI`: hooks and exact writes.

Kept apart from the class so that the class reads as PyTorchFI's API and this module as what
happens to the tensors: a forward pre-hook that starts every forward of a corrupted model afresh,
a forward hook that sets declared output values, the profile of every leaf call behind
``layer_types=["all"]``, and an in-place weight write whose original bits are restored exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from . import bits as _bits
from ._guard import eval_mode
from ._injector_checks import NeuronFaults, module_output_shape
from .catalogue import LayerInfo

__all__ = [
    "CallCounter",
    "faulty_weight_value",
    "forward_start_hook",
    "layer_weight",
    "profile_leaves",
    "set_value_hook",
    "written_in_place",
]

_INT_VIEW = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def layer_weight(module: nn.Module) -> torch.Tensor:
    """``module.weight`` as a tensor (``TypeError`` when the module has none)."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{type(module).__name__} has no weight tensor")
    return weight


def forward_start_hook(
    on_start: Callable[[], None], needed_batch: int
) -> Callable[[nn.Module, tuple[Any, ...]], None]:
    """A root forward pre-hook: calls ``on_start`` (resetting the layer counter), checks the input.

    Raises (when the corrupted model runs):
        ValueError: an empty batch, fewer images than a declared fault's batch element, or NaN/Inf.
    """

    def hook(_module: nn.Module, args: tuple[Any, ...]) -> None:
        on_start()
        x = args[0] if args else None
        if not isinstance(x, torch.Tensor):
            return
        if x.dim() == 0 or x.shape[0] == 0:
            raise ValueError("the input batch is empty: pass at least one image")
        if x.shape[0] < needed_batch:
            raise ValueError(
                f"the input batch has {x.shape[0]} images, but a fault is declared in "
                f"batch element {needed_batch - 1}"
            )
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise ValueError("the input contains NaN or Inf values: clean the input data first")

    return hook


def set_value_hook(
    layer_of: Callable[[torch.Tensor], LayerInfo | None],
    faults: NeuronFaults,
    on_layer: Callable[[int], None],
) -> Callable[..., Any]:
    """The forward hook of one layer: PyTorchFI's ``value=`` faults or its ``function=``.

    ``layer_of(output)`` names the layer this call is (a fixed layer, or the next entry of a
    :class:`CallCounter`), or ``None`` for a call that is not a fault site. ``on_layer(n)`` is
    told the layer number before a custom function runs (so that ``get_current_layer()`` is right
    whatever the execution order) and ``n + 1`` after the built-in value model.
    """

    def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> Any:
        info = layer_of(output)
        if info is None:
            return None
        on_layer(info.layer_num)
        if faults.function is not None:
            return faults.function(module, inputs, output)
        shape = module_output_shape(info)
        if tuple(output.shape[1:]) != shape:
            raise ValueError(
                f"layer {info.layer_num} ({info.name}) outputs {tuple(output.shape[1:])} per "
                f"image, but {shape} was profiled: the input shape changed"
            )
        on_layer(info.layer_num + 1)
        mine = faults.at_layer(info.layer_num)
        if not mine or faults.value is None:
            return None
        output = output.clone()
        rank = len(shape)
        for i in mine:
            site = (faults.batch[i], faults.dim1[i], faults.dim2[i], faults.dim3[i])[: rank + 1]
            output[site] = faults.value[i]
        return output

    return hook


class CallCounter:
    """Numbers the leaf-module calls of one forward in execution order (``layer_types=["all"]``).

    :meth:`reset` starts a forward; :meth:`layer_of` returns the profiled entry of the next call
    of the leaf ``name`` and checks that the forward still calls the leaves in profiled order.
    """

    def __init__(self, catalogue: Sequence[LayerInfo]) -> None:
        self._catalogue = list(catalogue)
        self._next = 0

    def reset(self) -> None:
        self._next = 0

    def layer_of(self, name: str) -> Callable[[Any], LayerInfo | None]:
        def lookup(output: Any) -> LayerInfo | None:
            if not isinstance(output, torch.Tensor):
                return None  # not profiled either: not a fault site
            n, self._next = self._next, self._next + 1
            if n >= len(self._catalogue) or self._catalogue[n].name != name:
                profiled = self._catalogue[n].name if n < len(self._catalogue) else "nothing"
                raise ValueError(
                    f"call {n} of this forward is leaf {name!r}, but the profiling forward called "
                    f"{profiled!r} there: the model's control flow depends on its input"
                )
            return self._catalogue[n]

        return lookup


def profile_leaves(model: nn.Module, probe: torch.Tensor) -> list[LayerInfo]:
    """Every call of a leaf module in one forward of ``probe``, in execution order.

    This is PyTorchFI's ``layer_types=["all"]`` numbering: layer ``n`` is the ``n``-th leaf call
    whose output is a tensor (a module called twice has two numbers). The model runs in eval
    mode without grad and is left exactly as it was.
    """
    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children())]
    calls: list[LayerInfo] = []

    def record(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            if not isinstance(output, torch.Tensor):
                return
            first = inputs[0] if inputs else None
            weight = getattr(module, "weight", None)
            calls.append(
                LayerInfo(
                    layer_num=len(calls),
                    name=name,
                    kind=type(module).__name__,
                    module=module,
                    weight_shape=tuple(weight.shape) if isinstance(weight, torch.Tensor) else (),
                    input_shape=tuple(first.shape[1:]) if isinstance(first, torch.Tensor) else (),
                    output_shape=tuple(output.shape[1:]),
                )
            )

        return hook

    with contextlib.ExitStack() as stack:
        for name, module in leaves:
            stack.enter_context(module.register_forward_hook(record(name)))
        with eval_mode(model), torch.no_grad():
            model(probe)
    return calls


def faulty_weight_value(
    info: LayerInfo,
    index: tuple[int, ...],
    *,
    bit: int | None,
    value: float | None,
    function: Callable[..., Any] | None,
    stuck_at: int | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(golden, faulty)`` 0-d tensors of one weight fault; nothing is written yet.

    Raises:
        TypeError: ``bit`` on a weight that is not float32/float16/bfloat16.
        ValueError: not exactly one of bit/value/function, ``stuck_at`` without ``bit``, or a
            ``function`` that returns more than one value.
    """
    if sum(x is not None for x in (bit, value, function)) != 1:
        raise ValueError("weight_fault needs exactly one of bit=, value= or function=")
    if stuck_at is not None and bit is None:
        raise ValueError("stuck_at=0/1 needs bit= (the bit that is stuck)")
    weight = layer_weight(info.module)
    data = weight.detach()
    if bit is not None and data.dtype not in _bits.SUPPORTED_DTYPES:
        raise TypeError(
            f"bit faults need a float32 (or float16/bfloat16) weight, but layer {info.layer_num} "
            f"({info.name}) has {data.dtype}; convert the model with model.float()"
        )
    golden = data[index].clone()
    if bit is not None:
        flipped = _bits.flip_bit(golden, bit)
        return golden, flipped if stuck_at is None else _bits.stuck_at(golden, bit, stuck_at)
    with torch.no_grad():
        raw = function(weight, index) if function is not None else value
    faulty = torch.as_tensor(raw, dtype=data.dtype, device=data.device)
    if faulty.numel() != 1:
        raise ValueError(f"a weight fault writes one value, got shape {tuple(faulty.shape)}")
    return golden, faulty.reshape(())


@contextmanager
def written_in_place(
    tensor: torch.Tensor, index: tuple[int, ...], value: torch.Tensor
) -> Iterator[None]:
    """Write ``value``'s bits at ``tensor[index]`` for the block; restore the original bits after.

    The write goes through an integer view of the storage, so NaN payloads, signed zeros and
    subnormals round-trip exactly; autograd does not see it.
    """
    ints = tensor.detach().view(_INT_VIEW[tensor.element_size()])
    saved = ints[index].clone()
    ints[index] = value.to(tensor.dtype).reshape(()).view(ints.dtype)
    try:
        yield
    finally:
        ints[index] = saved
