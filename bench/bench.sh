#!/usr/bin/env bash
# Benchmarks of qlora.h on this machine, with the peers run in the same script, on the same data.
#   bash bench/bench.sh [quick]        (make bench | make bench-quick)
# 1. kernels: GFLOP/s vs this machine's measured peak (build/bench_kernels [--quick]).
# 2. generation: SmolLM2-135M as shipped (Q4_1) and re-quantized (NF4+DQ), prompt ~128 tokens +
#    generate 128 (quick: 32), 1 and 2 threads, vs llama.cpp (llama-cpp-python) on the same GGUF
#    at 1 and 2 threads; tokens/s are generated tokens / (prompt + generation) time, best of 2 runs,
#    for both.
# 3. training: the same QLoRA job in qlora.h (--bf16 and f32) and in PyTorch + transformers + PEFT +
#    bitsandbytes (bench/bench_torch.py: NF4+DQ, bf16 autocast), same text, same 256-token
#    windows in the same order, 2 threads, 8 steps (quick: 2): steady-state tokens/s (step 1
#    excluded), peak RSS, loss of step 1 / step N / mean over the N steps.
# The last line is `summary: train_tok_s=.. torch_tok_s=.. train_ratio=.. rss_ratio=.. decode_ratio_vs_llamacpp=..`
# (ours --bf16 vs torch; decode ratio at 2 threads, Q4_1 GGUF).
set -u
Q=./build/qlora
M=models/SmolLM2-135M-Instruct-Q4_1.gguf
QUICK=${1:-}
N=128; STEPS=8; [ "$QUICK" = quick ] && { N=32; STEPS=2; }
[ -x $Q ] && [ -f $M ] || { echo "run: make build/qlora smollm2"; exit 1; }
T0=$(date +%s.%N)
PROMPT=$(python3 -c "print(' '.join(['The history of the city is long and full of surprises.'] * 11))")   # ~132 tokens
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F), load $(cut -d' ' -f1 /proc/loadavg)"

# ---- 1. kernels vs this machine's measured peak (prints `kernels: gemm_fwd_pct_peak=.. gemm_bwd_pct_peak=..`)
if [ -x ./build/bench_kernels ]; then
  if [ "$QUICK" = quick ]; then ./build/bench_kernels --quick; else ./build/bench_kernels; fi
else
  echo "kernel benchmark skipped: run make build/bench_kernels"
fi

# ---- 2. generation
echo "generate: prompt $($Q tokenize $M "$PROMPT" | wc -w) tokens + $N generated, greedy; tok/s = generated / (prompt + generation) time, best of 2"
declare -A OURS
for q in "" "--quant nf4 --double-quant"; do
  for t in 1 2; do
    line=""; best=0
    for rep in 1 2; do   # best of 2 (so is llama.cpp's): a busy neighbour spoils single runs
      l=$($Q generate $M $q --prompt "$PROMPT" -n $N --temp 0 --threads $t -v 2>&1 >/dev/null | grep "generated")
      v=$(echo "$l" | grep -o '([0-9.]* tok/s' | tr -d '(' | cut -d' ' -f1)
      if python3 -c "import sys; sys.exit(not float(sys.argv[1] or 0) > float(sys.argv[2]))" "$v" "$best"; then best=$v; line=$l; fi
    done
    echo "  qlora.h ${q:-q4_1 as shipped} threads=$t: $line"
    [ -z "$q" ] && OURS[$t]=$best
  done
done
$Q export-hf $M --out build/bench-f32 >/dev/null 2>&1 && \
  echo "  peak RSS generate, f32 HF export: $($Q generate build/bench-f32 --tokenizer $M --prompt hi -n 8 --temp 0 -v 2>&1 >/dev/null | grep -o 'peak RSS [0-9.]* MiB' | cut -d' ' -f3-) (q4_1, nf4+dq: above)"
ratio=n/a
if python3 -c "import llama_cpp" 2>/dev/null; then
  theirs=$(python3 - "$M" "$N" "$PROMPT" <<'EOF'
import sys, time, llama_cpp
for t in (1, 2):
    m = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=512, n_threads=t, n_threads_batch=t, verbose=False)
    best = 0
    for rep in range(2):   # best of 2, like ours; reset() so the prompt is evaluated again (no prefix reuse)
        m.reset()
        t0 = time.time(); out = m(sys.argv[3], max_tokens=int(sys.argv[2]), temperature=0.0); dt = time.time() - t0
        best = max(best, out['usage']['completion_tokens'] / dt)
    print('%.2f' % best, end=' ')
    del m
EOF
)
  set -- $theirs
  if [ $# -ne 2 ]; then echo "  llama.cpp run failed"; else
  echo "  llama.cpp (llama-cpp-python) q4_1: threads=1 $1 tok/s, threads=2 $2 tok/s; qlora.h q4_1: threads=1 ${OURS[1]} tok/s, threads=2 ${OURS[2]} tok/s"
  ratio=$(python3 -c "import sys; print('%.2f' % (float(sys.argv[1]) / float(sys.argv[2])))" "${OURS[2]}" "$2")
  r1=$(python3 -c "import sys; print('%.2f' % (float(sys.argv[1]) / float(sys.argv[2])))" "${OURS[1]}" "$1")
  echo "  decode_ratio_vs_llamacpp: threads=1 $r1, threads=2 $ratio"
  fi
else
  echo "  llama-cpp-python not installed: no llama.cpp comparison (pip install llama-cpp-python)"
fi

# ---- 3. training: the same job in qlora.h (--bf16, f32) and PyTorch + PEFT + bitsandbytes
printf '%s\n' "$(head -c 200000 fixtures/tinyshakespeare.txt 2>/dev/null)" > build/bench-train.txt
echo "train: SmolLM2-135M nf4+dq, LoRA r16 alpha32 dropout0.05 all-linear, seq 256 x batch 4, grad checkpointing,"
echo "       AdamW lr 2e-4 linear decay, 2 threads, $STEPS steps on build/bench-train.txt (same windows, same order);"
echo "       tok/s over steps 2..$STEPS (step 1 = warm-up, excluded), peak RSS of the whole process"
# ours: metrics.jsonl has the per-step loss and the cumulative tokens/s since training start; with
# full 4 x 256 windows (true here) the time at step k is k*1024/tps_k, so the steady rate is
# (N-1)*1024 / (t_N - t_1).
ours_train() {   # $1 = extra flags; prints "tok_s rss_mib loss_first loss_last loss_mean"
  rm -rf build/bench-train
  local rss
  rss=$( { /usr/bin/time -f "peakrss %M" $Q finetune $M --data build/bench-train.txt --quant nf4 --double-quant --lora-r 16 --lora-alpha 32 \
        --lora-dropout 0.05 --target-modules all-linear --max-seq-length 256 --per-device-train-batch-size 4 --max-steps $STEPS \
        --logging-steps 1 --threads 2 --gradient-checkpointing $1 --output-dir build/bench-train >/dev/null; } 2>&1 | grep -o 'peakrss [0-9]*' | cut -d' ' -f2)
  python3 - build/bench-train/metrics.jsonl "${rss:-0}" <<'EOF'
import sys, json
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
n, tok = len(rows), 4 * 256
t1, tn = tok / rows[0]['tokens_per_second'], n * tok / rows[-1]['tokens_per_second']
loss = [r['loss'] for r in rows]
print('%.1f %.0f %.4f %.4f %.4f' % ((n - 1) * tok / (tn - t1), float(sys.argv[2]) / 1024, loss[0], loss[-1], sum(loss) / n))
EOF
}
bf16=$(ours_train --bf16 2>/dev/null) || bf16=""
f32=""   # quick mode skips the f32 run to stay under a minute
[ "$QUICK" = quick ] || { f32=$(ours_train "" 2>/dev/null) || f32=""; }
torch=""
if python3 -c "import torch, peft, bitsandbytes, transformers" 2>/dev/null; then
  # build/bench-f32 has no tokenizer files: the tokenizer comes from the GGUF through transformers
  torch=$(python3 bench/bench_torch.py build/bench-f32 build/bench-train.txt --tokenizer $M --steps $STEPS --threads 2 --ckpt 2>/dev/null | tail -1 |
          python3 -c "import sys; kv = dict(x.split('=') for x in sys.stdin.read().split()); print(*(kv[k] for k in ('torch_tok_s', 'torch_rss_mib', 'loss_first', 'loss_last', 'loss_mean')))" 2>/dev/null)
else
  echo "  torch/peft/bitsandbytes not installed: no PyTorch comparison (pip install torch transformers peft bitsandbytes)"
fi
python3 - "$bf16" "$f32" "$torch" "$ratio" "$T0" <<'EOF'
import sys, time
names = ('qlora.h --bf16', 'qlora.h f32', 'pytorch+peft+bnb bf16 autocast')
rows = [a.split() if len(a.split()) == 5 else None for a in sys.argv[1:4]]
print('  %-32s %9s %13s %10s %10s %10s' % ('', 'tok/s', 'peak RSS MiB', 'loss_first', 'loss_last', 'loss_mean'))
for name, r in zip(names, rows):
    print('  %-32s %9s %13s %10s %10s %10s' % ((name,) + tuple(r) if r else (name,) + ('n/a',) * 5))
b, f, t = rows
fmt = lambda x: '%.2f' % x
if b and t:
    print('  ratios vs pytorch: tok/s --bf16 %s, f32 %s; peak RSS --bf16 %s, f32 %s'
          % (fmt(float(b[0]) / float(t[0])), fmt(float(f[0]) / float(t[0])) if f else 'n/a',
             fmt(float(b[1]) / float(t[1])), fmt(float(f[1]) / float(t[1])) if f else 'n/a'))
print('bench wall time: %.0f s' % (time.time() - float(sys.argv[5])))
print('summary: train_tok_s=%s torch_tok_s=%s train_ratio=%s rss_ratio=%s decode_ratio_vs_llamacpp=%s'
      % (b[0] if b else 'n/a', t[0] if t else 'n/a', fmt(float(b[0]) / float(t[0])) if b and t else 'n/a',
         fmt(float(b[1]) / float(t[1])) if b and t else 'n/a', sys.argv[4]))
EOF
