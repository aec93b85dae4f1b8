"""EDMs against a brute-force Python loop over sites and bits (struct bit flips, numpy float32)."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import torch

from pytorchfi_deepvigor.functional.edm import (
    bin_edges,
    bin_index,
    bin_lookup,
    candidate_grid,
    histogram,
    key_shift,
    operand_edm,
    search_members,
    weight_edm,
)

GRIDS = ["paper", "extended", "fine"]


def py_flip(value: float, bit: int) -> np.float32:
    raw = struct.unpack("<I", struct.pack("<f", value))[0] ^ (1 << bit)
    return np.float32(struct.unpack("<f", struct.pack("<I", raw))[0])


def py_bin(err: float, grid: torch.Tensor) -> int:
    """Bin by definition: the number of edges <= err; NaN is +Inf. A grid ending at +Inf puts
    -Inf and the errors below -grid[-2] into bin 0 (critical, as a DUE)."""
    if math.isnan(err):
        return 2 * grid.numel()
    if math.isinf(grid[-1]) and err < -float(grid[-2]):
        return 0
    return sum(1 for e in bin_edges(grid).tolist() if e <= err)


def py_error(operand: float, weight: float, flip_weight: bool, bit: int) -> float:
    x, w = np.float32(operand), np.float32(weight)
    with np.errstate(all="ignore"):
        if flip_weight:
            return float((py_flip(float(w), bit) - w) * x)
        return float((py_flip(float(x), bit) - x) * w)


def special_values(seed: int, n: int) -> torch.Tensor:
    """Random operands mixed with zeros, powers of two, subnormals and large values."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=gen) * 2.0 ** torch.randint(-12, 12, (n,), generator=gen)
    specials = torch.tensor([0.0, -0.0, 1.0, -0.5, 2.0**-10, 1e-40, 3e30, -1.5])
    pick = torch.rand(n, generator=gen) < 0.3
    return torch.where(pick, specials[torch.randint(0, 8, (n,), generator=gen)], x)


@pytest.mark.parametrize("search", GRIDS)
def test_bin_index_matches_definition_on_special_errors(search: str) -> None:
    grid = candidate_grid(search)
    values = [0.0, -0.0, 1e-45, -1e-45, math.inf, -math.inf, math.nan, -math.nan]
    for g in grid.tolist():
        for v in (g, -g, g * (1 - 2**-24), g * (1 + 2**-23)):
            values += [v, -v]
    errors = torch.tensor(values, dtype=torch.float32)
    expected = [py_bin(v, grid) for v in errors.tolist()]
    assert bin_index(errors, grid).tolist() == expected


@pytest.mark.parametrize("search", GRIDS)
def test_exponent_keys_agree_with_bucketize_on_random_bit_patterns(search: str) -> None:
    grid = candidate_grid(search)
    gen = torch.Generator().manual_seed(0)
    bits = torch.randint(-(2**31), 2**31, (200_000,), generator=gen, dtype=torch.int64)
    errors = bits.to(torch.int32).view(torch.float32)
    edges = bin_edges(grid)
    expected = torch.bucketize(errors, edges, right=True).masked_fill_(
        errors.isnan(), 2 * grid.numel()
    )
    if math.isinf(grid[-1]):  # -Inf and its key's finite neighbours: bin 0 (see py_bin)
        expected.masked_fill_(errors < -float(grid[-2]), 0)
    assert bin_index(errors, grid).equal(expected)
    counts = histogram(errors.view(4, -1), grid)
    assert counts.equal(
        torch.nn.functional.one_hot(expected.view(4, -1), 2 * grid.numel() + 1).sum(1)
    )


def test_grids() -> None:
    paper, ext = candidate_grid("paper"), candidate_grid("extended")
    assert paper.tolist() == [2.0**e for e in range(-10, 11)]
    assert ext.numel() == 28 and ext[-1] == 2.0**127 and ext[:21].equal(paper)
    with pytest.raises(ValueError, match="expected search in"):
        candidate_grid("coarse")


@pytest.mark.parametrize("search", GRIDS)
def test_operand_edm_matches_brute_force(search: str) -> None:
    grid = candidate_grid(search)
    n_img, n_tgt, n_ops = 3, 2, 5
    x = special_values(0, n_img * n_tgt * n_ops).view(n_img, n_tgt, n_ops)
    w = special_values(1, n_tgt * n_ops).view(n_tgt, n_ops)
    valid = torch.rand(n_tgt, n_ops, generator=torch.Generator().manual_seed(2)) > 0.2
    counts = operand_edm(x, w, grid, valid)
    expected = torch.zeros_like(counts)
    for t in range(n_tgt):
        for i in range(n_img):
            for j in range(n_ops):
                if not valid[t, j]:
                    continue
                for b in range(32):
                    err = py_error(float(x[i, t, j]), float(w[t, j]), False, b)
                    expected[t, i, py_bin(err, grid)] += 1
    assert counts.equal(expected)
    assert (counts.sum(-1) == 32 * valid.sum(1, keepdim=True)).all()


@pytest.mark.parametrize("aggregate", ["position", "fault"])
@pytest.mark.parametrize("search", GRIDS)
def test_weight_edm_matches_brute_force(search: str, aggregate: str) -> None:
    grid = candidate_grid(search)
    n_img, n_tgt, n_w, n_pos = 2, 2, 3, 4
    x = special_values(3, n_img * n_tgt * n_w * n_pos).view(n_img, n_tgt, n_w, n_pos)
    w = special_values(4, n_tgt * n_w).view(n_tgt, n_w)
    valid = torch.rand(n_tgt, n_w, n_pos, generator=torch.Generator().manual_seed(5)) > 0.25
    counts = weight_edm(x, w, grid, valid, aggregate=aggregate)
    expected = torch.zeros_like(counts)
    for t in range(n_tgt):
        for i in range(n_img):
            for j in range(n_w):
                positions = [p for p in range(n_pos) if valid[t, j, p]]
                if aggregate == "fault" and positions:
                    # the error of largest magnitude: at the first operand of largest magnitude
                    mags = [abs(float(x[i, t, j, p])) for p in positions]
                    positions = [positions[int(np.argmax(mags))]]
                for b in range(32):
                    for p in positions:
                        err = py_error(float(x[i, t, j, p]), float(w[t, j]), True, b)
                        expected[t, i, py_bin(err, grid)] += 1
    assert counts.equal(expected)


def test_search_members_marks_inner_edges_of_nonempty_bins() -> None:
    grid = candidate_grid("paper")
    errors = torch.tensor([[3.0, -0.75, 5000.0, -1e-6, 1023.0, -1025.0, 1024.0]])
    plus, minus = search_members(histogram(errors, grid), grid)
    g = {float(v): i for i, v in enumerate(grid.tolist())}
    assert plus[0].nonzero().flatten().tolist() == [g[2.0], g[512.0]]
    # -0.75 lies in [-1, -0.5): probe -0.5; beyond +-c_K (incl. c_K itself): never probed
    assert minus[0].nonzero().flatten().tolist() == [g[0.5]]


def test_histogram_respects_valid_mask_and_shapes() -> None:
    grid = candidate_grid("paper")
    errors = torch.tensor([[1.0, 2.0], [4.0, 8.0]])
    valid = torch.tensor([[True, False], [False, False]])
    counts = histogram(errors, grid, valid)
    assert counts.shape == (2, 43) and counts.sum().item() == 1


def test_edm_shape_errors() -> None:
    grid = candidate_grid("paper")
    with pytest.raises(ValueError, match=r"expected x \(I, T, J\) and w \(T, J\)"):
        operand_edm(torch.zeros(2, 3), torch.zeros(3, 4), grid)
    with pytest.raises(ValueError, match=r"expected x \(I, T, J, P\) and w \(T, J\)"):
        weight_edm(torch.zeros(2, 3, 4), torch.zeros(3, 4), grid)
    with pytest.raises(ValueError, match="expected aggregate 'position' or 'fault'"):
        weight_edm(torch.zeros(1, 1, 1, 1), torch.zeros(1, 1), grid, aggregate="max")
    with pytest.raises(ValueError, match="strictly increasing positive"):
        bin_edges(torch.tensor([1.0, 0.5]))
    with pytest.raises(ValueError, match=r"\(1 \+ q/4\) \* 2\^e"):
        histogram(torch.zeros(1, 2), torch.tensor([1.0, 1.1]))  # 3.0 = 1.5 * 2 is a fine edge
    with pytest.raises(ValueError, match="strictly increasing|only the last may be"):
        histogram(torch.zeros(1, 2), torch.tensor([1.0, float("inf"), 2.0]))
    with pytest.raises(ValueError, match="expected counts with 43 bins"):
        search_members(torch.zeros(1, 5), grid)


def test_fine_grid_keeps_only_non_finite_errors_outside_its_finite_bins() -> None:
    grid = candidate_grid("fine")
    assert float(grid[-1]) == math.inf and key_shift(grid) == 21
    assert float(grid[0]) == 2.0**-24 and len(grid) == 4 * (127 + 24 + 1) + 1
    k = grid.numel()
    big = torch.tensor([3.0e38, -3.0e38, math.inf, -math.inf, math.nan, 1.25, 1.2499999])
    bins = bin_index(big, grid).tolist()
    assert bins[0] == 2 * k - 1  # [1.75 * 2^127, Inf): an inner bin, probed
    assert bins[2] == bins[4] == 2 * k and bins[1] == bins[3] == 0  # +-Inf, NaN: outer bins
    assert bins[5] == bins[6] + 1  # 1.25 is an edge: 4 bins per octave
    plus, _ = search_members(histogram(big.view(1, -1), grid), grid)
    assert bool(plus[0, k - 2])  # the outermost finite bin's candidate is a member


@pytest.mark.parametrize("search", ["fine", "extended", "paper"])
def test_bin_lookup_is_the_gather_of_the_bin_index(search: str) -> None:
    """One gather over the keys gives what indexing each error's bin gives, extremes included."""
    grid = candidate_grid(search)
    gen = torch.Generator().manual_seed(3)
    errors = torch.randn(5, 7, 300, generator=gen) * torch.exp2(
        torch.randint(-40, 140, (5, 7, 300), generator=gen).float()
    )
    special = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), -float("nan")])
    errors[:, :, : special.numel()] = special
    errors[0, 0, 10:20] = grid[:10].float()  # exact edges
    errors[0, 1, 10:20] = -grid[:10].float()
    per_bin = torch.rand(5, 7, 2 * grid.numel() + 1, generator=gen) < 0.5
    want = per_bin.gather(-1, bin_index(errors, grid).long())
    assert torch.equal(bin_lookup(errors, per_bin, grid), want)
    counts = torch.randint(0, 9, per_bin.shape, generator=gen)
    assert torch.equal(
        bin_lookup(errors, counts, grid), counts.gather(-1, bin_index(errors, grid).long())
    )
