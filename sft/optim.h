// optim.h — AdamW over the flat trainable buffer, global-norm gradient clipping, NaN/Inf checks.
// The parameters, gradients and both moments are each one array of n floats in the same order
// (DESIGN.md §3), so every function here is one loop over n values. One update, after backward:
//   if (check_loss_finite(loss, opt.step, err) || grad_clip(grads, n, max_grad_norm, &norm, err)) stop;
//   adamw_step(&opt, params, grads, lr_at(&sched, opt.step));
#ifndef FTK_SFT_OPTIM_H
#define FTK_SFT_OPTIM_H

#include <stddef.h>
#include <stdint.h>

// torch.optim.AdamW state. adamw_init sets the HF Trainer defaults (beta1 0.9, beta2 0.999,
// eps 1e-8, weight_decay 0); set the fields after init to change them.
typedef struct {
    double beta1, beta2, eps, weight_decay;  // double like PyTorch's Python floats
    size_t n;       // number of trainable floats
    int64_t step;   // updates taken so far (PyTorch's state["step"]); the next update is step + 1
    float *m;       // (n) first moment, exp_avg
    float *v;       // (n) second moment, exp_avg_sq
} AdamW;

int adamw_init(AdamW *opt, size_t n, char *err);  // zeroed moments, step 0
void adamw_free(AdamW *opt);

// One update of params (n) from grads (n) with learning rate lr, as torch.optim.AdamW:
//   p -= lr*wd*p;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
//   p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)        with t = ++opt->step.
void adamw_step(AdamW *opt, float *params, const float *grads, double lr);

// Global L2 norm of grads (n), accumulated in double.
double grad_global_norm(const float *grads, size_t n);

// torch.nn.utils.clip_grad_norm_: *norm_out = the pre-clip global norm; when max_norm > 0 and
// max_norm / (norm + 1e-6) < 1 the grads are scaled by that factor (max_norm <= 0 disables).
// Returns -1 (err says so, grads untouched) when the norm is NaN or Inf, so the loop can stop.
int grad_clip(float *grads, size_t n, double max_norm, double *norm_out, char *err);

// Returns -1 with "step N: loss is nan" in err when loss is NaN or Inf, else 0.
int check_loss_finite(double loss, int64_t step, char *err);

#endif
