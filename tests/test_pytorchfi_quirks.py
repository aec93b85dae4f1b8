"""PyTorchFI 0.6.0's quirks (spec fault-injection.md section 1), each shown on plain PyTorchFI
and pinned against what DeepVigorFI does instead."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from guarantees import assert_model_unchanged
from pytorchfi import core
from pytorchfi.neuron_error_models import single_bit_flip_func
from torch import nn

from pytorchfi_deepvigor.error_models import ActivationBitFlip
from pytorchfi_deepvigor.injector import DeepVigorFI

SHAPE = [2, 6, 6]
BOTH = [nn.Conv2d, nn.Linear]


def vgg_like() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2),
        nn.Flatten(), nn.Linear(24, 5), nn.ReLU(), nn.Linear(5, 3),
    ).eval()  # fmt: skip


def images(n: int = 2) -> torch.Tensor:
    return torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(1))


@pytest.fixture(autouse=True)
def root_logger():
    """Plain PyTorchFI calls logging.basicConfig: give the root logger back as it was."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers, root.level = handlers, level


def neuron(pfi, layer, **kw):
    site = {"layer_num": [layer], "batch": [0], "dim1": [0], "dim2": [0], "dim3": [0]}
    return pfi.declare_neuron_fi(**{**site, **kw})


def test_second_forward_of_a_corrupted_model():
    net, x = vgg_like(), images()
    bad = neuron(core.fault_injection(net, 2, SHAPE, BOTH), 0, value=[5.0])
    bad(x)
    with pytest.raises(IndexError):  # 0.6.0: the layer counter is never reset
        bad(x)
    ours = neuron(DeepVigorFI(net, 2, SHAPE), 0, value=[5.0])
    assert all(torch.equal(ours(x), ours(x)) for _ in range(3))


def test_every_weight_fault_deep_copies_the_model(monkeypatch):
    net = vgg_like()
    plain = core.fault_injection(net, 2, SHAPE, BOTH)
    bad = plain.declare_weight_fi(layer_num=[0], k=[0], dim1=[0], dim2=[0], dim3=[0], value=[9.0])
    assert bad is not net and bad[0].weight is not net[0].weight  # a whole new model per fault

    fi = DeepVigorFI(net, 2, SHAPE)

    def no_copy(*args, **kwargs):
        raise AssertionError("weight_fault must not copy the model")

    monkeypatch.setattr(copy, "deepcopy", no_copy)
    ptr = net[0].weight.data_ptr()
    with fi.weight_fault(0, (0, 0, 0, 0), value=9.0):
        assert net[0].weight[0, 0, 0, 0].item() == 9.0 and net[0].weight.data_ptr() == ptr
        with torch.no_grad():
            assert torch.equal(net(images()), bad(images()))


def test_only_the_latest_corrupted_model_keeps_its_hooks():
    net, x = vgg_like(), images()
    with torch.no_grad():
        golden = net(x)
    plain = core.fault_injection(net, 2, SHAPE, BOTH)
    first = neuron(plain, 3, dim1=[0], dim2=[None], dim3=[None], value=[11.0])
    neuron(plain, 3, dim1=[1], dim2=[None], dim3=[None], value=[22.0])
    with torch.no_grad():
        assert torch.equal(first(x), golden)  # 0.6.0: silently fault-free again

    fi = DeepVigorFI(net, 2, SHAPE, BOTH)
    first = neuron(fi, 3, dim1=[0], dim2=None, dim3=None, value=[11.0])
    neuron(fi, 3, dim1=[1], dim2=None, dim3=None, value=[22.0])
    assert first(x)[0, 0].item() == 11.0  # ours: each copy keeps its own faults


def test_layer_types_all_breaks_weight_injection():
    net, x = vgg_like(), images()
    site = {"layer_num": [3], "k": [1], "dim1": [2], "dim2": [0], "dim3": [1], "value": [1e3]}
    plain = core.fault_injection(net, 2, SHAPE, ["all"])
    with pytest.raises(TypeError):  # 0.6.0: isinstance(layer, ("all",))
        plain.declare_weight_fi(**site)
    with pytest.raises(IndexError):  # 0.6.0: no weight shapes are recorded
        plain.get_weights_size(0)
    fi = DeepVigorFI(net, 2, SHAPE, ["all"])  # ours: layer 3 of "all" is the second Conv2d
    assert fi.get_layer_type(3) is nn.Conv2d and fi.get_weights_size(3) == (6, 4, 3, 3)
    with torch.no_grad():
        got = fi.declare_weight_fi(**site)(x)
        expected = DeepVigorFI(net, 2, SHAPE).declare_weight_fi(**{**site, "layer_num": [1]})(x)
    assert torch.equal(got, expected)
    neurons = {
        "layer_num": [2],
        "batch": [1],
        "dim1": [3],
        "dim2": [4],
        "dim3": [5],
        "value": [8.0],
    }
    with torch.no_grad():  # neuron faults with "all" work in 0.6.0 and here alike (a ReLU here)
        assert torch.equal(
            fi.declare_neuron_fi(**neurons)(x), plain.declare_neuron_fi(**neurons)(x)
        )


def test_constructor_profiles_the_model_as_it_is():
    net = vgg_like().train()
    before = net[1].running_mean.clone()
    core.fault_injection(net, 2, SHAPE, BOTH)
    assert not torch.equal(net[1].running_mean, before)  # 0.6.0: a train-mode forward

    net = vgg_like().train()
    assert_model_unchanged(net, lambda: DeepVigorFI(net, 2, SHAPE))

    with pytest.raises(StopIteration):  # 0.6.0: a model without parameters
        core.fault_injection(nn.Flatten(), 1, SHAPE)
    with pytest.raises(ValueError, match="no injectable layer"):
        DeepVigorFI(nn.Flatten(), 1, SHAPE)


def test_five_d_outputs_are_silently_not_injected():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 2))  # 0.6.0 never catalogues a root leaf module
    x = torch.randn(1, 2, 2, 2, 3)
    plain = core.fault_injection(net, 1, [2, 2, 2, 3], [nn.Linear])
    assert plain.get_layer_dim(0) == 5
    bad = neuron(plain, 0, value=[99.0])
    with torch.no_grad():
        assert torch.equal(bad(x), net(x))  # 0.6.0: declared, bounds-checked, never injected
    fi = DeepVigorFI(net, 1, [2, 2, 2, 3], ["all"])
    assert fi.get_layer_dim(0) == 5
    with pytest.raises(ValueError, match="neuron faults need 1 to 3 dimensions per image"):
        neuron(fi, 0, value=[99.0])


def test_logging_basic_config_side_effect(root_logger):
    root_logger.handlers = []
    DeepVigorFI(vgg_like(), 2, SHAPE)
    assert root_logger.handlers == []
    core.fault_injection(vgg_like(), 2, SHAPE)
    assert any("clientip" in (h.formatter._fmt or "") for h in root_logger.handlers)


def test_only_bit_flip_model_is_8_bit_quantised():
    plain = object.__new__(single_bit_flip_func)  # its __init__ calls logging.basicConfig
    plain.bits = 8
    # bit 7 is the sign of the 8-bit quantised copy: 0.75 -> 96 -> -32 -> -0.25, not -0.75
    assert plain._flip_bit_signed(torch.tensor(0.75), 1.0, 7).item() == -0.25

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 2))
    fi = DeepVigorFI(net, 1, [2], [nn.Linear])
    bad = fi.declare_neuron_fi(
        layer_num=[0], batch=[0], dim1=[1], function=ActivationBitFlip(fi, 31)
    )
    x = torch.ones(1, 2)
    with torch.no_grad():
        assert bad(x)[0, 1].item() == -net(x)[0, 1].item()  # ours: the IEEE-754 sign bit


class Reordered(nn.Module):
    """Registers ``late`` first but runs it second."""

    def __init__(self) -> None:
        super().__init__()
        self.late = nn.Conv2d(3, 5, 1)
        self.early = nn.Conv2d(2, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.late(self.early(x)).flatten(1)


def test_neuron_and_weight_numbers_disagree_when_execution_order_differs():
    plain = core.fault_injection(Reordered(), 1, [2, 1, 1])
    assert plain.get_layer_shape(0) == [1, 3, 1, 1]  # neurons: execution order ("early")
    assert plain.get_weights_size(0) == torch.Size([5, 3, 1, 1])  # weights: traversal ("late")
    with pytest.warns(UserWarning, match="execution order"):
        fi = DeepVigorFI(Reordered(), 1, [2, 1, 1])
    assert fi.get_layer_shape(0) == [1, 5, 1, 1] and fi.get_weights_size(0) == torch.Size(
        [5, 3, 1, 1]
    )


def test_default_layer_types():
    assert core.fault_injection(vgg_like(), 1, SHAPE).get_total_layers() == 2  # Conv2d only
    assert DeepVigorFI(vgg_like(), 1, SHAPE).get_total_layers() == 2  # the same default
    assert DeepVigorFI(vgg_like(), 1, SHAPE, BOTH).get_total_layers() == 4


def test_bounds_checks():
    net, x = vgg_like(), images()
    plain = core.fault_injection(net, 2, SHAPE, BOTH)
    with pytest.raises(AssertionError):  # 0.6.0: AssertionError, index without its name
        neuron(plain, 0, dim1=[4], value=[1.0])
    bad = neuron(plain, 0, dim1=[-1], value=[7.0])  # negative indices pass: last channel
    captured = []
    bad[0].register_forward_hook(lambda m, i, o: captured.append(o[0, -1, 0, 0].item()))
    bad(x)
    assert captured == [7.0]
    with pytest.raises(IndexError):  # 0.6.0: no bounds check on weights ("TODO")
        plain.declare_weight_fi(layer_num=[0], k=[9], dim1=[0], dim2=[0], dim3=[0], value=[1.0])

    fi = DeepVigorFI(net, 2, SHAPE)
    with pytest.raises(ValueError, match=r"dim1 \(channel\) index -1 out of range \[0, 4\)"):
        neuron(fi, 0, dim1=[-1], value=[7.0])
    with pytest.raises(ValueError, match=r"k index 9 out of range \[0, 4\)"):
        fi.declare_weight_fi(layer_num=[0], k=[9], dim1=[0], dim2=[0], dim3=[0], value=[1.0])


def test_a_model_that_is_one_layer():
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    assert core.fault_injection(net, 1, [3], [nn.Linear]).get_total_layers() == 0
    fi = DeepVigorFI(net, 1, [3], [nn.Linear])
    assert fi.get_total_layers() == 1 and fi.catalogue[0].name == ""
    bad = fi.declare_neuron_fi(layer_num=[0], batch=[0], dim1=[1], value=[3.0])
    assert bad(torch.ones(1, 3))[0, 1].item() == 3.0
