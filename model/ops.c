// ops.c — per-op forward/backward kernels of the transformer (see ops.h). Attention is in attention.c.
#include "model/ops.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#include "model/common.h"

// ---------------------------------------------------------------------------------------------
// embedding

void embedding_forward(float *out, const int *tokens, const float *tok_emb, const float *prompt, int nv,
                       const float *pos_emb, const int *positions, int B, int Tt, int C) {
    const int T = nv + Tt;
    for (int b = 0; b < B; b++) {
        for (int j = 0; j < T; j++) {
            float *o = out + ((size_t)b * T + j) * C;
            const float *src = j < nv ? prompt + (size_t)j * C : tok_emb + (size_t)tokens[b * Tt + j - nv] * C;
            if (pos_emb) {
                const float *pe = pos_emb + (size_t)positions[b * T + j] * C;
                for (int c = 0; c < C; c++) o[c] = src[c] + pe[c];
            } else {
                memcpy(o, src, (size_t)C * sizeof(float));
            }
        }
    }
}

void embedding_backward(float *dprompt, const float *dout, int B, int T, int nv, int C) {
    for (int b = 0; b < B; b++)
        for (int j = 0; j < nv; j++) {
            const float *d = dout + ((size_t)b * T + j) * C;
            float *dp = dprompt + (size_t)j * C;
            for (int c = 0; c < C; c++) dp[c] += d[c];
        }
}

// ---------------------------------------------------------------------------------------------
// residual

void residual_forward(float *out, const float *x, const float *branch, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = x[i] + branch[i];
}

void residual_backward(float *dx, float *dbranch, const float *dout, size_t n) {
    for (size_t i = 0; i < n; i++) {
        dx[i] += dout[i];
        dbranch[i] += dout[i];
    }
}

// ---------------------------------------------------------------------------------------------
// RMSNorm

void rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int N, int C, float eps) {
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * C;
        float *o = out + (size_t)n * C;
        float ss = 0.0f;
        for (int c = 0; c < C; c++) ss += xr[c] * xr[c];
        float r = 1.0f / sqrtf(ss / C + eps);
        rstd[n] = r;
        for (int c = 0; c < C; c++) o[c] = xr[c] * r * w[c];
    }
}

// y_c = x_c r w_c with r = (mean(x^2) + eps)^(-1/2), dr/dx_c = -r^3 x_c / C:
// dx_c = r w_c dy_c - (r^3 / C) x_c sum_k(w_k dy_k x_k).
void rmsnorm_backward(float *dx, const float *dout, const float *x, const float *w, const float *rstd,
                      int N, int C) {
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * C, *dy = dout + (size_t)n * C;
        float *d = dx + (size_t)n * C;
        const float r = rstd[n];
        float dot = 0.0f;
        for (int c = 0; c < C; c++) dot += w[c] * dy[c] * xr[c];
        const float k = r * r * r * dot / C;
        for (int c = 0; c < C; c++) d[c] += r * w[c] * dy[c] - k * xr[c];
    }
}

// ---------------------------------------------------------------------------------------------
// LayerNorm

void layernorm_forward(float *out, float *mean, float *rstd, const float *x, const float *w, const float *b,
                       int N, int C, float eps) {
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * C;
        float *o = out + (size_t)n * C;
        float m = 0.0f;
        for (int c = 0; c < C; c++) m += xr[c];
        m /= C;
        float v = 0.0f;
        for (int c = 0; c < C; c++) v += (xr[c] - m) * (xr[c] - m);
        v /= C;
        float r = 1.0f / sqrtf(v + eps);
        mean[n] = m;
        rstd[n] = r;
        for (int c = 0; c < C; c++) o[c] = (xr[c] - m) * r * w[c] + b[c];
    }
}

// With xhat = (x - mean) r and g = dy * w: dx = r (g - mean(g) - xhat mean(g xhat)).
void layernorm_backward(float *dx, const float *dout, const float *x, const float *w, const float *mean,
                        const float *rstd, int N, int C) {
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * C, *dy = dout + (size_t)n * C;
        float *d = dx + (size_t)n * C;
        const float m = mean[n], r = rstd[n];
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
}

// ---------------------------------------------------------------------------------------------
// RoPE

void rope_tables(float *cos_t, float *sin_t, const int *positions, int N, int hd, float theta) {
    const int half = hd / 2;
    for (int n = 0; n < N; n++) {
        for (int i = 0; i < half; i++) {
            double inv_freq = pow((double)theta, -2.0 * i / hd);
            double a = (double)positions[n] * inv_freq;
            cos_t[(size_t)n * half + i] = (float)cos(a);
            sin_t[(size_t)n * half + i] = (float)sin(a);
        }
    }
}

// sign = +1 rotates by +angle (forward), -1 by -angle (backward = transpose of the rotation).
static void rope_rotate(float *x, int ld, int N, int n_heads, int hd, const float *cos_t, const float *sin_t,
                        float sign) {
    const int half = hd / 2;
    for (int n = 0; n < N; n++) {
        const float *cs = cos_t + (size_t)n * half, *sn = sin_t + (size_t)n * half;
        for (int h = 0; h < n_heads; h++) {
            float *v = x + (size_t)n * ld + (size_t)h * hd;
            for (int i = 0; i < half; i++) {
                float a = v[i], b = v[i + half], c = cs[i], s = sign * sn[i];
                v[i] = a * c - b * s;
                v[i + half] = b * c + a * s;
            }
        }
    }
}

void rope_forward(float *x, int ld, int N, int n_heads, int hd, const float *cos_t, const float *sin_t) {
    rope_rotate(x, ld, N, n_heads, hd, cos_t, sin_t, 1.0f);
}

void rope_backward(float *dx, int ld, int N, int n_heads, int hd, const float *cos_t, const float *sin_t) {
    rope_rotate(dx, ld, N, n_heads, hd, cos_t, sin_t, -1.0f);
}

// ---------------------------------------------------------------------------------------------
// activations

void swiglu_forward(float *out, const float *gu, int N, int F) {
    for (int n = 0; n < N; n++) {
        const float *g = gu + (size_t)n * 2 * F, *u = g + F;
        float *o = out + (size_t)n * F;
        for (int i = 0; i < F; i++) o[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
    }
}

// silu(g) = g s(g) with s the sigmoid; silu'(g) = s(g) (1 + g (1 - s(g))).
void swiglu_backward(float *dgu, const float *dout, const float *gu, int N, int F) {
    for (int n = 0; n < N; n++) {
        const float *g = gu + (size_t)n * 2 * F, *u = g + F, *dy = dout + (size_t)n * F;
        float *dg = dgu + (size_t)n * 2 * F, *du = dg + F;
        for (int i = 0; i < F; i++) {
            float s = 1.0f / (1.0f + expf(-g[i]));
            du[i] = dy[i] * g[i] * s;
            dg[i] = dy[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
        }
    }
}

#define GELU_K 0.7978845608028654f   // sqrt(2/pi)
#define GELU_C 0.044715f

// tanh(u) = 1 - 2 / (exp(2u) + 1): one expf (several times cheaper than tanhf), absolute error
// ~1e-7, saturating cleanly to +-1 (exp overflows to inf or underflows to 0).
static inline float tanh_fast(float u) { return 1.0f - 2.0f / (expf(2.0f * u) + 1.0f); }

void gelu_forward(float *out, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        out[i] = 0.5f * v * (1.0f + tanh_fast(GELU_K * (v + GELU_C * v * v * v)));
    }
}

// d/dx 0.5 x (1 + tanh u) = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) du/dx, du/dx = k (1 + 3c x^2).
void gelu_backward(float *dx, const float *dout, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        float t = tanh_fast(GELU_K * (v + GELU_C * v * v * v));
        float du = GELU_K * (1.0f + 3.0f * GELU_C * v * v);
        dx[i] = dout[i] * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du);
    }
}

// ---------------------------------------------------------------------------------------------
// linear + LoRA

void linear_forward(float *out, const float *x, const float *W, const float *bias, int N, int n_in, int n_out) {
    // (N, n_in) @ (n_in, n_out) -> (N, n_out)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, n_out, n_in, 1.0f, x, n_in, W, n_in, 0.0f, out, n_out);
    if (bias)
        for (int n = 0; n < N; n++) {
            float *o = out + (size_t)n * n_out;
            for (int j = 0; j < n_out; j++) o[j] += bias[j];
        }
}

void linear_backward(float *dx, const float *dout, const float *W, int N, int n_in, int n_out, float beta) {
    // (N, n_out) @ (n_out, n_in) -> (N, n_in)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, n_in, n_out, 1.0f, dout, n_out, W, n_in, beta, dx, n_in);
}

size_t lora_scratch_floats(int in, int r) { return 2 * (size_t)in + 2 * (size_t)r; }

static int lora_chunk_rows(size_t scratch_floats, const LoraHook *h, int N) {
    size_t rows = scratch_floats / lora_scratch_floats(h->in, h->r);
    if (rows < 1) rows = 1;   // callers size scratch for at least one row
    return rows > (size_t)N ? N : (int)rows;
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
            for (size_t i = 0; i < (size_t)rows * in; i++) xd[i] *= xc[i];
            xc = xd;
        }
        // (rows, in) @ (in, r) -> (rows, r)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, r, in, 1.0f, xc, in, h->A, in, 0.0f, xa, r);
        // out block += scale * (rows, r) @ (r, out)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, h->out, r, h->scale, xa, r, h->B, r, 1.0f,
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
            for (size_t i = 0; i < (size_t)rows * in; i++) xd[i] = xc[i] * mask[i];
            xc = xd;
        }
        // dy B: (rows, out) @ (out, r) -> (rows, r)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, r, out, 1.0f, dy, ldo, h->B, r, 0.0f, dyb, r);
        if (h->dB) {
            // drop(x) A^T: (rows, in) @ (in, r) -> (rows, r); dB += scale * (out, rows) @ (rows, r)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, r, in, 1.0f, xc, in, h->A, in, 0.0f, xa, r);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, r, rows, h->scale, dy, ldo, xa, r, 1.0f,
                        h->dB, r);
        }
        if (h->dA)  // dA += scale * (r, rows) @ (rows, in)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, in, rows, h->scale, dyb, r, xc, in, 1.0f,
                        h->dA, in);
        if (dx) {
            float *dxc = dx + (size_t)n0 * in;
            if (drop) {
                // (dy B) A: (rows, r) @ (r, in) -> (rows, in), then through the mask
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, in, r, h->scale, dyb, r, h->A, in,
                            0.0f, xd, in);
                for (size_t i = 0; i < (size_t)rows * in; i++) dxc[i] += xd[i] * mask[i];
            } else {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, in, r, h->scale, dyb, r, h->A, in,
                            1.0f, dxc, in);
            }
        }
    }
}
