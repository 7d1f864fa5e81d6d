"""The exact scale: solve ``std(s * u + b) = target`` for ``s`` from one measurement."""

from __future__ import annotations

import math
from typing import Literal

import torch

from .._audit.stats import _native, _rowstats
from .._errors import LSUVError

# --------------------------------------------------------------------------------------------
# Math: the exact scale
# --------------------------------------------------------------------------------------------


def _bias_view(bias: torch.Tensor, like: torch.Tensor, dim: int) -> torch.Tensor:
    shape = [1] * like.dim()
    shape[dim % like.dim()] = -1
    return bias.detach().to(like.dtype).reshape(shape)


class _Scratch:
    """One reused buffer for a run's temporaries: the centred copy ``t - mean`` of every
    measurement."""

    def __init__(self) -> None:
        self.buf: torch.Tensor | None = None

    def like(self, t: torch.Tensor) -> torch.Tensor:
        """A contiguous tensor of ``t``'s shape, dtype and device (contents undefined)."""
        b = self.buf
        if b is None or b.numel() < t.numel() or b.dtype != t.dtype or b.device != t.device:
            b = self.buf = torch.empty(t.numel(), dtype=t.dtype, device=t.device)
        return b[: t.numel()].view(t.shape)


def _var(t: torch.Tensor, mean: torch.Tensor, scratch: _Scratch | None = None) -> float:
    """Population variance as ``sum((t - mean)^2) / n``: torch's cascade sums (deterministic,
    ~1e-8 relative error here) at 2-4x the speed of ``torch.var``'s Welford pass on CPU."""
    centred = t - mean if scratch is None else torch.sub(t, mean, out=scratch.like(t))
    return float(centred.square_().sum()) / t.numel()


# A layer output that is a plain dense float32/float64 CPU tensor is measured and
# rescaled by the C kernels of ``_audit/_rowstats.c`` (``channels``, ``rescale``): one read
# each, accumulated in float64, on one thread. The torch path below costs ~10 small kernel
# calls per output, most of LSUV's per-layer overhead on small layers (50 outputs of 256x256:
# ~160 µs each in the pass against ~20 µs in one C read).
_CANCEL = 1e-6  # var / mean square below this: the one-pass variance may have lost digits


def _memory_order(t: torch.Tensor) -> list[int] | None:
    """``t``'s dimensions from outermost to innermost in memory if ``t`` is dense (a
    permutation of a contiguous tensor: row-major, channels-last, a transpose), else ``None``."""
    if t.is_contiguous():
        return list(range(t.dim()))
    strides = t.stride()
    order = sorted(range(t.dim()), key=lambda i: -strides[i])
    return order if t.permute(order).is_contiguous() else None


# _channel_view's result: (address, dtype code, outer, channels, inner, bias address, bias
# dtype code, kept) or None (the torch path)
_View = tuple[int, int, int, int, int, int, int, torch.Tensor | None] | None


def _channel_view(t: torch.Tensor, dim: int, bias: torch.Tensor | None) -> _View:
    """``(address, dtype code, outer, channels, inner, bias address, bias dtype code, kept)`` of
    ``t``'s memory viewed as ``[outer, channels, inner]`` for the C kernels (channels along
    ``dim``; bias address 0: none; ``kept``: a converted copy of the bias to keep alive for the
    call), or ``None`` (the torch path). Any dense layout qualifies (a channels-last
    convolution output is ``[N·H·W, C, 1]`` in memory)."""
    if t.dtype not in (torch.float32, torch.float64) or t.dim() == 0:
        return None
    if t.is_contiguous():  # the common case: no permuted view to build
        order: list[int] | None = list(range(t.dim()))
        nat = _native(t)
    else:
        order = _memory_order(t)
        nat = None if order is None else _native(t.permute(order))
    if order is None or nat is None:
        return None
    if bias is None:
        return nat[0], nat[1], 1, 1, t.numel(), 0, 1, None
    d = dim % t.dim()
    c = t.shape[d]
    if bias.numel() != c or not bias.is_cpu:
        return None
    kept = None
    bnat = _native(bias)
    if bnat is None:  # a view, another dtype, a subclass: read a float64 copy
        kept = bias.detach().reshape(-1).to(torch.float64).contiguous()
        bnat = kept.data_ptr(), 1
    at = order.index(d)
    sizes = [t.shape[i] for i in order]
    return (nat[0], nat[1], math.prod(sizes[:at]), c, math.prod(sizes[at + 1 :]), bnat[0],
            bnat[1], kept)  # fmt: skip


def rescale(y: torch.Tensor, s: float, bias: torch.Tensor | None, dim: int,
            out: torch.Tensor | None = None, *, view: _View | Literal[True] = True) -> torch.Tensor:
    """``s * (y - B) + B`` (``B``: ``bias`` broadcast along ``dim``; ``s * y`` without a bias),
    what the rescaled weight would have produced, into ``out`` (may be ``y``) or a new tensor
    of ``y``'s layout. The same values whichever memory it writes to. ``view``: ``y``'s
    :func:`_channel_view` when the caller already has it (``True``: computed here)."""
    nv: _View = None
    if out is None or out is y:
        nv = _channel_view(y, dim, bias) if view is True else view
    if nv is not None:
        dest = torch.empty_like(y) if out is None else out  # a dense y's strides are kept
        if dest.stride() == y.stride():
            ptr, code, outer, c, inner, bptr, bcode, _kept = nv
            _rowstats.rescale(ptr, dest.data_ptr(), outer, c, inner, code, s, bptr, bcode)
            return dest
    if bias is None:
        return y.mul_(s) if out is y else torch.mul(y, s, out=out) if out is not None else y * s
    b = _bias_view(bias, y, dim) * (1.0 - s)
    return torch.add(b, y, alpha=s, out=out) if out is not None else torch.add(b, y, alpha=s)


def scale_weight(w: torch.Tensor, s: float) -> None:
    """``w *= s`` in place (a calibrated weight, or its block): in float64, rounded once, by
    the C kernel where ``w`` is a plain contiguous float32/float64 CPU tensor (a single-thread
    pass over it, cheaper than a two-thread torch kernel on the small weights LSUV mostly
    sees; its version counter is bumped as ``mul_`` would), else ``mul_``."""
    nat = _native(w) if w.dtype in (torch.float32, torch.float64) else None
    if nat is None:
        w.mul_(s)
        return
    _rowstats.rescale(nat[0], nat[0], 1, 1, w.numel(), nat[1], s, 0)
    torch.autograd.graph.increment_version(w)


def _stats(t: torch.Tensor, bias: torch.Tensor | None, dim: int, *, has_bias: bool,
           scratch: _Scratch | None = None, view: _View | Literal[True] = True
           ) -> tuple[float, float, float, int]:  # fmt: skip
    """Population ``var(u)``, ``cov(u, B)``, ``var(B)`` over all elements, and the count.

    ``t`` is the output ``y = u + B`` (``has_bias``) or ``u``; ``B`` is ``bias`` broadcast along
    ``dim``. Every channel has the same number of elements, so element means of ``B`` terms are
    channel means: one reduction over ``t`` plus channel means, no copy of ``t``, unless the
    bias dominates ``var(y)`` (then ``var(u)`` is recomputed directly to avoid cancellation).
    Non-finite values in ``t`` make ``var(u)`` non-finite (the caller's check).
    """
    n = t.numel()
    nv = _channel_view(t, dim, bias) if view is True else view  # or the caller's, of t
    if nv is not None:
        ptr, code, outer, c, inner, bptr, bcode, _kept = nv
        var_t, cov_tb, var_b, ms = _rowstats.channels(ptr, outer, c, inner, code, bptr, bcode)
        if not math.isfinite(var_t) and t.dtype != torch.float64:
            return var_t, 0.0, 0.0, n  # float32 squares cannot overflow a float64 sum
        if var_t >= _CANCEL * ms:  # else (or float64 squares past 1e308): two passes below
            if bias is None or not has_bias:
                return var_t, cov_tb, var_b, n
            var_u = var_t - 2.0 * cov_tb + var_b
            if var_u < 0.5 * var_t:
                var_u = float((t - _bias_view(bias, t, dim)).var(correction=0))
            return var_u, cov_tb - var_b, var_b, n
    if bias is None:
        return _var(t, t.mean(), scratch), 0.0, 0.0, n
    d = dim % t.dim()
    others = [i for i in range(t.dim()) if i != d]
    mc = t.mean(dim=others) if others else t
    var_t = _var(t, mc.mean(), scratch)  # equal counts per channel: the mean of channel means
    if not math.isfinite(var_t):
        return var_t, 0.0, 0.0, n
    s = torch.stack((mc.double(), bias.detach().double().reshape(-1)))
    s = s - s.mean(dim=1, keepdim=True)
    cov_tb, var_b = (v / s.shape[1] for v in (s @ s[1]).tolist())
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


