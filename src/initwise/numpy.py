"""Framework-free schemes: the same formulas as the torch API, returning NumPy arrays.

Every function takes as ``rng`` what ``np.random.default_rng`` takes (NumPy's SPEC 7): a
``numpy.random.Generator`` (used as is), an int seed, a ``SeedSequence`` or a
``BitGenerator`` (``rng=0`` is ``rng=np.random.default_rng(0)``), or ``None`` (a fresh,
unseeded one); it never touches torch tensors. Arrays are float64. Matrix forms take ``(fan_in, fan_out)`` and
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

import inspect
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, Union

import numpy as np

from ._checks import check_choice, check_finite_positive, check_real, raise_unknown
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
from .registry import resolve_scheme_name, scheme_names

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

RNG = Union[np.random.Generator, np.random.BitGenerator, np.random.SeedSequence, int, None]  # noqa: UP007
"""What ``rng`` takes (NumPy's SPEC 7): what ``np.random.default_rng`` takes."""


def _rng(rng: RNG) -> np.random.Generator:
    """``rng`` as a Generator: an int seed, a SeedSequence or a BitGenerator seed a new one."""
    if isinstance(rng, np.random.Generator):
        return rng
    ok = rng is None or isinstance(rng, (np.random.BitGenerator, np.random.SeedSequence)) or (
        isinstance(rng, numbers.Integral) and not isinstance(rng, bool) and int(rng) >= 0)
    if not ok:
        raise TypeError(
            "rng must be a numpy.random.Generator, an int seed >= 0, a SeedSequence, a "
            f"BitGenerator or None (what np.random.default_rng takes), got {rng!r} "
            f"({type(rng).__name__})"
        )
    return np.random.default_rng(rng)


def _shape(shape: Sequence[int] | int, where: str) -> tuple[int, ...]:
    """``shape`` as a tuple of ints >= 0; a float or bool dimension is an error, not truncated."""
    dims = (shape,) if isinstance(shape, numbers.Integral) and not isinstance(shape, bool) else shape
    if isinstance(dims, (str, bytes)) or not isinstance(dims, Sequence) or any(
            isinstance(d, bool) or not isinstance(d, numbers.Integral) for d in dims):  # fmt: skip
        raise TypeError(f"{where}: shape must be an int or a sequence of ints, got {shape!r}")
    if any(int(d) < 0 for d in dims):
        raise ValueError(f"{where}: shape must not have negative dimensions, got {tuple(dims)!r}")
    return tuple(int(d) for d in dims)


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
    rng: RNG = None,
    *,
    fans: tuple[float, float] | None = None,
) -> np.ndarray:
    """Array of ``shape`` with variance ``scale / fan`` (see :func:`initwise.variance_scaling_`).

    >>> variance_scaling((3, 4, 5), 2.0, rng=np.random.default_rng(0)).shape
    (3, 4, 5)
    """
    check_finite_positive("scale", scale, where="variance_scaling")
    check_choice("mode", mode, FAN_MODES)
    check_choice("distribution", distribution, DISTRIBUTIONS)
    shape = _shape(shape, "variance_scaling")
    if fans is None:
        fi, fo = shape_fans(shape)
    else:
        fi = check_finite_positive("fans.fan_in", fans[0], where="variance_scaling")
        fo = check_finite_positive("fans.fan_out", fans[1], where="variance_scaling")
    std = compute_std(scale, select_fan(fi, fo, mode))
    return _draw(_rng(rng), shape, std, distribution)


def xavier_uniform(fan_in: int, fan_out: int, rng: RNG = None, *, gain: float = 1.0) -> np.ndarray:
    """Glorot uniform ``U(±gain·sqrt(6/(fan_in+fan_out)))``, shape ``(fan_out, fan_in)``."""
    g = check_finite_positive("gain", gain)
    return variance_scaling(_shape_of(fan_in, fan_out), g * g, "fan_avg", "uniform", rng)


def xavier_normal(fan_in: int, fan_out: int, rng: RNG = None, *, gain: float = 1.0) -> np.ndarray:
    """Glorot normal ``N(0, gain²·2/(fan_in+fan_out))``, shape ``(fan_out, fan_in)``."""
    g = check_finite_positive("gain", gain)
    return variance_scaling(_shape_of(fan_in, fan_out), g * g, "fan_avg", "normal", rng)


def _kaiming_draw(shape: tuple[int, ...], rng: RNG, nonlinearity: str, a: float, mode: str,
                  gain: float | None, distribution: str) -> np.ndarray:  # fmt: skip
    """He init of any ``[out, in, *kernel]`` shape: ``gain`` if given, else from ``nonlinearity``."""
    if gain is not None:
        g = check_finite_positive("gain", gain)
    else:
        g = float(kaiming_gain(nonlinearity, a, where="initwise.numpy.kaiming"))
    return variance_scaling(shape, g * g, check_choice("mode", mode, ("fan_in", "fan_out")), distribution, rng)


def kaiming_normal(
    fan_in: int, fan_out: int, rng: RNG = None, *,
    nonlinearity: str = "leaky_relu", a: float = 0.0, mode: str = "fan_in", gain: float | None = None,
) -> np.ndarray:
    """He normal ``N(0, gain²/fan_mode)``, shape ``(fan_out, fan_in)``; ``gain`` from ``nonlinearity``."""
    return _kaiming_draw(_shape_of(fan_in, fan_out), rng, nonlinearity, a, mode, gain, "normal")


def kaiming_uniform(
    fan_in: int, fan_out: int, rng: RNG = None, *,
    nonlinearity: str = "leaky_relu", a: float = 0.0, mode: str = "fan_in", gain: float | None = None,
) -> np.ndarray:
    """He uniform ``U(±gain·sqrt(3/fan_mode))``, shape ``(fan_out, fan_in)``."""
    return _kaiming_draw(_shape_of(fan_in, fan_out), rng, nonlinearity, a, mode, gain, "uniform")


def lecun_normal(fan_in: int, fan_out: int, rng: RNG = None) -> np.ndarray:
    """LeCun normal ``N(0, 1/fan_in)``, shape ``(fan_out, fan_in)``."""
    return variance_scaling(_shape_of(fan_in, fan_out), 1.0, "fan_in", "normal", rng)


def lecun_uniform(fan_in: int, fan_out: int, rng: RNG = None) -> np.ndarray:
    """LeCun uniform ``U(±sqrt(3/fan_in))``, shape ``(fan_out, fan_in)``."""
    return variance_scaling(_shape_of(fan_in, fan_out), 1.0, "fan_in", "uniform", rng)


def truncated_normal(
    shape: Sequence[int], std: float = 1.0, rng: RNG = None, *,
    mean: float = 0.0, a: float = -2.0, b: float = 2.0,
) -> np.ndarray:
    """Truncated normal (bounds ``a``, ``b`` in parent stds) whose final std is exactly ``std``."""
    std = check_finite_positive("std", std, where="truncated_normal")
    mean = check_real("mean", mean, where="truncated_normal")
    a = check_real("a", a, finite=False, where="truncated_normal")
    b = check_real("b", b, finite=False, where="truncated_normal")
    if not a < b:
        raise ValueError(f"truncated_normal: need a < b (in standard deviations), got a={a}, b={b}")
    parent = std / trunc_normal_moments(a, b)[1]
    return mean + parent * _std_normal_trunc(_rng(rng), _shape(shape, "truncated_normal"), a, b)


def orthogonal(rows: int, cols: int, rng: RNG = None, *, gain: float = 1.0) -> np.ndarray:
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


# ``init``'s names: each a function ``(shape, rng, **params)`` whose keyword parameters are the
# only ones the name takes (an unknown one is an error, never silently dropped).


def _xavier(distribution: str) -> Callable[..., np.ndarray]:
    def draw(shape: tuple[int, ...], rng: RNG, *, gain: float = 1.0) -> np.ndarray:
        g = check_finite_positive("gain", gain)
        return variance_scaling(shape, g * g, "fan_avg", distribution, rng)
    return draw


def _kaiming(distribution: str) -> Callable[..., np.ndarray]:
    def draw(shape: tuple[int, ...], rng: RNG, *, nonlinearity: str = "leaky_relu", a: float = 0.0,
             mode: str = "fan_in", gain: float | None = None) -> np.ndarray:  # fmt: skip
        return _kaiming_draw(shape, rng, nonlinearity, a, mode, gain, distribution)
    return draw


def _fixed(scale: float, mode: str, distribution: str) -> Callable[..., np.ndarray]:
    def draw(shape: tuple[int, ...], rng: RNG) -> np.ndarray:
        return variance_scaling(shape, scale, mode, distribution, rng)
    return draw


def _variance_scaling(shape: tuple[int, ...], rng: RNG, *, scale: float = 1.0, mode: str = "fan_in",
                      distribution: str = "normal", fans: tuple[float, float] | None = None) -> np.ndarray:  # fmt: skip
    return variance_scaling(shape, scale, mode, distribution, rng, fans=fans)


def _orthogonal(shape: tuple[int, ...], rng: RNG, *, gain: float = 1.0) -> np.ndarray:
    if len(shape) < 2:
        raise ValueError(f"init('orthogonal'): needs a shape with at least 2 dimensions, got {shape}")
    return orthogonal(shape[0], math.prod(shape[1:]), rng, gain=gain).reshape(shape)


def _normal(shape: tuple[int, ...], rng: RNG, *, mean: float = 0.0, std: float = 1.0) -> np.ndarray:
    mean = check_real("mean", mean, where="init('normal')")
    std = check_finite_positive("std", std, allow_zero=True, where="init('normal')")
    return _rng(rng).normal(mean, std, size=shape)


def _uniform(shape: tuple[int, ...], rng: RNG, *, a: float = 0.0, b: float = 1.0) -> np.ndarray:
    a = check_real("a", a, finite=False, where="init('uniform')")
    b = check_real("b", b, finite=False, where="init('uniform')")
    if not (math.isfinite(a) and math.isfinite(b)) or a > b:
        raise ValueError(f"init('uniform'): need finite a <= b, got a={a}, b={b}")
    return _rng(rng).uniform(a, b, size=shape)


def _truncated_normal(shape: tuple[int, ...], rng: RNG, *, std: float = 1.0, mean: float = 0.0,
                      a: float = -2.0, b: float = 2.0) -> np.ndarray:  # fmt: skip
    return truncated_normal(shape, std, rng, mean=mean, a=a, b=b)


def _constant(value: float) -> Callable[..., np.ndarray]:
    def draw(shape: tuple[int, ...], rng: RNG) -> np.ndarray:
        return np.full(shape, value)
    return draw


def _dims(name: str, shape: tuple[int, ...], lo: int, hi: int) -> None:
    if not lo <= len(shape) <= hi:
        want = f"{lo}" if lo == hi else f"{lo} to {hi}"
        raise ValueError(f"init({name!r}): needs a shape with {want} dimensions, got {shape}")


def _constant_val(shape: tuple[int, ...], rng: RNG, *, val: float) -> np.ndarray:
    return np.full(shape, check_real("val", val, finite=False, where="init('constant')"))


def _trunc_normal(shape: tuple[int, ...], rng: RNG, *, mean: float = 0.0, std: float = 1.0,
                  a: float = -2.0, b: float = 2.0) -> np.ndarray:  # fmt: skip
    """torch's ``trunc_normal_``: parent ``N(mean, std²)`` cut to the absolute bounds ``[a, b]``."""
    where = "init('trunc_normal')"
    mean = check_real("mean", mean, where=where)
    std = check_finite_positive("std", std, where=where)
    a = check_real("a", a, finite=False, where=where)
    b = check_real("b", b, finite=False, where=where)
    if math.isnan(a) or math.isnan(b) or a > b:
        raise ValueError(f"{where}: need a <= b, got a={a}, b={b}")
    if a == b:
        if not math.isfinite(a):
            raise ValueError(f"{where}: a == b must be finite, got a={a}, b={b}")
        return np.full(shape, a)
    return mean + std * _std_normal_trunc(_rng(rng), shape, (a - mean) / std, (b - mean) / std)


def _sparse(shape: tuple[int, ...], rng: RNG, *, sparsity: float, std: float = 0.01) -> np.ndarray:
    """torch's ``sparse_``: ``N(0, std²)`` with ``ceil(sparsity * rows)`` zeros in each column."""
    _dims("sparse", shape, 2, 2)
    s = check_real("sparsity", sparsity, where="init('sparse')")
    if not 0.0 <= s <= 1.0:
        raise ValueError(f"init('sparse'): sparsity must be in [0, 1], got {sparsity!r}")
    std = check_finite_positive("std", std, allow_zero=True, where="init('sparse')")
    g = _rng(rng)
    values = g.normal(0.0, std, size=shape)
    rows = shape[0]
    zeros = math.ceil(s * rows)
    if zeros and values.size:
        chosen = np.argsort(g.random(shape), axis=0, kind="stable")[:zeros]  # a random subset per column
        np.put_along_axis(values, chosen, 0.0, axis=0)
    return values


def _eye(shape: tuple[int, ...], rng: RNG) -> np.ndarray:
    _dims("eye", shape, 2, 2)
    return np.eye(shape[0], shape[1])


def _dirac(shape: tuple[int, ...], rng: RNG, *, groups: int = 1) -> np.ndarray:
    """torch's ``dirac_``: the identity convolution, at tap ``k // 2``, per group."""
    _dims("dirac", shape, 3, 5)
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 1:
        raise ValueError(f"init('dirac'): groups must be a positive int, got {groups!r}")
    if shape[0] % int(groups):
        raise ValueError(f"init('dirac'): dim 0 ({shape[0]}) must be divisible by groups ({groups})")
    w = np.zeros(shape)
    per = shape[0] // int(groups)
    centre = tuple(k // 2 for k in shape[2:])
    for g in range(int(groups)):
        for d in range(min(per, shape[1])):
            tap = (g * per + d, d, *centre)
            w[tap] = 1.0
    return w


def _delta_orthogonal(shape: tuple[int, ...], rng: RNG, *, gain: float = 1.0) -> np.ndarray:
    """``delta_orthogonal_``: an ``[out, in]`` orthogonal matrix (orthonormal columns) at tap ``k // 2``."""
    _dims("delta_orthogonal", shape, 3, 5)
    if shape[0] < shape[1]:
        raise ValueError(f"init('delta_orthogonal'): needs out_channels >= in_channels, got shape {shape}")
    w = np.zeros(shape)
    index: tuple[slice | int, ...] = (slice(None), slice(None), *(k // 2 for k in shape[2:]))
    w[index] = orthogonal(shape[0], shape[1], rng, gain=gain)
    return w


_SHAPE_SCHEMES: dict[str, Callable[..., np.ndarray]] = {
    "xavier_uniform": _xavier("uniform"),
    "xavier_normal": _xavier("normal"),
    "kaiming_normal": _kaiming("normal"),
    "kaiming_uniform": _kaiming("uniform"),
    "lecun_normal": _fixed(1.0, "fan_in", "normal"),
    # Keras/JAX names: truncated normals (as initwise's registry resolves them)
    "glorot_truncated_normal": _fixed(1.0, "fan_avg", "truncated_normal"),
    "he_truncated_normal": _fixed(2.0, "fan_in", "truncated_normal"),
    "lecun_truncated_normal": _fixed(1.0, "fan_in", "truncated_normal"),
    "lecun_uniform": _fixed(1.0, "fan_in", "uniform"),
    "variance_scaling": _variance_scaling,
    "orthogonal": _orthogonal,
    "normal": _normal,
    "uniform": _uniform,
    "truncated_normal": _truncated_normal,
    "trunc_normal": _trunc_normal,
    "sparse": _sparse,
    "constant": _constant_val,
    "zeros": _constant(0.0),
    "ones": _constant(1.0),
    "eye": _eye,
    "dirac": _dirac,
    "delta_orthogonal": _delta_orthogonal,
}
# Every registry name but ``critical`` (a theory-layer scheme); aliases are the registry's own.


def _scheme_key(name: str) -> str:
    try:
        key = resolve_scheme_name(name)
    except ValueError:
        key = ""
    if key not in _SHAPE_SCHEMES:
        names = [n for n in scheme_names() if resolve_scheme_name(n) in _SHAPE_SCHEMES]
        if key:
            raise ValueError(
                f"initwise.numpy.init: scheme {name!r} has no NumPy form (it needs initwise.theory "
                f"and torch); NumPy schemes: {', '.join(names)}"
            )
        raise_unknown("scheme", name, names, where="initwise.numpy.init")
    return key


def init(name: str, shape: Sequence[int] | int, rng: RNG = None, **params: Any) -> np.ndarray:
    """Draw an array of ``shape`` (``[out, in, *kernel]``) from the named scheme.

    ``params`` are the named scheme's own (``gain`` for ``xavier_*``; ``nonlinearity``, ``a``,
    ``mode``, ``gain`` for ``kaiming_*``; ``mean``, ``std`` for ``normal``; ...), validated as
    the functions of the same name validate them; an unknown one is an error.

    >>> init("he_normal", (64, 32, 3, 3), np.random.default_rng(0)).shape
    (64, 32, 3, 3)
    """
    key = _scheme_key(name)
    draw = _SHAPE_SCHEMES[key]
    takes = list(inspect.signature(draw).parameters)[2:]
    for k in params:
        if k not in takes:
            raise_unknown(f"parameter for scheme {key!r}:" if takes else f"parameter for scheme {key!r} (it takes none):",
                          k, takes)  # fmt: skip
    return np.asarray(draw(_shape(shape, f"init({name!r})"), rng, **params), dtype=np.float64)
