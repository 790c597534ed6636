// test_checkpointing.c — the training arena's activation plan and gradient checkpointing.
// One training step (forward with LoRA dropout, LM-head loss on every row, backward) on synthetic
// llama (GQA) and gpt2 models gives bit-identical LoRA dA/dB, soft-prompt gradients and losses
// whether the run state keeps every activation (runstate_create), only those the adapters'
// backward reads (runstate_create_train), or only layer inputs (RS_GRAD_CHECKPOINT, backward
// recomputes). The planned arenas are smaller, and a run state planned for q/v refuses adapters
// whose backward would read an activation it did not keep.
#include "tests/testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/common.h"
#include "model/synthetic.h"
#include "model/transformer.h"

#define NB 2
#define TT 9
#define NV 2
#define RANK 3

static ModelConfig cfg_of(Arch arch) {
    ModelConfig c = {0};
    c.arch = arch;
    c.dim = 16; c.n_layers = 3; c.n_heads = 4; c.n_kv_heads = arch == ARCH_LLAMA ? 2 : 4; c.head_dim = 4;
    c.ffn_dim = 24; c.vocab_size = 37; c.max_seq_len = 64; c.norm_eps = 1e-5f; c.rope_theta = 10000.0f;
    c.tied_head = arch == ARCH_GPT2; c.bos_id = 1; c.eos_id = 2;
    return c;
}

typedef struct {
    LoraHook hooks[3 * LSLOT_COUNT];
    float prompt[NV * 16], dprompt[NV * 16];
    ModelAdapters ad;
} Adapt;

// in, fused output width and offset of a slot's block (as model_adapters_validate expects)
static void slot_shape(const ModelConfig *c, LoraSlot s, int *in, int *out, int *off) {
    const int qd = model_q_dim(c), kvd = model_kv_dim(c), F = c->ffn_dim, llama = c->arch == ARCH_LLAMA;
    *in = c->dim;
    *off = 0;
    switch (s) {
    case LSLOT_Q: *out = qd; break;
    case LSLOT_K: *out = kvd; *off = qd; break;
    case LSLOT_V: *out = kvd; *off = qd + kvd; break;
    case LSLOT_QKV: *out = qd + 2 * kvd; break;
    case LSLOT_O: *in = qd; *out = c->dim; break;
    case LSLOT_GATE: *out = F; break;
    case LSLOT_UP: *out = F; *off = llama ? F : 0; break;
    default: *in = F; *out = c->dim; break;   // DOWN
    }
}

// LoRA with random A and B (B != 0 so every path carries gradient) on `slots` of the layers in
// [l0, n_layers); frozen = no gradients; nv soft-prompt rows with a gradient.
static void adapt_init(Adapt *a, const ModelConfig *c, const LoraSlot *slots, int n_slots, int l0, float dropout,
                       int nv, int frozen) {
    memset(a, 0, sizeof *a);
    uint64_t rng = 11;
    for (int l = l0; l < c->n_layers; l++)
        for (int i = 0; i < n_slots; i++) {
            LoraHook *h = &a->hooks[l * LSLOT_COUNT + slots[i]];
            int in, out, off;
            slot_shape(c, slots[i], &in, &out, &off);
            float *A = malloc((size_t)RANK * in * sizeof(float)), *Bm = malloc((size_t)out * RANK * sizeof(float));
            for (int k = 0; k < RANK * in; k++) A[k] = 0.3f * ftk_rand_normal(&rng);
            for (int k = 0; k < out * RANK; k++) Bm[k] = 0.3f * ftk_rand_normal(&rng);
            *h = (LoraHook){RANK, in, out, off, 2.0f / RANK, dropout, A, Bm,
                            frozen ? NULL : calloc((size_t)RANK * in, sizeof(float)),
                            frozen ? NULL : calloc((size_t)out * RANK, sizeof(float))};
        }
    for (int k = 0; k < NV * 16; k++) a->prompt[k] = 0.5f * ftk_rand_normal(&rng);
    a->ad = (ModelAdapters){a->hooks, nv, a->prompt, nv ? a->dprompt : NULL, 0};
}

static void adapt_zero_grad(Adapt *a) {
    for (int i = 0; i < 3 * LSLOT_COUNT; i++) {
        LoraHook *h = &a->hooks[i];
        if (h->dA) memset(h->dA, 0, (size_t)h->r * h->in * sizeof(float));
        if (h->dB) memset(h->dB, 0, (size_t)h->out * h->r * sizeof(float));
    }
    memset(a->dprompt, 0, sizeof a->dprompt);
}

static void adapt_free(Adapt *a) {
    for (int i = 0; i < 3 * LSLOT_COUNT; i++) {
        free((void *)a->hooks[i].A);
        free((void *)a->hooks[i].B);
        free(a->hooks[i].dA);
        free(a->hooks[i].dB);
    }
}

static float neg_inv_n(void *ctx, int i, float logp) {
    (void)i;
    (void)logp;
    return -1.0f / *(int *)ctx;
}

// Every gradient of a, concatenated (malloc'ed), after one step on rs; *loss the mean NLL.
static float *step_grads(const Model *m, Adapt *a, RunState *rs, size_t *n_out, float *loss) {
    char err[FTK_ERR_LEN];
    const int V = m->cfg.vocab_size, nv = a->ad.n_virtual, T = nv + TT;
    int toks[NB * TT], rows[NB * TT], targets[NB * TT], n = 0;
    uint64_t rng = 5;
    for (int i = 0; i < NB * TT; i++) toks[i] = (int)(ftk_rand_u32(&rng) % (uint32_t)V);
    for (int b = 0; b < NB; b++)
        for (int t = 0; t + 1 < TT; t++) {
            rows[n] = b * T + nv + t;
            targets[n++] = toks[b * TT + t + 1];
        }
    adapt_zero_grad(a);
    uint64_t drop = 99;
    if (model_forward(m, &a->ad, rs, toks, NB, TT, NULL, NULL, &drop, err)) fail_msg("%s", err);
    float logp[NB * TT];
    if (lm_head_logprobs(m, rs, rows, targets, n, logp, NULL, neg_inv_n, &n, err)) fail_msg("%s", err);
    if (model_backward(m, &a->ad, rs, err)) fail_msg("%s", err);
    double l = 0;
    for (int i = 0; i < n; i++) l -= logp[i];
    *loss = (float)(l / n);
    size_t total = sizeof a->dprompt / sizeof(float);
    for (int i = 0; i < 3 * LSLOT_COUNT; i++)
        if (a->hooks[i].dA) total += (size_t)a->hooks[i].r * (a->hooks[i].in + a->hooks[i].out);
    float *g = malloc(total * sizeof(float)), *p = g;
    for (int i = 0; i < 3 * LSLOT_COUNT; i++) {
        const LoraHook *h = &a->hooks[i];
        if (!h->dA) continue;
        memcpy(p, h->dA, (size_t)h->r * h->in * sizeof(float));
        p += (size_t)h->r * h->in;
        memcpy(p, h->dB, (size_t)h->out * h->r * sizeof(float));
        p += (size_t)h->out * h->r;
    }
    memcpy(p, a->dprompt, sizeof a->dprompt);
    *n_out = total;
    return g;
}

// The step on the three kinds of run state: gradients and loss bit-identical; returns the arena
// sizes (full, planned, checkpointed).
static void check_identical(const Model *m, Adapt *a, size_t bytes[3]) {
    char err[FTK_ERR_LEN];
    const int T = a->ad.n_virtual + TT;
    RunState *rs[3];
    assert_int_equal(runstate_create(&rs[0], m, NB, T, 1, err), 0);
    if (runstate_create_train(&rs[1], m, &a->ad, NB, T, 0, err)) fail_msg("%s", err);
    if (runstate_create_train(&rs[2], m, &a->ad, NB, T, RS_GRAD_CHECKPOINT, err)) fail_msg("%s", err);
    float *g[3], loss[3];
    size_t n[3];
    for (int k = 0; k < 3; k++) {
        g[k] = step_grads(m, a, rs[k], &n[k], &loss[k]);
        bytes[k] = runstate_bytes(rs[k]);
    }
    double gmax = 0;
    for (size_t i = 0; i < n[0]; i++) gmax = fmax(gmax, fabs(g[0][i]));
    assert_true(gmax > 1e-4);   // the gradients are not trivially zero
    for (int k = 1; k < 3; k++) {
        assert_int_equal(n[k], n[0]);
        if (memcmp(g[k], g[0], n[0] * sizeof(float)) != 0)
            fail_msg("run state %d: gradients differ from the full arena's (max abs diff %.3g)", k,
                     max_abs_diff(g[k], g[0], n[0]));
        assert_memory_equal(&loss[k], &loss[0], sizeof(float));
    }
    for (int k = 0; k < 3; k++) {
        free(g[k]);
        runstate_free(rs[k]);
    }
}

static const LoraSlot QV[] = {LSLOT_Q, LSLOT_V};

static void run_arch(Arch arch) {
    char err[FTK_ERR_LEN];
    Model m;
    ModelConfig c = cfg_of(arch);
    assert_int_equal(model_init_synthetic(&m, &c, 17 + arch, err), 0);
    const LoraSlot all_llama[] = {LSLOT_Q, LSLOT_K, LSLOT_V, LSLOT_O, LSLOT_GATE, LSLOT_UP, LSLOT_DOWN};
    const LoraSlot all_gpt2[] = {LSLOT_QKV, LSLOT_O, LSLOT_UP, LSLOT_DOWN};
    const LoraSlot *all = arch == ARCH_LLAMA ? all_llama : all_gpt2;
    const int n_all = arch == ARCH_LLAMA ? 7 : 4;
    size_t bytes[3];
    Adapt a, b;

    // q/v LoRA, no prompt: the plan leaves out the MLP activation, the MLP norm output, the
    // attention output; checkpointing keeps layer inputs only.
    adapt_init(&a, &c, QV, 2, 0, 0.0f, 0, 0);
    check_identical(&m, &a, bytes);
    fprintf(stderr, "arch %d q,v: arena full %zu, planned %zu, checkpointed %zu bytes\n", arch, bytes[0], bytes[1],
            bytes[2]);
    assert_true(bytes[1] < bytes[0]);
    assert_true(bytes[2] < bytes[1]);

    // a run state planned for q/v refuses LoRA on every linear (its backward reads more)
    adapt_init(&b, &c, all, n_all, 0, 0.0f, 0, 0);
    RunState *rs;
    if (runstate_create_train(&rs, &m, &a.ad, NB, TT, 0, err)) fail_msg("%s", err);
    int toks[NB * TT] = {0};
    assert_int_not_equal(model_forward(&m, &b.ad, rs, toks, NB, TT, NULL, NULL, NULL, err), 0);
    assert_non_null(strstr(err, "does not keep"));
    fprintf(stderr, "refused: %s\n", err);
    // the same adapters frozen (no gradients, no prompt) need nothing: accepted, and disabled ones
    Adapt fz;
    adapt_init(&fz, &c, all, n_all, 0, 0.0f, 0, 1);
    assert_int_equal(model_forward(&m, &fz.ad, rs, toks, NB, TT, NULL, NULL, NULL, err), 0);
    b.ad.disabled = 1;
    assert_int_equal(model_forward(&m, &b.ad, rs, toks, NB, TT, NULL, NULL, NULL, err), 0);
    b.ad.disabled = 0;
    runstate_free(rs);
    adapt_free(&fz);
    adapt_free(&a);

    // every linear, dropout 0.1 (masks redrawn identically in the recomputation), soft prompt
    check_identical(&m, &b, bytes);
    adapt_free(&b);
    adapt_init(&b, &c, all, n_all, 0, 0.1f, NV, 0);
    check_identical(&m, &b, bytes);
    assert_true(bytes[2] < bytes[1]);
    adapt_free(&b);

    // only the top layer's MLP down projection learns: the layers below run no backward
    const LoraSlot down[] = {LSLOT_DOWN};
    adapt_init(&b, &c, down, 1, 2, 0.1f, 0, 0);
    check_identical(&m, &b, bytes);
    assert_true(bytes[1] < bytes[0]);
    adapt_free(&b);
    model_free(&m);
}

static void test_llama(void **state) {
    (void)state;
    run_arch(ARCH_LLAMA);
}

static void test_gpt2(void **state) {
    (void)state;
    run_arch(ARCH_GPT2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama),
        cmocka_unit_test(test_gpt2),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
