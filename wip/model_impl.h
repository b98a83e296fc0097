// >>model
// The Llama forward pass, written to be read (llama2.c run.c is the model): for every token,
//   x = embed[tok]
//   per layer: h = rmsnorm(x) ; q,k,v = Wq h, Wk h, Wv h ; rope(q,k) ; a = softmax(q k^T/sqrt(D)) v
//              x += Wo a ; h = rmsnorm(x) ; x += Wdown (silu(Wgate h) * Wup h)
//   logits = Wout rmsnorm(x)
// Weights can be any qlora_type; every product goes through qlora_matmul/qlora_matvec, which
// dequantize one block at a time. Weights are kept in Hugging Face layout: RoPE rotates the pairs
// (i, i + rope_dim/2) of each head (transformers rotate_half). GGUF and llama2.c files store q/k
// rows permuted for adjacent-pair RoPE; their loaders undo that permutation, so a QLoRA base
// quantizes block for block like bitsandbytes on the HF checkpoint and adapters are PEFT's as-is.

// A 2-D view of existing data (not owned).
static void qlora__tensor_init(qlora_tensor *t, qlora_type type, int64_t ne0, int64_t ne1, const void *data) {
    memset(t, 0, sizeof *t);
    t->type = type;
    t->ne[0] = ne0; t->ne[1] = ne1; t->ne[2] = t->ne[3] = 1;
    t->n_dims = ne1 > 1 ? 2 : 1;
    t->data = (void *)(uintptr_t)data;
}

// rmsnorm (llama2.c): o = w * (x / sqrt(mean(x^2) + eps))
static void qlora__rmsnorm_forward(float *o, const float *x, const float *w, int C, float eps) {
    float ss = 0.0f;                                   // o, x: (C)   w: (C)
    for (int i = 0; i < C; i++) ss += x[i] * x[i];
    ss /= (float)C;
    ss += eps;
    ss = 1.0f / sqrtf(ss);
    for (int i = 0; i < C; i++) o[i] = w[i] * (ss * x[i]);
}

// Inverse frequency of rotary pair i (of rope_dim/2), with the checkpoint's scaling rule.
static float qlora__rope_freq(const qlora_model_config *c, int i) {
    float freq = 1.0f / powf(c->rope_theta, (float)(2 * i) / (float)c->rope_dim);
    if (c->rope_scaling == QLORA_ROPE_SCALING_LLAMA3) {
        // transformers _compute_llama3_parameters
        const float pi = 3.14159265358979323846f;
        float lo_wl = (float)c->rope_orig_ctx / c->rope_low_freq_factor;
        float hi_wl = (float)c->rope_orig_ctx / c->rope_high_freq_factor;
        float wl = 2.0f * pi / freq;
        if (wl > lo_wl) freq = freq / c->rope_factor;
        else if (wl >= hi_wl) {
            float smooth = ((float)c->rope_orig_ctx / wl - c->rope_low_freq_factor) / (c->rope_high_freq_factor - c->rope_low_freq_factor);
            freq = (1.0f - smooth) * freq / c->rope_factor + smooth * freq;
        }
    }
    return freq;
}

// rope: rotate the pairs (v[i], v[i + rope_dim/2]) of each head by angle pos * freq_i (rotate_half).
static void qlora__rope_forward(float *v, int n_heads, int D, int pos, const qlora_model_config *c) {
    float p = (float)pos;                              // v: (n_heads, D)
    int half = c->rope_dim / 2;
    if (c->rope_scaling == QLORA_ROPE_SCALING_LINEAR && c->rope_factor > 0) p /= c->rope_factor;
    for (int i = 0; i < half; i++) {
        float ang = p * qlora__rope_freq(c, i);
        float fcr = cosf(ang), fci = sinf(ang);
        for (int h = 0; h < n_heads; h++) {
            float *x = v + (size_t)h * D + i;
            float x0 = x[0], x1 = x[half];
            x[0] = x0 * fcr - x1 * fci;
            x[half] = x0 * fci + x1 * fcr;
        }
    }
}

static void qlora__softmax(float *x, int n) {
    float mx = x[0];
    for (int i = 1; i < n; i++) if (x[i] > mx) mx = x[i];
    float sum = 0.0f;
    for (int i = 0; i < n; i++) { x[i] = expf(x[i] - mx); sum += x[i]; }
    for (int i = 0; i < n; i++) x[i] /= sum;
}

struct qlora_kv_cache {
    int n_ctx, pos, max_T;
    int L, kv_dim;
    float *k, *v;          // (L, n_ctx, Hkv*D)
    float *x, *xb, *xb2;   // (max_T, C) residual, normed, attention out
    float *q;              // (max_T, H*D)
    float *kt, *vt;        // (max_T, Hkv*D)
    float *hb, *hb2;       // (max_T, F)
    float *att;            // (max_T * H, n_ctx)
    float *logits_tmp;     // (V)
    float *wtmp;           // (C) weights of a norm converted to f32
    float *lora_u, *lora_y;// (max_T, 256) (max_T, max(qd, F, C)) adapter branch scratch
};

QLORA__DEF void qlora_kv_cache_free(qlora_kv_cache *kv) {
    if (!kv) return;
    QLORA__FREE(kv->k); QLORA__FREE(kv->v); QLORA__FREE(kv->x); QLORA__FREE(kv->xb); QLORA__FREE(kv->xb2);
    QLORA__FREE(kv->q); QLORA__FREE(kv->kt); QLORA__FREE(kv->vt); QLORA__FREE(kv->hb); QLORA__FREE(kv->hb2);
    QLORA__FREE(kv->att); QLORA__FREE(kv->logits_tmp); QLORA__FREE(kv->wtmp);
    QLORA__FREE(kv->lora_u); QLORA__FREE(kv->lora_y);
    QLORA__FREE(kv);
}

QLORA__DEF qlora_result qlora_kv_cache_create(qlora_ctx *ctx, const qlora_model *m, int n_ctx, qlora_kv_cache **out) {
    const qlora_model_config *c = &m->cfg;
    *out = NULL;
    if (n_ctx <= 0) n_ctx = c->max_seq_len > 0 ? QLORA__MIN(c->max_seq_len, 4096) : 2048;
    qlora_kv_cache *kv = QLORA__CALLOC_T(qlora_kv_cache, 1);
    if (!kv) return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "kv cache: out of memory");
    kv->n_ctx = n_ctx;
    kv->max_T = 16;
    kv->L = c->n_layers;
    kv->kv_dim = c->n_kv_heads * c->head_dim;
    size_t T = (size_t)kv->max_T, qd = (size_t)c->n_heads * (size_t)c->head_dim, cache;
    if (!qlora__mul_ok((size_t)kv->L * (size_t)n_ctx, (size_t)kv->kv_dim, &cache))
        { qlora_kv_cache_free(kv); return QLORA__ERR(ctx, QLORA_ERR_SHAPE, "kv cache: %d tokens do not fit in memory", n_ctx); }
    kv->k = QLORA__CALLOC_T(float, cache);
    kv->v = QLORA__CALLOC_T(float, cache);
    kv->x = QLORA__CALLOC_T(float, T * (size_t)c->dim);
    kv->xb = QLORA__CALLOC_T(float, T * QLORA__MAX((size_t)c->dim, qd));
    kv->xb2 = QLORA__CALLOC_T(float, T * QLORA__MAX((size_t)c->dim, qd));
    kv->q = QLORA__CALLOC_T(float, T * qd);
    kv->kt = QLORA__CALLOC_T(float, T * (size_t)kv->kv_dim);
    kv->vt = QLORA__CALLOC_T(float, T * (size_t)kv->kv_dim);
    kv->hb = QLORA__CALLOC_T(float, T * (size_t)c->hidden_dim);
    kv->hb2 = QLORA__CALLOC_T(float, T * (size_t)c->hidden_dim);
    kv->att = QLORA__CALLOC_T(float, T * (size_t)c->n_heads * (size_t)n_ctx);
    kv->logits_tmp = QLORA__CALLOC_T(float, (size_t)c->vocab_size);
    kv->wtmp = QLORA__CALLOC_T(float, (size_t)c->dim);
    kv->lora_u = QLORA__CALLOC_T(float, T * 256);
    kv->lora_y = QLORA__CALLOC_T(float, T * QLORA__MAX(QLORA__MAX((size_t)c->dim, qd), (size_t)c->hidden_dim));
    if (!kv->lora_u || !kv->lora_y || !kv->k || !kv->v || !kv->x || !kv->xb || !kv->xb2 || !kv->q || !kv->kt || !kv->vt || !kv->hb ||
        !kv->hb2 || !kv->att || !kv->logits_tmp || !kv->wtmp) {
        qlora_kv_cache_free(kv);
        return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "kv cache for %d tokens: out of memory", n_ctx);
    }
    *out = kv;
    return QLORA_OK;
}
QLORA__DEF int qlora_kv_cache_pos(const qlora_kv_cache *kv) { return kv->pos; }
QLORA__DEF void qlora_kv_cache_reset(qlora_kv_cache *kv) { kv->pos = 0; }

// Norm weights may be stored in any float type; give them as f32.
static const float *qlora__as_f32(const qlora_tensor *t, float *tmp) {
    if (t->type == QLORA_TYPE_F32) return (const float *)t->data;
    if (qlora_tensor_dequantize_rows(t, 0, 1, tmp) != QLORA_OK) return NULL;
    return tmp;
}

// Causal attention of T new tokens against the cache, threaded over (token, head) pairs.
typedef struct qlora__attn_job {
    const qlora_model_config *c;
    qlora_kv_cache *kv;
    int layer, T, pos0;
} qlora__attn_job;

static void qlora__attn_task(void *arg, int ith, int nth) {
    qlora__attn_job *j = (qlora__attn_job *)arg;
    const qlora_model_config *c = j->c;
    qlora_kv_cache *kv = j->kv;
    int H = c->n_heads, D = c->head_dim, grp = c->n_heads / c->n_kv_heads;
    size_t b, e;
    qlora__split((size_t)j->T * (size_t)H, ith, nth, &b, &e);
    float scale = 1.0f / sqrtf((float)D);
    const float *kc = kv->k + (size_t)j->layer * kv->n_ctx * kv->kv_dim;   // (n_ctx, Hkv*D)
    const float *vc = kv->v + (size_t)j->layer * kv->n_ctx * kv->kv_dim;
    for (size_t th = b; th < e; th++) {
        int t = (int)(th / (size_t)H), h = (int)(th % (size_t)H), kvh = h / grp;
        int n = j->pos0 + t + 1;                                            // keys 0..pos
        const float *q = kv->q + ((size_t)t * H + h) * D;                  // (D)
        float *att = kv->att + th * (size_t)kv->n_ctx;                     // (n)
        for (int p = 0; p < n; p++) {
            const float *k = kc + (size_t)p * kv->kv_dim + (size_t)kvh * D;
            float s = 0.0f;
            for (int i = 0; i < D; i++) s += q[i] * k[i];
            att[p] = s * scale;
        }
        qlora__softmax(att, n);
        float *o = kv->xb2 + ((size_t)t * H + h) * D;                      // (D)
        for (int i = 0; i < D; i++) o[i] = 0.0f;
        for (int p = 0; p < n; p++) {
            const float *v = vc + (size_t)p * kv->kv_dim + (size_t)kvh * D;
            float a = att[p];
            for (int i = 0; i < D; i++) o[i] += a * v[i];
        }
    }
}

// y (T, out) = W x (+ b) (+ s * B A x when m->adapter has this module): the inference linear.
static qlora_result qlora__linear_infer(qlora_ctx *ctx, const qlora_model *m, qlora_kv_cache *kv, int layer, int mod,
                                        const qlora_tensor *W, const qlora_tensor *b, const float *x, int T, float *y) {
    qlora_result r = qlora_matmul(ctx, W, x, (size_t)T, y);
    if (r != QLORA_OK) return r;
    int in = (int)W->ne[0], out = (int)W->ne[1];
    const qlora_lora_module *md = m->adapter ? m->adapter->by[layer * QLORA_MOD_COUNT + mod] : NULL;
    const float *bias = md && md->bias ? md->bias : b && b->data ? (const float *)b->data : NULL;
    if (bias) for (int t = 0; t < T; t++) for (int o = 0; o < out; o++) y[(size_t)t * out + o] += bias[o];
    if (!md) return QLORA_OK;
    int R = m->adapter->cfg.r;
    if (R > 256) return QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "adapter rank %d > 256 is not supported for generation", R);
    qlora_tensor A, Bt;
    qlora__tensor_init(&A, QLORA_TYPE_F32, in, R, md->A);
    qlora__tensor_init(&Bt, QLORA_TYPE_F32, R, out, md->B);
    if ((r = qlora_matmul(ctx, &A, x, (size_t)T, kv->lora_u)) != QLORA_OK) return r;
    if ((r = qlora_matmul(ctx, &Bt, kv->lora_u, (size_t)T, kv->lora_y)) != QLORA_OK) return r;
    float s = m->adapter->scaling;
    for (size_t i = 0; i < (size_t)T * out; i++) y[i] += s * kv->lora_y[i];
    return QLORA_OK;
}

// One chunk of T <= max_T tokens.
static qlora_result qlora__forward_chunk(qlora_ctx *ctx, const qlora_model *m, qlora_kv_cache *kv,
                                         const int32_t *tokens, int T, float *logits, int all_logits) {
    const qlora_model_config *c = &m->cfg;
    int C = c->dim, F = c->hidden_dim, H = c->n_heads, Hkv = c->n_kv_heads, D = c->head_dim, V = c->vocab_size;
    int qd = H * D, kvd = Hkv * D, pos0 = kv->pos;
    qlora_result r;
#define QLORA__TRY(x) do { if ((r = (x)) != QLORA_OK) return r; } while (0)
    for (int t = 0; t < T; t++) {
        if (tokens[t] < 0 || tokens[t] >= V) return QLORA__ERR(ctx, QLORA_ERR_RANGE, "token id %d out of range [0, %d)", tokens[t], V);
        QLORA__TRY(qlora_tensor_dequantize_rows(&m->tok_embd, (size_t)tokens[t], 1, kv->x + (size_t)t * C));
    }
    for (int l = 0; l < c->n_layers; l++) {
        const qlora_layer *ly = &m->layers[l];
        const float *w = qlora__as_f32(&ly->attn_norm, kv->wtmp);
        if (!w) return QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "layer %d: attn_norm type", l);
        for (int t = 0; t < T; t++) qlora__rmsnorm_forward(kv->xb + (size_t)t * C, kv->x + (size_t)t * C, w, C, c->norm_eps);
        QLORA__TRY(qlora__linear_infer(ctx, m, kv, l, 0, &ly->wq, &ly->bq, kv->xb, T, kv->q));
        QLORA__TRY(qlora__linear_infer(ctx, m, kv, l, 1, &ly->wk, &ly->bk, kv->xb, T, kv->kt));
        QLORA__TRY(qlora__linear_infer(ctx, m, kv, l, 2, &ly->wv, &ly->bv, kv->xb, T, kv->vt));
        for (int t = 0; t < T; t++) {
            qlora__rope_forward(kv->q + (size_t)t * qd, H, D, pos0 + t, c);
            qlora__rope_forward(kv->kt + (size_t)t * kvd, Hkv, D, pos0 + t, c);
            size_t at = ((size_t)l * kv->n_ctx + (size_t)(pos0 + t)) * kvd;
            memcpy(kv->k + at, kv->kt + (size_t)t * kvd, (size_t)kvd * sizeof(float));
            memcpy(kv->v + at, kv->vt + (size_t)t * kvd, (size_t)kvd * sizeof(float));
        }
        qlora__attn_job job = { c, kv, l, T, pos0 };
        qlora_parallel_for(ctx, qlora__attn_task, &job);
        QLORA__TRY(qlora__linear_infer(ctx, m, kv, l, 3, &ly->wo, NULL, kv->xb2, T, kv->xb));
        for (size_t i = 0; i < (size_t)T * C; i++) kv->x[i] += kv->xb[i];
        w = qlora__as_f32(&ly->ffn_norm, kv->wtmp);
        if (!w) return QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "layer %d: ffn_norm type", l);
        for (int t = 0; t < T; t++) qlora__rmsnorm_forward(kv->xb + (size_t)t * C, kv->x + (size_t)t * C, w, C, c->norm_eps);
        QLORA__TRY(qlora__linear_infer(ctx, m, kv, l, 4, &ly->w_gate, NULL, kv->xb, T, kv->hb));
        QLORA__TRY(qlora__linear_infer(ctx, m, kv, l, 5, &ly->w_up, NULL, kv->xb, T, kv->hb2));
        for (size_t i = 0; i < (size_t)T * F; i++) {                       // SwiGLU
            float g = kv->hb[i];
            g *= 1.0f / (1.0f + expf(-g));
            kv->hb[i] = g * kv->hb2[i];
        }
        QLORA__TRY(qlora__linear_infer(ctx, m, kv, l, 6, &ly->w_down, NULL, kv->hb, T, kv->xb));
        for (size_t i = 0; i < (size_t)T * C; i++) kv->x[i] += kv->xb[i];
    }
    kv->pos += T;
    if (!logits) return QLORA_OK;
    const float *w = qlora__as_f32(&m->out_norm, kv->wtmp);
    if (!w) return QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "output_norm type");
    int t0 = all_logits ? 0 : T - 1;
    for (int t = t0; t < T; t++) qlora__rmsnorm_forward(kv->xb + (size_t)t * C, kv->x + (size_t)t * C, w, C, c->norm_eps);
    QLORA__TRY(qlora_matmul(ctx, &m->output, kv->xb + (size_t)t0 * C, (size_t)(T - t0), logits));
#undef QLORA__TRY
    return QLORA_OK;
}

QLORA__DEF qlora_result qlora_model_forward(qlora_ctx *ctx, const qlora_model *m, qlora_kv_cache *kv,
                                            const int32_t *tokens, int T, float *logits, int all_logits) {
    if (T <= 0) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "forward: no tokens");
    if (kv->pos + T > kv->n_ctx)
        return QLORA__ERR(ctx, QLORA_ERR_RANGE, "context full: %d + %d tokens > n_ctx %d", kv->pos, T, kv->n_ctx);
    for (int t = 0; t < T; t += kv->max_T) {
        int n = QLORA__MIN(kv->max_T, T - t);
        int last = t + n == T;
        float *lg = logits && (all_logits || last) ? logits + (all_logits ? (size_t)t * m->cfg.vocab_size : 0) : NULL;
        qlora_result r = qlora__forward_chunk(ctx, m, kv, tokens + t, n, lg, all_logits);
        if (r != QLORA_OK) return r;
    }
    return QLORA_OK;
}

// >>generate
// xorshift64* (Vigna) — tiny, seedable, identical everywhere.
static uint64_t qlora__rng_u64(uint64_t *s) {
    uint64_t x = *s ? *s : 0x9E3779B97F4A7C15ull;
    x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}
static float qlora__rng_f32(uint64_t *s) { return (float)(qlora__rng_u64(s) >> 40) / 16777216.0f; }

typedef struct qlora__prob { float p; int32_t id; } qlora__prob;
static int qlora__prob_desc(const void *a, const void *b) {
    const qlora__prob *x = (const qlora__prob *)a, *y = (const qlora__prob *)b;
    if (x->p != y->p) return x->p < y->p ? 1 : -1;
    return x->id - y->id;
}

QLORA__DEF int32_t qlora_sample(qlora_sampler *s, float *logits, int V) {
    if (s->temperature <= 0.0f) {                       // greedy: first maximum
        int32_t best = 0;
        for (int i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
        return best;
    }
    if (!s->state) s->state = s->seed ^ 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < V; i++) logits[i] /= s->temperature;
    qlora__softmax(logits, V);
    int use_k = s->top_k > 0 && s->top_k < V, use_p = s->top_p > 0.0f && s->top_p < 1.0f;
    float u = qlora__rng_f32(&s->state);
    if (!use_k && !use_p) {
        float cdf = 0.0f;
        for (int i = 0; i < V; i++) { cdf += logits[i]; if (u < cdf) return i; }
        return V - 1;
    }
    qlora__prob *pr = (qlora__prob *)QLORA__MALLOC((size_t)V * sizeof *pr);
    if (!pr) {                                          // no memory: fall back to greedy
        int32_t best = 0;
        for (int i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
        return best;
    }
    for (int i = 0; i < V; i++) { pr[i].p = logits[i]; pr[i].id = i; }
    qsort(pr, (size_t)V, sizeof *pr, qlora__prob_desc);
    int n = use_k ? s->top_k : V;
    float total = 0.0f;
    for (int i = 0; i < n; i++) total += pr[i].p;
    if (use_p) {                                        // smallest prefix with mass >= top_p
        float cum = 0.0f;
        for (int i = 0; i < n; i++) { cum += pr[i].p / total; if (cum >= s->top_p) { n = i + 1; break; } }
        total = 0.0f;
        for (int i = 0; i < n; i++) total += pr[i].p;
    }
    float cdf = 0.0f, target = u * total;
    int32_t id = pr[n - 1].id;
    for (int i = 0; i < n; i++) { cdf += pr[i].p; if (target < cdf) { id = pr[i].id; break; } }
    QLORA__FREE(pr);
    return id;
}

QLORA__DEF qlora_result qlora_generate(qlora_ctx *ctx, const qlora_model *m, qlora_kv_cache *kv,
                                       const int32_t *prompt, int n_prompt, qlora_sampler *s, int n_max,
                                       int32_t *out, int *n_out,
                                       int (*on_token)(void *user, int32_t id), void *user) {
    int V = m->cfg.vocab_size;
    *n_out = 0;
    if (n_prompt <= 0) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "generate: empty prompt (start from BOS)");
    float *logits = kv->logits_tmp;
    qlora_result r = qlora_model_forward(ctx, m, kv, prompt, n_prompt, logits, 0);
    if (r != QLORA_OK) return r;
    for (int i = 0; i < n_max; i++) {
        int32_t id = qlora_sample(s, logits, V);
        if (m->tok && qlora_tokenizer_is_eog(m->tok, id)) break;
        out[(*n_out)++] = id;
        if (on_token && on_token(user, id)) break;
        if (i + 1 == n_max || kv->pos >= kv->n_ctx) break;
        if ((r = qlora_model_forward(ctx, m, kv, &id, 1, logits, 0)) != QLORA_OK) return r;
    }
    return QLORA_OK;
}

QLORA__DEF qlora_result qlora_model_nll(qlora_ctx *ctx, const qlora_model *m, const int32_t *tokens, int n,
                                        int n_ctx, double *mean_nll, int *n_scored) {
    int V = m->cfg.vocab_size;
    *mean_nll = 0; *n_scored = 0;
    if (n_ctx < 2) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "nll: window must hold >= 2 tokens");
    qlora_kv_cache *kv = NULL;
    qlora_result r = qlora_kv_cache_create(ctx, m, n_ctx, &kv);
    if (r != QLORA_OK) return r;
    float *lg = QLORA__CALLOC_T(float, (size_t)n_ctx * (size_t)V);
    if (!lg) { qlora_kv_cache_free(kv); return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "nll: out of memory"); }
    double sum = 0;
    int cnt = 0;
    for (int w0 = 0; w0 + 1 < n; w0 += n_ctx) {
        int T = QLORA__MIN(n_ctx, n - w0);
        if (T < 2) break;
        qlora_kv_cache_reset(kv);
        if ((r = qlora_model_forward(ctx, m, kv, tokens + w0, T, lg, 1)) != QLORA_OK) break;
        for (int t = 0; t + 1 < T; t++) {
            const float *l = lg + (size_t)t * V;
            float mx = l[0];
            for (int i = 1; i < V; i++) if (l[i] > mx) mx = l[i];
            double se = 0;
            for (int i = 0; i < V; i++) se += exp((double)(l[i] - mx));
            sum += (double)mx + log(se) - (double)l[tokens[w0 + t + 1]];
            cnt++;
        }
    }
    QLORA__FREE(lg);
    qlora_kv_cache_free(kv);
    if (r != QLORA_OK) return r;
    *mean_nll = cnt ? sum / cnt : 0;
    *n_scored = cnt;
    return QLORA_OK;
}

// >>loaders

static void qlora__model_defaults(qlora_model_config *c) {
    if (c->head_dim <= 0 && c->n_heads > 0) c->head_dim = c->dim / c->n_heads;
    if (c->n_kv_heads <= 0) c->n_kv_heads = c->n_heads;
    if (c->norm_eps <= 0) c->norm_eps = 1e-5f;
    if (c->rope_theta <= 0) c->rope_theta = 10000.0f;
    if (c->rope_dim <= 0) c->rope_dim = c->head_dim;
}

static qlora_result qlora__model_check_config(qlora_ctx *ctx, const char *path, const qlora_model_config *c) {
    if (c->dim <= 0 || c->hidden_dim <= 0 || c->n_layers <= 0 || c->n_heads <= 0 || c->n_kv_heads <= 0 ||
        c->vocab_size <= 0 || c->head_dim <= 0 || c->dim > (1 << 16) || c->hidden_dim > (1 << 18) ||
        c->n_layers > 1024 || c->vocab_size > (1 << 24) || c->head_dim > 1024)
        return QLORA__ERR(ctx, QLORA_ERR_SHAPE, "%s: impossible model shape (dim %d, hidden %d, layers %d, heads %d/%d, vocab %d)",
                          path, c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->vocab_size);
    if (c->n_heads % c->n_kv_heads != 0)
        return QLORA__ERR(ctx, QLORA_ERR_SHAPE, "%s: n_heads %d is not a multiple of n_kv_heads %d", path, c->n_heads, c->n_kv_heads);
    if (c->rope_dim > c->head_dim || c->rope_dim % 2)
        return QLORA__ERR(ctx, QLORA_ERR_SHAPE, "%s: rope dimension %d does not fit head_dim %d", path, c->rope_dim, c->head_dim);
    return QLORA_OK;
}

QLORA__DEF void qlora_model_free(qlora_model *m) {
    if (!m) return;
    qlora_tensor *all[3] = { &m->tok_embd, &m->out_norm, &m->output };
    if (m->output.data == m->tok_embd.data) all[2] = NULL;
    for (int i = 0; i < 3; i++) if (all[i]) qlora_tensor_free(all[i]);
    if (m->layers) {
        for (int l = 0; l < m->cfg.n_layers; l++) {
            qlora_layer *ly = &m->layers[l];
            qlora_tensor *ts[] = { &ly->attn_norm, &ly->wq, &ly->wk, &ly->wv, &ly->wo, &ly->bq, &ly->bk, &ly->bv,
                                   &ly->ffn_norm, &ly->w_gate, &ly->w_up, &ly->w_down };
            for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) qlora_tensor_free(ts[i]);
        }
    }
    QLORA__FREE(m->layers);
    if (m->tok) qlora_tokenizer_free(m->tok);
    if (m->gguf) qlora_gguf_close(m->gguf);
    for (size_t i = 0; i < m->n_st; i++) qlora_st_close(m->st[i]);
    QLORA__FREE(m->st);
    qlora_file_close(&m->raw);
    QLORA__FREE(m->chat_template);
    QLORA__FREE(m);
}

// GGUF / llama2.c q,k rows are permuted for adjacent-pair RoPE (llama.cpp convert_hf_to_gguf.py
// `permute`): gguf_row[h*D + 2i + j] = hf_row[h*D + j*D/2 + i]. Returns the HF row of GGUF row `row`.
static size_t qlora__rope_perm_row(size_t row, int D) {
    size_t h = row / (size_t)D, r = row % (size_t)D, i = r / 2, j = r % 2;
    return h * (size_t)D + j * ((size_t)D / 2) + i;
}
// Replace t (GGUF row order) by an owned copy in HF row order (rows are whole ggml blocks).
static qlora_result qlora__unpermute_rows(qlora_ctx *ctx, qlora_tensor *t, int D) {
    size_t rb = qlora_ggml_row_bytes(t->type, (size_t)t->ne[0]), rows = (size_t)t->ne[1];
    if (rows == 1 && t->type == QLORA_TYPE_F32) { rb = sizeof(float); rows = (size_t)t->ne[0]; }   // a bias: elements
    if (!rb || rows % (size_t)D) return QLORA__ERR(ctx, QLORA_ERR_SHAPE, "q/k weight with %zu rows is not a whole number of %d-dim heads", rows, D);
    uint8_t *dst = (uint8_t *)qlora__calloc(rows, rb);
    if (!dst) return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "out of memory");
    for (size_t g = 0; g < rows; g++) memcpy(dst + qlora__rope_perm_row(g, D) * rb, (const uint8_t *)t->data + g * rb, rb);
    if (t->owns_data) QLORA__FREE(t->data);
    t->data = dst;
    t->owns_data = 1;
    return QLORA_OK;
}

// ---- llama2.c checkpoints (run.c legacy: 7 x int32 header; export.py v1: "ak42" + 256-byte header)
static qlora_result qlora__load_llama2c(qlora_ctx *ctx, const char *path, qlora_model *m) {
    qlora_result r = qlora_file_open(ctx, path, &m->raw);
    if (r != QLORA_OK) return r;
    const uint8_t *d = m->raw.data;
    size_t size = m->raw.size, off;
    int32_t h[7];
    int shared = 1, v1 = 0;
    if (size < 28) return QLORA__ERR(ctx, QLORA_ERR_FORMAT, "%s: truncated llama2.c header (%zu bytes)", path, size);
    if (qlora__rd_u32(d) == 0x616b3432u) {
        if (size < 256) return QLORA__ERR(ctx, QLORA_ERR_FORMAT, "%s: truncated llama2.c v1 header", path);
        int32_t ver = (int32_t)qlora__rd_u32(d + 4);
        if (ver != 1) return QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "%s: llama2.c export version %d (only 1 = fp32 is supported)", path, ver);
        for (int i = 0; i < 7; i++) h[i] = (int32_t)qlora__rd_u32(d + 8 + 4 * i);
        shared = d[36] != 0;
        off = 256;
        v1 = 1;
    } else {
        for (int i = 0; i < 7; i++) h[i] = (int32_t)qlora__rd_u32(d + 4 * i);
        shared = h[5] > 0;
        if (h[5] < 0) h[5] = -h[5];
        off = 28;
    }
    qlora_model_config *c = &m->cfg;
    c->dim = h[0]; c->hidden_dim = h[1]; c->n_layers = h[2]; c->n_heads = h[3]; c->n_kv_heads = h[4];
    c->vocab_size = h[5]; c->max_seq_len = h[6];
    c->tied_embeddings = shared;
    qlora__model_defaults(c);
    if (qlora__model_check_config(ctx, path, c) != QLORA_OK)
        return QLORA__ERR(ctx, QLORA_ERR_FORMAT, "%s: not a recognised model file (no GGUF magic, not a HF directory, and as a llama2.c checkpoint its header is impossible: dim %d, layers %d, heads %d/%d, vocab %d)",
                          path, c->dim, c->n_layers, c->n_heads, c->n_kv_heads, c->vocab_size);
    if (c->dim % c->n_heads) return QLORA__ERR(ctx, QLORA_ERR_SHAPE, "%s: dim %d not divisible by %d heads", path, c->dim, c->n_heads);
    size_t C = (size_t)c->dim, F = (size_t)c->hidden_dim, L = (size_t)c->n_layers, V = (size_t)c->vocab_size;
    size_t kvd = (size_t)c->n_kv_heads * (size_t)c->head_dim, D = (size_t)c->head_dim, S = (size_t)(c->max_seq_len > 0 ? c->max_seq_len : 0);
    // total floats the checkpoint must hold
    size_t need = V * C + L * (2 * C + C * C + 2 * kvd * C + C * C + 3 * F * C) + C + (v1 ? 0 : S * D) + (shared ? 0 : V * C);
    if ((size - off) / 4 < need)
        return QLORA__ERR(ctx, QLORA_ERR_FORMAT, "%s: truncated: %zu bytes of weights, the header needs %zu", path, size - off, need * 4);
    m->layers = QLORA__CALLOC_T(qlora_layer, L);
    if (!m->layers) return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    const float *p = (const float *)(const void *)(d + off);
#define QLORA__TAKE(t, ne0, ne1) do { qlora__tensor_init((t), QLORA_TYPE_F32, (int64_t)(ne0), (int64_t)(ne1), p); p += (size_t)(ne0) * (size_t)(ne1); } while (0)
    if (!v1) {
        QLORA__TAKE(&m->tok_embd, C, V);
        for (size_t l = 0; l < L; l++) QLORA__TAKE(&m->layers[l].attn_norm, C, 1);
        for (size_t l = 0; l < L; l++) QLORA__TAKE(&m->layers[l].wq, C, C);
        for (size_t l = 0; l < L; l++) QLORA__TAKE(&m->layers[l].wk, C, kvd);
        for (size_t l = 0; l < L; l++) QLORA__TAKE(&m->layers[l].wv, C, kvd);
        for (size_t l = 0; l < L; l++) QLORA__TAKE(&m->layers[l].wo, C, C);
        for (size_t l = 0; l < L; l++) QLORA__TAKE(&m->layers[l].ffn_norm, C, 1);
        for (size_t l = 0; l < L; l++) QLORA__TAKE(&m->layers[l].w_gate, C, F);
        for (size_t l = 0; l < L; l++) QLORA__TAKE(&m->layers[l].w_down, F, C);
        for (size_t l = 0; l < L; l++) QLORA__TAKE(&m->layers[l].w_up, C, F);
        QLORA__TAKE(&m->out_norm, C, 1);
        p += S * D;                                    // freq_cis_real + freq_cis_imag (unused)
    } else {
        for (size_t l = 0; l < L; l++) QLORA__TAKE(&m->layers[l].attn_norm, C, 1);
        for (size_t l = 0; l < L; l++) QLORA__TAKE(&m->layers[l].ffn_norm, C, 1);
        QLORA__TAKE(&m->out_norm, C, 1);
        QLORA__TAKE(&m->tok_embd, C, V);
        for (size_t l = 0; l < L; l++) QLORA__TAKE(&m->layers[l].wq, C, C);
        for (size_t l = 0; l < L; l++) QLORA__TAKE(&m->layers[l].wk, C, kvd);
        for (size_t l = 0; l < L; l++) QLORA__TAKE(&m->layers[l].wv, C, kvd);
        for (size_t l = 0; l < L; l++) QLORA__TAKE(&m->layers[l].wo, C, C);
        for (size_t l = 0; l < L; l++) QLORA__TAKE(&m->layers[l].w_gate, C, F);
        for (size_t l = 0; l < L; l++) QLORA__TAKE(&m->layers[l].w_down, F, C);
        for (size_t l = 0; l < L; l++) QLORA__TAKE(&m->layers[l].w_up, C, F);
    }
    if (shared) m->output = m->tok_embd;
    else QLORA__TAKE(&m->output, C, V);
#undef QLORA__TAKE
    for (size_t l = 0; l < L; l++) {                      // Meta/llama2.c q,k layout -> HF
        if ((r = qlora__unpermute_rows(ctx, &m->layers[l].wq, c->head_dim)) != QLORA_OK) return r;
        if ((r = qlora__unpermute_rows(ctx, &m->layers[l].wk, c->head_dim)) != QLORA_OK) return r;
    }
    strcpy(m->arch, "llama");
    strcpy(m->source, "llama2c");
    return QLORA_OK;
}

// ---- GGUF (llama.cpp naming, see qlora-facts §7.2)
static qlora_result qlora__gguf_take(qlora_ctx *ctx, const char *path, const qlora_gguf *g, const char *name,
                                     int64_t ne0, int64_t ne1, int optional, qlora_tensor *t) {
    const qlora_gguf_tensor *gt = qlora_gguf_find_tensor(g, name);
    memset(t, 0, sizeof *t);
    if (!gt) {
        if (optional) return QLORA_OK;
        return QLORA__ERR(ctx, QLORA_ERR_NOT_FOUND, "%s: tensor '%s' is missing", path, name);
    }
    if (gt->type == QLORA_TYPE_COUNT)
        return QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "%s: tensor '%s' has ggml type %u, which qlora.h cannot read (supported: f32 f16 bf16 q8_0 q4_0 q4_1)", path, name, gt->ggml_type);
    if (gt->ne[0] != ne0 || gt->ne[1] != ne1 || gt->ne[2] != 1 || gt->ne[3] != 1)
        return QLORA__ERR(ctx, QLORA_ERR_SHAPE, "%s: tensor '%s' has shape [%lld, %lld], expected [%lld, %lld]", path, name,
                          (long long)gt->ne[0], (long long)gt->ne[1], (long long)ne0, (long long)ne1);
    qlora__tensor_init(t, gt->type, ne0, ne1, gt->data);
    return QLORA_OK;
}

static qlora_result qlora__load_gguf(qlora_ctx *ctx, const char *path, qlora_model *m) {
    qlora_result r = qlora_gguf_open(ctx, path, &m->gguf);
    if (r != QLORA_OK) return r;
    qlora_gguf *g = m->gguf;
    qlora_str arch = qlora_gguf_string(g, "general.architecture");
    if (!arch.ptr) return QLORA__ERR(ctx, QLORA_ERR_FORMAT, "%s: general.architecture is missing", path);
    if (!(arch.len == 5 && !memcmp(arch.ptr, "llama", 5)))
        return QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "%s: architecture '%.*s' is not supported yet (llama is)", path, (int)arch.len, arch.ptr);
    char key[96];
#define QLORA__KEY(s) (snprintf(key, sizeof key, "%.*s.%s", (int)arch.len, arch.ptr, s), key)
    qlora_model_config *c = &m->cfg;
    c->dim = (int)qlora_gguf_int(g, QLORA__KEY("embedding_length"), 0);
    c->hidden_dim = (int)qlora_gguf_int(g, QLORA__KEY("feed_forward_length"), 0);
    c->n_layers = (int)qlora_gguf_int(g, QLORA__KEY("block_count"), 0);
    c->n_heads = (int)qlora_gguf_int(g, QLORA__KEY("attention.head_count"), 0);
    c->n_kv_heads = (int)qlora_gguf_int(g, QLORA__KEY("attention.head_count_kv"), c->n_heads);
    c->max_seq_len = (int)qlora_gguf_int(g, QLORA__KEY("context_length"), 2048);
    c->norm_eps = (float)qlora_gguf_float(g, QLORA__KEY("attention.layer_norm_rms_epsilon"), 1e-5);
    c->rope_theta = (float)qlora_gguf_float(g, QLORA__KEY("rope.freq_base"), 10000.0);
    c->head_dim = c->n_heads > 0 ? (int)qlora_gguf_int(g, QLORA__KEY("attention.key_length"), c->dim / c->n_heads) : 0;
    c->rope_dim = (int)qlora_gguf_int(g, QLORA__KEY("rope.dimension_count"), c->head_dim);
    {
        qlora_str st = qlora_gguf_string(g, QLORA__KEY("rope.scaling.type"));
        float f = (float)qlora_gguf_float(g, QLORA__KEY("rope.scaling.factor"), 0.0);
        if (st.ptr && st.len == 6 && !memcmp(st.ptr, "linear", 6) && f > 0) { c->rope_scaling = QLORA_ROPE_SCALING_LINEAR; c->rope_factor = f; }
        else if (st.ptr && !(st.len == 4 && !memcmp(st.ptr, "none", 4)))
            return QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "%s: rope scaling '%.*s' not supported", path, (int)st.len, st.ptr);
    }
    const qlora_gguf_tensor *emb = qlora_gguf_find_tensor(g, "token_embd.weight");
    if (!emb) return QLORA__ERR(ctx, QLORA_ERR_NOT_FOUND, "%s: tensor 'token_embd.weight' is missing", path);
    c->vocab_size = (int)emb->ne[1];
#undef QLORA__KEY
    qlora__model_defaults(c);
    if ((r = qlora__model_check_config(ctx, path, c)) != QLORA_OK) return r;
    int64_t C = c->dim, F = c->hidden_dim, V = c->vocab_size, qd = (int64_t)c->n_heads * c->head_dim, kvd = (int64_t)c->n_kv_heads * c->head_dim;
    m->layers = QLORA__CALLOC_T(qlora_layer, (size_t)c->n_layers);
    if (!m->layers) return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    if ((r = qlora__gguf_take(ctx, path, g, "token_embd.weight", C, V, 0, &m->tok_embd)) != QLORA_OK) return r;
    if ((r = qlora__gguf_take(ctx, path, g, "output_norm.weight", C, 1, 0, &m->out_norm)) != QLORA_OK) return r;
    if ((r = qlora__gguf_take(ctx, path, g, "output.weight", C, V, 1, &m->output)) != QLORA_OK) return r;
    c->tied_embeddings = m->output.data == NULL;
    if (c->tied_embeddings) m->output = m->tok_embd;
    for (int l = 0; l < c->n_layers; l++) {
        qlora_layer *ly = &m->layers[l];
        struct { const char *n; int64_t ne0, ne1; int opt; qlora_tensor *t; } spec[] = {
            { "attn_norm.weight", C, 1, 0, &ly->attn_norm }, { "attn_q.weight", C, qd, 0, &ly->wq },
            { "attn_k.weight", C, kvd, 0, &ly->wk }, { "attn_v.weight", C, kvd, 0, &ly->wv },
            { "attn_output.weight", qd, C, 0, &ly->wo }, { "ffn_norm.weight", C, 1, 0, &ly->ffn_norm },
            { "ffn_gate.weight", C, F, 0, &ly->w_gate }, { "ffn_up.weight", C, F, 0, &ly->w_up },
            { "ffn_down.weight", F, C, 0, &ly->w_down }, { "attn_q.bias", qd, 1, 1, &ly->bq },
            { "attn_k.bias", kvd, 1, 1, &ly->bk }, { "attn_v.bias", kvd, 1, 1, &ly->bv } };
        for (size_t i = 0; i < sizeof spec / sizeof spec[0]; i++) {
            char name[64];
            snprintf(name, sizeof name, "blk.%d.%s", l, spec[i].n);
            if ((r = qlora__gguf_take(ctx, path, g, name, spec[i].ne0, spec[i].ne1, spec[i].opt, spec[i].t)) != QLORA_OK) return r;
            if (spec[i].opt && spec[i].t->data && spec[i].t->type != QLORA_TYPE_F32)
                return QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "%s: bias '%s' must be f32", path, name);
        }
        if (ly->bq.data) c->has_qkv_bias = 1;
        if ((r = qlora__unpermute_rows(ctx, &ly->wq, c->head_dim)) != QLORA_OK) return r;   // GGUF -> HF order
        if ((r = qlora__unpermute_rows(ctx, &ly->wk, c->head_dim)) != QLORA_OK) return r;
        if (ly->bq.data && (r = qlora__unpermute_rows(ctx, &ly->bq, c->head_dim)) != QLORA_OK) return r;
        if (ly->bk.data && (r = qlora__unpermute_rows(ctx, &ly->bk, c->head_dim)) != QLORA_OK) return r;
    }
    qlora_str tmpl = qlora_gguf_string(g, "tokenizer.chat_template");
    if (tmpl.ptr) m->chat_template = qlora__strndup(tmpl.ptr, tmpl.len);
    strcpy(m->arch, "llama");
    strcpy(m->source, "gguf");
    return QLORA_OK;
}

static int qlora__file_exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}

static int qlora__is_dir(const char *path) {
#if !defined(_WIN32)
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
#else
    (void)path; return 0;
#endif
}

// ---- Hugging Face directory: config.json + model.safetensors (or sharded index) + tokenizer.json
static qlora_type qlora__st_type(const char *dtype) {
    if (!strcmp(dtype, "F32")) return QLORA_TYPE_F32;
    if (!strcmp(dtype, "F16")) return QLORA_TYPE_F16;
    if (!strcmp(dtype, "BF16")) return QLORA_TYPE_BF16;
    return QLORA_TYPE_COUNT;
}

static qlora_result qlora__read_json_file(qlora_ctx *ctx, const char *path, qlora_json **out) {
    qlora_file f;
    qlora_result r = qlora_file_open(ctx, path, &f);
    if (r != QLORA_OK) return r;
    char err[160];
    r = qlora_json_parse((const char *)f.data, f.size, out, err, sizeof err);
    qlora_file_close(&f);
    if (r != QLORA_OK) return QLORA__ERR(ctx, r, "%s: %s", path, err);
    return QLORA_OK;
}

static qlora_result qlora__hf_take(qlora_ctx *ctx, const char *dir, qlora_model *m, const char *name,
                                   int64_t ne0, int64_t ne1, int optional, qlora_tensor *t) {
    memset(t, 0, sizeof *t);
    const qlora_st_tensor *st = NULL;
    for (size_t i = 0; i < m->n_st && !st; i++) st = qlora_st_find(m->st[i], name);
    if (!st) {
        if (optional) return QLORA_OK;
        return QLORA__ERR(ctx, QLORA_ERR_NOT_FOUND, "%s: tensor '%s' is missing", dir, name);
    }
    qlora_type type = qlora__st_type(st->dtype);
    if (type == QLORA_TYPE_COUNT)
        return QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s (F32, F16, BF16 are supported)", dir, name, st->dtype);
    int64_t s0 = st->n_dims == 2 ? st->shape[1] : st->n_dims == 1 ? st->shape[0] : -1;
    int64_t s1 = st->n_dims == 2 ? st->shape[0] : 1;
    if (s0 != ne0 || s1 != ne1)
        return QLORA__ERR(ctx, QLORA_ERR_SHAPE, "%s: tensor '%s' has shape [%lld, %lld], expected [%lld, %lld]", dir, name,
                          (long long)s1, (long long)s0, (long long)ne1, (long long)ne0);
    qlora__tensor_init(t, type, ne0, ne1, st->data);
    return QLORA_OK;
}

static qlora_result qlora__load_hf(qlora_ctx *ctx, const char *dir, qlora_model *m) {
    char path[4096];
    qlora_json *cfg = NULL, *index = NULL;
    qlora_result r;
    snprintf(path, sizeof path, "%s/config.json", dir);
    if ((r = qlora__read_json_file(ctx, path, &cfg)) != QLORA_OK) return r;
    qlora_model_config *c = &m->cfg;
    const char *arch = qlora_json_str(cfg, "model_type", "llama");
    if (strcmp(arch, "llama") != 0 && strcmp(arch, "mistral") != 0) {
        r = QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "%s: model_type '%s' is not supported yet (llama, mistral are)", path, arch);
        goto done;
    }
    c->dim = (int)qlora_json_num(cfg, "hidden_size", 0);
    c->hidden_dim = (int)qlora_json_num(cfg, "intermediate_size", 0);
    c->n_layers = (int)qlora_json_num(cfg, "num_hidden_layers", 0);
    c->n_heads = (int)qlora_json_num(cfg, "num_attention_heads", 0);
    c->n_kv_heads = (int)qlora_json_num(cfg, "num_key_value_heads", c->n_heads);
    c->vocab_size = (int)qlora_json_num(cfg, "vocab_size", 0);
    c->max_seq_len = (int)qlora_json_num(cfg, "max_position_embeddings", 2048);
    c->norm_eps = (float)qlora_json_num(cfg, "rms_norm_eps", 1e-6);
    c->rope_theta = (float)qlora_json_num(cfg, "rope_theta", 10000.0);
    c->head_dim = (int)qlora_json_num(cfg, "head_dim", c->n_heads > 0 ? c->dim / c->n_heads : 0);
    c->tied_embeddings = (int)qlora_json_num(cfg, "tie_word_embeddings", 0);
    {
        // transformers v4: "rope_theta" + "rope_scaling"; v5: "rope_parameters" holds both
        const qlora_json *rs = qlora_json_get(cfg, "rope_parameters");
        if (rs && rs->type == QLORA_JSON_OBJECT) c->rope_theta = (float)qlora_json_num(rs, "rope_theta", c->rope_theta);
        else rs = qlora_json_get(cfg, "rope_scaling");
        if (rs && rs->type == QLORA_JSON_OBJECT) {
            const char *ty = qlora_json_str(rs, "rope_type", qlora_json_str(rs, "type", ""));
            c->rope_factor = (float)qlora_json_num(rs, "factor", 1.0);
            if (!strcmp(ty, "linear")) c->rope_scaling = QLORA_ROPE_SCALING_LINEAR;
            else if (!strcmp(ty, "llama3")) {
                c->rope_scaling = QLORA_ROPE_SCALING_LLAMA3;
                c->rope_low_freq_factor = (float)qlora_json_num(rs, "low_freq_factor", 1.0);
                c->rope_high_freq_factor = (float)qlora_json_num(rs, "high_freq_factor", 4.0);
                c->rope_orig_ctx = (int)qlora_json_num(rs, "original_max_position_embeddings", 8192);
            } else if (strcmp(ty, "default") != 0) {
                r = QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "%s: rope_scaling type '%s' not supported", path, ty);
                goto done;
            }
        }
    }
    qlora__model_defaults(c);
    if ((r = qlora__model_check_config(ctx, path, c)) != QLORA_OK) goto done;
    // weights: one file, or shards listed by model.safetensors.index.json
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (qlora__file_exists(path)) {
        if ((r = qlora__read_json_file(ctx, path, &index)) != QLORA_OK) goto done;
        const qlora_json *wm = qlora_json_get(index, "weight_map");
        if (!wm || wm->type != QLORA_JSON_OBJECT) { r = QLORA__ERR(ctx, QLORA_ERR_FORMAT, "%s: no weight_map object", path); goto done; }
        m->st = (qlora_st **)qlora__calloc(wm->count ? wm->count : 1, sizeof *m->st);
        if (!m->st) { r = QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", path); goto done; }
        const char **names = (const char **)qlora__calloc(wm->count ? wm->count : 1, sizeof *names);
        if (!names) { r = QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", path); goto done; }
        for (const qlora_json *e = wm->child; e; e = e->next) {
            if (e->type != QLORA_JSON_STRING || strchr(e->str, '/') || strstr(e->str, "..")) {
                QLORA__FREE(names);
                r = QLORA__ERR(ctx, QLORA_ERR_FORMAT, "%s: weight_map['%s'] is not a file name in the directory", path, e->key);
                goto done;
            }
            size_t k = 0;
            while (k < m->n_st && strcmp(names[k], e->str)) k++;
            if (k < m->n_st) continue;
            char shard[4096];
            snprintf(shard, sizeof shard, "%s/%s", dir, e->str);
            names[m->n_st] = e->str;
            if ((r = qlora_st_open(ctx, shard, &m->st[m->n_st])) != QLORA_OK) { QLORA__FREE(names); goto done; }
            m->n_st++;
        }
        QLORA__FREE(names);
    } else {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        m->st = (qlora_st **)qlora__calloc(1, sizeof *m->st);
        if (!m->st) { r = QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "out of memory"); goto done; }
        if ((r = qlora_st_open(ctx, path, &m->st[0])) != QLORA_OK) goto done;
        m->n_st = 1;
    }
    {
        int64_t C = c->dim, F = c->hidden_dim, V = c->vocab_size, qd = (int64_t)c->n_heads * c->head_dim, kvd = (int64_t)c->n_kv_heads * c->head_dim;
        m->layers = QLORA__CALLOC_T(qlora_layer, (size_t)c->n_layers);
        if (!m->layers) { r = QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", dir); goto done; }
        if ((r = qlora__hf_take(ctx, dir, m, "model.embed_tokens.weight", C, V, 0, &m->tok_embd)) != QLORA_OK) goto done;
        if ((r = qlora__hf_take(ctx, dir, m, "model.norm.weight", C, 1, 0, &m->out_norm)) != QLORA_OK) goto done;
        if ((r = qlora__hf_take(ctx, dir, m, "lm_head.weight", C, V, 1, &m->output)) != QLORA_OK) goto done;
        if (!m->output.data) { c->tied_embeddings = 1; m->output = m->tok_embd; }
        else c->tied_embeddings = 0;
        for (int l = 0; l < c->n_layers; l++) {
            qlora_layer *ly = &m->layers[l];
            struct { const char *n; int64_t ne0, ne1; int opt; qlora_tensor *t; } spec[] = {
                { "input_layernorm.weight", C, 1, 0, &ly->attn_norm }, { "self_attn.q_proj.weight", C, qd, 0, &ly->wq },
                { "self_attn.k_proj.weight", C, kvd, 0, &ly->wk }, { "self_attn.v_proj.weight", C, kvd, 0, &ly->wv },
                { "self_attn.o_proj.weight", qd, C, 0, &ly->wo }, { "post_attention_layernorm.weight", C, 1, 0, &ly->ffn_norm },
                { "mlp.gate_proj.weight", C, F, 0, &ly->w_gate }, { "mlp.up_proj.weight", C, F, 0, &ly->w_up },
                { "mlp.down_proj.weight", F, C, 0, &ly->w_down },
                { "self_attn.q_proj.bias", qd, 1, 1, &ly->bq }, { "self_attn.k_proj.bias", kvd, 1, 1, &ly->bk },
                { "self_attn.v_proj.bias", kvd, 1, 1, &ly->bv } };
            for (size_t i = 0; i < sizeof spec / sizeof spec[0]; i++) {
                char name[160];
                snprintf(name, sizeof name, "model.layers.%d.%s", l, spec[i].n);
                if ((r = qlora__hf_take(ctx, dir, m, name, spec[i].ne0, spec[i].ne1, spec[i].opt, spec[i].t)) != QLORA_OK) goto done;
                if (spec[i].opt && spec[i].t->data && spec[i].t->type != QLORA_TYPE_F32) {
                    r = QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "%s: bias '%s' must be F32", dir, name);
                    goto done;
                }
            }
            if (ly->bq.data) c->has_qkv_bias = 1;
        }
    }
    strcpy(m->arch, "llama");
    strcpy(m->source, "hf");
done:
    qlora_json_free(cfg);
    qlora_json_free(index);
    return r;
}

static int qlora__ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && !strcmp(s + n - k, suf);
}

QLORA__DEF qlora_result qlora_model_load(qlora_ctx *ctx, const char *path, const qlora_load_options *opt, qlora_model **out) {
    *out = NULL;
    qlora_model *m = QLORA__CALLOC_T(qlora_model, 1);
    if (!m) return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "out of memory");
    const char *tok_path = opt ? opt->tokenizer_path : NULL;
    qlora_result r;
    if (qlora__is_dir(path)) {
        r = qlora__load_hf(ctx, path, m);
        if (r == QLORA_OK && !tok_path) {                 // no tokenizer.json: m->tok stays NULL
            char tp[4096];
            snprintf(tp, sizeof tp, "%s/tokenizer.json", path);
            if (qlora__file_exists(tp)) r = qlora_tokenizer_load_hf(ctx, tp, &m->tok);
        }
    } else {
        qlora_file f;
        r = qlora_file_open(ctx, path, &f);
        if (r == QLORA_OK) {
            int is_gguf = f.size >= 4 && !memcmp(f.data, "GGUF", 4);
            qlora_file_close(&f);
            if (is_gguf) {
                r = qlora__load_gguf(ctx, path, m);
                if (r == QLORA_OK && !tok_path) r = qlora_tokenizer_from_gguf(ctx, m->gguf, &m->tok);
            } else {
                r = qlora__load_llama2c(ctx, path, m);
            }
        }
    }
    if (r == QLORA_OK && tok_path) {
        if (qlora__ends_with(tok_path, ".json")) r = qlora_tokenizer_load_hf(ctx, tok_path, &m->tok);
        else if (qlora__ends_with(tok_path, ".gguf")) {
            qlora_gguf *g = NULL;
            r = qlora_gguf_open(ctx, tok_path, &g);
            if (r == QLORA_OK) r = qlora_tokenizer_from_gguf(ctx, g, &m->tok);
            qlora_gguf_close(g);
        } else r = qlora_tokenizer_load_llama2c(ctx, tok_path, m->cfg.vocab_size, &m->tok);
    }
    if (r == QLORA_OK && m->tok && qlora_tokenizer_n_vocab(m->tok) > m->cfg.vocab_size)
        r = QLORA__ERR(ctx, QLORA_ERR_SHAPE, "%s: tokenizer has %d tokens but the model only %d", path,
                       qlora_tokenizer_n_vocab(m->tok), m->cfg.vocab_size);
    if (r != QLORA_OK) { qlora_model_free(m); return r; }
    *out = m;
    return QLORA_OK;
}

// >>model-quantize
QLORA__DEF qlora_result qlora_model_quantize(qlora_ctx *ctx, qlora_model *m, qlora_type t, int blocksize, int double_quant) {
    if (!qlora_type_is_bnb(t) && t != QLORA_TYPE_F32 && t != QLORA_TYPE_F16 && t != QLORA_TYPE_BF16)
        return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "quantize: target type %s must be nf4, fp4, int4, int8, f32, f16 or bf16", qlora_type_name(t));
    for (int l = 0; l < m->cfg.n_layers; l++) {
        qlora_layer *ly = &m->layers[l];
        qlora_tensor *ts[] = { &ly->wq, &ly->wk, &ly->wv, &ly->wo, &ly->w_gate, &ly->w_up, &ly->w_down };
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
            qlora_tensor q;
            qlora_result r = qlora_tensor_quantize(ts[i], t, blocksize, double_quant, &q);
            if (r != QLORA_OK) return QLORA__ERR(ctx, r, "quantize layer %d tensor %zu to %s (blocksize %d): %s", l, i, qlora_type_name(t), blocksize, qlora_result_string(r));
            qlora_tensor_free(ts[i]);
            *ts[i] = q;
        }
    }
    return QLORA_OK;
}

static size_t qlora__tensor_bytes_all(const qlora_tensor *t) {
    if (!t->data) return 0;
    size_t b = qlora_tensor_nbytes(t);
    if (qlora_type_is_bnb(t->type)) {
        size_t nb = qlora_bnb_nblocks(qlora_tensor_nelements(t), t->blocksize);
        b += t->absmax ? nb * 4 : nb + ((nb + 255) / 256) * 4 + 256 * 4;
    }
    return b;
}

QLORA__DEF size_t qlora_model_n_params(const qlora_model *m) {
    size_t n = qlora_tensor_nelements(&m->tok_embd) + qlora_tensor_nelements(&m->out_norm);
    if (!m->cfg.tied_embeddings) n += qlora_tensor_nelements(&m->output);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const qlora_layer *ly = &m->layers[l];
        const qlora_tensor *ts[] = { &ly->attn_norm, &ly->wq, &ly->wk, &ly->wv, &ly->wo, &ly->bq, &ly->bk, &ly->bv,
                                     &ly->ffn_norm, &ly->w_gate, &ly->w_up, &ly->w_down };
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) if (ts[i]->data) n += qlora_tensor_nelements(ts[i]);
    }
    return n;
}

QLORA__DEF size_t qlora_model_weight_bytes(const qlora_model *m) {
    size_t n = qlora__tensor_bytes_all(&m->tok_embd) + qlora__tensor_bytes_all(&m->out_norm);
    if (!m->cfg.tied_embeddings) n += qlora__tensor_bytes_all(&m->output);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const qlora_layer *ly = &m->layers[l];
        const qlora_tensor *ts[] = { &ly->attn_norm, &ly->wq, &ly->wk, &ly->wv, &ly->wo, &ly->bq, &ly->bk, &ly->bv,
                                     &ly->ffn_norm, &ly->w_gate, &ly->w_up, &ly->w_down };
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) n += qlora__tensor_bytes_all(ts[i]);
    }
    return n;
}

// >>save-hf
// Dequantizes a whole tensor to a new f32 buffer.
static float *qlora__tensor_to_f32(const qlora_tensor *t) {
    size_t ne0 = (size_t)t->ne[0], ne1 = (size_t)t->ne[1];
    float *out = QLORA__CALLOC_T(float, ne0 * ne1);
    if (!out) return NULL;
    if (qlora_tensor_dequantize_rows(t, 0, ne1, out) != QLORA_OK) { QLORA__FREE(out); return NULL; }
    return out;
}

QLORA__DEF qlora_result qlora_model_save_hf(qlora_ctx *ctx, const qlora_model *m, const char *dir) {
    const qlora_model_config *c = &m->cfg;
    size_t n_t = 3 + 9 * (size_t)c->n_layers, k = 0;
    qlora_st_entry *e = QLORA__CALLOC_T(qlora_st_entry, n_t);
    char (*names)[96] = (char (*)[96])qlora__calloc(n_t, 96);
    float **bufs = (float **)qlora__calloc(n_t, sizeof(float *));
    qlora_result r = QLORA_OK;
    char path[4096];
#if !defined(_WIN32)
    mkdir(dir, 0755);
#endif
    if (!e || !names || !bufs) { r = QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "save: out of memory"); goto done; }
#define QLORA__PUT(nm, t) do { \
        snprintf(names[k], 96, "%s", nm); \
        bufs[k] = qlora__tensor_to_f32(t); \
        if (!bufs[k]) { r = QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "save %s: out of memory", nm); goto done; } \
        e[k].name = names[k]; e[k].dtype = "F32"; e[k].data = bufs[k]; \
        e[k].n_dims = (t)->ne[1] > 1 ? 2 : 1; \
        if (e[k].n_dims == 2) { e[k].shape[0] = (t)->ne[1]; e[k].shape[1] = (t)->ne[0]; } else e[k].shape[0] = (t)->ne[0]; \
        e[k].nbytes = (size_t)((t)->ne[0] * (t)->ne[1]) * 4; k++; } while (0)
    QLORA__PUT("model.embed_tokens.weight", &m->tok_embd);
    QLORA__PUT("model.norm.weight", &m->out_norm);
    if (!c->tied_embeddings) QLORA__PUT("lm_head.weight", &m->output);
    for (int l = 0; l < c->n_layers; l++) {
        const qlora_layer *ly = &m->layers[l];
        char nm[96];
#define QLORA__PUTL(s, t) do { snprintf(nm, sizeof nm, "model.layers.%d.%s", l, s); QLORA__PUT(nm, t); } while (0)
        QLORA__PUTL("input_layernorm.weight", &ly->attn_norm);
        QLORA__PUTL("self_attn.q_proj.weight", &ly->wq);
        QLORA__PUTL("self_attn.k_proj.weight", &ly->wk);
        QLORA__PUTL("self_attn.v_proj.weight", &ly->wv);
        QLORA__PUTL("self_attn.o_proj.weight", &ly->wo);
        QLORA__PUTL("post_attention_layernorm.weight", &ly->ffn_norm);
        QLORA__PUTL("mlp.gate_proj.weight", &ly->w_gate);
        QLORA__PUTL("mlp.up_proj.weight", &ly->w_up);
        QLORA__PUTL("mlp.down_proj.weight", &ly->w_down);
#undef QLORA__PUTL
    }
#undef QLORA__PUT
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if ((r = qlora_st_write(ctx, path, e, k)) != QLORA_OK) goto done;
    {
        qlora__buf b = { NULL, 0, 0, 0 };
        qlora__buf_printf(&b, "{\n  \"architectures\": [\"LlamaForCausalLM\"],\n  \"model_type\": \"llama\",\n"
            "  \"hidden_size\": %d,\n  \"intermediate_size\": %d,\n  \"num_hidden_layers\": %d,\n"
            "  \"num_attention_heads\": %d,\n  \"num_key_value_heads\": %d,\n  \"head_dim\": %d,\n"
            "  \"vocab_size\": %d,\n  \"max_position_embeddings\": %d,\n  \"rms_norm_eps\": %.9g,\n"
            "  \"rope_theta\": %.9g,\n  \"tie_word_embeddings\": %s,\n  \"hidden_act\": \"silu\",\n"
            "  \"attention_bias\": false,\n  \"mlp_bias\": false,\n  \"torch_dtype\": \"float32\",\n"
            "  \"bos_token_id\": %d,\n  \"eos_token_id\": %d\n}\n",
            c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim, c->vocab_size,
            c->max_seq_len, (double)c->norm_eps, (double)c->rope_theta, c->tied_embeddings ? "true" : "false",
            m->tok ? qlora_tokenizer_bos(m->tok) : 1, m->tok ? qlora_tokenizer_eos(m->tok) : 2);
        if (c->rope_scaling != QLORA_ROPE_SCALING_NONE) {      // reopen the object for rope_scaling
            b.n -= 3;                                           // drop "\n}\n"
            if (c->rope_scaling == QLORA_ROPE_SCALING_LINEAR)
                qlora__buf_printf(&b, ",\n  \"rope_scaling\": {\"rope_type\": \"linear\", \"factor\": %.9g}\n}\n", (double)c->rope_factor);
            else
                qlora__buf_printf(&b, ",\n  \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": %.9g, \"low_freq_factor\": %.9g, "
                                  "\"high_freq_factor\": %.9g, \"original_max_position_embeddings\": %d}\n}\n",
                                  (double)c->rope_factor, (double)c->rope_low_freq_factor, (double)c->rope_high_freq_factor, c->rope_orig_ctx);
        }
        if (b.oom) { QLORA__FREE(b.p); r = QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "save: out of memory"); goto done; }
        const void *parts[1] = { b.p };
        size_t sizes[1] = { b.n };
        snprintf(path, sizeof path, "%s/config.json", dir);
        r = qlora__write_atomic(ctx, path, parts, sizes, 1);
        QLORA__FREE(b.p);
    }
done:
    if (bufs) for (size_t i = 0; i < n_t; i++) QLORA__FREE(bufs[i]);
    QLORA__FREE(bufs);
    QLORA__FREE(names);
    QLORA__FREE(e);
    return r;
}
