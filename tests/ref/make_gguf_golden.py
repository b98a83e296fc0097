#!/usr/bin/env python3
"""Golden data for the GGUF reader and the ggml block dequantizers, produced with the
reference Python implementation in PyPI `gguf` (gguf-py from llama.cpp, tested with 0.19.0)
and numpy only -- no C code of ours is involved.

Outputs (run from the repo root:  python3 tests/ref/make_gguf_golden.py):

  tests/ref/q4_0_test.gguf       a small GGUF v3 file written with gguf.GGUFWriter:
      * metadata of every GGUF value type (scalars, arrays of each scalar type, arrays of
        strings, nested arrays), custom alignment 64 (general.alignment = 64);
      * tensors "x.<type>" quantized with gguf.quants.quantize (Q4_0, Q4_1, Q8_0, F16, BF16, F32)
        and "x.<type>.expected" = gguf.quants.dequantize of the same bytes, stored as F32.
      The C test checks every metadata value and that our dequantizer reproduces *.expected
      bit for bit.

  tests/ref/smollm2_dequant.txt  for models/SmolLM2-135M-Instruct-Q4_1.gguf: per tensor, the
      64-bit FNV-1a hash over the little-endian float32 bytes of the whole dequantized tensor
      (row-major, ggml order: ne[0] fastest) and its first 8 values (as %.9g and as hex bits).
      Format, one line per tensor:
        tensor <name> <ggml_type> ne0 ne1 fnv1a64=<16 hex> first8=<v0,...,v7> bits=<h0,...,h7>
"""
import os
import struct
import sys

import numpy as np
import gguf
from gguf import GGUFWriter, GGUFValueType as VT, GGMLQuantizationType as QT

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SMOL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct-Q4_1.gguf")

FNV_OFFSET = 0xcbf29ce484222325
FNV_PRIME = 0x100000001b3
M64 = (1 << 64) - 1


def fnv1a64(buf: bytes) -> int:
    """Plain 64-bit FNV-1a: h = offset; for each byte: h ^= b; h *= prime (mod 2^64).
    A byte-at-a-time Python loop: about a minute for the 113 MB token embedding."""
    h = FNV_OFFSET
    p = FNV_PRIME
    for b in buf:
        h = ((h ^ b) * p) & M64
    return h


def write_test_gguf(path: str) -> None:
    rng = np.random.default_rng(20241125)
    w = GGUFWriter(path, arch="qloratest")
    w.add_custom_alignment(64)
    # --- metadata: one key per scalar type (values chosen near the edges of each type) ----
    w.add_uint8("test.uint8", 200)
    w.add_int8("test.int8", -100)
    w.add_uint16("test.uint16", 60000)
    w.add_int16("test.int16", -30000)
    w.add_uint32("test.uint32", 4000000000)
    w.add_int32("test.int32", -2000000000)
    w.add_float32("test.float32", 3.14159)          # stored as float32(3.14159)
    w.add_bool("test.bool_true", True)
    w.add_bool("test.bool_false", False)
    w.add_string("test.string", "h\u00e9llo w\u00f6rld \u2603")   # UTF-8, 17 bytes
    w.add_key_value("test.empty_string", "", VT.STRING)   # add_string() drops ""
    w.add_uint64("test.uint64", 18446744073709551615)
    w.add_int64("test.int64", -9000000000000000000)
    w.add_float64("test.float64", 2.718281828459045)
    # --- arrays of every scalar element type ---------------------------------------------
    w.add_key_value("arr.uint8", [0, 1, 255], VT.ARRAY, VT.UINT8)
    w.add_key_value("arr.int8", [-128, 0, 127], VT.ARRAY, VT.INT8)
    w.add_key_value("arr.uint16", [0, 65535], VT.ARRAY, VT.UINT16)
    w.add_key_value("arr.int16", [-32768, 32767], VT.ARRAY, VT.INT16)
    w.add_key_value("arr.uint32", [1, 4294967295], VT.ARRAY, VT.UINT32)
    w.add_key_value("arr.int32", [-1, 0, 1, 2147483647], VT.ARRAY, VT.INT32)
    w.add_key_value("arr.float32", [0.5, -1.25, 1e-3], VT.ARRAY, VT.FLOAT32)
    w.add_key_value("arr.bool", [True, False, True], VT.ARRAY, VT.BOOL)
    w.add_key_value("arr.string", ["a", "bc", "", "\u00fcn\u00ef"], VT.ARRAY, VT.STRING)
    w.add_key_value("arr.uint64", [0, 18446744073709551615], VT.ARRAY, VT.UINT64)
    w.add_key_value("arr.int64", [-9223372036854775808, 42], VT.ARRAY, VT.INT64)
    w.add_key_value("arr.float64", [1.0 / 3.0, -2.5e300], VT.ARRAY, VT.FLOAT64)
    # nested arrays: each element is (u32 elem type, u64 n, elements) -- GGUF spec
    w.add_key_value("arr.nested_int32", [[1, 2], [3, 4, 5]], VT.ARRAY, VT.ARRAY)
    w.add_key_value("arr.nested_string", [["x", "yz"], ["w"]], VT.ARRAY, VT.ARRAY)
    w.add_string("test.after_nested", "ok")          # parsed only if nested arrays were skipped right

    # --- tensors -------------------------------------------------------------------------
    # numpy shape (rows, cols) -> GGUF ne = [cols, rows]; cols multiple of 32 for block types.
    specs = [("q4_0", QT.Q4_0, (4, 64)), ("q4_1", QT.Q4_1, (4, 64)), ("q8_0", QT.Q8_0, (3, 96)),
             ("f16", QT.F16, (2, 48)), ("bf16", QT.BF16, (2, 48)), ("f32", QT.F32, (2, 16))]
    for name, qt, shape in specs:
        x = rng.standard_normal(shape).astype(np.float32)
        x[0, :4] = [0.0, -0.0, 1e-8, -3.5]           # a zero, a signed zero, a subnormal-ish tiny
        if qt == QT.F32:
            w.add_tensor("x." + name, x)
            exp = x.copy()
        else:
            qb = gguf.quants.quantize(x, qt)
            exp = gguf.quants.dequantize(qb, qt).astype(np.float32).reshape(shape)
            w.add_tensor("x." + name, qb, raw_dtype=qt)
        w.add_tensor("x." + name + ".expected", exp)
    # a 3-D tensor (n_dims = 3, ne = [32, 3, 2]) of Q4_0 to test shapes beyond 2-D
    x3 = rng.standard_normal((2, 3, 32)).astype(np.float32)
    qb3 = gguf.quants.quantize(x3, QT.Q4_0)
    w.add_tensor("x3.q4_0", qb3, raw_dtype=QT.Q4_0)
    w.add_tensor("x3.q4_0.expected", gguf.quants.dequantize(qb3, QT.Q4_0).astype(np.float32).reshape(x3.shape))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def smollm2_hashes(path: str, out: str) -> None:
    r = gguf.GGUFReader(path)
    want = ["token_embd.weight", "blk.0.attn_q.weight", "blk.29.ffn_down.weight"]
    lines = ["# generated by tests/ref/make_gguf_golden.py with gguf-py + numpy (gguf.quants.dequantize)",
             "# tensor <name> <ggml_type> <ne0> <ne1> fnv1a64=<hash over LE float32 bytes, ne0 fastest>"
             " first8=<%.9g values> bits=<float32 bit patterns>"]
    for t in r.tensors:
        if t.name not in want:
            continue
        deq = gguf.quants.dequantize(t.data, t.tensor_type).astype("<f4")
        deq = np.ascontiguousarray(deq).reshape(-1)
        ne = [int(v) for v in t.shape]
        assert deq.size == ne[0] * ne[1]
        h = fnv1a64(deq.tobytes())
        first = deq[:8]
        lines.append("tensor %s %s %d %d fnv1a64=%016x first8=%s bits=%s" % (
            t.name, t.tensor_type.name, ne[0], ne[1], h,
            ",".join("%.9g" % v for v in first),
            ",".join("%08x" % struct.unpack("<I", struct.pack("<f", v))[0] for v in first)))
        print(lines[-1], flush=True)
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    write_test_gguf(os.path.join(HERE, "q4_0_test.gguf"))
    print("wrote", os.path.join(HERE, "q4_0_test.gguf"), os.path.getsize(os.path.join(HERE, "q4_0_test.gguf")), "bytes")
    if os.path.exists(SMOL):
        smollm2_hashes(SMOL, os.path.join(HERE, "smollm2_dequant.txt"))
    else:
        print("missing", SMOL, "(run `make smollm2`); skipping smollm2_dequant.txt", file=sys.stderr)
