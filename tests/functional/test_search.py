"""The vectorised bisection against a full scan, on monotone and hand-made oracles."""

from __future__ import annotations

import math

import pytest
import torch

from pytorchfi_deepvigor.functional import search
from pytorchfi_deepvigor.functional.search import (
    bisect_search,
    checked_search,
    full_scan,
    margin_loss,
    runner_up_margin,
)

K = 28
ONE = 10  # grid index of 1.0 in both grids


def random_rows(seed: int, n_rows: int = 400) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    members = torch.rand(n_rows, K, generator=gen) < torch.rand(n_rows, 1, generator=gen)
    members[:, -1] = False
    threshold = torch.randint(0, K + 1, (n_rows,), generator=gen)  # K: never critical
    return members, threshold


class CountingOracle:
    """Monotone oracle ``g >= threshold[row]`` that records every probe."""

    def __init__(self, threshold: torch.Tensor) -> None:
        self.threshold = threshold
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, rows: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        self.calls.append((rows, g))
        return g >= self.threshold[rows]


@pytest.mark.parametrize("first", [ONE, None], ids=["probe-one-first", "plain-bisection"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bisection_equals_full_scan_on_monotone_oracles(first: int | None, seed: int) -> None:
    members, threshold = random_rows(seed)
    oracle = CountingOracle(threshold)
    fast = bisect_search(members, oracle, first=first)
    slow = full_scan(members, CountingOracle(threshold), first=first)
    assert fast.index.equal(slow.index)
    # and both are the smallest candidate at or above the threshold
    cand = members.clone()
    if first is not None:
        cand[members.any(1), first] = True
    for r in range(members.shape[0]):
        above = [g for g in cand[r].nonzero().flatten().tolist() if g >= threshold[r]]
        assert fast.index[r] == (above[0] if above else K)
    # each (row, candidate) is probed at most once, and only candidates of that row
    rows = torch.cat([c[0] for c in oracle.calls])
    gs = torch.cat([c[1] for c in oracle.calls])
    assert cand[rows, gs].all()
    assert len(set(zip(rows.tolist(), gs.tolist(), strict=True))) == rows.numel()
    # bisection cost: at most 1 + ceil(log2(n + 1)) probes per row
    n = cand.sum(1).float()
    bound = (first is not None) + torch.ceil(torch.log2(n + 1))
    assert (fast.probes <= bound).all()
    assert fast.rounds == len(oracle.calls) <= 1 + math.ceil(math.log2(K + 1))


def test_empty_rows_need_no_probe() -> None:
    members = torch.zeros(3, K, dtype=torch.bool)
    res = bisect_search(members, lambda r, g: torch.ones_like(r, dtype=torch.bool), first=ONE)
    assert res.index.tolist() == [K] * 3 and res.probes.tolist() == [0] * 3 and res.rounds == 0


def test_first_probe_decides_the_side() -> None:
    members = torch.zeros(2, K, dtype=torch.bool)
    members[:, [2, 5, 14, 20]] = True
    # row 0: critical from g = 5 on -> 1.0 is critical, search (0, 1); row 1: only from 20
    threshold = torch.tensor([5, 20])
    res = bisect_search(members, CountingOracle(threshold), first=ONE)
    assert res.index.tolist() == [5, 20]
    # 1 is critical for row 0 but not a member: VV may be reported at 1 when no member below is
    res = bisect_search(members, CountingOracle(torch.tensor([8, 27])), first=ONE)
    assert res.index.tolist() == [ONE, K]


def test_full_scan_takes_smallest_critical_without_monotonicity() -> None:
    members = torch.zeros(1, K, dtype=torch.bool)
    members[0, [1, 4, 7]] = True
    res = full_scan(members, lambda r, g: g == 4)
    assert res.index.tolist() == [4] and res.probes.tolist() == [3]


def test_search_input_errors() -> None:
    with pytest.raises(ValueError, match=r"expected bool members \(R, K\)"):
        bisect_search(torch.zeros(2, K), lambda r, g: r > 0)
    with pytest.raises(ValueError, match=r"expected first in \[0, 28\)"):
        bisect_search(torch.ones(2, K, dtype=torch.bool), lambda r, g: r > 0, first=K)
    with pytest.raises(ValueError, match="oracle must return bool"):
        bisect_search(torch.ones(2, K, dtype=torch.bool), lambda r, g: r.float())
    with pytest.raises(ValueError, match=r"oracle fingerprints must be int64 \(2,\)"):
        checked_search(
            torch.ones(2, K, dtype=torch.bool), lambda r, g: (r > 0, torch.zeros(r.numel(), 3))
        )


def test_margin_loss_is_the_sum_of_golden_minus_other_logits() -> None:
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 5.0]])
    loss = margin_loss(logits, torch.tensor([0, 2]))
    assert loss.tolist() == [2.0 + 3.0, 5.0 + 3.0]


def band_rows(seed: int, n_rows: int = 600) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows whose candidates are critical in a band ``[lo, hi)``: saturation past ``hi``."""
    gen = torch.Generator().manual_seed(seed)
    members = torch.rand(n_rows, K, generator=gen) < 0.4
    lo = torch.randint(0, K, (n_rows,), generator=gen)
    hi = lo + torch.randint(1, K, (n_rows,), generator=gen)
    monotone = torch.rand(n_rows, generator=gen) < 0.5
    hi[monotone] = 2 * K  # half the rows are monotone
    return members, lo, hi


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_checked_search_is_exact_on_saturating_bands(seed: int) -> None:
    members, lo, hi = band_rows(seed)
    ar = torch.arange(K)
    truth = (ar >= lo[:, None]) & (ar < hi[:, None])
    probes: list[tuple[torch.Tensor, torch.Tensor]] = []

    def oracle(rows: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        probes.append((rows, g))
        return (g >= lo[rows]) & (g < hi[rows])

    scope = torch.arange(members.shape[0]) // 4  # targets of 4 rows (images x signs)
    out = checked_search(members, oracle, first=ONE, scope=scope)
    wrong = ((out.critical != truth) & members).any(1)
    # exact wherever the bisection found a critical candidate (checked, scanned on failure) or
    # the row's target failed a check (scanned); a band the bisection missed in a target that
    # never showed non-monotone criticality is the one case left
    assert not wrong[out.index < K].any() and not wrong[out.scanned].any()
    plain = bisect_search(members, oracle, first=ONE)
    wrong_plain = (((ar >= plain.index[:, None]) != truth) & members).any(1)
    assert wrong_plain.sum() > 5 * wrong.sum()  # the monotone bisection alone: many more
    assert out.non_monotone.any() and not out.non_monotone[hi == 2 * K].any()
    # a full scan of every row costs more than the check with scans where it fails
    assert out.probes.sum() < full_scan(members, oracle, first=ONE).probes.sum()
    assert out.rounds == len(probes) - plain.rounds - 1  # the bisection, one check, one scan
    # a target's answer does not depend on the other targets searched with it
    half = members.shape[0] // 2
    alone = checked_search(members[:half], oracle, first=ONE, scope=scope[:half])
    assert alone.critical.equal(out.critical[:half])


def test_checked_search_adds_at_most_one_probe_per_row_when_monotone() -> None:
    members, threshold = random_rows(3)
    oracle = CountingOracle(threshold)
    out = checked_search(members, oracle, first=ONE)
    plain = bisect_search(members, CountingOracle(threshold), first=ONE)
    assert out.index.equal(plain.index) and not out.non_monotone.any()
    # the largest member first; the bisection below it may take one probe more or less
    extra = out.probes - plain.probes
    assert (extra <= 2).all() and extra.float().mean() <= 1.0
    ar = torch.arange(K)
    assert out.critical.equal(ar >= out.index[:, None])


def test_runner_up_margin() -> None:
    logits = torch.tensor([[3.0, 1.0, 2.5], [0.0, 4.0, -1.0]])
    assert runner_up_margin(logits, torch.tensor([0, 1])).tolist() == [0.5, 4.0]


@pytest.mark.parametrize("seed", [0, 1])
def test_checked_search_stops_where_the_outcome_saturates(seed: int) -> None:
    """Fingerprints: a non-critical probe with the largest member's very outcome ends its row.

    Rows never critical whose outcome saturates at ``sat`` (a ReLU shutting the channel): the
    same answers as without fingerprints, fewer probes. A row whose fingerprint changes up to
    the top (no saturation) costs what it did; a critical row is unaffected.
    """
    members, threshold = random_rows(seed)
    gen = torch.Generator().manual_seed(seed + 10)
    sat = torch.randint(0, K, (members.shape[0],), generator=gen)
    saturates = torch.rand(members.shape[0], generator=gen) < 0.5

    def plain(rows: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return g >= threshold[rows]

    def judged(rows: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        level = torch.where(saturates[rows], torch.minimum(g, sat[rows]), g)
        return plain(rows, g), level * members.shape[0] + rows  # one int64 key per outcome

    never = threshold == K  # rows whose outcome is never critical
    threshold[~never & saturates] = K  # saturation only where nothing is critical
    never = threshold == K
    base = checked_search(members, plain, first=ONE)
    fast = checked_search(members, judged, first=ONE)
    assert fast.index.equal(base.index) and fast.critical.equal(base.critical)
    short = never & saturates
    assert (fast.probes <= base.probes).all()
    assert fast.probes[short].sum() < base.probes[short].sum()
    assert fast.probes[~short].equal(base.probes[~short])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_guessed_start_changes_the_probes_not_the_answer(seed: int) -> None:
    """Galloping from a guess: the answer equals the bisection's on monotone rows whatever
    the guess (right, off by a few, far off, 'none', no guess); two probes below the check
    where the guess is right, and never many more than the bisection where it is wrong."""
    members, threshold = random_rows(seed)
    n = members.sum(1)
    ar = torch.arange(K)
    truth = (members & (ar < threshold[:, None])).sum(1)  # the answer's rank among members
    gen = torch.Generator().manual_seed(seed)
    plain = checked_search(members, CountingOracle(threshold))
    for guess in (truth, truth + torch.randint(-3, 4, truth.shape, generator=gen),
                  torch.randint(-1, K + 1, truth.shape, generator=gen), n, torch.full_like(n, -1)):  # fmt: skip
        oracle = CountingOracle(threshold)
        out = checked_search(members, oracle, start=guess)
        assert out.index.equal(plain.index) and out.critical.equal(plain.critical)
        rows = torch.cat([c[0] for c in oracle.calls])
        gs = torch.cat([c[1] for c in oracle.calls])
        assert len(set(zip(rows.tolist(), gs.tolist(), strict=True))) == rows.numel()
        assert (out.probes <= plain.probes + 2 * torch.ceil(torch.log2(n + 1)) + 1).all()
    right = checked_search(members, CountingOracle(threshold), start=truth)
    inner = (truth > 0) & (truth < n - 1)  # neither end: the guess and one neighbour
    assert (right.probes[inner] <= 3).all()
    assert right.probes.sum() < plain.probes.sum()


@pytest.mark.parametrize("seed", [0, 1])
def test_guesses_find_a_band_below_a_non_critical_largest_member(seed: int) -> None:
    """Where the largest member is not critical, the guesses alone are probed: a band that holds
    either is found and scanned (those rows exact), a row where neither is critical ends with
    none after at most three probes."""
    members, lo, hi = band_rows(seed)
    ar = torch.arange(K)
    truth = (ar >= lo[:, None]) & (ar < hi[:, None]) & members
    rank_of = members.cumsum(1) - 1
    gen = torch.Generator().manual_seed(seed)
    start = torch.randint(0, K // 2, (members.shape[0],), generator=gen)
    floor = start // 2

    def oracle(rows: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return (g >= lo[rows]) & (g < hi[rows])

    out = checked_search(members, oracle, start=start, floor=floor)
    largest = torch.where(members, ar, -1).amax(1)
    top_critical = truth[torch.arange(members.shape[0]), largest.clamp_min(0)] & (largest >= 0)
    below = (largest >= 0) & ~top_critical
    at = lambda guess: (truth & (rank_of == guess[:, None])).any(1)  # noqa: E731
    hit = below & (at(start) | at(floor))
    assert hit.any() and (~hit & below).any()
    assert ((out.critical & members)[hit] == truth[hit]).all()  # found, then scanned: exact
    missed = below & ~hit
    assert not (out.critical & members)[missed].any() and (out.probes[missed] <= 3).all()


def test_a_large_scan_is_asked_in_pieces_of_whole_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scan's (row, candidate) pairs go to the oracle in calls of at most SCAN_PROBES
    (whole rows; a longer row alone): the same answers as in one call."""
    members, lo, hi = band_rows(0)
    scope = torch.arange(members.shape[0]) // 4
    calls: list[torch.Tensor] = []

    def oracle(rows: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        calls.append(rows)
        return (g >= lo[rows]) & (g < hi[rows])

    whole = checked_search(members, oracle, first=ONE, scope=scope)
    assert whole.scanned.any() and calls[-1].numel() > 7
    scan = calls[whole.rounds - 1 :]  # one call
    calls.clear()
    monkeypatch.setattr(search, "SCAN_PROBES", 7)  # below some rows' own length
    pieces = checked_search(members, oracle, first=ONE, scope=scope)
    assert pieces.critical.equal(whole.critical) and pieces.probes.equal(whole.probes)
    parts = calls[whole.rounds - 1 :]
    assert pieces.rounds == len(calls) and len(parts) > 1
    assert torch.cat(parts).equal(scan[0])  # the same pairs, in the same order
    assert all(p.numel() <= 7 or p.unique().numel() == 1 for p in parts)
    ends = [int(p[-1]) for p in parts[:-1]]
    assert all(int(p[0]) > e for p, e in zip(parts[1:], ends, strict=True))  # whole rows


@pytest.mark.parametrize("k", [K, 2**15 + 3], ids=["int16-table", "int32-table"])
def test_searches_on_long_candidate_lists(k: int) -> None:
    """The rank table is int16 below 2^15 - 1 candidates, int32 beyond: the same answers."""
    gen = torch.Generator().manual_seed(4)
    members = torch.rand(6, k, generator=gen) < 0.3
    members[0] = False
    members[1, : k - 1] = False  # only the last candidate
    threshold = torch.randint(0, k + 1, (6,), generator=gen)
    fast = bisect_search(members, CountingOracle(threshold))
    assert fast.index.equal(full_scan(members, CountingOracle(threshold)).index)
    checked = checked_search(members, CountingOracle(threshold))
    assert checked.index.equal(fast.index) and fast.index.dtype == torch.long
    assert checked.critical.equal(torch.arange(k) >= checked.index[:, None])


@pytest.mark.parametrize("seed", [0, 1])
def test_sibling_scans_start_below_the_targets_band(seed: int) -> None:
    """sibling_margin: a row scanned because another row of its target failed the check is
    scanned from ``margin`` candidates below the lowest band start of its target, exactly
    there, for fewer probes; a margin as large as the grid is the whole-row scan."""
    members, lo, hi = band_rows(seed)
    ar = torch.arange(K)
    truth = (ar >= lo[:, None]) & (ar < hi[:, None])

    def oracle(rows: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return (g >= lo[rows]) & (g < hi[rows])

    scope = torch.arange(members.shape[0]) // 4
    whole = checked_search(members, oracle, first=ONE, scope=scope)
    margin = 3
    banded = checked_search(members, oracle, first=ONE, scope=scope, sibling_margin=margin)
    assert banded.probes.sum() < whole.probes.sum()
    assert torch.equal(banded.scanned, whole.scanned) and torch.equal(banded.index, whole.index)
    start = torch.full((int(scope.max()) + 1,), K)
    start.scatter_reduce_(0, scope[whole.non_monotone], whole.index[whole.non_monotone], "amin")
    floor = (start[scope] - margin).clamp_min(0)
    above = ar[None, :] >= floor[:, None]
    wrong = (banded.critical != truth) & members & above
    assert not wrong[banded.scanned].any()
    assert not ((banded.critical != whole.critical) & members & above).any()
    full = checked_search(members, oracle, first=ONE, scope=scope, sibling_margin=K)
    assert torch.equal(full.critical, whole.critical) and torch.equal(full.probes, whole.probes)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_guided_search_answers_as_the_checked_search_with_fewer_probes(seed: int) -> None:
    """Rows of one group (a target's images) find criticality near one magnitude: the guides'
    median puts the others' first probe next to their answer (rows of enough candidates). The answers and the critical
    bins equal :func:`checked_search`'s on monotone rows, whatever the guess; no row probes a
    candidate twice; the total is far below the bisection's."""
    gen = torch.Generator().manual_seed(seed)
    n_groups, per = 40, 12
    members = torch.rand(n_groups * per, K, generator=gen) < 0.8
    members[:, -1] = False
    centre = torch.randint(2, K - 4, (n_groups,), generator=gen).repeat_interleave(per)
    jitter = torch.randint(-1, 2, centre.shape, generator=gen)
    threshold = centre + jitter
    threshold[: 3 * per] = K  # three groups never critical (a saturated sign)
    group = torch.arange(n_groups * per) // per
    guide = torch.arange(n_groups * per) % per < 3
    plain_oracle, oracle = CountingOracle(threshold), CountingOracle(threshold)
    plain = checked_search(members, plain_oracle, first=ONE, scope=group)
    out = search.guided_search(members, oracle, group, guide, first=ONE, scope=group)
    assert out.index.equal(plain.index) and out.critical.equal(plain.critical)
    rows = torch.cat([c[0] for c in oracle.calls])
    gs = torch.cat([c[1] for c in oracle.calls])
    assert len(set(zip(rows.tolist(), gs.tolist(), strict=True))) == rows.numel()
    assert out.probes.sum() == rows.numel()
    assert out.probes[guide].equal(plain.probes[guide])  # the guides: the checked search
    assert out.probes[~guide].sum() < 0.8 * plain.probes[~guide].sum()
    # a guessed row starts at its guess, not at the first probe: rows whose answer lies far
    # from 1.0 never ask it
    asked_one = rows[gs == ONE]
    n_cand = members.sum(1) + (members[:, ONE] == 0).long()
    far = ~guide & (threshold < K) & ((threshold - ONE).abs() > 8)
    far &= n_cand >= search.MIN_GUESSED  # fewer: bisected from 1.0
    assert far.any() and not far[asked_one].any()
    assert guide[asked_one].any()  # the guides probe it first


@pytest.mark.parametrize("seed", [0, 1])
def test_guided_search_takes_no_guess_where_a_guide_was_not_monotone(seed: int) -> None:
    """A target whose guide rows show a critical band below a non-critical largest member is
    searched as :func:`checked_search` searches it (no guesses there): exact where that is."""
    members, lo, hi = band_rows(seed)
    n = members.shape[0]
    per = 8
    scope = torch.arange(n) // per
    group = scope
    guide = torch.arange(n) % per < 2

    def oracle(rows: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return (g >= lo[rows]) & (g < hi[rows])

    out = search.guided_search(members, oracle, group, guide, first=ONE, scope=scope)
    ar = torch.arange(K)
    truth = (ar >= lo[:, None]) & (ar < hi[:, None])
    wrong = ((out.critical != truth) & members).any(1)
    assert not wrong[out.index < K].any() and not wrong[out.scanned].any()
    bad = torch.zeros(int(scope.max()) + 1, dtype=torch.bool)
    bad[scope[guide & out.non_monotone]] = True
    assert bad.any()
    alone = checked_search(members[~guide], lambda r, g: oracle((~guide).nonzero()[r, 0], g),
                           first=ONE, scope=scope[~guide])  # fmt: skip
    same = bad[scope[~guide]]
    assert out.critical[~guide][same].equal(alone.critical[same])
