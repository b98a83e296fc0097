// >>api-lora
// LoRA adapters with PEFT semantics: y = W x + scaling * B (A dropout(x)),
// A: (r, in) kaiming-uniform(a=sqrt(5)) i.e. U(-1/sqrt(in), 1/sqrt(in)), B: (out, r) zeros,
// scaling = alpha / r (or alpha / sqrt(r) with use_rslora).
typedef enum qlora_module {
    QLORA_MOD_Q = 0, QLORA_MOD_K, QLORA_MOD_V, QLORA_MOD_O,
    QLORA_MOD_GATE, QLORA_MOD_UP, QLORA_MOD_DOWN, QLORA_MOD_COUNT
} qlora_module;
#define QLORA_MODS_ALL_LINEAR 0x7Fu                 // every linear of the blocks (lm_head excluded)
#define QLORA_MODS_DEFAULT ((1u << QLORA_MOD_Q) | (1u << QLORA_MOD_V))   // PEFT default for llama

typedef enum qlora_bias_mode { QLORA_BIAS_NONE = 0, QLORA_BIAS_ALL, QLORA_BIAS_LORA_ONLY } qlora_bias_mode;

typedef struct qlora_lora_config {
    int      r;               // rank, default 8
    float    alpha;           // lora_alpha, default 8 (PEFT); the CLI defaults to 16
    float    dropout;         // on the LoRA input only, default 0
    unsigned target_mask;     // bit (1 << QLORA_MOD_x); 0 = QLORA_MODS_DEFAULT
    qlora_bias_mode bias;     // biases of the base model that become trainable (Llama has none)
    int      use_rslora;      // scaling = alpha / sqrt(r)
    uint64_t seed;            // init of A
} qlora_lora_config;

// PEFT module name ("q_proj", ...) and its Hugging Face parent ("self_attn" / "mlp").
QLORA_API const char *qlora_module_name(qlora_module m);
QLORA_API const char *qlora_module_parent(qlora_module m);
// "q_proj,v_proj" | "all-linear" -> mask. Unknown names are an error listing the valid ones.
QLORA_API qlora_result qlora_lora_parse_targets(qlora_ctx *ctx, const char *list, unsigned *mask);

typedef struct qlora_lora_module {
    int    layer;
    qlora_module mod;
    int    in, out;           // W is (out, in)
    float *A, *dA;            // (r, in)
    float *B, *dB;            // (out, r)   Hugging Face row order (as PEFT stores it)
    float *bias, *dbias;      // (out) trainable base bias (bias mode), else NULL
} qlora_lora_module;

typedef struct qlora_lora {
    qlora_lora_config cfg;    // resolved (defaults filled in)
    float  scaling;
    int    n_layers;
    qlora_lora_module *mods;  // [n_mods], ordered by layer then module (PEFT named_modules order)
    int    n_mods;
    qlora_lora_module **by;   // [n_layers * QLORA_MOD_COUNT]: module or NULL
    float *params;            // every trainable float, one block (A, B, bias of each module)
    float *grads;             // same layout
    size_t n_params;
} qlora_lora;

QLORA_API qlora_result qlora_lora_create(qlora_ctx *ctx, const qlora_model *m, const qlora_lora_config *cfg, qlora_lora **out);
QLORA_API void qlora_lora_free(qlora_lora *l);
QLORA_API qlora_lora_module *qlora_lora_get(const qlora_lora *l, int layer, qlora_module mod);
QLORA_API void qlora_lora_zero_grad(qlora_lora *l);
// Element counts of the trainable tensors in params order (A, B[, bias] per module): the segments
// the optimizers need. Returns the count; writes up to cap (seg_len may be NULL to size).
QLORA_API size_t qlora_lora_segments(const qlora_lora *l, size_t *seg_len, size_t cap);
