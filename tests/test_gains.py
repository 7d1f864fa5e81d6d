"""Tests for initwise.gains: exact gains against independent references (scipy quad, Monte Carlo)."""

from __future__ import annotations

import copy
import functools
import itertools
import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, special
from torch import nn

import initwise
from initwise import gains
from initwise.gains import (
    ACTIVATIONS,
    activation_name,
    calculate_gain,
    gain,
    mean_and_second_moment,
    second_moment,
)

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
C_TANH = math.sqrt(2.0 / math.pi)

# Independent scalar reference implementations (numpy/scipy, not torch): name -> (f, kinks).
REFERENCE: dict[str, tuple[Callable[[float], float], list[float]]] = {
    "linear": (lambda x: x, []),
    "relu": (lambda x: max(x, 0.0), [0.0]),
    "leaky_relu": (lambda x: x if x > 0 else 0.01 * x, [0.0]),
    "prelu": (lambda x: x if x > 0 else 0.25 * x, [0.0]),
    "relu6": (lambda x: min(max(x, 0.0), 6.0), [0.0, 6.0]),
    "relu2": (lambda x: max(x, 0.0) ** 2, [0.0]),
    "elu": (lambda x: x if x > 0 else math.expm1(x), [0.0]),
    "celu": (lambda x: x if x > 0 else math.expm1(x), [0.0]),
    "selu": (lambda x: SELU_SCALE * (x if x > 0 else SELU_ALPHA * math.expm1(x)), [0.0]),
    "gelu": (lambda x: x * special.ndtr(x), []),
    "gelu_tanh": (lambda x: 0.5 * x * (1 + math.tanh(C_TANH * (x + 0.044715 * x**3))), []),
    "quick_gelu": (lambda x: x * special.expit(1.702 * x), []),
    "silu": (lambda x: x * special.expit(x), []),
    "mish": (lambda x: x * math.tanh(np.logaddexp(0.0, x)), []),
    "softplus": (lambda x: float(np.logaddexp(0.0, x)), []),
    "hardswish": (lambda x: x * min(max(x + 3.0, 0.0), 6.0) / 6.0, [-3.0, 3.0]),
    "hardsigmoid": (lambda x: min(max(x + 3.0, 0.0), 6.0) / 6.0, [-3.0, 3.0]),
    "hardtanh": (lambda x: min(max(x, -1.0), 1.0), [-1.0, 1.0]),
    "tanh": (math.tanh, []),
    "sigmoid": (special.expit, []),
    "logsigmoid": (lambda x: float(special.log_expit(x)), []),
    "softsign": (lambda x: x / (1.0 + abs(x)), [0.0]),
}

# Torch implementations written here (for the Monte-Carlo check), not taken from the library.
TORCH_FN: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "linear": lambda x: x,
    "relu": torch.relu,
    "leaky_relu": lambda x: torch.where(x > 0, x, 0.01 * x),
    "prelu": lambda x: torch.where(x > 0, x, 0.25 * x),
    "relu6": lambda x: x.clamp(0, 6),
    "relu2": lambda x: x.clamp(min=0) ** 2,
    "elu": lambda x: torch.where(x > 0, x, torch.expm1(x)),
    "celu": lambda x: torch.where(x > 0, x, torch.expm1(x)),
    "selu": lambda x: SELU_SCALE * torch.where(x > 0, x, SELU_ALPHA * torch.expm1(x)),
    "gelu": lambda x: x * torch.special.ndtr(x),
    "gelu_tanh": lambda x: 0.5 * x * (1 + torch.tanh(C_TANH * (x + 0.044715 * x**3))),
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "silu": lambda x: x * torch.sigmoid(x),
    "mish": lambda x: x * torch.tanh(torch.logaddexp(torch.zeros_like(x), x)),
    "softplus": lambda x: torch.logaddexp(torch.zeros_like(x), x),
    "hardswish": lambda x: x * (x + 3).clamp(0, 6) / 6,
    "hardsigmoid": lambda x: (x + 3).clamp(0, 6) / 6,
    "hardtanh": lambda x: x.clamp(-1, 1),
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "logsigmoid": lambda x: -torch.logaddexp(torch.zeros_like(x), -x),
    "softsign": lambda x: x / (1 + x.abs()),
}


def quad_moments(f: Callable[[float], float], kinks: list[float]) -> tuple[float, float]:
    """(E[f(z)], E[f(z)^2]) with scipy.integrate.quad, split at the kinks."""
    edges = sorted({-40.0, -10.0, -4.0, -1.0, 0.0, 1.0, 4.0, 10.0, 40.0, *kinks})
    m1 = m2 = 0.0
    for a, b in itertools.pairwise(edges):
        kw: dict[str, Any] = {"epsabs": 0.0, "epsrel": 1e-13, "limit": 200}
        m1 += integrate.quad(lambda x: f(x) * math.exp(-0.5 * x * x), a, b, **kw)[0]
        m2 += integrate.quad(lambda x: f(x) ** 2 * math.exp(-0.5 * x * x), a, b, **kw)[0]
    c = 1.0 / math.sqrt(2.0 * math.pi)
    return m1 * c, m2 * c


@functools.lru_cache(maxsize=1)
def normal_sample() -> torch.Tensor:
    g = torch.Generator().manual_seed(20240611)
    return torch.randn(2**21, generator=g, dtype=torch.float64)


def assert_mc_second_moment(fx: torch.Tensor, m2: float, k: float = 6.0) -> None:
    """E[f^2] within k standard errors of the sample mean of f(z)^2 (SE from the sample)."""
    f2 = fx * fx
    n = f2.numel()
    est = float(f2.mean())
    se = float(f2.std()) / math.sqrt(n)
    assert abs(est - m2) <= k * se, f"MC {est:.8g} vs exact {m2:.8g}: {abs(est - m2) / se:.2f} SE"


def test_reference_tables_cover_every_activation() -> None:
    assert set(REFERENCE) == set(ACTIVATIONS) == set(TORCH_FN)
    assert len(ACTIVATIONS) == len(set(ACTIVATIONS))
    assert initwise.gain is gain and initwise.calculate_gain is calculate_gain


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_matches_scipy_quad(name: str) -> None:
    f, kinks = REFERENCE[name]
    ref1, ref2 = quad_moments(f, kinks)
    m1, m2 = mean_and_second_moment(name)
    assert m2 == pytest.approx(ref2, rel=1e-9, abs=0)
    assert m1 == pytest.approx(ref1, rel=1e-9, abs=1e-12)
    assert gain(name) == pytest.approx(1.0 / math.sqrt(ref2), rel=1e-9, abs=0)
    assert second_moment(name) == m2


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_matches_monte_carlo(name: str) -> None:
    z = normal_sample()
    assert_mc_second_moment(TORCH_FN[name](z), second_moment(name))


@pytest.mark.parametrize(
    ("name", "param", "fn"),
    [
        ("leaky_relu", 0.3, lambda x: torch.where(x > 0, x, 0.3 * x)),
        ("elu", 0.5, lambda x: torch.where(x > 0, x, 0.5 * torch.expm1(x))),
        ("elu", 25.0, lambda x: torch.where(x > 0, x, 25.0 * torch.expm1(x))),
        ("celu", 0.2, lambda x: torch.where(x > 0, x, 0.2 * torch.expm1(x / 0.2))),
        ("celu", 40.0, lambda x: torch.where(x > 0, x, 40.0 * torch.expm1(x / 40.0))),
        ("softplus", 2.0, lambda x: torch.logaddexp(torch.zeros_like(x), 2 * x) / 2),
        ("hardtanh", (-0.5, 2.0), lambda x: x.clamp(-0.5, 2.0)),
    ],
)
def test_params_match_monte_carlo_and_quad(name: str, param: Any, fn: Callable[..., Any]) -> None:
    m2 = second_moment(name, param)
    assert_mc_second_moment(fn(normal_sample()), m2)
    # The generic callable path (adaptive quadrature, no known kinks) agrees tightly.
    assert second_moment(fn) == pytest.approx(m2, rel=1e-12)


def test_closed_forms_exact() -> None:
    assert abs(gain("relu") - math.sqrt(2.0)) <= 1e-15
    assert gain("linear") == 1.0 and gain(None) == 1.0 and gain("identity") == 1.0
    for a in (0.0, 0.01, 0.2, 1.0, 3.0, -0.5):
        assert gain("leaky_relu", a) == pytest.approx(math.sqrt(2 / (1 + a * a)), rel=1e-15)
    assert gain("relu2") == pytest.approx(math.sqrt(2.0 / 3.0), rel=1e-15)  # E[relu^4] = 3/2
    # SELU's constants make N(0, 1) a fixed point: E[selu(z)^2] = 1 to the constants' precision.
    assert gain("selu") == pytest.approx(1.0, abs=1e-8)
    assert mean_and_second_moment("selu")[0] == pytest.approx(0.0, abs=1e-8)
    assert second_moment("gelu") == pytest.approx(1 / 3 + 1 / (2 * math.pi * math.sqrt(3)), 1e-15)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_closed_form_agrees_with_own_quadrature(name: str) -> None:
    spec = gains._spec_from_name(name, None)
    fn, kinks = gains._spec_function(spec)
    q1, q2 = gains._quad_moments(fn, kinks)
    m1, m2 = gains._spec_moments(spec)
    assert q2 == pytest.approx(m2, rel=1e-13)
    assert q1 == pytest.approx(m1, rel=1e-12, abs=1e-14)


def test_symmetries() -> None:
    # logsigmoid(z) = -softplus(-z) and z is symmetric.
    assert gain("logsigmoid") == pytest.approx(gain("softplus"), rel=1e-13)
    assert gain("celu", 1.0) == pytest.approx(gain("elu", 1.0), rel=1e-15)


# ---- calculate_gain ------------------------------------------------------------------------

TORCH_NAMES = ["linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
               "conv_transpose3d", "sigmoid", "tanh", "relu", "leaky_relu", "selu"]  # fmt: skip


@pytest.mark.parametrize("name", TORCH_NAMES)
@pytest.mark.parametrize("param", [None, 0, 0.2, 1, 3.0, -0.5])
def test_calculate_gain_equals_torch(name: str, param: Any) -> None:
    assert calculate_gain(name, param) == torch.nn.init.calculate_gain(name, param)  # type: ignore[arg-type]


@pytest.mark.parametrize("param", [True, "0.1", torch.tensor(0.1), [0.1]])
def test_calculate_gain_rejects_like_torch(param: Any) -> None:
    with pytest.raises(ValueError, match="not a valid number"):
        torch.nn.init.calculate_gain("leaky_relu", param)
    with pytest.raises(ValueError, match="not a valid number"):
        calculate_gain("leaky_relu", param)


@pytest.mark.parametrize("name", [n for n in ACTIVATIONS if n not in TORCH_NAMES])
def test_calculate_gain_extends_torch(name: str) -> None:
    with pytest.raises(ValueError, match="Unsupported nonlinearity"):
        torch.nn.init.calculate_gain(name)  # type: ignore[arg-type]
    assert calculate_gain(name) == gain(name)


def test_calculate_gain_conventions_for_modules_and_aliases() -> None:
    assert calculate_gain(nn.Tanh()) == 5 / 3 and calculate_gain("Tanh") == 5 / 3
    assert calculate_gain(nn.SELU()) == 0.75 and calculate_gain(torch.sigmoid) == 1.0
    assert calculate_gain(nn.LeakyReLU(0.2)) == torch.nn.init.calculate_gain("leaky_relu", 0.2)
    assert calculate_gain("elu", 0.5) == gain("elu", 0.5)
    assert calculate_gain(nn.GELU()) == gain("gelu")
    assert calculate_gain(lambda x: 3 * x) == pytest.approx(1 / 3, rel=1e-14)
    # The conventions really differ from the exact gains.
    assert abs(gain("tanh") - 5 / 3) > 0.07 and abs(gain("sigmoid") - 1) > 0.8


# ---- modules, functions, callables -----------------------------------------------------------

MODULE_CASES: list[tuple[Any, str, Any]] = [
    (nn.ReLU(), "relu", None),
    (nn.GELU(), "gelu", None),
    (nn.GELU(approximate="tanh"), "gelu_tanh", None),
    (nn.LeakyReLU(0.3), "leaky_relu", 0.3),
    (nn.ELU(0.5), "elu", 0.5),
    (nn.CELU(0.7), "celu", 0.7),
    (nn.Softplus(beta=2), "softplus", 2.0),
    (nn.Hardtanh(-0.5, 2.0), "hardtanh", (-0.5, 2.0)),
    (nn.ReLU6(), "relu6", None),
    (nn.SiLU(), "silu", None),
    (nn.Mish(), "mish", None),
    (nn.Hardswish(), "hardswish", None),
    (nn.Hardsigmoid(), "hardsigmoid", None),
    (nn.SELU(), "selu", None),
    (nn.Tanh(), "tanh", None),
    (nn.Sigmoid(), "sigmoid", None),
    (nn.LogSigmoid(), "logsigmoid", None),
    (nn.Softsign(), "softsign", None),
    (nn.Identity(), "linear", None),
    (nn.PReLU(), "prelu", None),
    (F.silu, "silu", None),
    (torch.relu, "relu", None),
    (F.gelu, "gelu", None),
    (torch.tanh, "tanh", None),
    (F.leaky_relu, "leaky_relu", None),
]


def _case_id(v: Any) -> str:
    """Readable ids without memory addresses (functions by module and name)."""
    if callable(v) and not isinstance(v, (nn.Module, type)):
        return f"{getattr(v, '__module__', None) or ''}.{getattr(v, '__name__', type(v).__name__)}"
    return repr(v)[:30]


@pytest.mark.parametrize(("obj", "name", "param"), MODULE_CASES, ids=_case_id)
def test_modules_and_functions_match_names(obj: Any, name: str, param: Any) -> None:
    assert activation_name(obj) == name
    assert gain(obj) == gain(name, param)
    # Evaluating the object as an opaque callable agrees with the named computation.
    f = copy.deepcopy(obj).double() if isinstance(obj, nn.Module) else obj
    assert gain(lambda x: f(x)) == pytest.approx(gain(name, param), rel=1e-12)


def test_user_callables() -> None:
    # E[sin(z)^2] = (1 - exp(-2)) / 2 exactly.
    assert second_moment(lambda x: torch.sin(x)) == pytest.approx((1 - math.exp(-2)) / 2, 1e-13)
    assert gain(functools.partial(F.gelu, approximate="tanh")) == pytest.approx(
        gain("gelu_tanh"), rel=1e-13
    )
    assert gain(lambda x: torch.ones_like(x) * 2) == pytest.approx(0.5, rel=1e-14)
    assert activation_name(lambda x: x) is None
    # A step at an off-grid point: P(z > 0.3), found by adaptive bisection.
    assert second_moment(lambda x: (x > 0.3).double()) == pytest.approx(
        special.ndtr(-0.3), rel=1e-12
    )


def test_prelu_uses_current_weights() -> None:
    m = nn.PReLU(3)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([0.1, 0.5, -2.0]))
    rms = math.sqrt((0.01 + 0.25 + 4.0) / 3)
    assert gain(m) == pytest.approx(math.sqrt(2 / (1 + rms**2)), rel=1e-6)
    one = nn.PReLU(init=0.6)
    assert gain(one) == pytest.approx(math.sqrt(2 / (1 + 0.6**2)), rel=1e-6)  # float32 weight


def test_module_classes_and_float32_modules() -> None:
    assert gain(nn.ReLU) == gain("relu") and activation_name(nn.GELU) == "gelu"

    class MyPReLU(nn.PReLU):  # subclass: evaluated as a callable; F.prelu rejects float64 input
        pass

    assert gain(MyPReLU()) == pytest.approx(gain("prelu"), rel=1e-12)
    assert activation_name(MyPReLU()) is None


def test_huggingface_activation_modules() -> None:
    act = pytest.importorskip("transformers.activations")
    cases = {
        "NewGELUActivation": "gelu_tanh", "GELUActivation": "gelu",
        "FastGELUActivation": "gelu_tanh", "QuickGELUActivation": "quick_gelu",
        "SiLUActivation": "silu", "ReLUSquaredActivation": "relu2", "MishActivation": "mish",
    }  # fmt: skip
    for cls, name in cases.items():
        if not hasattr(act, cls):
            continue
        m = getattr(act, cls)()
        assert activation_name(m) == name
        # FastGELU rounds sqrt(2/pi) to 10 digits.
        assert gain(m) == pytest.approx(gain(name), rel=1e-9), cls


def test_aliases() -> None:
    for alias, canon in [("swish", "silu"), ("gelu_new", "gelu_tanh"),
                         ("gelu_pytorch_tanh", "gelu_tanh"), ("LeakyReLU", "leaky_relu"),
                         ("none", "linear"), ("conv2d", "linear"), ("Hard-Swish", "hardswish")]:  # fmt: skip
        assert activation_name(alias) == canon
        assert gain(alias) == gain(canon)
    assert activation_name("gelux") is None


# ---- properties and caching --------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(st.floats(0.0, 10.0))
def test_leaky_relu_formula(a: float) -> None:
    expected = math.sqrt(2.0 / (1.0 + a * a))
    assert gain("leaky_relu", a) == pytest.approx(expected, rel=1e-14)
    assert gain(lambda x: F.leaky_relu(x, a)) == pytest.approx(expected, rel=1e-12)


@settings(max_examples=30, deadline=None)
@given(st.floats(-100.0, 100.0).filter(lambda c: abs(c) > 1e-3), st.booleans())
def test_scaling(c: float, relu: bool) -> None:
    if relu:
        assert gain(lambda x: c * torch.relu(x)) == pytest.approx(math.sqrt(2) / abs(c), 1e-12)
    else:
        assert gain(lambda x: c * x) == pytest.approx(1 / abs(c), rel=1e-12)


@settings(max_examples=30, deadline=None)
@given(st.floats(-3.0, 3.0), st.floats(0.01, 4.0))
def test_hardtanh_closed_form_vs_callable(lo: float, width: float) -> None:
    hi = lo + width
    m1, m2 = mean_and_second_moment("hardtanh", (lo, hi))
    q1, q2 = mean_and_second_moment(lambda x: x.clamp(lo, hi))
    assert q2 == pytest.approx(m2, rel=1e-12)
    assert q1 == pytest.approx(m1, rel=1e-11, abs=1e-13)


@settings(max_examples=30, deadline=None)
@given(st.floats(0.05, 10.0), st.booleans())
def test_elu_celu_closed_form_vs_quadrature(alpha: float, celu: bool) -> None:
    name = "celu" if celu else "elu"
    rate = 1 / alpha if celu else 1.0
    m1, m2 = mean_and_second_moment(name, alpha)
    q1, q2 = mean_and_second_moment(lambda x: torch.where(x > 0, x, alpha * torch.expm1(rate * x)))
    assert q2 == pytest.approx(m2, rel=1e-12)
    assert q1 == pytest.approx(m1, rel=1e-11, abs=1e-13)


def test_named_results_are_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = gains._quad_moments

    def counting(*args: Any) -> tuple[float, float]:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(gains, "_quad_moments", counting)
    gains._spec_moments.cache_clear()
    first = gain("silu")
    assert gain("silu") == first and gain("swish") == first and gain(nn.SiLU()) == first
    assert len(calls) == 1
    info = gains._spec_moments.cache_info()
    assert info.misses == 1 and info.hits == 3


def test_user_callables_are_evaluated_each_time() -> None:
    calls: list[int] = []

    def f(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.numel())
        return torch.tanh(x)

    gain(f)
    n_first = len(calls)
    assert n_first == 2  # smooth: base panels + one bisection check, each one vectorized call
    gain(f)
    assert len(calls) == 2 * n_first


def test_docstring_table_matches_code() -> None:
    doc = gains.__doc__ or ""
    rows = re.findall(r"^(\w+)\s+([0-9.]+)\s+([0-9.]+)$", doc, flags=re.MULTILINE)
    assert [r[0] for r in rows] == list(ACTIVATIONS)
    for name, g, cg in rows:
        assert abs(float(g) - gain(name)) <= 5.1e-11, name
        assert abs(float(cg) - calculate_gain(name)) <= 5.1e-11, name


# ---- bad input ----------------------------------------------------------------------------------


def test_unknown_name_suggests() -> None:
    with pytest.raises(ValueError, match=r"unknown nonlinearity 'gelux'; did you mean 'gelu'\?"):
        gain("gelux")
    with pytest.raises(ValueError, match=r"Valid options: .*silu"):
        calculate_gain("swishy")


@pytest.mark.parametrize(
    ("name", "param", "match"),
    [
        ("leaky_relu", "a", "must be a real number"),
        ("leaky_relu", True, "must be a real number"),
        ("leaky_relu", float("nan"), "must be finite"),
        ("elu", -1.0, ">= 0"),
        ("celu", 0.0, "> 0"),
        ("softplus", 0.0, "> 0"),
        ("hardtanh", (1.0, -1.0), "min_val < max_val"),
        ("hardtanh", 0.5, "pair"),
        ("relu", 0.3, "takes no param"),
        ("gelu", "tanh", "takes no param"),
    ],
)
def test_bad_params(name: str, param: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        gain(name, param)


def test_bad_callables() -> None:
    with pytest.raises(ValueError, match="almost everywhere"):
        gain(lambda x: torch.zeros_like(x))
    with pytest.raises(ValueError, match="could not evaluate"):
        gain(lambda x: x.reshape(3, -1, 7))
    with pytest.raises(ValueError, match="could not evaluate"):
        gain(lambda x: x[:5])
    with pytest.raises(ValueError, match="non-finite"):
        gain(torch.log)
    with pytest.raises(ValueError, match="does not converge"):
        gain(lambda x: torch.exp(x * x / 4))
    with pytest.raises(ValueError, match="param is only for named"):
        gain(nn.ReLU(), 0.1)
    with pytest.raises(TypeError, match="activation must be"):
        gain(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cannot instantiate"):
        gain(nn.Linear)
