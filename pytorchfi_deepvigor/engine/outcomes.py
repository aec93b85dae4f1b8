"""What a faulty inference did: the outcome classes, the classification of logits, their
fingerprints, the engine's work counters."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch

__all__ = ["Outcome", "EngineStats", "classify", "fingerprint"]

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


_PRIME = 2097143  # the largest prime below 2^21: the fingerprint's hashes are taken modulo it
_HASHES = 3  # three hashes of 21 bits: a 63-bit key
_HALVES = 1 << 16  # 16-bit halves summed at once: |sum| < 2^16 * 2^15 * 2^21 = 2^52, exact
_FINGERPRINT_CELLS = 1 << 16  # logits hashed at once: the temporaries stay at a few MiB
_COEFFICIENTS: dict[tuple[int, str], torch.Tensor] = {}


def _coefficients(n: int, device: torch.device) -> torch.Tensor:
    """Fixed pseudo-random coefficients in ``[0, p)``: float64 ``(3, n)``, one row per hash."""
    key = (n, str(device))
    if key not in _COEFFICIENTS:
        gen = torch.Generator().manual_seed(0x5EED)
        coef = torch.randint(0, _PRIME, (_HASHES, n), generator=gen, dtype=torch.float64)
        _COEFFICIENTS[key] = coef.to(device)
    return _COEFFICIENTS[key]


def fingerprint(logits: torch.Tensor) -> torch.Tensor:
    """A 63-bit key of each row's bytes: what deciding "same outcome" needs, not the logits.

    Rows that are bitwise equal (``-0.0`` differs from ``0.0``, NaN payloads count) get equal
    keys; two rows that differ get equal keys with a probability of about ``2^-63``. The key
    holds three hashes modulo the prime ``p`` just below ``2^21`` of the row's 16-bit halves
    (signed), each the sum of the halves times fixed coefficients in ``[0, p)``: two rows whose
    halves differ by a vector ``delta`` (entries below ``2^16`` in magnitude, so not multiples
    of ``p``) collide in one hash for a ``1 / p`` share of the coefficient vectors. The sums
    are of integers below ``2^53`` in magnitude, so a float64 matrix product computes them
    exactly, in any order: the same keys on every device.

    Args:
        logits: float32 ``(B, classes)``.

    Returns:
        int64 ``(B,)``.

    Example:
        >>> a = torch.tensor([[1.0, 2.0], [0.0, 2.0], [-0.0, 2.0]])
        >>> k = fingerprint(a); bool(k[0] != k[1]), bool(k[1] != k[2])
        (True, True)
        >>> bool(fingerprint(a.clone()).equal(k))
        True
    """
    if logits.dim() != 2 or logits.dtype != torch.float32:
        raise ValueError(
            f"expected float32 logits (B, classes), got {logits.dtype} {tuple(logits.shape)}"
        )
    n_rows, n_cls = logits.shape
    coef = _coefficients(2 * n_cls, logits.device)
    keys = torch.empty(n_rows, dtype=torch.int64, device=logits.device)
    step = max(1, _FINGERPRINT_CELLS // max(1, n_cls))
    for a in range(0, n_rows, step):
        halves = logits[a : a + step].contiguous().view(torch.int16).double()  # (b, 2C)
        h = halves.new_zeros(_HASHES, halves.shape[0])
        for c in range(0, 2 * n_cls, _HALVES):  # exact sums, reduced a block at a time
            h += (coef[:, c : c + _HALVES] @ halves[:, c : c + _HALVES].T).remainder_(_PRIME)
        h = h.remainder_(_PRIME).long()
        keys[a : a + step] = (h[0] << 42) | (h[1] << 21) | h[2]
    return keys
