"""Singular values of a model's input-output Jacobian, by Lanczos on ``JᵀJ`` (or ``JJᵀ``).

Dynamical isometry (Pennington, Schoenholz & Ganguli, 2017, "Resurrecting the sigmoid in deep
learning through dynamical isometry") asks for *all* singular values of the input-output
Jacobian ``J = ∂f(x)/∂x`` to be close to 1, not only their mean square. ``J`` is never formed:
each Lanczos step costs one Jacobian-vector product (:func:`torch.func.jvp`) and one
vector-Jacobian product (the ``vjp_fn`` of :func:`torch.func.vjp`), so ``k`` steps cost about
``k`` forward-and-backward passes whatever the model size.

Lanczos runs on the Gram matrix ``A`` of the smaller side (``JᵀJ`` when the input is smaller,
``JJᵀ`` otherwise), whose eigenvalues are the squared singular values, with full
reorthogonalization in float64. Two regimes:

* **exact** (``dim <= steps``): Lanczos is run to the dimension. When the recurrence breaks down
  (the start vector lies in an invariant subspace, e.g. an orthogonal network, where ``A = I``),
  it restarts from a random vector orthogonal to every basis vector so far, so the basis reaches
  ``dim`` vectors and the eigenvalues of the block-tridiagonal ``T`` are all eigenvalues of
  ``A`` *with their multiplicities* (``dim`` products). Every value has weight ``1/dim``.
* **estimate** (``dim > steps``): stochastic Lanczos quadrature (Ubaru, Chen & Saad, 2017) with
  ``probes`` independent random unit start vectors ``v``, ``steps`` products each. Each run's
  ``T_k = S diag(θ) Sᵀ`` gives the Gauss quadrature of the spectral measure seen from ``v``:
  nodes ``θ_i``, weights ``S[0, i]²``; the runs are averaged (weights ``/ probes``).
  ``Σ w θ = mean_v vᵀAv`` is the Hutchinson estimate of ``tr(A)/dim`` (exact per probe for the
  polynomial, unbiased over probes, standard error from their spread); ``Σ w θ²`` estimates
  ``tr(A²)/dim`` (exact per probe once ``steps >= 2``). When ``dim <= probes * steps``,
  ``mean_sq_sv`` is instead the exact trace (``dim`` one-sided products). Extreme Ritz values
  converge first:
  ``max sv`` is a lower bound of the largest singular value, ``min sv`` an upper bound of the
  smallest (Cauchy interlacing), the best over the probes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .. import _torch
from .._errors import AuditError
from .._session import primary_output

__all__ = ["SpectrumSummary", "full_spectrum", "jacobian_spectrum", "lanczos_gram",
           "summarize_spectrum"]


@dataclass
class SpectrumSummary:
    """Summary of the singular values of an input-output Jacobian.

    Attributes:
        dim: dimension of the Gram matrix used (``min(inputs, outputs)`` of the Jacobian).
        side: ``"JtJ"`` or ``"JJt"``: which Gram matrix Lanczos ran on.
        steps: operator products (Lanczos steps) taken, over all probes.
        exact: True when the whole spectrum was computed: ``singular_values`` then lists all
            ``dim`` values with their multiplicities and every statistic is exact.
        singular_values: descending; all of them when ``exact``, else the Ritz values of every
            probe (quadrature nodes).
        mean_sq_sv: mean squared singular value ``tr(JᵀJ)/dim`` (1 under isometry); exact, or
            the Hutchinson / quadrature estimate over the probes.
        max_sv, min_sv: largest and smallest singular value (bounds when not exact).
        log_sv_std: spread: the standard deviation of ``log(sv)`` over the spectrum
            (0 under perfect isometry; ``inf`` when singular values are zero).
        condition: ``max_sv / min_sv``.
        weights: quadrature weights of ``singular_values`` (sum 1; ``1/dim`` each when exact).
        probes: random start vectors used (1 when exact).
        mean_sq_sv_se: standard error of ``mean_sq_sv`` over the probes (0 when exact or
            ``trace_exact``; ``nan`` with one probe).
        var_sq_sv: variance of ``sv²`` over the spectrum, ``tr(A²)/dim - (tr(A)/dim)²``.
        band: ``(lo, hi)`` for ``band_fraction``.
        band_fraction: fraction of the singular values in ``band`` (see
            :meth:`fraction_in_band`).
        trace_exact: ``mean_sq_sv`` is the exact ``tr(JᵀJ)/dim`` (summed over the ``dim``
            columns of ``J`` or rows, whichever is fewer) though the rest is estimated: done when
            ``dim <= probes * steps``, where it costs at most half the quadrature's products.
    """

    dim: int
    side: str
    steps: int
    exact: bool
    singular_values: list[float] = field(default_factory=list)
    mean_sq_sv: float = math.nan
    max_sv: float = math.nan
    min_sv: float = math.nan
    log_sv_std: float = math.nan
    condition: float = math.nan
    weights: list[float] = field(default_factory=list)
    probes: int = 1
    mean_sq_sv_se: float = math.nan
    var_sq_sv: float = math.nan
    band: tuple[float, float] = (0.5, 2.0)
    band_fraction: float = math.nan
    trace_exact: bool = False

    def __post_init__(self) -> None:
        self.band = (float(self.band[0]), float(self.band[1]))  # a list after JSON

    def fraction_in_band(self, lo: float, hi: float) -> float:
        """Fraction of the singular values in ``[lo, hi]`` (quadrature estimate unless exact).

        >>> SpectrumSummary(2, "JtJ", 2, True, [2.0, 1.0], weights=[0.5, 0.5]).fraction_in_band(0.9, 1.1)
        0.5
        """
        return float(sum(w for s, w in zip(self.singular_values, self.weights, strict=False)
                         if lo <= s <= hi))

    def density(self, points: Sequence[float], bandwidth: float | None = None) -> list[float]:
        """Density of the singular values at ``points``: the quadrature measure smoothed by a
        Gaussian of width ``bandwidth`` (default: 5 % of the spread, or 1e-3 if none).

        >>> s = SpectrumSummary(1, "JtJ", 1, True, [1.0], weights=[1.0])
        >>> round(s.density([1.0], bandwidth=0.1)[0], 4)  # 1 / (0.1 sqrt(2π))
        3.9894
        """
        sv = torch.tensor(self.singular_values, dtype=torch.float64)
        w = torch.tensor(self.weights, dtype=torch.float64)
        if bandwidth is None:
            spread = float(sv.max() - sv.min()) if sv.numel() else 0.0
            bandwidth = 0.05 * spread if spread > 0 else 1e-3
        p = torch.tensor(list(points), dtype=torch.float64)
        z = (p[:, None] - sv[None, :]) / bandwidth
        d = (w[None, :] * torch.exp(-0.5 * z * z)).sum(1) / (bandwidth * math.sqrt(2 * math.pi))
        return [float(v) for v in d]


def _orthogonalize(w: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``w`` minus its projection on the rows of ``q`` (twice: "twice is enough")."""
    if q.shape[0] == 0:
        return w
    w = w - q.T @ (q @ w)
    return w - q.T @ (q @ w)


def _tridiagonal(alphas: list[float], betas: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    m = len(alphas)
    t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if m > 1:
        off = torch.tensor(betas[: m - 1], dtype=torch.float64)
        t = t + torch.diag(off, 1) + torch.diag(off, -1)
    theta, s = torch.linalg.eigh(t)
    return theta, s[0] ** 2


def _random_unit(dim: int, generator: torch.Generator, q: torch.Tensor) -> torch.Tensor | None:
    for _ in range(8):
        v = torch.randn(dim, generator=generator, dtype=torch.float64).to(q.device)
        v = _orthogonalize(v, q)
        n = float(v.norm())
        if n > 1e-8:
            return v / n
    return None


def _lanczos(matvec: Callable[[torch.Tensor], torch.Tensor], dim: int, steps: int, *,
             generator: torch.Generator, device: torch.device, dtype: torch.dtype,
             restart: bool) -> tuple[torch.Tensor, torch.Tensor, bool, int]:
    """Lanczos with full reorthogonalization; with ``restart``, new blocks after breakdowns.

    Returns ``(theta, weights, exhausted, products)``: Ritz values (ascending), the Gauss
    quadrature weights of the first block (zero for the other blocks' nodes), whether the
    basis reached ``dim`` (or, without restart, the first block broke down), products used.
    """
    steps = max(1, min(steps, dim))
    basis = torch.empty(steps, dim, dtype=torch.float64, device=device)
    v = _random_unit(dim, generator, basis[:0])
    assert v is not None
    blocks: list[tuple[list[float], list[float]]] = [([], [])]
    exhausted = False
    scale = 0.0
    n = 0
    while n < steps:
        basis[n] = v
        w = matvec(v.to(dtype)).to(torch.float64).reshape(-1)
        alpha = float(torch.dot(w, v))
        w = _orthogonalize(w, basis[: n + 1])
        beta = float(w.norm())
        scale = max(scale, abs(alpha) + beta)
        blocks[-1][0].append(alpha)
        n += 1
        if n == dim:
            exhausted = True
            break
        if beta <= 1e-10 * scale:  # invariant subspace
            if not restart:
                exhausted = True
                break
            nv = _random_unit(dim, generator, basis[:n])
            if nv is None:  # pragma: no cover - the basis already spans the space
                exhausted = True
                break
            v = nv
            blocks.append(([], []))
            continue
        blocks[-1][1].append(beta)
        v = w / beta
    thetas, weights = [], []
    for i, (a, b) in enumerate(blocks):
        if not a:
            continue
        th, wt = _tridiagonal(a, b)
        thetas.append(th)
        weights.append(wt if i == 0 else torch.zeros_like(wt))
    return torch.cat(thetas), torch.cat(weights), exhausted, n


def lanczos_gram(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    dim: int,
    steps: int,
    *,
    generator: torch.Generator,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Run ``steps`` Lanczos iterations on a symmetric PSD operator of size ``dim``.

    Returns ``(theta, weights, exhausted)``: Ritz values (ascending, float64, CPU), their
    quadrature weights ``S[0, i]²`` (summing to 1), and whether the Krylov space was exhausted
    (then ``theta`` are exact eigenvalues, without multiplicities).

    >>> a = torch.diag(torch.arange(1.0, 6.0, dtype=torch.float64))
    >>> th, w, ex = lanczos_gram(lambda v: a.to(v.dtype) @ v, 5, 10,
    ...     generator=torch.Generator().manual_seed(0), device=torch.device("cpu"),
    ...     dtype=torch.float64)
    >>> [round(t, 6) for t in th.tolist()], ex
    ([1.0, 2.0, 3.0, 4.0, 5.0], True)
    """
    theta, weights, exhausted, _ = _lanczos(matvec, dim, steps, generator=generator,
                                            device=device, dtype=dtype, restart=False)
    return theta.clamp_min(0.0), weights / weights.sum(), exhausted


def full_spectrum(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    dim: int,
    *,
    generator: torch.Generator,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """All ``dim`` eigenvalues (ascending, with multiplicities) of a symmetric PSD operator,
    by Lanczos restarted after every breakdown until the basis spans the space (``dim``
    products).

    >>> th = full_spectrum(lambda v: v, 4, generator=torch.Generator().manual_seed(0),
    ...                    device=torch.device("cpu"), dtype=torch.float64)
    >>> th.tolist()
    [1.0, 1.0, 1.0, 1.0]
    """
    theta, _, _, n = _lanczos(matvec, dim, dim, generator=generator, device=device, dtype=dtype,
                              restart=True)
    if n != dim or theta.numel() != dim:  # pragma: no cover - see _random_unit
        raise RuntimeError(f"Lanczos spanned {n} of {dim} dimensions")
    return theta.clamp_min(0.0)


def summarize_spectrum(
    theta: torch.Tensor, weights: torch.Tensor, *, dim: int, side: str, exact: bool,
    steps: int | None = None, probes: int = 1, probe_means: Sequence[float] = (),
    band: tuple[float, float] = (0.5, 2.0),
) -> SpectrumSummary:
    """Turn eigenvalues of ``JᵀJ`` and their weights into a :class:`SpectrumSummary`.

    ``exact`` with ``len(theta) == dim``: the whole spectrum, plain averages. Otherwise the
    quadrature ``weights`` are used; ``probe_means`` (each probe's ``vᵀAv``) give the
    standard error of ``mean_sq_sv``.

    >>> th = torch.tensor([1.0, 4.0], dtype=torch.float64)
    >>> s = summarize_spectrum(th, torch.tensor([0.5, 0.5]), dim=2, side="JtJ", exact=True)
    >>> s.max_sv, s.min_sv, s.mean_sq_sv, s.condition, s.var_sq_sv
    (2.0, 1.0, 2.5, 2.0, 2.25)
    """
    theta = theta.to(torch.float64).clamp_min(0.0)
    exact = bool(exact and theta.numel() == dim)
    if exact:
        weights = torch.full_like(theta, 1.0 / dim)
    weights = weights.to(torch.float64)
    weights = weights / weights.sum()
    keep = weights > 0 if not exact else torch.ones_like(weights, dtype=torch.bool)
    sv = theta.sqrt()
    mean_sq = float((weights * theta).sum())
    var_sq = max(float((weights * theta * theta).sum()) - mean_sq * mean_sq, 0.0)
    max_sv = float(sv.max())
    min_sv = float(sv.min())
    if min_sv > 0:
        logs = sv.log()
        mu = (weights * logs).sum()
        log_std = float(((weights * (logs - mu) ** 2).sum()).clamp_min(0).sqrt())
        cond = max_sv / min_sv
    else:
        log_std = math.inf
        cond = math.inf
    if exact:
        se = 0.0
    elif len(probe_means) > 1:
        pm = torch.tensor(list(probe_means), dtype=torch.float64)
        se = float(pm.std() / math.sqrt(pm.numel()))
    else:
        se = math.nan
    order = torch.argsort(sv[keep], descending=True)
    svs, ws = sv[keep][order], weights[keep][order]
    lo, hi = band
    return SpectrumSummary(
        dim=dim,
        side=side,
        steps=int(theta.numel()) if steps is None else int(steps),
        exact=exact,
        singular_values=[float(x) for x in svs],
        mean_sq_sv=mean_sq,
        max_sv=max_sv,
        min_sv=min_sv,
        log_sv_std=log_std,
        condition=cond,
        weights=[float(x) for x in ws],
        probes=1 if exact else probes,
        mean_sq_sv_se=se,
        var_sq_sv=var_sq,
        band=(float(lo), float(hi)),
        band_fraction=float(ws[(svs >= lo) & (svs <= hi)].sum()),
    )


def jacobian_spectrum(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    steps: int,
    generator: torch.Generator,
    probes: int = 4,
) -> SpectrumSummary:
    """Singular values of the Jacobian of ``fn`` (flat vector to tensor) at ``x``.

    Exact (all values with multiplicities, ``dim`` products) when the Gram dimension is at most
    ``steps``; otherwise stochastic Lanczos quadrature with ``probes`` runs of ``steps``
    products each (see the module docs).

    >>> w = torch.tensor([[3.0, 0.0], [0.0, 0.5]])
    >>> s = jacobian_spectrum(lambda v: w @ v, torch.ones(2), steps=8,
    ...                       generator=torch.Generator().manual_seed(0))
    >>> round(s.max_sv, 6), round(s.min_sv, 6), s.exact
    (3.0, 0.5, True)
    """
    from torch.func import jvp, vjp

    if probes < 1:
        raise ValueError(f"probes must be >= 1, got {probes}")
    x = x.detach()
    y, vjp_fn = vjp(fn, x)[:2]
    n_in, n_out = x.numel(), y.numel()
    out_shape = y.shape

    def jv(v: torch.Tensor) -> torch.Tensor:
        return jvp(fn, (x,), (v.reshape(x.shape),))[1].reshape(-1)

    def jtu(u: torch.Tensor) -> torch.Tensor:
        return vjp_fn(u.reshape(out_shape))[0].reshape(-1)

    if n_in <= n_out:
        side, dim = "JtJ", n_in

        def matvec(v: torch.Tensor) -> torch.Tensor:
            return jtu(jv(v)).detach()

    else:
        side, dim = "JJt", n_out

        def matvec(v: torch.Tensor) -> torch.Tensor:
            return jv(jtu(v)).detach()

    kw = {"generator": generator, "device": x.device, "dtype": x.dtype}
    if dim <= steps:
        theta = full_spectrum(matvec, dim, **kw)  # type: ignore[arg-type]
        return summarize_spectrum(theta, torch.ones_like(theta), dim=dim, side=side, exact=True,
                                  steps=dim)
    thetas, weights, means, used = [], [], [], 0
    for _ in range(probes):
        th, w, _, n = _lanczos(matvec, dim, steps, restart=False, **kw)  # type: ignore[arg-type]
        w = w / w.sum()
        thetas.append(th)
        weights.append(w / probes)
        means.append(float((w * th).sum()))
        used += n
    s = summarize_spectrum(torch.cat(thetas), torch.cat(weights), dim=dim, side=side,
                           exact=False, steps=used, probes=probes, probe_means=means)
    if dim <= probes * steps:
        # exact trace: the squared norms of J's columns (JᵀJ side) or rows (JJᵀ side)
        one = jv if side == "JtJ" else jtu
        eye = torch.zeros(dim, dtype=x.dtype, device=x.device)
        total = 0.0
        for i in range(dim):
            eye.zero_()
            eye[i] = 1.0
            total += float(one(eye).detach().to(torch.float64).pow(2).sum())
        m2 = s.var_sq_sv + s.mean_sq_sv**2
        s.mean_sq_sv, s.mean_sq_sv_se, s.trace_exact = total / dim, 0.0, True
        s.var_sq_sv = max(m2 - s.mean_sq_sv**2, 0.0)
    return s


def _spectrum(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], steps: int,
              examples: int | None, seed: int) -> SpectrumSummary:
    from torch.func import functional_call

    if steps < 1:
        raise ValueError(f"audit: spectrum_steps must be >= 1, got {steps}")

    def cut(t: Any) -> Any:
        if examples is not None and isinstance(t, torch.Tensor) and t.dim() > 0:
            return t[:examples]
        return t

    args = tuple(cut(a) for a in args)
    kwargs = {k: cut(v) for k, v in kwargs.items()}
    slots: list[tuple[int | None, str | None]] = [
        (i, None) for i, a in enumerate(args)
        if isinstance(a, torch.Tensor) and a.is_floating_point()]
    slots += [(None, k) for k, v in kwargs.items()
              if isinstance(v, torch.Tensor) and v.is_floating_point()]
    if not slots:
        raise ValueError(
            "audit: spectrum=True needs floating-point inputs (the Jacobian is taken with "
            "respect to them); models fed integer token ids have none"
        )
    parts = [args[i] if i is not None else kwargs[str(k)] for i, k in slots]
    sizes = [p.numel() for p in parts]
    x0 = torch.cat([p.detach().reshape(-1) for p in parts])
    params = {n: p.detach() for n, p in model.named_parameters()}
    # Running statistics of norm layers in training mode are not passed (None): they would be
    # mutated inside the transform; in training mode they do not affect the output.
    buffers: dict[str, torch.Tensor | None] = {}
    for mname, m in model.named_modules():
        for bname, b in _torch.own_buffers(m).items():
            full = f"{mname}.{bname}" if mname else bname
            norm_train = m.training and isinstance(m, _torch.NormBase)
            buffers[full] = None if norm_train else b

    def fn(x: torch.Tensor) -> torch.Tensor:
        a = list(args)
        kw = dict(kwargs)
        for (i, k), piece in zip(slots, torch.split(x, sizes), strict=True):
            src = args[i] if i is not None else kwargs[str(k)]
            if i is not None:
                a[i] = piece.reshape(src.shape)
            else:
                kw[str(k)] = piece.reshape(src.shape)
        torch.manual_seed(seed)  # the same dropout masks at every product
        y = primary_output(functional_call(model, (params, buffers), tuple(a), kw))  # type: ignore[arg-type]
        if y is None:
            raise AuditError("audit: the model's output contains no floating-point tensor")
        return y

    gen = torch.Generator().manual_seed(seed)
    try:
        return jacobian_spectrum(fn, x0, steps=steps, generator=gen)
    except AuditError:
        raise
    except Exception as e:
        raise AuditError(
            f"audit: the Jacobian spectrum failed ({type(e).__name__}: {e}); try mode='eval' "
            "or a larger spectrum_examples"
        ) from e
