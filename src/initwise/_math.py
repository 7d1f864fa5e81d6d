"""Framework-free scalar math shared by the torch and NumPy APIs.

This is the one place where a (scale, fan) pair becomes a standard deviation or a uniform
bound, and where truncated-normal moments are computed; also the log-log slope that the width
sweeps (``audit_widths``, ``coord_check``) fit, and the JSON form of non-finite floats.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ._checks import raise_unknown
from ._typing import FAN_MODES

__all__ = [
    "SQRT3",
    "compute_std",
    "decode_nonfinite",
    "encode_nonfinite",
    "json_finite",
    "loglog_slope",
    "normal_cdf",
    "normal_pdf",
    "shape_fans",
    "trunc_normal_moments",
    "uniform_bound",
]

SQRT3 = math.sqrt(3.0)


def encode_nonfinite(v: Any) -> Any:
    """Return ``v`` for strict JSON with non-finite floats in nested dicts, lists and tuples as
    the strings ``"nan"``, ``"inf"``, ``"-inf"`` (:func:`decode_nonfinite` reverses it).

    >>> encode_nonfinite({"a": [1.0, float("-inf")]})
    {'a': [1.0, '-inf']}
    """
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, dict):
        return {k: encode_nonfinite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [encode_nonfinite(x) for x in v]
    return v


def decode_nonfinite(v: Any) -> Any:
    """Return ``v`` with the strings ``"nan"``, ``"inf"``, ``"-inf"`` (nested in dicts and
    lists) turned back into floats: the inverse of :func:`encode_nonfinite`."""
    if isinstance(v, str) and v in ("nan", "inf", "-inf"):
        return float(v)
    if isinstance(v, dict):
        return {k: decode_nonfinite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [decode_nonfinite(x) for x in v]
    return v


def json_finite(obj: Any) -> Any:
    """Return ``obj`` with every non-finite float (NaN, ±inf) in nested dicts, lists and tuples
    replaced by ``None``, so that it is strict JSON (tuples become lists).

    >>> json_finite({"a": [1.0, float("nan")], "b": (float("inf"), 2)})
    {'a': [1.0, None], 'b': [None, 2]}
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_finite(v) for v in obj]
    return obj


def shape_fans(shape: Sequence[int]) -> tuple[float, float]:
    """Return ``(fan_in, fan_out)`` of a weight shape in torch's ``[out, in, *kernel]`` layout."""
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise ValueError(
            f"fans need a tensor with at least 2 dimensions ([out, in, *kernel]), got shape "
            f"{shape}; pass fans=Fans(fan_in, fan_out) explicitly for other layouts"
        )
    receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
    return float(shape[1] * receptive), float(shape[0] * receptive)


def select_fan(fan_in: float, fan_out: float, mode: str) -> float:
    """Return the fan for ``mode``: fan_in, fan_out, their mean (fan_avg) or geometric mean."""
    if mode == "fan_in":
        return float(fan_in)
    if mode == "fan_out":
        return float(fan_out)
    if mode == "fan_avg":
        return (fan_in + fan_out) / 2.0
    if mode == "fan_geo_avg":
        return math.sqrt(fan_in * fan_out)
    raise_unknown("mode", mode, FAN_MODES)


def compute_std(scale: float, fan: float) -> float:
    """Return the standard deviation ``sqrt(scale / fan)`` that gives variance ``scale / fan``.

    >>> compute_std(2.0, 8.0)
    0.5
    """
    if fan <= 0:
        raise ValueError(f"fan must be > 0 to compute a standard deviation, got {fan}")
    return math.sqrt(scale / fan)


def uniform_bound(std: float) -> float:
    """Return the bound ``b`` of ``U(-b, b)`` whose standard deviation is ``std``: ``sqrt(3)*std``."""
    return SQRT3 * std


def normal_pdf(x: float) -> float:
    """Standard normal density; 0 at ±inf."""
    if math.isinf(x):
        return 0.0
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def normal_cdf(x: float) -> float:
    """Standard normal CDF Φ(x)."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def trunc_normal_moments(a: float, b: float) -> tuple[float, float]:
    """Return ``(mean, std)`` of a standard normal truncated to ``[a, b]`` (in standard deviations).

    >>> round(trunc_normal_moments(-2.0, 2.0)[1], 12)
    0.879625661034
    """
    if not a < b:
        raise ValueError(f"truncation bounds need a < b, got a={a}, b={b}")
    # Work on the side where the CDF differences are accurate.
    if a > 0:
        m, s = trunc_normal_moments(-b, -a)
        return -m, s
    z = normal_cdf(b) - normal_cdf(a)
    if z <= 0:
        raise ValueError(f"truncation interval [{a}, {b}] has zero probability mass")
    pa, pb = normal_pdf(a), normal_pdf(b)
    apa = 0.0 if math.isinf(a) else a * pa
    bpb = 0.0 if math.isinf(b) else b * pb
    mean = (pa - pb) / z
    var = 1.0 + (apa - bpb) / z - mean * mean
    return mean, math.sqrt(max(var, 0.0))


def loglog_slope(sizes: Sequence[float], values: Sequence[float]) -> float:
    """Return the least-squares slope of ``log(value)`` against ``log(size)`` (NaN if undefined).

    Non-finite and non-positive values are left out; fewer than two points give NaN.

    >>> round(loglog_slope([64, 128, 256], [1.0, 2.0, 4.0]), 6)
    1.0
    """
    pts = [(math.log(s), math.log(v)) for s, v in zip(sizes, values, strict=True)
           if v is not None and math.isfinite(v) and v > 0]
    if len(pts) < 2:
        return math.nan
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if sxx == 0:
        return math.nan
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx
