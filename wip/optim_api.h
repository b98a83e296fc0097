// >>api-optim
// Optimizers over ONE flat f32 block of trainable floats (qlora_lora.params / .grads), cut into
// segments, one per parameter tensor (A then B of each LoRA module, ...). Segments matter for
// the bitsandbytes rules: a tensor with < min_8bit_size elements keeps 32-bit state, and the
// 256-element quantization blocks restart at every tensor (they never span two tensors).
//
//   QLORA_OPTIM_ADAMW               torch.optim.AdamW(foreach=False) in f32, op for op:
//                                   p *= 1 - lr*wd; m = lerp(m, g, 1-b1); v = v*b2 + (1-b2)*g*g;
//                                   p += -(lr/c1) * m / (sqrt(v)/sqrt(c2) + eps)
//   QLORA_OPTIM_ADAMW_8BIT          bitsandbytes AdamW8bit (blockwise, blocksize 256): m in 8 bits
//                                   on the signed dynamic map, v on the unsigned one, one f32 absmax
//                                   per block each. Semantics of bnb 0.50's CPU backend
//                                   (_optimizer_update_8bit_blockwise_cpu: decay BEFORE the step,
//                                   like torch) with the exact nearest-code requantization of
//                                   bnb's default (PyTorch) backend instead of the CPU LUT.
//                                   Segments < min_8bit_size use bnb's 32-bit CPU update
//                                   (_optimizer_update_32bit_cpu).
//   QLORA_OPTIM_PAGED_ADAMW_8BIT    the same numbers; the state lives in a MAP_SHARED mapping of a
//   QLORA_OPTIM_PAGED_ADAMW_32BIT   file (bnb PagedAdamW32bit: every segment 32-bit) so the OS can
//                                   page it out under memory pressure (bnb uses CUDA unified memory).
// Hyper-parameters are doubles because torch/bnb compute the bias corrections and the scalars in
// Python floats and round to f32 only when the scalar meets the tensor; we do the same.
typedef enum qlora_optim_kind {
    QLORA_OPTIM_ADAMW = 0,
    QLORA_OPTIM_ADAMW_8BIT,
    QLORA_OPTIM_PAGED_ADAMW_8BIT,
    QLORA_OPTIM_PAGED_ADAMW_32BIT,
    QLORA_OPTIM_COUNT
} qlora_optim_kind;

typedef struct qlora_optim_config {
    qlora_optim_kind kind;       // default QLORA_OPTIM_ADAMW
    double beta1;                // 0 = 0.9   (HF adam_beta1)
    double beta2;                // 0 = 0.999 (HF adam_beta2)
    double eps;                  // 0 = 1e-8  (HF adam_epsilon)
    double weight_decay;         // decoupled (AdamW); default 0 (HF weight_decay)
    size_t min_8bit_size;        // 0 = 4096 (bnb): smaller segments keep f32 state
    const char *paged_dir;       // paged kinds: directory of the state file; NULL = $TMPDIR or /tmp
} qlora_optim_config;

typedef struct qlora_optim qlora_optim;

QLORA_API const char *qlora_optim_kind_name(qlora_optim_kind k);  // "adamw_torch", "adamw_8bit", ...
// Fills the defaults in (zero fields -> the values above). INVALID_ARG for betas outside [0,1),
// eps/weight_decay < 0 or an unknown kind.
QLORA_API qlora_result qlora_optim_config_resolve(qlora_optim_config *cfg);
// Bytes of optimizer state (m/v, or codes + absmax) for these segments; 0 if cfg is invalid or
// the size overflows. This is what lives in RAM (or in the paged file).
QLORA_API size_t qlora_optim_state_bytes(const qlora_optim_config *cfg, const size_t *seg_len, size_t n_seg);
// seg_len[n_seg]: element counts of the tensors, laid out back to back in params/grads.
// ctx (may be NULL) provides threads for the step and receives error messages.
QLORA_API qlora_result qlora_optim_create(qlora_ctx *ctx, const qlora_optim_config *cfg,
                                          const size_t *seg_len, size_t n_seg, qlora_optim **out);
QLORA_API void qlora_optim_free(qlora_optim *opt);   // paged: unmaps and deletes the file
// One update of params[n] from grads[n] (n = sum of seg_len) with learning rate lr (from the
// scheduler, qlora_lr_at). Increments the step counter first (the first update uses step 1).
// Bitwise identical for any thread count.
QLORA_API qlora_result qlora_optim_step(qlora_optim *opt, float *params, const float *grads, double lr);
QLORA_API int64_t qlora_optim_steps(const qlora_optim *opt);      // updates done so far
QLORA_API size_t  qlora_optim_nparams(const qlora_optim *opt);    // sum of seg_len
QLORA_API int     qlora_optim_segment_is_8bit(const qlora_optim *opt, size_t seg);
QLORA_API const char *qlora_optim_paged_path(const qlora_optim *opt);  // state file, NULL if not paged

// Exact resume. qlora_optim_state_entries fills up to cap safetensors entries that point INTO
// the optimizer (valid until the next step/load/free) and returns how many there are (call with
// cap = 0 to size the array): "optim.step" I64[1], "optim.layout" I64[3 + 2*n_seg] = {1 (format
// version), 256 (blocksize), n_seg, then (len, bits) per segment}, and per segment i:
// 32-bit: "optim.<i>.exp_avg", "optim.<i>.exp_avg_sq" F32[len] (torch names);
// 8-bit:  "optim.<i>.state1", "optim.<i>.state2" U8[len], "optim.<i>.absmax1", "optim.<i>.absmax2"
//         F32[ceil(len/256)] (bnb names). Pass them to qlora_st_write. Host must be little-endian.
QLORA_API size_t qlora_optim_state_entries(const qlora_optim *opt, qlora_st_entry *out, size_t cap);
// Restores step and state from a safetensors file written from those entries. Validates every
// name, dtype, shape and byte count against this optimizer's layout and every value (finite, v
// and absmax >= 0, step >= 0) before touching anything: on error the optimizer is unchanged.
QLORA_API qlora_result qlora_optim_load_state(qlora_optim *opt, const qlora_st *st);

// torch.nn.utils.clip_grad_norm_(max_norm, norm_type=2): total = ||(||g_s||_2)_s||_2 over the
// segments, each sum of squares accumulated in double (torch: f32 per-tensor norms, so the norm
// may differ from torch in the last f32 bit). coef = max_norm / (total + 1e-6) in f32 (as torch:
// reciprocal(total + 1e-6) * max_norm), clamped to 1, and ALWAYS multiplied in (even when 1).
// *total_norm (may be NULL) gets the pre-clip norm. A NaN/Inf norm leaves grads untouched and
// returns QLORA_ERR_NUMERIC. max_norm <= 0: only computes the norm.
QLORA_API qlora_result qlora_clip_grad_norm(float *grads, const size_t *seg_len, size_t n_seg,
                                            double max_norm, float *total_norm);

// Learning-rate schedules with transformers' semantics (optimization.py); W = warmup, T = total:
//   LINEAR                 k/W for k < W, else max(0, (T-k)/max(1, T-W))
//   COSINE                 k/W for k < W, else max(0, 0.5*(1 + cos(pi*0.5*2*progress))),
//                          progress = (k-W)/max(1, T-W)   (num_cycles 0.5)
//   CONSTANT               1 (HF "constant" ignores warmup)
//   CONSTANT_WITH_WARMUP   k/max(1, W) for k < W, else 1
// returns base_lr * lambda(k) in double, for the k-th optimizer update (k = 0, 1, ...): LambdaLR
// semantics, so with W > 0 the first update has lr 0.
typedef enum qlora_lr_schedule {
    QLORA_LR_LINEAR = 0,
    QLORA_LR_COSINE,
    QLORA_LR_CONSTANT,
    QLORA_LR_CONSTANT_WITH_WARMUP,
    QLORA_LR_COUNT
} qlora_lr_schedule;
QLORA_API double qlora_lr_at(qlora_lr_schedule kind, double base_lr, int64_t step, int64_t warmup, int64_t total);
// "linear" | "cosine" | "constant" | "constant_with_warmup" (HF lr_scheduler_type) -> kind.
QLORA_API qlora_result qlora_lr_schedule_parse(const char *name, qlora_lr_schedule *out);
