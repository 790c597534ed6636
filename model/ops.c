// ops.c — per-op forward/backward kernels of the transformer (see ops.h). Attention is in attention.c.
#include "model/ops.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#include "model/common.h"
#include "model/parallel.h"
#include "model/weights_bf16.h"

// ---------------------------------------------------------------------------------------------
// Threading. Every loop runs over par_for on tasks fixed by the shape (one task per row, or
// FLAT_CHUNK elements of a flat loop), and each element is computed by the same code whichever
// thread runs its task: results do not depend on the thread count.

#define FLAT_CHUNK 16384   // elements per task of a flat elementwise loop

static int flat_tasks(size_t n) { return (int)((n + FLAT_CHUNK - 1) / FLAT_CHUNK); }
static size_t flat_lo(int task) { return (size_t)task * FLAT_CHUNK; }
static size_t flat_hi(int task, size_t n) { return flat_lo(task) + FLAT_CHUNK < n ? flat_lo(task) + FLAT_CHUNK : n; }

// ---------------------------------------------------------------------------------------------
// vectorised exp sum and max

#define LANES 16

float exp_shift_sum(float *x, int n, float shift) {
    float acc[LANES] = {0};
    int j = 0;
    for (; j + LANES <= n; j += LANES)
        for (int l = 0; l < LANES; l++) {
            const float e = exp_poly(x[j + l] - shift);
            x[j + l] = e;
            acc[l] += e;
        }
    for (int l = 0; j < n; j++, l++) {
        const float e = exp_poly(x[j] - shift);
        x[j] = e;
        acc[l] += e;
    }
    float sum = 0.0f;
    for (int l = 0; l < LANES; l++) sum += acc[l];
    return sum;
}

float row_max(const float *x, int n) {
    float acc[LANES];
    for (int l = 0; l < LANES; l++) acc[l] = x[0];
    int j = 0;
    for (; j + LANES <= n; j += LANES)
        for (int l = 0; l < LANES; l++) acc[l] = x[j + l] > acc[l] ? x[j + l] : acc[l];
    float mx = x[0];
    for (; j < n; j++) mx = x[j] > mx ? x[j] : mx;
    for (int l = 0; l < LANES; l++) mx = acc[l] > mx ? acc[l] : mx;
    return mx;
}

float row_dot(const float *a, const float *b, int n) {
    float acc[LANES] = {0};
    int j = 0;
    for (; j + LANES <= n; j += LANES)
        for (int l = 0; l < LANES; l++) acc[l] += a[j + l] * b[j + l];
    for (int l = 0; j < n; j++, l++) acc[l] += a[j] * b[j];
    float sum = 0.0f;
    for (int l = 0; l < LANES; l++) sum += acc[l];
    return sum;
}

// ---------------------------------------------------------------------------------------------
// embedding


typedef struct {
    float *out;
    const int *tokens, *positions;
    const float *tok_emb, *prompt, *pos_emb;
    const uint16_t *tok_emb_bf16;
    int nv, T, Tt, C;
} EmbedJob;

static void embedding_row(void *ctx, int row) {
    const EmbedJob *e = ctx;
    const int b = row / e->T, j = row % e->T, C = e->C;
    float *o = e->out + (size_t)row * C;
    const float *src;
    if (j < e->nv) {
        src = e->prompt + (size_t)j * C;
    } else if (e->tok_emb) {
        src = e->tok_emb + (size_t)e->tokens[b * e->Tt + j - e->nv] * C;
    } else {   // bf16 table: the row is exact in fp32 (bf16 is its upper half)
        const uint16_t *r = e->tok_emb_bf16 + (size_t)e->tokens[b * e->Tt + j - e->nv] * C;
        bf16_expand(o, r, (size_t)C);
        src = o;
    }
    if (e->pos_emb) {
        const float *pe = e->pos_emb + (size_t)e->positions[row] * C;
        for (int c = 0; c < C; c++) o[c] = src[c] + pe[c];
    } else if (src != o) {
        memcpy(o, src, (size_t)C * sizeof(float));
    }
}

void embedding_forward(float *out, const int *tokens, const float *tok_emb, const uint16_t *tok_emb_bf16,
                       const float *prompt, int nv, const float *pos_emb, const int *positions, int B, int Tt,
                       int C) {
    EmbedJob e = {out, tokens, positions, tok_emb, prompt, pos_emb, tok_emb_bf16, nv, nv + Tt, Tt, C};
    par_for(B * (nv + Tt), embedding_row, &e);
}

typedef struct {
    float *dprompt;
    const float *dout;
    int B, T, C;
} EmbedBackJob;

// Virtual row j of the prompt: the sum over sequences in order b = 0, 1, ...
static void embedding_back_row(void *ctx, int j) {
    const EmbedBackJob *e = ctx;
    float *dp = e->dprompt + (size_t)j * e->C;
    for (int b = 0; b < e->B; b++) {
        const float *d = e->dout + ((size_t)b * e->T + j) * e->C;
        for (int c = 0; c < e->C; c++) dp[c] += d[c];
    }
}

void embedding_backward(float *dprompt, const float *dout, int B, int T, int nv, int C) {
    EmbedBackJob e = {dprompt, dout, B, T, C};
    par_for(nv, embedding_back_row, &e);
}

// ---------------------------------------------------------------------------------------------
// residual

typedef struct {
    float *a, *b;
    const float *x, *y;
    size_t n;
} FlatJob;

static void residual_fwd_task(void *ctx, int t) {
    const FlatJob *f = ctx;
    for (size_t i = flat_lo(t), hi = flat_hi(t, f->n); i < hi; i++) f->a[i] = f->x[i] + f->y[i];
}

void residual_forward(float *out, const float *x, const float *branch, size_t n) {
    FlatJob f = {out, NULL, x, branch, n};
    par_for(flat_tasks(n), residual_fwd_task, &f);
}

static void residual_bwd_task(void *ctx, int t) {
    const FlatJob *f = ctx;
    for (size_t i = flat_lo(t), hi = flat_hi(t, f->n); i < hi; i++) {
        f->a[i] += f->x[i];
        f->b[i] += f->x[i];
    }
}

void residual_backward(float *dx, float *dbranch, const float *dout, size_t n) {
    FlatJob f = {dx, dbranch, dout, NULL, n};
    par_for(flat_tasks(n), residual_bwd_task, &f);
}

// ---------------------------------------------------------------------------------------------
// norms: one task per row

typedef struct {
    float *out, *mean, *rstd;
    const float *x, *w, *b, *dout;
    const float *mean_in, *rstd_in;
    int C;
    float eps;
} NormJob;

static void rmsnorm_fwd_row(void *ctx, int n) {
    const NormJob *j = ctx;
    const int C = j->C;
    const float *xr = j->x + (size_t)n * C;
    float *o = j->out + (size_t)n * C;
    float ss = 0.0f;
    for (int c = 0; c < C; c++) ss += xr[c] * xr[c];
    float r = 1.0f / sqrtf(ss / C + j->eps);
    j->rstd[n] = r;
    for (int c = 0; c < C; c++) o[c] = xr[c] * r * j->w[c];
}

void rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int N, int C, float eps) {
    NormJob j = {.out = out, .rstd = rstd, .x = x, .w = w, .C = C, .eps = eps};
    par_for(N, rmsnorm_fwd_row, &j);
}

// y_c = x_c r w_c with r = (mean(x^2) + eps)^(-1/2), dr/dx_c = -r^3 x_c / C:
// dx_c = r w_c dy_c - (r^3 / C) x_c sum_k(w_k dy_k x_k).
static void rmsnorm_bwd_row(void *ctx, int n) {
    const NormJob *j = ctx;
    const int C = j->C;
    const float *xr = j->x + (size_t)n * C, *dy = j->dout + (size_t)n * C, *w = j->w;
    float *d = j->out + (size_t)n * C;
    const float r = j->rstd_in[n];
    float dot = 0.0f;
    for (int c = 0; c < C; c++) dot += w[c] * dy[c] * xr[c];
    const float k = r * r * r * dot / C;
    for (int c = 0; c < C; c++) d[c] += r * w[c] * dy[c] - k * xr[c];
}

void rmsnorm_backward(float *dx, const float *dout, const float *x, const float *w, const float *rstd,
                      int N, int C) {
    NormJob j = {.out = dx, .x = x, .w = w, .dout = dout, .rstd_in = rstd, .C = C};
    par_for(N, rmsnorm_bwd_row, &j);
}

static void layernorm_fwd_row(void *ctx, int n) {
    const NormJob *j = ctx;
    const int C = j->C;
    const float *xr = j->x + (size_t)n * C;
    float *o = j->out + (size_t)n * C;
    float m = 0.0f;
    for (int c = 0; c < C; c++) m += xr[c];
    m /= C;
    float v = 0.0f;
    for (int c = 0; c < C; c++) v += (xr[c] - m) * (xr[c] - m);
    v /= C;
    float r = 1.0f / sqrtf(v + j->eps);
    j->mean[n] = m;
    j->rstd[n] = r;
    for (int c = 0; c < C; c++) o[c] = (xr[c] - m) * r * j->w[c] + j->b[c];
}

void layernorm_forward(float *out, float *mean, float *rstd, const float *x, const float *w, const float *b,
                       int N, int C, float eps) {
    NormJob j = {.out = out, .mean = mean, .rstd = rstd, .x = x, .w = w, .b = b, .C = C, .eps = eps};
    par_for(N, layernorm_fwd_row, &j);
}

// With xhat = (x - mean) r and g = dy * w: dx = r (g - mean(g) - xhat mean(g xhat)).
static void layernorm_bwd_row(void *ctx, int n) {
    const NormJob *j = ctx;
    const int C = j->C;
    const float *xr = j->x + (size_t)n * C, *dy = j->dout + (size_t)n * C, *w = j->w;
    float *d = j->out + (size_t)n * C;
    const float m = j->mean_in[n], r = j->rstd_in[n];
    float g_mean = 0.0f, gx_mean = 0.0f;
    for (int c = 0; c < C; c++) {
        float g = dy[c] * w[c];
        g_mean += g;
        gx_mean += g * (xr[c] - m) * r;
    }
    g_mean /= C;
    gx_mean /= C;
    for (int c = 0; c < C; c++) {
        float xhat = (xr[c] - m) * r;
        d[c] += r * (dy[c] * w[c] - g_mean - xhat * gx_mean);
    }
}

void layernorm_backward(float *dx, const float *dout, const float *x, const float *w, const float *mean,
                        const float *rstd, int N, int C) {
    NormJob j = {.out = dx, .x = x, .w = w, .dout = dout, .mean_in = mean, .rstd_in = rstd, .C = C};
    par_for(N, layernorm_bwd_row, &j);
}

// ---------------------------------------------------------------------------------------------
// RoPE

typedef struct {
    float *x, *cos_t, *sin_t;
    const float *cos_in, *sin_in;
    const int *positions;
    int ld, n_heads, hd;
    float theta, sign;
} RopeJob;

static void rope_tables_row(void *ctx, int n) {
    const RopeJob *j = ctx;
    const int half = j->hd / 2;
    for (int i = 0; i < half; i++) {
        double inv_freq = pow((double)j->theta, -2.0 * i / j->hd);
        double a = (double)j->positions[n] * inv_freq;
        j->cos_t[(size_t)n * half + i] = (float)cos(a);
        j->sin_t[(size_t)n * half + i] = (float)sin(a);
    }
}

void rope_tables(float *cos_t, float *sin_t, const int *positions, int N, int hd, float theta) {
    RopeJob j = {.cos_t = cos_t, .sin_t = sin_t, .positions = positions, .hd = hd, .theta = theta};
    par_for(N, rope_tables_row, &j);
}

// sign = +1 rotates by +angle (forward), -1 by -angle (backward = transpose of the rotation).
static void rope_rotate_row(void *ctx, int n) {
    const RopeJob *j = ctx;
    const int half = j->hd / 2;
    const float *cs = j->cos_in + (size_t)n * half, *sn = j->sin_in + (size_t)n * half;
    for (int h = 0; h < j->n_heads; h++) {
        float *v = j->x + (size_t)n * j->ld + (size_t)h * j->hd;
        for (int i = 0; i < half; i++) {
            float a = v[i], b = v[i + half], c = cs[i], s = j->sign * sn[i];
            v[i] = a * c - b * s;
            v[i + half] = b * c + a * s;
        }
    }
}

static void rope_rotate(float *x, int ld, int N, int n_heads, int hd, const float *cos_t, const float *sin_t,
                        float sign) {
    RopeJob j = {.x = x, .cos_in = cos_t, .sin_in = sin_t, .ld = ld, .n_heads = n_heads, .hd = hd, .sign = sign};
    par_for(N, rope_rotate_row, &j);
}

void rope_forward(float *x, int ld, int N, int n_heads, int hd, const float *cos_t, const float *sin_t) {
    rope_rotate(x, ld, N, n_heads, hd, cos_t, sin_t, 1.0f);
}

void rope_backward(float *dx, int ld, int N, int n_heads, int hd, const float *cos_t, const float *sin_t) {
    rope_rotate(dx, ld, N, n_heads, hd, cos_t, sin_t, -1.0f);
}

// ---------------------------------------------------------------------------------------------
// activations (exp_poly: the loops vectorise)

typedef struct {
    float *out;
    const float *in, *dout;
    int F;
    size_t n;
} ActJob;

static void swiglu_fwd_row(void *ctx, int n) {
    const ActJob *j = ctx;
    const int F = j->F;
    const float *g = j->in + (size_t)n * 2 * F, *u = g + F;
    float *o = j->out + (size_t)n * F;
    for (int i = 0; i < F; i++) o[i] = g[i] / (1.0f + exp_poly(-g[i])) * u[i];
}

void swiglu_forward(float *out, const float *gu, int N, int F) {
    ActJob j = {.out = out, .in = gu, .F = F};
    par_for(N, swiglu_fwd_row, &j);
}

// silu(g) = g s(g) with s the sigmoid; silu'(g) = s(g) (1 + g (1 - s(g))).
static void swiglu_bwd_row(void *ctx, int n) {
    const ActJob *j = ctx;
    const int F = j->F;
    const float *g = j->in + (size_t)n * 2 * F, *u = g + F, *dy = j->dout + (size_t)n * F;
    float *dg = j->out + (size_t)n * 2 * F, *du = dg + F;
    for (int i = 0; i < F; i++) {
        float s = 1.0f / (1.0f + exp_poly(-g[i]));
        du[i] = dy[i] * g[i] * s;
        dg[i] = dy[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
    }
}

void swiglu_backward(float *dgu, const float *dout, const float *gu, int N, int F) {
    ActJob j = {.out = dgu, .in = gu, .dout = dout, .F = F};
    par_for(N, swiglu_bwd_row, &j);
}

#define GELU_K 0.7978845608028654f   // sqrt(2/pi)
#define GELU_C 0.044715f

// tanh(u) = 1 - 2 / (exp(2u) + 1): one exp, absolute error ~1e-7, saturating cleanly to +-1
// (exp_poly goes to inf or 0).
static inline float tanh_fast(float u) { return 1.0f - 2.0f / (exp_poly(2.0f * u) + 1.0f); }

static void gelu_fwd_task(void *ctx, int t) {
    const ActJob *j = ctx;
    for (size_t i = flat_lo(t), hi = flat_hi(t, j->n); i < hi; i++) {
        float v = j->in[i];
        j->out[i] = 0.5f * v * (1.0f + tanh_fast(GELU_K * (v + GELU_C * v * v * v)));
    }
}

void gelu_forward(float *out, const float *x, size_t n) {
    ActJob j = {.out = out, .in = x, .n = n};
    par_for(flat_tasks(n), gelu_fwd_task, &j);
}

// d/dx 0.5 x (1 + tanh u) = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) du/dx, du/dx = k (1 + 3c x^2).
static void gelu_bwd_task(void *ctx, int t) {
    const ActJob *j = ctx;
    for (size_t i = flat_lo(t), hi = flat_hi(t, j->n); i < hi; i++) {
        float v = j->in[i];
        float th = tanh_fast(GELU_K * (v + GELU_C * v * v * v));
        float du = GELU_K * (1.0f + 3.0f * GELU_C * v * v);
        j->out[i] = j->dout[i] * (0.5f * (1.0f + th) + 0.5f * v * (1.0f - th * th) * du);
    }
}

void gelu_backward(float *dx, const float *dout, const float *x, size_t n) {
    ActJob j = {.out = dx, .in = x, .dout = dout, .n = n};
    par_for(flat_tasks(n), gelu_bwd_task, &j);
}

// ---------------------------------------------------------------------------------------------
// linear + LoRA

typedef struct {
    float *out;
    const float *bias;
    int n_out;
} BiasJob;

static void bias_fill_row(void *ctx, int n) {
    const BiasJob *j = ctx;
    memcpy(j->out + (size_t)n * j->n_out, j->bias, (size_t)j->n_out * sizeof(float));
}

void linear_forward(float *out, const float *x, const float *W, const float *bias, int N, int n_in, int n_out) {
    // With a bias the rows start as the bias and the product accumulates onto them (beta 1): one
    // write pass instead of OpenBLAS's zeroing pass for beta 0 plus a read-add-write bias pass.
    if (bias) {
        BiasJob j = {out, bias, n_out};
        par_for(N, bias_fill_row, &j);
    }
    // (N, n_in) @ (n_in, n_out) -> (N, n_out)
    par_sgemm(CblasNoTrans, CblasTrans, N, n_out, n_in, 1.0f, x, n_in, W, n_in, bias ? 1.0f : 0.0f, out, n_out);
}

void linear_backward(float *dx, const float *dout, const float *W, int N, int n_in, int n_out, float beta) {
    // (N, n_out) @ (n_out, n_in) -> (N, n_in)
    par_sgemm(CblasNoTrans, CblasNoTrans, N, n_in, n_out, 1.0f, dout, n_out, W, n_in, beta, dx, n_in);
}

size_t lora_scratch_floats(int in, int r) { return 2 * (size_t)in + 2 * (size_t)r; }

static int lora_chunk_rows(size_t scratch_floats, const LoraHook *h, int N) {
    size_t rows = scratch_floats / lora_scratch_floats(h->in, h->r);
    if (rows < 1) rows = 1;   // callers size scratch for at least one row
    return rows > (size_t)N ? N : (int)rows;
}

static void mul_task(void *ctx, int t) {
    const FlatJob *f = ctx;
    for (size_t i = flat_lo(t), hi = flat_hi(t, f->n); i < hi; i++) f->a[i] *= f->x[i];
}

// a[i] *= x[i]
static void mul_inplace(float *a, const float *x, size_t n) {
    FlatJob f = {a, NULL, x, NULL, n};
    par_for(flat_tasks(n), mul_task, &f);
}

static void fma_task(void *ctx, int t) {
    const FlatJob *f = ctx;
    for (size_t i = flat_lo(t), hi = flat_hi(t, f->n); i < hi; i++) f->a[i] += f->x[i] * f->y[i];
}

// a[i] += x[i] * y[i]
static void fma_inplace(float *a, const float *x, const float *y, size_t n) {
    FlatJob f = {a, NULL, x, y, n};
    par_for(flat_tasks(n), fma_task, &f);
}

// Inverted-dropout keep factors for n inputs, drawn in order from *rng: 0 with probability p,
// else 1/(1-p).
static void dropout_factors(float *m, size_t n, float p, uint64_t *rng) {
    const float keep = 1.0f / (1.0f - p);
    for (size_t i = 0; i < n; i++) m[i] = ftk_rand_uniform(rng) < p ? 0.0f : keep;
}

void lora_forward(float *out, int ldo, const float *x, int N, const LoraHook *h, uint64_t *rng,
                  float *scratch, size_t scratch_floats) {
    const int in = h->in, r = h->r;
    const int drop = rng != NULL && h->dropout > 0.0f;
    const int rows_per = lora_chunk_rows(scratch_floats, h, N);
    for (int n0 = 0; n0 < N; n0 += rows_per) {
        const int rows = N - n0 < rows_per ? N - n0 : rows_per;
        const float *xc = x + (size_t)n0 * in;
        float *xd = scratch;                              // (rows, in) drop(x)
        float *xa = scratch + (size_t)rows * in;          // (rows, r)
        if (drop) {
            dropout_factors(xd, (size_t)rows * in, h->dropout, rng);
            mul_inplace(xd, xc, (size_t)rows * in);
            xc = xd;
        }
        // (rows, in) @ (in, r) -> (rows, r)
        par_sgemm(CblasNoTrans, CblasTrans, rows, r, in, 1.0f, xc, in, h->A, in, 0.0f, xa, r);
        // out block += scale * (rows, r) @ (r, out)
        par_sgemm(CblasNoTrans, CblasTrans, rows, h->out, r, h->scale, xa, r, h->B, r, 1.0f,
                    out + (size_t)n0 * ldo + h->out_offset, ldo);
    }
}

void lora_backward(float *dx, const float *dout, int ldo, const float *x, int N, const LoraHook *h,
                   int use_dropout, uint64_t rng_at_forward, float *scratch, size_t scratch_floats) {
    const int in = h->in, r = h->r, out = h->out;
    const int drop = use_dropout && h->dropout > 0.0f;
    uint64_t rng = rng_at_forward;
    const int rows_per = lora_chunk_rows(scratch_floats, h, N);
    for (int n0 = 0; n0 < N; n0 += rows_per) {
        const int rows = N - n0 < rows_per ? N - n0 : rows_per;
        const float *xc = x + (size_t)n0 * in;
        const float *dy = dout + (size_t)n0 * ldo + h->out_offset;   // (rows, out), stride ldo
        float *mask = scratch;                              // (rows, in) keep factors
        float *xd = mask + (size_t)rows * in;               // (rows, in) drop(x), later (dy B) A
        float *xa = xd + (size_t)rows * in;                 // (rows, r)
        float *dyb = xa + (size_t)rows * r;                 // (rows, r)
        if (drop) {
            dropout_factors(mask, (size_t)rows * in, h->dropout, &rng);
            memcpy(xd, mask, (size_t)rows * in * sizeof(float));
            mul_inplace(xd, xc, (size_t)rows * in);
            xc = xd;
        }
        // dy B: (rows, out) @ (out, r) -> (rows, r)
        par_sgemm(CblasNoTrans, CblasNoTrans, rows, r, out, 1.0f, dy, ldo, h->B, r, 0.0f, dyb, r);
        if (h->dB) {
            // drop(x) A^T: (rows, in) @ (in, r) -> (rows, r); dB += scale * (out, rows) @ (rows, r)
            par_sgemm(CblasNoTrans, CblasTrans, rows, r, in, 1.0f, xc, in, h->A, in, 0.0f, xa, r);
            par_sgemm(CblasTrans, CblasNoTrans, out, r, rows, h->scale, dy, ldo, xa, r, 1.0f,
                        h->dB, r);
        }
        if (h->dA)  // dA += scale * (r, rows) @ (rows, in)
            par_sgemm(CblasTrans, CblasNoTrans, r, in, rows, h->scale, dyb, r, xc, in, 1.0f,
                        h->dA, in);
        if (dx) {
            float *dxc = dx + (size_t)n0 * in;
            if (drop) {
                // (dy B) A: (rows, r) @ (r, in) -> (rows, in), then through the mask
                par_sgemm(CblasNoTrans, CblasNoTrans, rows, in, r, h->scale, dyb, r, h->A, in,
                            0.0f, xd, in);
                fma_inplace(dxc, xd, mask, (size_t)rows * in);
            } else {
                par_sgemm(CblasNoTrans, CblasNoTrans, rows, in, r, h->scale, dyb, r, h->A, in,
                            1.0f, dxc, in);
            }
        }
    }
}
