// reward_loss.h — the reward model's pairwise (Bradley–Terry) loss, as TRL's RewardTrainer:
//   L = mean_i softplus(-(r_c[i] - r_r[i] - margin[i]))      ( = -log σ(r_c - r_r - m) )
//     + center_coef * mean_i (r_c[i] + r_r[i])^2            (optional; TRL suggests 1e-2)
// Also the numerically stable log-sigmoid pieces shared with DPO.
#ifndef FTK_RLHF_REWARD_LOSS_H
#define FTK_RLHF_REWARD_LOSS_H

// stable_softplus(x) = log(1 + e^x), so -log σ(x) = stable_softplus(-x); no overflow for any x.
double stable_softplus(double x);
double stable_sigmoid(double x);

typedef struct {
    float loss;            // the loss above (batch mean, centering term included)
    float accuracy;        // fraction of pairs with r_c > r_r (strict)
    float margin_mean;     // mean of r_c - r_r
    float chosen_mean;     // mean r_c
    float rejected_mean;   // mean r_r
} RmLossStats;

// n pairs; margin may be NULL (0). Writes d_chosen[i] = dL/dr_c[i], d_rejected[i] = dL/dr_r[i]
// (either may be NULL to skip). Fails if n < 1.
int rm_pairwise_loss(const float *r_chosen, const float *r_rejected, const float *margin, int n,
                     float center_coef, float *d_chosen, float *d_rejected, RmLossStats *stats, char *err);

#endif
