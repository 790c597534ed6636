// ppo_loss.c — see ppo_loss.h.
#include "rlhf/ppo_loss.h"

#include <math.h>

#include "model/common.h"
#include "rlhf/masked.h"

float ppo_policy_term(float logp, float old_logp, float adv, float eps_low, float eps_high,
                      float *dterm, int *clipped) {
    double ratio = exp((double)logp - (double)old_logp);
    double lo = 1.0 - eps_low, hi = 1.0 + eps_high;
    double ratio_clipped = ratio < lo ? lo : (ratio > hi ? hi : ratio);
    double unclipped = -(double)adv * ratio, clipped_side = -(double)adv * ratio_clipped;
    // Inside [lo, hi] both sides are equal and both have slope -A ρ, so ">=" loses nothing.
    // Outside, the clipped side is constant in logp: zero gradient when it wins.
    int take_clipped = clipped_side > unclipped;
    if (dterm) *dterm = take_clipped ? 0.0f : (float)(-(double)adv * ratio);  // dρ/dlogp = ρ
    if (clipped) *clipped = take_clipped;
    return (float)(take_clipped ? clipped_side : unclipped);
}

float ppo_value_term(float v, float v_old, float ret, float clip_v, float *dterm, int *clipped) {
    double err_unclipped = (double)v - ret;
    double loss_unclipped = err_unclipped * err_unclipped;
    int take_clipped = 0;
    double loss_clipped = loss_unclipped;
    if (clip_v > 0) {
        double lo = (double)v_old - clip_v, hi = (double)v_old + clip_v;
        double vc = v < lo ? lo : (v > hi ? hi : v);
        loss_clipped = (vc - ret) * (vc - ret);
        // The clipped side can only be strictly larger when v is outside [lo, hi], where it is
        // constant in v: zero gradient.
        take_clipped = loss_clipped > loss_unclipped;
    }
    if (dterm) *dterm = take_clipped ? 0.0f : (float)err_unclipped;  // d ½(v-R)^2 / dv
    if (clipped) *clipped = take_clipped;
    return (float)(0.5 * (take_clipped ? loss_clipped : loss_unclipped));
}

int ppo_policy_loss(const float *logp, const float *old_logp, const float *advantages, const uint8_t *mask,
                    size_t n, float eps_low, float eps_high, float norm, const float *entropy,
                    float *dlogp, PpoPolicyStats *stats, char *err) {
    size_t n_valid = masked_count(mask, n);
    double denom = norm > 0 ? (double)norm : (double)n_valid;
    if (denom <= 0) return ftk_err(err, "rlhf/ppo_loss.c: ppo_policy_loss: no valid token among %zu", n);
    double loss = 0, clip = 0, akl = 0, pkl = 0, ratio_sum = 0, ent = 0;
    for (size_t i = 0; i < n; i++) {
        if (mask && !mask[i]) {
            if (dlogp) dlogp[i] = 0.0f;
            continue;
        }
        float dterm;
        int clipped;
        loss += ppo_policy_term(logp[i], old_logp[i], advantages[i], eps_low, eps_high, &dterm, &clipped);
        if (dlogp) dlogp[i] = (float)(dterm / denom);
        double d = (double)logp[i] - old_logp[i];
        clip += clipped;
        akl += 0.5 * d * d;
        pkl += -d;
        ratio_sum += exp(d);
        if (entropy) ent += entropy[i];
    }
    if (stats) {
        stats->loss = (float)(loss / denom);
        stats->clip_frac = (float)(clip / denom);
        stats->approx_kl = (float)(akl / denom);
        stats->policy_kl = (float)(pkl / denom);
        stats->ratio_mean = (float)(ratio_sum / denom);
        stats->entropy = (float)(ent / denom);
        stats->n_valid = n_valid;
    }
    return 0;
}

int ppo_value_loss(const float *values, const float *old_values, const float *returns, const uint8_t *mask,
                   size_t n, float clip_v, float norm, float *dv, PpoValueStats *stats, char *err) {
    size_t n_valid = masked_count(mask, n);
    double denom = norm > 0 ? (double)norm : (double)n_valid;
    if (denom <= 0) return ftk_err(err, "rlhf/ppo_loss.c: ppo_value_loss: no valid token among %zu", n);
    double loss = 0, clip = 0, vsum = 0, esum = 0;
    for (size_t i = 0; i < n; i++) {
        if (mask && !mask[i]) {
            if (dv) dv[i] = 0.0f;
            continue;
        }
        float dterm;
        int clipped;
        loss += ppo_value_term(values[i], old_values[i], returns[i], clip_v, &dterm, &clipped);
        if (dv) dv[i] = (float)(dterm / denom);
        clip += clipped;
        vsum += values[i];
        double e = (double)values[i] - returns[i];
        esum += e * e;
    }
    if (stats) {
        stats->loss = (float)(loss / denom);
        stats->clip_frac = (float)(clip / denom);
        stats->value_mean = (float)(vsum / denom);
        stats->error_mean = (float)(esum / denom);
        stats->n_valid = n_valid;
    }
    return 0;
}
