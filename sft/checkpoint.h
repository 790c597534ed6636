// checkpoint.h — <output_dir>/checkpoint-N/ as an HF Trainer lays it out, plus our exact resume state:
//   optimizer.bin        AdamW moments and step (format below), bit-exact
//   trainer_state.json   TrainerState: step, epoch, data cursor, RNG states, eval losses, extras
//   training_args.json   a copy of the run's flags
//   adapter files        written by the caller's callback (lora/), into the same directory
// A checkpoint is built in checkpoint-N.tmp/ and renamed to checkpoint-N/ only when complete.
// Resuming: adamw_init with the adapter's n and the run's hyperparameters, load the adapter from
// the dir (lora/), checkpoint_load, set the data cursor and dropout RNG from the TrainerState,
// metrics_open(..., ts.global_step), then continue with lr_at(&sched, opt.step).
//
// optimizer.bin, little-endian:
//   0  char[8] "FTKADAMW"   8  u32 version (1)   12  u32 crc32 (zlib) of the m and v bytes
//   16 u64 n                24 i64 step          32  f32 m[n], then f32 v[n]
#ifndef FTK_SFT_CHECKPOINT_H
#define FTK_SFT_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>
#include <cjson/cJSON.h>

#include "sft/optim.h"

typedef struct {
    int64_t global_step;     // optimizer updates done
    double epoch;            // fractional epoch, as HF logs it
    int64_t data_epoch;      // data cursor: epoch index,
    int64_t data_position;   //   index of the next example in that epoch's order,
    uint64_t data_rng;       //   shuffle RNG state
    uint64_t dropout_rng;    // dropout RNG state
    double best_eval_loss;   // NAN until the first eval
    int64_t best_eval_step;  // -1 until the first eval
    double last_eval_loss;   // NAN until the first eval
    cJSON *extra;            // caller's own keys (an object or NULL), stored at the top level of the
                             // JSON; owned by the TrainerState, freed by trainer_state_free
} TrainerState;

void trainer_state_init(TrainerState *ts);
void trainer_state_free(TrainerState *ts);

// Writes the caller's adapter files into dir (the checkpoint being built).
typedef int (*CheckpointWriteFn)(const char *dir, void *user, char *err);

// Saves <output_dir>/checkpoint-<ts->global_step>/ (replacing one of that name). write_adapter may
// be NULL, training_args may be NULL. save_total_limit > 0 then deletes the oldest checkpoint-*
// dirs until that many remain, never the one just saved. opt->step must equal ts->global_step.
int checkpoint_save(const char *output_dir, const AdamW *opt, const TrainerState *ts, const cJSON *training_args,
                    CheckpointWriteFn write_adapter, void *user, int save_total_limit, char *err);

// Loads dir's optimizer.bin into opt (already adamw_init'ed with the adapter's parameter count;
// hyperparameters untouched) and trainer_state.json into ts (initialised by trainer_state_init;
// its old extras are freed). Both files are validated before either is changed: on error opt and
// ts are as they were.
int checkpoint_load(const char *dir, AdamW *opt, TrainerState *ts, char *err);

// The checkpoint-N with the highest N in output_dir: path into out (size n) and *step = N;
// *step = -1 and out = "" when there is none (or output_dir does not exist).
int checkpoint_latest(const char *output_dir, char *out, size_t n, int64_t *step, char *err);

// The single files, for tests and for other trainers.
int optimizer_save(const char *path, const AdamW *opt, char *err);
int optimizer_load(const char *path, AdamW *opt, char *err);
int trainer_state_save(const char *path, const TrainerState *ts, char *err);
int trainer_state_load(const char *path, TrainerState *ts, char *err);

#endif
