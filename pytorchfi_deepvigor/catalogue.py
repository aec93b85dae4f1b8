"""The layer catalogue: every injectable layer of a model, numbered as PyTorchFI numbers it.

PyTorchFI 0.6.0 walks ``model.children()`` depth first and numbers the leaf modules of the
injectable types in that order; ``layer_num`` here means the same thing. Injectable layers are
``nn.Conv2d`` (any stride, padding, dilation, groups) and ``nn.Linear`` applied to (N, F) inputs.
Leaf modules that carry weights but are of another type (Conv1d, Conv3d, ...) are listed by
:func:`unsupported_layers` so reports can name them instead of silently skipping them.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from ._guard import eval_mode

__all__ = ["LayerInfo", "SUPPORTED_LAYERS", "build_catalogue", "unsupported_layers"]

SUPPORTED_LAYERS: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class LayerInfo:
    """One injectable layer.

    Attributes:
        layer_num: PyTorchFI's layer number.
        name: qualified module name (``model.get_submodule(name)`` returns it).
        kind: ``"Conv2d"`` or ``"Linear"``.
        module: the module itself (not compared, not printed).
        weight_shape: shape of ``module.weight``.
        input_shape: per-image shape of what the layer reads.
        output_shape: per-image shape of what the layer writes, ``(C, H, W)`` or ``(F,)``.
        groups, stride, padding, dilation: convolution parameters (Linear: 1, (1, 1), (0, 0), (1, 1)).
        has_bias: whether the layer adds a bias.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
        >>> [(l.layer_num, l.name, l.kind, l.output_shape) for l in build_catalogue(net, torch.zeros(1, 1, 8, 8))]
        [(0, '0', 'Conv2d', (4, 6, 6)), (1, '2', 'Linear', (3,))]
    """

    layer_num: int
    name: str
    kind: str
    module: nn.Module = field(compare=False, repr=False)
    weight_shape: tuple[int, ...]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    groups: int = 1
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] | str = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    has_bias: bool = False
    channel_last: bool = False

    @property
    def out_channels(self) -> int:
        """Output channels (Conv2d) or output features (Linear)."""
        return self.output_shape[0]

    @property
    def neurons_per_channel(self) -> int:
        """Output positions per channel: H * W for Conv2d, 1 for Linear."""
        return math.prod(self.output_shape[1:])

    @property
    def neurons_per_image(self) -> int:
        """Output activations per image (N_l of the paper's Eq. 15)."""
        return math.prod(self.output_shape)

    @property
    def n_weights(self) -> int:
        """Number of weights (W_l of the paper's Eq. 15); the bias is not counted."""
        return math.prod(self.weight_shape)

    @property
    def fan_in(self) -> int:
        """Operands per output neuron (receptive field size, padding included)."""
        return math.prod(self.weight_shape[1:])

    def as_row(self) -> dict[str, object]:
        """A flat dict for tables: number, name, type, shapes, neurons, weights, groups."""
        return {
            "layer": self.layer_num,
            "name": self.name,
            "type": self.kind,
            "weight_shape": list(self.weight_shape),
            "output_shape": list(self.output_shape),
            "neurons": self.neurons_per_image,
            "weights": self.n_weights,
            "groups": self.groups,
        }


def _injectable(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, SUPPORTED_LAYERS) and not list(m.children())
    ]


def unsupported_layers(model: nn.Module) -> list[str]:
    """Names and types of leaf modules that hold a weight but cannot be analysed."""
    out = []
    for name, m in model.named_modules():
        if list(m.children()) or isinstance(m, SUPPORTED_LAYERS):
            continue
        weight = getattr(m, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.dim() >= 2:
            out.append(f"{name} ({type(m).__name__})")
    return out


def _weight(m: nn.Module) -> torch.Tensor:
    weight = m.weight
    assert isinstance(weight, torch.Tensor)
    return weight


def _pair(v: object) -> tuple[int, int]:
    if isinstance(v, tuple):
        return (int(v[0]), int(v[1]))
    return (int(v), int(v))  # type: ignore[call-overload]


def build_catalogue(model: nn.Module, example_input: torch.Tensor) -> list[LayerInfo]:
    """Profile ``model`` once (eval mode, no grad, first image only) and list its injectable layers.

    Args:
        model: any ``nn.Module``; it is left exactly as it was.
        example_input: a batch of inputs; only its first element is used.

    Raises:
        ValueError: if the model has no injectable layer, or a layer is called more than once
            per forward (weight sharing), or a Linear layer sees a non-2-D input.
    """
    layers = _injectable(model)
    if not layers:
        raise ValueError(
            "the model has no injectable layer (nn.Conv2d or nn.Linear); "
            f"unsupported layers: {unsupported_layers(model) or 'none'}"
        )
    seen: dict[str, list[tuple[tuple[int, ...], tuple[int, ...]]]] = {n: [] for n, _ in layers}
    order: list[str] = []
    handles = []

    def make_hook(name: str):
        def hook(_m: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            seen[name].append((tuple(inputs[0].shape[1:]), tuple(output.shape[1:])))
            order.append(name)

        return hook

    try:
        for name, m in layers:
            handles.append(m.register_forward_hook(make_hook(name)))
        with eval_mode(model), torch.no_grad():
            model(example_input[:1])
    finally:
        for h in handles:
            h.remove()

    if [n for n in order if n in seen] != [n for n, _ in layers if seen[n]]:
        warnings.warn(
            "the execution order of the injectable layers differs from their registration order; "
            "layer numbers follow registration order (as PyTorchFI's weight injection does)",
            stacklevel=2,
        )
    catalogue: list[LayerInfo] = []
    for name, m in layers:
        calls = seen[name]
        if not calls:
            warnings.warn(
                f"layer {name!r} is never called in forward; it is not catalogued", stacklevel=2
            )
            continue
        if len(calls) > 1:
            raise ValueError(
                f"layer {name!r} is called {len(calls)} times per forward (weight sharing); "
                "give each use its own module to analyse it"
            )
        in_shape, out_shape = calls[0]
        if isinstance(m, nn.Conv2d):
            if len(out_shape) != 3:
                raise ValueError(
                    f"Conv2d {name!r} must see (N, C, H, W) inputs, got output {out_shape}"
                )
            pad = m.padding if isinstance(m.padding, str) else _pair(m.padding)
            info = LayerInfo(
                layer_num=len(catalogue),
                name=name,
                kind="Conv2d",
                module=m,
                weight_shape=tuple(_weight(m).shape),
                input_shape=in_shape,
                output_shape=out_shape,
                groups=m.groups,
                stride=_pair(m.stride),
                padding=pad,
                dilation=_pair(m.dilation),
                has_bias=m.bias is not None,
            )
        else:
            if len(out_shape) != 1:
                raise ValueError(
                    f"Linear {name!r} sees inputs of shape {in_shape} per image; only (N, F) "
                    "inputs are supported (flatten before the Linear layer)"
                )
            info = LayerInfo(
                layer_num=len(catalogue),
                name=name,
                kind="Linear",
                module=m,
                weight_shape=tuple(_weight(m).shape),
                input_shape=in_shape,
                output_shape=out_shape,
                has_bias=m.bias is not None,
            )
        catalogue.append(info)
    return catalogue
