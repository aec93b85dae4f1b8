"""Per layer type, the functions that gather what the analysers need (fvcore-style handles).

A :class:`LayerHandler` tells the analysers, for one ``nn.Module`` type, how to gather the
operands of output neurons (operand fault model) and of filters (weight fault model), and how a
flat output position maps to the ``(row, col)`` the engine's perturbations take. Layers whose type
has no handler are reported in the result's ``unsupported`` field, never silently skipped.

Positions are flat indices over the catalogue's ``output_shape[1:]`` (row-major). For a Linear on
N-D inputs (tokens ``(N, T, F)``, channels-last maps ``(N, H, W, C)``) a target is an output
feature at one token/position and the shapes are the same as a convolution's: ``(I, T, J)``
operands per neuron, ``(I, T, J, P)`` per weight target, ``J = in_features``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

from pytorchfi_deepvigor.functional.receptive import (
    conv_operand_means,
    conv_operands,
    conv_weight_operands,
    linear_operand_means,
    linear_operands,
    linear_weight_operands,
)

__all__ = ["LayerHandler", "HANDLERS", "handler_for"]

Gather = Callable[..., tuple[Tensor, Tensor, Tensor]]
"""``(layer_input, module, channels, positions) -> (operands, weights, valid)``."""


@dataclass(frozen=True)
class LayerHandler:
    """How to analyse one layer type.

    Attributes:
        operands: ``(layer_input, module, channels (T,), positions (T,)) -> (ops (I, T, J),
            w (T, J), valid (T, J))``.
        weight_operands: ``(layer_input, module, channels (T,), positions (T, P) | None) ->
            (ops (I, T, J, P), w (T, J), valid (T, J, P))``.
        operand_means: ``(layer_input, module, channels (T,)) -> (means (I, T, J), w (T, J),
            n_real (T, J))``: ``weight_operands`` at every position, averaged over the real ones
            (the default weight model's equivalent error), without gathering them.
    """

    operands: Gather
    weight_operands: Gather
    operand_means: Gather


HANDLERS: dict[type[nn.Module], LayerHandler] = {
    nn.Conv2d: LayerHandler(conv_operands, conv_weight_operands, conv_operand_means),
    nn.Linear: LayerHandler(linear_operands, linear_weight_operands, linear_operand_means),
}
"""Layer type -> handler; the analysers support exactly these types."""


def handler_for(module: nn.Module) -> LayerHandler:
    """The handler of ``module``'s type.

    Raises:
        TypeError: naming the supported types, when there is none.
    """
    for kind, handler in HANDLERS.items():
        if type(module) is kind or isinstance(module, kind):
            return handler
    names = ", ".join(k.__name__ for k in HANDLERS)
    raise TypeError(f"no analysis handler for {type(module).__name__}; supported: {names}")
