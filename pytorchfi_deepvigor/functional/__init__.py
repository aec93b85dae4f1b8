"""Pure maths of the package: functions of tensors and numbers, no modules, hooks or I/O."""

from pytorchfi_deepvigor.functional.edm import (
    GRIDS,
    bin_edges,
    bin_index,
    candidate_grid,
    histogram,
    operand_edm,
    search_members,
    weight_edm,
)
from pytorchfi_deepvigor.functional.receptive import (
    ConvGeometry,
    conv_geometry,
    conv_patches,
    operand_sites,
    weight_sites,
)
from pytorchfi_deepvigor.functional.search import (
    SearchResult,
    bisect_search,
    full_scan,
    margin_loss,
)
from pytorchfi_deepvigor.functional.sfi import (
    RUOSPO_PRIOR,
    MarginExceededWarning,
    fault_population,
    sample_size,
    split_proportional,
    stratified_margin,
    stratum_sample_sizes,
    weight_bit_prior,
)
from pytorchfi_deepvigor.functional.vf import (
    layer_vf,
    model_vf,
    non_critical_mass,
    total_mvf,
    vulnerability_factor,
    vv_values,
)

__all__ = [
    "RUOSPO_PRIOR",
    "MarginExceededWarning",
    "fault_population",
    "sample_size",
    "split_proportional",
    "stratified_margin",
    "stratum_sample_sizes",
    "weight_bit_prior",
    "GRIDS",
    "bin_edges",
    "bin_index",
    "candidate_grid",
    "histogram",
    "operand_edm",
    "search_members",
    "weight_edm",
    "ConvGeometry",
    "conv_geometry",
    "conv_patches",
    "operand_sites",
    "weight_sites",
    "SearchResult",
    "bisect_search",
    "full_scan",
    "margin_loss",
    "layer_vf",
    "model_vf",
    "non_critical_mass",
    "total_mvf",
    "vulnerability_factor",
    "vv_values",
]
