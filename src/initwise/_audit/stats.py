"""Statistics: a few fused reductions per tensor, no host sync until the end."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from ..model.entries import Plan, PlanEntry

try:  # the optional C extension (built by setup.py when a compiler is available)
    from . import _rowstats  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - exercised on machines without a compiler
    _rowstats = None

# ------------------------------------------------------------------------------------------
# Statistics: a few fused reductions per tensor, no host sync until the end
# ------------------------------------------------------------------------------------------

def _flat32(x: torch.Tensor) -> torch.Tensor:
    x = x.detach()
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    return x.reshape(-1)


COUNT_SAMPLE = 65536  # counts (zeros, saturated, nonzeros) above this many elements are sampled


def _count_step(n: int) -> int:
    """The stride of :func:`_count_view`'s sample of ``n`` elements (1: no sampling)."""
    return 1 if n <= COUNT_SAMPLE else (n // COUNT_SAMPLE) | 1


def _count_view(f: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``(view, scale)``: ``f`` itself, or above :data:`COUNT_SAMPLE` elements an evenly
    strided sample of about that size (odd stride: no aliasing with power-of-two feature
    sizes) and the factor that turns a count on it into an estimate for ``f``. A fraction
    estimated on 65536 elements has a standard error of at most 0.002; an all-zero tensor
    reads exactly 1."""
    n = f.numel()
    step = _count_step(n)
    if step == 1:
        return f, 1.0
    v = f[::step]
    return v, n / v.numel()


def _count_scale(n: int) -> tuple[int, float]:
    """``(sample size, scale)`` of :func:`_count_view` for ``n`` elements, without a tensor."""
    step = _count_step(n)
    size = -(-n // step)
    return size, n / size if step > 1 else 1.0


# Contiguous CPU tensors of these dtypes are read by the one-pass C statistics
# (``_rowstats.c``): every statistic a tensor needs in one read, accumulated in float64, and
# returned to the host at once. Everything else (GPU tensors, float16, strided views, tensor
# subclasses, no compiler) takes the torch path below. On a small model the torch path's cost
# is the fixed cost of its several kernel calls per tensor: ~60 µs per 8×65×256 output of a
# ViT, against ~20 µs in one C pass (AVX-512).
_NATIVE_DTYPES = {torch.float32: 0, torch.float64: 1, torch.bfloat16: 2}
_PLAIN_TYPES = (torch.Tensor, nn.Parameter)

Raw = torch.Tensor | list[float]
"""A statistic's raw vector: on the device (torch path) or already host floats (C path)."""

# Every statistic below reads ``x.detach()``: neither path records autograd history, so the
# audit's hooks call them without a ``torch.no_grad()`` block (~250 of them per audit of a
# small ViT cost ~1 ms, more than a percent of its forward and backward).


def _moments(nat: tuple[int, int], n: int, *, counts: bool = False,
             lo: float | None = None, hi: float | None = None) -> tuple[float, ...]:
    """``_rowstats.moments`` of the ``n`` elements at ``nat`` (:func:`_native`):
    ``(Σx, Σx², min, max, nonzeros, below lo, above hi)``, the counts on the
    :func:`_count_view` sample when ``counts`` (else 0). It may use torch's intra-op threads:
    they run on the OpenMP team torch's own kernels use (idle while a hook runs), in pieces
    combined in a fixed order, so every value is the same at any thread count
    (``_rowstats.c``)."""
    return _rowstats.moments(nat[0], n, nat[1], _count_step(n) if counts else 1,
                             lo is not None, 0.0 if lo is None else lo, hi is not None,
                             0.0 if hi is None else hi, counts, True, torch.get_num_threads())


def _native(x: torch.Tensor) -> tuple[int, int] | None:
    """``(address, dtype code)`` of ``x``'s data when the C statistics can read it in place:
    the extension is built, ``x`` is a plain, non-empty, contiguous, strided CPU tensor of a
    dtype it knows; else ``None`` (the torch path)."""
    if _rowstats is None:
        return None
    code = _NATIVE_DTYPES.get(x.dtype)
    if (code is None or not x.is_cpu or type(x) not in _PLAIN_TYPES
            or x.layout is not torch.strided or not x.is_contiguous() or x.is_neg()
            or x.numel() == 0):
        return None
    try:
        ptr = x.data_ptr()
    except (RuntimeError, NotImplementedError):  # a tensor without storage (functorch)
        return None
    return (ptr, code) if ptr else None


# Sums of squares are ``dot(x, x)`` (BLAS, one read): on the CPU ~2x faster than
# ``linalg.vector_norm`` and far more accurate in float32 (relative error 9e-7 against 6e-5 on
# 2·10⁶ normal values, 9e-5 against 6e-3 on 4·10⁷).
#
# Each statistic below is two halves: a device half that reduces a tensor to a short raw
# vector in its own float dtype (a handful of kernels, no host sync), and a host half that
# turns the raw floats, read back once for the whole audit, into the reported float64 numbers.
# The host arithmetic is the float64 arithmetic the device would do (a square is ``v * v``,
# as torch's ``x ** 2``), so splitting it off changes no bit. Counts (at most 2 * 65536 on the
# sample) are exact in float32.

def _thresholds(bounds: tuple[float | None, float | None], margin: float
                ) -> tuple[float | None, float | None]:
    """The saturation thresholds ``(lower bound + m, upper bound − m)`` (``None``: that side
    does not saturate), ``m`` being ``margin`` times the range between the bounds."""
    b_lo, b_hi = bounds
    width = (b_hi if b_hi is not None else 0.0) - (b_lo if b_lo is not None else 0.0)
    m = margin * abs(width)
    return (None if b_lo is None else b_lo + m), (None if b_hi is None else b_hi - m)


def _out_stats(x: torch.Tensor, bounds: tuple[float | None, float | None] | None,
               margin: float) -> Raw:
    """Raw ``[sum, sum of squares, min, max, nonzeros, below, above]`` of a layer output (the
    counts on the :func:`_count_view` sample, ``below``/``above`` the saturation thresholds
    when ``bounds`` has that side, else 0; the last two only with ``bounds``).
    :func:`_out_moments` reads them.

    ``bounds``: the saturating bounds (:func:`initwise._modules.saturation_bounds`; a side
    ``None`` does not saturate, e.g. ReLU6's zero); the margin is ``margin`` times the range
    between the activation's bounds (0 to 6 for ReLU6)."""
    t_lo, t_hi = _thresholds(bounds, margin) if bounds is not None else (None, None)
    x = x.detach()
    nat = _native(x)
    if nat is not None:
        n = x.numel()
        raw = _moments(nat, n, counts=True, lo=t_lo, hi=t_hi)
        return list(raw if bounds is not None else raw[:5])
    f = _flat32(x)
    lo, hi = torch.aminmax(f)
    c, _ = _count_view(f)
    parts = [f.sum(), torch.dot(f, f), lo, hi, torch.count_nonzero(c)]
    if bounds is not None:
        zero = torch.zeros((), dtype=f.dtype, device=f.device)
        parts.append((c <= t_lo).sum() if t_lo is not None else zero)
        parts.append((c >= t_hi).sum() if t_hi is not None else zero)
    return torch.stack(parts)


OUT_RAW = (5, 7)  # lengths of :func:`_out_stats`'s raw vector without / with bounds


def _out_moments(raw: list[float], numel: int, bounded: bool
                 ) -> tuple[float, float, float, float, float, float]:
    """``(sum, sum of squares, min, max, zeros, saturated)`` from :func:`_out_stats`'s raw
    floats; the counts are estimates for all ``numel`` elements (an all-zero tensor reads
    ``numel`` zeros exactly); without bounds, saturated is the zero count."""
    s1, s2, lo, hi, nnz = raw[:5]
    size, scale = _count_scale(numel)
    zeros = numel if s2 == 0 else float(size - int(nnz)) * scale
    if bounded:
        sat = 0.0 + raw[5] * scale
        sat = sat + raw[6] * scale
    else:
        sat = zeros
    return s1, s2, lo, hi, float(zeros), sat


def _norm(x: torch.Tensor) -> Raw:
    """Raw ``[sum of squares]`` of ``x``; :func:`_mean_square` reads it."""
    x = x.detach()
    nat = _native(x)
    if nat is not None:
        return [_moments(nat, x.numel())[1]]
    f = _flat32(x)
    return torch.dot(f, f).reshape(1)


def _mean_square(ss: float, numel: int) -> float:
    """Mean square from :func:`_norm`'s raw float."""
    return ss / max(numel, 1)


def _weight_stats(p: torch.Tensor) -> Raw:
    """Raw ``[Σx, Σx², row-norm spread]`` (float64) of a parameter;
    :func:`_weight_moments` reads them.

    Two reads of the tensor and no copy: ``sum`` and the row norms (whose squares sum to
    ``Σx²``; a 1-D tensor: ``dot(x, x)``); a 154 MB embedding: ~35 ms, the shifted copy
    ``x − x₀`` this replaces cost ~80 ms in page faults alone. The
    one-pass variance ``Σx²/n − (Σx/n)²`` is used only where it is well conditioned (mean² ≤
    variance: the sums' float32 rounding, ~1e-7 relative, then moves the variance by about as
    much); elsewhere (an all-ones norm weight, a constant bias) :func:`_weight_shifted` gives
    the exact shifted-data variance. The spread ``(max − min) / mean`` of the row (or column)
    norms of a ≥2-D weight pre-screens orthogonal weights (nan otherwise); column sums of
    squares are summed over contiguous rows (a strided ``norm(dim=0)`` is ~20x slower on CPU)
    and give ``Σx²`` without another read. The C path does all of it in one read.
    """
    p = p.detach()
    nat = _native(p)
    if nat is not None:
        if p.dim() >= 2:
            return list(_rowstats.weight(nat[0], p.shape[0], p.numel() // p.shape[0], nat[1],
                                         torch.get_num_threads()))  # threads: as _moments
        s1, s2 = _moments(nat, p.numel())[:2]
        return [s1, s2, math.nan]
    f = _flat32(p)
    if f.numel() == 0:
        return torch.tensor([0.0, 0.0, math.nan], dtype=f.dtype, device=f.device)
    spread = torch.full((), math.nan, dtype=f.dtype, device=f.device)
    ss = None
    if p.dim() >= 2:
        w2 = f.reshape(p.shape[0], -1)
        if w2.shape[0] <= w2.shape[1]:
            nr = w2.norm(dim=1)
            ss = nr.double().square().sum()
        else:
            sq = (w2 * w2).sum(dim=0)
            ss = sq.double().sum()
            nr = sq.sqrt_()
        spread = (nr.max() - nr.min()) / nr.mean().clamp_min(1e-30)
    if ss is None:
        ss = torch.dot(f, f)
    return torch.stack([f.sum().double(), ss.double(), spread.double()])


def _weight_moments(raw: list[float], numel: int) -> tuple[float, float, float, float] | None:
    """``(mean, variance, sum of squares, spread)`` from :func:`_weight_stats`'s raw floats;
    ``None`` where the one-pass variance is ill-conditioned (mean² > variance: the parameter
    needs :func:`_weight_shifted`)."""
    s1, ss, spread = raw
    if numel == 0:
        return 0.0, 0.0, 0.0, spread
    mean = s1 / numel
    var = ss / numel - mean * mean
    if not mean * mean <= var:  # also nan / inf sums: the shifted path reports them as before
        return None
    return mean, var, ss, spread


def _weight_shifted(p: torch.Tensor) -> Raw:
    """Raw ``[x₀, Σ(x − x₀), Σ(x − x₀)²]``: the shifted-data algorithm, so a constant
    tensor has variance exactly 0 and one close to constant keeps its precision (a Welford
    ``var_mean`` is ~30x slower on CPU). :func:`_shifted_moments` reads them."""
    p = p.detach()
    nat = _native(p)
    if nat is not None:
        return list(_rowstats.shifted(nat[0], p.numel(), nat[1]))
    f = _flat32(p)
    x0 = f[0]
    d = f - x0
    return torch.stack([x0, d.sum(), torch.dot(d, d)])


def _shifted_moments(raw: list[float], numel: int) -> tuple[float, float]:
    """``(mean, variance)`` from :func:`_weight_shifted`'s raw floats."""
    x0, dsum, dss = raw
    m_d = dsum / numel
    return x0 + m_d, max(dss / numel - m_d * m_d, 0.0)


def _param_grad_stats(g: torch.Tensor) -> Raw:
    """Raw ``[sum of squares, nonzeros on the sample]`` of a parameter's gradient."""
    g = g.detach()
    nat = _native(g)
    if nat is not None:
        n = g.numel()
        raw = _moments(nat, n, counts=True)
        return [raw[1], raw[4]]
    f = _flat32(g)
    c, _ = _count_view(f)
    return torch.stack([torch.dot(f, f), torch.count_nonzero(c)])


def _param_grad_moments(raw: list[float], numel: int) -> tuple[float, float]:
    """``(sum of squares, nonzeros)`` from :func:`_param_grad_stats`'s raw floats."""
    ss, nnz = raw
    return ss, nnz * _count_scale(numel)[1]


def _grad_stats(g: torch.Tensor) -> Raw:
    """Raw ``[sum of squares, min, max]`` of a gradient; :func:`_grad_moments` reads it."""
    g = g.detach()
    nat = _native(g)
    if nat is not None:
        raw = _moments(nat, g.numel())
        return [raw[1], raw[2], raw[3]]
    f = _flat32(g)
    lo, hi = torch.aminmax(f)
    return torch.stack([torch.dot(f, f), lo, hi])


def _grad_moments(raw: list[float]) -> tuple[float, float]:
    """``(sum of squares, max |g|)`` from :func:`_grad_stats`'s raw floats (nan if any is)."""
    ss, lo, hi = raw
    gmax = math.nan if math.isnan(lo) or math.isnan(hi) else max(-lo, hi)
    return ss, gmax


def _input_square_sum(t: torch.Tensor) -> float | None:
    """``Σx²`` (float64) of a floating-point model input, ``None`` if it has a nan or an inf
    (the C path: one read; the torch path: ``isfinite``, then a float64 sum)."""
    t = t.detach()
    nat = _native(t)
    if nat is not None:
        _, s2, lo, hi = _moments(nat, t.numel())[:4]
        return s2 if math.isfinite(lo) and math.isfinite(hi) else None
    if not bool(torch.isfinite(t).all()):
        return None
    return float((t.double() ** 2).sum())


def _read_raw(parts: list[Raw]) -> list[list[float]]:
    """The raw statistic vectors ``parts`` as host floats: one concatenation and one copy to
    the host per device (float32 and float64 parts concatenate to float64, exactly); parts
    the C path computed are host floats already."""
    by_device: dict[torch.device, list[tuple[int, torch.Tensor]]] = {}
    out: list[list[float]] = [[] for _ in parts]
    for i, t in enumerate(parts):
        if isinstance(t, list):
            out[i] = t
        else:
            by_device.setdefault(t.device, []).append((i, t))
    for items in by_device.values():
        flat = torch.cat([t for _, t in items]).cpu().tolist()
        at = 0
        for i, t in items:
            n = t.numel()
            out[i] = flat[at:at + n]
            at += n
    return out


_USER_ENTRY_KEYS = frozenset({"name", "std", "bound", "scheme", "action"})


def _plan_entries(plan: Any) -> list[PlanEntry | Mapping[str, Any]]:
    if isinstance(plan, Plan):
        return list(plan.entries)
    if isinstance(plan, Mapping) and "entries" in plan:  # Plan.to_dict() / a plan's JSON
        return [PlanEntry.from_dict(e) for e in plan["entries"]]
    if isinstance(plan, Mapping):
        raise TypeError("audit: plan= must be an initwise Plan, Plan.to_dict() or a list of entries, "
                        "got a mapping without 'entries'")
    if isinstance(plan, (str, bytes)) or not isinstance(plan, Iterable):
        raise TypeError(f"audit: plan= must be an initwise Plan, Plan.to_dict() or a list of entries, "
                        f"got {type(plan).__name__}")
    out: list[PlanEntry | Mapping[str, Any]] = []
    for e in plan:
        if isinstance(e, PlanEntry):
            out.append(e)
        elif isinstance(e, Mapping):
            if "name" not in e:
                raise TypeError("audit: a plan entry needs a 'name'")
            unknown = sorted(set(e) - _USER_ENTRY_KEYS)
            if unknown and set(e) >= {"kind", "action", "role"}:  # a PlanEntry.to_dict()
                out.append(PlanEntry.from_dict(e))
                continue
            if unknown:
                raise TypeError(f"audit: unknown plan entry field(s) {', '.join(map(repr, unknown))}; "
                                f"valid: {', '.join(sorted(_USER_ENTRY_KEYS))} (or a PlanEntry)")
            out.append(e)
        else:
            raise TypeError(f"audit: plan entries must be PlanEntry objects or mappings, got {type(e).__name__}")
    return out


def _plan_map(plan: Any) -> dict[str, tuple[float | None, str | None]]:
    """name -> (intended std, scheme) for every tensor the plan initializes.

    ``plan``: a :class:`~initwise.Plan`, its ``to_dict()``, or a list of :class:`PlanEntry`
    objects or of mappings with ``name`` and any of ``std``, ``bound``, ``scheme``, ``action``.
    Entries the plan does not initialize (``action`` keep or skip) are left out; a tensor's
    tied names get the same intended std.
    """
    if plan is None:
        return {}
    out: dict[str, tuple[float | None, str | None]] = {}
    for e in _plan_entries(plan):
        if isinstance(e, PlanEntry):
            if e.action != "init":
                continue
            names, std, bound, scheme = [e.name, *e.aliases], e.std, e.bound, e.scheme
        else:
            if e.get("action", "init") != "init":
                continue
            names, std, bound, scheme = [str(e["name"])], e.get("std"), e.get("bound"), e.get("scheme")
        if std is None and bound is not None:
            std = float(bound) / math.sqrt(3.0)
        for n in names:
            out[n] = (None if std is None else float(std), None if scheme is None else str(scheme))
    return out


def _orth_error(w: torch.Tensor) -> tuple[float, float]:
    """(gain g, ‖G/g² − I‖_F) with G the Gram matrix of the short side of ``w`` as a matrix."""
    w2 = w.detach().reshape(w.shape[0], -1).double()
    r, c = w2.shape
    gram = w2 @ w2.T if r <= c else w2.T @ w2
    k = min(r, c)
    g2 = torch.diagonal(gram).sum() / k
    err = torch.linalg.matrix_norm(gram / g2 - torch.eye(k, dtype=gram.dtype, device=gram.device))
    return float(g2.sqrt()), float(err)


