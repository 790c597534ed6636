// attention.c — causal softmax self-attention with GQA, soft-prompt positions and packing masks,
// fused: the (T, T) scores are never stored. Each task of the pool is one (sequence, kv head)
// pair (the query heads of a GQA group write the same dK/dV columns, so they share a task) and
// runs single-threaded cblas_sgemm on a tile of ATT_BLOCK query rows against every key those
// rows can see (the upper triangle beyond the tile is never computed), in its thread's scratch.
// Forward keeps only each row's log-sum-exp; backward recomputes the tile's probabilities from
// Q, K and it. Tasks and tiles depend only on the shape: results are the same for any thread count.
#include <cblas.h>
#include <math.h>

#include "model/ops.h"
#include "model/parallel.h"

// May query position i of sequence b see key position j (j <= i)? Virtual positions (< nv) are seen
// by everyone; with packing, real positions only see their own segment.
static int attn_allowed(const AttnShape *s, int b, int i, int j) {
    if (j > i) return 0;
    if (!s->seg || j < s->nv) return 1;
    const int Tt = s->T - s->nv;
    return s->seg[b * Tt + i - s->nv] == s->seg[b * Tt + j - s->nv];
}

// Query rows per tile: rows [i0, i0 + ATT_BLOCK) only need keys [0, i0 + ATT_BLOCK).
#define ATT_BLOCK 64

// Masks row i of a score tile (keys columns): entries the row may not see become -inf, so that
// exp gives exactly 0. Without packing only the columns past the diagonal are masked.
static void mask_row(float *row, const AttnShape *s, int b, int i, int keys) {
    if (s->seg)
        for (int j = 0; j <= i; j++)
            if (!attn_allowed(s, b, i, j)) row[j] = -INFINITY;
    for (int j = i + 1; j < keys; j++) row[j] = -INFINITY;
}

typedef struct {
    const AttnShape *s;
    float *out, *lse;            // lse (B, H, T) or NULL
    float *dqkv;
    const float *qkv, *dout, *lse_in;
} AttnJob;

static void attn_dims(const AttnShape *s, int *qd, int *kvd, int *ld) {
    *qd = s->n_heads * s->head_dim;
    *kvd = s->n_kv_heads * s->head_dim;
    *ld = *qd + 2 * *kvd;
}

// Task (b, kv head): forward of the query heads of that group in sequence b.
static void attn_forward_task(void *ctx, int task) {
    const AttnJob *job = ctx;
    const AttnShape *s = job->s;
    const int T = s->T, H = s->n_heads, hd = s->head_dim, group = H / s->n_kv_heads;
    const int b = task / s->n_kv_heads, kh = task % s->n_kv_heads;
    int qd, kvd, ld;
    attn_dims(s, &qd, &kvd, &ld);
    const float scale = 1.0f / sqrtf((float)hd);
    float *S = par_scratch((size_t)ATT_BLOCK * T + ATT_BLOCK);   // (rows, keys) tile, row stride T
    if (!S) return;   // only without attention_reserve, out of memory
    float *inv_sum = S + (size_t)ATT_BLOCK * T;                  // (rows) 1 / softmax denominator
    const float *base = job->qkv + (size_t)b * T * ld;
    const float *K = base + qd + kh * hd, *V = base + qd + kvd + kh * hd;
    for (int h = kh * group; h < (kh + 1) * group; h++) {
        const float *Q = base + h * hd;
        float *O = job->out + (size_t)b * T * qd + h * hd;
        float *lse = job->lse ? job->lse + ((size_t)b * H + h) * T : NULL;
        for (int i0 = 0; i0 < T; i0 += ATT_BLOCK) {
            const int rows = T - i0 < ATT_BLOCK ? T - i0 : ATT_BLOCK, keys = i0 + rows;
            // scores: (rows, hd) @ (hd, keys) -> (rows, keys)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, keys, hd, scale, Q + (size_t)i0 * ld, ld, K,
                        ld, 0.0f, S, T);
            for (int r = 0; r < rows; r++) {
                float *row = S + (size_t)r * T;
                mask_row(row, s, b, i0 + r, keys);
                const float mx = row_max(row, i0 + r + 1);   // the diagonal is always allowed
                const float sum = exp_shift_sum(row, keys, mx);   // masked entries: exp(-inf) = 0
                inv_sum[r] = 1.0f / sum;
                if (lse) lse[i0 + r] = mx + logf(sum);
            }
            // unnormalised exp(S - max) (rows, keys) @ (keys, hd) -> (rows, hd), into this head's
            // columns of out; then each row / its sum (hd values instead of the tile's keys)
            float *Ob = O + (size_t)i0 * qd;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, hd, keys, 1.0f, S, T, V, ld, 0.0f, Ob, qd);
            for (int r = 0; r < rows; r++)
                for (int d = 0; d < hd; d++) Ob[(size_t)r * qd + d] *= inv_sum[r];
        }
    }
}

int attention_reserve(int T) {
    // forward: a (rows, keys) tile + the row sums; backward: P and dP tiles
    return par_scratch_reserve((size_t)2 * ATT_BLOCK * T + ATT_BLOCK);
}

double attention_score_area(int T) {
    double area = 0.0;
    for (int i0 = 0; i0 < T; i0 += ATT_BLOCK) {
        const int rows = T - i0 < ATT_BLOCK ? T - i0 : ATT_BLOCK;
        area += (double)rows * (i0 + rows);
    }
    return area;
}

void attention_forward(float *out, float *lse, const float *qkv, const AttnShape *s) {
    AttnJob job = {.s = s, .out = out, .lse = lse, .qkv = qkv};
    par_for(s->B * s->n_kv_heads, attn_forward_task, &job);
}

// Task (b, kv head): backward of the query heads of that group in sequence b. Writes dQ of those
// heads and dK, dV of the kv head (the sum over the group's heads, in head order).
static void attn_backward_task(void *ctx, int task) {
    const AttnJob *job = ctx;
    const AttnShape *s = job->s;
    const int T = s->T, H = s->n_heads, hd = s->head_dim, group = H / s->n_kv_heads;
    const int b = task / s->n_kv_heads, kh = task % s->n_kv_heads;
    int qd, kvd, ld;
    attn_dims(s, &qd, &kvd, &ld);
    const float scale = 1.0f / sqrtf((float)hd);
    float *P = par_scratch((size_t)2 * ATT_BLOCK * T);   // (rows, keys) probabilities, then dP; stride T
    if (!P) return;   // only without attention_reserve, out of memory
    float *dP = P + (size_t)ATT_BLOCK * T;
    const float *base = job->qkv + (size_t)b * T * ld;
    float *dbase = job->dqkv + (size_t)b * T * ld;
    const float *K = base + qd + kh * hd, *V = base + qd + kvd + kh * hd;
    float *dK = dbase + qd + kh * hd, *dV = dbase + qd + kvd + kh * hd;
    const int last_i0 = (T - 1) / ATT_BLOCK * ATT_BLOCK;
    for (int h = kh * group; h < (kh + 1) * group; h++) {
        const float *Q = base + h * hd, *lse = job->lse_in + ((size_t)b * H + h) * T;
        const float *dO = job->dout + (size_t)b * T * qd + h * hd;
        float *dQ = dbase + h * hd;
        // Tiles last to first: the last tile sees every key, so the group's first head writes all
        // of dK and dV there (beta 0) and every later product accumulates (no zeroing pass).
        for (int i0 = last_i0; i0 >= 0; i0 -= ATT_BLOCK) {
            const int rows = T - i0 < ATT_BLOCK ? T - i0 : ATT_BLOCK, keys = i0 + rows;
            const float *dOb = dO + (size_t)i0 * qd, *Qb = Q + (size_t)i0 * ld;
            const float acc = h == kh * group && i0 == last_i0 ? 0.0f : 1.0f;
            // P = exp(scale Q K^T - lse): (rows, hd) @ (hd, keys) -> (rows, keys), masked entries 0
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, keys, hd, scale, Qb, ld, K, ld, 0.0f, P, T);
            for (int r = 0; r < rows; r++) {
                float *row = P + (size_t)r * T;
                mask_row(row, s, b, i0 + r, keys);
                exp_shift_sum(row, keys, lse[i0 + r]);
            }
            // dP = dO V^T: (rows, hd) @ (hd, keys) -> (rows, keys)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, keys, hd, 1.0f, dOb, qd, V, ld, 0.0f, dP, T);
            // dV += P^T dO: (keys, rows) @ (rows, hd) -> (keys, hd)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, keys, hd, rows, 1.0f, P, T, dOb, qd, acc, dV, ld);
            // softmax backward in place: dS = P * (dP - sum_j P dP); masked entries have P = 0
            for (int r = 0; r < rows; r++) {
                const float *p = P + (size_t)r * T;
                float *d = dP + (size_t)r * T;
                const float dot = row_dot(p, d, keys);
                for (int j = 0; j < keys; j++) d[j] = p[j] * (d[j] - dot);
            }
            // dQ = scale dS K: (rows, keys) @ (keys, hd);  dK += scale dS^T Q: (keys, rows) @ (rows, hd)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, hd, keys, scale, dP, T, K, ld, 0.0f,
                        dQ + (size_t)i0 * ld, ld);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, keys, hd, rows, scale, dP, T, Qb, ld, acc, dK, ld);
        }
    }
}

void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *lse, const AttnShape *s) {
    AttnJob job = {.s = s, .dqkv = dqkv, .qkv = qkv, .dout = dout, .lse_in = lse};
    par_for(s->B * s->n_kv_heads, attn_backward_task, &job);
}
