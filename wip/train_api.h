// >>api-train
// Training forward/backward of a Llama with LoRA adapters over a frozen (quantized) base.
// Every activation buffer is sized up front (qlora_train_memory) and allocated once; nothing
// allocates inside forward/backward.
typedef struct qlora_train qlora_train;

typedef struct qlora_train_config {
    int batch;                  // B sequences per micro-batch
    int seq_len;                // T tokens per sequence
    int grad_checkpointing;     // keep only block inputs; recompute each block in backward
} qlora_train_config;

typedef struct qlora_train_memory_plan {
    size_t activations;         // saved for backward
    size_t scratch;             // working buffers
    size_t lora;                // adapter params + grads
    size_t total;
} qlora_train_memory_plan;

QLORA_API void qlora_train_memory(const qlora_model *m, const qlora_lora *l, const qlora_train_config *cfg, qlora_train_memory_plan *plan);
QLORA_API qlora_result qlora_train_create(qlora_ctx *ctx, const qlora_model *m, qlora_lora *l, const qlora_train_config *cfg, qlora_train **out);
QLORA_API void qlora_train_free(qlora_train *t);
// Forward over tokens (B*T). labels (B*T) follow Hugging Face causal-LM semantics: position t of a
// row predicts labels[t+1] of that row; -100 is ignored. Returns the SUM of token losses and the
// number of scored targets. When grad_scale != 0, the gradient of grad_scale * sum_loss with
// respect to the final hidden state is prepared (fused cross-entropy), ready for qlora_train_backward.
// logits (optional): (B*T, V) written out. dropout_seed drives LoRA dropout (deterministic).
QLORA_API qlora_result qlora_train_forward(qlora_ctx *ctx, qlora_train *t, const int32_t *tokens, const int32_t *labels,
                                           float grad_scale, uint64_t dropout_seed, double *loss_sum, int *n_targets, float *logits);
// Accumulates (+=) d(grad_scale * sum_loss)/d(param) into the adapter's grads.
QLORA_API qlora_result qlora_train_backward(qlora_ctx *ctx, qlora_train *t);
