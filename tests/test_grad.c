/* Finite-difference checks of every backward in the training path (ggml test-backend-ops "grad"
   mode): each op alone, the frozen quantized linear (dX = dY deq(W)), the LoRA linear with every
   bias mode and with dropout, attention, and a whole Llama (stories260K) with LoRA on all-linear
   over an NF4 + double-quant base, with and without gradient checkpointing.
   Numeric gradients use the 4-point stencil (-f(2e) + 8f(e) - 8f(-e) + f(-2e)) / 12e with the
   objective accumulated in double; the reported metric is ||g_analytic - g_numeric|| / ||g_numeric||. */
#include <stddef.h>
/* counting allocator: a training step must not allocate (memory is planned by qlora_train_create) */
static size_t g_allocs;
static void *count_malloc(size_t n);
static void *count_realloc(void *p, size_t n);
#define QLORA_MALLOC(sz, u) count_malloc(sz)
#define QLORA_REALLOC(p, sz, u) count_realloc((p), (sz))
#define QLORA_FREE(p, u) free(p)
#define QLORA_IMPLEMENTATION
#include "qlora.h"
static void *count_malloc(size_t n) { g_allocs++; return malloc(n); }
static void *count_realloc(void *p, size_t n) { g_allocs++; return realloc(p, n); }
#include "qlora_test.h"

static uint64_t rng = 88172645463325252ull;
static float frand(void) { return 2.0f * qlora__rng_f32(&rng) - 1.0f; }
static void fill(float *x, size_t n, float s) { for (size_t i = 0; i < n; i++) x[i] = s * frand(); }

typedef double (*objective)(void *ctx);
// stencil derivative of f with respect to *p
static double numgrad(objective f, void *c, float *p, float eps) {
    float p0 = *p;
    *p = p0 + 2 * eps; double f2 = f(c);
    *p = p0 + eps;     double f1 = f(c);
    *p = p0 - eps;     double m1 = f(c);
    *p = p0 - 2 * eps; double m2 = f(c);
    *p = p0;
    return (-f2 + 8 * f1 - 8 * m1 + m2) / (12.0 * eps);
}
typedef struct relerr { double num, den; } relerr;
static void acc(relerr *e, double a, double n) { e->num += (a - n) * (a - n); e->den += n * n; }
static double rel(const relerr *e) { return sqrt(e->num / (e->den > 0 ? e->den : 1e-30)); }
#define REPORT(name, e, bound) do { double r_ = rel(&(e)); fprintf(stderr, "%-44s rel err %.2e (bound %.0e)\n", name, r_, (double)(bound)); CHECK(r_ < (bound)); } while (0)

/* ---- single ops ------------------------------------------------------------------------------- */
static qlora_ctx *g_ctx;
enum { NN = 3, CC = 24 };
static float g_x[NN * CC], g_w[CC], g_c[NN * CC], g_y[NN * CC], g_r[NN];
static double obj_rmsnorm(void *u) {
    (void)u;
    qlora__rmsnorm_fwd(g_ctx, g_y, g_r, g_x, g_w, NN, CC, 1e-5f);
    double s = 0; for (int i = 0; i < NN * CC; i++) s += (double)g_c[i] * g_y[i];
    return s;
}
static qlora_model_config g_rc;
static qlora_model g_rm;                  /* rope reads the config and the (T, rope_dim/2) tables of a train state */
static qlora_train g_rt;
static float g_cos[NN * 4], g_sin[NN * 4];
static void rope_setup(void) {
    g_rm.cfg = g_rc;
    g_rt.m = &g_rm; g_rt.N = NN; g_rt.T = NN; g_rt.D = 8; g_rt.rope_cos = g_cos; g_rt.rope_sin = g_sin;
    for (int p = 0; p < NN; p++)
        for (int i = 0; i < 4; i++) {
            float ang = (float)p * qlora__rope_freq(&g_rc, i);
            g_cos[p * 4 + i] = cosf(ang); g_sin[p * 4 + i] = sinf(ang);
        }
}
static double obj_rope(void *u) {
    (void)u;
    memcpy(g_y, g_x, sizeof g_x);
    qlora__rope_rows(g_ctx, &g_rt, g_y, 3, 1.0f);
    double s = 0; for (int i = 0; i < NN * CC; i++) s += (double)g_c[i] * g_y[i];
    return s;
}
static double obj_swiglu(void *u) {
    (void)u;
    double s = 0;
    for (int i = 0; i < NN * CC; i++) { float g = g_x[i]; s += (double)g_c[i] * (g / (1.0f + expf(-g)) * g_w[i % CC]); }
    return s;
}

static void test_ops(void) {
    relerr e = { 0, 0 };
    fill(g_x, NN * CC, 1.5f); fill(g_c, NN * CC, 1.0f);
    for (int i = 0; i < CC; i++) g_w[i] = 1.0f + 0.3f * frand();
    obj_rmsnorm(NULL);
    float dx[NN * CC] = { 0 };
    qlora__rmsnorm_bwd(g_ctx, dx, g_c, g_x, g_w, g_r, NN, CC);
    for (int i = 0; i < NN * CC; i++) acc(&e, dx[i], numgrad(obj_rmsnorm, NULL, &g_x[i], 1e-2f));
    REPORT("rmsnorm backward", e, 2e-3);

    memset(&g_rc, 0, sizeof g_rc);
    g_rc.rope_theta = 10000.0f; g_rc.rope_dim = 8; g_rc.head_dim = 8;
    rope_setup();
    e.num = e.den = 0;
    memcpy(dx, g_c, sizeof dx);
    qlora__rope_rows(g_ctx, &g_rt, dx, 3, -1.0f);           /* backward = inverse rotation of dy */
    for (int i = 0; i < NN * CC; i++) acc(&e, dx[i], numgrad(obj_rope, NULL, &g_x[i], 1e-2f));
    REPORT("rope backward", e, 2e-3);

    e.num = e.den = 0;                                           /* swiglu d/dg, same formula as block_bwd */
    for (int i = 0; i < NN * CC; i++) {
        float g = g_x[i], sg = 1.0f / (1.0f + expf(-g));
        double a = (double)g_c[i] * g_w[i % CC] * sg * (1.0f + g * (1.0f - sg));
        acc(&e, a, numgrad(obj_swiglu, NULL, &g_x[i], 1e-2f));
    }
    REPORT("swiglu backward", e, 2e-3);
}

/* ---- the frozen quantized linear: dX = dY deq(W) for every weight format ---------------------- */
static qlora_tensor g_W;
static float g_X[4 * 96], g_Y[4 * 80], g_dY[4 * 80];
static double obj_lin(void *u) {
    (void)u;
    qlora_matmul(g_ctx, &g_W, g_X, 4, g_Y);
    double s = 0; for (int i = 0; i < 4 * 80; i++) s += (double)g_dY[i] * g_Y[i];
    return s;
}
static void test_frozen_linear(void) {
    float w[80 * 96];
    fill(w, 80 * 96, 0.2f);
    qlora_tensor src;
    qlora__tensor_init(&src, QLORA_TYPE_F32, 96, 80, w);
    qlora_type types[] = { QLORA_TYPE_F32, QLORA_TYPE_NF4, QLORA_TYPE_FP4, QLORA_TYPE_INT4, QLORA_TYPE_INT8 };
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        for (int dq = 0; dq < 2; dq++) {
            if (dq && !qlora_type_is_bnb(types[k])) continue;
            CHECK(qlora_tensor_quantize(&src, types[k], 64, dq, &g_W) == QLORA_OK);
            fill(g_X, 4 * 96, 1.0f); fill(g_dY, 4 * 80, 1.0f);
            float dX[4 * 96] = { 0 };
            qlora__matmul_t(g_ctx, &g_W, g_dY, 4, dX, 0);
            relerr e = { 0, 0 };
            for (int i = 0; i < 4 * 96; i += 7) acc(&e, dX[i], numgrad(obj_lin, NULL, &g_X[i], 1e-2f));
            char name[64];
            snprintf(name, sizeof name, "frozen %s%s linear dX", qlora_type_name(types[k]), dq ? "+dq" : "");
            REPORT(name, e, 1e-3);
            qlora_tensor_free(&g_W);
        }
    }
    /* Q8_0 / Q4_1 (GGUF) bases through the same path: SmolLM2's token_embd / blocks */
}

/* ---- whole model with LoRA --------------------------------------------------------------------- */
typedef struct mctx { qlora_train *t; int32_t *tok, *lab; uint64_t seed; } mctx;
static double obj_model(void *u) {
    mctx *c = (mctx *)u;
    double loss; int n;
    qlora_train_forward(g_ctx, c->t, c->tok, c->lab, 0.0f, c->seed, &loss, &n, NULL);
    return loss;
}

static void add_qkv_bias(qlora_model *m) {
    for (int l = 0; l < m->cfg.n_layers; l++) {
        qlora_layer *ly = &m->layers[l];
        int qd = m->cfg.n_heads * m->cfg.head_dim, kvd = m->cfg.n_kv_heads * m->cfg.head_dim;
        float *b = (float *)calloc((size_t)(qd + 2 * kvd), sizeof(float));
        fill(b, (size_t)(qd + 2 * kvd), 0.1f);
        qlora__tensor_init(&ly->bq, QLORA_TYPE_F32, qd, 1, b);
        qlora__tensor_init(&ly->bk, QLORA_TYPE_F32, kvd, 1, b + qd);
        qlora__tensor_init(&ly->bv, QLORA_TYPE_F32, kvd, 1, b + qd + kvd);
        ly->bq.owns_data = 1;   /* freed with bq: one block */
    }
    m->cfg.has_qkv_bias = 1;
}

static void test_model(const char *path, qlora_type quant, int dq, unsigned mask, qlora_bias_mode bias, float dropout,
                       int ckpt, int with_bias, const char *name, double bound) {
    qlora_model *m = NULL;
    if (qlora_model_load(g_ctx, path, NULL, &m) != QLORA_OK) { qt_missing(path); return; }
    if (quant != QLORA_TYPE_COUNT) CHECK(qlora_model_quantize(g_ctx, m, quant, 32, dq) == QLORA_OK);
    if (with_bias) add_qkv_bias(m);
    qlora_lora_config lc = { 4, 8.0f, dropout, mask, bias, 0, 7 };
    qlora_lora *l = NULL;
    CHECK(qlora_lora_create(g_ctx, m, &lc, &l) == QLORA_OK);
    fill(l->params, l->n_params, 0.05f);                 /* nonzero B so that A receives gradient */
    for (int i = 0; i < l->n_mods; i++) for (int j = 0; j < l->cfg.r * l->mods[i].in; j++) l->mods[i].A[j] *= 4;
    qlora_train_config tc = { 2, 7, ckpt, 0 };
    qlora_train *t = NULL;
    CHECK(qlora_train_create(g_ctx, m, l, &tc, &t) == QLORA_OK);
    int32_t tok[14], lab[14];
    for (int i = 0; i < 14; i++) { tok[i] = 3 + (int32_t)((i * 37 + 11) % 400); lab[i] = tok[i]; }
    lab[3] = -100; lab[9] = -100;                        /* ignored targets */
    mctx c = { t, tok, lab, 1234 };
    double loss; int n;
    qlora_lora_zero_grad(l);
    CHECK(qlora_train_forward(g_ctx, t, tok, lab, 1.0f, c.seed, &loss, &n, NULL) == QLORA_OK);
    CHECK(n == 2 * 6 - 2);
    CHECK(qlora_train_backward(g_ctx, t) == QLORA_OK);
    relerr e = { 0, 0 };
    for (int i = 0; i < l->n_mods; i++) {                /* a few entries of A, B, bias of each module */
        qlora_lora_module *md = &l->mods[i];
        for (int k = 0; k < 2; k++) {
            size_t ia = (size_t)((k * 131 + i * 17) % (l->cfg.r * md->in)), ib = (size_t)((k * 71 + i * 13) % (md->out * l->cfg.r));
            acc(&e, md->dA[ia], numgrad(obj_model, &c, &md->A[ia], 2e-3f));
            acc(&e, md->dB[ib], numgrad(obj_model, &c, &md->B[ib], 2e-3f));
            if (md->bias) { size_t ic = (size_t)((k * 5 + i) % md->out); acc(&e, md->dbias[ic], numgrad(obj_model, &c, &md->bias[ic], 2e-3f)); }
        }
    }
    REPORT(name, e, bound);
    qlora_train_free(t);
    qlora_lora_free(l);
    qlora_model_free(m);
}

/* --bf16: the frozen-weight GEMMs round their operands to bf16 (f32 sums). The loss and every LoRA
 * gradient stay within bf16 precision of the f32 run (norm-wise relative error). */
static void test_bf16(const char *path) {
    qlora_model *m = NULL;
    if (qlora_model_load(g_ctx, path, NULL, &m) != QLORA_OK) { qt_missing(path); return; }
    CHECK(qlora_model_quantize(g_ctx, m, QLORA_TYPE_NF4, 64, 1) == QLORA_OK);
    qlora_lora_config lc = { 4, 8.0f, 0, QLORA_MODS_ALL_LINEAR, QLORA_BIAS_NONE, 0, 7 };
    qlora_lora *l = NULL;
    CHECK(qlora_lora_create(g_ctx, m, &lc, &l) == QLORA_OK);
    fill(l->params, l->n_params, 0.05f);
    int32_t tok[64], lab[64];
    for (int i = 0; i < 64; i++) { tok[i] = 3 + (int32_t)((i * 37 + 11) % 400); lab[i] = tok[i]; }
    float *g[2];
    double loss[2];
    for (int b = 0; b < 2; b++) {
        qlora_train_config tc = { 2, 32, 1, b };
        qlora_train *t = NULL;
        CHECK(qlora_train_create(g_ctx, m, l, &tc, &t) == QLORA_OK);
        int n;
        qlora_lora_zero_grad(l);
        size_t a0 = g_allocs;
        CHECK(qlora_train_forward(g_ctx, t, tok, lab, 1.0f, 5, &loss[b], &n, NULL) == QLORA_OK);
        CHECK(qlora_train_backward(g_ctx, t) == QLORA_OK);
        printf("%-44s %zu allocations in a step (want 0)\n", b ? "  bf16 step" : "f32 step (nf4+dq, all-linear, ckpt)", g_allocs - a0);
        CHECK(g_allocs == a0);
        g[b] = (float *)malloc(sizeof(float) * l->n_params);
        memcpy(g[b], l->grads, sizeof(float) * l->n_params);
        qlora_train_free(t);
    }
    double num = 0, den = 0;
    for (size_t i = 0; i < l->n_params; i++) { double d = (double)g[1][i] - g[0][i]; num += d * d; den += (double)g[0][i] * g[0][i]; }
    double rel = sqrt(num / (den + 1e-30)), lrel = fabs(loss[1] - loss[0]) / fabs(loss[0]);
    printf("%-44s grad rel err %.2e, loss rel err %.2e (bounds 3e-02, 1e-02)\n", "bf16 GEMMs vs f32 (nf4+dq, all-linear, ckpt)", rel, lrel);
    CHECK(rel < 3e-2 && den > 0);
    CHECK(lrel < 1e-2);
    free(g[0]); free(g[1]);
    qlora_lora_free(l);
    qlora_model_free(m);
}

int main(void) {
    qlora_ctx_config cc = {0};
    cc.n_threads = 2;
    CHECK(qlora_ctx_create(&cc, &g_ctx) == QLORA_OK);
    test_ops();
    test_frozen_linear();
    const char *s = "fixtures/stories260K.bin";
    if (!qt_file_exists(s)) { qt_missing(s); return QT_DONE("test_grad"); }
    test_model(s, QLORA_TYPE_COUNT, 0, QLORA_MODS_ALL_LINEAR, QLORA_BIAS_NONE, 0, 0, 0, "llama f32 + LoRA all-linear", 1e-2);
    test_model(s, QLORA_TYPE_NF4, 1, QLORA_MODS_ALL_LINEAR, QLORA_BIAS_NONE, 0, 0, 0, "llama nf4+dq + LoRA all-linear", 1e-2);
    test_model(s, QLORA_TYPE_NF4, 1, QLORA_MODS_ALL_LINEAR, QLORA_BIAS_NONE, 0, 1, 0, "  ... with gradient checkpointing", 1e-2);
    test_model(s, QLORA_TYPE_INT8, 0, QLORA_MODS_DEFAULT, QLORA_BIAS_NONE, 0.3f, 0, 0, "llama int8 + LoRA q,v + dropout 0.3", 1e-2);
    test_model(s, QLORA_TYPE_NF4, 0, QLORA_MODS_ALL_LINEAR, QLORA_BIAS_LORA_ONLY, 0, 0, 1, "qkv-bias llama + LoRA, bias=lora_only", 1e-2);
    test_model(s, QLORA_TYPE_NF4, 0, QLORA_MODS_ALL_LINEAR, QLORA_BIAS_ALL, 0, 1, 1, "qkv-bias llama + LoRA, bias=all + ckpt", 1e-2);
    test_model(s, QLORA_TYPE_NF4, 0, QLORA_MODS_ALL_LINEAR, QLORA_BIAS_NONE, 0, 0, 1, "qkv-bias llama + LoRA, bias=none", 1e-2);
    test_bf16(s);
    qlora_ctx_destroy(g_ctx);
    return QT_DONE("test_grad");
}
