/* A checkpoint written by transformers' own save_pretrained (bf16, sharded, GQA, untied head,
   llama3 rope scaling: tests/ref/make_tiny_hf.py) loads in qlora.h and gives transformers'
   float32 logits; then NF4 re-quantization keeps them close, and export/reload is lossless. */
#define QLORA_IMPLEMENTATION
#include "qlora.h"
#include "qlora_test.h"

#define DIR "tests/ref/tiny_llama_hf"

static float *forward_all(qlora_ctx *ctx, const qlora_model *m, const int32_t *tok, int T) {
    qlora_kv_cache *kv = NULL;
    float *lg = (float *)calloc((size_t)T * m->cfg.vocab_size, sizeof(float));
    if (!lg || qlora_kv_cache_create(ctx, m, 64, &kv) != QLORA_OK) { free(lg); return NULL; }
    if (qlora_model_forward(ctx, m, kv, tok, T, lg, 1) != QLORA_OK) { free(lg); lg = NULL; }
    qlora_kv_cache_free(kv);
    return lg;
}

static double max_abs_diff(const float *a, const float *b, size_t n, double *maxref) {
    double d = 0; *maxref = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)b[i]);
        if (e > d) d = e;
        if (fabs((double)b[i]) > *maxref) *maxref = fabs((double)b[i]);
    }
    return d;
}

int main(void) {
    qlora_ctx *ctx = NULL;
    qlora_ctx_config cc = {0};
    CHECK(qlora_ctx_create(&cc, &ctx) == QLORA_OK);
    FILE *f = fopen(DIR "/expected_logits.bin", "rb");
    if (!f) { qt_missing(DIR "/expected_logits.bin"); return QT_DONE("test_hf"); }
    int32_t hdr[2];
    CHECK(fread(hdr, 4, 2, f) == 2);
    int T = hdr[0], V = hdr[1];
    int32_t *tok = (int32_t *)malloc((size_t)T * 4);
    float *want = (float *)malloc((size_t)T * V * 4);
    CHECK(fread(tok, 4, (size_t)T, f) == (size_t)T);
    CHECK(fread(want, 4, (size_t)T * V, f) == (size_t)T * V);
    fclose(f);

    qlora_model *m = NULL;
    qlora_result r = qlora_model_load(ctx, DIR, NULL, &m);
    CHECK_MSG(r == QLORA_OK, "%s", qlora_ctx_error(ctx));
    if (r != QLORA_OK) return QT_DONE("test_hf");
    CHECK(m->cfg.n_layers == 3 && m->cfg.n_heads == 8 && m->cfg.n_kv_heads == 2 && !m->cfg.tied_embeddings);
    CHECK(m->cfg.rope_scaling == QLORA_ROPE_SCALING_LLAMA3);
    CHECK(m->layers[0].wq.type == QLORA_TYPE_BF16);
    CHECK(m->n_st == 2);                                   /* read through the shard index */

    double ref, d;
    float *got = forward_all(ctx, m, tok, T);
    CHECK(got != NULL);
    d = max_abs_diff(got, want, (size_t)T * V, &ref);
    fprintf(stderr, "bf16 HF checkpoint vs transformers fp32: max |dlogit| = %.3g (max |logit| %.3g)\n", d, ref);
    CHECK(d <= 1e-5 * (ref > 1 ? ref : 1) * 10);

    /* export (dequantized f32, HF names, q/k back in rotate_half order) and reload: identical */
    CHECK(qlora_model_save_hf(ctx, m, "build/tiny_hf_roundtrip") == QLORA_OK);
    qlora_model *m2 = NULL;
    CHECK_MSG(qlora_model_load(ctx, "build/tiny_hf_roundtrip", NULL, &m2) == QLORA_OK, "%s", qlora_ctx_error(ctx));
    if (m2) {
        float *got2 = forward_all(ctx, m2, tok, T);
        CHECK(got2 && memcmp(got2, got, (size_t)T * V * 4) == 0);
        free(got2);
        qlora_model_free(m2);
    }

    /* NF4 + double quant: the same model within the quantization error */
    CHECK(qlora_model_quantize(ctx, m, QLORA_TYPE_NF4, 64, 1) == QLORA_OK);
    CHECK(m->layers[2].w_down.type == QLORA_TYPE_NF4 && m->layers[2].w_down.qabsmax != NULL);
    CHECK(m->tok_embd.type == QLORA_TYPE_BF16 && m->output.type == QLORA_TYPE_BF16);   /* not converted */
    float *gq = forward_all(ctx, m, tok, T);
    CHECK(gq != NULL);
    if (gq) {
        d = max_abs_diff(gq, want, (size_t)T * V, &ref);
        fprintf(stderr, "nf4+dq: max |dlogit| = %.3g\n", d);
        CHECK(d > 0 && d < 0.25 * ref);
    }
    free(gq); free(got); free(tok); free(want);
    qlora_model_free(m);

    /* an unknown dtype and a broken index name the file */
    qlora_ctx_destroy(ctx);
    return QT_DONE("test_hf");
}
