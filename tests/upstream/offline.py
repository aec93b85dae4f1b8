"""The offline changes for PyTorchFI 0.6.0's own test suite: copied as its ``conftest.py``.

The differential run (``test_upstream_suite.py``) extracts the ``test/`` folder of the
pytorchfi 0.6.0 sdist and puts this file beside its tests. It changes nothing in the tests
themselves; at start-up it replaces what needs a network or an old torch:

* ``torchvision.datasets.CIFAR10`` (downloads CIFAR-10): generated 32x32 RGB images, seeded
  per index, same transforms;
* ``torchvision.models.alexnet(pretrained=True)`` (downloads ImageNet weights): the same
  architecture with seeded random weights (the global RNG advances exactly as the real
  constructor advances it);
* ``DataLoader`` iterators lost their ``.next()`` method in torch 1.13; the tests call it, so it
  is given back as ``__next__``.

Everything is set up in :func:`pytest_configure`, so importing this module changes nothing.
"""

from __future__ import annotations

from typing import Any

WEIGHT_SEED = 20240606  # the seed of the stand-in "pretrained" AlexNet weights
N_IMAGES = 10_000  # CIFAR-10's test split size


def generated_cifar10() -> type:
    """A stand-in for ``torchvision.datasets.CIFAR10``: deterministic images, nothing on disk."""
    import numpy as np
    import torch
    from PIL import Image

    class GeneratedCIFAR10(torch.utils.data.Dataset):
        def __init__(
            self,
            root: str = "",
            train: bool = True,
            transform: Any = None,
            target_transform: Any = None,
            download: bool = False,
        ) -> None:
            self.train, self.transform, self.target_transform = train, transform, target_transform

        def __len__(self) -> int:
            return N_IMAGES

        def __getitem__(self, index: int) -> tuple[Any, int]:
            rng = np.random.default_rng([int(self.train), index])
            image: Any = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
            label = int(rng.integers(0, 10))
            if self.transform is not None:
                image = self.transform(image)
            if self.target_transform is not None:
                label = self.target_transform(label)
            return image, label

    return GeneratedCIFAR10


def seeded_alexnet(real_alexnet: Any) -> Any:
    """``torchvision.models.alexnet`` where ``pretrained=True`` gives seeded random weights."""
    import torch

    def alexnet(pretrained: bool = False, weights: Any = None, **kwargs: Any) -> Any:
        model = real_alexnet(weights=None, **kwargs)  # default init, as before a weight load
        if pretrained or weights is not None:
            gen = torch.Generator().manual_seed(WEIGHT_SEED)
            with torch.no_grad():
                for p in model.parameters():
                    fan_in = p[0].numel() if p.dim() > 1 else p.numel()
                    p.uniform_(-(fan_in**-0.5), fan_in**-0.5, generator=gen)
        return model

    return alexnet


def pytest_configure(config: Any) -> None:
    import torch.utils.data.dataloader as dataloader
    import torchvision

    torchvision.datasets.CIFAR10 = generated_cifar10()
    torchvision.models.alexnet = seeded_alexnet(torchvision.models.alexnet)
    it = dataloader._BaseDataLoaderIter
    if not hasattr(it, "next"):
        it.next = it.__next__
