"""Fans: how many inputs feed each output (fan_in) and how many outputs each input feeds (fan_out).

This is the one place that interprets weight shapes. Tensors follow torch's layout
``[out, in, *kernel]``. Modules whose weights are laid out differently, or whose real
connectivity differs from what the shape says (grouped and transposed convolutions, packed
attention projections, stacked RNN gates), are described by the rules below, so that an
init with ``std = gain / sqrt(fan_in)`` preserves the forward variance and one with
``std = gain / sqrt(fan_out)`` preserves the backward (gradient) variance.

Module rules (``k`` = kernel size, ``s`` = stride, ``g`` = groups; products over spatial dims):

==========================  ================================  ==================================
module / parameter          fan_in                            fan_out
==========================  ================================  ==================================
Linear                      in_features                       out_features
Bilinear ``[out, i1, i2]``  ``i1 * i2``                       ``out * 2*i1*i2 / (i1 + i2)``
Conv{1,2,3}d                ``(in/g) * prod(k)``              ``(out/g) * prod(k / s)``
ConvTranspose{1,2,3}d       ``(in/g) * prod(k / s)``          ``(out/g) * prod(k)``
MultiheadAttention packed   ``E`` (one q/k/v block)           ``E``
  ``in_proj_weight``
MHA ``{q,k,v}_proj_weight`` ``E``, ``kdim``, ``vdim``         ``E``
RNN/LSTM/GRU (+ cells)      ``weight.shape[1]``               ``hidden_size`` (one gate block)
  ``weight_ih*/weight_hh*``
LSTM ``weight_hr*``         ``hidden_size``                   ``proj_size``
Embedding, EmbeddingBag     ``1`` (one-hot lookup)            ``embedding_dim``
HF ``Conv1D`` ``[in, out]`` ``weight.shape[0]``               ``weight.shape[1]``
norm layers                 error: norm scales have no fans (they are initialized to 1)
anything else               :func:`tensor_fans` of the parameter
==========================  ================================  ==================================

Conventions worth knowing:

* **Strides.** A strided convolution's backward pass is a transposed convolution, so each input
  element feeds ``(out/g) * prod(k_i / s_i)`` outputs *on average* over positions (exactly when
  ``k`` is divisible by ``s``; otherwise the count alternates between ``floor`` and ``ceil``).
  The same average is the fan_in of a strided transposed convolution. With these averages a
  fan_in (fan_out) init preserves the forward (gradient) variance averaged over positions.
  The value may be fractional (``Conv1d(k=3, stride=2)`` has fan_out ``1.5 * out/g``), which
  is why :class:`Fans` holds floats. Dilation and padding do not change the interior counts.
* **Grouped / depthwise convolutions** see only their group's channels: torch's tensor rule
  gives a fan_out ``groups`` times too large.
* **Bilinear** ``y_k = sum_ij W[k, i, j] x1_i x2_j``: each output sums ``i1 * i2`` products,
  which have unit variance for independent unit-variance inputs, so ``fan_in = i1 * i2``. On
  the backward side an ``x1`` element feeds ``out * i2`` terms and an ``x2`` element
  ``out * i1``; we use ``out * 2*i1*i2 / (i1 + i2)``, which gives the concatenated input
  ``[x1, x2]`` unit gradient variance on average over its ``i1 + i2`` elements (exact for each
  of them when ``i1 == i2``).
* **Packed / gated weights** (attention ``in_proj_weight``, RNN gates) are several matrices
  stacked along rows; their fans are those of one block, and :func:`gate_blocks` says how many
  blocks there are. torch's Xavier on the packed ``[3E, E]`` tensor uses ``fan_out = 3E`` and
  gives each block variance ``1 / (2E)`` instead of ``1 / E``.
* **Embeddings** are lookups: each output element is one weight entry (a one-hot input), so
  ``fan_in = 1`` and a fan_in init with linear gain is ``N(0, 1)``, torch's default. Each row
  feeds ``embedding_dim`` outputs, so ``fan_out = embedding_dim``. EmbeddingBag sums (or
  averages) several lookups; the bag size is data-dependent and not part of the fans.
* **Extension.** :func:`register_fans` adds rules for your own layer types; registered rules
  are checked before the built-in ones, most derived class first.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, TypeVar, Union

import torch
from torch import nn

from . import _torch
from ._math import select_fan, shape_fans
from ._modules import is_hf_conv1d, is_norm

__all__ = [
    "Axis",
    "FanRule",
    "Fans",
    "TensorLayout",
    "WeightAxes",
    "axis_fans",
    "describe_layout",
    "fans",
    "gate_blocks",
    "plan_layout",
    "register_fans",
    "register_layout",
    "registered_layout",
    "tensor_fans",
    "unregister_fans",
    "unregister_layout",
]


class Fans(NamedTuple):
    """The fans of a weight: ``fan_in`` feeds each output, ``fan_out`` is fed by each input.

    Values are floats because some layers (strided transposed convolutions) have a
    non-integer average connectivity.
    """

    fan_in: float
    fan_out: float

    def select(self, mode: str) -> float:
        """Return the fan for ``mode`` (fan_in, fan_out, fan_avg or fan_geo_avg)."""
        return select_fan(self.fan_in, self.fan_out, mode)


FanRule = Callable[[nn.Module, str], Fans]
"""A user rule: ``fn(module, name) -> Fans`` for parameter ``name`` of ``module``."""

_R = TypeVar("_R", bound=Callable[[nn.Module, str], Fans])


def tensor_fans(tensor: torch.Tensor | torch.Size | tuple[int, ...]) -> Fans:
    """Return the fans of a tensor (or shape) in torch's ``[out, in, *kernel]`` layout.

    ``fan_in = in * prod(kernel)`` and ``fan_out = out * prod(kernel)``, as in
    ``torch.nn.init._calculate_fan_in_and_fan_out``. Works on meta tensors.

    >>> tensor_fans(torch.empty(64, 32, 3, 3))
    Fans(fan_in=288.0, fan_out=576.0)
    """
    return Fans(*shape_fans(tensor.shape if isinstance(tensor, torch.Tensor) else tensor))


def _calculate_fan_in_and_fan_out(tensor: torch.Tensor) -> tuple[int, int]:
    """torch.nn.init's private ``(fan_in, fan_out)`` helper, for code that calls it through ``init``.

    Custom layers copy ``nn.Linear.reset_parameters``, which calls
    ``init._calculate_fan_in_and_fan_out(self.weight)``; with ``import initwise as init`` that
    call keeps working and returns torch's ints. New code: :func:`tensor_fans`.

    >>> _calculate_fan_in_and_fan_out(torch.empty(64, 32, 3, 3))
    (288, 576)
    """
    if tensor.dim() < 2:
        raise ValueError(
            "Fan in and fan out can not be computed for tensor with fewer than 2 dimensions "
            f"(got shape {tuple(tensor.shape)}); pass fans=initwise.Fans(fan_in, fan_out) to a scheme"
        )
    fan_in, fan_out = shape_fans(tensor.shape)
    return int(fan_in), int(fan_out)


def _calculate_correct_fan(tensor: torch.Tensor, mode: str) -> int:
    """torch.nn.init's private helper: the fan ``mode`` (``fan_in`` or ``fan_out``, any case) selects.

    >>> _calculate_correct_fan(torch.empty(64, 32, 3, 3), "FAN_OUT")
    576
    """
    key = mode.lower() if isinstance(mode, str) else mode
    if key not in ("fan_in", "fan_out"):
        raise ValueError(f"Mode {mode!r} not supported, please use one of fan_in, fan_out")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if key == "fan_in" else fan_out


Axis = Union[int, Sequence[int]]  # noqa: UP007
"""A fan axis: one dimension or several (JAX's ``in_axis`` / ``out_axis`` / ``batch_axis``)."""


def _axes(name: str, value: object, ndim: int, where: str) -> tuple[int, ...]:
    items = (value,) if isinstance(value, numbers.Integral) and not isinstance(value, bool) else value
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise TypeError(f"{where}: {name} must be an int or a sequence of ints, got {value!r}")
    out = []
    for ax in items:
        if isinstance(ax, bool) or not isinstance(ax, numbers.Integral):
            raise TypeError(f"{where}: {name} must be an int or a sequence of ints, got {value!r}")
        if not -ndim <= int(ax) < ndim:
            raise ValueError(
                f"{where}: {name}={value!r} is out of range for a {ndim}-D tensor "
                f"(valid: {-ndim} .. {ndim - 1})"
            )
        out.append(int(ax) % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{where}: {name}={value!r} names a dimension twice")
    return tuple(out)


def axis_fans(
    shape: torch.Size | Sequence[int],
    *,
    in_axis: Axis = 1,
    out_axis: Axis = 0,
    batch_axis: Axis = (),
    where: str = "axis_fans",
) -> Fans:
    """Return the fans of ``shape`` with explicit axes, with JAX's ``variance_scaling`` semantics.

    ``fan_in = prod(shape[in_axis]) * receptive`` and ``fan_out = prod(shape[out_axis]) *
    receptive``, where ``receptive`` is the product of every dimension that is neither an in,
    an out nor a batch axis (batch dims count in no fan: one independent matrix per batch
    index). Axes may be negative and may be sequences. The defaults are torch's layout
    ``[out, in, *kernel]`` (:func:`tensor_fans`); JAX's defaults are ``in_axis=-2``,
    ``out_axis=-1`` (``[*kernel, in, out]``).

    >>> axis_fans((3, 3, 16, 32), in_axis=-2, out_axis=-1)  # a JAX/Keras conv kernel
    Fans(fan_in=144.0, fan_out=288.0)
    >>> axis_fans((8, 64, 32), in_axis=2, out_axis=1, batch_axis=0)  # 8 stacked [64, 32] weights
    Fans(fan_in=32.0, fan_out=64.0)
    """
    dims = tuple(int(s) for s in shape)
    nd = len(dims)
    if nd == 0:
        raise ValueError(f"{where}: fan axes need a tensor with at least 1 dimension, got shape ()")
    ins = _axes("in_axis", in_axis, nd, where)
    outs = _axes("out_axis", out_axis, nd, where)
    batch = _axes("batch_axis", batch_axis, nd, where)
    for (n1, a1), (n2, a2) in (
        (("in_axis", ins), ("out_axis", outs)),
        (("in_axis", ins), ("batch_axis", batch)),
        (("out_axis", outs), ("batch_axis", batch)),
    ):
        common = set(a1) & set(a2)
        if common:
            raise ValueError(f"{where}: {n1} and {n2} share dimension(s) {sorted(common)}")
    if not ins or not outs:
        raise ValueError(f"{where}: in_axis and out_axis must each name at least one dimension")
    used = set(ins) | set(outs) | set(batch)
    receptive = math.prod(d for i, d in enumerate(dims) if i not in used)
    fan_in = math.prod(dims[i] for i in ins) * receptive
    fan_out = math.prod(dims[i] for i in outs) * receptive
    if fan_in <= 0 or fan_out <= 0:
        raise ValueError(f"{where}: shape {dims} has a zero-size fan (fan_in={fan_in}, fan_out={fan_out})")
    return Fans(float(fan_in), float(fan_out))


# --------------------------------------------------------------------------------------------
# Built-in module rules. Each returns a _Layout for (module, name, shape); ``fans`` is None for
# parameters that have no fans (biases, other 1-D tensors), and ``error`` says why when the
# module type has no fans at all (norm layers).


@dataclass(frozen=True)
class _Layout:
    fans: Fans | None
    blocks: int
    description: str
    error: str | None = None


def _generic(module: nn.Module, name: str, shape: tuple[int, ...], what: str) -> _Layout:
    if len(shape) >= 2:
        return _Layout(tensor_fans(shape), 1, f"{what} (tensor rule [out, in, *kernel])")
    return _Layout(None, 1, f"{what} {name} (1-D, no fans)")


def _linear(module: nn.Module, name: str, shape: tuple[int, ...]) -> _Layout:
    if name == "weight" and len(shape) == 2:
        return _Layout(tensor_fans(shape), 1, "linear [out, in]")
    return _generic(module, name, shape, "linear")


def _bilinear(module: nn.Module, name: str, shape: tuple[int, ...]) -> _Layout:
    if name == "weight" and len(shape) == 3:
        out, in1, in2 = shape
        fan_out = out * 2.0 * in1 * in2 / (in1 + in2)
        return _Layout(Fans(float(in1 * in2), fan_out), 1, "bilinear [out, in1, in2]")
    return _generic(module, name, shape, "bilinear")


def _conv(module: nn.Module, name: str, shape: tuple[int, ...]) -> _Layout:
    if name != "weight" or len(shape) < 3:
        return _generic(module, name, shape, "conv")
    groups = int(getattr(module, "groups", 1))
    stride = tuple(getattr(module, "stride", (1,) * (len(shape) - 2)))
    taps = math.prod(shape[2:])
    per_stride = math.prod(stride)
    nd = len(shape) - 2
    if getattr(module, "transposed", False):
        # torch stores [in, out/g, *k]; each output position receives prod(k/s) taps on average.
        fan_in = shape[0] / groups * taps / per_stride
        fan_out = float(shape[1] * taps)
        kind = f"transposed conv{nd}d"
    else:
        # [out, in/g, *k]; each input position feeds prod(k/s) output positions on average.
        fan_in = float(shape[1] * taps)
        fan_out = shape[0] / groups * taps / per_stride
        kind = f"conv{nd}d"
    parts = [kind]
    if groups > 1:
        depthwise = getattr(module, "in_channels", 0) == groups
        parts.append(f"{'depthwise ' if depthwise else ''}groups={groups}")
    if per_stride != 1:
        parts.append(f"stride {stride[0] if len(set(stride)) == 1 else stride}")
    return _Layout(Fans(fan_in, fan_out), 1, " ".join(parts))


def _mha(module: nn.Module, name: str, shape: tuple[int, ...]) -> _Layout:
    if name == "in_proj_weight" and len(shape) == 2:
        e = shape[0] // 3
        return _Layout(
            Fans(float(shape[1]), float(e)), 3, f"mha packed qkv block (3 x [{e}, {shape[1]}])"
        )
    if name == "in_proj_bias":
        return _Layout(None, 3, "mha packed qkv bias (3 blocks)")
    if name in ("q_proj_weight", "k_proj_weight", "v_proj_weight") and len(shape) == 2:
        return _Layout(tensor_fans(shape), 1, f"mha {name[0]} projection [E, {name[0]}dim]")
    return _generic(module, name, shape, "mha")


def _rnn_gates(module: nn.Module) -> tuple[int, str]:
    if isinstance(module, nn.RNNBase):
        mode = str(module.mode)
        return {"LSTM": 4, "GRU": 3}.get(mode, 1), {"RNN_TANH": "rnn", "RNN_RELU": "rnn"}.get(
            mode, mode.lower()
        )
    if isinstance(module, nn.LSTMCell):
        return 4, "lstm"
    if isinstance(module, nn.GRUCell):
        return 3, "gru"
    return 1, "rnn"


def _rnn(module: nn.Module, name: str, shape: tuple[int, ...]) -> _Layout:
    gates, kind = _rnn_gates(module)
    if name.startswith("weight_hr") and len(shape) == 2:
        return _Layout(tensor_fans(shape), 1, f"{kind} projection [proj, hidden]")
    if name.startswith(("weight_ih", "weight_hh")) and len(shape) == 2:
        hidden = shape[0] // gates
        what = "gate block" if gates > 1 else "weight"
        return _Layout(
            Fans(float(shape[1]), float(hidden)),
            gates,
            f"{kind} {what} ({gates} x [{hidden}, {shape[1]}])",
        )
    if name.startswith(("bias_ih", "bias_hh")):
        return _Layout(None, gates, f"{kind} gate bias ({gates} blocks)")
    return _generic(module, name, shape, kind)


def _embedding(module: nn.Module, name: str, shape: tuple[int, ...]) -> _Layout:
    if name == "weight" and len(shape) == 2:
        return _Layout(Fans(1.0, float(shape[1])), 1, "embedding rows (one-hot lookup)")
    return _generic(module, name, shape, "embedding")


def _hf_conv1d(module: nn.Module, name: str, shape: tuple[int, ...]) -> _Layout:
    if name == "weight" and len(shape) == 2:
        return _Layout(Fans(float(shape[0]), float(shape[1])), 1, "hf conv1d transposed [in, out]")
    return _generic(module, name, shape, "hf conv1d")


def _norm(module: nn.Module, name: str, shape: tuple[int, ...]) -> _Layout:
    kind = type(module).__name__
    return _Layout(
        None,
        1,
        f"{kind.lower()} scale/shift (no fans)",
        error=(
            f"fans: {kind}.{name} is a normalization parameter and has no fans (norm weights "
            f"are initialized to 1 and biases to 0)"
        ),
    )


_BUILTIN: tuple[
    tuple[tuple[type[nn.Module], ...], Callable[[nn.Module, str, tuple[int, ...]], _Layout]], ...
] = (
    ((nn.Linear,), _linear),
    ((nn.Bilinear,), _bilinear),
    ((_torch.ConvNd,), _conv),
    ((nn.MultiheadAttention,), _mha),
    ((nn.RNNBase, nn.RNNCellBase), _rnn),
    ((nn.Embedding, nn.EmbeddingBag), _embedding),
)

# User rules (register_fans). Keyed by exact class; lookup walks the MRO, most derived first.
_REGISTRY: dict[type[nn.Module], FanRule] = {}


def register_fans(module_type: type[nn.Module], fn: _R | None = None) -> _R | Callable[[_R], _R]:
    """Register ``fn(module, name) -> Fans`` as the fan rule for ``module_type`` and subclasses.

    Registered rules are checked before the built-in ones (the most derived registered class
    wins), so they can also override a built-in rule. Use it for your own layers whose weight
    layout is not ``[out, in, *kernel]``. Works as a call or as a decorator; undo with
    :func:`unregister_fans`. Registration is process-wide.

    Args:
        module_type: an ``nn.Module`` subclass.
        fn: the rule; it receives the module and the parameter name and returns :class:`Fans`
            (or a ``(fan_in, fan_out)`` pair of positive numbers).

    >>> class Transposed(torch.nn.Module):  # stores its weight as [in, out]
    ...     def __init__(self) -> None:
    ...         super().__init__()
    ...         self.weight = torch.nn.Parameter(torch.zeros(3, 5))
    >>> _ = register_fans(Transposed, lambda m, name: Fans(*getattr(m, name).shape))
    >>> fans(Transposed())
    Fans(fan_in=3.0, fan_out=5.0)
    >>> unregister_fans(Transposed)
    """
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise TypeError(
            f"register_fans: module_type must be an nn.Module subclass, got {module_type!r}"
        )

    def add(rule: _R) -> _R:
        if not callable(rule):
            raise TypeError(f"register_fans: fn must be callable as fn(module, name), got {rule!r}")
        _REGISTRY[module_type] = rule
        return rule

    return add if fn is None else add(fn)


# Explicit layouts (register_layout): (module type, parameter name) -> WeightAxes
_LAYOUTS: dict[tuple[type[nn.Module], str], WeightAxes] = {}


def register_layout(module_type: type[nn.Module], name: str, *, in_axis: Axis, out_axis: Axis,
                    batch_axis: Axis = (), parts: int = 1, contiguous: bool = True) -> None:
    """Declare how parameter ``name`` of ``module_type`` (and subclasses) is laid out.

    The explicit form of what whole-model planning otherwise reads from the model's dataflow:
    which axes the forward pass contracts (``in_axis``), produces (``out_axis``) and batches
    over (``batch_axis``: one independent matrix per index, e.g. fused experts; no fan counts
    them), with JAX's ``variance_scaling`` axis semantics (ints or sequences, negative allowed),
    and into how many equal ``parts`` the output is split (fused q/k/v or gate/up;
    ``contiguous=False`` when the parts interleave). Checked before the dataflow and the built-in
    rules; undo with :func:`unregister_layout`. Process-wide.

    >>> class Experts(torch.nn.Module):  # 8 experts, each a [64, 32] gate/up weight
    ...     def __init__(self) -> None:
    ...         super().__init__()
    ...         self.w = torch.nn.Parameter(torch.empty(8, 64, 32))
    >>> register_layout(Experts, "w", in_axis=2, out_axis=1, batch_axis=0, parts=2)
    >>> plan_layout(Experts(), "w", Experts().w).fans
    Fans(fan_in=32.0, fan_out=32.0)
    >>> unregister_layout(Experts, "w")
    """
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise TypeError(f"register_layout: module_type must be an nn.Module subclass, got {module_type!r}")
    if not isinstance(name, str) or not name:
        raise TypeError(f"register_layout: name must be a parameter name, got {name!r}")
    if isinstance(parts, bool) or not isinstance(parts, int) or parts < 1:
        raise ValueError(f"register_layout: parts must be an integer >= 1, got {parts!r}")

    def norm(value: Axis, what: str) -> tuple[int, ...]:
        items: tuple[object, ...] = (value,) if isinstance(value, int) else tuple(value)
        if not all(isinstance(a, int) and not isinstance(a, bool) for a in items):
            raise TypeError(f"register_layout: {what} must be an int or a sequence of ints, got {value!r}")
        return tuple(int(a) for a in items)  # type: ignore[call-overload]

    axes = WeightAxes(norm(in_axis, "in_axis"), norm(out_axis, "out_axis"), norm(batch_axis, "batch_axis"),
                      parts, contiguous)
    if not axes.in_axes or not axes.out_axes:
        raise ValueError("register_layout: in_axis and out_axis must name at least one axis each")
    _LAYOUTS[(module_type, name)] = axes


def unregister_layout(module_type: type[nn.Module], name: str) -> None:
    """Remove the layout registered for exactly ``(module_type, name)`` (no error if none)."""
    _LAYOUTS.pop((module_type, name), None)


def registered_layout(module: nn.Module, name: str, ndim: int) -> WeightAxes | None:
    """The layout registered for ``module``'s parameter ``name`` (most derived class first),
    with negative axes resolved for a ``ndim``-dimensional tensor."""
    for klass in type(module).__mro__:
        hit = _LAYOUTS.get((klass, name))
        if hit is not None:
            def pos(axes: tuple[int, ...]) -> tuple[int, ...]:
                return tuple(a % ndim for a in axes)

            return WeightAxes(pos(hit.in_axes), pos(hit.out_axes), pos(hit.batch_axes), hit.parts,
                              hit.contiguous)
    return None


def unregister_fans(module_type: type[nn.Module]) -> None:
    """Remove the rule registered for exactly ``module_type`` (no error if there is none).

    >>> unregister_fans(torch.nn.Linear)
    """
    _REGISTRY.pop(module_type, None)


def _registered(module: nn.Module) -> FanRule | None:
    for cls in type(module).__mro__:
        rule = _REGISTRY.get(cls)
        if rule is not None:
            return rule
    return None


def _param_names(module: nn.Module) -> list[str]:
    names = [n for n, _ in module.named_parameters()]
    names += [n for n, _ in module.named_buffers()]
    return names


def _resolve(obj: nn.Module, name: str, fn: str) -> tuple[nn.Module, str, torch.Tensor]:
    """Return the owning submodule, the leaf name and the tensor for a (dotted) name."""
    module, leaf = obj, name
    tensor: object = None
    if isinstance(name, str):
        if "." in name:
            prefix, leaf = name.rsplit(".", 1)
            try:
                module = obj.get_submodule(prefix)
            except AttributeError:
                module = obj
                leaf = name
        tensor = getattr(module, leaf, None) if leaf else None
    if not isinstance(tensor, torch.Tensor):
        valid = _param_names(obj)
        msg = f"{fn}: {type(obj).__name__} has no tensor attribute {name!r}"
        close = difflib.get_close_matches(str(name), valid, n=1, cutoff=0.6)
        if close:
            msg += f"; did you mean {close[0]!r}?"
        shown = ", ".join(valid[:20]) + (", ..." if len(valid) > 20 else "")
        msg += f" Its parameters: {shown or '(none)'}."
        raise ValueError(msg)
    if _torch.is_lazy(tensor):
        raise ValueError(
            f"{fn}: {type(module).__name__}.{leaf} is an uninitialized lazy parameter; run a "
            f"forward pass (or materialize the module) before asking for its fans"
        )
    return module, leaf, tensor


def _builtin_layout(module: nn.Module, name: str, shape: tuple[int, ...]) -> _Layout:
    if is_hf_conv1d(module):
        return _hf_conv1d(module, name, shape)
    if is_norm(module):
        return _norm(module, name, shape)
    for types, rule in _BUILTIN:
        if isinstance(module, types):
            return rule(module, name, shape)
    return _generic(module, name, shape, type(module).__name__)


def _as_fans(value: object, module: nn.Module, name: str) -> Fans:
    pair_ok = (
        isinstance(value, tuple | list)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    )
    if not isinstance(value, tuple | list) or not pair_ok:
        raise TypeError(
            f"fans: the rule registered for {type(module).__name__} returned {value!r} for "
            f"{name!r}; it must return Fans(fan_in, fan_out)"
        )
    result = Fans(float(value[0]), float(value[1]))
    if not all(math.isfinite(v) and v > 0 for v in result):
        raise ValueError(
            f"fans: the rule registered for {type(module).__name__} returned {result} for "
            f"{name!r}; fans must be finite and > 0"
        )
    return result


def fans(obj: torch.Tensor | nn.Module, name: str = "weight") -> Fans:
    """Return the fans of a tensor, or of parameter ``name`` of a module.

    For modules the fans describe the real forward and backward connectivity (see the rule
    table in this module's docstring): a fan_in init ``std = gain / sqrt(fan_in)`` preserves
    the forward variance and a fan_out init the gradient variance. Registered rules
    (:func:`register_fans`) come first; unknown module types fall back to :func:`tensor_fans`.
    ``name`` may be dotted (``"0.weight"``, ``"out_proj.weight"``). Works on meta modules.

    Args:
        obj: a tensor (``name`` is ignored) or an ``nn.Module``.
        name: the parameter (or tensor attribute) of the module.

    Raises:
        ValueError: ``name`` is not a tensor attribute (the message lists the parameters),
            the tensor has fewer than 2 dimensions, or the module is a norm layer.

    >>> fans(torch.nn.Linear(20, 30))
    Fans(fan_in=20.0, fan_out=30.0)
    >>> fans(torch.nn.Conv2d(8, 8, 3, groups=4))
    Fans(fan_in=18.0, fan_out=18.0)
    >>> fans(torch.nn.ConvTranspose2d(8, 8, 4, stride=2))
    Fans(fan_in=32.0, fan_out=128.0)
    """
    if isinstance(obj, torch.Tensor):
        return tensor_fans(obj)
    if not isinstance(obj, nn.Module):
        raise TypeError(f"fans: expected a tensor or nn.Module, got {type(obj).__name__}")
    module, leaf, tensor = _resolve(obj, name, "fans")
    rule = _registered(module)
    if rule is not None:
        return _as_fans(rule(module, leaf), module, leaf)
    shape = tuple(tensor.shape)
    layout = _builtin_layout(module, leaf, shape)
    if layout.error is not None:
        raise ValueError(layout.error)
    if layout.fans is None:
        raise ValueError(
            f"fans: {type(module).__name__}.{leaf} has shape {shape}; fans need a tensor with at "
            f"least 2 dimensions ([out, in, *kernel]) (biases have no fans; they are usually "
            f"initialized to 0)"
        )
    return layout.fans


def gate_blocks(module: nn.Module, name: str = "weight") -> int:
    """Return how many row blocks parameter ``name`` is stacked from.

    3 for the packed q/k/v ``in_proj_weight`` / ``in_proj_bias`` of ``MultiheadAttention``,
    4 for LSTM and 3 for GRU ``weight_ih*`` / ``weight_hh*`` / ``bias_*`` (also the cells),
    1 otherwise. Whole-model init initializes each block separately (e.g. orthogonal per
    gate), using :func:`fans`, which are those of one block.

    >>> gate_blocks(torch.nn.LSTM(4, 8), "weight_hh_l0")
    4
    >>> gate_blocks(torch.nn.MultiheadAttention(8, 2), "in_proj_weight")
    3
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"gate_blocks: expected an nn.Module, got {type(module).__name__}")
    owner, leaf, tensor = _resolve(module, name, "gate_blocks")
    return _builtin_layout(owner, leaf, tuple(tensor.shape)).blocks


def describe_layout(module: nn.Module, name: str = "weight") -> str:
    """Return a short human description of how parameter ``name`` is laid out (for plans).

    >>> describe_layout(torch.nn.Conv2d(8, 8, 3, groups=4))
    'conv2d groups=4'
    >>> describe_layout(torch.nn.ConvTranspose2d(8, 4, 4, stride=2))
    'transposed conv2d stride 2'
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"describe_layout: expected an nn.Module, got {type(module).__name__}")
    owner, leaf, tensor = _resolve(module, name, "describe_layout")
    if _registered(owner) is not None:
        return f"registered rule for {type(owner).__name__}"
    return _builtin_layout(owner, leaf, tuple(tensor.shape)).description


# --------------------------------------------------------------------------------------------
# Layouts for whole-model planning


@dataclass(frozen=True)
class TensorLayout:
    """How whole-model planning sees one tensor: the view drawn into, its fans, its blocks.

    ``view`` is the tensor in torch's ``[out, in, *kernel]`` layout (Hugging Face ``Conv1D``
    weights, stored ``[in, out]``, are seen transposed); ``blocks`` stacked blocks along dim 0
    (RNN gates, packed q-k-v) are drawn separately, each with ``fans``.
    """

    view: torch.Tensor
    fans: Fans | None
    blocks: int
    batch_axes: tuple[int, ...] = ()  # drawn as independent matrices (non-elementwise schemes)

    @property
    def block_shape(self) -> tuple[int, ...]:
        t = self.view
        return (t.shape[0] // self.blocks, *t.shape[1:]) if t.dim() else ()


@dataclass(frozen=True)
class WeightAxes:
    """How the forward pass uses a weight tensor: the axes it contracts with its input
    (``in_axes``), those it produces (``out_axes``), those it batches over (``batch_axes``,
    e.g. the expert axis of fused mixture-of-experts weights; they count in no fan), and into
    how many equal parts its output is split (``parts``: q/k/v, gate/up;
    ``contiguous``: the parts are consecutive blocks along the out axis, not interleaved)."""

    in_axes: tuple[int, ...]
    out_axes: tuple[int, ...]
    batch_axes: tuple[int, ...] = ()
    parts: int = 1
    contiguous: bool = True

    def fans(self, shape: tuple[int, ...]) -> Fans | None:
        """Fans per batch index and per part, or ``None`` when the axes do not fit ``shape``."""
        if not self.in_axes or not self.out_axes:
            return None
        try:
            f = axis_fans(shape, in_axis=self.in_axes, out_axis=self.out_axes,
                          batch_axis=self.batch_axes, where="layout")
        except (ValueError, TypeError):
            return None
        if self.parts > 1 and f.fan_out % self.parts == 0:
            return Fans(f.fan_in, f.fan_out / self.parts)
        return f


def plan_layout(module: nn.Module, leaf: str, tensor: torch.Tensor, *, module_name: str = "",
                source: str = "module", transposable: bool = True,
                usage: WeightAxes | None = None) -> TensorLayout:
    """The :class:`TensorLayout` of parameter ``leaf`` of ``module`` for whole-model planning.

    ``source="tensor"``: torch's raw tensor fans, one block (as ``torch.nn.init`` does).
    ``source="module"``: the module's real fans (:func:`fans`) and gate / q-k-v blocks
    (:func:`gate_blocks`; GPT-2's packed ``c_attn`` / ``qkv`` ``Conv1D`` as q, k, v blocks),
    falling back to the block's tensor fans where the module has none (``module_name``, the
    module's qualified name, identifies packed projections). ``transposable=False``
    keeps a ``Conv1D`` weight as stored (a parametrized or sharded tensor). ``usage``: how the
    forward pass uses the tensor (see :class:`WeightAxes`), read from the model's dataflow: for
    modules without a layout of their own (fused expert tensors, raw parameters used in
    ``x @ W`` or ``einsum``) it gives the fans; for a ``Linear`` / ``Conv1D`` whose output is
    split into parts it gives the parts (q/k/v, gate/up).
    """
    explicit = registered_layout(module, leaf, tensor.dim())
    if explicit is not None and source != "tensor":
        declared = explicit.fans(tuple(tensor.shape))
        if declared is None:
            raise ValueError(f"{type(module).__name__}.{leaf}: the registered layout {explicit} does not "
                             f"fit its shape {tuple(tensor.shape)}")
        return TensorLayout(tensor, declared, 1, explicit.batch_axes)
    t, packed = tensor, 1
    if transposable and is_hf_conv1d(module) and leaf == "weight" and t.dim() == 2:
        t = t.t()
        nf, nx = t.shape
        # GPT-2's packed attention projection c_attn is q, k, v (or k, v) blocks of [E, E]
        if usage is None and module_name.rsplit(".", 1)[-1] in ("c_attn", "qkv") and nf % nx == 0 \
                and nf // nx in (2, 3):
            packed = nf // nx
    if usage is not None and t.dim() == 2 and usage.parts > 1 and usage.contiguous \
            and t.shape[0] % usage.parts == 0 and (isinstance(module, nn.Linear) or is_hf_conv1d(module)):
        packed = usage.parts  # a Linear / Conv1D whose output is split: q/k/v, gate/up blocks
    blocks = 1
    f: Fans | None = None
    if source == "tensor":
        f = tensor_fans(t.shape) if t.dim() >= 2 else None
    else:
        try:
            blocks = int(gate_blocks(module, leaf))
        except (ValueError, TypeError, AttributeError):
            blocks = 1
        if t.dim() >= 2:
            try:
                f = fans(module, leaf)
            except ValueError:
                f = None
            generic = not (is_hf_conv1d(module) or _registered(module) is not None
                           or any(isinstance(module, types) for types, _ in _BUILTIN))
            if usage is not None and generic:
                axes_fans = usage.fans(tuple(t.shape))
                if axes_fans is not None:
                    return TensorLayout(t, axes_fans, 1, tuple(usage.batch_axes))
            if usage is not None and usage.parts > 1 and not usage.contiguous and f is not None:
                f = Fans(f.fan_in, f.fan_out / usage.parts)  # interleaved parts: fans only
            if packed > 1:
                blocks = packed
                f = None if f is None else Fans(f.fan_in, f.fan_out / packed)
            if f is None or not (f.fan_in > 0 and f.fan_out > 0):
                f = tensor_fans((t.shape[0] // blocks, *t.shape[1:])) if t.shape[0] % blocks == 0 else None
    if blocks > 1 and (t.dim() == 0 or t.shape[0] % blocks):
        blocks = 1
    return TensorLayout(t, f, blocks)
