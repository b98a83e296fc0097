/* qlora.h - v0.2.0 - QLoRA fine-tuning of Llama-family models in one C header
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
     qlora_lora_config lc = {16, 32, 0.05f, QLORA_MODS_ALL_LINEAR};   // r, alpha, dropout, targets
     qlora_lora *l;  qlora_lora_create(ctx, m, &lc, &l);
     qlora_data_config dc = {0};  dc.max_seq_length = 128;
     qlora_dataset *train, *eval;
     qlora_data_prepare(ctx, m->tok, "quotes.txt", NULL, &dc, &train, &eval);
     qlora_trainer_config tc = {0};  tc.seq_len = 128; tc.max_steps = 100; tc.output_dir = "out";
     qlora_trainer_run(ctx, m, l, train, eval, &tc, NULL);     // writes out/adapter_model.safetensors
     m->adapter = l;                                           // generate with the adapter applied
     ...  qlora_generate(ctx, m, kv, ids, n, &sampler, n_max, out_ids, &n_out, NULL, NULL);
     qlora_lora_free(l); qlora_model_free(m); qlora_ctx_destroy(ctx);

   CONTENTS (search for the anchors "// >>name")
     declarations  >>version >>linkage >>results >>types >>api-quant >>api-kernels >>api-formats
                   >>api-tokenizer >>api-model >>api-lora >>api-optim >>api-data >>api-adapter
                   >>api-train >>api-trainer
     implementation >>impl-config >>platform >>util >>threads >>quant-tables >>quant >>quant-tensor
                   >>ref-kernels >>generated >>dispatch >>matvec >>files >>json >>gguf >>safetensors
                   >>tokenizer >>model >>generate >>loaders >>model-quantize >>save-hf >>lora >>optim
                   >>optim-state >>clip >>lr-schedule >>data >>adapter >>gguf-writer >>peft >>gguf-lora
                   >>merge >>save-gguf >>autograd >>trainer

   CONFIG (define before including; "globally" = in every file, "impl" = only with IMPLEMENTATION)
     QLORA_STATIC               impl     all functions static (private copy per TU)
     QLORA_API                  globally decoration of public functions (default extern)
     QLORA_MALLOC/REALLOC/FREE  impl     allocator (all or none); (sz,u) / (p,sz,u) / (p,u)
     QLORA_ASSERT(x)            impl     internal invariants only (default assert)
     QLORA_GENERATED_KERNELS    impl     include kernels_generated/qlora_kernels.h
     QLORA_NO_SIMD              impl     never use the generated SIMD kernels
     QLORA_NO_AVX2 / QLORA_NO_AVX512 / QLORA_NO_AVX512BF16 / QLORA_NO_NEON     deny one ISA
     QLORA_NO_THREADS           impl     no pthreads; everything runs on the caller's thread
     QLORA_GEMM_MIN_T           impl     tokens from which qlora_matmul runs as a GEMM [48]

   ENVIRONMENT
     QLORA_ISA=ref|scalar|avx2|avx512|avx512bf16|neon   caps the kernels of every ctx created
                                with force_isa = AUTO (runs the whole test suite per ISA)

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
               accumulation order: QLORA_DOT_TOLERANCE relative. An all-zero block gets codes
               0111 (+0.0) as in bnb's PyTorch backend; bnb's CUDA kernel writes 0000 (-0.0).
               Training results (losses, gradients, adapters) are bitwise identical for any
               thread count and across checkpoint/resume.

   RECENT REVISIONS
     0.3.0 (2026-11-25) performance: generated deq / f32 + bf16 GEMM tiles (AVX2, AVX-512,
                        AVX-512-BF16, AMX, NEON) behind BLIS-style quantized GEMM drivers, flash
                        attention, --bf16, generated dropout and exp, allocation-free steps,
                        QLORA_ISA, batched prompt prefill
     0.2.0 (2026-11-25) QLoRA training: LoRA (PEFT semantics) over frozen quantized weights,
                        forward/backward + gradient checkpointing, AdamW / 8-bit / paged,
                        data formats, trainer with atomic checkpoints and exact resume, PEFT and
                        llama.cpp adapters, merge, GGUF writer
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
#define QLORA_VERSION_MINOR 3
#define QLORA_VERSION_PATCH 0
#define QLORA_VERSION_STRING "0.3.0"

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
    QLORA_ISA_AVX512BF16,     // avx512 + vdpbf16ps: only the bf16 GEMM (--bf16) differs
    QLORA_ISA_AMX,            // + AMX-BF16 tiles for the bf16 GEMM
    QLORA_ISA_COUNT
} qlora_isa;

#define QLORA_CPU_AVX2    (1u << 0)   // avx2 + fma + f16c
#define QLORA_CPU_AVX512  (1u << 1)   // avx512 f + bw + vl
#define QLORA_CPU_NEON    (1u << 2)
#define QLORA_CPU_AVX512BF16 (1u << 3)   // avx512 + avx512_bf16
#define QLORA_CPU_AMX     (1u << 4)   // amx-tile + amx-bf16, tile data enabled by the OS for us

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

// >>api-quant
// bitsandbytes-compatible blockwise quantization of a flat float array (row-major matrix).
// NF4/FP4/INT4: two 4-bit codes per byte, element 2k in the HIGH nibble; odd n pads with 0.0.
// INT8: one signed byte per element. absmax: one f32 per block of `blocksize` (32..4096, pow2).
QLORA_API size_t qlora_bnb_nblocks(size_t n, int blocksize);
QLORA_API size_t qlora_bnb_code_bytes(qlora_type t, size_t n);
QLORA_API qlora_result qlora_bnb_quantize(qlora_type t, const float *x, size_t n, int blocksize,
                                          uint8_t *codes, float *absmax);
QLORA_API qlora_result qlora_bnb_dequantize(qlora_type t, const uint8_t *codes, const float *absmax,
                                            size_t n, int blocksize, float *out);
// The 16-entry code book of a 4-bit format (NF4/FP4/INT4); NULL for others.
QLORA_API const float *qlora_bnb_code4(qlora_type t);
// bitsandbytes create_dynamic_map(signed) emulated in float32 (torch linspace semantics).
QLORA_API void qlora_dynamic_map(int is_signed, float map[256]);
// Double quantization (bnb compress_statistics): offset = mean(absmax); (absmax - offset) is
// quantized with the signed dynamic map in blocks of 256 (nearest code, ties to the lower index).
QLORA_API qlora_result qlora_double_quantize(const float *absmax, size_t nblocks, const float map[256],
                                             uint8_t *qabsmax, float *absmax2, float *offset);
// absmax[i] = map[qabsmax[i]] * absmax2[i / 256] + offset   (float32 multiply, then float32 add)
QLORA_API void qlora_double_dequantize(const uint8_t *qabsmax, const float *absmax2, const float map[256],
                                       float offset, size_t nblocks, float *absmax);
// ggml block formats (Q8_0, Q4_0, Q4_1): n a multiple of 32; dequantized exactly as ggml does.
QLORA_API qlora_result qlora_ggml_dequantize(qlora_type t, const void *blocks, size_t n, float *out);
QLORA_API size_t qlora_ggml_row_bytes(qlora_type t, size_t n);   // f32/f16/bf16 too; 0 if n invalid
// Whole tensors. qlora_tensor_quantize converts any readable src (f32/f16/bf16/ggml/bnb) into a
// bnb-format dst that owns its buffers (free with qlora_tensor_free). F32/F16/BF16 dst also work.
QLORA_API qlora_result qlora_tensor_quantize(const qlora_tensor *src, qlora_type t, int blocksize,
                                             int double_quant, qlora_tensor *dst);
QLORA_API void qlora_tensor_free(qlora_tensor *t);
// out[(r - row0) * ne0 + c] for rows [row0, row0 + nrows): any type.
QLORA_API qlora_result qlora_tensor_dequantize_rows(const qlora_tensor *t, size_t row0, size_t nrows, float *out);
// >>api-kernels
// The one hot op of inference: a dot product of one weight row with f32 activations.
//   w      : start of the row's data (f32/f16/bf16 elements; ggml blocks; bnb codes)
//   scales : bnb formats only: n/bs decoded absmax values for this row's blocks (else unused)
//   n      : elements; ggml formats: multiple of 32; bnb formats: multiple of bs and the row must
//            start on a block boundary (qlora_matvec handles every other case with the reference)
typedef float (*qlora_dot_fn)(const void *w, const float *scales, const float *x, size_t n, size_t bs);
#define QLORA_DOT_TOLERANCE 1e-5f   // relative (|a-b| <= tol * sum|w_i x_i|) vs the reference
QLORA_API qlora_dot_fn qlora_ctx_dot(const qlora_ctx *ctx, qlora_type t, const char **name);
// The two ops of batched (training / prefill) products, which run as real GEMMs:
// deq: out[0..n) = deq(w) for a row segment, bit-identical to the reference dequantizers
//      (bnb: n a multiple of bs, starting on a block boundary; ggml: n a multiple of 32).
typedef void (*qlora_deq_fn)(const void *w, const float *scales, float *out, size_t n, size_t bs);
QLORA_API qlora_deq_fn qlora_ctx_deq(const qlora_ctx *ctx, qlora_type t, const char **name);
// gemm: the register-tile micro-kernel of the f32 GEMM, MR x NR (per ISA, returned in *mr, *nr):
//     C[i*ldc + j] = (acc ? C[i*ldc + j] : 0) + sum_{k<K} A[i*lda + k] * B[k*NR + j]
// for i < m <= MR, j < n <= NR; B is a packed panel of K rows of NR floats (zero past n). Every C
// element is one running sum in k order, so blocking K (acc = 1) or splitting M, N changes no bit.
typedef void (*qlora_gemm_fn)(size_t K, const float *A, size_t lda, const float *B, float *C, size_t ldc, int m, int n, int acc);
QLORA_API qlora_gemm_fn qlora_ctx_gemm(const qlora_ctx *ctx, int *mr, int *nr, const char **name);
// What a registry line is (kernels_generated/qlora_kernels.inc, QLORA_KERNEL(isa, op, ...)).
// gemm_bf16: the same tile over bf16 pairs (f32 accumulation, `--bf16` training): A rows and the B
// panel hold u32 = two bf16 (k = 2p low half, 2p + 1 high half); K2 = pairs, lda in u32.
typedef void (*qlora_gemm_bf16_fn)(size_t K2, const uint32_t *A, size_t lda, const uint32_t *B, float *C, size_t ldc, int m, int n, int acc);
QLORA_API qlora_gemm_bf16_fn qlora_ctx_gemm_bf16(const qlora_ctx *ctx, int *mr, int *nr, const char **name);
// cvt_bf16: out[p] = bf16(x[2p]) | bf16(x[2p+1]) << 16 (round to nearest even; odd n pads with 0).
typedef void (*qlora_cvt_bf16_fn)(const float *x, size_t n, uint32_t *out);
// dropout: LoRA dropout of x[0..n) whose elements are numbered i0, i0 + 1, ... (mod 2^32):
// dropped when (hash32(i, seed) >> 8) / 2^24 < p, else scaled by 1 / (1 - p); y = that (acc = 0)
// or y += that (acc = 1, the backward). Integer hash: every ISA drops the same elements.
typedef void (*qlora_dropout_fn)(const float *x, float *y, size_t n, uint32_t i0, uint64_t seed, float p, int acc);
// exp: y[i] = exp(a x[i] + b) (y may alias x), returns the sum in double; 0 below -87.34 (no
// denormals), relative error < 2e-7 (Cephes expf). Softmax, cross-entropy, SiLU, attention.
typedef double (*qlora_exp_fn)(const float *x, float *y, size_t n, float a, float b);
typedef enum qlora_kernel_op {
    QLORA_OP_DOT = 0, QLORA_OP_DEQ, QLORA_OP_GEMM, QLORA_OP_GEMM_BF16, QLORA_OP_CVT_BF16, QLORA_OP_DROPOUT, QLORA_OP_EXP,
    QLORA_OP_COUNT
} qlora_kernel_op;
// y[r] = W[r,:] . x  for every row r (W: ne[1] rows of ne[0]); any weight type; threaded over rows.
QLORA_API qlora_result qlora_matvec(qlora_ctx *ctx, const qlora_tensor *W, const float *x, float *y);
// Y[t, r] = W[r,:] . X[t,:] for t < T   (X: T x ne[0], Y: T x ne[1])
QLORA_API qlora_result qlora_matmul(qlora_ctx *ctx, const qlora_tensor *W, const float *X, size_t T, float *Y);
// >>api-formats
typedef struct qlora_str { const char *ptr; size_t len; } qlora_str;

// JSON (RFC 8259) DOM. Strings are unescaped to UTF-8 and NUL-terminated (len excludes the NUL).
typedef enum qlora_json_type {
    QLORA_JSON_NULL, QLORA_JSON_FALSE, QLORA_JSON_TRUE, QLORA_JSON_NUMBER,
    QLORA_JSON_STRING, QLORA_JSON_ARRAY, QLORA_JSON_OBJECT
} qlora_json_type;
typedef struct qlora_json {
    qlora_json_type type;
    double  num;                 // NUMBER
    char   *str;  size_t len;    // STRING value (len bytes)
    char   *key;  size_t key_len;// member name when inside an OBJECT
    size_t  count;               // ARRAY/OBJECT: number of children
    struct qlora_json *child;    // first child
    struct qlora_json *next;     // next sibling
} qlora_json;
// err gets "line L, column C: what" on failure.
QLORA_API qlora_result qlora_json_parse(const char *text, size_t len, qlora_json **out, char *err, size_t errcap);
QLORA_API void qlora_json_free(qlora_json *j);
QLORA_API const qlora_json *qlora_json_get(const qlora_json *obj, const char *key);   // NULL if absent
QLORA_API const qlora_json *qlora_json_at(const qlora_json *arr, size_t i);
QLORA_API double qlora_json_num(const qlora_json *obj, const char *key, double def);
QLORA_API const char *qlora_json_str(const qlora_json *obj, const char *key, const char *def);

// Whole-file access: read-only mmap (falls back to read()). Never written through.
typedef struct qlora_file { const uint8_t *data; size_t size; int mapped; } qlora_file;
QLORA_API qlora_result qlora_file_open(qlora_ctx *ctx, const char *path, qlora_file *f);
QLORA_API void qlora_file_close(qlora_file *f);

// GGUF v2/v3 reader.
typedef enum qlora_gguf_vtype {
    QLORA_GGUF_UINT8 = 0, QLORA_GGUF_INT8, QLORA_GGUF_UINT16, QLORA_GGUF_INT16, QLORA_GGUF_UINT32,
    QLORA_GGUF_INT32, QLORA_GGUF_FLOAT32, QLORA_GGUF_BOOL, QLORA_GGUF_STRING, QLORA_GGUF_ARRAY,
    QLORA_GGUF_UINT64, QLORA_GGUF_INT64, QLORA_GGUF_FLOAT64, QLORA_GGUF_VTYPE_COUNT
} qlora_gguf_vtype;
typedef struct qlora_gguf_kv {
    qlora_str key;
    qlora_gguf_vtype type;
    qlora_gguf_vtype arr_type;   // ARRAY only
    uint64_t   arr_n;            // ARRAY only
    const uint8_t *data;         // scalar value / first array element (raw little-endian)
    qlora_str *strs;             // ARRAY of STRING: arr_n entries; STRING: 1 entry
} qlora_gguf_kv;
typedef struct qlora_gguf_tensor {
    qlora_str name;
    uint32_t  ggml_type;         // raw ggml type id
    qlora_type type;             // mapped (QLORA_TYPE_COUNT if unsupported)
    int       n_dims;
    int64_t   ne[4];
    uint64_t  offset;            // relative to the data section
    const uint8_t *data;         // into the mapping
    size_t    nbytes;
} qlora_gguf_tensor;
typedef struct qlora_gguf {
    qlora_file file;
    uint32_t version;
    uint64_t n_kv, n_tensors;
    qlora_gguf_kv *kv;
    qlora_gguf_tensor *tensors;
    size_t alignment, data_offset;
} qlora_gguf;
QLORA_API qlora_result qlora_gguf_open(qlora_ctx *ctx, const char *path, qlora_gguf **out);
QLORA_API qlora_result qlora_gguf_open_memory(qlora_ctx *ctx, const uint8_t *data, size_t size, qlora_gguf **out);
QLORA_API void qlora_gguf_close(qlora_gguf *g);
QLORA_API const qlora_gguf_kv *qlora_gguf_find(const qlora_gguf *g, const char *key);
QLORA_API const qlora_gguf_tensor *qlora_gguf_find_tensor(const qlora_gguf *g, const char *name);
// Scalars with conversion between numeric types; def when absent or of another kind.
QLORA_API int64_t qlora_gguf_int(const qlora_gguf *g, const char *key, int64_t def);
QLORA_API double  qlora_gguf_float(const qlora_gguf *g, const char *key, double def);
QLORA_API qlora_str qlora_gguf_string(const qlora_gguf *g, const char *key);   // {NULL,0} if absent
// Numeric array element i as double / int64 (any numeric elem type).
QLORA_API double  qlora_gguf_arr_float(const qlora_gguf_kv *kv, uint64_t i);
QLORA_API int64_t qlora_gguf_arr_int(const qlora_gguf_kv *kv, uint64_t i);

// safetensors reader (validates: header JSON, dtypes, shapes, offsets tile the buffer exactly).
typedef struct qlora_st_tensor {
    char     *name;
    char      dtype[12];         // "F32", "F16", "BF16", "U8", "I8", "I32", "I64", ...
    int       n_dims;
    int64_t   shape[8];
    const uint8_t *data;
    size_t    nbytes;
} qlora_st_tensor;
typedef struct qlora_st {
    qlora_file file;
    size_t n;
    qlora_st_tensor *tensors;
    qlora_json *metadata_json;   // whole header (owns names)
} qlora_st;
QLORA_API qlora_result qlora_st_open(qlora_ctx *ctx, const char *path, qlora_st **out);
QLORA_API qlora_result qlora_st_open_memory(qlora_ctx *ctx, const char *name, const uint8_t *data, size_t size, qlora_st **out);
QLORA_API void qlora_st_close(qlora_st *st);
QLORA_API const qlora_st_tensor *qlora_st_find(const qlora_st *st, const char *name);
// Writer: tensors laid out in the safetensors canonical order (dtype desc, then name), header
// padded to 8, {"__metadata__":{"format":"pt"}}. Written to path.tmp, then renamed.
typedef struct qlora_st_entry { const char *name; const char *dtype; int n_dims; int64_t shape[8]; const void *data; size_t nbytes; } qlora_st_entry;
QLORA_API qlora_result qlora_st_write(qlora_ctx *ctx, const char *path, const qlora_st_entry *entries, size_t n);
// >>api-tokenizer
typedef enum qlora_tok_kind {
    QLORA_TOK_SPM = 1,     // SentencePiece BPE with byte fallback (llama, llama2.c tokenizer.bin)
    QLORA_TOK_BPE = 2      // byte-level BPE with GPT-2 style pre-tokenizer (gpt2, SmolLM2, ...)
} qlora_tok_kind;
typedef struct qlora_tokenizer qlora_tokenizer;
// From GGUF metadata (tokenizer.ggml.*): model "llama" or "gpt2".
QLORA_API qlora_result qlora_tokenizer_from_gguf(qlora_ctx *ctx, const qlora_gguf *g, qlora_tokenizer **out);
// llama2.c tokenizer.bin (vocab_size entries; BOS=1, EOS=2).
QLORA_API qlora_result qlora_tokenizer_load_llama2c(qlora_ctx *ctx, const char *path, int vocab_size, qlora_tokenizer **out);
// Hugging Face tokenizer.json (model.type BPE, byte-level or SentencePiece-style).
QLORA_API qlora_result qlora_tokenizer_load_hf(qlora_ctx *ctx, const char *path, qlora_tokenizer **out);
QLORA_API void qlora_tokenizer_free(qlora_tokenizer *t);
// Raw encode of UTF-8 text (special-token strings in the text are recognised as such).
// add_special: prepend BOS when the tokenizer says so (SPM always has one).
QLORA_API qlora_result qlora_tokenize(const qlora_tokenizer *t, const char *text, size_t len, int add_special,
                                      int32_t *ids, size_t cap, size_t *n_out);
// Bytes of one token as it appears in decoded text (byte-fallback tokens give their byte;
// SPM "▁" becomes a space). Returns length; writes up to cap bytes.
QLORA_API size_t qlora_token_to_piece(const qlora_tokenizer *t, int32_t id, char *buf, size_t cap);
// Decode a sequence (SPM: leading space of the first token after BOS is dropped, like llama.cpp).
QLORA_API qlora_result qlora_detokenize(const qlora_tokenizer *t, const int32_t *ids, size_t n, char *buf, size_t cap, size_t *len_out);
QLORA_API qlora_tok_kind qlora_tokenizer_kind(const qlora_tokenizer *t);
QLORA_API int32_t qlora_tokenizer_n_vocab(const qlora_tokenizer *t);
QLORA_API int32_t qlora_tokenizer_bos(const qlora_tokenizer *t);   // -1 if none
QLORA_API int32_t qlora_tokenizer_eos(const qlora_tokenizer *t);
QLORA_API int32_t qlora_tokenizer_find(const qlora_tokenizer *t, const char *piece);   // -1 if absent
QLORA_API int qlora_tokenizer_is_eog(const qlora_tokenizer *t, int32_t id);   // eos, <|im_end|>, eot...
// Chat: ChatML (<|im_start|>role\ncontent<|im_end|>\n ... <|im_start|>assistant\n) when the vocab has
// <|im_start|>; Llama-2 [INST] otherwise. Returns bytes needed (excluding NUL); writes up to cap.
typedef struct qlora_chat_msg { const char *role; const char *content; } qlora_chat_msg;
QLORA_API size_t qlora_chat_render(const qlora_tokenizer *t, const qlora_chat_msg *msgs, size_t n,
                                   int add_generation_prompt, char *buf, size_t cap);
// >>api-model
// Llama family: RMSNorm, RoPE, GQA attention, SwiGLU MLP, tied or separate lm_head.
typedef enum qlora_rope_scaling {
    QLORA_ROPE_SCALING_NONE = 0,
    QLORA_ROPE_SCALING_LINEAR,      // positions divided by factor
    QLORA_ROPE_SCALING_LLAMA3       // Llama-3.1 frequency-dependent scaling
} qlora_rope_scaling;

typedef struct qlora_model_config {
    int   dim;              // hidden size C
    int   hidden_dim;       // MLP inner size F
    int   n_layers;         // L
    int   n_heads;          // H
    int   n_kv_heads;       // Hkv (GQA: H % Hkv == 0)
    int   head_dim;         // D = dim / H unless the checkpoint says otherwise
    int   vocab_size;       // V
    int   max_seq_len;      // context length the model was trained for
    float norm_eps;         // RMSNorm epsilon (default 1e-5)
    float rope_theta;       // RoPE base (default 10000)
    int   rope_dim;         // rotated dims per head (default D)
    qlora_rope_scaling rope_scaling;
    float rope_factor;                    // linear / llama3 factor
    float rope_low_freq_factor, rope_high_freq_factor; int rope_orig_ctx;   // llama3
    int   tied_embeddings;  // lm_head shares token_embd
    int   has_qkv_bias;     // Qwen2
} qlora_model_config;

typedef struct qlora_layer {
    qlora_tensor attn_norm;           // (C)
    qlora_tensor wq, wk, wv, wo;      // (H*D, C) (Hkv*D, C) (Hkv*D, C) (C, H*D); Hugging Face layout
                                      // (rotate_half RoPE), also when loaded from GGUF / llama2.c
    qlora_tensor bq, bk, bv;          // optional biases (type F32, data NULL when absent)
    qlora_tensor ffn_norm;            // (C)
    qlora_tensor w_gate, w_up, w_down;// (F, C) (F, C) (C, F)
} qlora_layer;

typedef struct qlora_model {
    qlora_model_config cfg;
    char          arch[32];           // "llama"
    char          source[16];         // "gguf", "hf", "llama2c"
    qlora_tensor  tok_embd;           // (V, C)
    qlora_tensor  out_norm;           // (C)
    qlora_tensor  output;             // (V, C); same data as tok_embd when tied
    qlora_layer  *layers;             // [L]
    qlora_tokenizer *tok;             // may be NULL (llama2.c without --tokenizer)
    // owned sources kept alive for mmap'ed weights
    qlora_gguf   *gguf;
    qlora_st    **st; size_t n_st;
    qlora_file    raw;                // llama2.c checkpoint
    char         *chat_template;      // from GGUF / tokenizer_config.json, may be NULL
    const struct qlora_lora *adapter; // optional LoRA applied by qlora_model_forward (not owned)
} qlora_model;

typedef struct qlora_load_options {
    const char *tokenizer_path;       // llama2.c tokenizer.bin, or a tokenizer.json / .gguf to use instead
} qlora_load_options;

// MODEL is a .gguf file, a Hugging Face model directory (config.json + *.safetensors), or a
// llama2.c checkpoint (.bin, legacy or v1). Weights stay mmap'ed where their format allows.
QLORA_API qlora_result qlora_model_load(qlora_ctx *ctx, const char *path, const qlora_load_options *opt, qlora_model **out);
QLORA_API void qlora_model_free(qlora_model *m);
// Re-quantize every linear weight of the blocks into a bnb format (NF4/FP4/INT4/INT8, optional
// double quant). Embeddings and lm_head stay as they are (bitsandbytes modules_to_not_convert).
QLORA_API qlora_result qlora_model_quantize(qlora_ctx *ctx, qlora_model *m, qlora_type t, int blocksize, int double_quant);
QLORA_API size_t qlora_model_n_params(const qlora_model *m);
QLORA_API size_t qlora_model_weight_bytes(const qlora_model *m);   // bytes the weights occupy (codes + scales)
// Writes a Hugging Face model directory: config.json and model.safetensors (F32, HF names).
QLORA_API qlora_result qlora_model_save_hf(qlora_ctx *ctx, const qlora_model *m, const char *dir);

// KV cache + scratch for incremental decoding.
typedef struct qlora_kv_cache qlora_kv_cache;
QLORA_API qlora_result qlora_kv_cache_create(qlora_ctx *ctx, const qlora_model *m, int n_ctx, qlora_kv_cache **out);
QLORA_API void qlora_kv_cache_free(qlora_kv_cache *kv);
QLORA_API int  qlora_kv_cache_pos(const qlora_kv_cache *kv);     // tokens already in the cache
QLORA_API void qlora_kv_cache_reset(qlora_kv_cache *kv);
// Runs T tokens at positions pos..pos+T-1 (pos = kv_cache_pos) and appends them to the cache.
// logits: NULL, or (V) for the last token, or (T, V) when all_logits is set.
QLORA_API qlora_result qlora_model_forward(qlora_ctx *ctx, const qlora_model *m, qlora_kv_cache *kv,
                                           const int32_t *tokens, int T, float *logits, int all_logits);

// Sampling: temperature 0 = greedy (argmax, lowest id on ties).
typedef struct qlora_sampler {
    float    temperature;   // default 0.8 when the struct is zeroed? no: 0 = greedy
    int      top_k;         // 0 = off
    float    top_p;         // 0 or 1 = off
    uint64_t seed;          // xorshift64* state seed
    uint64_t state;         // internal
} qlora_sampler;
QLORA_API int32_t qlora_sample(qlora_sampler *s, float *logits, int V);
// Feeds the prompt, then samples up to n_max tokens, stopping at end-of-generation tokens.
// on_token (optional) is called for every generated id; return non-zero to stop.
QLORA_API qlora_result qlora_generate(qlora_ctx *ctx, const qlora_model *m, qlora_kv_cache *kv,
                                      const int32_t *prompt, int n_prompt, qlora_sampler *s, int n_max,
                                      int32_t *out, int *n_out,
                                      int (*on_token)(void *user, int32_t id), void *user);
// Mean negative log-likelihood (nats/token) of tokens[1..n) given the prefix, in windows of n_ctx.
QLORA_API qlora_result qlora_model_nll(qlora_ctx *ctx, const qlora_model *m, const int32_t *tokens, int n,
                                       int n_ctx, double *mean_nll, int *n_scored);
// >>api-lora
// LoRA adapters with PEFT semantics: y = W x + scaling * B (A dropout(x)),
// A: (r, in) kaiming-uniform(a=sqrt(5)) i.e. U(-1/sqrt(in), 1/sqrt(in)), B: (out, r) zeros,
// scaling = alpha / r (or alpha / sqrt(r) with use_rslora).
typedef enum qlora_module {
    QLORA_MOD_Q = 0, QLORA_MOD_K, QLORA_MOD_V, QLORA_MOD_O,
    QLORA_MOD_GATE, QLORA_MOD_UP, QLORA_MOD_DOWN, QLORA_MOD_COUNT
} qlora_module;
#define QLORA_MODS_ALL_LINEAR 0x7Fu                 // every linear of the blocks (lm_head excluded)
#define QLORA_MODS_DEFAULT ((1u << QLORA_MOD_Q) | (1u << QLORA_MOD_V))   // PEFT default for llama

typedef enum qlora_bias_mode { QLORA_BIAS_NONE = 0, QLORA_BIAS_ALL, QLORA_BIAS_LORA_ONLY } qlora_bias_mode;

typedef struct qlora_lora_config {
    int      r;               // rank, default 8
    float    alpha;           // lora_alpha, default 8 (PEFT); the CLI defaults to 16
    float    dropout;         // on the LoRA input only, default 0
    unsigned target_mask;     // bit (1 << QLORA_MOD_x); 0 = QLORA_MODS_DEFAULT
    qlora_bias_mode bias;     // biases of the base model that become trainable (Llama has none)
    int      use_rslora;      // scaling = alpha / sqrt(r)
    uint64_t seed;            // init of A
} qlora_lora_config;

// PEFT module name ("q_proj", ...) and its Hugging Face parent ("self_attn" / "mlp").
QLORA_API const char *qlora_module_name(qlora_module m);
QLORA_API const char *qlora_module_parent(qlora_module m);
// "q_proj,v_proj" | "all-linear" -> mask. Unknown names are an error listing the valid ones.
QLORA_API qlora_result qlora_lora_parse_targets(qlora_ctx *ctx, const char *list, unsigned *mask);

typedef struct qlora_lora_module {
    int    layer;
    qlora_module mod;
    int    in, out;           // W is (out, in)
    float *A, *dA;            // (r, in)
    float *B, *dB;            // (out, r)   Hugging Face row order (as PEFT stores it)
    float *bias, *dbias;      // (out) trainable base bias (bias mode), else NULL
} qlora_lora_module;

typedef struct qlora_lora {
    qlora_lora_config cfg;    // resolved (defaults filled in)
    float  scaling;
    int    n_layers;
    qlora_lora_module *mods;  // [n_mods], ordered by layer then module (PEFT named_modules order)
    int    n_mods;
    qlora_lora_module **by;   // [n_layers * QLORA_MOD_COUNT]: module or NULL
    float *params;            // every trainable float, one block (A, B, bias of each module)
    float *grads;             // same layout
    size_t n_params;
} qlora_lora;

QLORA_API qlora_result qlora_lora_create(qlora_ctx *ctx, const qlora_model *m, const qlora_lora_config *cfg, qlora_lora **out);
QLORA_API void qlora_lora_free(qlora_lora *l);
QLORA_API qlora_lora_module *qlora_lora_get(const qlora_lora *l, int layer, qlora_module mod);
QLORA_API void qlora_lora_zero_grad(qlora_lora *l);
// Element counts of the trainable tensors in params order (A, B[, bias] per module): the segments
// the optimizers need. Returns the count; writes up to cap (seg_len may be NULL to size).
QLORA_API size_t qlora_lora_segments(const qlora_lora *l, size_t *seg_len, size_t cap);
// >>api-optim
// Optimizers over ONE flat f32 block of trainable floats (qlora_lora.params / .grads), cut into
// segments, one per parameter tensor (A then B of each LoRA module, ...). Segments matter for
// the bitsandbytes rules: a tensor with < min_8bit_size elements keeps 32-bit state, and the
// 256-element quantization blocks restart at every tensor (they never span two tensors).
//
//   QLORA_OPTIM_ADAMW               torch.optim.AdamW(foreach=False) in f32, op for op:
//                                   p *= 1 - lr*wd; m = lerp(m, g, 1-b1); v = v*b2 + (1-b2)*g*g;
//                                   p += -(lr/c1) * m / (sqrt(v)/sqrt(c2) + eps)
//   QLORA_OPTIM_ADAMW_8BIT          bitsandbytes AdamW8bit (blockwise, blocksize 256): m in 8 bits
//                                   on the signed dynamic map, v on the unsigned one, one f32 absmax
//                                   per block each. Semantics of bnb 0.50's CPU backend
//                                   (_optimizer_update_8bit_blockwise_cpu: decay BEFORE the step,
//                                   like torch) with the exact nearest-code requantization of
//                                   bnb's default (PyTorch) backend instead of the CPU LUT.
//                                   Segments < min_8bit_size use bnb's 32-bit CPU update
//                                   (_optimizer_update_32bit_cpu).
//   QLORA_OPTIM_PAGED_ADAMW_8BIT    the same numbers; the state lives in a MAP_SHARED mapping of a
//   QLORA_OPTIM_PAGED_ADAMW_32BIT   file (bnb PagedAdamW32bit: every segment 32-bit) so the OS can
//                                   page it out under memory pressure (bnb uses CUDA unified memory).
// Hyper-parameters are doubles because torch/bnb compute the bias corrections and the scalars in
// Python floats and round to f32 only when the scalar meets the tensor; we do the same.
typedef enum qlora_optim_kind {
    QLORA_OPTIM_ADAMW = 0,
    QLORA_OPTIM_ADAMW_8BIT,
    QLORA_OPTIM_PAGED_ADAMW_8BIT,
    QLORA_OPTIM_PAGED_ADAMW_32BIT,
    QLORA_OPTIM_COUNT
} qlora_optim_kind;

typedef struct qlora_optim_config {
    qlora_optim_kind kind;       // default QLORA_OPTIM_ADAMW
    double beta1;                // 0 = 0.9   (HF adam_beta1)
    double beta2;                // 0 = 0.999 (HF adam_beta2)
    double eps;                  // 0 = 1e-8  (HF adam_epsilon)
    double weight_decay;         // decoupled (AdamW); default 0 (HF weight_decay)
    size_t min_8bit_size;        // 0 = 4096 (bnb): smaller segments keep f32 state
    const char *paged_dir;       // paged kinds: directory of the state file; NULL = $TMPDIR or /tmp
} qlora_optim_config;

typedef struct qlora_optim qlora_optim;

QLORA_API const char *qlora_optim_kind_name(qlora_optim_kind k);  // "adamw_torch", "adamw_8bit", ...
// Fills the defaults in (zero fields -> the values above). INVALID_ARG for betas outside [0,1),
// eps/weight_decay < 0 or an unknown kind.
QLORA_API qlora_result qlora_optim_config_resolve(qlora_optim_config *cfg);
// Bytes of optimizer state (m/v, or codes + absmax) for these segments; 0 if cfg is invalid or
// the size overflows. This is what lives in RAM (or in the paged file).
QLORA_API size_t qlora_optim_state_bytes(const qlora_optim_config *cfg, const size_t *seg_len, size_t n_seg);
// seg_len[n_seg]: element counts of the tensors, laid out back to back in params/grads.
// ctx (may be NULL) provides threads for the step and receives error messages.
QLORA_API qlora_result qlora_optim_create(qlora_ctx *ctx, const qlora_optim_config *cfg,
                                          const size_t *seg_len, size_t n_seg, qlora_optim **out);
QLORA_API void qlora_optim_free(qlora_optim *opt);   // paged: unmaps and deletes the file
// One update of params[n] from grads[n] (n = sum of seg_len) with learning rate lr (from the
// scheduler, qlora_lr_at). Increments the step counter first (the first update uses step 1).
// Bitwise identical for any thread count.
QLORA_API qlora_result qlora_optim_step(qlora_optim *opt, float *params, const float *grads, double lr);
QLORA_API int64_t qlora_optim_steps(const qlora_optim *opt);      // updates done so far
QLORA_API size_t  qlora_optim_nparams(const qlora_optim *opt);    // sum of seg_len
QLORA_API int     qlora_optim_segment_is_8bit(const qlora_optim *opt, size_t seg);
QLORA_API const char *qlora_optim_paged_path(const qlora_optim *opt);  // state file, NULL if not paged

// Exact resume. qlora_optim_state_entries fills up to cap safetensors entries that point INTO
// the optimizer (valid until the next step/load/free) and returns how many there are (call with
// cap = 0 to size the array): "optim.step" I64[1], "optim.layout" I64[3 + 2*n_seg] = {1 (format
// version), 256 (blocksize), n_seg, then (len, bits) per segment}, and per segment i:
// 32-bit: "optim.<i>.exp_avg", "optim.<i>.exp_avg_sq" F32[len] (torch names);
// 8-bit:  "optim.<i>.state1", "optim.<i>.state2" U8[len], "optim.<i>.absmax1", "optim.<i>.absmax2"
//         F32[ceil(len/256)] (bnb names). Pass them to qlora_st_write. Host must be little-endian.
QLORA_API size_t qlora_optim_state_entries(const qlora_optim *opt, qlora_st_entry *out, size_t cap);
// Restores step and state from a safetensors file written from those entries. Validates every
// name, dtype, shape and byte count against this optimizer's layout and every value (finite, v
// and absmax >= 0, step >= 0) before touching anything: on error the optimizer is unchanged.
QLORA_API qlora_result qlora_optim_load_state(qlora_optim *opt, const qlora_st *st);

// torch.nn.utils.clip_grad_norm_(max_norm, norm_type=2): total = ||(||g_s||_2)_s||_2 over the
// segments, each sum of squares accumulated in double (torch: f32 per-tensor norms, so the norm
// may differ from torch in the last f32 bit). coef = max_norm / (total + 1e-6) in f32 (as torch:
// reciprocal(total + 1e-6) * max_norm), clamped to 1, and ALWAYS multiplied in (even when 1).
// *total_norm (may be NULL) gets the pre-clip norm. A NaN/Inf norm leaves grads untouched and
// returns QLORA_ERR_NUMERIC. max_norm <= 0: only computes the norm.
QLORA_API qlora_result qlora_clip_grad_norm(float *grads, const size_t *seg_len, size_t n_seg,
                                            double max_norm, float *total_norm);

// Learning-rate schedules with transformers' semantics (optimization.py); W = warmup, T = total:
//   LINEAR                 k/W for k < W, else max(0, (T-k)/max(1, T-W))
//   COSINE                 k/W for k < W, else max(0, 0.5*(1 + cos(pi*0.5*2*progress))),
//                          progress = (k-W)/max(1, T-W)   (num_cycles 0.5)
//   CONSTANT               1 (HF "constant" ignores warmup)
//   CONSTANT_WITH_WARMUP   k/max(1, W) for k < W, else 1
// returns base_lr * lambda(k) in double, for the k-th optimizer update (k = 0, 1, ...): LambdaLR
// semantics, so with W > 0 the first update has lr 0.
typedef enum qlora_lr_schedule {
    QLORA_LR_LINEAR = 0,
    QLORA_LR_COSINE,
    QLORA_LR_CONSTANT,
    QLORA_LR_CONSTANT_WITH_WARMUP,
    QLORA_LR_COUNT
} qlora_lr_schedule;
QLORA_API double qlora_lr_at(qlora_lr_schedule kind, double base_lr, int64_t step, int64_t warmup, int64_t total);
// "linear" | "cosine" | "constant" | "constant_with_warmup" (HF lr_scheduler_type) -> kind.
QLORA_API qlora_result qlora_lr_schedule_parse(const char *name, qlora_lr_schedule *out);
// >>api-data
// Training data: a file becomes a list of examples, each a row of token ids plus labels in the
// Hugging Face convention (labels[t] = ids[t] where the loss counts, -100 where it does not; the
// model shifts, so labels[t] is the target predicted at position t-1). Rows are then cut into
// batches of B x T with right padding (pad id = EOS, label -100), optionally packed.
#define QLORA_IGNORE_INDEX (-100)

typedef enum qlora_data_format {
    QLORA_DATA_AUTO = 0,   // from the extension: .txt text; .jsonl/.json by the keys of the first
                           // record (messages/conversations chat, instruction alpaca, else jsonl);
                           // others: fortune when a line is exactly "%", else text
    QLORA_DATA_TEXT,       // the whole file tokenized once, cut into max_seq_length windows
    QLORA_DATA_JSONL,      // one object per line, cfg.field holds the text; loss on all of it
    QLORA_DATA_ALPACA,     // instruction/input/output (also self-instruct instances[], dolly
                           // context/response); Stanford Alpaca prompt; loss on output + EOS
    QLORA_DATA_CHAT,       // {"messages":[{"role","content"}]} (or ShareGPT "conversations" with
                           // from/value, OpenAssistant role "prompter"); loss on assistant turns
    QLORA_DATA_FORTUNE,    // Debian fortune file: records separated by lines holding only "%"
    QLORA_DATA_FORMAT_COUNT
} qlora_data_format;

// Zero-initialised = defaults.
typedef struct qlora_data_config {
    int      max_seq_length;    // T (default 256); longer examples are truncated (start kept)
    qlora_data_format format;   // default AUTO
    const char *field;          // jsonl: key of the text (default "text")
    int      packing;           // concatenate examples (each ending in EOS) into full T windows
    int      no_eos;            // do not append EOS to jsonl/alpaca/fortune examples
    int      skip_long_prompts; // skip (and count) examples whose prompt fills T, instead of failing
    int      pad_to_max;        // batches always T wide (default: as wide as the longest row);
                                // the trainer copies it into qlora_data_loader.pad_to_max
    uint64_t seed;              // shuffling and validation split (the CLI passes --seed, 42)
    size_t   max_samples;       // keep the first N examples of the file (0 = all)
    double   validation_split;  // fraction in [0,1) held out for eval when no eval file is given
} qlora_data_config;

// All examples of a dataset live in two arrays (one allocation per role, llm.c style):
// example i is ids[off[i] .. off[i+1]) with its labels at the same positions.
typedef struct qlora_dataset {
    size_t   n;                 // examples (rows)
    size_t  *off;               // [n + 1]
    int32_t *ids;               // [off[n]]
    int32_t *labels;            // [off[n]] id or QLORA_IGNORE_INDEX
    int      max_seq_length;    // every example has 1 <= length <= max_seq_length
    int32_t  pad_id;            // EOS (0 when the tokenizer has none)
    qlora_data_format format;   // resolved
    size_t   n_tokens;          // off[n]
    size_t   n_loss_tokens;     // targets: labels != -100 at row positions >= 1 (after the shift)
    size_t   n_truncated;       // examples cut at max_seq_length
    size_t   n_skipped;         // examples dropped (skip_long_prompts)
    int      packed;            // rows are packed windows
    char    *name;              // file path, for messages
} qlora_dataset;

// Parses and tokenizes path. Errors name the file and line: "data.jsonl:3: malformed JSON ...",
// "data.jsonl:2: missing field \"text\"", "data.jsonl: empty dataset", "alpaca.jsonl:5:
// max-seq-length 16 is smaller than the prompt (40 tokens)".
QLORA_API qlora_result qlora_dataset_load(qlora_ctx *ctx, const qlora_tokenizer *tok, const char *path,
                                          const qlora_data_config *cfg, qlora_dataset **out);
// Same from a memory buffer; name is used in messages and for AUTO (its extension).
QLORA_API qlora_result qlora_dataset_load_memory(qlora_ctx *ctx, const qlora_tokenizer *tok, const char *name,
                                                 const char *data, size_t size, const qlora_data_config *cfg,
                                                 qlora_dataset **out);
QLORA_API void qlora_dataset_free(qlora_dataset *ds);
QLORA_API size_t qlora_dataset_length(const qlora_dataset *ds, size_t i);   // tokens of example i
// Deterministic train/eval split (like datasets' train_test_split): n_eval = ceil(fraction * n),
// chosen by a seeded permutation; both keep file order. Both parts must be non-empty.
QLORA_API qlora_result qlora_dataset_split(qlora_ctx *ctx, const qlora_dataset *ds, double fraction, uint64_t seed,
                                           qlora_dataset **train, qlora_dataset **eval);
// Packing: examples concatenated in order (labels kept) and cut into windows of T tokens; the last
// window may be shorter. Examples should end in EOS so the model learns the boundaries.
QLORA_API qlora_result qlora_dataset_pack(qlora_ctx *ctx, const qlora_dataset *ds, int T, qlora_dataset **out);
// Everything the trainer needs from the config: load train (and eval_path when not NULL, else the
// validation_split part, else *eval = NULL), pack both when cfg->packing.
QLORA_API qlora_result qlora_data_prepare(qlora_ctx *ctx, const qlora_tokenizer *tok, const char *train_path,
                                          const char *eval_path, const qlora_data_config *cfg,
                                          qlora_dataset **train, qlora_dataset **eval);
QLORA_API const char *qlora_data_format_name(qlora_data_format f);
QLORA_API qlora_result qlora_data_format_parse(qlora_ctx *ctx, const char *name, qlora_data_format *out);

// A batch: B rows x T columns, row-major; rows shorter than T are padded with pad_id / -100.
typedef struct qlora_batch {
    int      B, T;              // rows filled, columns used (T <= T_cap)
    int      B_cap, T_cap;
    int32_t *ids;               // (B, T)
    int32_t *labels;            // (B, T)
    int32_t *lengths;           // (B) real tokens per row
    size_t   n_loss;            // targets in the batch: labels != -100 at columns >= 1
} qlora_batch;
QLORA_API qlora_result qlora_batch_init(qlora_ctx *ctx, qlora_batch *b, int B, int T);
QLORA_API void qlora_batch_free(qlora_batch *b);

// Position in the data stream, as plain integers so a checkpoint can store it and resume exactly.
// The order of epoch e is a Fisher-Yates permutation driven by splitmix64(seed, e): nothing else
// is needed to rebuild it.
typedef struct qlora_data_cursor {
    uint64_t epoch;             // completed passes
    uint64_t pos;               // rows of the current epoch already handed out
    uint64_t seed;              // shuffling seed
    uint64_t rows;              // dataset rows when saved (restore refuses other data; 0 = unchecked)
} qlora_data_cursor;

typedef struct qlora_data_loader {
    const qlora_dataset *ds;
    int      B;                 // rows per batch
    int      shuffle;           // permute rows every epoch
    int      repeat;            // wrap to the next epoch (training); else next() returns 0 at the end
    int      pad_to_max;        // batches T_cap wide
    qlora_data_cursor cur;
    size_t  *perm;              // [ds->n] order of the current epoch
    uint64_t perm_epoch;        // epoch perm was built for (UINT64_MAX: none)
} qlora_data_loader;

// Training: shuffle = 1, repeat = 1. Eval: shuffle = 0, repeat = 0.
QLORA_API qlora_result qlora_loader_init(qlora_ctx *ctx, qlora_data_loader *L, const qlora_dataset *ds, int B,
                                         int shuffle, int repeat, uint64_t seed);
QLORA_API void qlora_loader_free(qlora_data_loader *L);
// Fills b with the next min(B, rows left in the epoch) rows and returns how many (0: an eval pass
// is over; call qlora_loader_rewind to start again). The last batch of an epoch may be smaller.
QLORA_API int  qlora_loader_next(qlora_data_loader *L, qlora_batch *b);
QLORA_API void qlora_loader_rewind(qlora_data_loader *L);
QLORA_API qlora_data_cursor qlora_loader_cursor(const qlora_data_loader *L);
QLORA_API qlora_result qlora_loader_restore(qlora_ctx *ctx, qlora_data_loader *L, qlora_data_cursor c);
QLORA_API size_t qlora_loader_batches_per_epoch(const qlora_data_loader *L);   // ceil(n / B)
// >>api-adapter
// Adapter files and merging. Three on-disk forms of one LoRA:
//   PEFT dir   adapter_config.json + adapter_model.safetensors, loadable by
//              PeftModel.from_pretrained (keys base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight
//              (r, in) and .lora_B.weight (out, r); rows as qlora.h holds them: HF rotate_half order)
//   GGUF LoRA  llama.cpp --lora file (blk.N.attn_q.weight.lora_a ne=[in, r], .lora_b ne=[r, out],
//              q/k lora_b rows permuted to GGUF's adjacent-pair RoPE order)
//   merged     W <- deq(W) + scaling * B A, then qlora_model_save_gguf / qlora_model_save_hf
// Every writer is atomic (path.tmp + rename).

// PEFT v0.20.0 adapter directory (created if needed). base_model_name may be NULL.
QLORA_API qlora_result qlora_lora_save_peft(qlora_ctx *ctx, const qlora_lora *l, const qlora_model *m,
                                            const char *dir, const char *base_model_name);
// Reads a PEFT LoRA directory (F32/F16/BF16 tensors; target_modules as names, full paths or
// "all-linear"). Every tensor is shape-checked; missing/extra keys are errors naming key and file.
QLORA_API qlora_result qlora_lora_load_peft(qlora_ctx *ctx, const qlora_model *m, const char *dir, qlora_lora **out);

// Minimal GGUF v3 writer: key/values (set again = replace) and F32/F16/BF16 tensors. Tensor data is
// either borrowed (must stay alive until qlora_gguf_writer_write) or converted on the fly from a
// qlora_tensor of any readable type while writing, so a whole model never needs a second copy.
typedef struct qlora_gguf_writer qlora_gguf_writer;
QLORA_API qlora_result qlora_gguf_writer_create(qlora_ctx *ctx, qlora_gguf_writer **out);
QLORA_API void qlora_gguf_writer_free(qlora_gguf_writer *w);
QLORA_API qlora_result qlora_gguf_writer_set_u32(qlora_gguf_writer *w, const char *key, uint32_t v);
QLORA_API qlora_result qlora_gguf_writer_set_i32(qlora_gguf_writer *w, const char *key, int32_t v);
QLORA_API qlora_result qlora_gguf_writer_set_f32(qlora_gguf_writer *w, const char *key, float v);
QLORA_API qlora_result qlora_gguf_writer_set_bool(qlora_gguf_writer *w, const char *key, int v);
QLORA_API qlora_result qlora_gguf_writer_set_str(qlora_gguf_writer *w, const char *key, const char *v);
// Array of numbers: elem_type one of the scalar qlora_gguf_vtype, data = n raw little-endian elements.
QLORA_API qlora_result qlora_gguf_writer_set_arr(qlora_gguf_writer *w, const char *key, qlora_gguf_vtype elem_type,
                                                 const void *data, size_t n);
QLORA_API qlora_result qlora_gguf_writer_set_str_arr(qlora_gguf_writer *w, const char *key, const qlora_str *v, size_t n);
// Copies one key/value of an open GGUF verbatim (any type, nested arrays included).
QLORA_API qlora_result qlora_gguf_writer_copy_kv(qlora_gguf_writer *w, const qlora_gguf *g, const qlora_gguf_kv *kv);
// ne in ggml order (ne[0] fastest). type F32/F16/BF16; data = the tensor's bytes (borrowed).
QLORA_API qlora_result qlora_gguf_writer_add(qlora_gguf_writer *w, const char *name, qlora_type type,
                                             int n_dims, const int64_t *ne, const void *data);
// Same, converting src (any readable type, rows = src->ne[1]) to type while writing.
QLORA_API qlora_result qlora_gguf_writer_add_tensor(qlora_gguf_writer *w, const char *name, qlora_type type,
                                                    const qlora_tensor *src);
QLORA_API qlora_result qlora_gguf_writer_write(qlora_ctx *ctx, qlora_gguf_writer *w, const char *path);

// llama.cpp LoRA adapter GGUF (general.type=adapter, adapter.type=lora, adapter.lora.alpha; for
// rsLoRA alpha*sqrt(r) is written so that llama.cpp's alpha/r gives alpha/sqrt(r)).
QLORA_API qlora_result qlora_lora_export_gguf(qlora_ctx *ctx, const qlora_lora *l, const qlora_model *m, const char *path);
QLORA_API qlora_result qlora_peft_to_gguf(qlora_ctx *ctx, const qlora_model *m, const char *peft_dir, const char *out_path);

// Merge: every adapted W becomes an owned F32 tensor deq(W) + scaling * B A (PEFT merge_and_unload;
// PEFT re-quantizes a 4-bit base afterwards, qlora.h keeps f32: see qlora_merge_report for the cost
// of re-quantizing). Trained biases (bias mode) replace the base biases. The lora is not changed.
QLORA_API qlora_result qlora_model_merge_lora(qlora_ctx *ctx, qlora_model *m, const qlora_lora *l);
// Per adapted module of l: error of quantizing the model's current (e.g. merged f32) weight to
// type/blocksize/double_quant, against that weight.
typedef struct qlora_merge_stat {
    int layer; qlora_module mod;
    double max_err, rms_err;       // max |q(W) - W|, sqrt(mean (q(W) - W)^2)
    double rms_w;                  // sqrt(mean W^2), for relative numbers
} qlora_merge_stat;
QLORA_API qlora_result qlora_merge_report(qlora_ctx *ctx, const qlora_model *m, const qlora_lora *l, qlora_type type,
                                          int blocksize, int double_quant, qlora_merge_stat *stats /* [l->n_mods] */);
// llama.cpp-loadable GGUF of the whole model: type F32 / F16 / BF16 for the matrices (norms and
// biases F32), llama.* hyper-parameters, tokenizer.* copied verbatim from the source GGUF (or built
// from the loaded tokenizer), q/k rows permuted back to GGUF's adjacent-pair RoPE order.
QLORA_API qlora_result qlora_model_save_gguf(qlora_ctx *ctx, const qlora_model *m, const char *path, qlora_type type);
// >>api-train
// Training forward/backward of a Llama with LoRA adapters over a frozen (quantized) base.
// Every activation buffer is sized up front (qlora_train_memory) and allocated once; nothing
// allocates inside forward/backward.
typedef struct qlora_train qlora_train;

typedef struct qlora_train_config {
    int batch;                  // B sequences per micro-batch
    int seq_len;                // T tokens per sequence
    int grad_checkpointing;     // keep only block inputs; recompute each block in backward
    int bf16;                   // frozen-weight GEMMs in bf16 x bf16 -> f32 (HF --bf16 autocast);
                                // LoRA, norms, attention and the loss stay f32
} qlora_train_config;

typedef struct qlora_train_memory_plan {
    size_t activations;         // saved for backward
    size_t scratch;             // working buffers
    size_t lora;                // adapter params + grads
    size_t kernels;             // GEMM panels + attention tiles (per thread) + bf16 activation copy
    size_t total;
} qlora_train_memory_plan;

// ctx: the context that will train (its threads and kernel tiles size the panels); NULL = 1 thread, reference tiles.
QLORA_API void qlora_train_memory(const qlora_ctx *ctx, const qlora_model *m, const qlora_lora *l, const qlora_train_config *cfg, qlora_train_memory_plan *plan);
QLORA_API qlora_result qlora_train_create(qlora_ctx *ctx, const qlora_model *m, qlora_lora *l, const qlora_train_config *cfg, qlora_train **out);
QLORA_API void qlora_train_free(qlora_train *t);
// Forward over tokens (B*T). labels (B*T) follow Hugging Face causal-LM semantics: position t of a
// row predicts labels[t+1] of that row; -100 is ignored. Returns the SUM of token losses and the
// number of scored targets. When grad_scale != 0, the gradient of grad_scale * sum_loss with
// respect to the final hidden state is prepared (fused cross-entropy), ready for qlora_train_backward.
// logits (optional): (B*T, V) written out. dropout_seed drives LoRA dropout (deterministic).
QLORA_API qlora_result qlora_train_forward(qlora_ctx *ctx, qlora_train *t, const int32_t *tokens, const int32_t *labels,
                                           float grad_scale, uint64_t dropout_seed, double *loss_sum, int *n_targets, float *logits);
// Accumulates (+=) d(grad_scale * sum_loss)/d(param) into the adapter's grads.
QLORA_API qlora_result qlora_train_backward(qlora_ctx *ctx, qlora_train *t);

// >>api-trainer
// The loop of Hugging Face's Trainer for one LoRA: gradient accumulation, clipping, schedule,
// optimizer, logging, eval, atomic checkpoints (checkpoint-N/ = PEFT adapter + optimizer state +
// trainer_state.json) and exact resume. Zero-initialised fields mean the defaults in brackets.
typedef enum qlora_train_event_kind {
    QLORA_EV_START = 0, QLORA_EV_STEP, QLORA_EV_LOG, QLORA_EV_EVAL, QLORA_EV_SAVE, QLORA_EV_DONE, QLORA_EV_INTERRUPTED
} qlora_train_event_kind;
typedef struct qlora_train_event {
    qlora_train_event_kind kind;
    int64_t step, total_steps;
    double  epoch;
    double  loss;               // LOG: mean training loss since the last log
    double  learning_rate;      // LOG: lr used by the last update
    double  grad_norm;          // LOG: pre-clip norm of the last update
    double  tokens_per_second;  // LOG/STEP: non-padding tokens / wall time since start (or resume)
    double  eta_seconds;
    double  eval_loss;          // EVAL
    const char *path;           // SAVE: checkpoint directory; START: resumed-from or NULL
} qlora_train_event;

typedef struct qlora_trainer_config {
    int      batch;             // per-device train batch size [4]
    int      seq_len;           // max sequence length T [256]
    int      grad_checkpointing;
    int      bf16;              // see qlora_train_config
    int      grad_accum;        // gradient accumulation steps [1]
    int64_t  max_steps;         // > 0: wins over num_epochs
    double   num_epochs;        // [3]
    double   learning_rate;     // [2e-4]
    qlora_lr_schedule schedule; // [linear]
    int64_t  warmup_steps;      // [0]
    double   max_grad_norm;     // [1.0]; < 0 disables clipping
    qlora_optim_config optim;   // [adamw, HF defaults]
    int64_t  logging_steps;     // [10]
    int64_t  eval_steps;        // 0: evaluate only at the end (when there is eval data)
    int      eval_on_start;     // also evaluate before the first step (HF eval_on_start)
    int64_t  save_steps;        // 0: only the final adapter
    int      save_total_limit;  // 0: keep every checkpoint
    const char *output_dir;     // required
    const char *resume_from;    // checkpoint directory to continue from (exactly)
    uint64_t seed;              // [42] shuffling and dropout
    const char *base_model_name;
    void   (*on_event)(void *user, const qlora_train_event *ev);
    void    *user;
    volatile int *interrupt;    // set non-zero (e.g. by SIGINT): save a checkpoint and return
} qlora_trainer_config;

typedef struct qlora_train_summary {
    int64_t steps;              // global step reached
    double  train_loss;         // mean loss of the last logging window
    double  first_eval_loss, last_eval_loss;   // NaN when there is no eval data
    int     interrupted;
    size_t  memory_planned;     // bytes: activations + scratch + lora + optimizer
} qlora_train_summary;

QLORA_API qlora_result qlora_trainer_run(qlora_ctx *ctx, const qlora_model *m, qlora_lora *l,
                                         const qlora_dataset *train, const qlora_dataset *eval,
                                         const qlora_trainer_config *cfg, qlora_train_summary *out);
// Mean token loss of a dataset (forward only), in batches of B rows of at most T tokens.
QLORA_API qlora_result qlora_eval_dataset(qlora_ctx *ctx, const qlora_model *m, const qlora_lora *l,
                                          const qlora_dataset *ds, int B, int T, double *mean_loss, size_t *n_targets);
// The newest checkpoint-N directory in dir (by N), written into buf; QLORA_ERR_NOT_FOUND if none.
QLORA_API qlora_result qlora_find_last_checkpoint(qlora_ctx *ctx, const char *dir, char *buf, size_t cap);

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
// glibc fixes its feature set at the first system header: if one came before qlora.h (without
// _GNU_SOURCE / -std=gnu99), mmap, mkstemp, ftruncate, syscall... would be undeclared. Say so.
#if defined(__GLIBC__) && !defined(__USE_XOPEN2K8)
#error "qlora.h: the QLORA_IMPLEMENTATION file must include qlora.h before any system header, or be compiled with -D_GNU_SOURCE (or -std=gnu99)"
#endif

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
#define QLORA__TARGET_AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c")))
#define QLORA__TARGET_AMX __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c")))
#define QLORA__HAVE_TARGET_ATTR 1
#else
#define QLORA__TARGET_AVX2
#define QLORA__TARGET_AVX512
#define QLORA__TARGET_AVX512BF16
#define QLORA__TARGET_AMX
#endif

#if defined(QLORA__X86) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
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
    unsigned edx7 = d;
    __cpuid_count(7, 1, a, b, c, d);
    if ((f & QLORA_CPU_AVX512) && ((a >> 5) & 1)) f |= QLORA_CPU_AVX512BF16;
#if defined(__linux__)
    // AMX: amx-tile (edx bit 24) + amx-bf16 (bit 22); Linux hands out the 8 KiB tile state only on
    // request (arch_prctl ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18), then XCR0 17-18.
    if ((f & QLORA_CPU_AVX512BF16) && ((edx7 >> 24) & 1) && ((edx7 >> 22) & 1) &&
        syscall(SYS_arch_prctl, 0x1023, 18) == 0) {
        __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
        if ((xlo & (3u << 17)) == (3u << 17)) f |= QLORA_CPU_AMX;
    }
#else
    (void)edx7;
#endif
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
    f &= ~(QLORA_CPU_AVX512 | QLORA_CPU_AVX512BF16);
#endif
#ifdef QLORA_NO_AVX512BF16
    f &= ~(QLORA_CPU_AVX512BF16 | QLORA_CPU_AMX);
#endif
#ifdef QLORA_NO_AMX
    f &= ~QLORA_CPU_AMX;
#endif
#ifdef QLORA_NO_NEON
    f &= ~QLORA_CPU_NEON;
#endif
    return f;
}

#ifndef QLORA_NO_THREADS
#include <pthread.h>
#include <sched.h>
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
static const char *const qlora__isa_names[QLORA_ISA_COUNT] = { "auto", "ref", "scalar", "avx2", "avx512", "neon", "avx512bf16", "amx" };
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

// splitmix64's finalizer (Steele et al. 2014): the hash behind data shuffling and LoRA dropout.
static uint64_t qlora__mix64(uint64_t x) {
    x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27; x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
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
    void     *scratch_raw;     // per-thread GEMM panels (>>gemm), grown on demand
    float    *scratch;         // 64-byte aligned view: thread i owns [i * scratch_floats, ...)
    size_t    scratch_floats;
    uint32_t *abuf;            // bf16 copy of a GEMM's activations (shared by the threads)
    size_t    abuf_n;
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
// Spin politely: pause, and every 64 spins yield the core. When the machine is oversubscribed
// (another process busy, or more threads than free cores) the thread we wait for may be queued
// on our core; without the yield each hand-off would cost a scheduler tick (measured: a 2-thread
// decode next to one busy process went from 0.4 s to 42 s).
static void qlora__cpu_relax(long spins) {
#if defined(QLORA__X86) && (defined(__GNUC__) || defined(__clang__))
    __asm__ volatile("pause");
#endif
    if ((spins & 63) == 0) sched_yield();
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
            if (++spins < QLORA__SPINS) { qlora__cpu_relax(spins); continue; }
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
            if (++spins < QLORA__SPINS) { qlora__cpu_relax(spins); continue; }
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
    if (ctx->isa == QLORA_ISA_AUTO) {              // QLORA_ISA=ref|scalar|avx2|avx512|neon|avx512bf16
        const char *env = getenv("QLORA_ISA");
        if (env && *env) {
            int k = 0;
            while (k < QLORA_ISA_COUNT && strcmp(env, qlora__isa_names[k]) != 0) k++;
            if (k == QLORA_ISA_COUNT) {
                QLORA__FREE(ctx);
                return QLORA_ERR_INVALID_ARG;      // no ctx to carry a message: qlora_result_string says it
            }
            ctx->isa = (qlora_isa)k;
        }
    }
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
    QLORA__FREE(ctx->scratch_raw);
    QLORA__FREE(ctx->abuf);
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

// >>quant
// Blockwise quantization, bit-exact with bitsandbytes' pure-PyTorch ("default", IEEE) backend
// (bitsandbytes/backends/default/ops.py, 0.50). Every float operation below is one IEEE float32
// operation in the same order torch does it; there is no contractible a*b+c in the encoder, so
// codes are identical on every compiler and ISA (with -ffp-contract=off, see NUMERICS).
//
// Encoding one block of a flat array x (bnb quantize_4bit / quantize_blockwise, default backend):
//   absmax = max |x_i|                                  (stored as is for full blocks)
//   full block:    xs_i = x_i * (1.0f / max(absmax, 1e-38f))     reciprocal, then multiply
//   partial block: am = max(absmax, 1e-38f) (STORED clamped);    xs_i = x_i / am   (a division!)
//   xs_i = clamp(xs_i, -1, 1);  q_i = #{ k : xs_i > mid_k }     mid_k = (s_k + s_(k+1)) / 2 in f32
// where s is the code book sorted ascending: torch.bucketize(xs, mid, right=False) puts a value
// equal to a midpoint in the lower bucket. FP4's code book is not sorted by bit pattern, so the
// bucket index goes through argsort(code) (qlora__fp4_order) to the 4-bit pattern.
// All-zero full block: absmax 0 is stored, xs = 0 * 1e38 = 0, codes are those of 0.0.

static int qlora__bs_ok(int bs) { return bs >= 32 && bs <= 4096 && (bs & (bs - 1)) == 0; }

// torch.argsort(get_4bit_type("fp4")) as torch 2.x computes it on CPU: bucket -> 4-bit pattern.
// Ascending: -1, -8/12, -6/12, -4/12, -3/12, -2/12, -0.0625/12, +0 (0000), "-0" (1000), +0.0625/12,
// ... Note the tie +0 / 1000: bnb stores +0.0 at pattern 1000, so a tiny POSITIVE xs in
// (0, 0.0026] gets pattern 1000 and a tiny negative one gets 0000 (both decode to zero).
static const uint8_t qlora__fp4_order[16] = { 11, 10, 13, 12, 15, 14, 9, 0, 8, 1, 6, 7, 4, 5, 2, 3 };

// Number of float32 midpoints of the sorted code book s[0..n) that x is strictly greater than.
static int qlora__bucketize(float x, const float *mid, int nmid) {
    int lo = 0, hi = nmid;                       // first k with !(x > mid[k])  (binary search)
    while (lo < hi) {
        int m = (lo + hi) >> 1;
        if (x > mid[m]) lo = m + 1; else hi = m;
    }
    return lo;
}

// Sorted code book midpoints of a 4-bit format (15 of them), and the bucket -> pattern map.
static void qlora__mid4(qlora_type t, float mid[15], uint8_t order[16]) {
    const float *c = qlora_bnb_code4(t);
    for (int i = 0; i < 16; i++) order[i] = (uint8_t)(t == QLORA_TYPE_FP4 ? qlora__fp4_order[i] : i);
    for (int i = 0; i < 15; i++) {
        mid[i] = (c[order[i]] + c[order[i + 1]]) / 2.0f;   // +-0 in FP4 pattern 1000: same mids
    }
}

// INT4 / INT8 (our own symmetric formats): q = round(xs * L) with L = 7 or 127, ties away from
// zero, computed without the FPU rounding mode: |t| = xs*L <= L exactly splits into an integer
// part and a fraction (both exact in float32), and the fraction is compared with 0.5.
static int qlora__round_sym(float xs, float L) {
    float t = xs * L, a = t < 0.0f ? -t : t;
    int q = (int)a;                               // truncation: 0 <= a <= 127
    if (a - (float)q >= 0.5f) q++;
    return t < 0.0f ? -q : q;
}

QLORA__DEF size_t qlora_bnb_nblocks(size_t n, int blocksize) {
    if (!qlora__bs_ok(blocksize)) return 0;
    return n / (size_t)blocksize + (n % (size_t)blocksize != 0);
}

QLORA__DEF size_t qlora_bnb_code_bytes(qlora_type t, size_t n) {
    switch (t) {
    case QLORA_TYPE_NF4: case QLORA_TYPE_FP4: case QLORA_TYPE_INT4: return n / 2 + (n & 1);
    case QLORA_TYPE_INT8: return n;
    default: return 0;
    }
}

QLORA__DEF const float *qlora_bnb_code4(qlora_type t) {
    switch (t) {
    case QLORA_TYPE_NF4: return qlora__nf4_code;
    case QLORA_TYPE_FP4: return qlora__fp4_code;
    case QLORA_TYPE_INT4: return qlora__int4_code;
    default: return NULL;
    }
}

// x: [n] f32 -> codes: [qlora_bnb_code_bytes(t, n)], absmax: [qlora_bnb_nblocks(n, bs)]
QLORA__DEF qlora_result qlora_bnb_quantize(qlora_type t, const float *x, size_t n, int blocksize,
                                           uint8_t *codes, float *absmax) {
    if (!qlora_type_is_bnb(t) || !qlora__bs_ok(blocksize) || (n && (!x || !codes || !absmax)))
        return QLORA_ERR_INVALID_ARG;
    float mid[15];
    uint8_t order[16];
    if (t == QLORA_TYPE_NF4 || t == QLORA_TYPE_FP4) qlora__mid4(t, mid, order);
    size_t bs = (size_t)blocksize, nb = qlora_bnb_nblocks(n, blocksize);
    for (size_t b = 0; b < nb; b++) {
        size_t lo = b * bs, hi = QLORA__MIN(n, lo + bs);
        float amax = 0.0f;
        for (size_t i = lo; i < hi; i++) {
            float a = fabsf(x[i]);
            if (!(a <= FLT_MAX)) return QLORA_ERR_NUMERIC;      // NaN / inf: no meaningful absmax
            if (a > amax) amax = a;
        }
        float am = amax > 1e-38f ? amax : 1e-38f;                // absmax.clamp(min=1e-38)
        int partial = hi - lo < bs;
        absmax[b] = partial ? am : amax;
        float inv = 1.0f / am;
        for (size_t i = lo; i < hi; i += 2) {
            int q[2] = { 0, 0 };
            for (int k = 0; k < 2; k++) {
                float xs = 0.0f;                                 // odd n: padded with 0.0
                if (i + k < hi) xs = partial ? x[i + k] / am : x[i + k] * inv;
                if (xs > 1.0f) xs = 1.0f;
                if (xs < -1.0f) xs = -1.0f;
                switch (t) {
                case QLORA_TYPE_NF4: case QLORA_TYPE_FP4: q[k] = order[qlora__bucketize(xs, mid, 15)]; break;
                case QLORA_TYPE_INT4: q[k] = qlora__round_sym(xs, 7.0f) + 8; break;
                default: q[k] = qlora__round_sym(xs, 127.0f); break;
                }
            }
            if (t == QLORA_TYPE_INT8) {
                codes[i] = (uint8_t)(int8_t)q[0];
                if (i + 1 < hi) codes[i + 1] = (uint8_t)(int8_t)q[1];
            } else {
                codes[i / 2] = (uint8_t)((q[0] << 4) | q[1]);    // element 2k in the HIGH nibble
            }
        }
    }
    return QLORA_OK;
}

// Level of element i (flat index) of a bnb tensor, before scaling by absmax.
static float qlora__bnb_level(qlora_type t, const uint8_t *codes, size_t i) {
    if (t == QLORA_TYPE_INT8) return (float)(int8_t)codes[i] / 127.0f;
    uint8_t byte = codes[i / 2];
    int q = (i & 1) ? (byte & 15) : (byte >> 4);
    if (t == QLORA_TYPE_FP4 && q == 8) return 0.0f;               // bnb: +0.0 at pattern 1000
    return qlora_bnb_code4(t)[q];
}

// out[i] = level(q_i) * absmax[i / bs]   (one float32 multiply, as bnb's dequantize_4bit)
QLORA__DEF qlora_result qlora_bnb_dequantize(qlora_type t, const uint8_t *codes, const float *absmax,
                                             size_t n, int blocksize, float *out) {
    if (!qlora_type_is_bnb(t) || !qlora__bs_ok(blocksize) || (n && (!codes || !absmax || !out)))
        return QLORA_ERR_INVALID_ARG;
    for (size_t i = 0; i < n; i++) out[i] = qlora__bnb_level(t, codes, i) * absmax[i / (size_t)blocksize];
    return QLORA_OK;
}

// bitsandbytes create_dynamic_map(signed, max_exponent_bits=7, total_bits=8). For exponent i =
// 0..6 it takes the midpoints of torch.linspace(0.1, 1, k) (k = 2^i + 1 signed, 2^(i+1) + 1
// unsigned), scales them by 10^(i-6) (float32 multiply by the float32-rounded scale), mirrors
// them if signed, adds 0 and 1 and sorts. torch's CPU linspace (RangeFactoriesKernel.cpp)
// computes step = (end - start) / (k - 1) in float32 and value idx = start + step*idx for
// idx < k/2, else end - step*(k - 1 - idx). The shipped kernel is compiled with FMA
// contraction: all 256 entries match torch 2.15 bit for bit only with the fused form below
// (the unfused one differs in the last bit of 42 signed / 31 unsigned entries).
static float qlora__linspace(float start, float end, int k, int idx) {
    float step = (end - start) / (float)(k - 1);
    return idx < k / 2 ? fmaf(step, (float)idx, start) : fmaf(-step, (float)(k - idx - 1), end);
}

static int qlora__cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

QLORA__DEF void qlora_dynamic_map(int is_signed, float map[256]) {
    static const double p10[7] = { 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0 };   // == Python 10**(i-6)
    int n = 0;
    for (int i = 0; i < 7; i++) {
        int k = is_signed ? (1 << i) + 1 : (1 << (i + 1)) + 1;
        float scale = (float)p10[i];                            // torch casts the scalar to float32
        for (int j = 0; j + 1 < k; j++) {
            float a = qlora__linspace(0.1f, 1.0f, k, j), b = qlora__linspace(0.1f, 1.0f, k, j + 1);
            float mean = (a + b) / 2.0f;
            map[n++] = scale * mean;
            if (is_signed) map[n++] = -scale * mean;
        }
    }
    map[n++] = 0.0f;
    map[n++] = 1.0f;
    qsort(map, 256, sizeof(float), qlora__cmp_float);
}

// torch's CPU float32 sum of a contiguous vector (aten/src/ATen/native/cpu/SumKernel.cpp,
// single thread): `lanes`-wide vector accumulators in 4 interleaved rows (ILP), each row summed
// by a 4-level cascade; then a scalar tail, then the lanes in order. mean = sum / n.
static float qlora__torch_sum(const float *x, size_t n, int lanes) {
    enum { ILP = 4, LEVELS = 4, MAXL = 16 };
    size_t W = (size_t)QLORA__MIN(QLORA__MAX(lanes, 1), (int)MAXL), nrows_ilp = 1, width = 1;
    const float *p = x;
    size_t nvec = 0;
    float final_acc = 0.0f;
    float acc[LEVELS][ILP][MAXL];
    if (n >= W) { width = W; nvec = n / W; }       // vectorized_inner_sum
    else { width = 1; nvec = n; }                   // scalar_inner_sum (row_sum over scalars)
    nrows_ilp = nvec / ILP;
    memset(acc, 0, sizeof acc);
    size_t cl = 1;                                  // CeilLog2(size) as aten/native/cpu/utils.h
    if (nrows_ilp > 2) { cl = 0; while (((size_t)1 << cl) < nrows_ilp) cl++; }
    size_t lp = QLORA__MAX((size_t)4, cl / LEVELS), step = (size_t)1 << lp, mask0 = step - 1;
    size_t i = 0;
    #define QLORA__ROW(r, k, l) p[((r) * ILP + (k)) * width + (l)]
    for (; i + step <= nrows_ilp;) {
        for (size_t j = 0; j < step; j++, i++)
            for (int k = 0; k < ILP; k++)
                for (size_t l = 0; l < width; l++) acc[0][k][l] += QLORA__ROW(i, k, l);
        for (int j = 1; j < LEVELS; j++) {
            for (int k = 0; k < ILP; k++)
                for (size_t l = 0; l < width; l++) { acc[j][k][l] += acc[j - 1][k][l]; acc[j - 1][k][l] = 0.0f; }
            if ((i & (mask0 << (j * lp))) != 0) break;
        }
    }
    for (; i < nrows_ilp; i++)
        for (int k = 0; k < ILP; k++)
            for (size_t l = 0; l < width; l++) acc[0][k][l] += QLORA__ROW(i, k, l);
    for (int j = 1; j < LEVELS; j++)
        for (int k = 0; k < ILP; k++)
            for (size_t l = 0; l < width; l++) acc[0][k][l] += acc[j][k][l];
    #undef QLORA__ROW
    for (size_t v = nrows_ilp * ILP; v < nvec; v++)                  // row_sum tail rows
        for (size_t l = 0; l < width; l++) acc[0][0][l] += p[v * width + l];
    for (int k = 1; k < ILP; k++)
        for (size_t l = 0; l < width; l++) acc[0][0][l] += acc[0][k][l];
    if (width == 1) return acc[0][0][0];
    for (size_t e = nvec * W; e < n; e++) final_acc += x[e];           // scalar tail
    for (size_t l = 0; l < W; l++) final_acc += acc[0][0][l];
    return final_acc;
}

// Lanes of the float32 vector accumulators torch's CPU sum uses. 8 reproduces torch 2.15's
// mean bit for bit (tested for n = 1..30000, one thread, on an AVX-512 machine). Larger
// reductions run multi-threaded in torch and their bits depend on torch's thread count.
#ifndef QLORA_TORCH_LANES
#define QLORA_TORCH_LANES 8
#endif

// 8-bit blockwise quantization of v = absmax - off with the signed dynamic map in blocks of 256
// (bnb quantize_blockwise, default backend; same block rules as the 4-bit encoder above).
static qlora_result qlora__dq_encode(const float *absmax, size_t nblocks, const float map[256], float off,
                                     uint8_t *qabsmax, float *absmax2) {
    float mid[255];
    for (int i = 0; i < 255; i++) mid[i] = (map[i] + map[i + 1]) / 2.0f;
    for (size_t b = 0; b * 256 < nblocks; b++) {
        size_t lo = b * 256, hi = QLORA__MIN(nblocks, lo + 256);
        float amax = 0.0f;
        for (size_t i = lo; i < hi; i++) {
            float a = fabsf(absmax[i] - off);
            if (!(a <= FLT_MAX)) return QLORA_ERR_NUMERIC;
            if (a > amax) amax = a;
        }
        float am = amax > 1e-38f ? amax : 1e-38f;
        int partial = hi - lo < 256;
        absmax2[b] = partial ? am : amax;
        float inv = 1.0f / am;
        for (size_t i = lo; i < hi; i++) {
            float v = absmax[i] - off;
            float xs = partial ? v / am : v * inv;
            if (xs > 1.0f) xs = 1.0f;
            if (xs < -1.0f) xs = -1.0f;
            qabsmax[i] = (uint8_t)qlora__bucketize(xs, mid, 255);
        }
    }
    return QLORA_OK;
}

// absmax: [nblocks] -> qabsmax: [nblocks], absmax2: [ceil(nblocks/256)], *offset
QLORA__DEF qlora_result qlora_double_quantize(const float *absmax, size_t nblocks, const float map[256],
                                              uint8_t *qabsmax, float *absmax2, float *offset) {
    if (!absmax || !nblocks || !map || !qabsmax || !absmax2 || !offset) return QLORA_ERR_INVALID_ARG;
    float off = qlora__torch_sum(absmax, nblocks, QLORA_TORCH_LANES) / (float)nblocks;   // absmax.mean()
    if (!(fabsf(off) <= FLT_MAX)) return QLORA_ERR_NUMERIC;
    *offset = off;
    return qlora__dq_encode(absmax, nblocks, map, off, qabsmax, absmax2);
}

QLORA__DEF void qlora_double_dequantize(const uint8_t *qabsmax, const float *absmax2, const float map[256],
                                        float offset, size_t nblocks, float *absmax) {
    for (size_t i = 0; i < nblocks; i++) {
        float s = map[qabsmax[i]] * absmax2[i / 256];
        absmax[i] = s + offset;
    }
}

// ggml blocks of 32 (ggml-quants.c dequantize_row_*):
//   Q8_0 {f16 d; int8 qs[32]}                 y[j] = qs[j] * d
//   Q4_0 {f16 d; u8 qs[16]}                   y[j] = ((qs[j] & 15) - 8) * d, y[j+16] = ((qs[j] >> 4) - 8) * d
//   Q4_1 {f16 d; f16 m; u8 qs[16]}            y[j] = (qs[j] & 15) * d + m,   y[j+16] = (qs[j] >> 4) * d + m
static size_t qlora__ggml_block_bytes(qlora_type t) {
    switch (t) {
    case QLORA_TYPE_Q8_0: return 34;
    case QLORA_TYPE_Q4_0: return 18;
    case QLORA_TYPE_Q4_1: return 20;
    default: return 0;
    }
}

QLORA__DEF size_t qlora_ggml_row_bytes(qlora_type t, size_t n) {
    size_t r;
    switch (t) {
    case QLORA_TYPE_F32: return qlora__mul_ok(n, 4, &r) ? r : 0;
    case QLORA_TYPE_F16: case QLORA_TYPE_BF16: return qlora__mul_ok(n, 2, &r) ? r : 0;
    case QLORA_TYPE_Q8_0: case QLORA_TYPE_Q4_0: case QLORA_TYPE_Q4_1:
        if (n % 32) return 0;
        return n / 32 * qlora__ggml_block_bytes(t);
    default: return 0;                              // bnb formats have no row layout
    }
}

QLORA__DEF qlora_result qlora_ggml_dequantize(qlora_type t, const void *blocks, size_t n, float *out) {
    size_t bb = qlora__ggml_block_bytes(t);
    if (!bb || n % 32 || (n && (!blocks || !out))) return QLORA_ERR_INVALID_ARG;
    const uint8_t *p = (const uint8_t *)blocks;
    for (size_t b = 0; b < n / 32; b++, p += bb, out += 32) {
        float d = qlora__fp16_to_f32(qlora__rd_u16(p));
        if (t == QLORA_TYPE_Q8_0) {
            for (int j = 0; j < 32; j++) out[j] = (float)(int8_t)p[2 + j] * d;
        } else if (t == QLORA_TYPE_Q4_0) {
            for (int j = 0; j < 16; j++) {
                out[j] = (float)((p[2 + j] & 15) - 8) * d;
                out[j + 16] = (float)((p[2 + j] >> 4) - 8) * d;
            }
        } else {
            float m = qlora__fp16_to_f32(qlora__rd_u16(p + 2));
            for (int j = 0; j < 16; j++) {
                float x0 = (float)(p[4 + j] & 15) * d, x1 = (float)(p[4 + j] >> 4) * d;
                out[j] = x0 + m;
                out[j + 16] = x1 + m;
            }
        }
    }
    return QLORA_OK;
}

// >>quant-tensor
QLORA__DEF size_t qlora_tensor_nelements(const qlora_tensor *t) {
    size_t n = 1;
    int nd = t->n_dims < 1 ? 1 : (t->n_dims > 4 ? 4 : t->n_dims);
    for (int i = 0; i < nd; i++) {
        if (t->ne[i] < 0 || !qlora__mul_ok(n, (size_t)t->ne[i], &n)) return 0;
    }
    return n;
}

QLORA__DEF size_t qlora_tensor_nbytes(const qlora_tensor *t) {
    size_t n = qlora_tensor_nelements(t), ne0 = t->ne[0] > 0 ? (size_t)t->ne[0] : 0, r;
    if (qlora_type_is_bnb(t->type)) return qlora_bnb_code_bytes(t->type, n);
    if (!ne0) return 0;
    return qlora__mul_ok(qlora_ggml_row_bytes(t->type, ne0), n / ne0, &r) ? r : 0;
}

// Decoded absmax of block b of a bnb tensor (plain, or double-quantized).
static float qlora__tensor_absmax(const qlora_tensor *t, size_t b) {
    if (t->absmax) return t->absmax[b];
    float s = t->code2[t->qabsmax[b]] * t->absmax2[b / 256];
    return s + t->offset;
}

// out[k] = element e0 + k of the flattened tensor, k < count (any type; bounds checked by caller).
static qlora_result qlora__tensor_read(const qlora_tensor *t, size_t e0, size_t count, float *out) {
    if (qlora_type_is_bnb(t->type)) {
        if (!qlora__bs_ok(t->blocksize) || (!t->absmax && (!t->qabsmax || !t->absmax2 || !t->code2)))
            return QLORA_ERR_INVALID_ARG;
        size_t bs = (size_t)t->blocksize, cur = (size_t)-1;
        float am = 0.0f;
        for (size_t k = 0; k < count; k++) {
            size_t e = e0 + k;
            if (e / bs != cur) { cur = e / bs; am = qlora__tensor_absmax(t, cur); }
            out[k] = qlora__bnb_level(t->type, (const uint8_t *)t->data, e) * am;
        }
        return QLORA_OK;
    }
    size_t ne0 = (size_t)t->ne[0], rb = qlora_ggml_row_bytes(t->type, ne0);
    if (!rb) return QLORA_ERR_UNSUPPORTED;
    const uint8_t *base = (const uint8_t *)t->data;
    while (count) {
        size_t r = e0 / ne0, c = e0 % ne0, take = QLORA__MIN(count, ne0 - c);
        const uint8_t *row = base + r * rb;
        switch (t->type) {
        case QLORA_TYPE_F32: memcpy(out, row + c * 4, take * 4); break;
        case QLORA_TYPE_F16: for (size_t k = 0; k < take; k++) out[k] = qlora__fp16_to_f32(qlora__rd_u16(row + (c + k) * 2)); break;
        case QLORA_TYPE_BF16: for (size_t k = 0; k < take; k++) out[k] = qlora__bf16_to_f32(qlora__rd_u16(row + (c + k) * 2)); break;
        default: {
            size_t bb = qlora__ggml_block_bytes(t->type), k = 0;
            float tmp[32];
            while (k < take) {
                size_t cc = c + k, blk = cc / 32, off = cc % 32, m = QLORA__MIN(take - k, 32 - off);
                qlora_ggml_dequantize(t->type, row + blk * bb, 32, tmp);
                memcpy(out + k, tmp + off, m * sizeof(float));
                k += m;
            }
        } break;
        }
        out += take; e0 += take; count -= take;
    }
    return QLORA_OK;
}

QLORA__DEF qlora_result qlora_tensor_dequantize_rows(const qlora_tensor *t, size_t row0, size_t nrows, float *out) {
    if (!t || !t->data || t->ne[0] <= 0 || (unsigned)t->type >= QLORA_TYPE_COUNT) return QLORA_ERR_INVALID_ARG;
    size_t ne0 = (size_t)t->ne[0], n = qlora_tensor_nelements(t), rows = n / ne0, e0, cnt;
    if (row0 > rows || nrows > rows - row0) return QLORA_ERR_RANGE;
    if (!nrows) return QLORA_OK;
    if (!out) return QLORA_ERR_INVALID_ARG;
    if (!qlora__mul_ok(row0, ne0, &e0) || !qlora__mul_ok(nrows, ne0, &cnt)) return QLORA_ERR_RANGE;
    return qlora__tensor_read(t, e0, cnt, out);
}

QLORA__DEF void qlora_tensor_free(qlora_tensor *t) {
    if (!t) return;
    if (t->owns_data) {
        QLORA__FREE(t->data);
        QLORA__FREE(t->absmax);
        QLORA__FREE(t->qabsmax);
        QLORA__FREE(t->absmax2);
        QLORA__FREE(t->code2);
    }
    t->data = NULL; t->absmax = NULL; t->qabsmax = NULL; t->absmax2 = NULL; t->code2 = NULL;
    t->owns_data = 0;
}

// src (any readable type) -> dst of type t. bnb dst: quantized in chunks of whole blocks, so no
// full f32 copy is made; double_quant then compresses absmax (bnb compress_statistics=True).
QLORA__DEF qlora_result qlora_tensor_quantize(const qlora_tensor *src, qlora_type t, int blocksize,
                                              int double_quant, qlora_tensor *dst) {
    if (!src || !dst || !src->data || src->ne[0] <= 0) return QLORA_ERR_INVALID_ARG;
    if (blocksize == 0) blocksize = 64;
    int bnb = qlora_type_is_bnb(t);
    if (bnb && !qlora__bs_ok(blocksize)) return QLORA_ERR_INVALID_ARG;
    if (!bnb && t != QLORA_TYPE_F32 && t != QLORA_TYPE_F16 && t != QLORA_TYPE_BF16) return QLORA_ERR_UNSUPPORTED;
    size_t n = qlora_tensor_nelements(src);
    if (!n) return QLORA_ERR_SHAPE;
    qlora_tensor d;
    memset(&d, 0, sizeof d);
    d.type = t;
    d.n_dims = src->n_dims;
    memcpy(d.ne, src->ne, sizeof d.ne);
    d.owns_data = 1;
    qlora_result r = QLORA_OK;
    size_t nbytes = bnb ? qlora_bnb_code_bytes(t, n) : qlora_ggml_row_bytes(t, n);
    size_t chunk = bnb ? (size_t)blocksize * QLORA__MAX((size_t)1, (size_t)65536 / (size_t)blocksize) : 65536;
    float *buf = QLORA__CALLOC_T(float, QLORA__MIN(chunk, n));
    d.data = QLORA__MALLOC(nbytes ? nbytes : 1);
    if (bnb) {
        d.blocksize = blocksize;
        d.absmax = QLORA__CALLOC_T(float, qlora_bnb_nblocks(n, blocksize));
    }
    if (!buf || !d.data || !nbytes || (bnb && !d.absmax)) { r = nbytes ? QLORA_ERR_OUT_OF_MEMORY : QLORA_ERR_SHAPE; goto done; }
    for (size_t e = 0; e < n && r == QLORA_OK; e += chunk) {
        size_t m = QLORA__MIN(chunk, n - e);
        r = qlora__tensor_read(src, e, m, buf);
        if (r != QLORA_OK) break;
        uint8_t *o = (uint8_t *)d.data;
        if (bnb) {
            size_t co = t == QLORA_TYPE_INT8 ? e : e / 2;          // chunk is even: whole bytes
            r = qlora_bnb_quantize(t, buf, m, blocksize, o + co, d.absmax + e / (size_t)blocksize);
        } else if (t == QLORA_TYPE_F32) {
            memcpy(o + e * 4, buf, m * 4);
        } else {
            for (size_t k = 0; k < m; k++) {
                uint16_t h = t == QLORA_TYPE_F16 ? qlora__f32_to_fp16(buf[k]) : qlora__f32_to_bf16(buf[k]);
                o[(e + k) * 2] = (uint8_t)h;
                o[(e + k) * 2 + 1] = (uint8_t)(h >> 8);
            }
        }
    }
    if (r == QLORA_OK && bnb && double_quant) {
        size_t nb = qlora_bnb_nblocks(n, blocksize), nb2 = (nb + 255) / 256;
        d.qabsmax = (uint8_t *)QLORA__MALLOC(nb);
        d.absmax2 = QLORA__CALLOC_T(float, nb2);
        d.code2 = QLORA__CALLOC_T(float, 256);
        if (!d.qabsmax || !d.absmax2 || !d.code2) { r = QLORA_ERR_OUT_OF_MEMORY; goto done; }
        qlora_dynamic_map(1, d.code2);
        r = qlora_double_quantize(d.absmax, nb, d.code2, d.qabsmax, d.absmax2, &d.offset);
        QLORA__FREE(d.absmax);
        d.absmax = NULL;
    }
done:
    QLORA__FREE(buf);
    if (r != QLORA_OK) { qlora_tensor_free(&d); return r; }
    *dst = d;
    return QLORA_OK;
}
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

// --- deq: the dequantizers themselves (>>quant), one row segment at a time ------------------------
static void qlora__ref_deq_float(qlora_type t, const void *w, float *out, size_t n) {
    const uint8_t *p = (const uint8_t *)w;
    for (size_t i = 0; i < n; i++)
        out[i] = t == QLORA_TYPE_F32 ? ((const float *)w)[i] : t == QLORA_TYPE_F16 ? qlora__fp16_to_f32(qlora__rd_u16(p + 2 * i))
                                                                                    : qlora__bf16_to_f32(qlora__rd_u16(p + 2 * i));
}
static void qlora__ref_deq_f32(const void *w, const float *s, float *out, size_t n, size_t bs) { QLORA__UNUSED(s); QLORA__UNUSED(bs); qlora__ref_deq_float(QLORA_TYPE_F32, w, out, n); }
static void qlora__ref_deq_f16(const void *w, const float *s, float *out, size_t n, size_t bs) { QLORA__UNUSED(s); QLORA__UNUSED(bs); qlora__ref_deq_float(QLORA_TYPE_F16, w, out, n); }
static void qlora__ref_deq_bf16(const void *w, const float *s, float *out, size_t n, size_t bs) { QLORA__UNUSED(s); QLORA__UNUSED(bs); qlora__ref_deq_float(QLORA_TYPE_BF16, w, out, n); }
static void qlora__ref_deq_q8_0(const void *w, const float *s, float *out, size_t n, size_t bs) { QLORA__UNUSED(s); QLORA__UNUSED(bs); qlora_ggml_dequantize(QLORA_TYPE_Q8_0, w, n, out); }
static void qlora__ref_deq_q4_0(const void *w, const float *s, float *out, size_t n, size_t bs) { QLORA__UNUSED(s); QLORA__UNUSED(bs); qlora_ggml_dequantize(QLORA_TYPE_Q4_0, w, n, out); }
static void qlora__ref_deq_q4_1(const void *w, const float *s, float *out, size_t n, size_t bs) { QLORA__UNUSED(s); QLORA__UNUSED(bs); qlora_ggml_dequantize(QLORA_TYPE_Q4_1, w, n, out); }
static void qlora__ref_deq_bnb(qlora_type t, const void *w, const float *scales, float *out, size_t n, size_t bs) {
    const uint8_t *q = (const uint8_t *)w;
    const float *lut = qlora_bnb_code4(t);
    for (size_t i = 0; i < n; i++)
        out[i] = t == QLORA_TYPE_INT8 ? qlora__bnb_deq_int8((int8_t)q[i], scales[i / bs])
                                      : lut[(i % 2 == 0) ? (q[i / 2] >> 4) : (q[i / 2] & 0x0f)] * scales[i / bs];
}
static void qlora__ref_deq_nf4(const void *w, const float *s, float *out, size_t n, size_t bs) { qlora__ref_deq_bnb(QLORA_TYPE_NF4, w, s, out, n, bs); }
static void qlora__ref_deq_fp4(const void *w, const float *s, float *out, size_t n, size_t bs) { qlora__ref_deq_bnb(QLORA_TYPE_FP4, w, s, out, n, bs); }
static void qlora__ref_deq_int4(const void *w, const float *s, float *out, size_t n, size_t bs) { qlora__ref_deq_bnb(QLORA_TYPE_INT4, w, s, out, n, bs); }
static void qlora__ref_deq_int8(const void *w, const float *s, float *out, size_t n, size_t bs) { qlora__ref_deq_bnb(QLORA_TYPE_INT8, w, s, out, n, bs); }
static const qlora_deq_fn qlora__ref_deq[QLORA_TYPE_COUNT] = {
    qlora__ref_deq_f32, qlora__ref_deq_f16, qlora__ref_deq_bf16, qlora__ref_deq_q8_0, qlora__ref_deq_q4_0,
    qlora__ref_deq_q4_1, qlora__ref_deq_nf4, qlora__ref_deq_fp4, qlora__ref_deq_int4, qlora__ref_deq_int8
};

// --- gemm: C (m x n) = [C +] A (m x K) . B (K x NR panel), each element summed in double ---------
#define QLORA__REF_MR 4
#define QLORA__REF_NR 8
static void qlora__ref_gemm(size_t K, const float *A, size_t lda, const float *B, float *C, size_t ldc, int m, int n, int acc) {
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double c = acc ? (double)C[(size_t)i * ldc + (size_t)j] : 0.0;
            for (size_t k = 0; k < K; k++) c += (double)A[(size_t)i * lda + k] * (double)B[k * QLORA__REF_NR + (size_t)j];
            C[(size_t)i * ldc + (size_t)j] = (float)c;
        }
}

static void qlora__ref_gemm_bf16(size_t K2, const uint32_t *A, size_t lda, const uint32_t *B, float *C, size_t ldc, int m, int n, int acc) {
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double c = acc ? (double)C[(size_t)i * ldc + (size_t)j] : 0.0;
            for (size_t p = 0; p < K2; p++) {
                uint32_t a = A[(size_t)i * lda + p], b = B[p * QLORA__REF_NR + (size_t)j];
                c += (double)qlora__bf16_to_f32((uint16_t)a) * qlora__bf16_to_f32((uint16_t)b) +
                     (double)qlora__bf16_to_f32((uint16_t)(a >> 16)) * qlora__bf16_to_f32((uint16_t)(b >> 16));
            }
            C[(size_t)i * ldc + (size_t)j] = (float)c;
        }
}

static void qlora__ref_cvt_bf16(const float *x, size_t n, uint32_t *out) {
    for (size_t p = 0; 2 * p < n; p++)
        out[p] = (uint32_t)qlora__f32_to_bf16(x[2 * p]) | (2 * p + 1 < n ? (uint32_t)qlora__f32_to_bf16(x[2 * p + 1]) << 16 : 0u);
}

static void qlora__ref_dropout(const float *x, float *y, size_t n, uint32_t i0, uint64_t seed, float p, int acc) {
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    float keep = 1.0f / (1.0f - p);
    for (size_t k = 0; k < n; k++) {
        uint32_t h = (i0 + (uint32_t)k) * 0x9E3779B1u ^ k0;           // murmur3 fmix32 ...
        h ^= h >> 16; h *= 0x85EBCA6Bu; h ^= h >> 13; h *= 0xC2B2AE35u; h ^= h >> 16;
        h ^= k1; h *= 0x27D4EB2Fu; h ^= h >> 15;                       // ... and the seed's high half
        float u = (float)(h >> 8) * (1.0f / 16777216.0f);
        float v = u < p ? 0.0f : x[k] * keep;
        if (acc) y[k] += v; else y[k] = v;
    }
}

static double qlora__ref_exp(const float *x, float *y, size_t n, float a, float b) {
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) {
        float t = a * x[i];
        t = t + b;
        y[i] = t < -87.33654f ? 0.0f : (float)exp((double)QLORA__MIN(t, 88.0f));
        sum += (double)y[i];
    }
    return sum;
}

// >>generated
// The SIMD (and unrolled scalar) kernels are emitted by gen/generate.py from gen/templates/ into
// kernels_generated/; each is `static`, carries its ISA target attribute (xxHash-style runtime
// dispatch: no -mavx2 needed) and is listed once in kernels_generated/qlora_kernels.inc.
#ifdef QLORA_GENERATED_KERNELS
#include "kernels_generated/qlora_kernels.h"
#if !defined(QLORA_KERNELS_ABI) || QLORA_KERNELS_ABI != 2
#error "kernels_generated/ does not match qlora.h: run python3 gen/generate.py"
#endif
#endif

// >>dispatch
// One registry drives dispatch, tests and benchmarks: QLORA_KERNEL(isa, op, type, fn, prio, mr, nr)
// lines. At qlora_ctx_create, for each (op, weight type) we take the highest-priority kernel whose
// ISA the CPU has (ctx->cpu) and ctx->isa allows; with none, the reference above.
typedef void (*qlora__any_fn)(void);   // registry storage; cast back by op
typedef struct qlora__kernel_entry {
    qlora_isa       isa;
    qlora_kernel_op op;
    qlora_type      type;
    qlora__any_fn   fn;
    const char     *name;
    int             prio, mr, nr;
} qlora__kernel_entry;

static const qlora__kernel_entry qlora__kernel_registry[] = {
#ifdef QLORA_GENERATED_KERNELS
#define QLORA_KERNEL(isa, op, type, fn, prio, mr, nr) { isa, op, type, (qlora__any_fn)fn, #fn, prio, mr, nr },
#include "kernels_generated/qlora_kernels.inc"
#undef QLORA_KERNEL
#endif
    { QLORA_ISA_REF, QLORA_OP_COUNT, QLORA_TYPE_COUNT, NULL, NULL, 0, 0, 0 }   // sentinel (keeps the array non-empty)
};

struct qlora_kernels {
    qlora_dot_fn  dot[QLORA_TYPE_COUNT];        // chosen dot per weight type
    qlora_deq_fn  deq[QLORA_TYPE_COUNT];        // chosen dequantizer per weight type
    qlora_gemm_fn gemm;                         // chosen f32 GEMM micro-kernel
    int           mr, nr;                       // its register tile
    qlora_gemm_bf16_fn gemm_bf16;               // chosen bf16 GEMM micro-kernel
    int           mr16, nr16;
    qlora_cvt_bf16_fn cvt_bf16;                 // f32 -> bf16 pairs
    qlora_dropout_fn dropout;
    qlora_exp_fn vexp;
    const char   *name[QLORA_OP_COUNT][QLORA_TYPE_COUNT];   // function names (qlora_ctx_describe)
    qlora_isa     isa[QLORA_OP_COUNT][QLORA_TYPE_COUNT];    // their instruction sets (REF = reference)
};

// May a kernel of instruction set `k` run on this ctx? It must be on the CPU and at most `force`.
static int qlora__isa_allowed(qlora_isa k, unsigned cpu, qlora_isa force) {
    int on_cpu = k == QLORA_ISA_SCALAR || (k == QLORA_ISA_AVX2 && (cpu & QLORA_CPU_AVX2)) ||
                 (k == QLORA_ISA_AVX512 && (cpu & QLORA_CPU_AVX512)) || (k == QLORA_ISA_NEON && (cpu & QLORA_CPU_NEON)) ||
                 (k == QLORA_ISA_AVX512BF16 && (cpu & QLORA_CPU_AVX512BF16)) || (k == QLORA_ISA_AMX && (cpu & QLORA_CPU_AMX));
    if (!on_cpu) return 0;
    switch (force) {
    case QLORA_ISA_AUTO:   return 1;
    case QLORA_ISA_REF:    return 0;
    case QLORA_ISA_SCALAR: return k == QLORA_ISA_SCALAR;
    case QLORA_ISA_AVX2:   return k == QLORA_ISA_SCALAR || k == QLORA_ISA_AVX2;
    case QLORA_ISA_AVX512: return k == QLORA_ISA_SCALAR || k == QLORA_ISA_AVX2 || k == QLORA_ISA_AVX512;
    case QLORA_ISA_AVX512BF16: return k != QLORA_ISA_NEON && k != QLORA_ISA_AMX;
    case QLORA_ISA_AMX:    return k != QLORA_ISA_NEON;
    case QLORA_ISA_NEON:   return k == QLORA_ISA_SCALAR || k == QLORA_ISA_NEON;
    default:               return 0;
    }
}

static const char *const qlora__ref_deq_name = "qlora__ref_deq";

static void qlora__kernels_init(qlora_ctx *ctx) {
    struct qlora_kernels *k = (struct qlora_kernels *)QLORA__MALLOC(sizeof(struct qlora_kernels));
    ctx->kern = k;
    if (!k) { QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "qlora_ctx_create: kernel table"); return; }
    if ((unsigned)ctx->isa >= QLORA_ISA_COUNT) ctx->isa = QLORA_ISA_AUTO;
    int best[QLORA_OP_COUNT][QLORA_TYPE_COUNT];
    for (int t = 0; t < QLORA_TYPE_COUNT; t++) {
        k->dot[t] = qlora__ref_dot[t];
        k->deq[t] = qlora__ref_deq[t];
        for (int o = 0; o < QLORA_OP_COUNT; o++) { k->isa[o][t] = QLORA_ISA_REF; best[o][t] = -1; }
        k->name[QLORA_OP_DOT][t] = qlora__ref_dot_name[t];
        k->name[QLORA_OP_DEQ][t] = qlora__ref_deq_name;
        k->name[QLORA_OP_GEMM][t] = "qlora__ref_gemm";
        k->name[QLORA_OP_GEMM_BF16][t] = "qlora__ref_gemm_bf16";
        k->name[QLORA_OP_CVT_BF16][t] = "qlora__ref_cvt_bf16";
        k->name[QLORA_OP_DROPOUT][t] = "qlora__ref_dropout";
        k->name[QLORA_OP_EXP][t] = "qlora__ref_exp";
    }
    k->vexp = qlora__ref_exp;
    k->cvt_bf16 = qlora__ref_cvt_bf16;
    k->dropout = qlora__ref_dropout;
    k->gemm = qlora__ref_gemm;
    k->mr = QLORA__REF_MR;
    k->nr = QLORA__REF_NR;
    k->gemm_bf16 = qlora__ref_gemm_bf16;
    k->mr16 = QLORA__REF_MR;
    k->nr16 = QLORA__REF_NR;
    size_t n_entries = sizeof qlora__kernel_registry / sizeof qlora__kernel_registry[0];
    for (size_t i = 0; i < n_entries; i++) {
        const qlora__kernel_entry *e = &qlora__kernel_registry[i];
        if (!e->fn || (unsigned)e->type >= QLORA_TYPE_COUNT || (unsigned)e->op >= QLORA_OP_COUNT) continue;
        if (!qlora__isa_allowed(e->isa, ctx->cpu, ctx->isa) || e->prio <= best[e->op][e->type]) continue;
        best[e->op][e->type] = e->prio;
        k->name[e->op][e->type] = e->name;
        k->isa[e->op][e->type] = e->isa;
        if (e->op == QLORA_OP_DOT) k->dot[e->type] = (qlora_dot_fn)e->fn;
        else if (e->op == QLORA_OP_DEQ) k->deq[e->type] = (qlora_deq_fn)e->fn;
        else if (e->op == QLORA_OP_GEMM) { k->gemm = (qlora_gemm_fn)e->fn; k->mr = e->mr; k->nr = e->nr; }
        else if (e->op == QLORA_OP_GEMM_BF16) { k->gemm_bf16 = (qlora_gemm_bf16_fn)e->fn; k->mr16 = e->mr; k->nr16 = e->nr; }
        else if (e->op == QLORA_OP_CVT_BF16) k->cvt_bf16 = (qlora_cvt_bf16_fn)e->fn;
        else if (e->op == QLORA_OP_DROPOUT) k->dropout = (qlora_dropout_fn)e->fn;
        else k->vexp = (qlora_exp_fn)e->fn;
    }
    // ctx->isa now reports what runs: the widest instruction set among the chosen kernels.
    qlora_isa used = QLORA_ISA_REF;
    for (int o = 0; o < QLORA_OP_COUNT; o++)
        for (int t = 0; t < QLORA_TYPE_COUNT; t++)
            if (k->isa[o][t] > used) used = k->isa[o][t];
    ctx->isa = used;
}

QLORA__DEF qlora_deq_fn qlora_ctx_deq(const qlora_ctx *ctx, qlora_type t, const char **name) {
    if ((unsigned)t >= QLORA_TYPE_COUNT) { if (name) *name = NULL; return NULL; }
    if (!ctx || !ctx->kern) { if (name) *name = qlora__ref_deq_name; return qlora__ref_deq[t]; }
    if (name) *name = ctx->kern->name[QLORA_OP_DEQ][t];
    return ctx->kern->deq[t];
}

QLORA__DEF qlora_gemm_bf16_fn qlora_ctx_gemm_bf16(const qlora_ctx *ctx, int *mr, int *nr, const char **name) {
    const struct qlora_kernels *k = ctx ? ctx->kern : NULL;
    if (mr) *mr = k ? k->mr16 : QLORA__REF_MR;
    if (nr) *nr = k ? k->nr16 : QLORA__REF_NR;
    if (name) *name = k ? k->name[QLORA_OP_GEMM_BF16][QLORA_TYPE_BF16] : "qlora__ref_gemm_bf16";
    return k ? k->gemm_bf16 : qlora__ref_gemm_bf16;
}

QLORA__DEF qlora_gemm_fn qlora_ctx_gemm(const qlora_ctx *ctx, int *mr, int *nr, const char **name) {
    const struct qlora_kernels *k = ctx ? ctx->kern : NULL;
    if (mr) *mr = k ? k->mr : QLORA__REF_MR;
    if (nr) *nr = k ? k->nr : QLORA__REF_NR;
    if (name) *name = k ? k->name[QLORA_OP_GEMM][QLORA_TYPE_F32] : "qlora__ref_gemm";
    return k ? k->gemm : qlora__ref_gemm;
}

QLORA__DEF qlora_dot_fn qlora_ctx_dot(const qlora_ctx *ctx, qlora_type t, const char **name) {
    if ((unsigned)t >= QLORA_TYPE_COUNT) { if (name) *name = NULL; return NULL; }
    if (!ctx || !ctx->kern) { if (name) *name = qlora__ref_dot_name[t]; return qlora__ref_dot[t]; }
    if (name) *name = ctx->kern->name[QLORA_OP_DOT][t];
    return ctx->kern->dot[t];
}

QLORA__DEF void qlora_ctx_describe(const qlora_ctx *ctx, char *buf, size_t cap) {
    if (!buf || cap == 0) return;
    buf[0] = 0;
    if (!ctx) return;
    size_t len = 0;
    int w = snprintf(buf, cap, "cpu: avx2=%s avx512=%s avx512bf16=%s amx=%s neon=%s; isa=%s; threads=%d;",
                     (ctx->cpu & QLORA_CPU_AVX2) ? "yes" : "no", (ctx->cpu & QLORA_CPU_AVX512) ? "yes" : "no",
                     (ctx->cpu & QLORA_CPU_AVX512BF16) ? "yes" : "no", (ctx->cpu & QLORA_CPU_AMX) ? "yes" : "no",
                     (ctx->cpu & QLORA_CPU_NEON) ? "yes" : "no", qlora_isa_name(ctx->isa), ctx->n_threads);
    for (int t = 0; t < QLORA_TYPE_COUNT && w >= 0; t++) {
        len += (size_t)w;
        if (len >= cap) return;   // truncated (snprintf already terminated it)
        const char *nm = ctx->kern ? ctx->kern->name[QLORA_OP_DOT][t] : qlora__ref_dot_name[t];
        w = snprintf(buf + len, cap - len, " dot_%s_f32: %s", qlora__type_names[t], nm);
    }
    if (w >= 0 && (len += (size_t)w) < cap) {
        const char *nm;
        int mr, nr;
        qlora_ctx_gemm(ctx, &mr, &nr, &nm);
        w = snprintf(buf + len, cap - len, " gemm_f32 %dx%d: %s", mr, nr, nm);
        if (w >= 0 && (len += (size_t)w) < cap) {
            qlora_ctx_gemm_bf16(ctx, &mr, &nr, &nm);
            snprintf(buf + len, cap - len, " gemm_bf16 %dx%d: %s", mr, nr, nm);
        }
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

#define QLORA__MM_TILE 32
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

static qlora_result qlora__gemm_w(qlora_ctx *ctx, const qlora_tensor *W, int trans_w, const float *A, size_t lda,
                                  size_t M, float *C, size_t ldc, int acc, int bf16);
#ifndef QLORA_GEMM_MIN_T
#define QLORA_GEMM_MIN_T 48   // from this many tokens on, qlora_matmul runs as a GEMM (>>gemm)
#endif

QLORA__DEF qlora_result qlora_matmul(qlora_ctx *ctx, const qlora_tensor *W, const float *X, size_t T, float *Y) {
    qlora__mv_args a;
    qlora_result r = qlora__mv_prepare(ctx, W, "qlora_matmul", &a);
    if (r != QLORA_OK) return r;
    if (T == 0) return QLORA_OK;
    if (!X || !Y) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "qlora_matmul: NULL X or Y");
    if (T >= QLORA_GEMM_MIN_T) return qlora__gemm_w(ctx, W, 1, X, a.ne0, T, Y, a.rows, 0, 0);
    // Token tiles of QLORA__MM_TILE rows of X keep the activations in L2 while every weight row
    // streams past them (the whole X of a training batch does not fit). Each output is still one
    // dot product, so tiling changes no bits.
    for (size_t t0 = 0; t0 < T; t0 += QLORA__MM_TILE) {
        a.X = X + t0 * a.ne0;
        a.Y = Y + t0 * a.rows;
        a.T = QLORA__MIN((size_t)QLORA__MM_TILE, T - t0);
        qlora_parallel_for(ctx, qlora__matmul_task, &a);
    }
    return QLORA_OK;
}
// >>gemm
// bf16 operands come in pairs, and the K extent of every bf16 GEMM call is padded with zero pairs
// to a multiple of 16 (the AMX tile depth; harmless elsewhere).
#define QLORA__PAIRS16(k) ((((k) + 1) / 2 + 15) / 16 * 16)
static void qlora__tensor_init(qlora_tensor *t, qlora_type type, int64_t ne0, int64_t ne1, const void *data);
// Batched products (training, prompt prefill) as real GEMMs, BLIS-style without packing A:
//     C (M x N) [+]= A (M x K) . B (K x N)
// B is never materialised: a fill callback writes one panel of it (kc rows x pw columns, as pw/NR
// sub-panels of kc x NR floats) into per-thread scratch, dequantizing the frozen weight block by
// block (dispatched deq kernel, bit-exact), and the dispatched MR x NR micro-kernel consumes it.
//   forward          Y  = X . deq(W)^T     fill_nt: panel[k][j] = deq(W)[n0 + j][k0 + k]
//   backward-input   dX += dY . deq(W)     fill_nn: panel[k][j] = deq(W)[k0 + k][n0 + j]
// Threads split the panels of N when there are enough of them, else the rows of M (each thread
// then fills its own panels). Every C element is one running sum over k in order (the K blocks
// continue it: acc = 1), so the result does not depend on the thread count or the split.
// Dequantize W[row, c0 .. c0+n) into out. Handles every qlora_type; bnb blocks may straddle rows.
static void qlora__deq_range(const qlora_tensor *W, size_t row, size_t c0, size_t n, float *out) {
    size_t ne0 = (size_t)W->ne[0];
    switch (W->type) {
    case QLORA_TYPE_F32: memcpy(out, (const float *)W->data + row * ne0 + c0, n * sizeof(float)); return;
    case QLORA_TYPE_F16: { const uint16_t *p = (const uint16_t *)W->data + row * ne0 + c0; for (size_t i = 0; i < n; i++) out[i] = qlora__fp16_to_f32(p[i]); return; }
    case QLORA_TYPE_BF16: { const uint16_t *p = (const uint16_t *)W->data + row * ne0 + c0; for (size_t i = 0; i < n; i++) out[i] = qlora__bf16_to_f32(p[i]); return; }
    case QLORA_TYPE_Q8_0: case QLORA_TYPE_Q4_0: case QLORA_TYPE_Q4_1: {
        size_t rb = qlora_ggml_row_bytes(W->type, ne0), bb = qlora_ggml_row_bytes(W->type, 32);
        const uint8_t *p = (const uint8_t *)W->data + row * rb + (c0 / 32) * bb;   // c0, n: multiples of 32
        qlora_ggml_dequantize(W->type, p, n, out);
        return;
    }
    default: break;
    }
    // bnb formats: element i of the flattened matrix; absmax decoded per block
    const uint8_t *codes = (const uint8_t *)W->data;
    const float *lut = qlora_bnb_code4(W->type);
    size_t bs = (size_t)W->blocksize, i0 = row * ne0 + c0, cur_b = (size_t)-1;
    float am = 0;
    for (size_t k = 0; k < n; k++) {
        size_t i = i0 + k, b = i / bs;
        if (b != cur_b) {
            cur_b = b;
            am = W->absmax ? W->absmax[b] : W->code2[W->qabsmax[b]] * W->absmax2[b / 256] + W->offset;
        }
        if (W->type == QLORA_TYPE_INT8) out[k] = ((float)(int8_t)codes[i] / 127.0f) * am;
        else out[k] = lut[(i & 1) ? (codes[i >> 1] & 15) : (codes[i >> 1] >> 4)] * am;
    }
}


// Dequantize W[row, c0 .. c0 + n) with the dispatched deq kernel when the segment is made of whole
// blocks (the common case), else the readable path above.
static void qlora__deq_row(const qlora_ctx *ctx, const qlora_tensor *W, size_t row, size_t c0, size_t n, float *out) {
    size_t ne0 = (size_t)W->ne[0], g0 = row * ne0 + c0;
    qlora_deq_fn deq = ctx->kern->deq[W->type];
    switch (W->type) {
    case QLORA_TYPE_F32: memcpy(out, (const float *)W->data + g0, n * sizeof(float)); return;
    case QLORA_TYPE_F16: case QLORA_TYPE_BF16: deq((const uint8_t *)W->data + 2 * g0, NULL, out, n, 0); return;
    case QLORA_TYPE_Q8_0: case QLORA_TYPE_Q4_0: case QLORA_TYPE_Q4_1:
        if (c0 % QLORA__QK == 0 && n % QLORA__QK == 0) {
            deq((const uint8_t *)W->data + row * qlora__kern_row_bytes(W->type, ne0) + qlora__kern_row_bytes(W->type, c0), NULL, out, n, 0);
            return;
        }
        break;
    default: {
        size_t bs = (size_t)W->blocksize;
        if (g0 % bs || n % bs || n / bs > QLORA__MATVEC_SCALES) break;
        float sc[QLORA__MATVEC_SCALES];
        for (size_t b = 0; b < n / bs; b++) sc[b] = qlora__bnb_scale(W, g0 / bs + b);
        deq((const uint8_t *)W->data + qlora__kern_row_bytes(W->type, g0), sc, out, n, bs);
        return;
    }
    }
    qlora__deq_range(W, row, c0, n, out);
}

typedef struct qlora__gemm_job qlora__gemm_job;
struct qlora__gemm_job {
    size_t M, N, K, lda, ldc;
    const float *A;
    float *C;
    int acc;                    // 1: C += A.B (else C = A.B)
    const qlora_tensor *W;      // the B operand's storage (any type; f32 wrappers for activations)
    void (*fill)(const qlora_ctx *ctx, const qlora__gemm_job *j, size_t k0, size_t kc, size_t n0, size_t nw, float *panel, float *tmp);
    qlora_gemm_fn gemm;
    size_t mr, nr, kc, pw;      // micro tile, K block, panel width (multiple of nr)
    int split_m, trans;         // trans: B = deq(W)^T (fill_nt), else deq(W) (fill_nn)
    const qlora_ctx *ctx;
    int bf16;                   // bf16 x bf16 -> f32 micro-kernel on A16 and converted panels
    const uint32_t *A16;        // A as bf16 pairs, rows of lda16 u32 (K rounded up to even)
    size_t lda16;
    qlora_gemm_bf16_fn gemm16;
};

// Pack a row-major f32 matrix block into GEMM panels (ceil(nw / nr) sub-panels of kc x nr, zero-padded):
//   nt: panel[k][j] = B[(n0 + j) * ldb + k0 + k]        nn: panel[k][j] = B[(k0 + k) * ldb + n0 + j]
static void qlora__pack_nt(float *panel, const float *B, size_t ldb, size_t n0, size_t nw, size_t k0, size_t kc, size_t nr) {
    for (size_t s = 0; s * nr < nw; s++) {
        float *p = panel + s * kc * nr;
        for (size_t jj = 0; jj < nr; jj++) {
            if (s * nr + jj < nw) {
                const float *src = B + (n0 + s * nr + jj) * ldb + k0;
                for (size_t k = 0; k < kc; k++) p[k * nr + jj] = src[k];
            } else {
                for (size_t k = 0; k < kc; k++) p[k * nr + jj] = 0.0f;
            }
        }
    }
}
static void qlora__pack_nn(float *panel, const float *B, size_t ldb, size_t k0, size_t kc, size_t n0, size_t nw, size_t nr) {
    for (size_t s = 0; s * nr < nw; s++) {
        size_t nv = QLORA__MIN(nr, nw - s * nr);
        for (size_t k = 0; k < kc; k++) {
            float *p = panel + (s * kc + k) * nr;
            memcpy(p, B + (k0 + k) * ldb + n0 + s * nr, nv * sizeof(float));
            for (size_t jj = nv; jj < nr; jj++) p[jj] = 0.0f;
        }
    }
}
// panel[s][k][jj] = deq(W)[n0 + s*nr + jj][k0 + k]   (rows of W are the N index): deq the rows, pack
static void qlora__fill_nt(const qlora_ctx *ctx, const qlora__gemm_job *j, size_t k0, size_t kc, size_t n0, size_t nw, float *panel, float *tmp) {
    for (size_t r = 0; r < nw; r++) qlora__deq_row(ctx, j->W, n0 + r, k0, kc, tmp + r * kc);
    qlora__pack_nt(panel, tmp, kc, 0, nw, 0, kc, j->nr);
}

// panel[s][k][jj] = deq(W)[k0 + k][n0 + s*nr + jj]   (rows of W are the K index): deq the rows, pack
static void qlora__fill_nn(const qlora_ctx *ctx, const qlora__gemm_job *j, size_t k0, size_t kc, size_t n0, size_t nw, float *panel, float *tmp) {
    for (size_t k = 0; k < kc; k++) qlora__deq_row(ctx, j->W, k0 + k, n0, nw, tmp + k * nw);
    qlora__pack_nn(panel, tmp, nw, 0, kc, 0, nw, j->nr);
}

// bf16 panels: p16[s][q][jj] = bf16 pair (k = 2q, 2q + 1) of column n0 + s*nr + jj, zero-padded.
// nt: rows of W are columns: deq each row, convert it to pairs (cvt kernel), transpose u32s.
static void qlora__fill_nt16(const qlora_ctx *ctx, const qlora__gemm_job *j, size_t k0, size_t kc, size_t n0, size_t nw, uint32_t *p16, float *tmp, uint32_t *t16) {
    size_t nr = j->nr, kc2 = (kc + 1) / 2, kp = QLORA__PAIRS16(kc);
    for (size_t r = 0; r < nw; r++) {
        qlora__deq_row(ctx, j->W, n0 + r, k0, kc, tmp);
        ctx->kern->cvt_bf16(tmp, kc, t16 + r * kc2);
    }
    for (size_t s = 0; s * nr < nw; s++) {
        size_t nv = QLORA__MIN(nr, nw - s * nr);
        for (size_t q = 0; q < kc2; q++) {
            uint32_t *o = p16 + (s * kp + q) * nr;
            const uint32_t *src = t16 + (s * nr) * kc2 + q;
            size_t jj = 0;
            for (; jj < nv; jj++) o[jj] = src[jj * kc2];
            for (; jj < nr; jj++) o[jj] = 0;
        }
        memset(p16 + (s * kp + kc2) * nr, 0, (kp - kc2) * nr * sizeof(uint32_t));
    }
}
// nn: rows of W are k: deq rows 2q and 2q + 1, interleave, convert to pairs, scatter to sub-panels.
static void qlora__fill_nn16(const qlora_ctx *ctx, const qlora__gemm_job *j, size_t k0, size_t kc, size_t n0, size_t nw, uint32_t *p16, float *tmp, uint32_t *t16) {
    size_t nr = j->nr, kc2 = (kc + 1) / 2, kp = QLORA__PAIRS16(kc);
    float *t0 = tmp, *t1 = tmp + nw, *z = tmp + 2 * nw;
    for (size_t q = 0; q < kc2; q++) {
        qlora__deq_row(ctx, j->W, k0 + 2 * q, n0, nw, t0);
        if (2 * q + 1 < kc) qlora__deq_row(ctx, j->W, k0 + 2 * q + 1, n0, nw, t1);
        else memset(t1, 0, nw * sizeof(float));
        for (size_t c = 0; c < nw; c++) { z[2 * c] = t0[c]; z[2 * c + 1] = t1[c]; }
        ctx->kern->cvt_bf16(z, 2 * nw, t16);
        for (size_t s = 0; s * nr < nw; s++) {
            size_t nv = QLORA__MIN(nr, nw - s * nr);
            uint32_t *o = p16 + (s * kp + q) * nr;
            memcpy(o, t16 + s * nr, nv * sizeof(uint32_t));
            for (size_t jj = nv; jj < nr; jj++) o[jj] = 0;
        }
    }
    for (size_t s = 0; s * nr < nw; s++) memset(p16 + (s * kp + kc2) * nr, 0, (kp - kc2) * nr * sizeof(uint32_t));
}

static void qlora__gemm_task(void *arg, int ith, int nth) {
    const qlora__gemm_job *j = (const qlora__gemm_job *)arg;
    size_t mr = j->mr, nr = j->nr, pw = j->pw, kcmax = j->kc;
    size_t npan = (j->N + pw - 1) / pw, p0 = 0, p1 = npan, m0 = 0, m1 = j->M;
    if (j->split_m) {
        size_t b, e;
        qlora__split((j->M + mr - 1) / mr, ith, nth, &b, &e);
        m0 = b * mr; m1 = QLORA__MIN(j->M, e * mr);
        if (m0 >= m1) return;
    } else {
        qlora__split(npan, ith, nth, &p0, &p1);
    }
    float *panel = j->ctx->scratch + (size_t)ith * j->ctx->scratch_floats;   // kc x pw
    float *tmp = panel + kcmax * pw;                                          // pw x kc (+ 6 pw)
    uint32_t *p16 = (uint32_t *)(tmp + kcmax * pw + 6 * pw);                  // PAIRS16(kc) x pw
    for (size_t p = p0; p < p1; p++) {
        size_t n0 = p * pw, nw = QLORA__MIN(pw, j->N - n0);
        for (size_t k0 = 0; k0 < j->K; k0 += kcmax) {
            size_t kc = QLORA__MIN(kcmax, j->K - k0), kp = QLORA__PAIRS16(kc);
            int acc = j->acc || k0 > 0;
            if (j->bf16) {                  // the f32 panel's space holds the converted rows
                if (j->trans) qlora__fill_nt16(j->ctx, j, k0, kc, n0, nw, p16, tmp, (uint32_t *)panel);
                else qlora__fill_nn16(j->ctx, j, k0, kc, n0, nw, p16, tmp, (uint32_t *)panel);
                for (size_t i = m0; i < m1; i += mr)
                    for (size_t s = 0; s * nr < nw; s++)
                        j->gemm16(kp, j->A16 + i * j->lda16 + k0 / 2, j->lda16, p16 + s * kp * nr, j->C + i * j->ldc + n0 + s * nr,
                                  j->ldc, (int)QLORA__MIN(mr, m1 - i), (int)QLORA__MIN(nr, nw - s * nr), acc);
                continue;
            }
            j->fill(j->ctx, j, k0, kc, n0, nw, panel, tmp);
            for (size_t i = m0; i < m1; i += mr)
                for (size_t s = 0; s * nr < nw; s++)
                    j->gemm(kc, j->A + i * j->lda + k0, j->lda, panel + s * kc * nr, j->C + i * j->ldc + n0 + s * nr, j->ldc,
                            (int)QLORA__MIN(mr, m1 - i), (int)QLORA__MIN(nr, nw - s * nr), acc);
        }
    }
}

// Per-thread scratch of `floats` floats (64-byte aligned), grown on demand and kept in the ctx:
// after the first training step nothing is allocated any more.
static qlora_result qlora__scratch_reserve(qlora_ctx *ctx, size_t floats) {
    floats = (floats + 15) & ~(size_t)15;
    if (floats <= ctx->scratch_floats) return QLORA_OK;
    QLORA__FREE(ctx->scratch_raw);
    ctx->scratch = NULL;
    ctx->scratch_floats = 0;
    size_t bytes = floats * sizeof(float) * (size_t)ctx->n_threads + 64;
    ctx->scratch_raw = QLORA__MALLOC(bytes);
    if (!ctx->scratch_raw) return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "gemm: %zu KiB of scratch", bytes >> 10);
    ctx->scratch = (float *)(((uintptr_t)ctx->scratch_raw + 63) & ~(uintptr_t)63);
    ctx->scratch_floats = floats;
    return QLORA_OK;
}

// A (M x K) -> bf16 pairs, rows of PAIRS16(K) u32 (zero-padded), threaded over rows
typedef struct qlora__cvt_job { const float *A; size_t lda, M, K; uint32_t *out; qlora_cvt_bf16_fn cvt; } qlora__cvt_job;
static void qlora__cvt_task(void *arg, int ith, int nth) {
    const qlora__cvt_job *j = (const qlora__cvt_job *)arg;
    size_t b, e, k2 = (j->K + 1) / 2, ld = QLORA__PAIRS16(j->K);
    qlora__split(j->M, ith, nth, &b, &e);
    for (size_t i = b; i < e; i++) {
        j->cvt(j->A + i * j->lda, j->K, j->out + i * ld);
        for (size_t q = k2; q < ld; q++) j->out[i * ld + q] = 0;
    }
}

// The blocking of a GEMM through W (ctx may be NULL: reference tiles, one thread): K, N, panel
// width, K block, micro tile, thread split. Also sizes the scratch (qlora__gemm_scratch).
static void qlora__gemm_setup(const qlora_ctx *ctx, const qlora_tensor *W, int trans_w, int bf16, qlora__gemm_job *jp) {
    qlora__gemm_job j;
    memset(&j, 0, sizeof j);
    size_t ne0 = (size_t)W->ne[0], rows = qlora_tensor_nelements(W) / ne0;
    int mr, nr;
    j.gemm = qlora_ctx_gemm(ctx, &mr, &nr, NULL);
    if (bf16) j.gemm16 = qlora_ctx_gemm_bf16(ctx, &mr, &nr, NULL);
    j.bf16 = bf16;
    j.mr = (size_t)mr; j.nr = (size_t)nr;
    j.W = W; j.ctx = ctx;
    size_t bs = qlora_type_is_bnb(W->type) ? (size_t)W->blocksize : QLORA__QK;
    size_t unit = bs <= 256 ? bs : 1;               // keep K blocks / panel columns on block edges
    if (trans_w) {                                  // K = ne0 (within a row), N = rows
        j.K = ne0; j.N = rows; j.fill = qlora__fill_nt; j.trans = 1;
        j.pw = 2 * j.nr;
        j.kc = j.K <= 1024 ? j.K : QLORA__MAX(unit, 512 / unit * unit);
    } else {                                        // K = rows, N = ne0
        j.K = rows; j.N = ne0; j.fill = qlora__fill_nn;
        j.pw = (QLORA__MAX((size_t)64, unit) + j.nr - 1) / j.nr * j.nr;
        j.kc = QLORA__MIN(j.K, (size_t)256);
    }
    if (bf16 && j.kc < j.K) j.kc &= ~(size_t)31;  // K blocks: whole 16-pair groups (no zero pad inside)
    size_t npan = (j.N + j.pw - 1) / j.pw;
    j.split_m = npan < 4 * (size_t)(ctx ? ctx->n_threads : 1);
    if (bf16) j.lda16 = QLORA__PAIRS16(j.K);     // zero pairs pad every row to a multiple of 16
    *jp = j;
}
static size_t qlora__gemm_scratch(const qlora__gemm_job *j) { return 2 * j->kc * j->pw + QLORA__PAIRS16(j->kc) * j->pw + 6 * j->pw; }

static qlora_result qlora__abuf_reserve(qlora_ctx *ctx, size_t need) {
    if (need <= ctx->abuf_n) return QLORA_OK;
    QLORA__FREE(ctx->abuf);
    ctx->abuf_n = 0;
    ctx->abuf = (uint32_t *)QLORA__MALLOC(need * sizeof(uint32_t));
    if (!ctx->abuf) return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "gemm: %zu MiB for bf16 activations", need * 4 >> 20);
    ctx->abuf_n = need;
    return QLORA_OK;
}

// C (M x N) [+]= A (M x K, row stride lda) . B, B = deq(W)^T (trans_w: W is N x K, the forward)
// or deq(W) (W is K x N, the backward-input). ldc: row stride of C. bf16: operands rounded to
// bf16, products summed in f32 (AVX-512-BF16 vdpbf16ps / AMX tiles where the CPU has them).
// Scratch is grown here only when no qlora_train_create planned it (plain qlora_matmul callers).
static qlora_result qlora__gemm_w(qlora_ctx *ctx, const qlora_tensor *W, int trans_w, const float *A, size_t lda,
                                  size_t M, float *C, size_t ldc, int acc, int bf16) {
    qlora__gemm_job j;
    qlora__gemm_setup(ctx, W, trans_w, bf16, &j);
    j.M = M; j.A = A; j.lda = lda; j.C = C; j.ldc = ldc; j.acc = acc;
    qlora_result r = qlora__scratch_reserve(ctx, qlora__gemm_scratch(&j));
    if (r != QLORA_OK) return r;
    if (bf16) {
        if ((r = qlora__abuf_reserve(ctx, M * j.lda16)) != QLORA_OK) return r;
        qlora__cvt_job cj = { A, lda, M, j.K, ctx->abuf, ctx->kern->cvt_bf16 };
        qlora_parallel_for(ctx, qlora__cvt_task, &cj);
        j.A16 = ctx->abuf;
    }
    qlora_parallel_for(ctx, qlora__gemm_task, &j);
    return QLORA_OK;
}

// Plain f32 operands: C [+]= A . B^T with B (N x K) row-major (trans_b = 1), or A . B with B (K x N).
static qlora_result qlora__gemm_f32(qlora_ctx *ctx, const float *A, size_t lda, const float *B, size_t K, size_t N,
                                    int trans_b, size_t M, float *C, size_t ldc, int acc) {
    qlora_tensor w;
    qlora__tensor_init(&w, QLORA_TYPE_F32, (int64_t)(trans_b ? K : N), (int64_t)(trans_b ? N : K), (void *)(uintptr_t)B);
    w.n_dims = 2;
    return qlora__gemm_w(ctx, &w, trans_b, A, lda, M, C, ldc, acc, 0);
}

// >>files
// Whole files are mapped read-only (the model weights stay in the page cache, not on the heap);
// where mmap is unavailable the file is read into memory. Nothing is ever written through a map.
#if !defined(_WIN32)
#include <sys/mman.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>
#include <errno.h>
#endif

QLORA__DEF qlora_result qlora_file_open(qlora_ctx *ctx, const char *path, qlora_file *f) {
    memset(f, 0, sizeof *f);
#if !defined(_WIN32)
    int fd = open(path, O_RDONLY);
    if (fd < 0) return QLORA__ERR(ctx, QLORA_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return QLORA__ERR(ctx, QLORA_ERR_IO, "%s: not a regular file", path);
    }
    f->size = (size_t)st.st_size;
    if (f->size == 0) { close(fd); f->data = (const uint8_t *)""; return QLORA_OK; }
    void *p = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return QLORA__ERR(ctx, QLORA_ERR_IO, "%s: mmap failed: %s", path, strerror(errno));
    f->data = (const uint8_t *)p;
    f->mapped = 1;
    return QLORA_OK;
#else
    FILE *fp = fopen(path, "rb");
    if (!fp) return QLORA__ERR(ctx, QLORA_ERR_IO, "%s: cannot open", path);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *buf = (uint8_t *)QLORA__MALLOC(n > 0 ? (size_t)n : 1);
    if (!buf) { fclose(fp); return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", path); }
    if (n > 0 && fread(buf, 1, (size_t)n, fp) != (size_t)n) { fclose(fp); QLORA__FREE(buf); return QLORA__ERR(ctx, QLORA_ERR_IO, "%s: read failed", path); }
    fclose(fp);
    f->data = buf; f->size = (size_t)n; f->mapped = 2;
    return QLORA_OK;
#endif
}

QLORA__DEF void qlora_file_close(qlora_file *f) {
    if (!f || !f->data) return;
#if !defined(_WIN32)
    if (f->mapped == 1) munmap((void *)(uintptr_t)f->data, f->size);
#endif
    if (f->mapped == 2) QLORA__FREE((void *)(uintptr_t)f->data);
    memset(f, 0, sizeof *f);
}

static int qlora__file_exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}

// Write a whole file atomically: path.tmp, fsync, rename. Nobody ever sees a half-written file.
static qlora_result qlora__write_atomic(qlora_ctx *ctx, const char *path, const void *const *parts,
                                        const size_t *sizes, size_t n_parts) {
    size_t plen = strlen(path);
    char *tmp = (char *)QLORA__MALLOC(plen + 5);
    if (!tmp) return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    int ok = 1;
#if !defined(_WIN32)
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { qlora_result r = QLORA__ERR(ctx, QLORA_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno)); QLORA__FREE(tmp); return r; }
    for (size_t i = 0; i < n_parts && ok; i++) {
        const char *p = (const char *)parts[i];
        size_t left = sizes[i];
        while (left > 0) {
            ssize_t w = write(fd, p, left > ((size_t)1 << 30) ? ((size_t)1 << 30) : left);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) { ok = 0; break; }
            p += w; left -= (size_t)w;
        }
    }
    if (ok && fsync(fd) != 0) ok = 0;
    if (close(fd) != 0) ok = 0;
#else
    FILE *fp = fopen(tmp, "wb");
    if (!fp) { qlora_result r = QLORA__ERR(ctx, QLORA_ERR_IO, "%s: cannot create", tmp); QLORA__FREE(tmp); return r; }
    for (size_t i = 0; i < n_parts && ok; i++)
        if (sizes[i] && fwrite(parts[i], 1, sizes[i], fp) != sizes[i]) ok = 0;
    if (fclose(fp) != 0) ok = 0;
#endif
    if (!ok || rename(tmp, path) != 0) {
        remove(tmp);
        QLORA__FREE(tmp);
        return QLORA__ERR(ctx, QLORA_ERR_IO, "%s: write failed (disk full?)", path);
    }
    QLORA__FREE(tmp);
    return QLORA_OK;
}

// >>json
// A small recursive-descent JSON parser building a DOM of qlora_json nodes. Depth-limited,
// every byte bounds-checked, \uXXXX (incl. surrogate pairs) decoded to UTF-8.
typedef struct qlora__jp {
    const char *s, *end, *start;
    char *err; size_t errcap;
    int depth;
} qlora__jp;

static qlora_result qlora__jp_fail(qlora__jp *p, const char *what) {
    if (p->err && p->errcap) {
        size_t line = 1, col = 1;
        for (const char *c = p->start; c < p->s && c < p->end; c++) { if (*c == '\n') { line++; col = 1; } else col++; }
        snprintf(p->err, p->errcap, "line %zu, column %zu: %s", line, col, what);
    }
    return QLORA_ERR_JSON;
}
static void qlora__jp_ws(qlora__jp *p) {
    while (p->s < p->end && (*p->s == ' ' || *p->s == '\t' || *p->s == '\n' || *p->s == '\r')) p->s++;
}
static int qlora__hex4(const char *s, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i]; v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return 0;
    }
    *out = v;
    return 1;
}
static size_t qlora__utf8_put(char *o, unsigned cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) { o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[2] = (char)(0x80 | (cp & 0x3F)); return 3; }
    o[0] = (char)(0xF0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}
// Parses a string at p->s (which points at the opening quote) into a new buffer.
static qlora_result qlora__jp_string(qlora__jp *p, char **out, size_t *len) {
    p->s++;
    const char *b = p->s;
    while (p->s < p->end && *p->s != '"') {          // pass 1: find the end, bound the length
        if ((unsigned char)*p->s < 0x20) return qlora__jp_fail(p, "control character in string");
        if (*p->s == '\\') { p->s++; if (p->s >= p->end) break; }
        p->s++;
    }
    if (p->s >= p->end) return qlora__jp_fail(p, "unterminated string");
    const char *e = p->s;
    p->s++;
    char *o = (char *)QLORA__MALLOC((size_t)(e - b) + 1);    // unescaped is never longer
    if (!o) return QLORA_ERR_OUT_OF_MEMORY;
    size_t k = 0;
    for (const char *c = b; c < e; c++) {                     // pass 2: unescape
        if (*c != '\\') { o[k++] = *c; continue; }
        c++;
        switch (*c) {
        case '"': o[k++] = '"'; break;   case '\\': o[k++] = '\\'; break;
        case '/': o[k++] = '/'; break;   case 'b': o[k++] = '\b'; break;
        case 'f': o[k++] = '\f'; break;  case 'n': o[k++] = '\n'; break;
        case 'r': o[k++] = '\r'; break;  case 't': o[k++] = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (e - c < 5 || !qlora__hex4(c + 1, &cp)) { QLORA__FREE(o); p->s = c; return qlora__jp_fail(p, "bad \\u escape"); }
            c += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && e - c >= 7 && c[1] == '\\' && c[2] == 'u' && qlora__hex4(c + 3, &lo) && lo >= 0xDC00 && lo < 0xE000) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                c += 6;
            }
            k += qlora__utf8_put(o + k, cp);
            break;
        }
        default: QLORA__FREE(o); p->s = c; return qlora__jp_fail(p, "bad escape");
        }
    }
    o[k] = 0;
    *out = o;
    *len = k;
    return QLORA_OK;
}

static qlora_result qlora__jp_value(qlora__jp *p, qlora_json *v);

static qlora_result qlora__jp_container(qlora__jp *p, qlora_json *v, int is_obj) {
    char close = is_obj ? '}' : ']';
    v->type = is_obj ? QLORA_JSON_OBJECT : QLORA_JSON_ARRAY;
    if (++p->depth > 512) return qlora__jp_fail(p, "nesting too deep");
    p->s++;
    qlora__jp_ws(p);
    qlora_json **tail = &v->child;
    if (p->s < p->end && *p->s == close) { p->s++; p->depth--; return QLORA_OK; }
    for (;;) {
        qlora_json *c = QLORA__CALLOC_T(qlora_json, 1);
        if (!c) return QLORA_ERR_OUT_OF_MEMORY;
        *tail = c; tail = &c->next; v->count++;
        qlora__jp_ws(p);
        if (is_obj) {
            if (p->s >= p->end || *p->s != '"') return qlora__jp_fail(p, "expected member name");
            qlora_result r = qlora__jp_string(p, &c->key, &c->key_len);
            if (r) return r;
            qlora__jp_ws(p);
            if (p->s >= p->end || *p->s != ':') return qlora__jp_fail(p, "expected ':'");
            p->s++;
        }
        qlora_result r = qlora__jp_value(p, c);
        if (r) return r;
        qlora__jp_ws(p);
        if (p->s < p->end && *p->s == ',') { p->s++; continue; }
        if (p->s < p->end && *p->s == close) { p->s++; p->depth--; return QLORA_OK; }
        return qlora__jp_fail(p, is_obj ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static qlora_result qlora__jp_value(qlora__jp *p, qlora_json *v) {
    qlora__jp_ws(p);
    if (p->s >= p->end) return qlora__jp_fail(p, "unexpected end of input");
    char c = *p->s;
    if (c == '{' || c == '[') return qlora__jp_container(p, v, c == '{');
    if (c == '"') { v->type = QLORA_JSON_STRING; return qlora__jp_string(p, &v->str, &v->len); }
    size_t left = (size_t)(p->end - p->s);
    if (left >= 4 && !memcmp(p->s, "true", 4)) { v->type = QLORA_JSON_TRUE; p->s += 4; return QLORA_OK; }
    if (left >= 5 && !memcmp(p->s, "false", 5)) { v->type = QLORA_JSON_FALSE; p->s += 5; return QLORA_OK; }
    if (left >= 4 && !memcmp(p->s, "null", 4)) { v->type = QLORA_JSON_NULL; p->s += 4; return QLORA_OK; }
    if (c == '-' || (c >= '0' && c <= '9')) {
        char buf[64];
        size_t k = 0;
        const char *q = p->s;
        if (*q == '-') q++;
        if (q >= p->end || !(*q >= '0' && *q <= '9')) return qlora__jp_fail(p, "bad number");
        while (q < p->end && ((*q >= '0' && *q <= '9') || *q == '.' || *q == 'e' || *q == 'E' || *q == '+' || *q == '-')) q++;
        k = (size_t)(q - p->s);
        if (k >= sizeof buf) return qlora__jp_fail(p, "number too long");
        memcpy(buf, p->s, k); buf[k] = 0;
        char *endp = NULL;
        v->num = strtod(buf, &endp);
        if (endp != buf + k) return qlora__jp_fail(p, "bad number");
        v->type = QLORA_JSON_NUMBER;
        p->s = q;
        return QLORA_OK;
    }
    return qlora__jp_fail(p, "unexpected character");
}

QLORA__DEF void qlora_json_free(qlora_json *j) {
    while (j) {                       // siblings iteratively, children recursively (depth <= 512)
        qlora_json *next = j->next;
        qlora_json_free(j->child);
        QLORA__FREE(j->str);
        QLORA__FREE(j->key);
        QLORA__FREE(j);
        j = next;
    }
}

QLORA__DEF qlora_result qlora_json_parse(const char *text, size_t len, qlora_json **out, char *err, size_t errcap) {
    qlora__jp p;
    p.s = p.start = text; p.end = text + len; p.err = err; p.errcap = errcap; p.depth = 0;
    if (err && errcap) err[0] = 0;
    *out = NULL;
    qlora_json *root = QLORA__CALLOC_T(qlora_json, 1);
    if (!root) return QLORA_ERR_OUT_OF_MEMORY;
    qlora_result r = qlora__jp_value(&p, root);
    if (r == QLORA_OK) {
        qlora__jp_ws(&p);
        if (p.s != p.end) r = qlora__jp_fail(&p, "trailing characters after JSON value");
    }
    if (r != QLORA_OK) {
        if (r == QLORA_ERR_OUT_OF_MEMORY && err && errcap) snprintf(err, errcap, "out of memory");
        qlora_json_free(root);
        return r;
    }
    *out = root;
    return QLORA_OK;
}

QLORA__DEF const qlora_json *qlora_json_get(const qlora_json *obj, const char *key) {
    if (!obj || obj->type != QLORA_JSON_OBJECT) return NULL;
    for (const qlora_json *c = obj->child; c; c = c->next)
        if (!strcmp(c->key, key)) return c;
    return NULL;
}
QLORA__DEF const qlora_json *qlora_json_at(const qlora_json *arr, size_t i) {
    if (!arr || (arr->type != QLORA_JSON_ARRAY && arr->type != QLORA_JSON_OBJECT)) return NULL;
    const qlora_json *c = arr->child;
    while (c && i--) c = c->next;
    return c;
}
QLORA__DEF double qlora_json_num(const qlora_json *obj, const char *key, double def) {
    const qlora_json *v = qlora_json_get(obj, key);
    if (v && v->type == QLORA_JSON_NUMBER) return v->num;
    if (v && v->type == QLORA_JSON_TRUE) return 1;
    if (v && v->type == QLORA_JSON_FALSE) return 0;
    return def;
}
QLORA__DEF const char *qlora_json_str(const qlora_json *obj, const char *key, const char *def) {
    const qlora_json *v = qlora_json_get(obj, key);
    return v && v->type == QLORA_JSON_STRING ? v->str : def;
}

// A whole JSON file; errors name the file, line and column.
static qlora_result qlora__read_json_file(qlora_ctx *ctx, const char *path, qlora_json **out) {
    qlora_file f;
    qlora_result r = qlora_file_open(ctx, path, &f);
    if (r != QLORA_OK) return r;
    char err[160];
    r = qlora_json_parse((const char *)f.data, f.size, out, err, sizeof err);
    qlora_file_close(&f);
    if (r != QLORA_OK) return QLORA__ERR(ctx, r, "%s: %s", path, err);
    return QLORA_OK;
}

// >>gguf
// GGUF v2/v3 (ggml docs/gguf.md): header, key/values, tensor infos, aligned data. Every length and
// offset read from the file is checked against the file size before use.
static const size_t qlora__gguf_scalar_size[QLORA_GGUF_VTYPE_COUNT] = { 1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8 };

typedef struct qlora__rd { const uint8_t *p, *end; } qlora__rd;
static int qlora__rd_need(qlora__rd *r, size_t n) { return (size_t)(r->end - r->p) >= n; }
static int qlora__rd_str(qlora__rd *r, qlora_str *s) {
    if (!qlora__rd_need(r, 8)) return 0;
    uint64_t n = qlora__rd_u64(r->p);
    r->p += 8;
    if (n > (uint64_t)(r->end - r->p)) return 0;
    s->ptr = (const char *)r->p; s->len = (size_t)n;
    r->p += n;
    return 1;
}

// ggml type id -> ours (QLORA_TYPE_COUNT when we cannot read it).
static qlora_type qlora__ggml_type(uint32_t t) {
    switch (t) {
    case 0: return QLORA_TYPE_F32;  case 1: return QLORA_TYPE_F16;  case 2: return QLORA_TYPE_Q4_0;
    case 3: return QLORA_TYPE_Q4_1; case 8: return QLORA_TYPE_Q8_0; case 30: return QLORA_TYPE_BF16;
    default: return QLORA_TYPE_COUNT;
    }
}
static uint32_t qlora__type_to_ggml(qlora_type t) {
    switch (t) {
    case QLORA_TYPE_F32: return 0; case QLORA_TYPE_F16: return 1; case QLORA_TYPE_Q4_0: return 2;
    case QLORA_TYPE_Q4_1: return 3; case QLORA_TYPE_Q8_0: return 8; case QLORA_TYPE_BF16: return 30;
    default: return 0xffffffffu;
    }
}

// Skips one value of type t (arrays recursively), validating bounds.
static int qlora__gguf_skip(qlora__rd *r, uint32_t t, int depth) {
    if (t >= QLORA_GGUF_VTYPE_COUNT || depth > 8) return 0;
    if (t == QLORA_GGUF_STRING) { qlora_str s; return qlora__rd_str(r, &s); }
    if (t == QLORA_GGUF_ARRAY) {
        if (!qlora__rd_need(r, 12)) return 0;
        uint32_t et = qlora__rd_u32(r->p);
        uint64_t n = qlora__rd_u64(r->p + 4);
        r->p += 12;
        if (et >= QLORA_GGUF_VTYPE_COUNT) return 0;
        if (et != QLORA_GGUF_STRING && et != QLORA_GGUF_ARRAY) {
            size_t bytes;
            if (n > SIZE_MAX || !qlora__mul_ok((size_t)n, qlora__gguf_scalar_size[et], &bytes) || !qlora__rd_need(r, bytes)) return 0;
            r->p += bytes;
            return 1;
        }
        for (uint64_t i = 0; i < n; i++) if (!qlora__gguf_skip(r, et, depth + 1)) return 0;
        return 1;
    }
    if (!qlora__rd_need(r, qlora__gguf_scalar_size[t])) return 0;
    r->p += qlora__gguf_scalar_size[t];
    return 1;
}

QLORA__DEF void qlora_gguf_close(qlora_gguf *g) {
    if (!g) return;
    if (g->kv) for (uint64_t i = 0; i < g->n_kv; i++) QLORA__FREE(g->kv[i].strs);
    QLORA__FREE(g->kv);
    QLORA__FREE(g->tensors);
    qlora_file_close(&g->file);
    QLORA__FREE(g);
}

static qlora_result qlora__gguf_parse(qlora_ctx *ctx, const char *name, qlora_gguf *g) {
    const uint8_t *data = g->file.data;
    size_t size = g->file.size;
    qlora__rd r = { data, data + size };
#define QLORA__GG_FAIL(...) do { return QLORA__ERR(ctx, QLORA_ERR_FORMAT, __VA_ARGS__); } while (0)
    if (size < 4 || memcmp(data, "GGUF", 4) != 0) QLORA__GG_FAIL("%s: not a GGUF file (bad magic)", name);
    if (size < 24) QLORA__GG_FAIL("%s: truncated GGUF header (%zu bytes)", name, size);
    g->version = qlora__rd_u32(data + 4);
    if (g->version != 2 && g->version != 3)
        return QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "%s: GGUF version %u not supported (2 and 3 are)", name, g->version);
    g->n_tensors = qlora__rd_u64(data + 8);
    g->n_kv = qlora__rd_u64(data + 16);
    r.p = data + 24;
    // each kv needs >= 13 bytes and each tensor info >= 28: bound the counts by the file size
    if (g->n_kv > size / 13 || g->n_tensors > size / 28)
        QLORA__GG_FAIL("%s: corrupt GGUF header (%llu tensors, %llu keys in %zu bytes)", name,
                       (unsigned long long)g->n_tensors, (unsigned long long)g->n_kv, size);
    g->kv = QLORA__CALLOC_T(qlora_gguf_kv, (size_t)g->n_kv);
    g->tensors = QLORA__CALLOC_T(qlora_gguf_tensor, (size_t)g->n_tensors);
    if (!g->kv || !g->tensors) return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", name);
    g->alignment = 32;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        qlora_gguf_kv *kv = &g->kv[i];
        if (!qlora__rd_str(&r, &kv->key) || !qlora__rd_need(&r, 4))
            QLORA__GG_FAIL("%s: truncated GGUF metadata (key %llu)", name, (unsigned long long)i);
        uint32_t t = qlora__rd_u32(r.p);
        r.p += 4;
        if (t >= QLORA_GGUF_VTYPE_COUNT) QLORA__GG_FAIL("%s: metadata '%.*s': unknown value type %u", name, (int)kv->key.len, kv->key.ptr, t);
        kv->type = (qlora_gguf_vtype)t;
        kv->data = r.p;
        if (t == QLORA_GGUF_STRING) {
            kv->strs = QLORA__CALLOC_T(qlora_str, 1);
            if (!kv->strs) return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", name);
            if (!qlora__rd_str(&r, kv->strs)) QLORA__GG_FAIL("%s: metadata '%.*s': truncated string", name, (int)kv->key.len, kv->key.ptr);
        } else if (t == QLORA_GGUF_ARRAY) {
            if (!qlora__rd_need(&r, 12)) QLORA__GG_FAIL("%s: metadata '%.*s': truncated array", name, (int)kv->key.len, kv->key.ptr);
            kv->arr_type = (qlora_gguf_vtype)qlora__rd_u32(r.p);
            kv->arr_n = qlora__rd_u64(r.p + 4);
            if (kv->arr_type == QLORA_GGUF_STRING) {
                if (kv->arr_n > (uint64_t)(r.end - r.p) / 8) QLORA__GG_FAIL("%s: metadata '%.*s': array too long", name, (int)kv->key.len, kv->key.ptr);
                r.p += 12;
                kv->data = r.p;
                kv->strs = QLORA__CALLOC_T(qlora_str, (size_t)kv->arr_n);
                if (!kv->strs) return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", name);
                for (uint64_t k = 0; k < kv->arr_n; k++)
                    if (!qlora__rd_str(&r, &kv->strs[k])) QLORA__GG_FAIL("%s: metadata '%.*s': truncated string %llu", name, (int)kv->key.len, kv->key.ptr, (unsigned long long)k);
            } else {
                if (!qlora__gguf_skip(&r, QLORA_GGUF_ARRAY, 0)) QLORA__GG_FAIL("%s: metadata '%.*s': truncated or malformed array", name, (int)kv->key.len, kv->key.ptr);
                kv->data = kv->data + 12;
            }
        } else if (!qlora__gguf_skip(&r, t, 0)) {
            QLORA__GG_FAIL("%s: metadata '%.*s': truncated value", name, (int)kv->key.len, kv->key.ptr);
        }
        if (kv->key.len == 17 && !memcmp(kv->key.ptr, "general.alignment", 17)) {
            if (t != QLORA_GGUF_UINT32) QLORA__GG_FAIL("%s: general.alignment must be uint32", name);
            uint32_t a = qlora__rd_u32(kv->data);
            if (a == 0 || (a & (a - 1)) != 0) QLORA__GG_FAIL("%s: general.alignment %u is not a power of two", name, a);
            g->alignment = a;
        }
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        qlora_gguf_tensor *t = &g->tensors[i];
        if (!qlora__rd_str(&r, &t->name) || !qlora__rd_need(&r, 4)) QLORA__GG_FAIL("%s: truncated tensor info %llu", name, (unsigned long long)i);
        if (t->name.len >= 64) QLORA__GG_FAIL("%s: tensor %llu: name longer than 63 bytes", name, (unsigned long long)i);
        uint32_t nd = qlora__rd_u32(r.p);
        r.p += 4;
        if (nd < 1 || nd > 4) QLORA__GG_FAIL("%s: tensor '%.*s': %u dimensions", name, (int)t->name.len, t->name.ptr, nd);
        if (!qlora__rd_need(&r, 8 * (size_t)nd + 12)) QLORA__GG_FAIL("%s: truncated tensor info '%.*s'", name, (int)t->name.len, t->name.ptr);
        t->n_dims = (int)nd;
        size_t nel = 1;
        for (int d = 0; d < 4; d++) t->ne[d] = 1;
        for (uint32_t d = 0; d < nd; d++) {
            uint64_t v = qlora__rd_u64(r.p + 8 * d);
            if (v == 0 || v > ((uint64_t)1 << 40) || !qlora__mul_ok(nel, (size_t)v, &nel))
                QLORA__GG_FAIL("%s: tensor '%.*s': impossible dimension %llu", name, (int)t->name.len, t->name.ptr, (unsigned long long)v);
            t->ne[d] = (int64_t)v;
        }
        r.p += 8 * (size_t)nd;
        t->ggml_type = qlora__rd_u32(r.p);
        t->offset = qlora__rd_u64(r.p + 4);
        r.p += 12;
        t->type = qlora__ggml_type(t->ggml_type);
        if (t->type != QLORA_TYPE_COUNT) {
            t->nbytes = qlora_ggml_row_bytes(t->type, (size_t)t->ne[0]);
            if (t->nbytes == 0) QLORA__GG_FAIL("%s: tensor '%.*s': row of %lld elements is not a whole number of %s blocks", name, (int)t->name.len, t->name.ptr, (long long)t->ne[0], qlora_type_name(t->type));
            if (!qlora__mul_ok(t->nbytes, nel / (size_t)t->ne[0], &t->nbytes)) QLORA__GG_FAIL("%s: tensor '%.*s': too large", name, (int)t->name.len, t->name.ptr);
        }
        for (uint64_t k = 0; k < i; k++)
            if (g->tensors[k].name.len == t->name.len && !memcmp(g->tensors[k].name.ptr, t->name.ptr, t->name.len))
                QLORA__GG_FAIL("%s: duplicate tensor name '%.*s'", name, (int)t->name.len, t->name.ptr);
    }
    size_t off = (size_t)(r.p - data);
    g->data_offset = off + (g->alignment - off % g->alignment) % g->alignment;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        qlora_gguf_tensor *t = &g->tensors[i];
        size_t begin, end;
        if (t->offset % g->alignment) QLORA__GG_FAIL("%s: tensor '%.*s': offset %llu not aligned to %zu", name, (int)t->name.len, t->name.ptr, (unsigned long long)t->offset, g->alignment);
        if (t->type == QLORA_TYPE_COUNT) continue;    // unknown type: kept, but has no data pointer
        if (t->offset > SIZE_MAX || !qlora__add_ok(g->data_offset, (size_t)t->offset, &begin) ||
            !qlora__add_ok(begin, t->nbytes, &end) || end > size)
            QLORA__GG_FAIL("%s: tensor '%.*s': data [%llu, +%zu) lies outside the file (%zu bytes): truncated?",
                           name, (int)t->name.len, t->name.ptr, (unsigned long long)t->offset, t->nbytes, size);
        t->data = data + begin;
    }
#undef QLORA__GG_FAIL
    return QLORA_OK;
}

QLORA__DEF qlora_result qlora_gguf_open_memory(qlora_ctx *ctx, const uint8_t *data, size_t size, qlora_gguf **out) {
    *out = NULL;
    qlora_gguf *g = QLORA__CALLOC_T(qlora_gguf, 1);
    if (!g) return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "out of memory");
    g->file.data = data;
    g->file.size = size;     // mapped == 0: not ours to free
    qlora_result r = qlora__gguf_parse(ctx, "<memory>", g);
    if (r != QLORA_OK) { qlora_gguf_close(g); return r; }
    *out = g;
    return QLORA_OK;
}

QLORA__DEF qlora_result qlora_gguf_open(qlora_ctx *ctx, const char *path, qlora_gguf **out) {
    *out = NULL;
    qlora_gguf *g = QLORA__CALLOC_T(qlora_gguf, 1);
    if (!g) return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "out of memory");
    qlora_result r = qlora_file_open(ctx, path, &g->file);
    if (r == QLORA_OK) r = qlora__gguf_parse(ctx, path, g);
    if (r != QLORA_OK) { qlora_gguf_close(g); return r; }
    *out = g;
    return QLORA_OK;
}

QLORA__DEF const qlora_gguf_kv *qlora_gguf_find(const qlora_gguf *g, const char *key) {
    size_t n = strlen(key);
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (g->kv[i].key.len == n && !memcmp(g->kv[i].key.ptr, key, n)) return &g->kv[i];
    return NULL;
}
QLORA__DEF const qlora_gguf_tensor *qlora_gguf_find_tensor(const qlora_gguf *g, const char *name) {
    size_t n = strlen(name);
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (g->tensors[i].name.len == n && !memcmp(g->tensors[i].name.ptr, name, n)) return &g->tensors[i];
    return NULL;
}
static int qlora__gguf_num(qlora_gguf_vtype t, const uint8_t *p, double *d, int64_t *i) {
    switch (t) {
    case QLORA_GGUF_UINT8:  *i = p[0]; break;
    case QLORA_GGUF_INT8:   *i = (int8_t)p[0]; break;
    case QLORA_GGUF_BOOL:   *i = p[0] != 0; break;
    case QLORA_GGUF_UINT16: *i = qlora__rd_u16(p); break;
    case QLORA_GGUF_INT16:  *i = (int16_t)qlora__rd_u16(p); break;
    case QLORA_GGUF_UINT32: *i = qlora__rd_u32(p); break;
    case QLORA_GGUF_INT32:  *i = (int32_t)qlora__rd_u32(p); break;
    case QLORA_GGUF_UINT64: *i = (int64_t)qlora__rd_u64(p); break;
    case QLORA_GGUF_INT64:  *i = (int64_t)qlora__rd_u64(p); break;
    case QLORA_GGUF_FLOAT32: *d = qlora__f32_from_bits(qlora__rd_u32(p)); *i = (int64_t)*d; return 1;
    case QLORA_GGUF_FLOAT64: { uint64_t u = qlora__rd_u64(p); memcpy(d, &u, 8); *i = (int64_t)*d; return 1; }
    default: return 0;
    }
    *d = (double)*i;
    return 1;
}
QLORA__DEF int64_t qlora_gguf_int(const qlora_gguf *g, const char *key, int64_t def) {
    const qlora_gguf_kv *kv = qlora_gguf_find(g, key);
    double d; int64_t i;
    return kv && qlora__gguf_num(kv->type, kv->data, &d, &i) ? i : def;
}
QLORA__DEF double qlora_gguf_float(const qlora_gguf *g, const char *key, double def) {
    const qlora_gguf_kv *kv = qlora_gguf_find(g, key);
    double d; int64_t i;
    return kv && qlora__gguf_num(kv->type, kv->data, &d, &i) ? d : def;
}
QLORA__DEF qlora_str qlora_gguf_string(const qlora_gguf *g, const char *key) {
    const qlora_gguf_kv *kv = qlora_gguf_find(g, key);
    qlora_str none = { NULL, 0 };
    return kv && kv->type == QLORA_GGUF_STRING ? kv->strs[0] : none;
}
static int qlora__gguf_arr_num_ok(const qlora_gguf_kv *kv, uint64_t i) {
    return kv && kv->type == QLORA_GGUF_ARRAY && i < kv->arr_n &&
           kv->arr_type != QLORA_GGUF_STRING && kv->arr_type != QLORA_GGUF_ARRAY;
}
QLORA__DEF double qlora_gguf_arr_float(const qlora_gguf_kv *kv, uint64_t i) {
    double d = 0; int64_t v = 0;
    if (!qlora__gguf_arr_num_ok(kv, i)) return 0;
    qlora__gguf_num(kv->arr_type, kv->data + i * qlora__gguf_scalar_size[kv->arr_type], &d, &v);
    return d;
}
QLORA__DEF int64_t qlora_gguf_arr_int(const qlora_gguf_kv *kv, uint64_t i) {
    double d = 0; int64_t v = 0;
    if (!qlora__gguf_arr_num_ok(kv, i)) return 0;
    qlora__gguf_num(kv->arr_type, kv->data + i * qlora__gguf_scalar_size[kv->arr_type], &d, &v);
    return v;
}

// >>safetensors
// u64 N | N bytes of JSON header | data. Tensors must tile the data exactly (no holes/overlaps).
static int qlora__st_dtype_size(const char *d) {
    static const struct { const char *n; int sz; } t[] = {
        {"BOOL",1},{"U8",1},{"I8",1},{"F8_E5M2",1},{"F8_E4M3",1},{"I16",2},{"U16",2},{"F16",2},
        {"BF16",2},{"I32",4},{"U32",4},{"F32",4},{"F64",8},{"I64",8},{"U64",8} };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) if (!strcmp(d, t[i].n)) return t[i].sz;
    return 0;
}

QLORA__DEF void qlora_st_close(qlora_st *st) {
    if (!st) return;
    QLORA__FREE(st->tensors);
    qlora_json_free(st->metadata_json);
    qlora_file_close(&st->file);
    QLORA__FREE(st);
}

static int qlora__st_cmp_begin(const void *a, const void *b) {
    const qlora_st_tensor *x = (const qlora_st_tensor *)a, *y = (const qlora_st_tensor *)b;
    return x->data < y->data ? -1 : x->data > y->data ? 1 : (x->nbytes > y->nbytes) - (x->nbytes < y->nbytes);
}

static qlora_result qlora__st_parse(qlora_ctx *ctx, const char *name, qlora_st *st) {
    const uint8_t *data = st->file.data;
    size_t size = st->file.size;
    if (size < 8) return QLORA__ERR(ctx, QLORA_ERR_FORMAT, "%s: truncated safetensors file (%zu bytes)", name, size);
    uint64_t hn = qlora__rd_u64(data);
    if (hn > 100000000u || hn > size - 8) return QLORA__ERR(ctx, QLORA_ERR_FORMAT, "%s: safetensors header length %llu exceeds the file", name, (unsigned long long)hn);
    if (hn < 2 || data[8] != '{') return QLORA__ERR(ctx, QLORA_ERR_FORMAT, "%s: safetensors header is not a JSON object", name);
    char err[160];
    qlora_result r = qlora_json_parse((const char *)data + 8, (size_t)hn, &st->metadata_json, err, sizeof err);
    if (r != QLORA_OK) return QLORA__ERR(ctx, r, "%s: safetensors header: %s", name, err);
    const qlora_json *root = st->metadata_json;
    if (root->type != QLORA_JSON_OBJECT) return QLORA__ERR(ctx, QLORA_ERR_FORMAT, "%s: safetensors header is not a JSON object", name);
    const uint8_t *base = data + 8 + hn;
    size_t buf_size = size - 8 - (size_t)hn;
    st->tensors = QLORA__CALLOC_T(qlora_st_tensor, root->count);
    if (!st->tensors) return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", name);
    for (const qlora_json *c = root->child; c; c = c->next) {
        if (!strcmp(c->key, "__metadata__")) continue;
        for (size_t k = 0; k < st->n; k++)
            if (!strcmp(st->tensors[k].name, c->key)) return QLORA__ERR(ctx, QLORA_ERR_FORMAT, "%s: duplicate tensor '%s'", name, c->key);
        qlora_st_tensor *t = &st->tensors[st->n];
        t->name = c->key;
        const char *dt = qlora_json_str(c, "dtype", NULL);
        const qlora_json *shape = qlora_json_get(c, "shape"), *offs = qlora_json_get(c, "data_offsets");
        if (!dt || !shape || shape->type != QLORA_JSON_ARRAY || !offs || offs->type != QLORA_JSON_ARRAY || offs->count != 2)
            return QLORA__ERR(ctx, QLORA_ERR_FORMAT, "%s: tensor '%s': needs dtype, shape and data_offsets[2]", name, c->key);
        int esz = qlora__st_dtype_size(dt);
        if (!esz || strlen(dt) >= sizeof t->dtype) return QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "%s: tensor '%s': unknown dtype '%s'", name, c->key, dt);
        strcpy(t->dtype, dt);
        if (shape->count > 8) return QLORA__ERR(ctx, QLORA_ERR_SHAPE, "%s: tensor '%s': %zu dimensions", name, c->key, shape->count);
        size_t nel = 1;
        t->n_dims = (int)shape->count;
        int d = 0;
        for (const qlora_json *s = shape->child; s; s = s->next, d++) {
            if (s->type != QLORA_JSON_NUMBER || s->num < 0 || s->num > 1e15 || s->num != floor(s->num))
                return QLORA__ERR(ctx, QLORA_ERR_SHAPE, "%s: tensor '%s': bad shape entry", name, c->key);
            t->shape[d] = (int64_t)s->num;
            if (!qlora__mul_ok(nel, (size_t)s->num, &nel)) return QLORA__ERR(ctx, QLORA_ERR_SHAPE, "%s: tensor '%s': shape overflows", name, c->key);
        }
        double b = offs->child->num, e = offs->child->next->num;
        if (offs->child->type != QLORA_JSON_NUMBER || offs->child->next->type != QLORA_JSON_NUMBER || b < 0 || e < b || e > (double)buf_size)
            return QLORA__ERR(ctx, QLORA_ERR_FORMAT, "%s: tensor '%s': data_offsets [%.0f, %.0f] out of range (data is %zu bytes)", name, c->key, b, e, buf_size);
        size_t bytes;
        if (!qlora__mul_ok(nel, (size_t)esz, &bytes) || bytes != (size_t)(e - b))
            return QLORA__ERR(ctx, QLORA_ERR_FORMAT, "%s: tensor '%s': %zu bytes of data for shape of %zu x %s", name, c->key, (size_t)(e - b), nel, dt);
        t->data = base + (size_t)b;
        t->nbytes = bytes;
        st->n++;
    }
    // The tensors must tile [0, buf_size) exactly: sort a copy by begin and walk it.
    qlora_st_tensor *s = QLORA__CALLOC_T(qlora_st_tensor, st->n ? st->n : 1);
    if (!s) return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", name);
    if (st->n) memcpy(s, st->tensors, st->n * sizeof *s);
    qsort(s, st->n, sizeof *s, qlora__st_cmp_begin);
    size_t pos = 0;
    for (size_t i = 0; i < st->n; i++) {
        size_t b = (size_t)(s[i].data - base);
        if (b != pos) {
            r = QLORA__ERR(ctx, QLORA_ERR_FORMAT, "%s: tensor '%s' %s at byte %zu (expected %zu): overlapping or holed data_offsets",
                           name, s[i].name, b < pos ? "overlaps the previous tensor" : "leaves a hole", b, pos);
            QLORA__FREE(s);
            return r;
        }
        pos += s[i].nbytes;
    }
    QLORA__FREE(s);
    if (pos != buf_size) return QLORA__ERR(ctx, QLORA_ERR_FORMAT, "%s: %zu bytes of tensor data but the file holds %zu", name, pos, buf_size);
    return QLORA_OK;
}

QLORA__DEF qlora_result qlora_st_open_memory(qlora_ctx *ctx, const char *name, const uint8_t *data, size_t size, qlora_st **out) {
    *out = NULL;
    qlora_st *st = QLORA__CALLOC_T(qlora_st, 1);
    if (!st) return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "out of memory");
    st->file.data = data;
    st->file.size = size;
    qlora_result r = qlora__st_parse(ctx, name ? name : "<memory>", st);
    if (r != QLORA_OK) { qlora_st_close(st); return r; }
    *out = st;
    return QLORA_OK;
}

QLORA__DEF qlora_result qlora_st_open(qlora_ctx *ctx, const char *path, qlora_st **out) {
    *out = NULL;
    qlora_st *st = QLORA__CALLOC_T(qlora_st, 1);
    if (!st) return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "out of memory");
    qlora_result r = qlora_file_open(ctx, path, &st->file);
    if (r == QLORA_OK) r = qlora__st_parse(ctx, path, st);
    if (r != QLORA_OK) { qlora_st_close(st); return r; }
    *out = st;
    return QLORA_OK;
}

QLORA__DEF const qlora_st_tensor *qlora_st_find(const qlora_st *st, const char *name) {
    for (size_t i = 0; i < st->n; i++) if (!strcmp(st->tensors[i].name, name)) return &st->tensors[i];
    return NULL;
}

// A growable byte buffer (used by writers).
typedef struct qlora__buf { char *p; size_t n, cap; int oom; } qlora__buf;
static void qlora__buf_put(qlora__buf *b, const void *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t nc = (b->cap ? b->cap * 2 : 256);
        while (nc < b->n + n + 1) nc *= 2;
        char *np = (char *)QLORA__REALLOC(b->p, nc);
        if (!np) { b->oom = 1; return; }
        b->p = np; b->cap = nc;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void qlora__buf_printf(qlora__buf *b, const char *fmt, ...) QLORA__PRINTF(2, 3);
static void qlora__buf_printf(qlora__buf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) { b->oom = 1; return; }
    if ((size_t)n < sizeof tmp) { qlora__buf_put(b, tmp, (size_t)n); return; }
    char *big = (char *)QLORA__MALLOC((size_t)n + 1);
    if (!big) { b->oom = 1; return; }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    qlora__buf_put(b, big, (size_t)n);
    QLORA__FREE(big);
}
static void qlora__buf_json_str(qlora__buf *b, const char *s) {
    qlora__buf_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') { char e[2] = { '\\', (char)c }; qlora__buf_put(b, e, 2); }
        else if (c < 0x20) qlora__buf_printf(b, "\\u%04x", c);
        else qlora__buf_put(b, s, 1);
    }
    qlora__buf_put(b, "\"", 1);
}

// safetensors dtype order (enum order in safetensors/src/tensor.rs); the writer sorts by it, descending.
static int qlora__st_dtype_rank(const char *d) {
    static const char *const order[] = { "BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3",
        "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "C64", "F64", "I64", "U64" };
    for (int i = 0; i < (int)(sizeof order / sizeof order[0]); i++) if (!strcmp(d, order[i])) return i;
    return -1;
}
static int qlora__st_entry_cmp(const void *a, const void *b) {
    const qlora_st_entry *x = *(const qlora_st_entry *const *)a, *y = *(const qlora_st_entry *const *)b;
    int rx = qlora__st_dtype_rank(x->dtype), ry = qlora__st_dtype_rank(y->dtype);
    if (rx != ry) return ry - rx;
    return strcmp(x->name, y->name);
}

QLORA__DEF qlora_result qlora_st_write(qlora_ctx *ctx, const char *path, const qlora_st_entry *entries, size_t n) {
    const qlora_st_entry **ord = (const qlora_st_entry **)qlora__calloc(n ? n : 1, sizeof *ord);
    const void **parts = (const void **)qlora__calloc(n + 2, sizeof *parts);
    size_t *sizes = (size_t *)qlora__calloc(n + 2, sizeof *sizes);
    qlora__buf h = { NULL, 0, 0, 0 };
    qlora_result r = QLORA_OK;
    size_t off = 0;
    if (!ord || !parts || !sizes) { r = QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", path); goto done; }
    for (size_t i = 0; i < n; i++) {
        size_t nel = 1, bytes;
        int esz = qlora__st_dtype_size(entries[i].dtype);
        for (int d = 0; d < entries[i].n_dims; d++) nel *= (size_t)entries[i].shape[d];
        if (!esz || entries[i].n_dims < 0 || entries[i].n_dims > 8 || !qlora__mul_ok(nel, (size_t)esz, &bytes) || bytes != entries[i].nbytes) {
            r = QLORA__ERR(ctx, QLORA_ERR_SHAPE, "%s: tensor '%s': dtype/shape do not match %zu bytes", path, entries[i].name, entries[i].nbytes);
            goto done;
        }
        ord[i] = &entries[i];
    }
    qsort(ord, n, sizeof *ord, qlora__st_entry_cmp);
    { static const char meta[] = "{\"__metadata__\":{\"format\":\"pt\"}"; qlora__buf_put(&h, meta, sizeof meta - 1); }
    for (size_t i = 0; i < n; i++) {
        qlora__buf_put(&h, ",", 1);
        qlora__buf_json_str(&h, ord[i]->name);
        qlora__buf_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", ord[i]->dtype);
        for (int d = 0; d < ord[i]->n_dims; d++) qlora__buf_printf(&h, "%s%lld", d ? "," : "", (long long)ord[i]->shape[d]);
        qlora__buf_printf(&h, "],\"data_offsets\":[%zu,%zu]}", off, off + ord[i]->nbytes);
        off += ord[i]->nbytes;
        parts[i + 2] = ord[i]->data;
        sizes[i + 2] = ord[i]->nbytes;
    }
    qlora__buf_put(&h, "}", 1);
    while (h.n % 8) qlora__buf_put(&h, " ", 1);
    if (h.oom) { r = QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", path); goto done; }
    {
        uint8_t len8[8];
        for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)h.n >> (8 * i));
        parts[0] = len8; sizes[0] = 8;
        parts[1] = h.p; sizes[1] = h.n;
        r = qlora__write_atomic(ctx, path, parts, sizes, n + 2);
    }
done:
    QLORA__FREE(ord);
    QLORA__FREE(parts);
    QLORA__FREE(sizes);
    QLORA__FREE(h.p);
    return r;
}
// >>tokenizer
/* Three tokenizers behind one qlora_tokenizer (each reproduces its reference token for token):
   LLAMA2C  llama2.c run.c encode(): BOS, a dummy " " token, one lookup per UTF-8 character
            with byte fallback (<0xXX> = ids 3..258), then repeatedly merge the adjacent pair whose
            concatenated text is in the vocab with the highest score (leftmost on ties).
   SPM      llama.cpp llm_tokenizer_spm: ' ' -> U+2581 "▁", "▁" prefix, the same score-greedy
            merging over UTF-8 characters, characters never merged into a token as <0xXX> bytes.
   BPE      llama.cpp llm_tokenizer_bpe (GPT-2 byte level): the pre-tokenizer regex written out
            by hand over code points, every byte mapped to a printable code point (GPT-2
            bytes_to_unicode), then merges applied lowest rank first.
   All three "best pair first" loops run on a binary heap over a doubly linked list of symbols
   (O(n log n), llama.cpp's scheme) instead of llama2.c's O(n^2) rescan; the order of merges is
   the same. A heap entry is stale once either symbol grew or died: symbols only ever grow, so
   "left.n + right.n == size at push time" identifies live entries exactly.
   Special tokens (token_type control / user-defined / unknown) are cut out of the text first,
   longest first (llama.cpp tokenizer_st_partition); llama2.c's run.c has no such step. */

enum { QLORA__TT_NORMAL = 1, QLORA__TT_UNKNOWN = 2, QLORA__TT_CONTROL = 3, QLORA__TT_USER = 4,
       QLORA__TT_UNUSED = 5, QLORA__TT_BYTE = 6 };            // GGUF tokenizer.ggml.token_type
enum { QLORA__ALGO_LLAMA2C = 0, QLORA__ALGO_SPM, QLORA__ALGO_BPE };
// BPE pre-tokenizers (llama.cpp llm_tokenizer_bpe regex_exprs):
//   GPT2    'gpt2', 'gpt-2', 'default', ...:  's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   DIGITS  'smollm', 'starcoder', 'refact', 'command-r', 'codeshell', 'exaone', 'minerva':
//           first \p{N} (every digit its own word), then the GPT2 expression on what is between.
enum { QLORA__PRE_GPT2 = 0, QLORA__PRE_DIGITS };

// n strings in one pool with an open-addressing hash index (FNV-1a, linear probing).
typedef struct qlora__strtab {
    char     *pool;      // all strings, each followed by a NUL
    size_t   *off;       // [n + 1] string i is pool[off[i] .. off[i + 1] - 1)
    uint32_t *hash;      // [n] FNV-1a of string i
    int32_t  *slot;      // [mask + 1] string index, -1 = empty
    int32_t   n;
    uint32_t  mask;
} qlora__strtab;

struct qlora_tokenizer {
    int       algo;              // QLORA__ALGO_*
    int       pre;               // QLORA__PRE_* (BPE only)
    int32_t   n_vocab;
    qlora__strtab vocab;         // token texts, id = index; lookups: last duplicate wins (llama.cpp)
    qlora__strtab merges;        // BPE: "left right", rank = index; first duplicate wins
    float    *score;             // [n_vocab] SPM / llama2.c merge priority
    uint8_t  *type;              // [n_vocab] QLORA__TT_*
    int32_t  *special;           // [n_special] ids cut out of raw text, longest text first
    int32_t   n_special;
    int32_t   byte_id[256];      // SPM: id of <0xXX> (or the 1-byte token), -1 if none
    int32_t   bos, eos, unk;     // -1 when absent
    int32_t   eog[8];            // end-of-generation ids (eos, <|im_end|>, <|eot_id|>, ...)
    int       n_eog;
    int       add_bos;           // prepend BOS when qlora_tokenize(add_special=1)
    int       add_space_prefix;  // SPM: "▁" before the text (and removed again when decoding)
    int       chatml;            // vocab has <|im_start|>
    char     *chat_system;       // default system message of the chat template, or NULL
};

static uint32_t qlora__fnv1a(const char *s, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) { h ^= (uint8_t)s[i]; h *= 16777619u; }
    return h;
}
static size_t qlora__strtab_len(const qlora__strtab *t, int32_t i) { return t->off[i + 1] - t->off[i] - 1; }
static const char *qlora__strtab_str(const qlora__strtab *t, int32_t i) { return t->pool + t->off[i]; }
static void qlora__strtab_free(qlora__strtab *t) {
    QLORA__FREE(t->pool); QLORA__FREE(t->off); QLORA__FREE(t->hash); QLORA__FREE(t->slot);
    memset(t, 0, sizeof *t);
}
// Room for n strings of bytes total; then qlora__strtab_set(i = 0, 1, ... in order), qlora__strtab_index.
static int qlora__strtab_alloc(qlora__strtab *t, size_t n, size_t bytes) {
    size_t total;
    memset(t, 0, sizeof *t);
    if (n > (size_t)INT32_MAX / 2 || !qlora__add_ok(bytes, n + 1, &total)) return 0;
    t->n = (int32_t)n;
    t->pool = (char *)QLORA__MALLOC(total);
    t->off = QLORA__CALLOC_T(size_t, n + 1);
    t->hash = QLORA__CALLOC_T(uint32_t, n + 1);
    return t->pool && t->off && t->hash;
}
static void qlora__strtab_set(qlora__strtab *t, int32_t i, const char *s, size_t len) {
    char *dst = t->pool + t->off[i];
    if (len) memcpy(dst, s, len);
    dst[len] = 0;
    t->off[i + 1] = t->off[i] + len + 1;
}
static int32_t qlora__strtab_find(const qlora__strtab *t, const char *s, size_t len) {
    if (!t->slot) return -1;
    uint32_t h = qlora__fnv1a(s, len);
    for (uint32_t k = h & t->mask;; k = (k + 1) & t->mask) {
        int32_t i = t->slot[k];
        if (i < 0) return -1;
        if (t->hash[i] == h && qlora__strtab_len(t, i) == len && !memcmp(qlora__strtab_str(t, i), s, len)) return i;
    }
}
static int qlora__strtab_index(qlora__strtab *t, int last_wins) {
    uint32_t cap = 16;
    while (cap < 2u * (uint32_t)t->n) cap *= 2;
    t->mask = cap - 1;
    t->slot = (int32_t *)QLORA__MALLOC((size_t)cap * sizeof(int32_t));
    if (!t->slot) return 0;
    memset(t->slot, 0xff, (size_t)cap * sizeof(int32_t));   // all -1
    for (int32_t i = 0; i < t->n; i++) {
        const char *s = qlora__strtab_str(t, i);
        size_t len = qlora__strtab_len(t, i);
        uint32_t h = t->hash[i] = qlora__fnv1a(s, len), k;
        for (k = h & t->mask; t->slot[k] >= 0; k = (k + 1) & t->mask) {
            int32_t j = t->slot[k];
            if (t->hash[j] == h && qlora__strtab_len(t, j) == len && !memcmp(qlora__strtab_str(t, j), s, len)) break;
        }
        if (t->slot[k] < 0 || last_wins) t->slot[k] = i;
    }
    return 1;
}

// ---- Unicode: UTF-8, the two categories the GPT-2 regex needs, and GPT-2's byte <-> code point map
// Generated by gen/unicode_tables.py from Python unicodedata 14.0.0: 782 ranges of
// {first, last | tag << 24}, tag 1 = \p{L}, 2 = \p{N}. Do not edit by hand.
static const uint32_t qlora__ucat_ranges[782][2] = {
    {0x30,0x2000039}, {0x41,0x100005a}, {0x61,0x100007a}, {0xaa,0x10000aa}, {0xb2,0x20000b3}, {0xb5,0x10000b5},
    {0xb9,0x20000b9}, {0xba,0x10000ba}, {0xbc,0x20000be}, {0xc0,0x10000d6}, {0xd8,0x10000f6}, {0xf8,0x10002c1},
    {0x2c6,0x10002d1}, {0x2e0,0x10002e4}, {0x2ec,0x10002ec}, {0x2ee,0x10002ee}, {0x370,0x1000374}, {0x376,0x1000377},
    {0x37a,0x100037d}, {0x37f,0x100037f}, {0x386,0x1000386}, {0x388,0x100038a}, {0x38c,0x100038c}, {0x38e,0x10003a1},
    {0x3a3,0x10003f5}, {0x3f7,0x1000481}, {0x48a,0x100052f}, {0x531,0x1000556}, {0x559,0x1000559}, {0x560,0x1000588},
    {0x5d0,0x10005ea}, {0x5ef,0x10005f2}, {0x620,0x100064a}, {0x660,0x2000669}, {0x66e,0x100066f}, {0x671,0x10006d3},
    {0x6d5,0x10006d5}, {0x6e5,0x10006e6}, {0x6ee,0x10006ef}, {0x6f0,0x20006f9}, {0x6fa,0x10006fc}, {0x6ff,0x10006ff},
    {0x710,0x1000710}, {0x712,0x100072f}, {0x74d,0x10007a5}, {0x7b1,0x10007b1}, {0x7c0,0x20007c9}, {0x7ca,0x10007ea},
    {0x7f4,0x10007f5}, {0x7fa,0x10007fa}, {0x800,0x1000815}, {0x81a,0x100081a}, {0x824,0x1000824}, {0x828,0x1000828},
    {0x840,0x1000858}, {0x860,0x100086a}, {0x870,0x1000887}, {0x889,0x100088e}, {0x8a0,0x10008c9}, {0x904,0x1000939},
    {0x93d,0x100093d}, {0x950,0x1000950}, {0x958,0x1000961}, {0x966,0x200096f}, {0x971,0x1000980}, {0x985,0x100098c},
    {0x98f,0x1000990}, {0x993,0x10009a8}, {0x9aa,0x10009b0}, {0x9b2,0x10009b2}, {0x9b6,0x10009b9}, {0x9bd,0x10009bd},
    {0x9ce,0x10009ce}, {0x9dc,0x10009dd}, {0x9df,0x10009e1}, {0x9e6,0x20009ef}, {0x9f0,0x10009f1}, {0x9f4,0x20009f9},
    {0x9fc,0x10009fc}, {0xa05,0x1000a0a}, {0xa0f,0x1000a10}, {0xa13,0x1000a28}, {0xa2a,0x1000a30}, {0xa32,0x1000a33},
    {0xa35,0x1000a36}, {0xa38,0x1000a39}, {0xa59,0x1000a5c}, {0xa5e,0x1000a5e}, {0xa66,0x2000a6f}, {0xa72,0x1000a74},
    {0xa85,0x1000a8d}, {0xa8f,0x1000a91}, {0xa93,0x1000aa8}, {0xaaa,0x1000ab0}, {0xab2,0x1000ab3}, {0xab5,0x1000ab9},
    {0xabd,0x1000abd}, {0xad0,0x1000ad0}, {0xae0,0x1000ae1}, {0xae6,0x2000aef}, {0xaf9,0x1000af9}, {0xb05,0x1000b0c},
    {0xb0f,0x1000b10}, {0xb13,0x1000b28}, {0xb2a,0x1000b30}, {0xb32,0x1000b33}, {0xb35,0x1000b39}, {0xb3d,0x1000b3d},
    {0xb5c,0x1000b5d}, {0xb5f,0x1000b61}, {0xb66,0x2000b6f}, {0xb71,0x1000b71}, {0xb72,0x2000b77}, {0xb83,0x1000b83},
    {0xb85,0x1000b8a}, {0xb8e,0x1000b90}, {0xb92,0x1000b95}, {0xb99,0x1000b9a}, {0xb9c,0x1000b9c}, {0xb9e,0x1000b9f},
    {0xba3,0x1000ba4}, {0xba8,0x1000baa}, {0xbae,0x1000bb9}, {0xbd0,0x1000bd0}, {0xbe6,0x2000bf2}, {0xc05,0x1000c0c},
    {0xc0e,0x1000c10}, {0xc12,0x1000c28}, {0xc2a,0x1000c39}, {0xc3d,0x1000c3d}, {0xc58,0x1000c5a}, {0xc5d,0x1000c5d},
    {0xc60,0x1000c61}, {0xc66,0x2000c6f}, {0xc78,0x2000c7e}, {0xc80,0x1000c80}, {0xc85,0x1000c8c}, {0xc8e,0x1000c90},
    {0xc92,0x1000ca8}, {0xcaa,0x1000cb3}, {0xcb5,0x1000cb9}, {0xcbd,0x1000cbd}, {0xcdd,0x1000cde}, {0xce0,0x1000ce1},
    {0xce6,0x2000cef}, {0xcf1,0x1000cf2}, {0xd04,0x1000d0c}, {0xd0e,0x1000d10}, {0xd12,0x1000d3a}, {0xd3d,0x1000d3d},
    {0xd4e,0x1000d4e}, {0xd54,0x1000d56}, {0xd58,0x2000d5e}, {0xd5f,0x1000d61}, {0xd66,0x2000d78}, {0xd7a,0x1000d7f},
    {0xd85,0x1000d96}, {0xd9a,0x1000db1}, {0xdb3,0x1000dbb}, {0xdbd,0x1000dbd}, {0xdc0,0x1000dc6}, {0xde6,0x2000def},
    {0xe01,0x1000e30}, {0xe32,0x1000e33}, {0xe40,0x1000e46}, {0xe50,0x2000e59}, {0xe81,0x1000e82}, {0xe84,0x1000e84},
    {0xe86,0x1000e8a}, {0xe8c,0x1000ea3}, {0xea5,0x1000ea5}, {0xea7,0x1000eb0}, {0xeb2,0x1000eb3}, {0xebd,0x1000ebd},
    {0xec0,0x1000ec4}, {0xec6,0x1000ec6}, {0xed0,0x2000ed9}, {0xedc,0x1000edf}, {0xf00,0x1000f00}, {0xf20,0x2000f33},
    {0xf40,0x1000f47}, {0xf49,0x1000f6c}, {0xf88,0x1000f8c}, {0x1000,0x100102a}, {0x103f,0x100103f}, {0x1040,0x2001049},
    {0x1050,0x1001055}, {0x105a,0x100105d}, {0x1061,0x1001061}, {0x1065,0x1001066}, {0x106e,0x1001070}, {0x1075,0x1001081},
    {0x108e,0x100108e}, {0x1090,0x2001099}, {0x10a0,0x10010c5}, {0x10c7,0x10010c7}, {0x10cd,0x10010cd}, {0x10d0,0x10010fa},
    {0x10fc,0x1001248}, {0x124a,0x100124d}, {0x1250,0x1001256}, {0x1258,0x1001258}, {0x125a,0x100125d}, {0x1260,0x1001288},
    {0x128a,0x100128d}, {0x1290,0x10012b0}, {0x12b2,0x10012b5}, {0x12b8,0x10012be}, {0x12c0,0x10012c0}, {0x12c2,0x10012c5},
    {0x12c8,0x10012d6}, {0x12d8,0x1001310}, {0x1312,0x1001315}, {0x1318,0x100135a}, {0x1369,0x200137c}, {0x1380,0x100138f},
    {0x13a0,0x10013f5}, {0x13f8,0x10013fd}, {0x1401,0x100166c}, {0x166f,0x100167f}, {0x1681,0x100169a}, {0x16a0,0x10016ea},
    {0x16ee,0x20016f0}, {0x16f1,0x10016f8}, {0x1700,0x1001711}, {0x171f,0x1001731}, {0x1740,0x1001751}, {0x1760,0x100176c},
    {0x176e,0x1001770}, {0x1780,0x10017b3}, {0x17d7,0x10017d7}, {0x17dc,0x10017dc}, {0x17e0,0x20017e9}, {0x17f0,0x20017f9},
    {0x1810,0x2001819}, {0x1820,0x1001878}, {0x1880,0x1001884}, {0x1887,0x10018a8}, {0x18aa,0x10018aa}, {0x18b0,0x10018f5},
    {0x1900,0x100191e}, {0x1946,0x200194f}, {0x1950,0x100196d}, {0x1970,0x1001974}, {0x1980,0x10019ab}, {0x19b0,0x10019c9},
    {0x19d0,0x20019da}, {0x1a00,0x1001a16}, {0x1a20,0x1001a54}, {0x1a80,0x2001a89}, {0x1a90,0x2001a99}, {0x1aa7,0x1001aa7},
    {0x1b05,0x1001b33}, {0x1b45,0x1001b4c}, {0x1b50,0x2001b59}, {0x1b83,0x1001ba0}, {0x1bae,0x1001baf}, {0x1bb0,0x2001bb9},
    {0x1bba,0x1001be5}, {0x1c00,0x1001c23}, {0x1c40,0x2001c49}, {0x1c4d,0x1001c4f}, {0x1c50,0x2001c59}, {0x1c5a,0x1001c7d},
    {0x1c80,0x1001c88}, {0x1c90,0x1001cba}, {0x1cbd,0x1001cbf}, {0x1ce9,0x1001cec}, {0x1cee,0x1001cf3}, {0x1cf5,0x1001cf6},
    {0x1cfa,0x1001cfa}, {0x1d00,0x1001dbf}, {0x1e00,0x1001f15}, {0x1f18,0x1001f1d}, {0x1f20,0x1001f45}, {0x1f48,0x1001f4d},
    {0x1f50,0x1001f57}, {0x1f59,0x1001f59}, {0x1f5b,0x1001f5b}, {0x1f5d,0x1001f5d}, {0x1f5f,0x1001f7d}, {0x1f80,0x1001fb4},
    {0x1fb6,0x1001fbc}, {0x1fbe,0x1001fbe}, {0x1fc2,0x1001fc4}, {0x1fc6,0x1001fcc}, {0x1fd0,0x1001fd3}, {0x1fd6,0x1001fdb},
    {0x1fe0,0x1001fec}, {0x1ff2,0x1001ff4}, {0x1ff6,0x1001ffc}, {0x2070,0x2002070}, {0x2071,0x1002071}, {0x2074,0x2002079},
    {0x207f,0x100207f}, {0x2080,0x2002089}, {0x2090,0x100209c}, {0x2102,0x1002102}, {0x2107,0x1002107}, {0x210a,0x1002113},
    {0x2115,0x1002115}, {0x2119,0x100211d}, {0x2124,0x1002124}, {0x2126,0x1002126}, {0x2128,0x1002128}, {0x212a,0x100212d},
    {0x212f,0x1002139}, {0x213c,0x100213f}, {0x2145,0x1002149}, {0x214e,0x100214e}, {0x2150,0x2002182}, {0x2183,0x1002184},
    {0x2185,0x2002189}, {0x2460,0x200249b}, {0x24ea,0x20024ff}, {0x2776,0x2002793}, {0x2c00,0x1002ce4}, {0x2ceb,0x1002cee},
    {0x2cf2,0x1002cf3}, {0x2cfd,0x2002cfd}, {0x2d00,0x1002d25}, {0x2d27,0x1002d27}, {0x2d2d,0x1002d2d}, {0x2d30,0x1002d67},
    {0x2d6f,0x1002d6f}, {0x2d80,0x1002d96}, {0x2da0,0x1002da6}, {0x2da8,0x1002dae}, {0x2db0,0x1002db6}, {0x2db8,0x1002dbe},
    {0x2dc0,0x1002dc6}, {0x2dc8,0x1002dce}, {0x2dd0,0x1002dd6}, {0x2dd8,0x1002dde}, {0x2e2f,0x1002e2f}, {0x3005,0x1003006},
    {0x3007,0x2003007}, {0x3021,0x2003029}, {0x3031,0x1003035}, {0x3038,0x200303a}, {0x303b,0x100303c}, {0x3041,0x1003096},
    {0x309d,0x100309f}, {0x30a1,0x10030fa}, {0x30fc,0x10030ff}, {0x3105,0x100312f}, {0x3131,0x100318e}, {0x3192,0x2003195},
    {0x31a0,0x10031bf}, {0x31f0,0x10031ff}, {0x3220,0x2003229}, {0x3248,0x200324f}, {0x3251,0x200325f}, {0x3280,0x2003289},
    {0x32b1,0x20032bf}, {0x3400,0x1004dbf}, {0x4e00,0x100a48c}, {0xa4d0,0x100a4fd}, {0xa500,0x100a60c}, {0xa610,0x100a61f},
    {0xa620,0x200a629}, {0xa62a,0x100a62b}, {0xa640,0x100a66e}, {0xa67f,0x100a69d}, {0xa6a0,0x100a6e5}, {0xa6e6,0x200a6ef},
    {0xa717,0x100a71f}, {0xa722,0x100a788}, {0xa78b,0x100a7ca}, {0xa7d0,0x100a7d1}, {0xa7d3,0x100a7d3}, {0xa7d5,0x100a7d9},
    {0xa7f2,0x100a801}, {0xa803,0x100a805}, {0xa807,0x100a80a}, {0xa80c,0x100a822}, {0xa830,0x200a835}, {0xa840,0x100a873},
    {0xa882,0x100a8b3}, {0xa8d0,0x200a8d9}, {0xa8f2,0x100a8f7}, {0xa8fb,0x100a8fb}, {0xa8fd,0x100a8fe}, {0xa900,0x200a909},
    {0xa90a,0x100a925}, {0xa930,0x100a946}, {0xa960,0x100a97c}, {0xa984,0x100a9b2}, {0xa9cf,0x100a9cf}, {0xa9d0,0x200a9d9},
    {0xa9e0,0x100a9e4}, {0xa9e6,0x100a9ef}, {0xa9f0,0x200a9f9}, {0xa9fa,0x100a9fe}, {0xaa00,0x100aa28}, {0xaa40,0x100aa42},
    {0xaa44,0x100aa4b}, {0xaa50,0x200aa59}, {0xaa60,0x100aa76}, {0xaa7a,0x100aa7a}, {0xaa7e,0x100aaaf}, {0xaab1,0x100aab1},
    {0xaab5,0x100aab6}, {0xaab9,0x100aabd}, {0xaac0,0x100aac0}, {0xaac2,0x100aac2}, {0xaadb,0x100aadd}, {0xaae0,0x100aaea},
    {0xaaf2,0x100aaf4}, {0xab01,0x100ab06}, {0xab09,0x100ab0e}, {0xab11,0x100ab16}, {0xab20,0x100ab26}, {0xab28,0x100ab2e},
    {0xab30,0x100ab5a}, {0xab5c,0x100ab69}, {0xab70,0x100abe2}, {0xabf0,0x200abf9}, {0xac00,0x100d7a3}, {0xd7b0,0x100d7c6},
    {0xd7cb,0x100d7fb}, {0xf900,0x100fa6d}, {0xfa70,0x100fad9}, {0xfb00,0x100fb06}, {0xfb13,0x100fb17}, {0xfb1d,0x100fb1d},
    {0xfb1f,0x100fb28}, {0xfb2a,0x100fb36}, {0xfb38,0x100fb3c}, {0xfb3e,0x100fb3e}, {0xfb40,0x100fb41}, {0xfb43,0x100fb44},
    {0xfb46,0x100fbb1}, {0xfbd3,0x100fd3d}, {0xfd50,0x100fd8f}, {0xfd92,0x100fdc7}, {0xfdf0,0x100fdfb}, {0xfe70,0x100fe74},
    {0xfe76,0x100fefc}, {0xff10,0x200ff19}, {0xff21,0x100ff3a}, {0xff41,0x100ff5a}, {0xff66,0x100ffbe}, {0xffc2,0x100ffc7},
    {0xffca,0x100ffcf}, {0xffd2,0x100ffd7}, {0xffda,0x100ffdc}, {0x10000,0x101000b}, {0x1000d,0x1010026}, {0x10028,0x101003a},
    {0x1003c,0x101003d}, {0x1003f,0x101004d}, {0x10050,0x101005d}, {0x10080,0x10100fa}, {0x10107,0x2010133}, {0x10140,0x2010178},
    {0x1018a,0x201018b}, {0x10280,0x101029c}, {0x102a0,0x10102d0}, {0x102e1,0x20102fb}, {0x10300,0x101031f}, {0x10320,0x2010323},
    {0x1032d,0x1010340}, {0x10341,0x2010341}, {0x10342,0x1010349}, {0x1034a,0x201034a}, {0x10350,0x1010375}, {0x10380,0x101039d},
    {0x103a0,0x10103c3}, {0x103c8,0x10103cf}, {0x103d1,0x20103d5}, {0x10400,0x101049d}, {0x104a0,0x20104a9}, {0x104b0,0x10104d3},
    {0x104d8,0x10104fb}, {0x10500,0x1010527}, {0x10530,0x1010563}, {0x10570,0x101057a}, {0x1057c,0x101058a}, {0x1058c,0x1010592},
    {0x10594,0x1010595}, {0x10597,0x10105a1}, {0x105a3,0x10105b1}, {0x105b3,0x10105b9}, {0x105bb,0x10105bc}, {0x10600,0x1010736},
    {0x10740,0x1010755}, {0x10760,0x1010767}, {0x10780,0x1010785}, {0x10787,0x10107b0}, {0x107b2,0x10107ba}, {0x10800,0x1010805},
    {0x10808,0x1010808}, {0x1080a,0x1010835}, {0x10837,0x1010838}, {0x1083c,0x101083c}, {0x1083f,0x1010855}, {0x10858,0x201085f},
    {0x10860,0x1010876}, {0x10879,0x201087f}, {0x10880,0x101089e}, {0x108a7,0x20108af}, {0x108e0,0x10108f2}, {0x108f4,0x10108f5},
    {0x108fb,0x20108ff}, {0x10900,0x1010915}, {0x10916,0x201091b}, {0x10920,0x1010939}, {0x10980,0x10109b7}, {0x109bc,0x20109bd},
    {0x109be,0x10109bf}, {0x109c0,0x20109cf}, {0x109d2,0x20109ff}, {0x10a00,0x1010a00}, {0x10a10,0x1010a13}, {0x10a15,0x1010a17},
    {0x10a19,0x1010a35}, {0x10a40,0x2010a48}, {0x10a60,0x1010a7c}, {0x10a7d,0x2010a7e}, {0x10a80,0x1010a9c}, {0x10a9d,0x2010a9f},
    {0x10ac0,0x1010ac7}, {0x10ac9,0x1010ae4}, {0x10aeb,0x2010aef}, {0x10b00,0x1010b35}, {0x10b40,0x1010b55}, {0x10b58,0x2010b5f},
    {0x10b60,0x1010b72}, {0x10b78,0x2010b7f}, {0x10b80,0x1010b91}, {0x10ba9,0x2010baf}, {0x10c00,0x1010c48}, {0x10c80,0x1010cb2},
    {0x10cc0,0x1010cf2}, {0x10cfa,0x2010cff}, {0x10d00,0x1010d23}, {0x10d30,0x2010d39}, {0x10e60,0x2010e7e}, {0x10e80,0x1010ea9},
    {0x10eb0,0x1010eb1}, {0x10f00,0x1010f1c}, {0x10f1d,0x2010f26}, {0x10f27,0x1010f27}, {0x10f30,0x1010f45}, {0x10f51,0x2010f54},
    {0x10f70,0x1010f81}, {0x10fb0,0x1010fc4}, {0x10fc5,0x2010fcb}, {0x10fe0,0x1010ff6}, {0x11003,0x1011037}, {0x11052,0x201106f},
    {0x11071,0x1011072}, {0x11075,0x1011075}, {0x11083,0x10110af}, {0x110d0,0x10110e8}, {0x110f0,0x20110f9}, {0x11103,0x1011126},
    {0x11136,0x201113f}, {0x11144,0x1011144}, {0x11147,0x1011147}, {0x11150,0x1011172}, {0x11176,0x1011176}, {0x11183,0x10111b2},
    {0x111c1,0x10111c4}, {0x111d0,0x20111d9}, {0x111da,0x10111da}, {0x111dc,0x10111dc}, {0x111e1,0x20111f4}, {0x11200,0x1011211},
    {0x11213,0x101122b}, {0x11280,0x1011286}, {0x11288,0x1011288}, {0x1128a,0x101128d}, {0x1128f,0x101129d}, {0x1129f,0x10112a8},
    {0x112b0,0x10112de}, {0x112f0,0x20112f9}, {0x11305,0x101130c}, {0x1130f,0x1011310}, {0x11313,0x1011328}, {0x1132a,0x1011330},
    {0x11332,0x1011333}, {0x11335,0x1011339}, {0x1133d,0x101133d}, {0x11350,0x1011350}, {0x1135d,0x1011361}, {0x11400,0x1011434},
    {0x11447,0x101144a}, {0x11450,0x2011459}, {0x1145f,0x1011461}, {0x11480,0x10114af}, {0x114c4,0x10114c5}, {0x114c7,0x10114c7},
    {0x114d0,0x20114d9}, {0x11580,0x10115ae}, {0x115d8,0x10115db}, {0x11600,0x101162f}, {0x11644,0x1011644}, {0x11650,0x2011659},
    {0x11680,0x10116aa}, {0x116b8,0x10116b8}, {0x116c0,0x20116c9}, {0x11700,0x101171a}, {0x11730,0x201173b}, {0x11740,0x1011746},
    {0x11800,0x101182b}, {0x118a0,0x10118df}, {0x118e0,0x20118f2}, {0x118ff,0x1011906}, {0x11909,0x1011909}, {0x1190c,0x1011913},
    {0x11915,0x1011916}, {0x11918,0x101192f}, {0x1193f,0x101193f}, {0x11941,0x1011941}, {0x11950,0x2011959}, {0x119a0,0x10119a7},
    {0x119aa,0x10119d0}, {0x119e1,0x10119e1}, {0x119e3,0x10119e3}, {0x11a00,0x1011a00}, {0x11a0b,0x1011a32}, {0x11a3a,0x1011a3a},
    {0x11a50,0x1011a50}, {0x11a5c,0x1011a89}, {0x11a9d,0x1011a9d}, {0x11ab0,0x1011af8}, {0x11c00,0x1011c08}, {0x11c0a,0x1011c2e},
    {0x11c40,0x1011c40}, {0x11c50,0x2011c6c}, {0x11c72,0x1011c8f}, {0x11d00,0x1011d06}, {0x11d08,0x1011d09}, {0x11d0b,0x1011d30},
    {0x11d46,0x1011d46}, {0x11d50,0x2011d59}, {0x11d60,0x1011d65}, {0x11d67,0x1011d68}, {0x11d6a,0x1011d89}, {0x11d98,0x1011d98},
    {0x11da0,0x2011da9}, {0x11ee0,0x1011ef2}, {0x11fb0,0x1011fb0}, {0x11fc0,0x2011fd4}, {0x12000,0x1012399}, {0x12400,0x201246e},
    {0x12480,0x1012543}, {0x12f90,0x1012ff0}, {0x13000,0x101342e}, {0x14400,0x1014646}, {0x16800,0x1016a38}, {0x16a40,0x1016a5e},
    {0x16a60,0x2016a69}, {0x16a70,0x1016abe}, {0x16ac0,0x2016ac9}, {0x16ad0,0x1016aed}, {0x16b00,0x1016b2f}, {0x16b40,0x1016b43},
    {0x16b50,0x2016b59}, {0x16b5b,0x2016b61}, {0x16b63,0x1016b77}, {0x16b7d,0x1016b8f}, {0x16e40,0x1016e7f}, {0x16e80,0x2016e96},
    {0x16f00,0x1016f4a}, {0x16f50,0x1016f50}, {0x16f93,0x1016f9f}, {0x16fe0,0x1016fe1}, {0x16fe3,0x1016fe3}, {0x17000,0x10187f7},
    {0x18800,0x1018cd5}, {0x18d00,0x1018d08}, {0x1aff0,0x101aff3}, {0x1aff5,0x101affb}, {0x1affd,0x101affe}, {0x1b000,0x101b122},
    {0x1b150,0x101b152}, {0x1b164,0x101b167}, {0x1b170,0x101b2fb}, {0x1bc00,0x101bc6a}, {0x1bc70,0x101bc7c}, {0x1bc80,0x101bc88},
    {0x1bc90,0x101bc99}, {0x1d2e0,0x201d2f3}, {0x1d360,0x201d378}, {0x1d400,0x101d454}, {0x1d456,0x101d49c}, {0x1d49e,0x101d49f},
    {0x1d4a2,0x101d4a2}, {0x1d4a5,0x101d4a6}, {0x1d4a9,0x101d4ac}, {0x1d4ae,0x101d4b9}, {0x1d4bb,0x101d4bb}, {0x1d4bd,0x101d4c3},
    {0x1d4c5,0x101d505}, {0x1d507,0x101d50a}, {0x1d50d,0x101d514}, {0x1d516,0x101d51c}, {0x1d51e,0x101d539}, {0x1d53b,0x101d53e},
    {0x1d540,0x101d544}, {0x1d546,0x101d546}, {0x1d54a,0x101d550}, {0x1d552,0x101d6a5}, {0x1d6a8,0x101d6c0}, {0x1d6c2,0x101d6da},
    {0x1d6dc,0x101d6fa}, {0x1d6fc,0x101d714}, {0x1d716,0x101d734}, {0x1d736,0x101d74e}, {0x1d750,0x101d76e}, {0x1d770,0x101d788},
    {0x1d78a,0x101d7a8}, {0x1d7aa,0x101d7c2}, {0x1d7c4,0x101d7cb}, {0x1d7ce,0x201d7ff}, {0x1df00,0x101df1e}, {0x1e100,0x101e12c},
    {0x1e137,0x101e13d}, {0x1e140,0x201e149}, {0x1e14e,0x101e14e}, {0x1e290,0x101e2ad}, {0x1e2c0,0x101e2eb}, {0x1e2f0,0x201e2f9},
    {0x1e7e0,0x101e7e6}, {0x1e7e8,0x101e7eb}, {0x1e7ed,0x101e7ee}, {0x1e7f0,0x101e7fe}, {0x1e800,0x101e8c4}, {0x1e8c7,0x201e8cf},
    {0x1e900,0x101e943}, {0x1e94b,0x101e94b}, {0x1e950,0x201e959}, {0x1ec71,0x201ecab}, {0x1ecad,0x201ecaf}, {0x1ecb1,0x201ecb4},
    {0x1ed01,0x201ed2d}, {0x1ed2f,0x201ed3d}, {0x1ee00,0x101ee03}, {0x1ee05,0x101ee1f}, {0x1ee21,0x101ee22}, {0x1ee24,0x101ee24},
    {0x1ee27,0x101ee27}, {0x1ee29,0x101ee32}, {0x1ee34,0x101ee37}, {0x1ee39,0x101ee39}, {0x1ee3b,0x101ee3b}, {0x1ee42,0x101ee42},
    {0x1ee47,0x101ee47}, {0x1ee49,0x101ee49}, {0x1ee4b,0x101ee4b}, {0x1ee4d,0x101ee4f}, {0x1ee51,0x101ee52}, {0x1ee54,0x101ee54},
    {0x1ee57,0x101ee57}, {0x1ee59,0x101ee59}, {0x1ee5b,0x101ee5b}, {0x1ee5d,0x101ee5d}, {0x1ee5f,0x101ee5f}, {0x1ee61,0x101ee62},
    {0x1ee64,0x101ee64}, {0x1ee67,0x101ee6a}, {0x1ee6c,0x101ee72}, {0x1ee74,0x101ee77}, {0x1ee79,0x101ee7c}, {0x1ee7e,0x101ee7e},
    {0x1ee80,0x101ee89}, {0x1ee8b,0x101ee9b}, {0x1eea1,0x101eea3}, {0x1eea5,0x101eea9}, {0x1eeab,0x101eebb}, {0x1f100,0x201f10c},
    {0x1fbf0,0x201fbf9}, {0x20000,0x102a6df}, {0x2a700,0x102b738}, {0x2b740,0x102b81d}, {0x2b820,0x102cea1}, {0x2ceb0,0x102ebe0},
    {0x2f800,0x102fa1d}, {0x30000,0x103134a},
};
// Code point class for the pre-tokenizer: 1 letter \p{L}, 2 number \p{N}, 3 white space \s
// (Unicode White_Space, the set llama.cpp's unicode.cpp uses), 4 anything else.
static int qlora__cpt_class(uint32_t c) {
    if ((c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
        (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000)
        return 3;
    size_t lo = 0, hi = sizeof qlora__ucat_ranges / sizeof qlora__ucat_ranges[0];
    while (lo < hi) {                                   // first range with last >= c
        size_t mid = (lo + hi) / 2;
        if ((qlora__ucat_ranges[mid][1] & 0xffffffu) < c) lo = mid + 1; else hi = mid;
    }
    if (lo < sizeof qlora__ucat_ranges / sizeof qlora__ucat_ranges[0] && qlora__ucat_ranges[lo][0] <= c)
        return (int)(qlora__ucat_ranges[lo][1] >> 24);
    return 4;
}
// Byte length of a UTF-8 sequence from its first byte (llama.cpp unicode_len_utf8: a stray
// continuation byte counts as 1).
static size_t qlora__utf8_len(uint8_t c) {
    static const uint8_t len[16] = { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4 };
    return len[c >> 4];
}
// One code point at s[*i] (llama.cpp unicode_cpt_from_utf8 + unicode_cpts_from_utf8: an invalid
// sequence yields U+FFFD and consumes one byte).
static uint32_t qlora__utf8_next(const uint8_t *s, size_t n, size_t *i) {
    size_t p = *i;
    uint8_t c = s[p];
    if (!(c & 0x80)) { *i = p + 1; return c; }
    if (c & 0x40) {
        size_t k = !(c & 0x20) ? 2 : !(c & 0x10) ? 3 : !(c & 0x08) ? 4 : 0;
        if (k && p + k <= n) {
            uint32_t v = c & (0x7Fu >> k);
            size_t j;
            for (j = 1; j < k && (s[p + j] & 0xC0) == 0x80; j++) v = (v << 6) | (s[p + j] & 0x3Fu);
            if (j == k) { *i = p + k; return v; }
        }
    }
    *i = p + 1;
    return 0xFFFD;
}
// GPT-2 bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes
// (0-32, 127-160, 173) take code points 256, 257, ... in byte order.
static uint32_t qlora__gpt2_byte_cp(uint8_t b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174) return b;
    return b <= 32 ? 256u + b : b == 173 ? 323u : 289u + (b - 127u);
}
static int qlora__gpt2_cp_byte(uint32_t cp) {            // inverse; -1 if cp is not a byte's
    if (cp < 256) return (cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 172) || cp >= 174 ? (int)cp : -1;
    if (cp <= 288) return (int)(cp - 256);
    if (cp <= 322) return (int)(cp - 289 + 127);
    return cp == 323 ? 173 : -1;
}

// ---- working memory of one qlora_tokenize call
typedef struct qlora__sym { int32_t prev, next; uint32_t off, n; int32_t id; } qlora__sym;  // text = buf[off, off+n)
typedef struct qlora__bigram { double key; int32_t left, right; uint32_t size; int32_t id; } qlora__bigram;
typedef struct qlora__tokwork {
    qlora__buf     buf;                    // text being merged (qlora__buf from >>safetensors)
    qlora__buf     key;                    // scratch: "left right" merge keys
    qlora__sym    *sym;  size_t nsym, capsym;
    qlora__bigram *heap; size_t nheap, capheap;
    uint32_t      *cpt;  size_t ncpt, capcpt;     // BPE: code points of one fragment
    size_t        *word; size_t nword, capword;   // BPE: word ends (code point index)
    int32_t       *out;  size_t nout, capout;     // result ids
    int            oom;
} qlora__tokwork;

static int qlora__grow(void **p, size_t *cap, size_t need, size_t elem, int *oom) {
    if (need <= *cap) return 1;
    size_t nc = *cap ? *cap : 16, bytes;
    while (nc < need) nc *= 2;
    void *np = NULL;
    if (!*oom && qlora__mul_ok(nc, elem, &bytes)) np = QLORA__REALLOC(*p, bytes);
    if (!np) { *oom = 1; return 0; }
    *p = np; *cap = nc;
    return 1;
}
#define QLORA__GROW(w, arr, cap, need) qlora__grow((void **)&(w)->arr, &(w)->cap, (need), sizeof *(w)->arr, &(w)->oom)

static void qlora__tok_emit(qlora__tokwork *w, int32_t id) {
    if (QLORA__GROW(w, out, capout, w->nout + 1)) w->out[w->nout++] = id;
}
static void qlora__sym_push(qlora__tokwork *w, uint32_t off, uint32_t n, int32_t id) {
    if (!QLORA__GROW(w, sym, capsym, w->nsym + 1)) return;
    qlora__sym *s = &w->sym[w->nsym];
    s->prev = (int32_t)w->nsym - 1;
    s->next = (int32_t)w->nsym + 1;            // the last one is fixed up by qlora__merge
    s->off = off; s->n = n; s->id = id;
    w->nsym++;
}

// Max-heap on (key, then smaller left): llama.cpp's llm_bigram_spm / llm_bigram_bpe comparators.
static int qlora__bigram_better(const qlora__bigram *a, const qlora__bigram *b) {
    return a->key > b->key || (a->key == b->key && a->left < b->left);
}
static void qlora__heap_push(qlora__tokwork *w, const qlora__bigram *b) {
    if (!QLORA__GROW(w, heap, capheap, w->nheap + 1)) return;
    size_t i = w->nheap++;
    while (i > 0 && qlora__bigram_better(b, &w->heap[(i - 1) / 2])) { w->heap[i] = w->heap[(i - 1) / 2]; i = (i - 1) / 2; }
    w->heap[i] = *b;
}
static qlora__bigram qlora__heap_pop(qlora__tokwork *w) {
    qlora__bigram top = w->heap[0], last = w->heap[--w->nheap];
    size_t i = 0, n = w->nheap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && qlora__bigram_better(&w->heap[c + 1], &w->heap[c])) c++;
        if (!qlora__bigram_better(&w->heap[c], &last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n) w->heap[i] = last;
    return top;
}

// Queue the pair (l, r) if it can merge. SPM / llama2.c: the concatenated text must be a token;
// priority = its score. BPE: "left right" must be a merge; priority = -rank.
static void qlora__try_pair(const qlora_tokenizer *t, qlora__tokwork *w, int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    const qlora__sym *L = &w->sym[l], *R = &w->sym[r];
    const char *text = w->buf.p + L->off;           // L and R are adjacent in buf
    qlora__bigram b;
    b.left = l; b.right = r; b.size = L->n + R->n; b.id = -1;
    if (t->algo == QLORA__ALGO_BPE) {
        w->key.n = 0;
        qlora__buf_put(&w->key, text, L->n);
        qlora__buf_put(&w->key, " ", 1);
        qlora__buf_put(&w->key, text + L->n, R->n);
        if (w->key.oom) { w->oom = 1; return; }
        int32_t rank = qlora__strtab_find(&t->merges, w->key.p, w->key.n);
        if (rank < 0) return;
        b.key = -(double)rank;
    } else {
        int32_t id = qlora__strtab_find(&t->vocab, text, b.size);
        if (id < 0) return;
        // run.c keeps best_score = -1e10f and only takes strictly better pairs
        if (t->algo == QLORA__ALGO_LLAMA2C && !(t->score[id] > -1e10f)) return;
        b.key = t->score[id];
        b.id = id;
    }
    qlora__heap_push(w, &b);
}

// Merge w->sym[0..nsym) best pair first until no pair is left; the survivors are the chain from 0.
static void qlora__merge(const qlora_tokenizer *t, qlora__tokwork *w) {
    if (!w->nsym || w->oom) return;
    w->sym[w->nsym - 1].next = -1;
    w->nheap = 0;
    for (size_t i = 1; i < w->nsym; i++) qlora__try_pair(t, w, (int32_t)i - 1, (int32_t)i);
    while (w->nheap && !w->oom) {
        qlora__bigram b = qlora__heap_pop(w);
        qlora__sym *L = &w->sym[b.left], *R = &w->sym[b.right];
        if (L->n == 0 || R->n == 0 || L->n + R->n != b.size) continue;   // stale
        L->n += R->n;
        R->n = 0;
        L->id = b.id;
        L->next = R->next;
        if (R->next >= 0) w->sym[R->next].prev = b.left;
        qlora__try_pair(t, w, L->prev, b.left);
        qlora__try_pair(t, w, b.left, L->next);
    }
}

// SPM (llama.cpp llm_tokenizer_spm_session::tokenize) on one raw fragment.
static void qlora__spm_fragment(const qlora_tokenizer *t, qlora__tokwork *w, const char *text, size_t len, int prefix) {
    static const char sp[3] = { '\xe2', '\x96', '\x81' };       // U+2581 "▁"
    w->buf.n = 0;
    if (prefix) qlora__buf_put(&w->buf, sp, 3);
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') qlora__buf_put(&w->buf, sp, 3); else qlora__buf_put(&w->buf, text + i, 1);
    }
    if (w->buf.oom) { w->oom = 1; return; }
    w->nsym = 0;
    for (size_t off = 0; off < w->buf.n;) {                    // split into UTF-8 characters
        size_t n = QLORA__MIN(qlora__utf8_len((uint8_t)w->buf.p[off]), w->buf.n - off);
        qlora__sym_push(w, (uint32_t)off, (uint32_t)n, qlora__strtab_find(&t->vocab, w->buf.p + off, n));
        off += n;
    }
    qlora__merge(t, w);
    if (w->oom) return;
    for (int32_t i = 0; w->nsym && i != -1; i = w->sym[i].next) {  // resegment
        const qlora__sym *s = &w->sym[i];
        if (s->id >= 0) { qlora__tok_emit(w, s->id); continue; }
        for (uint32_t j = 0; j < s->n; j++) {                  // byte fallback
            int32_t b = t->byte_id[(uint8_t)w->buf.p[s->off + j]];
            qlora__tok_emit(w, b >= 0 ? b : t->unk);
        }
    }
}

// GPT-2 pre-tokenizer on code points [ini, end): llama.cpp unicode_regex_split_custom_gpt2,
// i.e. 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ with the
// look-ahead unable to see past the end of the range. Appends word ends to w->word.
static void qlora__pretok_gpt2(qlora__tokwork *w, size_t ini, size_t end) {
    const uint32_t *c = w->cpt;
#define QLORA__CLS(p) ((p) < end ? qlora__cpt_class(c[p]) : 0)
#define QLORA__WORD(p) do { if (QLORA__GROW(w, word, capword, w->nword + 1)) w->word[w->nword++] = (p); } while (0)
    size_t pos = ini;
    while (pos < end) {
        uint32_t ch = c[pos];
        if (ch == '\'' && pos + 1 < end) {                     // 's 't 'm 'd  're 've 'll
            uint32_t n1 = c[pos + 1], n2 = pos + 2 < end ? c[pos + 2] : 0;
            if (n1 == 's' || n1 == 't' || n1 == 'm' || n1 == 'd') { pos += 2; QLORA__WORD(pos); continue; }
            if ((n1 == 'r' && n2 == 'e') || (n1 == 'v' && n2 == 'e') || (n1 == 'l' && n2 == 'l')) { pos += 3; QLORA__WORD(pos); continue; }
        }
        int f = ch == ' ' ? QLORA__CLS(pos + 1) : QLORA__CLS(pos);
        if (f == 1 || f == 2 || f == 4) {                      //  ?\p{L}+  |  ?\p{N}+  |  ?[^\s\p{L}\p{N}]+
            pos += ch == ' ';
            while (QLORA__CLS(pos) == f) pos++;
            QLORA__WORD(pos);
            continue;
        }
        size_t nws = 0;
        while (QLORA__CLS(pos + nws) == 3) nws++;
        if (nws > 1 && pos + nws < end) { pos += nws - 1; QLORA__WORD(pos); continue; }   // \s+(?!\S)
        pos += nws ? nws : 1;                                  // \s+  (or a lone unmatched char)
        QLORA__WORD(pos);
    }
#undef QLORA__CLS
#undef QLORA__WORD
}

// Byte-level BPE (llama.cpp llm_tokenizer_bpe_session::tokenize) on one raw fragment.
static void qlora__bpe_fragment(const qlora_tokenizer *t, qlora__tokwork *w, const char *text, size_t len) {
    w->ncpt = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp = qlora__utf8_next((const uint8_t *)text, len, &i);
        if (QLORA__GROW(w, cpt, capcpt, w->ncpt + 1)) w->cpt[w->ncpt++] = cp;
    }
    w->nword = 0;
    if (t->pre == QLORA__PRE_DIGITS) {                          // \p{N} first: each digit alone
        size_t a = 0;
        for (size_t i = 0; i < w->ncpt && !w->oom; i++) {
            if (qlora__cpt_class(w->cpt[i]) != 2) continue;
            if (i > a) qlora__pretok_gpt2(w, a, i);
            if (QLORA__GROW(w, word, capword, w->nword + 1)) w->word[w->nword++] = i + 1;
            a = i + 1;
        }
        if (a < w->ncpt) qlora__pretok_gpt2(w, a, w->ncpt);
    } else {
        qlora__pretok_gpt2(w, 0, w->ncpt);
    }
    size_t start = 0;
    for (size_t k = 0; k < w->nword && !w->oom; k++) {
        // the word as UTF-8, each byte replaced by its GPT-2 code point: one symbol per byte
        w->buf.n = 0;
        w->nsym = 0;
        for (size_t i = start; i < w->word[k]; i++) {
            char u8[4], ch[4];
            size_t nu = qlora__utf8_put(u8, w->cpt[i]);
            for (size_t j = 0; j < nu; j++) {
                size_t nc = qlora__utf8_put(ch, qlora__gpt2_byte_cp((uint8_t)u8[j]));
                qlora__sym_push(w, (uint32_t)w->buf.n, (uint32_t)nc, -1);
                qlora__buf_put(&w->buf, ch, nc);
            }
        }
        start = w->word[k];
        if (w->buf.oom) w->oom = 1;
        qlora__merge(t, w);
        if (w->oom) return;
        for (int32_t i = 0; w->nsym && i != -1; i = w->sym[i].next) {
            const qlora__sym *s = &w->sym[i];
            int32_t id = qlora__strtab_find(&t->vocab, w->buf.p + s->off, s->n);
            if (id >= 0) { qlora__tok_emit(w, id); continue; }
            for (uint32_t j = 0; j < s->n; j++) {              // llama.cpp: try each byte alone
                int32_t b = qlora__strtab_find(&t->vocab, w->buf.p + s->off + j, 1);
                if (b >= 0) qlora__tok_emit(w, b);
            }
        }
    }
}

// llama2.c run.c encode() (its O(n^2) rescan replaced by the same heap as SPM).
static void qlora__llama2c_encode(const qlora_tokenizer *t, qlora__tokwork *w, const char *text, size_t len, int bos) {
    w->buf.n = 0;
    w->nsym = 0;
#define QLORA__L2C_TOKEN(id_) do { int32_t id__ = (id_); \
        qlora__sym_push(w, (uint32_t)w->buf.n, (uint32_t)qlora__strtab_len(&t->vocab, id__), id__); \
        qlora__buf_put(&w->buf, qlora__strtab_str(&t->vocab, id__), qlora__strtab_len(&t->vocab, id__)); } while (0)
    if (bos && t->bos >= 0) QLORA__L2C_TOKEN(t->bos);
    if (len) {                                                 // add_dummy_prefix
        int32_t sp = qlora__strtab_find(&t->vocab, " ", 1);
        if (sp >= 0) QLORA__L2C_TOKEN(sp);
    }
    for (size_t i = 0; i < len;) {                             // one UTF-8 character (<= 4 bytes) at a time
        size_t n = 1;
        while (i + n < len && n < 4 && ((uint8_t)text[i + n] & 0xC0) == 0x80) n++;
        int32_t id = qlora__strtab_find(&t->vocab, text + i, n);
        if (id >= 0) QLORA__L2C_TOKEN(id);
        else for (size_t j = 0; j < n; j++) {                  // byte fallback: <0xXX> is id byte + 3
            int32_t b = (int32_t)(uint8_t)text[i + j] + 3;
            if (b < t->n_vocab) QLORA__L2C_TOKEN(b);
        }
        i += n;
    }
#undef QLORA__L2C_TOKEN
    if (w->buf.oom) w->oom = 1;
    qlora__merge(t, w);
    for (int32_t i = 0; w->nsym && !w->oom && i != -1; i = w->sym[i].next) qlora__tok_emit(w, w->sym[i].id);
}

// ---- special tokens in raw text (llama.cpp tokenizer_st_partition, parse_special = true)
typedef struct qlora__frag { size_t off, len; int32_t id; } qlora__frag;   // id -1 = raw text

static qlora_result qlora__partition(const qlora_tokenizer *t, const char *text, size_t len, qlora__frag **out, size_t *nout) {
    size_t n = 0, cap = 0;
    qlora__frag *f = NULL;
    int oom = 0;
    if (len) {
        if (!qlora__grow((void **)&f, &cap, 1, sizeof *f, &oom)) return QLORA_ERR_OUT_OF_MEMORY;
        f[0].off = 0; f[0].len = len; f[0].id = -1; n = 1;
    }
    for (int32_t s = 0; s < t->n_special && n; s++) {         // longest special text first
        int32_t id = t->special[s];
        const char *st = qlora__strtab_str(&t->vocab, id);
        size_t sl = qlora__strtab_len(&t->vocab, id);
        // split every raw fragment at each (leftmost, non-overlapping) occurrence of st
        for (size_t k = 0; k < n; k++) {
            if (f[k].id >= 0 || f[k].len < sl) continue;
            const char *p = text + f[k].off, *e = p + f[k].len;
            const char *m = NULL;
            for (const char *q = p; q + sl <= e; q++)
                if (*q == *st && !memcmp(q, st, sl)) { m = q; break; }
            if (!m) continue;
            // replace f[k] by [left?] [token] [right?]; right is examined on the next k
            size_t left = (size_t)(m - p), right = (size_t)(e - m) - sl;
            size_t add = (left > 0) + (right > 0);
            if (!qlora__grow((void **)&f, &cap, n + add, sizeof *f, &oom)) { QLORA__FREE(f); return QLORA_ERR_OUT_OF_MEMORY; }
            memmove(f + k + 1 + add, f + k + 1, (n - k - 1) * sizeof *f);
            size_t base = f[k].off, j = k;
            if (left) { f[j].off = base; f[j].len = left; f[j].id = -1; j++; }
            f[j].off = base + left; f[j].len = sl; f[j].id = id; j++;
            if (right) { f[j].off = base + left + sl; f[j].len = right; f[j].id = -1; }
            n += add;
            k = j - 1;                                         // loop k++ lands on the right part
        }
    }
    *out = f; *nout = n;
    return QLORA_OK;
}

QLORA__DEF qlora_result qlora_tokenize(const qlora_tokenizer *t, const char *text, size_t len, int add_special,
                                       int32_t *ids, size_t cap, size_t *n_out) {
    if (n_out) *n_out = 0;
    if (!t || (!text && len) || (!ids && cap)) return QLORA_ERR_INVALID_ARG;
    if (!text) text = "";
    if (len == 0) len = strlen(text);                          // 0 = NUL-terminated
    if (len > ((size_t)1 << 30)) return QLORA_ERR_RANGE;       // symbol offsets are 32-bit; split larger texts
    qlora__tokwork w;
    memset(&w, 0, sizeof w);
    qlora_result r = QLORA_OK;
    if (t->algo == QLORA__ALGO_LLAMA2C) {
        qlora__llama2c_encode(t, &w, text, len, add_special && t->add_bos);
    } else {
        qlora__frag *f = NULL;
        size_t nf = 0;
        r = qlora__partition(t, text, len, &f, &nf);
        if (r == QLORA_OK) {
            if (add_special && t->add_bos && t->bos >= 0) qlora__tok_emit(&w, t->bos);
            int prev_special = 1;                              // SPM: "▁" prefix after a special token
            for (size_t k = 0; k < nf && !w.oom; k++) {
                if (f[k].id >= 0) { qlora__tok_emit(&w, f[k].id); prev_special = 1; continue; }
                if (t->algo == QLORA__ALGO_SPM)
                    qlora__spm_fragment(t, &w, text + f[k].off, f[k].len, t->add_space_prefix && prev_special);
                else
                    qlora__bpe_fragment(t, &w, text + f[k].off, f[k].len);
                prev_special = 0;
            }
        }
        QLORA__FREE(f);
    }
    if (r == QLORA_OK && w.oom) r = QLORA_ERR_OUT_OF_MEMORY;
    if (r == QLORA_OK) {
        if (ids && w.nout) memcpy(ids, w.out, QLORA__MIN(cap, w.nout) * sizeof *ids);
        if (n_out) *n_out = w.nout;
        if (w.nout > cap) r = QLORA_ERR_RANGE;                  // *n_out says how many are needed
    }
    QLORA__FREE(w.buf.p); QLORA__FREE(w.key.p); QLORA__FREE(w.sym); QLORA__FREE(w.heap);
    QLORA__FREE(w.cpt); QLORA__FREE(w.word); QLORA__FREE(w.out);
    return r;
}

// ---- decoding
static size_t qlora__put(char *buf, size_t cap, size_t at, const char *s, size_t n) {
    if (at < cap) memcpy(buf + at, s, QLORA__MIN(n, cap - at));
    return at + n;
}
// "<0xXX>" -> XX, else -1
static int qlora__byte_token(const char *s, size_t n) {
    int v = 0;
    if (n != 6 || s[0] != '<' || s[1] != '0' || s[2] != 'x' || s[5] != '>') return -1;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        v = v * 16 + (c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1000);
    }
    return v >= 0 ? v : -1;
}

QLORA__DEF size_t qlora_token_to_piece(const qlora_tokenizer *t, int32_t id, char *buf, size_t cap) {
    if (!t || id < 0 || id >= t->n_vocab) return 0;
    const char *s = qlora__strtab_str(&t->vocab, id);
    size_t n = qlora__strtab_len(&t->vocab, id), o = 0;
    int type = t->type[id];
    if (type == QLORA__TT_USER) return qlora__put(buf, cap, 0, s, n);
    if (type == QLORA__TT_BYTE) {                              // <0xXX> -> that byte
        int b = qlora__byte_token(s, n);
        char c = (char)b;
        return b >= 0 ? qlora__put(buf, cap, 0, &c, 1) : 0;
    }
    if (type != QLORA__TT_NORMAL) return 0;                    // control, unknown, unused: nothing
    if (t->algo == QLORA__ALGO_BPE) {                          // code points back to bytes
        for (size_t i = 0; i < n;) {
            size_t i0 = i;
            int b = qlora__gpt2_cp_byte(qlora__utf8_next((const uint8_t *)s, n, &i));
            if (b >= 0) { char c = (char)b; o = qlora__put(buf, cap, o, &c, 1); }
            else o = qlora__put(buf, cap, o, s + i0, i - i0);
        }
        return o;
    }
    for (size_t i = 0; i < n; i++) {                           // SPM: "▁" -> ' '
        if (i + 2 < n && s[i] == '\xe2' && s[i + 1] == '\x96' && s[i + 2] == '\x81') { o = qlora__put(buf, cap, o, " ", 1); i += 2; }
        else o = qlora__put(buf, cap, o, s + i, 1);
    }
    return o;
}

QLORA__DEF qlora_result qlora_detokenize(const qlora_tokenizer *t, const int32_t *ids, size_t n, char *buf, size_t cap, size_t *len_out) {
    if (len_out) *len_out = 0;
    if (!t || (!ids && n) || (!buf && cap)) return QLORA_ERR_INVALID_ARG;
    // SPM: the space that add_space_prefix put in front of the text is removed from the first
    // piece (the first token, or the first after BOS / control tokens), as llama.cpp's lstrip.
    int strip = t->algo != QLORA__ALGO_BPE && t->add_space_prefix;
    size_t o = 0;
    char tmp[256];
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_vocab) return QLORA_ERR_RANGE;
        size_t len = qlora_token_to_piece(t, ids[i], tmp, sizeof tmp);
        char *p = tmp, *big = NULL;
        if (len > sizeof tmp) {                                // an unusually long token
            if (!(big = (char *)QLORA__MALLOC(len))) return QLORA_ERR_OUT_OF_MEMORY;
            qlora_token_to_piece(t, ids[i], big, len);
            p = big;
        }
        if (len == 0 && t->type[ids[i]] != QLORA__TT_NORMAL) continue;   // BOS etc.: strip stays armed
        if (strip && len && p[0] == ' ') { p++; len--; }
        strip = 0;
        o = qlora__put(buf, cap, o, p, len);
        QLORA__FREE(big);
    }
    if (cap) buf[o < cap ? o : cap - 1] = 0;
    if (len_out) *len_out = o;                                 // bytes needed, without the NUL
    return !buf || o < cap ? QLORA_OK : QLORA_ERR_RANGE;
}

// ---- loading
static void qlora__tokenizer_free_parts(qlora_tokenizer *t) {
    qlora__strtab_free(&t->vocab);
    qlora__strtab_free(&t->merges);
    QLORA__FREE(t->score); QLORA__FREE(t->type); QLORA__FREE(t->special); QLORA__FREE(t->chat_system);
}
QLORA__DEF void qlora_tokenizer_free(qlora_tokenizer *t) {
    if (!t) return;
    qlora__tokenizer_free_parts(t);
    QLORA__FREE(t);
}

// A tokenizer with room for n token texts of `bytes` bytes in total (texts set by the caller).
static qlora_tokenizer *qlora__tokenizer_new(size_t n, size_t bytes) {
    qlora_tokenizer *t = QLORA__CALLOC_T(qlora_tokenizer, 1);
    if (!t) return NULL;
    t->n_vocab = (int32_t)n;
    t->bos = t->eos = t->unk = -1;
    t->score = QLORA__CALLOC_T(float, n);
    t->type = QLORA__CALLOC_T(uint8_t, n);
    if (!qlora__strtab_alloc(&t->vocab, n, bytes) || !t->score || !t->type) { qlora_tokenizer_free(t); return NULL; }
    memset(t->type, QLORA__TT_NORMAL, n);
    return t;
}

typedef struct qlora__lenid { size_t len; int32_t id; } qlora__lenid;
static int qlora__lenid_cmp(const void *a, const void *b) {       // longest first, then lower id
    const qlora__lenid *x = (const qlora__lenid *)a, *y = (const qlora__lenid *)b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

// Default system message of a ChatML template: the literal in '<|im_start|>system\n...<|im_end|>'
// (SmolLM2: "You are a helpful AI assistant named SmolLM, trained by Hugging Face").
static char *qlora__chatml_default_system(const char *tpl, size_t n) {
    static const char mark[] = "<|im_start|>system";
    const char *e = tpl + n;
    for (const char *p = tpl; p + sizeof mark - 1 <= e; p++) {
        if (memcmp(p, mark, sizeof mark - 1)) continue;
        const char *s = p + sizeof mark - 1;
        if (s < e && *s == '\n') s++;
        else if (s + 1 < e && s[0] == '\\' && s[1] == 'n') s += 2;
        else continue;
        const char *q = s;
        while (q + 10 <= e && memcmp(q, "<|im_end|>", 10) && *q != '\'' && *q != '"' && *q != '{' && *q != '\\') q++;
        if (q + 10 <= e && !memcmp(q, "<|im_end|>", 10) && q > s) return qlora__strndup(s, (size_t)(q - s));
    }
    return NULL;
}

// Everything derived from texts/types: hash index, special-token list, byte tokens, EOG set.
static qlora_result qlora__tokenizer_finish(qlora_ctx *ctx, qlora_tokenizer *t, const char *what) {
    static const char *const eog_texts[] = { "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",
                                             "<|endoftext|>", "<EOT>", "<|end_of_text|>" };
    if (!qlora__strtab_index(&t->vocab, 1)) return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", what);
    if (t->bos >= t->n_vocab || t->bos < -1) t->bos = -1;
    if (t->eos >= t->n_vocab || t->eos < -1) t->eos = -1;
    if (t->unk >= t->n_vocab || t->unk < -1) t->unk = -1;
    if (t->algo != QLORA__ALGO_LLAMA2C) {
        qlora__lenid *li = QLORA__CALLOC_T(qlora__lenid, (size_t)t->n_vocab);
        if (!li) return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", what);
        int32_t n = 0;
        for (int32_t i = 0; i < t->n_vocab; i++) {
            int ty = t->type[i];
            size_t len = qlora__strtab_len(&t->vocab, i);
            if ((ty == QLORA__TT_CONTROL || ty == QLORA__TT_USER || ty == QLORA__TT_UNKNOWN) && len) { li[n].len = len; li[n].id = i; n++; }
        }
        qsort(li, (size_t)n, sizeof *li, qlora__lenid_cmp);
        t->special = QLORA__CALLOC_T(int32_t, (size_t)n);
        if (!t->special) { QLORA__FREE(li); return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", what); }
        for (int32_t i = 0; i < n; i++) t->special[i] = li[i].id;
        t->n_special = n;
        QLORA__FREE(li);
    }
    for (int b = 0; b < 256; b++) {                            // llama.cpp byte_to_token (SPM)
        char hex[7], one = (char)b;
        snprintf(hex, sizeof hex, "<0x%02X>", b);
        int32_t id = qlora__strtab_find(&t->vocab, hex, 6);
        t->byte_id[b] = id >= 0 ? id : qlora__strtab_find(&t->vocab, &one, 1);
    }
    t->n_eog = 0;
    if (t->eos >= 0) t->eog[t->n_eog++] = t->eos;
    for (size_t k = 0; k < sizeof eog_texts / sizeof eog_texts[0]; k++) {
        int32_t id = qlora__strtab_find(&t->vocab, eog_texts[k], strlen(eog_texts[k]));
        if (id >= 0 && id != t->eos && t->n_eog < 8) t->eog[t->n_eog++] = id;
    }
    t->chatml = qlora__strtab_find(&t->vocab, "<|im_start|>", 12) >= 0;
    return QLORA_OK;
}

QLORA__DEF qlora_result qlora_tokenizer_load_llama2c(qlora_ctx *ctx, const char *path, int vocab_size, qlora_tokenizer **out) {
    if (!path || !out) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "qlora_tokenizer_load_llama2c: NULL argument");
    *out = NULL;
    qlora_file f;
    qlora_result r = qlora_file_open(ctx, path, &f);
    if (r != QLORA_OK) return r;
    // pass 1: validate and count.  Layout: int32 max_token_length, then per token
    // { float32 score, int32 len, len bytes }. vocab_size <= 0 reads tokens until the end of file.
    size_t p = 4, n = 0, bytes = 0;
    if (f.size < 4) { qlora_file_close(&f); return QLORA__ERR(ctx, QLORA_ERR_FORMAT, "%s: too short for a llama2.c tokenizer", path); }
    while ((vocab_size > 0 ? n < (size_t)vocab_size : p < f.size)) {
        if (f.size - p < 8) { qlora_file_close(&f); return QLORA__ERR(ctx, QLORA_ERR_FORMAT, "%s: token %zu: truncated header", path, n); }
        uint32_t len = qlora__rd_u32(f.data + p + 4);
        if (len > f.size - p - 8) { qlora_file_close(&f); return QLORA__ERR(ctx, QLORA_ERR_FORMAT, "%s: token %zu: length %u past end of file", path, n, len); }
        p += 8 + len; bytes += len; n++;
    }
    if (n < 3 || n > (size_t)INT32_MAX / 2) { qlora_file_close(&f); return QLORA__ERR(ctx, QLORA_ERR_FORMAT, "%s: %zu tokens", path, n); }
    qlora_tokenizer *t = qlora__tokenizer_new(n, bytes);
    if (!t) { qlora_file_close(&f); return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", path); }
    t->algo = QLORA__ALGO_LLAMA2C;
    p = 4;
    for (size_t i = 0; i < n; i++) {
        uint32_t len = qlora__rd_u32(f.data + p + 4);
        t->score[i] = qlora__f32_from_bits(qlora__rd_u32(f.data + p));
        qlora__strtab_set(&t->vocab, (int32_t)i, (const char *)f.data + p + 8, len);
        if (qlora__byte_token((const char *)f.data + p + 8, len) >= 0) t->type[i] = QLORA__TT_BYTE;
        p += 8 + len;
    }
    qlora_file_close(&f);
    t->type[0] = QLORA__TT_UNKNOWN;                            // sentencepiece: 0 <unk>, 1 <s>, 2 </s>
    t->type[1] = t->type[2] = QLORA__TT_CONTROL;
    t->unk = 0; t->bos = 1; t->eos = 2;
    t->add_bos = 1; t->add_space_prefix = 1;
    r = qlora__tokenizer_finish(ctx, t, path);
    if (r != QLORA_OK) { qlora_tokenizer_free(t); return r; }
    *out = t;
    return QLORA_OK;
}

static int qlora__str_is(qlora_str s, const char *z) { size_t n = strlen(z); return s.ptr && s.len == n && !memcmp(s.ptr, z, n); }

QLORA__DEF qlora_result qlora_tokenizer_from_gguf(qlora_ctx *ctx, const qlora_gguf *g, qlora_tokenizer **out) {
    static const char *const gpt2_like[] = { "gpt2", "gpt-2", "default", "mpt", "olmo", "jais", "trillion" };
    static const char *const digits_first[] = { "smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva" };
    if (!g || !out) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "qlora_tokenizer_from_gguf: NULL argument");
    *out = NULL;
    qlora_str model = qlora_gguf_string(g, "tokenizer.ggml.model");
    int algo;
    if (qlora__str_is(model, "llama")) algo = QLORA__ALGO_SPM;
    else if (qlora__str_is(model, "gpt2")) algo = QLORA__ALGO_BPE;
    else return QLORA__ERR(ctx, model.ptr ? QLORA_ERR_UNSUPPORTED : QLORA_ERR_NOT_FOUND,
                           "gguf: tokenizer.ggml.model '%.*s' (supported: llama, gpt2)", (int)QLORA__MIN(model.len, 64), model.ptr ? model.ptr : "");
    int pre = QLORA__PRE_GPT2;
    if (algo == QLORA__ALGO_BPE) {
        qlora_str ps = qlora_gguf_string(g, "tokenizer.ggml.pre");
        int known = !ps.ptr;
        for (size_t k = 0; k < sizeof gpt2_like / sizeof gpt2_like[0]; k++) if (qlora__str_is(ps, gpt2_like[k])) known = 1;
        for (size_t k = 0; k < sizeof digits_first / sizeof digits_first[0]; k++)
            if (qlora__str_is(ps, digits_first[k])) { known = 1; pre = QLORA__PRE_DIGITS; }
        if (!known) return QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "gguf: tokenizer.ggml.pre '%.*s' has a pre-tokenizer regex qlora.h does not implement",
                                      (int)QLORA__MIN(ps.len, 64), ps.ptr);
    }
    const qlora_gguf_kv *tok = qlora_gguf_find(g, "tokenizer.ggml.tokens");
    if (!tok || tok->type != QLORA_GGUF_ARRAY || tok->arr_type != QLORA_GGUF_STRING || !tok->strs || tok->arr_n < 1 || tok->arr_n > (uint64_t)INT32_MAX / 2)
        return QLORA__ERR(ctx, QLORA_ERR_FORMAT, "gguf: tokenizer.ggml.tokens missing or not an array of strings");
    size_t n = (size_t)tok->arr_n, bytes = 0;
    for (size_t i = 0; i < n; i++)
        if (!qlora__add_ok(bytes, tok->strs[i].len, &bytes)) return QLORA__ERR(ctx, QLORA_ERR_FORMAT, "gguf: tokenizer.ggml.tokens too large");
    const qlora_gguf_kv *sc = qlora_gguf_find(g, "tokenizer.ggml.scores");
    const qlora_gguf_kv *ty = qlora_gguf_find(g, "tokenizer.ggml.token_type");
    if (sc && (sc->type != QLORA_GGUF_ARRAY || sc->arr_n != n)) return QLORA__ERR(ctx, QLORA_ERR_FORMAT, "gguf: tokenizer.ggml.scores has %llu entries, tokens %zu", (unsigned long long)sc->arr_n, n);
    if (ty && (ty->type != QLORA_GGUF_ARRAY || ty->arr_n != n)) return QLORA__ERR(ctx, QLORA_ERR_FORMAT, "gguf: tokenizer.ggml.token_type has %llu entries, tokens %zu", (unsigned long long)ty->arr_n, n);
    const qlora_gguf_kv *mg = NULL;
    if (algo == QLORA__ALGO_BPE) {
        mg = qlora_gguf_find(g, "tokenizer.ggml.merges");
        if (!mg || mg->type != QLORA_GGUF_ARRAY || mg->arr_type != QLORA_GGUF_STRING || !mg->strs || mg->arr_n > (uint64_t)INT32_MAX / 2)
            return QLORA__ERR(ctx, QLORA_ERR_FORMAT, "gguf: tokenizer.ggml.merges missing (required for model gpt2)");
    }
    qlora_tokenizer *t = qlora__tokenizer_new(n, bytes);
    if (!t) return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "gguf: tokenizer: out of memory");
    t->algo = algo; t->pre = pre;
    for (size_t i = 0; i < n; i++) {
        qlora__strtab_set(&t->vocab, (int32_t)i, tok->strs[i].ptr, tok->strs[i].len);
        if (sc) t->score[i] = (float)qlora_gguf_arr_float(sc, i);
        if (ty) {
            int64_t v = qlora_gguf_arr_int(ty, i);
            t->type[i] = (uint8_t)(v >= 1 && v <= 6 ? v : (int64_t)QLORA__TT_UNUSED);
        }
    }
    if (mg) {
        size_t mb = 0, nm = (size_t)mg->arr_n;
        for (size_t i = 0; i < nm; i++) if (!qlora__add_ok(mb, mg->strs[i].len, &mb)) nm = 0;
        if (!qlora__strtab_alloc(&t->merges, nm, mb)) { qlora_tokenizer_free(t); return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "gguf: tokenizer merges: out of memory"); }
        for (size_t i = 0; i < nm; i++) qlora__strtab_set(&t->merges, (int32_t)i, mg->strs[i].ptr, mg->strs[i].len);
        if (!qlora__strtab_index(&t->merges, 0)) { qlora_tokenizer_free(t); return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "gguf: tokenizer merges: out of memory"); }
    }
    int spm = algo == QLORA__ALGO_SPM;                          // llama.cpp defaults per vocab type
    t->bos = (int32_t)qlora_gguf_int(g, "tokenizer.ggml.bos_token_id", spm ? 1 : -1);
    t->eos = (int32_t)qlora_gguf_int(g, "tokenizer.ggml.eos_token_id", spm ? 2 : -1);
    t->unk = (int32_t)qlora_gguf_int(g, "tokenizer.ggml.unknown_token_id", spm ? 0 : -1);
    t->add_bos = qlora_gguf_int(g, "tokenizer.ggml.add_bos_token", spm) != 0;
    t->add_space_prefix = spm && qlora_gguf_int(g, "tokenizer.ggml.add_space_prefix", 1) != 0;
    qlora_str tpl = qlora_gguf_string(g, "tokenizer.chat_template");
    qlora_result r = qlora__tokenizer_finish(ctx, t, "gguf tokenizer");
    if (r == QLORA_OK && t->chatml) {
        t->chat_system = tpl.ptr ? qlora__chatml_default_system(tpl.ptr, tpl.len)
                                 : qlora__strdup("You are a helpful AI assistant named SmolLM, trained by Hugging Face");
        if (!tpl.ptr && !t->chat_system) r = QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "gguf tokenizer: out of memory");
    }
    if (r != QLORA_OK) { qlora_tokenizer_free(t); return r; }
    *out = t;
    return QLORA_OK;
}

// Hugging Face tokenizer.json. model.type "BPE": with byte_fallback it is a SentencePiece-style
// vocab (llama): encoded with the SPM algorithm, each token's score = -(rank of the merge that
// produces it), which reproduces rank order merging for merges that build vocab tokens.
// Otherwise byte-level BPE with a ByteLevel pre-tokenizer (optionally after Digits). bos/eos and
// chat_template come from tokenizer_config.json next to the file when it exists.
static const char *qlora__hf_token_text(const qlora_json *j) {     // "text" or {"content": "text"}
    if (!j) return NULL;
    if (j->type == QLORA_JSON_STRING) return j->str;
    return j->type == QLORA_JSON_OBJECT ? qlora_json_str(j, "content", NULL) : NULL;
}
static int qlora__hf_find_type(const qlora_json *j, const char *type) {   // anywhere in a pre_tokenizer tree
    if (!j) return 0;
    if (j->type == QLORA_JSON_OBJECT) {
        const char *ty = qlora_json_str(j, "type", NULL);
        if (ty && !strcmp(ty, type)) return 1;
    }
    if (j->type == QLORA_JSON_OBJECT || j->type == QLORA_JSON_ARRAY)
        for (const qlora_json *c = j->child; c; c = c->next) if (qlora__hf_find_type(c, type)) return 1;
    return 0;
}

QLORA__DEF qlora_result qlora_tokenizer_load_hf(qlora_ctx *ctx, const char *path, qlora_tokenizer **out) {
    if (!path || !out) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "qlora_tokenizer_load_hf: NULL argument");
    *out = NULL;
    qlora_json *root = NULL, *cfg = NULL;
    qlora_result r = qlora__read_json_file(ctx, path, &root);
    if (r != QLORA_OK) return r;
    {   // tokenizer_config.json in the same directory (optional)
        const char *slash = strrchr(path, '/');
        size_t dir = slash ? (size_t)(slash - path + 1) : 0;
        char *cp = (char *)QLORA__MALLOC(dir + 32);
        if (cp) {
            memcpy(cp, path, dir);
            strcpy(cp + dir, "tokenizer_config.json");
            if (qlora__file_exists(cp) && qlora__read_json_file(NULL, cp, &cfg) != QLORA_OK) cfg = NULL;
            QLORA__FREE(cp);
        }
    }
    qlora_tokenizer *t = NULL;
    const qlora_json *model = qlora_json_get(root, "model");
    const qlora_json *vocab = qlora_json_get(model, "vocab");
    const qlora_json *merges = qlora_json_get(model, "merges");
    const qlora_json *added = qlora_json_get(root, "added_tokens");
    const qlora_json *pretok = qlora_json_get(root, "pre_tokenizer");
    const char *mtype = qlora_json_str(model, "type", "BPE");
    const qlora_json *bf = qlora_json_get(model, "byte_fallback");
    int byte_fallback = bf && bf->type == QLORA_JSON_TRUE;
    size_t n = 0, bytes = 0, nm = 0, mbytes = 0;
#define QLORA__HF_FAIL(code, ...) do { r = QLORA__ERR(ctx, code, __VA_ARGS__); goto done; } while (0)
    if (!model || strcmp(mtype, "BPE") || !vocab || vocab->type != QLORA_JSON_OBJECT || !merges || merges->type != QLORA_JSON_ARRAY)
        QLORA__HF_FAIL(QLORA_ERR_UNSUPPORTED, "%s: model.type '%s': only BPE with a vocab object and a merges list is supported", path, mtype);
    if (!byte_fallback && (!qlora__hf_find_type(pretok, "ByteLevel") || qlora__hf_find_type(pretok, "Split")))
        QLORA__HF_FAIL(QLORA_ERR_UNSUPPORTED, "%s: pre_tokenizer: only ByteLevel (optionally after Digits) is supported", path);
    // vocabulary size = largest id + 1 over model.vocab and added_tokens
    for (int pass = 0; pass < 2; pass++) {
        const qlora_json *list = pass ? added : vocab;
        for (const qlora_json *c = list ? list->child : NULL; c; c = c->next) {
            double id = pass ? qlora_json_num(c, "id", -1) : (c->type == QLORA_JSON_NUMBER ? c->num : -1);
            if (!(id >= 0 && id < 16777216.0)) QLORA__HF_FAIL(QLORA_ERR_FORMAT, "%s: %s: bad token id", path, pass ? "added_tokens" : "model.vocab");
            if ((size_t)id + 1 > n) n = (size_t)id + 1;
            bytes += pass ? strlen(qlora_json_str(c, "content", "")) : c->key_len;
        }
    }
    if (!n) QLORA__HF_FAIL(QLORA_ERR_FORMAT, "%s: empty vocabulary", path);
    {   // id -> text (later entries win: added_tokens override model.vocab)
        const char **text = QLORA__CALLOC_T(const char *, n);
        size_t *tlen = QLORA__CALLOC_T(size_t, n);
        uint8_t *ttype = QLORA__CALLOC_T(uint8_t, n);
        if (!text || !tlen || !ttype) { QLORA__FREE(text); QLORA__FREE(tlen); QLORA__FREE(ttype); QLORA__HF_FAIL(QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", path); }
        for (const qlora_json *c = vocab->child; c; c = c->next) {
            size_t id = (size_t)c->num;
            text[id] = c->key; tlen[id] = c->key_len;
            ttype[id] = byte_fallback && qlora__byte_token(c->key, c->key_len) >= 0 ? QLORA__TT_BYTE : QLORA__TT_NORMAL;
        }
        for (const qlora_json *c = added ? added->child : NULL; c; c = c->next) {
            size_t id = (size_t)qlora_json_num(c, "id", 0);
            const qlora_json *sp = qlora_json_get(c, "special");
            text[id] = qlora_json_str(c, "content", "");
            tlen[id] = strlen(text[id]);
            ttype[id] = sp && sp->type == QLORA_JSON_TRUE ? QLORA__TT_CONTROL : QLORA__TT_USER;
        }
        t = qlora__tokenizer_new(n, bytes);
        if (t) for (size_t i = 0; i < n; i++) {
            qlora__strtab_set(&t->vocab, (int32_t)i, text[i] ? text[i] : "", text[i] ? tlen[i] : 0);
            t->type[i] = text[i] ? ttype[i] : (uint8_t)QLORA__TT_UNUSED;
        }
        QLORA__FREE(text); QLORA__FREE(tlen); QLORA__FREE(ttype);
        if (!t) QLORA__HF_FAIL(QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    }
    t->algo = byte_fallback ? QLORA__ALGO_SPM : QLORA__ALGO_BPE;
    t->pre = qlora__hf_find_type(pretok, "Digits") ? QLORA__PRE_DIGITS : QLORA__PRE_GPT2;
    // merges: "a b" strings or ["a", "b"] pairs
    for (const qlora_json *c = merges->child; c; c = c->next, nm++) {
        const qlora_json *a = qlora_json_at(c, 0), *b = qlora_json_at(c, 1);
        if (c->type == QLORA_JSON_STRING) mbytes += c->len;
        else if (c->type == QLORA_JSON_ARRAY && a && b && a->type == QLORA_JSON_STRING && b->type == QLORA_JSON_STRING) mbytes += a->len + 1 + b->len;
        else QLORA__HF_FAIL(QLORA_ERR_FORMAT, "%s: model.merges[%zu] is neither \"a b\" nor [a, b]", path, nm);
    }
    if (!qlora__strtab_alloc(&t->merges, nm, mbytes)) QLORA__HF_FAIL(QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    {
        size_t i = 0;
        for (const qlora_json *c = merges->child; c; c = c->next, i++) {
            if (c->type == QLORA_JSON_STRING) { qlora__strtab_set(&t->merges, (int32_t)i, c->str, c->len); continue; }
            const qlora_json *a = qlora_json_at(c, 0), *b = qlora_json_at(c, 1);
            char *dst = t->merges.pool + t->merges.off[i];
            memcpy(dst, a->str, a->len); dst[a->len] = ' '; memcpy(dst + a->len + 1, b->str, b->len);
            dst[a->len + 1 + b->len] = 0;
            t->merges.off[i + 1] = t->merges.off[i] + a->len + 1 + b->len + 1;
        }
    }
    if (!qlora__strtab_index(&t->merges, 0) || !qlora__strtab_index(&t->vocab, 1)) QLORA__HF_FAIL(QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    if (byte_fallback) {   // score of a token = -(rank of the first merge producing it)
        for (int32_t i = 0; i < t->n_vocab; i++) t->score[i] = -1e9f;
        for (int32_t m = t->merges.n - 1; m >= 0; m--) {
            const char *s = qlora__strtab_str(&t->merges, m);
            size_t len = qlora__strtab_len(&t->merges, m);
            const char *sp = len > 1 ? (const char *)memchr(s + 1, ' ', len - 1) : NULL;
            if (!sp) continue;
            char tmp[512];
            size_t la = (size_t)(sp - s), lb = len - la - 1;
            if (la + lb > sizeof tmp) continue;
            memcpy(tmp, s, la); memcpy(tmp + la, sp + 1, lb);
            int32_t id = qlora__strtab_find(&t->vocab, tmp, la + lb);
            if (id >= 0) t->score[id] = -(float)m;
        }
        qlora__strtab_free(&t->merges);
    }
    {
        const char *bos = qlora__hf_token_text(qlora_json_get(cfg, "bos_token"));
        const char *eos = qlora__hf_token_text(qlora_json_get(cfg, "eos_token"));
        const char *unk = qlora_json_str(model, "unk_token", NULL);
        static const char *const bos_try[] = { "<s>", "<|begin_of_text|>", "<|endoftext|>" };
        static const char *const eos_try[] = { "</s>", "<|end_of_text|>", "<|endoftext|>" };
        for (size_t k = 0; !bos && k < 3; k++) if (qlora__strtab_find(&t->vocab, bos_try[k], strlen(bos_try[k])) >= 0) bos = bos_try[k];
        for (size_t k = 0; !eos && k < 3; k++) if (qlora__strtab_find(&t->vocab, eos_try[k], strlen(eos_try[k])) >= 0) eos = eos_try[k];
        t->bos = bos ? qlora__strtab_find(&t->vocab, bos, strlen(bos)) : -1;
        t->eos = eos ? qlora__strtab_find(&t->vocab, eos, strlen(eos)) : -1;
        t->unk = unk ? qlora__strtab_find(&t->vocab, unk, strlen(unk)) : -1;
        const qlora_json *ab = qlora_json_get(cfg, "add_bos_token");
        t->add_bos = ab ? ab->type == QLORA_JSON_TRUE : byte_fallback;
        t->add_space_prefix = byte_fallback;
    }
    r = QLORA_OK;
done:
#undef QLORA__HF_FAIL
    if (r == QLORA_OK) {
        QLORA__FREE(t->vocab.slot); t->vocab.slot = NULL;      // re-indexed by finish
        r = qlora__tokenizer_finish(ctx, t, path);
    }
    if (r == QLORA_OK && t->chatml) {
        const char *tpl = qlora_json_str(cfg, "chat_template", NULL);
        t->chat_system = tpl ? qlora__chatml_default_system(tpl, strlen(tpl))
                             : qlora__strdup("You are a helpful AI assistant named SmolLM, trained by Hugging Face");
    }
    qlora_json_free(root);
    qlora_json_free(cfg);
    if (r != QLORA_OK) { qlora_tokenizer_free(t); return r; }
    *out = t;
    return QLORA_OK;
}

// ---- queries
QLORA__DEF qlora_tok_kind qlora_tokenizer_kind(const qlora_tokenizer *t) { return t && t->algo == QLORA__ALGO_BPE ? QLORA_TOK_BPE : QLORA_TOK_SPM; }
QLORA__DEF int32_t qlora_tokenizer_n_vocab(const qlora_tokenizer *t) { return t ? t->n_vocab : 0; }
QLORA__DEF int32_t qlora_tokenizer_bos(const qlora_tokenizer *t) { return t ? t->bos : -1; }
QLORA__DEF int32_t qlora_tokenizer_eos(const qlora_tokenizer *t) { return t ? t->eos : -1; }
QLORA__DEF int32_t qlora_tokenizer_find(const qlora_tokenizer *t, const char *piece) {
    return t && piece ? qlora__strtab_find(&t->vocab, piece, strlen(piece)) : -1;
}
QLORA__DEF int qlora_tokenizer_is_eog(const qlora_tokenizer *t, int32_t id) {
    for (int i = 0; t && i < t->n_eog; i++) if (t->eog[i] == id) return 1;
    return 0;
}

// ---- chat templates
static size_t qlora__puts(char *buf, size_t cap, size_t at, const char *s) { return qlora__put(buf, cap, at, s, strlen(s)); }

QLORA__DEF size_t qlora_chat_render(const qlora_tokenizer *t, const qlora_chat_msg *msgs, size_t n,
                                    int add_generation_prompt, char *buf, size_t cap) {
    size_t o = 0;
    if (!t || (!msgs && n)) return 0;
    if (t->chatml) {
        // SmolLM2 / ChatML: {% if loop.first and messages[0]['role'] != 'system' %}<default system>{% endif %}
        // then <|im_start|>{role}\n{content}<|im_end|>\n per message, then <|im_start|>assistant\n.
        if (n && t->chat_system && strcmp(msgs[0].role, "system")) {
            o = qlora__puts(buf, cap, o, "<|im_start|>system\n");
            o = qlora__puts(buf, cap, o, t->chat_system);
            o = qlora__puts(buf, cap, o, "<|im_end|>\n");
        }
        for (size_t i = 0; i < n; i++) {
            o = qlora__puts(buf, cap, o, "<|im_start|>");
            o = qlora__puts(buf, cap, o, msgs[i].role);
            o = qlora__puts(buf, cap, o, "\n");
            o = qlora__puts(buf, cap, o, msgs[i].content);
            o = qlora__puts(buf, cap, o, "<|im_end|>\n");
        }
        if (add_generation_prompt) o = qlora__puts(buf, cap, o, "<|im_start|>assistant\n");
    } else {
        // Llama-2 (llama.cpp LLM_CHAT_TEMPLATE_LLAMA_2_SYS): [INST] <<SYS>>\n{system}\n<</SYS>>\n\n
        // {user} [/INST]{assistant}</s>[INST] ... ; BOS comes from the tokenizer.
        int inside = 1;
        o = qlora__puts(buf, cap, o, "[INST] ");
        for (size_t i = 0; i < n; i++) {
            if (!inside) { inside = 1; o = qlora__puts(buf, cap, o, "[INST] "); }
            if (!strcmp(msgs[i].role, "system")) {
                o = qlora__puts(buf, cap, o, "<<SYS>>\n");
                o = qlora__puts(buf, cap, o, msgs[i].content);
                o = qlora__puts(buf, cap, o, "\n<</SYS>>\n\n");
            } else if (!strcmp(msgs[i].role, "user")) {
                o = qlora__puts(buf, cap, o, msgs[i].content);
                o = qlora__puts(buf, cap, o, " [/INST]");
            } else {
                o = qlora__puts(buf, cap, o, msgs[i].content);
                o = qlora__puts(buf, cap, o, "</s>");
                inside = 0;
            }
        }
    }
    if (cap) buf[o < cap ? o : cap - 1] = 0;
    return o;
}
// >>model
// The Llama forward pass, written to be read (llama2.c run.c is the model): for every token,
//   x = embed[tok]
//   per layer: h = rmsnorm(x) ; q,k,v = Wq h, Wk h, Wv h ; rope(q,k) ; a = softmax(q k^T/sqrt(D)) v
//              x += Wo a ; h = rmsnorm(x) ; x += Wdown (silu(Wgate h) * Wup h)
//   logits = Wout rmsnorm(x)
// Weights can be any qlora_type; every product goes through qlora_matmul/qlora_matvec, which
// dequantize one block at a time. Weights are kept in Hugging Face layout: RoPE rotates the pairs
// (i, i + rope_dim/2) of each head (transformers rotate_half). GGUF and llama2.c files store q/k
// rows permuted for adjacent-pair RoPE; their loaders undo that permutation, so a QLoRA base
// quantizes block for block like bitsandbytes on the HF checkpoint and adapters are PEFT's as-is.

// A 2-D view of existing data (not owned).
static void qlora__tensor_init(qlora_tensor *t, qlora_type type, int64_t ne0, int64_t ne1, const void *data) {
    memset(t, 0, sizeof *t);
    t->type = type;
    t->ne[0] = ne0; t->ne[1] = ne1; t->ne[2] = t->ne[3] = 1;
    t->n_dims = ne1 > 1 ? 2 : 1;
    t->data = (void *)(uintptr_t)data;
}

// rmsnorm (llama2.c): o = w * (x / sqrt(mean(x^2) + eps))
static void qlora__rmsnorm_forward(float *o, const float *x, const float *w, int C, float eps) {
    float ss = 0.0f;                                   // o, x: (C)   w: (C)
    for (int i = 0; i < C; i++) ss += x[i] * x[i];
    ss /= (float)C;
    ss += eps;
    ss = 1.0f / sqrtf(ss);
    for (int i = 0; i < C; i++) o[i] = w[i] * (ss * x[i]);
}

// Inverse frequency of rotary pair i (of rope_dim/2), with the checkpoint's scaling rule.
static float qlora__rope_freq(const qlora_model_config *c, int i) {
    float freq = 1.0f / powf(c->rope_theta, (float)(2 * i) / (float)c->rope_dim);
    if (c->rope_scaling == QLORA_ROPE_SCALING_LLAMA3) {
        // transformers _compute_llama3_parameters
        const float pi = 3.14159265358979323846f;
        float lo_wl = (float)c->rope_orig_ctx / c->rope_low_freq_factor;
        float hi_wl = (float)c->rope_orig_ctx / c->rope_high_freq_factor;
        float wl = 2.0f * pi / freq;
        if (wl > lo_wl) freq = freq / c->rope_factor;
        else if (wl >= hi_wl) {
            float smooth = ((float)c->rope_orig_ctx / wl - c->rope_low_freq_factor) / (c->rope_high_freq_factor - c->rope_low_freq_factor);
            freq = (1.0f - smooth) * freq / c->rope_factor + smooth * freq;
        }
    }
    return freq;
}

// rope: rotate the pairs (v[i], v[i + rope_dim/2]) of each head by angle pos * freq_i (rotate_half).
static void qlora__rope_forward(float *v, int n_heads, int D, int pos, const qlora_model_config *c) {
    float p = (float)pos;                              // v: (n_heads, D)
    int half = c->rope_dim / 2;
    if (c->rope_scaling == QLORA_ROPE_SCALING_LINEAR && c->rope_factor > 0) p /= c->rope_factor;
    for (int i = 0; i < half; i++) {
        float ang = p * qlora__rope_freq(c, i);
        float fcr = cosf(ang), fci = sinf(ang);
        for (int h = 0; h < n_heads; h++) {
            float *x = v + (size_t)h * D + i;
            float x0 = x[0], x1 = x[half];
            x[0] = x0 * fcr - x1 * fci;
            x[half] = x0 * fci + x1 * fcr;
        }
    }
}

static void qlora__softmax(float *x, int n) {
    float mx = x[0];
    for (int i = 1; i < n; i++) if (x[i] > mx) mx = x[i];
    float sum = 0.0f;
    for (int i = 0; i < n; i++) { x[i] = expf(x[i] - mx); sum += x[i]; }
    for (int i = 0; i < n; i++) x[i] /= sum;
}

struct qlora_kv_cache {
    int n_ctx, pos, max_T;
    int L, kv_dim;
    float *k, *v;          // (L, n_ctx, Hkv*D)
    float *x, *xb, *xb2;   // (max_T, C) residual, normed, attention out
    float *q;              // (max_T, H*D)
    float *kt, *vt;        // (max_T, Hkv*D)
    float *hb, *hb2;       // (max_T, F)
    float *att;            // (max_T * H, n_ctx)
    float *logits_tmp;     // (V)
    float *wtmp;           // (C) weights of a norm converted to f32
    float *lora_u, *lora_y;// (max_T, 256) (max_T, max(qd, F, C)) adapter branch scratch
};

QLORA__DEF void qlora_kv_cache_free(qlora_kv_cache *kv) {
    if (!kv) return;
    QLORA__FREE(kv->k); QLORA__FREE(kv->v); QLORA__FREE(kv->x); QLORA__FREE(kv->xb); QLORA__FREE(kv->xb2);
    QLORA__FREE(kv->q); QLORA__FREE(kv->kt); QLORA__FREE(kv->vt); QLORA__FREE(kv->hb); QLORA__FREE(kv->hb2);
    QLORA__FREE(kv->att); QLORA__FREE(kv->logits_tmp); QLORA__FREE(kv->wtmp);
    QLORA__FREE(kv->lora_u); QLORA__FREE(kv->lora_y);
    QLORA__FREE(kv);
}

QLORA__DEF qlora_result qlora_kv_cache_create(qlora_ctx *ctx, const qlora_model *m, int n_ctx, qlora_kv_cache **out) {
    const qlora_model_config *c = &m->cfg;
    *out = NULL;
    if (n_ctx <= 0) n_ctx = c->max_seq_len > 0 ? QLORA__MIN(c->max_seq_len, 4096) : 2048;
    qlora_kv_cache *kv = QLORA__CALLOC_T(qlora_kv_cache, 1);
    if (!kv) return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "kv cache: out of memory");
    kv->n_ctx = n_ctx;
    kv->max_T = 64;   // prompt chunk: large enough for the batched GEMM path (QLORA_GEMM_MIN_T)
    kv->L = c->n_layers;
    kv->kv_dim = c->n_kv_heads * c->head_dim;
    size_t T = (size_t)kv->max_T, qd = (size_t)c->n_heads * (size_t)c->head_dim, cache;
    if (!qlora__mul_ok((size_t)kv->L * (size_t)n_ctx, (size_t)kv->kv_dim, &cache))
        { qlora_kv_cache_free(kv); return QLORA__ERR(ctx, QLORA_ERR_SHAPE, "kv cache: %d tokens do not fit in memory", n_ctx); }
    kv->k = QLORA__CALLOC_T(float, cache);
    kv->v = QLORA__CALLOC_T(float, cache);
    kv->x = QLORA__CALLOC_T(float, T * (size_t)c->dim);
    kv->xb = QLORA__CALLOC_T(float, T * QLORA__MAX((size_t)c->dim, qd));
    kv->xb2 = QLORA__CALLOC_T(float, T * QLORA__MAX((size_t)c->dim, qd));
    kv->q = QLORA__CALLOC_T(float, T * qd);
    kv->kt = QLORA__CALLOC_T(float, T * (size_t)kv->kv_dim);
    kv->vt = QLORA__CALLOC_T(float, T * (size_t)kv->kv_dim);
    kv->hb = QLORA__CALLOC_T(float, T * (size_t)c->hidden_dim);
    kv->hb2 = QLORA__CALLOC_T(float, T * (size_t)c->hidden_dim);
    kv->att = QLORA__CALLOC_T(float, T * (size_t)c->n_heads * (size_t)n_ctx);
    kv->logits_tmp = QLORA__CALLOC_T(float, (size_t)c->vocab_size);
    kv->wtmp = QLORA__CALLOC_T(float, (size_t)c->dim);
    kv->lora_u = QLORA__CALLOC_T(float, T * 256);
    kv->lora_y = QLORA__CALLOC_T(float, T * QLORA__MAX(QLORA__MAX((size_t)c->dim, qd), (size_t)c->hidden_dim));
    if (!kv->lora_u || !kv->lora_y || !kv->k || !kv->v || !kv->x || !kv->xb || !kv->xb2 || !kv->q || !kv->kt || !kv->vt || !kv->hb ||
        !kv->hb2 || !kv->att || !kv->logits_tmp || !kv->wtmp) {
        qlora_kv_cache_free(kv);
        return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "kv cache for %d tokens: out of memory", n_ctx);
    }
    *out = kv;
    return QLORA_OK;
}
QLORA__DEF int qlora_kv_cache_pos(const qlora_kv_cache *kv) { return kv->pos; }
QLORA__DEF void qlora_kv_cache_reset(qlora_kv_cache *kv) { kv->pos = 0; }

// Norm weights may be stored in any float type; give them as f32.
static const float *qlora__as_f32(const qlora_tensor *t, float *tmp) {
    if (t->type == QLORA_TYPE_F32) return (const float *)t->data;
    if (qlora_tensor_dequantize_rows(t, 0, 1, tmp) != QLORA_OK) return NULL;
    return tmp;
}

// y += a * x. Fixed 16-wide inner blocks and restrict pointers let compilers vectorize it at -O2.
static void qlora__axpy(float *QLORA__RESTRICT y, const float *QLORA__RESTRICT x, float a, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 16; k++) y[i + k] += a * x[i + k];
    for (; i < n; i++) y[i] += a * x[i];
}

// Causal attention of T new tokens against the cache, threaded over (token, head) pairs.
// The q.k products use the dispatched f32 dot kernel; the weighted sum of v rows the axpy.
typedef struct qlora__attn_job {
    const qlora_model_config *c;
    qlora_kv_cache *kv;
    int layer, T, pos0;
    qlora_dot_fn dot;
} qlora__attn_job;

static void qlora__attn_task(void *arg, int ith, int nth) {
    qlora__attn_job *j = (qlora__attn_job *)arg;
    const qlora_model_config *c = j->c;
    qlora_kv_cache *kv = j->kv;
    int H = c->n_heads, D = c->head_dim, grp = c->n_heads / c->n_kv_heads;
    size_t b, e;
    qlora__split((size_t)j->T * (size_t)H, ith, nth, &b, &e);
    float scale = 1.0f / sqrtf((float)D);
    const float *kc = kv->k + (size_t)j->layer * kv->n_ctx * kv->kv_dim;   // (n_ctx, Hkv*D)
    const float *vc = kv->v + (size_t)j->layer * kv->n_ctx * kv->kv_dim;
    for (size_t th = b; th < e; th++) {
        int t = (int)(th / (size_t)H), h = (int)(th % (size_t)H), kvh = h / grp;
        int n = j->pos0 + t + 1;                                            // keys 0..pos
        const float *q = kv->q + ((size_t)t * H + h) * D;                  // (D)
        float *att = kv->att + th * (size_t)kv->n_ctx;                     // (n)
        for (int p = 0; p < n; p++)
            att[p] = j->dot(kc + (size_t)p * kv->kv_dim + (size_t)kvh * D, NULL, q, (size_t)D, 0) * scale;
        qlora__softmax(att, n);
        float *o = kv->xb2 + ((size_t)t * H + h) * D;                      // (D)
        for (int i = 0; i < D; i++) o[i] = 0.0f;
        for (int p = 0; p < n; p++) qlora__axpy(o, vc + (size_t)p * kv->kv_dim + (size_t)kvh * D, att[p], (size_t)D);
    }
}

// y (T, out) = W x (+ b) (+ s * B A x when m->adapter has this module): the inference linear.
static qlora_result qlora__linear_infer(qlora_ctx *ctx, const qlora_model *m, qlora_kv_cache *kv, int layer, int mod,
                                        const qlora_tensor *W, const qlora_tensor *b, const float *x, int T, float *y) {
    qlora_result r = qlora_matmul(ctx, W, x, (size_t)T, y);
    if (r != QLORA_OK) return r;
    int in = (int)W->ne[0], out = (int)W->ne[1];
    const qlora_lora_module *md = m->adapter ? m->adapter->by[layer * QLORA_MOD_COUNT + mod] : NULL;
    const float *bias = md && md->bias ? md->bias : b && b->data ? (const float *)b->data : NULL;
    if (bias) for (int t = 0; t < T; t++) for (int o = 0; o < out; o++) y[(size_t)t * out + o] += bias[o];
    if (!md) return QLORA_OK;
    int R = m->adapter->cfg.r;
    if (R > 256) return QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "adapter rank %d > 256 is not supported for generation", R);
    qlora_tensor A, Bt;
    qlora__tensor_init(&A, QLORA_TYPE_F32, in, R, md->A);
    qlora__tensor_init(&Bt, QLORA_TYPE_F32, R, out, md->B);
    if ((r = qlora_matmul(ctx, &A, x, (size_t)T, kv->lora_u)) != QLORA_OK) return r;
    if ((r = qlora_matmul(ctx, &Bt, kv->lora_u, (size_t)T, kv->lora_y)) != QLORA_OK) return r;
    float s = m->adapter->scaling;
    for (size_t i = 0; i < (size_t)T * out; i++) y[i] += s * kv->lora_y[i];
    return QLORA_OK;
}

// One chunk of T <= max_T tokens.
static qlora_result qlora__forward_chunk(qlora_ctx *ctx, const qlora_model *m, qlora_kv_cache *kv,
                                         const int32_t *tokens, int T, float *logits, int all_logits) {
    const qlora_model_config *c = &m->cfg;
    int C = c->dim, F = c->hidden_dim, H = c->n_heads, Hkv = c->n_kv_heads, D = c->head_dim, V = c->vocab_size;
    int qd = H * D, kvd = Hkv * D, pos0 = kv->pos;
    qlora_result r;
#define QLORA__TRY(x) do { if ((r = (x)) != QLORA_OK) return r; } while (0)
    for (int t = 0; t < T; t++) {
        if (tokens[t] < 0 || tokens[t] >= V) return QLORA__ERR(ctx, QLORA_ERR_RANGE, "token id %d out of range [0, %d)", tokens[t], V);
        QLORA__TRY(qlora_tensor_dequantize_rows(&m->tok_embd, (size_t)tokens[t], 1, kv->x + (size_t)t * C));
    }
    for (int l = 0; l < c->n_layers; l++) {
        const qlora_layer *ly = &m->layers[l];
        const float *w = qlora__as_f32(&ly->attn_norm, kv->wtmp);
        if (!w) return QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "layer %d: attn_norm type", l);
        for (int t = 0; t < T; t++) qlora__rmsnorm_forward(kv->xb + (size_t)t * C, kv->x + (size_t)t * C, w, C, c->norm_eps);
        QLORA__TRY(qlora__linear_infer(ctx, m, kv, l, 0, &ly->wq, &ly->bq, kv->xb, T, kv->q));
        QLORA__TRY(qlora__linear_infer(ctx, m, kv, l, 1, &ly->wk, &ly->bk, kv->xb, T, kv->kt));
        QLORA__TRY(qlora__linear_infer(ctx, m, kv, l, 2, &ly->wv, &ly->bv, kv->xb, T, kv->vt));
        for (int t = 0; t < T; t++) {
            qlora__rope_forward(kv->q + (size_t)t * qd, H, D, pos0 + t, c);
            qlora__rope_forward(kv->kt + (size_t)t * kvd, Hkv, D, pos0 + t, c);
            size_t at = ((size_t)l * kv->n_ctx + (size_t)(pos0 + t)) * kvd;
            memcpy(kv->k + at, kv->kt + (size_t)t * kvd, (size_t)kvd * sizeof(float));
            memcpy(kv->v + at, kv->vt + (size_t)t * kvd, (size_t)kvd * sizeof(float));
        }
        qlora__attn_job job = { c, kv, l, T, pos0, qlora_ctx_dot(ctx, QLORA_TYPE_F32, NULL) };
        qlora_parallel_for(ctx, qlora__attn_task, &job);
        QLORA__TRY(qlora__linear_infer(ctx, m, kv, l, 3, &ly->wo, NULL, kv->xb2, T, kv->xb));
        for (size_t i = 0; i < (size_t)T * C; i++) kv->x[i] += kv->xb[i];
        w = qlora__as_f32(&ly->ffn_norm, kv->wtmp);
        if (!w) return QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "layer %d: ffn_norm type", l);
        for (int t = 0; t < T; t++) qlora__rmsnorm_forward(kv->xb + (size_t)t * C, kv->x + (size_t)t * C, w, C, c->norm_eps);
        QLORA__TRY(qlora__linear_infer(ctx, m, kv, l, 4, &ly->w_gate, NULL, kv->xb, T, kv->hb));
        QLORA__TRY(qlora__linear_infer(ctx, m, kv, l, 5, &ly->w_up, NULL, kv->xb, T, kv->hb2));
        for (size_t i = 0; i < (size_t)T * F; i++) {                       // SwiGLU
            float g = kv->hb[i];
            g *= 1.0f / (1.0f + expf(-g));
            kv->hb[i] = g * kv->hb2[i];
        }
        QLORA__TRY(qlora__linear_infer(ctx, m, kv, l, 6, &ly->w_down, NULL, kv->hb, T, kv->xb));
        for (size_t i = 0; i < (size_t)T * C; i++) kv->x[i] += kv->xb[i];
    }
    kv->pos += T;
    if (!logits) return QLORA_OK;
    const float *w = qlora__as_f32(&m->out_norm, kv->wtmp);
    if (!w) return QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "output_norm type");
    int t0 = all_logits ? 0 : T - 1;
    for (int t = t0; t < T; t++) qlora__rmsnorm_forward(kv->xb + (size_t)t * C, kv->x + (size_t)t * C, w, C, c->norm_eps);
    QLORA__TRY(qlora_matmul(ctx, &m->output, kv->xb + (size_t)t0 * C, (size_t)(T - t0), logits));
#undef QLORA__TRY
    return QLORA_OK;
}

QLORA__DEF qlora_result qlora_model_forward(qlora_ctx *ctx, const qlora_model *m, qlora_kv_cache *kv,
                                            const int32_t *tokens, int T, float *logits, int all_logits) {
    if (T <= 0) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "forward: no tokens");
    if (kv->pos + T > kv->n_ctx)
        return QLORA__ERR(ctx, QLORA_ERR_RANGE, "context full: %d + %d tokens > n_ctx %d", kv->pos, T, kv->n_ctx);
    for (int t = 0; t < T; t += kv->max_T) {
        int n = QLORA__MIN(kv->max_T, T - t);
        int last = t + n == T;
        float *lg = logits && (all_logits || last) ? logits + (all_logits ? (size_t)t * m->cfg.vocab_size : 0) : NULL;
        qlora_result r = qlora__forward_chunk(ctx, m, kv, tokens + t, n, lg, all_logits);
        if (r != QLORA_OK) return r;
    }
    return QLORA_OK;
}

// >>generate
// xorshift64* (Vigna) — tiny, seedable, identical everywhere.
static uint64_t qlora__rng_u64(uint64_t *s) {
    uint64_t x = *s ? *s : 0x9E3779B97F4A7C15ull;
    x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}
static float qlora__rng_f32(uint64_t *s) { return (float)(qlora__rng_u64(s) >> 40) / 16777216.0f; }

typedef struct qlora__prob { float p; int32_t id; } qlora__prob;
static int qlora__prob_desc(const void *a, const void *b) {
    const qlora__prob *x = (const qlora__prob *)a, *y = (const qlora__prob *)b;
    if (x->p != y->p) return x->p < y->p ? 1 : -1;
    return x->id - y->id;
}

QLORA__DEF int32_t qlora_sample(qlora_sampler *s, float *logits, int V) {
    if (s->temperature <= 0.0f) {                       // greedy: first maximum
        int32_t best = 0;
        for (int i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
        return best;
    }
    if (!s->state) s->state = s->seed ^ 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < V; i++) logits[i] /= s->temperature;
    qlora__softmax(logits, V);
    int use_k = s->top_k > 0 && s->top_k < V, use_p = s->top_p > 0.0f && s->top_p < 1.0f;
    float u = qlora__rng_f32(&s->state);
    if (!use_k && !use_p) {
        float cdf = 0.0f;
        for (int i = 0; i < V; i++) { cdf += logits[i]; if (u < cdf) return i; }
        return V - 1;
    }
    qlora__prob *pr = (qlora__prob *)QLORA__MALLOC((size_t)V * sizeof *pr);
    if (!pr) {                                          // no memory: fall back to greedy
        int32_t best = 0;
        for (int i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
        return best;
    }
    for (int i = 0; i < V; i++) { pr[i].p = logits[i]; pr[i].id = i; }
    qsort(pr, (size_t)V, sizeof *pr, qlora__prob_desc);
    int n = use_k ? s->top_k : V;
    float total = 0.0f;
    for (int i = 0; i < n; i++) total += pr[i].p;
    if (use_p) {                                        // smallest prefix with mass >= top_p
        float cum = 0.0f;
        for (int i = 0; i < n; i++) { cum += pr[i].p / total; if (cum >= s->top_p) { n = i + 1; break; } }
        total = 0.0f;
        for (int i = 0; i < n; i++) total += pr[i].p;
    }
    float cdf = 0.0f, target = u * total;
    int32_t id = pr[n - 1].id;
    for (int i = 0; i < n; i++) { cdf += pr[i].p; if (target < cdf) { id = pr[i].id; break; } }
    QLORA__FREE(pr);
    return id;
}

QLORA__DEF qlora_result qlora_generate(qlora_ctx *ctx, const qlora_model *m, qlora_kv_cache *kv,
                                       const int32_t *prompt, int n_prompt, qlora_sampler *s, int n_max,
                                       int32_t *out, int *n_out,
                                       int (*on_token)(void *user, int32_t id), void *user) {
    int V = m->cfg.vocab_size;
    *n_out = 0;
    if (n_prompt <= 0) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "generate: empty prompt (start from BOS)");
    float *logits = kv->logits_tmp;
    qlora_result r = qlora_model_forward(ctx, m, kv, prompt, n_prompt, logits, 0);
    if (r != QLORA_OK) return r;
    for (int i = 0; i < n_max; i++) {
        int32_t id = qlora_sample(s, logits, V);
        if (m->tok && qlora_tokenizer_is_eog(m->tok, id)) break;
        out[(*n_out)++] = id;
        if (on_token && on_token(user, id)) break;
        if (i + 1 == n_max || kv->pos >= kv->n_ctx) break;
        if ((r = qlora_model_forward(ctx, m, kv, &id, 1, logits, 0)) != QLORA_OK) return r;
    }
    return QLORA_OK;
}

QLORA__DEF qlora_result qlora_model_nll(qlora_ctx *ctx, const qlora_model *m, const int32_t *tokens, int n,
                                        int n_ctx, double *mean_nll, int *n_scored) {
    int V = m->cfg.vocab_size;
    *mean_nll = 0; *n_scored = 0;
    if (n_ctx < 2) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "nll: window must hold >= 2 tokens");
    qlora_kv_cache *kv = NULL;
    qlora_result r = qlora_kv_cache_create(ctx, m, n_ctx, &kv);
    if (r != QLORA_OK) return r;
    float *lg = QLORA__CALLOC_T(float, (size_t)n_ctx * (size_t)V);
    if (!lg) { qlora_kv_cache_free(kv); return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "nll: out of memory"); }
    double sum = 0;
    int cnt = 0;
    for (int w0 = 0; w0 + 1 < n; w0 += n_ctx) {
        int T = QLORA__MIN(n_ctx, n - w0);
        if (T < 2) break;
        qlora_kv_cache_reset(kv);
        if ((r = qlora_model_forward(ctx, m, kv, tokens + w0, T, lg, 1)) != QLORA_OK) break;
        for (int t = 0; t + 1 < T; t++) {
            const float *l = lg + (size_t)t * V;
            float mx = l[0];
            for (int i = 1; i < V; i++) if (l[i] > mx) mx = l[i];
            double se = 0;
            for (int i = 0; i < V; i++) se += exp((double)(l[i] - mx));
            sum += (double)mx + log(se) - (double)l[tokens[w0 + t + 1]];
            cnt++;
        }
    }
    QLORA__FREE(lg);
    qlora_kv_cache_free(kv);
    if (r != QLORA_OK) return r;
    *mean_nll = cnt ? sum / cnt : 0;
    *n_scored = cnt;
    return QLORA_OK;
}

// >>loaders

static void qlora__model_defaults(qlora_model_config *c) {
    if (c->head_dim <= 0 && c->n_heads > 0) c->head_dim = c->dim / c->n_heads;
    if (c->n_kv_heads <= 0) c->n_kv_heads = c->n_heads;
    if (c->norm_eps <= 0) c->norm_eps = 1e-5f;
    if (c->rope_theta <= 0) c->rope_theta = 10000.0f;
    if (c->rope_dim <= 0) c->rope_dim = c->head_dim;
}

static qlora_result qlora__model_check_config(qlora_ctx *ctx, const char *path, const qlora_model_config *c) {
    if (c->dim <= 0 || c->hidden_dim <= 0 || c->n_layers <= 0 || c->n_heads <= 0 || c->n_kv_heads <= 0 ||
        c->vocab_size <= 0 || c->head_dim <= 0 || c->dim > (1 << 16) || c->hidden_dim > (1 << 18) ||
        c->n_layers > 1024 || c->vocab_size > (1 << 24) || c->head_dim > 1024)
        return QLORA__ERR(ctx, QLORA_ERR_SHAPE, "%s: impossible model shape (dim %d, hidden %d, layers %d, heads %d/%d, vocab %d)",
                          path, c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->vocab_size);
    if (c->n_heads % c->n_kv_heads != 0)
        return QLORA__ERR(ctx, QLORA_ERR_SHAPE, "%s: n_heads %d is not a multiple of n_kv_heads %d", path, c->n_heads, c->n_kv_heads);
    if (c->rope_dim > c->head_dim || c->rope_dim % 2)
        return QLORA__ERR(ctx, QLORA_ERR_SHAPE, "%s: rope dimension %d does not fit head_dim %d", path, c->rope_dim, c->head_dim);
    return QLORA_OK;
}

// Every tensor of a block, for walks over the whole model (free, parameter and byte counts).
#define QLORA__LAYER_TENSORS 12
static void qlora__layer_tensors(qlora_layer *ly, qlora_tensor *ts[QLORA__LAYER_TENSORS]) {
    qlora_tensor *all[QLORA__LAYER_TENSORS] = { &ly->attn_norm, &ly->wq, &ly->wk, &ly->wv, &ly->wo, &ly->bq, &ly->bk,
                                                &ly->bv, &ly->ffn_norm, &ly->w_gate, &ly->w_up, &ly->w_down };
    memcpy(ts, all, sizeof all);
}

QLORA__DEF void qlora_model_free(qlora_model *m) {
    if (!m) return;
    qlora_tensor *all[3] = { &m->tok_embd, &m->out_norm, &m->output };
    if (m->output.data == m->tok_embd.data) all[2] = NULL;
    for (int i = 0; i < 3; i++) if (all[i]) qlora_tensor_free(all[i]);
    if (m->layers) {
        for (int l = 0; l < m->cfg.n_layers; l++) {
            qlora_tensor *ts[QLORA__LAYER_TENSORS];
            qlora__layer_tensors(&m->layers[l], ts);
            for (int i = 0; i < QLORA__LAYER_TENSORS; i++) qlora_tensor_free(ts[i]);
        }
    }
    QLORA__FREE(m->layers);
    if (m->tok) qlora_tokenizer_free(m->tok);
    if (m->gguf) qlora_gguf_close(m->gguf);
    for (size_t i = 0; i < m->n_st; i++) qlora_st_close(m->st[i]);
    QLORA__FREE(m->st);
    qlora_file_close(&m->raw);
    QLORA__FREE(m->chat_template);
    QLORA__FREE(m);
}

// GGUF / llama2.c q,k rows are permuted for adjacent-pair RoPE (llama.cpp convert_hf_to_gguf.py
// `permute`): gguf_row[h*D + 2i + j] = hf_row[h*D + j*D/2 + i]. Returns the HF row of GGUF row `row`.
static size_t qlora__rope_perm_row(size_t row, int D) {
    size_t h = row / (size_t)D, r = row % (size_t)D, i = r / 2, j = r % 2;
    return h * (size_t)D + j * ((size_t)D / 2) + i;
}
// Replace t (GGUF row order) by an owned copy in HF row order (rows are whole ggml blocks).
static qlora_result qlora__unpermute_rows(qlora_ctx *ctx, qlora_tensor *t, int D) {
    size_t rb = qlora_ggml_row_bytes(t->type, (size_t)t->ne[0]), rows = (size_t)t->ne[1];
    if (rows == 1 && t->type == QLORA_TYPE_F32) { rb = sizeof(float); rows = (size_t)t->ne[0]; }   // a bias: elements
    if (!rb || rows % (size_t)D) return QLORA__ERR(ctx, QLORA_ERR_SHAPE, "q/k weight with %zu rows is not a whole number of %d-dim heads", rows, D);
    uint8_t *dst = (uint8_t *)qlora__calloc(rows, rb);
    if (!dst) return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "out of memory");
    for (size_t g = 0; g < rows; g++) memcpy(dst + qlora__rope_perm_row(g, D) * rb, (const uint8_t *)t->data + g * rb, rb);
    if (t->owns_data) QLORA__FREE(t->data);
    t->data = dst;
    t->owns_data = 1;
    return QLORA_OK;
}

// ---- llama2.c checkpoints (run.c legacy: 7 x int32 header; export.py v1: "ak42" + 256-byte header)
static qlora_result qlora__load_llama2c(qlora_ctx *ctx, const char *path, qlora_model *m) {
    qlora_result r = qlora_file_open(ctx, path, &m->raw);
    if (r != QLORA_OK) return r;
    const uint8_t *d = m->raw.data;
    size_t size = m->raw.size, off;
    int32_t h[7];
    int shared = 1, v1 = 0;
    if (size < 28) return QLORA__ERR(ctx, QLORA_ERR_FORMAT, "%s: truncated llama2.c header (%zu bytes)", path, size);
    if (qlora__rd_u32(d) == 0x616b3432u) {
        if (size < 256) return QLORA__ERR(ctx, QLORA_ERR_FORMAT, "%s: truncated llama2.c v1 header", path);
        int32_t ver = (int32_t)qlora__rd_u32(d + 4);
        if (ver != 1) return QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "%s: llama2.c export version %d (only 1 = fp32 is supported)", path, ver);
        for (int i = 0; i < 7; i++) h[i] = (int32_t)qlora__rd_u32(d + 8 + 4 * i);
        shared = d[36] != 0;
        off = 256;
        v1 = 1;
    } else {
        for (int i = 0; i < 7; i++) h[i] = (int32_t)qlora__rd_u32(d + 4 * i);
        shared = h[5] > 0;
        if (h[5] < 0) h[5] = -h[5];
        off = 28;
    }
    qlora_model_config *c = &m->cfg;
    c->dim = h[0]; c->hidden_dim = h[1]; c->n_layers = h[2]; c->n_heads = h[3]; c->n_kv_heads = h[4];
    c->vocab_size = h[5]; c->max_seq_len = h[6];
    c->tied_embeddings = shared;
    qlora__model_defaults(c);
    if (qlora__model_check_config(ctx, path, c) != QLORA_OK)
        return QLORA__ERR(ctx, QLORA_ERR_FORMAT, "%s: not a recognised model file (no GGUF magic, not a HF directory, and as a llama2.c checkpoint its header is impossible: dim %d, layers %d, heads %d/%d, vocab %d)",
                          path, c->dim, c->n_layers, c->n_heads, c->n_kv_heads, c->vocab_size);
    if (c->dim % c->n_heads) return QLORA__ERR(ctx, QLORA_ERR_SHAPE, "%s: dim %d not divisible by %d heads", path, c->dim, c->n_heads);
    size_t C = (size_t)c->dim, F = (size_t)c->hidden_dim, L = (size_t)c->n_layers, V = (size_t)c->vocab_size;
    size_t kvd = (size_t)c->n_kv_heads * (size_t)c->head_dim, D = (size_t)c->head_dim, S = (size_t)(c->max_seq_len > 0 ? c->max_seq_len : 0);
    // total floats the checkpoint must hold
    size_t need = V * C + L * (2 * C + C * C + 2 * kvd * C + C * C + 3 * F * C) + C + (v1 ? 0 : S * D) + (shared ? 0 : V * C);
    if ((size - off) / 4 < need)
        return QLORA__ERR(ctx, QLORA_ERR_FORMAT, "%s: truncated: %zu bytes of weights, the header needs %zu", path, size - off, need * 4);
    m->layers = QLORA__CALLOC_T(qlora_layer, L);
    if (!m->layers) return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    const float *p = (const float *)(const void *)(d + off);
#define QLORA__TAKE(t, ne0, ne1) do { qlora__tensor_init((t), QLORA_TYPE_F32, (int64_t)(ne0), (int64_t)(ne1), p); p += (size_t)(ne0) * (size_t)(ne1); } while (0)
    if (!v1) {
        QLORA__TAKE(&m->tok_embd, C, V);
        for (size_t l = 0; l < L; l++) QLORA__TAKE(&m->layers[l].attn_norm, C, 1);
        for (size_t l = 0; l < L; l++) QLORA__TAKE(&m->layers[l].wq, C, C);
        for (size_t l = 0; l < L; l++) QLORA__TAKE(&m->layers[l].wk, C, kvd);
        for (size_t l = 0; l < L; l++) QLORA__TAKE(&m->layers[l].wv, C, kvd);
        for (size_t l = 0; l < L; l++) QLORA__TAKE(&m->layers[l].wo, C, C);
        for (size_t l = 0; l < L; l++) QLORA__TAKE(&m->layers[l].ffn_norm, C, 1);
        for (size_t l = 0; l < L; l++) QLORA__TAKE(&m->layers[l].w_gate, C, F);
        for (size_t l = 0; l < L; l++) QLORA__TAKE(&m->layers[l].w_down, F, C);
        for (size_t l = 0; l < L; l++) QLORA__TAKE(&m->layers[l].w_up, C, F);
        QLORA__TAKE(&m->out_norm, C, 1);
        p += S * D;                                    // freq_cis_real + freq_cis_imag (unused)
    } else {
        for (size_t l = 0; l < L; l++) QLORA__TAKE(&m->layers[l].attn_norm, C, 1);
        for (size_t l = 0; l < L; l++) QLORA__TAKE(&m->layers[l].ffn_norm, C, 1);
        QLORA__TAKE(&m->out_norm, C, 1);
        QLORA__TAKE(&m->tok_embd, C, V);
        for (size_t l = 0; l < L; l++) QLORA__TAKE(&m->layers[l].wq, C, C);
        for (size_t l = 0; l < L; l++) QLORA__TAKE(&m->layers[l].wk, C, kvd);
        for (size_t l = 0; l < L; l++) QLORA__TAKE(&m->layers[l].wv, C, kvd);
        for (size_t l = 0; l < L; l++) QLORA__TAKE(&m->layers[l].wo, C, C);
        for (size_t l = 0; l < L; l++) QLORA__TAKE(&m->layers[l].w_gate, C, F);
        for (size_t l = 0; l < L; l++) QLORA__TAKE(&m->layers[l].w_down, F, C);
        for (size_t l = 0; l < L; l++) QLORA__TAKE(&m->layers[l].w_up, C, F);
    }
    if (shared) m->output = m->tok_embd;
    else QLORA__TAKE(&m->output, C, V);
#undef QLORA__TAKE
    for (size_t l = 0; l < L; l++) {                      // Meta/llama2.c q,k layout -> HF
        if ((r = qlora__unpermute_rows(ctx, &m->layers[l].wq, c->head_dim)) != QLORA_OK) return r;
        if ((r = qlora__unpermute_rows(ctx, &m->layers[l].wk, c->head_dim)) != QLORA_OK) return r;
    }
    strcpy(m->arch, "llama");
    strcpy(m->source, "llama2c");
    return QLORA_OK;
}

// ---- GGUF (llama.cpp naming, see qlora-facts §7.2)
static qlora_result qlora__gguf_take(qlora_ctx *ctx, const char *path, const qlora_gguf *g, const char *name,
                                     int64_t ne0, int64_t ne1, int optional, qlora_tensor *t) {
    const qlora_gguf_tensor *gt = qlora_gguf_find_tensor(g, name);
    memset(t, 0, sizeof *t);
    if (!gt) {
        if (optional) return QLORA_OK;
        return QLORA__ERR(ctx, QLORA_ERR_NOT_FOUND, "%s: tensor '%s' is missing", path, name);
    }
    if (gt->type == QLORA_TYPE_COUNT)
        return QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "%s: tensor '%s' has ggml type %u, which qlora.h cannot read (supported: f32 f16 bf16 q8_0 q4_0 q4_1)", path, name, gt->ggml_type);
    if (gt->ne[0] != ne0 || gt->ne[1] != ne1 || gt->ne[2] != 1 || gt->ne[3] != 1)
        return QLORA__ERR(ctx, QLORA_ERR_SHAPE, "%s: tensor '%s' has shape [%lld, %lld], expected [%lld, %lld]", path, name,
                          (long long)gt->ne[0], (long long)gt->ne[1], (long long)ne0, (long long)ne1);
    qlora__tensor_init(t, gt->type, ne0, ne1, gt->data);
    return QLORA_OK;
}

static qlora_result qlora__load_gguf(qlora_ctx *ctx, const char *path, qlora_model *m) {
    qlora_result r = qlora_gguf_open(ctx, path, &m->gguf);
    if (r != QLORA_OK) return r;
    qlora_gguf *g = m->gguf;
    qlora_str arch = qlora_gguf_string(g, "general.architecture");
    if (!arch.ptr) return QLORA__ERR(ctx, QLORA_ERR_FORMAT, "%s: general.architecture is missing", path);
    if (!(arch.len == 5 && !memcmp(arch.ptr, "llama", 5)))
        return QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "%s: architecture '%.*s' is not supported yet (llama is)", path, (int)arch.len, arch.ptr);
    char key[96];
#define QLORA__KEY(s) (snprintf(key, sizeof key, "%.*s.%s", (int)arch.len, arch.ptr, s), key)
    qlora_model_config *c = &m->cfg;
    c->dim = (int)qlora_gguf_int(g, QLORA__KEY("embedding_length"), 0);
    c->hidden_dim = (int)qlora_gguf_int(g, QLORA__KEY("feed_forward_length"), 0);
    c->n_layers = (int)qlora_gguf_int(g, QLORA__KEY("block_count"), 0);
    c->n_heads = (int)qlora_gguf_int(g, QLORA__KEY("attention.head_count"), 0);
    c->n_kv_heads = (int)qlora_gguf_int(g, QLORA__KEY("attention.head_count_kv"), c->n_heads);
    c->max_seq_len = (int)qlora_gguf_int(g, QLORA__KEY("context_length"), 2048);
    c->norm_eps = (float)qlora_gguf_float(g, QLORA__KEY("attention.layer_norm_rms_epsilon"), 1e-5);
    c->rope_theta = (float)qlora_gguf_float(g, QLORA__KEY("rope.freq_base"), 10000.0);
    c->head_dim = c->n_heads > 0 ? (int)qlora_gguf_int(g, QLORA__KEY("attention.key_length"), c->dim / c->n_heads) : 0;
    c->rope_dim = (int)qlora_gguf_int(g, QLORA__KEY("rope.dimension_count"), c->head_dim);
    {
        qlora_str st = qlora_gguf_string(g, QLORA__KEY("rope.scaling.type"));
        float f = (float)qlora_gguf_float(g, QLORA__KEY("rope.scaling.factor"), 0.0);
        if (st.ptr && st.len == 6 && !memcmp(st.ptr, "linear", 6) && f > 0) { c->rope_scaling = QLORA_ROPE_SCALING_LINEAR; c->rope_factor = f; }
        else if (st.ptr && !(st.len == 4 && !memcmp(st.ptr, "none", 4)))
            return QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "%s: rope scaling '%.*s' not supported", path, (int)st.len, st.ptr);
    }
    const qlora_gguf_tensor *emb = qlora_gguf_find_tensor(g, "token_embd.weight");
    if (!emb) return QLORA__ERR(ctx, QLORA_ERR_NOT_FOUND, "%s: tensor 'token_embd.weight' is missing", path);
    c->vocab_size = (int)emb->ne[1];
#undef QLORA__KEY
    qlora__model_defaults(c);
    if ((r = qlora__model_check_config(ctx, path, c)) != QLORA_OK) return r;
    int64_t C = c->dim, F = c->hidden_dim, V = c->vocab_size, qd = (int64_t)c->n_heads * c->head_dim, kvd = (int64_t)c->n_kv_heads * c->head_dim;
    m->layers = QLORA__CALLOC_T(qlora_layer, (size_t)c->n_layers);
    if (!m->layers) return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    if ((r = qlora__gguf_take(ctx, path, g, "token_embd.weight", C, V, 0, &m->tok_embd)) != QLORA_OK) return r;
    if ((r = qlora__gguf_take(ctx, path, g, "output_norm.weight", C, 1, 0, &m->out_norm)) != QLORA_OK) return r;
    if ((r = qlora__gguf_take(ctx, path, g, "output.weight", C, V, 1, &m->output)) != QLORA_OK) return r;
    c->tied_embeddings = m->output.data == NULL;
    if (c->tied_embeddings) m->output = m->tok_embd;
    for (int l = 0; l < c->n_layers; l++) {
        qlora_layer *ly = &m->layers[l];
        struct { const char *n; int64_t ne0, ne1; int opt; qlora_tensor *t; } spec[] = {
            { "attn_norm.weight", C, 1, 0, &ly->attn_norm }, { "attn_q.weight", C, qd, 0, &ly->wq },
            { "attn_k.weight", C, kvd, 0, &ly->wk }, { "attn_v.weight", C, kvd, 0, &ly->wv },
            { "attn_output.weight", qd, C, 0, &ly->wo }, { "ffn_norm.weight", C, 1, 0, &ly->ffn_norm },
            { "ffn_gate.weight", C, F, 0, &ly->w_gate }, { "ffn_up.weight", C, F, 0, &ly->w_up },
            { "ffn_down.weight", F, C, 0, &ly->w_down }, { "attn_q.bias", qd, 1, 1, &ly->bq },
            { "attn_k.bias", kvd, 1, 1, &ly->bk }, { "attn_v.bias", kvd, 1, 1, &ly->bv } };
        for (size_t i = 0; i < sizeof spec / sizeof spec[0]; i++) {
            char name[64];
            snprintf(name, sizeof name, "blk.%d.%s", l, spec[i].n);
            if ((r = qlora__gguf_take(ctx, path, g, name, spec[i].ne0, spec[i].ne1, spec[i].opt, spec[i].t)) != QLORA_OK) return r;
            if (spec[i].opt && spec[i].t->data && spec[i].t->type != QLORA_TYPE_F32)
                return QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "%s: bias '%s' must be f32", path, name);
        }
        if (ly->bq.data) c->has_qkv_bias = 1;
        if ((r = qlora__unpermute_rows(ctx, &ly->wq, c->head_dim)) != QLORA_OK) return r;   // GGUF -> HF order
        if ((r = qlora__unpermute_rows(ctx, &ly->wk, c->head_dim)) != QLORA_OK) return r;
        if (ly->bq.data && (r = qlora__unpermute_rows(ctx, &ly->bq, c->head_dim)) != QLORA_OK) return r;
        if (ly->bk.data && (r = qlora__unpermute_rows(ctx, &ly->bk, c->head_dim)) != QLORA_OK) return r;
    }
    qlora_str tmpl = qlora_gguf_string(g, "tokenizer.chat_template");
    if (tmpl.ptr) m->chat_template = qlora__strndup(tmpl.ptr, tmpl.len);
    strcpy(m->arch, "llama");
    strcpy(m->source, "gguf");
    return QLORA_OK;
}


static int qlora__is_dir(const char *path) {
#if !defined(_WIN32)
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
#else
    (void)path; return 0;
#endif
}

// ---- Hugging Face directory: config.json + model.safetensors (or sharded index) + tokenizer.json
static qlora_type qlora__st_type(const char *dtype) {
    if (!strcmp(dtype, "F32")) return QLORA_TYPE_F32;
    if (!strcmp(dtype, "F16")) return QLORA_TYPE_F16;
    if (!strcmp(dtype, "BF16")) return QLORA_TYPE_BF16;
    return QLORA_TYPE_COUNT;
}


static qlora_result qlora__hf_take(qlora_ctx *ctx, const char *dir, qlora_model *m, const char *name,
                                   int64_t ne0, int64_t ne1, int optional, qlora_tensor *t) {
    memset(t, 0, sizeof *t);
    const qlora_st_tensor *st = NULL;
    for (size_t i = 0; i < m->n_st && !st; i++) st = qlora_st_find(m->st[i], name);
    if (!st) {
        if (optional) return QLORA_OK;
        return QLORA__ERR(ctx, QLORA_ERR_NOT_FOUND, "%s: tensor '%s' is missing", dir, name);
    }
    qlora_type type = qlora__st_type(st->dtype);
    if (type == QLORA_TYPE_COUNT)
        return QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s (F32, F16, BF16 are supported)", dir, name, st->dtype);
    int64_t s0 = st->n_dims == 2 ? st->shape[1] : st->n_dims == 1 ? st->shape[0] : -1;
    int64_t s1 = st->n_dims == 2 ? st->shape[0] : 1;
    if (s0 != ne0 || s1 != ne1)
        return QLORA__ERR(ctx, QLORA_ERR_SHAPE, "%s: tensor '%s' has shape [%lld, %lld], expected [%lld, %lld]", dir, name,
                          (long long)s1, (long long)s0, (long long)ne1, (long long)ne0);
    qlora__tensor_init(t, type, ne0, ne1, st->data);
    return QLORA_OK;
}

static qlora_result qlora__load_hf(qlora_ctx *ctx, const char *dir, qlora_model *m) {
    char path[4096];
    qlora_json *cfg = NULL, *index = NULL;
    qlora_result r;
    snprintf(path, sizeof path, "%s/config.json", dir);
    if ((r = qlora__read_json_file(ctx, path, &cfg)) != QLORA_OK) return r;
    qlora_model_config *c = &m->cfg;
    const char *arch = qlora_json_str(cfg, "model_type", "llama");
    if (strcmp(arch, "llama") != 0 && strcmp(arch, "mistral") != 0) {
        r = QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "%s: model_type '%s' is not supported yet (llama, mistral are)", path, arch);
        goto done;
    }
    c->dim = (int)qlora_json_num(cfg, "hidden_size", 0);
    c->hidden_dim = (int)qlora_json_num(cfg, "intermediate_size", 0);
    c->n_layers = (int)qlora_json_num(cfg, "num_hidden_layers", 0);
    c->n_heads = (int)qlora_json_num(cfg, "num_attention_heads", 0);
    c->n_kv_heads = (int)qlora_json_num(cfg, "num_key_value_heads", c->n_heads);
    c->vocab_size = (int)qlora_json_num(cfg, "vocab_size", 0);
    c->max_seq_len = (int)qlora_json_num(cfg, "max_position_embeddings", 2048);
    c->norm_eps = (float)qlora_json_num(cfg, "rms_norm_eps", 1e-6);
    c->rope_theta = (float)qlora_json_num(cfg, "rope_theta", 10000.0);
    c->head_dim = (int)qlora_json_num(cfg, "head_dim", c->n_heads > 0 ? c->dim / c->n_heads : 0);
    c->tied_embeddings = (int)qlora_json_num(cfg, "tie_word_embeddings", 0);
    {
        // transformers v4: "rope_theta" + "rope_scaling"; v5: "rope_parameters" holds both
        const qlora_json *rs = qlora_json_get(cfg, "rope_parameters");
        if (rs && rs->type == QLORA_JSON_OBJECT) c->rope_theta = (float)qlora_json_num(rs, "rope_theta", c->rope_theta);
        else rs = qlora_json_get(cfg, "rope_scaling");
        if (rs && rs->type == QLORA_JSON_OBJECT) {
            const char *ty = qlora_json_str(rs, "rope_type", qlora_json_str(rs, "type", ""));
            c->rope_factor = (float)qlora_json_num(rs, "factor", 1.0);
            if (!strcmp(ty, "linear")) c->rope_scaling = QLORA_ROPE_SCALING_LINEAR;
            else if (!strcmp(ty, "llama3")) {
                c->rope_scaling = QLORA_ROPE_SCALING_LLAMA3;
                c->rope_low_freq_factor = (float)qlora_json_num(rs, "low_freq_factor", 1.0);
                c->rope_high_freq_factor = (float)qlora_json_num(rs, "high_freq_factor", 4.0);
                c->rope_orig_ctx = (int)qlora_json_num(rs, "original_max_position_embeddings", 8192);
            } else if (strcmp(ty, "default") != 0) {
                r = QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "%s: rope_scaling type '%s' not supported", path, ty);
                goto done;
            }
        }
    }
    qlora__model_defaults(c);
    if ((r = qlora__model_check_config(ctx, path, c)) != QLORA_OK) goto done;
    // weights: one file, or shards listed by model.safetensors.index.json
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (qlora__file_exists(path)) {
        if ((r = qlora__read_json_file(ctx, path, &index)) != QLORA_OK) goto done;
        const qlora_json *wm = qlora_json_get(index, "weight_map");
        if (!wm || wm->type != QLORA_JSON_OBJECT) { r = QLORA__ERR(ctx, QLORA_ERR_FORMAT, "%s: no weight_map object", path); goto done; }
        m->st = (qlora_st **)qlora__calloc(wm->count ? wm->count : 1, sizeof *m->st);
        if (!m->st) { r = QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", path); goto done; }
        const char **names = (const char **)qlora__calloc(wm->count ? wm->count : 1, sizeof *names);
        if (!names) { r = QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", path); goto done; }
        for (const qlora_json *e = wm->child; e; e = e->next) {
            if (e->type != QLORA_JSON_STRING || strchr(e->str, '/') || strstr(e->str, "..")) {
                QLORA__FREE(names);
                r = QLORA__ERR(ctx, QLORA_ERR_FORMAT, "%s: weight_map['%s'] is not a file name in the directory", path, e->key);
                goto done;
            }
            size_t k = 0;
            while (k < m->n_st && strcmp(names[k], e->str)) k++;
            if (k < m->n_st) continue;
            char shard[4096];
            snprintf(shard, sizeof shard, "%s/%s", dir, e->str);
            names[m->n_st] = e->str;
            if ((r = qlora_st_open(ctx, shard, &m->st[m->n_st])) != QLORA_OK) { QLORA__FREE(names); goto done; }
            m->n_st++;
        }
        QLORA__FREE(names);
    } else {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        m->st = (qlora_st **)qlora__calloc(1, sizeof *m->st);
        if (!m->st) { r = QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "out of memory"); goto done; }
        if ((r = qlora_st_open(ctx, path, &m->st[0])) != QLORA_OK) goto done;
        m->n_st = 1;
    }
    {
        int64_t C = c->dim, F = c->hidden_dim, V = c->vocab_size, qd = (int64_t)c->n_heads * c->head_dim, kvd = (int64_t)c->n_kv_heads * c->head_dim;
        m->layers = QLORA__CALLOC_T(qlora_layer, (size_t)c->n_layers);
        if (!m->layers) { r = QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", dir); goto done; }
        if ((r = qlora__hf_take(ctx, dir, m, "model.embed_tokens.weight", C, V, 0, &m->tok_embd)) != QLORA_OK) goto done;
        if ((r = qlora__hf_take(ctx, dir, m, "model.norm.weight", C, 1, 0, &m->out_norm)) != QLORA_OK) goto done;
        if ((r = qlora__hf_take(ctx, dir, m, "lm_head.weight", C, V, 1, &m->output)) != QLORA_OK) goto done;
        if (!m->output.data) { c->tied_embeddings = 1; m->output = m->tok_embd; }
        else c->tied_embeddings = 0;
        for (int l = 0; l < c->n_layers; l++) {
            qlora_layer *ly = &m->layers[l];
            struct { const char *n; int64_t ne0, ne1; int opt; qlora_tensor *t; } spec[] = {
                { "input_layernorm.weight", C, 1, 0, &ly->attn_norm }, { "self_attn.q_proj.weight", C, qd, 0, &ly->wq },
                { "self_attn.k_proj.weight", C, kvd, 0, &ly->wk }, { "self_attn.v_proj.weight", C, kvd, 0, &ly->wv },
                { "self_attn.o_proj.weight", qd, C, 0, &ly->wo }, { "post_attention_layernorm.weight", C, 1, 0, &ly->ffn_norm },
                { "mlp.gate_proj.weight", C, F, 0, &ly->w_gate }, { "mlp.up_proj.weight", C, F, 0, &ly->w_up },
                { "mlp.down_proj.weight", F, C, 0, &ly->w_down },
                { "self_attn.q_proj.bias", qd, 1, 1, &ly->bq }, { "self_attn.k_proj.bias", kvd, 1, 1, &ly->bk },
                { "self_attn.v_proj.bias", kvd, 1, 1, &ly->bv } };
            for (size_t i = 0; i < sizeof spec / sizeof spec[0]; i++) {
                char name[160];
                snprintf(name, sizeof name, "model.layers.%d.%s", l, spec[i].n);
                if ((r = qlora__hf_take(ctx, dir, m, name, spec[i].ne0, spec[i].ne1, spec[i].opt, spec[i].t)) != QLORA_OK) goto done;
                if (spec[i].opt && spec[i].t->data && spec[i].t->type != QLORA_TYPE_F32) {
                    r = QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "%s: bias '%s' must be F32", dir, name);
                    goto done;
                }
            }
            if (ly->bq.data) c->has_qkv_bias = 1;
        }
    }
    strcpy(m->arch, "llama");
    strcpy(m->source, "hf");
done:
    qlora_json_free(cfg);
    qlora_json_free(index);
    return r;
}

static int qlora__ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && !strcmp(s + n - k, suf);
}

QLORA__DEF qlora_result qlora_model_load(qlora_ctx *ctx, const char *path, const qlora_load_options *opt, qlora_model **out) {
    *out = NULL;
    qlora_model *m = QLORA__CALLOC_T(qlora_model, 1);
    if (!m) return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "out of memory");
    const char *tok_path = opt ? opt->tokenizer_path : NULL;
    qlora_result r;
    if (qlora__is_dir(path)) {
        r = qlora__load_hf(ctx, path, m);
        if (r == QLORA_OK && !tok_path) {                 // no tokenizer.json: m->tok stays NULL
            char tp[4096];
            snprintf(tp, sizeof tp, "%s/tokenizer.json", path);
            if (qlora__file_exists(tp)) r = qlora_tokenizer_load_hf(ctx, tp, &m->tok);
        }
    } else {
        qlora_file f;
        r = qlora_file_open(ctx, path, &f);
        if (r == QLORA_OK) {
            int is_gguf = f.size >= 4 && !memcmp(f.data, "GGUF", 4);
            qlora_file_close(&f);
            if (is_gguf) {
                r = qlora__load_gguf(ctx, path, m);
                if (r == QLORA_OK && !tok_path) r = qlora_tokenizer_from_gguf(ctx, m->gguf, &m->tok);
            } else {
                r = qlora__load_llama2c(ctx, path, m);
            }
        }
    }
    if (r == QLORA_OK && tok_path) {
        if (qlora__ends_with(tok_path, ".json")) r = qlora_tokenizer_load_hf(ctx, tok_path, &m->tok);
        else if (qlora__ends_with(tok_path, ".gguf")) {
            qlora_gguf *g = NULL;
            r = qlora_gguf_open(ctx, tok_path, &g);
            if (r == QLORA_OK) r = qlora_tokenizer_from_gguf(ctx, g, &m->tok);
            qlora_gguf_close(g);
        } else r = qlora_tokenizer_load_llama2c(ctx, tok_path, m->cfg.vocab_size, &m->tok);
    }
    if (r == QLORA_OK && m->tok && qlora_tokenizer_n_vocab(m->tok) > m->cfg.vocab_size)
        r = QLORA__ERR(ctx, QLORA_ERR_SHAPE, "%s: tokenizer has %d tokens but the model only %d", path,
                       qlora_tokenizer_n_vocab(m->tok), m->cfg.vocab_size);
    if (r != QLORA_OK) { qlora_model_free(m); return r; }
    *out = m;
    return QLORA_OK;
}

// >>model-quantize
static qlora_tensor *qlora__mq_tensor(qlora_model *m, size_t k) {
    qlora_layer *ly = &m->layers[k / 7];
    qlora_tensor *ts[] = { &ly->wq, &ly->wk, &ly->wv, &ly->wo, &ly->w_gate, &ly->w_up, &ly->w_down };
    return ts[k % 7];
}
typedef struct qlora__mq_job { qlora_model *m; qlora_type t; int bs, dq; qlora_tensor *out; qlora_result *res; } qlora__mq_job;
static void qlora__mq_task(void *arg, int ith, int nth) {
    qlora__mq_job *j = (qlora__mq_job *)arg;
    for (size_t k = (size_t)ith; k < (size_t)j->m->cfg.n_layers * 7; k += (size_t)nth)
        j->res[k] = qlora_tensor_quantize(qlora__mq_tensor(j->m, k), j->t, j->bs, j->dq, &j->out[k]);
}
QLORA__DEF qlora_result qlora_model_quantize(qlora_ctx *ctx, qlora_model *m, qlora_type t, int blocksize, int double_quant) {
    if (!qlora_type_is_bnb(t) && t != QLORA_TYPE_F32 && t != QLORA_TYPE_F16 && t != QLORA_TYPE_BF16)
        return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "quantize: target type %s must be nf4, fp4, int4, int8, f32, f16 or bf16", qlora_type_name(t));
    // Every (layer, linear) tensor is an independent job; threads take them round-robin and the
    // results are swapped in afterwards, in order (identical for any thread count).
    size_t n = (size_t)m->cfg.n_layers * 7;
    qlora__mq_job j = { m, t, blocksize, double_quant, QLORA__CALLOC_T(qlora_tensor, n ? n : 1), QLORA__CALLOC_T(qlora_result, n ? n : 1) };
    if (!j.out || !j.res) { QLORA__FREE(j.out); QLORA__FREE(j.res); return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "quantize: out of memory"); }
    qlora_parallel_for(ctx, qlora__mq_task, &j);
    qlora_result r = QLORA_OK;
    for (size_t k = 0; k < n; k++) {
        if (j.res[k] != QLORA_OK && r == QLORA_OK)
            r = QLORA__ERR(ctx, j.res[k], "quantize layer %d tensor %zu to %s (blocksize %d): %s", (int)(k / 7), k % 7, qlora_type_name(t), blocksize, qlora_result_string(j.res[k]));
        if (r != QLORA_OK) { qlora_tensor_free(&j.out[k]); continue; }
        qlora_tensor *dst = qlora__mq_tensor(m, k);
        qlora_tensor_free(dst);
        *dst = j.out[k];
    }
    QLORA__FREE(j.out);
    QLORA__FREE(j.res);
    return r;
}

static size_t qlora__tensor_bytes_all(const qlora_tensor *t) {
    if (!t->data) return 0;
    size_t b = qlora_tensor_nbytes(t);
    if (qlora_type_is_bnb(t->type)) {
        size_t nb = qlora_bnb_nblocks(qlora_tensor_nelements(t), t->blocksize);
        b += t->absmax ? nb * 4 : nb + ((nb + 255) / 256) * 4 + 256 * 4;
    }
    return b;
}

// Sum of f over every tensor of the model (the tied head counted once).
static size_t qlora__model_sum(const qlora_model *m, size_t (*f)(const qlora_tensor *)) {
    size_t n = f(&m->tok_embd) + f(&m->out_norm);
    if (!m->cfg.tied_embeddings) n += f(&m->output);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        qlora_tensor *ts[QLORA__LAYER_TENSORS];
        qlora__layer_tensors(&m->layers[l], ts);
        for (int i = 0; i < QLORA__LAYER_TENSORS; i++) n += f(ts[i]);
    }
    return n;
}
static size_t qlora__tensor_elems_present(const qlora_tensor *t) { return t->data ? qlora_tensor_nelements(t) : 0; }

QLORA__DEF size_t qlora_model_n_params(const qlora_model *m) { return qlora__model_sum(m, qlora__tensor_elems_present); }
QLORA__DEF size_t qlora_model_weight_bytes(const qlora_model *m) { return qlora__model_sum(m, qlora__tensor_bytes_all); }

// >>save-hf
// Dequantizes a whole tensor to a new f32 buffer.
static float *qlora__tensor_to_f32(const qlora_tensor *t) {
    size_t ne0 = (size_t)t->ne[0], ne1 = (size_t)t->ne[1];
    float *out = QLORA__CALLOC_T(float, ne0 * ne1);
    if (!out) return NULL;
    if (qlora_tensor_dequantize_rows(t, 0, ne1, out) != QLORA_OK) { QLORA__FREE(out); return NULL; }
    return out;
}

QLORA__DEF qlora_result qlora_model_save_hf(qlora_ctx *ctx, const qlora_model *m, const char *dir) {
    const qlora_model_config *c = &m->cfg;
    size_t n_t = 3 + 9 * (size_t)c->n_layers, k = 0;
    qlora_st_entry *e = QLORA__CALLOC_T(qlora_st_entry, n_t);
    char (*names)[96] = (char (*)[96])qlora__calloc(n_t, 96);
    float **bufs = (float **)qlora__calloc(n_t, sizeof(float *));
    qlora_result r = QLORA_OK;
    char path[4096];
#if !defined(_WIN32)
    mkdir(dir, 0755);
#endif
    if (!e || !names || !bufs) { r = QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "save: out of memory"); goto done; }
#define QLORA__PUT(nm, t) do { \
        snprintf(names[k], 96, "%s", nm); \
        bufs[k] = qlora__tensor_to_f32(t); \
        if (!bufs[k]) { r = QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "save %s: out of memory", nm); goto done; } \
        e[k].name = names[k]; e[k].dtype = "F32"; e[k].data = bufs[k]; \
        e[k].n_dims = (t)->ne[1] > 1 ? 2 : 1; \
        if (e[k].n_dims == 2) { e[k].shape[0] = (t)->ne[1]; e[k].shape[1] = (t)->ne[0]; } else e[k].shape[0] = (t)->ne[0]; \
        e[k].nbytes = (size_t)((t)->ne[0] * (t)->ne[1]) * 4; k++; } while (0)
    QLORA__PUT("model.embed_tokens.weight", &m->tok_embd);
    QLORA__PUT("model.norm.weight", &m->out_norm);
    if (!c->tied_embeddings) QLORA__PUT("lm_head.weight", &m->output);
    for (int l = 0; l < c->n_layers; l++) {
        const qlora_layer *ly = &m->layers[l];
        char nm[96];
#define QLORA__PUTL(s, t) do { snprintf(nm, sizeof nm, "model.layers.%d.%s", l, s); QLORA__PUT(nm, t); } while (0)
        QLORA__PUTL("input_layernorm.weight", &ly->attn_norm);
        QLORA__PUTL("self_attn.q_proj.weight", &ly->wq);
        QLORA__PUTL("self_attn.k_proj.weight", &ly->wk);
        QLORA__PUTL("self_attn.v_proj.weight", &ly->wv);
        QLORA__PUTL("self_attn.o_proj.weight", &ly->wo);
        QLORA__PUTL("post_attention_layernorm.weight", &ly->ffn_norm);
        QLORA__PUTL("mlp.gate_proj.weight", &ly->w_gate);
        QLORA__PUTL("mlp.up_proj.weight", &ly->w_up);
        QLORA__PUTL("mlp.down_proj.weight", &ly->w_down);
#undef QLORA__PUTL
    }
#undef QLORA__PUT
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if ((r = qlora_st_write(ctx, path, e, k)) != QLORA_OK) goto done;
    {
        qlora__buf b = { NULL, 0, 0, 0 };
        qlora__buf_printf(&b, "{\n  \"architectures\": [\"LlamaForCausalLM\"],\n  \"model_type\": \"llama\",\n"
            "  \"hidden_size\": %d,\n  \"intermediate_size\": %d,\n  \"num_hidden_layers\": %d,\n"
            "  \"num_attention_heads\": %d,\n  \"num_key_value_heads\": %d,\n  \"head_dim\": %d,\n"
            "  \"vocab_size\": %d,\n  \"max_position_embeddings\": %d,\n  \"rms_norm_eps\": %.9g,\n"
            "  \"rope_theta\": %.9g,\n  \"tie_word_embeddings\": %s,\n  \"hidden_act\": \"silu\",\n"
            "  \"attention_bias\": false,\n  \"mlp_bias\": false,\n  \"torch_dtype\": \"float32\",\n"
            "  \"bos_token_id\": %d,\n  \"eos_token_id\": %d\n}\n",
            c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim, c->vocab_size,
            c->max_seq_len, (double)c->norm_eps, (double)c->rope_theta, c->tied_embeddings ? "true" : "false",
            m->tok ? qlora_tokenizer_bos(m->tok) : 1, m->tok ? qlora_tokenizer_eos(m->tok) : 2);
        if (c->rope_scaling != QLORA_ROPE_SCALING_NONE) {      // reopen the object for rope_scaling
            b.n -= 3;                                           // drop "\n}\n"
            if (c->rope_scaling == QLORA_ROPE_SCALING_LINEAR)
                qlora__buf_printf(&b, ",\n  \"rope_scaling\": {\"rope_type\": \"linear\", \"factor\": %.9g}\n}\n", (double)c->rope_factor);
            else
                qlora__buf_printf(&b, ",\n  \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": %.9g, \"low_freq_factor\": %.9g, "
                                  "\"high_freq_factor\": %.9g, \"original_max_position_embeddings\": %d}\n}\n",
                                  (double)c->rope_factor, (double)c->rope_low_freq_factor, (double)c->rope_high_freq_factor, c->rope_orig_ctx);
        }
        if (b.oom) { QLORA__FREE(b.p); r = QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "save: out of memory"); goto done; }
        const void *parts[1] = { b.p };
        size_t sizes[1] = { b.n };
        snprintf(path, sizeof path, "%s/config.json", dir);
        r = qlora__write_atomic(ctx, path, parts, sizes, 1);
        QLORA__FREE(b.p);
    }
done:
    if (bufs) for (size_t i = 0; i < n_t; i++) QLORA__FREE(bufs[i]);
    QLORA__FREE(bufs);
    QLORA__FREE(names);
    QLORA__FREE(e);
    return r;
}
// >>lora
// Adapter bookkeeping. All trainable floats live in one block (llm.c: one allocation per role):
// for each module in (layer, q k v o gate up down) order: A (r*in), B (out*r), [bias (out)].
static const char *const qlora__mod_names[QLORA_MOD_COUNT] = { "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj" };
static const char *const qlora__mod_parent[QLORA_MOD_COUNT] = { "self_attn", "self_attn", "self_attn", "self_attn", "mlp", "mlp", "mlp" };

QLORA__DEF const char *qlora_module_name(qlora_module m) { return (unsigned)m < QLORA_MOD_COUNT ? qlora__mod_names[m] : "?"; }
QLORA__DEF const char *qlora_module_parent(qlora_module m) { return (unsigned)m < QLORA_MOD_COUNT ? qlora__mod_parent[m] : "?"; }

QLORA__DEF qlora_result qlora_lora_parse_targets(qlora_ctx *ctx, const char *list, unsigned *mask) {
    *mask = 0;
    if (!list || !*list) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "target modules: empty list");
    if (!strcmp(list, "all-linear")) { *mask = QLORA_MODS_ALL_LINEAR; return QLORA_OK; }
    const char *p = list;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        while (n && *p == ' ') { p++; n--; }
        while (n && p[n - 1] == ' ') n--;
        int found = -1;
        for (int m = 0; m < QLORA_MOD_COUNT; m++)
            if (strlen(qlora__mod_names[m]) == n && !memcmp(p, qlora__mod_names[m], n)) found = m;
        if (found < 0)
            return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "unknown target module '%.*s' (valid: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, or all-linear)", (int)n, p);
        *mask |= 1u << found;
        p = e ? e + 1 : p + n;
    }
    return QLORA_OK;
}

static void qlora__module_shape(const qlora_model_config *c, qlora_module m, int *in, int *out) {
    int qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    switch (m) {
    case QLORA_MOD_Q: *in = c->dim; *out = qd; break;
    case QLORA_MOD_K: case QLORA_MOD_V: *in = c->dim; *out = kvd; break;
    case QLORA_MOD_O: *in = qd; *out = c->dim; break;
    case QLORA_MOD_GATE: case QLORA_MOD_UP: *in = c->dim; *out = c->hidden_dim; break;
    default: *in = c->hidden_dim; *out = c->dim; break;
    }
}

// The frozen base weight / bias of a module.
static const qlora_tensor *qlora__module_weight(const qlora_model *m, int layer, qlora_module mod) {
    const qlora_layer *ly = &m->layers[layer];
    const qlora_tensor *w[QLORA_MOD_COUNT] = { &ly->wq, &ly->wk, &ly->wv, &ly->wo, &ly->w_gate, &ly->w_up, &ly->w_down };
    return w[mod];
}
static const qlora_tensor *qlora__module_bias(const qlora_model *m, int layer, qlora_module mod) {
    const qlora_layer *ly = &m->layers[layer];
    if (mod == QLORA_MOD_Q) return ly->bq.data ? &ly->bq : NULL;
    if (mod == QLORA_MOD_K) return ly->bk.data ? &ly->bk : NULL;
    if (mod == QLORA_MOD_V) return ly->bv.data ? &ly->bv : NULL;
    return NULL;
}

// xorshift-based uniform in [-b, b) for the A init (not torch's mt19937 stream: parity tests load
// A/B values from files instead of replaying torch's generator).
QLORA__DEF qlora_result qlora_lora_create(qlora_ctx *ctx, const qlora_model *m, const qlora_lora_config *cfg_in, qlora_lora **out) {
    *out = NULL;
    qlora_lora_config cfg;
    memset(&cfg, 0, sizeof cfg);
    if (cfg_in) cfg = *cfg_in;
    if (cfg.r <= 0) cfg.r = 8;
    if (cfg.alpha == 0) cfg.alpha = 8;
    if (!cfg.target_mask) cfg.target_mask = QLORA_MODS_DEFAULT;
    if (cfg.r > 4096) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "lora: r = %d is too large", cfg.r);
    if (cfg.dropout < 0 || cfg.dropout >= 1) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "lora: dropout %g must be in [0, 1)", (double)cfg.dropout);
    if (cfg.target_mask & ~QLORA_MODS_ALL_LINEAR) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "lora: bad target mask 0x%x", cfg.target_mask);
    const qlora_model_config *c = &m->cfg;
    qlora_lora *l = QLORA__CALLOC_T(qlora_lora, 1);
    if (!l) return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "lora: out of memory");
    l->cfg = cfg;
    l->scaling = cfg.use_rslora ? cfg.alpha / sqrtf((float)cfg.r) : cfg.alpha / (float)cfg.r;
    l->n_layers = c->n_layers;
    int per = 0;
    for (int k = 0; k < QLORA_MOD_COUNT; k++) if (cfg.target_mask & (1u << k)) per++;
    l->n_mods = per * c->n_layers;
    l->mods = QLORA__CALLOC_T(qlora_lora_module, (size_t)l->n_mods);
    l->by = (qlora_lora_module **)qlora__calloc((size_t)c->n_layers * QLORA_MOD_COUNT, sizeof *l->by);
    if (!l->mods || !l->by) { qlora_lora_free(l); return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "lora: out of memory"); }
    size_t total = 0;
    int i = 0;
    for (int layer = 0; layer < c->n_layers; layer++) {
        for (int k = 0; k < QLORA_MOD_COUNT; k++) {
            if (!(cfg.target_mask & (1u << k))) continue;
            qlora_lora_module *md = &l->mods[i++];
            md->layer = layer;
            md->mod = (qlora_module)k;
            qlora__module_shape(c, md->mod, &md->in, &md->out);
            total += (size_t)cfg.r * (size_t)(md->in + md->out);
            if (cfg.bias != QLORA_BIAS_NONE && qlora__module_bias(m, layer, md->mod)) total += (size_t)md->out;
            l->by[layer * QLORA_MOD_COUNT + k] = md;
        }
    }
    // BIAS_ALL also trains the biases of modules without LoRA
    l->n_params = total;
    l->params = QLORA__CALLOC_T(float, total);
    l->grads = QLORA__CALLOC_T(float, total);
    if (!l->params || !l->grads) { qlora_lora_free(l); return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "lora: %zu parameters: out of memory", total); }
    uint64_t rng = cfg.seed ^ 0x5DEECE66Dull;
    float *p = l->params, *g = l->grads;
    for (int k = 0; k < l->n_mods; k++) {
        qlora_lora_module *md = &l->mods[k];
        size_t na = (size_t)cfg.r * (size_t)md->in, nb = (size_t)md->out * (size_t)cfg.r;
        md->A = p; md->dA = g; p += na; g += na;
        md->B = p; md->dB = g; p += nb; g += nb;
        float bound = 1.0f / sqrtf((float)md->in);        // kaiming_uniform_(a=sqrt(5)) on (r, in)
        for (size_t j = 0; j < na; j++) md->A[j] = (2.0f * qlora__rng_f32(&rng) - 1.0f) * bound;
        const qlora_tensor *bt = cfg.bias != QLORA_BIAS_NONE ? qlora__module_bias(m, md->layer, md->mod) : NULL;
        if (bt) {
            md->bias = p; md->dbias = g; p += md->out; g += md->out;
            memcpy(md->bias, bt->data, (size_t)md->out * sizeof(float));   // starts from the base bias
        }
    }
    *out = l;
    return QLORA_OK;
}

QLORA__DEF void qlora_lora_free(qlora_lora *l) {
    if (!l) return;
    QLORA__FREE(l->mods);
    QLORA__FREE(l->by);
    QLORA__FREE(l->params);
    QLORA__FREE(l->grads);
    QLORA__FREE(l);
}

QLORA__DEF qlora_lora_module *qlora_lora_get(const qlora_lora *l, int layer, qlora_module mod) {
    if (!l || layer < 0 || layer >= l->n_layers || (unsigned)mod >= QLORA_MOD_COUNT) return NULL;
    return l->by[layer * QLORA_MOD_COUNT + mod];
}

QLORA__DEF void qlora_lora_zero_grad(qlora_lora *l) { memset(l->grads, 0, l->n_params * sizeof(float)); }

QLORA__DEF size_t qlora_lora_segments(const qlora_lora *l, size_t *seg_len, size_t cap) {
    size_t n = 0;
    for (int i = 0; i < l->n_mods; i++) {
        const qlora_lora_module *md = &l->mods[i];
        size_t parts[3] = { (size_t)l->cfg.r * (size_t)md->in, (size_t)md->out * (size_t)l->cfg.r, md->bias ? (size_t)md->out : 0 };
        for (int k = 0; k < 3; k++) {
            if (!parts[k]) continue;
            if (seg_len && n < cap) seg_len[n] = parts[k];
            n++;
        }
    }
    return n;
}
// >>optim
// AdamW three ways (torch f32, bnb 8-bit blockwise, paged) + clip_grad_norm_ + HF LR schedules.
// Every f32 expression below mirrors one torch CPU kernel; where torch's vectorized kernel uses
// a fused multiply-add (lerp_, add_(alpha=), addcmul_) we call fmaf() explicitly, so the result
// does not depend on -ffp-contract. Measured against torch 2.15 (AVX-512 build): lerp_,
// add_(x, alpha) and addcmul_ are fused on every element, addcdiv_ is not. One known difference:
// torch's CPU sqrt of a contiguous f32 tensor goes through MKL vsSqrt (HA mode, +-1 ulp, CPU
// dependent); we use the IEEE sqrtf. With torch.Tensor.sqrt made exact the results are bitwise
// equal (tests/test_optim.c), also when built with -O3 -march=native -ffp-contract=fast (no
// remaining a*b+c is contractible: decay runs as its own pass, the other adds follow a divide).

#define QLORA__OPTIM_BLOCK 256          // bnb 8-bit optimizer blocksize (since bnb 0.44)
#define QLORA__OPTIM_UNIT  4096         // elements per work unit of the threaded step

typedef struct qlora__optim_seg {
    size_t off;          // first element in params/grads
    size_t n;            // elements
    size_t nb;           // 8-bit: blocks of 256
    int    is8;          // 8-bit state
    size_t state_off;    // byte offset of this segment's state in opt->state (64-aligned)
} qlora__optim_seg;

typedef struct qlora__optim_unit { size_t seg, b, e; } qlora__optim_unit;   // [b, e) within the segment

struct qlora_optim {
    qlora_ctx *ctx;
    qlora_optim_config cfg;             // resolved
    size_t n_seg, n_total;
    qlora__optim_seg *segs;             // [n_seg]
    qlora__optim_unit *units;           // [n_units] work split: 8-bit units are whole blocks
    size_t n_units;
    uint8_t *state;                     // [state_bytes], zero-initialised (m = v = 0, codes = absmax = 0)
    size_t state_bytes;
    int64_t step;
    int64_t *layout;                    // [3 + 2*n_seg] for serialization
    char   *names;                      // [(2 + 4*n_seg) * 32] entry names
    // paged
    char   *path;
    int     fd;
    float   map1[256], map2[256];       // bnb create_dynamic_map(signed=True) / (signed=False)
    float   bounds1[255], bounds2[255]; // midpoints (code[i] + code[i+1]) / 2 in f32
};

QLORA__DEF const char *qlora_optim_kind_name(qlora_optim_kind k) {
    static const char *const n[QLORA_OPTIM_COUNT] = { "adamw_torch", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit" };
    return (unsigned)k < QLORA_OPTIM_COUNT ? n[k] : "?";
}

QLORA__DEF qlora_result qlora_optim_config_resolve(qlora_optim_config *c) {
    if (!c || (unsigned)c->kind >= QLORA_OPTIM_COUNT) return QLORA_ERR_INVALID_ARG;
    if (c->beta1 == 0) c->beta1 = 0.9;
    if (c->beta2 == 0) c->beta2 = 0.999;
    if (c->eps == 0) c->eps = 1e-8;
    if (c->min_8bit_size == 0) c->min_8bit_size = 4096;
    if (!(c->beta1 > 0 && c->beta1 < 1) || !(c->beta2 > 0 && c->beta2 < 1) || !(c->eps > 0) ||
        !(c->weight_decay >= 0) || c->weight_decay > 1e30)
        return QLORA_ERR_INVALID_ARG;
    return QLORA_OK;
}

static int qlora__optim_is8(const qlora_optim_config *c, size_t n) {
    return (c->kind == QLORA_OPTIM_ADAMW_8BIT || c->kind == QLORA_OPTIM_PAGED_ADAMW_8BIT) && n >= c->min_8bit_size;
}

// Bytes of one segment's state, rounded up to 64: f32 m, v, or u8 codes + f32 absmax per block.
static int qlora__optim_seg_bytes(const qlora_optim_config *c, size_t n, size_t *out) {
    size_t b;
    if (qlora__optim_is8(c, n)) {
        size_t nb = n / QLORA__OPTIM_BLOCK + (n % QLORA__OPTIM_BLOCK != 0), a;
        if (!qlora__mul_ok(nb, 8, &a) || !qlora__mul_ok(n, 2, &b) || !qlora__add_ok(a, b, &b)) return 0;
    } else if (!qlora__mul_ok(n, 8, &b)) return 0;
    if (!qlora__add_ok(b, 63, &b)) return 0;
    *out = b & ~(size_t)63;
    return 1;
}

QLORA__DEF size_t qlora_optim_state_bytes(const qlora_optim_config *cfg, const size_t *seg_len, size_t n_seg) {
    qlora_optim_config c;
    memset(&c, 0, sizeof c);
    if (cfg) c = *cfg;
    if (qlora_optim_config_resolve(&c) != QLORA_OK || (!seg_len && n_seg)) return 0;
    size_t total = 0, b;
    for (size_t s = 0; s < n_seg; s++)
        if (!qlora__optim_seg_bytes(&c, seg_len[s], &b) || !qlora__add_ok(total, b, &total)) return 0;
    return total;
}

// The state block: heap, or (paged) a MAP_SHARED mapping of a fresh file in cfg.paged_dir. The
// file stays visible (qlora_optim_paged_path) while the optimizer lives and is deleted on free.
static qlora_result qlora__optim_alloc_state(qlora_optim *o) {
    size_t bytes = o->state_bytes ? o->state_bytes : 1;
    o->fd = -1;
    if (o->cfg.kind != QLORA_OPTIM_PAGED_ADAMW_8BIT && o->cfg.kind != QLORA_OPTIM_PAGED_ADAMW_32BIT) {
        o->state = (uint8_t *)qlora__calloc(bytes, 1);
        return o->state ? QLORA_OK : QLORA__ERR(o->ctx, QLORA_ERR_OUT_OF_MEMORY, "optimizer: %zu bytes of state", bytes);
    }
#if defined(_WIN32) || defined(QLORA_NO_STDIO)
    return QLORA__ERR(o->ctx, QLORA_ERR_UNSUPPORTED, "optimizer: paged state needs POSIX mmap");
#else
    const char *dir = o->cfg.paged_dir;
    if (!dir || !*dir) dir = getenv("TMPDIR");
    if (!dir || !*dir) dir = "/tmp";
    size_t dl = strlen(dir);
    o->path = (char *)QLORA__MALLOC(dl + 32);
    if (!o->path) return QLORA_ERR_OUT_OF_MEMORY;
    snprintf(o->path, dl + 32, "%s/qlora-optim-XXXXXX", dir);
    o->fd = mkstemp(o->path);
    if (o->fd < 0) {
        qlora_result r = QLORA__ERR(o->ctx, QLORA_ERR_IO, "optimizer: cannot create paged state file in '%s': %s", dir, strerror(errno));
        QLORA__FREE(o->path); o->path = NULL;
        return r;
    }
    if (ftruncate(o->fd, (off_t)bytes) != 0) {   // sparse file: reads as zeros = fresh state
        return QLORA__ERR(o->ctx, QLORA_ERR_IO, "optimizer: cannot size '%s' to %zu bytes: %s", o->path, bytes, strerror(errno));
    }
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, o->fd, 0);
    if (p == MAP_FAILED)
        return QLORA__ERR(o->ctx, QLORA_ERR_IO, "optimizer: cannot map '%s': %s", o->path, strerror(errno));
    o->state = (uint8_t *)p;
    return QLORA_OK;
#endif
}

QLORA__DEF void qlora_optim_free(qlora_optim *o) {
    if (!o) return;
    if (o->path) {
#if !defined(_WIN32) && !defined(QLORA_NO_STDIO)
        if (o->state) munmap(o->state, o->state_bytes ? o->state_bytes : 1);
        if (o->fd >= 0) close(o->fd);
        unlink(o->path);
#endif
        QLORA__FREE(o->path);
    } else {
        QLORA__FREE(o->state);
    }
    QLORA__FREE(o->segs);
    QLORA__FREE(o->units);
    QLORA__FREE(o->layout);
    QLORA__FREE(o->names);
    QLORA__FREE(o);
}

#define QLORA__OPTIM_NAME 32
static char *qlora__optim_name(const qlora_optim *o, size_t i) { return o->names + i * QLORA__OPTIM_NAME; }

QLORA__DEF qlora_result qlora_optim_create(qlora_ctx *ctx, const qlora_optim_config *cfg,
                                          const size_t *seg_len, size_t n_seg, qlora_optim **out) {
    if (!out) return QLORA_ERR_INVALID_ARG;
    *out = NULL;
    if (!seg_len && n_seg) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "optimizer: seg_len is NULL");
    qlora_optim_config c;
    memset(&c, 0, sizeof c);
    if (cfg) c = *cfg;
    if (qlora_optim_config_resolve(&c) != QLORA_OK)
        return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "optimizer: invalid config (kind %d, betas %g/%g, eps %g, weight_decay %g)",
                          (int)c.kind, c.beta1, c.beta2, c.eps, c.weight_decay);
    qlora_optim *o = QLORA__CALLOC_T(qlora_optim, 1);
    if (!o) return QLORA_ERR_OUT_OF_MEMORY;
    qlora_result r = QLORA_OK;
    size_t n_units = 0;
    o->ctx = ctx;
    o->cfg = c;
    o->fd = -1;
    o->n_seg = n_seg;
    o->segs = QLORA__CALLOC_T(qlora__optim_seg, n_seg ? n_seg : 1);
    o->layout = QLORA__CALLOC_T(int64_t, 3 + 2 * n_seg);
    o->names = (char *)qlora__calloc(2 + 4 * n_seg, QLORA__OPTIM_NAME);
    if (!o->segs || !o->layout || !o->names) { r = QLORA_ERR_OUT_OF_MEMORY; goto fail; }
    o->layout[0] = 1; o->layout[1] = QLORA__OPTIM_BLOCK; o->layout[2] = (int64_t)n_seg;
    for (size_t s = 0; s < n_seg; s++) {
        qlora__optim_seg *g = &o->segs[s];
        size_t b;
        g->off = o->n_total;
        g->n = seg_len[s];
        g->is8 = qlora__optim_is8(&c, g->n);
        g->nb = g->n / QLORA__OPTIM_BLOCK + (g->n % QLORA__OPTIM_BLOCK != 0);
        g->state_off = o->state_bytes;
        if (!qlora__add_ok(o->n_total, g->n, &o->n_total) || !qlora__optim_seg_bytes(&c, g->n, &b) ||
            !qlora__add_ok(o->state_bytes, b, &o->state_bytes)) {
            r = QLORA__ERR(ctx, QLORA_ERR_RANGE, "optimizer: segment %zu (%zu elements): size overflows", s, g->n);
            goto fail;
        }
        n_units += g->n / QLORA__OPTIM_UNIT + 1;
        o->layout[3 + 2 * s] = (int64_t)g->n;
        o->layout[4 + 2 * s] = g->is8 ? 8 : 32;
    }
    o->units = QLORA__CALLOC_T(qlora__optim_unit, n_units ? n_units : 1);
    if (!o->units) { r = QLORA_ERR_OUT_OF_MEMORY; goto fail; }
    for (size_t s = 0; s < n_seg; s++)     // QLORA__OPTIM_UNIT is a multiple of 256: units never split a block
        for (size_t b = 0; b < o->segs[s].n; b += QLORA__OPTIM_UNIT) {
            qlora__optim_unit *u = &o->units[o->n_units++];
            u->seg = s; u->b = b; u->e = QLORA__MIN(o->segs[s].n, b + QLORA__OPTIM_UNIT);
        }
    qlora_dynamic_map(1, o->map1);
    qlora_dynamic_map(0, o->map2);
    for (int i = 0; i < 255; i++) {     // bnb default backend: bounds = (code[:-1] + code[1:]) / 2
        o->bounds1[i] = (o->map1[i] + o->map1[i + 1]) / 2.0f;
        o->bounds2[i] = (o->map2[i] + o->map2[i + 1]) / 2.0f;
    }
    snprintf(qlora__optim_name(o, 0), QLORA__OPTIM_NAME, "optim.step");
    snprintf(qlora__optim_name(o, 1), QLORA__OPTIM_NAME, "optim.layout");
    for (size_t s = 0; s < n_seg; s++) {
        static const char *const n32[2] = { "exp_avg", "exp_avg_sq" };
        static const char *const n8[4] = { "state1", "state2", "absmax1", "absmax2" };
        for (int k = 0; k < (o->segs[s].is8 ? 4 : 2); k++)
            snprintf(qlora__optim_name(o, 2 + 4 * s + (size_t)k), QLORA__OPTIM_NAME, "optim.%zu.%s", s,
                     o->segs[s].is8 ? n8[k] : n32[k]);
    }
    r = qlora__optim_alloc_state(o);
    if (r != QLORA_OK) goto fail;
    *out = o;
    return QLORA_OK;
fail:
    qlora_optim_free(o);
    return r;
}

QLORA__DEF int64_t qlora_optim_steps(const qlora_optim *o) { return o ? o->step : 0; }
QLORA__DEF size_t qlora_optim_nparams(const qlora_optim *o) { return o ? o->n_total : 0; }
QLORA__DEF int qlora_optim_segment_is_8bit(const qlora_optim *o, size_t s) { return o && s < o->n_seg && o->segs[s].is8; }
QLORA__DEF const char *qlora_optim_paged_path(const qlora_optim *o) { return o ? o->path : NULL; }

// Per-segment views into the state block.
static float *qlora__optim_m(const qlora_optim *o, const qlora__optim_seg *g) { return (float *)(o->state + g->state_off); }
static float *qlora__optim_v(const qlora_optim *o, const qlora__optim_seg *g) { return qlora__optim_m(o, g) + g->n; }
static float *qlora__optim_absmax1(const qlora_optim *o, const qlora__optim_seg *g) { return (float *)(o->state + g->state_off); }
static float *qlora__optim_absmax2(const qlora_optim *o, const qlora__optim_seg *g) { return qlora__optim_absmax1(o, g) + g->nb; }
static uint8_t *qlora__optim_q1(const qlora_optim *o, const qlora__optim_seg *g) { return o->state + g->state_off + 8 * g->nb; }
static uint8_t *qlora__optim_q2(const qlora_optim *o, const qlora__optim_seg *g) { return qlora__optim_q1(o, g) + g->n; }

// Scalars of one step, computed once in double exactly as the Python code does, then rounded to
// f32 where the scalar meets an f32 tensor (torch's Scalar.to<float>()).
typedef struct qlora__optim_scalars {
    float b1, one_minus_b1, b2, one_minus_b2, decay;   // decay = 1 - lr*wd (used iff wd != 0)
    float t_bc2_sqrt, t_eps, t_neg_step;                // torch AdamW
    float c_step_size, c_eps_c2;                        // bnb 32-bit CPU
    float q_c2, q_eps, q_neg_lr_c1;                     // bnb 8-bit CPU
    int   decay_on;
} qlora__optim_scalars;

typedef struct qlora__optim_task {
    qlora_optim *o;
    float *params;          // (n_total)
    const float *grads;     // (n_total)
    const qlora__optim_scalars *k;
} qlora__optim_task;

// Decoupled weight decay p *= 1 - lr*wd, as its own pass: fused into the following add by a
// contracting compiler it would no longer round like torch's separate mul_.
static void qlora__optim_decay(float *p, size_t n, float decay) {
    for (size_t i = 0; i < n; i++) p[i] = p[i] * decay;
}

// torch.optim.adam._single_tensor_adam, decoupled_weight_decay=True (AdamW), amsgrad=False.
static void qlora__adamw_torch(float *p, const float *g, float *m, float *v, size_t n, const qlora__optim_scalars *k) {
    if (k->decay_on) qlora__optim_decay(p, n, k->decay);                // param.mul_(1 - lr*wd)
    for (size_t i = 0; i < n; i++) {
        float x = p[i];
        // exp_avg.lerp_(grad, 1-b1): vectorized lerp = fmadd(w, end - start, start) for |w| < 0.5,
        // else fmadd(w - 1, end - start, end)
        float w = k->one_minus_b1, d = g[i] - m[i];
        m[i] = w < 0.5f ? fmaf(w, d, m[i]) : fmaf(w - 1.0f, d, g[i]);
        v[i] = fmaf(k->one_minus_b2 * g[i], g[i], v[i] * k->b2);        // mul_(b2).addcmul_(g, g, 1-b2)
        float denom = sqrtf(v[i]) / k->t_bc2_sqrt + k->t_eps;           // (v.sqrt() / bc2_sqrt).add_(eps)
        p[i] = x + k->t_neg_step * m[i] / denom;                        // addcdiv_(m, denom, -step_size)
    }
}

// bitsandbytes backends/cpu/ops.py _optimizer_update_32bit_cpu ("adam", max_unorm 0).
static void qlora__adamw_bnb32(float *p, const float *g, float *m, float *v, size_t n, const qlora__optim_scalars *k) {
    if (k->decay_on) qlora__optim_decay(p, n, k->decay);                // p_float.mul_(1 - lr*wd)
    for (size_t i = 0; i < n; i++) {
        m[i] = fmaf(g[i], k->one_minus_b1, m[i] * k->b1);               // mul_(b1).add_(g, alpha=1-b1)
        v[i] = fmaf(k->one_minus_b2 * g[i], g[i], v[i] * k->b2);        // mul_(b2).addcmul_(g, g, 1-b2)
        float x = p[i];
        float upd = m[i] / (sqrtf(v[i]) + k->c_eps_c2);                 // s1 / (sqrt(s2) + eps*c2)
        p[i] = fmaf(upd, k->c_step_size, x);                            // add_(update, alpha=step_size)
    }
}

// Nearest code (bnb default backend quantize_blockwise): torch.bucketize(x, bounds, right=False)
// = the number of midpoints strictly below x, so a tie goes to the lower code.
static uint8_t qlora__optim_bucketize(const float bounds[255], float x) {
    int lo = 0, hi = 255;                  // answer in [0, 255]
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (bounds[mid] < x) lo = mid + 1; else hi = mid;
    }
    return (uint8_t)lo;
}

// Requantize one block s[0..n) (bnb default backend): a full block stores the raw absmax and is
// scaled by the reciprocal; the tensor's last partial block stores max(absmax, 1e-38) and divides.
static void qlora__optim_requant(const float *s, size_t n, int tail, const float bounds[255], uint8_t *q, float *absmax) {
    float am = 0.0f;
    for (size_t i = 0; i < n; i++) { float a = fabsf(s[i]); if (a > am || a != a) am = a; }
    const float tiny = (float)1e-38;
    if (!tail) {
        float inv = 1.0f / (am > tiny ? am : tiny);
        for (size_t i = 0; i < n; i++) {
            float x = s[i] * inv;
            x = x < -1.0f ? -1.0f : (x > 1.0f ? 1.0f : x);
            q[i] = qlora__optim_bucketize(bounds, x);
        }
        *absmax = am;
    } else {
        am = am > tiny ? am : tiny;
        for (size_t i = 0; i < n; i++) {
            float x = s[i] / am;
            x = x < -1.0f ? -1.0f : (x > 1.0f ? 1.0f : x);
            q[i] = qlora__optim_bucketize(bounds, x);
        }
        *absmax = am;
    }
}

// bitsandbytes backends/cpu/ops.py _optimizer_update_8bit_blockwise_cpu ("adam"), one block of
// 256: dequantize (code[q] * absmax), update in f32, requantize exactly.
static void qlora__adamw_bnb8_block(const qlora_optim *o, float *p, const float *g, uint8_t *q1, uint8_t *q2,
                                    float *absmax1, float *absmax2, size_t n, int tail, const qlora__optim_scalars *k) {
    float s1[QLORA__OPTIM_BLOCK], s2[QLORA__OPTIM_BLOCK];
    if (k->decay_on) qlora__optim_decay(p, n, k->decay);                // decay BEFORE the step (CPU backend)
    for (size_t i = 0; i < n; i++) {
        float m = o->map1[q1[i]] * *absmax1, v = o->map2[q2[i]] * *absmax2;
        m = fmaf(g[i], k->one_minus_b1, m * k->b1);                     // mul_(b1).add_(g, alpha=1-b1)
        v = fmaf(k->one_minus_b2 * g[i], g[i], v * k->b2);              // mul_(b2).addcmul_(g, g, 1-b2)
        float denom = sqrtf(v) / k->q_c2 + k->q_eps;                    // (s2.sqrt() / c2).add_(eps)
        p[i] = p[i] + k->q_neg_lr_c1 * m / denom;                          // addcdiv_(s1, denom, -lr/c1)
        s1[i] = m; s2[i] = v;
    }
    qlora__optim_requant(s1, n, tail, o->bounds1, q1, absmax1);
    qlora__optim_requant(s2, n, tail, o->bounds2, q2, absmax2);
}

static void qlora__optim_run(void *arg, int ith, int nth) {
    qlora__optim_task *t = (qlora__optim_task *)arg;
    qlora_optim *o = t->o;
    size_t ub, ue;
    qlora__split(o->n_units, ith, nth, &ub, &ue);
    for (size_t u = ub; u < ue; u++) {
        const qlora__optim_unit *un = &o->units[u];
        const qlora__optim_seg *g = &o->segs[un->seg];
        float *p = t->params + g->off;
        const float *gr = t->grads + g->off;
        if (g->is8) {
            for (size_t b = un->b; b < un->e; b += QLORA__OPTIM_BLOCK) {
                size_t n = QLORA__MIN((size_t)QLORA__OPTIM_BLOCK, g->n - b), blk = b / QLORA__OPTIM_BLOCK;
                int tail = n < QLORA__OPTIM_BLOCK;
                qlora__adamw_bnb8_block(o, p + b, gr + b, qlora__optim_q1(o, g) + b, qlora__optim_q2(o, g) + b,
                                        qlora__optim_absmax1(o, g) + blk, qlora__optim_absmax2(o, g) + blk, n, tail, t->k);
            }
        } else if (o->cfg.kind == QLORA_OPTIM_ADAMW) {
            qlora__adamw_torch(p + un->b, gr + un->b, qlora__optim_m(o, g) + un->b, qlora__optim_v(o, g) + un->b, un->e - un->b, t->k);
        } else {
            qlora__adamw_bnb32(p + un->b, gr + un->b, qlora__optim_m(o, g) + un->b, qlora__optim_v(o, g) + un->b, un->e - un->b, t->k);
        }
    }
}

QLORA__DEF qlora_result qlora_optim_step(qlora_optim *o, float *params, const float *grads, double lr) {
    if (!o) return QLORA_ERR_INVALID_ARG;
    if ((!params || !grads) && o->n_total) return QLORA__ERR(o->ctx, QLORA_ERR_INVALID_ARG, "optimizer step: params/grads is NULL");
    if (!(lr >= 0) || lr > 1e30) return QLORA__ERR(o->ctx, QLORA_ERR_INVALID_ARG, "optimizer step: learning rate %g", lr);
    const qlora_optim_config *c = &o->cfg;
    o->step++;
    double step = (double)o->step, wd = c->weight_decay;
    qlora__optim_scalars k;
    memset(&k, 0, sizeof k);
    k.b1 = (float)c->beta1;
    k.one_minus_b1 = (float)(1.0 - c->beta1);
    k.b2 = (float)c->beta2;
    k.one_minus_b2 = (float)(1.0 - c->beta2);
    k.decay_on = wd != 0.0;
    k.decay = (float)(1.0 - lr * wd);
    double bc1 = 1.0 - pow(c->beta1, step), bc2 = 1.0 - pow(c->beta2, step);
    // torch: step_size = lr / bc1; bc2_sqrt = bc2 ** 0.5; addcdiv_(value = -step_size)
    k.t_bc2_sqrt = (float)pow(bc2, 0.5);
    k.t_eps = (float)c->eps;
    k.t_neg_step = (float)(-(lr / bc1));
    // bnb CPU: c2 = math.sqrt(1 - b2**step); 32-bit step_size = -lr * c2 / c1; 8-bit value = -lr / c1
    double c2 = sqrt(bc2);
    k.c_step_size = (float)(-lr * c2 / bc1);
    k.c_eps_c2 = (float)(c->eps * c2);
    k.q_c2 = (float)c2;
    k.q_eps = (float)c->eps;
    k.q_neg_lr_c1 = (float)(-lr / bc1);
    qlora__optim_task t;
    t.o = o; t.params = params; t.grads = grads; t.k = &k;
    if (o->ctx) qlora_parallel_for(o->ctx, qlora__optim_run, &t);
    else qlora__optim_run(&t, 0, 1);
    return QLORA_OK;
}

// >>optim-state
static void qlora__optim_entry(qlora_st_entry *e, const char *name, const char *dtype, int64_t len, const void *data, size_t nbytes) {
    memset(e, 0, sizeof *e);
    e->name = name; e->dtype = dtype; e->n_dims = 1; e->shape[0] = len; e->data = data; e->nbytes = nbytes;
}

// Entry i of the serialized state (0 = step, 1 = layout, then per segment 2 or 4).
static size_t qlora__optim_entries(const qlora_optim *o, qlora_st_entry *out, size_t cap) {
    size_t n = 0;
    qlora_st_entry e;
#define QLORA__OPTIM_PUT() do { if (n < cap) out[n] = e; n++; } while (0)
    qlora__optim_entry(&e, qlora__optim_name(o, 0), "I64", 1, &o->step, 8); QLORA__OPTIM_PUT();
    qlora__optim_entry(&e, qlora__optim_name(o, 1), "I64", (int64_t)(3 + 2 * o->n_seg), o->layout, (3 + 2 * o->n_seg) * 8); QLORA__OPTIM_PUT();
    for (size_t s = 0; s < o->n_seg; s++) {
        const qlora__optim_seg *g = &o->segs[s];
        const char *nm = qlora__optim_name(o, 2 + 4 * s);
        if (g->is8) {
            qlora__optim_entry(&e, nm, "U8", (int64_t)g->n, qlora__optim_q1(o, g), g->n); QLORA__OPTIM_PUT();
            qlora__optim_entry(&e, nm + QLORA__OPTIM_NAME, "U8", (int64_t)g->n, qlora__optim_q2(o, g), g->n); QLORA__OPTIM_PUT();
            qlora__optim_entry(&e, nm + 2 * QLORA__OPTIM_NAME, "F32", (int64_t)g->nb, qlora__optim_absmax1(o, g), g->nb * 4); QLORA__OPTIM_PUT();
            qlora__optim_entry(&e, nm + 3 * QLORA__OPTIM_NAME, "F32", (int64_t)g->nb, qlora__optim_absmax2(o, g), g->nb * 4); QLORA__OPTIM_PUT();
        } else {
            qlora__optim_entry(&e, nm, "F32", (int64_t)g->n, qlora__optim_m(o, g), g->n * 4); QLORA__OPTIM_PUT();
            qlora__optim_entry(&e, nm + QLORA__OPTIM_NAME, "F32", (int64_t)g->n, qlora__optim_v(o, g), g->n * 4); QLORA__OPTIM_PUT();
        }
    }
#undef QLORA__OPTIM_PUT
    return n;
}

QLORA__DEF size_t qlora_optim_state_entries(const qlora_optim *o, qlora_st_entry *out, size_t cap) {
    if (!o) return 0;
    return qlora__optim_entries(o, out, out ? cap : 0);
}

QLORA__DEF qlora_result qlora_optim_load_state(qlora_optim *o, const qlora_st *st) {
    if (!o || !st) return QLORA_ERR_INVALID_ARG;
    qlora_ctx *ctx = o->ctx;
    size_t n = qlora__optim_entries(o, NULL, 0);
    qlora_st_entry *want = QLORA__CALLOC_T(qlora_st_entry, n);
    const qlora_st_tensor **have = (const qlora_st_tensor **)qlora__calloc(n, sizeof(qlora_st_tensor *));
    qlora_result r = QLORA_OK;
    if (!want || !have) { r = QLORA_ERR_OUT_OF_MEMORY; goto done; }
    qlora__optim_entries(o, want, n);
    // pass 1: every tensor is there with the right dtype, shape and size
    for (size_t i = 0; i < n; i++) {
        const qlora_st_tensor *t = qlora_st_find(st, want[i].name);
        if (!t) { r = QLORA__ERR(ctx, QLORA_ERR_NOT_FOUND, "optimizer state: tensor '%s' missing (saved by another optimizer kind or LoRA layout?)", want[i].name); goto done; }
        if (strcmp(t->dtype, want[i].dtype) != 0 || t->n_dims != 1 || t->shape[0] != want[i].shape[0] || t->nbytes != want[i].nbytes) {
            r = QLORA__ERR(ctx, QLORA_ERR_SHAPE, "optimizer state: '%s' is %s[%lld] (%zu bytes), expected %s[%lld]", want[i].name,
                           t->dtype, t->n_dims ? (long long)t->shape[0] : -1LL, t->nbytes, want[i].dtype, (long long)want[i].shape[0]);
            goto done;
        }
        have[i] = t;
    }
    // pass 2: values (the layout must match, floats finite, second moments and absmax >= 0)
    {
        const uint8_t *lay = have[1]->data;
        for (size_t j = 0; j < 3 + 2 * o->n_seg; j++) {
            int64_t v = (int64_t)qlora__rd_u64(lay + 8 * j);
            if (v != o->layout[j]) {
                r = QLORA__ERR(ctx, QLORA_ERR_FORMAT, "optimizer state: layout[%zu] = %lld, this optimizer has %lld (%s)", j, (long long)v,
                               (long long)o->layout[j], j < 3 ? "format/blocksize/segment count" : (j % 2 ? "segment length" : "segment state bits"));
                goto done;
            }
        }
        int64_t step = (int64_t)qlora__rd_u64(have[0]->data);
        if (step < 0) { r = QLORA__ERR(ctx, QLORA_ERR_RANGE, "optimizer state: step %lld", (long long)step); goto done; }
        for (size_t i = 2; i < n; i++) {
            if (strcmp(want[i].dtype, "F32") != 0) continue;
            int nonneg = strstr(want[i].name, "exp_avg_sq") || strstr(want[i].name, "absmax");
            const uint8_t *d = have[i]->data;
            for (size_t e = 0; e < have[i]->nbytes / 4; e++) {
                float f = qlora__f32_from_bits(qlora__rd_u32(d + 4 * e));
                if (!(f == f) || fabsf(f) > FLT_MAX || (nonneg && f < 0)) {
                    r = QLORA__ERR(ctx, QLORA_ERR_NUMERIC, "optimizer state: '%s'[%zu] = %g", want[i].name, e, (double)f);
                    goto done;
                }
            }
        }
        // all good: copy (the state is ours, so entries point at where the data goes)
        o->step = step;
        for (size_t i = 2; i < n; i++) memcpy((void *)want[i].data, have[i]->data, want[i].nbytes);
    }
done:
    QLORA__FREE(want);
    QLORA__FREE((void *)have);
    return r;
}

// >>clip
QLORA__DEF qlora_result qlora_clip_grad_norm(float *grads, const size_t *seg_len, size_t n_seg, double max_norm, float *total_norm) {
    if ((!grads || !seg_len) && n_seg) return QLORA_ERR_INVALID_ARG;
    // per-tensor norms (as _foreach_norm), then the norm of the norms (vector_norm of the stack)
    double tot2 = 0.0;
    size_t off = 0;
    for (size_t s = 0; s < n_seg; s++) {
        double ss = 0.0;
        for (size_t i = 0; i < seg_len[s]; i++) { double x = grads[off + i]; ss += x * x; }
        float ns = (float)sqrt(ss);                   // torch keeps each per-tensor norm as f32
        tot2 += (double)ns * (double)ns;
        off += seg_len[s];
    }
    float total = (float)sqrt(tot2);
    if (total_norm) *total_norm = total;
    if (!(total == total) || total > FLT_MAX) return QLORA_ERR_NUMERIC;
    if (!(max_norm > 0)) return QLORA_OK;
    float coef = (1.0f / (total + (float)1e-6)) * (float)max_norm;   // max_norm / t == t.reciprocal() * max_norm
    if (coef > 1.0f) coef = 1.0f;                                      // clamp(max=1.0)
    for (size_t i = 0; i < off; i++) grads[i] *= coef;                 // _foreach_mul_, always
    return QLORA_OK;
}

// >>lr-schedule
QLORA__DEF double qlora_lr_at(qlora_lr_schedule kind, double base_lr, int64_t step, int64_t warmup, int64_t total) {
    double lam = 1.0;
    if (kind == QLORA_LR_CONSTANT) return base_lr * lam;
    if (step < warmup) return base_lr * ((double)step / (double)QLORA__MAX((int64_t)1, warmup));
    switch (kind) {
    case QLORA_LR_LINEAR:
        lam = (double)(total - step) / (double)QLORA__MAX((int64_t)1, total - warmup);
        lam = lam > 0.0 ? lam : 0.0;
        break;
    case QLORA_LR_COSINE: {
        double progress = (double)(step - warmup) / (double)QLORA__MAX((int64_t)1, total - warmup);
        const double pi = 3.141592653589793;                         // math.pi
        lam = 0.5 * (1.0 + cos(pi * 0.5 * 2.0 * progress));          // math.pi * num_cycles * 2.0 * progress
        lam = lam > 0.0 ? lam : 0.0;
        break;
    }
    default: lam = 1.0; break;
    }
    return base_lr * lam;
}

QLORA__DEF qlora_result qlora_lr_schedule_parse(const char *name, qlora_lr_schedule *out) {
    static const char *const n[QLORA_LR_COUNT] = { "linear", "cosine", "constant", "constant_with_warmup" };
    if (!name || !out) return QLORA_ERR_INVALID_ARG;
    for (int i = 0; i < QLORA_LR_COUNT; i++)
        if (!strcmp(name, n[i])) { *out = (qlora_lr_schedule)i; return QLORA_OK; }
    return QLORA_ERR_NOT_FOUND;
}
// >>data
// Files -> examples (ids + labels) -> batches. The label rule is Hugging Face's: labels[t] = ids[t]
// where the loss counts and -100 elsewhere; the model shifts (the target of position t-1 is
// labels[t]), so a row of n tokens has at most n-1 targets and label 0 never counts.
//   text     whole file tokenized once (BOS when the tokenizer adds one), cut into T windows
//            (run_clm.py group_texts); every token is a target.
//   jsonl    BOS? + tok(obj[field]) + EOS, every token a target.
//   alpaca   tok(prompt + output) + EOS with the Stanford Alpaca prompt; the first
//            len(tok(prompt)) labels are -100 (alpaca train.py preprocess).
//   chat     tok(render(messages)); an assistant turn's span is [len(tok(render(msgs[:i], gen
//            prompt))), len(tok(render(msgs[:i+1])))) cut after its end-of-turn token, so the loss
//            is on the content and <|im_end|> / </s> but not on "<|im_start|>assistant\n" or "\n".
//   fortune  "%"-separated records, trimmed; BOS? + tok(record) + EOS.
// BOS never gets a label (nothing predicts it). Examples are truncated to T keeping the start.

static const char *const qlora__data_format_names[QLORA_DATA_FORMAT_COUNT] = {
    "auto", "text", "jsonl", "alpaca", "chat", "fortune"
};
QLORA__DEF const char *qlora_data_format_name(qlora_data_format f) {
    return (unsigned)f < QLORA_DATA_FORMAT_COUNT ? qlora__data_format_names[f] : "?";
}
QLORA__DEF qlora_result qlora_data_format_parse(qlora_ctx *ctx, const char *name, qlora_data_format *out) {
    for (int i = 0; i < QLORA_DATA_FORMAT_COUNT; i++)
        if (name && !strcmp(name, qlora__data_format_names[i])) { *out = (qlora_data_format)i; return QLORA_OK; }
    return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "unknown data format \"%s\" (valid: auto, text, jsonl, alpaca, chat, fortune)",
                      name ? name : "(null)");
}

// splitmix64 (Steele et al. 2014): the whole state is one integer, so a cursor can hold it.
static uint64_t qlora__data_splitmix64(uint64_t *s) { return qlora__mix64(*s += 0x9E3779B97F4A7C15ull); }
// Fisher-Yates over perm[0..n) (modulo bias < n / 2^64: irrelevant for data order).
static void qlora__data_shuffle(size_t *perm, size_t n, uint64_t state) {
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(qlora__data_splitmix64(&state) % (uint64_t)i);
        size_t t = perm[i - 1]; perm[i - 1] = perm[j]; perm[j] = t;
    }
}

// Grow *p (elements of size elem, capacity *cap) to hold need elements.
static int qlora__data_reserve(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 1;
    size_t nc = *cap ? *cap : 64, bytes;
    while (nc < need) { if (nc > SIZE_MAX / 2) return 0; nc *= 2; }
    if (!qlora__mul_ok(nc, elem, &bytes)) return 0;
    void *np = QLORA__REALLOC(*p, bytes);
    if (!np) return 0;
    *p = np; *cap = nc;
    return 1;
}

// ---- the builder: examples are appended to one ids and one labels array
typedef struct qlora__dbuild {
    qlora_ctx *ctx;
    const qlora_tokenizer *tok;
    const qlora_data_config *cfg;
    const char *name;            // for messages
    int T;                       // max_seq_length
    int32_t bos, eos;
    qlora_data_format fmt;
    int32_t *ids, *labels; size_t n_tok, cap_tok, cap_labels;   // all examples
    size_t  *off; size_t n, cap_off;                // off[0..n]
    int32_t *tmp; size_t cap_tmp;                   // tokenizer scratch
    int32_t *tmp2; size_t cap_tmp2;
    int32_t *lab; size_t cap_lab;                   // labels of the example being built
    char    *s; size_t slen, cap_s;                 // text being built (NUL-terminated)
    size_t   n_truncated, n_skipped, n_loss;
    size_t   line;                                  // current line (or record) number, 1-based
    int      in_array;                              // records come from a top-level JSON array
    int      full;                                  // max_samples reached
    char     loc[512];
} qlora__dbuild;

static const char *qlora__db_loc(qlora__dbuild *b) {
    snprintf(b->loc, sizeof b->loc, b->in_array ? "%s: record %zu" : "%s:%zu", b->name, b->line);
    return b->loc;
}
static qlora_result qlora__db_oom(qlora__dbuild *b) {
    return QLORA__ERR(b->ctx, QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", b->name);
}
// Text builder.
static qlora_result qlora__db_cat(qlora__dbuild *b, const char *s, size_t n) {
    size_t need;
    if (!qlora__add_ok(b->slen, n, &need) || !qlora__add_ok(need, 1, &need) ||
        !qlora__data_reserve((void **)&b->s, &b->cap_s, need, 1)) return qlora__db_oom(b);
    if (n) memcpy(b->s + b->slen, s, n);
    b->slen += n;
    b->s[b->slen] = 0;
    return QLORA_OK;
}
static qlora_result qlora__db_cats(qlora__dbuild *b, const char *s) { return qlora__db_cat(b, s, strlen(s)); }

// Tokenize s[0..len) into *dst (grown as needed); *n gets the count.
static qlora_result qlora__db_tok(qlora__dbuild *b, const char *s, size_t len, int add_special,
                                  int32_t **dst, size_t *cap, size_t *n) {
    if (len == 0) s = "";                 // qlora_tokenize reads len 0 as "NUL-terminated"
    size_t guess = len + 8;               // SPM (byte fallback) and BPE give at most ~1 token per byte
    if (!qlora__data_reserve((void **)dst, cap, guess, sizeof **dst)) return qlora__db_oom(b);
    qlora_result r = qlora_tokenize(b->tok, s, len, add_special, *dst, *cap, n);
    if (r == QLORA_ERR_RANGE) {
        if (!qlora__data_reserve((void **)dst, cap, *n, sizeof **dst)) return qlora__db_oom(b);
        r = qlora_tokenize(b->tok, s, len, add_special, *dst, *cap, n);
    }
    if (r != QLORA_OK) return QLORA__ERR(b->ctx, r, "%s: tokenizer failed: %s", qlora__db_loc(b), qlora_result_string(r));
    return QLORA_OK;
}

// Append one example: ids[0..n) with labels lab (NULL: every token is a target). n_prompt > 0 marks
// a prompt-masked example (alpaca/chat): if truncation leaves it without a target it is an error
// (or skipped with skip_long_prompts).
static qlora_result qlora__db_push(qlora__dbuild *b, const int32_t *ids, const int32_t *lab, size_t n, size_t n_prompt) {
    if (b->full || n == 0) return QLORA_OK;
    int cut = n > (size_t)b->T;
    if (cut) n = (size_t)b->T;
    size_t targets = 0;
    for (size_t t = 1; t < n; t++) {
        int32_t l = lab ? lab[t] : ids[t];
        if (l != QLORA_IGNORE_INDEX) targets++;
    }
    if (targets == 0) {
        if (n_prompt > 0 && !b->cfg->skip_long_prompts)
            return QLORA__ERR(b->ctx, QLORA_ERR_RANGE,
                              "%s: max-seq-length %d is smaller than the prompt (%zu tokens) plus one response token "
                              "(raise --max-seq-length)", qlora__db_loc(b), b->T, n_prompt);
        b->n_skipped++;
        return QLORA_OK;
    }
    size_t need;
    if (!qlora__add_ok(b->n_tok, n, &need) ||
        !qlora__data_reserve((void **)&b->ids, &b->cap_tok, need, sizeof *b->ids)) return qlora__db_oom(b);
    if (!qlora__data_reserve((void **)&b->labels, &b->cap_labels, need, sizeof *b->labels)) return qlora__db_oom(b);
    if (!qlora__data_reserve((void **)&b->off, &b->cap_off, b->n + 2, sizeof *b->off)) return qlora__db_oom(b);
    memcpy(b->ids + b->n_tok, ids, n * sizeof *ids);
    for (size_t t = 0; t < n; t++) {
        int32_t l = lab ? lab[t] : ids[t];
        if (t == 0 && ids[0] == b->bos) l = QLORA_IGNORE_INDEX;   // nothing predicts BOS
        b->labels[b->n_tok + t] = l;
    }
    b->off[b->n] = b->n_tok;
    b->n_tok += n;
    b->n++;
    b->off[b->n] = b->n_tok;
    b->n_loss += targets;
    b->n_truncated += (size_t)cut;
    if (b->cfg->max_samples && b->n >= b->cfg->max_samples) b->full = 1;
    return QLORA_OK;
}

// BOS? + tok(text) + EOS?, loss on everything (jsonl, fortune).
static qlora_result qlora__db_plain(qlora__dbuild *b, const char *text, size_t len) {
    size_t n = 0;
    qlora_result r = qlora__db_tok(b, text, len, 1, &b->tmp, &b->cap_tmp, &n);
    if (r != QLORA_OK) return r;
    if (!b->cfg->no_eos && b->eos >= 0) {
        if (!qlora__data_reserve((void **)&b->tmp, &b->cap_tmp, n + 1, sizeof *b->tmp)) return qlora__db_oom(b);
        b->tmp[n++] = b->eos;
    }
    return qlora__db_push(b, b->tmp, NULL, n, 0);
}

// tok(prompt + response) + EOS with labels -100 on the first len(tok(prompt)) tokens.
static qlora_result qlora__db_prompted(qlora__dbuild *b, size_t prompt_len) {
    size_t np = 0, n = 0;
    qlora_result r = qlora__db_tok(b, b->s, prompt_len, 1, &b->tmp2, &b->cap_tmp2, &np);
    if (r == QLORA_OK) r = qlora__db_tok(b, b->s, b->slen, 1, &b->tmp, &b->cap_tmp, &n);
    if (r != QLORA_OK) return r;
    if (!b->cfg->no_eos && b->eos >= 0) {
        if (!qlora__data_reserve((void **)&b->tmp, &b->cap_tmp, n + 1, sizeof *b->tmp)) return qlora__db_oom(b);
        b->tmp[n++] = b->eos;
    }
    if (!qlora__data_reserve((void **)&b->lab, &b->cap_lab, n, sizeof *b->lab)) return qlora__db_oom(b);
    for (size_t t = 0; t < n; t++) b->lab[t] = t < np ? QLORA_IGNORE_INDEX : b->tmp[t];
    return qlora__db_push(b, b->tmp, b->lab, n, np ? np : 1);
}

static const qlora_json *qlora__db_field(qlora__dbuild *b, const qlora_json *o, const char *key, int required, qlora_result *r) {
    const qlora_json *v = qlora_json_get(o, key);
    *r = QLORA_OK;
    if (!v || v->type == QLORA_JSON_NULL) {
        if (required) *r = QLORA__ERR(b->ctx, QLORA_ERR_FORMAT, "%s: missing field \"%s\"", qlora__db_loc(b), key);
        return NULL;
    }
    if (v->type != QLORA_JSON_STRING) {
        *r = QLORA__ERR(b->ctx, QLORA_ERR_FORMAT, "%s: field \"%s\" is not a string", qlora__db_loc(b), key);
        return NULL;
    }
    return v;
}

// Stanford Alpaca (tatsu-lab/stanford_alpaca train.py PROMPT_DICT), verbatim.
static const char qlora__alpaca_prompt_input[] =
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n### Instruction:\n";
static const char qlora__alpaca_prompt_no_input[] =
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n";

static qlora_result qlora__db_alpaca_one(qlora__dbuild *b, const qlora_json *ins, const qlora_json *inp, const qlora_json *outp) {
    b->slen = 0;
    int has_input = inp && inp->len > 0;
    qlora_result r = qlora__db_cats(b, has_input ? qlora__alpaca_prompt_input : qlora__alpaca_prompt_no_input);
    if (r == QLORA_OK) r = qlora__db_cat(b, ins->str, ins->len);
    if (r == QLORA_OK && has_input) r = qlora__db_cats(b, "\n\n### Input:\n");
    if (r == QLORA_OK && has_input) r = qlora__db_cat(b, inp->str, inp->len);
    if (r == QLORA_OK) r = qlora__db_cats(b, "\n\n### Response:\n");
    size_t prompt_len = b->slen;
    if (r == QLORA_OK) r = qlora__db_cat(b, outp->str, outp->len);
    return r == QLORA_OK ? qlora__db_prompted(b, prompt_len) : r;
}

static qlora_result qlora__db_alpaca(qlora__dbuild *b, const qlora_json *o) {
    qlora_result r;
    const qlora_json *ins = qlora__db_field(b, o, "instruction", 1, &r);
    if (r != QLORA_OK) return r;
    const qlora_json *inst = qlora_json_get(o, "instances");
    if (inst && inst->type == QLORA_JSON_ARRAY) {          // self-instruct seed task
        if (inst->count == 0) return QLORA__ERR(b->ctx, QLORA_ERR_FORMAT, "%s: field \"instances\" is empty", qlora__db_loc(b));
        size_t k = 0;
        for (const qlora_json *it = inst->child; it; it = it->next, k++) {
            char key[48];
            if (it->type != QLORA_JSON_OBJECT)
                return QLORA__ERR(b->ctx, QLORA_ERR_FORMAT, "%s: instances[%zu] is not an object", qlora__db_loc(b), k);
            const qlora_json *inp = qlora_json_get(it, "input");
            const qlora_json *outp = qlora_json_get(it, "output");
            if (inp && inp->type != QLORA_JSON_STRING) { snprintf(key, sizeof key, "instances[%zu].input", k); outp = NULL; }
            else if (!outp || outp->type != QLORA_JSON_STRING) snprintf(key, sizeof key, "instances[%zu].output", k);
            else { key[0] = 0; }
            if (key[0]) return QLORA__ERR(b->ctx, QLORA_ERR_FORMAT, "%s: missing or non-string field \"%s\"", qlora__db_loc(b), key);
            r = qlora__db_alpaca_one(b, ins, inp, outp);
            if (r != QLORA_OK) return r;
        }
        return QLORA_OK;
    }
    // input: optional ("context" in databricks-dolly); output ("response" in dolly).
    const char *in_key = qlora_json_get(o, "input") || !qlora_json_get(o, "context") ? "input" : "context";
    const char *out_key = qlora_json_get(o, "output") || !qlora_json_get(o, "response") ? "output" : "response";
    const qlora_json *inp = qlora__db_field(b, o, in_key, 0, &r);
    if (r != QLORA_OK) return r;
    const qlora_json *outp = qlora__db_field(b, o, out_key, 1, &r);
    if (r != QLORA_OK) return r;
    return qlora__db_alpaca_one(b, ins, inp, outp);
}

// ShareGPT / OpenAssistant role names -> the chat template's.
static const char *qlora__data_chat_role(const char *r) {
    if (!strcmp(r, "human") || !strcmp(r, "prompter") || !strcmp(r, "user")) return "user";
    if (!strcmp(r, "gpt") || !strcmp(r, "bot") || !strcmp(r, "model") || !strcmp(r, "assistant")) return "assistant";
    return r;
}

// Tokens of render(msgs[:k]) that agree with the full conversation's tokens (a template whose
// prefix merges into the next token across a boundary then gives the merged token loss: safe).
static qlora_result qlora__db_prefix_tokens(qlora__dbuild *b, const qlora_chat_msg *m, size_t k, int gen,
                                            const int32_t *full, size_t n_full, size_t *out) {
    size_t need = qlora_chat_render(b->tok, m, k, gen, NULL, 0), n = 0;
    b->slen = 0;
    if (!qlora__data_reserve((void **)&b->s, &b->cap_s, need + 1, 1)) return qlora__db_oom(b);
    qlora_chat_render(b->tok, m, k, gen, b->s, need + 1);
    b->slen = need;
    qlora_result r = qlora__db_tok(b, b->s, need, 1, &b->tmp2, &b->cap_tmp2, &n);
    if (r != QLORA_OK) return r;
    size_t c = 0;
    while (c < n && c < n_full && b->tmp2[c] == full[c]) c++;
    *out = c;
    return QLORA_OK;
}

static qlora_result qlora__db_chat(qlora__dbuild *b, const qlora_json *o) {
    const qlora_json *arr = qlora_json_get(o, "messages");
    const char *rk = "role", *ck = "content", *ak = "messages";
    if (!arr) { arr = qlora_json_get(o, "conversations"); rk = "from"; ck = "value"; ak = "conversations"; }
    if (!arr) return QLORA__ERR(b->ctx, QLORA_ERR_FORMAT, "%s: missing field \"messages\"", qlora__db_loc(b));
    if (arr->type != QLORA_JSON_ARRAY || arr->count == 0)
        return QLORA__ERR(b->ctx, QLORA_ERR_FORMAT, "%s: field \"%s\" is not a non-empty array", qlora__db_loc(b), ak);
    qlora_chat_msg *m = QLORA__CALLOC_T(qlora_chat_msg, arr->count);
    if (!m) return qlora__db_oom(b);
    qlora_result r = QLORA_OK;
    size_t k = 0, n_asst = 0;
    for (const qlora_json *it = arr->child; it; it = it->next, k++) {
        const qlora_json *role = qlora_json_get(it, rk), *content = qlora_json_get(it, ck);
        if (!role || role->type != QLORA_JSON_STRING || !content || content->type != QLORA_JSON_STRING) {
            r = QLORA__ERR(b->ctx, QLORA_ERR_FORMAT, "%s: %s[%zu] needs string fields \"%s\" and \"%s\"",
                           qlora__db_loc(b), ak, k, rk, ck);
            break;
        }
        m[k].role = qlora__data_chat_role(role->str);
        m[k].content = content->str;
        n_asst += !strcmp(m[k].role, "assistant");
    }
    if (r == QLORA_OK && n_asst == 0)
        r = QLORA__ERR(b->ctx, QLORA_ERR_FORMAT, "%s: conversation has no assistant message (nothing to train on)", qlora__db_loc(b));
    size_t n = 0;
    if (r == QLORA_OK) {   // the whole conversation, as the model will see it
        size_t need = qlora_chat_render(b->tok, m, k, 0, NULL, 0);
        if (!qlora__data_reserve((void **)&b->s, &b->cap_s, need + 1, 1)) r = qlora__db_oom(b);
        else {
            qlora_chat_render(b->tok, m, k, 0, b->s, need + 1);
            b->slen = need;
            r = qlora__db_tok(b, b->s, need, 1, &b->tmp, &b->cap_tmp, &n);
        }
    }
    if (r == QLORA_OK && !qlora__data_reserve((void **)&b->lab, &b->cap_lab, n ? n : 1, sizeof *b->lab)) r = qlora__db_oom(b);
    size_t first = 0;
    if (r == QLORA_OK) {
        for (size_t t = 0; t < n; t++) b->lab[t] = QLORA_IGNORE_INDEX;
        int seen = 0;
        for (size_t i = 0; i < k && r == QLORA_OK; i++) {
            if (strcmp(m[i].role, "assistant")) continue;
            size_t s = 0, e = 0;
            r = qlora__db_prefix_tokens(b, m, i, 1, b->tmp, n, &s);           // ... <|im_start|>assistant\n
            if (r == QLORA_OK) r = qlora__db_prefix_tokens(b, m, i + 1, 0, b->tmp, n, &e);   // ... content<|im_end|>\n
            if (r != QLORA_OK) break;
            for (size_t t = e; t > s; t--)                                  // stop after the end-of-turn token
                if (qlora_tokenizer_is_eog(b->tok, b->tmp[t - 1])) { e = t; break; }
            if (!seen) { first = s; seen = 1; }
            for (size_t t = s; t < e; t++) b->lab[t] = b->tmp[t];
        }
    }
    QLORA__FREE(m);
    if (r != QLORA_OK) return r;
    return qlora__db_push(b, b->tmp, b->lab, n, first ? first : 1);
}

static qlora_result qlora__db_record(qlora__dbuild *b, const qlora_json *o) {
    if (o->type != QLORA_JSON_OBJECT)
        return QLORA__ERR(b->ctx, QLORA_ERR_FORMAT, "%s: expected a JSON object", qlora__db_loc(b));
    if (b->fmt == QLORA_DATA_ALPACA) return qlora__db_alpaca(b, o);
    if (b->fmt == QLORA_DATA_CHAT) return qlora__db_chat(b, o);
    const char *field = b->cfg->field && b->cfg->field[0] ? b->cfg->field : "text";
    qlora_result r;
    const qlora_json *v = qlora__db_field(b, o, field, 1, &r);
    return v ? qlora__db_plain(b, v->str, v->len) : r;
}

static int qlora__data_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n') return 0;
    return 1;
}
// "line 1, column 7: what" (the parser's) -> "column 7: what".
static const char *qlora__data_json_err(const char *e) {
    return !strncmp(e, "line 1, ", 8) ? e + 8 : e;
}

// AUTO: a record's keys name its format.
static qlora_data_format qlora__data_sniff_record(const qlora_json *o) {
    if (qlora_json_get(o, "messages") || qlora_json_get(o, "conversations")) return QLORA_DATA_CHAT;
    if (qlora_json_get(o, "instruction")) return QLORA_DATA_ALPACA;
    return QLORA_DATA_JSONL;
}

// JSONL (one object per line) or a JSON array of objects (.json, e.g. alpaca_data.json).
static qlora_result qlora__db_json(qlora__dbuild *b, const char *data, size_t size, int sniff) {
    char err[256];
    size_t i = 0;
    while (i < size && (data[i] == ' ' || data[i] == '\t' || data[i] == '\r' || data[i] == '\n')) i++;
    if (i < size && data[i] == '[') {
        qlora_json *root = NULL;
        qlora_result r = qlora_json_parse(data, size, &root, err, sizeof err);
        if (r != QLORA_OK) return QLORA__ERR(b->ctx, r == QLORA_ERR_OUT_OF_MEMORY ? r : QLORA_ERR_JSON, "%s: malformed JSON: %s", b->name, err);
        b->in_array = 1;
        if (sniff) b->fmt = root->child ? qlora__data_sniff_record(root->child) : QLORA_DATA_JSONL;
        b->line = 0;
        for (const qlora_json *it = root->child; it && r == QLORA_OK && !b->full; it = it->next) {
            b->line++;
            r = qlora__db_record(b, it);
        }
        qlora_json_free(root);
        return r;
    }
    b->line = 0;
    for (size_t p = 0; p < size && !b->full;) {
        const char *nl = (const char *)memchr(data + p, '\n', size - p);
        size_t e = nl ? (size_t)(nl - data) : size;
        b->line++;
        if (!qlora__data_blank(data + p, e - p)) {
            qlora_json *o = NULL;
            qlora_result r = qlora_json_parse(data + p, e - p, &o, err, sizeof err);
            if (r != QLORA_OK)
                return QLORA__ERR(b->ctx, r == QLORA_ERR_OUT_OF_MEMORY ? r : QLORA_ERR_JSON, "%s: malformed JSON: %s",
                                  qlora__db_loc(b), qlora__data_json_err(err));
            if (sniff) { b->fmt = qlora__data_sniff_record(o); sniff = 0; }
            r = qlora__db_record(b, o);
            qlora_json_free(o);
            if (r != QLORA_OK) return r;
        }
        p = e + 1;
    }
    return QLORA_OK;
}

// Debian fortune (strfile(8)): records separated by a line holding only "%".
static qlora_result qlora__db_fortune(qlora__dbuild *b, const char *data, size_t size) {
    size_t p = 0, rec_start = 0, rec_line = 1, line = 0;
    while (p <= size && !b->full) {
        const char *nl = p < size ? (const char *)memchr(data + p, '\n', size - p) : NULL;
        size_t e = nl ? (size_t)(nl - data) : size;
        size_t le = e;
        if (le > p && data[le - 1] == '\r') le--;
        line++;
        int sep = le - p == 1 && data[p] == '%';
        if (sep || e >= size) {
            size_t rs = rec_start, re = sep ? p : size;
            while (rs < re && (data[rs] == ' ' || data[rs] == '\t' || data[rs] == '\r' || data[rs] == '\n')) rs++;
            while (re > rs && (data[re - 1] == ' ' || data[re - 1] == '\t' || data[re - 1] == '\r' || data[re - 1] == '\n')) re--;
            if (re > rs) {
                b->line = rec_line;
                qlora_result r = qlora__db_plain(b, data + rs, re - rs);
                if (r != QLORA_OK) return r;
            }
            rec_start = e + 1;
            rec_line = line + 1;
        }
        if (e >= size) break;
        p = e + 1;
    }
    return QLORA_OK;
}

// Plain text: one tokenization of the whole file, cut into T windows (a final window of one
// token has no target and is dropped).
static qlora_result qlora__db_text(qlora__dbuild *b, const char *data, size_t size) {
    size_t n = 0;
    b->line = 1;
    qlora_result r = qlora__db_tok(b, data, size, 1, &b->tmp, &b->cap_tmp, &n);
    for (size_t s = 0; r == QLORA_OK && s + 1 < n && !b->full; s += (size_t)b->T)
        r = qlora__db_push(b, b->tmp + s, NULL, QLORA__MIN((size_t)b->T, n - s), 0);
    return r;
}

static int qlora__data_ext_is(const char *s, const char *suf) {
    size_t n = strlen(s), k = strlen(suf);
    if (k > n) return 0;
    for (size_t i = 0; i < k; i++) {
        char c = s[n - k + i];
        if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
        if (c != suf[i]) return 0;
    }
    return 1;
}
static qlora_data_format qlora__data_sniff_file(const char *name, const char *data, size_t size) {
    if (qlora__data_ext_is(name, ".txt")) return QLORA_DATA_TEXT;
    if (qlora__data_ext_is(name, ".jsonl") || qlora__data_ext_is(name, ".json")) return QLORA_DATA_AUTO;   // by the first record
    for (size_t p = 0; p < size;) {
        const char *nl = (const char *)memchr(data + p, '\n', size - p);
        size_t e = nl ? (size_t)(nl - data) : size, le = e;
        if (le > p && data[le - 1] == '\r') le--;
        if (le - p == 1 && data[p] == '%') return QLORA_DATA_FORTUNE;
        p = e + 1;
    }
    return QLORA_DATA_TEXT;
}

static void qlora__db_free(qlora__dbuild *b) {
    QLORA__FREE(b->ids); QLORA__FREE(b->labels); QLORA__FREE(b->off);
    QLORA__FREE(b->tmp); QLORA__FREE(b->tmp2); QLORA__FREE(b->lab); QLORA__FREE(b->s);
}

// A dataset taking over arrays (ids/labels of n_tok tokens, off of n + 1 entries).
static qlora_result qlora__ds_new(qlora_ctx *ctx, const char *name, qlora_dataset **out) {
    qlora_dataset *ds = QLORA__CALLOC_T(qlora_dataset, 1);
    if (ds) ds->name = qlora__strdup(name ? name : "(memory)");
    if (!ds || !ds->name) { QLORA__FREE(ds); return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "dataset: out of memory"); }
    *out = ds;
    return QLORA_OK;
}
static size_t qlora__ds_count_loss(const qlora_dataset *ds) {
    size_t c = 0;
    for (size_t i = 0; i < ds->n; i++)
        for (size_t t = ds->off[i] + 1; t < ds->off[i + 1]; t++) c += ds->labels[t] != QLORA_IGNORE_INDEX;
    return c;
}

QLORA__DEF qlora_result qlora_dataset_load_memory(qlora_ctx *ctx, const qlora_tokenizer *tok, const char *name,
                                                  const char *data, size_t size, const qlora_data_config *cfg,
                                                  qlora_dataset **out) {
    qlora_data_config def;
    memset(&def, 0, sizeof def);
    if (!cfg) cfg = &def;
    if (!out || !tok || (!data && size)) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "qlora_dataset_load: NULL argument");
    *out = NULL;
    if (!name) name = "(memory)";
    if (!data) data = "";
    int T = cfg->max_seq_length ? cfg->max_seq_length : 256;
    if (T < 2) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "%s: max-seq-length %d must be at least 2", name, T);
    if ((unsigned)cfg->format >= QLORA_DATA_FORMAT_COUNT) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "%s: bad data format %d", name, (int)cfg->format);
    qlora__dbuild b;
    memset(&b, 0, sizeof b);
    b.ctx = ctx; b.tok = tok; b.cfg = cfg; b.name = name; b.T = T;
    b.bos = qlora_tokenizer_bos(tok);
    b.eos = qlora_tokenizer_eos(tok);
    b.fmt = cfg->format ? cfg->format : qlora__data_sniff_file(name, data, size);
    qlora_result r;
    switch (b.fmt) {
    case QLORA_DATA_TEXT:    r = qlora__db_text(&b, data, size); break;
    case QLORA_DATA_FORTUNE: r = qlora__db_fortune(&b, data, size); break;
    default:                 r = qlora__db_json(&b, data, size, b.fmt == QLORA_DATA_AUTO); break;
    }
    if (b.fmt == QLORA_DATA_AUTO) b.fmt = QLORA_DATA_JSONL;   // empty .jsonl
    if (r == QLORA_OK && b.n == 0)
        r = QLORA__ERR(ctx, QLORA_ERR_FORMAT, "%s: empty dataset (no %s examples%s)", name, qlora_data_format_name(b.fmt),
                       b.n_skipped ? " left after skipping examples without a trainable token" : "");
    qlora_dataset *ds = NULL;
    if (r == QLORA_OK) r = qlora__ds_new(ctx, name, &ds);
    if (r != QLORA_OK) { qlora__db_free(&b); return r; }
    ds->n = b.n; ds->off = b.off; ds->ids = b.ids; ds->labels = b.labels;
    b.off = NULL; b.ids = NULL; b.labels = NULL;
    ds->max_seq_length = T;
    ds->pad_id = b.eos >= 0 ? b.eos : 0;
    ds->format = b.fmt;
    ds->n_tokens = b.n_tok;
    ds->n_loss_tokens = b.n_loss;
    ds->n_truncated = b.n_truncated;
    ds->n_skipped = b.n_skipped;
    qlora__db_free(&b);
    *out = ds;
    return QLORA_OK;
}

QLORA__DEF qlora_result qlora_dataset_load(qlora_ctx *ctx, const qlora_tokenizer *tok, const char *path,
                                           const qlora_data_config *cfg, qlora_dataset **out) {
    if (!path || !out) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "qlora_dataset_load: NULL argument");
    qlora_file f;
    qlora_result r = qlora_file_open(ctx, path, &f);
    if (r != QLORA_OK) return r;
    r = qlora_dataset_load_memory(ctx, tok, path, (const char *)f.data, f.size, cfg, out);
    qlora_file_close(&f);
    return r;
}

QLORA__DEF void qlora_dataset_free(qlora_dataset *ds) {
    if (!ds) return;
    QLORA__FREE(ds->off); QLORA__FREE(ds->ids); QLORA__FREE(ds->labels); QLORA__FREE(ds->name);
    QLORA__FREE(ds);
}
QLORA__DEF size_t qlora_dataset_length(const qlora_dataset *ds, size_t i) {
    return ds && i < ds->n ? ds->off[i + 1] - ds->off[i] : 0;
}

// New dataset of the examples with keep[i] == want, in order.
static qlora_result qlora__ds_subset(qlora_ctx *ctx, const qlora_dataset *ds, const unsigned char *keep, int want,
                                     const char *suffix, qlora_dataset **out) {
    size_t n = 0, nt = 0;
    for (size_t i = 0; i < ds->n; i++) if (keep[i] == want) { n++; nt += ds->off[i + 1] - ds->off[i]; }
    char name[512];
    snprintf(name, sizeof name, "%s%s", ds->name, suffix);
    qlora_dataset *s = NULL;
    qlora_result r = qlora__ds_new(ctx, name, &s);
    if (r != QLORA_OK) return r;
    s->off = QLORA__CALLOC_T(size_t, n + 1);
    s->ids = QLORA__CALLOC_T(int32_t, nt);
    s->labels = QLORA__CALLOC_T(int32_t, nt);
    if (!s->off || !s->ids || !s->labels) { qlora_dataset_free(s); return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", name); }
    size_t k = 0, t = 0;
    for (size_t i = 0; i < ds->n; i++) {
        if (keep[i] != want) continue;
        size_t len = ds->off[i + 1] - ds->off[i];
        memcpy(s->ids + t, ds->ids + ds->off[i], len * sizeof *s->ids);
        memcpy(s->labels + t, ds->labels + ds->off[i], len * sizeof *s->labels);
        s->off[k++] = t;
        t += len;
    }
    s->off[k] = t;
    s->n = n; s->n_tokens = nt;
    s->max_seq_length = ds->max_seq_length; s->pad_id = ds->pad_id; s->format = ds->format; s->packed = ds->packed;
    s->n_loss_tokens = qlora__ds_count_loss(s);
    *out = s;
    return QLORA_OK;
}

QLORA__DEF qlora_result qlora_dataset_split(qlora_ctx *ctx, const qlora_dataset *ds, double fraction, uint64_t seed,
                                            qlora_dataset **train, qlora_dataset **eval) {
    if (!ds || !train || !eval) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "qlora_dataset_split: NULL argument");
    *train = *eval = NULL;
    if (!(fraction > 0.0 && fraction < 1.0))
        return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "validation-split %g must be in (0, 1)", fraction);
    size_t n_eval = (size_t)ceil(fraction * (double)ds->n);
    if (n_eval == 0 || n_eval >= ds->n)
        return QLORA__ERR(ctx, QLORA_ERR_RANGE, "%s: validation-split %g of %zu examples leaves %zu for training and %zu for eval",
                          ds->name, fraction, ds->n, ds->n - QLORA__MIN(n_eval, ds->n), n_eval);
    size_t *perm = QLORA__CALLOC_T(size_t, ds->n);
    unsigned char *is_eval = QLORA__CALLOC_T(unsigned char, ds->n);
    qlora_result r = QLORA_OK;
    if (!perm || !is_eval) r = QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", ds->name);
    if (r == QLORA_OK) {
        for (size_t i = 0; i < ds->n; i++) perm[i] = i;
        qlora__data_shuffle(perm, ds->n, seed ^ 0x5EED5EED5EED5EEDull);   // a stream apart from the epoch orders
        for (size_t i = 0; i < n_eval; i++) is_eval[perm[i]] = 1;
        r = qlora__ds_subset(ctx, ds, is_eval, 0, "[train]", train);
        if (r == QLORA_OK) r = qlora__ds_subset(ctx, ds, is_eval, 1, "[eval]", eval);
        if (r != QLORA_OK) { qlora_dataset_free(*train); *train = NULL; }
    }
    QLORA__FREE(perm); QLORA__FREE(is_eval);
    return r;
}

QLORA__DEF qlora_result qlora_dataset_pack(qlora_ctx *ctx, const qlora_dataset *ds, int T, qlora_dataset **out) {
    if (!ds || !out) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "qlora_dataset_pack: NULL argument");
    *out = NULL;
    if (T < 2) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "packing: window %d must be at least 2", T);
    size_t N = ds->off[ds->n], nw = (N + (size_t)T - 1) / (size_t)T;
    char name[512];
    snprintf(name, sizeof name, "%s[packed]", ds->name);
    qlora_dataset *p = NULL;
    qlora_result r = qlora__ds_new(ctx, name, &p);
    if (r != QLORA_OK) return r;
    p->off = QLORA__CALLOC_T(size_t, nw + 1);
    p->ids = QLORA__CALLOC_T(int32_t, N);
    p->labels = QLORA__CALLOC_T(int32_t, N);
    if (!p->off || !p->ids || !p->labels) { qlora_dataset_free(p); return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", name); }
    memcpy(p->ids, ds->ids, N * sizeof *p->ids);          // examples are already contiguous in order
    memcpy(p->labels, ds->labels, N * sizeof *p->labels);
    size_t k = 0;
    for (size_t s = 0; s < N; s += (size_t)T) { p->off[k++] = s; p->off[k] = QLORA__MIN(N, s + (size_t)T); }
    for (;;) {                                              // drop a tail with nothing to learn
        size_t targets = 0;
        for (size_t t = k ? p->off[k - 1] + 1 : 0; k && t < p->off[k]; t++) targets += p->labels[t] != QLORA_IGNORE_INDEX;
        if (!k || targets) break;
        k--;
    }
    p->n = k;
    p->n_tokens = k ? p->off[k] : 0;
    p->max_seq_length = T; p->pad_id = ds->pad_id; p->format = ds->format; p->packed = 1;
    p->n_truncated = ds->n_truncated; p->n_skipped = ds->n_skipped;
    p->n_loss_tokens = qlora__ds_count_loss(p);
    if (k == 0) { qlora_dataset_free(p); return QLORA__ERR(ctx, QLORA_ERR_FORMAT, "%s: empty dataset", name); }
    *out = p;
    return QLORA_OK;
}

QLORA__DEF qlora_result qlora_data_prepare(qlora_ctx *ctx, const qlora_tokenizer *tok, const char *train_path,
                                           const char *eval_path, const qlora_data_config *cfg,
                                           qlora_dataset **train, qlora_dataset **eval) {
    qlora_data_config def;
    memset(&def, 0, sizeof def);
    if (!cfg) cfg = &def;
    if (!train || !eval) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "qlora_data_prepare: NULL argument");
    *train = *eval = NULL;
    if (cfg->validation_split < 0.0 || cfg->validation_split >= 1.0)
        return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "validation-split %g must be in [0, 1)", cfg->validation_split);
    qlora_dataset *tr = NULL, *ev = NULL;
    qlora_result r = qlora_dataset_load(ctx, tok, train_path, cfg, &tr);
    if (r == QLORA_OK && eval_path) {
        qlora_data_config ec = *cfg;
        ec.max_samples = 0;                 // --max-train-samples limits training only
        r = qlora_dataset_load(ctx, tok, eval_path, &ec, &ev);
    } else if (r == QLORA_OK && cfg->validation_split > 0.0) {
        qlora_dataset *all = tr;
        tr = NULL;
        r = qlora_dataset_split(ctx, all, cfg->validation_split, cfg->seed, &tr, &ev);
        qlora_dataset_free(all);
    }
    if (r == QLORA_OK && cfg->packing) {
        qlora_dataset *p = NULL;
        r = qlora_dataset_pack(ctx, tr, tr->max_seq_length, &p);
        if (r == QLORA_OK) { qlora_dataset_free(tr); tr = p; }
        if (r == QLORA_OK && ev) {
            r = qlora_dataset_pack(ctx, ev, ev->max_seq_length, &p);
            if (r == QLORA_OK) { qlora_dataset_free(ev); ev = p; }
        }
    }
    if (r != QLORA_OK) { qlora_dataset_free(tr); qlora_dataset_free(ev); return r; }
    *train = tr; *eval = ev;
    return QLORA_OK;
}

// ---- batches
QLORA__DEF qlora_result qlora_batch_init(qlora_ctx *ctx, qlora_batch *b, int B, int T) {
    memset(b, 0, sizeof *b);
    size_t n;
    if (B < 1 || T < 2 || !qlora__mul_ok((size_t)B, (size_t)T, &n))
        return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "batch %d x %d: need B >= 1 and T >= 2", B, T);
    b->B_cap = B; b->T_cap = T;
    b->ids = QLORA__CALLOC_T(int32_t, n);
    b->labels = QLORA__CALLOC_T(int32_t, n);
    b->lengths = QLORA__CALLOC_T(int32_t, (size_t)B);
    if (!b->ids || !b->labels || !b->lengths) { qlora_batch_free(b); return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "batch: out of memory"); }
    return QLORA_OK;
}
QLORA__DEF void qlora_batch_free(qlora_batch *b) {
    if (!b) return;
    QLORA__FREE(b->ids); QLORA__FREE(b->labels); QLORA__FREE(b->lengths);
    memset(b, 0, sizeof *b);
}

// ---- loader: epoch orders and a resumable cursor
QLORA__DEF qlora_result qlora_loader_init(qlora_ctx *ctx, qlora_data_loader *L, const qlora_dataset *ds, int B,
                                          int shuffle, int repeat, uint64_t seed) {
    memset(L, 0, sizeof *L);
    if (!ds || ds->n == 0 || B < 1) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "loader: need a non-empty dataset and B >= 1");
    L->ds = ds; L->B = B; L->shuffle = shuffle; L->repeat = repeat;
    L->cur.seed = seed;
    L->perm_epoch = UINT64_MAX;
    L->perm = QLORA__CALLOC_T(size_t, ds->n);
    if (!L->perm) return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "loader: out of memory");
    return QLORA_OK;
}
QLORA__DEF void qlora_loader_free(qlora_data_loader *L) {
    if (!L) return;
    QLORA__FREE(L->perm);
    memset(L, 0, sizeof *L);
}
// The order of epoch e depends on (seed, e) only: resuming needs no RNG history.
static void qlora__loader_order(qlora_data_loader *L) {
    if (L->perm_epoch == L->cur.epoch) return;
    for (size_t i = 0; i < L->ds->n; i++) L->perm[i] = i;
    if (L->shuffle) {
        uint64_t st = L->cur.seed, mix = L->cur.epoch;
        st ^= qlora__data_splitmix64(&mix);
        qlora__data_shuffle(L->perm, L->ds->n, st);
    }
    L->perm_epoch = L->cur.epoch;
}
QLORA__DEF int qlora_loader_next(qlora_data_loader *L, qlora_batch *b) {
    const qlora_dataset *ds = L->ds;
    if (L->cur.pos >= ds->n) {
        if (!L->repeat) { b->B = 0; b->T = 0; b->n_loss = 0; return 0; }
        L->cur.epoch++;
        L->cur.pos = 0;
    }
    qlora__loader_order(L);
    int rows = (int)QLORA__MIN((uint64_t)QLORA__MIN(L->B, b->B_cap), ds->n - L->cur.pos);
    int T = 2;
    for (int r = 0; r < rows; r++) {
        size_t i = L->perm[L->cur.pos + (size_t)r];
        size_t len = QLORA__MIN(ds->off[i + 1] - ds->off[i], (size_t)b->T_cap);
        b->lengths[r] = (int32_t)len;
        if ((int)len > T) T = (int)len;
    }
    if (L->pad_to_max) T = b->T_cap;
    b->B = rows; b->T = T; b->n_loss = 0;
    for (int r = 0; r < rows; r++) {
        size_t i = L->perm[L->cur.pos + (size_t)r], len = (size_t)b->lengths[r];
        int32_t *id = b->ids + (size_t)r * (size_t)T, *lb = b->labels + (size_t)r * (size_t)T;   // (T)
        memcpy(id, ds->ids + ds->off[i], len * sizeof *id);
        memcpy(lb, ds->labels + ds->off[i], len * sizeof *lb);
        for (size_t t = len; t < (size_t)T; t++) { id[t] = ds->pad_id; lb[t] = QLORA_IGNORE_INDEX; }
        for (size_t t = 1; t < len; t++) b->n_loss += lb[t] != QLORA_IGNORE_INDEX;
    }
    L->cur.pos += (uint64_t)rows;
    return rows;
}
QLORA__DEF void qlora_loader_rewind(qlora_data_loader *L) { L->cur.pos = 0; }
QLORA__DEF qlora_data_cursor qlora_loader_cursor(const qlora_data_loader *L) {
    qlora_data_cursor c = L->cur;
    c.rows = L->ds->n;
    return c;
}
QLORA__DEF qlora_result qlora_loader_restore(qlora_ctx *ctx, qlora_data_loader *L, qlora_data_cursor c) {
    if (c.rows && c.rows != L->ds->n)
        return QLORA__ERR(ctx, QLORA_ERR_RANGE, "data cursor was saved for %llu rows but %s has %zu: different data or settings?",
                          (unsigned long long)c.rows, L->ds->name, L->ds->n);
    if (c.pos > L->ds->n)
        return QLORA__ERR(ctx, QLORA_ERR_RANGE, "data cursor position %llu is past the dataset (%zu rows): different data?",
                          (unsigned long long)c.pos, L->ds->n);
    L->cur = c;
    L->cur.rows = 0;
    L->perm_epoch = UINT64_MAX;
    return QLORA_OK;
}
QLORA__DEF size_t qlora_loader_batches_per_epoch(const qlora_data_loader *L) {
    return (L->ds->n + (size_t)L->B - 1) / (size_t)L->B;
}
// >>adapter
// Adapter files (PEFT directory, llama.cpp GGUF LoRA), merging, and the GGUF model writer.
// Row order: qlora.h keeps q/k rows in Hugging Face (rotate_half) order, so LoRA B of q_proj/k_proj
// is PEFT's as-is. GGUF files (models and llama.cpp LoRA adapters) hold q/k rows permuted for
// adjacent-pair RoPE: GGUF row g is HF row qlora__rope_perm_row(g, head_dim). For an adapter only
// lora_B is permuted; A never changes (P W + P B A = P (W + B A): llama.cpp convert_lora_to_gguf.py).

// ---- small output helpers ---------------------------------------------------------------------
static void qlora__buf_u32(qlora__buf *b, uint32_t v) {
    uint8_t x[4] = { (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24) };
    qlora__buf_put(b, x, 4);
}
static void qlora__buf_u64(qlora__buf *b, uint64_t v) {
    qlora__buf_u32(b, (uint32_t)v);
    qlora__buf_u32(b, (uint32_t)(v >> 32));
}
static void qlora__buf_gstr(qlora__buf *b, const char *s, size_t n) {   // gguf_string: u64 len + bytes
    qlora__buf_u64(b, (uint64_t)n);
    qlora__buf_put(b, s, n);
}

// A file written front to back (tensor data streamed in chunks), then published atomically:
// path.tmp, fsync, rename (the same contract as qlora__write_atomic, without holding it in memory).
typedef struct qlora__ofile {
    qlora_ctx *ctx;
    const char *path;
    char *tmp;
    int ok;
#if !defined(_WIN32)
    int fd;
#else
    FILE *fp;
#endif
} qlora__ofile;

static qlora_result qlora__ofile_open(qlora_ctx *ctx, const char *path, qlora__ofile *o) {
    size_t n = strlen(path);
    memset(o, 0, sizeof *o);
    o->ctx = ctx; o->path = path; o->ok = 1;
    o->tmp = (char *)QLORA__MALLOC(n + 5);
    if (!o->tmp) return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    memcpy(o->tmp, path, n);
    memcpy(o->tmp + n, ".tmp", 5);
#if !defined(_WIN32)
    o->fd = open(o->tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (o->fd < 0) {
        qlora_result r = QLORA__ERR(ctx, QLORA_ERR_IO, "%s: cannot create: %s", o->tmp, strerror(errno));
        QLORA__FREE(o->tmp); o->tmp = NULL;
        return r;
    }
#else
    o->fp = fopen(o->tmp, "wb");
    if (!o->fp) {
        qlora_result r = QLORA__ERR(ctx, QLORA_ERR_IO, "%s: cannot create", o->tmp);
        QLORA__FREE(o->tmp); o->tmp = NULL;
        return r;
    }
#endif
    return QLORA_OK;
}
static void qlora__ofile_put(qlora__ofile *o, const void *data, size_t n) {
    if (!o->ok) return;
#if !defined(_WIN32)
    const char *p = (const char *)data;
    while (n > 0) {
        ssize_t w = write(o->fd, p, n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) { o->ok = 0; return; }
        p += w; n -= (size_t)w;
    }
#else
    if (n && fwrite(data, 1, n, o->fp) != n) o->ok = 0;
#endif
}
static void qlora__ofile_zeros(qlora__ofile *o, size_t n) {
    static const uint8_t z[64] = { 0 };
    while (n) { size_t k = QLORA__MIN(n, sizeof z); qlora__ofile_put(o, z, k); n -= k; }
}
// commit != 0: publish the file; else (or on any earlier write error) remove the temp file.
static qlora_result qlora__ofile_close(qlora__ofile *o, int commit) {
    int ok = o->ok && commit;
#if !defined(_WIN32)
    if (ok && fsync(o->fd) != 0) ok = 0;
    if (close(o->fd) != 0) ok = 0;
#else
    if (fclose(o->fp) != 0) ok = 0;
#endif
    qlora_result r = QLORA_OK;
    if (!ok || rename(o->tmp, o->path) != 0) {
        remove(o->tmp);
        if (commit) r = QLORA__ERR(o->ctx, QLORA_ERR_IO, "%s: write failed (disk full?)", o->path);
        else r = QLORA_ERR_IO;
    }
    QLORA__FREE(o->tmp);
    o->tmp = NULL;
    return r;
}

static void qlora__mkdir(const char *dir) {
#if !defined(_WIN32)
    mkdir(dir, 0755);
#else
    (void)dir;
#endif
}

// >>gguf-writer
// GGUF v3: header, key/values, tensor infos, zero padding to 32, tensor data (each at a multiple of
// 32 from the data start). Key/values are kept pre-encoded (u32 type + value) in insertion order.
typedef struct qlora__gw_kv { char *key; qlora__buf val; } qlora__gw_kv;
typedef struct qlora__gw_tensor {
    char *name;
    qlora_type type;              // stored type
    int n_dims;
    int64_t ne[4];
    const void *data;             // borrowed bytes, or
    const qlora_tensor *src;      // converted while writing
    int perm_D;                   // src only: row g written = src row qlora__rope_perm_row(g, perm_D)
    size_t nbytes;
    uint64_t offset;
} qlora__gw_tensor;
struct qlora_gguf_writer {
    qlora_ctx *ctx;
    qlora__gw_kv *kv; size_t n_kv, cap_kv;
    qlora__gw_tensor *t; size_t n_t, cap_t;
};

QLORA__DEF qlora_result qlora_gguf_writer_create(qlora_ctx *ctx, qlora_gguf_writer **out) {
    *out = QLORA__CALLOC_T(qlora_gguf_writer, 1);
    if (!*out) return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "gguf writer: out of memory");
    (*out)->ctx = ctx;
    return QLORA_OK;
}

QLORA__DEF void qlora_gguf_writer_free(qlora_gguf_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) { QLORA__FREE(w->kv[i].key); QLORA__FREE(w->kv[i].val.p); }
    for (size_t i = 0; i < w->n_t; i++) QLORA__FREE(w->t[i].name);
    QLORA__FREE(w->kv);
    QLORA__FREE(w->t);
    QLORA__FREE(w);
}

// *out = the value buffer of key (existing: emptied for replacement; new: appended).
static qlora_result qlora__gw_slot(qlora_gguf_writer *w, const char *key, qlora__buf **out) {
    size_t kl = strlen(key);
    *out = NULL;
    if (kl == 0 || kl > 65535) return QLORA__ERR(w->ctx, QLORA_ERR_INVALID_ARG, "gguf writer: key '%.64s' must have 1..65535 bytes", key);
    for (size_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->kv[i].key, key)) { w->kv[i].val.n = 0; w->kv[i].val.oom = 0; *out = &w->kv[i].val; return QLORA_OK; }
    if (w->n_kv == w->cap_kv) {
        size_t nc = w->cap_kv ? 2 * w->cap_kv : 32;
        qlora__gw_kv *nk = (qlora__gw_kv *)QLORA__REALLOC(w->kv, nc * sizeof *nk);
        if (!nk) return QLORA__ERR(w->ctx, QLORA_ERR_OUT_OF_MEMORY, "gguf writer: out of memory");
        w->kv = nk; w->cap_kv = nc;
    }
    qlora__gw_kv *e = &w->kv[w->n_kv];
    memset(e, 0, sizeof *e);
    e->key = qlora__strdup(key);
    if (!e->key) return QLORA__ERR(w->ctx, QLORA_ERR_OUT_OF_MEMORY, "gguf writer: out of memory");
    w->n_kv++;
    *out = &e->val;
    return QLORA_OK;
}
static qlora_result qlora__gw_done(qlora_gguf_writer *w, qlora__buf *b) {
    if (b->oom) return QLORA__ERR(w->ctx, QLORA_ERR_OUT_OF_MEMORY, "gguf writer: out of memory");
    return QLORA_OK;
}
#define QLORA__GW_SLOT(key) qlora__buf *b; { qlora_result rs_ = qlora__gw_slot(w, (key), &b); if (rs_ != QLORA_OK) return rs_; }

QLORA__DEF qlora_result qlora_gguf_writer_set_u32(qlora_gguf_writer *w, const char *key, uint32_t v) {
    QLORA__GW_SLOT(key)
    { qlora__buf_u32(b, QLORA_GGUF_UINT32); qlora__buf_u32(b, v); }
    return qlora__gw_done(w, b);
}
QLORA__DEF qlora_result qlora_gguf_writer_set_i32(qlora_gguf_writer *w, const char *key, int32_t v) {
    QLORA__GW_SLOT(key)
    { qlora__buf_u32(b, QLORA_GGUF_INT32); qlora__buf_u32(b, (uint32_t)v); }
    return qlora__gw_done(w, b);
}
QLORA__DEF qlora_result qlora_gguf_writer_set_f32(qlora_gguf_writer *w, const char *key, float v) {
    QLORA__GW_SLOT(key)
    { qlora__buf_u32(b, QLORA_GGUF_FLOAT32); qlora__buf_u32(b, qlora__bits_from_f32(v)); }
    return qlora__gw_done(w, b);
}
QLORA__DEF qlora_result qlora_gguf_writer_set_bool(qlora_gguf_writer *w, const char *key, int v) {
    QLORA__GW_SLOT(key)
    { uint8_t x = v ? 1 : 0; qlora__buf_u32(b, QLORA_GGUF_BOOL); qlora__buf_put(b, &x, 1); }
    return qlora__gw_done(w, b);
}
QLORA__DEF qlora_result qlora_gguf_writer_set_str(qlora_gguf_writer *w, const char *key, const char *v) {
    QLORA__GW_SLOT(key)
    { qlora__buf_u32(b, QLORA_GGUF_STRING); qlora__buf_gstr(b, v, strlen(v)); }
    return qlora__gw_done(w, b);
}
QLORA__DEF qlora_result qlora_gguf_writer_set_arr(qlora_gguf_writer *w, const char *key, qlora_gguf_vtype et,
                                                  const void *data, size_t n) {
    size_t bytes;
    if ((unsigned)et >= QLORA_GGUF_VTYPE_COUNT || et == QLORA_GGUF_STRING || et == QLORA_GGUF_ARRAY)
        return QLORA__ERR(w->ctx, QLORA_ERR_INVALID_ARG, "gguf writer: '%s': array element type %d is not a number type", key, (int)et);
    if (!qlora__mul_ok(n, qlora__gguf_scalar_size[et], &bytes)) return QLORA__ERR(w->ctx, QLORA_ERR_RANGE, "gguf writer: '%s': array too large", key);
    QLORA__GW_SLOT(key)
    {
        qlora__buf_u32(b, QLORA_GGUF_ARRAY); qlora__buf_u32(b, (uint32_t)et); qlora__buf_u64(b, (uint64_t)n);
        qlora__buf_put(b, data, bytes);          // host order == little endian (the header assumes LE)
    }
    return qlora__gw_done(w, b);
}
QLORA__DEF qlora_result qlora_gguf_writer_set_str_arr(qlora_gguf_writer *w, const char *key, const qlora_str *v, size_t n) {
    QLORA__GW_SLOT(key)
    {
        qlora__buf_u32(b, QLORA_GGUF_ARRAY); qlora__buf_u32(b, QLORA_GGUF_STRING); qlora__buf_u64(b, (uint64_t)n);
        for (size_t i = 0; i < n; i++) qlora__buf_gstr(b, v[i].ptr ? v[i].ptr : "", v[i].len);
    }
    return qlora__gw_done(w, b);
}
// Appends the encoded value (u32 type + bytes) of kv to b; 0 when the value is malformed.
static int qlora__gw_encode_kv(qlora__buf *b, const qlora_gguf *g, const qlora_gguf_kv *kv) {
    qlora__buf_u32(b, (uint32_t)kv->type);
    if (kv->type == QLORA_GGUF_STRING) { qlora__buf_gstr(b, kv->strs[0].ptr, kv->strs[0].len); return 1; }
    if (kv->type == QLORA_GGUF_ARRAY) { qlora__buf_u32(b, (uint32_t)kv->arr_type); qlora__buf_u64(b, kv->arr_n); }
    if (kv->type == QLORA_GGUF_ARRAY && kv->arr_type == QLORA_GGUF_STRING) {
        for (uint64_t i = 0; i < kv->arr_n; i++) qlora__buf_gstr(b, kv->strs[i].ptr, kv->strs[i].len);
        return 1;
    }
    // numbers, arrays of numbers or of arrays: the raw bytes, measured with the reader's skipper
    qlora__rd r = { kv->data, g->file.data + g->file.size };
    int ok = 1;
    if (kv->type == QLORA_GGUF_ARRAY) for (uint64_t i = 0; i < kv->arr_n && ok; i++) ok = qlora__gguf_skip(&r, kv->arr_type, 1);
    else ok = qlora__gguf_skip(&r, kv->type, 0);
    if (ok) qlora__buf_put(b, kv->data, (size_t)(r.p - kv->data));
    return ok;
}
QLORA__DEF qlora_result qlora_gguf_writer_copy_kv(qlora_gguf_writer *w, const qlora_gguf *g, const qlora_gguf_kv *kv) {
    if (!g || !kv) return QLORA__ERR(w->ctx, QLORA_ERR_INVALID_ARG, "gguf writer: copy_kv: NULL argument");
    char *key = qlora__strndup(kv->key.ptr, kv->key.len);
    if (!key) return QLORA__ERR(w->ctx, QLORA_ERR_OUT_OF_MEMORY, "gguf writer: out of memory");
    qlora__buf *b;
    qlora_result r = qlora__gw_slot(w, key, &b);
    if (r == QLORA_OK) {
        if (!qlora__gw_encode_kv(b, g, kv)) r = QLORA__ERR(w->ctx, QLORA_ERR_FORMAT, "gguf writer: copy of '%s': malformed value", key);
        else r = qlora__gw_done(w, b);
    }
    QLORA__FREE(key);
    return r;
}
#undef QLORA__GW_SLOT

static qlora_result qlora__gw_add(qlora_gguf_writer *w, const char *name, qlora_type type, int n_dims,
                                  const int64_t *ne, const void *data, const qlora_tensor *src, int perm_D) {
    if (strlen(name) >= 64) return QLORA__ERR(w->ctx, QLORA_ERR_INVALID_ARG, "gguf writer: tensor name '%s' is longer than 63 bytes", name);
    if (n_dims < 1 || n_dims > 4) return QLORA__ERR(w->ctx, QLORA_ERR_INVALID_ARG, "gguf writer: tensor '%s': %d dimensions", name, n_dims);
    if (qlora__type_to_ggml(type) == 0xffffffffu)
        return QLORA__ERR(w->ctx, QLORA_ERR_UNSUPPORTED, "gguf writer: tensor '%s': type %s has no ggml id", name, qlora_type_name(type));
    for (size_t i = 0; i < w->n_t; i++)
        if (!strcmp(w->t[i].name, name)) return QLORA__ERR(w->ctx, QLORA_ERR_INVALID_ARG, "gguf writer: duplicate tensor '%s'", name);
    qlora__gw_tensor t;
    memset(&t, 0, sizeof t);
    size_t nel = 1;
    for (int d = 0; d < 4; d++) t.ne[d] = 1;
    for (int d = 0; d < n_dims; d++) {
        if (ne[d] <= 0 || !qlora__mul_ok(nel, (size_t)ne[d], &nel)) return QLORA__ERR(w->ctx, QLORA_ERR_SHAPE, "gguf writer: tensor '%s': bad dimension", name);
        t.ne[d] = ne[d];
    }
    size_t row = qlora_ggml_row_bytes(type, (size_t)ne[0]);
    if (!row || !qlora__mul_ok(row, nel / (size_t)ne[0], &t.nbytes))
        return QLORA__ERR(w->ctx, QLORA_ERR_SHAPE, "gguf writer: tensor '%s': %lld elements per row do not fit type %s", name, (long long)ne[0], qlora_type_name(type));
    if (perm_D && (n_dims > 2 || (n_dims == 2 ? ne[1] : ne[0]) % perm_D))
        return QLORA__ERR(w->ctx, QLORA_ERR_SHAPE, "gguf writer: tensor '%s': rows are not whole heads of %d", name, perm_D);
    t.type = type; t.n_dims = n_dims; t.data = data; t.src = src; t.perm_D = perm_D;
    if (w->n_t == w->cap_t) {
        size_t nc = w->cap_t ? 2 * w->cap_t : 64;
        qlora__gw_tensor *nt = (qlora__gw_tensor *)QLORA__REALLOC(w->t, nc * sizeof *nt);
        if (!nt) return QLORA__ERR(w->ctx, QLORA_ERR_OUT_OF_MEMORY, "gguf writer: out of memory");
        w->t = nt; w->cap_t = nc;
    }
    t.name = qlora__strdup(name);
    if (!t.name) return QLORA__ERR(w->ctx, QLORA_ERR_OUT_OF_MEMORY, "gguf writer: out of memory");
    w->t[w->n_t++] = t;
    return QLORA_OK;
}
QLORA__DEF qlora_result qlora_gguf_writer_add(qlora_gguf_writer *w, const char *name, qlora_type type,
                                              int n_dims, const int64_t *ne, const void *data) {
    if (!data) return QLORA__ERR(w->ctx, QLORA_ERR_INVALID_ARG, "gguf writer: tensor '%s' has no data", name);
    return qlora__gw_add(w, name, type, n_dims, ne, data, NULL, 0);
}
static qlora_result qlora__gw_add_tensor(qlora_gguf_writer *w, const char *name, qlora_type type, const qlora_tensor *src, int perm_D) {
    if (!src || !src->data) return QLORA__ERR(w->ctx, QLORA_ERR_INVALID_ARG, "gguf writer: tensor '%s' has no data", name);
    if (type != src->type && type != QLORA_TYPE_F32 && type != QLORA_TYPE_F16 && type != QLORA_TYPE_BF16)
        return QLORA__ERR(w->ctx, QLORA_ERR_UNSUPPORTED, "gguf writer: tensor '%s': cannot convert %s to %s (f32, f16, bf16 or the same type)",
                          name, qlora_type_name(src->type), qlora_type_name(type));
    int nd = src->n_dims;
    if (nd < 1) nd = 1;
    if (nd > 2 && src->ne[2] == 1 && src->ne[3] == 1) nd = 2;
    return qlora__gw_add(w, name, type, nd, src->ne, NULL, src, perm_D);
}
QLORA__DEF qlora_result qlora_gguf_writer_add_tensor(qlora_gguf_writer *w, const char *name, qlora_type type, const qlora_tensor *src) {
    return qlora__gw_add_tensor(w, name, type, src, 0);
}

// Streams one tensor: raw bytes, or rows dequantized in chunks and converted to f32/f16/bf16;
// with perm_D the rows (of a vector: the elements) go out in GGUF RoPE order.
static void qlora__gw_put_f32(qlora__ofile *o, qlora_type type, const float *x, uint16_t *h, size_t n) {
    if (type == QLORA_TYPE_F32) { qlora__ofile_put(o, x, n * 4); return; }
    for (size_t i = 0; i < n; i++) h[i] = type == QLORA_TYPE_F16 ? qlora__f32_to_fp16(x[i]) : qlora__f32_to_bf16(x[i]);
    qlora__ofile_put(o, h, n * 2);
}
static void qlora__gw_stream_tensor(qlora__ofile *o, const qlora__gw_tensor *t, float *buf, uint16_t *h, size_t chunk) {
    const qlora_tensor *src = t->src;
    int raw = t->data || (src->type == t->type && !qlora_type_is_bnb(t->type));
    if (t->data || (raw && !t->perm_D)) { qlora__ofile_put(o, t->data ? t->data : src->data, t->nbytes); return; }
    size_t ne0 = (size_t)t->ne[0], rows = qlora_tensor_nelements(src) / ne0;
    if (t->perm_D && rows == 1) {                         // a q/k bias: permute elements
        if (qlora_tensor_dequantize_rows(src, 0, 1, buf) != QLORA_OK) { o->ok = 0; return; }
        for (size_t g = 0; g < ne0 && o->ok; g++) qlora__gw_put_f32(o, t->type, buf + qlora__rope_perm_row(g, t->perm_D), h, 1);
        return;
    }
    if (t->perm_D) {                                      // q/k weight: one row at a time
        size_t rb = qlora_ggml_row_bytes(t->type, ne0);
        for (size_t g = 0; g < rows && o->ok; g++) {
            size_t sr = qlora__rope_perm_row(g, t->perm_D);
            if (raw) { qlora__ofile_put(o, (const uint8_t *)src->data + sr * rb, rb); continue; }
            if (qlora_tensor_dequantize_rows(src, sr, 1, buf) != QLORA_OK) { o->ok = 0; return; }
            qlora__gw_put_f32(o, t->type, buf, h, ne0);
        }
        return;
    }
    size_t per = QLORA__MAX((size_t)1, chunk / ne0);
    for (size_t r0 = 0; r0 < rows && o->ok; r0 += per) {
        size_t nr = QLORA__MIN(per, rows - r0);
        if (qlora_tensor_dequantize_rows(src, r0, nr, buf) != QLORA_OK) { o->ok = 0; return; }
        qlora__gw_put_f32(o, t->type, buf, h, nr * ne0);
    }
}

QLORA__DEF qlora_result qlora_gguf_writer_write(qlora_ctx *ctx, qlora_gguf_writer *w, const char *path) {
    const size_t align = 32;
    qlora__buf h = { NULL, 0, 0, 0 };
    qlora_result r;
    size_t off = 0, chunk = 0;
    for (size_t i = 0; i < w->n_t; i++) {            // data offsets, each aligned
        w->t[i].offset = off;
        if (!qlora__add_ok(off, w->t[i].nbytes, &off) || !qlora__add_ok(off, (align - off % align) % align, &off))
            return QLORA__ERR(ctx, QLORA_ERR_RANGE, "%s: tensors too large", path);
        if (w->t[i].src) chunk = QLORA__MAX(chunk, (size_t)w->t[i].ne[0]);
    }
    qlora__buf_put(&h, "GGUF", 4);
    qlora__buf_u32(&h, 3);
    qlora__buf_u64(&h, (uint64_t)w->n_t);
    qlora__buf_u64(&h, (uint64_t)w->n_kv);
    for (size_t i = 0; i < w->n_kv; i++) {
        qlora__buf_gstr(&h, w->kv[i].key, strlen(w->kv[i].key));
        qlora__buf_put(&h, w->kv[i].val.p, w->kv[i].val.n);
    }
    for (size_t i = 0; i < w->n_t; i++) {
        const qlora__gw_tensor *t = &w->t[i];
        qlora__buf_gstr(&h, t->name, strlen(t->name));
        qlora__buf_u32(&h, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++) qlora__buf_u64(&h, (uint64_t)t->ne[d]);
        qlora__buf_u32(&h, qlora__type_to_ggml(t->type));
        qlora__buf_u64(&h, t->offset);
    }
    while (h.n % align) qlora__buf_put(&h, "", 1);
    if (h.oom) { QLORA__FREE(h.p); return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", path); }
    chunk = QLORA__MAX(chunk, (size_t)65536);          // conversion scratch: >= one row, ~256 KiB
    float *buf = QLORA__CALLOC_T(float, chunk);
    uint16_t *hb = QLORA__CALLOC_T(uint16_t, chunk);
    if (!buf || !hb) { QLORA__FREE(buf); QLORA__FREE(hb); QLORA__FREE(h.p); return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", path); }
    qlora__ofile o;
    if ((r = qlora__ofile_open(ctx, path, &o)) == QLORA_OK) {
        qlora__ofile_put(&o, h.p, h.n);
        size_t pos = 0;
        for (size_t i = 0; i < w->n_t && o.ok; i++) {
            qlora__ofile_zeros(&o, (size_t)w->t[i].offset - pos);
            qlora__gw_stream_tensor(&o, &w->t[i], buf, hb, chunk);
            pos = (size_t)w->t[i].offset + w->t[i].nbytes;
        }
        qlora__ofile_zeros(&o, off - pos);
        r = qlora__ofile_close(&o, 1);
    }
    QLORA__FREE(buf);
    QLORA__FREE(hb);
    QLORA__FREE(h.p);
    return r;
}

// >>peft
// JSON exactly as Python's json.dumps(..., indent=2, sort_keys=True) prints it (ensure_ascii: non
// ASCII as \uXXXX, surrogate pairs above U+FFFF).
static void qlora__buf_pystr(qlora__buf *b, const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    qlora__buf_put(b, "\"", 1);
    while (*p) {
        unsigned c = *p, cp = c;
        int extra = 0;
        if (c >= 0xf0 && c < 0xf8) { cp = c & 7; extra = 3; }
        else if (c >= 0xe0) { cp = c & 15; extra = 2; }
        else if (c >= 0xc0) { cp = c & 31; extra = 1; }
        else if (c >= 0x80) cp = 0xfffd;                     // stray continuation byte
        p++;
        for (int k = 0; k < extra && (*p & 0xc0) == 0x80; k++) cp = (cp << 6) | (*p++ & 0x3f);
        if (cp == '"') qlora__buf_put(b, "\\\"", 2);
        else if (cp == '\\') qlora__buf_put(b, "\\\\", 2);
        else if (cp == '\n') qlora__buf_put(b, "\\n", 2);
        else if (cp == '\r') qlora__buf_put(b, "\\r", 2);
        else if (cp == '\t') qlora__buf_put(b, "\\t", 2);
        else if (cp == '\b') qlora__buf_put(b, "\\b", 2);
        else if (cp == '\f') qlora__buf_put(b, "\\f", 2);
        else if (cp < 0x20 || (cp >= 0x7f && cp < 0x10000)) qlora__buf_printf(b, "\\u%04x", cp);
        else if (cp >= 0x10000) { cp -= 0x10000; qlora__buf_printf(b, "\\u%04x\\u%04x", 0xd800 + (cp >> 10), 0xdc00 + (cp & 0x3ff)); }
        else { char ch = (char)cp; qlora__buf_put(b, &ch, 1); }
    }
    qlora__buf_put(b, "\"", 1);
}
// Shortest decimal that reads back as the same float32 (Python repr of the value PEFT would hold);
// integral values print as "16" (as_int) or "16.0".
static void qlora__buf_pyfloat(qlora__buf *b, float v, int as_int) {
    char s[48];
    if (as_int && v == floorf(v) && fabsf(v) < 1e15f) { qlora__buf_printf(b, "%lld", (long long)v); return; }
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(s, sizeof s, "%.*g", prec, (double)v);
        if (strtof(s, NULL) == v) break;
    }
    if (!strpbrk(s, ".eEn")) strcat(s, ".0");
    qlora__buf_put(b, s, strlen(s));
}

static const char *const qlora__bias_names[3] = { "none", "all", "lora_only" };

// PEFT key prefix of a module, e.g. "base_model.model.model.layers.3.self_attn.q_proj".
static void qlora__peft_key(char *buf, size_t cap, const char *prefix, int layer, qlora_module mod, const char *suffix) {
    snprintf(buf, cap, "%slayers.%d.%s.%s.%s", prefix, layer, qlora__mod_parent[mod], qlora__mod_names[mod], suffix);
}

QLORA__DEF qlora_result qlora_lora_save_peft(qlora_ctx *ctx, const qlora_lora *l, const qlora_model *m,
                                             const char *dir, const char *base_model_name) {
    const int r_ = l->cfg.r;
    size_t n_e = 3 * (size_t)l->n_mods, k = 0;
    qlora_st_entry *e = QLORA__CALLOC_T(qlora_st_entry, n_e);
    char (*names)[128] = (char (*)[128])qlora__calloc(n_e, 128);
    qlora__buf js = { NULL, 0, 0, 0 };
    qlora_result r = QLORA_OK;
    char path[4096];
    if (!e || !names) { r = QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "save adapter: out of memory"); goto done; }
    if (m && l->n_layers != m->cfg.n_layers) { r = QLORA__ERR(ctx, QLORA_ERR_SHAPE, "save adapter: adapter has %d layers, the model %d", l->n_layers, m->cfg.n_layers); goto done; }
    if (strlen(dir) > sizeof path - 64) { r = QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "save adapter: directory name too long"); goto done; }
    qlora__mkdir(dir);
    for (int i = 0; i < l->n_mods; i++) {
        const qlora_lora_module *md = &l->mods[i];
        qlora__peft_key(names[k], 128, "base_model.model.model.", md->layer, md->mod, "lora_A.weight");
        e[k].name = names[k]; e[k].dtype = "F32"; e[k].n_dims = 2; e[k].shape[0] = r_; e[k].shape[1] = md->in;
        e[k].data = md->A; e[k].nbytes = (size_t)r_ * (size_t)md->in * 4; k++;
        qlora__peft_key(names[k], 128, "base_model.model.model.", md->layer, md->mod, "lora_B.weight");
        e[k].name = names[k]; e[k].dtype = "F32"; e[k].n_dims = 2; e[k].shape[0] = md->out; e[k].shape[1] = r_;
        e[k].data = md->B; e[k].nbytes = (size_t)md->out * (size_t)r_ * 4; k++;
        if (md->bias) {      // PEFT bias="all"/"lora_only": the wrapped base layer's bias
            qlora__peft_key(names[k], 128, "base_model.model.model.", md->layer, md->mod, "base_layer.bias");
            e[k].name = names[k]; e[k].dtype = "F32"; e[k].n_dims = 1; e[k].shape[0] = md->out;
            e[k].data = md->bias;
            e[k].nbytes = (size_t)md->out * 4; k++;
        }
    }
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    if ((r = qlora_st_write(ctx, path, e, k)) != QLORA_OK) goto done;

    // adapter_config.json: every key of PEFT v0.20.0's LoraConfig, sorted, indent 2, no final newline
    qlora__buf_put(&js, "{\n", 2);
    qlora__buf_printf(&js, "  \"alora_invocation_tokens\": null,\n  \"alpha_pattern\": {},\n  \"arrow_config\": null,\n"
                           "  \"auto_mapping\": null,\n  \"base_model_name_or_path\": ");
    if (base_model_name) qlora__buf_pystr(&js, base_model_name); else qlora__buf_put(&js, "null", 4);
    qlora__buf_printf(&js, ",\n  \"bias\": \"%s\",\n", qlora__bias_names[(unsigned)l->cfg.bias < 3 ? l->cfg.bias : 0]);
    qlora__buf_printf(&js, "  \"corda_config\": null,\n  \"ensure_weight_tying\": false,\n  \"eva_config\": null,\n"
                           "  \"exclude_modules\": null,\n  \"fan_in_fan_out\": false,\n  \"inference_mode\": true,\n"
                           "  \"init_lora_weights\": true,\n  \"layer_replication\": null,\n  \"layers_pattern\": null,\n"
                           "  \"layers_to_transform\": null,\n  \"loftq_config\": {},\n  \"lora_alpha\": ");
    qlora__buf_pyfloat(&js, l->cfg.alpha, 1);
    qlora__buf_printf(&js, ",\n  \"lora_bias\": false,\n  \"lora_dropout\": ");
    qlora__buf_pyfloat(&js, l->cfg.dropout, 0);
    qlora__buf_printf(&js, ",\n  \"lora_ga_config\": null,\n  \"megatron_config\": null,\n  \"megatron_core\": \"megatron.core\",\n"
                           "  \"modules_to_save\": null,\n  \"monteclora_config\": null,\n  \"peft_type\": \"LORA\",\n"
                           "  \"peft_version\": \"0.20.0\",\n  \"qalora_group_size\": 16,\n  \"r\": %d,\n  \"rank_pattern\": {},\n"
                           "  \"revision\": null,\n  \"target_modules\": [", r_);
    for (int mod = 0, first = 1; mod < QLORA_MOD_COUNT; mod++) {
        if (!(l->cfg.target_mask & (1u << mod))) continue;
        qlora__buf_put(&js, first ? "\n    " : ",\n    ", first ? 5 : 6);
        qlora__buf_pystr(&js, qlora__mod_names[mod]);
        first = 0;
    }
    qlora__buf_printf(&js, "\n  ],\n  \"target_parameters\": null,\n  \"task_type\": \"CAUSAL_LM\",\n"
                           "  \"trainable_token_indices\": null,\n  \"use_bdlora\": null,\n  \"use_dora\": false,\n"
                           "  \"use_qalora\": false,\n  \"use_rslora\": %s,\n  \"velora_config\": null\n}",
                      l->cfg.use_rslora ? "true" : "false");
    if (js.oom) { r = QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "save adapter: out of memory"); goto done; }
    {
        const void *parts[1] = { js.p };
        size_t sizes[1] = { js.n };
        snprintf(path, sizeof path, "%s/adapter_config.json", dir);
        r = qlora__write_atomic(ctx, path, parts, sizes, 1);
    }
done:
    QLORA__FREE(names);
    QLORA__FREE(e);
    QLORA__FREE(js.p);
    return r;
}

// Module id of a PEFT target entry: "q_proj" or a full path "model.layers.0.self_attn.q_proj"
// (PEFT >= 0.15 saves all-linear that way). -1 if it names nothing qlora.h can adapt.
static int qlora__peft_module_id(const char *s, size_t n) {
    size_t b = n;
    while (b > 0 && s[b - 1] != '.') b--;
    for (int k = 0; k < QLORA_MOD_COUNT; k++)
        if (strlen(qlora__mod_names[k]) == n - b && !memcmp(s + b, qlora__mod_names[k], n - b)) return k;
    return -1;
}

// Reads a (rows, cols) F32/F16/BF16 safetensors entry (cols <= 0: a vector of rows) into dst as f32.
static qlora_result qlora__peft_read(qlora_ctx *ctx, const char *file, const qlora_st_tensor *t, int64_t rows,
                                     int64_t cols, float *dst) {
    int esz = !strcmp(t->dtype, "F32") ? 4 : (!strcmp(t->dtype, "F16") || !strcmp(t->dtype, "BF16")) ? 2 : 0;
    if (!esz) return QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s (F32, F16, BF16 are supported)", file, t->name, t->dtype);
    int ok = cols > 0 ? (t->n_dims == 2 && t->shape[0] == rows && t->shape[1] == cols) : (t->n_dims == 1 && t->shape[0] == rows);
    if (!ok) {
        char got[96] = "", want[48];
        size_t n = 0;
        for (int d = 0; d < t->n_dims && n < sizeof got - 24; d++) n += (size_t)snprintf(got + n, sizeof got - n, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
        if (cols > 0) snprintf(want, sizeof want, "%lld, %lld", (long long)rows, (long long)cols);
        else snprintf(want, sizeof want, "%lld", (long long)rows);
        return QLORA__ERR(ctx, QLORA_ERR_SHAPE, "%s: tensor '%s' has shape [%s], expected [%s] for this model and r", file, t->name, got, want);
    }
    if (cols <= 0) cols = 1;
    for (int64_t row = 0; row < rows; row++) {
        const uint8_t *p = t->data + (size_t)row * (size_t)cols * (size_t)esz;
        float *o = dst + (size_t)row * (size_t)cols;
        for (int64_t c = 0; c < cols; c++, p += esz) {
            if (esz == 4) o[c] = qlora__f32_from_bits(qlora__rd_u32(p));
            else if (t->dtype[0] == 'F') o[c] = qlora__fp16_to_f32(qlora__rd_u16(p));
            else o[c] = qlora__bf16_to_f32(qlora__rd_u16(p));
        }
    }
    return QLORA_OK;
}

QLORA__DEF qlora_result qlora_lora_load_peft(qlora_ctx *ctx, const qlora_model *m, const char *dir, qlora_lora **out) {
    char path[4096], stpath[4096], key[256];
    qlora_json *cfg = NULL;
    qlora_st *st = NULL;
    qlora_lora *l = NULL;
    char *used = NULL;
    const char *prefix = "base_model.model.model.";   // LlamaForCausalLM; bare LlamaModel: "base_model.model."
    qlora_lora_config lc;
    qlora_result r;
    *out = NULL;
    memset(&lc, 0, sizeof lc);
    if (strlen(dir) > sizeof path - 64) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "load adapter: directory name too long");
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    snprintf(stpath, sizeof stpath, "%s/adapter_model.safetensors", dir);
    if (!qlora__file_exists(path)) return QLORA__ERR(ctx, QLORA_ERR_NOT_FOUND, "%s: not found (a PEFT adapter directory holds adapter_config.json and adapter_model.safetensors)", path);
    if ((r = qlora__read_json_file(ctx, path, &cfg)) != QLORA_OK) return r;
#define QLORA__LFAIL(code, ...) do { r = QLORA__ERR(ctx, code, __VA_ARGS__); goto done; } while (0)
    if (cfg->type != QLORA_JSON_OBJECT) QLORA__LFAIL(QLORA_ERR_FORMAT, "%s: not a JSON object", path);
    {
        const char *pt = qlora_json_str(cfg, "peft_type", "LORA");
        if (strcmp(pt, "LORA")) QLORA__LFAIL(QLORA_ERR_UNSUPPORTED, "%s: peft_type '%s' (only LORA adapters are supported)", path, pt);
    }
    {   // features that change the math or the key set: refuse, loudly
        static const char *const pats[] = { "rank_pattern", "alpha_pattern" };
        for (int i = 0; i < 2; i++) {
            const qlora_json *p = qlora_json_get(cfg, pats[i]);
            if (p && p->type == QLORA_JSON_OBJECT && p->count > 0)
                QLORA__LFAIL(QLORA_ERR_UNSUPPORTED, "%s: %s is not empty: per-module ranks/alphas are not supported (one r and alpha for all modules)", path, pats[i]);
        }
        static const char *const flags[] = { "use_dora", "lora_bias", "fan_in_fan_out", "use_qalora" };
        for (int i = 0; i < 4; i++) {
            const qlora_json *p = qlora_json_get(cfg, flags[i]);
            if (p && p->type == QLORA_JSON_TRUE) QLORA__LFAIL(QLORA_ERR_UNSUPPORTED, "%s: %s = true is not supported", path, flags[i]);
        }
        static const char *const lists[] = { "layers_to_transform", "modules_to_save", "layer_replication", "trainable_token_indices", "exclude_modules" };
        for (int i = 0; i < 5; i++) {
            const qlora_json *p = qlora_json_get(cfg, lists[i]);
            if (p && p->type != QLORA_JSON_NULL && !((p->type == QLORA_JSON_ARRAY || p->type == QLORA_JSON_OBJECT) && p->count == 0))
                QLORA__LFAIL(QLORA_ERR_UNSUPPORTED, "%s: %s is set; qlora.h adapts every layer the same way and saves nothing else", path, lists[i]);
        }
    }
    {
        const qlora_json *jr = qlora_json_get(cfg, "r"), *ja = qlora_json_get(cfg, "lora_alpha");
        if (!jr || jr->type != QLORA_JSON_NUMBER || jr->num != floor(jr->num) || jr->num < 1 || jr->num > 4096)
            QLORA__LFAIL(QLORA_ERR_FORMAT, "%s: \"r\" must be an integer in [1, 4096]", path);
        lc.r = (int)jr->num;
        lc.alpha = ja ? (float)(ja->type == QLORA_JSON_NUMBER ? ja->num : NAN) : 8.0f;
        if (!(lc.alpha == lc.alpha) || !isfinite(lc.alpha)) QLORA__LFAIL(QLORA_ERR_FORMAT, "%s: \"lora_alpha\" must be a number", path);
        lc.dropout = (float)qlora_json_num(cfg, "lora_dropout", 0.0);
        const qlora_json *rs = qlora_json_get(cfg, "use_rslora");
        lc.use_rslora = rs && rs->type == QLORA_JSON_TRUE;
        const char *bias = qlora_json_str(cfg, "bias", "none");
        int bm = -1;
        for (int i = 0; i < 3; i++) if (!strcmp(bias, qlora__bias_names[i])) bm = i;
        if (bm < 0) QLORA__LFAIL(QLORA_ERR_UNSUPPORTED, "%s: bias '%s' (none, all, lora_only)", path, bias);
        lc.bias = (qlora_bias_mode)bm;
    }
    if ((r = qlora_st_open(ctx, stpath, &st)) != QLORA_OK) goto done;
    used = (char *)qlora__calloc(st->n ? st->n : 1, 1);
    if (!used) QLORA__LFAIL(QLORA_ERR_OUT_OF_MEMORY, "load adapter: out of memory");
    {   // key prefix

        int deep = 0, shallow = 0;
        for (size_t i = 0; i < st->n; i++) {
            if (!strncmp(st->tensors[i].name, "base_model.model.model.layers.", 30)) deep++;
            else if (!strncmp(st->tensors[i].name, "base_model.model.layers.", 24)) shallow++;
        }
        if (shallow > deep) prefix = "base_model.model.";
    }
    {   // target_modules: list of names / full paths, "all-linear", or a regex (then: the keys decide)
        const qlora_json *tm = qlora_json_get(cfg, "target_modules");
        unsigned mask = 0;
        if (tm && tm->type == QLORA_JSON_ARRAY) {
            for (const qlora_json *c = tm->child; c; c = c->next) {
                if (c->type != QLORA_JSON_STRING) QLORA__LFAIL(QLORA_ERR_FORMAT, "%s: target_modules must hold strings", path);
                int id = qlora__peft_module_id(c->str, c->len);
                if (id < 0)
                    QLORA__LFAIL(QLORA_ERR_UNSUPPORTED, "%s: target_modules names '%s', which qlora.h cannot adapt (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)", path, c->str);
                mask |= 1u << id;
            }
        } else if (tm && tm->type == QLORA_JSON_STRING) {
            int id = qlora__peft_module_id(tm->str, tm->len);
            if (!strcmp(tm->str, "all-linear")) mask = QLORA_MODS_ALL_LINEAR;
            else if (id >= 0 && !strchr(tm->str, '*') && !strchr(tm->str, '(')) mask = 1u << id;
            else {                                        // a regex: take the modules the file has
                for (size_t i = 0; i < st->n; i++) {
                    const char *nm = st->tensors[i].name;
                    size_t n = strlen(nm);
                    if (n > 14 && !strcmp(nm + n - 14, ".lora_A.weight")) {
                        int k = qlora__peft_module_id(nm, n - 14);
                        if (k >= 0) mask |= 1u << k;
                    }
                }
            }
        }
        if (!mask) QLORA__LFAIL(QLORA_ERR_FORMAT, "%s: target_modules is missing or selects nothing", path);
        lc.target_mask = mask;
    }
    if ((r = qlora_lora_create(ctx, m, &lc, &l)) != QLORA_OK) goto done;
    for (int i = 0; i < l->n_mods; i++) {
        qlora_lora_module *md = &l->mods[i];
        const char *sfx[3] = { "lora_A.weight", "lora_B.weight", "base_layer.bias" };
        for (int part = 0; part < 3; part++) {
            if (part == 2 && !md->bias) break;
            qlora__peft_key(key, sizeof key, prefix, md->layer, md->mod, sfx[part]);
            const qlora_st_tensor *t = qlora_st_find(st, key);
            if (!t && part == 2) {                        // older PEFT: the bias under the module itself
                qlora__peft_key(key, sizeof key, prefix, md->layer, md->mod, "bias");
                t = qlora_st_find(st, key);
            }
            if (!t) QLORA__LFAIL(QLORA_ERR_NOT_FOUND, "%s: tensor '%s' is missing (adapter_config.json targets %s in every layer)", stpath, key, qlora__mod_names[md->mod]);
            used[t - st->tensors] = 1;
            if (part == 0) r = qlora__peft_read(ctx, stpath, t, lc.r, md->in, md->A);
            else if (part == 1) r = qlora__peft_read(ctx, stpath, t, md->out, lc.r, md->B);
            else r = qlora__peft_read(ctx, stpath, t, md->out, 0, md->bias);
            if (r != QLORA_OK) goto done;
        }
    }
    for (size_t i = 0; i < st->n; i++)
        if (!used[i]) QLORA__LFAIL(QLORA_ERR_FORMAT, "%s: unexpected tensor '%s' (not a LoRA A/B of the modules adapter_config.json targets)", stpath, st->tensors[i].name);
#undef QLORA__LFAIL
    *out = l;
    l = NULL;
    r = QLORA_OK;
done:
    qlora_lora_free(l);
    QLORA__FREE(used);
    qlora_st_close(st);
    qlora_json_free(cfg);
    return r;
}

// >>gguf-lora
static const char *const qlora__mod_gguf[QLORA_MOD_COUNT] = { "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down" };

QLORA__DEF qlora_result qlora_lora_export_gguf(qlora_ctx *ctx, const qlora_lora *l, const qlora_model *m, const char *path) {
    qlora_gguf_writer *w = NULL;
    qlora_tensor *bt = NULL;
    qlora_result r;
    for (int i = 0; i < l->n_mods; i++)
        if (l->mods[i].bias)
            return QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "%s: the adapter trains biases (bias mode %s), which a llama.cpp LoRA GGUF cannot carry; merge it instead",
                              path, qlora__bias_names[l->cfg.bias]);
    if ((r = qlora_gguf_writer_create(ctx, &w)) != QLORA_OK) return r;
    // llama.cpp scales by alpha / rank (rank = lora_b.ne[0]); rsLoRA wants alpha / sqrt(r)
    float alpha = l->cfg.use_rslora ? l->cfg.alpha * sqrtf((float)l->cfg.r) : l->cfg.alpha;
    if ((r = qlora_gguf_writer_set_str(w, "general.architecture", m->arch[0] ? m->arch : "llama")) != QLORA_OK ||
        (r = qlora_gguf_writer_set_str(w, "general.type", "adapter")) != QLORA_OK ||
        (r = qlora_gguf_writer_set_str(w, "adapter.type", "lora")) != QLORA_OK ||
        (r = qlora_gguf_writer_set_f32(w, "adapter.lora.alpha", alpha)) != QLORA_OK) goto done;
    bt = QLORA__CALLOC_T(qlora_tensor, (size_t)l->n_mods);   // B viewed as tensors (q/k: written permuted)
    if (!bt) { r = QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", path); goto done; }
    for (int i = 0; i < l->n_mods && r == QLORA_OK; i++) {
        const qlora_lora_module *md = &l->mods[i];
        char name[64];
        int64_t ne_a[2] = { md->in, l->cfg.r };                   // PyTorch (r, in) reversed, same bytes
        int perm_D = (md->mod == QLORA_MOD_Q || md->mod == QLORA_MOD_K) ? m->cfg.head_dim : 0;
        snprintf(name, sizeof name, "blk.%d.%s.weight.lora_a", md->layer, qlora__mod_gguf[md->mod]);
        r = qlora_gguf_writer_add(w, name, QLORA_TYPE_F32, 2, ne_a, md->A);
        qlora__tensor_init(&bt[i], QLORA_TYPE_F32, l->cfg.r, md->out, md->B);    // ne = [r, out]
        snprintf(name, sizeof name, "blk.%d.%s.weight.lora_b", md->layer, qlora__mod_gguf[md->mod]);
        if (r == QLORA_OK) r = qlora__gw_add_tensor(w, name, QLORA_TYPE_F32, &bt[i], perm_D);
    }
    if (r == QLORA_OK) r = qlora_gguf_writer_write(ctx, w, path);
done:
    qlora_gguf_writer_free(w);
    QLORA__FREE(bt);
    return r;
}

QLORA__DEF qlora_result qlora_peft_to_gguf(qlora_ctx *ctx, const qlora_model *m, const char *peft_dir, const char *out_path) {
    qlora_lora *l = NULL;
    qlora_result r = qlora_lora_load_peft(ctx, m, peft_dir, &l);
    if (r == QLORA_OK) r = qlora_lora_export_gguf(ctx, l, m, out_path);
    qlora_lora_free(l);
    return r;
}

// >>merge
// W' = deq(W) + scaling * (B A), row by row: W'[o, :] = deq(W)[o, :] + s * sum_k B[o, k] A[k, :]
// (PEFT: w = W + (B @ A) * scaling, float32). Threads own disjoint rows (one scratch row each).
typedef struct qlora__merge_args {
    const qlora_tensor *W;
    const qlora_lora_module *md;
    int r;
    float s;
    float *dst;          // (out, in) new weight
    float *scratch;      // [nth * in]
    int failed;
} qlora__merge_args;

static void qlora__merge_task(void *arg, int ith, int nth) {
    qlora__merge_args *a = (qlora__merge_args *)arg;
    const qlora_lora_module *md = a->md;
    size_t in = (size_t)md->in, b, e;
    float *d = a->scratch + (size_t)ith * in;
    qlora__split((size_t)md->out, ith, nth, &b, &e);
    for (size_t o = b; o < e; o++) {
        float *w = a->dst + o * in;                           // (in) row o of W'
        if (qlora_tensor_dequantize_rows(a->W, o, 1, w) != QLORA_OK) { a->failed = 1; return; }
        memset(d, 0, in * sizeof(float));
        for (int k = 0; k < a->r; k++) {                      // d = B[o, :] @ A  (r x in)
            float bk = md->B[o * (size_t)a->r + (size_t)k];
            const float *ak = md->A + (size_t)k * in;
            for (size_t i = 0; i < in; i++) d[i] += bk * ak[i];
        }
        for (size_t i = 0; i < in; i++) w[i] = w[i] + d[i] * a->s;
    }
}

static qlora_tensor *qlora__module_weight_mut(qlora_model *m, int layer, qlora_module mod) {
    return (qlora_tensor *)(uintptr_t)qlora__module_weight(m, layer, mod);
}

QLORA__DEF qlora_result qlora_model_merge_lora(qlora_ctx *ctx, qlora_model *m, const qlora_lora *l) {
    if (!m || !l) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "merge: NULL model or adapter");
    if (l->n_layers != m->cfg.n_layers) return QLORA__ERR(ctx, QLORA_ERR_SHAPE, "merge: adapter has %d layers, the model %d", l->n_layers, m->cfg.n_layers);
    int nth = qlora_ctx_threads(ctx);
    for (int i = 0; i < l->n_mods; i++) {
        const qlora_lora_module *md = &l->mods[i];
        qlora_tensor *W = qlora__module_weight_mut(m, md->layer, md->mod);
        if (W->ne[0] != md->in || W->ne[1] != md->out)
            return QLORA__ERR(ctx, QLORA_ERR_SHAPE, "merge: layer %d %s: weight is [%lld, %lld], adapter [%d, %d]", md->layer,
                              qlora__mod_names[md->mod], (long long)W->ne[1], (long long)W->ne[0], md->out, md->in);
        qlora__merge_args a;
        memset(&a, 0, sizeof a);
        a.W = W; a.md = md; a.r = l->cfg.r; a.s = l->scaling;
        a.dst = QLORA__CALLOC_T(float, (size_t)md->out * (size_t)md->in);
        a.scratch = QLORA__CALLOC_T(float, (size_t)nth * (size_t)md->in);
        if (!a.dst || !a.scratch) {
            QLORA__FREE(a.dst); QLORA__FREE(a.scratch);
            return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "merge: layer %d %s: out of memory", md->layer, qlora__mod_names[md->mod]);
        }
        qlora_parallel_for(ctx, qlora__merge_task, &a);
        QLORA__FREE(a.scratch);
        if (a.failed) { QLORA__FREE(a.dst); return QLORA__ERR(ctx, QLORA_ERR_FORMAT, "merge: layer %d %s: cannot read the base weight (%s)", md->layer, qlora__mod_names[md->mod], qlora_type_name(W->type)); }
        qlora_tensor nw;
        qlora__tensor_init(&nw, QLORA_TYPE_F32, md->in, md->out, a.dst);
        nw.owns_data = 1;
        qlora_tensor_free(W);
        *W = nw;
        if (md->bias) {                                   // trained base bias replaces the frozen one
            qlora_tensor *bt = (qlora_tensor *)(uintptr_t)qlora__module_bias(m, md->layer, md->mod);
            float *nb = QLORA__CALLOC_T(float, (size_t)md->out);
            if (!nb) return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "merge: out of memory");
            memcpy(nb, md->bias, (size_t)md->out * sizeof(float));
            if (bt) qlora_tensor_free(bt);
            qlora_tensor tb;
            qlora__tensor_init(&tb, QLORA_TYPE_F32, md->out, 1, nb);
            tb.owns_data = 1;
            if (bt) *bt = tb; else { QLORA__FREE(nb); }
        }
    }
    return QLORA_OK;
}

QLORA__DEF qlora_result qlora_merge_report(qlora_ctx *ctx, const qlora_model *m, const qlora_lora *l, qlora_type type,
                                           int blocksize, int double_quant, qlora_merge_stat *stats) {
    float *a = NULL, *b = NULL;
    size_t cap = 0;
    qlora_result r = QLORA_OK;
    for (int i = 0; i < l->n_mods && r == QLORA_OK; i++) {
        const qlora_lora_module *md = &l->mods[i];
        const qlora_tensor *W = qlora__module_weight(m, md->layer, md->mod);
        qlora_tensor q;
        if ((r = qlora_tensor_quantize(W, type, blocksize, double_quant, &q)) != QLORA_OK) {
            r = QLORA__ERR(ctx, r, "merge report: layer %d %s: quantize to %s (blocksize %d): %s", md->layer, qlora__mod_names[md->mod],
                           qlora_type_name(type), blocksize, qlora_result_string(r));
            break;
        }
        size_t in = (size_t)W->ne[0], rows = (size_t)W->ne[1], per = QLORA__MAX((size_t)1, (size_t)65536 / in);
        if (per * in > cap) {
            QLORA__FREE(a); QLORA__FREE(b);
            cap = per * in;
            a = QLORA__CALLOC_T(float, cap); b = QLORA__CALLOC_T(float, cap);
            if (!a || !b) { qlora_tensor_free(&q); r = QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "merge report: out of memory"); break; }
        }
        double mx = 0, se = 0, sw = 0;
        for (size_t r0 = 0; r0 < rows && r == QLORA_OK; r0 += per) {
            size_t nr = QLORA__MIN(per, rows - r0);
            if (qlora_tensor_dequantize_rows(W, r0, nr, a) != QLORA_OK || qlora_tensor_dequantize_rows(&q, r0, nr, b) != QLORA_OK)
                r = QLORA__ERR(ctx, QLORA_ERR_FORMAT, "merge report: layer %d %s: cannot read weights", md->layer, qlora__mod_names[md->mod]);
            for (size_t j = 0; r == QLORA_OK && j < nr * in; j++) {
                double d = fabs((double)b[j] - (double)a[j]);
                if (d > mx) mx = d;
                se += d * d;
                sw += (double)a[j] * (double)a[j];
            }
        }
        qlora_tensor_free(&q);
        double n = (double)rows * (double)in;
        stats[i].layer = md->layer; stats[i].mod = md->mod;
        stats[i].max_err = mx; stats[i].rms_err = sqrt(se / n); stats[i].rms_w = sqrt(sw / n);
    }
    QLORA__FREE(a);
    QLORA__FREE(b);
    return r;
}

// >>save-gguf
// Tokenizer metadata for a model that did not come from GGUF, from the loaded tokenizer:
// SentencePiece / llama2.c -> tokenizer.ggml.model "llama" (llama2.c's ' ' written back as U+2581,
// as llama.cpp's convert-llama2c-to-ggml does), byte-level BPE -> "gpt2" with merges.
static qlora_result qlora__gguf_put_tokenizer(qlora_gguf_writer *w, const qlora_tokenizer *t, const char *chat_template) {
    qlora_result r = QLORA_OK;
    size_t n = (size_t)t->n_vocab;
    int bpe = t->algo == QLORA__ALGO_BPE;
    qlora_str *s = QLORA__CALLOC_T(qlora_str, n ? n : 1);
    char **own = (char **)qlora__calloc(n ? n : 1, sizeof(char *));
    float *sc = QLORA__CALLOC_T(float, n ? n : 1);
    int32_t *ty = QLORA__CALLOC_T(int32_t, n ? n : 1);
    if (!s || !own || !sc || !ty) { r = QLORA__ERR(w->ctx, QLORA_ERR_OUT_OF_MEMORY, "gguf tokenizer: out of memory"); goto done; }
    for (size_t i = 0; i < n; i++) {
        const char *p = qlora__strtab_str(&t->vocab, (int32_t)i);
        size_t len = qlora__strtab_len(&t->vocab, (int32_t)i), sp = 0;
        if (t->algo == QLORA__ALGO_LLAMA2C) for (size_t k = 0; k < len; k++) sp += p[k] == ' ';
        if (sp) {
            char *q = (char *)QLORA__MALLOC(len + 2 * sp + 1), *o = q;
            if (!q) { r = QLORA__ERR(w->ctx, QLORA_ERR_OUT_OF_MEMORY, "gguf tokenizer: out of memory"); goto done; }
            for (size_t k = 0; k < len; k++) {
                if (p[k] == ' ') { *o++ = (char)0xe2; *o++ = (char)0x96; *o++ = (char)0x81; } else *o++ = p[k];
            }
            own[i] = q; s[i].ptr = q; s[i].len = (size_t)(o - q);
        } else { s[i].ptr = p; s[i].len = len; }
        sc[i] = t->score ? t->score[i] : 0.0f;
        ty[i] = t->type && t->type[i] ? (int32_t)t->type[i] : (int32_t)QLORA__TT_NORMAL;
    }
    if ((r = qlora_gguf_writer_set_str(w, "tokenizer.ggml.model", bpe ? "gpt2" : "llama")) != QLORA_OK) goto done;
    if (bpe && (r = qlora_gguf_writer_set_str(w, "tokenizer.ggml.pre", t->pre == QLORA__PRE_DIGITS ? "smollm" : "gpt2")) != QLORA_OK) goto done;
    if ((r = qlora_gguf_writer_set_str_arr(w, "tokenizer.ggml.tokens", s, n)) != QLORA_OK) goto done;
    if (!bpe && (r = qlora_gguf_writer_set_arr(w, "tokenizer.ggml.scores", QLORA_GGUF_FLOAT32, sc, n)) != QLORA_OK) goto done;
    if ((r = qlora_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", QLORA_GGUF_INT32, ty, n)) != QLORA_OK) goto done;
    if (bpe) {
        size_t nm = (size_t)t->merges.n;
        qlora_str *ms = QLORA__CALLOC_T(qlora_str, nm ? nm : 1);
        if (!ms) { r = QLORA__ERR(w->ctx, QLORA_ERR_OUT_OF_MEMORY, "gguf tokenizer: out of memory"); goto done; }
        for (size_t i = 0; i < nm; i++) { ms[i].ptr = qlora__strtab_str(&t->merges, (int32_t)i); ms[i].len = qlora__strtab_len(&t->merges, (int32_t)i); }
        r = qlora_gguf_writer_set_str_arr(w, "tokenizer.ggml.merges", ms, nm);
        QLORA__FREE(ms);
        if (r != QLORA_OK) goto done;
    }
    if (t->bos >= 0 && (r = qlora_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)t->bos)) != QLORA_OK) goto done;
    if (t->eos >= 0 && (r = qlora_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)t->eos)) != QLORA_OK) goto done;
    if (t->unk >= 0 && (r = qlora_gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)t->unk)) != QLORA_OK) goto done;
    if ((r = qlora_gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", t->add_bos)) != QLORA_OK) goto done;
    if (!bpe && (r = qlora_gguf_writer_set_bool(w, "tokenizer.ggml.add_space_prefix", t->add_space_prefix)) != QLORA_OK) goto done;
    if (chat_template) r = qlora_gguf_writer_set_str(w, "tokenizer.chat_template", chat_template);
done:
    if (own) for (size_t i = 0; i < n; i++) QLORA__FREE(own[i]);
    QLORA__FREE(own); QLORA__FREE(s); QLORA__FREE(sc); QLORA__FREE(ty);
    return r;
}

QLORA__DEF qlora_result qlora_model_save_gguf(qlora_ctx *ctx, const qlora_model *m, const char *path, qlora_type type) {
    const qlora_model_config *c = &m->cfg;
    if (type != QLORA_TYPE_F32 && type != QLORA_TYPE_F16 && type != QLORA_TYPE_BF16)
        return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "%s: save type %s (f32, f16, bf16)", path, qlora_type_name(type));
    if (c->rope_scaling == QLORA_ROPE_SCALING_LLAMA3)
        return QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "%s: llama3 rope scaling needs llama.cpp's rope_freqs tensor, which qlora.h does not write yet", path);
    qlora_gguf_writer *w = NULL;
    qlora_result r = qlora_gguf_writer_create(ctx, &w);
    if (r != QLORA_OK) return r;
#define QLORA__W(x) do { if ((r = (x)) != QLORA_OK) goto done; } while (0)
    QLORA__W(qlora_gguf_writer_set_str(w, "general.architecture", "llama"));
    if (m->gguf) {
        qlora_str nm = qlora_gguf_string(m->gguf, "general.name");
        if (nm.ptr) QLORA__W(qlora_gguf_writer_copy_kv(w, m->gguf, qlora_gguf_find(m->gguf, "general.name")));
    }
    QLORA__W(qlora_gguf_writer_set_u32(w, "general.file_type", type == QLORA_TYPE_F32 ? 0u : type == QLORA_TYPE_F16 ? 1u : 32u));
    QLORA__W(qlora_gguf_writer_set_u32(w, "llama.context_length", (uint32_t)(c->max_seq_len > 0 ? c->max_seq_len : 2048)));
    QLORA__W(qlora_gguf_writer_set_u32(w, "llama.embedding_length", (uint32_t)c->dim));
    QLORA__W(qlora_gguf_writer_set_u32(w, "llama.block_count", (uint32_t)c->n_layers));
    QLORA__W(qlora_gguf_writer_set_u32(w, "llama.feed_forward_length", (uint32_t)c->hidden_dim));
    QLORA__W(qlora_gguf_writer_set_u32(w, "llama.rope.dimension_count", (uint32_t)c->rope_dim));
    QLORA__W(qlora_gguf_writer_set_u32(w, "llama.attention.head_count", (uint32_t)c->n_heads));
    QLORA__W(qlora_gguf_writer_set_u32(w, "llama.attention.head_count_kv", (uint32_t)c->n_kv_heads));
    QLORA__W(qlora_gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", c->norm_eps));
    QLORA__W(qlora_gguf_writer_set_f32(w, "llama.rope.freq_base", c->rope_theta));
    QLORA__W(qlora_gguf_writer_set_u32(w, "llama.vocab_size", (uint32_t)c->vocab_size));
    if (c->head_dim * c->n_heads != c->dim) {
        QLORA__W(qlora_gguf_writer_set_u32(w, "llama.attention.key_length", (uint32_t)c->head_dim));
        QLORA__W(qlora_gguf_writer_set_u32(w, "llama.attention.value_length", (uint32_t)c->head_dim));
    }
    if (c->rope_scaling == QLORA_ROPE_SCALING_LINEAR) {
        QLORA__W(qlora_gguf_writer_set_str(w, "llama.rope.scaling.type", "linear"));
        QLORA__W(qlora_gguf_writer_set_f32(w, "llama.rope.scaling.factor", c->rope_factor));
    }
    if (m->gguf) {                                        // tokenizer.* verbatim from the source file
        for (uint64_t i = 0; i < m->gguf->n_kv; i++) {
            const qlora_gguf_kv *kv = &m->gguf->kv[i];
            if (kv->key.len > 10 && !memcmp(kv->key.ptr, "tokenizer.", 10)) QLORA__W(qlora_gguf_writer_copy_kv(w, m->gguf, kv));
        }
    } else if (m->tok) {
        QLORA__W(qlora__gguf_put_tokenizer(w, m->tok, m->chat_template));
    }
    // matrices in `type`; 1-D norms and biases stay f32 (convert_hf_to_gguf.py prepare_tensors)
    QLORA__W(qlora_gguf_writer_add_tensor(w, "token_embd.weight", type, &m->tok_embd));
    for (int l = 0; l < c->n_layers; l++) {
        const qlora_layer *ly = &m->layers[l];
        const int D = c->head_dim;                        // q/k (weights and biases) go out in GGUF row order
        struct { const char *n; const qlora_tensor *t; int vec, perm; } spec[] = {
            { "attn_norm.weight", &ly->attn_norm, 1, 0 }, { "attn_q.weight", &ly->wq, 0, D }, { "attn_k.weight", &ly->wk, 0, D },
            { "attn_v.weight", &ly->wv, 0, 0 }, { "attn_output.weight", &ly->wo, 0, 0 }, { "attn_q.bias", &ly->bq, 1, D },
            { "attn_k.bias", &ly->bk, 1, D }, { "attn_v.bias", &ly->bv, 1, 0 }, { "ffn_norm.weight", &ly->ffn_norm, 1, 0 },
            { "ffn_gate.weight", &ly->w_gate, 0, 0 }, { "ffn_up.weight", &ly->w_up, 0, 0 }, { "ffn_down.weight", &ly->w_down, 0, 0 } };
        for (size_t i = 0; i < sizeof spec / sizeof spec[0]; i++) {
            char name[64];
            if (!spec[i].t->data) continue;               // absent bias
            snprintf(name, sizeof name, "blk.%d.%s", l, spec[i].n);
            QLORA__W(qlora__gw_add_tensor(w, name, spec[i].vec ? QLORA_TYPE_F32 : type, spec[i].t, spec[i].perm));
        }
    }
    QLORA__W(qlora_gguf_writer_add_tensor(w, "output_norm.weight", QLORA_TYPE_F32, &m->out_norm));
    if (!c->tied_embeddings) QLORA__W(qlora_gguf_writer_add_tensor(w, "output.weight", type, &m->output));
    r = qlora_gguf_writer_write(ctx, w, path);
#undef QLORA__W
done:
    qlora_gguf_writer_free(w);
    return r;
}
// >>autograd
// Training = one explicit forward/backward pair per op, llm.c style (no graph objects):
//   layer l:  h1 = rmsnorm(x)                       x1 = x + lin_o(attn(rope(lin_q h1), rope(lin_k h1), lin_v h1))
//             h2 = rmsnorm(x1)                      y  = x1 + lin_down(silu(lin_gate h2) * lin_up h2)
//   lin_m(h) = W_m h (+ b_m) + s * B_m (A_m dropout(h))      (W_m frozen, any qlora_type)
// Backward flows dL/dx through every frozen W as dX = dY W, dequantizing W block by block
// (qlora__matmul_t); only A, B (and trainable biases) receive gradients. With gradient
// checkpointing only each block's input is kept and the block is recomputed before its backward.

// dX (N, ne0) += dY (N, ne1) . W      — the backward-input product through a frozen weight (>>gemm).
static qlora_result qlora__matmul_t(qlora_ctx *ctx, const qlora_tensor *W, const float *dY, size_t N, float *dX, int bf16) {
    return qlora__gemm_w(ctx, W, 0, dY, (size_t)W->ne[1], N, dX, (size_t)W->ne[0], 1, bf16);
}
static qlora_result qlora__matmul_t_f32(qlora_ctx *ctx, const float *W, int K, int O, const float *dY, size_t N, float *dX) {
    return qlora__gemm_f32(ctx, dY, (size_t)O, W, (size_t)O, (size_t)K, 0, N, dX, (size_t)K, 1);
}

// out (cols, rows) = alpha * in (rows, cols)^T
static void qlora__transpose(float *out, const float *in, size_t rows, size_t cols, float alpha) {
    for (size_t r0 = 0; r0 < rows; r0 += 16)
        for (size_t c = 0; c < cols; c++)
            for (size_t r = r0; r < QLORA__MIN(rows, r0 + 16); r++) out[c * rows + r] = alpha * in[r * cols + c];
}

// LoRA weight gradients, both as GEMMs over the N tokens with the small rank on the M side:
//   dA (r, in)  += dlu^T (r, N) . hin (N, in)
//   dB (out, r) += s * dy^T lu = (s * lu^T (r, N) . dy (N, out))^T     (wt: r * (N + out) floats)
static qlora_result qlora__wgrad_a(qlora_ctx *ctx, float *dA, const float *dlu, const float *hin, int N, int in, int r, float *wt) {
    qlora__transpose(wt, dlu, (size_t)N, (size_t)r, 1.0f);
    return qlora__gemm_f32(ctx, wt, (size_t)N, hin, (size_t)N, (size_t)in, 0, (size_t)r, dA, (size_t)in, 1);
}
static qlora_result qlora__wgrad_b(qlora_ctx *ctx, float *dB, const float *dy, const float *lu, int N, int out, int r, float s, float *wt) {
    float *c = wt + (size_t)r * N;
    qlora__transpose(wt, lu, (size_t)N, (size_t)r, s);
    qlora_result res = qlora__gemm_f32(ctx, wt, (size_t)N, dy, (size_t)N, (size_t)out, 0, (size_t)r, c, (size_t)out, 0);
    if (res != QLORA_OK) return res;
    for (int o = 0; o < out; o++)
        for (int j = 0; j < r; j++) dB[(size_t)o * r + j] += c[(size_t)j * out + o];
    return QLORA_OK;
}

// ---- per-layer activations ---------------------------------------------------------------------
typedef struct qlora__acts {
    float *rstd1, *h1;          // (N) (N, C)
    float *q, *k, *v;           // (N, qd) (N, kvd) (N, kvd)   q, k after RoPE
    float *lse;                 // (B, H, T) logsumexp of each attention row (flash attention)
    float *o;                   // (N, qd) attention output (input of o_proj)
    float *x1, *rstd2, *h2;     // (N, C) (N) (N, C)
    float *g, *u, *mm;          // (N, F) gate pre-activation, up, silu(g)*u (input of down_proj)
    float *lu[QLORA_MOD_COUNT]; // (N, r) LoRA intermediate A dropout(h), NULL if no adapter
} qlora__acts;

struct qlora_train {
    const qlora_model *m;
    qlora_lora *lora;
    int B, T, N, ckpt, r, bf16;
    int C, F, H, Hkv, D, qd, kvd, V;
    float *xs;                  // (L + 1, N, C) block inputs; xs[L] = final residual
    qlora__acts *acts;          // [L] (or [1] with checkpointing)
    float *arena;               // one block holding every activation buffer
    size_t arena_floats;
    // scratch
    float *dx, *dres;           // (N, C)
    float *dq, *dk, *dv, *dO;   // (N, qd) (N, kvd) (N, kvd) (N, qd)
    float *dg, *du;             // (N, F)
    float *dh;                  // (N, max(C, F, qd))
    float *tmp;                 // (N, max(qd, F, C)) lora branch output
    float *hd;                  // (N, max(C, F, qd)) dropout(h)
    float *dlu;                 // (N, r)
    float *wt;                  // (r, N + max(C, F, qd)) LoRA weight-gradient scratch
    float *rope_cos, *rope_sin; // (T, rope_dim / 2) rotation of position t, pair i
    const struct qlora_kernels *ctx_kern;   // the ctx's kernels (set by each forward)
    double *rowloss;            // (chunk) per-token losses of a logits chunk
    float *rstdf, *hf;          // (N) (N, C) final norm
    float *dhf;                 // (N, C)
    float *lchunk;              // (chunk, V) logits chunk
    float *normw;               // (C) f32 copy of a norm weight
    int chunk;
    float grad_scale;
    uint64_t seed;
    int have_grad;
};

static size_t qlora__acts_floats(const qlora_train *t) {
    size_t N = (size_t)t->N, n = 0;
    n += N + N * t->C;                                   // rstd1 h1
    n += N * t->qd + 2 * N * t->kvd;                     // q k v
    n += (size_t)t->B * t->H * t->T;                     // lse
    n += N * t->qd;                                      // o
    n += N * t->C + N + N * t->C;                        // x1 rstd2 h2
    n += 3 * N * t->F;                                   // g u mm
    if (t->lora) n += (size_t)QLORA_MOD_COUNT * N * t->r;
    return n;
}

static size_t qlora__train_scratch_floats(const qlora_train *t) {
    size_t N = (size_t)t->N, mx = (size_t)QLORA__MAX(t->C, QLORA__MAX(t->F, t->qd));
    return 2 * N * t->C + 2 * N * t->qd + 2 * N * t->kvd + 2 * N * t->F + 3 * N * mx +
           N * (size_t)(t->r > 0 ? t->r : 1) + N + 2 * N * t->C + (size_t)t->chunk * t->V + (size_t)t->C +
           (size_t)(t->r > 0 ? t->r : 1) * (N + mx) + 2 * (size_t)t->T * (size_t)(t->m->cfg.rope_dim / 2) + 2 * (size_t)t->chunk + 1;
}

static void qlora__train_dims(qlora_train *t, const qlora_model *m, const qlora_lora *l, const qlora_train_config *cfg) {
    const qlora_model_config *c = &m->cfg;
    t->m = m;
    t->B = cfg->batch; t->T = cfg->seq_len; t->N = t->B * t->T; t->ckpt = cfg->grad_checkpointing; t->bf16 = cfg->bf16;
    t->C = c->dim; t->F = c->hidden_dim; t->H = c->n_heads; t->Hkv = c->n_kv_heads; t->D = c->head_dim;
    t->qd = t->H * t->D; t->kvd = t->Hkv * t->D; t->V = c->vocab_size;
    t->r = l ? l->cfg.r : 0;
    t->lora = (qlora_lora *)(uintptr_t)l;
    // lm_head + loss run over chunks of tokens: ~64 MiB of logits per chunk (at least 64 tokens),
    // so the head's weights are streamed (and dequantized) a few times per step, not N / 64 times
    t->chunk = QLORA__MIN(t->N, QLORA__MAX(64, (int)(((size_t)1 << 26) / (4 * (size_t)QLORA__MAX(t->V, 1)) / 64 * 64)));
}

static void qlora__train_kernel_plan(const qlora_ctx *ctx, const qlora_train *t, size_t *per_thread, size_t *abuf);

QLORA__DEF void qlora_train_memory(const qlora_ctx *ctx, const qlora_model *m, const qlora_lora *l, const qlora_train_config *cfg, qlora_train_memory_plan *plan) {
    qlora_train t;
    memset(&t, 0, sizeof t);
    qlora__train_dims(&t, m, l, cfg);
    size_t pt, ab;
    qlora__train_kernel_plan(ctx, &t, &pt, &ab);
    plan->kernels = 4 * (pt * (size_t)(ctx ? ctx->n_threads : 1) + ab);
    size_t L = (size_t)m->cfg.n_layers;
    plan->activations = 4 * ((L + 1) * (size_t)t.N * t.C + (t.ckpt ? 1 : L) * qlora__acts_floats(&t));
    plan->scratch = 4 * qlora__train_scratch_floats(&t);
    plan->lora = l ? 2 * 4 * l->n_params : 0;
    plan->total = plan->activations + plan->scratch + plan->lora + plan->kernels;
}

QLORA__DEF void qlora_train_free(qlora_train *t) {
    if (!t) return;
    QLORA__FREE(t->arena);
    QLORA__FREE(t->acts);
    QLORA__FREE(t);
}

QLORA__DEF qlora_result qlora_train_create(qlora_ctx *ctx, const qlora_model *m, qlora_lora *l, const qlora_train_config *cfg, qlora_train **out) {
    *out = NULL;
    if (!cfg || cfg->batch <= 0 || cfg->seq_len <= 1 || cfg->batch > 4096 || cfg->seq_len > 65536)
        return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "train: batch %d x seq_len %d is not a valid shape", cfg ? cfg->batch : 0, cfg ? cfg->seq_len : 0);
    if (l && l->n_layers != m->cfg.n_layers) return QLORA__ERR(ctx, QLORA_ERR_SHAPE, "train: adapter has %d layers, model %d", l->n_layers, m->cfg.n_layers);
    qlora_train *t = QLORA__CALLOC_T(qlora_train, 1);
    if (!t) return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "train: out of memory");
    qlora__train_dims(t, m, l, cfg);
    size_t L = (size_t)m->cfg.n_layers, na = t->ckpt ? 1 : L, af = qlora__acts_floats(t);
    size_t total = (L + 1) * (size_t)t->N * t->C + na * af + qlora__train_scratch_floats(t);
    t->acts = QLORA__CALLOC_T(qlora__acts, na);
    t->arena = QLORA__CALLOC_T(float, total);
    if (!t->acts || !t->arena) {
        qlora_train_free(t);
        return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "train: %zu MiB of activations do not fit in memory (try --gradient-checkpointing or a smaller batch)", total * 4 >> 20);
    }
    t->arena_floats = total;
    float *p = t->arena;
    size_t N = (size_t)t->N, mx = (size_t)QLORA__MAX(t->C, QLORA__MAX(t->F, t->qd));
#define QLORA__CARVE(dst, n) do { (dst) = p; p += (n); } while (0)
    QLORA__CARVE(t->xs, (L + 1) * N * t->C);
    for (size_t i = 0; i < na; i++) {
        qlora__acts *a = &t->acts[i];
        QLORA__CARVE(a->rstd1, N); QLORA__CARVE(a->h1, N * t->C);
        QLORA__CARVE(a->q, N * t->qd); QLORA__CARVE(a->k, N * t->kvd); QLORA__CARVE(a->v, N * t->kvd);
        QLORA__CARVE(a->lse, (size_t)t->B * t->H * t->T);
        QLORA__CARVE(a->o, N * t->qd);
        QLORA__CARVE(a->x1, N * t->C); QLORA__CARVE(a->rstd2, N); QLORA__CARVE(a->h2, N * t->C);
        QLORA__CARVE(a->g, N * t->F); QLORA__CARVE(a->u, N * t->F); QLORA__CARVE(a->mm, N * t->F);
        if (l) for (int k = 0; k < QLORA_MOD_COUNT; k++) QLORA__CARVE(a->lu[k], N * t->r);
    }
    QLORA__CARVE(t->dx, N * t->C); QLORA__CARVE(t->dres, N * t->C);
    QLORA__CARVE(t->dq, N * t->qd); QLORA__CARVE(t->dO, N * t->qd);
    QLORA__CARVE(t->dk, N * t->kvd); QLORA__CARVE(t->dv, N * t->kvd);
    QLORA__CARVE(t->dg, N * t->F); QLORA__CARVE(t->du, N * t->F);
    QLORA__CARVE(t->dh, N * mx); QLORA__CARVE(t->tmp, N * mx); QLORA__CARVE(t->hd, N * mx);
    QLORA__CARVE(t->dlu, N * (size_t)(t->r > 0 ? t->r : 1));
    QLORA__CARVE(t->rstdf, N); QLORA__CARVE(t->hf, N * t->C); QLORA__CARVE(t->dhf, N * t->C);
    QLORA__CARVE(t->lchunk, (size_t)t->chunk * t->V);
    QLORA__CARVE(t->normw, (size_t)t->C);
    QLORA__CARVE(t->wt, (size_t)(t->r > 0 ? t->r : 1) * (N + mx));
    int half = m->cfg.rope_dim / 2;
    QLORA__CARVE(t->rope_cos, (size_t)t->T * half); QLORA__CARVE(t->rope_sin, (size_t)t->T * half);
    if ((size_t)(p - t->arena) & 1) p++;                   // 8-byte alignment for the doubles
    t->rowloss = (double *)(void *)p; p += 2 * (size_t)t->chunk;
    for (int pos = 0; pos < t->T; pos++) {
        float pp = (float)pos;
        if (m->cfg.rope_scaling == QLORA_ROPE_SCALING_LINEAR && m->cfg.rope_factor > 0) pp /= m->cfg.rope_factor;
        for (int i = 0; i < half; i++) {
            float ang = pp * qlora__rope_freq(&m->cfg, i);
            t->rope_cos[(size_t)pos * half + i] = cosf(ang);
            t->rope_sin[(size_t)pos * half + i] = sinf(ang);
        }
    }
#undef QLORA__CARVE
    QLORA_ASSERT((size_t)(p - t->arena) <= total);
    size_t pt, ab;                            // kernel working memory, planned before step 1 too
    qlora__train_kernel_plan(ctx, t, &pt, &ab);
    qlora_result r = qlora__scratch_reserve(ctx, pt);
    if (r == QLORA_OK && ab) r = qlora__abuf_reserve(ctx, ab);
    if (r != QLORA_OK) { qlora_train_free(t); return r; }
    *out = t;
    return QLORA_OK;
}

// ---- ops: forward / backward pairs, threaded over rows (tokens) ----------------------------------
// Every elementwise op works on a range of rows [r0, r1), so qlora__par_rows can hand each thread
// its own rows: each row is computed the same way whatever the split (thread-count independent).
typedef struct qlora__rows qlora__rows;
struct qlora__rows {
    void (*fn)(const qlora__rows *j, size_t r0, size_t r1);
    size_t n;                              // rows
    float *y, *rs;                         // output rows, per-row scalar (rstd)
    const float *a, *b, *c;                // inputs
    int C, T, heads, D;                    // row width / sequence / heads / head dim
    int acc;                               // dropout: accumulate into y (the backward)
    float f;                               // eps, sign, scale, p ...
    uint64_t seed;
    const qlora_train *t;
    const int32_t *lab;                    // cross-entropy: labels, first row, per-row loss out
    size_t off;
    double *dl;
};
static void qlora__rows_task(void *arg, int ith, int nth) {
    const qlora__rows *j = (const qlora__rows *)arg;
    size_t b, e;
    qlora__split(j->n, ith, nth, &b, &e);
    if (b < e) j->fn(j, b, e);
}
static void qlora__par_rows(qlora_ctx *ctx, qlora__rows *j) {
    if (j->n < 8) j->fn(j, 0, j->n);
    else qlora_parallel_for(ctx, qlora__rows_task, j);
}

// rmsnorm with saved 1/rms: y = w * x * rstd          (a = x, b = w, rs = rstd, f = eps)
static void qlora__rmsnorm_fwd_rows(const qlora__rows *j, size_t r0, size_t r1) {
    int C = j->C;
    for (size_t n = r0; n < r1; n++) {
        const float *xn = j->a + n * (size_t)C;
        float ss = 0.0f;
        for (int i = 0; i < C; i++) ss += xn[i] * xn[i];
        float r = 1.0f / sqrtf(ss / (float)C + j->f);
        j->rs[n] = r;
        for (int i = 0; i < C; i++) j->y[n * (size_t)C + i] = j->b[i] * (xn[i] * r);
    }
}
static void qlora__rmsnorm_fwd(qlora_ctx *ctx, float *out, float *rstd, const float *x, const float *w, int N, int C, float eps) {
    qlora__rows j;
    memset(&j, 0, sizeof j);
    j.fn = qlora__rmsnorm_fwd_rows; j.n = (size_t)N; j.y = out; j.rs = rstd; j.a = x; j.b = w; j.C = C; j.f = eps;
    qlora__par_rows(ctx, &j);
}
// dx += rstd * (w*dy) - x * rstd^3 * mean(w*dy*x)      (w frozen: no dw)   (a = dy, b = x, c = w)
static void qlora__rmsnorm_bwd_rows(const qlora__rows *j, size_t r0, size_t r1) {
    int C = j->C;
    for (size_t n = r0; n < r1; n++) {
        const float *xn = j->b + n * (size_t)C, *g = j->a + n * (size_t)C, *w = j->c;
        float r = j->rs[n], dot = 0.0f;
        for (int i = 0; i < C; i++) dot += w[i] * g[i] * xn[i];
        float k = dot * r * r * r / (float)C;
        for (int i = 0; i < C; i++) j->y[n * (size_t)C + i] += r * w[i] * g[i] - k * xn[i];
    }
}
static void qlora__rmsnorm_bwd(qlora_ctx *ctx, float *dx, const float *dy, const float *x, const float *w, const float *rstd, int N, int C) {
    qlora__rows j;
    memset(&j, 0, sizeof j);
    j.fn = qlora__rmsnorm_bwd_rows; j.n = (size_t)N; j.y = dx; j.rs = (float *)(uintptr_t)rstd; j.a = dy; j.b = x; j.c = w; j.C = C;
    qlora__par_rows(ctx, &j);
}

// rope on (N, heads*D) rows (rotate_half pairs i, i + rope_dim/2), position of row n = n % T, with
// the (T, rope_dim/2) cos/sin table of the train state; f = +1 forward, -1 backward (the
// transpose of a rotation is the rotation by -angle).
static void qlora__rope_rows_fn(const qlora__rows *j, size_t r0, size_t r1) {
    int half = j->t->m->cfg.rope_dim / 2, D = j->D, heads = j->heads;
    for (size_t n = r0; n < r1; n++) {
        const float *cs = j->t->rope_cos + (n % (size_t)j->T) * (size_t)half, *sn = j->t->rope_sin + (n % (size_t)j->T) * (size_t)half;
        float *row = j->y + n * (size_t)heads * D;
        for (int h = 0; h < heads; h++) {
            float *v = row + (size_t)h * D;
            for (int i = 0; i < half; i++) {
                float x0 = v[i], x1 = v[i + half], s = j->f * sn[i];
                v[i] = x0 * cs[i] - x1 * s;
                v[i + half] = x0 * s + x1 * cs[i];
            }
        }
    }
}
static void qlora__rope_rows(qlora_ctx *ctx, const qlora_train *t, float *x, int heads, float sign) {
    qlora__rows j;
    memset(&j, 0, sizeof j);
    j.fn = qlora__rope_rows_fn; j.n = (size_t)t->N; j.y = x; j.T = t->T; j.heads = heads; j.D = t->D; j.f = sign; j.t = t;
    qlora__par_rows(ctx, &j);
}

// y += a (+ f * b when b): residual adds and the LoRA branch, rows of C
static void qlora__add_rows(const qlora__rows *j, size_t r0, size_t r1) {
    size_t C = (size_t)j->C;
    float *y = j->y + r0 * C;
    const float *a = j->a ? j->a + r0 * C : NULL, *b = j->b ? j->b + r0 * C : NULL;
    for (size_t i = 0; i < (r1 - r0) * C; i++) {
        float v = y[i];
        if (a) v += a[i];
        if (b) v += j->f * b[i];
        y[i] = v;
    }
}
static void qlora__add(qlora_ctx *ctx, float *y, const float *a, const float *b, float f, int N, int C) {
    qlora__rows j;
    memset(&j, 0, sizeof j);
    j.fn = qlora__add_rows; j.n = (size_t)N; j.y = y; j.a = a; j.b = b; j.f = f; j.C = C;
    qlora__par_rows(ctx, &j);
}

// SwiGLU: forward y = silu(a) * b; backward (c = dmm): y = du, rs = dg
// (exp(-g) by the dispatched exp kernel into the output row first)
static void qlora__swiglu_fwd_rows(const qlora__rows *j, size_t r0, size_t r1) {
    size_t i0 = r0 * (size_t)j->C, n = (r1 - r0) * (size_t)j->C;
    j->t->ctx_kern->vexp(j->a + i0, j->y + i0, n, -1.0f, 0.0f);
    for (size_t i = i0; i < i0 + n; i++) {
        float g = j->a[i];
        j->y[i] = g / (1.0f + j->y[i]) * j->b[i];
    }
}
static void qlora__swiglu_bwd_rows(const qlora__rows *j, size_t r0, size_t r1) {
    size_t i0 = r0 * (size_t)j->C, n = (r1 - r0) * (size_t)j->C;
    j->t->ctx_kern->vexp(j->a + i0, j->y + i0, n, -1.0f, 0.0f);
    for (size_t i = i0; i < i0 + n; i++) {
        float g = j->a[i], sg = 1.0f / (1.0f + j->y[i]), dmm = j->c[i];
        j->y[i] = dmm * g * sg;
        j->rs[i] = dmm * j->b[i] * sg * (1.0f + g * (1.0f - sg));
    }
}

// Fused softmax cross-entropy of logits rows a (V = C wide) against the shifted labels: dl[i] =
// logsumexp - logit[y] (NAN where the target is -100); with f = grad_scale != 0, y = f * (softmax -
// onehot) (may alias a; rows without a target get zeros). exp in float, sums in double.
static void qlora__ce_rows(const qlora__rows *j, size_t r0, size_t r1) {
    size_t V = (size_t)j->C;
    for (size_t i = r0; i < r1; i++) {
        size_t n = j->off + i;
        int tpos = (int)(n % (size_t)j->T);
        int32_t y = tpos + 1 < j->T ? j->lab[n + 1] : -100;      // shift: t predicts label t + 1
        const float *row = j->a + i * V;
        float *d = j->y + i * V;
        if (y < 0) { j->dl[i] = NAN; if (j->f != 0.0f) memset(d, 0, V * sizeof(float)); continue; }
        float mx = row[0], ry = row[y];
        for (size_t v = 1; v < V; v++) if (row[v] > mx) mx = row[v];
        double se = j->t->ctx_kern->vexp(row, d, V, 1.0f, -mx);   // d is scratch (or the row itself)
        if (j->f != 0.0f) {
            float k = (float)((double)j->f / se);
            for (size_t v = 0; v < V; v++) d[v] *= k;
            d[y] -= j->f;
        }
        j->dl[i] = (double)mx + log(se) - (double)ry;
    }
}

// LoRA dropout (dispatched kernel, counter hash over the element index row * C + col), so the
// forward, the recompute and the backward drop the same elements: y = dropout(a) (acc = 0) or
// y += dropout'(a) (acc = 1, the backward through the mask).
static void qlora__dropout_rows(const qlora__rows *j, size_t r0, size_t r1) {
    size_t C = (size_t)j->C;
    j->t->ctx_kern->dropout(j->a + r0 * C, j->y + r0 * C, (r1 - r0) * C, (uint32_t)(r0 * C), j->seed, j->f, j->acc);
}
static void qlora__dropout(qlora_ctx *ctx, const qlora_train *t, float *y, const float *x, int C, float p, uint64_t seed, int acc) {
    qlora__rows j;
    memset(&j, 0, sizeof j);
    j.fn = qlora__dropout_rows; j.n = (size_t)t->N; j.y = y; j.a = x; j.C = C; j.f = p; j.seed = seed; j.acc = acc; j.t = t;
    qlora__par_rows(ctx, &j);
}
static uint64_t qlora__dropout_seed(const qlora_train *t, int layer, qlora_module mod) {
    return qlora__mix64(t->seed ^ ((uint64_t)(layer * QLORA_MOD_COUNT + mod) << 48));
}

// LoRA linear: y (N, out) = h W^T (+ b) + s * (dropout(h) A^T) B^T; saves lu = dropout(h) A^T.
static qlora_result qlora__lin_fwd(qlora_ctx *ctx, qlora_train *t, int layer, qlora_module mod, const float *h, int in,
                                   float *y, float *lu) {
    const qlora_model *m = t->m;
    qlora_lora_module *md = t->lora ? qlora_lora_get(t->lora, layer, mod) : NULL;
    const qlora_tensor *W = qlora__module_weight(m, layer, mod);
    int out = (int)W->ne[1];
    qlora_result r = qlora__gemm_w(ctx, W, 1, h, (size_t)in, (size_t)t->N, y, (size_t)out, 0, t->bf16);
    if (r != QLORA_OK) return r;
    const qlora_tensor *bt = qlora__module_bias(m, layer, mod);
    const float *bias = md && md->bias ? md->bias : bt ? (const float *)bt->data : NULL;
    if (bias) for (int n = 0; n < t->N; n++) qlora__axpy(y + (size_t)n * out, bias, 1.0f, (size_t)out);
    if (!md) return QLORA_OK;
    const float *hin = h;
    float p = t->lora->cfg.dropout;
    if (p > 0) {
        qlora__dropout(ctx, t, t->hd, h, in, p, qlora__dropout_seed(t, layer, mod), 0);
        hin = t->hd;
    }
    if ((r = qlora__gemm_f32(ctx, hin, (size_t)in, md->A, (size_t)in, (size_t)t->r, 1, (size_t)t->N, lu, (size_t)t->r, 0)) != QLORA_OK) return r;
    float s = t->lora->scaling;                                   // y += (s lu) B^T, accumulated in place
    for (size_t i = 0; i < (size_t)t->N * t->r; i++) t->dlu[i] = s * lu[i];
    return qlora__gemm_f32(ctx, t->dlu, (size_t)t->r, md->B, (size_t)t->r, (size_t)out, 1, (size_t)t->N, y, (size_t)out, 1);
}

// Backward of the LoRA linear: dh (N, in) += dy W + s*(dy B) A ⊙ mask; grads of A, B, bias.
static qlora_result qlora__lin_bwd(qlora_ctx *ctx, qlora_train *t, int layer, qlora_module mod, const float *h, int in,
                                   const float *dy, const float *lu, float *dh) {
    const qlora_model *m = t->m;
    const qlora_tensor *W = qlora__module_weight(m, layer, mod);
    int out = (int)W->ne[1];
    qlora_result r = qlora__matmul_t(ctx, W, dy, (size_t)t->N, dh, t->bf16);
    qlora_lora_module *md = t->lora ? qlora_lora_get(t->lora, layer, mod) : NULL;
    if (r != QLORA_OK || !md) return r;
    float s = t->lora->scaling, p = t->lora->cfg.dropout;
    if (md->dbias)
        for (int n = 0; n < t->N; n++) for (int o = 0; o < out; o++) md->dbias[o] += dy[(size_t)n * out + o];
    if ((r = qlora__wgrad_b(ctx, md->dB, dy, lu, t->N, out, t->r, s, t->wt)) != QLORA_OK) return r;   // dB += s dy^T lu
    memset(t->dlu, 0, (size_t)t->N * t->r * sizeof(float));
    if ((r = qlora__matmul_t_f32(ctx, md->B, t->r, out, dy, (size_t)t->N, t->dlu)) != QLORA_OK) return r;   // dlu = dy B
    for (size_t i = 0; i < (size_t)t->N * t->r; i++) t->dlu[i] *= s;
    const float *hin = h;
    if (p > 0) {
        qlora__dropout(ctx, t, t->hd, h, in, p, qlora__dropout_seed(t, layer, mod), 0);
        hin = t->hd;
    }
    if ((r = qlora__wgrad_a(ctx, md->dA, t->dlu, hin, t->N, in, t->r, t->wt)) != QLORA_OK) return r;   // dA += dlu^T dropout(h)
    if (p <= 0) return qlora__matmul_t_f32(ctx, md->A, in, t->r, t->dlu, (size_t)t->N, dh);
    memset(t->tmp, 0, (size_t)t->N * in * sizeof(float));                     // d dropout(h) = dlu A
    if ((r = qlora__matmul_t_f32(ctx, md->A, in, t->r, t->dlu, (size_t)t->N, t->tmp)) != QLORA_OK) return r;
    qlora__dropout(ctx, t, dh, t->tmp, in, p, qlora__dropout_seed(t, layer, mod), 1);   // dh += mask * keep * tmp
    return QLORA_OK;
}

// ---- causal attention, flash style: tiles of QLORA__ATT_BLK queries x keys through the GEMM
// micro-kernel, online softmax; only the per-row logsumexp is saved (no T x T matrix), and the
// backward recomputes each tile's probabilities from it (FlashAttention-2, Dao 2023).
// Threads own (batch, kv head) pairs, so the GQA heads that share dK/dV rows never race.
#define QLORA__ATT_BLK 64

// C (M x nw) [+]= A (M x kc) . panel, on the calling thread
static void qlora__gemm_serial(const qlora_ctx *ctx, const float *A, size_t lda, const float *panel, size_t kc, size_t nw,
                               size_t M, float *C, size_t ldc, int acc) {
    size_t mr = (size_t)ctx->kern->mr, nr = (size_t)ctx->kern->nr;
    for (size_t i = 0; i < M; i += mr)
        for (size_t s = 0; s * nr < nw; s++)
            ctx->kern->gemm(kc, A + i * lda, lda, panel + s * kc * nr, C + i * ldc + s * nr, ldc,
                            (int)QLORA__MIN(mr, M - i), (int)QLORA__MIN(nr, nw - s * nr), acc);
}

typedef struct qlora__att_job { qlora_train *t; qlora__acts *a; int backward; const qlora_ctx *ctx; } qlora__att_job;

static size_t qlora__att_scratch(const qlora_train *t, size_t nr) {
    size_t B = QLORA__ATT_BLK, Dp = ((size_t)t->D + nr - 1) / nr * nr, Bp = (B + nr - 1) / nr * nr;
    return 4 * B * B + B * Dp + 2 * B + (size_t)t->T + 2 * (size_t)t->D * Bp + 3 * B * Dp + 64;
}

static void qlora__attention_fwd_head(const qlora__att_job *j, float *ws, int b, int h) {
    const qlora_train *t = j->t;
    const qlora__acts *a = j->a;
    size_t T = (size_t)t->T, D = (size_t)t->D, qd = (size_t)t->qd, kvd = (size_t)t->kvd, BL = QLORA__ATT_BLK;
    size_t nr = (size_t)j->ctx->kern->nr, Dp = (D + nr - 1) / nr * nr, Bp = (BL + nr - 1) / nr * nr;
    int kvh = h / (t->H / t->Hkv);
    float scale = 1.0f / sqrtf((float)D);
    const float *Q = a->q + (size_t)b * T * qd + (size_t)h * D, *K = a->k + (size_t)b * T * kvd + (size_t)kvh * D;
    const float *V = a->v + (size_t)b * T * kvd + (size_t)kvh * D;
    float *O = a->o + (size_t)b * T * qd + (size_t)h * D, *lse = a->lse + ((size_t)b * t->H + h) * T;
    float *S = ws, *Oacc = S + BL * BL, *mrow = Oacc + BL * Dp, *lrow = mrow + BL, *pk = lrow + BL, *pv = pk + D * Bp;
    for (size_t q0 = 0; q0 < T; q0 += BL) {
        size_t nq = QLORA__MIN(BL, T - q0);
        for (size_t i = 0; i < nq; i++) { mrow[i] = -INFINITY; lrow[i] = 0.0f; }
        memset(Oacc, 0, nq * D * sizeof(float));
        for (size_t k0 = 0; k0 < q0 + nq; k0 += BL) {
            size_t nk = QLORA__MIN(BL, T - k0);
            qlora__pack_nt(pk, K, kvd, k0, nk, 0, D, nr);
            qlora__gemm_serial(j->ctx, Q + q0 * qd, qd, pk, D, nk, nq, S, BL, 0);      // S = Q K^T
            for (size_t i = 0; i < nq; i++) {
                float *row = S + i * BL;
                size_t qi = q0 + i, valid = qi >= k0 ? QLORA__MIN(nk, qi - k0 + 1) : 0;
                if (valid == 0) { memset(row, 0, nk * sizeof(float)); continue; }
                float mx = mrow[i];
                for (size_t c = 0; c < valid; c++) { row[c] *= scale; if (row[c] > mx) mx = row[c]; }
                float corr = mrow[i] == -INFINITY ? 0.0f : expf(mrow[i] - mx);
                float sum = (float)j->ctx->kern->vexp(row, row, valid, 1.0f, -mx);
                for (size_t c = valid; c < nk; c++) row[c] = 0.0f;
                lrow[i] = lrow[i] * corr + sum;
                mrow[i] = mx;
                if (corr != 1.0f) for (size_t d = 0; d < D; d++) Oacc[i * D + d] *= corr;
            }
            qlora__pack_nn(pv, V, kvd, k0, nk, 0, D, nr);
            qlora__gemm_serial(j->ctx, S, BL, pv, nk, D, nq, Oacc, D, 1);               // Oacc += P V
        }
        for (size_t i = 0; i < nq; i++) {
            float inv = 1.0f / lrow[i];
            for (size_t d = 0; d < D; d++) O[(q0 + i) * qd + d] = Oacc[i * D + d] * inv;
            lse[q0 + i] = mrow[i] + logf(lrow[i]);
        }
    }
}

static void qlora__attention_bwd_head(const qlora__att_job *j, float *ws, int b, int h) {
    const qlora_train *t = j->t;
    const qlora__acts *a = j->a;
    size_t T = (size_t)t->T, D = (size_t)t->D, qd = (size_t)t->qd, kvd = (size_t)t->kvd, BL = QLORA__ATT_BLK;
    size_t nr = (size_t)j->ctx->kern->nr, Dp = (D + nr - 1) / nr * nr, Bp = (BL + nr - 1) / nr * nr;
    int kvh = h / (t->H / t->Hkv);
    float scale = 1.0f / sqrtf((float)D);
    size_t qoff = (size_t)b * T * qd + (size_t)h * D, koff = (size_t)b * T * kvd + (size_t)kvh * D;
    const float *Q = a->q + qoff, *K = a->k + koff, *V = a->v + koff, *O = a->o + qoff, *dO = t->dO + qoff;
    float *dQ = t->dq + qoff, *dK = t->dk + koff, *dV = t->dv + koff;
    const float *lse = a->lse + ((size_t)b * t->H + h) * T;
    float *S = ws, *dP = S + BL * BL, *PT = dP + BL * BL, *dST = PT + BL * BL, *Dv = dST + BL * BL;
    float *pkT = Dv + T, *pvT = pkT + D * Bp, *pk = pvT + D * Bp, *pdo = pk + BL * Dp, *pq = pdo + BL * Dp;
    for (size_t i = 0; i < T; i++) {                        // Dv_i = dO_i . O_i  (= sum_j P_ij dP_ij)
        float d = 0.0f;
        for (size_t c = 0; c < D; c++) d += dO[i * qd + c] * O[i * qd + c];
        Dv[i] = d;
    }
    for (size_t k0 = 0; k0 < T; k0 += BL) {
        size_t nk = QLORA__MIN(BL, T - k0);
        qlora__pack_nt(pkT, K, kvd, k0, nk, 0, D, nr);
        qlora__pack_nt(pvT, V, kvd, k0, nk, 0, D, nr);
        qlora__pack_nn(pk, K, kvd, k0, nk, 0, D, nr);
        for (size_t q0 = k0 / BL * BL; q0 < T; q0 += BL) {
            size_t nq = QLORA__MIN(BL, T - q0);
            qlora__gemm_serial(j->ctx, Q + q0 * qd, qd, pkT, D, nk, nq, S, BL, 0);    // S  = Q K^T
            qlora__gemm_serial(j->ctx, dO + q0 * qd, qd, pvT, D, nk, nq, dP, BL, 0);  // dP = dO V^T
            for (size_t i = 0; i < nq; i++) {
                size_t qi = q0 + i, valid = qi >= k0 ? QLORA__MIN(nk, qi - k0 + 1) : 0;
                float *srow = S + i * BL;
                j->ctx->kern->vexp(srow, srow, valid, scale, -lse[qi]);    // P = exp(S scale - lse)
                for (size_t c = 0; c < nk; c++) {
                    float p = c < valid ? srow[c] : 0.0f, ds = c < valid ? p * (dP[i * BL + c] - Dv[qi]) * scale : 0.0f;
                    dP[i * BL + c] = ds;
                    PT[c * BL + i] = p;
                    dST[c * BL + i] = ds;
                }
            }
            qlora__pack_nn(pdo, dO, qd, q0, nq, 0, D, nr);
            qlora__gemm_serial(j->ctx, PT, BL, pdo, nq, D, nk, dV + k0 * kvd, kvd, 1);    // dV += P^T dO
            qlora__pack_nn(pq, Q, qd, q0, nq, 0, D, nr);
            qlora__gemm_serial(j->ctx, dST, BL, pq, nq, D, nk, dK + k0 * kvd, kvd, 1);    // dK += dS^T Q
            qlora__gemm_serial(j->ctx, dP, BL, pk, nk, D, nq, dQ + q0 * qd, qd, 1);       // dQ += dS K
        }
    }
}

static void qlora__attention_task(void *arg, int ith, int nth) {
    const qlora__att_job *j = (const qlora__att_job *)arg;
    const qlora_train *t = j->t;
    int grp = t->H / t->Hkv;
    float *ws = j->ctx->scratch + (size_t)ith * j->ctx->scratch_floats;
    size_t b0, e0;
    qlora__split((size_t)t->B * t->Hkv, ith, nth, &b0, &e0);
    for (size_t bk = b0; bk < e0; bk++) {
        int b = (int)(bk / (size_t)t->Hkv), kvh = (int)(bk % (size_t)t->Hkv);
        for (int h = kvh * grp; h < (kvh + 1) * grp; h++) {
            if (j->backward) qlora__attention_bwd_head(j, ws, b, h);
            else qlora__attention_fwd_head(j, ws, b, h);
        }
    }
}
static qlora_result qlora__attention(qlora_ctx *ctx, qlora_train *t, qlora__acts *a, int backward) {
    qlora__att_job aj = { t, a, backward, ctx };
    qlora_result r = qlora__scratch_reserve(ctx, qlora__att_scratch(t, (size_t)ctx->kern->nr));
    if (r != QLORA_OK) return r;
    qlora_parallel_for(ctx, qlora__attention_task, &aj);
    return QLORA_OK;
}

// Kernel working memory of a step, planned before step 1: the per-thread GEMM panels (the largest
// over every product of the step) and attention tiles, and the bf16 copy of the widest activation
// operand (--bf16). qlora_train_create reserves both, so no step allocates.
static void qlora__train_kernel_plan(const qlora_ctx *ctx, const qlora_train *t, size_t *per_thread, size_t *abuf) {
    const qlora_model *m = t->m;
    size_t sc = 0, ab = 0, N = (size_t)t->N;
    int bf = t->bf16;
    qlora__gemm_job j;
    qlora_tensor w;
#define QLORA__PLAN(W_, trans_, bf16_, M_) do { \
        qlora__gemm_setup(ctx, (W_), (trans_), (bf16_), &j); \
        sc = QLORA__MAX(sc, qlora__gemm_scratch(&j)); \
        if (bf16_) ab = QLORA__MAX(ab, (size_t)(M_) * j.lda16); \
    } while (0)
#define QLORA__PLAN_F32(ne0_, rows_, trans_) do { \
        qlora__tensor_init(&w, QLORA_TYPE_F32, (ne0_), (rows_), NULL); w.n_dims = 2; \
        QLORA__PLAN(&w, (trans_), 0, N); \
    } while (0)
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int k = 0; k < QLORA_MOD_COUNT; k++) {
            const qlora_tensor *W = qlora__module_weight(m, l, (qlora_module)k);
            if (!W || !W->data || W->ne[0] <= 0) continue;
            QLORA__PLAN(W, 1, bf, N);
            QLORA__PLAN(W, 0, bf, N);
            if (!t->lora || !qlora_lora_get(t->lora, l, (qlora_module)k)) continue;
            int64_t in = W->ne[0], out = W->ne[1], r = t->r;
            QLORA__PLAN_F32(in, r, 1); QLORA__PLAN_F32(in, r, 0);         // A: forward, dh += dlu A
            QLORA__PLAN_F32(r, out, 1); QLORA__PLAN_F32(r, out, 0);       // B: forward, dlu = dy B
            QLORA__PLAN_F32(in, (int64_t)N, 0); QLORA__PLAN_F32(out, (int64_t)N, 0);   // dA, dB
        }
    if (m->output.data) { QLORA__PLAN(&m->output, 1, bf, t->chunk); QLORA__PLAN(&m->output, 0, bf, t->chunk); }
#undef QLORA__PLAN
#undef QLORA__PLAN_F32
    int nr;
    qlora_ctx_gemm(ctx, NULL, &nr, NULL);
    *per_thread = QLORA__MAX(sc, qlora__att_scratch(t, (size_t)nr));
    *abuf = ab;
}

static const float *qlora__norm_w(qlora_train *t, const qlora_tensor *w) {
    return qlora__as_f32(w, t->normw);
}

// Forward of block l from xs[l] into xs[l+1], saving activations in a.
static qlora_result qlora__block_fwd(qlora_ctx *ctx, qlora_train *t, int l, qlora__acts *a) {
    const qlora_model *m = t->m;
    const qlora_layer *ly = &m->layers[l];
    const qlora_model_config *c = &m->cfg;
    size_t NC = (size_t)t->N * t->C;
    const float *x = t->xs + (size_t)l * NC;
    float *y = t->xs + (size_t)(l + 1) * NC;
    qlora_result r;
    const float *w = qlora__norm_w(t, &ly->attn_norm);
    if (!w) return QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "layer %d: attn_norm type", l);
    qlora__rmsnorm_fwd(ctx, a->h1, a->rstd1, x, w, t->N, t->C, c->norm_eps);
    if ((r = qlora__lin_fwd(ctx, t, l, QLORA_MOD_Q, a->h1, t->C, a->q, a->lu[QLORA_MOD_Q])) != QLORA_OK) return r;
    if ((r = qlora__lin_fwd(ctx, t, l, QLORA_MOD_K, a->h1, t->C, a->k, a->lu[QLORA_MOD_K])) != QLORA_OK) return r;
    if ((r = qlora__lin_fwd(ctx, t, l, QLORA_MOD_V, a->h1, t->C, a->v, a->lu[QLORA_MOD_V])) != QLORA_OK) return r;
    qlora__rope_rows(ctx, t, a->q, t->H, 1.0f);
    qlora__rope_rows(ctx, t, a->k, t->Hkv, 1.0f);
    if ((r = qlora__attention(ctx, t, a, 0)) != QLORA_OK) return r;
    if ((r = qlora__lin_fwd(ctx, t, l, QLORA_MOD_O, a->o, t->qd, a->x1, a->lu[QLORA_MOD_O])) != QLORA_OK) return r;
    qlora__add(ctx, a->x1, x, NULL, 0.0f, t->N, t->C);
    w = qlora__norm_w(t, &ly->ffn_norm);
    if (!w) return QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "layer %d: ffn_norm type", l);
    qlora__rmsnorm_fwd(ctx, a->h2, a->rstd2, a->x1, w, t->N, t->C, c->norm_eps);
    if ((r = qlora__lin_fwd(ctx, t, l, QLORA_MOD_GATE, a->h2, t->C, a->g, a->lu[QLORA_MOD_GATE])) != QLORA_OK) return r;
    if ((r = qlora__lin_fwd(ctx, t, l, QLORA_MOD_UP, a->h2, t->C, a->u, a->lu[QLORA_MOD_UP])) != QLORA_OK) return r;
    qlora__rows sw;
    memset(&sw, 0, sizeof sw);
    sw.fn = qlora__swiglu_fwd_rows; sw.n = (size_t)t->N; sw.C = t->F; sw.y = a->mm; sw.a = a->g; sw.b = a->u; sw.t = t;
    qlora__par_rows(ctx, &sw);
    if ((r = qlora__lin_fwd(ctx, t, l, QLORA_MOD_DOWN, a->mm, t->F, y, a->lu[QLORA_MOD_DOWN])) != QLORA_OK) return r;
    qlora__add(ctx, y, a->x1, NULL, 0.0f, t->N, t->C);
    return QLORA_OK;
}

// Backward of block l: t->dx holds dL/dxs[l+1] on entry and dL/dxs[l] on exit.
static qlora_result qlora__block_bwd(qlora_ctx *ctx, qlora_train *t, int l, qlora__acts *a) {
    const qlora_model *m = t->m;
    const qlora_layer *ly = &m->layers[l];
    size_t N = (size_t)t->N, NC = N * t->C;
    const float *x = t->xs + (size_t)l * NC;
    // MLP: y = x1 + down(mm); dres = dL/dx1 starts as dy
    memcpy(t->dres, t->dx, NC * sizeof(float));
    memset(t->dh, 0, N * t->F * sizeof(float));
    qlora_result r;
    if ((r = qlora__lin_bwd(ctx, t, l, QLORA_MOD_DOWN, a->mm, t->F, t->dx, a->lu[QLORA_MOD_DOWN], t->dh)) != QLORA_OK) return r;   // dh = dmm
    qlora__rows sw;
    memset(&sw, 0, sizeof sw);
    sw.fn = qlora__swiglu_bwd_rows; sw.n = (size_t)t->N; sw.C = t->F; sw.y = t->du; sw.rs = t->dg; sw.a = a->g; sw.b = a->u; sw.c = t->dh; sw.t = t;
    qlora__par_rows(ctx, &sw);
    memset(t->dh, 0, NC * sizeof(float));
    if ((r = qlora__lin_bwd(ctx, t, l, QLORA_MOD_GATE, a->h2, t->C, t->dg, a->lu[QLORA_MOD_GATE], t->dh)) != QLORA_OK) return r;
    if ((r = qlora__lin_bwd(ctx, t, l, QLORA_MOD_UP, a->h2, t->C, t->du, a->lu[QLORA_MOD_UP], t->dh)) != QLORA_OK) return r;
    const float *w = qlora__norm_w(t, &ly->ffn_norm);
    if (!w) return QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "layer %d: ffn_norm type", l);
    qlora__rmsnorm_bwd(ctx, t->dres, t->dh, a->x1, w, a->rstd2, t->N, t->C);            // dres = dL/dx1
    // attention: x1 = x + o_proj(att); dx = dres + ...
    memcpy(t->dx, t->dres, NC * sizeof(float));
    memset(t->dO, 0, N * t->qd * sizeof(float));
    if ((r = qlora__lin_bwd(ctx, t, l, QLORA_MOD_O, a->o, t->qd, t->dres, a->lu[QLORA_MOD_O], t->dO)) != QLORA_OK) return r;
    memset(t->dq, 0, N * t->qd * sizeof(float));
    memset(t->dk, 0, N * t->kvd * sizeof(float));
    memset(t->dv, 0, N * t->kvd * sizeof(float));
    if ((r = qlora__attention(ctx, t, a, 1)) != QLORA_OK) return r;
    qlora__rope_rows(ctx, t, t->dq, t->H, -1.0f);
    qlora__rope_rows(ctx, t, t->dk, t->Hkv, -1.0f);
    memset(t->dh, 0, NC * sizeof(float));
    if ((r = qlora__lin_bwd(ctx, t, l, QLORA_MOD_Q, a->h1, t->C, t->dq, a->lu[QLORA_MOD_Q], t->dh)) != QLORA_OK) return r;
    if ((r = qlora__lin_bwd(ctx, t, l, QLORA_MOD_K, a->h1, t->C, t->dk, a->lu[QLORA_MOD_K], t->dh)) != QLORA_OK) return r;
    if ((r = qlora__lin_bwd(ctx, t, l, QLORA_MOD_V, a->h1, t->C, t->dv, a->lu[QLORA_MOD_V], t->dh)) != QLORA_OK) return r;
    w = qlora__norm_w(t, &ly->attn_norm);
    if (!w) return QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "layer %d: attn_norm type", l);
    qlora__rmsnorm_bwd(ctx, t->dx, t->dh, x, w, a->rstd1, t->N, t->C);
    return QLORA_OK;
}

QLORA__DEF qlora_result qlora_train_forward(qlora_ctx *ctx, qlora_train *t, const int32_t *tokens, const int32_t *labels,
                                            float grad_scale, uint64_t dropout_seed, double *loss_sum, int *n_targets, float *logits) {
    const qlora_model *m = t->m;
    size_t N = (size_t)t->N, NC = N * t->C;
    int V = t->V;
    qlora_result r;
    *loss_sum = 0; *n_targets = 0;
    t->seed = dropout_seed;
    t->ctx_kern = ctx->kern;
    t->grad_scale = grad_scale;
    t->have_grad = 0;
    for (size_t n = 0; n < N; n++) {
        if (tokens[n] < 0 || tokens[n] >= V) return QLORA__ERR(ctx, QLORA_ERR_RANGE, "train: token id %d at position %zu out of range [0, %d)", tokens[n], n, V);
        if ((r = qlora_tensor_dequantize_rows(&m->tok_embd, (size_t)tokens[n], 1, t->xs + n * t->C)) != QLORA_OK) return r;
    }
    for (int l = 0; l < m->cfg.n_layers; l++)
        if ((r = qlora__block_fwd(ctx, t, l, &t->acts[t->ckpt ? 0 : l])) != QLORA_OK) return r;
    const float *xl = t->xs + (size_t)m->cfg.n_layers * NC;
    const float *w = qlora__norm_w(t, &m->out_norm);
    if (!w) return QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "output_norm type");
    qlora__rmsnorm_fwd(ctx, t->hf, t->rstdf, xl, w, t->N, t->C, m->cfg.norm_eps);
    memset(t->dhf, 0, NC * sizeof(float));
    // lm_head + cross-entropy in chunks of tokens: the (N, V) logits never exist at once
    double total = 0;
    int cnt = 0;
    for (size_t n0 = 0; n0 < N; n0 += (size_t)t->chunk) {
        size_t nc = QLORA__MIN((size_t)t->chunk, N - n0);
        float *lg = logits ? logits + n0 * V : t->lchunk;
        if ((r = qlora__gemm_w(ctx, &m->output, 1, t->hf + n0 * t->C, (size_t)t->C, nc, lg, (size_t)V, 0, t->bf16)) != QLORA_OK) return r;
        if (!labels) continue;
        int any = 0;
        for (size_t i = 0; i < nc; i++) {                          // validate the targets first
            size_t n = n0 + i;
            int32_t y = (int)(n % (size_t)t->T) + 1 < t->T ? labels[n + 1] : -100;
            if (y == -100) continue;
            if (y < 0 || y >= V) return QLORA__ERR(ctx, QLORA_ERR_RANGE, "train: label %d at position %zu out of range", y, n + 1);
            any = 1;
        }
        if (!any) continue;
        qlora__rows ce;
        memset(&ce, 0, sizeof ce);
        ce.fn = qlora__ce_rows; ce.n = nc; ce.C = V; ce.T = t->T; ce.a = lg; ce.y = t->lchunk; ce.f = grad_scale; ce.t = t;
        ce.lab = labels; ce.off = n0; ce.dl = t->rowloss;
        qlora__par_rows(ctx, &ce);
        for (size_t i = 0; i < nc; i++)                            // in order: the same sum for any thread count
            if ((int)((n0 + i) % (size_t)t->T) + 1 < t->T && labels[n0 + i + 1] != -100) { total += t->rowloss[i]; cnt++; }
        if (grad_scale != 0)
            if ((r = qlora__matmul_t(ctx, &m->output, t->lchunk, nc, t->dhf + n0 * t->C, t->bf16)) != QLORA_OK) return r;
    }
    if (!isfinite(total)) return QLORA__ERR(ctx, QLORA_ERR_NUMERIC, "train: loss is not finite (NaN/Inf)");
    *loss_sum = total;
    *n_targets = cnt;
    t->have_grad = grad_scale != 0 && labels != NULL;
    return QLORA_OK;
}

QLORA__DEF qlora_result qlora_train_backward(qlora_ctx *ctx, qlora_train *t) {
    const qlora_model *m = t->m;
    size_t NC = (size_t)t->N * t->C;
    qlora_result r;
    if (!t->have_grad) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "train: backward needs a forward with labels and grad_scale != 0");
    t->ctx_kern = ctx->kern;
    memset(t->dx, 0, NC * sizeof(float));
    const float *w = qlora__norm_w(t, &m->out_norm);
    if (!w) return QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "output_norm type");
    qlora__rmsnorm_bwd(ctx, t->dx, t->dhf, t->xs + (size_t)m->cfg.n_layers * NC, w, t->rstdf, t->N, t->C);
    for (int l = m->cfg.n_layers - 1; l >= 0; l--) {
        qlora__acts *a = &t->acts[t->ckpt ? 0 : l];
        if (t->ckpt) {                    // recompute block l from its saved input (same dropout masks)
            if ((r = qlora__block_fwd(ctx, t, l, a)) != QLORA_OK) return r;
        }
        if ((r = qlora__block_bwd(ctx, t, l, a)) != QLORA_OK) return r;
    }
    t->have_grad = 0;
    return QLORA_OK;
}

// >>trainer
#if !defined(_WIN32)
#include <dirent.h>
#include <time.h>
#endif

static double qlora__now(void) {
#if !defined(_WIN32)
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
#else
    return (double)clock() / CLOCKS_PER_SEC;
#endif
}

// Deletes a checkpoint directory (flat: files only).
static void qlora__rmtree_flat(const char *dir) {
#if !defined(_WIN32)
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[4096];
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        remove(p);
    }
    closedir(d);
    rmdir(dir);
#else
    (void)dir;
#endif
}

// checkpoint-N directories of dir, sorted by N ascending (up to cap); returns the count.
static int qlora__list_checkpoints(const char *dir, long *steps, int cap) {
    int n = 0;
#if !defined(_WIN32)
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char *end;
        if (strncmp(e->d_name, "checkpoint-", 11) != 0) continue;
        long s = strtol(e->d_name + 11, &end, 10);
        if (*end || s < 0 || end == e->d_name + 11) continue;
        if (n < cap) steps[n++] = s;
    }
    closedir(d);
    for (int i = 1; i < n; i++)                         // insertion sort: a handful of entries
        for (int j = i; j > 0 && steps[j - 1] > steps[j]; j--) { long t = steps[j]; steps[j] = steps[j - 1]; steps[j - 1] = t; }
#else
    (void)dir; (void)steps; (void)cap;
#endif
    return n;
}

QLORA__DEF qlora_result qlora_find_last_checkpoint(qlora_ctx *ctx, const char *dir, char *buf, size_t cap) {
    long steps[1024];
    int n = qlora__list_checkpoints(dir, steps, 1024);
    if (n == 0) return QLORA__ERR(ctx, QLORA_ERR_NOT_FOUND, "%s: no checkpoint-N directory to resume from", dir);
    snprintf(buf, cap, "%s/checkpoint-%ld", dir, steps[n - 1]);
    return QLORA_OK;
}

static qlora_result qlora__write_text(qlora_ctx *ctx, const char *path, const char *text, size_t n) {
    const void *parts[1] = { text };
    size_t sizes[1] = { n };
    return qlora__write_atomic(ctx, path, parts, sizes, 1);
}

static void qlora__append_line(const char *path, const char *line) {
    FILE *f = fopen(path, "ab");
    if (!f) return;
    fputs(line, f);
    fclose(f);
}

// Rows of a batch that the loader did not fill (end of an epoch) become padding.
static void qlora__batch_pad_rows(qlora_batch *b, int rows, int B, int T, int32_t pad) {
    for (int r = rows; r < B; r++)
        for (int t = 0; t < T; t++) { b->ids[r * T + t] = pad; b->labels[r * T + t] = QLORA_IGNORE_INDEX; }
}
// Targets after the causal shift: label[t+1] != -100 for t < T-1 in every row.
static size_t qlora__batch_targets(const qlora_batch *b, int B, int T) {
    size_t n = 0;
    for (int r = 0; r < B; r++)
        for (int t = 1; t < T; t++) n += b->labels[r * T + t] != QLORA_IGNORE_INDEX;
    return n;
}

QLORA__DEF qlora_result qlora_eval_dataset(qlora_ctx *ctx, const qlora_model *m, const qlora_lora *l,
                                           const qlora_dataset *ds, int B, int T, double *mean_loss, size_t *n_targets) {
    qlora_train_config tc = { B, T, 0, 0 };
    qlora_train *t = NULL;
    qlora_data_loader L;
    qlora_batch b;
    memset(&L, 0, sizeof L);
    memset(&b, 0, sizeof b);
    double sum = 0;
    size_t cnt = 0;
    qlora_result r = qlora_train_create(ctx, m, (qlora_lora *)(uintptr_t)l, &tc, &t);
    if (r == QLORA_OK) r = qlora_loader_init(ctx, &L, ds, B, 0, 0, 0);
    if (r == QLORA_OK) r = qlora_batch_init(ctx, &b, B, T);
    if (r == QLORA_OK) {
        L.pad_to_max = 1;
        int rows;
        while ((rows = qlora_loader_next(&L, &b)) > 0) {
            double ls; int n;
            qlora__batch_pad_rows(&b, rows, B, T, ds->pad_id);
            if ((r = qlora_train_forward(ctx, t, b.ids, b.labels, 0.0f, 0, &ls, &n, NULL)) != QLORA_OK) break;
            sum += ls;
            cnt += (size_t)n;
        }
    }
    qlora_batch_free(&b);
    qlora_loader_free(&L);
    qlora_train_free(t);
    *mean_loss = cnt ? sum / (double)cnt : 0;
    if (n_targets) *n_targets = cnt;
    return r;
}

typedef struct qlora__trainer {
    qlora_ctx *ctx;
    const qlora_model *m;
    qlora_lora *l;
    const qlora_trainer_config *cfg;
    qlora_optim *opt;
    qlora_data_loader *L;
    int64_t step, total;
    double epoch;
} qlora__trainer;

static qlora_result qlora__save_checkpoint(qlora__trainer *tr, char *out_dir, size_t cap) {
    qlora_ctx *ctx = tr->ctx;
    const qlora_trainer_config *cfg = tr->cfg;
    char tmp[4096], dst[4096], path[4200];
    qlora_result r;
    qlora__mkdir(cfg->output_dir);
    snprintf(tmp, sizeof tmp, "%s/.tmp-checkpoint-%lld", cfg->output_dir, (long long)tr->step);
    snprintf(dst, sizeof dst, "%s/checkpoint-%lld", cfg->output_dir, (long long)tr->step);
    qlora__rmtree_flat(tmp);                              // left over from a crash
    qlora__mkdir(tmp);
    if ((r = qlora_lora_save_peft(ctx, tr->l, tr->m, tmp, cfg->base_model_name)) != QLORA_OK) return r;
    size_t ne = qlora_optim_state_entries(tr->opt, NULL, 0);
    qlora_st_entry *e = QLORA__CALLOC_T(qlora_st_entry, ne ? ne : 1);
    if (!e) return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "checkpoint: out of memory");
    qlora_optim_state_entries(tr->opt, e, ne);
    snprintf(path, sizeof path, "%s/optimizer.safetensors", tmp);
    r = qlora_st_write(ctx, path, e, ne);
    QLORA__FREE(e);
    if (r != QLORA_OK) return r;
    qlora_data_cursor c = qlora_loader_cursor(tr->L);
    char js[1024];
    int n = snprintf(js, sizeof js,
        "{\n  \"format\": \"qlora.h trainer_state 1\",\n  \"global_step\": %lld,\n  \"max_steps\": %lld,\n"
        "  \"epoch\": %.6f,\n  \"seed\": \"%llu\",\n  \"cursor_epoch\": \"%llu\",\n  \"cursor_pos\": \"%llu\",\n"
        "  \"cursor_seed\": \"%llu\",\n  \"cursor_rows\": \"%llu\",\n  \"learning_rate\": %.9g,\n  \"optim\": \"%s\"\n}\n",
        (long long)tr->step, (long long)tr->total, tr->epoch, (unsigned long long)cfg->seed,
        (unsigned long long)c.epoch, (unsigned long long)c.pos, (unsigned long long)c.seed, (unsigned long long)c.rows,
        cfg->learning_rate, qlora_optim_kind_name(cfg->optim.kind));
    snprintf(path, sizeof path, "%s/trainer_state.json", tmp);
    if ((r = qlora__write_text(ctx, path, js, (size_t)n)) != QLORA_OK) return r;
    qlora__rmtree_flat(dst);                              // same step saved again (after a resume)
    if (rename(tmp, dst) != 0) return QLORA__ERR(ctx, QLORA_ERR_IO, "%s: cannot rename to %s", tmp, dst);
    if (cfg->save_total_limit > 0) {                      // rotate: drop the oldest beyond the limit
        long steps[1024];
        int k = qlora__list_checkpoints(cfg->output_dir, steps, 1024);
        for (int i = 0; i + cfg->save_total_limit < k; i++) {
            snprintf(path, sizeof path, "%s/checkpoint-%ld", cfg->output_dir, steps[i]);
            qlora__rmtree_flat(path);
        }
    }
    if (out_dir) snprintf(out_dir, cap, "%s", dst);
    return QLORA_OK;
}

static uint64_t qlora__json_u64(const qlora_json *j, const char *key, int *ok) {
    const char *s = qlora_json_str(j, key, NULL);
    if (!s) { *ok = 0; return 0; }
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || end == s) *ok = 0;
    return (uint64_t)v;
}

// Loads everything from dir first and only then changes the lora, optimizer and loader.
static qlora_result qlora__load_checkpoint(qlora__trainer *tr, const char *dir) {
    qlora_ctx *ctx = tr->ctx;
    char path[4200];
    qlora_json *js = NULL;
    qlora_st *ost = NULL;
    qlora_lora *tmp = NULL;
    qlora_result r;
    snprintf(path, sizeof path, "%s/trainer_state.json", dir);
    if ((r = qlora__read_json_file(ctx, path, &js)) != QLORA_OK) return r;
    int ok = 1;
    int64_t step = (int64_t)qlora_json_num(js, "global_step", -1);
    qlora_data_cursor c;
    c.epoch = qlora__json_u64(js, "cursor_epoch", &ok);
    c.pos = qlora__json_u64(js, "cursor_pos", &ok);
    c.seed = qlora__json_u64(js, "cursor_seed", &ok);
    c.rows = qlora__json_u64(js, "cursor_rows", &ok);
    if (!ok || step < 0 || strcmp(qlora_json_str(js, "format", ""), "qlora.h trainer_state 1") != 0) {
        r = QLORA__ERR(ctx, QLORA_ERR_FORMAT, "%s: not a qlora.h trainer state (global_step / cursor fields missing or malformed)", path);
        goto done;
    }
    if ((r = qlora_lora_load_peft(ctx, tr->m, dir, &tmp)) != QLORA_OK) goto done;
    if (tmp->n_params != tr->l->n_params || tmp->cfg.r != tr->l->cfg.r || tmp->cfg.target_mask != tr->l->cfg.target_mask) {
        r = QLORA__ERR(ctx, QLORA_ERR_SHAPE, "%s: the checkpoint's adapter (r %d, %zu params) does not match this run (r %d, %zu params)",
                       dir, tmp->cfg.r, tmp->n_params, tr->l->cfg.r, tr->l->n_params);
        goto done;
    }
    for (size_t i = 0; i < tmp->n_params; i++)
        if (!isfinite(tmp->params[i])) { r = QLORA__ERR(ctx, QLORA_ERR_NUMERIC, "%s: adapter holds non-finite values", dir); goto done; }
    snprintf(path, sizeof path, "%s/optimizer.safetensors", dir);
    if ((r = qlora_st_open(ctx, path, &ost)) != QLORA_OK) goto done;
    {   // cursor first (validates against the dataset), optimizer next (validates before changing)
        qlora_data_cursor old = qlora_loader_cursor(tr->L);
        if ((r = qlora_loader_restore(ctx, tr->L, c)) != QLORA_OK) goto done;
        if ((r = qlora_optim_load_state(tr->opt, ost)) != QLORA_OK) {
            qlora_loader_restore(ctx, tr->L, old);
            r = QLORA__ERR(ctx, r, "%s: %s", path, qlora_ctx_error(ctx));
            goto done;
        }
    }
    memcpy(tr->l->params, tmp->params, tmp->n_params * sizeof(float));
    tr->step = step;
done:
    qlora_lora_free(tmp);
    qlora_st_close(ost);
    qlora_json_free(js);
    return r;
}

static void qlora__emit(const qlora_trainer_config *cfg, qlora_train_event *ev) {
    if (cfg->on_event) cfg->on_event(cfg->user, ev);
}

QLORA__DEF qlora_result qlora_trainer_run(qlora_ctx *ctx, const qlora_model *m, qlora_lora *l,
                                          const qlora_dataset *train, const qlora_dataset *eval,
                                          const qlora_trainer_config *cfg_in, qlora_train_summary *out) {
    qlora_trainer_config cfg = *cfg_in;
    qlora_train_summary sum;
    memset(&sum, 0, sizeof sum);
    sum.first_eval_loss = sum.last_eval_loss = NAN;
    if (cfg.batch <= 0) cfg.batch = 4;
    if (cfg.seq_len <= 0) cfg.seq_len = 256;
    if (cfg.grad_accum <= 0) cfg.grad_accum = 1;
    if (cfg.num_epochs <= 0) cfg.num_epochs = 3;
    if (cfg.learning_rate <= 0) cfg.learning_rate = 2e-4;
    if (cfg.max_grad_norm == 0) cfg.max_grad_norm = 1.0;
    if (cfg.logging_steps <= 0) cfg.logging_steps = 10;
    if (cfg.seed == 0) cfg.seed = 42;
    if (!cfg.output_dir) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "trainer: output_dir is required");
    if (!train || train->n == 0) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "trainer: empty training dataset");
    if (train->max_seq_length > cfg.seq_len)
        return QLORA__ERR(ctx, QLORA_ERR_SHAPE, "trainer: dataset rows are up to %d tokens but seq_len is %d", train->max_seq_length, cfg.seq_len);
    qlora_result r = qlora_optim_config_resolve(&cfg.optim);
    if (r != QLORA_OK) return QLORA__ERR(ctx, r, "trainer: invalid optimizer settings");
    int B = cfg.batch, T = cfg.seq_len, GA = cfg.grad_accum;
    qlora_train *t = NULL;
    qlora_optim *opt = NULL;
    qlora_data_loader L;
    qlora_batch *bs = NULL;
    size_t *seg = NULL, nseg = qlora_lora_segments(l, NULL, 0);
    char path[4200], line[1024], saved[4096];
    double t0 = 0, win_loss = 0, last_lr = 0;     // (declared up here: C++ forbids jumping over them)
    float last_norm = 0;
    int64_t win_n = 0, step0 = 0;
    size_t tokens = 0;
    memset(&L, 0, sizeof L);
    qlora__trainer tr;
    memset(&tr, 0, sizeof tr);
    qlora_train_config tc = { B, T, cfg.grad_checkpointing, cfg.bf16 };
    if ((r = qlora_train_create(ctx, m, l, &tc, &t)) != QLORA_OK) goto done;
    seg = (size_t *)qlora__calloc(nseg ? nseg : 1, sizeof *seg);
    bs = QLORA__CALLOC_T(qlora_batch, (size_t)GA);
    if (!seg || !bs) { r = QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "trainer: out of memory"); goto done; }
    qlora_lora_segments(l, seg, nseg);
    qlora__mkdir(cfg.output_dir);                          // paged optimizer state may live there
    if ((r = qlora_optim_create(ctx, &cfg.optim, seg, nseg, &opt)) != QLORA_OK) goto done;
    if ((r = qlora_loader_init(ctx, &L, train, B, 1, 1, cfg.seed)) != QLORA_OK) goto done;
    L.pad_to_max = 1;
    for (int i = 0; i < GA; i++) if ((r = qlora_batch_init(ctx, &bs[i], B, T)) != QLORA_OK) goto done;
    {
        qlora_train_memory_plan plan;
        qlora_train_memory(ctx, m, l, &tc, &plan);
        sum.memory_planned = plan.total + qlora_optim_state_bytes(&cfg.optim, seg, nseg);
    }
    tr.ctx = ctx; tr.m = m; tr.l = l; tr.cfg = &cfg; tr.opt = opt; tr.L = &L;
    {
        size_t per_epoch = qlora_loader_batches_per_epoch(&L);
        tr.total = cfg.max_steps > 0 ? cfg.max_steps : (int64_t)ceil(cfg.num_epochs * (double)per_epoch / (double)GA);
        if (tr.total < 1) tr.total = 1;
    }
    if (cfg.resume_from && (r = qlora__load_checkpoint(&tr, cfg.resume_from)) != QLORA_OK) goto done;
    qlora__mkdir(cfg.output_dir);
    snprintf(path, sizeof path, "%s/metrics.jsonl", cfg.output_dir);
    {
        qlora_train_event ev;
        memset(&ev, 0, sizeof ev);
        ev.kind = QLORA_EV_START; ev.step = tr.step; ev.total_steps = tr.total; ev.path = cfg.resume_from;
        qlora__emit(&cfg, &ev);
    }
    if (eval && cfg.eval_on_start && tr.step == 0) {
        double el0; size_t nt0;
        if ((r = qlora_eval_dataset(ctx, m, l, eval, B, T, &el0, &nt0)) != QLORA_OK) goto done;
        sum.first_eval_loss = el0;
        snprintf(line, sizeof line, "{\"step\": 0, \"epoch\": 0.0, \"eval_loss\": %.6f, \"eval_perplexity\": %.4f}\n", el0, exp(el0));
        qlora__append_line(path, line);
        qlora_train_event ev0;
        memset(&ev0, 0, sizeof ev0);
        ev0.kind = QLORA_EV_EVAL; ev0.total_steps = tr.total; ev0.eval_loss = el0;
        qlora__emit(&cfg, &ev0);
    }
    t0 = qlora__now();
    step0 = tr.step;
    while (tr.step < tr.total) {
        size_t targets = 0;
        for (int i = 0; i < GA; i++) {                    // the whole accumulation step first: HF
            int rows = qlora_loader_next(&L, &bs[i]);      // normalizes by its total target count
            qlora__batch_pad_rows(&bs[i], rows, B, T, train->pad_id);
            targets += qlora__batch_targets(&bs[i], B, T);
            for (int rr = 0; rr < rows; rr++) tokens += (size_t)bs[i].lengths[rr];
        }
        qlora_lora_zero_grad(l);
        double loss_sum = 0;
        if (targets > 0) {
            for (int i = 0; i < GA; i++) {
                double ls; int n;
                uint64_t seed = qlora__mix64(cfg.seed ^ ((uint64_t)(tr.step * GA + i) * 0x9E3779B97F4A7C15ull));
                r = qlora_train_forward(ctx, t, bs[i].ids, bs[i].labels, 1.0f / (float)targets, seed, &ls, &n, NULL);
                if (r == QLORA_ERR_NUMERIC || (r == QLORA_OK && !isfinite(ls))) {
                    r = QLORA__ERR(ctx, QLORA_ERR_NUMERIC, "loss is NaN/Inf at step %lld: training stopped; the last good checkpoint (if any) in %s is untouched",
                                   (long long)tr.step + 1, cfg.output_dir);
                    goto done;
                }
                if (r != QLORA_OK) goto done;
                if ((r = qlora_train_backward(ctx, t)) != QLORA_OK) goto done;
                loss_sum += ls;
            }
            r = qlora_clip_grad_norm(l->grads, seg, nseg, cfg.max_grad_norm > 0 ? cfg.max_grad_norm : 0, &last_norm);
            if (r != QLORA_OK) {
                r = QLORA__ERR(ctx, QLORA_ERR_NUMERIC, "gradient norm is NaN/Inf at step %lld: training stopped; the last good checkpoint (if any) in %s is untouched",
                               (long long)tr.step + 1, cfg.output_dir);
                goto done;
            }
            last_lr = qlora_lr_at(cfg.schedule, cfg.learning_rate, tr.step, cfg.warmup_steps, tr.total);
            if ((r = qlora_optim_step(opt, l->params, l->grads, last_lr)) != QLORA_OK) goto done;
        }
        tr.step++;
        {
            qlora_data_cursor c = qlora_loader_cursor(&L);
            tr.epoch = (double)c.epoch + (double)c.pos / (double)(train->n ? train->n : 1);
        }
        double step_loss = targets ? loss_sum / (double)targets : 0;
        win_loss += step_loss; win_n++;
        double el = qlora__now() - t0;
        qlora_train_event ev;
        memset(&ev, 0, sizeof ev);
        ev.step = tr.step; ev.total_steps = tr.total; ev.epoch = tr.epoch;
        ev.loss = step_loss; ev.learning_rate = last_lr; ev.grad_norm = last_norm;
        ev.tokens_per_second = el > 0 ? (double)tokens / el : 0;
        ev.eta_seconds = (double)(tr.total - tr.step) * el / (double)(tr.step - step0);
        ev.kind = QLORA_EV_STEP;
        qlora__emit(&cfg, &ev);
        if (tr.step % cfg.logging_steps == 0 || tr.step == tr.total) {
            ev.kind = QLORA_EV_LOG;
            ev.loss = win_loss / (double)win_n;
            sum.train_loss = ev.loss;
            snprintf(line, sizeof line, "{\"step\": %lld, \"epoch\": %.4f, \"loss\": %.6f, \"learning_rate\": %.6g, \"grad_norm\": %.6g, \"tokens_per_second\": %.1f}\n",
                     (long long)tr.step, tr.epoch, ev.loss, last_lr, (double)last_norm, ev.tokens_per_second);
            qlora__append_line(path, line);
            qlora__emit(&cfg, &ev);
            win_loss = 0; win_n = 0;
        }
        int do_eval = eval && ((cfg.eval_steps > 0 && tr.step % cfg.eval_steps == 0) || tr.step == tr.total);
        if (do_eval) {
            double el2; size_t nt;
            if ((r = qlora_eval_dataset(ctx, m, l, eval, B, T, &el2, &nt)) != QLORA_OK) goto done;
            if (isnan(sum.first_eval_loss)) sum.first_eval_loss = el2;
            sum.last_eval_loss = el2;
            ev.kind = QLORA_EV_EVAL; ev.eval_loss = el2;
            snprintf(line, sizeof line, "{\"step\": %lld, \"epoch\": %.4f, \"eval_loss\": %.6f, \"eval_perplexity\": %.4f}\n",
                     (long long)tr.step, tr.epoch, el2, exp(el2));
            qlora__append_line(path, line);
            qlora__emit(&cfg, &ev);
        }
        int stop = cfg.interrupt && *cfg.interrupt;
        if ((cfg.save_steps > 0 && tr.step % cfg.save_steps == 0) || (stop && tr.step < tr.total)) {
            if ((r = qlora__save_checkpoint(&tr, saved, sizeof saved)) != QLORA_OK) goto done;
            ev.kind = QLORA_EV_SAVE; ev.path = saved;
            qlora__emit(&cfg, &ev);
        }
        if (stop && tr.step < tr.total) {
            sum.interrupted = 1;
            ev.kind = QLORA_EV_INTERRUPTED; ev.path = saved;
            qlora__emit(&cfg, &ev);
            break;
        }
    }
    if (!sum.interrupted) {
        if ((r = qlora_lora_save_peft(ctx, l, m, cfg.output_dir, cfg.base_model_name)) != QLORA_OK) goto done;
        qlora_train_event ev;
        memset(&ev, 0, sizeof ev);
        ev.kind = QLORA_EV_DONE; ev.step = tr.step; ev.total_steps = tr.total; ev.path = cfg.output_dir;
        ev.loss = sum.train_loss; ev.eval_loss = sum.last_eval_loss;
        qlora__emit(&cfg, &ev);
    }
done:
    sum.steps = tr.step;
    if (out) *out = sum;
    if (bs) for (int i = 0; i < GA; i++) qlora_batch_free(&bs[i]);
    QLORA__FREE(bs);
    QLORA__FREE(seg);
    qlora_loader_free(&L);
    qlora_optim_free(opt);
    qlora_train_free(t);
    return r;
}

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
