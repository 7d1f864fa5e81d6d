"""Singular values of a model's input-output Jacobian, by Lanczos on ``JᵀJ`` (or ``JJᵀ``).

Dynamical isometry (Pennington, Schoenholz & Ganguli, 2017, "Resurrecting the sigmoid in deep
learning through dynamical isometry") asks for *all* singular values of the input-output
Jacobian ``J = ∂f(x)/∂x`` to be close to 1, not only their mean square. ``J`` is never formed:
each Lanczos step costs one Jacobian-vector product (:func:`torch.func.jvp`) and one
vector-Jacobian product (the ``vjp_fn`` of :func:`torch.func.vjp`), so ``k`` steps cost about
``k`` forward-and-backward passes whatever the model size.

Lanczos runs on the Gram matrix of the smaller side (``JᵀJ`` when the input is smaller,
``JJᵀ`` otherwise), whose eigenvalues are the squared nonzero-able singular values, with full
reorthogonalization in float64. From the tridiagonal matrix ``T_k = S diag(θ) Sᵀ`` and the
random unit start vector ``v``:

* extreme Ritz values ``θ`` converge to the extreme eigenvalues first (``max sv = sqrt(θ_max)``
  is a lower bound that is usually tight after a few dozen steps; ``min sv = sqrt(θ_min)`` is an
  upper bound);
* spectral averages use stochastic Lanczos quadrature (Ubaru, Chen & Saad, 2017):
  ``mean g(λ) ≈ Σ_i S[0, i]² g(θ_i)``; for ``g(λ) = λ`` this is ``vᵀ(JᵀJ)v``, an unbiased
  estimate of the mean squared singular value.

When the Krylov space is exhausted (``k`` reaches the dimension, or the recurrence breaks
down because ``v`` lies in an invariant subspace), the Ritz values are exact eigenvalues.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .. import _torch
from .._errors import AuditError
from .._session import primary_output

__all__ = ["SpectrumSummary", "lanczos_gram", "summarize_spectrum"]


@dataclass
class SpectrumSummary:
    """Summary of the singular values of an input-output Jacobian.

    Attributes:
        dim: dimension of the Gram matrix used (``min(inputs, outputs)`` of the Jacobian).
        side: ``"JtJ"`` or ``"JJt"``: which Gram matrix Lanczos ran on.
        steps: Lanczos steps (matrix-vector products) taken.
        exact: True when the Krylov space was exhausted, so the values are exact.
        singular_values: the Ritz singular values, descending.
        mean_sq_sv: mean squared singular value (``tr(JᵀJ) / dim``; 1 under isometry).
        max_sv, min_sv: largest and smallest singular value (Ritz estimates).
        log_sv_std: spread: the standard deviation of ``log(sv)`` over the spectrum
            (0 under perfect isometry; ``inf`` when singular values are zero).
        condition: ``max_sv / min_sv``.
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
    quadrature weights ``S[0, i]²`` (summing to 1), and whether the Krylov space was exhausted.

    >>> a = torch.diag(torch.arange(1.0, 6.0, dtype=torch.float64))
    >>> th, w, ex = lanczos_gram(lambda v: a.to(v.dtype) @ v, 5, 10,
    ...     generator=torch.Generator().manual_seed(0), device=torch.device("cpu"),
    ...     dtype=torch.float64)
    >>> [round(t, 6) for t in th.tolist()], ex
    ([1.0, 2.0, 3.0, 4.0, 5.0], True)
    """
    steps = max(1, min(steps, dim))
    v = torch.randn(dim, generator=generator, dtype=torch.float64)
    v = (v / v.norm()).to(device)
    basis = torch.empty(steps, dim, dtype=torch.float64, device=device)
    alphas: list[torch.Tensor] = []
    betas: list[torch.Tensor] = []
    exhausted = False
    scale = None
    for j in range(steps):
        basis[j] = v
        w = matvec(v.to(dtype)).to(torch.float64).reshape(-1)
        alpha = torch.dot(w, v)
        alphas.append(alpha)
        # Full reorthogonalization (twice is enough): keeps the Ritz values free of ghosts.
        q = basis[: j + 1]
        w = w - q.T @ (q @ w)
        w = w - q.T @ (q @ w)
        beta = w.norm()
        if scale is None:
            scale = float(alpha.abs()) + float(beta) + 1e-300
        b = float(beta)
        if j + 1 == dim or b <= 1e-10 * scale:
            exhausted = True
            break
        if j + 1 < steps:
            betas.append(beta)
            v = w / beta
    m = len(alphas)
    t = torch.diag(torch.stack(alphas).cpu())
    if m > 1:
        off = torch.stack(betas[: m - 1]).cpu()
        t = t + torch.diag(off, 1) + torch.diag(off, -1)
    theta, s = torch.linalg.eigh(t)
    weights = s[0] ** 2
    return theta.clamp_min(0.0), weights / weights.sum(), exhausted


def summarize_spectrum(
    theta: torch.Tensor, weights: torch.Tensor, *, dim: int, side: str, exact: bool
) -> SpectrumSummary:
    """Turn Ritz values of ``JᵀJ`` into a :class:`SpectrumSummary` (see the module docs).

    When the Krylov space was exhausted with ``len(theta) == dim`` the values are the whole
    spectrum and plain averages are used; otherwise quadrature weights are.

    >>> th = torch.tensor([1.0, 4.0], dtype=torch.float64)
    >>> s = summarize_spectrum(th, torch.tensor([0.5, 0.5]), dim=2, side="JtJ", exact=True)
    >>> s.max_sv, s.min_sv, s.mean_sq_sv, s.condition
    (2.0, 1.0, 2.5, 2.0)
    """
    theta = theta.to(torch.float64)
    if exact and theta.numel() == dim:
        weights = torch.full_like(theta, 1.0 / dim)
    weights = weights.to(torch.float64)
    sv = theta.sqrt()
    mean_sq = float((weights * theta).sum())
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
    return SpectrumSummary(
        dim=dim,
        side=side,
        steps=int(theta.numel()),
        exact=exact,
        singular_values=sorted((float(x) for x in sv), reverse=True),
        mean_sq_sv=mean_sq,
        max_sv=max_sv,
        min_sv=min_sv,
        log_sv_std=log_std,
        condition=cond,
    )


def jacobian_spectrum(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    steps: int,
    generator: torch.Generator,
) -> SpectrumSummary:
    """Estimate the singular values of the Jacobian of ``fn`` (flat vector to tensor) at ``x``.

    >>> w = torch.tensor([[3.0, 0.0], [0.0, 0.5]])
    >>> s = jacobian_spectrum(lambda v: w @ v, torch.ones(2), steps=8,
    ...                       generator=torch.Generator().manual_seed(0))
    >>> round(s.max_sv, 6), round(s.min_sv, 6), s.exact
    (3.0, 0.5, True)
    """
    from torch.func import jvp, vjp

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

    theta, weights, exhausted = lanczos_gram(
        matvec, dim, steps, generator=generator, device=x.device, dtype=x.dtype
    )
    return summarize_spectrum(theta, weights, dim=dim, side=side, exact=exhausted)


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


