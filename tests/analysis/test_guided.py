"""The guided VV search (``probing.GUIDE_IMAGES``) against the plain checked search.

Each target's first images are searched by the checked bisection; its other images start
from the median magnitude those found critical and gallop from there. Under monotone
criticality the answers are the same, only the probes fewer: on a small trained CNN and 40
images, both targets' VFs equal the plain search's, at fewer image-evaluations.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import train_on_digits
from torch import nn

import pytorchfi_deepvigor.analysis.probing as probing
from pytorchfi_deepvigor.analysis import DeepVigorAnalyzer


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, padding=1, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 10),
    )
    return train_on_digits(net, epochs=4, n_test=40)


def _analyse(
    net: nn.Module, images: torch.Tensor, guides: int | None, monkeypatch, work: float = 0.0
) -> object:
    monkeypatch.setattr(probing, "GUIDE_IMAGES", guides)
    monkeypatch.setattr(probing, "GUIDE_MIN_WORK", work)  # 0: guided whatever the suffix
    return DeepVigorAnalyzer(net, images).analyze(target="both")


def test_guided_search_gives_the_plain_vfs_for_fewer_evaluations(trained, monkeypatch) -> None:
    net, images = trained
    plain = _analyse(net, images, None, monkeypatch)
    guided = _analyse(net, images, 8, monkeypatch)
    for a, b in zip(plain.layers, guided.layers, strict=True):
        assert (a.layer_num, a.target) == (b.layer_num, b.target)
        values = (a.nvf, b.nvf) if a.target == "activations" else (a.cvf, b.cvf)
        assert np.array_equal(*values), (a.name, a.target)
        assert np.array_equal(a.vv_plus, b.vv_plus) and np.array_equal(a.vv_minus, b.vv_minus)
    for target in ("activations", "weights"):
        costs = [
            sum(x.cost.image_evaluations for x in r.layers if x.target == target)
            for r in (plain, guided)
        ]
        assert costs[1] < 0.95 * costs[0], (target, costs)  # measured 0.92 and 0.87


def test_too_few_images_for_guides_search_plainly(trained, monkeypatch) -> None:
    """Below twice the guides every image is a guide: the same probes as the plain search."""
    net, images = trained
    plain = _analyse(net, images[:15], None, monkeypatch)
    guided = _analyse(net, images[:15], 8, monkeypatch)
    assert plain.cost.image_evaluations == guided.cost.image_evaluations


def test_cheap_suffixes_are_searched_plainly_by_default(trained, monkeypatch) -> None:
    """This CNN's suffixes cost at most 0.016 MFLOP per image: below the default's work, the
    guides' extra rounds would cost more than the probes they save."""
    net, images = trained
    work = probing.GUIDE_MIN_WORK
    plain = _analyse(net, images, None, monkeypatch)
    default = _analyse(net, images, 8, monkeypatch, work)
    assert plain.cost.image_evaluations == default.cost.image_evaluations
    assert plain.cost.batched_forwards == default.cost.batched_forwards
