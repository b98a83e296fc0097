// >>data
// Files -> examples (ids + labels) -> batches. The label rule is Hugging Face's: labels[t] = ids[t]
// where the loss counts and -100 elsewhere; the model shifts (the target of position t-1 is
// labels[t]), so a row of n tokens has at most n-1 targets and label 0 never counts.
//   text     whole file tokenized once (BOS when the tokenizer adds one), cut into T windows
//            (run_clm.py group_texts); every token is a target.
//   jsonl    BOS? + tok(obj[field]) + EOS, every token a target.
//   alpaca   tok(prompt + output) + EOS with the Stanford Alpaca prompt; the first
//            len(tok(prompt)) labels are -100 (alpaca train.py preprocess).
//   chat     tok(render(messages)); an assistant turn's span is [len(tok(render(msgs[:i], gen
//            prompt))), len(tok(render(msgs[:i+1])))) cut after its end-of-turn token, so the loss
//            is on the content and <|im_end|> / </s> but not on "<|im_start|>assistant\n" or "\n".
//   fortune  "%"-separated records, trimmed; BOS? + tok(record) + EOS.
// BOS never gets a label (nothing predicts it). Examples are truncated to T keeping the start.

static const char *const qlora__data_format_names[QLORA_DATA_FORMAT_COUNT] = {
    "auto", "text", "jsonl", "alpaca", "chat", "fortune"
};
QLORA__DEF const char *qlora_data_format_name(qlora_data_format f) {
    return (unsigned)f < QLORA_DATA_FORMAT_COUNT ? qlora__data_format_names[f] : "?";
}
QLORA__DEF qlora_result qlora_data_format_parse(qlora_ctx *ctx, const char *name, qlora_data_format *out) {
    for (int i = 0; i < QLORA_DATA_FORMAT_COUNT; i++)
        if (name && !strcmp(name, qlora__data_format_names[i])) { *out = (qlora_data_format)i; return QLORA_OK; }
    return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "unknown data format \"%s\" (valid: auto, text, jsonl, alpaca, chat, fortune)",
                      name ? name : "(null)");
}

// splitmix64 (Steele et al. 2014): the whole state is one integer, so a cursor can hold it.
static uint64_t qlora__data_splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
// Fisher-Yates over perm[0..n) (modulo bias < n / 2^64: irrelevant for data order).
static void qlora__data_shuffle(size_t *perm, size_t n, uint64_t state) {
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(qlora__data_splitmix64(&state) % (uint64_t)i);
        size_t t = perm[i - 1]; perm[i - 1] = perm[j]; perm[j] = t;
    }
}

// Grow *p (elements of size elem, capacity *cap) to hold need elements.
static int qlora__data_reserve(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 1;
    size_t nc = *cap ? *cap : 64, bytes;
    while (nc < need) { if (nc > SIZE_MAX / 2) return 0; nc *= 2; }
    if (!qlora__mul_ok(nc, elem, &bytes)) return 0;
    void *np = QLORA__REALLOC(*p, bytes);
    if (!np) return 0;
    *p = np; *cap = nc;
    return 1;
}

// ---- the builder: examples are appended to one ids and one labels array
typedef struct qlora__dbuild {
    qlora_ctx *ctx;
    const qlora_tokenizer *tok;
    const qlora_data_config *cfg;
    const char *name;            // for messages
    int T;                       // max_seq_length
    int32_t bos, eos;
    qlora_data_format fmt;
    int32_t *ids, *labels; size_t n_tok, cap_tok, cap_labels;   // all examples
    size_t  *off; size_t n, cap_off;                // off[0..n]
    int32_t *tmp; size_t cap_tmp;                   // tokenizer scratch
    int32_t *tmp2; size_t cap_tmp2;
    int32_t *lab; size_t cap_lab;                   // labels of the example being built
    char    *s; size_t slen, cap_s;                 // text being built (NUL-terminated)
    size_t   n_truncated, n_skipped, n_loss;
    size_t   line;                                  // current line (or record) number, 1-based
    int      in_array;                              // records come from a top-level JSON array
    int      full;                                  // max_samples reached
    char     loc[512];
} qlora__dbuild;

static const char *qlora__db_loc(qlora__dbuild *b) {
    snprintf(b->loc, sizeof b->loc, b->in_array ? "%s: record %zu" : "%s:%zu", b->name, b->line);
    return b->loc;
}
static qlora_result qlora__db_oom(qlora__dbuild *b) {
    return QLORA__ERR(b->ctx, QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", b->name);
}
// Text builder.
static qlora_result qlora__db_cat(qlora__dbuild *b, const char *s, size_t n) {
    size_t need;
    if (!qlora__add_ok(b->slen, n, &need) || !qlora__add_ok(need, 1, &need) ||
        !qlora__data_reserve((void **)&b->s, &b->cap_s, need, 1)) return qlora__db_oom(b);
    if (n) memcpy(b->s + b->slen, s, n);
    b->slen += n;
    b->s[b->slen] = 0;
    return QLORA_OK;
}
static qlora_result qlora__db_cats(qlora__dbuild *b, const char *s) { return qlora__db_cat(b, s, strlen(s)); }

// Tokenize s[0..len) into *dst (grown as needed); *n gets the count.
static qlora_result qlora__db_tok(qlora__dbuild *b, const char *s, size_t len, int add_special,
                                  int32_t **dst, size_t *cap, size_t *n) {
    if (len == 0) s = "";                 // qlora_tokenize reads len 0 as "NUL-terminated"
    size_t guess = len + 8;               // SPM (byte fallback) and BPE give at most ~1 token per byte
    if (!qlora__data_reserve((void **)dst, cap, guess, sizeof **dst)) return qlora__db_oom(b);
    qlora_result r = qlora_tokenize(b->tok, s, len, add_special, *dst, *cap, n);
    if (r == QLORA_ERR_RANGE) {
        if (!qlora__data_reserve((void **)dst, cap, *n, sizeof **dst)) return qlora__db_oom(b);
        r = qlora_tokenize(b->tok, s, len, add_special, *dst, *cap, n);
    }
    if (r != QLORA_OK) return QLORA__ERR(b->ctx, r, "%s: tokenizer failed: %s", qlora__db_loc(b), qlora_result_string(r));
    return QLORA_OK;
}

// Append one example: ids[0..n) with labels lab (NULL: every token is a target). n_prompt > 0 marks
// a prompt-masked example (alpaca/chat): if truncation leaves it without a target it is an error
// (or skipped with skip_long_prompts).
static qlora_result qlora__db_push(qlora__dbuild *b, const int32_t *ids, const int32_t *lab, size_t n, size_t n_prompt) {
    if (b->full || n == 0) return QLORA_OK;
    int cut = n > (size_t)b->T;
    if (cut) n = (size_t)b->T;
    size_t targets = 0;
    for (size_t t = 1; t < n; t++) {
        int32_t l = lab ? lab[t] : ids[t];
        if (l != QLORA_IGNORE_INDEX) targets++;
    }
    if (targets == 0) {
        if (n_prompt > 0 && !b->cfg->skip_long_prompts)
            return QLORA__ERR(b->ctx, QLORA_ERR_RANGE,
                              "%s: max-seq-length %d is smaller than the prompt (%zu tokens) plus one response token "
                              "(raise --max-seq-length)", qlora__db_loc(b), b->T, n_prompt);
        b->n_skipped++;
        return QLORA_OK;
    }
    size_t need;
    if (!qlora__add_ok(b->n_tok, n, &need) ||
        !qlora__data_reserve((void **)&b->ids, &b->cap_tok, need, sizeof *b->ids)) return qlora__db_oom(b);
    if (!qlora__data_reserve((void **)&b->labels, &b->cap_labels, need, sizeof *b->labels)) return qlora__db_oom(b);
    if (!qlora__data_reserve((void **)&b->off, &b->cap_off, b->n + 2, sizeof *b->off)) return qlora__db_oom(b);
    memcpy(b->ids + b->n_tok, ids, n * sizeof *ids);
    for (size_t t = 0; t < n; t++) {
        int32_t l = lab ? lab[t] : ids[t];
        if (t == 0 && ids[0] == b->bos) l = QLORA_IGNORE_INDEX;   // nothing predicts BOS
        b->labels[b->n_tok + t] = l;
    }
    b->off[b->n] = b->n_tok;
    b->n_tok += n;
    b->n++;
    b->off[b->n] = b->n_tok;
    b->n_loss += targets;
    b->n_truncated += (size_t)cut;
    if (b->cfg->max_samples && b->n >= b->cfg->max_samples) b->full = 1;
    return QLORA_OK;
}

// BOS? + tok(text) + EOS?, loss on everything (jsonl, fortune).
static qlora_result qlora__db_plain(qlora__dbuild *b, const char *text, size_t len) {
    size_t n = 0;
    qlora_result r = qlora__db_tok(b, text, len, 1, &b->tmp, &b->cap_tmp, &n);
    if (r != QLORA_OK) return r;
    if (!b->cfg->no_eos && b->eos >= 0) {
        if (!qlora__data_reserve((void **)&b->tmp, &b->cap_tmp, n + 1, sizeof *b->tmp)) return qlora__db_oom(b);
        b->tmp[n++] = b->eos;
    }
    return qlora__db_push(b, b->tmp, NULL, n, 0);
}

// tok(prompt + response) + EOS with labels -100 on the first len(tok(prompt)) tokens.
static qlora_result qlora__db_prompted(qlora__dbuild *b, size_t prompt_len) {
    size_t np = 0, n = 0;
    qlora_result r = qlora__db_tok(b, b->s, prompt_len, 1, &b->tmp2, &b->cap_tmp2, &np);
    if (r == QLORA_OK) r = qlora__db_tok(b, b->s, b->slen, 1, &b->tmp, &b->cap_tmp, &n);
    if (r != QLORA_OK) return r;
    if (!b->cfg->no_eos && b->eos >= 0) {
        if (!qlora__data_reserve((void **)&b->tmp, &b->cap_tmp, n + 1, sizeof *b->tmp)) return qlora__db_oom(b);
        b->tmp[n++] = b->eos;
    }
    if (!qlora__data_reserve((void **)&b->lab, &b->cap_lab, n, sizeof *b->lab)) return qlora__db_oom(b);
    for (size_t t = 0; t < n; t++) b->lab[t] = t < np ? QLORA_IGNORE_INDEX : b->tmp[t];
    return qlora__db_push(b, b->tmp, b->lab, n, np ? np : 1);
}

static const qlora_json *qlora__db_field(qlora__dbuild *b, const qlora_json *o, const char *key, int required, qlora_result *r) {
    const qlora_json *v = qlora_json_get(o, key);
    *r = QLORA_OK;
    if (!v || v->type == QLORA_JSON_NULL) {
        if (required) *r = QLORA__ERR(b->ctx, QLORA_ERR_FORMAT, "%s: missing field \"%s\"", qlora__db_loc(b), key);
        return NULL;
    }
    if (v->type != QLORA_JSON_STRING) {
        *r = QLORA__ERR(b->ctx, QLORA_ERR_FORMAT, "%s: field \"%s\" is not a string", qlora__db_loc(b), key);
        return NULL;
    }
    return v;
}

// Stanford Alpaca (tatsu-lab/stanford_alpaca train.py PROMPT_DICT), verbatim.
static const char qlora__alpaca_prompt_input[] =
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n### Instruction:\n";
static const char qlora__alpaca_prompt_no_input[] =
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n";

static qlora_result qlora__db_alpaca_one(qlora__dbuild *b, const qlora_json *ins, const qlora_json *inp, const qlora_json *outp) {
    b->slen = 0;
    int has_input = inp && inp->len > 0;
    qlora_result r = qlora__db_cats(b, has_input ? qlora__alpaca_prompt_input : qlora__alpaca_prompt_no_input);
    if (r == QLORA_OK) r = qlora__db_cat(b, ins->str, ins->len);
    if (r == QLORA_OK && has_input) r = qlora__db_cats(b, "\n\n### Input:\n");
    if (r == QLORA_OK && has_input) r = qlora__db_cat(b, inp->str, inp->len);
    if (r == QLORA_OK) r = qlora__db_cats(b, "\n\n### Response:\n");
    size_t prompt_len = b->slen;
    if (r == QLORA_OK) r = qlora__db_cat(b, outp->str, outp->len);
    return r == QLORA_OK ? qlora__db_prompted(b, prompt_len) : r;
}

static qlora_result qlora__db_alpaca(qlora__dbuild *b, const qlora_json *o) {
    qlora_result r;
    const qlora_json *ins = qlora__db_field(b, o, "instruction", 1, &r);
    if (r != QLORA_OK) return r;
    const qlora_json *inst = qlora_json_get(o, "instances");
    if (inst && inst->type == QLORA_JSON_ARRAY) {          // self-instruct seed task
        if (inst->count == 0) return QLORA__ERR(b->ctx, QLORA_ERR_FORMAT, "%s: field \"instances\" is empty", qlora__db_loc(b));
        size_t k = 0;
        for (const qlora_json *it = inst->child; it; it = it->next, k++) {
            char key[48];
            if (it->type != QLORA_JSON_OBJECT)
                return QLORA__ERR(b->ctx, QLORA_ERR_FORMAT, "%s: instances[%zu] is not an object", qlora__db_loc(b), k);
            const qlora_json *inp = qlora_json_get(it, "input");
            const qlora_json *outp = qlora_json_get(it, "output");
            if (inp && inp->type != QLORA_JSON_STRING) { snprintf(key, sizeof key, "instances[%zu].input", k); outp = NULL; }
            else if (!outp || outp->type != QLORA_JSON_STRING) snprintf(key, sizeof key, "instances[%zu].output", k);
            else { key[0] = 0; }
            if (key[0]) return QLORA__ERR(b->ctx, QLORA_ERR_FORMAT, "%s: missing or non-string field \"%s\"", qlora__db_loc(b), key);
            r = qlora__db_alpaca_one(b, ins, inp, outp);
            if (r != QLORA_OK) return r;
        }
        return QLORA_OK;
    }
    // input: optional ("context" in databricks-dolly); output ("response" in dolly).
    const char *in_key = qlora_json_get(o, "input") || !qlora_json_get(o, "context") ? "input" : "context";
    const char *out_key = qlora_json_get(o, "output") || !qlora_json_get(o, "response") ? "output" : "response";
    const qlora_json *inp = qlora__db_field(b, o, in_key, 0, &r);
    if (r != QLORA_OK) return r;
    const qlora_json *outp = qlora__db_field(b, o, out_key, 1, &r);
    if (r != QLORA_OK) return r;
    return qlora__db_alpaca_one(b, ins, inp, outp);
}

// ShareGPT / OpenAssistant role names -> the chat template's.
static const char *qlora__data_chat_role(const char *r) {
    if (!strcmp(r, "human") || !strcmp(r, "prompter") || !strcmp(r, "user")) return "user";
    if (!strcmp(r, "gpt") || !strcmp(r, "bot") || !strcmp(r, "model") || !strcmp(r, "assistant")) return "assistant";
    return r;
}

// Tokens of render(msgs[:k]) that agree with the full conversation's tokens (a template whose
// prefix merges into the next token across a boundary then gives the merged token loss: safe).
static qlora_result qlora__db_prefix_tokens(qlora__dbuild *b, const qlora_chat_msg *m, size_t k, int gen,
                                            const int32_t *full, size_t n_full, size_t *out) {
    size_t need = qlora_chat_render(b->tok, m, k, gen, NULL, 0), n = 0;
    b->slen = 0;
    if (!qlora__data_reserve((void **)&b->s, &b->cap_s, need + 1, 1)) return qlora__db_oom(b);
    qlora_chat_render(b->tok, m, k, gen, b->s, need + 1);
    b->slen = need;
    qlora_result r = qlora__db_tok(b, b->s, need, 1, &b->tmp2, &b->cap_tmp2, &n);
    if (r != QLORA_OK) return r;
    size_t c = 0;
    while (c < n && c < n_full && b->tmp2[c] == full[c]) c++;
    *out = c;
    return QLORA_OK;
}

static qlora_result qlora__db_chat(qlora__dbuild *b, const qlora_json *o) {
    const qlora_json *arr = qlora_json_get(o, "messages");
    const char *rk = "role", *ck = "content", *ak = "messages";
    if (!arr) { arr = qlora_json_get(o, "conversations"); rk = "from"; ck = "value"; ak = "conversations"; }
    if (!arr) return QLORA__ERR(b->ctx, QLORA_ERR_FORMAT, "%s: missing field \"messages\"", qlora__db_loc(b));
    if (arr->type != QLORA_JSON_ARRAY || arr->count == 0)
        return QLORA__ERR(b->ctx, QLORA_ERR_FORMAT, "%s: field \"%s\" is not a non-empty array", qlora__db_loc(b), ak);
    qlora_chat_msg *m = QLORA__CALLOC_T(qlora_chat_msg, arr->count);
    if (!m) return qlora__db_oom(b);
    qlora_result r = QLORA_OK;
    size_t k = 0, n_asst = 0;
    for (const qlora_json *it = arr->child; it; it = it->next, k++) {
        const qlora_json *role = qlora_json_get(it, rk), *content = qlora_json_get(it, ck);
        if (!role || role->type != QLORA_JSON_STRING || !content || content->type != QLORA_JSON_STRING) {
            r = QLORA__ERR(b->ctx, QLORA_ERR_FORMAT, "%s: %s[%zu] needs string fields \"%s\" and \"%s\"",
                           qlora__db_loc(b), ak, k, rk, ck);
            break;
        }
        m[k].role = qlora__data_chat_role(role->str);
        m[k].content = content->str;
        n_asst += !strcmp(m[k].role, "assistant");
    }
    if (r == QLORA_OK && n_asst == 0)
        r = QLORA__ERR(b->ctx, QLORA_ERR_FORMAT, "%s: conversation has no assistant message (nothing to train on)", qlora__db_loc(b));
    size_t n = 0;
    if (r == QLORA_OK) {   // the whole conversation, as the model will see it
        size_t need = qlora_chat_render(b->tok, m, k, 0, NULL, 0);
        if (!qlora__data_reserve((void **)&b->s, &b->cap_s, need + 1, 1)) r = qlora__db_oom(b);
        else {
            qlora_chat_render(b->tok, m, k, 0, b->s, need + 1);
            b->slen = need;
            r = qlora__db_tok(b, b->s, need, 1, &b->tmp, &b->cap_tmp, &n);
        }
    }
    if (r == QLORA_OK && !qlora__data_reserve((void **)&b->lab, &b->cap_lab, n ? n : 1, sizeof *b->lab)) r = qlora__db_oom(b);
    size_t first = 0;
    if (r == QLORA_OK) {
        for (size_t t = 0; t < n; t++) b->lab[t] = QLORA_IGNORE_INDEX;
        int seen = 0;
        for (size_t i = 0; i < k && r == QLORA_OK; i++) {
            if (strcmp(m[i].role, "assistant")) continue;
            size_t s = 0, e = 0;
            r = qlora__db_prefix_tokens(b, m, i, 1, b->tmp, n, &s);           // ... <|im_start|>assistant\n
            if (r == QLORA_OK) r = qlora__db_prefix_tokens(b, m, i + 1, 0, b->tmp, n, &e);   // ... content<|im_end|>\n
            if (r != QLORA_OK) break;
            for (size_t t = e; t > s; t--)                                  // stop after the end-of-turn token
                if (qlora_tokenizer_is_eog(b->tok, b->tmp[t - 1])) { e = t; break; }
            if (!seen) { first = s; seen = 1; }
            for (size_t t = s; t < e; t++) b->lab[t] = b->tmp[t];
        }
    }
    QLORA__FREE(m);
    if (r != QLORA_OK) return r;
    return qlora__db_push(b, b->tmp, b->lab, n, first ? first : 1);
}

static qlora_result qlora__db_record(qlora__dbuild *b, const qlora_json *o) {
    if (o->type != QLORA_JSON_OBJECT)
        return QLORA__ERR(b->ctx, QLORA_ERR_FORMAT, "%s: expected a JSON object", qlora__db_loc(b));
    if (b->fmt == QLORA_DATA_ALPACA) return qlora__db_alpaca(b, o);
    if (b->fmt == QLORA_DATA_CHAT) return qlora__db_chat(b, o);
    const char *field = b->cfg->field && b->cfg->field[0] ? b->cfg->field : "text";
    qlora_result r;
    const qlora_json *v = qlora__db_field(b, o, field, 1, &r);
    return v ? qlora__db_plain(b, v->str, v->len) : r;
}

static int qlora__data_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n') return 0;
    return 1;
}
// "line 1, column 7: what" (the parser's) -> "column 7: what".
static const char *qlora__data_json_err(const char *e) {
    return !strncmp(e, "line 1, ", 8) ? e + 8 : e;
}

// AUTO: a record's keys name its format.
static qlora_data_format qlora__data_sniff_record(const qlora_json *o) {
    if (qlora_json_get(o, "messages") || qlora_json_get(o, "conversations")) return QLORA_DATA_CHAT;
    if (qlora_json_get(o, "instruction")) return QLORA_DATA_ALPACA;
    return QLORA_DATA_JSONL;
}

// JSONL (one object per line) or a JSON array of objects (.json, e.g. alpaca_data.json).
static qlora_result qlora__db_json(qlora__dbuild *b, const char *data, size_t size, int sniff) {
    char err[256];
    size_t i = 0;
    while (i < size && (data[i] == ' ' || data[i] == '\t' || data[i] == '\r' || data[i] == '\n')) i++;
    if (i < size && data[i] == '[') {
        qlora_json *root = NULL;
        qlora_result r = qlora_json_parse(data, size, &root, err, sizeof err);
        if (r != QLORA_OK) return QLORA__ERR(b->ctx, r == QLORA_ERR_OUT_OF_MEMORY ? r : QLORA_ERR_JSON, "%s: malformed JSON: %s", b->name, err);
        b->in_array = 1;
        if (sniff) b->fmt = root->child ? qlora__data_sniff_record(root->child) : QLORA_DATA_JSONL;
        b->line = 0;
        for (const qlora_json *it = root->child; it && r == QLORA_OK && !b->full; it = it->next) {
            b->line++;
            r = qlora__db_record(b, it);
        }
        qlora_json_free(root);
        return r;
    }
    b->line = 0;
    for (size_t p = 0; p < size && !b->full;) {
        const char *nl = (const char *)memchr(data + p, '\n', size - p);
        size_t e = nl ? (size_t)(nl - data) : size;
        b->line++;
        if (!qlora__data_blank(data + p, e - p)) {
            qlora_json *o = NULL;
            qlora_result r = qlora_json_parse(data + p, e - p, &o, err, sizeof err);
            if (r != QLORA_OK)
                return QLORA__ERR(b->ctx, r == QLORA_ERR_OUT_OF_MEMORY ? r : QLORA_ERR_JSON, "%s: malformed JSON: %s",
                                  qlora__db_loc(b), qlora__data_json_err(err));
            if (sniff) { b->fmt = qlora__data_sniff_record(o); sniff = 0; }
            r = qlora__db_record(b, o);
            qlora_json_free(o);
            if (r != QLORA_OK) return r;
        }
        p = e + 1;
    }
    return QLORA_OK;
}

// Debian fortune (strfile(8)): records separated by a line holding only "%".
static qlora_result qlora__db_fortune(qlora__dbuild *b, const char *data, size_t size) {
    size_t p = 0, rec_start = 0, rec_line = 1, line = 0;
    while (p <= size && !b->full) {
        const char *nl = p < size ? (const char *)memchr(data + p, '\n', size - p) : NULL;
        size_t e = nl ? (size_t)(nl - data) : size;
        size_t le = e;
        if (le > p && data[le - 1] == '\r') le--;
        line++;
        int sep = le - p == 1 && data[p] == '%';
        if (sep || e >= size) {
            size_t rs = rec_start, re = sep ? p : size;
            while (rs < re && (data[rs] == ' ' || data[rs] == '\t' || data[rs] == '\r' || data[rs] == '\n')) rs++;
            while (re > rs && (data[re - 1] == ' ' || data[re - 1] == '\t' || data[re - 1] == '\r' || data[re - 1] == '\n')) re--;
            if (re > rs) {
                b->line = rec_line;
                qlora_result r = qlora__db_plain(b, data + rs, re - rs);
                if (r != QLORA_OK) return r;
            }
            rec_start = e + 1;
            rec_line = line + 1;
        }
        if (e >= size) break;
        p = e + 1;
    }
    return QLORA_OK;
}

// Plain text: one tokenization of the whole file, cut into T windows (a final window of one
// token has no target and is dropped).
static qlora_result qlora__db_text(qlora__dbuild *b, const char *data, size_t size) {
    size_t n = 0;
    b->line = 1;
    qlora_result r = qlora__db_tok(b, data, size, 1, &b->tmp, &b->cap_tmp, &n);
    for (size_t s = 0; r == QLORA_OK && s + 1 < n && !b->full; s += (size_t)b->T)
        r = qlora__db_push(b, b->tmp + s, NULL, QLORA__MIN((size_t)b->T, n - s), 0);
    return r;
}

static int qlora__data_ext_is(const char *s, const char *suf) {
    size_t n = strlen(s), k = strlen(suf);
    if (k > n) return 0;
    for (size_t i = 0; i < k; i++) {
        char c = s[n - k + i];
        if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
        if (c != suf[i]) return 0;
    }
    return 1;
}
static qlora_data_format qlora__data_sniff_file(const char *name, const char *data, size_t size) {
    if (qlora__data_ext_is(name, ".txt")) return QLORA_DATA_TEXT;
    if (qlora__data_ext_is(name, ".jsonl") || qlora__data_ext_is(name, ".json")) return QLORA_DATA_AUTO;   // by the first record
    for (size_t p = 0; p < size;) {
        const char *nl = (const char *)memchr(data + p, '\n', size - p);
        size_t e = nl ? (size_t)(nl - data) : size, le = e;
        if (le > p && data[le - 1] == '\r') le--;
        if (le - p == 1 && data[p] == '%') return QLORA_DATA_FORTUNE;
        p = e + 1;
    }
    return QLORA_DATA_TEXT;
}

static void qlora__db_free(qlora__dbuild *b) {
    QLORA__FREE(b->ids); QLORA__FREE(b->labels); QLORA__FREE(b->off);
    QLORA__FREE(b->tmp); QLORA__FREE(b->tmp2); QLORA__FREE(b->lab); QLORA__FREE(b->s);
}

// A dataset taking over arrays (ids/labels of n_tok tokens, off of n + 1 entries).
static qlora_result qlora__ds_new(qlora_ctx *ctx, const char *name, qlora_dataset **out) {
    qlora_dataset *ds = QLORA__CALLOC_T(qlora_dataset, 1);
    if (ds) ds->name = qlora__strdup(name ? name : "(memory)");
    if (!ds || !ds->name) { QLORA__FREE(ds); return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "dataset: out of memory"); }
    *out = ds;
    return QLORA_OK;
}
static size_t qlora__ds_count_loss(const qlora_dataset *ds) {
    size_t c = 0;
    for (size_t i = 0; i < ds->n; i++)
        for (size_t t = ds->off[i] + 1; t < ds->off[i + 1]; t++) c += ds->labels[t] != QLORA_IGNORE_INDEX;
    return c;
}

QLORA__DEF qlora_result qlora_dataset_load_memory(qlora_ctx *ctx, const qlora_tokenizer *tok, const char *name,
                                                  const char *data, size_t size, const qlora_data_config *cfg,
                                                  qlora_dataset **out) {
    qlora_data_config def;
    memset(&def, 0, sizeof def);
    if (!cfg) cfg = &def;
    if (!out || !tok || (!data && size)) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "qlora_dataset_load: NULL argument");
    *out = NULL;
    if (!name) name = "(memory)";
    if (!data) data = "";
    int T = cfg->max_seq_length ? cfg->max_seq_length : 256;
    if (T < 2) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "%s: max-seq-length %d must be at least 2", name, T);
    if ((unsigned)cfg->format >= QLORA_DATA_FORMAT_COUNT) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "%s: bad data format %d", name, (int)cfg->format);
    qlora__dbuild b;
    memset(&b, 0, sizeof b);
    b.ctx = ctx; b.tok = tok; b.cfg = cfg; b.name = name; b.T = T;
    b.bos = qlora_tokenizer_bos(tok);
    b.eos = qlora_tokenizer_eos(tok);
    b.fmt = cfg->format ? cfg->format : qlora__data_sniff_file(name, data, size);
    qlora_result r;
    switch (b.fmt) {
    case QLORA_DATA_TEXT:    r = qlora__db_text(&b, data, size); break;
    case QLORA_DATA_FORTUNE: r = qlora__db_fortune(&b, data, size); break;
    default:                 r = qlora__db_json(&b, data, size, b.fmt == QLORA_DATA_AUTO); break;
    }
    if (b.fmt == QLORA_DATA_AUTO) b.fmt = QLORA_DATA_JSONL;   // empty .jsonl
    if (r == QLORA_OK && b.n == 0)
        r = QLORA__ERR(ctx, QLORA_ERR_FORMAT, "%s: empty dataset (no %s examples%s)", name, qlora_data_format_name(b.fmt),
                       b.n_skipped ? " left after skipping examples without a trainable token" : "");
    qlora_dataset *ds = NULL;
    if (r == QLORA_OK) r = qlora__ds_new(ctx, name, &ds);
    if (r != QLORA_OK) { qlora__db_free(&b); return r; }
    ds->n = b.n; ds->off = b.off; ds->ids = b.ids; ds->labels = b.labels;
    b.off = NULL; b.ids = NULL; b.labels = NULL;
    ds->max_seq_length = T;
    ds->pad_id = b.eos >= 0 ? b.eos : 0;
    ds->format = b.fmt;
    ds->n_tokens = b.n_tok;
    ds->n_loss_tokens = b.n_loss;
    ds->n_truncated = b.n_truncated;
    ds->n_skipped = b.n_skipped;
    qlora__db_free(&b);
    *out = ds;
    return QLORA_OK;
}

QLORA__DEF qlora_result qlora_dataset_load(qlora_ctx *ctx, const qlora_tokenizer *tok, const char *path,
                                           const qlora_data_config *cfg, qlora_dataset **out) {
    if (!path || !out) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "qlora_dataset_load: NULL argument");
    qlora_file f;
    qlora_result r = qlora_file_open(ctx, path, &f);
    if (r != QLORA_OK) return r;
    r = qlora_dataset_load_memory(ctx, tok, path, (const char *)f.data, f.size, cfg, out);
    qlora_file_close(&f);
    return r;
}

QLORA__DEF void qlora_dataset_free(qlora_dataset *ds) {
    if (!ds) return;
    QLORA__FREE(ds->off); QLORA__FREE(ds->ids); QLORA__FREE(ds->labels); QLORA__FREE(ds->name);
    QLORA__FREE(ds);
}
QLORA__DEF size_t qlora_dataset_length(const qlora_dataset *ds, size_t i) {
    return ds && i < ds->n ? ds->off[i + 1] - ds->off[i] : 0;
}

// New dataset of the examples with keep[i] == want, in order.
static qlora_result qlora__ds_subset(qlora_ctx *ctx, const qlora_dataset *ds, const unsigned char *keep, int want,
                                     const char *suffix, qlora_dataset **out) {
    size_t n = 0, nt = 0;
    for (size_t i = 0; i < ds->n; i++) if (keep[i] == want) { n++; nt += ds->off[i + 1] - ds->off[i]; }
    char name[512];
    snprintf(name, sizeof name, "%s%s", ds->name, suffix);
    qlora_dataset *s = NULL;
    qlora_result r = qlora__ds_new(ctx, name, &s);
    if (r != QLORA_OK) return r;
    s->off = QLORA__CALLOC_T(size_t, n + 1);
    s->ids = QLORA__CALLOC_T(int32_t, nt);
    s->labels = QLORA__CALLOC_T(int32_t, nt);
    if (!s->off || !s->ids || !s->labels) { qlora_dataset_free(s); return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", name); }
    size_t k = 0, t = 0;
    for (size_t i = 0; i < ds->n; i++) {
        if (keep[i] != want) continue;
        size_t len = ds->off[i + 1] - ds->off[i];
        memcpy(s->ids + t, ds->ids + ds->off[i], len * sizeof *s->ids);
        memcpy(s->labels + t, ds->labels + ds->off[i], len * sizeof *s->labels);
        s->off[k++] = t;
        t += len;
    }
    s->off[k] = t;
    s->n = n; s->n_tokens = nt;
    s->max_seq_length = ds->max_seq_length; s->pad_id = ds->pad_id; s->format = ds->format; s->packed = ds->packed;
    s->n_loss_tokens = qlora__ds_count_loss(s);
    *out = s;
    return QLORA_OK;
}

QLORA__DEF qlora_result qlora_dataset_split(qlora_ctx *ctx, const qlora_dataset *ds, double fraction, uint64_t seed,
                                            qlora_dataset **train, qlora_dataset **eval) {
    if (!ds || !train || !eval) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "qlora_dataset_split: NULL argument");
    *train = *eval = NULL;
    if (!(fraction > 0.0 && fraction < 1.0))
        return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "validation-split %g must be in (0, 1)", fraction);
    size_t n_eval = (size_t)ceil(fraction * (double)ds->n);
    if (n_eval == 0 || n_eval >= ds->n)
        return QLORA__ERR(ctx, QLORA_ERR_RANGE, "%s: validation-split %g of %zu examples leaves %zu for training and %zu for eval",
                          ds->name, fraction, ds->n, ds->n - QLORA__MIN(n_eval, ds->n), n_eval);
    size_t *perm = QLORA__CALLOC_T(size_t, ds->n);
    unsigned char *is_eval = QLORA__CALLOC_T(unsigned char, ds->n);
    qlora_result r = QLORA_OK;
    if (!perm || !is_eval) r = QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", ds->name);
    if (r == QLORA_OK) {
        for (size_t i = 0; i < ds->n; i++) perm[i] = i;
        qlora__data_shuffle(perm, ds->n, seed ^ 0x5EED5EED5EED5EEDull);   // a stream apart from the epoch orders
        for (size_t i = 0; i < n_eval; i++) is_eval[perm[i]] = 1;
        r = qlora__ds_subset(ctx, ds, is_eval, 0, "[train]", train);
        if (r == QLORA_OK) r = qlora__ds_subset(ctx, ds, is_eval, 1, "[eval]", eval);
        if (r != QLORA_OK) { qlora_dataset_free(*train); *train = NULL; }
    }
    QLORA__FREE(perm); QLORA__FREE(is_eval);
    return r;
}

QLORA__DEF qlora_result qlora_dataset_pack(qlora_ctx *ctx, const qlora_dataset *ds, int T, qlora_dataset **out) {
    if (!ds || !out) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "qlora_dataset_pack: NULL argument");
    *out = NULL;
    if (T < 2) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "packing: window %d must be at least 2", T);
    size_t N = ds->off[ds->n], nw = (N + (size_t)T - 1) / (size_t)T;
    char name[512];
    snprintf(name, sizeof name, "%s[packed]", ds->name);
    qlora_dataset *p = NULL;
    qlora_result r = qlora__ds_new(ctx, name, &p);
    if (r != QLORA_OK) return r;
    p->off = QLORA__CALLOC_T(size_t, nw + 1);
    p->ids = QLORA__CALLOC_T(int32_t, N);
    p->labels = QLORA__CALLOC_T(int32_t, N);
    if (!p->off || !p->ids || !p->labels) { qlora_dataset_free(p); return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "%s: out of memory", name); }
    memcpy(p->ids, ds->ids, N * sizeof *p->ids);          // examples are already contiguous in order
    memcpy(p->labels, ds->labels, N * sizeof *p->labels);
    size_t k = 0;
    for (size_t s = 0; s < N; s += (size_t)T) { p->off[k++] = s; p->off[k] = QLORA__MIN(N, s + (size_t)T); }
    for (;;) {                                              // drop a tail with nothing to learn
        size_t targets = 0;
        for (size_t t = k ? p->off[k - 1] + 1 : 0; k && t < p->off[k]; t++) targets += p->labels[t] != QLORA_IGNORE_INDEX;
        if (!k || targets) break;
        k--;
    }
    p->n = k;
    p->n_tokens = k ? p->off[k] : 0;
    p->max_seq_length = T; p->pad_id = ds->pad_id; p->format = ds->format; p->packed = 1;
    p->n_truncated = ds->n_truncated; p->n_skipped = ds->n_skipped;
    p->n_loss_tokens = qlora__ds_count_loss(p);
    if (k == 0) { qlora_dataset_free(p); return QLORA__ERR(ctx, QLORA_ERR_FORMAT, "%s: empty dataset", name); }
    *out = p;
    return QLORA_OK;
}

QLORA__DEF qlora_result qlora_data_prepare(qlora_ctx *ctx, const qlora_tokenizer *tok, const char *train_path,
                                           const char *eval_path, const qlora_data_config *cfg,
                                           qlora_dataset **train, qlora_dataset **eval) {
    qlora_data_config def;
    memset(&def, 0, sizeof def);
    if (!cfg) cfg = &def;
    if (!train || !eval) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "qlora_data_prepare: NULL argument");
    *train = *eval = NULL;
    if (cfg->validation_split < 0.0 || cfg->validation_split >= 1.0)
        return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "validation-split %g must be in [0, 1)", cfg->validation_split);
    qlora_dataset *tr = NULL, *ev = NULL;
    qlora_result r = qlora_dataset_load(ctx, tok, train_path, cfg, &tr);
    if (r == QLORA_OK && eval_path) {
        qlora_data_config ec = *cfg;
        ec.max_samples = 0;                 // --max-train-samples limits training only
        r = qlora_dataset_load(ctx, tok, eval_path, &ec, &ev);
    } else if (r == QLORA_OK && cfg->validation_split > 0.0) {
        qlora_dataset *all = tr;
        tr = NULL;
        r = qlora_dataset_split(ctx, all, cfg->validation_split, cfg->seed, &tr, &ev);
        qlora_dataset_free(all);
    }
    if (r == QLORA_OK && cfg->packing) {
        qlora_dataset *p = NULL;
        r = qlora_dataset_pack(ctx, tr, tr->max_seq_length, &p);
        if (r == QLORA_OK) { qlora_dataset_free(tr); tr = p; }
        if (r == QLORA_OK && ev) {
            r = qlora_dataset_pack(ctx, ev, ev->max_seq_length, &p);
            if (r == QLORA_OK) { qlora_dataset_free(ev); ev = p; }
        }
    }
    if (r != QLORA_OK) { qlora_dataset_free(tr); qlora_dataset_free(ev); return r; }
    *train = tr; *eval = ev;
    return QLORA_OK;
}

// ---- batches
QLORA__DEF qlora_result qlora_batch_init(qlora_ctx *ctx, qlora_batch *b, int B, int T) {
    memset(b, 0, sizeof *b);
    size_t n;
    if (B < 1 || T < 2 || !qlora__mul_ok((size_t)B, (size_t)T, &n))
        return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "batch %d x %d: need B >= 1 and T >= 2", B, T);
    b->B_cap = B; b->T_cap = T;
    b->ids = QLORA__CALLOC_T(int32_t, n);
    b->labels = QLORA__CALLOC_T(int32_t, n);
    b->lengths = QLORA__CALLOC_T(int32_t, (size_t)B);
    if (!b->ids || !b->labels || !b->lengths) { qlora_batch_free(b); return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "batch: out of memory"); }
    return QLORA_OK;
}
QLORA__DEF void qlora_batch_free(qlora_batch *b) {
    if (!b) return;
    QLORA__FREE(b->ids); QLORA__FREE(b->labels); QLORA__FREE(b->lengths);
    memset(b, 0, sizeof *b);
}

// ---- loader: epoch orders and a resumable cursor
QLORA__DEF qlora_result qlora_loader_init(qlora_ctx *ctx, qlora_data_loader *L, const qlora_dataset *ds, int B,
                                          int shuffle, int repeat, uint64_t seed) {
    memset(L, 0, sizeof *L);
    if (!ds || ds->n == 0 || B < 1) return QLORA__ERR(ctx, QLORA_ERR_INVALID_ARG, "loader: need a non-empty dataset and B >= 1");
    L->ds = ds; L->B = B; L->shuffle = shuffle; L->repeat = repeat;
    L->cur.seed = seed;
    L->perm_epoch = UINT64_MAX;
    L->perm = QLORA__CALLOC_T(size_t, ds->n);
    if (!L->perm) return QLORA__ERR(ctx, QLORA_ERR_OUT_OF_MEMORY, "loader: out of memory");
    return QLORA_OK;
}
QLORA__DEF void qlora_loader_free(qlora_data_loader *L) {
    if (!L) return;
    QLORA__FREE(L->perm);
    memset(L, 0, sizeof *L);
}
// The order of epoch e depends on (seed, e) only: resuming needs no RNG history.
static void qlora__loader_order(qlora_data_loader *L) {
    if (L->perm_epoch == L->cur.epoch) return;
    for (size_t i = 0; i < L->ds->n; i++) L->perm[i] = i;
    if (L->shuffle) {
        uint64_t st = L->cur.seed, mix = L->cur.epoch;
        st ^= qlora__data_splitmix64(&mix);
        qlora__data_shuffle(L->perm, L->ds->n, st);
    }
    L->perm_epoch = L->cur.epoch;
}
QLORA__DEF int qlora_loader_next(qlora_data_loader *L, qlora_batch *b) {
    const qlora_dataset *ds = L->ds;
    if (L->cur.pos >= ds->n) {
        if (!L->repeat) { b->B = 0; b->T = 0; b->n_loss = 0; return 0; }
        L->cur.epoch++;
        L->cur.pos = 0;
    }
    qlora__loader_order(L);
    int rows = (int)QLORA__MIN((uint64_t)QLORA__MIN(L->B, b->B_cap), ds->n - L->cur.pos);
    int T = 2;
    for (int r = 0; r < rows; r++) {
        size_t i = L->perm[L->cur.pos + (size_t)r];
        size_t len = QLORA__MIN(ds->off[i + 1] - ds->off[i], (size_t)b->T_cap);
        b->lengths[r] = (int32_t)len;
        if ((int)len > T) T = (int)len;
    }
    if (L->pad_to_max) T = b->T_cap;
    b->B = rows; b->T = T; b->n_loss = 0;
    for (int r = 0; r < rows; r++) {
        size_t i = L->perm[L->cur.pos + (size_t)r], len = (size_t)b->lengths[r];
        int32_t *id = b->ids + (size_t)r * (size_t)T, *lb = b->labels + (size_t)r * (size_t)T;   // (T)
        memcpy(id, ds->ids + ds->off[i], len * sizeof *id);
        memcpy(lb, ds->labels + ds->off[i], len * sizeof *lb);
        for (size_t t = len; t < (size_t)T; t++) { id[t] = ds->pad_id; lb[t] = QLORA_IGNORE_INDEX; }
        for (size_t t = 1; t < len; t++) b->n_loss += lb[t] != QLORA_IGNORE_INDEX;
    }
    L->cur.pos += (uint64_t)rows;
    return rows;
}
QLORA__DEF void qlora_loader_rewind(qlora_data_loader *L) { L->cur.pos = 0; }
QLORA__DEF qlora_data_cursor qlora_loader_cursor(const qlora_data_loader *L) {
    qlora_data_cursor c = L->cur;
    c.rows = L->ds->n;
    return c;
}
QLORA__DEF qlora_result qlora_loader_restore(qlora_ctx *ctx, qlora_data_loader *L, qlora_data_cursor c) {
    if (c.rows && c.rows != L->ds->n)
        return QLORA__ERR(ctx, QLORA_ERR_RANGE, "data cursor was saved for %llu rows but %s has %zu: different data or settings?",
                          (unsigned long long)c.rows, L->ds->name, L->ds->n);
    if (c.pos > L->ds->n)
        return QLORA__ERR(ctx, QLORA_ERR_RANGE, "data cursor position %llu is past the dataset (%zu rows): different data?",
                          (unsigned long long)c.pos, L->ds->n);
    L->cur = c;
    L->cur.rows = 0;
    L->perm_epoch = UINT64_MAX;
    return QLORA_OK;
}
QLORA__DEF size_t qlora_loader_batches_per_epoch(const qlora_data_loader *L) {
    return (L->ds->n + (size_t)L->B - 1) / (size_t)L->B;
}
