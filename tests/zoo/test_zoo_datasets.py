"""Local data sets, read from tiny files the tests write: CIFAR, class folders, idx files."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pytorchfi_deepvigor.zoo import load_cifar10, load_cifar100, load_image_folder, load_mnist


def _write_pickle(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(obj, handle)


def _pixels(rng: np.random.Generator, count: int) -> np.ndarray:
    return rng.integers(0, 256, size=(count, 3 * 32 * 32), dtype=np.uint8)


@pytest.fixture
def cifar10_root(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    for i in range(1, 6):
        _write_pickle(folder / f"data_batch_{i}", {"data": _pixels(rng, 2), "labels": [i, i]})
    _write_pickle(folder / "test_batch", {"data": _pixels(rng, 4), "labels": [3, 1, 4, 1]})
    _write_pickle(folder / "batches.meta", {"label_names": [f"c{i}" for i in range(10)]})
    return tmp_path


def test_cifar10_test_and_train_splits(cifar10_root: Path) -> None:
    test = load_cifar10(cifar10_root)
    assert test.images.shape == (4, 3, 32, 32) and test.labels.tolist() == [3, 1, 4, 1]
    assert test.classes[3] == "c3"
    raw = pickle.loads((cifar10_root / "cifar-10-batches-py/test_batch").read_bytes())["data"]
    red = torch.tensor(raw[0, :1024].reshape(32, 32), dtype=torch.float32) / 255
    assert torch.allclose(test.images[0, 0], (red - 0.4914) / 0.2470, atol=1e-6)
    train = load_cifar10(cifar10_root / "cifar-10-batches-py", split="train", input_size=16)
    assert train.images.shape == (10, 3, 16, 16) and train.labels.tolist()[::2] == [1, 2, 3, 4, 5]


def test_limit_keeps_the_first_images_or_a_seeded_sample(cifar10_root: Path) -> None:
    assert load_cifar10(cifar10_root, limit=2).labels.tolist() == [3, 1]
    sampled = load_cifar10(cifar10_root, split="train", limit=3, seed=7)
    again = load_cifar10(cifar10_root, split="train", limit=3, seed=7)
    assert torch.equal(sampled.images, again.images) and len(sampled) == 3


def test_cifar100_fine_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-100-python"
    _write_pickle(folder / "train", {"data": _pixels(rng, 3), "fine_labels": [99, 0, 5]})
    _write_pickle(folder / "test", {"data": _pixels(rng, 2), "fine_labels": [42, 7]})
    _write_pickle(folder / "meta", {"fine_label_names": [f"f{i}" for i in range(100)]})
    test = load_cifar100(tmp_path)
    assert test.labels.tolist() == [42, 7] and test.classes[42] == "f42"
    assert load_cifar100(tmp_path, split="train").labels.tolist() == [99, 0, 5]


def test_image_folder_classes_sorted_and_transform(tmp_path: Path) -> None:
    for label, name in enumerate(["cat", "dog"]):
        (tmp_path / name).mkdir()
        for k in range(2):
            colour = (255 * label, 10 * k, 0)
            Image.new("RGB", (40, 30), colour).save(tmp_path / name / f"{k}.png")
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    data = load_image_folder(tmp_path, input_size=16)
    assert data.classes == ("cat", "dog") and data.labels.tolist() == [0, 0, 1, 1]
    assert data.images.shape == (4, 3, 16, 16)
    assert torch.allclose(data.images[2, 0], torch.full((16, 16), (1 - 0.485) / 0.229), atol=1e-5)
    assert len(load_image_folder(tmp_path, input_size=8, limit=3, seed=0)) == 3


def _write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    payload = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


@pytest.mark.parametrize(
    ("kind", "folder", "compress"),
    [
        ("mnist", "MNIST/raw", True),
        ("mnist", "", False),
        ("fashion-mnist", "FashionMNIST/raw", False),
    ],
    ids=["torchvision-layout-gz", "flat-plain", "fashion-plain"],
)
def test_mnist_idx_files(tmp_path: Path, kind: str, folder: str, compress: bool) -> None:
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, size=(5, 28, 28))
    _write_idx(tmp_path / folder / "t10k-images-idx3-ubyte", images, compress)
    _write_idx(tmp_path / folder / "t10k-labels-idx1-ubyte", np.array([7, 2, 1, 0, 4]), compress)
    data = load_mnist(tmp_path, kind=kind, input_size=32, in_channels=3)
    assert data.images.shape == (5, 3, 32, 32) and data.labels.tolist() == [7, 2, 1, 0, 4]
    plain = load_mnist(tmp_path, kind=kind)
    mean, std = (0.1307, 0.3081) if kind == "mnist" else (0.2860, 0.3530)
    expected = (torch.tensor(images[1], dtype=torch.float32) / 255 - mean) / std
    assert torch.allclose(plain.images[1, 0], expected, atol=1e-5)
    assert plain.classes[0] == ("0" if kind == "mnist" else "T-shirt/top")


def test_idx_file_with_wrong_magic_or_truncated_body(tmp_path: Path) -> None:
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((2, 28, 28)), False)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros((2, 28)), False)
    with pytest.raises(ValueError, match="not an idx file of unsigned bytes with 1 dimension"):
        load_mnist(tmp_path)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(2), False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match=r"truncated: header says \(2, 28, 28\)"):
        load_mnist(tmp_path)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda root: load_cifar10(root), r"cifar-10-batches-py/test_batch does not exist.*CIFAR"),
        (lambda root: load_cifar100(root, split="train"), r"cifar-100-python/train does not exist"),
        (lambda root: load_image_folder(root / "val"), r"val does not exist; expected ImageNet"),
        (lambda root: load_image_folder(root), r"holds no class folder with images"),
        (lambda root: load_mnist(root), r"MNIST/raw/t10k-images-idx3-ubyte does not exist.*idx"),
        (lambda root: load_mnist(root, kind="fashion-mnist"), r"FashionMNIST/raw/t10k-images"),
    ],
    ids=["cifar10", "cifar100", "folder-missing", "folder-empty", "mnist", "fashion"],
)
def test_missing_data_names_the_path_and_layout(tmp_path: Path, call, match: str) -> None:
    with pytest.raises(FileNotFoundError, match=match):
        call(tmp_path)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda root: load_cifar10(root, split="val"), "expected split 'train' or 'test'"),
        (lambda root: load_mnist(root, kind="kmnist"), "expected kind in"),
        (lambda root: load_cifar10(root, limit=0), "expected limit >= 1 or None, got 0"),
        (lambda root: load_mnist(root, in_channels=0), "expected in_channels a positive int"),
    ],
    ids=["split", "kind", "limit", "mnist-channels"],
)
def test_bad_arguments_are_rejected(cifar10_root: Path, call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call(cifar10_root)
