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
``2^8`` and ``2^64`` but no longer beyond. :func:`checked_search` detects and handles that: it
probes the largest member of every row first (the largest non-empty bin); where that is not
critical and the bisection still finds a critical candidate below it, the monotone assumption
failed, and every member above the bisection's answer is probed (one call; a large scan in
calls of at most :data:`SCAN_PROBES` pairs). A target (rows sharing a ``scope`` id: its images
and signs) where any row failed also has its rows without a critical candidate scanned, as a
critical band may lie between the bisection's probes; a row's answer never depends on which
other targets share the call. Given the outcomes' fingerprints (one int64 key per outcome),
a row whose bisection meets the largest member's very outcome stops there (saturation; see
:func:`checked_search`). It returns the criticality of every candidate, not only the smallest
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
    "SCAN_PROBES",
    "bisect_search",
    "checked_search",
    "full_scan",
    "guided_search",
    "margin_loss",
    "runner_up_margin",
]

Oracle = Callable[[Tensor, Tensor], "Tensor | tuple[Tensor, Tensor]"]
"""``oracle(rows, grid_idx) -> critical``: long ``(P,)``, long ``(P,)`` -> bool ``(P,)``; for
:func:`checked_search` optionally ``(critical, fingerprint)`` with an int64 ``(P,)`` key of each
outcome, equal exactly where the outcomes are bitwise equal (a hash of the logits' bytes:
:func:`~pytorchfi_deepvigor.engine.outcomes.fingerprint`; a search keeps one key per row, never
the logits)."""

_TABLE_CELLS = 1 << 20  # (row, candidate) cells sorted at once building a rank table

SCAN_PROBES = 1 << 18
"""Probes per oracle call of :func:`checked_search`'s scan: the scan of a large group is
issued in calls of at most this many (row, candidate) pairs, so the oracle's work and answers
stay bounded whatever the number of rows and candidates."""


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
    return _ask_fp(oracle, rows, grid_idx)[0]


def _ask_fp(oracle: Oracle, rows: Tensor, grid_idx: Tensor) -> tuple[Tensor, Tensor | None]:
    """The oracle's answer and, where it gives one, the fingerprint of each outcome."""
    out = oracle(rows, grid_idx)
    fp = None
    if isinstance(out, tuple):
        out, fp = out
        if fp.shape != rows.shape or fp.dtype != torch.int64:
            raise ValueError(
                f"oracle fingerprints must be int64 ({rows.numel()},), got {fp.dtype} "
                f"{tuple(fp.shape)}"
            )
    if out.shape != rows.shape or out.dtype != torch.bool:
        raise ValueError(
            f"oracle must return bool ({rows.numel()},), got {out.dtype} {tuple(out.shape)}"
        )
    return out, fp


def _rank_table(cand: Tensor) -> Tensor:
    """Per row, the grid indices of its candidates in increasing order, then ``K`` (none).

    ``(R, K + 1)``: int16 (int32 from ``K = 2^15 - 1`` on), sorted a block of rows at a time,
    so building it costs a few bytes per (row, candidate), not the 8 of a long.
    """
    n_rows, k = cand.shape
    dtype = torch.int16 if k < 2**15 - 1 else torch.int32
    table = torch.full((n_rows, k + 1), k, dtype=dtype, device=cand.device)
    ar = torch.arange(k, dtype=dtype, device=cand.device)
    none = torch.tensor(k, dtype=dtype, device=cand.device)
    step = max(1, _TABLE_CELLS // max(1, k))
    for a in range(0, n_rows, step):
        table[a : a + step, :k] = torch.sort(torch.where(cand[a : a + step], ar, none)).values
    return table


def _largest(members: Tensor) -> Tensor:
    """The largest member of each row, ``-1`` for an empty row: long ``(R,)``."""
    n_rows, k = members.shape
    if not k:
        return torch.full((n_rows,), -1, dtype=torch.long, device=members.device)
    last = k - 1 - members.flip(1).to(torch.uint8).argmax(dim=1)  # the first maximum's index
    return torch.where(members.any(dim=1), last, -1)


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
    table = _rank_table(cand)  # rank -> g
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
        crit = _ask(oracle, rows, table[rows, mid].long())
        hi[rows] = torch.where(crit, mid, hi[rows])
        lo[rows] = torch.where(crit, lo[rows], mid + 1)
        probes[rows] += 1
        rounds += 1
    index = table.gather(1, lo.unsqueeze(1)).squeeze(1).long()
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
    members: Tensor,
    oracle: Oracle,
    first: int | None = None,
    scope: Tensor | None = None,
    start: Tensor | None = None,
    floor: Tensor | None = None,
    bisect_uncritical: bool = False,
    confirm: bool = False,
    sibling_margin: int | None = None,
) -> CheckedSearch:
    """The largest member first, then :func:`bisect_search` below it, and scans where they disagree.

    Args:
        members: bool ``(R, K)``: the candidates of each row.
        oracle: evaluates a batch of (row, grid index) pairs; it may return ``(critical,
            fingerprint)``, an int64 ``(P,)`` key of each outcome (see :data:`Oracle`), which
            lets a row stop early where the outcome is saturated (see below).
        first: the first probe of the bisection (see :func:`bisect_search`); with ``start``, of
            the rows bisected only (without a guess, or with ``bisect_uncritical`` and a largest
            member not critical); a candidate of every non-empty row either way.
        scope: long ``(R,)``: the target of each row; rows without a critical candidate are
            scanned where a row of the same target failed the check. ``None``: every row is
            its own target.
        start: long ``(R,)``: a guess of each row's answer, as a rank among its members (the
            number of members below it; ``-1``: none). The search probes it first and gallops
            from there (steps of 1, 2, 4, ... away from it until the answer is bracketed, then
            bisects the bracket): two probes where the guess is right, instead of a bisection's
            ``log2`` of the members. That is where the largest member is critical; where it
            is not (monotone: none is critical), ``floor`` and the guess are probed alone:
            one critical reveals a band below the largest member, bisected and scanned as
            below; neither, the row ends with none (no bisection: its probes would only find a
            band by chance, where the guesses stand for where bands start). With monotone
            criticality the answer does not depend on the guesses, only the probes spent.
        floor: long ``(R,)``: with ``start``, a lower guess (e.g. the lowest answer seen
            elsewhere), probed first where the largest member is not critical.
        bisect_uncritical: with ``start``, rows whose largest member is not critical are
            searched as without a guess (the bisection, and the scan of a band it finds),
            instead of probing ``floor`` and the guess alone.
        confirm: with ``start``, where the gallop brackets an answer below a critical
            largest member, the member halfway between them is probed: not critical,
            criticality is not monotone there (an isolated critical member near the guess)
            and the search goes on above it, where the bisection's first probes would have
            looked.
        sibling_margin: with ``scope``, how far below its target's band a row that found no
            critical candidate is scanned: from ``sibling_margin`` candidates below the lowest
            critical candidate of the target's non-monotone rows (the band's start) up to its
            largest member. ``None``: every member (the whole row).

    Returns:
        :class:`CheckedSearch`.

    The largest member ``L`` of every non-empty row is probed first. Where it is critical, the
    bisection runs below it (``L`` is not probed again). Where it is not, the bisection runs as
    usual, and a critical candidate found below ``L`` contradicts monotonicity: that row is
    scanned, and so are the rows of its target that found none. With fingerprints, a bisection
    probe that is not critical and gives *bitwise the same* outcome as ``L`` ends its row with
    no critical candidate: the error's effect is saturated from there to ``L`` (a ReLU that the
    error shuts for every position of the channel shuts it for every larger error of that sign
    too, so every candidate between gives that same outcome), and below the probe the
    bisection's monotone assumption holds as for any non-critical probe. Without the
    shortcut such a row (the negative errors of a channel followed by a ReLU: about half the
    weight searches of a ReLU network) walks the bisection up to ``L`` one probe at a time.
    """
    n_rows, k = _check(members, first)
    dev = members.device
    ar = torch.arange(k, device=dev)
    largest = _largest(members)
    probes = torch.zeros(n_rows, dtype=torch.long, device=dev)
    top = torch.zeros(n_rows, dtype=torch.bool, device=dev)
    top_fp: Tensor | None = None
    rounds = 0
    rows = (largest >= 0).nonzero().squeeze(1)
    if rows.numel():
        crit, fp = _ask_fp(oracle, rows, largest[rows])
        top[rows] = crit
        if fp is not None:
            top_fp = fp.new_zeros(n_rows)
            top_fp[rows] = fp
        probes[rows] += 1
        rounds += 1
    # the bisection over members (plus ``first``), knowing the answer at L
    cand = members.clone()
    nonempty = cand.any(dim=1)
    if first is not None:
        cand[nonempty, first] = True
    n = cand.sum(dim=1)
    table = _rank_table(cand)
    rank_top = torch.where(
        largest >= 0, (cand & (ar.view(1, -1) < largest.view(-1, 1))).sum(dim=1), -1
    )
    lo = torch.zeros(n_rows, dtype=torch.long, device=dev)
    hi = torch.where(top, rank_top, n)  # the answer's rank lies in [lo, hi]; n means none

    def step(rows: Tensor, rank: Tensor) -> Tensor:
        nonlocal rounds
        crit = top[rows] & (rank == rank_top[rows])  # known at L
        ask = rank != rank_top[rows]
        saturated = torch.zeros_like(crit)
        if bool(ask.any()):
            r = rows[ask]
            c, fp = _ask_fp(oracle, r, table[r, rank[ask]].long())
            crit[ask] = c
            probes[r] += 1
            rounds += 1
            if fp is not None and top_fp is not None:
                saturated[ask] = ~c & (fp == top_fp[r]) & ~top[r]
        hi[rows] = torch.where(crit, rank, hi[rows])
        lo[rows] = torch.where(crit, lo[rows], rank + 1)
        done = rows[saturated]
        lo[done], hi[done] = n[done], n[done]
        return crit

    if first is not None and bool(nonempty.any()):  # with guesses, the rows bisected
        ask = nonempty & (lo < hi)
        if start is not None:
            ask &= (start.to(dev) < 0) | (~top if bisect_uncritical else False)
        rows = ask.nonzero().squeeze(1)
        step(rows, cand[rows, :first].sum(dim=1))
    if start is not None:
        start = start.to(dev)
        _gallop(torch.where(top | (largest < 0), start, -1), lo, hi, step)
        if confirm:
            rows = (top & (start >= 0) & (lo == hi)).nonzero().squeeze(1)
            mid = (lo[rows] + rank_top[rows]) // 2
            keep = (mid > lo[rows]) & (mid < rank_top[rows])
            rows, mid = rows[keep], mid[keep]
            if rows.numel():
                answer = lo[rows].clone()
                crit = step(rows, mid)
                lo[rows] = torch.where(crit, answer, mid + 1)
                hi[rows] = torch.where(crit, answer, rank_top[rows])
        spot = ((start >= 0) & (largest >= 0) & ~top & (lo < hi)).nonzero().squeeze(1)
        if bisect_uncritical:
            spot = spot[:0]
        low = start if floor is None else torch.minimum(floor.to(dev), start)
        for guess in (low, start):  # the largest member is not critical: probe the guesses
            ask = spot[(guess[spot] >= lo[spot]) & (guess[spot] < rank_top[spot])]
            ask = ask[hi[ask] == n[ask]]  # no critical one found yet
            if ask.numel():
                step(ask, guess[ask])
        none = spot[hi[spot] == n[spot]]  # neither critical: none
        lo[none] = n[none]
    while True:
        rows = (lo < hi).nonzero().squeeze(1)
        if rows.numel() == 0:
            break
        step(rows, (lo[rows] + hi[rows]) // 2)
    index = table.gather(1, lo.unsqueeze(1)).squeeze(1).long()
    found = index < k
    critical = ar.view(1, -1) >= index.view(-1, 1)
    non_monotone = found & ~top & (largest > index)
    scan = non_monotone.clone()
    floor_g = torch.zeros(n_rows, dtype=torch.long, device=dev)
    if scope is not None and bool(non_monotone.any()):
        failed = torch.zeros(int(scope.max()) + 1, dtype=torch.bool, device=scope.device)
        failed[scope[non_monotone]] = True
        scan |= failed[scope] & ~found  # a band may hide between the probes
        if sibling_margin is not None:  # from below where the target's bands start
            band = torch.full((failed.numel(),), k, dtype=torch.long, device=dev)
            band.scatter_reduce_(0, scope[non_monotone], index[non_monotone], reduce="amin")
            floor_g = torch.where(non_monotone, 0, (band[scope] - sibling_margin).clamp_min(0))
    left = scan.nonzero().squeeze(1)  # the rows to scan: every member above the answer
    if left.numel():
        critical[left] = False
        hit = scan & found
        critical[hit, index[hit]] = True
        top_rows = (scan & (largest >= 0)).nonzero().squeeze(1)
        critical[top_rows, largest[top_rows]] = top[top_rows]
    answer = torch.where(found, index, -1)[left]
    want = members[left] & (ar.view(1, -1) > answer.view(-1, 1))  # (S, K): scanned rows only
    want &= ar.view(1, -1) >= floor_g[left].view(-1, 1)
    tops = largest[left]
    want[(tops >= 0).nonzero().squeeze(1), tops[tops >= 0]] = False  # probed first
    per_row = want.sum(dim=1)
    probes[left] += per_row
    keep = per_row > 0
    left, want = left[keep], want[keep]
    ends = per_row[keep].cumsum(0)  # asked in calls of whole rows, about SCAN_PROBES pairs each
    a = 0
    while a < left.numel():
        before = int(ends[a - 1]) if a else 0
        b = max(a + 1, int(torch.searchsorted(ends, before + SCAN_PROBES, right=True)))
        sub, g_s = want[a:b].nonzero(as_tuple=True)
        rows_s = left[a:b][sub]
        critical[rows_s, g_s] = _ask_fp(oracle, rows_s, g_s)[0]
        rounds += 1
        a = b
    return CheckedSearch(index, critical, probes, rounds, non_monotone, scan)


MIN_GUESSED = 16
"""Candidates a row of :func:`guided_search` needs for its guess to be probed: below, its
bisection costs at most four probes, about what a guess two ranks off costs."""


def guided_search(
    members: Tensor,
    oracle: Oracle,
    group: Tensor,
    guide: Tensor,
    first: int | None = None,
    scope: Tensor | None = None,
    sibling_margin: int | None = None,
) -> CheckedSearch:
    """:func:`checked_search` in two stages: the ``guide`` rows first, then the others galloping
    from their group's median answer.

    Rows of one ``group`` (e.g. one target and sign on every image) tend to find criticality at
    similar magnitudes. The guide rows are searched as :func:`checked_search` does; each other
    row then starts from the rank, among its own candidates, of its group's median critical
    grid index (a value, as the rows' members differ), so where the guess is right two probes
    replace a bisection's ``log2`` of the members. A row whose largest member is not critical
    is searched as without a guess, and so is every row of a group without a guide answer, of
    a ``scope`` (target) where a guide row was not monotone, or of fewer than
    :data:`MIN_GUESSED` candidates: under monotone criticality the
    answers are those of :func:`checked_search`, only the probes differ. ``first`` is a
    candidate of every non-empty row in both stages, probed first by the rows without a guess.

    Args:
        members: bool ``(R, K)``: the candidates of each row.
        oracle: as for :func:`checked_search`.
        group: long ``(R,)``: the rows that share a guess.
        guide: bool ``(R,)``: the rows searched first.
        first, scope, sibling_margin: as for :func:`checked_search` (each stage checks its own
            rows' scopes).

    Returns:
        :class:`CheckedSearch` of all rows.
    """
    n_rows, k = _check(members, first)
    dev = members.device
    guide = guide.to(dev)
    g_rows, o_rows = guide.nonzero().squeeze(1), (~guide).nonzero().squeeze(1)

    def sub(rows: Tensor) -> Oracle:
        return lambda r, g: oracle(rows[r], g)

    def part(rows: Tensor) -> Tensor | None:
        return None if scope is None else scope.to(dev)[rows]

    a = checked_search(members[g_rows], sub(g_rows), first=first, scope=part(g_rows),
                       sibling_margin=sibling_margin)  # fmt: skip
    index = torch.full((n_rows,), k, dtype=torch.long, device=dev)
    critical = torch.zeros_like(members)
    probes = torch.zeros(n_rows, dtype=torch.long, device=dev)
    non_monotone = torch.zeros(n_rows, dtype=torch.bool, device=dev)
    scanned = torch.zeros_like(non_monotone)

    def put(rows: Tensor, res: CheckedSearch) -> None:
        index[rows], critical[rows], probes[rows] = res.index, res.critical, res.probes
        non_monotone[rows], scanned[rows] = res.non_monotone, res.scanned

    put(g_rows, a)
    if o_rows.numel() == 0:
        return CheckedSearch(index, critical, probes, a.rounds, non_monotone, scanned)
    group = group.to(dev)
    n_groups = int(group.max()) + 1
    found = a.index < k
    guess = torch.full((n_groups,), -1, dtype=torch.long, device=dev)
    if bool(found.any()):  # the lower median of each group's critical grid indices
        gi, vals = group[g_rows][found], a.index[found]
        order = torch.argsort(gi * (k + 1) + vals)
        gi, vals = gi[order], vals[order]
        n_found = torch.bincount(gi, minlength=n_groups)
        ends = n_found.cumsum(0)
        has = n_found > 0
        guess[has] = vals[(ends - n_found + (n_found - 1) // 2)[has]]
    if scope is not None and bool(a.non_monotone.any()):  # not monotone: no guesses there
        sc = scope.to(dev)
        bad = torch.zeros(int(sc.max()) + 1, dtype=torch.bool, device=dev)
        bad[sc[g_rows][a.non_monotone]] = True
        guess[group[bad[sc]]] = -1
    cand = members[o_rows].clone()
    if first is not None:
        cand[cand.any(dim=1), first] = True
    g = guess[group[o_rows]]
    ar = torch.arange(k, device=dev)
    start = torch.where(g >= 0, (cand & (ar.view(1, -1) < g.view(-1, 1))).sum(dim=1), -1)
    start[cand.sum(dim=1) < MIN_GUESSED] = -1  # a short bisection: cheaper than a wrong guess
    b = checked_search(members[o_rows], sub(o_rows), first=first, scope=part(o_rows),
                       start=start, bisect_uncritical=True, sibling_margin=sibling_margin)  # fmt: skip
    put(o_rows, b)
    return CheckedSearch(index, critical, probes, a.rounds + b.rounds, non_monotone, scanned)


def _gallop(
    start: Tensor, lo: Tensor, hi: Tensor, step: Callable[[Tensor, Tensor], Tensor]
) -> None:
    """Narrow ``[lo, hi]`` around each row's guessed rank ``start`` (``-1``: no guess): probe
    the guess, then ranks 1, 2, 4, ... away from it, down while critical, up while not, until
    the answer is bracketed (``step(rows, rank)`` probes and updates ``lo``/``hi``)."""
    rows = ((start >= 0) & (lo < hi)).nonzero().squeeze(1)
    down = torch.zeros_like(start, dtype=torch.bool)
    gap = torch.ones_like(start)
    if rows.numel():
        rank = torch.minimum(torch.maximum(start[rows], lo[rows]), hi[rows] - 1)
        down[rows] = step(rows, rank)
    while rows.numel():
        rows = rows[lo[rows] < hi[rows]]
        if rows.numel() == 0:
            break
        d = down[rows]
        rank = torch.where(d, hi[rows] - gap[rows], lo[rows] + gap[rows] - 1)
        rank = torch.minimum(torch.maximum(rank, lo[rows]), hi[rows] - 1)
        crit = step(rows, rank)
        gap[rows] *= 2
        rows = rows[crit == d]  # still on the guess's side: gallop on; else bracketed


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
