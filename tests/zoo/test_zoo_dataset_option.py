"""The zoo trainer's data-set choice: Fashion-MNIST beside the digits, digits cache keys unchanged."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from pytorchfi_deepvigor.zoo import TrainingConfig, get_trained_model, train
from pytorchfi_deepvigor.zoo.cache import read_cache_file
from pytorchfi_deepvigor.zoo.config import FASHION_MNIST_ROOT

HAVE_FASHION = (Path(FASHION_MNIST_ROOT) / "train-images-idx3-ubyte.gz").exists()
needs_fashion = pytest.mark.skipif(
    not HAVE_FASHION,
    reason=f"Fashion-MNIST is not in {FASHION_MNIST_ROOT} (apt install dataset-fashion-mnist)",
)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_digits_config_keeps_its_key_and_file_name() -> None:
    # The keys the digits configs had before the data set was a field (cached files stay valid).
    assert TrainingConfig("vgg11", width=0.03125, epochs=15).key() == "53b75efee4b6f84c"
    assert TrainingConfig("resnet18", width=0.125, epochs=15).file_name() == (
        "resnet18-w0.125-s0-e15-a023988c6860ca80.pt"
    )
    digits = TrainingConfig("vgg11", width=0.125, epochs=15, dataset="digits")
    assert "dataset" not in digits.as_dict() and "train_limit" not in digits.as_dict()
    fashion = dataclasses.replace(digits, dataset="fashion-mnist")
    subset = dataclasses.replace(fashion, train_limit=100)
    assert len({digits.key(), fashion.key(), subset.key()}) == 3
    assert fashion.file_name().startswith("vgg11-fashion-mnist-w0.125-s0-e15-")


def test_old_cache_file_without_the_field_is_read(tmp_path: Path) -> None:
    model, record = get_trained_model("vgg11", width=1 / 32, epochs=1, cache_dir=tmp_path)
    path = Path(record.cache_path)
    payload = torch.load(path, weights_only=True)
    assert "dataset" not in payload["config"]  # what earlier versions wrote
    config = TrainingConfig("vgg11", width=1 / 32, epochs=1)
    read_cache_file(path, dataclasses.asdict(config))  # the CLI's full dict still matches
    again, _ = get_trained_model("vgg11", width=1 / 32, epochs=1, cache_dir=tmp_path)
    assert _same(model, again)


def test_unknown_dataset_and_bad_limit_are_refused() -> None:
    with pytest.raises(ValueError, match="expected dataset in"):
        train.train_model("vgg11", width=1 / 32, epochs=1, dataset="cifar")
    with pytest.raises(ValueError, match="train_limit"):
        train.train_model("vgg11", width=1 / 32, epochs=1, train_limit=0)


def test_missing_fashion_files_name_the_package(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="apt install dataset-fashion-mnist"):
        train.train_model(
            "vgg11", width=1 / 32, epochs=1, dataset="fashion-mnist", data_root=tmp_path
        )


@needs_fashion
def test_tiny_model_trains_on_fashion_mnist(tmp_path: Path) -> None:
    options = {"width": 1 / 32, "epochs": 2, "train_limit": 1000, "dataset": "fashion-mnist"}
    model, record = get_trained_model("vgg11", cache_dir=tmp_path, **options)
    assert record.config.dataset == "fashion-mnist" and record.config.train_limit == 1000
    assert Path(record.cache_path).name.startswith("vgg11-fashion-mnist-w0.03125-")
    assert 0.3 < record.test_accuracy <= 1.0  # on 10,000 test images; chance is 0.1
    assert not model.training
    cached, again = get_trained_model("vgg11", cache_dir=tmp_path, **options)
    assert again.created_at == record.created_at  # read back, not retrained
    same, _ = train.train_model("vgg11", **options)
    assert _same(same, cached)
