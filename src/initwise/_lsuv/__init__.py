"""LSUV: data-driven layer-sequential unit-variance init, calibrated in one forward pass.

Mishkin & Matas, "All you need is a good init" (ICLR 2016): pre-initialize every weighted
layer orthogonally, then rescale each layer's weight so that its output on a real batch has
standard deviation ``target_std``.

How it is done here. A layer's output is linear in its weight: ``y = u + b`` with ``u`` linear
in ``W``, so scaling ``W`` by ``s`` turns ``y`` into ``s * u + b`` exactly. A forward hook on
each layer measures the output, solves for ``s``, rescales the weight *and returns the
corrected output*, so every later layer already sees the calibrated signal. Layers are thus
calibrated in the order they execute, all in one forward pass.

Verification (``verify="auto"``). The corrected first pass *is* a fresh pass with the final
weights whenever every calibrated weight is used once, by its own stock layer (or only after
it is calibrated), with no random numbers drawn, no buffer changed, no foreign hooks and no
low-precision rounding: this is checked while the pass runs (a ``TorchFunctionMode`` sees
every tensor operation). Then the run stops after one pass. Otherwise (a module called twice,
a weight read elsewhere first, a subclass that overrides ``forward``, ...) further passes
verify every layer and re-correct any that drifted, until one needs no correction; the
reasons are in ``LSUVReport.verify_reasons``. ``verify=True`` always verifies.

Definitions (all documented in ``docs/lsuv.md``):

* ``std`` is ``torch.std`` (correction 1) over *all* elements of the layer's output.
* Converged means ``|std / target_std - 1| <= tol`` for every calibrated layer, measured by
  a fresh forward pass with the final weights on the same batch (or by the first pass, when
  it provably is one).
* ``include_bias=True`` (default): the target is the std of the output including the bias.
  Then ``var(s*u + B) = s^2 var(u) + 2 s cov(u, B) + var(B)`` (``B`` the bias broadcast over
  the output) is solved exactly for the positive root ``s``. ``include_bias=False`` targets
  ``std(y - B)``, i.e. ``s = target / std(u)``. ``zero_bias=True`` zeroes calibrated layers'
  biases first (as in the paper).
* Layers: ``nn.Linear``, ``nn.Conv1d/2d/3d``, ``nn.ConvTranspose1d/2d/3d``, Hugging Face
  ``Conv1D``; ``nn.MultiheadAttention``: the value block of the input projection is
  calibrated on ``value @ W_v.T + b_v`` (computed from the module's input, exact), the query and
  key blocks are only orthogonally pre-initialized (their scale sets the softmax temperature,
  which is not a variance criterion), and ``out_proj`` is calibrated on the module's output;
  RNNs (``nn.RNN``/``LSTM``/``GRU`` and their cells): every layer's input weights
  ``weight_ih_lk`` (and ``_reverse``) are calibrated on the input projection ``x_k @ W_ih.T +
  b_ih`` (all gates together, each gate block pre-initialized orthogonally); ``x_k`` for
  ``k >= 1`` is the output of layer ``k - 1``, computed by running the calibrated lower layers
  one by one in the pre-hook (the fused kernel does not expose it). Recurrent weights are
  left untouched. Other layers through
  ``custom_layers={MyLayer: LayerRule(...)}`` (output linear in the named weight).
* A module called several times (shared weights, or one parameter tied into several modules)
  is calibrated on its **first call** in execution order; every call is reported. This is the
  only rule that is exact in one pass (layers between the calls see a signal that stays valid);
  later calls show the network's real gain on re-entry.
* Normalization: layers whose output goes straight into a normalization that uses the
  statistics of its input (train-mode batch norm, group/layer/instance/RMS norm) are still
  calibrated but marked ``normalized_by`` (their scale is irrelevant downstream).
* Modes: during calibration every module is in eval mode (no dropout) except batch/instance
  norm layers, which keep their mode; all modes are restored afterwards. All buffers (batch-norm
  running statistics included) are restored bitwise. Gradients and ``requires_grad`` are not
  touched (the passes run under ``torch.no_grad()``).
* Failure (non-finite input or activation, a layer with zero output variance, a bias whose
  variance alone exceeds the target, a one-sample batch, any exception in the model): a clear
  error naming the layer, with every parameter and buffer restored bitwise, modes restored and
  hooks removed. Memory: one copy of each calibrated weight (and of all buffers) while running.

Sections: :mod:`.report` (results as data), :mod:`.units` (what is calibrated),
:mod:`.scale` (the exact scale), :mod:`.proof` (what makes one pass exact), :mod:`.run` (the
hooks of a pass), :mod:`.api` (:func:`lsuv`).
"""

from __future__ import annotations

from .._errors import LSUVError
from .api import lsuv
from .report import LayerRule, LSUVLayer, LSUVReport, LSUVStep

__all__ = ["LSUVError", "LSUVLayer", "LSUVReport", "LSUVStep", "LayerRule", "lsuv"]
