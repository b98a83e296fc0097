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
