/* qlora_test.h - the whole test framework: CHECK / CHECK_NEAR / SKIP and a summary line.
   A test binary returns non-zero if any check failed. Fixtures that are missing are a FAIL
   unless QLORA_TEST_ALLOW_MISSING is set in the environment (then they print SKIP loudly). */
#ifndef QLORA_TEST_H
#define QLORA_TEST_H
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>

static int qt_checks, qt_failures;
#define CHECK(cond) do { qt_checks++; if (!(cond)) { qt_failures++; \
    fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); } } while (0)
#define CHECK_MSG(cond, ...) do { qt_checks++; if (!(cond)) { qt_failures++; \
    fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); fprintf(stderr, __VA_ARGS__); \
    fputc('\n', stderr); } } while (0)
#define CHECK_NEAR(a, b, tol) do { double qt_a = (double)(a), qt_b = (double)(b); qt_checks++; \
    if (!(fabs(qt_a - qt_b) <= (tol)) || qt_a != qt_a || qt_b != qt_b) { qt_failures++; \
    fprintf(stderr, "FAIL %s:%d: %s = %.9g vs %s = %.9g (tol %g)\n", __FILE__, __LINE__, #a, qt_a, #b, qt_b, (double)(tol)); } } while (0)
// A fixture that is not there: loud, and a failure unless explicitly allowed.
static int qt_missing(const char *what) {
    const char *allow = getenv("QLORA_TEST_ALLOW_MISSING");
    if (allow && *allow && *allow != '0') { fprintf(stderr, "SKIP (fixture missing: %s)\n", what); return 1; }
    fprintf(stderr, "FAIL fixture missing: %s (run `make fixtures`)\n", what);
    qt_failures++;
    return 1;
}
static int qt_file_exists(const char *path) { FILE *f = fopen(path, "rb"); if (f) fclose(f); return f != NULL; }
#define QT_DONE(name) (fprintf(stderr, "%s: %d checks, %d failed\n", name, qt_checks, qt_failures), qt_failures ? 1 : 0)
#endif
