"""Checks at the package's boundary, one per argument, and the context that keeps the model as it was.

Every public entry point of the package runs the user's model through :func:`eval_mode`, so
BatchNorm and Dropout behave as at inference time and the train/eval flag of every submodule is
restored afterwards, also when the call raises.

The argument checks are shared by the engine, the analyser, the campaigns and the CLI, so one
argument gets one validation and one message everywhere: :func:`check_layers`,
:func:`check_positive_int`, :func:`check_device`, :func:`check_images`,
:func:`check_float_model`, :func:`check_model_output` (a classifier's logits ``(N, classes)``,
checked on two images before any work) and :func:`check_output_dir`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from pytorchfi_deepvigor.bits import SUPPORTED_DTYPES

__all__ = [
    "DEVICE_HINT",
    "check_device",
    "check_float_model",
    "check_images",
    "check_layers",
    "check_model_output",
    "check_output_dir",
    "check_positive_int",
    "eval_mode",
]


class _Catalogued(Protocol):
    """What :func:`check_layers` needs of an engine: its catalogue and a checked lookup."""

    catalogue: Any

    def layer(self, layer_num: int) -> Any: ...


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode for the duration of the block, then restore each flag.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Dropout()).train()
        >>> with eval_mode(net):
        ...     net[1].training
        False
        >>> net[1].training
        True
    """
    flags = [(m, m.training) for m in model.modules()]
    if not any(flag for _, flag in flags):  # already in eval mode (every engine call): no writes
        yield model
        return
    try:
        model.eval()
        yield model
    finally:
        for module, flag in flags:
            module.training = flag


def check_float_model(model: nn.Module) -> torch.dtype:
    """The one float format of ``model`` (float32, float16 or bfloat16), or ``TypeError``.

    Every floating parameter and buffer must share it: the fault model's words are the model's
    own (a float16 weight is a 16-bit word), and the suffix runs in that format so an overflow
    to Inf happens where the model's overflows.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    found: dict[torch.dtype, str] = {}
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point():
            found.setdefault(tensor.dtype, name)
    unsupported = [d for d in found if d not in SUPPORTED_DTYPES]
    if unsupported:
        raise TypeError(
            f"fault models need float32, float16 or bfloat16 words, but "
            f"{found[unsupported[0]]!r} is {unsupported[0]}; convert the model with "
            "model.float(), model.half() or model.bfloat16()"
        )
    if len(found) > 1:
        names = ", ".join(f"{n!r} is {d}" for d, n in found.items())
        raise TypeError(
            f"the model mixes float formats ({names}); convert it to one with model.float(), "
            "model.half() or model.bfloat16()"
        )
    return next(iter(found), torch.float32)


def check_images(images: object, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Validate an analysis batch: a non-empty, finite tensor of the model's float format
    ``dtype`` with a batch dimension."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"expected images as a torch.Tensor, got {type(images).__name__}")
    if images.dtype != dtype:
        convert = {torch.float32: "float()", torch.float16: "half()", torch.bfloat16: "bfloat16()"}
        raise TypeError(
            f"expected {dtype} images (the model's format), got {images.dtype}; convert them "
            f"with images.{convert.get(dtype, 'float()')}"
        )
    if images.dim() < 2:
        raise ValueError(
            f"expected images with a batch dimension (N, C, H, W) or (N, F), got shape "
            f"{tuple(images.shape)}"
        )
    if images.shape[0] == 0:
        raise ValueError("the image batch is empty: pass at least one image")
    if not bool(torch.isfinite(images).all()):
        raise ValueError("the images contain NaN or Inf values: clean the input data first")
    return images


def check_output_dir(path: object, what: str = "out_dir") -> Path:
    """An output folder that exists or can be created, checked before any work is done.

    The folder is created (with its parents) when missing, so a path that cannot be created
    fails here rather than after the work.

    Raises:
        TypeError: ``path`` is not a str or Path.
        ValueError: ``path`` is empty, names a file, or cannot be created.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     check_output_dir(Path(d) / "run", "--out").is_dir()
        True
    """
    if not isinstance(path, str | Path):
        raise TypeError(f"expected {what} as a str or Path, got {type(path).__name__}")
    if not str(path).strip():
        raise ValueError(f"expected {what} as a folder name, got an empty string")
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{what} {path} is a file, not a folder: choose another {what}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create {what} {path}: {exc.strerror or exc}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {path} is not writable: choose another {what}")
    return folder


def check_positive_int(value: object, name: str) -> int | None:
    """``None``, or an int >= 1 (not a bool).

    Example:
        >>> check_positive_int(3, "max_batch"), check_positive_int(None, "max_batch")
        (3, None)
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected {name} >= 1, an int (or None), got {value!r}")
    return int(value)


def check_layers(layers: object, engine: _Catalogued) -> list[int]:
    """Catalogue layer numbers, each in range and given once, sorted (all layers for ``None``).

    Raises:
        TypeError: ``layers`` is not an iterable of ints (a single int, a string, ...).
        ValueError: ``layers`` is empty, repeats a number, or holds one out of range.
    """
    if layers is None:
        return list(range(len(engine.catalogue)))
    if isinstance(layers, int | str | bytes) or not isinstance(layers, Iterable):
        raise TypeError(
            f"expected layers as a list of layer numbers, e.g. [0, 2], or None for every "
            f"layer; got {layers!r}"
        )
    nums = list(layers)
    if not nums:
        raise ValueError(
            "expected at least one layer number in layers, got an empty sequence "
            "(None means every layer)"
        )
    for num in nums:
        engine.layer(num)  # type and range, with the catalogue's size in the message
    repeated = sorted({n for n in nums if nums.count(n) > 1})
    if repeated:
        raise ValueError(f"expected distinct layer numbers, got {nums} (repeated: {repeated})")
    return sorted(int(n) for n in nums)


DEVICE_HINT = "use device='cpu' (the CLI: --device cpu)"
"""How a device error says what to do (the CLI says ``--device cpu``)."""


def check_device(device: object) -> torch.device | None:
    """``None``, or a torch device that exists on this machine (checked before any work).

    Raises:
        TypeError: ``device`` is not a str or torch.device.
        ValueError: the name does not parse, is the ``meta`` device, or names a GPU that
            this machine (or this torch build) does not have.

    Example:
        >>> check_device("cpu")
        device(type='cpu')
    """
    if device is None:
        return None
    if not isinstance(device, str | torch.device):
        raise TypeError(f"expected device as a str or torch.device, got {type(device).__name__}")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(
            f"expected a device like 'cpu', 'cuda' or 'cuda:1', got {device!r}"
        ) from None
    fix = DEVICE_HINT
    if dev.type == "meta":
        raise ValueError(f"the meta device holds no values to simulate faults on; {fix}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {str(device)!r} is not available here: torch.cuda.is_available() is "
                f"False (no GPU, or a CPU-only torch build); {fix}"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ValueError(
                f"device {str(device)!r} does not exist: this machine has {count} GPU(s), "
                f"cuda:0..cuda:{count - 1}"
            )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device 'mps' is not available here; {fix}")
    return dev


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


_LOGITS = "logits (N, classes), one row per image"


def check_model_output(model: nn.Module, images: torch.Tensor) -> None:
    """Run the model on two of the images and check it returns a classifier's logits.

    The package compares the top-1 class of each image's logits with and without a fault, so
    the model must return one float tensor ``(N, classes)`` with ``classes >= 2``. Anything else
    (a tuple, a dict, ``(N,)``, per-pixel ``(N, C, H, W)``) or a forward that fails on the
    images raises ``ValueError`` saying what the model returned and how to adapt it, before
    any work is done.

    Example:
        >>> check_model_output(nn.Sequential(nn.Flatten(), nn.Linear(4, 1)), torch.zeros(2, 4))
        Traceback (most recent call last):
        ...
        ValueError: the model returns one logit per image (shape (2, 1)); ...
    """
    batch = images[:2]
    try:
        with eval_mode(model), torch.no_grad():
            out = model(batch)
    except Exception as exc:  # the user's forward: any error means these images do not fit
        raise ValueError(
            f"the model cannot run on the images (shape {tuple(images.shape)}, one batch of "
            f"{len(batch)} tried): {_first_line(exc)}; give images of the rank, channel count "
            "and size the model expects"
        ) from exc
    if isinstance(out, tuple | list) or isinstance(out, dict):
        parts = (
            ", ".join(f"{k!r}: {_describe(v)}" for k, v in out.items())
            if isinstance(out, dict)
            else ", ".join(_describe(v) for v in out)
        )
        pick = "['logits']" if isinstance(out, dict) else "[0]"
        raise ValueError(
            f"the model returns a {type(out).__name__} ({parts}), not one tensor of {_LOGITS}: "
            f"wrap it in a module whose forward returns the logits, e.g. "
            f"`return model(x){pick}`"
        )
    if not isinstance(out, torch.Tensor):
        raise ValueError(
            f"the model returns a {type(out).__name__}; expected a tensor of {_LOGITS}"
        )
    shape = tuple(out.shape)
    if not out.is_floating_point():
        raise ValueError(f"the model returns {out.dtype} values; expected float {_LOGITS}")
    if out.dim() >= 3:
        raise ValueError(
            f"the model returns shape {shape} for {len(batch)} images: per-pixel or per-position "
            f"outputs (e.g. segmentation) are not supported; faults are judged by the top-1 "
            f"class of {_LOGITS}. To study such a model, wrap it to return per-image logits "
            f"(e.g. `return model(x).mean(dim=(2, 3))`); a fault is then critical when it "
            f"changes that class"
        )
    if out.dim() != 2 or shape[0] != len(batch):
        raise ValueError(
            f"the model returns shape {shape} for {len(batch)} images; expected {_LOGITS}"
        )
    if shape[1] < 2:
        raise ValueError(
            f"the model returns one logit per image (shape {shape}); the top-1 class needs "
            f"{_LOGITS} with classes >= 2: for a binary classifier wrap it to return "
            f"`torch.cat([torch.zeros_like(z), z], dim=1)` with `z = model(x)`"
        )
