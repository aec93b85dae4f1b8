"""int8 post-training quantization of a float model (``torch.ao.quantization``, FX graph
mode): what a user deploying an int8 network on a CPU (fbgemm/x86) runs, to analyse it.

Example:
    >>> import torch
    >>> from pytorchfi_deepvigor import zoo
    >>> model = zoo.build_model("vgg11", width=1 / 16, in_channels=1).eval()
    >>> int8 = zoo.quantize_int8(model, zoo.analysis_batch(n=16, offset=100).images)
    >>> type(int8.features.get_submodule("0")).__name__
    'ConvReLU2d'
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

__all__ = ["quantize_int8"]


def quantize_int8(
    model: nn.Module, calibration: torch.Tensor, *, backend: str = "fbgemm", batch: int = 64
) -> nn.Module:
    """An int8 copy of ``model``: weights per output channel (int8, symmetric), activations
    ``quint8`` per tensor with ranges observed on ``calibration`` (images that are not the
    analysis batch), converted with ``torch.ao``'s FX graph mode for ``backend``.

    ``model`` is not changed. ``torch.ao.quantization`` is deprecated in recent PyTorch
    releases (its successor is torchao's pt2e flow); its warnings are silenced here.

    Raises:
        ImportError: where this torch no longer has ``torch.ao.quantization``.
        ValueError: for an empty calibration batch.
    """
    if not isinstance(calibration, torch.Tensor) or calibration.shape[0] == 0:
        raise ValueError("calibration must be a non-empty batch of images (N, ...)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        float_model = copy.deepcopy(model).eval()
        prepared = prepare_fx(
            float_model,
            get_default_qconfig_mapping(backend),
            example_inputs=(calibration[:1],),
        )
        with torch.no_grad():
            for a in range(0, calibration.shape[0], batch):
                prepared(calibration[a : a + batch])
        return convert_fx(prepared).eval()
