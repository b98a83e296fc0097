/* Compiles qlora.h as strict C99 with every warning and calls into the public API, so a
   misspelled QLORA_IMPLEMENTATION or a missing definition fails at link time (stb lesson). */
#define QLORA_IMPLEMENTATION
#include "qlora.h"
#include <stdio.h>
#include <string.h>
int main(void) {
    qlora_ctx *ctx = NULL;
    qlora_ctx_config cfg;
    memset(&cfg, 0, sizeof cfg);
    if (qlora_ctx_create(&cfg, &ctx) != QLORA_OK) return 1;
    char buf[1024];
    qlora_ctx_describe(ctx, buf, sizeof buf);
    float x[64], y[64];
    uint8_t codes[32];
    float absmax[1];
    for (int i = 0; i < 64; i++) x[i] = (float)(i - 32) / 32.0f;
    if (qlora_bnb_quantize(QLORA_TYPE_NF4, x, 64, 64, codes, absmax) != QLORA_OK) return 1;
    if (qlora_bnb_dequantize(QLORA_TYPE_NF4, codes, absmax, 64, 64, y) != QLORA_OK) return 1;
    qlora_model *m = NULL;
    int rc = qlora_model_load(ctx, "does-not-exist.gguf", NULL, &m) == QLORA_OK;   /* must fail */
    printf("%s %s %s | %s | y[0]=%g\n", qlora_version(), qlora_result_string(QLORA_ERR_IO), qlora_type_name(QLORA_TYPE_NF4), buf, (double)y[0]);
    qlora_ctx_destroy(ctx);
    return rc;
}
