"""Statistical FI: Ruospo et al.'s sample sizes, estimates within their margins, validation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from guarantees import assert_model_unchanged
from tiny_models import seeded_images, tiny_vgg
from torch import nn

from pytorchfi_deepvigor.campaigns import ExhaustiveCampaign, Pilot, StatisticalCampaign
from pytorchfi_deepvigor.engine import SimulationEngine
from pytorchfi_deepvigor.functional.sfi import RUOSPO_PRIOR, MarginExceededWarning, sample_size


def _resnet20_head() -> nn.Module:
    """Two conv layers with ResNet-20's first two weight counts: 432 and 2,304."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3), nn.Flatten(), nn.Linear(16, 4)
    ).eval()


@pytest.fixture(scope="module")
def ruospo() -> StatisticalCampaign:
    return StatisticalCampaign(SimulationEngine(_resnet20_head(), torch.randn(1, 3, 5, 5)))


def test_ruospo_layer_wise_sizes(ruospo: StatisticalCampaign) -> None:
    plan = ruospo.plan("layer", fault_model="stuck-at", layers=[0, 1])
    assert [(s.population, s.sample) for s in plan.strata] == [(27_648, 10_389), (147_456, 14_954)]
    result = ruospo.run("layer", fault_model="stuck-at", layers=[0])
    assert result.layers[0].n_faults == 10_389
    assert result.layers[0].counts.total == 10_389  # one image


def test_ruospo_data_unaware_sizes(ruospo: StatisticalCampaign) -> None:
    plan = ruospo.plan("data-unaware", fault_model="stuck-at", layers=[0, 1])
    by_layer = {
        n: [(s.population, s.sample) for s in plan.strata if s.layer_num == n] for n in (0, 1)
    }
    assert by_layer[0] == [(864, 822)] * 32
    assert by_layer[1] == [(4_608, 3_609)] * 32
    assert plan.per_layer() == {0: 822 * 32, 1: 3_609 * 32}


def test_data_aware_uses_the_given_prior(ruospo: StatisticalCampaign) -> None:
    plan = ruospo.plan("data-aware", prior=RUOSPO_PRIOR, fault_model="stuck-at", layers=[0])
    assert [s.prior for s in plan.strata] == list(RUOSPO_PRIOR)
    bit30 = [s for s in plan.strata if s.bit == 30][0]
    assert bit30.sample == 822  # p = 0.5 for the exponent MSB
    assert sum(s.sample for s in plan.strata) < 822 * 32 // 4


def test_network_wise_splits_one_sample_in_proportion(ruospo: StatisticalCampaign) -> None:
    plan = ruospo.plan("network", fault_model="stuck-at", layers=[0, 1])
    assert plan.faults == sample_size(27_648 + 147_456) == 15_197
    assert plan.per_layer()[0] / plan.faults == pytest.approx(27_648 / 175_104, abs=1e-4)


# ------------------------------------------------------------------ SFI vs exhaustive
@pytest.fixture(scope="module")
def vgg_truth() -> tuple[SimulationEngine, dict[int, float]]:
    engine = SimulationEngine(tiny_vgg(), seeded_images(6))
    exhaustive = ExhaustiveCampaign(engine).run("weights", layers=[0, 3])
    return engine, exhaustive.lvf("weights")


@pytest.mark.parametrize("variant", ["network", "layer", "data-unaware", "data-aware"])
def test_sfi_within_margin_of_exhaustive(vgg_truth, variant: str) -> None:
    engine, truth = vgg_truth
    sfi, sizes = StatisticalCampaign(engine), {0: 36 * 32, 3: 40 * 32}
    network_truth = sum(sizes[n] * truth[n] for n in sizes) / sum(sizes.values())
    seeds = range(20) if variant != "data-unaware" else range(6)  # nearly exhaustive: costly
    hits, trials = 0, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MarginExceededWarning)
        for seed in seeds:
            result = sfi.run(variant, layers=[0, 3], e=0.05, seed=seed)
            if variant == "network":
                error = abs(result.options["network_vf"] - network_truth)
                hits, trials = hits + (error <= result.options["network_margin"]), trials + 1
                continue
            for layer in result.layers:
                hits += abs(layer.lvf - truth[layer.layer_num]) <= layer.margin
                trials += 1
    assert hits >= 0.8 * trials, f"{hits}/{trials} estimates within their margin"


def test_pilot_prior_within_margin_and_counted(vgg_truth) -> None:
    engine, truth = vgg_truth
    result = StatisticalCampaign(engine).run(
        "data-aware", layers=[3], e=0.05, prior=Pilot(faults_per_bit=16), seed=1
    )
    layer = result.layers[0]
    assert abs(layer.lvf - truth[3]) <= layer.margin
    assert result.cost.faults == layer.n_faults + 16 * 32
    assert all(1e-4 <= p <= 0.5 for p in result.options["priors"]["3"])


def test_too_small_prior_warns() -> None:
    torch.manual_seed(3)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    engine = SimulationEngine(net, torch.randn(6, 1, 2, 2))
    with pytest.warns(MarginExceededWarning, match="exceeds e=0.01"):
        StatisticalCampaign(engine).run("data-aware", prior=[1e-6] * 32, seed=0)


def test_same_seed_same_result_other_seed_other_sample(vgg_truth) -> None:
    engine, _ = vgg_truth
    sfi = StatisticalCampaign(engine)
    a, b, c = (sfi.run("layer", layers=[3], e=0.1, seed=s) for s in (5, 5, 6))
    assert a.without_timings() == b.without_timings() and a.seed == 5
    assert a.layers[0].counts != c.layers[0].counts or a.layers[0].cvf != c.layers[0].cvf


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"variant": "bit-wise"}, ValueError, "expected variant in"),
        ({"e": 0.0}, ValueError, r"margin e in \(0, 1\)"),
        ({"e": 1.5}, ValueError, r"margin e in \(0, 1\)"),
        ({"t": -1.0}, ValueError, "confidence quantile t > 0"),
        ({"prior": [0.5] * 32}, ValueError, "prior only applies to variant='data-aware'"),
        ({"variant": "data-aware", "prior": [0.5] * 31}, ValueError, "32 values"),
        ({"variant": "data-aware", "prior": [0.0] * 32}, ValueError, r"prior value in \(0, 1\)"),
        ({"variant": "data-aware", "prior": "oracle"}, ValueError, "expected prior None"),
        ({"target": "bias"}, ValueError, "expected target 'weights'"),
        ({"fault_model": "stuck"}, ValueError, "unknown fault model"),
        ({"seed": -1}, ValueError, "non-negative int"),
        ({"layers": [9]}, ValueError, "out of range"),
        ({"progress_dir": 3}, TypeError, "progress_dir as a str or Path"),
    ],
    ids=lambda v: str(v) if not isinstance(v, dict) else "-".join(map(str, v)),
)
def test_invalid_arguments(kwargs: dict, error: type, match: str) -> None:
    model = tiny_vgg().train()
    sfi = StatisticalCampaign(SimulationEngine(model, seeded_images(2)))
    kwargs = {"variant": "layer", "e": 0.2, **kwargs}
    assert_model_unchanged(model, lambda: sfi.run(**kwargs), raises=error, match=match)


def test_pilot_and_engine_validation() -> None:
    with pytest.raises(ValueError, match="faults_per_bit >= 1"):
        Pilot(faults_per_bit=0)
    with pytest.raises(ValueError, match=r"floor in \(0, 0.5\]"):
        Pilot(floor=0.7)
    with pytest.raises(TypeError, match="expected a SimulationEngine"):
        StatisticalCampaign(tiny_vgg())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="faults_per_chunk >= 1"):
        StatisticalCampaign(SimulationEngine(tiny_vgg(), seeded_images(1)), faults_per_chunk=0)


@pytest.mark.parametrize("target", ["weights", "operands", "stored"])
def test_model_unchanged(target: str) -> None:
    model = tiny_vgg().train()
    sfi = StatisticalCampaign(SimulationEngine(model, seeded_images(2)))
    result = assert_model_unchanged(
        model, lambda: sfi.run("data-aware", target=target, layers=[2, 3], e=0.2)
    )
    assert {layer.layer_num for layer in result.layers} == {2, 3}
    assert assert_model_unchanged(model, lambda: sfi.plan("layer", target=target)).faults > 0
    assert np.isfinite([layer.margin for layer in result.layers]).all()
