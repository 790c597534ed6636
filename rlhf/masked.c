// masked.c — see masked.h.
#include "rlhf/masked.h"

#include <math.h>

#include "model/common.h"

static int valid(const uint8_t *mask, size_t i) { return mask == NULL || mask[i] != 0; }

size_t masked_count(const uint8_t *mask, size_t n) {
    if (mask == NULL) return n;
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += mask[i] != 0;
    return c;
}

double masked_sum(const float *x, const uint8_t *mask, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        if (valid(mask, i)) s += x[i];
    return s;
}

int masked_mean(const float *x, const uint8_t *mask, size_t n, double *mean, char *err) {
    size_t c = masked_count(mask, n);
    if (c == 0) return ftk_err(err, "rlhf/masked.c: masked_mean over %zu entries with no valid one", n);
    *mean = masked_sum(x, mask, n) / (double)c;
    return 0;
}

int masked_var(const float *x, const uint8_t *mask, size_t n, int unbiased, double *var, char *err) {
    size_t c = masked_count(mask, n);
    if (c == 0) return ftk_err(err, "rlhf/masked.c: masked_var over %zu entries with no valid one", n);
    if (unbiased && c < 2)
        return ftk_err(err, "rlhf/masked.c: unbiased masked_var needs at least 2 valid entries, got 1 "
                            "(use a larger minibatch)");
    double mean = masked_sum(x, mask, n) / (double)c;
    double ss = 0.0;  // two-pass: sum of squared deviations from the mean
    for (size_t i = 0; i < n; i++)
        if (valid(mask, i)) ss += ((double)x[i] - mean) * ((double)x[i] - mean);
    *var = unbiased ? ss / (double)(c - 1) : ss / (double)c;
    return 0;
}

int masked_whiten(float *x, const uint8_t *mask, size_t n, int shift_mean, char *err) {
    double mean = 0.0, var = 0.0;
    if (masked_mean(x, mask, n, &mean, err) != 0) return -1;
    if (masked_var(x, mask, n, 1, &var, err) != 0) return -1;
    double inv_std = 1.0 / sqrt(var + 1e-8);
    for (size_t i = 0; i < n; i++) {
        if (!valid(mask, i)) continue;
        double w = ((double)x[i] - mean) * inv_std;
        x[i] = (float)(shift_mean ? w : w + mean);
    }
    return 0;
}

void seq_logp_sum(const float *logp, const uint8_t *mask, int B, int T, int length_average, float *out) {
    for (int b = 0; b < B; b++) {
        const float *row = logp + (size_t)b * T;
        const uint8_t *mrow = mask ? mask + (size_t)b * T : NULL;
        double s = masked_sum(row, mrow, (size_t)T);
        size_t c = masked_count(mrow, (size_t)T);
        if (length_average) s = c > 0 ? s / (double)c : 0.0;
        out[b] = (float)s;
    }
}

void seq_logp_sum_backward(const float *dout, const uint8_t *mask, int B, int T, int length_average,
                           float *dlogp) {
    for (int b = 0; b < B; b++) {
        const uint8_t *mrow = mask ? mask + (size_t)b * T : NULL;
        float g = dout[b];
        if (length_average) {
            size_t c = masked_count(mrow, (size_t)T);
            g = c > 0 ? (float)((double)g / (double)c) : 0.0f;
        }
        for (int t = 0; t < T; t++) dlogp[(size_t)b * T + t] = valid(mrow, (size_t)t) ? g : 0.0f;
    }
}
