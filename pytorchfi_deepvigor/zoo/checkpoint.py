"""Load the user's checkpoint (a state dict or a whole module) into a zoo architecture.

Accepted sources: a file path, a state dict, a dict wrapping one (``state_dict``,
``model_state_dict``, ``model``, ``net``), a zoo cache file, or an ``nn.Module``. A
``module.`` prefix (``DataParallel``) is stripped. Keys and shapes must match the
architecture exactly; otherwise a ``ValueError`` lists the missing, unexpected and
mis-shaped keys.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pytorchfi_deepvigor.zoo.cache import CHECKPOINT_FORMAT, short_error, torch_file_problem
from pytorchfi_deepvigor.zoo.models import build_model

__all__ = ["ALLOW_PICKLE_HINT", "NAME_HINT", "load_checkpoint", "extract_state_dict"]

ALLOW_PICKLE_HINT = "pass allow_pickle=True"
"""How a message asks for ``allow_pickle`` (the CLI says ``--allow-pickle`` instead)."""
NAME_HINT = "name the architecture (see list_models())"
"""How a message asks for ``name`` (the CLI says ``--model`` instead)."""

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net")
_LISTED = 10  # keys listed per kind in an error message


def _read(path: Path, allow_pickle: bool) -> Any:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist; expected a file written by torch.save holding a "
            "state_dict (or a dict with one) or a whole nn.Module"
        )
    problem = torch_file_problem(path)
    if problem is not None:
        raise ValueError(
            f"{path} is not a torch checkpoint: {problem}; expected a file written by "
            "torch.save holding a state_dict (or a dict with one) or a whole nn.Module"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if not allow_pickle:
            raise ValueError(
                f"{path} does not load with torch.load(weights_only=True): it holds pickled "
                f"Python objects (for example a whole nn.Module); {ALLOW_PICKLE_HINT} if you "
                "trust the file"
            ) from error
    except Exception as error:  # a truncated zip, a foreign format: torch raises many types
        raise ValueError(
            f"{path} is not a readable torch checkpoint: {short_error(error)}"
        ) from error
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise ValueError(
            f"{path} is not a readable torch checkpoint: {short_error(error)}"
        ) from error


def extract_state_dict(checkpoint: Any) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded checkpoint.

    Args:
        checkpoint: A state dict, a dict wrapping one under a usual key, or an ``nn.Module``.

    Returns:
        Name -> tensor, with a ``module.`` prefix on every key removed.

    Raises:
        TypeError: If no state dict is found.

    Example:
        >>> sorted(extract_state_dict({"model": {"module.fc.weight": torch.zeros(1)}}))
        ['fc.weight']
    """
    if isinstance(checkpoint, nn.Module):
        checkpoint = checkpoint.state_dict()
    elif isinstance(checkpoint, Mapping) and not _all_tensors(checkpoint):
        for key in _WRAPPER_KEYS:
            if key in checkpoint and (
                isinstance(checkpoint[key], nn.Module)
                or (isinstance(checkpoint[key], Mapping) and _all_tensors(checkpoint[key]))
            ):
                return extract_state_dict(checkpoint[key])
    if not isinstance(checkpoint, Mapping) or not checkpoint or not _all_tensors(checkpoint):
        raise TypeError(
            "expected a state_dict (names -> tensors), a dict holding one under one of "
            f"{list(_WRAPPER_KEYS)}, or an nn.Module; got {type(checkpoint).__name__}"
        )
    state = {str(k): v for k, v in checkpoint.items()}
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _all_tensors(mapping: Mapping[Any, Any]) -> bool:
    return all(isinstance(value, torch.Tensor) for value in mapping.values())


def _listing(kind: str, keys: list[str]) -> str:
    shown = ", ".join(keys[:_LISTED])
    more = f" ... and {len(keys) - _LISTED} more" if len(keys) > _LISTED else ""
    return f"\n  {kind} ({len(keys)}): {shown}{more}"


def _check_keys(model: nn.Module, state: Mapping[str, torch.Tensor], name: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mis_shaped = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in set(expected) & set(state)
        if state[k].shape != expected[k].shape
    )
    if missing or unexpected or mis_shaped:
        message = f"the checkpoint does not fit {name}"
        for kind, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches (checkpoint vs model)", mis_shaped),
        ):
            if keys:
                message += _listing(kind, keys)
        message += "\n  check name, width, in_channels and num_classes"
        raise ValueError(message)


def load_checkpoint(
    source: str | os.PathLike[str] | Mapping[str, Any] | nn.Module,
    name: str | None = None,
    *,
    width: float = 1.0,
    in_channels: int | None = None,
    input_size: int | None = None,
    num_classes: int | None = None,
    allow_pickle: bool = False,
) -> nn.Module:
    """Build a zoo architecture and load a checkpoint's weights into it.

    Args:
        source: A path to a ``torch.save`` file, a (wrapped) state dict or an ``nn.Module``
            (its weights are copied; the module itself is not changed).
        name: Architecture, as for :func:`~pytorchfi_deepvigor.zoo.models.build_model`;
            may be omitted for a zoo cache file, which records its configuration.
        width: Width multiplier of the architecture.
        in_channels: Input channels of the architecture.
        input_size: Input side of the architecture.
        num_classes: Output classes of the architecture.
        allow_pickle: Allow files that hold pickled objects (a whole module); only for
            files you trust, as unpickling runs code.

    Returns:
        The model with the checkpoint's weights, in eval mode.

    Raises:
        FileNotFoundError: If the path does not exist.
        ValueError: If the architecture is unknown or the keys or shapes do not match (the
            message lists them), or the file needs ``allow_pickle``.
        TypeError: If the source holds no state dict.

    Example:
        >>> from pytorchfi_deepvigor.zoo.models import build_model
        >>> trained = build_model("vgg11", width=1 / 16, in_channels=1)
        >>> model = load_checkpoint(trained.state_dict(), "vgg11", width=1 / 16, in_channels=1)
        >>> model.training
        False
    """
    checkpoint = (
        _read(Path(source), allow_pickle) if isinstance(source, str | os.PathLike) else source
    )
    if isinstance(checkpoint, Mapping) and checkpoint.get("format") == CHECKPOINT_FORMAT:
        config = checkpoint["config"]
        name = config["name"] if name is None else name
        width, in_channels = config["width"], config["in_channels"]
        input_size, num_classes = config["input_size"], 10
    if name is None:
        raise ValueError(f"{NAME_HINT}; only zoo cache files record their own")
    model = build_model(
        name, width=width, in_channels=in_channels, input_size=input_size, num_classes=num_classes
    )
    state = extract_state_dict(checkpoint)
    _check_keys(model, state, name)
    model.load_state_dict(state)
    return model.eval()
