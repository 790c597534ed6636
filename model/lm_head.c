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

void lm_head_logits(const Model *m, const float *hidden, int n, float *logits) {
    const int C = m->cfg.dim, V = m->cfg.vocab_size;
    // (n, C) @ (C, V) -> (n, V)
    par_sgemm(CblasNoTrans, CblasTrans, n, V, C, 1.0f, hidden, C, m->w.lm_head, C, 0.0f, logits, V);
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
            par_sgemm(CblasNoTrans, CblasNoTrans, k, C, V, 1.0f, rs->head_logits, V, m->w.lm_head, C, 0.0f,
                      rs->head_dh, C);
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
