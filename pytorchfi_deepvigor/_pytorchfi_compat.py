"""The one place that knows PyTorchFI's version-specific names.

PyTorchFI 0.6.0 (what ``pip install pytorchfi`` gives) calls its injector
``pytorchfi.core.fault_injection`` with methods ``declare_neuron_fi`` / ``declare_weight_fi``.
The unreleased GitHub master renamed them ``FaultInjection``,
``declare_neuron_fault_injection`` and ``declare_weight_fault_injection`` (and a few more, see
:data:`MASTER_METHOD_ALIASES`), and reads ``batch_size`` and ``corrupt_dim``. Everything else in
the package imports :data:`PyTorchFIBase` (and :data:`SingleBitFlipBase`, PyTorchFI's own
subclass of it) from here and never names either spelling itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pytorchfi import core as _core
from pytorchfi import neuron_error_models as _neuron_error_models

__all__ = ["MASTER_METHOD_ALIASES", "PYTORCHFI_CLASS_NAME", "PyTorchFIBase", "SingleBitFlipBase"]

#: The name the installed PyTorchFI gives its injector class.
PYTORCHFI_CLASS_NAME = "fault_injection" if hasattr(_core, "fault_injection") else "FaultInjection"

if TYPE_CHECKING:  # pytorchfi ships no type information: mypy sees Any either way
    from pytorchfi.core import fault_injection as PyTorchFIBase
    from pytorchfi.neuron_error_models import single_bit_flip_func as SingleBitFlipBase
else:
    PyTorchFIBase = getattr(_core, PYTORCHFI_CLASS_NAME)
    #: PyTorchFI's 8-bit quantised neuron bit flip, a subclass of its injector (both versions).
    SingleBitFlipBase = _neuron_error_models.single_bit_flip_func

#: master's method names -> 0.6.0's method names (the subclass answers to both).
MASTER_METHOD_ALIASES: dict[str, str] = {
    "declare_neuron_fault_injection": "declare_neuron_fi",
    "declare_weight_fault_injection": "declare_weight_fi",
    "reset_fault_injection": "fi_reset",
    "assert_injection_bounds": "assert_inj_bounds",
    "update_layer": "updateLayer",
}
