// tests/test_kernels.c - every registered dot kernel against its qlora__ref_ spec, the dispatch
// (force_isa), and qlora_matvec / qlora_matmul against dequantize-then-dot.
//
// Error measure (QLORA_DOT_TOLERANCE, wip/kernels_api.h): for a dot of n terms
//     |got - ref| <= QLORA_DOT_TOLERANCE * S,   S = sum_i |deq(w_i) * x_i|   (computed in double)
// i.e. the error is relative to the magnitude of the terms, not of the (possibly cancelling) sum.
//
//   ./build/test_kernels           run the tests
//   ./build/test_kernels --bench   also print GFLOP/s of dot nf4 / q4_1 per ISA at n = 576, 1536
#define QLORA_IMPLEMENTATION
#include "qlora.h"
#include "qlora_test.h"
#include <time.h>

// ---- registry ---------------------------------------------------------------------------------
typedef struct { qlora_isa isa; qlora_kernel_op op; qlora_type type; qlora__any_fn fn; const char *name; int prio, mr, nr; } kentry;
static const kentry registry[] = {
#ifdef QLORA_GENERATED_KERNELS
#define QLORA_KERNEL(isa, op, type, fn, prio, mr, nr) { isa, op, type, (qlora__any_fn)fn, #fn, prio, mr, nr },
#include "kernels_generated/qlora_kernels.inc"
#undef QLORA_KERNEL
#endif
    { QLORA_ISA_REF, QLORA_OP_COUNT, QLORA_TYPE_COUNT, NULL, NULL, 0, 0, 0 }
};
#define N_REGISTRY (sizeof registry / sizeof registry[0] - 1)

static unsigned g_cpu;
static int cpu_has(qlora_isa isa) {
    if (isa == QLORA_ISA_AVX2) return (g_cpu & QLORA_CPU_AVX2) != 0;
    if (isa == QLORA_ISA_AVX512) return (g_cpu & QLORA_CPU_AVX512) != 0;
    if (isa == QLORA_ISA_AVX512BF16) return (g_cpu & QLORA_CPU_AVX512BF16) != 0;
    if (isa == QLORA_ISA_AMX) return (g_cpu & QLORA_CPU_AMX) != 0;
    if (isa == QLORA_ISA_NEON) return (g_cpu & QLORA_CPU_NEON) != 0;
    return 1;
}

// ---- random data ------------------------------------------------------------------------------
static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint32_t rnd_u32(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return (uint32_t)(rng >> 32); }
static float rnd_f(float lo, float hi) { return lo + (hi - lo) * (float)(rnd_u32() >> 8) / 16777216.0f; }

// A row of n weights of type t (+ bnb scales) with random content.
typedef struct { uint8_t *w; float *scales; size_t n, bs, nbytes; } row_t;
static size_t row_bytes(qlora_type t, size_t n) {
    if (t == QLORA_TYPE_INT8) return n;
    if (qlora_type_is_bnb(t)) return n / 2;
    return qlora_ggml_row_bytes(t, n);
}
static void row_make(row_t *r, qlora_type t, size_t n, size_t bs) {
    r->n = n; r->bs = bs; r->nbytes = row_bytes(t, n);
    r->w = (uint8_t *)malloc(r->nbytes + 1);
    r->scales = (float *)malloc(sizeof(float) * (bs ? n / bs + 1 : 1));
    for (size_t i = 0; i < r->nbytes; i++) r->w[i] = (uint8_t)rnd_u32();
    if (bs) for (size_t b = 0; b < n / bs; b++) r->scales[b] = rnd_f(0.05f, 2.0f);
    size_t i;
    switch (t) {
    case QLORA_TYPE_F32: for (i = 0; i < n; i++) { float v = rnd_f(-1, 1); memcpy(r->w + 4 * i, &v, 4); } break;
    case QLORA_TYPE_F16: for (i = 0; i < n; i++) { uint16_t h = qlora__f32_to_fp16(rnd_f(-1, 1)); memcpy(r->w + 2 * i, &h, 2); } break;
    case QLORA_TYPE_BF16: for (i = 0; i < n; i++) { uint16_t h = qlora__f32_to_bf16(rnd_f(-1, 1)); memcpy(r->w + 2 * i, &h, 2); } break;
    case QLORA_TYPE_Q8_0: case QLORA_TYPE_Q4_0: case QLORA_TYPE_Q4_1: {
        size_t bb = t == QLORA_TYPE_Q8_0 ? 34 : t == QLORA_TYPE_Q4_0 ? 18 : 20;
        for (size_t b = 0; b < n / 32; b++) {
            uint16_t d = qlora__f32_to_fp16(rnd_f(0.001f, 0.05f)), m = qlora__f32_to_fp16(rnd_f(-0.4f, 0.0f));
            memcpy(r->w + b * bb, &d, 2);
            if (t == QLORA_TYPE_Q4_1) memcpy(r->w + b * bb + 2, &m, 2);
        }
    } break;
    default: break;   // bnb: random code bytes are valid data
    }
}
static void row_free(row_t *r) { free(r->w); free(r->scales); }

// Element-wise dequantization through the quantization module (the definition of deq()).
static void row_deq(qlora_type t, const row_t *r, float *out) {
    size_t n = r->n;
    switch (t) {
    case QLORA_TYPE_F32: memcpy(out, r->w, n * 4); break;
    case QLORA_TYPE_F16: for (size_t i = 0; i < n; i++) out[i] = qlora__fp16_to_f32(qlora__rd_u16(r->w + 2 * i)); break;
    case QLORA_TYPE_BF16: for (size_t i = 0; i < n; i++) out[i] = qlora__bf16_to_f32(qlora__rd_u16(r->w + 2 * i)); break;
    case QLORA_TYPE_Q8_0: case QLORA_TYPE_Q4_0: case QLORA_TYPE_Q4_1:
        CHECK(qlora_ggml_dequantize(t, r->w, n, out) == QLORA_OK); break;
    default:
        if ((r->bs & (r->bs - 1)) == 0 && r->bs >= 32) {
            CHECK(qlora_bnb_dequantize(t, r->w, r->scales, n, (int)r->bs, out) == QLORA_OK);
        } else {   // block sizes qlora_bnb_dequantize refuses (kernel tail paths): same formula by hand
            for (size_t i = 0; i < n; i++) {
                float s = r->scales[i / r->bs];
                if (t == QLORA_TYPE_INT8) out[i] = (float)(int8_t)r->w[i] / 127.0f * s;
                else out[i] = qlora_bnb_code4(t)[(i & 1) ? (r->w[i / 2] & 15) : (r->w[i / 2] >> 4)] * s;
            }
        }
    }
}

// ---- 1. every registered kernel vs the reference ----------------------------------------------
static void test_kernel(const kentry *k) {
    qlora_type t = k->type;
    size_t bss_bnb[] = { 64, 32, 256, 48 }, bss_none[] = { 0 };
    size_t *bss = qlora_type_is_bnb(t) ? bss_bnb : bss_none;
    size_t nbs = qlora_type_is_bnb(t) ? 4 : 1;
    double worst = 0.0;
    int cases = 0;
    for (size_t ib = 0; ib < nbs; ib++) {
        size_t bs = bss[ib];
        size_t sizes[8], ns = 0;
        if (qlora_type_is_bnb(t)) {
            size_t big = (4096 + 64 + bs - 1) / bs * bs;
            sizes[0] = bs; sizes[1] = 2 * bs; sizes[2] = 3 * bs; sizes[3] = 5 * bs; sizes[4] = 9 * bs; sizes[5] = big; ns = 6;
        } else if (t == QLORA_TYPE_Q8_0 || t == QLORA_TYPE_Q4_0 || t == QLORA_TYPE_Q4_1) {
            sizes[0] = 32; sizes[1] = 64; sizes[2] = 96; sizes[3] = 160; sizes[4] = 576; sizes[5] = 4160; ns = 6;
        } else {
            sizes[0] = 1; sizes[1] = 7; sizes[2] = 31; sizes[3] = 33; sizes[4] = 64; sizes[5] = 100; sizes[6] = 4099; sizes[7] = 4160; ns = 8;
        }
        for (size_t is = 0; is < ns; is++) {
            size_t n = sizes[is];
            row_t r;
            row_make(&r, t, n, bs);
            // x at an odd float offset so nothing is 32-byte aligned
            float *xbuf = (float *)malloc(sizeof(float) * (n + 3)), *x = xbuf + 3;
            float *deq = (float *)malloc(sizeof(float) * n);
            for (size_t i = 0; i < n; i++) x[i] = rnd_f(-1, 1);
            row_deq(t, &r, deq);
            double exact = 0.0, S = 0.0;
            for (size_t i = 0; i < n; i++) { exact += (double)deq[i] * x[i]; S += fabs((double)deq[i] * x[i]); }
            float ref = qlora__ref_dot[t](r.w, r.scales, x, n, bs);
            float got = ((qlora_dot_fn)k->fn)(r.w, r.scales, x, n, bs);
            double err = fabs((double)got - (double)ref), lim = QLORA_DOT_TOLERANCE * S + 1e-30;
            CHECK_MSG(err <= lim, "%s n=%zu bs=%zu: got %.9g ref %.9g (err %.3g > %.3g)", k->name, n, bs, got, ref, err, lim);
            // the reference itself is sum deq(w_i) x_i (float products, double sum)
            CHECK_MSG(fabs((double)ref - exact) <= 1e-6 * S + 1e-30, "ref %s n=%zu: %.9g vs exact %.9g", qlora_type_name(t), n, ref, exact);
            if (S > 0 && err / S > worst) worst = err / S;
            cases++;
            free(xbuf); free(deq); row_free(&r);
        }
    }
    printf("  %-32s %2d cases, worst |err|/S = %.2e (tol %.0e)\n", k->name, cases, worst, (double)QLORA_DOT_TOLERANCE);
}

// ---- 1c. deq kernels: bit-exact against the quantization module, nothing written past n ------
static void test_deq_kernel(const kentry *k) {
    qlora_type t = k->type;
    qlora_deq_fn fn = (qlora_deq_fn)k->fn;
    int bnb = qlora_type_is_bnb(t), ggml = t == QLORA_TYPE_Q8_0 || t == QLORA_TYPE_Q4_0 || t == QLORA_TYPE_Q4_1;
    size_t bss_bnb[] = { 64, 32, 256, 48 }, bss_none[] = { 0 };
    size_t *bss = bnb ? bss_bnb : bss_none, nbs = bnb ? 4 : 1;
    int cases = 0;
    for (size_t ib = 0; ib < nbs; ib++) {
        size_t bs = bss[ib], unit = bnb ? bs : ggml ? 32 : 1;
        size_t mult[] = { 1, 2, 3, 7, 64 };
        for (size_t im = 0; im < 5; im++) {
            size_t n = unit * mult[im] + (unit == 1 ? im : 0);   // floats: odd lengths too
            row_t r;
            row_make(&r, t, n, bs);
            float *want = (float *)malloc(sizeof(float) * n), *got = (float *)malloc(sizeof(float) * (n + 1));
            row_deq(t, &r, want);
            for (size_t i = 0; i <= n; i++) got[i] = NAN;
            got[n] = 12345.0f;   // canary
            fn(r.w, r.scales, got, n, bs);
            size_t bad = 0;
            for (size_t i = 0; i < n; i++) if (memcmp(&got[i], &want[i], sizeof(float)) != 0) bad++;
            CHECK_MSG(bad == 0, "%s n=%zu bs=%zu: %zu of %zu values differ from the quantization module", k->name, n, bs, bad, n);
            CHECK_MSG(got[n] == 12345.0f, "%s n=%zu: wrote past the end", k->name, n);
            cases++;
            free(want); free(got); row_free(&r);
        }
    }
    printf("  %-32s %2d cases, bit-exact\n", k->name, cases);
}

// ---- 1d. gemm micro-kernels: every m <= MR, n <= NR, K with edges, acc 0/1 ----------------------
static void test_gemm_kernel(const kentry *k) {
    qlora_gemm_fn fn = (qlora_gemm_fn)k->fn;
    int MR = k->mr, NR = k->nr, cases = 0;
    double worst = 0;
    size_t Ks[] = { 0, 1, 5, 64, 577 };
    for (size_t ik = 0; ik < 5; ik++) {
        size_t K = Ks[ik], lda = K + 3, ldc = (size_t)NR + 5;
        float *A = (float *)malloc(sizeof(float) * ((size_t)MR * lda + 1));
        float *B = (float *)malloc(sizeof(float) * (K * (size_t)NR + 1));
        float *C = (float *)malloc(sizeof(float) * (size_t)MR * ldc), *C0 = (float *)malloc(sizeof(float) * (size_t)MR * ldc);
        for (size_t i = 0; i < (size_t)MR * lda; i++) A[i] = rnd_f(-1, 1);
        for (int m = 1; m <= MR; m++)
            for (int n = 1; n <= NR; n += (n < 3 || n >= NR - 2) ? 1 : NR / 4)
                for (int acc = 0; acc <= 1; acc++) {
                    for (size_t i = 0; i < K * (size_t)NR; i++) B[i] = (i % (size_t)NR) < (size_t)n ? rnd_f(-1, 1) : 0.0f;
                    for (size_t i = 0; i < (size_t)MR * ldc; i++) C0[i] = C[i] = acc ? rnd_f(-1, 1) : NAN;   // poisoned when acc = 0
                    for (size_t i = 0; i < (size_t)MR * ldc; i++) if ((int)(i / ldc) >= m || (int)(i % ldc) >= n) C0[i] = C[i] = -777.0f;
                    fn(K, A, lda, B, C, ldc, m, n, acc);
                    for (int i = 0; i < MR; i++)
                        for (size_t j = 0; j < ldc; j++) {
                            float got = C[(size_t)i * ldc + j];
                            if (i >= m || (int)j >= n) {
                                CHECK_MSG(got == -777.0f, "%s m=%d n=%d K=%zu: wrote outside the tile at (%d, %zu)", k->name, m, n, K, i, j);
                                continue;
                            }
                            double e = acc ? (double)C0[(size_t)i * ldc + j] : 0.0, S = fabs(e);
                            for (size_t kk = 0; kk < K; kk++) {
                                double p = (double)A[(size_t)i * lda + kk] * B[kk * (size_t)NR + j];
                                e += p; S += fabs(p);
                            }
                            double err = fabs((double)got - e);
                            CHECK_MSG(err <= QLORA_DOT_TOLERANCE * S + 1e-30, "%s m=%d n=%d K=%zu acc=%d (%d,%zu): %.9g vs %.9g",
                                      k->name, m, n, K, acc, i, j, got, e);
                            if (S > 0 && err / S > worst) worst = err / S;
                        }
                    cases++;
                }
        free(A); free(B); free(C); free(C0);
    }
    printf("  %-32s %dx%d, %3d cases, worst |err|/S = %.2e\n", k->name, MR, NR, cases, worst);
}

// ---- 1e. bf16: the pair converter is round-to-nearest-even, the GEMM sums the bf16 products ----
static void test_cvt_kernel(const kentry *k) {
    qlora_cvt_bf16_fn fn = (qlora_cvt_bf16_fn)k->fn;
    size_t ns[] = { 1, 2, 15, 16, 17, 31, 32, 33, 63, 100, 1537 };
    int cases = 0;
    for (size_t in = 0; in < sizeof ns / sizeof ns[0]; in++) {
        size_t n = ns[in], np = (n + 1) / 2;
        float *x = (float *)malloc(sizeof(float) * n);
        uint32_t *got = (uint32_t *)malloc(sizeof(uint32_t) * (np + 1)), *want = (uint32_t *)malloc(sizeof(uint32_t) * np);
        for (size_t i = 0; i < n; i++) x[i] = rnd_f(-3, 3) * (i % 7 == 0 ? 1e-3f : 1.0f);
        if (n > 3) { x[1] = 1.00390625f; x[2] = 1.01171875f; x[3] = -0.0f; }   // exact ties: to even
        if (n > 5) { uint32_t nan = 0x7fc00001u; memcpy(&x[5], &nan, 4); }
        for (size_t p = 0; p < np; p++)
            want[p] = (uint32_t)qlora__f32_to_bf16(x[2 * p]) | (2 * p + 1 < n ? (uint32_t)qlora__f32_to_bf16(x[2 * p + 1]) << 16 : 0u);
        got[np] = 0xdeadbeefu;
        fn(x, n, got);
        size_t bad = 0;
        for (size_t p = 0; p < np; p++) {
            if (got[p] == want[p]) continue;
            // a NaN must stay a NaN (payload bits may differ between instructions)
            int nan_ok = 1;
            for (int h = 0; h < 2; h++) {
                uint16_t g = (uint16_t)(got[p] >> (16 * h)), w = (uint16_t)(want[p] >> (16 * h));
                if (g != w && !((w & 0x7fff) > 0x7f80 && (g & 0x7fff) > 0x7f80)) nan_ok = 0;
            }
            if (!nan_ok) bad++;
        }
        CHECK_MSG(bad == 0, "%s n=%zu: %zu of %zu pairs differ from qlora__f32_to_bf16", k->name, n, bad, np);
        CHECK_MSG(got[np] == 0xdeadbeefu, "%s n=%zu: wrote past the end", k->name, n);
        cases++;
        free(x); free(got); free(want);
    }
    printf("  %-32s %2d cases, bit-exact\n", k->name, cases);
}

static float bf(uint32_t v, int hi) { return qlora__bf16_to_f32((uint16_t)(hi ? v >> 16 : v)); }
static void test_gemm_bf16_kernel(const kentry *k) {
    qlora_gemm_bf16_fn fn = (qlora_gemm_bf16_fn)k->fn;
    int MR = k->mr, NR = k->nr, cases = 0;
    double worst = 0;
    size_t Ks[] = { 0, 16, 32, 48, 288 };   // pairs: a multiple of 16 (the driver pads with zero pairs)
    for (size_t ik = 0; ik < 5; ik++) {
        size_t K2 = Ks[ik], lda = K2 + 3, ldc = (size_t)NR + 5;
        uint32_t *A = (uint32_t *)malloc(sizeof(uint32_t) * ((size_t)MR * lda + 1));
        uint32_t *B = (uint32_t *)malloc(sizeof(uint32_t) * (K2 * (size_t)NR + 1));
        float *C = (float *)malloc(sizeof(float) * (size_t)MR * ldc), *C0 = (float *)malloc(sizeof(float) * (size_t)MR * ldc);
        for (size_t i = 0; i < (size_t)MR * lda; i++) A[i] = (uint32_t)qlora__f32_to_bf16(rnd_f(-1, 1)) | (uint32_t)qlora__f32_to_bf16(rnd_f(-1, 1)) << 16;
        for (int m = 1; m <= MR; m++)
            for (int n = 1; n <= NR; n += (n < 3 || n >= NR - 2) ? 1 : NR / 4)
                for (int acc = 0; acc <= 1; acc++) {
                    for (size_t i = 0; i < K2 * (size_t)NR; i++)
                        B[i] = (i % (size_t)NR) < (size_t)n ? ((uint32_t)qlora__f32_to_bf16(rnd_f(-1, 1)) | (uint32_t)qlora__f32_to_bf16(rnd_f(-1, 1)) << 16) : 0u;
                    for (size_t i = 0; i < (size_t)MR * ldc; i++) C0[i] = C[i] = acc ? rnd_f(-1, 1) : NAN;
                    for (size_t i = 0; i < (size_t)MR * ldc; i++) if ((int)(i / ldc) >= m || (int)(i % ldc) >= n) C0[i] = C[i] = -777.0f;
                    fn(K2, A, lda, B, C, ldc, m, n, acc);
                    for (int i = 0; i < MR; i++)
                        for (size_t j = 0; j < ldc; j++) {
                            float got = C[(size_t)i * ldc + j];
                            if (i >= m || (int)j >= n) {
                                CHECK_MSG(got == -777.0f, "%s m=%d n=%d K2=%zu: wrote outside the tile at (%d, %zu)", k->name, m, n, K2, i, j);
                                continue;
                            }
                            double e = acc ? (double)C0[(size_t)i * ldc + j] : 0.0, S = fabs(e);
                            for (size_t p = 0; p < K2; p++)
                                for (int h = 0; h < 2; h++) {
                                    double pr = (double)bf(A[(size_t)i * lda + p], h) * bf(B[p * (size_t)NR + j], h);
                                    e += pr; S += fabs(pr);
                                }
                            double err = fabs((double)got - e);
                            CHECK_MSG(err <= QLORA_DOT_TOLERANCE * S + 1e-30, "%s m=%d n=%d K2=%zu acc=%d (%d,%zu): %.9g vs %.9g",
                                      k->name, m, n, K2, acc, i, j, got, e);
                            if (S > 0 && err / S > worst) worst = err / S;
                        }
                    cases++;
                }
        free(A); free(B); free(C); free(C0);
    }
    printf("  %-32s %dx%d, %3d cases, worst |err|/S = %.2e\n", k->name, MR, NR, cases, worst);
}

// ---- 1f. dropout: the same elements dropped as the reference on every ISA, at rate ~p -----------
static void test_dropout_kernel(const kentry *k) {
    qlora_dropout_fn fn = (qlora_dropout_fn)k->fn;
    size_t n = 4099;
    float *x = (float *)malloc(sizeof(float) * n), *y = (float *)malloc(sizeof(float) * (n + 1)), *w = (float *)malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) x[i] = rnd_f(-2, 2);
    float ps[] = { 0.05f, 0.3f, 0.9f };
    int cases = 0;
    for (int ip = 0; ip < 3; ip++)
        for (int acc = 0; acc <= 1; acc++) {
            uint32_t i0 = 0xfffff000u + (uint32_t)ip * 7;   // wraps past 2^32
            uint64_t seed = 0x1234567890abcdefull * (uint64_t)(ip + 1);
            for (size_t i = 0; i < n; i++) y[i] = w[i] = acc ? rnd_f(-1, 1) : NAN;
            y[n] = 55.0f;
            qlora__ref_dropout(x, w, n, i0, seed, ps[ip], acc);
            fn(x, y, n, i0, seed, ps[ip], acc);
            size_t bad = 0, dropped = 0;
            for (size_t i = 0; i < n; i++) {
                if (memcmp(&y[i], &w[i], sizeof(float)) != 0) bad++;
                if (!acc && y[i] == 0.0f) dropped++;
            }
            CHECK_MSG(bad == 0, "%s p=%g acc=%d: %zu of %zu differ from the reference", k->name, (double)ps[ip], acc, bad, n);
            CHECK_MSG(y[n] == 55.0f, "%s: wrote past the end", k->name);
            if (!acc) {   // binomial: 5 sigma
                double rate = (double)dropped / (double)n, sd = sqrt(ps[ip] * (1 - ps[ip]) / (double)n);
                CHECK_MSG(fabs(rate - ps[ip]) < 5 * sd, "%s p=%g: dropped %.4f", k->name, (double)ps[ip], rate);
            }
            cases++;
        }
    printf("  %-32s %2d cases, bit-exact vs qlora__ref_dropout\n", k->name, cases);
    free(x); free(y); free(w);
}

// ---- 1g. exp: within 2e-7 of exp() in double, 0 below the clamp, the sum returned --------------
static qlora_exp_fn g_exp_scalar;   // the generated scalar kernel: every ISA must match it bit for bit
static void test_exp_kernel(const kentry *k) {
    qlora_exp_fn fn = (qlora_exp_fn)k->fn;
    size_t n = 1037;
    float *x = (float *)malloc(sizeof(float) * n), *y = (float *)malloc(sizeof(float) * (n + 1)), *z = (float *)malloc(sizeof(float) * n);
    float ab[][2] = { { 1.0f, 0.0f }, { -1.0f, 0.0f }, { 0.125f, -3.5f }, { 1.0f, -7.25f } };
    double worst = 0;
    int cases = 0;
    for (int c = 0; c < 4; c++) {
        for (size_t i = 0; i < n; i++) x[i] = rnd_f(-110, 100);
        x[0] = 0.0f; x[1] = -87.0f; x[2] = 87.9f; x[3] = NAN; x[4] = INFINITY; x[5] = -INFINITY;
        y[n] = 9.0f;
        double sum = fn(x, y, n, ab[c][0], ab[c][1]), want = 0;
        CHECK_MSG(y[n] == 9.0f, "%s: wrote past the end", k->name);
        for (size_t i = 0; i < n; i++) {
            float t = ab[c][0] * x[i];
            t = t + ab[c][1];
            want += (double)y[i];
            if (t != t || t < -87.33654f) { CHECK_MSG(y[i] == 0.0f, "%s exp(%g) = %g, want 0", k->name, (double)t, (double)y[i]); continue; }
            double e = exp((double)(t > 88.0f ? 88.0f : t)), err = fabs((double)y[i] - e) / e;
            CHECK_MSG(err < 2e-7, "%s exp(%.9g) = %.9g vs %.9g", k->name, (double)t, (double)y[i], e);
            if (err > worst) worst = err;
        }
        CHECK_MSG(fabs(sum - want) <= 1e-12 * fabs(want) + 1e-30, "%s: sum %.17g vs %.17g", k->name, sum, want);
        if (g_exp_scalar) {
            g_exp_scalar(x, z, n, ab[c][0], ab[c][1]);
            CHECK_MSG(memcmp(y, z, n * sizeof(float)) == 0, "%s differs from the scalar kernel", k->name);
        }
        cases++;
    }
    if (k->isa == QLORA_ISA_SCALAR) g_exp_scalar = fn;
    printf("  %-32s %2d cases, worst rel err %.2e vs exp()\n", k->name, cases, worst);
    free(x); free(y); free(z);
}

// ---- 1b. the reference dequantizes exactly as the quantization module does ------------------
// With x = e_i the reference returns deq(w_i) itself (one float product by 1.0, an exact double
// sum), so this checks deq() bit for bit against qlora_bnb_dequantize / qlora_ggml_dequantize.
static void test_ref_is_deq(void) {
    for (int t = 0; t < QLORA_TYPE_COUNT; t++) {
        size_t bs = qlora_type_is_bnb((qlora_type)t) ? 32 : 0, n = 96;
        row_t r;
        row_make(&r, (qlora_type)t, n, bs);
        float *x = (float *)calloc(n, sizeof(float)), *deq = (float *)malloc(sizeof(float) * n);
        row_deq((qlora_type)t, &r, deq);
        int bad = 0;
        for (size_t i = 0; i < n; i++) {
            x[i] = 1.0f;
            float v = qlora__ref_dot[t](r.w, r.scales, x, n, bs);
            if (!(v == deq[i])) bad++;
            x[i] = 0.0f;
        }
        CHECK_MSG(bad == 0, "%s: reference deq differs from the quantization module in %d of %zu elements", qlora_type_name((qlora_type)t), bad, n);
        free(x); free(deq); row_free(&r);
    }
}

// ---- 2. dispatch / force_isa ------------------------------------------------------------------
static void test_dispatch(void) {
    qlora_isa isas[] = { QLORA_ISA_REF, QLORA_ISA_SCALAR, QLORA_ISA_AVX2, QLORA_ISA_AVX512, QLORA_ISA_NEON, QLORA_ISA_AUTO };
    for (size_t i = 0; i < sizeof isas / sizeof isas[0]; i++) {
        qlora_ctx_config cc; memset(&cc, 0, sizeof cc);
        cc.n_threads = 1; cc.force_isa = isas[i];
        qlora_ctx *ctx = NULL;
        CHECK(qlora_ctx_create(&cc, &ctx) == QLORA_OK);
        if (!ctx) continue;
        // what should win: the widest allowed ISA the CPU has that has a kernel (all types have all three)
        const char *want;
        qlora_isa asked = isas[i];
        const char *env = getenv("QLORA_ISA");    // the forced-ISA run of the suite caps AUTO
        if (asked == QLORA_ISA_AUTO && env && *env)
            for (int k = 0; k < QLORA_ISA_COUNT; k++) if (!strcmp(env, qlora_isa_name((qlora_isa)k))) asked = (qlora_isa)k;
#ifdef QLORA_GENERATED_KERNELS
        int has2 = (g_cpu & QLORA_CPU_AVX2) != 0, has512 = (g_cpu & QLORA_CPU_AVX512) != 0, hasneon = (g_cpu & QLORA_CPU_NEON) != 0;
        switch (asked) {
        case QLORA_ISA_REF: want = NULL; break;
        case QLORA_ISA_SCALAR: want = "__scalar"; break;
        case QLORA_ISA_AVX2: want = has2 ? "__avx2" : "__scalar"; break;
        case QLORA_ISA_AVX512: want = has512 ? "__avx512" : has2 ? "__avx2" : "__scalar"; break;
        case QLORA_ISA_NEON: want = hasneon ? "__neon" : "__scalar"; break;
        default: want = has512 ? "__avx512" : has2 ? "__avx2" : hasneon ? "__neon" : "__scalar"; break;
        }
#else
        want = NULL;
#endif
        char buf[2048];
        qlora_ctx_describe(ctx, buf, sizeof buf);
        printf("  force_isa=%-6s -> isa=%-6s %s\n", qlora_isa_name(isas[i]), qlora_isa_name(qlora_ctx_isa(ctx)), buf);
        CHECK(strstr(buf, (g_cpu & QLORA_CPU_AVX2) ? "avx2=yes" : "avx2=no") != NULL);
        CHECK(strstr(buf, (g_cpu & QLORA_CPU_AVX512) ? "avx512=yes" : "avx512=no") != NULL);
        CHECK(strstr(buf, (g_cpu & QLORA_CPU_NEON) ? "neon=yes" : "neon=no") != NULL);
        for (int t = 0; t < QLORA_TYPE_COUNT; t++) {
            const char *name = NULL;
            qlora_dot_fn fn = qlora_ctx_dot(ctx, (qlora_type)t, &name);
            CHECK(fn != NULL && name != NULL);
            if (!name) continue;
            char expect[64];
            if (!want) {
                snprintf(expect, sizeof expect, "qlora__ref_dot_%s_f32", qlora_type_name((qlora_type)t));
                CHECK_MSG(strcmp(name, expect) == 0, "force %s type %s: %s", qlora_isa_name(isas[i]), qlora_type_name((qlora_type)t), name);
                CHECK(fn == qlora__ref_dot[t]);
            } else {
                snprintf(expect, sizeof expect, "qlora_k_dot_%s_f32%s", qlora_type_name((qlora_type)t), want);
                CHECK_MSG(strcmp(name, expect) == 0, "force %s type %s: %s (want %s)", qlora_isa_name(isas[i]), qlora_type_name((qlora_type)t), name, expect);
            }
            CHECK(strstr(buf, name) != NULL);
        }
        {
            const char *gname = NULL, *dname = NULL;
            int mr = 0, nr = 0;
            CHECK(qlora_ctx_gemm(ctx, &mr, &nr, &gname) != NULL && mr > 0 && nr > 0);
            CHECK(qlora_ctx_deq(ctx, QLORA_TYPE_NF4, &dname) != NULL);
            if (!want) CHECK(gname && strcmp(gname, "qlora__ref_gemm") == 0 && dname && strcmp(dname, "qlora__ref_deq") == 0);
            else {
                CHECK_MSG(gname && strstr(gname, want) != NULL, "force %s: gemm %s", qlora_isa_name(isas[i]), gname ? gname : "?");
                CHECK_MSG(dname && strstr(dname, want) != NULL, "force %s: deq %s", qlora_isa_name(isas[i]), dname ? dname : "?");
            }
        }
        if (asked == QLORA_ISA_REF) CHECK(qlora_ctx_isa(ctx) == QLORA_ISA_REF);
        // a short buffer is truncated, never overrun
        char small[16];
        memset(small, 'x', sizeof small);
        qlora_ctx_describe(ctx, small, 10);
        CHECK(strlen(small) == 9 && small[10] == 'x');
        qlora_ctx_destroy(ctx);
    }
    CHECK(qlora_ctx_dot(NULL, QLORA_TYPE_NF4, NULL) == qlora__ref_dot[QLORA_TYPE_NF4]);
    CHECK(qlora_ctx_dot(NULL, QLORA_TYPE_COUNT, NULL) == NULL);
}

// ---- 3. matvec / matmul -----------------------------------------------------------------------
typedef struct {
    qlora_tensor W;
    float *src;         // the float matrix it was quantized from (unused for ggml: random blocks)
    float *map;
} tensor_case;

static void make_tensor(tensor_case *c, qlora_type t, size_t ne0, size_t rows, int bs, int dq) {
    memset(c, 0, sizeof *c);
    qlora_tensor *W = &c->W;
    W->type = t; W->ne[0] = (int64_t)ne0; W->ne[1] = (int64_t)rows; W->ne[2] = W->ne[3] = 1; W->n_dims = 2;
    size_t n = ne0 * rows;
    if (qlora_type_is_bnb(t)) {
        c->src = (float *)malloc(sizeof(float) * n);
        for (size_t i = 0; i < n; i++) c->src[i] = rnd_f(-1, 1) * rnd_f(0.1f, 1.0f);
        size_t nb = qlora_bnb_nblocks(n, bs);
        W->blocksize = bs;
        W->data = malloc(qlora_bnb_code_bytes(t, n));
        float *absmax = (float *)malloc(sizeof(float) * nb);
        CHECK(qlora_bnb_quantize(t, c->src, n, bs, (uint8_t *)W->data, absmax) == QLORA_OK);
        if (dq) {
            c->map = (float *)malloc(sizeof(float) * 256);
            qlora_dynamic_map(1, c->map);
            W->qabsmax = (uint8_t *)malloc(nb);
            W->absmax2 = (float *)malloc(sizeof(float) * ((nb + 255) / 256));
            W->code2 = c->map;
            CHECK(qlora_double_quantize(absmax, nb, c->map, W->qabsmax, W->absmax2, &W->offset) == QLORA_OK);
            free(absmax);
        } else {
            W->absmax = absmax;
        }
    } else {
        row_t r;
        row_make(&r, t, n, 0);   // rows are back to back, so one long row is the whole matrix
        W->data = r.w;
        free(r.scales);
    }
}
static void free_tensor(tensor_case *c) {
    free(c->W.data); free(c->W.absmax); free(c->W.qabsmax); free(c->W.absmax2); free(c->map); free(c->src);
}

// y_naive[t, r] = sum_c deq(W)[r, c] * X[t, c] in double; S[t, r] = sum |.|
static void naive(const qlora_tensor *W, const float *X, size_t T, double *y, double *S) {
    size_t ne0 = (size_t)W->ne[0], rows = (size_t)W->ne[1];
    float *deq = (float *)malloc(sizeof(float) * ne0 * rows);
    CHECK(qlora_tensor_dequantize_rows(W, 0, rows, deq) == QLORA_OK);
    for (size_t t = 0; t < T; t++)
        for (size_t r = 0; r < rows; r++) {
            double a = 0, s = 0;
            for (size_t c = 0; c < ne0; c++) { double p = (double)deq[r * ne0 + c] * X[t * ne0 + c]; a += p; s += fabs(p); }
            y[t * rows + r] = a; S[t * rows + r] = s;
        }
    free(deq);
}

static void test_matvec_case(qlora_ctx **ctxs, int nctx, qlora_type t, size_t ne0, size_t rows, int bs, int dq) {
    tensor_case c;
    make_tensor(&c, t, ne0, rows, bs, dq);
    const size_t T = 5;
    float *X = (float *)malloc(sizeof(float) * T * ne0), *Y = (float *)malloc(sizeof(float) * T * rows);
    float *y1 = (float *)malloc(sizeof(float) * rows), *y0 = (float *)malloc(sizeof(float) * rows);
    double *yn = (double *)malloc(sizeof(double) * T * rows), *S = (double *)malloc(sizeof(double) * T * rows);
    for (size_t i = 0; i < T * ne0; i++) X[i] = rnd_f(-1, 1);
    naive(&c.W, X, T, yn, S);
    double worst = 0;
    for (int ci = 0; ci < nctx; ci++) {
        for (size_t i = 0; i < T * rows; i++) Y[i] = NAN;   // poison
        CHECK(qlora_matmul(ctxs[ci], &c.W, X, T, Y) == QLORA_OK);
        for (size_t i = 0; i < T * rows; i++) {
            double err = fabs((double)Y[i] - yn[i]);
            CHECK_MSG(err <= QLORA_DOT_TOLERANCE * S[i] + 1e-30, "matmul %s ne0=%zu bs=%d dq=%d ctx %d [%zu]: %.9g vs %.9g",
                      qlora_type_name(t), ne0, bs, dq, ci, i, Y[i], yn[i]);
            if (S[i] > 0 && err / S[i] > worst) worst = err / S[i];
        }
        // matvec of row t of X is bitwise the same as row t of the matmul
        for (size_t tt = 0; tt < T; tt++) {
            for (size_t r = 0; r < rows; r++) y1[r] = NAN;
            CHECK(qlora_matvec(ctxs[ci], &c.W, X + tt * ne0, y1) == QLORA_OK);
            CHECK(memcmp(y1, Y + tt * rows, rows * sizeof(float)) == 0);
        }
        // bitwise identical across thread counts (ctxs[0..2] = 1, 2, 3 threads, same ISA)
        if (ci == 0) memcpy(y0, Y, rows * sizeof(float));
        if (ci == 1 || ci == 2) CHECK_MSG(memcmp(y0, Y, rows * sizeof(float)) == 0, "%s: threads differ", qlora_type_name(t));
    }
    printf("  matmul %-5s ne0=%-5zu rows=%-3zu bs=%-3d dq=%d: worst |err|/S = %.2e over %d contexts\n",
           qlora_type_name(t), ne0, rows, bs, dq, worst, nctx);
    free(X); free(Y); free(y1); free(y0); free(yn); free(S);
    free_tensor(&c);
}

// The batched path (>>gemm): forward Y = X deq(W)^T via qlora_matmul (T >= QLORA_GEMM_MIN_T) and
// backward-input dX += dY deq(W), against double sums of the dequantized matrix; bitwise the same
// for 1, 2 and 3 threads.
static void test_gemm_case(qlora_ctx **ctxs, int nctx, qlora_type t, size_t ne0, size_t rows, int bs, int dq) {
    tensor_case c;
    make_tensor(&c, t, ne0, rows, bs, dq);
    const size_t T = 37;
    float *X = (float *)malloc(sizeof(float) * T * ne0), *Y = (float *)malloc(sizeof(float) * T * rows);
    float *Y0 = (float *)malloc(sizeof(float) * T * rows), *G = (float *)malloc(sizeof(float) * T * rows);
    float *dX = (float *)malloc(sizeof(float) * T * ne0), *dX0 = (float *)malloc(sizeof(float) * T * ne0);
    float *dXin = (float *)malloc(sizeof(float) * T * ne0);
    double *yn = (double *)malloc(sizeof(double) * T * rows), *S = (double *)malloc(sizeof(double) * T * rows);
    double *xn = (double *)malloc(sizeof(double) * T * ne0), *Sx = (double *)malloc(sizeof(double) * T * ne0);
    float *deq = (float *)malloc(sizeof(float) * ne0 * rows);
    CHECK(qlora_tensor_dequantize_rows(&c.W, 0, rows, deq) == QLORA_OK);
    for (size_t i = 0; i < T * ne0; i++) { X[i] = rnd_f(-1, 1); dXin[i] = rnd_f(-1, 1); }
    for (size_t i = 0; i < T * rows; i++) G[i] = rnd_f(-1, 1);
    naive(&c.W, X, T, yn, S);
    for (size_t tt = 0; tt < T; tt++)        // dX_naive = dXin + G deq(W)
        for (size_t k = 0; k < ne0; k++) {
            double a = dXin[tt * ne0 + k], sa = fabs(a);
            for (size_t r = 0; r < rows; r++) { double p = (double)G[tt * rows + r] * deq[r * ne0 + k]; a += p; sa += fabs(p); }
            xn[tt * ne0 + k] = a; Sx[tt * ne0 + k] = sa;
        }
    double worst = 0, worstb = 0;
    for (int ci = 0; ci < nctx; ci++) {
        for (size_t i = 0; i < T * rows; i++) Y[i] = NAN;
        CHECK(qlora_matmul(ctxs[ci], &c.W, X, T, Y) == QLORA_OK);
        for (size_t i = 0; i < T * rows; i++) {
            double err = fabs((double)Y[i] - yn[i]);
            CHECK_MSG(err <= QLORA_DOT_TOLERANCE * S[i] + 1e-30, "gemm fwd %s ne0=%zu bs=%d ctx %d [%zu]: %.9g vs %.9g",
                      qlora_type_name(t), ne0, bs, ci, i, Y[i], yn[i]);
            if (S[i] > 0 && err / S[i] > worst) worst = err / S[i];
        }
        memcpy(dX, dXin, sizeof(float) * T * ne0);
        CHECK(qlora__gemm_w(ctxs[ci], &c.W, 0, G, rows, T, dX, ne0, 1, 0) == QLORA_OK);
        for (size_t i = 0; i < T * ne0; i++) {
            double err = fabs((double)dX[i] - xn[i]);
            CHECK_MSG(err <= QLORA_DOT_TOLERANCE * Sx[i] + 1e-30, "gemm bwd %s ne0=%zu bs=%d ctx %d [%zu]: %.9g vs %.9g",
                      qlora_type_name(t), ne0, bs, ci, i, dX[i], xn[i]);
            if (Sx[i] > 0 && err / Sx[i] > worstb) worstb = err / Sx[i];
        }
        // bf16 operands (--bf16): within bf16 rounding (2 x 2^-8 per product) of the exact sums
        for (size_t i = 0; i < T * rows; i++) Y[i] = NAN;
        CHECK(qlora__gemm_w(ctxs[ci], &c.W, 1, X, ne0, T, Y, rows, 0, 1) == QLORA_OK);
        for (size_t i = 0; i < T * rows; i++)
            CHECK_MSG(fabs((double)Y[i] - yn[i]) <= 1e-2 * S[i] + 1e-30, "gemm bf16 fwd %s ctx %d [%zu]: %.9g vs %.9g", qlora_type_name(t), ci, i, Y[i], yn[i]);
        memcpy(dX, dXin, sizeof(float) * T * ne0);
        CHECK(qlora__gemm_w(ctxs[ci], &c.W, 0, G, rows, T, dX, ne0, 1, 1) == QLORA_OK);
        for (size_t i = 0; i < T * ne0; i++)
            CHECK_MSG(fabs((double)dX[i] - xn[i]) <= 1e-2 * Sx[i] + 1e-30, "gemm bf16 bwd %s ctx %d [%zu]: %.9g vs %.9g", qlora_type_name(t), ci, i, dX[i], xn[i]);
        memcpy(dX, dXin, sizeof(float) * T * ne0);
        CHECK(qlora__gemm_w(ctxs[ci], &c.W, 0, G, rows, T, dX, ne0, 1, 0) == QLORA_OK);
        if (ci == 0) { memcpy(Y0, Y, sizeof(float) * T * rows); memcpy(dX0, dX, sizeof(float) * T * ne0); }
        if (ci == 1 || ci == 2) {
            CHECK_MSG(memcmp(Y0, Y, sizeof(float) * T * rows) == 0, "gemm fwd %s: threads differ", qlora_type_name(t));
            CHECK_MSG(memcmp(dX0, dX, sizeof(float) * T * ne0) == 0, "gemm bwd %s: threads differ", qlora_type_name(t));
        }
    }
    printf("  gemm   %-5s ne0=%-5zu rows=%-3zu bs=%-3d dq=%d: worst |err|/S fwd %.2e bwd %.2e\n",
           qlora_type_name(t), ne0, rows, bs, dq, worst, worstb);
    free(X); free(Y); free(Y0); free(G); free(dX); free(dX0); free(dXin); free(yn); free(S); free(xn); free(Sx); free(deq);
    free_tensor(&c);
}

static void test_matvec(void) {
    // contexts 0..2: auto ISA with 1, 2, 3 threads; then one per forced ISA
    qlora_isa forced[] = { QLORA_ISA_AUTO, QLORA_ISA_AUTO, QLORA_ISA_AUTO, QLORA_ISA_REF, QLORA_ISA_SCALAR, QLORA_ISA_AVX2 };
    int threads[] = { 1, 2, 3, 2, 2, 2 };
    qlora_ctx *ctxs[6];
    int nctx = 6;
    for (int i = 0; i < nctx; i++) {
        qlora_ctx_config cc; memset(&cc, 0, sizeof cc);
        cc.n_threads = threads[i]; cc.force_isa = forced[i];
        ctxs[i] = NULL;
        CHECK(qlora_ctx_create(&cc, &ctxs[i]) == QLORA_OK);
        if (!ctxs[i]) return;
    }
    test_matvec_case(ctxs, nctx, QLORA_TYPE_NF4, 172, 37, 64, 0);    // stories260K: rows straddle blocks
    test_matvec_case(ctxs, nctx, QLORA_TYPE_NF4, 172, 37, 64, 1);    //   + double quant
    test_matvec_case(ctxs, nctx, QLORA_TYPE_NF4, 576, 64, 64, 1);    // SmolLM2 width, aligned rows
    test_matvec_case(ctxs, nctx, QLORA_TYPE_NF4, 64 * 300, 3, 64, 1); // > 256 blocks per row: chunked scales
    test_matvec_case(ctxs, nctx, QLORA_TYPE_NF4, 600, 70, 256, 1);   // 300 blocks: double-quant groups of 256 cross rows
    test_matvec_case(ctxs, nctx, QLORA_TYPE_NF4, 64 * 300 + 44, 3, 64, 1); // head + 300 blocks (2 chunks) + tail
    test_matvec_case(ctxs, nctx, QLORA_TYPE_NF4, 20, 9, 64, 0);      // rows shorter than a block
    test_matvec_case(ctxs, nctx, QLORA_TYPE_INT4, 33, 5, 32, 0);     // odd ne0: rows start on odd nibbles
    test_matvec_case(ctxs, nctx, QLORA_TYPE_FP4, 576, 19, 64, 0);
    test_matvec_case(ctxs, nctx, QLORA_TYPE_INT4, 172, 21, 64, 1);
    test_matvec_case(ctxs, nctx, QLORA_TYPE_INT8, 172, 21, 64, 0);
    test_matvec_case(ctxs, nctx, QLORA_TYPE_INT8, 1536, 17, 128, 1);
    test_matvec_case(ctxs, nctx, QLORA_TYPE_Q4_1, 576, 50, 0, 0);
    test_matvec_case(ctxs, nctx, QLORA_TYPE_Q4_0, 576, 23, 0, 0);
    test_matvec_case(ctxs, nctx, QLORA_TYPE_Q8_0, 1536, 23, 0, 0);
    test_matvec_case(ctxs, nctx, QLORA_TYPE_F32, 173, 29, 0, 0);
    test_matvec_case(ctxs, nctx, QLORA_TYPE_F16, 100, 29, 0, 0);
    test_matvec_case(ctxs, nctx, QLORA_TYPE_BF16, 64, 9, 0, 0);

    test_gemm_case(ctxs, nctx, QLORA_TYPE_NF4, 576, 200, 64, 1);     // SmolLM2 q_proj-like: several panels
    test_gemm_case(ctxs, nctx, QLORA_TYPE_NF4, 172, 37, 64, 0);      // rows straddle blocks (slow fill path)
    test_gemm_case(ctxs, nctx, QLORA_TYPE_NF4, 1536, 45, 64, 1);     // K blocks (kc < K) in the forward
    test_gemm_case(ctxs, nctx, QLORA_TYPE_FP4, 256, 300, 128, 1);    // backward K blocks, 128-wide panels
    test_gemm_case(ctxs, nctx, QLORA_TYPE_INT4, 64, 20, 32, 0);
    test_gemm_case(ctxs, nctx, QLORA_TYPE_INT8, 320, 33, 64, 1);
    test_gemm_case(ctxs, nctx, QLORA_TYPE_Q8_0, 576, 130, 0, 0);
    test_gemm_case(ctxs, nctx, QLORA_TYPE_Q4_0, 96, 17, 0, 0);
    test_gemm_case(ctxs, nctx, QLORA_TYPE_Q4_1, 160, 70, 0, 0);
    test_gemm_case(ctxs, nctx, QLORA_TYPE_F32, 23, 16, 0, 0);        // LoRA-like: tiny K and N
    test_gemm_case(ctxs, nctx, QLORA_TYPE_F16, 100, 29, 0, 0);
    test_gemm_case(ctxs, nctx, QLORA_TYPE_BF16, 64, 9, 0, 0);

    // errors come back as results with a message, never a crash
    qlora_tensor bad; memset(&bad, 0, sizeof bad);
    float x[64], y[4];
    for (int i = 0; i < 64; i++) x[i] = 1.0f;
    CHECK(qlora_matvec(ctxs[0], NULL, x, y) == QLORA_ERR_INVALID_ARG);
    uint8_t blk[20 * 4];
    memset(blk, 0, sizeof blk);
    bad.type = QLORA_TYPE_Q4_1; bad.ne[0] = 40; bad.ne[1] = 2; bad.n_dims = 2; bad.data = blk;
    CHECK(qlora_matvec(ctxs[0], &bad, x, y) == QLORA_ERR_SHAPE);
    CHECK(strstr(qlora_ctx_error(ctxs[0]), "multiple of 32") != NULL);
    bad.type = QLORA_TYPE_NF4; bad.ne[0] = 64; bad.blocksize = 64;    // no absmax
    CHECK(qlora_matvec(ctxs[0], &bad, x, y) == QLORA_ERR_INVALID_ARG);
    bad.type = QLORA_TYPE_F32; bad.ne[0] = 16; bad.ne[1] = 4;
    float wz[64]; memset(wz, 0, sizeof wz); bad.data = wz;
    CHECK(qlora_matmul(ctxs[0], &bad, x, 0, NULL) == QLORA_OK);      // T = 0: nothing to do
    CHECK(qlora_matvec(ctxs[0], &bad, x, y) == QLORA_OK && y[0] == 0.0f && y[3] == 0.0f);
    for (int i = 0; i < nctx; i++) qlora_ctx_destroy(ctxs[i]);
}

// ---- benchmark (--bench) ----------------------------------------------------------------------
static double now_s(void) { return (double)clock() / CLOCKS_PER_SEC; }
static void bench_one(const char *name, qlora_dot_fn fn, qlora_type t, size_t n) {
    row_t r;
    size_t bs = qlora_type_is_bnb(t) ? 64 : 0;
    row_make(&r, t, n, bs);
    float *x = (float *)malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) x[i] = rnd_f(-1, 1);
    volatile float sink = 0;
    long iters = 1000;
    double t0, dt;
    for (;;) {
        t0 = now_s();
        for (long i = 0; i < iters; i++) sink += fn(r.w, r.scales, x, n, bs);
        dt = now_s() - t0;
        if (dt > 0.2) break;
        iters *= 4;
    }
    (void)sink;
    printf("  %-32s n=%-5zu %8.2f GFLOP/s  (%6.1f ns/dot)\n", name, n, 2.0 * (double)n * (double)iters / dt * 1e-9, dt / (double)iters * 1e9);
    free(x); row_free(&r);
}
static void bench(void) {
    qlora_type types[] = { QLORA_TYPE_NF4, QLORA_TYPE_Q4_1 };
    size_t ns[] = { 576, 1536 };
    printf("bench (single thread, GFLOP/s = 2n / time per dot):\n");
    for (int it = 0; it < 2; it++)
        for (int in = 0; in < 2; in++) {
            bench_one(qlora__ref_dot_name[types[it]], qlora__ref_dot[types[it]], types[it], ns[in]);
            for (size_t i = 0; registry[i].fn; i++)
                if (registry[i].op == QLORA_OP_DOT && registry[i].type == types[it] && cpu_has(registry[i].isa))
                    bench_one(registry[i].name, (qlora_dot_fn)registry[i].fn, types[it], ns[in]);
        }
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);   // keep stdout and the stderr FAIL lines in order
    g_cpu = qlora_cpu_features();
    printf("test_kernels: %zu registered kernels; cpu avx2=%d avx512=%d neon=%d\n", (size_t)N_REGISTRY,
           (g_cpu & QLORA_CPU_AVX2) != 0, (g_cpu & QLORA_CPU_AVX512) != 0, (g_cpu & QLORA_CPU_NEON) != 0);
#ifndef QLORA_GENERATED_KERNELS
    printf("  (built without QLORA_GENERATED_KERNELS: reference only)\n");
#endif
    for (size_t i = 0; registry[i].fn; i++) {
        if (!cpu_has(registry[i].isa)) { printf("  %-32s SKIP (cpu lacks %s)\n", registry[i].name, qlora_isa_name(registry[i].isa)); continue; }
        if (registry[i].op == QLORA_OP_DOT) test_kernel(&registry[i]);
        else if (registry[i].op == QLORA_OP_DEQ) test_deq_kernel(&registry[i]);
        else if (registry[i].op == QLORA_OP_GEMM) test_gemm_kernel(&registry[i]);
        else if (registry[i].op == QLORA_OP_GEMM_BF16) test_gemm_bf16_kernel(&registry[i]);
        else if (registry[i].op == QLORA_OP_CVT_BF16) test_cvt_kernel(&registry[i]);
        else if (registry[i].op == QLORA_OP_DROPOUT) test_dropout_kernel(&registry[i]);
        else if (registry[i].op == QLORA_OP_EXP) test_exp_kernel(&registry[i]);
        else CHECK_MSG(0, "%s: no test for this op", registry[i].name);
    }
    test_ref_is_deq();
    test_dispatch();
    test_matvec();
    if (argc > 1 && strcmp(argv[1], "--bench") == 0) bench();
    return QT_DONE("test_kernels");
}
