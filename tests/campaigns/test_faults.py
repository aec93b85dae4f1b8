"""Batched/delta fault evaluation against plain in-place injection and a full forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import TINY_MODELS, seeded_images
from torch import nn

from pytorchfi_deepvigor.campaigns.faults import (
    FaultEvaluator,
    FaultPopulation,
    faulty_values,
    operand_sites,
)
from pytorchfi_deepvigor.engine import SimulationEngine, classify


def _reference_logits(
    model: nn.Module, images: torch.Tensor, pop: FaultPopulation, fault: int
) -> torch.Tensor:
    """Plain injection: flip the live weight, or hook-edit the layer's output; full forward."""
    site_idx, bit, value = (int(a[0]) for a in pop.decode(np.array([fault])))
    site = pop.sites[site_idx]
    info = pop.layer
    module = info.module
    bit_t, value_t = torch.tensor(bit), torch.tensor(value)
    if pop.target == "weights":
        flat = module.weight.data.view(-1)
        golden = flat[int(site)].clone()
        flat[int(site)] = faulty_values(golden, bit_t, value_t)
        try:
            return model(images)
        finally:
            flat[int(site)] = golden

    def hook(_m: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        if pop.target == "stored":
            view = out.view(out.shape[0], -1)
            view[:, int(site)] = faulty_values(view[:, int(site)], bit_t, value_t)
            return out
        neuron, operand = int(site[0]), int(site[1])
        x = inputs[0].clone()
        if info.kind == "Linear":
            x[:, operand] = faulty_values(x[:, operand], bit_t, value_t)
            out[:, neuron] = nn.functional.linear(x, module.weight, module.bias)[:, neuron]
            return out
        _, ho, wo = info.output_shape
        cin_g, kh, kw = info.weight_shape[1:]
        c, pos = divmod(neuron, ho * wo)
        r, q = divmod(pos, wo)
        ci = (c // (info.output_shape[0] // info.groups)) * cin_g + operand // (kh * kw)
        pr = r * info.stride[0] + (operand % (kh * kw)) // kw * info.dilation[0] - info.padding[0]
        pc = q * info.stride[1] + operand % kw * info.dilation[1] - info.padding[1]
        x[:, ci, pr, pc] = faulty_values(x[:, ci, pr, pc], bit_t, value_t)
        out[:, c, r, q] = module._conv_forward(x, module.weight, module.bias)[:, c, r, q]
        return out

    with module.register_forward_hook(hook):
        return model(images)


FLIP_BITS = (0, 7, 15, 20, 22, *range(23, 32))  # every exponent bit, the sign, some mantissa


def _populations(engine: SimulationEngine, target: str, rng: np.random.Generator):
    for info in engine.catalogue:
        if target == "weights":
            sites = rng.choice(info.n_weights, size=min(2, info.n_weights), replace=False)
        elif target == "stored":
            sites = rng.choice(info.neurons_per_image, size=2, replace=False)
        else:
            neurons = rng.choice(info.neurons_per_image, size=2, replace=False)
            all_sites = operand_sites(info, neurons)
            sites = all_sites[rng.choice(len(all_sites), size=2, replace=False)]
        flip = FaultPopulation(info, target, "flip", sites)
        yield flip, np.concatenate([list(flip.stratum(b)) for b in FLIP_BITS])
        stuck = FaultPopulation(info, target, "stuck-at", sites[:1])
        yield stuck, np.concatenate([list(stuck.stratum(b)) for b in (0, 22, 23, 29, 30, 31)])


@pytest.mark.parametrize("target", ["weights", "operands", "stored"])
@pytest.mark.parametrize("name", list(TINY_MODELS))
def test_batched_faults_match_in_place_injection(name: str, target: str) -> None:
    model, images = TINY_MODELS[name](), seeded_images(6)
    engine = SimulationEngine(model, images)
    evaluator = FaultEvaluator(engine)
    rng = np.random.default_rng(0)
    checked = 0
    with torch.no_grad():
        for pop, ids in _populations(engine, target, rng):
            image_idx, pert = evaluator.perturbation(pop, ids)
            fast = engine.outcomes(pop.layer.layer_num, image_idx, pert).view(len(ids), -1)
            for row, f in enumerate(ids):
                slow = classify(_reference_logits(model, images, pop, int(f)), engine.golden_logits)
                assert fast[row].tolist() == slow.tolist(), (pop.layer.name, pop.decode(ids[[row]]))
            counts = evaluator.counts(pop, ids)
            assert (counts == np.stack([(fast == o).sum(1).numpy() for o in range(4)], 1)).all()
            checked += len(ids)
    assert checked > 0


def test_operand_sites_exclude_padding() -> None:
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Flatten(), nn.Linear(75, 2))  # logits
    info = SimulationEngine(net, seeded_images(1, size=5).repeat(1, 2, 1, 1)).layer(0)
    corner, centre, edge = 0, 2 * 5 + 2, 5 * 5 + 2  # (c0, 0, 0), (c0, 2, 2), (c1, 0, 2)
    counts = [len(operand_sites(info, np.array([n]))) for n in (corner, centre, edge)]
    assert counts == [2 * 4, 2 * 9, 2 * 6]


def test_population_rejects_bad_arguments() -> None:
    info = SimulationEngine(nn.Linear(3, 2), torch.zeros(1, 3)).layer(0)
    with pytest.raises(ValueError, match="expected target in"):
        FaultPopulation(info, "bias", "flip", np.arange(2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown fault model"):
        FaultPopulation(info, "weights", "stuck", np.arange(2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fault ids out of range"):
        FaultPopulation(info, "weights", "flip", np.arange(2)).decode(np.array([64]))
