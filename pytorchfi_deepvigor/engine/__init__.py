"""The simulation engine: run the network after one layer with a batch of perturbations.

Both the DeepVigor+ analysers and the fault-injection campaigns run every faulty inference
through :class:`SimulationEngine`. It caches the golden (fault-free) run of an analysis batch
and, for a catalogued layer ``l``, evaluates a batch in which element ``b`` is image
``image_idx[b]`` with its own perturbation of layer ``l``'s output. Only the part of the network
that depends on that output is recomputed:

* **torch.fx path** (models that trace): the graph is cut at the layer's node; a *prefix*
  module computes, once per layer, the layer's input and output and every value the rest of the
  network still needs (skip connections); a *suffix* module recomputes the descendants of the
  layer from the perturbed output and those cached values.
  The suffix runs in two *segments* split at the layer's checkpoint: the first value that every
  path from the layer to the logits goes through (a dominator) and that feeds a convolution or
  linear layer, e.g. the ReLU after the layer's BatchNorm. The elements whose value there equals
  the golden value (the fault was masked by that ReLU or max-pool) stop: the rest of the network
  would recompute the golden logits for them, so their logits *are* the golden logits. Only the
  elements still differing pay for the rest (measured on ResNet-18: 21 % of the analysis's
  evaluations stop there; none that pass it are equal at a later dominator). Inside the
  segments, on the CPU, the cached activations and the suffix are channels-last (optionally,
  eval-mode Conv2d + BatchNorm2d pairs run folded); each layer's chunks are sized from its own
  suffix's activations. These change float rounding (about 1e-6 of the largest logit, measured
  on a CIFAR ResNet-18), never which work an element needs.
  Values the suffix reads from before the cut are classified once per graph
  (:func:`.plan._dependence`): those that depend on the images' data are cached per image;
  parameters, buffers and what is computed from them, and batch sizes, are recomputed by the
  suffix itself (never indexed by image). The layer's input is cached as the layer received it,
  after any in-place op that changed it. A Linear on N-D inputs is handled in the catalogue's
  neuron layout (channel first): :meth:`SimulationEngine.layer_output` and perturbations use
  it, the suffix gets the module's own layout back.
* **hook path** (models that do not trace): a forward hook on the layer replaces its output by
  the perturbed golden output, and the whole network runs. Same results, more work.

Outcomes (:class:`Outcome`): masked (logits equal the golden logits within a float tolerance of
``1e-5`` relative to the largest golden logit), non-critical SDC (logits differ, same top-1),
critical (top-1 differs from the golden top-1 of that image), DUE (a NaN or Inf logit; DUEs
count as critical). A search that only needs to decide takes
:meth:`SimulationEngine.verdicts`: per element its criticality and an int64
:func:`fingerprint` of its logits, each chunk's logits dropped once reduced, so its memory
stays within the engine's budget whatever the number of elements and classes.

The code is in three rooms: :mod:`.plan` (where the graph is cut, what each value is, the
prefix), :mod:`.run` (:class:`SimulationEngine`: the golden cache and the batched runs),
:mod:`.outcomes` (:class:`Outcome`, :func:`classify`, :func:`fingerprint`,
:class:`EngineStats`).
"""

from __future__ import annotations

from .outcomes import EngineStats, Outcome, classify, fingerprint
from .plan import _plan as _plan  # the tests inspect plans
from .run import DEFAULT_MEMORY_BYTES, Elements, SimulationEngine

__all__ = [
    "SimulationEngine",
    "Outcome",
    "EngineStats",
    "classify",
    "fingerprint",
    "Elements",
    "DEFAULT_MEMORY_BYTES",
]
