"""Gains: the factor that keeps a signal's second moment unchanged through a nonlinearity.

For an activation ``f`` and a standard-normal pre-activation ``z ~ N(0, 1)``, the exact
variance-preserving gain is ``1 / sqrt(E[f(z)^2])``: scaling the next layer's weights by it
keeps ``E[x^2]`` of the signal at 1 from layer to layer (He et al., 2015, generalized to any
``f``). :func:`gain` computes it exactly: in closed form where one exists (ReLU family,
piecewise-linear/quadratic "hard" functions, exact GELU, ELU/CELU/SELU), otherwise by
adaptive composite Clenshaw-Curtis quadrature against the Gaussian density on ``[-20, 20]``,
with panel edges at every known kink and bisection of any panel that hides one, to about
``1e-13`` relative accuracy.

:func:`calculate_gain` is a drop-in for :func:`torch.nn.init.calculate_gain`. For torch's names
it returns torch's values, which are *conventions*, not second-moment-preserving gains:
``tanh`` 5/3 (exact: 1.5925), ``selu`` 3/4 (exact: 1.0000, SELU preserves ``E[x^2] = 1`` by
design), ``sigmoid`` 1 (exact: 1.8462). For names torch rejects (``gelu``, ``silu``, ``mish``,
``elu``, ...) it returns :func:`gain`.

Preserving ``E[x²]`` is not the edge of chaos: with these gains a deep tanh network is in the
chaotic phase (``χ₁ = 1.18`` for ``gain("tanh")``, 1.21 for ``calculate_gain("tanh")``), so its
gradients grow with depth; :func:`initwise.theory.isometry_gain` gives ``χ₁ = 1`` (tanh: 1).

Computed gains (default parameters; ``leaky_relu`` slope 0.01, ``prelu`` 0.25, ``elu``/``celu``
alpha 1, ``softplus`` beta 1, ``hardtanh`` [-1, 1]). A test checks this table against the code.

============  ============  ==================
name          gain          calculate_gain
============  ============  ==================
linear        1.0000000000  1.0000000000
relu          1.4142135624  1.4142135624
leaky_relu    1.4141428570  1.4141428570
prelu         1.3719886811  1.3719886811
relu6         1.4142135651  1.4142135651
relu2         0.8164965809  0.8164965809
elu           1.2451983007  1.2451983007
celu          1.2451983007  1.2451983007
selu          1.0000000000  0.7500000000
gelu          1.5335304412  1.5335304412
gelu_tanh     1.5335805217  1.5335805217
quick_gelu    1.5394587623  1.5394587623
silu          1.6765324703  1.6765324703
mish          1.4868475813  1.4868475813
softplus      1.0418668355  1.0418668355
hardswish     1.7366572128  1.7366572128
hardsigmoid   1.8978404247  1.8978404247
hardtanh      1.3920361404  1.3920361404
tanh          1.5925374197  1.6666666667
sigmoid       1.8462285453  1.0000000000
logsigmoid    1.0418668355  1.0418668355
softsign      2.3375333631  2.3375333631
============  ============  ==================

Activations can be given as a name (case-insensitive, with aliases such as ``swish`` for
``silu`` and ``gelu_new`` / ``gelu_pytorch_tanh`` for the tanh form of GELU), a ``torch.nn``
activation module (its hyperparameters are read: ``nn.LeakyReLU(0.2)``, ``nn.ELU(alpha=0.5)``,
``nn.GELU(approximate="tanh")``, ``nn.Softplus(beta=2)``, ``nn.PReLU()`` with its current
weight), a torch function (``torch.relu``, ``F.silu``, ``torch.tanh``...), or any callable on
tensors, which is evaluated on float64 tensors of quadrature nodes (two vectorized calls for a
smooth function; a few dozen small ones more when a kink or jump has to be located). A module
whose parameters are float32 is evaluated as a float64 copy.

Caching: results for names, recognized modules and recognized torch functions are cached
(:func:`functools.lru_cache` keyed by canonical name and parameters). Other callables
(lambdas, custom modules, Hugging Face activation modules) are evaluated on every call
(about a millisecond), because their behaviour can change (e.g. learned parameters).
PReLU with several channels uses ``sqrt(mean(a^2))`` as its slope: the channel-averaged
second moment ``(1 + mean(a^2)) / 2``.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._checks import NotAnActivationError, raise_unknown

__all__ = [
    "ACTIVATIONS",
    "ActivationName",
    "activation_name",
    "calculate_gain",
    "gain",
    "kaiming_gain",
    "mean_and_second_moment",
    "second_moment",
]

logger = logging.getLogger(__name__)

ActivationName = Literal[
    "linear", "relu", "leaky_relu", "prelu", "relu6", "relu2", "elu", "celu", "selu",
    "gelu", "gelu_tanh", "quick_gelu", "silu", "mish", "softplus", "hardswish",
    "hardsigmoid", "hardtanh", "tanh", "sigmoid", "logsigmoid", "softsign",
]  # fmt: skip
ACTIVATIONS: tuple[str, ...] = get_args(ActivationName)

#: What :func:`gain` accepts: a name, ``None`` (linear), an ``nn.Module`` or class, a callable.
Activation = str | None | Callable[..., Any] | type
#: The ``param`` of :func:`gain`: a slope / alpha / beta, or ``(min_val, max_val)`` for hardtanh.
Param = float | Sequence[float] | None

_ALIASES: dict[str, str] = {
    "identity": "linear", "none": "linear", "conv1d": "linear", "conv2d": "linear",
    "conv3d": "linear", "conv_transpose1d": "linear", "conv_transpose2d": "linear",
    "conv_transpose3d": "linear", "leakyrelu": "leaky_relu", "swish": "silu",
    "gelu_erf": "gelu", "gelu_python": "gelu", "gelu_accurate": "gelu_tanh",
    "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh",
    "fast_gelu": "gelu_tanh", "new_gelu": "gelu_tanh", "quickgelu": "quick_gelu",
    "relu_squared": "relu2", "squared_relu": "relu2", "hard_swish": "hardswish",
    "hard_sigmoid": "hardsigmoid", "hard_tanh": "hardtanh", "log_sigmoid": "logsigmoid",
}  # fmt: skip

# torch.nn.init.calculate_gain's names, and the canonical names whose torch value is a convention.
_TORCH_NAMES = frozenset(
    ["linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
     "conv_transpose3d", "sigmoid", "tanh", "relu", "leaky_relu", "selu"]
)  # fmt: skip
_TORCH_CANONICAL = frozenset(["linear", "sigmoid", "tanh", "relu", "leaky_relu", "selu"])

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946
_SQRT_2PI = math.sqrt(2.0 * math.pi)
_INV_SQRT2 = 1.0 / math.sqrt(2.0)

# Quadrature: panels of width _H on [-_L, _L], _NODES + 1 Clenshaw-Curtis nodes each.
_L = 20.0
_H = 0.5
_NODES = 24
_EPS = 1e-15  # per-panel acceptance, relative to E[f(z)^2]
_MAX_LEVELS = 60
# A kink or jump is isolated by a few panels per level; thousands mean f is not a function.
_MAX_BAD_PANELS = 4096


@dataclass(frozen=True)
class _Spec:
    """A recognized activation: canonical name plus the parameters that change its values."""

    name: str
    params: tuple[float, ...] = ()


# --------------------------------------------------------------------------------------------
# Resolving names, modules and functions to specs
# --------------------------------------------------------------------------------------------


def _normalize(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def _canonical(name: str) -> str | None:
    key = _normalize(name)
    key = _ALIASES.get(key, key)
    return key if key in ACTIVATIONS else None


def _real(name: str, what: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(
            f"{name}: {what} must be a real number, got {value!r} ({type(value).__name__})"
        )
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name}: {what} must be finite, got {value!r}")
    return v


def _spec_from_name(name: str, param: Param) -> _Spec:
    canon = _canonical(name)
    if canon is None:
        raise_unknown("nonlinearity", name, ACTIVATIONS)
    if canon in ("leaky_relu", "prelu"):
        default = 0.01 if canon == "leaky_relu" else 0.25
        slope = default if param is None else _real(canon, "negative slope (param)", param)
        return _Spec(canon, (slope,))
    if canon in ("elu", "celu"):
        alpha = 1.0 if param is None else _real(canon, "alpha (param)", param)
        if alpha < 0 or (canon == "celu" and alpha == 0):
            need = "> 0" if canon == "celu" else ">= 0"
            raise ValueError(f"{canon}: alpha (param) must be {need}, got {param!r}")
        return _Spec(canon, (alpha,))
    if canon == "softplus":
        beta = 1.0 if param is None else _real(canon, "beta (param)", param)
        if beta <= 0:
            raise ValueError(f"softplus: beta (param) must be > 0, got {param!r}")
        return _Spec(canon, (beta, 20.0))
    if canon == "hardtanh":
        if param is None:
            return _Spec(canon, (-1.0, 1.0))
        if isinstance(param, (str, bytes)) or not isinstance(param, Sequence) or len(param) != 2:
            raise ValueError(f"hardtanh: param must be a pair (min_val, max_val), got {param!r}")
        lo = _real(canon, "min_val", param[0])
        hi = _real(canon, "max_val", param[1])
        if not lo < hi:
            raise ValueError(f"hardtanh: need min_val < max_val, got {param!r}")
        return _Spec(canon, (lo, hi))
    if param is not None:
        raise ValueError(f"{canon!r} takes no param, got {param!r}")
    return _Spec(canon)


def _module_spec(module: nn.Module) -> _Spec | None:
    """Spec of a torch.nn activation module of an exact known type (subclasses are callables)."""
    t = type(module)
    simple = {
        nn.ReLU: "relu", nn.ReLU6: "relu6", nn.SELU: "selu", nn.SiLU: "silu", nn.Mish: "mish",
        nn.Hardswish: "hardswish", nn.Hardsigmoid: "hardsigmoid", nn.Tanh: "tanh",
        nn.Sigmoid: "sigmoid", nn.LogSigmoid: "logsigmoid", nn.Softsign: "softsign",
        nn.Identity: "linear",
    }  # fmt: skip
    if t in simple:
        return _Spec(simple[t])
    m: Any = module
    if t is nn.LeakyReLU:
        return _spec_from_name("leaky_relu", float(m.negative_slope))
    if t is nn.RReLU:
        # training mode draws the negative slope a ~ U(lower, upper) per element: the second
        # moment is that of a leaky ReLU with slope sqrt(E[a^2]) = sqrt((l^2 + l u + u^2) / 3)
        lo, hi = float(m.lower), float(m.upper)
        return _spec_from_name("leaky_relu", math.sqrt((lo * lo + lo * hi + hi * hi) / 3.0))
    if t is nn.ELU:
        return _spec_from_name("elu", float(m.alpha))
    if t is nn.CELU:
        return _spec_from_name("celu", float(m.alpha))
    if t is nn.GELU:
        return _Spec("gelu_tanh" if m.approximate == "tanh" else "gelu")
    if t is nn.Softplus:
        beta = _spec_from_name("softplus", float(m.beta)).params[0]
        return _Spec("softplus", (beta, float(m.threshold)))
    if t is nn.Hardtanh:
        return _spec_from_name("hardtanh", (float(m.min_val), float(m.max_val)))
    if t is nn.PReLU:
        # Per-channel slopes: the channel-averaged second moment is (1 + mean(a^2)) / 2, the
        # same as one slope of sqrt(mean(a^2)).
        w = m.weight.detach().double()
        return _spec_from_name("prelu", float(torch.sqrt(torch.mean(w * w))))
    return None


# Hugging Face activation modules, by class name: only used to *name* them; their gain is
# computed from the module itself (a class with the same name may behave differently).
_HF_NAMES = {
    "GELUActivation": "gelu", "NewGELUActivation": "gelu_tanh", "GELUTanh": "gelu_tanh",
    "PytorchGELUTanh": "gelu_tanh", "FastGELUActivation": "gelu_tanh",
    "AccurateGELUActivation": "gelu_tanh", "QuickGELUActivation": "quick_gelu",
    "SiLUActivation": "silu", "MishActivation": "mish", "ReLUSquaredActivation": "relu2",
    "LinearActivation": "linear",
}  # fmt: skip


@functools.lru_cache(maxsize=1)
def _function_names() -> dict[Any, str]:
    pairs = [
        (torch.relu, "relu"), (F.relu, "relu"), (F.relu6, "relu6"), (F.leaky_relu, "leaky_relu"),
        (F.elu, "elu"), (F.celu, "celu"), (torch.selu, "selu"), (F.selu, "selu"),
        (F.gelu, "gelu"), (F.silu, "silu"), (F.mish, "mish"), (F.softplus, "softplus"),
        (F.hardswish, "hardswish"), (F.hardsigmoid, "hardsigmoid"), (F.hardtanh, "hardtanh"),
        (torch.tanh, "tanh"), (F.tanh, "tanh"), (torch.sigmoid, "sigmoid"),
        (F.sigmoid, "sigmoid"), (torch.special.expit, "sigmoid"), (F.logsigmoid, "logsigmoid"),
        (F.softsign, "softsign"),
    ]  # fmt: skip
    return dict(pairs)


def _function_spec(fn: object) -> _Spec | None:
    try:
        name = _function_names().get(fn)
    except TypeError:  # unhashable callable
        return None
    return None if name is None else _spec_from_name(name, None)


def _resolve(activation: Activation, param: Param) -> tuple[_Spec | None, Callable[..., Any]]:
    """Return (spec, callable): spec is None for callables that are evaluated as given."""
    if activation is None:
        return _spec_from_name("linear", param), _identity
    if isinstance(activation, str):
        return _spec_from_name(activation, param), _identity
    if isinstance(activation, type) and issubclass(activation, nn.Module):
        try:
            activation = activation()
        except TypeError as err:
            raise ValueError(
                f"cannot instantiate {activation.__name__}() with default arguments; pass an "
                f"instance instead ({err})"
            ) from None
    if not callable(activation):
        raise NotAnActivationError(
            "activation must be a name, None, an nn.Module or a callable on tensors, got "
            f"{type(activation).__name__}"
        )
    if param is not None:
        raise ValueError(
            f"param is only for named activations; {activation!r} already fixes its "
            f"parameters (got param={param!r})"
        )
    spec = (
        _module_spec(activation)
        if isinstance(activation, nn.Module)
        else _function_spec(activation)
    )
    return spec, activation


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def activation_name(obj: Activation) -> str | None:
    """Return the canonical name of an activation given as a name, module or function.

    ``None`` means linear. Returns ``None`` for unknown names and for callables that are not
    recognized (lambdas, custom modules). Hugging Face activation modules are recognized by
    class name (e.g. ``NewGELUActivation`` -> ``"gelu_tanh"``).

    Args:
        obj: a name (aliases accepted), ``None``, an ``nn.Module`` (instance or class) or a
            function such as ``torch.relu``.

    Example:
        >>> activation_name("swish"), activation_name(nn.GELU(approximate="tanh"))
        ('silu', 'gelu_tanh')
        >>> activation_name(lambda x: x) is None
        True
    """
    if obj is None:
        return "linear"
    if isinstance(obj, str):
        return _canonical(obj)
    if isinstance(obj, type):
        if issubclass(obj, nn.Module):
            try:
                return activation_name(obj())
            except TypeError:
                return None
        return None
    if isinstance(obj, nn.Module):
        try:
            spec = _module_spec(obj)
        except ValueError:
            spec = None
        if spec is not None:
            return spec.name
        return _HF_NAMES.get(type(obj).__name__)
    spec = _function_spec(obj)
    return None if spec is None else spec.name


# --------------------------------------------------------------------------------------------
# Exact Gaussian integrals
# --------------------------------------------------------------------------------------------


def _pdf(x: float) -> float:
    return 0.0 if math.isinf(x) else math.exp(-0.5 * x * x) / _SQRT_2PI


def _mass(a: float, b: float) -> float:
    """P(a < z < b) for z ~ N(0, 1), accurate in both tails."""
    if a >= 0:
        return 0.5 * (math.erfc(a * _INV_SQRT2) - math.erfc(b * _INV_SQRT2))
    if b <= 0:
        return 0.5 * (math.erfc(-b * _INV_SQRT2) - math.erfc(-a * _INV_SQRT2))
    return 1.0 - 0.5 * (math.erfc(-a * _INV_SQRT2) + math.erfc(b * _INV_SQRT2))


def _partial_moments(a: float, b: float, kmax: int) -> list[float]:
    """``[E[z^k; a < z < b] for k in 0..kmax]`` via ``M_k = (k-1) M_{k-2} + a^{k-1}φ(a) - ...``."""
    pa, pb = _pdf(a), _pdf(b)
    out = [_mass(a, b), pa - pb]
    for k in range(2, kmax + 1):
        ta = 0.0 if pa == 0.0 else a ** (k - 1) * pa
        tb = 0.0 if pb == 0.0 else b ** (k - 1) * pb
        out.append((k - 1) * out[k - 2] + ta - tb)
    return out[: kmax + 1]


_Piece = tuple[float, float, tuple[float, ...]]  # (a, b, polynomial coefficients, ascending)


def _piecewise_poly_moments(pieces: Sequence[_Piece]) -> tuple[float, float]:
    """Exact (E[f], E[f^2]) for f piecewise polynomial on the given intervals (0 elsewhere)."""
    m1 = m2 = 0.0
    for a, b, c in pieces:
        sq = np.polynomial.polynomial.polymul(c, c)  # may drop trailing zeros
        mom = _partial_moments(a, b, max(2 * (len(c) - 1), 1))
        m1 += sum(ci * mom[i] for i, ci in enumerate(c))
        m2 += sum(float(si) * mom[i] for i, si in enumerate(sq))
    return m1, m2


def _exp_neg(k: float) -> float:
    """``E[exp(k z); z < 0] = exp(k^2/2) Φ(-k)``, stable for large k (via erfcx)."""
    x = torch.tensor(k * _INV_SQRT2, dtype=torch.float64)
    return 0.5 * float(torch.special.erfcx(x))


def _elu_moments(alpha: float, rate: float, scale: float = 1.0) -> tuple[float, float]:
    """Exact moments of ``scale * (z if z > 0 else alpha * (exp(rate * z) - 1))``."""
    pos1, pos2 = 1.0 / _SQRT_2PI, 0.5
    e1, e2 = _exp_neg(rate), _exp_neg(2.0 * rate)
    neg1 = alpha * (e1 - 0.5)
    neg2 = alpha * alpha * (e2 - 2.0 * e1 + 0.5)
    return scale * (pos1 + neg1), scale * scale * (pos2 + neg2)


_INF = math.inf


def _closed_form(spec: _Spec) -> tuple[float, float] | None:
    """Exact (E[f(z)], E[f(z)^2]) where a closed form exists, else None."""
    n, p = spec.name, spec.params
    pieces: list[_Piece] | None = None
    if n == "linear":
        pieces = [(-_INF, _INF, (0.0, 1.0))]
    elif n == "relu":
        pieces = [(0.0, _INF, (0.0, 1.0))]
    elif n in ("leaky_relu", "prelu"):
        pieces = [(-_INF, 0.0, (0.0, p[0])), (0.0, _INF, (0.0, 1.0))]
    elif n == "relu2":
        pieces = [(0.0, _INF, (0.0, 0.0, 1.0))]
    elif n == "relu6":
        pieces = [(0.0, 6.0, (0.0, 1.0)), (6.0, _INF, (6.0,))]
    elif n == "hardtanh":
        lo, hi = p
        pieces = [(-_INF, lo, (lo,)), (lo, hi, (0.0, 1.0)), (hi, _INF, (hi,))]
    elif n == "hardsigmoid":
        pieces = [(-3.0, 3.0, (0.5, 1.0 / 6.0)), (3.0, _INF, (1.0,))]
    elif n == "hardswish":
        pieces = [(-3.0, 3.0, (0.0, 0.5, 1.0 / 6.0)), (3.0, _INF, (0.0, 1.0))]
    if pieces is not None:
        return _piecewise_poly_moments(pieces)
    if n == "gelu":
        # E[z Φ(z)] = E[φ(z)] = 1/(2√π);  E[z² Φ(z)²] = 1/3 + 1/(2π√3) (Stein's lemma).
        return 0.5 / math.sqrt(math.pi), 1.0 / 3.0 + 1.0 / (2.0 * math.pi * math.sqrt(3.0))
    if n == "selu":
        return _elu_moments(_SELU_ALPHA, 1.0, _SELU_SCALE)
    # Large alpha cancels catastrophically in the closed form: use quadrature there.
    if n == "elu" and p[0] <= 10.0:
        return _elu_moments(p[0], 1.0)
    if n == "celu" and p[0] <= 10.0:
        return _elu_moments(p[0], 1.0 / p[0])
    return None


def _spec_function(spec: _Spec) -> tuple[Callable[[torch.Tensor], torch.Tensor], tuple[float, ...]]:
    """Torch implementation of a spec and the points where it is not smooth."""
    n, p = spec.name, spec.params
    fns: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], tuple[float, ...]]] = {
        "linear": (_identity, ()),
        "relu": (torch.relu, (0.0,)),
        "relu6": (F.relu6, (0.0, 6.0)),
        "relu2": (lambda x: torch.relu(x) ** 2, (0.0,)),
        "selu": (torch.selu, (0.0,)),
        "gelu": (F.gelu, ()),
        "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), ()),
        "quick_gelu": (lambda x: x * torch.sigmoid(1.702 * x), ()),
        "silu": (F.silu, ()),
        "mish": (F.mish, ()),
        "hardswish": (F.hardswish, (-3.0, 3.0)),
        "hardsigmoid": (F.hardsigmoid, (-3.0, 3.0)),
        "tanh": (torch.tanh, ()),
        "sigmoid": (torch.sigmoid, ()),
        "logsigmoid": (F.logsigmoid, ()),
        "softsign": (F.softsign, (0.0,)),
    }
    if n in fns:
        return fns[n]
    if n in ("leaky_relu", "prelu"):
        return (lambda x: F.leaky_relu(x, p[0])), (0.0,)
    if n == "elu":
        return (lambda x: F.elu(x, p[0])), (0.0,)
    if n == "celu":
        return (lambda x: F.celu(x, p[0])), (0.0,)
    if n == "softplus":
        return (lambda x: F.softplus(x, p[0], p[1])), (p[1] / p[0],)
    if n == "hardtanh":
        return (lambda x: F.hardtanh(x, p[0], p[1])), (p[0], p[1])
    raise AssertionError(f"no implementation for {spec}")  # pragma: no cover


# --------------------------------------------------------------------------------------------
# Quadrature for everything else
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _clenshaw_curtis() -> tuple[np.ndarray, np.ndarray]:
    """Clenshaw-Curtis nodes and weights on [-1, 1] with ``_NODES`` intervals.

    Unlike Gauss-Legendre, the rule samples the panel's endpoints, so a kink just inside a
    panel changes the interpolant and is caught by the bisection test.
    """
    n = _NODES
    k = np.arange(n + 1)
    x = np.cos(np.pi * k / n)
    j = np.arange(1, n // 2 + 1)
    b = np.where(j == n // 2, 1.0, 2.0)
    s = (b / (4.0 * j * j - 1.0))[None, :] * np.cos(2.0 * np.pi * np.outer(k, j) / n)
    c = np.where((k == 0) | (k == n), 1.0, 2.0)
    w = c / n * (1.0 - s.sum(axis=1))
    return x, w


def _base_edges(breaks: tuple[float, ...]) -> np.ndarray:
    """Panel edges: a grid of width ``_H`` on [-L, L] plus the known kinks ``breaks``."""
    n_half = round(_L / _H)
    edges = {k * _H for k in range(-n_half, n_half + 1)}
    edges.update(float(b) for b in breaks if -_L < b < _L)
    return np.array(sorted(edges))


def _evaluate(fn: Callable[..., Any], z: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(z.copy())
    try:
        with torch.no_grad():
            try:
                y = fn(x)
            except (RuntimeError, TypeError):
                if not isinstance(fn, nn.Module):
                    raise
                logger.debug("evaluating a float64 copy of %r", fn)
                y = copy.deepcopy(fn).double()(x)
            y = torch.as_tensor(y).detach()
            if y.is_complex():
                raise TypeError("the activation returned complex values")
            y = torch.broadcast_to(y.to(torch.float64), x.shape).cpu()
    except Exception as err:
        raise ValueError(
            f"could not evaluate activation {fn!r} on a 1-D float64 tensor: "
            f"{type(err).__name__}: {err}"
        ) from err
    out: np.ndarray = y.numpy().copy()
    return out


def _panel_integrals(
    fn: Callable[..., Any], a: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-panel ``(∫ f φ, ∫ f² φ)`` over ``[a_i, b_i]`` with one vectorized call of ``fn``."""
    x, w = _clenshaw_curtis()
    half = (b - a) / 2.0
    z = ((a + b) / 2.0)[:, None] + half[:, None] * x[None, :]
    wz = half[:, None] * w[None, :] * np.exp(-0.5 * z * z) / _SQRT_2PI
    f = _evaluate(fn, z.ravel()).reshape(z.shape)
    if not np.all(np.isfinite(f)):
        bad = float(z[~np.isfinite(f)][0])
        raise ValueError(f"activation {fn!r} returned a non-finite value at z = {bad:g}")
    wf = wz * f
    return wf.sum(axis=1), (wf * f).sum(axis=1)


def _quad_moments(fn: Callable[..., Any], breaks: tuple[float, ...] = ()) -> tuple[float, float]:
    """(E[f(z)], E[f(z)^2]) by adaptive composite Clenshaw-Curtis quadrature on [-L, L].

    Every panel is compared with the sum over its two halves; panels that disagree (a kink
    or jump that is not at a panel edge) are bisected until they agree to ``_EPS`` of the
    total. Smooth functions need two calls of ``fn``; an unknown kink adds a few dozen small
    calls.
    """
    edges = _base_edges(tuple(sorted(set(breaks))))
    a, b = edges[:-1], edges[1:]
    i1, i2 = _panel_integrals(fn, a, b)
    total = float(np.sum(i2))
    if i2[0] + i2[-1] > 1e-14 * total:
        raise ValueError(
            f"E[f(z)^2] of {fn!r} does not converge (f grows too fast for a Gaussian input)"
        )
    tol2, tol1 = _EPS * total, _EPS * math.sqrt(total)
    m1 = m2 = 0.0
    for _ in range(_MAX_LEVELS):
        m = (a + b) / 2.0
        j1, j2 = _panel_integrals(fn, np.concatenate([a, m]), np.concatenate([m, b]))
        k = a.size
        s1, s2 = j1[:k] + j1[k:], j2[:k] + j2[k:]
        ok = (np.abs(s2 - i2) <= tol2) & (np.abs(s1 - i1) <= tol1)
        m1 += float(np.sum(s1[ok]))
        m2 += float(np.sum(s2[ok]))
        bad = ~ok
        if not bad.any():
            return m1, m2
        if int(bad.sum()) > _MAX_BAD_PANELS:
            raise ValueError(
                f"quadrature of {fn!r} does not settle: is it a deterministic function of its "
                "input (a random activation such as RReLU in training mode is not)?"
            )
        a, b = np.concatenate([a[bad], m[bad]]), np.concatenate([m[bad], b[bad]])
        i1, i2 = (
            np.concatenate([j1[:k][bad], j1[k:][bad]]),
            np.concatenate([j2[:k][bad], j2[k:][bad]]),
        )
    logger.debug("quadrature of %r stopped after %d bisections", fn, _MAX_LEVELS)
    return m1 + float(np.sum(i1)), m2 + float(np.sum(i2))


@functools.lru_cache(maxsize=256)
def _spec_moments(spec: _Spec) -> tuple[float, float]:
    exact = _closed_form(spec)
    if exact is not None:
        return exact
    fn, breaks = _spec_function(spec)
    return _quad_moments(fn, breaks)


def _moments(activation: Activation, param: Param) -> tuple[float, float]:
    spec, fn = _resolve(activation, param)
    if spec is not None:
        return _spec_moments(spec)
    return _quad_moments(fn)


def _checked_gain(activation: Activation, m2: float) -> float:
    if not (math.isfinite(m2) and m2 > 0.0):
        raise ValueError(
            f"E[f(z)^2] = {m2!r} for activation {activation!r}: the activation is zero almost "
            "everywhere (or not finite), so no gain can restore the signal's second moment"
        )
    return 1.0 / math.sqrt(m2)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def mean_and_second_moment(activation: Activation, param: Param = None) -> tuple[float, float]:
    """Return ``(E[f(z)], E[f(z)^2])`` for ``z ~ N(0, 1)``.

    Useful to propagate signal statistics through a network. Same inputs as :func:`gain`.

    Example:
        >>> m, s = mean_and_second_moment("relu")
        >>> round(m, 6), s  # 1/sqrt(2π), 1/2
        (0.398942, 0.5)
    """
    return _moments(activation, param)


def second_moment(activation: Activation, param: Param = None) -> float:
    """Return ``E[f(z)^2]`` for ``z ~ N(0, 1)``; :func:`gain` is ``1 / sqrt`` of it.

    Example:
        >>> second_moment("leaky_relu", 0.5)  # (1 + 0.5^2) / 2
        0.625
    """
    return _moments(activation, param)[1]


def gain(activation: Activation, param: Param = None) -> float:
    """Return the exact variance-preserving gain ``1 / sqrt(E[f(z)^2])``, ``z ~ N(0, 1)``.

    Generalizes He et al., 2015 ("Delving Deep into Rectifiers", gain √2 for ReLU) to any
    activation ``f``: weights with ``std = gain / sqrt(fan_in)`` keep ``E[x^2]`` constant
    across layers. Closed forms: ReLU √2, leaky ReLU(a) ``sqrt(2 / (1 + a^2))``, linear 1,
    exact GELU ``(1/3 + 1/(2π√3))^(-1/2)``, ELU/CELU/SELU via ``erfcx``, piecewise
    hard functions via Gaussian partial moments; others by quadrature (relative error
    ~1e-13). Unlike :func:`calculate_gain`, no value here is a convention.

    Args:
        activation: a name (see ``ACTIVATIONS``; aliases such as ``swish``, ``gelu_new``,
            ``identity`` and any case are accepted), ``None`` (linear), a ``torch.nn``
            activation module or class, a torch function (``torch.relu``, ``F.silu``), or any
            callable mapping a float64 tensor to a tensor of the same shape.
        param: for names only: the negative slope (``leaky_relu`` default 0.01, ``prelu``
            0.25), ``alpha`` (``elu``, ``celu``; default 1), ``beta`` (``softplus``;
            default 1) or ``(min_val, max_val)`` (``hardtanh``; default ``(-1, 1)``).

    Raises:
        ValueError: unknown name (with a suggestion), invalid ``param``, a callable that
            fails on a tensor, returns non-finite values or has ``E[f(z)^2] = 0``.

    Example:
        >>> round(gain("relu"), 6), round(gain("gelu"), 6), round(gain(nn.LeakyReLU(0.2)), 6)
        (1.414214, 1.53353, 1.38675)
        >>> round(gain(lambda x: 2 * x), 12)
        0.5
    """
    return _checked_gain(activation, _moments(activation, param)[1])


def calculate_gain(nonlinearity: Activation, param: Param = None) -> float:
    """Drop-in for :func:`torch.nn.init.calculate_gain`, extended to every activation.

    For torch's names (``linear``, ``conv*``, ``sigmoid``, ``tanh``, ``relu``,
    ``leaky_relu``, ``selu``) this returns torch's value with torch's ``param`` handling.
    Those are conventions: ``tanh`` 5/3, ``selu`` 3/4 and ``sigmoid`` 1 do **not** preserve
    ``E[x^2]`` (use :func:`gain` for that). Modules and functions whose canonical name is one
    of those get the same convention. Anything else (``gelu``, ``silu``, ``mish``, ``elu``,
    callables...), which torch rejects, returns :func:`gain`.

    Args:
        nonlinearity: as for :func:`gain`.
        param: torch's optional parameter (leaky ReLU slope), or :func:`gain`'s ``param``.

    Example:
        >>> calculate_gain("tanh"), round(calculate_gain("gelu"), 6)
        (1.6666666666666667, 1.53353)
    """
    if isinstance(nonlinearity, str):
        key = _normalize(nonlinearity)
        if key in _TORCH_NAMES:
            # torch's own check says "negative_slope x not a valid number"; name the
            # parameter and what it is as well (still a ValueError, as in torch).
            bad = isinstance(param, bool) or not isinstance(param, (int, float))
            if key == "leaky_relu" and param is not None and bad:
                raise ValueError(
                    f"calculate_gain: param of 'leaky_relu' is its negative slope, a real "
                    f"number; {param!r} ({type(param).__name__}) is not a valid number"
                )
            return float(torch.nn.init.calculate_gain(key, param))  # type: ignore[arg-type]
        return gain(nonlinearity, param)
    spec, _ = _resolve(nonlinearity, param)
    if spec is not None and spec.name in _TORCH_CANONICAL:
        slope = spec.params[0] if spec.name == "leaky_relu" else None
        return float(torch.nn.init.calculate_gain(spec.name, slope))  # type: ignore[arg-type]
    return gain(nonlinearity, param)


# Names whose ``param`` is a negative slope: what ``a`` of ``kaiming_*`` means.
_SLOPE_NAMES = frozenset(["leaky_relu", "prelu"])


def kaiming_gain(nonlinearity: Activation, a: float | None = 0, *, where: str = "kaiming_normal_") -> float:
    """The gain ``kaiming_normal_`` / ``kaiming_uniform_`` use for ``nonlinearity`` and slope ``a``.

    ``a`` is torch's "negative slope of the rectifier used after this layer". As in torch, it
    is used for ``leaky_relu`` (``a=0`` there gives the ReLU gain √2, torch's value) and
    ignored for torch's other names (``relu``, ``tanh``, ``linear``, ...). For the names torch
    does not know it is the slope of ``prelu`` (``a=0``, the default, means PReLU's default
    slope 0.25) and must stay 0 for every other activation, whose gain is :func:`gain`'s
    (``elu`` 1.2452, ``gelu`` 1.5335, ...): a non-zero ``a`` there is an error rather than a
    silently different parameter (pass ``gain=initwise.gain("elu", alpha)`` instead).
    ``a=None`` is what torch makes of it: torch's ``calculate_gain(name, None)`` for torch's
    names (``leaky_relu``: slope 0.01), the default parameter for the others.

    Example:
        >>> round(kaiming_gain("elu"), 4), round(kaiming_gain("prelu"), 4), kaiming_gain("relu", 0.3)
        (1.2452, 1.372, 1.4142135623730951)
    """
    if a is None:
        if isinstance(nonlinearity, str) and _normalize(nonlinearity) in _TORCH_NAMES:
            return calculate_gain(_normalize(nonlinearity), None)
        a = 0
    if isinstance(a, bool) or not isinstance(a, numbers.Real):
        raise ValueError(
            f"{where}: a (the negative slope of leaky_relu/prelu) must be a real number, got "
            f"{a!r} ({type(a).__name__})"
        )
    if isinstance(nonlinearity, str):
        key = _normalize(nonlinearity)
        if key in _TORCH_NAMES:
            return calculate_gain(key, a)
        canon = _canonical(key)
        if canon is None:
            raise_unknown("nonlinearity", nonlinearity, ACTIVATIONS)
        if canon in _SLOPE_NAMES:
            return calculate_gain(canon, None if a == 0 else a)
        if a != 0:
            raise ValueError(
                f"{where}: a={a!r} is the negative slope of leaky_relu/prelu, but nonlinearity "
                f"{nonlinearity!r} takes no slope; leave a=0, or pass "
                f"gain=initwise.gain({canon!r}, param) for its own parameter"
            )
        return calculate_gain(canon)
    if a != 0:
        raise ValueError(
            f"{where}: a={a!r} is only for named nonlinearities; {nonlinearity!r} already "
            "fixes its parameters (leave a=0)"
        )
    return calculate_gain(nonlinearity)
