// ppo_math.c — see ppo_math.h.
#include "rlhf/ppo_math.h"

#include "model/common.h"

int ppo_token_rewards(const float *kl, const float *scores, const uint8_t *mask, int B, int T,
                      float beta, float score_clip, float *rewards, int *last_rows, char *err) {
    if (B < 1 || T < 1) return ftk_err(err, "rlhf/ppo_math.c: ppo_token_rewards: bad shape B=%d T=%d", B, T);
    for (int b = 0; b < B; b++) {
        size_t row = (size_t)b * T;
        int last = -1;
        for (int t = 0; t < T; t++) {
            if (mask[row + t]) {
                rewards[row + t] = -beta * kl[row + t];
                last = t;
            } else {
                rewards[row + t] = 0.0f;
            }
        }
        if (last < 0) return ftk_err(err, "rlhf/ppo_math.c: ppo_token_rewards: response %d has no valid token", b);
        float s = scores[b];
        if (score_clip > 0) s = s > score_clip ? score_clip : (s < -score_clip ? -score_clip : s);
        rewards[row + last] += s;
        if (last_rows) last_rows[b] = (int)row + last;
    }
    return 0;
}

int gae_advantages(const float *rewards, const float *values, const uint8_t *mask, int B, int T,
                   float gamma, float lam, float *advantages, float *returns, char *err) {
    if (B < 1 || T < 1) return ftk_err(err, "rlhf/ppo_math.c: gae_advantages: bad shape B=%d T=%d", B, T);
    for (int b = 0; b < B; b++) {
        size_t row = (size_t)b * T;
        double next_value = 0.0;  // V_{t+1}; 0 past the last position
        double next_adv = 0.0;    // A_{t+1}
        for (int t = T - 1; t >= 0; t--) {
            int m = mask[row + t] != 0;
            double v = m ? values[row + t] : 0.0;
            double r = m ? rewards[row + t] : 0.0;
            double delta = r + gamma * next_value - v;
            double adv = delta + (double)gamma * lam * next_adv;
            advantages[row + t] = m ? (float)adv : 0.0f;
            returns[row + t] = m ? (float)(adv + v) : 0.0f;
            next_value = v;
            next_adv = adv;
        }
    }
    return 0;
}
