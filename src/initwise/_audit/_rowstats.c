/*
 * initwise._audit._rowstats: the audit's per-tensor statistics in one pass over the data.
 *
 * The torch path in stats.py reduces each tensor with several kernels (sum, dot, aminmax,
 * count_nonzero on a sample, ...). On a small model the fixed cost of each kernel call is
 * most of the audit's overhead; this file computes every statistic a tensor needs in one
 * read, called with the address of a contiguous CPU tensor (stats.py checks that).
 *
 * Arithmetic: every value is converted exactly to double (float32 and bfloat16 are subsets
 * of double) and accumulated in double, in UNROLL x LANES independent partial sums combined
 * in one fixed order at the end: the result is deterministic (the same on every instruction
 * set) and its rounding error is that of a double sum (at most about n * 2^-53 relative to
 * the sum of |terms|), far below the float32 sums of the torch path. Minima, maxima and counts are exact. Comparisons against the saturation
 * thresholds are made in the tensor's own precision (the threshold rounded to float32 for
 * float32/bfloat16 data), as torch compares a float32 tensor with a Python float.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* the vector helpers below are always inlined: no vector crosses a function boundary */
#if defined(__clang__)
#pragma clang diagnostic ignored "-Wpsabi"
#elif defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#if defined(__FAST_MATH__)
#error "initwise._audit._rowstats must not be compiled with -ffast-math"
#endif

/* One portable binary, AVX-512 / AVX2 code where the CPU has it (GCC function
   multiversioning); every clone computes the same IEEE values (no FMA contraction). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define RS_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define RS_CLONES
#endif
/* helpers are inlined into each clone, so they are compiled for its instruction set */
#if defined(__GNUC__)
#define RS_INLINE static inline __attribute__((always_inline))
#elif defined(_MSC_VER)
#define RS_INLINE static __forceinline
#define restrict __restrict
#else
#define RS_INLINE static inline
#endif

enum { DT_F32 = 0, DT_F64 = 1, DT_BF16 = 2 };

#define LANES 8    /* lanes of one vector of partial sums */
#define UNROLL 4   /* independent vectors per statistic: hides the add latency */
#define CHUNK 1024 /* elements per block: the sampled counts re-read a block from L1 */
/* Software prefetch PREFETCH elements ahead: more cache misses in flight on data that is not
   in cache (a fresh layer output larger than L2, a weight): ~20% faster there. A hint only
   (no fault past the end of the data, no effect on any value). */
#define PREFETCH 512
#if defined(__GNUC__) || defined(__clang__)
#define RS_PREFETCH(data, i, dt)                                                        \
    __builtin_prefetch((const char *)(data) + ((i) + PREFETCH) *                        \
                       (dt == DT_F64 ? 8 : dt == DT_F32 ? 4 : 2))
#else
#define RS_PREFETCH(data, i, dt) ((void)0)
#endif

/* Eight lanes of doubles: GCC/Clang vector extensions (one or more SIMD registers on each
   clone's instruction set), a plain struct elsewhere. Same values either way. */
#if defined(__has_builtin)
#if __has_builtin(__builtin_convertvector)
#define RS_VEC 1
#endif
#endif

#if defined(RS_VEC)
typedef double vd __attribute__((vector_size(LANES * sizeof(double))));
typedef long long vm __attribute__((vector_size(LANES * sizeof(double))));
typedef float vf __attribute__((vector_size(LANES * sizeof(float))));
typedef uint32_t vu __attribute__((vector_size(LANES * sizeof(uint32_t))));
typedef uint16_t vh __attribute__((vector_size(LANES * sizeof(uint16_t))));
#define LANE(a, j) ((a)[j])
RS_INLINE vd v_load(const double *p) {
    vd r;
    memcpy(&r, p, sizeof r);
    return r;
}
RS_INLINE void v_store(double *p, vd a) { memcpy(p, &a, sizeof a); }
/* elements i .. i + LANES - 1 of data (dtype dt) as doubles, exactly */
RS_INLINE vd v_load_dt(const void *data, Py_ssize_t i, const int dt) {
    if (dt == DT_F64) return v_load((const double *)data + i);
    vf f;
    if (dt == DT_F32) {
        memcpy(&f, (const float *)data + i, sizeof f);
    } else { /* bfloat16: the high half of a float32 */
        vh h;
        memcpy(&h, (const uint16_t *)data + i, sizeof h);
        vu u = __builtin_convertvector(h, vu) << 16;
        memcpy(&f, &u, sizeof f);
    }
    return __builtin_convertvector(f, vd);
}
RS_INLINE vd v_set(double x) { return (vd){0} + x; }
RS_INLINE vm m_zero(void) { return (vm){0}; }
RS_INLINE vd v_add(vd a, vd b) { return a + b; }
RS_INLINE vd v_mul(vd a, vd b) { return a * b; }
RS_INLINE vd v_sub(vd a, vd b) { return a - b; }
/* a < b ? a : b and a > b ? a : b lane by lane (a NaN lane of a is skipped) */
RS_INLINE vd v_min(vd a, vd b) {
    vm m = a < b;
    return (vd)((m & (vm)a) | (~m & (vm)b));
}
RS_INLINE vd v_max(vd a, vd b) {
    vm m = a > b;
    return (vd)((m & (vm)a) | (~m & (vm)b));
}
/* counters: a true comparison is -1 in every bit */
RS_INLINE vm c_ne0(vm c, vd x) { return c - (vm)(x != (vd){0}); }
RS_INLINE vm c_le(vm c, vd x, vd t) { return c - (vm)(x <= t); }
RS_INLINE vm c_ge(vm c, vd x, vd t) { return c - (vm)(x >= t); }
#else
typedef struct { double v[LANES]; } vd;
typedef struct { long long v[LANES]; } vm;
#define LANE(a, j) ((a).v[j])
#define RS_MAP(expr)                                                                   \
    for (int j = 0; j < LANES; j++) r.v[j] = (expr);                                   \
    return r
RS_INLINE double s_load(const void *data, Py_ssize_t i, const int dt);
RS_INLINE vd v_load(const double *p) { vd r; RS_MAP(p[j]); }
RS_INLINE void v_store(double *p, vd a) { for (int j = 0; j < LANES; j++) p[j] = a.v[j]; }
RS_INLINE vd v_load_dt(const void *data, Py_ssize_t i, const int dt) {
    vd r;
    RS_MAP(s_load(data, i + j, dt));
}
RS_INLINE vd v_set(double x) { vd r; RS_MAP(x); }
RS_INLINE vm m_zero(void) { vm r; RS_MAP(0); }
RS_INLINE vd v_add(vd a, vd b) { vd r; RS_MAP(a.v[j] + b.v[j]); }
RS_INLINE vd v_mul(vd a, vd b) { vd r; RS_MAP(a.v[j] * b.v[j]); }
RS_INLINE vd v_sub(vd a, vd b) { vd r; RS_MAP(a.v[j] - b.v[j]); }
RS_INLINE vd v_min(vd a, vd b) { vd r; RS_MAP(a.v[j] < b.v[j] ? a.v[j] : b.v[j]); }
RS_INLINE vd v_max(vd a, vd b) { vd r; RS_MAP(a.v[j] > b.v[j] ? a.v[j] : b.v[j]); }
RS_INLINE vm c_ne0(vm c, vd x) { vm r; RS_MAP(c.v[j] + (x.v[j] != 0.0)); }
RS_INLINE vm c_le(vm c, vd x, vd t) { vm r; RS_MAP(c.v[j] + (x.v[j] <= t.v[j])); }
RS_INLINE vm c_ge(vm c, vd x, vd t) { vm r; RS_MAP(c.v[j] + (x.v[j] >= t.v[j])); }
#endif

/* element i of data (dtype dt) as a double, exactly */
RS_INLINE double s_load(const void *data, Py_ssize_t i, const int dt) {
    if (dt == DT_F64) return ((const double *)data)[i];
    if (dt == DT_F32) return (double)((const float *)data)[i];
    uint32_t bits = (uint32_t)((const uint16_t *)data)[i] << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return (double)f;
}

/* the lanes' sum in one fixed pairwise order */
RS_INLINE double v_sum(vd a) {
    return ((LANE(a, 0) + LANE(a, 1)) + (LANE(a, 2) + LANE(a, 3))) +
           ((LANE(a, 4) + LANE(a, 5)) + (LANE(a, 6) + LANE(a, 7)));
}
/* UNROLL vectors of partial sums into one, in a fixed order */
RS_INLINE vd v_fold(const vd *a) { return v_add(v_add(a[0], a[1]), v_add(a[2], a[3])); }
RS_INLINE long long m_sum(vm a) {
    long long s = 0;
    for (int j = 0; j < LANES; j++) s += LANE(a, j);
    return s;
}
RS_INLINE double v_hmin(vd a) {
    double r = LANE(a, 0);
    for (int j = 1; j < LANES; j++) r = LANE(a, j) < r ? LANE(a, j) : r;
    return r;
}
RS_INLINE double v_hmax(vd a) {
    double r = LANE(a, 0);
    for (int j = 1; j < LANES; j++) r = LANE(a, j) > r ? LANE(a, j) : r;
    return r;
}

/* ------------------------------------------------------------------------------------ */
/* moments: sum, sum of squares, min, max over all elements; on the sample of elements     */
/* 0, step, 2 step, ...: nonzeros, elements <= lo, elements >= hi                         */
/* ------------------------------------------------------------------------------------ */

typedef struct {
    double s1, s2, mn, mx, nz, below, above;
} moments_t;

typedef struct {
    vm nz, below, above;
    long long nz1, below1, above1; /* the elements after the last full vector */
} cnt_t;

RS_INLINE void count_one(cnt_t *c, double x, double lo, double hi, const int bounds) {
    c->nz1 += x != 0.0;
    if (bounds) {
        c->below1 += x <= lo;
        c->above1 += x >= hi;
    }
}

RS_INLINE void count_vec(cnt_t *c, vd x, vd lo, vd hi, const int bounds) {
    c->nz = c_ne0(c->nz, x);
    if (bounds) {
        c->below = c_le(c->below, x, lo);
        c->above = c_ge(c->above, x, hi);
    }
}

/* dt, counts, fuse (count every element: step 1) and bounds are constants in each inlined
   copy */
RS_INLINE void moments_impl(const void *data, const int dt, Py_ssize_t n, Py_ssize_t step,
                            Py_ssize_t first, double lo, double hi, const int counts,
                            const int fuse, const int bounds, moments_t *out) {
    vd s1[UNROLL], s2[UNROLL], mn[UNROLL], mx[UNROLL];
    for (int u = 0; u < UNROLL; u++) {
        s1[u] = s2[u] = v_set(0.0);
        mn[u] = v_set(INFINITY);
        mx[u] = v_set(-INFINITY);
    }
    cnt_t c;
    c.nz = c.below = c.above = m_zero();
    c.nz1 = c.below1 = c.above1 = 0;
    vd vlo = v_set(lo), vhi = v_set(hi);
    double sample[CHUNK];
    Py_ssize_t next = first; /* the next sampled index */
    for (Py_ssize_t start = 0; start < n; start += CHUNK) {
        Py_ssize_t end = n - start < CHUNK ? n : start + CHUNK, i = start;
        for (; i + UNROLL * LANES <= end; i += UNROLL * LANES) {
            RS_PREFETCH(data, i, dt);
            for (int u = 0; u < UNROLL; u++) {
                vd x = v_load_dt(data, i + u * LANES, dt);
                s1[u] = v_add(s1[u], x);
                s2[u] = v_add(s2[u], v_mul(x, x));
                mn[u] = v_min(x, mn[u]);
                mx[u] = v_max(x, mx[u]);
                if (fuse) count_vec(&c, x, vlo, vhi, bounds);
            }
        }
        for (; i < end; i++) {
            double x = s_load(data, i, dt);
            LANE(s1[0], 0) += x;
            LANE(s2[0], 0) += x * x;
            LANE(mn[0], 0) = x < LANE(mn[0], 0) ? x : LANE(mn[0], 0);
            LANE(mx[0], 0) = x > LANE(mx[0], 0) ? x : LANE(mx[0], 0);
            if (fuse) count_one(&c, x, lo, hi, bounds);
        }
        if (counts && !fuse) { /* the strided sample of this block, still in L1 */
            Py_ssize_t k = next, m = 0;
            for (; k < end; k += step) sample[m++] = s_load(data, k, dt);
            next = k;
            Py_ssize_t t = 0;
            for (; t + LANES <= m; t += LANES) count_vec(&c, v_load(sample + t), vlo, vhi, bounds);
            for (; t < m; t++) count_one(&c, sample[t], lo, hi, bounds);
        }
    }
    out->s1 = v_sum(v_fold(s1));
    out->s2 = v_sum(v_fold(s2));
    vd a = v_min(v_min(mn[0], mn[1]), v_min(mn[2], mn[3]));
    vd b = v_max(v_max(mx[0], mx[1]), v_max(mx[2], mx[3]));
    /* a NaN element makes the sum of squares NaN (squares are >= 0 or NaN, inf + inf is
       inf): then min and max are NaN, as torch.aminmax propagates NaN */
    out->mn = isnan(out->s2) ? NAN : v_hmin(a);
    out->mx = isnan(out->s2) ? NAN : v_hmax(b);
    out->nz = (double)(c.nz1 + m_sum(c.nz));
    out->below = (double)(c.below1 + m_sum(c.below));
    out->above = (double)(c.above1 + m_sum(c.above));
}

#define RS_DISPATCH(call_f32, call_f64, call_bf16)                                       \
    switch (dt) {                                                                      \
    case DT_F32: call_f32; break;                                                      \
    case DT_F64: call_f64; break;                                                      \
    default: call_bf16; break;                                                         \
    }

RS_INLINE void moments_dt(const void *data, const int dt, Py_ssize_t n, Py_ssize_t step,
                          Py_ssize_t first, double lo, double hi, int counts, int bounds,
                          moments_t *out) {
    if (!counts)
        moments_impl(data, dt, n, step, first, lo, hi, 0, 0, 0, out);
    else if (step == 1 && !bounds)
        moments_impl(data, dt, n, step, first, lo, hi, 1, 1, 0, out);
    else if (step == 1)
        moments_impl(data, dt, n, step, first, lo, hi, 1, 1, 1, out);
    else if (!bounds)
        moments_impl(data, dt, n, step, first, lo, hi, 1, 0, 0, out);
    else
        moments_impl(data, dt, n, step, first, lo, hi, 1, 0, 1, out);
}

RS_CLONES
static void moments(const void *data, int dt, Py_ssize_t n, Py_ssize_t step, Py_ssize_t first,
                    double lo, double hi, int counts, int bounds, moments_t *out) {
    RS_DISPATCH(moments_dt(data, DT_F32, n, step, first, lo, hi, counts, bounds, out),
                moments_dt(data, DT_F64, n, step, first, lo, hi, counts, bounds, out),
                moments_dt(data, DT_BF16, n, step, first, lo, hi, counts, bounds, out))
}

/* The float32 moments with AVX-512 intrinsics: the same partial sums in the same lanes and
   the same final order as moments_impl (element i of a 32-element block goes to vector
   (i / 8) % 4, lane i % 8; the elements after the last full block to lane 0 of vector 0), so
   the result is bit-identical; minima and maxima (exact in any order) are taken in float32,
   16 lanes at a time. GCC's vector extensions split the float-to-double conversion and
   blend the minima: this is ~1.7x faster on warm data. */
#if defined(__GNUC__) && defined(__x86_64__) && (defined(__linux__) || defined(__APPLE__))
#include <immintrin.h>
#define RS_AVX512 1

__attribute__((target("avx512f,popcnt")))
static int moments_f32_avx512(const float *p, Py_ssize_t n, Py_ssize_t step, Py_ssize_t first,
                              double lo, double hi, int counts, int bounds, moments_t *out) {
    __m512d s1[UNROLL], s2[UNROLL];
    for (int u = 0; u < UNROLL; u++) s1[u] = s2[u] = _mm512_setzero_pd();
    __m512 mn0 = _mm512_set1_ps(INFINITY), mx0 = _mm512_set1_ps(-INFINITY);
    __m512 mn1 = mn0, mx1 = mx0;
    const __m512 zero = _mm512_setzero_ps();
    const __m512 vlo = _mm512_set1_ps((float)lo), vhi = _mm512_set1_ps((float)hi);
    long long nz = 0, below = 0, above = 0;
    /* The sample first, first + step, first + 2 step, ... (first < step) as lane masks: the
       16-float vector starting at 16 v holds the sampled elements of mask[v % step] (the
       pattern repeats every step vectors). Counting on it costs a mask and a popcount per
       vector. */
    uint16_t one = 0xFFFF, *mask = &one;
    Py_ssize_t period = 1, phase = 0;
    if (counts && step > 1) {
        period = step;
        mask = (uint16_t *)calloc((size_t)step, sizeof(uint16_t));
        if (mask == NULL) return -1;
        for (Py_ssize_t k = first; k < 16 * step; k += step)
            mask[k / 16] |= (uint16_t)(1u << (k % 16));
    }
    Py_ssize_t i = 0;
    for (; i + UNROLL * LANES <= n; i += UNROLL * LANES) {
        _mm_prefetch((const char *)(p + i + PREFETCH), _MM_HINT_T0);
        _mm_prefetch((const char *)(p + i + PREFETCH + 16), _MM_HINT_T0);
        __m512 x0 = _mm512_loadu_ps(p + i), x1 = _mm512_loadu_ps(p + i + 16);
        mn0 = _mm512_min_ps(x0, mn0);
        mx0 = _mm512_max_ps(x0, mx0);
        mn1 = _mm512_min_ps(x1, mn1);
        mx1 = _mm512_max_ps(x1, mx1);
        __m512d a = _mm512_cvtps_pd(_mm256_loadu_ps(p + i));
        __m512d b = _mm512_cvtps_pd(_mm256_loadu_ps(p + i + 8));
        __m512d c = _mm512_cvtps_pd(_mm256_loadu_ps(p + i + 16));
        __m512d d = _mm512_cvtps_pd(_mm256_loadu_ps(p + i + 24));
        s1[0] = _mm512_add_pd(s1[0], a);
        s1[1] = _mm512_add_pd(s1[1], b);
        s1[2] = _mm512_add_pd(s1[2], c);
        s1[3] = _mm512_add_pd(s1[3], d);
        s2[0] = _mm512_add_pd(s2[0], _mm512_mul_pd(a, a));
        s2[1] = _mm512_add_pd(s2[1], _mm512_mul_pd(b, b));
        s2[2] = _mm512_add_pd(s2[2], _mm512_mul_pd(c, c));
        s2[3] = _mm512_add_pd(s2[3], _mm512_mul_pd(d, d));
        if (counts) {
            __mmask16 m0 = mask[phase];
            phase = phase + 1 == period ? 0 : phase + 1;
            __mmask16 m1 = mask[phase];
            phase = phase + 1 == period ? 0 : phase + 1;
            nz += _mm_popcnt_u32(_mm512_mask_cmp_ps_mask(m0, x0, zero, _CMP_NEQ_UQ)) +
                  _mm_popcnt_u32(_mm512_mask_cmp_ps_mask(m1, x1, zero, _CMP_NEQ_UQ));
            if (bounds) {
                below += _mm_popcnt_u32(_mm512_mask_cmp_ps_mask(m0, x0, vlo, _CMP_LE_OQ)) +
                         _mm_popcnt_u32(_mm512_mask_cmp_ps_mask(m1, x1, vlo, _CMP_LE_OQ));
                above += _mm_popcnt_u32(_mm512_mask_cmp_ps_mask(m0, x0, vhi, _CMP_GE_OQ)) +
                         _mm_popcnt_u32(_mm512_mask_cmp_ps_mask(m1, x1, vhi, _CMP_GE_OQ));
            }
        }
    }
    if (mask != &one) free(mask);
    double tmn = INFINITY, tmx = -INFINITY; /* of the last n % 32 elements */
    for (Py_ssize_t k = i; k < n; k++) {
        double x = (double)p[k];
        tmn = x < tmn ? x : tmn;
        tmx = x > tmx ? x : tmx;
        if (counts && k >= first && (k - first) % step == 0) {
            nz += x != 0.0;
            below += bounds && x <= lo;
            above += bounds && x >= hi;
        }
    }
    double a1[UNROLL][LANES], a2[UNROLL][LANES];
    for (int u = 0; u < UNROLL; u++) {
        _mm512_storeu_pd(a1[u], s1[u]);
        _mm512_storeu_pd(a2[u], s2[u]);
    }
    /* as moments_impl: the last n % 32 elements go to lane 0 of vector 0, in order */
    for (Py_ssize_t i = n - n % (UNROLL * LANES); i < n; i++) {
        double x = (double)p[i];
        a1[0][0] += x;
        a2[0][0] += x * x;
    }
    double f1[LANES], f2[LANES];
    for (int j = 0; j < LANES; j++) {
        f1[j] = (a1[0][j] + a1[1][j]) + (a1[2][j] + a1[3][j]);
        f2[j] = (a2[0][j] + a2[1][j]) + (a2[2][j] + a2[3][j]);
    }
    out->s1 = ((f1[0] + f1[1]) + (f1[2] + f1[3])) + ((f1[4] + f1[5]) + (f1[6] + f1[7]));
    out->s2 = ((f2[0] + f2[1]) + (f2[2] + f2[3])) + ((f2[4] + f2[5]) + (f2[6] + f2[7]));
    float m[16], x[16];
    _mm512_storeu_ps(m, _mm512_min_ps(mn0, mn1));
    _mm512_storeu_ps(x, _mm512_max_ps(mx0, mx1));
    double lo_v = tmn, hi_v = tmx;
    for (int j = 0; j < 16; j++) {
        lo_v = m[j] < lo_v ? m[j] : lo_v;
        hi_v = x[j] > hi_v ? x[j] : hi_v;
    }
    out->mn = isnan(out->s2) ? NAN : lo_v;
    out->mx = isnan(out->s2) ? NAN : hi_v;
    out->nz = (double)nz;
    out->below = (double)below;
    out->above = (double)above;
    return 0;
}
#endif

/* ------------------------------------------------------------------------------------ */
/* weight: sum, sum of squares and the spread (max - min) / mean of the row norms of an    */
/* r x c matrix (r <= c) or of its column norms (r > c)                                   */
/* ------------------------------------------------------------------------------------ */

RS_INLINE double spread_of(double nmin, double nmax, double nsum, Py_ssize_t k, int nan) {
    double mean = nsum / (double)k;
    return nan ? NAN : (nmax - nmin) / (mean > 1e-30 ? mean : 1e-30);
}

/* Σx and Σx² of row `row` of an r x c matrix */
RS_INLINE void row_sums(const void *data, const int dt, Py_ssize_t c, Py_ssize_t row,
                        double *s1, double *s2) {
    const Py_ssize_t base = row * c;
    vd a1[UNROLL], a2[UNROLL];
    for (int u = 0; u < UNROLL; u++) a1[u] = a2[u] = v_set(0.0);
    Py_ssize_t i = 0;
    for (; i + UNROLL * LANES <= c; i += UNROLL * LANES) {
        RS_PREFETCH(data, base + i, dt);
        for (int u = 0; u < UNROLL; u++) {
            vd x = v_load_dt(data, base + i + u * LANES, dt);
            a1[u] = v_add(a1[u], x);
            a2[u] = v_add(a2[u], v_mul(x, x));
        }
    }
    for (; i < c; i++) {
        double x = s_load(data, base + i, dt);
        LANE(a1[0], 0) += x;
        LANE(a2[0], 0) += x * x;
    }
    *s1 = v_sum(v_fold(a1));
    *s2 = v_sum(v_fold(a2));
}

/* rows [lo, hi) of the matrix: their sums into sums[2 row], sums[2 row + 1] */
RS_CLONES
static void rows_sums(const void *data, int dt, Py_ssize_t c, Py_ssize_t lo, Py_ssize_t hi,
                      double *sums) {
    for (Py_ssize_t row = lo; row < hi; row++)
        RS_DISPATCH(row_sums(data, DT_F32, c, row, &sums[2 * row], &sums[2 * row + 1]),
                    row_sums(data, DT_F64, c, row, &sums[2 * row], &sums[2 * row + 1]),
                    row_sums(data, DT_BF16, c, row, &sums[2 * row], &sums[2 * row + 1]))
}

/* the row case's result from every row's sums, combined in row order */
static void rows_combine(const double *sums, Py_ssize_t r, double *s1_out, double *s2_out,
                         double *spread_out) {
    double nmin = INFINITY, nmax = -INFINITY, nsum = 0.0, tot1 = 0.0, tot2 = 0.0;
    int nan = 0;
    for (Py_ssize_t row = 0; row < r; row++) {
        double q = sums[2 * row + 1], nr = sqrt(q);
        tot1 += sums[2 * row];
        tot2 += q;
        nan |= isnan(nr);
        nmin = nr < nmin ? nr : nmin;
        nmax = nr > nmax ? nr : nmax;
        nsum += nr;
    }
    *s1_out = tot1;
    *s2_out = tot2;
    *spread_out = spread_of(nmin, nmax, nsum, r, nan);
}

RS_INLINE int weight_impl(const void *data, const int dt, Py_ssize_t r, Py_ssize_t c,
                          double *s1_out, double *s2_out, double *spread_out) {
    double nmin = INFINITY, nmax = -INFINITY, nsum = 0.0;
    int nan = 0;
    if (r <= c) { /* row norms */
        double tot1 = 0.0, tot2 = 0.0;
        for (Py_ssize_t row = 0; row < r; row++) {
            double s, q;
            row_sums(data, dt, c, row, &s, &q);
            double nr = sqrt(q);
            tot1 += s;
            tot2 += q;
            nan |= isnan(nr);
            nmin = nr < nmin ? nr : nmin;
            nmax = nr > nmax ? nr : nmax;
            nsum += nr;
        }
        *s1_out = tot1;
        *s2_out = tot2;
        *spread_out = spread_of(nmin, nmax, nsum, r, nan);
        return 0;
    }
    /* r > c: column sums of squares, accumulated over contiguous rows */
    double *col = (double *)calloc((size_t)c, sizeof(double));
    if (col == NULL) return -1;
    vd s1 = v_set(0.0);
    for (Py_ssize_t row = 0; row < r; row++) {
        const Py_ssize_t base = row * c;
        Py_ssize_t i = 0;
        for (; i + LANES <= c; i += LANES) {
            RS_PREFETCH(data, base + i, dt);
            vd x = v_load_dt(data, base + i, dt);
            s1 = v_add(s1, x);
            v_store(col + i, v_add(v_load(col + i), v_mul(x, x)));
        }
        for (; i < c; i++) {
            double x = s_load(data, base + i, dt);
            LANE(s1, 0) += x;
            col[i] += x * x;
        }
    }
    double tot2 = 0.0;
    for (Py_ssize_t j = 0; j < c; j++) {
        double nr = sqrt(col[j]);
        tot2 += col[j];
        nan |= isnan(nr);
        nmin = nr < nmin ? nr : nmin;
        nmax = nr > nmax ? nr : nmax;
        nsum += nr;
    }
    free(col);
    *s1_out = v_sum(s1);
    *s2_out = tot2;
    *spread_out = spread_of(nmin, nmax, nsum, c, nan);
    return 0;
}

RS_CLONES
static int weight(const void *data, int dt, Py_ssize_t r, Py_ssize_t c, double *s1_out,
                  double *s2_out, double *spread_out) {
    int rc = 0;
    RS_DISPATCH(rc = weight_impl(data, DT_F32, r, c, s1_out, s2_out, spread_out),
                rc = weight_impl(data, DT_F64, r, c, s1_out, s2_out, spread_out),
                rc = weight_impl(data, DT_BF16, r, c, s1_out, s2_out, spread_out))
    return rc;
}

/* ------------------------------------------------------------------------------------ */
/* shifted: x0, sum(x - x0), sum((x - x0)^2): exact 0 variance for a constant tensor      */
/* ------------------------------------------------------------------------------------ */

RS_INLINE void shifted_impl(const void *data, const int dt, Py_ssize_t n, double *x0_out,
                            double *d1_out, double *d2_out) {
    vd d1[UNROLL], d2[UNROLL];
    for (int u = 0; u < UNROLL; u++) d1[u] = d2[u] = v_set(0.0);
    double x0 = s_load(data, 0, dt);
    vd vx0 = v_set(x0);
    Py_ssize_t i = 0;
    for (; i + UNROLL * LANES <= n; i += UNROLL * LANES)
        for (int u = 0; u < UNROLL; u++) {
            vd d = v_sub(v_load_dt(data, i + u * LANES, dt), vx0);
            d1[u] = v_add(d1[u], d);
            d2[u] = v_add(d2[u], v_mul(d, d));
        }
    for (; i < n; i++) {
        double d = s_load(data, i, dt) - x0;
        LANE(d1[0], 0) += d;
        LANE(d2[0], 0) += d * d;
    }
    *x0_out = x0;
    *d1_out = v_sum(v_fold(d1));
    *d2_out = v_sum(v_fold(d2));
}

RS_CLONES
static void shifted(const void *data, int dt, Py_ssize_t n, double *x0_out, double *d1_out,
                    double *d2_out) {
    RS_DISPATCH(shifted_impl(data, DT_F32, n, x0_out, d1_out, d2_out),
                shifted_impl(data, DT_F64, n, x0_out, d1_out, d2_out),
                shifted_impl(data, DT_BF16, n, x0_out, d1_out, d2_out))
}

/* ------------------------------------------------------------------------------------ */
/* channels / rescale: LSUV's measurement and correction of a layer output, viewed as     */
/* [outer, C, inner] (C channels, the bias broadcast along them), in one read each         */
/* ------------------------------------------------------------------------------------ */

/* per-channel sums into sums[C] (zeroed here) and the sum of squares of all elements */
RS_INLINE void channels_impl(const void *data, const int dt, Py_ssize_t outer, Py_ssize_t c,
                             Py_ssize_t inner, double *sums, double *s2_out) {
    memset(sums, 0, (size_t)c * sizeof(double));
    if (inner > 1) { /* each (o, channel) run is contiguous: one row sum each */
        double tot2 = 0.0;
        for (Py_ssize_t o = 0; o < outer; o++)
            for (Py_ssize_t ch = 0; ch < c; ch++) {
                double s, q;
                row_sums(data, dt, inner, o * c + ch, &s, &q);
                sums[ch] += s;
                tot2 += q;
            }
        *s2_out = tot2;
        return;
    }
    /* channels last (a linear layer's output): each row adds into the channel sums */
    vd q[UNROLL];
    for (int u = 0; u < UNROLL; u++) q[u] = v_set(0.0);
    for (Py_ssize_t o = 0; o < outer; o++) {
        const Py_ssize_t base = o * c;
        Py_ssize_t i = 0;
        for (; i + UNROLL * LANES <= c; i += UNROLL * LANES) {
            RS_PREFETCH(data, base + i, dt);
            for (int u = 0; u < UNROLL; u++) {
                vd x = v_load_dt(data, base + i + u * LANES, dt);
                v_store(sums + i + u * LANES, v_add(v_load(sums + i + u * LANES), x));
                q[u] = v_add(q[u], v_mul(x, x));
            }
        }
        for (; i + LANES <= c; i += LANES) {
            vd x = v_load_dt(data, base + i, dt);
            v_store(sums + i, v_add(v_load(sums + i), x));
            q[0] = v_add(q[0], v_mul(x, x));
        }
        for (; i < c; i++) {
            double x = s_load(data, base + i, dt);
            sums[i] += x;
            LANE(q[1], 0) += x * x;
        }
    }
    *s2_out = v_sum(v_fold(q));
}

RS_CLONES
static void channels(const void *data, int dt, Py_ssize_t outer, Py_ssize_t c, Py_ssize_t inner,
                     double *sums, double *s2_out) {
    RS_DISPATCH(channels_impl(data, DT_F32, outer, c, inner, sums, s2_out),
                channels_impl(data, DT_F64, outer, c, inner, sums, s2_out),
                channels_impl(data, DT_BF16, outer, c, inner, sums, s2_out))
}

/* dst = src * s + bb[channel] (bb = NULL: no bias term), each in double, rounded once to the
   data's precision (float32 or float64); dst may be src */
RS_INLINE void rescale_impl(const void *src, void *dst, const int dt, Py_ssize_t outer,
                            Py_ssize_t c, Py_ssize_t inner, double s, const double *bb) {
    const vd vs = v_set(s);
    for (Py_ssize_t o = 0; o < outer; o++)
        for (Py_ssize_t ch = 0; ch < (inner > 1 ? c : 1); ch++) {
            /* one contiguous run: a channel (inner > 1) or a whole row of channels */
            const Py_ssize_t len = inner > 1 ? inner : c, base = (o * c + ch) * (inner > 1 ? inner : 1);
            const double b = bb == NULL || inner == 1 ? 0.0 : bb[ch];
            const vd vb = v_set(b);
            Py_ssize_t i = 0;
            for (; i + LANES <= len; i += LANES) {
                vd x = v_mul(v_load_dt(src, base + i, dt), vs);
                x = v_add(x, inner == 1 && bb != NULL ? v_load(bb + i) : vb);
                if (dt == DT_F64) {
                    v_store((double *)dst + base + i, x);
                } else {
#if defined(RS_VEC)
                    vf f = __builtin_convertvector(x, vf);
                    memcpy((float *)dst + base + i, &f, sizeof f);
#else
                    for (int j = 0; j < LANES; j++) ((float *)dst)[base + i + j] = (float)LANE(x, j);
#endif
                }
            }
            for (; i < len; i++) {
                double x = s_load(src, base + i, dt) * s + (inner == 1 && bb != NULL ? bb[i] : b);
                if (dt == DT_F64)
                    ((double *)dst)[base + i] = x;
                else
                    ((float *)dst)[base + i] = (float)x;
            }
        }
}

RS_CLONES
static void rescale(const void *src, void *dst, int dt, Py_ssize_t outer, Py_ssize_t c,
                    Py_ssize_t inner, double s, const double *bb) {
    if (dt == DT_F64)
        rescale_impl(src, dst, DT_F64, outer, c, inner, s, bb);
    else
        rescale_impl(src, dst, DT_F32, outer, c, inner, s, bb);
}

/* ------------------------------------------------------------------------------------ */
/* Python bindings. Arguments are (address, element count, dtype code, ...); the caller    */
/* (stats.py) passes only contiguous CPU tensors it keeps alive for the call.             */
/* ------------------------------------------------------------------------------------ */

#if defined(RS_AVX512)
static int have_avx512 = 0;
#endif

static int check_dt(int dt) {
    if (dt != DT_F32 && dt != DT_F64 && dt != DT_BF16) {
        PyErr_Format(PyExc_ValueError, "_rowstats: unknown dtype code %d", dt);
        return -1;
    }
    return 0;
}

/* threshold in the data's precision: float32 and bfloat16 data are compared as float32 */
static double in_precision(double t, int dt) {
    return dt == DT_F64 ? t : (double)(float)t;
}

/* ------------------------------------------------------------------------------------ */
/* Pieces and threads. A tensor of more than PIECE elements is reduced as the pieces       */
/* [k PIECE, (k + 1) PIECE), each by the kernels above, and the pieces' results are        */
/* combined in order k = 0, 1, ...: the values depend on n only, never on how many threads */
/* computed the pieces. The threads are those of the OpenMP runtime torch already loaded   */
/* (libgomp, or Intel's / LLVM's, which export the same GOMP_parallel entry point): the     */
/* team torch's own parallel kernels use, idle while the audit's hooks run. No second      */
/* runtime is ever loaded; without one (another platform) the pieces run one after another.*/
/* ------------------------------------------------------------------------------------ */

#define PIECE 16384 /* elements: a multiple of CHUNK and of 32; 64 KiB of float32 */

typedef void (*gomp_parallel_fn)(void (*)(void *), void *, unsigned, unsigned);
typedef int (*omp_int_fn)(void);
static gomp_parallel_fn rs_gomp_parallel = NULL;
static omp_int_fn rs_thread_num = NULL, rs_num_threads = NULL;

#if defined(__linux__) && defined(__GNUC__)
#include <dlfcn.h>
#include <link.h>
static int rs_find_omp(struct dl_phdr_info *info, size_t size, void *arg) {
    (void)size;
    (void)arg;
    const char *name = info->dlpi_name;
    if (name == NULL || *name == '\0') return 0;
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    if (strncmp(base, "libgomp", 7) && strncmp(base, "libiomp", 7) && strncmp(base, "libomp", 6))
        return 0;
    void *h = dlopen(name, RTLD_LAZY | RTLD_NOLOAD); /* already loaded: never a second copy */
    if (h == NULL) return 0;
    void *par = dlsym(h, "GOMP_parallel"), *num = dlsym(h, "omp_get_thread_num"),
         *team = dlsym(h, "omp_get_num_threads");
    if (par == NULL || num == NULL || team == NULL) {
        dlclose(h);
        return 0;
    }
    /* kept open (the reference dlopen took) for the life of the process */
    memcpy(&rs_gomp_parallel, &par, sizeof par);
    memcpy(&rs_thread_num, &num, sizeof num);
    memcpy(&rs_num_threads, &team, sizeof team);
    return 1;
}
#endif

static int rs_omp_state = 0; /* 0: not looked for yet, 1: found, -1: none */

/* the loaded OpenMP runtime's entry points, looked for once (after torch has loaded its own) */
static int rs_have_omp(void) {
    if (rs_omp_state == 0) {
#if defined(__linux__) && defined(__GNUC__)
        dl_iterate_phdr(rs_find_omp, NULL);
#endif
        rs_omp_state = rs_gomp_parallel != NULL ? 1 : -1;
    }
    return rs_omp_state == 1;
}

typedef struct {
    const char *data;
    size_t esize;
    int dt, counts, bounds, simd;
    Py_ssize_t n, step, pieces;
    double lo, hi;
    moments_t *out;
    volatile int failed;
} moments_job;

static void moments_piece(moments_job *j, Py_ssize_t k) {
    Py_ssize_t start = k * PIECE, len = j->n - start < PIECE ? j->n - start : PIECE;
    Py_ssize_t first = (j->step - start % j->step) % j->step; /* first sampled index in it */
    const void *data = j->data + (size_t)start * j->esize;
#if defined(RS_AVX512)
    if (j->dt == DT_F32 && j->simd && have_avx512) {
        if (moments_f32_avx512((const float *)data, len, j->step, first, j->lo, j->hi, j->counts,
                               j->bounds, &j->out[k]))
            j->failed = 1;
        return;
    }
#endif
    moments(data, j->dt, len, j->step, first, j->lo, j->hi, j->counts, j->bounds, &j->out[k]);
}

static void moments_worker(void *arg) {
    moments_job *j = (moments_job *)arg;
    int t = rs_thread_num(), nt = rs_num_threads();
    for (Py_ssize_t k = t; k < j->pieces; k += nt) moments_piece(j, k);
}

static PyObject *py_moments(PyObject *self, PyObject *args) {
    unsigned long long ptr;
    Py_ssize_t n, step;
    int dt, has_lo, has_hi, counts, simd = 1, threads = 1;
    double lo, hi;
    (void)self;
    if (!PyArg_ParseTuple(args, "Kninpdpdp|pi", &ptr, &n, &dt, &step, &has_lo, &lo, &has_hi,
                          &hi, &counts, &simd, &threads))
        return NULL;
    if (check_dt(dt)) return NULL;
    if (n <= 0 || step <= 0) {
        PyErr_SetString(PyExc_ValueError, "_rowstats.moments: n and step must be positive");
        return NULL;
    }
    moments_job j;
    j.data = (const char *)(uintptr_t)ptr;
    j.esize = dt == DT_F64 ? 8 : dt == DT_F32 ? 4 : 2;
    j.dt = dt;
    j.counts = counts;
    j.bounds = has_lo || has_hi;
    j.simd = simd;
    j.n = n;
    j.step = step;
    j.pieces = (n + PIECE - 1) / PIECE;
    j.lo = has_lo ? in_precision(lo, dt) : -INFINITY;
    j.hi = has_hi ? in_precision(hi, dt) : INFINITY;
    j.failed = 0;
    moments_t one, *parts = &one;
    if (j.pieces > 1) {
        parts = (moments_t *)malloc((size_t)j.pieces * sizeof(moments_t));
        if (parts == NULL) return PyErr_NoMemory();
    }
    j.out = parts;
    if (j.pieces > 1 && threads > 1 && rs_have_omp()) {
        unsigned team = (unsigned)(threads < j.pieces ? threads : j.pieces);
        rs_gomp_parallel(moments_worker, &j, team, 0);
    } else {
        for (Py_ssize_t k = 0; k < j.pieces; k++) moments_piece(&j, k);
    }
    if (j.failed) {
        if (parts != &one) free(parts);
        return PyErr_NoMemory();
    }
    moments_t r = parts[0];
    for (Py_ssize_t k = 1; k < j.pieces; k++) { /* in order: the same sums for any threads */
        const moments_t *q = &parts[k];
        r.s1 += q->s1;
        r.s2 += q->s2;
        r.mn = q->mn < r.mn ? q->mn : r.mn;
        r.mx = q->mx > r.mx ? q->mx : r.mx;
        r.nz += q->nz;
        r.below += q->below;
        r.above += q->above;
    }
    if (parts != &one) free(parts);
    if (isnan(r.s2)) r.mn = r.mx = NAN; /* as each piece: NaN anywhere, NaN extremes */
    return Py_BuildValue("(ddddddd)", r.s1, r.s2, r.mn, r.mx, r.nz, has_lo ? r.below : 0.0,
                         has_hi ? r.above : 0.0);
}

typedef struct {
    const void *data;
    int dt;
    Py_ssize_t r, c, blocks;
    double *sums;
} rows_job;

static void rows_worker(void *arg) {
    rows_job *j = (rows_job *)arg;
    int t = rs_thread_num(), nt = rs_num_threads();
    Py_ssize_t per = PIECE / j->c > 0 ? PIECE / j->c : 1; /* rows per block */
    for (Py_ssize_t b = t; b < j->blocks; b += nt) {
        Py_ssize_t lo = b * per, hi = lo + per < j->r ? lo + per : j->r;
        rows_sums(j->data, j->dt, j->c, lo, hi, j->sums);
    }
}

static PyObject *py_weight(PyObject *self, PyObject *args) {
    unsigned long long ptr;
    Py_ssize_t r, c;
    int dt, threads = 1;
    (void)self;
    if (!PyArg_ParseTuple(args, "Knni|i", &ptr, &r, &c, &dt, &threads)) return NULL;
    if (check_dt(dt)) return NULL;
    if (r <= 0 || c <= 0) {
        PyErr_SetString(PyExc_ValueError, "_rowstats.weight: rows and columns must be positive");
        return NULL;
    }
    double s1, s2, spread;
    const void *data = (const void *)(uintptr_t)ptr;
    Py_ssize_t per = PIECE / c > 0 ? PIECE / c : 1;
    Py_ssize_t blocks = (r + per - 1) / per;
    /* rows > cols (column norms, summed over contiguous rows) stays on one thread: split into
       column strips it ran slower on two threads here (47.7 vs 57.3 us for 1024 x 256) */
    if (r <= c && blocks > 1 && threads > 1 && rs_have_omp()) {
        /* the rows' sums in parallel, combined in row order: the bits of the serial loop */
        rows_job j = {data, dt, r, c, blocks, (double *)malloc((size_t)r * 2 * sizeof(double))};
        if (j.sums == NULL) return PyErr_NoMemory();
        rs_gomp_parallel(rows_worker, &j, (unsigned)(threads < blocks ? threads : blocks), 0);
        rows_combine(j.sums, r, &s1, &s2, &spread);
        free(j.sums);
    } else if (weight(data, dt, r, c, &s1, &s2, &spread)) {
        return PyErr_NoMemory();
    }
    return Py_BuildValue("(ddd)", s1, s2, spread);
}

static PyObject *py_shifted(PyObject *self, PyObject *args) {
    unsigned long long ptr;
    Py_ssize_t n;
    int dt;
    (void)self;
    if (!PyArg_ParseTuple(args, "Kni", &ptr, &n, &dt)) return NULL;
    if (check_dt(dt)) return NULL;
    if (n <= 0) {
        PyErr_SetString(PyExc_ValueError, "_rowstats.shifted: n must be positive");
        return NULL;
    }
    double x0, d1, d2;
    shifted((const void *)(uintptr_t)ptr, dt, n, &x0, &d1, &d2);
    return Py_BuildValue("(ddd)", x0, d1, d2);
}

static int check_shape(Py_ssize_t outer, Py_ssize_t c, Py_ssize_t inner, const char *who) {
    if (outer <= 0 || c <= 0 || inner <= 0) {
        PyErr_Format(PyExc_ValueError, "_rowstats.%s: outer, channels and inner must be positive", who);
        return -1;
    }
    return 0;
}

static PyObject *py_channels(PyObject *self, PyObject *args) {
    unsigned long long ptr, bias;
    Py_ssize_t outer, c, inner;
    int dt, bdt = DT_F64;
    (void)self;
    if (!PyArg_ParseTuple(args, "KnnniK|i", &ptr, &outer, &c, &inner, &dt, &bias, &bdt))
        return NULL;
    if (check_dt(dt) || check_dt(bdt) || check_shape(outer, c, inner, "channels")) return NULL;
    double *sums = (double *)malloc((size_t)c * sizeof(double)), s2;
    if (sums == NULL) return PyErr_NoMemory();
    channels((const void *)(uintptr_t)ptr, dt, outer, c, inner, sums, &s2);
    const double m = (double)outer * (double)inner, n = m * (double)c;
    double mean = 0.0;
    for (Py_ssize_t k = 0; k < c; k++) mean += (sums[k] /= m); /* channel means */
    mean /= (double)c;
    const double ms = s2 / n, var_t = ms - mean * mean;
    double cov = 0.0, var_b = 0.0;
    if (bias) {
        const void *b = (const void *)(uintptr_t)bias;
        double mb = 0.0;
        for (Py_ssize_t k = 0; k < c; k++) mb += s_load(b, k, bdt);
        mb /= (double)c;
        for (Py_ssize_t k = 0; k < c; k++) {
            const double d = s_load(b, k, bdt) - mb;
            cov += (sums[k] - mean) * d;
            var_b += d * d;
        }
        cov /= (double)c;
        var_b /= (double)c;
    }
    free(sums);
    return Py_BuildValue("(dddd)", var_t, cov, var_b, ms);
}

static PyObject *py_rescale(PyObject *self, PyObject *args) {
    unsigned long long src, dst, bias;
    Py_ssize_t outer, c, inner;
    int dt, bdt = DT_F64;
    double s;
    (void)self;
    if (!PyArg_ParseTuple(args, "KKnnnidK|i", &src, &dst, &outer, &c, &inner, &dt, &s, &bias,
                          &bdt))
        return NULL;
    if (check_dt(bdt)) return NULL;
    if (dt != DT_F32 && dt != DT_F64) {
        PyErr_Format(PyExc_ValueError, "_rowstats.rescale: dtype code %d is not float32 or float64", dt);
        return NULL;
    }
    if (check_shape(outer, c, inner, "rescale")) return NULL;
    double *bb = NULL;
    if (bias) {
        const void *b = (const void *)(uintptr_t)bias;
        bb = (double *)malloc((size_t)c * sizeof(double));
        if (bb == NULL) return PyErr_NoMemory();
        for (Py_ssize_t k = 0; k < c; k++) bb[k] = s_load(b, k, bdt) * (1.0 - s);
    }
    rescale((const void *)(uintptr_t)src, (void *)(uintptr_t)dst, dt, outer, c, inner, s, bb);
    free(bb);
    Py_RETURN_NONE;
}

static PyObject *py_openmp(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    return PyBool_FromLong(rs_have_omp());
}

static PyMethodDef methods[] = {
    {"openmp", py_openmp, METH_NOARGS,
     "openmp() -> True if the statistics can run on the loaded OpenMP runtime's threads"},
    {"moments", py_moments, METH_VARARGS,
     "moments(ptr, n, dtype, step, has_lo, lo, has_hi, hi, counts, simd=True, threads=1) -> "
     "(sum, sum of squares, min, max, nonzeros, below, above); the counts on elements 0, step, "
     "2 step, ...; simd=False: the portable kernel (the same values); threads: at most this "
     "many threads of the loaded OpenMP runtime (the same values for any number)"},
    {"weight", py_weight, METH_VARARGS,
     "weight(ptr, rows, cols, dtype, threads=1) -> (sum, sum of squares, spread of the row "
     "norms if rows <= cols else of the column norms); threads: as moments (the same values)"},
    {"shifted", py_shifted, METH_VARARGS,
     "shifted(ptr, n, dtype) -> (x0, sum(x - x0), sum((x - x0)^2))"},
    {"channels", py_channels, METH_VARARGS,
     "channels(ptr, outer, channels, inner, dtype, bias_ptr, bias_dtype=1) -> (var, cov with "
     "the bias, var of the bias, mean square): population moments of the data viewed as "
     "[outer, channels, inner], the bias (bias_ptr: contiguous [channels] of bias_dtype, or 0) "
     "broadcast along the channels; one read, accumulated in float64"},
    {"rescale", py_rescale, METH_VARARGS,
     "rescale(src, dst, outer, channels, inner, dtype, s, bias_ptr, bias_dtype=1) -> None: dst "
     "= s * src + (1 - s) * bias[channel] (bias_ptr: as channels), float32 or float64 data, "
     "computed in float64 and rounded once; dst may be src"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "_rowstats", "One-pass statistics of the audit (CPU).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__rowstats(void) {
    PyObject *m = PyModule_Create(&moduledef);
    if (m == NULL) return NULL;
    int avx512 = 0;
#if defined(RS_AVX512)
    __builtin_cpu_init();
    avx512 = have_avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("popcnt");
#endif
    if (PyModule_AddIntConstant(m, "AVX512", avx512) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
