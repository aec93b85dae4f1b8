"""Rendering: tables, CSV, JSON, comparison files and PNG plots of hand-made results."""

from __future__ import annotations

import csv
import dataclasses
import json
import math

import pytest

from pytorchfi_deepvigor import report
from pytorchfi_deepvigor.results import (
    Cost,
    LayerResult,
    OutcomeCounts,
    VulnerabilityResult,
)

PNG = b"\x89PNG\r\n\x1a\n"


def layer(num, target, cvf, **more):
    kind = "Linear" if num == 2 else "Conv2d"
    return LayerResult(layer_num=num, name=f"net.{num}", kind=kind, target=target,
                       n_neurons=64, n_weights=36, channels=tuple(range(len(cvf))), cvf=cvf,
                       lvf=sum(cvf) / len(cvf), **more)  # fmt: skip


@pytest.fixture
def analysis() -> VulnerabilityResult:
    layers = [
        layer(0, "activations", (0.1, 0.3), neurons=((0, 1, 2), (1, 0, 0)), nvf=(0.1, 0.3)),
        layer(0, "weights", (0.2, 0.4)),
        layer(2, "activations", (0.5,)),
        layer(2, "weights", (0.05,)),
    ]
    return VulnerabilityResult.from_layers(
        "deepvigor", layers, options={"sampling": 0.5, "search": "extended"}, seed=3,
        cost=Cost(batched_forwards=7, image_evaluations=70, faults=900, wall_time_s=1.25),
        n_images=10, model_name="toy", unsupported=("conv3d (Conv3d)",),
    )  # fmt: skip


@pytest.fixture
def sfi() -> VulnerabilityResult:
    counts = OutcomeCounts(masked=80, sdc=5, critical=10, due=5)
    layers = [
        layer(0, "weights", (0.25, 0.35), counts=counts, n_faults=10, margin=0.03),
        layer(2, "weights", (0.1,), counts=counts, n_faults=10, margin=0.01),
    ]
    return VulnerabilityResult.from_layers(
        "sfi-layer", layers, options={"e": 0.05, "t": 2.58}, n_images=10, model_name="toy"
    )


def test_table_has_one_row_per_layer_with_each_target(analysis):
    lines = report.format_table(analysis).splitlines()
    assert (
        lines[0]
        == "DeepVigor+ analysis of toy on 10 images (seed 3; sampling 0.5; search extended)"
    )
    assert lines[1].split() == ["layer", "name", "type", "channels", "LVF", "act", "LVF", "weights"]
    assert lines[2].split() == ["0", "net.0", "Conv2d", "2", "0.20000", "0.30000"]
    assert lines[3].split() == ["2", "net.2", "Linear", "1", "0.50000", "0.05000"]


def test_fi_table_adds_faults_and_margin(sfi):
    lines = report.format_table(sfi).splitlines()
    assert "e 0.05, t 2.58" in lines[0]
    assert lines[1].split()[-3:] == ["weights", "faults", "margin"]
    assert lines[2].split()[-2:] == ["10", "0.0300"]


def test_summary_gives_mvfs_cost_and_unsupported_layers(analysis):
    text = report.format_summary(analysis)
    assert f"MVF activations {analysis.mvf_activations:.5f}" in text
    assert f"MVF total (Eq. 15) {analysis.mvf_total:.5f}" in text
    assert "7 batched forwards, 70 image-evaluations, 0 backwards, 900 faults, 1.2 s" in text
    assert text.splitlines()[-1] == "not analysed (unsupported layer types): conv3d (Conv3d)"


def test_write_report_files_and_their_content(analysis, tmp_path):
    files = report.write_report(analysis, tmp_path / "out")
    assert set(files) == {"result", "layers", "channels", "neurons", "lvf_plot", "mvf_plot"}
    assert VulnerabilityResult.from_json(files["result"]) == analysis
    with files["layers"].open(newline="") as handle:
        layers = list(csv.DictReader(handle))
    assert tuple(layers[0]) == report.LAYER_COLUMNS
    assert [(r["layer"], r["target"], r["channels"]) for r in layers] == [
        ("0", "activations", "2"), ("0", "weights", "2"), ("2", "activations", "1"),
        ("2", "weights", "1"),
    ]  # fmt: skip
    assert layers[0]["faults"] == "" and float(layers[1]["lvf"]) == pytest.approx(0.3)
    with files["channels"].open(newline="") as handle:
        channels = list(csv.DictReader(handle))
    assert tuple(channels[0]) == report.CHANNEL_COLUMNS and len(channels) == 6
    assert files["neurons"].read_text().splitlines()[1] == "0,net.0,activations,0,1,2,0.1"
    for key in ("lvf_plot", "mvf_plot"):
        assert files[key].read_bytes()[:8] == PNG


def test_fi_csv_holds_counts_and_margin(sfi, tmp_path):
    path = report.write_layers_csv(sfi, tmp_path / "layers.csv")
    first = next(csv.DictReader(path.open(newline="")))
    assert (first["masked"], first["sdc"], first["critical"], first["due"]) == (
        "80",
        "5",
        "10",
        "5",
    )
    assert first["margin"] == "0.03" and first["faults"] == "10"
    assert "neurons" not in report.write_report(sfi, tmp_path / "all")


def test_comparison_files_are_strict_json_with_every_pair(analysis, sfi, tmp_path):
    files = report.write_comparison(analysis, sfi, tmp_path)
    data = json.loads(files["comparison"].read_text())  # strict: NaN would be a string
    assert data["format"] == report.COMPARISON_FORMAT
    assert data["schema_version"] == report.COMPARISON_SCHEMA_VERSION
    assert data["a"]["method"] == "deepvigor" and data["b"]["method"] == "sfi-layer"
    weights = data["targets"]["weights"]
    assert weights["n_channels"] == 3 and weights["mae"] == pytest.approx((0.05 + 0.05 + 0.05) / 3)
    assert set(data["targets"]) == {"weights"}
    assert files["pairs"].read_text().splitlines()[1] == "0,weights,0,0.2,0.25"
    assert files["cvf_scatter"].read_bytes()[:8] == PNG


def test_constant_side_gives_nan_spearman_written_as_string(sfi):
    one = VulnerabilityResult.from_layers("exhaustive", [layer(0, "weights", (0.3, 0.3))])
    data = report.comparison_to_dict(one, sfi)
    assert data["targets"]["weights"]["spearman"] == "NaN"
    assert "n/a" not in report.format_comparison(one, sfi) and "nan" in report.format_comparison(
        one, sfi
    )


def test_format_comparison_lines_up_mvfs_and_costs(analysis, sfi):
    text = report.format_comparison(analysis, sfi)
    assert "weights" in text and "Spearman" in text
    mvf_line = next(line for line in text.splitlines() if line.startswith("MVF weights"))
    assert mvf_line.split()[2:] == [f"{analysis.mvf_weights:.5f}", f"{sfi.mvf_weights:.5f}"]
    assert "MVF total" in text  # present on one side


def test_no_common_channel_is_an_error_naming_both_sides(analysis):
    other = VulnerabilityResult.from_layers("exhaustive", [layer(5, "stored", (0.1,))])
    with pytest.raises(ValueError, match="no channel is present in both results"):
        report.comparison_to_dict(analysis, other)
    with pytest.raises(ValueError, match="no channel is present in both results"):
        report.plot_cvf_scatter(analysis, other, "unused.png")


def test_plots_handle_a_single_target_and_nan_free_values(sfi, tmp_path):
    assert report.plot_lvf(sfi, tmp_path / "a" / "lvf.png").read_bytes()[:8] == PNG
    assert report.plot_mvf(sfi, tmp_path / "mvf.png").read_bytes()[:8] == PNG
    assert not math.isnan(sfi.mvf_weights)


def test_comparison_file_records_the_layers_compared_and_warns_once(analysis, sfi, recwarn):
    other = dataclasses.replace(sfi, model_name="other-model", n_images=analysis.n_images + 1)
    data = report.comparison_to_dict(dataclasses.replace(analysis, model_name="m"), other)
    assert data["a"]["layers"] == data["b"]["layers"] == [[0, "weights"], [2, "weights"]]
    assert len(data["warnings"]) == 2 and "different models" in data["warnings"][0]
    assert len(recwarn) == 2  # once per difference, not once per target
