// Optimizers vs PyTorch / bitsandbytes / transformers (golden: tests/ref/make_optim_golden.py).
//   AdamW (torch, foreach=False), AdamW8bit (bnb CPU backend + exact quantization), PagedAdamW32bit:
//     bitwise equal to the reference run with an IEEE sqrt (FNV hash of all 75100 parameters), and
//     within 1e-6 relative (abs floor 1e-9) of the stock run (torch's MKL sqrt is +-1 ulp).
//   paged kinds: same numbers, the state file exists while the optimizer lives.
//   save/load: 5 steps + save + load + 5 steps == 10 steps, bitwise; corrupt states are refused.
//   schedules vs transformers get_scheduler (1e-7 relative), clipping vs clip_grad_norm_.
#define QLORA_IMPLEMENTATION
#include "qlora.h"
#include "tests/qlora_test.h"
#include <sys/stat.h>

#define NSEG 3
static const size_t SEG[NSEG] = { 100, 5000, 70000 };
static const float SCALE[NSEG] = { 1.0f, 0.25f, 1.0f / 64 };
#define NTOT (100 + 5000 + 70000)
#define STEPS 10

// ---- golden file ----
typedef struct { char name[64]; uint32_t kind; uint64_t n; void *data; } rec;
static rec recs[128];
static int nrecs;
static int load_golden(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    char magic[8];
    if (fread(magic, 1, 8, f) != 8 || memcmp(magic, "QOPTGLD1", 8)) { fclose(f); return 0; }
    uint32_t nl;
    while (nrecs < 128 && fread(&nl, 4, 1, f) == 1) {
        rec *r = &recs[nrecs];
        if (nl >= sizeof r->name || fread(r->name, 1, nl, f) != nl) break;
        r->name[nl] = 0;
        if (fread(&r->kind, 4, 1, f) != 1 || fread(&r->n, 8, 1, f) != 1) break;
        size_t es = r->kind == 0 ? 4 : 8;
        r->data = malloc(r->n * es + 1);
        if (fread(r->data, es, r->n, f) != r->n) break;
        nrecs++;
    }
    fclose(f);
    return nrecs > 0;
}
static const rec *golden(const char *name) {
    for (int i = 0; i < nrecs; i++) if (!strcmp(recs[i].name, name)) return &recs[i];
    fprintf(stderr, "golden record %s missing\n", name);
    return NULL;
}

// ---- inputs: integer hash -> k/4096 * scale (exact in f32), mirrors tensor_vals() ----
static float qt_val(uint64_t i, int step, int seg, float scale) {
    uint64_t h = (i * 2654435761ull + (uint64_t)(step * 40503 + seg * 7919 + 12345)) & 0xffffffffull;
    h ^= h >> 15; h = (h * 2246822519ull) & 0xffffffffull;
    h ^= h >> 13; h = (h * 3266489917ull) & 0xffffffffull;
    h ^= h >> 16;
    int k = (int)(h % 4001) - 2000;
    return (float)k / 4096.0f * scale;
}
static void fill(float *x, int step, int use_scale) {
    size_t off = 0;
    for (int s = 0; s < NSEG; s++) {
        for (size_t i = 0; i < SEG[s]; i++) x[off + i] = qt_val(i, step, s, use_scale ? SCALE[s] : 1.0f);
        off += SEG[s];
    }
}
static uint64_t fnv(const float *x, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    const uint8_t *b = (const uint8_t *)x;
    for (size_t i = 0; i < n * 4; i++) { h ^= b[i]; h *= 0x100000001b3ull; }
    return h;
}
static size_t subsample(const float *x, float *out) {   // all of seg 0, 1; seg 2: i % 16 == 0 or the last 256
    size_t n = 0;
    for (size_t i = 0; i < 5100; i++) out[n++] = x[i];
    for (size_t i = 0; i < 70000; i++) if (i % 16 == 0 || i >= 70000 - 256) out[n++] = x[5100 + i];
    return n;
}
static double lr_at(int k) { return 1e-3 * (1.0 - k / 20.0); }

// Run steps [k0, k1) on params.
static void run_steps(qlora_optim *o, float *p, float *g, int k0, int k1) {
    for (int k = k0; k < k1; k++) {
        fill(g, k, 1);
        qlora_result r = qlora_optim_step(o, p, g, lr_at(k));
        CHECK(r == QLORA_OK);
    }
}

static float P[NTOT], G[NTOT], P2[NTOT], SUB[NTOT];

static void compare(const char *variant, const float *p) {
    char nm[64];
    snprintf(nm, sizeof nm, "%s.hash", variant);
    const rec *h = golden(nm);
    snprintf(nm, sizeof nm, "%s.sub", variant);
    const rec *s = golden(nm);
    if (!h || !s) { CHECK(0); return; }
    uint64_t mine = fnv(p, NTOT), ref = ((const uint64_t *)h->data)[0];
    size_t n = subsample(p, SUB);
    CHECK(n == s->n);
    const float *ref_sub = (const float *)s->data;
    double maxrel = 0, maxabs = 0; size_t eq = 0, bad = 0;
    for (size_t i = 0; i < n && i < s->n; i++) {
        double a = SUB[i], b = ref_sub[i], d = fabs(a - b);
        eq += SUB[i] == ref_sub[i];
        if (d > maxabs) maxabs = d;
        if (fabs(b) > 1e-3 && d / fabs(b) > maxrel) maxrel = d / fabs(b);
        if (!(d <= 1e-6 * fabs(b) + 1e-9)) bad++;
    }
    fprintf(stderr, "  %-14s exact-sqrt reference: %s | stock: %zu/%zu bitwise, max rel %.3g (|x|>1e-3), max abs %.3g\n",
            variant, mine == ref ? "BITWISE EQUAL" : "DIFFERENT", eq, n, maxrel, maxabs);
    CHECK_MSG(mine == ref, "%s: parameters differ from the exact-sqrt reference", variant);
    CHECK_MSG(bad == 0, "%s: %zu elements beyond 1e-6 rel + 1e-9 abs", variant, bad);
}

static qlora_optim *make(qlora_ctx *ctx, qlora_optim_kind kind, double wd, const char *dir) {
    qlora_optim_config c;
    memset(&c, 0, sizeof c);
    c.kind = kind; c.weight_decay = wd; c.paged_dir = dir;
    qlora_optim *o = NULL;
    qlora_result r = qlora_optim_create(ctx, &c, SEG, NSEG, &o);
    CHECK_MSG(r == QLORA_OK, "create %s: %s", qlora_optim_kind_name(kind), qlora_ctx_error(ctx));
    return o;
}

static void test_variant(qlora_ctx *ctx, const char *variant, qlora_optim_kind kind, double wd) {
    qlora_optim *o = make(NULL, kind, wd, NULL);
    if (!o) return;
    fill(P, 1000, 0);
    run_steps(o, P, G, 0, STEPS);
    CHECK(qlora_optim_steps(o) == STEPS);
    compare(variant, P);
    // threads: bitwise identical
    qlora_optim *o2 = make(ctx, kind, wd, NULL);
    fill(P2, 1000, 0);
    run_steps(o2, P2, G, 0, STEPS);
    CHECK_MSG(memcmp(P, P2, sizeof P) == 0, "%s: %d threads differ from 1", variant, qlora_ctx_threads(ctx));
    qlora_optim_free(o2);
    qlora_optim_free(o);
}

static int file_exists(const char *p) { struct stat st; return p && stat(p, &st) == 0; }
static long long file_size(const char *p) { struct stat st; return stat(p, &st) == 0 ? (long long)st.st_size : -1; }

// plain: the in-memory kind with the same math (PAGED_ADAMW_32BIT has none: pass it again).
static void test_paged(qlora_ctx *ctx, const char *variant, qlora_optim_kind paged, qlora_optim_kind plain, double wd) {
    char dir[] = "build/optim_paged_XXXXXX";
    if (!mkdtemp(dir)) { CHECK_MSG(0, "mkdtemp"); return; }
    qlora_optim *o = make(ctx, paged, wd, dir), *q = make(ctx, plain, wd, NULL);
    if (!o || !q) { qlora_optim_free(o); qlora_optim_free(q); return; }
    const char *path = qlora_optim_paged_path(o);
    CHECK(path && strncmp(path, dir, strlen(dir)) == 0);
    CHECK(paged == plain || qlora_optim_paged_path(q) == NULL);
    CHECK(file_exists(path));
    qlora_optim_config c; memset(&c, 0, sizeof c); c.kind = paged;
    size_t bytes = qlora_optim_state_bytes(&c, SEG, NSEG);
    CHECK_MSG(file_size(path) == (long long)bytes, "paged file %lld bytes, state %zu", file_size(path), bytes);
    fill(P, 1000, 0); fill(P2, 1000, 0);
    run_steps(o, P, G, 0, STEPS);
    run_steps(q, P2, G, 0, STEPS);
    CHECK_MSG(memcmp(P, P2, sizeof P) == 0, "%s: paged differs from in-memory", variant);
    compare(variant, P);
    // the state really is in the file: read it back through the file system
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    if (f) {
        uint8_t *buf = (uint8_t *)malloc(bytes);
        size_t got = fread(buf, 1, bytes, f);
        fclose(f);
        qlora_st_entry e[16];
        size_t ne = qlora_optim_state_entries(o, e, 16);
        size_t nz = 0;
        for (size_t i = 0; i < bytes && i < got; i++) nz += buf[i] != 0;
        CHECK(got == bytes && nz > bytes / 4);
        // the first segment's exp_avg (entry 2) sits at offset 0 of the file
        CHECK(ne >= 3 && got >= e[2].nbytes && memcmp(buf, e[2].data, e[2].nbytes) == 0);
        free(buf);
    }
    char keep[256];
    snprintf(keep, sizeof keep, "%s", path);
    qlora_optim_free(o);
    qlora_optim_free(q);
    CHECK_MSG(!file_exists(keep), "paged state file %s left behind", keep);
    rmdir(dir);
}

static void test_resume(qlora_ctx *ctx, qlora_optim_kind kind, double wd) {
    const char *path = "build/test_optim_state.safetensors";
    qlora_optim *a = make(ctx, kind, wd, NULL), *b = make(ctx, kind, wd, NULL);
    if (!a || !b) { qlora_optim_free(a); qlora_optim_free(b); return; }
    fill(P, 1000, 0); fill(P2, 1000, 0);
    run_steps(a, P, G, 0, STEPS);                       // reference: 10 steps in one go
    run_steps(b, P2, G, 0, 5);
    qlora_st_entry e[32];
    size_t ne = qlora_optim_state_entries(b, NULL, 0);
    CHECK(ne == qlora_optim_state_entries(b, e, 32));
    CHECK(ne == 2 + 2 * 1 + (kind == QLORA_OPTIM_ADAMW ? 2 * 2 : 4 * 2));
    CHECK(qlora_st_write(ctx, path, e, ne) == QLORA_OK);
    qlora_optim_free(b);
    b = make(ctx, kind, wd, NULL);
    qlora_st *st = NULL;
    CHECK(qlora_st_open(ctx, path, &st) == QLORA_OK);
    if (st) {
        CHECK_MSG(qlora_optim_load_state(b, st) == QLORA_OK, "%s", qlora_ctx_error(ctx));
        CHECK(qlora_optim_steps(b) == 5);
        // a mismatched optimizer: other segment lengths -> clear error, unchanged
        size_t seg2[NSEG] = { 100, 5000, 69999 };
        qlora_optim_config c; memset(&c, 0, sizeof c); c.kind = kind; c.weight_decay = wd;
        qlora_optim *x = NULL;
        CHECK(qlora_optim_create(ctx, &c, seg2, NSEG, &x) == QLORA_OK);
        qlora_result r = qlora_optim_load_state(x, st);
        CHECK_MSG(r == QLORA_ERR_SHAPE || r == QLORA_ERR_FORMAT, "mismatch -> %d", (int)r);
        fprintf(stderr, "  mismatched layout -> %s: %s\n", qlora_result_string(r), qlora_ctx_error(ctx));
        CHECK(qlora_optim_steps(x) == 0);
        qlora_optim_free(x);
        qlora_st_close(st);
    }
    run_steps(b, P2, G, 5, STEPS);
    CHECK_MSG(memcmp(P, P2, sizeof P) == 0, "%s: 5 + save/load + 5 steps != 10 steps", qlora_optim_kind_name(kind));

    // corrupted states: NaN in a second moment / absmax, negative step, wrong dtype, missing tensor
    qlora_optim *c = make(ctx, kind, wd, NULL);
    ne = qlora_optim_state_entries(a, e, 32);
    for (int t = 0; t < 4; t++) {
        qlora_st_entry e2[32];
        memcpy(e2, e, sizeof e);
        size_t n2 = ne;
        void *tmp = NULL;
        qlora_result want = QLORA_ERR_NUMERIC;
        int64_t negstep = -3;
        if (t == 0) {            // last F32 entry (exp_avg_sq or absmax2 of segment 2) gets a NaN
            tmp = malloc(e2[ne - 1].nbytes);
            memcpy(tmp, e2[ne - 1].data, e2[ne - 1].nbytes);
            ((float *)tmp)[7] = NAN;
            e2[ne - 1].data = tmp;
        } else if (t == 1) { e2[0].data = &negstep; want = QLORA_ERR_RANGE; }
        else if (t == 2) { e2[2].dtype = "I32"; want = QLORA_ERR_SHAPE; }
        else { e2[3] = e2[ne - 1]; n2 = ne - 1; want = QLORA_ERR_NOT_FOUND; }
        CHECK(qlora_st_write(ctx, path, e2, n2) == QLORA_OK);
        free(tmp);
        st = NULL;
        CHECK(qlora_st_open(ctx, path, &st) == QLORA_OK);
        if (!st) continue;
        qlora_result r = qlora_optim_load_state(c, st);
        CHECK_MSG(r == want, "corruption %d -> %d (%s), want %d", t, (int)r, qlora_ctx_error(ctx), (int)want);
        if (t == 0) fprintf(stderr, "  corrupted state -> %s: %s\n", qlora_result_string(r), qlora_ctx_error(ctx));
        CHECK(qlora_optim_steps(c) == 0);
        qlora_st_close(st);
    }
    qlora_optim_free(c);
    remove(path);
    qlora_optim_free(a);
    qlora_optim_free(b);
}

static void test_schedules(void) {
    static const char *names[4] = { "linear", "cosine", "constant", "constant_with_warmup" };
    static const int WT[4][2] = { { 0, 10 }, { 3, 10 }, { 10, 100 }, { 5, 7 } };
    int exact = 0, total = 0;
    double maxrel = 0;
    for (int s = 0; s < 4; s++) {
        qlora_lr_schedule kind = QLORA_LR_COUNT;
        CHECK(qlora_lr_schedule_parse(names[s], &kind) == QLORA_OK && (int)kind == s);
        for (int w = 0; w < 4; w++) {
            char nm[64];
            snprintf(nm, sizeof nm, "lr.%s.%d.%d", names[s], WT[w][0], WT[w][1]);
            const rec *r = golden(nm);
            if (!r) { CHECK(0); continue; }
            const double *v = (const double *)r->data;
            for (uint64_t k = 0; k < r->n; k++) {
                double mine = qlora_lr_at(kind, 2e-4, (int64_t)k, WT[w][0], WT[w][1]);
                double d = fabs(mine - v[k]), rel = v[k] != 0 ? d / fabs(v[k]) : d;
                if (rel > maxrel) maxrel = rel;
                exact += mine == v[k]; total++;
                CHECK_MSG(rel <= 1e-7, "%s step %d: %.17g vs %.17g", nm, (int)k, mine, v[k]);
            }
        }
    }
    qlora_lr_schedule k;
    CHECK(qlora_lr_schedule_parse("polynomial", &k) == QLORA_ERR_NOT_FOUND);
    CHECK(qlora_lr_at(QLORA_LR_LINEAR, 1.0, 0, 5, 10) == 0.0);   // first update with warmup: lr 0
    fprintf(stderr, "  schedules: %d/%d values bitwise equal to transformers, max rel %.3g\n", exact, total, maxrel);
}

static void test_clip(void) {
    static const double mns[2] = { 1.0, 1e6 };
    for (int t = 0; t < 2; t++) {
        char nm[64];
        snprintf(nm, sizeof nm, "clip.%g.norm", mns[t]);
        const rec *rn = golden(nm);
        snprintf(nm, sizeof nm, "clip.%g.sub", mns[t]);
        const rec *rs = golden(nm);
        if (!rn || !rs) { CHECK(0); continue; }
        fill(G, 0, 1);
        for (size_t i = 0; i < NTOT; i++) G[i] *= 64.0f;
        float norm = 0;
        CHECK(qlora_clip_grad_norm(G, SEG, NSEG, mns[t], &norm) == QLORA_OK);
        float ref = ((const float *)rn->data)[0];
        CHECK_NEAR(norm, ref, 1e-6 * ref);
        size_t n = subsample(G, SUB), eq = 0;
        double maxrel = 0;
        for (size_t i = 0; i < n && i < rs->n; i++) {
            float b = ((const float *)rs->data)[i];
            double d = fabs((double)SUB[i] - b);
            eq += SUB[i] == b;
            if (b != 0 && d / fabs(b) > maxrel) maxrel = d / fabs(b);
        }
        CHECK_MSG(maxrel <= 1e-6, "clip %g: max rel %g", mns[t], maxrel);
        fprintf(stderr, "  clip max_norm=%g: norm %.9g vs torch %.9g (%s), grads %zu/%zu bitwise, max rel %.3g\n",
                mns[t], (double)norm, (double)ref, norm == ref ? "bitwise" : "differs", eq, n, maxrel);
    }
    // non-finite norm: error, grads untouched
    fill(G, 0, 1);
    G[123] = INFINITY;
    memcpy(P2, G, sizeof G);
    float norm = 0;
    CHECK(qlora_clip_grad_norm(G, SEG, NSEG, 1.0, &norm) == QLORA_ERR_NUMERIC);
    CHECK(isinf(norm) && memcmp(P2, G, sizeof G) == 0);
    G[123] = NAN;
    CHECK(qlora_clip_grad_norm(G, SEG, NSEG, 1.0, &norm) == QLORA_ERR_NUMERIC);
}

int main(void) {
    if (!load_golden("tests/ref/optim_golden.bin")) { qt_missing("tests/ref/optim_golden.bin"); return QT_DONE("test_optim"); }
    qlora_ctx *ctx = NULL;
    qlora_ctx_config cc; memset(&cc, 0, sizeof cc);
    cc.n_threads = 3;
    CHECK(qlora_ctx_create(&cc, &ctx) == QLORA_OK);

    // the quantization maps of the 8-bit state are bnb's create_dynamic_map, bit for bit
    float m[256];
    qlora_dynamic_map(1, m);
    const rec *r = golden("map.signed");
    CHECK(r && r->n == 256 && memcmp(m, r->data, sizeof m) == 0);
    qlora_dynamic_map(0, m);
    r = golden("map.unsigned");
    CHECK(r && r->n == 256 && memcmp(m, r->data, sizeof m) == 0);

    // sizes up front: 8 bytes/element in f32; 2 bytes/element + 8 bytes/256 in 8-bit; 64-aligned
    qlora_optim_config c; memset(&c, 0, sizeof c);
    CHECK(qlora_optim_state_bytes(&c, SEG, NSEG) == 832 + 40000 + 560000);
    c.kind = QLORA_OPTIM_ADAMW_8BIT;
    CHECK(qlora_optim_state_bytes(&c, SEG, NSEG) == 832 + 10176 + 142208);
    c.beta1 = 1.5;
    CHECK(qlora_optim_state_bytes(&c, SEG, NSEG) == 0);
    qlora_optim *bad = NULL;
    CHECK(qlora_optim_create(ctx, &c, SEG, NSEG, &bad) == QLORA_ERR_INVALID_ARG && bad == NULL);
    c.beta1 = 0;
    c.paged_dir = "/nonexistent/dir";
    c.kind = QLORA_OPTIM_PAGED_ADAMW_8BIT;
    CHECK(qlora_optim_create(ctx, &c, SEG, NSEG, &bad) == QLORA_ERR_IO && bad == NULL);
    fprintf(stderr, "  bad paged dir -> %s\n", qlora_ctx_error(ctx));
    {
        qlora_optim *o = make(NULL, QLORA_OPTIM_ADAMW_8BIT, 0, NULL);
        CHECK(o && !qlora_optim_segment_is_8bit(o, 0) && qlora_optim_segment_is_8bit(o, 1) && qlora_optim_segment_is_8bit(o, 2));
        CHECK(o && qlora_optim_nparams(o) == NTOT);
        CHECK(o && qlora_optim_step(o, P, G, -1.0) == QLORA_ERR_INVALID_ARG);
        qlora_optim_free(o);
    }

    test_variant(ctx, "torch_wd0", QLORA_OPTIM_ADAMW, 0.0);
    test_variant(ctx, "torch_wd001", QLORA_OPTIM_ADAMW, 0.01);
    test_variant(ctx, "bnb8_wd0", QLORA_OPTIM_ADAMW_8BIT, 0.0);
    test_variant(ctx, "bnb8_wd001", QLORA_OPTIM_ADAMW_8BIT, 0.01);
    test_paged(ctx, "paged32_wd001", QLORA_OPTIM_PAGED_ADAMW_32BIT, QLORA_OPTIM_PAGED_ADAMW_32BIT, 0.01);
    test_paged(ctx, "bnb8_wd001", QLORA_OPTIM_PAGED_ADAMW_8BIT, QLORA_OPTIM_ADAMW_8BIT, 0.01);
    test_resume(ctx, QLORA_OPTIM_ADAMW, 0.01);
    test_resume(ctx, QLORA_OPTIM_ADAMW_8BIT, 0.01);
    test_schedules();
    test_clip();

    qlora_ctx_destroy(ctx);
    for (int i = 0; i < nrecs; i++) free(recs[i].data);
    return QT_DONE("test_optim");
}
