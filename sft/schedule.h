// schedule.h — learning-rate schedules as Hugging Face transformers' get_scheduler: the lr of an
// update is base_lr * lambda(step), where step counts updates already taken (0 for the first one;
// HF's LambdaLR current_step) and lambda is the HF lr_lambda of the named schedule.
#ifndef FTK_SFT_SCHEDULE_H
#define FTK_SFT_SCHEDULE_H

#include <stdint.h>

typedef enum { LR_CONSTANT, LR_CONSTANT_WITH_WARMUP, LR_LINEAR, LR_COSINE } LrScheduleType;

typedef struct {
    LrScheduleType type;
    double base_lr;        // --learning-rate
    int64_t warmup_steps;  // --warmup-steps (ignored by "constant", as in HF)
    int64_t max_steps;     // total optimizer updates (num_training_steps)
} LrSchedule;

// "constant", "constant_with_warmup", "linear", "cosine" (--lr-scheduler-type); -1 for others.
int lr_schedule_parse(const char *name, LrScheduleType *type, char *err);
const char *lr_schedule_name(LrScheduleType type);

double lr_lambda(const LrSchedule *s, int64_t step);  // the multiplier, in [0, 1]
double lr_at(const LrSchedule *s, int64_t step);      // base_lr * lr_lambda(s, step)

#endif
