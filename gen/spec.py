"""Declarative list of generated kernels (the spec.yaml of STYLE.md 5.7, as plain Python data so
the generator needs nothing but Jinja2).

FORMATS: weight format -> qlora_type enum, template family, format parameters.
KERNELS: one dict per generated kernel: op, weight format, activation format, isa, unroll.
  op  dot   float dot(w, scales, x, n, bs): one weight row with f32 activations (decode, matvec)
      deq   void deq(w, scales, out, n, bs): a row segment to f32, bit-exact (GEMM panel fill)
      gemm  void gemm(K, A, lda, B, C, ldc, m, n, acc): the MR x NR register-tile micro-kernel
      gemm_bf16  the same over bf16 pairs (qlora_gemm_bf16_fn): A rows and B panels hold 2 bf16 per u32
      cvt_bf16   void cvt(x, n, out): f32 -> bf16 pairs (round to nearest even), the GEMM operand layout
      dropout    void drop(x, y, n, i0, seed, p, acc): LoRA dropout with a counter hash (bit-identical per ISA)
      exp        double exp(x, y, n, a, b): y = exp(a x + b), returns the sum (softmax, CE, SiLU, attention)
OPS: op -> template (None = the weight format's dot template).
Priority comes from isa.py. Names follow STYLE.md 5.2:
  function  qlora_k_<op>_<wfmt>_<afmt>__<isa>
  file      kernels_generated/<isa>/<op>-<wfmt>-<afmt>-<isa>.h
"""

FORMATS = {
    # plain floats: elem = how one element is stored
    "f32":  dict(type="QLORA_TYPE_F32",  template="dot_float.h.j2", elem="f32"),
    "f16":  dict(type="QLORA_TYPE_F16",  template="dot_float.h.j2", elem="f16"),
    "bf16": dict(type="QLORA_TYPE_BF16", template="dot_float.h.j2", elem="bf16"),
    # ggml blocks of 32: bytes = block size, header = bytes before qs
    "q8_0": dict(type="QLORA_TYPE_Q8_0", template="dot_ggml.h.j2", kind="q8_0", bytes=34, header=2),
    "q4_0": dict(type="QLORA_TYPE_Q4_0", template="dot_ggml.h.j2", kind="q4_0", bytes=18, header=2),
    "q4_1": dict(type="QLORA_TYPE_Q4_1", template="dot_ggml.h.j2", kind="q4_1", bytes=20, header=4),
    # bitsandbytes blockwise: 4-bit code books (tables in qlora.h >>quant-tables) and int8
    "nf4":  dict(type="QLORA_TYPE_NF4",  template="dot_bnb4.h.j2", lut="qlora__nf4_code"),
    "fp4":  dict(type="QLORA_TYPE_FP4",  template="dot_bnb4.h.j2", lut="qlora__fp4_code"),
    "int4": dict(type="QLORA_TYPE_INT4", template="dot_bnb4.h.j2", lut="qlora__int4_code"),
    "int8": dict(type="QLORA_TYPE_INT8", template="dot_int8.h.j2"),
}

# unroll: independent accumulators (scalar) / vectors per loop iteration (SIMD)
UNROLL = {"scalar": 4, "avx2": 2, "avx512": 2, "neon": 4}

OPS = {"dot": None, "deq": "deq.h.j2", "gemm": "gemm_f32.h.j2", "gemm_bf16": "gemm_bf16.h.j2", "cvt_bf16": "cvt_bf16.h.j2",
       "dropout": "dropout.h.j2", "exp": "exp.h.j2"}

ISAS = ("scalar", "avx2", "avx512", "neon")
WEIGHTS = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "nf4", "fp4", "int4", "int8")

KERNELS = (
    [dict(op="dot", wfmt=w, afmt="f32", isa=isa, unroll=UNROLL[isa])
     for isa in ISAS for w in WEIGHTS] +
    [dict(op="deq", wfmt=w, afmt="f32", isa=isa, unroll=1)
     for isa in ISAS for w in WEIGHTS] +
    [dict(op="gemm", wfmt="f32", afmt="f32", isa=isa, unroll=1)
     for isa in ISAS] +
    # bf16 x bf16 -> f32 GEMM (--bf16): the portable scalar one and the AVX-512-BF16 one
    [dict(op=op, wfmt="bf16", afmt="bf16" if op == "gemm_bf16" else "f32", isa=isa, unroll=1)
     for isa in ("scalar", "avx512bf16") for op in ("gemm_bf16", "cvt_bf16")] +
    [dict(op="gemm_bf16", wfmt="bf16", afmt="bf16", isa="amx", unroll=1)] +
    [dict(op=op, wfmt="f32", afmt="f32", isa=isa, unroll=1) for isa in ISAS for op in ("dropout", "exp")]
)
