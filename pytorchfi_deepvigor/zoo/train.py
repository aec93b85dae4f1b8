"""Deterministic, seeded CPU training of zoo models, with a checkpoint cache.

The data set is a choice of the configuration (:data:`~.config.DATASETS`): the digits
embedded in scikit-learn (the default, always available offline) or Fashion-MNIST read from
local idx files (Debian's ``dataset-fashion-mnist`` package installs them in
:data:`~.config.FASHION_MNIST_ROOT`; any folder :func:`~.datasets.load_mnist` reads works), on
all 60,000 training images or a seeded subset (``train_limit``), tested on its 10,000 test images.

The recipe: SGD with Nesterov momentum 0.9, a one-cycle learning-rate schedule, weight decay,
cross-entropy, mini-batches shuffled by a ``torch.Generator`` seeded with ``seed``; the
weights are initialised from ``seed`` inside ``torch.random.fork_rng`` so the caller's global
generator is left as it was. Same seed, same thread count: the same weights bit for bit.

:func:`get_trained_model` caches the checkpoint under :func:`~.cache.resolve_cache_dir`
``/zoo``, in a file named by the model, width, seed and a hash of the whole
:class:`TrainingConfig`, with a :class:`TrainingRecord` (test accuracy, seed, versions,
training time).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pytorchfi_deepvigor.zoo.cache import (
    CHECKPOINT_FORMAT,
    DamagedCacheFile,
    atomic_torch_save,
    read_cache_file,
    resolve_cache_dir,
    state_dict_digest,
)
from pytorchfi_deepvigor.zoo.config import (
    DATASETS,
    DEFAULT_EPOCHS,
    FASHION_MNIST_ROOT,
    TrainingConfig,
    TrainingRecord,
    package_versions,
)
from pytorchfi_deepvigor.zoo.datasets import load_mnist
from pytorchfi_deepvigor.zoo.digits import load_digits, predict
from pytorchfi_deepvigor.zoo.imageset import ImageSet, subset_indices
from pytorchfi_deepvigor.zoo.models import DEFAULT_WIDTHS, build_model, count_parameters

__all__ = [
    "DATASETS",
    "DEFAULT_EPOCHS",
    "FASHION_MNIST_ROOT",
    "TrainingConfig",
    "TrainingRecord",
    "train_model",
    "get_trained_model",
    "training_data",
]

logger = logging.getLogger(__name__)


def _make_config(
    name: str, width: float | None, epochs: int | None, **fields: Any
) -> TrainingConfig:
    if name not in DEFAULT_WIDTHS:
        raise ValueError(
            f"only zoo models train on the digits or Fashion-MNIST, expected one of {sorted(DEFAULT_WIDTHS)}, "
            f"got {name!r}; load other trained models with load_checkpoint"
        )
    dataset = fields.get("dataset", "digits")
    if dataset not in DATASETS:
        raise ValueError(f"expected dataset in {list(DATASETS)}, got {dataset!r}")
    limit = fields.get("train_limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"expected train_limit a positive int or None, got {limit!r}")
    width = DEFAULT_WIDTHS[name] if width is None else width
    epochs = DEFAULT_EPOCHS[name] if epochs is None else epochs
    integers = {"epochs": (epochs, 1), "seed": (fields["seed"], 0)}
    for field in ("batch_size", "num_threads", "in_channels", "input_size"):
        if field in fields:
            integers[field] = (fields[field], 1)
    for field, (value, minimum) in integers.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"expected {field} to be an int, got {type(value).__name__}")
        if value < minimum:
            raise ValueError(f"expected {field} >= {minimum}, got {value}")
    if isinstance(width, bool) or not isinstance(width, int | float) or not width > 0:
        raise ValueError(f"expected width > 0, got {width!r}")
    if not fields.get("learning_rate", 1.0) > 0 or not fields.get("weight_decay", 0.0) >= 0:
        raise ValueError("expected learning_rate > 0 and weight_decay >= 0")
    return TrainingConfig(name=name, width=float(width), epochs=epochs, **fields)


def training_data(
    config: TrainingConfig, data_root: str | os.PathLike[str] | None = None
) -> tuple[ImageSet, ImageSet]:
    """The training and test sets of a configuration, resized and normalised for the model.

    Args:
        config: The training configuration (its ``dataset``, ``train_limit``, ``split_seed``,
            ``input_size`` and ``in_channels``).
        data_root: The folder of the Fashion-MNIST idx files (default
            :data:`~.config.FASHION_MNIST_ROOT`); unused for the digits.

    Returns:
        ``(train, test)``: the digits' fixed split, or Fashion-MNIST's training images (the
        seeded subset of ``train_limit`` when set) and its 10,000 test images.

    Raises:
        FileNotFoundError: If the Fashion-MNIST files are not in ``data_root`` (the message
            names the Debian package that installs them).
    """
    if config.dataset == "digits":
        digits = load_digits(config.input_size, config.in_channels, config.split_seed)
        if config.train_limit is None:
            return digits.train, digits.test
        keep = torch.from_numpy(
            subset_indices(len(digits.train), config.train_limit, config.split_seed)
        )
        train = ImageSet(digits.train.images[keep], digits.train.labels[keep], digits.train.classes)
        return train, digits.test
    root = Path(FASHION_MNIST_ROOT if data_root is None else data_root)
    options = {"input_size": config.input_size, "in_channels": config.in_channels}
    try:
        train = load_mnist(
            root,
            kind="fashion-mnist",
            split="train",
            limit=config.train_limit,
            seed=config.split_seed,
            **options,
        )
        test = load_mnist(root, kind="fashion-mnist", split="test", **options)
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"Fashion-MNIST is not in {root}: install Debian's dataset-fashion-mnist package "
            f"(apt install dataset-fashion-mnist, files in {FASHION_MNIST_ROOT}) or pass "
            f"data_root=<folder of the idx files> ({error})"
        ) from error
    return train, test


def _fit(
    config: TrainingConfig, train_set: ImageSet, progress: bool
) -> tuple[nn.Module, float, float]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build_model(
            config.name,
            width=config.width,
            in_channels=config.in_channels,
            input_size=config.input_size,
            num_classes=len(train_set.classes),
        )
    generator = torch.Generator().manual_seed(config.seed)
    steps_per_epoch = math.ceil(len(train_set) / config.batch_size)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=config.learning_rate,
        momentum=0.9,
        nesterov=True,
        weight_decay=config.weight_decay,
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.learning_rate, total_steps=config.epochs * steps_per_epoch
    )
    from tqdm.auto import tqdm

    start, start_cpu = time.perf_counter(), time.process_time()
    model.train()
    epochs = tqdm(range(config.epochs), desc=config.name, disable=not progress, leave=False)
    for epoch in epochs:
        order = torch.randperm(len(train_set), generator=generator)
        for first in range(0, len(order), config.batch_size):
            index = order[first : first + config.batch_size]
            loss = F.cross_entropy(model(train_set.images[index]), train_set.labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        epochs.set_postfix(loss=f"{loss.item():.3f}")
        logger.debug("%s epoch %d: last batch loss %.4f", config.name, epoch, loss.item())
    elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    model.eval()
    return model, elapsed, cpu


def _train(
    config: TrainingConfig, progress: bool, data_root: str | os.PathLike[str] | None = None
) -> tuple[nn.Module, TrainingRecord]:
    train_set, test = training_data(config, data_root)
    previous_threads = torch.get_num_threads()
    try:
        torch.set_num_threads(config.num_threads)
        model, elapsed, cpu = _fit(config, train_set, progress)
        accuracy = float((predict(model, test.images) == test.labels).float().mean())
    finally:
        torch.set_num_threads(previous_threads)
    record = TrainingRecord(
        config=config,
        test_accuracy=accuracy,
        num_parameters=count_parameters(model),
        train_time_s=round(elapsed, 3),
        train_cpu_s=round(cpu, 3),
        versions=package_versions(),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    return model, record


def train_model(
    name: str,
    *,
    width: float | None = None,
    epochs: int | None = None,
    seed: int = 0,
    in_channels: int = 1,
    input_size: int = 32,
    batch_size: int = 32,
    learning_rate: float = 0.02,
    weight_decay: float = 5e-4,
    num_threads: int = 1,
    progress: bool = False,
    dataset: str = "digits",
    train_limit: int | None = None,
    data_root: str | os.PathLike[str] | None = None,
) -> tuple[nn.Module, TrainingRecord]:
    """Train a zoo model on the digits or Fashion-MNIST (no cache: see :func:`get_trained_model`).

    Args:
        name: Zoo model name (see :func:`~pytorchfi_deepvigor.zoo.models.list_models`).
        width: Width multiplier; default its entry in ``DEFAULT_WIDTHS``.
        epochs: Training epochs; default its entry in :data:`DEFAULT_EPOCHS`.
        seed: Seed of the initial weights and the shuffling.
        in_channels: Input channels (1; 3 repeats the grey channel).
        input_size: Side of the square input images.
        batch_size: Mini-batch size.
        learning_rate: Peak learning rate.
        weight_decay: SGD weight decay.
        num_threads: Torch CPU threads while training (restored after). The weights depend
            on it: the same seed and thread count give the same weights bit for bit.
        progress: Show a tqdm progress bar over the epochs (on stderr).
        dataset: ``"digits"`` (the default) or ``"fashion-mnist"`` (see :func:`training_data`).
        train_limit: Train on a seeded subset of this many training images (``None``: all).
        data_root: Folder of the Fashion-MNIST idx files (default
            ``/usr/share/datasets/fashion-mnist``, where Debian's ``dataset-fashion-mnist``
            package puts them); not part of the configuration.

    Returns:
        The trained model in eval mode and its :class:`TrainingRecord`.

    Raises:
        ValueError: If the name is not a zoo model or an argument is out of range.
        FileNotFoundError: If ``dataset="fashion-mnist"`` and its files are not in ``data_root``.

    Example:
        >>> model, record = train_model("vgg11", width=1 / 16, epochs=1, input_size=32)
        >>> model.training, record.config.seed
        (False, 0)
    """
    config = _make_config(
        name,
        width,
        epochs,
        seed=seed,
        in_channels=in_channels,
        input_size=input_size,
        batch_size=batch_size,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        num_threads=num_threads,
        **_data_fields(dataset, train_limit),
    )
    return _train(config, progress, data_root)


def _data_fields(dataset: str, train_limit: int | None) -> dict[str, Any]:
    return {"dataset": dataset, "train_limit": train_limit}


def get_trained_model(
    name: str,
    *,
    width: float | None = None,
    seed: int = 0,
    epochs: int | None = None,
    in_channels: int = 1,
    input_size: int = 32,
    cache_dir: str | os.PathLike[str] | None = None,
    retrain: bool = False,
    num_threads: int = 1,
    progress: bool = False,
    dataset: str = "digits",
    train_limit: int | None = None,
    data_root: str | os.PathLike[str] | None = None,
) -> tuple[nn.Module, TrainingRecord]:
    """A zoo model trained on the digits (or Fashion-MNIST), from the cache or trained and cached.

    The cache file lives in ``resolve_cache_dir(cache_dir) / "zoo"`` (see
    :mod:`~pytorchfi_deepvigor.zoo.cache`). A damaged file is reported with a
    ``RuntimeWarning`` and rebuilt; a cache that cannot be written is reported with a
    ``RuntimeWarning`` and the model is returned uncached.

    Args:
        name: Zoo model name.
        width: Width multiplier; default its entry in ``DEFAULT_WIDTHS``.
        seed: Seed of the initial weights and the shuffling.
        epochs: Training epochs; default its entry in :data:`DEFAULT_EPOCHS`.
        in_channels: Input channels.
        input_size: Side of the square input images.
        cache_dir: Cache directory; wins over ``PYTORCHFI_DEEPVIGOR_CACHE`` and XDG.
        retrain: Train again even when a valid cache file exists (and overwrite it).
        num_threads: Torch threads while training, as in :func:`train_model`.
        progress: Show a progress bar while training.
        dataset: ``"digits"`` or ``"fashion-mnist"``, as in :func:`train_model`. A digits
            model keeps the cache file name and key it had before this option existed.
        train_limit: Train on a seeded subset of this many training images.
        data_root: Folder of the Fashion-MNIST idx files, as in :func:`train_model`.

    Returns:
        The model in eval mode and its :class:`TrainingRecord` (``cache_path`` set when
        the file exists).

    Raises:
        FileNotFoundError: If Fashion-MNIST is asked for and its files are not there.

    Example:
        >>> model, record = get_trained_model("vgg11", width=1 / 32, epochs=1,
        ...     dataset="fashion-mnist", train_limit=256)  # doctest: +SKIP
    """
    config = _make_config(
        name,
        width,
        epochs,
        seed=seed,
        in_channels=in_channels,
        input_size=input_size,
        num_threads=num_threads,
        **_data_fields(dataset, train_limit),
    )
    path = resolve_cache_dir(cache_dir) / "zoo" / config.file_name()
    expected = config.as_dict()
    if path.exists() and not retrain:
        try:
            payload = read_cache_file(path, expected)
            model = build_model(
                config.name,
                width=config.width,
                in_channels=config.in_channels,
                input_size=config.input_size,
                num_classes=10,
            )
            model.load_state_dict(payload["state_dict"])
            record = TrainingRecord.from_dict({**payload["record"], "cache_path": str(path)})
            return model.eval(), record
        except (DamagedCacheFile, RuntimeError, TypeError, KeyError) as error:
            warnings.warn(
                f"rebuilding damaged zoo cache file: {error}", RuntimeWarning, stacklevel=2
            )
    model, record = _train(config, progress, data_root)
    state_dict = {key: value.detach().clone() for key, value in model.state_dict().items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": expected,
        "record": record.to_dict(),
        "state_dict": state_dict,
        "digest": state_dict_digest(state_dict),
    }
    try:
        atomic_torch_save(payload, path)
    except OSError as error:
        warnings.warn(
            f"could not write the zoo cache file {path}: {error}", RuntimeWarning, stacklevel=2
        )
        return model, record
    return model, dataclasses.replace(record, cache_path=str(path))
