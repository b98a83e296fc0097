// Tokenizer tests: llama.cpp's own vocab fixtures (every case of ggml-vocab-{llama-spm,gpt-2}.gguf
// .inp/.out must encode to exactly the listed ids), llama2.c tok512 against run.c's algorithm,
// SmolLM2's GGUF tokenizer against ids from HF `tokenizers` (tests/ref/make_tokenizer_golden.py),
// a tokenizer.json built from the gpt-2 vocab, decode round trips, ChatML rendering.
#define QLORA_IMPLEMENTATION
#include "qlora.h"
#include "tests/qlora_test.h"
#include <sys/stat.h>
#include <time.h>

static char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = (char *)malloc((size_t)sz + 1);
    if (p && fread(p, 1, (size_t)sz, f) != (size_t)sz) { free(p); p = NULL; }
    fclose(f);
    if (p) { p[sz] = 0; *n = (size_t)sz; }
    return p;
}
static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

// Encode text, compare with want[0..nwant), and check decode(encode(text)) == text.
static int check_case(const qlora_tokenizer *t, const char *label, const char *text, size_t len, int add_special,
                      const int32_t *want, size_t nwant, int check_roundtrip) {
    int32_t ids[4096];
    size_t n = 0;
    int ok = 1;
    qlora_result r = qlora_tokenize(t, len ? text : "", len, add_special, ids, 4096, &n);   // len 0 = strlen
    CHECK_MSG(r == QLORA_OK, "%s: tokenize returned %d", label, (int)r);
    if (want) {
        int same = n == nwant;
        for (size_t i = 0; same && i < n; i++) same = ids[i] == want[i];
        CHECK_MSG(same, "%s: %zu ids, expected %zu", label, n, nwant);
        if (!same) {
            ok = 0;
            fprintf(stderr, "  text: '%.*s'\n  got: ", (int)len, text);
            for (size_t i = 0; i < n; i++) fprintf(stderr, "%d ", ids[i]);
            fprintf(stderr, "\n  want:");
            for (size_t i = 0; i < nwant; i++) fprintf(stderr, " %d", want[i]);
            fprintf(stderr, "\n");
        }
    }
    if (check_roundtrip) {
        static char dec[65536];
        size_t dl = 0;
        r = qlora_detokenize(t, ids, n, dec, sizeof dec, &dl);
        int same = r == QLORA_OK && dl == len && !memcmp(dec, text, len);
        CHECK_MSG(same, "%s: decode(encode(x)) != x: got '%.*s' (%zu bytes), want %zu bytes", label, (int)dl, dec, dl, len);
        if (!same) ok = 0;
    }
    return ok;
}

static void json_str(FILE *f, const char *s, size_t n);

// Random bytes (invalid UTF-8 included) must tokenize without error and decode without error;
// valid-UTF-8-only byte-level BPE must round trip exactly (checked on the printable subset).
static void fuzz_tokenizer(const qlora_tokenizer *t, const char *label) {
    uint32_t rng = 12345;
    int bad = 0, rt_bad = 0;
    for (int it = 0; it < 300; it++) {
        char text[96], dec[4096];
        size_t len = 1 + (size_t)(it % 95), n = 0, dl = 0;
        int ascii = it & 1;
        for (size_t i = 0; i < len; i++) {
            rng = rng * 1664525u + 1013904223u;
            text[i] = ascii ? (char)(' ' + (rng >> 24) % 95) : (char)(1 + (rng >> 24) % 255);
        }
        int32_t ids[512];
        if (qlora_tokenize(t, text, len, 1, ids, 512, &n) != QLORA_OK) { bad++; continue; }
        for (size_t i = 0; i < n; i++) if (ids[i] < 0 || ids[i] >= qlora_tokenizer_n_vocab(t)) bad++;
        if (qlora_detokenize(t, ids, n, dec, sizeof dec, &dl) != QLORA_OK) bad++;
        else if (ascii && !strstr(text, "<") && (dl != len || memcmp(dec, text, len))) rt_bad++;
    }
    CHECK_MSG(bad == 0, "%s: %d fuzz failures", label, bad);
    CHECK_MSG(rt_bad == 0, "%s: %d printable-ASCII round trip failures", label, rt_bad);
}
static int write_hf_spm_json(const qlora_tokenizer *spm, const char *dir);

// ggml-vocab-*.gguf + .inp (cases separated by "\n__ggml_vocab_test__\n") + .out (one line of ids per case)
static void test_vocab_fixture(const char *name) {
    char gpath[200], ipath[256], opath[256];
    snprintf(gpath, sizeof gpath, "fixtures/ggml-vocab-%s.gguf", name);
    snprintf(ipath, sizeof ipath, "%s.inp", gpath);
    snprintf(opath, sizeof opath, "%s.out", gpath);
    size_t ni = 0, no = 0;
    char *inp = read_all(ipath, &ni), *outp = read_all(opath, &no);
    if (!inp || !outp || !qt_file_exists(gpath)) { qt_missing(gpath); free(inp); free(outp); return; }
    qlora_ctx *ctx = NULL;
    qlora_ctx_config cc; memset(&cc, 0, sizeof cc); cc.n_threads = 1;
    CHECK(qlora_ctx_create(&cc, &ctx) == QLORA_OK);
    qlora_gguf *g = NULL;
    qlora_tokenizer *t = NULL;
    CHECK(qlora_gguf_open(ctx, gpath, &g) == QLORA_OK);
    double t0 = now_ms();
    qlora_result r = g ? qlora_tokenizer_from_gguf(ctx, g, &t) : QLORA_ERR_IO;
    double t1 = now_ms();
    CHECK_MSG(r == QLORA_OK, "%s: %s", gpath, qlora_ctx_error(ctx));
    if (r == QLORA_OK) {
        static const char sep[] = "\n__ggml_vocab_test__\n";
        const char *p = inp, *e = inp + ni, *ol = outp, *oe = outp + no;
        int ncase = 0, nok = 0;
        while (p < e && ol < oe) {
            const char *q = strstr(p, sep);
            if (!q) break;
            const char *nl = (const char *)memchr(ol, '\n', (size_t)(oe - ol));
            if (!nl) nl = oe;
            int32_t want[1024];
            size_t nw = 0;
            for (const char *s = ol; s < nl;) {
                char *end;
                long v = strtol(s, &end, 10);
                if (end == s) break;
                want[nw++] = (int32_t)v;
                s = end;
            }
            char label[64];
            snprintf(label, sizeof label, "%s case %d", name, ncase);
            nok += check_case(t, label, p, (size_t)(q - p), 0, want, nw, 1);
            ncase++;
            p = q + sizeof sep - 1;
            ol = nl + 1;
        }
        fprintf(stderr, "%s: %d/%d fixture cases exact (+ round trip); load %.1f ms\n", name, nok, ncase, t1 - t0);
        CHECK(ncase >= 40);
        fuzz_tokenizer(t, name);
        if (qlora_tokenizer_kind(t) == QLORA_TOK_SPM) {
            // special tokens in the text; "▁" prefix again after each (llama.cpp is_prev_special)
            static const int32_t w1[] = { 1, 15043, 2 }, w2[] = { 1, 15043, 2787 };
            check_case(t, "spm <s>Hello</s>", "<s>Hello</s>", 12, 0, w1, 3, 0);
            check_case(t, "spm BOS + Hello World", "Hello World", 11, 1, w2, 3, 1);   // decode drops the prefix space
            CHECK(qlora_tokenizer_bos(t) == 1 && qlora_tokenizer_eos(t) == 2 && qlora_tokenizer_is_eog(t, 2));
            char piece[16];
            CHECK(qlora_token_to_piece(t, 15043, piece, sizeof piece) == 6 && !memcmp(piece, " Hello", 6));
            CHECK(qlora_token_to_piece(t, 13, piece, sizeof piece) == 1 && piece[0] == '\n');   // <0x0A>
            // the same vocab as a byte_fallback tokenizer.json must give the same ids
            qlora_tokenizer *h = NULL;
            if (write_hf_spm_json(t, "build/tok_hf_spm")) {
                CHECK_MSG(qlora_tokenizer_load_hf(ctx, "build/tok_hf_spm/tokenizer.json", &h) == QLORA_OK, "%s", qlora_ctx_error(ctx));
                const char *hp = inp;
                const char *hol = outp;
                int hn = 0, hok = 0;
                while (h && hp < e && hol < oe) {
                    const char *q = strstr(hp, sep), *nl = (const char *)memchr(hol, '\n', (size_t)(oe - hol));
                    if (!q || !nl) break;
                    int32_t want[1024];
                    size_t nw = 0;
                    for (const char *z = hol; z < nl;) { char *end; long v = strtol(z, &end, 10); if (end == z) break; want[nw++] = (int32_t)v; z = end; }
                    hok += check_case(h, "hf spm (byte_fallback)", hp, (size_t)(q - hp), 0, want, nw, 1);
                    hn++;
                    hp = q + sizeof sep - 1; hol = nl + 1;
                }
                fprintf(stderr, "hf spm tokenizer.json (byte_fallback): %d/%d fixture cases exact\n", hok, hn);
                CHECK(h && hn >= 40 && hok == hn && qlora_tokenizer_bos(h) == 1 && qlora_tokenizer_kind(h) == QLORA_TOK_SPM);
                qlora_tokenizer_free(h);
            }
        } else {
            CHECK(qlora_tokenizer_bos(t) == 50256 && qlora_tokenizer_find(t, "Hello") == 15496);
            char piece[16];
            CHECK(qlora_token_to_piece(t, 18435, piece, sizeof piece) == 6 && !memcmp(piece, " Hello", 6));
        }
    }
    qlora_tokenizer_free(t);
    qlora_gguf_close(g);
    qlora_ctx_destroy(ctx);
    free(inp); free(outp);
}

// tests/ref/tokenizer_golden.txt: "<tag> <hex> : <ids>"; runs every line with the given tag.
static int test_golden_lines(const qlora_tokenizer *t, const char *tag, int add_special, int roundtrip) {
    size_t n = 0;
    char *txt = read_all("tests/ref/tokenizer_golden.txt", &n);
    if (!txt) { qt_missing("tests/ref/tokenizer_golden.txt"); return 0; }
    int ncase = 0, nok = 0;
    size_t tl = strlen(tag);
    for (char *line = strtok(txt, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, tag, tl) || line[tl] != ' ') continue;
        char *hex = line + tl + 1, *colon = strstr(hex, " : ");
        if (!colon) continue;
        static char text[8192];
        size_t len = 0;
        for (char *h = hex; h + 1 < colon && len < sizeof text; h += 2) {
            unsigned v;
            sscanf(h, "%2x", &v);
            text[len++] = (char)v;
        }
        int32_t want[2048];
        size_t nw = 0;
        for (char *q = colon + 3; *q;) {
            char *end;
            long v = strtol(q, &end, 10);
            if (end == q) break;
            want[nw++] = (int32_t)v;
            q = end;
        }
        char label[64];
        snprintf(label, sizeof label, "%s golden line %d", tag, ncase);
        text[len] = 0;
        // round trip only where no control token (which decodes to nothing) is in the text
        nok += check_case(t, label, text, len, add_special, want, nw, roundtrip && !strstr(text, "<|"));
        ncase++;
    }
    free(txt);
    return ncase;
}

static void test_llama2c(void) {
    const char *path = "fixtures/tok512.bin";
    if (!qt_file_exists(path)) { qt_missing(path); return; }
    qlora_ctx *ctx = NULL;
    qlora_ctx_config cc; memset(&cc, 0, sizeof cc); cc.n_threads = 1;
    qlora_ctx_create(&cc, &ctx);
    qlora_tokenizer *t = NULL;
    CHECK_MSG(qlora_tokenizer_load_llama2c(ctx, path, 512, &t) == QLORA_OK, "%s", qlora_ctx_error(ctx));
    if (!t) { qlora_ctx_destroy(ctx); return; }
    CHECK(qlora_tokenizer_n_vocab(t) == 512);
    CHECK(qlora_tokenizer_kind(t) == QLORA_TOK_SPM);
    CHECK(qlora_tokenizer_bos(t) == 1 && qlora_tokenizer_eos(t) == 2);
    CHECK(qlora_tokenizer_is_eog(t, 2) && !qlora_tokenizer_is_eog(t, 1));
    // vocab_size 0 = read to the end of the file: tok512.bin holds exactly 512 tokens
    qlora_tokenizer *t0 = NULL;
    CHECK(qlora_tokenizer_load_llama2c(ctx, path, 0, &t0) == QLORA_OK && qlora_tokenizer_n_vocab(t0) == 512);
    qlora_tokenizer_free(t0);
    CHECK(qlora_tokenizer_load_llama2c(ctx, path, 100000, &t0) == QLORA_ERR_FORMAT && t0 == NULL);
    // ids from a transcription of run.c encode() (tests/ref/make_tokenizer_golden.py)
    fuzz_tokenizer(t, "llama2c");
    int ncase = test_golden_lines(t, "l2c", 1, 1);
    CHECK(ncase >= 7);
    // stories260K README: the greedy story starts "Once upon a time, ... Lily." = these ids
    static const int32_t story[16] = { 1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426 };
    char text[256];
    size_t len = 0;
    CHECK(qlora_detokenize(t, story, 16, text, sizeof text, &len) == QLORA_OK);
    CHECK_MSG(!strcmp(text, "Once upon a time, there was a little girl named Lily."), "decoded '%s'", text);
    check_case(t, "stories260K first sentence", text, len, 1, story, 16, 1);
    // byte fallback: U+1F999 is not in the 512-token vocab -> <0xF0><0x9F><0xA6><0x99> = byte + 3
    int32_t ids[16];
    size_t n = 0;
    CHECK(qlora_tokenize(t, "\xf0\x9f\xa6\x99", 4, 0, ids, 16, &n) == QLORA_OK);
    CHECK(n == 5 && ids[1] == 0xF0 + 3 && ids[2] == 0x9F + 3 && ids[3] == 0xA6 + 3 && ids[4] == 0x99 + 3);
    char piece[16];
    CHECK(qlora_token_to_piece(t, 0xF0 + 3, piece, sizeof piece) == 1 && (uint8_t)piece[0] == 0xF0);
    CHECK(qlora_token_to_piece(t, 1, piece, sizeof piece) == 0);     // BOS decodes to nothing
    // capacity: too small -> QLORA_ERR_RANGE with the needed count
    CHECK(qlora_tokenize(t, "Hello world", 0, 1, ids, 2, &n) == QLORA_ERR_RANGE && n == 7 && ids[0] == 1);
    CHECK(qlora_tokenize(t, "Hello world", 0, 1, NULL, 0, &n) == QLORA_ERR_RANGE && n == 7);
    // Llama-2 chat fallback (no <|im_start|> in this vocab)
    qlora_chat_msg msgs[3] = { { "system", "Be brief." }, { "user", "Hi" }, { "assistant", "Hello" } };
    char chat[256];
    size_t need = qlora_chat_render(t, msgs, 3, 1, chat, sizeof chat);
    CHECK_MSG(!strcmp(chat, "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]Hello</s>"), "'%s'", chat);
    CHECK(need == strlen(chat));
    // a long text (the heap makes this O(n log n); run.c's rescan is O(n^2))
    size_t sn = 0;
    char *sh = read_all("fixtures/tinyshakespeare.txt", &sn);
    if (sh) {
        size_t cap = sn + 16;
        int32_t *big = (int32_t *)malloc(cap * sizeof *big);
        double t1 = now_ms();
        qlora_result r = qlora_tokenize(t, sh, 200000, 1, big, cap, &n);
        double t2 = now_ms();
        CHECK(r == QLORA_OK && n > 50000 && n < 200000);
        char *back = (char *)malloc(200001);
        size_t bl = 0;
        CHECK(qlora_detokenize(t, big, n, back, 200001, &bl) == QLORA_OK && bl == 200000 && !memcmp(back, sh, 200000));
        fprintf(stderr, "llama2c: 200000 bytes of tinyshakespeare -> %zu tokens in %.1f ms, round trip exact\n", n, t2 - t1);
        free(back); free(big); free(sh);
    }
    qlora_tokenizer_free(t);
    qlora_ctx_destroy(ctx);
}

// The real model's tokenizer: llama.cpp ids for the golden strings, ChatML, the NLL text.
static void test_smollm2(void) {
    const char *path = "models/SmolLM2-135M-Instruct-Q4_1.gguf";
    if (!qt_file_exists(path)) { qt_missing(path); return; }
    qlora_ctx *ctx = NULL;
    qlora_ctx_config cc; memset(&cc, 0, sizeof cc); cc.n_threads = 1;
    qlora_ctx_create(&cc, &ctx);
    qlora_gguf *g = NULL;
    qlora_tokenizer *t = NULL;
    CHECK(qlora_gguf_open(ctx, path, &g) == QLORA_OK);
    double t0 = now_ms();
    CHECK_MSG(g && qlora_tokenizer_from_gguf(ctx, g, &t) == QLORA_OK, "%s", qlora_ctx_error(ctx));
    double t1 = now_ms();
    qlora_gguf_close(g);                                       // the tokenizer owns its copies
    if (!t) { qlora_ctx_destroy(ctx); return; }
    fprintf(stderr, "smollm2: tokenizer (49152 tokens, 48900 merges) loaded in %.1f ms\n", t1 - t0);
    CHECK(t1 - t0 < 100.0);
    CHECK(qlora_tokenizer_kind(t) == QLORA_TOK_BPE && qlora_tokenizer_n_vocab(t) == 49152);
    CHECK(qlora_tokenizer_find(t, "<|im_start|>") == 1 && qlora_tokenizer_find(t, "<|im_end|>") == 2);
    CHECK(qlora_tokenizer_bos(t) == 1 && qlora_tokenizer_eos(t) == 2);
    CHECK(qlora_tokenizer_is_eog(t, 2) && qlora_tokenizer_is_eog(t, 0) && !qlora_tokenizer_is_eog(t, 1) && !qlora_tokenizer_is_eog(t, 198));
    fuzz_tokenizer(t, "smollm2");
    int ncase = test_golden_lines(t, "smol", 0, 1);
    CHECK(ncase >= 50);
    int32_t ids[512];
    size_t n = 0;
    // ChatML exactly as SmolLM2's chat_template, then llama.cpp's ids for it (smollm2_llamacpp.txt prompt a)
    qlora_chat_msg msgs[1] = { { "user", "What is the capital of France?" } };
    char chat[512];
    size_t need = qlora_chat_render(t, msgs, 1, 1, chat, sizeof chat);
    const char *want_chat = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
                            "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";
    CHECK_MSG(!strcmp(chat, want_chat), "chat: '%s'", chat);
    CHECK(need == strlen(want_chat));
    CHECK(qlora_chat_render(t, msgs, 1, 1, NULL, 0) == need);          // size query
    static const int32_t want_ids[] = { 1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407, 19712,
                                        8182, 2, 198, 1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198 };
    check_case(t, "smollm2 chatml prompt", chat, need, 1, want_ids, sizeof want_ids / sizeof want_ids[0], 0);
    CHECK(qlora_tokenize(t, chat, need, 1, ids, 512, &n) == QLORA_OK && n > 0 && ids[0] == 1);   // add_bos is false
    // a system message given: no default one; no generation prompt
    qlora_chat_msg two[2] = { { "system", "S" }, { "user", "U" } };
    qlora_chat_render(t, two, 2, 0, chat, sizeof chat);
    CHECK_MSG(!strcmp(chat, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"), "'%s'", chat);
    // decoding: control tokens vanish, byte-level pieces map back to bytes
    char text[256];
    size_t len = 0;
    CHECK(qlora_detokenize(t, want_ids + 21, 16, text, sizeof text, &len) == QLORA_OK);
    CHECK_MSG(!strcmp(text, "user\nWhat is the capital of France?\nassistant\n"), "'%s'", text);
    CHECK(qlora_detokenize(t, want_ids, 37, text, 8, &len) == QLORA_ERR_RANGE && len > 8 && strlen(text) == 7);
    // the NLL text of tests/ref/smollm2_llamacpp.txt: last 10% of tinyshakespeare from a line start,
    // 35981 tokens in llama.cpp, first 4 x 128 of them listed
    size_t sn = 0, rn = 0;
    char *sh = read_all("fixtures/tinyshakespeare.txt", &sn), *ref = read_all("tests/ref/smollm2_llamacpp.txt", &rn);
    if (sh && ref) {
        size_t start = sn * 9 / 10;
        while (start < sn && sh[start] != '\n') start++;
        start++;
        size_t cap = sn;
        int32_t *big = (int32_t *)malloc(cap * sizeof *big);
        double t2 = now_ms();
        qlora_result r = qlora_tokenize(t, sh + start, sn - start, 0, big, cap, &n);
        double t3 = now_ms();
        CHECK(r == QLORA_OK);
        CHECK_MSG(n == 35981, "nll text: %zu tokens, llama.cpp 35981", n);
        fprintf(stderr, "smollm2: %zu bytes -> %zu tokens in %.1f ms\n", sn - start, n, t3 - t2);
        int windows = 0, same = 1;
        for (char *line = strstr(ref, "\nnll_window "); line; line = strstr(line + 1, "\nnll_window ")) {
            int w = atoi(line + 12);
            char *q = strchr(line, ':');
            strtod(q + 1, &q);                                  // skip the mean NLL
            for (int i = 0; i < 128; i++) {
                long v = strtol(q, &q, 10);
                if ((size_t)(128 * w + i) >= n || big[128 * w + i] != v) same = 0;
            }
            windows++;
        }
        CHECK(windows == 4 && same);
        char *back = (char *)malloc(sn);
        size_t bl = 0;
        CHECK(qlora_detokenize(t, big, n, back, sn, &bl) == QLORA_OK && bl == sn - start && !memcmp(back, sh + start, bl));
        free(back); free(big);
    } else {
        qt_missing("fixtures/tinyshakespeare.txt or tests/ref/smollm2_llamacpp.txt");
    }
    free(sh); free(ref);
    qlora_tokenizer_free(t);
    qlora_ctx_destroy(ctx);
}

// JSON string literal of s (n bytes, valid UTF-8).
static void json_str(FILE *f, const char *s, size_t n) {
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}
// A Hugging Face tokenizer.json holding a GGUF's byte-level vocab: merges as "a b" strings or as
// [a, b] pairs; control tokens as special added_tokens; Digits before ByteLevel when digits != 0.
static int write_hf_json(const char *gguf_path, const char *dir, int pairs, int digits) {
    qlora_gguf *g = NULL;
    if (qlora_gguf_open(NULL, gguf_path, &g) != QLORA_OK) return 0;
    const qlora_gguf_kv *tok = qlora_gguf_find(g, "tokenizer.ggml.tokens");
    const qlora_gguf_kv *ty = qlora_gguf_find(g, "tokenizer.ggml.token_type");
    const qlora_gguf_kv *mg = qlora_gguf_find(g, "tokenizer.ggml.merges");
    char path[256];
    mkdir("build", 0755);
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    FILE *f = fopen(path, "wb");
    if (!f || !tok || !ty || !mg) { if (f) fclose(f); qlora_gguf_close(g); return 0; }
    fprintf(f, "{\"version\":\"1.0\",\"added_tokens\":[");
    int first = 1;
    for (uint64_t i = 0; i < tok->arr_n; i++) {
        if (qlora_gguf_arr_int(ty, i) != 3) continue;
        fprintf(f, "%s{\"id\":%llu,\"content\":", first ? "" : ",", (unsigned long long)i);
        json_str(f, tok->strs[i].ptr, tok->strs[i].len);
        fprintf(f, ",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":true}");
        first = 0;
    }
    fprintf(f, "],\"normalizer\":null,\"pre_tokenizer\":");
    if (digits) fprintf(f, "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Digits\",\"individual_digits\":true},"
                           "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":true}]}");
    else fprintf(f, "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":true}");
    fprintf(f, ",\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\",\"dropout\":null,\"byte_fallback\":false,\"vocab\":{");
    first = 1;
    for (uint64_t i = 0; i < tok->arr_n; i++) {
        if (qlora_gguf_arr_int(ty, i) == 3) continue;
        if (!first) fputc(',', f);
        first = 0;
        json_str(f, tok->strs[i].ptr, tok->strs[i].len);
        fprintf(f, ":%llu", (unsigned long long)i);
    }
    fprintf(f, "},\"merges\":[");
    for (uint64_t i = 0; i < mg->arr_n; i++) {
        const char *s = mg->strs[i].ptr, *sp = (const char *)memchr(s + 1, ' ', mg->strs[i].len - 1);
        if (i) fputc(',', f);
        if (!pairs) { json_str(f, s, mg->strs[i].len); continue; }
        fputc('[', f);
        json_str(f, s, (size_t)(sp - s));
        fputc(',', f);
        json_str(f, sp + 1, mg->strs[i].len - (size_t)(sp - s) - 1);
        fputc(']', f);
    }
    fprintf(f, "]}}\n");
    fclose(f);
    qlora_gguf_close(g);
    return 1;
}

// A SentencePiece-style tokenizer.json (byte_fallback) from the llama-spm GGUF, the way HF's
// converter does it: a merge "a b" for every split of a token into two tokens, ordered by the
// merged token's score (best first), so rank order = score order and the ids must not change.
typedef struct spm_merge { float score; int32_t id; int32_t cut; } spm_merge;
static int spm_merge_cmp(const void *x, const void *y) {
    const spm_merge *a = (const spm_merge *)x, *b = (const spm_merge *)y;
    if (a->score != b->score) return a->score > b->score ? -1 : 1;
    if (a->id != b->id) return a->id < b->id ? -1 : 1;
    return a->cut - b->cut;
}
static int write_hf_spm_json(const qlora_tokenizer *spm, const char *dir) {
    qlora_gguf *g = NULL;
    if (qlora_gguf_open(NULL, "fixtures/ggml-vocab-llama-spm.gguf", &g) != QLORA_OK) return 0;
    const qlora_gguf_kv *tok = qlora_gguf_find(g, "tokenizer.ggml.tokens");
    const qlora_gguf_kv *sc = qlora_gguf_find(g, "tokenizer.ggml.scores");
    const qlora_gguf_kv *ty = qlora_gguf_find(g, "tokenizer.ggml.token_type");
    size_t nm = 0, cap = 1 << 16;
    spm_merge *m = (spm_merge *)malloc(cap * sizeof *m);
    char a[256], b[256];
    for (uint64_t i = 0; i < tok->arr_n; i++) {
        const char *s = tok->strs[i].ptr;
        size_t len = tok->strs[i].len;
        if (qlora_gguf_arr_int(ty, i) != 1 || len >= sizeof a) continue;
        for (size_t k = 1; k < len; k++) {
            if (((unsigned char)s[k] & 0xC0) == 0x80) continue;           // split between characters
            memcpy(a, s, k); a[k] = 0;
            memcpy(b, s + k, len - k); b[len - k] = 0;
            if (qlora_tokenizer_find(spm, a) < 0 || qlora_tokenizer_find(spm, b) < 0) continue;
            if (nm == cap) m = (spm_merge *)realloc(m, (cap *= 2) * sizeof *m);
            m[nm].score = (float)qlora_gguf_arr_float(sc, i); m[nm].id = (int32_t)i; m[nm].cut = (int32_t)k;
            nm++;
        }
    }
    qsort(m, nm, sizeof *m, spm_merge_cmp);
    char path[256];
    mkdir("build", 0755);
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    FILE *f = fopen(path, "wb");
    if (!f) { free(m); qlora_gguf_close(g); return 0; }
    fprintf(f, "{\"added_tokens\":[");
    for (uint64_t i = 0; i < 3; i++) {
        fprintf(f, "%s{\"id\":%d,\"content\":", i ? "," : "", (int)i);
        json_str(f, tok->strs[i].ptr, tok->strs[i].len);
        fprintf(f, ",\"special\":true}");
    }
    fprintf(f, "],\"pre_tokenizer\":null,\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"byte_fallback\":true,\"vocab\":{");
    for (uint64_t i = 3; i < tok->arr_n; i++) {
        if (i > 3) fputc(',', f);
        json_str(f, tok->strs[i].ptr, tok->strs[i].len);
        fprintf(f, ":%d", (int)i);
    }
    fprintf(f, "},\"merges\":[");
    for (size_t j = 0; j < nm; j++) {
        const char *s = tok->strs[m[j].id].ptr;
        size_t len = tok->strs[m[j].id].len, k = (size_t)m[j].cut;
        fprintf(f, "%s[", j ? "," : "");
        json_str(f, s, k);
        fputc(',', f);
        json_str(f, s + k, len - k);
        fputc(']', f);
    }
    fprintf(f, "]}}\n");
    fclose(f);
    free(m);
    qlora_gguf_close(g);
    return 1;
}

static void test_hf_json(void) {
    qlora_ctx *ctx = NULL;
    qlora_ctx_config cc; memset(&cc, 0, sizeof cc); cc.n_threads = 1;
    qlora_ctx_create(&cc, &ctx);
    // gpt-2 vocab as tokenizer.json ("a b" merges): the llama.cpp fixture cases, exactly
    if (!qt_file_exists("fixtures/ggml-vocab-gpt-2.gguf")) qt_missing("fixtures/ggml-vocab-gpt-2.gguf");
    else if (write_hf_json("fixtures/ggml-vocab-gpt-2.gguf", "build/tok_hf_gpt2", 0, 0)) {
        qlora_tokenizer *t = NULL;
        double t0 = now_ms();
        CHECK_MSG(qlora_tokenizer_load_hf(ctx, "build/tok_hf_gpt2/tokenizer.json", &t) == QLORA_OK, "%s", qlora_ctx_error(ctx));
        double t1 = now_ms();
        if (t) {
            fprintf(stderr, "hf gpt-2 tokenizer.json loaded in %.1f ms\n", t1 - t0);
            CHECK(qlora_tokenizer_kind(t) == QLORA_TOK_BPE && qlora_tokenizer_n_vocab(t) == 50257);
            CHECK(qlora_tokenizer_eos(t) == 50256 && qlora_tokenizer_is_eog(t, 50256));
            // same cases as test_vocab_fixture, through the JSON-loaded tokenizer
            size_t ni = 0, no = 0;
            char *inp = read_all("fixtures/ggml-vocab-gpt-2.gguf.inp", &ni), *outp = read_all("fixtures/ggml-vocab-gpt-2.gguf.out", &no);
            static const char sep[] = "\n__ggml_vocab_test__\n";
            const char *p = inp, *ol = outp;
            int ncase = 0, nok = 0;
            while (inp && outp && p < inp + ni && ol < outp + no) {
                const char *q = strstr(p, sep), *nl = strchr(ol, '\n');
                if (!q || !nl) break;
                int32_t want[1024];
                size_t nw = 0;
                for (const char *s = ol; s < nl;) { char *end; long v = strtol(s, &end, 10); if (end == s) break; want[nw++] = (int32_t)v; s = end; }
                nok += check_case(t, "hf gpt-2", p, (size_t)(q - p), 0, want, nw, 1);
                ncase++;
                p = q + sizeof sep - 1; ol = nl + 1;
            }
            fprintf(stderr, "hf gpt-2: %d/%d fixture cases exact\n", nok, ncase);
            CHECK(ncase >= 40 && nok == ncase);
            free(inp); free(outp);
        }
        qlora_tokenizer_free(t);
    }
    // SmolLM2 vocab as tokenizer.json ([a, b] merges, Digits + ByteLevel, special added_tokens,
    // tokenizer_config.json for eos) against llama.cpp's ids
    if (!qt_file_exists("models/SmolLM2-135M-Instruct-Q4_1.gguf")) qt_missing("models/SmolLM2-135M-Instruct-Q4_1.gguf");
    else if (write_hf_json("models/SmolLM2-135M-Instruct-Q4_1.gguf", "build/tok_hf_smol", 1, 1)) {
        FILE *f = fopen("build/tok_hf_smol/tokenizer_config.json", "wb");
        if (f) { fprintf(f, "{\"bos_token\":\"<|im_start|>\",\"eos_token\":{\"content\":\"<|im_end|>\"},\"add_bos_token\":false}\n"); fclose(f); }
        qlora_tokenizer *t = NULL;
        CHECK_MSG(qlora_tokenizer_load_hf(ctx, "build/tok_hf_smol/tokenizer.json", &t) == QLORA_OK, "%s", qlora_ctx_error(ctx));
        if (t) {
            CHECK(qlora_tokenizer_bos(t) == 1 && qlora_tokenizer_eos(t) == 2);
            CHECK(test_golden_lines(t, "smol", 0, 0) >= 50);
        }
        qlora_tokenizer_free(t);
    }
    // errors name the file
    qlora_tokenizer *bad = NULL;
    mkdir("build", 0755);
    FILE *f = fopen("build/tok_bad.json", "wb");
    if (f) { fprintf(f, "{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}"); fclose(f); }
    CHECK(qlora_tokenizer_load_hf(ctx, "build/tok_bad.json", &bad) == QLORA_ERR_UNSUPPORTED && !bad);
    CHECK(strstr(qlora_ctx_error(ctx), "tok_bad.json") != NULL);
    f = fopen("build/tok_bad.json", "wb");
    if (f) { fprintf(f, "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,"); fclose(f); }
    CHECK(qlora_tokenizer_load_hf(ctx, "build/tok_bad.json", &bad) == QLORA_ERR_JSON && !bad);
    qlora_ctx_destroy(ctx);
}

int main(void) {
    test_vocab_fixture("llama-spm");
    test_vocab_fixture("gpt-2");
    test_llama2c();
    test_smollm2();
    test_hf_json();
    return QT_DONE("test_tokenizer");
}
