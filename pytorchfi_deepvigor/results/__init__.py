"""The one set of result types shared by the analysers and the fault-injection campaigns.

An analysis (DeepVigor+) and a campaign (exhaustive or statistical FI) both return a
:class:`VulnerabilityResult`: per layer and target a :class:`LayerResult` with per-channel VFs
(CVF), the layer VF (LVF) and, where they apply, per-neuron VFs, vulnerability-value ranges,
EDMs, outcome counts and the achieved SFI margin. :func:`compare` lines two results up channel
by channel.

JSON schema (``schema_version`` 3; a version-1 file reads with ``coverage`` None, a version-2
file with no ``coverage.other``), produced by ``to_dict``/``to_json`` and read back by
``from_dict``/``from_json``:

- a result is an object with one key per dataclass field; tuples become lists, ``Cost`` and
  ``OutcomeCounts`` and ``WeightCoverage`` nested objects, ``options`` and ``versions`` plain
  objects;
- ``null`` means an absent optional value (e.g. no per-neuron VFs);
- non-finite floats are the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``, in scalar
  fields and in arrays alike, so the file is strict JSON;
- a numpy array is ``{"dtype": "float64", "shape": [targets, images], "data": [...]}`` with
  ``data`` flattened in C order;
- options must be JSON values (str, int, finite float, bool, None, lists, str-keyed objects);
- a file with a newer ``schema_version`` is refused with a ``ValueError``;
- ``from_dict``/``from_json`` accept only what ``to_dict`` can write: a field of the wrong type,
  a VF outside [0, 1] (or NaN), lists of unequal lengths, an array of another dtype than bool,
  int or float, an unknown or a missing required field raise ``ValueError`` naming the field.

Example:
    >>> layer = LayerResult(layer_num=0, name="conv1", kind="Conv2d", target="weights",
    ...                     n_neurons=16, n_weights=9, channels=(0, 1), cvf=(0.25, 0.75), lvf=0.5)
    >>> result = VulnerabilityResult.from_layers("deepvigor", [layer], n_images=4, model_name="toy")
    >>> result.mvf_weights, result.lvf("weights")
    (0.5, {0: 0.5})
    >>> VulnerabilityResult.from_json(result.to_json()) == result
    True

Layout: the types live in ``_types``, the JSON encoding in ``_codec``, the load-time
validation in ``_validate`` and :func:`compare` in ``_compare`` (which imports the types; the
types import neither it nor this package).
"""

from pytorchfi_deepvigor.results._compare import (
    ChannelPair,
    Compared,
    Comparison,
    ComparisonWarning,
    compare,
)
from pytorchfi_deepvigor.results._types import (
    METHODS,
    SCHEMA_VERSION,
    TARGETS,
    Cost,
    LayerResult,
    Method,
    OutcomeCounts,
    RankCost,
    Target,
    VulnerabilityResult,
    WeightCoverage,
    mvf,
)

__all__ = [
    "METHODS",
    "SCHEMA_VERSION",
    "TARGETS",
    "ChannelPair",
    "Compared",
    "Comparison",
    "ComparisonWarning",
    "Cost",
    "LayerResult",
    "Method",
    "OutcomeCounts",
    "RankCost",
    "WeightCoverage",
    "Target",
    "VulnerabilityResult",
    "compare",
    "mvf",
]
