// test_transformer.c — behaviour of model_forward/backward and the LM head on synthetic models:
// batch independence, packing (segments + restarted positions) equal to separate runs, training
// and inference forwards agree, adapters that are disabled or zero change nothing, LM head chunking,
// LoRA ranks beyond the scratch's one-pass size, and bad inputs.
#include "tests/testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/common.h"
#include "model/synthetic.h"
#include "model/transformer.h"

static ModelConfig cfg_of(Arch arch) {
    ModelConfig c = {0};
    c.arch = arch;
    c.dim = 16; c.n_layers = 2; c.n_heads = 4; c.n_kv_heads = arch == ARCH_LLAMA ? 2 : 4; c.head_dim = 4;
    c.ffn_dim = 24; c.vocab_size = 37; c.max_seq_len = 300; c.norm_eps = 1e-5f; c.rope_theta = 10000.0f;
    c.tied_head = arch == ARCH_GPT2; c.bos_id = 1; c.eos_id = 2;
    return c;
}

static void make_model(Model *m, Arch arch) {
    char err[FTK_ERR_LEN];
    ModelConfig c = cfg_of(arch);
    assert_int_equal(model_init_synthetic(m, &c, 7 + arch, err), 0);
}

// final hidden (T, C) of one sequence (with adapters ad), malloc'ed
static float *hidden_of(const Model *m, const ModelAdapters *ad, const int *tokens, int Tt, const int *pos, int training) {
    char err[FTK_ERR_LEN];
    const int nv = ad && !ad->disabled ? ad->n_virtual : 0, C = m->cfg.dim;
    RunState *rs;
    assert_int_equal(runstate_create(&rs, m, 1, nv + Tt, training, err), 0);
    if (model_forward(m, ad, rs, tokens, 1, Tt, pos, NULL, NULL, err)) fail_msg("%s", err);
    float *h = malloc((size_t)(nv + Tt) * C * sizeof(float));
    memcpy(h, runstate_final_hidden(rs), (size_t)(nv + Tt) * C * sizeof(float));
    runstate_free(rs);
    return h;
}

static void run_batch_and_packing(Arch arch, int nv) {
    char err[FTK_ERR_LEN];
    Model m;
    make_model(&m, arch);
    const int C = m.cfg.dim;
    uint64_t rng = 3;
    float prompt[3 * 16];
    for (int i = 0; i < 3 * 16; i++) prompt[i] = 0.5f * ftk_rand_normal(&rng);
    ModelAdapters ad = {NULL, nv, prompt, NULL, 0};
    const ModelAdapters *pad = nv ? &ad : NULL;
    // batch of 3 equals each alone
    const int B = 3, Tt = 7, T = nv + Tt;
    int toks[21];
    for (int i = 0; i < 21; i++) toks[i] = (int)(ftk_rand_u32(&rng) % 37);
    RunState *rs;
    assert_int_equal(runstate_create(&rs, &m, B, T, 0, err), 0);
    assert_int_equal(model_forward(&m, pad, rs, toks, B, Tt, NULL, NULL, NULL, err), 0);
    for (int b = 0; b < B; b++) {
        float *h = hidden_of(&m, pad, toks + b * Tt, Tt, NULL, 0);
        assert_true(max_abs_diff(h, runstate_final_hidden(rs) + (size_t)b * T * C, (size_t)T * C) < 1e-5);
        free(h);
    }
    // packing: segments [0,3) [3,7) of sequence 0 with restarted positions = two separate sequences
    const int seg[7] = {0, 0, 0, 5, 5, 5, 5}, pos[7] = {0, 1, 2, 0, 1, 2, 3};
    assert_int_equal(model_forward(&m, pad, rs, toks, 1, Tt, pos, seg, NULL, err), 0);
    const float *packed = runstate_final_hidden(rs);
    float *h0 = hidden_of(&m, pad, toks, 3, NULL, 0), *h1 = hidden_of(&m, pad, toks + 3, 4, NULL, 0);
    assert_true(max_abs_diff(h0, packed, (size_t)(nv + 3) * C) < 1e-5);
    assert_true(max_abs_diff(h1 + (size_t)nv * C, packed + (size_t)(nv + 3) * C, (size_t)4 * C) < 1e-5);
    // without the segment mask the second segment differs (the mask matters)
    assert_int_equal(model_forward(&m, pad, rs, toks, 1, Tt, pos, NULL, NULL, err), 0);
    assert_true(max_abs_diff(h1 + (size_t)nv * C, runstate_final_hidden(rs) + (size_t)(nv + 3) * C, (size_t)4 * C) > 1e-3);
    free(h0); free(h1);
    runstate_free(rs);
    model_free(&m);
}

static void test_batch_and_packing_llama(void **state) { (void)state; run_batch_and_packing(ARCH_LLAMA, 0); run_batch_and_packing(ARCH_LLAMA, 3); }
static void test_batch_and_packing_gpt2(void **state) { (void)state; run_batch_and_packing(ARCH_GPT2, 0); run_batch_and_packing(ARCH_GPT2, 2); }

static void test_training_equals_inference_and_logits_all(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    for (int arch = 0; arch < 2; arch++) {
        Model m;
        make_model(&m, (Arch)arch);
        const int toks[9] = {1, 4, 8, 15, 16, 23, 36, 0, 2};
        float *a = hidden_of(&m, NULL, toks, 9, NULL, 0), *b = hidden_of(&m, NULL, toks, 9, NULL, 1);
        assert_memory_equal(a, b, (size_t)9 * 16 * sizeof(float));
        float *logits, *ref = malloc((size_t)9 * 37 * sizeof(float));
        assert_int_equal(model_logits_all(&m, NULL, toks, 9, &logits, err), 0);
        lm_head_logits(&m, a, 9, ref);
        assert_true(max_abs_diff(logits, ref, 9 * 37) < 1e-6);
        // the inference arena keeps one layer; the training arena keeps all
        RunState *ri, *rt;
        assert_int_equal(runstate_create(&ri, &m, 4, 64, 0, err), 0);
        assert_int_equal(runstate_create(&rt, &m, 4, 64, 1, err), 0);
        assert_true(runstate_bytes(ri) < runstate_bytes(rt));
        runstate_free(ri);
        runstate_free(rt);
        free(a); free(b); free(logits); free(ref);
        model_free(&m);
    }
}

static void test_neutral_adapters(void **state) {
    (void)state;
    Model m;
    make_model(&m, ARCH_LLAMA);
    const int toks[6] = {3, 1, 4, 1, 5, 9};
    float *base = hidden_of(&m, NULL, toks, 6, NULL, 0);
    // LoRA with B = 0 on q: no change; disabled adapters with a real B and a prompt: no change
    LoraHook hooks[2 * LSLOT_COUNT];
    memset(hooks, 0, sizeof hooks);
    float A[2 * 16], B[16 * 2], prompt[2 * 16];
    uint64_t rng = 4;
    for (int i = 0; i < 32; i++) { A[i] = ftk_rand_normal(&rng); B[i] = 0.0f; prompt[i] = ftk_rand_normal(&rng); }
    hooks[LSLOT_Q] = (LoraHook){2, 16, 16, 0, 2.0f, 0.0f, A, B, NULL, NULL};
    ModelAdapters ad = {hooks, 0, NULL, NULL, 0};
    float *h = hidden_of(&m, &ad, toks, 6, NULL, 0);
    assert_memory_equal(h, base, 6 * 16 * sizeof(float));
    free(h);
    for (int i = 0; i < 32; i++) B[i] = ftk_rand_normal(&rng);
    h = hidden_of(&m, &ad, toks, 6, NULL, 0);
    assert_true(max_abs_diff(h, base, 96) > 1e-3);
    free(h);
    ad.n_virtual = 2;
    ad.prompt = prompt;
    ad.disabled = 1;
    h = hidden_of(&m, &ad, toks, 6, NULL, 0);
    assert_memory_equal(h, base, 6 * 16 * sizeof(float));
    free(h);
    free(base);
    model_free(&m);
}

static float weight_fn(void *ctx, int i, float logp) {
    (void)logp;
    return ((const float *)ctx)[i];
}

// More rows than one LM-head chunk: logp/entropy/d_hidden agree with explicit formulas.
static void test_lm_head_chunks(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    Model m;
    make_model(&m, ARCH_GPT2);
    const int B = 2, T = 160, N = B * T, C = 16, V = 37;
    int *toks = malloc((size_t)N * sizeof(int)), *rows = malloc(300 * sizeof(int)), *tg = malloc(300 * sizeof(int));
    float *w = malloc(300 * sizeof(float)), *logp = malloc(300 * sizeof(float)), *ent = malloc(300 * sizeof(float));
    uint64_t rng = 9;
    for (int i = 0; i < N; i++) toks[i] = (int)(ftk_rand_u32(&rng) % V);
    for (int i = 0; i < 300; i++) {
        rows[i] = (i * 7) % N;
        tg[i] = (int)(ftk_rand_u32(&rng) % V);
        w[i] = ftk_rand_normal(&rng);
    }
    RunState *rs;
    assert_int_equal(runstate_create(&rs, &m, B, T, 1, err), 0);
    assert_int_equal(model_forward(&m, NULL, rs, toks, B, T, NULL, NULL, NULL, err), 0);
    assert_int_equal(lm_head_logprobs(&m, rs, rows, tg, 300, logp, ent, weight_fn, w, err), 0);
    float *logits = malloc((size_t)N * V * sizeof(float)), *dh = calloc((size_t)N * C, sizeof(float));
    lm_head_logits(&m, runstate_final_hidden(rs), N, logits);
    for (int i = 0; i < 300; i++) {
        const float *z = logits + (size_t)rows[i] * V;
        double mx = z[0], s = 0, pz = 0;
        for (int j = 1; j < V; j++) mx = fmax(mx, z[j]);
        for (int j = 0; j < V; j++) { s += exp(z[j] - mx); pz += exp(z[j] - mx) * (z[j] - mx); }
        assert_true(fabs(logp[i] - (z[tg[i]] - mx - log(s))) < 1e-5);
        assert_true(fabs(ent[i] - (log(s) - pz / s)) < 1e-5);
        // dh[row] += w (e_t - softmax) @ lm_head
        for (int j = 0; j < V; j++) {
            double g = w[i] * ((j == tg[i]) - exp(z[j] - mx) / s);
            for (int k = 0; k < C; k++) dh[(size_t)rows[i] * C + k] += (float)(g * m.w.lm_head[(size_t)j * C + k]);
        }
    }
    assert_true(max_abs_diff(dh, runstate_d_final_hidden(rs), (size_t)N * C) < 1e-4);
    runstate_free(rs);
    free(toks); free(rows); free(tg); free(w); free(logp); free(ent); free(logits); free(dh);
    model_free(&m);
}

// A rank-80 LoRA (processed in row chunks) equals two rank-40 LoRAs on the same block, forward and
// gradients.
static void test_lora_large_rank(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    Model m;
    make_model(&m, ARCH_LLAMA);
    const int R = 80, h = 40, C = 16, qd = 16, Tt = 30;
    uint64_t rng = 12;
    float *A = malloc((size_t)R * C * 4), *Bm = malloc((size_t)qd * R * 4);
    float *A1 = malloc((size_t)h * C * 4), *A2 = malloc((size_t)h * C * 4), *B1 = malloc((size_t)qd * h * 4), *B2 = malloc((size_t)qd * h * 4);
    for (int i = 0; i < R * C; i++) A[i] = 0.1f * ftk_rand_normal(&rng);
    for (int i = 0; i < qd * R; i++) Bm[i] = 0.1f * ftk_rand_normal(&rng);
    memcpy(A1, A, (size_t)h * C * 4);
    memcpy(A2, A + (size_t)h * C, (size_t)h * C * 4);
    for (int o = 0; o < qd; o++)
        for (int k = 0; k < h; k++) { B1[o * h + k] = Bm[o * R + k]; B2[o * h + k] = Bm[o * R + h + k]; }
    LoraHook big[2 * LSLOT_COUNT], two[2 * LSLOT_COUNT];
    memset(big, 0, sizeof big);
    memset(two, 0, sizeof two);
    float *dA = calloc((size_t)R * C, 4), *dB = calloc((size_t)qd * R, 4);
    float *dA1 = calloc((size_t)h * C, 4), *dA2 = calloc((size_t)h * C, 4), *dB1 = calloc((size_t)qd * h, 4), *dB2 = calloc((size_t)qd * h, 4);
    big[LSLOT_COUNT + LSLOT_Q] = (LoraHook){R, C, qd, 0, 0.5f, 0.0f, A, Bm, dA, dB};
    two[LSLOT_COUNT + LSLOT_Q] = (LoraHook){h, C, qd, 0, 0.5f, 0.0f, A1, B1, dA1, dB1};
    two[LSLOT_COUNT + LSLOT_QKV] = (LoraHook){h, C, qd, 0, 0.5f, 0.0f, A2, B2, dA2, dB2};
    ModelAdapters ab = {big, 0, NULL, NULL, 0}, at = {two, 0, NULL, NULL, 0};
    int toks[30], rows[29], tg[29];
    for (int i = 0; i < Tt; i++) toks[i] = (int)(ftk_rand_u32(&rng) % 37);
    for (int i = 0; i < Tt - 1; i++) { rows[i] = i; tg[i] = toks[i + 1]; }
    float wts[29], logp[29];
    for (int i = 0; i < 29; i++) wts[i] = -1.0f / 29;
    RunState *rs;
    assert_int_equal(runstate_create(&rs, &m, 1, Tt, 1, err), 0);
    float *hb = malloc((size_t)Tt * C * 4);
    assert_int_equal(model_forward(&m, &ab, rs, toks, 1, Tt, NULL, NULL, NULL, err), 0);
    memcpy(hb, runstate_final_hidden(rs), (size_t)Tt * C * 4);
    assert_int_equal(lm_head_logprobs(&m, rs, rows, tg, 29, logp, NULL, weight_fn, wts, err), 0);
    assert_int_equal(model_backward(&m, &ab, rs, err), 0);
    assert_int_equal(model_forward(&m, &at, rs, toks, 1, Tt, NULL, NULL, NULL, err), 0);
    assert_true(max_abs_diff(hb, runstate_final_hidden(rs), (size_t)Tt * C) < 1e-5);
    assert_int_equal(lm_head_logprobs(&m, rs, rows, tg, 29, logp, NULL, weight_fn, wts, err), 0);
    assert_int_equal(model_backward(&m, &at, rs, err), 0);
    assert_true(max_abs_diff(dA, dA1, (size_t)h * C) < 1e-6);
    assert_true(max_abs_diff(dA + (size_t)h * C, dA2, (size_t)h * C) < 1e-6);
    double gmax = 0;
    for (int o = 0; o < qd; o++)
        for (int k = 0; k < h; k++) {
            assert_true(fabsf(dB[o * R + k] - dB1[o * h + k]) < 1e-6f);
            assert_true(fabsf(dB[o * R + h + k] - dB2[o * h + k]) < 1e-6f);
            gmax = fmax(gmax, fabsf(dB1[o * h + k]));
        }
    assert_true(gmax > 1e-4);
    runstate_free(rs);
    free(A); free(Bm); free(A1); free(A2); free(B1); free(B2); free(dA); free(dB); free(dA1); free(dA2); free(dB1); free(dB2); free(hb);
    model_free(&m);
}

static void test_bad_inputs(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    Model m;
    make_model(&m, ARCH_GPT2);
    RunState *rs, *ri;
    assert_int_not_equal(runstate_create(&rs, &m, 1, 301, 1, err), 0);   // beyond gpt2's positions
    assert_int_not_equal(runstate_create(&rs, &m, 0, 8, 1, err), 0);
    assert_int_equal(runstate_create(&rs, &m, 2, 8, 1, err), 0);
    assert_int_equal(runstate_create(&ri, &m, 2, 8, 0, err), 0);
    int toks[16] = {0};
    assert_int_not_equal(model_backward(&m, NULL, rs, err), 0);   // no forward yet
    toks[3] = 37;
    assert_int_not_equal(model_forward(&m, NULL, rs, toks, 2, 8, NULL, NULL, NULL, err), 0);
    assert_non_null(strstr(err, "37"));
    toks[3] = -1;
    assert_int_not_equal(model_forward(&m, NULL, rs, toks, 2, 8, NULL, NULL, NULL, err), 0);
    toks[3] = 0;
    assert_int_not_equal(model_forward(&m, NULL, rs, toks, 3, 8, NULL, NULL, NULL, err), 0);   // B > B_max
    assert_int_not_equal(model_forward(&m, NULL, rs, toks, 1, 9, NULL, NULL, NULL, err), 0);   // T > T_max
    int pos[8] = {0, 1, 2, -1, 0, 1, 2, 3};
    assert_int_not_equal(model_forward(&m, NULL, rs, toks, 1, 8, pos, NULL, NULL, err), 0);
    pos[3] = 300;
    assert_int_not_equal(model_forward(&m, NULL, rs, toks, 1, 8, pos, NULL, NULL, err), 0);
    // adapters: gate does not exist on gpt2; a wrong shape names the layer and slot
    LoraHook hooks[2 * LSLOT_COUNT];
    memset(hooks, 0, sizeof hooks);
    float A[64] = {0}, B[64] = {0};
    hooks[LSLOT_COUNT + LSLOT_GATE] = (LoraHook){2, 16, 24, 0, 1.0f, 0.0f, A, B, NULL, NULL};
    ModelAdapters ad = {hooks, 0, NULL, NULL, 0};
    assert_int_not_equal(model_forward(&m, &ad, rs, toks, 2, 8, NULL, NULL, NULL, err), 0);
    assert_non_null(strstr(err, "gate"));
    hooks[LSLOT_COUNT + LSLOT_GATE].r = 0;
    hooks[LSLOT_V] = (LoraHook){2, 16, 16, 40, 1.0f, 0.0f, A, B, NULL, NULL};   // 40 + 16 > 48
    assert_int_not_equal(model_forward(&m, &ad, rs, toks, 2, 8, NULL, NULL, NULL, err), 0);
    assert_non_null(strstr(err, "layer 0"));
    hooks[LSLOT_V].out_offset = 32;
    hooks[LSLOT_V].dropout = 1.0f;
    assert_int_not_equal(model_forward(&m, &ad, rs, toks, 2, 8, NULL, NULL, NULL, err), 0);
    hooks[LSLOT_V].dropout = 0.0f;
    assert_int_equal(model_forward(&m, &ad, rs, toks, 2, 8, NULL, NULL, NULL, err), 0);
    ModelAdapters noprompt = {NULL, 2, NULL, NULL, 0};
    assert_int_not_equal(model_forward(&m, &noprompt, rs, toks, 2, 6, NULL, NULL, NULL, err), 0);
    assert_int_not_equal(model_backward(&m, &ad, rs, err), 0);   // a failed forward leaves nothing to differentiate
    // inference state: no backward, no head gradients
    assert_int_equal(model_forward(&m, NULL, ri, toks, 2, 8, NULL, NULL, NULL, err), 0);
    assert_int_not_equal(model_backward(&m, NULL, ri, err), 0);
    int row = 0, tgt = 0;
    float lp, wt = 1.0f;
    assert_int_not_equal(lm_head_logprobs(&m, ri, &row, &tgt, 1, &lp, NULL, weight_fn, &wt, err), 0);
    assert_int_equal(lm_head_logprobs(&m, ri, &row, &tgt, 1, &lp, NULL, NULL, NULL, err), 0);
    // a run state of another model
    Model other;
    make_model(&other, ARCH_LLAMA);
    assert_int_not_equal(model_forward(&other, NULL, rs, toks, 2, 8, NULL, NULL, NULL, err), 0);
    model_free(&other);
    runstate_free(rs);
    runstate_free(ri);
    model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_and_packing_llama),
        cmocka_unit_test(test_batch_and_packing_gpt2),
        cmocka_unit_test(test_training_equals_inference_and_logits_all),
        cmocka_unit_test(test_neutral_adapters),
        cmocka_unit_test(test_lm_head_chunks),
        cmocka_unit_test(test_lora_large_rank),
        cmocka_unit_test(test_bad_inputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
