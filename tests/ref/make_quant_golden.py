#!/usr/bin/env python3
"""Golden data for tests/test_quant.c: bitsandbytes' pure-PyTorch (IEEE) reference.

    pip install torch bitsandbytes
    python3 tests/ref/make_quant_golden.py            # writes tests/ref/quant_golden.bin

Which bitsandbytes code runs: on CPU, torch.ops.bitsandbytes.quantize_4bit dispatches to the
"default" backend (backends/default/ops.py, pure PyTorch), but quantize_blockwise (used by double
quantization) dispatches to the "cpu" backend, a native 65,536-bin LUT approximation. To get the
IEEE reference for both, we capture every function handed to torch.library.register_kernel while
bitsandbytes is imported and call the "default" ones directly.

torch's CPU float32 sum (mean) is a vectorised cascade (8-lane accumulators, emulated in C); it
runs multi-threaded above 32768 elements, so we run torch with one thread.

File layout (little-endian):
    char magic[4] = "QLQG"; u32 version = 1
    u32 avx512                           # 1 if torch's CPU capability was AVX512 (informational)
    f32 dyn_signed[256]; f32 dyn_unsigned[256]     # create_dynamic_map(True/False)
    u32 fp4_order[16]                    # argsort(get_4bit_type("fp4")) as torch computed it
    u32 n_inputs; { u32 n; f32 x[n] } * n_inputs
    u32 n_cases;  { u32 input; u32 qtype (0 nf4, 1 fp4); u32 blocksize;
                    u32 nbytes; u8 packed[nbytes];
                    u32 nblocks; f32 absmax[nblocks];
                    u32 has_deq; f32 deq[n] if has_deq } * n_cases
    u32 n_dq;     { u32 nblocks; u32 synthetic;   # synthetic: absmax[i] = qg_synth(i), not stored
                    f32 absmax[nblocks] if !synthetic;
                    f32 offset;                         # absmax.mean() (torch, 1 thread)
                    u8 qabsmax[nblocks]; u32 nb2; f32 absmax2[nb2];
                    f32 deq[nblocks] if !synthetic }    # dequantize_blockwise(q) + offset
                  * n_dq
qg_synth(i) = (1 + (((i * 2654435761) mod 2^32) >> 8) % 65535) / 65536 exactly in float32.
"""
import os
import struct
import sys

import numpy as np
import torch

captured = {}
_orig_register_kernel = torch.library.register_kernel


def _spy(op, device_types, func=None, **kw):
    def deco(f):
        key = (op, device_types if isinstance(device_types, str) else tuple(device_types or ()))
        captured[key] = f
        return _orig_register_kernel(op, device_types, f, **kw)
    return deco(func) if func is not None else deco


torch.library.register_kernel = _spy
import bitsandbytes  # noqa: E402
import bitsandbytes.functional as F  # noqa: E402
torch.library.register_kernel = _orig_register_kernel

q4_default = captured[("bitsandbytes::quantize_4bit", "default")]
qbw_default = captured[("bitsandbytes::quantize_blockwise", "default")]
from bitsandbytes.backends.utils import _get_4bit_code  # noqa: E402
import bitsandbytes.backends.default.ops as default_ops  # noqa: E402
deq4_default = getattr(default_ops._dequantize_4bit_compute, "__wrapped__", default_ops._dequantize_4bit_compute)
dqbw_default = getattr(default_ops._dequantize_blockwise_compute, "__wrapped__",
                       default_ops._dequantize_blockwise_compute)

torch.set_num_threads(1)
cap = torch.backends.cpu.get_cpu_capability()

out = bytearray()
def u32(v): out.extend(struct.pack("<I", v))
def f32a(a): out.extend(np.asarray(a, dtype="<f4").tobytes())
def u8a(a): out.extend(np.asarray(a, dtype=np.uint8).tobytes())

out.extend(b"QLQG"); u32(1); u32(1 if cap == "AVX512" else 0)
dyn_s = F.create_dynamic_map(signed=True).float()
dyn_u = F.create_dynamic_map(signed=False).float()
f32a(dyn_s.numpy()); f32a(dyn_u.numpy())
fp4 = _get_4bit_code("fp4", torch.device("cpu"))
for v in torch.argsort(fp4).tolist(): u32(v)

g = torch.Generator().manual_seed(1234)
nf4 = _get_4bit_code("nf4", torch.device("cpu"))
inputs = []
inputs.append(torch.randn(4096, generator=g))                          # 0 normal
inputs.append(torch.rand(1007, generator=g) * 2 - 1)                   # 1 uniform, odd
x = torch.randn(4096 + 7, generator=g); x[::97] *= 100.0               # 2 outliers, partial block
inputs.append(x)
x = torch.randn(512 + 40, generator=g); x[64:192] = 0.0; x[512:] = 0.0  # 3 zero blocks + zero tail
inputs.append(x)
inputs.append(torch.randn(1, generator=g))                             # 4 n=1
inputs.append(torch.randn(63, generator=g))                            # 5 n=63
inputs.append(torch.randn(65, generator=g))                            # 6 n=65
# 7: ties. absmax 1 per 32-block so xs == x; values exactly on NF4/FP4 midpoints, tiny +-values, +-0
mid_nf4 = ((nf4[:-1] + nf4[1:]) / 2)
o = torch.argsort(fp4)
mid_fp4 = (fp4[o[:-1]] + fp4[o[1:]]) / 2
tv = torch.cat([mid_nf4, mid_fp4, torch.tensor([1e-6, -1e-6, 0.0, -0.0, 1e-30, -1e-30, 0.5, -0.5])])
tv = tv[: (tv.numel() // 31) * 31] if tv.numel() > 62 else tv
vals = []
for i in range(0, tv.numel(), 31):
    blk = list(tv[i:i + 31].tolist()); blk += [0.0] * (31 - len(blk)); vals += [1.0] + blk
inputs.append(torch.tensor(vals, dtype=torch.float32))
inputs.append(torch.randn(1000, generator=g) * 1e-3)                   # 8 small scale
x = torch.randn(300, generator=g); x[5] = 1e-39; x[6] = -3e-39          # 9 subnormals mixed in
x[256:] = torch.tensor(1e-40); x[299] = 0.0                            # tail block of subnormals
inputs.append(x)

u32(len(inputs))
for x in inputs:
    u32(x.numel()); f32a(x.numpy())

cases = []
for ii, x in enumerate(inputs):
    for qt in ("nf4", "fp4"):
        for bs in (32, 64, 128, 4096):
            cases.append((ii, qt, bs))
u32(len(cases))
for ii, qt, bs in cases:
    x = inputs[ii]
    packed, absmax = q4_default(x, bs, qt, torch.uint8)
    packed = packed.reshape(-1)
    u32(ii); u32(0 if qt == "nf4" else 1); u32(bs)
    u32(packed.numel()); u8a(packed.numpy())
    u32(absmax.numel()); f32a(absmax.numpy())
    has_deq = 1 if bs == 64 else 0
    u32(has_deq)
    if has_deq:
        # default backend's compute function without its torch.compile wrapper: code[q] * absmax
        deq = deq4_default(packed, absmax, _get_4bit_code(qt, x.device), bs, x.shape, torch.float32)
        f32a(deq.reshape(-1).numpy())


def synth(n):
    i = np.arange(n, dtype=np.uint64)
    h = ((i * np.uint64(2654435761)) % np.uint64(1 << 32)) >> np.uint64(8)
    return ((np.uint64(1) + h % np.uint64(65535)).astype(np.float32) / np.float32(65536.0)).astype(np.float32)


dq_inputs = []
for nb in (1, 255, 256, 257, 1000):
    xx = torch.randn(nb * 64, generator=g).view(nb, 64).abs().max(1)[0]
    dq_inputs.append((xx, 0))
xx = torch.randn(3000 * 64, generator=g).view(3000, 64).abs().max(1)[0]; xx[7] = 0.0
dq_inputs.append((xx, 0))
dq_inputs.append((torch.from_numpy(synth(30000)), 1))                 # one-chunk torch reduction
u32(len(dq_inputs))
for am, synthetic in dq_inputs:
    offset = am.mean()
    q, absmax2 = qbw_default(am - offset, dyn_s, 256)
    u32(am.numel()); u32(synthetic)
    if not synthetic:
        f32a(am.numpy())
    f32a(np.array([offset.item()], dtype=np.float32))
    u8a(q.numpy()); u32(absmax2.numel()); f32a(absmax2.numpy())
    if not synthetic:
        deq = dqbw_default(q.reshape(-1), absmax2, dyn_s, 256, torch.float32)   # code[q] * absmax2
        f32a((deq + offset).numpy())   # float32 add, as functional.dequantize_4bit does

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "quant_golden.bin")
with open(path, "wb") as f:
    f.write(out)
print(f"wrote {path}: {len(out)} bytes, torch {torch.__version__}, bitsandbytes {bitsandbytes.__version__}, "
      f"cpu capability {cap}", file=sys.stderr)
