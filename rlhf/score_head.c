// score_head.c — see score_head.h.
#include "rlhf/score_head.h"

#include <cblas.h>
#include <string.h>

#include "model/common.h"

int last_token_index(const int *lengths, int B, int T, int n_virtual, int *rows, char *err) {
    if (B < 0 || T < 1 || n_virtual < 0)
        return ftk_err(err, "rlhf/score_head.c: last_token_index: bad shape B=%d T=%d n_virtual=%d", B, T, n_virtual);
    for (int b = 0; b < B; b++) {
        if (lengths[b] < 1 || lengths[b] > T - n_virtual)
            return ftk_err(err, "rlhf/score_head.c: last_token_index: sequence %d has length %d, "
                                "need 1..%d (T=%d, %d virtual tokens)", b, lengths[b], T - n_virtual, T, n_virtual);
        rows[b] = b * T + n_virtual + lengths[b] - 1;
    }
    return 0;
}

int last_token_index_from_mask(const uint8_t *mask, int B, int T, int *rows, char *err) {
    for (int b = 0; b < B; b++) {
        int last = -1;
        for (int t = 0; t < T; t++)
            if (mask[(size_t)b * T + t]) last = t;
        if (last < 0) return ftk_err(err, "rlhf/score_head.c: last_token_index_from_mask: row %d has no valid position", b);
        rows[b] = b * T + last;
    }
    return 0;
}

void gather_rows(float *out, const float *hidden, const int *rows, int n, int C) {
    for (int i = 0; i < n; i++) memcpy(out + (size_t)i * C, hidden + (size_t)rows[i] * C, (size_t)C * sizeof(float));
}

void scatter_add_rows(float *d_hidden, const float *d_rows, const int *rows, int n, int C) {
    for (int i = 0; i < n; i++) {
        float *dst = d_hidden + (size_t)rows[i] * C;
        const float *src = d_rows + (size_t)i * C;
        for (int c = 0; c < C; c++) dst[c] += src[c];
    }
}

void scalar_head_forward(const float *h, int n, int C, const float *w, const float *bias, float *out) {
    if (n <= 0) return;
    float b0 = bias ? bias[0] : 0.0f;
    for (int i = 0; i < n; i++) out[i] = b0;
    // (n, C) @ (C, 1) -> (n, 1): out = h w^T + out
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, 1, C, 1.0f, h, C, w, C, 1.0f, out, 1);
}

void scalar_head_backward(const float *h, int n, int C, const float *w, const float *dout,
                          float *dw, float *dbias, float *dh) {
    if (n <= 0) return;
    // (1, n) @ (n, C) -> (1, C): dw += dout^T h
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, 1, C, n, 1.0f, dout, 1, h, C, 1.0f, dw, C);
    if (dbias) {
        double s = 0.0;
        for (int i = 0; i < n; i++) s += dout[i];
        dbias[0] += (float)s;
    }
    // (n, 1) @ (1, C) -> (n, C): dh += dout w
    if (dh) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, C, 1, 1.0f, dout, 1, w, C, 1.0f, dh, C);
}
