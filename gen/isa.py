"""ONE table of instruction sets (XNNPACK xnncommon.py equivalent).

Every fact the generator needs about an ISA lives here:
  enum      the qlora_isa value used in the registry
  guard     preprocessor condition under which the ISA's kernels are compiled (in qlora_kernels.h,
            evaluated after qlora.h's >>platform section defined QLORA__X86 / QLORA__HAVE_TARGET_ATTR)
  deny      the user macro that removes the ISA
  target    function attribute macro (defined in qlora.h >>platform); '' for portable C
  cpu_bit   QLORA_CPU_* bit required at run time (None = always available)
  width     f32 lanes per vector register
  prio      dispatch priority: among allowed kernels the highest wins
  gemm_mr   rows of the f32 GEMM micro-kernel's register tile (tokens)
  gemm_nr   columns of the tile (outputs): a multiple of width; the packed B panel is gemm_nr wide
"""

ISAS = {
    "scalar": dict(
        name="scalar", enum="QLORA_ISA_SCALAR", macro="QLORA__K_SCALAR",
        guard="1",
        deny=None, target="", cpu_bit=None, width=1, prio=10, gemm_mr=4, gemm_nr=8,
    ),
    "avx2": dict(
        name="avx2", enum="QLORA_ISA_AVX2", macro="QLORA__K_AVX2",
        guard=("defined(QLORA__X86) && !defined(QLORA_NO_AVX2) && (defined(QLORA__HAVE_TARGET_ATTR) || "
               "(defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)) || (defined(_MSC_VER) && defined(__AVX2__)))"),
        deny="QLORA_NO_AVX2", target="QLORA__TARGET_AVX2", cpu_bit="QLORA_CPU_AVX2", width=8, prio=20,
        gemm_mr=6, gemm_nr=16,
    ),
    "avx512": dict(
        name="avx512", enum="QLORA_ISA_AVX512", macro="QLORA__K_AVX512",
        guard=("defined(QLORA__X86) && !defined(QLORA_NO_AVX2) && !defined(QLORA_NO_AVX512) && "
               "(defined(QLORA__HAVE_TARGET_ATTR) || (defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)))"),
        deny="QLORA_NO_AVX512", target="QLORA__TARGET_AVX512", cpu_bit="QLORA_CPU_AVX512", width=16, prio=30,
        gemm_mr=8, gemm_nr=32,
    ),
}

ISA_ORDER = ["scalar", "avx2", "avx512"]
