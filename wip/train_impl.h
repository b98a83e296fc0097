// >>autograd
// Training = one explicit forward/backward pair per op, llm.c style (no graph objects):
//   layer l:  h1 = rmsnorm(x)                       x1 = x + lin_o(attn(rope(lin_q h1), rope(lin_k h1), lin_v h1))
//             h2 = rmsnorm(x1)                      y  = x1 + lin_down(silu(lin_gate h2) * lin_up h2)
//   lin_m(h) = W_m h (+ b_m) + s * B_m (A_m dropout(h))      (W_m frozen, any qlora_type)
// Backward flows dL/dx through every frozen W as dX = dY W, dequantizing W block by block
// (qlora__matmul_t); only A, B (and trainable biases) receive gradients. With gradient
// checkpointing only each block's input is kept and the block is recomputed before its backward.

// ---- small threaded f32 GEMMs used by the LoRA path and the backward -------------------------
// Out (N, O) = X (N, K) . W^T with W an f32 (O, K) matrix: qlora_matmul on a wrapper tensor.
static qlora_result qlora__mm_f32(qlora_ctx *ctx, float *out, const float *X, const float *W, int N, int K, int O) {
    qlora_tensor w;
    qlora__tensor_init(&w, QLORA_TYPE_F32, K, O, W);
    w.n_dims = 2;
    return qlora_matmul(ctx, &w, X, (size_t)N, out);
}

// Dequantize W[row, c0 .. c0+n) into out. Handles every qlora_type; bnb blocks may straddle rows.
static void qlora__deq_range(const qlora_tensor *W, size_t row, size_t c0, size_t n, float *out) {
    size_t ne0 = (size_t)W->ne[0];
    switch (W->type) {
    case QLORA_TYPE_F32: memcpy(out, (const float *)W->data + row * ne0 + c0, n * sizeof(float)); return;
    case QLORA_TYPE_F16: { const uint16_t *p = (const uint16_t *)W->data + row * ne0 + c0; for (size_t i = 0; i < n; i++) out[i] = qlora__fp16_to_f32(p[i]); return; }
    case QLORA_TYPE_BF16: { const uint16_t *p = (const uint16_t *)W->data + row * ne0 + c0; for (size_t i = 0; i < n; i++) out[i] = qlora__bf16_to_f32(p[i]); return; }
    case QLORA_TYPE_Q8_0: case QLORA_TYPE_Q4_0: case QLORA_TYPE_Q4_1: {
        size_t rb = qlora_ggml_row_bytes(W->type, ne0), bb = qlora_ggml_row_bytes(W->type, 32);
        const uint8_t *p = (const uint8_t *)W->data + row * rb + (c0 / 32) * bb;   // c0, n: multiples of 32
        qlora_ggml_dequantize(W->type, p, n, out);
        return;
    }
    default: break;
    }
    // bnb formats: element i of the flattened matrix; absmax decoded per block
    const uint8_t *codes = (const uint8_t *)W->data;
    const float *lut = qlora_bnb_code4(W->type);
    size_t bs = (size_t)W->blocksize, i0 = row * ne0 + c0, cur_b = (size_t)-1;
    float am = 0;
    for (size_t k = 0; k < n; k++) {
        size_t i = i0 + k, b = i / bs;
        if (b != cur_b) {
            cur_b = b;
            am = W->absmax ? W->absmax[b] : W->code2[W->qabsmax[b]] * W->absmax2[b / 256] + W->offset;
        }
        if (W->type == QLORA_TYPE_INT8) out[k] = ((float)(int8_t)codes[i] / 127.0f) * am;
        else out[k] = lut[(i & 1) ? (codes[i >> 1] & 15) : (codes[i >> 1] >> 4)] * am;
    }
}

// y += a * x. Fixed 16-wide inner blocks and restrict pointers let compilers vectorize it at -O2.
static void qlora__axpy(float *QLORA__RESTRICT y, const float *QLORA__RESTRICT x, float a, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 16; k++) y[i + k] += a * x[i + k];
    for (; i < n; i++) y[i] += a * x[i];
}

// dX (N, ne0) += dY (N, ne1) . W      — the backward-input product through a frozen weight.
// Threads split the OUTPUT columns (64-aligned), each decodes only its slice of every row:
// results do not depend on the thread count.
typedef struct qlora__mmt_job { const qlora_tensor *W; const float *dY; float *dX; size_t N; } qlora__mmt_job;
static void qlora__matmul_t_task(void *arg, int ith, int nth) {
    qlora__mmt_job *j = (qlora__mmt_job *)arg;
    size_t ne0 = (size_t)j->W->ne[0], ne1 = (size_t)j->W->ne[1];
    size_t nchunk = (ne0 + 63) / 64, b, e;
    qlora__split(nchunk, ith, nth, &b, &e);
    float wbuf[256];
    for (size_t cc = b * 64; cc < QLORA__MIN(e * 64, ne0); cc += 256) {
        size_t len = QLORA__MIN((size_t)256, QLORA__MIN(e * 64, ne0) - cc);
        for (size_t o = 0; o < ne1; o++) {
            qlora__deq_range(j->W, o, cc, len, wbuf);
            for (size_t n = 0; n < j->N; n++) {
                float g = j->dY[n * ne1 + o];
                if (g == 0.0f) continue;
                qlora__axpy(j->dX + n * ne0 + cc, wbuf, g, len);
            }
        }
    }
}
static void qlora__matmul_t(qlora_ctx *ctx, const qlora_tensor *W, const float *dY, size_t N, float *dX) {
    qlora__mmt_job j = { W, dY, dX, N };
    qlora_parallel_for(ctx, qlora__matmul_t_task, &j);
}
static void qlora__matmul_t_f32(qlora_ctx *ctx, const float *W, int K, int O, const float *dY, size_t N, float *dX) {
    qlora_tensor w;
    qlora__tensor_init(&w, QLORA_TYPE_F32, K, O, W);
    qlora__matmul_t(ctx, &w, dY, N, dX);
}

// dW (O, K) += dY^T (O <- N) . X (N, K): weight gradient, threads over rows of dW.
typedef struct qlora__wg_job { float *dW; const float *dY, *X; int N, K, O; float alpha; } qlora__wg_job;
static void qlora__wgrad_task(void *arg, int ith, int nth) {
    qlora__wg_job *j = (qlora__wg_job *)arg;
    size_t b, e;
    qlora__split((size_t)j->O, ith, nth, &b, &e);
    for (size_t o = b; o < e; o++) {
        float *dw = j->dW + o * (size_t)j->K;
        for (int n = 0; n < j->N; n++) {
            float g = j->alpha * j->dY[(size_t)n * j->O + o];
            if (g == 0.0f) continue;
            qlora__axpy(dw, j->X + (size_t)n * j->K, g, (size_t)j->K);
        }
    }
}
static void qlora__wgrad(qlora_ctx *ctx, float *dW, const float *dY, const float *X, int N, int K, int O, float alpha) {
    qlora__wg_job j = { dW, dY, X, N, K, O, alpha };
    qlora_parallel_for(ctx, qlora__wgrad_task, &j);
}

// ---- LoRA dropout: a counter-based hash, so forward, recompute and backward agree bit for bit ---
static uint64_t qlora__mix64(uint64_t x) {
    x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27; x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}
// hd = dropout(h): zero with probability p, else h / (1 - p)
static void qlora__dropout(float *hd, const float *h, size_t n, float p, uint64_t seed) {
    float keep = 1.0f / (1.0f - p);
    for (size_t i = 0; i < n; i++) {
        float u = (float)(qlora__mix64(seed + i * 0x9E3779B97F4A7C15ull) >> 40) / 16777216.0f;
        hd[i] = u < p ? 0.0f : h[i] * keep;
    }
}

// ---- per-layer activations ---------------------------------------------------------------------
typedef struct qlora__acts {
    float *rstd1, *h1;          // (N) (N, C)
    float *q, *k, *v;           // (N, qd) (N, kvd) (N, kvd)   q, k after RoPE
    float *att;                 // (B, H, T, T) softmax probabilities (causal)
    float *o;                   // (N, qd) attention output (input of o_proj)
    float *x1, *rstd2, *h2;     // (N, C) (N) (N, C)
    float *g, *u, *mm;          // (N, F) gate pre-activation, up, silu(g)*u (input of down_proj)
    float *lu[QLORA_MOD_COUNT]; // (N, r) LoRA intermediate A dropout(h), NULL if no adapter
} qlora__acts;

struct qlora_train {
    const qlora_model *m;
    qlora_lora *lora;
    int B, T, N, ckpt, r;
    int C, F, H, Hkv, D, qd, kvd, V;
    float *xs;                  // (L + 1, N, C) block inputs; xs[L] = final residual
    qlora__acts *acts;          // [L] (or [1] with checkpointing)
    float *arena;               // one block holding every activation buffer
    size_t arena_floats;
    // scratch
    float *dx, *dres;           // (N, C)
    float *dq, *dk, *dv, *dO;   // (N, qd) (N, kvd) (N, kvd) (N, qd)
    float *dg, *du;             // (N, F)
    float *dh;                  // (N, max(C, F, qd))
    float *tmp;                 // (N, max(qd, F, C)) lora branch output
    float *hd;                  // (N, max(C, F, qd)) dropout(h)
    float *dlu;                 // (N, r)
    float *rstdf, *hf;          // (N) (N, C) final norm
    float *dhf;                 // (N, C)
    float *lchunk;              // (chunk, V) logits chunk
    float *normw;               // (C) f32 copy of a norm weight
    int chunk;
    float grad_scale;
    uint64_t seed;
    int have_grad;
};

static size_t qlora__acts_floats(const qlora_train *t) {
    size_t N = (size_t)t->N, n = 0;
    n += N + N * t->C;                                   // rstd1 h1
    n += N * t->qd + 2 * N * t->kvd;                     // q k v
    n += (size_t)t->B * t->H * t->T * t->T;              // att
    n += N * t->qd;                                      // o
    n += N * t->C + N + N * t->C;                        // x1 rstd2 h2
    n += 3 * N * t->F;                                   // g u mm
    if (t->lora) n += (size_t)QLORA_MOD_COUNT * N * t->r;
    return n;
}

static size_t qlora__train_scratch_floats(const qlora_train *t) {
    size_t N = (size_t)t->N, mx = (size_t)QLORA__MAX(t->C, QLORA__MAX(t->F, t->qd));
    return 2 * N * t->C + 2 * N * t->qd + 2 * N * t->kvd + 2 * N * t->F + 3 * N * mx +
           N * (size_t)(t->r > 0 ? t->r : 1) + N + 2 * N * t->C + (size_t)t->chunk * t->V + (size_t)t->C;
}

static void qlora__train_dims(qlora_train *t, const qlora_model *m, const qlora_lora *l, const qlora_train_config *cfg) {
    const qlora_model_config *c = &m->cfg;
    t->B = cfg->batch; t->T = cfg->seq_len; t->N = t->B * t->T; t->ckpt = cfg->grad_checkpointing;
    t->C = c->dim; t->F = c->hidden_dim; t->H = c->n_heads; t->Hkv = c->n_kv_heads; t->D = c->head_dim;
    t->qd = t->H * t->D; t->kvd = t->Hkv * t->D; t->V = c->vocab_size;
    t->r = l ? l->cfg.r : 0;
    t->lora = (qlora_lora *)(uintptr_t)l;
    t->chunk = QLORA__MIN(t->N, 64);
}

QLORA__DEF void qlora_train_memory(const qlora_model *m, const qlora_lora *l, const qlora_train_config *cfg, qlora_train_memory_plan *plan) {
    qlora_train t;
    memset(&t, 0, sizeof t);
    qlora__train_dims(&t, m, l, cfg);
    size_t L = (size_t)m->cfg.n_layers;
    plan->activations = 4 * ((L + 1) * (size_t)t.N * t.C + (t.ckpt ? 1 : L) * qlora__acts_floats(&t));
    plan->scratch = 4 * qlora__train_scratch_floats(&t);
    plan->lora = l ? 2 * 4 * l->n_params : 0;
    plan->total = plan->activations + plan->scratch + plan->lora;
}

QLORA__DEF void qlora_train_free(qlora_train *t) {
    if (!t) return;
    QLORA__FREE(t->arena);
    QLORA__FREE(t->acts);
    QLORA__FREE(t);
}

QLORA__DEF qlora_result qlora_train_create(qlora_ctx *ctx, const qlora_model *m, qlora_lora *l, const qlora_train_config *cfg, qlora_train **out) {
    *out = NULL;
    if (!cfg || cfg->batch <= 0 || cfg->seq_len <= 1 || cfg->batch > 4096 || cfg->seq_len > 65536)
        return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "train: batch %d x seq_len %d is not a valid shape", cfg ? cfg->batch : 0, cfg ? cfg->seq_len : 0);
    if (l && l->n_layers != m->cfg.n_layers) return QLORA__ERR(ctx, QLORA_ERR_SHAPE, "train: adapter has %d layers, model %d", l->n_layers, m->cfg.n_layers);
    qlora_train *t = QLORA__CALLOC_T(qlora_train, 1);
    if (!t) return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "train: out of memory");
    t->m = m;
    qlora__train_dims(t, m, l, cfg);
    size_t L = (size_t)m->cfg.n_layers, na = t->ckpt ? 1 : L, af = qlora__acts_floats(t);
    size_t total = (L + 1) * (size_t)t->N * t->C + na * af + qlora__train_scratch_floats(t);
    t->acts = QLORA__CALLOC_T(qlora__acts, na);
    t->arena = QLORA__CALLOC_T(float, total);
    if (!t->acts || !t->arena) {
        qlora_train_free(t);
        return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "train: %zu MiB of activations do not fit in memory (try --gradient-checkpointing or a smaller batch)", total * 4 >> 20);
    }
    t->arena_floats = total;
    float *p = t->arena;
    size_t N = (size_t)t->N, mx = (size_t)QLORA__MAX(t->C, QLORA__MAX(t->F, t->qd));
#define QLORA__CARVE(dst, n) do { (dst) = p; p += (n); } while (0)
    QLORA__CARVE(t->xs, (L + 1) * N * t->C);
    for (size_t i = 0; i < na; i++) {
        qlora__acts *a = &t->acts[i];
        QLORA__CARVE(a->rstd1, N); QLORA__CARVE(a->h1, N * t->C);
        QLORA__CARVE(a->q, N * t->qd); QLORA__CARVE(a->k, N * t->kvd); QLORA__CARVE(a->v, N * t->kvd);
        QLORA__CARVE(a->att, (size_t)t->B * t->H * t->T * t->T);
        QLORA__CARVE(a->o, N * t->qd);
        QLORA__CARVE(a->x1, N * t->C); QLORA__CARVE(a->rstd2, N); QLORA__CARVE(a->h2, N * t->C);
        QLORA__CARVE(a->g, N * t->F); QLORA__CARVE(a->u, N * t->F); QLORA__CARVE(a->mm, N * t->F);
        if (l) for (int k = 0; k < QLORA_MOD_COUNT; k++) QLORA__CARVE(a->lu[k], N * t->r);
    }
    QLORA__CARVE(t->dx, N * t->C); QLORA__CARVE(t->dres, N * t->C);
    QLORA__CARVE(t->dq, N * t->qd); QLORA__CARVE(t->dO, N * t->qd);
    QLORA__CARVE(t->dk, N * t->kvd); QLORA__CARVE(t->dv, N * t->kvd);
    QLORA__CARVE(t->dg, N * t->F); QLORA__CARVE(t->du, N * t->F);
    QLORA__CARVE(t->dh, N * mx); QLORA__CARVE(t->tmp, N * mx); QLORA__CARVE(t->hd, N * mx);
    QLORA__CARVE(t->dlu, N * (size_t)(t->r > 0 ? t->r : 1));
    QLORA__CARVE(t->rstdf, N); QLORA__CARVE(t->hf, N * t->C); QLORA__CARVE(t->dhf, N * t->C);
    QLORA__CARVE(t->lchunk, (size_t)t->chunk * t->V);
    QLORA__CARVE(t->normw, (size_t)t->C);
#undef QLORA__CARVE
    QLORA_ASSERT((size_t)(p - t->arena) == total);
    *out = t;
    return QLORA_OK;
}

// ---- ops: forward / backward pairs ---------------------------------------------------------------
// rmsnorm with saved 1/rms: out = w * x * rstd
static void qlora__rmsnorm_fwd(float *out, float *rstd, const float *x, const float *w, int N, int C, float eps) {
    for (int n = 0; n < N; n++) {
        const float *xn = x + (size_t)n * C;
        float ss = 0.0f;
        for (int i = 0; i < C; i++) ss += xn[i] * xn[i];
        float r = 1.0f / sqrtf(ss / (float)C + eps);
        rstd[n] = r;
        for (int i = 0; i < C; i++) out[(size_t)n * C + i] = w[i] * (xn[i] * r);
    }
}
// dx += rstd * (w*dy) - x * rstd^3 * mean(w*dy*x)      (w frozen: no dw)
static void qlora__rmsnorm_bwd(float *dx, const float *dy, const float *x, const float *w, const float *rstd, int N, int C) {
    for (int n = 0; n < N; n++) {
        const float *xn = x + (size_t)n * C, *g = dy + (size_t)n * C;
        float r = rstd[n], dot = 0.0f;
        for (int i = 0; i < C; i++) dot += w[i] * g[i] * xn[i];
        float k = dot * r * r * r / (float)C;
        for (int i = 0; i < C; i++) dx[(size_t)n * C + i] += r * w[i] * g[i] - k * xn[i];
    }
}

// rope on (N, heads*D) rows (rotate_half pairs i, i + rope_dim/2), position of row n = n % T;
// sign = +1 forward, -1 backward (the transpose of a rotation is the rotation by -angle)
static void qlora__rope_rows(float *x, int N, int T, int heads, int D, const qlora_model_config *c, float sign) {
    int half = c->rope_dim / 2;
    for (int n = 0; n < N; n++) {
        float p = (float)(n % T);
        if (c->rope_scaling == QLORA_ROPE_SCALING_LINEAR && c->rope_factor > 0) p /= c->rope_factor;
        float *row = x + (size_t)n * heads * D;
        for (int i = 0; i < half; i++) {
            float ang = p * qlora__rope_freq(c, i);
            float cs = cosf(ang), sn = sign * sinf(ang);
            for (int h = 0; h < heads; h++) {
                float *v = row + (size_t)h * D + i;
                float x0 = v[0], x1 = v[half];
                v[0] = x0 * cs - x1 * sn;
                v[half] = x0 * sn + x1 * cs;
            }
        }
    }
}

// LoRA linear: y (N, out) = h W^T (+ b) + s * (dropout(h) A^T) B^T; saves lu = dropout(h) A^T.
static qlora_result qlora__lin_fwd(qlora_ctx *ctx, qlora_train *t, int layer, qlora_module mod, const float *h, int in,
                                   float *y, float *lu) {
    const qlora_model *m = t->m;
    qlora_lora_module *md = t->lora ? qlora_lora_get(t->lora, layer, mod) : NULL;
    qlora_result r = qlora_matmul(ctx, qlora__module_weight(m, layer, mod), h, (size_t)t->N, y);
    if (r != QLORA_OK) return r;
    int out = (int)qlora__module_weight(m, layer, mod)->ne[1];
    const qlora_tensor *bt = qlora__module_bias(m, layer, mod);
    const float *bias = md && md->bias ? md->bias : bt ? (const float *)bt->data : NULL;
    if (bias) for (int n = 0; n < t->N; n++) for (int o = 0; o < out; o++) y[(size_t)n * out + o] += bias[o];
    if (!md) return QLORA_OK;
    const float *hin = h;
    float p = t->lora->cfg.dropout;
    if (p > 0) {
        qlora__dropout(t->hd, h, (size_t)t->N * in, p, t->seed ^ ((uint64_t)(layer * QLORA_MOD_COUNT + mod) << 48));
        hin = t->hd;
    }
    if ((r = qlora__mm_f32(ctx, lu, hin, md->A, t->N, in, t->r)) != QLORA_OK) return r;
    if ((r = qlora__mm_f32(ctx, t->tmp, lu, md->B, t->N, t->r, out)) != QLORA_OK) return r;
    float s = t->lora->scaling;
    for (size_t i = 0; i < (size_t)t->N * out; i++) y[i] += s * t->tmp[i];
    return QLORA_OK;
}

// Backward of the LoRA linear: dh (N, in) += dy W + s*(dy B) A ⊙ mask; grads of A, B, bias.
static void qlora__lin_bwd(qlora_ctx *ctx, qlora_train *t, int layer, qlora_module mod, const float *h, int in,
                           const float *dy, const float *lu, float *dh) {
    const qlora_model *m = t->m;
    const qlora_tensor *W = qlora__module_weight(m, layer, mod);
    int out = (int)W->ne[1];
    qlora__matmul_t(ctx, W, dy, (size_t)t->N, dh);
    qlora_lora_module *md = t->lora ? qlora_lora_get(t->lora, layer, mod) : NULL;
    if (!md) return;
    float s = t->lora->scaling, p = t->lora->cfg.dropout;
    if (md->dbias)
        for (int n = 0; n < t->N; n++) for (int o = 0; o < out; o++) md->dbias[o] += dy[(size_t)n * out + o];
    qlora__wgrad(ctx, md->dB, dy, lu, t->N, t->r, out, s);                    // dB += s dy^T lu
    memset(t->dlu, 0, (size_t)t->N * t->r * sizeof(float));
    qlora__matmul_t_f32(ctx, md->B, t->r, out, dy, (size_t)t->N, t->dlu);     // dlu = dy B
    for (size_t i = 0; i < (size_t)t->N * t->r; i++) t->dlu[i] *= s;
    const float *hin = h;
    if (p > 0) {
        qlora__dropout(t->hd, h, (size_t)t->N * in, p, t->seed ^ ((uint64_t)(layer * QLORA_MOD_COUNT + mod) << 48));
        hin = t->hd;
    }
    qlora__wgrad(ctx, md->dA, t->dlu, hin, t->N, in, t->r, 1.0f);            // dA += dlu^T dropout(h)
    if (p <= 0) { qlora__matmul_t_f32(ctx, md->A, in, t->r, t->dlu, (size_t)t->N, dh); return; }
    memset(t->tmp, 0, (size_t)t->N * in * sizeof(float));                     // d dropout(h) = dlu A
    qlora__matmul_t_f32(ctx, md->A, in, t->r, t->dlu, (size_t)t->N, t->tmp);
    float keep = 1.0f / (1.0f - p);
    for (size_t i = 0; i < (size_t)t->N * in; i++) if (t->hd[i] != 0.0f || h[i] == 0.0f) dh[i] += t->tmp[i] * (t->hd[i] != 0.0f ? keep : 0.0f);
}

// causal attention over each sequence; threads over (batch, kv head) so GQA groups never race.
typedef struct qlora__att_job { qlora_train *t; qlora__acts *a; int backward; } qlora__att_job;
static void qlora__attention_task(void *arg, int ith, int nth) {
    qlora__att_job *j = (qlora__att_job *)arg;
    qlora_train *t = j->t;
    qlora__acts *a = j->a;
    int T = t->T, D = t->D, H = t->H, grp = t->H / t->Hkv;
    float scale = 1.0f / sqrtf((float)D);
    size_t b0, e0;
    qlora__split((size_t)t->B * t->Hkv, ith, nth, &b0, &e0);
    for (size_t bk = b0; bk < e0; bk++) {
        int b = (int)(bk / (size_t)t->Hkv), kvh = (int)(bk % (size_t)t->Hkv);
        for (int h = kvh * grp; h < (kvh + 1) * grp; h++) {
            float *att = a->att + (((size_t)b * H + h) * T) * T;              // (T, T)
            for (int ti = 0; ti < T; ti++) {
                size_t nq = (size_t)b * T + ti;
                const float *q = a->q + nq * t->qd + (size_t)h * D;
                float *ar = att + (size_t)ti * T;
                if (!j->backward) {
                    for (int s = 0; s <= ti; s++) {
                        const float *k = a->k + ((size_t)b * T + s) * t->kvd + (size_t)kvh * D;
                        float dot = 0.0f;
                        for (int i = 0; i < D; i++) dot += q[i] * k[i];
                        ar[s] = dot * scale;
                    }
                    qlora__softmax(ar, ti + 1);
                    for (int s = ti + 1; s < T; s++) ar[s] = 0.0f;
                    float *o = a->o + nq * t->qd + (size_t)h * D;
                    for (int i = 0; i < D; i++) o[i] = 0.0f;
                    for (int s = 0; s <= ti; s++) {
                        const float *v = a->v + ((size_t)b * T + s) * t->kvd + (size_t)kvh * D;
                        for (int i = 0; i < D; i++) o[i] += ar[s] * v[i];
                    }
                } else {
                    const float *dout = t->dO + nq * t->qd + (size_t)h * D;
                    float *dq = t->dq + nq * t->qd + (size_t)h * D;
                    // datt[s] = dout . v_s ; dv_s += att[s] dout
                    float sum = 0.0f;
                    float *datt = t->tmp + (size_t)ith * T;   // per-thread row (tmp holds N*max >= nth*T)
                    for (int s = 0; s <= ti; s++) {
                        const float *v = a->v + ((size_t)b * T + s) * t->kvd + (size_t)kvh * D;
                        float *dv = t->dv + ((size_t)b * T + s) * t->kvd + (size_t)kvh * D;
                        float d = 0.0f;
                        for (int i = 0; i < D; i++) { d += dout[i] * v[i]; dv[i] += ar[s] * dout[i]; }
                        datt[s] = d;
                        sum += ar[s] * d;
                    }
                    for (int s = 0; s <= ti; s++) {                  // softmax backward, then the q.k products
                        float ds = ar[s] * (datt[s] - sum) * scale;
                        const float *k = a->k + ((size_t)b * T + s) * t->kvd + (size_t)kvh * D;
                        float *dk = t->dk + ((size_t)b * T + s) * t->kvd + (size_t)kvh * D;
                        for (int i = 0; i < D; i++) { dq[i] += ds * k[i]; dk[i] += ds * q[i]; }
                    }
                }
            }
        }
    }
}

static const float *qlora__norm_w(qlora_train *t, const qlora_tensor *w) {
    return qlora__as_f32(w, t->normw);
}

// Forward of block l from xs[l] into xs[l+1], saving activations in a.
static qlora_result qlora__block_fwd(qlora_ctx *ctx, qlora_train *t, int l, qlora__acts *a) {
    const qlora_model *m = t->m;
    const qlora_layer *ly = &m->layers[l];
    const qlora_model_config *c = &m->cfg;
    size_t NC = (size_t)t->N * t->C;
    const float *x = t->xs + (size_t)l * NC;
    float *y = t->xs + (size_t)(l + 1) * NC;
    qlora_result r;
    const float *w = qlora__norm_w(t, &ly->attn_norm);
    if (!w) return QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "layer %d: attn_norm type", l);
    qlora__rmsnorm_fwd(a->h1, a->rstd1, x, w, t->N, t->C, c->norm_eps);
    if ((r = qlora__lin_fwd(ctx, t, l, QLORA_MOD_Q, a->h1, t->C, a->q, a->lu[QLORA_MOD_Q])) != QLORA_OK) return r;
    if ((r = qlora__lin_fwd(ctx, t, l, QLORA_MOD_K, a->h1, t->C, a->k, a->lu[QLORA_MOD_K])) != QLORA_OK) return r;
    if ((r = qlora__lin_fwd(ctx, t, l, QLORA_MOD_V, a->h1, t->C, a->v, a->lu[QLORA_MOD_V])) != QLORA_OK) return r;
    qlora__rope_rows(a->q, t->N, t->T, t->H, t->D, c, 1.0f);
    qlora__rope_rows(a->k, t->N, t->T, t->Hkv, t->D, c, 1.0f);
    qlora__att_job aj = { t, a, 0 };
    qlora_parallel_for(ctx, qlora__attention_task, &aj);
    if ((r = qlora__lin_fwd(ctx, t, l, QLORA_MOD_O, a->o, t->qd, a->x1, a->lu[QLORA_MOD_O])) != QLORA_OK) return r;
    for (size_t i = 0; i < NC; i++) a->x1[i] += x[i];
    w = qlora__norm_w(t, &ly->ffn_norm);
    if (!w) return QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "layer %d: ffn_norm type", l);
    qlora__rmsnorm_fwd(a->h2, a->rstd2, a->x1, w, t->N, t->C, c->norm_eps);
    if ((r = qlora__lin_fwd(ctx, t, l, QLORA_MOD_GATE, a->h2, t->C, a->g, a->lu[QLORA_MOD_GATE])) != QLORA_OK) return r;
    if ((r = qlora__lin_fwd(ctx, t, l, QLORA_MOD_UP, a->h2, t->C, a->u, a->lu[QLORA_MOD_UP])) != QLORA_OK) return r;
    for (size_t i = 0; i < (size_t)t->N * t->F; i++) {
        float g = a->g[i];
        a->mm[i] = g / (1.0f + expf(-g)) * a->u[i];
    }
    if ((r = qlora__lin_fwd(ctx, t, l, QLORA_MOD_DOWN, a->mm, t->F, y, a->lu[QLORA_MOD_DOWN])) != QLORA_OK) return r;
    for (size_t i = 0; i < NC; i++) y[i] += a->x1[i];
    return QLORA_OK;
}

// Backward of block l: t->dx holds dL/dxs[l+1] on entry and dL/dxs[l] on exit.
static qlora_result qlora__block_bwd(qlora_ctx *ctx, qlora_train *t, int l, qlora__acts *a) {
    const qlora_model *m = t->m;
    const qlora_layer *ly = &m->layers[l];
    const qlora_model_config *c = &m->cfg;
    size_t N = (size_t)t->N, NC = N * t->C;
    const float *x = t->xs + (size_t)l * NC;
    // MLP: y = x1 + down(mm); dres = dL/dx1 starts as dy
    memcpy(t->dres, t->dx, NC * sizeof(float));
    memset(t->dh, 0, N * t->F * sizeof(float));
    qlora__lin_bwd(ctx, t, l, QLORA_MOD_DOWN, a->mm, t->F, t->dx, a->lu[QLORA_MOD_DOWN], t->dh);   // dh = dmm
    for (size_t i = 0; i < N * t->F; i++) {
        float g = a->g[i], sg = 1.0f / (1.0f + expf(-g)), dmm = t->dh[i];
        t->du[i] = dmm * g * sg;
        t->dg[i] = dmm * a->u[i] * sg * (1.0f + g * (1.0f - sg));
    }
    memset(t->dh, 0, NC * sizeof(float));
    qlora__lin_bwd(ctx, t, l, QLORA_MOD_GATE, a->h2, t->C, t->dg, a->lu[QLORA_MOD_GATE], t->dh);
    qlora__lin_bwd(ctx, t, l, QLORA_MOD_UP, a->h2, t->C, t->du, a->lu[QLORA_MOD_UP], t->dh);
    const float *w = qlora__norm_w(t, &ly->ffn_norm);
    if (!w) return QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "layer %d: ffn_norm type", l);
    qlora__rmsnorm_bwd(t->dres, t->dh, a->x1, w, a->rstd2, t->N, t->C);            // dres = dL/dx1
    // attention: x1 = x + o_proj(att); dx = dres + ...
    memcpy(t->dx, t->dres, NC * sizeof(float));
    memset(t->dO, 0, N * t->qd * sizeof(float));
    qlora__lin_bwd(ctx, t, l, QLORA_MOD_O, a->o, t->qd, t->dres, a->lu[QLORA_MOD_O], t->dO);
    memset(t->dq, 0, N * t->qd * sizeof(float));
    memset(t->dk, 0, N * t->kvd * sizeof(float));
    memset(t->dv, 0, N * t->kvd * sizeof(float));
    qlora__att_job aj = { t, a, 1 };
    qlora_parallel_for(ctx, qlora__attention_task, &aj);
    qlora__rope_rows(t->dq, t->N, t->T, t->H, t->D, c, -1.0f);
    qlora__rope_rows(t->dk, t->N, t->T, t->Hkv, t->D, c, -1.0f);
    memset(t->dh, 0, NC * sizeof(float));
    qlora__lin_bwd(ctx, t, l, QLORA_MOD_Q, a->h1, t->C, t->dq, a->lu[QLORA_MOD_Q], t->dh);
    qlora__lin_bwd(ctx, t, l, QLORA_MOD_K, a->h1, t->C, t->dk, a->lu[QLORA_MOD_K], t->dh);
    qlora__lin_bwd(ctx, t, l, QLORA_MOD_V, a->h1, t->C, t->dv, a->lu[QLORA_MOD_V], t->dh);
    w = qlora__norm_w(t, &ly->attn_norm);
    if (!w) return QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "layer %d: attn_norm type", l);
    qlora__rmsnorm_bwd(t->dx, t->dh, x, w, a->rstd1, t->N, t->C);
    return QLORA_OK;
}

QLORA__DEF qlora_result qlora_train_forward(qlora_ctx *ctx, qlora_train *t, const int32_t *tokens, const int32_t *labels,
                                            float grad_scale, uint64_t dropout_seed, double *loss_sum, int *n_targets, float *logits) {
    const qlora_model *m = t->m;
    size_t N = (size_t)t->N, NC = N * t->C;
    int V = t->V;
    qlora_result r;
    *loss_sum = 0; *n_targets = 0;
    t->seed = dropout_seed;
    t->grad_scale = grad_scale;
    t->have_grad = 0;
    for (size_t n = 0; n < N; n++) {
        if (tokens[n] < 0 || tokens[n] >= V) return QLORA__ERR(ctx, QLORA_ERR_RANGE, "train: token id %d at position %zu out of range [0, %d)", tokens[n], n, V);
        if ((r = qlora_tensor_dequantize_rows(&m->tok_embd, (size_t)tokens[n], 1, t->xs + n * t->C)) != QLORA_OK) return r;
    }
    for (int l = 0; l < m->cfg.n_layers; l++)
        if ((r = qlora__block_fwd(ctx, t, l, &t->acts[t->ckpt ? 0 : l])) != QLORA_OK) return r;
    const float *xl = t->xs + (size_t)m->cfg.n_layers * NC;
    const float *w = qlora__norm_w(t, &m->out_norm);
    if (!w) return QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "output_norm type");
    qlora__rmsnorm_fwd(t->hf, t->rstdf, xl, w, t->N, t->C, m->cfg.norm_eps);
    memset(t->dhf, 0, NC * sizeof(float));
    // lm_head + cross-entropy in chunks of tokens: the (N, V) logits never exist at once
    double total = 0;
    int cnt = 0;
    for (size_t n0 = 0; n0 < N; n0 += (size_t)t->chunk) {
        size_t nc = QLORA__MIN((size_t)t->chunk, N - n0);
        float *lg = logits ? logits + n0 * V : t->lchunk;
        if ((r = qlora_matmul(ctx, &m->output, t->hf + n0 * t->C, nc, lg)) != QLORA_OK) return r;
        if (!labels) continue;
        int any = 0;
        for (size_t i = 0; i < nc; i++) {
            size_t n = n0 + i;
            float *row = lg + i * V;
            int tpos = (int)(n % (size_t)t->T);
            int32_t y = tpos + 1 < t->T ? labels[n + 1] : -100;       // shift: t predicts label t+1
            if (y == -100) { if (grad_scale != 0 && logits != NULL) continue; else continue; }
            if (y < 0 || y >= V) return QLORA__ERR(ctx, QLORA_ERR_RANGE, "train: label %d at position %zu out of range", y, n + 1);
            float mx = row[0];
            for (int v = 1; v < V; v++) if (row[v] > mx) mx = row[v];
            double se = 0;
            for (int v = 0; v < V; v++) se += exp((double)(row[v] - mx));
            double lse = (double)mx + log(se);
            total += lse - (double)row[y];
            cnt++;
            if (grad_scale != 0) {                                 // dlogits = scale * (softmax - onehot)
                float *d = t->lchunk + i * V;                      // reuse the chunk buffer for dlogits
                for (int v = 0; v < V; v++) d[v] = grad_scale * (float)exp((double)row[v] - lse);
                d[y] -= grad_scale;
                any = 1;
            }
        }
        if (grad_scale != 0 && any) {
            for (size_t i = 0; i < nc; i++) {                      // rows without a target carry no gradient
                size_t n = n0 + i;
                int tpos = (int)(n % (size_t)t->T);
                int32_t y = tpos + 1 < t->T ? labels[n + 1] : -100;
                if (y == -100) memset(t->lchunk + i * V, 0, (size_t)V * sizeof(float));
            }
            qlora__matmul_t(ctx, &m->output, t->lchunk, nc, t->dhf + n0 * t->C);
        }
    }
    if (!isfinite(total)) return QLORA__ERR(ctx, QLORA_ERR_NUMERIC, "train: loss is not finite (NaN/Inf)");
    *loss_sum = total;
    *n_targets = cnt;
    t->have_grad = grad_scale != 0 && labels != NULL;
    return QLORA_OK;
}

QLORA__DEF qlora_result qlora_train_backward(qlora_ctx *ctx, qlora_train *t) {
    const qlora_model *m = t->m;
    size_t NC = (size_t)t->N * t->C;
    qlora_result r;
    if (!t->have_grad) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "train: backward needs a forward with labels and grad_scale != 0");
    memset(t->dx, 0, NC * sizeof(float));
    const float *w = qlora__norm_w(t, &m->out_norm);
    if (!w) return QLORA__ERR(ctx, QLORA_ERR_UNSUPPORTED, "output_norm type");
    qlora__rmsnorm_bwd(t->dx, t->dhf, t->xs + (size_t)m->cfg.n_layers * NC, w, t->rstdf, t->N, t->C);
    for (int l = m->cfg.n_layers - 1; l >= 0; l--) {
        qlora__acts *a = &t->acts[t->ckpt ? 0 : l];
        if (t->ckpt) {                    // recompute block l from its saved input (same dropout masks)
            if ((r = qlora__block_fwd(ctx, t, l, a)) != QLORA_OK) return r;
        }
        if ((r = qlora__block_bwd(ctx, t, l, a)) != QLORA_OK) return r;
    }
    t->have_grad = 0;
    return QLORA_OK;
}

// >>trainer
#if !defined(_WIN32)
#include <dirent.h>
#include <time.h>
#endif

static double qlora__now(void) {
#if !defined(_WIN32)
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
#else
    return (double)clock() / CLOCKS_PER_SEC;
#endif
}

// Deletes a checkpoint directory (flat: files only).
static void qlora__rmtree_flat(const char *dir) {
#if !defined(_WIN32)
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[4096];
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        remove(p);
    }
    closedir(d);
    rmdir(dir);
#else
    (void)dir;
#endif
}

// checkpoint-N directories of dir, sorted by N ascending (up to cap); returns the count.
static int qlora__list_checkpoints(const char *dir, long *steps, int cap) {
    int n = 0;
#if !defined(_WIN32)
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char *end;
        if (strncmp(e->d_name, "checkpoint-", 11) != 0) continue;
        long s = strtol(e->d_name + 11, &end, 10);
        if (*end || s < 0 || end == e->d_name + 11) continue;
        if (n < cap) steps[n++] = s;
    }
    closedir(d);
    for (int i = 1; i < n; i++)                         // insertion sort: a handful of entries
        for (int j = i; j > 0 && steps[j - 1] > steps[j]; j--) { long t = steps[j]; steps[j] = steps[j - 1]; steps[j - 1] = t; }
#else
    (void)dir; (void)steps; (void)cap;
#endif
    return n;
}

QLORA__DEF qlora_result qlora_find_last_checkpoint(qlora_ctx *ctx, const char *dir, char *buf, size_t cap) {
    long steps[1024];
    int n = qlora__list_checkpoints(dir, steps, 1024);
    if (n == 0) return QLORA__ERR(ctx, QLORA_ERR_NOT_FOUND, "%s: no checkpoint-N directory to resume from", dir);
    snprintf(buf, cap, "%s/checkpoint-%ld", dir, steps[n - 1]);
    return QLORA_OK;
}

static qlora_result qlora__write_text(qlora_ctx *ctx, const char *path, const char *text, size_t n) {
    const void *parts[1] = { text };
    size_t sizes[1] = { n };
    return qlora__write_atomic(ctx, path, parts, sizes, 1);
}

static void qlora__append_line(const char *path, const char *line) {
    FILE *f = fopen(path, "ab");
    if (!f) return;
    fputs(line, f);
    fclose(f);
}

// Rows of a batch that the loader did not fill (end of an epoch) become padding.
static void qlora__batch_pad_rows(qlora_batch *b, int rows, int B, int T, int32_t pad) {
    for (int r = rows; r < B; r++)
        for (int t = 0; t < T; t++) { b->ids[r * T + t] = pad; b->labels[r * T + t] = QLORA_IGNORE_INDEX; }
}
// Targets after the causal shift: label[t+1] != -100 for t < T-1 in every row.
static size_t qlora__batch_targets(const qlora_batch *b, int B, int T) {
    size_t n = 0;
    for (int r = 0; r < B; r++)
        for (int t = 1; t < T; t++) n += b->labels[r * T + t] != QLORA_IGNORE_INDEX;
    return n;
}

QLORA__DEF qlora_result qlora_eval_dataset(qlora_ctx *ctx, const qlora_model *m, const qlora_lora *l,
                                           const qlora_dataset *ds, int B, int T, double *mean_loss, size_t *n_targets) {
    qlora_train_config tc = { B, T, 0 };
    qlora_train *t = NULL;
    qlora_data_loader L;
    qlora_batch b;
    memset(&L, 0, sizeof L);
    memset(&b, 0, sizeof b);
    double sum = 0;
    size_t cnt = 0;
    qlora_result r = qlora_train_create(ctx, m, (qlora_lora *)(uintptr_t)l, &tc, &t);
    if (r == QLORA_OK) r = qlora_loader_init(ctx, &L, ds, B, 0, 0, 0);
    if (r == QLORA_OK) r = qlora_batch_init(ctx, &b, B, T);
    if (r == QLORA_OK) {
        L.pad_to_max = 1;
        int rows;
        while ((rows = qlora_loader_next(&L, &b)) > 0) {
            double ls; int n;
            qlora__batch_pad_rows(&b, rows, B, T, ds->pad_id);
            if ((r = qlora_train_forward(ctx, t, b.ids, b.labels, 0.0f, 0, &ls, &n, NULL)) != QLORA_OK) break;
            sum += ls;
            cnt += (size_t)n;
        }
    }
    qlora_batch_free(&b);
    qlora_loader_free(&L);
    qlora_train_free(t);
    *mean_loss = cnt ? sum / (double)cnt : 0;
    if (n_targets) *n_targets = cnt;
    return r;
}

typedef struct qlora__trainer {
    qlora_ctx *ctx;
    const qlora_model *m;
    qlora_lora *l;
    const qlora_trainer_config *cfg;
    qlora_optim *opt;
    qlora_data_loader *L;
    int64_t step, total;
    double epoch;
} qlora__trainer;

static qlora_result qlora__save_checkpoint(qlora__trainer *tr, char *out_dir, size_t cap) {
    qlora_ctx *ctx = tr->ctx;
    const qlora_trainer_config *cfg = tr->cfg;
    char tmp[4096], dst[4096], path[4200];
    qlora_result r;
    qlora__mkdir(cfg->output_dir);
    snprintf(tmp, sizeof tmp, "%s/.tmp-checkpoint-%lld", cfg->output_dir, (long long)tr->step);
    snprintf(dst, sizeof dst, "%s/checkpoint-%lld", cfg->output_dir, (long long)tr->step);
    qlora__rmtree_flat(tmp);                              // left over from a crash
    qlora__mkdir(tmp);
    if ((r = qlora_lora_save_peft(ctx, tr->l, tr->m, tmp, cfg->base_model_name)) != QLORA_OK) return r;
    size_t ne = qlora_optim_state_entries(tr->opt, NULL, 0);
    qlora_st_entry *e = QLORA__CALLOC_T(qlora_st_entry, ne ? ne : 1);
    if (!e) return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "checkpoint: out of memory");
    qlora_optim_state_entries(tr->opt, e, ne);
    snprintf(path, sizeof path, "%s/optimizer.safetensors", tmp);
    r = qlora_st_write(ctx, path, e, ne);
    QLORA__FREE(e);
    if (r != QLORA_OK) return r;
    qlora_data_cursor c = qlora_loader_cursor(tr->L);
    char js[1024];
    int n = snprintf(js, sizeof js,
        "{\n  \"format\": \"qlora.h trainer_state 1\",\n  \"global_step\": %lld,\n  \"max_steps\": %lld,\n"
        "  \"epoch\": %.6f,\n  \"seed\": \"%llu\",\n  \"cursor_epoch\": \"%llu\",\n  \"cursor_pos\": \"%llu\",\n"
        "  \"cursor_seed\": \"%llu\",\n  \"cursor_rows\": \"%llu\",\n  \"learning_rate\": %.9g,\n  \"optim\": \"%s\"\n}\n",
        (long long)tr->step, (long long)tr->total, tr->epoch, (unsigned long long)cfg->seed,
        (unsigned long long)c.epoch, (unsigned long long)c.pos, (unsigned long long)c.seed, (unsigned long long)c.rows,
        cfg->learning_rate, qlora_optim_kind_name(cfg->optim.kind));
    snprintf(path, sizeof path, "%s/trainer_state.json", tmp);
    if ((r = qlora__write_text(ctx, path, js, (size_t)n)) != QLORA_OK) return r;
    qlora__rmtree_flat(dst);                              // same step saved again (after a resume)
    if (rename(tmp, dst) != 0) return QLORA__ERR(ctx, QLORA_ERR_IO, "%s: cannot rename to %s", tmp, dst);
    if (cfg->save_total_limit > 0) {                      // rotate: drop the oldest beyond the limit
        long steps[1024];
        int k = qlora__list_checkpoints(cfg->output_dir, steps, 1024);
        for (int i = 0; i + cfg->save_total_limit < k; i++) {
            snprintf(path, sizeof path, "%s/checkpoint-%ld", cfg->output_dir, steps[i]);
            qlora__rmtree_flat(path);
        }
    }
    if (out_dir) snprintf(out_dir, cap, "%s", dst);
    return QLORA_OK;
}

static uint64_t qlora__json_u64(const qlora_json *j, const char *key, int *ok) {
    const char *s = qlora_json_str(j, key, NULL);
    if (!s) { *ok = 0; return 0; }
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || end == s) *ok = 0;
    return (uint64_t)v;
}

// Loads everything from dir first and only then changes the lora, optimizer and loader.
static qlora_result qlora__load_checkpoint(qlora__trainer *tr, const char *dir) {
    qlora_ctx *ctx = tr->ctx;
    char path[4200];
    qlora_json *js = NULL;
    qlora_st *ost = NULL;
    qlora_lora *tmp = NULL;
    qlora_result r;
    snprintf(path, sizeof path, "%s/trainer_state.json", dir);
    if ((r = qlora__read_json_file(ctx, path, &js)) != QLORA_OK) return r;
    int ok = 1;
    int64_t step = (int64_t)qlora_json_num(js, "global_step", -1);
    qlora_data_cursor c;
    c.epoch = qlora__json_u64(js, "cursor_epoch", &ok);
    c.pos = qlora__json_u64(js, "cursor_pos", &ok);
    c.seed = qlora__json_u64(js, "cursor_seed", &ok);
    c.rows = qlora__json_u64(js, "cursor_rows", &ok);
    if (!ok || step < 0 || strcmp(qlora_json_str(js, "format", ""), "qlora.h trainer_state 1") != 0) {
        r = QLORA__ERR(ctx, QLORA_ERR_FORMAT, "%s: not a qlora.h trainer state (global_step / cursor fields missing or malformed)", path);
        goto done;
    }
    if ((r = qlora_lora_load_peft(ctx, tr->m, dir, &tmp)) != QLORA_OK) goto done;
    if (tmp->n_params != tr->l->n_params || tmp->cfg.r != tr->l->cfg.r || tmp->cfg.target_mask != tr->l->cfg.target_mask) {
        r = QLORA__ERR(ctx, QLORA_ERR_SHAPE, "%s: the checkpoint's adapter (r %d, %zu params) does not match this run (r %d, %zu params)",
                       dir, tmp->cfg.r, tmp->n_params, tr->l->cfg.r, tr->l->n_params);
        goto done;
    }
    for (size_t i = 0; i < tmp->n_params; i++)
        if (!isfinite(tmp->params[i])) { r = QLORA__ERR(ctx, QLORA_ERR_NUMERIC, "%s: adapter holds non-finite values", dir); goto done; }
    snprintf(path, sizeof path, "%s/optimizer.safetensors", dir);
    if ((r = qlora_st_open(ctx, path, &ost)) != QLORA_OK) goto done;
    {   // cursor first (validates against the dataset), optimizer next (validates before changing)
        qlora_data_cursor old = qlora_loader_cursor(tr->L);
        if ((r = qlora_loader_restore(ctx, tr->L, c)) != QLORA_OK) goto done;
        if ((r = qlora_optim_load_state(tr->opt, ost)) != QLORA_OK) {
            qlora_loader_restore(ctx, tr->L, old);
            r = QLORA__ERR(ctx, r, "%s: %s", path, qlora_ctx_error(ctx));
            goto done;
        }
    }
    memcpy(tr->l->params, tmp->params, tmp->n_params * sizeof(float));
    tr->step = step;
done:
    qlora_lora_free(tmp);
    qlora_st_close(ost);
    qlora_json_free(js);
    return r;
}

static void qlora__emit(const qlora_trainer_config *cfg, qlora_train_event *ev) {
    if (cfg->on_event) cfg->on_event(cfg->user, ev);
}

QLORA__DEF qlora_result qlora_trainer_run(qlora_ctx *ctx, const qlora_model *m, qlora_lora *l,
                                          const qlora_dataset *train, const qlora_dataset *eval,
                                          const qlora_trainer_config *cfg_in, qlora_train_summary *out) {
    qlora_trainer_config cfg = *cfg_in;
    qlora_train_summary sum;
    memset(&sum, 0, sizeof sum);
    sum.first_eval_loss = sum.last_eval_loss = NAN;
    if (cfg.batch <= 0) cfg.batch = 4;
    if (cfg.seq_len <= 0) cfg.seq_len = 256;
    if (cfg.grad_accum <= 0) cfg.grad_accum = 1;
    if (cfg.num_epochs <= 0) cfg.num_epochs = 3;
    if (cfg.learning_rate <= 0) cfg.learning_rate = 2e-4;
    if (cfg.max_grad_norm == 0) cfg.max_grad_norm = 1.0;
    if (cfg.logging_steps <= 0) cfg.logging_steps = 10;
    if (cfg.seed == 0) cfg.seed = 42;
    if (!cfg.output_dir) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "trainer: output_dir is required");
    if (!train || train->n == 0) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "trainer: empty training dataset");
    if (train->max_seq_length > cfg.seq_len)
        return QLORA__ERR(ctx, QLORA_ERR_SHAPE, "trainer: dataset rows are up to %d tokens but seq_len is %d", train->max_seq_length, cfg.seq_len);
    qlora_result r = qlora_optim_config_resolve(&cfg.optim);
    if (r != QLORA_OK) return QLORA__ERR(ctx, r, "trainer: invalid optimizer settings");
    int B = cfg.batch, T = cfg.seq_len, GA = cfg.grad_accum;
    qlora_train *t = NULL;
    qlora_optim *opt = NULL;
    qlora_data_loader L;
    qlora_batch *bs = NULL;
    size_t *seg = NULL, nseg = qlora_lora_segments(l, NULL, 0);
    char path[4200], line[1024], saved[4096];
    double t0 = 0, win_loss = 0, last_lr = 0;     // (declared up here: C++ forbids jumping over them)
    float last_norm = 0;
    int64_t win_n = 0, step0 = 0;
    size_t tokens = 0;
    memset(&L, 0, sizeof L);
    qlora__trainer tr;
    memset(&tr, 0, sizeof tr);
    qlora_train_config tc = { B, T, cfg.grad_checkpointing };
    if ((r = qlora_train_create(ctx, m, l, &tc, &t)) != QLORA_OK) goto done;
    seg = (size_t *)qlora__calloc(nseg ? nseg : 1, sizeof *seg);
    bs = QLORA__CALLOC_T(qlora_batch, (size_t)GA);
    if (!seg || !bs) { r = QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "trainer: out of memory"); goto done; }
    qlora_lora_segments(l, seg, nseg);
    qlora__mkdir(cfg.output_dir);                          // paged optimizer state may live there
    if ((r = qlora_optim_create(ctx, &cfg.optim, seg, nseg, &opt)) != QLORA_OK) goto done;
    if ((r = qlora_loader_init(ctx, &L, train, B, 1, 1, cfg.seed)) != QLORA_OK) goto done;
    L.pad_to_max = 1;
    for (int i = 0; i < GA; i++) if ((r = qlora_batch_init(ctx, &bs[i], B, T)) != QLORA_OK) goto done;
    {
        qlora_train_memory_plan plan;
        qlora_train_memory(m, l, &tc, &plan);
        sum.memory_planned = plan.total + qlora_optim_state_bytes(&cfg.optim, seg, nseg);
    }
    tr.ctx = ctx; tr.m = m; tr.l = l; tr.cfg = &cfg; tr.opt = opt; tr.L = &L;
    {
        size_t per_epoch = qlora_loader_batches_per_epoch(&L);
        tr.total = cfg.max_steps > 0 ? cfg.max_steps : (int64_t)ceil(cfg.num_epochs * (double)per_epoch / (double)GA);
        if (tr.total < 1) tr.total = 1;
    }
    if (cfg.resume_from && (r = qlora__load_checkpoint(&tr, cfg.resume_from)) != QLORA_OK) goto done;
    qlora__mkdir(cfg.output_dir);
    snprintf(path, sizeof path, "%s/metrics.jsonl", cfg.output_dir);
    {
        qlora_train_event ev;
        memset(&ev, 0, sizeof ev);
        ev.kind = QLORA_EV_START; ev.step = tr.step; ev.total_steps = tr.total; ev.path = cfg.resume_from;
        qlora__emit(&cfg, &ev);
    }
    if (eval && cfg.eval_on_start && tr.step == 0) {
        double el0; size_t nt0;
        if ((r = qlora_eval_dataset(ctx, m, l, eval, B, T, &el0, &nt0)) != QLORA_OK) goto done;
        sum.first_eval_loss = el0;
        snprintf(line, sizeof line, "{\"step\": 0, \"epoch\": 0.0, \"eval_loss\": %.6f, \"eval_perplexity\": %.4f}\n", el0, exp(el0));
        qlora__append_line(path, line);
        qlora_train_event ev0;
        memset(&ev0, 0, sizeof ev0);
        ev0.kind = QLORA_EV_EVAL; ev0.total_steps = tr.total; ev0.eval_loss = el0;
        qlora__emit(&cfg, &ev0);
    }
    t0 = qlora__now();
    step0 = tr.step;
    while (tr.step < tr.total) {
        size_t targets = 0;
        for (int i = 0; i < GA; i++) {                    // the whole accumulation step first: HF
            int rows = qlora_loader_next(&L, &bs[i]);      // normalizes by its total target count
            qlora__batch_pad_rows(&bs[i], rows, B, T, train->pad_id);
            targets += qlora__batch_targets(&bs[i], B, T);
            for (int rr = 0; rr < rows; rr++) tokens += (size_t)bs[i].lengths[rr];
        }
        qlora_lora_zero_grad(l);
        double loss_sum = 0;
        if (targets > 0) {
            for (int i = 0; i < GA; i++) {
                double ls; int n;
                uint64_t seed = qlora__mix64(cfg.seed ^ ((uint64_t)(tr.step * GA + i) * 0x9E3779B97F4A7C15ull));
                r = qlora_train_forward(ctx, t, bs[i].ids, bs[i].labels, 1.0f / (float)targets, seed, &ls, &n, NULL);
                if (r == QLORA_ERR_NUMERIC || (r == QLORA_OK && !isfinite(ls))) {
                    r = QLORA__ERR(ctx, QLORA_ERR_NUMERIC, "loss is NaN/Inf at step %lld: training stopped; the last good checkpoint (if any) in %s is untouched",
                                   (long long)tr.step + 1, cfg.output_dir);
                    goto done;
                }
                if (r != QLORA_OK) goto done;
                if ((r = qlora_train_backward(ctx, t)) != QLORA_OK) goto done;
                loss_sum += ls;
            }
            r = qlora_clip_grad_norm(l->grads, seg, nseg, cfg.max_grad_norm > 0 ? cfg.max_grad_norm : 0, &last_norm);
            if (r != QLORA_OK) {
                r = QLORA__ERR(ctx, QLORA_ERR_NUMERIC, "gradient norm is NaN/Inf at step %lld: training stopped; the last good checkpoint (if any) in %s is untouched",
                               (long long)tr.step + 1, cfg.output_dir);
                goto done;
            }
            last_lr = qlora_lr_at(cfg.schedule, cfg.learning_rate, tr.step, cfg.warmup_steps, tr.total);
            if ((r = qlora_optim_step(opt, l->params, l->grads, last_lr)) != QLORA_OK) goto done;
        }
        tr.step++;
        {
            qlora_data_cursor c = qlora_loader_cursor(&L);
            tr.epoch = (double)c.epoch + (double)c.pos / (double)(train->n ? train->n : 1);
        }
        double step_loss = targets ? loss_sum / (double)targets : 0;
        win_loss += step_loss; win_n++;
        double el = qlora__now() - t0;
        qlora_train_event ev;
        memset(&ev, 0, sizeof ev);
        ev.step = tr.step; ev.total_steps = tr.total; ev.epoch = tr.epoch;
        ev.loss = step_loss; ev.learning_rate = last_lr; ev.grad_norm = last_norm;
        ev.tokens_per_second = el > 0 ? (double)tokens / el : 0;
        ev.eta_seconds = (double)(tr.total - tr.step) * el / (double)(tr.step - step0);
        ev.kind = QLORA_EV_STEP;
        qlora__emit(&cfg, &ev);
        if (tr.step % cfg.logging_steps == 0 || tr.step == tr.total) {
            ev.kind = QLORA_EV_LOG;
            ev.loss = win_loss / (double)win_n;
            sum.train_loss = ev.loss;
            snprintf(line, sizeof line, "{\"step\": %lld, \"epoch\": %.4f, \"loss\": %.6f, \"learning_rate\": %.6g, \"grad_norm\": %.6g, \"tokens_per_second\": %.1f}\n",
                     (long long)tr.step, tr.epoch, ev.loss, last_lr, (double)last_norm, ev.tokens_per_second);
            qlora__append_line(path, line);
            qlora__emit(&cfg, &ev);
            win_loss = 0; win_n = 0;
        }
        int do_eval = eval && ((cfg.eval_steps > 0 && tr.step % cfg.eval_steps == 0) || tr.step == tr.total);
        if (do_eval) {
            double el2; size_t nt;
            if ((r = qlora_eval_dataset(ctx, m, l, eval, B, T, &el2, &nt)) != QLORA_OK) goto done;
            if (isnan(sum.first_eval_loss)) sum.first_eval_loss = el2;
            sum.last_eval_loss = el2;
            ev.kind = QLORA_EV_EVAL; ev.eval_loss = el2;
            snprintf(line, sizeof line, "{\"step\": %lld, \"epoch\": %.4f, \"eval_loss\": %.6f, \"eval_perplexity\": %.4f}\n",
                     (long long)tr.step, tr.epoch, el2, exp(el2));
            qlora__append_line(path, line);
            qlora__emit(&cfg, &ev);
        }
        int stop = cfg.interrupt && *cfg.interrupt;
        if ((cfg.save_steps > 0 && tr.step % cfg.save_steps == 0) || (stop && tr.step < tr.total)) {
            if ((r = qlora__save_checkpoint(&tr, saved, sizeof saved)) != QLORA_OK) goto done;
            ev.kind = QLORA_EV_SAVE; ev.path = saved;
            qlora__emit(&cfg, &ev);
        }
        if (stop && tr.step < tr.total) {
            sum.interrupted = 1;
            ev.kind = QLORA_EV_INTERRUPTED; ev.path = saved;
            qlora__emit(&cfg, &ev);
            break;
        }
    }
    if (!sum.interrupted) {
        if ((r = qlora_lora_save_peft(ctx, l, m, cfg.output_dir, cfg.base_model_name)) != QLORA_OK) goto done;
        qlora_train_event ev;
        memset(&ev, 0, sizeof ev);
        ev.kind = QLORA_EV_DONE; ev.step = tr.step; ev.total_steps = tr.total; ev.path = cfg.output_dir;
        ev.loss = sum.train_loss; ev.eval_loss = sum.last_eval_loss;
        qlora__emit(&cfg, &ev);
    }
done:
    sum.steps = tr.step;
    if (out) *out = sum;
    if (bs) for (int i = 0; i < GA; i++) qlora_batch_free(&bs[i]);
    QLORA__FREE(bs);
    QLORA__FREE(seg);
    qlora_loader_free(&L);
    qlora_optim_free(opt);
    qlora_train_free(t);
    return r;
}
