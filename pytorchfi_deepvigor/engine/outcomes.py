"""What a faulty inference did: the outcome classes, the classification of logits, the
engine's work counters."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch

__all__ = ["Outcome", "EngineStats", "classify"]

_MASK_RTOL = 1e-5


class Outcome(enum.IntEnum):
    """What a fault did to one inference."""

    MASKED = 0
    SDC = 1
    CRITICAL = 2
    DUE = 3


@dataclass
class EngineStats:
    """Monotone counters of the work the engine did.

    ``batched_forwards`` counts suffix (or full) forward calls, ``image_evaluations`` the batch
    elements they evaluated (one outcome each); one batched forward of the analysis batch is a
    "simulation" in the paper's sense. ``early_exits`` counts the evaluations that stopped at a
    checkpoint because the fault was already masked there, and ``suffix_flops`` the convolution
    and linear FLOPs (2 x MACs) the suffix forwards actually executed.
    """

    batched_forwards: int = 0
    image_evaluations: int = 0
    early_exits: int = 0
    suffix_flops: float = 0.0

    def snapshot(self) -> EngineStats:
        return EngineStats(
            self.batched_forwards, self.image_evaluations, self.early_exits, self.suffix_flops
        )

    def __sub__(self, other: EngineStats) -> EngineStats:
        return EngineStats(
            self.batched_forwards - other.batched_forwards,
            self.image_evaluations - other.image_evaluations,
            self.early_exits - other.early_exits,
            self.suffix_flops - other.suffix_flops,
        )


def classify(logits: torch.Tensor, golden_logits: torch.Tensor) -> torch.Tensor:
    """Outcome codes (int8) of ``logits`` against the golden logits of the same images."""
    finite = torch.isfinite(logits).all(dim=1)
    critical = logits.argmax(dim=1) != golden_logits.argmax(dim=1)
    scale = golden_logits.abs().amax(dim=1).clamp_min(1.0)
    diff = (logits - golden_logits).abs().amax(dim=1)
    masked = diff <= _MASK_RTOL * scale
    out = torch.full(logits.shape[:1], int(Outcome.SDC), dtype=torch.int8, device=logits.device)
    out[masked] = int(Outcome.MASKED)
    out[critical] = int(Outcome.CRITICAL)
    out[~finite] = int(Outcome.DUE)
    return out
