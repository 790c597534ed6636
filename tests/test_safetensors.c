// test_safetensors.c — model/safetensors.c: writer -> reader round trips (bit-exact F32, F16/BF16
// rounding, integer types), the byte layout the reference writer produces (header padded to 8,
// {"format":"pt"}, dtype-then-name order, packed), and reading a real file made by PyTorch.
#include "tests/testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/common.h"
#include "model/safetensors.h"

static uint64_t u64_le(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static void test_roundtrip(void **state) {
    (void)state;
    char err[FTK_ERR_LEN], path[600];
    const char *dir = test_tmpdir("st-rt");
    assert_non_null(dir);
    snprintf(path, sizeof path, "%s/rt.safetensors", dir);

    // Values chosen to exercise rounding: subnormals, ties, large magnitudes, negative zero, NaN.
    enum { R = 5, C = 7 };
    float w[R * C];
    uint64_t rng = 42;
    for (int i = 0; i < R * C; i++) w[i] = ftk_rand_normal(&rng) * 3.0f;
    w[0] = -0.0f;
    w[1] = 1.00390625f;       // bf16 tie -> 1.0
    w[2] = 1.0f + 0.00048828125f;   // f16 tie -> 1.0
    w[3] = 65504.0f;
    w[4] = 6e-8f;             // f16 subnormal
    w[5] = NAN;
    float bias[3] = {0.5f, -1.25f, 3.0e-3f};
    float scalar = 2.75f;
    int32_t ids[6] = {1, 2, -3, 2147483647, -2147483647 - 1, 0};
    int64_t big[3] = {7, -9, 123456789};
    uint8_t mask[4] = {1, 0, 1, 1};

    StWriter *wr;
    assert_int_equal(st_writer_create(&wr, err), 0);
    const int64_t s_w[2] = {R, C}, s_b[1] = {3}, s_ids[2] = {2, 3}, s_big[1] = {3}, s_mask[1] = {4}, s_empty[2] = {0, 4};
    assert_int_equal(st_writer_add_f32(wr, "w.f32", 2, s_w, w, ST_F32, err), 0);
    assert_int_equal(st_writer_add_f32(wr, "w.f16", 2, s_w, w, ST_F16, err), 0);
    assert_int_equal(st_writer_add_f32(wr, "w.bf16", 2, s_w, w, ST_BF16, err), 0);
    assert_int_equal(st_writer_add_f32(wr, "bias", 1, s_b, bias, ST_F32, err), 0);
    assert_int_equal(st_writer_add_f32(wr, "scalar", 0, NULL, &scalar, ST_F32, err), 0);
    assert_int_equal(st_writer_add_f32(wr, "empty", 2, s_empty, NULL, ST_F32, err), 0);
    assert_int_equal(st_writer_add_raw(wr, "ids", ST_I32, 2, s_ids, ids, err), 0);
    assert_int_equal(st_writer_add_raw(wr, "big", ST_I64, 1, s_big, big, err), 0);
    assert_int_equal(st_writer_add_raw(wr, "mask", ST_U8, 1, s_mask, mask, err), 0);
    assert_int_equal(st_writer_set_metadata(wr, "note", "a \"quoted\"\nvalue", err), 0);
    // 3*4 (bias) + 4 (scalar) + 35*4 + 2*35*2 (f16, bf16) + 6*4 + 3*8 + 4
    assert_int_equal(st_writer_data_bytes(wr), 12 + 4 + 140 + 140 + 24 + 24 + 4);
    assert_int_equal(st_writer_write(wr, path, err), 0);
    st_writer_free(wr);

    // Byte layout.
    char *raw;
    size_t len;
    assert_int_equal(ftk_read_file(path, &raw, &len, err), 0);
    uint64_t hlen = u64_le((const uint8_t *)raw);
    assert_int_equal(hlen % 8, 0);
    assert_int_equal(8 + hlen + 12 + 4 + 140 + 140 + 24 + 24 + 4, len);
    assert_true(raw[8] == '{');
    assert_non_null(strstr(raw + 8, "\"__metadata__\":{\"format\":\"pt\""));
    // Reference order: 8-byte dtypes first, then 4-byte, then 2-byte, then 1-byte; names sorted
    // within a size. So "big" (I64) is at offset 0 and "mask" (U8) last.
    assert_non_null(strstr(raw + 8, "\"big\":{\"dtype\":\"I64\",\"shape\":[3],\"data_offsets\":[0,24]}"));
    assert_non_null(strstr(raw + 8, "\"bias\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[24,36]}"));
    assert_non_null(strstr(raw + 8, "\"scalar\":{\"dtype\":\"F32\",\"shape\":[],"));
    assert_non_null(strstr(raw + 8, "\"mask\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[344,348]}"));
    // f16 of 1.0 + 2^-11 rounds to even (0x3c00) at element 2 of w.f16.
    const char *p16 = strstr(raw + 8, "\"w.f16\":{\"dtype\":\"F16\",\"shape\":[5,7],\"data_offsets\":[");
    assert_non_null(p16);
    size_t off16 = strtoul(strstr(p16, "data_offsets\":[") + strlen("data_offsets\":["), NULL, 10);
    uint16_t h;
    memcpy(&h, raw + 8 + hlen + off16 + 2 * 2, 2);
    assert_int_equal(h, 0x3c00);
    free(raw);

    // Read back.
    StFile f;
    assert_int_equal(st_open(&f, path, err), 0);
    assert_int_equal(f.n_tensors, 9);
    assert_non_null(f.metadata_json);
    assert_non_null(strstr(f.metadata_json, "\"format\":\"pt\""));
    assert_non_null(strstr(f.metadata_json, "\"note\":\"a \\\"quoted\\\"\\nvalue\""));
    float back[R * C];
    const StTensor *t = st_find(&f, "w.f32");
    assert_non_null(t);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], R);
    assert_int_equal(t->shape[1], C);
    assert_int_equal(st_read_f32(&f, t, back, R * C, err), 0);
    assert_memory_equal(back, w, sizeof w);   // bit-identical, including -0 and NaN
    t = st_find(&f, "w.f16");
    assert_int_equal(t->dtype, ST_F16);
    assert_int_equal(st_read_f32(&f, t, back, R * C, err), 0);
    for (int i = 0; i < R * C; i++) {
        float want = ftk_f16_to_f32(ftk_f32_to_f16(w[i]));
        if (isnan(want)) assert_true(isnan(back[i]));
        else assert_memory_equal(&back[i], &want, 4);
    }
    assert_true(back[2] == 1.0f);
    assert_true(back[3] == 65504.0f);
    assert_true(back[4] == 5.9604645e-08f);   // nearest f16 subnormal to 6e-8
    t = st_find(&f, "w.bf16");
    assert_int_equal(st_read_f32(&f, t, back, R * C, err), 0);
    for (int i = 6; i < R * C; i++) assert_true(back[i] == ftk_bf16_to_f32(ftk_f32_to_bf16(w[i])));
    assert_true(back[1] == 1.0f);
    assert_true(isnan(back[5]));
    assert_true(fabsf(back[10] - w[10]) <= fabsf(w[10]) * (1.0f / 256));
    t = st_find(&f, "scalar");
    assert_int_equal(t->ndim, 0);
    assert_int_equal(t->numel, 1);
    assert_int_equal(st_read_f32(&f, t, back, 1, err), 0);
    assert_true(back[0] == 2.75f);
    t = st_find(&f, "empty");
    assert_int_equal(t->numel, 0);
    assert_int_equal(t->begin, t->end);
    int32_t ib[6];
    assert_int_equal(st_read_i32(&f, st_find(&f, "ids"), ib, 6, err), 0);
    assert_memory_equal(ib, ids, sizeof ids);
    assert_int_equal(st_read_i32(&f, st_find(&f, "big"), ib, 3, err), 0);
    assert_int_equal(ib[0], 7);
    assert_int_equal(ib[1], -9);
    assert_int_equal(ib[2], 123456789);
    assert_int_equal(st_read_i32(&f, st_find(&f, "mask"), ib, 4, err), 0);
    assert_int_equal(ib[0] + ib[1] + ib[2] + ib[3], 3);
    // Wrong element count and wrong kind are errors naming the file and the tensor.
    assert_int_not_equal(st_read_f32(&f, st_find(&f, "bias"), back, 4, err), 0);
    assert_non_null(strstr(err, "rt.safetensors"));
    assert_non_null(strstr(err, "bias"));
    assert_int_not_equal(st_read_f32(&f, st_find(&f, "ids"), back, 6, err), 0);
    assert_int_not_equal(st_read_i32(&f, st_find(&f, "bias"), ib, 3, err), 0);
    assert_null(st_find(&f, "nope"));
    st_close(&f);
    test_rmtree(dir);
}

// A tensor larger than the writer's conversion chunk, and the I64 -> int32 range check.
static void test_large_and_ranges(void **state) {
    (void)state;
    char err[FTK_ERR_LEN], path[600];
    const char *dir = test_tmpdir("st-large");
    snprintf(path, sizeof path, "%s/large.safetensors", dir);
    const size_t n = 100003;
    float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = (float)i * 0.001f - 37.0f;
    int64_t too_big[2] = {1, (int64_t)1 << 40};
    double d[3] = {0.1, -2.5, 1e30};
    StWriter *wr;
    assert_int_equal(st_writer_create(&wr, err), 0);
    const int64_t s[1] = {(int64_t)n}, s2[1] = {2}, s3[1] = {3};
    assert_int_equal(st_writer_add_f32(wr, "x", 1, s, x, ST_BF16, err), 0);
    assert_int_equal(st_writer_add_raw(wr, "too_big", ST_I64, 1, s2, too_big, err), 0);
    assert_int_equal(st_writer_add_raw(wr, "d", ST_F64, 1, s3, d, err), 0);
    assert_int_equal(st_writer_write(wr, path, err), 0);
    st_writer_free(wr);
    StFile f;
    assert_int_equal(st_open(&f, path, err), 0);
    assert_int_equal(st_read_f32(&f, st_find(&f, "x"), y, n, err), 0);
    for (size_t i = 0; i < n; i++) assert_true(y[i] == ftk_bf16_to_f32(ftk_f32_to_bf16(x[i])));
    int32_t ib[2];
    assert_int_not_equal(st_read_i32(&f, st_find(&f, "too_big"), ib, 2, err), 0);
    assert_non_null(strstr(err, "too_big"));
    float df[3];
    assert_int_equal(st_read_f32(&f, st_find(&f, "d"), df, 3, err), 0);
    assert_true(df[0] == 0.1f && df[1] == -2.5f && df[2] == 1e30f);
    st_close(&f);
    free(x);
    free(y);
    test_rmtree(dir);
}

static void test_writer_errors(void **state) {
    (void)state;
    char err[FTK_ERR_LEN], path[600];
    float v[2] = {1, 2};
    const int64_t s[1] = {2}, neg[1] = {-1};
    StWriter *wr;
    assert_int_equal(st_writer_create(&wr, err), 0);
    assert_int_equal(st_writer_add_f32(wr, "a", 1, s, v, ST_F32, err), 0);
    assert_int_not_equal(st_writer_add_f32(wr, "a", 1, s, v, ST_F16, err), 0);   // duplicate
    assert_non_null(strstr(err, "'a'"));
    assert_int_not_equal(st_writer_add_f32(wr, "b", 1, s, v, ST_I32, err), 0);   // fp32 -> int
    assert_int_not_equal(st_writer_add_f32(wr, "c", 1, neg, v, ST_F32, err), 0);
    assert_int_not_equal(st_writer_add_f32(wr, "__metadata__", 1, s, v, ST_F32, err), 0);
    assert_int_not_equal(st_writer_set_metadata(wr, "format", "tf", err), 0);
    assert_int_equal(st_writer_set_metadata(wr, "format", "pt", err), 0);
    // A directory that does not exist: fails, names the path, leaves nothing behind.
    snprintf(path, sizeof path, "/tmp/ftk-no-such-dir-%d/x.safetensors", (int)getpid());
    assert_int_not_equal(st_writer_write(wr, path, err), 0);
    assert_non_null(strstr(err, "x.safetensors"));
    st_writer_free(wr);

    // Overwriting an existing file is atomic: no .tmp remains and the new content is in place.
    const char *dir = test_tmpdir("st-werr");
    snprintf(path, sizeof path, "%s/o.safetensors", dir);
    for (int k = 0; k < 2; k++) {
        assert_int_equal(st_writer_create(&wr, err), 0);
        v[0] = (float)k;
        assert_int_equal(st_writer_add_f32(wr, "a", 1, s, v, ST_F32, err), 0);
        assert_int_equal(st_writer_write(wr, path, err), 0);
        st_writer_free(wr);
    }
    char tmp[620];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_false(ftk_file_exists(tmp));
    StFile f;
    float back[2];
    assert_int_equal(st_open(&f, path, err), 0);
    assert_int_equal(st_read_f32(&f, st_find(&f, "a"), back, 2, err), 0);
    assert_true(back[0] == 1.0f && back[1] == 2.0f);
    st_close(&f);
    test_rmtree(dir);
}

// An empty writer still produces a valid file (header only).
static void test_empty_file(void **state) {
    (void)state;
    char err[FTK_ERR_LEN], path[600];
    const char *dir = test_tmpdir("st-empty");
    snprintf(path, sizeof path, "%s/e.safetensors", dir);
    StWriter *wr;
    assert_int_equal(st_writer_create(&wr, err), 0);
    assert_int_equal(st_writer_write(wr, path, err), 0);
    st_writer_free(wr);
    StFile f;
    assert_int_equal(st_open(&f, path, err), 0);
    assert_int_equal(f.n_tensors, 0);
    assert_int_equal(f.data_len, 0);
    st_close(&f);
    test_rmtree(dir);
}

// The PyTorch-written test vectors (46 tensors; I32 ids and mask, F32 everything else).
static void test_read_reference_file(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    StFile f;
    const char *path = shared_path("testvectors/stories260K-lora-grad/lora_grad.safetensors");
    assert_int_equal(st_open(&f, path, err), 0);
    assert_int_equal(f.n_tensors, 46);
    assert_non_null(strstr(f.metadata_json, "\"format\":\"pt\""));
    assert_int_equal(8 + 5568 + f.data_len, f.map_len);   // header length 5568 (padded to 8)

    const StTensor *t = st_find(&f, "input_ids");
    assert_non_null(t);
    assert_int_equal(t->dtype, ST_I32);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], 2);
    assert_int_equal(t->shape[1], 24);
    int32_t ids[48], mask[48];
    assert_int_equal(st_read_i32(&f, t, ids, 48, err), 0);
    assert_int_equal(ids[0], 1);    // BOS
    assert_int_equal(ids[24], 1);
    for (int i = 0; i < 48; i++) assert_true(ids[i] >= 0 && ids[i] < 512);
    assert_int_equal(st_read_i32(&f, st_find(&f, "loss_mask"), mask, 48, err), 0);
    int s0 = 0, s1 = 0, first1 = -1;
    for (int i = 0; i < 24; i++) {
        s0 += mask[i];
        s1 += mask[24 + i];
        if (mask[i] && first1 < 0) first1 = i;
    }
    assert_int_equal(s0, 8);
    assert_int_equal(s1, 9);
    assert_int_equal(first1, 16);   // prompt length incl. BOS is 16 for row 0

    float loss;
    t = st_find(&f, "loss");
    assert_int_equal(t->numel, 1);
    assert_int_equal(st_read_f32(&f, t, &loss, 1, err), 0);
    assert_true(fabs(loss - 0.8587086875447968) < 1e-6);

    t = st_find(&f, "base_model.model.model.layers.3.self_attn.v_proj.lora_B.weight");
    assert_non_null(t);
    assert_int_equal(t->shape[0], 32);
    assert_int_equal(t->shape[1], 4);
    t = st_find(&f, "logits");
    assert_int_equal(t->ndim, 3);
    assert_int_equal(t->shape[0], 2);
    assert_int_equal(t->shape[1], 27);
    assert_int_equal(t->shape[2], 512);
    // Values read with Python's struct from the raw bytes of the file (data offset 0 and the
    // start of "logits"), independent of this reader.
    t = st_find(&f, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
    assert_int_equal(t->begin, 0);
    float a[256];
    assert_int_equal(st_read_f32(&f, t, a, 256, err), 0);
    assert_true(a[0] == -0.004415504168719053f);
    assert_true(a[3] == 0.05025574937462807f);
    assert_int_equal(ids[1], 403);
    assert_int_equal(ids[23], 267);
    t = st_find(&f, "logits");
    float *logits = malloc(t->numel * sizeof(float));
    assert_int_equal(st_read_f32(&f, t, logits, t->numel, err), 0);
    assert_true(logits[0] == -12.321566581726074f);
    assert_true(logits[1] == 2.2803401947021484f);
    free(logits);
    st_close(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_large_and_ranges),
        cmocka_unit_test(test_writer_errors),
        cmocka_unit_test(test_empty_file),
        cmocka_unit_test(test_read_reference_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
