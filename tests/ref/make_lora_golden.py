"""Reference data for LoRA / QLoRA training parity with PyTorch + PEFT + bitsandbytes (issue 3).

    pip install torch transformers peft bitsandbytes safetensors
    make fixtures                              # needs fixtures/stories260K.bin
    python3 tests/ref/make_lora_golden.py      # run from anywhere; writes tests/ref/lora_golden/

Everything runs on the CPU in float32 with torch.set_num_threads(1) and fixed seeds.

WHAT IS COMPUTED
Two base models x two base precisions = four "variants":
  tiny/    a random Llama written by transformers save_pretrained (float32, one model.safetensors):
           vocab 128, hidden 64, intermediate 128 (not 96: see BNB CPU BUG below), 2 layers, 8 heads, 2 kv heads (GQA, head_dim 8),
           rope_theta 10000, rms_norm_eps 1e-5, untied lm_head, initializer_range 0.1, RMSNorm
           weights 1+0.1*randn.  The base is committed: tiny/base/.
  stories/ fixtures/stories260K.bin (llama2.c legacy format) converted to an HF dir by this script
           (q/k rows permuted from Meta's interleaved RoPE layout to HF rotate_half layout, exactly
           HF convert_llama_weights_to_hf.py `permute`; tied embeddings; eps 1e-5; theta 10000).
           The conversion is checked: transformers' greedy decode from BOS must equal llama2.c's
           golden ids (fixtures/README.md) for 32 tokens.  The HF dir goes to build/stories260K_hf/
           (NOT committed; the C side loads fixtures/stories260K.bin directly).
  f32/     base loaded with transformers from_pretrained(dtype=float32).
  nf4/     base loaded with BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
           bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=float32), device_map="cpu":
           the 7 linear kinds of every layer become bnb Linear4bit (blocksize 64, double-quant
           blocksize 256); embed_tokens, all RMSNorms and lm_head stay float32.
           prepare_model_for_kbit_training is NOT called (it would only freeze params, which PEFT
           does anyway, and cast non-4-bit params to f32, which they already are).

LoRA: PEFT LoraConfig(r=4, lora_alpha=8 -> scaling 2.0, lora_dropout=0.0, bias="none",
task_type="CAUSAL_LM", target_modules = q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj).
The initial adapter is NOT PEFT's default init (B=0 would give A no gradient): with a
torch.Generator seeded 1234 (tiny) / 4321 (stories), iterating the PEFT model's named_parameters()
in order, lora_A ~ U(-1/sqrt(in), 1/sqrt(in)) and lora_B ~ U(-0.05, 0.05).  It is saved once per
base with PEFT save_pretrained (<base>/adapter_init/) and every variant loads it with
PeftModel.from_pretrained(base, dir, is_trainable=True) — the same file the C side loads.

Batch (B=2, T=16; <base>/batch.safetensors and manifest.json): input_ids I32 [2,16], labels I32 [2,16].
  tiny:    random ids in [3,128), position 0 = 1 (BOS).  stories: BOS + llama2.c golden ids.
  row 1 is right-padded: positions 12..15 hold pad id 0 with label -100.
  labels = input_ids, except -100 at: row 0 positions 0,1,2 (a "prompt") and 9; row 1 positions 12..15.
  No attention_mask is passed (= all ones, plain causal): right padding cannot change non-pad
  positions; the logits at pad positions are still recorded and are those of an unmasked causal model.
Loss = HF ForCausalLMLoss: logits.float(); labels shifted left by one (label[t+1] is the target of
  position t; the last position has no target); cross_entropy(ignore_index=-100, reduction="mean")
  = mean over the non-ignored shifted targets (n_targets in the manifest; no num_items_in_batch).
Gradients: of every lora_A/lora_B after loss.backward() on that loss (one forward, no accumulation).
Training: a fresh base + the initial adapter, torch.optim.AdamW(lr=1e-3, betas=(0.9,0.999),
  eps=1e-8, weight_decay=0.0, foreach=False, fused=False, amsgrad=False) over the LoRA params only,
  10 steps on the same batch: zero_grad, forward (loss recorded = "losses"), backward, step.
  No clipping, no scheduler (constant lr), no accumulation.  After step 10 one more forward gives
  "loss_after".  torch's _single_tensor_adam (decoupled wd) per element, step t = 1..10, m = v = 0 at start:
     (wd == 0: no decay multiply at all);  m = m.lerp(g, 1-b1)  [f32];  v = v*b2 + (1-b2)*g*g  [f32]
     bc1 = 1 - b1**t, bc2 = 1 - b2**t, step_size = lr/bc1, bc2s = bc2**0.5   [Python doubles]
     denom = sqrt(v)/bc2s + eps  [f32];  p += -step_size * m / denom  [addcdiv, f32]

FILES (tests/ref/lora_golden/)
  manifest.json                           versions, settings, conventions, per-variant numbers
                                          (loss, losses[10], loss_after, float32 hex bits too), file list
  tiny/base/{config.json,generation_config.json,model.safetensors}   the tiny base (F32, HF names)
  <base>/batch.safetensors                input_ids I32[2,16], labels I32[2,16]
  <base>/adapter_init/{adapter_model.safetensors,adapter_config.json}
                                          PEFT-written initial adapter; keys
                                          base_model.model.model.layers.<i>.<self_attn|mlp>.<proj>.lora_A.weight
                                          F32 [r, in] and ...lora_B.weight F32 [out, r]
  <base>/<f32|nf4>/out.safetensors        logits F32 [2,16,V] (base + initial adapter),
                                          logits_base F32 [2,16,V] (base alone, adapter absent),
                                          loss F32 [1], losses F32 [10], loss_after F32 [1]
  <base>/<f32|nf4>/grads.safetensors      grad_<adapter key> F32, same shape as the parameter
                                          (e.g. grad_base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight)
  <base>/<f32|nf4>/adapter_final/{adapter_model.safetensors,adapter_config.json}
                                          PEFT save_pretrained after the 10 AdamW steps
  <base>/nf4/nf4_state.safetensors        bnb's quantized state for every Linear4bit, per HF module name
                                          M (e.g. model.layers.0.self_attn.q_proj), out x in weight:
     M.weight            U8  [out*in/2]  packed NF4 codes, row-major flatten of W, first element in the HIGH nibble
     M.absmax            U8  [nb]        nb = ceil(out*in/64); 8-bit codes of (absmax - offset)
     M.nested_absmax     F32 [ceil(nb/256)]  absmax of each 256-block of (absmax - offset)
     M.nested_offset     F32 [1]         offset = mean of the float32 absmax (torch CPU reduction)
     M.nested_quant_map  F32 [256]       signed dynamic map as built by bnb on this machine
     M.quant_map         F32 [16]        NF4 code book
     M.absmax_f32        F32 [nb]        the exact float32 absmax before double quant (recomputed with
                                         bnb's default quantize_4bit, which is what produced M.weight)
     M.absmax_dq         F32 [nb]        absmax as used by the forward: nested_quant_map[absmax]*nested_absmax[i//256]+offset
     model.layers.0.self_attn.q_proj.dequant F32 [out,in]  the weight the 4-bit matmul used (one layer only)
  Dequantized weight: W[j] = quant_map[code_j] * absmax_dq[j // 64]  (float32 multiply).

bitsandbytes backend on CPU (bnb 0.50, recorded in manifest["bnb"]):
  quantize_4bit        -> "default" backend (pure PyTorch, bucketize on NF4 midpoints; no CPU kernel
                          is registered), i.e. the algorithm the C quantizer is bit-exact with.
  quantize_blockwise   -> "cpu" backend (libbitsandbytes_cpu cquantize_blockwise_cpu_fp32) when the
                          native library loaded: the 8-bit absmax quantization of double quant.  This
                          script re-runs the default (exact nearest-code, bucketize) algorithm on the same
                          input and records how many of the absmax codes differ (manifest
                          "dq_absmax_code_mismatches"); if nonzero the C side must load nf4_state.
  dequantize_blockwise / dequantize_4bit -> "cpu" backend; checked equal to the formula above for
                          every quantized module (the script asserts it).
  BNB CPU BUG (0.50.2, libbitsandbytes_cpu cdequantize_blockwise_cpu_nf4_fp32): for an [out, in] weight
  with in % 64 != 0 but in % 32 == 0 (e.g. in = 96 or 160) the kernel takes row i, column j's scale from
  absmax[i*floor(in/64) + j//64] instead of absmax[(i*in + j)//64], so the dequantized weight (and the
  forward) is wrong.  in = 100, 172, 200, 1000, 1536 and multiples of 64 are right.  That is why the tiny
  model uses intermediate 128 (down_proj in = 128); stories' down_proj has in = 172 (verified right).
  Linear4bit.forward: on a CPU with AVX512-BF16, eval mode with a no-grad input converts the weight to
  a bf16 packed inference format (gemv in bf16).  All forwards here run in model.train() mode
  (dropout is 0 everywhere) so the f32 training path MatMul4Bit -> gemm_4bit default is used:
  out = x @ deq(W)^T in float32; the script asserts no module was converted.
"""
import json, math, os, struct, sys, shutil
import numpy as np
import torch, transformers, peft, bitsandbytes as bnb
import safetensors, safetensors.torch
from safetensors.torch import save_file, load_file

if os.environ.get("PYTHONHASHSEED") != "0":     # PEFT stores target_modules as a set: fix its JSON order
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable] + sys.argv)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.chdir(ROOT)
OUT = "tests/ref/lora_golden"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
R, ALPHA, LR, STEPS, B, T = 4, 8, 1e-3, 10, 2, 16
torch.set_num_threads(1)


def f32hex(x):
    return struct.pack("<f", float(x)).hex()


# ---------------------------------------------------------------------------------- base models
def make_tiny(d):
    torch.manual_seed(1234)
    cfg = transformers.LlamaConfig(
        vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=64,
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False, initializer_range=0.1,
        bos_token_id=1, eos_token_id=2, pad_token_id=0)
    m = transformers.LlamaForCausalLM(cfg).float()
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "norm" in n:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
    os.makedirs(d, exist_ok=True)
    m.save_pretrained(d, safe_serialization=True, max_shard_size="100MB")
    assert os.path.exists(os.path.join(d, "model.safetensors"))


def permute(w, n_heads):  # HF convert_llama_weights_to_hf.py: Meta interleaved -> rotate_half rows
    dim1, dim2 = w.shape
    return w.view(n_heads, dim1 // n_heads // 2, 2, dim2).transpose(1, 2).reshape(dim1, dim2)


def convert_stories(src, d):
    raw = open(src, "rb").read()
    dim, hidden, L, nh, nkv, vocab, seq = struct.unpack("<7i", raw[:28])
    shared = vocab > 0
    vocab = abs(vocab)
    hs = dim // nh
    kvd = nkv * hs
    w = torch.from_numpy(np.frombuffer(raw, dtype="<f4", offset=28).copy())
    pos = [0]

    def take(*shape):
        n = int(np.prod(shape))
        t = w[pos[0]:pos[0] + n].reshape(shape).clone()
        pos[0] += n
        return t
    emb = take(vocab, dim); att_n = take(L, dim)
    wq = take(L, dim, dim); wk = take(L, kvd, dim); wv = take(L, kvd, dim); wo = take(L, dim, dim)
    ffn_n = take(L, dim); w1 = take(L, hidden, dim); w2 = take(L, dim, hidden); w3 = take(L, hidden, dim)
    fin_n = take(dim)
    take(seq, hs // 2); take(seq, hs // 2)                      # freq_cis_real / imag (unused)
    wcls = emb if shared else take(vocab, dim)
    assert pos[0] == w.numel(), (pos[0], w.numel())
    cfg = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=dim, intermediate_size=hidden, num_hidden_layers=L,
        num_attention_heads=nh, num_key_value_heads=nkv, max_position_embeddings=seq,
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=shared,
        bos_token_id=1, eos_token_id=2, pad_token_id=0)
    m = transformers.LlamaForCausalLM(cfg).float()
    sd = {"model.embed_tokens.weight": emb, "model.norm.weight": fin_n}
    if not shared:
        sd["lm_head.weight"] = wcls
    for i in range(L):
        p = "model.layers.%d." % i
        sd[p + "input_layernorm.weight"] = att_n[i]
        sd[p + "post_attention_layernorm.weight"] = ffn_n[i]
        sd[p + "self_attn.q_proj.weight"] = permute(wq[i], nh)
        sd[p + "self_attn.k_proj.weight"] = permute(wk[i], nkv)
        sd[p + "self_attn.v_proj.weight"] = wv[i]
        sd[p + "self_attn.o_proj.weight"] = wo[i]
        sd[p + "mlp.gate_proj.weight"] = w1[i]
        sd[p + "mlp.down_proj.weight"] = w2[i]
        sd[p + "mlp.up_proj.weight"] = w3[i]
    missing, unexpected = m.load_state_dict(sd, strict=False)
    assert not unexpected and all("lm_head" in k for k in missing), (missing, unexpected)
    if shared:
        assert m.lm_head.weight.data_ptr() == m.model.embed_tokens.weight.data_ptr()
    os.makedirs(d, exist_ok=True)
    m.save_pretrained(d, safe_serialization=True, max_shard_size="100MB")
    # verify against llama2.c's greedy golden ids
    golden = [int(x) for x in open("fixtures/README.md").read().split("```")[1].split()]
    m.eval()
    ids = [1]
    with torch.no_grad():
        for _ in range(32):
            ids.append(int(m(torch.tensor([ids])).logits[0, -1].argmax()))
    assert ids[1:] == golden[:32], ("stories260K conversion mismatch", ids[1:], golden[:32])
    print("stories260K -> HF conversion: greedy 32 ids equal llama2.c golden")
    return golden


# ---------------------------------------------------------------------------------- helpers
def load_base(d, nf4):
    kw = dict(dtype=torch.float32, device_map="cpu")
    if nf4:
        kw["quantization_config"] = transformers.BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32)
    m = transformers.LlamaForCausalLM.from_pretrained(d, **kw)
    m.train()                                                  # see docstring: keeps the f32 4-bit path
    if nf4:
        for n, mod in m.named_modules():
            if isinstance(mod, bnb.nn.Linear4bit):
                assert n.split(".")[-1] in TARGETS
        assert not isinstance(m.lm_head, bnb.nn.Linear4bit)
        assert m.lm_head.weight.dtype == torch.float32 and m.model.embed_tokens.weight.dtype == torch.float32
    return m


def check_not_repacked(m):
    for n, mod in m.named_modules():
        if isinstance(mod, bnb.nn.Linear4bit):
            assert not getattr(mod.weight.quant_state, "packing_format_for_cpu", False), n


def peft_key(name):  # in-memory param name -> saved adapter key
    return name.replace(".default.", ".")


def lora_config():
    return peft.LoraConfig(r=R, lora_alpha=ALPHA, lora_dropout=0.0, bias="none",
                           target_modules=list(TARGETS), task_type="CAUSAL_LM")


def make_init_adapter(base_dir, out_dir, seed):
    m = load_base(base_dir, False)
    pm = peft.get_peft_model(m, lora_config())
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if not p.requires_grad:
                continue
            assert "lora_A" in n or "lora_B" in n, n
            if "lora_A" in n:
                bound = 1.0 / math.sqrt(p.shape[1])
            else:
                bound = 0.05
            p.copy_((torch.rand(p.shape, generator=g, dtype=torch.float32) * 2 - 1) * bound)
    pm.save_pretrained(out_dir)
    os.remove(os.path.join(out_dir, "README.md"))           # PEFT's model-card stub, not needed
    sd = load_file(os.path.join(out_dir, "adapter_model.safetensors"))
    for n, p in pm.named_parameters():
        if p.requires_grad:
            assert torch.equal(sd[peft_key(n)], p.detach()), n
    return sd


def hf_loss(logits, labels):
    V = logits.shape[-1]
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="mean")


def with_adapter(base_dir, nf4, adapter_dir):
    m = load_base(base_dir, nf4)
    pm = peft.PeftModel.from_pretrained(m, adapter_dir, is_trainable=True)
    pm.train()
    return pm


def nf4_dump(m, path):
    """bnb quantized state of every Linear4bit + consistency checks of the CPU backend."""
    out, stats = {}, {"dq_absmax_code_mismatches": 0, "n_absmax": 0, "dq_absmax_value_mismatches": 0}
    for n, mod in m.named_modules():
        if not isinstance(mod, bnb.nn.Linear4bit):
            continue
        if n.startswith("base_model.model."):
            n = n[len("base_model.model."):]
        if n.endswith(".base_layer"):
            n = n[: -len(".base_layer")]
        qs = mod.weight.quant_state
        assert qs.nested and qs.blocksize == 64 and qs.quant_type == "nf4" and qs.state2.blocksize == 256
        assert qs.dtype == torch.float32 and tuple(qs.shape) == (mod.out_features, mod.in_features)
        W = mod.weight.data.view(torch.uint8).reshape(-1).clone()
        out[n + ".weight"] = W
        out[n + ".absmax"] = qs.absmax.reshape(-1).clone()
        out[n + ".nested_absmax"] = qs.state2.absmax.reshape(-1).clone().float()
        out[n + ".nested_offset"] = qs.offset.reshape(1).clone().float()
        out[n + ".nested_quant_map"] = qs.state2.code.clone().float()
        out[n + ".quant_map"] = qs.code.clone().float()
        # absmax as the forward uses it (formula), compared with the cpu dequantize_blockwise kernel
        am_dq = qs.state2.code[qs.absmax.long()] * qs.state2.absmax.repeat_interleave(256)[: qs.absmax.numel()]
        am_dq = am_dq + qs.offset
        am_kernel = torch.ops.bitsandbytes.dequantize_blockwise(qs.absmax, qs.state2.absmax, qs.state2.code,
                                                                256, torch.float32) + qs.offset
        stats["dq_absmax_value_mismatches"] += int((am_dq != am_kernel).sum())
        out[n + ".absmax_dq"] = am_kernel.clone()
        deq = bnb.functional.dequantize_4bit(mod.weight.data, qs)
        code = qs.code
        codes = torch.stack([W >> 4, W & 15], 1).reshape(-1).long()
        formula = (code[codes] * am_kernel.repeat_interleave(64)[: codes.numel()]).reshape(deq.shape)
        assert torch.equal(formula, deq), n + ": dequantize_4bit != code*absmax_dq"
        if n == "model.layers.0.self_attn.q_proj":
            out[n + ".dequant"] = deq.clone().contiguous()
    return out, stats


def exact_quant_check(base_dir, st):
    """Re-quantize every f32 weight with bnb's default (pure PyTorch) kernels: the packed codes must
    equal what transformers produced, and the 8-bit absmax codes are compared (LUT vs exact)."""
    sd = load_file(os.path.join(base_dir, "model.safetensors"))
    mism, total, wmism, where = 0, 0, 0, []
    for k in list(st.keys()):
        if not k.endswith(".nested_offset"):
            continue
        n = k[: -len(".nested_offset")]
        w = sd[n + ".weight"].float()
        packed, absmax = torch.ops.bitsandbytes.quantize_4bit.default(w, 64, "nf4", torch.uint8)
        wmism += int((packed.reshape(-1) != st[n + ".weight"]).sum())
        st[n + ".absmax_f32"] = absmax.clone()
        offset = absmax.mean()
        assert torch.equal(offset.reshape(1), st[n + ".nested_offset"]), n
        # default (exact nearest, bucketize) 8-bit quantizer, called directly (not via dispatch)
        q_exact, am2 = _default_qblockwise(absmax - offset, st[n + ".nested_quant_map"], 256)
        assert torch.equal(am2, st[n + ".nested_absmax"]), n
        k_mism = int((q_exact != st[n + ".absmax"]).sum())
        if k_mism:
            where.append("%s: %d of %d" % (n, k_mism, absmax.numel()))
        mism += k_mism
        total += absmax.numel()
    return wmism, mism, total, where


def _default_qblockwise(A, code, blocksize):  # verbatim algorithm of bnb backends/default quantize_blockwise
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
    return torch.bucketize(scaled, bounds, out_int32=True).to(torch.uint8), absmax


# ---------------------------------------------------------------------------------- one variant
def run_variant(base_dir, adapter_dir, nf4, ids, labels, vdir, init_sd):
    os.makedirs(vdir, exist_ok=True)
    res = {}
    torch.manual_seed(0)
    # base logits (no adapter)
    m = load_base(base_dir, nf4)
    with torch.no_grad():
        logits_base = m(input_ids=ids).logits.float().clone()
    check_not_repacked(m)
    # forward/backward with the initial adapter
    pm = with_adapter(base_dir, nf4, adapter_dir)
    trainable = {peft_key(n): p for n, p in pm.named_parameters() if p.requires_grad}
    assert set(trainable) == set(init_sd), set(trainable) ^ set(init_sd)
    for k, p in trainable.items():
        assert torch.equal(p.detach(), init_sd[k]), k
    o = pm(input_ids=ids, labels=labels)
    loss = o.loss
    manual = hf_loss(o.logits, labels)
    lv, mv = float(loss.detach()), float(manual.detach())
    assert abs(lv - mv) <= 1e-6 * abs(mv), (lv, mv)
    loss.backward()
    check_not_repacked(pm)
    grads = {"grad_" + k: p.grad.detach().clone().contiguous() for k, p in trainable.items()}
    save_file(grads, os.path.join(vdir, "grads.safetensors"))
    res["loss"] = float(loss)
    res["grad_abs_max"] = max(float(g.abs().max()) for g in grads.values())
    res["grad_abs_min_nonzero_tensor_max"] = min(float(g.abs().max()) for g in grads.values())
    logits = o.logits.detach().float().clone()
    if nf4:
        st, stats = nf4_dump(pm, None)
        wm, mism, total, where = exact_quant_check(base_dir, st)
        stats.update({"packed_code_mismatches_vs_default_quantize_4bit": wm,
                      "dq_absmax_code_mismatches": mism, "n_absmax": total,
                      "dq_absmax_code_mismatch_modules": where})
        save_file(st, os.path.join(vdir, "nf4_state.safetensors"))
        res["nf4_checks"] = stats
    del pm, m
    # 10 AdamW steps on a fresh copy
    torch.manual_seed(0)
    pm = with_adapter(base_dir, nf4, adapter_dir)
    params = [p for p in pm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                            amsgrad=False, foreach=False, fused=False)
    losses = []
    for step in range(STEPS):
        opt.zero_grad(set_to_none=True)
        l = pm(input_ids=ids, labels=labels).loss
        losses.append(float(l))
        l.backward()
        if step == 0:  # same gradient as above (determinism check)
            for n, p in pm.named_parameters():
                if p.requires_grad:
                    assert torch.equal(p.grad, grads["grad_" + peft_key(n)]), n
        opt.step()
    with torch.no_grad():
        loss_after = float(pm(input_ids=ids, labels=labels).loss)
    check_not_repacked(pm)
    assert losses[0] == res["loss"]
    pm.save_pretrained(os.path.join(vdir, "adapter_final"))
    os.remove(os.path.join(vdir, "adapter_final", "README.md"))
    save_file({"logits": logits.contiguous(), "logits_base": logits_base.contiguous(),
               "loss": torch.tensor([res["loss"]], dtype=torch.float32),
               "losses": torch.tensor(losses, dtype=torch.float32),
               "loss_after": torch.tensor([loss_after], dtype=torch.float32)},
              os.path.join(vdir, "out.safetensors"))
    res.update({"losses": losses, "loss_after": loss_after,
                "loss_hex": f32hex(res["loss"]), "losses_hex": [f32hex(x) for x in losses],
                "loss_after_hex": f32hex(loss_after),
                "loss_base_only": float(hf_loss(logits_base, labels)),
                "logits_abs_max": float(logits.abs().max()),
                "logits_minus_base_abs_max": float((logits - logits_base).abs().max())})
    return res


def make_batch(vocab, seed, tokens=None):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (B, T), generator=g, dtype=torch.int64)
    if tokens is not None:                                 # real text: BOS + golden ids
        ids[0, 1:] = torch.tensor(tokens[:T - 1])
        ids[1, 1:] = torch.tensor(tokens[T - 1:2 * T - 2])
    ids[:, 0] = 1
    ids[1, 12:] = 0                                        # right padding, pad id 0
    labels = ids.clone()
    labels[0, :3] = -100
    labels[0, 9] = -100
    labels[1, 12:] = -100
    return ids, labels


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    golden = None
    bases = {}
    tiny_dir = os.path.join(OUT, "tiny", "base")
    make_tiny(tiny_dir)
    bases["tiny"] = (tiny_dir, 1234, None)
    st_dir = "build/stories260K_hf"
    if os.path.isdir(st_dir):
        shutil.rmtree(st_dir)
    golden = convert_stories("fixtures/stories260K.bin", st_dir)
    bases["stories"] = (st_dir, 4321, golden)
    manifest = {
        "generator": "tests/ref/make_lora_golden.py (see its docstring for every file's layout)",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": peft.__version__, "bitsandbytes": bnb.__version__,
                     "safetensors": safetensors.__version__},
        "lora": {"r": R, "lora_alpha": ALPHA, "scaling": ALPHA / R, "lora_dropout": 0.0, "bias": "none",
                 "target_modules": TARGETS, "init": "lora_A ~ U(-1/sqrt(in),1/sqrt(in)), lora_B ~ U(-0.05,0.05), torch.Generator(seed), named_parameters order"},
        "optimizer": {"type": "torch.optim.AdamW", "lr": LR, "betas": [0.9, 0.999], "eps": 1e-8,
                      "weight_decay": 0.0, "foreach": False, "fused": False, "amsgrad": False, "steps": STEPS,
                      "clipping": None, "schedule": "constant", "batch": "same batch every step",
                      "losses": "loss before each optimizer step (losses[0] == loss)",
                      "loss_after": "loss after the 10th step"},
        "loss": {"convention": "HF ForCausalLMLoss: target of position t is labels[t+1]; last position has no target; "
                               "cross_entropy(ignore_index=-100) mean over non-ignored shifted targets",
                 "attention_mask": "none (all ones, causal); padding is on the right"},
        "nf4": {"BitsAndBytesConfig": {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
                                       "bnb_4bit_use_double_quant": True, "bnb_4bit_compute_dtype": "float32"},
                "blocksize": 64, "nested_blocksize": 256, "not_quantized": ["embed_tokens", "norms", "lm_head"],
                "forward": "train mode: out = x @ deq(W)^T (float32), deq via cpu dequantize_blockwise(+offset) and dequantize_4bit"},
        "bnb": {"quantize_4bit": "default backend (pure PyTorch bucketize; no cpu kernel registered)",
                "quantize_blockwise (double-quant absmax)": "cpu backend (libbitsandbytes_cpu) if native lib loaded",
                "native_cpu_lib_loaded": not isinstance(bnb.cextension.lib, bnb.cextension.ErrorHandlerMockBNBNativeLibrary),
                "avx512bf16": bool(bnb.functional.has_avx512bf16())},
        "models": {},
    }
    for name, (bdir, seed, gold) in bases.items():
        cfg = json.load(open(os.path.join(bdir, "config.json")))
        V = cfg["vocab_size"]
        ids, labels = make_batch(V, seed, gold)
        bd = os.path.join(OUT, name)
        os.makedirs(bd, exist_ok=True)
        save_file({"input_ids": ids.to(torch.int32).contiguous(), "labels": labels.to(torch.int32).contiguous()},
                  os.path.join(bd, "batch.safetensors"))
        adir = os.path.join(bd, "adapter_init")
        init_sd = make_init_adapter(bdir, adir, seed)
        entry = {"base": bdir if name == "tiny" else "fixtures/stories260K.bin (HF conversion in build/stories260K_hf, not committed)",
                 "config": {k: cfg.get(k) for k in ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                                    "num_attention_heads", "num_key_value_heads", "rms_norm_eps",
                                                    "rope_theta", "rope_parameters", "tie_word_embeddings", "head_dim"]},
                 "adapter_init": adir, "init_seed": seed,
                 "input_ids": ids.tolist(), "labels": labels.tolist(),
                 "n_targets": int((labels[:, 1:] != -100).sum()),
                 "n_lora_params": int(sum(v.numel() for v in init_sd.values())),
                 "variants": {}}
        for variant in ["f32", "nf4"]:
            vdir = os.path.join(bd, variant)
            r = run_variant(bdir, adir, variant == "nf4", ids, labels, vdir, init_sd)
            r["files"] = sorted(os.path.relpath(os.path.join(dp, f), OUT) for dp, _, fs in os.walk(vdir) for f in fs)
            entry["variants"][variant] = r
            print("%-8s %-4s loss %.7f  losses %s  after %.7f" % (name, variant, r["loss"],
                  " ".join("%.5f" % x for x in r["losses"]), r["loss_after"]))
            if "nf4_checks" in r:
                print("         nf4 checks", r["nf4_checks"])
        manifest["models"][name] = entry
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    tot = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(OUT) for f in fs)
    print("wrote %s: %d bytes" % (OUT, tot))
    assert tot < 2 * 1024 * 1024


if __name__ == "__main__":
    main()
