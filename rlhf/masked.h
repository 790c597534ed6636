// masked.h — reductions over the valid tokens of a (B, T) batch: masked sum/mean/variance,
// TRL-style whitening, and the per-sequence log-prob sum (with its broadcast backward) used by DPO.
// Masks are uint8 arrays of 0/1 (non-zero = valid). Sums accumulate in double.
#ifndef FTK_RLHF_MASKED_H
#define FTK_RLHF_MASKED_H

#include <stddef.h>
#include <stdint.h>

// Number of valid entries; mask NULL means all n are valid.
size_t masked_count(const uint8_t *mask, size_t n);
double masked_sum(const float *x, const uint8_t *mask, size_t n);
// sum / count over the valid entries (TRL masked_mean). Fails when no entry is valid.
int masked_mean(const float *x, const uint8_t *mask, size_t n, double *mean, char *err);
// Variance over the valid entries. unbiased=1 multiplies by n/(n-1) (Bessel), as TRL's
// masked_var does by default; it then needs at least 2 valid entries (TRL raises too).
int masked_var(const float *x, const uint8_t *mask, size_t n, int unbiased, double *var, char *err);

// In place, on valid entries only: x = (x - mean) / sqrt(var + 1e-8), var unbiased (TRL
// masked_whiten); with shift_mean = 0 the mean is added back (TRL's reward whitening).
// Padding entries are left untouched (TRL rewrites them too; they are masked out downstream).
int masked_whiten(float *x, const uint8_t *mask, size_t n, int shift_mean, char *err);

// Per sequence b < B: out[b] = sum over t of mask[b,t] * logp[b,t] (x is (B, T) row-major);
// with length_average = 1 divided by the number of valid tokens of that row (IPO-style, as TRL
// does for loss_type "ipo"). A row with no valid token gives 0.
void seq_logp_sum(const float *logp, const uint8_t *mask, int B, int T, int length_average, float *out);
// Backward of seq_logp_sum: dlogp[b,t] = mask[b,t] * dout[b] (/ count_b when averaged); written
// (not accumulated), 0 on padding.
void seq_logp_sum_backward(const float *dout, const uint8_t *mask, int B, int T, int length_average,
                           float *dlogp);

#endif
