// test_peft_badinput.c — peft_load on broken or foreign adapter directories: each must fail with a
// message naming the file and the fault (and leak nothing; this suite runs under ASan/UBSan).
// Inputs are built from the PEFT-written shared/models/tiny-llama-hf/peft-lora and peft-prompt.
#include "tests/testutil.h"

#include <stdlib.h>
#include <string.h>

#include "lora/adapter.h"
#include "lora/peft.h"
#include "model/common.h"
#include "model/model.h"
#include "model/safetensors.h"

#define LORA_DIR "models/tiny-llama-hf/peft-lora"
#define PROMPT_DIR "models/tiny-llama-hf/peft-prompt"

static ModelConfig llama_cfg(int dim, int layers, int heads, int kv_heads) {
    ModelConfig c = {0};
    c.arch = ARCH_LLAMA;
    c.dim = dim;
    c.n_layers = layers;
    c.n_heads = heads;
    c.n_kv_heads = kv_heads;
    c.head_dim = dim / heads;
    c.ffn_dim = 160;
    c.vocab_size = 512;
    c.max_seq_len = 256;
    c.norm_eps = 1e-5f;
    c.rope_theta = 10000.0f;
    return c;
}

static Model g_model;   // tiny-llama-hf's configuration (dim 64, 3 layers, 8/2 heads)

static int setup(void **state) {
    (void)state;
    ModelConfig c = llama_cfg(64, 3, 8, 2);
    char err[FTK_ERR_LEN];
    snprintf(g_model.path, sizeof g_model.path, "synthetic");
    return model_alloc_weights(&g_model, &c, err);
}

static int teardown(void **state) {
    (void)state;
    model_free(&g_model);
    return 0;
}

static const char *in_dir(const char *dir, const char *name) {
    static char buf[4][4400];
    static int k;
    char *out = buf[k++ % 4];
    snprintf(out, sizeof buf[0], "%.4095s/%.256s", dir, name);
    return out;
}

static char *slurp(const char *path, size_t *len) {
    char *data = NULL, err[FTK_ERR_LEN];
    size_t n;
    assert_int_equal(ftk_read_file(path, &data, &n, err), 0);
    if (len) *len = n;
    return data;
}

static void write_file(const char *path, const void *data, size_t len) {
    char err[FTK_ERR_LEN];
    assert_int_equal(ftk_write_file_atomic(path, data, len, err), 0);
}

// text with the first `from` replaced by `to` (malloc'ed)
static char *replace(const char *text, const char *from, const char *to) {
    const char *p = strstr(text, from);
    assert_non_null(p);
    char *out = malloc(strlen(text) + strlen(to) + 1);
    size_t k = (size_t)(p - text);
    memcpy(out, text, k);
    strcpy(out + k, to);
    strcat(out, p + strlen(from));
    return out;
}

// A copy of peft-lora in a fresh dir, its adapter_config.json edited (from -> to; from NULL = as is).
static const char *lora_copy(const char *tag, const char *from, const char *to) {
    const char *dir = test_tmpdir(tag);
    size_t n;
    char *cfg = slurp(shared_path(LORA_DIR "/adapter_config.json"), NULL);
    char *edited = from ? replace(cfg, from, to) : strdup(cfg);
    write_file(in_dir(dir, "adapter_config.json"), edited, strlen(edited));
    char *st = slurp(shared_path(LORA_DIR "/adapter_model.safetensors"), &n);
    write_file(in_dir(dir, "adapter_model.safetensors"), st, n);
    free(cfg);
    free(edited);
    free(st);
    return dir;
}

// Rewrites dir/adapter_model.safetensors from peft-lora's tensors: drop = a key to leave out,
// rename_from/rename_to = one key to rename, extra_name = one more (1, 64) tensor to add.
static void rewrite_tensors(const char *dir, const char *drop, const char *rename_from, const char *rename_to,
                            const char *extra_name) {
    StFile f;
    StWriter *w;
    char err[FTK_ERR_LEN];
    assert_int_equal(st_open(&f, shared_path(LORA_DIR "/adapter_model.safetensors"), err), 0);
    assert_int_equal(st_writer_create(&w, err), 0);
    float *vals = malloc((size_t)f.n_tensors * 64 * 4 * sizeof(float));
    static float extra[64];
    for (int i = 0; i < f.n_tensors; i++) {
        const StTensor *t = &f.tensors[i];
        if (drop && !strcmp(t->name, drop)) continue;
        float *x = vals + (size_t)i * 256;
        assert_int_equal(st_read_f32(&f, t, x, t->numel, err), 0);
        const char *name = rename_from && !strcmp(t->name, rename_from) ? rename_to : t->name;
        assert_int_equal(st_writer_add_f32(w, name, t->ndim, t->shape, x, ST_F32, err), 0);
    }
    if (extra_name) {
        int64_t shape[2] = {1, 64};
        assert_int_equal(st_writer_add_f32(w, extra_name, 2, shape, extra, ST_F32, err), 0);
    }
    assert_int_equal(st_writer_write(w, in_dir(dir, "adapter_model.safetensors"), err), 0);
    st_writer_free(w);
    st_close(&f);
    free(vals);
}

// peft_load must fail and its message contain every one of the (NULL-terminated) fragments.
static void expect_fail(const Model *m, const char *dir, ...) {
    Adapters a;
    char err[FTK_ERR_LEN] = "";
    int rc = peft_load(&a, m, dir, err);
    if (rc == 0) {
        adapters_free(&a);
        fail_msg("peft_load(%s) succeeded", dir);
    }
    assert_null(a.params);
    if (getenv("FTK_TEST_VERBOSE")) fprintf(stderr, "  error: %s\n", err);
    va_list ap;
    va_start(ap, dir);
    for (const char *frag; (frag = va_arg(ap, const char *));)
        if (!strstr(err, frag)) fail_msg("error \"%s\" lacks \"%s\"", err, frag);
    va_end(ap);
}

static void test_missing_files(void **state) {
    (void)state;
    const char *dir = test_tmpdir("pb_missing");
    expect_fail(&g_model, dir, "adapter_config.json", "not a PEFT adapter directory", NULL);
    expect_fail(&g_model, in_dir(dir, "nope"), "nope", "not a directory", NULL);
    // config but no weights; then a pickle only
    char *cfg = slurp(shared_path(LORA_DIR "/adapter_config.json"), NULL);
    write_file(in_dir(dir, "adapter_config.json"), cfg, strlen(cfg));
    free(cfg);
    expect_fail(&g_model, dir, "adapter_model.safetensors", "missing", NULL);
    write_file(in_dir(dir, "adapter_model.bin"), "PK\3\4", 4);
    expect_fail(&g_model, dir, "adapter_model.bin", "only safetensors", NULL);
    test_rmtree(dir);
}

static void test_other_model(void **state) {
    (void)state;
    const char *dir = shared_path(LORA_DIR);
    char err[FTK_ERR_LEN];
    Model m = {0};
    ModelConfig c = llama_cfg(32, 3, 4, 1);   // narrower model: A must be [4, 32]
    assert_int_equal(model_alloc_weights(&m, &c, err), 0);
    expect_fail(&m, dir, "adapter_model.safetensors", "layers.0.self_attn.q_proj.lora_A.weight", "[4, 64]",
                "call for [4, 32]", NULL);
    model_free(&m);
    c = llama_cfg(64, 3, 8, 4);   // other GQA: v_proj B must be [32, 4]
    assert_int_equal(model_alloc_weights(&m, &c, err), 0);
    expect_fail(&m, dir, "v_proj.lora_B.weight", "[16, 4]", "[32, 4]", NULL);
    model_free(&m);
    c = llama_cfg(64, 4, 8, 2);   // deeper: layer 3 has nothing
    assert_int_equal(model_alloc_weights(&m, &c, err), 0);
    expect_fail(&m, dir, "missing tensor base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight", NULL);
    model_free(&m);
    c = llama_cfg(64, 2, 8, 2);   // shallower: layer 2's tensors are foreign
    assert_int_equal(model_alloc_weights(&m, &c, err), 0);
    expect_fail(&m, dir, "unexpected tensor base_model.model.model.layers.2.", NULL);
    model_free(&m);
    c = llama_cfg(64, 3, 4, 4);
    c.arch = ARCH_GPT2;
    c.ffn_dim = 256;
    assert_int_equal(model_alloc_weights(&m, &c, err), 0);
    expect_fail(&m, dir, "unexpected tensor base_model.model.model.layers.", "gpt2", NULL);
    model_free(&m);
    // a prompt for a 64-wide model on a 32-wide one
    c = llama_cfg(32, 3, 4, 1);
    assert_int_equal(model_alloc_weights(&m, &c, err), 0);
    expect_fail(&m, shared_path(PROMPT_DIR), "token_dim 64", "32", NULL);
    model_free(&m);
}

static void test_bad_configs(void **state) {
    (void)state;
    const char *dir;
    dir = lora_copy("pb_target", "\"v_proj\"", "\"w_proj\"");
    expect_fail(&g_model, dir, "\"w_proj\"", "valid names", "q_proj", NULL);
    test_rmtree(dir);
    dir = lora_copy("pb_dora", "\"use_dora\": false", "\"use_dora\": true");
    expect_fail(&g_model, dir, "adapter_config.json", "DoRA", NULL);
    test_rmtree(dir);
    dir = lora_copy("pb_rank", "\"rank_pattern\": {}", "\"rank_pattern\": {\"q_proj\": 8}");
    expect_fail(&g_model, dir, "adapter_config.json", "rank_pattern", "not supported", NULL);
    test_rmtree(dir);
    dir = lora_copy("pb_alpha", "\"alpha_pattern\": {}", "\"alpha_pattern\": {\"q_proj\": 8}");
    expect_fail(&g_model, dir, "alpha_pattern", NULL);
    test_rmtree(dir);
    dir = lora_copy("pb_regex", "[\n    \"q_proj\",\n    \"v_proj\"\n  ]", "\".*attn.*\"");
    expect_fail(&g_model, dir, "regex", "not supported", NULL);
    test_rmtree(dir);
    dir = lora_copy("pb_r", "\"r\": 4", "\"r\": \"four\"");
    expect_fail(&g_model, dir, "\"r\"", NULL);
    test_rmtree(dir);
    dir = lora_copy("pb_r8", "\"r\": 4", "\"r\": 8");   // config disagrees with the tensors
    expect_fail(&g_model, dir, "q_proj.lora_A.weight", "[4, 64]", "call for [8, 64]", NULL);
    test_rmtree(dir);
    dir = lora_copy("pb_type", "\"LORA\"", "\"PREFIX_TUNING\"");
    expect_fail(&g_model, dir, "PREFIX_TUNING", "not supported", NULL);
    test_rmtree(dir);
    dir = lora_copy("pb_notype", "\"peft_type\": \"LORA\",", "");
    expect_fail(&g_model, dir, "peft_type", "missing", NULL);
    test_rmtree(dir);
    dir = lora_copy("pb_task", "\"CAUSAL_LM\"", "\"SEQ_2_SEQ_LM\"");
    expect_fail(&g_model, dir, "SEQ_2_SEQ_LM", NULL);
    test_rmtree(dir);
    dir = lora_copy("pb_pissa", "\"init_lora_weights\": true", "\"init_lora_weights\": \"pissa\"");
    expect_fail(&g_model, dir, "pissa", "base model", NULL);
    test_rmtree(dir);
    dir = lora_copy("pb_bias", "\"bias\": \"none\"", "\"bias\": \"all\"");
    expect_fail(&g_model, dir, "bias", NULL);
    test_rmtree(dir);
    dir = lora_copy("pb_json", "\"r\": 4,", "\"r\": 4,,");
    expect_fail(&g_model, dir, "adapter_config.json", "not a JSON object", NULL);
    test_rmtree(dir);
    // a supported regex and a layers_to_transform that excludes a layer the file has
    dir = lora_copy("pb_ok_regex", "[\n    \"q_proj\",\n    \"v_proj\"\n  ]", "\".*\\\\.(q_proj|v_proj)\"");
    Adapters a;
    char err[FTK_ERR_LEN];
    assert_int_equal(peft_load(&a, &g_model, dir, err), 0);
    assert_int_equal(a.n_views, 12);
    adapters_free(&a);
    test_rmtree(dir);
    dir = lora_copy("pb_layers", "\"layers_to_transform\": null", "\"layers_to_transform\": [0, 1]");
    expect_fail(&g_model, dir, "unexpected tensor base_model.model.model.layers.2.", NULL);
    test_rmtree(dir);
}

static void test_bad_tensors(void **state) {
    (void)state;
    const char *dir = lora_copy("pb_trunc", NULL, NULL);
    size_t n;
    char *st = slurp(shared_path(LORA_DIR "/adapter_model.safetensors"), &n);
    write_file(in_dir(dir, "adapter_model.safetensors"), st, n - 100);   // truncated data
    expect_fail(&g_model, dir, "adapter_model.safetensors", NULL);
    write_file(in_dir(dir, "adapter_model.safetensors"), st, 600);       // truncated header
    expect_fail(&g_model, dir, "adapter_model.safetensors", NULL);
    write_file(in_dir(dir, "adapter_model.safetensors"), st, 5);         // not even the length
    expect_fail(&g_model, dir, "adapter_model.safetensors", NULL);
    st[3] = 0x7f;                                                         // header length far past the end
    write_file(in_dir(dir, "adapter_model.safetensors"), st, n);
    expect_fail(&g_model, dir, "adapter_model.safetensors", NULL);
    free(st);

    rewrite_tensors(dir, "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight", NULL, NULL, NULL);
    expect_fail(&g_model, dir, "missing tensor base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight", NULL);
    rewrite_tensors(dir, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", NULL, NULL,
                    "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight");   // (1, 64)
    expect_fail(&g_model, dir, "q_proj.lora_A.default.weight", "[1, 64]", "call for [4, 64]", NULL);
    rewrite_tensors(dir, NULL, NULL, NULL, "base_model.model.lm_head.weight");
    expect_fail(&g_model, dir, "unexpected tensor base_model.model.lm_head.weight", NULL);
    rewrite_tensors(dir, NULL, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
                    "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight", NULL);
    Adapters a;
    char err[FTK_ERR_LEN];
    assert_int_equal(peft_load(&a, &g_model, dir, err), 0);   // ".default" is PEFT's adapter name: fine
    adapters_free(&a);
    // ... but not next to the same key without it
    StFile f;
    StWriter *w;
    assert_int_equal(st_open(&f, shared_path(LORA_DIR "/adapter_model.safetensors"), err), 0);
    assert_int_equal(st_writer_create(&w, err), 0);
    float *vals = malloc((size_t)(f.n_tensors + 1) * 256 * sizeof(float));
    for (int i = 0; i < f.n_tensors; i++) {
        assert_int_equal(st_read_f32(&f, &f.tensors[i], vals + i * 256, f.tensors[i].numel, err), 0);
        assert_int_equal(st_writer_add_f32(w, f.tensors[i].name, 2, f.tensors[i].shape, vals + i * 256, ST_F32, err), 0);
    }
    const StTensor *t = st_find(&f, "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight");
    assert_int_equal(st_writer_add_f32(w, "base_model.model.model.layers.1.self_attn.v_proj.lora_B.default.weight", 2,
                                       t->shape, vals, ST_F32, err), 0);
    assert_int_equal(st_writer_write(w, in_dir(dir, "adapter_model.safetensors"), err), 0);
    st_writer_free(w);
    expect_fail(&g_model, dir, "appears twice", NULL);
    // an integer tensor cannot be a LoRA matrix
    assert_int_equal(st_writer_create(&w, err), 0);
    int64_t ishape[2] = {4, 64};
    for (int i = 0; i < f.n_tensors; i++) {
        if (!strcmp(f.tensors[i].name, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"))
            assert_int_equal(st_writer_add_raw(w, f.tensors[i].name, ST_I32, 2, ishape, vals, err), 0);
        else
            assert_int_equal(st_writer_add_f32(w, f.tensors[i].name, 2, f.tensors[i].shape, vals + i * 256, ST_F32, err), 0);
    }
    assert_int_equal(st_writer_write(w, in_dir(dir, "adapter_model.safetensors"), err), 0);
    st_writer_free(w);
    st_close(&f);
    free(vals);
    expect_fail(&g_model, dir, "q_proj.lora_A.weight", NULL);
    test_rmtree(dir);
}

static void test_prompt_dir(void **state) {
    (void)state;
    // prompt/ holding a LoRA config instead of prompt tuning
    const char *dir = lora_copy("pb_prompt", NULL, NULL);
    char err[FTK_ERR_LEN];
    char sub[4400];
    snprintf(sub, sizeof sub, "%.4095s/prompt", dir);
    assert_int_equal(ftk_mkdirs(sub, err), 0);
    char *cfg = slurp(shared_path(LORA_DIR "/adapter_config.json"), NULL);
    write_file(in_dir(sub, "adapter_config.json"), cfg, strlen(cfg));
    free(cfg);
    expect_fail(&g_model, dir, "prompt/adapter_config.json", "PROMPT_TUNING", NULL);
    // a real prompt config, a tensor of the wrong length
    cfg = slurp(shared_path(PROMPT_DIR "/adapter_config.json"), NULL);
    char *edited = replace(cfg, "\"num_virtual_tokens\": 5", "\"num_virtual_tokens\": 6");
    write_file(in_dir(sub, "adapter_config.json"), edited, strlen(edited));
    size_t n;
    char *st = slurp(shared_path(PROMPT_DIR "/adapter_model.safetensors"), &n);
    write_file(in_dir(sub, "adapter_model.safetensors"), st, n);
    expect_fail(&g_model, dir, "prompt/adapter_model.safetensors", "prompt_embeddings", "[5, 64]", "[6, 64]", NULL);
    // the right one loads with the LoRA
    write_file(in_dir(sub, "adapter_config.json"), cfg, strlen(cfg));
    Adapters a;
    assert_int_equal(peft_load(&a, &g_model, dir, err), 0);
    assert_int_equal(a.cfg.types, ADAPTER_LORA | ADAPTER_PROMPT);
    assert_int_equal(a.n_params, 3 * 2 * (4 * 64) + 3 * (64 * 4 + 16 * 4) + 5 * 64);
    adapters_free(&a);
    // prompt config without num_virtual_tokens
    char *nonv = replace(cfg, "\"num_virtual_tokens\": 5,", "");
    write_file(in_dir(sub, "adapter_config.json"), nonv, strlen(nonv));
    expect_fail(&g_model, dir, "num_virtual_tokens", NULL);
    free(cfg);
    free(edited);
    free(nonv);
    free(st);
    test_rmtree(dir);
}

// ftk's gpt2 block marker on a c_attn adapter that is not block-structured.
static void test_gpt2_marker(void **state) {
    (void)state;
    ModelConfig c = llama_cfg(64, 2, 4, 4);
    c.arch = ARCH_GPT2;
    c.ffn_dim = 256;
    Model m = {0};
    char err[FTK_ERR_LEN];
    assert_int_equal(model_alloc_weights(&m, &c, err), 0);
    AdapterConfig ac;
    adapter_config_default(&ac);   // q, v blocks
    ac.r = 2;
    ac.init = LORA_INIT_NONE;
    Adapters a;
    assert_int_equal(adapters_create(&a, &ac, &m, 5, err), 0);
    const char *dir = test_tmpdir("pb_marker");
    assert_int_equal(peft_save(&a, dir, NULL, err), 0);
    adapters_free(&a);
    // put a non-zero value into the k rows of layer 1's B
    StFile f;
    StWriter *w;
    const char *path = in_dir(dir, "adapter_model.safetensors");
    assert_int_equal(st_open(&f, path, err), 0);
    assert_int_equal(st_writer_create(&w, err), 0);
    float *vals = malloc((size_t)f.n_tensors * 192 * 4 * sizeof(float));
    for (int i = 0; i < f.n_tensors; i++) {
        float *x = vals + (size_t)i * 192 * 4;
        assert_int_equal(st_read_f32(&f, &f.tensors[i], x, f.tensors[i].numel, err), 0);
        if (!strcmp(f.tensors[i].name, "base_model.model.transformer.h.1.attn.c_attn.lora_B.weight")) x[70 * 4 + 1] = 0.5f;
        assert_int_equal(st_writer_add_f32(w, f.tensors[i].name, 2, f.tensors[i].shape, x, ST_F32, err), 0);
    }
    assert_int_equal(st_writer_set_metadata(w, "ftk_c_attn_blocks", "q,v", err), 0);
    st_close(&f);
    assert_int_equal(st_writer_write(w, path, err), 0);
    st_writer_free(w);
    free(vals);
    expect_fail(&m, dir, "h.1.attn.c_attn.lora_B.weight", "not block-structured", "[70, 1]", NULL);
    test_rmtree(dir);
    model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_missing_files), cmocka_unit_test(test_other_model), cmocka_unit_test(test_bad_configs),
        cmocka_unit_test(test_bad_tensors),   cmocka_unit_test(test_prompt_dir),  cmocka_unit_test(test_gpt2_marker),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
