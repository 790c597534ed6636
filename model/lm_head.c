// lm_head.c — the vocabulary projection: plain logits, and the fused chunked log-softmax with its
// backward that training uses (never more than HEAD_CHUNK rows of (n, V) logits at a time). The
// products go through par_sgemm, the rows of a chunk over par_for; the log-softmax is one float
// pass of the vectorised exp whose values are kept for dlogits.
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "model/common.h"
#include "model/ops.h"
#include "model/parallel.h"
#include "model/runstate.h"
#include "model/weights_bf16.h"

// ---------------------------------------------------------------------------------------------
// bf16 LM head (--base-dtype bf16): the weight is expanded to fp32 a block at a time, in each
// thread's scratch, right before the product that reads it. Blocks are fixed by the shape.

#define HEAD_VBLOCK 512   // vocabulary rows per logits task (1.5 MiB of fp32 at C = 768)
#define HEAD_CBLOCK 128   // columns of dh per backward task

typedef struct {
    const Model *m;
    const float *x;   // logits: hidden (n, C); dh: dlogits (n, V)
    float *y;         // logits (n, V); dh (n, C)
    int n;
} HeadBf16Job;

// Logits columns [v0, v0 + vb): (n, C) @ (C, vb) -> logits[:, v0:v0+vb].
static void logits_block_bf16(void *ctx, int blk) {
    const HeadBf16Job *j = ctx;
    const int C = j->m->cfg.dim, V = j->m->cfg.vocab_size, v0 = blk * HEAD_VBLOCK;
    const int vb = V - v0 < HEAD_VBLOCK ? V - v0 : HEAD_VBLOCK;
    const uint16_t *wb = j->m->w.lm_head_bf16 + (size_t)v0 * C;
    float *w = par_scratch((size_t)HEAD_VBLOCK * C);
    if (w) {
        bf16_expand(w, wb, (size_t)vb * C);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, j->n, vb, C, 1.0f, j->x, C, w, C, 0.0f, j->y + v0, V);
        return;
    }
    for (int r = 0; r < j->n; r++)   // no scratch (out of memory): slow, still right
        for (int v = 0; v < vb; v++) {
            float acc = 0.0f;
            for (int c = 0; c < C; c++) acc += j->x[(size_t)r * C + c] * bf16_to_f32(wb[(size_t)v * C + c]);
            j->y[(size_t)r * V + v0 + v] = acc;
        }
}

// dh columns [c0, c0 + cb) = sum over vocabulary blocks, in order, of
// dlogits[:, v0:v0+vb] (n, vb) @ W[v0:v0+vb, c0:c0+cb] (vb, cb).
static void dh_block_bf16(void *ctx, int blk) {
    const HeadBf16Job *j = ctx;
    const int C = j->m->cfg.dim, V = j->m->cfg.vocab_size, c0 = blk * HEAD_CBLOCK;
    const int cb = C - c0 < HEAD_CBLOCK ? C - c0 : HEAD_CBLOCK;
    float *w = par_scratch((size_t)HEAD_VBLOCK * HEAD_CBLOCK);
    for (int v0 = 0; v0 < V; v0 += HEAD_VBLOCK) {
        const int vb = V - v0 < HEAD_VBLOCK ? V - v0 : HEAD_VBLOCK;
        const uint16_t *wb = j->m->w.lm_head_bf16 + (size_t)v0 * C + c0;
        if (w) {
            for (int v = 0; v < vb; v++) bf16_expand(w + (size_t)v * cb, wb + (size_t)v * C, (size_t)cb);
            // (n, vb) @ (vb, cb) -> (n, cb), accumulated over the vocabulary blocks
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, j->n, cb, vb, 1.0f, j->x + v0, V, w, cb,
                        v0 ? 1.0f : 0.0f, j->y + c0, C);
            continue;
        }
        for (int r = 0; r < j->n; r++)   // no scratch (out of memory): slow, still right
            for (int c = 0; c < cb; c++) {
                float acc = v0 ? j->y[(size_t)r * C + c0 + c] : 0.0f;
                for (int v = 0; v < vb; v++) acc += j->x[(size_t)r * V + v0 + v] * bf16_to_f32(wb[(size_t)v * C + c]);
                j->y[(size_t)r * C + c0 + c] = acc;
            }
    }
}

void lm_head_logits(const Model *m, const float *hidden, int n, float *logits) {
    const int C = m->cfg.dim, V = m->cfg.vocab_size;
    if (!m->w.lm_head) {   // bf16
        HeadBf16Job j = {m, hidden, logits, n};
        par_for((V + HEAD_VBLOCK - 1) / HEAD_VBLOCK, logits_block_bf16, &j);
        return;
    }
    // (n, C) @ (C, V) -> (n, V)
    par_sgemm(CblasNoTrans, CblasTrans, n, V, C, 1.0f, hidden, C, m->w.lm_head, C, 0.0f, logits, V);
}

// dh (n, C) = dlogits (n, V) @ lm_head (V, C).
static void lm_head_dh(const Model *m, const float *dlogits, int n, float *dh) {
    const int C = m->cfg.dim, V = m->cfg.vocab_size;
    if (!m->w.lm_head) {   // bf16
        HeadBf16Job j = {m, dlogits, dh, n};
        par_for((C + HEAD_CBLOCK - 1) / HEAD_CBLOCK, dh_block_bf16, &j);
        return;
    }
    // (n, V) @ (V, C) -> (n, C)
    par_sgemm(CblasNoTrans, CblasNoTrans, n, C, V, 1.0f, dlogits, V, m->w.lm_head, C, 0.0f, dh, C);
}

// One chunk of the head, shared by its row tasks.
typedef struct {
    RunState *rs;
    const int *rows, *targets;   // of this chunk
    int C, V;
    float *logp, *entropy;       // of this chunk (entropy may be NULL)
    float *sum, *g;              // (HEAD_CHUNK) per row: sum of exp(z - max); dL/dlogp
} HeadJob;

static void head_gather_row(void *ctx, int i) {
    const HeadJob *j = ctx;
    memcpy(j->rs->head_h + (size_t)i * j->C, j->rs->final_hidden + (size_t)j->rows[i] * j->C,
           (size_t)j->C * sizeof(float));
}

// Row i of the chunk, one float pass: logits z -> e = exp(z - max) in place (kept for dlogits),
// logp = z_target - max - log(sum e), entropy = log(sum e) - sum(e (z - max)) / sum e.
static void head_logsoftmax_row(void *ctx, int i) {
    const HeadJob *j = ctx;
    const int V = j->V;
    float *z = j->rs->head_logits + (size_t)i * V;
    const float mx = row_max(z, V);
    const float z_target = z[j->targets[i]];
    float sum, pz = 0.0f;
    if (j->entropy) {
        // the same pass also sums (z - max) e for the entropy
        float acc[16] = {0}, pacc[16] = {0};
        int k = 0;
        for (; k + 16 <= V; k += 16)
            for (int l = 0; l < 16; l++) {
                const float d = z[k + l] - mx, e = exp_poly(d);
                z[k + l] = e;
                acc[l] += e;
                pacc[l] += d * e;
            }
        for (int l = 0; k < V; k++, l++) {
            const float d = z[k] - mx, e = exp_poly(d);
            z[k] = e;
            acc[l] += e;
            pacc[l] += d * e;
        }
        sum = 0.0f;
        for (int l = 0; l < 16; l++) {
            sum += acc[l];
            pz += pacc[l];
        }
    } else {
        sum = exp_shift_sum(z, V, mx);
    }
    const float lse = logf(sum);   // log-sum-exp minus max
    j->sum[i] = sum;
    j->logp[i] = (z_target - mx) - lse;
    if (j->entropy) j->entropy[i] = lse - pz / sum;
}

// d logp / dz_k = onehot_k - softmax_k; dlogits = g * that, in place of e.
static void head_dlogits_row(void *ctx, int i) {
    const HeadJob *j = ctx;
    float *z = j->rs->head_logits + (size_t)i * j->V;
    const float f = -j->g[i] / j->sum[i];
    for (int k = 0; k < j->V; k++) z[k] *= f;
    z[j->targets[i]] += j->g[i];
}

int lm_head_logprobs(const Model *m, RunState *rs, const int *rows, const int *targets, int n, float *logp,
                     float *entropy, DLogpFn dfn, void *ctx, char *err) {
    const int C = m->cfg.dim, V = m->cfg.vocab_size, N = rs->B * rs->T;
    if (rs->B == 0) return ftk_err(err, "lm head: no forward has run");
    if (dfn && !rs->training) return ftk_err(err, "lm head: gradients need a training run state");
    if (V != rs->cfg.vocab_size || C != rs->cfg.dim) return ftk_err(err, "lm head: run state is for another model");
    for (int i = 0; i < n; i++) {
        if (rows[i] < 0 || rows[i] >= N) return ftk_err(err, "lm head: row %d outside the %d rows", rows[i], N);
        if (targets[i] < 0 || targets[i] >= V)
            return ftk_err(err, "lm head: target %d outside the vocabulary (%d)", targets[i], V);
    }
    float sum[HEAD_CHUNK], g[HEAD_CHUNK];
    for (int i0 = 0; i0 < n; i0 += HEAD_CHUNK) {
        const int k = n - i0 < HEAD_CHUNK ? n - i0 : HEAD_CHUNK;
        HeadJob job = {rs, rows + i0, targets + i0, C, V, logp + i0, entropy ? entropy + i0 : NULL, sum, g};
        par_for(k, head_gather_row, &job);
        lm_head_logits(m, rs->head_h, k, rs->head_logits);   // (k, C) @ (C, V)
        par_for(k, head_logsoftmax_row, &job);
        if (dfn) {
            for (int i = 0; i < k; i++) g[i] = dfn(ctx, i0 + i, logp[i0 + i]);   // in row order, one thread
            par_for(k, head_dlogits_row, &job);
            // dh = dlogits @ lm_head: (k, V) @ (V, C) -> (k, C), scattered onto the rows
            lm_head_dh(m, rs->head_logits, k, rs->head_dh);
            // serially, in row order: rows may repeat
            for (int i = 0; i < k; i++) {
                float *d = rs->d_final_hidden + (size_t)rows[i0 + i] * C;
                const float *s = rs->head_dh + (size_t)i * C;
                for (int j = 0; j < C; j++) d[j] += s[j];
            }
        }
    }
    return 0;
}
