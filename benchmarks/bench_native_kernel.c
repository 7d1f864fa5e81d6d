/*
 * Cycles per element of the native engine's kernels, in the L2 cache, on one core
 * (docs/random.md, "Where the time goes"). Compares the fused AVX-512 run (fill_run) with
 * the batched path (fill_run_batched, what runs without AVX-512), and measures the core's
 * issue rates for the operations the kernel is made of. Build and run from the repository
 * root (the flags are setup.py's; the Python headers are only needed to compile the file):
 *
 *   gcc -O3 -ffp-contract=off -fno-math-errno -fno-trapping-math -std=gnu11 \
 *       $(python3-config --includes) benchmarks/bench_native_kernel.c -o /tmp/bench_kernel \
 *       -pthread $(python3-config --ldflags --embed)
 *   /tmp/bench_kernel [n=65536] [reps=300] [dist: 0 uniform, 1 normal, 2 trunc_normal]
 *
 * Times are thread CPU time; cycles use the clock measured by a dependent imul chain (3
 * cycles each), so they hold under turbo but not if the core changes clock mid-run.
 */
#include "../src/initwise/random/_native.c"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static double cycle_s(void) { /* seconds per cycle */
    uint64_t x = 3;
    double t0 = now();
    for (long i = 0; i < 100000000L; i++) __asm__ volatile("imul %0,%0" : "+r"(x));
    return (now() - t0) / 3e8;
}

#if IW_AVX512
#define OP12(ins)                                                                                \
    __asm__ volatile(ins " %1,%0,%0" : "+v"(a0) : "v"(d));                                     \
    __asm__ volatile(ins " %1,%0,%0" : "+v"(a1) : "v"(d));                                     \
    __asm__ volatile(ins " %1,%0,%0" : "+v"(a2) : "v"(d));                                     \
    __asm__ volatile(ins " %1,%0,%0" : "+v"(a3) : "v"(d));                                     \
    __asm__ volatile(ins " %1,%0,%0" : "+v"(a4) : "v"(d));                                     \
    __asm__ volatile(ins " %1,%0,%0" : "+v"(a5) : "v"(d));                                     \
    __asm__ volatile(ins " %1,%0,%0" : "+v"(a6) : "v"(d));                                     \
    __asm__ volatile(ins " %1,%0,%0" : "+v"(a7) : "v"(d));                                     \
    __asm__ volatile(ins " %1,%0,%0" : "+v"(a8) : "v"(d));                                     \
    __asm__ volatile(ins " %1,%0,%0" : "+v"(a9) : "v"(d));                                     \
    __asm__ volatile(ins " %1,%0,%0" : "+v"(a10) : "v"(d));                                    \
    __asm__ volatile(ins " %1,%0,%0" : "+v"(a11) : "v"(d))
#define RATE(name, ins, iters)                                                                  \
    __attribute__((target("avx512f"), noinline)) static double name(void) {                   \
        __m512d a0 = _mm512_set1_pd(1.0), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0,         \
                a6 = a0, a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0, d = _mm512_set1_pd(1.0);  \
        double t0 = now();                                                                     \
        for (long i = 0; i < (iters); i++) { OP12(ins); }                                     \
        return (now() - t0) / ((iters) * 12.0);                                                 \
    }
RATE(rate_add, "vaddpd", 20000000L)
RATE(rate_mul, "vmulpd", 20000000L)
RATE(rate_muludq, "vpmuludq", 20000000L)
RATE(rate_tern, "vpxorq", 20000000L)
RATE(rate_div, "vdivpd", 2000000L)
#endif

int main(int argc, char **argv) {
    __builtin_cpu_init();
#if IW_AVX512
    iw_has_avx512 = __builtin_cpu_supports("avx512f");
#endif
    long n = argc > 1 ? atol(argv[1]) : 65536;
    int reps = argc > 2 ? atoi(argv[2]) : 300, dist = argc > 3 ? atoi(argv[3]) : 1;
    params_t P = {0x12345678u, 0x9abcdef0u, 0x1111u, 0x2222u, dist, {0.0, 0.02, 0, 0, 0, 0, 0, 0}};
    if (dist == 2) { /* N(0, 0.02^2) truncated to +-2 std */
        double p[8] = {0.0, 0.02, 0.0227501319481792, 0.0227501319481792, 0.954499736103642,
                       1.0, -2.0, 2.0};
        memcpy(P.p, p, sizeof p);
    }
    float *out = aligned_alloc(64, (size_t)n * 4);
    memset(out, 0, (size_t)n * 4);
    double c = cycle_s();
    printf("clock %.2f GHz; n %ld, dist %d, float32, best of 5 x %d fills\n", 1e-9 / c, n, dist, reps);
    for (int mode = 0; mode < 2; mode++) {
        double best = 1e9;
        for (int r = 0; r < 5; r++) {
            double t0 = now();
            for (int i = 0; i < reps; i++) {
                if (mode)
                    fill_run(&P, (uint64_t)i * (uint64_t)n, n, out, OUT_F32);
                else
                    fill_run_batched(&P, (uint64_t)i * (uint64_t)n, n, out, OUT_F32);
            }
            double t = (now() - t0) / reps / (double)n;
            if (t < best) best = t;
        }
        printf("  %-34s %.3f ns/element = %.2f cycles/element\n",
               mode ? "fill_run (fused AVX-512 kernel)" : "fill_run_batched (batches of 64)",
               best * 1e9, best / c);
    }
#if IW_AVX512
    if (iw_has_avx512)
        printf("issue rates, cycles per zmm op (12 independent chains): vaddpd %.2f, vmulpd %.2f, "
               "vpmuludq %.2f, vpxorq %.2f, vdivpd %.1f\n",
               rate_add() / c, rate_mul() / c, rate_muludq() / c, rate_tern() / c, rate_div() / c);
#endif
    free(out);
    return 0;
}
