// test_lora_grad.c — one training step's numbers on the real stories260K (HF layout) with PEFT LoRA
// (r=4, alpha=8) on q_proj/v_proj of all 5 layers and a 3-token soft prompt, under a response-only
// loss, against shared/testvectors/stories260K-lora-grad (PyTorch float64, see its README.md):
// logits (max abs <= 1e-4), loss (<= 1e-5), and every LoRA / prompt gradient
// (max abs diff <= 1e-5 + 1e-4 * max abs of the reference tensor).
#include "tests/testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/common.h"
#include "model/model.h"
#include "model/safetensors.h"
#include "model/transformer.h"

#define NV 3
#define BATCH 2
#define SEQ 24
#define RANK 4

static float *read_f32(const StFile *f, const char *name, size_t numel) {
    char err[FTK_ERR_LEN];
    const StTensor *t = st_find(f, name);
    if (!t) fail_msg("%s: no tensor %s", f->path, name);
    assert_int_equal(t->numel, numel);
    float *out = malloc(numel * sizeof(float));
    if (st_read_f32(f, t, out, numel, err)) fail_msg("%s", err);
    return out;
}

static float neg_inv_n(void *ctx, int i, float logp) {
    (void)i;
    (void)logp;
    return -1.0f / *(int *)ctx;
}

static double worst_grad_diff;   // largest max-abs gradient difference seen

static void check_grad(const char *name, const float *got, const float *ref, size_t n) {
    double mx = 0;
    for (size_t i = 0; i < n; i++) mx = fmax(mx, fabsf(ref[i]));
    double d = max_abs_diff(got, ref, n), tol = 1e-5 + 1e-4 * mx;
    worst_grad_diff = fmax(worst_grad_diff, d);
    if (d > tol) fail_msg("%s: max abs diff %.3g > %.3g (ref max %.3g)", name, d, tol, mx);
}

static void test_stories_lora_prompt_step(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    Model m;
    if (model_load(&m, shared_path("models/stories260K-hf"), NULL, err)) fail_msg("%s", err);
    const ModelConfig *c = &m.cfg;
    const int C = c->dim, L = c->n_layers, V = c->vocab_size, qd = model_q_dim(c), kvd = model_kv_dim(c);
    StFile f;
    if (st_open(&f, shared_path("testvectors/stories260K-lora-grad/lora_grad.safetensors"), err)) fail_msg("%s", err);
    int ids[BATCH * SEQ], mask[BATCH * SEQ];
    const StTensor *t = st_find(&f, "input_ids");
    assert_non_null(t);
    assert_int_equal(st_read_i32(&f, t, ids, BATCH * SEQ, err), 0);
    t = st_find(&f, "loss_mask");
    assert_non_null(t);
    assert_int_equal(st_read_i32(&f, t, mask, BATCH * SEQ, err), 0);

    // hooks: q = rows [0, q_dim) of wqkv, v = rows [q_dim + kv_dim, q_dim + 2 kv_dim)
    LoraHook *hooks = calloc((size_t)L * LSLOT_COUNT, sizeof(LoraHook));
    float *refgrad[2 * 5 * 2];
    for (int l = 0; l < L; l++)
        for (int k = 0; k < 2; k++) {
            const char *proj = k == 0 ? "q_proj" : "v_proj";
            const int out = k == 0 ? qd : kvd;
            char na[200], nb[200], ga[220], gb[220];
            snprintf(na, sizeof na, "base_model.model.model.layers.%d.self_attn.%s.lora_A.weight", l, proj);
            snprintf(nb, sizeof nb, "base_model.model.model.layers.%d.self_attn.%s.lora_B.weight", l, proj);
            snprintf(ga, sizeof ga, "%s.grad", na);
            snprintf(gb, sizeof gb, "%s.grad", nb);
            LoraHook *h = &hooks[l * LSLOT_COUNT + (k == 0 ? LSLOT_Q : LSLOT_V)];
            *h = (LoraHook){RANK, C, out, k == 0 ? 0 : qd + kvd, 8.0f / RANK, 0.0f,
                            read_f32(&f, na, (size_t)RANK * C), read_f32(&f, nb, (size_t)out * RANK),
                            calloc((size_t)RANK * C, sizeof(float)), calloc((size_t)out * RANK, sizeof(float))};
            refgrad[(l * 2 + k) * 2] = read_f32(&f, ga, (size_t)RANK * C);
            refgrad[(l * 2 + k) * 2 + 1] = read_f32(&f, gb, (size_t)out * RANK);
        }
    float *prompt = read_f32(&f, "prompt_embeddings", (size_t)NV * C);
    float *ref_dprompt = read_f32(&f, "prompt_embeddings.grad", (size_t)NV * C);
    float *ref_logits = read_f32(&f, "logits", (size_t)BATCH * (NV + SEQ) * V);
    float *ref_loss = read_f32(&f, "loss", 1);
    float *dprompt = calloc((size_t)NV * C, sizeof(float));
    ModelAdapters ad = {hooks, NV, prompt, dprompt, 0};

    RunState *rs;
    assert_int_equal(runstate_create(&rs, &m, BATCH, NV + SEQ, 1, err), 0);
    if (model_forward(&m, &ad, rs, ids, BATCH, SEQ, NULL, NULL, NULL, err)) fail_msg("%s", err);
    const int T = runstate_T(rs);
    assert_int_equal(T, NV + SEQ);
    float *logits = malloc((size_t)BATCH * T * V * sizeof(float));
    lm_head_logits(&m, runstate_final_hidden(rs), BATCH * T, logits);
    double dl = max_abs_diff(logits, ref_logits, (size_t)BATCH * T * V);
    fprintf(stderr, "logits max abs diff %.3g\n", dl);
    assert_true(dl <= 1e-4);

    // response-only loss: token t (mask 1, t >= 1) is predicted by row 3 + t - 1 of its sequence
    int rows[BATCH * SEQ], targets[BATCH * SEQ], n = 0;
    for (int b = 0; b < BATCH; b++)
        for (int tt = 1; tt < SEQ; tt++)
            if (mask[b * SEQ + tt]) {
                rows[n] = b * T + NV + tt - 1;
                targets[n] = ids[b * SEQ + tt];
                n++;
            }
    assert_int_equal(n, 17);
    float logp[BATCH * SEQ];
    if (lm_head_logprobs(&m, rs, rows, targets, n, logp, NULL, neg_inv_n, &n, err)) fail_msg("%s", err);
    double loss = 0;
    for (int i = 0; i < n; i++) loss -= logp[i];
    loss /= n;
    fprintf(stderr, "loss %.9f (reference %.9f)\n", loss, ref_loss[0]);
    assert_true(fabs(loss - ref_loss[0]) <= 1e-5);
    if (model_backward(&m, &ad, rs, err)) fail_msg("%s", err);

    for (int l = 0; l < L; l++)
        for (int k = 0; k < 2; k++) {
            const LoraHook *h = &hooks[l * LSLOT_COUNT + (k == 0 ? LSLOT_Q : LSLOT_V)];
            char name[64];
            snprintf(name, sizeof name, "layer %d %s dA", l, k == 0 ? "q" : "v");
            check_grad(name, h->dA, refgrad[(l * 2 + k) * 2], (size_t)RANK * C);
            snprintf(name, sizeof name, "layer %d %s dB", l, k == 0 ? "q" : "v");
            check_grad(name, h->dB, refgrad[(l * 2 + k) * 2 + 1], (size_t)h->out * RANK);
        }
    check_grad("dprompt", dprompt, ref_dprompt, (size_t)NV * C);
    fprintf(stderr, "gradients: max abs diff %.3g over 21 tensors\n", worst_grad_diff);

    for (int i = 0; i < L * LSLOT_COUNT; i++) {
        free((void *)hooks[i].A); free((void *)hooks[i].B); free(hooks[i].dA); free(hooks[i].dB);
    }
    for (int i = 0; i < 2 * L * 2; i++) free(refgrad[i]);
    free(hooks); free(prompt); free(ref_dprompt); free(ref_logits); free(ref_loss); free(dprompt); free(logits);
    st_close(&f);
    runstate_free(rs);
    model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories_lora_prompt_step),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
