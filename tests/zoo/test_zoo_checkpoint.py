"""Loading the user's checkpoints into zoo architectures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from guarantees import assert_model_unchanged

from pytorchfi_deepvigor.zoo import build_model, get_trained_model, load_checkpoint

ARCH = {"width": 1 / 16, "in_channels": 1}


@pytest.fixture
def source() -> torch.nn.Module:
    torch.manual_seed(3)
    return build_model("resnet18", **ARCH).eval()


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"state_dict": sd, "epoch": 3},
        lambda sd: {"model_state_dict": sd, "optimizer": {"lr": 0.1}},
        lambda sd: {f"module.{k}": v for k, v in sd.items()},
    ],
    ids=["plain", "wrapped", "model_state_dict", "data-parallel"],
)
def test_state_dict_files_load(tmp_path: Path, source: torch.nn.Module, wrap) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save(wrap(source.state_dict()), path)
    model = load_checkpoint(path, "resnet18", **ARCH)
    assert _same_weights(model, source) and not model.training


def test_module_object_is_copied_not_changed(source: torch.nn.Module) -> None:
    source.train()
    model = assert_model_unchanged(source, lambda: load_checkpoint(source, "resnet18", **ARCH))
    assert _same_weights(model, source) and model is not source


def test_whole_module_file_needs_allow_pickle(tmp_path: Path, source: torch.nn.Module) -> None:
    path = tmp_path / "whole.pt"
    torch.save(source, path)
    with pytest.raises(ValueError, match="pass allow_pickle=True if you trust the file"):
        load_checkpoint(path, "resnet18", **ARCH)
    model = load_checkpoint(path, "resnet18", **ARCH, allow_pickle=True)
    assert _same_weights(model, source)


def test_unreadable_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"no torch file")
    for allow_pickle in (False, True):  # a text file: no allow_pickle hint, it would not help
        with pytest.raises(ValueError, match="garbage.pt is not a torch checkpoint: it is not a "
                           "torch.save file") as caught:  # fmt: skip
            load_checkpoint(path, "vgg11", allow_pickle=allow_pickle)
        assert "allow_pickle" not in str(caught.value)
    torch.save({"w": torch.zeros(1000)}, path)
    path.write_bytes(path.read_bytes()[:200])  # a truncated zip
    with pytest.raises(ValueError, match=r"garbage.pt is not a readable torch checkpoint: \w+"):
        load_checkpoint(path, "vgg11", allow_pickle=True)


def test_zoo_cache_file_knows_its_architecture(tmp_path: Path) -> None:
    trained, record = get_trained_model("vgg11", width=1 / 32, epochs=1, cache_dir=tmp_path)
    model = load_checkpoint(record.cache_path)
    assert _same_weights(model, trained)


def test_mismatch_lists_missing_unexpected_and_mis_shaped_keys(source: torch.nn.Module) -> None:
    state = dict(source.state_dict())
    state["extra.weight"] = state.pop("fc.weight")
    with pytest.raises(ValueError, match=r"missing keys \(1\): fc.weight") as info:
        load_checkpoint(state, "resnet18", **ARCH)
    assert "unexpected keys (1): extra.weight" in str(info.value)
    with pytest.raises(ValueError, match=r"shape mismatches.*conv1.weight \(4, 1, 3, 3\) vs"):
        load_checkpoint(source.state_dict(), "resnet18", width=1 / 8, in_channels=1)
    with pytest.raises(ValueError, match=r"missing keys \(\d+\).*\.\.\. and \d+ more"):
        load_checkpoint(source.state_dict(), "vgg11", **ARCH)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda p: load_checkpoint(p / "nope.pt", "vgg11"), FileNotFoundError, "nope.pt does not"),
        (lambda p: load_checkpoint({"a": 1}, "vgg11"), TypeError, "expected a state_dict"),
        (lambda p: load_checkpoint({}, None), ValueError, "name the architecture"),
        (lambda p: load_checkpoint({}, "vgg12"), ValueError, "unknown model 'vgg12'"),
    ],
    ids=["missing-file", "no-state-dict", "no-name", "unknown-name"],
)
def test_bad_sources_are_rejected(tmp_path: Path, call, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        call(tmp_path)
