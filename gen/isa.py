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
    # AArch64 Advanced SIMD is part of the base ARMv8.0-A architecture: no target attribute and no
    # run-time probe beyond "we are on aarch64" (qlora__detect_cpu). Kernels use ARMv8.0 only
    # (no dotprod / bf16 / fp16 arithmetic). GEMM tile 8 x 8: the 32 q-registers hold 16 accumulators
    # (8 rows x 2 vectors), 8 A vectors (4 consecutive k of each row, used with vfmaq_laneq_f32, so
    # one A load feeds 4 k steps) and 2 B vectors = 26, with room to spare and no spills; 8 x 12
    # would need 24 + 8 + 3 = 35.
    "neon": dict(
        name="neon", enum="QLORA_ISA_NEON", macro="QLORA__K_NEON",
        guard="defined(QLORA__ARM64) && !defined(QLORA_NO_NEON)",
        deny="QLORA_NO_NEON", target="", cpu_bit="QLORA_CPU_NEON", width=4, prio=25,
        gemm_mr=8, gemm_nr=8,
    ),
    # AVX-512 + BF16 (Zen 4+, Cooper Lake, Sapphire Rapids+): vdpbf16ps does 2 multiply-adds of bf16 pairs
    # per f32 lane, twice the f32 FMA rate. Only the bf16 GEMM micro-kernel uses it (--bf16 training);
    # everything else stays on the avx512 kernels. GCC >= 10 / clang >= 9 know the intrinsics.
    "avx512bf16": dict(
        name="avx512bf16", enum="QLORA_ISA_AVX512BF16", macro="QLORA__K_AVX512BF16",
        guard=("defined(QLORA__X86) && !defined(QLORA_NO_AVX2) && !defined(QLORA_NO_AVX512) && !defined(QLORA_NO_AVX512BF16) && "
               "defined(QLORA__HAVE_TARGET_ATTR) && (defined(__clang__) ? __clang_major__ >= 9 : __GNUC__ >= 10)"),
        deny="QLORA_NO_AVX512BF16", target="QLORA__TARGET_AVX512BF16", cpu_bit="QLORA_CPU_AVX512BF16", width=16, prio=35,
        gemm_mr=8, gemm_nr=32,
    ),
    # AMX-BF16 (Sapphire Rapids+): 8 tile registers of 16 rows x 64 bytes; tdpbf16ps multiplies a
    # 16 x 32 bf16 tile by a 32 x 16 one into 16 x 16 f32 (512 multiply-adds per instruction).
    # The GEMM tile is 32 x 32 = 2 x 2 accumulator tiles, 2 A tiles, 2 B tiles. Linux needs
    # arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) first (qlora__detect_cpu asks).
    "amx": dict(
        name="amx", enum="QLORA_ISA_AMX", macro="QLORA__K_AMX",
        guard=("defined(QLORA__X86) && defined(__linux__) && !defined(QLORA_NO_AVX2) && !defined(QLORA_NO_AVX512) && "
               "!defined(QLORA_NO_AVX512BF16) && !defined(QLORA_NO_AMX) && defined(QLORA__HAVE_TARGET_ATTR) && "
               "(defined(__clang__) ? __clang_major__ >= 12 : __GNUC__ >= 11)"),
        deny="QLORA_NO_AMX", target="QLORA__TARGET_AMX", cpu_bit="QLORA_CPU_AMX", width=16, prio=40,
        gemm_mr=32, gemm_nr=32,
    ),
}

ISA_ORDER = ["scalar", "avx2", "avx512", "neon", "avx512bf16", "amx"]
