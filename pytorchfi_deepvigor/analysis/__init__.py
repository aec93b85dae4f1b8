"""DeepVigor+ analysers: weights and activations vulnerability factors, complete or sampled.

The one public verb is :meth:`DeepVigorAnalyzer.analyze`; the per-layer functions and the site
sampling are exposed for the validation scripts and advanced use.
"""

from pytorchfi_deepvigor.analysis.activations import analyze_activations
from pytorchfi_deepvigor.analysis.analyzer import ANALYSIS_TARGETS, DeepVigorAnalyzer
from pytorchfi_deepvigor.analysis.handlers import HANDLERS, LayerHandler, handler_for
from pytorchfi_deepvigor.analysis.sampling import (
    LayerSites,
    channels_to_draw,
    draw_sites,
    positions_per_channel,
)
from pytorchfi_deepvigor.analysis.weights import analyze_weights

__all__ = [
    "ANALYSIS_TARGETS",
    "DeepVigorAnalyzer",
    "HANDLERS",
    "LayerHandler",
    "LayerSites",
    "analyze_activations",
    "analyze_weights",
    "channels_to_draw",
    "draw_sites",
    "handler_for",
    "positions_per_channel",
]
