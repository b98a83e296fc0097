// bench/bench_kernels.c - how close qlora.h's kernels come to this machine's peak.
//
//   make bench-kernels               (or: ./build/bench_kernels [--quick])
//
// Prints, all measured in this run:
//   1. peak GFLOP/s per ISA: an in-process FMA loop (AVX2 ymm, AVX-512 zmm, avx512_bf16
//      vdpbf16ps, AMX-BF16 tdpbf16ps - each only when cpuid says so), on 1 thread and on n threads
//      at once (pthreads);
//   2. every kernel of the registry (kernels_generated/qlora_kernels.inc) the CPU can run: dot at
//      n = 576, 1536; deq at n = 576*64; the f32 gemm micro-kernel (MR x NR, K = 576, B panels in L2)
//      with % of the single-core f32 FMA peak of its ISA;
//   3. the quantized GEMM drivers at SmolLM2-135M training shapes: forward Y = X deq(W)^T
//      (qlora_matmul) and backward-input dX += dY deq(W) (qlora__gemm_w), 1 and 2 threads, with % of
//      the f32 peak (AVX-512, else AVX2) for that many threads;
//   4. the line `kernels: gemm_fwd_pct_peak=<x> gemm_bwd_pct_peak=<y>` (2 threads, NF4 576x1536).
// Times are the best of a few repetitions after a warm-up; --quick takes fewer (under ~15 s).
#define QLORA_IMPLEMENTATION
#include "qlora.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if !defined(QLORA_NO_THREADS) && !defined(_WIN32)
#include <pthread.h>
#include <unistd.h>
#define BENCH_THREADS 1
#endif
#if defined(QLORA__X86) && defined(QLORA__HAVE_TARGET_ATTR)
#include <immintrin.h>
#define BENCH_X86 1
#if defined(__linux__)
#include <sys/syscall.h>
#endif
#endif

static int g_quick;
static volatile float g_sink;   // results go here so no loop is optimised away

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int online_cpus(void) {
#ifdef BENCH_THREADS
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
#else
    return 1;
#endif
}

// ---- other processes: on a shared machine they take cores from the multi-thread numbers -------
// CPUs that processes other than this one kept busy (incl. hypervisor steal) on average since
// mark_others(m): /proc/stat busy time minus our own CPU time. Linux only; -1 elsewhere.
typedef struct { double wall, busy, self; int ok; } others_mark;
static double proc_busy_s(int *ok) {
    *ok = 0;
#if defined(__linux__)
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return 0;
    unsigned long long v[8] = { 0 };
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    long hz = sysconf(_SC_CLK_TCK);
    if (n < 8 || hz <= 0) return 0;
    *ok = 1;   // user nice system [idle iowait] irq softirq steal
    return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)hz;
#else
    return 0;
#endif
}
static void mark_others(others_mark *m) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    m->self = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
    m->busy = proc_busy_s(&m->ok);
    m->wall = now_s();
}
static double others_since(const others_mark *m) {
    others_mark e;
    mark_others(&e);
    if (!m->ok || !e.ok || e.wall - m->wall < 0.2) return -1;
    double o = ((e.busy - m->busy) - (e.self - m->self)) / (e.wall - m->wall);
    return o < 0 ? 0 : o;
}
static void print_others(const others_mark *m) {
    double o = others_since(m);
    if (o < 0) return;
    printf("  other processes used %.2f CPUs on average during this section%s\n", o,
           o > 0.2 ? ": its multi-thread numbers are low (shared machine)" : "");
}

// ---- timing: best seconds per call of run(arg, iters) / iters -----------------------------------
// The iteration count is calibrated so one repetition takes about target_s.
typedef void (*run_fn)(void *arg, long iters);
static double best_per_iter(run_fn run, void *arg, double target_s, int reps) {
    long iters = 1;
    double t;
    for (;;) {                                   // calibrate (doubles as the warm-up)
        double t0 = now_s();
        run(arg, iters);
        t = now_s() - t0;
        if (t >= target_s / 8 || iters > (1L << 40)) break;
        iters *= 2;
    }
    long n = (long)((double)iters * target_s / (t > 0 ? t : 1e-9));
    if (n < 1) n = 1;
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        run(arg, n);
        double el = (now_s() - t0) / (double)n;
        if (el < best) best = el;
    }
    return best;
}

// ---- 1. peak: FMA loops --------------------------------------------------------------------------
// Each loop runs `iters` iterations of independent accumulator updates c = c*a + b (or a dot-product
// accumulate), with enough accumulators to cover latency x throughput (4 cycles x 2 pipes = 8 on
// current cores), and returns the flops it did. Accumulators start at different values so the
// compiler cannot merge the chains.
typedef enum { PK_AVX2, PK_AVX512, PK_BF16, PK_AMX, PK_COUNT } peak_kind;
static const char *const peak_names[PK_COUNT] = {
    "avx2 ymm fma f32", "avx512 zmm fma f32", "avx512_bf16 vdpbf16ps", "amx-bf16 tdpbf16ps"
};
static int peak_avail[PK_COUNT];
static const char *peak_why[PK_COUNT];          // why not available
static double peak_gf[PK_COUNT][3];            // [kind][0: 1 thread, 1: 2 threads, 2: n threads]

#define ACC12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define ACC16(X) ACC12(X) X(12) X(13) X(14) X(15)

#ifdef BENCH_X86
__attribute__((target("avx2,fma"))) static double loop_avx2(long iters) {
    __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-6f);
#define DECL(i) __m256 c##i = _mm256_set1_ps(0.01f * (float)(i));
#define STEP(i) c##i = _mm256_fmadd_ps(c##i, a, b);
#define SUM(i) s = _mm256_add_ps(s, c##i);
    ACC12(DECL)
    for (long it = 0; it < iters; it++) { ACC12(STEP) }
    __m256 s = _mm256_setzero_ps();
    ACC12(SUM)
    g_sink += _mm256_cvtss_f32(s);
#undef DECL
#undef STEP
#undef SUM
    return (double)iters * 12 * 8 * 2;
}

__attribute__((target("avx512f,avx2,fma"))) static double loop_avx512(long iters) {
    __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-6f);
#define DECL(i) __m512 c##i = _mm512_set1_ps(0.01f * (float)(i));
#define STEP(i) c##i = _mm512_fmadd_ps(c##i, a, b);
#define SUM(i) s = _mm512_add_ps(s, c##i);
    ACC16(DECL)
    for (long it = 0; it < iters; it++) { ACC16(STEP) }
    __m512 s = _mm512_setzero_ps();
    ACC16(SUM)
    g_sink += _mm512_reduce_add_ps(s);
#undef DECL
#undef STEP
#undef SUM
    return (double)iters * 16 * 16 * 2;
}

#if (defined(__clang__) && __clang_major__ >= 9) || (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 10)
#define BENCH_BF16 1
// vdpbf16ps: 16 lanes x 2 bf16 products each = 64 flops per instruction.
__attribute__((target("avx512bf16,avx512f,avx512bw,avx512vl,avx2,fma"))) static double loop_bf16(long iters) {
    __m512 fa = _mm512_set1_ps(1e-3f);
    __m512bh a = _mm512_cvtne2ps_pbh(fa, fa), b = a;
#define DECL(i) __m512 c##i = _mm512_set1_ps(0.01f * (float)(i));
#define STEP(i) c##i = _mm512_dpbf16_ps(c##i, a, b);
#define SUM(i) s = _mm512_add_ps(s, c##i);
    ACC16(DECL)
    for (long it = 0; it < iters; it++) { ACC16(STEP) }
    __m512 s = _mm512_setzero_ps();
    ACC16(SUM)
    g_sink += _mm512_reduce_add_ps(s);
#undef DECL
#undef STEP
#undef SUM
    return (double)iters * 16 * 64;
}
#endif

#if defined(__x86_64__) && defined(__linux__)
#define BENCH_AMX 1
// AMX, written as bytes so any assembler takes it (operands: rax = address, rcx = stride).
// Tiles 0-3: 16x16 f32 accumulators; 4, 5: A (16 rows x 32 bf16); 6, 7: B (16 rows x 32 bf16 pairs).
#define AMX_LDTILECFG(cfg) __asm__ volatile(".byte 0xc4,0xe2,0x78,0x49,0x00" :: "a"(cfg) : "memory")
#define AMX_RELEASE() __asm__ volatile(".byte 0xc4,0xe2,0x78,0x49,0xc0" ::: "memory")
#define AMX_ZERO(t) __asm__ volatile(".byte 0xc4,0xe2,0x7b,0x49," #t :: : "memory")   // t = 0xc0 | n << 3
#define AMX_LOAD(m, p, s) __asm__ volatile(".byte 0xc4,0xe2,0x7b,0x4b," #m ",0x08" :: "a"(p), "c"(s) : "memory")   // m = n << 3 | 4
#define AMX_STORE(m, p, s) __asm__ volatile(".byte 0xc4,0xe2,0x7a,0x4b," #m ",0x08" :: "a"(p), "c"(s) : "memory")
// tdpbf16ps tmmD, tmmA, tmmB: byte 2 = (~B & 15) << 3 | 2, modrm = 0xc0 | D << 3 | A
#define AMX_DP(v, modrm) __asm__ volatile(".byte 0xc4,0xe2," #v ",0x5c," #modrm ::: "memory")
static double loop_amx(long iters) {
    unsigned char cfg[64];                      // palette 1; colsb[t] at 16 + 2t, rows[t] at 48 + t
    memset(cfg, 0, sizeof cfg);
    cfg[0] = 1;
    for (int t = 0; t < 8; t++) { cfg[16 + 2 * t] = 64; cfg[48 + t] = 16; }   // colsb = 64 bytes, 16 rows
    static uint16_t ab[16 * 32];
    for (int i = 0; i < 16 * 32; i++) ab[i] = 0x3a83;   // bf16 ~1e-3
    float out[16 * 16];
    AMX_LDTILECFG(cfg);
    AMX_ZERO(0xc0); AMX_ZERO(0xc8); AMX_ZERO(0xd0); AMX_ZERO(0xd8);
    AMX_LOAD(0x24, ab, 64L); AMX_LOAD(0x2c, ab, 64L); AMX_LOAD(0x34, ab, 64L); AMX_LOAD(0x3c, ab, 64L);
    for (long it = 0; it < iters; it++) {
        AMX_DP(0x4a, 0xc4);   // tmm0 += tmm4 . tmm6
        AMX_DP(0x42, 0xcc);   // tmm1 += tmm4 . tmm7
        AMX_DP(0x4a, 0xd5);   // tmm2 += tmm5 . tmm6
        AMX_DP(0x42, 0xdd);   // tmm3 += tmm5 . tmm7
    }
    AMX_STORE(0x04, out, 64L);
    AMX_RELEASE();
    g_sink += out[0];
    return (double)iters * 4 * 16 * 16 * 32 * 2;
}
#endif
#endif // BENCH_X86

static double peak_loop(peak_kind k, long iters) {
#ifdef BENCH_X86
    if (k == PK_AVX2) return loop_avx2(iters);
    if (k == PK_AVX512) return loop_avx512(iters);
#ifdef BENCH_BF16
    if (k == PK_BF16) return loop_bf16(iters);
#endif
#ifdef BENCH_AMX
    if (k == PK_AMX) return loop_amx(iters);
#endif
#endif
    (void)k; (void)iters;
    return 0.0;
}

static void detect_peaks(void) {
    for (int k = 0; k < PK_COUNT; k++) peak_why[k] = "not x86 / no target attributes";
#ifdef BENCH_X86
    unsigned cpu = qlora__detect_cpu();   // raw cpuid + xgetbv, before any QLORA_NO_* mask
    unsigned a, b, c, d;
    peak_avail[PK_AVX2] = (cpu & QLORA_CPU_AVX2) != 0;
    peak_avail[PK_AVX512] = (cpu & QLORA_CPU_AVX512) != 0;
    peak_why[PK_AVX2] = peak_why[PK_AVX512] = "cpuid/xgetbv: not supported";
    peak_why[PK_BF16] = "cpuid: no avx512_bf16";
    peak_why[PK_AMX] = "cpuid: no amx-bf16";
    if (__get_cpuid_max(0, NULL) >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        unsigned max_sub = a;
        a = 0;
        if (max_sub >= 1) __cpuid_count(7, 1, a, b, c, d);
#ifdef BENCH_BF16
        peak_avail[PK_BF16] = peak_avail[PK_AVX512] && ((a >> 5) & 1);
#else
        if ((a >> 5) & 1) peak_why[PK_BF16] = "compiler too old for avx512bf16 intrinsics";
#endif
        __cpuid_count(7, 0, a, b, c, d);
        if (((d >> 22) & 1) && ((d >> 24) & 1)) {   // amx-bf16, amx-tile
#ifdef BENCH_AMX
            unsigned xlo, xhi;
            __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
            (void)xhi;
            if ((xlo & (3u << 17)) != (3u << 17)) peak_why[PK_AMX] = "OS does not enable AMX tile state";
            else if (syscall(SYS_arch_prctl, 0x1023 /*ARCH_REQ_XCOMP_PERM*/, 18 /*XFEATURE_XTILEDATA*/) != 0)
                peak_why[PK_AMX] = "arch_prctl(ARCH_REQ_XCOMP_PERM) refused";
            else peak_avail[PK_AMX] = 1;
#else
            peak_why[PK_AMX] = "AMX loop needs x86-64 Linux";
#endif
        }
    }
#endif
}

typedef struct { peak_kind k; long iters; double flops, t0, t1; } peak_job;
static void *peak_thread(void *arg) {
    peak_job *j = (peak_job *)arg;
    j->t0 = now_s();
    j->flops = peak_loop(j->k, j->iters);
    j->t1 = now_s();
    return NULL;
}

// GFLOP/s of kind k on nt threads at once: total flops / (last end - first start), best of reps.
static double measure_peak(peak_kind k, int nt, double target_s, int reps) {
    long iters = 1024;
    for (;;) {                                  // calibrate on one thread
        double t0 = now_s();
        peak_loop(k, iters);
        if (now_s() - t0 >= target_s / 4 || iters > (1L << 40)) break;
        iters *= 2;
    }
    iters *= 4;
    double best = 0;
    for (int r = 0; r < reps; r++) {
        peak_job jobs[64];
        if (nt > 64) nt = 64;
        for (int i = 0; i < nt; i++) { jobs[i].k = k; jobs[i].iters = iters; }
#ifdef BENCH_THREADS
        pthread_t th[64];
        int started[64];
        for (int i = 1; i < nt; i++) started[i] = pthread_create(&th[i], NULL, peak_thread, &jobs[i]) == 0;
        peak_thread(&jobs[0]);
        for (int i = 1; i < nt; i++) {
            if (started[i]) { pthread_join(th[i], NULL); continue; }
            jobs[i].flops = 0; jobs[i].t0 = jobs[0].t0; jobs[i].t1 = jobs[0].t1;   // could not start: counts nothing
        }
#else
        nt = 1;
        peak_thread(&jobs[0]);
#endif
        double t0 = jobs[0].t0, t1 = jobs[0].t1, fl = 0;
        for (int i = 0; i < nt; i++) {
            if (jobs[i].t0 < t0) t0 = jobs[i].t0;
            if (jobs[i].t1 > t1) t1 = jobs[i].t1;
            fl += jobs[i].flops;
        }
        double gf = fl / (t1 - t0) * 1e-9;
        if (gf > best) best = gf;
    }
    return best;
}

static int g_nt[3], g_n_nt;   // thread counts measured: 1, 2, and all online CPUs when more
static int nt_slot(int nt) {
    for (int i = 0; i < g_n_nt; i++) if (g_nt[i] == nt) return i;
    return -1;
}
// The f32 peak the drivers are compared with: AVX-512 when there, else AVX2; 0 when none.
static double f32_peak(int nt) {
    int s = nt_slot(nt);
    if (s < 0) return 0;
    if (peak_avail[PK_AVX512]) return peak_gf[PK_AVX512][s];
    if (peak_avail[PK_AVX2]) return peak_gf[PK_AVX2][s];
    return 0;
}
// The bf16 peak of the kernel the drivers run: AMX tiles when the chosen bf16 GEMM is the AMX one.
static int g_bf16_amx;
static double bf16_peak(int nt) {
    int s = nt_slot(nt);
    peak_kind k = g_bf16_amx ? PK_AMX : PK_BF16;
    return s >= 0 && peak_avail[k] ? peak_gf[k][s] : 0;
}
static const char *f32_peak_name(void) {
    return peak_avail[PK_AVX512] ? "avx512" : peak_avail[PK_AVX2] ? "avx2" : "none";
}

static void bench_peaks(void) {
    detect_peaks();
    int ncpu = online_cpus();
    g_n_nt = 0;
    g_nt[g_n_nt++] = 1;
    g_nt[g_n_nt++] = 2;
    if (ncpu > 2) g_nt[g_n_nt++] = ncpu;
    double target = g_quick ? 0.03 : 0.1;
    int reps = g_quick ? 3 : 6;
    others_mark om;
    mark_others(&om);
    printf("\n1. peak: in-process FMA loops, GFLOP/s (1 FMA = 2 flops), all threads at once\n");
    printf("  %-26s", "isa");
    for (int i = 0; i < g_n_nt; i++) printf("  %7d thr", g_nt[i]);
    printf("\n");
    for (int k = 0; k < PK_COUNT; k++) {
        printf("  %-26s", peak_names[k]);
        if (!peak_avail[k]) { printf("  n/a (%s)\n", peak_why[k]); continue; }
        for (int i = 0; i < g_n_nt; i++) {
            peak_gf[k][i] = measure_peak((peak_kind)k, g_nt[i], target, reps);
            printf("  %11.1f", peak_gf[k][i]);
        }
        printf("\n");
    }
    print_others(&om);
}

// ---- 2. the registry -----------------------------------------------------------------------------
typedef struct { qlora_isa isa; qlora_kernel_op op; qlora_type type; qlora__any_fn fn; const char *name; int prio, mr, nr; } kentry;
static const kentry registry[] = {
#ifdef QLORA_GENERATED_KERNELS
#define QLORA_KERNEL(isa, op, type, fn, prio, mr, nr) { isa, op, type, (qlora__any_fn)fn, #fn, prio, mr, nr },
#include "kernels_generated/qlora_kernels.inc"
#undef QLORA_KERNEL
#endif
    { QLORA_ISA_REF, QLORA_OP_COUNT, QLORA_TYPE_COUNT, NULL, NULL, 0, 0, 0 }
};

static unsigned g_cpu;
static int cpu_has(qlora_isa isa) {
    switch (isa) {
    case QLORA_ISA_REF: case QLORA_ISA_SCALAR: return 1;
    case QLORA_ISA_AVX2: return (g_cpu & QLORA_CPU_AVX2) != 0;
    case QLORA_ISA_AVX512: return (g_cpu & QLORA_CPU_AVX512) != 0;
    case QLORA_ISA_AVX512BF16: return (g_cpu & QLORA_CPU_AVX512BF16) != 0;
    case QLORA_ISA_AMX:    return (g_cpu & QLORA_CPU_AMX) != 0;
    case QLORA_ISA_NEON: return (g_cpu & QLORA_CPU_NEON) != 0;
    default: return 0;   // an ISA this bench does not know yet: not run
    }
}
// The single-core peak a gemm micro-kernel of an ISA is compared with: its own FMA loop (scalar
// code: AVX2 f32); NULL name and 0 when not measured.
static double isa_peak1(qlora_isa isa, const char **name) {
    peak_kind k = isa == QLORA_ISA_AVX512 ? PK_AVX512 : isa == QLORA_ISA_AVX512BF16 ? PK_BF16 : isa == QLORA_ISA_AMX ? PK_AMX :
                  isa == QLORA_ISA_AVX2 || isa == QLORA_ISA_SCALAR ? PK_AVX2 : PK_COUNT;
    *name = NULL;
    if (k == PK_COUNT || !peak_avail[k]) return 0;
    *name = peak_names[k];
    return peak_gf[k][0];
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint32_t rnd_u32(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return (uint32_t)(rng >> 32); }
static float rnd_f(float lo, float hi) { return lo + (hi - lo) * (float)(rnd_u32() >> 8) / 16777216.0f; }

static size_t row_bytes(qlora_type t, size_t n) {
    if (t == QLORA_TYPE_INT8) return n;
    if (qlora_type_is_bnb(t)) return n / 2;
    return qlora_ggml_row_bytes(t, n);
}
// n weights of type t with valid random content (finite f16/bf16 values and ggml scales).
static void fill_weights(qlora_type t, uint8_t *w, size_t n) {
    size_t nb = row_bytes(t, n), i;
    for (i = 0; i < nb; i++) w[i] = (uint8_t)rnd_u32();
    switch (t) {
    case QLORA_TYPE_F32: for (i = 0; i < n; i++) { float v = rnd_f(-1, 1); memcpy(w + 4 * i, &v, 4); } break;
    case QLORA_TYPE_F16: for (i = 0; i < n; i++) { uint16_t h = qlora__f32_to_fp16(rnd_f(-1, 1)); memcpy(w + 2 * i, &h, 2); } break;
    case QLORA_TYPE_BF16: for (i = 0; i < n; i++) { uint16_t h = qlora__f32_to_bf16(rnd_f(-1, 1)); memcpy(w + 2 * i, &h, 2); } break;
    case QLORA_TYPE_Q8_0: case QLORA_TYPE_Q4_0: case QLORA_TYPE_Q4_1: {
        size_t bb = t == QLORA_TYPE_Q8_0 ? 34 : t == QLORA_TYPE_Q4_0 ? 18 : 20;
        for (size_t b = 0; b < n / 32; b++) {
            uint16_t d = qlora__f32_to_fp16(rnd_f(0.001f, 0.05f)), m = qlora__f32_to_fp16(rnd_f(-0.4f, 0.0f));
            memcpy(w + b * bb, &d, 2);
            if (t == QLORA_TYPE_Q4_1) memcpy(w + b * bb + 2, &m, 2);
        }
    } break;
    default: break;   // bnb: random code bytes are valid data
    }
}

#define BENCH_BS 64          // bnb block size
#define DOT_ROWS 64          // dot: cycle through this many rows (all in L2)

typedef struct {
    const kentry *k;
    size_t n, rbytes;
    uint8_t *w;              // DOT_ROWS rows of rbytes (deq: one segment of n)
    float *scales;           // DOT_ROWS * n / bs (deq: n / bs)
    float *x, *out;          // dot: x[n]; deq: out[n]
} kern_arg;

static void run_dot(void *arg, long iters) {
    kern_arg *a = (kern_arg *)arg;
    qlora_dot_fn fn = (qlora_dot_fn)a->k->fn;
    size_t spr = a->n / BENCH_BS;
    float s = 0;
    for (long it = 0; it < iters; it++) {
        size_t r = (size_t)it % DOT_ROWS;
        s += fn(a->w + r * a->rbytes, a->scales + r * spr, a->x, a->n, BENCH_BS);
    }
    g_sink += s;
}
static void run_deq(void *arg, long iters) {
    kern_arg *a = (kern_arg *)arg;
    qlora_deq_fn fn = (qlora_deq_fn)a->k->fn;
    for (long it = 0; it < iters; it++) fn(a->w, a->scales, a->out, a->n, BENCH_BS);
    g_sink += a->out[a->n - 1];
}

static double bench_dot(const kentry *k, size_t n, double target, int reps) {
    kern_arg a;
    memset(&a, 0, sizeof a);
    a.k = k; a.n = n; a.rbytes = row_bytes(k->type, n);
    a.w = (uint8_t *)malloc(a.rbytes * DOT_ROWS + 64);
    a.scales = (float *)malloc(sizeof(float) * (DOT_ROWS * n / BENCH_BS + 1));
    a.x = (float *)malloc(sizeof(float) * n);
    for (size_t r = 0; r < DOT_ROWS; r++) fill_weights(k->type, a.w + r * a.rbytes, n);
    for (size_t i = 0; i < DOT_ROWS * n / BENCH_BS; i++) a.scales[i] = rnd_f(0.05f, 2.0f);
    for (size_t i = 0; i < n; i++) a.x[i] = rnd_f(-1, 1);
    double t = best_per_iter(run_dot, &a, target, reps);
    free(a.w); free(a.scales); free(a.x);
    return t;
}
static double bench_deq(const kentry *k, size_t n, double target, int reps) {
    kern_arg a;
    memset(&a, 0, sizeof a);
    a.k = k; a.n = n; a.rbytes = row_bytes(k->type, n);
    a.w = (uint8_t *)malloc(a.rbytes + 64);
    a.scales = (float *)malloc(sizeof(float) * (n / BENCH_BS + 1));
    a.out = (float *)malloc(sizeof(float) * n);
    fill_weights(k->type, a.w, n);
    for (size_t i = 0; i < n / BENCH_BS; i++) a.scales[i] = rnd_f(0.05f, 2.0f);
    double t = best_per_iter(run_deq, &a, target, reps);
    free(a.w); free(a.scales); free(a.out);
    return t;
}

// cvt_bf16: n floats -> n/2 bf16 pairs.
typedef struct { qlora_cvt_bf16_fn fn; size_t n; float *x; uint32_t *out; } cvt_arg;
static void run_cvt(void *arg, long iters) {
    cvt_arg *c = (cvt_arg *)arg;
    for (long it = 0; it < iters; it++) c->fn(c->x, c->n, c->out);
    g_sink += (float)c->out[0];
}
static double bench_cvt(const kentry *k, size_t n, double target, int reps) {
    cvt_arg c;
    c.fn = (qlora_cvt_bf16_fn)k->fn; c.n = n;
    c.x = (float *)malloc(sizeof(float) * n);
    c.out = (uint32_t *)malloc(sizeof(uint32_t) * (n / 2 + 1));
    for (size_t i = 0; i < n; i++) c.x[i] = rnd_f(-1, 1);
    double t = best_per_iter(run_cvt, &c, target, reps);
    free(c.x); free(c.out);
    return t;
}

// gemm micro-kernel: A (MR x K) against npan packed B panels (K x NR each, ~256 KiB in all, so L2),
// writing one MR x (npan*NR) row block of C - the inner loop of the driver. The bf16 tile takes the
// same K as K/2 u32 pairs (f32 words halve: the same 2*MR*NR*K flops from half the bytes).
#define GEMM_K 576
typedef struct { const kentry *k; size_t npan, kw; void *A, *B; float *C; } gemm_arg;   // kw: K in words
static void run_gemm(void *arg, long iters) {
    gemm_arg *g = (gemm_arg *)arg;
    int mr = g->k->mr, nr = g->k->nr;
    size_t ldc = g->npan * (size_t)nr, pan = g->kw * (size_t)nr;
    if (g->k->op == QLORA_OP_GEMM) {
        qlora_gemm_fn fn = (qlora_gemm_fn)g->k->fn;
        for (long it = 0; it < iters; it++)
            for (size_t p = 0; p < g->npan; p++)
                fn(g->kw, (const float *)g->A, g->kw, (const float *)g->B + p * pan, g->C + p * (size_t)nr, ldc, mr, nr, 0);
    } else {
        qlora_gemm_bf16_fn fn = (qlora_gemm_bf16_fn)g->k->fn;
        for (long it = 0; it < iters; it++)
            for (size_t p = 0; p < g->npan; p++)
                fn(g->kw, (const uint32_t *)g->A, g->kw, (const uint32_t *)g->B + p * pan, g->C + p * (size_t)nr, ldc, mr, nr, 0);
    }
    g_sink += g->C[0];
}
static double bench_gemm(const kentry *k, double target, int reps, size_t *npan_out) {
    gemm_arg g;
    int bf = k->op == QLORA_OP_GEMM_BF16;
    g.k = k; g.kw = bf ? GEMM_K / 2 : GEMM_K;
    size_t panel = g.kw * (size_t)k->nr, na = (size_t)k->mr * g.kw;   // words (4 bytes) each
    g.npan = (256u * 1024u / 4u) / panel;
    if (g.npan < 1) g.npan = 1;
    uint32_t *A = (uint32_t *)malloc(4 * na), *B = (uint32_t *)malloc(4 * panel * g.npan);
    g.C = (float *)malloc(sizeof(float) * (size_t)k->mr * g.npan * (size_t)k->nr);
    for (size_t i = 0; i < na + panel * g.npan; i++) {
        uint32_t *w = i < na ? A + i : B + (i - na);
        float v = rnd_f(-1, 1);
        if (bf) *w = (uint32_t)qlora__f32_to_bf16(v) | (uint32_t)qlora__f32_to_bf16(rnd_f(-1, 1)) << 16;
        else memcpy(w, &v, 4);
    }
    g.A = A; g.B = B;
    double t = best_per_iter(run_gemm, &g, target, reps);
    free(A); free(B); free(g.C);
    *npan_out = g.npan;
    return t / (double)g.npan;   // seconds per micro-kernel call
}

static void bench_registry(void) {
    double target = g_quick ? 0.006 : 0.04;
    int reps = g_quick ? 2 : 5;
    const size_t dot_n[2] = { 576, 1536 }, deq_n = 576 * 64;
    printf("\n2. registry kernels this CPU runs (bnb block size %d; hot cache)\n", BENCH_BS);
    printf("  dot: %d rows cycled, GFLOP/s = 2n/t      %22s %22s\n", DOT_ROWS, "n=576", "n=1536");
    for (const kentry *k = registry; k->fn; k++) {   // up to the sentinel
        if (k->op != QLORA_OP_DOT || !cpu_has(k->isa)) continue;
        printf("  %-40s", k->name);
        for (int j = 0; j < 2; j++) {
            double t = bench_dot(k, dot_n[j], target, reps);
            printf("  %7.1f ns %6.1f GF/s", t * 1e9, 2.0 * (double)dot_n[j] / t * 1e-9);
        }
        printf("\n");
    }
    printf("  deq: n=%zu elements                         G elem/s\n", deq_n);
    for (const kentry *k = registry; k->fn; k++) {   // up to the sentinel
        if (k->op != QLORA_OP_DEQ || !cpu_has(k->isa)) continue;
        double t = bench_deq(k, deq_n, target, reps);
        printf("  %-40s  %8.2f   (%.1f us)\n", k->name, (double)deq_n / t * 1e-9, t * 1e6);
    }
    printf("  cvt_bf16: n=%zu floats                      G elem/s\n", deq_n);
    for (const kentry *k = registry; k->fn; k++) {
        if (k->op != QLORA_OP_CVT_BF16 || !cpu_has(k->isa)) continue;
        double t = bench_cvt(k, deq_n, target, reps);
        printf("  %-40s  %8.2f   (%.1f us)\n", k->name, (double)deq_n / t * 1e-9, t * 1e6);
    }
    printf("  gemm micro-kernels (f32; bf16 pairs): m=MR n=NR K=%d, B panels ~256 KiB (L2); %% of 1-core peak\n", GEMM_K);
    for (const kentry *k = registry; k->fn; k++) {
        // f32 tiles, and bf16-pair tiles (QLORA_OP_GEMM_BF16); a GEMM entry of another type
        // would have a panel format this bench does not know: skipped
        int ok = (k->op == QLORA_OP_GEMM && k->type == QLORA_TYPE_F32) || k->op == QLORA_OP_GEMM_BF16;
        if (!ok || !cpu_has(k->isa) || k->mr <= 0 || k->nr <= 0) continue;
        size_t npan;
        double t = bench_gemm(k, target * 2, reps, &npan);
        const char *pname;
        double gf = 2.0 * k->mr * k->nr * GEMM_K / t * 1e-9, pk = isa_peak1(k->isa, &pname);
        printf("  %-40s  MR=%d NR=%-2d %2zu panels %7.1f GFLOP/s", k->name, k->mr, k->nr, npan, gf);
        if (pk > 0) printf("  %5.1f%% of %s\n", 100.0 * gf / pk, pname);
        else printf("  (no measured peak for this ISA)\n");
    }
}

// ---- 3. the quantized GEMM drivers ---------------------------------------------------------------
typedef struct { const char *name; qlora_type type; size_t out, in, M; } drv_case;

// W (out x in): NF4 + double quant from a random f32 matrix, or random ggml blocks.
static int make_weight(qlora_tensor *W, qlora_type t, size_t out, size_t in) {
    memset(W, 0, sizeof *W);
    size_t n = out * in;
    if (qlora_type_is_bnb(t)) {
        qlora_tensor src;
        memset(&src, 0, sizeof src);
        src.type = QLORA_TYPE_F32; src.ne[0] = (int64_t)in; src.ne[1] = (int64_t)out; src.ne[2] = src.ne[3] = 1; src.n_dims = 2;
        float *f = (float *)malloc(sizeof(float) * n);
        if (!f) return 0;
        for (size_t i = 0; i < n; i++) f[i] = rnd_f(-1, 1) * rnd_f(0.1f, 1.0f);
        src.data = f;
        qlora_result r = qlora_tensor_quantize(&src, t, BENCH_BS, 1, W);
        free(f);
        return r == QLORA_OK;
    }
    W->type = t; W->ne[0] = (int64_t)in; W->ne[1] = (int64_t)out; W->ne[2] = W->ne[3] = 1; W->n_dims = 2;
    W->data = malloc(row_bytes(t, n) + 64);
    if (!W->data) return 0;
    W->owns_data = 1;
    fill_weights(t, (uint8_t *)W->data, n);
    return 1;
}
static void free_weight(qlora_tensor *W) {
    if (qlora_type_is_bnb(W->type)) { qlora_tensor_free(W); return; }
    free(W->data);
    W->data = NULL;
}

// Best seconds of one direction after one warm-up: at least min_reps runs and on until min_s has
// passed (more chances of a quiet moment on a shared machine); -1 on error.
//   dir 0: fwd  Y = X deq(W)^T      qlora_matmul                          X: M x in  -> Y: M x out
//   dir 1: bwd  dX += dY deq(W)     qlora__gemm_w(trans_w 0, acc 1)       dY: M x out -> dX: M x in
//   dir 2, 3: the same through the bf16 x bf16 -> f32 GEMM (training with --bf16)
static const char *const dir_names[4] = { "fwd", "bwd", "fwd bf16", "bwd bf16" };
static qlora_result run_driver(qlora_ctx *ctx, const qlora_tensor *W, int dir, size_t M, const float *in_act, float *out_act) {
    size_t in = (size_t)W->ne[0], out = (size_t)W->ne[1];
    if (dir == 0) return qlora_matmul(ctx, W, in_act, M, out_act);
    if (dir == 2) return qlora__gemm_w(ctx, W, 1, in_act, in, M, out_act, out, 0, 1);
    return qlora__gemm_w(ctx, W, 0, in_act, out, M, out_act, in, 1, dir == 3);
}
static double time_driver(qlora_ctx *ctx, const qlora_tensor *W, int dir, size_t M, const float *in_act, float *out_act,
                          int min_reps, double min_s) {
    double best = 1e30, start = now_s();
    for (int r = 0; r <= min_reps || now_s() - start < min_s; r++) {
        double t0 = now_s();
        qlora_result res = run_driver(ctx, W, dir, M, in_act, out_act);
        double el = now_s() - t0;
        if (res != QLORA_OK) { fprintf(stderr, "driver: %s\n", qlora_ctx_error(ctx)); return -1; }
        if (r > 0 && el < best) best = el;
    }
    return best;
}

static double g_fwd_pct = -1, g_bwd_pct = -1;

static void bench_drivers(void) {
    const drv_case cases[] = {
        { "nf4+dq64", QLORA_TYPE_NF4, 576, 576, 1024 },     // q/o proj (k/v are 192x576)
        { "nf4+dq64", QLORA_TYPE_NF4, 1536, 576, 1024 },    // gate/up proj
        { "nf4+dq64", QLORA_TYPE_NF4, 576, 1536, 1024 },    // down proj
        { "q8_0", QLORA_TYPE_Q8_0, 49152, 576, 256 },       // lm_head (tied embedding)
    };
    const int ncase = (int)(sizeof cases / sizeof cases[0]);
    const int nts[2] = { 1, 2 };
    int reps = g_quick ? 2 : 5;
    double min_s = g_quick ? 0.1 : 0.4;
    qlora_ctx *ctx[2] = { NULL, NULL };
    for (int i = 0; i < 2; i++) {
        qlora_ctx_config cc;
        memset(&cc, 0, sizeof cc);
        cc.n_threads = nts[i];
        if (qlora_ctx_create(&cc, &ctx[i]) != QLORA_OK) { printf("qlora_ctx_create(%d threads) failed\n", nts[i]); return; }
    }
    const char *gname = NULL, *bname = NULL;
    int mr = 0, nr = 0, bmr = 0, bnr = 0;
    qlora_ctx_gemm(ctx[0], &mr, &nr, &gname);
    qlora_ctx_gemm_bf16(ctx[0], &bmr, &bnr, &bname);
    // The bf16 rows only where a SIMD bf16 tile runs (the scalar one would take minutes on lm_head).
    int ndir = bname && !strstr(bname, "scalar") && !strstr(bname, "ref") ? 4 : 2;
    printf("\n3. quantized GEMM drivers, SmolLM2-135M training shapes (W out x in; %s %dx%d", gname ? gname : "?", mr, nr);
    if (ndir == 4) printf(", %s %dx%d)\n", bname, bmr, bnr);
    else printf("; bf16 rows skipped: bf16 tile is %s)\n", bname ? bname : "?");
    printf("  fwd Y = X deq(W)^T (qlora_matmul), bwd dX += dY deq(W) (qlora__gemm_w); GFLOP/s = 2*M*in*out/t;\n");
    {
        const char *nm = NULL;
        qlora_ctx_config cc0; memset(&cc0, 0, sizeof cc0); cc0.n_threads = 1;
        qlora_ctx *c0 = NULL;
        if (qlora_ctx_create(&cc0, &c0) == QLORA_OK) { qlora_ctx_gemm_bf16(c0, NULL, NULL, &nm); qlora_ctx_destroy(c0); }
        g_bf16_amx = nm && strstr(nm, "__amx") != NULL;
    }
    printf("  %% of the %s f32 FMA peak (bf16 rows: of the %s peak) for that many threads;\n", f32_peak_name(),
           g_bf16_amx ? "AMX tdpbf16ps" : "vdpbf16ps");
    printf("  best of >= %d runs (>= %.1f s) after a warm-up\n", reps, min_s);
    others_mark om;
    mark_others(&om);
    printf("  %-9s %-11s %5s %-8s  %24s  %24s\n", "W", "out x in", "M", "dir", "1 thread", "2 threads");
    for (int c = 0; c < ncase; c++) {
        const drv_case *dc = &cases[c];
        qlora_tensor W;
        if (!make_weight(&W, dc->type, dc->out, dc->in)) { printf("  %s %zux%zu: could not build W\n", dc->name, dc->out, dc->in); continue; }
        size_t big = dc->M * (dc->in > dc->out ? dc->in : dc->out);
        float *a = (float *)malloc(sizeof(float) * big), *b = (float *)calloc(big, sizeof(float));
        if (!a || !b) { printf("  out of memory\n"); free(a); free(b); free_weight(&W); continue; }
        for (size_t i = 0; i < big; i++) a[i] = rnd_f(-1, 1);
        double flops = 2.0 * (double)dc->M * (double)dc->in * (double)dc->out;
        for (int dir = 0; dir < ndir; dir++) {
            char shape[32];
            snprintf(shape, sizeof shape, "%zux%zu", dc->out, dc->in);
            printf("  %-9s %-11s %5zu %-8s", dc->name, shape, dc->M, dir_names[dir]);
            for (int i = 0; i < 2; i++) {
                memset(b, 0, sizeof(float) * big);
                double t = time_driver(ctx[i], &W, dir, dc->M, a, b, reps, min_s);
                if (t < 0) { printf("  %24s", "error"); continue; }
                double gf = flops / t * 1e-9, pk = dir < 2 ? f32_peak(nts[i]) : bf16_peak(nts[i]);
                double pct = pk > 0 ? 100.0 * gf / pk : -1;
                char cell[64];
                if (pct >= 0) snprintf(cell, sizeof cell, "%7.1f ms %6.1f GF %5.1f%%", t * 1e3, gf, pct);
                else snprintf(cell, sizeof cell, "%7.1f ms %6.1f GF   n/a", t * 1e3, gf);
                printf("  %24s", cell);
                if (nts[i] == 2 && dc->type == QLORA_TYPE_NF4 && dc->out == 576 && dc->in == 1536) {
                    if (dir == 0) g_fwd_pct = pct;
                    if (dir == 1) g_bwd_pct = pct;
                }
            }
            printf("\n");
        }
        free(a); free(b);
        free_weight(&W);
    }
    print_others(&om);
    qlora_ctx_destroy(ctx[0]);
    qlora_ctx_destroy(ctx[1]);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) g_quick = 1;
        else { fprintf(stderr, "usage: %s [--quick]\n", argv[0]); return 2; }
    }
    double t0 = now_s();
    g_cpu = qlora_cpu_features();
    printf("bench_kernels: qlora.h %s, %d online CPUs, library cpu features: avx2=%s avx512=%s neon=%s%s\n",
           qlora_version(), online_cpus(), (g_cpu & QLORA_CPU_AVX2) ? "yes" : "no", (g_cpu & QLORA_CPU_AVX512) ? "yes" : "no",
           (g_cpu & QLORA_CPU_NEON) ? "yes" : "no", g_quick ? " (--quick)" : "");
    bench_peaks();
    bench_registry();
    bench_drivers();
    printf("\n(%.1f s)\n", now_s() - t0);
    char f[32], b[32];
    if (g_fwd_pct >= 0) snprintf(f, sizeof f, "%.1f", g_fwd_pct); else snprintf(f, sizeof f, "n/a");
    if (g_bwd_pct >= 0) snprintf(b, sizeof b, "%.1f", g_bwd_pct); else snprintf(b, sizeof b, "n/a");
    printf("kernels: gemm_fwd_pct_peak=%s gemm_bwd_pct_peak=%s\n", f, b);
    return 0;
}
