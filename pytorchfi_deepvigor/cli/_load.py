"""What the CLI runs on: the model (zoo, checkpoint or random weights) and the analysis images.

Private helper of :mod:`pytorchfi_deepvigor.cli`; it reads the parsed arguments and raises
``ValueError``/``FileNotFoundError`` with messages that name the option to change.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pytorchfi_deepvigor.bits import parse_fault_model
from pytorchfi_deepvigor.quantized import network_words
from pytorchfi_deepvigor.zoo.cache import DamagedCacheFile, read_cache_file, resolve_cache_dir
from pytorchfi_deepvigor.zoo.checkpoint import ALLOW_PICKLE_HINT, NAME_HINT, load_checkpoint
from pytorchfi_deepvigor.zoo.datasets import (
    ImageSet,
    load_cifar10,
    load_cifar100,
    load_image_folder,
    load_mnist,
)
from pytorchfi_deepvigor.zoo.digits import analysis_batch
from pytorchfi_deepvigor.zoo.int8 import quantize_int8
from pytorchfi_deepvigor.zoo.models import DEFAULT_WIDTHS, TORCHVISION_PREFIX, build_model
from pytorchfi_deepvigor.zoo.train import DEFAULT_EPOCHS, TrainingConfig, get_trained_model

__all__ = ["DATASETS", "DEFAULT_MODEL", "Setup", "default_width", "load_setup", "train_zoo_model"]

DEFAULT_MODEL = "vgg11"
#: Dataset name -> (channels, classes); ``None`` classes: as many as class folders.
DATASETS: dict[str, tuple[int, int | None]] = {
    "digits": (1, 10),
    "cifar10": (3, 10),
    "cifar100": (3, 100),
    "mnist": (1, 10),
    "fashion-mnist": (1, 10),
    "folder": (3, None),
}


@dataclass
class Setup:
    """The model to analyse, its analysis images, a label and what produced them (JSON)."""

    model: nn.Module
    images: ImageSet
    label: str
    info: dict[str, Any] = field(default_factory=dict)


def default_width(name: str, width: float | None) -> float:
    """``--width`` or, for a zoo model, its validation width (1 for torchvision models)."""
    if width is None:
        return DEFAULT_WIDTHS.get(name, 1.0)
    if not width > 0:
        raise ValueError(f"expected --width > 0, got {width:g}")
    return width


def _input_size(args: argparse.Namespace, name: str) -> int:
    if args.input_size is not None:
        return int(args.input_size)
    return 224 if name.startswith(TORCHVISION_PREFIX) else 32


def _images(
    args: argparse.Namespace, in_channels: int, input_size: int, n: int | None = None
) -> ImageSet:
    n = args.images if n is None else n
    root, dataset = args.data_root, args.dataset
    if dataset == "digits":
        return analysis_batch(n, input_size=input_size, in_channels=in_channels)
    if root is None:
        raise ValueError(f"--dataset {dataset} reads local files: give --data-root DIR")
    if dataset in ("cifar10", "cifar100", "folder") and in_channels != 3:
        raise ValueError(f"--dataset {dataset} has 3 channels, got --in-channels {in_channels}")
    if dataset == "cifar10":
        return load_cifar10(root, limit=n, input_size=input_size)
    if dataset == "cifar100":
        return load_cifar100(root, limit=n, input_size=input_size)
    if dataset == "folder":
        return load_image_folder(root, input_size=input_size, limit=n)
    return load_mnist(root, kind=dataset, limit=n, input_size=input_size, in_channels=in_channels)


def _training_config(
    name: str, width: float, args: argparse.Namespace, in_channels: int, input_size: int
) -> TrainingConfig:
    epochs = DEFAULT_EPOCHS[name] if args.epochs is None else args.epochs
    return TrainingConfig(
        name, float(width), epochs, args.train_seed, in_channels, input_size=input_size
    )


def train_zoo_model(
    name: str, width: float, args: argparse.Namespace, in_channels: int = 1, input_size: int = 32
) -> tuple[nn.Module, Any, bool]:
    """The zoo model trained on the digits, from the cache or trained now (with a message).

    Returns:
        The model, its ``TrainingRecord`` and whether it was trained by this call.
    """
    if name not in DEFAULT_WIDTHS:
        raise ValueError(
            f"only zoo models ({', '.join(sorted(DEFAULT_WIDTHS))}) are trained here; "
            f"give --checkpoint or --random-weights for {name!r}"
        )
    config = _training_config(name, width, args, in_channels, input_size)
    path = resolve_cache_dir(args.cache_dir) / "zoo" / config.file_name()
    damage = None if args.retrain else _cache_damage(path, config)
    fresh = args.retrain or not path.exists() or damage is not None
    if damage is not None:
        print(f"the cached {name} is damaged ({damage}); training it again", file=sys.stderr)
    elif fresh:
        print(
            f"training {name} (width {width:g}, {config.epochs} epochs) on the digits; "
            f"cached in {path.parent} for the next runs",
            file=sys.stderr,
        )
    with warnings.catch_warnings():  # the damage is told above, in one line
        warnings.filterwarnings("ignore", "rebuilding damaged zoo cache file", RuntimeWarning)
        model, record = get_trained_model(
            name,
            width=width,
            seed=args.train_seed,
            epochs=args.epochs,
            in_channels=in_channels,
            input_size=input_size,
            cache_dir=args.cache_dir,
            retrain=args.retrain,
            progress=args.progress,
        )
    return model, record, fresh


def _cache_damage(path: Any, config: TrainingConfig) -> str | None:
    """Why the cache file of ``config`` cannot be used (``None``: absent or whole)."""
    if not path.exists():
        return None
    try:
        read_cache_file(path, dataclasses.asdict(config))
    except DamagedCacheFile as damage:
        return str(damage)
    return None


_CLI_WORDS = {
    ALLOW_PICKLE_HINT: "give --allow-pickle",
    NAME_HINT: "give --model NAME (see the 'zoo' command)",
}


def _cli_words(error: Exception) -> Exception:
    """The library's error with its hints in terms of the CLI's options."""
    text = str(error)
    for words, option in _CLI_WORDS.items():
        text = text.replace(words, option)
    return type(error)(text)


def _check_trainable(name: str, dataset: str) -> None:
    if name.startswith(TORCHVISION_PREFIX):
        raise ValueError(
            f"{name} has no trained weights offline: give --checkpoint PATH "
            "(or --random-weights to try the tool)"
        )
    if dataset != "digits":
        raise ValueError(
            f"a zoo model without --checkpoint is trained on the digits; give --checkpoint "
            f"for --dataset {dataset} (or --random-weights to try the tool)"
        )


def load_setup(args: argparse.Namespace) -> Setup:
    """Load the model and the images the arguments name (training a zoo model if needed)."""
    name = args.model or DEFAULT_MODEL
    if args.checkpoint is None and not args.random_weights:
        _check_trainable(name, args.dataset)
    channels, classes = DATASETS[args.dataset]
    in_channels = args.in_channels or channels
    input_size = _input_size(args, name)
    images = _images(args, in_channels, input_size)
    num_classes = args.num_classes or classes or len(images.classes)
    width = default_width(name, args.width)
    info: dict[str, Any] = {
        "model": name,
        "dataset": args.dataset,
        "images": len(images),
        "input_size": input_size,
        "in_channels": in_channels,
    }
    if args.checkpoint is not None:
        try:
            model = load_checkpoint(
                args.checkpoint,
                args.model,
                width=width,
                in_channels=in_channels,
                input_size=input_size,
                num_classes=num_classes,
                allow_pickle=args.allow_pickle,
            )
        except (ValueError, TypeError) as error:
            raise _cli_words(error) from None
        label = f"{name} ({args.checkpoint})"
        info.update(checkpoint=str(args.checkpoint), width=width)
    elif args.random_weights:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seed)
            model = build_model(
                name,
                width=width,
                in_channels=in_channels,
                input_size=input_size,
                num_classes=num_classes,
            ).eval()
        label = f"{name}-w{width:g} (random weights)"
        info.update(random_weights=True, width=width)
    else:
        model, record, _ = train_zoo_model(name, width, args, in_channels, input_size)
        label = f"{name}-w{width:g}"
        info.update(
            width=width,
            test_accuracy=record.test_accuracy,
            epochs=record.config.epochs,
            train_seed=record.config.seed,
        )
    if getattr(args, "number_format", None) == "int8":
        # calibrated on the images after the analysis batch (never the analysed ones)
        n = len(images)
        if args.dataset == "digits":
            calibration = analysis_batch(
                2 * n, input_size=input_size, in_channels=in_channels, offset=n
            ).images
        else:
            calibration = _images(args, in_channels, input_size, 3 * n).images[n:]
        if calibration.shape[0] == 0:
            raise ValueError(
                "--format int8 calibrates on the images after the analysis batch, and the data "
                "set has none: give fewer --images"
            )
        model = quantize_int8(model, calibration)
        label = f"{label} int8"
        info.update(calibration_images=int(calibration.shape[0]))
    return _in_format(Setup(model=model, images=images, label=label, info=info), args)


FORMATS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
"""``--format``: the number format the model is converted to (its words are what faults hit)."""


def _in_format(setup: Setup, args: argparse.Namespace) -> Setup:
    """The model in ``--format`` (default: its own), the images in the model's format."""
    fmt = getattr(args, "number_format", None)
    model = setup.model
    if fmt == "int8":  # quantized by load_setup; its images stay float32
        if getattr(args, "fault_model", None) is not None:
            network_words(parse_fault_model(args.fault_model), quantized=True)
        return dataclasses.replace(setup, info={**setup.info, "number_format": "int8"})
    if fmt is not None:
        model = model.to(FORMATS[fmt])
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    if dtype not in FORMATS.values():
        raise ValueError(
            f"the model's parameters are {dtype}; fault models need fp32, fp16 or bf16 words: "
            "pass --format fp32 (or fp16, bf16)"
        )
    if getattr(args, "fault_model", None) is not None:
        parse_fault_model(args.fault_model, dtype)  # its bits exist in this format
    info = {**setup.info, "number_format": next(k for k, v in FORMATS.items() if v == dtype)}
    images = dataclasses.replace(setup.images, images=setup.images.images.to(dtype))
    return dataclasses.replace(setup, model=model, images=images, info=info)
