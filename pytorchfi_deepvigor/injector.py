"""``DeepVigorFI``: the package's one subclass of PyTorchFI's injector.

A PyTorchFI 0.6.0 script keeps working when it swaps ``fault_injection`` for ``DeepVigorFI``:
``declare_neuron_fi`` / ``declare_weight_fi`` (and master's ``declare_*_fault_injection``
names) take the same ``layer_num``, ``batch``, ``k``, ``dim1..3``, ``value`` / ``function``
arguments with the same meaning and return a corrupted deep copy of the model. What 0.6.0 gets
wrong is fixed here:

* profiling runs once through :func:`~pytorchfi_deepvigor.catalogue.build_catalogue` (zero
  input, eval mode, no grad, modes restored); ``logging.basicConfig`` is never called; the
  global torch RNG advances as 0.6.0's constructor advances it (one ``torch.randn`` of the
  profiling shape), so a seeded script draws the same numbers after the swap;
* the arguments mean what they mean in 0.6.0, defaults included (``layer_types=[nn.Conv2d]``;
  ``["all"]`` numbers every leaf-module call in execution order, for neuron *and* weight faults;
  a ``value`` list longer than the fault locations uses its first values);
* with Conv2d/Linear layer types, layer numbers are the catalogue's (leaf layers of the chosen
  types in traversal order) for neurons and weights alike;
* a corrupted model from ``declare_neuron_fi`` runs any number of forwards (its layer counter is
  reset by a forward pre-hook on the root), and keeps its faults when later models are declared:
  each corrupted copy carries its own frozen fault list. :meth:`DeepVigorFI.fi_reset` removes the
  hooks of every copy this injector declared;
* every index is bounds-checked up front with a ``ValueError`` naming it and its range;
* :meth:`DeepVigorFI.weight_fault` injects one weight fault in place in the live model and
  restores the exact original bits on exit, with no deep copy.

``print_pytorchfi_layer_summary`` returns the summary string and does not print it (library code
never prints); print the returned string where 0.6.0's console output is wanted.

PyTorchFI's own error models (``pytorchfi.neuron_error_models``, ``pytorchfi.weight_error_models``)
take a ``DeepVigorFI`` as their ``pfi`` and draw the same faults for the same seed; for
``single_bit_flip_func``, whose base class PyTorchFI hard-codes, use
:class:`pytorchfi_deepvigor.error_models.SingleBitFlipFI`. PyTorchFI master's names
(``FaultInjection``, ``declare_*_fault_injection``, ``batch_size``, ``get_tensor_dim``,
``corrupt_dim``, ...) are answered too.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ._guard import check_images
from ._injection import (
    CallCounter,
    faulty_weight_value,
    forward_start_hook,
    layer_weight,
    profile_leaves,
    set_value_hook,
    written_in_place,
)
from ._injector_checks import (
    NeuronFaults,
    check_layer_types,
    check_neuron_faults,
    check_weight_faults,
    check_weight_index,
    layer_info,
    module_output_shape,
)
from ._pytorchfi_compat import PyTorchFIBase
from .catalogue import LayerInfo, build_catalogue

if TYPE_CHECKING:
    from .engine import SimulationEngine

__all__ = ["DeepVigorFI", "FaultInjection", "WeightFault", "fault_injection"]


@dataclasses.dataclass(frozen=True)
class WeightFault:
    """The weight fault active inside :meth:`DeepVigorFI.weight_fault`.

    Attributes:
        layer_num: the layer's number.
        index: the weight's full index, e.g. ``(k, c, kh, kw)`` or ``(k, j)``.
        golden: the original weight value.
        faulty: the value written in its place.
    """

    layer_num: int
    index: tuple[int, ...]
    golden: float
    faulty: float


class DeepVigorFI(PyTorchFIBase):
    """PyTorchFI's injector with exact, restorable, bounds-checked fault injection.

    Args:
        model: the model; never left changed by any method.
        batch_size: the batch size the corrupted models will run (fault ``batch`` indices must be
            below it), as in PyTorchFI.
        input_shape: per-image input shape ``[C, H, W]`` (PyTorchFI's default ``[3, 224, 224]``).
        layer_types: injectable types, subclasses of ``nn.Conv2d`` / ``nn.Linear`` (default
            ``[nn.Conv2d]``, as in PyTorchFI). Layer numbers count the chosen types only, as in
            PyTorchFI. ``["all"]``: every call of a leaf module whose output is a tensor, in
            execution order, as PyTorchFI numbers neurons with it; weight faults then target the
            leaf's weight (PyTorchFI 0.6.0 cannot inject weights with ``"all"``).
        use_cuda: profile on CUDA (default: where the model's parameters are).
        bits: accepted and unused, as PyTorchFI's injector accepts it: its subclass
            ``single_bit_flip_func`` passes its ``bits=`` through to the base class.
        example_input: optional batch to profile with instead of zeros (only its first image is
            used).

    Raises:
        TypeError: ``model`` is not an ``nn.Module``, or a bad argument type.
        ValueError: a bad batch size, input shape or layer type, nothing injectable, or a
            profiling forward that fails on ``input_shape``.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 3))
        >>> fi = DeepVigorFI(net, 1, input_shape=[1, 4, 4], layer_types=[nn.Conv2d, nn.Linear])
        >>> fi.get_total_layers(), fi.get_layer_shape(0)
        (2, [1, 2, 2, 2])
        >>> DeepVigorFI(net, 1, [1, 4, 4], ["all"]).get_layer_type(1)  # every leaf call
        <class 'torch.nn.modules.flatten.Flatten'>
        >>> with fi.weight_fault(1, (0, 0), bit=30) as fault:
        ...     logits = net(torch.ones(1, 1, 4, 4))
        >>> fault.index, net[2].weight[0, 0].item() == fault.golden
        ((0, 0), True)
    """

    def __init__(
        self,
        model: nn.Module,
        batch_size: int,
        input_shape: Sequence[int] | None = None,
        layer_types: Sequence[type[nn.Module] | str] | None = None,
        use_cuda: bool | None = None,
        *,
        bits: int | None = None,
        example_input: torch.Tensor | None = None,
    ) -> None:
        # PyTorchFIBase.__init__ is deliberately not called: it runs logging.basicConfig and
        # profiles the model as it is. Every attribute it sets is set here instead.
        if not isinstance(model, nn.Module):
            raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"expected batch_size as an int >= 1, got {batch_size!r}")
        types = check_layer_types(layer_types)
        first = next(iter([*model.parameters(), *model.buffers()]), None)
        device = first.device if first is not None else torch.device("cpu")
        if use_cuda and device.type != "cuda":
            if not torch.cuda.is_available():
                raise ValueError("use_cuda=True but CUDA is not available")
            raise ValueError("use_cuda=True but the model is on the CPU; move it with model.cuda()")
        dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
        if example_input is not None:
            check_images(example_input, dtype if dtype.is_floating_point else torch.float32)
            input_shape = list(example_input.shape[1:]) if input_shape is None else input_shape
        shape = [3, 224, 224] if input_shape is None else list(input_shape)
        if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
            raise ValueError(
                f"expected input_shape as a list of positive ints, got {input_shape!r}"
            )
        if example_input is not None and list(example_input.shape[1:]) != shape:
            raise ValueError(
                f"example_input has per-image shape {list(example_input.shape[1:])}, "
                f"but input_shape is {shape}"
            )
        probe = (
            example_input[:1] if example_input is not None else torch.zeros(1, *shape, dtype=dtype)
        )
        # PyTorchFI 0.6.0 profiles with torch.randn(1, *input_shape): draw (and drop) the same
        # numbers, so that a seeded script draws the same random numbers after the swap.
        torch.randn(1, *shape, dtype=dtype, device=device)

        self.original_model = model
        self.use_cuda = device.type == "cuda"
        self._input_shape = shape
        self._batch_size = batch_size
        self._inj_layer_types = _as_given(layer_types)
        self._all_leaves = types is None
        self._catalogue, self._renumbered = self._profile(model, probe.to(device), types)
        self.output_size = [[1, *module_output_shape(i)] for i in self._catalogue]
        self.layers_type = [type(info.module) for info in self._catalogue]
        self.layers_dim = [len(size) for size in self.output_size]
        self.weights_size = [torch.Size(info.weight_shape) for info in self._catalogue]
        self.corrupted_model: nn.Module | None = None
        self.handles: list[torch.utils.hooks.RemovableHandle] = []
        self._set_state(NeuronFaults.empty())

    @staticmethod
    def _profile(
        model: nn.Module, probe: torch.Tensor, types: tuple[type[nn.Module], ...] | None
    ) -> tuple[list[LayerInfo], bool]:
        try:
            full = build_catalogue(model, probe) if types is not None else []
            leaves = profile_leaves(model, probe) if types is None else []
        except RuntimeError as exc:
            raise ValueError(
                f"the profiling forward on an input of shape {tuple(probe.shape)} failed ({exc}); "
                "pass input_shape=[C, H, W] matching the model"
            ) from exc
        if types is None:
            if not leaves:
                raise ValueError("nothing injectable: no leaf module of the model returns a tensor")
            return leaves, True
        chosen = [info for info in full if isinstance(info.module, types)]
        if not chosen:
            names = ", ".join(t.__name__ for t in types)
            raise ValueError(f"nothing injectable: the model has no layer of type {names}")
        renumbered = [i.name for i in chosen] != [i.name for i in full[: len(chosen)]]
        return [dataclasses.replace(i, layer_num=n) for n, i in enumerate(chosen)], renumbered

    # ------------------------------------------------------------------ catalogue and queries
    @property
    def model(self) -> nn.Module:
        """The user's model (PyTorchFI's ``original_model``)."""
        return self.original_model

    @property
    def catalogue(self) -> list[LayerInfo]:
        """One :class:`~pytorchfi_deepvigor.catalogue.LayerInfo` per injectable layer."""
        return list(self._catalogue)

    def layer(self, layer_num: int) -> LayerInfo:
        """The catalogue entry of ``layer_num`` (``ValueError`` when out of range)."""
        return layer_info(self._catalogue, layer_num)

    def layer_table(self) -> list[dict[str, object]]:
        """Rows for printing: layer, name, type, weight and output shapes, neurons, weights, groups."""
        rows = [info.as_row() for info in self._catalogue]
        for row, info in zip(rows, self._catalogue, strict=True):
            if not info.weight_shape:  # a leaf without a weight (layer_types=["all"])
                row["weights"] = 0
        return rows

    def get_layer_shape(self, layer_num: int) -> list[int]:
        """Output shape of a layer as PyTorchFI gives it: ``[1, C, H, W]`` or ``[1, F]``."""
        return list(self.output_size[self.layer(layer_num).layer_num])

    def get_layer_type(self, layer_num: int) -> type[nn.Module]:
        """The layer's module type."""
        return self.layers_type[self.layer(layer_num).layer_num]

    def get_layer_dim(self, layer_num: int) -> int:
        """Rank of the layer's output with its batch dimension (4 for Conv2d, 2 for Linear)."""
        return self.layers_dim[self.layer(layer_num).layer_num]

    def get_weights_size(self, layer_num: int) -> torch.Size:
        """Shape of the layer's weight (``ValueError`` for a layer without one, with ``"all"``)."""
        info = self.layer(layer_num)
        if not info.weight_shape:
            raise ValueError(f"layer {info.layer_num} ({info.name}, {info.kind}) has no weight")
        return self.weights_size[info.layer_num]

    def get_weights_dim(self, layer_num: int) -> int:
        """Rank of the layer's weight."""
        return len(self.get_weights_size(layer_num))

    def get_tensor_dim(self, layer: int, dim: int) -> int:
        """Size of dimension ``dim`` of ``get_layer_shape(layer)`` (PyTorchFI master's name)."""
        shape = self.get_layer_shape(layer)
        if isinstance(dim, bool) or not isinstance(dim, int) or not 0 <= dim < len(shape):
            raise ValueError(
                f"dim {dim!r} out of range [0, {len(shape)}) of layer {layer}, {shape}"
            )
        return shape[dim]

    @property
    def batch_size(self) -> int:
        """The batch size given to the constructor (PyTorchFI master's name for ``_batch_size``)."""
        return self._batch_size

    def print_pytorchfi_layer_summary(self) -> str:
        """PyTorchFI 0.6.0's layer summary, character for character, returned and not printed.

        A layer without a weight (``layer_types=["all"]``) shows ``-`` as its weight shape,
        where 0.6.0 raises ``IndexError``. The layer names are in :meth:`layer_table`.
        """
        rule = "-" * 82 + "\n"
        row = "{:>5}  {:>15}  {:>10} {:>20} {:>20}\n"
        text = "=" * 28 + " PYTORCHFI INIT SUMMARY " + "=" * 30 + "\n\n"
        text += "Layer types allowing injections:\n" + rule
        text += "".join(f"{'- ':>5}{getattr(t, '__name__', t)}\n" for t in self._inj_layer_types)
        text += "\nModel Info:\n" + rule
        text += "   - Shape of input into the model: (" + "".join(
            f"{d} " for d in self._input_shape
        )
        text += f")\n   - Batch Size: {self._batch_size}\n   - CUDA Enabled: {self.use_cuda}\n\n"
        text += "Layer Info:\n" + rule
        text += row.format("Layer #", "Layer type", "Dimensions", "Weight Shape", "Output Shape")
        text += rule
        for info in self._catalogue:
            n = info.layer_num
            weight = str(list(info.weight_shape)) if info.weight_shape else "-"
            text += row.format(
                n, info.kind, str(self.layers_dim[n]), weight, str(self.output_size[n])
            )
        return text + "=" * 82 + "\n"

    def engine(
        self,
        images: torch.Tensor,
        *,
        device: str | torch.device | None = None,
        max_batch: int | None = None,
    ) -> SimulationEngine:
        """A :class:`~pytorchfi_deepvigor.engine.SimulationEngine` on this model and ``images``.

        Raises:
            ValueError: when ``layer_types`` renumbered the layers (the engine numbers every
                Conv2d and Linear layer), or bad images.
        """
        from .engine import SimulationEngine  # the engine imports nothing from here

        if self._renumbered:
            raise ValueError(
                "this injector's layer_types renumber the layers, but the engine numbers every "
                "Conv2d and Linear layer: build DeepVigorFI with layer_types=[nn.Conv2d, nn.Linear]"
            )
        return SimulationEngine(self.model, images, device=device, max_batch=max_batch)

    # ------------------------------------------------------------------ PyTorchFI's declarations
    def _set_state(self, faults: NeuronFaults) -> None:
        """Expose ``faults`` through PyTorchFI's attributes (custom ``function=`` hooks read them)."""
        self._active = faults
        self.current_layer = 0
        self.corrupt_layer = list(faults.layer)
        self.corrupt_batch = list(faults.batch)
        self.corrupt_dim1 = list(faults.dim1)
        self.corrupt_dim2 = list(faults.dim2)
        self.corrupt_dim3 = list(faults.dim3)
        self.corrupt_dim = [self.corrupt_dim1, self.corrupt_dim2, self.corrupt_dim3]  # master's
        self.corrupt_value = list(faults.value or [])

    def _at_layer(self, layer_num: int) -> None:
        self.current_layer = layer_num

    def declare_neuron_fi(
        self,
        *,
        layer_num: Any = None,
        batch: Any = None,
        dim1: Any = None,
        dim2: Any = None,
        dim3: Any = None,
        value: Any = None,
        function: Callable[..., Any] | None = None,
    ) -> nn.Module:
        """A deep copy of the model whose layer outputs carry the declared faults.

        Fault ``i`` sets output ``[batch[i], dim1[i], dim2[i], dim3[i]]`` of layer
        ``layer_num[i]`` (``[batch[i], dim1[i]]`` for Linear) to ``value[i]`` (a longer ``value``
        list: its first entries, as in PyTorchFI); with ``function=f``,
        ``f(module, input, output)`` runs as the forward hook of every layer, with
        ``self.get_current_layer()`` set to that layer's number. The copy runs any number of
        forwards; it keeps its faults when other models are declared, until :meth:`fi_reset`.

        Raises:
            ValueError: neither or both of ``value``/``function``, lists of different lengths, or
                an index out of range (the message names it and its range).
        """
        faults = check_neuron_faults(
            self._catalogue,
            self._batch_size,
            layer_num=layer_num,
            batch=batch,
            dims=(dim1, dim2, dim3),
            value=value,
            function=function,
        )
        self.handles = [h for h in self.handles if h.hooks_dict_ref() is not None]
        self._set_state(faults)
        corrupted = copy.deepcopy(self.original_model)
        counter = CallCounter(self._catalogue)

        def on_start() -> None:
            self._set_state(faults)
            counter.reset()

        start = forward_start_hook(on_start, max(faults.batch, default=-1) + 1)
        handles = [corrupted.register_forward_pre_hook(start)]
        if self._all_leaves:  # every leaf, also one the profiling forward did not call
            sites = [(n, counter.layer_of(n)) for n, m in corrupted.named_modules() if _leaf(m)]
        else:
            sites = [(info.name, _fixed(info)) for info in self._catalogue]
        for name, layer_of in sites:
            hook = set_value_hook(layer_of, faults, self._at_layer)
            handles.append(corrupted.get_submodule(name).register_forward_hook(hook))
        self.handles.extend(handles)
        self.corrupted_model = corrupted
        return corrupted

    def declare_weight_fi(
        self,
        *,
        layer_num: Any = None,
        k: Any = None,
        dim1: Any = None,
        dim2: Any = None,
        dim3: Any = None,
        value: Any = None,
        function: Callable[..., Any] | None = None,
    ) -> nn.Module:
        """A deep copy of the model with weight ``[k[i], dim1[i], dim2[i], dim3[i]]`` of layer
        ``layer_num[i]`` set to ``value[i]`` (or ``function(weight, index)``); Linear weights
        take ``[k[i], dim1[i]]``. For one fault at a time, :meth:`weight_fault` is much faster.

        Raises:
            ValueError: neither or both of ``value``/``function``, lists of different lengths, or
                an index out of range.
        """
        faults = check_weight_faults(
            self._catalogue,
            layer_num=layer_num,
            k=k,
            dims=(dim1, dim2, dim3),
            value=value,
            function=function,
        )
        self._set_state(NeuronFaults.empty())
        corrupted = copy.deepcopy(self.original_model)
        with torch.no_grad():
            for info, index, val in faults:
                weight = layer_weight(corrupted.get_submodule(info.name))
                weight[index] = function(weight, index) if function is not None else val
        self.corrupted_model = corrupted
        return corrupted

    # PyTorchFI master's names (see _pytorchfi_compat.MASTER_METHOD_ALIASES)
    declare_neuron_fault_injection = declare_neuron_fi
    declare_weight_fault_injection = declare_weight_fi

    def check_bounds(self, b: Any, l: Any, dim1: Any, *dims: Any) -> None:
        """PyTorchFI's bounds check, raising ``ValueError`` with the bad index and its range.

        Takes 0.6.0's ``(b, l, dim1, dim2, dim3)`` and master's ``(batch, layer, dim)`` with
        ``dim = [dim1, dim2, dim3]``.
        """
        if not dims:
            dim1, *dims = dim1
        if len(dims) != 2:
            raise TypeError("check_bounds takes (b, l, dim1, dim2, dim3) or (batch, layer, dim)")
        dim2, dim3 = dims
        check_neuron_faults(
            self._catalogue,
            self._batch_size,
            layer_num=l,
            batch=b,
            dims=(dim1, dim2, dim3),
            value=None,
            function=print,
        )

    def assert_inj_bounds(self, index: int) -> None:
        """Bounds check of declared fault ``index`` (used by PyTorchFI's custom hooks)."""
        f = self._active
        self.check_bounds(
            [f.batch[index]], [f.layer[index]], [f.dim1[index]], [f.dim2[index]], [f.dim3[index]]
        )

    assert_injection_bounds = assert_inj_bounds  # master's name

    def update_layer(self, value: int = 1) -> None:
        """Advance ``current_layer`` by ``value`` (master's name for ``updateLayer``)."""
        self.current_layer += value

    def _fi_state_reset(self) -> None:
        """0.6.0's internal reset, kept for subclasses that call it: same as :meth:`fi_reset`."""
        self.fi_reset()

    def fi_reset(self) -> None:
        """Remove the hooks of every corrupted model this injector declared and clear its state."""
        for handle in self.handles:
            handle.remove()
        self.handles = []
        self._set_state(NeuronFaults.empty())
        self.corrupted_model = None

    reset_fault_injection = fi_reset  # master's name

    # ------------------------------------------------------------------ in-place weight faults
    @contextmanager
    def weight_fault(
        self,
        layer_num: int,
        index: int | Sequence[int],
        *,
        bit: int | None = None,
        value: float | None = None,
        function: Callable[..., Any] | None = None,
        stuck_at: int | None = None,
    ) -> Iterator[WeightFault]:
        """Inject one weight fault into the live model for the duration of the block.

        The faulty value is written in place (no copy of the model); on exit, also on an
        exception, the weight's original bits are written back exactly.

        Args:
            layer_num: the layer.
            index: the weight, as a full index (``(k, c, kh, kw)``, ``(k, j)``) or a flat int.
            bit: flip this bit (LSB = 0) of the weight, or set it to ``stuck_at`` (0 or 1).
            value: write this value instead.
            function: write ``function(weight, index)`` instead (PyTorchFI's custom weight model).
            stuck_at: with ``bit``, a stuck-at fault instead of a flip.

        Raises:
            TypeError: ``bit`` on a weight that is not float32/float16/bfloat16.
            ValueError: not exactly one of bit/value/function, or an index out of range.
        """
        info = self.layer(layer_num)
        idx = check_weight_index(info, index)
        golden, faulty = faulty_weight_value(
            info, idx, bit=bit, value=value, function=function, stuck_at=stuck_at
        )
        with written_in_place(layer_weight(info.module), idx, faulty):
            yield WeightFault(info.layer_num, idx, float(golden), float(faulty))


def _fixed(info: LayerInfo) -> Callable[[Any], LayerInfo]:
    return lambda _output: info


def _leaf(module: nn.Module) -> bool:
    return not list(module.children())


def _as_given(layer_types: Sequence[type[nn.Module] | str] | None) -> list[Any] | tuple[Any, ...]:
    """``layer_types`` as ``get_inj_layer_types()`` returns it: a copy of what was passed."""
    if layer_types is None:
        return [nn.Conv2d]
    return tuple(layer_types) if isinstance(layer_types, tuple) else list(layer_types)


#: PyTorchFI master's class name and 0.6.0's, for a script that imports either from here.
FaultInjection = DeepVigorFI
fault_injection = DeepVigorFI
