"""The image-set result type shared by the digits and the local data-set loaders."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["ImageSet", "normalise", "subset_indices"]


@dataclass(frozen=True, eq=False)  # tensors have no single truth value: compare fields
class ImageSet:
    """Images with their labels.

    Attributes:
        images: Float32 images ``(N, C, H, W)``.
        labels: Int64 class indices ``(N,)``.
        classes: Class names, index = label.

    Example:
        >>> s = ImageSet(torch.zeros(2, 1, 8, 8), torch.tensor([0, 1]), ("a", "b"))
        >>> len(s)
        2
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def subset_indices(total: int, limit: int | None, seed: int | None) -> np.ndarray:
    """The first ``limit`` of ``total`` indices, or a seeded random sample of them, in order.

    Example:
        >>> subset_indices(5, 3, None).tolist(), len(subset_indices(5, 3, 0))
        ([0, 1, 2], 3)
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"expected limit >= 1 or None, got {limit}")
    if limit is None or limit >= total:
        return np.arange(total)
    if seed is None:
        return np.arange(limit)
    return np.sort(np.random.default_rng(seed).choice(total, size=limit, replace=False))


def normalise(
    images: torch.Tensor, mean: Sequence[float], std: Sequence[float], input_size: int | None
) -> torch.Tensor:
    """Resize (bilinear, when ``input_size`` differs) and normalise per channel."""
    if input_size is not None and images.shape[-1] != input_size:
        images = F.interpolate(images, size=(input_size, input_size), mode="bilinear")
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return ((images - mean_t) / std_t).contiguous()
