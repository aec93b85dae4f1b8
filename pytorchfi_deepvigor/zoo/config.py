"""A zoo training run: its configuration (the cache key) and its record (what it produced).

The configuration holds every choice that determines the trained weights; its hash keys the
checkpoint cache. The record is stored beside the weights in plain types.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "DATASETS",
    "DEFAULT_EPOCHS",
    "FASHION_MNIST_ROOT",
    "RECIPE_VERSION",
    "TrainingConfig",
    "TrainingRecord",
    "package_versions",
]

#: Epochs of the default recipe per zoo model (each reaches its accuracy at its width).
DEFAULT_EPOCHS: dict[str, int] = {
    "vgg11": 15,
    "vgg16": 15,
    "resnet18": 15,
    "resnet34": 15,
    "mobilenetv2": 20,
    "vit": 30,
    "convnext": 20,
}
RECIPE_VERSION = 1  # bump when the training loop changes, so old cache files are not reused
#: The data sets a zoo model trains on: the digits embedded in scikit-learn (the default) and
#: Fashion-MNIST read from local idx files (Debian's ``dataset-fashion-mnist`` package).
DATASETS: tuple[str, ...] = ("digits", "fashion-mnist")
#: Where Debian's ``dataset-fashion-mnist`` package installs the idx files.
FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
#: Fields added after cache files existed, with their defaults: left out of the cache key and
#: of the stored configuration at these values, so the files of earlier configs stay valid.
_OPTIONAL_FIELDS: dict[str, Any] = {"dataset": "digits", "train_limit": None}


def canonical_config(config: dict[str, Any]) -> dict[str, Any]:
    """A configuration dict without the optional fields that hold their defaults.

    Example:
        >>> canonical_config({"name": "vgg11", "dataset": "digits", "train_limit": None})
        {'name': 'vgg11'}
    """
    return {
        k: v for k, v in config.items() if k not in _OPTIONAL_FIELDS or v != _OPTIONAL_FIELDS[k]
    }


@dataclass(frozen=True)
class TrainingConfig:
    """Everything that determines the trained weights (and the cache key).

    Attributes:
        name: Zoo model name.
        width: Width multiplier.
        epochs: Training epochs.
        seed: Seed of the initial weights and of the shuffling.
        in_channels: Input channels (the grey digits repeated).
        input_size: Side of the square input images.
        batch_size: Mini-batch size.
        learning_rate: Peak learning rate of the one-cycle schedule.
        weight_decay: SGD weight decay.
        split_seed: Seed of the digits' train/test split.
        num_threads: Torch CPU threads while training (the weights depend on it; one thread
            is also the fastest for these small models on a busy machine).
        recipe: Version of the training loop.
        dataset: The training data, one of :data:`DATASETS`: ``"digits"`` (898 training
            images) or ``"fashion-mnist"`` (its 60,000 training images, or a seeded subset).
        train_limit: Train on a subset of this many training images, drawn with
            ``split_seed`` (``None``: all of them).

    Example:
        >>> TrainingConfig("vgg11", width=0.125, epochs=15).file_name()[:20]
        'vgg11-w0.125-s0-e15-'
    """

    name: str
    width: float
    epochs: int
    seed: int = 0
    in_channels: int = 1
    input_size: int = 32
    batch_size: int = 32
    learning_rate: float = 0.02
    weight_decay: float = 5e-4
    split_seed: int = 0
    num_threads: int = 1
    recipe: int = RECIPE_VERSION
    dataset: str = "digits"
    train_limit: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The fields, leaving out ``dataset`` and ``train_limit`` at their defaults.

        This is what the cache stores and hashes, so the configs of the digits (the files
        written before the data set was a choice) keep their keys.
        """
        return canonical_config(dataclasses.asdict(self))

    def key(self) -> str:
        """A 16-hex-digit hash of every field (the optional ones only when not at default)."""
        text = json.dumps(self.as_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def file_name(self) -> str:
        """The cache file name: readable fields then the hash (the data set unless digits)."""
        data = "" if self.dataset == "digits" else f"-{self.dataset}"
        return f"{self.name}{data}-w{self.width:g}-s{self.seed}-e{self.epochs}-{self.key()}.pt"


@dataclass(frozen=True)
class TrainingRecord:
    """What a training run produced, stored beside the weights.

    Attributes:
        config: The configuration trained.
        test_accuracy: Top-1 accuracy on the data set's test split (the digits: 899
            images; Fashion-MNIST: 10,000), in [0, 1].
        num_parameters: Parameters of the model.
        train_time_s: Wall-clock seconds of the training loop on the machine that trained.
        train_cpu_s: CPU seconds of the training process during the loop (all its threads);
            less sensitive than the wall clock to other jobs on a shared machine.
        versions: Versions of python, torch, torchvision, scikit-learn and this package.
        created_at: UTC time the training finished, ISO 8601.
        cache_path: The cache file, or ``None`` when not cached.
    """

    config: TrainingConfig
    test_accuracy: float
    num_parameters: int
    train_time_s: float
    train_cpu_s: float
    versions: dict[str, str]
    created_at: str
    cache_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (loadable with ``torch.load(weights_only=True)``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingRecord:
        """Inverse of :meth:`to_dict`."""
        fields = dict(data)
        fields["config"] = TrainingConfig(**fields["config"])
        return cls(**fields)


def package_versions() -> dict[str, str]:
    """Versions of python, torch, torchvision, scikit-learn and this package."""
    from importlib import metadata

    import sklearn
    import torchvision

    try:
        package_version = metadata.version("pytorchfi-deepvigor")
    except metadata.PackageNotFoundError:
        package_version = "unknown"
    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "scikit-learn": str(sklearn.__version__),
        "pytorchfi_deepvigor": package_version,
    }
