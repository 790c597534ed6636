// test_llama2c_badinput.c — corrupted llama2.c files: truncation, bad headers, trailing bytes,
// missing tokenizer. Each must fail with an error naming the file, never crash (runs under ASan).
#include "tests/testutil.h"

#include <stdlib.h>
#include <string.h>

#include "model/common.h"
#include "model/loaders.h"
#include "model/model.h"

static char *g_orig;   // stories260K.bin bytes
static size_t g_len;
static const char *g_dir;

static int setup(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    if (ftk_read_file(shared_path("models/stories260K/stories260K.bin"), &g_orig, &g_len, err)) return -1;
    g_dir = test_tmpdir("l2cbad");
    return g_dir ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    free(g_orig);
    test_rmtree(g_dir);
    return 0;
}

// Loads `path` with llama2c_load_weights and expects failure with the path in the message.
static void expect_fail(const char *path, const char *needle) {
    Model m = {0};
    char err[FTK_ERR_LEN] = {0};
    int rc = llama2c_load_weights(&m, path, err);
    model_free(&m);
    if (rc == 0) fail_msg("%s: loaded but should have failed", path);
    if (!strstr(err, path)) fail_msg("error does not name the file: %s", err);
    if (needle && !strstr(err, needle)) fail_msg("error lacks '%s': %s", needle, err);
}

static void test_truncated(void **state) {
    (void)state;
    const size_t cuts[] = {0, 3, 27, 28, 29, 1000, g_len / 2, g_len - 4, g_len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        const char *p = test_write_bytes(g_dir, "trunc.bin", g_orig, cuts[i]);
        expect_fail(p, NULL);
    }
    // the size mismatch message gives both byte counts
    expect_fail(test_write_bytes(g_dir, "trunc.bin", g_orig, g_len - 4), "1056540");
}

static void test_trailing_bytes(void **state) {
    (void)state;
    char *buf = malloc(g_len + 8);
    memcpy(buf, g_orig, g_len);
    memset(buf + g_len, 0, 8);
    expect_fail(test_write_bytes(g_dir, "trail.bin", buf, g_len + 8), "1056548");
    free(buf);
}

static void test_bad_header_values(void **state) {
    (void)state;
    // field index, value
    const struct { int field; int32_t value; } cases[] = {
        {0, 0}, {0, -64}, {1, 0}, {2, -5}, {3, 0}, {4, 0}, {4, 16}, {5, 0}, {6, 0}, {6, -1},
        {5, INT32_MIN}, {0, 63},            // dim not divisible by n_heads
        {3, 3}, {4, 3},                     // n_heads % n_kv_heads != 0
        {0, 1 << 30}, {1, 0x7fffffff}, {2, 0x7fffffff}, {5, 0x7fffffff}, {6, 0x7fffffff},  // huge: size mismatch
        {5, -512},                          // unshared classifier claimed but absent
    };
    char *buf = malloc(g_len);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memcpy(buf, g_orig, g_len);
        memcpy(buf + 4 * cases[i].field, &cases[i].value, 4);
        expect_fail(test_write_bytes(g_dir, "hdr.bin", buf, g_len), NULL);
    }
    // all-huge header: the expected size overflows size_t arithmetic without wrapping to a match
    int32_t huge[7] = {0x7ffffffe, 0x7fffffff, 0x7fffffff, 1, 1, 0x7fffffff, 0x7fffffff};
    memcpy(buf, g_orig, g_len);
    memcpy(buf, huge, sizeof huge);
    expect_fail(test_write_bytes(g_dir, "hdr.bin", buf, g_len), NULL);
    free(buf);
}

static void test_missing_tokenizer_and_files(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    Model m = {0};
    const char *p = test_write_bytes(g_dir, "alone.bin", g_orig, g_len);
    char path[700];
    snprintf(path, sizeof path, "%s", p);
    assert_int_not_equal(load_llama2c(&m, path, NULL, err), 0);
    assert_non_null(strstr(err, "no tokenizer found beside"));
    assert_non_null(strstr(err, path));
    model_free(&m);
    // explicit tokenizer path that does not exist
    assert_int_not_equal(load_llama2c(&m, path, "/nonexistent/tok.bin", err), 0);
    assert_non_null(strstr(err, "/nonexistent/tok.bin"));
    model_free(&m);
    // missing model file
    assert_int_not_equal(llama2c_load_weights(&m, "/nonexistent/model.bin", err), 0);
    assert_non_null(strstr(err, "/nonexistent/model.bin"));
    model_free(&m);
    // directory with two model .bin files is ambiguous
    test_write_bytes(g_dir, "other.bin", g_orig, 28);
    assert_int_not_equal(load_llama2c(&m, g_dir, NULL, err), 0);
    assert_non_null(strstr(err, g_dir));
    model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_trailing_bytes),
        cmocka_unit_test(test_bad_header_values),
        cmocka_unit_test(test_missing_tokenizer_and_files),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
