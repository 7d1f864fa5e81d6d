"""Framework-free schemes: the same formulas as the torch API, returning NumPy arrays.

Every function takes a ``numpy.random.Generator`` as ``rng`` (``None`` creates a fresh,
unseeded one) and never touches torch tensors. Matrix forms take ``(fan_in, fan_out)`` and
return shape ``(fan_out, fan_in)`` (torch's ``[out, in]`` layout, so ``y = W @ x``); the
general :func:`init` takes any weight shape in the ``[out, in, *kernel]`` layout.

>>> import numpy as np
>>> w = kaiming_normal(512, 256, rng=np.random.default_rng(0))
>>> w.shape
(256, 512)
>>> round(float(w.std() * np.sqrt(512 / 2)), 1)
1.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._checks import check_choice, check_finite_positive, raise_unknown
from ._math import (
    compute_std,
    select_fan,
    shape_fans,
    trunc_normal_moments,
    uniform_bound,
)
from ._typing import DISTRIBUTIONS, FAN_MODES
from .gains import kaiming_gain
from .random._engine import _trunc_params
from .random._philox import _trunc

__all__ = [
    "init",
    "kaiming_normal",
    "kaiming_uniform",
    "lecun_normal",
    "lecun_uniform",
    "orthogonal",
    "truncated_normal",
    "variance_scaling",
    "xavier_normal",
    "xavier_uniform",
]

def _rng(rng: np.random.Generator | None) -> np.random.Generator:
    if rng is None:
        return np.random.default_rng()
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator or None, got {type(rng).__name__}")
    return rng


def _std_normal_trunc(rng: np.random.Generator, size: tuple[int, ...], a: float, b: float) -> np.ndarray:
    """Standard normal truncated to [a, b]: the keyed engine's inverse-CDF transform (AS241 on
    the accurate tail) applied to the generator's uniforms on (0, 1)."""

    u = (rng.integers(0, 2**52, size=size, dtype=np.int64) + 0.5) * 2.0**-52
    return np.asarray(_trunc(_trunc_params(0.0, 1.0, a, b), u), dtype=np.float64)


def _draw(rng: np.random.Generator, shape: tuple[int, ...], std: float, distribution: str) -> np.ndarray:
    if distribution == "normal":
        return rng.normal(0.0, std, size=shape)
    if distribution == "uniform":
        bound = uniform_bound(std)
        return rng.uniform(-bound, bound, size=shape)
    parent = std / trunc_normal_moments(-2.0, 2.0)[1]
    return parent * _std_normal_trunc(rng, shape, -2.0, 2.0)


def _shape_of(fan_in: int, fan_out: int) -> tuple[int, int]:
    for n, v in (("fan_in", fan_in), ("fan_out", fan_out)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{n} must be a positive int, got {v!r}")
    return int(fan_out), int(fan_in)


def variance_scaling(
    shape: Sequence[int],
    scale: float = 1.0,
    mode: str = "fan_in",
    distribution: str = "normal",
    rng: np.random.Generator | None = None,
    *,
    fans: tuple[float, float] | None = None,
) -> np.ndarray:
    """Array of ``shape`` with variance ``scale / fan`` (see :func:`initwise.variance_scaling_`).

    >>> variance_scaling((3, 4, 5), 2.0, rng=np.random.default_rng(0)).shape
    (3, 4, 5)
    """
    check_finite_positive("scale", scale)
    check_choice("mode", mode, FAN_MODES)
    check_choice("distribution", distribution, DISTRIBUTIONS)
    shape = tuple(int(s) for s in shape)
    fi, fo = fans if fans is not None else shape_fans(shape)
    std = compute_std(scale, select_fan(fi, fo, mode))
    return _draw(_rng(rng), shape, std, distribution)


def xavier_uniform(fan_in: int, fan_out: int, rng: np.random.Generator | None = None, *, gain: float = 1.0) -> np.ndarray:
    """Glorot uniform ``U(±gain·sqrt(6/(fan_in+fan_out)))``, shape ``(fan_out, fan_in)``."""
    g = check_finite_positive("gain", gain)
    return variance_scaling(_shape_of(fan_in, fan_out), g * g, "fan_avg", "uniform", rng)


def xavier_normal(fan_in: int, fan_out: int, rng: np.random.Generator | None = None, *, gain: float = 1.0) -> np.ndarray:
    """Glorot normal ``N(0, gain²·2/(fan_in+fan_out))``, shape ``(fan_out, fan_in)``."""
    g = check_finite_positive("gain", gain)
    return variance_scaling(_shape_of(fan_in, fan_out), g * g, "fan_avg", "normal", rng)


def _gain(nonlinearity: str, a: float, gain: float | None) -> float:
    if gain is not None:
        return check_finite_positive("gain", gain)

    return float(kaiming_gain(nonlinearity, a, where="initwise.numpy.kaiming"))


def kaiming_normal(
    fan_in: int, fan_out: int, rng: np.random.Generator | None = None, *,
    nonlinearity: str = "relu", a: float = 0.0, mode: str = "fan_in", gain: float | None = None,
) -> np.ndarray:
    """He normal ``N(0, gain²/fan_mode)``, shape ``(fan_out, fan_in)``; ``gain`` from ``nonlinearity``."""
    g = _gain(nonlinearity, a, gain)
    return variance_scaling(_shape_of(fan_in, fan_out), g * g, check_choice("mode", mode, ("fan_in", "fan_out")), "normal", rng)


def kaiming_uniform(
    fan_in: int, fan_out: int, rng: np.random.Generator | None = None, *,
    nonlinearity: str = "relu", a: float = 0.0, mode: str = "fan_in", gain: float | None = None,
) -> np.ndarray:
    """He uniform ``U(±gain·sqrt(3/fan_mode))``, shape ``(fan_out, fan_in)``."""
    g = _gain(nonlinearity, a, gain)
    return variance_scaling(_shape_of(fan_in, fan_out), g * g, check_choice("mode", mode, ("fan_in", "fan_out")), "uniform", rng)


def lecun_normal(fan_in: int, fan_out: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """LeCun normal ``N(0, 1/fan_in)``, shape ``(fan_out, fan_in)``."""
    return variance_scaling(_shape_of(fan_in, fan_out), 1.0, "fan_in", "normal", rng)


def lecun_uniform(fan_in: int, fan_out: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """LeCun uniform ``U(±sqrt(3/fan_in))``, shape ``(fan_out, fan_in)``."""
    return variance_scaling(_shape_of(fan_in, fan_out), 1.0, "fan_in", "uniform", rng)


def truncated_normal(
    shape: Sequence[int], std: float = 1.0, rng: np.random.Generator | None = None, *,
    mean: float = 0.0, a: float = -2.0, b: float = 2.0,
) -> np.ndarray:
    """Truncated normal (bounds ``a``, ``b`` in parent stds) whose final std is exactly ``std``."""
    std = check_finite_positive("std", std)
    if not a < b:
        raise ValueError(f"truncated_normal: need a < b, got a={a}, b={b}")
    parent = std / trunc_normal_moments(a, b)[1]
    return mean + parent * _std_normal_trunc(_rng(rng), tuple(int(s) for s in shape), a, b)


def orthogonal(rows: int, cols: int, rng: np.random.Generator | None = None, *, gain: float = 1.0) -> np.ndarray:
    """A ``(rows, cols)`` Haar-orthogonal matrix (orthonormal rows or columns) times ``gain``.

    >>> q = orthogonal(3, 5, rng=np.random.default_rng(0))
    >>> bool(np.allclose(q @ q.T, np.eye(3)))
    True
    """
    g = check_finite_positive("gain", gain, allow_zero=True)
    r, c = _shape_of(cols, rows)
    a = _rng(rng).standard_normal((max(r, c), min(r, c)))
    q, rr = np.linalg.qr(a)
    s = np.sign(np.diag(rr))
    s[s == 0] = 1.0
    q = q * s
    return g * (q.T if r < c else q)


_SHAPE_SCHEMES = {
    "xavier_uniform": lambda shape, rng, p: variance_scaling(shape, p.get("gain", 1.0) ** 2, "fan_avg", "uniform", rng),
    "xavier_normal": lambda shape, rng, p: variance_scaling(shape, p.get("gain", 1.0) ** 2, "fan_avg", "normal", rng),
    "kaiming_normal": lambda shape, rng, p: variance_scaling(
        shape, _gain(p.get("nonlinearity", "relu"), p.get("a", 0.0), p.get("gain")) ** 2, p.get("mode", "fan_in"), "normal", rng),
    "kaiming_uniform": lambda shape, rng, p: variance_scaling(
        shape, _gain(p.get("nonlinearity", "relu"), p.get("a", 0.0), p.get("gain")) ** 2, p.get("mode", "fan_in"), "uniform", rng),
    "lecun_normal": lambda shape, rng, p: variance_scaling(shape, 1.0, "fan_in", "normal", rng),
    # Keras/JAX names: truncated normals (as initwise's registry resolves them)
    "glorot_truncated_normal": lambda shape, rng, p: variance_scaling(shape, 1.0, "fan_avg", "truncated_normal", rng),
    "he_truncated_normal": lambda shape, rng, p: variance_scaling(shape, 2.0, "fan_in", "truncated_normal", rng),
    "lecun_truncated_normal": lambda shape, rng, p: variance_scaling(shape, 1.0, "fan_in", "truncated_normal", rng),
    "lecun_uniform": lambda shape, rng, p: variance_scaling(shape, 1.0, "fan_in", "uniform", rng),
    "variance_scaling": lambda shape, rng, p: variance_scaling(shape, rng=rng, **p),
    "orthogonal": lambda shape, rng, p: orthogonal(shape[0], math.prod(shape[1:]), rng, **p).reshape(shape),
    "normal": lambda shape, rng, p: _rng(rng).normal(p.get("mean", 0.0), p.get("std", 1.0), size=shape),
    "uniform": lambda shape, rng, p: _rng(rng).uniform(p.get("a", 0.0), p.get("b", 1.0), size=shape),
    "truncated_normal": lambda shape, rng, p: truncated_normal(shape, rng=rng, **p),
    "zeros": lambda shape, rng, p: np.zeros(shape),
    "ones": lambda shape, rng, p: np.ones(shape),
}
_ALIASES = {"glorot_uniform": "xavier_uniform", "glorot_normal": "glorot_truncated_normal",
            "he_normal": "he_truncated_normal", "he_uniform": "kaiming_uniform"}


def init(name: str, shape: Sequence[int], rng: np.random.Generator | None = None, **params: Any) -> np.ndarray:
    """Draw an array of ``shape`` (``[out, in, *kernel]``) from the named scheme.

    >>> init("he_normal", (64, 32, 3, 3), np.random.default_rng(0)).shape
    (64, 32, 3, 3)
    """
    key = _ALIASES.get(name, name)
    if key not in _SHAPE_SCHEMES:
        raise_unknown("scheme", name, [*_SHAPE_SCHEMES, *_ALIASES])
    return np.asarray(_SHAPE_SCHEMES[key](tuple(int(s) for s in shape), rng, params), dtype=np.float64)
