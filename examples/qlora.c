// qlora — command-line front end of qlora.h.   qlora help  lists the commands.
#define QLORA_IMPLEMENTATION
#include "qlora.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>

static const char *usage =
    "usage: qlora COMMAND MODEL [options]\n"
    "  MODEL is a .gguf file, a Hugging Face model directory, or a llama2.c .bin (+ --tokenizer)\n"
    "\n"
    "commands:\n"
    "  info MODEL                         architecture, dims, tensor types, params, kernels\n"
    "  tokenize MODEL TEXT                token ids of TEXT (--file F reads it; --add-special adds BOS)\n"
    "  generate MODEL [--prompt S]        generated text to stdout (--ids: generated ids only)\n"
    "      [-n N] [--temp T] [--top-k K] [--top-p P] [--seed S] [--chat] [--n-ctx N]\n"
    "      [--prompt-ids \"1 2 3\"]  start from these token ids instead of a text prompt\n"
    "  eval MODEL --data FILE             mean NLL and perplexity over windows of --n-ctx tokens\n"
    "      [--n-ctx 128] [--max-tokens N] [--offset-frac F]  (F: start at this fraction of the file)\n"
    "  export-hf MODEL --out DIR          write a Hugging Face model dir (config.json, model.safetensors)\n"
    "\n"
    "common options:\n"
    "  --tokenizer T          llama2.c tokenizer.bin, tokenizer.json, or a .gguf whose vocab to use\n"
    "  --quant nf4|fp4|int4|int8|none     re-quantize the linear weights at load (bitsandbytes layout)\n"
    "  --double-quant         double-quantize the absmax scales (QLoRA)\n"
    "  --blocksize N          quantization block size, 32..4096 (default 64)\n"
    "  --threads N            worker threads (default: all cores)\n"
    "  --isa ref|scalar|avx2|avx512       force an instruction set (default: best detected)\n"
    "  -v                     timings and memory on stderr\n";

typedef struct args {
    const char *cmd, *model, *text, *prompt, *prompt_ids, *tokenizer, *file, *data, *out, *quant;
    int n, top_k, threads, ids, chat, add_special, double_quant, blocksize, n_ctx, max_tokens, verbose;
    float temp, top_p, offset_frac;
    unsigned long long seed;
    qlora_isa isa;
} args;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
static double peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;
}

static int die(const char *fmt, const char *a) {
    fprintf(stderr, "qlora: ");
    fprintf(stderr, fmt, a);
    fputc('\n', stderr);
    return 1;
}

static int parse_int(const char *flag, const char *v, int lo, int hi, int *out) {
    char *end;
    long x = strtol(v, &end, 10);
    if (!*v || *end || x < lo || x > hi) { fprintf(stderr, "qlora: %s expects an integer in [%d, %d], got '%s'\n", flag, lo, hi, v); return 0; }
    *out = (int)x;
    return 1;
}
static int parse_float(const char *flag, const char *v, float lo, float hi, float *out) {
    char *end;
    double x = strtod(v, &end);
    if (!*v || *end || !(x >= lo && x <= hi)) { fprintf(stderr, "qlora: %s expects a number in [%g, %g], got '%s'\n", flag, lo, hi, v); return 0; }
    *out = (float)x;
    return 1;
}

static int parse_args(int argc, char **argv, args *a) {
    memset(a, 0, sizeof *a);
    a->n = 256; a->temp = 0.8f; a->top_p = 0.95f; a->blocksize = 64; a->n_ctx = 0; a->seed = 42;
    if (argc < 2) return 0;
    a->cmd = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *f = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEEDV() do { if (!v) { fprintf(stderr, "qlora: %s needs a value\n", f); return 0; } i++; } while (0)
        if (!strcmp(f, "--prompt") || !strcmp(f, "-p")) { NEEDV(); a->prompt = v; }
        else if (!strcmp(f, "--prompt-ids")) { NEEDV(); a->prompt_ids = v; }
        else if (!strcmp(f, "--tokenizer")) { NEEDV(); a->tokenizer = v; }
        else if (!strcmp(f, "--file")) { NEEDV(); a->file = v; }
        else if (!strcmp(f, "--data")) { NEEDV(); a->data = v; }
        else if (!strcmp(f, "--out")) { NEEDV(); a->out = v; }
        else if (!strcmp(f, "--quant")) { NEEDV(); a->quant = v; }
        else if (!strcmp(f, "-n") || !strcmp(f, "--max-new-tokens")) { NEEDV(); if (!parse_int(f, v, 0, 1 << 20, &a->n)) return 0; }
        else if (!strcmp(f, "--temp") || !strcmp(f, "--temperature")) { NEEDV(); if (!parse_float(f, v, 0, 100, &a->temp)) return 0; }
        else if (!strcmp(f, "--top-k")) { NEEDV(); if (!parse_int(f, v, 0, 1 << 24, &a->top_k)) return 0; }
        else if (!strcmp(f, "--top-p")) { NEEDV(); if (!parse_float(f, v, 0, 1, &a->top_p)) return 0; }
        else if (!strcmp(f, "--seed")) { NEEDV(); a->seed = strtoull(v, NULL, 10); }
        else if (!strcmp(f, "--threads") || !strcmp(f, "-t")) { NEEDV(); if (!parse_int(f, v, 1, 256, &a->threads)) return 0; }
        else if (!strcmp(f, "--blocksize")) { NEEDV(); if (!parse_int(f, v, 1, 1 << 20, &a->blocksize)) return 0; }
        else if (!strcmp(f, "--n-ctx")) { NEEDV(); if (!parse_int(f, v, 2, 1 << 20, &a->n_ctx)) return 0; }
        else if (!strcmp(f, "--max-tokens")) { NEEDV(); if (!parse_int(f, v, 2, 1 << 30, &a->max_tokens)) return 0; }
        else if (!strcmp(f, "--offset-frac")) { NEEDV(); if (!parse_float(f, v, 0, 1, &a->offset_frac)) return 0; }
        else if (!strcmp(f, "--isa")) {
            NEEDV();
            int k;
            for (k = 1; k < QLORA_ISA_COUNT; k++) if (!strcmp(v, qlora_isa_name((qlora_isa)k))) break;
            if (k == QLORA_ISA_COUNT) { fprintf(stderr, "qlora: --isa: unknown '%s' (ref, scalar, avx2, avx512, neon)\n", v); return 0; }
            a->isa = (qlora_isa)k;
        }
        else if (!strcmp(f, "--ids")) a->ids = 1;
        else if (!strcmp(f, "--chat")) a->chat = 1;
        else if (!strcmp(f, "--add-special")) a->add_special = 1;
        else if (!strcmp(f, "--double-quant")) a->double_quant = 1;
        else if (!strcmp(f, "-v") || !strcmp(f, "--verbose")) a->verbose = 1;
        else if (!strcmp(f, "--adapter")) { fprintf(stderr, "qlora: --adapter: LoRA adapters arrive with the training release; not supported yet\n"); return 0; }
        else if (f[0] == '-' && f[1]) { fprintf(stderr, "qlora: unknown option '%s' (see qlora help)\n", f); return 0; }
        else if (!a->model) a->model = f;
        else if (!a->text) a->text = f;
        else { fprintf(stderr, "qlora: unexpected argument '%s'\n", f); return 0; }
#undef NEEDV
    }
    return 1;
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = (char *)malloc(cap + 1);
    size_t k;
    while (buf && (k = fread(buf + n, 1, cap - n, f)) > 0) {
        n += k;
        if (n == cap) { cap *= 2; char *nb = (char *)realloc(buf, cap + 1); if (!nb) { free(buf); buf = NULL; } else buf = nb; }
    }
    fclose(f);
    if (!buf) return NULL;
    buf[n] = 0;
    *len = n;
    return buf;
}

static qlora_type parse_quant(const char *s, int *ok) {
    *ok = 1;
    if (!s || !strcmp(s, "none")) return QLORA_TYPE_COUNT;
    if (!strcmp(s, "nf4")) return QLORA_TYPE_NF4;
    if (!strcmp(s, "fp4")) return QLORA_TYPE_FP4;
    if (!strcmp(s, "int4")) return QLORA_TYPE_INT4;
    if (!strcmp(s, "int8")) return QLORA_TYPE_INT8;
    *ok = 0;
    return QLORA_TYPE_COUNT;
}

// Tokenize into a growing array.
static int32_t *tokenize_all(const qlora_tokenizer *tok, const char *text, size_t len, int add_special, size_t *n) {
    size_t cap = len + 16;
    int32_t *ids = (int32_t *)malloc(cap * sizeof *ids);
    if (!ids) return NULL;
    if (qlora_tokenize(tok, text, len, add_special, ids, cap, n) != QLORA_OK) { free(ids); return NULL; }
    return ids;
}

typedef struct stream { const qlora_model *m; int ids, first, strip_space; } stream;
static int on_token(void *user, int32_t id) {
    stream *s = (stream *)user;
    if (s->ids) { printf("%s%d", s->first ? "" : " ", id); s->first = 0; fflush(stdout); return 0; }
    char buf[256];
    size_t n = qlora_token_to_piece(s->m->tok, id, buf, sizeof buf);
    if (n > sizeof buf) n = sizeof buf;
    const char *p = buf;
    if (s->first && s->strip_space && n > 0 && buf[0] == ' ') { p++; n--; }
    s->first = 0;
    fwrite(p, 1, n, stdout);
    fflush(stdout);
    return 0;
}

static int cmd_info(qlora_ctx *ctx, const qlora_model *m) {
    const qlora_model_config *c = &m->cfg;
    printf("source:       %s\n", m->source);
    printf("architecture: %s\n", m->arch);
    printf("dim %d, hidden %d, layers %d, heads %d, kv heads %d, head dim %d, vocab %d, context %d\n",
           c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim, c->vocab_size, c->max_seq_len);
    printf("rms eps %g, rope theta %g, rope dims %d, tied embeddings %s\n", (double)c->norm_eps, (double)c->rope_theta,
           c->rope_dim, c->tied_embeddings ? "yes" : "no");
    int counts[QLORA_TYPE_COUNT] = { 0 };
    counts[m->tok_embd.type]++; counts[m->out_norm.type]++;
    if (!c->tied_embeddings) counts[m->output.type]++;
    for (int l = 0; l < c->n_layers; l++) {
        const qlora_layer *ly = &m->layers[l];
        const qlora_tensor *ts[] = { &ly->attn_norm, &ly->wq, &ly->wk, &ly->wv, &ly->wo, &ly->ffn_norm, &ly->w_gate, &ly->w_up, &ly->w_down };
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) counts[ts[i]->type]++;
    }
    printf("tensor types:");
    for (int t = 0; t < QLORA_TYPE_COUNT; t++) if (counts[t]) printf(" %s=%d", qlora_type_name((qlora_type)t), counts[t]);
    printf("\nparams:       %zu (%.1f M)\n", qlora_model_n_params(m), (double)qlora_model_n_params(m) / 1e6);
    printf("weight bytes: %zu (%.1f MiB)\n", qlora_model_weight_bytes(m), (double)qlora_model_weight_bytes(m) / 1048576.0);
    if (m->tok)
        printf("tokenizer:    %s, %d tokens, bos %d, eos %d\n", qlora_tokenizer_kind(m->tok) == QLORA_TOK_SPM ? "sentencepiece-bpe" : "byte-level-bpe",
               qlora_tokenizer_n_vocab(m->tok), qlora_tokenizer_bos(m->tok), qlora_tokenizer_eos(m->tok));
    else printf("tokenizer:    none (pass --tokenizer)\n");
    char desc[2048];
    qlora_ctx_describe(ctx, desc, sizeof desc);
    printf("threads %d; %s\n", qlora_ctx_threads(ctx), desc);
    return 0;
}

int main(int argc, char **argv) {
    args a;
    if (argc >= 2 && (!strcmp(argv[1], "help") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) { fputs(usage, stdout); return 0; }
    if (!parse_args(argc, argv, &a)) { fputs(usage, stderr); return 2; }
    const char *known[] = { "info", "tokenize", "generate", "eval", "export-hf" };
    int ok_cmd = 0;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) if (!strcmp(a.cmd, known[i])) ok_cmd = 1;
    if (!ok_cmd) { fprintf(stderr, "qlora: unknown command '%s'\n%s", a.cmd, usage); return 2; }
    if (!a.model) return die("%s: MODEL is required", a.cmd);
    int qok;
    qlora_type qt = parse_quant(a.quant, &qok);
    if (!qok) return die("--quant: unknown type '%s' (nf4, fp4, int4, int8, none)", a.quant);

    qlora_ctx_config cc;
    memset(&cc, 0, sizeof cc);
    cc.n_threads = a.threads;
    cc.force_isa = a.isa;
    qlora_ctx *ctx = NULL;
    if (qlora_ctx_create(&cc, &ctx) != QLORA_OK) return die("%s", "cannot create context (out of memory or unsupported --isa on this CPU)");
    int rc = 1;
    qlora_model *m = NULL;
    qlora_kv_cache *kv = NULL;
    int32_t *ids = NULL, *out = NULL;
    char *text = NULL;
    double t0 = now_s();
    qlora_load_options lo;
    memset(&lo, 0, sizeof lo);
    lo.tokenizer_path = a.tokenizer;
    if (qlora_model_load(ctx, a.model, &lo, &m) != QLORA_OK) { fprintf(stderr, "qlora: %s\n", qlora_ctx_error(ctx)); goto done; }
    double t_load = now_s() - t0;
    if (qt != QLORA_TYPE_COUNT) {
        t0 = now_s();
        if (qlora_model_quantize(ctx, m, qt, a.blocksize, a.double_quant) != QLORA_OK) { fprintf(stderr, "qlora: %s\n", qlora_ctx_error(ctx)); goto done; }
        if (a.verbose) fprintf(stderr, "quantized to %s%s (blocksize %d) in %.2f s\n", qlora_type_name(qt), a.double_quant ? "+dq" : "", a.blocksize, now_s() - t0);
    }
    if (a.verbose) fprintf(stderr, "loaded %s in %.3f s\n", a.model, t_load);

    if (!strcmp(a.cmd, "info")) { rc = cmd_info(ctx, m); goto done; }
    if (!strcmp(a.cmd, "export-hf")) {
        if (!a.out) { die("%s", "export-hf: --out DIR is required"); goto done; }
        if (qlora_model_save_hf(ctx, m, a.out) != QLORA_OK) { fprintf(stderr, "qlora: %s\n", qlora_ctx_error(ctx)); goto done; }
        fprintf(stderr, "wrote %s/config.json and %s/model.safetensors\n", a.out, a.out);
        rc = 0;
        goto done;
    }
    if (!m->tok && !(a.ids && !strcmp(a.cmd, "generate") && !a.prompt && !a.text)) { die("%s: this model has no tokenizer (llama2.c file, or no tokenizer.json): pass --tokenizer", a.model); goto done; }

    if (!strcmp(a.cmd, "tokenize")) {
        size_t len = 0, n = 0;
        if (a.file) { text = read_file(a.file, &len); if (!text) { die("cannot read %s", a.file); goto done; } }
        else if (a.text) { len = strlen(a.text); }
        else { die("%s", "tokenize: TEXT or --file F is required"); goto done; }
        ids = tokenize_all(m->tok, text ? text : a.text, len, a.add_special, &n);
        if (!ids) { die("%s", "tokenize failed (out of memory?)"); goto done; }
        for (size_t i = 0; i < n; i++) printf("%s%d", i ? " " : "", ids[i]);
        printf("\n");
        rc = 0;
        goto done;
    }

    if (!strcmp(a.cmd, "eval")) {
        size_t len = 0, n = 0;
        if (!a.data) { die("%s", "eval: --data FILE is required"); goto done; }
        text = read_file(a.data, &len);
        if (!text) { die("cannot read %s", a.data); goto done; }
        size_t off = (size_t)((double)len * (double)a.offset_frac);
        while (off < len && (text[off] & 0xC0) == 0x80) off++;            // start on a UTF-8 boundary
        ids = tokenize_all(m->tok, text + off, len - off, 0, &n);
        if (!ids) { die("%s", "tokenize failed"); goto done; }
        if (a.max_tokens && (size_t)a.max_tokens < n) n = (size_t)a.max_tokens;
        int win = a.n_ctx ? a.n_ctx : 128;
        double nll; int scored;
        t0 = now_s();
        if (qlora_model_nll(ctx, m, ids, (int)n, win, &nll, &scored) != QLORA_OK) { fprintf(stderr, "qlora: %s\n", qlora_ctx_error(ctx)); goto done; }
        double dt = now_s() - t0;
        printf("tokens %d  mean_nll %.6f  perplexity %.4f  (%s%s, window %d, %.1f tok/s)\n", scored, nll, exp(nll),
               qt != QLORA_TYPE_COUNT ? qlora_type_name(qt) : "original", a.double_quant ? "+dq" : "", win, (double)n / dt);
        rc = 0;
        goto done;
    }

    // generate
    {
        char *rendered = NULL;
        const char *prompt = a.prompt ? a.prompt : (a.text ? a.text : "");
        size_t n = 0;
        if (a.chat) {
            qlora_chat_msg msg = { "user", prompt };
            size_t need = qlora_chat_render(m->tok, &msg, 1, 1, NULL, 0);
            rendered = (char *)malloc(need + 1);
            if (!rendered) { die("%s", "out of memory"); goto done; }
            qlora_chat_render(m->tok, &msg, 1, 1, rendered, need + 1);
            prompt = rendered;
        }
        int bos = m->tok ? qlora_tokenizer_bos(m->tok) : 1;            // llama2.c without a vocab: BOS = 1
        if (a.prompt_ids) {                                             // raw ids, e.g. "1 9690 198"
            ids = (int32_t *)calloc(strlen(a.prompt_ids) / 2 + 2, sizeof *ids);
            for (const char *q = a.prompt_ids; ids && *q;) {
                char *end;
                long v = strtol(q, &end, 10);
                if (end == q) { if (*q == ' ' || *q == ',') { q++; continue; } die("--prompt-ids: not a list of integers: '%s'", a.prompt_ids); goto done; }
                if (v < 0 || v >= m->cfg.vocab_size) { die("--prompt-ids: id out of range in '%s'", a.prompt_ids); goto done; }
                ids[n++] = (int32_t)v;
                q = end;
            }
        } else if (m->tok) {
            int add_bos = qlora_tokenizer_kind(m->tok) == QLORA_TOK_SPM;   // llama-style vocabularies start with BOS
            ids = tokenize_all(m->tok, prompt, strlen(prompt), add_bos, &n);
        } else ids = (int32_t *)calloc(1, sizeof *ids);
        free(rendered);
        if (!ids) { die("%s", "tokenize failed"); goto done; }
        if (n == 0) {                                                   // empty prompt: start from BOS
            if (bos < 0) { die("%s", "empty prompt and the vocabulary has no BOS token"); goto done; }
            ids[0] = bos;
            n = 1;
        }
        int n_ctx = a.n_ctx ? a.n_ctx : (int)n + a.n + 1;
        if (m->cfg.max_seq_len > 0 && n_ctx > m->cfg.max_seq_len) n_ctx = m->cfg.max_seq_len;
        if ((int)n >= n_ctx) { fprintf(stderr, "qlora: prompt of %zu tokens does not fit the context of %d\n", n, n_ctx); goto done; }
        if (qlora_kv_cache_create(ctx, m, n_ctx, &kv) != QLORA_OK) { fprintf(stderr, "qlora: %s\n", qlora_ctx_error(ctx)); goto done; }
        qlora_sampler s;
        memset(&s, 0, sizeof s);
        s.temperature = a.temp; s.top_k = a.top_k; s.top_p = a.top_p; s.seed = a.seed;
        out = (int32_t *)malloc(((size_t)a.n + 1) * sizeof *out);
        if (!out) { die("%s", "out of memory"); goto done; }
        stream st = { m, a.ids, 1, m->tok && qlora_tokenizer_kind(m->tok) == QLORA_TOK_SPM && n == 1 && ids[0] == bos };
        int n_out = 0;
        t0 = now_s();
        int n_max = QLORA__MIN(a.n, n_ctx - (int)n);
        if (qlora_generate(ctx, m, kv, ids, (int)n, &s, n_max, out, &n_out, on_token, &st) != QLORA_OK) {
            fprintf(stderr, "\nqlora: %s\n", qlora_ctx_error(ctx));
            goto done;
        }
        double dt = now_s() - t0;
        printf("\n");
        if (a.verbose)
            fprintf(stderr, "prompt %zu tokens, generated %d tokens in %.3f s (%.2f tok/s incl. prompt), load %.3f s, peak RSS %.1f MiB, threads %d\n",
                    n, n_out, dt, (double)n_out / dt, t_load, peak_rss_mb(), qlora_ctx_threads(ctx));
        rc = 0;
    }
done:
    free(ids); free(out); free(text);
    qlora_kv_cache_free(kv);
    qlora_model_free(m);
    qlora_ctx_destroy(ctx);
    return rc;
}
