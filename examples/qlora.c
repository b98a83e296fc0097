// qlora — command-line front end of qlora.h.   `qlora help` lists the commands.
// Flags follow the Hugging Face Trainer / PEFT names in kebab-case.
#define QLORA_IMPLEMENTATION
#include "qlora.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>

static const char *usage =
    "usage: qlora COMMAND MODEL [options]\n"
    "  MODEL is a .gguf file, a Hugging Face model directory, or a llama2.c .bin (+ --tokenizer)\n"
    "\n"
    "commands:\n"
    "  info MODEL                         architecture, dims, tensor types, params, kernels\n"
    "  tokenize MODEL TEXT                token ids of TEXT (--file F reads it; --add-special adds BOS)\n"
    "  generate MODEL [--prompt S]        generated text to stdout (--ids: generated ids only)\n"
    "      [-n N] [--temp T] [--top-k K] [--top-p P] [--seed S] [--chat] [--n-ctx N] [--adapter DIR]\n"
    "      [--prompt-ids \"1 2 3\"]         start from these token ids instead of a text prompt\n"
    "  finetune MODEL --data FILE         QLoRA: frozen quantized base + trainable LoRA (see below)\n"
    "  eval MODEL --data FILE             mean loss and perplexity [--adapter DIR]; plain text is scored in\n"
    "      windows of --n-ctx (128) [--max-tokens N] [--offset-frac F]; other formats per example\n"
    "  merge MODEL --adapter DIR --out F  adapter merged into the dequantized base: F.gguf (--dtype f16|f32)\n"
    "                                     or an HF directory F (config.json + model.safetensors)\n"
    "  export-adapter DIR --to gguf --out FILE [--model MODEL]   PEFT adapter -> llama.cpp LoRA GGUF\n"
    "  export-hf MODEL --out DIR          write a Hugging Face model dir (config.json, model.safetensors)\n"
    "\n"
    "common options:\n"
    "  --tokenizer T          llama2.c tokenizer.bin, tokenizer.json, or a .gguf whose vocab to use\n"
    "  --quant nf4|fp4|int4|int8|none     quantize the linear weights at load (bitsandbytes layout;\n"
    "                         finetune default nf4)\n"
    "  --double-quant         double-quantize the absmax scales (QLoRA)\n"
    "  --blocksize N          quantization block size, 32..4096 (default 64)\n"
    "  --threads N            worker threads (default: all cores)\n"
    "  --isa ref|scalar|avx2|avx512|avx512bf16|amx|neon   cap the instruction set (default: best detected)\n"
    "  -v                     timings and memory on stderr\n"
    "\n"
    "finetune options (Hugging Face names):\n"
    "  --format auto|text|jsonl|alpaca|chat|fortune  [--field NAME] [--packing] [--max-train-samples N]\n"
    "  --eval-data FILE | --validation-split F      [--eval-steps E] [--eval-on-start] [--skip-long-prompts]\n"
    "  --lora-r 8 --lora-alpha 16 --lora-dropout 0.05 --target-modules q_proj,v_proj|all-linear\n"
    "  --bias none|all|lora_only --use-rslora\n"
    "  --learning-rate 2e-4 --per-device-train-batch-size 4 --gradient-accumulation-steps 1\n"
    "  --max-seq-length 256 --max-steps N | --num-train-epochs 3 --warmup-steps 0\n"
    "  --lr-scheduler-type linear|cosine|constant|constant_with_warmup --max-grad-norm 1.0 --weight-decay 0\n"
    "  --optim adamw|adamw_8bit|paged_adamw_8bit|paged_adamw_32bit\n"
    "      adamw_8bit: bitsandbytes blockwise 8-bit state (blocks of 256, dynamic maps);\n"
    "      paged_*: on a CPU \"paged\" means the optimizer state lives in an mmap'ed file (in\n"
    "      --output-dir) that the OS can page out under memory pressure (bnb uses CUDA unified memory)\n"
    "  --gradient-checkpointing --bf16 (frozen-weight GEMMs in bf16 with f32 accumulation)\n"
    "  --logging-steps 10 --save-steps S --save-total-limit K\n"
    "  --output-dir DIR (default qlora-out) --resume-from-checkpoint [DIR] --seed 42\n"
    "  Ctrl-C saves a checkpoint and exits; --resume-from-checkpoint continues exactly.\n";

typedef struct args {
    const char *cmd, *model, *text, *prompt, *prompt_ids, *tokenizer, *file, *data, *out, *quant, *adapter;
    const char *eval_data, *format, *field, *target_modules, *bias, *lr_sched, *optim, *output_dir, *resume, *to, *dtype, *model_opt;
    int n, top_k, threads, ids, chat, add_special, double_quant, blocksize, n_ctx, max_tokens, verbose;
    int lora_r, batch, grad_accum, max_seq, warmup, grad_ckpt, bf16, logging, eval_steps, save_steps, save_limit;
    int packing, use_rslora, skip_long, resume_latest, eval_on_start;
    long max_steps, max_train_samples;
    float temp, top_p, offset_frac, lora_alpha, lora_dropout, num_epochs, validation_split;
    double lr, max_grad_norm, weight_decay;
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
static int parse_int(const char *flag, const char *v, long lo, long hi, long *out) {
    char *end;
    long x = strtol(v, &end, 10);
    if (!*v || *end || x < lo || x > hi) { fprintf(stderr, "qlora: %s expects an integer in [%ld, %ld], got '%s'\n", flag, lo, hi, v); return 0; }
    *out = x;
    return 1;
}
static int parse_dbl(const char *flag, const char *v, double lo, double hi, double *out) {
    char *end;
    double x = strtod(v, &end);
    if (!*v || *end || !(x >= lo && x <= hi)) { fprintf(stderr, "qlora: %s expects a number in [%g, %g], got '%s'\n", flag, lo, hi, v); return 0; }
    *out = x;
    return 1;
}

static int parse_args(int argc, char **argv, args *a) {
    memset(a, 0, sizeof *a);
    a->n = 256; a->temp = 0.8f; a->top_p = 0.95f; a->blocksize = 64; a->seed = 42;
    a->lora_r = 8; a->lora_alpha = 16; a->lora_dropout = 0.05f; a->lr = 2e-4; a->batch = 4; a->grad_accum = 1;
    a->max_seq = 256; a->num_epochs = 3; a->max_grad_norm = 1.0; a->logging = 10; a->max_steps = -1;
    if (argc < 2) return 0;
    a->cmd = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *f = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long iv; double dv;
#define NEEDV() do { if (!v) { fprintf(stderr, "qlora: %s needs a value\n", f); return 0; } i++; } while (0)
#define STR(name, field) else if (!strcmp(f, name)) { NEEDV(); a->field = v; }
#define INT(name, field, lo, hi) else if (!strcmp(f, name)) { NEEDV(); if (!parse_int(f, v, lo, hi, &iv)) return 0; a->field = iv; }
#define DBL(name, field, lo, hi) else if (!strcmp(f, name)) { NEEDV(); if (!parse_dbl(f, v, lo, hi, &dv)) return 0; a->field = dv; }
#define FLAG(name, field) else if (!strcmp(f, name)) a->field = 1;
        if (0) {}
        STR("--prompt", prompt) STR("-p", prompt) STR("--prompt-ids", prompt_ids) STR("--tokenizer", tokenizer)
        STR("--file", file) STR("--data", data) STR("--out", out) STR("--quant", quant) STR("--adapter", adapter)
        STR("--eval-data", eval_data) STR("--format", format) STR("--field", field) STR("--target-modules", target_modules)
        STR("--bias", bias) STR("--lr-scheduler-type", lr_sched) STR("--optim", optim) STR("--output-dir", output_dir)
        STR("--to", to) STR("--dtype", dtype) STR("--model", model_opt)
        INT("-n", n, 0, 1 << 20) INT("--max-new-tokens", n, 0, 1 << 20) INT("--top-k", top_k, 0, 1 << 24)
        INT("--threads", threads, 1, 256) INT("-t", threads, 1, 256) INT("--blocksize", blocksize, 1, 1 << 20)
        INT("--n-ctx", n_ctx, 2, 1 << 20) INT("--max-tokens", max_tokens, 2, 1 << 30)
        INT("--lora-r", lora_r, 1, 4096) INT("--per-device-train-batch-size", batch, 1, 4096)
        INT("--gradient-accumulation-steps", grad_accum, 1, 1 << 16) INT("--max-seq-length", max_seq, 2, 1 << 16)
        INT("--max-steps", max_steps, 1, 1L << 40) INT("--warmup-steps", warmup, 0, 1 << 30)
        INT("--logging-steps", logging, 1, 1 << 30) INT("--eval-steps", eval_steps, 1, 1 << 30)
        INT("--save-steps", save_steps, 1, 1 << 30) INT("--save-total-limit", save_limit, 1, 1 << 20)
        INT("--max-train-samples", max_train_samples, 1, 1L << 40)
        DBL("--temp", temp, 0, 100) DBL("--temperature", temp, 0, 100) DBL("--top-p", top_p, 0, 1)
        DBL("--offset-frac", offset_frac, 0, 1) DBL("--lora-alpha", lora_alpha, 1e-6, 1e6) DBL("--lora-dropout", lora_dropout, 0, 0.99)
        DBL("--learning-rate", lr, 1e-12, 10) DBL("--num-train-epochs", num_epochs, 1e-6, 1e6) DBL("--max-grad-norm", max_grad_norm, 0, 1e9)
        DBL("--weight-decay", weight_decay, 0, 10) DBL("--validation-split", validation_split, 0, 0.99)
        FLAG("--ids", ids) FLAG("--chat", chat) FLAG("--add-special", add_special) FLAG("--double-quant", double_quant)
        FLAG("-v", verbose) FLAG("--verbose", verbose) FLAG("--gradient-checkpointing", grad_ckpt) FLAG("--bf16", bf16) FLAG("--packing", packing)
        FLAG("--use-rslora", use_rslora) FLAG("--skip-long-prompts", skip_long) FLAG("--eval-on-start", eval_on_start)
        else if (!strcmp(f, "--seed")) { NEEDV(); a->seed = strtoull(v, NULL, 10); }
        else if (!strcmp(f, "--resume-from-checkpoint")) {               // optional value
            if (v && v[0] != '-') { a->resume = v; i++; } else a->resume_latest = 1;
        }
        else if (!strcmp(f, "--isa")) {
            NEEDV();
            int k;
            for (k = 1; k < QLORA_ISA_COUNT; k++) if (!strcmp(v, qlora_isa_name((qlora_isa)k))) break;
            if (k == QLORA_ISA_COUNT) { fprintf(stderr, "qlora: --isa: unknown '%s' (ref, scalar, avx2, avx512, neon, avx512bf16, amx)\n", v); return 0; }
            a->isa = (qlora_isa)k;
        }
        else if (f[0] == '-' && f[1]) { fprintf(stderr, "qlora: unknown option '%s' (see qlora help)\n", f); return 0; }
        else if (!a->model) a->model = f;
        else if (!a->text) a->text = f;
        else { fprintf(stderr, "qlora: unexpected argument '%s'\n", f); return 0; }
#undef NEEDV
#undef STR
#undef INT
#undef DBL
#undef FLAG
    }
    return 1;
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0, k;
    char *buf = (char *)malloc(cap + 1);
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

static int32_t *tokenize_all(const qlora_tokenizer *tok, const char *text, size_t len, int add_special, size_t *n) {
    size_t cap = len + 16;
    int32_t *ids = (int32_t *)malloc(cap * sizeof *ids);
    if (!ids) return NULL;
    *n = 0;
    if (len == 0) return ids;                       // qlora_tokenize treats len 0 as "NUL-terminated"
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

// ---- finetune --------------------------------------------------------------------------------
static volatile int g_interrupt;
static void on_sigint(int sig) { (void)sig; g_interrupt = 1; }

typedef struct progress { int tty; double last_print; } progress;
static void fmt_eta(double s, char *buf, size_t cap) {
    if (!(s >= 0) || s > 1e7) { snprintf(buf, cap, "?"); return; }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, cap, "%ldh%02ldm", t / 3600, (t / 60) % 60);
    else snprintf(buf, cap, "%ldm%02lds", t / 60, t % 60);
}
static void on_event(void *user, const qlora_train_event *ev) {
    progress *p = (progress *)user;
    char eta[32];
    switch (ev->kind) {
    case QLORA_EV_START:
        if (ev->path) fprintf(stderr, "resumed from %s at step %lld of %lld\n", ev->path, (long long)ev->step, (long long)ev->total_steps);
        break;
    case QLORA_EV_STEP:
        if (p->tty) {
            fmt_eta(ev->eta_seconds, eta, sizeof eta);
            fprintf(stderr, "\r\033[Kstep %lld/%lld | loss %.4f | lr %.3g | grad %.3f | %.1f tok/s | ETA %s",
                    (long long)ev->step, (long long)ev->total_steps, ev->loss, ev->learning_rate, ev->grad_norm, ev->tokens_per_second, eta);
            fflush(stderr);
        }
        break;
    case QLORA_EV_LOG:
        fmt_eta(ev->eta_seconds, eta, sizeof eta);
        fprintf(stderr, "%sstep %lld/%lld  epoch %.3f  loss %.4f  lr %.4g  grad_norm %.4f  %.1f tok/s  ETA %s\n", p->tty ? "\r\033[K" : "",
                (long long)ev->step, (long long)ev->total_steps, ev->epoch, ev->loss, ev->learning_rate, ev->grad_norm, ev->tokens_per_second, eta);
        break;
    case QLORA_EV_EVAL:
        fprintf(stderr, "%sstep %lld  eval_loss %.4f  eval_perplexity %.3f\n", p->tty ? "\r\033[K" : "", (long long)ev->step, ev->eval_loss, exp(ev->eval_loss));
        break;
    case QLORA_EV_SAVE:
        fprintf(stderr, "%ssaved %s\n", p->tty ? "\r\033[K" : "", ev->path);
        break;
    case QLORA_EV_INTERRUPTED:
        fprintf(stderr, "%sinterrupted at step %lld: checkpoint %s (continue with --resume-from-checkpoint)\n", p->tty ? "\r\033[K" : "", (long long)ev->step, ev->path);
        break;
    case QLORA_EV_DONE:
        fprintf(stderr, "%sdone: %lld steps, final adapter in %s\n", p->tty ? "\r\033[K" : "", (long long)ev->step, ev->path);
        break;
    }
}

static int parse_optim(const char *s, qlora_optim_kind *k) {
    if (!s || !strcmp(s, "adamw") || !strcmp(s, "adamw_torch") || !strcmp(s, "adamw_torch_fused") || !strcmp(s, "adamw_hf")) { *k = QLORA_OPTIM_ADAMW; return 1; }
    if (!strcmp(s, "adamw_8bit") || !strcmp(s, "adamw_bnb_8bit")) { *k = QLORA_OPTIM_ADAMW_8BIT; return 1; }
    if (!strcmp(s, "paged_adamw_8bit")) { *k = QLORA_OPTIM_PAGED_ADAMW_8BIT; return 1; }
    if (!strcmp(s, "paged_adamw_32bit")) { *k = QLORA_OPTIM_PAGED_ADAMW_32BIT; return 1; }
    return 0;
}

static int cmd_finetune(qlora_ctx *ctx, qlora_model *m, const args *a) {
    int rc = 1;
    qlora_lora *l = NULL;
    qlora_dataset *train = NULL, *eval = NULL;
    const char *outdir = a->output_dir ? a->output_dir : "qlora-out";
    char resume_dir[4096];
    const char *resume = a->resume;
    if (!a->data) return die("%s", "finetune: --data FILE is required");
    if (a->resume_latest) {
        if (qlora_find_last_checkpoint(ctx, outdir, resume_dir, sizeof resume_dir) != QLORA_OK) { fprintf(stderr, "qlora: %s\n", qlora_ctx_error(ctx)); return 1; }
        resume = resume_dir;
    }
    // LoRA (PEFT semantics)
    qlora_lora_config lc;
    memset(&lc, 0, sizeof lc);
    lc.r = a->lora_r; lc.alpha = a->lora_alpha; lc.dropout = a->lora_dropout; lc.use_rslora = a->use_rslora; lc.seed = a->seed;
    if (a->target_modules && qlora_lora_parse_targets(ctx, a->target_modules, &lc.target_mask) != QLORA_OK) { fprintf(stderr, "qlora: --target-modules: %s\n", qlora_ctx_error(ctx)); return 1; }
    if (a->bias) {
        if (!strcmp(a->bias, "none")) lc.bias = QLORA_BIAS_NONE;
        else if (!strcmp(a->bias, "all")) lc.bias = QLORA_BIAS_ALL;
        else if (!strcmp(a->bias, "lora_only")) lc.bias = QLORA_BIAS_LORA_ONLY;
        else return die("--bias: unknown mode '%s' (none, all, lora_only)", a->bias);
    }
    qlora_trainer_config tc;
    memset(&tc, 0, sizeof tc);
    if (a->lr_sched && qlora_lr_schedule_parse(a->lr_sched, &tc.schedule) != QLORA_OK) return die("--lr-scheduler-type: unknown '%s' (linear, cosine, constant, constant_with_warmup)", a->lr_sched);
    if (!parse_optim(a->optim, &tc.optim.kind)) return die("--optim: unknown '%s' (adamw, adamw_8bit, paged_adamw_8bit, paged_adamw_32bit)", a->optim);
    // data
    qlora_data_config dc;
    memset(&dc, 0, sizeof dc);
    dc.max_seq_length = a->max_seq; dc.field = a->field; dc.packing = a->packing; dc.seed = a->seed;
    dc.max_samples = a->max_train_samples > 0 ? (size_t)a->max_train_samples : 0;
    dc.validation_split = a->validation_split; dc.skip_long_prompts = a->skip_long; dc.pad_to_max = 1;
    if (a->format && qlora_data_format_parse(ctx, a->format, &dc.format) != QLORA_OK) { fprintf(stderr, "qlora: --format: %s\n", qlora_ctx_error(ctx)); return 1; }
    double t0 = now_s();
    if (qlora_data_prepare(ctx, m->tok, a->data, a->eval_data, &dc, &train, &eval) != QLORA_OK) { fprintf(stderr, "qlora: %s\n", qlora_ctx_error(ctx)); goto done; }
    fprintf(stderr, "data: %zu training examples (%zu tokens, %zu with loss, %zu truncated%s) from %s [%s]%s",
            train->n, train->n_tokens, train->n_loss_tokens, train->n_truncated, train->packed ? ", packed" : "", a->data,
            qlora_data_format_name(train->format), eval ? "" : "\n");
    if (eval) fprintf(stderr, "; %zu eval examples\n", eval->n);
    if (a->verbose) fprintf(stderr, "data prepared in %.2f s\n", now_s() - t0);
    if (qlora_lora_create(ctx, m, &lc, &l) != QLORA_OK) { fprintf(stderr, "qlora: %s\n", qlora_ctx_error(ctx)); goto done; }
    {   // PEFT print_trainable_parameters()
        size_t all = qlora_model_n_params(m) + l->n_params;
        printf("trainable params: %zu || all params: %zu || trainable%%: %.4f\n", l->n_params, all, 100.0 * (double)l->n_params / (double)all);
        fflush(stdout);
    }
    tc.batch = a->batch; tc.seq_len = a->max_seq; tc.grad_checkpointing = a->grad_ckpt; tc.bf16 = a->bf16; tc.grad_accum = a->grad_accum;
    tc.max_steps = a->max_steps > 0 ? a->max_steps : 0; tc.num_epochs = a->num_epochs; tc.learning_rate = a->lr;
    tc.warmup_steps = a->warmup; tc.max_grad_norm = a->max_grad_norm > 0 ? a->max_grad_norm : -1;
    tc.optim.weight_decay = a->weight_decay; tc.optim.paged_dir = outdir;
    tc.logging_steps = a->logging; tc.eval_steps = a->eval_steps; tc.save_steps = a->save_steps; tc.save_total_limit = a->save_limit;
    tc.output_dir = outdir; tc.resume_from = resume; tc.eval_on_start = a->eval_on_start; tc.seed = a->seed; tc.base_model_name = a->model;
    progress pg = { isatty(2), 0 };
    tc.on_event = on_event; tc.user = &pg; tc.interrupt = &g_interrupt;
    {
        qlora_train_config shape = { tc.batch, tc.seq_len, tc.grad_checkpointing, tc.bf16 };
        qlora_train_memory_plan plan;
        qlora_train_memory(ctx, m, l, &shape, &plan);
        size_t nseg = qlora_lora_segments(l, NULL, 0);
        size_t *seg = (size_t *)calloc(nseg ? nseg : 1, sizeof *seg);
        qlora_lora_segments(l, seg, nseg);
        qlora_optim_config oc = tc.optim;
        qlora_optim_config_resolve(&oc);
        size_t ob = qlora_optim_state_bytes(&oc, seg, nseg);
        free(seg);
        size_t wb = qlora_model_weight_bytes(m);
        fprintf(stderr, "memory plan: weights %.1f MiB + activations %.1f MiB + scratch %.1f MiB + kernel panels %.1f MiB + adapter %.1f MiB + optimizer %.1f MiB%s = %.1f MiB\n",
                wb / 1048576.0, plan.activations / 1048576.0, plan.scratch / 1048576.0, plan.kernels / 1048576.0, plan.lora / 1048576.0, ob / 1048576.0,
                oc.kind == QLORA_OPTIM_PAGED_ADAMW_8BIT || oc.kind == QLORA_OPTIM_PAGED_ADAMW_32BIT ? " (paged file)" : "",
                (wb + plan.total + ob) / 1048576.0);
    }
    signal(SIGINT, on_sigint);
    qlora_train_summary s;
    t0 = now_s();
    qlora_result r = qlora_trainer_run(ctx, m, l, train, eval, &tc, &s);
    signal(SIGINT, SIG_DFL);
    if (r != QLORA_OK) { fprintf(stderr, "\nqlora: %s\n", qlora_ctx_error(ctx)); goto done; }
    fprintf(stderr, "train_loss %.4f", s.train_loss);
    if (eval) fprintf(stderr, "  eval_loss %.4f -> %.4f (perplexity %.2f -> %.2f)", s.first_eval_loss, s.last_eval_loss, exp(s.first_eval_loss), exp(s.last_eval_loss));
    fprintf(stderr, "  %.1f s  peak RSS %.1f MiB\n", now_s() - t0, peak_rss_mb());
    rc = s.interrupted ? 130 : 0;
done:
    qlora_lora_free(l);
    qlora_dataset_free(train);
    qlora_dataset_free(eval);
    return rc;
}

static int is_text_file(const char *path, const char *format) {
    if (format) return !strcmp(format, "text");
    size_t n = strlen(path);
    return n > 4 && !strcmp(path + n - 4, ".txt");
}

int main(int argc, char **argv) {
    args a;
    if (argc >= 2 && (!strcmp(argv[1], "help") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) { fputs(usage, stdout); return 0; }
    if (!parse_args(argc, argv, &a)) { fputs(usage, stderr); return 2; }
    const char *known[] = { "info", "tokenize", "generate", "eval", "export-hf", "finetune", "merge", "export-adapter" };
    int ok_cmd = 0;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) if (!strcmp(a.cmd, known[i])) ok_cmd = 1;
    if (!ok_cmd) { fprintf(stderr, "qlora: unknown command '%s'\n%s", a.cmd, usage); return 2; }
    const char *model_path = a.model;
    const char *adapter_dir = a.adapter;
    if (!strcmp(a.cmd, "export-adapter")) {          // export-adapter DIR [--model MODEL]
        adapter_dir = a.model;
        model_path = a.model_opt;
        if (!adapter_dir) return die("%s", "export-adapter: the PEFT adapter DIR is required");
        if (!a.out) return die("%s", "export-adapter: --out FILE is required");
        if (a.to && strcmp(a.to, "gguf") != 0) return die("export-adapter: --to %s is not supported (gguf is)", a.to);
        static char base[4096];
        if (!model_path) {                            // base_model_name_or_path of adapter_config.json
            char cfgp[4200];
            snprintf(cfgp, sizeof cfgp, "%s/adapter_config.json", adapter_dir);
            size_t len;
            char *js = read_file(cfgp, &len);
            qlora_json *j = NULL;
            char err[128];
            if (js && qlora_json_parse(js, len, &j, err, sizeof err) == QLORA_OK) {
                const char *b = qlora_json_str(j, "base_model_name_or_path", NULL);
                if (b) { snprintf(base, sizeof base, "%s", b); model_path = base; }
            }
            qlora_json_free(j);
            free(js);
            if (!model_path) return die("%s: no base_model_name_or_path in adapter_config.json: pass --model MODEL", adapter_dir);
        }
    }
    if (!model_path) return die("%s: MODEL is required", a.cmd);
    int qok;
    qlora_type qt = parse_quant(a.quant ? a.quant : (!strcmp(a.cmd, "finetune") ? "nf4" : NULL), &qok);
    if (!qok) return die("--quant: unknown type '%s' (nf4, fp4, int4, int8, none)", a.quant);

    qlora_ctx_config cc;
    memset(&cc, 0, sizeof cc);
    cc.n_threads = a.threads;
    cc.force_isa = a.isa;
    qlora_ctx *ctx = NULL;
    qlora_result cr = qlora_ctx_create(&cc, &ctx);
    if (cr == QLORA_ERR_INVALID_ARG && getenv("QLORA_ISA"))
        return die("QLORA_ISA=%s: unknown instruction set (ref, scalar, avx2, avx512, avx512bf16, amx, neon)", getenv("QLORA_ISA"));
    if (cr != QLORA_OK) return die("cannot create context: %s", qlora_result_string(cr));
    int rc = 1;
    qlora_model *m = NULL;
    qlora_lora *adapter = NULL;
    qlora_kv_cache *kv = NULL;
    int32_t *ids = NULL, *out = NULL;
    char *text = NULL;
    double t0 = now_s();
    qlora_load_options lo;
    memset(&lo, 0, sizeof lo);
    lo.tokenizer_path = a.tokenizer;
    if (qlora_model_load(ctx, model_path, &lo, &m) != QLORA_OK) { fprintf(stderr, "qlora: %s\n", qlora_ctx_error(ctx)); goto done; }
    double t_load = now_s() - t0;
    if (a.verbose) fprintf(stderr, "loaded %s in %.3f s\n", model_path, t_load);
    if (!strcmp(a.cmd, "export-adapter")) {
        if (qlora_peft_to_gguf(ctx, m, adapter_dir, a.out) != QLORA_OK) { fprintf(stderr, "qlora: %s\n", qlora_ctx_error(ctx)); goto done; }
        fprintf(stderr, "wrote %s (llama.cpp LoRA adapter for %s)\n", a.out, model_path);
        rc = 0;
        goto done;
    }
    if (qt != QLORA_TYPE_COUNT) {
        t0 = now_s();
        if (qlora_model_quantize(ctx, m, qt, a.blocksize, a.double_quant) != QLORA_OK) { fprintf(stderr, "qlora: %s\n", qlora_ctx_error(ctx)); goto done; }
        if (a.verbose) fprintf(stderr, "quantized to %s%s (blocksize %d) in %.2f s\n", qlora_type_name(qt), a.double_quant ? "+dq" : "", a.blocksize, now_s() - t0);
    }
    if (adapter_dir && strcmp(a.cmd, "finetune") != 0) {
        if (qlora_lora_load_peft(ctx, m, adapter_dir, &adapter) != QLORA_OK) { fprintf(stderr, "qlora: %s\n", qlora_ctx_error(ctx)); goto done; }
        m->adapter = adapter;
    }

    if (!strcmp(a.cmd, "info")) { rc = cmd_info(ctx, m); goto done; }
    if (!strcmp(a.cmd, "export-hf")) {
        if (!a.out) { die("%s", "export-hf: --out DIR is required"); goto done; }
        if (qlora_model_save_hf(ctx, m, a.out) != QLORA_OK) { fprintf(stderr, "qlora: %s\n", qlora_ctx_error(ctx)); goto done; }
        fprintf(stderr, "wrote %s/config.json and %s/model.safetensors\n", a.out, a.out);
        rc = 0;
        goto done;
    }
    if (!strcmp(a.cmd, "merge")) {
        if (!adapter) { die("%s", "merge: --adapter DIR is required"); goto done; }
        if (!a.out) { die("%s", "merge: --out FILE is required"); goto done; }
        if (qlora_model_merge_lora(ctx, m, adapter) != QLORA_OK) { fprintf(stderr, "qlora: %s\n", qlora_ctx_error(ctx)); goto done; }
        m->adapter = NULL;
        qlora_merge_stat *st = (qlora_merge_stat *)calloc((size_t)adapter->n_mods, sizeof *st);
        if (st && qlora_merge_report(ctx, m, adapter, QLORA_TYPE_NF4, 64, 1, st) == QLORA_OK) {
            double worst = 0, mean = 0;
            int wi = 0;
            for (int i = 0; i < adapter->n_mods; i++) {
                double rel = st[i].rms_w > 0 ? st[i].rms_err / st[i].rms_w : 0;
                mean += rel;
                if (rel > worst) { worst = rel; wi = i; }
                if (a.verbose) fprintf(stderr, "  layer %d %-9s re-quantizing to nf4+dq: rms err %.3g (%.2f%% of rms W), max err %.3g\n", st[i].layer,
                                       qlora_module_name(st[i].mod), st[i].rms_err, 100 * rel, st[i].max_err);
            }
            fprintf(stderr, "merged %d modules; re-quantizing the merged weights to nf4+dq would cost %.2f%% rms error on average (worst %.2f%%: layer %d %s); kept in f32\n",
                    adapter->n_mods, 100 * mean / adapter->n_mods, 100 * worst, st[wi].layer, qlora_module_name(st[wi].mod));
        }
        free(st);
        size_t n = strlen(a.out);
        qlora_result r;
        if (n > 5 && !strcmp(a.out + n - 5, ".gguf")) {
            qlora_type dt = a.dtype && !strcmp(a.dtype, "f32") ? QLORA_TYPE_F32 : QLORA_TYPE_F16;
            r = qlora_model_save_gguf(ctx, m, a.out, dt);
        } else r = qlora_model_save_hf(ctx, m, a.out);
        if (r != QLORA_OK) { fprintf(stderr, "qlora: %s\n", qlora_ctx_error(ctx)); goto done; }
        fprintf(stderr, "wrote %s\n", a.out);
        rc = 0;
        goto done;
    }
    if (!m->tok && !(a.ids && !strcmp(a.cmd, "generate") && !a.prompt && !a.text)) {
        die("%s: this model has no tokenizer (llama2.c file, or no tokenizer.json): pass --tokenizer", model_path);
        goto done;
    }
    if (!strcmp(a.cmd, "finetune")) { rc = cmd_finetune(ctx, m, &a); goto done; }
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
        if (!a.data) { die("%s", "eval: --data FILE is required"); goto done; }
        if (!is_text_file(a.data, a.format)) {        // structured data: per-example loss (labels)
            qlora_data_config dc;
            memset(&dc, 0, sizeof dc);
            dc.max_seq_length = a.n_ctx ? a.n_ctx : a.max_seq; dc.field = a.field; dc.skip_long_prompts = a.skip_long;
            if (a.format && qlora_data_format_parse(ctx, a.format, &dc.format) != QLORA_OK) { fprintf(stderr, "qlora: --format: %s\n", qlora_ctx_error(ctx)); goto done; }
            qlora_dataset *ds = NULL;
            if (qlora_dataset_load(ctx, m->tok, a.data, &dc, &ds) != QLORA_OK) { fprintf(stderr, "qlora: %s\n", qlora_ctx_error(ctx)); goto done; }
            double loss; size_t nt;
            t0 = now_s();
            qlora_result r = qlora_eval_dataset(ctx, m, adapter, ds, a.batch, dc.max_seq_length, &loss, &nt);
            qlora_dataset_free(ds);
            if (r != QLORA_OK) { fprintf(stderr, "qlora: %s\n", qlora_ctx_error(ctx)); goto done; }
            printf("tokens %zu  mean_nll %.6f  perplexity %.4f  (%s%s%s, %.1f s)\n", nt, loss, exp(loss),
                   qt != QLORA_TYPE_COUNT ? qlora_type_name(qt) : "original", a.double_quant ? "+dq" : "", adapter ? " + adapter" : "", now_s() - t0);
            rc = 0;
            goto done;
        }
        size_t len = 0, n = 0;
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
        printf("tokens %d  mean_nll %.6f  perplexity %.4f  (%s%s%s, window %d, %.1f tok/s)\n", scored, nll, exp(nll),
               qt != QLORA_TYPE_COUNT ? qlora_type_name(qt) : "original", a.double_quant ? "+dq" : "", adapter ? " + adapter" : "", win, (double)n / dt);
        rc = 0;
        goto done;
    }
    {   // generate
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
                if (end == q) { if (*q == ' ' || *q == ',') { q++; continue; } free(rendered); die("--prompt-ids: not a list of integers: '%s'", a.prompt_ids); goto done; }
                if (v < 0 || v >= m->cfg.vocab_size) { free(rendered); die("--prompt-ids: id out of range in '%s'", a.prompt_ids); goto done; }
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
        int n_max = a.n < n_ctx - (int)n ? a.n : n_ctx - (int)n;
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
    if (m) m->adapter = NULL;
    qlora_lora_free(adapter);
    qlora_model_free(m);
    qlora_ctx_destroy(ctx);
    return rc;
}
