"""The peer for bench/bench.sh: the same QLoRA job in PyTorch + transformers + PEFT +
bitsandbytes on the CPU, with their best CPU settings (NF4 + double quant, bf16 autocast compute,
torch threads = --threads), on the same data as `qlora finetune --data FILE` (plain text).

    python3 bench/bench_torch.py HF_DIR DATA.txt [--tokenizer T] [--steps 8] [--seq 256] [--batch 4]
                                 [--threads 2] [--ckpt] [--seed 42] [-v]

HF_DIR is a Hugging Face copy of the model (`build/qlora export-hf MODEL --out DIR`). The tokenizer
is HF_DIR's own (tokenizer.json) when it has one, else --tokenizer: a tokenizer directory, or a
.gguf file loaded through transformers' GGUF support (needs the `gguf` package).

The data is cut exactly like qlora.h's plain-text pipeline: the whole file tokenized once, cut into
consecutive --seq windows (a final window of one token is dropped, a shorter one is padded with
labels -100), ordered by qlora.h's seeded Fisher-Yates shuffle (splitmix64, epoch 0), batches of
--batch, labels = input_ids. So both train on the same batches in the same order. The job: LoRA
r 16, alpha 32, dropout 0.05, all-linear; AdamW lr 2e-4, betas (0.9, 0.999), eps 1e-8, weight
decay 0, linear decay to 0 over --steps, grad-norm clip 1.0 (qlora finetune's defaults).

Prints one line: `torch_tok_s=<tokens/s over steps 2..N (step 1 is warm-up)> torch_rss_mib=<peak
RSS> loss_first=<step 1 loss> loss_last=<step N loss> loss_mean=<mean of the N step losses>`.
"""
import argparse, os, resource, sys, time

T_START = time.time()

import torch
import transformers
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

ap = argparse.ArgumentParser()
ap.add_argument("model"); ap.add_argument("data")
ap.add_argument("--tokenizer", default=None)
ap.add_argument("--steps", type=int, default=8); ap.add_argument("--seq", type=int, default=256)
ap.add_argument("--batch", type=int, default=4); ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--ckpt", action="store_true"); ap.add_argument("--seed", type=int, default=42)
ap.add_argument("-v", action="store_true", help="load and per-step times on stderr")
a = ap.parse_args()
if a.steps < 2:
    ap.error("--steps must be >= 2 (step 1 is the warm-up)")
torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)


def load_tokenizer():
    if os.path.exists(os.path.join(a.model, "tokenizer.json")) or a.tokenizer is None:
        return transformers.AutoTokenizer.from_pretrained(a.model)
    if a.tokenizer.endswith(".gguf"):
        d, f = os.path.split(os.path.abspath(a.tokenizer))
        return transformers.AutoTokenizer.from_pretrained(d, gguf_file=f)
    return transformers.AutoTokenizer.from_pretrained(a.tokenizer)


# ---- data: qlora.h's plain-text windows and epoch-0 order
tok = load_tokenizer()
with open(a.data, encoding="utf-8") as f:
    ids = tok(f.read(), add_special_tokens=True)["input_ids"]
windows = [ids[s:s + a.seq] for s in range(0, len(ids) - 1, a.seq)]
M64 = (1 << 64) - 1


def splitmix64(s):
    s = (s + 0x9E3779B97F4A7C15) & M64
    x = s
    x ^= x >> 30; x = (x * 0xBF58476D1CE4E5B9) & M64
    x ^= x >> 27; x = (x * 0x94D049BB133111EB) & M64
    return s, x ^ (x >> 31)


_, h = splitmix64(0)                       # epoch 0
st, perm = a.seed ^ h, list(range(len(windows)))
for i in range(len(perm), 1, -1):
    st, v = splitmix64(st)
    j = v % i
    perm[i - 1], perm[j] = perm[j], perm[i - 1]
pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)


def batch(step):
    rows = [windows[perm[(step * a.batch + r) % len(perm)]] for r in range(a.batch)]
    x = torch.full((a.batch, a.seq), pad, dtype=torch.long)
    y = torch.full((a.batch, a.seq), -100, dtype=torch.long)
    for r, w in enumerate(rows):
        x[r, :len(w)] = torch.tensor(w); y[r, :len(w)] = torch.tensor(w)
    # padding only at the end of a row: causal attention never sees it, so no attention mask
    return x, y, sum(len(w) for w in rows)


# ---- model
bnb = transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                      bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16)
model = transformers.AutoModelForCausalLM.from_pretrained(a.model, quantization_config=bnb, dtype=torch.bfloat16)
model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=a.ckpt)
model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                                         task_type="CAUSAL_LM"))
params = [p for p in model.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=2e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
sched = transformers.get_linear_schedule_with_warmup(opt, 0, a.steps)
model.train()
if a.v:
    print("loaded (imports, tokenizer, data, model) in %.1f s" % (time.time() - T_START), file=sys.stderr)
losses, t1, tokens = [], None, 0
for s in range(a.steps):
    if s == 1:
        t1 = time.time()
    x, y, n = batch(s)
    if s >= 1:
        tokens += n
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(input_ids=x, labels=y)
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step(); sched.step(); opt.zero_grad()
    losses.append(out.loss.item())
    if a.v:
        print("step %d/%d loss %.4f  %.1f s since start" % (s + 1, a.steps, losses[-1], time.time() - T_START), file=sys.stderr)
dt = time.time() - t1
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("torch_tok_s=%.1f torch_rss_mib=%.0f loss_first=%.4f loss_last=%.4f loss_mean=%.4f"
      % (tokens / dt, rss, losses[0], losses[-1], sum(losses) / len(losses)))
