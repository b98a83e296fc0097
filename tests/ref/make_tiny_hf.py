"""Makes tests/ref/tiny_llama_hf/: a tiny random Llama written by transformers' own
save_pretrained (bf16 weights, sharded safetensors + index, GQA, untied lm_head, llama3 rope
scaling) and the float32 logits transformers computes for a fixed token sequence.
tests/test_hf.c loads the directory with qlora.h and compares the logits.

    pip install torch transformers; python3 tests/ref/make_tiny_hf.py
"""
import os, struct, torch, transformers

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny_llama_hf")
os.makedirs(out, exist_ok=True)
torch.manual_seed(1234)
cfg = transformers.LlamaConfig(
    vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
    num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=256,
    rms_norm_eps=1e-5, rope_theta=50000.0, tie_word_embeddings=False,
    rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                  "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
model = transformers.LlamaForCausalLM(cfg)
with torch.no_grad():                       # make the norms non-trivial too
    for n, p in model.named_parameters():
        if "norm" in n:
            p.copy_(1.0 + 0.1 * torch.randn_like(p))
model = model.to(torch.bfloat16)
model.save_pretrained(out, max_shard_size="150KB", safe_serialization=True)
# reference: float32 compute on the (exactly representable) bf16 weights
m32 = transformers.LlamaForCausalLM.from_pretrained(out, dtype=torch.float32)
tokens = [1, 17, 250, 3, 99, 180, 42, 7, 300, 12, 64, 5]
with torch.no_grad():
    logits = m32(torch.tensor([tokens])).logits[0].float()
with open(os.path.join(out, "expected_logits.bin"), "wb") as f:
    f.write(struct.pack("<ii", len(tokens), cfg.vocab_size))
    f.write(struct.pack("<%di" % len(tokens), *tokens))
    f.write(logits.numpy().astype("<f4").tobytes())
print("wrote", out, sorted(os.listdir(out)))
