// test_generate.c — KV-cache generation and sampling: stories260K greedy text equals llama2.c's
// (shared/models/stories260K/ref), cache logits equal full-recompute logits (real and synthetic
// models, with LoRA on every slot and a soft prompt), batched decode equals one-by-one, stop rules,
// log-probs, and the sampler's distribution, top-k, top-p and determinism.
#include "tests/testutil.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/common.h"
#include "model/generate.h"
#include "model/model.h"
#include "model/synthetic.h"
#include "model/transformer.h"

static const int ONCE[5] = {1, 403, 407, 261, 378};

static int *greedy_ref(int *n) {
    char *text, err[FTK_ERR_LEN];
    size_t len;
    assert_int_equal(ftk_read_file(shared_path("models/stories260K/ref/logits_once_upon_a_time.json"), &text, &len, err), 0);
    cJSON *root = cJSON_Parse(text);
    free(text);
    cJSON *arr = cJSON_GetObjectItem(cJSON_GetObjectItem(root, "greedy_generation"), "tokens");
    assert_non_null(arr);
    *n = cJSON_GetArraySize(arr);
    int *out = malloc((size_t)*n * sizeof(int));
    for (int i = 0; i < *n; i++) out[i] = cJSON_GetArrayItem(arr, i)->valueint;
    cJSON_Delete(root);
    return out;
}

static void load_stories(Model *m) {
    char err[FTK_ERR_LEN];
    if (model_load(m, shared_path("models/stories260K/stories260K.bin"), NULL, err)) fail_msg("%s", err);
}

// generate() for one prompt; returns the new tokens (malloc'ed), their count in *n_out.
static int *gen1(const Model *m, const ModelAdapters *ad, const int *prompt, int plen, GenParams p, uint64_t seed,
                 int *n_out, float **logp) {
    char err[FTK_ERR_LEN];
    const int *prompts[1] = {prompt};
    int *toks[1], lens[1];
    float *lps[1];
    uint64_t rng = seed;
    if (generate(m, ad, prompts, &plen, 1, &p, &rng, toks, lens, logp ? lps : NULL, err)) fail_msg("%s", err);
    *n_out = lens[0];
    if (logp) *logp = lps[0];
    return toks[0];
}

static void test_stories_greedy_matches_llama2c(void **state) {
    (void)state;
    Model m;
    load_stories(&m);
    int n_ref;
    int *ref = greedy_ref(&n_ref);
    assert_int_equal(n_ref, 257);
    GenParams p = gen_params_default();
    p.max_new_tokens = 252;   // run.c -n 256: positions 0..255 fed, 257 tokens in all
    int n;
    float *logp;
    int *out = gen1(&m, NULL, ONCE, 5, p, 1, &n, &logp);
    assert_int_equal(n, 252);
    for (int i = 0; i < n; i++) assert_int_equal(out[i], ref[5 + i]);
    // log-probs are log_softmax of the raw logits of the full-recompute forward
    char err[FTK_ERR_LEN];
    float *logits;
    assert_int_equal(model_logits_all(&m, NULL, ref, 256, &logits, err), 0);
    for (int i = 0; i < n; i += 17) {
        const float *z = logits + (size_t)(4 + i) * 512;
        double mx = z[0], s = 0;
        for (int j = 1; j < 512; j++) mx = fmax(mx, z[j]);
        for (int j = 0; j < 512; j++) s += exp(z[j] - mx);
        assert_true(fabs(logp[i] - (z[out[i]] - mx - log(s))) < 1e-4);
    }
    free(logits);
    // top-k = 1 with a temperature is greedy too
    p.temperature = 0.7f;
    p.top_k = 1;
    int n2;
    int *out2 = gen1(&m, NULL, ONCE, 5, p, 99, &n2, NULL);
    assert_int_equal(n2, 252);
    assert_memory_equal(out, out2, 252 * sizeof(int));
    free(out); free(out2); free(logp); free(ref);
    model_free(&m);
}

// KV cache: prefill 5, prefill 100 more (multi-row continuation), then decode one at a time; every
// step's logits equal the rows of one full forward.
static void test_cache_equals_full_recompute(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    Model m;
    load_stories(&m);
    int n;
    int *seq = greedy_ref(&n);
    float *full;
    assert_int_equal(model_logits_all(&m, NULL, seq, n, &full, err), 0);
    KVCache *kv;
    assert_int_equal(kvcache_create(&kv, &m, 2, 512, err), 0);
    float step[512];
    double worst = 0;
    assert_int_equal(kvcache_prefill(&m, NULL, kv, 1, seq, 5, step, err), 0);
    worst = fmax(worst, max_abs_diff(step, full + 4 * 512, 512));
    assert_int_equal(kvcache_prefill(&m, NULL, kv, 1, seq + 5, 100, step, err), 0);
    worst = fmax(worst, max_abs_diff(step, full + 104 * 512, 512));
    assert_int_equal(kvcache_len(kv, 1), 105);
    assert_int_equal(kvcache_len(kv, 0), 0);
    for (int t = 105; t < n; t++) {
        int s = 1;
        assert_int_equal(kvcache_decode(&m, NULL, kv, &s, &seq[t], 1, step, err), 0);
        worst = fmax(worst, max_abs_diff(step, full + (size_t)t * 512, 512));
    }
    fprintf(stderr, "kv-cache vs full recompute over 257 positions: max abs diff %.3g\n", worst);
    assert_true(worst <= 1e-4);
    // a sequence cannot appear twice in one decode step
    int s2[2] = {0, 0}, t2[2] = {1, 1};
    assert_int_not_equal(kvcache_decode(&m, NULL, kv, s2, t2, 2, NULL, err), 0);
    kvcache_reset(kv);
    assert_int_equal(kvcache_len(kv, 1), 0);
    kvcache_free(kv);
    free(full); free(seq);
    model_free(&m);
}

// Three prompts of different lengths decoded as one batch equal the same prompts decoded alone.
static void test_batched_decode_equals_single(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    Model m;
    load_stories(&m);
    const int p0[5] = {1, 403, 407, 261, 378}, p1[2] = {1, 403}, p2[9] = {1, 403, 407, 261, 378, 432, 383, 286, 261};
    const int *prompts[3] = {p0, p1, p2};
    int plens[3] = {5, 2, 9};
    GenParams p = gen_params_default();
    p.max_new_tokens = 40;
    int *toks[3], lens[3];
    float *lps[3];
    uint64_t rng = 5;
    assert_int_equal(generate(&m, NULL, prompts, plens, 3, &p, &rng, toks, lens, lps, err), 0);
    for (int i = 0; i < 3; i++) {
        int n;
        float *lp;
        int *one = gen1(&m, NULL, prompts[i], plens[i], p, 5, &n, &lp);
        assert_int_equal(n, lens[i]);
        assert_memory_equal(one, toks[i], (size_t)n * sizeof(int));
        assert_true(max_abs_diff(lp, lps[i], (size_t)n) < 1e-4);
        free(one); free(lp); free(toks[i]); free(lps[i]);
    }
    // the logits of a batched decode step equal single-sequence steps
    KVCache *kv, *kv1;
    assert_int_equal(kvcache_create(&kv, &m, 3, 64, err), 0);
    assert_int_equal(kvcache_create(&kv1, &m, 1, 64, err), 0);
    for (int i = 0; i < 3; i++) assert_int_equal(kvcache_prefill(&m, NULL, kv, i, prompts[i], plens[i], NULL, err), 0);
    int seqs[3] = {2, 0, 1}, next[3] = {13, 300, 77};
    float *batch = malloc(3 * 512 * sizeof(float)), single[512];
    assert_int_equal(kvcache_decode(&m, NULL, kv, seqs, next, 3, batch, err), 0);
    for (int r = 0; r < 3; r++) {
        const int i = seqs[r], s = 0;
        kvcache_reset(kv1);
        assert_int_equal(kvcache_prefill(&m, NULL, kv1, 0, prompts[i], plens[i], NULL, err), 0);
        assert_int_equal(kvcache_decode(&m, NULL, kv1, &s, &next[r], 1, single, err), 0);
        assert_true(max_abs_diff(batch + r * 512, single, 512) < 1e-4);
        assert_int_equal(kvcache_len(kv, i), plens[i] + 1);
    }
    free(batch);
    kvcache_free(kv);
    kvcache_free(kv1);
    model_free(&m);
}

// Synthetic llama / gpt2 with LoRA on every slot and a soft prompt: the KV path (prefill + decode)
// gives the logits of the full forward through the same adapters.
static void run_synthetic_cache(Arch arch) {
    char err[FTK_ERR_LEN];
    ModelConfig c = {0};
    c.arch = arch;
    c.dim = 32; c.n_layers = 2; c.n_heads = 4; c.n_kv_heads = arch == ARCH_LLAMA ? 2 : 4; c.head_dim = 8;
    c.ffn_dim = 48; c.vocab_size = 61; c.max_seq_len = 40; c.norm_eps = 1e-5f; c.rope_theta = 10000.0f;
    c.tied_head = arch == ARCH_GPT2; c.bos_id = 1; c.eos_id = 2;
    Model m;
    assert_int_equal(model_init_synthetic(&m, &c, 3, err), 0);
    uint64_t rng = 77;
    LoraHook *hooks = calloc((size_t)c.n_layers * LSLOT_COUNT, sizeof(LoraHook));
    const int qd = model_q_dim(&m.cfg), kvd = model_kv_dim(&m.cfg), F = c.ffn_dim, r = 3;
    for (int l = 0; l < c.n_layers; l++)
        for (int s = 0; s < LSLOT_COUNT; s++) {
            int in = c.dim, out, off = 0;
            if (s == LSLOT_Q) out = qd;
            else if (s == LSLOT_K) { out = kvd; off = qd; }
            else if (s == LSLOT_V) { out = kvd; off = qd + kvd; }
            else if (s == LSLOT_QKV) out = qd + 2 * kvd;
            else if (s == LSLOT_O) { in = qd; out = c.dim; }
            else if (s == LSLOT_GATE) { if (arch == ARCH_GPT2) continue; out = F; }
            else if (s == LSLOT_UP) { out = F; off = arch == ARCH_LLAMA ? F : 0; }
            else { in = F; out = c.dim; }
            float *A = malloc((size_t)r * in * 4), *B = malloc((size_t)out * r * 4);
            for (int i = 0; i < r * in; i++) A[i] = 0.2f * ftk_rand_normal(&rng);
            for (int i = 0; i < out * r; i++) B[i] = 0.2f * ftk_rand_normal(&rng);
            hooks[l * LSLOT_COUNT + s] = (LoraHook){r, in, out, off, 2.0f, 0.1f, A, B, NULL, NULL};
        }
    float prompt[4 * 32];
    for (int i = 0; i < 4 * 32; i++) prompt[i] = 0.3f * ftk_rand_normal(&rng);
    ModelAdapters ad = {hooks, 4, prompt, NULL, 0};
    int toks[20];
    for (int i = 0; i < 20; i++) toks[i] = (int)(ftk_rand_u32(&rng) % 61);
    float *full;
    assert_int_equal(model_logits_all(&m, &ad, toks, 20, &full, err), 0);   // (24, V)
    KVCache *kv;
    assert_int_equal(kvcache_create(&kv, &m, 1, 40, err), 0);
    float step[61];
    assert_int_equal(kvcache_prefill(&m, &ad, kv, 0, toks, 6, step, err), 0);   // 4 virtual + 6 rows
    double worst = max_abs_diff(step, full + 9 * 61, 61);
    for (int t = 6; t < 20; t++) {
        int s = 0;
        assert_int_equal(kvcache_decode(&m, &ad, kv, &s, &toks[t], 1, step, err), 0);
        worst = fmax(worst, max_abs_diff(step, full + (size_t)(4 + t) * 61, 61));
    }
    assert_true(worst <= 1e-4);
    // the adapters change the logits (the check is not vacuous), and disabled = the base model
    float *base;
    ad.disabled = 1;
    assert_int_equal(model_logits_all(&m, &ad, toks, 20, &base, err), 0);
    assert_true(max_abs_diff(base, full + 4 * 61, 20 * 61) > 1e-2);
    kvcache_reset(kv);
    assert_int_equal(kvcache_prefill(&m, &ad, kv, 0, toks, 20, step, err), 0);
    assert_true(max_abs_diff(step, base + 19 * 61, 61) <= 1e-4);
    // stop at max_seq_len: 4 virtual + 5 prompt + new <= 40 + 1
    ad.disabled = 0;
    GenParams p = gen_params_default();
    p.max_new_tokens = 1000;
    p.stop_at_eos = 0;
    int n;
    int *out = gen1(&m, &ad, toks, 5, p, 1, &n, NULL);
    assert_int_equal(n, 40 + 1 - 4 - 5);
    // stop at EOS (included): make the 3rd generated token the EOS id
    m.cfg.eos_id = out[2];
    m.cfg.bos_id = -1;
    p.stop_at_eos = 1;
    int n2;
    int *out2 = gen1(&m, &ad, toks, 5, p, 1, &n2, NULL);
    int first = 0;
    while (out[first] != out[2]) first++;
    assert_int_equal(n2, first + 1);
    assert_memory_equal(out2, out, (size_t)n2 * sizeof(int));
    free(out); free(out2);
    for (int i = 0; i < c.n_layers * LSLOT_COUNT; i++) {
        free((void *)hooks[i].A);
        free((void *)hooks[i].B);
    }
    free(hooks); free(full); free(base);
    kvcache_free(kv);
    model_free(&m);
}

static void test_synthetic_cache_llama(void **state) { (void)state; run_synthetic_cache(ARCH_LLAMA); }
static void test_synthetic_cache_gpt2(void **state) { (void)state; run_synthetic_cache(ARCH_GPT2); }

static void test_sampling_deterministic(void **state) {
    (void)state;
    Model m;
    load_stories(&m);
    GenParams p = gen_params_default();
    p.max_new_tokens = 60;
    p.temperature = 0.9f;
    p.top_k = 40;
    p.top_p = 0.9f;
    int n1, n2, n3;
    int *a = gen1(&m, NULL, ONCE, 5, p, 1234, &n1, NULL);
    int *b = gen1(&m, NULL, ONCE, 5, p, 1234, &n2, NULL);
    int *c = gen1(&m, NULL, ONCE, 5, p, 4321, &n3, NULL);
    assert_int_equal(n1, n2);
    assert_memory_equal(a, b, (size_t)n1 * sizeof(int));
    assert_true(n1 != n3 || memcmp(a, c, (size_t)n1 * sizeof(int)) != 0);
    free(a); free(b); free(c);
    model_free(&m);
}

// Frequencies of sample_token over many draws against the intended distribution.
static void sample_freq(const float *logits, int V, GenParams p, int draws, double *freq) {
    uint64_t rng = 42;
    float z[8];
    for (int i = 0; i < V; i++) freq[i] = 0;
    for (int k = 0; k < draws; k++) {
        memcpy(z, logits, (size_t)V * sizeof(float));
        int id = sample_token(z, V, &p, &rng);
        assert_true(id >= 0 && id < V);
        freq[id] += 1.0 / draws;
    }
}

static void test_sampler(void **state) {
    (void)state;
    // probabilities 0.5, 0.3, 0.15, 0.05
    const float lg[4] = {logf(0.5f), logf(0.3f), logf(0.15f), logf(0.05f)};
    GenParams p = gen_params_default();
    double f[4];
    const int D = 40000;
    p.temperature = 1.0f;
    sample_freq(lg, 4, p, D, f);
    assert_true(fabs(f[0] - 0.5) < 0.015 && fabs(f[1] - 0.3) < 0.015 && fabs(f[2] - 0.15) < 0.01 && fabs(f[3] - 0.05) < 0.006);
    // top-p 0.7: cumulative 0.5, 0.8 -> keep {0, 1}, renormalised 5:3
    p.top_p = 0.7f;
    sample_freq(lg, 4, p, D, f);
    assert_true(f[2] == 0 && f[3] == 0 && fabs(f[0] - 0.625) < 0.015);
    // top-p 0.4: the first token alone exceeds it
    p.top_p = 0.4f;
    sample_freq(lg, 4, p, 2000, f);
    assert_true(f[0] > 0.999);
    // top-k 3, then top-p 0.9 over the renormalised top 3 (0.526, 0.316, 0.158): cum 0.526, 0.842, 1 -> all 3
    p.top_k = 3;
    p.top_p = 0.9f;
    sample_freq(lg, 4, p, D, f);
    assert_true(f[3] == 0 && fabs(f[2] - 0.15 / 0.95) < 0.01);
    // temperature 2 flattens: p ~ sqrt(p)
    p.top_k = 0;
    p.top_p = 1.0f;
    p.temperature = 2.0f;
    sample_freq(lg, 4, p, D, f);
    double zs = sqrt(0.5) + sqrt(0.3) + sqrt(0.15) + sqrt(0.05);
    assert_true(fabs(f[3] - sqrt(0.05) / zs) < 0.01);
    // greedy: argmax, ties to the lowest id, rng untouched
    float tie[4] = {1, 3, 3, 2};
    uint64_t rng = 5;
    p.temperature = 0.0f;
    assert_int_equal(sample_token(tie, 4, &p, &rng), 1);
    assert_true(rng == 5);
    // top-k 1 with ties also picks the lowest id
    float tie2[4] = {1, 3, 3, 2};
    p.temperature = 1.0f;
    p.top_k = 1;
    assert_int_equal(sample_token(tie2, 4, &p, &rng), 1);
}

static void test_generate_bad_input(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    Model m;
    load_stories(&m);
    GenParams p = gen_params_default();
    const int bad[2] = {1, 512}, ok[1] = {1};
    const int *prompts[1] = {bad};
    int plen = 2, *toks[1], lens[1];
    uint64_t rng = 1;
    assert_int_not_equal(generate(&m, NULL, prompts, &plen, 1, &p, &rng, toks, lens, NULL, err), 0);
    assert_non_null(strstr(err, "512"));
    prompts[0] = ok;
    plen = 0;
    assert_int_not_equal(generate(&m, NULL, prompts, &plen, 1, &p, &rng, toks, lens, NULL, err), 0);
    KVCache *kv;
    assert_int_not_equal(kvcache_create(&kv, &m, 1, 513, err), 0);   // beyond max_seq_len
    model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories_greedy_matches_llama2c),
        cmocka_unit_test(test_cache_equals_full_recompute),
        cmocka_unit_test(test_batched_decode_equals_single),
        cmocka_unit_test(test_synthetic_cache_llama),
        cmocka_unit_test(test_synthetic_cache_gpt2),
        cmocka_unit_test(test_sampling_deterministic),
        cmocka_unit_test(test_sampler),
        cmocka_unit_test(test_generate_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
