"""SFI maths: Ruospo et al.'s published sample sizes, margins, allocation and priors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pytorchfi_deepvigor.functional.sfi import (
    RUOSPO_PRIOR,
    MarginExceededWarning,
    fault_population,
    sample_size,
    split_proportional,
    stratified_margin,
    stratum_sample_sizes,
    weight_bit_prior,
)


@pytest.mark.parametrize(
    ("weights", "layer_wise", "per_bit"),
    [(432, 10_389, 822), (2_304, 14_954, 3_609)],
    ids=["resnet20-layer0", "resnet20-layer1"],
)
def test_ruospo_resnet20_sizes_exact(weights: int, layer_wise: int, per_bit: int) -> None:
    population = fault_population(weights, stuck_at=True)
    assert population == weights * 64
    assert sample_size(population) == layer_wise
    n_bit = fault_population(weights, bits=1, stuck_at=True)
    assert stratum_sample_sizes([n_bit] * 32) == (per_bit,) * 32


def test_layer0_population_matches_spec() -> None:
    assert fault_population(432, stuck_at=True) == 27_648
    assert fault_population(432, bits=1, stuck_at=True) == 864
    assert fault_population(432) == 13_824


def test_sample_size_is_exact_where_float_is_not() -> None:
    # e = 0.1, t = 1, p = 0.2, N = 225: n = 225 / (1 + 0.01 * 224 / 0.16) = 15 exactly;
    # the float computation gives 15.000000000000002 and would round up to 16.
    assert math.ceil(225 / (1 + 0.1**2 * 224 / (1.0**2 * 0.2 * 0.8))) == 16
    assert sample_size(225, e=0.1, t=1.0, p=0.2) == 15


@settings(max_examples=200, deadline=None)
@given(
    N=st.integers(1, 10**9),
    e=st.floats(1e-4, 0.5),
    t=st.floats(0.5, 5.0),
    p=st.floats(1e-6, 1 - 1e-6),
)
def test_sample_size_bounds_and_formula(N: int, e: float, t: float, p: float) -> None:
    n = sample_size(N, e, t, p)
    assert 1 <= n <= N
    exact = N / (1 + e**2 * (N - 1) / (t**2 * p * (1 - p)))
    assert n - 1 - 1e-6 * n <= exact <= n + 1e-6 * n


def test_sample_size_monotone_in_prior_and_margin() -> None:
    assert sample_size(10_000, p=0.5) > sample_size(10_000, p=0.1) > sample_size(10_000, p=1e-3)
    assert sample_size(10_000, e=0.01) > sample_size(10_000, e=0.05)
    assert sample_size(1) == 1


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"N": 0}, ValueError, r"expected population N >= 1, got 0"),
        ({"N": 10.0}, TypeError, "expected population N as an int"),
        ({"N": 10, "e": 0.0}, ValueError, r"expected margin e in \(0, 1\), got 0.0"),
        ({"N": 10, "e": 1.5}, ValueError, r"expected margin e in \(0, 1\), got 1.5"),
        ({"N": 10, "t": -1.0}, ValueError, r"expected confidence quantile t > 0"),
        ({"N": 10, "p": 1.0}, ValueError, r"expected prior p in \(0, 1\), got 1.0"),
        ({"N": 10, "p": math.nan}, ValueError, r"expected prior p in \(0, 1\)"),
    ],
    ids=["N-zero", "N-float", "e-zero", "e-big", "t-negative", "p-one", "p-nan"],
)
def test_sample_size_validation(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        sample_size(**kwargs)


def test_ruospo_prior_vector() -> None:
    assert len(RUOSPO_PRIOR) == 32
    assert RUOSPO_PRIOR[31] == 2.1e-3 and RUOSPO_PRIOR[30] == 0.5
    assert RUOSPO_PRIOR[29] == RUOSPO_PRIOR[28] == 4.5e-4 and RUOSPO_PRIOR[27] == 4.7e-4
    assert RUOSPO_PRIOR[26:23:-1] == (3.4e-3, 2.8e-2, 5.2e-3) and RUOSPO_PRIOR[23] == 3.5e-4
    assert set(RUOSPO_PRIOR[:23]) == {1e-4}


def test_data_aware_sizes_smaller_than_data_unaware() -> None:
    aware = stratum_sample_sizes([864] * 32, RUOSPO_PRIOR)
    unaware = stratum_sample_sizes([864] * 32, 0.5)
    assert aware[30] == unaware[30] == 822
    assert all(a < u for bit, (a, u) in enumerate(zip(aware, unaware, strict=True)) if bit != 30)


def test_stratum_sample_sizes_validation_and_empty_stratum() -> None:
    assert stratum_sample_sizes([0, 864]) == (0, 822)
    with pytest.raises(ValueError, match="expected 2 priors"):
        stratum_sample_sizes([1, 2], [0.5])


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((4, [1, 2, 7]), (0, 1, 3)),
        ((5, [10, 30, 60]), (1, 1, 3)),
        ((3, [1, 1, 1, 1]), (1, 1, 1, 0)),
        ((7, [0, 7]), (0, 7)),
        ((0, [5]), (0,)),
    ],
    ids=["largest-remainder", "tie-to-first", "ties", "empty-stratum", "zero"],
)
def test_split_proportional_examples(args: tuple, expected: tuple) -> None:
    assert split_proportional(*args) == expected


@settings(max_examples=200, deadline=None)
@given(populations=st.lists(st.integers(0, 10**7), min_size=1, max_size=20), frac=st.floats(0, 1))
def test_split_proportional_properties(populations: list[int], frac: float) -> None:
    total = sum(populations)
    if total == 0:
        return
    n = int(frac * total)
    split = split_proportional(n, populations)
    assert sum(split) == n
    for n_l, size in zip(split, populations, strict=True):
        assert 0 <= n_l <= size
        assert abs(n_l - n * size / total) < 1


def test_split_proportional_validation() -> None:
    with pytest.raises(ValueError, match="expected n <= total population 4, got 5"):
        split_proportional(5, [2, 2])
    with pytest.raises(ValueError, match="total population 0"):
        split_proportional(0, [0, 0])
    with pytest.raises(ValueError, match="expected stratum population >= 0"):
        split_proportional(1, [2, -1])


def test_stratified_margin_single_stratum_is_leveugle_inverse() -> None:
    N = 27_648
    n = sample_size(N)
    margin = stratified_margin([N], [n], [0.5])
    assert margin <= 0.01
    assert stratified_margin([N], [n - 1], [0.5]) > 0.01 * 0.99999


def test_stratified_margin_closed_form() -> None:
    got = stratified_margin([100, 300], [10, 30], [0.2, 0.5], t=2.0)
    var = (0.25**2 * 0.16 / 10 * 90 / 99) + (0.75**2 * 0.25 / 30 * 270 / 299)
    assert got == pytest.approx(2.0 * math.sqrt(var), rel=1e-12)


def test_stratified_margin_exhaustive_and_certain_strata_are_zero() -> None:
    assert stratified_margin([5, 1], [5, 1], [0.3, 0.5]) == 0.0
    assert stratified_margin([50], [10], [0.0]) == 0.0


def test_data_unaware_margin_within_e() -> None:
    n_b = stratum_sample_sizes([864] * 32)
    assert stratified_margin([864] * 32, list(n_b), [0.5] * 32, e=0.01) <= 0.01


def test_stratified_margin_warns_when_prior_too_small() -> None:
    n_b = stratum_sample_sizes([864] * 32, RUOSPO_PRIOR)
    with pytest.warns(MarginExceededWarning, match="exceeds the requested e=0.01"):
        stratified_margin([864] * 32, list(n_b), [0.5] * 32, e=0.01)


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (([10], [0], [0.5]), ValueError, "expected stratum sample n_b >= 1"),
        (([10], [11], [0.5]), ValueError, "expected n_b <= N_b in every stratum"),
        (([10], [5], [1.5]), ValueError, r"expected p_b in \[0, 1\]"),
        (([10, 5], [5], [0.5]), ValueError, "expected N_b, n_b, p_b of one non-zero length"),
        (([0], [0], [0.5]), ValueError, "expected stratum population N_b >= 1"),
        (([10], [5], [0.5], 0.0), ValueError, "expected confidence quantile t > 0"),
    ],
    ids=["n-zero", "n-above-N", "p-above-1", "lengths", "N-zero", "t-zero"],
)
def test_stratified_margin_validation(args: tuple, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        stratified_margin(*args)


def test_weight_bit_prior_closed_form() -> None:
    # Weights 0.25 and -1.0 (max|w| = 1): a flip is dangerous when |delta| > 1.
    weights = torch.tensor([0.25, -1.0])
    prior = weight_bit_prior(weights)
    assert prior.shape == (32,) and prior.dtype == torch.float64
    assert prior[30] == 0.5  # exponent MSB: both weights grow to ~2^128
    assert prior[31] == 0.5  # sign of -1.0: delta 2 > 1 (0.25: delta 0.5 is not)
    assert torch.all(prior[:23] == 1e-4)  # mantissa flips stay below |w|
    assert prior[23] == 1e-4  # x2 / /2: |delta| <= |w| <= 1
    # bit 24 (exponent bit 1): 0.25 has exponent 125 (bit 1 = 0) -> x4, delta 0.75 < 1;
    # -1.0 has exponent 127 (bit 1 = 1) -> /4: neither is dangerous.
    assert prior[24] == 1e-4
    # bit 26 (exponent bit 3): 0.25 (125 = 0b01111101, bit 3 = 1) -> /256; -1.0 likewise.
    assert prior[26] == 1e-4


def test_weight_bit_prior_threshold_and_floor() -> None:
    weights = torch.tensor([0.25, -1.0])
    loose = weight_bit_prior(weights, threshold=0.4, floor=1e-3)
    assert loose[31] == 0.5  # both sign flips now dangerous (fraction 1, capped at 0.5)
    assert loose[24] == 0.5  # 0.25 -> 1.0 moves by 0.75 > 0.4: fraction 1/2
    assert loose[0] == 1e-3


def test_weight_bit_prior_shape_on_typical_weights() -> None:
    weights = torch.randn(4096, generator=torch.Generator().manual_seed(0)) * 0.05
    prior = weight_bit_prior(weights).numpy()
    assert prior[30] == 0.5
    assert np.all(prior[:23] == 1e-4)
    assert prior[29] == 1e-4 and prior[28] == 1e-4  # can only shrink |w| < 1
    assert prior[25] > prior[23] and prior[26] > prior[23]  # x16 / x256 growths
    assert float(np.sum(stratum_sample_sizes([864] * 32, prior.tolist()))) < 822 * 32 / 4


def test_weight_bit_prior_float16_and_chunking_consistent() -> None:
    w = torch.randn(70_000, generator=torch.Generator().manual_seed(1)) * 0.1
    assert weight_bit_prior(w.half()).shape == (16,)
    assert weight_bit_prior(w.half())[14] == 0.5
    assert torch.equal(weight_bit_prior(w), weight_bit_prior(w.reshape(700, 100)))


@pytest.mark.parametrize(
    ("weights", "kwargs", "error", "match"),
    [
        (torch.zeros(0), {}, ValueError, "non-empty weight tensor"),
        (torch.tensor([1.0, math.nan]), {}, ValueError, "finite weights"),
        (torch.ones(3), {"threshold": 0.0}, ValueError, "expected threshold > 0"),
        (torch.ones(3), {"floor": 0.6}, ValueError, r"expected floor in \(0, 0.5\]"),
        (torch.ones(3, dtype=torch.float64), {}, TypeError, "unsupported dtype torch.float64"),
    ],
    ids=["empty", "nan", "threshold", "floor", "float64"],
)
def test_weight_bit_prior_validation(
    weights: torch.Tensor, kwargs: dict, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        weight_bit_prior(weights, **kwargs)
