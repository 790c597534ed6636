// test_peft.c — lora/peft.c: PEFT adapter directories. Save -> load round trips bit for bit (llama
// all-linear + score head, gpt2 q/v blocks exported as a rank-2r c_attn adapter and back, prompt
// tuning, LoRA + prompt/ + value head); the configs are byte-identical to what PEFT 0.13.2 wrote for
// the same settings; safetensors headers padded to 8 with {"format":"pt"}; the adapters PEFT itself
// wrote in shared/models/tiny-llama-hf load with the right shapes, scale and values (read here by
// an independent safetensors parser) and, run through the model, give PEFT's logits; the gpt2 c_attn
// export computes the same function as the q/v slots it came from.
#include "tests/testutil.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lora/adapter.h"
#include "lora/peft.h"
#include "model/common.h"
#include "model/model.h"
#include "model/safetensors.h"

static ModelConfig tiny_llama_cfg(void) {   // shared/models/tiny-llama-hf/config.json
    ModelConfig c = {0};
    c.arch = ARCH_LLAMA;
    c.dim = 64;
    c.n_layers = 3;
    c.n_heads = 8;
    c.n_kv_heads = 2;
    c.head_dim = 8;
    c.ffn_dim = 160;
    c.vocab_size = 512;
    c.max_seq_len = 256;
    c.norm_eps = 1e-5f;
    c.rope_theta = 10000.0f;
    c.bos_id = 1;
    c.eos_id = 2;
    return c;
}

static ModelConfig tiny_gpt2_cfg(void) {
    ModelConfig c = tiny_llama_cfg();
    c.arch = ARCH_GPT2;
    c.n_layers = 2;
    c.n_heads = c.n_kv_heads = 4;
    c.head_dim = 16;
    c.ffn_dim = 256;
    c.tied_head = 1;
    return c;
}

static void make_model(Model *m, const ModelConfig *c) {
    char err[FTK_ERR_LEN];
    memset(m, 0, sizeof *m);
    snprintf(m->path, sizeof m->path, "synthetic");
    assert_int_equal(model_alloc_weights(m, c, err), 0);
}

static char *slurp(const char *path, size_t *len) {
    char *data = NULL;
    char err[FTK_ERR_LEN];
    size_t n = 0;
    if (ftk_read_file(path, &data, &n, err) != 0) return NULL;
    if (len) *len = n;
    return data;
}

// Independent safetensors reading: the JSON header of a file (caller cJSON_Delete) and its data start.
static cJSON *st_header(const char *path, char **file, size_t *data_off, size_t *header_len) {
    size_t len;
    char *buf = slurp(path, &len);
    assert_non_null(buf);
    assert_true(len >= 8);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | (unsigned char)buf[i];
    assert_true(n + 8 <= len);
    cJSON *h = cJSON_ParseWithLength(buf + 8, (size_t)n);
    assert_non_null(h);
    *file = buf;
    *data_off = 8 + (size_t)n;
    if (header_len) *header_len = (size_t)n;
    return h;
}

// The F32 tensor `name` of a safetensors file: malloc'ed values, shape in shape[2] (ndim returned).
static float *st_tensor(const char *path, const char *name, int64_t shape[2], int *ndim) {
    char *file;
    size_t data_off;
    cJSON *h = st_header(path, &file, &data_off, NULL);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(h, name);
    if (!t) {
        cJSON_Delete(h);
        free(file);
        return NULL;
    }
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(t, "dtype")->valuestring, "F32");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(t, "shape"), *off = cJSON_GetObjectItemCaseSensitive(t, "data_offsets");
    *ndim = cJSON_GetArraySize(sh);
    size_t numel = 1;
    for (int i = 0; i < *ndim; i++) numel *= (size_t)(shape[i] = (int64_t)cJSON_GetArrayItem(sh, i)->valuedouble);
    size_t b = (size_t)cJSON_GetArrayItem(off, 0)->valuedouble, e = (size_t)cJSON_GetArrayItem(off, 1)->valuedouble;
    assert_int_equal(e - b, numel * 4);
    float *x = malloc(numel * sizeof(float));
    memcpy(x, file + data_off + b, numel * 4);
    cJSON_Delete(h);
    free(file);
    return x;
}

static void assert_header_ok(const char *path, int n_tensors) {
    char *file;
    size_t data_off, hlen;
    cJSON *h = st_header(path, &file, &data_off, &hlen);
    assert_int_equal(hlen % 8, 0);   // padded to 8 as the reference writer does
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(h, "__metadata__");
    assert_non_null(meta);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(meta, "format")->valuestring, "pt");
    assert_int_equal(cJSON_GetArraySize(h) - 1, n_tensors);
    cJSON_Delete(h);
    free(file);
}

static cJSON *read_json(const char *path) {
    char *text = slurp(path, NULL);
    assert_non_null(text);
    cJSON *j = cJSON_Parse(text);
    free(text);
    assert_non_null(j);
    return j;
}

static const cJSON *jget(const cJSON *o, const char *k) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!x) fail_msg("config has no \"%s\"", k);
    return x;
}

static const char *in_dir(const char *dir, const char *name) {
    static char buf[4][4096];
    static int k;
    char *out = buf[k++ % 4];
    snprintf(out, 4096, "%s/%s", dir, name);
    return out;
}

static void assert_same_adapters(const Adapters *a, const Adapters *b) {
    assert_int_equal(a->n_params, b->n_params);
    assert_int_equal(a->n_views, b->n_views);
    for (int i = 0; i < a->n_views; i++) {
        assert_string_equal(a->views[i].name, b->views[i].name);
        assert_int_equal(a->views[i].offset, b->views[i].offset);
    }
    assert_memory_equal(a->params, b->params, a->n_params * sizeof(float));   // bit-identical
    if (a->scale != b->scale)
        fail_msg("scale %.9g vs %.9g (alpha %.9g vs %.9g)", a->scale, b->scale, a->cfg.alpha, b->cfg.alpha);
    assert_int_equal(a->cfg.types, b->cfg.types);
    assert_int_equal(a->cfg.r, b->cfg.r);
    assert_true(a->cfg.alpha == b->cfg.alpha);
    assert_true(a->cfg.dropout == b->cfg.dropout);
    assert_int_equal(a->cfg.use_rslora, b->cfg.use_rslora);
    assert_int_equal(a->cfg.num_virtual_tokens, b->cfg.num_virtual_tokens);
    assert_int_equal(a->cfg.score_head, b->cfg.score_head);
    assert_int_equal(a->cfg.value_head, b->cfg.value_head);
}

static void test_llama_roundtrip(void **state) {
    (void)state;
    ModelConfig c = tiny_llama_cfg();
    Model m;
    make_model(&m, &c);
    AdapterConfig ac;
    adapter_config_default(&ac);
    ac.r = 4;
    ac.alpha = 8;
    ac.dropout = 0.05f;
    ac.init = LORA_INIT_NONE;   // B != 0 so the values mean something
    ac.score_head = 1;
    snprintf(ac.target_modules, sizeof ac.target_modules, "all-linear");
    Adapters a, b;
    char err[FTK_ERR_LEN];
    assert_int_equal(adapters_create(&a, &ac, &m, 11, err), 0);
    const char *dir = test_tmpdir("peft_llama");
    assert_int_equal(peft_save(&a, dir, "tiny-llama-hf", err), 0);
    assert_int_equal(peft_load(&b, &m, dir, err), 0);
    assert_same_adapters(&a, &b);
    assert_int_equal(b.cfg.init, LORA_INIT_NONE);
    assert_string_equal(b.cfg.target_modules, "down_proj,gate_proj,k_proj,o_proj,q_proj,up_proj,v_proj");

    // the config, field by field
    cJSON *j = read_json(in_dir(dir, "adapter_config.json"));
    assert_string_equal(jget(j, "peft_type")->valuestring, "LORA");
    assert_string_equal(jget(j, "task_type")->valuestring, "SEQ_CLS");   // a score head = a reward model
    assert_int_equal(jget(j, "r")->valueint, 4);
    assert_true(jget(j, "lora_alpha")->valuedouble == 8.0);
    assert_true(jget(j, "lora_dropout")->valuedouble == 0.05);
    assert_string_equal(jget(j, "bias")->valuestring, "none");
    assert_true(cJSON_IsFalse(jget(j, "fan_in_fan_out")));
    assert_true(cJSON_IsFalse(jget(j, "use_rslora")));
    assert_true(cJSON_IsFalse(jget(j, "use_dora")));
    assert_true(cJSON_IsFalse(jget(j, "init_lora_weights")));
    assert_true(cJSON_IsTrue(jget(j, "inference_mode")));
    assert_true(cJSON_IsNull(jget(j, "layers_to_transform")));
    assert_string_equal(jget(j, "base_model_name_or_path")->valuestring, "tiny-llama-hf");
    const cJSON *mts = jget(j, "modules_to_save");
    assert_int_equal(cJSON_GetArraySize(mts), 1);
    assert_string_equal(cJSON_GetArrayItem(mts, 0)->valuestring, "score");
    const cJSON *tm = jget(j, "target_modules");
    assert_int_equal(cJSON_GetArraySize(tm), 7);
    assert_string_equal(cJSON_GetArrayItem(tm, 0)->valuestring, "down_proj");
    assert_string_equal(cJSON_GetArrayItem(tm, 6)->valuestring, "v_proj");
    cJSON_Delete(j);

    // the tensors, read independently
    const char *st = in_dir(dir, "adapter_model.safetensors");
    assert_header_ok(st, 3 * 7 * 2 + 1);
    for (int i = 0; i < a.n_views; i++) {
        int64_t shape[2];
        int nd;
        float *x = st_tensor(st, a.views[i].name, shape, &nd);
        assert_non_null(x);
        assert_int_equal(nd, 2);
        assert_int_equal(shape[0], a.views[i].shape[0]);
        assert_int_equal(shape[1], a.views[i].shape[1]);
        assert_memory_equal(x, a.params + a.views[i].offset, a.views[i].numel * sizeof(float));
        free(x);
    }
    int64_t shape[2];
    int nd;
    float *vb = st_tensor(st, "base_model.model.model.layers.2.self_attn.v_proj.lora_B.weight", shape, &nd);
    assert_int_equal(shape[0], 16);   // GQA: 2 kv heads of 8
    free(vb);
    adapters_free(&a);
    adapters_free(&b);

    // layers_to_transform round trip
    adapter_config_default(&ac);
    ac.init = LORA_INIT_NONE;
    ac.use_rslora = 1;
    ac.alpha = 5.5f;
    snprintf(ac.layers_to_transform, sizeof ac.layers_to_transform, "2,0");
    assert_int_equal(adapters_create(&a, &ac, &m, 12, err), 0);
    assert_int_equal(peft_save(&a, dir, NULL, err), 0);
    assert_int_equal(peft_load(&b, &m, dir, err), 0);
    assert_same_adapters(&a, &b);
    assert_string_equal(b.cfg.layers_to_transform, "0,2");
    j = read_json(in_dir(dir, "adapter_config.json"));
    assert_int_equal(cJSON_GetArraySize(jget(j, "layers_to_transform")), 2);
    assert_true(cJSON_IsNull(jget(j, "base_model_name_or_path")));
    assert_true(cJSON_IsNull(jget(j, "modules_to_save")));
    assert_string_equal(jget(j, "task_type")->valuestring, "CAUSAL_LM");
    assert_true(jget(j, "lora_alpha")->valuedouble == 5.5);
    cJSON_Delete(j);
    adapters_free(&a);
    adapters_free(&b);

    // different modules in different layers: target_modules lists the full module paths
    adapter_config_default(&ac);
    ac.init = LORA_INIT_NONE;
    snprintf(ac.target_modules, sizeof ac.target_modules, "layers.0.self_attn.q_proj,v_proj");
    assert_int_equal(adapters_create(&a, &ac, &m, 13, err), 0);
    assert_int_equal(peft_save(&a, dir, NULL, err), 0);
    assert_int_equal(peft_load(&b, &m, dir, err), 0);
    assert_same_adapters(&a, &b);
    j = read_json(in_dir(dir, "adapter_config.json"));
    tm = jget(j, "target_modules");
    assert_int_equal(cJSON_GetArraySize(tm), 4);
    assert_string_equal(cJSON_GetArrayItem(tm, 0)->valuestring, "model.layers.0.self_attn.q_proj");
    assert_string_equal(cJSON_GetArrayItem(tm, 3)->valuestring, "model.layers.2.self_attn.v_proj");
    cJSON_Delete(j);
    adapters_free(&a);
    adapters_free(&b);
    test_rmtree(dir);
    model_free(&m);
}

// The same settings as shared/models/tiny-llama-hf/peft-lora and peft-prompt give byte-identical
// adapter_config.json files to what PEFT 0.13.2's save_pretrained wrote.
static void test_configs_match_peft(void **state) {
    (void)state;
    ModelConfig c = tiny_llama_cfg();
    Model m;
    make_model(&m, &c);
    AdapterConfig ac;
    adapter_config_default(&ac);
    ac.r = 4;
    ac.alpha = 8;
    Adapters a;
    char err[FTK_ERR_LEN];
    const char *dir = test_tmpdir("peft_cfg");
    assert_int_equal(adapters_create(&a, &ac, &m, 1, err), 0);
    assert_int_equal(peft_save(&a, dir, "tiny-llama-hf", err), 0);
    size_t n1, n2;
    char *ours = slurp(in_dir(dir, "adapter_config.json"), &n1);
    char *theirs = slurp(shared_path("models/tiny-llama-hf/peft-lora/adapter_config.json"), &n2);
    assert_non_null(theirs);
    assert_string_equal(ours, theirs);
    free(ours);
    free(theirs);
    adapters_free(&a);

    adapter_config_default(&ac);
    ac.types = ADAPTER_PROMPT;
    ac.num_virtual_tokens = 5;
    assert_int_equal(adapters_create(&a, &ac, &m, 1, err), 0);
    assert_int_equal(peft_save(&a, dir, "tiny-llama-hf", err), 0);
    ours = slurp(in_dir(dir, "adapter_config.json"), &n1);
    theirs = slurp(shared_path("models/tiny-llama-hf/peft-prompt/adapter_config.json"), &n2);
    assert_non_null(theirs);
    assert_string_equal(ours, theirs);
    free(ours);
    free(theirs);
    adapters_free(&a);
    test_rmtree(dir);
    model_free(&m);
}

// delta = B A of one c_attn adapter (3C, C), in double
static void product(const float *B, const float *A, int out, int R, int in, double *d) {
    for (int i = 0; i < out; i++)
        for (int j = 0; j < in; j++) {
            double s = 0;
            for (int k = 0; k < R; k++) s += (double)B[i * R + k] * A[k * in + j];
            d[i * in + j] = s;
        }
}

static void test_gpt2_qv_export(void **state) {
    (void)state;
    ModelConfig c = tiny_gpt2_cfg();
    const int C = 64, r = 4;
    Model m;
    make_model(&m, &c);
    AdapterConfig ac;
    adapter_config_default(&ac);   // gpt2 default: q and v blocks of c_attn
    ac.r = r;
    ac.alpha = 16;
    ac.init = LORA_INIT_NONE;
    Adapters a, b;
    char err[FTK_ERR_LEN];
    assert_int_equal(adapters_create(&a, &ac, &m, 21, err), 0);
    const char *dir = test_tmpdir("peft_gpt2");
    assert_int_equal(peft_save(&a, dir, "tiny-gpt2", err), 0);

    cJSON *j = read_json(in_dir(dir, "adapter_config.json"));
    assert_int_equal(jget(j, "r")->valueint, 2 * r);
    assert_true(jget(j, "lora_alpha")->valuedouble == 32.0);   // 32 / 8 = 16 / 4: same scaling
    assert_true(cJSON_IsTrue(jget(j, "fan_in_fan_out")));
    const cJSON *tm = jget(j, "target_modules");
    assert_int_equal(cJSON_GetArraySize(tm), 1);
    assert_string_equal(cJSON_GetArrayItem(tm, 0)->valuestring, "c_attn");
    cJSON_Delete(j);

    const char *st = in_dir(dir, "adapter_model.safetensors");
    assert_header_ok(st, 2 * 2);
    double *want = calloc((size_t)3 * C * C, sizeof(double)), *got = calloc((size_t)3 * C * C, sizeof(double));
    for (int l = 0; l < 2; l++) {
        char name[128];
        int64_t sa[2], sb[2];
        int nd;
        snprintf(name, sizeof name, "base_model.model.transformer.h.%d.attn.c_attn.lora_A.weight", l);
        float *A = st_tensor(st, name, sa, &nd);
        snprintf(name, sizeof name, "base_model.model.transformer.h.%d.attn.c_attn.lora_B.weight", l);
        float *B = st_tensor(st, name, sb, &nd);
        assert_non_null(A);
        assert_non_null(B);
        assert_int_equal(sa[0], 2 * r);
        assert_int_equal(sa[1], C);
        assert_int_equal(sb[0], 3 * C);
        assert_int_equal(sb[1], 2 * r);
        // PEFT's delta of the c_attn adapter equals q's delta in the q rows, 0 in the k rows, v's in the v rows.
        product(B, A, 3 * C, 2 * r, C, got);
        const LoraHook *hq = &a.hooks[l * LSLOT_COUNT + LSLOT_Q], *hv = &a.hooks[l * LSLOT_COUNT + LSLOT_V];
        memset(want, 0, (size_t)3 * C * C * sizeof(double));
        product(hq->B, hq->A, C, r, C, want);
        product(hv->B, hv->A, C, r, C, want + (size_t)2 * C * C);
        for (size_t i = 0; i < (size_t)3 * C * C; i++) assert_true(fabs(got[i] - want[i]) < 1e-6);
        for (int i = C; i < 2 * C; i++)
            for (int k = 0; k < 2 * r; k++) assert_true(B[i * 2 * r + k] == 0.0f);
        free(A);
        free(B);
    }
    free(want);
    free(got);
    // back into slots Q and V, bit for bit
    assert_int_equal(peft_load(&b, &m, dir, err), 0);
    assert_same_adapters(&a, &b);
    assert_int_equal(b.hooks[LSLOT_Q].r, r);
    assert_int_equal(b.hooks[LSLOT_QKV].r, 0);
    assert_string_equal(b.cfg.target_modules, "q_proj,v_proj");
    adapters_free(&b);

    // Without the ftk marker it is an ordinary rank-2r c_attn adapter: slot QKV, the same function.
    StFile sf;
    StWriter *w;
    assert_int_equal(st_open(&sf, st, err), 0);
    assert_int_equal(st_writer_create(&w, err), 0);
    float *vals = malloc(sf.n_tensors * (size_t)(3 * C * 2 * r) * sizeof(float));
    for (int i = 0; i < sf.n_tensors; i++) {
        float *x = vals + (size_t)i * 3 * C * 2 * r;
        assert_int_equal(st_read_f32(&sf, &sf.tensors[i], x, sf.tensors[i].numel, err), 0);
        assert_int_equal(st_writer_add_f32(w, sf.tensors[i].name, 2, sf.tensors[i].shape, x, ST_F32, err), 0);
    }
    st_close(&sf);
    assert_int_equal(st_writer_write(w, st, err), 0);
    st_writer_free(w);
    free(vals);
    assert_int_equal(peft_load(&b, &m, dir, err), 0);
    assert_int_equal(b.cfg.r, 2 * r);
    assert_true(b.scale == a.scale);
    const LoraHook *h = &b.hooks[LSLOT_COUNT + LSLOT_QKV];
    assert_int_equal(h->r, 2 * r);
    assert_int_equal(h->out, 3 * C);
    assert_int_equal(h->out_offset, 0);
    assert_int_equal(b.hooks[LSLOT_COUNT + LSLOT_V].r, 0);
    assert_memory_equal(h->A + (size_t)r * C, a.hooks[LSLOT_COUNT + LSLOT_V].A, (size_t)r * C * sizeof(float));
    adapters_free(&b);
    adapters_free(&a);

    // rsLoRA and all three blocks: r' = 3r, alpha' = alpha * sqrt(3) keeps alpha/sqrt(r); alpha comes back exactly.
    adapter_config_default(&ac);
    ac.r = r;
    ac.alpha = 6;
    ac.use_rslora = 1;
    ac.init = LORA_INIT_NONE;
    snprintf(ac.target_modules, sizeof ac.target_modules, "q_proj,k_proj,v_proj");
    assert_int_equal(adapters_create(&a, &ac, &m, 22, err), 0);
    assert_int_equal(peft_save(&a, dir, NULL, err), 0);
    j = read_json(in_dir(dir, "adapter_config.json"));
    assert_int_equal(jget(j, "r")->valueint, 3 * r);
    assert_true(fabs(jget(j, "lora_alpha")->valuedouble / sqrt(3.0 * r) - 3.0) < 1e-12);
    cJSON_Delete(j);
    assert_int_equal(peft_load(&b, &m, dir, err), 0);
    assert_same_adapters(&a, &b);
    assert_int_equal(b.hooks[LSLOT_COUNT + LSLOT_K].out_offset, C);
    adapters_free(&a);
    adapters_free(&b);

    // a genuine c_attn adapter stays in slot QKV
    adapter_config_default(&ac);
    ac.init = LORA_INIT_NONE;
    snprintf(ac.target_modules, sizeof ac.target_modules, "c_attn,c_proj");
    assert_int_equal(adapters_create(&a, &ac, &m, 23, err), 0);
    assert_int_equal(peft_save(&a, dir, NULL, err), 0);
    assert_int_equal(peft_load(&b, &m, dir, err), 0);
    assert_same_adapters(&a, &b);
    assert_int_equal(b.hooks[LSLOT_QKV].r, 8);
    assert_int_equal(b.hooks[LSLOT_DOWN].r, 8);
    adapters_free(&a);
    adapters_free(&b);
    test_rmtree(dir);
    model_free(&m);
}

static void test_prompt_roundtrips(void **state) {
    (void)state;
    ModelConfig c = tiny_llama_cfg();
    Model m;
    make_model(&m, &c);
    AdapterConfig ac;
    adapter_config_default(&ac);
    ac.types = ADAPTER_PROMPT;
    ac.num_virtual_tokens = 7;
    Adapters a, b;
    char err[FTK_ERR_LEN];
    const char *dir = test_tmpdir("peft_prompt");
    assert_int_equal(adapters_create(&a, &ac, &m, 31, err), 0);
    assert_int_equal(peft_save(&a, dir, "base", err), 0);
    assert_header_ok(in_dir(dir, "adapter_model.safetensors"), 1);
    assert_int_equal(peft_load(&b, &m, dir, err), 0);
    assert_same_adapters(&a, &b);
    assert_null(b.hooks);
    adapters_free(&a);
    adapters_free(&b);

    // LoRA + prompt + value head: LoRA at the top, prompt tuning in prompt/, value_head.safetensors
    adapter_config_default(&ac);
    ac.types = ADAPTER_LORA | ADAPTER_PROMPT;
    ac.init = LORA_INIT_NONE;
    ac.num_virtual_tokens = 3;
    ac.value_head = 1;
    ac.prompt_init = PROMPT_INIT_SAMPLE_VOCAB;
    assert_int_equal(adapters_create(&a, &ac, &m, 32, err), 0);
    for (size_t i = 0; i < (size_t)3 * 64; i++) a.prompt[i] = (float)i * 0.25f;   // the embeddings are all 0
    assert_int_equal(peft_save(&a, dir, "base", err), 0);
    assert_true(ftk_file_exists(in_dir(dir, "prompt/adapter_config.json")));
    assert_true(ftk_file_exists(in_dir(dir, "value_head.safetensors")));
    assert_header_ok(in_dir(dir, "value_head.safetensors"), 2);
    cJSON *j = read_json(in_dir(dir, "prompt/adapter_config.json"));
    assert_string_equal(jget(j, "peft_type")->valuestring, "PROMPT_TUNING");
    assert_string_equal(jget(j, "prompt_tuning_init")->valuestring, "SAMPLE_VOCAB");
    assert_int_equal(jget(j, "token_dim")->valueint, 64);
    assert_int_equal(jget(j, "num_layers")->valueint, 3);
    cJSON_Delete(j);
    assert_int_equal(peft_load(&b, &m, dir, err), 0);
    assert_same_adapters(&a, &b);
    assert_int_equal(b.cfg.prompt_init, PROMPT_INIT_SAMPLE_VOCAB);
    adapters_free(&b);
    // saving LoRA alone into the same dir removes the stale prompt/ and value head
    a.cfg.types = ADAPTER_LORA;
    a.prompt = NULL;
    a.value_w = NULL;
    assert_int_equal(peft_save(&a, dir, "base", err), 0);
    assert_false(ftk_file_exists(in_dir(dir, "prompt/adapter_config.json")));
    assert_false(ftk_file_exists(in_dir(dir, "value_head.safetensors")));
    assert_int_equal(peft_load(&b, &m, dir, err), 0);
    assert_int_equal(b.cfg.types, ADAPTER_LORA);
    assert_null(b.prompt);
    assert_memory_equal(b.params, a.params, b.n_params * sizeof(float));   // the LoRA views come first
    adapters_free(&b);
    adapters_free(&a);

    // TEXT init: PEFT needs the text and a tokenizer name in the config; JSON escaping as Python's
    adapter_config_default(&ac);
    ac.types = ADAPTER_PROMPT;
    ac.num_virtual_tokens = 2;
    ac.prompt_init = PROMPT_INIT_TEXT;
    snprintf(ac.prompt_init_text, sizeof ac.prompt_init_text, "Say \"h\xc3\xa9llo\"\n\xf0\x9f\x98\x80");
    assert_int_equal(adapters_alloc(&a, &ac, &c, err), 0);
    assert_int_equal(peft_save(&a, dir, "my/base", err), 0);
    char *text = slurp(in_dir(dir, "adapter_config.json"), NULL);
    assert_non_null(strstr(text, "\"prompt_tuning_init_text\": \"Say \\\"h\\u00e9llo\\\"\\n\\ud83d\\ude00\""));
    assert_non_null(strstr(text, "\"tokenizer_name_or_path\": \"my/base\""));
    free(text);
    assert_int_equal(peft_load(&b, &m, dir, err), 0);
    assert_string_equal(b.cfg.prompt_init_text, ac.prompt_init_text);
    adapters_free(&a);
    adapters_free(&b);
    test_rmtree(dir);
    model_free(&m);
}

// Adapters written by PEFT 0.13.2 itself (PROVENANCE.md of tiny-llama-hf).
static void test_load_peft_written(void **state) {
    (void)state;
    ModelConfig c = tiny_llama_cfg();
    Model m;
    make_model(&m, &c);
    Adapters a;
    char err[FTK_ERR_LEN];
    const char *dir = shared_path("models/tiny-llama-hf/peft-lora");
    int rc = peft_load(&a, &m, dir, err);
    if (rc) fail_msg("%s", err);
    assert_int_equal(a.cfg.types, ADAPTER_LORA);
    assert_int_equal(a.cfg.r, 4);
    assert_true(a.scale == 2.0f);   // lora_alpha 8 / r 4
    assert_int_equal(a.n_views, 12);
    assert_int_equal(a.n_params, 3 * (4 * 64 + 64 * 4 + 4 * 64 + 16 * 4));
    const char *st = shared_path("models/tiny-llama-hf/peft-lora/adapter_model.safetensors");
    for (int i = 0; i < a.n_views; i++) {
        int64_t shape[2];
        int nd;
        float *x = st_tensor(st, a.views[i].name, shape, &nd);
        assert_non_null(x);
        assert_int_equal(shape[0], a.views[i].shape[0]);
        assert_int_equal(shape[1], a.views[i].shape[1]);
        assert_memory_equal(x, a.params + a.views[i].offset, a.views[i].numel * sizeof(float));
        free(x);
    }
    const LoraHook *hv = &a.hooks[2 * LSLOT_COUNT + LSLOT_V];
    assert_int_equal(hv->out, 16);
    assert_int_equal(hv->out_offset, 80);
    assert_true(hv->scale == 2.0f);
    // values are 0.1 * N(0, 1): small, not zero
    assert_true(hv->B[0] != 0.0f && fabsf(hv->B[0]) < 0.6f);
    adapters_free(&a);

    dir = shared_path("models/tiny-llama-hf/peft-prompt");
    rc = peft_load(&a, &m, dir, err);
    if (rc) fail_msg("%s", err);
    assert_int_equal(a.cfg.types, ADAPTER_PROMPT);
    assert_int_equal(a.cfg.num_virtual_tokens, 5);
    assert_int_equal(a.n_params, 5 * 64);
    int64_t shape[2];
    int nd;
    float *x = st_tensor(shared_path("models/tiny-llama-hf/peft-prompt/adapter_model.safetensors"), "prompt_embeddings", shape, &nd);
    assert_int_equal(shape[0], 5);
    assert_int_equal(shape[1], 64);
    assert_memory_equal(x, a.prompt, 5 * 64 * sizeof(float));
    free(x);
    ModelAdapters ma;
    adapters_hooks(&a, 0, &ma);
    assert_int_equal(ma.n_virtual, 5);
    assert_null(ma.dprompt);
    adapters_free(&a);
    model_free(&m);
}

static int *ref_ids(const char *rel, int *n) {
    cJSON *j = read_json(shared_path(rel));
    const cJSON *ids = jget(j, "ids");
    *n = cJSON_GetArraySize(ids);
    int *out = malloc((size_t)*n * sizeof(int));
    for (int i = 0; i < *n; i++) out[i] = cJSON_GetArrayItem(ids, i)->valueint;
    cJSON_Delete(j);
    return out;
}

// max |logits - ref| over the rows of ref (ref row i = our row skip + i)
static double logits_vs_ref(const Model *m, Adapters *a, const int *ids, int n, const char *ref_rel, int skip) {
    ModelAdapters ma;
    adapters_hooks(a, 0, &ma);
    float *logits;
    char err[FTK_ERR_LEN];
    if (model_logits_all(m, &ma, ids, n, &logits, err)) fail_msg("%s", err);
    int nd, shape[4];
    float *ref = npy_read_f32(shared_path(ref_rel), &nd, shape);
    assert_non_null(ref);
    double d = max_abs_diff(logits + (size_t)skip * m->cfg.vocab_size, ref, (size_t)shape[0] * shape[1]);
    free(ref);
    free(logits);
    return d;
}

// End to end through the model: the PEFT-written adapters, loaded here, reproduce PEFT's logits.
static void test_peft_written_logits(void **state) {
    (void)state;
    Model m;
    Adapters a;
    char err[FTK_ERR_LEN];
    if (model_load(&m, shared_path("models/tiny-llama-hf"), NULL, err)) fail_msg("%s", err);
    int n;
    int *ids = ref_ids("models/tiny-llama-hf/peft-lora/ref/ref.json", &n);
    if (peft_load(&a, &m, shared_path("models/tiny-llama-hf/peft-lora"), err)) fail_msg("%s", err);
    double d = logits_vs_ref(&m, &a, ids, n, "models/tiny-llama-hf/peft-lora/ref/logits.npy", 0);
    fprintf(stderr, "  PEFT LoRA logits: max abs diff %.3g\n", d);
    assert_true(d < 1e-4);
    adapters_free(&a);
    if (peft_load(&a, &m, shared_path("models/tiny-llama-hf/peft-prompt"), err)) fail_msg("%s", err);
    d = logits_vs_ref(&m, &a, ids, n, "models/tiny-llama-hf/peft-prompt/ref/logits_with_virtual.npy", 0);
    fprintf(stderr, "  PEFT prompt tuning logits: max abs diff %.3g\n", d);
    assert_true(d < 1e-4);
    adapters_free(&a);
    free(ids);
    model_free(&m);
}

// The gpt2 q/v adapter and its rank-2r c_attn export (loaded as slot QKV) give the same logits.
static void test_gpt2_export_same_function(void **state) {
    (void)state;
    Model m;
    Adapters a, b;
    char err[FTK_ERR_LEN];
    if (model_load(&m, shared_path("models/tiny-gpt2-hf"), NULL, err)) fail_msg("%s", err);
    AdapterConfig ac;
    adapter_config_default(&ac);
    ac.r = 4;
    ac.alpha = 12;
    ac.init = LORA_INIT_NONE;   // a clearly non-zero delta
    assert_int_equal(adapters_create(&a, &ac, &m, 77, err), 0);
    const char *dir = test_tmpdir("peft_gpt2_fn");
    assert_int_equal(peft_save(&a, dir, NULL, err), 0);
    // drop the ftk marker: what PEFT would hand back after re-saving the adapter
    const char *st = in_dir(dir, "adapter_model.safetensors");
    StFile sf;
    StWriter *w;
    assert_int_equal(st_open(&sf, st, err), 0);
    assert_int_equal(st_writer_create(&w, err), 0);
    size_t total = 0;
    for (int i = 0; i < sf.n_tensors; i++) total += sf.tensors[i].numel;
    float *vals = malloc(total * sizeof(float)), *x = vals;
    for (int i = 0; i < sf.n_tensors; i++) {
        assert_int_equal(st_read_f32(&sf, &sf.tensors[i], x, sf.tensors[i].numel, err), 0);
        assert_int_equal(st_writer_add_f32(w, sf.tensors[i].name, 2, sf.tensors[i].shape, x, ST_F32, err), 0);
        x += sf.tensors[i].numel;
    }
    st_close(&sf);
    assert_int_equal(st_writer_write(w, st, err), 0);
    st_writer_free(w);
    free(vals);
    assert_int_equal(peft_load(&b, &m, dir, err), 0);
    assert_int_equal(b.hooks[LSLOT_QKV].r, 8);
    const int ids[12] = {464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13, 198, 50256};
    ModelAdapters ma, mb, none = {0};
    adapters_hooks(&a, 0, &ma);
    adapters_hooks(&b, 0, &mb);
    float *la, *lb, *l0;
    assert_int_equal(model_logits_all(&m, &ma, ids, 12, &la, err), 0);
    assert_int_equal(model_logits_all(&m, &mb, ids, 12, &lb, err), 0);
    assert_int_equal(model_logits_all(&m, &none, ids, 12, &l0, err), 0);
    const size_t nl = (size_t)12 * m.cfg.vocab_size;
    double d = max_abs_diff(la, lb, nl), d0 = max_abs_diff(la, l0, nl);
    fprintf(stderr, "  gpt2 q/v slots vs exported c_attn: max abs diff %.3g (adapter effect %.3g)\n", d, d0);
    assert_true(d < 1e-4);
    assert_true(d0 > 1e-2);
    free(la);
    free(lb);
    free(l0);
    adapters_free(&a);
    adapters_free(&b);
    test_rmtree(dir);
    model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama_roundtrip),   cmocka_unit_test(test_configs_match_peft),
        cmocka_unit_test(test_gpt2_qv_export),    cmocka_unit_test(test_prompt_roundtrips),
        cmocka_unit_test(test_load_peft_written), cmocka_unit_test(test_peft_written_logits),
        cmocka_unit_test(test_gpt2_export_same_function),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
