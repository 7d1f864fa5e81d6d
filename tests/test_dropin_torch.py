"""initwise as a drop-in for ``torch.nn.init`` and a port target for Keras/JAX (issue 15).

Every behaviour torch has, initwise has (bitwise where torch's values are reproducible); every
place initwise differs is a decision in ``docs/dropin.md`` with a test here.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import initwise
from conftest import bitwise_equal
from initwise._checks import BadValueError, NotATensorError, UnsupportedDtypeError, ZeroValueError
from initwise.gains import kaiming_gain

stats = pytest.importorskip("scipy.stats")

KS_P = 1e-4


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


_same = bitwise_equal


# --------------------------------------------------------------------------- deprecated aliases

DEPRECATED = [
    ("uniform", ((4, 5),), {}),
    ("normal", ((4, 5),), {}),
    ("constant", ((4, 5), 0.3), {}),
    ("eye", ((4, 5),), {}),
    ("dirac", ((4, 4, 3),), {}),
    ("xavier_uniform", ((4, 5),), {}),
    ("xavier_normal", ((4, 5),), {}),
    ("kaiming_uniform", ((4, 5),), {}),
    ("kaiming_normal", ((4, 5),), {}),
    ("orthogonal", ((4, 5),), {}),
    ("sparse", ((6, 5), 0.5), {}),
]


@pytest.mark.parametrize("name,args,kwargs", DEPRECATED, ids=[d[0] for d in DEPRECATED])
def test_deprecated_alias_warns_like_torch_and_equals_the_underscore_form(name: str, args: tuple, kwargs: dict) -> None:
    shape, *rest = args
    a, b = torch.zeros(shape), torch.zeros(shape)
    torch.manual_seed(3)
    with pytest.warns(FutureWarning, match=rf"`nn.init.{name}` is now deprecated in favor of `nn.init.{name}_`") as rec:
        out = getattr(initwise, name)(a, *rest, **kwargs)
    assert rec[0].filename == __file__  # attributed to the caller, like torch's stacklevel=2
    torch.manual_seed(3)
    getattr(initwise, name + "_")(b, *rest, **kwargs)
    assert out is a and _same(a, b)
    assert getattr(initwise, name).__name__ == name


def test_deprecated_aliases_are_torchs_list() -> None:
    torch_names = {n for n in dir(torch.nn.init) if not n.startswith("_") and n + "_" in dir(torch.nn.init)}
    from initwise.schemes import DEPRECATED_ALIASES

    assert set(DEPRECATED_ALIASES) == torch_names


def test_deprecation_is_not_a_deprecationwarning() -> None:
    # pyproject turns DeprecationWarning from initwise.* into errors; torch warns FutureWarning
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        initwise.normal(torch.empty(2))


# --------------------------------------------------------------------------- empty tensors

EMPTY_FNS = ["uniform_", "normal_", "trunc_normal_", "truncated_normal_", "xavier_uniform_", "xavier_normal_",
             "kaiming_uniform_", "kaiming_normal_", "lecun_normal_", "lecun_uniform_", "orthogonal_",
             "zeros_", "ones_", "eye_", "variance_scaling_", "he_truncated_normal_"]  # fmt: skip


@pytest.mark.parametrize("fn", EMPTY_FNS)
def test_zero_element_warning_has_torchs_text_and_names_the_function(fn: str) -> None:
    t = torch.empty(0, 3)
    with pytest.warns(UserWarning, match=rf"^{fn}: Initializing zero-element tensors is a no-op"):
        assert getattr(initwise, fn)(t) is t


# --------------------------------------------------------------------------- dtypes torch accepts

INT_DTYPES = [torch.int8, torch.uint8, torch.int32, torch.int64, torch.bool, torch.complex64, torch.float16]
FILLS: list[tuple[str, tuple[int, ...], tuple[Any, ...]]] = [
    ("zeros_", (3, 4), ()),
    ("ones_", (3, 4), ()),
    ("constant_", (3, 4), (2.7,)),
    ("constant_", (3, 4), (-1,)),
    ("eye_", (3, 4), ()),
    ("dirac_", (4, 2, 3), ()),
    ("dirac_", (4, 2, 2, 2), (2,)),
]


@pytest.mark.parametrize(
    "fn,shape,args,dtype",
    [(f, sh, a, d) for f, sh, a in FILLS for d in INT_DTYPES if not (d == torch.uint8 and a == (-1,))],
    ids=[f"{f}{sh}{a}-{d}" for f, sh, a in FILLS for d in INT_DTYPES if not (d == torch.uint8 and a == (-1,))],
)
def test_fills_accept_every_dtype_torch_accepts_with_torchs_values(fn: str, shape: tuple, args: tuple, dtype: torch.dtype) -> None:
    ours = torch.full(shape, 5).to(dtype)
    theirs = ours.clone()
    getattr(torch.nn.init, fn)(theirs, *args)
    assert getattr(initwise, fn)(ours, *args) is ours
    assert _same(ours, theirs)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128], ids=str)
@pytest.mark.parametrize(
    "fn,args",
    [("normal_", (0.5, 2.0)), ("uniform_", (-1.0, 3.0)), ("sparse_", (0.3, 0.1)), ("xavier_normal_", ()),
     ("kaiming_normal_", ())],
    ids=["normal_", "uniform_", "sparse_", "xavier_normal_", "kaiming_normal_"],
)
def test_complex_tensors_get_torchs_values(fn: str, args: tuple, dtype: torch.dtype) -> None:
    ours, theirs = torch.empty(20, 10, dtype=dtype), torch.empty(20, 10, dtype=dtype)
    # torch's sparse_ draws its permutations from the global generator whatever generator= is
    gen = None if fn == "sparse_" else _gen(1)
    torch.manual_seed(1)
    getattr(torch.nn.init, fn)(theirs, *args, generator=gen)
    torch.manual_seed(1)
    getattr(initwise, fn)(ours, *args, generator=None if gen is None else _gen(1))
    if fn == "kaiming_normal_" and dtype == torch.complex128:
        # std = sqrt(gain² / fan) here, gain / sqrt(fan) in torch: equal to 1 ulp of float64
        assert torch.allclose(ours, theirs, rtol=1e-15, atol=0)
    else:
        assert _same(ours, theirs)


def test_constant_complex_value() -> None:
    t = torch.zeros(3, dtype=torch.complex64)
    assert _same(initwise.constant_(t, 1 + 2j), torch.nn.init.constant_(t.clone(), 1 + 2j))


def test_complex_keyed_normal_is_torchs_law() -> None:
    # each part N(mean, std²/2): E|z - mean(1+i)|² = std²
    t = torch.empty(200_000, dtype=torch.complex128)
    initwise.normal_(t, 0.0, 3.0, generator=initwise.random.key(0, "c"))
    for part in (t.real, t.imag):
        assert stats.kstest(part.numpy(), "norm", args=(0.0, 3.0 / math.sqrt(2))).pvalue > KS_P


def test_sparse_sparsity_one_zeroes_everything_as_torch() -> None:
    ours, theirs = torch.empty(6, 4), torch.empty(6, 4)
    torch.nn.init.sparse_(theirs, 1.0, generator=_gen(2))
    initwise.sparse_(ours, 1.0, generator=_gen(2))
    assert _same(ours, theirs) and not ours.any()


def test_sparse_std_zero_as_torch() -> None:
    t = torch.full((6, 4), 3.0)
    initwise.sparse_(t, 0.5, std=0.0, generator=_gen(0))
    assert not t.any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_trunc_normal_equal_bounds_fill_the_bound_as_torch(dtype: torch.dtype) -> None:
    ours, theirs = torch.empty(5, dtype=dtype), torch.empty(5, dtype=dtype)
    torch.nn.init.trunc_normal_(theirs, 0.0, 1.0, 0.5, 0.5)
    initwise.trunc_normal_(ours, 0.0, 1.0, 0.5, 0.5)
    assert _same(ours, theirs)


def test_xavier_gain_zero_gives_torchs_zeros() -> None:
    for fn in ("xavier_uniform_", "xavier_normal_"):
        ours, theirs = torch.empty(4, 5), torch.empty(4, 5)
        getattr(torch.nn.init, fn)(theirs, gain=0.0, generator=_gen(0))
        getattr(initwise, fn)(ours, gain=0.0, generator=_gen(0))
        assert _same(ours, theirs)


# --------------------------------------------------------------------------- torch's error types

TORCH_ERRORS = [
    ("uniform_ a > b", lambda m, t: m.uniform_(t, 2.0, 1.0), BadValueError),
    ("uniform_ b inf", lambda m, t: m.uniform_(t, 0.0, math.inf), BadValueError),
    ("uniform_ a str", lambda m, t: m.uniform_(t, "x", 1.0), TypeError),
    ("normal_ std < 0", lambda m, t: m.normal_(t, 0.0, -1.0), BadValueError),
    ("normal_ std nan", lambda m, t: m.normal_(t, 0.0, math.nan), BadValueError),
    ("normal_ int tensor", lambda m, t: m.normal_(t.long()), UnsupportedDtypeError),
    ("uniform_ int tensor", lambda m, t: m.uniform_(t.long()), UnsupportedDtypeError),
    ("trunc_normal_ a > b", lambda m, t: m.trunc_normal_(t, 0.0, 1.0, 1.0, -1.0), BadValueError),
    ("trunc_normal_ std 0", lambda m, t: m.trunc_normal_(t, 0.0, 0.0), ZeroValueError),
    ("trunc_normal_ int tensor", lambda m, t: m.trunc_normal_(t.long()), UnsupportedDtypeError),
    ("trunc_normal_ complex", lambda m, t: m.trunc_normal_(t.cfloat()), UnsupportedDtypeError),
    ("xavier_uniform_ gain < 0", lambda m, t: m.xavier_uniform_(t, -1.0), BadValueError),
    ("xavier_uniform_ 1-D", lambda m, t: m.xavier_uniform_(t[0]), ValueError),
    ("xavier_normal_ int", lambda m, t: m.xavier_normal_(t.int()), UnsupportedDtypeError),
    ("kaiming_normal_ mode", lambda m, t: m.kaiming_normal_(t, mode="fan_avg"), ValueError),
    ("kaiming_normal_ nonlinearity", lambda m, t: m.kaiming_normal_(t, nonlinearity="foo"), ValueError),
    ("kaiming_uniform_ a str", lambda m, t: m.kaiming_uniform_(t, a="x"), ValueError),
    ("orthogonal_ 1-D", lambda m, t: m.orthogonal_(t[0]), ValueError),
    ("orthogonal_ int", lambda m, t: m.orthogonal_(t.long()), UnsupportedDtypeError),
    ("orthogonal_ complex", lambda m, t: m.orthogonal_(t.cfloat()), UnsupportedDtypeError),
    ("sparse_ 3-D", lambda m, t: m.sparse_(t[None], 0.5), ValueError),
    ("sparse_ std < 0", lambda m, t: m.sparse_(t, 0.5, -1.0), BadValueError),
    ("sparse_ int", lambda m, t: m.sparse_(t.long(), 0.5), UnsupportedDtypeError),
    ("eye_ 3-D", lambda m, t: m.eye_(t[None]), ValueError),
    ("dirac_ 2-D", lambda m, t: m.dirac_(t), ValueError),
    ("dirac_ groups 0", lambda m, t: m.dirac_(t[..., None], 0), ZeroValueError),
    ("dirac_ groups 3", lambda m, t: m.dirac_(t[..., None], 3), ValueError),
    ("constant_ str", lambda m, t: m.constant_(t, "x"), TypeError),
    ("constant_ None", lambda m, t: m.constant_(t, None), TypeError),
    ("constant_ complex into float", lambda m, t: m.constant_(t, 1 + 2j), BadValueError),
    ("calculate_gain leaky_relu str", lambda m, t: m.calculate_gain("leaky_relu", "x"), ValueError),
    ("calculate_gain unknown", lambda m, t: m.calculate_gain("foo"), ValueError),
    ("calculate_gain int", lambda m, t: m.calculate_gain(3), ValueError),
    ("calculate_gain list", lambda m, t: m.calculate_gain(["relu"]), ValueError),
    ("kaiming_normal_ nonlinearity float", lambda m, t: m.kaiming_normal_(t, 0, "fan_in", 0.5), ValueError),
    ("trunc_normal_ a nan", lambda m, t: m.trunc_normal_(t, 0.0, 1.0, math.nan), BadValueError),
    ("trunc_normal_ b nan", lambda m, t: m.trunc_normal_(t, 0.0, 1.0, -2.0, math.nan), BadValueError),
    ("trunc_normal_ a = b = inf", lambda m, t: m.trunc_normal_(t, 0.0, 1.0, math.inf, math.inf), BadValueError),
    ("normal_ std 1-element tensor", lambda m, t: m.normal_(t, 0.0, torch.tensor([0.5])), TypeError),
    ("uniform_ b 1-element tensor", lambda m, t: m.uniform_(t, 0.0, torch.tensor([0.5])), TypeError),
    ("generator int", lambda m, t: m.normal_(t, generator=3), TypeError),
    ("not a tensor", lambda m, t: m.normal_([1.0, 2.0]), NotATensorError),
]


@pytest.mark.parametrize("call,ours", [(c, o) for _, c, o in TORCH_ERRORS], ids=[n for n, _, _ in TORCH_ERRORS])
def test_errors_derive_from_the_type_torch_raises(call: Any, ours: type) -> None:
    with pytest.raises(Exception) as torch_err:
        call(torch.nn.init, torch.zeros(4, 4))
    t = torch.full((4, 4), 7.0)
    with pytest.raises(ours) as err:
        call(initwise, t)
    assert isinstance(err.value, type(torch_err.value)), (type(err.value).__mro__, type(torch_err.value))
    assert bool((t == 7.0).all())


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda t: initwise.normal_(t, math.nan), "normal_: mean must be finite"),
        (lambda t: initwise.normal_(t, 0.0, math.inf), "normal_: std must be finite"),
        (lambda t: initwise.trunc_normal_(t, math.nan), "trunc_normal_: mean must be finite"),
        (lambda t: initwise.trunc_normal_(t, math.inf), "trunc_normal_: mean must be finite"),
        (lambda t: initwise.trunc_normal_(t, 0.0, -1.0), "trunc_normal_: std must be finite and > 0"),
        (lambda t: initwise.sparse_(t, 1.5), r"sparsity must be in \[0, 1\]"),
        (lambda t: initwise.orthogonal_(t, -1.0), "gain must be finite and >= 0"),
    ],
    ids=["normal mean nan", "normal std inf", "trunc mean nan", "trunc mean inf", "trunc std < 0",
         "sparse 1.5", "orthogonal gain < 0"],
)
def test_stricter_than_torch_by_design(call: Any, match: str) -> None:
    """torch fills NaN/inf or garbage here; initwise refuses (docs/dropin.md, 'Stricter')."""
    t = torch.full((4, 4), 7.0)
    with pytest.raises(ValueError, match=match):
        call(t)
    assert bool((t == 7.0).all())


# --------------------------------------------------------------------------- the upstream deviation


def test_trunc_normal_generator_matches_global_seed() -> None:
    """What upstream's test_trunc_normal_generator is about, without its [0, 1] KS check."""
    a = initwise.trunc_normal_(torch.empty(1000), generator=_gen(42))
    torch.manual_seed(42)
    b = initwise.trunc_normal_(torch.empty(1000))
    assert _same(a, b)
    assert stats.kstest(a.double().numpy(), "truncnorm", args=(-2.0, 2.0)).pvalue > KS_P


# --------------------------------------------------------------------------- kaiming gains


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(initwise.ACTIVATIONS),
    mode=st.sampled_from(["fan_in", "fan_out"]),
    uniform=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_kaiming_default_a_is_never_passed_to_an_activation(name: str, mode: str, uniform: bool, seed: int) -> None:
    """Every activation name works with the default ``a=0`` and gets its own gain."""
    g = kaiming_gain(name)
    expected = initwise.calculate_gain(name) if name != "leaky_relu" else initwise.calculate_gain("leaky_relu", 0)
    assert g == expected
    fn = initwise.kaiming_uniform_ if uniform else initwise.kaiming_normal_
    a, b = torch.empty(7, 5), torch.empty(7, 5)
    fn(a, mode=mode, nonlinearity=name, generator=_gen(seed))
    initwise.variance_scaling_(b, g * g, mode, "uniform" if uniform else "normal", generator=_gen(seed))
    assert _same(a, b)


@pytest.mark.parametrize("name", initwise.ACTIVATIONS)
def test_kaiming_gain_for_every_activation_name(name: str) -> None:
    gain = kaiming_gain(name)
    if name == "leaky_relu":
        assert gain == math.sqrt(2.0)  # torch: a=0 means slope 0
    elif name in ("linear", "relu", "tanh", "sigmoid", "selu"):
        assert gain == torch.nn.init.calculate_gain(name)  # torch's conventions
    else:
        assert gain == initwise.gain(name)  # the exact gain, default parameters


def test_elu_and_prelu_no_longer_get_sqrt2() -> None:
    assert kaiming_gain("elu") == pytest.approx(1.2451983007, abs=1e-9)
    assert kaiming_gain("prelu") == pytest.approx(1.3719886811, abs=1e-9)
    assert kaiming_gain("prelu", 0.5) == pytest.approx(math.sqrt(2 / 1.25))
    assert kaiming_gain("leaky_relu", 0.2) == torch.nn.init.calculate_gain("leaky_relu", 0.2)
    assert kaiming_gain("relu", 0.3) == math.sqrt(2.0)  # torch ignores a for relu


def test_kaiming_errors_name_the_kaiming_function() -> None:
    for fn in ("kaiming_normal_", "kaiming_uniform_"):
        with pytest.raises(ValueError, match=rf"^{fn}: a=0.5 is the negative slope .* 'gelu' takes no slope"):
            getattr(initwise, fn)(torch.empty(3, 4), a=0.5, nonlinearity="gelu")
        with pytest.raises(ValueError, match=rf"^{fn}: needs a tensor with at least 2 dimensions"):
            getattr(initwise, fn)(torch.empty(3))
        with pytest.warns(UserWarning, match=rf"^{fn}: Initializing zero-element"):
            getattr(initwise, fn)(torch.empty(0, 3))


def test_kaiming_with_an_activation_module() -> None:
    a, b = torch.empty(6, 5), torch.empty(6, 5)
    initwise.kaiming_normal_(a, nonlinearity=torch.nn.GELU(), generator=_gen(0))  # type: ignore[arg-type]
    initwise.variance_scaling_(b, initwise.gain("gelu") ** 2, generator=_gen(0))
    assert _same(a, b)


def test_registry_kaiming_with_extra_names() -> None:
    s = initwise.get_scheme("kaiming_normal", nonlinearity="elu")
    assert s.describe((10, 40)).std == pytest.approx(kaiming_gain("elu") / math.sqrt(40))


# --------------------------------------------------------------------------- Keras / JAX names

TRUNC = stats.truncnorm(-2, 2)
TRUNC_EXCESS_KURTOSIS = float(TRUNC.stats(moments="k"))


@pytest.mark.parametrize(
    "alias,canonical,fn,scale,mode",
    [("he_normal", "he_truncated_normal", "he_truncated_normal_", 2.0, "fan_in"),
     ("glorot_normal", "glorot_truncated_normal", "glorot_truncated_normal_", 1.0, "fan_avg"),
     ("lecun_truncated_normal", "lecun_truncated_normal", "lecun_truncated_normal_", 1.0, "fan_in")],
    ids=["he_normal", "glorot_normal", "lecun_truncated_normal"],
)
def test_keras_names_are_truncated_normals(alias: str, canonical: str, fn: str, scale: float, mode: str) -> None:
    s = initwise.get_scheme(alias)
    assert s.name == canonical
    a, b, c = torch.empty(300, 200), torch.empty(300, 200), torch.empty(300, 200)
    s(a, generator=_gen(5))
    getattr(initwise, fn)(b, generator=_gen(5))
    initwise.variance_scaling_(c, scale, mode, "truncated_normal", generator=_gen(5))
    assert _same(a, b) and _same(a, c)
    fan = {"fan_in": 200, "fan_avg": 250}[mode]
    std = math.sqrt(scale / fan)
    # the exact law: N(0, σp²) cut at ±2σp with σp = std / s(-2, 2)
    law = stats.truncnorm(-2, 2, scale=std / TRUNC.std())
    assert stats.kstest(a.double().flatten().numpy(), law.cdf).pvalue > KS_P
    assert abs(float(a.double().var()) / std**2 - 1) < 6 * math.sqrt((2 + TRUNC_EXCESS_KURTOSIS) / a.numel())
    assert s.describe((300, 200)).std == pytest.approx(std)


def test_numpy_keras_names_match_the_registry() -> None:
    from initwise import numpy as inp

    x = inp.init("he_normal", (4000, 50), np.random.default_rng(0))
    assert x.max() <= 2 * math.sqrt(2 / 50) / TRUNC.std() + 1e-12
    assert abs(x.var() / (2 / 50) - 1) < 6 * math.sqrt((2 + TRUNC_EXCESS_KURTOSIS) / x.size)


def test_torch_names_stay_plain_normals() -> None:
    assert initwise.get_scheme("kaiming_normal").name == "kaiming_normal"
    assert initwise.get_scheme("he").name == "kaiming_normal"
    assert initwise.get_scheme("xavier_normal").name == "xavier_normal"
    assert initwise.get_scheme("lecun_normal").name == "lecun_normal"  # initwise's own name


def test_truncated_normal_std_is_final_trunc_normal_std_is_parent() -> None:
    """``truncated_normal_(std=s)`` equals torch-style ``trunc_normal_`` with parent s / 0.8796."""
    s = 0.02
    parent = s / TRUNC.std()
    a, b = torch.empty(100_000), torch.empty(100_000)
    initwise.truncated_normal_(a, std=s, generator=_gen(9))
    initwise.trunc_normal_(b, 0.0, parent, -2 * parent, 2 * parent, generator=_gen(9))
    assert _same(a, b)
    # torch/JAX/Keras's "std=0.02" gives values of std 0.0176
    c = initwise.trunc_normal_(torch.empty(100_000), 0.0, s, -2 * s, 2 * s, generator=_gen(1))
    assert abs(float(c.double().std()) / (s * TRUNC.std()) - 1) < 6 * math.sqrt((2 + TRUNC_EXCESS_KURTOSIS) / c.numel()) / 2


# --------------------------------------------------------------------------- fan axes


@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(1, 6), min_size=2, max_size=5))
def test_default_axes_are_torchs_layout(shape: list[int]) -> None:
    assert initwise.axis_fans(shape) == initwise.tensor_fans(tuple(shape))


@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(1, 6), min_size=2, max_size=5))
def test_jax_default_axes_are_the_transposed_layout(shape: list[int]) -> None:
    """JAX's ``[*kernel, in, out]`` has the fans of torch's ``[out, in, *kernel]``."""
    jax_shape = (*shape[2:], shape[1], shape[0])
    assert initwise.axis_fans(jax_shape, in_axis=-2, out_axis=-1) == initwise.tensor_fans(tuple(shape))


def test_axis_fans_jax_examples() -> None:
    # jax.nn.initializers._compute_fans semantics
    assert initwise.axis_fans((3, 3, 16, 32), in_axis=-2, out_axis=-1) == (144.0, 288.0)
    assert initwise.axis_fans((8, 64, 32), in_axis=2, out_axis=1, batch_axis=0) == (32.0, 64.0)
    assert initwise.axis_fans((2, 3, 4, 5), in_axis=(0, 1), out_axis=3) == (24.0, 20.0)


def test_variance_scaling_with_axes_equals_explicit_fans() -> None:
    a, b = torch.empty(3, 3, 16, 32), torch.empty(3, 3, 16, 32)
    initwise.variance_scaling_(a, 2.0, "fan_avg", "uniform", in_axis=-2, out_axis=-1, generator=_gen(4))
    initwise.variance_scaling_(b, 2.0, "fan_avg", "uniform", fans=initwise.Fans(144.0, 288.0), generator=_gen(4))
    assert _same(a, b)


def test_batch_axis_gives_each_matrix_its_own_fans() -> None:
    w = torch.empty(64, 300, 200)
    initwise.variance_scaling_(w, 1.0, "fan_in", "normal", in_axis=2, out_axis=1, batch_axis=0, generator=_gen(0))
    assert abs(float(w.double().var()) * 200 - 1) < 6 * math.sqrt(2 / w.numel())


# --------------------------------------------------------------------------- complex variance scaling

_R2 = {  # law of |z|² / std² for each distribution (JAX's complex variance_scaling)
    "normal": stats.expon(),
    "uniform": stats.uniform(0, 2),
    "truncated_normal": stats.truncexpon(4.0, scale=1.0 / stats.truncexpon(4.0).mean()),
}


@pytest.mark.parametrize("distribution", list(_R2))
@pytest.mark.parametrize("keyed", [False, True], ids=["torch-generator", "key"])
def test_complex_variance_scaling_is_circular_with_exact_second_moment(distribution: str, keyed: bool) -> None:
    w = torch.empty(400, 250, dtype=torch.complex128)
    gen = initwise.random.key(1, "cx") if keyed else _gen(1)
    initwise.variance_scaling_(w, 2.0, "fan_in", distribution, generator=gen)
    var = 2.0 / 250
    r2 = (w.abs() ** 2 / var).flatten().numpy()
    law = _R2[distribution]
    assert abs(r2.mean() - 1) < 6 * law.std() / math.sqrt(r2.size)  # E|z|² = scale / fan
    assert stats.kstest(r2, law.cdf).pvalue > KS_P
    phase = (torch.angle(w).flatten().numpy() + math.pi) / (2 * math.pi)
    assert stats.kstest(phase, "uniform").pvalue > KS_P


def test_complex_named_schemes() -> None:
    w = torch.empty(300, 200, dtype=torch.complex64)
    initwise.he_truncated_normal_(w, generator=_gen(2))
    assert abs(float((w.abs() ** 2).double().mean()) / (2 / 200) - 1) < 6 * _R2["truncated_normal"].std() / math.sqrt(w.numel())


# --------------------------------------------------------------------------- far-tail truncation


@pytest.mark.parametrize("a,b", [(40.0, 41.0), (-41.0, -40.0), (38.0, 38.5), (60.0, math.inf), (-1e3, -999.0)])
def test_trunc_normal_far_tail_with_a_generator_is_exact(a: float, b: float) -> None:
    t = torch.empty(20_000, dtype=torch.float64)
    initwise.trunc_normal_(t, 0.0, 1.0, a, b, generator=_gen(11))
    x = t.numpy()
    assert a <= x.min() and x.max() <= b and np.unique(x).size > 19_000
    assert stats.kstest(x, stats.truncnorm(a, b).cdf).pvalue > KS_P


def test_trunc_normal_far_tail_scaled() -> None:
    t = initwise.trunc_normal_(torch.empty(20_000, dtype=torch.float64), 1.0, 0.5, 21.0, 21.5, generator=_gen(3))
    assert stats.kstest(t.numpy(), stats.truncnorm(40, 41, loc=1.0, scale=0.5).cdf).pvalue > KS_P


# --------------------------------------------------------------------------- conv centres


@pytest.mark.parametrize("k", [2, 3, 4, 5])
def test_dirac_and_delta_orthogonal_centre_is_k_floordiv_2(k: int) -> None:
    """torch's ``dirac_`` centre ``k // 2``; delta_orthogonal_ uses the same (JAX: ``(k - 1) // 2``)."""
    d = initwise.dirac_(torch.empty(3, 3, k, k))
    assert _same(d, torch.nn.init.dirac_(torch.empty(3, 3, k, k)))
    w = initwise.delta_orthogonal_(torch.empty(4, 3, k, k), generator=_gen(0))
    nz = w.abs().sum(dim=(0, 1)).nonzero().tolist()
    assert nz == [[k // 2, k // 2]]
    if k % 2:
        assert k // 2 == (k - 1) // 2  # odd kernels: the same tap as JAX
