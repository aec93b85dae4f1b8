"""PyTorchFI 0.6.0's own error models on DeepVigorFI: seed for seed the same faults and outputs.

Each model of ``pytorchfi.neuron_error_models`` and ``pytorchfi.weight_error_models`` runs twice
from the same ``random``/``torch`` seeds: with plain PyTorchFI's injector and with
``DeepVigorFI`` (``single_bit_flip_func``: PyTorchFI's class, and
:class:`~pytorchfi_deepvigor.error_models.SingleBitFlipFI` on DeepVigorFI). The declared faults,
the corrupted weights, the corrupted outputs (bit for bit) and the RNG states afterwards must
be equal.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

import pytest
import torch
from pytorchfi import core
from pytorchfi import neuron_error_models as nem
from pytorchfi import weight_error_models as wem
from torch import nn

from pytorchfi_deepvigor.error_models import SingleBitFlipFI, single_bit_flip_func
from pytorchfi_deepvigor.injector import DeepVigorFI

SHAPE = [3, 12, 12]
BATCH = 4
BOTH = [nn.Conv2d, nn.Linear]


def small_cnn() -> nn.Module:
    torch.manual_seed(11)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3), nn.ReLU(), nn.Flatten(),
        nn.Linear(8 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 5),
    ).eval()  # fmt: skip


IMAGES = torch.randn(BATCH, *SHAPE, generator=torch.Generator().manual_seed(5))


@pytest.fixture(autouse=True)
def root_logger():
    """PyTorchFI calls logging.basicConfig: give the root logger back as it was."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers, root.level = handlers, level


def _bits(t: torch.Tensor) -> bytes:
    return t.detach().contiguous().view(torch.int32).numpy().tobytes()


def run(make_injector: Callable[[], Any], error_model: Callable[[Any], nn.Module], seed: int):
    """Everything the error model decided and produced, from one seed."""
    random.seed(seed)
    torch.manual_seed(seed)
    pfi = make_injector()
    corrupted = error_model(pfi)
    with torch.no_grad():
        out = corrupted(IMAGES)
    declared = [
        list(getattr(pfi, a, []))
        for a in ("corrupt_layer", "corrupt_batch", "corrupt_dim1", "corrupt_dim2")
    ] + [list(pfi.corrupt_dim3), [repr(v) for v in pfi.corrupt_value]]
    weights = [_bits(p) for p in corrupted.parameters()]
    return declared, weights, _bits(out), random.getstate(), torch.random.get_rng_state()


def assert_same(plain, ours) -> None:
    names = ["declared faults", "corrupted weights", "corrupted output", "random", "torch RNG"]
    for name, a, b in zip(names, plain, ours, strict=True):
        same = torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b
        assert same, f"{name} differ"


NEURON_MODELS = {
    "random_neuron_inj": lambda p: nem.random_neuron_inj(p, min_val=1e3, max_val=2e3),
    "random_neuron_inj_batched": lambda p: nem.random_neuron_inj_batched(p, 1e3, 2e3),
    "random_neuron_inj_batched same loc": lambda p: nem.random_neuron_inj_batched(
        p, 1e3, 2e3, rand_loc=False
    ),
    "random_neuron_inj_batched same value": lambda p: nem.random_neuron_inj_batched(
        p, 1e3, 2e3, rand_val=False
    ),
    "random_inj_per_layer": lambda p: nem.random_inj_per_layer(p, min_val=1e3, max_val=2e3),
    "random_inj_per_layer_batched": lambda p: nem.random_inj_per_layer_batched(p, 1e3, 2e3),
    "random_inj_per_layer_batched fixed": lambda p: nem.random_inj_per_layer_batched(
        p, 1e3, 2e3, rand_loc=False, rand_val=False
    ),
}
LAYER_TYPES = {"default": None, "conv and linear": BOTH, "all": ["all"]}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("layer_types", LAYER_TYPES.values(), ids=LAYER_TYPES.keys())
@pytest.mark.parametrize("error_model", NEURON_MODELS.values(), ids=NEURON_MODELS.keys())
def test_neuron_error_models(error_model, layer_types, seed):
    net = small_cnn()
    plain = run(lambda: core.fault_injection(net, BATCH, SHAPE, layer_types), error_model, seed)
    ours = run(lambda: DeepVigorFI(net, BATCH, SHAPE, layer_types), error_model, seed)
    assert_same(plain, ours)
    with torch.no_grad():
        assert plain[2] != _bits(net(IMAGES))  # the faults did reach the output


WEIGHT_MODELS = {
    "random_weight_inj": lambda p: wem.random_weight_inj(p, min_val=1e3, max_val=2e3),
    "random_weight_inj layer 1": lambda p: wem.random_weight_inj(p, 1, 1e3, 2e3),
    "zero_func_rand_weight": wem.zero_func_rand_weight,
}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("layer_types", [None, BOTH], ids=["default", "conv and linear"])
@pytest.mark.parametrize("error_model", WEIGHT_MODELS.values(), ids=WEIGHT_MODELS.keys())
def test_weight_error_models(error_model, layer_types, seed):
    net = small_cnn()
    plain = run(lambda: core.fault_injection(net, BATCH, SHAPE, layer_types), error_model, seed)
    ours = run(lambda: DeepVigorFI(net, BATCH, SHAPE, layer_types), error_model, seed)
    assert_same(plain, ours)


@pytest.mark.parametrize("seed", [0, 3])
@pytest.mark.parametrize("layer_types", [None, BOTH], ids=["default", "conv and linear"])
def test_random_weight_location(layer_types, seed):
    net = small_cnn()
    for layer in (-1, 0, 1):
        random.seed(seed)
        expected = wem.random_weight_location(
            core.fault_injection(net, 1, SHAPE, layer_types), layer
        )
        random.seed(seed)
        assert (
            wem.random_weight_location(DeepVigorFI(net, 1, SHAPE, layer_types), layer) == expected
        )


SINGLE_BIT = {
    "random_neuron_single_bit_inj": lambda p: nem.random_neuron_single_bit_inj(
        p, [4.0] * p.get_total_layers()
    ),
    "random_neuron_single_bit_inj_batched": lambda p: nem.random_neuron_single_bit_inj_batched(
        p, [4.0] * p.get_total_layers()
    ),
    "random_neuron_single_bit_inj_batched same loc": (
        lambda p: nem.random_neuron_single_bit_inj_batched(
            p, [4.0] * p.get_total_layers(), rand_loc=False
        )
    ),
}


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("error_model", SINGLE_BIT.values(), ids=SINGLE_BIT.keys())
def test_single_bit_flip_func(error_model, seed):
    net = small_cnn()

    def plain_injector() -> Any:
        return nem.single_bit_flip_func(net, BATCH, input_shape=SHAPE, use_cuda=False, bits=8)

    def our_injector() -> Any:
        return single_bit_flip_func(net, BATCH, input_shape=SHAPE, use_cuda=False, bits=8)

    class BuiltOnDeepVigorFI(nem.single_bit_flip_func, DeepVigorFI):
        """PyTorchFI's own subclass over DeepVigorFI: its __init__ passes bits=8 through."""

    def built_injector() -> Any:
        return BuiltOnDeepVigorFI(net, BATCH, input_shape=SHAPE, use_cuda=False, bits=8)

    plain = run(plain_injector, error_model, seed)
    assert_same(plain, run(our_injector, error_model, seed))
    assert_same(plain, run(built_injector, error_model, seed))


def test_single_bit_flip_func_is_pytorchfis_class_on_deepvigorfi():
    pfi = SingleBitFlipFI(small_cnn(), BATCH, SHAPE, bits=6)
    assert isinstance(pfi, DeepVigorFI) and isinstance(pfi, nem.single_bit_flip_func)
    assert pfi.bits == 6 and pfi.LayerRanges == [] and pfi.get_total_layers() == 2
    assert pfi.get_inj_layer_types() == [nn.Conv2d]  # as PyTorchFI's: Conv2d only by default
    root = logging.getLogger()
    root.handlers = []
    SingleBitFlipFI(small_cnn(), BATCH, SHAPE)
    assert root.handlers == []  # PyTorchFI's constructor would call logging.basicConfig
    with pytest.raises(ValueError, match=r"bits as an int in \[1, 64\]"):
        SingleBitFlipFI(small_cnn(), BATCH, SHAPE, bits=0)


def test_pytorchfis_single_bit_flip_cannot_sit_on_the_wider_default_layer_set():
    # why the default layer_types must be 0.6.0's: ranges for Conv2d layers only overrun
    net = small_cnn()
    pfi = DeepVigorFI(net, BATCH, SHAPE, BOTH)
    assert pfi.get_total_layers() == 4  # 2 ranges (one per Conv2d) would be too few here
    ours = SingleBitFlipFI(net, BATCH, SHAPE)
    random.seed(0)
    nem.random_neuron_single_bit_inj_batched(ours, [4.0, 4.0])(IMAGES)  # no IndexError
