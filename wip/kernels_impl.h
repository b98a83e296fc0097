// >>ref-kernels
// READABLE scalar reference kernels: the spec every generated kernel is tested against.
// One op matters for inference: the dot product of one weight row with f32 activations,
//     dot(w, x) = sum_i deq(w_i) * x_i
// where deq() is exactly what the dequantizers in >>quant produce (bitsandbytes dequantize_4bit /
// ggml dequantize_row_*). The reference accumulates in double so that it is the most accurate
// value we can give; optimised kernels (float lanes, other order) must be within
// QLORA_DOT_TOLERANCE * sum_i |deq(w_i) x_i| of it.
// Signature (qlora_dot_fn): w = start of the row's data, scales = decoded absmax of the row's
// n / bs blocks (bnb formats only), n = elements, bs = bnb block size (multiple of 2).

// --- plain floats ------------------------------------------------------------------------------
static float qlora__ref_dot_f32_f32(const void *w, const float *scales, const float *x, size_t n, size_t bs) {
    const float *wf = (const float *)w;   // (n,)
    double acc = 0.0;
    QLORA__UNUSED(scales); QLORA__UNUSED(bs);
    for (size_t i = 0; i < n; i++) acc += (double)(wf[i] * x[i]);
    return (float)acc;
}
static float qlora__ref_dot_f16_f32(const void *w, const float *scales, const float *x, size_t n, size_t bs) {
    const uint8_t *p = (const uint8_t *)w;  // (n,) IEEE half, little endian
    double acc = 0.0;
    QLORA__UNUSED(scales); QLORA__UNUSED(bs);
    for (size_t i = 0; i < n; i++) acc += (double)(qlora__fp16_to_f32(qlora__rd_u16(p + 2 * i)) * x[i]);
    return (float)acc;
}
static float qlora__ref_dot_bf16_f32(const void *w, const float *scales, const float *x, size_t n, size_t bs) {
    const uint8_t *p = (const uint8_t *)w;  // (n,) bfloat16 = top 16 bits of a float
    double acc = 0.0;
    QLORA__UNUSED(scales); QLORA__UNUSED(bs);
    for (size_t i = 0; i < n; i++) acc += (double)(qlora__bf16_to_f32(qlora__rd_u16(p + 2 * i)) * x[i]);
    return (float)acc;
}

// --- ggml block formats (ggml-quants.c dequantize_row_q8_0 / q4_0 / q4_1) ----------------------
// Q8_0 = { f16 d; int8 qs[32]; }            34 bytes, w = qs[j] * d
// Q4_0 = { f16 d; uint8 qs[16]; }           18 bytes, w[j] = (lo4(qs[j]) - 8) * d, w[j+16] = (hi4 - 8) * d
// Q4_1 = { f16 d; f16 m; uint8 qs[16]; }    20 bytes, w[j] = lo4(qs[j]) * d + m,  w[j+16] = hi4 * d + m
// Blocks are byte-packed (no alignment), so fields are read with qlora__rd_u16.
#define QLORA__QK 32
static float qlora__ref_dot_q8_0_f32(const void *w, const float *scales, const float *x, size_t n, size_t bs) {
    const uint8_t *blk = (const uint8_t *)w;   // (n/32, 34 bytes)
    double acc = 0.0;
    QLORA__UNUSED(scales); QLORA__UNUSED(bs);
    for (size_t b = 0; b < n / QLORA__QK; b++, blk += 34) {
        float d = qlora__fp16_to_f32(qlora__rd_u16(blk));
        for (int j = 0; j < QLORA__QK; j++)
            acc += (double)((float)(int8_t)blk[2 + j] * d * x[b * QLORA__QK + (size_t)j]);
    }
    return (float)acc;
}
static float qlora__ref_dot_q4_0_f32(const void *w, const float *scales, const float *x, size_t n, size_t bs) {
    const uint8_t *blk = (const uint8_t *)w;   // (n/32, 18 bytes)
    double acc = 0.0;
    QLORA__UNUSED(scales); QLORA__UNUSED(bs);
    for (size_t b = 0; b < n / QLORA__QK; b++, blk += 18) {
        float d = qlora__fp16_to_f32(qlora__rd_u16(blk));
        const float *xb = x + b * QLORA__QK;
        for (int j = 0; j < QLORA__QK / 2; j++) {
            float w0 = (float)((blk[2 + j] & 0x0f) - 8) * d;   // element j
            float w1 = (float)((blk[2 + j] >> 4) - 8) * d;     // element j + 16
            acc += (double)(w0 * xb[j]) + (double)(w1 * xb[j + QLORA__QK / 2]);
        }
    }
    return (float)acc;
}
static float qlora__ref_dot_q4_1_f32(const void *w, const float *scales, const float *x, size_t n, size_t bs) {
    const uint8_t *blk = (const uint8_t *)w;   // (n/32, 20 bytes)
    double acc = 0.0;
    QLORA__UNUSED(scales); QLORA__UNUSED(bs);
    for (size_t b = 0; b < n / QLORA__QK; b++, blk += 20) {
        float d = qlora__fp16_to_f32(qlora__rd_u16(blk));
        float m = qlora__fp16_to_f32(qlora__rd_u16(blk + 2));
        const float *xb = x + b * QLORA__QK;
        for (int j = 0; j < QLORA__QK / 2; j++) {
            float w0 = (float)(blk[4 + j] & 0x0f) * d + m;
            float w1 = (float)(blk[4 + j] >> 4) * d + m;
            acc += (double)(w0 * xb[j]) + (double)(w1 * xb[j + QLORA__QK / 2]);
        }
    }
    return (float)acc;
}

// --- bitsandbytes blockwise formats ------------------------------------------------------------
// The matrix is flattened and cut into blocks of bs values with one absmax each (bnb
// quantize_blockwise). 4-bit codes: two per byte, element 2k in the HIGH nibble (bnb
// kQuantizeBlockwise packs `qvals[0] << 4 | qvals[1]`); w = code4[q] * absmax[block].
// INT8: one signed byte per element, w = (q / 127) * absmax[block].
static float qlora__bnb_deq_int8(int8_t q, float absmax) { return (float)q / 127.0f * absmax; }

static float qlora__ref_dot_bnb4(const float code4[16], const uint8_t *w, const float *scales,
                                 const float *x, size_t n, size_t bs) {
    double acc = 0.0;
    for (size_t i = 0; i < n; i++) {
        uint8_t byte = w[i / 2];
        int q = (i % 2 == 0) ? (byte >> 4) : (byte & 0x0f);   // even element = high nibble
        float wi = code4[q] * scales[i / bs];                   // exactly qlora_bnb_dequantize
        acc += (double)(wi * x[i]);
    }
    return (float)acc;
}
static float qlora__ref_dot_nf4_f32(const void *w, const float *scales, const float *x, size_t n, size_t bs) {
    return qlora__ref_dot_bnb4(qlora__nf4_code, (const uint8_t *)w, scales, x, n, bs);
}
static float qlora__ref_dot_fp4_f32(const void *w, const float *scales, const float *x, size_t n, size_t bs) {
    return qlora__ref_dot_bnb4(qlora__fp4_code, (const uint8_t *)w, scales, x, n, bs);
}
static float qlora__ref_dot_int4_f32(const void *w, const float *scales, const float *x, size_t n, size_t bs) {
    return qlora__ref_dot_bnb4(qlora__int4_code, (const uint8_t *)w, scales, x, n, bs);
}
static float qlora__ref_dot_int8_f32(const void *w, const float *scales, const float *x, size_t n, size_t bs) {
    const int8_t *q = (const int8_t *)w;   // (n,)
    double acc = 0.0;
    for (size_t i = 0; i < n; i++) acc += (double)(qlora__bnb_deq_int8(q[i], scales[i / bs]) * x[i]);
    return (float)acc;
}

static const qlora_dot_fn qlora__ref_dot[QLORA_TYPE_COUNT] = {
    qlora__ref_dot_f32_f32, qlora__ref_dot_f16_f32, qlora__ref_dot_bf16_f32,
    qlora__ref_dot_q8_0_f32, qlora__ref_dot_q4_0_f32, qlora__ref_dot_q4_1_f32,
    qlora__ref_dot_nf4_f32, qlora__ref_dot_fp4_f32, qlora__ref_dot_int4_f32, qlora__ref_dot_int8_f32
};
static const char *const qlora__ref_dot_name[QLORA_TYPE_COUNT] = {
    "qlora__ref_dot_f32_f32", "qlora__ref_dot_f16_f32", "qlora__ref_dot_bf16_f32",
    "qlora__ref_dot_q8_0_f32", "qlora__ref_dot_q4_0_f32", "qlora__ref_dot_q4_1_f32",
    "qlora__ref_dot_nf4_f32", "qlora__ref_dot_fp4_f32", "qlora__ref_dot_int4_f32", "qlora__ref_dot_int8_f32"
};

// >>generated
// The SIMD (and unrolled scalar) kernels are emitted by gen/generate.py from gen/templates/ into
// kernels_generated/; each is `static`, carries its ISA target attribute (xxHash-style runtime
// dispatch: no -mavx2 needed) and is listed once in kernels_generated/qlora_kernels.inc.
#ifdef QLORA_GENERATED_KERNELS
#include "kernels_generated/qlora_kernels.h"
#if !defined(QLORA_KERNELS_ABI) || QLORA_KERNELS_ABI != 1
#error "kernels_generated/ does not match qlora.h: run python3 gen/generate.py"
#endif
#endif

// >>dispatch
// One registry drives dispatch, tests and benchmarks: QLORA_KERNEL(isa, type, fn, prio) lines.
// At qlora_ctx_create, for each weight type we take the highest-priority kernel whose ISA the
// CPU has (ctx->cpu) and ctx->isa allows; with none, the reference above.
typedef struct qlora__kernel_entry {
    qlora_isa    isa;
    qlora_type   type;
    qlora_dot_fn fn;
    const char  *name;
    int          prio;
} qlora__kernel_entry;

static const qlora__kernel_entry qlora__kernel_registry[] = {
#ifdef QLORA_GENERATED_KERNELS
#define QLORA_KERNEL(isa, type, fn, prio) { isa, type, fn, #fn, prio },
#include "kernels_generated/qlora_kernels.inc"
#undef QLORA_KERNEL
#endif
    { QLORA_ISA_REF, QLORA_TYPE_COUNT, NULL, NULL, 0 }   // sentinel (keeps the array non-empty)
};

struct qlora_kernels {
    qlora_dot_fn dot[QLORA_TYPE_COUNT];        // chosen dot per weight type
    const char  *dot_name[QLORA_TYPE_COUNT];   // its function name (qlora_ctx_describe)
    qlora_isa    dot_isa[QLORA_TYPE_COUNT];    // its instruction set (QLORA_ISA_REF = reference)
};

// May a kernel of instruction set `k` run on this ctx? It must be on the CPU and at most `force`.
static int qlora__isa_allowed(qlora_isa k, unsigned cpu, qlora_isa force) {
    int on_cpu = k == QLORA_ISA_SCALAR || (k == QLORA_ISA_AVX2 && (cpu & QLORA_CPU_AVX2)) ||
                 (k == QLORA_ISA_AVX512 && (cpu & QLORA_CPU_AVX512)) || (k == QLORA_ISA_NEON && (cpu & QLORA_CPU_NEON));
    if (!on_cpu) return 0;
    switch (force) {
    case QLORA_ISA_AUTO:   return 1;
    case QLORA_ISA_REF:    return 0;
    case QLORA_ISA_SCALAR: return k == QLORA_ISA_SCALAR;
    case QLORA_ISA_AVX2:   return k == QLORA_ISA_SCALAR || k == QLORA_ISA_AVX2;
    case QLORA_ISA_AVX512: return k == QLORA_ISA_SCALAR || k == QLORA_ISA_AVX2 || k == QLORA_ISA_AVX512;
    case QLORA_ISA_NEON:   return k == QLORA_ISA_SCALAR || k == QLORA_ISA_NEON;
    default:               return 0;
    }
}

static void qlora__kernels_init(qlora_ctx *ctx) {
    struct qlora_kernels *k = (struct qlora_kernels *)QLORA__MALLOC(sizeof(struct qlora_kernels));
    ctx->kern = k;
    if (!k) { QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "qlora_ctx_create: kernel table"); return; }
    if ((unsigned)ctx->isa >= QLORA_ISA_COUNT) ctx->isa = QLORA_ISA_AUTO;
    int best[QLORA_TYPE_COUNT];
    for (int t = 0; t < QLORA_TYPE_COUNT; t++) {
        k->dot[t] = qlora__ref_dot[t];
        k->dot_name[t] = qlora__ref_dot_name[t];
        k->dot_isa[t] = QLORA_ISA_REF;
        best[t] = -1;
    }
    size_t n_entries = sizeof qlora__kernel_registry / sizeof qlora__kernel_registry[0];
    for (size_t i = 0; i < n_entries; i++) {
        const qlora__kernel_entry *e = &qlora__kernel_registry[i];
        if (!e->fn || (unsigned)e->type >= QLORA_TYPE_COUNT) continue;
        if (!qlora__isa_allowed(e->isa, ctx->cpu, ctx->isa) || e->prio <= best[e->type]) continue;
        best[e->type] = e->prio;
        k->dot[e->type] = e->fn;
        k->dot_name[e->type] = e->name;
        k->dot_isa[e->type] = e->isa;
    }
    // ctx->isa now reports what runs: the widest instruction set among the chosen kernels.
    qlora_isa used = QLORA_ISA_REF;
    for (int t = 0; t < QLORA_TYPE_COUNT; t++)
        if (k->dot_isa[t] > used) used = k->dot_isa[t];
    ctx->isa = used;
}

QLORA__DEF qlora_dot_fn qlora_ctx_dot(const qlora_ctx *ctx, qlora_type t, const char **name) {
    if ((unsigned)t >= QLORA_TYPE_COUNT) { if (name) *name = NULL; return NULL; }
    if (!ctx || !ctx->kern) { if (name) *name = qlora__ref_dot_name[t]; return qlora__ref_dot[t]; }
    if (name) *name = ctx->kern->dot_name[t];
    return ctx->kern->dot[t];
}

QLORA__DEF void qlora_ctx_describe(const qlora_ctx *ctx, char *buf, size_t cap) {
    if (!buf || cap == 0) return;
    buf[0] = 0;
    if (!ctx) return;
    size_t len = 0;
    int w = snprintf(buf, cap, "cpu: avx2=%s avx512=%s neon=%s; isa=%s; threads=%d;",
                     (ctx->cpu & QLORA_CPU_AVX2) ? "yes" : "no", (ctx->cpu & QLORA_CPU_AVX512) ? "yes" : "no",
                     (ctx->cpu & QLORA_CPU_NEON) ? "yes" : "no", qlora_isa_name(ctx->isa), ctx->n_threads);
    for (int t = 0; t < QLORA_TYPE_COUNT && w >= 0; t++) {
        len += (size_t)w;
        if (len >= cap) return;   // truncated (snprintf already terminated it)
        const char *nm = ctx->kern ? ctx->kern->dot_name[t] : qlora__ref_dot_name[t];
        w = snprintf(buf + len, cap - len, " dot_%s_f32: %s", qlora__type_names[t], nm);
    }
}

// >>matvec
// y = W x with W (rows, ne0) in any format. Threads split the OUTPUT rows (qlora__split), each
// row is one call of the dispatched dot, so y is bitwise identical for any thread count.
// bnb formats: block scales are decoded per row into a stack buffer (double quantization:
// absmax = code2[qabsmax[b]] * absmax2[b / 256] + offset, float multiply then float add, exactly
// qlora_double_dequantize). bnb blocks run over the flattened matrix, so a row may start and end
// inside a block (stories260K: ne0 = 172, blocksize 64); those partial blocks use the reference.
#define QLORA__MATVEC_SCALES 256   // scales decoded per chunk (stack buffer)

static size_t qlora__kern_row_bytes(qlora_type t, size_t n) {
    switch (t) {
    case QLORA_TYPE_F32:  return n * 4;
    case QLORA_TYPE_F16:
    case QLORA_TYPE_BF16: return n * 2;
    case QLORA_TYPE_Q8_0: return n / QLORA__QK * 34;
    case QLORA_TYPE_Q4_0: return n / QLORA__QK * 18;
    case QLORA_TYPE_Q4_1: return n / QLORA__QK * 20;
    case QLORA_TYPE_INT8: return n;
    default:              return n / 2;   // 4-bit bnb
    }
}

// Decoded absmax of bnb block b.
static float qlora__bnb_scale(const qlora_tensor *W, size_t b) {
    if (W->absmax) return W->absmax[b];
    float s = W->code2[W->qabsmax[b]] * W->absmax2[b / 256];
    return s + W->offset;   // two statements: never contracted into an FMA
}

// Reference dot of flattened elements [g0, g0 + n) of a bnb tensor with x (any alignment).
static float qlora__bnb_dot_range(const qlora_tensor *W, size_t g0, size_t n, const float *x) {
    const uint8_t *codes = (const uint8_t *)W->data;
    const float *code4 = W->type == QLORA_TYPE_NF4 ? qlora__nf4_code : W->type == QLORA_TYPE_FP4 ? qlora__fp4_code : qlora__int4_code;
    size_t bs = (size_t)W->blocksize;
    double acc = 0.0;
    size_t i = 0;
    while (i < n) {
        size_t g = g0 + i, b = g / bs, end = QLORA__MIN(n, (b + 1) * bs - g0);
        float s = qlora__bnb_scale(W, b);
        for (; i < end; i++) {
            g = g0 + i;
            float wi;
            if (W->type == QLORA_TYPE_INT8) wi = qlora__bnb_deq_int8((int8_t)codes[g], s);
            else wi = code4[(g % 2 == 0) ? (codes[g / 2] >> 4) : (codes[g / 2] & 0x0f)] * s;
            acc += (double)(wi * x[i]);
        }
    }
    return (float)acc;
}

typedef struct qlora__mv_args {
    const qlora_tensor *W;
    const float *X;        // (T, ne0)
    float       *Y;        // (T, rows)
    size_t       T, rows, ne0, row_bytes;
    qlora_dot_fn dot;
} qlora__mv_args;

static void qlora__matmul_task(void *arg, int ith, int nth) {
    const qlora__mv_args *a = (const qlora__mv_args *)arg;
    const qlora_tensor *W = a->W;
    size_t r0, r1, ne0 = a->ne0;
    qlora__split(a->rows, ith, nth, &r0, &r1);
    if (!qlora_type_is_bnb(W->type)) {
        // ggml / float rows: byte-addressable, no scales. Row-outer so the row stays in L1 for all T.
        for (size_t r = r0; r < r1; r++) {
            const uint8_t *wr = (const uint8_t *)W->data + r * a->row_bytes;
            for (size_t t = 0; t < a->T; t++) a->Y[t * a->rows + r] = a->dot(wr, NULL, a->X + t * ne0, ne0, 0);
        }
        return;
    }
    // bnb: a row is [g0, g0 + ne0) of the flattened matrix. When ne0 % bs != 0 (stories260K:
    // ne0 = 172, bs = 64) it starts inside a block: head (rest of that block) and tail (start of
    // the last one) take the reference path, the whole blocks in between the dispatched kernel.
    size_t bs = (size_t)W->blocksize;
    float sc[QLORA__MATVEC_SCALES];   // decoded absmax of one chunk of a row's blocks
    for (size_t r = r0; r < r1; r++) {
        size_t g0 = r * ne0, head = QLORA__MIN(ne0, (bs - g0 % bs) % bs);
        size_t nb = (ne0 - head) / bs, b0 = (g0 + head) / bs, tail = head + nb * bs;
        for (size_t t = 0; t < a->T; t++)
            a->Y[t * a->rows + r] = head ? qlora__bnb_dot_range(W, g0, head, a->X + t * ne0) : 0.0f;
        for (size_t c = 0; c < nb; c += QLORA__MATVEC_SCALES) {   // fixed chunks: same for any nth
            size_t m = QLORA__MIN((size_t)QLORA__MATVEC_SCALES, nb - c), e = head + c * bs;
            for (size_t j = 0; j < m; j++) sc[j] = qlora__bnb_scale(W, b0 + c + j);
            const uint8_t *wr = (const uint8_t *)W->data + qlora__kern_row_bytes(W->type, g0 + e);
            for (size_t t = 0; t < a->T; t++)
                a->Y[t * a->rows + r] += a->dot(wr, sc, a->X + t * ne0 + e, m * bs, bs);
        }
        if (tail < ne0)
            for (size_t t = 0; t < a->T; t++)
                a->Y[t * a->rows + r] += qlora__bnb_dot_range(W, g0 + tail, ne0 - tail, a->X + t * ne0 + tail);
    }
}

// Validates W and fills the task arguments (shared by matvec and matmul).
static qlora_result qlora__mv_prepare(qlora_ctx *ctx, const qlora_tensor *W, const char *fn, qlora__mv_args *a) {
    memset(a, 0, sizeof *a);
    if (!W || !W->data) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "%s: NULL weight tensor or data", fn);
    if ((unsigned)W->type >= QLORA_TYPE_COUNT) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "%s: bad weight type %d", fn, (int)W->type);
    if (W->ne[0] <= 0) return QLORA__ERR(ctx, QLORA_ERR_SHAPE, "%s: ne[0] = %lld", fn, (long long)W->ne[0]);
    size_t ne0 = (size_t)W->ne[0], total = qlora_tensor_nelements(W);   // over the first n_dims dims
    if (total == 0 || total % ne0 != 0) return QLORA__ERR(ctx, QLORA_ERR_SHAPE, "%s: bad shape (ne[0] = %zu, %zu elements)", fn, ne0, total);
    size_t rows = total / ne0;
    qlora_type t = W->type;
    if ((t == QLORA_TYPE_Q8_0 || t == QLORA_TYPE_Q4_0 || t == QLORA_TYPE_Q4_1) && ne0 % QLORA__QK != 0)
        return QLORA__ERR(ctx, QLORA_ERR_SHAPE, "%s: %s row of %zu elements is not a multiple of 32", fn, qlora_type_name(t), ne0);
    if (qlora_type_is_bnb(t)) {
        if (W->blocksize < 2 || (W->blocksize & 1))
            return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "%s: bnb blocksize %d", fn, W->blocksize);
        if (!W->absmax && (!W->qabsmax || !W->absmax2 || !W->code2))
            return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "%s: bnb tensor without absmax (or qabsmax/absmax2/code2)", fn);
    }
    a->W = W;
    a->rows = rows;
    a->ne0 = ne0;
    a->row_bytes = qlora__kern_row_bytes(t, ne0);
    a->dot = qlora_ctx_dot(ctx, t, NULL);
    return QLORA_OK;
}

QLORA__DEF qlora_result qlora_matvec(qlora_ctx *ctx, const qlora_tensor *W, const float *x, float *y) {
    return qlora_matmul(ctx, W, x, 1, y);
}

QLORA__DEF qlora_result qlora_matmul(qlora_ctx *ctx, const qlora_tensor *W, const float *X, size_t T, float *Y) {
    qlora__mv_args a;
    qlora_result r = qlora__mv_prepare(ctx, W, "qlora_matmul", &a);
    if (r != QLORA_OK) return r;
    if (T == 0) return QLORA_OK;
    if (!X || !Y) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "qlora_matmul: NULL X or Y");
    a.X = X;
    a.Y = Y;
    a.T = T;
    qlora_parallel_for(ctx, qlora__matmul_task, &a);
    return QLORA_OK;
}
