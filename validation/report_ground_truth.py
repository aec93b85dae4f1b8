"""The ground-truth section of REPORT.md (issue 21), from ``ground_truth.csv`` and
``coverage.csv``."""

from __future__ import annotations

from validation.report_tables import num, table

__all__ = ["ground_truth"]

Rows = list[dict[str, str]]

FIXED = """What the oracle found, and what was fixed (each a failing test on fd195da, the main of
2026-12-06: 14 of the first 23 tests of `tests/test_ground_truth.py` (the suite has grown
since, with the cases a review of the fixes found) and all 5 of
`tests/test_ground_truth_timm.py` failed there):

- **Layouts.** The CPU engine ran every suffix channels-last. `GroupNorm`'s channels-last
  kernel gives NaN where the contiguous one is finite (one value of 2^76 or more in a group:
  every image critical through the engine, 16 of 50 through the model on the regression
  test), and ops after a flatten or a transpose into tokens read other strides than in the
  model (reductions and adds in another order: a channel map of 2^32 moved the logits by 6.8).
  Now the engine runs channels-last only along convolutions, BatchNorm, pooling, elementwise
  activations, adds and concatenations (each swept under extreme values by
  `tests/test_engine_layouts.py`); every other op reads its inputs laid out in the dim order
  of the model's own forward (recorded on two of the user's images: contiguous, or
  channels-last after a `permute(0, 3, 1, 2)` or for channels-last images), and where an
  in-place op writes through a view of such an input the engine keeps the model's layout
  throughout.
- **In-place ops.** A layer whose output reaches the logits only through an in-place op
  (`y.add_(layer(x))`) is live (it runs on the hook path, the model's own forward); the first
  version of the dead-layer check below counted it dead.
- **Weights applied by the layer's own forward.** A layer whose forward is not the plain
  product of its stored weight (timm's `StdConv2d` and `ScaledStdConv2d` standardise each
  filter) had its weight faults modelled as `(w' - w) * x`; they now run through its forward
  (`LayerInfo.weight_transform`), operand faults too; the analysis skips such layers and names
  them in `unsupported`. A weight a weight-norm hook recomputes before each forward is no fault
  site (a flip in it changes nothing): fault injection refuses it with the reason. Weights in
  channels-last memory are indexed by position (they crashed the catalogue).
- **Zero padding.** With a weight flipped to +-Inf the model's batched convolution is finite at
  zero-padded positions; the weight FI (and the first layers' ray search) added `d * 0` = NaN
  there. A padded position now adds nothing.
- **Outputs nobody reads.** A layer with no path to the output (the box head of a two-headed
  network whose class scores are returned) crashed the engine; it is now catalogued as `dead`,
  with every fault masked (VF 0) in the analysis and in FI.

Remaining deviation, by construction: the engine adds a weight or operand fault's exact delta
to the golden output where the model recomputes the dot product, so the two round differently;
it moves no fault across the critical line in the runs above, and moves faults between masked
and non-critical SDC only where the logits differ by about the masking tolerance (the
"masked/SDC" column). The model's own convolution gives NaN at zero padding with an Inf weight
when it runs one image at a time on some geometries (measured with torch 2.14 on this CPU:
3x3 dilated and 1-input-channel kernels at batch 1, never at 12 or more); the package follows
the batched kernel. An operand of a reflect- or circular-padded convolution is the operand of
one multiplication (a padded copy is its own operand), in the oracle and in the package."""


def ground_truth(rows: Rows, coverage: Rows, zoo: Rows | None = None) -> str:
    """Totals per model and target of the oracle comparison, the coverage matrix's oracle runs,
    and what was fixed."""
    if not rows:
        return "No `ground_truth.csv`: run `python validation/ground_truth.py`.\n"
    totals: dict[tuple[str, str], list[int]] = {}
    for r in rows:
        key = (r["model"], r["target"])
        t = totals.setdefault(key, [0, 0, 0, 0, 0, 0])
        t[0] += 1
        t[1] += int(r["faults"])
        t[2] += int(r["pairs"])
        t[3] += int(r["critical"])
        t[4] += int(r["mismatches"])
        t[5] += int(r["masked_sdc"] or 0)
    body = [
        [model, target, n, num(f), num(p), num(c), m, s if target != "probes" else ""]
        for (model, target), (n, f, p, c, m, s) in totals.items()
    ]
    all_faults = sum(t[1] for t in totals.values())
    all_bad = sum(t[4] for t in totals.values())
    parts = [
        "Every fault of the sites below (all 32 bits; bits 30, 29, 31 also stuck at 0 and 1) "
        "and the analysis' probes (an error of 1 .. 2^127, 3.4e38, +-Inf or NaN at one neuron "
        "or over one channel), evaluated by the package (`FaultEvaluator`, the one per-fault "
        "evaluation of every campaign, on the default engine) and by the oracle "
        "(`tests/oracle.py`: the fault written into the user's model, its own forward; it "
        "imports nothing from the package). Per catalogued layer: every weight of one channel, "
        "every operand of a border and an interior neuron, the first 16 stored values of one "
        "channel. Written by `python validation/ground_truth.py` "
        "(models: `tests/oracle_models.py`; timm's BiT/NFNet layers from the timm 1.0.31 "
        "wheel).\n",
        table(
            [
                "model",
                "target",
                "layers",
                "faults",
                "(fault, image) pairs",
                "critical (oracle)",
                "mismatches",
                "masked/SDC",
            ],
            body,
        ),  # fmt: skip
        f"\nIn all: {num(all_faults)} faults and probes, {all_bad} mismatches.\n",
    ]
    if zoo:
        per_model: dict[str, list[int]] = {}
        for r in zoo:
            t = per_model.setdefault(r["model"].removeprefix("zoo "), [0, 0])
            t[0] += int(r["faults"])
            t[1] += int(r["mismatches"])
        listed = ", ".join(f"{m} {num(f)} ({b})" for m, (f, b) in per_model.items())
        parts.append(
            "The zoo's architectures at the validation widths (random weights, 16 digits; "
            "`ground_truth.py --zoo`: six layers each, 3 sites per target, bits 22, 26, 28-31 "
            f"flipped and 30, 29 stuck at 0 and 1), faults (mismatches): {listed}. The same "
            "faults gave 0 mismatches on fd195da too, so the fixes below leave the zoo's "
            "Table III rows as they were.\n"
        )
    with_oracle = [r for r in coverage if r.get("extreme_faults")]
    if with_oracle:
        faults = sum(int(r["faults"]) for r in with_oracle)
        bad = sum(int(r["mismatches"] or 0) for r in with_oracle)
        extreme = sum(int(r["extreme_faults"]) for r in with_oracle)
        names = ", ".join(r["model"] for r in with_oracle)
        sources = "torchvision classifiers" + (
            " and timm models" if any(r["model"].startswith("timm/") for r in with_oracle) else ""
        )
        parts.append(
            f"The coverage matrix (`coverage.py`, {sources} with random weights) "
            f"compares with the same oracle: {len(with_oracle)} models rerun so far ({names}): "
            f"{num(faults)} faults of which {num(extreme)} extreme, {bad} mismatches "
            "(`coverage.md`).\n"
        )
    parts.append(FIXED + "\n")
    return "\n".join(parts)
