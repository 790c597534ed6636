// test_ops_grad.c — finite-difference checks of every backward in model/ops.h and attention.c, of
// the LM head's hidden-state gradient, and end to end (LoRA dA/dB and soft-prompt gradients of a
// tiny synthetic llama and gpt2 under a response-style loss), with dropout and packing masks.
//
// Every check: L = sum(R * op(inputs)) for a fixed random R (or the model's loss), analytic
// gradient from the backward, central differences (h = 1e-2 in float32, L summed in double).
#include "tests/testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/common.h"
#include "model/ops.h"
#include "model/synthetic.h"
#include "model/transformer.h"

typedef double (*LossFn)(void *ctx);

static void fill(float *x, size_t n, float std, uint64_t *rng) {
    for (size_t i = 0; i < n; i++) x[i] = std * ftk_rand_normal(rng);
}

static double dot_d(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

// Compares analytic[i] with central differences of f over param[i] for every i (step `every`).
static void check_grad(const char *what, float *param, size_t n, const float *analytic, LossFn f, void *ctx,
                       float h, double atol, double rtol, size_t every) {
    double worst = 0;
    size_t worst_i = 0;
    double worst_fd = 0;
    int bad = 0;
    for (size_t i = 0; i < n; i += every) {
        const float v = param[i];
        const float vp = v + h, vm = v - h;
        param[i] = vp;
        double lp = f(ctx);
        param[i] = vm;
        double lm = f(ctx);
        param[i] = v;
        double fd = (lp - lm) / ((double)vp - (double)vm);
        double diff = fabs(fd - analytic[i]);
        double tol = atol + rtol * fmax(fabs(fd), fabs(analytic[i]));
        if (diff > tol) bad++;
        if (diff - tol > worst) {
            worst = diff - tol;
            worst_i = i;
            worst_fd = fd;
        }
    }
    if (bad) {
        fprintf(stderr, "%s: %d entries off; worst at %zu: analytic %.6g finite-diff %.6g\n", what, bad, worst_i,
                analytic[worst_i], worst_fd);
    }
    assert_int_equal(bad, 0);
}

// ---------------------------------------------------------------------------------------------
// norms

typedef struct {
    int N, C, layer;   // layer: 1 = layernorm
    float *x, *w, *b, *R, *out, *s1, *s2;
} NormCtx;

static double norm_loss(void *p) {
    NormCtx *c = p;
    if (c->layer) layernorm_forward(c->out, c->s1, c->s2, c->x, c->w, c->b, c->N, c->C, 1e-5f);
    else rmsnorm_forward(c->out, c->s2, c->x, c->w, c->N, c->C, 1e-5f);
    return dot_d(c->out, c->R, (size_t)c->N * c->C);
}

static void run_norm(int layer) {
    uint64_t rng = 11 + layer;
    NormCtx c = {3, 8, layer, 0, 0, 0, 0, 0, 0, 0};
    size_t n = (size_t)c.N * c.C;
    c.x = malloc(n * 4); c.R = malloc(n * 4); c.out = malloc(n * 4);
    c.w = malloc(c.C * 4); c.b = malloc(c.C * 4); c.s1 = malloc(c.N * 4); c.s2 = malloc(c.N * 4);
    float *dx = calloc(n, 4);
    fill(c.x, n, 1.0f, &rng);
    fill(c.R, n, 1.0f, &rng);
    for (int i = 0; i < c.C; i++) { c.w[i] = 1.0f + 0.3f * ftk_rand_normal(&rng); c.b[i] = 0.2f * ftk_rand_normal(&rng); }
    for (size_t i = 0; i < (size_t)c.C; i++) c.x[i] += 2.0f;   // a row with a large mean
    norm_loss(&c);
    if (layer) layernorm_backward(dx, c.R, c.x, c.w, c.s1, c.s2, c.N, c.C);
    else rmsnorm_backward(dx, c.R, c.x, c.w, c.s2, c.N, c.C);
    check_grad(layer ? "layernorm dx" : "rmsnorm dx", c.x, n, dx, norm_loss, &c, 1e-2f, 1e-4, 1e-2, 1);
    // accumulation: a second backward adds the same gradient (stats refreshed after the probes)
    norm_loss(&c);
    float *dx2 = malloc(n * 4);
    memcpy(dx2, dx, n * 4);
    if (layer) layernorm_backward(dx2, c.R, c.x, c.w, c.s1, c.s2, c.N, c.C);
    else rmsnorm_backward(dx2, c.R, c.x, c.w, c.s2, c.N, c.C);
    for (size_t i = 0; i < n; i++) assert_true(fabsf(dx2[i] - 2 * dx[i]) <= 1e-5f * (1 + fabsf(dx[i])));
    free(c.x); free(c.R); free(c.out); free(c.w); free(c.b); free(c.s1); free(c.s2); free(dx); free(dx2);
}

static void test_rmsnorm_grad(void **state) { (void)state; run_norm(0); }
static void test_layernorm_grad(void **state) { (void)state; run_norm(1); }

static void test_rmsnorm_value(void **state) {
    (void)state;
    float x[4] = {1, -2, 3, -4}, w[4] = {1, 2, 0.5f, 1}, out[4], rstd;
    rmsnorm_forward(out, &rstd, x, w, 1, 4, 0.0f);
    float r = 1.0f / sqrtf((1 + 4 + 9 + 16) / 4.0f);
    for (int i = 0; i < 4; i++) assert_true(fabsf(out[i] - x[i] * r * w[i]) < 1e-6f);
    float b[4] = {0.5f, 0, 0, 0}, mean;
    layernorm_forward(out, &mean, &rstd, x, w, b, 1, 4, 0.0f);
    assert_true(fabsf(mean - (-0.5f)) < 1e-6f);
    float sd = sqrtf((1.5f * 1.5f + 1.5f * 1.5f + 3.5f * 3.5f + 3.5f * 3.5f) / 4);
    assert_true(fabsf(out[0] - ((1 + 0.5f) / sd * 1 + 0.5f)) < 1e-5f);
}

// ---------------------------------------------------------------------------------------------
// RoPE

typedef struct {
    int N, H, hd, ld;
    float *x, *R, *out, *cs, *sn;
} RopeCtx;

static double rope_loss(void *p) {
    RopeCtx *c = p;
    memcpy(c->out, c->x, (size_t)c->N * c->ld * 4);
    rope_forward(c->out, c->ld, c->N, c->H, c->hd, c->cs, c->sn);
    return dot_d(c->out, c->R, (size_t)c->N * c->ld);
}

static void test_rope_grad(void **state) {
    (void)state;
    uint64_t rng = 3;
    RopeCtx c = {3, 2, 8, 20, 0, 0, 0, 0, 0};
    const int pos[3] = {0, 5, 17};
    size_t n = (size_t)c.N * c.ld;
    c.x = malloc(n * 4); c.R = malloc(n * 4); c.out = malloc(n * 4);
    c.cs = malloc(c.N * 4 * 4); c.sn = malloc(c.N * 4 * 4);
    fill(c.x, n, 1.0f, &rng);
    fill(c.R, n, 1.0f, &rng);
    rope_tables(c.cs, c.sn, pos, c.N, c.hd, 10000.0f);
    rope_loss(&c);
    // position 0 is the identity; row 1 (position 5), head 0, pair 0 rotates by 5 rad, pair 1 by 5/10000^(1/4)
    for (int i = 0; i < c.ld; i++) assert_true(c.out[i] == c.x[i]);
    const float *x1 = c.x + c.ld, *o1 = c.out + c.ld;
    assert_true(fabsf(o1[0] - (x1[0] * cosf(5) - x1[4] * sinf(5))) < 1e-5f);
    assert_true(fabsf(o1[4] - (x1[4] * cosf(5) + x1[0] * sinf(5))) < 1e-5f);
    double a1 = 5.0 / 10.0;   // 10000^(-2/8) = 0.1
    assert_true(fabs(o1[1] - (x1[1] * cos(a1) - x1[5] * sin(a1))) < 1e-5);
    assert_true(o1[16] == x1[16]);   // columns past the heads are untouched
    float *dx = malloc(n * 4);
    memcpy(dx, c.R, n * 4);
    rope_backward(dx, c.ld, c.N, c.H, c.hd, c.cs, c.sn);
    check_grad("rope dx", c.x, n, dx, rope_loss, &c, 1e-2f, 1e-4, 1e-2, 1);
    free(c.x); free(c.R); free(c.out); free(c.cs); free(c.sn); free(dx);
}

// ---------------------------------------------------------------------------------------------
// attention

typedef struct {
    AttnShape s;
    float *qkv, *R, *out, *probs;
} AttnCtx;

static double attn_loss(void *p) {
    AttnCtx *c = p;
    attention_forward(c->out, c->probs, c->qkv, &c->s);
    return dot_d(c->out, c->R, (size_t)c->s.B * c->s.T * c->s.n_heads * c->s.head_dim);
}

// Plain double-precision attention of one (b, h) query row, for reference;
// *lse = log of the sum of exp over the scores the row may see.
static void attn_reference_row(const AttnCtx *c, int b, int h, int i, double *out, double *lse) {
    const AttnShape *s = &c->s;
    const int T = s->T, hd = s->head_dim, qd = s->n_heads * hd, kvd = s->n_kv_heads * hd, ld = qd + 2 * kvd;
    const int kh = h / (s->n_heads / s->n_kv_heads), Tt = T - s->nv;
    const float *base = c->qkv + (size_t)b * T * ld;
    double w[512], mx = -1e300, sum = 0;
    for (int j = 0; j <= i; j++) {
        int ok = j < s->nv || i < s->nv || !s->seg || s->seg[b * Tt + i - s->nv] == s->seg[b * Tt + j - s->nv];
        double d = 0;
        for (int k = 0; k < hd; k++) d += (double)base[(size_t)i * ld + h * hd + k] * base[(size_t)j * ld + qd + kh * hd + k];
        w[j] = ok ? d / sqrt((double)hd) : -1e300;
        if (w[j] > mx) mx = w[j];
    }
    for (int j = 0; j <= i; j++) sum += w[j] = w[j] > -1e299 ? exp(w[j] - mx) : 0.0;
    *lse = mx + log(sum);
    for (int k = 0; k < hd; k++) {
        out[k] = 0;
        for (int j = 0; j <= i; j++) out[k] += w[j] / sum * base[(size_t)j * ld + qd + kvd + kh * hd + k];
    }
}

static void run_attention(int H, int KVH, int nv, const int *seg, int Tt, size_t every) {
    uint64_t rng = 5 + H + nv;
    AttnCtx c;
    c.s = (AttnShape){2, nv + Tt, H, KVH, 4, nv, seg};
    const int T = c.s.T, qd = H * 4, ld = qd + 2 * KVH * 4;
    size_t nq = (size_t)2 * T * ld, no = (size_t)2 * T * qd;
    c.qkv = malloc(nq * 4); c.R = malloc(no * 4); c.out = malloc(no * 4);
    c.probs = malloc((size_t)2 * H * T * T * 4);
    float *dqkv = malloc(nq * 4);
    fill(c.qkv, nq, 1.0f, &rng);
    fill(c.R, no, 1.0f, &rng);
    attn_loss(&c);
    // the saved log-sum-exp of every query row (its masked scaled scores) against double precision;
    // the masks themselves are checked through the outputs below
    for (int b = 0; b < 2; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < T; i++) {
                double ref_out[64], lse;
                attn_reference_row(&c, b, h, i, ref_out, &lse);
                assert_true(fabs(c.probs[((size_t)b * H + h) * T + i] - lse) < 1e-5 * (1.0 + fabs(lse)));
            }
    // output row 0 of head 0 = v of kv head 0 at row 0 (it only sees itself)
    assert_true(fabsf(c.out[0] - c.qkv[qd + KVH * 4]) < 1e-6f);
    // every output row against a double-precision reference
    double ref[64];
    for (int b = 0; b < 2; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < T; i++) {
                double lse;
                attn_reference_row(&c, b, h, i, ref, &lse);
                for (int k = 0; k < 4; k++) assert_true(fabs(c.out[((size_t)b * T + i) * qd + h * 4 + k] - ref[k]) < 1e-5);
            }
    attention_backward(dqkv, c.R, c.qkv, c.probs, &c.s);
    check_grad("attention dqkv", c.qkv, nq, dqkv, attn_loss, &c, 1e-2f, 1e-4, 1e-2, every);
    free(c.qkv); free(c.R); free(c.out); free(c.probs); free(dqkv);
}

static void test_attention_grad_mha(void **state) { (void)state; run_attention(2, 2, 0, NULL, 4, 1); }
static void test_attention_grad_gqa_prompt(void **state) { (void)state; run_attention(4, 2, 2, NULL, 4, 1); }
static void test_attention_grad_packed(void **state) {
    (void)state;
    const int seg[8] = {0, 0, 1, 1, 3, 3, 3, 5};
    run_attention(4, 1, 0, seg, 4, 1);
    run_attention(4, 2, 2, seg, 4, 1);
}
// T = 150 spans three 64-row query blocks (and T + nv = 153 a partial fourth)
static void test_attention_grad_long(void **state) {
    (void)state;
    int seg[300];
    for (int i = 0; i < 300; i++) seg[i] = (i % 150) / 40 + (i >= 150 ? 10 : 0);
    run_attention(2, 1, 0, NULL, 150, 37);
    run_attention(2, 2, 3, seg, 150, 37);
}

// attention_cached (the KV-cache path) equals attention_forward on the same rows
static void test_attention_cached_matches(void **state) {
    (void)state;
    uint64_t rng = 8;
    const int H = 4, KVH = 2, hd = 4, T = 7, qd = H * hd, kvd = KVH * hd, ld = qd + 2 * kvd;
    AttnShape s = {1, T, H, KVH, hd, 0, NULL};
    float *qkv = malloc((size_t)T * ld * 4), *out = malloc((size_t)T * qd * 4), *probs = malloc((size_t)H * T * T * 4);
    float *kc = malloc((size_t)T * kvd * 4), *vc = malloc((size_t)T * kvd * 4), *o2 = malloc((size_t)T * qd * 4);
    float *scratch = malloc((size_t)T * T * 4);
    fill(qkv, (size_t)T * ld, 1.0f, &rng);
    attention_forward(out, probs, qkv, &s);
    for (int t = 0; t < T; t++) {
        memcpy(kc + (size_t)t * kvd, qkv + (size_t)t * ld + qd, kvd * 4);
        memcpy(vc + (size_t)t * kvd, qkv + (size_t)t * ld + qd + kvd, kvd * 4);
    }
    // prefill rows 0..3 as one chunk, rows 4..5 as another, then row 6 alone (decode path)
    attention_cached(o2, qd, qkv, ld, kc, vc, 4, 0, H, KVH, hd, scratch);
    attention_cached(o2 + 4 * qd, qd, qkv + 4 * ld, ld, kc, vc, 2, 4, H, KVH, hd, scratch);
    attention_cached(o2 + 6 * qd, qd, qkv + 6 * ld, ld, kc, vc, 1, 6, H, KVH, hd, scratch);
    assert_true(max_abs_diff(out, o2, (size_t)T * qd) < 1e-5);
    free(qkv); free(out); free(probs); free(kc); free(vc); free(o2); free(scratch);
}

// ---------------------------------------------------------------------------------------------
// activations, residual, embedding

typedef struct {
    int kind;   // 0 swiglu, 1 gelu
    int N, F;
    float *x, *R, *out;
} ActCtx;

static double act_loss(void *p) {
    ActCtx *c = p;
    if (c->kind == 0) swiglu_forward(c->out, c->x, c->N, c->F);
    else gelu_forward(c->out, c->x, (size_t)c->N * c->F);
    return dot_d(c->out, c->R, (size_t)c->N * c->F);
}

static void test_swiglu_gelu_grad(void **state) {
    (void)state;
    uint64_t rng = 9;
    for (int kind = 0; kind < 2; kind++) {
        ActCtx c = {kind, 3, 5, 0, 0, 0};
        size_t nin = (size_t)c.N * c.F * (kind == 0 ? 2 : 1), nout = (size_t)c.N * c.F;
        c.x = malloc(nin * 4); c.R = malloc(nout * 4); c.out = malloc(nout * 4);
        float *dx = malloc(nin * 4);
        fill(c.x, nin, 2.0f, &rng);
        fill(c.R, nout, 1.0f, &rng);
        act_loss(&c);
        if (kind == 0) {
            float g = c.x[0], u = c.x[c.F];
            assert_true(fabsf(c.out[0] - g / (1 + expf(-g)) * u) < 1e-6f);
            swiglu_backward(dx, c.R, c.x, c.N, c.F);
        } else {
            float v = c.x[0];
            assert_true(fabsf(c.out[0] - 0.5f * v * (1 + tanhf(0.7978845608f * (v + 0.044715f * v * v * v)))) < 1e-6f);
            gelu_backward(dx, c.R, c.x, nin);
        }
        check_grad(kind == 0 ? "swiglu" : "gelu", c.x, nin, dx, act_loss, &c, 1e-2f, 1e-4, 1e-2, 1);
        free(c.x); free(c.R); free(c.out); free(dx);
    }
    // gelu_new at known points: gelu(1) = 0.8411920, gelu(-2) = -0.0454023
    float x[2] = {1.0f, -2.0f}, y[2];
    gelu_forward(y, x, 2);
    assert_true(fabsf(y[0] - 0.8411920f) < 1e-6f && fabsf(y[1] + 0.0454023f) < 1e-6f);
    // saturation: no inf/nan far out, gelu(x) -> x and -> 0, tiny inputs -> x/2
    float xs[3] = {-60.0f, 60.0f, 1e-6f}, ys[3], dys[3], ones[3] = {1, 1, 1};
    gelu_forward(ys, xs, 3);
    gelu_backward(dys, ones, xs, 3);
    assert_true(ys[0] == 0.0f && ys[1] == 60.0f && fabsf(ys[2] - 5e-7f) < 1e-12f);
    assert_true(fabsf(dys[0]) < 1e-6f && fabsf(dys[1] - 1.0f) < 1e-6f && fabsf(dys[2] - 0.5f) < 1e-6f);
}

static void test_residual(void **state) {
    (void)state;
    float x[3] = {1, 2, 3}, b[3] = {10, 20, 30}, o[3], dx[3] = {1, 1, 1}, db[3] = {0}, d[3] = {0.5f, -1, 2};
    residual_forward(o, x, b, 3);
    assert_true(o[0] == 11 && o[2] == 33);
    residual_backward(dx, db, d, 3);
    assert_true(dx[0] == 1.5f && dx[1] == 0 && db[2] == 2);
}

typedef struct {
    int B, Tt, nv, C;
    const int *tokens, *pos;
    float *emb, *pos_emb, *prompt, *R, *out;
} EmbCtx;

static double emb_loss(void *p) {
    EmbCtx *c = p;
    embedding_forward(c->out, c->tokens, c->emb, NULL, c->prompt, c->nv, c->pos_emb, c->pos, c->B, c->Tt, c->C);
    return dot_d(c->out, c->R, (size_t)c->B * (c->nv + c->Tt) * c->C);
}

static void test_embedding_grad(void **state) {
    (void)state;
    uint64_t rng = 21;
    const int tokens[6] = {3, 0, 6, 2, 2, 5}, pos[10] = {0, 1, 2, 3, 4, 0, 1, 4, 5, 6};
    EmbCtx c = {2, 3, 2, 4, tokens, pos, 0, 0, 0, 0, 0};
    size_t n = (size_t)2 * 5 * 4;
    c.emb = malloc(7 * 4 * 4); c.pos_emb = malloc(8 * 4 * 4); c.prompt = malloc(2 * 4 * 4);
    c.R = malloc(n * 4); c.out = malloc(n * 4);
    fill(c.emb, 28, 1, &rng); fill(c.pos_emb, 32, 1, &rng); fill(c.prompt, 8, 1, &rng); fill(c.R, n, 1, &rng);
    emb_loss(&c);
    // row b=1, j=3 (real token 1 of sequence 1 = id 2) at position pos[8] = 5
    for (int k = 0; k < 4; k++) assert_true(c.out[(5 + 3) * 4 + k] == c.emb[2 * 4 + k] + c.pos_emb[5 * 4 + k]);
    for (int k = 0; k < 4; k++) assert_true(c.out[(5 + 1) * 4 + k] == c.prompt[4 + k] + c.pos_emb[1 * 4 + k]);
    float dp[8] = {0};
    embedding_backward(dp, c.R, 2, 5, 2, 4);
    check_grad("soft prompt", c.prompt, 8, dp, emb_loss, &c, 1e-2f, 1e-4, 1e-2, 1);
    free(c.emb); free(c.pos_emb); free(c.prompt); free(c.R); free(c.out);
}

// ---------------------------------------------------------------------------------------------
// linear + LoRA

typedef struct {
    int N, in, width;
    float *x, *W, *bias, *R, *out, *scratch;
    size_t scratch_n;
    LoraHook h;
    int dropout;
    uint64_t seed;
} LinCtx;

static double lin_loss(void *p) {
    LinCtx *c = p;
    uint64_t rng = c->seed;
    linear_forward(c->out, c->x, c->W, c->bias, c->N, c->in, c->width);
    lora_forward(c->out, c->width, c->x, c->N, &c->h, c->dropout ? &rng : NULL, c->scratch, c->scratch_n);
    return dot_d(c->out, c->R, (size_t)c->N * c->width);
}

static void run_linear_lora(int dropout, int chunk_rows) {
    uint64_t rng = 31 + dropout;
    LinCtx c = {5, 6, 10, 0, 0, 0, 0, 0, 0, 0, {0}, dropout, 777};
    c.x = malloc(5 * 6 * 4); c.W = malloc(10 * 6 * 4); c.bias = malloc(10 * 4);
    c.R = malloc(5 * 10 * 4); c.out = malloc(5 * 10 * 4);
    c.scratch_n = (size_t)chunk_rows * lora_scratch_floats(6, 2);
    c.scratch = malloc(c.scratch_n * 4);
    float *A = malloc(2 * 6 * 4), *Bm = malloc(4 * 2 * 4);
    float *dA = calloc(12, 4), *dB = calloc(8, 4), *dx = malloc(30 * 4);
    fill(c.x, 30, 1, &rng); fill(c.W, 60, 0.5f, &rng); fill(c.bias, 10, 0.5f, &rng); fill(c.R, 50, 1, &rng);
    fill(A, 12, 0.5f, &rng); fill(Bm, 8, 0.5f, &rng);
    c.h = (LoraHook){2, 6, 4, 3, 1.5f, dropout ? 0.3f : 0.0f, A, Bm, dA, dB};
    lin_loss(&c);
    // the block outside [3, 7) is the plain linear
    float *plain = malloc(50 * 4);
    linear_forward(plain, c.x, c.W, c.bias, 5, 6, 10);
    int changed = 0;
    for (int n = 0; n < 5; n++)
        for (int j = 0; j < 10; j++) {
            if (j < 3 || j >= 7) assert_true(c.out[n * 10 + j] == plain[n * 10 + j]);
            else changed += c.out[n * 10 + j] != plain[n * 10 + j];
        }
    assert_true(changed > 10);
    // dx = R W + LoRA part
    linear_backward(dx, c.R, c.W, 5, 6, 10, 0.0f);
    lora_backward(dx, c.R, 10, c.x, 5, &c.h, dropout, c.seed, c.scratch, c.scratch_n);
    check_grad("lora dx", c.x, 30, dx, lin_loss, &c, 1e-2f, 1e-4, 1e-2, 1);
    check_grad("lora dA", A, 12, dA, lin_loss, &c, 1e-2f, 1e-4, 1e-2, 1);
    check_grad("lora dB", Bm, 8, dB, lin_loss, &c, 1e-2f, 1e-4, 1e-2, 1);
    if (dropout) {
        // the mask really drops: the result differs from the dropout-free one
        c.dropout = 0;
        lin_loss(&c);
        float *nodrop = malloc(50 * 4);
        memcpy(nodrop, c.out, 200);
        c.dropout = 1;
        lin_loss(&c);
        assert_true(max_abs_diff(nodrop, c.out, 50) > 1e-3);
        free(nodrop);
    }
    free(c.x); free(c.W); free(c.bias); free(c.R); free(c.out); free(c.scratch); free(A); free(Bm);
    free(dA); free(dB); free(dx); free(plain);
}

static void test_linear_lora_grad(void **state) {
    (void)state;
    run_linear_lora(0, 5);
    run_linear_lora(1, 5);
    run_linear_lora(1, 2);   // rows in chunks of 2 (small scratch): same mask, same gradients
}

// ---------------------------------------------------------------------------------------------
// LM head and end to end on tiny synthetic models

static ModelConfig tiny_cfg(Arch arch) {
    ModelConfig c = {0};
    c.arch = arch;
    c.dim = 16;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = arch == ARCH_LLAMA ? 2 : 4;
    c.head_dim = 4;
    c.ffn_dim = 24;
    c.vocab_size = 37;
    c.max_seq_len = 32;
    c.norm_eps = 1e-5f;
    c.rope_theta = 10000.0f;
    c.tied_head = arch == ARCH_GPT2;
    c.bos_id = 1;
    c.eos_id = 2;
    return c;
}

typedef struct {
    const Model *m;
    RunState *rs;
    ModelAdapters *ad;
    int B, Tt;
    const int *tokens, *pos, *seg;
    int n;
    const int *rows, *targets;
    float *logp;
    const float *weights;
    uint64_t seed;
    int dropout;
} E2ECtx;

static float dlogp_weight(void *ctx, int i, float logp) {
    (void)logp;
    return ((E2ECtx *)ctx)->weights[i];
}

static double head_loss(void *p) {   // sum_i w_i logp_i over the current final hidden states
    E2ECtx *c = p;
    char err[FTK_ERR_LEN];
    assert_int_equal(lm_head_logprobs(c->m, c->rs, c->rows, c->targets, c->n, c->logp, NULL, NULL, NULL, err), 0);
    double s = 0;
    for (int i = 0; i < c->n; i++) s += (double)c->weights[i] * c->logp[i];
    return s;
}

static double e2e_loss(void *p) {
    E2ECtx *c = p;
    char err[FTK_ERR_LEN];
    uint64_t rng = c->seed;
    assert_int_equal(model_forward(c->m, c->ad, c->rs, c->tokens, c->B, c->Tt, c->pos, c->seg,
                                   c->dropout ? &rng : NULL, err), 0);
    return head_loss(c);
}

static void test_lm_head_grad(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    ModelConfig cfg = tiny_cfg(ARCH_LLAMA);
    Model m;
    assert_int_equal(model_init_synthetic(&m, &cfg, 5, err), 0);
    RunState *rs;
    assert_int_equal(runstate_create(&rs, &m, 2, 6, 1, err), 0);
    const int tokens[12] = {1, 5, 9, 30, 2, 7, 1, 3, 3, 36, 0, 11};
    const int rows[4] = {0, 3, 5, 5}, targets[4] = {5, 2, 9, 36};
    const float weights[4] = {-0.5f, 1.0f, 0.25f, -1.0f};
    float logp[4], ent[4];
    E2ECtx c = {&m, rs, NULL, 2, 6, tokens, NULL, NULL, 4, rows, targets, logp, weights, 0, 0};
    assert_int_equal(model_forward(&m, NULL, rs, tokens, 2, 6, NULL, NULL, NULL, err), 0);
    assert_int_equal(lm_head_logprobs(&m, rs, rows, targets, 4, logp, ent, dlogp_weight, &c, err), 0);
    // logp and entropy against an explicit log-softmax of the full logits
    float *logits = malloc((size_t)12 * 37 * 4);
    lm_head_logits(&m, runstate_final_hidden(rs), 12, logits);
    for (int i = 0; i < 4; i++) {
        const float *z = logits + (size_t)rows[i] * 37;
        double mx = z[0], s = 0, h = 0;
        for (int j = 1; j < 37; j++) mx = fmax(mx, z[j]);
        for (int j = 0; j < 37; j++) s += exp(z[j] - mx);
        for (int j = 0; j < 37; j++) {
            double lp = z[j] - mx - log(s);
            h -= exp(lp) * lp;
        }
        assert_true(fabs(logp[i] - (z[targets[i]] - mx - log(s))) < 1e-5);
        assert_true(fabs(ent[i] - h) < 1e-5);
    }
    float *dh = malloc((size_t)12 * 16 * 4);
    memcpy(dh, runstate_d_final_hidden(rs), (size_t)12 * 16 * 4);
    // untouched rows get no gradient
    for (int k = 0; k < 16; k++) assert_true(dh[1 * 16 + k] == 0.0f);
    check_grad("lm head d_hidden", runstate_final_hidden(rs), 12 * 16, dh, head_loss, &c, 1e-2f, 1e-4, 1e-2, 1);
    // bad rows / targets are errors
    const int bad_row[1] = {12}, bad_t[1] = {37}, ok[1] = {0};
    assert_int_not_equal(lm_head_logprobs(&m, rs, bad_row, ok, 1, logp, NULL, NULL, NULL, err), 0);
    assert_int_not_equal(lm_head_logprobs(&m, rs, ok, bad_t, 1, logp, NULL, NULL, NULL, err), 0);
    free(logits);
    free(dh);
    runstate_free(rs);
    model_free(&m);
}

// Hooks on a tiny model: slot list with (layer, slot); dims filled from the config.
typedef struct {
    int layer;
    LoraSlot slot;
} HookSpec;

static void make_hook(LoraHook *h, const ModelConfig *c, LoraSlot s, int r, float dropout, uint64_t *rng) {
    const int C = c->dim, F = c->ffn_dim, qd = model_q_dim(c), kvd = model_kv_dim(c);
    const int llama = c->arch == ARCH_LLAMA;
    int in = C, out = 0, off = 0;
    switch (s) {
    case LSLOT_Q: out = qd; break;
    case LSLOT_K: out = kvd; off = qd; break;
    case LSLOT_V: out = kvd; off = llama ? qd + kvd : 2 * C; break;
    case LSLOT_QKV: out = qd + 2 * kvd; break;
    case LSLOT_O: in = qd; out = C; break;
    case LSLOT_GATE: out = F; break;
    case LSLOT_UP: out = F; off = llama ? F : 0; break;
    case LSLOT_DOWN: in = F; out = C; break;
    default: break;
    }
    float *A = malloc((size_t)r * in * 4), *B = malloc((size_t)out * r * 4);
    fill(A, (size_t)r * in, 0.3f, rng);
    fill(B, (size_t)out * r, 0.3f, rng);
    *h = (LoraHook){r, in, out, off, 2.0f / r, dropout, A, B, calloc((size_t)r * in, 4), calloc((size_t)out * r, 4)};
}

static void run_e2e(Arch arch, const HookSpec *specs, int n_specs, int nv, int dropout, int packed) {
    char err[FTK_ERR_LEN];
    ModelConfig cfg = tiny_cfg(arch);
    Model m;
    assert_int_equal(model_init_synthetic(&m, &cfg, 17 + arch, err), 0);
    uint64_t rng = 99 + n_specs;
    LoraHook *hooks = calloc((size_t)cfg.n_layers * LSLOT_COUNT, sizeof(LoraHook));
    for (int i = 0; i < n_specs; i++)
        make_hook(&hooks[specs[i].layer * LSLOT_COUNT + specs[i].slot], &cfg, specs[i].slot, 2 + i % 2,
                  dropout ? 0.25f : 0.0f, &rng);
    float *prompt = nv ? malloc((size_t)nv * cfg.dim * 4) : NULL, *dprompt = nv ? calloc((size_t)nv * cfg.dim, 4) : NULL;
    if (nv) fill(prompt, (size_t)nv * cfg.dim, 0.5f, &rng);
    ModelAdapters ad = {hooks, nv, prompt, dprompt, 0};
    const int B = 2, Tt = 6;
    const int tokens[12] = {1, 5, 9, 30, 2, 7, 1, 3, 3, 36, 0, 11};
    const int pos[12] = {0, 1, 2, 0, 1, 2, 0, 1, 2, 3, 0, 1}, seg[12] = {0, 0, 0, 1, 1, 1, 4, 4, 4, 4, 6, 6};
    // response-style targets: row of real token t predicts token t+1 (rows include the virtual offset)
    const int T = nv + Tt;
    int rows[7], targets[7];
    const int pick[7][2] = {{0, 0}, {0, 1}, {0, 3}, {0, 4}, {1, 1}, {1, 2}, {1, 4}};
    float weights[7];
    for (int i = 0; i < 7; i++) {
        rows[i] = pick[i][0] * T + nv + pick[i][1];
        targets[i] = tokens[pick[i][0] * Tt + pick[i][1] + 1];
        weights[i] = -1.0f / 7;   // loss = -mean logp
    }
    RunState *rs;
    assert_int_equal(runstate_create(&rs, &m, B, T, 1, err), 0);
    float logp[7];
    E2ECtx c = {&m, rs, &ad, B, Tt, tokens, packed ? pos : NULL, packed ? seg : NULL, 7, rows, targets, logp,
                weights, 4242, dropout};
    uint64_t drng = c.seed;
    assert_int_equal(model_forward(&m, &ad, rs, tokens, B, Tt, c.pos, c.seg, dropout ? &drng : NULL, err), 0);
    assert_int_equal(lm_head_logprobs(&m, rs, rows, targets, 7, logp, NULL, dlogp_weight, &c, err), 0);
    assert_int_equal(model_backward(&m, &ad, rs, err), 0);
    // finite differences on every adapter entry, with the same dropout masks
    for (int i = 0; i < n_specs; i++) {
        LoraHook *h = &hooks[specs[i].layer * LSLOT_COUNT + specs[i].slot];
        char what[64];
        snprintf(what, sizeof what, "layer %d slot %d dA", specs[i].layer, specs[i].slot);
        double gmax = 0;
        for (int k = 0; k < h->r * h->in; k++) gmax = fmax(gmax, fabsf(h->dA[k]));
        assert_true(gmax > 1e-4);   // the check is not vacuous
        check_grad(what, (float *)h->A, (size_t)h->r * h->in, h->dA, e2e_loss, &c, 1e-2f, 2e-4, 2e-2, 1);
        snprintf(what, sizeof what, "layer %d slot %d dB", specs[i].layer, specs[i].slot);
        check_grad(what, (float *)h->B, (size_t)h->out * h->r, h->dB, e2e_loss, &c, 1e-2f, 2e-4, 2e-2, 1);
    }
    if (nv) check_grad("dprompt", prompt, (size_t)nv * cfg.dim, dprompt, e2e_loss, &c, 1e-2f, 2e-4, 2e-2, 1);
    // a second forward+backward accumulates: grads double
    if (n_specs) {
        LoraHook *h = &hooks[specs[0].layer * LSLOT_COUNT + specs[0].slot];
        float before = h->dB[0];
        drng = c.seed;
        assert_int_equal(model_forward(&m, &ad, rs, tokens, B, Tt, c.pos, c.seg, dropout ? &drng : NULL, err), 0);
        assert_int_equal(lm_head_logprobs(&m, rs, rows, targets, 7, logp, NULL, dlogp_weight, &c, err), 0);
        assert_int_equal(model_backward(&m, &ad, rs, err), 0);
        assert_true(fabsf(h->dB[0] - 2 * before) <= 1e-5f * (1 + fabsf(before)));
    }
    for (int i = 0; i < cfg.n_layers * LSLOT_COUNT; i++) {
        free((void *)hooks[i].A); free((void *)hooks[i].B); free(hooks[i].dA); free(hooks[i].dB);
    }
    free(hooks); free(prompt); free(dprompt);
    runstate_free(rs);
    model_free(&m);
}

static const HookSpec LLAMA_ALL[] = {{0, LSLOT_Q}, {0, LSLOT_V}, {0, LSLOT_GATE}, {1, LSLOT_K}, {1, LSLOT_O},
                                     {1, LSLOT_UP}, {1, LSLOT_DOWN}};
static const HookSpec LLAMA_TOP[] = {{1, LSLOT_Q}, {1, LSLOT_DOWN}};
static const HookSpec LLAMA_TOP_MLP[] = {{1, LSLOT_UP}};
static const HookSpec GPT2_ALL[] = {{0, LSLOT_QKV}, {0, LSLOT_DOWN}, {1, LSLOT_Q}, {1, LSLOT_V}, {1, LSLOT_O},
                                    {1, LSLOT_UP}};

static void test_e2e_llama(void **state) {
    (void)state;
    run_e2e(ARCH_LLAMA, LLAMA_ALL, 7, 2, 0, 0);
}
static void test_e2e_llama_dropout_packed(void **state) {
    (void)state;
    run_e2e(ARCH_LLAMA, LLAMA_ALL, 7, 0, 1, 1);
}
static void test_e2e_llama_skip_lower_layers(void **state) {
    (void)state;
    run_e2e(ARCH_LLAMA, LLAMA_TOP, 2, 0, 0, 0);
    run_e2e(ARCH_LLAMA, LLAMA_TOP_MLP, 1, 0, 1, 0);
    run_e2e(ARCH_LLAMA, NULL, 0, 3, 0, 1);   // soft prompt only
}
static void test_e2e_gpt2(void **state) {
    (void)state;
    run_e2e(ARCH_GPT2, GPT2_ALL, 6, 2, 0, 0);
    run_e2e(ARCH_GPT2, GPT2_ALL, 6, 1, 1, 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rmsnorm_value),
        cmocka_unit_test(test_rmsnorm_grad),
        cmocka_unit_test(test_layernorm_grad),
        cmocka_unit_test(test_rope_grad),
        cmocka_unit_test(test_attention_grad_mha),
        cmocka_unit_test(test_attention_grad_gqa_prompt),
        cmocka_unit_test(test_attention_grad_packed),
        cmocka_unit_test(test_attention_grad_long),
        cmocka_unit_test(test_attention_cached_matches),
        cmocka_unit_test(test_swiglu_gelu_grad),
        cmocka_unit_test(test_residual),
        cmocka_unit_test(test_embedding_grad),
        cmocka_unit_test(test_linear_lora_grad),
        cmocka_unit_test(test_lm_head_grad),
        cmocka_unit_test(test_e2e_llama),
        cmocka_unit_test(test_e2e_llama_dropout_packed),
        cmocka_unit_test(test_e2e_llama_skip_lower_layers),
        cmocka_unit_test(test_e2e_gpt2),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
