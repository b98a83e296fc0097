// Data pipeline tests: every format (text, jsonl, alpaca incl. self-instruct and JSON arrays,
// chat incl. ShareGPT, fortune) with exact label masks, truncation, every error message, split,
// packing, batching/padding, seeded shuffling and exact resume from a saved cursor.
// Tokenizers: llama2.c tok512 (fixtures/tok512.bin) and SmolLM2's GGUF tokenizer (ChatML).
#define QLORA_IMPLEMENTATION
#include "qlora.h"
#include "tests/qlora_test.h"

static qlora_ctx *ctx;

// Tokens of s (optionally with BOS) into a static buffer.
static size_t tok(const qlora_tokenizer *t, const char *s, int add_special, int32_t *ids, size_t cap) {
    size_t n = 0;
    qlora_result r = qlora_tokenize(t, s, strlen(s), add_special, ids, cap, &n);
    CHECK(r == QLORA_OK);
    return n;
}
// Decoded text of the label-carrying tokens of example i (the loss span), concatenated.
static const char *loss_text(const qlora_tokenizer *t, const qlora_dataset *ds, size_t i) {
    static char out[8192];
    size_t o = 0;
    for (size_t k = ds->off[i]; k < ds->off[i + 1]; k++) {
        int32_t l = ds->labels[k];
        if (l == QLORA_IGNORE_INDEX) continue;
        if (l == qlora_tokenizer_eos(t) || qlora_tokenizer_is_eog(t, l)) { o += (size_t)snprintf(out + o, sizeof out - o, "<eog>"); continue; }
        o += qlora_token_to_piece(t, l, out + o, sizeof out - 1 - o);
    }
    out[o] = 0;
    return out;
}
static size_t count_loss(const qlora_dataset *ds, size_t i) {   // targets after the shift
    size_t c = 0;
    for (size_t k = ds->off[i] + 1; k < ds->off[i + 1]; k++) c += ds->labels[k] != QLORA_IGNORE_INDEX;
    return c;
}
static int err_has(const char *needle) {
    const char *e = qlora_ctx_error(ctx);
    int ok = strstr(e, needle) != NULL;
    if (!ok) fprintf(stderr, "  error was: %s\n  expected to contain: %s\n", e, needle);
    return ok;
}

static void test_formats_misc(void) {
    qlora_data_format f = QLORA_DATA_AUTO;
    CHECK(qlora_data_format_parse(ctx, "alpaca", &f) == QLORA_OK && f == QLORA_DATA_ALPACA);
    CHECK(qlora_data_format_parse(ctx, "fortune", &f) == QLORA_OK && f == QLORA_DATA_FORTUNE);
    CHECK(qlora_data_format_parse(ctx, "csv", &f) == QLORA_ERR_INVALID_ARG);
    CHECK(err_has("unknown data format \"csv\" (valid: auto, text, jsonl, alpaca, chat, fortune)"));
    CHECK(!strcmp(qlora_data_format_name(QLORA_DATA_CHAT), "chat"));
}

static void test_jsonl(const qlora_tokenizer *t) {
    int32_t ref[256];
    qlora_dataset *ds = NULL;
    qlora_data_config cfg = {0};
    CHECK(qlora_dataset_load(ctx, t, "tests/data/tiny.jsonl", &cfg, &ds) == QLORA_OK);
    if (!ds) return;
    CHECK(ds->format == QLORA_DATA_JSONL);             // AUTO: no instruction/messages key
    CHECK(ds->n == 3);                                 // the blank line is skipped
    CHECK(ds->max_seq_length == 256 && ds->pad_id == 2);
    const char *texts[3] = { "Once upon a time there was a cat.", "The dog ran to the park.", "Lily liked red balloons and big trees." };
    size_t total = 0, loss = 0;
    for (size_t i = 0; i < 3 && i < ds->n; i++) {
        size_t n = tok(t, texts[i], 1, ref, 256);      // BOS + text
        ref[n++] = 2;                                  // + EOS
        CHECK(qlora_dataset_length(ds, i) == n);
        CHECK(!memcmp(ds->ids + ds->off[i], ref, n * sizeof *ref));
        CHECK(ds->labels[ds->off[i]] == QLORA_IGNORE_INDEX);   // BOS
        int same = 1;
        for (size_t k = 1; k < n; k++) same &= ds->labels[ds->off[i] + k] == ref[k];
        CHECK(same);
        CHECK(count_loss(ds, i) == n - 1);
        total += n; loss += n - 1;
    }
    CHECK(ds->n_tokens == total && ds->n_loss_tokens == loss);
    size_t n0 = qlora_dataset_length(ds, 0);
    qlora_dataset_free(ds);

    // no_eos, truncation (start kept), max_samples
    cfg.no_eos = 1; cfg.max_seq_length = 6; cfg.max_samples = 2;
    CHECK(qlora_dataset_load(ctx, t, "tests/data/tiny.jsonl", &cfg, &ds) == QLORA_OK);
    if (ds) {
        size_t n = tok(t, texts[0], 1, ref, 256);
        CHECK(n > 6 && n0 == n + 1);
        CHECK(ds->n == 2 && qlora_dataset_length(ds, 0) == 6 && qlora_dataset_length(ds, 1) == 6);
        CHECK(!memcmp(ds->ids, ref, 6 * sizeof *ref));
        CHECK(ds->n_truncated == 2);
        qlora_dataset_free(ds);
    }

    // --field
    memset(&cfg, 0, sizeof cfg);
    cfg.format = QLORA_DATA_JSONL; cfg.field = "content";
    const char *mem = "{\"content\": \"hello world\"}\n";
    CHECK(qlora_dataset_load_memory(ctx, t, "mem.jsonl", mem, strlen(mem), &cfg, &ds) == QLORA_OK);
    if (ds) {
        size_t n = tok(t, "hello world", 1, ref, 256);
        CHECK(ds->n == 1 && qlora_dataset_length(ds, 0) == n + 1 && ds->ids[n] == 2);
        qlora_dataset_free(ds);
    }
    // the field must be a string
    mem = "{\"content\": 42}";
    CHECK(qlora_dataset_load_memory(ctx, t, "num.jsonl", mem, strlen(mem), &cfg, &ds) == QLORA_ERR_FORMAT && !ds);
    CHECK(err_has("num.jsonl:1: field \"content\" is not a string"));
}

static void test_errors(const qlora_tokenizer *t) {
    qlora_dataset *ds = NULL;
    qlora_data_config cfg = {0};
    CHECK(qlora_dataset_load(ctx, t, "tests/data/bad.jsonl", &cfg, &ds) == QLORA_ERR_JSON && !ds);
    CHECK(err_has("tests/data/bad.jsonl:3: malformed JSON: column"));
    CHECK(qlora_dataset_load(ctx, t, "tests/data/missing.jsonl", &cfg, &ds) == QLORA_ERR_FORMAT && !ds);
    CHECK(err_has("tests/data/missing.jsonl:2: missing field \"text\""));
    CHECK(qlora_dataset_load(ctx, t, "tests/data/empty.jsonl", &cfg, &ds) == QLORA_ERR_FORMAT && !ds);
    CHECK(err_has("tests/data/empty.jsonl: empty dataset"));
    CHECK(qlora_dataset_load(ctx, t, "tests/data/no_such_file.jsonl", &cfg, &ds) == QLORA_ERR_IO && !ds);
    CHECK(err_has("tests/data/no_such_file.jsonl: cannot open"));
    const char *mem = "[1, 2]";
    CHECK(qlora_dataset_load_memory(ctx, t, "arr.json", mem, strlen(mem), &cfg, &ds) == QLORA_ERR_FORMAT);
    CHECK(err_has("arr.json: record 1: expected a JSON object"));
    mem = "[{\"text\": \"a\"},";
    CHECK(qlora_dataset_load_memory(ctx, t, "trunc.json", mem, strlen(mem), &cfg, &ds) == QLORA_ERR_JSON);
    CHECK(err_has("trunc.json: malformed JSON: line 1"));
    cfg.max_seq_length = 1;
    CHECK(qlora_dataset_load(ctx, t, "tests/data/tiny.jsonl", &cfg, &ds) == QLORA_ERR_INVALID_ARG);
    CHECK(err_has("max-seq-length 1 must be at least 2"));
}

static void test_alpaca(const qlora_tokenizer *t) {
    static const char *P_IN =
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n### Instruction:\nAdd the numbers.\n\n"
        "### Input:\n2 and 3\n\n### Response:\n";
    static const char *P_NO =
        "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nName a color.\n\n### Response:\n";
    int32_t ref[1024], pref[1024];
    char buf[1024];
    qlora_dataset *ds = NULL, *seed = NULL;
    qlora_data_config cfg = {0};
    CHECK(qlora_dataset_load(ctx, t, "tests/data/alpaca.jsonl", &cfg, &ds) == QLORA_OK);
    if (!ds) return;
    CHECK(ds->format == QLORA_DATA_ALPACA && ds->n == 2);
    const char *prompts[2] = { P_NO, P_IN }, *outs[2] = { "Red.", "5" };
    for (size_t i = 0; i < 2; i++) {
        snprintf(buf, sizeof buf, "%s%s", prompts[i], outs[i]);
        size_t n = tok(t, buf, 1, ref, 1024), np = tok(t, prompts[i], 1, pref, 1024);
        ref[n++] = 2;
        CHECK(qlora_dataset_length(ds, i) == n);
        CHECK(!memcmp(ds->ids + ds->off[i], ref, n * sizeof *ref));
        size_t masked = 0;
        for (size_t k = 0; k < np; k++) masked += ds->labels[ds->off[i] + k] == QLORA_IGNORE_INDEX;
        CHECK(masked == np);                                   // the whole prompt is -100
        CHECK(count_loss(ds, i) == n - np);                    // output + EOS carry the loss
        CHECK(ds->labels[ds->off[i + 1] - 1] == 2);            // EOS is a target
    }
    // hand-checked: the loss span decodes to exactly the response (+ EOS "</s>" piece, empty for
    // tok512's control token), and the prompt of the no-input variant is 70 tok512 tokens.
    CHECK_MSG(!strcmp(loss_text(t, ds, 0), "Red.<eog>"), "got '%s'", loss_text(t, ds, 0));
    CHECK_MSG(!strcmp(loss_text(t, ds, 1), "5<eog>"), "got '%s'", loss_text(t, ds, 1));
    size_t np0 = tok(t, P_NO, 1, pref, 1024);
    fprintf(stderr, "alpaca: prompt (no input) %zu tokens, example 0 %zu tokens, %zu loss tokens\n",
            np0, qlora_dataset_length(ds, 0), count_loss(ds, 0));

    // self-instruct seed format gives the same rows
    CHECK(qlora_dataset_load(ctx, t, "tests/data/seed_format.jsonl", &cfg, &seed) == QLORA_OK);
    if (seed) {
        CHECK(seed->n == 2 && seed->n_tokens == ds->n_tokens);
        CHECK(!memcmp(seed->ids, ds->ids, ds->n_tokens * sizeof *ds->ids));
        CHECK(!memcmp(seed->labels, ds->labels, ds->n_tokens * sizeof *ds->labels));
        qlora_dataset_free(seed);
    }
    // the project's seed tasks (../shared), when present: 175 tasks, one instance each
    if (qt_file_exists("../shared/data/seed_tasks.jsonl")) {
        qlora_data_config c2 = {0};
        c2.max_seq_length = 1024;
        c2.skip_long_prompts = 1;                          // tok512 is nearly byte-level on this text
        CHECK_MSG(qlora_dataset_load(ctx, t, "../shared/data/seed_tasks.jsonl", &c2, &seed) == QLORA_OK, "%s", qlora_ctx_error(ctx));
        if (seed) {
            CHECK(seed->format == QLORA_DATA_ALPACA && seed->n + seed->n_skipped == 175 && seed->n > 150);
            fprintf(stderr, "seed_tasks.jsonl (tok512, T 1024): %zu examples, %zu skipped, %zu tokens, %zu loss tokens, %zu truncated\n",
                    seed->n, seed->n_skipped, seed->n_tokens, seed->n_loss_tokens, seed->n_truncated);
            qlora_dataset_free(seed);
        }
    }

    // max-seq-length smaller than the prompt: an error naming file, line, T and the prompt length
    qlora_dataset *bad = NULL;
    cfg.max_seq_length = 16;
    CHECK(qlora_dataset_load(ctx, t, "tests/data/alpaca.jsonl", &cfg, &bad) == QLORA_ERR_RANGE && !bad);
    snprintf(buf, sizeof buf, "tests/data/alpaca.jsonl:1: max-seq-length 16 is smaller than the prompt (%zu tokens)", np0);
    CHECK(err_has(buf));
    // T == prompt length: still no response token
    cfg.max_seq_length = (int)np0;
    CHECK(qlora_dataset_load(ctx, t, "tests/data/alpaca.jsonl", &cfg, &bad) == QLORA_ERR_RANGE && !bad);
    // one more token: exactly one target (the first response token)
    cfg.max_seq_length = (int)np0 + 1;
    CHECK(qlora_dataset_load(ctx, t, "tests/data/alpaca.jsonl", &cfg, &bad) == QLORA_ERR_RANGE && !bad);
    CHECK(err_has("tests/data/alpaca.jsonl:2:"));   // line 1 fits now, the longer line 2 does not
    // skip instead of failing: counted
    cfg.skip_long_prompts = 1;
    CHECK(qlora_dataset_load(ctx, t, "tests/data/alpaca.jsonl", &cfg, &bad) == QLORA_OK);
    if (bad) {
        CHECK(bad->n == 1 && bad->n_skipped == 1 && count_loss(bad, 0) == 1 && bad->n_truncated == 1);
        qlora_dataset_free(bad);
    }
    cfg.max_seq_length = 16;
    CHECK(qlora_dataset_load(ctx, t, "tests/data/alpaca.jsonl", &cfg, &bad) == QLORA_ERR_FORMAT && !bad);
    CHECK(err_has("tests/data/alpaca.jsonl: empty dataset (no alpaca examples left after skipping"));

    // JSON array file (alpaca_data.json style): errors name the record
    memset(&cfg, 0, sizeof cfg);
    CHECK(qlora_dataset_load(ctx, t, "tests/data/alpaca_array.json", &cfg, &bad) == QLORA_ERR_FORMAT && !bad);
    CHECK(err_has("tests/data/alpaca_array.json: record 2: missing field \"output\""));
    cfg.max_samples = 1;
    CHECK(qlora_dataset_load(ctx, t, "tests/data/alpaca_array.json", &cfg, &bad) == QLORA_OK);
    if (bad) { CHECK(bad->n == 1 && bad->format == QLORA_DATA_ALPACA); qlora_dataset_free(bad); }
    memset(&cfg, 0, sizeof cfg);
    const char *mem = "{\"instruction\": \"x\", \"instances\": [{\"input\": \"\"}]}";
    CHECK(qlora_dataset_load_memory(ctx, t, "si.jsonl", mem, strlen(mem), &cfg, &bad) == QLORA_ERR_FORMAT);
    CHECK(err_has("si.jsonl:1: missing or non-string field \"instances[0].output\""));
    mem = "{\"output\": \"x\"}";
    cfg.format = QLORA_DATA_ALPACA;
    CHECK(qlora_dataset_load_memory(ctx, t, "noins.jsonl", mem, strlen(mem), &cfg, &bad) == QLORA_ERR_FORMAT);
    CHECK(err_has("noins.jsonl:1: missing field \"instruction\""));
    qlora_dataset_free(ds);
}

static void test_chat(const qlora_tokenizer *t) {
    qlora_dataset *ds = NULL, *sg = NULL;
    qlora_data_config cfg = {0};
    CHECK(qlora_dataset_load(ctx, t, "tests/data/chat.jsonl", &cfg, &ds) == QLORA_OK);
    if (!ds) return;
    CHECK(ds->format == QLORA_DATA_CHAT && ds->n == 2);
    int32_t im_end = qlora_tokenizer_find(t, "<|im_end|>"), im_start = qlora_tokenizer_find(t, "<|im_start|>");
    CHECK(im_end >= 0 && im_start >= 0);
    // Example 0: the ids are the tokens of the ChatML rendering, nothing added.
    static const char *R0 =
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nCapital of France?<|im_end|>\n"
        "<|im_start|>assistant\nParis.<|im_end|>\n<|im_start|>user\nAnd of Italy?<|im_end|>\n"
        "<|im_start|>assistant\nRome.<|im_end|>\n";
    int32_t ref[512];
    size_t n = tok(t, R0, 1, ref, 512);
    CHECK(qlora_dataset_length(ds, 0) == n && !memcmp(ds->ids, ref, n * sizeof *ref));
    // loss only on "Paris.<|im_end|>" and "Rome.<|im_end|>"
    CHECK_MSG(!strcmp(loss_text(t, ds, 0), "Paris.<eog>Rome.<eog>"), "got '%s'", loss_text(t, ds, 0));
    // exact mask: the positions are those of the two spans; everything else -100 (incl. the "\n"s)
    size_t a0 = tok(t, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nCapital of France?<|im_end|>\n"
                       "<|im_start|>assistant\n", 1, ref, 512);
    size_t b0 = tok(t, "Paris.", 0, ref, 512) + 1;       // + <|im_end|>
    size_t a1 = tok(t, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nCapital of France?<|im_end|>\n"
                       "<|im_start|>assistant\nParis.<|im_end|>\n<|im_start|>user\nAnd of Italy?<|im_end|>\n"
                       "<|im_start|>assistant\n", 1, ref, 512);
    size_t b1 = tok(t, "Rome.", 0, ref, 512) + 1;
    int exact = 1;
    for (size_t k = 0; k < n; k++) {
        int in = (k >= a0 && k < a0 + b0) || (k >= a1 && k < a1 + b1);
        int32_t want = in ? ds->ids[k] : QLORA_IGNORE_INDEX;
        if (ds->labels[k] != want) { exact = 0; fprintf(stderr, "  chat label %zu: %d want %d\n", k, ds->labels[k], want); }
    }
    CHECK(exact);
    CHECK(ds->labels[a0 + b0 - 1] == im_end && ds->labels[a0 + b0] == QLORA_IGNORE_INDEX);
    CHECK(count_loss(ds, 0) == b0 + b1);
    fprintf(stderr, "chat: example 0 %zu tokens, spans [%zu,%zu) [%zu,%zu)\n", n, a0, a0 + b0, a1, a1 + b1);
    // Example 1 has no system message: SmolLM2's template inserts its default one.
    CHECK_MSG(!strcmp(loss_text(t, ds, 1), "Hello! How can I help?<eog>"), "got '%s'", loss_text(t, ds, 1));
    CHECK(ds->ids[ds->off[1]] == im_start);
    // ShareGPT ("conversations", from human/gpt) == the same "messages" conversation
    CHECK(qlora_dataset_load(ctx, t, "tests/data/sharegpt.jsonl", &cfg, &sg) == QLORA_OK);
    if (sg) {
        size_t l1 = qlora_dataset_length(ds, 1);
        CHECK(sg->n == 1 && qlora_dataset_length(sg, 0) == l1);
        CHECK(!memcmp(sg->ids, ds->ids + ds->off[1], l1 * sizeof *sg->ids));
        CHECK(!memcmp(sg->labels, ds->labels + ds->off[1], l1 * sizeof *sg->labels));
        qlora_dataset_free(sg);
    }
    // a truncated conversation keeps the first assistant turn's start
    cfg.max_seq_length = (int)(a0 + 2);
    cfg.max_samples = 1;
    CHECK(qlora_dataset_load(ctx, t, "tests/data/chat.jsonl", &cfg, &sg) == QLORA_OK);
    if (sg) { CHECK(qlora_dataset_length(sg, 0) == a0 + 2 && count_loss(sg, 0) == 2 && sg->n_truncated == 1); qlora_dataset_free(sg); }
    cfg.max_seq_length = (int)a0;
    CHECK(qlora_dataset_load(ctx, t, "tests/data/chat.jsonl", &cfg, &sg) == QLORA_ERR_RANGE);
    char want[256];
    snprintf(want, sizeof want, "tests/data/chat.jsonl:1: max-seq-length %zu is smaller than the prompt (%zu tokens)", a0, a0);
    CHECK(err_has(want));
    memset(&cfg, 0, sizeof cfg);
    const char *mem = "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}";
    CHECK(qlora_dataset_load_memory(ctx, t, "c.jsonl", mem, strlen(mem), &cfg, &sg) == QLORA_ERR_FORMAT);
    CHECK(err_has("c.jsonl:1: conversation has no assistant message"));
    mem = "\n{\"messages\": [{\"role\": \"user\"}]}";
    CHECK(qlora_dataset_load_memory(ctx, t, "c.jsonl", mem, strlen(mem), &cfg, &sg) == QLORA_ERR_FORMAT);
    CHECK(err_has("c.jsonl:2: messages[0] needs string fields \"role\" and \"content\""));
    mem = "{\"messages\": []}";
    CHECK(qlora_dataset_load_memory(ctx, t, "c.jsonl", mem, strlen(mem), &cfg, &sg) == QLORA_ERR_FORMAT);
    CHECK(err_has("c.jsonl:1: field \"messages\" is not a non-empty array"));
    cfg.format = QLORA_DATA_CHAT;
    mem = "{\"text\": \"x\"}";
    CHECK(qlora_dataset_load_memory(ctx, t, "c.jsonl", mem, strlen(mem), &cfg, &sg) == QLORA_ERR_FORMAT);
    CHECK(err_has("c.jsonl:1: missing field \"messages\""));
    qlora_dataset_free(ds);
}

static void test_fortune_text(const qlora_tokenizer *t) {
    int32_t ref[1024];
    qlora_dataset *ds = NULL;
    qlora_data_config cfg = {0};
    CHECK(qlora_dataset_load(ctx, t, "tests/data/quotes", &cfg, &ds) == QLORA_OK);   // AUTO: a "%" line
    if (ds) {
        CHECK(ds->format == QLORA_DATA_FORTUNE && ds->n == 3);   // the blank record is dropped
        const char *rec[3] = { "A cat in the sun is worth two in the rain.",
                               "The kettle never boils for the impatient cook;\nit simply waits.\n\t-- an old kitchen saying",
                               "Small steps still arrive." };
        for (size_t i = 0; i < 3 && i < ds->n; i++) {
            size_t n = tok(t, rec[i], 1, ref, 1024);
            ref[n++] = 2;
            CHECK_MSG(qlora_dataset_length(ds, i) == n && !memcmp(ds->ids + ds->off[i], ref, n * sizeof *ref), "record %zu", i);
            CHECK(count_loss(ds, i) == n - 1);
        }
        qlora_dataset_free(ds);
    }
    // CRLF fortune from memory, explicit format; a record at EOF without a final "%"
    const char *mem = "one\r\n%\r\ntwo\r\n";
    cfg.format = QLORA_DATA_FORTUNE;
    CHECK(qlora_dataset_load_memory(ctx, t, "f", mem, strlen(mem), &cfg, &ds) == QLORA_OK);
    if (ds) {
        size_t n = tok(t, "two", 1, ref, 1024);
        CHECK(ds->n == 2 && qlora_dataset_length(ds, 1) == n + 1 && !memcmp(ds->ids + ds->off[1], ref, n * sizeof *ref));
        qlora_dataset_free(ds);
    }
    mem = "%\n%\n  \n%\n";
    CHECK(qlora_dataset_load_memory(ctx, t, "f", mem, strlen(mem), &cfg, &ds) == QLORA_ERR_FORMAT);
    CHECK(err_has("f: empty dataset (no fortune examples)"));

    // text: one tokenization cut into T windows, labels = ids (BOS excepted)
    memset(&cfg, 0, sizeof cfg);
    cfg.max_seq_length = 16;
    CHECK(qlora_dataset_load(ctx, t, "tests/data/story.txt", &cfg, &ds) == QLORA_OK);
    if (ds) {
        FILE *f = fopen("tests/data/story.txt", "rb");
        static char text[4096];
        size_t len = f ? fread(text, 1, sizeof text - 1, f) : 0;
        if (f) fclose(f);
        text[len] = 0;
        size_t n = tok(t, text, 1, ref, 1024);
        size_t want_rows = (n - 1 + 15) / 16;                    // windows starting at s with s + 1 < n
        CHECK(ds->format == QLORA_DATA_TEXT && ds->n == want_rows);
        CHECK(ds->n_tokens == n && !memcmp(ds->ids, ref, n * sizeof *ref));
        int ok = 1;
        for (size_t i = 0; i < ds->n; i++) {
            ok &= qlora_dataset_length(ds, i) == (i + 1 < ds->n ? 16 : n - 16 * i);
            for (size_t k = ds->off[i]; k < ds->off[i + 1]; k++) ok &= ds->labels[k] == (k == 0 ? QLORA_IGNORE_INDEX : ds->ids[k]);
        }
        CHECK(ok);
        CHECK(ds->n_truncated == 0);
        fprintf(stderr, "text: story.txt %zu tokens -> %zu windows of 16\n", n, ds->n);
        qlora_dataset_free(ds);
    }
}

// 10 one-line examples of distinct lengths, for split/pack/batch/shuffle tests.
static qlora_dataset *ten(const qlora_tokenizer *t, int T) {
    static char mem[2048];
    size_t o = 0;
    const char *w[10] = { "a", "the cat", "the big dog", "one two three four", "Lily and Tom went home",
                          "a b", "red green blue", "x y z w v", "sun", "the little bird sang a song today" };
    for (int i = 0; i < 10; i++) o += (size_t)snprintf(mem + o, sizeof mem - o, "{\"text\": \"%s\"}\n", w[i]);
    qlora_data_config cfg = {0};
    cfg.max_seq_length = T;
    qlora_dataset *ds = NULL;
    CHECK(qlora_dataset_load_memory(ctx, t, "ten.jsonl", mem, o, &cfg, &ds) == QLORA_OK);
    return ds;
}

static void test_split_pack(const qlora_tokenizer *t) {
    qlora_dataset *ds = ten(t, 64), *tr = NULL, *ev = NULL, *tr2 = NULL, *ev2 = NULL, *p = NULL;
    if (!ds) return;
    CHECK(qlora_dataset_split(ctx, ds, 0.2, 42, &tr, &ev) == QLORA_OK);
    if (tr && ev) {
        CHECK(tr->n == 8 && ev->n == 2);                         // ceil(0.2 * 10) held out
        CHECK(tr->n_tokens + ev->n_tokens == ds->n_tokens);
        CHECK(tr->n_loss_tokens + ev->n_loss_tokens == ds->n_loss_tokens);
        CHECK(qlora_dataset_split(ctx, ds, 0.2, 42, &tr2, &ev2) == QLORA_OK);
        if (ev2) CHECK(ev2->n_tokens == ev->n_tokens && !memcmp(ev2->ids, ev->ids, ev->n_tokens * 4));
        qlora_dataset_free(tr2); qlora_dataset_free(ev2);
        int differs = 0;                                         // some other seed picks other rows
        for (uint64_t s = 1; s < 6 && !differs; s++) {
            CHECK(qlora_dataset_split(ctx, ds, 0.2, s, &tr2, &ev2) == QLORA_OK);
            if (ev2) differs = ev2->n_tokens != ev->n_tokens || memcmp(ev2->ids, ev->ids, ev->n_tokens * 4);
            qlora_dataset_free(tr2); qlora_dataset_free(ev2);
        }
        CHECK(differs);
    }
    qlora_dataset_free(tr); qlora_dataset_free(ev);
    CHECK(qlora_dataset_split(ctx, ds, 0.01, 1, &tr, &ev) == QLORA_OK);   // ceil -> 1 row
    if (ev) CHECK(ev->n == 1 && tr->n == 9);
    qlora_dataset_free(tr); qlora_dataset_free(ev);
    CHECK(qlora_dataset_split(ctx, ds, 0.95, 1, &tr, &ev) == QLORA_ERR_RANGE && !tr && !ev);
    CHECK(err_has("validation-split 0.95 of 10 examples leaves 0 for training and 10 for eval"));
    CHECK(qlora_dataset_split(ctx, ds, 1.5, 1, &tr, &ev) == QLORA_ERR_INVALID_ARG);

    // packing: the concatenation cut into full windows of 8; the last one shorter
    CHECK(qlora_dataset_pack(ctx, ds, 8, &p) == QLORA_OK);
    if (p) {
        size_t N = ds->n_tokens;
        CHECK(p->packed && p->n == (N + 7) / 8 && p->n_tokens == N);
        CHECK(!memcmp(p->ids, ds->ids, N * 4) && !memcmp(p->labels, ds->labels, N * 4));
        int full = 1;
        for (size_t i = 0; i + 1 < p->n; i++) full &= qlora_dataset_length(p, i) == 8;
        CHECK(full && qlora_dataset_length(p, p->n - 1) == N - 8 * (p->n - 1));
        // every window start loses its target (nothing before it in the row)
        size_t lost = 0;
        for (size_t i = 1; i < p->n; i++) lost += ds->labels[p->off[i]] != QLORA_IGNORE_INDEX;
        CHECK(p->n_loss_tokens + lost == ds->n_loss_tokens);
        fprintf(stderr, "packing: %zu examples, %zu tokens -> %zu windows of 8\n", ds->n, N, p->n);
        qlora_dataset_free(p);
    }
    qlora_dataset_free(ds);
}

// Rows of batch b as example indices of ds (by matching the row to an example).
static int row_example(const qlora_dataset *ds, const qlora_batch *b, int r) {
    for (size_t i = 0; i < ds->n; i++) {
        size_t len = qlora_dataset_length(ds, i);
        if ((size_t)b->lengths[r] == len && !memcmp(b->ids + (size_t)r * b->T, ds->ids + ds->off[i], len * 4)) return (int)i;
    }
    return -1;
}

static void test_batches(const qlora_tokenizer *t) {
    qlora_dataset *ds = ten(t, 64);
    if (!ds) return;
    qlora_batch b;
    CHECK(qlora_batch_init(ctx, &b, 0, 64) == QLORA_ERR_INVALID_ARG && !b.ids);
    CHECK(qlora_batch_init(ctx, &b, 4, 64) == QLORA_OK);
    qlora_data_loader L;
    // eval order: no shuffle, no repeat, last batch smaller, then 0
    CHECK(qlora_loader_init(ctx, &L, ds, 4, 0, 0, 0) == QLORA_OK);
    CHECK(qlora_loader_batches_per_epoch(&L) == 3);
    int rows[4], k = 0, r;
    while ((r = qlora_loader_next(&L, &b)) > 0 && k < 4) {
        rows[k++] = r;
        int ok = 1, T = 0;
        for (int i = 0; i < r; i++) {
            ok &= row_example(ds, &b, i) == 4 * (k - 1) + i;       // file order
            T = QLORA__MAX(T, b.lengths[i]);
        }
        CHECK(ok && b.T == T);                                      // as wide as the longest row
        size_t nl = 0;
        for (int i = 0; i < r; i++) {
            for (int c = b.lengths[i]; c < b.T; c++) ok &= b.ids[i * b.T + c] == 2 && b.labels[i * b.T + c] == QLORA_IGNORE_INDEX;
            for (int c = 1; c < b.lengths[i]; c++) nl += b.labels[i * b.T + c] != QLORA_IGNORE_INDEX;
        }
        CHECK(ok && nl == b.n_loss);                                // pad = EOS with label -100
    }
    CHECK(k == 3 && rows[0] == 4 && rows[1] == 4 && rows[2] == 2 && r == 0);
    CHECK(qlora_loader_next(&L, &b) == 0);
    qlora_loader_rewind(&L);
    CHECK(qlora_loader_next(&L, &b) == 4 && row_example(ds, &b, 0) == 0);
    L.pad_to_max = 1;
    CHECK(qlora_loader_next(&L, &b) == 4 && b.T == 64 && row_example(ds, &b, 3) == 7);
    qlora_loader_free(&L);

    // shuffled training stream: each epoch a permutation; same seed, same stream
    qlora_data_loader A, B2;
    CHECK(qlora_loader_init(ctx, &A, ds, 3, 1, 1, 1234) == QLORA_OK);
    CHECK(qlora_loader_init(ctx, &B2, ds, 3, 1, 1, 1234) == QLORA_OK);
    int seqA[64], seqB[64], n = 0, perm_ok = 1, same = 1;
    qlora_batch b2;
    CHECK(qlora_batch_init(ctx, &b2, 3, 64) == QLORA_OK);
    for (int ep = 0; ep < 3; ep++) {
        int seen[10] = {0};
        for (int s = 0; s < 4; s++) {                               // 4 batches per epoch: 3+3+3+1
            int ra = qlora_loader_next(&A, &b), rb = qlora_loader_next(&B2, &b2);
            CHECK(ra == (s < 3 ? 3 : 1) && ra == rb);
            for (int i = 0; i < ra; i++) {
                seqA[n] = row_example(ds, &b, i); seqB[n] = row_example(ds, &b2, i);
                if (seqA[n] >= 0) seen[seqA[n]]++;
                same &= seqA[n] == seqB[n];
                n++;
            }
        }
        for (int i = 0; i < 10; i++) perm_ok &= seen[i] == 1;
        CHECK(A.cur.epoch == (uint64_t)ep && A.cur.pos == 10);
    }
    CHECK(n == 30 && perm_ok && same);
    int shuffled = 0, epochs_differ = 0;
    for (int i = 0; i < 10; i++) { shuffled |= seqA[i] != i; epochs_differ |= seqA[i] != seqA[10 + i]; }
    CHECK(shuffled && epochs_differ);
    fprintf(stderr, "shuffle seed 1234 epoch 0:");
    for (int i = 0; i < 10; i++) fprintf(stderr, " %d", seqA[i]);
    fprintf(stderr, "\n");
    qlora_loader_free(&B2);
    CHECK(qlora_loader_init(ctx, &B2, ds, 3, 1, 1, 99) == QLORA_OK);   // another seed, another order
    int other = 0;
    for (int s = 0; s < 4; s++) { int rb = qlora_loader_next(&B2, &b2); for (int i = 0; i < rb; i++) other |= row_example(ds, &b2, i) != seqA[3 * s + i]; }
    CHECK(other);
    qlora_loader_free(&B2);

    // exact resume: save the cursor mid-epoch, take 7 batches, restore into a fresh loader
    qlora_data_cursor c = qlora_loader_cursor(&A);
    qlora_loader_next(&A, &b); qlora_loader_next(&A, &b);       // move mid-epoch
    c = qlora_loader_cursor(&A);
    CHECK(c.epoch == 3 && c.pos == 6 && c.seed == 1234 && c.rows == 10);
    int32_t want[7][3 * 64];
    int wr[7];
    for (int s = 0; s < 7; s++) { wr[s] = qlora_loader_next(&A, &b); memcpy(want[s], b.ids, (size_t)wr[s] * (size_t)b.T * 4); }
    CHECK(qlora_loader_init(ctx, &B2, ds, 3, 1, 1, 777) == QLORA_OK);   // seed comes from the cursor
    qlora_loader_next(&B2, &b2);                                       // some unrelated state
    CHECK(qlora_loader_restore(ctx, &B2, c) == QLORA_OK);
    int resumed = 1;
    for (int s = 0; s < 7; s++) {
        int rb = qlora_loader_next(&B2, &b2);
        resumed &= rb == wr[s] && !memcmp(want[s], b2.ids, (size_t)rb * (size_t)b2.T * 4);
    }
    CHECK(resumed);
    CHECK(B2.cur.epoch == A.cur.epoch && B2.cur.pos == A.cur.pos);
    qlora_data_cursor bad = c;
    bad.rows = 12;
    CHECK(qlora_loader_restore(ctx, &B2, bad) == QLORA_ERR_RANGE);
    CHECK(err_has("data cursor was saved for 12 rows but ten.jsonl has 10: different data or settings?"));
    c.pos = 11; c.rows = 0;
    CHECK(qlora_loader_restore(ctx, &B2, c) == QLORA_ERR_RANGE);
    CHECK(err_has("data cursor position 11 is past the dataset (10 rows)"));
    // a cursor saved at the end of an epoch resumes into the next one
    c.epoch = 5; c.pos = 10; c.seed = 1234;
    CHECK(qlora_loader_restore(ctx, &B2, c) == QLORA_OK && qlora_loader_next(&B2, &b2) == 3 && B2.cur.epoch == 6 && B2.cur.pos == 3);
    qlora_loader_free(&A); qlora_loader_free(&B2);
    qlora_batch_free(&b2);

    // rows longer than the batch are cut to T_cap
    qlora_batch small;
    CHECK(qlora_batch_init(ctx, &small, 10, 4) == QLORA_OK);
    CHECK(qlora_loader_init(ctx, &L, ds, 10, 0, 0, 0) == QLORA_OK);
    CHECK(qlora_loader_next(&L, &small) == 10 && small.T == 4);
    qlora_loader_free(&L);
    qlora_batch_free(&small);
    qlora_batch_free(&b);
    qlora_dataset_free(ds);
}

static void test_prepare(const qlora_tokenizer *t) {
    qlora_dataset *tr = NULL, *ev = NULL;
    qlora_data_config cfg = {0};
    cfg.validation_split = 0.25; cfg.seed = 42; cfg.packing = 1; cfg.max_seq_length = 32;
    CHECK(qlora_data_prepare(ctx, t, "tests/data/quotes", NULL, &cfg, &tr, &ev) == QLORA_OK);
    if (tr && ev) {
        CHECK(tr->packed && ev->packed && ev->n >= 1 && tr->n >= 1);
        qlora_dataset *all = NULL;
        qlora_data_config c2 = {0};
        c2.max_seq_length = 32;
        CHECK(qlora_dataset_load(ctx, t, "tests/data/quotes", &c2, &all) == QLORA_OK);
        if (all) { CHECK(tr->n_tokens + ev->n_tokens == all->n_tokens); qlora_dataset_free(all); }
    }
    qlora_dataset_free(tr); qlora_dataset_free(ev);
    memset(&cfg, 0, sizeof cfg);
    cfg.max_samples = 1;
    CHECK(qlora_data_prepare(ctx, t, "tests/data/tiny.jsonl", "tests/data/quotes", &cfg, &tr, &ev) == QLORA_OK);
    if (tr && ev) CHECK(tr->n == 1 && ev->n == 3 && ev->format == QLORA_DATA_FORTUNE);   // max_samples: train only
    qlora_dataset_free(tr); qlora_dataset_free(ev);
    CHECK(qlora_data_prepare(ctx, t, "tests/data/tiny.jsonl", NULL, &cfg, &tr, &ev) == QLORA_OK);
    if (tr) CHECK(tr->n == 1 && ev == NULL);
    qlora_dataset_free(tr);
    CHECK(qlora_data_prepare(ctx, t, "tests/data/tiny.jsonl", "tests/data/bad.jsonl", &cfg, &tr, &ev) == QLORA_ERR_JSON && !tr && !ev);
    CHECK(err_has("tests/data/bad.jsonl:3: malformed JSON"));
}

int main(void) {
    qlora_ctx_config cc = {0};
    cc.n_threads = 1;
    if (qlora_ctx_create(&cc, &ctx) != QLORA_OK) return 1;
    test_formats_misc();
    qlora_tokenizer *t = NULL;
    if (!qt_file_exists("fixtures/tok512.bin")) qt_missing("fixtures/tok512.bin");
    else if (qlora_tokenizer_load_llama2c(ctx, "fixtures/tok512.bin", 512, &t) != QLORA_OK) {
        fprintf(stderr, "tok512: %s\n", qlora_ctx_error(ctx)); CHECK(0);
    } else {
        test_jsonl(t);
        test_errors(t);
        test_alpaca(t);
        test_fortune_text(t);
        test_split_pack(t);
        test_batches(t);
        test_prepare(t);
        qlora_tokenizer_free(t);
    }
    const char *smol = "models/SmolLM2-135M-Instruct-Q4_1.gguf";
    qlora_gguf *g = NULL;
    if (!qt_file_exists(smol)) qt_missing(smol);
    else if (qlora_gguf_open(ctx, smol, &g) != QLORA_OK || qlora_tokenizer_from_gguf(ctx, g, &t) != QLORA_OK) {
        fprintf(stderr, "smollm2: %s\n", qlora_ctx_error(ctx)); CHECK(0);
    } else {
        test_chat(t);
        qlora_tokenizer_free(t);
    }
    qlora_gguf_close(g);
    qlora_ctx_destroy(ctx);
    return QT_DONE("test_data");
}
