/* qlora.h - v0.1.0 - QLoRA fine-tuning of Llama-family models in one C header
   no warranty implied; use at your own risk. See end of file for license (MIT or public domain).

   USAGE
     #define QLORA_IMPLEMENTATION
     #include "qlora.h"
   in exactly ONE .c or .cpp file; every other file just includes "qlora.h".
   Link with -lm -lpthread. Nothing else is needed: the reference implementation below is
   portable C99. Define QLORA_GENERATED_KERNELS (and put kernels_generated/ on the include path)
   to add the AVX2 / AVX-512 kernels emitted by gen/generate.py, picked at run time by cpuid.

   QUICK START
     qlora_ctx *ctx = NULL;
     qlora_ctx_config cc = {0};                     // zero = defaults (all cores, best ISA)
     qlora_ctx_create(&cc, &ctx);
     qlora_model *m = NULL;
     if (qlora_model_load(ctx, "SmolLM2-135M-Instruct-Q4_1.gguf", NULL, &m) != QLORA_OK)
         fprintf(stderr, "%s\n", qlora_ctx_error(ctx));
     qlora_model_quantize(ctx, m, QLORA_TYPE_NF4, 64, 1);   // NF4 + double quant, bnb-exact
     int ids[256]; int n = 0;
     qlora_tokenize(m->tok, "Hello", 0, ids, 256, &n);
     ...  qlora_generate(ctx, m, ids, n, &sampler, out_ids, 64, &n_out);
     qlora_model_free(m); qlora_ctx_destroy(ctx);

   CONTENTS (search for the anchors "// >>name")
     >>version >>linkage >>results >>types >>api-quant >>api-formats >>api-tokenizer >>api-model
     >>impl-config >>platform >>util >>threads >>ref-kernels >>generated >>dispatch >>quant
     >>json >>gguf >>safetensors >>tokenizer >>model >>loaders >>generate >>samples

   CONFIG (define before including; "globally" = in every file, "impl" = only with IMPLEMENTATION)
     QLORA_STATIC               impl     all functions static (private copy per TU)
     QLORA_API                  globally decoration of public functions (default extern)
     QLORA_MALLOC/REALLOC/FREE  impl     allocator (all or none); (sz,u) / (p,sz,u) / (p,u)
     QLORA_ASSERT(x)            impl     internal invariants only (default assert)
     QLORA_GENERATED_KERNELS    impl     include kernels_generated/qlora_kernels.h
     QLORA_NO_SIMD              impl     never use the generated SIMD kernels
     QLORA_NO_AVX2 / QLORA_NO_AVX512     deny one ISA
     QLORA_NO_THREADS           impl     no pthreads; everything runs on the caller's thread
     QLORA_NO_STDIO             impl     remove every FILE * and path based API (buffers remain)

   ALGORITHM
     QLoRA (Dettmers et al. 2023) keeps the pretrained weight W frozen in a 4-bit code: W is
     flattened row-major and cut into blocks of 64 values; each block stores absmax = max|w| and
     16-level codes q = nearest(NF4, w/absmax), two per byte, first element in the high nibble
     (bitsandbytes layout). NF4 levels are quantiles of N(0,1) normalised to [-1,1] (paper eq. 4).
     Double quantization (paper §3) stores absmax itself in 8 bits: offset = mean(absmax), then
     (absmax - offset) is quantized with the signed dynamic 8-bit map in blocks of 256, with one
     f32 absmax2 per block. Dequantization is w = NF4[q] * (map[qa]*absmax2 + offset). The
     forward y = deq(W) x + (alpha/r) B A x and every backward only ever dequantizes one block at
     a time into registers; deq(W) never exists in memory.

   THREADING   A qlora_ctx owns a small pthread pool. Work is split over outputs (rows), never
               over a reduction, so results are bitwise identical for any thread count. A ctx is
               not thread-safe; use one per thread.
   MEMORY      Models are loaded by mmap where possible; quantized weights are owned by the model.
   NUMERICS    Quantization (float -> codes) is bit-identical with bitsandbytes' PyTorch (IEEE)
               backend and identical on every ISA (compile without -ffast-math; the encoder uses
               no contractible a*b+c). Dot products may differ from the scalar reference by
               accumulation order: QLORA_DOT_TOLERANCE relative.

   RECENT REVISIONS
     0.1.0 (2026-11-25) loaders (GGUF, safetensors/HF, llama2.c), tokenizers, bnb-exact
                        NF4/FP4/INT4/INT8 + double quant, Llama forward, generation
*/
#ifndef QLORA_H_INCLUDED
#define QLORA_H_INCLUDED
#if defined(QLORA_IMPLEMENTATION) && !defined(_GNU_SOURCE) && !defined(_WIN32)
#define _GNU_SOURCE   // mmap, fsync, sysconf: must precede the first system header
#endif

// >>version
#define QLORA_VERSION_MAJOR 0
#define QLORA_VERSION_MINOR 1
#define QLORA_VERSION_PATCH 0
#define QLORA_VERSION_STRING "0.1.0"

#include <stddef.h>
#include <stdint.h>

// >>linkage
#ifndef QLORA_API
#ifdef QLORA_STATIC
#define QLORA_API static
#else
#define QLORA_API extern
#endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

QLORA_API const char *qlora_version(void);

// >>results
// One list generates the enum and qlora_result_string(). 0 is success, errors are negative.
#define QLORA_RESULTS(X)                                                     \
    X(QLORA_OK,                 0, "ok")                                     \
    X(QLORA_ERR_INVALID_ARG,   -1, "invalid argument")                       \
    X(QLORA_ERR_OUT_OF_MEMORY, -2, "out of memory")                          \
    X(QLORA_ERR_IO,            -3, "i/o error")                              \
    X(QLORA_ERR_FORMAT,        -4, "malformed file")                         \
    X(QLORA_ERR_UNSUPPORTED,   -5, "unsupported")                            \
    X(QLORA_ERR_SHAPE,         -6, "impossible shape")                       \
    X(QLORA_ERR_NOT_FOUND,     -7, "not found")                              \
    X(QLORA_ERR_JSON,          -8, "malformed JSON")                         \
    X(QLORA_ERR_RANGE,         -9, "value out of range")                     \
    X(QLORA_ERR_NUMERIC,      -10, "non-finite value")

typedef enum qlora_result {
#define QLORA__X(name, value, text) name = value,
    QLORA_RESULTS(QLORA__X)
#undef QLORA__X
    QLORA__RESULT_FORCE_INT = 0x7fffffff
} qlora_result;

QLORA_API const char *qlora_result_string(qlora_result r);

// >>types
// Element / block formats. Values are our own ids; GGUF ids are mapped in the loader.
typedef enum qlora_type {
    QLORA_TYPE_F32 = 0,
    QLORA_TYPE_F16,
    QLORA_TYPE_BF16,
    QLORA_TYPE_Q8_0,   // ggml: 32 x int8 + f16 scale
    QLORA_TYPE_Q4_0,   // ggml: 32 x 4-bit (-8 offset) + f16 scale
    QLORA_TYPE_Q4_1,   // ggml: 32 x 4-bit + f16 scale + f16 min
    QLORA_TYPE_NF4,    // bitsandbytes NF4, blockwise absmax (+ optional double quant)
    QLORA_TYPE_FP4,    // bitsandbytes FP4 (e2m1, bias 3), blockwise absmax
    QLORA_TYPE_INT4,   // symmetric 4-bit: q in [-7,7] stored as q+8, w = q/7 * absmax
    QLORA_TYPE_INT8,   // symmetric 8-bit: q in [-127,127], w = q/127 * absmax
    QLORA_TYPE_COUNT
} qlora_type;

QLORA_API const char *qlora_type_name(qlora_type t);
QLORA_API int qlora_type_is_bnb(qlora_type t);   // NF4/FP4/INT4/INT8: flat blockwise absmax layout

// CPU features / instruction sets. QLORA_ISA_REF forces the readable scalar reference.
typedef enum qlora_isa {
    QLORA_ISA_AUTO = 0,
    QLORA_ISA_REF,
    QLORA_ISA_SCALAR,
    QLORA_ISA_AVX2,
    QLORA_ISA_AVX512,
    QLORA_ISA_NEON,
    QLORA_ISA_COUNT
} qlora_isa;

#define QLORA_CPU_AVX2    (1u << 0)   // avx2 + fma + f16c
#define QLORA_CPU_AVX512  (1u << 1)   // avx512 f + bw + vl
#define QLORA_CPU_NEON    (1u << 2)

QLORA_API const char *qlora_isa_name(qlora_isa isa);

// A matrix whose rows are (in) long; rows*in elements. For bnb formats the blocks run over the
// flattened matrix (they may span rows, exactly as bitsandbytes does).
typedef struct qlora_tensor {
    qlora_type type;
    int64_t    ne[4];          // ggml order: ne[0] fastest (in features), ne[1] rows (out)
    int        n_dims;
    void      *data;           // f32/f16/bf16 elements, ggml blocks, or packed bnb codes
    // bitsandbytes-style quant state (type_is_bnb only)
    int        blocksize;      // 32..4096, default 64
    float     *absmax;         // [nblocks] f32; NULL when double-quantized
    uint8_t   *qabsmax;        // [nblocks] 8-bit codes of (absmax - offset), double quant only
    float     *absmax2;        // [ceil(nblocks/256)] double quant only
    float     *code2;          // [256] signed dynamic map, double quant only
    float      offset;         // mean(absmax), double quant only
    int        owns_data;      // 1 when data/absmax/... were malloc'ed by the library
} qlora_tensor;

QLORA_API size_t qlora_tensor_nelements(const qlora_tensor *t);
QLORA_API size_t qlora_tensor_nbytes(const qlora_tensor *t);      // codes only (bnb: packed bytes)

// A context: CPU features, the chosen kernels, a thread pool, and the last error.
typedef struct qlora_ctx qlora_ctx;
typedef struct qlora_ctx_config {
    int       n_threads;       // 0 = number of online CPUs
    qlora_isa force_isa;       // 0 = best detected
    void (*log_fn)(void *user, int level, qlora_result code, const char *msg);
    void     *log_user;
} qlora_ctx_config;

QLORA_API qlora_result qlora_ctx_create(const qlora_ctx_config *cfg, qlora_ctx **out);
QLORA_API void         qlora_ctx_destroy(qlora_ctx *ctx);
QLORA_API const char  *qlora_ctx_error(const qlora_ctx *ctx);     // last error with detail
QLORA_API qlora_result qlora_ctx_set_error(qlora_ctx *ctx, qlora_result code, const char *fmt, ...);
QLORA_API int          qlora_ctx_threads(const qlora_ctx *ctx);
QLORA_API qlora_isa    qlora_ctx_isa(const qlora_ctx *ctx);
// Writes "cpu: avx2=yes avx512=yes ...; dot_nf4_f32: qlora_k_dot_nf4_f32__avx512 ..." into buf.
QLORA_API void         qlora_ctx_describe(const qlora_ctx *ctx, char *buf, size_t cap);
QLORA_API unsigned     qlora_cpu_features(void);
// Runs task(arg, ith, nth) for ith = 0..nth-1 on the pool and waits.
QLORA_API void         qlora_parallel_for(qlora_ctx *ctx, void (*task)(void *arg, int ith, int nth), void *arg);

#include "wip/quant_api.h"
#include "wip/kernels_api.h"
#include "wip/formats_api.h"
#include "wip/tokenizer_api.h"
#include "wip/model_api.h"
#include "wip/lora_api.h"
#include "wip/optim_api.h"
#include "wip/data_api.h"
#include "wip/adapter_api.h"
#include "wip/train_api.h"

#ifdef __cplusplus
}
#endif
#endif // QLORA_H_INCLUDED

// ================================================================================================
#if defined(QLORA_IMPLEMENTATION) && !defined(QLORA__IMPLEMENTATION_DONE)
#define QLORA__IMPLEMENTATION_DONE

// >>impl-config
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <stdarg.h>
#include <math.h>
#include <float.h>
#include <limits.h>
#include <assert.h>

#if defined(QLORA_MALLOC) && defined(QLORA_FREE) && defined(QLORA_REALLOC)
#elif !defined(QLORA_MALLOC) && !defined(QLORA_FREE) && !defined(QLORA_REALLOC)
#define QLORA_MALLOC(sz, u)      ((void)(u), malloc(sz))
#define QLORA_REALLOC(p, sz, u)  ((void)(u), realloc(p, sz))
#define QLORA_FREE(p, u)         ((void)(u), free(p))
#else
#error "Must define all or none of QLORA_MALLOC, QLORA_FREE, and QLORA_REALLOC."
#endif
#ifndef QLORA_ASSERT
#define QLORA_ASSERT(x) assert(x)
#endif
#ifdef QLORA_NO_SIMD
#undef QLORA_GENERATED_KERNELS
#endif

#ifdef QLORA_STATIC
#define QLORA__DEF static
#else
#define QLORA__DEF
#endif
#define QLORA__UNUSED(x) ((void)(x))
#if defined(__cplusplus) && (defined(__GNUC__) || defined(__clang__) || defined(_MSC_VER))
#define QLORA__RESTRICT __restrict
#elif defined(__cplusplus)
#define QLORA__RESTRICT
#else
#define QLORA__RESTRICT restrict
#endif
#define QLORA__MALLOC(sz) QLORA_MALLOC(sz, NULL)
#define QLORA__FREE(p) QLORA_FREE(p, NULL)
#define QLORA__REALLOC(p, sz) QLORA_REALLOC(p, sz, NULL)
#define QLORA__CALLOC_T(T, n) ((T *)qlora__calloc((n), sizeof(T)))
#define QLORA__MIN(a, b) ((a) < (b) ? (a) : (b))
#define QLORA__MAX(a, b) ((a) > (b) ? (a) : (b))

#if defined(__GNUC__) || defined(__clang__)
#define QLORA__PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define QLORA__PRINTF(a, b)
#endif

// >>platform
#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__) || defined(_M_IX86)
#define QLORA__X86 1
#endif
#if defined(__aarch64__) || defined(_M_ARM64)
#define QLORA__ARM64 1
#endif
#if defined(QLORA__X86) && (defined(__GNUC__) || defined(__clang__))
#define QLORA__TARGET_AVX2   __attribute__((target("avx2,fma,f16c")))
#define QLORA__TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
#define QLORA__HAVE_TARGET_ATTR 1
#else
#define QLORA__TARGET_AVX2
#define QLORA__TARGET_AVX512
#endif

#if defined(QLORA__X86) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
static unsigned qlora__detect_cpu(void) {
    unsigned a, b, c, d, f = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    int osxsave = (c >> 27) & 1, fma = (c >> 12) & 1, f16c = (c >> 29) & 1, avx = (c >> 28) & 1;
    if (!osxsave || !avx) return 0;
    unsigned xlo, xhi;
    __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
    (void)xhi;
    int ymm_ok = (xlo & 6) == 6, zmm_ok = (xlo & 0xe6) == 0xe6;
    if (__get_cpuid_max(0, NULL) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    int avx2 = (b >> 5) & 1, avx512f = (b >> 16) & 1, avx512bw = (b >> 30) & 1, avx512vl = (b >> 31) & 1;
    if (ymm_ok && avx2 && fma && f16c) f |= QLORA_CPU_AVX2;
    if (zmm_ok && (f & QLORA_CPU_AVX2) && avx512f && avx512bw && avx512vl) f |= QLORA_CPU_AVX512;
    return f;
}
#elif defined(QLORA__ARM64)
static unsigned qlora__detect_cpu(void) { return QLORA_CPU_NEON; }
#else
static unsigned qlora__detect_cpu(void) { return 0; }
#endif

QLORA__DEF unsigned qlora_cpu_features(void) {
    unsigned f = qlora__detect_cpu();
#ifdef QLORA_NO_AVX2
    f &= ~(QLORA_CPU_AVX2 | QLORA_CPU_AVX512);
#endif
#ifdef QLORA_NO_AVX512
    f &= ~QLORA_CPU_AVX512;
#endif
#ifdef QLORA_NO_NEON
    f &= ~QLORA_CPU_NEON;
#endif
    return f;
}

#ifndef QLORA_NO_THREADS
#include <pthread.h>
#include <unistd.h>
#endif

// >>util
QLORA__DEF const char *qlora_version(void) { return QLORA_VERSION_STRING; }

QLORA__DEF const char *qlora_result_string(qlora_result r) {
    switch (r) {
#define QLORA__X(name, value, text) case name: return text;
        QLORA_RESULTS(QLORA__X)
#undef QLORA__X
    default: return "unknown error";
    }
}

static const char *const qlora__type_names[QLORA_TYPE_COUNT] = {
    "f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "nf4", "fp4", "int4", "int8"
};
QLORA__DEF const char *qlora_type_name(qlora_type t) {
    return (unsigned)t < QLORA_TYPE_COUNT ? qlora__type_names[t] : "?";
}
QLORA__DEF int qlora_type_is_bnb(qlora_type t) {
    return t == QLORA_TYPE_NF4 || t == QLORA_TYPE_FP4 || t == QLORA_TYPE_INT4 || t == QLORA_TYPE_INT8;
}
static const char *const qlora__isa_names[QLORA_ISA_COUNT] = { "auto", "ref", "scalar", "avx2", "avx512", "neon" };
QLORA__DEF const char *qlora_isa_name(qlora_isa isa) {
    return (unsigned)isa < QLORA_ISA_COUNT ? qlora__isa_names[isa] : "?";
}

// Overflow-checked size arithmetic (stb stbi__mul2sizes_valid). All sizes from files go through these.
static int qlora__mul_ok(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return 0;
    *out = a * b;
    return 1;
}
static int qlora__add_ok(size_t a, size_t b, size_t *out) {
    if (b > SIZE_MAX - a) return 0;
    *out = a + b;
    return 1;
}
static void *qlora__calloc(size_t n, size_t sz) {
    size_t bytes;
    if (!qlora__mul_ok(n, sz, &bytes)) return NULL;
    void *p = QLORA__MALLOC(bytes ? bytes : 1);
    if (p) memset(p, 0, bytes);
    return p;
}
static char *qlora__strdup(const char *s) {
    size_t n = strlen(s);
    char *p = (char *)QLORA__MALLOC(n + 1);
    if (p) memcpy(p, s, n + 1);
    return p;
}
static char *qlora__strndup(const char *s, size_t n) {
    char *p = (char *)QLORA__MALLOC(n + 1);
    if (p) { memcpy(p, s, n); p[n] = 0; }
    return p;
}

// IEEE half / bfloat16 <-> float, exact (round to nearest even on the way down).
static float qlora__f32_from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static uint32_t qlora__bits_from_f32(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float qlora__fp16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0) {                                    // zero / subnormal: man * 2^-24
        float f = (float)man * 5.9604644775390625e-8f;
        return sign ? -f : f;
    }
    if (exp == 31) return qlora__f32_from_bits(sign | 0x7f800000u | (man << 13));
    return qlora__f32_from_bits(sign | ((exp + 112) << 23) | (man << 13));
}
static uint16_t qlora__f32_to_fp16(float f) {
    uint32_t x = qlora__bits_from_f32(f), sign = (x >> 16) & 0x8000;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);          // rounds to inf
    if (ax < 0x38800000u) {                                            // subnormal half
        float a = qlora__f32_from_bits(ax) * 16777216.0f;              // * 2^24, exact
        uint32_t m = (uint32_t)a; float r = a - (float)m;
        if (r > 0.5f || (r == 0.5f && (m & 1))) m++;
        return (uint16_t)(sign | m);
    }
    uint32_t e = (ax >> 23) - 112, m = ax & 0x7fffff;
    uint32_t h = (e << 10) | (m >> 13), rest = m & 0x1fff;
    if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++;
    return (uint16_t)(sign | h);
}
static float qlora__bf16_to_f32(uint16_t b) { return qlora__f32_from_bits((uint32_t)b << 16); }
static uint16_t qlora__f32_to_bf16(float f) {
    uint32_t x = qlora__bits_from_f32(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40);   // quiet NaN
    x += 0x7fffu + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

// Little-endian readers over untrusted buffers.
static uint32_t qlora__rd_u32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t qlora__rd_u64(const uint8_t *p) { return (uint64_t)qlora__rd_u32(p) | (uint64_t)qlora__rd_u32(p + 4) << 32; }
static uint16_t qlora__rd_u16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

// >>threads
struct qlora_ctx;
struct qlora__worker_slot { struct qlora_ctx *ctx; int ith; };
struct qlora_ctx {
    unsigned  cpu;             // detected & allowed QLORA_CPU_* bits
    qlora_isa isa;             // chosen instruction set
    int       n_threads;
    qlora_result last_code;
    char      last_error[512];
    void (*log_fn)(void *user, int level, qlora_result code, const char *msg);
    void     *log_user;
    struct qlora_kernels *kern;  // dispatch table (>>dispatch)
#ifndef QLORA_NO_THREADS
    pthread_t      *workers;
    struct qlora__worker_slot *slots;
    pthread_mutex_t mu;
    pthread_cond_t  cv_work, cv_done;
    void (*task)(void *arg, int ith, int nth);
    void          *task_arg;
    uint64_t       generation;
    int            pending, quit;
#endif
};

QLORA__DEF qlora_result qlora_ctx_set_error(qlora_ctx *ctx, qlora_result code, const char *fmt, ...) QLORA__PRINTF(3, 4);
QLORA__DEF qlora_result qlora_ctx_set_error(qlora_ctx *ctx, qlora_result code, const char *fmt, ...) {
    if (!ctx) return code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->last_error, sizeof ctx->last_error, fmt, ap);
    va_end(ap);
    ctx->last_code = code;
    if (ctx->log_fn) ctx->log_fn(ctx->log_user, 0, code, ctx->last_error);
    return code;
}
QLORA__DEF const char *qlora_ctx_error(const qlora_ctx *ctx) {
    if (!ctx) return "no context";
    return ctx->last_error[0] ? ctx->last_error : qlora_result_string(ctx->last_code);
}
QLORA__DEF int qlora_ctx_threads(const qlora_ctx *ctx) { return ctx->n_threads; }
QLORA__DEF qlora_isa qlora_ctx_isa(const qlora_ctx *ctx) { return ctx->isa; }
#define QLORA__ERR(ctx, code, ...) qlora_ctx_set_error((ctx), (code), __VA_ARGS__)

#ifndef QLORA_NO_THREADS
// Hybrid pool (ggml-style): workers spin on the generation counter for a while, then sleep on a
// condition variable; the caller takes part as thread 0. One parallel_for costs ~1 us when the
// workers are hot instead of the ~20-50 us of a condvar round trip.
#if defined(__GNUC__) || defined(__clang__)
#define QLORA__ALOAD(p)     __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define QLORA__ASTORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define QLORA__ADEC(p)      __atomic_sub_fetch((p), 1, __ATOMIC_ACQ_REL)
#define QLORA__SPINS        (1 << 17)
#else   // no atomics: plain mutex/condvar handshake only
#define QLORA__ALOAD(p)     (*(p))
#define QLORA__ASTORE(p, v) (*(p) = (v))
#define QLORA__ADEC(p)      (--*(p))
#define QLORA__SPINS        0
#endif
static void qlora__cpu_relax(void) {
#if defined(QLORA__X86) && (defined(__GNUC__) || defined(__clang__))
    __asm__ volatile("pause");
#endif
}

static void *qlora__worker(void *p) {
    struct qlora__worker_slot *slot = (struct qlora__worker_slot *)p;
    qlora_ctx *ctx = slot->ctx;
    int ith = slot->ith;
    uint64_t seen = 0;
    for (;;) {
        uint64_t g;
        long spins = 0;
        while ((g = QLORA__ALOAD(&ctx->generation)) == seen && !QLORA__ALOAD(&ctx->quit)) {
            if (++spins < QLORA__SPINS) { qlora__cpu_relax(); continue; }
            pthread_mutex_lock(&ctx->mu);
            while (QLORA__ALOAD(&ctx->generation) == seen && !QLORA__ALOAD(&ctx->quit)) pthread_cond_wait(&ctx->cv_work, &ctx->mu);
            pthread_mutex_unlock(&ctx->mu);
        }
        if (QLORA__ALOAD(&ctx->quit)) break;
        seen = g;
        ctx->task(ctx->task_arg, ith, ctx->n_threads);
        if (QLORA__ADEC(&ctx->pending) == 0) {
            pthread_mutex_lock(&ctx->mu);
            pthread_cond_signal(&ctx->cv_done);
            pthread_mutex_unlock(&ctx->mu);
        }
    }
    return NULL;
}
#endif

QLORA__DEF void qlora_parallel_for(qlora_ctx *ctx, void (*task)(void *arg, int ith, int nth), void *arg) {
#ifndef QLORA_NO_THREADS
    if (ctx && ctx->n_threads > 1 && ctx->workers) {
        ctx->task = task;
        ctx->task_arg = arg;
        QLORA__ASTORE(&ctx->pending, ctx->n_threads - 1);
        pthread_mutex_lock(&ctx->mu);               // a worker about to sleep holds mu: no lost wake-up
        QLORA__ASTORE(&ctx->generation, ctx->generation + 1);
        pthread_cond_broadcast(&ctx->cv_work);
        pthread_mutex_unlock(&ctx->mu);
        task(arg, 0, ctx->n_threads);
        long spins = 0;
        while (QLORA__ALOAD(&ctx->pending) > 0) {
            if (++spins < QLORA__SPINS) { qlora__cpu_relax(); continue; }
            pthread_mutex_lock(&ctx->mu);
            while (QLORA__ALOAD(&ctx->pending) > 0) pthread_cond_wait(&ctx->cv_done, &ctx->mu);
            pthread_mutex_unlock(&ctx->mu);
        }
        return;
    }
#else
    QLORA__UNUSED(ctx);
#endif
    task(arg, 0, 1);
}

static void qlora__kernels_init(qlora_ctx *ctx);   // >>dispatch

QLORA__DEF qlora_result qlora_ctx_create(const qlora_ctx_config *cfg, qlora_ctx **out) {
    qlora_ctx_config def;
    memset(&def, 0, sizeof def);
    if (!cfg) cfg = &def;
    if (!out) return QLORA_ERR_INVALID_ARG;
    *out = NULL;
    qlora_ctx *ctx = QLORA__CALLOC_T(qlora_ctx, 1);
    if (!ctx) return QLORA_ERR_OUT_OF_MEMORY;
    ctx->log_fn = cfg->log_fn;
    ctx->log_user = cfg->log_user;
    ctx->cpu = qlora_cpu_features();
    ctx->isa = cfg->force_isa;
    int nt = cfg->n_threads;
#ifndef QLORA_NO_THREADS
    if (nt <= 0) { long n = sysconf(_SC_NPROCESSORS_ONLN); nt = n > 0 ? (int)n : 1; }
    if (nt > 256) nt = 256;
#else
    nt = 1;
#endif
    ctx->n_threads = nt;
    qlora__kernels_init(ctx);
    if (ctx->last_code != QLORA_OK) {
        qlora_result r = ctx->last_code;
        QLORA__FREE(ctx->kern);
        QLORA__FREE(ctx);
        return r;
    }
#ifndef QLORA_NO_THREADS
    if (nt > 1) {
        pthread_mutex_init(&ctx->mu, NULL);
        pthread_cond_init(&ctx->cv_work, NULL);
        pthread_cond_init(&ctx->cv_done, NULL);
        ctx->workers = QLORA__CALLOC_T(pthread_t, (size_t)nt);
        ctx->slots = QLORA__CALLOC_T(struct qlora__worker_slot, (size_t)nt);
        if (!ctx->workers || !ctx->slots) { ctx->n_threads = 1; qlora_ctx_destroy(ctx); return QLORA_ERR_OUT_OF_MEMORY; }
        for (int i = 1; i < nt; i++) {
            ctx->slots[i].ctx = ctx;
            ctx->slots[i].ith = i;
            if (pthread_create(&ctx->workers[i], NULL, qlora__worker, &ctx->slots[i]) != 0) {
                ctx->n_threads = i;      // run with what we have (workers read n_threads only in tasks)
                break;
            }
        }
    }
#endif
    *out = ctx;
    return QLORA_OK;
}

QLORA__DEF void qlora_ctx_destroy(qlora_ctx *ctx) {
    if (!ctx) return;
#ifndef QLORA_NO_THREADS
    if (ctx->workers) {
        pthread_mutex_lock(&ctx->mu);
        QLORA__ASTORE(&ctx->quit, 1);
        pthread_cond_broadcast(&ctx->cv_work);
        pthread_mutex_unlock(&ctx->mu);
        for (int i = 1; i < ctx->n_threads; i++) pthread_join(ctx->workers[i], NULL);
        QLORA__FREE(ctx->workers);
        QLORA__FREE(ctx->slots);
        pthread_mutex_destroy(&ctx->mu);
        pthread_cond_destroy(&ctx->cv_work);
        pthread_cond_destroy(&ctx->cv_done);
    }
#endif
    QLORA__FREE(ctx->kern);
    QLORA__FREE(ctx);
}

// Split [0, n) into nth contiguous ranges; thread ith gets [*b, *e).
static void qlora__split(size_t n, int ith, int nth, size_t *b, size_t *e) {
    size_t per = (n + (size_t)nth - 1) / (size_t)nth;
    *b = QLORA__MIN(n, per * (size_t)ith);
    *e = QLORA__MIN(n, *b + per);
}

// >>quant-tables
// The 16 levels of each 4-bit code book, indexed by the 4-bit code (read-only, shared by every
// kernel). NF4: bitsandbytes get_4bit_type("nf4") verbatim (each literal is exactly a float32).
static const float qlora__nf4_code[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f
};
// FP4 (e2m1, bnb "bias 3"): bit3 = sign; raw magnitudes {0, 0.0625, 8, 12, 4, 6, 2, 3} divided
// by 12 in float32 (get_4bit_type("fp4"): data /= data.abs().max()).
static const float qlora__fp4_code[16] = {
     0.0f,  0.0625f / 12.0f,  8.0f / 12.0f,  12.0f / 12.0f,  4.0f / 12.0f,  6.0f / 12.0f,  2.0f / 12.0f,  3.0f / 12.0f,
     0.0f, -0.0625f / 12.0f, -8.0f / 12.0f, -12.0f / 12.0f, -4.0f / 12.0f, -6.0f / 12.0f, -2.0f / 12.0f, -3.0f / 12.0f
};
// INT4 symmetric: stored nibble s = q + 8 with q in [-7, 7]; level = q / 7 (s = 0 is never written).
static const float qlora__int4_code[16] = {
    -8.0f / 7.0f, -7.0f / 7.0f, -6.0f / 7.0f, -5.0f / 7.0f, -4.0f / 7.0f, -3.0f / 7.0f, -2.0f / 7.0f, -1.0f / 7.0f,
    0.0f, 1.0f / 7.0f, 2.0f / 7.0f, 3.0f / 7.0f, 4.0f / 7.0f, 5.0f / 7.0f, 6.0f / 7.0f, 7.0f / 7.0f
};

#include "wip/quant_impl.h"
#include "wip/kernels_impl.h"
#include "wip/formats_impl.h"
#include "wip/tokenizer_impl.h"
#include "wip/model_impl.h"
#include "wip/lora_impl.h"
#include "wip/optim_impl.h"
#include "wip/data_impl.h"
#include "wip/adapter_impl.h"
#include "wip/train_impl.h"

#endif // QLORA_IMPLEMENTATION

/*
------------------------------------------------------------------------------
This software is available under 2 licenses -- choose whichever you prefer.
------------------------------------------------------------------------------
ALTERNATIVE A - MIT License
Copyright (c) 2026 qlora.h authors
Permission is hereby granted, free of charge, to any person obtaining a copy of
this software and associated documentation files (the "Software"), to deal in
the Software without restriction, including without limitation the rights to
use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies
of the Software, and to permit persons to whom the Software is furnished to do
so, subject to the following conditions:
The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.
THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
------------------------------------------------------------------------------
ALTERNATIVE B - Public Domain (www.unlicense.org)
This is free and unencumbered software released into the public domain.
Anyone is free to copy, modify, publish, use, compile, sell, or distribute this
software, either in source code form or as a compiled binary, for any purpose,
commercial or non-commercial, and by any means.
In jurisdictions that recognize copyright laws, the author or authors of this
software dedicate any and all copyright interest in the software to the public
domain. We make this dedication in recognition of the continued hard work of
all present and future contributors to the Software under copyright law.
THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
------------------------------------------------------------------------------
*/
