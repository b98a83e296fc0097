/* Adapters: PEFT directory save/load (bit-exact, q/k B rows permuted to HF order and back),
   llama.cpp GGUF LoRA export, merge (W + s B A checked against deq(W) x + s B (A x)), the GGUF
   model writer (reload gives the same logits), bad inputs, and an adapter saved by PEFT itself
   (tests/ref/peft_saved_adapter, made by tests/ref/check_peft_adapter.py) reproducing PEFT's logits.
   Leaves build/test_adapter_out/ (adapter + merged logits) for tests/ref/check_peft_adapter.py. */
#define QLORA_IMPLEMENTATION
#include "qlora.h"
#include "qlora_test.h"

#define MODEL "fixtures/stories260K.bin"
#define TOK "fixtures/tok512.bin"
#define OUT "build/test_adapter_out"
#define BAD "build/test_adapter_bad"
#define PEFT_REF "tests/ref/peft_saved_adapter"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static float frand(void) {      /* uniform [-1, 1) */
    rng_state ^= rng_state << 13; rng_state ^= rng_state >> 7; rng_state ^= rng_state << 17;
    return (float)(rng_state >> 40) / 8388608.0f - 1.0f;
}

static float *forward_all(qlora_ctx *ctx, const qlora_model *m, const int32_t *tok, int T) {
    qlora_kv_cache *kv = NULL;
    float *lg = (float *)calloc((size_t)T * m->cfg.vocab_size, sizeof(float));
    if (!lg || qlora_kv_cache_create(ctx, m, 64, &kv) != QLORA_OK) { free(lg); return NULL; }
    if (qlora_model_forward(ctx, m, kv, tok, T, lg, 1) != QLORA_OK) { free(lg); lg = NULL; }
    qlora_kv_cache_free(kv);
    return lg;
}
static double max_diff(const float *a, const float *b, size_t n) {
    double d = 0;
    for (size_t i = 0; i < n; i++) { double e = fabs((double)a[i] - (double)b[i]); if (e > d || e != e) d = e != e ? 1e30 : e; }
    return d;
}
static char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = (char *)malloc((size_t)sz + 1);
    if (p && fread(p, 1, (size_t)sz, f) != (size_t)sz) { free(p); p = NULL; }
    fclose(f);
    if (p) { p[sz] = 0; *n = (size_t)sz; }
    return p;
}
static void spit(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (f) { if (n) fwrite(p, 1, n, f); fclose(f); }
}
/* s with the first occurrence of `from` replaced by `to` (new buffer). */
static char *replace1(const char *s, const char *from, const char *to) {
    const char *at = strstr(s, from);
    if (!at) return NULL;
    size_t a = (size_t)(at - s), nf = strlen(from), nt = strlen(to), ns = strlen(s);
    char *o = (char *)malloc(ns - nf + nt + 1);
    memcpy(o, s, a); memcpy(o + a, to, nt); memcpy(o + a + nt, at + nf, ns - a - nf + 1);
    return o;
}

/* Loads BAD as an adapter; expects code and an error message containing `needle`. */
static void expect_bad(qlora_ctx *ctx, const qlora_model *m, qlora_result code, const char *needle, const char *what) {
    qlora_lora *l = NULL;
    qlora_result r = qlora_lora_load_peft(ctx, m, BAD, &l);
    CHECK_MSG(r == code && l == NULL, "%s: got %d (%s), want %d", what, (int)r, qlora_ctx_error(ctx), (int)code);
    CHECK_MSG(strstr(qlora_ctx_error(ctx), needle) != NULL, "%s: message '%s' lacks '%s'", what, qlora_ctx_error(ctx), needle);
    fprintf(stderr, "  bad input (%s): %s\n", what, qlora_ctx_error(ctx));
    qlora_lora_free(l);
}

/* y = W'x of merged weights vs deq(W)x + s B(Ax), every adapted module; returns max relative error. */
static double check_merge(qlora_ctx *ctx, const qlora_model *base, const qlora_model *merged, const qlora_lora *l) {
    double worst = 0;
    for (int i = 0; i < l->n_mods; i++) {
        const qlora_lora_module *md = &l->mods[i];
        const qlora_tensor *W0 = qlora__module_weight(base, md->layer, md->mod), *W1 = qlora__module_weight(merged, md->layer, md->mod);
        CHECK(W1->type == QLORA_TYPE_F32 && W1->owns_data && W1->ne[0] == md->in && W1->ne[1] == md->out);
        float *x = (float *)malloc((size_t)md->in * 4), *y0 = (float *)malloc((size_t)md->out * 4), *y1 = (float *)malloc((size_t)md->out * 4);
        for (int j = 0; j < md->in; j++) x[j] = frand();
        CHECK(qlora_matvec(ctx, W0, x, y0) == QLORA_OK);
        CHECK(qlora_matvec(ctx, W1, x, y1) == QLORA_OK);
        double ax[4096];
        for (int k = 0; k < l->cfg.r; k++) {                       /* A x in double */
            double s = 0;
            for (int j = 0; j < md->in; j++) s += (double)md->A[(size_t)k * md->in + j] * x[j];
            ax[k] = s;
        }
        double scale = 0, err = 0;
        for (int o = 0; o < md->out; o++) {
            double u = 0;
            for (int k = 0; k < l->cfg.r; k++) u += (double)md->B[(size_t)o * l->cfg.r + k] * ax[k];
            double want = (double)y0[o] + (double)l->scaling * u;
            err = fmax(err, fabs(want - (double)y1[o]));
            scale = fmax(scale, fabs(want));
        }
        worst = fmax(worst, err / (scale > 1 ? scale : 1));
        free(x); free(y0); free(y1);
    }
    return worst;
}

int main(void) {
    qlora_ctx *ctx = NULL;
    qlora_ctx_config cc = {0};
    CHECK(qlora_ctx_create(&cc, &ctx) == QLORA_OK);
    if (!qt_file_exists(MODEL) || !qt_file_exists(TOK)) { qt_missing(MODEL " / " TOK); return QT_DONE("test_adapter"); }
    qlora_load_options lo = { TOK };
    qlora_model *m = NULL;
    qlora_result r = qlora_model_load(ctx, MODEL, &lo, &m);
    CHECK_MSG(r == QLORA_OK, "%s", qlora_ctx_error(ctx));
    if (r != QLORA_OK) return QT_DONE("test_adapter");
    const int D = m->cfg.head_dim, V = m->cfg.vocab_size;

    /* ---- an adapter with random nonzero B on every linear ---- */
    qlora_lora_config lc;
    memset(&lc, 0, sizeof lc);
    lc.r = 4; lc.alpha = 8; lc.target_mask = QLORA_MODS_ALL_LINEAR; lc.seed = 7; lc.dropout = 0.05f;
    qlora_lora *l = NULL;
    CHECK(qlora_lora_create(ctx, m, &lc, &l) == QLORA_OK);
    for (int i = 0; i < l->n_mods; i++)
        for (size_t j = 0; j < (size_t)l->mods[i].out * lc.r; j++) l->mods[i].B[j] = 0.05f * frand();
    CHECK(l->n_mods == 7 * m->cfg.n_layers);

    /* ---- PEFT save ---- */
    r = qlora_lora_save_peft(ctx, l, m, OUT, "stories260K");
    CHECK_MSG(r == QLORA_OK, "%s", qlora_ctx_error(ctx));
    size_t n_cfg = 0;
    char *cfg_text = slurp(OUT "/adapter_config.json", &n_cfg);
    CHECK(cfg_text != NULL);
    if (!cfg_text) return QT_DONE("test_adapter");
    CHECK(n_cfg > 0 && cfg_text[n_cfg - 1] == '}');                   /* json.dumps: no final newline */
    CHECK(strstr(cfg_text, "{\n  \"alora_invocation_tokens\": null,\n  \"alpha_pattern\": {},") == cfg_text);
    CHECK(strstr(cfg_text, "\n  \"r\": 4,\n") && strstr(cfg_text, "\n  \"lora_alpha\": 8,\n") && strstr(cfg_text, "\n  \"lora_dropout\": 0.05,\n"));
    CHECK(strstr(cfg_text, "\"target_modules\": [\n    \"q_proj\",\n    \"k_proj\",") != NULL);
    CHECK(strstr(cfg_text, "\"task_type\": \"CAUSAL_LM\"") && strstr(cfg_text, "\"peft_type\": \"LORA\"") && strstr(cfg_text, "\"inference_mode\": true"));
    {
        qlora_json *j = NULL;
        char err[128];
        CHECK(qlora_json_parse(cfg_text, n_cfg, &j, err, sizeof err) == QLORA_OK);
        int sorted = 1;
        const char *prev = "";
        for (const qlora_json *c = j ? j->child : NULL; c; c = c->next) { if (strcmp(prev, c->key) >= 0) sorted = 0; prev = c->key; }
        CHECK(sorted);
        CHECK(j && j->count == 40);                                   /* every key of PEFT 0.20.0's LoraConfig */
        CHECK(!strcmp(qlora_json_str(j, "base_model_name_or_path", ""), "stories260K"));
        qlora_json_free(j);
    }
    {
        qlora_st *st = NULL;
        CHECK(qlora_st_open(ctx, OUT "/adapter_model.safetensors", &st) == QLORA_OK);
        CHECK(st && st->n == (size_t)(2 * l->n_mods));
        const qlora_st_tensor *a = st ? qlora_st_find(st, "base_model.model.model.layers.2.self_attn.q_proj.lora_A.weight") : NULL;
        const qlora_st_tensor *bq = st ? qlora_st_find(st, "base_model.model.model.layers.2.self_attn.q_proj.lora_B.weight") : NULL;
        const qlora_st_tensor *bk = st ? qlora_st_find(st, "base_model.model.model.layers.4.self_attn.k_proj.lora_B.weight") : NULL;
        const qlora_st_tensor *bv = st ? qlora_st_find(st, "base_model.model.model.layers.4.self_attn.v_proj.lora_B.weight") : NULL;
        CHECK(a && bq && bk && bv);
        if (a && bq && bk && bv) {
            const qlora_lora_module *mq = qlora_lora_get(l, 2, QLORA_MOD_Q), *mk = qlora_lora_get(l, 4, QLORA_MOD_K), *mv = qlora_lora_get(l, 4, QLORA_MOD_V);
            CHECK(!strcmp(a->dtype, "F32") && a->n_dims == 2 && a->shape[0] == 4 && a->shape[1] == m->cfg.dim);
            CHECK(bk->shape[0] == m->cfg.n_kv_heads * D && bk->shape[1] == 4);
            CHECK(!memcmp(a->data, mq->A, a->nbytes));
            CHECK(!memcmp(bq->data, mq->B, bq->nbytes) && !memcmp(bk->data, mk->B, bk->nbytes));   /* HF order both */
            CHECK(!memcmp(bv->data, mv->B, bv->nbytes));
        }
        qlora_st_close(st);
    }

    /* ---- PEFT load: bit-exact round trip ---- */
    qlora_lora *l2 = NULL;
    r = qlora_lora_load_peft(ctx, m, OUT, &l2);
    CHECK_MSG(r == QLORA_OK, "%s", qlora_ctx_error(ctx));
    if (l2) {
        CHECK(l2->cfg.r == 4 && l2->cfg.alpha == 8.0f && l2->cfg.target_mask == QLORA_MODS_ALL_LINEAR && !l2->cfg.use_rslora);
        CHECK(l2->cfg.dropout == 0.05f && l2->scaling == l->scaling);
        CHECK(l2->n_params == l->n_params && !memcmp(l2->params, l->params, l->n_params * sizeof(float)));
        qlora_lora_free(l2);
    }

    /* ---- llama.cpp LoRA GGUF ---- */
    r = qlora_lora_export_gguf(ctx, l, m, OUT "/adapter.gguf");
    CHECK_MSG(r == QLORA_OK, "%s", qlora_ctx_error(ctx));
    {
        qlora_gguf *g = NULL;
        r = qlora_gguf_open(ctx, OUT "/adapter.gguf", &g);
        CHECK_MSG(r == QLORA_OK, "%s", qlora_ctx_error(ctx));
        if (g) {
            qlora_str s1 = qlora_gguf_string(g, "general.type"), s2 = qlora_gguf_string(g, "adapter.type"), s3 = qlora_gguf_string(g, "general.architecture");
            CHECK(s1.len == 7 && !memcmp(s1.ptr, "adapter", 7) && s2.len == 4 && !memcmp(s2.ptr, "lora", 4) && s3.len == 5 && !memcmp(s3.ptr, "llama", 5));
            const qlora_gguf_kv *al = qlora_gguf_find(g, "adapter.lora.alpha");
            CHECK(al && al->type == QLORA_GGUF_FLOAT32 && qlora_gguf_float(g, "adapter.lora.alpha", 0) == 8.0);
            CHECK(g->n_tensors == (uint64_t)(2 * l->n_mods) && g->version == 3);
            const qlora_gguf_tensor *ta = qlora_gguf_find_tensor(g, "blk.3.ffn_down.weight.lora_a");
            const qlora_gguf_tensor *tb = qlora_gguf_find_tensor(g, "blk.1.attn_k.weight.lora_b");
            const qlora_lora_module *md = qlora_lora_get(l, 3, QLORA_MOD_DOWN), *mk = qlora_lora_get(l, 1, QLORA_MOD_K);
            CHECK(ta && ta->type == QLORA_TYPE_F32 && ta->ne[0] == m->cfg.hidden_dim && ta->ne[1] == 4 && !memcmp(ta->data, md->A, ta->nbytes));
            CHECK(tb && tb->ne[0] == 4 && tb->ne[1] == m->cfg.n_kv_heads * D);
            if (tb) {                                   /* lora_b rows in GGUF order: row g = HF row perm(g) */
                int perm_ok = 1, moved = 0;
                for (size_t g2 = 0; g2 < (size_t)mk->out; g2++) {
                    size_t hr = qlora__rope_perm_row(g2, D);
                    if (memcmp(tb->data + g2 * 16, mk->B + hr * 4, 16)) perm_ok = 0;
                    moved += hr != g2;
                }
                CHECK(perm_ok && moved > 0);
            }
            qlora_gguf_close(g);
        }
        qlora_lora_config rc = lc;
        rc.use_rslora = 1;
        qlora_lora *lr = NULL;
        CHECK(qlora_lora_create(ctx, m, &rc, &lr) == QLORA_OK);
        CHECK(lr && lr->scaling == 4.0f);                                  /* 8 / sqrt(4) */
        CHECK(qlora_lora_export_gguf(ctx, lr, m, OUT "/adapter_rslora.gguf") == QLORA_OK);
        CHECK(qlora_gguf_open(ctx, OUT "/adapter_rslora.gguf", &g) == QLORA_OK);
        if (g) CHECK(qlora_gguf_float(g, "adapter.lora.alpha", 0) == 16.0);   /* llama.cpp: 16 / 4 = 4 */
        qlora_gguf_close(g);
        qlora_lora_free(lr);
        CHECK(qlora_peft_to_gguf(ctx, m, OUT, OUT "/adapter_from_peft.gguf") == QLORA_OK);
        size_t n1 = 0, n2 = 0;
        char *g1 = slurp(OUT "/adapter.gguf", &n1), *g2 = slurp(OUT "/adapter_from_peft.gguf", &n2);
        CHECK(g1 && g2 && n1 == n2 && !memcmp(g1, g2, n1));                 /* PEFT dir -> GGUF == direct */
        free(g1); free(g2);
    }

    /* ---- merge: f32 base, then NF4 base ---- */
    int32_t tokens[12] = { 1, 403, 407, 261, 378, 429, 294, 260, 309, 288, 1500 % 512, 7 };
    const int T = 12;
    float *logits_merged = NULL;
    {
        qlora_model *mm = NULL;
        CHECK(qlora_model_load(ctx, MODEL, &lo, &mm) == QLORA_OK);
        r = qlora_model_merge_lora(ctx, mm, l);
        CHECK_MSG(r == QLORA_OK, "%s", qlora_ctx_error(ctx));
        double e = check_merge(ctx, m, mm, l);
        fprintf(stderr, "merge f32 base: max rel |W'x - (Wx + s B A x)| = %.3g\n", e);
        CHECK(e < 1e-5);
        logits_merged = forward_all(ctx, mm, tokens, T);
        float *logits_base = forward_all(ctx, m, tokens, T);
        CHECK(logits_merged && logits_base);
        if (logits_merged && logits_base) {
            double d = max_diff(logits_merged, logits_base, (size_t)T * V);
            fprintf(stderr, "merged vs base logits: max |d| = %.3g (the adapter changes the model)\n", d);
            CHECK(d > 1e-3);
            FILE *f = fopen(OUT "/merged_logits.bin", "wb");      /* for tests/ref/check_peft_adapter.py */
            if (f) {
                int32_t hdr[2] = { T, V };
                fwrite(hdr, 4, 2, f); fwrite(tokens, 4, (size_t)T, f); fwrite(logits_merged, 4, (size_t)T * V, f);
                fclose(f);
            }
        }
        free(logits_base);

        /* re-quantization cost of the merged weights */
        qlora_merge_stat *st = (qlora_merge_stat *)calloc((size_t)l->n_mods, sizeof *st);
        r = qlora_merge_report(ctx, mm, l, QLORA_TYPE_NF4, 64, 1, st);
        CHECK_MSG(r == QLORA_OK, "%s", qlora_ctx_error(ctx));
        double worst = 0, mean = 0;
        int ok = 1;
        for (int i = 0; i < l->n_mods; i++) {
            double rel = st[i].rms_err / st[i].rms_w;
            if (!(st[i].max_err > 0 && rel > 0.01 && rel < 0.2)) ok = 0;
            worst = fmax(worst, rel);
            mean += rel / l->n_mods;
        }
        CHECK(ok);
        fprintf(stderr, "NF4 (bs 64, double quant) re-quantization of the merged weights: rms err / rms W mean %.4f, worst %.4f; "
                "layer 0 q_proj max err %.4g rms %.4g (rms W %.4g)\n", mean, worst, st[0].max_err, st[0].rms_err, st[0].rms_w);
        free(st);

        /* the GGUF writer: merged model -> .gguf -> reload: same logits (F32 exactly) */
        r = qlora_model_save_gguf(ctx, mm, OUT "/merged_f32.gguf", QLORA_TYPE_F32);
        CHECK_MSG(r == QLORA_OK, "%s", qlora_ctx_error(ctx));
        /* llama.cpp's view: base.gguf W + (alpha/r) lora_b lora_a == merged.gguf W, row for row in GGUF order */
        CHECK(qlora_model_save_gguf(ctx, m, OUT "/base_f32.gguf", QLORA_TYPE_F32) == QLORA_OK);
        {
            qlora_gguf *gb = NULL, *gm = NULL, *ga = NULL;
            CHECK(qlora_gguf_open(ctx, OUT "/base_f32.gguf", &gb) == QLORA_OK && qlora_gguf_open(ctx, OUT "/merged_f32.gguf", &gm) == QLORA_OK &&
                  qlora_gguf_open(ctx, OUT "/adapter.gguf", &ga) == QLORA_OK);
            double wmax = 0;
            int n_checked = 0;
            const char *which[3] = { "attn_q", "attn_k", "ffn_up" };
            for (int li = 0; gb && gm && ga && li < m->cfg.n_layers; li++) {
                for (int w = 0; w < 3; w++) {
                    char nb[64], na[80], nbb[80];
                    snprintf(nb, sizeof nb, "blk.%d.%s.weight", li, which[w]);
                    snprintf(na, sizeof na, "%s.lora_a", nb);
                    snprintf(nbb, sizeof nbb, "%s.lora_b", nb);
                    const qlora_gguf_tensor *tw = qlora_gguf_find_tensor(gb, nb), *tm = qlora_gguf_find_tensor(gm, nb);
                    const qlora_gguf_tensor *ta = qlora_gguf_find_tensor(ga, na), *tb = qlora_gguf_find_tensor(ga, nbb);
                    CHECK(tw && tm && ta && tb);
                    if (!(tw && tm && ta && tb)) continue;
                    const float *W = (const float *)(const void *)tw->data, *Wm = (const float *)(const void *)tm->data;
                    const float *A = (const float *)(const void *)ta->data, *B = (const float *)(const void *)tb->data;
                    int in = (int)tw->ne[0], out = (int)tw->ne[1], rr = (int)ta->ne[1];
                    float sc = (float)qlora_gguf_float(ga, "adapter.lora.alpha", 0) / (float)tb->ne[0];
                    for (int o = 0; o < out; o++)
                        for (int i = 0; i < in; i++) {
                            double d = 0;
                            for (int k = 0; k < rr; k++) d += (double)B[(size_t)o * rr + k] * A[(size_t)k * in + i];
                            wmax = fmax(wmax, fabs((double)W[(size_t)o * in + i] + sc * d - (double)Wm[(size_t)o * in + i]));
                        }
                    n_checked++;
                }
            }
            fprintf(stderr, "llama.cpp semantics (base.gguf + alpha/r lora_b lora_a vs merged.gguf), %d tensors: max |d| = %.3g\n", n_checked, wmax);
            CHECK(n_checked == 3 * m->cfg.n_layers && wmax < 1e-6);
            qlora_gguf_close(gb); qlora_gguf_close(gm); qlora_gguf_close(ga);
        }
        qlora_model *rl = NULL;
        r = qlora_model_load(ctx, OUT "/merged_f32.gguf", NULL, &rl);      /* tokenizer from the GGUF */
        CHECK_MSG(r == QLORA_OK, "%s", qlora_ctx_error(ctx));
        if (rl) {
            CHECK(rl->cfg.dim == mm->cfg.dim && rl->cfg.n_kv_heads == mm->cfg.n_kv_heads && rl->cfg.tied_embeddings == mm->cfg.tied_embeddings);
            CHECK(rl->tok && qlora_tokenizer_n_vocab(rl->tok) == V && qlora_tokenizer_bos(rl->tok) == 1);
            float *lg = forward_all(ctx, rl, tokens, T);
            CHECK(lg && logits_merged);
            if (lg && logits_merged) {
                double d = max_diff(lg, logits_merged, (size_t)T * V);
                fprintf(stderr, "saved f32 GGUF reloaded: max |dlogit| = %.3g\n", d);
                CHECK(d == 0);
            }
            free(lg);
            int32_t ia[64], ib[64];
            size_t na = 0, nb = 0;
            const char *text = "Once upon a time, there was a little girl named Lily.";
            CHECK(qlora_tokenize(m->tok, text, strlen(text), 1, ia, 64, &na) == QLORA_OK);
            CHECK(qlora_tokenize(rl->tok, text, strlen(text), 1, ib, 64, &nb) == QLORA_OK);
            CHECK_MSG(na == nb && !memcmp(ia, ib, na * 4), "llama2.c tokenizer written as GGUF SPM: %zu vs %zu ids", na, nb);
            /* a GGUF-sourced model keeps its tokenizer.* keys verbatim */
            CHECK(qlora_model_save_gguf(ctx, rl, OUT "/resaved.gguf", QLORA_TYPE_F32) == QLORA_OK);
            qlora_gguf *g0 = NULL, *g1 = NULL;
            CHECK(qlora_gguf_open(ctx, OUT "/merged_f32.gguf", &g0) == QLORA_OK && qlora_gguf_open(ctx, OUT "/resaved.gguf", &g1) == QLORA_OK);
            if (g0 && g1) {
                const qlora_gguf_kv *k0 = qlora_gguf_find(g0, "tokenizer.ggml.tokens"), *k1 = qlora_gguf_find(g1, "tokenizer.ggml.tokens");
                CHECK(k0 && k1 && k0->arr_n == (uint64_t)V && k1->arr_n == k0->arr_n && k0->strs[300].len == k1->strs[300].len &&
                      !memcmp(k0->strs[300].ptr, k1->strs[300].ptr, k0->strs[300].len));
                const qlora_gguf_kv *s0 = qlora_gguf_find(g0, "tokenizer.ggml.scores"), *s1 = qlora_gguf_find(g1, "tokenizer.ggml.scores");
                CHECK(s0 && s1 && s0->arr_n == s1->arr_n && !memcmp(s0->data, s1->data, (size_t)s0->arr_n * 4));
                CHECK(g0->file.size == g1->file.size && !memcmp(g0->file.data, g1->file.data, g0->file.size));   /* byte-identical */
            }
            qlora_gguf_close(g0); qlora_gguf_close(g1);
            qlora_model_free(rl);
        }
        r = qlora_model_save_gguf(ctx, mm, OUT "/merged_f16.gguf", QLORA_TYPE_F16);
        CHECK_MSG(r == QLORA_OK, "%s", qlora_ctx_error(ctx));
        rl = NULL;
        CHECK(qlora_model_load(ctx, OUT "/merged_f16.gguf", NULL, &rl) == QLORA_OK);
        if (rl) {
            CHECK(rl->layers[0].wq.type == QLORA_TYPE_F16 && rl->layers[0].attn_norm.type == QLORA_TYPE_F32);
            float *lg = forward_all(ctx, rl, tokens, T);
            double d = lg && logits_merged ? max_diff(lg, logits_merged, (size_t)T * V) : 1e30;
            fprintf(stderr, "saved f16 GGUF reloaded: max |dlogit| = %.3g\n", d);
            CHECK(d < 0.05);
            free(lg);
            qlora_model_free(rl);
        }
        qlora_model_free(mm);

        qlora_model *mq = NULL, *mq0 = NULL;                               /* NF4 base: merge dequantizes */
        CHECK(qlora_model_load(ctx, MODEL, &lo, &mq) == QLORA_OK && qlora_model_load(ctx, MODEL, &lo, &mq0) == QLORA_OK);
        CHECK(qlora_model_quantize(ctx, mq, QLORA_TYPE_NF4, 64, 1) == QLORA_OK && qlora_model_quantize(ctx, mq0, QLORA_TYPE_NF4, 64, 1) == QLORA_OK);
        CHECK(qlora_model_merge_lora(ctx, mq, l) == QLORA_OK);
        e = check_merge(ctx, mq0, mq, l);
        fprintf(stderr, "merge NF4 base: max rel |W'x - (deq(W)x + s B A x)| = %.3g\n", e);
        CHECK(e < 1e-5);
        qlora_model_free(mq); qlora_model_free(mq0);
    }

    /* ---- bad inputs ---- */
    {
        size_t n_st = 0;
        char *st_bytes = slurp(OUT "/adapter_model.safetensors", &n_st);
        CHECK(st_bytes != NULL);
        qlora__mkdir(BAD);
        remove(BAD "/adapter_config.json");
        spit(BAD "/adapter_model.safetensors", st_bytes, n_st);
        expect_bad(ctx, m, QLORA_ERR_NOT_FOUND, "adapter_config.json", "missing adapter_config.json");

        char *c1 = replace1(cfg_text, "\"q_proj\",", "\"q_proj\",\n    \"foo_proj\",");
        spit(BAD "/adapter_config.json", c1, strlen(c1));
        expect_bad(ctx, m, QLORA_ERR_UNSUPPORTED, "foo_proj", "unknown module in target_modules");
        free(c1);
        c1 = replace1(cfg_text, "\"rank_pattern\": {}", "\"rank_pattern\": {\"q_proj\": 8}");
        spit(BAD "/adapter_config.json", c1, strlen(c1));
        expect_bad(ctx, m, QLORA_ERR_UNSUPPORTED, "rank_pattern", "rank_pattern");
        free(c1);
        c1 = replace1(cfg_text, "\"r\": 4,", "\"r\": 5,");                    /* rank disagrees with the tensors */
        spit(BAD "/adapter_config.json", c1, strlen(c1));
        expect_bad(ctx, m, QLORA_ERR_SHAPE, "lora_A.weight' has shape [4, ", "r disagrees with tensors");
        free(c1);
        c1 = replace1(cfg_text, "\"target_modules\": [", "\"target_modules\": [\n    \"lm_head\",");
        spit(BAD "/adapter_config.json", c1, strlen(c1));
        expect_bad(ctx, m, QLORA_ERR_UNSUPPORTED, "lm_head", "lm_head target");
        free(c1);
        c1 = replace1(cfg_text, "{", "{,");
        spit(BAD "/adapter_config.json", c1, strlen(c1));
        expect_bad(ctx, m, QLORA_ERR_JSON, "adapter_config.json", "malformed JSON");
        free(c1);

        /* target_modules as "all-linear" or as full module paths (PEFT >= 0.15 saves all-linear that way) */
        {
            const char *ts = strstr(cfg_text, "\"target_modules\": [");
            const char *te = ts ? strstr(ts, "]") : NULL;
            char *c2 = NULL;
            if (ts && te) {
                const char *variants[2] = { "\"target_modules\": \"all-linear\"",
                    "\"target_modules\": [\"model.layers.0.self_attn.q_proj\", \"model.layers.0.self_attn.k_proj\", \"model.layers.3.self_attn.v_proj\", "
                    "\"model.layers.0.self_attn.o_proj\", \"model.layers.0.mlp.gate_proj\", \"model.layers.0.mlp.up_proj\", \"model.layers.0.mlp.down_proj\"]" };
                for (int v = 0; v < 2; v++) {
                    size_t a = (size_t)(ts - cfg_text), nv = strlen(variants[v]);
                    c2 = (char *)malloc(n_cfg + nv + 1);
                    memcpy(c2, cfg_text, a); memcpy(c2 + a, variants[v], nv); strcpy(c2 + a + nv, te + 1);
                    spit(BAD "/adapter_config.json", c2, strlen(c2));
                    qlora_lora *lv = NULL;
                    r = qlora_lora_load_peft(ctx, m, BAD, &lv);
                    CHECK_MSG(r == QLORA_OK, "target_modules variant %d: %s", v, qlora_ctx_error(ctx));
                    CHECK(lv && lv->cfg.target_mask == QLORA_MODS_ALL_LINEAR && lv->n_params == l->n_params &&
                          !memcmp(lv->params, l->params, l->n_params * 4));
                    qlora_lora_free(lv);
                    free(c2);
                }
            }
        }
        spit(BAD "/adapter_config.json", cfg_text, n_cfg);
        spit(BAD "/adapter_model.safetensors", st_bytes, n_st - 100);          /* truncated */
        expect_bad(ctx, m, QLORA_ERR_FORMAT, "adapter_model.safetensors", "truncated safetensors");
        char *corrupt = (char *)malloc(n_st);
        memcpy(corrupt, st_bytes, n_st);
        memcpy(corrupt + 8, "[}", 2);                                          /* header JSON broken */
        spit(BAD "/adapter_model.safetensors", corrupt, n_st);
        qlora_lora *lb = NULL;
        r = qlora_lora_load_peft(ctx, m, BAD, &lb);
        CHECK_MSG(r != QLORA_OK && lb == NULL && strstr(qlora_ctx_error(ctx), "adapter_model.safetensors"), "corrupt header: %s", qlora_ctx_error(ctx));
        fprintf(stderr, "  bad input (corrupt safetensors header): %s\n", qlora_ctx_error(ctx));
        free(corrupt);

        /* wrong shape / missing / extra keys: rewrite the tensors */
        qlora_st *st = NULL;
        CHECK(qlora_st_open(ctx, OUT "/adapter_model.safetensors", &st) == QLORA_OK);
        if (st) {
            qlora_st_entry *e = (qlora_st_entry *)calloc(st->n + 1, sizeof *e);
            size_t n = 0, victim = 0;
            for (size_t i = 0; i < st->n; i++) {
                e[n].name = st->tensors[i].name; e[n].dtype = st->tensors[i].dtype; e[n].n_dims = st->tensors[i].n_dims;
                memcpy(e[n].shape, st->tensors[i].shape, sizeof e[n].shape);
                e[n].data = st->tensors[i].data; e[n].nbytes = st->tensors[i].nbytes;
                if (!strcmp(e[n].name, "base_model.model.model.layers.1.mlp.up_proj.lora_B.weight")) victim = n;
                n++;
            }
            const char *vname = "base_model.model.model.layers.1.mlp.up_proj.lora_B.weight";
            qlora_st_entry keep = e[victim];
            e[victim].shape[0] = keep.shape[0] - 1; e[victim].nbytes = keep.nbytes - 16;
            CHECK(qlora_st_write(ctx, BAD "/adapter_model.safetensors", e, n) == QLORA_OK);
            expect_bad(ctx, m, QLORA_ERR_SHAPE, vname, "wrong shape");
            e[victim] = keep;
            e[victim].dtype = "I32";
            CHECK(qlora_st_write(ctx, BAD "/adapter_model.safetensors", e, n) == QLORA_OK);
            expect_bad(ctx, m, QLORA_ERR_UNSUPPORTED, "I32", "wrong dtype");
            e[victim] = e[n - 1];
            CHECK(qlora_st_write(ctx, BAD "/adapter_model.safetensors", e, n - 1) == QLORA_OK);
            expect_bad(ctx, m, QLORA_ERR_NOT_FOUND, vname, "missing tensor");
            e[victim] = keep;
            e[n] = keep;
            e[n].name = "base_model.model.lm_head.lora_A.weight";
            CHECK(qlora_st_write(ctx, BAD "/adapter_model.safetensors", e, n + 1) == QLORA_OK);
            expect_bad(ctx, m, QLORA_ERR_FORMAT, "lm_head.lora_A.weight", "extra tensor");
            /* F16 tensors are accepted (converted exactly) */
            uint16_t *h = (uint16_t *)malloc(keep.nbytes / 2);
            for (size_t i = 0; i < keep.nbytes / 4; i++) h[i] = qlora__f32_to_fp16(((const float *)keep.data)[i]);
            e[victim].dtype = "F16"; e[victim].data = h; e[victim].nbytes = keep.nbytes / 2;
            CHECK(qlora_st_write(ctx, BAD "/adapter_model.safetensors", e, n) == QLORA_OK);
            lb = NULL;
            r = qlora_lora_load_peft(ctx, m, BAD, &lb);
            CHECK_MSG(r == QLORA_OK, "%s", qlora_ctx_error(ctx));
            if (lb) {
                const qlora_lora_module *mu = qlora_lora_get(lb, 1, QLORA_MOD_UP);
                int ok = 1;
                for (size_t i = 0; i < keep.nbytes / 4; i++) if (mu->B[i] != qlora__fp16_to_f32(h[i])) ok = 0;
                CHECK(ok);
            }
            qlora_lora_free(lb);
            free(h);
            free(e);
            qlora_st_close(st);
        }
        free(st_bytes);
    }

    /* ---- an adapter written by PEFT itself (tests/ref/check_peft_adapter.py) ---- */
    {
        FILE *f = fopen(PEFT_REF "/expected_logits.bin", "rb");
        if (!f) qt_missing(PEFT_REF "/expected_logits.bin");
        else {
            int32_t hdr[2] = { 0, 0 };
            CHECK(fread(hdr, 4, 2, f) == 2);
            int Tp = hdr[0];
            CHECK(Tp > 0 && Tp <= 64 && hdr[1] == V);
            int32_t *tk = (int32_t *)malloc((size_t)Tp * 4);
            float *want = (float *)malloc((size_t)Tp * V * 4);
            CHECK(fread(tk, 4, (size_t)Tp, f) == (size_t)Tp && fread(want, 4, (size_t)Tp * V, f) == (size_t)Tp * V);
            fclose(f);
            qlora_lora *lp = NULL;
            r = qlora_lora_load_peft(ctx, m, PEFT_REF, &lp);
            CHECK_MSG(r == QLORA_OK, "%s", qlora_ctx_error(ctx));
            qlora_model *mp = NULL;
            CHECK(qlora_model_load(ctx, MODEL, &lo, &mp) == QLORA_OK);
            if (lp && mp) {
                CHECK(lp->cfg.use_rslora && lp->cfg.target_mask == QLORA_MODS_ALL_LINEAR);
                CHECK(qlora_model_merge_lora(ctx, mp, lp) == QLORA_OK);
                float *lg = forward_all(ctx, mp, tk, Tp);
                double d = lg ? max_diff(lg, want, (size_t)Tp * V) : 1e30;
                float *lb0 = forward_all(ctx, m, tk, Tp);
                double d0 = lb0 ? max_diff(lb0, want, (size_t)Tp * V) : 0;
                fprintf(stderr, "PEFT-saved adapter, merged in qlora.h vs PeftModel logits: max |d| = %.3g (base model alone: %.3g)\n", d, d0);
                CHECK(d <= 1e-4);
                CHECK(d0 > 1e-2);
                free(lg); free(lb0);
            }
            qlora_lora_free(lp);
            qlora_model_free(mp);
            free(tk); free(want);
        }
    }

    free(logits_merged);
    free(cfg_text);
    qlora_lora_free(l);
    qlora_model_free(m);
    qlora_ctx_destroy(ctx);
    return QT_DONE("test_adapter");
}
