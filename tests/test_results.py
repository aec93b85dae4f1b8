"""Result types: validation, MVFs (Eq. 15), JSON round trip, compare()."""

from __future__ import annotations

import json
import math
from dataclasses import FrozenInstanceError, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from pytorchfi_deepvigor.results import (
    SCHEMA_VERSION,
    ComparisonWarning,
    Cost,
    LayerResult,
    OutcomeCounts,
    VulnerabilityResult,
    compare,
    mvf,
)


def make_layer(
    layer_num: int = 0,
    target: str = "weights",
    channels: tuple[int, ...] = (0, 1, 2),
    cvf: tuple[float, ...] = (0.1, 0.2, 0.6),
    **kwargs: object,
) -> LayerResult:
    defaults: dict[str, object] = {
        "name": f"layer{layer_num}",
        "kind": "Conv2d",
        "n_neurons": 64,
        "n_weights": 27,
        "lvf": sum(cvf) / len(cvf) if cvf else 0.0,
    }
    defaults.update(kwargs)
    return LayerResult(layer_num=layer_num, target=target, channels=channels, cvf=cvf, **defaults)  # type: ignore[arg-type]


def rich_result() -> VulnerabilityResult:
    """A result exercising every optional field, with NaN and Inf in floats and arrays."""
    vv_minus = np.array([[-1.0, -np.inf], [-0.5, -2.0]])
    act = make_layer(
        0,
        "activations",
        channels=(1, 3),
        cvf=(1.0, 0.25),
        lvf=0.625,
        neurons=((1, 0, 2), (3, 1, 1)),
        nvf=(1.0, 0.25),
        vv_minus=vv_minus,
        vv_plus=np.array([[np.inf, 4.0], [np.nan, 1.0]], dtype=np.float32),
        edm=np.arange(24, dtype=np.int64).reshape(2, 3, 4),
        cvf_spread=-math.inf,
    )
    wts = make_layer(
        0,
        "weights",
        counts=OutcomeCounts(masked=10, sdc=3, critical=2, due=1),
        n_faults=16,
        margin=0.0123,
        cost=Cost(batched_forwards=2, image_evaluations=200, faults=16, wall_time_s=0.5),
    )
    return VulnerabilityResult.from_layers(
        "sfi-data-aware",
        [act, wts],
        options={"e": 0.01, "grid": "extended", "ratios": [0.1, 0.2], "nested": {"k": (1, 2)}},
        seed=7,
        cost=Cost(batched_forwards=3, image_evaluations=300, faults=16, wall_time_s=1.5),
        n_images=100,
        model_name="tiny-vgg",
        unsupported=["features.3 (Conv3d)"],
    )


def test_cost_and_counts_arithmetic() -> None:
    total = Cost(1, 10, 2, 5, 0.5) + Cost(2, 20, 0, 1, 0.25)
    assert total == Cost(3, 30, 2, 6, 0.75)
    counts = OutcomeCounts(1, 2, 3, 4) + OutcomeCounts(masked=1)
    assert counts == OutcomeCounts(2, 2, 3, 4) and counts.total == 11
    assert counts.vf == pytest.approx(7 / 11)
    assert math.isnan(OutcomeCounts().vf)


def test_counts_from_engine_outcome_codes() -> None:
    codes = torch.tensor([0, 0, 1, 2, 3, 3, 3], dtype=torch.int8)
    assert OutcomeCounts.from_outcomes(codes) == OutcomeCounts(2, 1, 1, 3)
    with pytest.raises(ValueError, match=r"expected outcome codes in 0..3, got 0..4"):
        OutcomeCounts.from_outcomes(np.array([0, 4]))
    with pytest.raises(ValueError, match="expected due as a non-negative int, got -1"):
        OutcomeCounts(due=-1)


def test_result_types_are_frozen_and_arrays_read_only() -> None:
    source = np.zeros((2, 3))
    layer = make_layer(vv_minus=source, vv_plus=source)
    source[0, 0] = 5.0
    assert layer.vv_minus is not None and layer.vv_minus[0, 0] == 0.0
    with pytest.raises(ValueError, match="read-only"):
        layer.vv_minus[0, 0] = 1.0
    with pytest.raises(FrozenInstanceError):
        layer.lvf = 0.0  # type: ignore[misc]
    result = VulnerabilityResult.from_layers("deepvigor", [layer], options={"a": [1]})
    with pytest.raises(TypeError):
        result.options["a"] = 2  # type: ignore[index]
    assert result.options["a"] == (1,)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"target": "bias"}, "expected target in .*got 'bias'"),
        ({"cvf": (0.1,)}, "expected one cvf per channel, got 1 for 3"),
        ({"neurons": ((0, 1),)}, r"expected neurons as \(channel, row, col\) triples"),
        ({"nvf": (0.1,)}, "expected one nvf per neuron"),
        ({"vv_minus": np.zeros(3), "vv_plus": np.zeros(3)}, r"shaped \[targets, images\]"),
        ({"vv_minus": np.zeros((3, 2))}, "vv_minus and vv_plus both given with one shape"),
    ],
    ids=["target", "cvf-length", "neuron-triples", "nvf-alone", "vv-1d", "vv-half"],
)
def test_layer_result_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_layer(**kwargs)


def test_from_layers_mvfs_and_eq15() -> None:
    a0 = make_layer(0, "activations", cvf=(0.2,), channels=(0,), n_neurons=30, n_weights=10)
    w0 = make_layer(0, "weights", cvf=(0.6,), channels=(0,), n_neurons=30, n_weights=10)
    a1 = make_layer(1, "activations", cvf=(0.4,), channels=(0,), n_neurons=5, n_weights=15)
    w1 = make_layer(1, "weights", cvf=(0.8,), channels=(0,), n_neurons=5, n_weights=15)
    result = VulnerabilityResult.from_layers("deepvigor", [a0, w0, a1, w1])
    assert result.mvf_activations == pytest.approx(0.3)
    assert result.mvf_weights == pytest.approx(0.7)
    eq15 = ((30 * 0.2 + 10 * 0.6) / 40 + (5 * 0.4 + 15 * 0.8) / 20) / 2
    assert result.mvf_total == pytest.approx(eq15)
    partial = VulnerabilityResult.from_layers("deepvigor", [a0, w0, a1])
    assert partial.mvf_total is None and partial.mvf_weights == pytest.approx(0.6)
    assert VulnerabilityResult.from_layers("exhaustive", [w1]).mvf_activations is None


def test_layer_lookup_and_lvf() -> None:
    result = rich_result()
    assert result.layer(0, "weights").counts == OutcomeCounts(10, 3, 2, 1)
    assert result.lvf("weights") == {0: pytest.approx(0.3)}
    assert result.lvf("activations")[0] == 0.625
    with pytest.raises(KeyError, match=r"no layer 5 with target 'weights'; present: \[\(0,"):
        result.layer(5, "weights")
    with pytest.raises(ValueError, match="expected target in"):
        result.lvf("neurons")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"method": "random"}, ValueError, "expected method in .*got 'random'"),
        ({"layers": (make_layer(), make_layer())}, ValueError, r"one LayerResult per \(layer_num"),
        ({"options": {"e": math.nan}}, ValueError, r"finite float in options\['e'\]"),
        ({"options": {"dtype": torch.float32}}, TypeError, r"JSON values .* options\['dtype'\]"),
        ({"options": {1: "x"}}, TypeError, "expected str keys in options"),
        ({"schema_version": SCHEMA_VERSION + 1}, ValueError, "newer than this package's"),
    ],
    ids=["method", "duplicate-layer", "nan-option", "object-option", "int-key", "schema"],
)
def test_vulnerability_result_validation(kwargs: dict, error: type[Exception], match: str) -> None:
    base = {"method": "deepvigor", "layers": (), "mvf_activations": None}
    base.update({"mvf_weights": None, "mvf_total": None})
    with pytest.raises(error, match=match):
        VulnerabilityResult(**{**base, **kwargs})


def _reject_constant(token: str) -> float:
    raise AssertionError(f"non-strict JSON token {token}")


def test_json_round_trip_keeps_everything(tmp_path: Path) -> None:
    result = rich_result()
    text = result.to_json(tmp_path / "result.json")
    data = json.loads(text, parse_constant=_reject_constant)  # strict JSON: no NaN tokens
    assert (
        data["schema_version"] == SCHEMA_VERSION and data["layers"][0]["cvf_spread"] == "-Infinity"
    )
    assert data["layers"][0]["vv_plus"]["data"][2] == "NaN"
    for loaded in (
        VulnerabilityResult.from_json(text),
        VulnerabilityResult.from_json(tmp_path / "result.json"),
        VulnerabilityResult.from_json(str(tmp_path / "result.json")),
        VulnerabilityResult.from_dict(json.loads(json.dumps(result.to_dict()))),
    ):
        assert loaded == result
        act = loaded.layer(0, "activations")
        assert act.vv_plus is not None and act.vv_plus.dtype == np.float64
        assert act.edm is not None and act.edm.dtype == np.int64 and act.edm.shape == (2, 3, 4)
        assert np.array_equal(act.edm, np.arange(24).reshape(2, 3, 4))
        assert act.cvf[0] == 1.0 and act.cvf_spread == -math.inf
        assert loaded.options["nested"]["k"] == (1, 2) and loaded.seed == 7
        assert set(loaded.versions) == {"torch", "pytorchfi", "pytorchfi-deepvigor"}
        assert loaded.unsupported == ("features.3 (Conv3d)",)


def test_equality_sees_array_and_nan_differences() -> None:
    result = rich_result()
    act = result.layer(0, "activations")
    changed = replace(act, vv_minus=np.array([[-1.0, -np.inf], [-0.5, -3.0]]))
    assert changed != act
    assert replace(act, cvf=(0.0, 0.25)) != act
    assert replace(act, edm=act.edm.astype(np.int32)) != act  # type: ignore[union-attr]
    assert replace(result, seed=8) != result


def test_layer_names_that_look_like_numbers_survive() -> None:
    layer = make_layer(name="NaN", kind="Infinity")
    loaded = LayerResult.from_dict(json.loads(json.dumps(layer.to_dict())))
    assert loaded.name == "NaN" and loaded.kind == "Infinity" and loaded == layer


def _pair_results() -> tuple[VulnerabilityResult, VulnerabilityResult]:
    analysis = VulnerabilityResult.from_layers(
        "deepvigor",
        [
            make_layer(0, "weights", channels=(0, 1, 2, 3), cvf=(0.1, 0.2, 0.3, 0.4)),
            make_layer(1, "weights", channels=(0,), cvf=(0.9,)),
            make_layer(0, "activations", channels=(0,), cvf=(0.5,)),
        ],
    )
    fi = VulnerabilityResult.from_layers(
        "exhaustive",
        [
            make_layer(0, "weights", channels=(3, 1, 0), cvf=(0.45, 0.2, 0.3)),
            make_layer(0, "activations", channels=(0,), cvf=(0.4,)),
        ],
    )
    return analysis, fi


def test_compare_matches_by_layer_target_channel() -> None:
    analysis, fi = _pair_results()
    c = compare(analysis, fi, target="weights")
    assert c.n_channels == 3
    assert [(p.layer_num, p.channel) for p in c.pairs] == [(0, 0), (0, 1), (0, 3)]
    errors = [0.2, 0.0, 0.05]
    assert c.mae == pytest.approx(sum(errors) / 3) and c.max_abs_err == pytest.approx(0.2)
    assert c.spearman == pytest.approx(stats.spearmanr([0.1, 0.2, 0.4], [0.3, 0.2, 0.45])[0])
    everything = compare(analysis, fi)
    assert everything.n_channels == 4 and everything.max_abs_err == pytest.approx(0.2)


def test_compare_constant_side_gives_nan_spearman() -> None:
    analysis, fi = _pair_results()
    single = compare(analysis, fi, target="activations")
    assert single.n_channels == 1 and single.mae == pytest.approx(0.1)
    assert math.isnan(single.spearman)


def test_compare_errors_name_the_reason() -> None:
    analysis, fi = _pair_results()
    with pytest.raises(ValueError, match=r"no channel is present in both results for target 'st"):
        compare(analysis, fi, target="stored")
    other = VulnerabilityResult.from_layers("exhaustive", [make_layer(7, channels=(0,), cvf=(1,))])
    with pytest.raises(ValueError, match=r"b has 1 in layers \[\(7, 'weights'\)\]"):
        compare(analysis, other)
    with pytest.raises(ValueError, match="expected target in .* or None, got 'bias'"):
        compare(analysis, fi, target="bias")


def test_mvf_helper() -> None:
    assert mvf([0.2, 0.4]) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="at least one LVF"):
        mvf([])


def test_results_are_unhashable_since_they_hold_arrays() -> None:
    with pytest.raises(TypeError, match="unhashable"):
        hash(make_layer())
    with pytest.raises(TypeError, match="unhashable"):
        hash(rich_result())


def test_layer_cost_round_trip_old_files_and_timings() -> None:
    result = rich_result()
    data = result.to_dict()
    assert data["layers"][1]["cost"] == {
        "batched_forwards": 2,
        "image_evaluations": 200,
        "backwards": 0,
        "faults": 16,
        "wall_time_s": 0.5,
    }
    del data["layers"][1]["cost"]  # a file written before per-layer costs were recorded
    assert VulnerabilityResult.from_dict(data).layers[1].cost is None
    with pytest.raises(TypeError, match="cost as a Cost"):
        make_layer(cost={"faults": 1})
    clean = result.without_timings()
    assert clean.cost.wall_time_s == 0.0 and clean.created == ""
    assert clean.layers[1].cost == replace(result.layers[1].cost, wall_time_s=0.0)
    assert clean.layers[0].cost is None and clean.layers[0] == result.layers[0]


def _edit(path: tuple[object, ...], value: object) -> dict:
    """rich_result()'s dict with one value replaced (``...`` deletes the key)."""
    data = rich_result().to_dict()
    node = data
    for key in path[:-1]:
        node = node[key]  # type: ignore[index]
    if value is ...:
        del node[path[-1]]  # type: ignore[arg-type]
    else:
        node[path[-1]] = value  # type: ignore[index]
    return data


@pytest.mark.parametrize(
    ("path", "value", "match"),
    [
        (("layers", 0, "lvf"), 5.0, r"layers\[0\]\.lvf: expected a VF in \[0, 1\], got 5\.0"),
        (("layers", 0, "cvf", 0), "NaN", r"layers\[0\]\.cvf\[0\]: expected a VF in \[0, 1\], got 'NaN'"),
        (("layers", 1, "cvf", 2), -0.1, r"layers\[1\]\.cvf\[2\]: expected a VF in \[0, 1\], got -0\.1"),
        (("layers", 0, "layer_num"), "zero", r"layers\[0\]\.layer_num: expected an int >= 0, got 'zero'"),
        (("mvf_weights",), "x", "mvf_weights: expected a number, got 'x'"),
        (("schema_version",), ..., r"missing fields \['schema_version'\]"),
        (("schema_version",), "1", "schema_version: expected an int >= 1, got '1'"),
        (("layers", 0, "edm", "dtype"), "|O", r"layers\[0\]\.edm\.dtype: expected a bool, int or float"),
        (("layers", 0, "edm", "data"), [1, 2], r"layers\[0\]\.edm\.data: expected 24 values for shape"),
        (("layers", 0, "cvf"), [0.5], r"layers\[0\]\.cvf: expected one VF per channel \(2\), got 1"),
        (("layers", 1, "counts", "due"), -1, r"layers\[1\]\.counts\.due: expected an int >= 0"),
        (("layers", 1, "target"), "bias", r"layers\[1\]\.target: expected one of"),
        (("colour",), "red", r"unknown fields \['colour'\]"),
        (("method",), 3, "method: expected one of"),
        (("ranks",), [{"rank": "0", "device": "cpu"}], r"ranks\[0\]\.rank: expected an int"),
    ],
    ids=["lvf-5", "cvf-nan", "cvf-negative", "layer-num-str", "mvf-str", "no-schema",
         "schema-str", "object-dtype", "array-length", "cvf-length", "negative-count",
         "target", "unknown-field", "method", "rank"],
)  # fmt: skip
def test_from_dict_refuses_what_to_dict_cannot_write(path, value, match) -> None:
    data = _edit(path, value)
    with pytest.raises(ValueError, match=match):
        VulnerabilityResult.from_dict(data)
    with pytest.raises(ValueError, match="result JSON: " + match):
        VulnerabilityResult.from_json(json.dumps(data))


def test_constructor_refuses_vfs_outside_zero_one() -> None:
    with pytest.raises(ValueError, match=r"expected every cvf in \[0, 1\], got nan"):
        make_layer(cvf=(math.nan, 0.2, 0.3))
    with pytest.raises(ValueError, match=r"expected every lvf in \[0, 1\], got 5.0"):
        make_layer(lvf=5.0)


def test_from_json_names_the_file_and_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    text = rich_result().to_json()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match=rf"result file {path} is not valid JSON .*truncated"):
        VulnerabilityResult.from_json(path)
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object .*got a list"):
        VulnerabilityResult.from_json(path)
    path.write_text(json.dumps({"format": "pytorchfi-deepvigor comparison", "schema_version": 1}))
    with pytest.raises(ValueError, match=r"this is a comparison \(comparison.json"):
        VulnerabilityResult.from_json(str(path))


@pytest.mark.parametrize("bad", [{}, None, "result.json"], ids=["dict", "none", "str"])
def test_compare_names_the_argument_that_is_not_a_result(bad) -> None:
    analysis, _ = _pair_results()
    with pytest.raises(
        TypeError, match=f"expected b as a VulnerabilityResult .*got {type(bad).__name__}"
    ):
        compare(analysis, bad)
    with pytest.raises(TypeError, match="expected a as a VulnerabilityResult"):
        compare(bad, analysis)


def test_compare_records_what_it_compared_and_warns_on_differences() -> None:
    analysis, fi = _pair_results()
    c = compare(analysis, fi, target="weights")
    assert c.a is not None and c.b is not None and c.warnings == ()
    assert c.a.layers == ((0, "weights"), (1, "weights")) and c.b.layers == ((0, "weights"),)
    assert c.a.method == "deepvigor" and c.b.method == "exhaustive"
    other = replace(fi, model_name="resnet18", n_images=50)
    with pytest.warns(ComparisonWarning) as caught:
        c = compare(replace(analysis, model_name="vgg11", n_images=100), other)
    assert len(caught) == 2 and len(c.warnings) == 2
    assert "different models: 'vgg11' and 'resnet18'" in c.warnings[0]
    assert "different image counts: 100 and 50" in c.warnings[1]
    moved = VulnerabilityResult.from_layers(
        "exhaustive", [make_layer(0, channels=(0,), cvf=(0.5,), name="fc", kind="Linear")]
    )
    with pytest.raises(ValueError, match="layer 0 is layer0 .* but fc .*different models"):
        compare(analysis, moved)
