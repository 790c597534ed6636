// ppo_math.h — from a rollout to advantages: per-token rewards (KL penalty + the reward model's
// score at the last response token) and GAE with returns. Arrays are (B, T) row-major over the
// response positions of B sequences; mask (B, T) marks the valid response tokens, a contiguous
// run per row (right padding). See FORMATS.md §3.2 (TRL v0.11 compute_rewards/compute_advantages).
#ifndef FTK_RLHF_PPO_MATH_H
#define FTK_RLHF_PPO_MATH_H

#include <stdint.h>

// rewards[b,t] = -beta * kl[b,t] on valid tokens, 0 on padding; then the score of sequence b,
// clipped to [-score_clip, score_clip] when score_clip > 0 (OpenRLHF ±10, DS-Chat ±5), is added
// at its last valid token (TRL legacy, OpenRLHF, DS-Chat: the EOS or last generated token).
// last_rows (B, may be NULL) receives b*T + that position. Fails if a row has no valid token.
// (TRL's newer experimental PPOTrainer puts the score one position later, on the first pad after
// EOS, trl issue #3750; we follow the legacy trainer and OpenRLHF.)
int ppo_token_rewards(const float *kl, const float *scores, const uint8_t *mask, int B, int T,
                      float beta, float score_clip, float *rewards, int *last_rows, char *err);

// GAE, backwards over t within each row:
//   δ_t = r_t + γ V_{t+1} - V_t,   A_t = δ_t + γλ A_{t+1},   R_t = A_t + V_t
// with r and V multiplied by the mask first (so V past the end of a response is 0, whatever the
// padding holds), as TRL and OpenRLHF do. advantages/returns are 0 on padding. Not whitened:
// whiten with masked_whiten(advantages, mask, B*T, 1, err) after (TRL does, DS-Chat does not).
int gae_advantages(const float *rewards, const float *values, const uint8_t *mask, int B, int T,
                   float gamma, float lam, float *advantages, float *returns, char *err);

#endif
