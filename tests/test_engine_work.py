"""Early exit at the suffix checkpoint, the channels-last layout, BatchNorm folding and per-layer
chunk sizes change the work the engine does, not its results."""

from __future__ import annotations

import pytest
import torch
from tiny_models import TINY_MODELS, seeded_images

from pytorchfi_deepvigor.bits import flip_bit
from pytorchfi_deepvigor.engine import SimulationEngine, _plan, classify
from pytorchfi_deepvigor.perturbations import ChannelAdd, NeuronAdd, NeuronSet

# (early_exit, channels_last, fold_batchnorm)
CONFIGS = [
    (True, True, True),
    (True, False, False),
    (False, True, True),
    (False, True, False),
    (True, True, False),
    (False, False, False),
]


def _faults(eng, info, n, gen):
    """Bit flips of stored activations and deltas of both signs, for ``n`` random neurons."""
    shape = (*info.output_shape, 1, 1)[:3]
    img = torch.randint(eng.num_images, (n,), generator=gen)
    c, h, w = (torch.randint(s, (n,), generator=gen) for s in shape)
    golden = eng.layer_output(info.layer_num)
    idx = (img, c, h, w) if golden.dim() == 4 else (img, c)
    flipped = flip_bit(golden[idx], torch.randint(32, (n,), generator=gen))
    delta = torch.randn(n, generator=gen) * 10.0 ** torch.randint(-3, 4, (n,), generator=gen)
    return img, [NeuronSet(c, h, w, flipped), NeuronAdd(c, h, w, delta), ChannelAdd(c, delta)]


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_early_exit_and_layout_give_the_same_outcomes(name):
    model = TINY_MODELS[name]()
    images = seeded_images(6)
    engines = {
        cfg: SimulationEngine(
            model,
            images,
            early_exit=cfg[0],
            channels_last=cfg[1],
            fold_batchnorm=cfg[2],
            max_batch=9,
        )
        for cfg in CONFIGS
    }
    plain = engines[(False, False, False)]
    gen = torch.Generator().manual_seed(5)
    for info in plain.catalogue:
        img, perts = _faults(plain, info, 40, gen)
        for pert in perts:
            ref = plain.run(info.layer_num, img, pert)
            want = classify(ref, plain.golden_logits[img])
            for cfg, eng in engines.items():
                if eng is plain:
                    continue
                got = eng.run(info.layer_num, img, pert)
                assert torch.equal(classify(got, eng.golden_logits[img]), want), (cfg, info.name)
                finite = torch.isfinite(ref).all(1)
                torch.testing.assert_close(got[finite], ref[finite], rtol=1e-4, atol=1e-4)
    for cfg, eng in engines.items():
        assert eng.stats.image_evaluations == plain.stats.image_evaluations
        if cfg[0]:  # some faults are masked by a ReLU / max-pool: they stop early, cheaper
            assert eng.stats.early_exits > 0
            assert eng.stats.suffix_flops < plain.stats.suffix_flops
        else:
            assert eng.stats.early_exits == 0
            assert eng.stats.suffix_flops == plain.stats.suffix_flops


def test_masked_elements_get_exactly_the_golden_logits():
    model = TINY_MODELS["resnet"]()
    eng = SimulationEngine(model, seeded_images(4))
    golden = eng.layer_output(0)
    # a large negative delta on a neuron whose BN + ReLU output is already zero is masked
    bn = model.bn1
    after_bn = (golden - bn.running_mean.view(1, -1, 1, 1)) / torch.sqrt(
        bn.running_var.view(1, -1, 1, 1) + bn.eps
    ) * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)
    img, c, h, w = (
        t[:4]
        for t in torch.nonzero((after_bn < 0) & (bn.weight > 0).view(1, -1, 1, 1), as_tuple=True)
    )
    before = eng.stats.snapshot()
    out = eng.run(0, img, NeuronAdd(c, h, w, torch.full((4,), -1e6)))
    assert (eng.stats - before).early_exits == 4
    assert (eng.stats - before).suffix_flops == 0
    assert torch.equal(out, eng.golden_logits[img])
    # NaN never compares equal: it runs to the end and is a DUE
    nan = eng.run(0, img, NeuronAdd(c, h, w, torch.full((4,), float("nan"))))
    assert not torch.isfinite(nan).all(1).any()


@pytest.mark.parametrize(
    "name, layer, checkpoint",
    [
        ("vgg", "0", "_3"),  # conv -> bn -> relu -> max-pool -> conv: the pool feeds a layer
        ("vgg", "9", "_10"),  # linear -> relu -> linear
        ("vgg", "11", None),  # the last layer: nothing after it
        ("resnet", "conv1", "relu"),  # torch.relu(bn1(conv1(x))) feeds layer1
        ("resnet", "layer1.conv1", "layer1_relu"),  # relu(bn1(.)) feeds conv2
        ("resnet", "layer1.conv2", "layer1_relu_1"),  # bn2 -> add(skip) -> relu feeds layer2
        ("resnet", "layer2.shortcut.0", "flatten"),  # bn -> add -> relu -> pool -> flatten -> fc
        ("mobilenet", "blocks.0.conv.6", "add"),  # projection bn -> residual add feeds block 1
    ],
)
def test_the_checkpoint_is_the_first_dominator_feeding_a_layer(name, layer, checkpoint):
    eng = SimulationEngine(TINY_MODELS[name](), seeded_images(2))
    assert eng._graph is not None
    plan = _plan(eng._graph, layer, eng._layer_flops)
    if checkpoint is None:
        assert len(plan.segments) == 1
    else:
        assert [s.start.name for s in plan.segments[1:]] == [checkpoint]


def test_channels_last_is_internal_only():
    model = TINY_MODELS["resnet"]()
    images = seeded_images(3)
    eng = SimulationEngine(model, images, channels_last=True)
    with torch.no_grad():
        assert torch.equal(eng.golden_logits, model(images))  # golden: the user's own layout
    assert eng.layer_output(1).is_contiguous(memory_format=torch.channels_last)
    assert images.is_contiguous()
    off = SimulationEngine(model, images, channels_last=False)
    assert off.layer_output(1).is_contiguous()


def test_folded_batchnorms_are_engine_copies():
    model = TINY_MODELS["resnet"]()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert not SimulationEngine(model, seeded_images(3))._fused  # opt-in
    eng = SimulationEngine(model, seeded_images(3), fold_batchnorm=True)
    assert eng._fused and all(
        m is not model.get_submodule(n.replace("_", ".")) for n, m in eng._fused.items()
    )
    eng.run(1, torch.arange(3), NeuronAdd(*[torch.zeros(3, dtype=torch.long)] * 3, torch.ones(3)))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # the pair folds only when the BatchNorm reads the convolution alone: VGG's 0 -> 1 folds
    names = set(
        SimulationEngine(TINY_MODELS["vgg"](), seeded_images(2), fold_batchnorm=True)._fused
    )
    assert names == {"_0", "_4"}


def test_suffix_chunks_grow_for_late_layers_within_the_budget():
    model = TINY_MODELS["resnet"]()
    images = seeded_images(6)
    calls = SimulationEngine(model, images)._activation_bytes_per_image()
    per_image = 2 * sum(b for _, b in calls)
    eng = SimulationEngine(model, images, memory_bytes=3 * per_image)
    assert eng.max_batch == 3
    fixed = SimulationEngine(model, images, max_batch=eng.max_batch)
    last_conv = [i.layer_num for i in eng.catalogue if i.kind == "Conv2d"][-1]
    assert eng._layer_batch[0] == eng.max_batch  # the first layer's suffix is the whole network
    assert eng._layer_batch[last_conv] > eng.max_batch  # a short suffix gets larger chunks
    assert eng._layer_batch[last_conv] <= 4 * eng.max_batch
    assert set(fixed._layer_batch.values()) == {eng.max_batch}  # an explicit max_batch is a cap
    img = torch.arange(6).repeat(4)
    zero = torch.zeros(24, dtype=torch.long)
    pert = NeuronAdd(zero, zero, zero, torch.linspace(-20, 20, 24))
    torch.testing.assert_close(
        eng.run(last_conv, img, pert), fixed.run(last_conv, img, pert), rtol=1e-5, atol=1e-5
    )
    assert eng.stats.batched_forwards < fixed.stats.batched_forwards


def test_default_keeps_the_models_own_overflow_folding_does_not():
    """conv (w = 100) -> BN (scale 1e-3): an input of 1e37 overflows the unfolded conv output
    (1e39 -> Inf) but not the folded one (w' = 0.1): the default engine sees the Inf, as PyTorchFI
    on the model as given does."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 1, 1, bias=False),
        torch.nn.Conv2d(1, 1, 1, bias=False),
        torch.nn.BatchNorm2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 3),
    ).eval()
    with torch.no_grad():
        net[1].weight.fill_(100.0)
        net[2].running_var.fill_(1e-6 - net[2].eps)  # scale = 1 / sqrt(1e-6) * gamma
        net[2].weight.fill_(1e-6)  # scale 1e-3
    images = torch.rand(2, 1, 2, 2) + 0.5
    zero = torch.zeros(2, dtype=torch.long)
    pert = ChannelAdd(zero, torch.full((2,), 1e37))
    plain = SimulationEngine(net, images)
    folded = SimulationEngine(net, images, fold_batchnorm=True)
    assert not torch.isfinite(plain.run(0, torch.arange(2), pert)).any()
    assert torch.isfinite(folded.run(0, torch.arange(2), pert)).all()


class _DeadBranch(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = torch.nn.Conv2d(1, 2, 3, padding=1)
        self.c2 = torch.nn.Conv2d(2, 2, 3, padding=1)
        self.fc = torch.nn.Linear(2 * 8 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c1(x)
        _ = y.mean()  # a value after the cut that nothing reads
        return self.fc(torch.flatten(self.c2(torch.relu(y)), 1))


def _inplace_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.ReLU(inplace=True),
        torch.nn.Conv2d(4, 4, 3, padding=1),
        torch.nn.ReLU(inplace=True),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 8 * 8, 3),
    ).eval()


@pytest.mark.parametrize("use_fx", [True, False], ids=["fx", "hooks"])
def test_in_place_activations_do_not_overwrite_the_golden_cache(use_fx):
    net, images = _inplace_net(), seeded_images(4)
    eng = SimulationEngine(net, images, use_fx=use_fx)
    eng.prepare()  # every layer in one pass: the in-place ReLUs run after the convs are cached
    with torch.no_grad():
        conv0 = net[0](images)
    torch.testing.assert_close(eng.layer_output(0), conv0)
    assert float(eng.layer_output(0).min()) < 0  # not the ReLU's output
    plain = SimulationEngine(net, images, use_fx=use_fx, early_exit=False, channels_last=False)
    gen = torch.Generator().manual_seed(2)
    for info in eng.catalogue:
        img, perts = _faults(eng, info, 30, gen)
        for pert in perts:
            got, want = eng.run(info.layer_num, img, pert), plain.run(info.layer_num, img, pert)
            golden = eng.golden_logits[img]
            assert torch.equal(classify(got, golden), classify(want, golden)), info.name
    zero = torch.zeros(4, dtype=torch.long)
    masked = eng.outcomes(0, torch.arange(4), NeuronAdd(zero, zero, zero, torch.zeros(4)))
    assert (masked == 0).all()


def test_a_value_nobody_reads_after_the_layer_is_fine():
    torch.manual_seed(0)
    net, images = _DeadBranch().eval(), seeded_images(3)
    eng = SimulationEngine(net, images)
    zero = torch.zeros(3, dtype=torch.long)
    out = eng.run(0, torch.arange(3), NeuronAdd(zero, zero, zero, torch.full((3,), 5.0)))
    ref = SimulationEngine(net, images, use_fx=False).run(
        0, torch.arange(3), NeuronAdd(zero, zero, zero, torch.full((3,), 5.0))
    )
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
