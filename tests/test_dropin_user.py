"""The drop-in promise checked as a user porting torch code would (beyond test_dropin_torch).

Each test is a call that ``torch.nn.init`` accepts (or rejects) and that initwise handled
differently: the same call must give torch's values bitwise (or torch's error type), and the
NumPy API must validate what it is given the way the torch API does.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import initwise
from conftest import bitwise_equal
from initwise import numpy as inp

stats = pytest.importorskip("scipy.stats")

KS_P = 1e-4


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


_same = bitwise_equal


# --------------------------------------------------------------------------- torch's fan helpers


SHAPES = [(5, 3), (64, 32, 3, 3), (8, 4, 5), (2, 3, 2, 2, 2), (0, 3), (3, 0, 2)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_private_fan_helpers_are_torchs(shape: tuple[int, ...]) -> None:
    """Custom layers copy nn.Linear.reset_parameters, which calls init._calculate_fan_in_and_fan_out."""
    t = torch.empty(shape)
    ours = initwise._calculate_fan_in_and_fan_out(t)
    theirs = torch.nn.init._calculate_fan_in_and_fan_out(t)
    assert ours == theirs and all(type(x) is int for x in ours)
    for mode in ("fan_in", "fan_out", "FAN_IN", "Fan_Out"):
        assert initwise._calculate_correct_fan(t, mode) == torch.nn.init._calculate_correct_fan(t, mode)


def test_private_fan_helpers_errors_derive_from_torchs() -> None:
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        initwise._calculate_fan_in_and_fan_out(torch.empty(4))
    with pytest.raises(ValueError, match=r"Mode 'fan_avg' not supported.*fan_in, fan_out"):
        initwise._calculate_correct_fan(torch.empty(4, 3), "fan_avg")


def test_linear_reset_parameters_ported_to_initwise_is_bitwise_torchs() -> None:
    """nn.Linear.reset_parameters with ``init`` = initwise gives nn.Linear's own values."""
    torch.manual_seed(0)
    ref = nn.Linear(20, 7)
    w, b = torch.empty(7, 20), torch.empty(7)
    torch.manual_seed(0)
    initwise.kaiming_uniform_(w, a=math.sqrt(5))
    fan_in, _ = initwise._calculate_fan_in_and_fan_out(w)
    bound = 1 / math.sqrt(fan_in)
    initwise.uniform_(b, -bound, bound)
    assert _same(w, ref.weight.detach()) and _same(b, ref.bias.detach())


# --------------------------------------------------------------------------- kaiming arguments


@pytest.mark.parametrize("fn", ["kaiming_uniform_", "kaiming_normal_"])
@pytest.mark.parametrize("mode", ["FAN_IN", "Fan_Out"])
def test_kaiming_mode_is_case_insensitive_as_in_torch(fn: str, mode: str) -> None:
    ours, theirs = torch.empty(30, 20, 3), torch.empty(30, 20, 3)
    getattr(torch.nn.init, fn)(theirs, mode=mode, generator=_gen(1))
    getattr(initwise, fn)(ours, mode=mode, generator=_gen(1))
    assert _same(ours, theirs)


@pytest.mark.parametrize("fn", ["kaiming_uniform_", "kaiming_normal_"])
def test_kaiming_a_none_is_torchs_default_slope(fn: str) -> None:
    """torch passes a=None on to calculate_gain('leaky_relu', None): slope 0.01."""
    ours, theirs = torch.empty(30, 20), torch.empty(30, 20)
    getattr(torch.nn.init, fn)(theirs, None, generator=_gen(2))
    getattr(initwise, fn)(ours, None, generator=_gen(2))
    assert _same(ours, theirs)
    assert initwise.kaiming_gain("leaky_relu", None) == torch.nn.init.calculate_gain("leaky_relu")
    assert initwise.kaiming_gain("relu", None) == math.sqrt(2.0)
    assert initwise.kaiming_gain("gelu", None) == initwise.gain("gelu")


# --------------------------------------------------------------------------- 0-d tensors as numbers

T = torch.tensor

ZERO_DIM = [
    ("uniform_", (T(-1.0), T(2))),
    ("uniform_", (-1.0, T(2.5, dtype=torch.float64))),
    ("normal_", (T(0.1), T(0.5))),
    ("normal_", (T(1), 2.0)),
    ("sparse_", (T(0.5), T(0.1))),
    ("orthogonal_", (T(2.0),)),
    ("xavier_normal_", (T(0.5, dtype=torch.float64),)),
]


@pytest.mark.parametrize("fn,args", ZERO_DIM, ids=[f"{f}{i}" for i, (f, _) in enumerate(ZERO_DIM)])
def test_zero_dim_tensors_are_numbers_as_in_torch(fn: str, args: tuple[Any, ...]) -> None:
    ours, theirs = torch.empty(12, 8), torch.empty(12, 8)
    torch.manual_seed(3)  # torch's sparse_ draws its permutations from the global generator
    getattr(torch.nn.init, fn)(theirs, *args, generator=None if fn == "sparse_" else _gen(4))
    torch.manual_seed(3)
    getattr(initwise, fn)(ours, *args, generator=None if fn == "sparse_" else _gen(4))
    assert _same(ours, theirs)


def test_zero_dim_tensors_in_trunc_normal_and_dirac() -> None:
    a = initwise.trunc_normal_(torch.empty(50), T(0.5), T(2.0), T(-1.0), T(3), generator=_gen(5))
    b = initwise.trunc_normal_(torch.empty(50), 0.5, 2.0, -1.0, 3.0, generator=_gen(5))
    assert _same(a, b)
    assert _same(initwise.dirac_(torch.empty(4, 2, 3), T(2)), torch.nn.init.dirac_(torch.empty(4, 2, 3), 2))
    # a float32 0-d gain: torch computes the bound in float32 tensors, initwise in float64
    c = initwise.xavier_uniform_(torch.empty(12, 8), T(2.0), generator=_gen(6))
    assert _same(c, initwise.xavier_uniform_(torch.empty(12, 8), 2.0, generator=_gen(6)))
    assert torch.allclose(c, torch.nn.init.xavier_uniform_(torch.empty(12, 8), T(2.0), generator=_gen(6)), rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    "call,name",
    [(lambda t: initwise.normal_(t, 0.0, T([0.5])), "std"),
     (lambda t: initwise.uniform_(t, T([0.5]), 1.0), "a"),
     (lambda t: initwise.xavier_normal_(t, T([1.0, 2.0])), "gain"),
     (lambda t: initwise.normal_(t, T(True)), "mean"),
     (lambda t: initwise.normal_(t, 0.0, T(0.5 + 0j)), "std")],
    ids=["std 1-elem", "a 1-elem", "gain 2-elem", "mean bool tensor", "std complex tensor"],
)
def test_tensors_with_dimensions_are_not_numbers(call: Any, name: str) -> None:
    """torch refuses ``normal_(t, 0, tensor([0.5]))`` (TypeError); so does initwise, naming it."""
    t = torch.full((4, 4), 7.0)
    with pytest.raises(TypeError, match=rf"\b{name} must be a real number"):
        call(t)
    assert bool((t == 7.0).all())


def test_constant_complex_with_zero_imaginary_part_fills_a_real_tensor_as_torch() -> None:
    for val in (1.5 + 0j, T(1.5 + 0j)):
        ours, theirs = torch.zeros(3), torch.zeros(3)
        torch.nn.init.constant_(theirs, val)
        assert _same(initwise.constant_(ours, val), theirs)


# --------------------------------------------------------------------------- NumPy API


def _np_call(fn: str, rng: Any) -> np.ndarray:
    return getattr(inp, fn)(30, 20, rng)


@pytest.mark.parametrize("fn", ["xavier_uniform", "xavier_normal", "kaiming_normal", "kaiming_uniform", "lecun_normal", "lecun_uniform"])
def test_numpy_rng_takes_what_default_rng_takes(fn: str) -> None:
    """SPEC 7 (NumPy): ``rng`` is anything ``np.random.default_rng`` accepts."""
    ref = _np_call(fn, np.random.default_rng(7))
    for rng in (7, np.int64(7), np.random.SeedSequence(7), np.random.PCG64(7)):
        assert np.array_equal(_np_call(fn, rng), ref)
    assert np.array_equal(inp.init(fn, (20, 30), 7), ref)
    assert _np_call(fn, None).shape == (20, 30)


@pytest.mark.parametrize("rng", [True, -1, 1.5, "0", np.random.RandomState(0), torch.Generator()],
                         ids=["bool", "negative", "float", "str", "RandomState", "torch"])
def test_numpy_rng_refuses_the_rest(rng: Any) -> None:
    with pytest.raises((TypeError, ValueError), match=r"rng must be a numpy\.random\.Generator, an int seed"):
        inp.xavier_uniform(4, 3, rng)


NP_BAD = [
    ("typo", lambda: inp.init("xavier_uniform", (4, 3), 0, gian=2.0), ValueError, r"xavier_uniform.*'gian'; did you mean 'gain'"),
    ("param of zeros", lambda: inp.init("zeros", (4, 3), 0, std=1.0), ValueError, r"zeros.*'std'"),
    ("gain negative", lambda: inp.init("xavier_uniform", (4, 3), 0, gain=-2.0), ValueError, r"gain must be finite and > 0"),
    ("gain str", lambda: inp.init("xavier_normal", (4, 3), 0, gain="2"), TypeError, r"gain must be a real number"),
    ("kaiming fan_avg", lambda: inp.init("kaiming_normal", (4, 3), 0, mode="fan_avg"), ValueError, r"unknown mode 'fan_avg'"),
    ("normal std nan", lambda: inp.init("normal", (4, 3), 0, std=math.nan), ValueError, r"std must be finite"),
    ("normal mean str", lambda: inp.init("normal", (4, 3), 0, mean="0"), TypeError, r"mean must be a real number"),
    ("uniform a > b", lambda: inp.init("uniform", (4, 3), 0, a=1.0, b=0.0), ValueError, r"need finite a <= b"),
    ("float dim", lambda: inp.init("kaiming_normal", (2.5, 3), 0), TypeError, r"shape must be .*ints, got \(2\.5, 3\)"),
    ("negative dim", lambda: inp.init("kaiming_normal", (-1, 3), 0), ValueError, r"shape .*-1"),
    ("orthogonal 1-D", lambda: inp.init("orthogonal", (3,), 0), ValueError, r"orthogonal.*at least 2 dimensions"),
    ("trunc a str", lambda: inp.truncated_normal((3,), 1.0, 0, a="x"), TypeError, r"a must be a real number"),
    ("trunc mean nan", lambda: inp.truncated_normal((3,), 1.0, 0, mean=math.nan), ValueError, r"mean must be finite"),
    ("vs float shape", lambda: inp.variance_scaling((4.7, 3), rng=0), TypeError, r"shape must be"),
]


@pytest.mark.parametrize("call,err,match", [c[1:] for c in NP_BAD], ids=[c[0] for c in NP_BAD])
def test_numpy_bad_input(call: Any, err: type, match: str) -> None:
    with pytest.raises(err, match=match):
        call()


def test_numpy_init_params_reach_the_scheme() -> None:
    """Every parameter a name takes changes what is drawn (none is silently dropped)."""
    shape = (200, 100, 3)
    assert np.array_equal(inp.init("xavier_uniform", shape, 1, gain=2.0), 2.0 * inp.init("xavier_uniform", shape, 1))
    k = inp.init("kaiming_normal", shape, 1, mode="fan_out", nonlinearity="tanh")
    assert np.array_equal(k, inp.variance_scaling(shape, (5 / 3) ** 2, "fan_out", "normal", 1))
    u = inp.init("uniform", (50_000,), 2, a=-3.0, b=5.0)
    assert stats.kstest(u, stats.uniform(-3, 8).cdf).pvalue > KS_P
    n = inp.init("normal", (50_000,), 3, mean=1.0, std=0.5)
    assert stats.kstest(n, stats.norm(1.0, 0.5).cdf).pvalue > KS_P


@pytest.mark.parametrize("shape", [(64, 32, 3, 3), (16, 8, 5), (8, 4, 2, 3, 3), (100, 50)], ids=str)
@pytest.mark.parametrize("name,mode", [("kaiming_normal", "fan_in"), ("kaiming_normal", "fan_out"), ("xavier_normal", None)])
def test_numpy_fans_are_torchs_conv_convention(shape: tuple[int, ...], name: str, mode: str | None) -> None:
    """The NumPy scheme on a conv shape has the variance torch's scheme has on that shape."""
    fi, fo = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
    var = {"fan_in": 2 / fi, "fan_out": 2 / fo, None: 2 / (fi + fo)}[mode]
    x = inp.init(name, shape, 11, **({"mode": mode} if mode else {}))
    assert abs(x.var() / var - 1) < 6 * math.sqrt(2 / x.size)  # normal: excess kurtosis 0
    assert stats.kstest(x.ravel(), stats.norm(0, math.sqrt(var)).cdf).pvalue > KS_P


# --------------------------------------------------------------------------- the keyed path

KEYED: dict[str, tuple[tuple[int, ...], Any]] = {
    "uniform_": ((300, 200), lambda t, k: initwise.uniform_(t, -0.5, 2.0, generator=k)),
    "normal_": ((300, 200), lambda t, k: initwise.normal_(t, 0.1, 0.02, generator=k)),
    "trunc_normal_": ((300, 200), lambda t, k: initwise.trunc_normal_(t, 0.0, 0.02, -0.04, 0.03, generator=k)),
    "truncated_normal_": ((300, 200), lambda t, k: initwise.truncated_normal_(t, std=0.02, generator=k)),
    "xavier_uniform_": ((64, 32, 3, 3), lambda t, k: initwise.xavier_uniform_(t, 1.3, generator=k)),
    "xavier_normal_": ((64, 32, 3, 3), lambda t, k: initwise.xavier_normal_(t, generator=k)),
    "kaiming_uniform_": ((64, 32, 3, 3), lambda t, k: initwise.kaiming_uniform_(t, a=math.sqrt(5), generator=k)),
    "kaiming_normal_": ((64, 32, 3, 3), lambda t, k: initwise.kaiming_normal_(t, mode="fan_out", nonlinearity="relu", generator=k)),
    "lecun_normal_": ((300, 200), lambda t, k: initwise.lecun_normal_(t, generator=k)),
    "he_truncated_normal_": ((64, 32, 3, 3), lambda t, k: initwise.he_truncated_normal_(t, generator=k)),
    "orthogonal_": ((300, 256), lambda t, k: initwise.orthogonal_(t, 1.5, generator=k)),
    "delta_orthogonal_": ((64, 32, 3, 3), lambda t, k: initwise.delta_orthogonal_(t, generator=k)),
    "sparse_": ((300, 200), lambda t, k: initwise.sparse_(t, 0.3, 0.05, generator=k)),
}


def _layouts(shape: tuple[int, ...], dtype: torch.dtype) -> list[torch.Tensor]:
    """Non-contiguous destinations of ``shape``: transposed, strided slice, channels_last."""
    swapped = (shape[1], shape[0], *shape[2:])
    views = [torch.zeros(swapped, dtype=dtype).transpose(0, 1), torch.zeros((2 * shape[0], *shape[1:]), dtype=dtype)[::2]]
    if len(shape) == 4:
        views.append(torch.zeros(shape, dtype=dtype).to(memory_format=torch.channels_last))
    return views


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", list(KEYED))
def test_keyed_bits_do_not_depend_on_threads_or_the_destination_layout(name: str, dtype: torch.dtype) -> None:
    shape, fill = KEYED[name]
    key = initwise.random.key(19, name)
    prev = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        ref = fill(torch.empty(shape, dtype=dtype), key)
        torch.set_num_threads(2)
        for view in [torch.empty(shape, dtype=dtype), *_layouts(shape, dtype)]:
            assert fill(view, key) is view
            assert _same(view, ref), (name, view.stride())
    finally:
        torch.set_num_threads(prev)


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    return torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape, device="meta"))


def _trunc(lo: float, hi: float, std: float, mean: float = 0.0) -> Any:
    return stats.truncnorm((lo - mean) / std, (hi - mean) / std, loc=mean, scale=std)


def _kurt(law: Any) -> float:
    return float(law.stats(moments="k"))


S2 = stats.truncnorm(-2, 2).std()
LAWS: dict[str, Any] = {  # the exact law of each keyed scheme's values at its KEYED shape
    "uniform_": stats.uniform(-0.5, 2.5),
    "normal_": stats.norm(0.1, 0.02),
    "trunc_normal_": _trunc(-0.04, 0.03, 0.02),
    "truncated_normal_": stats.truncnorm(-2, 2, scale=0.02 / S2),
    "xavier_uniform_": stats.uniform(-1.3 * math.sqrt(6 / sum(_fans((64, 32, 3, 3)))), 2 * 1.3 * math.sqrt(6 / sum(_fans((64, 32, 3, 3))))),
    "xavier_normal_": stats.norm(0, math.sqrt(2 / sum(_fans((64, 32, 3, 3))))),
    "kaiming_uniform_": stats.uniform(-math.sqrt(1 / 288), 2 * math.sqrt(1 / 288)),  # a=√5: gain² = 1/3, bound √(3·gain²/288)
    "kaiming_normal_": stats.norm(0, math.sqrt(2 / 576)),
    "lecun_normal_": stats.norm(0, math.sqrt(1 / 200)),
    "he_truncated_normal_": stats.truncnorm(-2, 2, scale=math.sqrt(2 / 288) / S2),
}


@pytest.mark.parametrize("name", list(LAWS))
def test_keyed_values_have_the_exact_law(name: str) -> None:
    shape, fill = KEYED[name]
    x = fill(torch.empty(shape, dtype=torch.float64), initwise.random.key(5, name)).flatten().numpy()
    law = LAWS[name]
    assert stats.kstest(x, law.cdf).pvalue > KS_P
    se = math.sqrt((2 + _kurt(law)) / x.size)
    assert abs(x.var() / law.var() - 1) < 6 * se
    assert abs(x.mean() - law.mean()) < 6 * law.std() / math.sqrt(x.size)


def test_keyed_orthogonal_is_haar_scaled_by_gain() -> None:
    shape, fill = KEYED["orthogonal_"]
    q = fill(torch.empty(shape, dtype=torch.float64), initwise.random.key(5, "orthogonal_")) / 1.5
    rows, cols = shape
    assert torch.allclose(q.T @ q, torch.eye(cols, dtype=torch.float64), atol=1e-12)  # tall: orthonormal columns
    # a column of a Haar matrix is uniform on the sphere of R^rows: q_ij² ~ Beta(1/2, (rows - 1) / 2)
    assert stats.kstest((q**2).flatten().numpy(), stats.beta(0.5, (rows - 1) / 2).cdf).pvalue > KS_P
    # the sign fix: without it the diagonal is biased; sqrt(rows)·q_ii has mean 0 and variance 1
    d = math.sqrt(rows) * torch.diagonal(q).numpy()
    assert abs(d.mean()) < 6 / math.sqrt(d.size)


def test_keyed_delta_orthogonal_and_sparse_structure() -> None:
    shape, fill = KEYED["delta_orthogonal_"]
    w = fill(torch.empty(shape, dtype=torch.float64), initwise.random.key(5, "d"))
    c = w[:, :, 1, 1]
    assert torch.allclose(c.T @ c, torch.eye(32, dtype=torch.float64), atol=1e-12)
    assert int(w.count_nonzero()) == int(c.count_nonzero())
    shape, fill = KEYED["sparse_"]
    s = fill(torch.empty(shape, dtype=torch.float64), initwise.random.key(5, "s"))
    zeros = s == 0
    assert zeros.sum(0).tolist() == [math.ceil(0.3 * 300)] * 200
    assert stats.kstest(s[~zeros].numpy(), stats.norm(0, 0.05).cdf).pvalue > KS_P
    # the zeroed rows are a uniform choice: each row is zero in a column with probability 0.3
    per_row = zeros.sum(1).double().numpy()
    assert abs(per_row.mean() / 200 - 0.3) < 1e-12  # exact: 90 zeros in each of 200 columns
    # columns are independent, each zeroing 90 of 300 rows: E[s²] (ddof=1) of the per-row counts
    # is 200 · (90·210/300)/299; a count is about Binomial(200, 0.3) (excess kurtosis ≈ -0.008)
    expected = 200 * (90 * 210 / 300) / 299
    excess = (1 - 6 * 0.3 * 0.7) / (200 * 0.3 * 0.7)
    assert abs(per_row.var(ddof=1) / expected - 1) < 6 * math.sqrt((2 + excess) / (per_row.size - 1))


# --------------------------------------------------------------------------- messages and no-ops


@pytest.mark.parametrize("fn", ["kaiming_uniform_", "kaiming_normal_"])
@pytest.mark.parametrize("shape", [(0,), (0, 3), (2, 0, 3)], ids=str)
def test_kaiming_on_an_empty_tensor_of_any_dim_is_torchs_warned_no_op(fn: str, shape: tuple[int, ...]) -> None:
    t = torch.empty(shape)
    with pytest.warns(UserWarning, match="Initializing zero-element tensors is a no-op"):
        getattr(torch.nn.init, fn)(torch.empty(shape))
    with pytest.warns(UserWarning, match=rf"^{fn}: Initializing zero-element tensors is a no-op"):
        assert getattr(initwise, fn)(t) is t


@pytest.mark.parametrize(
    "fn,call",
    [("kaiming_uniform_", lambda t: initwise.kaiming_uniform_(t, mode="fan_avg")),
     ("kaiming_normal_", lambda t: initwise.kaiming_normal_(t, mode=3)),
     ("variance_scaling_", lambda t: initwise.variance_scaling_(t, 1.0, "fan_sum")),
     ("variance_scaling_", lambda t: initwise.variance_scaling_(t, 1.0, "fan_in", "gauss")),
     ("orthogonal_", lambda t: initwise.orthogonal_(t, -1.0)),
     ("delta_orthogonal_", lambda t: initwise.delta_orthogonal_(t[..., None], -1.0))],
    ids=["kaiming mode", "kaiming mode int", "vs mode", "vs distribution", "orthogonal gain", "delta gain"],
)
def test_option_errors_name_the_function(fn: str, call: Any) -> None:
    with pytest.raises(ValueError, match=rf"^{fn}: "):
        call(torch.empty(6, 4))


@pytest.mark.parametrize("fn,args", [("xavier_uniform_", (1.7,)), ("xavier_normal_", (0.3,)),
                                     ("kaiming_uniform_", (math.sqrt(5),)), ("kaiming_normal_", (0.2, "fan_out"))])
@pytest.mark.parametrize("shape", [(3, 2), (37, 11, 3), (64, 32, 3, 3)], ids=str)
def test_fan_schemes_are_torchs_bits_in_float32_and_within_one_ulp_in_float64(fn: str, args: tuple[Any, ...], shape: tuple[int, ...]) -> None:
    """initwise's std is sqrt(gain² / fan) (one formula for every scheme), torch's gain / sqrt(fan)."""
    for dtype in (torch.float32, torch.float64):
        ours = getattr(initwise, fn)(torch.empty(shape, dtype=dtype), *args, generator=_gen(8))
        theirs = getattr(torch.nn.init, fn)(torch.empty(shape, dtype=dtype), *args, generator=_gen(8))
        if dtype == torch.float32:
            assert _same(ours, theirs)
        else:
            # std (bound) within 1 ulp: a value std·z within ~1 ulp of itself, a uniform
            # a + u·(b - a) within ~2 ulp of the bound
            assert bool(((ours - theirs).abs() <= 2.0**-51 * theirs.abs().max()).all())


EMPTY_CALLS = [("uniform_", (0, 3), ()), ("normal_", (0, 3), ()), ("trunc_normal_", (0, 3), ()),
               ("truncated_normal_", (0, 3), ()), ("xavier_uniform_", (0, 3), ()), ("kaiming_normal_", (0,), ()),
               ("lecun_normal_", (0, 3), ()), ("orthogonal_", (0, 3), ()), ("zeros_", (0, 3), ()),
               ("constant_", (0, 3), (0.5,)), ("eye_", (0, 3), ()), ("dirac_", (0, 3, 3), ()),
               ("sparse_", (0, 3), (0.5,)), ("variance_scaling_", (0, 3), ()),
               ("he_truncated_normal_", (0, 3), ()), ("delta_orthogonal_", (0, 3, 3), ())]  # fmt: skip


@pytest.mark.parametrize("fn,shape,args", EMPTY_CALLS, ids=[c[0] for c in EMPTY_CALLS])
def test_zero_element_warning_points_at_the_callers_line(fn: str, shape: tuple[int, ...], args: tuple[Any, ...]) -> None:
    """The no-op warning is attributed to the user's call (so filters by module and the
    printed location work), whatever the depth of initwise's own frames."""
    with pytest.warns(UserWarning, match="zero-element") as rec:
        getattr(initwise, fn)(torch.empty(shape), *args)
    assert [w.filename for w in rec] == [__file__]


# --------------------------------------------------------------------------- NumPy: every scheme


def _registry_names() -> list[str]:
    from initwise.registry import resolve_scheme_name, scheme_names

    return sorted({resolve_scheme_name(n) for n in scheme_names()} - {"critical"})


NP_PARAMS: dict[str, dict[str, Any]] = {"constant": {"val": 0.25}, "sparse": {"sparsity": 0.3}}
NP_SHAPES: dict[str, tuple[int, ...]] = {"eye": (40, 30), "sparse": (400, 300), "dirac": (12, 6, 3, 3),
                                         "delta_orthogonal": (48, 32, 3, 3)}  # fmt: skip


@pytest.mark.parametrize("name", _registry_names())
def test_numpy_has_every_registry_scheme_with_torchs_law(name: str) -> None:
    """README: "initwise.numpy has the same schemes". Structured ones equal torch's bitwise (in
    float64); random ones have the registry's standard deviation for that shape (6 SE), and the
    exact law where it is a normal, a uniform or a truncated normal (KS)."""
    shape = NP_SHAPES.get(name, (300, 100, 3))
    params = NP_PARAMS.get(name, {})
    x = inp.init(name, shape, 3, **params)
    assert x.shape == shape and x.dtype == np.float64
    expected = initwise.get_scheme(name, **params).describe(shape)
    t = torch.empty(shape, dtype=torch.float64)
    if expected.std is None or name in ("constant", "zeros", "ones"):
        initwise.get_scheme(name, **params)(t, generator=_gen(0))
        assert np.array_equal(x, t.numpy())
        return
    if name in ("orthogonal", "delta_orthogonal"):
        q = x[:, :, 1, 1] if x.ndim == 4 else x.reshape(shape[0], -1)
        gram = q.T @ q if q.shape[0] >= q.shape[1] else q @ q.T
        assert np.allclose(gram, np.eye(gram.shape[0]), atol=1e-12)
        return
    law = {"normal": stats.norm(expected.mean, expected.std),
           "uniform": stats.uniform(expected.mean - (expected.bound or 0.0), 2 * (expected.bound or 0.0))}.get(expected.distribution)
    values = x[x != 0] if name == "sparse" else x.ravel()
    if name == "sparse":
        assert (x == 0).sum(axis=0).tolist() == [math.ceil(0.3 * 400)] * 300
        law = stats.norm(0, 0.01)
    if "trunc" in name:  # every truncated scheme cuts at ±2 parent standard deviations here
        law = stats.truncnorm(-2, 2, scale=expected.std / S2)
    assert law is not None, expected
    assert stats.kstest(values, law.cdf).pvalue > KS_P
    kurt = {"normal": 0.0, "uniform": -1.2}.get(expected.distribution, -0.63)  # ±2σ truncation: -0.63
    if name != "sparse":
        assert abs(values.var() / expected.std**2 - 1) < 6 * math.sqrt((2 + kurt) / values.size)


def test_numpy_trunc_normal_is_torchs_absolute_bounds() -> None:
    x = inp.init("trunc_normal", (100_000,), 4, mean=0.5, std=2.0, a=-1.0, b=3.0)
    assert stats.kstest(x, stats.truncnorm(-0.75, 1.25, loc=0.5, scale=2.0).cdf).pvalue > KS_P
    assert np.array_equal(inp.init("trunc_normal", (3,), 0, a=0.5, b=0.5), np.full(3, 0.5))


def test_numpy_names_without_a_numpy_form_say_so() -> None:
    with pytest.raises(ValueError, match=r"scheme 'critical' has no NumPy form"):
        inp.init("critical", (4, 4), 0)
    with pytest.raises(ValueError, match=r"unknown scheme 'dirak'; did you mean 'dirac'\?"):
        inp.init("dirak", (4, 4, 3), 0)


@pytest.mark.parametrize("fn", ["kaiming_normal", "kaiming_uniform"])
def test_numpy_kaiming_a_is_the_leaky_slope_as_in_the_torch_scheme(fn: str) -> None:
    """``a`` means what it means in ``kaiming_*_``: with the default nonlinearity it is leaky
    ReLU's slope (numpy's default used to be ``relu``, which ignores ``a``)."""
    a, fan_in = 0.5, 200
    x = getattr(inp, fn)(fan_in, 300, 1, a=a)
    var = torch.nn.init.calculate_gain("leaky_relu", a) ** 2 / fan_in
    kurt = 0.0 if fn.endswith("normal") else -1.2
    assert abs(x.var() / var - 1) < 6 * math.sqrt((2 + kurt) / x.size)
    assert np.array_equal(getattr(inp, fn)(fan_in, 300, 1), getattr(inp, fn)(fan_in, 300, 1, nonlinearity="relu"))
    y = inp.init(fn, (300, fan_in), 1, a=a)
    assert np.array_equal(x, y)


@pytest.mark.parametrize("fans", [(0.0, 4.0), (3.0, math.inf), ("3", 4.0)], ids=["zero", "inf", "str"])
def test_numpy_variance_scaling_checks_fans(fans: Any) -> None:
    with pytest.raises((ValueError, TypeError), match=r"variance_scaling: fans\.fan_(in|out) must be"):
        inp.variance_scaling((4, 3), fans=fans, rng=0)
