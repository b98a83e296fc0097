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
