"""pytorchfi-deepvigor: DeepVigor+ vulnerability analysis and fault injection for CNNs.

A PyTorchFI plugin: :class:`DeepVigorFI` is a drop-in PyTorchFI injector with exact IEEE-754
fault models; :class:`DeepVigorAnalyzer` derives channel, layer and model vulnerability factors
semi-analytically; the campaigns in :mod:`pytorchfi_deepvigor.campaigns` run the exhaustive and
statistical fault-injection baselines on the same :class:`SimulationEngine`, and both return a
:class:`VulnerabilityResult` that :func:`compare` puts side by side.
"""

from pytorchfi_deepvigor.analysis import DeepVigorAnalyzer
from pytorchfi_deepvigor.bits import flip_all_bits, flip_bit, lsb_first, msb_first, stuck_at
from pytorchfi_deepvigor.campaigns import ExhaustiveCampaign, StatisticalCampaign
from pytorchfi_deepvigor.catalogue import LayerInfo, build_catalogue
from pytorchfi_deepvigor.coverage import weight_coverage
from pytorchfi_deepvigor.engine import Outcome, SimulationEngine
from pytorchfi_deepvigor.injector import DeepVigorFI
from pytorchfi_deepvigor.perturbations import ChannelAdd, ChannelSet, NeuronAdd, NeuronSet
from pytorchfi_deepvigor.results import (
    Comparison,
    Cost,
    LayerResult,
    OutcomeCounts,
    VulnerabilityResult,
    WeightCoverage,
    compare,
)

__version__ = "0.1.0"

__all__ = [
    "ChannelAdd",
    "ChannelSet",
    "Comparison",
    "Cost",
    "DeepVigorAnalyzer",
    "DeepVigorFI",
    "ExhaustiveCampaign",
    "LayerInfo",
    "LayerResult",
    "NeuronAdd",
    "NeuronSet",
    "Outcome",
    "OutcomeCounts",
    "SimulationEngine",
    "StatisticalCampaign",
    "VulnerabilityResult",
    "WeightCoverage",
    "__version__",
    "build_catalogue",
    "compare",
    "flip_all_bits",
    "flip_bit",
    "lsb_first",
    "msb_first",
    "stuck_at",
    "weight_coverage",
]
