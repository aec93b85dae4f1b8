"""The user's own data sets, read from local disk (nothing is ever downloaded).

Formats: CIFAR-10/100 in torchvision's folder layout (pickled batches), ImageNet-style class
folders (one sub-folder of images per class) and MNIST / Fashion-MNIST idx files, plain or
gzipped. A missing folder or file raises ``FileNotFoundError`` naming the path and the layout
expected. Every loader returns an :class:`ImageSet` of normalised float32 images.
"""

from __future__ import annotations

import gzip
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from pytorchfi_deepvigor.zoo.imageset import ImageSet, normalise, subset_indices

__all__ = [
    "ImageSet",
    "CIFAR_LAYOUT",
    "IMAGE_FOLDER_LAYOUT",
    "MNIST_LAYOUT",
    "load_cifar10",
    "load_cifar100",
    "load_image_folder",
    "load_mnist",
]

CIFAR_LAYOUT = (
    "torchvision's CIFAR layout: <root>/cifar-10-batches-py/{data_batch_1..5, test_batch, "
    "batches.meta} or <root>/cifar-100-python/{train, test, meta}"
)
IMAGE_FOLDER_LAYOUT = "ImageNet-style class folders: <root>/<class name>/<image>.png|.jpg|..."
MNIST_LAYOUT = (
    "idx files, plain or .gz: {train,t10k}-images-idx3-ubyte and {train,t10k}-labels-idx1-ubyte "
    "in <root>, <root>/raw or torchvision's <root>/MNIST/raw (<root>/FashionMNIST/raw)"
)
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
_CIFAR_STATS = {
    10: ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    100: ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
_IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_MNIST_KINDS = {
    "mnist": ("MNIST", 0.1307, 0.3081),
    "fashion-mnist": ("FashionMNIST", 0.2860, 0.3530),
}


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"expected split 'train' or 'test', got {split!r}")


def _missing(path: Path, layout: str) -> FileNotFoundError:
    return FileNotFoundError(f"{path} does not exist; expected {layout}")


def _load_cifar(
    root: str | Path,
    num_classes: int,
    split: str,
    limit: int | None,
    seed: int | None,
    input_size: int | None,
) -> ImageSet:
    _check_split(split)
    root = Path(root)
    folder_name = "cifar-10-batches-py" if num_classes == 10 else "cifar-100-python"
    folder = root if root.name == folder_name else root / folder_name
    if num_classes == 10:
        names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        meta_name, label_key, names_key = "batches.meta", "labels", "label_names"
    else:
        names, meta_name, label_key, names_key = [split], "meta", "fine_labels", "fine_label_names"
    data, labels = [], []
    for name in [*names, meta_name]:
        if not (folder / name).is_file():
            raise _missing(folder / name, CIFAR_LAYOUT)
    for name in names:
        with open(folder / name, "rb") as handle:
            batch = pickle.load(handle, encoding="latin1")
        data.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(batch[label_key])
    with open(folder / meta_name, "rb") as handle:
        classes = tuple(pickle.load(handle, encoding="latin1")[names_key])
    keep = subset_indices(len(labels), limit, seed)
    pixels = torch.from_numpy(np.concatenate(data)[keep]).float() / 255.0
    mean, std = _CIFAR_STATS[num_classes]
    return ImageSet(
        images=normalise(pixels, mean, std, input_size),
        labels=torch.tensor(labels, dtype=torch.int64)[torch.from_numpy(keep)],
        classes=classes,
    )


def load_cifar10(
    root: str | Path,
    *,
    split: str = "test",
    limit: int | None = None,
    seed: int | None = None,
    input_size: int | None = None,
) -> ImageSet:
    """Load CIFAR-10 from torchvision's folder layout, normalised with CIFAR-10's statistics.

    Args:
        root: The folder holding ``cifar-10-batches-py`` (or that folder itself).
        split: ``"train"`` (50000 images) or ``"test"`` (10000).
        limit: Keep only this many images: the first ones, or a seeded sample with ``seed``.
        seed: Seed of the random subset; ``None`` keeps the first ``limit`` images.
        input_size: Resize (bilinear) to this side; ``None`` keeps 32.

    Returns:
        Images ``(N, 3, S, S)``, labels and the 10 class names.

    Raises:
        FileNotFoundError: If a batch file is missing (the message gives the layout).
        ValueError: If ``split`` or ``limit`` is invalid.
    """
    return _load_cifar(root, 10, split, limit, seed, input_size)


def load_cifar100(
    root: str | Path,
    *,
    split: str = "test",
    limit: int | None = None,
    seed: int | None = None,
    input_size: int | None = None,
) -> ImageSet:
    """Load CIFAR-100 (fine labels) from torchvision's layout; arguments as :func:`load_cifar10`.

    Args:
        root: The folder holding ``cifar-100-python`` (or that folder itself).
        split: ``"train"`` or ``"test"``.
        limit: Keep only this many images.
        seed: Seed of the random subset; ``None`` keeps the first ``limit`` images.
        input_size: Resize (bilinear) to this side; ``None`` keeps 32.

    Returns:
        Images ``(N, 3, S, S)``, fine labels and the 100 class names.

    Raises:
        FileNotFoundError: If a file is missing (the message gives the layout).
        ValueError: If ``split`` or ``limit`` is invalid.
    """
    return _load_cifar(root, 100, split, limit, seed, input_size)


def load_image_folder(
    root: str | Path,
    *,
    input_size: int = 224,
    limit: int | None = None,
    seed: int | None = None,
    mean: Sequence[float] = _IMAGENET_STATS[0],
    std: Sequence[float] = _IMAGENET_STATS[1],
) -> ImageSet:
    """Load ImageNet-style class folders, with ImageNet's evaluation transform.

    Classes are the sorted sub-folder names; images are read in sorted order, converted to
    RGB, resized so the shorter side is ``input_size / 0.875``, centre-cropped to
    ``input_size`` and normalised with ``mean``/``std`` (ImageNet's by default).

    Args:
        root: The folder holding one sub-folder per class.
        input_size: Side of the square crop.
        limit: Keep only this many images: the first ones, or a seeded sample with ``seed``.
        seed: Seed of the random subset; ``None`` keeps the first ``limit`` images.
        mean: Per-channel mean subtracted after scaling pixels to [0, 1].
        std: Per-channel standard deviation divided by.

    Returns:
        Images ``(N, 3, input_size, input_size)``, labels and the class names.

    Raises:
        FileNotFoundError: If ``root`` is missing or holds no class folder with images.
    """
    from PIL import Image
    from torchvision.transforms import functional as TF

    root = Path(root)
    if not root.is_dir():
        raise _missing(root, IMAGE_FOLDER_LAYOUT)
    classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))
    files: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        for path in sorted((root / name).iterdir()):
            if path.suffix.lower() in _IMAGE_SUFFIXES:
                files.append((path, label))
    if not files:
        raise FileNotFoundError(f"{root} holds no class folder with images; expected "
                                f"{IMAGE_FOLDER_LAYOUT}")  # fmt: skip
    images, labels = [], []
    for index in subset_indices(len(files), limit, seed):
        path, label = files[index]
        with Image.open(path) as image:
            picture = image.convert("RGB")
        picture = TF.resize(picture, round(input_size / 0.875))
        picture = TF.center_crop(picture, [input_size, input_size])
        images.append(TF.pil_to_tensor(picture).float() / 255.0)
        labels.append(label)
    return ImageSet(
        images=normalise(torch.stack(images), mean, std, None),
        labels=torch.tensor(labels, dtype=torch.int64),
        classes=classes,
    )


def _read_idx(path: Path, expected_dims: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] != expected_dims:
        raise ValueError(
            f"{path} is not an idx file of unsigned bytes with {expected_dims} dimension(s)"
        )
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(expected_dims))
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * expected_dims)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: header says {shape}, found {body.size} bytes")
    return body.reshape(shape)


def _find_idx(root: Path, folder: str, stem: str) -> Path:
    for directory in (root / folder / "raw", root / "raw", root):
        for name in (stem, stem + ".gz"):
            if (directory / name).is_file():
                return directory / name
    raise _missing(root / folder / "raw" / stem, MNIST_LAYOUT)


def load_mnist(
    root: str | Path,
    *,
    kind: str = "mnist",
    split: str = "test",
    limit: int | None = None,
    seed: int | None = None,
    input_size: int | None = None,
    in_channels: int = 1,
) -> ImageSet:
    """Load MNIST or Fashion-MNIST from idx files (plain or gzipped).

    Args:
        root: The folder holding the idx files, a ``raw`` folder or torchvision's layout.
        kind: ``"mnist"`` or ``"fashion-mnist"`` (sets the folder name and the statistics).
        split: ``"train"`` or ``"test"`` (``t10k`` files).
        limit: Keep only this many images: the first ones, or a seeded sample with ``seed``.
        seed: Seed of the random subset; ``None`` keeps the first ``limit`` images.
        input_size: Resize (bilinear) to this side; ``None`` keeps 28.
        in_channels: Repeat the grey channel this many times (3 for RGB models).

    Returns:
        Images ``(N, in_channels, S, S)``, labels and the class names ("0".."9" for MNIST).

    Raises:
        FileNotFoundError: If an idx file is missing (the message gives the layout).
        ValueError: If ``kind``, ``split``, ``limit`` or ``in_channels`` is invalid or a file
            is not idx.
    """
    if kind not in _MNIST_KINDS:
        raise ValueError(f"expected kind in {sorted(_MNIST_KINDS)}, got {kind!r}")
    _check_split(split)
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"expected in_channels a positive int, got {in_channels!r}")
    folder, mean, std = _MNIST_KINDS[kind]
    prefix = "train" if split == "train" else "t10k"
    root = Path(root)
    images = _read_idx(_find_idx(root, folder, f"{prefix}-images-idx3-ubyte"), 3)
    labels = _read_idx(_find_idx(root, folder, f"{prefix}-labels-idx1-ubyte"), 1)
    if len(images) != len(labels):
        raise ValueError(f"{root}: {len(images)} images but {len(labels)} labels")
    keep = subset_indices(len(labels), limit, seed)
    pixels = torch.from_numpy(images[keep].astype(np.float32) / 255.0).unsqueeze(1)
    pixels = normalise(pixels, [mean], [std], input_size).repeat(1, in_channels, 1, 1)
    classes = tuple(str(d) for d in range(10)) if kind == "mnist" else _FASHION_CLASSES
    return ImageSet(pixels, torch.from_numpy(labels[keep].astype(np.int64)), classes)


_FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
