// pref_train.h — the optimisation loop shared by the pairwise trainers (reward model, DPO): the SFT
// loop's structure (sft/train.h) over batches of preference PAIRS, with the per-pair objective
// supplied by the caller.
//
// One optimizer step = grad_accum micro-batches of batch_size pairs (2*batch_size rows: chosen rows
// [0, P), rejected rows [P, 2P)). The objective's train_batch adds to the adapters' grads the
// gradient of the SUM of its per-pair losses; the loop divides by the step's pair count, so the step
// minimises the mean over its pairs (TRL's batch mean), clips, and takes an AdamW step. Logging, eval
// and checkpoints (with exact resume: optimizer, data cursor, dropout RNG, log accumulators) are as
// in sft_train. Nothing here prints.
#ifndef FTK_RLHF_PREF_TRAIN_H
#define FTK_RLHF_PREF_TRAIN_H

#include <stdint.h>
#include <cjson/cJSON.h>

#include "datasets/batch.h"
#include "datasets/dataset.h"
#include "lora/adapter.h"
#include "sft/train.h"

// Per-pair quantities summed over some pairs.
typedef struct {
    double loss;       // per-pair losses
    double correct;    // pairs ranked right (strictly)
    double margin;     // chosen - rejected (rewards, or DPO implicit rewards)
    double chosen, rejected;
    long pairs;
} PairSums;

void pair_sums_add(PairSums *acc, const PairSums *x);

typedef struct {
    // Forward + backward of one micro-batch (rs: a training run state sized by the loop for
    // 2*batch_size rows and n_virtual + the longest sequence). Accumulates d(sum of per-pair losses)
    // into the adapters' grads, adds the batch's pairs to *sums.
    int (*train_batch)(void *ctx, RunState *rs, const Batch *bt, uint64_t *dropout_rng, PairSums *sums, char *err);
    // Evaluation over the whole eval set (may be NULL when there is none).
    int (*evaluate)(void *ctx, PairSums *sums, char *err);
    // Writes extra files next to the adapter (output dir and checkpoints); may be NULL.
    int (*save_extra)(void *ctx, const char *dir, char *err);
    void *ctx;
    // metrics.jsonl keys for accuracy, margin, chosen, rejected (eval lines prefix "eval_").
    const char *key_accuracy, *key_margin, *key_chosen, *key_rejected;
} PairObjective;

// What the loop reports (cli/ prints it).
typedef struct {
    int64_t step, max_steps;
    double epoch, loss, accuracy, margin, chosen, rejected;
    double lr, grad_norm, pairs_per_sec, eta_s;
    int is_eval;
} PairEvent;
typedef void (*PairEventFn)(void *ctx, const PairEvent *e);

typedef struct {
    int64_t steps_done;
    double first_loss, last_loss;      // training loss of the first and last logged steps
    PairSums eval_before, eval_after;  // pairs == 0 without an eval set (or on resume for before)
    double seconds;
    long pairs_seen;
} PairTrainResult;

// tc->batch_size counts PAIRS per micro-batch; tc->pack_len must be 0.
int pref_train(const Model *m, Adapters *a, const Dataset *train, int has_eval, const TrainConfig *tc,
               const cJSON *training_args, const PairObjective *obj, PairEventFn on_event, void *ctx,
               PairTrainResult *res, char *err);

// Longest sequence of a dataset (0 for NULL).
int pref_dataset_max_len(const Dataset *ds);

#endif
