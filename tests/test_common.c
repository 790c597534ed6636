// test_common.c — unit tests of model/common.c and the q/k row permutation in model/model.c.
#include "tests/testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/common.h"
#include "model/model.h"

static void test_f16_roundtrip(void **state) {
    (void)state;
    const float vals[] = {0.0f, 1.0f, -2.5f, 65504.0f, 6.1035156e-05f, 5.9604645e-08f, 0.333251953125f};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++)
        assert_true(ftk_f16_to_f32(ftk_f32_to_f16(vals[i])) == vals[i]);
    assert_int_equal(ftk_f32_to_f16(1.0f), 0x3c00);
    assert_int_equal(ftk_f32_to_f16(-2.0f), 0xc000);
    assert_true(isinf(ftk_f16_to_f32(ftk_f32_to_f16(1e6f))));
    // round to nearest even: 1 + 2^-11 is exactly between 1 and 1 + 2^-10 -> 1
    assert_int_equal(ftk_f32_to_f16(1.0f + 0.00048828125f), 0x3c00);
}

static void test_bf16(void **state) {
    (void)state;
    assert_int_equal(ftk_f32_to_bf16(1.0f), 0x3f80);
    assert_true(ftk_bf16_to_f32(0x3f80) == 1.0f);
    assert_true(ftk_bf16_to_f32(ftk_f32_to_bf16(3.140625f)) == 3.140625f);
    // 1 + 2^-8 is halfway between bf16 1.0 and 1.0078125: ties to even -> 1.0
    assert_int_equal(ftk_f32_to_bf16(1.00390625f), 0x3f80);
}

static void test_permute_roundtrip(void **state) {
    (void)state;
    const int nh = 3, hd = 8, cols = 5, n = nh * hd * cols;
    float *w = malloc(n * sizeof(float)), *orig = malloc(n * sizeof(float));
    for (int i = 0; i < n; i++) orig[i] = w[i] = (float)i;
    permute_rows_meta_to_hf(w, nh, hd, cols);
    // HF row (h, half, j) comes from Meta row (h, j, half): HF row 1 of head 0 = Meta row 2.
    assert_true(w[1 * cols] == orig[2 * cols]);
    assert_true(w[4 * cols] == orig[1 * cols]);  // HF (0, 1, 0) <- Meta (0, 0, 1) = row 1
    permute_rows_hf_to_meta(w, nh, hd, cols);
    assert_memory_equal(w, orig, n * sizeof(float));
    free(w);
    free(orig);
}

static void test_atomic_write(void **state) {
    (void)state;
    const char *dir = test_tmpdir("atomic");
    char path[600], err[FTK_ERR_LEN];
    snprintf(path, sizeof path, "%s/out.bin", dir);
    assert_int_equal(ftk_write_file_atomic(path, "hello", 5, err), 0);
    char *data;
    size_t len;
    assert_int_equal(ftk_read_file(path, &data, &len, err), 0);
    assert_int_equal(len, 5);
    free(data);
    char tmp[620];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_false(ftk_file_exists(tmp));
    // unwritable location: clear error, nothing left behind
    assert_int_not_equal(ftk_write_file_atomic("/nonexistent-dir/x.bin", "a", 1, err), 0);
    assert_non_null(strstr(err, "/nonexistent-dir/x.bin"));
    // A directory where a file is expected is named as such (it used to fail a LONG_MAX malloc).
    data = (char *)1;
    assert_int_not_equal(ftk_read_file(dir, &data, &len, err), 0);
    assert_null(data);
    assert_non_null(strstr(err, dir));
    assert_non_null(strstr(err, "is a directory"));
    test_rmtree(dir);
}

static void test_checked_mul(void **state) {
    (void)state;
    size_t out;
    assert_int_equal(ftk_mul(1u << 20, 1u << 20, &out), 0);
    assert_int_not_equal(ftk_mul(SIZE_MAX / 2, 3, &out), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_roundtrip), cmocka_unit_test(test_bf16), cmocka_unit_test(test_permute_roundtrip),
        cmocka_unit_test(test_atomic_write), cmocka_unit_test(test_checked_mul),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
