"""Context managers that keep the user's model as it was.

Every public entry point of the package runs the user's model through :func:`eval_mode`, so
BatchNorm and Dropout behave as at inference time and the train/eval flag of every submodule is
restored afterwards, also when the call raises.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

__all__ = ["eval_mode", "check_float32_model", "check_images", "check_output_dir"]


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
    try:
        model.eval()
        yield model
    finally:
        for module, flag in flags:
            module.training = flag


def check_float32_model(model: nn.Module) -> None:
    """Raise ``TypeError`` unless every floating parameter and buffer of ``model`` is float32."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and tensor.dtype != torch.float32:
            raise TypeError(
                f"fp32 fault models need a float32 model, but {name!r} is {tensor.dtype}; "
                "convert it with model.float()"
            )


def check_images(images: object) -> torch.Tensor:
    """Validate an analysis batch: a non-empty, finite float32 tensor with a batch dimension."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"expected images as a torch.Tensor, got {type(images).__name__}")
    if images.dtype != torch.float32:
        raise TypeError(
            f"expected float32 images, got {images.dtype}; convert them with images.float()"
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
