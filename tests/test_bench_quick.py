"""Smoke run of validation/bench.py --quick, and the unbatched reference against the analyser."""

from __future__ import annotations

import csv
import doctest
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from guarantees import assert_model_unchanged
from tiny_models import seeded_images, tiny_resnet, tiny_vgg

from pytorchfi_deepvigor.analysis import DeepVigorAnalyzer

VALIDATION = Path(__file__).resolve().parents[1] / "validation"


def _load(name: str) -> ModuleType:
    if str(VALIDATION) not in sys.path:
        sys.path.insert(0, str(VALIDATION))
    spec = importlib.util.spec_from_file_location(name, VALIDATION / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def _main_rows(bench: ModuleType, args: list[str], out: Path) -> list[dict[str, str]]:
    """bench.main(args) with --out, its exit status 0, the rows of bench.csv (torch's thread
    count restored: bench sets it)."""
    threads = torch.get_num_threads()
    try:
        assert bench.main([*args, "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    with (out / "bench.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_bench_quick_writes_every_benchmark(tmp_path: Path) -> None:
    """The default sections (all but real) on untrained tiny models."""
    rows = _main_rows(_load("bench"), ["--quick"], tmp_path)
    assert tuple(rows[0]) == ("benchmark", "config", "ours_s", "baseline_s", "ratio", "notes")
    kinds = {r["benchmark"] for r in rows}
    assert kinds >= {"throughput", "throughput/analysis", "sfi/wall", "sfi/simulations"}
    assert kinds >= {"channel", "reference", "scaling"}
    assert all(float(r["ratio"]) > 0 for r in rows if r["ratio"])
    assert "same VFs (asserted)" in next(r["notes"] for r in rows if r["benchmark"] == "reference")
    assert len([r for r in rows if r["benchmark"] == "scaling"]) == 3  # 2 widths + the deeper net
    assert (tmp_path / "bench_scaling.png").stat().st_size > 0
    assert "Targets" in (tmp_path / "bench.md").read_text()


def test_bench_quick_real_section(tmp_path: Path) -> None:
    """Section 7 on its untrained MobileNetV2 stand-in: a row per layer, the worst layer of
    each layer type, the per-layer table."""
    rows = _main_rows(_load("bench"), ["--quick", "--only", "real"], tmp_path)
    assert {r["benchmark"] for r in rows} == {"real", "real/sfi", "real/layer", "real/kind"}
    kinds = {r["config"].rsplit(" ", 1)[1] for r in rows if r["benchmark"] == "real/kind"}
    assert kinds == {"first", "depthwise", "1x1", "Linear"}
    layers = [r for r in rows if r["benchmark"] == "real/layer"]
    assert len(layers) > 40 and all(float(r["ratio"]) > 0 for r in layers)
    table = (tmp_path / "bench_real.md").read_text()
    assert "Worst layer" in table and table.count("\n| L") == len(layers)
    assert "- real/kind: >= 100" in (tmp_path / "bench.md").read_text()


def test_bench_real_without_the_wheels_writes_a_note(tmp_path: Path, monkeypatch) -> None:
    bench = _load("bench")

    def unavailable(s: object) -> None:
        raise bench.Unavailable("the package registry could not be reached")

    monkeypatch.setattr(bench, "load_real", unavailable)
    rows = _main_rows(bench, ["--only", "real"], tmp_path)
    assert [(r["benchmark"], r["notes"]) for r in rows] == [
        ("real", "skipped: the package registry could not be reached")
    ]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA note")
def test_bench_cuda_without_gpu_writes_a_note(tmp_path: Path) -> None:
    assert _load("bench").main(["--quick", "--device", "cuda", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "bench.csv").read_text()
    assert "skipped: CUDA is not available" in text


@pytest.mark.parametrize("make", [tiny_vgg, tiny_resnet], ids=["vgg", "resnet"])
def test_reference_gives_the_analysers_vfs(make) -> None:
    ref_mod = _load("_bench_reference")
    model, images = make(), seeded_images(6)
    layers = [0, 2]
    ref = assert_model_unchanged(
        model, lambda: ref_mod.reference_analysis(model, images, layers, sampling=0.5, seed=3)
    )
    res = DeepVigorAnalyzer(model, images).analyze(
        layers=layers, sampling=0.5, seed=3, search="extended", aggregate="position"
    )  # the search the reference implements
    for layer in res.layers:
        ours = np.array(layer.nvf if layer.target == "activations" else layer.cvf)
        assert np.array_equal(ours, ref.vfs[(layer.layer_num, layer.target)])
    assert ref.image_evaluations == res.cost.image_evaluations  # same probes, other batching
    assert ref.forwards > res.cost.batched_forwards


def test_reference_rejects_an_unknown_target() -> None:
    ref_mod = _load("_bench_reference")
    with pytest.raises(ValueError, match="expected target 'activations', 'weights' or 'both'"):
        ref_mod.reference_analysis(tiny_vgg(), seeded_images(2), [0], target="neurons")


def test_reference_doctest() -> None:
    failed, _ = doctest.testmod(_load("_bench_reference"), optionflags=doctest.ELLIPSIS)
    assert failed == 0


def test_bench_flags_a_rate_above_the_measured_peak() -> None:
    bench = _load("bench")
    peak = bench.Peak(shape=(2, 64, 8, 8)).sample(2)  # a small conv, timed twice
    assert len(peak.rates) == 2 and peak.best == max(peak.rates) > 0
    peak.rates[:], peak.cpu_rates[:] = [50e9, 60e9], [55e9, 61e9]
    assert peak.frac(30e9) == "0.50 of peak"
    assert peak.frac(70e9).endswith("ABOVE THE MEASURED PEAK")  # 1.17x: a defect, not a result
    assert "best 60.0 GFLOP/s" in peak.describe()


def test_bench_distributed_quick_runs_two_processes(tmp_path: Path) -> None:
    """1 vs 2 torchrun processes on an untrained narrow model: results equal, both studies."""
    out = tmp_path / "out"
    code = _load("bench_distributed").main(["--quick", "--repeats", "1", "--out", str(out)])
    assert code == 0
    with (out / "bench_distributed.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {(r["study"], r["processes"]) for r in rows} == {
        ("campaign", "1"),
        ("campaign", "2"),
        ("analysis", "1"),
        ("analysis", "2"),
    }
    two = [r for r in rows if r["processes"] == "2"]
    assert all(float(r["speedup"]) > 0 and "rank 1 (cpu)" in r["notes"] for r in two)
    text = (out / "bench_distributed.md").read_text()
    assert text.count("results equal (asserted)") == 2 and "QUICK smoke run" in text
