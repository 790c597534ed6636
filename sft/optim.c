// optim.c — see optim.h.
#include "sft/optim.h"

#include <math.h>
#include <stdlib.h>

#include "model/common.h"

int adamw_init(AdamW *opt, size_t n, char *err) {
    *opt = (AdamW){.beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.0, .n = n};
    if (n == 0) return ftk_err(err, "AdamW: no trainable parameters");
    opt->m = calloc(n, sizeof(float));
    opt->v = calloc(n, sizeof(float));
    if (!opt->m || !opt->v) {
        adamw_free(opt);
        return ftk_err(err, "AdamW: out of memory for %zu parameters", n);
    }
    return 0;
}

void adamw_free(AdamW *opt) {
    free(opt->m);
    free(opt->v);
    opt->m = opt->v = NULL;
}

void adamw_step(AdamW *opt, float *params, const float *grads, double lr) {
    opt->step++;
    // Scalars in double, then rounded to float once, as PyTorch does with its Python-float
    // hyperparameters before the fp32 tensor ops (_single_tensor_adamw).
    double bias_correction1 = 1.0 - pow(opt->beta1, (double)opt->step);
    double bias_correction2 = 1.0 - pow(opt->beta2, (double)opt->step);
    const float decay = (float)(1.0 - lr * opt->weight_decay);   // decoupled weight decay
    const float w1 = (float)(1.0 - opt->beta1);                   // exp_avg.lerp_(g, 1 - b1)
    const float b2 = (float)opt->beta2, w2 = (float)(1.0 - opt->beta2);
    const float step_size = (float)(lr / bias_correction1);
    const float bc2_sqrt = (float)sqrt(bias_correction2);
    const float eps = (float)opt->eps;
    float *m = opt->m, *v = opt->v;
    for (size_t i = 0; i < opt->n; i++) {
        float g = grads[i];
        m[i] = m[i] + w1 * (g - m[i]);          // = b1 m + (1-b1) g
        v[i] = v[i] * b2 + w2 * g * g;          // = b2 v + (1-b2) g^2
        float denom = sqrtf(v[i]) / bc2_sqrt + eps;   // sqrt(v_hat) + eps
        params[i] = params[i] * decay - step_size * m[i] / denom;
    }
}

double grad_global_norm(const float *grads, size_t n) {
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) sum += (double)grads[i] * (double)grads[i];
    return sqrt(sum);
}

int grad_clip(float *grads, size_t n, double max_norm, double *norm_out, char *err) {
    double norm = grad_global_norm(grads, n);
    *norm_out = norm;
    if (!isfinite(norm)) return ftk_err(err, "gradient norm is %s (NaN or Inf in the gradients)", isnan(norm) ? "nan" : "inf");
    if (max_norm <= 0) return 0;
    double coef = max_norm / (norm + 1e-6);  // clip_grad_norm_'s epsilon
    if (coef < 1.0) {
        const float c = (float)coef;
        for (size_t i = 0; i < n; i++) grads[i] *= c;
    }
    return 0;
}

int check_loss_finite(double loss, int64_t step, char *err) {
    if (isfinite(loss)) return 0;
    return ftk_err(err, "step %lld: loss is %s", (long long)step, isnan(loss) ? "nan" : "inf");
}
