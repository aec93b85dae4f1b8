"""Pure maths of the package: functions of tensors and numbers, no modules, hooks or I/O."""

from pytorchfi_deepvigor.functional.sfi import (
    RUOSPO_PRIOR,
    MarginExceededWarning,
    fault_population,
    sample_size,
    split_proportional,
    stratified_margin,
    stratum_sample_sizes,
    weight_bit_prior,
)

__all__ = [
    "RUOSPO_PRIOR",
    "MarginExceededWarning",
    "fault_population",
    "sample_size",
    "split_proportional",
    "stratified_margin",
    "stratum_sample_sizes",
    "weight_bit_prior",
]
