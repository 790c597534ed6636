// test_export.c — the model and adapter writers against the real formats:
//  - GGUF models: tiny-llama-hf, tiny-gpt2-hf and stories260K (llama2.c) written by ftk have every
//    tensor (name, ne, type, bytes) identical to the files llama.cpp's convert_hf_to_gguf.py made
//    (F32, and for stories260K also F16 and Q8_0), the same hyperparameter keys and vocabulary;
//    general.alignment is written and every tensor is aligned.
//  - Round trips HF -> GGUF -> HF and llama2.c -> GGUF -> HF keep every f32 weight bit-identical and
//    the same greedy text; an f32 HF export of an HF model reproduces the source tensors' bytes
//    (gpt2 Conv1D back in (in, out) layout).
//  - HF dirs checked by an independent safetensors parser: header padded to 8, {"format":"pt"},
//    packed with no holes and no trailing bytes; shards + model.safetensors.index.json consistent;
//    generated config.json complete; bf16 sources stay bf16.
//  - Tokenizer writers: tokenizer.model from llama2.c's tokenizer.bin equals tok512.model's pieces,
//    scores and types and encodes identically; vocab.json + merges.txt from a GGUF vocabulary too.
//  - GGUF LoRA adapters: the tiny-llama PEFT adapter exported by ftk equals llama.cpp's own
//    peft-lora/adapter.gguf (names, shapes, alpha, bytes) and, read back, gives the PEFT reference
//    logits; llama.cpp's file reads back to the PEFT values; q/k B rows, rsLoRA alpha, gpt2 q/v
//    blocks as a rank-2r attn_qkv round-trip.
#include "tests/testutil.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lora/adapter.h"
#include "lora/adapter_load.h"
#include "lora/export_gguf.h"
#include "lora/export_hf.h"
#include "lora/export_lora_gguf.h"
#include "lora/export_model.h"
#include "lora/peft.h"
#include "lora/tokenizer_write.h"
#include "model/common.h"
#include "model/generate.h"
#include "model/gguf.h"
#include "model/model.h"
#include "model/safetensors.h"
#include "model/synthetic.h"
#include "model/tokenizer.h"

static void load(Model *m, const char *path) {
    char err[FTK_ERR_LEN];
    int rc = model_load(m, path, NULL, err);
    if (rc) fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, 0);
}

static void write_model(const Model *m, const char *out, ExportFormat fmt, ExportDtype dt, size_t shard) {
    char err[FTK_ERR_LEN];
    ModelExport x = {0};
    x.format = fmt;
    x.dtype = dt;
    x.max_shard_bytes = shard;
    ExportResult res;
    int rc = export_model(m, out, &x, &res, err);
    if (rc) fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, 0);
}

static void join(char *buf, size_t n, const char *dir, const char *name) { snprintf(buf, n, "%s/%s", dir, name); }

// ---------------------------------------------------------------------------------------------
// GGUF models vs llama.cpp's converter

static void assert_tensors_identical(const char *ours, const char *theirs) {
    GgufFile a, b;
    char err[FTK_ERR_LEN];
    assert_int_equal(gguf_open(&a, ours, err), 0);
    assert_int_equal(gguf_open(&b, theirs, err), 0);
    assert_int_equal(a.n_tensors, b.n_tensors);
    for (size_t i = 0; i < b.n_tensors; i++) {
        const GgufTensor *tb = &b.tensors[i], *ta = gguf_find_tensor(&a, tb->name);
        if (!ta) fprintf(stderr, "missing %s\n", tb->name);
        assert_non_null(ta);
        assert_int_equal(ta->n_dims, tb->n_dims);
        assert_memory_equal(ta->ne, tb->ne, sizeof ta->ne);
        assert_int_equal(ta->type, tb->type);
        assert_int_equal(ta->n_bytes, tb->n_bytes);
        assert_memory_equal(ta->data, tb->data, ta->n_bytes);
        assert_int_equal(ta->offset % 32, 0);
    }
    // Alignment written and honoured.
    uint32_t al = 0;
    assert_int_equal(gguf_get_u32(&a, "general.alignment", &al, err), 0);
    assert_int_equal(al, 32);
    assert_int_equal(a.data_offset % 32, 0);
    gguf_close(&a);
    gguf_close(&b);
}

// Keys that must hold the same value in both files.
static void assert_same_u32(const GgufFile *a, const GgufFile *b, const char *key) {
    uint32_t x = 0, y = 1;
    char err[FTK_ERR_LEN];
    assert_int_equal(gguf_get_u32(a, key, &x, err), 0);
    assert_int_equal(gguf_get_u32(b, key, &y, err), 0);
    assert_int_equal(x, y);
}

static void assert_same_f32(const GgufFile *a, const GgufFile *b, const char *key) {
    float x = 0, y = 1;
    char err[FTK_ERR_LEN];
    assert_int_equal(gguf_get_f32(a, key, &x, err), 0);
    assert_int_equal(gguf_get_f32(b, key, &y, err), 0);
    assert_true(x == y);
}

static void assert_same_str(const GgufFile *a, const GgufFile *b, const char *key) {
    char *x = NULL, *y = NULL, err[FTK_ERR_LEN];
    assert_int_equal(gguf_get_str(a, key, &x, err), 0);
    assert_int_equal(gguf_get_str(b, key, &y, err), 0);
    assert_string_equal(x, y);
    free(x);
    free(y);
}

static void assert_same_str_array(const GgufFile *a, const GgufFile *b, const char *key) {
    char **x, **y, err[FTK_ERR_LEN];
    size_t nx, ny;
    assert_int_equal(gguf_get_str_array(a, key, &x, &nx, err), 0);
    assert_int_equal(gguf_get_str_array(b, key, &y, &ny, err), 0);
    assert_int_equal(nx, ny);
    for (size_t i = 0; i < nx; i++) assert_string_equal(x[i], y[i]);
    gguf_free_str_array(x, nx);
    gguf_free_str_array(y, ny);
}

// token types / scores equal from id `from` on (HF's converter marks <unk>,<s>,</s> as control tokens
// with score -1000 from tokenizer_config.json's added_tokens; the vocab files say UNKNOWN/CONTROL, 0).
static void assert_same_vocab_meta(const GgufFile *a, const GgufFile *b, int from, int with_scores) {
    char err[FTK_ERR_LEN];
    int32_t *ta, *tb;
    size_t na, nb;
    assert_int_equal(gguf_get_i32_array(a, "tokenizer.ggml.token_type", &ta, &na, err), 0);
    assert_int_equal(gguf_get_i32_array(b, "tokenizer.ggml.token_type", &tb, &nb, err), 0);
    assert_int_equal(na, nb);
    for (size_t i = (size_t)from; i < na; i++) assert_int_equal(ta[i], tb[i]);
    free(ta);
    free(tb);
    if (!with_scores) return;
    float *sa, *sb;
    assert_int_equal(gguf_get_f32_array(a, "tokenizer.ggml.scores", &sa, &na, err), 0);
    assert_int_equal(gguf_get_f32_array(b, "tokenizer.ggml.scores", &sb, &nb, err), 0);
    assert_int_equal(na, nb);
    for (size_t i = (size_t)from; i < na; i++) assert_true(sa[i] == sb[i]);
    free(sa);
    free(sb);
}

static void assert_same_llama_keys(const char *ours, const char *theirs, int vocab_from) {
    GgufFile a, b;
    char err[FTK_ERR_LEN];
    assert_int_equal(gguf_open(&a, ours, err), 0);
    assert_int_equal(gguf_open(&b, theirs, err), 0);
    const char *u32s[] = {"llama.context_length", "llama.embedding_length", "llama.block_count",
                          "llama.feed_forward_length", "llama.attention.head_count", "llama.attention.head_count_kv",
                          "llama.vocab_size", "llama.rope.dimension_count", "general.file_type",
                          "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "general.quantization_version"};
    for (size_t i = 0; i < sizeof u32s / sizeof *u32s; i++) assert_same_u32(&a, &b, u32s[i]);
    assert_same_f32(&a, &b, "llama.rope.freq_base");
    assert_same_f32(&a, &b, "llama.attention.layer_norm_rms_epsilon");
    assert_same_str(&a, &b, "general.architecture");
    assert_same_str(&a, &b, "general.type");
    assert_same_str(&a, &b, "tokenizer.ggml.model");
    assert_same_str(&a, &b, "tokenizer.ggml.pre");
    assert_same_str_array(&a, &b, "tokenizer.ggml.tokens");
    assert_same_vocab_meta(&a, &b, vocab_from, 1);
    int x = 0, y = 1;
    assert_int_equal(gguf_get_bool(&a, "tokenizer.ggml.add_bos_token", &x, err), 0);
    assert_int_equal(gguf_get_bool(&b, "tokenizer.ggml.add_bos_token", &y, err), 0);
    assert_int_equal(x, y);
    gguf_close(&a);
    gguf_close(&b);
}

static void test_gguf_llama_matches_converter(void **state) {
    (void)state;
    char d[512], out[1024];
    snprintf(d, sizeof d, "%s", test_tmpdir("gguf-llama"));
    Model m;
    load(&m, shared_path("models/tiny-llama-hf"));
    join(out, sizeof out, d, "tl.gguf");
    write_model(&m, out, EXPORT_FORMAT_GGUF, EXPORT_F32, 0);
    const char *ref = shared_path("models/tiny-llama-hf/tiny-llama.gguf");
    assert_tensors_identical(out, ref);   // q/k rows back in Meta order, ne order, untied output
    assert_same_llama_keys(out, ref, 3);
    model_free(&m);

    // stories260K from llama2.c's .bin: F32, F16 and Q8_0 files byte-for-byte like llama.cpp's.
    load(&m, shared_path("models/stories260K/stories260K.bin"));
    const char *dt_names[3] = {"f32", "f16", "q8_0"};
    const ExportDtype dts[3] = {EXPORT_F32, EXPORT_F16, EXPORT_Q8_0};
    for (int i = 0; i < 3; i++) {
        char name[64], rel[128];
        snprintf(name, sizeof name, "st-%s.gguf", dt_names[i]);
        snprintf(rel, sizeof rel, "models/stories260K-gguf/stories260K-%s.gguf", dt_names[i]);
        join(out, sizeof out, d, name);
        write_model(&m, out, EXPORT_FORMAT_GGUF, dts[i], 0);
        assert_tensors_identical(out, shared_path(rel));
        assert_same_llama_keys(out, shared_path(rel), 0);   // tok512: identical vocabulary metadata
    }
    model_free(&m);
    test_rmtree(d);
}

static void test_gguf_gpt2_matches_converter(void **state) {
    (void)state;
    char d[512], out[1024], err[FTK_ERR_LEN];
    snprintf(d, sizeof d, "%s", test_tmpdir("gguf-gpt2"));
    Model m;
    load(&m, shared_path("models/tiny-gpt2-hf"));
    join(out, sizeof out, d, "g.gguf");
    write_model(&m, out, EXPORT_FORMAT_GGUF, EXPORT_F32, 0);
    const char *ref = shared_path("models/tiny-gpt2-hf/tiny-gpt2.gguf");
    assert_tensors_identical(out, ref);   // Conv1D transposed, output = copy of token_embd
    GgufFile a, b;
    assert_int_equal(gguf_open(&a, out, err), 0);
    assert_int_equal(gguf_open(&b, ref, err), 0);
    const char *u32s[] = {"gpt2.context_length", "gpt2.embedding_length", "gpt2.block_count",
                          "gpt2.feed_forward_length", "gpt2.attention.head_count", "tokenizer.ggml.bos_token_id",
                          "tokenizer.ggml.eos_token_id", "general.file_type"};
    for (size_t i = 0; i < sizeof u32s / sizeof *u32s; i++) assert_same_u32(&a, &b, u32s[i]);
    assert_same_f32(&a, &b, "gpt2.attention.layer_norm_epsilon");
    assert_same_str(&a, &b, "tokenizer.ggml.model");
    assert_same_str(&a, &b, "tokenizer.ggml.pre");
    assert_same_str_array(&a, &b, "tokenizer.ggml.tokens");
    assert_same_str_array(&a, &b, "tokenizer.ggml.merges");
    assert_same_vocab_meta(&a, &b, 0, 0);
    gguf_close(&a);
    gguf_close(&b);
    model_free(&m);
    test_rmtree(d);
}

// ---------------------------------------------------------------------------------------------
// Round trips

static void assert_same_weights(const Model *a, const Model *b) {
    ModelConfig ca = a->cfg, cb = b->cfg;
    if (ca.arch == ARCH_GPT2) ca.rope_theta = cb.rope_theta = 0.0f;   // unused by gpt2 (GGUF loader default)
    assert_memory_equal(&ca, &cb, sizeof ca);
    assert_int_equal(a->n_weight_floats, b->n_weight_floats);
    assert_memory_equal(a->weight_mem, b->weight_mem, a->n_weight_floats * sizeof(float));
}

static char *greedy_text(const Model *m, const char *prompt, int n_new) {
    char err[FTK_ERR_LEN];
    int *ids, n;
    assert_int_equal(tokenizer_encode(m->tok, prompt, -1, -1, &ids, &n, err), 0);
    GenParams p = gen_params_default();
    p.max_new_tokens = n_new;
    p.temperature = 0.0f;
    uint64_t rng = 1;
    int *out = NULL, out_len = 0;
    const int *prompts[1] = {ids};
    assert_int_equal(generate(m, NULL, prompts, &n, 1, &p, &rng, &out, &out_len, NULL, err), 0);
    assert_true(out_len > 0);
    char *text = tokenizer_decode(m->tok, out, out_len);
    free(out);
    free(ids);
    return text;
}

static void round_trip(const char *src, const char *tag, int n_new) {
    char d[512], g[1024], h[1024];
    snprintf(d, sizeof d, "%s", test_tmpdir(tag));
    Model m0, m1, m2;
    load(&m0, src);
    join(g, sizeof g, d, "a.gguf");
    join(h, sizeof h, d, "hf");
    write_model(&m0, g, EXPORT_FORMAT_GGUF, EXPORT_F32, 0);
    load(&m1, g);
    write_model(&m1, h, EXPORT_FORMAT_HF, EXPORT_F32, 0);
    load(&m2, h);
    assert_same_weights(&m0, &m1);
    assert_same_weights(&m0, &m2);
    char *t0 = greedy_text(&m0, "Once upon a time", n_new);
    char *t1 = greedy_text(&m1, "Once upon a time", n_new);
    char *t2 = greedy_text(&m2, "Once upon a time", n_new);
    assert_string_equal(t0, t1);
    assert_string_equal(t0, t2);
    printf("  %s greedy: \"%.60s...\"\n", tag, t0);
    free(t0);
    free(t1);
    free(t2);
    model_free(&m0);
    model_free(&m1);
    model_free(&m2);
    test_rmtree(d);
}

static void test_round_trip_llama2c_gguf_hf(void **state) {
    (void)state;
    round_trip(shared_path("models/stories260K/stories260K.bin"), "rt-stories", 64);
}

static void test_round_trip_hf_gguf_hf(void **state) {
    (void)state;
    round_trip(shared_path("models/tiny-llama-hf"), "rt-llama", 20);
    round_trip(shared_path("models/tiny-gpt2-hf"), "rt-gpt2", 20);
}

// ---------------------------------------------------------------------------------------------
// HF dirs checked by an independent safetensors reader

typedef struct {
    char name[160];
    char dtype[8];
    int64_t shape[4];
    int ndim;
    size_t begin, end;
} RawTensor;

static size_t dtype_bytes(const char *d) {
    return !strcmp(d, "F32") ? 4 : (!strcmp(d, "F16") || !strcmp(d, "BF16")) ? 2 : 0;
}

// Parses a safetensors file by the format rules (FORMATS §2b) and asserts them. Returns the tensors
// (malloc'ed) sorted by begin offset; *data points into *file (malloc'ed).
static RawTensor *raw_parse(const char *path, int *n_out, char **file, const unsigned char **data) {
    char err[FTK_ERR_LEN];
    size_t len;
    assert_int_equal(ftk_read_file(path, file, &len, err), 0);
    assert_true(len >= 8);
    uint64_t hn = 0;
    memcpy(&hn, *file, 8);
    assert_true(hn <= len - 8);
    assert_int_equal((8 + hn) % 8, 0);              // header padded to a multiple of 8
    assert_int_equal((*file)[8], '{');
    char *hdr = calloc(1, hn + 1);
    memcpy(hdr, *file + 8, hn);
    for (size_t k = hn; k > 0 && hdr[k - 1] == ' ';) hdr[--k] = 0;   // padding is spaces
    cJSON *root = cJSON_Parse(hdr);
    assert_non_null(root);
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(root, "__metadata__");
    assert_non_null(meta);
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(meta, "format");
    assert_true(cJSON_IsString(fmt) && !strcmp(fmt->valuestring, "pt"));
    int n = cJSON_GetArraySize(root) - 1;
    RawTensor *t = calloc((size_t)n, sizeof *t);
    int k = 0;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (!strcmp(e->string, "__metadata__")) continue;
        RawTensor *r = &t[k++];
        snprintf(r->name, sizeof r->name, "%s", e->string);
        snprintf(r->dtype, sizeof r->dtype, "%s", cJSON_GetObjectItemCaseSensitive(e, "dtype")->valuestring);
        const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
        r->ndim = cJSON_GetArraySize(sh);
        size_t numel = 1;
        for (int i = 0; i < r->ndim; i++) {
            r->shape[i] = (int64_t)cJSON_GetArrayItem(sh, i)->valuedouble;
            numel *= (size_t)r->shape[i];
        }
        const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
        r->begin = (size_t)cJSON_GetArrayItem(off, 0)->valuedouble;
        r->end = (size_t)cJSON_GetArrayItem(off, 1)->valuedouble;
        assert_int_equal(r->end - r->begin, numel * dtype_bytes(r->dtype));
    }
    // Packed: sorted by offset, each tensor starts where the previous ended, the last ends the file.
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && t[j - 1].begin > t[j].begin; j--) {
            RawTensor tmp = t[j];
            t[j] = t[j - 1];
            t[j - 1] = tmp;
        }
    size_t pos = 0;
    for (int i = 0; i < n; i++) {
        assert_int_equal(t[i].begin, pos);
        pos = t[i].end;
    }
    assert_int_equal(8 + hn + pos, len);
    cJSON_Delete(root);
    free(hdr);
    *data = (const unsigned char *)*file + 8 + hn;
    *n_out = n;
    return t;
}

static const RawTensor *raw_find(const RawTensor *t, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(t[i].name, name)) return &t[i];
    return NULL;
}

// Every tensor of src (an HF file) is in out with the same dtype, shape and bytes.
static void assert_safetensors_equal(const char *out, const char *src) {
    int na, nb;
    char *fa, *fb;
    const unsigned char *da, *db;
    RawTensor *a = raw_parse(out, &na, &fa, &da), *b = raw_parse(src, &nb, &fb, &db);
    assert_int_equal(na, nb);
    for (int i = 0; i < nb; i++) {
        const RawTensor *x = raw_find(a, na, b[i].name);
        if (!x) fprintf(stderr, "missing %s\n", b[i].name);
        assert_non_null(x);
        assert_string_equal(x->dtype, b[i].dtype);
        assert_int_equal(x->ndim, b[i].ndim);
        assert_memory_equal(x->shape, b[i].shape, sizeof x->shape);
        assert_memory_equal(da + x->begin, db + b[i].begin, x->end - x->begin);
    }
    free(a);
    free(b);
    free(fa);
    free(fb);
}

static void test_hf_export_reproduces_source(void **state) {
    (void)state;
    char d[512], out[1024], st[1100];
    snprintf(d, sizeof d, "%s", test_tmpdir("hf-src"));
    const char *models[2] = {"models/tiny-llama-hf", "models/tiny-gpt2-hf"};
    for (int i = 0; i < 2; i++) {
        Model m;
        load(&m, shared_path(models[i]));
        snprintf(out, sizeof out, "%s/m%d", d, i);
        write_model(&m, out, EXPORT_FORMAT_HF, EXPORT_F32, 0);
        snprintf(st, sizeof st, "%s/model.safetensors", out);
        char src[1200];
        snprintf(src, sizeof src, "%s/model.safetensors", shared_path(models[i]));
        assert_safetensors_equal(st, src);   // gpt2: c_attn/c_proj/c_fc back in Conv1D (in, out)
        // Tokenizer files copied from the source dir.
        const char *files[2][2] = {{"tokenizer.model", "tokenizer_config.json"}, {"vocab.json", "merges.txt"}};
        for (int k = 0; k < 2; k++) {
            char a[1200], b[1200], *x, *y, err[FTK_ERR_LEN];
            size_t lx, ly;
            snprintf(a, sizeof a, "%s/%s", out, files[i][k]);
            snprintf(b, sizeof b, "%s/%s", shared_path(models[i]), files[i][k]);
            assert_int_equal(ftk_read_file(a, &x, &lx, err), 0);
            assert_int_equal(ftk_read_file(b, &y, &ly, err), 0);
            assert_int_equal(lx, ly);
            assert_memory_equal(x, y, lx);
            free(x);
            free(y);
        }
        model_free(&m);
    }
    // A bf16 sharded source stays bf16 by default, and its bytes survive.
    Model m;
    load(&m, shared_path("models/tiny-llama-hf-bf16-sharded"));
    assert_int_equal(export_dtype_default(&m, 0), EXPORT_BF16);
    snprintf(out, sizeof out, "%s/bf16", d);
    write_model(&m, out, EXPORT_FORMAT_HF, export_dtype_default(&m, 0), 0);
    snprintf(st, sizeof st, "%s/model.safetensors", out);
    int n;
    char *f;
    const unsigned char *data;
    RawTensor *t = raw_parse(st, &n, &f, &data);
    for (int i = 0; i < n; i++) assert_string_equal(t[i].dtype, "BF16");
    free(t);
    free(f);
    char cfgp[1200], *txt, err[FTK_ERR_LEN];
    size_t len;
    snprintf(cfgp, sizeof cfgp, "%s/config.json", out);
    assert_int_equal(ftk_read_file(cfgp, &txt, &len, err), 0);
    cJSON *cfg = cJSON_Parse(txt);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(cfg, "torch_dtype")->valuestring, "bfloat16");
    cJSON_Delete(cfg);
    free(txt);
    Model back;
    load(&back, out);
    assert_same_weights(&m, &back);
    model_free(&back);
    model_free(&m);
    test_rmtree(d);
}

static void test_hf_sharded_and_generated_config(void **state) {
    (void)state;
    char d[512], out[1024], p[1200], err[FTK_ERR_LEN];
    snprintf(d, sizeof d, "%s", test_tmpdir("hf-shard"));
    Model m;
    load(&m, shared_path("models/stories260K/stories260K.bin"));
    snprintf(out, sizeof out, "%s/sh", d);
    write_model(&m, out, EXPORT_FORMAT_HF, EXPORT_F32, 300000);   // ~1 MB of tensors -> 4 shards
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", out);
    char *txt;
    size_t len;
    assert_int_equal(ftk_read_file(p, &txt, &len, err), 0);
    cJSON *idx = cJSON_Parse(txt);
    free(txt);
    assert_non_null(idx);
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(idx, "weight_map");
    const double total = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(idx, "metadata"),
                                                          "total_size")->valuedouble;
    // Every shard named in the index exists, holds exactly the tensors mapped to it, and is valid.
    int n_shards = 0, n_mapped = cJSON_GetArraySize(map);
    size_t bytes = 0;
    for (int s = 1; s <= 8; s++) {
        char name[64];
        snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", s, 4);
        snprintf(p, sizeof p, "%s/%s", out, name);
        if (!ftk_file_exists(p)) break;
        n_shards++;
        int n;
        char *f;
        const unsigned char *data;
        RawTensor *t = raw_parse(p, &n, &f, &data);
        for (int i = 0; i < n; i++) {
            const cJSON *e = cJSON_GetObjectItemCaseSensitive(map, t[i].name);
            assert_true(cJSON_IsString(e) && !strcmp(e->valuestring, name));
            bytes += t[i].end - t[i].begin;
            // each shard within the limit unless it holds a single larger tensor
            assert_true(n == 1 || t[n - 1].end <= 300000);
        }
        n_mapped -= n;
        free(t);
        free(f);
    }
    assert_int_equal(n_shards, 4);
    assert_int_equal(n_mapped, 0);
    assert_true((double)bytes == total);
    assert_true(cJSON_GetObjectItemCaseSensitive(map, "model.embed_tokens.weight") != NULL);
    assert_null(cJSON_GetObjectItemCaseSensitive(map, "lm_head.weight"));   // tied
    cJSON_Delete(idx);
    // Generated config.json: what transformers' LlamaConfig needs.
    snprintf(p, sizeof p, "%s/config.json", out);
    assert_int_equal(ftk_read_file(p, &txt, &len, err), 0);
    cJSON *cfg = cJSON_Parse(txt);
    free(txt);
    const char *keys[] = {"architectures", "model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
                          "num_attention_heads", "num_key_value_heads", "vocab_size", "max_position_embeddings",
                          "rms_norm_eps", "rope_theta", "hidden_act", "tie_word_embeddings", "bos_token_id",
                          "eos_token_id", "torch_dtype"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) assert_non_null(cJSON_GetObjectItemCaseSensitive(cfg, keys[i]));
    assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(cfg, "architectures"), 0)->valuestring,
                        "LlamaForCausalLM");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cfg, "tie_word_embeddings")));
    assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(cfg, "num_key_value_heads")->valuedouble, 4);
    cJSON_Delete(cfg);
    // The tokenizer was written (llama2.c has none in HF form) and the dir loads back identically.
    snprintf(p, sizeof p, "%s/tokenizer.model", out);
    assert_true(ftk_file_exists(p));
    snprintf(p, sizeof p, "%s/.ftk-partial", out);
    assert_false(ftk_file_exists(p));
    Model back;
    load(&back, out);
    assert_same_weights(&m, &back);
    assert_int_equal(back.tok->n_vocab, m.tok->n_vocab);
    model_free(&back);
    model_free(&m);
    test_rmtree(d);
}

// ---------------------------------------------------------------------------------------------
// Tokenizer writers

static void assert_same_encodings(const Tokenizer *a, const Tokenizer *b) {
    const char *texts[] = {"Once upon a time, there was a little girl named Lily.", "  two  spaces\tand a tab\n",
                           "caf\xC3\xA9 \xE2\x82\xAC 123 <s> ok", "Hello world! It's 2024."};
    char err[FTK_ERR_LEN];
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
        int *x, *y, nx, ny;
        assert_int_equal(tokenizer_encode(a, texts[i], -1, -1, &x, &nx, err), 0);
        assert_int_equal(tokenizer_encode(b, texts[i], -1, -1, &y, &ny, err), 0);
        assert_int_equal(nx, ny);
        assert_memory_equal(x, y, (size_t)nx * sizeof(int));
        free(x);
        free(y);
    }
}

static void test_tokenizer_writers(void **state) {
    (void)state;
    char d[512], p[1024], err[FTK_ERR_LEN];
    snprintf(d, sizeof d, "%s", test_tmpdir("tokw"));
    // llama2.c tokenizer.bin (spaces, "\n<s>\n") -> tokenizer.model == tok512.model's content.
    Tokenizer *bin, *spm, *ours;
    assert_int_equal(tokenizer_load_llama2c(&bin, shared_path("models/stories260K/tok512.bin"), 512, err), 0);
    assert_int_equal(tokenizer_load_spm_model(&spm, shared_path("models/stories260K/tok512.model"), err), 0);
    join(p, sizeof p, d, "tokenizer.model");
    assert_int_equal(tokenizer_write_spm_model(bin, p, err), 0);
    assert_int_equal(tokenizer_load_spm_model(&ours, p, err), 0);
    assert_int_equal(ours->n_vocab, spm->n_vocab);
    for (int i = 0; i < spm->n_vocab; i++) {
        assert_string_equal(ours->pieces[i], spm->pieces[i]);
        assert_true(ours->scores[i] == spm->scores[i]);
        assert_int_equal(ours->types[i], spm->types[i]);
    }
    assert_int_equal(ours->bos_id, 1);
    assert_int_equal(ours->eos_id, 2);
    assert_int_equal(ours->unk_id, 0);
    assert_int_equal(ours->add_space_prefix, 1);
    assert_same_encodings(ours, spm);
    assert_same_encodings(ours, bin);
    tokenizer_free(bin);
    tokenizer_free(spm);
    tokenizer_free(ours);

    // GGUF byte-level BPE vocabulary -> vocab.json + merges.txt + configs -> the same tokenizer.
    Tokenizer *g, *back;
    assert_int_equal(tokenizer_load_gguf(&g, shared_path("models/tiny-gpt2-hf/tiny-gpt2.gguf"), err), 0);
    char bd[600];
    join(bd, sizeof bd, d, "bpe");
    assert_int_equal(ftk_mkdirs(bd, err), 0);
    assert_int_equal(tokenizer_write_hf_dir(g, bd, 256, err), 0);
    assert_int_equal(tokenizer_load_hf_dir(&back, bd, err), 0);
    assert_int_equal(back->n_vocab, g->n_vocab);
    assert_int_equal(back->n_merges, g->n_merges);
    for (int i = 0; i < g->n_vocab; i++) assert_string_equal(back->pieces[i], g->pieces[i]);
    for (int i = 0; i < g->n_merges; i++) assert_string_equal(back->merges[i], g->merges[i]);
    assert_int_equal(back->bos_id, 50256);
    assert_int_equal(back->eos_id, 50256);
    assert_int_equal(back->add_bos, 0);
    assert_same_encodings(back, g);
    // merges.txt is byte-identical to OpenAI's vocab.bpe (same header, same order).
    char *x, *y;
    size_t lx, ly;
    join(p, sizeof p, bd, "merges.txt");
    assert_int_equal(ftk_read_file(p, &x, &lx, err), 0);
    assert_int_equal(ftk_read_file(shared_path("models/tiny-gpt2-hf/merges.txt"), &y, &ly, err), 0);
    assert_int_equal(lx, ly);
    assert_memory_equal(x, y, lx);
    free(x);
    free(y);
    tokenizer_free(g);
    tokenizer_free(back);
    test_rmtree(d);
}

// A GGUF SentencePiece vocabulary (HF converter's: <unk> marked CONTROL) -> HF dir -> tokenizer.model
// that loads back with the same pieces and encodings; a model whose embedding has more rows than its
// tokenizer gets "[PAD<id>]" pieces of type UNUSED in GGUF, as convert_hf_to_gguf.py writes them.
static void test_gguf_vocab_to_hf_and_padding(void **state) {
    (void)state;
    char d[512], out[1024], err[FTK_ERR_LEN];
    snprintf(d, sizeof d, "%s", test_tmpdir("vocab"));
    Model g, h;
    load(&g, shared_path("models/tiny-llama-hf/tiny-llama.gguf"));
    join(out, sizeof out, d, "hf");
    write_model(&g, out, EXPORT_FORMAT_HF, EXPORT_F32, 0);
    load(&h, out);
    assert_same_weights(&g, &h);
    assert_int_equal(h.tok->n_vocab, g.tok->n_vocab);
    for (int i = 0; i < g.tok->n_vocab; i++) assert_string_equal(h.tok->pieces[i], g.tok->pieces[i]);
    assert_int_equal(h.tok->types[0], TOKT_UNKNOWN);   // sentencepiece needs its one UNKNOWN piece
    assert_same_encodings(h.tok, g.tok);
    model_free(&h);
    model_free(&g);

    Model m;
    memset(&m, 0, sizeof m);
    ModelConfig c = {0};
    c.arch = ARCH_LLAMA;
    c.dim = 32;
    c.n_layers = 1;
    c.n_heads = c.n_kv_heads = 4;
    c.head_dim = 8;
    c.ffn_dim = 64;
    c.vocab_size = 520;
    c.max_seq_len = 64;
    c.norm_eps = 1e-5f;
    c.rope_theta = 10000.0f;
    c.bos_id = 1;
    c.eos_id = 2;
    assert_int_equal(model_init_synthetic(&m, &c, 3, err), 0);
    assert_int_equal(tokenizer_load_llama2c(&m.tok, shared_path("models/stories260K/tok512.bin"), 512, err), 0);
    join(out, sizeof out, d, "pad.gguf");
    write_model(&m, out, EXPORT_FORMAT_GGUF, EXPORT_F32, 0);
    GgufFile f;
    assert_int_equal(gguf_open(&f, out, err), 0);
    char **tokens;
    size_t n;
    int32_t *types;
    assert_int_equal(gguf_get_str_array(&f, "tokenizer.ggml.tokens", &tokens, &n, err), 0);
    assert_int_equal(n, 520);
    assert_string_equal(tokens[511], m.tok->pieces[511]);
    assert_string_equal(tokens[519], "[PAD519]");
    gguf_free_str_array(tokens, n);
    assert_int_equal(gguf_get_i32_array(&f, "tokenizer.ggml.token_type", &types, &n, err), 0);
    assert_int_equal(types[512], TOKT_UNUSED);
    free(types);
    gguf_close(&f);
    Model back;
    load(&back, out);
    assert_same_weights(&m, &back);
    model_free(&back);
    model_free(&m);
    test_rmtree(d);
}

// ---------------------------------------------------------------------------------------------
// GGUF LoRA adapters

static void test_lora_gguf_matches_llamacpp(void **state) {
    (void)state;
    char d[512], out[1024], err[FTK_ERR_LEN];
    snprintf(d, sizeof d, "%s", test_tmpdir("lora-gguf"));
    Model m;
    load(&m, shared_path("models/tiny-llama-hf"));
    Adapters peft, mine, theirs;
    assert_int_equal(adapter_load_any(&peft, &m, shared_path("models/tiny-llama-hf/peft-lora"), err), 0);
    join(out, sizeof out, d, "ad.gguf");
    assert_int_equal(lora_gguf_save(&peft, out, EXPORT_F32, "peft-lora", "tiny-llama-hf", err), 0);
    const char *ref = shared_path("models/tiny-llama-hf/peft-lora/adapter.gguf");
    assert_tensors_identical(out, ref);   // names, ne, F32 bytes (q's B rows in Meta order)
    GgufFile a, b;
    assert_int_equal(gguf_open(&a, out, err), 0);
    assert_int_equal(gguf_open(&b, ref, err), 0);
    assert_same_f32(&a, &b, "adapter.lora.alpha");
    assert_same_str(&a, &b, "general.type");
    assert_same_str(&a, &b, "adapter.type");
    assert_same_str(&a, &b, "general.architecture");
    gguf_close(&a);
    gguf_close(&b);
    // Both files read back to exactly the PEFT values, and give PEFT's reference logits.
    assert_int_equal(adapter_load_any(&mine, &m, out, err), 0);
    assert_int_equal(adapter_load_any(&theirs, &m, ref, err), 0);
    assert_int_equal(mine.n_params, peft.n_params);
    assert_memory_equal(mine.params, peft.params, peft.n_params * sizeof(float));
    assert_memory_equal(theirs.params, peft.params, peft.n_params * sizeof(float));
    assert_true(mine.scale == peft.scale && theirs.scale == peft.scale);
    int nd, shape[4];
    float *want = npy_read_f32(shared_path("models/tiny-llama-hf/peft-lora/ref/logits.npy"), &nd, shape);
    assert_non_null(want);
    int ids[40] = {1,   403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395,
                   317, 426, 338, 401, 396, 267, 337, 410, 408, 419, 292, 411, 322, 265,
                   282, 295, 433, 335, 311, 370, 352, 266, 268, 388, 269, 311};
    ModelAdapters hooks;
    adapters_hooks(&mine, 0, &hooks);
    float *lg = NULL;
    assert_int_equal(model_logits_all(&m, &hooks, ids, 40, &lg, err), 0);
    double dmax = max_abs_diff(lg, want, 40 * 512);
    printf("  GGUF adapter read back: max |logit - PEFT reference| = %.3g\n", dmax);
    assert_true(dmax <= 1e-5);
    free(lg);
    free(want);
    adapters_free(&mine);
    adapters_free(&theirs);
    adapters_free(&peft);
    model_free(&m);
    test_rmtree(d);
}

static void random_params(Adapters *a, uint64_t seed) {
    for (size_t i = 0; i < a->n_params; i++) a->params[i] = 0.05f * ftk_rand_normal(&seed);
}

static void test_lora_gguf_round_trips(void **state) {
    (void)state;
    char d[512], out[1024], err[FTK_ERR_LEN];
    snprintf(d, sizeof d, "%s", test_tmpdir("lora-rt"));
    // llama, every linear, rsLoRA: k's B permuted with the kv head count; alpha_gguf = alpha sqrt(r).
    Model m;
    load(&m, shared_path("models/tiny-llama-hf"));
    AdapterConfig c;
    adapter_config_default(&c);
    c.r = 4;
    c.alpha = 8.0f;
    c.use_rslora = 1;
    snprintf(c.target_modules, sizeof c.target_modules, "all-linear");
    snprintf(c.layers_to_transform, sizeof c.layers_to_transform, "0,2");
    Adapters a, back;
    assert_int_equal(adapters_alloc(&a, &c, &m.cfg, err), 0);
    random_params(&a, 5);
    join(out, sizeof out, d, "rs.gguf");
    assert_int_equal(lora_gguf_save(&a, out, EXPORT_F32, NULL, NULL, err), 0);
    GgufFile f;
    assert_int_equal(gguf_open(&f, out, err), 0);
    float alpha = 0;
    assert_int_equal(gguf_get_f32(&f, "adapter.lora.alpha", &alpha, err), 0);
    assert_true(fabsf(alpha - 16.0f) < 1e-6f);   // 8 * sqrt(4)
    assert_int_equal(f.n_tensors, 2 * 7 * 2);    // 7 modules in layers 0 and 2
    const GgufTensor *kb = gguf_find_tensor(&f, "blk.2.attn_k.weight.lora_b");
    assert_non_null(kb);
    assert_int_equal(kb->ne[0], 4);
    assert_int_equal(kb->ne[1], 16);
    // Row 1 of the Meta-ordered k B is HF row hd/2 = 4 of head 0.
    const LoraHook *hk = &a.hooks[2 * LSLOT_COUNT + LSLOT_K];
    assert_memory_equal((const float *)kb->data + 1 * 4, hk->B + 4 * 4, 4 * sizeof(float));
    gguf_close(&f);
    assert_int_equal(lora_gguf_load(&back, &m, out, err), 0);
    assert_true(fabsf(back.scale - a.scale) <= 1e-7f * a.scale);
    assert_string_equal(back.cfg.layers_to_transform, "0,2");
    assert_int_equal(back.n_params, a.n_params);
    assert_memory_equal(back.params, a.params, a.n_params * sizeof(float));
    adapters_free(&back);
    // f16 tensors: values within f16 rounding.
    join(out, sizeof out, d, "rs16.gguf");
    assert_int_equal(lora_gguf_save(&a, out, EXPORT_F16, NULL, NULL, err), 0);
    assert_int_equal(lora_gguf_load(&back, &m, out, err), 0);
    for (size_t i = 0; i < a.n_params; i++) assert_true(fabsf(back.params[i] - a.params[i]) <= 1e-3f * fabsf(a.params[i]) + 1e-7f);
    adapters_free(&back);
    adapters_free(&a);
    model_free(&m);

    // gpt2 q/v blocks -> one attn_qkv pair of rank 2r with a zero k block; same logits read back.
    load(&m, shared_path("models/tiny-gpt2-hf"));
    adapter_config_default(&c);
    c.r = 2;
    c.alpha = 4.0f;
    snprintf(c.target_modules, sizeof c.target_modules, "q_proj,v_proj");
    assert_int_equal(adapters_alloc(&a, &c, &m.cfg, err), 0);
    random_params(&a, 6);
    join(out, sizeof out, d, "g.gguf");
    assert_int_equal(lora_gguf_save(&a, out, EXPORT_F32, NULL, NULL, err), 0);
    assert_int_equal(gguf_open(&f, out, err), 0);
    const GgufTensor *qa = gguf_find_tensor(&f, "blk.1.attn_qkv.weight.lora_a");
    const GgufTensor *qb = gguf_find_tensor(&f, "blk.1.attn_qkv.weight.lora_b");
    assert_non_null(qa);
    assert_non_null(qb);
    assert_int_equal(qa->ne[0], 64);
    assert_int_equal(qa->ne[1], 4);
    assert_int_equal(qb->ne[0], 4);
    assert_int_equal(qb->ne[1], 192);
    assert_int_equal(f.n_tensors, 4);
    const float *B = (const float *)qb->data;
    for (int row = 64; row < 128; row++)
        for (int j = 0; j < 4; j++) assert_true(B[row * 4 + j] == 0.0f);   // k block
    float alpha2 = 0;
    assert_int_equal(gguf_get_f32(&f, "adapter.lora.alpha", &alpha2, err), 0);
    assert_true(alpha2 == 8.0f);   // scale 2 at rank 4
    gguf_close(&f);
    assert_int_equal(lora_gguf_load(&back, &m, out, err), 0);
    assert_int_equal(back.cfg.r, 4);
    assert_non_null(back.hooks[LSLOT_QKV].A);
    int *ids, n;
    assert_int_equal(tokenizer_encode(m.tok, "Once upon a time there was a cat", -1, -1, &ids, &n, err), 0);
    ModelAdapters h1, h2;
    adapters_hooks(&a, 0, &h1);
    adapters_hooks(&back, 0, &h2);
    float *l1, *l2;
    assert_int_equal(model_logits_all(&m, &h1, ids, n, &l1, err), 0);
    assert_int_equal(model_logits_all(&m, &h2, ids, n, &l2, err), 0);
    assert_true(max_abs_diff(l1, l2, (size_t)n * m.cfg.vocab_size) <= 1e-5);
    free(l1);
    free(l2);
    free(ids);
    adapters_free(&back);
    adapters_free(&a);
    model_free(&m);
    test_rmtree(d);
}

// ---------------------------------------------------------------------------------------------
// CLI

static void test_cli_convert_and_export_adapter(void **state) {
    (void)state;
    char d[512], cmd[4096], out[1024], err[FTK_ERR_LEN];
    snprintf(d, sizeof d, "%s", test_tmpdir("cli-conv"));
    char *o;
    // llama2.c -> HF dir (tokenizer written as tokenizer.model), probed.
    snprintf(out, sizeof out, "%s/st-hf", d);
    snprintf(cmd, sizeof cmd, "%s convert --model %s --output %s", ftk_bin(),
             shared_path("models/stories260K/stories260K.bin"), out);
    int rc = run_cmd(cmd, &o);
    if (rc) fprintf(stderr, "%s\n", o);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(o, "probe: max |delta logit| = 0 "));
    free(o);
    // GGUF (gpt2) -> HF dir: vocab.json + merges.txt generated from the GGUF vocabulary.
    snprintf(out, sizeof out, "%s/g-hf", d);
    snprintf(cmd, sizeof cmd, "%s convert --model %s --output %s --format hf", ftk_bin(),
             shared_path("models/tiny-gpt2-hf/tiny-gpt2.gguf"), out);
    rc = run_cmd(cmd, &o);
    if (rc) fprintf(stderr, "%s\n", o);
    assert_int_equal(rc, 0);
    free(o);
    char p[1200];
    snprintf(p, sizeof p, "%s/vocab.json", out);
    assert_true(ftk_file_exists(p));
    Tokenizer *t;
    assert_int_equal(tokenizer_load_hf_dir(&t, out, err), 0);
    assert_int_equal(t->n_vocab, 50257);
    tokenizer_free(t);
    // export-adapter: PEFT dir -> GGUF adapter with the same bytes as llama.cpp's converter wrote.
    snprintf(out, sizeof out, "%s/a.gguf", d);
    snprintf(cmd, sizeof cmd, "%s export-adapter --model %s --adapter %s --output %s", ftk_bin(),
             shared_path("models/tiny-llama-hf"), shared_path("models/tiny-llama-hf/peft-lora"), out);
    rc = run_cmd(cmd, &o);
    if (rc) fprintf(stderr, "%s\n", o);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(o, "probe: max |delta logit| = 0 "));
    free(o);
    assert_tensors_identical(out, shared_path("models/tiny-llama-hf/peft-lora/adapter.gguf"));
    test_rmtree(d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gguf_llama_matches_converter),
        cmocka_unit_test(test_gguf_gpt2_matches_converter),
        cmocka_unit_test(test_round_trip_llama2c_gguf_hf),
        cmocka_unit_test(test_round_trip_hf_gguf_hf),
        cmocka_unit_test(test_hf_export_reproduces_source),
        cmocka_unit_test(test_hf_sharded_and_generated_config),
        cmocka_unit_test(test_tokenizer_writers),
        cmocka_unit_test(test_gguf_vocab_to_hf_and_padding),
        cmocka_unit_test(test_lora_gguf_matches_llamacpp),
        cmocka_unit_test(test_lora_gguf_round_trips),
        cmocka_unit_test(test_cli_convert_and_export_adapter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
