// >>lora
// Adapter bookkeeping. All trainable floats live in one block (llm.c: one allocation per role):
// for each module in (layer, q k v o gate up down) order: A (r*in), B (out*r), [bias (out)].
static const char *const qlora__mod_names[QLORA_MOD_COUNT] = { "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj" };
static const char *const qlora__mod_parent[QLORA_MOD_COUNT] = { "self_attn", "self_attn", "self_attn", "self_attn", "mlp", "mlp", "mlp" };

QLORA__DEF const char *qlora_module_name(qlora_module m) { return (unsigned)m < QLORA_MOD_COUNT ? qlora__mod_names[m] : "?"; }
QLORA__DEF const char *qlora_module_parent(qlora_module m) { return (unsigned)m < QLORA_MOD_COUNT ? qlora__mod_parent[m] : "?"; }

QLORA__DEF qlora_result qlora_lora_parse_targets(qlora_ctx *ctx, const char *list, unsigned *mask) {
    *mask = 0;
    if (!list || !*list) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "target modules: empty list");
    if (!strcmp(list, "all-linear")) { *mask = QLORA_MODS_ALL_LINEAR; return QLORA_OK; }
    const char *p = list;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        while (n && *p == ' ') { p++; n--; }
        while (n && p[n - 1] == ' ') n--;
        int found = -1;
        for (int m = 0; m < QLORA_MOD_COUNT; m++)
            if (strlen(qlora__mod_names[m]) == n && !memcmp(p, qlora__mod_names[m], n)) found = m;
        if (found < 0)
            return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "unknown target module '%.*s' (valid: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, or all-linear)", (int)n, p);
        *mask |= 1u << found;
        p = e ? e + 1 : p + n;
    }
    return QLORA_OK;
}

static void qlora__module_shape(const qlora_model_config *c, qlora_module m, int *in, int *out) {
    int qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    switch (m) {
    case QLORA_MOD_Q: *in = c->dim; *out = qd; break;
    case QLORA_MOD_K: case QLORA_MOD_V: *in = c->dim; *out = kvd; break;
    case QLORA_MOD_O: *in = qd; *out = c->dim; break;
    case QLORA_MOD_GATE: case QLORA_MOD_UP: *in = c->dim; *out = c->hidden_dim; break;
    default: *in = c->hidden_dim; *out = c->dim; break;
    }
}

// The frozen base weight / bias of a module.
static const qlora_tensor *qlora__module_weight(const qlora_model *m, int layer, qlora_module mod) {
    const qlora_layer *ly = &m->layers[layer];
    const qlora_tensor *w[QLORA_MOD_COUNT] = { &ly->wq, &ly->wk, &ly->wv, &ly->wo, &ly->w_gate, &ly->w_up, &ly->w_down };
    return w[mod];
}
static const qlora_tensor *qlora__module_bias(const qlora_model *m, int layer, qlora_module mod) {
    const qlora_layer *ly = &m->layers[layer];
    if (mod == QLORA_MOD_Q) return ly->bq.data ? &ly->bq : NULL;
    if (mod == QLORA_MOD_K) return ly->bk.data ? &ly->bk : NULL;
    if (mod == QLORA_MOD_V) return ly->bv.data ? &ly->bv : NULL;
    return NULL;
}

// xorshift-based uniform in [-b, b) for the A init (not torch's mt19937 stream: parity tests load
// A/B values from files instead of replaying torch's generator).
QLORA__DEF qlora_result qlora_lora_create(qlora_ctx *ctx, const qlora_model *m, const qlora_lora_config *cfg_in, qlora_lora **out) {
    *out = NULL;
    qlora_lora_config cfg;
    memset(&cfg, 0, sizeof cfg);
    if (cfg_in) cfg = *cfg_in;
    if (cfg.r <= 0) cfg.r = 8;
    if (cfg.alpha == 0) cfg.alpha = 8;
    if (!cfg.target_mask) cfg.target_mask = QLORA_MODS_DEFAULT;
    if (cfg.r > 4096) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "lora: r = %d is too large", cfg.r);
    if (cfg.dropout < 0 || cfg.dropout >= 1) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "lora: dropout %g must be in [0, 1)", (double)cfg.dropout);
    if (cfg.target_mask & ~QLORA_MODS_ALL_LINEAR) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "lora: bad target mask 0x%x", cfg.target_mask);
    const qlora_model_config *c = &m->cfg;
    qlora_lora *l = QLORA__CALLOC_T(qlora_lora, 1);
    if (!l) return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "lora: out of memory");
    l->cfg = cfg;
    l->scaling = cfg.use_rslora ? cfg.alpha / sqrtf((float)cfg.r) : cfg.alpha / (float)cfg.r;
    l->n_layers = c->n_layers;
    int per = 0;
    for (int k = 0; k < QLORA_MOD_COUNT; k++) if (cfg.target_mask & (1u << k)) per++;
    l->n_mods = per * c->n_layers;
    l->mods = QLORA__CALLOC_T(qlora_lora_module, (size_t)l->n_mods);
    l->by = (qlora_lora_module **)qlora__calloc((size_t)c->n_layers * QLORA_MOD_COUNT, sizeof *l->by);
    if (!l->mods || !l->by) { qlora_lora_free(l); return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "lora: out of memory"); }
    size_t total = 0;
    int i = 0;
    for (int layer = 0; layer < c->n_layers; layer++) {
        for (int k = 0; k < QLORA_MOD_COUNT; k++) {
            if (!(cfg.target_mask & (1u << k))) continue;
            qlora_lora_module *md = &l->mods[i++];
            md->layer = layer;
            md->mod = (qlora_module)k;
            qlora__module_shape(c, md->mod, &md->in, &md->out);
            total += (size_t)cfg.r * (size_t)(md->in + md->out);
            if (cfg.bias != QLORA_BIAS_NONE && qlora__module_bias(m, layer, md->mod)) total += (size_t)md->out;
            l->by[layer * QLORA_MOD_COUNT + k] = md;
        }
    }
    // BIAS_ALL also trains the biases of modules without LoRA
    l->n_params = total;
    l->params = QLORA__CALLOC_T(float, total);
    l->grads = QLORA__CALLOC_T(float, total);
    if (!l->params || !l->grads) { qlora_lora_free(l); return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "lora: %zu parameters: out of memory", total); }
    uint64_t rng = cfg.seed ^ 0x5DEECE66Dull;
    float *p = l->params, *g = l->grads;
    for (int k = 0; k < l->n_mods; k++) {
        qlora_lora_module *md = &l->mods[k];
        size_t na = (size_t)cfg.r * (size_t)md->in, nb = (size_t)md->out * (size_t)cfg.r;
        md->A = p; md->dA = g; p += na; g += na;
        md->B = p; md->dB = g; p += nb; g += nb;
        float bound = 1.0f / sqrtf((float)md->in);        // kaiming_uniform_(a=sqrt(5)) on (r, in)
        for (size_t j = 0; j < na; j++) md->A[j] = (2.0f * qlora__rng_f32(&rng) - 1.0f) * bound;
        const qlora_tensor *bt = cfg.bias != QLORA_BIAS_NONE ? qlora__module_bias(m, md->layer, md->mod) : NULL;
        if (bt) {
            md->bias = p; md->dbias = g; p += md->out; g += md->out;
            memcpy(md->bias, bt->data, (size_t)md->out * sizeof(float));   // starts from the base bias
        }
    }
    *out = l;
    return QLORA_OK;
}

QLORA__DEF void qlora_lora_free(qlora_lora *l) {
    if (!l) return;
    QLORA__FREE(l->mods);
    QLORA__FREE(l->by);
    QLORA__FREE(l->params);
    QLORA__FREE(l->grads);
    QLORA__FREE(l);
}

QLORA__DEF qlora_lora_module *qlora_lora_get(const qlora_lora *l, int layer, qlora_module mod) {
    if (!l || layer < 0 || layer >= l->n_layers || (unsigned)mod >= QLORA_MOD_COUNT) return NULL;
    return l->by[layer * QLORA_MOD_COUNT + mod];
}

QLORA__DEF void qlora_lora_zero_grad(qlora_lora *l) { memset(l->grads, 0, l->n_params * sizeof(float)); }

QLORA__DEF size_t qlora_lora_segments(const qlora_lora *l, size_t *seg_len, size_t cap) {
    size_t n = 0;
    for (int i = 0; i < l->n_mods; i++) {
        const qlora_lora_module *md = &l->mods[i];
        size_t parts[3] = { (size_t)l->cfg.r * (size_t)md->in, (size_t)md->out * (size_t)l->cfg.r, md->bias ? (size_t)md->out : 0 };
        for (int k = 0; k < 3; k++) {
            if (!parts[k]) continue;
            if (seg_len && n < cap) seg_len[n] = parts[k];
            n++;
        }
    }
    return n;
}
