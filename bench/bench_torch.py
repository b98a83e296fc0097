"""The peer for bench/bench.sh: the same QLoRA job in PyTorch + transformers + PEFT +
bitsandbytes on the CPU, with their best CPU settings (NF4 + double quant, bf16 compute,
torch threads = --threads).

    python3 bench/bench_torch.py HF_DIR DATA.txt [--steps 2] [--seq 256] [--batch 4] [--threads 2] [--ckpt]

HF_DIR is a Hugging Face copy of the model (`build/qlora export-hf MODEL --out DIR`). Prints one
line: `torch_tok_s=<tokens/s after a warm-up step> torch_rss_mib=<peak RSS> loss=<last loss>`.
"""
import argparse, resource, time

import torch
import transformers
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

ap = argparse.ArgumentParser()
ap.add_argument("model"); ap.add_argument("data")
ap.add_argument("--steps", type=int, default=2); ap.add_argument("--seq", type=int, default=256)
ap.add_argument("--batch", type=int, default=4); ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--ckpt", action="store_true")
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)

bnb = transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                      bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16)
model = transformers.AutoModelForCausalLM.from_pretrained(a.model, quantization_config=bnb, dtype=torch.bfloat16)
model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=a.ckpt)
model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                         task_type="CAUSAL_LM"))
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
# token ids are random but fixed: throughput and memory do not depend on their values
V = model.config.vocab_size
ids = torch.randint(0, V, (a.steps + 1, a.batch, a.seq))
model.train()
t0 = None
for s in range(a.steps + 1):
    if s == 1:
        t0 = time.time()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(input_ids=ids[s], labels=ids[s])
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    opt.step(); opt.zero_grad()
dt = time.time() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("torch_tok_s=%.1f torch_rss_mib=%.0f loss=%.4f" % (a.steps * a.batch * a.seq / dt, rss, out.loss.item()))
