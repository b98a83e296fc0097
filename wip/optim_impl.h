// >>optim
// AdamW three ways (torch f32, bnb 8-bit blockwise, paged) + clip_grad_norm_ + HF LR schedules.
// Every f32 expression below mirrors one torch CPU kernel; where torch's vectorized kernel uses
// a fused multiply-add (lerp_, add_(alpha=), addcmul_) we call fmaf() explicitly, so the result
// does not depend on -ffp-contract. Measured against torch 2.15 (AVX-512 build): lerp_,
// add_(x, alpha) and addcmul_ are fused on every element, addcdiv_ is not. One known difference:
// torch's CPU sqrt of a contiguous f32 tensor goes through MKL vsSqrt (HA mode, +-1 ulp, CPU
// dependent); we use the IEEE sqrtf. With torch.Tensor.sqrt made exact the results are bitwise
// equal (tests/test_optim.c), also when built with -O3 -march=native -ffp-contract=fast (no
// remaining a*b+c is contractible: decay runs as its own pass, the other adds follow a divide).

#define QLORA__OPTIM_BLOCK 256          // bnb 8-bit optimizer blocksize (since bnb 0.44)
#define QLORA__OPTIM_UNIT  4096         // elements per work unit of the threaded step

typedef struct qlora__optim_seg {
    size_t off;          // first element in params/grads
    size_t n;            // elements
    size_t nb;           // 8-bit: blocks of 256
    int    is8;          // 8-bit state
    size_t state_off;    // byte offset of this segment's state in opt->state (64-aligned)
} qlora__optim_seg;

typedef struct qlora__optim_unit { size_t seg, b, e; } qlora__optim_unit;   // [b, e) within the segment

struct qlora_optim {
    qlora_ctx *ctx;
    qlora_optim_config cfg;             // resolved
    size_t n_seg, n_total;
    qlora__optim_seg *segs;             // [n_seg]
    qlora__optim_unit *units;           // [n_units] work split: 8-bit units are whole blocks
    size_t n_units;
    uint8_t *state;                     // [state_bytes], zero-initialised (m = v = 0, codes = absmax = 0)
    size_t state_bytes;
    int64_t step;
    int64_t *layout;                    // [3 + 2*n_seg] for serialization
    char   *names;                      // [(2 + 4*n_seg) * 32] entry names
    // paged
    char   *path;
    int     fd;
    float   map1[256], map2[256];       // bnb create_dynamic_map(signed=True) / (signed=False)
    float   bounds1[255], bounds2[255]; // midpoints (code[i] + code[i+1]) / 2 in f32
};

QLORA__DEF const char *qlora_optim_kind_name(qlora_optim_kind k) {
    static const char *const n[QLORA_OPTIM_COUNT] = { "adamw_torch", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit" };
    return (unsigned)k < QLORA_OPTIM_COUNT ? n[k] : "?";
}

QLORA__DEF qlora_result qlora_optim_config_resolve(qlora_optim_config *c) {
    if (!c || (unsigned)c->kind >= QLORA_OPTIM_COUNT) return QLORA_ERR_INVALID_ARG;
    if (c->beta1 == 0) c->beta1 = 0.9;
    if (c->beta2 == 0) c->beta2 = 0.999;
    if (c->eps == 0) c->eps = 1e-8;
    if (c->min_8bit_size == 0) c->min_8bit_size = 4096;
    if (!(c->beta1 > 0 && c->beta1 < 1) || !(c->beta2 > 0 && c->beta2 < 1) || !(c->eps > 0) ||
        !(c->weight_decay >= 0) || c->weight_decay > 1e30)
        return QLORA_ERR_INVALID_ARG;
    return QLORA_OK;
}

static int qlora__optim_is8(const qlora_optim_config *c, size_t n) {
    return (c->kind == QLORA_OPTIM_ADAMW_8BIT || c->kind == QLORA_OPTIM_PAGED_ADAMW_8BIT) && n >= c->min_8bit_size;
}

// Bytes of one segment's state, rounded up to 64: f32 m, v, or u8 codes + f32 absmax per block.
static int qlora__optim_seg_bytes(const qlora_optim_config *c, size_t n, size_t *out) {
    size_t b;
    if (qlora__optim_is8(c, n)) {
        size_t nb = n / QLORA__OPTIM_BLOCK + (n % QLORA__OPTIM_BLOCK != 0), a;
        if (!qlora__mul_ok(nb, 8, &a) || !qlora__mul_ok(n, 2, &b) || !qlora__add_ok(a, b, &b)) return 0;
    } else if (!qlora__mul_ok(n, 8, &b)) return 0;
    if (!qlora__add_ok(b, 63, &b)) return 0;
    *out = b & ~(size_t)63;
    return 1;
}

QLORA__DEF size_t qlora_optim_state_bytes(const qlora_optim_config *cfg, const size_t *seg_len, size_t n_seg) {
    qlora_optim_config c;
    memset(&c, 0, sizeof c);
    if (cfg) c = *cfg;
    if (qlora_optim_config_resolve(&c) != QLORA_OK || (!seg_len && n_seg)) return 0;
    size_t total = 0, b;
    for (size_t s = 0; s < n_seg; s++)
        if (!qlora__optim_seg_bytes(&c, seg_len[s], &b) || !qlora__add_ok(total, b, &total)) return 0;
    return total;
}

// The state block: heap, or (paged) a MAP_SHARED mapping of a fresh file in cfg.paged_dir. The
// file stays visible (qlora_optim_paged_path) while the optimizer lives and is deleted on free.
static qlora_result qlora__optim_alloc_state(qlora_optim *o) {
    size_t bytes = o->state_bytes ? o->state_bytes : 1;
    o->fd = -1;
    if (o->cfg.kind != QLORA_OPTIM_PAGED_ADAMW_8BIT && o->cfg.kind != QLORA_OPTIM_PAGED_ADAMW_32BIT) {
        o->state = (uint8_t *)qlora__calloc(bytes, 1);
        return o->state ? QLORA_OK : QLORA__ERR(o->ctx, QLORA_ERR_OUT_OF_MEMORY, "optimizer: %zu bytes of state", bytes);
    }
#if defined(_WIN32) || defined(QLORA_NO_STDIO)
    return QLORA__ERR(o->ctx, QLORA_ERR_UNSUPPORTED, "optimizer: paged state needs POSIX mmap");
#else
    const char *dir = o->cfg.paged_dir;
    if (!dir || !*dir) dir = getenv("TMPDIR");
    if (!dir || !*dir) dir = "/tmp";
    size_t dl = strlen(dir);
    o->path = (char *)QLORA__MALLOC(dl + 32);
    if (!o->path) return QLORA_ERR_OUT_OF_MEMORY;
    snprintf(o->path, dl + 32, "%s/qlora-optim-XXXXXX", dir);
    o->fd = mkstemp(o->path);
    if (o->fd < 0) {
        qlora_result r = QLORA__ERR(o->ctx, QLORA_ERR_IO, "optimizer: cannot create paged state file in '%s': %s", dir, strerror(errno));
        QLORA__FREE(o->path); o->path = NULL;
        return r;
    }
    if (ftruncate(o->fd, (off_t)bytes) != 0) {   // sparse file: reads as zeros = fresh state
        return QLORA__ERR(o->ctx, QLORA_ERR_IO, "optimizer: cannot size '%s' to %zu bytes: %s", o->path, bytes, strerror(errno));
    }
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, o->fd, 0);
    if (p == MAP_FAILED)
        return QLORA__ERR(o->ctx, QLORA_ERR_IO, "optimizer: cannot map '%s': %s", o->path, strerror(errno));
    o->state = (uint8_t *)p;
    return QLORA_OK;
#endif
}

QLORA__DEF void qlora_optim_free(qlora_optim *o) {
    if (!o) return;
    if (o->path) {
#if !defined(_WIN32) && !defined(QLORA_NO_STDIO)
        if (o->state) munmap(o->state, o->state_bytes ? o->state_bytes : 1);
        if (o->fd >= 0) close(o->fd);
        unlink(o->path);
#endif
        QLORA__FREE(o->path);
    } else {
        QLORA__FREE(o->state);
    }
    QLORA__FREE(o->segs);
    QLORA__FREE(o->units);
    QLORA__FREE(o->layout);
    QLORA__FREE(o->names);
    QLORA__FREE(o);
}

#define QLORA__OPTIM_NAME 32
static char *qlora__optim_name(const qlora_optim *o, size_t i) { return o->names + i * QLORA__OPTIM_NAME; }

QLORA__DEF qlora_result qlora_optim_create(qlora_ctx *ctx, const qlora_optim_config *cfg,
                                          const size_t *seg_len, size_t n_seg, qlora_optim **out) {
    if (!out) return QLORA_ERR_INVALID_ARG;
    *out = NULL;
    if (!seg_len && n_seg) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "optimizer: seg_len is NULL");
    qlora_optim_config c;
    memset(&c, 0, sizeof c);
    if (cfg) c = *cfg;
    if (qlora_optim_config_resolve(&c) != QLORA_OK)
        return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "optimizer: invalid config (kind %d, betas %g/%g, eps %g, weight_decay %g)",
                          (int)c.kind, c.beta1, c.beta2, c.eps, c.weight_decay);
    qlora_optim *o = QLORA__CALLOC_T(qlora_optim, 1);
    if (!o) return QLORA_ERR_OUT_OF_MEMORY;
    qlora_result r = QLORA_OK;
    size_t n_units = 0;
    o->ctx = ctx;
    o->cfg = c;
    o->fd = -1;
    o->n_seg = n_seg;
    o->segs = QLORA__CALLOC_T(qlora__optim_seg, n_seg ? n_seg : 1);
    o->layout = QLORA__CALLOC_T(int64_t, 3 + 2 * n_seg);
    o->names = (char *)qlora__calloc(2 + 4 * n_seg, QLORA__OPTIM_NAME);
    if (!o->segs || !o->layout || !o->names) { r = QLORA_ERR_OUT_OF_MEMORY; goto fail; }
    o->layout[0] = 1; o->layout[1] = QLORA__OPTIM_BLOCK; o->layout[2] = (int64_t)n_seg;
    for (size_t s = 0; s < n_seg; s++) {
        qlora__optim_seg *g = &o->segs[s];
        size_t b;
        g->off = o->n_total;
        g->n = seg_len[s];
        g->is8 = qlora__optim_is8(&c, g->n);
        g->nb = g->n / QLORA__OPTIM_BLOCK + (g->n % QLORA__OPTIM_BLOCK != 0);
        g->state_off = o->state_bytes;
        if (!qlora__add_ok(o->n_total, g->n, &o->n_total) || !qlora__optim_seg_bytes(&c, g->n, &b) ||
            !qlora__add_ok(o->state_bytes, b, &o->state_bytes)) {
            r = QLORA__ERR(ctx, QLORA_ERR_RANGE, "optimizer: segment %zu (%zu elements): size overflows", s, g->n);
            goto fail;
        }
        n_units += g->n / QLORA__OPTIM_UNIT + 1;
        o->layout[3 + 2 * s] = (int64_t)g->n;
        o->layout[4 + 2 * s] = g->is8 ? 8 : 32;
    }
    o->units = QLORA__CALLOC_T(qlora__optim_unit, n_units ? n_units : 1);
    if (!o->units) { r = QLORA_ERR_OUT_OF_MEMORY; goto fail; }
    for (size_t s = 0; s < n_seg; s++)     // QLORA__OPTIM_UNIT is a multiple of 256: units never split a block
        for (size_t b = 0; b < o->segs[s].n; b += QLORA__OPTIM_UNIT) {
            qlora__optim_unit *u = &o->units[o->n_units++];
            u->seg = s; u->b = b; u->e = QLORA__MIN(o->segs[s].n, b + QLORA__OPTIM_UNIT);
        }
    qlora_dynamic_map(1, o->map1);
    qlora_dynamic_map(0, o->map2);
    for (int i = 0; i < 255; i++) {     // bnb default backend: bounds = (code[:-1] + code[1:]) / 2
        o->bounds1[i] = (o->map1[i] + o->map1[i + 1]) / 2.0f;
        o->bounds2[i] = (o->map2[i] + o->map2[i + 1]) / 2.0f;
    }
    snprintf(qlora__optim_name(o, 0), QLORA__OPTIM_NAME, "optim.step");
    snprintf(qlora__optim_name(o, 1), QLORA__OPTIM_NAME, "optim.layout");
    for (size_t s = 0; s < n_seg; s++) {
        static const char *const n32[2] = { "exp_avg", "exp_avg_sq" };
        static const char *const n8[4] = { "state1", "state2", "absmax1", "absmax2" };
        for (int k = 0; k < (o->segs[s].is8 ? 4 : 2); k++)
            snprintf(qlora__optim_name(o, 2 + 4 * s + (size_t)k), QLORA__OPTIM_NAME, "optim.%zu.%s", s,
                     o->segs[s].is8 ? n8[k] : n32[k]);
    }
    r = qlora__optim_alloc_state(o);
    if (r != QLORA_OK) goto fail;
    *out = o;
    return QLORA_OK;
fail:
    qlora_optim_free(o);
    return r;
}

QLORA__DEF int64_t qlora_optim_steps(const qlora_optim *o) { return o ? o->step : 0; }
QLORA__DEF size_t qlora_optim_nparams(const qlora_optim *o) { return o ? o->n_total : 0; }
QLORA__DEF int qlora_optim_segment_is_8bit(const qlora_optim *o, size_t s) { return o && s < o->n_seg && o->segs[s].is8; }
QLORA__DEF const char *qlora_optim_paged_path(const qlora_optim *o) { return o ? o->path : NULL; }

// Per-segment views into the state block.
static float *qlora__optim_m(const qlora_optim *o, const qlora__optim_seg *g) { return (float *)(o->state + g->state_off); }
static float *qlora__optim_v(const qlora_optim *o, const qlora__optim_seg *g) { return qlora__optim_m(o, g) + g->n; }
static float *qlora__optim_absmax1(const qlora_optim *o, const qlora__optim_seg *g) { return (float *)(o->state + g->state_off); }
static float *qlora__optim_absmax2(const qlora_optim *o, const qlora__optim_seg *g) { return qlora__optim_absmax1(o, g) + g->nb; }
static uint8_t *qlora__optim_q1(const qlora_optim *o, const qlora__optim_seg *g) { return o->state + g->state_off + 8 * g->nb; }
static uint8_t *qlora__optim_q2(const qlora_optim *o, const qlora__optim_seg *g) { return qlora__optim_q1(o, g) + g->n; }

// Scalars of one step, computed once in double exactly as the Python code does, then rounded to
// f32 where the scalar meets an f32 tensor (torch's Scalar.to<float>()).
typedef struct qlora__optim_scalars {
    float b1, one_minus_b1, b2, one_minus_b2, decay;   // decay = 1 - lr*wd (used iff wd != 0)
    float t_bc2_sqrt, t_eps, t_neg_step;                // torch AdamW
    float c_step_size, c_eps_c2;                        // bnb 32-bit CPU
    float q_c2, q_eps, q_neg_lr_c1;                     // bnb 8-bit CPU
    int   decay_on;
} qlora__optim_scalars;

typedef struct qlora__optim_task {
    qlora_optim *o;
    float *params;          // (n_total)
    const float *grads;     // (n_total)
    const qlora__optim_scalars *k;
} qlora__optim_task;

// Decoupled weight decay p *= 1 - lr*wd, as its own pass: fused into the following add by a
// contracting compiler it would no longer round like torch's separate mul_.
static void qlora__optim_decay(float *p, size_t n, float decay) {
    for (size_t i = 0; i < n; i++) p[i] = p[i] * decay;
}

// torch.optim.adam._single_tensor_adam, decoupled_weight_decay=True (AdamW), amsgrad=False.
static void qlora__adamw_torch(float *p, const float *g, float *m, float *v, size_t n, const qlora__optim_scalars *k) {
    if (k->decay_on) qlora__optim_decay(p, n, k->decay);                // param.mul_(1 - lr*wd)
    for (size_t i = 0; i < n; i++) {
        float x = p[i];
        // exp_avg.lerp_(grad, 1-b1): vectorized lerp = fmadd(w, end - start, start) for |w| < 0.5,
        // else fmadd(w - 1, end - start, end)
        float w = k->one_minus_b1, d = g[i] - m[i];
        m[i] = w < 0.5f ? fmaf(w, d, m[i]) : fmaf(w - 1.0f, d, g[i]);
        v[i] = fmaf(k->one_minus_b2 * g[i], g[i], v[i] * k->b2);        // mul_(b2).addcmul_(g, g, 1-b2)
        float denom = sqrtf(v[i]) / k->t_bc2_sqrt + k->t_eps;           // (v.sqrt() / bc2_sqrt).add_(eps)
        p[i] = x + k->t_neg_step * m[i] / denom;                        // addcdiv_(m, denom, -step_size)
    }
}

// bitsandbytes backends/cpu/ops.py _optimizer_update_32bit_cpu ("adam", max_unorm 0).
static void qlora__adamw_bnb32(float *p, const float *g, float *m, float *v, size_t n, const qlora__optim_scalars *k) {
    if (k->decay_on) qlora__optim_decay(p, n, k->decay);                // p_float.mul_(1 - lr*wd)
    for (size_t i = 0; i < n; i++) {
        m[i] = fmaf(g[i], k->one_minus_b1, m[i] * k->b1);               // mul_(b1).add_(g, alpha=1-b1)
        v[i] = fmaf(k->one_minus_b2 * g[i], g[i], v[i] * k->b2);        // mul_(b2).addcmul_(g, g, 1-b2)
        float x = p[i];
        float upd = m[i] / (sqrtf(v[i]) + k->c_eps_c2);                 // s1 / (sqrt(s2) + eps*c2)
        p[i] = fmaf(upd, k->c_step_size, x);                            // add_(update, alpha=step_size)
    }
}

// Nearest code (bnb default backend quantize_blockwise): torch.bucketize(x, bounds, right=False)
// = the number of midpoints strictly below x, so a tie goes to the lower code.
static uint8_t qlora__optim_bucketize(const float bounds[255], float x) {
    int lo = 0, hi = 255;                  // answer in [0, 255]
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (bounds[mid] < x) lo = mid + 1; else hi = mid;
    }
    return (uint8_t)lo;
}

// Requantize one block s[0..n) (bnb default backend): a full block stores the raw absmax and is
// scaled by the reciprocal; the tensor's last partial block stores max(absmax, 1e-38) and divides.
static void qlora__optim_requant(const float *s, size_t n, int tail, const float bounds[255], uint8_t *q, float *absmax) {
    float am = 0.0f;
    for (size_t i = 0; i < n; i++) { float a = fabsf(s[i]); if (a > am || a != a) am = a; }
    const float tiny = (float)1e-38;
    if (!tail) {
        float inv = 1.0f / (am > tiny ? am : tiny);
        for (size_t i = 0; i < n; i++) {
            float x = s[i] * inv;
            x = x < -1.0f ? -1.0f : (x > 1.0f ? 1.0f : x);
            q[i] = qlora__optim_bucketize(bounds, x);
        }
        *absmax = am;
    } else {
        am = am > tiny ? am : tiny;
        for (size_t i = 0; i < n; i++) {
            float x = s[i] / am;
            x = x < -1.0f ? -1.0f : (x > 1.0f ? 1.0f : x);
            q[i] = qlora__optim_bucketize(bounds, x);
        }
        *absmax = am;
    }
}

// bitsandbytes backends/cpu/ops.py _optimizer_update_8bit_blockwise_cpu ("adam"), one block of
// 256: dequantize (code[q] * absmax), update in f32, requantize exactly.
static void qlora__adamw_bnb8_block(const qlora_optim *o, float *p, const float *g, uint8_t *q1, uint8_t *q2,
                                    float *absmax1, float *absmax2, size_t n, int tail, const qlora__optim_scalars *k) {
    float s1[QLORA__OPTIM_BLOCK], s2[QLORA__OPTIM_BLOCK];
    if (k->decay_on) qlora__optim_decay(p, n, k->decay);                // decay BEFORE the step (CPU backend)
    for (size_t i = 0; i < n; i++) {
        float m = o->map1[q1[i]] * *absmax1, v = o->map2[q2[i]] * *absmax2;
        m = fmaf(g[i], k->one_minus_b1, m * k->b1);                     // mul_(b1).add_(g, alpha=1-b1)
        v = fmaf(k->one_minus_b2 * g[i], g[i], v * k->b2);              // mul_(b2).addcmul_(g, g, 1-b2)
        float denom = sqrtf(v) / k->q_c2 + k->q_eps;                    // (s2.sqrt() / c2).add_(eps)
        p[i] = p[i] + k->q_neg_lr_c1 * m / denom;                          // addcdiv_(s1, denom, -lr/c1)
        s1[i] = m; s2[i] = v;
    }
    qlora__optim_requant(s1, n, tail, o->bounds1, q1, absmax1);
    qlora__optim_requant(s2, n, tail, o->bounds2, q2, absmax2);
}

static void qlora__optim_run(void *arg, int ith, int nth) {
    qlora__optim_task *t = (qlora__optim_task *)arg;
    qlora_optim *o = t->o;
    size_t ub, ue;
    qlora__split(o->n_units, ith, nth, &ub, &ue);
    for (size_t u = ub; u < ue; u++) {
        const qlora__optim_unit *un = &o->units[u];
        const qlora__optim_seg *g = &o->segs[un->seg];
        float *p = t->params + g->off;
        const float *gr = t->grads + g->off;
        if (g->is8) {
            for (size_t b = un->b; b < un->e; b += QLORA__OPTIM_BLOCK) {
                size_t n = QLORA__MIN((size_t)QLORA__OPTIM_BLOCK, g->n - b), blk = b / QLORA__OPTIM_BLOCK;
                int tail = n < QLORA__OPTIM_BLOCK;
                qlora__adamw_bnb8_block(o, p + b, gr + b, qlora__optim_q1(o, g) + b, qlora__optim_q2(o, g) + b,
                                        qlora__optim_absmax1(o, g) + blk, qlora__optim_absmax2(o, g) + blk, n, tail, t->k);
            }
        } else if (o->cfg.kind == QLORA_OPTIM_ADAMW) {
            qlora__adamw_torch(p + un->b, gr + un->b, qlora__optim_m(o, g) + un->b, qlora__optim_v(o, g) + un->b, un->e - un->b, t->k);
        } else {
            qlora__adamw_bnb32(p + un->b, gr + un->b, qlora__optim_m(o, g) + un->b, qlora__optim_v(o, g) + un->b, un->e - un->b, t->k);
        }
    }
}

QLORA__DEF qlora_result qlora_optim_step(qlora_optim *o, float *params, const float *grads, double lr) {
    if (!o) return QLORA_ERR_INVALID_ARG;
    if ((!params || !grads) && o->n_total) return QLORA__ERR(o->ctx, QLORA_ERR_INVALID_ARG, "optimizer step: params/grads is NULL");
    if (!(lr >= 0) || lr > 1e30) return QLORA__ERR(o->ctx, QLORA_ERR_INVALID_ARG, "optimizer step: learning rate %g", lr);
    const qlora_optim_config *c = &o->cfg;
    o->step++;
    double step = (double)o->step, wd = c->weight_decay;
    qlora__optim_scalars k;
    memset(&k, 0, sizeof k);
    k.b1 = (float)c->beta1;
    k.one_minus_b1 = (float)(1.0 - c->beta1);
    k.b2 = (float)c->beta2;
    k.one_minus_b2 = (float)(1.0 - c->beta2);
    k.decay_on = wd != 0.0;
    k.decay = (float)(1.0 - lr * wd);
    double bc1 = 1.0 - pow(c->beta1, step), bc2 = 1.0 - pow(c->beta2, step);
    // torch: step_size = lr / bc1; bc2_sqrt = bc2 ** 0.5; addcdiv_(value = -step_size)
    k.t_bc2_sqrt = (float)pow(bc2, 0.5);
    k.t_eps = (float)c->eps;
    k.t_neg_step = (float)(-(lr / bc1));
    // bnb CPU: c2 = math.sqrt(1 - b2**step); 32-bit step_size = -lr * c2 / c1; 8-bit value = -lr / c1
    double c2 = sqrt(bc2);
    k.c_step_size = (float)(-lr * c2 / bc1);
    k.c_eps_c2 = (float)(c->eps * c2);
    k.q_c2 = (float)c2;
    k.q_eps = (float)c->eps;
    k.q_neg_lr_c1 = (float)(-lr / bc1);
    qlora__optim_task t;
    t.o = o; t.params = params; t.grads = grads; t.k = &k;
    if (o->ctx) qlora_parallel_for(o->ctx, qlora__optim_run, &t);
    else qlora__optim_run(&t, 0, 1);
    return QLORA_OK;
}

// >>optim-state
static void qlora__optim_entry(qlora_st_entry *e, const char *name, const char *dtype, int64_t len, const void *data, size_t nbytes) {
    memset(e, 0, sizeof *e);
    e->name = name; e->dtype = dtype; e->n_dims = 1; e->shape[0] = len; e->data = data; e->nbytes = nbytes;
}

// Entry i of the serialized state (0 = step, 1 = layout, then per segment 2 or 4).
static size_t qlora__optim_entries(const qlora_optim *o, qlora_st_entry *out, size_t cap) {
    size_t n = 0;
    qlora_st_entry e;
#define QLORA__OPTIM_PUT() do { if (n < cap) out[n] = e; n++; } while (0)
    qlora__optim_entry(&e, qlora__optim_name(o, 0), "I64", 1, &o->step, 8); QLORA__OPTIM_PUT();
    qlora__optim_entry(&e, qlora__optim_name(o, 1), "I64", (int64_t)(3 + 2 * o->n_seg), o->layout, (3 + 2 * o->n_seg) * 8); QLORA__OPTIM_PUT();
    for (size_t s = 0; s < o->n_seg; s++) {
        const qlora__optim_seg *g = &o->segs[s];
        const char *nm = qlora__optim_name(o, 2 + 4 * s);
        if (g->is8) {
            qlora__optim_entry(&e, nm, "U8", (int64_t)g->n, qlora__optim_q1(o, g), g->n); QLORA__OPTIM_PUT();
            qlora__optim_entry(&e, nm + QLORA__OPTIM_NAME, "U8", (int64_t)g->n, qlora__optim_q2(o, g), g->n); QLORA__OPTIM_PUT();
            qlora__optim_entry(&e, nm + 2 * QLORA__OPTIM_NAME, "F32", (int64_t)g->nb, qlora__optim_absmax1(o, g), g->nb * 4); QLORA__OPTIM_PUT();
            qlora__optim_entry(&e, nm + 3 * QLORA__OPTIM_NAME, "F32", (int64_t)g->nb, qlora__optim_absmax2(o, g), g->nb * 4); QLORA__OPTIM_PUT();
        } else {
            qlora__optim_entry(&e, nm, "F32", (int64_t)g->n, qlora__optim_m(o, g), g->n * 4); QLORA__OPTIM_PUT();
            qlora__optim_entry(&e, nm + QLORA__OPTIM_NAME, "F32", (int64_t)g->n, qlora__optim_v(o, g), g->n * 4); QLORA__OPTIM_PUT();
        }
    }
#undef QLORA__OPTIM_PUT
    return n;
}

QLORA__DEF size_t qlora_optim_state_entries(const qlora_optim *o, qlora_st_entry *out, size_t cap) {
    if (!o) return 0;
    return qlora__optim_entries(o, out, out ? cap : 0);
}

QLORA__DEF qlora_result qlora_optim_load_state(qlora_optim *o, const qlora_st *st) {
    if (!o || !st) return QLORA_ERR_INVALID_ARG;
    qlora_ctx *ctx = o->ctx;
    size_t n = qlora__optim_entries(o, NULL, 0);
    qlora_st_entry *want = QLORA__CALLOC_T(qlora_st_entry, n);
    const qlora_st_tensor **have = (const qlora_st_tensor **)qlora__calloc(n, sizeof(qlora_st_tensor *));
    qlora_result r = QLORA_OK;
    if (!want || !have) { r = QLORA_ERR_OUT_OF_MEMORY; goto done; }
    qlora__optim_entries(o, want, n);
    // pass 1: every tensor is there with the right dtype, shape and size
    for (size_t i = 0; i < n; i++) {
        const qlora_st_tensor *t = qlora_st_find(st, want[i].name);
        if (!t) { r = QLORA__ERR(ctx, QLORA_ERR_NOT_FOUND, "optimizer state: tensor '%s' missing (saved by another optimizer kind or LoRA layout?)", want[i].name); goto done; }
        if (strcmp(t->dtype, want[i].dtype) != 0 || t->n_dims != 1 || t->shape[0] != want[i].shape[0] || t->nbytes != want[i].nbytes) {
            r = QLORA__ERR(ctx, QLORA_ERR_SHAPE, "optimizer state: '%s' is %s[%lld] (%zu bytes), expected %s[%lld]", want[i].name,
                           t->dtype, t->n_dims ? (long long)t->shape[0] : -1LL, t->nbytes, want[i].dtype, (long long)want[i].shape[0]);
            goto done;
        }
        have[i] = t;
    }
    // pass 2: values (the layout must match, floats finite, second moments and absmax >= 0)
    {
        const uint8_t *lay = have[1]->data;
        for (size_t j = 0; j < 3 + 2 * o->n_seg; j++) {
            int64_t v = (int64_t)qlora__rd_u64(lay + 8 * j);
            if (v != o->layout[j]) {
                r = QLORA__ERR(ctx, QLORA_ERR_FORMAT, "optimizer state: layout[%zu] = %lld, this optimizer has %lld (%s)", j, (long long)v,
                               (long long)o->layout[j], j < 3 ? "format/blocksize/segment count" : (j % 2 ? "segment length" : "segment state bits"));
                goto done;
            }
        }
        int64_t step = (int64_t)qlora__rd_u64(have[0]->data);
        if (step < 0) { r = QLORA__ERR(ctx, QLORA_ERR_RANGE, "optimizer state: step %lld", (long long)step); goto done; }
        for (size_t i = 2; i < n; i++) {
            if (strcmp(want[i].dtype, "F32") != 0) continue;
            int nonneg = strstr(want[i].name, "exp_avg_sq") || strstr(want[i].name, "absmax");
            const uint8_t *d = have[i]->data;
            for (size_t e = 0; e < have[i]->nbytes / 4; e++) {
                float f = qlora__f32_from_bits(qlora__rd_u32(d + 4 * e));
                if (!(f == f) || fabsf(f) > FLT_MAX || (nonneg && f < 0)) {
                    r = QLORA__ERR(ctx, QLORA_ERR_NUMERIC, "optimizer state: '%s'[%zu] = %g", want[i].name, e, (double)f);
                    goto done;
                }
            }
        }
        // all good: copy (the state is ours, so entries point at where the data goes)
        o->step = step;
        for (size_t i = 2; i < n; i++) memcpy((void *)want[i].data, have[i]->data, want[i].nbytes);
    }
done:
    QLORA__FREE(want);
    QLORA__FREE((void *)have);
    return r;
}

// >>clip
QLORA__DEF qlora_result qlora_clip_grad_norm(float *grads, const size_t *seg_len, size_t n_seg, double max_norm, float *total_norm) {
    if ((!grads || !seg_len) && n_seg) return QLORA_ERR_INVALID_ARG;
    // per-tensor norms (as _foreach_norm), then the norm of the norms (vector_norm of the stack)
    double tot2 = 0.0;
    size_t off = 0;
    for (size_t s = 0; s < n_seg; s++) {
        double ss = 0.0;
        for (size_t i = 0; i < seg_len[s]; i++) { double x = grads[off + i]; ss += x * x; }
        float ns = (float)sqrt(ss);                   // torch keeps each per-tensor norm as f32
        tot2 += (double)ns * (double)ns;
        off += seg_len[s];
    }
    float total = (float)sqrt(tot2);
    if (total_norm) *total_norm = total;
    if (!(total == total) || total > FLT_MAX) return QLORA_ERR_NUMERIC;
    if (!(max_norm > 0)) return QLORA_OK;
    float coef = (1.0f / (total + (float)1e-6)) * (float)max_norm;   // max_norm / t == t.reciprocal() * max_norm
    if (coef > 1.0f) coef = 1.0f;                                      // clamp(max=1.0)
    for (size_t i = 0; i < off; i++) grads[i] *= coef;                 // _foreach_mul_, always
    return QLORA_OK;
}

// >>lr-schedule
QLORA__DEF double qlora_lr_at(qlora_lr_schedule kind, double base_lr, int64_t step, int64_t warmup, int64_t total) {
    double lam = 1.0;
    if (kind == QLORA_LR_CONSTANT) return base_lr * lam;
    if (step < warmup) return base_lr * ((double)step / (double)QLORA__MAX((int64_t)1, warmup));
    switch (kind) {
    case QLORA_LR_LINEAR:
        lam = (double)(total - step) / (double)QLORA__MAX((int64_t)1, total - warmup);
        lam = lam > 0.0 ? lam : 0.0;
        break;
    case QLORA_LR_COSINE: {
        double progress = (double)(step - warmup) / (double)QLORA__MAX((int64_t)1, total - warmup);
        const double pi = 3.141592653589793;                         // math.pi
        lam = 0.5 * (1.0 + cos(pi * 0.5 * 2.0 * progress));          // math.pi * num_cycles * 2.0 * progress
        lam = lam > 0.0 ? lam : 0.0;
        break;
    }
    default: lam = 1.0; break;
    }
    return base_lr * lam;
}

QLORA__DEF qlora_result qlora_lr_schedule_parse(const char *name, qlora_lr_schedule *out) {
    static const char *const n[QLORA_LR_COUNT] = { "linear", "cosine", "constant", "constant_with_warmup" };
    if (!name || !out) return QLORA_ERR_INVALID_ARG;
    for (int i = 0; i < QLORA_LR_COUNT; i++)
        if (!strcmp(name, n[i])) { *out = (qlora_lr_schedule)i; return QLORA_OK; }
    return QLORA_ERR_NOT_FOUND;
}
