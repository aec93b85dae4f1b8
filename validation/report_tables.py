"""Markdown renderers of the validation tables, each beside the paper's numbers (``paper.py``).

VFs and errors are rendered in % (the CSVs hold fractions); counts with thousands separators.
"""

from __future__ import annotations

from pathlib import Path

from validation import paper

__all__ = [
    "batch_line",
    "display_model",
    "relabel_table3",
    "table3_sets_line",
    "checks",
    "figures",
    "models_section",
    "sfi_runs",
    "table",
    "table3",
    "table4",
    "table4_layers",
    "table5",
    "table6",
    "times",
]

Rows = list[dict[str, str]]


def pct(value: str | float, digits: int = 3) -> str:
    """A fraction as a percentage string ('' stays '', 'nan' stays 'nan')."""
    if value in ("", None) or str(value) == "nan":
        return str(value or "")
    return f"{100 * float(value):.{digits}f}"


def num(value: str | float, digits: int = 0) -> str:
    """A count with thousands separators."""
    if value in ("", None):
        return ""
    return f"{float(value):,.{digits}f}"


def table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def models_section(rows: Rows) -> str:
    body = [
        [
            r["model"],
            f"1/{round(1 / float(r['width']))}",
            f"{r['input_size']}x{r['input_size']}",
            r["epochs"],
            pct(r["test_accuracy"], 1),
            r["layers"],
            num(r["channels"]),
            num(r["neurons"]),
            num(r["weights"]),
        ]
        for r in rows
    ]
    head = [
        "model",
        "width",
        "input",
        "epochs",
        "test acc. (%)",
        "layers",
        "channels",
        "neurons/image",
        "weights",
    ]
    return table(head, body)


def batch_line(rows: Rows) -> str:
    """The analysis batch and seed, from models.csv."""
    if not rows:
        return ""
    return (
        f"\nAnalysis batch: the first {rows[0]['images']} digits test images, the golden "
        f"top-1 as reference; seed {rows[0]['seed']} for every draw.\n"
    )


def _signed(pairs: Rows, r: dict[str, str], weights: bool) -> str:
    """Mean of analysis minus FI over the variant's pairs, and the share of pairs below FI."""
    a, b = ("cvf_analysis", "cvf_fi") if weights else ("nvf_analysis", "nvf_fi")
    mine = [
        p
        for p in pairs
        if p["model"] == r["model"]
        and p["search"] == r["search"]
        and p.get("aggregate", "n/a") == r["aggregate"]
    ]
    if not mine:
        return ""
    diff = [float(p[a]) - float(p[b]) for p in mine]
    below = sum(d < 0 for d in diff)
    return f"{100 * sum(diff) / len(diff):+.3f} ({below}/{len(diff)} below)"


DATASET_LABELS = {"digits": "digits", "fashion-mnist": "Fashion-MNIST"}


def display_model(row: dict[str, str]) -> str:
    """The model as REPORT.md names it: plain for the validation set, else width and data set."""
    if row.get("set", "validation") in ("validation", ""):
        return row["model"]
    data = DATASET_LABELS.get(row.get("dataset", ""), row.get("dataset", ""))
    return f"{row['model']} w{row['width']} {data}"


def relabel_table3(rows: Rows) -> Rows:
    """Table III rows with ``model`` replaced by :func:`display_model` (the CSVs keep both)."""
    return [{**r, "model": display_model(r)} for r in rows]


def table3_sets_line(coverage: Rows) -> str:
    """Which model sets Table III holds (from the coverage CSV's ``set`` and ``budget``)."""
    seen: dict[str, dict[str, None]] = {}
    for c in coverage:
        seen.setdefault(c.get("set") or "validation", {})[c.get("budget", "")] = None
    if not seen:
        return ""
    items = "; ".join(
        f"`{name}` (FI budget per model: {' or '.join(budgets)})" for name, budgets in seen.items()
    )
    return f"Model sets: {items}.\n\n"


def table3(rows: Rows, coverage: Rows, pairs: Rows, weights: bool) -> str:
    body = []
    for r in rows:
        ref = paper.TABLE3_MAE_PCT.get(r["model"], "") if weights and r["search"] == "paper" else ""
        body.append(
            [
                r["model"],
                r["search"] + (" **(default)**" if r.get("default") == "yes" else ""),
                r["aggregate"],
                r["channels"],
                pct(r["mae"]),
                pct(r["max_abs_err"]),
                f"{float(r['spearman']):.3f}",
                _signed(pairs, r, weights),
                ref,
            ]
        )
    head = [
        "model",
        "search",
        "aggregate",
        "channels" if weights else "neurons",
        "MAE (%)",
        "max err (%)",
        "Spearman",
        "analysis - FI, mean (%)",
        "paper MAE (%)",
    ]
    unit = "channels" if weights else "neurons"
    cov = table(
        [
            "model",
            "layers with FI / analysed",
            f"{unit} FI / drawn",
            "channels per layer with FI",
            "faults",
            "FI seconds",
        ],
        [
            [
                c["model"],
                f"{c['layers_with_fi']} / {c['layers']}",
                f"{c[f'{unit}_fi']} / {c[f'{unit}_15pct']}",
                c.get("channels_per_layer", ""),
                num(c["faults_fi"]),
                num(c["fi_seconds"]),
            ]
            for c in coverage
        ],
    )
    what = "weight of each channel" if weights else "operand of each neuron"
    drawn = (
        "drawn: the paper's 15% of every layer for the validation set, the set's channels per "
        "layer for the others; the round-robin over layers keeps what fits the budget"
    )
    return (
        f"{table3_sets_line(coverage)}{table(head, body)}\n\nFI coverage (every bit of every "
        f"{what}; {drawn}):\n\n{cov}"
    )


def table4(rows: Rows) -> str:
    body = []
    for r in rows:
        ref = paper.TABLE4_PCT.get(r["model"], {}).get((r["target"], round(float(r["ratio"]), 2)))
        body.append(
            [
                r["model"],
                r["target"],
                f"{100 * float(r['ratio']):.0f}%",
                pct(r["mae_cvf"], 4),
                pct(r["max_cvf"]),
                pct(r["mae_lvf"], 4),
                pct(r["max_lvf"]),
                " / ".join(f"{v:g}" for v in ref) if ref else "",
            ]
        )
    head = [
        "model",
        "target",
        "ratio",
        "MAE CVF (%)",
        "max CVF (%)",
        "MAE LVF (%)",
        "max LVF (%)",
        "paper: MAE CVF / max CVF / MAE LVF / max LVF (%)",
    ]
    return table(head, body)


def table4_layers(layers: Rows, rows: Rows) -> str:
    """Per model and target: channels a 10% draw takes, and the LVF error they predict."""
    body = []
    for r in rows:
        if abs(float(r["ratio"]) - 0.10) > 1e-9:
            continue
        mine = [x for x in layers if x["model"] == r["model"] and x["target"] == r["target"]]
        if not mine:
            continue
        k = sorted(int(x["sampled_channels_10"]) for x in mine)
        c = sorted(int(x["channels"]) for x in mine)
        predicted = sum(float(x["predicted_lvf_err_10"]) for x in mine) / len(mine)
        body.append(
            [
                r["model"],
                r["target"],
                f"{c[len(c) // 2]}",
                f"{k[len(k) // 2]}",
                f"{sum(v <= 2 for v in k)} / {len(k)}",
                pct(predicted, 4),
                pct(r["mae_lvf"], 4),
            ]
        )
    head = [
        "model",
        "target",
        "median channels per layer",
        "median channels drawn at 10%",
        "layers with <= 2 drawn",
        "predicted LVF MAE (%)",
        "observed LVF MAE (%)",
    ]
    return table(head, body)


def checks(rows: Rows) -> str:
    """One sentence on the Table IV shortcut checks."""
    equal = sum(r["equal"] == "True" for r in rows)
    worst = max(
        [float(r["max_diff_cvf"]) for r in rows] + [float(r["max_diff_lvf"]) for r in rows],
        default=0.0,
    )
    return (
        f"The derived sampled analyses were checked against {len(rows)} real sampled "
        f"analyses: {equal} identical, largest |difference| of a CVF or LVF {worst:.3g}."
    )


def table5(rows: Rows) -> str:
    body = []
    for r in rows:
        ref = paper.TABLE5.get(r["model"], {}).get(r["target"])
        body.append(
            [
                r["model"],
                r["target"],
                num(r["exhaustive_fi"]),
                num(r["exhaustive_fi_stored"]),
                num(r["analysis_complete"]),
                num(r["analysis_batched_forwards"]),
                num(r["ratio"], 1),
                f"{ref[0]:,} / {ref[1]:,} ({ref[0] / ref[1]:,.1f}x)" if ref else "",
            ]
        )
    head = [
        "model",
        "target",
        "exhaustive FI",
        "exh. FI, stored count",
        "complete analysis",
        "batched forwards",
        "ratio",
        "paper: exhaustive / DeepVigor+ (ratio)",
    ]
    return table(head, body)


def table6(rows: Rows) -> str:
    body = []
    for r in rows:
        ref = paper.TABLE6.get(r["model"], {})
        if r["target"] == "total" and ref:
            p = tuple(a + w for a, w in zip(ref["activations"], ref["weights"], strict=True))
        else:
            p = ref.get(r["target"])
        body.append(
            [
                r["model"],
                r["target"],
                num(r["sfi_layer"]),
                num(r["sfi_data_unaware"]),
                num(r["sfi_data_aware"]),
                num(r["sfi_data_aware_ruospo"]),
                num(r["sampled_10"]),
                num(r["ratio_data_aware"], 1),
                num(r["ratio_data_aware_ruospo"], 1),
                f"{p[0]:,} / {p[1]:,} / {p[2]:,} / {p[3]:,} ({p[2] / p[3]:.1f}x)" if p else "",
            ]
        )
    head = [
        "model",
        "target",
        "SFI layer",
        "SFI data-unaware",
        "SFI data-aware",
        "SFI data-aware (Ruospo prior)",
        "sampled 10%",
        "data-aware / sampled",
        "Ruospo / sampled",
        "paper: layer / unaware / aware / sampled (ratio)",
    ]
    return table(head, body)


def sfi_runs(rows: Rows) -> str:
    body = [
        [
            r["model"],
            r["target"],
            f"{r['layer']} ({r['layer_name']})",
            r["variant"],
            num(r["population"]),
            num(r["faults"]),
            pct(r["lvf_sfi"]),
            pct(r["margin"]),
            pct(r["lvf_exhaustive"]),
            pct(r["abs_err"]),
            r["within_margin"],
        ]
        for r in rows
    ]
    head = [
        "model",
        "target",
        "layer",
        "SFI",
        "population",
        "faults",
        "LVF SFI (%)",
        "margin (%)",
        "LVF exhaustive (%)",
        "abs err (%)",
        "within margin",
    ]
    return table(head, body)


def times(rows: Rows) -> str:
    body = []
    for r in rows:
        ref = paper.TIMES_S.get(r["model"], {}).get(r["target"])
        index = 4 if r["ratio"] == "complete" else [0.05, 0.1, 0.15, 0.2].index(float(r["ratio"]))
        label = "complete" if r["ratio"] == "complete" else f"{100 * float(r['ratio']):.0f}%"
        body.append(
            [
                r["model"],
                r["target"],
                label,
                num(r["seconds"], 1),
                num(r["simulations"]),
                r["load_1min"] and f"{float(r['load_1min']):.1f}",
                f"{ref[index]:,}" if ref else "",
            ]
        )
    head = [
        "model",
        "target",
        "ratio",
        "seconds (this CPU)",
        "simulations",
        "load (1 min)",
        "paper seconds (A100)",
    ]
    machine = rows[0]["machine"] if rows else ""
    return f"Machine: {machine}.\n\n" + table(head, body)


def figures(mvf: Rows, batches: Rows, folder: Path) -> str:
    body = [
        [
            r["model"],
            pct(r["mvf_activations"]),
            pct(r["mvf_weights"]),
            pct(r["mvf_total"]),
            paper.MVF_PCT.get(r["model"], ""),
        ]
        for r in mvf
    ]
    out = table(
        ["model", "MVF act. (%)", "MVF weights (%)", "MVF total (%)", "paper MVF total (%)"], body
    )
    spread = []
    for model in dict.fromkeys(r["model"] for r in batches):
        values = [100 * float(r["mvf_total"]) for r in batches if r["model"] == model]
        spread.append(
            [
                model,
                len(values),
                f"{min(values):.3f}",
                f"{max(values):.3f}",
                f"{max(values) - min(values):.3f}",
            ]
        )
    out += "\n\nFig. 10 (total MVF of the 10% sampled analysis per batch of 100 images):\n\n"
    out += table(["model", "batches", "min (%)", "max (%)", "range (%)"], spread)
    pictures = " ".join(f"![{p.stem}]({p.name})" for p in sorted(folder.glob("fig8_*.png")))
    return out + "\n\n" + pictures + "\n\n![fig9](fig9_mvf.png) ![fig10](fig10_batches.png)"


def what_each_part_buys(t3w: Rows, t3a: Rows, outside: Rows) -> str:
    """Issue 16: MAE per model of each step from the paper's analysis to the default."""
    steps = [
        ("weights", "paper", "position", "paper"),
        ("weights", "extended", "position", "+ extended grid"),
        ("weights", "fine", "position", "+ fine, checked search"),
        ("weights", "fine", "gradient", "+ first-order model"),
        ("weights", "fine", "equivalent", "+ mean / signed-parts model (default)"),
        ("operands", "paper", "n/a", "operands: paper"),
        ("operands", "extended", "n/a", "operands: extended"),
        ("operands", "fine", "n/a", "operands: fine (default)"),
    ]
    lookup: dict[tuple[str, str, str, str], dict[str, str]] = {}
    models: list[str] = []
    for target, rows in (("weights", t3w), ("operands", t3a)):
        for r in rows:
            lookup[(r["model"], target, r["search"], r["aggregate"])] = r
            models.append(r["model"])
    for r in outside:
        name = f"{r['model']} (Fashion-MNIST, outside the zoo)"
        lookup[(name, r["target"], r["search"], r["aggregate"])] = r
        models.append(name)
    models = list(dict.fromkeys(models))
    body = []
    for m in models:
        cells = [m]
        for target, search, aggregate, _ in steps:
            r = lookup.get((m, target, search, aggregate))
            cells.append("" if r is None else f"{pct(r['mae'])} / {float(r['spearman']):.2f}")
        body.append(cells)
    return table(["model", *[s[3] for s in steps]], body)
