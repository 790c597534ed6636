// dpo_loss.c — see dpo_loss.h.
#include "rlhf/dpo_loss.h"

#include "model/common.h"
#include "rlhf/reward_loss.h"

int dpo_loss(const float *pi_chosen, const float *pi_rejected, const float *ref_chosen, const float *ref_rejected,
             int n, float beta, float label_smoothing, DpoLossType type, float *d_pi_chosen, float *d_pi_rejected,
             float *reward_chosen, float *reward_rejected, DpoStats *stats, char *err) {
    if (n < 1) return ftk_err(err, "rlhf/dpo_loss.c: dpo_loss needs at least one pair, got %d", n);
    if (!(beta > 0)) return ftk_err(err, "rlhf/dpo_loss.c: dpo_loss: beta must be > 0, got %g", (double)beta);
    if (!(label_smoothing >= 0 && label_smoothing <= 0.5f))
        return ftk_err(err, "rlhf/dpo_loss.c: dpo_loss: label_smoothing must be in [0, 0.5], got %g",
                       (double)label_smoothing);
    if (type != DPO_SIGMOID && type != DPO_IPO) return ftk_err(err, "rlhf/dpo_loss.c: dpo_loss: unknown loss type %d", (int)type);
    double eps = label_smoothing;
    double loss = 0, rc_sum = 0, rr_sum = 0, correct = 0;
    for (int i = 0; i < n; i++) {
        double logratio_c = (double)pi_chosen[i] - ref_chosen[i];
        double logratio_r = (double)pi_rejected[i] - ref_rejected[i];
        double delta = logratio_c - logratio_r;
        double dl_ddelta;
        if (type == DPO_SIGMOID) {
            double z = beta * delta;
            // -log σ(z) = softplus(-z);  d/dz: -(1-ε) σ(-z) + ε σ(z)
            loss += (1.0 - eps) * stable_softplus(-z) + eps * stable_softplus(z);
            dl_ddelta = beta * (-(1.0 - eps) * stable_sigmoid(-z) + eps * stable_sigmoid(z));
        } else {
            double u = delta - 1.0 / (2.0 * beta);
            loss += u * u;
            dl_ddelta = 2.0 * u;
        }
        // Δ rises with π_c and falls with π_r.
        if (d_pi_chosen) d_pi_chosen[i] = (float)(dl_ddelta / n);
        if (d_pi_rejected) d_pi_rejected[i] = (float)(-dl_ddelta / n);
        double rc = beta * logratio_c, rr = beta * logratio_r;
        if (reward_chosen) reward_chosen[i] = (float)rc;
        if (reward_rejected) reward_rejected[i] = (float)rr;
        rc_sum += rc;
        rr_sum += rr;
        correct += rc > rr;
    }
    if (stats) {
        stats->loss = (float)(loss / n);
        stats->reward_chosen = (float)(rc_sum / n);
        stats->reward_rejected = (float)(rr_sum / n);
        stats->reward_accuracy = (float)(correct / n);
        stats->reward_margin = (float)((rc_sum - rr_sum) / n);
    }
    return 0;
}
