"""Fault-injection campaigns on the simulation engine: exhaustive and statistical, with resume.

:class:`ExhaustiveCampaign` injects every fault of chosen sites, :class:`StatisticalCampaign`
draws Leveugle-sized samples (network-wise, layer-wise, data-unaware, data-aware); both evaluate
each fault through the one :class:`FaultEvaluator` on every image of the engine's analysis batch
and return a :class:`~pytorchfi_deepvigor.results.VulnerabilityResult`. With ``progress_dir`` a
campaign records its progress as it goes and a rerun continues where it stopped.
"""

from pytorchfi_deepvigor.campaigns.exhaustive import ExhaustiveCampaign
from pytorchfi_deepvigor.campaigns.faults import FaultEvaluator, FaultPopulation
from pytorchfi_deepvigor.campaigns.progress import ProgressLog
from pytorchfi_deepvigor.campaigns.statistical import (
    VARIANTS,
    Pilot,
    SamplingPlan,
    StatisticalCampaign,
    Stratum,
)

__all__ = [
    "VARIANTS",
    "ExhaustiveCampaign",
    "FaultEvaluator",
    "FaultPopulation",
    "Pilot",
    "ProgressLog",
    "SamplingPlan",
    "StatisticalCampaign",
    "Stratum",
]
