"""Training: bit-identical with the same seed, caller's state untouched, cache and its damage."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import pytest
import torch

from pytorchfi_deepvigor.zoo import TrainingConfig, get_trained_model, train
from pytorchfi_deepvigor.zoo.cache import atomic_torch_save, resolve_cache_dir

TINY = {"width": 1 / 16, "epochs": 1}


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def trained_tiny() -> tuple[torch.nn.Module, train.TrainingRecord]:
    return train.train_model("vgg11", **TINY, seed=0)


@pytest.mark.parametrize("name", ["vgg11", "vgg16", "resnet18", "resnet34", "mobilenetv2"])
def test_same_seed_gives_bit_identical_weights(name: str) -> None:
    size = 32 if name.startswith("vgg") else 16
    first, record = train.train_model(name, width=1 / 32, epochs=1, input_size=size, seed=5)
    again, _ = train.train_model(name, width=1 / 32, epochs=1, input_size=size, seed=5)
    assert _same_weights(first, again)
    assert not first.training and record.config.seed == 5


def test_other_seed_gives_other_weights(trained_tiny) -> None:
    other, _ = train.train_model("vgg11", **TINY, seed=1)
    assert not _same_weights(trained_tiny[0], other)


def test_record_holds_accuracy_versions_and_time(trained_tiny) -> None:
    _, record = trained_tiny
    assert 0.1 < record.test_accuracy <= 1.0  # one epoch already learns something
    assert record.num_parameters == sum(p.numel() for p in trained_tiny[0].parameters())
    assert record.train_time_s > 0 and record.train_cpu_s > 0 and record.cache_path is None
    assert {"torch", "torchvision", "scikit-learn", "python"} <= set(record.versions)
    assert train.TrainingRecord.from_dict(record.to_dict()) == record


def test_training_leaves_global_rng_and_threads_alone(capsys: pytest.CaptureFixture) -> None:
    rng, threads = torch.get_rng_state(), torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        train.train_model("vgg11", width=1 / 32, epochs=1, num_threads=1)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(torch.get_rng_state(), rng)
    assert capsys.readouterr() == ("", "")  # the library never prints


def test_progress_bar_only_when_asked(capsys: pytest.CaptureFixture) -> None:
    train.train_model("vgg11", width=1 / 32, epochs=1, progress=True)
    assert "vgg11" in capsys.readouterr().err


def test_config_key_changes_with_every_field() -> None:
    base = TrainingConfig("vgg11", width=0.125, epochs=15)
    variants = [
        TrainingConfig("vgg11", width=0.25, epochs=15),
        TrainingConfig("vgg11", width=0.125, epochs=16),
        TrainingConfig("vgg11", width=0.125, epochs=15, seed=1),
        TrainingConfig("vgg11", width=0.125, epochs=15, num_threads=2),
        TrainingConfig("vgg11", width=0.125, epochs=15, learning_rate=0.01),
    ]
    assert len({base.key(), *(v.key() for v in variants)}) == 6
    assert base.file_name().startswith("vgg11-w0.125-s0-e15-")


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PYTORCHFI_DEEPVIGOR_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_cache_dir() == tmp_path / "xdg" / "pytorchfi_deepvigor"
    monkeypatch.setenv("PYTORCHFI_DEEPVIGOR_CACHE", str(tmp_path / "env"))
    assert resolve_cache_dir() == tmp_path / "env"
    assert resolve_cache_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("PYTORCHFI_DEEPVIGOR_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_cache_dir() == tmp_path / "home" / ".cache" / "pytorchfi_deepvigor"


def test_cached_model_is_reused_without_training(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, trained_tiny
) -> None:
    monkeypatch.setenv("PYTORCHFI_DEEPVIGOR_CACHE", str(tmp_path))
    model, record = get_trained_model("vgg11", **TINY)
    assert record.cache_path is not None and Path(record.cache_path).parent == tmp_path / "zoo"
    assert _same_weights(model, trained_tiny[0]) and not model.training

    def fail(*_: object) -> None:
        raise AssertionError("trained again instead of loading the cache")

    monkeypatch.setattr(train, "_train", fail)
    cached, cached_record = get_trained_model("vgg11", **TINY)
    assert _same_weights(cached, model) and cached_record == record
    assert list((tmp_path / "zoo").iterdir()) == [Path(record.cache_path)]  # no temporary left


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],
        lambda data: b"not a checkpoint at all",
        lambda data: b"",
    ],
    ids=["truncated", "garbage", "empty"],
)
def test_damaged_cache_file_is_rebuilt(tmp_path: Path, damage, trained_tiny) -> None:
    _, record = get_trained_model("vgg11", **TINY, cache_dir=tmp_path)
    path = Path(record.cache_path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.warns(RuntimeWarning, match="rebuilding damaged zoo cache file"):
        model, rebuilt = get_trained_model("vgg11", **TINY, cache_dir=tmp_path)
    assert _same_weights(model, trained_tiny[0]) and rebuilt.cache_path == str(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_trained_model("vgg11", **TINY, cache_dir=tmp_path)  # whole again: no warning


def test_tampered_weights_fail_their_digest(tmp_path: Path) -> None:
    _, record = get_trained_model("vgg11", **TINY, cache_dir=tmp_path)
    payload = torch.load(record.cache_path, weights_only=True)
    payload["state_dict"]["classifier.bias"] += 1.0
    torch.save(payload, record.cache_path)
    with pytest.warns(RuntimeWarning, match="do not match their digest"):
        get_trained_model("vgg11", **TINY, cache_dir=tmp_path)


def test_failed_write_leaves_no_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def crash(payload: object, stream) -> None:
        stream.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"x": torch.zeros(1)}, tmp_path / "a.pt")
    assert list(tmp_path.iterdir()) == []


def test_concurrent_writers_leave_one_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "same.pt"
    payloads = [{"w": torch.full((20000,), float(i))} for i in range(4)]
    threads = [
        threading.Thread(target=lambda p=p: [atomic_torch_save(p, path) for _ in range(5)])
        for p in payloads
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    loaded = torch.load(path, weights_only=True)["w"]
    assert loaded.shape == (20000,) and bool((loaded == loaded[0]).all())
    assert [p.name for p in tmp_path.iterdir()] == ["same.pt"]


def test_unwritable_cache_warns_and_returns_the_model(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    with pytest.warns(RuntimeWarning, match="could not write the zoo cache file"):
        model, record = get_trained_model("vgg11", width=1 / 32, epochs=1, cache_dir=blocker)
    assert record.cache_path is None and not model.training


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"name": "torchvision:resnet18"}, ValueError, "only zoo models train on the digits"),
        ({"name": "vgg11", "epochs": 0}, ValueError, "expected epochs >= 1, got 0"),
        ({"name": "vgg11", "seed": -1}, ValueError, "expected seed >= 0, got -1"),
        ({"name": "vgg11", "seed": 0.5}, TypeError, "expected seed to be an int"),
        ({"name": "vgg11", "width": 0.0}, ValueError, "expected width > 0"),
        ({"name": "vgg11", "num_threads": 0}, ValueError, "expected num_threads >= 1"),
        ({"name": "vgg11", "learning_rate": 0.0}, ValueError, "expected learning_rate > 0"),
    ],
    ids=["torchvision", "epochs", "seed", "seed-type", "width", "threads", "lr"],
)
def test_bad_arguments_are_rejected(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        train.train_model(**kwargs)
