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

// >>api-trainer
// The loop of Hugging Face's Trainer for one LoRA: gradient accumulation, clipping, schedule,
// optimizer, logging, eval, atomic checkpoints (checkpoint-N/ = PEFT adapter + optimizer state +
// trainer_state.json) and exact resume. Zero-initialised fields mean the defaults in brackets.
typedef enum qlora_train_event_kind {
    QLORA_EV_START = 0, QLORA_EV_STEP, QLORA_EV_LOG, QLORA_EV_EVAL, QLORA_EV_SAVE, QLORA_EV_DONE, QLORA_EV_INTERRUPTED
} qlora_train_event_kind;
typedef struct qlora_train_event {
    qlora_train_event_kind kind;
    int64_t step, total_steps;
    double  epoch;
    double  loss;               // LOG: mean training loss since the last log
    double  learning_rate;      // LOG: lr used by the last update
    double  grad_norm;          // LOG: pre-clip norm of the last update
    double  tokens_per_second;  // LOG/STEP: non-padding tokens / wall time since start (or resume)
    double  eta_seconds;
    double  eval_loss;          // EVAL
    const char *path;           // SAVE: checkpoint directory; START: resumed-from or NULL
} qlora_train_event;

typedef struct qlora_trainer_config {
    int      batch;             // per-device train batch size [4]
    int      seq_len;           // max sequence length T [256]
    int      grad_checkpointing;
    int      grad_accum;        // gradient accumulation steps [1]
    int64_t  max_steps;         // > 0: wins over num_epochs
    double   num_epochs;        // [3]
    double   learning_rate;     // [2e-4]
    qlora_lr_schedule schedule; // [linear]
    int64_t  warmup_steps;      // [0]
    double   max_grad_norm;     // [1.0]; < 0 disables clipping
    qlora_optim_config optim;   // [adamw, HF defaults]
    int64_t  logging_steps;     // [10]
    int64_t  eval_steps;        // 0: evaluate only at the end (when there is eval data)
    int      eval_on_start;     // also evaluate before the first step (HF eval_on_start)
    int64_t  save_steps;        // 0: only the final adapter
    int      save_total_limit;  // 0: keep every checkpoint
    const char *output_dir;     // required
    const char *resume_from;    // checkpoint directory to continue from (exactly)
    uint64_t seed;              // [42] shuffling and dropout
    const char *base_model_name;
    void   (*on_event)(void *user, const qlora_train_event *ev);
    void    *user;
    volatile int *interrupt;    // set non-zero (e.g. by SIGINT): save a checkpoint and return
} qlora_trainer_config;

typedef struct qlora_train_summary {
    int64_t steps;              // global step reached
    double  train_loss;         // mean loss of the last logging window
    double  first_eval_loss, last_eval_loss;   // NaN when there is no eval data
    int     interrupted;
    size_t  memory_planned;     // bytes: activations + scratch + lora + optimizer
} qlora_train_summary;

QLORA_API qlora_result qlora_trainer_run(qlora_ctx *ctx, const qlora_model *m, qlora_lora *l,
                                         const qlora_dataset *train, const qlora_dataset *eval,
                                         const qlora_trainer_config *cfg, qlora_train_summary *out);
// Mean token loss of a dataset (forward only), in batches of B rows of at most T tokens.
QLORA_API qlora_result qlora_eval_dataset(qlora_ctx *ctx, const qlora_model *m, const qlora_lora *l,
                                          const qlora_dataset *ds, int B, int T, double *mean_loss, size_t *n_targets);
// The newest checkpoint-N directory in dir (by N), written into buf; QLORA_ERR_NOT_FOUND if none.
QLORA_API qlora_result qlora_find_last_checkpoint(qlora_ctx *ctx, const char *dir, char *buf, size_t cap);
