// >>api-quant
// bitsandbytes-compatible blockwise quantization of a flat float array (row-major matrix).
// NF4/FP4/INT4: two 4-bit codes per byte, element 2k in the HIGH nibble; odd n pads with 0.0.
// INT8: one signed byte per element. absmax: one f32 per block of `blocksize` (32..4096, pow2).
QLORA_API size_t qlora_bnb_nblocks(size_t n, int blocksize);
QLORA_API size_t qlora_bnb_code_bytes(qlora_type t, size_t n);
QLORA_API qlora_result qlora_bnb_quantize(qlora_type t, const float *x, size_t n, int blocksize,
                                          uint8_t *codes, float *absmax);
QLORA_API qlora_result qlora_bnb_dequantize(qlora_type t, const uint8_t *codes, const float *absmax,
                                            size_t n, int blocksize, float *out);
// The 16-entry code book of a 4-bit format (NF4/FP4/INT4); NULL for others.
QLORA_API const float *qlora_bnb_code4(qlora_type t);
// bitsandbytes create_dynamic_map(signed) emulated in float32 (torch linspace semantics).
QLORA_API void qlora_dynamic_map(int is_signed, float map[256]);
// Double quantization (bnb compress_statistics): offset = mean(absmax); (absmax - offset) is
// quantized with the signed dynamic map in blocks of 256 (nearest code, ties to the lower index).
QLORA_API qlora_result qlora_double_quantize(const float *absmax, size_t nblocks, const float map[256],
                                             uint8_t *qabsmax, float *absmax2, float *offset);
// absmax[i] = map[qabsmax[i]] * absmax2[i / 256] + offset   (float32 multiply, then float32 add)
QLORA_API void qlora_double_dequantize(const uint8_t *qabsmax, const float *absmax2, const float map[256],
                                       float offset, size_t nblocks, float *absmax);
// ggml block formats (Q8_0, Q4_0, Q4_1): n a multiple of 32; dequantized exactly as ggml does.
QLORA_API qlora_result qlora_ggml_dequantize(qlora_type t, const void *blocks, size_t n, float *out);
QLORA_API size_t qlora_ggml_row_bytes(qlora_type t, size_t n);   // f32/f16/bf16 too; 0 if n invalid
// Whole tensors. qlora_tensor_quantize converts any readable src (f32/f16/bf16/ggml/bnb) into a
// bnb-format dst that owns its buffers (free with qlora_tensor_free). F32/F16/BF16 dst also work.
QLORA_API qlora_result qlora_tensor_quantize(const qlora_tensor *src, qlora_type t, int blocksize,
                                             int double_quant, qlora_tensor *dst);
QLORA_API void qlora_tensor_free(qlora_tensor *t);
// out[(r - row0) * ne0 + c] for rows [row0, row0 + nrows): any type.
QLORA_API qlora_result qlora_tensor_dequantize_rows(const qlora_tensor *t, size_t row0, size_t nrows, float *out);
