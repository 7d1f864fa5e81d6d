"""Mean-field theory (initwise.theory) against papers, closed forms, Monte Carlo and simulation."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

import initwise
from conftest import assert_variance
from initwise import theory as T
from initwise.gains import calculate_gain, gain

# --------------------------------------------------------------------------------------------
# Published values and closed forms
# --------------------------------------------------------------------------------------------


def test_tanh_critical_point_matches_schoenholz() -> None:
    # Schoenholz et al. 2017: tanh at σ_b² = 0.05 is critical at σ_w² ≈ 1.76
    sw2 = T.critical_sigma_w2("tanh", 0.05)
    assert abs(sw2 - 1.76) < 0.005
    mf = T.mean_field("tanh", sw2, 0.05)
    assert abs(mf.chi1 - 1.0) < 1e-9 and mf.phase == "critical" and mf.xi_c > 1e6
    # a function of σ_b² increasing from (1, 0), the critical point of tanh without bias
    line = T.critical_line("tanh", [0.0, 0.05, 0.1, 0.2])
    assert abs(line.sigma_w2[0] - 1.0) < 1e-6
    assert all(a < b for a, b in zip(line.sigma_w2, line.sigma_w2[1:], strict=False))


def test_relu_critical_at_he_init() -> None:
    assert T.critical_sigma_w2("relu", 0.0) == 2.0
    mf = T.mean_field("relu", 2.0, 0.0)
    assert mf.chi1 == 1.0 and mf.phase == "critical" and mf.xi_c == math.inf
    assert T.mean_field("relu", 1.9, 0.0).phase == "ordered"
    assert T.mean_field("relu", 2.1, 0.1).q_star == math.inf
    # leaky ReLU(a): 2 / (1 + a²)
    assert math.isclose(T.critical_sigma_w2("leaky_relu", 0.0, param=0.2), 2.0 / 1.04)
    assert T.critical_sigma_w2("linear", 0.3) == 1.0


def test_tanh_gains_are_chaotic() -> None:
    """The documented fact: both usual tanh gains sit in the chaotic phase."""
    a = T.mean_field("tanh", gain("tanh") ** 2)
    b = T.mean_field("tanh", calculate_gain("tanh") ** 2)
    assert a.phase == b.phase == "chaotic"
    assert round(a.chi1, 2) == 1.18 and round(b.chi1, 2) == 1.21
    assert a.xi_grad < 0  # gradients grow with depth


def test_isometry_gain() -> None:
    assert abs(T.isometry_gain("tanh") - 1.0) < 1e-6
    assert math.isclose(T.isometry_gain("relu"), math.sqrt(2.0))
    assert math.isclose(T.isometry_gain("erf"), math.sqrt(math.pi) / 2.0, rel_tol=1e-9)
    g = T.isometry_gain("hardtanh")
    assert abs(g - 1.0) < 1e-6


def test_isometry_gain_keeps_deep_tanh_gradients_bounded() -> None:
    """100 tanh layers, orthogonal weights: at isometry_gain (σ_w = 1, q* = 0) the input
    gradient decays only polynomially (χ₁ = 1 - 2q^l with q^l ~ 1/(2l)); torch's 5/3 (chaotic)
    makes it explode and 0.9 (ordered) makes it vanish, both exponentially."""
    def grad_rms(g: float) -> float:
        gen = torch.Generator().manual_seed(0)
        layers = []
        for _ in range(100):
            lin = nn.Linear(128, 128, bias=False)
            initwise.orthogonal_(lin.weight, gain=g, generator=gen)
            layers += [lin, nn.Tanh()]
        net = nn.Sequential(*layers)
        x = torch.randn(16, 128, generator=gen).requires_grad_(True)
        r = torch.randn(16, 128, generator=gen)
        (net(x) * r).sum().backward()
        assert x.grad is not None
        return float(x.grad.pow(2).mean().sqrt())

    assert 0.02 < grad_rms(T.isometry_gain("tanh")) < 5.0
    assert grad_rms(calculate_gain("tanh")) > 100.0
    assert grad_rms(0.9) < 1e-3


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "erf"])
def test_closed_forms_agree_with_quadrature(name: str) -> None:
    p = T._resolve(name)
    quad = dataclasses.replace(p, kind="quad", key=None)
    for q in (0.01, 0.7, 5.0):
        assert math.isclose(p.m2(q), quad.m2(q), rel_tol=1e-12)
        assert math.isclose(p.d2(q), quad.d2(q), rel_tol=1e-12)
        assert math.isclose(p.dm2(q), quad.dm2(q), rel_tol=1e-10)
        for c in (-0.8, 0.0, 0.6, 0.99, 1.0):
            assert abs(p.m12(q, c) - quad.m12(q, c)) <= 2e-5 * p.m2(q)  # kink inside panels
            # φ' jumps (ReLU) on the 2-D product grid: first-order accuracy
            tol = 2e-3 if name != "erf" else 1e-9
            assert abs(p.d12(q, c) - quad.d12(q, c)) <= tol


def test_arc_cosine_kernel_value() -> None:
    # E[relu(u1) relu(u2)] at c = 0 is q / (2π): the correlation map of He init sends 0 to 1/π
    assert math.isclose(T.correlation_map(0.0, "relu", 2.0, q=1.0), 1.0 / math.pi)
    assert T.correlation_map(1.0, "tanh", 1.5, 0.05) == pytest.approx(1.0, abs=1e-12)


# --------------------------------------------------------------------------------------------
# Monte Carlo: tolerances are 6 standard errors of the sample means
# --------------------------------------------------------------------------------------------

_MC = [
    ("tanh", torch.tanh, 1.5, 0.05),
    ("tanh", torch.tanh, 3.0, 0.2),
    ("erf", torch.erf, 2.0, 0.1),
    ("sigmoid", torch.sigmoid, 4.0, 0.1),
    ("hardtanh", nn.functional.hardtanh, 1.3, 0.05),
    ("gelu", nn.functional.gelu, 1.5, 0.5),
    ("callable", lambda x: torch.sin(x) + 0.1 * x, 1.2, 0.1),
]


def _mc_mean(v: np.ndarray) -> tuple[float, float]:
    return float(v.mean()), float(v.std() / math.sqrt(v.size))


@pytest.mark.parametrize(("name", "fn", "sw2", "sb2"), _MC, ids=[f"{m[0]}-{m[2]}" for m in _MC])
def test_q_star_and_chi1_vs_monte_carlo(name: str, fn: object, sw2: float, sb2: float) -> None:
    act = fn if name == "callable" else name
    mf = T.mean_field(act, sw2, sb2)  # type: ignore[arg-type]
    assert math.isfinite(mf.q_star) and mf.q_star > 0
    gen = torch.Generator().manual_seed(7)
    z = torch.randn(400_000, generator=gen, dtype=torch.float64)
    u = (math.sqrt(mf.q_star) * z).requires_grad_(True)
    y = fn(u)  # type: ignore[operator]
    (dy,) = torch.autograd.grad(y.sum(), u)
    m, se = _mc_mean((sw2 * y.detach() ** 2 + sb2).numpy())
    assert abs(m - mf.q_star) <= 6 * se, (m, mf.q_star, se)  # q* is a fixed point
    m, se = _mc_mean((sw2 * dy**2).numpy())
    assert abs(m - mf.chi1) <= 6 * se, (m, mf.chi1, se)
    # correlation map at c = 0.5
    z2 = torch.randn(400_000, generator=gen, dtype=torch.float64)
    c = 0.5
    u2 = math.sqrt(mf.q_star) * (c * z + math.sqrt(1 - c * c) * z2)
    prod = (sw2 * fn(u.detach()) * fn(u2) + sb2) / mf.q_star  # type: ignore[operator]
    m, se = _mc_mean(prod.numpy())
    assert abs(m - T.correlation_map(c, act, sw2, sb2)) <= 6 * se  # type: ignore[arg-type]


def test_depth_scale_formulas() -> None:
    mf = T.mean_field("tanh", 1.2, 0.05)
    assert mf.phase == "ordered" and mf.c_star == 1.0 and mf.chi_c == mf.chi1
    assert math.isclose(mf.xi_c, -1.0 / math.log(mf.chi1))
    # ξ_q: slope of the length map at q* (central difference)
    h = 1e-5
    slope = (T.length_map(mf.q_star + h, "tanh", 1.2, 0.05)
             - T.length_map(mf.q_star - h, "tanh", 1.2, 0.05)) / (2 * h)
    assert math.isclose(mf.xi_q, -1.0 / math.log(slope), rel_tol=1e-6)


def test_chaotic_fixed_point() -> None:
    mf = T.mean_field("tanh", 4.0, 0.0)
    assert mf.phase == "chaotic" and abs(mf.c_star) < 1e-9  # odd φ, no bias
    mf = T.mean_field("tanh", 2.5, 0.1)
    assert 0.0 < mf.c_star < 1.0 and mf.chi_c < 1.0 < mf.chi1  # c* stable, c = 1 not
    assert abs(T.correlation_map(mf.c_star, "tanh", 2.5, 0.1) - mf.c_star) < 1e-9
    h = 1e-5
    slope = (T.correlation_map(mf.c_star + h, "tanh", 2.5, 0.1)
             - T.correlation_map(mf.c_star - h, "tanh", 2.5, 0.1)) / (2 * h)
    assert math.isclose(slope, mf.chi_c, rel_tol=1e-5)
    assert math.isclose(mf.xi_c, -1.0 / math.log(mf.chi_c))


def test_fixed_point_edges() -> None:
    assert T.q_star("tanh", 0.8, 0.0) == 0.0  # ordered, no bias: the signal dies
    assert T.mean_field("tanh", 0.8, 0.0).chi1 == pytest.approx(0.8)
    assert T.q_star("relu", 2.0, 0.0, q0=3.0) == 3.0  # marginal: every q is fixed
    assert T.q_star("linear", 0.5, 0.5) == 1.0


def test_results_are_json_data() -> None:
    mf = T.mean_field("relu", 2.0, 0.0)
    assert T.MeanField.from_json(mf.to_json()) == mf
    line = T.critical_line("tanh", [0.0, 0.1])
    assert T.CriticalLine.from_json(line.to_json()) == line
    d = T.phase_diagram("erf", [0.5, 2.0], [0.0, 0.1])
    assert T.PhaseDiagram.from_dict(d.to_dict()) == d
    assert "inf" in mf.to_json()


def test_phase_diagram_plot() -> None:
    pytest.importorskip("matplotlib")
    d = T.phase_diagram("tanh", list(np.linspace(0.5, 3.0, 6)), [0.0, 0.1, 0.2])
    assert d.chi1[1][0] < 1.0 < d.chi1[1][-1]
    fig = T.plot_phase_diagram(d)
    assert type(fig).__name__ == "Figure" and fig.axes


def test_errors() -> None:
    with pytest.raises(ValueError, match="sigma_w2"):
        T.mean_field("tanh", 0.0)
    with pytest.raises(ValueError, match="sigma_b2"):
        T.mean_field("tanh", 1.0, -0.1)
    with pytest.raises(ValueError, match="did you mean 'tanh'"):
        T.mean_field("tnah", 1.0)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        T.correlation_map(1.5, "tanh", 1.0)
    with pytest.raises(ValueError, match="no σ_w²"):
        T.critical_sigma_w2("gelu", 0.0)


# --------------------------------------------------------------------------------------------
# The critical scheme
# --------------------------------------------------------------------------------------------


def test_critical_scheme_is_variance_scaling_at_the_critical_sigma() -> None:
    sw2 = T.critical_sigma_w2("tanh", 0.05)
    a, b = torch.empty(300, 200), torch.empty(300, 200)
    T.critical_(a, "tanh", 0.05, generator=torch.Generator().manual_seed(3))
    initwise.variance_scaling_(b, sw2, "fan_in", "normal", generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert_variance(a, sw2 / 200, excess_kurtosis=0.0)
    bias = T.critical_(torch.empty(20000), "tanh", 0.05, generator=torch.Generator().manual_seed(4))
    assert_variance(bias, 0.05, excess_kurtosis=0.0)
    assert torch.all(T.critical_(torch.ones(5), "relu", 0.0) == 0)


def test_critical_scheme_registered_and_per_rule() -> None:
    s = initwise.get_scheme("critical", activation="tanh", sigma_b2=0.05)
    assert initwise.registry.Scheme.from_config(s.to_config()) == s
    assert initwise.get_scheme("edge_of_chaos").name == "critical"
    st = s.describe((64, 32))
    assert math.isclose(st.std or 0.0, math.sqrt(T.critical_sigma_w2("tanh", 0.05) / 32))
    assert math.isclose(s.describe((64,)).std or 0.0, math.sqrt(0.05))
    with pytest.raises(ValueError, match="did you mean 'tanh'"):
        initwise.get_scheme("critical", activation="tahn")
    with pytest.raises(ValueError, match="sigma_b2"):
        initwise.get_scheme("critical", sigma_b2=-1.0)
    with pytest.raises(ValueError, match="no σ_w²"):  # GELU has no edge of chaos without bias
        initwise.get_scheme("critical", activation="gelu")
    auto = initwise.get_scheme("critical", activation="auto")  # a placeholder for a planner
    with pytest.raises(ValueError, match="planner"):
        auto(torch.empty(4, 4))

    torch.manual_seed(0)
    net = nn.Sequential(*[m for _ in range(3) for m in (nn.Linear(256, 256), nn.Tanh())])
    pol = initwise.Policy([initwise.Rule("critical", {"activation": "tanh", "sigma_b2": 0.05},
                                         role=("weight", "bias", "classifier"))])
    plan = initwise.init(net, policy=pol, example_inputs=torch.randn(4, 256), seed=0)
    assert {e.scheme for e in plan.entries} == {"critical"}
    assert_variance(net[2].weight, T.critical_sigma_w2("tanh", 0.05) / 256, excess_kurtosis=0.0)
    assert_variance(torch.cat([net[i].bias for i in (0, 2, 4)]), 0.05, excess_kurtosis=0.0)


# --------------------------------------------------------------------------------------------
# Simulation of wide random networks (slow tier)
# --------------------------------------------------------------------------------------------


def _propagate(h: torch.Tensor, sw2: float, sb2: float, layers: int, gen: torch.Generator
               ) -> list[torch.Tensor]:
    """Pre-activations of ``layers`` random tanh layers (width of ``h``), float64."""
    n = h.shape[-1]
    out = []
    for _ in range(layers):
        w = torch.randn(n, n, generator=gen, dtype=torch.float64) * math.sqrt(sw2 / n)
        b = torch.randn(n, generator=gen, dtype=torch.float64) * math.sqrt(sb2)
        h = torch.tanh(h) @ w.T + b
        out.append(h)
    return out


def _fit_depth(v: np.ndarray, lo: int, hi: int) -> float:
    layers = np.arange(v.size)
    return float(-1.0 / np.polyfit(layers[lo:hi], np.log(v[lo:hi]), 1)[0])


@pytest.mark.slow
def test_simulated_correlation_depth_scale_ordered_phase() -> None:
    """1 - c^l of two orthogonal inputs decays as exp(-l/ξ_c): measured within 20 %."""
    torch.set_num_threads(1)
    sw2, sb2, n = 1.2, 0.05, 1000
    mf = T.mean_field("tanh", sw2, sb2)
    gen = torch.Generator().manual_seed(0)
    curves = []
    for _ in range(3):
        x = torch.randn(2, n, generator=gen, dtype=torch.float64) * 3.0
        hs = _propagate(x, sw2, sb2, 30, gen)
        curves.append([1.0 - float(torch.nn.functional.cosine_similarity(h[0], h[1], dim=0))
                       for h in hs])
    xi = _fit_depth(np.mean(curves, axis=0), 8, 30)
    assert abs(xi / mf.xi_c - 1.0) < 0.2, (xi, mf.xi_c)


@pytest.mark.slow
def test_simulated_length_depth_scale_and_fixed_point() -> None:
    """q^l of a wide net settles at q*; |q^l - q*| decays as exp(-l/ξ_q), within 20 %."""
    torch.set_num_threads(1)
    sw2, sb2, n = 1.2, 0.05, 1000
    mf = T.mean_field("tanh", sw2, sb2)
    gen = torch.Generator().manual_seed(1)
    diffs, finals = [], []
    nets = 4
    for _ in range(nets):
        # the same inputs at two scales through the same net: their difference cancels most
        # of the finite-width noise
        h = torch.randn(32, n, generator=gen, dtype=torch.float64) * math.sqrt(mf.q_star / sw2)
        hs = _propagate(torch.stack([h * math.sqrt(3.0), h]), sw2, sb2, 12, gen)
        q = np.array([[float(x[g].pow(2).mean()) for g in (0, 1)] for x in hs])
        diffs.append(q[:, 0] - q[:, 1])
        finals.append(q[-1, 1])
    # q^l of one net fluctuates by a relative sqrt(2/n) (its n units): 6 standard errors
    assert abs(np.mean(finals) / mf.q_star - 1.0) < 6 * math.sqrt(2.0 / (n * nets))
    xi = _fit_depth(np.mean(diffs, axis=0), 1, 7)
    assert abs(xi / mf.xi_q - 1.0) < 0.2, (xi, mf.xi_q)
