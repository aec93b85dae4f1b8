"""The shared "model left unchanged" guarantee, for every public entry point of the package.

Usage from any test module (``tests/`` is on ``sys.path`` when pytest collects a module that sits
directly in it; from a subfolder, make sure ``tests`` is importable, e.g. ``pythonpath`` in the
pytest configuration)::

    from guarantees import assert_model_unchanged

    @pytest.mark.parametrize("call", [...], ids=[...])
    def test_entry_point_leaves_model_unchanged(call):
        model = make_model()
        assert_model_unchanged(model, lambda: call(model))                 # must succeed
        assert_model_unchanged(model, lambda: bad(model), raises=ValueError, match="batch")

What is compared before and after the call (:class:`ModelSnapshot`):

* every parameter and buffer, bit for bit (bytes, so ``-0.0 != 0.0`` and NaN payloads count),
  with its dtype, shape, device, ``requires_grad`` and ``.grad``, and the identity of each
  ``Parameter`` object and of each submodule (nothing replaced);
* the ``training`` flag of every submodule;
* every hook dict of every submodule (forward, forward-pre, backward, backward-pre, the kwargs
  and always-called variants, state-dict hooks), the tensor hooks of every parameter, and
  PyTorch's global module hooks.

The call runs also when it is expected to raise; the model is checked in both cases.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as _module_mod

__all__ = ["ModelSnapshot", "assert_model_unchanged", "snapshot"]

_MODULE_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)
_GLOBAL_HOOK_DICTS = (
    "_global_forward_hooks",
    "_global_forward_hooks_always_called",
    "_global_forward_pre_hooks",
    "_global_backward_hooks",
    "_global_backward_pre_hooks",
    "_global_module_registration_hooks",
    "_global_parameter_registration_hooks",
    "_global_buffer_registration_hooks",
)


def _bits(t: torch.Tensor) -> tuple[str, tuple[int, ...], str, bytes]:
    data = t.detach().cpu().contiguous()
    return (
        str(data.dtype),
        tuple(data.shape),
        str(t.device),
        data.view(-1).view(torch.uint8).numpy().tobytes(),
    )


def _hooks(d: dict[Any, Any] | None) -> tuple[tuple[Any, int], ...]:
    return tuple((key, id(hook)) for key, hook in (d or {}).items())


@dataclass(frozen=True)
class ModelSnapshot:
    """Everything about a model that a call must leave as it was (see the module docstring)."""

    modules: dict[str, int]
    training: dict[str, bool]
    tensors: dict[str, tuple[Any, ...]]
    hooks: dict[str, tuple[Any, ...]]

    def differences(self, other: ModelSnapshot) -> list[str]:
        """Readable differences between ``self`` (before) and ``other`` (after)."""
        out = []
        for field in ("modules", "training", "tensors", "hooks"):
            before, after = getattr(self, field), getattr(other, field)
            for key in sorted(set(before) | set(after)):
                if before.get(key, "<absent>") != after.get(key, "<absent>"):
                    out.append(f"{field}[{key!r}] changed")
        return out


def snapshot(model: nn.Module) -> ModelSnapshot:
    """Take a :class:`ModelSnapshot` of ``model``."""
    modules = dict(model.named_modules(remove_duplicate=False))
    tensors: dict[str, tuple[Any, ...]] = {}
    hooks: dict[str, tuple[Any, ...]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        grad = None if p.grad is None else _bits(p.grad)
        tensors[f"param {name}"] = (id(p), p.requires_grad, _bits(p), grad)
        for attr in ("_backward_hooks", "_post_accumulate_grad_hooks"):
            hooks[f"{name}.{attr}"] = _hooks(getattr(p, attr, None))
    for name, b in model.named_buffers(remove_duplicate=False):
        tensors[f"buffer {name}"] = (b.requires_grad, _bits(b))
    for name, m in modules.items():
        for attr in _MODULE_HOOK_DICTS:
            hooks[f"{name or '<root>'}.{attr}"] = _hooks(getattr(m, attr, None))
    for attr in _GLOBAL_HOOK_DICTS:
        hooks[f"global {attr}"] = _hooks(getattr(_module_mod, attr, None))
    return ModelSnapshot(
        modules={name: id(m) for name, m in modules.items()},
        training={name: m.training for name, m in modules.items()},
        tensors=tensors,
        hooks=hooks,
    )


def assert_model_unchanged(
    model: nn.Module,
    call: Callable[[], Any],
    *,
    raises: type[BaseException] | tuple[type[BaseException], ...] | None = None,
    match: str | None = None,
) -> Any:
    """Run ``call()`` and assert that ``model`` is exactly as it was, also when the call raises.

    Args:
        model: the user's model the call receives.
        call: the entry point to exercise, without arguments (wrap it in a lambda).
        raises: the exception type the call must raise (``None``: it must succeed).
        match: a regex the exception message must contain (``re.search``), with ``raises``.

    Returns:
        The call's return value, or the raised exception when ``raises`` is given.

    Raises:
        AssertionError: the model changed (the message lists what), or the call did not raise
            as expected. An unexpected exception from the call is re-raised after the check.

    Example:
        >>> net = nn.Linear(2, 2)
        >>> assert_model_unchanged(net, lambda: net(torch.ones(1, 2)).shape)
        torch.Size([1, 2])
        >>> assert_model_unchanged(net, lambda: net.train(False))
        Traceback (most recent call last):
        AssertionError: the call changed the model: training[''] changed
    """
    before = snapshot(model)
    error: BaseException | None = None
    result = None
    try:
        result = call()
    except BaseException as exc:  # re-raised below unless expected
        error = exc
    diffs = before.differences(snapshot(model))
    if diffs:
        raised = f" (the call raised {type(error).__name__}: {error})" if error else ""
        raise AssertionError("the call changed the model: " + "; ".join(diffs) + raised)
    if raises is None:
        if error is not None:
            raise error
        return result
    if error is None:
        raise AssertionError(f"expected the call to raise {raises}, but it returned {result!r}")
    if not isinstance(error, raises):
        raise error
    if match is not None and not re.search(match, str(error)):
        raise AssertionError(
            f"{type(error).__name__} message {str(error)!r} does not match {match!r}"
        )
    return error
