// kl.h — per-token KL estimators between the policy and the reference on sampled tokens
// (Schulman's k1/k2/k3, as OpenRLHF's compute_approx_kl and TRL's kl_penalty), and the KL
// coefficient controllers (fixed, and Ziegler et al. 2019 adaptive, as TRL's AdaptiveKLController).
#ifndef FTK_RLHF_KL_H
#define FTK_RLHF_KL_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    KL_K1,    // logp - ref                              (TRL "kl", default everywhere)
    KL_K2,    // ½ (logp - ref)^2                        (TRL "mse")
    KL_K3,    // e^(ref - logp) - 1 - (ref - logp) >= 0  (unbiased, low variance)
    KL_ABS,   // |logp - ref|                            (TRL "abs")
} KlEstimator;

// One token's estimate; d = logp - ref.
double kl_estimate(float logp, float ref_logp, KlEstimator est);
// kl[i] = estimate at valid i (mask NULL = all), clamped to [-clamp, clamp] when clamp > 0
// (OpenRLHF clamps to ±10); 0 at padding.
void kl_per_token(const float *logp, const float *ref_logp, const uint8_t *mask, size_t n,
                  KlEstimator est, float clamp, float *kl);
// mean over sequences of the per-sequence KL sum: (1/B) Σ_b Σ_t mask kl — the "objective/kl"
// TRL logs and feeds to the adaptive controller (its target 6 is per sequence, not per token).
double kl_sequence_mean(const float *kl, const uint8_t *mask, int B, int T);

typedef struct {
    double value;     // current β
    int adaptive;     // 0 = fixed
    double target;    // adaptive: target KL (per sequence, see kl_sequence_mean)
    double horizon;   // adaptive: horizon in samples
} KlController;

void kl_ctl_fixed(KlController *c, double beta);
void kl_ctl_adaptive(KlController *c, double beta, double target, double horizon);
// Adaptive: e = clip(current/target - 1, -0.2, 0.2); β *= 1 + e * n_steps / horizon, where
// n_steps is the number of samples in the batch just taken (TRL passes batch_size). Fixed: no-op.
void kl_ctl_update(KlController *c, double current_kl, int n_steps);

#endif
