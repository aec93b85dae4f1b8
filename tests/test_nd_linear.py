"""Linear layers on N-D inputs (tokens ``(N, T, F)``, channels-last maps ``(N, H, W, C)``):
catalogue, perturbations, operands, fault evaluation and analysis, against a full forward with
the module's own output (or weight) edited; weight-carrying modules that cannot be analysed are
listed with the reason."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_models import seeded_images
from torch import nn

from pytorchfi_deepvigor.analysis import DeepVigorAnalyzer
from pytorchfi_deepvigor.bits import flip_bit
from pytorchfi_deepvigor.campaigns.faults import FaultEvaluator, FaultPopulation, faulty_values
from pytorchfi_deepvigor.catalogue import build_catalogue, unsupported_layers
from pytorchfi_deepvigor.engine import SimulationEngine, classify
from pytorchfi_deepvigor.functional.receptive import linear_operands, linear_weight_operands
from pytorchfi_deepvigor.perturbations import ChannelAdd, NeuronAdd, NeuronSet


class TinyTokens(nn.Module):
    """Patch conv -> tokens (N, T, D) -> LayerNorm -> MLP with GELU, residual -> mean -> head."""

    def __init__(self, dim: int = 6) -> None:
        super().__init__()
        self.patch = nn.Conv2d(1, dim, 4, stride=4)
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)
        self.head = nn.Linear(dim, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2)  # (N, 4, dim)
        t = t + self.fc2(F.gelu(self.fc1(self.norm(t))))
        return self.head(t.mean(dim=1))


class TinyChannelsLast(nn.Module):
    """ConvNeXt-style block: depthwise conv, permute to (N, H, W, C), LayerNorm, pointwise
    Linears with GELU, layer scale, permute back, residual."""

    def __init__(self, dim: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, dim, 2, stride=2)
        self.dw = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pw1 = nn.Linear(dim, 3 * dim)
        self.pw2 = nn.Linear(3 * dim, dim)
        self.gamma = nn.Parameter(torch.linspace(0.5, 1.5, dim))
        self.head = nn.Linear(dim, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.pw2(F.gelu(self.pw1(self.norm(y)))) * self.gamma
        x = x + y.permute(0, 3, 1, 2)
        return self.head(x.mean(dim=(2, 3)))


MODELS = {"tokens": TinyTokens, "channels_last": TinyChannelsLast}


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return MODELS[name]().eval()


def test_catalogue_describes_nd_linears_channel_first():
    cat = {i.name: i for i in build_catalogue(_model("tokens"), seeded_images(1))}
    fc1 = cat["fc1"]
    assert fc1.kind == "Linear" and fc1.channel_last
    assert fc1.output_shape == (12, 4) and fc1.module_output_shape == (4, 12)
    assert fc1.input_shape == (4, 6) and fc1.neurons_per_channel == 4
    assert fc1.neurons_per_image == 48 and fc1.fan_in == 6 and fc1.n_weights == 72
    assert fc1.as_row()["output_shape"] == [12, 4]
    with pytest.raises(ValueError, match=r"only \(N, F\), \(N, T, F\) and \(N, H, W, C\)"):
        build_catalogue(nn.Linear(3, 2), torch.zeros(1, 2, 2, 2, 3))
    assert not cat["head"].channel_last and cat["head"].output_shape == (4,)
    maps = {i.name: i for i in build_catalogue(_model("channels_last"), seeded_images(1))}
    assert maps["pw1"].output_shape == (12, 4, 4) and maps["pw1"].module_output_shape == (4, 4, 12)


def test_nd_linear_operands_are_the_features_at_each_position():
    torch.manual_seed(0)
    lin = nn.Linear(3, 5)
    x = torch.randn(2, 4, 4, 3)  # (I, H, W, F_in)
    ch, pos = torch.tensor([4, 1, 0]), torch.tensor([0, 7, 15])
    ops, w, valid = linear_operands(x, lin, ch, pos)
    y = lin(x).reshape(2, 16, 5)
    got = (ops * w).sum(-1) + lin.bias[ch]
    torch.testing.assert_close(got, y[:, pos, ch])
    assert valid.all()
    ops, w, valid = linear_weight_operands(x, lin, ch, torch.tensor([[1, 2], [3, 4], [5, 6]]))
    assert ops.shape == (2, 3, 3, 2) and valid.shape == (3, 3, 2)
    torch.testing.assert_close(ops[:, 1, :, 0], x.reshape(2, 16, 3)[:, 3])
    full, _, _ = linear_weight_operands(x, lin, ch, None)
    assert full.shape == (2, 3, 3, 16)


def _edit_reference(model, images, info, img, edit):
    """Full forward per element, the module's own (channels-last) output edited by ``edit``."""
    outs = []
    for b, i in enumerate(img.tolist()):

        def hook(_m, _i, out, b=b):
            out = out.clone()
            edit(out.movedim(-1, 1) if info.channel_last else out, b)  # neuron-layout view
            return out

        with info.module.register_forward_hook(hook), torch.no_grad():
            outs.append(model(images[i : i + 1]))
    return torch.cat(outs)


@pytest.mark.parametrize("use_fx", [True, False], ids=["fx", "hooks"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_neuron_and_channel_perturbations_equal_editing_the_module_output(name, use_fx):
    model, images = _model(name), seeded_images(5)
    eng = SimulationEngine(model, images, use_fx=use_fx, max_batch=2)
    gen = torch.Generator().manual_seed(0)
    n = 16
    for info in eng.catalogue:
        shape = (*info.output_shape, 1, 1)[:3]
        img = torch.randint(5, (n,), generator=gen)
        c, h, w = (torch.randint(s, (n,), generator=gen) for s in shape)
        golden = eng.layer_output(info.layer_num)
        assert golden.shape == (5, *info.output_shape)
        idx = (img, c, h, w)[: golden.dim()]
        flipped = flip_bit(golden[idx], torch.randint(32, (n,), generator=gen))
        delta = torch.randn(n, generator=gen) * 10.0
        for pert in (NeuronSet(c, h, w, flipped), NeuronAdd(c, h, w, delta), ChannelAdd(c, delta)):

            def edit(out, b, pert=pert):
                one = type(pert)(*(getattr(pert, f)[b : b + 1] for f in pert.__dataclass_fields__))
                one.apply(out, 0, 1)

            got = eng.run(info.layer_num, img, pert)
            ref = _edit_reference(model, images, info, img, edit)
            gold = eng.golden_logits[img]
            assert torch.equal(classify(got, gold), classify(ref, gold)), (info.name, pert)
            finite = torch.isfinite(ref).all(1)
            torch.testing.assert_close(got[finite], ref[finite], rtol=1e-4, atol=1e-4)


def _fault_reference(model, images, pop, fault):
    """Plain injection of one fault on an N-D Linear: live weight flipped in place, or the
    module's input/output edited; full forward."""
    site_idx, bit, value = (int(a[0]) for a in pop.decode(np.array([fault])))
    site, info = pop.sites[site_idx], pop.layer
    bit_t, value_t = torch.tensor(bit), torch.tensor(value)
    if pop.target == "weights":
        flat = info.module.weight.data.view(-1)
        golden = flat[int(site)].clone()
        flat[int(site)] = faulty_values(golden, bit_t, value_t)
        try:
            with torch.no_grad():
                return model(images)
        finally:
            flat[int(site)] = golden

    def hook(m, inputs, out):
        out = out.clone()
        view = out.movedim(-1, 1).reshape(out.shape[0], info.out_channels, -1)  # (I, F, P) view
        if pop.target == "stored":
            c, p = divmod(int(site), info.neurons_per_channel)
            view[:, c, p] = faulty_values(view[:, c, p], bit_t, value_t)
            return out
        (neuron, j) = (int(s) for s in site)
        c, p = divmod(neuron, info.neurons_per_channel)
        x = inputs[0].reshape(out.shape[0], -1, inputs[0].shape[-1]).clone()
        x[:, p, j] = faulty_values(x[:, p, j], bit_t, value_t)
        view[:, c, p] = F.linear(x[:, p], m.weight, m.bias)[:, c]
        return out

    with info.module.register_forward_hook(hook), torch.no_grad():
        return model(images)


@pytest.mark.parametrize("target", ["weights", "operands", "stored"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_fault_evaluation_equals_in_place_injection(name, target):
    model, images = _model(name), seeded_images(4)
    eng = SimulationEngine(model, images)
    evaluator = FaultEvaluator(eng)
    rng = np.random.default_rng(0)
    bits = [0, 20, 23, 26, 29, 30, 31]
    for info in eng.catalogue:
        if not info.channel_last:
            continue
        if target == "operands":
            neurons = rng.choice(info.neurons_per_image, 2, replace=False)
            sites = np.stack([neurons, rng.choice(info.fan_in, 2)], 1)
        else:
            n = info.n_weights if target == "weights" else info.neurons_per_image
            sites = rng.choice(n, 3, replace=False)
        pop = FaultPopulation(info, target, "flip", sites)
        ids = np.concatenate([list(pop.stratum(b)) for b in bits])
        image_idx, pert = evaluator.perturbation(pop, ids)
        fast = eng.outcomes(info.layer_num, image_idx, pert).view(len(ids), -1)
        for row, f in enumerate(ids):
            slow = classify(_fault_reference(model, images, pop, int(f)), eng.golden_logits)
            assert fast[row].tolist() == slow.tolist(), (info.name, pop.decode(ids[[row]]))


def test_sampled_analysis_of_nd_linears_runs_and_leaves_the_model_unchanged():
    model, images = _model("tokens"), seeded_images(6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    analyzer = DeepVigorAnalyzer(model, images)
    nums = [i.layer_num for i in analyzer.engine.catalogue if i.channel_last]
    result = analyzer.analyze(target="both", layers=nums, sampling=0.5, seed=0)
    for num in nums:
        info = analyzer.engine.layer(num)
        for target in ("activations", "weights"):
            layer = result.layer(num, target)
            assert 0.0 <= layer.lvf <= 1.0
            assert all(0 <= c < info.out_channels for c in layer.channels)
        acts = result.layer(num, "activations")
        assert all(0 <= t < info.neurons_per_channel and col == 0 for _, t, col in acts.neurons)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class WithUnsupported(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 4, stride=4)
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True)
        self.lstm = nn.LSTM(4, 4, batch_first=True)
        self.conv1d = nn.Conv1d(4, 4, 1)
        self.w = nn.Parameter(torch.randn(3, 4))
        self.k = nn.Parameter(torch.randn(4, 4, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(self.conv(x), self.k)
        t = x.flatten(2).transpose(1, 2)
        t = t + self.attn(t, t, t, need_weights=False)[0]
        t = self.lstm(t)[0]
        t = self.conv1d(t.transpose(1, 2)).transpose(1, 2)
        return F.linear(t.mean(1), self.w)


def test_weight_carrying_modules_that_cannot_be_analysed_are_listed_with_the_reason():
    torch.manual_seed(0)
    model, images = WithUnsupported().eval(), seeded_images(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # out_proj is not called as a module: no warning for it
        cat = build_catalogue(model, images)
    assert [i.name for i in cat] == ["conv"]
    listed = unsupported_layers(model)
    assert unsupported_layers(model, images) == listed
    text = "\n".join(listed)
    assert "attn (MultiheadAttention: packed in_proj_weight" in text
    assert "lstm (LSTM: recurrent weights)" in text
    assert "conv1d (Conv1d:" in text
    assert "k (parameter: used by F.conv2d" in text and "w (parameter: used by F.linear" in text
    assert len(listed) == 5, listed
    # the engine runs the self-attention through its twin, and the model's own F.conv2d and
    # F.linear on k and w as layers holding them (twins.py): analysed, not listed
    analysed = DeepVigorAnalyzer(model, images).analyze(target="weights")
    assert analysed.unsupported == tuple(u for u in listed if u.startswith(("lstm ", "conv1d ")))
    assert [x.name for x in analysed.layers] == [
        "conv", "k_layer", "attn.in_proj", "attn.out_proj", "w_layer"
    ]  # fmt: skip


def test_exhaustive_operand_nvf_of_a_neuron_on_a_map_equals_in_place_injection():
    """An (c, h, w) neuron of a Linear on (N, H, W, C): the campaign's NVF is the critical
    fraction of plain injection over every operand and bit of that neuron."""
    from pytorchfi_deepvigor.campaigns import ExhaustiveCampaign

    model, images = _model("channels_last"), seeded_images(3)
    eng = SimulationEngine(model, images)
    info = next(i for i in eng.catalogue if i.name == "pw1")  # neurons (12, 4, 4)
    neuron = (5, 2, 3)
    result = ExhaustiveCampaign(eng).run(
        "operands", layers=[info.layer_num], channels={info.layer_num: [5]},
        neurons={info.layer_num: [neuron]},
    )  # fmt: skip
    layer = result.layers[0]
    assert layer.neurons == (neuron,)
    flat = 5 * 16 + 2 * 4 + 3
    pop = FaultPopulation(info, "operands", "flip", np.stack([np.full(4, flat), np.arange(4)], 1))
    critical = 0
    golden = eng.golden_logits.argmax(1)
    for f in range(pop.size):
        ref = _fault_reference(model, images, pop, f)
        critical += int(((ref.argmax(1) != golden) | ~torch.isfinite(ref).all(1)).sum())
    assert layer.nvf[0] == pytest.approx(critical / (pop.size * 3))
