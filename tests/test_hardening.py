"""The hardening planner (issue 24): each mechanism against fault injection and the oracle, the
planner against brute force, the user's model untouched.

* TMR: the protected copy computes what the user's model computes, bit for bit; every fault of
  a protected channel (weights and operands, all 32 bits) is masked when flipped in the
  protected model and run by its own forward (the ground-truth oracle); the package's FI of the
  protected model agrees with the oracle fault for fault.
* A plan made on exhaustive FI predicts the exhaustive FI of the protected model exactly (TMR
  alone, ECC alone); verify()'s SFI finds it within its margin.
* Range restriction changes nothing on the calibration inputs.
* The planner's choice is the brute-force optimum on a small case.
"""

from __future__ import annotations

import dataclasses
import itertools
import json

import numpy as np
import pytest
import torch
from guarantees import assert_model_unchanged
from oracle import Oracle
from test_ground_truth import _oracle, _package  # the fault-for-fault comparison, one copy
from torch import nn

from pytorchfi_deepvigor import ExhaustiveCampaign, SimulationEngine, VulnerabilityResult
from pytorchfi_deepvigor.campaigns.faults import FaultPopulation, operand_sites
from pytorchfi_deepvigor.functional.knapsack import choose
from pytorchfi_deepvigor.hardening import (
    HardeningPlan,
    LayerProtection,
    ProtectedLayer,
    apply,
    clamped,
    ecc_bits,
    hamming_check_bits,
    harden,
    predict,
    restrict_ranges,
    verify,
)
from pytorchfi_deepvigor.hardening.plan import channel_counts


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, groups=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 4 * 4, 5),
    )
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
        net[0].weight.view(-1)[0] = 1.0  # bit 30 flips to +Inf
        net[3].weight.view(-1)[1] = -1.5  # and to NaN
    return net.eval()


def images(n: int = 8, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def exhaustive() -> VulnerabilityResult:
    """Exhaustive FI of both targets of every layer of the tiny net (every bit of every site)."""
    torch.set_num_threads(1)
    engine = SimulationEngine(tiny_net(), images())
    campaign = ExhaustiveCampaign(engine)
    w, a = campaign.run("weights"), campaign.run("operands")
    return VulnerabilityResult.from_layers(
        "exhaustive", w.layers + a.layers, n_images=len(images())
    )


# ------------------------------------------------------------------------ the protected layer
LAYERS = {
    "conv": (lambda: nn.Conv2d(3, 5, 3, padding=1), (2, 3, 7, 7)),
    "grouped": (lambda: nn.Conv2d(4, 6, 3, stride=2, groups=2), (2, 4, 9, 9)),
    "depthwise-reflect": (
        lambda: nn.Conv2d(4, 4, 3, groups=4, padding=1, padding_mode="reflect"),
        (2, 4, 6, 6),
    ),
    "linear": (lambda: nn.Linear(7, 6), (3, 7)),
    "linear-tokens": (lambda: nn.Linear(7, 6), (3, 4, 7)),
}


@pytest.mark.parametrize("name", LAYERS)
def test_protected_layer_computes_what_the_layer_computes(name: str) -> None:
    make, shape = LAYERS[name]
    torch.manual_seed(0)
    layer = make()
    x = torch.randn(*shape)
    low, high = (
        torch.full((layer.weight.shape[0],), -1e30),
        torch.full((layer.weight.shape[0],), 1e30),
    )
    for protected in (ProtectedLayer(layer, [0, 2, 3]), ProtectedLayer(layer, [1], low, high)):
        assert torch.equal(protected(x), layer(x))


def test_protected_layer_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="not output channels"):
        ProtectedLayer(nn.Conv2d(1, 2, 3), [2])
    with pytest.raises(TypeError, match="Conv2d or nn.Linear"):
        ProtectedLayer(nn.ReLU(), [0])
    with pytest.raises(ValueError, match="both bounds"):
        ProtectedLayer(nn.Linear(2, 2), [], low=torch.zeros(2))
    with pytest.raises(ValueError, match="low bound is above"):
        ProtectedLayer(nn.Linear(2, 2), [], low=torch.ones(2), high=torch.zeros(2))


def _plan(layers: list[LayerProtection], ranges: dict | None = None) -> HardeningPlan:
    return HardeningPlan("given", 0.0, ("tmr",), tuple(layers), 0.0, 0.0, {"total": 0.0},
                         {"total": 0.0}, ranges=ranges or {})  # fmt: skip


TMR = {0: (1, 2), 1: (0, 5), 2: (3,)}
NAMES = {0: "0", 1: "3", 2: "6"}


def test_tmr_masks_every_fault_of_its_channels_by_the_oracle() -> None:
    torch.set_num_threads(1)
    net, x = tiny_net(), images()
    plan = _plan([LayerProtection(n, NAMES[n], tmr_channels=c) for n, c in TMR.items()])
    protected = apply(plan, net)
    assert torch.equal(protected(x), net(x))
    engine = SimulationEngine(protected, x)
    assert [i.name for i in engine.catalogue] == ["0.layer", "3.layer", "6.layer"]
    oracle, plain = Oracle(protected, x, view=engine.model), Oracle(net, x)
    for num, channels in TMR.items():
        info = engine.layer(num)
        for channel in (
            channels[0],
            next(c for c in range(info.out_channels) if c not in channels),
        ):
            sites = channel * info.fan_in + np.arange(info.fan_in)
            pop = FaultPopulation(info, "weights", "flip", sites)
            want = _oracle(oracle, pop)
            np.testing.assert_array_equal(_package(engine, pop), want)
            if channel in channels:
                assert not want.any(), f"layer {num} channel {channel}: a TMR fault got through"
                # and the same faults in the user's model are critical somewhere
                plain_pop = FaultPopulation(
                    SimulationEngine(net, x).layer(num), "weights", "flip", sites
                )
                assert _oracle(plain, plain_pop).any()
        per_channel = int(np.prod(info.output_shape[1:])) if len(info.output_shape) > 1 else 1
        neurons = np.array([channels[0] * per_channel, channels[0] * per_channel + per_channel - 1])
        pop = FaultPopulation(info, "operands", "flip", operand_sites(info, neurons))
        want = _oracle(oracle, pop)
        np.testing.assert_array_equal(_package(engine, pop), want)
        assert not want.any(), f"layer {num}: an operand fault of a TMR channel got through"


# ------------------------------------------------------------------ the plan against FI
def _protected_fi(
    plan: HardeningPlan, net: nn.Module, x: torch.Tensor
) -> dict[str, dict[int, float]]:
    """Exhaustive FI of the protected copy: every operand fault, and the weight faults of the
    bits ECC does not cover (the covered ones are corrected: masked)."""
    campaign = ExhaustiveCampaign(SimulationEngine(apply(plan, net), x))
    act = {x.layer_num: x.lvf for x in campaign.run("operands").layers}
    wts = {}
    for num in range(3):
        prot = plan.protections.get(num)
        keep = [b for b in range(32) if not prot or b not in prot.ecc_bits]
        if not keep:
            wts[num] = 0.0
            continue
        spec = "flip" if len(keep) == 32 else "flip:" + ",".join(map(str, keep))
        layer = campaign.run("weights", layers=[num], fault_model=spec).layers[0]
        wts[num] = layer.lvf * len(keep) / 32
    return {"activations": act, "weights": wts}


@pytest.mark.parametrize("mechanisms", [("tmr",), ("ecc",)])
def test_plan_on_exhaustive_fi_predicts_the_protected_model_exactly(
    exhaustive: VulnerabilityResult, mechanisms: tuple[str, ...]
) -> None:
    net, x = tiny_net(), images()
    plan = harden(exhaustive, 0.3, mechanisms)
    assert plan.layers and plan.predicted["total"] < plan.baseline["total"]
    assert plan.baseline["total"] == pytest.approx(exhaustive.mvf_total, rel=1e-12)
    measured = _protected_fi(plan, net, x)
    pred = predict(exhaustive, plan.protections, channel_counts(exhaustive))
    for num in range(3):
        assert measured["activations"][num] == pytest.approx(pred.lvf_activations[num], abs=1e-12)
        assert measured["weights"][num] == pytest.approx(pred.lvf_weights[num], abs=1e-12)


def test_verify_finds_the_promise_within_its_margin(exhaustive: VulnerabilityResult) -> None:
    net, x = tiny_net(), images()
    plan = harden(exhaustive, 0.3, ("tmr", "ecc"))
    result = assert_model_unchanged(
        net, lambda: verify(plan, net, x, e=0.03, holdout=images(16, 5))
    )
    assert result.held is True
    assert abs(result.sfi["total"] - plan.predicted["total"]) <= result.sfi_margin
    assert result.agreement == 1.0  # TMR and ECC change nothing fault-free
    assert result.analysis is not None and result.analysis["total"] < plan.baseline["total"]
    assert [r["layer_num"] for r in result.layers] == [0, 1, 2]


MACS = {0: 9 * 36, 1: 18 * 16, 2: 96}  # MACs per output channel and image
WEIGHTS = {0: 36, 1: 108, 2: 480}  # conv 1 is grouped: 6 x 2 x 3 x 3
CHANNELS = {0: 4, 1: 6, 2: 5}
TOTAL_MACS = sum(MACS[n] * CHANNELS[n] for n in MACS)
TOTAL_BITS = 32 * sum(WEIGHTS.values())


def _tmr_cost(n: int, layers: list[int]) -> float:
    """One TMR channel: the larger of its shares of extra MACs and of extra weight memory (of
    the layers planned on)."""
    macs = sum(MACS[m] * CHANNELS[m] for m in layers)
    bits = 32 * sum(WEIGHTS[m] for m in layers)
    return max(2 * MACS[n] / macs, 2 * WEIGHTS[n] // CHANNELS[n] * 32 / bits)


def _ecc_cost(n: int, bits: tuple[int, ...], layers: list[int]) -> float:
    total = 32 * sum(WEIGHTS[m] for m in layers)
    return hamming_check_bits(len(bits)) * WEIGHTS[n] / total if bits else 0.0


def test_overheads_count_replicas_and_check_bits(exhaustive: VulnerabilityResult) -> None:
    plan = harden(exhaustive, 0.3, ("tmr", "ecc"))
    extra = sum(2 * MACS[p.layer_num] * len(p.tmr_channels) for p in plan.layers)
    assert plan.overhead_macs == pytest.approx(extra / TOTAL_MACS)
    check = sum(
        hamming_check_bits(len(p.ecc_bits)) * WEIGHTS[p.layer_num]
        for p in plan.layers
        if p.ecc_bits
    )
    replicas = sum(
        2 * len(p.tmr_channels) * WEIGHTS[p.layer_num] // CHANNELS[p.layer_num] * 32
        for p in plan.layers
    )
    assert plan.overhead_memory == pytest.approx((check + replicas) / TOTAL_BITS)
    assert plan.overhead_macs <= 0.3 and plan.overhead_memory <= 0.3


# --------------------------------------------------------------------- the planner itself
# The planner rounds costs up to 1/4096 of the budget: it fits the budget, and no plan within
# budget * (1 - layers / 4096) is better.
SLACK = 1 - 3 / 4096


def _options(n: int, mechanisms: tuple[str, ...]) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    groups = [()] + ([ecc_bits(g) for g in ("exponent-msb", "exponent", "sign-exponent", "word")]
                     if "ecc" in mechanisms else [])  # fmt: skip
    subsets = [()]
    if "tmr" in mechanisms:
        subsets = [
            s for r in range(CHANNELS[n] + 1) for s in itertools.combinations(range(CHANNELS[n]), r)
        ]
    return [(bits, tmr) for bits in groups for tmr in subsets]


def _brute_force(
    result: VulnerabilityResult, layers: list[int], mechanisms: tuple[str, ...], budget: float
) -> float:
    channels = channel_counts(result)
    best = np.inf
    for combo in itertools.product(*[_options(n, mechanisms) for n in layers]):
        cost = sum(
            _ecc_cost(n, b, layers) + len(t) * _tmr_cost(n, layers)
            for n, (b, t) in zip(layers, combo, strict=True)
        )
        if cost > budget:
            continue
        prot = {
            n: LayerProtection(n, NAMES[n], t, b) for n, (b, t) in zip(layers, combo, strict=True)
        }
        best = min(best, predict(result, prot, channels).mvf_total)
    return best


@pytest.mark.parametrize("mechanisms", [("tmr",), ("ecc",)])
def test_planner_is_the_brute_force_optimum(
    exhaustive: VulnerabilityResult, mechanisms: tuple[str, ...]
) -> None:
    for budget in (0.05, 0.15, 0.3):
        plan = harden(exhaustive, budget, mechanisms)
        assert plan.overhead_macs <= budget and plan.overhead_memory <= budget
        best = _brute_force(exhaustive, [0, 1, 2], mechanisms, budget * SLACK)
        assert plan.predicted["total"] <= best + 1e-15


def test_mixed_planner_is_the_brute_force_optimum(exhaustive: VulnerabilityResult) -> None:
    """ECC and TMR in one layer overlap (a TMR channel's weight faults are already corrected):
    the joint optimum over every (ECC group, channel subset) of two layers."""
    two = VulnerabilityResult.from_layers(
        "exhaustive", [x for x in exhaustive.layers if x.layer_num < 2]
    )
    for budget in (0.1, 0.3):
        plan = harden(two, budget, ("tmr", "ecc"))
        assert plan.overhead_macs <= budget and plan.overhead_memory <= budget
        best = _brute_force(two, [0, 1], ("tmr", "ecc"), budget * (1 - 2 / 4096))
        assert plan.predicted["total"] <= best + 1e-15


def test_knapsack_against_brute_force() -> None:
    rng = np.random.default_rng(0)
    for _ in range(40):
        groups = [
            (rng.integers(0, 6, size=rng.integers(1, 4)), rng.random(3)[:0]) for _ in range(3)
        ]
        groups = [(c, rng.random(len(c))) for c, _ in groups]
        capacity = int(rng.integers(0, 12))
        picks = choose(groups, capacity)
        got = sum(g[1][j] for g, j in zip(groups, picks, strict=True) if j >= 0)
        assert sum(g[0][j] for g, j in zip(groups, picks, strict=True) if j >= 0) <= capacity
        best = 0.0
        for combo in itertools.product(*[range(-1, len(c)) for c, _ in groups]):
            cost = sum(g[0][j] for g, j in zip(groups, combo, strict=True) if j >= 0)
            if cost <= capacity:
                best = max(best, sum(g[1][j] for g, j in zip(groups, combo, strict=True) if j >= 0))
        assert got == pytest.approx(best)


def test_baselines_stay_within_budget(exhaustive: VulnerabilityResult) -> None:
    for strategy in ("first-layers", "weights", "random"):
        plan = harden(exhaustive, 0.2, ("tmr",), strategy=strategy, seed=3)
        assert plan.overhead_macs <= 0.2 and plan.overhead_memory <= 0.2
        assert plan.strategy == strategy
        assert plan.predicted["total"] <= plan.baseline["total"]
    first = harden(exhaustive, 0.2, ("tmr",), strategy="first-layers")
    assert [p.layer_num for p in first.layers][0] == 0


def test_harden_refuses_what_it_cannot_plan(exhaustive: VulnerabilityResult) -> None:
    only_weights = VulnerabilityResult.from_layers(
        "exhaustive", [x for x in exhaustive.layers if x.target == "weights"]
    )
    with pytest.raises(ValueError, match="both weights and operands"):
        harden(only_weights, 0.1)
    with pytest.raises(ValueError, match="budget"):
        harden(exhaustive, -0.1)
    with pytest.raises(ValueError, match="unknown mechanisms"):
        harden(exhaustive, 0.1, ("duplicate",))
    with pytest.raises(ValueError, match="unknown strategy"):
        harden(exhaustive, 0.1, strategy="best")


def test_sampled_result_needs_the_model() -> None:
    from pytorchfi_deepvigor import DeepVigorAnalyzer

    net, x = tiny_net(), images()
    result = DeepVigorAnalyzer(net, x).analyze(target="both", sampling=0.5)
    with pytest.raises(ValueError, match="pass the model"):
        harden(result, 0.1)
    plan = assert_model_unchanged(net, lambda: harden(result, 0.1, model=net))
    assert plan.options["channels"] == {"0": 4, "1": 6, "2": 5}


# ------------------------------------------------------------------------ range restriction
def test_clamp_changes_nothing_on_its_calibration_images() -> None:
    net = tiny_net()
    calibration = images(32, seed=7)
    ranges = assert_model_unchanged(net, lambda: restrict_ranges(net, calibration))
    model = clamped(net, ranges, NAMES)
    assert torch.equal(model(calibration), net(calibration))
    # an Inf in a clamped layer's output is held to the bound: the exponent flip of weight 0
    engine = SimulationEngine(model, images())
    fi = ExhaustiveCampaign(engine).run("weights", layers=[0], channels=[0])
    plain = ExhaustiveCampaign(SimulationEngine(net, images())).run(
        "weights", layers=[0], channels=[0]
    )
    assert fi.layers[0].cvf[0] < plain.layers[0].cvf[0]
    oracle = Oracle(model, images(), view=engine.model)
    info = engine.layer(0)
    pop = FaultPopulation(info, "weights", "flip", np.arange(info.fan_in))
    np.testing.assert_array_equal(_package(engine, pop), _oracle(oracle, pop))


class FailsOnThree(nn.Sequential):
    """Raises in its forward on a batch of three: after restrict_ranges put its hooks on."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) == 3:
            raise RuntimeError("boom")
        return super().forward(x)


def test_per_layer_ranges_hold_every_channel_to_the_layers_range() -> None:
    net, calibration = tiny_net(), images(32, seed=7)
    per_channel = restrict_ranges(net, calibration)
    per_layer = restrict_ranges(net, calibration, per="layer", margin=0.5)
    for num, (low, high) in per_layer.items():
        lo, hi = min(per_channel[num][0]), max(per_channel[num][1])
        assert len(set(low)) == 1 and len(set(high)) == 1  # float32 arithmetic: approx
        assert low[0] == pytest.approx(lo - 0.5 * (hi - lo), rel=1e-6)
        assert high[0] == pytest.approx(hi + 0.5 * (hi - lo), rel=1e-6)
    assert torch.equal(clamped(net, per_layer, NAMES)(calibration), net(calibration))
    with pytest.raises(ValueError, match="per='channel' or per='layer'"):
        restrict_ranges(net, calibration, per="neuron")


def test_restrict_ranges_leaves_the_model_when_it_raises() -> None:
    net = FailsOnThree(*tiny_net())
    call = lambda: restrict_ranges(net, images(5), max_batch=3)  # noqa: E731
    assert_model_unchanged(net, call, raises=RuntimeError, match="boom")
    with pytest.raises(ValueError, match="not in the catalogue"):
        restrict_ranges(net, images(), layers=[7])


# ------------------------------------------------------------------- plans as files, entry points
def test_plan_round_trips_and_refuses_edits(exhaustive: VulnerabilityResult, tmp_path) -> None:
    plan = harden(exhaustive, 0.1, ranges=restrict_ranges(tiny_net(), images(16, seed=3)))
    path = tmp_path / "plan.json"
    plan.to_json(path)
    again = HardeningPlan.from_json(path)
    assert again.to_dict() == plan.to_dict()
    data = json.loads(path.read_text())
    del data["layers"]
    with pytest.raises(ValueError, match="missing layers"):
        HardeningPlan.from_dict(data)
    path.write_text(path.read_text()[:-20])
    with pytest.raises(ValueError, match="not valid JSON"):
        HardeningPlan.from_json(path)


def test_entry_points_leave_the_model_unchanged(exhaustive: VulnerabilityResult) -> None:
    net = tiny_net().train()
    plan = harden(exhaustive, 0.2, ("tmr",))
    protected = assert_model_unchanged(net, lambda: apply(plan, net))
    assert (
        isinstance(protected[0], ProtectedLayer)
        or isinstance(protected[3], ProtectedLayer)
        or isinstance(protected[6], ProtectedLayer)
    )
    bad = _plan([LayerProtection(0, "1", tmr_channels=(0,))])  # a BatchNorm, not a layer
    call = lambda: apply(bad, net)  # noqa: E731
    assert_model_unchanged(net, call, raises=ValueError, match="not an nn.Conv2d or nn.Linear")


def test_verify_with_a_reference_injects_only_what_the_plan_protects(
    exhaustive: VulnerabilityResult,
) -> None:
    net, x = tiny_net(), images()
    plan = harden(exhaustive, 0.25, ("tmr",))
    touched = {p.layer_num for p in plan.layers}
    assert touched and touched != {0, 1, 2}
    result = verify(plan, net, x, e=0.03, analysis=False, reference=exhaustive)
    for row in result.layers:
        untouched = row["layer_num"] not in touched
        assert (row.get("sfi_weights_from") == "reference") == untouched
        if untouched:  # exhaustive FI of the user's model: these are its exact VFs
            assert row["sfi_weights"] == exhaustive.layer(row["layer_num"], "weights").lvf
    assert result.held is True
    clamping = harden(exhaustive, 0.1, ("tmr",), ranges=restrict_ranges(net, images(16, seed=3)))
    with pytest.raises(ValueError, match="without reference"):
        verify(clamping, net, x, reference=exhaustive)


class Standardised(nn.Conv2d):
    """A convolution that standardises its filters in forward (timm's StdConv2d, in short)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        w = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / (w.std(dim=(1, 2, 3), keepdim=True) + 1e-5)
        return self._conv_forward(x, w, self.bias)


def test_layers_with_their_own_forward_get_no_tmr(exhaustive: VulnerabilityResult) -> None:
    with pytest.raises(ValueError, match="Standardised computes its own forward"):
        ProtectedLayer(Standardised(1, 4, 3), [0])
    clamp_only = ProtectedLayer(
        Standardised(1, 4, 3), [], torch.full((4,), -9.0), torch.full((4,), 9.0)
    )
    x = torch.randn(2, 1, 5, 5)
    assert torch.equal(clamp_only(x), clamp_only.layer(x))  # a clamp needs no replica
    net = tiny_net()
    odd = Standardised(1, 4, 3)
    odd.load_state_dict(net[0].state_dict())
    net[0] = odd
    plan = harden(exhaustive, 0.3, ("tmr", "ecc"), model=net)
    assert all(not p.tmr_channels for p in plan.layers if p.layer_num == 0)
    forced = _plan([LayerProtection(0, "0", tmr_channels=(1,))])
    call = lambda: apply(forced, net)  # noqa: E731
    assert_model_unchanged(net, call, raises=ValueError, match="cannot be triplicated")


def test_a_recorded_sample_is_never_taken_for_every_channel() -> None:
    from pytorchfi_deepvigor import DeepVigorAnalyzer

    net, x = tiny_net(), images()
    result = DeepVigorAnalyzer(net, x).analyze(target="both", sampling=0.5)
    contiguous = [
        dataclasses.replace(layer, channels=tuple(range(len(layer.channels))))
        for layer in result.layers
    ]
    relabelled = dataclasses.replace(result, layers=tuple(contiguous))
    with pytest.raises(ValueError, match="pass the model"):
        harden(relabelled, 0.1)


def test_verify_refuses_a_bad_reference_or_holdout_before_any_work(
    exhaustive: VulnerabilityResult,
) -> None:
    from pytorchfi_deepvigor import DeepVigorAnalyzer

    net, x = tiny_net(), images()
    plan = harden(exhaustive, 0.25, ("tmr",))
    analysis = DeepVigorAnalyzer(net, x).analyze(target="both")
    with pytest.raises(ValueError, match="'deepvigor' result: give exhaustive FI"):
        verify(plan, net, x, reference=analysis)
    with pytest.raises(ValueError, match="ran on 8 images, the verification on 4"):
        verify(plan, net, x[:4], reference=exhaustive)
    with pytest.raises((ValueError, TypeError)):
        verify(plan, net, x, holdout="not images")
