"""The keyed Philox4x32-10 engine written in torch operations: runs on any device.

A line-by-line twin of the NumPy reference (``_philox.py``): the same Philox rounds, the same
bit manipulations and the same IEEE-754 double operations in the same order, so it gives the
same float64 values bit for bit, on the CPU and on accelerators. What makes that hold on a
GPU:

* Philox in int64 lanes holding 32-bit words. The 32x32 -> 64-bit products are split into two
  16x32 partial products (each < 2^48), so no int64 product ever overflows (torch does not
  define wrap-around) and no unsigned dtype is needed.
* Floats use only ``+ - *`` with one rounding each (separate kernels: nothing can be fused into
  an FMA; ``a + b`` and ``a - b`` stay exact even where a kernel computes them as
  ``fma(+-1, b, a)``), ``/`` between two tensors (a division by a Python scalar may be turned
  into a multiplication by its reciprocal on CUDA; none is used), ``sqrt`` (correctly rounded
  in CUDA's and every CPU's double precision), ``where``, comparisons, exact bit views
  (``int64 <-> float64``) and exact conversions. No ``log``/``sin``/``cos``/``erf`` kernels,
  whose last bits differ between devices: those are the ones written out in ``_philox.py``.
* Rounding to float16/bfloat16 goes through float32 rounded to odd (one correct rounding, as
  the CPU path does), since torch converts ``double -> half`` through ``float`` on CUDA.

Do not run this under ``torch.compile``: a fused kernel may contract ``a * b + c`` into an FMA.
"""

from __future__ import annotations

from typing import Final

import torch

from ._philox import (
    _COS_C,
    _F_COS_C,
    _F_LOG_C,
    _F_SIN_C,
    _LOG_C,
    _PPND_A,
    _PPND_B,
    _PPND_C,
    _PPND_D,
    _PPND_E,
    _PPND_F,
    _SIN_C,
    F_HALF_ULP23,
    F_LN2_HI,
    F_LN2_LO,
    F_PI_4,
    F_SQRT1_2,
    HALF_ULP49,
    HALF_ULP52,
    LN2_HI,
    LN2_LO,
    NORMAL32,
    PI_4,
    SQRT1_2,
    TWO52,
    W0,
    W1,
    Key4,
    Params,
)

__all__ = ["block_values", "block_values32", "isqrt", "isqrt32", "philox4x32_10", "round_to", "values"]

_M32: Final = 0xFFFFFFFF
_M0: Final = 0xD2511F53
_M1: Final = 0xCD9E8D57
_ONE: Final = 0x3FF0000000000000  # bits of 1.0
_HALF: Final = 0x3FE0000000000000  # bits of 0.5
_MANT: Final = 0x000FFFFFFFFFFFFF
_F64 = torch.float64
_I64 = torch.int64


def _mulhilo(m: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32-bit words of ``m * x`` (``m`` a 32-bit constant, ``x`` in [0, 2^32))."""
    lo16 = x * (m & 0xFFFF)  # < 2^48
    s = x * (m >> 16) + (lo16 >> 16)  # < 2^48 + 2^32: m * x = s * 2^16 + (lo16 & 0xFFFF)
    return s >> 16, ((s & 0xFFFF) << 16) | (lo16 & 0xFFFF)


def philox4x32_10(ctr: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
                  key: tuple[int, int]) -> tuple[torch.Tensor, ...]:
    """Philox4x32-10 on counters given as four int64 tensors of 32-bit words; 4 tensors back.

    >>> z = torch.zeros(1, dtype=torch.int64)
    >>> [hex(int(w[0])) for w in philox4x32_10((z, z, z, z), (0, 0))]
    ['0x6627e8d5', '0xe169c58d', '0xbc57ac4c', '0x9b00dbd8']
    """
    c0, c1, c2, c3 = (c.to(_I64) & _M32 for c in ctr)
    k0, k1 = int(key[0]), int(key[1])
    for _ in range(10):
        hi0, lo0 = _mulhilo(_M0, c0)
        hi1, lo1 = _mulhilo(_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 = (k0 + W0) & _M32
        k1 = (k1 + W1) & _M32
    return c0, c1, c2, c3


def _f64(bits: torch.Tensor) -> torch.Tensor:
    return bits.view(_F64)


_M62: Final = (1 << 62) - 1


def _sq62(y: torch.Tensor) -> torch.Tensor:
    """``y * y mod 2^62`` for int64 ``y < 2^54``, with no intermediate above 2^63."""
    yh, yl = y >> 26, y & 0x3FFFFFF
    a = ((yh * yh) & 0x3FF) << 52
    b = ((2 * yh * yl) & ((1 << 36) - 1)) << 26
    return (((a + b) & _M62) + yl * yl) & _M62


def isqrt(x: torch.Tensor) -> torch.Tensor:
    """Correctly rounded square root of float64 ``x >= 0`` (normal or zero), on any device.

    ``torch.sqrt`` is correctly rounded on CUDA but not on every CPU build (torch 2.13's
    AVX-512 kernel rounds 0.8% of doubles the other way), so its result is only a first guess
    ``y`` within one ulp, checked exactly in integers: with ``x = X 4^k``, ``X`` in
    ``[2^104, 2^106)`` and ``y = Y 2^k``, ``Y`` is right iff ``-Y < X - Y^2 <= Y``
    (computed mod 2^62: ``|X - Y^2| < 2^56``), otherwise ``Y + 1`` or ``Y - 1`` is.
    """
    b = x.contiguous().view(_I64)
    ex = (b >> 52) & 0x7FF
    s = 52 + ((ex - 1127) & 1)  # X = mantissa * 2^s, s in {52, 53}
    k = (ex - 1075 - s) >> 1  # exact: ex - 1075 - s is even
    y = torch.sqrt(x)
    big_y = (y * _f64((1023 - k) << 52)).to(_I64)  # y 2^-k: an integer <= 2^53
    mant = (b & _MANT) | (1 << 52)
    xm = (mant & ((1 << (62 - s)) - 1)) << s  # X mod 2^62 (s is a tensor: shift per lane)
    r = (xm - _sq62(big_y)) & _M62
    r = torch.where(r >= 1 << 61, r - (1 << 62), r)  # X - Y^2, exact
    big_y = big_y + (r > big_y).to(_I64) - (r <= -big_y).to(_I64)
    out = big_y.to(_F64) * _f64((1023 + k) << 52)
    return torch.where(x == 0.0, x, out)


def _u52(m: torch.Tensor) -> torch.Tensor:
    """``(m + 1/2) 2^-52`` exactly, for 52-bit integers ``m``."""
    return (_f64(m | _ONE) - 1.0) + HALF_ULP52


def _horner(coefs: list[float], z: torch.Tensor) -> torch.Tensor:
    r = torch.full_like(z, coefs[0])
    for c in coefs[1:]:
        r = (z * r) + c
    return r


def ilog(x: torch.Tensor) -> torch.Tensor:
    """Natural log of float64 ``x`` in ``[2^-1022, 1)``, as ``_philox.ilog``."""
    b = x.contiguous().view(_I64)
    ex = (b >> 52) & 0x7FF
    m = _f64((b & _MANT) | _HALF)
    e = _f64(ex | 0x4330000000000000) - (TWO52 + 1022.0)
    return _log_tail(m, e, SQRT1_2, _LOG_C, LN2_HI, LN2_LO)


def _log_tail(m: torch.Tensor, e: torch.Tensor, sqrt1_2: float, coefs: list[float], ln2_hi: float,
              ln2_lo: float) -> torch.Tensor:
    """``log(m 2^e)``, as ``_philox._log_tail``, in ``m``'s dtype (scalars hold exact values
    of that dtype)."""
    small = m < sqrt1_2
    m = torch.where(small, m + m, m)
    e = torch.where(small, e - 1.0, e)
    f = m - 1.0
    s = f / (m + 1.0)
    z = s * s
    lm = (s + s) + s * (z * _horner(coefs, z))
    return e * ln2_hi + (e * ln2_lo + lm)


def _octant(sn: torch.Tensor, cs: torch.Tensor, swap: torch.Tensor,
            q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos theta, sin theta)``, as ``_philox._octant``."""
    sp = torch.where(swap, cs, sn)
    cp = torch.where(swap, sn, cs)
    odd = (q & 1) != 0
    a_ = torch.where(odd, sp, cp)
    b_ = torch.where(odd, cp, sp)
    ct = torch.where(((q ^ (q >> 1)) & 1) != 0, -a_, a_)
    st = torch.where((q >> 1) != 0, -b_, b_)
    return ct, st


def _sin_poly(x: torch.Tensor) -> torch.Tensor:
    z = x * x
    return x + x * (z * _horner(_SIN_C, z))


def _cos_poly(x: torch.Tensor) -> torch.Tensor:
    z = x * x
    return 1.0 + z * _horner(_COS_C, z)


def _ppnd_central(q: torch.Tensor) -> torch.Tensor:
    r = 0.180625 - q * q
    return (_horner(_PPND_A, r) * q) / _horner(_PPND_B, r)


def _ppnd_tail(p: torch.Tensor) -> torch.Tensor:
    """AS241 for the lower tail, evaluated everywhere (``where`` picks): no host sync."""
    r = isqrt(-ilog(p))
    rn = r - 1.6
    near = -(_horner(_PPND_C, rn) / _horner(_PPND_D, rn))
    rf = r - 5.0
    far = -(_horner(_PPND_E, rf) / _horner(_PPND_F, rf))
    return torch.where(r <= 5.0, near, far)


def _words(key: Key4, blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two 52-bit integers of each Philox block (halves 0 and 1)."""
    c0 = blocks & _M32
    c1 = blocks >> 32
    c2 = torch.full_like(blocks, key[2])
    c3 = torch.full_like(blocks, key[3])
    w0, w1, w2, w3 = philox4x32_10((c0, c1, c2, c3), (key[0], key[1]))
    return (w1 << 20) | (w0 >> 12), (w3 << 20) | (w2 >> 12)


# ---- normal32: float32 twin of _philox.block_values32 ----
_F32 = torch.float32
_I32 = torch.int32
# the float32 constants as Python floats holding exactly those float32 values: a scalar operand
# is converted to the tensor's float32 without rounding
_FC = {name: float(v) for name, v in (("sqrt1_2", F_SQRT1_2), ("pi_4", F_PI_4), ("ln2_hi", F_LN2_HI),
                                      ("ln2_lo", F_LN2_LO), ("half23", F_HALF_ULP23))}
_FLOG = [float(c) for c in _F_LOG_C]
_FSIN = [float(c) for c in _F_SIN_C]
_FCOS = [float(c) for c in _F_COS_C]


def _f32(bits: torch.Tensor) -> torch.Tensor:
    """float32 with the given bits (int64 holding values below 2^31)."""
    return bits.to(_I32).view(_F32)


def isqrt32(x: torch.Tensor) -> torch.Tensor:
    """Correctly rounded square root of float32 ``x >= 0``, on any device.

    ``torch.sqrt``'s float32 result ``y`` is taken as a guess within one ulp and checked
    exactly in float64: the midpoints between ``y`` and its neighbours have 25 significant bits,
    so their squares (50 bits) and ``x`` compare exactly; ``x`` is never equal to one.
    """
    y = torch.sqrt(x)
    up = torch.nextafter(y, torch.full_like(y, float("inf")))
    down = torch.nextafter(y, torch.zeros_like(y))
    yd = y.to(_F64)
    hi = (yd + up.to(_F64)) * 0.5
    lo = (yd + down.to(_F64)) * 0.5
    xd = x.to(_F64)
    y = torch.where(xd > hi * hi, up, y)
    return torch.where((xd < lo * lo) & (x > 0), down, y)


def ilog32(x: torch.Tensor) -> torch.Tensor:
    """Natural log of float32 ``x`` in ``[2^-126, 1)``, as ``_philox.ilog32``."""
    b = x.contiguous().view(_I32).to(_I64)
    ex = (b >> 23) & 0xFF
    m = _f32((b & 0x7FFFFF) | 0x3F000000)
    e = ex.to(_F32) - 126.0
    return _log_tail(m, e, _FC["sqrt1_2"], _FLOG, _FC["ln2_hi"], _FC["ln2_lo"])


def _pair32(mean: float, sd: float, wu: torch.Tensor,
            wt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    u1 = (_f32((wu >> 9) | 0x3F800000) - 1.0) + _FC["half23"]
    rad = isqrt32(-2.0 * ilog32(u1))
    f = (_f32(((wt >> 6) & 0x7FFFFF) | 0x3F800000) - 1.0) + _FC["half23"]
    swap = ((wt >> 29) & 1) != 0
    x = torch.where(swap, 1.0 - f, f) * _FC["pi_4"]
    z = x * x
    sn = x + x * (z * _horner(_FSIN, z))
    cs = 1.0 + z * _horner(_FCOS, z)
    ct, st = _octant(sn, cs, swap, wt >> 30)
    return mean + sd * (rad * ct), mean + sd * (rad * st)


def block_values32(key: Key4, p: Params, blocks: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Float32 normal values of quarters 0..3 of each Philox block (int64 ``blocks``)."""
    c2 = torch.full_like(blocks, key[2])
    c3 = torch.full_like(blocks, key[3])
    w = philox4x32_10((blocks & _M32, blocks >> 32, c2, c3), (key[0], key[1]))
    mean, sd = float(torch.tensor(p[0], dtype=_F32)), float(torch.tensor(p[1], dtype=_F32))
    v0, v1 = _pair32(mean, sd, w[0], w[1])
    v2, v3 = _pair32(mean, sd, w[2], w[3])
    return v0, v1, v2, v3


def _trunc(p: Params, u: torch.Tensor) -> torch.Tensor:
    mean, std, pa, pbc, z_mass, sign, lo, hi = p
    plo = pa + u * z_mass
    phi = pbc + (1.0 - u) * z_mass
    use_lo = plo <= 0.5
    pv = torch.where(use_lo, plo, phi)
    q = pv - 0.5
    x = torch.where(q < -0.425, _ppnd_tail(pv), _ppnd_central(q))
    z = torch.where(use_lo, x, -x)
    z = sign * z
    z = torch.where(z < lo, lo, z)
    z = torch.where(z > hi, hi, z)
    return mean + std * z


def block_values(dist: int, key: Key4, p: Params,
                 blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 values of halves 0 and 1 of each Philox block (int64 ``blocks``, any device)."""
    wa, wb = _words(key, blocks)
    if dist == 0:
        lo, sc = p[0], p[1]
        return lo + sc * _u52(wa), lo + sc * _u52(wb)
    if dist == 1:
        mean, sd = p[0], p[1]
        rad = isqrt(-2.0 * ilog(_u52(wa)))
        octant = wb >> 49
        f = (_f64(((wb & 0x1FFFFFFFFFFFF) << 3) | _ONE) - 1.0) + HALF_ULP49
        swap = (octant & 1) != 0
        x = torch.where(swap, 1.0 - f, f) * PI_4
        ct, st = _octant(_sin_poly(x), _cos_poly(x), swap, octant >> 1)
        return mean + sd * (rad * ct), mean + sd * (rad * st)
    return _trunc(p, _u52(wa)), _trunc(p, _u52(wb))


def values(dist: int, key: Key4, p: Params, start: int, n: int, *,
           index: torch.Tensor | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """Values of global elements ``start .. start + n - 1``, or at int64 ``index``.

    float64; float32 for ``normal32``.
    """
    if dist == NORMAL32:
        if index is not None:
            idx = index.to(device=device, dtype=_I64)
            quarters = torch.stack(block_values32(key, p, idx >> 2))
            return quarters.gather(0, (idx & 3).unsqueeze(0)).squeeze(0)
        if n <= 0:
            return torch.empty(0, dtype=_F32, device=device)
        b0 = start >> 2
        b1 = (start + n - 1) >> 2
        vals = block_values32(key, p, torch.arange(b0, b1 + 1, dtype=_I64, device=device))
        s = start - 4 * b0
        return torch.stack(vals, dim=1).view(-1)[s:s + n]
    if index is not None:
        idx = index.to(device=device, dtype=_I64)
        va, vb = block_values(dist, key, p, idx >> 1)
        return torch.where((idx & 1) != 0, vb, va)
    if n <= 0:
        return torch.empty(0, dtype=_F64, device=device)
    b0 = start >> 1
    b1 = (start + n - 1) >> 1
    va, vb = block_values(dist, key, p, torch.arange(b0, b1 + 1, dtype=_I64, device=device))
    s = start - 2 * b0
    return torch.stack((va, vb), dim=1).view(-1)[s:s + n]


def _round_odd_f32(x: torch.Tensor) -> torch.Tensor:
    """float64 -> float32 rounded to odd (bits as int64): exact for a second, narrower rounding."""
    f = x.to(torch.float32)
    back = f.to(_F64)
    bits = f.view(torch.int32).to(_I64) & _M32
    bits = bits - (back.abs() > x.abs()).to(_I64)  # rounded away from zero: step back
    return bits | (back != x).to(_I64)  # sticky bit


def round_to(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Round float64 ``x`` to ``dtype`` once, exactly as the CPU path does (same device).

    float32 ``x`` (normal32) is rounded by torch's float32 conversions (to nearest even; other
    formats such as float8 through the CPU's conversion, as the CPU path).
    """
    if x.dtype == _F32:
        if dtype in (_F32, _F64, torch.float16, torch.bfloat16):
            return x.to(dtype)
        return x.cpu().to(dtype).to(x.device)
    if dtype == _F64:
        return x
    if dtype == torch.float32:
        return x.to(torch.float32)  # IEEE double -> float conversion, round to nearest even
    if dtype == torch.float16:
        odd = _round_odd_f32(x)
        odd = torch.where(odd >= 1 << 31, odd - (1 << 32), odd).to(torch.int32)
        return odd.view(torch.float32).to(torch.float16)
    if dtype == torch.bfloat16:
        bits = _round_odd_f32(x)
        h = (bits + (0x7FFF + ((bits >> 16) & 1))) >> 16 & 0xFFFF
        return torch.where(h >= 1 << 15, h - (1 << 16), h).to(torch.int16).view(torch.bfloat16)
    return x.cpu().to(dtype).to(x.device)  # other formats: torch's CPU conversion, as the CPU path
