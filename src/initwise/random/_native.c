/*
 * initwise.random._native: the fast path of initwise's keyed Philox4x32-10 engine.
 *
 * Every value is a pure function of (key, global element index). This file and the NumPy
 * reference in _philox.py perform the *same* IEEE-754 double operations in the *same* order
 * (only +, -, *, /, sqrt, exact bit manipulation and exact int->double conversions), so the
 * two paths give bit-identical float64 values. That requires: no FMA contraction
 * (-ffp-contract=off), no fast-math, round-to-nearest. setup.py passes those flags (plus
 * -fno-math-errno -fno-trapping-math, which change no value but let GCC if-convert and
 * vectorize the selects); the
 * #error below refuses a fast-math build.
 *
 * Layout: element i uses Philox block i >> 1 (counter words c0,c1 = low/high 32 bits of the
 * block index, c2,c3 = the key's counter words) and half h = i & 1 of its 128 output bits.
 *   uniform, trunc_normal: one 52-bit uniform from words (2h, 2h+1);
 *   normal: Box-Muller on the block's two 52-bit uniforms, cos for h = 0, sin for h = 1.
 * A 52-bit uniform is u = (m + 1/2) 2^-52, m in [0, 2^52): exact, in (0, 1), and 1 - u exact.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__FAST_MATH__)
#error "initwise.random._native must not be compiled with -ffast-math"
#endif

#if !defined(_WIN32)
#include <pthread.h>
#define IW_THREADS 1
#else
#define IW_THREADS 0
#endif

/* Function multiversioning: one portable binary, AVX-512 / AVX2 code where the CPU has it.
   Every clone computes the same IEEE values (no FMA contraction anywhere). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define IW_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define IW_AVX512 1
#include <immintrin.h>
#else
#define IW_CLONES
#define IW_AVX512 0
#endif

#define B 64 /* Philox blocks per batch: 128 output values */

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

enum { DIST_UNIFORM = 0, DIST_NORMAL = 1, DIST_TRUNC = 2, DIST_NORMAL32 = 3 };
enum { OUT_F64 = 0, OUT_F32 = 1 };

typedef struct {
    uint32_t k0, k1, c2, c3;
    int dist;
    double p[8];
} params_t;

/* ---- constants shared with _philox.py (same decimal literals -> same doubles) ---- */
static const double SQRT1_2 = 0.70710678118654752440;
static const double LN2_HI = 6.93147180369123816490e-01; /* fdlibm split of ln 2 */
static const double LN2_LO = 1.90821492927058770002e-10;
static const double PI_4 = 0.78539816339744830962;
static const double TWO52 = 4503599627370496.0;       /* 2^52 */
static const double HALF_ULP52 = 1.1102230246251565e-16; /* 2^-53 */
static const double HALF_ULP49 = 8.8817841970012523e-16; /* 2^-50 */

/* log(m) = 2 atanh(s), s = (m-1)/(m+1): 2s + s*z*(2/3 + 2/5 z + ... + 2/23 z^10), z = s^2 */
#define L1 (2.0 / 3.0)
#define L2 (2.0 / 5.0)
#define L3 (2.0 / 7.0)
#define L4 (2.0 / 9.0)
#define L5 (2.0 / 11.0)
#define L6 (2.0 / 13.0)
#define L7 (2.0 / 15.0)
#define L8 (2.0 / 17.0)
#define L9 (2.0 / 19.0)
#define L10 (2.0 / 21.0)
#define L11 (2.0 / 23.0)
/* sin x = x + x*z*(S1 + z*(S2 + ...)), cos x = 1 + z*(C1 + z*(C2 + ...)), x in [0, pi/4] */
#define S1 (-1.0 / 6.0)
#define S2 (1.0 / 120.0)
#define S3 (-1.0 / 5040.0)
#define S4 (1.0 / 362880.0)
#define S5 (-1.0 / 39916800.0)
#define S6 (1.0 / 6227020800.0)
#define S7 (-1.0 / 1307674368000.0)
#define S8 (1.0 / 355687428096000.0)
#define C1 (-1.0 / 2.0)
#define C2 (1.0 / 24.0)
#define C3 (-1.0 / 720.0)
#define C4 (1.0 / 40320.0)
#define C5 (-1.0 / 3628800.0)
#define C6 (1.0 / 479001600.0)
#define C7 (-1.0 / 87178291200.0)
#define C8 (1.0 / 20922789888000.0)

/* normal32: float32 constants (the float32 roundings of the double values; the same bit
   patterns as the np.float32 constants of _philox.py) */
#define F_SQRT1_2 0x1.6a09e6p-1f
#define F_PI_4 0x1.921fb6p-1f
#define F_LN2_HI 0x1.62e4p-1f /* 16 significant bits: e * F_LN2_HI is exact for |e| <= 126 */
#define F_LN2_LO 0x1.7f7d1cp-20f
#define F_HALF_ULP23 0x1p-24f
#define FL3 0x1.555556p-1f /* 2/3 */
#define FL5 0x1.99999ap-2f /* 2/5 */
#define FL7 0x1.24924ap-2f /* 2/7 */
#define FL9 0x1.c71c72p-3f /* 2/9 */
#define FS1 (-0x1.555556p-3f) /* -1/6 */
#define FS2 0x1.111112p-7f    /* 1/120 */
#define FS3 (-0x1.a01a02p-13f) /* -1/5040 */
#define FS4 0x1.71de3ap-19f   /* 1/362880 */
#define FC1 (-0x1p-1f)        /* -1/2 */
#define FC2 0x1.555556p-5f    /* 1/24 */
#define FC3 (-0x1.6c16c2p-10f) /* -1/720 */
#define FC4 0x1.a01a02p-16f   /* 1/40320 */
#define FC5 (-0x1.27e4fcp-22f) /* -1/3628800 */

static inline __attribute__((always_inline)) double bits2d(uint64_t b) { double d; memcpy(&d, &b, 8); return d; }
static inline __attribute__((always_inline)) uint64_t d2bits(double d) { uint64_t b; memcpy(&b, &d, 8); return b; }

/* 52 random bits -> (m + 1/2) 2^-52, exactly */
static inline __attribute__((always_inline)) double u52(uint64_t m) {
    return (bits2d(0x3FF0000000000000ULL | m) - 1.0) + HALF_ULP52;
}

/* natural log of x in [2^-53, 1) with only +,-,*,/ and bit operations */
static inline __attribute__((always_inline)) double iw_log(double x) {
    uint64_t b = d2bits(x);
    uint64_t ex = (b >> 52) & 0x7FFu;
    double m = bits2d((b & 0x000FFFFFFFFFFFFFULL) | 0x3FE0000000000000ULL); /* [0.5, 1) */
    double e = bits2d(0x4330000000000000ULL | ex) - (TWO52 + 1022.0);       /* exact */
    int small = m < SQRT1_2;
    m = small ? m + m : m;
    e = small ? e - 1.0 : e;
    double f = m - 1.0;
    double s = f / (m + 1.0);
    double z = s * s;
    double r = L11;
    r = L10 + z * r; r = L9 + z * r; r = L8 + z * r; r = L7 + z * r; r = L6 + z * r;
    r = L5 + z * r; r = L4 + z * r; r = L3 + z * r; r = L2 + z * r; r = L1 + z * r;
    double lm = (s + s) + s * (z * r);
    return e * LN2_HI + (e * LN2_LO + lm);
}

static inline __attribute__((always_inline)) double sin_poly(double x) {
    double z = x * x;
    double r = S8;
    r = S7 + z * r; r = S6 + z * r; r = S5 + z * r; r = S4 + z * r; r = S3 + z * r;
    r = S2 + z * r; r = S1 + z * r;
    return x + x * (z * r);
}

static inline __attribute__((always_inline)) double cos_poly(double x) {
    double z = x * x;
    double r = C8;
    r = C7 + z * r; r = C6 + z * r; r = C5 + z * r; r = C4 + z * r; r = C3 + z * r;
    r = C2 + z * r; r = C1 + z * r;
    return 1.0 + z * r;
}

/* Wichura AS241 (PPND16) for p in (0, 0.5]: the lower-tail quantile (<= 0). */
static inline __attribute__((always_inline)) float bits2f(uint32_t b) { float f; memcpy(&f, &b, 4); return f; }
static inline __attribute__((always_inline)) uint32_t f2bits(float f) { uint32_t b; memcpy(&b, &f, 4); return b; }

/* natural log of float32 x in [2^-126, 1): the float32 twin of iw_log (atanh series to s^9) */
static inline __attribute__((always_inline)) float iw_log32(float x) {
    uint32_t b = f2bits(x);
    float m = bits2f((b & 0x7FFFFFu) | 0x3F000000u); /* [0.5, 1) */
    float e = (float)(int32_t)((b >> 23) & 0xFFu) - 126.0f;
    int small = m < F_SQRT1_2;
    m = small ? m + m : m;
    e = small ? e - 1.0f : e;
    float f = m - 1.0f;
    float s = f / (m + 1.0f);
    float z = s * s;
    float r = FL9;
    r = FL7 + z * r;
    r = FL5 + z * r;
    r = FL3 + z * r;
    float lm = (s + s) + s * (z * r);
    return e * F_LN2_HI + (e * F_LN2_LO + lm);
}

/* one float32 Box-Muller pair from the 32-bit words wu (radius) and wt (angle) */
static inline __attribute__((always_inline)) void pair32(float mean, float sd, uint32_t wu,
                                                        uint32_t wt, float *vc, float *vs) {
    float u1 = (bits2f((wu >> 9) | 0x3F800000u) - 1.0f) + F_HALF_ULP23;
    float rad = __builtin_sqrtf(-2.0f * iw_log32(u1));
    float f = (bits2f(((wt >> 6) & 0x7FFFFFu) | 0x3F800000u) - 1.0f) + F_HALF_ULP23;
    int swap = (int)((wt >> 29) & 1u);
    float x = (swap ? 1.0f - f : f) * F_PI_4;
    float z = x * x;
    float rs = FS4;
    rs = FS3 + z * rs;
    rs = FS2 + z * rs;
    rs = FS1 + z * rs;
    float sn = x + x * (z * rs);
    float rc = FC5;
    rc = FC4 + z * rc;
    rc = FC3 + z * rc;
    rc = FC2 + z * rc;
    rc = FC1 + z * rc;
    float cs = 1.0f + z * rc;
    uint32_t q = wt >> 30;
    float sp = swap ? cs : sn, cp = swap ? sn : cs;
    float A = (q & 1u) ? sp : cp, Bv = (q & 1u) ? cp : sp;
    float ct = (((q ^ (q >> 1)) & 1u) ? -A : A);
    float st = ((q >> 1) ? -Bv : Bv);
    *vc = mean + sd * (rad * ct);
    *vs = mean + sd * (rad * st);
}

static inline __attribute__((always_inline)) double ppnd_central(double q) {
    double r = 0.180625 - q * q;
    double num = (((((((2.5090809287301226727e+3 * r + 3.3430575583588128105e+4) * r +
                       6.7265770927008700853e+4) * r + 4.5921953931549871457e+4) * r +
                     1.3731693765509461125e+4) * r + 1.9715909503065514427e+3) * r +
                   1.3314166789178437745e+2) * r + 3.3871328727963666080e+0) * q;
    double den = (((((((5.2264952788528545610e+3 * r + 2.8729085735721942674e+4) * r +
                       3.9307895800092710610e+4) * r + 2.1213794301586595867e+4) * r +
                     5.3941960214247511077e+3) * r + 6.8718700749205790830e+2) * r +
                   4.2313330701600911252e+1) * r + 1.0);
    return num / den;
}

/* AS241 tail, r = sqrt(-log p) <= 5 (p >= ~1.4e-11): branch-free, vectorizable */
static inline __attribute__((always_inline)) double ppnd_tail_near(double r) {
    r = r - 1.6;
    double num = (((((((7.74545014278341407640e-4 * r + 2.27238449892691845833e-2) * r +
                       2.41780725177450611770e-1) * r + 1.27045825245236838258e+0) * r +
                     3.64784832476320460504e+0) * r + 5.76949722146069140550e+0) * r +
                   4.63033784615654529590e+0) * r + 1.42343711074968357734e+0);
    double den = (((((((1.05075007164441684324e-9 * r + 5.47593808499534494600e-4) * r +
                       1.51986665636164571966e-2) * r + 1.48103976427480074590e-1) * r +
                     6.89767334985100004550e-1) * r + 1.67638483018380384940e+0) * r +
                   2.05319162663775882187e+0) * r + 1.0);
    return -(num / den);
}

/* AS241 far tail, r > 5 (p < ~1.4e-11): rare, scalar */
static double ppnd_tail_far(double r) {
    r = r - 5.0;
    double num = (((((((2.01033439929228813265e-7 * r + 2.71155556874348757815e-5) * r +
                       1.24266094738807843860e-3) * r + 2.65321895265761230930e-2) * r +
                     2.96560571828504891230e-1) * r + 1.78482653991729133580e+0) * r +
                   5.46378491116411436990e+0) * r + 6.65790464350110377720e+0);
    double den = (((((((2.04426310338993978564e-15 * r + 1.42151175831644588870e-7) * r +
                       1.84631831751005468180e-5) * r + 7.86869131145613259100e-4) * r +
                     1.48753612908506148525e-2) * r + 1.36929880922735805310e-1) * r +
                   5.99832206555887937690e-1) * r + 1.0);
    return -(num / den);
}

/* Philox4x32-10 of block b (counter words b & 0xffffffff, b >> 32, c2, c3): the four 32-bit
   output words. All lanes 64-bit wide (values < 2^32), so that in a vectorized loop the
   32x32->64 products map onto vpmuludq. */
static inline __attribute__((always_inline)) void philox_block(const params_t *P, uint64_t b,
                                                              uint64_t *w0, uint64_t *w1,
                                                              uint64_t *w2, uint64_t *w3) {
    const uint64_t M = 0xFFFFFFFFULL;
    uint64_t c0 = b & M, c1 = b >> 32, c2 = P->c2, c3 = P->c3;
    uint64_t k0 = P->k0, k1 = P->k1;
#pragma GCC unroll 10
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * (uint32_t)c0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * (uint32_t)c2;
        uint64_t n0 = (p1 >> 32) ^ c1 ^ k0;
        uint64_t n2 = (p0 >> 32) ^ c3 ^ k1;
        c1 = p1 & M;
        c3 = p0 & M;
        c0 = n0;
        c2 = n2;
        k0 = (k0 + PHILOX_W0) & M;
        k1 = (k1 + PHILOX_W1) & M;
    }
    *w0 = c0;
    *w1 = c1;
    *w2 = c2;
    *w3 = c3;
}

/* ---- one batch: nb <= B blocks, block indices blk[], -> va[j], vb[j] (halves 0 and 1) ---- */
static inline __attribute__((always_inline)) void philox_batch(const params_t *P, int nb,
                                                              const uint64_t *blk, uint64_t *wa,
                                                              uint64_t *wb) {
    for (int j = 0; j < nb; j++) {
        uint64_t c0, c1, c2, c3;
        philox_block(P, blk[j], &c0, &c1, &c2, &c3);
        /* 64-bit words: (w1 << 32 | w0) and (w3 << 32 | w2); keep the top 52 bits */
        wa[j] = ((c1 << 32) | c0) >> 12;
        wb[j] = ((c3 << 32) | c2) >> 12;
    }
}

#if IW_AVX512
/* Philox with AVX-512 intrinsics: GCC vectorizes the portable loop above with vpmullq (a
   full 64x64 multiply, 3 uops, 15 cycles latency) instead of vpmuludq (32x32->64, 1 uop);
   that made Philox two thirds of a normal fill. Integer-only: the same bits as the C loop
   (the high halves of the 64-bit lanes hold junk between rounds; vpmuludq reads only the low
   32 bits, and the output masks them). Four independent vectors per step for latency. */
static int iw_has_avx512 = 0;

/* the high half of each product is moved down by a dword swap (vpshufd, the shuffle port)
   rather than a 64-bit shift: 512-bit shifts and vpmuludq share one port on Intel, which made
   Philox port-bound; after the swap the lane's upper half holds the product's low half
   (junk, never read: vpmuludq reads the low 32 bits and the output masks them) */
#define IW_HI(p) _mm512_shuffle_epi32(p, _MM_PERM_CDAB)
#define IW_ROUND(c0, c1, c2, c3, K0, K1)                                                   \
    do {                                                                                  \
        __m512i p0_ = _mm512_mul_epu32(c0, m0), p1_ = _mm512_mul_epu32(c2, m1);           \
        c0 = _mm512_ternarylogic_epi64(IW_HI(p1_), c1, K0, 0x96);                           \
        c2 = _mm512_ternarylogic_epi64(IW_HI(p0_), c3, K1, 0x96);                           \
        c1 = p1_;                                                                         \
        c3 = p0_;                                                                         \
    } while (0)

__attribute__((target("avx512f"), noinline)) static void philox_batch_avx512(
    const params_t *P, int nb, const uint64_t *blk, uint64_t *wa, uint64_t *wb) {
    const __m512i M = _mm512_set1_epi64(0xFFFFFFFFLL), m0 = _mm512_set1_epi64(PHILOX_M0),
                  m1 = _mm512_set1_epi64(PHILOX_M1);
    const __m512i kc2 = _mm512_set1_epi64(P->c2), kc3 = _mm512_set1_epi64(P->c3);
    __m512i K0[10], K1[10];
    uint32_t k0 = P->k0, k1 = P->k1;
    for (int r = 0; r < 10; r++) {
        K0[r] = _mm512_set1_epi64(k0);
        K1[r] = _mm512_set1_epi64(k1);
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    int j = 0;
    for (; j + 32 <= nb; j += 32) {
        __m512i a0, a1, a2, a3, b0, b1, b2, b3, c0, c1, c2, c3, d0, d1, d2, d3;
        __m512i ba = _mm512_loadu_si512(blk + j), bb = _mm512_loadu_si512(blk + j + 8),
                bc = _mm512_loadu_si512(blk + j + 16), bd = _mm512_loadu_si512(blk + j + 24);
        a0 = ba; a1 = _mm512_srli_epi64(ba, 32); a2 = kc2; a3 = kc3;
        b0 = bb; b1 = _mm512_srli_epi64(bb, 32); b2 = kc2; b3 = kc3;
        c0 = bc; c1 = _mm512_srli_epi64(bc, 32); c2 = kc2; c3 = kc3;
        d0 = bd; d1 = _mm512_srli_epi64(bd, 32); d2 = kc2; d3 = kc3;
        for (int r = 0; r < 10; r++) {
            IW_ROUND(a0, a1, a2, a3, K0[r], K1[r]);
            IW_ROUND(b0, b1, b2, b3, K0[r], K1[r]);
            IW_ROUND(c0, c1, c2, c3, K0[r], K1[r]);
            IW_ROUND(d0, d1, d2, d3, K0[r], K1[r]);
        }
#define IW_OUT(x0, x1, x2, x3, off)                                                            \
    _mm512_storeu_si512(wa + j + off,                                                         \
                        _mm512_srli_epi64(_mm512_or_si512(_mm512_slli_epi64(x1, 32),           \
                                                          _mm512_and_si512(x0, M)), 12));      \
    _mm512_storeu_si512(wb + j + off,                                                         \
                        _mm512_srli_epi64(_mm512_or_si512(_mm512_slli_epi64(x3, 32),           \
                                                          _mm512_and_si512(x2, M)), 12))
        IW_OUT(a0, a1, a2, a3, 0);
        IW_OUT(b0, b1, b2, b3, 8);
        IW_OUT(c0, c1, c2, c3, 16);
        IW_OUT(d0, d1, d2, d3, 24);
    }
    for (; j < nb; j += 8) {
        __mmask8 msk = nb - j >= 8 ? (__mmask8)0xFF : (__mmask8)((1u << (nb - j)) - 1u);
        __m512i a0 = _mm512_maskz_loadu_epi64(msk, blk + j);
        __m512i a1 = _mm512_srli_epi64(a0, 32), a2 = kc2, a3 = kc3;
        for (int r = 0; r < 10; r++) IW_ROUND(a0, a1, a2, a3, K0[r], K1[r]);
        _mm512_mask_storeu_epi64(wa + j, msk, _mm512_srli_epi64(_mm512_or_si512(
            _mm512_slli_epi64(a1, 32), _mm512_and_si512(a0, M)), 12));
        _mm512_mask_storeu_epi64(wb + j, msk, _mm512_srli_epi64(_mm512_or_si512(
            _mm512_slli_epi64(a3, 32), _mm512_and_si512(a2, M)), 12));
    }
#undef IW_OUT
}

/* ---- fused AVX-512 runs of whole blocks: Philox -> transform -> stores, in registers ----
   The same IEEE-754 operations as batch_uniform / batch_normal on the same operands in the
   same order (vector add/sub/mul/div/sqrt round exactly like the scalar ones; no FMA is
   formed: -ffp-contract=off covers intrinsics too, checked by `objdump -d | grep fma`), so
   the same bits. What changes is where values live and how exact steps are spelled: no
   uint64/double staging arrays; iw_log's exponent/mantissa split by vgetexppd / vgetmantpd
   (exact, equal to the bit manipulation); Box-Muller's octant selects as one mask blend and
   sign flips (negation flips the sign bit); float32 conversion and the (a, b) interleave in
   registers; Philox's first round multiplies the key's constant counter word, so that
   product is computed once. G vectors (8 blocks each) go through every step side by side:
   each step is a long dependency chain (10 Philox rounds, 10 Horner steps, a division and a
   square root) and the out-of-order window holds too few of them to overlap chains that are
   written one after the other. */
#define IW_T __attribute__((target("avx512f")))
#define IW_AI __attribute__((always_inline)) static inline
#ifndef IW_G
#define IW_G 4 /* vectors side by side */
#endif
#define IW_EACH _Pragma("GCC unroll 8") for (int v = 0; v < g; v++) /* g: a constant */

typedef struct {
    __m512i m0, m1, M, one, hi_x0, x2, c1r0, K0[10], K1[10];
    __m512d d_one, half52, half49, mean, sd;
} kc_t;

IW_T IW_AI void kc_init(const params_t *P, kc_t *K) {
    uint64_t p1 = (uint64_t)PHILOX_M1 * P->c2; /* round 0's second product: a constant */
    uint32_t k0 = P->k0, k1 = P->k1;
    K->m0 = _mm512_set1_epi64(PHILOX_M0);
    K->m1 = _mm512_set1_epi64(PHILOX_M1);
    K->M = _mm512_set1_epi64(0xFFFFFFFFLL);
    K->one = _mm512_set1_epi64(0x3FF0000000000000LL);
    K->hi_x0 = _mm512_set1_epi64((long long)((p1 >> 32) ^ k0)); /* n0 = hi(p1) ^ c1 ^ k0 */
    K->x2 = _mm512_set1_epi64((long long)(P->c3 ^ k1));         /* n2 = hi(p0) ^ c3 ^ k1 */
    K->c1r0 = _mm512_set1_epi64((long long)(p1 & 0xFFFFFFFFULL));
    for (int r = 0; r < 10; r++) {
        K->K0[r] = _mm512_set1_epi64(k0);
        K->K1[r] = _mm512_set1_epi64(k1);
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    K->d_one = _mm512_set1_pd(1.0);
    K->half52 = _mm512_set1_pd(HALF_ULP52);
    K->half49 = _mm512_set1_pd(HALF_ULP49);
    K->mean = _mm512_set1_pd(P->p[0]);
    K->sd = _mm512_set1_pd(P->p[1]);
}

/* blocks blk[v] + 0..7 -> the four output words, each the low dword of its 64-bit lane */
IW_T IW_AI void philox_rounds_g(const kc_t *K, const __m512i *blk, __m512i *c0, __m512i *c1,
                                __m512i *c2, __m512i *c3, const int g) {
    const __m512i m0 = K->m0, m1 = K->m1;
    IW_EACH {
        __m512i p0 = _mm512_mul_epu32(blk[v], m0);
        c0[v] = _mm512_xor_si512(_mm512_srli_epi64(blk[v], 32), K->hi_x0);
        c2[v] = _mm512_xor_si512(IW_HI(p0), K->x2);
        c1[v] = K->c1r0;
        c3[v] = p0;
    }
#pragma GCC unroll 9
    for (int r = 1; r < 10; r++) IW_EACH IW_ROUND(c0[v], c1[v], c2[v], c3[v], K->K0[r], K->K1[r]);
}

/* blocks blk[v] + 0..7 -> the 64-bit output words Wa = (w1:w0), Wb = (w3:w2) */
IW_T IW_AI void philox_g(const kc_t *K, const __m512i *blk, __m512i *Wa, __m512i *Wb,
                         const int g) {
    __m512i c0[IW_G], c1[IW_G], c2[IW_G], c3[IW_G];
    philox_rounds_g(K, blk, c0, c1, c2, c3, g);
    IW_EACH { /* (c1 << 32) | (c0 & M): imm 0xF8 = A | (B & C) */
        Wa[v] = _mm512_ternarylogic_epi64(_mm512_slli_epi64(c1[v], 32), c0[v], K->M, 0xF8);
        Wb[v] = _mm512_ternarylogic_epi64(_mm512_slli_epi64(c3[v], 32), c2[v], K->M, 0xF8);
    }
}

/* u52 of the top 52 bits of W */
IW_T IW_AI __m512d u52v(const kc_t *K, __m512i W) {
    __m512i b = _mm512_or_si512(_mm512_srli_epi64(W, 12), K->one);
    return _mm512_add_pd(_mm512_sub_pd(_mm512_castsi512_pd(b), K->d_one), K->half52);
}

#define IW_C(x) _mm512_set1_pd(x)
#define IW_HORNER(r, z, c) IW_EACH r[v] = _mm512_add_pd(_mm512_mul_pd(z[v], r[v]), IW_C(c))

IW_T IW_AI void normal_g(const kc_t *K, const __m512i *Wa, const __m512i *Wb, __m512d *va,
                         __m512d *vb, const int g) {
    __m512d e[IW_G], s[IW_G], z[IW_G], r[IW_G], rad[IW_G];
    __m512d x[IW_G], zz[IW_G], rs[IW_G], rc[IW_G], sn[IW_G], cs[IW_G];
    /* the order overlaps the slow units: the divisions first, the angle's polynomials while
       they run, then the log's polynomial and the square roots */
    IW_EACH { /* iw_log(u), up to s = f / (m + 1) */
        __m512d u = u52v(K, Wa[v]);
        __m512d m = _mm512_getmant_pd(u, _MM_MANT_NORM_p5_1, _MM_MANT_SIGN_src); /* [0.5, 1) */
        __m512d ge = _mm512_getexp_pd(u); /* ex - 1023 = iw_log's e - 1 */
        __mmask8 small = _mm512_cmp_pd_mask(m, IW_C(SQRT1_2), _CMP_LT_OQ);
        m = _mm512_mask_add_pd(m, small, m, m);
        e[v] = _mm512_mask_add_pd(ge, (__mmask8)~small, ge, K->d_one);
        s[v] = _mm512_div_pd(_mm512_sub_pd(m, K->d_one), _mm512_add_pd(m, K->d_one));
    }
    IW_EACH { /* the angle: octant bits are W's bits 61 (swap), 62, 63 */
        __m512i fb = _mm512_ternarylogic_epi64(_mm512_srli_epi64(Wb[v], 9),
                                               _mm512_set1_epi64(0x000FFFFFFFFFFFF8LL), K->one,
                                               0xEA); /* (A & B) | C */
        __m512d fr = _mm512_add_pd(_mm512_sub_pd(_mm512_castsi512_pd(fb), K->d_one), K->half49);
        __mmask8 sw = _mm512_test_epi64_mask(Wb[v], _mm512_set1_epi64(1LL << 61));
        x[v] = _mm512_mul_pd(_mm512_mask_sub_pd(fr, sw, K->d_one, fr), IW_C(PI_4));
        zz[v] = _mm512_mul_pd(x[v], x[v]);
        rs[v] = IW_C(S8);
        rc[v] = IW_C(C8);
    }
    IW_HORNER(rs, zz, S7); IW_HORNER(rc, zz, C7);
    IW_HORNER(rs, zz, S6); IW_HORNER(rc, zz, C6);
    IW_HORNER(rs, zz, S5); IW_HORNER(rc, zz, C5);
    IW_HORNER(rs, zz, S4); IW_HORNER(rc, zz, C4);
    IW_HORNER(rs, zz, S3); IW_HORNER(rc, zz, C3);
    IW_HORNER(rs, zz, S2); IW_HORNER(rc, zz, C2);
    IW_HORNER(rs, zz, S1); IW_HORNER(rc, zz, C1);
    IW_EACH {
        sn[v] = _mm512_add_pd(x[v], _mm512_mul_pd(x[v], _mm512_mul_pd(zz[v], rs[v])));
        cs[v] = _mm512_add_pd(K->d_one, _mm512_mul_pd(zz[v], rc[v]));
    }
    IW_EACH { z[v] = _mm512_mul_pd(s[v], s[v]); r[v] = IW_C(L11); }
    IW_HORNER(r, z, L10); IW_HORNER(r, z, L9); IW_HORNER(r, z, L8); IW_HORNER(r, z, L7);
    IW_HORNER(r, z, L6); IW_HORNER(r, z, L5); IW_HORNER(r, z, L4); IW_HORNER(r, z, L3);
    IW_HORNER(r, z, L2); IW_HORNER(r, z, L1);
    IW_EACH { /* the radius sqrt(-2 iw_log(u)) */
        __m512d lm = _mm512_add_pd(_mm512_add_pd(s[v], s[v]),
                                   _mm512_mul_pd(s[v], _mm512_mul_pd(z[v], r[v])));
        __m512d lg = _mm512_add_pd(_mm512_mul_pd(e[v], IW_C(LN2_HI)),
                                   _mm512_add_pd(_mm512_mul_pd(e[v], IW_C(LN2_LO)), lm));
        rad[v] = _mm512_sqrt_pd(_mm512_mul_pd(IW_C(-2.0), lg));
    }
    const __m512i sign = _mm512_set1_epi64((long long)0x8000000000000000ULL);
    IW_EACH {
        /* |cos theta| is sin_poly when bits 61 ^ 62; cos theta < 0 when bits 62 ^ 63, sin
           theta < 0 when bit 63 (batch_normal's swap / q selects as a blend and sign flips) */
        __m512i Wx = _mm512_xor_si512(Wb[v], _mm512_slli_epi64(Wb[v], 1));
        __mmask8 ka = _mm512_test_epi64_mask(Wx, _mm512_set1_epi64(1LL << 62));
        __m512d A = _mm512_mask_blend_pd(ka, cs[v], sn[v]), Bv = _mm512_mask_blend_pd(ka, sn[v], cs[v]);
        __m512d ct = _mm512_castsi512_pd(
            _mm512_ternarylogic_epi64(_mm512_castpd_si512(A), Wx, sign, 0x78)); /* A ^ (B & C) */
        __m512d st = _mm512_castsi512_pd(
            _mm512_ternarylogic_epi64(_mm512_castpd_si512(Bv), Wb[v], sign, 0x78));
        va[v] = _mm512_add_pd(K->mean, _mm512_mul_pd(K->sd, _mm512_mul_pd(rad[v], ct)));
        vb[v] = _mm512_add_pd(K->mean, _mm512_mul_pd(K->sd, _mm512_mul_pd(rad[v], st)));
    }
}

IW_T IW_AI void uniform_g(const kc_t *K, const __m512i *Wa, const __m512i *Wb, __m512d *va,
                          __m512d *vb, const int g) {
    IW_EACH {
        va[v] = _mm512_add_pd(K->mean, _mm512_mul_pd(K->sd, u52v(K, Wa[v])));
        vb[v] = _mm512_add_pd(K->mean, _mm512_mul_pd(K->sd, u52v(K, Wb[v])));
    }
}

/* store the 16 values a0 b0 a1 b1 ... a7 b7 (the first `cnt` of them when cnt < 16) */
IW_T IW_AI void store16(char *out, int kind, __m512d va, __m512d vb, int cnt) {
    if (kind == OUT_F32) {
        const __m512i ix = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
        __m512 o = _mm512_permutex2var_ps(_mm512_castps256_ps512(_mm512_cvtpd_ps(va)), ix,
                                          _mm512_castps256_ps512(_mm512_cvtpd_ps(vb)));
        if (cnt == 16)
            _mm512_storeu_ps(out, o);
        else
            _mm512_mask_storeu_ps(out, (__mmask16)((1u << cnt) - 1u), o);
    } else {
        const __m512i lo = _mm512_set_epi64(11, 3, 10, 2, 9, 1, 8, 0);
        const __m512i hi = _mm512_set_epi64(15, 7, 14, 6, 13, 5, 12, 4);
        __m512d o0 = _mm512_permutex2var_pd(va, lo, vb), o1 = _mm512_permutex2var_pd(va, hi, vb);
        double *d = (double *)out;
        if (cnt == 16) {
            _mm512_storeu_pd(d, o0);
            _mm512_storeu_pd(d + 8, o1);
        } else {
            _mm512_mask_storeu_pd(d, (__mmask8)(cnt >= 8 ? 0xFFu : (1u << cnt) - 1u), o0);
            if (cnt > 8) _mm512_mask_storeu_pd(d + 8, (__mmask8)((1u << (cnt - 8)) - 1u), o1);
        }
    }
}

/* g vectors (8 g blocks from b) -> the first `nvals` (<= 16 g) of their values at out */
IW_T IW_AI void run_group(const kc_t *K, __m512i b, char *out, const int dist, const int kind,
                          const int g, int64_t nvals) {
    const size_t step = (kind == OUT_F32 ? 4 : 8) * 16; /* bytes per 8 blocks */
    __m512i blk[IW_G], Wa[IW_G], Wb[IW_G];
    __m512d va[IW_G], vb[IW_G];
    IW_EACH blk[v] = _mm512_add_epi64(b, _mm512_set1_epi64(8 * v));
    philox_g(K, blk, Wa, Wb, g);
    if (dist == DIST_NORMAL)
        normal_g(K, Wa, Wb, va, vb, g);
    else
        uniform_g(K, Wa, Wb, va, vb, g);
    if (nvals == 16 * g) {
        IW_EACH store16(out + (size_t)v * step, kind, va[v], vb[v], 16);
    } else {
        for (int v = 0; v < g && 16 * v < nvals; v++)
            store16(out + (size_t)v * step, kind, va[v], vb[v],
                    nvals - 16 * v >= 16 ? 16 : (int)(nvals - 16 * v));
    }
}

/* blocks b0 .. b0 + nblk - 1 -> out (2 nblk values): groups of IW_G vectors side by side; the
   rest as one more (masked) group when it is over half a group, else vector by vector (one
   vector alone is latency-bound, ~1.6x slower per value, but computes no unused blocks) */
IW_T IW_AI void run_blocks(const params_t *P, uint64_t b0, int64_t nblk, char *out, const int dist,
                           const int kind) {
    kc_t K;
    kc_init(P, &K);
    const size_t step = (kind == OUT_F32 ? 4 : 8) * 16;
    const __m512i iota = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0);
    int64_t j = 0;
#define IW_AT(j) _mm512_add_epi64(_mm512_set1_epi64((long long)(b0 + (uint64_t)(j))), iota)
    for (; j + 8 * IW_G <= nblk; j += 8 * IW_G)
        run_group(&K, IW_AT(j), out + (size_t)(j / 8) * step, dist, kind, IW_G, 16 * IW_G);
    if (nblk - j > 4 * IW_G) {
        run_group(&K, IW_AT(j), out + (size_t)(j / 8) * step, dist, kind, IW_G, 2 * (nblk - j));
        return;
    }
    for (; j < nblk; j += 8)
        run_group(&K, IW_AT(j), out + (size_t)(j / 8) * step, dist, kind, 1,
                  nblk - j >= 8 ? 16 : 2 * (nblk - j));
#undef IW_AT
}

/* ---- normal32 (float32 Box-Muller, 4 values per block), fused: 8 blocks per vector give
   16 pairs, one 16-lane float32 vector each for the radius words (w0 of the 8 blocks, then w2)
   and the angle words (w1, then w3). The same float32 operations as pair32 in the same order
   (no FMA), so the same bits; vgetexpps / vgetmantps split the exponent exactly. */
typedef struct {
    __m512 one, half23, sqrt1_2, pi_4, m2, mean, sd;
    __m512i idx_lo, mant, ex1, octbit, bit30, sign;
} kf_t;

IW_T IW_AI void kf_init(const params_t *P, kf_t *F) {
    F->one = _mm512_set1_ps(1.0f);
    F->half23 = _mm512_set1_ps(F_HALF_ULP23);
    F->sqrt1_2 = _mm512_set1_ps(F_SQRT1_2);
    F->pi_4 = _mm512_set1_ps(F_PI_4);
    F->m2 = _mm512_set1_ps(-2.0f);
    F->mean = _mm512_set1_ps((float)P->p[0]);
    F->sd = _mm512_set1_ps((float)P->p[1]);
    F->idx_lo = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    F->mant = _mm512_set1_epi32(0x7FFFFF);
    F->ex1 = _mm512_set1_epi32(0x3F800000);
    F->octbit = _mm512_set1_epi32(1 << 29);
    F->bit30 = _mm512_set1_epi32(1 << 30);
    F->sign = _mm512_set1_epi32((int)0x80000000u);
}

#define IW_FC(x) _mm512_set1_ps(x)
#define IW_FHORNER(r, z, c) IW_EACH r[v] = _mm512_add_ps(_mm512_mul_ps(z[v], r[v]), IW_FC(c))

/* blocks blk[v] + 0..7 -> radius words U (w0 | w2) and angle words T (w1 | w3), 16 dwords */
IW_T IW_AI void philox_g4(const kc_t *K, const kf_t *F, const __m512i *blk, __m512i *U,
                          __m512i *T, const int g) {
    __m512i c0[IW_G], c1[IW_G], c2[IW_G], c3[IW_G];
    philox_rounds_g(K, blk, c0, c1, c2, c3, g);
    IW_EACH { /* each word is the low dword of its 64-bit lane */
        U[v] = _mm512_permutex2var_epi32(c0[v], F->idx_lo, c2[v]);
        T[v] = _mm512_permutex2var_epi32(c1[v], F->idx_lo, c3[v]);
    }
}

IW_T IW_AI void normal32_g(const kf_t *F, const __m512i *U, const __m512i *T, __m512 *vc,
                           __m512 *vs, const int g) {
    __m512 e[IW_G], s[IW_G], z[IW_G], r[IW_G], rad[IW_G];
    __m512 x[IW_G], zz[IW_G], rs[IW_G], rc[IW_G], sn[IW_G], cs[IW_G];
    IW_EACH { /* iw_log32(u1), up to s = f / (m + 1) */
        __m512 u = _mm512_add_ps(
            _mm512_sub_ps(_mm512_castsi512_ps(_mm512_or_si512(_mm512_srli_epi32(U[v], 9), F->ex1)),
                          F->one),
            F->half23);
        __m512 m = _mm512_getmant_ps(u, _MM_MANT_NORM_p5_1, _MM_MANT_SIGN_src); /* [0.5, 1) */
        __m512 ge = _mm512_getexp_ps(u); /* ex - 127 = iw_log32's e - 1 */
        __mmask16 small = _mm512_cmp_ps_mask(m, F->sqrt1_2, _CMP_LT_OQ);
        m = _mm512_mask_add_ps(m, small, m, m);
        e[v] = _mm512_mask_add_ps(ge, (__mmask16)~small, ge, F->one);
        s[v] = _mm512_div_ps(_mm512_sub_ps(m, F->one), _mm512_add_ps(m, F->one));
    }
    IW_EACH { /* the angle: bits 29 (swap), 30, 31 are the octant, 6..28 the fraction */
        __m512i fb = _mm512_ternarylogic_epi32(_mm512_srli_epi32(T[v], 6), F->mant, F->ex1,
                                               0xEA); /* (A & B) | C */
        __m512 fr = _mm512_add_ps(_mm512_sub_ps(_mm512_castsi512_ps(fb), F->one), F->half23);
        __mmask16 sw = _mm512_test_epi32_mask(T[v], F->octbit);
        x[v] = _mm512_mul_ps(_mm512_mask_sub_ps(fr, sw, F->one, fr), F->pi_4);
        zz[v] = _mm512_mul_ps(x[v], x[v]);
        rs[v] = IW_FC(FS4);
        rc[v] = IW_FC(FC5);
    }
    IW_FHORNER(rs, zz, FS3); IW_FHORNER(rc, zz, FC4);
    IW_FHORNER(rs, zz, FS2); IW_FHORNER(rc, zz, FC3);
    IW_FHORNER(rs, zz, FS1); IW_FHORNER(rc, zz, FC2);
    IW_FHORNER(rc, zz, FC1);
    IW_EACH {
        sn[v] = _mm512_add_ps(x[v], _mm512_mul_ps(x[v], _mm512_mul_ps(zz[v], rs[v])));
        cs[v] = _mm512_add_ps(F->one, _mm512_mul_ps(zz[v], rc[v]));
    }
    IW_EACH { z[v] = _mm512_mul_ps(s[v], s[v]); r[v] = IW_FC(FL9); }
    IW_FHORNER(r, z, FL7); IW_FHORNER(r, z, FL5); IW_FHORNER(r, z, FL3);
    IW_EACH {
        __m512 lm = _mm512_add_ps(_mm512_add_ps(s[v], s[v]),
                                  _mm512_mul_ps(s[v], _mm512_mul_ps(z[v], r[v])));
        __m512 lg = _mm512_add_ps(_mm512_mul_ps(e[v], IW_FC(F_LN2_HI)),
                                  _mm512_add_ps(_mm512_mul_ps(e[v], IW_FC(F_LN2_LO)), lm));
        rad[v] = _mm512_sqrt_ps(_mm512_mul_ps(F->m2, lg));
    }
    IW_EACH {
        __m512i Tx = _mm512_xor_si512(T[v], _mm512_slli_epi32(T[v], 1));
        __mmask16 ka = _mm512_test_epi32_mask(Tx, F->bit30);
        __m512 A = _mm512_mask_blend_ps(ka, cs[v], sn[v]), Bv = _mm512_mask_blend_ps(ka, sn[v], cs[v]);
        __m512 ct = _mm512_castsi512_ps(
            _mm512_ternarylogic_epi32(_mm512_castps_si512(A), Tx, F->sign, 0x78)); /* A ^ (B & C) */
        __m512 st = _mm512_castsi512_ps(
            _mm512_ternarylogic_epi32(_mm512_castps_si512(Bv), T[v], F->sign, 0x78));
        vc[v] = _mm512_add_ps(F->mean, _mm512_mul_ps(F->sd, _mm512_mul_ps(rad[v], ct)));
        vs[v] = _mm512_add_ps(F->mean, _mm512_mul_ps(F->sd, _mm512_mul_ps(rad[v], st)));
    }
}

/* store the 32 values of 8 blocks (block j: vc[j], vs[j], vc[8 + j], vs[8 + j]); the first
   cnt of them when cnt < 32 */
IW_T IW_AI void store32(float *out, __m512 vc, __m512 vs, int cnt) {
    const __m512i i0 = _mm512_setr_epi32(0, 16, 8, 24, 1, 17, 9, 25, 2, 18, 10, 26, 3, 19, 11, 27);
    const __m512i i1 = _mm512_setr_epi32(4, 20, 12, 28, 5, 21, 13, 29, 6, 22, 14, 30, 7, 23, 15, 31);
    __m512 o0 = _mm512_permutex2var_ps(vc, i0, vs), o1 = _mm512_permutex2var_ps(vc, i1, vs);
    if (cnt == 32) {
        _mm512_storeu_ps(out, o0);
        _mm512_storeu_ps(out + 16, o1);
    } else {
        _mm512_mask_storeu_ps(out, (__mmask16)(cnt >= 16 ? 0xFFFFu : (1u << cnt) - 1u), o0);
        if (cnt > 16) _mm512_mask_storeu_ps(out + 16, (__mmask16)((1u << (cnt - 16)) - 1u), o1);
    }
}

IW_T IW_AI void run_group32(const kc_t *K, const kf_t *F, __m512i b, float *out, const int g,
                            int64_t nvals) {
    __m512i blk[IW_G], U[IW_G], T[IW_G];
    __m512 vc[IW_G], vs[IW_G];
    IW_EACH blk[v] = _mm512_add_epi64(b, _mm512_set1_epi64(8 * v));
    philox_g4(K, F, blk, U, T, g);
    normal32_g(F, U, T, vc, vs, g);
    if (nvals == 32 * g) {
        IW_EACH store32(out + 32 * v, vc[v], vs[v], 32);
    } else {
        for (int v = 0; v < g && 32 * v < nvals; v++)
            store32(out + 32 * v, vc[v], vs[v], nvals - 32 * v >= 32 ? 32 : (int)(nvals - 32 * v));
    }
}

/* Elements 4 b0 .. 4 (b0 + nblk) - 1 of a normal32 fill (float32 out). */
__attribute__((target("avx512f"), noinline)) static void fill_blocks32_avx512(
    const params_t *P, uint64_t b0, int64_t nblk, float *out) {
    kc_t K;
    kf_t F;
    kc_init(P, &K);
    kf_init(P, &F);
    const __m512i iota = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0);
    int64_t j = 0;
#define IW_AT(j) _mm512_add_epi64(_mm512_set1_epi64((long long)(b0 + (uint64_t)(j))), iota)
    for (; j + 8 * IW_G <= nblk; j += 8 * IW_G)
        run_group32(&K, &F, IW_AT(j), out + 4 * j, IW_G, 32 * IW_G);
    if (nblk - j > 4 * IW_G) {
        run_group32(&K, &F, IW_AT(j), out + 4 * j, IW_G, 4 * (nblk - j));
        return;
    }
    for (; j < nblk; j += 8)
        run_group32(&K, &F, IW_AT(j), out + 4 * j, 1, nblk - j >= 8 ? 32 : 4 * (nblk - j));
#undef IW_AT
}
#undef IW_FHORNER
#undef IW_FC

/* Elements 2 b0 .. 2 (b0 + nblk) - 1 of a uniform or normal fill. */
__attribute__((target("avx512f"), noinline)) static void fill_blocks_avx512(
    const params_t *P, uint64_t b0, int64_t nblk, void *out, int kind) {
    if (P->dist == DIST_NORMAL) {
        if (kind == OUT_F32)
            run_blocks(P, b0, nblk, (char *)out, DIST_NORMAL, OUT_F32);
        else
            run_blocks(P, b0, nblk, (char *)out, DIST_NORMAL, OUT_F64);
    } else {
        if (kind == OUT_F32)
            run_blocks(P, b0, nblk, (char *)out, DIST_UNIFORM, OUT_F32);
        else
            run_blocks(P, b0, nblk, (char *)out, DIST_UNIFORM, OUT_F64);
    }
}
#undef IW_HORNER
#undef IW_C
#undef IW_EACH
#undef IW_ROUND
#undef IW_HI
#define PHILOX_BATCH(P, nb, blk, wa, wb)                                                        \
    (iw_has_avx512 ? philox_batch_avx512(P, nb, blk, wa, wb) : philox_batch(P, nb, blk, wa, wb))
#else
#define PHILOX_BATCH(P, nb, blk, wa, wb) philox_batch(P, nb, blk, wa, wb)
#endif

static inline __attribute__((always_inline)) void batch_uniform(const params_t *P, int nb, const uint64_t *wa,
                                 const uint64_t *wb, double *va, double *vb) {
    const double lo = P->p[0], sc = P->p[1];
    for (int j = 0; j < nb; j++) {
        va[j] = lo + sc * u52(wa[j]);
        vb[j] = lo + sc * u52(wb[j]);
    }
}

static inline __attribute__((always_inline)) void batch_normal(const params_t *P, int nb, const uint64_t *wa,
                                const uint64_t *wb, double *va, double *vb) {
    const double mean = P->p[0], sd = P->p[1];
    double radv[B];
    /* the radii first, in a loop of their own: its divisions and square roots (the slowest
       units) then overlap each other instead of waiting behind the sine/cosine polynomials */
    for (int j = 0; j < nb; j++) radv[j] = __builtin_sqrt(-2.0 * iw_log(u52(wa[j])));
    for (int j = 0; j < nb; j++) {
        double rad = radv[j];
        uint64_t m2 = wb[j];
        uint64_t oct = m2 >> 49;
        double f = (bits2d(0x3FF0000000000000ULL | ((m2 & 0x1FFFFFFFFFFFFULL) << 3)) - 1.0) +
                   HALF_ULP49; /* (k + 1/2) 2^-49 */
        int swap = (int)(oct & 1u);
        double x = (swap ? 1.0 - f : f) * PI_4;
        double s = sin_poly(x), c = cos_poly(x);
        double sp = swap ? c : s, cp = swap ? s : c;
        uint64_t q = oct >> 1;
        double A = (q & 1u) ? sp : cp; /* |cos(theta)| */
        double Bv = (q & 1u) ? cp : sp; /* |sin(theta)| */
        double ct = (((q ^ (q >> 1)) & 1u) ? -A : A);
        double st = ((q >> 1) ? -Bv : Bv);
        va[j] = mean + sd * (rad * ct);
        vb[j] = mean + sd * (rad * st);
    }
}

/* truncated normal by inverse CDF; params: mean, std, pa, pbc, Z, sign, lo, hi */
static inline __attribute__((always_inline)) double trunc_finish(const params_t *P, double x, int64_t use_lo) {
    double z = use_lo ? x : -x;
    z = P->p[5] * z;
    z = z < P->p[6] ? P->p[6] : z;
    z = z > P->p[7] ? P->p[7] : z;
    return P->p[0] + P->p[1] * z;
}

static inline __attribute__((always_inline)) void batch_trunc(const params_t *P, int nb,
                                                             const uint64_t *wa,
                                                             const uint64_t *wb, double *va,
                                                             double *vb) {
    const double pa = P->p[2], pbc = P->p[3], Z = P->p[4];
    double u[2 * B], v[2 * B], pv[2 * B], rv[2 * B];
    int64_t lo[2 * B], tail[2 * B];
    int64_t any_tail = 0, any_far = 0;
    for (int j = 0; j < nb; j++) {
        u[j] = u52(wa[j]);
        u[nb + j] = u52(wb[j]);
    }
    /* central region of AS241 for everything; remember which values are in the tail */
    for (int j = 0; j < 2 * nb; j++) {
        double plo = pa + u[j] * Z, phi = pbc + (1.0 - u[j]) * Z;
        int64_t l = plo <= 0.5 ? 1 : 0;
        double p = l ? plo : phi;
        double q = p - 0.5;
        pv[j] = p;
        lo[j] = l;
        tail[j] = q < -0.425 ? 1 : 0;
        any_tail |= tail[j];
        v[j] = trunc_finish(P, ppnd_central(q), l);
    }
    if (any_tail) {
        for (int j = 0; j < 2 * nb; j++) {
            double r = __builtin_sqrt(-iw_log(pv[j]));
            rv[j] = r;
            double t = trunc_finish(P, ppnd_tail_near(r), lo[j]);
            v[j] = tail[j] ? t : v[j];
            any_far |= tail[j] & (r > 5.0 ? 1 : 0);
        }
        if (any_far)
            for (int j = 0; j < 2 * nb; j++)
                if (tail[j] && rv[j] > 5.0) v[j] = trunc_finish(P, ppnd_tail_far(rv[j]), lo[j]);
    }
    for (int j = 0; j < nb; j++) {
        va[j] = v[j];
        vb[j] = v[nb + j];
    }
}

static inline __attribute__((always_inline)) void gen_batch(const params_t *P, int nb, const uint64_t *blk, double *va,
                             double *vb) {
    uint64_t wa[B], wb[B];
    PHILOX_BATCH(P, nb, blk, wa, wb);
    if (P->dist == DIST_UNIFORM)
        batch_uniform(P, nb, wa, wb, va, vb);
    else if (P->dist == DIST_NORMAL)
        batch_normal(P, nb, wa, wb, va, vb);
    else
        batch_trunc(P, nb, wa, wb, va, vb);
}

/* Fill out[0:n] with elements g0 .. g0+n-1 (global flat indices), in batches of B blocks. */
IW_CLONES
static void fill_run_batched(const params_t *P, uint64_t g0, int64_t n, void *out, int kind) {
    uint64_t blk[B];
    double va[B], vb[B], tmp[2 * B];
    int64_t done = 0;
    while (done < n) {
        uint64_t g = g0 + (uint64_t)done;
        uint64_t b0 = g >> 1;
        int skip = (int)(g & 1u);
        int64_t want = n - done + skip; /* values from element 2*b0 on */
        int nb = want >= 2 * B ? B : (int)((want + 1) >> 1);
        for (int j = 0; j < nb; j++) blk[j] = b0 + (uint64_t)j;
        gen_batch(P, nb, blk, va, vb);
        int cnt = 2 * nb - skip;
        if (cnt > n - done) cnt = (int)(n - done);
        if (skip == 0 && cnt == 2 * B) {
            if (kind == OUT_F32) {
                float *o = (float *)out + done;
                for (int j = 0; j < B; j++) {
                    o[2 * j] = (float)va[j];
                    o[2 * j + 1] = (float)vb[j];
                }
            } else {
                double *o = (double *)out + done;
                for (int j = 0; j < B; j++) {
                    o[2 * j] = va[j];
                    o[2 * j + 1] = vb[j];
                }
            }
        } else {
            for (int j = 0; j < nb; j++) {
                tmp[2 * j] = va[j];
                tmp[2 * j + 1] = vb[j];
            }
            if (kind == OUT_F32) {
                float *o = (float *)out + done;
                for (int k = 0; k < cnt; k++) o[k] = (float)tmp[skip + k];
            } else {
                double *o = (double *)out + done;
                for (int k = 0; k < cnt; k++) o[k] = tmp[skip + k];
            }
        }
        done += cnt;
    }
}

/* ---- normal32, portable: the four 32-bit words of each block, then pair32 twice ---- */
static inline __attribute__((always_inline)) void gen_batch32(const params_t *P, int nb,
                                                             const uint64_t *blk, float *v0,
                                                             float *v1, float *v2, float *v3) {
    uint32_t w0[B], w1[B], w2[B], w3[B];
    for (int j = 0; j < nb; j++) {
        uint64_t c0, c1, c2, c3;
        philox_block(P, blk[j], &c0, &c1, &c2, &c3);
        w0[j] = (uint32_t)c0;
        w1[j] = (uint32_t)c1;
        w2[j] = (uint32_t)c2;
        w3[j] = (uint32_t)c3;
    }
    const float mean = (float)P->p[0], sd = (float)P->p[1];
    for (int j = 0; j < nb; j++) pair32(mean, sd, w0[j], w1[j], &v0[j], &v1[j]);
    for (int j = 0; j < nb; j++) pair32(mean, sd, w2[j], w3[j], &v2[j], &v3[j]);
}

IW_CLONES
static void fill_run_batched32(const params_t *P, uint64_t g0, int64_t n, float *out) {
    uint64_t blk[B];
    float v0[B], v1[B], v2[B], v3[B], tmp[4 * B];
    int64_t done = 0;
    while (done < n) {
        uint64_t g = g0 + (uint64_t)done;
        uint64_t b0 = g >> 2;
        int skip = (int)(g & 3u);
        int64_t want = n - done + skip; /* values from element 4*b0 on */
        int nb = want >= 4 * B ? B : (int)((want + 3) >> 2);
        for (int j = 0; j < nb; j++) blk[j] = b0 + (uint64_t)j;
        gen_batch32(P, nb, blk, v0, v1, v2, v3);
        for (int j = 0; j < nb; j++) {
            tmp[4 * j] = v0[j];
            tmp[4 * j + 1] = v1[j];
            tmp[4 * j + 2] = v2[j];
            tmp[4 * j + 3] = v3[j];
        }
        int cnt = 4 * nb - skip;
        if (cnt > n - done) cnt = (int)(n - done);
        memcpy(out + done, tmp + skip, (size_t)cnt * sizeof(float));
        done += cnt;
    }
}

IW_CLONES
static void fill_index32(const params_t *P, const int64_t *idx, int64_t n, float *out) {
    uint64_t blk[B];
    float v[4][B];
    for (int64_t s = 0; s < n; s += B) {
        int nb = (n - s) >= B ? B : (int)(n - s);
        for (int j = 0; j < nb; j++) blk[j] = (uint64_t)idx[s + j] >> 2;
        gen_batch32(P, nb, blk, v[0], v[1], v[2], v[3]);
        for (int j = 0; j < nb; j++) out[s + j] = v[idx[s + j] & 3][j];
    }
}

static void fill_run32(const params_t *P, uint64_t g0, int64_t n, float *out) {
#if IW_AVX512
    if (iw_has_avx512 && n >= 256) {
        int64_t done = 0;
        if (g0 & 3u) { /* the rest of the first element's block */
            done = 4 - (int64_t)(g0 & 3u);
            fill_run_batched32(P, g0, done, out);
        }
        int64_t nblk = (n - done) >> 2;
        fill_blocks32_avx512(P, (g0 + (uint64_t)done) >> 2, nblk, out + done);
        done += 4 * nblk;
        if (done < n) fill_run_batched32(P, g0 + (uint64_t)done, n - done, out + done);
        return;
    }
#endif
    fill_run_batched32(P, g0, n, out);
}

/* Fill out[0:n] with elements g0 .. g0+n-1 (global flat indices). */
static void fill_run(const params_t *P, uint64_t g0, int64_t n, void *out, int kind) {
    if (P->dist == DIST_NORMAL32) {
        fill_run32(P, g0, n, (float *)out);
        return;
    }
#if IW_AVX512
    if (iw_has_avx512 && P->dist != DIST_TRUNC && n >= 256) { /* shorter: batches waste less */
        size_t es = kind == OUT_F32 ? 4 : 8;
        int64_t done = 0;
        if (g0 & 1u) { /* an odd first element: the second half of its block */
            fill_run_batched(P, g0, 1, out, kind);
            done = 1;
        }
        int64_t nblk = (n - done) >> 1;
        fill_blocks_avx512(P, (g0 + (uint64_t)done) >> 1, nblk, (char *)out + (size_t)done * es,
                           kind);
        done += 2 * nblk;
        if (done < n)
            fill_run_batched(P, g0 + (uint64_t)done, n - done, (char *)out + (size_t)done * es,
                             kind);
        return;
    }
#endif
    fill_run_batched(P, g0, n, out, kind);
}

/* Values at arbitrary global indices idx[0:n] -> out[0:n]. */
IW_CLONES
static void fill_index(const params_t *P, const int64_t *idx, int64_t n, void *out, int kind) {
    uint64_t blk[B];
    double va[B], vb[B];
    for (int64_t s = 0; s < n; s += B) {
        int nb = (n - s) >= B ? B : (int)(n - s);
        for (int j = 0; j < nb; j++) blk[j] = (uint64_t)idx[s + j] >> 1;
        gen_batch(P, nb, blk, va, vb);
        if (kind == OUT_F32) {
            float *o = (float *)out + s;
            for (int j = 0; j < nb; j++) o[j] = (float)((idx[s + j] & 1) ? vb[j] : va[j]);
        } else {
            double *o = (double *)out + s;
            for (int j = 0; j < nb; j++) o[j] = (idx[s + j] & 1) ? vb[j] : va[j];
        }
    }
}

/* ---- work splitting: a job is n_rows rows of row_len elements (row r starts at rows[r],
   or at start + r*row_len when rows is NULL), or an index list ---- */
typedef struct {
    const params_t *P;
    const int64_t *rows; /* may be NULL */
    const int64_t *idx;  /* index mode when not NULL */
    int64_t start, row_len;
    char *out;
    int kind;
    int64_t lo, hi; /* linear output range of this worker */
} job_t;

static void run_job(const job_t *J) {
    size_t es = J->kind == OUT_F32 ? 4 : 8;
    if (J->idx && J->P->dist == DIST_NORMAL32) {
        fill_index32(J->P, J->idx + J->lo, J->hi - J->lo, (float *)J->out + J->lo);
        return;
    }
    if (J->idx) {
        fill_index(J->P, J->idx + J->lo, J->hi - J->lo, J->out + (size_t)J->lo * es, J->kind);
        return;
    }
    int64_t k = J->lo;
    while (k < J->hi) {
        int64_t r = k / J->row_len, col = k % J->row_len;
        int64_t len = J->row_len - col;
        if (len > J->hi - k) len = J->hi - k;
        int64_t g = (J->rows ? J->rows[r] : J->start + r * J->row_len) + col;
        fill_run(J->P, (uint64_t)g, len, J->out + (size_t)k * es, J->kind);
        k += len;
    }
}

#define MIN_PER_THREAD 65536
#define MAX_THREADS 256
#define CHUNK (1 << 18) /* elements a thread claims at a time */

#if IW_THREADS
#include <stdatomic.h>
/* Threads claim chunks of the output from a shared counter instead of fixed halves: on a
   shared machine one core is often slower (another job runs on it, or it takes more page
   faults), and a fixed split leaves the other core idle at the end. Values never depend on
   who fills what. */
typedef struct {
    job_t base;
    int64_t total, chunk;
    atomic_llong next;
} pool_t;

static void pool_work(pool_t *W) {
    job_t J = W->base;
    for (;;) {
        int64_t lo = (int64_t)atomic_fetch_add(&W->next, (long long)W->chunk);
        if (lo >= W->total) return;
        J.lo = lo;
        J.hi = lo + W->chunk < W->total ? lo + W->chunk : W->total;
        run_job(&J);
    }
}

static void *pool_thread(void *arg) {
    pool_work((pool_t *)arg);
    return NULL;
}
#endif

static void run_parallel(job_t base, int64_t total, int nthreads) {
    if (nthreads > MAX_THREADS) nthreads = MAX_THREADS;
    if ((int64_t)nthreads > total / MIN_PER_THREAD) nthreads = (int)(total / MIN_PER_THREAD);
    if (nthreads < 1) nthreads = 1;
    base.lo = 0;
    base.hi = total;
#if IW_THREADS
    if (nthreads > 1) {
        pool_t W;
        pthread_t tid[MAX_THREADS];
        int started[MAX_THREADS];
        W.base = base;
        W.total = total;
        /* at least 4 chunks per thread so that the ends even out; sizes that are multiples of 4 keep Philox
           blocks whole (a split block is only slower, never different) */
        W.chunk = total / (4 * (int64_t)nthreads);
        if (W.chunk > CHUNK) W.chunk = CHUNK;
        if (W.chunk < 4096) W.chunk = 4096;
        W.chunk &= ~(int64_t)3;
        atomic_init(&W.next, 0);
        for (int t = 1; t < nthreads; t++)
            started[t] = pthread_create(&tid[t], NULL, pool_thread, &W) == 0;
        pool_work(&W); /* threads that could not start leave their share to this one */
        for (int t = 1; t < nthreads; t++)
            if (started[t]) pthread_join(tid[t], NULL);
        return;
    }
#endif
    run_job(&base);
}

/* ---- Python bindings ---- */
static int parse_params(PyObject *key, int dist, PyObject *ptuple, params_t *P) {
    unsigned int k0, k1, c2, c3;
    if (!PyArg_ParseTuple(key, "IIII", &k0, &k1, &c2, &c3)) return -1;
    if (dist < 0 || dist > 3) {
        PyErr_SetString(PyExc_ValueError, "unknown distribution code");
        return -1;
    }
    PyObject *seq = PySequence_Fast(ptuple, "params must be a sequence");
    if (!seq) return -1;
    if (PySequence_Fast_GET_SIZE(seq) != 8) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "params must have 8 floats");
        return -1;
    }
    for (int i = 0; i < 8; i++) {
        P->p[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, i));
        if (P->p[i] == -1.0 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return -1;
        }
    }
    Py_DECREF(seq);
    P->k0 = k0; P->k1 = k1; P->c2 = c2; P->c3 = c3;
    P->dist = dist;
    return 0;
}

/* fill(key4, dist, params8, out_ptr, kind, start, rows_ptr, n_rows, row_len, nthreads) */
static PyObject *py_fill(PyObject *self, PyObject *args) {
    PyObject *key, *ptuple;
    int dist, kind, nthreads;
    unsigned long long out_ptr, rows_ptr;
    long long start, n_rows, row_len;
    params_t P;
    (void)self;
    if (!PyArg_ParseTuple(args, "OiOKiLKLLi", &key, &dist, &ptuple, &out_ptr, &kind, &start,
                          &rows_ptr, &n_rows, &row_len, &nthreads))
        return NULL;
    if (parse_params(key, dist, ptuple, &P) < 0) return NULL;
    if (dist == DIST_NORMAL32 && kind != OUT_F32) {
        PyErr_SetString(PyExc_ValueError, "normal32 (code 3) writes float32 only (kind 1)");
        return NULL;
    }
    if (kind != OUT_F32 && kind != OUT_F64) {
        PyErr_SetString(PyExc_ValueError, "kind must be 0 (float64) or 1 (float32)");
        return NULL;
    }
    if (n_rows < 0 || row_len < 0 || start < 0 || (n_rows > 0 && row_len > 0 && !out_ptr)) {
        PyErr_SetString(PyExc_ValueError, "bad fill geometry");
        return NULL;
    }
    if (n_rows == 0 || row_len == 0) Py_RETURN_NONE;
    job_t J;
    memset(&J, 0, sizeof J);
    J.P = &P;
    J.rows = (const int64_t *)(uintptr_t)rows_ptr;
    J.idx = NULL;
    J.start = start;
    J.row_len = row_len;
    J.out = (char *)(uintptr_t)out_ptr;
    J.kind = kind;
    Py_BEGIN_ALLOW_THREADS
    run_parallel(J, n_rows * row_len, nthreads);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* sample(key4, dist, params8, idx_ptr, n, out_ptr, kind, nthreads) */
static PyObject *py_sample(PyObject *self, PyObject *args) {
    PyObject *key, *ptuple;
    int dist, kind, nthreads;
    unsigned long long idx_ptr, out_ptr;
    long long n;
    params_t P;
    (void)self;
    if (!PyArg_ParseTuple(args, "OiOKLKii", &key, &dist, &ptuple, &idx_ptr, &n, &out_ptr, &kind,
                          &nthreads))
        return NULL;
    if (parse_params(key, dist, ptuple, &P) < 0) return NULL;
    if (dist == DIST_NORMAL32 && kind != OUT_F32) {
        PyErr_SetString(PyExc_ValueError, "normal32 (code 3) writes float32 only (kind 1)");
        return NULL;
    }
    if (kind != OUT_F32 && kind != OUT_F64) {
        PyErr_SetString(PyExc_ValueError, "kind must be 0 (float64) or 1 (float32)");
        return NULL;
    }
    if (n < 0 || (n > 0 && (!idx_ptr || !out_ptr))) {
        PyErr_SetString(PyExc_ValueError, "bad sample geometry");
        return NULL;
    }
    if (n == 0) Py_RETURN_NONE;
    job_t J;
    memset(&J, 0, sizeof J);
    J.P = &P;
    J.idx = (const int64_t *)(uintptr_t)idx_ptr;
    J.row_len = 1;
    J.out = (char *)(uintptr_t)out_ptr;
    J.kind = kind;
    Py_BEGIN_ALLOW_THREADS
    run_parallel(J, n, nthreads);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* philox(ctr4, key2) -> 4 words: the raw block function, for known-answer tests. */
static PyObject *py_philox(PyObject *self, PyObject *args) {
    unsigned int c[4], k[2];
    (void)self;
    if (!PyArg_ParseTuple(args, "(IIII)(II)", &c[0], &c[1], &c[2], &c[3], &k[0], &k[1]))
        return NULL;
    params_t P;
    memset(&P, 0, sizeof P);
    P.k0 = k[0]; P.k1 = k[1]; P.c2 = c[2]; P.c3 = c[3];
    uint64_t blk = ((uint64_t)c[1] << 32) | c[0], wa, wb;
    /* philox_batch keeps 52 bits; recompute the full words here with the same rounds */
    uint32_t c0 = c[0], c1 = c[1], c2 = c[2], c3 = c[3], k0 = k[0], k1 = k[1];
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c1 = (uint32_t)p1;
        c3 = (uint32_t)p0;
        c0 = n0;
        c2 = n2;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    uint64_t va, vb;
    philox_batch(&P, 1, &blk, &wa, &wb); /* cross-check the batched rounds, both kernels */
    PHILOX_BATCH(&P, 1, &blk, &va, &vb);
    if (wa != ((((uint64_t)c1 << 32) | c0) >> 12) || wb != ((((uint64_t)c3 << 32) | c2) >> 12) ||
        va != wa || vb != wb) {
        PyErr_SetString(PyExc_RuntimeError, "batched Philox disagrees with scalar Philox");
        return NULL;
    }
    return Py_BuildValue("(IIII)", c0, c1, c2, c3);
}

/* ------------------------------------------------------------------------------------------
 * haar32: a Haar-distributed orthogonal Q from a float32 Gaussian, by Householder reflectors
 * built directly from the Gaussian's columns (Stewart 1980; _schemes._haar_from_reflectors).
 *
 * The values are defined by the operations below, in this order, and every implementation
 * (AVX-512, AVX2+FMA and portable C here, the torch reference _schemes._haar32_reference)
 * performs exactly these IEEE-754 operations: float64 +,-,*,/,sqrt, float32 *, + and the
 * fused multiply-add fmaf (one rounding), float64 -> float32 conversion (to nearest). Sums
 * are taken in 16 lanes: lane l holds the terms of rows r with r % 16 == l, added in
 * increasing r, starting from +0; the lanes are then combined as a[l] + a[l+8] (l < 8), then
 * + [l+4] (l < 4), + [l+2], + [l+1]. So the bits depend on nothing but the input.
 *
 * Input: a [n][m] row-major float32 (row k = column k of the tall Gaussian A, m >= n >= 1).
 * Let mx = m rounded up to a multiple of 16. Row k: alpha = a[k][k], s2 = lane sum (float64)
 * of a[k][r]^2 over r > k. If s2 == 0: tau_k = 0, sign_k = alpha < 0 ? -1 : 1, v_k = e_k.
 * Else beta = -copysign(sqrt(alpha^2 + s2), alpha), tau_k = (float)((beta - alpha) / beta),
 * v_k[r] = (float)(a[k][r] * (1 / (alpha - beta))) for k < r < m, v_k[k] = 1, v_k[r] = 0 for
 * r < k and m <= r < mx; sign_k = beta < 0 ? -1 : 1.
 * Column c of Q (rows 0..mx-1, x = e_c): for j = c, c-1, ..., 0 with tau_j != 0:
 * d = lane sum over r in [16 floor(j/16), mx) of fmaf(v_j[r], x[r], acc) (float32),
 * s = tau_j * d, x[r] = fmaf(-s, v_j[r], x[r]) over the same rows. Output row c = sign_c * x
 * (rows < m; the sign fix makes Q's distribution Haar). out may be a (in place).
 * ------------------------------------------------------------------------------------------ */
#include <math.h>
#include <stdlib.h>
#if defined(_WIN32)
#include <malloc.h> /* _aligned_malloc */
#endif

#define HQ_NB 8 /* columns of Q formed together (one reflector load serves them all) */

static int hq_isa = 0; /* 2: AVX-512, 1: AVX2 + FMA, 0: portable (set at import; tests lower it) */

static inline float hq_tree32(const float *a) { /* the lane tree, float32 */
    float b[8], c[4];
    for (int l = 0; l < 8; l++) b[l] = a[l] + a[l + 8];
    for (int l = 0; l < 4; l++) c[l] = b[l] + b[l + 4];
    float d0 = c[0] + c[2], d1 = c[1] + c[3];
    return d0 + d1;
}

static inline double hq_tree64(const double *a) {
    double b[8], c[4];
    for (int l = 0; l < 8; l++) b[l] = a[l] + a[l + 8];
    for (int l = 0; l < 4; l++) c[l] = b[l] + b[l + 4];
    double d0 = c[0] + c[2], d1 = c[1] + c[3];
    return d0 + d1;
}

/* The reflectors of one matrix into v [n][mx] (padded as defined above), tau, sign. Cheap
   (m n / 2 multiply-adds), so one implementation serves every CPU. */
IW_CLONES static void hq_reflectors(const float *a, int m, int n, int mx, float *v, float *tau, float *sign) {
    for (int k = 0; k < n; k++) {
        const float *row = a + (size_t)k * m;
        float *vk = v + (size_t)k * mx;
        double alpha = row[k];
        double acc[16];
        for (int l = 0; l < 16; l++) acc[l] = 0.0;
        int r = k + 1;
        for (; r < m && (r & 15); r++) { /* up to the next multiple of 16 */
            double x = row[r];
            acc[r & 15] = acc[r & 15] + x * x;
        }
        for (; r + 16 <= m; r += 16) /* whole chunks: lane l is row r + l */
            for (int l = 0; l < 16; l++) {
                double x = row[r + l];
                acc[l] = acc[l] + x * x;
            }
        for (; r < m; r++) {
            double x = row[r];
            acc[r & 15] = acc[r & 15] + x * x;
        }
        double s2 = hq_tree64(acc);
        memset(vk, 0, sizeof(float) * (size_t)mx);
        vk[k] = 1.0f;
        if (s2 == 0.0) {
            tau[k] = 0.0f;
            sign[k] = alpha < 0 ? -1.0f : 1.0f;
            continue;
        }
        double beta = -copysign(sqrt(alpha * alpha + s2), alpha);
        tau[k] = (float)((beta - alpha) / beta);
        double inv = 1.0 / (alpha - beta);
        for (r = k + 1; r < m; r++) vk[r] = (float)((double)row[r] * inv);
        sign[k] = beta < 0 ? -1.0f : 1.0f;
    }
}

/* Q's columns c0..c0+HQ_NB-1 into x[i][0..mx) (i: the column's place in the block), portable.
   Every column of the block goes through every reflector j < c1: a column before j (not yet
   reached by H_j) holds zeros at rows >= j and its own 1 at a row < j where v_j is 0, so its
   sum is +0 and its update fmaf(-s, v, x) leaves it as it is (s = +-0): the values of skipping
   it. The lane loops vectorize (AVX2 / AVX-512 clones). */
IW_CLONES static void hq_block(const float *v, const float *tau, int mx, int c1, float *x) {
    for (int j = c1 - 1; j >= 0; j--) {
        float t = tau[j];
        if (t == 0.0f) continue;
        const float *vj = v + (size_t)j * mx;
        int q0 = j & ~15;
        float acc[HQ_NB][16];
        for (int i = 0; i < HQ_NB; i++)
            for (int l = 0; l < 16; l++) acc[i][l] = 0.0f;
        for (int q = q0; q < mx; q += 16)
            for (int i = 0; i < HQ_NB; i++) {
                const float *xi = x + (size_t)i * mx + q;
                for (int l = 0; l < 16; l++) acc[i][l] = fmaf(vj[q + l], xi[l], acc[i][l]);
            }
        float s[HQ_NB];
        for (int i = 0; i < HQ_NB; i++) s[i] = -(t * hq_tree32(acc[i]));
        for (int i = 0; i < HQ_NB; i++) {
            float *xi = x + (size_t)i * mx;
            for (int r = q0; r < mx; r++) xi[r] = fmaf(s[i], vj[r], xi[r]);
        }
    }
}

#if IW_AVX512
__attribute__((target("avx2,fma"))) static inline float hq_tree256(__m256 lo, __m256 hi) {
    __m256 b = _mm256_add_ps(lo, hi); /* [l] + [l+8] */
    __m128 c = _mm_add_ps(_mm256_castps256_ps128(b), _mm256_extractf128_ps(b, 1)); /* + [l+4] */
    __m128 d = _mm_add_ps(c, _mm_movehl_ps(c, c)); /* + [l+2] */
    return _mm_cvtss_f32(_mm_add_ss(d, _mm_shuffle_ps(d, d, 1))); /* + [l+1] */
}

/* The block with AVX2 + FMA: a 16-row chunk is two 8-lane vectors; the block's columns in two
   groups of 4 (8 accumulators and the reflector's chunk fit the 16 registers). */
__attribute__((target("avx2,fma"))) static void hq_block_avx2(const float *v, const float *tau, int mx, int c1, float *x) {
    for (int j = c1 - 1; j >= 0; j--) {
        float t = tau[j];
        if (t == 0.0f) continue;
        const float *vj = v + (size_t)j * mx;
        int q0 = j & ~15;
        for (int g = 0; g < HQ_NB; g += 4) {
            float *x0 = x + (size_t)g * mx;
            __m256 lo[4], hi[4];
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++) lo[i] = hi[i] = _mm256_setzero_ps();
            for (int q = q0; q < mx; q += 16) {
                __m256 wl = _mm256_load_ps(vj + q), wh = _mm256_load_ps(vj + q + 8);
#pragma GCC unroll 4
                for (int i = 0; i < 4; i++) {
                    const float *xi = x0 + (size_t)i * mx + q;
                    lo[i] = _mm256_fmadd_ps(wl, _mm256_load_ps(xi), lo[i]);
                    hi[i] = _mm256_fmadd_ps(wh, _mm256_load_ps(xi + 8), hi[i]);
                }
            }
            __m256 s[4];
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++) s[i] = _mm256_set1_ps(-(t * hq_tree256(lo[i], hi[i])));
            for (int q = q0; q < mx; q += 8) {
                __m256 w = _mm256_load_ps(vj + q);
#pragma GCC unroll 4
                for (int i = 0; i < 4; i++) {
                    float *xi = x0 + (size_t)i * mx + q;
                    _mm256_store_ps(xi, _mm256_fmadd_ps(s[i], w, _mm256_load_ps(xi)));
                }
            }
        }
    }
}

IW_T static inline __m512 hq_tree512(__m512 a) { /* the lane tree; every lane holds the sum */
    __m512 t = _mm512_add_ps(a, _mm512_shuffle_f32x4(a, a, 0x4E));
    t = _mm512_add_ps(t, _mm512_shuffle_f32x4(t, t, 0xB1));
    t = _mm512_add_ps(t, _mm512_permute_ps(t, 0x4E));
    return _mm512_add_ps(t, _mm512_permute_ps(t, 0xB1));
}

/* The block with AVX-512: a 16-row chunk is one vector, the block's 8 columns at once. */
IW_T static void hq_block_avx512(const float *v, const float *tau, int mx, int c1, float *x) {
    for (int j = c1 - 1; j >= 0; j--) {
        float t = tau[j];
        if (t == 0.0f) continue;
        const float *vj = v + (size_t)j * mx;
        int q0 = j & ~15;
        __m512 acc[HQ_NB];
#pragma GCC unroll 8
        for (int i = 0; i < HQ_NB; i++) acc[i] = _mm512_setzero_ps();
        for (int q = q0; q < mx; q += 16) {
            __m512 w = _mm512_load_ps(vj + q);
#pragma GCC unroll 8
            for (int i = 0; i < HQ_NB; i++)
                acc[i] = _mm512_fmadd_ps(w, _mm512_load_ps(x + (size_t)i * mx + q), acc[i]);
        }
        __m512 tt = _mm512_set1_ps(-t);
#pragma GCC unroll 8
        for (int i = 0; i < HQ_NB; i++) acc[i] = _mm512_mul_ps(tt, hq_tree512(acc[i])); /* -(t d) */
        for (int q = q0; q < mx; q += 16) {
            __m512 w = _mm512_load_ps(vj + q);
#pragma GCC unroll 8
            for (int i = 0; i < HQ_NB; i++) {
                float *p = x + (size_t)i * mx + q;
                _mm512_store_ps(p, _mm512_fmadd_ps(acc[i], w, _mm512_load_ps(p)));
            }
        }
    }
}
#endif

/* One matrix: padded reflectors, then Q's columns block by block (out may be a: the
   reflectors are read from v). */
static void hq_matrix(const float *a, float *out, int m, int n, int mx, float *v, float *tau, float *sign, float *x) {
    hq_reflectors(a, m, n, mx, v, tau, sign);
    for (int c0 = 0; c0 < n; c0 += HQ_NB) {
        int c1 = c0 + HQ_NB < n ? c0 + HQ_NB : n;
        memset(x, 0, sizeof(float) * (size_t)HQ_NB * mx);
        for (int c = c0; c < c1; c++) x[(size_t)(c - c0) * mx + c] = 1.0f;
#if IW_AVX512
        if (hq_isa == 2)
            hq_block_avx512(v, tau, mx, c1, x);
        else if (hq_isa == 1)
            hq_block_avx2(v, tau, mx, c1, x);
        else
#endif
            hq_block(v, tau, mx, c1, x);
        for (int c = c0; c < c1; c++) {
            const float *xi = x + (size_t)(c - c0) * mx;
            float *o = out + (size_t)c * m;
            float sg = sign[c];
            for (int r = 0; r < m; r++) o[r] = sg * xi[r];
        }
    }
}

/* haar32(a_ptr, out_ptr, m, n, count): count matrices [n][m] (consecutive), see above. */
static PyObject *py_haar32(PyObject *self, PyObject *args) {
    unsigned long long a_ptr, out_ptr;
    long long m, n, count;
    (void)self;
    if (!PyArg_ParseTuple(args, "KKLLL", &a_ptr, &out_ptr, &m, &n, &count)) return NULL;
    if (n < 1 || m < n || count < 0 || m > (1LL << 24) || !a_ptr || !out_ptr) {
        PyErr_SetString(PyExc_ValueError, "haar32: need 1 <= n <= m, count >= 0");
        return NULL;
    }
    /* tau and sign, then the padded reflectors and the block's columns on 64-byte lines */
    size_t head = ((size_t)2 * n + 15) & ~(size_t)15, mx = ((size_t)m + 15) & ~(size_t)15;
    size_t bytes = sizeof(float) * (head + ((size_t)n + HQ_NB) * mx);
#if defined(_WIN32)
    float *work = (float *)_aligned_malloc(bytes, 64);
#else
    float *work = (float *)aligned_alloc(64, bytes);
#endif
    if (!work) return PyErr_NoMemory();
    float *tau = work, *sign = work + n, *v = work + head, *x = v + (size_t)n * mx;
    Py_BEGIN_ALLOW_THREADS
    for (long long i = 0; i < count; i++) {
        size_t off = (size_t)i * (size_t)n * (size_t)m;
        hq_matrix((const float *)(uintptr_t)a_ptr + off, (float *)(uintptr_t)out_ptr + off, (int)m, (int)n,
                  (int)mx, v, tau, sign, x);
    }
    Py_END_ALLOW_THREADS
#if defined(_WIN32)
    _aligned_free(work);
#else
    free(work);
#endif
    Py_RETURN_NONE;
}

/* haar_isa([level]) -> the kernel haar32 uses: 2 AVX-512, 1 AVX2 + FMA, 0 portable; a level
   sets it, capped by what the CPU has (for tests: every level gives the same bits). */
static PyObject *py_haar_isa(PyObject *self, PyObject *args) {
    int level = -1;
    (void)self;
    if (!PyArg_ParseTuple(args, "|i", &level)) return NULL;
    if (level >= 0) {
        int best = 0;
#if IW_AVX512
        best = __builtin_cpu_supports("avx512f") ? 2
               : (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) ? 1 : 0;
#endif
        hq_isa = level < best ? level : best;
    }
    return PyLong_FromLong(hq_isa);
}

/* simd([flag]) -> whether the AVX-512 kernels are used; flag 0 turns them off (the portable
   batched path then runs on this CPU too), 1 back on where the CPU has AVX-512. For tests. */
static PyObject *py_simd(PyObject *self, PyObject *args) {
    int flag = -1;
    (void)self;
    if (!PyArg_ParseTuple(args, "|i", &flag)) return NULL;
#if IW_AVX512
    if (flag == 0) iw_has_avx512 = 0;
    if (flag == 1) iw_has_avx512 = __builtin_cpu_supports("avx512f");
    return PyBool_FromLong(iw_has_avx512);
#else
    (void)flag;
    Py_RETURN_FALSE;
#endif
}

static PyMethodDef methods[] = {
    {"simd", py_simd, METH_VARARGS, "simd([flag]): AVX-512 kernels in use (0: off, 1: on)."},
    {"fill", py_fill, METH_VARARGS, "Fill rows of a float32/float64 buffer (GIL released)."},
    {"sample", py_sample, METH_VARARGS, "Values at int64 global indices (GIL released)."},
    {"philox", py_philox, METH_VARARGS, "Raw Philox4x32-10 block: philox(ctr4, key2)."},
    {"haar32", py_haar32, METH_VARARGS, "Haar orthogonal Q from float32 Gaussians (GIL released)."},
    {"haar_isa", py_haar_isa, METH_VARARGS, "haar_isa([level]): haar32's kernel (2 AVX-512, 1 AVX2, 0 C)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "_native", "Native fast path of initwise.random.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void) {
#if IW_AVX512
    __builtin_cpu_init();
    iw_has_avx512 = __builtin_cpu_supports("avx512f");
    hq_isa = iw_has_avx512 ? 2 : (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) ? 1 : 0;
#endif
    PyObject *m = PyModule_Create(&moduledef);
    if (m && PyModule_AddIntConstant(m, "THREADS", IW_THREADS) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
