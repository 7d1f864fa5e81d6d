"""LSUV's C measurement and correction of a layer output (``_rowstats.channels`` /
``_rowstats.rescale``, used by ``_lsuv/scale.py``) against exact references.

Tolerances come from the rounding of each path (Higham, *Accuracy and Stability of Numerical
Algorithms*, §4.2): a sum of ``n`` terms accumulated in float64 is within ``n·u·Σ|tᵢ|`` of the
exact sum, ``u = 2⁻⁵³``; squares of float32 values are exact in float64. The references are
``math.fsum`` of the float64 terms. ``rescale`` is specified as float64 arithmetic rounded once
to the data's dtype, so it is compared bit for bit with the same float64 operations in torch.
"""

from __future__ import annotations

import math

import pytest
import torch

from initwise._audit import stats as S
from initwise._lsuv import scale as L

pytest.importorskip("initwise._audit._rowstats")

U64 = 2.0**-53
_CODES = {torch.float32: 0, torch.float64: 1, torch.bfloat16: 2}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 1, 77), (256, 256, 1), (7, 37, 1), (5, 3, 1),
                                   (4, 32, 63), (2, 5, 1024), (9, 1, 4099)])  # fmt: skip
@pytest.mark.parametrize("with_bias", [False, True])
def test_channels_against_exact_sums(dtype: torch.dtype, shape: tuple[int, int, int],
                                     with_bias: bool) -> None:  # fmt: skip
    """Every layout (channels last, channels with contiguous runs, tails of every length):
    the float64 moments within the float64 rounding bound of the exact ones."""
    from initwise._audit import _rowstats

    outer, c, inner = shape
    g = torch.Generator().manual_seed(outer * 1000 + c * 10 + inner)
    # a mean per channel and an offset: the one-pass variance must survive them
    t = (torch.randn(outer, c, inner, generator=g, dtype=torch.float64) * 1.7
         + torch.randn(1, c, 1, generator=g, dtype=torch.float64) * 0.5 + 0.3).to(dtype)  # fmt: skip
    bias = torch.randn(c, generator=g, dtype=torch.float64) if with_bias else None
    var, cov, var_b, ms = _rowstats.channels(t.data_ptr(), outer, c, inner, _CODES[dtype],
                                             0 if bias is None else bias.data_ptr())  # fmt: skip
    x = t.double()
    n = x.numel()
    means = [math.fsum(x[:, k, :].reshape(-1).tolist()) / (outer * inner) for k in range(c)]
    mean = math.fsum(means) / c
    vals = x.reshape(-1).tolist()
    ex_ms = math.fsum(v * v for v in vals) / n
    ex_var = math.fsum((v - mean) ** 2 for v in vals) / n
    tol = 4 * (n + c) * U64 * (ex_ms + mean * mean) + 1e-300
    assert abs(ms - ex_ms) <= tol
    assert abs(var - ex_var) <= tol
    if bias is None:
        assert (cov, var_b) == (0.0, 0.0)
        return
    b = bias.tolist()
    mb = math.fsum(b) / c
    ex_cov = math.fsum((mk - mean) * (bk - mb) for mk, bk in zip(means, b, strict=True)) / c
    ex_vb = math.fsum((bk - mb) ** 2 for bk in b) / c
    scale = (ex_var + ex_ms) ** 0.5 * (ex_vb + mb * mb) ** 0.5
    assert abs(cov - ex_cov) <= 8 * (n + c) * U64 * scale + 1e-300
    assert abs(var_b - ex_vb) <= 8 * c * U64 * (ex_vb + mb * mb) + 1e-300


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape,dim", [((256, 256), -1), ((7, 37), 1), ((4, 5, 33), -1),
                                       ((2, 32, 9, 7), 1), ((3, 6, 100), 1), ((10, 3), 0)])  # fmt: skip
@pytest.mark.parametrize("with_bias", [False, True])
def test_rescale_is_float64_rounded_once_and_in_place_equals_copy(
        dtype: torch.dtype, shape: tuple[int, ...], dim: int, with_bias: bool) -> None:  # fmt: skip
    g = torch.Generator().manual_seed(sum(shape))
    y = torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)
    bias = torch.randn(shape[dim], generator=g).to(dtype) if with_bias else None
    s = 0.7316520931
    expect = y.double() * s
    if bias is not None:
        view = [1] * y.dim()
        view[dim] = -1
        expect = expect + (bias.double() * (1.0 - s)).reshape(view)
    expect = expect.to(dtype)
    copy = L.rescale(y, s, bias, dim)
    assert copy.data_ptr() != y.data_ptr()
    assert torch.equal(copy, expect)
    same = y.clone()
    assert L.rescale(same, s, bias, dim, out=same).data_ptr() == same.data_ptr()
    assert torch.equal(same, expect)


@pytest.mark.parametrize("shape,dim", [((256, 256), -1), ((4, 32, 9, 7), 1), ((6, 5), 0)])
@pytest.mark.parametrize("has_bias", [False, True])
def test_stats_c_path_matches_torch_path(monkeypatch: pytest.MonkeyPatch, shape: tuple[int, ...],
                                        dim: int, has_bias: bool) -> None:  # fmt: skip
    """``_stats`` reads the C moments where it can; the torch path (no extension) gives the
    same moments within its float32 rounding."""
    g = torch.Generator().manual_seed(len(shape) * 7 + dim)
    t = torch.randn(*shape, generator=g) * 1.3 + 0.2
    bias = torch.randn(shape[dim], generator=g) * 0.4
    native = L._stats(t, bias, dim, has_bias=has_bias)
    monkeypatch.setattr(S, "_rowstats", None)  # as on a machine without a compiler
    assert L._channel_view(t, dim, bias) is None
    ref = L._stats(t, bias, dim, has_bias=has_bias)
    n = t.numel()
    assert native[3] == ref[3] == n
    for a, b in zip(native[:3], ref[:3], strict=True):
        assert abs(a - b) <= 4 * n * 2.0**-24 * 2.0, (native, ref)


def test_stats_falls_back_to_two_passes_when_the_mean_dominates(monkeypatch: pytest.MonkeyPatch) -> None:
    """A mean 10^4 standard deviations away: the one-pass float64 variance would keep only
    ~8 digits; the two-pass torch path measures it (float32 rounding of the centred data)."""
    g = torch.Generator().manual_seed(1)
    t = torch.randn(512, 64, generator=g, dtype=torch.float64) * 1e-3 + 1e1
    bias = torch.zeros(64, dtype=torch.float64)
    calls: list[int] = []
    real = L._var

    def spy(*a: object, **k: object) -> float:
        calls.append(1)
        return real(*a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(L, "_var", spy)
    var = L._stats(t, bias, -1, has_bias=True)[0]
    assert calls, "the two-pass path was not taken"
    exact = float(t.var(correction=0))
    assert abs(var / exact - 1.0) < 1e-9


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_stats_non_finite_output_reads_non_finite(bad: float) -> None:
    t = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    t[5, 7] = bad
    for bias in (None, torch.zeros(32)):
        var = L._stats(t, bias, -1, has_bias=bias is not None)[0]
        assert not math.isfinite(var)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_scale_weight_rounds_once_and_bumps_the_version(dtype: torch.dtype) -> None:
    """A calibrated weight is multiplied in float64 and rounded once (the C kernel; bfloat16
    takes ``mul_``), in place, and its version counter moves as ``mul_``'s would (autograd sees
    the in-place change)."""
    w = torch.randn(33, 17, generator=torch.Generator().manual_seed(2)).to(dtype)
    s = 1.2345678901
    expect = (w.double() * s).to(dtype) if dtype != torch.bfloat16 else w * s
    before, ptr = w._version, w.data_ptr()
    L.scale_weight(w, s)
    assert w.data_ptr() == ptr and w._version > before
    assert torch.equal(w, expect)


def test_bias_of_another_dtype_or_layout_is_read_exactly() -> None:
    """A bfloat16 or strided bias is read by the kernels (in its dtype, or as a float64 copy)
    with the values a float64 bias of the same numbers gives."""
    g = torch.Generator().manual_seed(4)
    y = torch.randn(64, 48, generator=g)
    b64 = torch.randn(48, generator=g, dtype=torch.float64).to(torch.bfloat16).double()
    ref = L._stats(y, b64, -1, has_bias=True)
    for b in (b64.to(torch.bfloat16), b64.float(), torch.stack((b64, b64), 1)[:, 0]):
        assert L._stats(y, b, -1, has_bias=True) == ref
        assert torch.equal(L.rescale(y, 0.9, b, -1), L.rescale(y, 0.9, b64, -1))


@pytest.mark.parametrize("make", ["channels_last", "transposed", "strided"])
def test_dense_layouts_take_the_kernels_with_the_contiguous_values(make: str) -> None:
    """A channels-last convolution output or a transposed one is read in its own memory order
    by the kernels, with the moments and rescaled values of the same tensor made contiguous; a
    strided (non-dense) view takes the torch path."""
    g = torch.Generator().manual_seed(6)
    base = torch.randn(4, 8, 5, 6, generator=g) * 1.5 + 0.1
    if make == "channels_last":
        y = base.contiguous(memory_format=torch.channels_last)
    elif make == "transposed":
        y = base.transpose(1, 3)  # channels (size 8) now along dim 3
    else:
        y = base[:, :, ::2]
    dim = 3 if make == "transposed" else 1
    bias = torch.randn(y.shape[dim], generator=g, dtype=torch.float64)
    dense = make != "strided"
    assert (L._channel_view(y, dim, bias) is not None) == dense
    ref = y.contiguous()
    got, want = L._stats(y, bias, dim, has_bias=True), L._stats(ref, bias, dim, has_bias=True)
    n = y.numel()  # float64 sums in another order (dense), float32 ones (strided)
    tol = 8 * n * (U64 if dense else 2.0**-24)
    for a, b in zip(got[:3], want[:3], strict=True):
        assert abs(a - b) <= tol * (abs(b) + 1.0)
    out = L.rescale(y, 0.8, bias, dim)
    expect = L.rescale(ref, 0.8, bias, dim)
    if not dense:  # the torch path: float32 arithmetic, within an ulp or two of the kernel's
        torch.testing.assert_close(out, expect, rtol=2.0**-22, atol=2.0**-22)
        return
    assert torch.equal(out, expect)
    assert out.stride() == y.stride()
    same = y.clone(memory_format=torch.preserve_format)
    L.rescale(same, 0.8, bias, dim, out=same)
    assert torch.equal(same, out)


@pytest.mark.parametrize("name", ["gpt2", "falcon", "mixtral", "t5", "whisper", "mamba", "convnext"])
def test_zoo_kernels_and_torch_path_calibrate_alike(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """On real architectures (HF models built from configs: tied heads, MoE, encoder-decoder,
    audio, state-space, channels-last-style convolutions) the C kernels and the torch path
    (as on a machine without a compiler, or for GPU tensors) calibrate to the same weights
    within float32 rounding, with the same number of passes."""
    import copy

    import _zoo as Z
    from initwise import lsuv

    entry = next(e for e in Z.ZOO if e.name == name)
    base = Z.build(entry)
    inputs, _ = entry.make_batch(base)
    x = inputs if isinstance(inputs, dict) else inputs[0]
    native, ref = copy.deepcopy(base), copy.deepcopy(base)
    r1 = lsuv(native, x, seed=2)
    monkeypatch.setattr(S, "_rowstats", None)
    r2 = lsuv(ref, x, seed=2)
    assert r1.forward_passes == r2.forward_passes and r1.converged and r2.converged
    for (pname, a), b in zip(native.named_parameters(), ref.parameters(), strict=True):
        assert float((a - b).abs().max()) <= 1e-6 * float(b.abs().max()) + 1e-30, pname


def test_rescale_into_a_foreign_out_takes_the_torch_path() -> None:
    """The C kernel writes only into ``y`` or a tensor it allocates: an ``out`` of another
    size, device or layout gets torch's semantics (resized, or torch's error), never a raw
    write past its end."""
    y = torch.ones(4, 8)
    small = torch.zeros(2, 8)
    with pytest.warns(UserWarning, match="resized"):
        got = L.rescale(y, 2.0, None, -1, out=small)
    assert got is small and small.shape == (4, 8) and torch.equal(small, y * 2.0)
    with pytest.raises(RuntimeError):
        L.rescale(y, 2.0, None, -1, out=torch.empty(4, 8, device="meta"))


def test_float64_outputs_past_the_square_overflow_are_measured_in_two_passes() -> None:
    """float64 values above ~1.3e154 overflow a one-pass sum of squares; the torch two-pass
    path still measures their (finite) variance."""
    g = torch.Generator().manual_seed(3)
    t = (1 + 1e-3 * torch.randn(64, 32, generator=g, dtype=torch.float64)) * 1e155
    var = L._stats(t, None, -1, has_bias=False)[0]
    assert math.isfinite(var)
    assert abs(var / float(t.var(correction=0)) - 1.0) < 1e-9
