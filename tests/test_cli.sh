#!/usr/bin/env bash
# End-to-end tests of the qlora CLI on real models: golden generations, llama.cpp parity,
# perplexity after re-quantization, HF export round trip, and clear errors on bad input.
# Run from the repository root after `make build/qlora fixtures smollm2`.
. tests/lib.sh
REF=tests/ref/smollm2_llamacpp.txt
# first_match EXPECTED GOT -> number of leading ids that agree
first_match() { python3 -c "import sys; a=sys.argv[1].split(); b=sys.argv[2].split(); n=0
while n<min(len(a),len(b)) and a[n]==b[n]: n+=1
print(n)" "$1" "$2"; }

# --- stories260K: greedy from BOS reproduces llama2.c run.c's golden ids -------------------------
if need $F/stories260K.bin && need $F/README.md; then
  golden=$(sed -n '/^```$/,/^```$/p' $F/README.md | sed -n 2p)
  for m in stories260K.bin stories260K_v1.bin; do
    for th in 1 2; do
      got=$($Q generate $F/$m --tokenizer $F/tok512.bin -n 256 --temp 0 --ids --threads $th)
      n=$(first_match "$golden" "$got")
      [ "$n" -ge 256 ] && ok "stories260K $m threads=$th: $n/256 golden ids" || bad "stories260K $m threads=$th: only $n/256 golden ids match"
    done
  done
  for isa in ref scalar; do
    got=$($Q generate $F/stories260K.bin --tokenizer $F/tok512.bin -n 100 --temp 0 --ids --isa $isa)
    n=$(first_match "$golden" "$got")
    [ "$n" -ge 100 ] && ok "stories260K --isa $isa: $n/100" || bad "stories260K --isa $isa: $n/100"
  done
  # text decode: the golden story starts with "Once upon a time"
  txt=$($Q generate $F/stories260K.bin --tokenizer $F/tok512.bin -n 20 --temp 0)
  case "$txt" in "Once upon a time, there was a little girl named Lily."*) ok "stories260K text: ${txt:0:40}...";; *) bad "stories260K text: '$txt'";; esac
  # Perplexity from an f32 original: NF4 + double quant within 5%, INT8 within 1%
  if need $F/tinyshakespeare.txt; then
    ev() { $Q eval $F/stories260K.bin --tokenizer $F/tok512.bin --data $F/tinyshakespeare.txt --offset-frac 0.9 --max-tokens 4096 --n-ctx 256 "$@" | awk '{print $6}'; }
    pf=$(ev); pn=$(ev --quant nf4 --double-quant); pi=$(ev --quant int8)
    echo "     stories260K perplexity: f32 $pf  nf4+dq $pn  int8 $pi"
    python3 -c "import sys; f,n,i=map(float,sys.argv[1:]); sys.exit(0 if (n<=f*1.05 and i<=f*1.01) else 1)" "$pf" "$pn" "$pi" \
      && ok "stories260K perplexity: nf4+dq within 5%, int8 within 1% of f32" || bad "stories260K perplexity f32 $pf nf4 $pn int8 $pi"
  fi
  # HF export round trip: write config.json + model.safetensors, load the directory back
  $Q export-hf $F/stories260K.bin --out $T/hf260k 2>/dev/null && [ -s $T/hf260k/model.safetensors ] && ok "export-hf wrote $T/hf260k" || bad "export-hf stories260K"
  got=$($Q generate $T/hf260k --tokenizer $F/tok512.bin -n 256 --temp 0 --ids 2>&1)
  n=$(first_match "$golden" "$got")
  [ "$n" -ge 256 ] && ok "HF dir round trip: $n/256 golden ids" || bad "HF dir round trip: $n/256 ($got)"
  # NF4 + double quant still tells the same story for a while
  got=$($Q generate $F/stories260K.bin --tokenizer $F/tok512.bin -n 64 --temp 0 --ids --quant nf4 --double-quant --blocksize 32)
  n=$(first_match "$golden" "$got")
  echo "     stories260K nf4+dq bs32: $n/64 leading ids equal the f32 golden"
  [ "$n" -ge 4 ] && ok "stories260K nf4+dq generates ($n ids agree)" || bad "stories260K nf4+dq: $n"
fi

# --- SmolLM2-135M-Instruct: greedy ids equal llama.cpp's (tests/ref/make_llamacpp_ref.py) ---------
if need $SMOL && need $REF; then
  # llama.cpp quantizes activations to 8 bits inside its matmuls (we keep f32), so a near-tie can
  # flip late in a long greedy run: b and d must match fully, c at least 30 of 32.
  for k in b:32 c:30 d:32; do
    need_n=${k#*:}; k=${k%%:*}
    pids=$(grep "^prompt_ids $k:" $REF | cut -d: -f2-)
    want=$(grep "^greedy $k:" $REF | cut -d: -f2- | python3 -c "import sys; w=sys.stdin.read().split(); print(' '.join(w[:w.index('2')] if '2' in w else w))")
    nwant=$(echo $want | wc -w)
    got=$($Q generate $SMOL --prompt-ids "$pids" -n 32 --temp 0 --ids)   # stops at EOS (id 2) like a user would
    n=$(first_match "$want" "$got")
    [ "$n" -ge "$(( need_n < nwant ? need_n : nwant ))" ] && ok "SmolLM2 prompt $k: $n/$nwant greedy ids equal llama.cpp (up to EOS)" || bad "SmolLM2 prompt $k: $n/$nwant ids equal llama.cpp (got $got)"
  done
  # the tokenizer gives llama.cpp's prompt ids
  for k in b c; do
    case $k in b) text="Once upon a time";; c) text="The quick brown fox";; esac
    want=$(grep "^prompt_ids $k:" $REF | cut -d: -f2- | xargs)
    got=$($Q tokenize $SMOL "$text")
    [ "$got" = "$want" ] && ok "SmolLM2 tokenize '$text'" || bad "SmolLM2 tokenize '$text': '$got' vs '$want'"
  done
  ans=$($Q generate $SMOL --chat --prompt "What is the capital of France?" --temp 0 -n 48)
  echo "     chat: $ans"
  case "$ans" in *Paris*) ok "SmolLM2 chat answers Paris";; *) bad "SmolLM2 chat answer lacks Paris";; esac
  # Perplexity on held-out Tiny Shakespeare (last 10%): original Q4_1 vs NF4+DQ vs INT8
  if need $F/tinyshakespeare.txt; then
    base=$($Q eval $SMOL --data $F/tinyshakespeare.txt --offset-frac 0.9 --max-tokens 1024 --n-ctx 128)
    nf4=$($Q eval $SMOL --data $F/tinyshakespeare.txt --offset-frac 0.9 --max-tokens 1024 --n-ctx 128 --quant nf4 --double-quant)
    i8=$($Q eval $SMOL --data $F/tinyshakespeare.txt --offset-frac 0.9 --max-tokens 1024 --n-ctx 128 --quant int8)
    echo "     q4_1 : $base"; echo "     nf4dq: $nf4"; echo "     int8 : $i8"
    pb=$(echo "$base" | awk '{print $6}'); pn=$(echo "$nf4" | awk '{print $6}'); pi=$(echo "$i8" | awk '{print $6}')
    # The only SmolLM2 we have is already 4-bit (Q4_1): re-quantizing it to any 4-bit grid stacks a
    # second rounding on the first (int4 bs32 +33%, fp4 +36%, nf4 +28%). INT8 must stay within 2%;
    # NF4+DQ within 35% here, and within 5% of an f32 original below (stories260K).
    python3 -c "import sys; b,n,i=map(float,sys.argv[1:]); sys.exit(0 if (n<=b*1.35 and i<=b*1.02) else 1)" "$pb" "$pn" "$pi" \
      && ok "perplexity: int8 $pi within 2% and nf4+dq $pn within 35% of q4_1 $pb" || bad "perplexity: nf4+dq $pn / int8 $pi vs q4_1 $pb"
  fi
fi

# --- bad input: a clear message naming the file, non-zero exit, never a crash ---------------------
if need $SMOL; then
  head -c 1000000 $SMOL > $T/trunc.gguf
  expect_err "truncated gguf" "trunc.gguf: .*\\(outside the file\\|truncated\\|too long\\)" $Q info $T/trunc.gguf
  head -c 100 $SMOL > $T/trunc2.gguf
  expect_err "gguf cut inside metadata" "trunc2.gguf: \\(truncated\\|corrupt\\)" $Q info $T/trunc2.gguf
  printf 'GGUX\3\0\0\0' > $T/magic.gguf; head -c 5000 $SMOL | tail -c +9 >> $T/magic.gguf
  expect_err "wrong magic" "magic.gguf: not a recognised model" $Q info $T/magic.gguf
  expect_err "unknown QLORA_ISA" "QLORA_ISA=avx1024: unknown instruction set" env QLORA_ISA=avx1024 $Q info $T/magic.gguf
  python3 - "$SMOL" "$T" <<'EOF'
import sys, struct
src, T = sys.argv[1], sys.argv[2]
d = bytearray(open(src, 'rb').read(2_000_000))
# corrupt the tensor count to an absurd value
c = bytearray(d); c[8:16] = struct.pack('<Q', 1 << 60); open(T + '/count.gguf', 'wb').write(c)
# version 7
v = bytearray(d); v[4:8] = struct.pack('<I', 7); open(T + '/version.gguf', 'wb').write(v)
EOF
  expect_err "absurd tensor count" "count.gguf: corrupt GGUF header" $Q info $T/count.gguf
  expect_err "unknown gguf version" "version 7 not supported" $Q info $T/version.gguf
fi
expect_err "missing file" "nope.gguf: cannot open" $Q info $T/nope.gguf
if need $F/stories260K.bin; then
  head -c 50000 $F/stories260K.bin > $T/short.bin
  expect_err "truncated llama2.c" "short.bin: truncated" $Q info $T/short.bin
  expect_err "llama2.c without tokenizer" "no tokenizer" $Q generate $F/stories260K.bin --prompt "hi"
  expect_err "missing tokenizer file" "tok.bin: cannot open" $Q generate $F/stories260K.bin --tokenizer $T/tok.bin --prompt hi
  # HF directories with broken pieces
  mkdir -p $T/hfbad && $Q export-hf $F/stories260K.bin --out $T/hfbad >/dev/null 2>&1
  cp $T/hfbad/config.json $T/config.good
  printf '{"hidden_size": 64, "num_hidden_layers": 5,,}' > $T/hfbad/config.json
  expect_err "malformed config.json" "config.json: line 1, column 44" $Q info $T/hfbad --tokenizer $F/tok512.bin
  cp $T/config.good $T/hfbad/config.json
  expect_err "HF dir without tokenizer" "no tokenizer" $Q generate $T/hfbad --prompt hi
  python3 - "$T/hfbad/model.safetensors" <<'EOF'
import sys, json, struct
p = sys.argv[1]
b = open(p, 'rb').read()
n = struct.unpack('<Q', b[:8])[0]
h = json.loads(b[8:8 + n]); data = b[8 + n:]
def write(name, hdr):
    s = json.dumps(hdr, separators=(',', ':')).encode()
    s += b' ' * ((8 - len(s) % 8) % 8)
    open(name, 'wb').write(struct.pack('<Q', len(s)) + s + data)
k = [x for x in h if x != '__metadata__']
o = json.loads(json.dumps(h)); o[k[1]]['data_offsets'] = list(o[k[0]]['data_offsets']); write(p + '.overlap', o)
r = json.loads(json.dumps(h)); r[k[0]]['data_offsets'][1] = len(data) + 4096; write(p + '.range', r)
u = json.loads(json.dumps(h)); u[k[0]]['dtype'] = 'Q9_K'; write(p + '.dtype', u)
EOF
  for case in overlap:"overlap\|hole\|bytes of data" range:"out of range" dtype:"unknown dtype 'Q9_K'"; do
    name=${case%%:*}; pat=${case#*:}
    cp $T/hfbad/model.safetensors.$name $T/hfbad/model.safetensors
    expect_err "safetensors $name" "$pat" $Q info $T/hfbad --tokenizer $F/tok512.bin
  done
fi
expect_err "unknown command" "unknown command" $Q frobnicate x
expect_err "bad --quant" "unknown type 'nf5'" $Q info x --quant nf5

finish test_cli.sh
