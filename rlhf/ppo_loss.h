// ppo_loss.h — PPO's clipped policy and value losses with their gradients, per token and over a
// batch of n tokens with a mask (TRL v0.11 PPOTrainer.loss, OpenRLHF PolicyLoss/ValueLoss).
//
// Normalisation: every mean divides by `norm`, the number of valid tokens in the whole minibatch
// (TRL's masked_mean). When a minibatch is processed in several micro-batches, pass the same
// minibatch count to each call and the losses, gradients and stats of the calls add up;
// norm <= 0 means "the valid tokens of this call".
#ifndef FTK_RLHF_PPO_LOSS_H
#define FTK_RLHF_PPO_LOSS_H

#include <stddef.h>
#include <stdint.h>

// One token of the clipped surrogate, ratio ρ = e^(logp - old_logp):
//   term = max(-A ρ, -A clip(ρ, 1 - eps_low, 1 + eps_high))
// Returns term; *dterm = d term / d logp = -A ρ when the unclipped side is taken, else 0 (the
// clipped side is flat in logp); *clipped = 1 when the clipped side is strictly larger (TRL's
// pg_clipfrac). Usable directly inside an lm_head_logprobs DLogpFn (dL/dlogp = dterm / norm).
float ppo_policy_term(float logp, float old_logp, float adv, float eps_low, float eps_high,
                      float *dterm, int *clipped);

// One token of the clipped value loss, Vc = clip(v, v_old - clip_v, v_old + clip_v):
//   term = ½ max((v - R)^2, (Vc - R)^2)      (clip_v <= 0: ½ (v - R)^2)
// *dterm = d term / dv: (v - R) when the unclipped side is taken, else 0; *clipped = 1 when the
// clipped side is strictly larger (TRL's vf_clipfrac).
float ppo_value_term(float v, float v_old, float ret, float clip_v, float *dterm, int *clipped);

typedef struct {
    float loss;         // Σ_valid term / norm
    float clip_frac;    // Σ_valid clipped / norm
    float approx_kl;    // ½ Σ_valid (logp - old)^2 / norm  (TRL's "approxkl")
    float policy_kl;    // Σ_valid (old - logp) / norm      (TRL's "policykl")
    float ratio_mean;   // Σ_valid ρ / norm (TRL skips a batch whose mean ratio > ratio_threshold=10)
    float entropy;      // Σ_valid entropy / norm, logging only (0 when no entropy is given)
    size_t n_valid;     // valid tokens in this call
} PpoPolicyStats;

// n tokens; mask NULL = all valid; entropy may be NULL. dlogp[i] = dL/dlogp[i] (written; 0 on
// padding; may be NULL). Fails if norm <= 0 and no token is valid.
int ppo_policy_loss(const float *logp, const float *old_logp, const float *advantages, const uint8_t *mask,
                    size_t n, float eps_low, float eps_high, float norm, const float *entropy,
                    float *dlogp, PpoPolicyStats *stats, char *err);

typedef struct {
    float loss;         // ½ Σ_valid max(...) / norm
    float clip_frac;    // Σ_valid clipped / norm
    float value_mean;   // Σ_valid v / norm
    float error_mean;   // Σ_valid (v - R)^2 / norm (unclipped mean squared error, for logging)
    size_t n_valid;
} PpoValueStats;

// dv[i] = dL/dv[i] (written; 0 on padding; may be NULL). Multiply by the value coefficient
// (TRL vf_coef 0.1) before the value head's backward.
int ppo_value_loss(const float *values, const float *old_values, const float *returns, const uint8_t *mask,
                   size_t n, float clip_v, float norm, float *dv, PpoValueStats *stats, char *err);

#endif
