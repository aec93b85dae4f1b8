"""How much of a model's weight memory the analysis and fault injection cover, as a number.

A bit flip in memory does not care whether PyTorch calls a tensor a parameter or a buffer, nor
which module applies it. The weights of a model are the floating-point parameters and buffers
of two or more dimensions that its forward multiplies its data by: those of its Conv2d/Linear
modules (catalogued or not), the attention projections (:mod:`~pytorchfi_deepvigor.twins`),
the tensors any convolution, matrix product or embedding lookup is applied with, the weights
of other weight-carrying modules (Conv1d, LSTM, ...). A result covers those of its catalogued
layers (their fault sites) and names each other weight with its size and the reason (from
:func:`~pytorchfi_deepvigor.catalogue.unsupported_parts`). The other tensors of two or more
dimensions (position embeddings, class tokens, position bias tables, layer scales: added,
indexed or scaled by) are listed apart (:data:`NOT_MULTIPLIED`), not counted.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from pytorchfi_deepvigor.catalogue import SUPPORTED_LAYERS, LayerInfo, unsupported_parts
from pytorchfi_deepvigor.results import WeightCoverage

__all__ = ["NOT_MULTIPLIED", "weight_coverage", "weight_tensors"]

NOT_MULTIPLIED = (
    "not a weight: the forward adds it, indexes it, scales by it elementwise or transforms it "
    "(a position embedding, a class token, a position bias table, a layer scale, the factors "
    "of a weight norm); not counted, not a fault site"
)
DERIVED = (
    "a factor of a weight the layer recomputes before each forward (a weight-norm hook): "
    "fault injection refuses the layer's weights, the analysis skips it"
)
NEVER_CALLED = "a Conv2d/Linear the forward never calls (nor applies its weight)"


def weight_tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Every floating-point parameter and buffer of two or more dimensions, once each."""
    seen: set[int] = set()
    for name, t in (*model.named_parameters(), *model.named_buffers()):
        if id(t) in seen or not t.is_floating_point() or t.dim() < 2:
            continue
        seen.add(id(t))
        yield name, t


def _memory(t: torch.Tensor | nn.Module) -> tuple[int, int]:
    """The memory a tensor holds (a layer of the engine's view may hold a view of the model's
    tensor, e.g. its transpose, or a parameter made of its buffer)."""
    assert isinstance(t, torch.Tensor)
    return t.data_ptr(), t.numel()


def _reason(name: str, parts: Sequence[tuple[str, str, str]]) -> str | None:
    """Why weight ``name`` is not covered: the unsupported part it is, or belongs to (None:
    it belongs to none, so the forward does not multiply by it)."""
    for part, what, why in parts:
        if name == part or name.startswith(part + "."):
            return f"{what}: {why}"
    return None


def weight_coverage(
    model: nn.Module, catalogue: Sequence[LayerInfo], *, analysis: bool = False
) -> WeightCoverage:
    """The :class:`~pytorchfi_deepvigor.results.WeightCoverage` of ``model`` by ``catalogue``
    (a weight that a hook recomputes before each forward is not a fault site: not covered).
    ``analysis``: the coverage of the analysis, which skips the layers whose forward transforms
    their weight (fault injection runs them through that forward): their weights are then not
    covered, with the reason.

    Example:
        >>> from pytorchfi_deepvigor.catalogue import build_catalogue
        >>> class Tokens(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.pos = nn.Parameter(torch.zeros(1, 4, 8))
        ...         self.fc = nn.Linear(8, 3)
        ...     def forward(self, x):
        ...         return self.fc(x + self.pos).mean(1)
        >>> net = Tokens()
        >>> c = weight_coverage(net, build_catalogue(net, torch.zeros(2, 4, 8)))
        >>> c.covered, c.total, c.missing, [m.split(":")[0] for m in c.other]
        (24, 24, (), ['pos (32 elements)'])
    """
    skipped = {
        _memory(i.module.weight): f"{i.kind} layer not analysed: {i.weight_transform}"
        for i in catalogue
        if analysis and i.weight_transform and not i.weight_derived
    }
    fault_sites = {_memory(i.module.weight) for i in catalogue if not i.weight_derived}
    fault_sites -= skipped.keys()
    derived = {i.name for i in catalogue if i.weight_derived}
    modules = dict(model.named_modules())
    parts = unsupported_parts(model)
    total = covered = 0
    missing, other = [], []
    for name, t in weight_tensors(model):
        owner, _, attr = name.rpartition(".")
        reason = _reason(name, parts)
        if _memory(t) in fault_sites:
            total, covered = total + t.numel(), covered + t.numel()
        elif _memory(t) in skipped:
            total += t.numel()
            missing.append(f"{name} ({t.numel():,} elements): {skipped[_memory(t)]}")
        elif reason is not None or owner in derived:
            total += t.numel()
            missing.append(f"{name} ({t.numel():,} elements): {reason or DERIVED}")
        elif attr == "weight" and isinstance(modules.get(owner), SUPPORTED_LAYERS):
            total += t.numel()  # a Conv2d/Linear the forward never calls
            missing.append(f"{name} ({t.numel():,} elements): {NEVER_CALLED}")
        else:
            other.append(f"{name} ({t.numel():,} elements): {NOT_MULTIPLIED}")
    return WeightCoverage(total=total, covered=covered, missing=tuple(missing), other=tuple(other))
