"""Step 2 of DeepVigor+: the vulnerability-value search, vectorised over many searches.

One *search row* is one (target, image, sign). Its candidate set ``S`` is the VVSS of that
sign (the grid indices whose EDM bin is non-empty, see
:func:`~pytorchfi_deepvigor.functional.edm.search_members`) plus the first probe (``1.0``,
the paper's Fig. 6 box 6) whenever the VVSS is non-empty. The search returns the smallest
grid index in ``S`` whose candidate is critical, or ``K`` (none), assuming criticality is
monotone in the magnitude:

1. probe the first candidate (``1``) for every row with a non-empty ``S``;
2. if it is critical, bisect ``S ∩ (0, 1)``, else ``S ∩ (1, max]`` (boxes 7 and 8), with a real
   bisection (not the unit steps of the authors' code, which never probe the final index).

Adding ``1`` to ``S`` when it is not in the VVSS does not change the VF: no error lies in the bins
between ``1`` and the next member, so ``F(1) = F(next member)``. A row with an empty ``S`` needs
no probe at all (its mass is decided by the EDM alone).

Criticality is not always monotone in the error's magnitude: after a normalisation over
channels (GroupNorm, LayerNorm) a huge error saturates, and the class flips for errors between
``2^8`` and ``2^64`` but no longer beyond. :func:`checked_search` detects and handles that: after
the bisection it probes the largest member of every row whose bisection found a critical
candidate below it (the largest non-empty bin, one more oracle call for all such rows); where
that probe is not critical the monotone assumption failed, and every member above the bisection's
answer is probed (one call). A target (rows sharing a ``scope`` id: its images and signs) where
any row failed also has its rows without a critical candidate scanned, as a critical band may
lie between the bisection's probes; a row's answer never depends on which other targets share
the call. It returns the criticality of every candidate, not only the smallest
critical one, so the VF counts exactly the bins found critical.

Every bisection round is **one** oracle call carrying all unfinished rows, so the caller can
turn it into one batched forward of many (target, image, candidate) elements; finished rows
are not evaluated again. :func:`full_scan` probes every member and is the reference the tests
compare the bisection with.

Example:
    >>> members = torch.tensor([[True, True, False, True, False]])  # grid indices 0, 1, 3
    >>> threshold = torch.tensor([3])  # candidate g is critical iff g >= 3
    >>> res = bisect_search(members, lambda rows, g: g >= threshold[rows], first=2)
    >>> res.index.tolist(), res.probes.tolist()
    ([3], [2])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "Oracle",
    "SearchResult",
    "CheckedSearch",
    "bisect_search",
    "checked_search",
    "full_scan",
    "margin_loss",
    "runner_up_margin",
]

Oracle = Callable[[Tensor, Tensor], Tensor]
"""``oracle(rows, grid_idx) -> critical``: long ``(P,)``, long ``(P,)`` -> bool ``(P,)``."""


@dataclass(frozen=True)
class SearchResult:
    """Outcome of a batch of searches.

    Attributes:
        index: long ``(R,)``: grid index of the smallest critical candidate, ``K`` if none.
        probes: long ``(R,)``: candidates evaluated per row.
        rounds: oracle calls made (each one carries every unfinished row).
    """

    index: Tensor
    probes: Tensor
    rounds: int


def _check(members: Tensor, first: int | None) -> tuple[int, int]:
    if members.dim() != 2 or members.dtype != torch.bool:
        raise ValueError(
            f"expected bool members (R, K), got {members.dtype} {tuple(members.shape)}"
        )
    n_rows, k = members.shape
    if first is not None and not 0 <= first < k:
        raise ValueError(f"expected first in [0, {k}), got {first}")
    return n_rows, k


def _ask(oracle: Oracle, rows: Tensor, grid_idx: Tensor) -> Tensor:
    crit = oracle(rows, grid_idx)
    if crit.shape != rows.shape or crit.dtype != torch.bool:
        raise ValueError(
            f"oracle must return bool ({rows.numel()},), got {crit.dtype} {tuple(crit.shape)}"
        )
    return crit


def bisect_search(members: Tensor, oracle: Oracle, first: int | None = None) -> SearchResult:
    """Smallest critical member per row: a first probe, then bisection on one side of it.

    Args:
        members: bool ``(R, K)``: the candidates of each row (grid indices).
        oracle: evaluates a batch of (row, grid index) pairs; called once per round.
        first: grid index probed first in every row with a non-empty candidate set (the
            paper's ``1``); ``None`` bisects the whole set from the start.

    Returns:
        :class:`SearchResult`.
    """
    n_rows, k = _check(members, first)
    dev = members.device
    cand = members.clone()
    nonempty = cand.any(dim=1)
    if first is not None:
        cand[nonempty, first] = True
    n = cand.sum(dim=1)
    ar = torch.arange(k, device=dev)
    table = torch.sort(torch.where(cand, ar, k + ar), dim=1).values.clamp_max(k)  # rank -> g
    table = torch.cat([table, torch.full((n_rows, 1), k, device=dev)], dim=1)
    lo = torch.zeros(n_rows, dtype=torch.long, device=dev)
    hi = n.clone()  # the answer's rank lies in [lo, hi]; rank n means none
    probes = torch.zeros(n_rows, dtype=torch.long, device=dev)
    rounds = 0
    if first is not None and bool(nonempty.any()):
        rows = nonempty.nonzero().squeeze(1)
        crit = _ask(oracle, rows, torch.full_like(rows, first))
        rank = cand[rows, :first].sum(dim=1)
        hi[rows] = torch.where(crit, rank, hi[rows])
        lo[rows] = torch.where(crit, lo[rows], rank + 1)
        probes[rows] += 1
        rounds += 1
    while True:
        rows = (lo < hi).nonzero().squeeze(1)
        if rows.numel() == 0:
            break
        mid = (lo[rows] + hi[rows]) // 2
        crit = _ask(oracle, rows, table[rows, mid])
        hi[rows] = torch.where(crit, mid, hi[rows])
        lo[rows] = torch.where(crit, lo[rows], mid + 1)
        probes[rows] += 1
        rounds += 1
    index = table.gather(1, lo.unsqueeze(1)).squeeze(1)
    return SearchResult(index=index, probes=probes, rounds=rounds)


@dataclass(frozen=True)
class CheckedSearch:
    """Outcome of :func:`checked_search`.

    Attributes:
        index: long ``(R,)``: the bisection's smallest critical candidate (``K`` if none).
        critical: bool ``(R, K)``: whether the bin of candidate ``g`` is critical. Exact for the
            probed members; for rows that passed the check, every candidate from ``index`` on.
        probes: long ``(R,)``: candidates evaluated per row (bisection, check and scans).
        rounds: oracle calls made.
        non_monotone: bool ``(R,)``: rows whose largest member contradicted the bisection.
        scanned: bool ``(R,)``: rows whose members were all probed.
    """

    index: Tensor
    critical: Tensor
    probes: Tensor
    rounds: int
    non_monotone: Tensor
    scanned: Tensor


def checked_search(
    members: Tensor, oracle: Oracle, first: int | None = None, scope: Tensor | None = None
) -> CheckedSearch:
    """:func:`bisect_search`, then a check of the largest member and scans where it fails.

    Args:
        members: bool ``(R, K)``: the candidates of each row.
        oracle: evaluates a batch of (row, grid index) pairs.
        first: the first probe (see :func:`bisect_search`).
        scope: long ``(R,)``: the target of each row; rows without a critical candidate are
            scanned where a row of the same target failed the check. ``None``: every row is
            its own target.

    Returns:
        :class:`CheckedSearch`.
    """
    n_rows, k = _check(members, first)
    res = bisect_search(members, oracle, first)
    ar = torch.arange(k, device=members.device)
    critical = ar.view(1, -1) >= res.index.view(-1, 1)
    probes, rounds = res.probes.clone(), res.rounds
    largest = torch.where(members, ar, -1).amax(dim=1) if k else torch.full((n_rows,), -1)
    check = (largest > res.index) & (res.index < k)
    non_monotone = torch.zeros(n_rows, dtype=torch.bool, device=members.device)
    rows = check.nonzero().squeeze(1)
    if rows.numel():
        crit = _ask(oracle, rows, largest[rows])
        probes[rows] += 1
        rounds += 1
        non_monotone[rows] = ~crit
    scan = non_monotone.clone()
    if scope is not None and bool(non_monotone.any()):
        failed = torch.zeros(int(scope.max()) + 1, dtype=torch.bool, device=scope.device)
        failed[scope[non_monotone]] = True
        scan |= failed[scope] & (res.index >= k)  # a band may hide between the probes
    found = res.index < k
    above = ar.view(1, -1) > torch.where(found, res.index, -1).view(-1, 1)
    want = members & scan.view(-1, 1) & above
    want[rows, largest[rows]] = False  # probed by the check
    if bool(scan.any()):
        critical[scan] = False
        hit = scan & found
        critical[hit, res.index[hit]] = True
    rows_s, g_s = want.nonzero(as_tuple=True)
    if rows_s.numel():
        critical[rows_s, g_s] = _ask(oracle, rows_s, g_s)
        probes += want.sum(dim=1)
        rounds += 1
    return CheckedSearch(res.index, critical, probes, rounds, non_monotone, scan)


def full_scan(members: Tensor, oracle: Oracle, first: int | None = None) -> SearchResult:
    """Reference search: probe every candidate of every row (one oracle call), take the smallest.

    Uses the same candidate set as :func:`bisect_search` (members plus ``first`` for non-empty
    rows) and does not assume monotonicity.
    """
    n_rows, k = _check(members, first)
    cand = members.clone()
    if first is not None:
        cand[cand.any(dim=1), first] = True
    rows, g = cand.nonzero(as_tuple=True)
    crit = torch.zeros_like(cand)
    if rows.numel():
        crit[rows, g] = _ask(oracle, rows, g)
    ar = torch.arange(k, device=members.device)
    index = torch.where(crit, ar, k).amin(dim=1) if k else torch.zeros(n_rows, dtype=torch.long)
    return SearchResult(index=index, probes=cand.sum(dim=1), rounds=int(rows.numel() > 0))


def runner_up_margin(logits: Tensor, golden_top1: Tensor) -> Tensor:
    """Per image, the golden class's logit minus the largest other logit: the class flips at 0.

    Args:
        logits: ``(B, classes)``.
        golden_top1: long ``(B,)``.

    Returns:
        ``(B,)``.
    """
    top = logits.gather(1, golden_top1.view(-1, 1)).squeeze(1)
    others = logits.scatter(1, golden_top1.view(-1, 1), float("-inf"))
    return top - others.amax(dim=1)


def margin_loss(logits: Tensor, golden_top1: Tensor) -> Tensor:
    """The paper's loss (Fig. 6 box 3) per image: sum over classes of ``E_golden - E_j``.

    Its gradient with respect to an injected value is zero exactly when no small change of that
    value moves any logit relative to the golden class (e.g. a neuron behind a dead ReLU).

    Args:
        logits: ``(B, classes)``.
        golden_top1: long ``(B,)``.

    Returns:
        ``(B,)``.
    """
    top = logits.gather(1, golden_top1.view(-1, 1))
    return (top - logits).sum(dim=1)
