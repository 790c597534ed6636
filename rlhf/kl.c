// kl.c — see kl.h.
#include "rlhf/kl.h"

#include <math.h>

double kl_estimate(float logp, float ref_logp, KlEstimator est) {
    double d = (double)logp - (double)ref_logp;
    switch (est) {
    case KL_K1: return d;
    case KL_K2: return 0.5 * d * d;
    case KL_K3: return expm1(-d) + d;  // e^(ref-logp) - 1 - (ref-logp), with r = ref-logp = -d
    case KL_ABS: return fabs(d);
    }
    return d;
}

void kl_per_token(const float *logp, const float *ref_logp, const uint8_t *mask, size_t n,
                  KlEstimator est, float clamp, float *kl) {
    for (size_t i = 0; i < n; i++) {
        if (mask && !mask[i]) { kl[i] = 0.0f; continue; }
        double k = kl_estimate(logp[i], ref_logp[i], est);
        if (clamp > 0) k = k > clamp ? clamp : (k < -clamp ? -clamp : k);
        kl[i] = (float)k;
    }
}

double kl_sequence_mean(const float *kl, const uint8_t *mask, int B, int T) {
    if (B <= 0) return 0.0;
    double s = 0.0;
    for (size_t i = 0; i < (size_t)B * (size_t)T; i++)
        if (!mask || mask[i]) s += kl[i];
    return s / B;
}

void kl_ctl_fixed(KlController *c, double beta) {
    c->value = beta;
    c->adaptive = 0;
    c->target = 0.0;
    c->horizon = 0.0;
}

void kl_ctl_adaptive(KlController *c, double beta, double target, double horizon) {
    c->value = beta;
    c->adaptive = 1;
    c->target = target;
    c->horizon = horizon;
}

void kl_ctl_update(KlController *c, double current_kl, int n_steps) {
    if (!c->adaptive || c->target <= 0 || c->horizon <= 0) return;
    double e = current_kl / c->target - 1.0;   // proportional error, clipped to ±20%
    if (e > 0.2) e = 0.2;
    if (e < -0.2) e = -0.2;
    c->value *= 1.0 + e * n_steps / c->horizon;
}
