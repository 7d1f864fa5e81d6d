"""Audit a model's initialization: how the signal propagates, layer by layer, before training.

:func:`audit` runs one forward and one backward pass of a model on a batch and measures, for
every layer (in execution order; a module called twice gives two rows):

* **forward**: mean, std, second moment, fraction of exact zeros (dead ReLUs), fraction of
  saturated units for bounded activations, ``max |x|`` of the layer's output, and its
  ``rms / reference`` (the reference of its segment, see "Segments" below);
* **backward**: the gradient of the loss with respect to the layer's output (rms per element,
  Frobenius norm, and the norm ratio to its segment's reference gradient);
* **weights**: each parameter's empirical std (against the std an initwise ``Plan`` intended),
  its gradient, the relative update that gradient implies for SGD and for Adam, and the
  orthogonality error of orthogonal(-looking) weights;
* optionally (``spectrum=True``) the singular values of the input-output Jacobian
  (dynamical isometry), see :mod:`initwise._audit.spectrum`;
* optionally what the signal-propagation papers measure (:mod:`initwise._audit.probes`):
  correlation propagation between two inputs against the mean-field maps
  (``correlation=``), the output change after one SGD step (``step_lr=``, the Fixup
  principle), residual-stream growth across depth (``residual=True``).

It then gives a verdict for each pass: ``"healthy"``, ``"vanishing"`` or ``"exploding"``.

**What is compared, and why.** For weights initialized with a fan-in scheme (the default in
PyTorch and almost every scheme), ``E[h_l²]`` per element is conserved in the forward pass and
the squared *norm* of the backward signal ``E‖∂L/∂h_l‖²`` is conserved in the backward pass:
``E‖Wᵀg‖² = fan_in · Var(W) · ‖g‖² = gain² ‖g‖²`` whatever the layer widths. So the forward
scale of a row is ``ratio = rms(h_l) / rms(x)`` (per element) and its backward scale is
``grad_ratio = ‖∂L/∂h_l‖ / ‖∂L/∂y‖`` (whole batch, Frobenius), which makes narrow output
heads harmless (with normalization layers, and backward with pooling rows, which divide the
gradient norm by √(positions), the references are those of the row's segment, below). A row leaves the healthy band when either is outside
``[1 / band, band]`` (``band = 10`` by default: a factor that is ~3 standard deviations of the
finite-width fluctuation of ``log rms`` of a 50-layer width-128 ReLU network, Hanin & Rolnick
2018, but is crossed after only a few layers by any exponential drift), or when it is
non-finite (exploding), or when more than ``max_zero_fraction`` of its outputs are exactly
zero (vanishing: dead units). See :class:`AuditThresholds`.

**Segments (normalization layers).** LayerNorm, RMSNorm (also Hugging Face ``LlamaRMSNorm``,
``T5LayerNorm``..., recognized by class name or structure), GroupNorm, and BatchNorm /
InstanceNorm when they use batch statistics re-set the scale by design: GPT-2's LayerNorm maps
its 0.02-scale residual stream to scale 1 and, backward, multiplies the gradient by
``1 / 0.02``. So with ``scope="segment"`` (default) the rows are cut into segments at each
normalization row, and each row is judged against its own segment's reference:

* forward (execution order): the first segment's reference is the rms of the model's
  floating inputs (for token ids, which have no float scale: the first row's, i.e. the
  embedding output); after a normalization row it is the *interval* between the rms of that
  layer's input and of its output: a pre-norm residual branch reads the normalized scale and
  writes back into the stream's scale, so both are legitimate there. ``ratio = rms / ref``
  with ``ref`` the point of the interval nearest to ``rms`` (``ratio = 1`` inside it);
* backward (gradient-flow order, symmetrically): the first segment's reference is
  ``‖∂L/∂y‖``; after crossing a normalization row it is the interval between the gradient
  norms at that layer's output and at its input (measured with a hook on its input);
* the scale *entering* a normalization layer is judged only for non-finite values and dead
  units, since the layer divides it out: forward, the row whose output is the layer's input
  (``feeds_norm``) and the normalization row itself; backward, the normalization row's
  gradient. A tiny-init (std 0.01) BatchNorm MLP is therefore healthy in train mode;
* rows reading the same tensor (q, k, v projections) send back one summed gradient: such a
  group is vanishing only when all of its rows are (query/key gradients are small at init
  because attention is near uniform);
* rows whose output depends on no input and no parameter (``constant``, e.g. rotary cos/sin
  tables) are reported, not judged.

This still catches drift inside a segment (a block whose weights are 1000x too large is
flagged at that block), every network without normalization exactly as before, BatchNorm
whose ``eps`` floor is reached (weights ~1e-4), and eval-mode BatchNorm (running statistics:
an affine map, not a reset). It does not judge drift *across* normalization layers, e.g. a
slowly growing pre-norm residual stream, or the ~1.2-1.3x per block gradient growth of deep
BatchNorm MLPs (Yang et al., 2019): ``global_ratio`` and ``grad_global_ratio`` (against the
model input and ``‖∂L/∂y‖``) show it, and ``AuditThresholds(scope="global")`` judges by them.

The forward verdict is that of the first row (in execution order) leaving the band; the
backward verdict that of the first row in the order the gradient flows (from the output back
towards the input). ``verdict`` is the worse of the two (``exploding`` > ``vanishing`` >
``healthy``; ties go to the forward pass).

Saturation. A tanh network with ``std = 1`` weights at width 256 has pre-activations with rms
~16 (forward: exploding at the first layer) and ~95% saturated units; its backward gain per
layer is ``χ = n σ² E[tanh'(h)⁴]`` ≈ 8.5 > 1 (the chaotic phase of Poole et al. 2016), so the
gradient explodes too, even though the tanh outputs stay bounded. The saturated fraction is
reported per activation row.

Which rows carry the signal: rows whose outputs are terms of a residual sum (found on the
autograd graph of each row's input) are judged for explosion only, a small term being carried
by the skip; a row reading a model input directly opens a segment referenced to that input
(a second tower, a decoder's ids); embeddings looked up with input-independent indices
(positions, relative-position buckets) are ``constant`` and softmax outputs (attention
probabilities, also through their dropout) ``probability`` (neither is signal); a row whose output
gradient is small while the gradient at its input is in band (attention queries, routers)
is not vanishing; parametrization internals (``_WeightNorm``) are not rows.

**Output check** (``report.output``, :class:`OutputCheck`): for a language model
(``config.vocab_size``), a classifier (``config.num_labels``, class targets, or a head named
like one) or regression targets, the initial loss against an uninformed model (``ln V``,
``ln C``, ``mean(t²)``); logits whose uniform-label cross-entropy exceeds
``max_loss_ratio × ln C`` make the verdict "exploding". A dead network (the same output for
every example) is "vanishing" at its first all-zero layer.

Deliberate zero initialization (zero-init-last, ReZero, a zero classifier) is recognized:
modules that have an all-zero parameter and an all-zero output are marked ``zero_init`` and
skipped by the verdict, together with all-zero rows after them and, in the backward pass,
rows whose gradient is exactly zero because such a module blocks it at step 0.

**Recipes judged by their intent** (``report.by_design`` says what was read as designed):

* a residual branch multiplied by a parameter before the sum (ReZero's ``x + α·f(x)`` with
  ``α = 0``, ConvNeXt/CaiT's layer scale ``γ = 1e-6``), found on the autograd graph: the
  product ``p ⊙ t`` is a term of the sum, ``p`` is a parameter (through broadcasts and casts
  only), and ``t`` descends from another term of the sum (the skip), so a parameter on the
  skip (``s·x + f(x)``) is no gate. The branch's rows (the gated row, then up its sources
  while the gradient stays at its scale) have a gradient ``rms(p)`` times the stream's: a
  small gradient there is ``"scaled"`` (not vanishing) when ``grad_ratio ≥ rms(p) / band``,
  and still vanishing when it is smaller than the gate explains; a normalization row inside
  such a branch opens no backward segment;
* a zero-initialized output layer whose weight receives a gradient (Fixup's classifier, a
  zero-init head) makes the output the same for every example at step 0 by design: not a
  dead network (an all-zero network, whose head gets no gradient, still is).

**Conventions.** ``mode="train"`` (default) audits the model as the first training step sees
it (batch-statistics normalization, dropout active with the seeded RNG); ``"eval"`` audits it
in inference mode. The model is left exactly as it was: parameters and buffers (BatchNorm
running statistics are restored bitwise), existing ``.grad`` (gradients are taken with
:func:`torch.autograd.grad`, never accumulated), train/eval flags, ``requires_grad`` flags
(frozen parameters are temporarily made trainable to measure their gradient), hooks (all
removed, even on error) and the global RNG state (forked).

Without ``loss_fn`` the loss is ``L = Σ y ⊙ R`` with ``R`` i.i.d. ``N(0, 1)`` drawn from a
``torch.Generator`` seeded with ``seed``, so ``∂L/∂y = R`` has unit variance per element: the
backward pass propagates a random unit-variance direction, as in signal-propagation theory.

Weight-update scales, per unit learning rate: ``sgd_update = ‖∂L/∂W‖ / ‖W‖`` (the relative
change of ``W`` after one SGD step is ``lr × sgd_update``; ``None`` for an all-zero ``W``) and ``adam_update = sqrt(nnz(∂L/∂W))
/ ‖W‖``: Adam's first step is ``lr · m̂ / (sqrt(v̂) + ε) = lr · sign(g)`` per element (ε
neglected), so its relative size is ``lr × adam_update`` whatever the gradient's scale.

Sections: :mod:`.report` (results as data), :mod:`.stats` (per-tensor statistics),
:mod:`.passes` (the hooked forward and backward pass), :mod:`.output` (the output check),
:mod:`.verdict` (the judgment),
:mod:`.spectrum` (Jacobian singular values), :mod:`.probes` (correlation, one step, residual
stream), :mod:`.widths` (width sweeps), :mod:`.plot`
(figures), :mod:`.api` (:func:`audit`, :func:`audit_plot`).
"""

from __future__ import annotations

from .._errors import AuditError
from .api import audit, audit_plot
from .probes import CorrelationTrace, OneStepChange, ResidualGrowth
from .report import (
    AuditReport,
    AuditThresholds,
    LayerStats,
    OutputCheck,
    WeightStats,
    WidthAuditReport,
    WidthRow,
)
from .spectrum import SpectrumSummary
from .widths import audit_widths

__all__ = [
    "AuditError",
    "AuditReport",
    "AuditThresholds",
    "CorrelationTrace",
    "LayerStats",
    "OneStepChange",
    "OutputCheck",
    "ResidualGrowth",
    "SpectrumSummary",
    "WeightStats",
    "WidthAuditReport",
    "WidthRow",
    "audit",
    "audit_plot",
    "audit_widths",
]
