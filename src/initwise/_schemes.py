"""Initialization schemes: drop-ins for ``torch.nn.init`` and the general ``variance_scaling_``.

All random schemes reduce to :func:`variance_scaling_` (the one place where a scale and a fan
become a standard deviation, via :func:`initwise._math.compute_std`) or to one of the three
primitive draws (uniform, normal, truncated normal). Every function:

- takes ``tensor`` first and ``generator`` last, and mutates under ``torch.no_grad()``;
- accepts as ``generator`` a ``torch.Generator``, ``None`` (torch's global generator) or an
  :class:`initwise.random.Key` (values from initwise's keyed counter-based engine: the same
  values whatever the global seed, the construction order or the sharding);
- validates its arguments before writing anything, through :func:`initwise._checks.check_tensor`:
  integer/bool tensors and too few dimensions raise, meta tensors are a no-op, and tensors with
  no elements are a no-op with an :class:`~initwise.InitwiseWarning`;
- works in float16 and bfloat16 (values are computed in float32 or float64 and rounded once).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import inspect
import math
import numbers
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ParamSpec, TypeVar

import torch

from . import random as _random
from ._checks import (
    BadValueError,
    ZeroValueError,
    check_choice,
    check_finite_positive,
    check_real,
    check_tensor,
)
from ._fans import Axis, Fans, axis_fans
from ._math import (
    compute_std,
    normal_cdf,
    select_fan,
    shape_fans,
    trunc_normal_moments,
    uniform_bound,
)
from ._sharding import fill_sharded_, is_dtensor
from ._typing import DISTRIBUTIONS, FAN_MODES, Distribution, FanMode
from .gains import kaiming_gain
from .random import Key
from .random._engine import haar32_native

__all__ = [
    "compute_std",
    "constant_",
    "delta_orthogonal_",
    "dirac_",
    "eye_",
    "glorot_truncated_normal_",
    "he_truncated_normal_",
    "kaiming_normal_",
    "kaiming_uniform_",
    "lecun_normal_",
    "lecun_truncated_normal_",
    "lecun_uniform_",
    "normal_",
    "ones_",
    "orthogonal_",
    "sparse_",
    "trunc_normal_",
    "truncated_normal_",
    "uniform_",
    "variance_scaling_",
    "xavier_normal_",
    "xavier_uniform_",
    "zeros_",
]

Generator = torch.Generator | Key | None

# ---------------------------------------------------------------------------------------------
# Private helpers: generator dispatch and the three primitive draws.
# ---------------------------------------------------------------------------------------------


def _is_key(generator: object) -> bool:
    """True for an initwise Key, False for a torch.Generator or None; TypeError otherwise."""
    if generator is None or isinstance(generator, torch.Generator):
        return False
    if isinstance(generator, Key):
        return True
    raise TypeError(
        "generator must be a torch.Generator, an initwise.random.Key or None, got "
        f"{type(generator).__name__}"
    )


def _work_dtype(tensor: torch.Tensor) -> torch.dtype:
    """The dtype random values are drawn in: float64 stays, everything else uses float32."""
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


def _fill_from(tensor: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        tensor.copy_(values.reshape(tensor.shape))
    return tensor


def _draw_uniform(tensor: torch.Tensor, low: float, high: float, generator: Generator) -> torch.Tensor:
    if _is_key(generator):
        # complex: real and imaginary parts each U(low, high), as torch's uniform_ does
        target = torch.view_as_real(tensor) if tensor.is_complex() else tensor
        _random.uniform_(target, generator, low=low, high=high)  # type: ignore[arg-type]
        return tensor
    with torch.no_grad():
        return tensor.uniform_(low, high, generator=generator)  # type: ignore[arg-type]


def _draw_normal(tensor: torch.Tensor, mean: float, std: float, generator: Generator) -> torch.Tensor:
    if _is_key(generator):
        if std == 0.0:
            with torch.no_grad():
                return tensor.fill_(mean)
        if tensor.is_complex():
            # torch's complex normal_: each part N(mean, std²/2), so E|z - mean|² = std²
            _random.normal_(torch.view_as_real(tensor), generator, mean=mean, std=std / math.sqrt(2.0))  # type: ignore[arg-type]
            return tensor
        _random.normal_(tensor, generator, mean=mean, std=std)  # type: ignore[arg-type]
        return tensor
    with torch.no_grad():
        return tensor.normal_(mean, std, generator=generator)  # type: ignore[arg-type]


def _ndtri_exp(logp: torch.Tensor) -> torch.Tensor:
    """``x`` with ``log Φ(x) = logp``, for ``logp`` below float64's range of Φ itself.

    Newton's method on ``log Φ`` (increasing and concave) started left of the root at
    ``-sqrt(-2 logp)``, so the iterates rise monotonically to it (quadratically: 4 to 6
    steps reach float64 precision from ``x = -37`` to ``x = -1e150``; at most 12 are taken).
    """
    x = -torch.sqrt(-2.0 * logp)
    half_log_2pi = 0.5 * math.log(2.0 * math.pi)
    for _ in range(12):
        log_cdf = torch.special.log_ndtr(x)
        step = (log_cdf - logp) / torch.exp(-0.5 * x * x - half_log_2pi - log_cdf)
        x = x - step
        if bool((step.abs() <= 1e-15 * x.abs()).all()):
            break
    return x


# Below this Φ(hi) the float64 CDF difference loses the distribution: sample in log space.
_LOG_SPACE_BELOW = 1e-280


def _draw_trunc_normal(
    tensor: torch.Tensor, mean: float, std: float, a: float, b: float, generator: Generator
) -> torch.Tensor:
    """Parent N(mean, std²) truncated to ``[mean + a*std, mean + b*std]`` (a, b in stds).

    Inverse-CDF sampling in float64, on the tail side where the CDF is accurate, so bounds far
    from the mean keep their exact distribution (torch's ``trunc_normal_`` loses it there).
    Where even that tail's CDF underflows (bounds beyond about 37 standard deviations), the
    inverse CDF is taken in log space (:func:`_ndtri_exp`).
    """
    if _is_key(generator):
        _random.trunc_normal_(tensor, generator, mean=mean, std=std, a=a, b=b)  # type: ignore[arg-type]
        return tensor
    flip = a > 0  # both bounds in the right tail: sample the mirrored left-tail problem
    lo, hi = (-b, -a) if flip else (a, b)
    plo, phi = normal_cdf(lo), normal_cdf(hi)
    # draw where the generator lives (a CPU generator for a GPU tensor is common), then move
    device = generator.device if isinstance(generator, torch.Generator) else tensor.device
    u = torch.empty(tensor.shape, dtype=torch.float64, device=device)
    u.uniform_(0.0, 1.0, generator=generator)  # type: ignore[arg-type]
    if phi < _LOG_SPACE_BELOW:
        log_hi = float(torch.special.log_ndtr(torch.tensor(hi, dtype=torch.float64)))
        log_lo = float(torch.special.log_ndtr(torch.tensor(lo, dtype=torch.float64)))
        ratio = math.exp(log_lo - log_hi)  # Φ(lo) / Φ(hi)
        # p = Φ(hi) * (ratio + u (1 - ratio)), taken as log p
        inner = u.mul_(1.0 - ratio).add_(ratio).clamp_(min=torch.finfo(torch.float64).tiny)
        z = _ndtri_exp(inner.log_().add_(log_hi)).clamp_(lo, hi)
    else:
        p = u.mul_(phi - plo).add_(plo).clamp_(min=torch.finfo(torch.float64).tiny, max=1.0 - 2**-53)
        z = torch.special.ndtri(p).clamp_(lo, hi)
    if flip:
        z.neg_()
    return _fill_from(tensor, z.mul_(std).add_(mean))


def _resolve_fans(
    tensor: torch.Tensor,
    fans: Fans | tuple[float, float] | None,
    fn: str,
    axes: tuple[Axis, Axis, Axis] | None = None,
) -> Fans:
    if fans is None:
        if axes is not None:
            in_axis, out_axis, batch_axis = axes
            return axis_fans(tensor.shape, in_axis=in_axis, out_axis=out_axis, batch_axis=batch_axis, where=fn)
        if tensor.dim() < 2:
            raise ValueError(
                f"{fn}: fans need a tensor with at least 2 dimensions ([out, in, *kernel]), got "
                f"shape {tuple(tensor.shape)}; pass fans=initwise.Fans(fan_in, fan_out)"
            )
        return Fans(*shape_fans(tensor.shape))
    if axes is not None:
        raise ValueError(f"{fn}: pass either fans= or in_axis/out_axis/batch_axis, not both")
    try:
        if isinstance(fans, (str, bytes)):
            raise TypeError
        fi, fo = fans
    except (TypeError, ValueError):
        raise TypeError(f"{fn}: fans must be initwise.Fans(fan_in, fan_out) or a pair, got {fans!r}") from None
    check_finite_positive("fans.fan_in", fi, where=fn)
    check_finite_positive("fans.fan_out", fo, where=fn)
    return Fans(float(fi), float(fo))


def _check_axes(
    in_axis: Axis | None, out_axis: Axis | None, batch_axis: Axis | None
) -> tuple[Axis, Axis, Axis] | None:
    """``None`` when no axis is given (torch's layout, the unchanged fast path)."""
    if in_axis is None and out_axis is None and batch_axis is None:
        return None
    return (1 if in_axis is None else in_axis, 0 if out_axis is None else out_axis,
            () if batch_axis is None else batch_axis)  # fmt: skip


# Complex draws (JAX's complex variance_scaling): |z| has the law of a complex normal's modulus
# (truncated at 2, radially) or of a uniform point in a disk, and the phase is uniform, so the
# distribution is circular and E|z|² is exactly ``std²``.
_RAYLEIGH_TRUNC = 2.0
_RAYLEIGH_SECOND_MOMENT = 1.0 - _RAYLEIGH_TRUNC**2 * math.exp(-(_RAYLEIGH_TRUNC**2)) / -math.expm1(-(_RAYLEIGH_TRUNC**2))


def _draw_complex(tensor: torch.Tensor, std: float, distribution: str, generator: Generator) -> torch.Tensor:
    if distribution == "normal":
        return _draw_normal(tensor, 0.0, std, generator)
    real = torch.float64 if tensor.dtype == torch.complex128 else torch.float32
    uv = torch.empty((*tensor.shape, 2), dtype=real)
    _draw_uniform(uv, 0.0, 1.0, generator)
    u, v = uv[..., 0], uv[..., 1]
    if distribution == "uniform":
        radius = torch.sqrt(2.0 * u) * std  # uniform in the disk of radius sqrt(2)·std
    else:
        # r² ~ Exp(1) truncated at 4, scaled so that E[r²] = std² exactly
        r2 = torch.log1p(u * math.expm1(-(_RAYLEIGH_TRUNC**2))).neg_()
        radius = torch.sqrt(r2) * (std / math.sqrt(_RAYLEIGH_SECOND_MOMENT))
    z = torch.polar(radius, v * (2.0 * math.pi))
    return _fill_from(tensor, z.to(tensor.device))


def _variance_scaling(
    tensor: torch.Tensor,
    scale: float,
    mode: str,
    distribution: str,
    fans: Fans | tuple[float, float] | None,
    generator: Generator,
    fn: str,
    axes: tuple[Axis, Axis, Axis] | None = None,
    empty_any_dim: bool = False,
) -> torch.Tensor:
    """The one implementation behind every variance-scaling scheme; ``fn`` names the caller.

    ``empty_any_dim``: a zero-element tensor of any dimension is the usual warned no-op (torch's
    ``kaiming_*`` check for empty tensors before they compute fans: ``torch.empty(0)`` warns).
    """
    _is_key(generator)
    empty = empty_any_dim and isinstance(tensor, torch.Tensor) and tensor.numel() == 0
    min_dim = 0 if fans is not None or empty else 2
    if not check_tensor(tensor, fn, min_dim=min_dim, allow_complex=True):
        return tensor
    f = _resolve_fans(tensor, fans, fn, axes)
    std = compute_std(scale, select_fan(f.fan_in, f.fan_out, mode))
    if tensor.is_complex():
        return _draw_complex(tensor, std, distribution, generator)
    if distribution == "normal":
        return _draw_normal(tensor, 0.0, std, generator)
    if distribution == "uniform":
        bound = uniform_bound(std)
        return _draw_uniform(tensor, -bound, bound, generator)
    parent = std / trunc_normal_moments(-2.0, 2.0)[1]
    if parent == 0.0:
        with torch.no_grad():
            return tensor.zero_()
    return _draw_trunc_normal(tensor, 0.0, parent, -2.0, 2.0, generator)


# ---------------------------------------------------------------------------------------------
# DTensor parameters (TorchTitan calls nn.init.trunc_normal_ on sharded parameters).
# ---------------------------------------------------------------------------------------------

_P = ParamSpec("_P")
_Native = Callable[[dict[str, Any], torch.Tensor], bool]
# schemes whose value at an index depends on the key and that index alone (and on the fans,
# passed as the whole's): a keyed draw on a DTensor's block is that block of the whole's draw
_SHAPE_FREE = frozenset({"uniform_", "normal_", "trunc_normal_", "truncated_normal_"})


def _always(arguments: dict[str, Any], tensor: torch.Tensor) -> bool:
    return True


def _never(arguments: dict[str, Any], tensor: torch.Tensor) -> bool:
    return False


def _real(arguments: dict[str, Any], tensor: torch.Tensor) -> bool:
    return not tensor.is_complex()


def _real_not_truncated(arguments: dict[str, Any], tensor: torch.Tensor) -> bool:
    return not tensor.is_complex() and arguments.get("distribution", "normal") != "truncated_normal"


def _dtensor_aware(native: _Native) -> Callable[[Callable[_P, torch.Tensor]], Callable[_P, torch.Tensor]]:
    """Let a scheme take a ``DTensor``: each rank writes its block of what the scheme writes to the whole.

    With a :class:`~initwise.random.Key` the block is that of the single-process result, bit for
    bit, at any world size (:func:`initwise._sharding.fill_sharded_`: shard-locally for the
    elementwise schemes, with the whole's fans; through one whole parameter per rank for the
    others). With a ``torch.Generator`` (or ``None``), a scheme that torch runs as DTensor
    random ops (``native``: ``uniform_``, ``normal_``, real ``xavier_*``/``kaiming_*``...) does
    exactly what ``torch.nn.init`` does; the others (``trunc_normal_``, ``orthogonal_``,
    ``sparse_``...) draw the whole on every rank from its generator (the same state on every
    rank, as DTensor's own RNG requires) and keep the block. Arguments are checked on a meta
    twin of the whole first, so every rank raises the same error before anything is written.
    """

    def wrap(fn: Callable[_P, torch.Tensor]) -> Callable[_P, torch.Tensor]:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def scheme(*args: _P.args, **kwargs: _P.kwargs) -> torch.Tensor:
            tensor = args[0] if args else kwargs.get("tensor")
            if not is_dtensor(tensor):
                return fn(*args, **kwargs)
            assert isinstance(tensor, torch.Tensor)
            call = dict(sig.bind(*args, **kwargs).arguments)
            keyed = _is_key(call.get("generator"))
            if tensor.is_meta or (not keyed and native(call, tensor)):
                return fn(*args, **kwargs)
            by_name: Callable[..., torch.Tensor] = fn
            call["tensor"] = torch.empty(tensor.shape, dtype=tensor.dtype, device="meta")
            by_name(**call)  # every check, on every rank, before any write
            elementwise = keyed and fn.__name__ in _SHAPE_FREE
            if keyed and "fans" in sig.parameters:
                if call.get("fans") is None:  # the whole's fans, not the block's
                    axes = _check_axes(call.pop("in_axis", None), call.pop("out_axis", None), call.pop("batch_axis", None))
                    call["fans"] = _resolve_fans(call["tensor"], None, fn.__name__, axes)
                elementwise = True

            def fill(t: torch.Tensor) -> None:
                by_name(**{**call, "tensor": t})

            fill_sharded_(tensor, fill, elementwise=elementwise)
            return tensor

        return scheme

    return wrap


# ---------------------------------------------------------------------------------------------
# The general scheme.
# ---------------------------------------------------------------------------------------------


@_dtensor_aware(_real_not_truncated)
def variance_scaling_(
    tensor: torch.Tensor,
    scale: float = 1.0,
    mode: FanMode = "fan_in",
    distribution: Distribution = "normal",
    *,
    fans: Fans | tuple[float, float] | None = None,
    in_axis: Axis | None = None,
    out_axis: Axis | None = None,
    batch_axis: Axis | None = None,
    generator: Generator = None,
) -> torch.Tensor:
    r"""Fill ``tensor`` with zero-mean values of variance ``scale / fan``.

    The general form behind Glorot, He and LeCun (as in JAX's ``variance_scaling``):

    - ``std = sqrt(scale / fan)`` with ``fan`` chosen by ``mode``: ``fan_in``, ``fan_out``,
      ``fan_avg = (fan_in + fan_out) / 2`` or ``fan_geo_avg = sqrt(fan_in * fan_out)``;
    - ``normal``: :math:`\mathcal{N}(0, \text{std}^2)`;
    - ``uniform``: :math:`\mathcal{U}(-b, b)` with ``b = sqrt(3) * std``;
    - ``truncated_normal``: a normal truncated at ±2 of its own standard deviations, whose
      parent standard deviation is ``std / 0.8796…`` so that the final variance is exactly
      ``scale / fan`` (JAX's and Keras's convention).

    Complex tensors follow JAX: circular distributions with ``E|z|² = scale / fan`` (a complex
    normal; a uniform point in the disk of radius ``sqrt(2)·std``; a complex normal truncated
    to ``|z| <= 2`` of its scale, normalized exactly).

    Args:
        tensor: an n-dimensional floating-point or complex tensor, torch layout
            ``[out, in, *kernel]`` unless the axes say otherwise.
        scale: the variance numerator (``gain**2``), finite and > 0.
        mode: which fan divides ``scale``.
        distribution: ``normal``, ``uniform`` or ``truncated_normal``.
        fans: a :class:`~initwise.Fans` override, e.g. ``initwise.fans(module)`` for layers whose
            shape does not tell their connectivity (grouped or transposed convolutions, …).
        in_axis, out_axis, batch_axis: JAX's fan axes (an int or a sequence of ints) for
            tensors in other layouts: ``fan_in = prod(in dims) * receptive``, ``fan_out =
            prod(out dims) * receptive``, with ``receptive`` the product of the remaining
            non-batch dims. Defaults: torch's ``in_axis=1``, ``out_axis=0``, no batch axis
            (JAX's own defaults are ``-2``, ``-1``: pass them for a JAX-layout tensor).
        generator: a ``torch.Generator``, an :class:`initwise.random.Key` or ``None``.

    Example:
        >>> w = torch.empty(256, 128)
        >>> _ = variance_scaling_(w, 2.0, "fan_in", "uniform", generator=torch.Generator().manual_seed(0))
        >>> bool(w.abs().max() <= math.sqrt(3 * 2.0 / 128))
        True
    """
    check_finite_positive("scale", scale, where="variance_scaling_")
    check_choice("mode", mode, FAN_MODES, where="variance_scaling_")
    check_choice("distribution", distribution, DISTRIBUTIONS, where="variance_scaling_")
    axes = _check_axes(in_axis, out_axis, batch_axis)
    return _variance_scaling(tensor, scale, mode, distribution, fans, generator, "variance_scaling_", axes)


# ---------------------------------------------------------------------------------------------
# Primitive distributions (torch.nn.init drop-ins).
# ---------------------------------------------------------------------------------------------


@_dtensor_aware(_always)
def uniform_(
    tensor: torch.Tensor, a: float = 0.0, b: float = 1.0, generator: Generator = None
) -> torch.Tensor:
    r"""Fill ``tensor`` with values from :math:`\mathcal{U}(a, b)`.

    Drop-in for ``torch.nn.init.uniform_``; complex tensors get independent real and imaginary
    parts in ``[a, b]``, as in torch.

    >>> t = uniform_(torch.empty(3, 5), -1.0, 1.0)
    >>> bool((t >= -1).all() and (t <= 1).all())
    True
    """
    a = check_real("a", a, finite=False, where="uniform_")
    b = check_real("b", b, finite=False, where="uniform_")
    if not (math.isfinite(a) and math.isfinite(b)) or a > b:
        raise BadValueError(f"uniform_: need finite a <= b, got a={a}, b={b}")
    _is_key(generator)
    if not check_tensor(tensor, "uniform_", allow_complex=True):
        return tensor
    return _draw_uniform(tensor, a, b, generator)


@_dtensor_aware(_always)
def normal_(
    tensor: torch.Tensor, mean: float = 0.0, std: float = 1.0, generator: Generator = None
) -> torch.Tensor:
    r"""Fill ``tensor`` with values from :math:`\mathcal{N}(\text{mean}, \text{std}^2)`.

    Drop-in for ``torch.nn.init.normal_``. Complex tensors get torch's complex normal: real and
    imaginary parts each :math:`\mathcal{N}(\text{mean}, \text{std}^2/2)`.

    >>> normal_(torch.empty(2, 2), 0.0, 0.02).shape
    torch.Size([2, 2])
    """
    mean = check_real("mean", mean, where="normal_")
    std = check_finite_positive("std", std, allow_zero=True, where="normal_", error=BadValueError)
    _is_key(generator)
    if not check_tensor(tensor, "normal_", allow_complex=True):
        return tensor
    if std == 0.0 and not tensor.is_complex():
        with torch.no_grad():
            return tensor.fill_(mean)
    return _draw_normal(tensor, mean, std, generator)


def _trunc_checks(fn: str, mean: float, std: float, a: float, b: float) -> tuple[float, float, float, float]:
    mean = check_real("mean", mean, where=fn)
    if isinstance(std, (int, float)) and not isinstance(std, bool) and std == 0:
        raise ZeroValueError(f"{fn}: std must be finite and > 0, got {std!r}")
    std = check_finite_positive("std", std, where=fn)
    a = check_real("a", a, finite=False, where=fn)
    b = check_real("b", b, finite=False, where=fn)
    if math.isnan(a) or math.isnan(b):
        raise BadValueError(f"{fn}: bounds must not be NaN, got a={a}, b={b}")
    if a > b:
        raise BadValueError(f"{fn}: need a <= b, got a={a}, b={b}")
    return mean, std, a, b


@_dtensor_aware(_never)
def trunc_normal_(
    tensor: torch.Tensor,
    mean: float = 0.0,
    std: float = 1.0,
    a: float = -2.0,
    b: float = 2.0,
    generator: Generator = None,
) -> torch.Tensor:
    r"""Fill ``tensor`` from :math:`\mathcal{N}(\text{mean}, \text{std}^2)` truncated to ``[a, b]``.

    Drop-in for ``torch.nn.init.trunc_normal_``: ``a`` and ``b`` are absolute bounds and ``std``
    is the standard deviation of the *parent* normal, so the values' own standard deviation is
    smaller (``0.88 * std`` for bounds at ±2 std). Use :func:`truncated_normal_` to get an exact
    final standard deviation. Sampling is by inverse CDF in float64 on the accurate tail (in
    log space beyond 37 standard deviations), so it stays exact when ``[a, b]`` lies far from
    ``mean``. ``a == b`` fills ``a``, as torch does.

    >>> t = trunc_normal_(torch.empty(1000), 0.0, 1.0, -0.5, 0.5)
    >>> bool(t.abs().max() <= 0.5)
    True
    """
    mean, std, a, b = _trunc_checks("trunc_normal_", mean, std, a, b)
    _is_key(generator)
    if a == b:
        if not math.isfinite(a):
            raise BadValueError(f"trunc_normal_: a == b must be finite, got a={a}, b={b}")
        if not check_tensor(tensor, "trunc_normal_"):
            return tensor
        with torch.no_grad():
            return tensor.fill_(a)
    if not check_tensor(tensor, "trunc_normal_"):
        return tensor
    return _draw_trunc_normal(tensor, mean, std, (a - mean) / std, (b - mean) / std, generator)


@_dtensor_aware(_never)
def truncated_normal_(
    tensor: torch.Tensor,
    mean: float = 0.0,
    std: float = 1.0,
    a: float = -2.0,
    b: float = 2.0,
    *,
    generator: Generator = None,
) -> torch.Tensor:
    r"""Fill ``tensor`` from a truncated normal whose *final* standard deviation is ``std``.

    The parent is :math:`\mathcal{N}(\text{mean}, \sigma_p^2)` truncated to
    ``[mean + a*σp, mean + b*σp]`` (bounds in the parent's standard deviations), with
    ``σp = std / s(a, b)`` where ``s(a, b)`` is the standard deviation of a standard normal
    truncated to ``[a, b]`` (``0.8796…`` for ±2). With symmetric bounds the mean is ``mean``.

    Not the same ``std`` as JAX's ``truncated_normal(stddev)``, Keras's
    ``TruncatedNormal(stddev)`` and torch's ``trunc_normal_(std)``: there it is the parent's,
    and the values' standard deviation is ``0.8796 * stddev`` (0.0176 for 0.02). To port such
    code, use :func:`trunc_normal_` (``a``, ``b`` absolute) or this function with
    ``std=0.8796 * stddev``. See ``docs/dropin.md``.

    >>> t = truncated_normal_(torch.empty(200_000), std=0.02, generator=torch.Generator().manual_seed(0))
    >>> abs(t.std().item() / 0.02 - 1) < 0.01
    True
    """
    mean = check_real("mean", mean, where="truncated_normal_")
    std = check_finite_positive("std", std, where="truncated_normal_")
    a = check_real("a", a, finite=False, where="truncated_normal_")
    b = check_real("b", b, finite=False, where="truncated_normal_")
    if math.isnan(a) or math.isnan(b) or not a < b:
        raise ValueError(f"truncated_normal_: need a < b (in standard deviations), got a={a}, b={b}")
    parent = std / trunc_normal_moments(a, b)[1]
    _is_key(generator)
    if not check_tensor(tensor, "truncated_normal_"):
        return tensor
    return _draw_trunc_normal(tensor, mean, parent, a, b, generator)


def _fill(tensor: torch.Tensor, val: Any, fn: str) -> torch.Tensor:
    if isinstance(val, torch.Tensor):
        if val.numel() != 1:
            raise ValueError(f"{fn}: val must be a number or a one-element tensor, got shape {tuple(val.shape)}")
    elif not isinstance(val, numbers.Number):
        raise TypeError(f"{fn}: val must be a number, got {val!r} ({type(val).__name__})")
    # a complex val with a zero imaginary part fills a real tensor, as in torch (``1.5 + 0j``)
    imag = complex(val).imag if isinstance(val, (complex, torch.Tensor)) and (not isinstance(val, torch.Tensor) or val.is_complex()) else 0.0
    if imag != 0.0 and isinstance(tensor, torch.Tensor) and not tensor.is_complex():
        raise BadValueError(f"{fn}: a complex val ({val!r}) needs a complex tensor, got {tensor.dtype}")
    if not check_tensor(tensor, fn, allow_int=True, allow_complex=True):
        return tensor
    with torch.no_grad():
        return tensor.fill_(val)


def constant_(tensor: torch.Tensor, val: float) -> torch.Tensor:
    """Fill ``tensor`` with ``val``. Drop-in for ``torch.nn.init.constant_``.

    Any dtype torch fills: floating point, complex, integer and bool (``val`` is converted as
    ``Tensor.fill_`` converts it). ``val`` may be NaN or infinite.

    >>> constant_(torch.empty(2), 0.5)
    tensor([0.5000, 0.5000])
    """
    return _fill(tensor, val, "constant_")


def ones_(tensor: torch.Tensor) -> torch.Tensor:
    """Fill ``tensor`` with ones (any dtype). Drop-in for ``torch.nn.init.ones_``."""
    return _fill(tensor, 1.0, "ones_")


def zeros_(tensor: torch.Tensor) -> torch.Tensor:
    """Fill ``tensor`` with zeros (any dtype). Drop-in for ``torch.nn.init.zeros_``."""
    return _fill(tensor, 0.0, "zeros_")


def eye_(tensor: torch.Tensor) -> torch.Tensor:
    """Fill the 2-D ``tensor`` with the identity (ones on the diagonal, zeros elsewhere).

    Drop-in for ``torch.nn.init.eye_`` (any dtype, as in torch).

    >>> eye_(torch.empty(2, 3))
    tensor([[1., 0., 0.],
            [0., 1., 0.]])
    """
    if not check_tensor(tensor, "eye_", min_dim=2, max_dim=2, allow_int=True, allow_complex=True):
        return tensor
    with torch.no_grad():
        tensor.zero_()
        tensor.diagonal().fill_(1)
    return tensor


def dirac_(tensor: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """Fill a 3-, 4- or 5-D conv weight with the Dirac delta: the convolution is the identity.

    Each of the ``groups`` output blocks keeps its input channels (as many as fit). The delta
    sits at ``k // 2`` in each spatial dim, torch's centre (for even kernels, the later of the
    two middle taps). Drop-in for ``torch.nn.init.dirac_`` (any dtype, as in torch).

    >>> w = dirac_(torch.empty(2, 2, 3))
    >>> w[:, :, 1]
    tensor([[1., 0.],
            [0., 1.]])
    """
    if isinstance(groups, torch.Tensor) and groups.dim() == 0 and not groups.is_floating_point() \
            and not groups.is_complex() and groups.dtype != torch.bool:  # fmt: skip
        groups = int(groups)  # a 0-d integer tensor, as torch takes it
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral):
        raise TypeError(f"dirac_: groups must be a positive int, got {groups!r} ({type(groups).__name__})")
    if groups == 0:
        raise ZeroValueError("dirac_: groups must be a positive int, got 0")
    if groups < 0:
        raise ValueError(f"dirac_: groups must be a positive int, got {groups!r}")
    groups = int(groups)
    if not check_tensor(tensor, "dirac_", min_dim=3, max_dim=5, allow_int=True, allow_complex=True):
        return tensor
    out = tensor.shape[0]
    if out % groups != 0:
        raise ValueError(f"dirac_: dim 0 ({out}) must be divisible by groups ({groups})")
    per_group = out // groups
    n = min(per_group, tensor.shape[1])
    centre = tuple(k // 2 for k in tensor.shape[2:])
    with torch.no_grad():
        tensor.zero_()
        for g in range(groups):
            for d in range(n):
                index = (g * per_group + d, d, *centre)
                tensor[index] = 1
    return tensor


# ---------------------------------------------------------------------------------------------
# Named variance-scaling specializations.
# ---------------------------------------------------------------------------------------------


def _xavier_scale(gain: float, fn: str) -> float:
    # gain 0 gives zeros, as in torch; a negative or non-finite gain is torch's RuntimeError
    g = check_finite_positive("gain", gain, allow_zero=True, where=fn, error=BadValueError)
    return g * g


@_dtensor_aware(_real)
def xavier_uniform_(
    tensor: torch.Tensor,
    gain: float = 1.0,
    generator: Generator = None,
    *,
    fans: Fans | tuple[float, float] | None = None,
) -> torch.Tensor:
    r"""Glorot/Xavier uniform: :math:`\mathcal{U}(-b, b)`, ``b = gain * sqrt(6 / (fan_in + fan_out))``.

    Glorot & Bengio, "Understanding the difficulty of training deep feedforward neural
    networks" (2010). ``variance_scaling_(tensor, gain**2, "fan_avg", "uniform")``.
    Drop-in for ``torch.nn.init.xavier_uniform_``.

    >>> xavier_uniform_(torch.empty(3, 5)).shape
    torch.Size([3, 5])
    """
    scale = _xavier_scale(gain, "xavier_uniform_")
    return _variance_scaling(tensor, scale, "fan_avg", "uniform", fans, generator, "xavier_uniform_")


@_dtensor_aware(_real)
def xavier_normal_(
    tensor: torch.Tensor,
    gain: float = 1.0,
    generator: Generator = None,
    *,
    fans: Fans | tuple[float, float] | None = None,
) -> torch.Tensor:
    r"""Glorot/Xavier normal: :math:`\mathcal{N}(0, \text{std}^2)`, ``std = gain * sqrt(2 / (fan_in + fan_out))``.

    Glorot & Bengio (2010). ``variance_scaling_(tensor, gain**2, "fan_avg", "normal")``.
    Drop-in for ``torch.nn.init.xavier_normal_``.

    >>> xavier_normal_(torch.empty(3, 5)).shape
    torch.Size([3, 5])
    """
    scale = _xavier_scale(gain, "xavier_normal_")
    return _variance_scaling(tensor, scale, "fan_avg", "normal", fans, generator, "xavier_normal_")


def _kaiming_scale(a: float | None, mode: str, nonlinearity: str, gain: float | None, fn: str) -> tuple[float, str]:
    """``(gain², mode)``: ``mode`` is case-insensitive, as in torch (``mode="FAN_OUT"``)."""
    mode = check_choice("mode", mode.lower() if isinstance(mode, str) else mode, ("fan_in", "fan_out"), where=fn)
    if gain is not None:
        g = check_finite_positive("gain", gain, where=fn)
    else:
        g = kaiming_gain(nonlinearity, a, where=fn)
    return g * g, mode


@_dtensor_aware(_real)
def kaiming_uniform_(
    tensor: torch.Tensor,
    a: float | None = 0,
    mode: FanMode = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: Generator = None,
    *,
    fans: Fans | tuple[float, float] | None = None,
    gain: float | None = None,
) -> torch.Tensor:
    r"""He/Kaiming uniform: :math:`\mathcal{U}(-b, b)`, ``b = gain * sqrt(3 / fan_mode)``.

    He et al., "Delving Deep into Rectifiers" (2015). ``gain`` defaults to
    :func:`initwise.gains.kaiming_gain` ``(nonlinearity, a)``: torch's values for torch's
    names, where ``a`` is leaky ReLU's negative slope; for the other activation names the
    exact gain (``a`` is PReLU's slope and must stay 0 for the rest).
    ``variance_scaling_(tensor, gain**2, mode, "uniform")``.
    Drop-in for ``torch.nn.init.kaiming_uniform_``.

    >>> kaiming_uniform_(torch.empty(3, 5), nonlinearity="relu").shape
    torch.Size([3, 5])
    """
    scale, fan_mode = _kaiming_scale(a, mode, nonlinearity, gain, "kaiming_uniform_")
    return _variance_scaling(tensor, scale, fan_mode, "uniform", fans, generator, "kaiming_uniform_", empty_any_dim=True)


@_dtensor_aware(_real)
def kaiming_normal_(
    tensor: torch.Tensor,
    a: float | None = 0,
    mode: FanMode = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: Generator = None,
    *,
    fans: Fans | tuple[float, float] | None = None,
    gain: float | None = None,
) -> torch.Tensor:
    r"""He/Kaiming normal: :math:`\mathcal{N}(0, \text{std}^2)`, ``std = gain / sqrt(fan_mode)``.

    He et al. (2015). ``variance_scaling_(tensor, gain**2, mode, "normal")``, ``gain`` as in
    :func:`kaiming_uniform_`. Drop-in for ``torch.nn.init.kaiming_normal_``. Keras's and JAX's
    ``he_normal`` is a *truncated* normal: that is ``he_truncated_normal_``.

    >>> kaiming_normal_(torch.empty(3, 5), mode="fan_out", nonlinearity="relu").shape
    torch.Size([3, 5])
    """
    scale, fan_mode = _kaiming_scale(a, mode, nonlinearity, gain, "kaiming_normal_")
    return _variance_scaling(tensor, scale, fan_mode, "normal", fans, generator, "kaiming_normal_", empty_any_dim=True)


@_dtensor_aware(_real)
def lecun_uniform_(
    tensor: torch.Tensor,
    *,
    fans: Fans | tuple[float, float] | None = None,
    generator: Generator = None,
) -> torch.Tensor:
    r"""LeCun uniform: :math:`\mathcal{U}(-b, b)`, ``b = sqrt(3 / fan_in)``.

    LeCun et al., "Efficient BackProp" (1998). ``variance_scaling_(tensor, 1, "fan_in", "uniform")``.

    >>> lecun_uniform_(torch.empty(3, 5)).shape
    torch.Size([3, 5])
    """
    return _variance_scaling(tensor, 1.0, "fan_in", "uniform", fans, generator, "lecun_uniform_")


@_dtensor_aware(_real)
def lecun_normal_(
    tensor: torch.Tensor,
    *,
    fans: Fans | tuple[float, float] | None = None,
    generator: Generator = None,
) -> torch.Tensor:
    r"""LeCun normal: :math:`\mathcal{N}(0, 1 / \text{fan\_in})` (the init SELU expects).

    LeCun et al. (1998); Klambauer et al., "Self-Normalizing Neural Networks" (2017).
    ``variance_scaling_(tensor, 1, "fan_in", "normal")``. Keras's and JAX's ``lecun_normal``
    is a *truncated* normal: that is :func:`lecun_truncated_normal_`.

    >>> lecun_normal_(torch.empty(3, 5)).shape
    torch.Size([3, 5])
    """
    return _variance_scaling(tensor, 1.0, "fan_in", "normal", fans, generator, "lecun_normal_")


# Keras / JAX: ``glorot_normal``, ``he_normal`` and ``lecun_normal`` are truncated normals
# (±2 parent standard deviations, final variance exactly scale / fan; kurtosis 2.37).


@_dtensor_aware(_never)
def glorot_truncated_normal_(
    tensor: torch.Tensor,
    *,
    fans: Fans | tuple[float, float] | None = None,
    generator: Generator = None,
) -> torch.Tensor:
    r"""Keras/JAX ``glorot_normal``: truncated normal of variance ``2 / (fan_in + fan_out)``.

    Glorot & Bengio (2010). ``variance_scaling_(tensor, 1, "fan_avg", "truncated_normal")``.
    (torch's ``xavier_normal_`` is a plain normal.)

    >>> glorot_truncated_normal_(torch.empty(3, 5)).shape
    torch.Size([3, 5])
    """
    return _variance_scaling(tensor, 1.0, "fan_avg", "truncated_normal", fans, generator, "glorot_truncated_normal_")


@_dtensor_aware(_never)
def he_truncated_normal_(
    tensor: torch.Tensor,
    *,
    fans: Fans | tuple[float, float] | None = None,
    generator: Generator = None,
) -> torch.Tensor:
    r"""Keras/JAX ``he_normal``: truncated normal of variance ``2 / fan_in``.

    He et al. (2015). ``variance_scaling_(tensor, 2, "fan_in", "truncated_normal")``.
    (torch's ``kaiming_normal_`` is a plain normal.)

    >>> he_truncated_normal_(torch.empty(3, 5)).shape
    torch.Size([3, 5])
    """
    return _variance_scaling(tensor, 2.0, "fan_in", "truncated_normal", fans, generator, "he_truncated_normal_")


@_dtensor_aware(_never)
def lecun_truncated_normal_(
    tensor: torch.Tensor,
    *,
    fans: Fans | tuple[float, float] | None = None,
    generator: Generator = None,
) -> torch.Tensor:
    r"""Keras/JAX ``lecun_normal``: truncated normal of variance ``1 / fan_in``.

    LeCun et al. (1998); Klambauer et al. (2017).
    ``variance_scaling_(tensor, 1, "fan_in", "truncated_normal")``.

    >>> lecun_truncated_normal_(torch.empty(3, 5)).shape
    torch.Size([3, 5])
    """
    return _variance_scaling(tensor, 1.0, "fan_in", "truncated_normal", fans, generator, "lecun_truncated_normal_")


# ---------------------------------------------------------------------------------------------
# Structured schemes.
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch (and MKL/OpenMP) single-threaded in the calling thread inside the block.

    LAPACK/BLAS and torch's reductions split their sums by the thread count, so a QR or a
    norm computed with 1 and 2 threads differs in the last bits (48,184 of 65,536 elements of
    a 256x256 orthogonal matrix did). One thread is one fixed summation order: the keyed
    schemes run their linear algebra here, so their values do not depend on
    ``torch.get_num_threads()`` (torchrun sets ``OMP_NUM_THREADS=1``). The setting is
    per-thread for OpenMP and MKL; it is restored on exit, also on error.
    """
    prev = torch.get_num_threads()
    if prev == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def _fma32(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``fmaf(a, b, c)`` elementwise for float32 tensors: ``a * b + c`` rounded once, bit for
    bit (torch has no fused multiply-add). In float64 the product is exact; the sum is rounded
    to odd (its error, exact by Knuth's TwoSum, decides the last bit), and rounding that to
    float32 is the correctly rounded result (Boldo and Melquiond 2008: 53 >= 2 * 24 + 2)."""
    p = a.double() * b.double()
    c64 = c.double()
    s = p + c64
    bb = s - p
    err = (p - (s - bb)) + (c64 - bb)
    bits = s.view(torch.int64)
    inexact_even = (err != 0) & ((bits & 1) == 0)
    step = torch.where((err > 0) == (s > 0), 1, -1)  # one ulp toward the exact value
    return torch.where(inexact_even, bits + step, bits).view(torch.float64).float()


def _lane_tree(acc: torch.Tensor) -> torch.Tensor:
    """The 16 lanes (last axis) combined as the C kernel does: [l] + [l+8], + [l+4], ..."""
    b = acc[..., :8] + acc[..., 8:]
    c = b[..., :4] + b[..., 4:]
    return (c[..., 0] + c[..., 2]) + (c[..., 1] + c[..., 3])


def _haar32_reference(a: torch.Tensor) -> torch.Tensor:
    """The keyed float32 Q of ``orthogonal_`` (``"auto"`` method) in torch operations: the
    definition the C kernel (``initwise.random._native.haar32``) computes bit for bit (see its
    comment: rows padded to a multiple of 16 with zeros, 16-lane sums). ``a``: float32
    Gaussians ``[k, n, m]`` (row j = column j of the tall matrix, n <= m), not modified;
    returns ``[k, n, m]``, row c = column c of Q. Slow (a few thousand small torch calls per
    matrix): the path without the C extension, and the tests' reference."""
    k, n, m = a.shape
    mx = -(-m // 16) * 16
    rows = torch.arange(mx)
    diag = torch.arange(n)
    # the reflectors: lane sums of squares (exact float64 squares, summed in lane order)
    a64 = torch.nn.functional.pad(a.double(), (0, mx - m))  # [k, n, mx]
    below = (rows[None, :] > diag[:, None]) & (rows[None, :] < m)  # [n, mx]: k < r < m
    sq = torch.where(below, a64 * a64, 0.0)  # +0 elsewhere: adding it changes no lane
    chunks = sq.reshape(k, n, mx // 16, 16)
    acc = torch.zeros(k, n, 16, dtype=torch.float64)
    for q in range(mx // 16):
        acc = acc + chunks[:, :, q]
    s2 = _lane_tree(acc)
    alpha = a64[:, diag, diag]
    trivial = s2 == 0
    beta = torch.where(trivial, alpha, -torch.copysign(torch.sqrt(alpha * alpha + s2), alpha))
    tau = torch.where(trivial, 0.0, (beta - alpha) / torch.where(trivial, 1.0, beta)).float()
    inv = 1.0 / torch.where(trivial, 1.0, alpha - beta)
    v = torch.where(below & ~trivial[..., None], (a64 * inv[..., None]).float(), 0.0)  # [k, n, mx]
    v[:, diag, diag] = 1.0  # v_j[j] = 1
    sign = torch.where(beta < 0, -1.0, 1.0).float()
    # Q's columns: x_c = H_c ... H_0 e_c; H_j reaches the columns c >= j (the kernel also runs
    # the earlier columns of a block through it, which leaves them exactly as they are)
    x = torch.zeros(k, n, mx, dtype=torch.float32)
    x[:, diag, diag] = 1.0
    for j in range(n - 1, -1, -1):
        t = tau[:, j]
        if not bool((t != 0).any()):
            continue
        q0 = j & ~15
        vj = v[:, j, None, q0:]  # [k, 1, mx - q0]
        xs = x[:, j:, q0:]  # columns c >= j, rows from q0
        acc32 = torch.zeros(k, n - j, 16, dtype=torch.float32)
        for q in range(0, mx - q0, 16):
            acc32 = _fma32(vj[..., q : q + 16], xs[..., q : q + 16], acc32)
        s = -(t[:, None] * _lane_tree(acc32))  # [k, n - j]
        new = _fma32(s[..., None], vj, xs)
        x[:, j:, q0:] = torch.where((t != 0)[:, None, None], new, xs)
    return x[..., :m] * sign[..., None]


def _haar_from_reflectors(at: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Orthonormal columns from a Gaussian ``a = at.T`` (m >= n) by Householder reflectors, no QR.

    Householder QR of a Gaussian matrix builds its k-th reflector from a vector that is, by
    rotation invariance, a fresh standard Gaussian of dimension ``m - k`` independent of the
    earlier ones (Stewart, "The efficient generation of random orthogonal matrices", 1980).
    So the reflectors are built directly from the lower trapezoid of ``a`` (column k, rows k
    and below), with LAPACK's convention ``beta = -sign(alpha) * norm``, and Q is formed from
    them (``orgqr``) times ``diag(sign(beta))``: exactly the distribution of Q from QR with
    the sign fix (Haar), while skipping the factorization (about half the cost of QR).
    ``at`` is ``[n, m]`` (row k is column k of ``a``: LAPACK's column-major layout) or a
    stack ``[k, n, m]`` of such matrices; it is overwritten. Returns ``[m, n]`` (``[k, m, n]``),
    column-major, written into ``out`` (same shape, column-major) when given. Runs
    single-threaded (:func:`_one_thread`), so the bits do not depend on the thread count; one
    thread is also the fastest for the sizes initialization sees on a shared machine (see
    docs/random.md). A stack gives each matrix the bits it gets alone: the per-column scalars
    are elementwise, the norms are per row, and Q is formed by one ``orgqr`` per matrix
    (``tests/test_schemes.py`` compares them); a stack only saves the fixed cost of each
    operation (50 matrices of 256x256 at one thread: 33.7-34.2 ms as one stack, 35.9-36.6 ms one by one).

    That is the LAPACK method. float32 matrices with fewer than ``_SPLIT_MIN`` columns under
    :func:`initwise.random.orthogonal_method` ``"auto"`` (the default) are formed instead by
    initwise's own kernel (``haar32`` in ``random/_native.c``, or :func:`_haar32_reference`
    without the C extension): the same construction with every operation fixed, so the bits
    are the same on every CPU, and each matrix of a stack is formed alone (docs/random.md).
    """
    n, m = at.shape[-2], at.shape[-1]
    if at.dtype == torch.float32 and n < _SPLIT_MIN and _random.orthogonal_method() == "auto":
        if out is not None and out.transpose(-2, -1).is_contiguous():
            dest = out.transpose(-2, -1)  # Q^T row-major: Q column-major, as returned
        else:
            dest = torch.empty(at.shape, dtype=at.dtype)
        src = at if at.is_contiguous() else at.contiguous()
        if not haar32_native(src, dest):
            dest.copy_(_haar32_reference(src.reshape(-1, n, m)).reshape(at.shape))
        q = dest.transpose(-2, -1)
        return q if out is None or q.data_ptr() == out.data_ptr() else out.copy_(q)
    threads = torch.get_num_threads()
    with _one_thread():
        alpha = torch.diagonal(at, dim1=-2, dim2=-1).clone()
        low = at.triu_(1)  # row k: the part of column k of a below the diagonal
        xnorm = torch.linalg.vector_norm(low, dim=-1)
        trivial = xnorm == 0  # an empty or zero sub-column: H = I, R_kk = alpha
        beta = torch.where(trivial, alpha, -torch.copysign(torch.hypot(alpha, xnorm), alpha))
        tau = torch.where(trivial, 0.0, (beta - alpha) / torch.where(trivial, 1.0, beta))
        low.div_(torch.where(trivial, 1.0, alpha - beta).unsqueeze(-1))  # v = x / (alpha - beta)
        v = low.transpose(-2, -1)
        if v.dim() == 2:
            if v.shape[1] < _SPLIT_MIN:
                q = torch.linalg.householder_product(v, tau, out=out)
            else:
                q = _split_product(v, tau, threads)
                q = q if out is None else out.copy_(q)
        else:
            q = torch.empty(at.shape, dtype=at.dtype).transpose(-2, -1) if out is None else out
            # ``out`` laid over ``at`` (as _orthogonal_stack passes it): Q is formed where the
            # reflectors are, as LAPACK does, without first copying them there
            over = q.data_ptr() == v.data_ptr() and q.stride() == v.stride()
            for vi, ti, qi in zip(v, tau, q, strict=True):
                torch.linalg.householder_product(vi, ti, out=vi if over else qi)
        return q.mul_(torch.where(beta < 0, -1.0, 1.0).unsqueeze(-2))


_ONE_THREAD_NUMEL = 1 << 18  # keyed orthogonal_ at most this big runs entirely on one thread
_SPLIT_MIN = 1024  # Q has at least this many columns: form it in two independent pieces


def _split_product(v: torch.Tensor, tau: torch.Tensor, threads: int) -> torch.Tensor:
    """``householder_product(v, tau)`` as two pieces that run concurrently, each on one thread.

    With ``k = n - 7n/20`` (a fixed split: the bits depend on the shape, never on threads),
    ``Q[:, :k] = H_1..H_k E`` is the product of the first k reflectors alone, and
    ``Q[:, k:] = H_1..H_k [0; Q']`` with ``Q'`` the product of the trailing reflectors on rows
    k and below (reflector j only touches rows >= j). Both pieces cost about the same, so two
    threads form Q in ~0.55x the one-thread time (LAPACK's own threading would change the
    bits); one thread pays ~8% over a single ``orgqr``.
    """
    m, n = v.shape
    k = n - (7 * n) // 20
    q = torch.empty(n, m, dtype=v.dtype).t()  # column-major, as householder_product returns

    def head() -> None:
        with _one_thread():
            q[:, :k] = torch.linalg.householder_product(v[:, :k], tau[:k])

    def tail() -> None:
        with _one_thread():
            c = torch.zeros(m, n - k, dtype=v.dtype)
            c[k:] = torch.linalg.householder_product(v[k:, k:], tau[k:])
            q[:, k:] = torch.ormqr(v[:, :k], tau[:k], c)

    if threads < 2:
        head()
        tail()
        return q
    # the worker pins torch/MKL/OpenMP to one thread for itself (these settings are per thread)
    with concurrent.futures.ThreadPoolExecutor(1, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        done = pool.submit(tail)
        head()
        done.result()
    return q


def _orthogonal_matrix(rows: int, cols: int, dtype: torch.dtype, generator: Generator) -> torch.Tensor:
    """A (rows, cols) matrix with orthonormal rows or columns, Haar-distributed.

    A torch generator (or None) gives torch's values bitwise (QR of a Gaussian with the sign
    fix of Mezzadri 2007); an initwise Key builds Q from the Gaussian's Householder reflectors
    directly (same distribution, about half the cost; see ``_haar_from_reflectors``). The
    keyed Gaussian is drawn as ``[min, max]`` (each row one column of the tall matrix).
    """
    if _is_key(generator):
        at = torch.empty(min(rows, cols), max(rows, cols), dtype=dtype)
        _draw_normal(at, 0.0, 1.0, generator)
        q = _haar_from_reflectors(at)  # [max, min], column-major
        # Wide: Q^T is [rows, cols], row-major. Square: Q^T is Haar as well and lands in
        # row-major memory without a transposing copy.
        return q.t() if rows <= cols else q
    flat = torch.empty(rows, cols, dtype=dtype)
    _draw_normal(flat, 0.0, 1.0, generator)
    if rows < cols:
        flat = flat.t()
    q, r = torch.linalg.qr(flat)
    # Make Q unique (and Haar-distributed): multiply by the signs of R's diagonal (+1 for 0).
    q.mul_(torch.where(torch.diagonal(r, 0) < 0, -1.0, 1.0))
    if rows < cols:
        q = q.t()
    return q


_STACK_BYTES = 1 << 20  # a stack of tall keyed orthogonal matrices is formed this many bytes at a time
_STACK_BYTES_IN_PLACE = 32 << 20  # ... of wide or square ones (formed in the output's memory)


def _stack_chunk(rows: int, cols: int, itemsize: int) -> int:
    """How many keyed ``(rows, cols)`` matrices :func:`_orthogonal_stack` forms at a time."""
    limit = _STACK_BYTES_IN_PLACE if rows <= cols else _STACK_BYTES
    return max(1, limit // max(1, rows * cols * itemsize))


def _stackable(rows: int, cols: int, dtype: torch.dtype) -> bool:
    """True if :func:`_orthogonal_stack` forms keyed ``(rows, cols)`` matrices of ``dtype``."""
    return dtype in (torch.float32, torch.float64) and 0 < min(rows, cols) < _SPLIT_MIN


def _orthogonal_stack(keys: Sequence[Key], rows: int, cols: int, dtype: torch.dtype,
                      out: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """``[len(keys), rows, cols]``: matrix i is ``orthogonal_(torch.empty(rows, cols), generator=keys[i])``.

    Bitwise the values ``orthogonal_`` writes (it calls this with one key), for float32 or
    float64 matrices with fewer than ``_SPLIT_MIN`` rows or columns, formed on one thread,
    into ``out`` when given (contiguous, that shape and dtype). Wide or square matrices are
    formed in ``out``'s own memory, up to ``_STACK_BYTES_IN_PLACE`` at a time (50 of
    256x256 at one thread: 33.7 ms in one step, 36.4 ms four at a time); tall ones through a
    scratch of about ``_STACK_BYTES`` that stays in cache between the steps. Many matrices of
    one shape (LSUV's pre-init) pay the fixed cost of each step once per step.
    """
    k = len(keys)
    lo, hi = min(rows, cols), max(rows, cols)
    result = torch.empty(k, rows, cols, dtype=dtype) if out is None else out
    if k == 0 or lo == 0:
        return result
    per = min(k, _stack_chunk(rows, cols, result.element_size()))
    with _one_thread(), torch.no_grad():
        # Q^T, row-major (rows <= cols), is Q column-major: the Gaussian is drawn in dest's
        # memory and Q formed over it; a tall Q is transposed into dest from a scratch
        scratch = None if rows <= cols else torch.empty(per, lo, hi, dtype=dtype)
        for start in range(0, k, per):
            chunk = keys[start : start + per]
            dest = result[start : start + len(chunk)]
            at = dest if scratch is None else scratch[: len(chunk)]
            for a, key in zip(at, chunk, strict=True):
                _draw_normal(a, 0.0, 1.0, key)
            if scratch is None:
                _haar_from_reflectors(at, out=dest.transpose(-2, -1))
            else:
                dest.copy_(_haar_from_reflectors(at))
    return result


@_dtensor_aware(_never)
def orthogonal_(tensor: torch.Tensor, gain: float = 1.0, generator: Generator = None) -> torch.Tensor:
    r"""Fill ``tensor`` with a (semi-)orthogonal matrix scaled by ``gain``.

    Saxe et al., "Exact solutions to the nonlinear dynamics of learning in deep linear neural
    networks" (2013). The tensor is viewed as ``(rows, cols) = (shape[0], prod(shape[1:]))``;
    rows (if ``rows <= cols``) or columns are orthonormal, drawn from the Haar measure by QR of
    a Gaussian matrix with the sign fix of Mezzadri (2007). Elementwise variance is
    ``gain**2 / max(rows, cols)``. With an :class:`initwise.random.Key` as ``generator``, Q is
    formed from the Gaussian's Householder reflectors without the factorization (Stewart 1980;
    the same Haar distribution, 1.3-1.9x faster), with a summation order fixed by the shape,
    so the values do not depend on the thread count (docs/random.md). Drop-in for
    ``torch.nn.init.orthogonal_`` (bitwise, in float32, for a torch generator); unlike torch it
    works in float16 and bfloat16 (QR runs in float32 and the result is rounded once) and on
    non-contiguous views (e.g. one gate block of an LSTM weight).

    >>> w = orthogonal_(torch.empty(4, 6))
    >>> torch.allclose(w @ w.T, torch.eye(4), atol=1e-5)
    True
    """
    g = check_finite_positive("gain", gain, allow_zero=True, where="orthogonal_")
    _is_key(generator)
    if not check_tensor(tensor, "orthogonal_", min_dim=2):
        return tensor
    rows = tensor.shape[0]
    cols = tensor.numel() // rows
    # Small keyed matrices (LSUV's pre-init: 50 of them) finish on one thread: a parallel
    # region for a 64K-element copy costs more than the copy where cores are shared.
    small = _is_key(generator) and rows * cols <= _ONE_THREAD_NUMEL
    if small and tensor.dtype in (torch.float32, torch.float64) and tensor.device.type == "cpu" \
            and tensor.is_contiguous() and type(tensor.detach()) is torch.Tensor:  # fmt: skip
        # straight into the tensor's memory: no copy of Q (the same bits)
        assert isinstance(generator, Key)
        out = tensor.detach().view(1, rows, cols)
        _orthogonal_stack([generator], rows, cols, tensor.dtype, out=out)
        if g != 1.0:
            out.mul_(g)
        return tensor
    with _one_thread() if small else contextlib.nullcontext():
        q = _orthogonal_matrix(rows, cols, _work_dtype(tensor), generator)
        if g != 1.0:
            q = q * g
        return _fill_from(tensor, q.to(tensor.device))


@_dtensor_aware(_never)
def delta_orthogonal_(tensor: torch.Tensor, gain: float = 1.0, generator: Generator = None) -> torch.Tensor:
    r"""Delta-orthogonal init of a conv kernel: an orthogonal matrix at the centre tap, zeros elsewhere.

    Xiao et al., "Dynamical Isometry and a Mean Field Theory of CNNs: How to Train 10,000-Layer
    Vanilla Convolutional Neural Networks" (2018). ``W[:, :, c] = gain * Q`` with ``Q`` an
    ``[out, in]`` matrix with orthonormal columns (``out >= in`` is required so the
    convolution is norm-preserving) at the spatial centre ``c = k // 2``; all other taps are 0.

    >>> w = delta_orthogonal_(torch.empty(8, 4, 3, 3))
    >>> torch.allclose(w[:, :, 1, 1].T @ w[:, :, 1, 1], torch.eye(4), atol=1e-5)
    True
    """
    g = check_finite_positive("gain", gain, allow_zero=True, where="delta_orthogonal_")
    _is_key(generator)
    if not check_tensor(tensor, "delta_orthogonal_", min_dim=3, max_dim=5):
        return tensor
    out, inp = tensor.shape[0], tensor.shape[1]
    if out < inp:
        raise ValueError(
            f"delta_orthogonal_: needs out_channels >= in_channels (shape {tuple(tensor.shape)}); "
            "an orthogonal centre tap cannot preserve the norm otherwise"
        )
    q = _orthogonal_matrix(out, inp, _work_dtype(tensor), generator) * g
    centre = tuple(k // 2 for k in tensor.shape[2:])
    index: tuple[slice | int, ...] = (slice(None), slice(None), *centre)
    with torch.no_grad():
        tensor.zero_()
        tensor[index] = q.to(dtype=tensor.dtype, device=tensor.device)
    return tensor


@_dtensor_aware(_never)
def sparse_(
    tensor: torch.Tensor, sparsity: float, std: float = 0.01, generator: Generator = None
) -> torch.Tensor:
    r"""Fill a 2-D ``tensor`` as a sparse matrix: N(0, std²) with a fraction of each column zero.

    Martens, "Deep learning via Hessian-free optimization" (2010). In each column,
    ``ceil(sparsity * rows)`` entries chosen at random are zero (``sparsity=1`` zeroes all,
    as in torch). Drop-in for ``torch.nn.init.sparse_`` (which forgets to pass ``generator``
    to its permutations; here every random call uses it). Complex tensors get torch's complex
    normal values.

    >>> w = sparse_(torch.empty(10, 4), 0.3)
    >>> [int((w[:, j] == 0).sum()) for j in range(4)]
    [3, 3, 3, 3]
    """
    s = check_real("sparsity", sparsity, where="sparse_")
    if not 0.0 <= s <= 1.0:
        raise ValueError(f"sparse_: sparsity must be in [0, 1], got {sparsity!r}")
    std = check_finite_positive("std", std, allow_zero=True, where="sparse_", error=BadValueError)
    _is_key(generator)
    if not check_tensor(tensor, "sparse_", min_dim=2, max_dim=2, allow_complex=True):
        return tensor
    rows, cols = tensor.shape
    num_zeros = math.ceil(s * rows)
    cpu = tensor.device.type == "cpu"
    direct = cpu and (tensor.is_complex() or tensor.dtype == _work_dtype(tensor))
    values = tensor if direct else torch.empty(rows, cols, dtype=tensor.dtype if tensor.is_complex() else _work_dtype(tensor))
    _draw_normal(values, 0.0, std, generator)
    if num_zeros:
        with torch.no_grad():
            if _is_key(generator):
                # a keyed random permutation of each column: argsort of keyed uniforms
                keys = torch.empty(rows, cols, dtype=torch.float64)
                _random.uniform_(keys, generator.child("sparse_mask"))  # type: ignore[union-attr]
                # distinct 52-bit keys: one permutation; stable sort pins ties all the same
                values.scatter_(0, keys.argsort(dim=0, stable=True)[:num_zeros], 0.0)
            else:
                torch_gen = generator if isinstance(generator, torch.Generator) else None
                for c in range(cols):  # column by column, like torch (and as fast)
                    values[torch.randperm(rows, generator=torch_gen)[:num_zeros], c] = 0.0
    return tensor if direct else _fill_from(tensor, values.to(tensor.device))


# ---------------------------------------------------------------------------------------------
# torch.nn.init's deprecated names without the trailing underscore.
# ---------------------------------------------------------------------------------------------

_R = TypeVar("_R")


def _deprecated(fn: Callable[..., _R]) -> Callable[..., _R]:
    """``fn`` under its old name, warning as torch does (``FutureWarning``, the same text)."""
    new_name = fn.__name__
    old_name = new_name[:-1]

    @functools.wraps(fn)
    def alias(*args: Any, **kwargs: Any) -> _R:
        warnings.warn(
            f"`nn.init.{old_name}` is now deprecated in favor of `nn.init.{new_name}` "
            f"(initwise.{old_name} -> initwise.{new_name}).",
            FutureWarning,
            stacklevel=2,
        )
        return fn(*args, **kwargs)

    alias.__name__ = alias.__qualname__ = old_name
    alias.__doc__ = f"Deprecated alias of :func:`{new_name}` (as in torch.nn.init); warns FutureWarning."
    return alias


uniform = _deprecated(uniform_)
normal = _deprecated(normal_)
constant = _deprecated(constant_)
eye = _deprecated(eye_)
dirac = _deprecated(dirac_)
xavier_uniform = _deprecated(xavier_uniform_)
xavier_normal = _deprecated(xavier_normal_)
kaiming_uniform = _deprecated(kaiming_uniform_)
kaiming_normal = _deprecated(kaiming_normal_)
orthogonal = _deprecated(orthogonal_)
sparse = _deprecated(sparse_)

DEPRECATED_ALIASES: tuple[str, ...] = (
    "uniform", "normal", "constant", "eye", "dirac", "xavier_uniform", "xavier_normal",
    "kaiming_uniform", "kaiming_normal", "orthogonal", "sparse",
)  # fmt: skip
