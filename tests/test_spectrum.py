"""Jacobian spectrum: exact with multiplicities, quadrature estimates, no audit hooks inside."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import initwise
from initwise._audit.spectrum import SpectrumSummary, jacobian_spectrum


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _exact_sv(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    jac = torch.autograd.functional.jacobian(lambda v: net(v), x)
    return torch.linalg.svdvals(jac.double())


def test_orthogonal_net_all_singular_values_one_with_multiplicity() -> None:
    gen = _gen(0)
    layers = [nn.Linear(96, 96, bias=False) for _ in range(6)]
    for m in layers:
        initwise.orthogonal_(m.weight, generator=gen)
    net = nn.Sequential(*layers).double()
    s = jacobian_spectrum(net, torch.randn(96, dtype=torch.float64, generator=gen), steps=96,
                          generator=gen)
    assert s.exact and len(s.singular_values) == 96 and s.steps == 96
    # float32 orthogonal factors (1e-7 from orthogonal each), then float64 products
    assert max(abs(v - 1.0) for v in s.singular_values) < 1e-5
    assert s.weights == pytest.approx([1 / 96] * 96)
    assert s.var_sq_sv < 1e-10 and s.band_fraction == pytest.approx(1.0)
    assert s.mean_sq_sv_se == 0.0


def test_exact_multiplicities_of_a_rank_deficient_jacobian() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 4), nn.Tanh(), nn.Linear(4, 12)).double()
    x = torch.randn(10, dtype=torch.float64)
    s = jacobian_spectrum(net, x, steps=16, generator=_gen(1))
    sv = _exact_sv(net, x)  # 10 values, 6 of them zero
    assert s.exact and s.side == "JtJ" and len(s.singular_values) == 10
    assert torch.allclose(torch.tensor(s.singular_values, dtype=torch.float64), sv, atol=1e-6)
    assert sum(v < 1e-6 for v in s.singular_values) == 6
    assert s.fraction_in_band(0.0, 1e-6) == pytest.approx(0.6)
    assert s.log_sv_std == math.inf and s.condition == math.inf


def test_slq_moments_within_tolerance_of_exact_svd() -> None:
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(200, 300), nn.Tanh(), nn.Linear(300, 250), nn.Tanh(),
                        nn.Linear(250, 240)).double()
    x = torch.randn(200, dtype=torch.float64)
    lam = _exact_sv(net, x) ** 2
    d, probes = lam.numel(), 8
    s = jacobian_spectrum(net, x, steps=20, generator=_gen(2), probes=probes)
    assert not s.exact and s.probes == probes and s.steps == 20 * probes
    assert sum(s.weights) == pytest.approx(1.0)
    # Hutchinson with uniform unit vectors: Var(vᵀAv) = 2 Var(λ) / (d + 2); 6 standard errors
    se1 = math.sqrt(2 * float(lam.var(unbiased=False)) / (d + 2) / probes)
    assert abs(s.mean_sq_sv - float(lam.mean())) <= 6 * se1
    assert 0.2 * se1 < s.mean_sq_sv_se < 5 * se1
    # Σ w θ² = mean vᵀA²v (Gauss quadrature exact for degree 2): same law with λ²
    se2 = math.sqrt(2 * float((lam**2).var(unbiased=False)) / (d + 2) / probes)
    m2 = s.var_sq_sv + s.mean_sq_sv**2
    assert abs(m2 - float((lam**2).mean())) <= 6 * se2
    # extremes: Ritz bounds, the largest converged
    sv = lam.sqrt()
    assert s.max_sv <= float(sv[0]) * (1 + 1e-9) and s.max_sv > 0.99 * float(sv[0])
    assert s.min_sv >= float(sv[-1]) * (1 - 1e-9)
    # the density integrates to 1
    pts = torch.linspace(-float(sv[0]), 3 * float(sv[0]), 4001)
    dens = s.density(pts.tolist())
    assert sum(dens) * float(pts[1] - pts[0]) == pytest.approx(1.0, abs=0.02)


def test_exact_trace_when_affordable() -> None:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(40, 60), nn.Tanh(), nn.Linear(60, 50)).double()
    x = torch.randn(40, dtype=torch.float64)
    lam = _exact_sv(net, x) ** 2
    s = jacobian_spectrum(net, x, steps=12, generator=_gen(0), probes=4)  # 40 <= 4 * 12
    assert not s.exact and s.trace_exact and s.mean_sq_sv_se == 0.0
    assert s.mean_sq_sv == pytest.approx(float(lam.mean()), rel=1e-10)
    s = jacobian_spectrum(net, x, steps=8, generator=_gen(0), probes=4)  # 40 > 32
    assert not s.trace_exact and s.mean_sq_sv_se > 0


def test_audit_spectrum_runs_without_hooks() -> None:
    seen: list[int] = []

    class Probe(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(len(self._forward_hooks) + len(self._forward_pre_hooks))
            return x

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), Probe(), nn.Linear(32, 8))
    rep = initwise.audit(net, torch.randn(4, 16), spectrum=True, spectrum_steps=8)
    assert rep.spectrum is not None and rep.spectrum.exact and rep.spectrum.dim == 8
    assert seen[0] > 0  # the audit's statistics pass is hooked
    assert len(seen) > 2 and all(n == 0 for n in seen[1:])  # the Lanczos products are not
    assert not net[2]._forward_hooks  # and the model is left without hooks


def test_summary_json_round_trip_through_the_audit_report() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 20), nn.ReLU(), nn.Linear(20, 30))
    rep = initwise.audit(net, torch.randn(2, 20), spectrum=True, spectrum_steps=5)
    assert rep.spectrum is not None and not rep.spectrum.exact
    back = initwise.AuditReport.from_json(rep.to_json())
    assert back.spectrum == rep.spectrum and isinstance(back.spectrum, SpectrumSummary)
