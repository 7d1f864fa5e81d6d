"""Pure NumPy reference path of the keyed Philox4x32-10 engine.

This module and ``_native.c`` perform the same IEEE-754 double operations in the same order
(NumPy never fuses a multiply and an add), so both give bit-identical float64 values. Only
``+ - * /``, ``sqrt``, exact bit manipulation and exact integer-to-double conversions are
used: the logarithm, sine/cosine of ``2 pi u`` and Wichura's AS241 normal quantile are written
out here instead of calling the platform's libm, whose last bits vary between machines.

Element ``i`` uses Philox block ``i >> 1`` and half ``i & 1`` of its 128 output bits:

* ``uniform``, ``trunc_normal``: one 52-bit uniform ``u = (m + 1/2) 2^-52`` from the 64-bit
  word ``(w1 << 32 | w0)`` (half 0) or ``(w3 << 32 | w2)`` (half 1), top 52 bits;
* ``normal``: Box-Muller on the block's two uniforms, ``r cos(theta)`` for half 0 and
  ``r sin(theta)`` for half 1.

``normal32`` (the normal of float32 and narrower tensors) is computed in float32 instead:
element ``i`` uses block ``i >> 2`` and quarter ``q = i & 3``: words ``(w0, w1)`` make one
Box-Muller pair (elements ``4j``, ``4j + 1``), words ``(w2, w3)`` the other, each with a
23-bit ``u1 = (m + 1/2) 2^-23`` from the word's top bits and a 26-bit angle (3 octant bits,
23 fraction bits), evaluated with float32 ``+ - * /`` and ``sqrt`` only (no FMA), in the same
order as ``_native.c`` and ``_torchops.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np

__all__ = ["philox4x32_10", "values_at", "values_range"]

DIST_CODES: Final = {"uniform": 0, "normal": 1, "trunc_normal": 2, "normal32": 3}
NORMAL32: Final = 3
# elements per Philox block for each distribution code
PER_BLOCK: Final = {0: 2, 1: 2, 2: 2, 3: 4}

M0: Final = np.uint64(0xD2511F53)
M1: Final = np.uint64(0xCD9E8D57)
W0: Final = 0x9E3779B9
W1: Final = 0xBB67AE85
_MASK32: Final = np.uint64(0xFFFFFFFF)

# ---- constants: the same decimal literals / exact expressions as in _native.c ----
SQRT1_2: Final = 0.70710678118654752440
LN2_HI: Final = 6.93147180369123816490e-01
LN2_LO: Final = 1.90821492927058770002e-10
PI_4: Final = 0.78539816339744830962
TWO52: Final = 4503599627370496.0
HALF_ULP52: Final = 1.1102230246251565e-16  # 2^-53
HALF_ULP49: Final = 8.8817841970012523e-16  # 2^-50
_LOG_C: Final = [2.0 / k for k in (23.0, 21.0, 19.0, 17.0, 15.0, 13.0, 11.0, 9.0, 7.0, 5.0, 3.0)]
_SIN_C: Final = [
    1.0 / 355687428096000.0, -1.0 / 1307674368000.0, 1.0 / 6227020800.0, -1.0 / 39916800.0,
    1.0 / 362880.0, -1.0 / 5040.0, 1.0 / 120.0, -1.0 / 6.0,
]
_COS_C: Final = [
    1.0 / 20922789888000.0, -1.0 / 87178291200.0, 1.0 / 479001600.0, -1.0 / 3628800.0,
    1.0 / 40320.0, -1.0 / 720.0, 1.0 / 24.0, -1.0 / 2.0,
]
_PPND_A: Final = [
    2.5090809287301226727e+3, 3.3430575583588128105e+4, 6.7265770927008700853e+4,
    4.5921953931549871457e+4, 1.3731693765509461125e+4, 1.9715909503065514427e+3,
    1.3314166789178437745e+2, 3.3871328727963666080e+0,
]
_PPND_B: Final = [
    5.2264952788528545610e+3, 2.8729085735721942674e+4, 3.9307895800092710610e+4,
    2.1213794301586595867e+4, 5.3941960214247511077e+3, 6.8718700749205790830e+2,
    4.2313330701600911252e+1, 1.0,
]
_PPND_C: Final = [
    7.74545014278341407640e-4, 2.27238449892691845833e-2, 2.41780725177450611770e-1,
    1.27045825245236838258e+0, 3.64784832476320460504e+0, 5.76949722146069140550e+0,
    4.63033784615654529590e+0, 1.42343711074968357734e+0,
]
_PPND_D: Final = [
    1.05075007164441684324e-9, 5.47593808499534494600e-4, 1.51986665636164571966e-2,
    1.48103976427480074590e-1, 6.89767334985100004550e-1, 1.67638483018380384940e+0,
    2.05319162663775882187e+0, 1.0,
]
_PPND_E: Final = [
    2.01033439929228813265e-7, 2.71155556874348757815e-5, 1.24266094738807843860e-3,
    2.65321895265761230930e-2, 2.96560571828504891230e-1, 1.78482653991729133580e+0,
    5.46378491116411436990e+0, 6.65790464350110377720e+0,
]
_PPND_F: Final = [
    2.04426310338993978564e-15, 1.42151175831644588870e-7, 1.84631831751005468180e-5,
    7.86869131145613259100e-4, 1.48753612908506148525e-2, 1.36929880922735805310e-1,
    5.99832206555887937690e-1, 1.0,
]

# ---- float32 constants of normal32: the same bit patterns as the hex literals in _native.c ----
F_SQRT1_2: Final = np.float32(0.7071067690849304)  # 0x1.6a09e6p-1
F_PI_4: Final = np.float32(0.7853981852531433)  # 0x1.921fb6p-1
F_LN2_HI: Final = np.float32(0.693145751953125)  # 0x1.62e4p-1: 16 significant bits
F_LN2_LO: Final = np.float32(1.4286067653301870e-06)  # 0x1.7f7d1cp-20
F_HALF_ULP23: Final = np.float32(2.0 ** -24)
_F_LOG_C: Final = [np.float32(2.0 / k) for k in (9.0, 7.0, 5.0, 3.0)]
_F_SIN_C: Final = [np.float32(c) for c in (1.0 / 362880.0, -1.0 / 5040.0, 1.0 / 120.0, -1.0 / 6.0)]
_F_COS_C: Final = [np.float32(c) for c in
                   (-1.0 / 3628800.0, 1.0 / 40320.0, -1.0 / 720.0, 1.0 / 24.0, -1.0 / 2.0)]
F_ONE: Final = np.float32(1.0)

Key4 = tuple[int, int, int, int]  # (k0, k1, c2, c3)
Params = tuple[float, float, float, float, float, float, float, float]


def philox4x32_10(
    ctr: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], key: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Apply Philox4x32-10 to counters given as four uint32-valued arrays; return 4 arrays.

    >>> [hex(int(w[0])) for w in philox4x32_10(tuple(np.zeros(1, np.uint64) for _ in range(4)), (0, 0))]
    ['0x6627e8d5', '0xe169c58d', '0xbc57ac4c', '0x9b00dbd8']
    """
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint64) & _MASK32 for c in ctr)
    k0, k1 = int(key[0]), int(key[1])
    for _ in range(10):
        p0 = M0 * c0
        p1 = M1 * c2
        n0 = (p1 >> np.uint64(32)) ^ c1 ^ np.uint64(k0)
        n2 = (p0 >> np.uint64(32)) ^ c3 ^ np.uint64(k1)
        c1 = p1 & _MASK32
        c3 = p0 & _MASK32
        c0, c2 = n0, n2
        k0 = (k0 + W0) & 0xFFFFFFFF
        k1 = (k1 + W1) & 0xFFFFFFFF
    return c0, c1, c2, c3


def _bits2d(b: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(b, dtype=np.uint64).view(np.float64)


def _u52(m: np.ndarray) -> np.ndarray:
    """``(m + 1/2) 2^-52`` exactly, for 52-bit integers ``m``."""
    return (_bits2d(m | np.uint64(0x3FF0000000000000)) - 1.0) + HALF_ULP52


def _horner(coefs: Sequence[Any], z: np.ndarray) -> np.ndarray:
    r = np.full_like(z, coefs[0])
    for c in coefs[1:]:
        r = c + z * r
    return r


def ilog(x: np.ndarray) -> np.ndarray:
    """Natural log of ``x`` in ``[2^-53, 1)`` with only ``+ - * /`` and bit operations."""
    b = np.ascontiguousarray(x, dtype=np.float64).view(np.uint64)
    ex = (b >> np.uint64(52)) & np.uint64(0x7FF)
    m = _bits2d((b & np.uint64(0x000FFFFFFFFFFFFF)) | np.uint64(0x3FE0000000000000))
    e = _bits2d(np.uint64(0x4330000000000000) | ex) - (TWO52 + 1022.0)
    return _log_tail(m, e, 1.0, SQRT1_2, _LOG_C, LN2_HI, LN2_LO)


def _log_tail(m: np.ndarray, e: np.ndarray, one: Any, sqrt1_2: Any, coefs: Sequence[Any],
              ln2_hi: Any, ln2_lo: Any) -> np.ndarray:
    """``log(m 2^e)`` for ``m`` in ``[1/2, 1)``: ``2 atanh(s)`` on ``[sqrt(1/2), sqrt(2))``.

    The same operations in float64 (``ilog``) and float32 (``ilog32``: float32 arrays and
    float32 constants, so NumPy computes in float32).
    """
    small = m < sqrt1_2
    m = np.where(small, m + m, m)
    e = np.where(small, e - one, e)
    f = m - one
    s = f / (m + one)
    z = s * s
    lm = (s + s) + s * (z * _horner(coefs, z))
    return e * ln2_hi + (e * ln2_lo + lm)


def _sin_poly(x: np.ndarray) -> np.ndarray:
    z = x * x
    return x + x * (z * _horner(_SIN_C, z))


def _cos_poly(x: np.ndarray) -> np.ndarray:
    z = x * x
    return 1.0 + z * _horner(_COS_C, z)


def _octant(sn: np.ndarray, cs: np.ndarray, swap: np.ndarray,
            q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(cos theta, sin theta)`` from the polynomials on ``[0, pi/4]``: ``swap`` is the
    octant's low bit (the angle was reflected), ``q`` (uint64) its top two bits."""
    sp = np.where(swap, cs, sn)
    cp = np.where(swap, sn, cs)
    odd = (q & np.uint64(1)) != 0
    a_ = np.where(odd, sp, cp)
    b_ = np.where(odd, cp, sp)
    ct = np.where(((q ^ (q >> np.uint64(1))) & np.uint64(1)) != 0, -a_, a_)
    st = np.where((q >> np.uint64(1)) != 0, -b_, b_)
    return ct, st


def _ppnd_central(q: np.ndarray) -> np.ndarray:
    r = 0.180625 - q * q
    return (_horner(_PPND_A, r) * q) / _horner(_PPND_B, r)


def _ppnd_tail(p: np.ndarray) -> np.ndarray:
    """AS241 for ``p < 0.075`` (the lower tail): returns the (negative) quantile."""
    r = np.sqrt(-ilog(p))
    near = r <= 5.0
    out = np.empty_like(p)
    rn = r[near] - 1.6
    out[near] = -(_horner(_PPND_C, rn) / _horner(_PPND_D, rn))
    rf = r[~near] - 5.0
    out[~near] = -(_horner(_PPND_E, rf) / _horner(_PPND_F, rf))
    return out


def _words(key: Key4, blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two 52-bit integers of each Philox block (halves 0 and 1)."""
    blocks = np.asarray(blocks, dtype=np.uint64)
    c0 = blocks & _MASK32
    c1 = blocks >> np.uint64(32)
    c2 = np.full_like(blocks, key[2])
    c3 = np.full_like(blocks, key[3])
    w0, w1, w2, w3 = philox4x32_10((c0, c1, c2, c3), (key[0], key[1]))
    sh32, sh12 = np.uint64(32), np.uint64(12)
    return ((w1 << sh32) | w0) >> sh12, ((w3 << sh32) | w2) >> sh12


def _bits2f(b: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(b, dtype=np.uint32).view(np.float32)


def ilog32(x: np.ndarray) -> np.ndarray:
    """Natural log of float32 ``x`` in ``[2^-126, 1)``: float32 ``+ - * /`` and bit operations."""
    b = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    ex = (b >> np.uint32(23)) & np.uint32(0xFF)
    m = _bits2f((b & np.uint32(0x7FFFFF)) | np.uint32(0x3F000000))  # [0.5, 1)
    e = ex.astype(np.float32) - np.float32(126.0)  # exact
    return _log_tail(m, e, F_ONE, F_SQRT1_2, _F_LOG_C, F_LN2_HI, F_LN2_LO)


def _pair32(mean: np.float32, sd: np.float32, wu: np.ndarray,
            wt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One float32 Box-Muller pair per lane from the 32-bit words ``wu`` (radius), ``wt`` (angle)."""
    u1 = (_bits2f((wu >> np.uint32(9)) | np.uint32(0x3F800000)) - F_ONE) + F_HALF_ULP23
    rad = np.sqrt(np.float32(-2.0) * ilog32(u1))
    f = (_bits2f(((wt >> np.uint32(6)) & np.uint32(0x7FFFFF)) | np.uint32(0x3F800000)) - F_ONE) \
        + F_HALF_ULP23
    swap = (wt & np.uint32(1 << 29)) != 0
    x = np.where(swap, F_ONE - f, f) * F_PI_4
    z = x * x
    sn = x + x * (z * _horner(_F_SIN_C, z))
    cs = F_ONE + z * _horner(_F_COS_C, z)
    ct, st = _octant(sn, cs, swap, (wt >> np.uint32(30)).astype(np.uint64))
    return mean + sd * (rad * ct), mean + sd * (rad * st)


def block_values32(key: Key4, p: Params, blocks: np.ndarray) -> tuple[np.ndarray, ...]:
    """Float32 normal values of quarters 0..3 of each Philox block (elements 4b .. 4b + 3)."""
    blocks = np.asarray(blocks, dtype=np.uint64)
    c2 = np.full_like(blocks, key[2])
    c3 = np.full_like(blocks, key[3])
    w = [x.astype(np.uint32) for x in
         philox4x32_10((blocks & _MASK32, blocks >> np.uint64(32), c2, c3), (key[0], key[1]))]
    mean, sd = np.float32(p[0]), np.float32(p[1])
    v0, v1 = _pair32(mean, sd, w[0], w[1])
    v2, v3 = _pair32(mean, sd, w[2], w[3])
    return v0, v1, v2, v3


def _trunc(p: Params, u: np.ndarray) -> np.ndarray:
    mean, std, pa, pbc, z_mass, sign, lo, hi = p
    plo = pa + u * z_mass
    phi = pbc + (1.0 - u) * z_mass
    use_lo = plo <= 0.5
    pv = np.where(use_lo, plo, phi)
    q = pv - 0.5
    x = _ppnd_central(q)
    tail = q < -0.425
    if tail.any():
        x[tail] = _ppnd_tail(pv[tail])
    z = np.where(use_lo, x, -x)
    z = sign * z
    z = np.where(z < lo, lo, z)
    z = np.where(z > hi, hi, z)
    return mean + std * z


def block_values(dist: int, key: Key4, p: Params, blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float64 values of halves 0 and 1 of each Philox block (the element pairs 2b, 2b+1)."""
    wa, wb = _words(key, blocks)
    if dist == 0:
        lo, sc = p[0], p[1]
        return lo + sc * _u52(wa), lo + sc * _u52(wb)
    if dist == 1:
        mean, sd = p[0], p[1]
        u1 = _u52(wa)
        rad = np.sqrt(-2.0 * ilog(u1))
        octant = wb >> np.uint64(49)
        f = (_bits2d(np.uint64(0x3FF0000000000000) | ((wb & np.uint64(0x1FFFFFFFFFFFF)) << np.uint64(3)))
             - 1.0) + HALF_ULP49
        swap = (octant & np.uint64(1)) != 0
        x = np.where(swap, 1.0 - f, f) * PI_4
        ct, st = _octant(_sin_poly(x), _cos_poly(x), swap, octant >> np.uint64(1))
        return mean + sd * (rad * ct), mean + sd * (rad * st)
    return _trunc(p, _u52(wa)), _trunc(p, _u52(wb))


def values_range(dist: int, key: Key4, p: Params, start: int, n: int) -> np.ndarray:
    """Values of the global elements ``start .. start + n - 1`` (float64; float32 for normal32)."""
    if dist == NORMAL32:
        if n <= 0:
            return np.empty(0, dtype=np.float32)
        b0 = start >> 2
        b1 = (start + n - 1) >> 2
        vals = block_values32(key, p, np.arange(b0, b1 + 1, dtype=np.uint64))
        inter = np.stack(vals, axis=1).reshape(-1)
        s = start - 4 * b0
        return inter[s : s + n]
    if n <= 0:
        return np.empty(0, dtype=np.float64)
    b0 = start >> 1
    b1 = (start + n - 1) >> 1
    va, vb = block_values(dist, key, p, np.arange(b0, b1 + 1, dtype=np.uint64))
    inter = np.empty(2 * va.size, dtype=np.float64)
    inter[0::2] = va
    inter[1::2] = vb
    s = start - 2 * b0
    return inter[s : s + n]


def values_at(dist: int, key: Key4, p: Params, idx: np.ndarray) -> np.ndarray:
    """Values at arbitrary non-negative global indices (any shape, int64)."""
    idx = np.asarray(idx, dtype=np.int64)
    flat = idx.ravel()
    if dist == NORMAL32:
        vals = np.stack(block_values32(key, p, (flat >> 2).astype(np.uint64)), axis=0)
        return vals[flat & 3, np.arange(flat.size)].reshape(idx.shape)
    va, vb = block_values(dist, key, p, (flat >> 1).astype(np.uint64))
    return np.where((flat & 1) != 0, vb, va).reshape(idx.shape)
