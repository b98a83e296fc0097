#!/usr/bin/env bash
# Benchmarks of qlora.h on this machine, with the peers run in the same script where they exist.
#   bash bench/bench.sh [quick]
# Prints: kernel GFLOP/s vs this machine's measured peak (build/bench_kernels), load time, decode
# tokens/s (1 and 2 threads) for SmolLM2 as shipped (Q4_1) and re-quantized (NF4+DQ), peak RSS NF4
# vs f32, llama.cpp decode tokens/s on the same GGUF when llama-cpp-python is installed, and QLoRA
# training tokens/s + peak RSS.
set -u
Q=./build/qlora
M=models/SmolLM2-135M-Instruct-Q4_1.gguf
QUICK=${1:-}
N=128; STEPS=2; [ "$QUICK" = quick ] && { N=32; STEPS=1; }
[ -x $Q ] && [ -f $M ] || { echo "run: make build/qlora smollm2"; exit 1; }
PROMPT=$(python3 -c "print(' '.join(['The history of the city is long and full of surprises.'] * 12))")   # ~128 tokens

rss_kb() { /usr/bin/time -f "%M" "$@" 2>&1 >/dev/null | tail -1; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
# Kernels vs this machine's measured peak (prints a `kernels: gemm_fwd_pct_peak=.. gemm_bwd_pct_peak=..` line).
if [ -x ./build/bench_kernels ]; then
  if [ "$QUICK" = quick ]; then ./build/bench_kernels --quick; else ./build/bench_kernels; fi
else
  echo "kernel benchmark skipped: run make build/bench_kernels"
fi
for q in "" "--quant nf4 --double-quant"; do
  for t in 1 2; do
    line=$($Q generate $M $q --prompt "$PROMPT" -n $N --temp 0 --threads $t -v 2>&1 >/dev/null | grep "generated")
    echo "generate ${q:-q4_1 as shipped} threads=$t: $line"
  done
done
ours2=$($Q generate $M --prompt "$PROMPT" -n $N --temp 0 --threads 2 -v 2>&1 >/dev/null | grep -o '([0-9.]* tok/s' | tr -d '(')
echo "peak RSS generate, q4_1: $(rss_kb $Q generate $M --prompt hi -n 8 --temp 0) KiB; nf4+dq: $(rss_kb $Q generate $M --quant nf4 --double-quant --prompt hi -n 8 --temp 0) KiB"
$Q export-hf $M --out build/bench-f32 >/dev/null 2>&1 && \
  echo "peak RSS generate, f32 HF export: $(rss_kb $Q generate build/bench-f32 --tokenizer $M --prompt hi -n 8 --temp 0) KiB"
if python3 -c "import llama_cpp" 2>/dev/null; then
  theirs=$(python3 - "$M" "$N" "$PROMPT" <<'EOF'
import sys, time, llama_cpp
m = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=512, n_threads=2, verbose=False)
t0 = time.time(); out = m(sys.argv[3], max_tokens=int(sys.argv[2]), temperature=0.0); dt = time.time() - t0
print('%.2f' % (out['usage']['completion_tokens'] / dt))
EOF
)
  echo "llama.cpp (llama-cpp-python) threads=2: $theirs tok/s incl. prompt; ours: $ours2"
  ratio=$(python3 -c "import sys; print('%.2f' % (float(sys.argv[1].split()[0]) / float(sys.argv[2])))" "$ours2" "$theirs")
  echo "decode_ratio_vs_llamacpp=$ratio"
else
  echo "llama-cpp-python not installed: no llama.cpp comparison (pip install llama-cpp-python)"
fi
printf '%s\n' "$(head -c 200000 fixtures/tinyshakespeare.txt 2>/dev/null)" > build/bench-train.txt
for ck in "" "--gradient-checkpointing"; do
  for t in 1 2; do
    rm -rf build/bench-train
    out=$( { /usr/bin/time -f "peakrss %M" $Q finetune $M --data build/bench-train.txt --quant nf4 --double-quant --lora-r 16 --lora-alpha 32 \
          --target-modules all-linear --max-seq-length 256 --per-device-train-batch-size 4 --max-steps $STEPS --logging-steps 1 \
          --threads $t $ck --output-dir build/bench-train; } 2>&1 )
    tps=$(tail -1 build/bench-train/metrics.jsonl | python3 -c "import sys,json; print(json.loads(sys.stdin.read())['tokens_per_second'])")
    echo "train SmolLM2 nf4+dq r16 all-linear seq256 batch4 ${ck:-no-checkpointing} threads=$t: $tps tok/s, $(echo "$out" | grep -o 'peakrss [0-9]*' | awk '{print $2}') KiB peak RSS"
  done
done

# The peer: the same job (checkpointing on, 2 threads) in PyTorch + PEFT + bitsandbytes.
ours_tok=$(rm -rf build/bench-train; $Q finetune $M --data build/bench-train.txt --quant nf4 --double-quant --lora-r 16 --lora-alpha 32 \
    --target-modules all-linear --max-seq-length 256 --per-device-train-batch-size 4 --max-steps $STEPS --logging-steps 1 \
    --threads 2 --gradient-checkpointing --output-dir build/bench-train >/dev/null 2>&1; tail -1 build/bench-train/metrics.jsonl | python3 -c "import sys,json; print(json.loads(sys.stdin.read())['tokens_per_second'])")
ours_rss=$(rm -rf build/bench-train; rss_kb $Q finetune $M --data build/bench-train.txt --quant nf4 --double-quant --lora-r 16 --lora-alpha 32 \
    --target-modules all-linear --max-seq-length 256 --per-device-train-batch-size 4 --max-steps 1 --threads 2 --gradient-checkpointing --output-dir build/bench-train)
if python3 -c "import torch, peft, bitsandbytes, transformers" 2>/dev/null; then
  theirs=$(python3 bench/bench_torch.py build/bench-f32 build/bench-train.txt --steps $STEPS --threads 2 --ckpt 2>/dev/null | tail -1)
  echo "pytorch+peft+bitsandbytes (nf4+dq, bf16 compute, ckpt, 2 threads): $theirs"
  echo "$theirs" | python3 -c "
import sys
kv = dict(x.split('=') for x in sys.stdin.read().split())
ours, rss = float(sys.argv[1]), float(sys.argv[2]) / 1024
print('summary: train_tok_s=%.1f torch_tok_s=%s train_ratio=%.2f rss_ratio=%.2f decode_ratio_vs_llamacpp=%s'
      % (ours, kv['torch_tok_s'], ours / float(kv['torch_tok_s']), rss / float(kv['torch_rss_mib']), sys.argv[3]))" "$ours_tok" "$ours_rss" "${ratio:-n/a}"
else
  echo "torch/peft/bitsandbytes not installed: no PyTorch comparison (pip install torch transformers peft bitsandbytes)"
fi
