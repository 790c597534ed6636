// lm_head.c — the vocabulary projection: plain logits, and the fused chunked log-softmax with its
// backward that training uses (never more than HEAD_CHUNK rows of (n, V) logits at a time).
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "model/common.h"
#include "model/runstate.h"

void lm_head_logits(const Model *m, const float *hidden, int n, float *logits) {
    const int C = m->cfg.dim, V = m->cfg.vocab_size;
    // (n, C) @ (C, V) -> (n, V)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, V, C, 1.0f, hidden, C, m->w.lm_head, C, 0.0f, logits, V);
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
    for (int i0 = 0; i0 < n; i0 += HEAD_CHUNK) {
        const int k = n - i0 < HEAD_CHUNK ? n - i0 : HEAD_CHUNK;
        for (int i = 0; i < k; i++)
            memcpy(rs->head_h + (size_t)i * C, rs->final_hidden + (size_t)rows[i0 + i] * C, (size_t)C * sizeof(float));
        lm_head_logits(m, rs->head_h, k, rs->head_logits);   // (k, C) @ (C, V)
        for (int i = 0; i < k; i++) {
            float *z = rs->head_logits + (size_t)i * V;
            float mx = z[0];
            for (int j = 1; j < V; j++) mx = z[j] > mx ? z[j] : mx;
            double sum = 0.0, pz = 0.0;
            for (int j = 0; j < V; j++) {
                double e = exp((double)(z[j] - mx));
                sum += e;
                pz += e * (z[j] - mx);
            }
            const double lse = log(sum);   // log-sum-exp minus mx
            const float lp = (float)((z[targets[i0 + i]] - mx) - lse);
            logp[i0 + i] = lp;
            if (entropy) entropy[i0 + i] = (float)(lse - pz / sum);
            if (dfn) {
                // d logp / dz_j = onehot_j - softmax_j; dlogits = g * that (in place of the logits)
                const float g = dfn(ctx, i0 + i, lp);
                const float shift = (float)(mx + lse);
                for (int j = 0; j < V; j++) z[j] = -g * expf(z[j] - shift);
                z[targets[i0 + i]] += g;
            }
        }
        if (dfn) {
            // dh = dlogits @ lm_head: (k, V) @ (V, C) -> (k, C), scattered onto the rows
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, k, C, V, 1.0f, rs->head_logits, V, m->w.lm_head, C,
                        0.0f, rs->head_dh, C);
            for (int i = 0; i < k; i++) {
                float *d = rs->d_final_hidden + (size_t)rows[i0 + i] * C;
                const float *s = rs->head_dh + (size_t)i * C;
                for (int j = 0; j < C; j++) d[j] += s[j];
            }
        }
    }
    return 0;
}

