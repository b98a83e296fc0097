// >>api-tokenizer
typedef enum qlora_tok_kind {
    QLORA_TOK_SPM = 1,     // SentencePiece BPE with byte fallback (llama, llama2.c tokenizer.bin)
    QLORA_TOK_BPE = 2      // byte-level BPE with GPT-2 style pre-tokenizer (gpt2, SmolLM2, ...)
} qlora_tok_kind;
typedef struct qlora_tokenizer qlora_tokenizer;
// From GGUF metadata (tokenizer.ggml.*): model "llama" or "gpt2".
QLORA_API qlora_result qlora_tokenizer_from_gguf(qlora_ctx *ctx, const qlora_gguf *g, qlora_tokenizer **out);
// llama2.c tokenizer.bin (vocab_size entries; BOS=1, EOS=2).
QLORA_API qlora_result qlora_tokenizer_load_llama2c(qlora_ctx *ctx, const char *path, int vocab_size, qlora_tokenizer **out);
// Hugging Face tokenizer.json (model.type BPE, byte-level or SentencePiece-style).
QLORA_API qlora_result qlora_tokenizer_load_hf(qlora_ctx *ctx, const char *path, qlora_tokenizer **out);
QLORA_API void qlora_tokenizer_free(qlora_tokenizer *t);
// Raw encode of UTF-8 text (special-token strings in the text are recognised as such).
// add_special: prepend BOS when the tokenizer says so (SPM always has one).
QLORA_API qlora_result qlora_tokenize(const qlora_tokenizer *t, const char *text, size_t len, int add_special,
                                      int32_t *ids, size_t cap, size_t *n_out);
// Bytes of one token as it appears in decoded text (byte-fallback tokens give their byte;
// SPM "▁" becomes a space). Returns length; writes up to cap bytes.
QLORA_API size_t qlora_token_to_piece(const qlora_tokenizer *t, int32_t id, char *buf, size_t cap);
// Decode a sequence (SPM: leading space of the first token after BOS is dropped, like llama.cpp).
QLORA_API qlora_result qlora_detokenize(const qlora_tokenizer *t, const int32_t *ids, size_t n, char *buf, size_t cap, size_t *len_out);
QLORA_API qlora_tok_kind qlora_tokenizer_kind(const qlora_tokenizer *t);
QLORA_API int32_t qlora_tokenizer_n_vocab(const qlora_tokenizer *t);
QLORA_API int32_t qlora_tokenizer_bos(const qlora_tokenizer *t);   // -1 if none
QLORA_API int32_t qlora_tokenizer_eos(const qlora_tokenizer *t);
QLORA_API int32_t qlora_tokenizer_find(const qlora_tokenizer *t, const char *piece);   // -1 if absent
QLORA_API int qlora_tokenizer_is_eog(const qlora_tokenizer *t, int32_t id);   // eos, <|im_end|>, eot...
// Chat: ChatML (<|im_start|>role\ncontent<|im_end|>\n ... <|im_start|>assistant\n) when the vocab has
// <|im_start|>; Llama-2 [INST] otherwise. Returns bytes needed (excluding NUL); writes up to cap.
typedef struct qlora_chat_msg { const char *role; const char *content; } qlora_chat_msg;
QLORA_API size_t qlora_chat_render(const qlora_tokenizer *t, const qlora_chat_msg *msgs, size_t n,
                                   int add_generation_prompt, char *buf, size_t cap);
