// attention_cached.c — attention of new query rows against a sequence's KV cache (prefill and
// decode in generation; see ops.h and attention_cached.h).
//
// The unit of work is one kv head of one run: the `group` query heads that read it. With one query
// row (decode) those heads are one (group, hd) matrix against the cache, a matrix-vector product
// when group == 1; with M rows (prefill) each head is an (M, hd) @ (hd, L) product.
#include "model/attention_cached.h"

#include <cblas.h>
#include <math.h>

#include "model/ops.h"
#include "model/parallel.h"

// Softmax of each of `rows` rows of length L in place, where row i only sees columns j <= lim + i
// (lim = L - 1 and step 0 for "see everything").
static void softmax_rows_causal(float *S, int rows, int L, int lim, int step) {
    for (int i = 0; i < rows; i++) {
        float *row = S + (size_t)i * L;
        const int last = lim + step * i;
        float mx = -INFINITY;
        for (int j = 0; j <= last; j++) mx = row[j] > mx ? row[j] : mx;
        float sum = 0.0f;
        for (int j = 0; j <= last; j++) {
            row[j] = expf(row[j] - mx);
            sum += row[j];
        }
        const float inv = 1.0f / sum;
        for (int j = 0; j <= last; j++) row[j] *= inv;
        for (int j = last + 1; j < L; j++) row[j] = 0.0f;
    }
}

// The query heads kh*group .. (kh+1)*group - 1 of one run. scratch: max(M, group) * L floats.
static void cached_kv_head(float *out, int ldo, const float *q, int ldq, const float *kc, const float *vc, int M,
                           int p0, int kh, int group, int kvd, int hd, float *scratch) {
    const int L = p0 + M;
    const float scale = 1.0f / sqrtf((float)hd);
    const float *K = kc + (size_t)kh * hd, *V = vc + (size_t)kh * hd;
    if (M == 1 && group == 1) {
        const float *Q = q + (size_t)kh * hd;
        // scores (L) = K (L, hd) @ q (hd), scaled
        cblas_sgemv(CblasRowMajor, CblasNoTrans, L, hd, scale, K, kvd, Q, 1, 0.0f, scratch, 1);
        softmax_rows_causal(scratch, 1, L, L - 1, 0);
        // out (hd) = V^T (hd, L) @ p (L)
        cblas_sgemv(CblasRowMajor, CblasTrans, L, hd, 1.0f, V, kvd, scratch, 1, 0.0f, out + (size_t)kh * hd, 1);
        return;
    }
    if (M == 1) {
        // the group's query heads are contiguous in q and in out: one (group, hd) matrix
        const float *Q = q + (size_t)kh * group * hd;
        // (group, hd) @ (hd, L) -> (group, L)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, group, L, hd, scale, Q, hd, K, kvd, 0.0f, scratch, L);
        softmax_rows_causal(scratch, group, L, L - 1, 0);
        // (group, L) @ (L, hd) -> (group, hd)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, group, hd, L, 1.0f, scratch, L, V, kvd, 0.0f,
                    out + (size_t)kh * group * hd, hd);
        return;
    }
    for (int h = kh * group; h < (kh + 1) * group; h++) {
        const float *Q = q + (size_t)h * hd;
        // (M, hd) @ (hd, L) -> (M, L); query row i sits at position p0 + i
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, L, hd, scale, Q, ldq, K, kvd, 0.0f, scratch, L);
        softmax_rows_causal(scratch, M, L, p0, 1);
        // (M, L) @ (L, hd) -> (M, hd)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, hd, L, 1.0f, scratch, L, V, kvd, 0.0f,
                    out + (size_t)h * hd, ldo);
    }
}

void attention_cached(float *out, int ldo, const float *q, int ldq, const float *kc, const float *vc, int M,
                      int p0, int n_heads, int n_kv_heads, int head_dim, float *scratch) {
    const int group = n_heads / n_kv_heads, kvd = n_kv_heads * head_dim;
    for (int kh = 0; kh < n_kv_heads; kh++)
        cached_kv_head(out, ldo, q, ldq, kc, vc, M, p0, kh, group, kvd, head_dim, scratch);
}

size_t attention_cached_task_floats(int M, int L, int group) { return (size_t)(M > group ? M : group) * (size_t)L; }

typedef struct {
    const CachedRun *runs;
    int ldo, ldq, n_kv_heads, group, hd;
    float *scratch;
    size_t task_floats;
} RunsJob;

static void runs_task(void *ctx, int t) {
    const RunsJob *j = ctx;
    const CachedRun *r = &j->runs[t / j->n_kv_heads];
    cached_kv_head(r->out, j->ldo, r->q, j->ldq, r->kc, r->vc, r->M, r->p0, t % j->n_kv_heads, j->group,
                   j->n_kv_heads * j->hd, j->hd, j->scratch + (size_t)t * j->task_floats);
}

void attention_cached_runs(const CachedRun *runs, int n_runs, int ldo, int ldq, int n_heads, int n_kv_heads,
                           int head_dim, float *scratch, size_t task_floats) {
    RunsJob j = {runs, ldo, ldq, n_kv_heads, n_heads / n_kv_heads, head_dim, scratch, task_floats};
    par_for(n_runs * n_kv_heads, runs_task, &j);
}
