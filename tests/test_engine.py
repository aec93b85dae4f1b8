"""The simulation engine against plain in-place injection plus a full forward."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tiny_models import TINY_MODELS, seeded_images
from torch import nn

from pytorchfi_deepvigor.bits import flip_bit
from pytorchfi_deepvigor.engine import Outcome, SimulationEngine, classify, fingerprint
from pytorchfi_deepvigor.perturbations import ChannelAdd, ChannelSet, NeuronAdd, NeuronSet


def _reference_logits(model, images, info, image_idx, edit):
    """Full forward of each element with a hook editing the layer's output in place."""
    outs = []
    for b, i in enumerate(image_idx.tolist()):

        def hook(_m, _inp, out, b=b):
            out = out.clone()
            edit(out, b)
            return out

        with info.module.register_forward_hook(hook), torch.no_grad():
            outs.append(model(images[i : i + 1]))
    return torch.cat(outs)


def _random_neuron_faults(info, n, num_images, gen):
    shape = info.output_shape
    c = torch.randint(shape[0], (n,), generator=gen)
    h = (
        torch.randint(shape[1], (n,), generator=gen)
        if len(shape) == 3
        else torch.zeros(n, dtype=torch.long)
    )
    w = (
        torch.randint(shape[2], (n,), generator=gen)
        if len(shape) == 3
        else torch.zeros(n, dtype=torch.long)
    )
    bits = torch.randint(32, (n,), generator=gen)
    img = torch.randint(num_images, (n,), generator=gen)
    return img, c, h, w, bits


@pytest.mark.parametrize("use_fx", [True, False], ids=["fx", "hooks"])
@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_stored_activation_faults_match_inplace_injection(name, use_fx):
    model = TINY_MODELS[name]()
    images = seeded_images(6)
    eng = SimulationEngine(model, images, use_fx=use_fx, max_batch=7)
    assert eng.uses_fx == use_fx
    gen = torch.Generator().manual_seed(3)
    for info in eng.catalogue:
        img, c, h, w, bits = _random_neuron_faults(info, 20, 6, gen)
        golden = eng.layer_output(info.layer_num)
        idx = (img, c, h, w) if golden.dim() == 4 else (img, c)
        flipped = flip_bit(golden[idx], bits)
        pert = NeuronSet(c, h, w, flipped)
        got = eng.run(info.layer_num, img, pert)

        def edit(out, b, c=c, h=h, w=w, flipped=flipped):
            if out.dim() == 4:
                out[0, c[b], h[b], w[b]] = flipped[b]
            else:
                out[0, c[b]] = flipped[b]

        ref = _reference_logits(model, images, info, img, edit)
        gold = eng.golden_logits[img]
        assert torch.equal(classify(got, gold), classify(ref, gold)), (name, info.name)
        finite = torch.isfinite(ref).all(1)
        torch.testing.assert_close(got[finite], ref[finite], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_weight_faults_match_inplace_weight_injection(name):
    """A channel recomputed with the faulty filter equals flipping the live weight and a full forward."""
    model = TINY_MODELS[name]()
    images = seeded_images(5)
    eng = SimulationEngine(model, images)
    gen = torch.Generator().manual_seed(4)
    for info in eng.catalogue:
        if info.kind != "Conv2d":
            continue
        weight = info.module.weight
        for _ in range(4):
            k = int(torch.randint(weight.shape[0], (1,), generator=gen))
            j = tuple(int(torch.randint(s, (1,), generator=gen)) for s in weight.shape[1:])
            bit = int(torch.randint(32, (1,), generator=gen))
            faulty = weight.detach().clone()
            faulty[(k, *j)] = flip_bit(faulty[(k, *j)], bit)
            x = eng.layer_input(info.layer_num)
            conv = info.module
            ch = nn.functional.conv2d(
                x, faulty, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups
            )[:, k : k + 1]
            img = torch.arange(5)
            got = eng.outcomes(info.layer_num, img, ChannelSet(torch.full((5,), k), ch[:, 0]))
            original = weight.detach().clone()
            try:
                with torch.no_grad():
                    weight.copy_(faulty)
                    ref = model(images)
            finally:
                with torch.no_grad():
                    weight.copy_(original)
            assert torch.equal(got, classify(ref, eng.golden_logits)), (name, info.name, k, j, bit)


def test_neuron_and_channel_add_are_deltas():
    model = TINY_MODELS["resnet"]()
    eng = SimulationEngine(model, seeded_images(4))
    img = torch.tensor([0, 1, 2, 3])
    zero = torch.zeros(4, dtype=torch.long)
    out0 = eng.run(2, img, NeuronAdd(zero, zero, zero, torch.zeros(4)))
    torch.testing.assert_close(out0, eng.golden_logits, rtol=1e-5, atol=1e-5)
    assert torch.equal(classify(out0, eng.golden_logits), torch.zeros(4, dtype=torch.int8))
    big = eng.critical(2, img, ChannelAdd(zero, torch.full((4,), 1e30)))
    assert big.dtype == torch.bool and big.shape == (4,)
    nan = eng.outcomes(2, img, ChannelAdd(zero, torch.full((4,), float("nan"))))
    assert (nan == Outcome.DUE).all()


def test_chunking_does_not_change_results():
    model = TINY_MODELS["mobilenet"]()
    images = seeded_images(6)
    a = SimulationEngine(model, images, max_batch=1)
    b = SimulationEngine(model, images, max_batch=1000)
    img = torch.arange(6).repeat(3)
    ch = torch.arange(18) % 4
    pert = ChannelAdd(ch, torch.linspace(-50, 50, 18))
    torch.testing.assert_close(a.run(1, img, pert), b.run(1, img, pert), rtol=1e-5, atol=1e-5)
    assert a.stats.batched_forwards == 18 and b.stats.batched_forwards == 1
    assert a.stats.image_evaluations == b.stats.image_evaluations == 18


@pytest.mark.parametrize("dead", [False, True], ids=["live", "dead-layer"])
def test_verdicts_keep_what_judge_decides_and_a_fingerprint_of_its_logits(dead: bool) -> None:
    """verdicts: judge's criticality and fingerprint(logits), chunk by chunk; a callable builds
    each chunk's perturbations (the same elements as the whole perturbation)."""
    model = TINY_MODELS["mobilenet"]()
    eng = SimulationEngine(model, seeded_images(6), max_batch=4)
    layer = eng.catalogue[1].layer_num
    if dead:  # a layer nothing reads: every element golden
        eng.catalogue[layer] = dataclasses.replace(eng.catalogue[layer], dead="unread")
    img = torch.arange(6).repeat(3)
    pert = ChannelAdd(torch.arange(18) % 4, torch.linspace(-3e38, 3e38, 18))
    crit, logits = eng.judge(layer, img, pert)
    assert crit.any() or dead
    got = eng.verdicts(layer, img, pert)
    assert got[0].equal(crit) and got[1].equal(fingerprint(logits))
    built: list[tuple[int, int]] = []

    def elements(a: int, b: int) -> ChannelAdd:
        built.append((a, b))
        return ChannelAdd(pert.channel[a:b], pert.value[a:b])

    lazy = eng.verdicts(layer, img, elements)
    assert lazy[0].equal(crit) and lazy[1].equal(got[1])
    assert built == ([] if dead else [(a, min(a + 4, 18)) for a in range(0, 18, 4)])
    assert eng.run(layer, img, elements).view(torch.int32).equal(logits.view(torch.int32))
    with pytest.raises(ValueError, match="batch mismatch: 1 perturbations built for elements 0:4"):
        eng.verdicts(0, img, lambda a, b: ChannelAdd(torch.zeros(1, dtype=torch.long), [0.0]))


def test_fingerprints_tell_bitwise_different_logits_apart() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4096, 1000, generator=gen)
    keys = fingerprint(logits)
    assert keys.dtype == torch.int64 and keys.unique().numel() == 4096
    assert fingerprint(logits.clone()).equal(keys)
    near = logits.clone()
    near[0, 7] = torch.nextafter(near[0, 7], torch.tensor(float("inf")))  # one ulp
    near[1, 3] = -near[1, 3]  # a sign
    near[2] = torch.where(near[2] > 0, torch.zeros(()), near[2])
    near[3] = torch.where(near[3] > 0, -torch.zeros(()), near[3])  # -0.0 is not 0.0
    differs = fingerprint(near) != keys
    assert differs[:4].all() and not differs[4:].any()
    wide = torch.randn(2, 100_000, generator=gen)  # more halves than one exact float64 sum takes
    last = wide.clone()
    last[1, -1] = -last[1, -1]
    assert (fingerprint(last) != fingerprint(wide)).tolist() == [False, True]
    with pytest.raises(ValueError, match=r"expected float32 logits \(B, classes\)"):
        fingerprint(logits.double())


def test_engine_leaves_model_unchanged_and_restores_train_mode():
    model = TINY_MODELS["resnet"]().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    eng = SimulationEngine(model, seeded_images(4))
    eng.run(1, torch.tensor([0, 1]), ChannelAdd(torch.tensor([0, 1]), torch.tensor([3.0, -3.0])))
    with pytest.raises(ValueError):
        eng.run(99, torch.tensor([0]), ChannelAdd(torch.tensor([0]), torch.tensor([1.0])))
    assert all(m.training for m in model.modules())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize(
    ("make", "exc", "match"),
    [
        (lambda m, x: SimulationEngine(m.double(), x.double()), TypeError, "float32"),
        (lambda m, x: SimulationEngine(m, x[:0]), ValueError, "empty"),
        (lambda m, x: SimulationEngine(m, x.masked_fill(x > 1, float("nan"))), ValueError, "NaN"),
        (lambda m, x: SimulationEngine(m, x, max_batch=0), ValueError, "max_batch"),
        (lambda m, x: SimulationEngine(m, x.int()), TypeError, "float32 images"),
        (lambda m, x: SimulationEngine(m, x).layer(7), ValueError, "out of range"),
        (
            lambda m, x: SimulationEngine(m, x).run(
                0, torch.tensor([0, 1]), ChannelAdd(torch.tensor([0]), torch.tensor([1.0]))
            ),
            ValueError,
            "batch mismatch",
        ),
        (
            lambda m, x: SimulationEngine(m, x).run(
                0, torch.tensor([0]), ChannelAdd(torch.tensor([9]), torch.tensor([1.0]))
            ),
            ValueError,
            "channel out of range",
        ),
        (
            lambda m, x: SimulationEngine(m, x).run(
                0, torch.tensor([9]), ChannelAdd(torch.tensor([0]), torch.tensor([1.0]))
            ),
            ValueError,
            "image_idx out of range",
        ),
    ],
    ids=[
        "float64",
        "empty",
        "nan-input",
        "max-batch",
        "int-images",
        "layer-range",
        "mismatch",
        "channel",
        "image",
    ],
)
def test_bad_input_errors(make, exc, match):
    with pytest.raises(exc, match=match):
        make(TINY_MODELS["vgg"](), seeded_images(3))


def test_untraceable_model_uses_hooks():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.fc = nn.Linear(2 * 6 * 6, 3)

        def forward(self, x):
            y = self.conv(x)
            if y.sum() > -1e9:  # data-dependent control flow: fx cannot trace this
                y = y.relu()
            return self.fc(y.flatten(1))

    torch.manual_seed(0)
    eng = SimulationEngine(Branchy(), seeded_images(3))
    assert not eng.uses_fx
    out = eng.run(0, torch.tensor([0, 1, 2]), ChannelAdd(torch.tensor([0, 1, 0]), torch.zeros(3)))
    torch.testing.assert_close(out, eng.golden_logits)


@pytest.mark.parametrize("use_fx", [True, False], ids=["fx", "hooks"])
def test_prepare_all_layers_in_one_pass_equals_lazy_cuts(use_fx):
    model = TINY_MODELS["resnet"]()
    images = seeded_images(5)
    lazy = SimulationEngine(model, images, use_fx=use_fx)
    eager = SimulationEngine(model, images, use_fx=use_fx)
    eager.prepare()
    img = torch.arange(5)
    for info in lazy.catalogue:
        n = info.layer_num
        assert torch.equal(lazy.layer_input(n), eager.layer_input(n))
        assert torch.equal(lazy.layer_output(n), eager.layer_output(n))
        pert = ChannelAdd(torch.zeros(5, dtype=torch.long), torch.linspace(-4, 4, 5))
        assert torch.equal(lazy.run(n, img, pert), eager.run(n, img, pert))


@pytest.mark.parametrize("layer", [0, -1], ids=["checkpointed", "head"])
def test_masked_is_judged_against_the_suffix_path_not_the_plain_forward(layer: int) -> None:
    """The suffix may run in other layouts than the plain forward (channels-last; SwinV2 moves
    its logits by 1.2x the masking tolerance with no fault): a fault that changes nothing is
    masked, one that changes the logits is not; critical is judged against the golden run."""
    make = TINY_MODELS["vgg"]
    engine = SimulationEngine(make(), seeded_images(6))
    num = engine.catalogue[layer].layer_num
    true = engine.reference_logits(num).clone()
    scale = engine.golden_logits.abs().amax(dim=1, keepdim=True)
    engine.golden_logits = engine.golden_logits + 3e-5 * scale  # the plain path, "rounded"
    idx = torch.arange(6)
    nothing = ChannelAdd(torch.zeros(6, dtype=torch.long), torch.zeros(6))
    assert (engine.outcomes(num, idx, nothing) == int(Outcome.MASKED)).all()
    assert engine.reference_logits(num).equal(true)
    big = ChannelAdd(torch.zeros(6, dtype=torch.long), torch.full((6,), 50.0))
    codes = engine.outcomes(num, idx, big)
    logits = engine.run(num, idx, big)
    assert (codes != int(Outcome.MASKED)).all()
    assert ((codes == int(Outcome.CRITICAL)) == (logits.argmax(1) != engine.golden_top1)).all()
