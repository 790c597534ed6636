// test_bf16.c — frozen linear weights stored as bf16 (model_to_bf16): the rounding (nearest even,
// NaN/inf kept), the memory it saves, and that a bf16 model computes exactly what an fp32 model
// whose linear weights were rounded to bf16 computes (logits and LoRA gradients bit-identical:
// the same sgemms on the same values), while differing from the unrounded model only at the
// bf16 rounding level.
#include "tests/testutil.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/common.h"
#include "model/synthetic.h"
#include "model/transformer.h"
#include "model/weights_bf16.h"

static uint16_t round_bits(uint32_t u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return bf16_from_f32(x);
}

static void test_rounding(void **state) {
    (void)state;
    assert_int_equal(round_bits(0x3f800000u), 0x3f80);   // 1.0 exact
    assert_int_equal(round_bits(0x3f808000u), 0x3f80);   // tie, kept bit even: down
    assert_int_equal(round_bits(0x3f818000u), 0x3f82);   // tie, kept bit odd: up
    assert_int_equal(round_bits(0x3f808001u), 0x3f81);   // just above the tie: up
    assert_int_equal(round_bits(0x3f807fffu), 0x3f80);   // just below: down
    assert_int_equal(round_bits(0xbf818000u), 0xbf82);   // sign does not matter
    assert_int_equal(round_bits(0x7f800000u), 0x7f80);   // +inf
    assert_int_equal(round_bits(0x7f7fffffu), 0x7f80);   // FLT_MAX rounds to inf (nearest even)
    assert_true(isnan(bf16_to_f32(round_bits(0x7f800001u))));   // a NaN whose payload is in the low bits
    assert_true(bf16_to_f32(0x4049) == 3.140625f);
    float src[3] = {1.0f, -2.5f, 3.0e-3f}, dst[3];
    uint16_t b[3];
    for (int i = 0; i < 3; i++) b[i] = bf16_from_f32(src[i]);
    bf16_expand(dst, b, 3);
    for (int i = 0; i < 3; i++) {
        assert_true(dst[i] == bf16_to_f32(b[i]));
        assert_true(fabsf(dst[i] - src[i]) <= fabsf(src[i]) * 0x1p-8f);   // half an ulp of an 8-bit mantissa
    }
}

// wide = 1: a vocabulary of several 512-row blocks and a width of several 128-column blocks, so
// the bf16 LM head's blocked logits and dh (lm_head.c) are exercised.
static ModelConfig cfg_of(Arch arch, int wide) {
    ModelConfig c = {0};
    c.arch = arch;
    c.dim = wide ? 160 : 32; c.n_layers = 2; c.n_heads = 4; c.n_kv_heads = arch == ARCH_LLAMA ? 2 : 4;
    c.head_dim = c.dim / 4; c.ffn_dim = 48; c.vocab_size = wide ? 1100 : 41; c.max_seq_len = 64; c.norm_eps = 1e-5f; c.rope_theta = 10000.0f;
    c.tied_head = arch == ARCH_GPT2; c.bos_id = 1; c.eos_id = 2;
    return c;
}

static void round_in_place(float *w, size_t n) {
    for (size_t i = 0; i < n; i++) w[i] = bf16_to_f32(bf16_from_f32(w[i]));
}

static float neg_inv_n(void *ctx, int i, float logp) {
    (void)i;
    (void)logp;
    return -1.0f / *(int *)ctx;
}

// One LoRA (q and v, r 2, B != 0) training step; returns the 4 * L gradient tensors concatenated.
static float *lora_step_grads(const Model *m, size_t *n_out) {
    char err[FTK_ERR_LEN];
    const ModelConfig *c = &m->cfg;
    const int L = c->n_layers, C = c->dim, qd = model_q_dim(c), kvd = model_kv_dim(c), r = 2, Tt = 12;
    LoraHook *hooks = calloc((size_t)L * LSLOT_COUNT, sizeof *hooks);
    uint64_t rng = 9;
    size_t total = 0;
    for (int l = 0; l < L; l++)
        for (int k = 0; k < 2; k++) {
            const int out = k ? kvd : qd;
            float *A = malloc((size_t)r * C * sizeof(float)), *Bm = malloc((size_t)out * r * sizeof(float));
            for (int i = 0; i < r * C; i++) A[i] = 0.2f * ftk_rand_normal(&rng);
            for (int i = 0; i < out * r; i++) Bm[i] = 0.2f * ftk_rand_normal(&rng);
            hooks[l * LSLOT_COUNT + (k ? LSLOT_V : LSLOT_Q)] =
                (LoraHook){r, C, out, k ? qd + kvd : 0, 1.0f, 0.0f, A, Bm, calloc((size_t)r * C, sizeof(float)),
                           calloc((size_t)out * r, sizeof(float))};
            total += (size_t)r * (C + out);
        }
    ModelAdapters ad = {hooks, 0, NULL, NULL, 0};
    RunState *rs;
    if (runstate_create_train(&rs, m, &ad, 1, Tt, 0, err)) fail_msg("%s", err);
    int toks[12], rows[11], targets[11], n = 11;
    for (int i = 0; i < Tt; i++) toks[i] = (int)(ftk_rand_u32(&rng) % (uint32_t)c->vocab_size);
    for (int i = 0; i < n; i++) {
        rows[i] = i;
        targets[i] = toks[i + 1];
    }
    float logp[11];
    if (model_forward(m, &ad, rs, toks, 1, Tt, NULL, NULL, NULL, err)) fail_msg("%s", err);
    if (lm_head_logprobs(m, rs, rows, targets, n, logp, NULL, neg_inv_n, &n, err)) fail_msg("%s", err);
    if (model_backward(m, &ad, rs, err)) fail_msg("%s", err);
    float *g = malloc(total * sizeof(float)), *p = g;
    for (int i = 0; i < L * LSLOT_COUNT; i++) {
        LoraHook *h = &hooks[i];
        if (h->r == 0) continue;
        memcpy(p, h->dA, (size_t)h->r * h->in * sizeof(float));
        p += (size_t)h->r * h->in;
        memcpy(p, h->dB, (size_t)h->out * h->r * sizeof(float));
        p += (size_t)h->out * h->r;
        free((void *)h->A); free((void *)h->B); free(h->dA); free(h->dB);
    }
    free(hooks);
    runstate_free(rs);
    *n_out = total;
    return g;
}

static void run_arch(Arch arch, int wide) {
    char err[FTK_ERR_LEN];
    ModelConfig c = cfg_of(arch, wide);
    Model f32, rounded, b16;
    assert_int_equal(model_init_synthetic(&f32, &c, 5, err), 0);
    assert_int_equal(model_init_synthetic(&rounded, &c, 5, err), 0);
    assert_int_equal(model_init_synthetic(&b16, &c, 5, err), 0);
    const size_t C = c.dim, F = c.ffn_dim, qkv = model_qkv_dim(&c), qd = model_q_dim(&c);
    const size_t pre = arch == ARCH_LLAMA ? 2 * F : F;
    const size_t linear = (size_t)c.n_layers * (qkv * C + C * qd + pre * C + C * F);
    for (int l = 0; l < c.n_layers; l++) {
        LayerWeights *w = &rounded.w.layers[l];
        round_in_place(w->wqkv, qkv * C);
        round_in_place(w->wo, C * qd);
        round_in_place(arch == ARCH_LLAMA ? w->w_gate_up : w->w_up, pre * C);
        round_in_place(w->w_down, C * F);
    }
    const size_t V = c.vocab_size;
    round_in_place(rounded.w.tok_emb, V * C);
    if (!c.tied_head) round_in_place(rounded.w.lm_head, V * C);
    const size_t tables = (c.tied_head ? 1 : 2) * V * C;   // token embedding and LM head: bf16 too
    const size_t bytes_f32 = model_weight_bytes(&b16);
    assert_int_equal(model_check_f32_weights(&b16, "test", err), 0);
    if (model_to_bf16(&b16, err)) fail_msg("%s", err);
    assert_int_equal(model_to_bf16(&b16, err), 0);   // idempotent
    // memory: the linears and the tables take 2 bytes a value instead of 4 (plus 64-byte alignment
    // of each tensor)
    const size_t bytes_b16 = model_weight_bytes(&b16), expect = bytes_f32 - 2 * (linear + tables);
    fprintf(stderr, "arch %d: weights %zu -> %zu bytes (linears %zu values)\n", arch, bytes_f32, bytes_b16, linear);
    assert_true(bytes_b16 >= expect && bytes_b16 <= expect + 64 * (5 + 13 * (size_t)c.n_layers));
    assert_null(b16.w.layers[0].wqkv);
    assert_null(b16.w.tok_emb);
    assert_null(b16.w.lm_head);
    assert_int_not_equal(model_check_f32_weights(&b16, "generation", err), 0);
    assert_non_null(strstr(err, "bf16"));

    const int Tt = 10;
    int toks[10];
    uint64_t rng = 4;
    for (int i = 0; i < Tt; i++) toks[i] = (int)(ftk_rand_u32(&rng) % (uint32_t)c.vocab_size);
    float *lf, *lr, *lb;
    assert_int_equal(model_logits_all(&f32, NULL, toks, Tt, &lf, err), 0);
    assert_int_equal(model_logits_all(&rounded, NULL, toks, Tt, &lr, err), 0);
    assert_int_equal(model_logits_all(&b16, NULL, toks, Tt, &lb, err), 0);
    const size_t nl = (size_t)Tt * c.vocab_size;
    // bf16 model == fp32 model on the rounded weights (same products on the same values)
    const double d_same = max_abs_diff(lb, lr, nl), d_round = max_abs_diff(lb, lf, nl);
    double scale = 0;
    for (size_t i = 0; i < nl; i++) scale = fmax(scale, fabsf(lf[i]));
    fprintf(stderr, "logits: bf16 vs rounded fp32 %.3g, vs fp32 %.3g (max |logit| %.3g)\n", d_same, d_round, scale);
    // the same values; only the bf16 LM head's blocked products may round differently (a few ulps)
    assert_true(d_same <= 8 * FLT_EPSILON * scale);
    // vs the unrounded model: each weight moved by <= 2^-9 relative; a few layers of that stay
    // within 2% of the logit scale, and the rounding does change something
    assert_true(d_round > 0 && d_round <= 0.02 * scale);

    size_t ng_r, ng_b;
    float *gr = lora_step_grads(&rounded, &ng_r), *gb = lora_step_grads(&b16, &ng_b);
    assert_int_equal(ng_r, ng_b);
    double d_grad = max_abs_diff(gr, gb, ng_r), g_scale = 0;
    for (size_t i = 0; i < ng_r; i++) g_scale = fmax(g_scale, fabsf(gr[i]));
    fprintf(stderr, "LoRA gradients: bf16 vs rounded fp32 max abs diff %.3g (max |g| %.3g)\n", d_grad, g_scale);
    assert_true(d_grad <= 1e-5 * g_scale);
    free(gr); free(gb); free(lf); free(lr); free(lb);
    model_free(&f32);
    model_free(&rounded);
    model_free(&b16);
}

static void test_llama(void **state) {
    (void)state;
    run_arch(ARCH_LLAMA, 0);
    run_arch(ARCH_LLAMA, 1);
}

static void test_gpt2(void **state) {
    (void)state;
    run_arch(ARCH_GPT2, 0);
    run_arch(ARCH_GPT2, 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rounding),
        cmocka_unit_test(test_llama),
        cmocka_unit_test(test_gpt2),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
