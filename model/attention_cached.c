// attention_cached.c — attention of new query rows against a sequence's KV cache (prefill and
// decode in generation; see ops.h).
#include <cblas.h>
#include <math.h>

#include "model/ops.h"

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

void attention_cached(float *out, int ldo, const float *q, int ldq, const float *kc, const float *vc, int M,
                      int p0, int n_heads, int n_kv_heads, int head_dim, float *scratch) {
    const int hd = head_dim, group = n_heads / n_kv_heads, kvd = n_kv_heads * hd, L = p0 + M;
    const float scale = 1.0f / sqrtf((float)hd);
    if (M == 1) {
        // One query: the `group` query heads sharing kv head kh are one (group, hd) matrix.
        for (int kh = 0; kh < n_kv_heads; kh++) {
            const float *Q = q + (size_t)kh * group * hd, *K = kc + kh * hd, *V = vc + kh * hd;
            // (group, hd) @ (hd, L) -> (group, L)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, group, L, hd, scale, Q, hd, K, kvd, 0.0f,
                        scratch, L);
            softmax_rows_causal(scratch, group, L, L - 1, 0);
            // (group, L) @ (L, hd) -> (group, hd)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, group, hd, L, 1.0f, scratch, L, V, kvd, 0.0f,
                        out + (size_t)kh * group * hd, hd);
        }
        return;
    }
    for (int h = 0; h < n_heads; h++) {
        const int kh = h / group;
        const float *Q = q + h * hd, *K = kc + kh * hd, *V = vc + kh * hd;
        // (M, hd) @ (hd, L) -> (M, L); query row i sits at position p0 + i
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, L, hd, scale, Q, ldq, K, kvd, 0.0f, scratch, L);
        softmax_rows_causal(scratch, M, L, p0, 1);
        // (M, L) @ (L, hd) -> (M, hd)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, hd, L, 1.0f, scratch, L, V, kvd, 0.0f,
                    out + h * hd, ldo);
    }
}
