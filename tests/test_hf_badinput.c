// test_hf_badinput.c — corrupted safetensors files and HF directories (model/safetensors.c,
// model/hf.c). Every case must fail cleanly with an error that names the offending file; none may
// crash or read out of bounds (this suite also runs under ASan/UBSan).
#include "tests/testutil.h"

#include <stdlib.h>
#include <string.h>

#include "model/common.h"
#include "model/loaders.h"
#include "model/model.h"
#include "model/safetensors.h"

// Plain (non-atomic, no fsync) write: the fuzz loop writes hundreds of files.
static void write_bytes(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) fail_msg("%s: cannot create", path);
    if (len && fwrite(data, 1, len, f) != len) fail_msg("%s: write failed", path);
    fclose(f);
}

__attribute__((noinline)) static char *read_all(const char *path, size_t *len) {
    char *data, err[FTK_ERR_LEN];
    if (ftk_read_file(path, &data, len, err)) fail_msg("%s", err);
    return data;
}

static void copy_file(const char *src, const char *dst) {
    size_t len;
    char *data = read_all(src, &len);
    write_bytes(dst, data, len);
    free(data);
}

// A safetensors file from a header string (length prefix computed) and `data_len` data bytes.
static void make_st(const char *path, const char *header, size_t data_len) {
    size_t hl = strlen(header);
    uint8_t *buf = calloc(1, 8 + hl + data_len + 1);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, header, hl);
    for (size_t i = 0; i < data_len; i++) buf[8 + hl + i] = (uint8_t)i;
    write_bytes(path, buf, 8 + hl + data_len);
    free(buf);
}

// st_open must fail, name the file, and (when given) mention `what`.
static void expect_st_fail(const char *path, const char *what) {
    char err[FTK_ERR_LEN] = "";
    StFile f;
    if (st_open(&f, path, err) == 0) {
        st_close(&f);
        fail_msg("%s: accepted a bad file (expected an error about '%s')", path, what ? what : "?");
    }
    if (!strstr(err, path)) fail_msg("error does not name the file: %s", err);
    if (what && !strstr(err, what)) fail_msg("error does not mention '%s': %s", what, err);
}

// hf_load_weights must fail with an error containing each of the given strings (NULL-terminated).
static void expect_hf_fail(const char *dir, ...) {
    char err[FTK_ERR_LEN] = "";
    Model m = {0};
    int rc = hf_load_weights(&m, dir, err);
    model_free(&m);
    if (rc == 0) fail_msg("%s: loaded a bad directory", dir);
    va_list ap;
    va_start(ap, dir);
    for (const char *s = va_arg(ap, const char *); s; s = va_arg(ap, const char *))
        if (!strstr(err, s)) fail_msg("error does not mention '%s': %s", s, err);
    va_end(ap);
}

// ---------------------------------------------------------------------------------------------
// safetensors files

static void test_truncated(void **state) {
    (void)state;
    const char *src_dir = shared_path("models/tiny-llama-hf");
    char src[4200], cfg[4200], path[600], dcfg[600];
    snprintf(src, sizeof src, "%s/model.safetensors", src_dir);
    snprintf(cfg, sizeof cfg, "%s/config.json", src_dir);
    size_t len;
    char *data = read_all(src, &len);
    const char *dir = test_tmpdir("hfbad-trunc");
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    snprintf(dcfg, sizeof dcfg, "%s/config.json", dir);
    copy_file(cfg, dcfg);
    // header length is 3072: cut inside the prefix, inside the header, at its end, inside the data.
    const size_t cuts[] = {0, 3, 7, 8, 9, 8 + 100, 8 + 3071, 8 + 3072, 8 + 3072 + 1000, len / 2, len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        write_bytes(path, data, cuts[i]);
        expect_st_fail(path, NULL);
        expect_hf_fail(dir, "model.safetensors", NULL);
    }
    // One trailing byte too many is rejected like the reference reader does.
    char *longer = malloc(len + 1);
    memcpy(longer, data, len);
    longer[len] = 0;
    write_bytes(path, longer, len + 1);
    expect_st_fail(path, "not covered");
    free(longer);
    free(data);
    test_rmtree(dir);
}

static void test_crafted_headers(void **state) {
    (void)state;
    const char *dir = test_tmpdir("hfbad-craft");
    char path[600];
    snprintf(path, sizeof path, "%s/bad.safetensors", dir);
    const struct {
        const char *header;
        size_t data_len;
        const char *what;   // expected in the message (NULL: any)
    } cases[] = {
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, NULL},   // control: valid
        {"{\"\xc3\xa9t\xe2\x82\xac\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, NULL},  // UTF-8 name
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, "past the end"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,18446744073709551615]}}", 8, "'a'"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[1e300,8]}}", 8, "'a'"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, "'a'"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,9]}}", 8, "'a'"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-1,7]}}", 8, "'a'"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "needs 12 bytes"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "overlap"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12, "hole"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "twice"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8, "not covered"},
        {" {\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "'{'"},
        {"[{\"a\":1}]", 0, "'{'"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}", 4, "JSON"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}} x", 4, "after the JSON"},
        {"{\"a\":{\"dtype\":\"F128\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "unknown dtype"},
        {"{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4, "not supported"},
        {"{\"a\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "dtype"},
        {"{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "dtype"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "shape"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,4]}}", 4, "shape"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1e300],\"data_offsets\":[0,4]}}", 4, "shape"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":\"1\",\"data_offsets\":[0,4]}}", 4, "shape"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, "dimensions"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,4]}}", 4, "overflow"},
        {"{\"a\":5}", 0, "not a JSON object"},
        {"{\"\xc3\x28\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "UTF-8"},
        {"{\"\xed\xa0\x80\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "UTF-8"},
        {"{\"__metadata__\":{\"format\":1}}", 0, "__metadata__"},
        {"{\"__metadata__\":[\"pt\"]}", 0, "__metadata__"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"__metadata__\":{\"format\":\"pt\"},"
         "\"__metadata__\":{\"format\":\"pt\"}}", 4, "__metadata__"},
    };
    char err[FTK_ERR_LEN];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        make_st(path, cases[i].header, cases[i].data_len);
        if (i < 2) {   // the valid controls
            StFile f;
            if (st_open(&f, path, err)) fail_msg("control case rejected: %s", err);
            st_close(&f);
            continue;
        }
        expect_st_fail(path, cases[i].what);
    }

    // Length prefixes: zero, over the 100 MB limit, larger than the file, 2^64 - 1.
    const uint64_t lens[] = {0, 100000001ull, 64, UINT64_MAX};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        uint8_t buf[40] = {0};
        for (int k = 0; k < 8; k++) buf[k] = (uint8_t)(lens[i] >> (8 * k));
        memcpy(buf + 8, "{}      ", 8);
        write_bytes(path, buf, 16);
        expect_st_fail(path, NULL);
    }
    // A directory and a missing file.
    expect_st_fail(dir, NULL);
    snprintf(path, sizeof path, "%s/none.safetensors", dir);
    expect_st_fail(path, NULL);
    test_rmtree(dir);
}

// Random corruption of a valid file (length prefix and header bytes). Whatever st_open decides,
// it must not crash, and whatever it accepts must lie inside the file.
static void test_random_corruption(void **state) {
    (void)state;
    char err[FTK_ERR_LEN], path[600];
    const char *dir = test_tmpdir("hfbad-fuzz");
    snprintf(path, sizeof path, "%s/fuzz.safetensors", dir);
    float a[6] = {1, 2, 3, 4, 5, 6};
    uint16_t h[3] = {1, 2, 3};
    StWriter *w;
    assert_int_equal(st_writer_create(&w, err), 0);
    const int64_t s23[2] = {2, 3}, s3[1] = {3};
    assert_int_equal(st_writer_add_f32(w, "layer.weight", 2, s23, a, ST_F32, err), 0);
    assert_int_equal(st_writer_add_raw(w, "half", ST_F16, 1, s3, h, err), 0);
    assert_int_equal(st_writer_add_f32(w, "layer.bias", 1, s3, a, ST_BF16, err), 0);
    assert_int_equal(st_writer_write(w, path, err), 0);
    st_writer_free(w);
    size_t len;
    char *orig = read_all(path, &len);
    char *buf = malloc(len);
    uint64_t rng = 12345;
    int accepted = 0;
    for (int iter = 0; iter < 600; iter++) {
        memcpy(buf, orig, len);
        int flips = 1 + (int)(ftk_rand_u32(&rng) % 4);
        for (int k = 0; k < flips; k++) {
            size_t pos = ftk_rand_u32(&rng) % (len - 24);   // prefix + header (+ a little data)
            const char repl[] = "0123456789{}[]\",:-.eE \x01\xff";
            buf[pos] = (ftk_rand_u32(&rng) & 1) ? repl[ftk_rand_u32(&rng) % (sizeof repl - 1)]
                                                : (char)ftk_rand_u32(&rng);
        }
        size_t cut = (iter % 7 == 0) ? ftk_rand_u32(&rng) % len : len;
        write_bytes(path, buf, cut);
        StFile f;
        if (st_open(&f, path, err) == 0) {
            accepted++;
            for (int t = 0; t < f.n_tensors; t++) {
                const StTensor *x = &f.tensors[t];
                assert_true(x->begin <= x->end && x->end <= f.data_len);
                assert_true(x->end - x->begin == x->numel * st_dtype_size(x->dtype));
                if (x->dtype == ST_F32 || x->dtype == ST_F16 || x->dtype == ST_BF16) {
                    float *tmp = malloc(x->numel * sizeof(float) + 1);
                    assert_int_equal(st_read_f32(&f, x, tmp, x->numel, err), 0);
                    free(tmp);
                }
            }
            st_close(&f);
        } else {
            assert_non_null(strstr(err, "fuzz.safetensors"));
        }
    }
    assert_true(accepted < 600);   // most corruptions are caught
    free(buf);
    free(orig);
    test_rmtree(dir);
}

// ---------------------------------------------------------------------------------------------
// HF directories

// Rewrites tiny-llama-hf into dst: drops `drop`, stores `transpose_shape` with its two dims
// swapped, stores `as_int` as I32, and adds `extra_name` as a copy of `extra_src`.
typedef struct {
    const char *drop, *transpose_shape, *as_int, *extra_name, *extra_src;
} Edit;

static void rewrite_llama(const char *dst, const char *config_text, Edit e) {
    char err[FTK_ERR_LEN], p[4200], q[600];
    const char *src = shared_path("models/tiny-llama-hf");
    snprintf(q, sizeof q, "%s/config.json", dst);
    if (config_text) {
        write_bytes(q, config_text, strlen(config_text));
    } else {
        snprintf(p, sizeof p, "%s/config.json", src);
        copy_file(p, q);
    }
    snprintf(p, sizeof p, "%s/model.safetensors", src);
    StFile f;
    assert_int_equal(st_open(&f, p, err), 0);
    float **bufs = calloc((size_t)f.n_tensors + 1, sizeof *bufs);
    StWriter *w;
    assert_int_equal(st_writer_create(&w, err), 0);
    for (int i = 0; i <= f.n_tensors; i++) {
        const StTensor *t = i < f.n_tensors ? &f.tensors[i] : (e.extra_name ? st_find(&f, e.extra_src) : NULL);
        if (!t) continue;
        const char *name = i < f.n_tensors ? t->name : e.extra_name;
        if (e.drop && strcmp(name, e.drop) == 0) continue;
        bufs[i] = malloc(t->numel * sizeof(float) + 1);
        assert_int_equal(st_read_f32(&f, t, bufs[i], t->numel, err), 0);
        int64_t shape[8];
        memcpy(shape, t->shape, sizeof shape);
        if (e.transpose_shape && strcmp(name, e.transpose_shape) == 0) {
            shape[0] = t->shape[1];
            shape[1] = t->shape[0];
        }
        if (e.as_int && strcmp(name, e.as_int) == 0)
            assert_int_equal(st_writer_add_raw(w, name, ST_I32, t->ndim, shape, bufs[i], err), 0);
        else
            assert_int_equal(st_writer_add_f32(w, name, t->ndim, shape, bufs[i], ST_F32, err), 0);
    }
    snprintf(q, sizeof q, "%s/model.safetensors", dst);
    assert_int_equal(st_writer_write(w, q, err), 0);
    st_writer_free(w);
    for (int i = 0; i <= f.n_tensors; i++) free(bufs[i]);
    free(bufs);
    st_close(&f);
}

static void test_bad_tensors(void **state) {
    (void)state;
    const char *dir = test_tmpdir("hfbad-tensors");
    // Control: an unedited rewrite loads.
    rewrite_llama(dir, NULL, (Edit){0});
    char err[FTK_ERR_LEN];
    Model m = {0};
    if (hf_load_weights(&m, dir, err)) fail_msg("control: %s", err);
    model_free(&m);

    rewrite_llama(dir, NULL, (Edit){.transpose_shape = "model.layers.1.self_attn.k_proj.weight"});
    expect_hf_fail(dir, "model.safetensors", "model.layers.1.self_attn.k_proj.weight", "[64, 16]", "[16, 64]", NULL);

    rewrite_llama(dir, NULL, (Edit){.drop = "model.layers.2.mlp.down_proj.weight"});
    expect_hf_fail(dir, "model.safetensors", "model.layers.2.mlp.down_proj.weight", "missing", NULL);

    rewrite_llama(dir, NULL, (Edit){.drop = "lm_head.weight"});
    expect_hf_fail(dir, "model.safetensors", "lm_head.weight", "tie_word_embeddings", NULL);

    rewrite_llama(dir, NULL, (Edit){.extra_name = "model.layers.3.input_layernorm.weight",
                                    .extra_src = "model.norm.weight"});
    expect_hf_fail(dir, "model.safetensors", "unexpected", "model.layers.3.input_layernorm.weight", NULL);

    rewrite_llama(dir, NULL, (Edit){.as_int = "model.norm.weight"});
    expect_hf_fail(dir, "model.safetensors", "model.norm.weight", "I32", NULL);

    // config.json and the weights disagree (vocab 1000 vs 512 rows).
    size_t len;
    char p[4200];
    snprintf(p, sizeof p, "%s/config.json", shared_path("models/tiny-llama-hf"));
    char *cfg = read_all(p, &len);
    char *v = strstr(cfg, "\"vocab_size\": 512");
    assert_non_null(v);
    memcpy(v, "\"vocab_size\": 999", 17);
    rewrite_llama(dir, cfg, (Edit){0});
    expect_hf_fail(dir, "model.safetensors", "model.embed_tokens.weight", "[999, 64]", NULL);
    free(cfg);
    test_rmtree(dir);
}

static void test_bad_configs(void **state) {
    (void)state;
    const char *dir = test_tmpdir("hfbad-cfg");
    char p[4200], cfgpath[600], err[FTK_ERR_LEN];
    snprintf(cfgpath, sizeof cfgpath, "%s/config.json", dir);
    snprintf(p, sizeof p, "%s/config.json", shared_path("models/tiny-llama-hf"));
    size_t len;
    char *orig = read_all(p, &len);
    const struct {
        const char *find, *replace;   // edit of tiny-llama-hf/config.json
        const char *what;
    } edits[] = {
        {"\"model_type\": \"llama\"", "\"model_type\": \"bert\"", "bert"},
        {"\"model_type\": \"llama\",", "", "model_type"},
        {"\"hidden_size\": 64,", "", "hidden_size"},
        {"\"num_hidden_layers\": 3,", "", "num_hidden_layers"},
        {"\"vocab_size\": 512", "\"vocab_size\": \"512\"", "vocab_size"},
        {"\"num_attention_heads\": 8,", "\"num_attention_heads\": 0,", "num_attention_heads"},
        {"\"num_key_value_heads\": 2,", "\"num_key_value_heads\": 3,", "num_key_value_heads"},
        {"\"hidden_size\": 64,", "\"hidden_size\": -64,", NULL},
        {"\"hidden_size\": 64,", "\"hidden_size\": 1e12,", "hidden_size"},
        {"\"rope_scaling\": null", "\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}", "rope_scaling"},
        {"\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\"", "hidden_act"},
        {"\"rms_norm_eps\": 1e-05", "\"rms_norm_eps\": 0", "epsilon"},
        {"\"tie_word_embeddings\": false", "\"tie_word_embeddings\": 0", "tie_word_embeddings"},
        {"{", "[", "JSON"},
    };
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        char *at = strstr(orig, edits[i].find);
        assert_non_null(at);
        size_t pre = (size_t)(at - orig), fl = strlen(edits[i].find), rl = strlen(edits[i].replace);
        char *text = malloc(len + rl + 1);
        memcpy(text, orig, pre);
        memcpy(text + pre, edits[i].replace, rl);
        memcpy(text + pre + rl, at + fl, len - pre - fl + 1);
        write_bytes(cfgpath, text, strlen(text));
        free(text);
        ModelConfig c;
        if (model_config_from_hf(&c, dir, err) == 0) fail_msg("edit %zu accepted", i);
        if (!strstr(err, "config.json")) fail_msg("edit %zu: error does not name config.json: %s", i, err);
        if (edits[i].what && !strstr(err, edits[i].what)) fail_msg("edit %zu: '%s' not in: %s", i, edits[i].what, err);
        expect_hf_fail(dir, "config.json", NULL);
    }
    free(orig);

    // gpt2: missing n_embd; missing positions.
    const char *g0 = "{\"model_type\": \"gpt2\", \"n_layer\": 2, \"n_head\": 4, \"vocab_size\": 10, \"n_positions\": 8}";
    write_bytes(cfgpath, g0, strlen(g0));
    assert_int_not_equal(model_config_from_hf(&(ModelConfig){0}, dir, err), 0);
    assert_non_null(strstr(err, "n_embd"));
    const char *g = "{\"model_type\": \"gpt2\", \"n_embd\": 8, \"n_layer\": 2, \"n_head\": 4, \"vocab_size\": 10}";
    write_bytes(cfgpath, g, strlen(g));
    assert_int_not_equal(model_config_from_hf(&(ModelConfig){0}, dir, err), 0);
    assert_non_null(strstr(err, "n_positions"));
    // Empty and missing config.
    write_bytes(cfgpath, "", 0);
    assert_int_not_equal(model_config_from_hf(&(ModelConfig){0}, dir, err), 0);
    assert_non_null(strstr(err, "config.json"));
    remove(cfgpath);
    assert_int_not_equal(model_config_from_hf(&(ModelConfig){0}, dir, err), 0);
    assert_non_null(strstr(err, "config.json"));
    test_rmtree(dir);
}

static void test_bad_shards(void **state) {
    (void)state;
    const char *src = shared_path("models/tiny-llama-hf-bf16-sharded");
    const char *dir = test_tmpdir("hfbad-shards");
    const char *files[] = {"config.json", "model.safetensors.index.json", "model-00001-of-00003.safetensors",
                           "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"};
    char p[4200], q[600], idx[600];
    for (int i = 0; i < 5; i++) {
        snprintf(p, sizeof p, "%s/%s", src, files[i]);
        snprintf(q, sizeof q, "%s/%s", dir, files[i]);
        copy_file(p, q);
    }
    char err[FTK_ERR_LEN];
    Model m = {0};
    if (hf_load_weights(&m, dir, err)) fail_msg("control: %s", err);
    model_free(&m);

    // A shard is missing.
    snprintf(q, sizeof q, "%s/model-00003-of-00003.safetensors", dir);
    remove(q);
    expect_hf_fail(dir, "model-00003-of-00003.safetensors", "missing", NULL);
    // A shard is truncated.
    snprintf(p, sizeof p, "%s/model-00003-of-00003.safetensors", src);
    size_t len;
    char *data = read_all(p, &len);
    write_bytes(q, data, len - 10);
    expect_hf_fail(dir, "model-00003-of-00003.safetensors", NULL);
    write_bytes(q, data, len);
    free(data);

    // The index maps a tensor to a shard that does not hold it; names a bad shard path; is not JSON.
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", src);
    snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", dir);
    char *index = read_all(p, &len);
    char *at = strstr(index, "\"model.norm.weight\": \"model-00003-of-00003.safetensors\"");
    assert_non_null(at);
    char *shard = strstr(at, "00003-of");
    memcpy(shard, "00001", 5);
    write_bytes(idx, index, len);
    expect_hf_fail(dir, "model.safetensors.index.json", "model.norm.weight", NULL);
    memcpy(shard, "../x1", 5);
    write_bytes(idx, index, len);
    expect_hf_fail(dir, "model.safetensors.index.json", NULL);
    memcpy(shard, "00003", 5);
    write_bytes(idx, index, len / 2);
    expect_hf_fail(dir, "model.safetensors.index.json", NULL);
    const char *no_map = "{\"metadata\": {}}";
    write_bytes(idx, no_map, strlen(no_map));
    expect_hf_fail(dir, "model.safetensors.index.json", "weight_map", NULL);
    free(index);

    // No weights at all.
    remove(idx);
    expect_hf_fail(dir, dir, "model.safetensors", NULL);
    test_rmtree(dir);
}

// GPT-2 checkpoints from older transformers carry attention-mask buffers; they are ignored,
// but anything else unknown is not.
static void test_gpt2_buffers(void **state) {
    (void)state;
    char err[FTK_ERR_LEN], p[4200], q[600];
    const char *src = shared_path("models/tiny-gpt2-hf");
    const char *dir = test_tmpdir("hfbad-gpt2");
    snprintf(p, sizeof p, "%s/config.json", src);
    snprintf(q, sizeof q, "%s/config.json", dir);
    copy_file(p, q);
    snprintf(p, sizeof p, "%s/model.safetensors", src);
    StFile f;
    assert_int_equal(st_open(&f, p, err), 0);
    for (int pass = 0; pass < 2; pass++) {
        StWriter *w;
        assert_int_equal(st_writer_create(&w, err), 0);
        for (int i = 0; i < f.n_tensors; i++) {
            const StTensor *t = &f.tensors[i];
            // Raw F32 bytes straight from the mapped file (names without the transformer. prefix).
            const char *name = strncmp(t->name, "transformer.", 12) == 0 ? t->name + 12 : t->name;
            assert_int_equal(st_writer_add_raw(w, name, t->dtype, t->ndim, t->shape, f.data + t->begin, err), 0);
        }
        static const float mask[16] = {1};
        const int64_t s4[4] = {1, 1, 4, 4}, s1[1] = {1};
        assert_int_equal(st_writer_add_f32(w, "h.0.attn.bias", 4, s4, mask, ST_F32, err), 0);
        assert_int_equal(st_writer_add_f32(w, "h.1.attn.masked_bias", 0, NULL, mask, ST_F32, err), 0);
        if (pass == 1) assert_int_equal(st_writer_add_f32(w, "h.1.attn.extra", 1, s1, mask, ST_F32, err), 0);
        snprintf(q, sizeof q, "%s/model.safetensors", dir);
        assert_int_equal(st_writer_write(w, q, err), 0);
        st_writer_free(w);
        if (pass == 0) {
            Model m = {0};
            if (hf_load_weights(&m, dir, err)) fail_msg("%s", err);
            assert_int_equal(m.cfg.arch, ARCH_GPT2);
            model_free(&m);
        } else {
            expect_hf_fail(dir, "model.safetensors", "h.1.attn.extra", NULL);
        }
    }
    st_close(&f);
    test_rmtree(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_crafted_headers),
        cmocka_unit_test(test_random_corruption),
        cmocka_unit_test(test_bad_tensors),
        cmocka_unit_test(test_bad_configs),
        cmocka_unit_test(test_bad_shards),
        cmocka_unit_test(test_gpt2_buffers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
