// reward_loss.c — see reward_loss.h.
#include "rlhf/reward_loss.h"

#include <math.h>

#include "model/common.h"

double stable_softplus(double x) {
    // log(1 + e^x) = max(x, 0) + log1p(e^-|x|): no overflow for large x, no loss for small.
    return (x > 0 ? x : 0.0) + log1p(exp(-fabs(x)));
}

double stable_sigmoid(double x) {
    if (x >= 0) return 1.0 / (1.0 + exp(-x));
    double e = exp(x);
    return e / (1.0 + e);
}

int rm_pairwise_loss(const float *r_chosen, const float *r_rejected, const float *margin, int n,
                     float center_coef, float *d_chosen, float *d_rejected, RmLossStats *stats, char *err) {
    if (n < 1) return ftk_err(err, "rlhf/reward_loss.c: rm_pairwise_loss needs at least one pair, got %d", n);
    double loss = 0.0, correct = 0.0, diff_sum = 0.0, c_sum = 0.0, r_sum = 0.0;
    for (int i = 0; i < n; i++) {
        double c = r_chosen[i], r = r_rejected[i];
        double z = c - r - (margin ? margin[i] : 0.0);
        double s = c + r;
        loss += stable_softplus(-z) + center_coef * s * s;
        // d softplus(-z)/dz = -σ(-z); z rises with r_c and falls with r_r.
        // d (coef s^2)/dr_c = d/dr_r = 2 coef s.
        double g_z = -stable_sigmoid(-z) / n, g_center = 2.0 * center_coef * s / n;
        if (d_chosen) d_chosen[i] = (float)(g_z + g_center);
        if (d_rejected) d_rejected[i] = (float)(-g_z + g_center);
        correct += c > r;
        diff_sum += c - r;
        c_sum += c;
        r_sum += r;
    }
    if (stats) {
        stats->loss = (float)(loss / n);
        stats->accuracy = (float)(correct / n);
        stats->margin_mean = (float)(diff_sum / n);
        stats->chosen_mean = (float)(c_sum / n);
        stats->rejected_mean = (float)(r_sum / n);
    }
    return 0;
}
