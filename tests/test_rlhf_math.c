// test_rlhf_math.c — unit tests of the RLHF kernels in rlhf/: reward-model pairwise loss, scalar
// heads and last-token rows, KL estimators and controllers, PPO per-token rewards, GAE, masked
// whitening, clipped policy/value losses, DPO/cDPO/IPO. Expected numbers are worked out by hand (or
// with a few lines of Python's math module, shown in comments); every backward is also checked
// against central finite differences.
#include "tests/testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/common.h"
#include "rlhf/dpo_loss.h"
#include "rlhf/kl.h"
#include "rlhf/masked.h"
#include "rlhf/ppo_loss.h"
#include "rlhf/ppo_math.h"
#include "rlhf/reward_loss.h"
#include "rlhf/score_head.h"

#define assert_near(a, b, tol) assert_true(fabs((double)(a) - (double)(b)) <= (tol))

// Central difference of a scalar function of one float input, using the step actually
// representable in float.
typedef double (*LossFn)(void *ctx);
static double fd_grad(float *x, float h, LossFn f, void *ctx) {
    float x0 = *x;
    *x = x0 + h;
    float xp = *x;
    double lp = f(ctx);
    *x = x0 - h;
    float xm = *x;
    double lm = f(ctx);
    *x = x0;
    return (lp - lm) / ((double)xp - (double)xm);
}
static void assert_grad_close(double analytic, double numeric) {
    double tol = 2e-4 + 2e-3 * fabs(numeric);
    if (fabs(analytic - numeric) > tol) fail_msg("gradient: analytic %.7g vs finite difference %.7g", analytic, numeric);
}

// ---------------------------------------------------------------- GAE

static void test_gae_hand_single(void **state) {
    (void)state;
    // γ = 0.9, λ = 0.8 (γλ = 0.72). V = [0.5, 1, -0.5, 2], r = [0.1, -0.2, 0.3, 1.5]
    //   δ3 = 1.5 + 0        - 2.0  = -0.5     A3 = -0.5
    //   δ2 = 0.3 + 0.9*2.0  + 0.5  =  2.6     A2 = 2.6 + 0.72*(-0.5)      = 2.24
    //   δ1 = -0.2 + 0.9*-0.5 - 1.0 = -1.65    A1 = -1.65 + 0.72*2.24      = -0.0372
    //   δ0 = 0.1 + 0.9*1.0  - 0.5  =  0.5     A0 = 0.5 + 0.72*(-0.0372)   = 0.473216
    //   R = A + V = [0.973216, 0.9628, 1.74, 1.5]
    const float V[4] = {0.5f, 1.0f, -0.5f, 2.0f}, r[4] = {0.1f, -0.2f, 0.3f, 1.5f};
    const uint8_t mask[4] = {1, 1, 1, 1};
    const float A_expect[4] = {0.473216f, -0.0372f, 2.24f, -0.5f}, R_expect[4] = {0.973216f, 0.9628f, 1.74f, 1.5f};
    float A[4], R[4];
    char err[FTK_ERR_LEN];
    assert_int_equal(gae_advantages(r, V, mask, 1, 4, 0.9f, 0.8f, A, R, err), 0);
    for (int t = 0; t < 4; t++) {
        assert_near(A[t], A_expect[t], 1e-6);
        assert_near(R[t], R_expect[t], 1e-6);
    }
    // λ = 0 is one-step TD: A_t = δ_t
    assert_int_equal(gae_advantages(r, V, mask, 1, 4, 0.9f, 0.0f, A, R, err), 0);
    assert_near(A[0], 0.5, 1e-6);
    assert_near(A[1], -1.65, 1e-6);
    assert_near(A[2], 2.6, 1e-6);
}

static void test_gae_batch_lengths(void **state) {
    (void)state;
    // Row 0: the 4-token example above. Row 1: 2 valid tokens, then padding holding garbage (9, 7)
    // that must not leak in. V = [1, 0.2], r = [0, 0.4]:
    //   δ1 = 0.4 + 0 - 0.2 = 0.2 (V past the end is 0, not 9)      A1 = 0.2, R1 = 0.4
    //   δ0 = 0 + 0.9*0.2 - 1 = -0.82    A0 = -0.82 + 0.72*0.2 = -0.676, R0 = 0.324
    const float V[8] = {0.5f, 1.0f, -0.5f, 2.0f, 1.0f, 0.2f, 9.0f, 9.0f};
    const float r[8] = {0.1f, -0.2f, 0.3f, 1.5f, 0.0f, 0.4f, 7.0f, 7.0f};
    const uint8_t mask[8] = {1, 1, 1, 1, 1, 1, 0, 0};
    const float A_expect[8] = {0.473216f, -0.0372f, 2.24f, -0.5f, -0.676f, 0.2f, 0, 0};
    const float R_expect[8] = {0.973216f, 0.9628f, 1.74f, 1.5f, 0.324f, 0.4f, 0, 0};
    float A[8], R[8];
    char err[FTK_ERR_LEN];
    assert_int_equal(gae_advantages(r, V, mask, 2, 4, 0.9f, 0.8f, A, R, err), 0);
    for (int i = 0; i < 8; i++) {
        assert_near(A[i], A_expect[i], 1e-6);
        assert_near(R[i], R_expect[i], 1e-6);
    }
    assert_int_not_equal(gae_advantages(r, V, mask, 0, 4, 0.9f, 0.8f, A, R, err), 0);
}

// ---------------------------------------------------------------- masked whitening

static void test_masked_whiten(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    // valid [1, 3, 5]: mean 3, unbiased var (4 + 0 + 4)/2 = 4 (the biased one, 8/3, would give
    // ±1.2247), std 2 -> [-1, 0, 1]. The pad (100) stays as it is.
    float x[4] = {1, 3, 5, 100};
    const uint8_t mask[4] = {1, 1, 1, 0};
    double var = 0;
    assert_int_equal(masked_var(x, mask, 4, 1, &var, err), 0);
    assert_near(var, 4.0, 1e-12);
    assert_int_equal(masked_var(x, mask, 4, 0, &var, err), 0);
    assert_near(var, 8.0 / 3.0, 1e-12);
    assert_int_equal(masked_whiten(x, mask, 4, 1, err), 0);
    assert_near(x[0], -1.0, 1e-6);
    assert_near(x[1], 0.0, 1e-7);
    assert_near(x[2], 1.0, 1e-6);
    assert_true(x[3] == 100.0f);
    // shift_mean = 0 (TRL's reward whitening) adds the mean back: [2, 3, 4]
    float y[4] = {1, 3, 5, -7};
    assert_int_equal(masked_whiten(y, mask, 4, 0, err), 0);
    assert_near(y[0], 2.0, 1e-6);
    assert_near(y[1], 3.0, 1e-6);
    assert_near(y[2], 4.0, 1e-6);
    assert_true(y[3] == -7.0f);

    // A (3, 5) batch of ragged rows: afterwards mean 0 and unbiased var 1 over the mask.
    float z[15];
    uint8_t zm[15];
    uint64_t rng = 42;
    for (int i = 0; i < 15; i++) {
        z[i] = 3.0f + 5.0f * ftk_rand_normal(&rng);
        zm[i] = (i % 5) < (i / 5 + 2);  // row lengths 2, 3, 4
    }
    float z0[15];
    memcpy(z0, z, sizeof z);
    assert_int_equal(masked_whiten(z, zm, 15, 1, err), 0);
    double mean = 1;
    assert_int_equal(masked_mean(z, zm, 15, &mean, err), 0);
    assert_near(mean, 0.0, 1e-6);
    assert_int_equal(masked_var(z, zm, 15, 1, &var, err), 0);
    assert_near(var, 1.0, 1e-5);
    for (int i = 0; i < 15; i++)
        if (!zm[i]) assert_true(z[i] == z0[i]);

    // one valid token: the unbiased variance is undefined (TRL raises too); none: mean undefined
    const uint8_t one[4] = {0, 1, 0, 0}, none[4] = {0, 0, 0, 0};
    assert_int_not_equal(masked_whiten(x, one, 4, 1, err), 0);
    assert_non_null(strstr(err, "rlhf/masked.c"));
    assert_int_not_equal(masked_mean(x, none, 4, &mean, err), 0);
}

// ---------------------------------------------------------------- KL

static void test_kl_estimators(void **state) {
    (void)state;
    // logp = -1, ref = -1.5: d = 0.5; k1 = 0.5, k2 = 0.125, k3 = e^-0.5 - 1 + 0.5 = 0.1065306597
    assert_near(kl_estimate(-1.0f, -1.5f, KL_K1), 0.5, 1e-7);
    assert_near(kl_estimate(-1.0f, -1.5f, KL_K2), 0.125, 1e-7);
    assert_near(kl_estimate(-1.0f, -1.5f, KL_K3), 0.10653065971263342, 1e-7);
    assert_near(kl_estimate(-1.5f, -1.0f, KL_ABS), 0.5, 1e-7);
    assert_near(kl_estimate(-1.5f, -1.0f, KL_K1), -0.5, 1e-7);
    // d = -0.5: k3 = e^0.5 - 1 - 0.5 = 0.1487212707 (asymmetric, unlike k2)
    assert_near(kl_estimate(-1.5f, -1.0f, KL_K3), 0.14872127070012819, 1e-7);
    // k3 >= 0 everywhere, and ≈ k2 (= d²/2) for small d, to relative O(d)
    for (int i = -40; i <= 40; i++) {
        float d = (float)i * 0.25f;
        assert_true(kl_estimate(d, 0.0f, KL_K3) >= 0.0);
    }
    double k2 = kl_estimate(-2.00f, -2.01f, KL_K2), k3 = kl_estimate(-2.00f, -2.01f, KL_K3);
    assert_near(k2, 5e-5, 1e-8);
    assert_true(fabs(k3 - k2) / k2 < 0.01);

    // masked, clamped to ±10 (OpenRLHF)
    const float logp[4] = {-1.0f, 0.0f, -25.0f, -3.0f}, ref[4] = {-1.5f, -20.0f, -5.0f, -3.0f};
    const uint8_t mask[4] = {1, 1, 1, 0};
    float kl[4] = {9, 9, 9, 9};
    kl_per_token(logp, ref, mask, 4, KL_K1, 10.0f, kl);
    assert_near(kl[0], 0.5, 1e-7);
    assert_near(kl[1], 10.0, 0);    // 20 clamped
    assert_near(kl[2], -10.0, 0);   // -20 clamped
    assert_true(kl[3] == 0.0f);
    kl_per_token(logp, ref, mask, 4, KL_K3, 10.0f, kl);
    assert_near(kl[2], 10.0, 0);    // e^20 - 1 - 20 clamped
    kl_per_token(logp, ref, mask, 4, KL_K1, 0.0f, kl);
    assert_near(kl[1], 20.0, 1e-6);  // no clamp
    // per-sequence sum, averaged over sequences: rows [0.5, 20] and [-20, pad] -> (20.5 - 20)/2
    assert_near(kl_sequence_mean(kl, mask, 2, 2), 0.25, 1e-6);
}

static void test_kl_controller(void **state) {
    (void)state;
    KlController c;
    // TRL defaults: β 0.2, target 6, horizon 10000; a batch of 256 samples.
    kl_ctl_adaptive(&c, 0.2, 6.0, 10000.0);
    kl_ctl_update(&c, 9.0, 256);   // 9/6 - 1 = 0.5 clipped to 0.2: β = 0.2 * (1 + 0.2*256/10000)
    assert_near(c.value, 0.201024, 1e-12);
    kl_ctl_update(&c, 5.4, 256);   // 5.4/6 - 1 = -0.1: β *= 1 - 0.1*256/10000
    assert_near(c.value, 0.20050937856, 1e-12);
    kl_ctl_update(&c, 0.0, 256);   // -1 clipped to -0.2
    assert_near(c.value, 0.20050937856 * (1 - 0.2 * 256 / 10000.0), 1e-12);
    kl_ctl_update(&c, 6.0, 256);   // on target: unchanged
    assert_near(c.value, 0.20050937856 * (1 - 0.2 * 256 / 10000.0), 1e-12);
    kl_ctl_fixed(&c, 0.05);
    kl_ctl_update(&c, 100.0, 256);
    assert_true(c.value == 0.05);
}

// ---------------------------------------------------------------- PPO rewards

static void test_ppo_token_rewards(void **state) {
    (void)state;
    // 2 responses, T = 4: lengths 3 and 4. β = 0.1, scores 2 and -30 (clipped to -10).
    const float kl[8] = {0.5f, -1.0f, 2.0f, 99.0f, 1.0f, 0.0f, 0.0f, -2.0f};
    const uint8_t mask[8] = {1, 1, 1, 0, 1, 1, 1, 1};
    const float scores[2] = {2.0f, -30.0f};
    float rew[8];
    int last[2];
    char err[FTK_ERR_LEN];
    assert_int_equal(ppo_token_rewards(kl, scores, mask, 2, 4, 0.1f, 10.0f, rew, last, err), 0);
    const float expect[8] = {-0.05f, 0.1f, -0.2f + 2.0f, 0.0f, -0.1f, 0.0f, 0.0f, 0.2f - 10.0f};
    for (int i = 0; i < 8; i++) assert_near(rew[i], expect[i], 1e-6);
    assert_int_equal(last[0], 2);   // the last real token, not T-1
    assert_int_equal(last[1], 7);
    // no clipping
    assert_int_equal(ppo_token_rewards(kl, scores, mask, 2, 4, 0.1f, 0.0f, rew, NULL, err), 0);
    assert_near(rew[7], 0.2 - 30.0, 1e-5);
    // an empty response cannot carry a score
    const uint8_t bad[8] = {1, 1, 1, 0, 0, 0, 0, 0};
    assert_int_not_equal(ppo_token_rewards(kl, scores, bad, 2, 4, 0.1f, 0.0f, rew, NULL, err), 0);
    assert_non_null(strstr(err, "response 1"));
}

// ---------------------------------------------------------------- PPO policy loss

static void test_ppo_policy_clip_cases(void **state) {
    (void)state;
    // ε = 0.2, one token each; ratio ρ = e^(logp - old).
    //   A  ρ    -Aρ    -A clip(ρ)  max    grad dterm/dlogp   clipped
    //   +1 1.1  -1.1   -1.1        -1.1   -Aρ = -1.1          0   inside
    //   +1 1.5  -1.5   -1.2        -1.2   0                   1   above, A>0: clipped
    //   +1 0.5  -0.5   -0.8        -0.5   -0.5                0   below, A>0: not clipped
    //   -1 1.5   1.5    1.2         1.5   +1.5                0   above, A<0: not clipped
    //   -1 0.5   0.5    0.8         0.8   0                   1   below, A<0: clipped
    //   -1 0.9   0.9    0.9         0.9   +0.9                0   inside
    const float ratio[7] = {1.1f, 1.5f, 0.5f, 1.5f, 0.5f, 0.9f, 3.0f};
    const float adv[7] = {1, 1, 1, -1, -1, -1, 5};
    const float term_expect[6] = {-1.1f, -1.2f, -0.5f, 1.5f, 0.8f, 0.9f};
    const float grad_expect[6] = {-1.1f, 0.0f, -0.5f, 1.5f, 0.0f, 0.9f};
    const int clip_expect[6] = {0, 1, 0, 0, 1, 0};
    float logp[7], old[7];
    for (int i = 0; i < 7; i++) {
        old[i] = -2.0f;
        logp[i] = old[i] + logf(ratio[i]);
    }
    for (int i = 0; i < 6; i++) {
        float d;
        int c;
        float term = ppo_policy_term(logp[i], old[i], adv[i], 0.2f, 0.2f, &d, &c);
        assert_near(term, term_expect[i], 1e-6);
        assert_near(d, grad_expect[i], 1e-6);
        assert_int_equal(c, clip_expect[i]);
    }
    // As a batch: token 6 is padding (its ratio 3 would otherwise dominate).
    const uint8_t mask[7] = {1, 1, 1, 1, 1, 1, 0};
    float dlogp[7];
    PpoPolicyStats st;
    char err[FTK_ERR_LEN];
    assert_int_equal(ppo_policy_loss(logp, old, adv, mask, 7, 0.2f, 0.2f, 0.0f, NULL, dlogp, &st, err), 0);
    assert_near(st.loss, (-1.1 - 1.2 - 0.5 + 1.5 + 0.8 + 0.9) / 6.0, 1e-6);
    assert_near(st.clip_frac, 2.0 / 6.0, 1e-7);
    assert_int_equal(st.n_valid, 6);
    assert_near(st.ratio_mean, (1.1 + 1.5 + 0.5 + 1.5 + 0.5 + 0.9) / 6.0, 1e-6);
    double akl = 0, pkl = 0;
    for (int i = 0; i < 6; i++) {
        akl += 0.5 * log(ratio[i]) * log(ratio[i]);
        pkl += -log(ratio[i]);
    }
    assert_near(st.approx_kl, akl / 6.0, 1e-6);
    assert_near(st.policy_kl, pkl / 6.0, 1e-6);
    for (int i = 0; i < 6; i++) assert_near(dlogp[i], grad_expect[i] / 6.0, 1e-6);
    assert_true(dlogp[6] == 0.0f);
    // asymmetric clip (OpenRLHF eps_clip_low_high): ε_high = 0.6 lets ρ = 1.5 through for A > 0
    float d;
    int c;
    assert_near(ppo_policy_term(logp[1], old[1], 1.0f, 0.2f, 0.6f, &d, &c), -1.5, 1e-6);
    assert_near(d, -1.5, 1e-6);
    assert_int_equal(c, 0);
}

typedef struct {
    float *logp, *old, *adv;
    const uint8_t *mask;
    size_t n;
    float norm;
} PolicyCtx;
static double policy_loss_fn(void *p) {
    PolicyCtx *c = p;
    PpoPolicyStats st;
    char err[FTK_ERR_LEN];
    assert_int_equal(ppo_policy_loss(c->logp, c->old, c->adv, c->mask, c->n, 0.2f, 0.2f, c->norm, NULL, NULL, &st, err), 0);
    return st.loss;
}

static void test_ppo_policy_fd(void **state) {
    (void)state;
    // Ratios away from the clip edges 0.8/1.2 so a small step does not cross a kink.
    const float ratios[8] = {0.5f, 0.7f, 0.9f, 1.0f, 1.1f, 1.3f, 1.6f, 0.95f};
    enum { N = 16 };
    float logp[N], old[N], adv[N], dlogp[N];
    uint8_t mask[N];
    uint64_t rng = 7;
    for (int i = 0; i < N; i++) {
        old[i] = -0.5f - 3.0f * ftk_rand_uniform(&rng);
        logp[i] = old[i] + logf(ratios[i % 8]);
        adv[i] = 2.0f * ftk_rand_normal(&rng);
        mask[i] = (i % 5) != 4;
    }
    PolicyCtx ctx = {logp, old, adv, mask, N, 0.0f};
    PpoPolicyStats st;
    char err[FTK_ERR_LEN];
    assert_int_equal(ppo_policy_loss(logp, old, adv, mask, N, 0.2f, 0.2f, 0.0f, NULL, dlogp, &st, err), 0);
    assert_true(st.clip_frac > 0.0f && st.clip_frac < 1.0f);  // both regimes are exercised
    int n_zero = 0;
    for (int i = 0; i < N; i++) {
        assert_grad_close(dlogp[i], fd_grad(&logp[i], 1e-3f, policy_loss_fn, &ctx));
        n_zero += mask[i] && dlogp[i] == 0.0f;
    }
    assert_true(n_zero > 0);

    // Micro-batches with the minibatch's token count as norm add up to the whole.
    float norm = (float)st.n_valid;
    PpoPolicyStats a, b;
    float da[N];
    assert_int_equal(ppo_policy_loss(logp, old, adv, mask, 10, 0.2f, 0.2f, norm, NULL, da, &a, err), 0);
    assert_int_equal(ppo_policy_loss(logp + 10, old + 10, adv + 10, mask + 10, N - 10, 0.2f, 0.2f, norm, NULL,
                                     da + 10, &b, err), 0);
    assert_near(a.loss + b.loss, st.loss, 1e-6);
    assert_near(a.clip_frac + b.clip_frac, st.clip_frac, 1e-6);
    for (int i = 0; i < N; i++) assert_near(da[i], dlogp[i], 1e-7);
    const uint8_t none[2] = {0, 0};
    assert_int_not_equal(ppo_policy_loss(logp, old, adv, none, 2, 0.2f, 0.2f, 0.0f, NULL, NULL, &a, err), 0);
}

// ---------------------------------------------------------------- PPO value loss

static void test_ppo_value_cases(void **state) {
    (void)state;
    // clip 0.2 around v_old = 1.0, i.e. [0.8, 1.2]
    float d;
    int c;
    // inside the clip range: ½ (1.1 - 2)^2 = 0.405, grad v - R = -0.9
    assert_near(ppo_value_term(1.1f, 1.0f, 2.0f, 0.2f, &d, &c), 0.405, 1e-6);
    assert_near(d, -0.9, 1e-6);
    assert_int_equal(c, 0);
    // v = 1.5 moved past the range towards R = 2: clipped 1.2 has the larger error 0.8 -> ½ 0.64
    assert_near(ppo_value_term(1.5f, 1.0f, 2.0f, 0.2f, &d, &c), 0.32, 1e-6);
    assert_near(d, 0.0, 0);
    assert_int_equal(c, 1);
    // v = 1.5 moved past the range away from R = 0: unclipped error 1.5 is larger -> ½ 2.25, grad 1.5
    assert_near(ppo_value_term(1.5f, 1.0f, 0.0f, 0.2f, &d, &c), 1.125, 1e-6);
    assert_near(d, 1.5, 1e-6);
    assert_int_equal(c, 0);
    // no clipping: plain ½ (v - R)^2
    assert_near(ppo_value_term(1.5f, 1.0f, 2.0f, 0.0f, &d, &c), 0.125, 1e-6);
    assert_near(d, -0.5, 1e-6);
}

typedef struct {
    float *v, *v_old, *ret;
    const uint8_t *mask;
    size_t n;
} ValueCtx;
static double value_loss_fn(void *p) {
    ValueCtx *c = p;
    PpoValueStats st;
    char err[FTK_ERR_LEN];
    assert_int_equal(ppo_value_loss(c->v, c->v_old, c->ret, c->mask, c->n, 0.2f, 0.0f, NULL, &st, err), 0);
    return st.loss;
}

static void test_ppo_value_fd(void **state) {
    (void)state;
    enum { N = 12 };
    // offsets v - v_old away from ±0.2
    const float off[6] = {-0.5f, -0.1f, 0.0f, 0.15f, 0.3f, 0.7f};
    float v[N], v_old[N], ret[N], dv[N];
    uint8_t mask[N];
    uint64_t rng = 11;
    for (int i = 0; i < N; i++) {
        v_old[i] = ftk_rand_normal(&rng);
        v[i] = v_old[i] + off[i % 6];
        ret[i] = v_old[i] + 1.5f * ftk_rand_normal(&rng);
        mask[i] = i != 3 && i != 8;
    }
    ValueCtx ctx = {v, v_old, ret, mask, N};
    PpoValueStats st;
    char err[FTK_ERR_LEN];
    assert_int_equal(ppo_value_loss(v, v_old, ret, mask, N, 0.2f, 0.0f, dv, &st, err), 0);
    assert_int_equal(st.n_valid, 10);
    assert_true(st.clip_frac > 0.0f && st.clip_frac < 1.0f);
    for (int i = 0; i < N; i++) assert_grad_close(dv[i], fd_grad(&v[i], 1e-3f, value_loss_fn, &ctx));
    assert_true(dv[3] == 0.0f && dv[8] == 0.0f);
}

// ---------------------------------------------------------------- reward model

static void test_rm_loss_values(void **state) {
    (void)state;
    // Python: sp = log1p(exp(x)); L = mean sp(-(c - r - m)) + 0.01 mean (c + r)^2
    const float c[3] = {1.0f, -0.5f, 2.0f}, r[3] = {0.2f, 0.5f, 2.5f}, m[3] = {0.5f, 0.0f, -1.0f};
    float dc[3], dr[3];
    RmLossStats st;
    char err[FTK_ERR_LEN];
    assert_int_equal(rm_pairwise_loss(c, r, m, 3, 0.01f, dc, dr, &st, err), 0);
    assert_near(st.loss, 0.8528646387222855, 1e-6);
    const double dc_expect[3] = {-0.13385249439611366, -0.2436861928766683, -0.09584688959938181};
    const double dr_expect[3] = {0.14985249439611367, 0.2436861928766683, 0.1558468895993818};
    for (int i = 0; i < 3; i++) {
        assert_near(dc[i], dc_expect[i], 1e-6);
        assert_near(dr[i], dr_expect[i], 1e-6);
    }
    assert_near(st.accuracy, 1.0 / 3.0, 1e-7);               // only pair 0 has c > r
    assert_near(st.margin_mean, (0.8 - 1.0 - 0.5) / 3.0, 1e-6);  // mean c - r, margin excluded
    assert_near(st.chosen_mean, 2.5 / 3.0, 1e-6);
    // plain Bradley–Terry, one pair: -log σ(0) = log 2, gradient ∓½
    const float z = 0.0f;
    assert_int_equal(rm_pairwise_loss(&z, &z, NULL, 1, 0.0f, dc, dr, &st, err), 0);
    assert_near(st.loss, log(2.0), 1e-7);
    assert_near(dc[0], -0.5, 1e-7);
    assert_near(dr[0], 0.5, 1e-7);
    // extreme rewards: finite loss and gradients (softplus, no exp overflow)
    const float big = 200.0f, small = -200.0f;
    assert_int_equal(rm_pairwise_loss(&small, &big, NULL, 1, 0.0f, dc, dr, &st, err), 0);
    assert_near(st.loss, 400.0, 1e-3);
    assert_near(dc[0], -1.0, 1e-7);
    assert_int_equal(rm_pairwise_loss(&big, &small, NULL, 1, 0.0f, dc, dr, &st, err), 0);
    assert_true(st.loss >= 0.0f && st.loss < 1e-30);
    assert_int_not_equal(rm_pairwise_loss(c, r, NULL, 0, 0.0f, dc, dr, &st, err), 0);
}

typedef struct {
    float *c, *r, *m;
    int n;
    float coef;
} RmCtx;
static double rm_loss_fn(void *p) {
    RmCtx *x = p;
    RmLossStats st;
    char err[FTK_ERR_LEN];
    assert_int_equal(rm_pairwise_loss(x->c, x->r, x->m, x->n, x->coef, NULL, NULL, &st, err), 0);
    return st.loss;
}

static void test_rm_loss_fd(void **state) {
    (void)state;
    enum { N = 6 };
    float c[N], r[N], m[N], dc[N], dr[N];
    uint64_t rng = 3;
    for (int i = 0; i < N; i++) {
        c[i] = 2.0f * ftk_rand_normal(&rng);
        r[i] = 2.0f * ftk_rand_normal(&rng);
        m[i] = ftk_rand_uniform(&rng);
    }
    RmCtx ctx = {c, r, m, N, 0.05f};
    RmLossStats st;
    char err[FTK_ERR_LEN];
    assert_int_equal(rm_pairwise_loss(c, r, m, N, 0.05f, dc, dr, &st, err), 0);
    for (int i = 0; i < N; i++) {
        assert_grad_close(dc[i], fd_grad(&c[i], 1e-3f, rm_loss_fn, &ctx));
        assert_grad_close(dr[i], fd_grad(&r[i], 1e-3f, rm_loss_fn, &ctx));
    }
}

// ---------------------------------------------------------------- heads and last-token rows

static void test_last_token_index(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    // right padding, T = 5, lengths 3, 5, 1 -> positions 2, 4, 0 -> flat rows 2, 9, 10
    const int lengths[3] = {3, 5, 1};
    int rows[3];
    assert_int_equal(last_token_index(lengths, 3, 5, 0, rows, err), 0);
    assert_int_equal(rows[0], 2);
    assert_int_equal(rows[1], 9);
    assert_int_equal(rows[2], 10);
    // with 2 soft-prompt positions in front, T = 7: rows b*7 + 2 + len - 1
    assert_int_equal(last_token_index(lengths, 3, 7, 2, rows, err), 0);
    assert_int_equal(rows[0], 4);
    assert_int_equal(rows[1], 13);
    assert_int_equal(rows[2], 16);
    // lengths that do not fit
    const int zero[1] = {0}, too_long[1] = {6};
    assert_int_not_equal(last_token_index(zero, 1, 5, 0, rows, err), 0);
    assert_int_not_equal(last_token_index(too_long, 1, 5, 0, rows, err), 0);
    assert_int_not_equal(last_token_index(lengths, 3, 6, 2, rows, err), 0);  // 2 + 5 > 6
    assert_non_null(strstr(err, "sequence 1"));
    // from an attention mask, same answer as the lengths
    const uint8_t mask[15] = {1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0};
    assert_int_equal(last_token_index_from_mask(mask, 3, 5, rows, err), 0);
    assert_int_equal(rows[0], 2);
    assert_int_equal(rows[1], 9);
    assert_int_equal(rows[2], 10);
    const uint8_t empty[5] = {0};
    assert_int_not_equal(last_token_index_from_mask(empty, 1, 5, rows, err), 0);
}

static void test_scalar_head(void **state) {
    (void)state;
    // score head, no bias: h (2, 3), w (1, 3)
    const float h[6] = {1, 2, 3, -1, 0, 2}, w[3] = {0.5f, -1.0f, 0.25f};
    float r[2];
    scalar_head_forward(h, 2, 3, w, NULL, r);
    assert_near(r[0], 0.5 - 2.0 + 0.75, 1e-6);
    assert_near(r[1], -0.5 + 0.5, 1e-6);
    // backward with dr = [2, -1]: dw += 2 h0 - h1 = [3, 4, 4]; dh += dr_i w
    const float dr[2] = {2.0f, -1.0f};
    float dw[3] = {1, 1, 1}, dh[6] = {0}, dbias = 0.5f;
    scalar_head_backward(h, 2, 3, w, dr, dw, &dbias, dh);
    assert_near(dw[0], 1 + 3, 1e-6);
    assert_near(dw[1], 1 + 4, 1e-6);
    assert_near(dw[2], 1 + 4, 1e-6);
    assert_near(dbias, 0.5 + 1.0, 1e-6);
    assert_near(dh[0], 1.0, 1e-6);
    assert_near(dh[1], -2.0, 1e-6);
    assert_near(dh[5], -0.25, 1e-6);
    // value head with bias
    const float bias = 0.75f;
    scalar_head_forward(h, 2, 3, w, &bias, r);
    assert_near(r[1], 0.75, 1e-6);
}

// Value head over the final hidden rows picked by gather_rows, loss = Σ_i a_i out_i^2: check
// dw, dbias and d_hidden (through scatter_add_rows) against finite differences.
typedef struct {
    float *hidden, *w, *bias;
    const int *rows;
    int n, C;
} HeadCtx;
static const float head_a[3] = {0.7f, -1.3f, 0.4f};
static double head_loss_fn(void *p) {
    HeadCtx *x = p;
    float h[3 * 4], out[3];
    gather_rows(h, x->hidden, x->rows, x->n, x->C);
    scalar_head_forward(h, x->n, x->C, x->w, x->bias, out);
    double L = 0;
    for (int i = 0; i < x->n; i++) L += head_a[i] * (double)out[i] * out[i];
    return L;
}

static void test_scalar_head_fd(void **state) {
    (void)state;
    enum { NR = 5, C = 4, n = 3 };
    float hidden[NR * C], w[C], bias = 0.3f;
    uint64_t rng = 5;
    for (int i = 0; i < NR * C; i++) hidden[i] = ftk_rand_normal(&rng);
    for (int i = 0; i < C; i++) w[i] = ftk_rand_normal(&rng);
    const int rows[n] = {4, 1, 4};  // a repeated row must accumulate twice
    HeadCtx ctx = {hidden, w, &bias, rows, n, C};
    float h[n * C], out[n], dout[n], dh[n * C] = {0}, dw[C] = {0}, dbias = 0, d_hidden[NR * C] = {0};
    gather_rows(h, hidden, rows, n, C);
    scalar_head_forward(h, n, C, w, &bias, out);
    for (int i = 0; i < n; i++) dout[i] = 2.0f * head_a[i] * out[i];
    scalar_head_backward(h, n, C, w, dout, dw, &dbias, dh);
    scatter_add_rows(d_hidden, dh, rows, n, C);
    for (int c = 0; c < C; c++) assert_grad_close(dw[c], fd_grad(&w[c], 1e-3f, head_loss_fn, &ctx));
    assert_grad_close(dbias, fd_grad(&bias, 1e-3f, head_loss_fn, &ctx));
    for (int i = 0; i < NR * C; i++) assert_grad_close(d_hidden[i], fd_grad(&hidden[i], 1e-3f, head_loss_fn, &ctx));
    for (int c = 0; c < C; c++) assert_true(d_hidden[0 * C + c] == 0.0f);  // row 0 not read
}

// ---------------------------------------------------------------- DPO

static void test_dpo_values(void **state) {
    (void)state;
    // π_c = -10, ref_c = -11, π_r = -12, ref_r = -11.5, β = 0.1: Δ = 1 - (-0.5) = 1.5, βΔ = 0.15
    //   loss = softplus(-0.15) = 0.6209570477895321, dL/dπ_c = -β σ(-0.15) = -0.04625701546562505
    const float pc = -10, rc = -11, pr = -12, rr = -11.5f;
    float dc, dr, rew_c, rew_r;
    DpoStats st;
    char err[FTK_ERR_LEN];
    assert_int_equal(dpo_loss(&pc, &pr, &rc, &rr, 1, 0.1f, 0.0f, DPO_SIGMOID, &dc, &dr, &rew_c, &rew_r, &st, err), 0);
    assert_near(st.loss, 0.6209570477895321, 1e-6);
    assert_near(dc, -0.04625701546562505, 1e-7);
    assert_near(dr, 0.04625701546562505, 1e-7);
    assert_near(rew_c, 0.1, 1e-6);
    assert_near(rew_r, -0.05, 1e-6);
    assert_near(st.reward_margin, 0.15, 1e-6);
    assert_near(st.reward_accuracy, 1.0, 0);
    // cDPO ε = 0.1: 0.9 softplus(-0.15) + 0.1 softplus(0.15) = 0.6359570477895321,
    //   grad β(-0.9 σ(-0.15) + 0.1 σ(0.15)) = -0.03625701546562504
    assert_int_equal(dpo_loss(&pc, &pr, &rc, &rr, 1, 0.1f, 0.1f, DPO_SIGMOID, &dc, &dr, NULL, NULL, &st, err), 0);
    assert_near(st.loss, 0.6359570477895321, 1e-6);
    assert_near(dc, -0.03625701546562504, 1e-7);
    // IPO: (Δ - 1/(2β))^2 = (1.5 - 5)^2 = 12.25, grad 2(Δ - 5) = -7
    assert_int_equal(dpo_loss(&pc, &pr, &rc, &rr, 1, 0.1f, 0.0f, DPO_IPO, &dc, &dr, NULL, NULL, &st, err), 0);
    assert_near(st.loss, 12.25, 1e-5);
    assert_near(dc, -7.0, 1e-5);
    assert_near(dr, 7.0, 1e-5);
    // bad arguments
    assert_int_not_equal(dpo_loss(&pc, &pr, &rc, &rr, 1, 0.0f, 0.0f, DPO_SIGMOID, &dc, &dr, NULL, NULL, &st, err), 0);
    assert_int_not_equal(dpo_loss(&pc, &pr, &rc, &rr, 1, 0.1f, 0.7f, DPO_SIGMOID, &dc, &dr, NULL, NULL, &st, err), 0);
    assert_int_not_equal(dpo_loss(&pc, &pr, &rc, &rr, 0, 0.1f, 0.0f, DPO_SIGMOID, &dc, &dr, NULL, NULL, &st, err), 0);
}

typedef struct {
    float *pc, *pr, *rc, *rr;
    int n;
    float beta, eps;
    DpoLossType type;
} DpoCtx;
static double dpo_loss_fn(void *p) {
    DpoCtx *x = p;
    DpoStats st;
    char err[FTK_ERR_LEN];
    assert_int_equal(dpo_loss(x->pc, x->pr, x->rc, x->rr, x->n, x->beta, x->eps, x->type, NULL, NULL, NULL, NULL, &st, err), 0);
    return st.loss;
}

static void test_dpo_fd(void **state) {
    (void)state;
    enum { N = 5 };
    float pc[N], pr[N], rc[N], rr[N], dc[N], dr[N];
    uint64_t rng = 9;
    for (int i = 0; i < N; i++) {
        rc[i] = -20.0f + 4.0f * ftk_rand_normal(&rng);
        rr[i] = -20.0f + 4.0f * ftk_rand_normal(&rng);
        pc[i] = rc[i] + 3.0f * ftk_rand_normal(&rng);
        pr[i] = rr[i] + 3.0f * ftk_rand_normal(&rng);
    }
    const struct { float beta, eps; DpoLossType type; } cases[3] = {
        {0.1f, 0.0f, DPO_SIGMOID}, {0.5f, 0.2f, DPO_SIGMOID}, {0.1f, 0.0f, DPO_IPO}};
    for (int k = 0; k < 3; k++) {
        DpoCtx ctx = {pc, pr, rc, rr, N, cases[k].beta, cases[k].eps, cases[k].type};
        DpoStats st;
        char err[FTK_ERR_LEN];
        assert_int_equal(dpo_loss(pc, pr, rc, rr, N, ctx.beta, ctx.eps, ctx.type, dc, dr, NULL, NULL, &st, err), 0);
        // IPO's loss is ~10 in size: a step of 1e-2 keeps float rounding below the tolerance
        float h = cases[k].type == DPO_IPO ? 1e-2f : 1e-3f;
        for (int i = 0; i < N; i++) {
            assert_grad_close(dc[i], fd_grad(&pc[i], h, dpo_loss_fn, &ctx));
            assert_grad_close(dr[i], fd_grad(&pr[i], h, dpo_loss_fn, &ctx));
        }
    }
}

// ---------------------------------------------------------------- sequence log-prob reducer

static void test_seq_logp_sum(void **state) {
    (void)state;
    // (2, 3): row 0 tokens 1..2 are the response, row 1 all three
    const float logp[6] = {-5.0f, -1.0f, -2.0f, -0.5f, -0.25f, -4.0f};
    const uint8_t mask[6] = {0, 1, 1, 1, 1, 1};
    float out[2];
    seq_logp_sum(logp, mask, 2, 3, 0, out);
    assert_near(out[0], -3.0, 1e-6);
    assert_near(out[1], -4.75, 1e-6);
    seq_logp_sum(logp, mask, 2, 3, 1, out);
    assert_near(out[0], -1.5, 1e-6);
    assert_near(out[1], -4.75 / 3.0, 1e-6);
    const float dout[2] = {0.3f, -0.6f};
    float d[6];
    seq_logp_sum_backward(dout, mask, 2, 3, 0, d);
    const float expect[6] = {0, 0.3f, 0.3f, -0.6f, -0.6f, -0.6f};
    for (int i = 0; i < 6; i++) assert_near(d[i], expect[i], 0);
    seq_logp_sum_backward(dout, mask, 2, 3, 1, d);
    assert_near(d[0], 0.0, 0);
    assert_near(d[1], 0.15, 1e-7);
    assert_near(d[5], -0.2, 1e-7);
    // chained with DPO: dL/dlogp of each response token is dL/dπ of its sequence
    const float ref[2] = {-3.5f, -4.0f};
    float pi[2], dpi[2], drej[2];
    seq_logp_sum(logp, mask, 2, 3, 0, pi);
    DpoStats st;
    char err[FTK_ERR_LEN];
    assert_int_equal(dpo_loss(&pi[0], &pi[1], &ref[0], &ref[1], 1, 0.1f, 0.0f, DPO_SIGMOID, dpi, drej, NULL, NULL, &st, err), 0);
    const float dseq[2] = {dpi[0], drej[0]};
    seq_logp_sum_backward(dseq, mask, 2, 3, 0, d);
    // Δ = (-3 + 3.5) - (-4.75 + 4) = 1.25; dL/dπ_c = -0.1 σ(-0.125)
    double g = -0.1 / (1.0 + exp(0.125));
    assert_near(d[1], g, 1e-7);
    assert_near(d[4], -g, 1e-7);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gae_hand_single),   cmocka_unit_test(test_gae_batch_lengths),
        cmocka_unit_test(test_masked_whiten),     cmocka_unit_test(test_kl_estimators),
        cmocka_unit_test(test_kl_controller),     cmocka_unit_test(test_ppo_token_rewards),
        cmocka_unit_test(test_ppo_policy_clip_cases), cmocka_unit_test(test_ppo_policy_fd),
        cmocka_unit_test(test_ppo_value_cases),   cmocka_unit_test(test_ppo_value_fd),
        cmocka_unit_test(test_rm_loss_values),    cmocka_unit_test(test_rm_loss_fd),
        cmocka_unit_test(test_last_token_index),  cmocka_unit_test(test_scalar_head),
        cmocka_unit_test(test_scalar_head_fd),    cmocka_unit_test(test_dpo_values),
        cmocka_unit_test(test_dpo_fd),            cmocka_unit_test(test_seq_logp_sum),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
