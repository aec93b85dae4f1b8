"""scikit-learn's handwritten digits: real scanned 8x8 digits shipped inside scikit-learn.

The 1797 images are split once, stratified and seeded, into a training half and a test
half (898 / 899 images, so the test half holds eight distinct analysis batches of 100),
upsampled bilinearly to the model's input size and normalised with the training half's
mean and standard deviation. The analysis batch is the first N test images.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pytorchfi_deepvigor.zoo.imageset import ImageSet

__all__ = [
    "DIGITS_CLASSES",
    "DIGITS_TEST_SIZE",
    "DigitsData",
    "load_digits",
    "analysis_batch",
    "predict",
]

#: Class names of the digits, index = label.
DIGITS_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))
#: Number of test images of the fixed split (the other 898 images train).
DIGITS_TEST_SIZE = 899


@dataclass(frozen=True, eq=False)  # tensors have no single truth value: compare fields
class DigitsData:
    """The digits split into a training and a test set.

    Attributes:
        train: Training images ``(898, C, S, S)`` float32 and labels ``(898,)`` int64.
        test: Test images ``(899, C, S, S)`` and labels, in the split's fixed order.
        mean: Mean of the training pixels in [0, 1] before normalisation.
        std: Standard deviation of the training pixels in [0, 1] before normalisation.
        seed: Seed of the split.
    """

    train: ImageSet
    test: ImageSet
    mean: float
    std: float
    seed: int


@functools.lru_cache(maxsize=8)
def _split_pixels(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits as sklearn_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_load_digits()
    images = (bunch.images / 16.0).astype(np.float32)  # pixel values 0..16 -> [0, 1]
    labels = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=DIGITS_TEST_SIZE, random_state=seed, stratify=labels
    )
    return x_train, x_test, y_train, y_test


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected {name} to be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"expected {name} >= {minimum}, got {value}")
    return value


def _to_tensor(
    pixels: np.ndarray, input_size: int, in_channels: int, mean: float, std: float
) -> torch.Tensor:
    images = torch.from_numpy(pixels).unsqueeze(1)
    if input_size != images.shape[-1]:
        images = F.interpolate(
            images, size=(input_size, input_size), mode="bilinear", align_corners=False
        )
    images = (images - mean) / std
    return images.repeat(1, in_channels, 1, 1).contiguous()


def load_digits(input_size: int = 32, in_channels: int = 1, seed: int = 0) -> DigitsData:
    """Load the digits, split, resized to ``input_size`` and normalised.

    Args:
        input_size: Side of the square images the model takes (8 keeps the originals).
        in_channels: Channels of the images; the grey channel is repeated (3 for RGB models).
        seed: Seed of the stratified train/test split.

    Returns:
        The training and test sets and the normalisation constants.

    Raises:
        TypeError: If an argument is not an int.
        ValueError: If ``input_size`` < 8 or ``in_channels`` < 1.

    Example:
        >>> data = load_digits(input_size=16)
        >>> tuple(data.test.images.shape), tuple(data.train.labels.shape)
        ((899, 1, 16, 16), (898,))
    """
    _check_int("input_size", input_size, 8)
    _check_int("in_channels", in_channels, 1)
    _check_int("seed", seed, 0)
    x_train, x_test, y_train, y_test = _split_pixels(seed)
    mean, std = float(x_train.mean()), float(x_train.std())
    train = ImageSet(
        images=_to_tensor(x_train, input_size, in_channels, mean, std),
        labels=torch.from_numpy(y_train.copy()),
        classes=DIGITS_CLASSES,
    )
    test = ImageSet(
        images=_to_tensor(x_test, input_size, in_channels, mean, std),
        labels=torch.from_numpy(y_test.copy()),
        classes=DIGITS_CLASSES,
    )
    return DigitsData(train=train, test=test, mean=mean, std=std, seed=seed)


def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Top-1 predictions of ``model`` in eval mode, without gradients.

    Args:
        model: The classifier; its train/eval mode is restored afterwards.
        images: Input batch ``(N, ...)``.
        batch_size: Images per forward.

    Returns:
        Int64 class indices ``(N,)``.
    """
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            chunks = [model(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
        return torch.cat(chunks).argmax(dim=1)
    finally:
        model.train(was_training)


def analysis_batch(
    n: int = 100,
    *,
    input_size: int = 32,
    in_channels: int = 1,
    seed: int = 0,
    offset: int = 0,
    correct_only: bool = False,
    model: nn.Module | None = None,
) -> ImageSet:
    """The analysis batch: the first ``n`` test images from position ``offset`` on.

    Args:
        n: Number of images (100 as in the paper).
        input_size: Side of the square images the model takes.
        in_channels: Channels of the images.
        seed: Seed of the train/test split.
        offset: First test image; ``offset=100 * k`` gives the k-th distinct batch.
        correct_only: Keep only images ``model`` classifies correctly (in eval mode),
            scanning the test set in order from ``offset`` until ``n`` are found.
        model: The classifier, required with ``correct_only``; left unchanged.

    Returns:
        ``n`` images and their labels.

    Raises:
        TypeError: If ``n`` or ``offset`` is not an int.
        ValueError: If the test set holds fewer than ``n`` (correct) images from ``offset``,
            or ``correct_only`` is set without a model.

    Example:
        >>> batch = analysis_batch(4, input_size=16)
        >>> tuple(batch.images.shape), batch.labels.tolist()
        ((4, 1, 16, 16), [6, 5, 9, 4])
    """
    _check_int("n", n, 1)
    _check_int("offset", offset, 0)
    if correct_only and model is None:
        raise ValueError("correct_only=True needs the model that classifies the images")
    test = load_digits(input_size=input_size, in_channels=in_channels, seed=seed).test
    images, labels = test.images[offset:], test.labels[offset:]
    if correct_only and model is not None:
        keep = predict(model, images) == labels
        images, labels = images[keep], labels[keep]
    if len(images) < n:
        which = "correctly classified " if correct_only else ""
        raise ValueError(
            f"the digits test set holds only {len(images)} {which}images from offset "
            f"{offset}, fewer than n={n}; lower n or offset"
        )
    return ImageSet(images=images[:n].clone(), labels=labels[:n].clone(), classes=test.classes)
