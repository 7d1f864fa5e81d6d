r"""Mean-field signal propagation: fixed points, χ₁, depth scales and the edge of chaos.

For a deep fully connected network ``h^l = W^l φ(h^{l-1}) + b^l`` with weights
``W_ij ~ N(0, σ_w²/N)`` and biases ``b_i ~ N(0, σ_b²)``, in the limit of infinite width
(Poole et al. 2016, "Exponential expressivity in deep neural networks through transient
chaos"; Schoenholz et al. 2017, "Deep information propagation"), with ``z, z₁, z₂ ~ N(0, 1)``:

* length map: ``q ↦ σ_w² E[φ(√q z)²] + σ_b²``, the pre-activation variance of the next layer;
  its stable fixed point is ``q*``;
* correlation map of two inputs: ``c ↦ (σ_w² E[φ(u₁) φ(u₂)] + σ_b²) / q*`` with
  ``u₁ = √q* z₁``, ``u₂ = √q* (c z₁ + √(1 - c²) z₂)``; ``c = 1`` is always a fixed point,
  ``c*`` is the stable one;
* ``χ₁ = σ_w² E[φ'(√q* z)²]``: the slope of the correlation map at ``c = 1`` and the factor by
  which the mean squared gradient changes per layer. ``χ₁ < 1``: ordered phase (inputs
  converge, gradients vanish); ``χ₁ > 1``: chaotic (nearby inputs decorrelate, gradients
  explode); ``χ₁ = 1``: the edge of chaos (critical line);
* ``χ_c = σ_w² E[φ'(u₁) φ'(u₂)]`` at ``c*``: the slope of the correlation map at its fixed
  point (``= χ₁`` in the ordered phase, where ``c* = 1``);
* depth scales: ``|q^l - q*| ~ exp(-l / ξ_q)`` with ``ξ_q⁻¹ = -ln(σ_w² E[φ'² + φ φ''])``
  (the slope of the length map at ``q*``); ``|c^l - c*| ~ exp(-l / ξ_c)`` with
  ``ξ_c⁻¹ = -ln χ_c``; gradients ``~ exp(-l / ξ_∇)`` with ``ξ_∇⁻¹ = -ln χ₁``
  (negative: growth). ``ξ_c`` diverges on the critical line: signals travel through many
  more layers than ``ξ_c`` only near criticality (Schoenholz et al.: trainable depth ≈ 6 ξ_c).

Expectations use closed forms where they exist (linear; ReLU, leaky ReLU and PReLU through the
arc-cosine kernel of Cho & Saul 2009; ``erf``, Williams 1997), otherwise composite
Gauss-Legendre quadrature against the Gaussian density (panel edges at the activation's
kinks), on a product grid for the two-input expectations. ``φ'`` comes from autograd (central
differences for callables autograd cannot differentiate). Activations are given as for
:func:`initwise.gains.gain` (a name, an ``nn.Module``, a torch function or any callable), plus
the name ``"erf"``.

The critical line ``σ_w²(σ_b²)`` (``χ₁ = 1``) is found by root finding. On it, for tanh at
``σ_b² = 0.05``, ``σ_w² = 1.7610`` (Schoenholz et al.: 1.76); for ReLU it is ``σ_w² = 2`` at
``σ_b² = 0`` (He init). Both usual tanh gains are chaotic: ``gain("tanh") = 1.5925`` gives
``χ₁ = 1.18`` and ``calculate_gain("tanh") = 5/3`` gives ``χ₁ = 1.21`` (their aim is
``E[x²]`` preservation, not ``χ₁ = 1``); :func:`isometry_gain` is the gain at ``χ₁ = 1`` with
``σ_b = 0`` (1 for tanh, √2 for ReLU).

:func:`critical_` initializes a weight with ``N(0, σ_w²/fan_in)`` on the critical line and a
bias with ``N(0, σ_b²)``; it is registered as the scheme ``"critical"``.

>>> mf = mean_field("tanh", critical_sigma_w2("tanh", 0.05), 0.05)
>>> mf.phase, round(mf.chi1, 9), mf.c_star, mf.xi_c
('critical', 1.0, 1.0, inf)
>>> round(critical_sigma_w2("tanh", 0.05), 4), critical_sigma_w2("relu", 0.0)
(1.761, 2.0)
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import numpy as np
import torch

from . import gains as _gains
from ._checks import check_finite_positive
from ._fans import Fans
from ._math import decode_nonfinite, encode_nonfinite
from ._schemes import normal_, variance_scaling_
from ._theory_plot import plot_phase
from .random import Key

__all__ = [
    "CriticalLine",
    "MeanField",
    "PhaseDiagram",
    "c_star",
    "chi1",
    "correlation_map",
    "critical_",
    "critical_line",
    "critical_sigma_w2",
    "isometry_gain",
    "length_map",
    "mean_field",
    "phase_diagram",
    "plot_phase_diagram",
    "q_star",
]

Phase = Literal["ordered", "critical", "chaotic"]
Activation = _gains.Activation | str

# 1-D rule: composite Gauss-Legendre, panels of width _H on [-_L, _L] in z, refined near the
# origin of x = √q z (where activations bend) and at every known kink.
_L, _H, _GL = 12.0, 0.25, 10
# 2-D rule (product): coarser.
_L2, _H2, _GL2 = 10.0, 0.5, 8
_X_EDGES = np.arange(-8.0, 8.0 + 1e-9, 0.25)  # refinement edges in x = √q z
_CRIT_TOL = 1e-6  # |χ₁ - 1| below this is "critical"
_Q_MAX = 1e12


# --------------------------------------------------------------------------------------------
# Activations
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Phi:
    """An activation for mean-field integrals: callable, kinks and closed-form family."""

    label: str
    fn: Callable[..., Any] = field(compare=False, hash=False)
    breaks: tuple[float, ...] = ()
    kind: Literal["linear", "relu", "erf", "quad"] = "quad"
    slope: float = 0.0  # negative slope of the ReLU family
    key: Any = None  # hashable identity for caching (None: not cached)

    def phi(self, x: np.ndarray) -> np.ndarray:
        return _gains._evaluate(self.fn, x)

    def dphi(self, x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)).requires_grad_(True)
        try:
            with torch.enable_grad():
                y = self.fn(t)
                (g,) = torch.autograd.grad(torch.as_tensor(y).sum(), t)
            out: np.ndarray = g.detach().to(torch.float64).numpy().copy()
            if out.shape == x.shape and np.all(np.isfinite(out)):
                return out
        except (RuntimeError, TypeError):
            pass
        h = 1e-5 * np.maximum(1.0, np.abs(x))
        return (self.phi(x + h) - self.phi(x - h)) / (2.0 * h)

    # -- E[φ(√q z)²], E[φ'(√q z)²], d/dq E[φ(√q z)²] -----------------------------------------
    def m2(self, q: float) -> float:
        if self.kind == "linear":
            return q
        if self.kind == "relu":
            return q * (1.0 + self.slope**2) / 2.0
        if self.kind == "erf":
            return 2.0 / math.pi * math.asin(2.0 * q / (1.0 + 2.0 * q))
        z, w = _rule_1d(q, self.breaks)
        f = self.phi(math.sqrt(q) * z)
        return float(np.dot(w, f * f))

    def d2(self, q: float) -> float:
        if self.kind == "linear":
            return 1.0
        if self.kind == "relu":
            return (1.0 + self.slope**2) / 2.0
        if self.kind == "erf":
            return 4.0 / math.pi / math.sqrt(1.0 + 4.0 * q)
        if q == 0.0:  # the limit q -> 0: both one-sided slopes at a kink at 0
            d = self.dphi(np.array([-1e-12, 1e-12]))
            return float(np.mean(d * d))
        z, w = _rule_1d(q, self.breaks)
        d = self.dphi(math.sqrt(q) * z)
        return float(np.dot(w, d * d))

    def dm2(self, q: float) -> float:
        """``d/dq E[φ(√q z)²] = E[φ'² + φ φ''] = E[(z² - 1) φ(√q z)²] / (2q)``."""
        if self.kind in ("linear", "relu"):
            return self.m2(1.0)
        if self.kind == "erf":
            return 4.0 / math.pi / ((1.0 + 2.0 * q) * math.sqrt(1.0 + 4.0 * q))
        if q == 0.0:
            return self.d2(0.0)
        z, w = _rule_1d(q, self.breaks)
        f = self.phi(math.sqrt(q) * z)
        return float(np.dot(w, (z * z - 1.0) * f * f)) / (2.0 * q)

    # -- E[φ(u₁)φ(u₂)] and E[φ'(u₁)φ'(u₂)] ------------------------------------------------------
    def m12(self, q: float, c: float) -> float:
        if self.kind == "linear":
            return q * c
        if self.kind == "relu":
            a = self.slope
            th = math.acos(min(1.0, max(-1.0, c)))
            k = q / (2.0 * math.pi) * (math.sin(th) + (math.pi - th) * c)
            return a * q * c + (1.0 - a) ** 2 * k
        if self.kind == "erf":
            return 2.0 / math.pi * math.asin(2.0 * q * c / (1.0 + 2.0 * q))
        u1, u2, w = _grid_2d(q, c)
        return float(np.sum(w * self.phi(u1)[:, None] * self.phi(u2.ravel()).reshape(u2.shape)))

    def d12(self, q: float, c: float) -> float:
        if self.kind == "linear":
            return 1.0
        if self.kind == "relu":
            a = self.slope
            th = math.acos(min(1.0, max(-1.0, c)))
            return a + (1.0 - a) ** 2 * (math.pi - th) / (2.0 * math.pi)
        if self.kind == "erf":
            return 4.0 / math.pi / math.sqrt((1.0 + 2.0 * q) ** 2 - 4.0 * q * q * c * c)
        u1, u2, w = _grid_2d(q, c)
        return float(np.sum(w * self.dphi(u1)[:, None] * self.dphi(u2.ravel()).reshape(u2.shape)))


def _resolve(activation: Activation, param: _gains.Param = None) -> _Phi:
    if isinstance(activation, str) and _gains._normalize(activation) == "erf":
        if param is not None:
            raise ValueError(f"'erf' takes no param, got {param!r}")
        return _Phi("erf", torch.erf, (), "erf", key=("erf",))
    spec, fn = _gains._resolve(activation, param)
    if spec is None:
        return _Phi(getattr(fn, "__name__", type(fn).__name__), fn)
    sfn, breaks = _gains._spec_function(spec)
    label = spec.name if not spec.params else f"{spec.name}{spec.params}"
    if spec.name == "linear":
        return _Phi(label, sfn, breaks, "linear", key=spec)
    if spec.name in ("relu", "leaky_relu", "prelu"):
        slope = spec.params[0] if spec.params else 0.0
        return _Phi(label, sfn, breaks, "relu", slope, key=spec)
    return _Phi(label, sfn, breaks, key=spec)


@functools.lru_cache(maxsize=4)
def _gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.legendre.leggauss(n)
    return x, w


def _composite(edges: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of ``∫ g(z) φ(z) dz`` (φ the N(0, 1) density), weights summing to 1."""
    x, w = _gauss_legendre(n)
    a, b = edges[:-1], edges[1:]
    half = (b - a) / 2.0
    z = ((a + b) / 2.0)[:, None] + half[:, None] * x[None, :]
    wz = half[:, None] * w[None, :] * np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    wz = wz.ravel()
    return z.ravel(), wz / wz.sum()


@functools.lru_cache(maxsize=32)
def _rule_1d(q: float, breaks: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    s = math.sqrt(q)
    edges = set(np.arange(-_L, _L + 1e-9, _H).tolist())
    if s > 0:
        edges.update(float(e) for e in _X_EDGES / s if -_L < e < _L)
        edges.update(b / s for b in breaks if -_L < b / s < _L)
    return _composite(np.array(sorted(edges)), _GL)


@functools.lru_cache(maxsize=1)
def _base_2d() -> tuple[np.ndarray, np.ndarray]:
    return _composite(np.arange(-_L2, _L2 + 1e-9, _H2), _GL2)


def _grid_2d(q: float, c: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``u₁`` (n,), ``u₂`` (n, n) and product weights for ``Cov(u) = q [[1, c], [c, 1]]``."""
    z, w = _base_2d()
    s = math.sqrt(q)
    c = min(1.0, max(-1.0, c))
    u1 = s * z
    u2 = s * (c * z[:, None] + math.sqrt(max(0.0, 1.0 - c * c)) * z[None, :])
    return u1, u2, w[:, None] * w[None, :]


# --------------------------------------------------------------------------------------------
# Root finding (no scipy at runtime)
# --------------------------------------------------------------------------------------------


def _root(f: Callable[[float], float], a: float, b: float, fa: float, fb: float,
          *, rtol: float = 1e-13, maxiter: int = 200) -> float:
    """A root of ``f`` in ``[a, b]`` (``fa``, ``fb`` of opposite signs): Illinois regula falsi."""
    if fa == 0.0:
        return a
    if fb == 0.0:
        return b
    side = 0
    for _ in range(maxiter):
        x = (a * fb - b * fa) / (fb - fa)
        if not (min(a, b) < x < max(a, b)):
            x = (a + b) / 2.0
        fx = f(x)
        if fx == 0.0 or abs(b - a) <= rtol * max(abs(a), abs(b), 1e-300):
            return x
        if (fx > 0) == (fb > 0):
            b, fb = x, fx
            if side == -1:
                fa /= 2.0
            side = -1
        else:
            a, fa = x, fx
            if side == 1:
                fb /= 2.0
            side = 1
    return (a + b) / 2.0


def _check_sigmas(sigma_w2: float, sigma_b2: float) -> tuple[float, float]:
    return (check_finite_positive("sigma_w2", sigma_w2),
            check_finite_positive("sigma_b2", sigma_b2, allow_zero=True))


def _q_star(p: _Phi, sw2: float, sb2: float, q0: float) -> float:
    if p.kind in ("linear", "relu"):
        k = sw2 * p.m2(1.0)  # the length map is q ↦ k q + σ_b²
        if k < 1.0:
            return sb2 / (1.0 - k)
        return q0 if (k == 1.0 and sb2 == 0.0) else math.inf

    def r(q: float) -> float:  # sign of (map(q) - q), scaled by 1/q
        return (sw2 * p.m2(q) + sb2) / q - 1.0

    q, rq = q0, r(q0)
    if rq == 0.0:
        return q
    if rq > 0:
        lo, rlo = q, rq
        while True:
            hi = lo * 2.0
            rhi = r(hi)
            if rhi <= 0:
                break
            lo, rlo = hi, rhi
            if hi > _Q_MAX:
                return math.inf
    else:
        hi, rhi = q, rq
        while True:
            lo = hi / 2.0
            rlo = r(lo)
            if rlo >= 0:
                break
            hi, rhi = lo, rlo
            if lo < 1e-14 * q0:
                return 0.0
    return _root(r, lo, hi, rlo, rhi)


def _cmap(p: _Phi, sw2: float, sb2: float, q: float, c: float) -> float:
    if p.kind == "quad":
        # the product rule's own q* so that c = 1 stays an exact fixed point of the map
        return (sw2 * p.m12(q, c) + sb2) / (sw2 * p.m12(q, 1.0) + sb2)
    return (sw2 * p.m12(q, c) + sb2) / q


def _c_star(p: _Phi, sw2: float, sb2: float, q: float, chi: float) -> float:
    if chi <= 1.0 + _CRIT_TOL or not math.isfinite(q) or q == 0.0:
        return 1.0

    def g(c: float) -> float:
        return _cmap(p, sw2, sb2, q, c) - c

    hi, ghi = 1.0 - 1e-6, g(1.0 - 1e-6)
    if ghi >= 0:
        return 1.0
    eps = 1e-6
    while True:
        eps *= 4.0
        lo = max(-1.0, 1.0 - eps)
        glo = g(lo)
        if glo >= 0 or lo == -1.0:
            break
        hi, ghi = lo, glo
    if glo < 0:  # pragma: no cover - the map is >= -1 at c = -1
        return -1.0
    return _root(g, lo, hi, glo, ghi, rtol=1e-12)


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------




class _Data:
    """``to_dict``/``to_json``/``from_dict`` for the result dataclasses (strict JSON)."""

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict (non-finite floats as ``"inf"``/``"nan"`` strings)."""
        return {k: encode_nonfinite(v) for k, v in asdict(self).items()}  # type: ignore[call-overload]

    def to_json(self, indent: int | None = 2) -> str:
        """Return strict JSON (round-trips through :meth:`from_json`)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Any:
        """Rebuild from :meth:`to_dict`'s output."""
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: decode_nonfinite(v) for k, v in d.items() if k in names})

    @classmethod
    def from_json(cls, s: str) -> Any:
        """Rebuild from :meth:`to_json`'s output."""
        return cls.from_dict(json.loads(s))


@dataclass(frozen=True)
class MeanField(_Data):
    """Mean-field quantities of one ``(activation, σ_w², σ_b²)`` (see the module docs).

    Attributes:
        activation: the activation's name (or the callable's name).
        sigma_w2, sigma_b2: weight variance times fan_in, and bias variance.
        q_star: stable fixed point of the length map reached from ``q0`` (``inf``: diverges).
        c_star: stable fixed point of the correlation map (1 in the ordered phase).
        chi1: ``σ_w² E[φ'(√q* z)²]``.
        chi_c: slope of the correlation map at ``c*``.
        xi_q, xi_c: depth scales of the length and of the correlation (``inf`` when the slope
            is within 1e-6 of 1, as on the critical line).
        xi_grad: ``-1/ln χ₁``: gradients scale as ``exp(-l/ξ_∇)`` (negative: they grow).
        phase: ``"ordered"`` (χ₁ < 1), ``"critical"`` (|χ₁ - 1| < 1e-6) or ``"chaotic"``.
    """

    activation: str
    sigma_w2: float
    sigma_b2: float
    q_star: float
    c_star: float
    chi1: float
    chi_c: float
    xi_q: float
    xi_c: float
    xi_grad: float
    phase: str


@dataclass(frozen=True)
class CriticalLine(_Data):
    """The edge of chaos: for each ``sigma_b2``, the ``sigma_w2`` where χ₁ = 1 and its ``q*``."""

    activation: str
    sigma_b2: list[float]
    sigma_w2: list[float]
    q_star: list[float]


@dataclass(frozen=True)
class PhaseDiagram(_Data):
    """χ₁ on a ``(σ_b², σ_w²)`` grid (``chi1[i][j]`` at ``sigma_b2[i]``, ``sigma_w2[j]``) with
    the critical line."""

    activation: str
    sigma_b2: list[float]
    sigma_w2: list[float]
    chi1: list[list[float]]
    critical_sigma_w2: list[float]


def _depth(slope: float) -> float:
    """``-1/ln(slope)``: ``inf`` within ``_CRIT_TOL`` of 1, 0 at 0."""
    if not math.isfinite(slope):
        return math.nan
    if slope <= 0.0:
        return 0.0
    return math.inf if abs(slope - 1.0) < _CRIT_TOL else -1.0 / math.log(slope)


def _phase(chi: float) -> Phase:
    if abs(chi - 1.0) < _CRIT_TOL:
        return "critical"
    return "ordered" if chi < 1.0 else "chaotic"


def _chi1(p: _Phi, sw2: float, q: float) -> float:
    if not math.isfinite(q):
        return sw2 * p.d2(1.0) if p.kind in ("linear", "relu") else math.nan
    return sw2 * p.d2(q)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def length_map(q: float, activation: Activation, sigma_w2: float, sigma_b2: float = 0.0, *,
               param: _gains.Param = None) -> float:
    """Return the next layer's pre-activation variance ``σ_w² E[φ(√q z)²] + σ_b²``.

    Poole et al. 2016, eq. (3).

    Example:
        >>> length_map(1.0, "relu", 2.0), round(length_map(1.0, "erf", 1.0, 0.1), 6)
        (1.0, 0.564559)
    """
    sw2, sb2 = _check_sigmas(sigma_w2, sigma_b2)
    check_finite_positive("q", q, allow_zero=True)
    return sw2 * _resolve(activation, param).m2(float(q)) + sb2


def q_star(activation: Activation, sigma_w2: float, sigma_b2: float = 0.0, *,
           param: _gains.Param = None, q0: float = 1.0) -> float:
    """Return the fixed point ``q*`` of the length map reached by iterating from ``q0``.

    ``inf`` when the variance grows without bound (ReLU with ``σ_w² > 2``); 0 when it
    vanishes. At a marginal point (ReLU at ``σ_w² = 2``, ``σ_b = 0``) every ``q`` is fixed and
    ``q0`` is returned.

    Example:
        >>> round(q_star("tanh", 1.76, 0.05), 4), q_star("relu", 1.0, 0.5)
        (0.5695, 1.0)
    """
    sw2, sb2 = _check_sigmas(sigma_w2, sigma_b2)
    check_finite_positive("q0", q0)
    return _q_star(_resolve(activation, param), sw2, sb2, float(q0))


def chi1(activation: Activation, sigma_w2: float, sigma_b2: float = 0.0, *,
         param: _gains.Param = None, q0: float = 1.0) -> float:
    """Return ``χ₁ = σ_w² E[φ'(√q* z)²]`` (Schoenholz et al. 2017, eq. 7).

    ``χ₁ > 1``: chaotic; ``< 1``: ordered. The usual tanh gains are both chaotic:

    Example:
        >>> round(chi1("tanh", _gains.gain("tanh") ** 2), 2)
        1.18
        >>> round(chi1("tanh", _gains.calculate_gain("tanh") ** 2), 2)
        1.21
    """
    sw2, sb2 = _check_sigmas(sigma_w2, sigma_b2)
    p = _resolve(activation, param)
    return _chi1(p, sw2, _q_star(p, sw2, sb2, float(q0)))


def correlation_map(c: float, activation: Activation, sigma_w2: float, sigma_b2: float = 0.0,
                    *, q: float | None = None, param: _gains.Param = None) -> float:
    """Return the next layer's correlation of two inputs with correlation ``c``.

    Both inputs have variance ``q`` (default ``q*``): ``(σ_w² E[φ(u₁)φ(u₂)] + σ_b²) / q``.

    Example:
        >>> round(correlation_map(0.0, "relu", 2.0), 6)  # arc-cosine kernel: 1/π
        0.31831
    """
    sw2, sb2 = _check_sigmas(sigma_w2, sigma_b2)
    if not -1.0 <= float(c) <= 1.0:
        raise ValueError(f"c must be in [-1, 1], got {c!r}")
    p = _resolve(activation, param)
    qq = _q_star(p, sw2, sb2, 1.0) if q is None else check_finite_positive("q", q)
    if not (math.isfinite(qq) and qq > 0):
        raise ValueError(f"the correlation map needs a finite q > 0 (q* = {qq})")
    if p.kind == "quad":
        return (sw2 * p.m12(qq, float(c)) + sb2) / qq
    return _cmap(p, sw2, sb2, qq, float(c))


def c_star(activation: Activation, sigma_w2: float, sigma_b2: float = 0.0, *,
           param: _gains.Param = None) -> float:
    """Return the stable fixed point ``c*`` of the correlation map (1 unless chaotic).

    Example:
        >>> round(c_star("tanh", 4.0, 0.0), 6)  # odd φ, no bias: chaos decorrelates fully
        0.0
    """
    return mean_field(activation, sigma_w2, sigma_b2, param=param).c_star


def mean_field(activation: Activation, sigma_w2: float, sigma_b2: float = 0.0, *,
               param: _gains.Param = None, q0: float = 1.0) -> MeanField:
    """Return every mean-field quantity of ``(activation, σ_w², σ_b²)`` as a :class:`MeanField`.

    Poole et al. 2016; Schoenholz et al. 2017 (eqs. 3-9). See the module docs.

    Example:
        >>> mf = mean_field("tanh", 1.2, 0.05)
        >>> mf.phase, round(mf.q_star, 4), round(mf.chi1, 4), round(mf.xi_c, 3)
        ('ordered', 0.2699, 0.8452, 5.945)
    """
    sw2, sb2 = _check_sigmas(sigma_w2, sigma_b2)
    p = _resolve(activation, param)
    q = _q_star(p, sw2, sb2, float(q0))
    chi = _chi1(p, sw2, q)
    slope_q = sw2 * p.dm2(q) if math.isfinite(q) else math.nan
    cs = _c_star(p, sw2, sb2, q, chi)
    chic = chi if cs == 1.0 else sw2 * p.d12(q, cs)
    return MeanField(
        activation=p.label, sigma_w2=sw2, sigma_b2=sb2, q_star=q, c_star=cs, chi1=chi,
        chi_c=chic, xi_q=_depth(slope_q), xi_c=_depth(chic), xi_grad=_depth(chi),
        phase=_phase(chi),
    )


def _critical(p: _Phi, sb2: float) -> tuple[float, float]:
    """``(σ_w², q*)`` on the critical line at ``σ_b²``."""
    if p.kind in ("linear", "relu"):
        sw2 = 1.0 / p.d2(1.0)
        return sw2, _q_star(p, sw2, sb2, 1.0)

    def g(log_sw2: float) -> float:
        sw2 = math.exp(log_sw2)
        return math.log(_chi1(p, sw2, _q_star(p, sw2, sb2, 1.0)))

    lo, glo = 0.0, g(0.0)
    if glo == 0.0:
        return 1.0, _q_star(p, 1.0, sb2, 1.0)
    step = 0.5 if glo < 0 else -0.5
    hi, ghi = lo, glo
    for _ in range(80):
        hi = lo + step
        ghi = g(hi)
        if math.isnan(ghi):
            break
        if (ghi > 0) != (glo > 0) or ghi == 0.0:
            break
        lo, glo = hi, ghi
    else:
        hi = math.nan
    if not (math.isfinite(hi) and math.isfinite(ghi)) or ((ghi > 0) == (glo > 0) and ghi != 0):
        raise ValueError(
            f"{p.label}: no σ_w² puts χ₁ = 1 at σ_b² = {sb2:g} (χ₁ stays on one side of 1, "
            "or q* leaves (0, ∞) before it reaches 1)")
    x = _root(g, lo, hi, glo, ghi, rtol=1e-14)
    sw2 = math.exp(x)
    return sw2, _q_star(p, sw2, sb2, 1.0)


@functools.lru_cache(maxsize=256)
def _critical_cached(p: _Phi, sb2: float) -> tuple[float, float]:
    return _critical(p, sb2)


def _critical_of(p: _Phi, sb2: float) -> tuple[float, float]:
    # named activations are cached (their _Phi compares by spec); callables are not
    return _critical_cached(p, sb2) if p.key is not None else _critical(p, sb2)


def critical_sigma_w2(activation: Activation, sigma_b2: float = 0.0, *,
                      param: _gains.Param = None) -> float:
    """Return the ``σ_w²`` on the edge of chaos (``χ₁ = 1``) at bias variance ``σ_b²``.

    Found by root finding on ``ln χ₁(σ_w²)`` (closed form for the ReLU family: ``2/(1+a²)``,
    whatever ``σ_b²``, though there ``q*`` diverges unless ``σ_b = 0``). Schoenholz et al.
    2017, Fig. 1: tanh at ``σ_b² = 0.05`` is critical at ``σ_w² ≈ 1.76``.

    Raises:
        ValueError: when ``χ₁`` stays on one side of 1 for every ``σ_w²``.

    Example:
        >>> round(critical_sigma_w2("tanh", 0.05), 4), critical_sigma_w2("leaky_relu", 0.0, param=1.0)
        (1.761, 1.0)
    """
    sb2 = check_finite_positive("sigma_b2", sigma_b2, allow_zero=True)
    return _critical_of(_resolve(activation, param), sb2)[0]


def critical_line(activation: Activation, sigma_b2: Sequence[float] = (0.0, 0.05, 0.1, 0.2, 0.3),
                  *, param: _gains.Param = None) -> CriticalLine:
    """Return the critical line ``σ_w²(σ_b²)`` (χ₁ = 1) at the given bias variances.

    Example:
        >>> line = critical_line("tanh", [0.0, 0.05])
        >>> [round(v, 3) for v in line.sigma_w2]
        [1.0, 1.761]
    """
    p = _resolve(activation, param)
    sws, qs = [], []
    for sb2 in sigma_b2:
        sw2, q = _critical_of(p, check_finite_positive("sigma_b2", sb2, allow_zero=True))
        sws.append(sw2)
        qs.append(q)
    return CriticalLine(p.label, [float(s) for s in sigma_b2], sws, qs)


def isometry_gain(activation: Activation, param: _gains.Param = None) -> float:
    """Return the gain ``σ_w`` that puts ``activation`` at ``χ₁ = 1`` with no bias (σ_b = 0).

    Weights ``N(0, gain²/fan_in)`` (or an orthogonal matrix times ``gain``) then keep the mean
    squared singular value of the input-output Jacobian at 1 across depth: the condition
    for dynamical isometry (Saxe et al. 2013; Pennington et al. 2017), unlike :func:`gain`,
    which preserves ``E[x²]`` (for tanh it is chaotic: ``χ₁ = 1.18``).

    Example:
        >>> round(isometry_gain("tanh"), 4), round(isometry_gain("relu"), 6)
        (1.0, 1.414214)
    """
    return math.sqrt(critical_sigma_w2(activation, 0.0, param=param))


def phase_diagram(activation: Activation,
                  sigma_w2: Sequence[float] | None = None,
                  sigma_b2: Sequence[float] | None = None, *,
                  param: _gains.Param = None) -> PhaseDiagram:
    """Return χ₁ on a ``(σ_b², σ_w²)`` grid and the critical line (Poole et al. 2016, Fig. 2).

    Defaults: ``σ_w²`` in ``[0.5, 4]`` (36 points), ``σ_b²`` in ``[0, 0.3]`` (13 points).

    Example:
        >>> d = phase_diagram("tanh", [1.0, 3.0], [0.05])
        >>> [[round(v, 3) for v in row] for row in d.chi1], [round(v, 3) for v in d.critical_sigma_w2]
        ([[0.759, 1.209]], [1.761])
    """
    sw = list(np.linspace(0.5, 4.0, 36)) if sigma_w2 is None else list(sigma_w2)
    sb = list(np.linspace(0.0, 0.3, 13)) if sigma_b2 is None else list(sigma_b2)
    p = _resolve(activation, param)
    grid = [[_chi1(p, w, _q_star(p, w, b, 1.0)) for w in map(float, sw)] for b in map(float, sb)]
    crit = []
    for b in sb:
        try:
            crit.append(_critical_of(p, float(b))[0])
        except ValueError:
            crit.append(math.nan)
    return PhaseDiagram(p.label, [float(b) for b in sb], [float(w) for w in sw], grid, crit)


def plot_phase_diagram(diagram: PhaseDiagram | Activation, ax: Any = None) -> Any:
    """Plot χ₁ over ``(σ_w², σ_b²)`` with the critical line; return the matplotlib Figure.

    ``diagram`` is a :class:`PhaseDiagram` or an activation (then :func:`phase_diagram` with
    its default grid). Uses matplotlib (imported here; ``pip install 'initwise[report]'``)
    through :class:`matplotlib.figure.Figure`, never pyplot. Draws into ``ax`` when given.
    """
    d = diagram if isinstance(diagram, PhaseDiagram) else phase_diagram(diagram)
    return plot_phase(d, ax)


# --------------------------------------------------------------------------------------------
# The "critical" scheme
# --------------------------------------------------------------------------------------------


def critical_(
    tensor: torch.Tensor,
    activation: str = "tanh",
    sigma_b2: float = 0.0,
    *,
    fans: Fans | tuple[float, float] | None = None,
    generator: torch.Generator | Key | None = None,
) -> torch.Tensor:
    r"""Initialize on the edge of chaos: weights ``N(0, σ_w²/fan_in)``, biases ``N(0, σ_b²)``.

    Schoenholz et al. 2017, "Deep information propagation": ``σ_w²`` is
    :func:`critical_sigma_w2` of ``activation`` at ``sigma_b2`` (``χ₁ = 1``), so correlations
    and gradients propagate over a diverging depth scale. A tensor with 2 or more dimensions
    (or given ``fans``) is a weight: :func:`~initwise.variance_scaling_` with
    ``scale = σ_w²``, ``mode = "fan_in"``, normal; a 1-D tensor is a bias: ``N(0, σ_b²)``.

    Also known as the "critical" or "edge of chaos" initialization. ``activation`` is the
    nonlinearity applied to the layer's input (a name of :data:`initwise.ACTIVATIONS` or
    ``"erf"``). Matters for deep (≳ 20 layers) networks of bounded activations (tanh, erf,
    hardtanh) without normalization or residual connections; for ReLU it is He init
    (``σ_w² = 2``), and its bias variance must be 0.

    Example:
        >>> w = critical_(torch.empty(256, 128), "tanh", 0.05,
        ...               generator=torch.Generator().manual_seed(0))
        >>> round(float(w.var() * 128), 1)
        1.8
    """
    sb2 = check_finite_positive("sigma_b2", sigma_b2, allow_zero=True)
    if activation == "auto":
        raise ValueError("critical_: activation='auto' must be resolved to the layer's input-side "
                         "activation by the planner; pass a name such as 'tanh'")
    sw2 = critical_sigma_w2(activation, sb2)
    if fans is None and tensor.dim() < 2:
        return normal_(tensor, 0.0, math.sqrt(sb2), generator=generator)
    return variance_scaling_(tensor, sw2, "fan_in", "normal", fans=fans, generator=generator)


def check_critical(activation: object, sigma_b2: object) -> None:
    """Validate the ``critical`` scheme's parameters when the scheme is built: the activation
    is known and has an edge of chaos at ``sigma_b2`` (raises ``ValueError`` otherwise).

    ``activation="auto"`` is accepted as a placeholder for a planner to replace by the layer's
    input-side activation; :func:`critical_` refuses it.
    """
    if not isinstance(activation, str):
        raise ValueError(f"critical: activation must be a name, got {activation!r}")
    sb2 = check_finite_positive("sigma_b2", sigma_b2, allow_zero=True)  # type: ignore[arg-type]
    if activation != "auto":
        critical_sigma_w2(activation, sb2)
