// >>api-adapter
// Adapter files and merging. Three on-disk forms of one LoRA:
//   PEFT dir   adapter_config.json + adapter_model.safetensors, loadable by
//              PeftModel.from_pretrained (keys base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight
//              (r, in) and .lora_B.weight (out, r); rows as qlora.h holds them: HF rotate_half order)
//   GGUF LoRA  llama.cpp --lora file (blk.N.attn_q.weight.lora_a ne=[in, r], .lora_b ne=[r, out],
//              q/k lora_b rows permuted to GGUF's adjacent-pair RoPE order)
//   merged     W <- deq(W) + scaling * B A, then qlora_model_save_gguf / qlora_model_save_hf
// Every writer is atomic (path.tmp + rename).

// PEFT v0.20.0 adapter directory (created if needed). base_model_name may be NULL.
QLORA_API qlora_result qlora_lora_save_peft(qlora_ctx *ctx, const qlora_lora *l, const qlora_model *m,
                                            const char *dir, const char *base_model_name);
// Reads a PEFT LoRA directory (F32/F16/BF16 tensors; target_modules as names, full paths or
// "all-linear"). Every tensor is shape-checked; missing/extra keys are errors naming key and file.
QLORA_API qlora_result qlora_lora_load_peft(qlora_ctx *ctx, const qlora_model *m, const char *dir, qlora_lora **out);

// Minimal GGUF v3 writer: key/values (set again = replace) and F32/F16/BF16 tensors. Tensor data is
// either borrowed (must stay alive until qlora_gguf_writer_write) or converted on the fly from a
// qlora_tensor of any readable type while writing, so a whole model never needs a second copy.
typedef struct qlora_gguf_writer qlora_gguf_writer;
QLORA_API qlora_result qlora_gguf_writer_create(qlora_ctx *ctx, qlora_gguf_writer **out);
QLORA_API void qlora_gguf_writer_free(qlora_gguf_writer *w);
QLORA_API qlora_result qlora_gguf_writer_set_u32(qlora_gguf_writer *w, const char *key, uint32_t v);
QLORA_API qlora_result qlora_gguf_writer_set_i32(qlora_gguf_writer *w, const char *key, int32_t v);
QLORA_API qlora_result qlora_gguf_writer_set_f32(qlora_gguf_writer *w, const char *key, float v);
QLORA_API qlora_result qlora_gguf_writer_set_bool(qlora_gguf_writer *w, const char *key, int v);
QLORA_API qlora_result qlora_gguf_writer_set_str(qlora_gguf_writer *w, const char *key, const char *v);
// Array of numbers: elem_type one of the scalar qlora_gguf_vtype, data = n raw little-endian elements.
QLORA_API qlora_result qlora_gguf_writer_set_arr(qlora_gguf_writer *w, const char *key, qlora_gguf_vtype elem_type,
                                                 const void *data, size_t n);
QLORA_API qlora_result qlora_gguf_writer_set_str_arr(qlora_gguf_writer *w, const char *key, const qlora_str *v, size_t n);
// Copies one key/value of an open GGUF verbatim (any type, nested arrays included).
QLORA_API qlora_result qlora_gguf_writer_copy_kv(qlora_gguf_writer *w, const qlora_gguf *g, const qlora_gguf_kv *kv);
// ne in ggml order (ne[0] fastest). type F32/F16/BF16; data = the tensor's bytes (borrowed).
QLORA_API qlora_result qlora_gguf_writer_add(qlora_gguf_writer *w, const char *name, qlora_type type,
                                             int n_dims, const int64_t *ne, const void *data);
// Same, converting src (any readable type, rows = src->ne[1]) to type while writing.
QLORA_API qlora_result qlora_gguf_writer_add_tensor(qlora_gguf_writer *w, const char *name, qlora_type type,
                                                    const qlora_tensor *src);
QLORA_API qlora_result qlora_gguf_writer_write(qlora_ctx *ctx, qlora_gguf_writer *w, const char *path);

// llama.cpp LoRA adapter GGUF (general.type=adapter, adapter.type=lora, adapter.lora.alpha; for
// rsLoRA alpha*sqrt(r) is written so that llama.cpp's alpha/r gives alpha/sqrt(r)).
QLORA_API qlora_result qlora_lora_export_gguf(qlora_ctx *ctx, const qlora_lora *l, const qlora_model *m, const char *path);
QLORA_API qlora_result qlora_peft_to_gguf(qlora_ctx *ctx, const qlora_model *m, const char *peft_dir, const char *out_path);

// Merge: every adapted W becomes an owned F32 tensor deq(W) + scaling * B A (PEFT merge_and_unload;
// PEFT re-quantizes a 4-bit base afterwards, qlora.h keeps f32: see qlora_merge_report for the cost
// of re-quantizing). Trained biases (bias mode) replace the base biases. The lora is not changed.
QLORA_API qlora_result qlora_model_merge_lora(qlora_ctx *ctx, qlora_model *m, const qlora_lora *l);
// Per adapted module of l: error of quantizing the model's current (e.g. merged f32) weight to
// type/blocksize/double_quant, against that weight.
typedef struct qlora_merge_stat {
    int layer; qlora_module mod;
    double max_err, rms_err;       // max |q(W) - W|, sqrt(mean (q(W) - W)^2)
    double rms_w;                  // sqrt(mean W^2), for relative numbers
} qlora_merge_stat;
QLORA_API qlora_result qlora_merge_report(qlora_ctx *ctx, const qlora_model *m, const qlora_lora *l, qlora_type type,
                                          int blocksize, int double_quant, qlora_merge_stat *stats /* [l->n_mods] */);
// llama.cpp-loadable GGUF of the whole model: type F32 / F16 / BF16 for the matrices (norms and
// biases F32), llama.* hyper-parameters, tokenizer.* copied verbatim from the source GGUF (or built
// from the loaded tokenizer), q/k rows permuted back to GGUF's adjacent-pair RoPE order.
QLORA_API qlora_result qlora_model_save_gguf(qlora_ctx *ctx, const qlora_model *m, const char *path, qlora_type type);
