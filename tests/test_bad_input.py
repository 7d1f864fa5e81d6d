"""Every bad input to the library is a clear error, and nothing was changed (issue 15).

Each case asserts the message (a regex that names the parameter or what to do) and that the
tensor, model or config it was given is bit-identical afterwards. Ids are readable; none
holds a memory address. Cases that need the lead's wiring of the shared validators into
``lsuv`` / ``audit`` / ``init`` are grouped at the end as strict xfails.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.parameter import is_lazy

import initwise
from initwise import Policy, Rule
from initwise import numpy as inp
from initwise._checks import (
    BadValueError,
    NotATensorError,
    UnsupportedDtypeError,
    check_batched_inputs,
    check_materialized,
    check_seed,
)
from initwise.registry import Scheme, register_scheme


@dataclass(frozen=True)
class Case:
    make: Callable[[], Any]  # the object the call gets (checked bit-identical afterwards)
    call: Callable[[Any], Any]
    exc: type[BaseException] | tuple[type[BaseException], ...]
    match: str


def _t(*shape: int, dtype: torch.dtype = torch.float32) -> Callable[[], torch.Tensor]:
    def make() -> torch.Tensor:
        g = torch.Generator().manual_seed(7)
        x = torch.randn(shape, generator=g, dtype=torch.float64) * 3
        if dtype.is_complex:
            return torch.complex(x, -x).to(dtype)
        return x.to(dtype)

    return make


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def _meta_model() -> nn.Module:
    with torch.device("meta"):
        return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def _policy_dict(**changes: Any) -> Callable[[], dict[str, Any]]:
    def make() -> dict[str, Any]:
        d: dict[str, Any] = {"name": "p", "strict": False, "n_layer": None, "branches": None,
                             "rules": [{"scheme": "zeros", "role": "bias"}, {"scheme": "auto"}]}  # fmt: skip
        d.update(changes)
        return d

    return make


def _rule_dict(**changes: Any) -> Callable[[], dict[str, Any]]:
    def make() -> dict[str, Any]:
        d: dict[str, Any] = {"scheme": "normal", "params": {"mean": 0.0, "std": 0.02}, "role": "weight"}
        d.update(changes)
        return {k: v for k, v in d.items() if v is not _DROP}

    return make


_DROP = object()
_NONE = lambda: None  # noqa: E731  (a call that gets nothing to change)


def _snapshot(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj if (obj.is_meta or is_lazy(obj)) else obj.detach().clone()
    if isinstance(obj, nn.Module):
        return {k: _snapshot(v) for k, v in obj.state_dict(keep_vars=True).items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(_snapshot(v) for v in obj)
    if isinstance(obj, dict):
        return {k: _snapshot(v) for k, v in obj.items()}
    return copy.deepcopy(obj)


def _bitwise(a: torch.Tensor, b: torch.Tensor) -> bool:
    if is_lazy(a) or is_lazy(b):
        return a is b
    if a.shape != b.shape or a.dtype != b.dtype or a.device != b.device:
        return False
    if a.is_meta:
        return True
    a, b = a.detach().reshape(-1), b.detach().reshape(-1)
    if a.is_complex():
        a, b = torch.view_as_real(a), torch.view_as_real(b)
    if a.dtype == torch.bool:
        return bool(torch.equal(a, b))
    return bool(torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8)))


def _unchanged(before: Any, obj: Any) -> bool:
    if isinstance(obj, torch.Tensor):
        return _bitwise(before, obj)
    if isinstance(obj, nn.Module):
        after = obj.state_dict(keep_vars=True)
        return before.keys() == after.keys() and all(_bitwise(before[k], after[k]) for k in before)
    if isinstance(obj, (tuple, list)):
        return type(before) is type(obj) and len(before) == len(obj) and all(_unchanged(b, o) for b, o in zip(before, obj, strict=True))
    if isinstance(obj, dict):
        return before.keys() == obj.keys() and all(_unchanged(before[k], obj[k]) for k in obj)
    if isinstance(obj, np.ndarray):
        return bool(np.array_equal(before, obj))
    return bool(before == obj) or repr(before) == repr(obj)  # NaN-safe for plain values


CASES: list[Any] = []


def case(id_: str, make: Callable[[], Any], call: Callable[[Any], Any], exc: Any, match: str) -> None:
    CASES.append(pytest.param(Case(make, call, exc, match), id=id_))


# ------------------------------------------------------------------ every drop-in: not a tensor

ARGS: dict[str, tuple[tuple[int, ...], tuple[Any, ...]]] = {
    "uniform_": ((4, 5), ()), "normal_": ((4, 5), ()), "trunc_normal_": ((4, 5), ()),
    "truncated_normal_": ((4, 5), ()), "constant_": ((4, 5), (0.5,)), "zeros_": ((4, 5), ()),
    "ones_": ((4, 5), ()), "eye_": ((4, 5), ()), "dirac_": ((4, 4, 3), ()),
    "xavier_uniform_": ((4, 5), ()), "xavier_normal_": ((4, 5), ()),
    "kaiming_uniform_": ((4, 5), ()), "kaiming_normal_": ((4, 5), ()),
    "lecun_uniform_": ((4, 5), ()), "lecun_normal_": ((4, 5), ()),
    "he_truncated_normal_": ((4, 5), ()), "glorot_truncated_normal_": ((4, 5), ()),
    "lecun_truncated_normal_": ((4, 5), ()), "variance_scaling_": ((4, 5), ()),
    "orthogonal_": ((4, 5), ()), "delta_orthogonal_": ((4, 4, 3), ()), "sparse_": ((4, 5), (0.5,)),
}  # fmt: skip
RANDOM = [f for f in ARGS if f not in ("constant_", "zeros_", "ones_", "eye_", "dirac_")]


def _call(fn: str, *extra: Any, **kw: Any) -> Callable[[Any], Any]:
    return lambda t: getattr(initwise, fn)(t, *ARGS[fn][1], *extra, **kw)


for fn in ARGS:
    case(f"{fn}-given-a-list", lambda: [1.0, 2.0], _call(fn), NotATensorError, rf"^{fn}: expected a torch\.Tensor, got list")
for fn in ("normal_", "xavier_uniform_", "orthogonal_", "zeros_"):
    case(f"{fn}-given-a-numpy-array", lambda: np.ones((4, 5)), _call(fn), (TypeError, AttributeError), rf"^{fn}: expected a torch\.Tensor, got ndarray")

# ------------------------------------------------------------------ dtypes

for fn in RANDOM:
    case(f"{fn}-int64-tensor", _t(*ARGS[fn][0], dtype=torch.int64), _call(fn), UnsupportedDtypeError,
         rf"^{fn}: tensor must have a floating-point dtype .* got torch\.int64; integer and bool tensors only take zeros_")
for fn in ("normal_", "uniform_", "kaiming_normal_", "orthogonal_", "sparse_", "trunc_normal_"):
    case(f"{fn}-bool-tensor", _t(*ARGS[fn][0], dtype=torch.bool), _call(fn), NotImplementedError,
         rf"^{fn}: tensor must have a floating-point dtype .* got torch\.bool")
for fn in ("trunc_normal_", "truncated_normal_", "orthogonal_", "delta_orthogonal_"):
    case(f"{fn}-complex-tensor", _t(*ARGS[fn][0], dtype=torch.complex64), _call(fn), UnsupportedDtypeError,
         rf"^{fn}: complex tensors are not supported here, got torch\.complex64")

# ------------------------------------------------------------------ dimensions

DIMS = [
    ("eye_", (5,), r"at least 2 dimensions, got shape \(5,\)"),
    ("eye_", (2, 3, 4), r"at most 2 dimensions, got shape \(2, 3, 4\)"),
    ("dirac_", (4, 4), r"at least 3 dimensions"),
    ("dirac_", (1, 1, 1, 1, 1, 1), r"at most 5 dimensions"),
    ("sparse_", (5,), r"at least 2 dimensions"),
    ("sparse_", (2, 3, 4), r"at most 2 dimensions"),
    ("orthogonal_", (5,), r"at least 2 dimensions"),
    ("delta_orthogonal_", (4, 4), r"at least 3 dimensions"),
    ("delta_orthogonal_", (2, 2, 1, 1, 1, 1), r"at most 5 dimensions"),
    ("xavier_uniform_", (5,), r"at least 2 dimensions"),
    ("xavier_normal_", (), r"at least 2 dimensions"),
    ("kaiming_uniform_", (5,), r"at least 2 dimensions"),
    ("kaiming_normal_", (), r"at least 2 dimensions"),
    ("lecun_normal_", (5,), r"at least 2 dimensions"),
    ("he_truncated_normal_", (5,), r"at least 2 dimensions"),
    ("variance_scaling_", (5,), r"at least 2 dimensions"),
]
for fn, shape, msg in DIMS:
    case(f"{fn}-{len(shape)}d-tensor", _t(*shape), _call(fn), ValueError, rf"^{fn}: needs a tensor with {msg}")

# ------------------------------------------------------------------ generators

GEN_MSG = r"generator must be a torch\.Generator, an initwise\.random\.Key or None, got "
for fn in ("normal_", "uniform_", "trunc_normal_", "xavier_uniform_", "kaiming_normal_", "orthogonal_", "sparse_"):
    case(f"{fn}-generator-int", _t(*ARGS[fn][0]), _call(fn, generator=42), TypeError, GEN_MSG + "int")
for fn in ("normal_", "variance_scaling_", "delta_orthogonal_"):
    case(f"{fn}-generator-str", _t(*ARGS[fn][0]), _call(fn, generator="seed"), TypeError, GEN_MSG + "str")
    case(f"{fn}-generator-numpy", _t(*ARGS[fn][0]), _call(fn, generator=np.random.default_rng(0)), TypeError, GEN_MSG + "Generator")

# ------------------------------------------------------------------ parameter values, per scheme

T = _t(4, 5)
V = [
    ("uniform_-a-greater-than-b", lambda t: initwise.uniform_(t, 2.0, 1.0), BadValueError, r"^uniform_: need finite a <= b, got a=2\.0, b=1\.0"),
    ("uniform_-b-inf", lambda t: initwise.uniform_(t, 0.0, math.inf), RuntimeError, r"^uniform_: need finite a <= b"),
    ("uniform_-a-nan", lambda t: initwise.uniform_(t, math.nan, 1.0), ValueError, r"^uniform_: need finite a <= b, got a=nan"),
    ("uniform_-a-str", lambda t: initwise.uniform_(t, "0", 1.0), TypeError, r"^uniform_: a must be a real number, got '0' \(str\)"),
    ("uniform_-b-none", lambda t: initwise.uniform_(t, 0.0, None), TypeError, r"^uniform_: b must be a real number, got None"),
    ("uniform_-a-bool", lambda t: initwise.uniform_(t, True, 2.0), TypeError, r"^uniform_: a must be a real number, got True \(bool\)"),
    ("normal_-std-negative", lambda t: initwise.normal_(t, 0.0, -1.0), RuntimeError, r"^normal_: std must be finite and >= 0, got -1\.0"),
    ("normal_-std-nan", lambda t: initwise.normal_(t, 0.0, math.nan), BadValueError, r"^normal_: std must be finite and >= 0, got nan"),
    ("normal_-std-inf", lambda t: initwise.normal_(t, 0.0, math.inf), ValueError, r"^normal_: std must be finite"),
    ("normal_-std-str", lambda t: initwise.normal_(t, 0.0, "0.02"), TypeError, r"^normal_: std must be a real number, got '0\.02'"),
    ("normal_-std-true", lambda t: initwise.normal_(t, 0.0, True), TypeError, r"^normal_: std must be a real number, got True \(bool\)"),
    ("normal_-mean-nan", lambda t: initwise.normal_(t, math.nan), ValueError, r"^normal_: mean must be finite, got nan"),
    ("normal_-mean-inf", lambda t: initwise.normal_(t, -math.inf), ValueError, r"^normal_: mean must be finite, got -inf"),
    ("normal_-mean-str", lambda t: initwise.normal_(t, "0"), TypeError, r"^normal_: mean must be a real number, got '0'"),
    ("trunc_normal_-mean-nan", lambda t: initwise.trunc_normal_(t, math.nan), ValueError, r"^trunc_normal_: mean must be finite, got nan"),
    ("trunc_normal_-mean-inf", lambda t: initwise.trunc_normal_(t, math.inf), ValueError, r"^trunc_normal_: mean must be finite, got inf"),
    ("trunc_normal_-std-zero", lambda t: initwise.trunc_normal_(t, 0.0, 0.0), ZeroDivisionError, r"^trunc_normal_: std must be finite and > 0, got 0\.0"),
    ("trunc_normal_-std-negative", lambda t: initwise.trunc_normal_(t, 0.0, -1.0), ValueError, r"^trunc_normal_: std must be finite and > 0, got -1\.0"),
    ("trunc_normal_-std-nan", lambda t: initwise.trunc_normal_(t, 0.0, math.nan), ValueError, r"^trunc_normal_: std must be finite and > 0, got nan"),
    ("trunc_normal_-a-greater-than-b", lambda t: initwise.trunc_normal_(t, 0.0, 1.0, 1.0, -1.0), RuntimeError, r"^trunc_normal_: need a <= b, got a=1\.0, b=-1\.0"),
    ("trunc_normal_-a-nan", lambda t: initwise.trunc_normal_(t, 0.0, 1.0, math.nan, 1.0), ValueError, r"^trunc_normal_: bounds must not be NaN"),
    ("trunc_normal_-a-equals-b-inf", lambda t: initwise.trunc_normal_(t, 0.0, 1.0, math.inf, math.inf), ValueError, r"^trunc_normal_: a == b must be finite"),
    ("trunc_normal_-b-str", lambda t: initwise.trunc_normal_(t, 0.0, 1.0, -2.0, "2"), TypeError, r"^trunc_normal_: b must be a real number, got '2'"),
    ("truncated_normal_-a-equals-b", lambda t: initwise.truncated_normal_(t, 0.0, 1.0, 1.0, 1.0), ValueError, r"^truncated_normal_: need a < b \(in standard deviations\), got a=1\.0, b=1\.0"),
    ("truncated_normal_-std-zero", lambda t: initwise.truncated_normal_(t, 0.0, 0.0), ValueError, r"^truncated_normal_: std must be finite and > 0, got 0\.0"),
    ("truncated_normal_-mean-nan", lambda t: initwise.truncated_normal_(t, math.nan), ValueError, r"^truncated_normal_: mean must be finite"),
    ("truncated_normal_-far-tail", lambda t: initwise.truncated_normal_(t, 0.0, 1.0, 40.0, 41.0), ValueError, r"zero probability mass"),
    ("constant_-val-str", lambda t: initwise.constant_(t, "x"), TypeError, r"^constant_: val must be a number, got 'x' \(str\)"),
    ("constant_-val-none", lambda t: initwise.constant_(t, None), TypeError, r"^constant_: val must be a number, got None"),
    ("constant_-val-list", lambda t: initwise.constant_(t, [1.0]), TypeError, r"^constant_: val must be a number, got \[1\.0\] \(list\)"),
    ("constant_-val-2-element-tensor", lambda t: initwise.constant_(t, torch.ones(2)), ValueError, r"^constant_: val must be a number or a one-element tensor, got shape \(2,\)"),
    ("constant_-complex-val-real-tensor", lambda t: initwise.constant_(t, 1 + 2j), RuntimeError, r"^constant_: a complex val \(\(1\+2j\)\) needs a complex tensor, got torch\.float32"),
    ("xavier_uniform_-gain-negative", lambda t: initwise.xavier_uniform_(t, -1.0), RuntimeError, r"^xavier_uniform_: gain must be finite and >= 0, got -1\.0"),
    ("xavier_uniform_-gain-nan", lambda t: initwise.xavier_uniform_(t, math.nan), ValueError, r"^xavier_uniform_: gain must be finite"),
    ("xavier_normal_-gain-inf", lambda t: initwise.xavier_normal_(t, math.inf), ValueError, r"^xavier_normal_: gain must be finite"),
    ("xavier_normal_-gain-str", lambda t: initwise.xavier_normal_(t, "1"), TypeError, r"^xavier_normal_: gain must be a real number, got '1'"),
    ("xavier_uniform_-fans-negative", lambda t: initwise.xavier_uniform_(t, fans=(-1.0, 4.0)), ValueError, r"^xavier_uniform_: fans\.fan_in must be finite and > 0"),
    ("kaiming_normal_-mode-fan_avg", lambda t: initwise.kaiming_normal_(t, mode="fan_avg"), ValueError, r"unknown mode 'fan_avg'.*Valid options: fan_in, fan_out"),
    ("kaiming_uniform_-mode-typo", lambda t: initwise.kaiming_uniform_(t, mode="fanin"), ValueError, r"unknown mode 'fanin'; did you mean 'fan_in'\?"),
    ("kaiming_normal_-nonlinearity-typo", lambda t: initwise.kaiming_normal_(t, nonlinearity="reul"), ValueError, r"unknown nonlinearity 'reul'; did you mean 'relu'\?"),
    ("kaiming_normal_-nonlinearity-int", lambda t: initwise.kaiming_normal_(t, nonlinearity=3), TypeError, r"activation must be a name, None, an nn\.Module or a callable"),
    ("kaiming_uniform_-a-str", lambda t: initwise.kaiming_uniform_(t, a="x"), ValueError, r"^kaiming_uniform_: a \(the negative slope of leaky_relu/prelu\) must be a real number, got 'x' \(str\)"),
    ("kaiming_normal_-a-with-gelu", lambda t: initwise.kaiming_normal_(t, a=0.5, nonlinearity="gelu"), ValueError, r"^kaiming_normal_: a=0\.5 is the negative slope of leaky_relu/prelu, but nonlinearity 'gelu' takes no slope"),
    ("kaiming_uniform_-a-with-elu", lambda t: initwise.kaiming_uniform_(t, a=1.0, nonlinearity="elu"), ValueError, r"^kaiming_uniform_: a=1\.0 .* gain=initwise\.gain\('elu', param\)"),
    ("kaiming_normal_-a-with-module", lambda t: initwise.kaiming_normal_(t, a=0.1, nonlinearity=nn.GELU()), ValueError, r"^kaiming_normal_: a=0\.1 is only for named nonlinearities"),
    ("kaiming_normal_-a-bool-extra-name", lambda t: initwise.kaiming_normal_(t, a=True, nonlinearity="silu"), ValueError, r"^kaiming_normal_: a \(the negative slope of leaky_relu/prelu\) must be a real number, got True"),
    ("kaiming_normal_-gain-zero", lambda t: initwise.kaiming_normal_(t, gain=0.0), ValueError, r"^kaiming_normal_: gain must be finite and > 0, got 0\.0"),
    ("kaiming_uniform_-gain-str", lambda t: initwise.kaiming_uniform_(t, gain="2"), TypeError, r"^kaiming_uniform_: gain must be a real number"),
    ("variance_scaling_-scale-zero", lambda t: initwise.variance_scaling_(t, 0.0), ValueError, r"^variance_scaling_: scale must be finite and > 0, got 0\.0"),
    ("variance_scaling_-scale-negative", lambda t: initwise.variance_scaling_(t, -2.0), ValueError, r"^variance_scaling_: scale must be finite and > 0"),
    ("variance_scaling_-scale-nan", lambda t: initwise.variance_scaling_(t, math.nan), ValueError, r"^variance_scaling_: scale must be finite"),
    ("variance_scaling_-scale-str", lambda t: initwise.variance_scaling_(t, "2"), TypeError, r"^variance_scaling_: scale must be a real number, got '2'"),
    ("variance_scaling_-scale-true", lambda t: initwise.variance_scaling_(t, True), TypeError, r"^variance_scaling_: scale must be a real number, got True"),
    ("variance_scaling_-mode-typo", lambda t: initwise.variance_scaling_(t, 1.0, "fan_inn"), ValueError, r"unknown mode 'fan_inn'; did you mean 'fan_in'\?.*fan_geo_avg"),
    ("variance_scaling_-distribution-typo", lambda t: initwise.variance_scaling_(t, 1.0, "fan_in", "truncnormal"), ValueError, r"unknown distribution 'truncnormal'.*truncated_normal"),
    ("variance_scaling_-fans-triple", lambda t: initwise.variance_scaling_(t, fans=(1.0, 2.0, 3.0)), TypeError, r"^variance_scaling_: fans must be initwise\.Fans\(fan_in, fan_out\) or a pair"),
    ("variance_scaling_-fans-str", lambda t: initwise.variance_scaling_(t, fans="fan_in"), TypeError, r"^variance_scaling_: fans must be initwise\.Fans"),
    ("variance_scaling_-fans-nan", lambda t: initwise.variance_scaling_(t, fans=(4.0, math.nan)), ValueError, r"^variance_scaling_: fans\.fan_out must be finite and > 0"),
    ("variance_scaling_-fans-and-axes", lambda t: initwise.variance_scaling_(t, fans=(4.0, 5.0), in_axis=0), ValueError, r"^variance_scaling_: pass either fans= or in_axis/out_axis/batch_axis, not both"),
    ("variance_scaling_-in_axis-out-of-range", lambda t: initwise.variance_scaling_(t, in_axis=2), ValueError, r"^variance_scaling_: in_axis=2 is out of range for a 2-D tensor \(valid: -2 \.\. 1\)"),
    ("variance_scaling_-axes-overlap", lambda t: initwise.variance_scaling_(t, in_axis=0, out_axis=0), ValueError, r"^variance_scaling_: in_axis and out_axis share dimension\(s\) \[0\]"),
    ("variance_scaling_-in_axis-twice", lambda t: initwise.variance_scaling_(t, in_axis=(1, -1)), ValueError, r"^variance_scaling_: in_axis=\(1, -1\) names a dimension twice"),
    ("variance_scaling_-in_axis-float", lambda t: initwise.variance_scaling_(t, in_axis=1.0), TypeError, r"^variance_scaling_: in_axis must be an int or a sequence of ints, got 1\.0"),
    ("variance_scaling_-batch_axis-bool", lambda t: initwise.variance_scaling_(t, batch_axis=True), TypeError, r"^variance_scaling_: batch_axis must be an int or a sequence of ints, got True"),
    ("variance_scaling_-out_axis-empty", lambda t: initwise.variance_scaling_(t, out_axis=()), ValueError, r"^variance_scaling_: in_axis and out_axis must each name at least one dimension"),
    ("orthogonal_-gain-negative", lambda t: initwise.orthogonal_(t, -1.0), ValueError, r"gain must be finite and >= 0, got -1\.0"),
    ("orthogonal_-gain-nan", lambda t: initwise.orthogonal_(t, math.nan), ValueError, r"gain must be finite"),
    ("sparse_-sparsity-above-1", lambda t: initwise.sparse_(t, 1.5), ValueError, r"^sparse_: sparsity must be in \[0, 1\], got 1\.5"),
    ("sparse_-sparsity-negative", lambda t: initwise.sparse_(t, -0.1), ValueError, r"^sparse_: sparsity must be in \[0, 1\], got -0\.1"),
    ("sparse_-sparsity-nan", lambda t: initwise.sparse_(t, math.nan), ValueError, r"^sparse_: sparsity must be finite"),
    ("sparse_-sparsity-str", lambda t: initwise.sparse_(t, "0.5"), TypeError, r"^sparse_: sparsity must be a real number, got '0\.5'"),
    ("sparse_-std-negative", lambda t: initwise.sparse_(t, 0.5, -0.01), RuntimeError, r"^sparse_: std must be finite and >= 0, got -0\.01"),
    ("sparse_-std-inf", lambda t: initwise.sparse_(t, 0.5, math.inf), ValueError, r"^sparse_: std must be finite"),
]
for id_, call, exc, match in V:
    case(id_, T, call, exc, match)

C = _t(4, 2, 3)
for id_, call, exc, match in [
    ("dirac_-groups-zero", lambda t: initwise.dirac_(t, 0), ZeroDivisionError, r"^dirac_: groups must be a positive int, got 0"),
    ("dirac_-groups-negative", lambda t: initwise.dirac_(t, -2), ValueError, r"^dirac_: groups must be a positive int, got -2"),
    ("dirac_-groups-float", lambda t: initwise.dirac_(t, 1.5), TypeError, r"^dirac_: groups must be a positive int, got 1\.5 \(float\)"),
    ("dirac_-groups-bool", lambda t: initwise.dirac_(t, True), TypeError, r"^dirac_: groups must be a positive int, got True \(bool\)"),
    ("dirac_-groups-str", lambda t: initwise.dirac_(t, "2"), TypeError, r"^dirac_: groups must be a positive int, got '2'"),
    ("dirac_-groups-not-dividing", lambda t: initwise.dirac_(t, 3), ValueError, r"^dirac_: dim 0 \(4\) must be divisible by groups \(3\)"),
    ("delta_orthogonal_-out-smaller-than-in", lambda t: initwise.delta_orthogonal_(t.transpose(0, 1)), ValueError, r"^delta_orthogonal_: needs out_channels >= in_channels"),
    ("delta_orthogonal_-gain-negative", lambda t: initwise.delta_orthogonal_(t, -1.0), ValueError, r"gain must be finite and >= 0"),
]:
    case(id_, C, call, exc, match)

# ------------------------------------------------------------------ gains

for id_, call, exc, match in [
    ("calculate_gain-leaky_relu-param-str", lambda _: initwise.calculate_gain("leaky_relu", "x"), ValueError, r"^calculate_gain: param of 'leaky_relu' is its negative slope, a real number; 'x' \(str\) is not a valid number"),
    ("calculate_gain-leaky_relu-param-bool", lambda _: initwise.calculate_gain("leaky_relu", True), ValueError, r"True \(bool\) is not a valid number"),
    ("calculate_gain-leaky_relu-param-list", lambda _: initwise.calculate_gain("leaky_relu", [1]), ValueError, r"\[1\] \(list\) is not a valid number"),
    ("calculate_gain-unknown-name", lambda _: initwise.calculate_gain("swishy"), ValueError, r"unknown nonlinearity 'swishy'; did you mean 'swish'\?|unknown nonlinearity 'swishy'"),
    ("calculate_gain-typo", lambda _: initwise.calculate_gain("tahn"), ValueError, r"unknown nonlinearity 'tahn'; did you mean 'tanh'\?"),
    ("gain-param-for-gelu", lambda _: initwise.gain("gelu", 0.3), ValueError, r"'gelu' takes no param, got 0\.3"),
    ("gain-elu-alpha-negative", lambda _: initwise.gain("elu", -1.0), ValueError, r"elu: alpha \(param\) must be >= 0"),
    ("gain-celu-alpha-zero", lambda _: initwise.gain("celu", 0.0), ValueError, r"celu: alpha \(param\) must be > 0"),
    ("gain-softplus-beta-zero", lambda _: initwise.gain("softplus", 0.0), ValueError, r"softplus: beta \(param\) must be > 0"),
    ("gain-hardtanh-reversed", lambda _: initwise.gain("hardtanh", (1.0, -1.0)), ValueError, r"hardtanh: need min_val < max_val"),
    ("gain-hardtanh-str", lambda _: initwise.gain("hardtanh", "ab"), ValueError, r"hardtanh: param must be a pair \(min_val, max_val\)"),
    ("gain-leaky-slope-nan", lambda _: initwise.gain("leaky_relu", math.nan), ValueError, r"leaky_relu: negative slope \(param\) must be finite"),
    ("gain-int-activation", lambda _: initwise.gain(5), TypeError, r"activation must be a name, None, an nn\.Module or a callable on tensors, got int"),
    ("gain-param-with-module", lambda _: initwise.gain(nn.ReLU(), 0.1), ValueError, r"param is only for named activations"),
    ("gain-callable-returns-nan", lambda _: initwise.gain(lambda x: x * math.nan), ValueError, r"returned a non-finite value"),
    ("gain-callable-zero", lambda _: initwise.gain(lambda x: x * 0), ValueError, r"zero almost everywhere"),
    ("gain-callable-raises", lambda _: initwise.gain(lambda x: x.no_such_method()), ValueError, r"could not evaluate activation"),
    ("kaiming_gain-unknown", lambda _: initwise.kaiming_gain("relux"), ValueError, r"unknown nonlinearity 'relux'; did you mean 'relu"),
]:
    case(id_, _NONE, call, exc, match)

# ------------------------------------------------------------------ registry

for id_, call, exc, match in [
    ("get_scheme-unknown", lambda _: initwise.get_scheme("glorot_norml"), ValueError, r"unknown scheme 'glorot_norml'; did you mean 'glorot_normal'\?"),
    ("get_scheme-not-a-str", lambda _: initwise.get_scheme(3), TypeError, r"scheme name must be a string, got int"),
    ("get_scheme-unknown-param", lambda _: initwise.get_scheme("normal", stdd=0.1), ValueError, r"unknown parameter for scheme 'normal': 'stdd'; did you mean 'std'\?"),
    ("get_scheme-std-true", lambda _: initwise.get_scheme("normal", std=True), TypeError, r"std must be a real number, got True \(bool\)"),
    ("get_scheme-std-str", lambda _: initwise.get_scheme("normal", std="0.02"), TypeError, r"std must be a real number, got '0\.02'"),
    ("get_scheme-scale-str", lambda _: initwise.get_scheme("variance_scaling", scale="2"), TypeError, r"scale must be a real number, got '2'"),
    ("get_scheme-mode-bad", lambda _: initwise.get_scheme("kaiming_normal", mode="fan_avg"), ValueError, r"unknown mode 'fan_avg'.*Valid options: fan_in, fan_out"),
    ("get_scheme-kaiming-a-with-gelu", lambda _: initwise.get_scheme("kaiming_normal", a=0.2, nonlinearity="gelu"), ValueError, r"^scheme 'kaiming_normal': a=0\.2 is the negative slope"),
    ("get_scheme-he_normal-takes-no-mode", lambda _: initwise.get_scheme("he_normal", mode="fan_out"), ValueError, r"unknown parameter for scheme 'he_truncated_normal': 'mode'"),
    ("get_scheme-sparse-needs-sparsity", lambda _: initwise.get_scheme("sparse"), ValueError, r"scheme 'sparse' needs parameter\(s\) sparsity"),
    ("get_scheme-sparsity-above-1", lambda _: initwise.get_scheme("sparse", sparsity=1.5), ValueError, r"sparsity must be in \[0, 1\], got 1\.5"),
    ("get_scheme-uniform-a-above-b", lambda _: initwise.get_scheme("uniform", a=1.0, b=0.0), ValueError, r"uniform: need a <= b"),
    ("get_scheme-truncated-a-equals-b", lambda _: initwise.get_scheme("truncated_normal", a=1.0, b=1.0), ValueError, r"truncated_normal: need a < b"),
    ("get_scheme-mean-nan", lambda _: initwise.get_scheme("normal", mean=math.nan), ValueError, r"parameter mean must be finite"),
    ("from_config-not-a-mapping", lambda _: Scheme.from_config(["normal"]), ValueError, r"scheme config must be a mapping with a 'name'"),
    ("from_config-extra-key", lambda _: Scheme.from_config({"name": "normal", "parms": {}}), ValueError, r"unknown scheme config keys \['parms'\]; valid: name, params"),
    ("register_scheme-existing-name", lambda _: register_scheme("normal", initwise.normal_, lambda *a: None), ValueError, r"scheme 'normal' is already registered"),
    ("register_scheme-existing-alias", lambda _: register_scheme("he_normal", initwise.normal_, lambda *a: None), ValueError, r"scheme 'he_normal' is already registered"),
]:
    case(id_, _NONE, call, exc, match)

# ------------------------------------------------------------------ Policy / Rule JSON

for id_, make, exc, match in [
    ("policy-strict-string-false", _policy_dict(strict="false"), TypeError, r"^Policy\.strict must be true or false, got 'false' \(str\)"),
    ("policy-strict-int", _policy_dict(strict=1), TypeError, r"^Policy\.strict must be true or false, got 1 \(int\)"),
    ("policy-branches-string", _policy_dict(branches="abc"), TypeError, r"^Policy\.branches must be a list of qualified module names \(strings\) or null, got 'abc'"),
    ("policy-branches-ints", _policy_dict(branches=[1, 2]), TypeError, r"^Policy\.branches must be a list of qualified module names"),
    ("policy-rules-string", _policy_dict(rules="zeros"), TypeError, r"^Policy\.rules must be a list of rule objects, e\.g\. .* got 'zeros' \(str\)"),
    ("policy-rules-dict", _policy_dict(rules={"scheme": "zeros"}), TypeError, r"^Policy\.rules must be a list of rule objects.* \(dict\)"),
    ("policy-rule-is-a-string", _policy_dict(rules=["zeros"]), TypeError, r"^Policy\.rules\[0\]: a rule must be a JSON object with a 'scheme' field.* got 'zeros' \(str\)"),
    ("policy-rule-missing-scheme", _policy_dict(rules=[{"role": "bias"}]), ValueError, r"^Policy\.rules\[0\]: Rule: the field 'scheme' is required"),
    ("policy-rule-scale-string", _policy_dict(rules=[{"scheme": "auto", "scale": "2"}]), TypeError, r"^Policy\.rules\[0\]: Rule\.scale must be a number \(e\.g\. 0\.5\), got '2' \(str\); strings are not converted"),
    ("policy-rule-std-true", _policy_dict(rules=[{"scheme": "normal", "params": {"std": True}}]), TypeError, r"^Policy\.rules\[0\]: std must be a real number, got True \(bool\)"),
    ("policy-rule-unknown-field", _policy_dict(rules=[{"scheme": "auto", "rol": "weight"}]), ValueError, r"^Policy\.rules\[1\]|^Policy\.rules\[0\]: unknown Rule field 'rol'; did you mean 'role'\?"),
    ("policy-unknown-field", _policy_dict(stric=True), ValueError, r"^unknown Policy field 'stric'; did you mean 'strict'\?"),
    ("policy-n_layer-bool", _policy_dict(n_layer=True), TypeError, r"^Policy\.n_layer must be a positive integer or null, got True"),
    ("policy-n_layer-string", _policy_dict(n_layer="12"), TypeError, r"^Policy\.n_layer must be a positive integer or null, got '12'"),
    ("policy-n_layer-zero", _policy_dict(n_layer=0), ValueError, r"^Policy\.n_layer must be a positive int, got 0"),
    ("policy-name-int", _policy_dict(name=5), TypeError, r"^Policy\.name must be a string, got 5"),
    ("policy-not-a-dict", lambda: [["rules"]], TypeError, r"^a policy must be a JSON object with a 'rules' list, got list"),
]:
    case(id_, make, Policy.from_dict, exc, match)

for id_, make, exc, match in [
    ("rule-missing-scheme", _rule_dict(scheme=_DROP), ValueError, r"^Rule: the field 'scheme' is required \(a scheme name or an action: auto, keep"),
    ("rule-scheme-int", _rule_dict(scheme=5), TypeError, r"^Rule\.scheme must be a string, got 5 \(int\)"),
    ("rule-scheme-unknown", _rule_dict(scheme="normall"), ValueError, r"unknown scheme or action 'normall'; did you mean 'normal'\?"),
    ("rule-params-string", _rule_dict(params="std=0.02"), TypeError, r"^Rule\.params must be an object, got 'std=0\.02'"),
    ("rule-params-std-true", _rule_dict(params={"std": True}), TypeError, r"std must be a real number, got True"),
    ("rule-params-std-string", _rule_dict(params={"std": "0.02"}), TypeError, r"std must be a real number, got '0\.02'"),
    ("rule-params-unknown", _rule_dict(params={"sdt": 0.1}), ValueError, r"unknown parameter for scheme 'normal': 'sdt'; did you mean 'std'\?"),
    ("rule-scale-string", _rule_dict(scale="2"), TypeError, r"^Rule\.scale must be a number \(e\.g\. 0\.5\), got '2' \(str\)"),
    ("rule-scale-bool", _rule_dict(scale=True), TypeError, r"^Rule\.scale must be a number \(e\.g\. 0\.5\), got True \(bool\)"),
    ("rule-scale-zero", _rule_dict(scale=0), ValueError, r"Rule\.scale must be > 0; use the 'zeros' scheme"),
    ("rule-scale-negative", _rule_dict(scale=-1.0), ValueError, r"Rule\.scale must be finite and > 0"),
    ("rule-role-typo", _rule_dict(role="wieght"), ValueError, r"unknown role 'wieght'; did you mean 'weight'\?"),
    ("rule-role-int", _rule_dict(role=5), TypeError, r"^Rule\.role must be a string or a list of strings, got 5 \(int\)"),
    ("rule-role-dict", _rule_dict(role={"weight": 1}), TypeError, r"^Rule\.role must be a string or a list of strings"),
    ("rule-module-int", _rule_dict(module=5), TypeError, r"^Rule\.module must be a string or a list of strings, got 5"),
    ("rule-module-not-identifier", _rule_dict(module="nn.Linear"), ValueError, r"Rule\.module: 'nn\.Linear' is not a class name"),
    ("rule-name-int", _rule_dict(name=5), TypeError, r"^Rule\.name must be a string, got 5"),
    ("rule-name-bad-regex", _rule_dict(name="re:("), ValueError, r"Rule\.name: invalid regular expression '\('"),
    ("rule-fans-typo", _rule_dict(fans="modul"), ValueError, r"unknown fans 'modul'; did you mean 'module'\?"),
    ("rule-fans-bool", _rule_dict(fans=True), TypeError, r"^Rule\.fans must be a string, got True"),
    ("rule-depth_scale-typo", _rule_dict(depth_scale="gtp2"), ValueError, r"unknown depth_scale 'gtp2'; did you mean 'gpt2'\?"),
    ("rule-note-int", _rule_dict(note=5), TypeError, r"^Rule\.note must be a string, got 5"),
    ("rule-unknown-field", _rule_dict(scale_=2.0), ValueError, r"^unknown Rule field 'scale_'; did you mean 'scale'\?"),
    ("rule-not-a-dict", lambda: "zeros", TypeError, r"^a rule must be a JSON object with a 'scheme' field"),
    ("rule-forget-gate-value-nan", _rule_dict(scheme="forget_gate_bias", params={"value": math.nan}), ValueError, r"forget_gate_bias: value must be finite"),
    ("rule-auto-distribution-typo", _rule_dict(scheme="auto", params={"distribution": "unifrom"}), ValueError, r"unknown distribution 'unifrom'; did you mean 'uniform'\?"),
]:
    case(id_, make, Rule.from_dict, exc, match)

for id_, call, exc, match in [
    ("get_policy-typo", lambda _: initwise.get_policy("gtp2"), ValueError, r"unknown preset or scheme 'gtp2'; did you mean 'gpt2'\?"),
    ("get_policy-tensor", lambda _: initwise.get_policy(torch.zeros(2)), TypeError, r"policy must be a preset name, a Policy or a list of Rules"),
    ("get_policy-int", lambda _: initwise.get_policy(5), TypeError, r"policy must be a preset name \(auto, torch.*got int"),
    ("Rule-scale-string", lambda _: Rule("auto", scale="2"), TypeError, r"Rule\.scale must be a real number, got '2'"),
    ("Policy-rules-not-rules", lambda _: Policy(("zeros",)), TypeError, r"Policy\.rules\[0\] must be a Rule, got str"),
    ("Policy-branches-string", lambda _: Policy((), branches="abc"), TypeError, r"Policy\.branches must be a sequence of module names, not a string"),
]:
    case(id_, _NONE, call, exc, match)

# ------------------------------------------------------------------ fans

for id_, make, call, exc, match in [
    ("fans-unknown-parameter", lambda: nn.Linear(3, 4), lambda m: initwise.fans(m, "wieght"), ValueError, r"fans: Linear has no tensor attribute 'wieght'; did you mean 'weight'\?"),
    ("fans-of-a-bias", lambda: nn.Linear(3, 4), lambda m: initwise.fans(m, "bias"), ValueError, r"fans: Linear\.bias has shape \(4,\); fans need a tensor with at least 2 dimensions"),
    ("fans-of-a-norm", lambda: nn.LayerNorm(4), lambda m: initwise.fans(m), ValueError, r"LayerNorm\.weight is a normalization parameter and has no fans"),
    ("fans-of-a-string", _NONE, lambda _: initwise.fans("weight"), TypeError, r"fans: expected a tensor or nn\.Module, got str"),
    ("fans-lazy", lambda: nn.LazyLinear(4), lambda m: initwise.fans(m), ValueError, r"uninitialized lazy parameter; run a forward pass"),
    ("register_fans-not-a-module-class", _NONE, lambda _: initwise.register_fans(int, lambda m, n: (1, 1)), TypeError, r"register_fans: module_type must be an nn\.Module subclass"),
    ("register_fans-not-callable", _NONE, lambda _: initwise.register_fans(nn.Linear, 5), TypeError, r"register_fans: fn must be callable as fn\(module, name\)"),
    ("axis_fans-0d", _NONE, lambda _: initwise.axis_fans(()), ValueError, r"fan axes need a tensor with at least 1 dimension"),
    ("axis_fans-zero-size", _NONE, lambda _: initwise.axis_fans((0, 4)), ValueError, r"has a zero-size fan"),
    ("axis_fans-in-and-batch-overlap", _NONE, lambda _: initwise.axis_fans((2, 3, 4), in_axis=0, out_axis=1, batch_axis=0), ValueError, r"in_axis and batch_axis share dimension\(s\) \[0\]"),
    ("axis_fans-axis-str", _NONE, lambda _: initwise.axis_fans((2, 3), in_axis="0"), TypeError, r"in_axis must be an int or a sequence of ints, got '0'"),
    ("describe_layout-not-a-module", _NONE, lambda _: initwise.describe_layout(torch.zeros(2, 2)), TypeError, r"describe_layout: expected an nn\.Module, got Tensor"),
]:
    case(id_, make, call, exc, match)

# ------------------------------------------------------------------ initwise.numpy

for id_, call, exc, match in [
    ("numpy-init-unknown", lambda _: inp.init("he_norml", (4, 3)), ValueError, r"unknown scheme 'he_norml'; did you mean 'he_normal'\?"),
    ("numpy-kaiming-fan_in-zero", lambda _: inp.kaiming_normal(0, 4), ValueError, r"fan_in must be a positive int, got 0"),
    ("numpy-kaiming-mode-bad", lambda _: inp.kaiming_normal(4, 4, mode="fan_avg"), ValueError, r"unknown mode 'fan_avg'"),
    ("numpy-kaiming-a-with-gelu", lambda _: inp.kaiming_uniform(4, 4, nonlinearity="gelu", a=0.1), ValueError, r"a=0\.1 is the negative slope"),
    ("numpy-rng-torch-generator", lambda _: inp.xavier_uniform(4, 4, torch.Generator()), TypeError, r"rng must be a numpy\.random\.Generator, an int seed .* or None .*got .*\(Generator\)"),
    ("numpy-xavier-gain-negative", lambda _: inp.xavier_normal(4, 4, gain=-1.0), ValueError, r"gain must be finite and > 0"),
    ("numpy-variance_scaling-distribution", lambda _: inp.variance_scaling((4, 4), 1.0, "fan_in", "gauss"), ValueError, r"unknown distribution 'gauss'"),
]:
    case(id_, _NONE, call, exc, match)

# ------------------------------------------------------------------ the shared validators themselves

for id_, make, call, exc, match in [
    ("check_seed-float", _NONE, lambda _: check_seed(1.5, "lsuv"), TypeError, r"^lsuv: seed must be an int \(or None\), got 1\.5 \(float\)"),
    ("check_seed-str", _NONE, lambda _: check_seed("1", "audit"), TypeError, r"^audit: seed must be an int \(or None\), got '1' \(str\)"),
    ("check_seed-bool", _NONE, lambda _: check_seed(True, "init"), TypeError, r"^init: seed must be an int \(or None\), got True \(bool\)"),
    ("check_seed-negative", _NONE, lambda _: check_seed(-1, "init", allow_negative=False), ValueError, r"^init: seed must be >= 0, got -1"),
    ("check_seed-none-not-allowed", _NONE, lambda _: check_seed(None, "audit", allow_none=False), TypeError, r"^audit: seed must be an int, got None"),
    ("check_materialized-meta-model", _meta_model, lambda m: check_materialized(m, "lsuv"), ValueError, r"^lsuv: the model has tensors on the meta device \(0\.weight, shape \(8, 4\)\), which hold no values: materialize it first"),
    ("check_materialized-lazy-model", lambda: nn.Sequential(nn.LazyLinear(3)), lambda m: check_materialized(m, "audit"), ValueError, r"^audit: 0\.weight is an uninitialized lazy parameter; run one forward pass"),
    ("check_materialized-not-a-module", lambda: torch.zeros(2), lambda t: check_materialized(t, "audit"), TypeError, r"^audit: expected an nn\.Module, got Tensor"),
    ("check_batched_inputs-1d", lambda: torch.arange(8.0), lambda x: check_batched_inputs(x, "lsuv"), ValueError, r"^lsuv: inputs need a batch dimension first \(at least 2-D, e\.g\. \[batch, features\]\), got shape \(8,\)"),
    ("check_batched_inputs-empty-batch", lambda: torch.zeros(0, 3), lambda x: check_batched_inputs(x, "lsuv"), ValueError, r"^lsuv: inputs have an empty batch \(shape \(0, 3\)\)"),
    ("check_batched_inputs-tuple-1d", lambda: (torch.arange(8.0),), lambda x: check_batched_inputs(x, "audit"), ValueError, r"^audit: inputs need a batch dimension first"),
    ("check_batched_inputs-dict-1d", lambda: {"x": torch.arange(8.0)}, lambda x: check_batched_inputs(x, "lsuv"), ValueError, r"^lsuv: inputs need a batch dimension first"),
    ("check_batched_inputs-no-tensor", lambda: [1.0, 2.0], lambda x: check_batched_inputs(x, "lsuv"), TypeError, r"^lsuv: inputs must be a tensor, or a tuple/list/dict holding tensors"),
]:
    case(id_, make, call, exc, match)


@pytest.mark.parametrize("c", CASES)
def test_bad_input_is_a_clear_error_and_changes_nothing(c: Case) -> None:
    target = c.make()
    before = _snapshot(target)
    with pytest.raises(c.exc, match=c.match):
        c.call(target)
    assert _unchanged(before, target)


def test_table_is_large_and_ids_are_readable() -> None:
    ids = [p.id for p in CASES]
    assert len(ids) >= 170 and len(set(ids)) == len(ids)
    assert not any("0x" in i or " at " in i for i in ids)


# ------------------------------------------------------------------ the model-level verbs
# lsuv / audit / init call the shared validators (seed, only=, meta models, unbatched inputs)



def _sgd_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))


@pytest.mark.parametrize(
    "make,call,exc,match",
    [
        pytest.param(_sgd_model, lambda m: initwise.lsuv(m, torch.randn(8)), ValueError,
                     r"^lsuv: inputs need a batch dimension first", id="lsuv-unbatched-input"),
        pytest.param(_model, lambda m: initwise.lsuv(m, torch.randn(16, 4), seed=1.5), TypeError,
                     r"^lsuv: seed must be an int", id="lsuv-seed-float"),
        pytest.param(_model, lambda m: initwise.audit(m, torch.randn(16, 4), seed=1.5), TypeError,
                     r"^audit: seed must be an int", id="audit-seed-float"),
        pytest.param(_model, lambda m: initwise.init(m, seed=1.5), TypeError,
                     r"^init: seed must be an int", id="init-seed-float"),
        pytest.param(_meta_model, lambda m: initwise.lsuv(m, torch.randn(16, 4)), ValueError,
                     r"^lsuv: the model has tensors on the meta device .* materialize it first", id="lsuv-meta-model"),
        pytest.param(_meta_model, lambda m: initwise.audit(m, torch.randn(16, 4)), ValueError,
                     r"^audit: the model has tensors on the meta device .* materialize it first", id="audit-meta-model"),
        pytest.param(_model, lambda m: initwise.init(m, only=5), TypeError,
                     r"^init: only= must be a name, a list of names or a predicate", id="init-only-int"),
        pytest.param(_model, lambda m: initwise.lsuv(m, torch.randn(16, 4), only=5), TypeError,
                     r"^lsuv: only= must be a name, a list of names or a predicate", id="lsuv-only-int"),
    ],
)
def test_model_verbs_bad_input(make: Callable[[], nn.Module], call: Callable[[nn.Module], Any], exc: type, match: str) -> None:
    model = make()
    before = _snapshot(model)
    with pytest.raises(exc, match=match):
        call(model)
    assert _unchanged(before, model)
