// testutil.h — helpers shared by the cmocka suites: locating ../shared, reading .npy files,
// comparing float arrays, temp dirs, running the ftk binary.
#ifndef FTK_TESTUTIL_H
#define FTK_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

// $FTK_SHARED or "../shared" relative to the repo; returns a static buffer with "<shared>/<rel>".
const char *shared_path(const char *rel);
// Reads a little-endian float32 C-order .npy; *shape gets up to 4 dims. malloc'ed data.
float *npy_read_f32(const char *path, int *ndim, int shape[4]);
// max |a - b| over n values
double max_abs_diff(const float *a, const float *b, size_t n);
// Makes a fresh empty temp directory (static buffer), removed by test_rmtree.
const char *test_tmpdir(const char *tag);
void test_rmtree(const char *dir);
// Factor for wall-clock limits in tests: $FTK_TEST_TIME_SCALE (scripts/test.sh --valgrind sets it), else 1.
double test_time_scale(void);
// Path to the ftk binary ($FTK_BIN), for CLI tests.
const char *ftk_bin(void);
// Runs a shell command, returns its exit status (0..255), captures stdout+stderr into *out (malloc'ed) if out != NULL.
int run_cmd(const char *cmd, char **out);
// Writes len bytes to dir/name (asserting success); returns the path (static buffer).
const char *test_write_bytes(const char *dir, const char *name, const void *data, size_t len);
// Minimal safetensors reading (independent of model/safetensors.c): a malloc'ed copy of the F32
// tensor `name`, whose element count must be n; NULL otherwise.
float *test_st_tensor_f32(const char *path, const char *name, size_t n);
// Fails unless `ours` is bit-identical to the F32 tensor `name` of the safetensors file st. With
// transpose_in > 0 the file holds an HF Conv1D (in, out) and ours the Linear (out, in), in = transpose_in.
void assert_equal_st_tensor(const char *st, const char *name, const float *ours, size_t n, int transpose_in);

#endif
