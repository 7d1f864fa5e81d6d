"""Tests for initwise.random: the keyed, addressable Philox4x32-10 engine."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import assert_variance
from initwise import random as iwr
from initwise._checks import InitwiseWarning
from initwise.random import _engine, _philox

NATIVE = iwr.native_available()
needs_native = pytest.mark.skipif(not NATIVE, reason="C extension not built")
BACKENDS = ["native", "numpy", "torch"] if NATIVE else ["numpy", "torch"]
FILLS = {"uniform": iwr.uniform_, "normal": iwr.normal_, "trunc_normal": iwr.trunc_normal_}
INF = math.inf

# Random123 kat_vectors: counter (4 words), key (2 words) -> output (4 words)
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]

# (dist, params, extra kwargs) used across the equivalence tests
CASES = [
    ("uniform", {"low": -0.3, "high": 0.7}),
    ("normal", {"mean": 0.5, "std": 2.0}),
    ("trunc_normal", {"std": 1.0, "a": -2.0, "b": 2.0}),
    ("trunc_normal", {"std": 0.5, "a": -0.5, "b": 3.0}),
    ("trunc_normal", {"a": 3.0, "b": INF}),
    ("trunc_normal", {"a": -INF, "b": -7.0}),
]


def _fill(dist, shape, k, dtype=torch.float64, **kw):
    return FILLS[dist](torch.empty(shape, dtype=dtype), k, **kw)


# ------------------------------------------------------------------ Philox known answers


@pytest.mark.parametrize(("ctr", "k", "expected"), KAT)
def test_philox_known_answers_numpy(ctr, k, expected):
    out = _philox.philox4x32_10(tuple(np.array([c], dtype=np.uint64) for c in ctr), k)
    assert tuple(int(w[0]) for w in out) == expected


@needs_native
@pytest.mark.parametrize(("ctr", "k", "expected"), KAT)
def test_philox_known_answers_native(ctr, k, expected):
    assert _engine._native.philox(ctr, k) == expected


# ------------------------------------------------------------------ keys


def test_key_golden_values():
    # Accidental changes to the key derivation or the transforms change these.
    k = iwr.key(0, "layer.weight")
    assert k.words == (2530357775, 2472961316, 4004626965, 2438170665)
    u = iwr.uniform_(torch.empty(3, dtype=torch.float64), k)
    assert [v.hex() for v in u.tolist()] == [
        "0x1.9bf45a99c209cp-3", "0x1.622cf1e6260d8p-4", "0x1.37bc17a1ad9bep-2"]
    z = iwr.normal_(torch.empty(3, dtype=torch.float64), k)
    assert [v.hex() for v in z.tolist()] == [
        "0x1.8875b91a85285p+0", "0x1.da07cd2573e78p-1", "0x1.0dc0960fd8591p-3"]


def test_key_value_semantics():
    k = iwr.key(3, "enc.w", stream=2)
    assert k == iwr.Key(3, "enc.w", 2) and hash(k) == hash(iwr.Key(3, "enc.w", 2))
    assert "seed=3" in repr(k) and "enc.w" in repr(k) and "stream=2" in repr(k)
    d = k.child("gate_i").fold(4).to_dict()
    assert d["path"] == ["gate_i", 4]
    import json

    assert iwr.Key.from_dict(json.loads(json.dumps(d))) == k.child("gate_i").fold(4)
    bad = dict(d, philox_key=["00000000", "00000000"])
    with pytest.raises(ValueError, match="philox_key"):
        iwr.Key.from_dict(bad)
    # derivations are distinct from each other and from names that look alike
    words = {
        x.words
        for x in [k, k.child("a"), k.child("b"), k.fold(0), k.fold(1), k.child("a").child("b"),
                  iwr.key(3, "enc.w/a", 2), iwr.key(3, "enc.w", 3), iwr.key(4, "enc.w", 2),
                  iwr.key(3, "enc.w", 2).fold(1).fold(2), k.fold(2).fold(1)]
    }
    assert len(words) == 11
    with pytest.raises(TypeError):
        iwr.key("0", "x")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        iwr.key(True, "x")
    with pytest.raises(ValueError):
        iwr.key(0, "x", stream=-1)


def test_streams_are_different_and_uncorrelated():
    n = 200_000
    keys = [iwr.key(0, "w"), iwr.key(1, "w"), iwr.key(0, "v"), iwr.key(0, "w", 1),
            iwr.key(0, "w").child("c"), iwr.key(0, "w").fold(1)]
    xs = [iwr.normal_(torch.empty(n, dtype=torch.float64), k).numpy() for k in keys]
    c = np.corrcoef(np.stack(xs))
    off = c[~np.eye(len(xs), dtype=bool)]
    assert np.abs(off).max() < 6.0 / math.sqrt(n)  # SE of a correlation is 1/sqrt(n)
    # uniform and its neighbour-element structure: lag-1 correlation within a stream
    u = iwr.uniform_(torch.empty(n, dtype=torch.float64), keys[0]).numpy()
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 6.0 / math.sqrt(n)
    z = xs[0]  # cos/sin pairs of one Box-Muller draw are uncorrelated too
    assert abs(np.corrcoef(z[0::2], z[1::2])[0, 1]) < 6.0 / math.sqrt(n / 2)


# ------------------------------------------------------------------ distributions


@pytest.mark.parametrize("backend", BACKENDS)
def test_uniform_distribution(backend):
    n = 200_000 if backend == "native" else 50_000
    with iwr.use_backend(backend):
        x = iwr.uniform_(torch.empty(n, dtype=torch.float64), iwr.key(11, "u"), low=-1.0, high=3.0)
    a = x.numpy()
    assert a.min() > -1.0 and a.max() < 3.0
    assert scipy.stats.kstest(a, scipy.stats.uniform(-1.0, 4.0).cdf).pvalue > 1e-4
    assert_variance(x, 16.0 / 12.0, excess_kurtosis=-1.2, mean=1.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_normal_distribution(backend):
    n = 200_000 if backend == "native" else 50_000
    with iwr.use_backend(backend):
        x = iwr.normal_(torch.empty(n, dtype=torch.float64), iwr.key(12, "n"), mean=1.0, std=3.0)
    assert scipy.stats.kstest(x.numpy(), scipy.stats.norm(1.0, 3.0).cdf).pvalue > 1e-4
    assert_variance(x, 9.0, excess_kurtosis=0.0, mean=1.0)
    assert abs(float(x.mean()) - 1.0) < 6 * 3.0 / math.sqrt(n)


@pytest.mark.parametrize(
    ("a", "b"),
    [(-2.0, 2.0), (-1.0, 3.0), (0.5, 1.5), (-INF, -3.0), (4.0, INF), (-8.0, -6.0), (-INF, INF),
     (-0.1, 0.05)],
)
def test_trunc_normal_distribution(a, b):
    n = 100_000
    mean, std = 0.25, 1.5
    x = iwr.trunc_normal_(torch.empty(n, dtype=torch.float64), iwr.key(13, f"t{a},{b}"),
                          mean=mean, std=std, a=a, b=b).numpy()
    target = scipy.stats.truncnorm(a, b, loc=mean, scale=std)
    assert x.min() >= mean + a * std and x.max() <= mean + b * std
    assert scipy.stats.kstest(x, target.cdf).pvalue > 1e-4
    m, v, _, k = (float(s) for s in target.stats(moments="mvsk"))
    assert_variance(x, v, excess_kurtosis=k, mean=m)


@pytest.mark.parametrize("backend", BACKENDS)
def test_normal32_distribution(backend):
    """The float32 transform (normal_ into float32): KS, moments, mean; and the bounded tail:
    u1 >= 2^-24, so |z| <= sqrt(48 ln 2) = 5.77."""
    n = 1_000_000 if backend == "native" else 100_000
    with iwr.use_backend(backend):
        x = iwr.normal_(torch.empty(n), iwr.key(12, "n32"), mean=1.0, std=3.0)
    assert x.dtype == torch.float32
    xd = x.double()
    assert scipy.stats.kstest(xd.numpy(), scipy.stats.norm(1.0, 3.0).cdf).pvalue > 1e-4
    assert_variance(xd, 9.0, excess_kurtosis=0.0, mean=1.0)
    assert abs(float(xd.mean()) - 1.0) < 6 * 3.0 / math.sqrt(n)
    assert float((xd - 1.0).abs().max()) <= 3.0 * math.sqrt(48 * math.log(2)) * (1 + 1e-6)


def test_normal32_tails_and_signs():
    """Tail frequencies of 16M float32 normals against the normal's (binomial 5-sigma bands):
    what a truncated or biased Box-Muller would miss. P(|z| > 5) = 5.7e-7 is ~9.6 values."""
    x = iwr.normal_(torch.empty(1 << 24), iwr.key(31, "tails")).double().numpy()
    n = x.size
    for t in (1.0, 2.0, 3.0, 4.0, 5.0):
        p = 2 * scipy.stats.norm.sf(t)
        k = int(np.count_nonzero(np.abs(x) > t))
        assert abs(k - n * p) <= 5 * math.sqrt(n * p * (1 - p)) + 3, (t, k, n * p)
    pos = int(np.count_nonzero(x > 0))
    assert abs(pos - n / 2) <= 5 * math.sqrt(n / 4)
    # the four quarters of a block (cos, sin of two pairs) are each N(0, 1) and uncorrelated
    q = x.reshape(-1, 4)
    c = np.corrcoef(q.T)
    assert np.max(np.abs(c - np.eye(4))) < 5 / math.sqrt(q.shape[0])
    assert np.max(np.abs(q.std(axis=0) - 1.0)) < 5 * math.sqrt(0.5 / q.shape[0])


def test_normal32_accurate():
    """Each float32 value is within 4 ulp of the exact Box-Muller value of its own words
    (log, sin, cos and sqrt in float64 from libm)."""
    key4 = iwr.key(5, "acc32").words
    blocks = np.arange(0, 100_000, dtype=np.uint64)
    p = (0.0, 1.0, 0, 0, 0, 0, 0, 0)
    got = np.stack(_philox.block_values32(key4, p, blocks), axis=1).astype(np.float64)
    w = [x.astype(np.uint32) for x in _philox.philox4x32_10(
        (blocks & np.uint64(0xFFFFFFFF), blocks >> np.uint64(32),
         np.full_like(blocks, key4[2]), np.full_like(blocks, key4[3])), (key4[0], key4[1]))]
    cols = []
    for wu, wt in ((w[0], w[1]), (w[2], w[3])):
        r = np.sqrt(-2.0 * np.log(((wu >> np.uint32(9)).astype(np.float64) + 0.5) * 2.0**-23))
        theta = (np.pi / 4) * ((wt >> np.uint32(29)).astype(np.float64)
                               + (((wt >> np.uint32(6)) & np.uint32(0x7FFFFF)).astype(np.float64) + 0.5) * 2.0**-23)
        cols += [r * np.cos(theta), r * np.sin(theta)]
    exact = np.stack(cols, axis=1)
    ulp = np.spacing(np.abs(got).astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(got - exact) / np.maximum(ulp, 2.0**-149)) <= 4.0
    assert np.median(np.abs(got - exact) / np.maximum(ulp, 2.0**-149)) <= 0.5


def test_normal_precision_setting(monkeypatch):
    k = iwr.key(0, "prec")
    assert iwr.normal_precision() == "auto"
    fast = iwr.normal_(torch.empty(64), k)
    slow64 = iwr.normal_(torch.empty(64, dtype=torch.float64), k)
    assert not torch.equal(fast, slow64.float())
    with iwr.use_normal_precision("float64"):
        assert iwr.normal_precision() == "float64"
        assert torch.equal(iwr.normal_(torch.empty(64), k), slow64.float())
    assert torch.equal(iwr.normal_(torch.empty(64), k), fast)
    monkeypatch.setenv("INITWISE_NORMAL_PRECISION", "float64")
    assert torch.equal(iwr.normal_(torch.empty(64), k), slow64.float())
    monkeypatch.setenv("INITWISE_NORMAL_PRECISION", "float63")
    with pytest.raises(ValueError, match="did you mean 'float64'"):
        iwr.normal_(torch.empty(64), k)
    monkeypatch.delenv("INITWISE_NORMAL_PRECISION")
    with pytest.raises(ValueError, match="auto"):
        iwr.use_normal_precision("fast").__enter__()  # type: ignore[arg-type]


def test_transcendentals_accurate():
    rng = np.random.default_rng(0)
    u = np.concatenate([rng.random(100_000), np.exp(-rng.random(1000) * 36), [2.0**-53, 0.5,
                        1 - 2.0**-52, 0.70710678118654752440]])
    u = u[(u >= 2.0**-53) & (u < 1)]
    ref = np.log(u)
    assert np.max(np.abs(_philox.ilog(u) - ref) / np.abs(ref)) < 4e-16
    # Box-Muller values against libm: |z - z_ref| <= 4e-15 r
    key4 = iwr.key(5, "acc").words
    blocks = np.arange(0, 50_000, dtype=np.uint64)
    wa, wb = _philox._words(key4, blocks)
    za, zb = _philox.block_values(1, key4, (0.0, 1.0, 0, 0, 0, 0, 0, 0), blocks)
    r = np.sqrt(-2.0 * np.log((wa.astype(np.float64) + 0.5) * 2.0**-52))
    theta = 2 * np.pi * ((wb.astype(np.float64) + 0.5) * 2.0**-52)
    assert np.max(np.abs(za - r * np.cos(theta)) / r) < 4e-15
    assert np.max(np.abs(zb - r * np.sin(theta)) / r) < 4e-15


def test_trunc_quantile_accurate():
    key4 = iwr.key(6, "acc").words
    blocks = np.arange(0, 50_000, dtype=np.uint64)
    wa, _ = _philox._words(key4, blocks)
    u = (wa.astype(np.float64) + 0.5) * 2.0**-52
    for a, b in [(-2.0, 2.0), (3.0, INF), (-INF, -9.0), (-INF, INF)]:
        p = _engine._trunc_params(0.0, 1.0, a, b)
        z, _ = _philox.block_values(2, key4, p, blocks)
        _, _, pa, pbc, mass, sign, _, _ = p
        plo = pa + u * mass
        ref = np.where(plo <= 0.5, scipy.special.ndtri(plo), -scipy.special.ndtri(pbc + (1 - u) * mass))
        ref = np.clip(sign * ref, a, b)
        assert np.max(np.abs(z - ref) / np.maximum(1.0, np.abs(ref))) < 1e-14, (a, b)


# ------------------------------------------------------------------ addressability


@settings(max_examples=40, deadline=None)
@given(
    dist=st.sampled_from(["uniform", "normal", "trunc_normal"]),
    shape=st.lists(st.integers(1, 9), min_size=1, max_size=3),
    start=st.integers(0, 1000),
    cuts=st.lists(st.integers(0, 10**6), max_size=5),
)
def test_any_chunking_equals_whole_int_offsets(dist, shape, start, cuts):
    k = iwr.key(7, "chunk")
    n = math.prod(shape)
    dtype = torch.float32 if (start + len(cuts)) % 2 else torch.float64  # normal: both transforms
    whole = _fill(dist, (start + n,), k, dtype=dtype)
    bounds = sorted({0, n, *(c % (n + 1) for c in cuts)})
    for lo, hi in itertools.pairwise(bounds):
        part = _fill(dist, (hi - lo,), k, dtype=dtype, offset=start + lo)
        assert torch.equal(part, whole[start + lo : start + hi])
    shaped = _fill(dist, tuple(shape), k, dtype=dtype, offset=start)
    assert torch.equal(shaped.reshape(-1), whole[start:])


@settings(max_examples=40, deadline=None)
@given(
    dist=st.sampled_from(["uniform", "normal", "trunc_normal"]),
    gshape=st.lists(st.integers(1, 7), min_size=1, max_size=4),
    data=st.data(),
    backend=st.sampled_from(BACKENDS),
)
def test_box_offsets_equal_slices_of_whole(dist, gshape, data, backend):
    k = iwr.key(8, "box")
    offs, sizes = [], []
    for g in gshape:
        o = data.draw(st.integers(0, g - 1))
        offs.append(o)
        sizes.append(data.draw(st.integers(1, g - o)))
    dtype = data.draw(st.sampled_from([torch.float64, torch.float32]))
    with iwr.use_backend(backend):
        whole = _fill(dist, tuple(gshape), k, dtype=dtype)
        box = _fill(dist, tuple(sizes), k, dtype=dtype, offset=tuple(offs), global_shape=tuple(gshape))
    sl = tuple(slice(o, o + s) for o, s in zip(offs, sizes, strict=False))
    assert torch.equal(box, whole[sl])


def test_dtensor_like_row_shards():
    # Shard(0) and Shard(1) of a 2-D weight, with many short rows (the index path).
    k = iwr.key(9, "w")
    whole = iwr.normal_(torch.empty(300, 10, dtype=torch.float32), k)
    rows = iwr.normal_(torch.empty(100, 10), k, offset=(100, 0), global_shape=(300, 10))
    cols = iwr.normal_(torch.empty(300, 3), k, offset=(0, 7), global_shape=(300, 10))
    assert torch.equal(rows, whole[100:200]) and torch.equal(cols, whole[:, 7:])


@pytest.mark.parametrize(("dist", "params"), CASES)
def test_sample_equals_fill(dist, params):
    k = iwr.key(10, "s")
    whole = _fill(dist, (1001,), k, **params)
    idx = torch.tensor([[0, 1, 2], [999, 1000, 517]])
    for backend in BACKENDS:
        with iwr.use_backend(backend):
            got = iwr.sample(k, dist, idx, dtype=torch.float64, **params)
        assert got.shape == idx.shape and torch.equal(got, whole[idx])
    perm = torch.randperm(1001, generator=torch.Generator().manual_seed(0))
    assert torch.equal(iwr.sample(k, dist, perm, dtype=torch.float64, **params), whole[perm])
    f32 = iwr.sample(k, dist, perm, **params)
    whole32 = _fill(dist, (1001,), k, dtype=torch.float32, **params)  # normal: the float32 transform
    assert f32.dtype == torch.float32 and torch.equal(f32, whole32[perm])
    for backend in BACKENDS:
        with iwr.use_backend(backend):
            assert torch.equal(iwr.sample(k, dist, idx, dtype=torch.bfloat16, **params),
                               whole32[idx].to(torch.bfloat16))


# ------------------------------------------------------------------ fast path == fallback


@needs_native
@pytest.mark.parametrize(("dist", "params"), CASES)
def test_native_equals_numpy_bitwise(dist, params):
    k = iwr.key(1, f"eq-{dist}")
    for n, off in [(1, 0), (1, 1), (2, 0), (3, 5), (63, 1), (64, 0), (65, 3), (129, 7),
                   (4097, 12345), (70_001, 2**40 + 1), (300, 2), (1000, 3)]:
        for dtype in (torch.float64, torch.float32):
            with iwr.use_backend("native"):
                x = _fill(dist, (n,), k, dtype=dtype, offset=off, **params)
            with iwr.use_backend("numpy"):
                y = _fill(dist, (n,), k, dtype=dtype, offset=off, **params)
            assert torch.equal(x, y), (dist, n, off, dtype)
    with iwr.use_backend("native"):
        x = _fill(dist, (5, 40), k, offset=(3, 7), global_shape=(9, 50), **params)
    with iwr.use_backend("numpy"):
        y = _fill(dist, (5, 40), k, offset=(3, 7), global_shape=(9, 50), **params)
    assert torch.equal(x, y)


def test_backend_selection(monkeypatch):
    monkeypatch.setenv("INITWISE_RANDOM_BACKEND", "numpy")
    assert iwr.backend() == "numpy"
    monkeypatch.setenv("INITWISE_RANDOM_BACKEND", "numpyy")
    with pytest.raises(ValueError, match="did you mean 'numpy'"):
        iwr.backend()
    monkeypatch.delenv("INITWISE_RANDOM_BACKEND")
    assert iwr.backend() == ("native" if NATIVE else "numpy")
    with iwr.use_backend("numpy"):
        assert iwr.backend() == "numpy"
    with pytest.raises(ValueError):
        iwr.use_backend("cuda").__enter__()  # type: ignore[arg-type]


# ------------------------------------------------------------------ threads


@needs_native
@pytest.mark.parametrize("dist", ["uniform", "normal", "trunc_normal"])
def test_thread_count_invariance(dist):
    k = iwr.key(2, "threads")
    n = 400_003
    outs = []
    try:
        for t in (1, 2, 3):
            iwr.set_num_threads(t)
            assert iwr.get_num_threads() == t
            outs.append(_fill(dist, (n,), k, dtype=torch.float32, offset=11))
            outs.append(_fill(dist, (700, 600), k, offset=(5, 3), global_shape=(800, 700)))
    finally:
        iwr.set_num_threads(None)
    assert iwr.get_num_threads() == torch.get_num_threads()
    for o in outs[2:]:
        assert torch.equal(o, outs[0]) or torch.equal(o, outs[1])
    assert torch.equal(outs[0], outs[2]) and torch.equal(outs[0], outs[4])
    assert torch.equal(outs[1], outs[3]) and torch.equal(outs[1], outs[5])
    with pytest.raises(ValueError):
        iwr.set_num_threads(0)


# ------------------------------------------------------------------ dtypes, layouts, devices


def _nearest_check(x64: np.ndarray, got: torch.Tensor) -> None:
    """got (fp16/bf16) is the round-to-nearest-even of x64: no representable value is closer."""
    g = got.double().numpy()
    bits = got.view(torch.int16).numpy().view(np.uint16).astype(np.int64)

    def at(b: np.ndarray) -> np.ndarray:
        return torch.from_numpy((b % 65536).astype(np.uint16).view(np.int16)).view(got.dtype).double().numpy()

    nxt, prv = at(bits + 1), at(bits - 1)  # the two neighbours (sign-magnitude bits)
    err = np.abs(g - x64)
    assert np.all(err <= np.abs(nxt - x64)) and np.all(err <= np.abs(prv - x64))
    tie = (err == np.abs(nxt - x64)) | (err == np.abs(prv - x64))
    assert np.all((bits[tie] & 1) == 0)  # ties to even


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_float_dtype_rounds_once(dtype, backend):
    """float64 values rounded once (uniform; normal with precision "float64"), or for normal
    into float32 and narrower the float32 transform's values, rounded once to fp16/bf16."""
    k = iwr.key(3, "dtype")
    ref = iwr.normal_(torch.empty(5000, dtype=torch.float64), k, std=0.02)
    with iwr.use_backend("numpy"):
        ref32 = iwr.normal_(torch.empty(5000, dtype=torch.float32), k, std=0.02)
    uref = iwr.uniform_(torch.empty(5000, dtype=torch.float64), k, low=-1.0, high=1e-3)
    with iwr.use_backend(backend):
        got = iwr.normal_(torch.empty(5000, dtype=dtype), k, std=0.02)
        ugot = iwr.uniform_(torch.empty(5000, dtype=dtype), k, low=-1.0, high=1e-3)
        with iwr.use_normal_precision("float64"):
            old = iwr.normal_(torch.empty(5000, dtype=dtype), k, std=0.02)
    assert got.dtype == old.dtype == ugot.dtype == dtype
    if dtype in (torch.float32, torch.float64):
        assert torch.equal(old, ref.to(dtype)) and torch.equal(ugot, uref.to(dtype))
        assert torch.equal(got, ref if dtype == torch.float64 else ref32)
    else:
        _nearest_check(ref.numpy(), old)
        _nearest_check(uref.numpy(), ugot)
        _nearest_check(ref32.double().numpy(), got)


def _hard_cases(mantissa_bits: int) -> np.ndarray:
    """Values at, just above and just below half-way points of a narrow float format."""
    rng = np.random.default_rng(1)
    base = rng.standard_normal(20_000)
    cut = 52 - mantissa_bits
    hb = (base.view(np.uint64) & ~np.uint64((1 << cut) - 1)) | np.uint64(1 << (cut - 1))
    mid = hb.view(np.float64)
    return np.concatenate([base, mid, np.nextafter(mid, INF), np.nextafter(mid, -INF),
                           mid * (1 + 2.0**-40), mid * (1 - 2.0**-40)])


def test_single_rounding_of_hard_cases():
    # torch's own float64 -> bfloat16 goes through float32 and fails this check.
    xs = _hard_cases(7)
    _nearest_check(xs, torch.from_numpy(_engine._bf16_bits(xs)).view(torch.bfloat16))
    xs = _hard_cases(10)
    _nearest_check(xs, _engine._round_np(xs, torch.float16))
    with pytest.raises(AssertionError):
        _nearest_check(_hard_cases(7), torch.from_numpy(_hard_cases(7)).to(torch.bfloat16))


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_tensors(backend):
    k = iwr.key(4, "nc")
    with iwr.use_backend(backend):
        ref = iwr.uniform_(torch.empty(6, 8), k)
        t = torch.zeros(8, 6).t()  # shape (6, 8), not contiguous
        assert not t.is_contiguous()
        iwr.uniform_(t, k)
        assert torch.equal(t, ref)
        big = torch.zeros(6, 16, dtype=torch.bfloat16)
        view = big[:, ::2]
        iwr.uniform_(view, k)
        assert torch.equal(view, iwr.uniform_(torch.empty(6, 8, dtype=torch.bfloat16), k))
        assert torch.all(big[:, 1::2] == 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_tensor_matches_cpu():
    k = iwr.key(5, "gpu")
    t = iwr.trunc_normal_(torch.empty(1000, 7, device="cuda"), k, std=0.02)
    assert t.device.type == "cuda"
    assert torch.equal(t.cpu(), iwr.trunc_normal_(torch.empty(1000, 7), k, std=0.02))


# ------------------------------------------------------------------ bad input


def test_bad_inputs_raise_before_writing():
    k = iwr.key(0, "bad")
    t = torch.full((4, 5), 7.0)
    cases = [
        (TypeError, lambda: iwr.normal_(torch.zeros(3, dtype=torch.int64), k)),
        (TypeError, lambda: iwr.normal_(t, 0)),  # not a Key
        (ValueError, lambda: iwr.normal_(t, k, std=0.0)),
        (ValueError, lambda: iwr.normal_(t, k, std=-1.0)),
        (ValueError, lambda: iwr.normal_(t, k, std=INF)),
        (ValueError, lambda: iwr.normal_(t, k, mean=math.nan)),
        (ValueError, lambda: iwr.uniform_(t, k, low=1.0, high=1.0)),
        (ValueError, lambda: iwr.uniform_(t, k, low=2.0, high=1.0)),
        (ValueError, lambda: iwr.uniform_(t, k, low=-INF)),
        (ValueError, lambda: iwr.trunc_normal_(t, k, a=2.0, b=2.0)),
        (ValueError, lambda: iwr.trunc_normal_(t, k, a=1.0, b=-1.0)),
        (ValueError, lambda: iwr.trunc_normal_(t, k, a=math.nan)),
        (ValueError, lambda: iwr.trunc_normal_(t, k, a=50.0, b=INF)),  # no mass
        (ValueError, lambda: iwr.normal_(t, k, offset=-1)),
        (TypeError, lambda: iwr.normal_(t, k, offset=1.5)),  # type: ignore[arg-type]
        (ValueError, lambda: iwr.normal_(t, k, offset=(0, 0))),  # no global_shape
        (ValueError, lambda: iwr.normal_(t, k, offset=(0, 1), global_shape=(4, 5))),
        (ValueError, lambda: iwr.normal_(t, k, offset=(0, 0), global_shape=(4, 5, 1))),
        (ValueError, lambda: iwr.normal_(t, k, offset=(1, 0), global_shape=(4, 5))),
        (ValueError, lambda: iwr.normal_(t, k, offset=1, global_shape=(4, 5))),
        (ValueError, lambda: iwr.sample(k, "normal", torch.tensor([-1]))),
        (TypeError, lambda: iwr.sample(k, "normal", torch.tensor([1.0]))),
        (TypeError, lambda: iwr.sample(k, "normal", torch.tensor([1]), lo=1.0)),
        (ValueError, lambda: iwr.sample(k, "normall", torch.tensor([1]))),  # type: ignore[arg-type]
    ]
    for exc, call in cases:
        with pytest.raises(exc):
            call()
        assert torch.all(t == 7.0)


def test_error_messages_are_helpful():
    k = iwr.key(0, "bad")
    with pytest.raises(ValueError, match="did you mean 'normal'"):
        iwr.sample(k, "normall", torch.tensor([1]))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"dimension 1: offset 1 \+ size 5"):
        iwr.normal_(torch.empty(4, 5), k, offset=(0, 1), global_shape=(4, 5))
    with pytest.raises(TypeError, match="valid: low, high"):
        iwr.sample(k, "uniform", torch.tensor([1]), std=1.0)


def test_empty_and_meta_tensors_are_noops():
    k = iwr.key(0, "empty")
    with pytest.warns(InitwiseWarning):
        e = iwr.normal_(torch.empty(0, 3), k)
    assert e.shape == (0, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = iwr.trunc_normal_(torch.empty(3, 4, device="meta"), k)
    assert m.is_meta
    assert iwr.sample(k, "normal", torch.empty(0, dtype=torch.int64)).shape == (0,)


def test_scalar_tensor():
    k = iwr.key(0, "scalar")
    s = iwr.normal_(torch.empty(()), k, offset=5)
    assert s.shape == () and torch.equal(s, iwr.normal_(torch.empty(6), k)[5])
    b = iwr.normal_(torch.empty(()), k, offset=(), global_shape=())
    assert torch.equal(b, iwr.normal_(torch.empty(1), k)[0])


@needs_native
def test_native_avx512_kernels_equal_the_portable_path():
    """The fused AVX-512 kernel (uniform, normal) and the AVX-512 Philox batch (all
    distributions) give the bits of the portable batched C path, which CPUs without AVX-512
    run: lengths around the kernel's 8- and 32-block groups, odd starts, both output types,
    misaligned outputs, rows of a box and several threads."""
    nat = _engine._native
    if not nat.simd():
        pytest.skip("this CPU has no AVX-512: the portable path is the only one")
    rng = np.random.default_rng(19)
    lengths = [1, 2, 3, 15, 16, 17, 63, 64, 65, 127, 128, 129, 255, 256, 257, 296, 511, 680, 1000,
               70_001]
    try:
        for dist, params in CASES:
            k = iwr.key(5, f"simd-{dist}")
            for n in lengths:
                off = int(rng.integers(0, 2**34)) | int(rng.integers(0, 2))
                for dtype in (torch.float32, torch.float64):
                    buf = torch.empty(n + 1, dtype=dtype)
                    got = []
                    for flag in (1, 0):
                        nat.simd(flag)
                        x = buf[n % 2 :]  # every other length: an output not on 8 bytes / 64 bytes
                        iwr.set_num_threads(2 if n > 50_000 else 1)
                        with iwr.use_backend("native"):
                            FILLS[dist](x[:n], k, offset=off, **params)
                        got.append(x[:n].clone())
                    assert torch.equal(got[0], got[1]), (dist, n, off, dtype)
            got = []
            for flag in (1, 0):
                nat.simd(flag)
                with iwr.use_backend("native"):
                    got.append(_fill(dist, (70, 513), k, offset=(3, 7), global_shape=(90, 600), **params))
            assert torch.equal(got[0], got[1]), dist
    finally:
        nat.simd(1)
        iwr.set_num_threads(None)
