// attention.c — causal softmax self-attention with GQA, soft-prompt positions and packing masks,
// batched per (sequence, head): scores and outputs are sgemms over blocks of query rows against
// every key those rows can see (the upper triangle beyond the block is never computed).
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "model/ops.h"

// May query position i of sequence b see key position j (j <= i)? Virtual positions (< nv) are seen
// by everyone; with packing, real positions only see their own segment.
static int attn_allowed(const AttnShape *s, int b, int i, int j) {
    if (j > i) return 0;
    if (!s->seg || j < s->nv) return 1;
    const int Tt = s->T - s->nv;
    return s->seg[b * Tt + i - s->nv] == s->seg[b * Tt + j - s->nv];
}

// Causal attention skips the masked upper triangle by working in blocks of ATT_BLOCK query rows:
// rows [i0, i1) only need keys [0, i1).
#define ATT_BLOCK 64

// Softmax of rows [i0, i1) of the (T, T) scores of sequence b in place (columns < i1 computed),
// masked entries and columns past the diagonal set to 0.
static void softmax_masked(float *S, const AttnShape *s, int b, int i0, int i1) {
    const int T = s->T;
    for (int i = i0; i < i1; i++) {
        float *row = S + (size_t)i * T;
        float mx = -INFINITY;
        for (int j = 0; j <= i; j++)
            if (attn_allowed(s, b, i, j) && row[j] > mx) mx = row[j];
        float sum = 0.0f;
        for (int j = 0; j <= i; j++) {
            float e = attn_allowed(s, b, i, j) ? expf(row[j] - mx) : 0.0f;
            row[j] = e;
            sum += e;
        }
        const float inv = 1.0f / sum;   // the diagonal is always allowed, so sum >= 1
        for (int j = 0; j <= i; j++) row[j] *= inv;
        for (int j = i + 1; j < T; j++) row[j] = 0.0f;
    }
}

void attention_forward(float *out, float *probs, const float *qkv, const AttnShape *s, int save_probs) {
    const int T = s->T, H = s->n_heads, hd = s->head_dim, group = s->n_heads / s->n_kv_heads;
    const int qd = H * hd, kvd = s->n_kv_heads * hd, ld = qd + 2 * kvd;
    const float scale = 1.0f / sqrtf((float)hd);
    for (int b = 0; b < s->B; b++) {
        const float *base = qkv + (size_t)b * T * ld;
        for (int h = 0; h < H; h++) {
            const int kh = h / group;
            const float *Q = base + h * hd, *K = base + qd + kh * hd, *V = base + qd + kvd + kh * hd;
            float *P = save_probs ? probs + ((size_t)b * H + h) * T * T : probs;
            float *O = out + (size_t)b * T * qd + h * hd;
            for (int i0 = 0; i0 < T; i0 += ATT_BLOCK) {
                const int rows = T - i0 < ATT_BLOCK ? T - i0 : ATT_BLOCK, keys = i0 + rows;
                float *Pb = P + (size_t)i0 * T;
                // scores: (rows, hd) @ (hd, keys) -> (rows, keys)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, keys, hd, scale, Q + (size_t)i0 * ld, ld,
                            K, ld, 0.0f, Pb, T);
                softmax_masked(P, s, b, i0, i0 + rows);
                // (rows, keys) @ (keys, hd) -> (rows, hd), into this head's columns of out
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, hd, keys, 1.0f, Pb, T, V, ld, 0.0f,
                            O + (size_t)i0 * qd, qd);
            }
        }
    }
}

void attention_backward(float *dqkv, float *dprobs, const float *dout, const float *qkv, const float *probs,
                        const AttnShape *s) {
    const int T = s->T, H = s->n_heads, hd = s->head_dim, group = s->n_heads / s->n_kv_heads;
    const int qd = H * hd, kvd = s->n_kv_heads * hd, ld = qd + 2 * kvd;
    const float scale = 1.0f / sqrtf((float)hd);
    memset(dqkv, 0, (size_t)s->B * T * ld * sizeof(float));
    for (int b = 0; b < s->B; b++) {
        const float *base = qkv + (size_t)b * T * ld;
        float *dbase = dqkv + (size_t)b * T * ld;
        for (int h = 0; h < H; h++) {
            const int kh = h / group;
            const float *Q = base + h * hd, *K = base + qd + kh * hd, *V = base + qd + kvd + kh * hd;
            float *dQ = dbase + h * hd, *dK = dbase + qd + kh * hd, *dV = dbase + qd + kvd + kh * hd;
            const float *P = probs + ((size_t)b * H + h) * T * T;
            const float *dO = dout + (size_t)b * T * qd + h * hd;
            for (int i0 = 0; i0 < T; i0 += ATT_BLOCK) {
                const int rows = T - i0 < ATT_BLOCK ? T - i0 : ATT_BLOCK, keys = i0 + rows;
                const float *Pb = P + (size_t)i0 * T, *dOb = dO + (size_t)i0 * qd, *Qb = Q + (size_t)i0 * ld;
                float *dP = dprobs;   // (rows, keys), row stride T
                // dP = dO V^T: (rows, hd) @ (hd, keys) -> (rows, keys)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, keys, hd, 1.0f, dOb, qd, V, ld, 0.0f, dP, T);
                // dV += P^T dO: (keys, rows) @ (rows, hd) -> (keys, hd)
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, keys, hd, rows, 1.0f, Pb, T, dOb, qd, 1.0f, dV, ld);
                // softmax backward in place: dS = P * (dP - sum_j P dP); masked entries have P = 0
                for (int r = 0; r < rows; r++) {
                    const float *p = Pb + (size_t)r * T;
                    float *d = dP + (size_t)r * T;
                    float dot = 0.0f;
                    for (int j = 0; j < keys; j++) dot += p[j] * d[j];
                    for (int j = 0; j < keys; j++) d[j] = p[j] * (d[j] - dot);
                }
                // dQ = scale dS K: (rows, keys) @ (keys, hd);  dK += scale dS^T Q: (keys, rows) @ (rows, hd)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, hd, keys, scale, dP, T, K, ld, 0.0f,
                            dQ + (size_t)i0 * ld, ld);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, keys, hd, rows, scale, dP, T, Qb, ld, 1.0f, dK, ld);
            }
        }
    }
}
