"""The audit's one-pass C statistics (``_audit/_rowstats.c``) against the torch path and
against exact sums.

Tolerances come from the rounding of each path. A sum of ``n`` terms computed in a precision
with unit roundoff ``u`` is within ``γ_n Σ|tᵢ| ≈ n·u·Σ|tᵢ|`` of the exact sum (Higham,
*Accuracy and Stability of Numerical Algorithms*, §4.2, for any summation order): the C path
accumulates in float64 (``u = 2⁻⁵³``; squares of float32 and bfloat16 values are exact in
float64), the torch path in float32 (``u = 2⁻²⁴``; its products are rounded too, which ``γ_n``
covers for a dot product, §3.1). Exact references are ``math.fsum`` of the float64 terms.
Minima, maxima and counts are exact in both paths (the counts on the same sample), so they
are compared for equality.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import torch
from torch import nn

from initwise import audit
from initwise._audit import stats as S

pytest.importorskip("initwise._audit._rowstats")

U64 = 2.0 ** -53
U32 = 2.0 ** -24


@contextmanager
def torch_path() -> Iterator[None]:
    """The statistics without the C extension (as on a machine without a compiler)."""
    native = S._rowstats
    S._rowstats = None
    try:
        yield
    finally:
        S._rowstats = native


def _host(raw: S.Raw) -> list[float]:
    return S._read_raw([raw])[0]


def _both(fn: Callable[..., S.Raw], *args: object) -> tuple[list[float], list[float]]:
    native = fn(*args)
    assert isinstance(native, list), "the C path was not taken"
    with torch_path():
        ref = fn(*args)
    assert isinstance(ref, torch.Tensor)
    return native, _host(ref)


def _exact(x: torch.Tensor) -> tuple[float, float, float, float]:
    """(exact Σx, exact Σx², Σ|x|, Σx² as float64 terms) from the float64 values."""
    v = x.double().reshape(-1).tolist()
    sq = [t * t for t in v]
    return math.fsum(v), math.fsum(sq), math.fsum(abs(t) for t in v), math.fsum(sq)


SIZES = [1, 7, 8, 31, 32, 33, 1023, 1024, 1025, 4099, 65536, 65537, 200003]
DTYPES = [torch.float32, torch.float64, torch.bfloat16]


def _data(n: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + n)
    x = torch.randn(n, generator=g, dtype=torch.float64) * 3 + 0.5
    x[torch.rand(n, generator=g) < 0.3] = 0.0  # zeros to count
    return x.to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_out_stats_match_exact_and_torch(n: int, dtype: torch.dtype) -> None:
    x = _data(n, dtype)
    s1, s2, sabs, _ = _exact(x)
    for bounds in (None, (None, 2.0), (-1.0, 1.0)):
        native, ref = _both(S._out_stats, x, bounds, 0.05)
        assert len(native) == len(ref) == (5 if bounds is None else 7)
        # sums: float64 accumulation, within n·2⁻⁵³ of the exact sums
        assert abs(native[0] - s1) <= n * U64 * sabs
        assert abs(native[1] - s2) <= n * U64 * s2
        # the torch path, in the input's precision (float32 for float32 and bfloat16)
        u = U64 if dtype == torch.float64 else U32
        assert abs(ref[0] - s1) <= n * u * sabs
        assert abs(ref[1] - s2) <= n * u * s2
        # min, max and the counts on the sample: exactly the same
        assert native[2:] == ref[2:]
        assert native[2] == float(x.min()) and native[3] == float(x.max())


@pytest.mark.skipif(not getattr(S._rowstats, "AVX512", 0), reason="no AVX-512 on this CPU")
@pytest.mark.parametrize("n", [1, 31, 32, 33, 1023, 1024, 1055, 65536, 196607, 196608, 200003,
                               1 << 21])
def test_avx512_kernel_is_bit_identical_to_the_portable_one(n: int) -> None:
    # the same partial sums in the same lanes and order: the same bits, not just close
    x = _data(n, torch.float32, seed=11)
    x[n // 2] = -0.0
    step = S._count_step(n)
    for args in ((1, False, 0.0, False, 0.0, False), (step, False, 0.0, False, 0.0, True),
                 (step, True, 0.05, True, 2.0, True), (1, True, -1.0, True, 1.0, True)):
        fast = S._rowstats.moments(x.data_ptr(), n, 0, *args)
        portable = S._rowstats.moments(x.data_ptr(), n, 0, *args, False)
        assert fast == portable, (n, args)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("n", [16383, 16384, 16385, 49153, 133120, 200003, 532480])
def test_moments_do_not_depend_on_the_thread_count(n: int, dtype: torch.dtype) -> None:
    # above one piece (16384 elements) the pieces may run on several threads; they are
    # combined in one fixed order, so every thread count and both kernels give the same bits,
    # and the strided sample continues across piece boundaries (counts as torch's on x[::step])
    x = _data(n, dtype, seed=5)
    x[n // 3] = 0.0
    step = S._count_step(n)
    code = S._NATIVE_DTYPES[dtype]
    for args in ((1, False, 0.0, False, 0.0, False), (step, True, -0.5, True, 1.5, True),
                 (1, True, -1.0, False, 0.0, True)):
        got = {S._rowstats.moments(x.data_ptr(), n, code, *args, simd, threads)
               for simd in (False, True) for threads in (1, 2, 3, 8)}
        assert len(got) == 1, (n, dtype, args, got)
        s1, s2, mn, mx, nz, below, above = got.pop()
        e1, e2, a1, _ = _exact(x)
        assert abs(s1 - e1) <= 2 * n * U64 * a1 and abs(s2 - e2) <= 2 * n * U64 * e2
        f = x.double()
        assert (mn, mx) == (float(f.min()), float(f.max()))
        sample = x[:: args[0]].float()
        assert nz == (float(torch.count_nonzero(sample)) if args[5] else 0.0)
        assert below == (float((sample <= args[2]).sum()) if args[1] else 0.0)
        assert above == (float((sample >= args[4]).sum()) if args[3] else 0.0)


@pytest.mark.parametrize("shape", [(64, 1024), (300, 700), (1000, 1000), (3, 5), (2048, 64)])
def test_weight_does_not_depend_on_the_thread_count(shape: tuple[int, int]) -> None:
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        w = _data(shape[0] * shape[1], dtype, seed=9).reshape(shape)
        got = {S._rowstats.weight(w.data_ptr(), *shape, S._NATIVE_DTYPES[dtype], threads)
               for threads in (1, 2, 3)}
        assert len(got) == 1, (shape, dtype, got)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the runtime lookup is Linux-only")
def test_statistics_find_torchs_openmp_runtime() -> None:
    # torch's CPU build loads an OpenMP runtime; the statistics use its team rather than run
    # on one thread (without this, the thread-count tests above would not exercise threads)
    if not torch.backends.openmp.is_available():
        pytest.skip("this torch build has no OpenMP")
    assert S._rowstats.openmp()


def test_statistics_record_no_autograd_history() -> None:
    # the audit's hooks call them in grad mode, without torch.no_grad()
    y = (torch.randn(300, 7) * torch.ones(1, requires_grad=True))
    w = nn.Parameter(torch.randn(5, 9))
    for use_c in (True, False):
        with torch_path() if not use_c else contextlib.nullcontext():
            for raw in (S._out_stats(y, (0.0, None), 0.05), S._norm(y), S._grad_stats(y),
                        S._param_grad_stats(w), S._weight_stats(w)):
                assert not (isinstance(raw, torch.Tensor) and raw.requires_grad)
                assert isinstance(raw, list) == use_c


def test_counts_sample_and_thresholds_as_torch() -> None:
    # the thresholds are compared in float32, as torch compares a float32 tensor with a
    # Python float: float32(0.1) > 0.1, yet it counts as <= 0.1 in both paths
    x = torch.full((200003,), 0.1, dtype=torch.float32)
    x[::5] = 0.0
    x[1::7] = 0.3
    native, ref = _both(S._out_stats, x, (0.1, 0.3), 0.0)
    assert native[4:] == ref[4:]
    step = S._count_step(x.numel())
    assert step > 1
    sample = x[::step]
    assert native[4] == float(torch.count_nonzero(sample))
    assert native[5] == float((sample <= 0.1).sum()) == float((sample < 0.2).sum())
    assert native[6] == float((sample >= 0.3).sum()) > 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_nonfinite_values_propagate_as_torch(dtype: torch.dtype) -> None:
    for special in (math.nan, math.inf, -math.inf):
        x = _data(1000, dtype)
        x[517] = special
        native, ref = _both(S._out_stats, x, None, 0.05)
        for a, b in zip(native, ref, strict=True):
            assert (math.isnan(a) and math.isnan(b)) or a == b
        gn, gr = _both(S._grad_stats, x)
        assert all((math.isnan(a) and math.isnan(b)) or a == b for a, b in zip(gn[1:], gr[1:], strict=True))
        assert math.isnan(gn[0]) == math.isnan(gr[0]) and math.isinf(gn[0]) == math.isinf(gr[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [5, 1025, 65537, 200003])
def test_grad_norm_and_param_grad_stats(n: int, dtype: torch.dtype) -> None:
    x = _data(n, dtype, seed=3)
    _, s2, _, _ = _exact(x)
    u = U64 if dtype == torch.float64 else U32
    for fn in (S._grad_stats, S._norm, S._param_grad_stats):
        native, ref = _both(fn, x)
        assert abs(native[0] - s2) <= n * U64 * s2
        assert abs(ref[0] - s2) <= n * u * s2
        assert native[1:] == ref[1:]  # min and max, or the sampled nonzero count


def _spread_exact(w: torch.Tensor) -> float:
    m = w.double().reshape(w.shape[0], -1)
    nr = m.norm(dim=1) if m.shape[0] <= m.shape[1] else m.norm(dim=0)
    return float((nr.max() - nr.min()) / nr.mean())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(37,), (1, 5), (5, 1), (64, 64), (30, 70), (70, 30),
                                   (300, 7), (16, 3, 3, 3), (2000, 33)])
def test_weight_stats(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    w = (torch.randn(shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
         * 0.02 + 0.001).to(dtype)
    n = w.numel()
    s1, s2, sabs, _ = _exact(w)
    native, ref = _both(S._weight_stats, w)
    assert abs(native[0] - s1) <= n * U64 * sabs
    assert abs(native[1] - s2) <= n * U64 * s2
    u = U64 if dtype == torch.float64 else U32
    assert abs(ref[0] - s1) <= n * u * sabs
    assert abs(ref[1] - s2) <= n * u * s2
    if w.dim() < 2:
        assert math.isnan(native[2]) and math.isnan(ref[2])
    else:
        # spread of norms: each norm carries the relative rounding of its sum of squares
        # (≤ k·u for k terms, halved by the square root), the spread about twice that
        k = max(w.shape[0], n // w.shape[0])
        exact = _spread_exact(w)
        assert abs(native[2] - exact) <= 4 * k * U64 * (1 + exact)
        assert abs(ref[2] - exact) <= 4 * k * u * (1 + exact)


@pytest.mark.parametrize("dtype", DTYPES)
def test_shifted_constant_is_exact(dtype: torch.dtype) -> None:
    ones = torch.ones(4097, dtype=dtype)
    native, ref = _both(S._weight_shifted, ones)
    assert native == [1.0, 0.0, 0.0] == ref
    # the one-pass moments send it to the shifted path; variance exactly 0 there
    raw = _host(S._weight_stats(ones))
    assert S._weight_moments(raw, ones.numel()) is None
    assert S._shifted_moments(native, ones.numel()) == (1.0, 0.0)
    x = _data(3001, dtype, seed=9) * 1e-3 + 7.0
    native, ref = _both(S._weight_shifted, x)
    d = [t - native[0] for t in x.double().tolist()]
    assert native[0] == ref[0] == float(x[0])
    assert abs(native[1] - math.fsum(d)) <= 3001 * U64 * math.fsum(map(abs, d))
    assert abs(native[2] - math.fsum(t * t for t in d)) <= 3001 * U64 * math.fsum(t * t for t in d)


def test_torch_path_for_what_the_c_pass_cannot_read() -> None:
    x = torch.randn(64, 32)
    assert S._native(x) is not None
    assert S._native(x.t()) is None  # strided view
    assert S._native(x.half()) is None  # no float16 kernel
    assert S._native(x.to(torch.int32)) is None
    assert S._native(torch.empty(0)) is None
    assert S._native(nn.Parameter(x)) is not None
    assert S._native(x.to_sparse()) is None
    assert isinstance(S._out_stats(x.t(), None, 0.05), torch.Tensor)
    assert isinstance(S._grad_stats(x.t()), torch.Tensor)
    with torch_path():
        assert S._native(x) is None


# ------------------------------------------------------------------------------------------
# The whole audit: the same report from either path, on real architectures
# ------------------------------------------------------------------------------------------

def _models() -> list[tuple[str, nn.Module, object]]:
    T = pytest.importorskip("transformers")
    T.logging.set_verbosity_error()
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    vit = T.ViTForImageClassification(T.ViTConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256,
        image_size=32, patch_size=8, num_labels=10))
    gpt2 = T.GPT2LMHeadModel(T.GPT2Config(n_embd=64, n_layer=2, n_head=2, vocab_size=500,
                                          n_positions=64))
    cnn = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU6(),
                        nn.Conv2d(16, 16, 3, padding=1), nn.Tanh(), nn.Flatten(),
                        nn.Linear(16 * 16 * 16, 10))
    return [("vit", vit, torch.randn(4, 3, 32, 32, generator=g)),
            ("gpt2", gpt2, torch.randint(0, 500, (4, 32), generator=g)),
            ("cnn-bf16", cnn.to(torch.bfloat16),
             torch.randn(4, 3, 16, 16, generator=g).to(torch.bfloat16))]


def _close(a: float | None, b: float | None, rel: float) -> bool:
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
        return a == b or (a is not None and b is not None and math.isnan(a) and math.isnan(b))
    return abs(a - b) <= rel * max(abs(a), abs(b)) + 1e-300


def test_audit_reports_agree_between_paths() -> None:
    for name, model, x in _models():
        native = audit(model, x)
        with torch_path():
            ref = audit(model, x)
        assert native.verdict == ref.verdict, name
        assert (native.forward_verdict, native.backward_verdict) == \
            (ref.forward_verdict, ref.backward_verdict), name
        assert len(native.rows) == len(ref.rows) and len(native.weights) == len(ref.weights)
        for a, b in zip(native.rows, ref.rows, strict=True):
            assert (a.name, a.flag, a.grad_flag) == (b.name, b.flag, b.grad_flag), (name, a.name)
            # exact in both paths: extremes and the counts on the same sample
            assert a.max_abs == b.max_abs and a.zero_fraction == b.zero_fraction
            assert a.saturated_fraction == b.saturated_fraction and a.grad_max_abs == b.grad_max_abs
            # sums: the torch path's float32 rounding bounds the difference
            rel = a.numel * U32
            assert _close(a.rms, b.rms, rel), (name, a.name, a.rms, b.rms)
            assert _close(a.grad_norm, b.grad_norm, rel), (name, a.name)
            assert _close(a.in_rms, b.in_rms, rel) and _close(a.grad_in_norm, b.grad_in_norm, rel)
        for wa, wb in zip(native.weights, ref.weights, strict=True):
            rel = wa.numel * U32
            assert wa.name == wb.name and wa.zero == wb.zero and wa.orthogonal == wb.orthogonal
            assert _close(wa.rms, wb.rms, rel) and _close(wa.grad_norm, wb.grad_norm, rel)
            # std: from Σx and Σx² (one-pass where well conditioned: mean² ≤ variance, so the
            # sums' rounding moves the variance by at most ~2× their relative error)
            assert _close(wa.std, wb.std, 4 * rel), (name, wa.name, wa.std, wb.std)
            assert _close(wa.adam_update, wb.adam_update, rel)
