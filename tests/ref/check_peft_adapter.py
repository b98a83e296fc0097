"""PEFT interoperability of qlora.h adapters, both directions, on stories260K.

(1) The adapter directory written by tests/test_adapter.c (build/test_adapter_out) must be
    byte-for-byte PEFT's adapter_config.json format, load with PeftModel.from_pretrained on top of
    `qlora export-hf fixtures/stories260K.bin`, and give the logits of qlora.h's merged model
    (build/test_adapter_out/merged_logits.bin: qlora_model_merge_lora = base + scaling * B @ A).
(2) PEFT saves an adapter of its own (all-linear, rsLoRA, random B) into
    tests/ref/peft_saved_adapter/ with PeftModel's logits (expected_logits.bin); tests/test_adapter.c
    loads it, merges it and must match them to 1e-4.
Writes tests/ref/peft_adapter_check.txt. Needs build/qlora, build/test_adapter (run first),
`make fixtures`, torch, transformers, peft.
"""
import dataclasses, json, os, shutil, struct, subprocess, sys, tempfile
import numpy as np, torch, transformers, peft
from peft import LoraConfig, PeftModel, get_peft_model

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.chdir(root)
torch.set_num_threads(2)
OURS = "build/test_adapter_out"
SAVED = "tests/ref/peft_saved_adapter"
lines = ["# produced by tests/ref/check_peft_adapter.py (torch %s, transformers %s, peft %s)"
         % (torch.__version__, transformers.__version__, peft.__version__)]
ok = True


def say(s):
    print(s)
    lines.append(s)


def read_logits(path):
    b = open(path, "rb").read()
    T, V = struct.unpack("<ii", b[:8])
    tok = list(struct.unpack("<%di" % T, b[8:8 + 4 * T]))
    lg = np.frombuffer(b[8 + 4 * T:], dtype="<f4").reshape(T, V)
    return tok, lg


def load_base(d):
    m = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
    return m.eval()


with tempfile.TemporaryDirectory() as tmp:
    base_dir = os.path.join(tmp, "base")
    subprocess.run(["build/qlora", "export-hf", "fixtures/stories260K.bin", "--out", base_dir], check=True)

    # ---- (1) qlora.h -> PEFT
    text = open(os.path.join(OURS, "adapter_config.json")).read()
    cfg = json.loads(text)
    same = json.dumps(cfg, indent=2, sort_keys=True) == text
    say("adapter_config.json written by qlora.h %s json.dumps(indent=2, sort_keys=True) of itself" % ("EQUALS" if same else "DIFFERS FROM"))
    ok &= same
    fields = {f.name for f in dataclasses.fields(LoraConfig)} - {"runtime_config"}
    say("keys: %d written; installed LoraConfig fields missing from the file: %s; file keys unknown to it: %s"
        % (len(cfg), sorted(fields - set(cfg)) or "none", sorted(set(cfg) - fields) or "none"))
    tok, want = read_logits(os.path.join(OURS, "merged_logits.bin"))
    pm = PeftModel.from_pretrained(load_base(base_dir), OURS).eval()
    with torch.no_grad():
        got = pm(torch.tensor([tok])).logits[0].numpy()
    d = float(np.abs(got - want).max())
    say("PeftModel.from_pretrained(%s) logits vs qlora.h merged model (base + scaling*B@A): max |d| = %.3g over %dx%d"
        % (OURS, d, want.shape[0], want.shape[1]))
    ok &= d <= 1e-4
    with torch.no_grad():
        merged = pm.merge_and_unload()(torch.tensor([tok])).logits[0].numpy()
    d2 = float(np.abs(merged - want).max())
    say("PEFT merge_and_unload logits vs qlora.h merged model: max |d| = %.3g" % d2)
    ok &= d2 <= 1e-4

    # ---- (2) PEFT -> qlora.h
    torch.manual_seed(0)
    lc = LoraConfig(r=4, lora_alpha=8, use_rslora=True, target_modules="all-linear", lora_dropout=0.0,
                    task_type="CAUSAL_LM")
    pm2 = get_peft_model(load_base(base_dir), lc)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in pm2.named_parameters():
            if "lora_B" in n:
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
    pm2.eval()
    tok2 = [1, 403, 407, 261, 378, 429, 294, 260, 309, 288, 476, 7, 351, 318, 266, 2]
    with torch.no_grad():
        lg2 = pm2(torch.tensor([tok2])).logits[0].numpy().astype("<f4")
    if os.path.isdir(SAVED):
        shutil.rmtree(SAVED)
    pm2.save_pretrained(SAVED)
    if os.path.exists(os.path.join(SAVED, "README.md")):
        os.remove(os.path.join(SAVED, "README.md"))
    with open(os.path.join(SAVED, "expected_logits.bin"), "wb") as f:
        f.write(struct.pack("<ii", len(tok2), lg2.shape[1]))
        f.write(struct.pack("<%di" % len(tok2), *tok2))
        f.write(lg2.tobytes())
    saved_cfg = json.load(open(os.path.join(SAVED, "adapter_config.json")))
    saved_cfg["base_model_name_or_path"] = "stories260K"    # was the temporary export dir
    open(os.path.join(SAVED, "adapter_config.json"), "w").write(json.dumps(saved_cfg, indent=2, sort_keys=True))
    say("PEFT-saved adapter in %s: r=%d alpha=%s use_rslora=%s target_modules=%d entries (%s...), %d bytes of tensors"
        % (SAVED, saved_cfg["r"], saved_cfg["lora_alpha"], saved_cfg["use_rslora"], len(saved_cfg["target_modules"]),
           sorted(saved_cfg["target_modules"])[0], os.path.getsize(os.path.join(SAVED, "adapter_model.safetensors"))))
    say("  expected_logits.bin: PeftModel logits for %d tokens (tests/test_adapter.c must match within 1e-4)" % len(tok2))

open("tests/ref/peft_adapter_check.txt", "w").write("\n".join(lines) + "\n")
print("OK" if ok else "FAILED")
sys.exit(0 if ok else 1)
