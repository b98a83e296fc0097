// test_quant.c - bnb-exact NF4/FP4 codes, double quantization, dynamic map, INT4/INT8,
// ggml dequantization, f16/bf16 conversion, whole-tensor quantize/dequantize.
// Golden data: tests/ref/quant_golden.bin from tests/ref/make_quant_golden.py (bitsandbytes'
// pure-PyTorch default backend; layout documented in the script).
#define QLORA_IMPLEMENTATION
#include "qlora.h"
#include "tests/qlora_test.h"

#define GOLDEN "tests/ref/quant_golden.bin"

typedef struct { const uint8_t *p, *end; int bad; } rd;
static const void *take(rd *r, size_t n) {
    if (r->bad || (size_t)(r->end - r->p) < n) { r->bad = 1; return NULL; }
    const void *q = r->p; r->p += n; return q;
}
static uint32_t take_u32(rd *r) { const uint8_t *q = (const uint8_t *)take(r, 4); return q ? qlora__rd_u32(q) : 0; }
// f32 arrays are copied out (the buffer need not be aligned)
static float *take_f32(rd *r, size_t n) {
    const void *q = take(r, n * 4);
    float *f = (float *)malloc(n * 4 + 4);
    if (q && f) memcpy(f, q, n * 4);
    return f;
}
static int bits_eq(const float *a, const float *b, size_t n, size_t *first) {
    for (size_t i = 0; i < n; i++) if (memcmp(a + i, b + i, 4)) { *first = i; return 0; }
    return 1;
}
static float synth(uint32_t i) {
    uint32_t h = (uint32_t)(i * 2654435761u) >> 8;
    return (float)(1 + h % 65535) / 65536.0f;
}

// Deterministic N(0,1) (Box-Muller on a 64-bit LCG) for the round-trip RMSE checks.
static uint64_t rng_state = 88172645463325252ull;
static double urand(void) { rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull; return ((rng_state >> 11) + 0.5) / 9007199254740992.0; }
static float nrand(void) { double u = urand(), v = urand(); return (float)(sqrt(-2 * log(u)) * cos(6.283185307179586 * v)); }

static void test_golden(void) {
    FILE *f = fopen(GOLDEN, "rb");
    if (!f) { qt_missing(GOLDEN); return; }
    fseek(f, 0, SEEK_END); long sz = ftell(f); fseek(f, 0, SEEK_SET);
    uint8_t *buf = (uint8_t *)malloc((size_t)sz);
    CHECK(buf && fread(buf, 1, (size_t)sz, f) == (size_t)sz);
    fclose(f);
    rd r = { buf, buf + sz, 0 };
    CHECK(memcmp(take(&r, 4), "QLQG", 4) == 0);
    CHECK(take_u32(&r) == 1);
    uint32_t avx512 = take_u32(&r);           // torch's CPU capability (informational)
    fprintf(stderr, "  golden made on a torch CPU capability %s machine\n", avx512 ? "AVX512" : "AVX2/other");

    // dynamic maps
    float *ds = take_f32(&r, 256), *du = take_f32(&r, 256), map[256];
    size_t first = 0;
    qlora_dynamic_map(1, map);
    CHECK_MSG(bits_eq(map, ds, 256, &first), "signed dynamic map differs at %zu: %.9g vs bnb %.9g", first, map[first], ds[first]);
    qlora_dynamic_map(0, map);
    CHECK_MSG(bits_eq(map, du, 256, &first), "unsigned dynamic map differs at %zu: %.9g vs bnb %.9g", first, map[first], du[first]);
    for (int i = 0; i < 16; i++) { uint32_t o = take_u32(&r); CHECK(o == qlora__fp4_order[i]); }

    // inputs
    uint32_t n_in = take_u32(&r);
    float *xs[64]; uint32_t ns[64];
    CHECK(n_in <= 64);
    for (uint32_t i = 0; i < n_in && i < 64; i++) { ns[i] = take_u32(&r); xs[i] = take_f32(&r, ns[i]); }

    // 4-bit cases
    uint32_t n_cases = take_u32(&r), n_ok = 0;
    for (uint32_t c = 0; c < n_cases && !r.bad; c++) {
        uint32_t ii = take_u32(&r), qt = take_u32(&r), bs = take_u32(&r);
        qlora_type t = qt ? QLORA_TYPE_FP4 : QLORA_TYPE_NF4;
        uint32_t nbytes = take_u32(&r);
        const uint8_t *packed = (const uint8_t *)take(&r, nbytes);
        uint32_t nb = take_u32(&r);
        float *am = take_f32(&r, nb);
        uint32_t has_deq = take_u32(&r);
        float *deq = has_deq ? take_f32(&r, ns[ii]) : NULL;
        if (r.bad || ii >= n_in) break;
        size_t n = ns[ii];
        CHECK(qlora_bnb_code_bytes(t, n) == nbytes);
        CHECK(qlora_bnb_nblocks(n, (int)bs) == nb);
        uint8_t *codes = (uint8_t *)calloc(nbytes + 1, 1);
        float *myam = (float *)calloc(nb + 1, 4), *out = (float *)calloc(n + 1, 4);
        CHECK(qlora_bnb_quantize(t, xs[ii], n, (int)bs, codes, myam) == QLORA_OK);
        size_t bad = nbytes;
        for (size_t k = 0; k < nbytes; k++) if (codes[k] != packed[k]) { bad = k; break; }
        int ok_codes = bad == nbytes, ok_am = bits_eq(myam, am, nb, &first);
        CHECK_MSG(ok_codes, "case %u (input %u %s bs %u): byte %zu = %02x, bnb %02x", c, ii, qlora_type_name(t), bs,
                  bad, bad < nbytes ? codes[bad] : 0, bad < nbytes ? packed[bad] : 0);
        CHECK_MSG(ok_am, "case %u (input %u %s bs %u): absmax[%zu] = %.9g, bnb %.9g", c, ii, qlora_type_name(t), bs,
                  first, myam[first], am[first]);
        if (deq) {      // our dequantization of bnb's own codes: bit-identical values (sign of 0 included)
            CHECK(qlora_bnb_dequantize(t, packed, am, n, (int)bs, out) == QLORA_OK);
            CHECK_MSG(bits_eq(out, deq, n, &first), "case %u: deq[%zu] = %.9g, bnb %.9g", c, first, out[first], deq[first]);
        }
        n_ok += ok_codes && ok_am;
        free(codes); free(myam); free(out); free(am); free(deq);
    }
    fprintf(stderr, "  4-bit golden: %u/%u cases byte-identical (codes + absmax)\n", n_ok, n_cases);

    // double quantization
    qlora_dynamic_map(1, map);
    uint32_t n_dq = take_u32(&r), dq_ok = 0, off_exact = 0;
    for (uint32_t c = 0; c < n_dq && !r.bad; c++) {
        uint32_t nb = take_u32(&r), synthetic = take_u32(&r);
        float *am = synthetic ? (float *)malloc(nb * 4) : take_f32(&r, nb);
        if (synthetic) for (uint32_t i = 0; i < nb; i++) am[i] = synth(i);
        float *gofs = take_f32(&r, 1);
        const uint8_t *gq = (const uint8_t *)take(&r, nb);
        uint32_t nb2 = take_u32(&r);
        float *ga2 = take_f32(&r, nb2);
        float *gdeq = synthetic ? NULL : take_f32(&r, nb);
        if (r.bad) break;
        uint8_t *q = (uint8_t *)calloc(nb, 1);
        float *a2 = (float *)calloc(nb2, 4), off = 0, *back = (float *)calloc(nb, 4);
        CHECK(qlora_double_quantize(am, nb, map, q, a2, &off) == QLORA_OK);
        int exact = memcmp(&off, gofs, 4) == 0;
        off_exact += exact;
        // offset: torch's cascade sum emulated; within 1 ulp always, bit-exact expected
        CHECK_MSG(fabsf(off - gofs[0]) <= nextafterf(fabsf(gofs[0]), INFINITY) - fabsf(gofs[0]),
                  "dq case %u (nblocks %u): offset %.9g vs torch %.9g", c, nb, off, gofs[0]);
        CHECK_MSG(exact, "dq case %u (nblocks %u): offset %.9g not bit-identical to torch %.9g", c, nb, off, gofs[0]);
        // the byte check uses the golden offset so it is independent of the mean
        CHECK(qlora__dq_encode(am, nb, map, gofs[0], q, a2) == QLORA_OK);
        size_t bad = nb;
        for (size_t k = 0; k < nb; k++) if (q[k] != gq[k]) { bad = k; break; }
        int ok = bad == nb && bits_eq(a2, ga2, nb2, &first);
        CHECK_MSG(bad == nb, "dq case %u (nblocks %u): qabsmax[%zu] = %u, bnb %u", c, nb, bad, bad < nb ? q[bad] : 0, bad < nb ? gq[bad] : 0);
        CHECK_MSG(bits_eq(a2, ga2, nb2, &first), "dq case %u: absmax2[%zu] = %.9g, bnb %.9g", c, first, a2[first], ga2[first]);
        if (gdeq) {
            qlora_double_dequantize(gq, ga2, map, gofs[0], nb, back);
            CHECK_MSG(bits_eq(back, gdeq, nb, &first), "dq case %u: deq absmax[%zu] = %.9g, bnb %.9g", c, first, back[first], gdeq[first]);
        }
        dq_ok += ok;
        free(q); free(a2); free(back); free(am); free(gofs); free(ga2); free(gdeq);
    }
    fprintf(stderr, "  double quant golden: %u/%u byte-identical, offset bit-exact in %u/%u\n", dq_ok, n_dq, off_exact, n_dq);
    CHECK(!r.bad && r.p == r.end);
    for (uint32_t i = 0; i < n_in && i < 64; i++) free(xs[i]);
    free(ds); free(du); free(buf);
}

// Round trip on N(0,1), 65536 values: RMSE bounds = measured value (comment) + ~10%.
static void test_rmse(void) {
    enum { N = 1 << 16 };
    float *x = (float *)malloc(N * 4), *y = (float *)malloc(N * 4), *am = (float *)malloc(N * 4);
    uint8_t *c = (uint8_t *)malloc(N);
    for (int i = 0; i < N; i++) x[i] = nrand();
    struct { qlora_type t; int bs; double bound; } cases[] = {
        { QLORA_TYPE_NF4, 64, 0.100 },    // measured 0.09195
        { QLORA_TYPE_NF4, 4096, 0.122 },  // 0.11058
        { QLORA_TYPE_FP4, 64, 0.134 },    // 0.12139
        { QLORA_TYPE_INT4, 64, 0.118 },   // 0.10657
        { QLORA_TYPE_INT8, 64, 0.0065 },  // 0.00589
        { QLORA_TYPE_INT8, 32, 0.0059 },  // 0.00533
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        CHECK(qlora_bnb_quantize(cases[k].t, x, N, cases[k].bs, c, am) == QLORA_OK);
        CHECK(qlora_bnb_dequantize(cases[k].t, c, am, N, cases[k].bs, y) == QLORA_OK);
        double se = 0;
        for (int i = 0; i < N; i++) se += (double)(x[i] - y[i]) * (x[i] - y[i]);
        double rmse = sqrt(se / N);
        fprintf(stderr, "  round trip N(0,1) %-4s bs %4d: RMSE %.5f (bound %.4f)\n", qlora_type_name(cases[k].t), cases[k].bs, rmse, cases[k].bound);
        CHECK_MSG(rmse < cases[k].bound, "%s bs %d RMSE %.5f", qlora_type_name(cases[k].t), cases[k].bs, rmse);
    }
    free(x); free(y); free(am); free(c);
}

static void test_int_formats(void) {
    // absmax 1 block: xs == x. INT8 q = round(x*127) ties away from zero, INT4 q = round(x*7)+8.
    float x[32] = { 1.0f, -1.0f, 0.5f / 127.0f, -0.5f / 127.0f, 0.0f, 0.25f, 3.5f / 7.0f, -3.5f / 7.0f, 0.49f / 127.0f };
    uint8_t c8[32], c4[16];
    float am8, am4, y[32];
    CHECK(qlora_bnb_quantize(QLORA_TYPE_INT8, x, 32, 32, c8, &am8) == QLORA_OK);
    CHECK(am8 == 1.0f);
    CHECK((int8_t)c8[0] == 127 && (int8_t)c8[1] == -127);
    CHECK((int8_t)c8[2] == 1 && (int8_t)c8[3] == -1);        // 0.5 rounds away from zero
    CHECK((int8_t)c8[4] == 0 && (int8_t)c8[5] == 32 && (int8_t)c8[8] == 0);   // 31.75 -> 32
    CHECK(qlora_bnb_quantize(QLORA_TYPE_INT4, x, 32, 32, c4, &am4) == QLORA_OK);
    CHECK(c4[0] == ((15 << 4) | 1));                           // +7 -> 15, -7 -> 1
    CHECK((c4[3] >> 4) == 4 + 8 && (c4[3] & 15) == 8 - 4);    // +-3.5 -> +-4
    CHECK(qlora_bnb_dequantize(QLORA_TYPE_INT8, c8, &am8, 32, 32, y) == QLORA_OK);
    CHECK(y[0] == 1.0f && y[1] == -1.0f && y[5] == 32.0f / 127.0f);
    CHECK(qlora_bnb_dequantize(QLORA_TYPE_INT4, c4, &am4, 32, 32, y) == QLORA_OK);
    CHECK(y[0] == 1.0f && y[1] == -1.0f && y[6] == 4.0f / 7.0f);
    // odd n, high nibble first, padding nibble = code of 0.0
    float z[3] = { 1.0f, -1.0f, 1.0f };
    uint8_t cz[2];
    CHECK(qlora_bnb_quantize(QLORA_TYPE_NF4, z, 3, 64, cz, &am4) == QLORA_OK);
    CHECK(cz[0] == 0xF0 && cz[1] == 0xF7);
}

static void test_errors(void) {
    float x[64] = { 0 }, am[2];
    uint8_t c[64];
    CHECK(qlora_bnb_quantize(QLORA_TYPE_NF4, x, 64, 48, c, am) == QLORA_ERR_INVALID_ARG);
    CHECK(qlora_bnb_quantize(QLORA_TYPE_NF4, x, 64, 16, c, am) == QLORA_ERR_INVALID_ARG);
    CHECK(qlora_bnb_quantize(QLORA_TYPE_NF4, x, 64, 8192, c, am) == QLORA_ERR_INVALID_ARG);
    CHECK(qlora_bnb_quantize(QLORA_TYPE_Q4_0, x, 64, 64, c, am) == QLORA_ERR_INVALID_ARG);
    CHECK(qlora_bnb_dequantize(QLORA_TYPE_NF4, c, am, 64, 100, x) == QLORA_ERR_INVALID_ARG);
    CHECK(qlora_bnb_nblocks(100, 33) == 0 && qlora_bnb_nblocks(100, 32) == 4 && qlora_bnb_nblocks(0, 64) == 0);
    x[3] = NAN;
    CHECK(qlora_bnb_quantize(QLORA_TYPE_NF4, x, 64, 64, c, am) == QLORA_ERR_NUMERIC);
    x[3] = INFINITY;
    CHECK(qlora_bnb_quantize(QLORA_TYPE_INT8, x, 64, 64, c, am) == QLORA_ERR_NUMERIC);
    CHECK(qlora_ggml_dequantize(QLORA_TYPE_Q8_0, c, 31, x) == QLORA_ERR_INVALID_ARG);
    CHECK(qlora_ggml_dequantize(QLORA_TYPE_NF4, c, 32, x) == QLORA_ERR_INVALID_ARG);
    CHECK(qlora_ggml_row_bytes(QLORA_TYPE_Q4_0, 33) == 0);
    CHECK(qlora_ggml_row_bytes(QLORA_TYPE_Q4_0, 64) == 36 && qlora_ggml_row_bytes(QLORA_TYPE_Q4_1, 64) == 40);
    CHECK(qlora_ggml_row_bytes(QLORA_TYPE_Q8_0, 576) == 18 * 34 && qlora_ggml_row_bytes(QLORA_TYPE_F32, 5) == 20);
    CHECK(qlora_ggml_row_bytes(QLORA_TYPE_F16, 5) == 10 && qlora_ggml_row_bytes(QLORA_TYPE_BF16, 5) == 10);
    CHECK(qlora_bnb_code4(QLORA_TYPE_INT8) == NULL && qlora_bnb_code4(QLORA_TYPE_NF4)[15] == 1.0f);
    qlora_tensor src, dst;
    memset(&src, 0, sizeof src);
    src.type = QLORA_TYPE_F32; src.n_dims = 2; src.ne[0] = 32; src.ne[1] = 2; src.data = x;
    CHECK(qlora_tensor_quantize(&src, QLORA_TYPE_NF4, 100, 0, &dst) == QLORA_ERR_INVALID_ARG);
    CHECK(qlora_tensor_quantize(&src, QLORA_TYPE_Q4_0, 64, 0, &dst) == QLORA_ERR_UNSUPPORTED);
}

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }

static void test_ggml(void) {
    uint8_t b8[34], b40[18], b41[20];
    float y[32];
    put16(b8, 0x3800);                        // d = 0.5
    for (int j = 0; j < 32; j++) b8[2 + j] = (uint8_t)(int8_t)(j - 16 + (j == 0 ? -112 : 0));   // -128 at j=0
    CHECK(qlora_ggml_dequantize(QLORA_TYPE_Q8_0, b8, 32, y) == QLORA_OK);
    CHECK(y[0] == -64.0f && y[1] == -7.5f && y[16] == 0.0f && y[31] == 7.5f);
    put16(b40, 0xBC00);                        // d = -1
    for (int j = 0; j < 16; j++) b40[2 + j] = (uint8_t)(j | ((15 - j) << 4));
    CHECK(qlora_ggml_dequantize(QLORA_TYPE_Q4_0, b40, 32, y) == QLORA_OK);
    CHECK(y[0] == 8.0f && y[15] == -7.0f && y[16] == -7.0f && y[31] == 8.0f);   // low nibbles 0..15 first
    put16(b41, 0x3400); put16(b41 + 2, 0xC000);    // d = 0.25, m = -2
    for (int j = 0; j < 16; j++) b41[4 + j] = (uint8_t)(j | (3 << 4));
    CHECK(qlora_ggml_dequantize(QLORA_TYPE_Q4_1, b41, 32, y) == QLORA_OK);
    CHECK(y[0] == -2.0f && y[15] == 1.75f && y[16] == -1.25f && y[31] == -1.25f);
    // Q4_1 rounding: q*d then + m, two float32 roundings (no FMA): d = 1+2^-10, m = 2^-11 tiny
    put16(b41, 0x3C01); put16(b41 + 2, 0x1000);    // m = 2^-11
    b41[4] = 15;
    CHECK(qlora_ggml_dequantize(QLORA_TYPE_Q4_1, b41, 32, y) == QLORA_OK);
    { volatile float p = 15.0f * qlora__fp16_to_f32(0x3C01); float e = p + qlora__fp16_to_f32(0x1000); CHECK(y[0] == e); }

    // whole tensor from Q4_0 rows (2 rows x 64) -> NF4, rows read back mid-block
    uint8_t t40[4 * 18];
    for (int b = 0; b < 4; b++) { put16(t40 + b * 18, (uint16_t)(0x3C00 + b)); for (int j = 0; j < 16; j++) t40[b * 18 + 2 + j] = (uint8_t)(b * 16 + j * 7); }
    qlora_tensor src;
    memset(&src, 0, sizeof src);
    src.type = QLORA_TYPE_Q4_0; src.n_dims = 2; src.ne[0] = 64; src.ne[1] = 2; src.data = t40;
    CHECK(qlora_tensor_nbytes(&src) == sizeof t40 && qlora_tensor_nelements(&src) == 128);
    float ref[128], got[128];
    CHECK(qlora_ggml_dequantize(QLORA_TYPE_Q4_0, t40, 128, ref) == QLORA_OK);
    CHECK(qlora_tensor_dequantize_rows(&src, 0, 2, got) == QLORA_OK);
    CHECK(memcmp(ref, got, sizeof ref) == 0);
    CHECK(qlora_tensor_dequantize_rows(&src, 1, 2, got) == QLORA_ERR_RANGE);
}

static void test_tensor(void) {
    // 3 rows x 96 cols with bs 64: blocks span rows, rows start mid-block. 8 x 70 more rows so
    // double quant has >256 blocks at bs 32.
    enum { C = 96, R = 3 + 8 * 70 };
    float *x = (float *)malloc(sizeof(float) * C * R), *y = (float *)malloc(sizeof(float) * C * R), *ref = (float *)malloc(sizeof(float) * C * R);
    for (int i = 0; i < C * R; i++) x[i] = nrand();
    qlora_tensor src, dst, h;
    memset(&src, 0, sizeof src);
    src.type = QLORA_TYPE_F32; src.n_dims = 2; src.ne[0] = C; src.ne[1] = R; src.data = x;
    qlora_type ts[] = { QLORA_TYPE_NF4, QLORA_TYPE_FP4, QLORA_TYPE_INT4, QLORA_TYPE_INT8 };
    for (int k = 0; k < 4; k++) for (int dq = 0; dq < 2; dq++) {
        int bs = dq ? 32 : 64;
        CHECK(qlora_tensor_quantize(&src, ts[k], bs, dq, &dst) == QLORA_OK);
        CHECK(dst.owns_data && dst.blocksize == bs && dst.ne[0] == C && dst.ne[1] == R);
        CHECK(dq ? (dst.absmax == NULL && dst.qabsmax && dst.absmax2 && dst.code2) : dst.absmax != NULL);
        CHECK(qlora_tensor_nbytes(&dst) == qlora_bnb_code_bytes(ts[k], (size_t)C * R));
        // reference: flat quantize + (double) dequantize
        size_t n = (size_t)C * R, nb = qlora_bnb_nblocks(n, bs);
        uint8_t *codes = (uint8_t *)malloc(n);
        float *am = (float *)malloc(nb * 4);
        CHECK(qlora_bnb_quantize(ts[k], x, n, bs, codes, am) == QLORA_OK);
        CHECK(memcmp(codes, dst.data, qlora_bnb_code_bytes(ts[k], n)) == 0);
        if (dq) {
            uint8_t *qa = (uint8_t *)malloc(nb); float a2[64], off, map[256];
            qlora_dynamic_map(1, map);
            CHECK(qlora_double_quantize(am, nb, map, qa, a2, &off) == QLORA_OK);
            CHECK(memcmp(qa, dst.qabsmax, nb) == 0 && off == dst.offset);
            qlora_double_dequantize(qa, a2, map, off, nb, am);
            free(qa);
        }
        CHECK(qlora_bnb_dequantize(ts[k], codes, am, n, bs, ref) == QLORA_OK);
        CHECK(qlora_tensor_dequantize_rows(&dst, 0, R, y) == QLORA_OK);
        CHECK(memcmp(y, ref, n * 4) == 0);
        CHECK(qlora_tensor_dequantize_rows(&dst, 1, 1, y) == QLORA_OK);   // starts at element 96 (mid-block)
        CHECK(memcmp(y, ref + C, C * 4) == 0);
        CHECK(qlora_tensor_dequantize_rows(&dst, 2, 1, y) == QLORA_OK);
        CHECK(memcmp(y, ref + 2 * C, C * 4) == 0);
        // and from that quantized tensor to bf16 and back
        if (k == 0 && dq) {
            CHECK(qlora_tensor_quantize(&dst, QLORA_TYPE_BF16, 0, 0, &h) == QLORA_OK);
            CHECK(qlora_tensor_dequantize_rows(&h, 0, R, y) == QLORA_OK);
            int same = 1;
            for (size_t i = 0; i < n; i++) same &= y[i] == qlora__bf16_to_f32(qlora__f32_to_bf16(ref[i]));
            CHECK(same);
            qlora_tensor_free(&h);
            CHECK(h.data == NULL);
        }
        free(codes); free(am);
        qlora_tensor_free(&dst);
    }
    // f16 source -> NF4 equals NF4 of the f16 values widened to f32 (bnb: A.float() first)
    uint16_t *hx = (uint16_t *)malloc(sizeof(uint16_t) * C * R);
    for (int i = 0; i < C * R; i++) { hx[i] = qlora__f32_to_fp16(x[i]); ref[i] = qlora__fp16_to_f32(hx[i]); }
    src.type = QLORA_TYPE_F16; src.data = hx;
    CHECK(qlora_tensor_quantize(&src, QLORA_TYPE_NF4, 64, 0, &dst) == QLORA_OK);
    uint8_t *codes = (uint8_t *)malloc(C * R);
    float am[C * R / 64 + 1];
    CHECK(qlora_bnb_quantize(QLORA_TYPE_NF4, ref, (size_t)C * R, 64, codes, am) == QLORA_OK);
    CHECK(memcmp(codes, dst.data, (size_t)C * R / 2) == 0);
    qlora_tensor_free(&dst);
    free(codes); free(hx); free(x); free(y); free(ref);
}

static void test_half(void) {
    // f16: subnormals, inf, nan, ties to even
    CHECK(qlora__fp16_to_f32(0x0001) == 5.9604644775390625e-8f);        // smallest subnormal
    CHECK(qlora__fp16_to_f32(0x03FF) == 6.0975551605224609375e-5f);      // largest subnormal
    CHECK(qlora__fp16_to_f32(0x8000) == 0.0f && signbit(qlora__fp16_to_f32(0x8000)));
    CHECK(isinf(qlora__fp16_to_f32(0x7C00)) && isnan(qlora__fp16_to_f32(0x7E00)));
    CHECK(qlora__fp16_to_f32(0x7BFF) == 65504.0f);
    CHECK(qlora__f32_to_fp16(65504.0f) == 0x7BFF);
    CHECK(qlora__f32_to_fp16(65520.0f) == 0x7C00);                        // rounds up to inf
    CHECK(qlora__f32_to_fp16(65519.996f) == 0x7BFF);
    CHECK(qlora__f32_to_fp16(1.0f + 1.0f / 2048) == 0x3C00);              // tie -> even (down)
    CHECK(qlora__f32_to_fp16(1.0f + 3.0f / 2048) == 0x3C02);              // tie -> even (up)
    CHECK(qlora__f32_to_fp16(2.98023223876953125e-8f) == 0x0000);         // 2^-25: tie -> 0
    CHECK(qlora__f32_to_fp16(2.98023259404089e-8f) == 0x0001);            // just above the tie
    CHECK(qlora__f32_to_fp16(8.940696716308594e-8f) == 0x0002);           // 1.5 * 2^-24 tie -> 2
    CHECK(qlora__f32_to_fp16(-INFINITY) == 0xFC00);
    CHECK((qlora__f32_to_fp16(NAN) & 0x7C00) == 0x7C00 && (qlora__f32_to_fp16(NAN) & 0x3FF) != 0);
    for (uint32_t h = 0; h < 0x7C00; h++) CHECK_MSG(qlora__f32_to_fp16(qlora__fp16_to_f32((uint16_t)h)) == h, "%04x", h);
    // bf16
    CHECK(qlora__f32_to_bf16(1.0f) == 0x3F80);
    CHECK(qlora__f32_to_bf16(qlora__f32_from_bits(0x3F808000u)) == 0x3F80);   // tie -> even
    CHECK(qlora__f32_to_bf16(qlora__f32_from_bits(0x3F818000u)) == 0x3F82);   // tie -> even (up)
    CHECK(qlora__f32_to_bf16(qlora__f32_from_bits(0x3F808001u)) == 0x3F81);
    CHECK(qlora__f32_to_bf16(qlora__f32_from_bits(0x7F7FFFFFu)) == 0x7F80);   // FLT_MAX -> inf
    CHECK(qlora__f32_to_bf16(qlora__f32_from_bits(0x00000001u)) == 0x0000);   // f32 subnormal
    CHECK(qlora__f32_to_bf16(qlora__f32_from_bits(0x00018000u)) == 0x0002);
    CHECK(isnan(qlora__bf16_to_f32(qlora__f32_to_bf16(NAN))));
    CHECK(qlora__f32_to_bf16(qlora__f32_from_bits(0x7F800001u)) != 0x7F80);   // sNaN stays NaN
}

int main(void) {
    test_golden();
    test_rmse();
    test_int_formats();
    test_errors();
    test_ggml();
    test_tensor();
    test_half();
    return QT_DONE("test_quant");
}
