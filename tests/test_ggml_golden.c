/* test_ggml_golden.c - the GGUF reader and the ggml dequantizers against golden data written by
   the reference Python implementation (gguf-py + numpy; see tests/ref/make_gguf_golden.py):
     1. tests/ref/q4_0_test.gguf: metadata of every GGUF value type (scalars, arrays of each
        type, arrays of strings, nested arrays), alignment 64, and Q4_0/Q4_1/Q8_0/F16/BF16/F32
        tensors next to their gguf.quants.dequantize output "<name>.expected" (F32). Our
        dequantization must match bit for bit.
     2. tests/ref/smollm2_dequant.txt: FNV-1a 64 over the whole dequantized SmolLM2 tensors
        token_embd.weight (Q8_0), blk.0.attn_q.weight and blk.29.ffn_down.weight (Q4_1). */
#define QLORA_IMPLEMENTATION
#include "qlora.h"
#include "tests/qlora_test.h"

#define TEST_GGUF "tests/ref/q4_0_test.gguf"
#define SMOL_GGUF "models/SmolLM2-135M-Instruct-Q4_1.gguf"
#define SMOL_REF  "tests/ref/smollm2_dequant.txt"

static uint64_t fnv1a64(uint64_t h, const uint8_t *p, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) { h ^= p[i]; h *= 0x100000001b3ull; }
    return h;
}
// The hash is defined over little-endian float32 bytes; serialise explicitly.
static uint64_t fnv1a64_f32(uint64_t h, const float *x, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) {
        uint32_t u; uint8_t b[4];
        memcpy(&u, &x[i], 4);
        b[0] = (uint8_t)u; b[1] = (uint8_t)(u >> 8); b[2] = (uint8_t)(u >> 16); b[3] = (uint8_t)(u >> 24);
        h = fnv1a64(h, b, 4);
    }
    return h;
}
static uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float f32_at(const uint8_t *p) { uint32_t u = qlora__rd_u32(p); float f; memcpy(&f, &u, 4); return f; }

static const qlora_gguf_kv *kv_of(const qlora_gguf *g, const char *key, qlora_gguf_vtype t) {
    const qlora_gguf_kv *kv = qlora_gguf_find(g, key);
    CHECK_MSG(kv != NULL, "key %s missing", key);
    if (kv) CHECK_MSG(kv->type == t, "key %s: type %d, want %d", key, (int)kv->type, (int)t);
    return kv && kv->type == t ? kv : NULL;
}
static int str_eq(qlora_str s, const char *want) {
    return s.ptr != NULL && s.len == strlen(want) && memcmp(s.ptr, want, s.len) == 0;
}
static const qlora_gguf_kv *arr_of(const qlora_gguf *g, const char *key, qlora_gguf_vtype et, uint64_t n) {
    const qlora_gguf_kv *kv = kv_of(g, key, QLORA_GGUF_ARRAY);
    if (!kv) return NULL;
    CHECK_MSG(kv->arr_type == et && kv->arr_n == n, "%s: arr_type %d n %llu, want %d n %llu", key,
              (int)kv->arr_type, (unsigned long long)kv->arr_n, (int)et, (unsigned long long)n);
    return kv->arr_type == et && kv->arr_n == n ? kv : NULL;
}

static void test_metadata(const qlora_gguf *g) {
    const qlora_gguf_kv *kv;
    qlora_str s;
    CHECK(g->version == 3);
    CHECK(g->n_kv == 31);
    CHECK(g->n_tensors == 14);
    CHECK(g->alignment == 64);
    CHECK(g->data_offset % 64 == 0);
    CHECK(str_eq(qlora_gguf_string(g, "general.architecture"), "qloratest"));
    CHECK(qlora_gguf_int(g, "general.alignment", -1) == 64);

    // scalars, through the typed accessors and through the raw bytes
    if ((kv = kv_of(g, "test.uint8", QLORA_GGUF_UINT8)) != NULL) CHECK(kv->data[0] == 200);
    CHECK(qlora_gguf_int(g, "test.uint8", -1) == 200);
    if ((kv = kv_of(g, "test.int8", QLORA_GGUF_INT8)) != NULL) CHECK((int8_t)kv->data[0] == -100);
    CHECK(qlora_gguf_int(g, "test.int8", 0) == -100);
    if ((kv = kv_of(g, "test.uint16", QLORA_GGUF_UINT16)) != NULL) CHECK(qlora__rd_u16(kv->data) == 60000);
    CHECK(qlora_gguf_int(g, "test.uint16", -1) == 60000);
    if ((kv = kv_of(g, "test.int16", QLORA_GGUF_INT16)) != NULL) CHECK((int16_t)qlora__rd_u16(kv->data) == -30000);
    CHECK(qlora_gguf_int(g, "test.int16", 0) == -30000);
    if ((kv = kv_of(g, "test.uint32", QLORA_GGUF_UINT32)) != NULL) CHECK(qlora__rd_u32(kv->data) == 4000000000u);
    CHECK(qlora_gguf_int(g, "test.uint32", -1) == 4000000000ll);
    if ((kv = kv_of(g, "test.int32", QLORA_GGUF_INT32)) != NULL) CHECK((int32_t)qlora__rd_u32(kv->data) == -2000000000);
    CHECK(qlora_gguf_int(g, "test.int32", 0) == -2000000000ll);
    CHECK(qlora_gguf_float(g, "test.int32", 0) == -2000000000.0);            // int -> float conversion
    if ((kv = kv_of(g, "test.float32", QLORA_GGUF_FLOAT32)) != NULL) CHECK(f32_at(kv->data) == 3.14159f);
    CHECK(qlora_gguf_float(g, "test.float32", 0) == (double)3.14159f);
    if ((kv = kv_of(g, "test.bool_true", QLORA_GGUF_BOOL)) != NULL) CHECK(kv->data[0] == 1);
    if ((kv = kv_of(g, "test.bool_false", QLORA_GGUF_BOOL)) != NULL) CHECK(kv->data[0] == 0);
    if ((kv = kv_of(g, "test.string", QLORA_GGUF_STRING)) != NULL) {
        CHECK(kv->strs != NULL && str_eq(kv->strs[0], "h\xc3\xa9llo w\xc3\xb6rld \xe2\x98\x83"));
    }
    s = qlora_gguf_string(g, "test.string");
    CHECK(s.len == 17 && str_eq(s, "h\xc3\xa9llo w\xc3\xb6rld \xe2\x98\x83"));
    if ((kv = kv_of(g, "test.empty_string", QLORA_GGUF_STRING)) != NULL) CHECK(kv->strs != NULL && kv->strs[0].len == 0);
    CHECK(qlora_gguf_string(g, "test.empty_string").len == 0);
    if ((kv = kv_of(g, "test.uint64", QLORA_GGUF_UINT64)) != NULL) CHECK(qlora__rd_u64(kv->data) == 18446744073709551615ull);
    if ((kv = kv_of(g, "test.int64", QLORA_GGUF_INT64)) != NULL) CHECK((int64_t)qlora__rd_u64(kv->data) == -9000000000000000000ll);
    CHECK(qlora_gguf_int(g, "test.int64", 0) == -9000000000000000000ll);
    if ((kv = kv_of(g, "test.float64", QLORA_GGUF_FLOAT64)) != NULL) {
        uint64_t u = qlora__rd_u64(kv->data); double d; memcpy(&d, &u, 8);
        CHECK(d == 2.718281828459045);
    }
    CHECK(qlora_gguf_float(g, "test.float64", 0) == 2.718281828459045);
    // absent keys and kinds that do not convert give the default
    CHECK(qlora_gguf_find(g, "test.nope") == NULL);
    CHECK(qlora_gguf_int(g, "test.nope", 77) == 77);
    CHECK(qlora_gguf_float(g, "test.nope", 0.25) == 0.25);
    CHECK(qlora_gguf_string(g, "test.nope").ptr == NULL);
    CHECK(qlora_gguf_int(g, "test.string", 5) == 5);
    CHECK(qlora_gguf_string(g, "test.uint8").ptr == NULL);

    // arrays of each element type
    if ((kv = arr_of(g, "arr.uint8", QLORA_GGUF_UINT8, 3)) != NULL) {
        CHECK(qlora_gguf_arr_int(kv, 0) == 0 && qlora_gguf_arr_int(kv, 1) == 1 && qlora_gguf_arr_int(kv, 2) == 255);
        CHECK(kv->data[2] == 255);
    }
    if ((kv = arr_of(g, "arr.int8", QLORA_GGUF_INT8, 3)) != NULL)
        CHECK(qlora_gguf_arr_int(kv, 0) == -128 && qlora_gguf_arr_int(kv, 1) == 0 && qlora_gguf_arr_int(kv, 2) == 127);
    if ((kv = arr_of(g, "arr.uint16", QLORA_GGUF_UINT16, 2)) != NULL)
        CHECK(qlora_gguf_arr_int(kv, 0) == 0 && qlora_gguf_arr_int(kv, 1) == 65535);
    if ((kv = arr_of(g, "arr.int16", QLORA_GGUF_INT16, 2)) != NULL)
        CHECK(qlora_gguf_arr_int(kv, 0) == -32768 && qlora_gguf_arr_int(kv, 1) == 32767);
    if ((kv = arr_of(g, "arr.uint32", QLORA_GGUF_UINT32, 2)) != NULL)
        CHECK(qlora_gguf_arr_int(kv, 0) == 1 && qlora_gguf_arr_int(kv, 1) == 4294967295ll);
    if ((kv = arr_of(g, "arr.int32", QLORA_GGUF_INT32, 4)) != NULL) {
        CHECK(qlora_gguf_arr_int(kv, 0) == -1 && qlora_gguf_arr_int(kv, 1) == 0);
        CHECK(qlora_gguf_arr_int(kv, 2) == 1 && qlora_gguf_arr_int(kv, 3) == 2147483647);
        CHECK(qlora_gguf_arr_float(kv, 0) == -1.0);
    }
    if ((kv = arr_of(g, "arr.float32", QLORA_GGUF_FLOAT32, 3)) != NULL) {
        CHECK(qlora_gguf_arr_float(kv, 0) == 0.5 && qlora_gguf_arr_float(kv, 1) == -1.25);
        CHECK(qlora_gguf_arr_float(kv, 2) == (double)1e-3f);
    }
    if ((kv = arr_of(g, "arr.bool", QLORA_GGUF_BOOL, 3)) != NULL)
        CHECK(kv->data[0] == 1 && kv->data[1] == 0 && kv->data[2] == 1);
    if ((kv = arr_of(g, "arr.string", QLORA_GGUF_STRING, 4)) != NULL) {
        CHECK(kv->strs != NULL);
        if (kv->strs) {
            CHECK(str_eq(kv->strs[0], "a"));
            CHECK(str_eq(kv->strs[1], "bc"));
            CHECK(kv->strs[2].len == 0);
            CHECK(str_eq(kv->strs[3], "\xc3\xbcn\xc3\xaf"));
        }
    }
    if ((kv = arr_of(g, "arr.uint64", QLORA_GGUF_UINT64, 2)) != NULL) {
        CHECK(qlora__rd_u64(kv->data) == 0 && qlora__rd_u64(kv->data + 8) == 18446744073709551615ull);
        CHECK(qlora_gguf_arr_int(kv, 0) == 0);
    }
    if ((kv = arr_of(g, "arr.int64", QLORA_GGUF_INT64, 2)) != NULL) {
        CHECK(qlora_gguf_arr_int(kv, 0) == INT64_MIN);
        CHECK(qlora_gguf_arr_int(kv, 1) == 42);
    }
    if ((kv = arr_of(g, "arr.float64", QLORA_GGUF_FLOAT64, 2)) != NULL) {
        CHECK(qlora_gguf_arr_float(kv, 0) == 1.0 / 3.0);
        CHECK(qlora_gguf_arr_float(kv, 1) == -2.5e300);
    }
    // nested arrays: data points at the first element, itself (u32 type, u64 n, elements)
    if ((kv = arr_of(g, "arr.nested_int32", QLORA_GGUF_ARRAY, 2)) != NULL) {
        const uint8_t *p = kv->data;
        CHECK(qlora__rd_u32(p) == QLORA_GGUF_INT32 && qlora__rd_u64(p + 4) == 2);
        CHECK(qlora__rd_u32(p + 12) == 1 && qlora__rd_u32(p + 16) == 2);
        p += 20;
        CHECK(qlora__rd_u32(p) == QLORA_GGUF_INT32 && qlora__rd_u64(p + 4) == 3);
        CHECK(qlora__rd_u32(p + 12) == 3 && qlora__rd_u32(p + 16) == 4 && qlora__rd_u32(p + 20) == 5);
    }
    if ((kv = arr_of(g, "arr.nested_string", QLORA_GGUF_ARRAY, 2)) != NULL) {
        const uint8_t *p = kv->data;
        CHECK(qlora__rd_u32(p) == QLORA_GGUF_STRING && qlora__rd_u64(p + 4) == 2);
        CHECK(qlora__rd_u64(p + 12) == 1 && p[20] == 'x');
        CHECK(qlora__rd_u64(p + 21) == 2 && memcmp(p + 29, "yz", 2) == 0);
        p += 31;
        CHECK(qlora__rd_u32(p) == QLORA_GGUF_STRING && qlora__rd_u64(p + 4) == 1);
        CHECK(qlora__rd_u64(p + 12) == 1 && p[20] == 'w');
    }
    // only reachable if the nested arrays were skipped by their exact size
    CHECK(str_eq(qlora_gguf_string(g, "test.after_nested"), "ok"));
}

// One quantized tensor vs its ".expected" F32 twin: bit-exact, whole and by row ranges.
static void check_tensor(const qlora_gguf *g, const char *name, uint32_t ggml_type, qlora_type type,
                         int n_dims, int64_t ne0, int64_t ne1, int64_t ne2, size_t nbytes) {
    char ename[64];
    const qlora_gguf_tensor *t = qlora_gguf_find_tensor(g, name), *e;
    size_t n = (size_t)(ne0 * ne1 * ne2), i, bad = 0;
    float *out;
    snprintf(ename, sizeof ename, "%s.expected", name);
    e = qlora_gguf_find_tensor(g, ename);
    CHECK_MSG(t != NULL && e != NULL, "tensor %s / %s missing", name, ename);
    if (!t || !e) return;
    CHECK_MSG(t->ggml_type == ggml_type && t->type == type, "%s: ggml_type %u type %d", name, t->ggml_type, (int)t->type);
    CHECK_MSG(t->n_dims == n_dims && t->ne[0] == ne0 && t->ne[1] == ne1 && t->ne[2] == ne2 && t->ne[3] == 1,
              "%s: n_dims %d ne %lld %lld %lld %lld", name, t->n_dims, (long long)t->ne[0], (long long)t->ne[1],
              (long long)t->ne[2], (long long)t->ne[3]);
    CHECK_MSG(t->nbytes == nbytes, "%s: nbytes %zu, want %zu", name, t->nbytes, nbytes);
    CHECK(e->ggml_type == 0 && e->type == QLORA_TYPE_F32 && e->nbytes == n * 4);
    CHECK(t->offset % 64 == 0 && t->data == g->file.data + g->data_offset + t->offset);
    CHECK(qlora_ggml_row_bytes(type, (size_t)ne0) * (size_t)(ne1 * ne2) == nbytes);
    if (t->type != type || t->nbytes != nbytes || e->nbytes != n * 4) return;

    out = (float *)malloc(n * sizeof(float));
    if (type == QLORA_TYPE_Q8_0 || type == QLORA_TYPE_Q4_0 || type == QLORA_TYPE_Q4_1) {
        memset(out, 0xff, n * sizeof(float));
        CHECK(qlora_ggml_dequantize(type, t->data, n, out) == QLORA_OK);
        for (i = 0; i < n; i++) bad += f32_bits(out[i]) != qlora__rd_u32(e->data + 4 * i);
        CHECK_MSG(bad == 0, "%s: qlora_ggml_dequantize: %zu of %zu values differ (first: %.9g vs %.9g)",
                  name, bad, n, out[0], f32_at(e->data));
    }
    if (n_dims == 2) {   // rows [1, ne1) through the generic tensor path, any type
        qlora_tensor qt;
        memset(&qt, 0, sizeof qt);
        qt.type = type; qt.n_dims = 2; qt.ne[0] = ne0; qt.ne[1] = ne1; qt.ne[2] = 1; qt.ne[3] = 1;
        qt.data = (void *)t->data;
        CHECK(qlora_tensor_nelements(&qt) == n);
        CHECK(qlora_tensor_nbytes(&qt) == nbytes);
        memset(out, 0xff, n * sizeof(float));
        CHECK(qlora_tensor_dequantize_rows(&qt, 1, (size_t)ne1 - 1, out) == QLORA_OK);
        bad = 0;
        for (i = 0; i < (size_t)((ne1 - 1) * ne0); i++) bad += f32_bits(out[i]) != qlora__rd_u32(e->data + 4 * ((size_t)ne0 + i));
        CHECK_MSG(bad == 0, "%s: qlora_tensor_dequantize_rows(1..%lld): %zu values differ", name, (long long)ne1, bad);
    }
    free(out);
}

static void test_tensors(const qlora_gguf *g) {
    // ggml type ids: F32 0, F16 1, Q4_0 2, Q4_1 3, Q8_0 8, BF16 30.
    check_tensor(g, "x.q4_0", 2, QLORA_TYPE_Q4_0, 2, 64, 4, 1, 4 * 2 * 18);
    check_tensor(g, "x.q4_1", 3, QLORA_TYPE_Q4_1, 2, 64, 4, 1, 4 * 2 * 20);
    check_tensor(g, "x.q8_0", 8, QLORA_TYPE_Q8_0, 2, 96, 3, 1, 3 * 3 * 34);
    check_tensor(g, "x.f16", 1, QLORA_TYPE_F16, 2, 48, 2, 1, 2 * 48 * 2);
    check_tensor(g, "x.bf16", 30, QLORA_TYPE_BF16, 2, 48, 2, 1, 2 * 48 * 2);
    check_tensor(g, "x.f32", 0, QLORA_TYPE_F32, 2, 16, 2, 1, 2 * 16 * 4);
    check_tensor(g, "x3.q4_0", 2, QLORA_TYPE_Q4_0, 3, 32, 3, 2, 6 * 18);
    CHECK(qlora_gguf_find_tensor(g, "x.nope") == NULL);
    // row sizes, and the rule that block types need n % 32 == 0
    CHECK(qlora_ggml_row_bytes(QLORA_TYPE_Q4_0, 64) == 36);
    CHECK(qlora_ggml_row_bytes(QLORA_TYPE_Q4_1, 64) == 40);
    CHECK(qlora_ggml_row_bytes(QLORA_TYPE_Q8_0, 64) == 68);
    CHECK(qlora_ggml_row_bytes(QLORA_TYPE_F16, 3) == 6);
    CHECK(qlora_ggml_row_bytes(QLORA_TYPE_BF16, 3) == 6);
    CHECK(qlora_ggml_row_bytes(QLORA_TYPE_F32, 3) == 12);
    CHECK(qlora_ggml_row_bytes(QLORA_TYPE_Q4_0, 33) == 0);
    {
        const qlora_gguf_tensor *t = qlora_gguf_find_tensor(g, "x.q4_0");
        float tmp[64];
        if (t) CHECK(qlora_ggml_dequantize(QLORA_TYPE_Q4_0, t->data, 33, tmp) != QLORA_OK);
    }
}

// SmolLM2: whole-tensor hashes (dequantized 1024 rows at a time).
static void test_smollm2(qlora_ctx *ctx) {
    FILE *f;
    char line[1024];
    qlora_gguf *g = NULL;
    int n_checked = 0;
    if (!qt_file_exists(SMOL_GGUF)) { qt_missing(SMOL_GGUF); return; }
    f = fopen(SMOL_REF, "r");
    CHECK_MSG(f != NULL, "%s missing", SMOL_REF);
    if (!f) return;
    CHECK(qlora_gguf_open(ctx, SMOL_GGUF, &g) == QLORA_OK);
    if (!g) { fprintf(stderr, "%s\n", qlora_ctx_error(ctx)); fclose(f); return; }
    CHECK(qlora_gguf_int(g, "llama.block_count", 0) == 30);
    CHECK(qlora_gguf_int(g, "llama.embedding_length", 0) == 576);
    CHECK(qlora_gguf_int(g, "tokenizer.ggml.bos_token_id", -1) == 1);
    while (fgets(line, sizeof line, f)) {
        char name[128], tname[16], bits[256];
        long long ne0, ne1;
        unsigned long long want_hash;
        const qlora_gguf_tensor *t;
        if (line[0] == '#') continue;
        if (sscanf(line, "tensor %127s %15s %lld %lld fnv1a64=%llx first8=%*s bits=%255s",
                   name, tname, &ne0, &ne1, &want_hash, bits) != 6) continue;
        t = qlora_gguf_find_tensor(g, name);
        CHECK_MSG(t != NULL, "%s not in %s", name, SMOL_GGUF);
        if (!t) continue;
        CHECK_MSG(t->ne[0] == ne0 && t->ne[1] == ne1, "%s: shape", name);
        CHECK_MSG((strcmp(tname, "Q8_0") == 0 && t->type == QLORA_TYPE_Q8_0 && t->ggml_type == 8) ||
                  (strcmp(tname, "Q4_1") == 0 && t->type == QLORA_TYPE_Q4_1 && t->ggml_type == 3),
                  "%s: type %s vs ours %s", name, tname, qlora_type_name(t->type));
        {
            qlora_tensor qt;
            size_t rows = (size_t)ne1, chunk = 1024, r0, k;
            uint64_t h = 0xcbf29ce484222325ull;
            float *buf = (float *)malloc(chunk * (size_t)ne0 * sizeof(float));
            float first[8];
            const char *bp = bits;
            memset(&qt, 0, sizeof qt);
            qt.type = t->type; qt.n_dims = 2; qt.ne[0] = ne0; qt.ne[1] = ne1; qt.ne[2] = 1; qt.ne[3] = 1;
            qt.data = (void *)t->data;
            for (r0 = 0; r0 < rows; r0 += chunk) {
                size_t nr = rows - r0 < chunk ? rows - r0 : chunk;
                qlora_result rc = qlora_tensor_dequantize_rows(&qt, r0, nr, buf);
                CHECK(rc == QLORA_OK);
                if (rc != QLORA_OK) break;
                if (r0 == 0) memcpy(first, buf, sizeof first);
                h = fnv1a64_f32(h, buf, nr * (size_t)ne0);
            }
            CHECK_MSG(h == (uint64_t)want_hash, "%s: fnv1a64 %016llx, want %016llx", name,
                      (unsigned long long)h, want_hash);
            for (k = 0; k < 8; k++) {
                unsigned long u = strtoul(bp, (char **)&bp, 16);
                CHECK_MSG(f32_bits(first[k]) == (uint32_t)u, "%s[%zu]: %08x want %08lx", name, k, f32_bits(first[k]), u);
                if (*bp == ',') bp++;
            }
            // the ggml path directly, first block row only
            CHECK(qlora_ggml_dequantize(t->type, t->data, (size_t)ne0, buf) == QLORA_OK);
            CHECK(memcmp(buf, first, sizeof first) == 0);
            free(buf);
            n_checked++;
        }
    }
    CHECK(n_checked == 3);
    fclose(f);
    qlora_gguf_close(g);
}

int main(void) {
    qlora_ctx *ctx = NULL;
    qlora_ctx_config cc;
    qlora_gguf *g = NULL;
    memset(&cc, 0, sizeof cc);
    cc.n_threads = 1;
    CHECK(qlora_ctx_create(&cc, &ctx) == QLORA_OK);
    if (!ctx) return QT_DONE("test_ggml_golden");
    if (!qt_file_exists(TEST_GGUF)) {
        qt_missing(TEST_GGUF);
    } else {
        qlora_result rc = qlora_gguf_open(ctx, TEST_GGUF, &g);
        CHECK_MSG(rc == QLORA_OK && g != NULL, "open %s: %s", TEST_GGUF, qlora_ctx_error(ctx));
        if (g) {
            test_metadata(g);
            test_tensors(g);
            qlora_gguf_close(g);
        }
    }
    test_smollm2(ctx);
    qlora_ctx_destroy(ctx);
    return QT_DONE("test_ggml_golden");
}
