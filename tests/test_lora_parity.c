/* Parity with PyTorch + PEFT (+ bitsandbytes for the NF4 base): tests/ref/make_lora_golden.py
   built a tiny Llama and stories260K with a PEFT LoRA (r 4, alpha 8, all-linear, dropout 0) and
   recorded logits, loss, LoRA gradients and 10 AdamW steps. qlora.h loads the same base, the
   PEFT-saved adapter, and must reproduce: logits and loss within 1e-5 relative, every gradient
   tensor within 1e-4 relative, the 10 losses within 1e-4. For the NF4 variants the packed 4-bit
   codes of our quantizer are compared with bitsandbytes' byte for byte; the forward then runs on
   bitsandbytes' own quantized state (its CPU double-quant uses a LUT approximation, see manifest). */
#define QLORA_IMPLEMENTATION
#include "qlora.h"
#include "qlora_test.h"

#define GOLD "tests/ref/lora_golden/"
static qlora_ctx *ctx;

static const qlora_st_tensor *need(const qlora_st *st, const char *name) {
    const qlora_st_tensor *t = qlora_st_find(st, name);
    CHECK_MSG(t != NULL, "golden tensor %s missing", name);
    return t;
}

static double rel_l2(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) { double d = (double)a[i] - b[i]; num += d * d; den += (double)b[i] * b[i]; }
    return sqrt(num / (den > 0 ? den : 1e-30));
}
static double max_rel(const float *a, const float *b, size_t n) {   /* max |a-b| / max |b| */
    double d = 0, m = 0;
    for (size_t i = 0; i < n; i++) { double e = fabs((double)a[i] - b[i]); if (e > d) d = e; if (fabs(b[i]) > m) m = fabs(b[i]); }
    return d / (m > 0 ? m : 1);
}

/* Replace every quantizable weight by bitsandbytes' recorded NF4 state (HF module names). */
static void use_bnb_state(qlora_model *m, const qlora_st *st, int *code_mismatch, int *qabs_mismatch) {
    for (int l = 0; l < m->cfg.n_layers; l++) {
        for (int k = 0; k < QLORA_MOD_COUNT; k++) {
            qlora_tensor *w = (qlora_tensor *)qlora__module_weight(m, l, (qlora_module)k);
            char p[160], n[200];
            snprintf(p, sizeof p, "model.layers.%d.%s.%s", l, qlora_module_parent((qlora_module)k), qlora_module_name((qlora_module)k));
#define GET(suffix) (snprintf(n, sizeof n, "%s.%s", p, suffix), need(st, n))
            const qlora_st_tensor *codes = GET("weight"), *qa = GET("absmax"), *a2 = GET("nested_absmax"),
                                  *off = GET("nested_offset"), *map = GET("nested_quant_map");
#undef GET
            if (!codes || !qa || !a2 || !off || !map) return;
            /* our own NF4 + double quant of the same f32 weight */
            qlora_tensor mine;
            CHECK(qlora_tensor_quantize(w, QLORA_TYPE_NF4, 64, 1, &mine) == QLORA_OK);
            CHECK(codes->nbytes == qlora_tensor_nbytes(&mine));
            for (size_t i = 0; i < codes->nbytes; i++) *code_mismatch += codes->data[i] != ((const uint8_t *)mine.data)[i];
            for (size_t i = 0; i < qa->nbytes; i++) *qabs_mismatch += qa->data[i] != mine.qabsmax[i];
            qlora_tensor_free(&mine);
            /* adopt bnb's bytes */
            qlora_tensor q;
            memset(&q, 0, sizeof q);
            q.type = QLORA_TYPE_NF4; q.ne[0] = w->ne[0]; q.ne[1] = w->ne[1]; q.ne[2] = q.ne[3] = 1; q.n_dims = 2;
            q.blocksize = 64;
            q.data = (void *)(uintptr_t)codes->data;
            q.qabsmax = (uint8_t *)(uintptr_t)qa->data;
            q.absmax2 = (float *)(uintptr_t)a2->data;
            q.code2 = (float *)(uintptr_t)map->data;
            memcpy(&q.offset, off->data, 4);
            qlora_tensor_free(w);
            *w = q;
        }
    }
}

static void run_case(const char *base, const char *model_path, const char *variant) {
    char path[512], key[256], gk[300];
    qlora_model *m = NULL;
    qlora_st *gst = NULL, *out = NULL, *grads = NULL, *batch = NULL;
    snprintf(path, sizeof path, GOLD "%s/%s/out.safetensors", base, variant);
    if (!qt_file_exists(path)) { qt_missing(path); return; }
    if (qlora_model_load(ctx, model_path, NULL, &m) != QLORA_OK) { qt_missing(model_path); return; }
    int code_mm = 0, qa_mm = 0;
    if (!strcmp(variant, "nf4")) {
        snprintf(path, sizeof path, GOLD "%s/nf4/nf4_state.safetensors", base);
        CHECK(qlora_st_open(ctx, path, &gst) == QLORA_OK);
        if (gst) use_bnb_state(m, gst, &code_mm, &qa_mm);
        fprintf(stderr, "%s/nf4: our NF4 codes vs bitsandbytes: %d bytes differ; double-quant codes: %d differ (bnb CPU LUT)\n", base, code_mm, qa_mm);
        CHECK(code_mm == 0);
    }
    qlora_lora *l = NULL;
    snprintf(path, sizeof path, GOLD "%s/adapter_init", base);
    CHECK_MSG(qlora_lora_load_peft(ctx, m, path, &l) == QLORA_OK, "%s", qlora_ctx_error(ctx));
    snprintf(path, sizeof path, GOLD "%s/batch.safetensors", base);
    CHECK(qlora_st_open(ctx, path, &batch) == QLORA_OK);
    snprintf(path, sizeof path, GOLD "%s/%s/out.safetensors", base, variant);
    CHECK(qlora_st_open(ctx, path, &out) == QLORA_OK);
    snprintf(path, sizeof path, GOLD "%s/%s/grads.safetensors", base, variant);
    CHECK(qlora_st_open(ctx, path, &grads) == QLORA_OK);
    if (!l || !batch || !out || !grads) goto done;
    {
        const qlora_st_tensor *ids = need(batch, "input_ids"), *lab = need(batch, "labels");
        const qlora_st_tensor *glog = need(out, "logits"), *gloss = need(out, "loss"), *glosses = need(out, "losses");
        if (!ids || !lab || !glog || !gloss || !glosses) goto done;
        int B = (int)ids->shape[0], T = (int)ids->shape[1], V = m->cfg.vocab_size;
        qlora_train_config tc = { B, T, 0, 0 };
        qlora_train *t = NULL;
        CHECK(qlora_train_create(ctx, m, l, &tc, &t) == QLORA_OK);
        if (!t) goto done;
        float *logits = (float *)malloc((size_t)B * T * V * sizeof(float));
        double loss_sum; int n;
        qlora_lora_zero_grad(l);
        CHECK(qlora_train_forward(ctx, t, (const int32_t *)ids->data, (const int32_t *)lab->data, 1.0f, 0, &loss_sum, &n, logits) == QLORA_OK);
        float want_loss;
        memcpy(&want_loss, gloss->data, 4);
        double lr_ = max_rel(logits, (const float *)glog->data, (size_t)B * T * V);
        fprintf(stderr, "%s/%s: logits max rel err %.2e, loss %.8f vs %.8f (%d targets)\n", base, variant, lr_, loss_sum / n, (double)want_loss, n);
        CHECK(lr_ < 1e-5);
        CHECK(fabs(loss_sum / n - want_loss) <= 1e-5 * fabs(want_loss));
        /* gradients of mean loss: grad_scale = 1/n */
        qlora_lora_zero_grad(l);
        CHECK(qlora_train_forward(ctx, t, (const int32_t *)ids->data, (const int32_t *)lab->data, 1.0f / (float)n, 0, &loss_sum, &n, NULL) == QLORA_OK);
        CHECK(qlora_train_backward(ctx, t) == QLORA_OK);
        double worst = 0;
        for (int i = 0; i < l->n_mods; i++) {
            qlora_lora_module *md = &l->mods[i];
            for (int ab = 0; ab < 2; ab++) {
                snprintf(key, sizeof key, "base_model.model.model.layers.%d.%s.%s.lora_%c.weight", md->layer,
                         qlora_module_parent(md->mod), qlora_module_name(md->mod), ab ? 'B' : 'A');
                snprintf(gk, sizeof gk, "grad_%s", key);
                const qlora_st_tensor *g = need(grads, gk);
                if (!g) continue;
                size_t cnt = ab ? (size_t)md->out * l->cfg.r : (size_t)l->cfg.r * md->in;
                CHECK(g->nbytes == cnt * 4);
                double e = rel_l2(ab ? md->dB : md->dA, (const float *)g->data, cnt);
                if (e > worst) worst = e;
                CHECK_MSG(e < 1e-4, "%s: rel err %.2e", gk, e);
            }
        }
        fprintf(stderr, "%s/%s: worst LoRA gradient rel err %.2e over %d modules\n", base, variant, worst, l->n_mods);
        /* 10 AdamW steps (lr 1e-3, wd 0, constant, no clipping), same batch each step */
        size_t nseg = qlora_lora_segments(l, NULL, 0);
        size_t *seg = (size_t *)malloc(nseg * sizeof *seg);
        qlora_lora_segments(l, seg, nseg);
        qlora_optim_config oc;
        memset(&oc, 0, sizeof oc);
        qlora_optim *opt = NULL;
        CHECK(qlora_optim_create(ctx, &oc, seg, nseg, &opt) == QLORA_OK);
        double worst_step = 0;
        for (int s = 0; s < 10 && opt; s++) {
            qlora_lora_zero_grad(l);
            CHECK(qlora_train_forward(ctx, t, (const int32_t *)ids->data, (const int32_t *)lab->data, 1.0f / (float)n, 0, &loss_sum, &n, NULL) == QLORA_OK);
            CHECK(qlora_train_backward(ctx, t) == QLORA_OK);
            float want;
            memcpy(&want, glosses->data + 4 * s, 4);
            double e = fabs(loss_sum / n - want) / fabs(want);
            if (e > worst_step) worst_step = e;
            CHECK_MSG(e < 1e-4, "step %d loss %.8f vs %.8f", s, loss_sum / n, (double)want);
            CHECK(qlora_optim_step(opt, l->params, l->grads, 1e-3) == QLORA_OK);
        }
        fprintf(stderr, "%s/%s: 10 AdamW step losses, worst rel err %.2e (first %.6f)\n", base, variant, worst_step, (double)((const float *)glosses->data)[0]);
        qlora_optim_free(opt);
        free(seg);
        free(logits);
        qlora_train_free(t);
    }
done:
    qlora_lora_free(l);
    qlora_st_close(batch); qlora_st_close(out); qlora_st_close(grads);
    qlora_model_free(m);        /* before gst: the model borrowed bnb's bytes */
    qlora_st_close(gst);
}

int main(void) {
    qlora_ctx_config cc = {0};
    CHECK(qlora_ctx_create(&cc, &ctx) == QLORA_OK);
    run_case("tiny", GOLD "tiny/base", "f32");
    run_case("tiny", GOLD "tiny/base", "nf4");
    run_case("stories", "fixtures/stories260K.bin", "f32");
    run_case("stories", "fixtures/stories260K.bin", "nf4");
    qlora_ctx_destroy(ctx);
    return QT_DONE("test_lora_parity");
}
