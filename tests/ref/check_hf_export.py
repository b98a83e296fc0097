"""Independent check of `qlora export-hf` (q/k RoPE permutation, names, config): transformers
loads the directories qlora.h wrote and must reproduce (1) llama2.c's golden ids for stories260K
and (2) llama.cpp's greedy ids for SmolLM2 (GQA: k has 3 heads). Writes
tests/ref/hf_export_transformers.txt. Needs build/qlora, `make fixtures smollm2`, torch, transformers.
"""
import os, subprocess, sys, tempfile, torch, transformers

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.chdir(root)
torch.set_num_threads(2)
ref = dict(l.split(":", 1) for l in open("tests/ref/smollm2_llamacpp.txt") if ":" in l and not l.startswith("#"))
golden = open("fixtures/README.md").read().split("```")[1].split()
cases = [("fixtures/stories260K.bin", [1], golden[:64]),
         ("models/SmolLM2-135M-Instruct-Q4_1.gguf", [int(x) for x in ref["prompt_ids d"].split()], ref["greedy d"].split())]
lines = []
with tempfile.TemporaryDirectory() as tmp:
    for i, (src, prompt, want) in enumerate(cases):
        d = os.path.join(tmp, "m%d" % i)
        subprocess.run(["build/qlora", "export-hf", src, "--out", d], check=True)
        m = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
        with torch.no_grad():
            out = m.generate(torch.tensor([prompt]), max_new_tokens=len(want), do_sample=False,
                             eos_token_id=None, pad_token_id=0)
        got = [str(x) for x in out[0, len(prompt):].tolist()]
        ok = got == want
        lines.append("%s: transformers greedy on exported HF dir %s reference (%d ids)" % (src, "EQUALS" if ok else "DIFFERS FROM", len(want)))
        print(lines[-1])
        if not ok:
            print(" got ", " ".join(got)); print(" want", " ".join(want)); sys.exit(1)
open("tests/ref/hf_export_transformers.txt", "w").write(
    "# produced by tests/ref/check_hf_export.py (torch %s, transformers %s)\n" % (torch.__version__, transformers.__version__)
    + "\n".join(lines) + "\n")
