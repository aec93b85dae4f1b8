"""The embedded digits: the fixed split, resizing, normalisation and the analysis batch."""

from __future__ import annotations

import pytest
import torch
from guarantees import assert_model_unchanged
from torch import nn

from pytorchfi_deepvigor.zoo import analysis_batch, load_digits, predict
from pytorchfi_deepvigor.zoo.digits import DIGITS_TEST_SIZE


class _AlwaysClass(nn.Module):
    """Predicts one class for every image; has a BatchNorm to show mode handling."""

    def __init__(self, label: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(1)
        self.label = label

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], 10)
        logits[:, self.label] = 1.0
        return logits + 0 * self.bn(x.flatten(1)[:, :1]).sum()


def test_split_sizes_shapes_and_stratification() -> None:
    data = load_digits()
    assert len(data.train) + len(data.test) == 1797
    assert len(data.test) == DIGITS_TEST_SIZE and len(data.train) == 1797 - DIGITS_TEST_SIZE
    assert data.test.images.shape == (DIGITS_TEST_SIZE, 1, 32, 32)
    assert data.test.images.dtype == torch.float32 and data.test.labels.dtype == torch.int64
    test_counts = torch.bincount(data.test.labels, minlength=10)
    all_counts = test_counts + torch.bincount(data.train.labels, minlength=10)
    assert ((test_counts - all_counts / 2).abs() <= 1).all()  # stratified: half of each digit


def test_training_pixels_are_normalised() -> None:
    data = load_digits(input_size=8)
    assert abs(float(data.train.images.mean())) < 1e-4
    assert abs(float(data.train.images.std()) - 1.0) < 1e-3
    assert 0.0 < data.mean < 1.0 and data.std > 0


def test_same_seed_same_split_other_seed_other_split() -> None:
    a, b, c = load_digits(seed=0), load_digits(seed=0), load_digits(seed=1)
    assert torch.equal(a.test.images, b.test.images) and torch.equal(a.test.labels, b.test.labels)
    assert not torch.equal(a.test.labels, c.test.labels)


def test_resize_keeps_the_picture_and_channels_repeat() -> None:
    small, big = load_digits(input_size=8), load_digits(input_size=16, in_channels=3)
    assert big.test.images.shape == (DIGITS_TEST_SIZE, 3, 16, 16)
    assert torch.equal(big.test.images[:, 0], big.test.images[:, 2])
    down = nn.functional.avg_pool2d(big.test.images[:, :1], 2)
    assert torch.corrcoef(torch.stack([down.flatten(), small.test.images.flatten()]))[0, 1] > 0.95


def test_analysis_batch_is_the_first_test_images_and_offsets_are_distinct() -> None:
    test = load_digits().test
    batch = analysis_batch()
    assert len(batch) == 100 and torch.equal(batch.images, test.images[:100])
    second = analysis_batch(100, offset=100)
    assert torch.equal(second.labels, test.labels[100:200])
    assert analysis_batch(100, offset=DIGITS_TEST_SIZE - 100).images.shape[0] == 100


def test_correct_only_keeps_correctly_classified_images_in_order() -> None:
    model = _AlwaysClass(label=3).train()
    batch = assert_model_unchanged(
        model, lambda: analysis_batch(10, correct_only=True, model=model)
    )
    test = load_digits().test
    expected = test.images[test.labels == 3][:10]
    assert torch.equal(batch.images, expected) and set(batch.labels.tolist()) == {3}


def test_predict_restores_the_mode() -> None:
    model = _AlwaysClass(label=2).train()
    labels = assert_model_unchanged(model, lambda: predict(model, torch.zeros(3, 1, 8, 8)))
    assert labels.tolist() == [2, 2, 2]


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: load_digits(input_size=4), ValueError, "expected input_size >= 8, got 4"),
        (lambda: load_digits(in_channels=0), ValueError, "expected in_channels >= 1"),
        (lambda: load_digits(seed=1.5), TypeError, "expected seed to be an int"),
        (lambda: analysis_batch(0), ValueError, "expected n >= 1, got 0"),
        (lambda: analysis_batch(900), ValueError, "holds only 899 images from offset 0"),
        (lambda: analysis_batch(100, offset=850), ValueError, "only 49 images from offset 850"),
        (lambda: analysis_batch(5, correct_only=True), ValueError, "needs the model"),
        (
            lambda: analysis_batch(100, correct_only=True, model=_AlwaysClass(0)),
            ValueError,
            "only 89 correctly classified images",
        ),
    ],
    ids=["size", "channels", "seed-type", "n", "too-many", "offset", "no-model", "few-correct"],
)
def test_bad_arguments_are_rejected(call, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        call()
