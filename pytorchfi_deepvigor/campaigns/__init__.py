"""Fault-injection campaigns on the simulation engine: exhaustive and statistical, with resume."""

from pytorchfi_deepvigor.campaigns.faults import FaultEvaluator, FaultPopulation

__all__ = ["FaultEvaluator", "FaultPopulation"]
