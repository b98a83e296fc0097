// >>api-model
// Llama family: RMSNorm, RoPE, GQA attention, SwiGLU MLP, tied or separate lm_head.
typedef enum qlora_rope_scaling {
    QLORA_ROPE_SCALING_NONE = 0,
    QLORA_ROPE_SCALING_LINEAR,      // positions divided by factor
    QLORA_ROPE_SCALING_LLAMA3       // Llama-3.1 frequency-dependent scaling
} qlora_rope_scaling;

typedef struct qlora_model_config {
    int   dim;              // hidden size C
    int   hidden_dim;       // MLP inner size F
    int   n_layers;         // L
    int   n_heads;          // H
    int   n_kv_heads;       // Hkv (GQA: H % Hkv == 0)
    int   head_dim;         // D = dim / H unless the checkpoint says otherwise
    int   vocab_size;       // V
    int   max_seq_len;      // context length the model was trained for
    float norm_eps;         // RMSNorm epsilon (default 1e-5)
    float rope_theta;       // RoPE base (default 10000)
    int   rope_dim;         // rotated dims per head (default D)
    qlora_rope_scaling rope_scaling;
    float rope_factor;                    // linear / llama3 factor
    float rope_low_freq_factor, rope_high_freq_factor; int rope_orig_ctx;   // llama3
    int   tied_embeddings;  // lm_head shares token_embd
    int   has_qkv_bias;     // Qwen2
} qlora_model_config;

typedef struct qlora_layer {
    qlora_tensor attn_norm;           // (C)
    qlora_tensor wq, wk, wv, wo;      // (H*D, C) (Hkv*D, C) (Hkv*D, C) (C, H*D); Hugging Face layout
                                      // (rotate_half RoPE), also when loaded from GGUF / llama2.c
    qlora_tensor bq, bk, bv;          // optional biases (type F32, data NULL when absent)
    qlora_tensor ffn_norm;            // (C)
    qlora_tensor w_gate, w_up, w_down;// (F, C) (F, C) (C, F)
} qlora_layer;

typedef struct qlora_model {
    qlora_model_config cfg;
    char          arch[32];           // "llama"
    char          source[16];         // "gguf", "hf", "llama2c"
    qlora_tensor  tok_embd;           // (V, C)
    qlora_tensor  out_norm;           // (C)
    qlora_tensor  output;             // (V, C); same data as tok_embd when tied
    qlora_layer  *layers;             // [L]
    qlora_tokenizer *tok;             // may be NULL (llama2.c without --tokenizer)
    // owned sources kept alive for mmap'ed weights
    qlora_gguf   *gguf;
    qlora_st    **st; size_t n_st;
    qlora_file    raw;                // llama2.c checkpoint
    char         *chat_template;      // from GGUF / tokenizer_config.json, may be NULL
    const struct qlora_lora *adapter; // optional LoRA applied by qlora_model_forward (not owned)
} qlora_model;

typedef struct qlora_load_options {
    const char *tokenizer_path;       // llama2.c tokenizer.bin, or a tokenizer.json / .gguf to use instead
} qlora_load_options;

// MODEL is a .gguf file, a Hugging Face model directory (config.json + *.safetensors), or a
// llama2.c checkpoint (.bin, legacy or v1). Weights stay mmap'ed where their format allows.
QLORA_API qlora_result qlora_model_load(qlora_ctx *ctx, const char *path, const qlora_load_options *opt, qlora_model **out);
QLORA_API void qlora_model_free(qlora_model *m);
// Re-quantize every linear weight of the blocks into a bnb format (NF4/FP4/INT4/INT8, optional
// double quant). Embeddings and lm_head stay as they are (bitsandbytes modules_to_not_convert).
QLORA_API qlora_result qlora_model_quantize(qlora_ctx *ctx, qlora_model *m, qlora_type t, int blocksize, int double_quant);
QLORA_API size_t qlora_model_n_params(const qlora_model *m);
QLORA_API size_t qlora_model_weight_bytes(const qlora_model *m);   // bytes the weights occupy (codes + scales)
// Writes a Hugging Face model directory: config.json and model.safetensors (F32, HF names).
QLORA_API qlora_result qlora_model_save_hf(qlora_ctx *ctx, const qlora_model *m, const char *dir);

// KV cache + scratch for incremental decoding.
typedef struct qlora_kv_cache qlora_kv_cache;
QLORA_API qlora_result qlora_kv_cache_create(qlora_ctx *ctx, const qlora_model *m, int n_ctx, qlora_kv_cache **out);
QLORA_API void qlora_kv_cache_free(qlora_kv_cache *kv);
QLORA_API int  qlora_kv_cache_pos(const qlora_kv_cache *kv);     // tokens already in the cache
QLORA_API void qlora_kv_cache_reset(qlora_kv_cache *kv);
// Runs T tokens at positions pos..pos+T-1 (pos = kv_cache_pos) and appends them to the cache.
// logits: NULL, or (V) for the last token, or (T, V) when all_logits is set.
QLORA_API qlora_result qlora_model_forward(qlora_ctx *ctx, const qlora_model *m, qlora_kv_cache *kv,
                                           const int32_t *tokens, int T, float *logits, int all_logits);

// Sampling: temperature 0 = greedy (argmax, lowest id on ties).
typedef struct qlora_sampler {
    float    temperature;   // default 0.8 when the struct is zeroed? no: 0 = greedy
    int      top_k;         // 0 = off
    float    top_p;         // 0 or 1 = off
    uint64_t seed;          // xorshift64* state seed
    uint64_t state;         // internal
} qlora_sampler;
QLORA_API int32_t qlora_sample(qlora_sampler *s, float *logits, int V);
// Feeds the prompt, then samples up to n_max tokens, stopping at end-of-generation tokens.
// on_token (optional) is called for every generated id; return non-zero to stop.
QLORA_API qlora_result qlora_generate(qlora_ctx *ctx, const qlora_model *m, qlora_kv_cache *kv,
                                      const int32_t *prompt, int n_prompt, qlora_sampler *s, int n_max,
                                      int32_t *out, int *n_out,
                                      int (*on_token)(void *user, int32_t id), void *user);
// Mean negative log-likelihood (nats/token) of tokens[1..n) given the prefix, in windows of n_ctx.
QLORA_API qlora_result qlora_model_nll(qlora_ctx *ctx, const qlora_model *m, const int32_t *tokens, int n,
                                       int n_ctx, double *mean_nll, int *n_scored);
