"""Smoke test of the validation suite: every script in ``--quick`` mode, as a subprocess.

The first script trains the quick model into a shared temporary cache; the others then run side
by side. Each output CSV must have the columns issue 6 fixes and VFs/errors that are fractions.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from validation.analyses import pick_within_budget  # noqa: E402
from validation.run_all import COST_HINT, groups  # noqa: E402

SCRIPTS = (
    "table3_activations",
    "table4_sampling",
    "table5_6_sims",
    "times",
    "figures",
    "fault_models",
    "hardening",
)
TABLE3 = [
    "model",
    "set",
    "dataset",
    "width",
    "input_size",
    "search",
    "aggregate",
    "default",
    "channels",
    "mae",
    "signed_err",
    "max_abs_err",
    "spearman",
]
FRACTIONS = {
    "table3_weights": ["mae", "max_abs_err"],
    "table3_activations": ["mae", "max_abs_err"],
    "table3_weights_pairs": ["cvf_analysis", "cvf_fi", "abs_err"],
    "table4_sampling": ["mae_cvf", "max_cvf", "mae_lvf", "max_lvf"],
    "table6_sfi_runs": ["lvf_sfi", "margin", "lvf_exhaustive", "abs_err"],
    "fig8_lvf": ["lvf_activations", "lvf_weights", "lvf_total"],
    "fig9_mvf": ["mvf_activations", "mvf_weights", "mvf_total"],
    "fig10_batches": ["mvf_activations", "mvf_weights", "mvf_total"],
}


def _command(script: str, out: Path, cache: Path) -> list[str]:
    path = ROOT / "validation" / f"{script}.py"
    return [sys.executable, str(path), "--quick", "--out", str(out), "--cache-dir", str(cache)]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("validation")
    out, cache = base / "out", base / "cache"
    first = subprocess.run(_command("table3_weights", out, cache), capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-3000:]
    procs = [
        subprocess.Popen(_command(s, out, cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for s in SCRIPTS
    ]
    for script, proc in zip(SCRIPTS, procs, strict=True):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{script}: {err.decode()[-3000:]}"
    runner = [
        sys.executable,
        str(ROOT / "validation" / "run_all.py"),
        "--quick",
        "--out",
        str(out),
        "--cache-dir",
        str(cache),
        "--only",
        "report",
    ]
    done = subprocess.run(runner, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def _rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as stream:
        reader = csv.DictReader(stream)
        return list(reader.fieldnames or []), list(reader)


@pytest.mark.parametrize("table", ["table3_weights", "table3_activations"])
def test_table3_columns(outputs: Path, table: str) -> None:
    columns, rows = _rows(outputs / f"{table}.csv")
    assert columns == TABLE3
    searches = {r["search"] for r in rows}
    assert searches == {"paper", "extended", "fine"}
    defaults = [r for r in rows if r["default"] == "yes"]  # exactly one row: the package's
    assert [r["search"] for r in defaults] == ["fine"]


def test_table3_weights_has_every_variant(outputs: Path) -> None:
    _, rows = _rows(outputs / "table3_weights.csv")
    assert {(r["search"], r["aggregate"]) for r in rows} == {
        *((s, a) for s in ("paper", "extended") for a in ("position", "fault")),
        ("fine", "position"),
        ("fine", "gradient"),
        ("fine", "equivalent"),
    }
    assert [(r["search"], r["aggregate"]) for r in rows if r["default"]] == [("fine", "equivalent")]


@pytest.mark.parametrize("table", sorted(FRACTIONS))
def test_vf_columns_are_fractions(outputs: Path, table: str) -> None:
    _, rows = _rows(outputs / f"{table}.csv")
    assert rows
    values = np.array([float(r[c]) for r in rows for c in FRACTIONS[table]])
    assert ((values >= 0) & (values <= 1)).all()


def test_table4_shortcut_verified(outputs: Path) -> None:
    _, rows = _rows(outputs / "table4_sampling.csv")
    assert sorted({float(r["ratio"]) for r in rows}) == [0.05, 0.1, 0.15, 0.2]
    _, checks = _rows(outputs / "table4_verification.csv")
    assert checks and all(r["equal"] == "True" for r in checks)


def test_table5_6_ratios(outputs: Path) -> None:
    _, t5 = _rows(outputs / "table5_sims.csv")
    assert {r["target"] for r in t5} == {"activations", "weights"}
    for r in t5:
        assert float(r["ratio"]) == pytest.approx(
            float(r["exhaustive_fi"]) / float(r["analysis_complete"]), rel=1e-4
        )
    _, t6 = _rows(outputs / "table6_sfi.csv")
    total = next(r for r in t6 if r["target"] == "total")
    parts = [r for r in t6 if r["target"] != "total"]
    assert float(total["sfi_data_aware"]) == sum(float(r["sfi_data_aware"]) for r in parts)


def test_figures_and_report(outputs: Path) -> None:
    for name in ("fig8_lvf_vgg11.png", "fig9_mvf.png", "fig10_batches.png", "times.csv"):
        assert (outputs / name).stat().st_size > 0
    report = (outputs / "REPORT.md").read_text()
    assert "## Targets (issues 6 and 16)" in report and "## Table VI" in report
    assert "## Fault models and number formats (issue 23)" in report and "### Bit maps" in report


def test_fault_models_rows(outputs: Path) -> None:
    _, rows = _rows(outputs / "fault_models.csv")
    cases = {(r["case"], r["target"]) for r in rows}
    assert ("fp16", "weights") in cases and ("pytorchfi-int8", "stored") in cases
    for r in rows:
        assert 0.0 <= float(r["mae_pts"]) <= float(r["max_err_pts"]) <= 100.0
        if r["oracle_faults"]:
            assert int(r["oracle_faults"]) > 0 and r["oracle_mismatches"] == "0", r


def test_hardening_rows(outputs: Path) -> None:
    _, rows = _rows(outputs / "hardening.csv")
    strategies = {r["strategy"] for r in rows}
    assert strategies == {"unprotected", "planner", "first-layers", "weights", "random"}
    verified = [r for r in rows if r["held"]]
    assert len(verified) == 6 and all(r["sfi_mvf"] and r["analysis_mvf"] for r in verified)
    for r in rows:
        if r["strategy"] != "unprotected":
            budget = float(r["budget"])
            assert (
                float(r["overhead_macs"]) <= budget + 1e-9
                and float(r["overhead_memory"]) <= budget + 1e-9
            )
            assert float(r["predicted_mvf"]) <= float(r["baseline_mvf"]) + 1e-12
    assert (
        "## Hardening: plans and their verification (issue 24)"
        in (outputs / "REPORT.md").read_text()
    )


def test_pick_within_budget_round_robin() -> None:
    candidates = {0: [("a", 5), ("b", 5)], 1: [("c", 8)], 2: [("d", 1), ("e", 1)]}
    picks = pick_within_budget(candidates, 12, np.random.default_rng(0))
    spent = sum(
        cost for n, items in candidates.items() for s, cost in items if s in picks.get(n, [])
    )
    assert spent <= 12 and all(picks.values())
    with pytest.raises(ValueError, match="fault budget >= 1"):
        pick_within_budget(candidates, 0, np.random.default_rng(0))


def test_groups_balance_cost() -> None:
    keys = ["vgg11", "vgg16", "resnet18", "mobilenetv2"]
    split = groups(keys, 2)
    assert sorted(k for g in split for k in g) == sorted(keys) and len(split) == 2
    loads = [sum(COST_HINT[k] for k in g) for g in split]
    assert abs(loads[0] - loads[1]) <= max(COST_HINT.values())
    assert groups(["vgg11"], 4) == [["vgg11"]]


def test_ground_truth_section_states_mismatches() -> None:
    from validation.report_ground_truth import ground_truth

    rows = [
        {"model": "m", "layer": "c", "kind": "Conv2d", "target": "weights", "fault_model": "flip",
         "faults": "64", "pairs": "768", "critical": "10", "mismatches": "0", "masked_sdc": "1",
         "seconds": "1"},
        {"model": "m", "layer": "c", "kind": "Conv2d", "target": "probes",
         "fault_model": "neuron/channel error", "faults": "42", "pairs": "504", "critical": "3",
         "mismatches": "2", "masked_sdc": "", "seconds": "1"},
    ]  # fmt: skip
    text = ground_truth(rows, [{"model": "resnet18", "faults": "396", "mismatches": "0",
                                "extreme_faults": "54"}])  # fmt: skip
    assert "106 faults and probes, 2 mismatches" in text
    assert "1 models rerun so far (resnet18): 396 faults of which 54 extreme, 0 mismatches" in text
    assert "No `ground_truth.csv`" in ground_truth([], [])
