"""VF formulas: non-critical mass against a direct count of the errors, layer and model VFs."""

from __future__ import annotations

import math

import pytest
import torch

from pytorchfi_deepvigor.functional.edm import candidate_grid, histogram
from pytorchfi_deepvigor.functional.vf import (
    layer_vf,
    model_vf,
    non_critical_mass,
    total_mvf,
    vulnerability_factor,
    vv_values,
)


@pytest.mark.parametrize("search", ["paper", "extended"])
def test_non_critical_mass_counts_errors_inside_the_vv_range(search: str) -> None:
    grid = candidate_grid(search)
    k = grid.numel()
    gen = torch.Generator().manual_seed(0)
    errors = torch.randn(64, 50, generator=gen) * 2.0 ** torch.randint(
        -14, 40, (64, 50), generator=gen
    )
    errors[0, :5] = torch.tensor([math.nan, math.inf, -math.inf, 2.0**127, -(2.0**127)])
    plus = torch.randint(0, k + 1, (64,), generator=gen)
    minus = torch.randint(0, k + 1, (64,), generator=gen)
    mass = non_critical_mass(histogram(errors, grid), plus, minus)
    hi = torch.minimum(vv_values(plus, grid, 1), grid[-1])
    lo = torch.maximum(vv_values(minus, grid, -1), -grid[-1])
    e = torch.nan_to_num(errors.double(), nan=math.inf)
    expected = ((e >= lo[:, None]) & (e < hi[:, None])).double().mean(1)
    assert torch.allclose(mass, expected, rtol=0, atol=1e-12)


def test_vf_helpers() -> None:
    assert vulnerability_factor(torch.tensor([[1.0, 0.5], [0.0, 0.0]])).tolist() == [0.25, 1.0]
    assert layer_vf([0.1, 0.3]) == pytest.approx(0.2)
    assert model_vf(torch.tensor([0.2, 0.4])) == pytest.approx(0.3)
    assert vv_values(torch.tensor([0, 28]), candidate_grid("extended"), -1).tolist() == [
        -(2.0**-10),
        -math.inf,
    ]
    # Eq. 15 with one layer reduces to the weighted average of its two LVFs
    assert total_mvf([0.5], [0.1], [300], [100]) == pytest.approx(0.4)


def test_vf_input_errors() -> None:
    with pytest.raises(ValueError, match="expected counts with 2K \\+ 1 bins"):
        non_critical_mass(torch.zeros(2, 4), torch.zeros(2), torch.zeros(2))
    with pytest.raises(ValueError, match="expected VV indices of shape"):
        non_critical_mass(torch.zeros(2, 5), torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match="expected sign"):
        vv_values(torch.tensor([0]), candidate_grid(), 0)
    with pytest.raises(ValueError, match="expected one value per layer"):
        total_mvf([0.1, 0.2], [0.1], [1, 1], [1, 1])
    with pytest.raises(ValueError, match="N_l \\+ W_l > 0"):
        total_mvf([0.1], [0.1], [0], [0])
    with pytest.raises(ValueError, match="non-empty 1-D sequence for target_vfs"):
        layer_vf([])
