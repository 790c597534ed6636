// test_optim.c — AdamW against an independent double-precision reference, decoupled weight decay,
// bias correction, global-norm clipping, NaN/Inf checks, and the HF learning-rate schedules.
#include "tests/testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/common.h"
#include "sft/optim.h"
#include "sft/schedule.h"

// Textbook AdamW (Loshchilov & Hutter, as torch.optim.AdamW documents it) in double.
static void reference_adamw(double *p, double *m, double *v, const float *g, int n, int t, double lr, double b1,
                            double b2, double eps, double wd) {
    for (int i = 0; i < n; i++) {
        p[i] -= lr * wd * p[i];
        m[i] = b1 * m[i] + (1 - b1) * g[i];
        v[i] = b2 * v[i] + (1 - b2) * (double)g[i] * g[i];
        double m_hat = m[i] / (1 - pow(b1, t)), v_hat = v[i] / (1 - pow(b2, t));
        p[i] -= lr * m_hat / (sqrt(v_hat) + eps);
    }
}

static void check_against_reference(double wd) {
    enum { N = 5, STEPS = 3 };
    const float p0[N] = {0.5f, -1.0f, 2.0f, 0.0f, 0.25f};
    // one gradient row per step; the last column is tiny so that eps matters
    const float grads[STEPS][N] = {{0.1f, -0.2f, 0.3f, 1.5f, 2e-8f},
                                   {-0.05f, -0.1f, 0.4f, -2.0f, -1e-8f},
                                   {0.2f, 0.0f, -0.1f, 0.5f, 3e-8f}};
    const double lr[STEPS] = {1e-2, 5e-3, 2e-2};
    AdamW opt;
    char err[FTK_ERR_LEN];
    assert_int_equal(adamw_init(&opt, N, err), 0);
    opt.weight_decay = wd;
    float p[N];
    double rp[N], rm[N] = {0}, rv[N] = {0}, gmax[N] = {0};
    for (int i = 0; i < N; i++) rp[i] = p[i] = p0[i];
    for (int t = 1; t <= STEPS; t++) {
        adamw_step(&opt, p, grads[t - 1], lr[t - 1]);
        reference_adamw(rp, rm, rv, grads[t - 1], N, t, lr[t - 1], 0.9, 0.999, 1e-8, wd);
        assert_int_equal(opt.step, t);
        for (int i = 0; i < N; i++) {
            assert_true(fabs(p[i] - rp[i]) <= 1e-6 * (1 + fabs(rp[i])));
            // m cancels (0.15 -> -0.065 -> -0.0085), so its float error scales with the largest |g|
            gmax[i] = fmax(gmax[i], fabs(grads[t - 1][i]));
            assert_true(fabs(opt.m[i] - rm[i]) <= 2e-7 * gmax[i]);
            assert_true(fabs(opt.v[i] - rv[i]) <= 1e-5 * fabs(rv[i]) + 1e-20);
        }
    }
    // the parameters moved by a learning-rate-sized amount, so the comparison above had teeth
    assert_true(fabs(p[0] - p0[0]) > 1e-3);
    adamw_free(&opt);
}

static void test_adamw_three_steps(void **state) {
    (void)state;
    check_against_reference(0.0);
}

static void test_adamw_three_steps_weight_decay(void **state) {
    (void)state;
    check_against_reference(0.1);
}

// Hand-computed first step: m_hat = g, v_hat = g^2, so p1 = p0 - lr * g / (|g| + eps).
static void test_adamw_first_step_by_hand(void **state) {
    (void)state;
    AdamW opt;
    char err[FTK_ERR_LEN];
    assert_int_equal(adamw_init(&opt, 3, err), 0);
    assert_true(opt.beta1 == 0.9 && opt.beta2 == 0.999 && opt.eps == 1e-8 && opt.weight_decay == 0.0);
    float p[3] = {1.0f, 1.0f, 1.0f}, g[3] = {1e-3f, -1.0f, 1e3f};
    adamw_step(&opt, p, g, 0.1);
    // bias correction makes the first update lr * sign(g) whatever |g| is; without it the step
    // would be lr * 0.1 g / sqrt(0.001 g^2) = 0.316 for every element
    assert_true(fabs(p[0] - (1.0 - 0.1 * 1e-3 / (1e-3 + 1e-8))) < 1e-6);
    assert_true(fabs(p[1] - 1.1) < 1e-6);
    assert_true(fabs(p[2] - 0.9) < 1e-6);
    assert_true(fabs(opt.m[1] - (-0.1)) < 1e-7);     // (1 - b1) g
    assert_true(fabs(opt.v[2] - 1000.0) < 1e-3);     // (1 - b2) g^2 = 0.001 * 1e6
    adamw_free(&opt);
}

// Decoupled: with zero gradients the moments stay 0 and only p *= (1 - lr wd) acts. (Adam with an
// L2 term in the gradient would instead take normalised steps of size lr.)
static void test_adamw_weight_decay_decoupled(void **state) {
    (void)state;
    AdamW opt;
    char err[FTK_ERR_LEN];
    assert_int_equal(adamw_init(&opt, 2, err), 0);
    opt.weight_decay = 0.1;
    float p[2] = {2.0f, -4.0f}, g[2] = {0.0f, 0.0f};
    for (int t = 0; t < 3; t++) adamw_step(&opt, p, g, 0.5);
    double f = pow(1.0 - 0.5 * 0.1, 3);
    assert_true(fabs(p[0] - 2.0 * f) < 1e-6);
    assert_true(fabs(p[1] + 4.0 * f) < 1e-6);
    assert_true(opt.m[0] == 0.0f && opt.v[1] == 0.0f);
    adamw_free(&opt);
}

static void test_grad_clip(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    double norm;
    float g[2] = {3.0f, 4.0f};
    assert_int_equal(grad_clip(g, 2, 1.0, &norm, err), 0);
    assert_true(norm == 5.0);  // pre-clip
    double coef = 1.0 / (5.0 + 1e-6);
    assert_true(fabs(g[0] - 3.0 * coef) < 1e-7 && fabs(g[1] - 4.0 * coef) < 1e-7);
    assert_true(fabs(grad_global_norm(g, 2) - 1.0) < 1e-6);
    // below the threshold, or disabled: untouched
    float h[2] = {3.0f, 4.0f};
    assert_int_equal(grad_clip(h, 2, 10.0, &norm, err), 0);
    assert_true(h[0] == 3.0f && h[1] == 4.0f && norm == 5.0);
    assert_int_equal(grad_clip(h, 2, 0.0, &norm, err), 0);
    assert_true(h[0] == 3.0f && norm == 5.0);
    // the norm accumulates in double: a float sum of these 1e6 squares is off by 4.5e-3
    size_t n = 1000000;
    float *big = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) big[i] = 1e-3f;
    assert_true(fabs(grad_global_norm(big, n) - sqrt((double)n) * (double)1e-3f) < 1e-10);
    free(big);
}

static void test_nonfinite(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    double norm;
    float g[3] = {1.0f, NAN, 2.0f};
    assert_int_not_equal(grad_clip(g, 3, 1.0, &norm, err), 0);
    assert_non_null(strstr(err, "nan"));
    assert_true(g[0] == 1.0f && g[2] == 2.0f);  // untouched
    float h[2] = {INFINITY, 1.0f};
    assert_int_not_equal(grad_clip(h, 2, 0.0, &norm, err), 0);  // checked even when clipping is off
    assert_non_null(strstr(err, "inf"));
    assert_int_equal(check_loss_finite(2.5, 7, err), 0);
    assert_int_not_equal(check_loss_finite(NAN, 7, err), 0);
    assert_non_null(strstr(err, "step 7"));
    assert_non_null(strstr(err, "nan"));
    assert_int_not_equal(check_loss_finite(-INFINITY, 8, err), 0);
}

// HF lr_lambda, written out independently of sft/schedule.c.
static double hf_lambda(const char *name, int64_t step, int64_t warmup, int64_t total) {
    if (strcmp(name, "constant") == 0) return 1.0;
    if (step < warmup) return (double)step / (double)(warmup > 1 ? warmup : 1);
    if (strcmp(name, "constant_with_warmup") == 0) return 1.0;
    double span = (double)(total - warmup > 1 ? total - warmup : 1);
    if (strcmp(name, "linear") == 0) return fmax(0.0, (double)(total - step) / span);
    return fmax(0.0, 0.5 * (1.0 + cos(M_PI * (double)(step - warmup) / span)));
}

static void test_schedules(void **state) {
    (void)state;
    char err[FTK_ERR_LEN];
    const char *names[] = {"constant", "constant_with_warmup", "linear", "cosine"};
    const int64_t steps[] = {0, 1, 5, 9, 10, 11, 32, 55, 99, 100};
    for (int k = 0; k < 4; k++) {
        LrSchedule s = {.base_lr = 2e-4, .warmup_steps = 10, .max_steps = 100};
        assert_int_equal(lr_schedule_parse(names[k], &s.type, err), 0);
        assert_string_equal(lr_schedule_name(s.type), names[k]);
        for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
            double want = hf_lambda(names[k], steps[i], 10, 100);
            assert_true(fabs(lr_lambda(&s, steps[i]) - want) < 1e-15);
            assert_true(fabs(lr_at(&s, steps[i]) - 2e-4 * want) < 1e-18);
        }
    }
    // key values written out
    LrSchedule s = {.type = LR_LINEAR, .base_lr = 1.0, .warmup_steps = 10, .max_steps = 100};
    assert_true(lr_lambda(&s, 0) == 0.0);      // warmup starts at 0
    assert_true(lr_lambda(&s, 5) == 0.5);
    assert_true(lr_lambda(&s, 10) == 1.0);     // end of warmup: peak
    assert_true(lr_lambda(&s, 55) == 0.5);     // halfway down
    assert_true(lr_lambda(&s, 100) == 0.0);    // end
    assert_true(lr_lambda(&s, 120) == 0.0);    // clamped past the end
    s.type = LR_COSINE;
    assert_true(fabs(lr_lambda(&s, 55) - 0.5) < 1e-15);
    assert_true(fabs(lr_lambda(&s, 100)) < 1e-15);
    s.type = LR_CONSTANT;                      // HF's "constant" ignores warmup
    assert_true(lr_lambda(&s, 0) == 1.0);
    s.type = LR_CONSTANT_WITH_WARMUP;
    assert_true(lr_lambda(&s, 3) == 0.3 && lr_lambda(&s, 500) == 1.0);
    // no warmup: the first update already uses the full rate
    LrSchedule nw = {.type = LR_LINEAR, .base_lr = 1.0, .warmup_steps = 0, .max_steps = 4};
    assert_true(lr_lambda(&nw, 0) == 1.0 && lr_lambda(&nw, 1) == 0.75);
    // unknown names
    LrScheduleType t;
    assert_int_not_equal(lr_schedule_parse("cosine_with_restarts", &t, err), 0);
    assert_non_null(strstr(err, "cosine_with_restarts"));
    assert_int_not_equal(lr_schedule_parse("Linear", &t, err), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adamw_three_steps),        cmocka_unit_test(test_adamw_three_steps_weight_decay),
        cmocka_unit_test(test_adamw_first_step_by_hand), cmocka_unit_test(test_adamw_weight_decay_decoupled),
        cmocka_unit_test(test_grad_clip),                cmocka_unit_test(test_nonfinite),
        cmocka_unit_test(test_schedules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
