// dpo_loss.h — the DPO loss on summed response log-probs (Rafailov et al. 2023; TRL DPOTrainer),
// with cDPO label smoothing (OpenRLHF / TRL "sigmoid" with label_smoothing) and IPO.
//   Δ = (π_c - ref_c) - (π_r - ref_r)
//   sigmoid: L = -(1 - ε) log σ(βΔ) - ε log σ(-βΔ)
//   ipo:     L = (Δ - 1/(2β))^2   (TRL feeds IPO length-averaged log-probs: seq_logp_sum with
//                                  length_average = 1; label smoothing does not apply)
// Implicit rewards: β (π - ref) for chosen and rejected.
#ifndef FTK_RLHF_DPO_LOSS_H
#define FTK_RLHF_DPO_LOSS_H

typedef enum { DPO_SIGMOID, DPO_IPO } DpoLossType;

typedef struct {
    float loss;              // batch mean
    float reward_chosen;     // mean β(π_c - ref_c)
    float reward_rejected;   // mean β(π_r - ref_r)
    float reward_accuracy;   // fraction with chosen reward > rejected reward (strict)
    float reward_margin;     // mean (chosen reward - rejected reward)
} DpoStats;

// n pairs. d_pi_chosen[i] = dL/dπ_c[i], d_pi_rejected[i] = dL/dπ_r[i] (batch mean included;
// written; may be NULL). reward_chosen / reward_rejected (n, may be NULL) receive the implicit
// rewards. Fails if n < 1, beta <= 0 or label_smoothing outside [0, 0.5].
int dpo_loss(const float *pi_chosen, const float *pi_rejected, const float *ref_chosen, const float *ref_rejected,
             int n, float beta, float label_smoothing, DpoLossType type, float *d_pi_chosen, float *d_pi_rejected,
             float *reward_chosen, float *reward_rejected, DpoStats *stats, char *err);

#endif
