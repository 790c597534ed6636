// test_gguf_badinput.c — corrupted GGUF files: truncation, lengths and counts past the end,
// tensor offsets past the end / misaligned / overlapping, too many dims, unknown types, shapes
// that disagree with the config, unknown architecture, bad tokenizer keys, random byte flips.
// Every case must fail with an error naming the file and never crash (runs under ASan/UBSan).
#include "tests/testutil.h"

#include <stdlib.h>
#include <string.h>

#include "model/common.h"
#include "model/gguf.h"
#include "model/loaders.h"
#include "model/model.h"
#include "model/tokenizer.h"

static char *g_q8, *g_f32;    // stories260K-q8_0.gguf and -f32.gguf bytes
static size_t g_q8_len, g_f32_len;
static const char *g_dir;

static int setup(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    if (ftk_read_file(shared_path("models/stories260K-gguf/stories260K-q8_0.gguf"), &g_q8, &g_q8_len, err)) return -1;
    if (ftk_read_file(shared_path("models/stories260K-gguf/stories260K-f32.gguf"), &g_f32, &g_f32_len, err)) return -1;
    g_dir = test_tmpdir("ggufbad");
    return g_dir ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    free(g_q8);
    free(g_f32);
    test_rmtree(g_dir);
    return 0;
}

static char *copy_of(const char *src, size_t len) {
    char *b = malloc(len);
    memcpy(b, src, len);
    return b;
}

// Byte offset of the n_dims field of tensor info `name` (just after its length-prefixed name).
static size_t tensor_info_at(const char *buf, size_t len, const char *name) {
    size_t n = strlen(name);
    for (size_t i = 8; i + n <= len; i++) {
        uint64_t l;
        memcpy(&l, buf + i - 8, 8);
        if (l == n && memcmp(buf + i, name, n) == 0) return i + n;
    }
    fail_msg("tensor info %s not found", name);
    return 0;
}

// Byte offset of the value type field of key `key`.
static size_t kv_at(const char *buf, size_t len, const char *key) {
    return tensor_info_at(buf, len, key);   // same "u64 length + bytes" search
}

static void put_u32(char *buf, size_t off, uint32_t v) { memcpy(buf + off, &v, 4); }
static void put_u64(char *buf, size_t off, uint64_t v) { memcpy(buf + off, &v, 8); }
static uint64_t get_u64(const char *buf, size_t off) { uint64_t v; memcpy(&v, buf + off, 8); return v; }

static void assert_names_file(int rc, const char *err, const char *path, const char *needle) {
    if (rc == 0) fail_msg("%s: accepted but should have failed", path);
    if (!strstr(err, path)) fail_msg("error does not name the file: %s", err);
    if (needle && !strstr(err, needle)) fail_msg("error lacks '%s': %s", needle, err);
}

static void expect_open_fail(const char *name, const char *buf, size_t len, const char *needle) {
    const char *p = test_write_bytes(g_dir, name, buf, len);
    GgufFile f;
    char err[FTK_ERR_LEN] = {0};
    int rc = gguf_open(&f, p, err);
    if (rc == 0) gguf_close(&f);
    assert_names_file(rc, err, p, needle);
}

static void expect_model_fail(const char *name, const char *buf, size_t len, const char *needle) {
    const char *p = test_write_bytes(g_dir, name, buf, len);
    Model m = {0};
    char err[FTK_ERR_LEN] = {0};
    int rc = load_gguf_weights(&m, p, err);
    model_free(&m);
    assert_names_file(rc, err, p, needle);
}

static void test_truncated(void **state) {
    (void)state;
    const size_t cuts[] = {0, 3, 4, 7, 8, 16, 23, 24, 30, 100, 1000, 5000, 14316, 14335, 14336, 20000, g_q8_len / 2,
                           g_q8_len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) expect_open_fail("trunc.gguf", g_q8, cuts[i], NULL);
}

static void test_header_fields(void **state) {
    (void)state;
    char *b = copy_of(g_q8, g_q8_len);
    memcpy(b, "GGUG", 4);
    expect_open_fail("magic.gguf", b, g_q8_len, "magic");
    memcpy(b, "GGUF", 4);
    put_u32(b, 4, 1);
    expect_open_fail("v1.gguf", b, g_q8_len, "version");
    put_u32(b, 4, 3u << 24);   // a big-endian file's version as read little-endian
    expect_open_fail("bigendian.gguf", b, g_q8_len, "big-endian");
    put_u32(b, 4, 3);
    put_u64(b, 8, UINT64_MAX);   // tensor count
    expect_open_fail("ntensors.gguf", b, g_q8_len, NULL);
    put_u64(b, 8, 47);
    put_u64(b, 16, 1ull << 40);  // KV count
    expect_open_fail("nkv.gguf", b, g_q8_len, NULL);
    put_u64(b, 16, 26);          // one KV more than present: tensor infos get read as a KV
    expect_open_fail("nkv26.gguf", b, g_q8_len, NULL);
    put_u64(b, 16, 25);
    put_u64(b, 8, 48);           // one tensor more than present
    expect_open_fail("nt48.gguf", b, g_q8_len, NULL);
    free(b);
}

static void test_string_and_array_lengths(void **state) {
    (void)state;
    char *b = copy_of(g_q8, g_q8_len);
    // the first key's length (at offset 24) points past the end
    put_u64(b, 24, g_q8_len);
    expect_open_fail("keylen.gguf", b, g_q8_len, "past the end");
    put_u64(b, 24, UINT64_MAX);
    expect_open_fail("keylen2.gguf", b, g_q8_len, NULL);
    memcpy(b, g_q8, g_q8_len);
    // general.architecture's string value length
    size_t t = kv_at(b, g_q8_len, "general.architecture");
    put_u64(b, t + 4, (uint64_t)g_q8_len);
    expect_open_fail("strlen.gguf", b, g_q8_len, "past the end");
    memcpy(b, g_q8, g_q8_len);
    // tokens array: huge count, then a count one too large, then a bad element type
    t = kv_at(b, g_q8_len, "tokenizer.ggml.tokens");
    put_u64(b, t + 8, 1ull << 62);
    expect_open_fail("arrcount.gguf", b, g_q8_len, "past the end");
    put_u64(b, t + 8, 513);   // the 513th "string" swallows the next key: fails somewhere after
    expect_open_fail("arrcount2.gguf", b, g_q8_len, NULL);
    put_u64(b, t + 8, 512);
    put_u32(b, t + 4, 99);
    expect_open_fail("arrtype.gguf", b, g_q8_len, "unknown value type");
    memcpy(b, g_q8, g_q8_len);
    put_u32(b, kv_at(b, g_q8_len, "llama.block_count"), 77);   // unknown KV value type
    expect_open_fail("kvtype.gguf", b, g_q8_len, "unknown value type");
    memcpy(b, g_q8, g_q8_len);
    // one token's length stretched past the end
    t = kv_at(b, g_q8_len, "tokenizer.ggml.tokens");
    put_u64(b, t + 16, (uint64_t)g_q8_len);
    expect_open_fail("tokenlen.gguf", b, g_q8_len, "past the end");
    free(b);
}

static void test_tensor_infos(void **state) {
    (void)state;
    char *b = copy_of(g_q8, g_q8_len);
    // output_norm.weight: n_dims 1, ne[0] 64, type F32, offset 329856 (the last tensor)
    const size_t nd = tensor_info_at(b, g_q8_len, "output_norm.weight");
    const size_t type_at = nd + 4 + 8, off_at = type_at + 4;
    assert_int_equal(get_u64(b, off_at), 329856);
    put_u64(b, off_at, 329856 + 32 * 1024);   // aligned but past the end
    expect_open_fail("offpast.gguf", b, g_q8_len, "past the end");
    put_u64(b, off_at, UINT64_MAX - 31);      // aligned, overflows data_offset + offset
    expect_open_fail("offwrap.gguf", b, g_q8_len, NULL);
    put_u64(b, off_at, 329856 + 4);           // misaligned
    expect_open_fail("misaligned.gguf", b, g_q8_len, "alignment");
    put_u64(b, off_at, 327680);               // on top of blk.4.attn_v.weight
    expect_open_fail("overlap.gguf", b, g_q8_len, "overlap");
    put_u64(b, off_at, 329856);
    put_u32(b, nd, 5);
    expect_open_fail("ndims5.gguf", b, g_q8_len, "dimensions");
    put_u32(b, nd, 0);
    expect_open_fail("ndims0.gguf", b, g_q8_len, "dimensions");
    put_u32(b, nd, 1);
    put_u32(b, type_at, 99);
    expect_open_fail("ggmltype.gguf", b, g_q8_len, "unknown ggml type");
    put_u32(b, type_at, GGML_TYPE_Q8_0);      // 64 elements of Q8_0 = 68 bytes: fits; loads as a norm
    put_u64(b, nd + 4, 48);                   // 48 is not a multiple of the Q8_0 block
    expect_open_fail("q8block.gguf", b, g_q8_len, "block");
    put_u64(b, nd + 4, 1ull << 63);           // negative as int64
    expect_open_fail("negdim.gguf", b, g_q8_len, NULL);
    memcpy(b, g_q8, g_q8_len);
    // a duplicate tensor name
    size_t n2 = tensor_info_at(b, g_q8_len, "blk.1.attn_norm.weight");
    memcpy(b + n2 - strlen("blk.1.attn_norm.weight"), "blk.0", 5);
    expect_open_fail("dupname.gguf", b, g_q8_len, "duplicate");
    memcpy(b, g_q8, g_q8_len);
    // a Q4_K tensor is recognised but not converted
    const size_t ndq = tensor_info_at(b, g_q8_len, "token_embd.weight");
    put_u64(b, ndq + 4, 256);                 // ne {256, 512} Q4_K = 512 blocks * 144 bytes > 34816 available? overlap
    put_u64(b, ndq + 12, 64);                 // ne {256, 64}: 64 blocks * 144 = 9216 bytes, fits before the next tensor
    put_u32(b, ndq + 20, GGML_TYPE_Q4_K);
    {
        const char *p = test_write_bytes(g_dir, "q4k.gguf", b, g_q8_len);
        GgufFile f;
        char err[FTK_ERR_LEN];
        if (gguf_open(&f, p, err)) fail_msg("%s", err);
        float *dst = malloc(256 * 64 * sizeof(float));
        int rc = gguf_tensor_to_f32(&f, gguf_find_tensor(&f, "token_embd.weight"), dst, 256 * 64, err);
        assert_names_file(rc, err, p, "Q4_K");
        free(dst);
        gguf_close(&f);
        expect_model_fail("q4k.gguf", b, g_q8_len, NULL);   // shape [256, 64] != [64, vocab]
    }
    free(b);
}

static void test_alignment_key(void **state) {
    (void)state;
    // Written by our writer: general.alignment of the wrong type / not a power of two.
    char err[FTK_ERR_LEN];
    const float x[32] = {0};
    const uint64_t ne[1] = {32};
    const char *p = test_write_bytes(g_dir, "al.gguf", "", 0);
    char path[700];
    snprintf(path, sizeof path, "%s", p);
    GgufWriter *w;
    assert_int_equal(gguf_writer_create(&w, err), 0);
    assert_int_equal(gguf_writer_set_alignment(w, 64, err), 0);
    assert_int_equal(gguf_writer_add_tensor_f32(w, "x", 1, ne, x, GGML_TYPE_F32, err), 0);
    assert_int_equal(gguf_writer_write(w, path, err), 0);
    gguf_writer_free(w);
    char *buf;
    size_t len;
    assert_int_equal(ftk_read_file(path, &buf, &len, err), 0);
    size_t t = kv_at(buf, len, "general.alignment");
    put_u32(buf, t + 4, 48);
    expect_open_fail("al48.gguf", buf, len, "power of two");
    put_u32(buf, t + 4, 0);
    expect_open_fail("al0.gguf", buf, len, "power of two");
    put_u32(buf, t + 4, 64);
    put_u32(buf, t, GGUF_TYPE_INT32);
    expect_open_fail("altype.gguf", buf, len, "general.alignment");
    free(buf);
}

static void test_nested_arrays(void **state) {
    (void)state;
    // Hand-built: one KV holding array(array(u8 x2) x2), then the same nested 6 deep.
    char buf[512];
    size_t n = 0;
#define PUT(v, sz) do { uint64_t tmp_ = (v); memcpy(buf + n, &tmp_, sz); n += sz; } while (0)
    memcpy(buf, "GGUF", 4); n = 4;
    PUT(3, 4); PUT(0, 8); PUT(1, 8);
    PUT(3, 8); memcpy(buf + n, "a.b", 3); n += 3;
    PUT(GGUF_TYPE_ARRAY, 4); PUT(GGUF_TYPE_ARRAY, 4); PUT(2, 8);
    for (int i = 0; i < 2; i++) { PUT(GGUF_TYPE_UINT8, 4); PUT(2, 8); PUT(7, 1); PUT(9, 1); }
    const size_t ok_len = n;
    const char *p = test_write_bytes(g_dir, "nested.gguf", buf, ok_len);
    GgufFile f;
    char err[FTK_ERR_LEN];
    if (gguf_open(&f, p, err)) fail_msg("%s", err);
    const GgufKV *kv = gguf_find_kv(&f, "a.b");
    assert_non_null(kv);
    assert_int_equal(kv->arr_type, GGUF_TYPE_ARRAY);
    assert_int_equal(kv->arr_n, 2);
    char **s;
    size_t ns;
    assert_int_equal(gguf_get_str_array(&f, "a.b", &s, &ns, err), -1);   // wrong element type, clean error
    gguf_close(&f);
    expect_open_fail("nested_trunc.gguf", buf, ok_len - 1, NULL);
    // too deep: array(array(array(array(array(u8)))))
    n = 24;
    PUT(3, 8); memcpy(buf + n, "a.b", 3); n += 3;
    PUT(GGUF_TYPE_ARRAY, 4);
    for (int d = 0; d < 6; d++) { PUT(GGUF_TYPE_ARRAY, 4); PUT(1, 8); }
    PUT(GGUF_TYPE_UINT8, 4); PUT(1, 8); PUT(1, 1);
    expect_open_fail("deep.gguf", buf, n, "nested");
#undef PUT
}

static void test_model_level(void **state) {
    (void)state;
    char *b = copy_of(g_f32, g_f32_len);
    // a shape that disagrees with the config: attn_q ne {64, 64} -> {64, 32} (still inside the file)
    size_t nd = tensor_info_at(b, g_f32_len, "blk.2.attn_q.weight");
    put_u64(b, nd + 12, 32);
    expect_model_fail("shape.gguf", b, g_f32_len, "blk.2.attn_q.weight");
    memcpy(b, g_f32, g_f32_len);
    // unknown architecture
    size_t t = kv_at(b, g_f32_len, "general.architecture");
    memcpy(b + t + 12, "llamb", 5);
    expect_model_fail("arch.gguf", b, g_f32_len, "llamb");
    memcpy(b, g_f32, g_f32_len);
    // a renamed tensor: output_norm missing / an unexpected tensor
    nd = tensor_info_at(b, g_f32_len, "output_norm.weight");
    memcpy(b + nd - 6, "wexght", 6);
    expect_model_fail("missing.gguf", b, g_f32_len, "output_norm.weight");
    memcpy(b, g_f32, g_f32_len);
    // block_count says 6 but there are 5 blocks
    t = kv_at(b, g_f32_len, "llama.block_count");
    put_u32(b, t + 4, 6);
    expect_model_fail("blocks.gguf", b, g_f32_len, "blk.5");
    put_u32(b, t + 4, 0);
    expect_model_fail("blocks0.gguf", b, g_f32_len, "block_count");
    memcpy(b, g_f32, g_f32_len);
    // embedding_length disagrees with token_embd
    t = kv_at(b, g_f32_len, "llama.embedding_length");
    put_u32(b, t + 4, 128);
    expect_model_fail("embd.gguf", b, g_f32_len, NULL);
    put_u32(b, t + 4, 60);   // not a multiple of 8 heads
    expect_model_fail("embd60.gguf", b, g_f32_len, NULL);
    memcpy(b, g_f32, g_f32_len);
    // head_count_kv that does not divide head_count
    t = kv_at(b, g_f32_len, "llama.attention.head_count_kv");
    put_u32(b, t + 4, 3);
    expect_model_fail("kvheads.gguf", b, g_f32_len, NULL);
    memcpy(b, g_f32, g_f32_len);
    // a key of the wrong type
    t = kv_at(b, g_f32_len, "llama.rope.freq_base");
    put_u32(b, t, GGUF_TYPE_UINT32);
    expect_model_fail("ftype.gguf", b, g_f32_len, "llama.rope.freq_base");
    free(b);
    // no general.architecture at all: a tokenizer-only file is not a model
    Model m = {0};
    char err[FTK_ERR_LEN];
    const char *vp = shared_path("models/gpt2-tokenizer/ggml-vocab-gpt-2.gguf");
    assert_names_file(load_gguf_weights(&m, vp, err), err, vp, "token_embd.weight");
    model_free(&m);
}

static void test_tokenizer_keys(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    const char *toks[3] = {"<unk>", "a", "b"};
    const float scores2[2] = {0, 1};
    // (label, mutation): each writer-built vocab-only file has one fault
    for (int k = 0; k < 6; k++) {
        GgufWriter *w;
        assert_int_equal(gguf_writer_create(&w, err), 0);
        if (k != 0) gguf_writer_set_str(w, "tokenizer.ggml.model", k == 1 ? "wordpiece" : "llama", err);
        gguf_writer_set_str_array(w, "tokenizer.ggml.tokens", toks, 3, err);
        if (k == 2) gguf_writer_set_array(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, scores2, 2, err);
        if (k == 3) gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 3, err);
        if (k == 4) gguf_writer_set_str(w, "tokenizer.ggml.token_type", "x", err);
        if (k == 5) gguf_writer_set_u32(w, "tokenizer.ggml.add_bos_token", 1, err);   // must be bool
        char name[64];
        snprintf(name, sizeof name, "tok%d.gguf", k);
        const char *p = test_write_bytes(g_dir, name, "", 0);
        char path[700];
        snprintf(path, sizeof path, "%s", p);
        assert_int_equal(gguf_writer_write(w, path, err), 0);
        gguf_writer_free(w);
        Tokenizer *t = NULL;
        const char *needles[] = {"tokenizer.ggml.model", "wordpiece", "scores", "bos_token_id", "token_type",
                                 "add_bos_token"};
        assert_names_file(tokenizer_load_gguf(&t, path, err), err, path, needles[k]);
        assert_null(t);
    }
}

// Random byte flips in the header (KVs + tensor infos) of the Q8_0 file: any outcome but a crash.
static void test_random_flips(void **state) {
    (void)state;
    uint64_t seed = 1234;
    char *b = malloc(g_q8_len);
    char err[FTK_ERR_LEN];
    int failures = 0;
    for (int it = 0; it < 150; it++) {
        memcpy(b, g_q8, g_q8_len);
        int flips = 1 + (int)(ftk_rand_u32(&seed) % 4);
        for (int k = 0; k < flips; k++) {
            size_t at = ftk_rand_u32(&seed) % 14336;
            b[at] = (char)(ftk_rand_u32(&seed) & 0xff);
        }
        const char *p = test_write_bytes(g_dir, "flip.gguf", b, g_q8_len);
        Model m = {0};
        if (load_gguf_weights(&m, p, err)) {
            failures++;
            assert_non_null(strstr(err, p));
        }
        model_free(&m);
        Tokenizer *t = NULL;
        if (tokenizer_load_gguf(&t, p, err) == 0) tokenizer_free(t);
    }
    free(b);
    assert_true(failures > 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_header_fields),
        cmocka_unit_test(test_string_and_array_lengths),
        cmocka_unit_test(test_tensor_infos),
        cmocka_unit_test(test_alignment_key),
        cmocka_unit_test(test_nested_arrays),
        cmocka_unit_test(test_model_level),
        cmocka_unit_test(test_tokenizer_keys),
        cmocka_unit_test(test_random_flips),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
