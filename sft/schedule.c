// schedule.c — see schedule.h. Formulas of transformers/optimization.py (the lr_lambda of
// get_constant_schedule_with_warmup, get_linear_schedule_with_warmup and
// get_cosine_schedule_with_warmup with num_cycles = 0.5), in double like Python.
#include "sft/schedule.h"

#include <math.h>
#include <string.h>

#include "model/common.h"

static const char *const schedule_names[] = {"constant", "constant_with_warmup", "linear", "cosine"};

int lr_schedule_parse(const char *name, LrScheduleType *type, char *err) {
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, schedule_names[i]) == 0) {
            *type = (LrScheduleType)i;
            return 0;
        }
    }
    return ftk_err(err, "unknown lr scheduler type '%s' (expected constant, constant_with_warmup, linear or cosine)", name);
}

const char *lr_schedule_name(LrScheduleType type) {
    return (unsigned)type < 4 ? schedule_names[type] : "unknown";
}

static double max1(int64_t x) { return x > 1 ? (double)x : 1.0; }  // float(max(1, x))

double lr_lambda(const LrSchedule *s, int64_t step) {
    if (s->type == LR_CONSTANT) return 1.0;
    if (step < s->warmup_steps) return (double)step / max1(s->warmup_steps);
    // after warmup: progress runs from 0 at warmup_steps to 1 at max_steps
    double after = (double)(step - s->warmup_steps), span = max1(s->max_steps - s->warmup_steps);
    switch (s->type) {
    case LR_CONSTANT_WITH_WARMUP:
        return 1.0;
    case LR_LINEAR:
        return fmax(0.0, (double)(s->max_steps - step) / span);
    case LR_COSINE:
        return fmax(0.0, 0.5 * (1.0 + cos(M_PI * 0.5 * 2.0 * (after / span))));
    default:
        return 1.0;
    }
}

double lr_at(const LrSchedule *s, int64_t step) { return s->base_lr * lr_lambda(s, step); }
