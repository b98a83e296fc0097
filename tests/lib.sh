# Shared by the end-to-end shell suites (tests/test_*.sh): paths, a scratch dir, counters, and
# the two assertions. A missing fixture is a failure unless QLORA_TEST_ALLOW_MISSING is set.
set -u
Q=./build/qlora
F=fixtures
SMOL=models/SmolLM2-135M-Instruct-Q4_1.gguf
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
pass=0; fail=0
ok()   { pass=$((pass+1)); echo "ok   $*"; }
bad()  { fail=$((fail+1)); echo "FAIL $*"; }
need() { [ -e "$1" ] || { if [ -n "${QLORA_TEST_ALLOW_MISSING:-}" ]; then echo "SKIP (fixture missing: $1)"; else bad "fixture missing: $1 (make fixtures smollm2; apt-get install fortunes-min)"; fi; return 1; }; }
# expect_err NAME PATTERN CMD...: CMD must fail cleanly (no signal) with a message matching PATTERN
expect_err() {
  local name=$1 pat=$2; shift 2
  local out rc
  out=$("$@" 2>&1); rc=$?
  if [ $rc -ne 0 ] && [ $rc -lt 128 ] && echo "$out" | grep -q -- "$pat"; then ok "bad input: $name -> $(echo "$out" | grep -- "$pat" | head -1)"
  else bad "bad input: $name (rc=$rc): $(echo "$out" | tail -2)"; fi
}
finish() { echo "$1: $pass passed, $fail failed"; [ $fail -eq 0 ]; }
