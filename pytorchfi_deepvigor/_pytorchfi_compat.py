"""The one place that knows PyTorchFI's version-specific names.

PyTorchFI 0.6.0 (what ``pip install pytorchfi`` gives) calls its injector
``pytorchfi.core.fault_injection`` with methods ``declare_neuron_fi`` / ``declare_weight_fi``.
The unreleased GitHub master renamed them ``FaultInjection``,
``declare_neuron_fault_injection`` and ``declare_weight_fault_injection``. Everything else in the
package imports :data:`PyTorchFIBase` from here and never names either spelling itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pytorchfi import core as _core

__all__ = ["MASTER_METHOD_ALIASES", "PYTORCHFI_CLASS_NAME", "PyTorchFIBase"]

#: The name the installed PyTorchFI gives its injector class.
PYTORCHFI_CLASS_NAME = "fault_injection" if hasattr(_core, "fault_injection") else "FaultInjection"

if TYPE_CHECKING:  # pytorchfi ships no type information: mypy sees Any either way
    from pytorchfi.core import fault_injection as PyTorchFIBase
else:
    PyTorchFIBase = getattr(_core, PYTORCHFI_CLASS_NAME)

#: master's method names -> 0.6.0's method names (the subclass answers to both).
MASTER_METHOD_ALIASES: dict[str, str] = {
    "declare_neuron_fault_injection": "declare_neuron_fi",
    "declare_weight_fault_injection": "declare_weight_fi",
}
