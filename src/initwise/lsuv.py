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
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ._checks import InitwiseWarning, check_finite_positive, raise_unknown
from ._context import memory_signature

__all__ = ["LSUVError", "LSUVLayer", "LSUVReport", "LSUVStep", "LayerRule", "lsuv"]

logger = logging.getLogger(__name__)

Only = Union[str, Sequence[str], Callable[[str, nn.Module], bool], None]  # noqa: UP007


class LSUVError(RuntimeError):
    """LSUV could not calibrate a layer; ``layer`` names it (``None`` for whole-batch errors).

    The model is restored to its exact state before the call whenever this is raised.
    """

    def __init__(self, message: str, layer: str | None = None) -> None:
        super().__init__(message)
        self.layer = layer


@dataclass(frozen=True)
class LayerRule:
    """How to calibrate a user layer type: the weight, the bias, and where the bias broadcasts.

    The layer's output (its first element if it returns a tuple) must be ``u + B`` with ``u``
    linear in ``getattr(module, weight)`` and ``B`` the bias broadcast along ``bias_dim`` of
    the output (``-1``: last dimension, like ``nn.Linear``; ``1``: channels, like convs).

    >>> LayerRule("kernel", bias=None)
    LayerRule(weight='kernel', bias=None, bias_dim=-1)
    """

    weight: str = "weight"
    bias: str | None = "bias"
    bias_dim: int = -1


@dataclass(frozen=True)
class LSUVLayer:
    """One calibrated layer call, in execution order.

    ``name`` is the qualified name of the rescaled weight (``attn.in_proj_weight[v]`` for a
    block), ``module`` the module that was called, ``call`` its call index within a forward
    pass (shared modules have several rows), ``calibrated`` whether this call set the scale
    (the first call) or is only reported. ``std_before`` is the output std in the first pass
    before this layer was rescaled (upstream layers already calibrated), ``std_after`` the std
    in the final verification pass. ``scale`` is the total factor applied to the weight since
    its (orthogonal) pre-init, ``iterations`` the number of passes that rescaled it. Without
    a verification pass (``LSUVReport.verified`` false), ``std_after`` is the std of the
    corrected output in the first pass.
    """

    name: str
    module: str
    kind: str
    call: int
    calibrated: bool
    std_before: float | None
    std_after: float
    scale: float
    iterations: int
    normalized_by: str | None = None


@dataclass(frozen=True)
class LSUVStep:
    """Progress event: one layer call measured in pass ``pass_index`` (1-based)."""

    pass_index: int
    name: str
    call: int
    std: float
    rescaled_by: float


@dataclass
class LSUVReport:
    """Result of :func:`lsuv`: per-layer rows in execution order and the cost of the run.

    ``verified``: a fresh pass measured the final stds (else the first pass provably equals
    one, or ``verify=False``). ``verify_reasons``: why the first pass was not provably exact.
    """

    layers: list[LSUVLayer]
    forward_passes: int
    target_std: float
    tol: float
    include_bias: bool
    converged: bool
    max_error: float
    skipped: list[str] = field(default_factory=list)
    parametrized: list[str] = field(default_factory=list)
    verified: bool = True
    verify_reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict (rows as dicts)."""
        return asdict(self)

    def __str__(self) -> str:
        head = (
            f"LSUV: {len(self.layers)} layer calls, {self.forward_passes} forward "
            f"pass{'es' if self.forward_passes != 1 else ''}, "
            f"target std {self.target_std:g}, max |std/target - 1| = {self.max_error:.2e} "
            f"(tol {self.tol:g}, {'converged' if self.converged else 'NOT converged'})"
        )
        rows = [("layer", "call", "std before", "std after", "scale", "iters", "note")]
        for r in self.layers:
            note = "" if r.calibrated else "reported only (shared)"
            if r.normalized_by:
                note = (note + "; " if note else "") + f"re-normalized by {r.normalized_by}"
            before = "-" if r.std_before is None else f"{r.std_before:.4f}"
            rows.append(
                (r.name, str(r.call), before, f"{r.std_after:.4f}", f"{r.scale:.4g}",
                 str(r.iterations), note)
            )  # fmt: skip
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = [head] + ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
        if not self.verified:
            lines.append("std after: the first pass's corrected outputs (exact by construction; "
                         "no verification pass)" if not self.verify_reasons else
                         "std after: first pass, NOT verified by a fresh pass (verify=False) "
                         f"although: {'; '.join(self.verify_reasons)}")  # fmt: skip
        elif self.verify_reasons:
            lines.append(f"verified by a fresh pass because: {'; '.join(self.verify_reasons)}")
        if self.skipped:
            lines.append(f"not executed (left untouched): {', '.join(self.skipped)}")
        if self.parametrized:
            lines.append("left untouched (parametrized, e.g. weight_norm: rescale before "
                         "parametrizing; or tied to an embedding table): "
                         f"{', '.join(self.parametrized)}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Units: one calibrated weight (or weight block) as seen by one module
# --------------------------------------------------------------------------------------------


class _Weight:
    """State of one calibrated weight (block), shared by all modules that use it."""

    def __init__(self, name: str, param: torch.Tensor, rows: slice | None, blocks: int,
                 extra_ortho: list[tuple[str, torch.Tensor, slice | None]]) -> None:  # fmt: skip
        self.name = name
        self.param = param
        self.rows = rows
        self.blocks = blocks
        self.extra_ortho = extra_ortho  # (name, tensor, rows): pre-init only (MHA q, k)
        self.preinit_done = False
        self.scale = 1.0
        self.iterations = 0
        self.calls = 0  # calls in the current pass

    def view(self) -> torch.Tensor:
        return self.param if self.rows is None else self.param[self.rows]


class _Unit:
    """A weight as used by one module: where its output is and how the bias broadcasts."""

    def __init__(self, module_name: str, module: nn.Module, kind: str, weight: _Weight,
                 bias: torch.Tensor | None, bias_rows: slice | None, at: Literal["output", "input"],
                 bias_dim: Callable[[torch.Tensor], int],
                 take_input: Callable[[tuple[Any, ...], dict[str, Any]], Any] | None = None,
                 ) -> None:  # fmt: skip
        self.module_name = module_name
        self.module = module
        self.kind = kind
        self.weight = weight
        self.bias_param = bias
        self.bias_rows = bias_rows
        self.at = at
        self.bias_dim = bias_dim
        self.take_input = take_input
        self.rnn_layer = 0  # > 0: input weights of that layer of a stacked RNN

    def bias(self) -> torch.Tensor | None:
        if self.bias_param is None:
            return None
        return self.bias_param if self.bias_rows is None else self.bias_param[self.bias_rows]

    def names(self) -> tuple[str, ...]:
        base = self.weight.name.split("[", 1)[0]
        return (self.module_name, self.weight.name, base)


def _last(_: torch.Tensor) -> int:
    return -1


def _fixed(d: int) -> Callable[[torch.Tensor], int]:
    def dim(_: torch.Tensor) -> int:
        return d

    return dim


def _conv_channel(weight_dim: int) -> Callable[[torch.Tensor], int]:
    def dim(y: torch.Tensor) -> int:
        return 1 if y.dim() == weight_dim else 0  # unbatched conv input: channels first

    return dim


_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
          nn.ConvTranspose3d)  # fmt: skip


def _is_hf_conv1d(m: nn.Module) -> bool:
    t = type(m)
    return t.__name__ == "Conv1D" and t.__module__.startswith("transformers")


def _rnn_input(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    x = args[0] if args else kwargs.get("input")
    if isinstance(x, nn.utils.rnn.PackedSequence):
        return x.data
    return x


def _rnn_layer_output(m: nn.RNNBase, layer: int, x: Any, hx: Any) -> Any:
    """Output sequence of one layer of a stacked RNN (its input for the next layer).

    Runs a one-layer torch module of the same type (dropout between layers is off: the module
    is in eval mode during calibration) on ``m``'s own parameters of that layer.
    """
    d = 2 if m.bidirectional else 1
    inner = m.proj_size if isinstance(m, nn.LSTM) and m.proj_size > 0 else m.hidden_size
    kw: dict[str, Any] = {"num_layers": 1, "bias": m.bias, "batch_first": m.batch_first,
                          "bidirectional": m.bidirectional, "device": "meta"}  # fmt: skip
    base: type[nn.RNNBase]
    if isinstance(m, nn.LSTM):
        base, kw["proj_size"] = nn.LSTM, m.proj_size
    elif isinstance(m, nn.GRU):
        base = nn.GRU
    else:
        base, kw["nonlinearity"] = nn.RNN, m.nonlinearity
    tmp = base(m.input_size if layer == 0 else inner * d, m.hidden_size, **kw)
    for name in tmp._flat_weights_names:
        setattr(tmp, name, getattr(m, name.replace("_l0", f"_l{layer}")))
    if hx is not None:  # [num_layers * d, ...]: this layer's initial state
        hx = tuple(h[layer * d : (layer + 1) * d] for h in hx) if isinstance(hx, tuple) else hx[layer * d : (layer + 1) * d]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # non-contiguous weights on cuDNN
        return tmp(x, hx)[0]


def _mha_value(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return args[2] if len(args) > 2 else kwargs.get("value")


def _memory(t: torch.Tensor) -> tuple[Any, ...]:
    """Where ``t``'s values live (``memory_signature``), or its identity when it has no plain
    memory yet (lazy, meta, empty) or none at all (sparse and wrapper subclasses)."""
    if nn.parameter.is_lazy(t):
        return (id(t),)
    try:
        sig = memory_signature(t)
    except (RuntimeError, NotImplementedError, ValueError):
        sig = None
    return (id(t),) if sig is None else sig


def _param(module: nn.Module, name: str | None) -> torch.Tensor | None:
    if name is None:
        return None
    p = getattr(module, name, None)
    return p if isinstance(p, torch.Tensor) else None


def _discover(model: nn.Module, custom: Mapping[type, LayerRule],
              parametrized: list[str] | None = None) -> list[_Unit]:  # fmt: skip
    """All calibratable units of ``model`` (module registration order; execution decides).

    Modules with torch parametrizations (``weight_norm``, ``spectral_norm``, ...) are left out
    and their names appended to ``parametrized``: their weight is recomputed from other
    tensors at every call, so it cannot be rescaled in place (spectral norm even undoes any
    scale by design).
    """
    weights: dict[tuple[tuple[Any, ...], int | None], _Weight] = {}
    units: list[_Unit] = []
    skip: set[int] = set()
    for mname, m in model.named_modules():
        if nn.utils.parametrize.is_parametrized(m):
            skip.add(id(m))
            if parametrized is not None:
                parametrized.append(mname or "<root>")
        elif (isinstance(m, _STOCK) or _is_hf_conv1d(m)) and not _own_weights(m):
            # ``weight`` recomputed by a pre-hook from other tensors (hook-based weight_norm,
            # spectral_norm, pruning): a rescale would be thrown away at the next call
            skip.add(id(m))
            if parametrized is not None:
                parametrized.append(f"{mname or '<root>'} (weight computed by a forward pre-hook)")

    def weight(name: str, p: torch.Tensor, rows: slice | None = None, blocks: int = 1,
               extra: list[tuple[str, torch.Tensor, slice | None]] | None = None) -> _Weight:  # fmt: skip
        # keyed by memory, not object: Parameters tied through ``.data`` are one weight
        key = (_memory(p), None if rows is None else rows.start)
        if key not in weights:
            weights[key] = _Weight(name, p, rows, blocks, extra or [])
        return weights[key]

    for mname, m in model.named_modules():
        if id(m) in skip:
            continue
        prefix = f"{mname}." if mname else ""
        rule = next((r for t, r in custom.items() if isinstance(m, t)), None)
        if rule is not None:
            w = _param(m, rule.weight)
            if w is None:
                raise ValueError(
                    f"custom_layers: {mname or '<root>'} ({type(m).__name__}) has no tensor "
                    f"attribute {rule.weight!r}"
                )
            units.append(_Unit(mname, m, type(m).__name__, weight(prefix + rule.weight, w),
                               _param(m, rule.bias), None, "output", _fixed(rule.bias_dim)))  # fmt: skip
        elif isinstance(m, nn.MultiheadAttention):
            e = m.embed_dim
            bias = m.in_proj_bias
            if m._qkv_same_embed_dim:
                assert m.in_proj_weight is not None
                wv = weight(prefix + "in_proj_weight[v]", m.in_proj_weight, slice(2 * e, 3 * e),
                            extra=[(prefix + "in_proj_weight[q]", m.in_proj_weight, slice(0, e)),
                                   (prefix + "in_proj_weight[k]", m.in_proj_weight, slice(e, 2 * e))])  # fmt: skip
            else:
                assert m.v_proj_weight is not None
                assert m.q_proj_weight is not None and m.k_proj_weight is not None
                wv = weight(prefix + "v_proj_weight", m.v_proj_weight,
                            extra=[(prefix + "q_proj_weight", m.q_proj_weight, None),
                                   (prefix + "k_proj_weight", m.k_proj_weight, None)])  # fmt: skip
            units.append(_Unit(mname, m, "MultiheadAttention[v]", wv, bias,
                               slice(2 * e, 3 * e), "input", _last, _mha_value))  # fmt: skip
            if "weight" in m.out_proj._parameters:  # else parametrized (reported) or computed
                wo = weight(prefix + "out_proj.weight", m.out_proj.weight)
                units.append(_Unit(mname, m, "MultiheadAttention[out]", wo, m.out_proj.bias,
                                   None, "output", _last))  # fmt: skip
            skip.add(id(m.out_proj))  # called functionally by MHA, never as a module
        elif isinstance(m, (nn.RNNBase, nn.RNNCellBase)):
            layers = [(0, "")]
            if isinstance(m, nn.RNNBase):  # every layer, both directions, in execution order
                dirs = ["", "_reverse"] if m.bidirectional else [""]
                layers = [(k, f"_l{k}{r}") for k in range(m.num_layers) for r in dirs]
            for k, s in layers:
                w = _param(m, "weight_ih" + s)
                if w is None:
                    continue
                blocks = max(1, w.shape[0] // m.hidden_size)
                unit = _Unit(mname, m, type(m).__name__, weight(prefix + "weight_ih" + s, w,
                             blocks=blocks), _param(m, "bias_ih" + s), None, "input", _last,
                             _rnn_input)  # fmt: skip
                unit.rnn_layer = k
                units.append(unit)
        elif isinstance(m, _CONVS):
            units.append(_Unit(mname, m, type(m).__name__, weight(prefix + "weight", m.weight),
                               m.bias, None, "output", _conv_channel(m.weight.dim())))  # fmt: skip
        elif isinstance(m, nn.Linear) or _is_hf_conv1d(m):
            w = _param(m, "weight")
            if w is None:
                continue
            units.append(_Unit(mname, m, type(m).__name__, weight(prefix + "weight", w),
                               _param(m, "bias"), None, "output", _last))  # fmt: skip
    # A weight tied to an embedding table (a language model's output head) is the table: LSUV
    # must not orthogonalize and rescale the embeddings through it. Left out and reported.
    tables = {id(p) for m in model.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag))
              for p in m.parameters(recurse=False)}
    kept = [u for u in units if id(u.weight.param) not in tables]
    if parametrized is not None:
        parametrized.extend(f"{u.weight.name} (tied to an embedding)" for u in units
                            if id(u.weight.param) in tables)
    return kept


def _select(units: list[_Unit], only: Only) -> list[_Unit]:
    if only is None:
        return units
    if callable(only):
        return [u for u in units if only(u.module_name, u.module)]
    patterns = [only] if isinstance(only, str) else list(only)
    if not patterns or not all(isinstance(p, str) for p in patterns):
        raise TypeError("only= must be a name, a sequence of names or a predicate (name, module)")

    def match(name: str, p: str) -> bool:
        return name == p or name.startswith(p + ".") or name.startswith(p + "[")

    for p in patterns:
        if not any(match(n, p) for u in units for n in u.names()):
            raise_unknown("layer name in only=", p, {n for u in units for n in u.names()})
    return [u for u in units if any(match(n, p) for n in u.names() for p in patterns)]


# --------------------------------------------------------------------------------------------
# Math: the exact scale
# --------------------------------------------------------------------------------------------


def _bias_view(bias: torch.Tensor, like: torch.Tensor, dim: int) -> torch.Tensor:
    shape = [1] * like.dim()
    shape[dim % like.dim()] = -1
    return bias.detach().to(like.dtype).reshape(shape)


def _var(t: torch.Tensor, mean: torch.Tensor) -> float:
    """Population variance as ``sum((t - mean)^2) / n``: torch's cascade sums (deterministic,
    ~1e-8 relative error here) at 2-4x the speed of ``torch.var``'s Welford pass on CPU."""
    return float((t - mean).square_().sum()) / t.numel()


def _stats(t: torch.Tensor, bias: torch.Tensor | None, dim: int, *, has_bias: bool
           ) -> tuple[float, float, float, int]:  # fmt: skip
    """Population ``var(u)``, ``cov(u, B)``, ``var(B)`` over all elements, and the count.

    ``t`` is the output ``y = u + B`` (``has_bias``) or ``u``; ``B`` is ``bias`` broadcast along
    ``dim``. Every channel has the same number of elements, so element means of ``B`` terms are
    channel means: one reduction over ``t`` plus channel means, no copy of ``t``, unless the
    bias dominates ``var(y)`` (then ``var(u)`` is recomputed directly to avoid cancellation).
    Non-finite values in ``t`` make ``var(u)`` non-finite (the caller's check).
    """
    n = t.numel()
    if bias is None:
        return _var(t, t.mean()), 0.0, 0.0, n
    d = dim % t.dim()
    others = [i for i in range(t.dim()) if i != d]
    mc = t.mean(dim=others) if others else t
    var_t = _var(t, mc.mean())  # equal counts per channel: the mean of channel means
    if not math.isfinite(var_t):
        return var_t, 0.0, 0.0, n
    s = torch.stack((mc.double(), bias.detach().double().reshape(-1)))
    s = s - s.mean(dim=1, keepdim=True)
    cov_tb, var_b = (s @ s[1]).div_(s.shape[1]).tolist()
    if not has_bias:
        return var_t, cov_tb, var_b, n
    var_u = var_t - 2.0 * cov_tb + var_b
    if var_u < 0.5 * var_t:
        var_u = float((t - _bias_view(bias, t, dim)).var(correction=0))
    return var_u, cov_tb - var_b, var_b, n


def _solve_scale(a: float, c: float, d: float, n: int, target: float, name: str) -> float:
    """Positive ``s`` with ``std(s u + B) = target`` (unbiased std), from population moments."""
    t2 = target * target * (n - 1) / n  # target as a population variance
    if not (math.isfinite(a) and a > 0.0):
        raise LSUVError(
            f"lsuv: the output of layer {name!r} has zero variance (all units dead or a "
            "constant input); cannot rescale it to the target std",
            name,
        )
    disc = c * c - a * (d - t2)
    s = (-c + math.sqrt(disc)) / a if disc >= 0 else -1.0
    if not (math.isfinite(s) and s > 0.0):
        raise LSUVError(
            f"lsuv: the bias of layer {name!r} alone has std {math.sqrt(d * n / (n - 1)):.4g}"
            f" >= target {target:g}; no weight scale reaches the target. Use "
            "include_bias=False or zero_bias=True",
            name,
        )
    return s


def _std(a: float, c: float, d: float, n: int, s: float = 1.0) -> float:
    """Unbiased std of ``s u + B`` from population moments of ``u`` and ``B``."""
    return math.sqrt(max(s * s * a + 2 * s * c + d, 0.0) * n / (n - 1))


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------

_NORMS: tuple[type, ...] = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm,
                            nn.GroupNorm, nn.LayerNorm) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm")
                                                           else ())  # fmt: skip
_KEEP_MODE: tuple[type, ...] = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)
# Modules whose own ``training`` flag only gates a fused inference path that skips submodule
# calls (and hence hooks); their dropout lives in submodules, which are in eval mode.
_NO_FASTPATH: tuple[type, ...] = (nn.TransformerEncoderLayer, nn.TransformerEncoder)


def _uses_batch_stats(m: nn.Module) -> bool:
    if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)):
        return m.training or getattr(m, "running_mean", None) is None
    return True


# -- Proof that the first pass is exact (``verify="auto"``) -----------------------------------
# The first pass's corrected outputs are what a fresh pass produces when every calibrated
# weight is used only by its own module's call (or after it is calibrated), each is used once,
# the module computes a stock linear map of it, and the forward pass is deterministic and
# stateless. Each condition is checked while the first pass runs; any doubt costs one
# verification pass, never a wrong report.

# Tensor accessors that read metadata, not values.
_METADATA = frozenset({
    "shape", "dtype", "device", "ndim", "layout", "is_cuda", "is_meta", "is_sparse",
    "is_quantized", "requires_grad", "grad", "grad_fn", "is_leaf", "names", "_version",
    "itemsize", "nbytes", "output_nr", "size", "dim", "numel", "nelement", "stride",
    "element_size", "is_floating_point", "is_complex", "is_contiguous", "data_ptr",
    "storage_offset", "get_device", "__len__", "__hash__", "__repr__", "__format__",
})  # fmt: skip
# Functions that read only the metadata of the argument at this position (a template).
_TEMPLATE_ARG = {"type_as": 1, "to": 1, "zeros_like": 0, "ones_like": 0, "empty_like": 0,
                 "full_like": 0, "new_zeros": 0, "new_ones": 0, "new_empty": 0, "new_full": 0,
                 "new_tensor": 0, "is_same_size": 1, "is_set_to": 1}  # fmt: skip
# Random functions: always random, or random only when their ``training`` argument is true
# (argument position, default). Dropout modules are in eval mode; functional calls may not be.
_ALWAYS_RANDOM = frozenset({
    "rand", "randn", "randint", "randperm", "rand_like", "randn_like", "randint_like",
    "normal", "bernoulli", "multinomial", "poisson", "uniform_", "normal_", "bernoulli_",
    "random_", "exponential_", "geometric_", "cauchy_", "log_normal_", "gumbel_softmax",
    "fractional_max_pool2d", "fractional_max_pool3d", "native_dropout", "binomial",
    "_standard_gamma", "_sample_dirichlet", "rrelu_with_noise",
})  # fmt: skip
_TRAINING_RANDOM = {"dropout": (2, True), "dropout1d": (2, True), "dropout2d": (2, True),
                    "dropout3d": (2, True), "alpha_dropout": (2, False),
                    "feature_alpha_dropout": (2, False), "feature_dropout": (2, True),
                    "rrelu": (3, False), "scaled_dot_product_attention": (4, 0.0)}  # fmt: skip
_STOCK: tuple[type, ...] = (nn.Linear, *_CONVS, nn.MultiheadAttention, nn.RNNBase, nn.RNNCellBase)


def _own_weights(m: nn.Module) -> bool:
    """False if a stock layer's weight is not its own Parameter (recomputed by a hook)."""
    if isinstance(m, nn.RNNBase):
        return all(n in m._parameters for n in m._flat_weights_names if n.startswith("weight_ih"))
    if isinstance(m, nn.RNNCellBase):
        return "weight_ih" in m._parameters
    if isinstance(m, nn.MultiheadAttention):
        names = ["in_proj_weight"] if m._qkv_same_embed_dim else ["q_proj_weight", "k_proj_weight", "v_proj_weight"]
        return all(n in m._parameters for n in names)  # out_proj: judged on its own
    return "weight" in m._parameters


def _func_name(func: Any) -> str:
    name = getattr(func, "__name__", "")
    if name == "__get__":  # a tensor property (``w.shape``, ``w.T``): its descriptor's name
        name = getattr(getattr(func, "__self__", None), "__name__", name)
    return str(name)


def _stock_forward(m: nn.Module) -> bool:
    """True if ``m``'s forward is the stock implementation of a known linear layer."""
    if "forward" in m.__dict__ or "_conv_forward" in m.__dict__:  # patched on the instance
        return False
    if _is_hf_conv1d(m):
        return True
    t = type(m)
    for base in _STOCK:
        if isinstance(m, base):
            klass = next(k for k in t.__mro__ if k.__module__.startswith("torch.nn."))
            return all(getattr(t, f, None) is getattr(klass, f, None)
                       for f in ("forward", "_conv_forward"))  # fmt: skip
    return True  # custom_layers: the user declared the output linear in the weight


class _Watch(TorchFunctionMode):
    """Observes the first pass: calibrated weights read outside their module, random ops."""

    def __init__(self, run: _Run) -> None:
        super().__init__()
        self.run = run

    def __torch_function__(self, func: Any, types: Any, args: Sequence[Any] = (),
                           kwargs: Mapping[str, Any] | None = None) -> Any:  # fmt: skip
        kwargs = kwargs or {}
        if not self.run.internal:
            self.run.observe(func, args, kwargs)
        return func(*args, **kwargs)


def _orthogonal(t: torch.Tensor, name: str, seed: int | None, generator: torch.Generator) -> None:
    """Orthogonal pre-init of ``t``: keyed by (seed, name), or ``generator`` for a None seed."""
    from . import random as _random
    from .schemes import orthogonal_

    orthogonal_(t, generator=generator if seed is None else _random.key(seed, name))


class _Run:
    def __init__(self, model: nn.Module, units: list[_Unit], *, target: float, tol: float,
                 include_bias: bool, orthogonal_first: bool, zero_bias: bool, seed: int | None,
                 progress: Callable[[LSUVStep], None] | None) -> None:  # fmt: skip
        self.model = model
        self.units = units
        self.target = target
        self.tol = tol
        self.include_bias = include_bias
        self.orthogonal_first = orthogonal_first
        self.zero_bias = zero_bias
        self.seed = seed
        # seed=None: the pre-init depends on torch's global RNG through one draw, made here, so
        # the model's own use of that RNG during the pass stays detectable
        self.generator = torch.Generator()
        if seed is None:
            self.generator.manual_seed(int(torch.randint(0, 2**62, (), dtype=torch.int64)))
        self.progress = progress
        self.last_visited: str | None = None  # the last weight visited in the current pass
        self.pass_index = 0
        self.corrections = 0
        self.param_backup: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        # rows[(weight name, call)] = [module, kind, std_before, std_last, normalized_by]
        self.rows: dict[tuple[str, int], list[Any]] = {}
        self.order: list[tuple[str, int]] = []
        self.outputs: weakref.WeakValueDictionary[int, torch.Tensor] = weakref.WeakValueDictionary()
        self.output_keys: dict[int, tuple[str, int]] = {}
        self.by_module: dict[int, list[_Unit]] = {}
        self.norm_names: dict[int, str] = {}
        # first-pass exactness proof (see _Watch)
        self.internal = 0  # > 0 while our own hooks run
        self.active: dict[int, int] = {}  # id(module) -> open calls of a calibrated module
        self.watched: dict[int, tuple[set[int], set[str], str]] = {}  # id(param) -> (owner
        # modules, weight names still to calibrate, display name)
        self.outside: dict[int, str] = {}  # id(param) -> why it was read outside its module
        self.param_units: dict[int, list[_Unit]] = {}
        self.reasons: list[str] = []
        self.watching = False  # the first pass runs under _Watch
        self.buffer_state: list[tuple[nn.Module, str, torch.Tensor, int]] = []
        self.param_versions: dict[int, tuple[str, torch.Tensor, int]] = {}
        self.final: dict[int, tuple[torch.Tensor, int, float]] = {}  # id -> (p, ptr, sum)
        self.rng_state: tuple[torch.Tensor, list[torch.Tensor]] | None = None

    # -- first-pass exactness ----------------------------------------------------------------
    def proof_begin(self) -> _Watch | None:
        """Static conditions, state snapshots; returns the mode observing the first pass."""
        model, units = self.model, self.units
        compiled = [n or "<root>" for n, m in model.named_modules()
                    if isinstance(m, torch.jit.ScriptModule) or _is_compile_wrapper(m)]  # fmt: skip
        if compiled:
            self.doubt(f"compiled or scripted modules ({', '.join(compiled[:3])}) are opaque")
        g = nn.modules.module
        if g._global_forward_hooks or g._global_forward_pre_hooks:
            self.doubt("global module forward hooks are registered")
        users: dict[int, int] = {}
        for u in units:
            users[id(u.weight)] = users.get(id(u.weight), 0) + 1
            m = u.module
            if not _stock_forward(m):
                self.doubt(f"{u.module_name or '<root>'} ({type(m).__name__}) overrides the "
                           "forward of its layer type")  # fmt: skip
            if m._forward_hooks or m._forward_pre_hooks:
                self.doubt(f"{u.module_name or '<root>'} has its own forward hooks")
            if u.weight.param.dtype not in (torch.float32, torch.float64):
                self.doubt(f"{u.weight.name} is {u.weight.param.dtype} (rounding of the rescaled weight)")
        for u in units:
            if users[id(u.weight)] > 1:
                self.doubt(f"{u.weight.name} is shared by {users[id(u.weight)]} modules")
        self.buffer_state = [(m, k, b, b._version) for m in model.modules()
                             for k, b in m._buffers.items() if b is not None]  # fmt: skip
        self.param_versions = {id(p): (n, p, p._version) for n, p in model.named_parameters()}
        cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        self.rng_state = (torch.get_rng_state(), torch.cuda.get_rng_state_all() if cuda else [])
        memory: dict[tuple[Any, ...], dict[int, str]] = {}  # aliasing across weights
        for u in units:
            for p, name in self.written(u):
                memory.setdefault(_memory(p), {})[id(u.weight)] = name
        for names in memory.values():
            if len(names) > 1:
                self.doubt(f"{', '.join(sorted(set(names.values())))} share memory")
        self.watch(units)
        return None if compiled else _Watch(self)

    def proof_end(self) -> None:
        """Conditions only the first pass could show: call counts, reads, state, randomness."""
        seen: set[int] = set()
        for u in self.units:
            w = u.weight
            if id(w) not in seen and w.calls > 1:
                self.doubt(f"{w.name} is used by {w.calls} calls in one forward pass")
            seen.add(id(w))
        for key, why in self.outside.items():
            if any(u.weight.preinit_done for u in self.param_units.get(key, [])):
                self.doubt(why)
        names = {key: n for key, (n, _, _) in self.param_versions.items()}
        for name, p, version in self.param_versions.values():
            if p._version != version:
                self.doubt(f"parameter {name} is modified in place during the forward pass")
        for key, (p, ptr, total) in self.final.items():
            if p.data_ptr() != ptr or float(p.detach().sum()) != total:
                self.doubt(f"parameter {names.get(key, '?')} is modified during the forward "
                           "pass after it was calibrated")  # fmt: skip
        for m, k, b, version in self.buffer_state:
            if m._buffers.get(k) is b and b._version == version:
                continue
            stats = isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm))
            if not (stats and m.training and k in ("running_mean", "running_var", "num_batches_tracked")):
                self.doubt(f"the forward pass changes buffer {k!r} of {type(m).__name__}")
        if self.rng_state is not None:
            cpu, cuda = self.rng_state
            cuda_now = torch.cuda.get_rng_state_all() if cuda else []
            if not torch.equal(cpu, torch.get_rng_state()) or any(
                not torch.equal(a, b) for a, b in zip(cuda, cuda_now, strict=True)
            ):
                self.doubt("the forward pass draws from torch's global random generator")

    def quiet(self) -> Any:
        """Our own tensor work inside hooks bypasses the watching mode (it is not the model's)."""
        return torch._C.DisableTorchFunction() if self.watching else contextlib.nullcontext()

    def doubt(self, reason: str) -> None:
        if reason not in self.reasons:
            self.reasons.append(reason)

    def written(self, u: _Unit) -> list[tuple[torch.Tensor, str]]:
        """The tensors a unit writes in the first pass (weight, pre-init blocks, zeroed bias)."""
        out = [(u.weight.param, u.weight.name)]
        out += [(p, name) for name, p, _ in u.weight.extra_ortho if p is not u.weight.param]
        if self.zero_bias and u.bias_param is not None:
            out.append((u.bias_param, f"bias of {u.weight.name}"))
        return out

    def watch(self, units: list[_Unit]) -> None:
        for u in units:
            for p, name in self.written(u):
                entry = self.watched.setdefault(id(p), (set(), set(), name))
                entry[0].add(id(u.module))
                entry[1].add(u.weight.name)
                self.param_units.setdefault(id(p), []).append(u)

    def wrote(self, p: torch.Tensor) -> None:
        """Our own write to ``p`` (not the model's): refresh its version snapshot."""
        known = self.param_versions.get(id(p))
        if known is not None:
            self.param_versions[id(p)] = (known[0], known[1], known[1]._version)

    def settle(self, unit: _Unit) -> None:
        """``unit``'s weight is final: later reads anywhere are consistent with a fresh pass."""
        for p, _ in self.written(unit):
            self.wrote(p)  # our last write to it in this pass
            if self.watching:  # writes through ``.data`` bump no version: compare values too
                self.final[id(p)] = (p, p.data_ptr(), float(p.detach().sum()))
            key = id(p)
            entry = self.watched.get(key)
            if entry is not None:
                entry[1].discard(unit.weight.name)
                if not entry[1]:
                    del self.watched[key]

    def observe(self, func: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        name = _func_name(func)
        if name in _ALWAYS_RANDOM:
            self.doubt(f"the forward pass draws random numbers ({name})")
        elif name in _TRAINING_RANDOM:
            pos, default = _TRAINING_RANDOM[name]
            training = args[pos] if len(args) > pos else kwargs.get(
                "training", kwargs.get("train", kwargs.get("dropout_p", default)))
            if training:
                self.doubt(f"the forward pass draws random numbers ({name} in training mode)")
        if not self.watched or name in _METADATA:
            return
        if name in _TEMPLATE_ARG:  # x.type_as(w), x.to(w), zeros_like(w), w.new_zeros(...)
            skip = _TEMPLATE_ARG[name]
            args = [a for i, a in enumerate(args) if i != skip]
            kwargs = {k: v for k, v in kwargs.items() if k != "other"}
        for a in (*args, *kwargs.values()):
            for t in (a if isinstance(a, (list, tuple)) else (a,)):
                entry = self.watched.get(id(t))
                if entry is not None and id(t) not in self.outside:
                    owners, _, pname = entry
                    if not any(self.active.get(m) for m in owners):
                        self.outside[id(t)] = (f"{pname} is read outside its module ({name}) "
                                               "before it is calibrated")  # fmt: skip

    # -- state backup ------------------------------------------------------------------------
    def backup(self, p: torch.Tensor) -> None:
        if id(p) not in self.param_backup:
            self.param_backup[id(p)] = (p, p.detach().clone())

    def restore_params(self) -> None:
        with torch.no_grad():
            for p, saved in self.param_backup.values():
                p.copy_(saved)

    # -- per call ----------------------------------------------------------------------------
    def preinit(self, unit: _Unit) -> None:
        w = unit.weight
        if w.preinit_done:
            return
        w.preinit_done = True
        if not (self.orthogonal_first or (self.zero_bias and unit.bias_param is not None)):
            return
        self.backup(w.param)
        if self.orthogonal_first:
            view = w.view()
            step = view.shape[0] // w.blocks
            for i in range(w.blocks):
                blk = view if w.blocks == 1 else view[i * step : (i + 1) * step]
                _orthogonal(blk, w.name if w.blocks == 1 else f"{w.name}[{i}]", self.seed, self.generator)
            for name, p, rows in w.extra_ortho:
                self.backup(p)
                _orthogonal(p if rows is None else p[rows], name, self.seed, self.generator)
                self.wrote(p)
        b = unit.bias()
        if self.zero_bias and b is not None and unit.bias_param is not None:
            self.backup(unit.bias_param)
            b.zero_()

    def measure(self, unit: _Unit, t: torch.Tensor, bias: torch.Tensor | None, dim: int,
                has_bias: bool, inp: Any = None) -> tuple[float, float, float, int]:  # fmt: skip
        name = unit.weight.name
        if t.numel() < 2:
            raise LSUVError(f"lsuv: layer {name!r} produced fewer than 2 values", name)
        a, c, d, n = _stats(t, bias, dim, has_bias=has_bias)
        if not self.include_bias:
            c = d = 0.0
        if not math.isfinite(a):
            why = "its weight or bias"
            bad_input = isinstance(inp, torch.Tensor) and inp.is_floating_point()
            if bad_input and not bool(torch.isfinite(inp).all()):
                why = "its input (an earlier operation overflowed or produced NaN)"
            raise LSUVError(
                f"lsuv: the output of layer {name!r} (module {unit.module_name or '<root>'}) "
                f"is not finite (NaN or inf, or its variance overflows); the cause is {why}",
                name,
            )
        return a, c, d, n

    def visit(self, unit: _Unit, t: torch.Tensor, bias: torch.Tensor | None, dim: int,
              has_bias: bool, inp: Any = None) -> float:  # fmt: skip
        """Measure one call, maybe rescale the weight; return the factor applied (1 if none)."""
        w = unit.weight
        call = w.calls
        w.calls += 1
        self.last_visited = w.name
        key = (w.name, call)
        a, c, d, n = self.measure(unit, t, bias, dim, has_bias, inp)
        std = _std(a, c, d, n)
        first_pass = self.pass_index == 1
        s = 1.0
        if call == 0 and (first_pass or abs(std / self.target - 1.0) > self.tol):
            s = _solve_scale(a, c, d, n, self.target, w.name)
            with torch.no_grad():
                w.view().mul_(s)
            torch.clear_autocast_cache()  # a cached low-precision copy of w is stale now
            w.scale *= s
            w.iterations += 1
            self.corrections += 1
        row = self.rows.get(key)
        if row is None:
            row = [unit.module_name, unit.kind, std if first_pass else None, std, None]
            self.rows[key] = row
            self.order.append(key)
        row[3] = _std(a, c, d, n, s)
        row[0] = unit.module_name
        logger.debug("lsuv pass %d: %s call %d std %.6g -> %.6g (x%.6g)", self.pass_index,
                     w.name, call, std, row[3], s)  # fmt: skip
        if self.progress is not None:
            self.progress(LSUVStep(self.pass_index, w.name, call, std, s))
        return s

    def hook_pre(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.active[id(module)] = self.active.get(id(module), 0) + 1
        self.internal += 1
        try:
            with self.quiet():
                self._pre(module, args, kwargs)
        finally:
            self.internal -= 1

    def rnn_input(self, m: nn.RNNBase, layer: int, args: tuple[Any, ...],
                  kwargs: dict[str, Any], stack: list[Any]) -> Any:  # fmt: skip
        """Input of ``layer`` of a stacked RNN in this call: the lower layers, already
        calibrated, are run one by one (``stack`` caches their outputs for this call)."""
        if not stack:
            stack.append(args[0] if args else kwargs.get("input"))
        hx = args[1] if len(args) > 1 else kwargs.get("hx")
        while len(stack) <= layer:
            stack.append(_rnn_layer_output(m, len(stack) - 1, stack[-1], hx))
        x = stack[layer]
        return x.data if isinstance(x, nn.utils.rnn.PackedSequence) else x

    def _pre(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        stack: list[Any] = []  # stacked RNN: layer inputs of this call
        for unit in self.by_module[id(module)]:
            if self.pass_index == 1:
                self.preinit(unit)
            if unit.at != "input":
                continue
            assert unit.take_input is not None
            if unit.rnn_layer > 0:
                assert isinstance(module, nn.RNNBase)
                x = self.rnn_input(module, unit.rnn_layer, args, kwargs, stack)
            else:
                x = unit.take_input(args, kwargs)
            if not isinstance(x, torch.Tensor):
                raise LSUVError(f"lsuv: cannot find the input of {unit.weight.name!r}",
                                unit.weight.name)  # fmt: skip
            u = F.linear(x, unit.weight.view()).float()
            if unit.weight.calls == 0 and self.pass_index == 1:
                self.backup(unit.weight.param)
            self.visit(unit, u, unit.bias(), -1, False, x)
            self.settle(unit)

    def hook_post(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        self.internal += 1
        try:
            with self.quiet():
                return self._post(module, args, output)
        finally:
            self.internal -= 1
            self.active[id(module)] -= 1

    def _post(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        for unit in self.by_module[id(module)]:
            if unit.at != "output":
                continue
            y = output[0] if isinstance(output, (tuple, list)) else output
            if isinstance(output, (tuple, list)) and not isinstance(module, _STOCK) and any(
                isinstance(o, torch.Tensor) for o in output[1:]
            ):
                self.doubt(f"{unit.module_name or '<root>'} returns several tensors (only the "
                           "first is corrected)")  # fmt: skip
            if not isinstance(y, torch.Tensor):
                raise LSUVError(f"lsuv: module {unit.module_name!r} returned no tensor",
                                unit.weight.name)  # fmt: skip
            if y.requires_grad:
                raise LSUVError(
                    f"lsuv: the output of {unit.weight.name!r} is part of an autograd graph built "
                    "inside the model's forward pass (torch.enable_grad, e.g. a forward that "
                    "differentiates its output); weights saved for that backward cannot be "
                    "rescaled in place. Calibrate the differentiated sub-network itself: "
                    "lsuv(model.net, inputs)",
                    unit.weight.name,
                )
            bias = unit.bias()
            if y.dtype not in (torch.float32, torch.float64):
                self.doubt(f"{unit.weight.name} outputs {y.dtype} (rounding)")
            y32 = y.detach() if y.dtype in (torch.float32, torch.float64) else y.detach().float()
            dim = unit.bias_dim(y)
            if self.pass_index == 1 and unit.weight.calls == 0:
                self.backup(unit.weight.param)
            s = self.visit(unit, y32, bias, dim, True, args[0] if args else None)
            if s != 1.0:  # y' = s * (y - B) + B, what the rescaled weight produces
                if bias is None:
                    new = y32 * s
                else:
                    new = torch.add(_bias_view(bias, y32, dim) * (1.0 - s), y32, alpha=s)
                y = new.to(y.dtype)
                if isinstance(output, tuple):
                    output = (y, *output[1:])
                elif isinstance(output, list):
                    output = [y, *output[1:]]
                else:
                    output = y
            self.note_output(y, unit)
            self.settle(unit)
        return output

    def note_output(self, y: torch.Tensor, unit: _Unit) -> None:
        key = (unit.weight.name, unit.weight.calls - 1)
        self.outputs[id(y)] = y
        self.output_keys[id(y)] = key

    def hook_norm(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if not args or not isinstance(args[0], torch.Tensor) or not _uses_batch_stats(module):
            return
        x = args[0]
        if self.outputs.get(id(x)) is x:
            key = self.output_keys[id(x)]
            self.rows[key][4] = self.norm_names[id(module)]

    # -- passes ------------------------------------------------------------------------------
    def run_pass(self, call: Callable[[], Any]) -> None:
        self.pass_index += 1
        self.corrections = 0
        self.last_visited = None
        for u in self.units:
            u.weight.calls = 0
        self.outputs = weakref.WeakValueDictionary()
        self.output_keys = {}
        torch.clear_autocast_cache()
        call()

    def install(self) -> list[Any]:
        mods: dict[int, nn.Module] = {}
        for u in self.units:
            self.by_module.setdefault(id(u.module), []).append(u)
            mods[id(u.module)] = u.module
        handles = []
        pre, post, norm = self.hook_pre, self.hook_post, self.hook_norm
        if any(_is_compile_wrapper(m) for m in self.model.modules()):
            # a torch.compile'd submodule: keep dynamo out of the hooks (they change weights
            # it guards on); imported only here, torch._dynamo is slow to import
            pre, post, norm = (torch.compiler.disable(h) for h in (pre, post, norm))
        for m in mods.values():
            handles.append(m.register_forward_pre_hook(pre, with_kwargs=True))
            handles.append(m.register_forward_hook(post))
        for name, m in self.model.named_modules():
            if isinstance(m, _NORMS):
                self.norm_names[id(m)] = name
                handles.append(m.register_forward_pre_hook(norm))
        return handles


def _is_compile_wrapper(m: nn.Module) -> bool:
    """``torch.compile(module)``'s wrapper (its eager module is ``m._orig_mod``)."""
    return type(m).__name__ == "OptimizedModule" and isinstance(getattr(m, "_orig_mod", None), nn.Module)


def _uncompile(model: nn.Module) -> list[tuple[nn.Module, Any]]:
    """Run modules compiled in place (``module.compile()``) eagerly during the passes.

    Dynamo would otherwise trace the calibration hooks (and guard on weights they change).
    Returns what to restore. ``torch.compile(model)`` wrappers are unwrapped by the caller.
    """
    out = []
    for m in model.modules():
        impl = getattr(m, "_compiled_call_impl", None)
        if impl is not None:
            out.append((m, impl))
            m._compiled_call_impl = None
    return out


def _resolve_inputs(inputs: Any, input_fn: Callable[[Any], Any] | None
                    ) -> tuple[tuple[Any, ...], dict[str, Any]]:  # fmt: skip
    packed = nn.utils.rnn.PackedSequence  # a NamedTuple, but one input
    if input_fn is None and not isinstance(inputs, (torch.Tensor, tuple, list, Mapping)):
        if isinstance(inputs, Iterable):  # a DataLoader or any iterable of batches
            batch = next(iter(inputs))
            if isinstance(batch, (tuple, list)) and not isinstance(batch, packed):
                batch = batch[0]  # (x, y) batch: only x goes to the model
            inputs = batch
        else:
            raise TypeError(
                "inputs must be a tensor, a tuple/list of positional inputs, a dict of keyword "
                f"inputs or a DataLoader, got {type(inputs).__name__}"
            )
    if input_fn is not None:
        if not isinstance(inputs, (torch.Tensor, tuple, list, Mapping)) and isinstance(
            inputs, Iterable
        ):
            inputs = next(iter(inputs))
        inputs = input_fn(inputs)
    if isinstance(inputs, Mapping):
        return (), dict(inputs)
    if isinstance(inputs, (tuple, list)) and not isinstance(inputs, packed):
        return tuple(inputs), {}
    return (inputs,), {}


def _sequence_first(model: nn.Module) -> bool:
    """True if the model has torch layers that take ``[time, batch, ...]`` inputs."""
    kinds = (nn.RNNBase, nn.MultiheadAttention, nn.TransformerEncoderLayer,
             nn.TransformerDecoderLayer, nn.Transformer)  # fmt: skip
    return any(isinstance(m, kinds) and not getattr(m, "batch_first", True) for m in model.modules())


def _check_inputs(args: tuple[Any, ...], kwargs: dict[str, Any], seq_first: bool = False) -> None:
    named = [(f"inputs[{i}]", a) for i, a in enumerate(args)]
    named += [(f"inputs[{k!r}]", v) for k, v in kwargs.items()]
    tensors: list[tuple[str, torch.Tensor, int | None]] = []  # (name, values, batch size)
    for n, a in named:
        if isinstance(a, nn.utils.rnn.PackedSequence):  # batch: the sequences at step 0
            tensors.append((n, a.data, int(a.batch_sizes[0])))
        elif isinstance(a, torch.Tensor):
            tensors.append((n, a, int(a.shape[0]) if a.dim() >= 1 else None))
    if not tensors:
        raise TypeError("lsuv: inputs contain no tensor")
    masks = set()
    for n, t, _ in tensors:
        if not t.is_floating_point() or bool(torch.isfinite(t).all()):
            continue
        # -inf is how additive attention masks say "never"; in the data it makes the first
        # layer's output non-finite, which is reported there
        if bool(torch.isnan(t).any()) or bool((t == math.inf).any()):
            raise ValueError(f"lsuv: {n} contains NaN or +inf values")
        masks.add(n)
    name, first, batch = next((x for x in tensors if x[0] not in masks), tensors[0])
    if seq_first and first.dim() >= 3 and first.shape[1] >= 2:
        return  # [time, batch, ...] for sequence-first layers: dim 0 may be one time step
    if batch is not None and batch < 2:
        raise ValueError(
            f"lsuv: a batch of {batch} sample(s) (leading dimension of {name}, shape "
            f"{tuple(first.shape)}); LSUV needs a mini-batch of at least 2 samples "
            "(per-layer statistics of a single example are not those of the data)"
        )


def lsuv(
    model: nn.Module,
    inputs: Any,
    *,
    target_std: float = 1.0,
    tol: float = 0.01,
    max_iter: int = 10,
    orthogonal_first: bool = True,
    seed: int | None = 0,
    only: Only = None,
    include_bias: bool = True,
    zero_bias: bool = False,
    input_fn: Callable[[Any], Any] | None = None,
    custom_layers: Mapping[type, LayerRule | str] | None = None,
    progress: Callable[[LSUVStep], None] | None = None,
    verify: bool | Literal["auto"] = "auto",
) -> LSUVReport:
    """Initialize ``model`` in place by LSUV: orthogonal pre-init, then unit output std per layer.

    Mishkin & Matas, "All you need is a good init" (ICLR 2016). Every weighted layer (see the
    module docstring) is calibrated in execution order, in one forward pass: a hook rescales
    ``W`` by the exact ``s`` solving ``std(s * (y - b) + b) = target_std`` and passes the
    corrected output on. When the first pass cannot be proven to equal a fresh pass with the
    final weights (see the module docstring), further passes verify (and fix drift) until one
    needs no correction.

    Args:
        model: the model; modified in place (only calibrated weights and, with
            ``zero_bias``, their biases).
        inputs: a tensor (``model(x)``), a tuple/list (positional: ``model(*inputs)``), a dict
            (keywords: ``model(**inputs)``), or a DataLoader / iterable of batches (its first
            batch; a tuple/list batch ``(x, y)`` sends only ``x``). Must be on the model's
            device.
        target_std: the output std every calibrated layer gets.
        tol: relative tolerance ``|std / target_std - 1| <= tol`` for the verification pass.
        max_iter: maximum number of calibration passes (a final verification pass follows
            if the last one still corrected something).
        orthogonal_first: pre-initialize weights orthogonally (per gate / q, k, v block);
            ``False`` keeps the current weights and only rescales them.
        seed: seed of the orthogonal pre-init, per weight name (independent of the global RNG
            and of the order of layers); ``None`` uses the global RNG.
        only: calibrate only these layers: module or parameter names (exact or prefixes on
            ``.``), or a predicate ``(module_name, module) -> bool``. Others are untouched.
        include_bias: target the std of the output with the bias (default) or without it.
        zero_bias: zero the calibrated layers' biases before calibrating.
        input_fn: maps ``inputs`` (or a DataLoader's first batch) to the model input, which is
            then passed by the tensor / tuple / dict rule above.
        custom_layers: ``{LayerType: LayerRule(...)}`` or ``{LayerType: "weight_name"}`` for
            user layers whose output is linear in that weight.
        progress: called with an :class:`LSUVStep` after each layer call is measured.
        verify: ``"auto"`` (default): a verification pass only when the first pass is not
            provably exact (``report.verify_reasons`` says why); ``True``: always;
            ``False``: never (the reasons are still reported).

    Returns:
        An :class:`LSUVReport` (rows in execution order, forward passes used, convergence).

    Raises:
        LSUVError: a layer produced non-finite values, zero variance, or its bias alone
            exceeds the target; the model is restored bitwise.
        ValueError: bad options, non-finite inputs, a one-sample batch, unknown ``only`` names.

    Example:
        >>> net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
        >>> report = lsuv(net, torch.randn(64, 16, generator=torch.Generator().manual_seed(0)))
        >>> report.forward_passes, report.converged, round(report.layers[-1].std_after, 2)
        (1, True, 1.0)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"lsuv: model must be an nn.Module, got {type(model).__name__}")
    while _is_compile_wrapper(model):  # torch.compile(model): calibrate the eager module
        model = getattr(model, "_orig_mod")  # noqa: B009 (typed as Tensor | Module)
    target = check_finite_positive("target_std", target_std)
    tol = check_finite_positive("tol", tol)
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    if verify not in (True, False, "auto") or (verify is not True and verify == 1):
        raise ValueError(f"verify must be True, False or 'auto', got {verify!r}")
    custom: dict[type, LayerRule] = {}
    for t, r in (custom_layers or {}).items():
        if not (isinstance(t, type) and issubclass(t, nn.Module)):
            raise TypeError(f"custom_layers keys must be nn.Module types, got {t!r}")
        custom[t] = LayerRule(r) if isinstance(r, str) else r
        if not isinstance(custom[t], LayerRule):
            raise TypeError(f"custom_layers values must be LayerRule or str, got {r!r}")
    args, kwargs = _resolve_inputs(inputs, input_fn)
    _check_inputs(args, kwargs, _sequence_first(model))
    parametrized: list[str] = []
    units = _select(_discover(model, custom, parametrized), only)
    if parametrized:
        warnings.warn(
            f"lsuv: left untouched ({', '.join(parametrized)}): parametrized layers (rescale "
            "before applying weight_norm/spectral_norm-style parametrizations) and weights tied "
            "to an embedding table are not calibrated",
            InitwiseWarning,
            stacklevel=2,
        )
    if not units:
        raise ValueError(f"lsuv: no layer to calibrate in {type(model).__name__}")

    run = _Run(model, units, target=target, tol=tol, include_bias=include_bias,
               orthogonal_first=orthogonal_first, zero_bias=zero_bias, seed=seed,
               progress=progress)  # fmt: skip
    modes = {id(m): (m, m.training) for m in model.modules()}
    # (module, name, the buffer object, its values): a forward that re-assigns a buffer
    # (``self.steps = self.steps + 1``) gets the original object back, with its values
    buffers = [(m, k, b, b.detach().clone()) for m in model.modules()
               for k, b in m._buffers.items() if b is not None]  # fmt: skip
    compiled: list[tuple[nn.Module, Any]] = []
    handles: list[Any] = []
    converged = False
    verified = True
    missing: list[str] = []
    try:
        compiled = _uncompile(model)
        for m in model.modules():
            if isinstance(m, _NO_FASTPATH):
                m.training = True
            elif not isinstance(m, _KEEP_MODE):
                m.training = False
        prove = verify is not True
        watch = run.proof_begin() if prove else None  # before install(): sees foreign hooks
        handles = run.install()

        def forward() -> Any:
            try:
                return model(*args, **kwargs)
            except LSUVError:
                raise
            except Exception as err:
                last = run.last_visited
                where = f" after layer {last!r}" if last else " before the first calibrated layer"
                raise LSUVError(
                    f"lsuv: the model's forward pass {run.pass_index} failed{where}: "
                    f"{type(err).__name__}: {err}",
                    last,
                ) from err

        with torch.no_grad():
            for _ in range(max_iter):
                if run.pass_index == 0 and watch is not None:
                    run.watching = True
                    try:
                        with watch:
                            run.run_pass(forward)
                    finally:
                        run.watching = False
                else:
                    run.run_pass(forward)
                if run.pass_index == 1:
                    missing = [u.weight.name for u in units if not u.weight.preinit_done]
                    if prove:
                        run.proof_end()
                        if verify is False or not run.reasons:
                            converged, verified = True, False  # rows: the corrected outputs
                            break
                if run.pass_index > 1 and run.corrections == 0:
                    converged = True
                    break
            if not converged:
                saved_tol, run.tol = run.tol, math.inf  # measure only
                run.run_pass(forward)
                run.tol = saved_tol
    except BaseException:
        run.restore_params()
        raise
    finally:
        for h in handles:
            h.remove()
        with torch.no_grad():
            for m, k, b, saved in buffers:
                m._buffers[k] = b
                b.copy_(saved)
        for m, mode in modes.values():
            m.training = mode
        for m, impl in compiled:
            m._compiled_call_impl = impl
        torch.clear_autocast_cache()

    rows: list[LSUVLayer] = []
    errors: list[float] = []
    scales = {u.weight.name: u.weight for u in units}
    for key in run.order:
        module, kind, before, after, normalized = run.rows[key]
        w = scales[key[0]]
        rows.append(LSUVLayer(key[0], module, kind, key[1], key[1] == 0, before, after,
                              w.scale, w.iterations, normalized))  # fmt: skip
        if key[1] == 0:
            errors.append(abs(after / target - 1.0))
    max_error = max(errors, default=0.0)
    converged = max_error <= tol
    if not converged:
        warnings.warn(
            f"lsuv: not converged after {run.pass_index} passes: max |std/target - 1| = "
            f"{max_error:.3g} > tol {tol:g}",
            InitwiseWarning,
            stacklevel=2,
        )
    skipped = sorted(set(missing))
    if skipped:
        logger.info("lsuv: layers never executed, left untouched: %s", ", ".join(skipped))
    report = LSUVReport(rows, run.pass_index, target, tol, include_bias, converged, max_error,
                        skipped, parametrized, verified, list(run.reasons))  # fmt: skip
    logger.info("%s", report)
    return report
