#!/usr/bin/env python3
"""Golden token ids for tests/test_tokenizer.c (run from the repo root after `make fixtures smollm2`):

    python3 tests/ref/make_tokenizer_golden.py      # writes tests/ref/tokenizer_golden.txt

No code of ours is involved:
  smol  SmolLM2-135M-Instruct-Q4_1.gguf tokenized by llama.cpp itself (PyPI llama-cpp-python,
        tested with 0.3.36; Llama(vocab_only=True).tokenize(utf8, add_bos=False, special=True)).
        Each string is also tokenized with HF `tokenizers` (tested with 0.23.3) built from the
        GGUF vocab/merges with SmolLM2's tokenizer.json pre-tokenizer (Digits(individual) then
        ByteLevel); the script reports (and the file records) whether the two agree.
  l2c   fixtures/tok512.bin encoded by a literal Python transcription of llama2.c run.c encode()
        (bos=1, eos=0), the O(n^2) "merge the best-scoring adjacent pair" loop included.
Line format:  <tag> <text as hex> : <ids separated by spaces>
"""
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SMOL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct-Q4_1.gguf")
TOK512 = os.path.join(ROOT, "fixtures", "tok512.bin")
GPT2_INP = os.path.join(ROOT, "fixtures", "ggml-vocab-gpt-2.gguf.inp")
OUT = os.path.join(HERE, "tokenizer_golden.txt")

EXTRA = [
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nHi!<|im_end|><|endoftext|>x<|im_end|>",
    "12345 and 3.14159, 2024-11-25; ½ ² ٣ 一二三",
    "  leading spaces, trailing spaces   \n\n\tTabs\t\tand\r\nCRLF  ",
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park.",
    "I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea?",
    "Ünïcödé: naïve café, Ελληνικά, русский, 日本語のテキスト, 한국어, العربية, עברית, हिन्दी 🦙🤗",
    "def f(x):\n    return x ** 2  # comment\n\n\n",
    "a\u00a0b\u2003c\u3000d \u200b e",
]

L2C_STRINGS = [
    "Once upon a time, there was a little girl named Lily.",
    "Lily's mom said, \"Lily, let's go to the park.\" Lily was sad and didn't know what to do.",
    "Hello world",
    "x",
    " leading space",
    "two  spaces\nnew line",
    "héllo wörld ½ 🦙",
]


def run_c_encode(vocab, scores, text, bos=True):
    """llama2.c run.c encode(), transcribed."""
    lookup = {}
    for i, v in enumerate(vocab):
        lookup.setdefault(v, i)   # bsearch over unique strings; tok512 has no duplicates
    tokens = []
    if bos:
        tokens.append(1)
    if text:
        tokens.append(lookup[b" "])
    data = text.encode("utf-8")
    buf = b""
    for i, c in enumerate(data):
        if (c & 0xC0) != 0x80:
            buf = b""
        buf += bytes([c])
        nxt = data[i + 1] if i + 1 < len(data) else 0
        if (nxt & 0xC0) == 0x80 and len(buf) < 4:
            continue
        if buf in lookup:
            tokens.append(lookup[buf])
        else:
            tokens.extend(b + 3 for b in buf)
        buf = b""
    while True:
        best_score, best_id, best_idx = -1e10, -1, -1
        for i in range(len(tokens) - 1):
            s = vocab[tokens[i]] + vocab[tokens[i + 1]]
            j = lookup.get(s, -1)
            if j != -1 and scores[j] > best_score:
                best_score, best_id, best_idx = scores[j], j, i
        if best_idx == -1:
            break
        tokens[best_idx] = best_id
        del tokens[best_idx + 1]
    return tokens


def load_tok512(path, n=512):
    vocab, scores = [], []
    with open(path, "rb") as f:
        f.read(4)
        for _ in range(n):
            score, ln = struct.unpack("<fi", f.read(8))
            vocab.append(f.read(ln))
            scores.append(struct.unpack("<f", struct.pack("<f", score))[0])
    return vocab, scores


def hf_smol_tokenizer():
    from gguf import GGUFReader
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, AddedToken
    r = GGUFReader(SMOL)
    f = r.fields
    toks = f["tokenizer.ggml.tokens"]
    tt = f["tokenizer.ggml.token_type"]
    mg = f["tokenizer.ggml.merges"]
    vocab = {bytes(toks.parts[toks.data[i]]).decode("utf-8"): i for i in range(len(toks.data))}
    merges = [tuple(bytes(mg.parts[mg.data[i]]).decode("utf-8").split(" ", 1)) for i in range(len(mg.data))]
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tk.decoder = decoders.ByteLevel()
    specials = [bytes(toks.parts[toks.data[i]]).decode("utf-8") for i in range(len(tt.data)) if int(tt.parts[tt.data[i]][0]) == 3]
    tk.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    return tk


def main():
    lines = []
    inp = open(GPT2_INP, "rb").read().decode("utf-8").split("\n__ggml_vocab_test__\n")[:-1]
    strings = inp + EXTRA
    from llama_cpp import Llama
    llm = Llama(model_path=SMOL, vocab_only=True, verbose=False)
    hf = hf_smol_tokenizer()
    agree = 0
    for s in strings:
        ids = llm.tokenize(s.encode("utf-8"), add_bos=False, special=True) if s else []
        hf_ids = hf.encode(s).ids
        if hf_ids == ids:
            agree += 1
        else:
            print("llama.cpp and HF tokenizers differ on %r:\n  %s\n  %s" % (s, ids, hf_ids), file=sys.stderr)
        lines.append("smol %s : %s" % (s.encode("utf-8").hex(), " ".join(map(str, ids))))
    print("smol: %d strings, HF tokenizers agrees with llama.cpp on %d" % (len(strings), agree), file=sys.stderr)
    vocab, scores = load_tok512(TOK512)
    for s in L2C_STRINGS:
        lines.append("l2c %s : %s" % (s.encode("utf-8").hex(), " ".join(map(str, run_c_encode(vocab, scores, s)))))
    with open(OUT, "w") as f:
        f.write("# generated by tests/ref/make_tokenizer_golden.py (llama-cpp-python 0.3.36, tokenizers 0.23.3)\n")
        f.write("# <tag> <utf-8 text as hex> : <ids>; smol = SmolLM2 GGUF via llama.cpp (add_bos=False, special=True),\n")
        f.write("# l2c = tok512.bin via a transcription of llama2.c run.c encode(bos=1)\n")
        f.write("\n".join(lines) + "\n")
    print("wrote %s (%d lines)" % (OUT, len(lines)), file=sys.stderr)


if __name__ == "__main__":
    main()
