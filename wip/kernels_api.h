// >>api-kernels
// The one hot op of inference: a dot product of one weight row with f32 activations.
//   w      : start of the row's data (f32/f16/bf16 elements; ggml blocks; bnb codes)
//   scales : bnb formats only: n/bs decoded absmax values for this row's blocks (else unused)
//   n      : elements; ggml formats: multiple of 32; bnb formats: multiple of bs and the row must
//            start on a block boundary (qlora_matvec handles every other case with the reference)
typedef float (*qlora_dot_fn)(const void *w, const float *scales, const float *x, size_t n, size_t bs);
#define QLORA_DOT_TOLERANCE 1e-5f   // relative (|a-b| <= tol * sum|w_i x_i|) vs the reference
QLORA_API qlora_dot_fn qlora_ctx_dot(const qlora_ctx *ctx, qlora_type t, const char **name);
// y[r] = W[r,:] . x  for every row r (W: ne[1] rows of ne[0]); any weight type; threaded over rows.
QLORA_API qlora_result qlora_matvec(qlora_ctx *ctx, const qlora_tensor *W, const float *x, float *y);
// Y[t, r] = W[r,:] . X[t,:] for t < T   (X: T x ne[0], Y: T x ne[1])
QLORA_API qlora_result qlora_matmul(qlora_ctx *ctx, const qlora_tensor *W, const float *X, size_t T, float *Y);
