// trainer_core.h — plumbing the trainer loops share (sft/train.c, rlhf/pref_train.c,
// rlhf/ppo_train.c): AdamW from a TrainConfig, one optimizer update, the adapter writer for
// checkpoints, and the checkpoint save/resume bookkeeping. What a step computes stays in the loops.
#ifndef FTK_TRAINER_CORE_H
#define FTK_TRAINER_CORE_H

#include <stdint.h>
#include <cjson/cJSON.h>

#include "datasets/batch.h"
#include "lora/adapter.h"
#include "model/model.h"
#include "sft/checkpoint.h"
#include "sft/metrics.h"
#include "sft/optim.h"
#include "sft/schedule.h"
#include "sft/train.h"

// Refuses sequences of T_max positions (n_virtual of them virtual tokens) beyond m's context.
int trainer_check_context(const Model *m, int T_max, int n_virtual, char *err);

// Optimizer steps of a run: tc->max_steps when set, else ceil(epochs * batches / grad_accum), >= 1.
int64_t trainer_max_steps(const TrainConfig *tc, int64_t batches_per_epoch);

// Writes <output_dir>/training_args.json (when training_args is set) and puts the path of
// <output_dir>/metrics.jsonl into metrics_path (n bytes).
int trainer_write_args(const TrainConfig *tc, const cJSON *training_args, char *metrics_path, size_t n, char *err);

// adamw_init for a's n_params with the run's betas, epsilon and weight decay.
int trainer_optim_init(AdamW *opt, size_t n_params, const TrainConfig *tc, char *err);

// One optimizer update on a's summed gradients: scale them by grad_scale (1/N; 1.0f leaves them
// untouched), refuse a non-finite loss, clip to max_grad_norm, step at lr_at(sched, opt->step).
// Fills the pre-clip norm and the learning rate used.
int trainer_update(AdamW *opt, Adapters *a, const LrSchedule *sched, double max_grad_norm, float grad_scale,
                   double loss, double *gnorm, double *lr, char *err);

// Writes the adapter into a directory (a CheckpointWriteFn: pass &AdapterSaver as user), then the
// caller's extra files when save_extra is set.
typedef struct {
    const Adapters *a;
    const char *base_model;
    int (*save_extra)(void *ctx, const char *dir, char *err);  // NULL: none
    void *extra_ctx;
} AdapterSaver;
int trainer_save_adapter(const char *dir, void *user, char *err);

// Copies a checkpoint's adapter weights into a (same configuration: same parameter count; with
// need_value_head, the checkpoint must also hold a value head).
int trainer_load_adapter(const Model *m, Adapters *a, const char *dir, int need_value_head, char *err);

// Sets ts's step, epoch, data cursor and dropout RNG for checkpoint_save and gives it a fresh,
// empty extra object, returned for the caller's own keys.
cJSON *trainer_state_fill(TrainerState *ts, int64_t global_step, double epoch, const DataCursor *cur,
                          uint64_t dropout_rng);

// checkpoint_save into tc->output_dir (keeping tc->save_total_limit), the adapter written by save.
int trainer_checkpoint(const TrainConfig *tc, const AdamW *opt, const TrainerState *ts, const cJSON *training_args,
                       AdapterSaver *save, char *err);

// Records an evaluation loss at step in ts: the last one, and the best (lowest) so far.
void trainer_state_note_eval(TrainerState *ts, int64_t step, double loss);

// Resume, part 1: the checkpoint's adapter into a, then its optimizer.bin and trainer_state.json.
int trainer_resume_load(const Model *m, Adapters *a, const char *dir, int need_value_head, AdamW *opt,
                        TrainerState *ts, char *err);

// Resume, part 2: the loader back to ts's data cursor (over n_items items shuffled with seed), the
// dropout RNG from ts, and the metrics log reopened with lines after resume_step dropped.
int trainer_resume_position(DataLoader *L, const TrainerState *ts, uint64_t seed, int64_t n_items,
                            uint64_t *dropout_rng, MetricsLog *ml, const char *metrics_path, int64_t resume_step,
                            char *err);

#endif
