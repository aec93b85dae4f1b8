"""Deterministic, seeded CPU training of zoo models on the digits, with a checkpoint cache.

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
    DEFAULT_EPOCHS,
    TrainingConfig,
    TrainingRecord,
    package_versions,
)
from pytorchfi_deepvigor.zoo.digits import load_digits, predict
from pytorchfi_deepvigor.zoo.models import DEFAULT_WIDTHS, build_model, count_parameters

__all__ = [
    "DEFAULT_EPOCHS",
    "TrainingConfig",
    "TrainingRecord",
    "train_model",
    "get_trained_model",
]

logger = logging.getLogger(__name__)


def _make_config(
    name: str, width: float | None, epochs: int | None, **fields: Any
) -> TrainingConfig:
    if name not in DEFAULT_WIDTHS:
        raise ValueError(
            f"only zoo models train on the digits, expected one of {sorted(DEFAULT_WIDTHS)}, "
            f"got {name!r}; load other trained models with load_checkpoint"
        )
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


def _fit(config: TrainingConfig, progress: bool) -> tuple[nn.Module, float, float]:
    data = load_digits(config.input_size, config.in_channels, config.split_seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build_model(
            config.name,
            width=config.width,
            in_channels=config.in_channels,
            input_size=config.input_size,
            num_classes=len(data.train.classes),
        )
    generator = torch.Generator().manual_seed(config.seed)
    steps_per_epoch = math.ceil(len(data.train) / config.batch_size)
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
        order = torch.randperm(len(data.train), generator=generator)
        for first in range(0, len(order), config.batch_size):
            index = order[first : first + config.batch_size]
            loss = F.cross_entropy(model(data.train.images[index]), data.train.labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        epochs.set_postfix(loss=f"{loss.item():.3f}")
        logger.debug("%s epoch %d: last batch loss %.4f", config.name, epoch, loss.item())
    elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    model.eval()
    return model, elapsed, cpu


def _train(config: TrainingConfig, progress: bool) -> tuple[nn.Module, TrainingRecord]:
    previous_threads = torch.get_num_threads()
    try:
        torch.set_num_threads(config.num_threads)
        model, elapsed, cpu = _fit(config, progress)
        test = load_digits(config.input_size, config.in_channels, config.split_seed).test
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
) -> tuple[nn.Module, TrainingRecord]:
    """Train a zoo model on the digits (no cache: see :func:`get_trained_model`).

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

    Returns:
        The trained model in eval mode and its :class:`TrainingRecord`.

    Raises:
        ValueError: If the name is not a zoo model or an argument is out of range.

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
    )
    return _train(config, progress)


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
) -> tuple[nn.Module, TrainingRecord]:
    """A zoo model trained on the digits, from the cache or trained and cached.

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

    Returns:
        The model in eval mode and its :class:`TrainingRecord` (``cache_path`` set when
        the file exists).
    """
    config = _make_config(
        name,
        width,
        epochs,
        seed=seed,
        in_channels=in_channels,
        input_size=input_size,
        num_threads=num_threads,
    )
    path = resolve_cache_dir(cache_dir) / "zoo" / config.file_name()
    expected = dataclasses.asdict(config)
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
    model, record = _train(config, progress)
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
