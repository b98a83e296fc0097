#!/usr/bin/env bash
# make demo: QLoRA-finetune SmolLM2-135M-Instruct (NF4 + double quant, LoRA r 16 on all-linear)
# on quotes from Debian's fortunes for a few minutes on the CPU, then compare base and finetuned
# generations for the same prompts and show the eval-loss drop.
set -eu
Q=./build/qlora
MODEL=models/SmolLM2-135M-Instruct-Q4_1.gguf
OUT=${DEMO_OUT:-build/demo-fortunes}
STEPS=${DEMO_STEPS:-40}
QUOTES=/usr/share/games/fortunes/fortunes
if [ ! -f "$QUOTES" ]; then                    # no root needed: fetch the .deb and unpack it
  QUOTES=fixtures/fortunes
  if [ ! -f "$QUOTES" ]; then
    echo "fetching Debian fortunes-min (apt-get download)"
    mkdir -p fixtures/deb && (cd fixtures/deb && apt-get download fortunes-min >/dev/null) && dpkg -x fixtures/deb/fortunes-min_*.deb fixtures/deb/x
    cp fixtures/deb/x/usr/share/games/fortunes/fortunes "$QUOTES"
  fi
fi
PROMPTS=("The secret of a happy life is" "Never trust a man who" "A journey of a thousand miles")

echo "== 1. the base model, chatting"
$Q generate $MODEL --chat --temp 0 -n 48 --prompt "What is the capital of France?"

echo "== 2. base model completions (NF4 + double quant, greedy)"
for p in "${PROMPTS[@]}"; do printf '  %s' "$p"; $Q generate $MODEL --quant nf4 --double-quant --prompt "$p" -n 32 --temp 0 | tr '\n' ' '; echo; done

echo "== 3. QLoRA finetune on $(grep -c '^%$' $QUOTES) fortunes ($STEPS steps)"
rm -rf "$OUT"
$Q finetune $MODEL --data $QUOTES --format fortune --quant nf4 --double-quant \
   --lora-r 16 --lora-alpha 32 --lora-dropout 0.05 --target-modules all-linear \
   --max-seq-length 64 --per-device-train-batch-size 2 --gradient-accumulation-steps 2 \
   --learning-rate 5e-4 --warmup-steps 4 --lr-scheduler-type cosine --max-steps $STEPS \
   --validation-split 0.03 --eval-on-start --logging-steps 5 --save-steps $((STEPS / 2)) --save-total-limit 1 \
   --gradient-checkpointing --output-dir "$OUT"

echo "== 4. finetuned completions (same prompts, same settings, + adapter)"
for p in "${PROMPTS[@]}"; do printf '  %s' "$p"; $Q generate $MODEL --quant nf4 --double-quant --adapter "$OUT" --prompt "$p" -n 32 --temp 0 | tr '\n' ' '; echo; done

echo "== 5. eval loss (held-out fortunes)"
python3 - "$OUT/metrics.jsonl" <<'EOF'
import json, math, sys
ev = [json.loads(l) for l in open(sys.argv[1]) if 'eval_loss' in l]
a, b = ev[0]['eval_loss'], ev[-1]['eval_loss']
print('  eval loss %.4f (ppl %.1f) at step %d  ->  %.4f (ppl %.1f) at step %d: %.1f%% lower'
      % (a, math.exp(a), ev[0]['step'], b, math.exp(b), ev[-1]['step'], 100 * (a - b) / a))
EOF
echo "adapter (PEFT format): $OUT/adapter_model.safetensors + adapter_config.json"
