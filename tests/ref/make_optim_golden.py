#!/usr/bin/env python3
"""Golden numbers for tests/test_optim.c -> tests/ref/optim_golden.bin.

Needs torch (2.15 used), bitsandbytes (0.50.2), transformers (5.x). CPU only.

Parameters and gradients come from an integer hash that C reproduces exactly (values k/2^s), so
the golden file holds only results. Three parameter tensors of 100, 5000 and 70000 elements
(small -> 32-bit state under the 8-bit optimizer; 8-bit with a partial block; many blocks),
10 steps with lr_k = 1e-3 * (1 - k/20).

Variants (each run twice):
  * stock:  exactly as the library ships. torch's CPU sqrt of a contiguous f32 tensor is MKL
            vsSqrt (HA mode, +-1 ulp, CPU dependent) -> C must match within a tolerance.
  * exact:  torch.Tensor.sqrt replaced by the correctly rounded one (via float64) -> the C port
            must be bitwise equal; we store an FNV-1a hash of all final parameters.
bnb 8-bit runs bnb.optim.AdamW8bit on the CPU backend (bnb 0.50 `_optimizer_update_8bit_blockwise_cpu`)
with its state (de)quantization swapped for bnb's default-backend (pure PyTorch, exact nearest
code) quantize_blockwise / dequantize_blockwise; the CPU backend's native LUT quantizer is
reported for information only.

Record format: u32 name_len, name, u32 kind (0 f32, 1 f64, 2 u64), u64 count, data (LE).
"""
import struct, sys, os, warnings
import numpy as np
import torch

warnings.filterwarnings("ignore")
torch.set_num_threads(1)
SIZES = [100, 5000, 70000]
SCALES = [1.0, 0.25, 1.0 / 64]
STEPS = 10
M32 = 0xFFFFFFFF


def hval(i, step, seg):
    """Integer hash -> k in [-2000, 2000]; mirrors qt_hash in tests/test_optim.c."""
    h = (i * 2654435761 + step * 40503 + seg * 7919 + 12345) & M32
    h ^= h >> 15
    h = (h * 2246822519) & M32
    h ^= h >> 13
    h = (h * 3266489917) & M32
    h ^= h >> 16
    return (h % 4001) - 2000


def tensor_vals(n, step, seg, scale):
    i = np.arange(n, dtype=np.uint64)
    h = (i * np.uint64(2654435761) + np.uint64(step * 40503 + seg * 7919 + 12345)) & np.uint64(M32)
    h ^= h >> np.uint64(15)
    h = (h * np.uint64(2246822519)) & np.uint64(M32)
    h ^= h >> np.uint64(13)
    h = (h * np.uint64(3266489917)) & np.uint64(M32)
    h ^= h >> np.uint64(16)
    k = (h % np.uint64(4001)).astype(np.int64) - 2000
    return torch.from_numpy((k.astype(np.float32) / np.float32(4096.0)) * np.float32(scale))


assert float(tensor_vals(5, 3, 1, 1.0)[2]) == hval(2, 3, 1) / 4096.0


def init_params():
    return [tensor_vals(n, 1000, s, 1.0).clone().requires_grad_(True) for s, n in enumerate(SIZES)]


def grads_at(step):
    return [tensor_vals(n, step, s, SCALES[s]) for s, n in enumerate(SIZES)]


def lr_at(k):
    return 1e-3 * (1.0 - k / 20.0)


def fnv(arrs):
    h = 0xcbf29ce484222325
    for a in arrs:
        for b in a.detach().numpy().astype("<f4").tobytes():
            h ^= b
            h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def subsample(arrs):
    a0, a1, a2 = [a.detach().numpy().astype(np.float32) for a in arrs]
    idx = np.array([i for i in range(len(a2)) if i % 16 == 0 or i >= len(a2) - 256])
    return np.concatenate([a0, a1, a2[idx]])


# ---- sqrt patch (exact variant) ----
_orig_sqrt = torch.Tensor.sqrt


def exact_sqrt(self):
    if self.dtype == torch.float32:
        return _orig_sqrt(self.double()).float()
    return _orig_sqrt(self)


# ---- bnb: default-backend (exact) blockwise quantization for the 8-bit optimizer ----
def q_default(A, code, blocksize):   # bitsandbytes/backends/default/ops.py quantize_blockwise
    A_flat = A.reshape(-1).float()
    n = A_flat.numel()
    rem = n % blocksize
    full = n - rem
    blocks = full // blocksize
    A_com = A_flat[:full].reshape(blocks, blocksize)
    absmax = A_com.abs().max(dim=-1)[0]
    scaled = torch.clamp(A_com * (1.0 / absmax.clamp(min=1e-38).view(-1, 1)), -1, 1).reshape(-1)
    if rem:
        am = A_flat[full:].abs().max().clamp(min=1e-38)
        absmax = torch.cat([absmax, am.unsqueeze(0)])
        scaled = torch.cat([scaled, torch.clamp(A_flat[full:] / am, -1, 1)])
    bounds = (code[:-1] + code[1:]) / 2
    q = torch.bucketize(scaled, bounds, out_int32=True).to(torch.uint8)
    return q.reshape(A.shape), absmax


def dq_default(A, absmax, code, blocksize):
    n = A.numel()
    out = code[A.reshape(-1).to(torch.int64)]
    rem = n % blocksize
    full = n - rem
    blocks = full // blocksize
    parts = [(out[:full].reshape(blocks, blocksize) * absmax[:blocks].view(-1, 1)).reshape(full)]
    if rem:
        parts.append(out[full:] * absmax[blocks])
    return torch.cat(parts).reshape(A.shape)


def patch_bnb_exact():
    import bitsandbytes.backends.cpu.ops as cpuops

    def quant(A_fp32, code, absmax_out, out_uint8, blocksize):
        out, absmax = q_default(A_fp32, code, blocksize)
        out_uint8.copy_(out)
        absmax_out.copy_(absmax)

    def dequant(A_uint8, absmax, code, blocksize):
        return dq_default(A_uint8, absmax, code, blocksize)

    saved = (cpuops._quant_blockwise_fp32_direct, cpuops._dequant_blockwise_fp32_direct)
    cpuops._quant_blockwise_fp32_direct = quant
    cpuops._dequant_blockwise_fp32_direct = dequant
    return saved


def unpatch_bnb(saved):
    import bitsandbytes.backends.cpu.ops as cpuops
    cpuops._quant_blockwise_fp32_direct, cpuops._dequant_blockwise_fp32_direct = saved


def run(make_opt):
    params = init_params()
    opt = make_opt(params)
    for k in range(STEPS):
        for g in opt.param_groups:
            g["lr"] = lr_at(k)
        for p, g in zip(params, grads_at(k)):
            p.grad = g.clone()
        opt.step()
    return params, opt


def main():
    import bitsandbytes as bnb
    from transformers import get_scheduler
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "optim_golden.bin")
    recs = []

    def rec(name, kind, arr):
        recs.append((name, kind, np.asarray(arr)))

    variants = {
        "torch_wd0": lambda ps: torch.optim.AdamW(ps, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, foreach=False),
        "torch_wd001": lambda ps: torch.optim.AdamW(ps, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, foreach=False),
        "bnb8_wd0": lambda ps: bnb.optim.AdamW8bit(ps, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0),
        "bnb8_wd001": lambda ps: bnb.optim.AdamW8bit(ps, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01),
        "paged32_wd001": lambda ps: bnb.optim.PagedAdamW32bit(ps, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01),
    }
    for name, mk in variants.items():
        is8 = name.startswith("bnb8")
        if is8:   # native CPU LUT quantizer, for information
            lut, _ = run(mk)
        saved = patch_bnb_exact() if is8 else None
        stock, _ = run(mk)
        torch.Tensor.sqrt = exact_sqrt
        exact, opt = run(mk)
        torch.Tensor.sqrt = _orig_sqrt
        if saved:
            unpatch_bnb(saved)
        s, e = subsample(stock), subsample(exact)
        rel = np.max(np.abs(s - e) / np.maximum(np.abs(e), 1e-30))
        info = f"{name}: stock vs exact-sqrt max rel {rel:.3g}, bitwise-equal {np.sum(s == e)}/{len(s)}"
        if is8:
            l = subsample(lut)
            info += f"; native LUT vs exact-quant max rel {np.max(np.abs(l - s) / np.maximum(np.abs(s), 1e-30)):.3g}"
            st = opt.state[exact[2]]
            assert st["state1"].dtype == torch.uint8 and opt.state[exact[0]]["state1"].dtype == torch.float32
        print(info)
        rec(name + ".sub", 0, s)
        rec(name + ".hash", 2, np.array([fnv(exact)], dtype=np.uint64))

    # schedules: the lr LambdaLR hands to the k-th optimizer step
    for sched in ["linear", "cosine", "constant", "constant_with_warmup"]:
        for (W, T) in [(0, 10), (3, 10), (10, 100), (5, 7)]:
            p = torch.nn.Parameter(torch.zeros(1))
            o = torch.optim.SGD([p], lr=2e-4)
            s = get_scheduler(sched, o, num_warmup_steps=W, num_training_steps=T)
            vals = []
            for k in range(T + 3):
                vals.append(o.param_groups[0]["lr"])
                o.step()
                s.step()
            rec(f"lr.{sched}.{W}.{T}", 1, np.array(vals, dtype=np.float64))

    # clipping: gradients of step 0 (x 64 so the norm is large), max_norm 1.0 and 1e6
    for mn in [1.0, 1e6]:
        gs = [g * 64.0 for g in grads_at(0)]
        ps = [torch.nn.Parameter(torch.zeros_like(g)) for g in gs]
        for p, g in zip(ps, gs):
            p.grad = g.clone()
        tot = torch.nn.utils.clip_grad_norm_(ps, mn)
        tag = "clip.%g" % mn
        rec(tag + ".norm", 0, np.array([float(tot)], dtype=np.float32))
        rec(tag + ".sub", 0, subsample([p.grad for p in ps]))

    m1 = bnb.functional.create_dynamic_map(signed=True).float().numpy()
    m2 = bnb.functional.create_dynamic_map(signed=False).float().numpy()
    rec("map.signed", 0, m1)
    rec("map.unsigned", 0, m2)

    with open(out, "wb") as f:
        f.write(b"QOPTGLD1")
        for name, kind, arr in recs:
            nb = name.encode()
            dt = {0: "<f4", 1: "<f8", 2: "<u8"}[kind]
            f.write(struct.pack("<I", len(nb)) + nb + struct.pack("<IQ", kind, arr.size))
            f.write(arr.astype(dt).tobytes())
    print("wrote", out, os.path.getsize(out), "bytes")


if __name__ == "__main__":
    main()
