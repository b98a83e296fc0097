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
    size_t n = 0;
    while (p->s < p->end && *p->s != '"') {          // pass 1: find the end, bound the length
        if ((unsigned char)*p->s < 0x20) return qlora__jp_fail(p, "control character in string");
        if (*p->s == '\\') { p->s++; if (p->s >= p->end) break; }
        p->s++; n++;
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
    (void)n;
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
