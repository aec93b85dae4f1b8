"""How much of a model's weight memory the analysis and fault injection cover, as a number.

A bit flip in memory does not care whether PyTorch calls a tensor a parameter or a buffer, nor
which module applies it. The weights of a model are every floating-point parameter or buffer
of two or more dimensions; a result covers those of its catalogued Conv2d/Linear layers (their
fault sites) and names each other tensor with its size and the reason (from
:func:`~pytorchfi_deepvigor.catalogue.unsupported_parts`, or :data:`NOT_MULTIPLIED`: a layer
scale, a position embedding, a class token).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from pytorchfi_deepvigor.catalogue import LayerInfo, unsupported_parts
from pytorchfi_deepvigor.results import WeightCoverage

__all__ = ["NOT_MULTIPLIED", "weight_coverage", "weight_tensors"]

NOT_MULTIPLIED = (
    "not the weight of a catalogued Conv2d/Linear: the forward scales by it elementwise, adds, "
    "indexes or transforms it (a layer scale, a position embedding, a class token, a bias "
    "table, the factors of a weight norm)"
)


def weight_tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Every floating-point parameter and buffer of two or more dimensions, once each."""
    seen: set[int] = set()
    for name, t in (*model.named_parameters(), *model.named_buffers()):
        if id(t) in seen or not t.is_floating_point() or t.dim() < 2:
            continue
        seen.add(id(t))
        yield name, t


def _reason(name: str, parts: Sequence[tuple[str, str, str]]) -> str:
    """Why tensor ``name`` is not covered: the unsupported part it is, or belongs to."""
    for part, what, why in parts:
        if name == part or name.startswith(part + "."):
            return f"{what}: {why}"
    return NOT_MULTIPLIED


def weight_coverage(model: nn.Module, catalogue: Sequence[LayerInfo]) -> WeightCoverage:
    """The :class:`~pytorchfi_deepvigor.results.WeightCoverage` of ``model`` by ``catalogue``
    (a weight that a hook recomputes before each forward is not a fault site: not covered).

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
        >>> c.covered, c.total, [m.split(":")[0] for m in c.missing]
        (24, 56, ['pos (32 elements)'])
    """
    fault_sites = {id(i.module.weight) for i in catalogue if not i.weight_derived}
    parts = unsupported_parts(model)
    total = covered = 0
    missing = []
    for name, t in weight_tensors(model):
        total += t.numel()
        if id(t) in fault_sites:
            covered += t.numel()
        else:
            missing.append(f"{name} ({t.numel():,} elements): {_reason(name, parts)}")
    return WeightCoverage(total=total, covered=covered, missing=tuple(missing))
