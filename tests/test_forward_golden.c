// test_forward_golden.c — logits of the real and fixture checkpoints against reference logits
// computed by PyTorch / transformers / PEFT / llama.cpp (shared/models/*/ref, see their PROVENANCE.md),
// through every loader: llama2.c .bin, HF dirs (F32, BF16 sharded), GGUF (F32, F16, Q8_0), GPT-2,
// and with PEFT LoRA / prompt-tuning adapters filled into the hook by hand.
#include "tests/testutil.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/common.h"
#include "model/model.h"
#include "model/safetensors.h"
#include "model/transformer.h"

static const int ONCE[5] = {1, 403, 407, 261, 378};

// Integer array at a (possibly nested, '.'-separated) key of a JSON file; malloc'ed.
static int *json_ints(const char *path, const char *key, int *n) {
    char *text, err[FTK_ERR_LEN];
    size_t len;
    assert_int_equal(ftk_read_file(path, &text, &len, err), 0);
    cJSON *root = cJSON_Parse(text);
    free(text);
    assert_non_null(root);
    cJSON *node = root;
    char k[256];
    snprintf(k, sizeof k, "%s", key);
    for (char *part = strtok(k, "."); part; part = strtok(NULL, ".")) {
        node = cJSON_GetObjectItemCaseSensitive(node, part);
        assert_non_null(node);
    }
    assert_true(cJSON_IsArray(node));
    *n = cJSON_GetArraySize(node);
    int *out = malloc((size_t)*n * sizeof(int));
    for (int i = 0; i < *n; i++) out[i] = cJSON_GetArrayItem(node, i)->valueint;
    cJSON_Delete(root);
    return out;
}

// Logits of `tokens` (through adapters ad, may be NULL) vs the reference rows [row0, row0 + rows)
// of the model output; returns the max abs difference and checks argmax agreement when asked.
static double compare(const Model *m, const ModelAdapters *ad, const int *tokens, int n, const char *ref_rel,
                      int skip_rows, int check_argmax) {
    char err[FTK_ERR_LEN];
    int nd, shape[4];
    float *ref = npy_read_f32(shared_path(ref_rel), &nd, shape);
    assert_non_null(ref);
    assert_int_equal(nd, 2);
    assert_int_equal(shape[1], m->cfg.vocab_size);
    float *logits;
    if (model_logits_all(m, ad, tokens, n, &logits, err)) fail_msg("%s", err);
    const int nv = ad && !ad->disabled ? ad->n_virtual : 0;
    assert_int_equal(shape[0], nv + n - skip_rows);
    const size_t V = (size_t)m->cfg.vocab_size;
    double d = max_abs_diff(logits + (size_t)skip_rows * V, ref, (size_t)shape[0] * V);
    if (check_argmax)
        for (int t = 0; t < shape[0]; t++) {
            const float *a = logits + (size_t)(skip_rows + t) * V, *b = ref + (size_t)t * V;
            int ia = 0, ib = 0;
            for (size_t j = 1; j < V; j++) {
                if (a[j] > a[ia]) ia = (int)j;
                if (b[j] > b[ib]) ib = (int)j;
            }
            assert_int_equal(ia, ib);
        }
    free(logits);
    free(ref);
    return d;
}

static void load(Model *m, const char *rel) {
    char err[FTK_ERR_LEN];
    if (model_load(m, shared_path(rel), NULL, err)) fail_msg("%s", err);
}

// stories260K: the 5-token prompt and the 257-token greedy sequence (positions 0..256).
static void check_stories(const char *rel, double tol) {
    Model m;
    load(&m, rel);
    double d1 = compare(&m, NULL, ONCE, 5, "models/stories260K/ref/logits_once_upon_a_time.npy", 0, 1);
    int n;
    int *seq = json_ints(shared_path("models/stories260K/ref/logits_once_upon_a_time.json"), "greedy_generation.tokens", &n);
    assert_int_equal(n, 257);
    double d2 = compare(&m, NULL, seq, n, "models/stories260K/ref/logits_once_upon_a_time_greedy_seq.npy", 0, 1);
    fprintf(stderr, "%s: max abs diff %.3g (5 tokens), %.3g (257 tokens)\n", rel, d1, d2);
    assert_true(d1 <= tol && d2 <= tol);
    free(seq);
    model_free(&m);
}

static void test_stories_llama2c(void **state) { (void)state; check_stories("models/stories260K/stories260K.bin", 1e-4); }
static void test_stories_hf(void **state) { (void)state; check_stories("models/stories260K-hf", 1e-4); }
static void test_stories_gguf_f32(void **state) { (void)state; check_stories("models/stories260K-gguf/stories260K-f32.gguf", 1e-4); }

static void test_stories_gguf_quantized(void **state) {
    (void)state;
    Model m;
    load(&m, "models/stories260K-gguf/stories260K-f16.gguf");
    double d = compare(&m, NULL, ONCE, 5, "models/stories260K-gguf/ref/logits_once_upon_a_time_f16.npy", 0, 1);
    fprintf(stderr, "stories260K F16 gguf vs llama.cpp: %.3g\n", d);
    assert_true(d <= 5e-2);
    model_free(&m);
    load(&m, "models/stories260K-gguf/stories260K-q8_0.gguf");
    d = compare(&m, NULL, ONCE, 5, "models/stories260K-gguf/ref/logits_once_upon_a_time_q8_0.npy", 0, 1);
    fprintf(stderr, "stories260K Q8_0 gguf vs llama.cpp: %.3g\n", d);
    assert_true(d <= 0.5);
    model_free(&m);
}

static void check_fixture(const char *model_rel, const char *ref_dir_rel, const char *ref_npy_rel, double tol) {
    Model m;
    load(&m, model_rel);
    char p[512];
    snprintf(p, sizeof p, "%s/ref.json", ref_dir_rel);
    int n;
    int *ids = json_ints(shared_path(p), "ids", &n);
    double d = compare(&m, NULL, ids, n, ref_npy_rel, 0, 1);
    fprintf(stderr, "%s vs %s: max abs diff %.3g\n", model_rel, ref_npy_rel, d);
    assert_true(d <= tol);
    free(ids);
    model_free(&m);
}

static void test_tiny_gpt2(void **state) {
    (void)state;
    check_fixture("models/tiny-gpt2-hf", "models/tiny-gpt2-hf/ref", "models/tiny-gpt2-hf/ref/logits.npy", 1e-4);
}

static void test_tiny_gpt2_gguf(void **state) {
    (void)state;
    // our GELU is exact tanh, so the GGUF copy matches transformers; llama.cpp's fp16 GELU table is 0.006 off
    check_fixture("models/tiny-gpt2-hf/tiny-gpt2.gguf", "models/tiny-gpt2-hf/ref", "models/tiny-gpt2-hf/ref/logits.npy", 1e-4);
    check_fixture("models/tiny-gpt2-hf/tiny-gpt2.gguf", "models/tiny-gpt2-hf/ref",
                  "models/tiny-gpt2-hf/ref/llamacpp_logits.npy", 2e-2);
}

static void test_tiny_llama(void **state) {
    (void)state;
    check_fixture("models/tiny-llama-hf", "models/tiny-llama-hf/ref", "models/tiny-llama-hf/ref/logits.npy", 1e-4);
    check_fixture("models/tiny-llama-hf/tiny-llama.gguf", "models/tiny-llama-hf/ref",
                  "models/tiny-llama-hf/ref/llamacpp_logits.npy", 1e-4);
}

static void test_tiny_llama_bf16_sharded(void **state) {
    (void)state;
    check_fixture("models/tiny-llama-hf-bf16-sharded", "models/tiny-llama-hf-bf16-sharded/ref",
                  "models/tiny-llama-hf-bf16-sharded/ref/logits.npy", 1e-4);
}

// Reads a float tensor of the adapter file into a malloc'ed buffer, checking its shape.
static float *read_tensor(const StFile *f, const char *name, int d0, int d1) {
    char err[FTK_ERR_LEN];
    const StTensor *t = st_find(f, name);
    if (!t) fail_msg("%s: no tensor %s", f->path, name);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], d0);
    assert_int_equal(t->shape[1], d1);
    float *out = malloc(t->numel * sizeof(float));
    if (st_read_f32(f, t, out, t->numel, err)) fail_msg("%s", err);
    return out;
}

static void test_tiny_llama_peft_lora(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    Model m;
    load(&m, "models/tiny-llama-hf");
    StFile f;
    if (st_open(&f, shared_path("models/tiny-llama-hf/peft-lora/adapter_model.safetensors"), err)) fail_msg("%s", err);
    const int L = m.cfg.n_layers, C = m.cfg.dim, qd = model_q_dim(&m.cfg), kvd = model_kv_dim(&m.cfg), r = 4;
    LoraHook *hooks = calloc((size_t)L * LSLOT_COUNT, sizeof(LoraHook));
    for (int l = 0; l < L; l++) {
        char na[256], nb[256];
        const char *proj[2] = {"q_proj", "v_proj"};
        for (int k = 0; k < 2; k++) {
            snprintf(na, sizeof na, "base_model.model.model.layers.%d.self_attn.%s.lora_A.weight", l, proj[k]);
            snprintf(nb, sizeof nb, "base_model.model.model.layers.%d.self_attn.%s.lora_B.weight", l, proj[k]);
            const int out = k == 0 ? qd : kvd;
            LoraHook *h = &hooks[l * LSLOT_COUNT + (k == 0 ? LSLOT_Q : LSLOT_V)];
            *h = (LoraHook){r, C, out, k == 0 ? 0 : qd + kvd, 8.0f / r, 0.0f, read_tensor(&f, na, r, C),
                            read_tensor(&f, nb, out, r), NULL, NULL};
        }
    }
    st_close(&f);
    ModelAdapters ad = {hooks, 0, NULL, NULL, 0};
    int n;
    int *ids = json_ints(shared_path("models/tiny-llama-hf/peft-lora/ref/ref.json"), "ids", &n);
    double d = compare(&m, &ad, ids, n, "models/tiny-llama-hf/peft-lora/ref/logits.npy", 0, 1);
    fprintf(stderr, "tiny-llama + PEFT LoRA: max abs diff %.3g\n", d);
    assert_true(d <= 1e-4);
    // disabled adapters = the base model
    ad.disabled = 1;
    d = compare(&m, &ad, ids, n, "models/tiny-llama-hf/ref/logits.npy", 0, 0);
    assert_true(d <= 1e-4);
    for (int i = 0; i < L * LSLOT_COUNT; i++) {
        free((void *)hooks[i].A);
        free((void *)hooks[i].B);
    }
    free(hooks);
    free(ids);
    model_free(&m);
}

static void test_tiny_llama_peft_prompt(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    Model m;
    load(&m, "models/tiny-llama-hf");
    StFile f;
    if (st_open(&f, shared_path("models/tiny-llama-hf/peft-prompt/adapter_model.safetensors"), err)) fail_msg("%s", err);
    float *prompt = read_tensor(&f, "prompt_embeddings", 5, m.cfg.dim);
    st_close(&f);
    ModelAdapters ad = {NULL, 5, prompt, NULL, 0};
    int n;
    int *ids = json_ints(shared_path("models/tiny-llama-hf/peft-prompt/ref/ref.json"), "ids", &n);
    double d1 = compare(&m, &ad, ids, n, "models/tiny-llama-hf/peft-prompt/ref/logits.npy", 5, 1);
    double d2 = compare(&m, &ad, ids, n, "models/tiny-llama-hf/peft-prompt/ref/logits_with_virtual.npy", 0, 1);
    fprintf(stderr, "tiny-llama + PEFT prompt: max abs diff %.3g (real rows), %.3g (all rows)\n", d1, d2);
    assert_true(d1 <= 1e-4 && d2 <= 1e-4);
    free(prompt);
    free(ids);
    model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories_llama2c),
        cmocka_unit_test(test_stories_hf),
        cmocka_unit_test(test_stories_gguf_f32),
        cmocka_unit_test(test_stories_gguf_quantized),
        cmocka_unit_test(test_tiny_gpt2),
        cmocka_unit_test(test_tiny_gpt2_gguf),
        cmocka_unit_test(test_tiny_llama),
        cmocka_unit_test(test_tiny_llama_bf16_sharded),
        cmocka_unit_test(test_tiny_llama_peft_lora),
        cmocka_unit_test(test_tiny_llama_peft_prompt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
