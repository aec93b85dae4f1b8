"""From vulnerability to protection: a planner whose promise is checked by fault injection.

A consumer of results, like :mod:`~pytorchfi_deepvigor.report`: nothing in the analysis or the
campaigns depends on it.

* :func:`harden` turns a :class:`~pytorchfi_deepvigor.results.VulnerabilityResult` and an overhead
  budget into a :class:`HardeningPlan` (selective TMR of output channels, ECC on weight bits)
  with its predicted MVF (:mod:`~pytorchfi_deepvigor.hardening.plan` says how each mechanism
  acts on the VFs, :mod:`~pytorchfi_deepvigor.hardening.planner` how the plan is chosen);
* :func:`restrict_ranges` profiles clamp bounds on calibration data (range restriction changes
  the model, so the clamped model, :func:`clamped`, is analysed again and planned on);
* :func:`apply` returns a protected copy of the user's model (:class:`ProtectedLayer`);
* :func:`verify` measures the protected model by the analysis and by data-aware SFI.

Example:
    >>> import torch; from torch import nn; from pytorchfi_deepvigor import DeepVigorAnalyzer
    >>> torch.manual_seed(0); net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
    <torch._C.Generator object at ...>
    >>> images = torch.randn(8, 1, 6, 6)
    >>> plan = harden(DeepVigorAnalyzer(net, images).analyze(target="both"), budget=0.3)
    >>> protected = apply(plan, net)
    >>> bool(torch.equal(protected(images), net(images)))
    True
"""

from pytorchfi_deepvigor.hardening.apply import apply, clamped, restrict_ranges
from pytorchfi_deepvigor.hardening.plan import (
    ECC_GROUPS,
    HardeningPlan,
    LayerProtection,
    Prediction,
    ecc_bits,
    hamming_check_bits,
    predict,
)
from pytorchfi_deepvigor.hardening.planner import MECHANISMS, STRATEGIES, curve, harden, overheads
from pytorchfi_deepvigor.hardening.protect import ProtectedLayer
from pytorchfi_deepvigor.hardening.verify import Verification, verify

__all__ = [
    "ECC_GROUPS",
    "MECHANISMS",
    "STRATEGIES",
    "HardeningPlan",
    "LayerProtection",
    "Prediction",
    "ProtectedLayer",
    "Verification",
    "apply",
    "clamped",
    "curve",
    "ecc_bits",
    "hamming_check_bits",
    "harden",
    "overheads",
    "predict",
    "restrict_ranges",
    "verify",
]
