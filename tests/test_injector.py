"""DeepVigorFI: PyTorchFI's API with the same meaning, bounds checks, exact in-place weight faults."""

from __future__ import annotations

import csv
import importlib.util
import logging
import math
import sys
from pathlib import Path

import pytest
import torch
from pytorchfi import core
from torch import nn

from pytorchfi_deepvigor._pytorchfi_compat import PyTorchFIBase
from pytorchfi_deepvigor.bits import flip_bit
from pytorchfi_deepvigor.catalogue import build_catalogue
from pytorchfi_deepvigor.engine import SimulationEngine
from pytorchfi_deepvigor.injector import DeepVigorFI

SHAPE = [2, 6, 6]
BOTH = [nn.Conv2d, nn.Linear]


def vgg_like() -> nn.Module:
    torch.manual_seed(0)
    features = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2, groups=2), nn.ReLU()
    )
    head = nn.Sequential(nn.Flatten(), nn.Linear(6 * 2 * 2, 5), nn.ReLU(), nn.Linear(5, 3))
    return nn.Sequential(features, head).eval()


def images(n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def net() -> nn.Module:
    return vgg_like()


@pytest.fixture
def fi(net: nn.Module) -> DeepVigorFI:
    return DeepVigorFI(net, 2, SHAPE, BOTH)


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().view(torch.int32)


# ------------------------------------------------------------------------------- construction
def test_is_pytorchfi_injector_with_catalogue_numbering(fi, net):
    assert isinstance(fi, core.fault_injection) and isinstance(fi, PyTorchFIBase)
    reference = build_catalogue(net, images(1))
    assert (
        [i.name for i in fi.catalogue]
        == [i.name for i in reference]
        == ["0.0", "0.2", "1.1", "1.3"]
    )
    assert [i.layer_num for i in fi.catalogue] == [0, 1, 2, 3]
    assert fi.get_total_layers() == 4
    assert [fi.get_layer_shape(n) for n in range(4)] == [[1, 4, 6, 6], [1, 6, 2, 2], [1, 5], [1, 3]]
    assert [fi.get_layer_dim(n) for n in range(4)] == [4, 4, 2, 2]
    assert fi.get_weights_size(1) == torch.Size([6, 2, 3, 3]) and fi.get_weights_dim(2) == 2
    assert fi.get_layer_type(3) is nn.Linear and fi.get_inj_layer_types() == [nn.Conv2d, nn.Linear]


def test_layer_table_and_summary(fi, net, capsys):
    rows = fi.layer_table()
    assert {k: rows[1][k] for k in ("layer", "name", "type", "weight_shape", "output_shape")} == {
        "layer": 1, "name": "0.2", "type": "Conv2d", "weight_shape": [6, 2, 3, 3],
        "output_shape": [6, 2, 2],
    }  # fmt: skip
    assert (rows[1]["neurons"], rows[1]["weights"], rows[1]["groups"]) == (24, 108, 2)
    summary = fi.print_pytorchfi_layer_summary()
    assert capsys.readouterr().out == ""  # returned, never printed
    expected = core.fault_injection(net, 2, SHAPE, BOTH).print_pytorchfi_layer_summary()
    assert summary == expected and "[6, 2, 3, 3]" in summary  # 0.6.0's text exactly


def test_master_names_are_aliases():
    assert DeepVigorFI.declare_neuron_fault_injection is DeepVigorFI.declare_neuron_fi
    assert DeepVigorFI.declare_weight_fault_injection is DeepVigorFI.declare_weight_fi


def test_no_logging_side_effects(net):
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers = []  # with no handler, logging.basicConfig would install one
    try:
        fi = DeepVigorFI(net, 2, SHAPE)
        fi.declare_neuron_fi(layer_num=[0], batch=[0], dim1=[0], dim2=[0], dim3=[0], value=[1])(
            images()
        )
        assert root.handlers == [] and root.level == level
    finally:
        root.handlers = handlers


def test_conv_only_layer_types_count_convs(net):
    fi = DeepVigorFI(net, 2, SHAPE, [nn.Conv2d])
    assert fi.get_total_layers() == 2 and [i.name for i in fi.catalogue] == ["0.0", "0.2"]
    assert isinstance(fi.engine(images()), SimulationEngine)  # convs first: same numbers


class LinearFirst(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 16)
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.fc(x).view(-1, 1, 4, 4)).flatten(1)


def test_engine_refuses_renumbered_layers():
    fi = DeepVigorFI(LinearFirst(), 1, [4], [nn.Conv2d])
    assert fi.catalogue[0].name == "conv" and fi.catalogue[0].layer_num == 0
    with pytest.raises(ValueError, match="renumber the layers"):
        fi.engine(torch.ones(2, 4))


def test_engine_shares_the_model_and_numbering(fi, net):
    x = images(3)
    engine = fi.engine(x)
    assert engine.model is net and [i.name for i in engine.catalogue] == [
        i.name for i in fi.catalogue
    ]
    with torch.no_grad():
        assert torch.equal(engine.golden_logits, net(x))


class Reordered(nn.Module):
    """Registers ``late`` first but runs it second."""

    def __init__(self) -> None:
        super().__init__()
        self.late = nn.Conv2d(3, 3, 1)
        self.early = nn.Conv2d(2, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.late(self.early(x)).flatten(1)


def test_execution_order_differs_warns_and_numbering_follows_registration():
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="execution order"):
        fi = DeepVigorFI(Reordered(), 1, [2, 1, 1])
    assert [i.name for i in fi.catalogue] == ["late", "early"]
    bad = fi.declare_neuron_fi(layer_num=[0], batch=[0], dim1=[2], dim2=[0], dim3=[0], value=[7.0])
    assert bad(torch.ones(1, 2, 1, 1))[0, 2].item() == 7.0  # "late" (layer 0) is the output


CONSTRUCTOR_ERRORS = {
    "not a module": (lambda: DeepVigorFI("net", 1, SHAPE), TypeError, "torch.nn.Module"),
    "batch 0": (lambda: DeepVigorFI(vgg_like(), 0, SHAPE), ValueError, "batch_size"),
    "input shape": (lambda: DeepVigorFI(vgg_like(), 1, [2, 0, 6]), ValueError, "input_shape"),
    "profiling fails": (lambda: DeepVigorFI(vgg_like(), 1), ValueError, "pass input_shape"),
    "other string": (lambda: DeepVigorFI(vgg_like(), 1, SHAPE, ["conv"]), ValueError, r"unsupported layer type 'conv'.*\['all'\]"),
    "empty types": (lambda: DeepVigorFI(vgg_like(), 1, SHAPE, []), ValueError, "non-empty list"),
    "relu": (lambda: DeepVigorFI(vgg_like(), 1, SHAPE, [nn.ReLU]), ValueError, "unsupported layer type ReLU"),
    "unknown keyword": (lambda: DeepVigorFI(vgg_like(), 1, SHAPE, use_gpu=False), TypeError, "use_gpu"),
    "no parameters": (lambda: DeepVigorFI(nn.ReLU(), 1, SHAPE), ValueError, "no injectable layer"),
    "no conv": (lambda: DeepVigorFI(nn.Sequential(nn.Flatten(), nn.Linear(72, 2)), 1, SHAPE), ValueError, "nothing injectable"),
    "NaN example": (lambda: DeepVigorFI(vgg_like(), 1, example_input=torch.full((1, *SHAPE), math.nan)), ValueError, "NaN"),
    "float64 example": (lambda: DeepVigorFI(vgg_like(), 1, example_input=torch.ones(1, *SHAPE, dtype=torch.float64)), TypeError, "float32"),
    "example vs shape": (lambda: DeepVigorFI(vgg_like(), 1, [2, 7, 7], example_input=images(1)), ValueError, "example_input"),
}  # fmt: skip


@pytest.mark.parametrize("case", CONSTRUCTOR_ERRORS.values(), ids=CONSTRUCTOR_ERRORS.keys())
def test_constructor_errors(case):
    call, error, match = case
    with pytest.raises(error, match=match):
        call()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_use_cuda_without_cuda():
    with pytest.raises(ValueError, match="CUDA is not available"):
        DeepVigorFI(vgg_like(), 1, SHAPE, use_cuda=True)


# ------------------------------------------------------------------------------ neuron faults
def _layer_outputs(model: nn.Module, names: list[str], x: torch.Tensor) -> list[torch.Tensor]:
    """Outputs of the named layers as the next layer sees them (after every injection hook)."""
    seen: list[torch.Tensor] = []
    handles = [
        model.get_submodule(n).register_forward_hook(
            lambda m, i, o: seen.append(o.detach().clone())
        )
        for n in names
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


SITES = {
    "conv 0": (0, (1, 3, 5, 0), 100.0),
    "grouped conv 1": (1, (0, 5, 1, 1), -50.0),
    "linear 2": (2, (1, 4), math.inf),
    "linear 3 (logits)": (3, (0, 2), math.nan),
}


@pytest.mark.parametrize("case", SITES.values(), ids=SITES.keys())
def test_neuron_value_lands_on_its_site_and_nowhere_else(fi, net, case):
    layer, site, value = case
    x = images()
    dims = [[d] for d in site[1:]] + [None] * (4 - len(site))
    bad = fi.declare_neuron_fi(
        layer_num=[layer], batch=[site[0]], dim1=dims[0], dim2=dims[1], dim3=dims[2], value=[value]
    )
    name = fi.catalogue[layer].name
    expected = _layer_outputs(net, [name], x)[0]
    expected[site] = value
    got = _layer_outputs(bad, [name], x)[0]
    assert torch.equal(got.view(torch.int32), expected.view(torch.int32))


def test_corrupted_model_runs_any_number_of_forwards(fi):
    bad = fi.declare_neuron_fi(layer_num=[3], batch=[0], dim1=[2], value=[5.0])
    x = images()
    outs = [bad(x) for _ in range(5)]
    assert all(torch.equal(o, outs[0]) for o in outs) and outs[0][0, 2].item() == 5.0


def test_earlier_models_keep_faults_until_fi_reset(fi, net):
    first = fi.declare_neuron_fi(layer_num=[3], batch=[0], dim1=[0], value=[11.0])
    second = fi.declare_neuron_fi(layer_num=[3], batch=[1], dim1=[1], value=[22.0])
    weights = fi.declare_weight_fi(layer_num=[3], k=[2], dim1=[0], value=[0.0])
    x = images()
    assert first(x)[0, 0].item() == 11.0 and second(x)[1, 1].item() == 22.0
    assert second(x)[0, 0].item() != 11.0 and fi.corrupt_value == [22.0]  # state of the last run
    fi.fi_reset()
    with torch.no_grad():
        golden = net(x)
        assert torch.equal(first(x), golden) and torch.equal(second(x), golden)
    assert fi.get_corrupted_model() is None and weights is not net


def test_custom_function_sees_each_layer_number(fi):
    seen = []

    def record(module, inputs, output):
        seen.append((fi.get_current_layer(), type(module).__name__, tuple(output.shape)))

    bad = fi.declare_neuron_fi(layer_num=[], batch=[], dim1=[], function=record)
    bad(images())
    bad(images())
    expected = [
        (0, "Conv2d", (2, 4, 6, 6)),
        (1, "Conv2d", (2, 6, 2, 2)),
        (2, "Linear", (2, 5)),
        (3, "Linear", (2, 3)),
    ]
    assert seen == expected * 2


def _declare(**kw):
    base = {"layer_num": [0], "batch": [0], "dim1": [0], "dim2": [0], "dim3": [0], "value": [1.0]}
    return {**base, **kw}


NEURON_ERRORS = {
    "layer": (_declare(layer_num=[4]), ValueError, r"layer_num 4 out of range \[0, 4\)"),
    "negative layer": (_declare(layer_num=[-1]), ValueError, r"layer_num -1 out of range"),
    "batch": (_declare(batch=[2]), ValueError, r"batch index 2 out of range \[0, 2\)"),
    "dim1": (_declare(dim1=[4]), ValueError, r"dim1 \(channel\) index 4 out of range \[0, 4\) of layer 0 \(0.0"),
    "dim2": (_declare(dim2=[6]), ValueError, r"dim2 \(row\) index 6 out of range \[0, 6\)"),
    "dim3": (_declare(dim3=[-1]), ValueError, r"dim3 \(column\) index -1 out of range \[0, 6\)"),
    "linear dim1": (_declare(layer_num=[3], dim1=[3]), ValueError, r"index 3 out of range \[0, 3\)"),
    "missing dim": (_declare(dim2=None), TypeError, r"dim2 \(row\) must be an int"),
    "float index": (_declare(dim1=[0.5]), TypeError, "must be an int"),
    "lengths": (_declare(batch=[0, 1]), ValueError, "one entry per fault"),
    "too few values": (_declare(value=[]), ValueError, "got 0 values for 1 fault locations"),
    "neither": (_declare(value=None), ValueError, "exactly one of value"),
    "both": (_declare(function=print), ValueError, "exactly one of value"),
    "no site": (_declare(layer_num=[], batch=[], dim1=[], dim2=[], dim3=[], value=[]), ValueError, "no fault location"),
}  # fmt: skip


@pytest.mark.parametrize("case", NEURON_ERRORS.values(), ids=NEURON_ERRORS.keys())
def test_declare_neuron_fi_errors(fi, case):
    kwargs, error, match = case
    with pytest.raises(error, match=match):
        fi.declare_neuron_fi(**kwargs)


def test_linear_ignores_dim2_dim3_with_a_warning(fi):
    with pytest.warns(UserWarning, match="dim2/dim3 ignored"):
        fi.declare_neuron_fi(layer_num=[3], batch=[0], dim1=[0], dim2=[9], dim3=[9], value=[1.0])


def test_check_bounds_and_assert_inj_bounds_raise_value_error(fi):
    with pytest.raises(ValueError, match=r"batch index 5 out of range"):
        fi.check_bounds([5], [0], [0], [0], [0])
    fi.declare_neuron_fi(layer_num=[1], batch=[1], dim1=[5], dim2=[1], dim3=[1], value=[1.0])
    fi.assert_inj_bounds(index=0)


FORWARD_ERRORS = {
    "batch too small": (images(1), "has 1 images, but a fault is declared in batch element 1"),
    "empty batch": (images(0), "empty"),
    "NaN input": (images().index_fill(2, torch.tensor([3]), math.nan), "NaN or Inf"),
    "other input size": (torch.ones(2, 2, 8, 8), r"outputs \(4, 8, 8\) per image, but \(4, 6, 6\)"),
}


@pytest.mark.parametrize("case", FORWARD_ERRORS.values(), ids=FORWARD_ERRORS.keys())
def test_corrupted_model_checks_its_input(fi, case):
    x, match = case
    bad = fi.declare_neuron_fi(layer_num=[0], batch=[1], dim1=[0], dim2=[0], dim3=[0], value=[1.0])
    with pytest.raises(ValueError, match=match):
        bad(x)


# ------------------------------------------------------------------------------ weight faults
def test_weight_fault_is_in_place_and_restores_every_bit(fi, net):
    weight = net[0][2].weight
    ptr, before = weight.data_ptr(), _bits(weight)
    for index in [(0, 0, 0, 0), (5, 1, 2, 1)]:
        for bit in range(32):
            with fi.weight_fault(1, index, bit=bit) as fault:
                assert weight.data_ptr() == ptr and fault.index == index
                assert torch.equal(
                    _bits(weight[index]), _bits(flip_bit(before.view(torch.float32)[index], bit))
                )
            assert torch.equal(_bits(weight), before)


def test_weight_fault_matches_declare_weight_fi_bit_for_bit(fi, net):
    x = images()
    copy_model = fi.declare_weight_fi(layer_num=[2], k=[3], dim1=[17], value=[-3.5e3])
    with torch.no_grad():
        expected = copy_model(x)
        with fi.weight_fault(2, (3, 17), value=-3.5e3) as fault:
            got = net(x)
    assert torch.equal(got, expected) and fault.faulty == -3.5e3
    assert fault.golden == net[1][1].weight[3, 17].item()


def test_weight_fault_flat_index_function_and_stuck_at(fi, net):
    weight = net[1][3].weight  # layer 3, shape (3, 5)
    with fi.weight_fault(3, 7, bit=31) as flat:
        assert flat.index == (1, 2) and weight[1, 2].item() == -flat.golden
    with fi.weight_fault(3, (1, 2), function=lambda w, idx: w[idx] * 4):
        assert weight[1, 2].item() == 4 * flat.golden
    value = weight[0, 0].item()
    stuck = 1 if value < 0 else 0  # the sign bit already holds this value
    with fi.weight_fault(3, (0, 0), bit=31, stuck_at=stuck) as fault:
        assert fault.faulty == value
    with fi.weight_fault(3, (0, 0), bit=31, stuck_at=1 - stuck) as fault:
        assert fault.faulty == -value


def test_weight_fault_restores_on_exception_and_when_nested(fi, net):
    weight = net[0][0].weight
    before = _bits(weight)
    with pytest.raises(RuntimeError, match="inside"):
        with fi.weight_fault(0, (0, 0, 0, 0), value=math.nan):
            raise RuntimeError("inside")
    assert torch.equal(_bits(weight), before)
    with fi.weight_fault(0, (0, 0, 0, 0), bit=30), fi.weight_fault(0, (0, 0, 0, 0), bit=2):
        assert not torch.equal(_bits(weight), before)
    assert torch.equal(_bits(weight), before)


def test_weight_fault_in_half_precision():
    torch.manual_seed(0)
    half = nn.Sequential(nn.Linear(3, 2)).half()
    fi = DeepVigorFI(half, 1, [3], [nn.Linear])
    value = half[0].weight[1, 2].clone()
    with fi.weight_fault(0, (1, 2), bit=15) as fault:
        assert half[0].weight[1, 2].item() == -value.item() == fault.faulty
    assert torch.equal(half[0].weight[1, 2].view(torch.int16), value.view(torch.int16))


WEIGHT_ERRORS = {
    "layer": ({"layer_num": 4, "index": 0, "bit": 1}, ValueError, r"layer_num 4 out of range \[0, 4\)"),
    "k": ({"layer_num": 0, "index": (4, 0, 0, 0), "bit": 1}, ValueError, r"k index 4 out of range \[0, 4\) of layer 0 \(0.0, weight \(4, 2, 3, 3\)\)"),
    "flat": ({"layer_num": 3, "index": 15, "bit": 1}, ValueError, r"flat weight index 15 out of range \[0, 15\)"),
    "short index": ({"layer_num": 0, "index": (0, 0), "bit": 1}, ValueError, "needs 4 entries"),
    "bit": ({"layer_num": 0, "index": 0, "bit": 32}, ValueError, r"bit in \[0, 31\]"),
    "none": ({"layer_num": 0, "index": 0}, ValueError, "exactly one of bit=, value= or function="),
    "stuck without bit": ({"layer_num": 0, "index": 0, "value": 1.0, "stuck_at": 1}, ValueError, "stuck_at"),
    "vector function": ({"layer_num": 0, "index": 0, "function": lambda w, i: w[0]}, ValueError, "one value"),
    "layer type": ({"layer_num": "0", "index": 0, "bit": 1}, TypeError, "layer_num must be an int"),
}  # fmt: skip


@pytest.mark.parametrize("case", WEIGHT_ERRORS.values(), ids=WEIGHT_ERRORS.keys())
def test_weight_fault_errors(fi, net, case):
    kwargs, error, match = case
    before = [_bits(p) for p in net.parameters()]
    with pytest.raises(error, match=match):
        with fi.weight_fault(**kwargs):
            pass
    assert all(torch.equal(b, _bits(p)) for b, p in zip(before, net.parameters(), strict=True))


def test_bit_fault_on_float64_model_is_a_type_error():
    fi = DeepVigorFI(vgg_like().double(), 1, SHAPE)
    with pytest.raises(TypeError, match="float32"):
        with fi.weight_fault(0, 0, bit=3):
            pass
    with fi.weight_fault(0, 0, value=2.0) as fault:  # value faults need no bit layout
        assert fault.faulty == 2.0


WEIGHT_DECLARE_ERRORS = {
    "linear dim2": ({"layer_num": [3], "k": [0], "dim1": [0], "dim2": [1], "value": [1.0]}, ValueError, "needs 2 entries"),
    "conv missing dim": ({"layer_num": [0], "k": [0], "dim1": [0], "value": [1.0]}, TypeError, "dim2 must be an int"),
    "lengths": ({"layer_num": [3, 3], "k": [0], "dim1": [0], "value": [1.0, 1.0]}, ValueError, "one entry per fault"),
    "too few values": ({"layer_num": [3, 3], "k": [0, 1], "dim1": [0, 0], "value": [1.0]}, ValueError, "got 1 values for 2 fault locations"),
    "none": ({"layer_num": [3], "k": [0], "dim1": [0]}, ValueError, "exactly one of value"),
    "empty": ({"layer_num": [], "value": []}, ValueError, "no fault location"),
}  # fmt: skip


@pytest.mark.parametrize("case", WEIGHT_DECLARE_ERRORS.values(), ids=WEIGHT_DECLARE_ERRORS.keys())
def test_declare_weight_fi_errors(fi, case):
    kwargs, error, match = case
    with pytest.raises(error, match=match):
        fi.declare_weight_fi(**kwargs)


def test_benchmark_quick_smoke_run(tmp_path, monkeypatch):
    path = Path(__file__).resolve().parents[1] / "validation" / "bench_injector.py"
    spec = importlib.util.spec_from_file_location("bench_injector", path)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_injector", bench)  # dataclasses look it up
    spec.loader.exec_module(bench)
    summary = bench.main(["--quick", "--out", str(tmp_path)])
    assert {r["method"] for r in summary} == {"plain", "inplace", "engine"}
    assert all(r["agree"] == "2/2" for r in summary)
    with open(tmp_path / "bench_injector.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * 2 and all(r["logits_bit_identical"] == "True" for r in rows)
    assert all(r["inplace_mismatches"] == r["engine_mismatches"] == "" for r in rows)
    assert "speed-up per fault" in (tmp_path / "bench_injector.md").read_text()


# ----------------------------------------------------------------- PyTorchFI 0.6.0's meaning
def test_default_layer_types_are_pytorchfis(net):
    fi, plain = DeepVigorFI(net, 2, SHAPE), core.fault_injection(net, 2, SHAPE)
    assert fi.get_inj_layer_types() == plain.get_inj_layer_types() == [nn.Conv2d]
    assert fi.get_total_layers() == plain.get_total_layers() == 2
    assert fi.get_output_size() == plain.get_output_size()
    assert DeepVigorFI(net, 2, SHAPE, (nn.Linear,)).get_inj_layer_types() == (nn.Linear,)


def test_constructor_advances_torch_rng_as_pytorchfi_does(net):
    torch.manual_seed(7)
    core.fault_injection(net, 2, SHAPE)
    after_plain = torch.rand(3)
    torch.manual_seed(7)
    DeepVigorFI(net, 2, SHAPE)
    assert torch.equal(torch.rand(3), after_plain)  # a seeded script draws the same numbers


def _run_once(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def test_value_list_longer_than_locations_uses_the_first_values(net):
    x = images()
    site = {"layer_num": [1], "batch": [1], "dim1": [3], "dim2": [0], "dim3": [1]}
    plain = core.fault_injection(net, 2, SHAPE, BOTH)
    fi = DeepVigorFI(net, 2, SHAPE, BOTH)
    expected = _run_once(plain.declare_neuron_fi(**site, value=[7.5, 99.0]), x)
    got = _run_once(fi.declare_neuron_fi(**site, value=[7.5, 99.0]), x)
    assert torch.equal(got, expected) and fi.corrupt_value == [7.5]
    weight = {"layer_num": [3], "k": [1], "dim1": [2], "dim2": [None], "dim3": [None]}
    expected = _run_once(plain.declare_weight_fi(**weight, value=[-4.0, 1e9]), x)
    assert torch.equal(_run_once(fi.declare_weight_fi(**weight, value=[-4.0, 1e9]), x), expected)


class Funnel(nn.Module):
    """Leaves of several kinds, one module (``act``) called twice per forward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(36, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.bn(self.pool(self.act(self.conv(x))))))


def funnel() -> nn.Module:
    torch.manual_seed(3)
    return Funnel().eval()


def test_all_layers_number_every_leaf_call_as_pytorchfi_does():
    net = funnel()
    plain = core.fault_injection(net, 2, SHAPE, ["all"])
    fi = DeepVigorFI(net, 2, SHAPE, ["all"])
    assert fi.get_total_layers() == plain.get_total_layers() == 7
    assert fi.get_output_size() == plain.get_output_size()
    assert [fi.get_layer_type(n) for n in range(7)] == plain.layers_type
    assert [fi.get_layer_dim(n) for n in range(7)] == plain.layers_dim
    assert [i.name for i in fi.catalogue] == [
        "conv",
        "act",
        "pool",
        "bn",
        "act",
        "head.0",
        "head.1",
    ]
    assert fi.get_inj_layer_types() == ["all"]
    rows = fi.layer_table()
    assert [r["weights"] for r in rows] == [72, 0, 0, 4, 0, 0, 180]


ALL_SITES = {
    "conv": ([0], [3], [1]),
    "relu, first call": ([1], [2], [3]),
    "maxpool": ([2], [1], [1]),
    "relu, second call": ([4], [0], [2]),
    "flatten": ([5], [20], None),
    "logits": ([6], [4], None),
    "three at once": ([0, 4, 6], [0, 3, 1], [2, 1, None]),
}


@pytest.mark.parametrize("case", ALL_SITES.values(), ids=ALL_SITES.keys())
def test_all_layers_neuron_faults_match_pytorchfi_bit_for_bit(case):
    layers, channels, rows = case
    net, x = funnel(), images()
    rows = rows or [None] * len(layers)
    site = {
        "layer_num": layers, "batch": [1] * len(layers), "dim1": channels, "dim2": rows,
        "dim3": [None if r is None else 1 for r in rows], "value": [1e3 + n for n in layers],
    }  # fmt: skip
    expected = _run_once(core.fault_injection(net, 2, SHAPE, ["all"]).declare_neuron_fi(**site), x)
    bad = DeepVigorFI(net, 2, SHAPE, ["all"]).declare_neuron_fi(**site)
    assert not torch.equal(expected, _run_once(net, x))
    assert all(torch.equal(_run_once(bad, x), expected) for _ in range(2))  # any number of forwards


def test_all_layers_custom_function_sees_each_call():
    net = funnel()
    fi = DeepVigorFI(net, 1, SHAPE, ["all"])
    seen = []

    def record(module, inputs, output):
        seen.append((fi.get_current_layer(), type(module).__name__))

    fi.declare_neuron_fi(layer_num=[], batch=[], dim1=[], function=record)(images(1))
    assert seen == [(n, t.__name__) for n, t in enumerate(fi.layers_type)]


def test_all_layers_weight_faults_target_the_leafs_weight():
    net, x = funnel(), images()
    fi = DeepVigorFI(net, 2, SHAPE, ["all"])
    assert fi.get_weights_size(6) == torch.Size([5, 36]) and fi.get_weights_size(3) == (4,)
    bad = fi.declare_weight_fi(layer_num=[0, 6], k=[1, 2], dim1=[0, 7], dim2=[2, None],
                               dim3=[1, None], value=[50.0, -50.0])  # fmt: skip
    typed = DeepVigorFI(net, 2, SHAPE, BOTH).declare_weight_fi(
        layer_num=[0, 1], k=[1, 2], dim1=[0, 7], dim2=[2, None], dim3=[1, None], value=[50.0, -50.0]
    )
    assert torch.equal(_run_once(bad, x), _run_once(typed, x))
    with fi.weight_fault(3, (2,), value=0.0) as fault:  # BatchNorm's weight, in place
        assert net.bn.weight[2].item() == 0.0 and fault.index == (2,)
    with pytest.raises(ValueError, match=r"layer 1 \(act, ReLU\) has no weight"):
        fi.declare_weight_fi(layer_num=[1], k=[0], dim1=[0], value=[1.0])
    with pytest.raises(ValueError, match="has no weight"):
        fi.get_weights_size(2)


def test_all_layers_errors():
    net = funnel()
    fi = DeepVigorFI(net, 1, SHAPE, ["all"])
    with pytest.raises(ValueError, match=r"layer_num 7 out of range \[0, 7\)"):
        fi.declare_neuron_fi(layer_num=[7], batch=[0], dim1=[0], value=[1.0])
    with pytest.raises(ValueError, match="renumber the layers"):
        fi.engine(images())

    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.ReLU(), nn.Tanh()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.a(x) if x.sum() >= 0 else self.b(x)

    fi = DeepVigorFI(Branchy(), 1, [3], ["all"])
    bad = fi.declare_neuron_fi(layer_num=[0], batch=[0], dim1=[0], value=[1.0])
    with pytest.raises(ValueError, match="control flow depends on its input"):
        bad(-torch.ones(1, 3))
    five_d = DeepVigorFI(nn.Sequential(nn.Linear(3, 2)), 1, [2, 2, 2, 3], ["all"])
    with pytest.raises(ValueError, match="neuron faults need 1 to 3 dimensions"):
        five_d.declare_neuron_fi(layer_num=[0], batch=[0], dim1=[0], dim2=[0], dim3=[0], value=[1])


def test_bits_keyword_is_accepted_for_pytorchfis_subclasses(net):
    fi = DeepVigorFI(net, 2, SHAPE, bits=8, use_cuda=False)
    assert fi.get_total_layers() == 2 and not hasattr(fi, "bits")


# ------------------------------------------------------------------ PyTorchFI master's names
def test_master_names(fi):
    from pytorchfi_deepvigor._pytorchfi_compat import MASTER_METHOD_ALIASES
    from pytorchfi_deepvigor.injector import FaultInjection, fault_injection

    assert FaultInjection is fault_injection is DeepVigorFI
    for master, release in MASTER_METHOD_ALIASES.items():
        assert callable(getattr(fi, master)) and callable(getattr(fi, release)), master
    assert fi.batch_size == fi.get_total_batches() == 2
    assert [fi.get_tensor_dim(1, d) for d in range(4)] == [1, 6, 2, 2]
    with pytest.raises(ValueError, match=r"dim 4 out of range \[0, 4\)"):
        fi.get_tensor_dim(1, 4)
    fi.declare_neuron_fault_injection(
        layer_num=[1, 3], batch=[0, 1], dim1=[5, 2], dim2=[1, None], dim3=[0, None], value=[1, 2]
    )
    assert fi.corrupt_dim == [[5, 2], [1, None], [0, None]]
    fi.assert_injection_bounds(1)
    fi.update_layer(2)
    assert fi.get_current_layer() == 2
    with pytest.raises(ValueError, match=r"batch index 3 out of range"):
        fi.check_bounds([3], [1], [[0], [0], [0]])  # master's (batch, layer, dim)
    fi.reset_fault_injection()
    assert fi.corrupt_layer == [] and fi.get_corrupted_model() is None


def test_all_layers_leave_the_model_unchanged():
    from guarantees import assert_model_unchanged

    net = funnel().train()

    def use() -> None:
        fi = DeepVigorFI(net, 2, SHAPE, ["all"])
        site = {
            "layer_num": [1, 4],
            "batch": [0, 1],
            "dim1": [1, 2],
            "dim2": [0, 1],
            "dim3": [2, 0],
        }
        fi.declare_neuron_fi(**site, value=[3.0, 4.0])(images())
        fi.declare_weight_fi(layer_num=[0], k=[0], dim1=[0], dim2=[0], dim3=[0], value=[2.0])
        fi.fi_reset()

    assert_model_unchanged(net, use)
