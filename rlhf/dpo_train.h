// dpo_train.h — direct preference optimisation of a LoRA (+ soft prompt) policy on preference pairs
// (Rafailov et al. 2023; TRL DPOTrainer). For each pair the policy's SUMMED response log-probs
// π_c, π_r (the tokens the dataset masks as response, EOS included) are compared with the
// reference's ref_c, ref_r through rlhf/dpo_loss.h (sigmoid with label smoothing, or IPO with
// length-averaged log-probs as TRL does).
//
// The reference is the base model (policy adapters disabled) or a frozen SFT adapter (the policy
// then starts as a copy of it). Its log-probs never change during training, so they are computed
// ONCE per pair before training (DpoRefCache, one forward per pair under the reference hooks) and
// read back by item index; tests check that a recomputation after training gives the same bits.
//
// Logged (TRL names): loss, rewards/accuracies, rewards/margins, rewards/chosen, rewards/rejected,
// the implicit rewards β(π - ref).
#ifndef FTK_RLHF_DPO_TRAIN_H
#define FTK_RLHF_DPO_TRAIN_H

#include "rlhf/dpo_loss.h"
#include "rlhf/pref_train.h"

typedef struct {
    float beta;              // default 0.1
    float label_smoothing;   // cDPO ε in [0, 0.5], default 0
    DpoLossType loss_type;   // DPO_SIGMOID (default) or DPO_IPO
    int eval_batch;          // pairs per evaluation forward (0 = the training batch size)
} DpoOptions;

void dpo_options_default(DpoOptions *o);
// "sigmoid" / "ipo" -> 0 and *out; else -1.
int dpo_loss_type_from_name(const char *name, DpoLossType *out);

// Reference log-probs of every pair of a dataset, by item index.
typedef struct {
    int n;                 // pairs
    int length_average;    // 1: per-token means (IPO), 0: sums
    float *chosen;         // (n)
    float *rejected;       // (n)
} DpoRefCache;

// Fills c for every pair of ds under ref (a frozen adapter, or hooks with disabled = 1 for the
// bare base; NULL = base too), batch_pairs pairs per forward. Free with dpo_ref_cache_free.
int dpo_ref_cache_build(const Model *m, const ModelAdapters *ref, const Dataset *ds, int batch_pairs, int length_average,
                        DpoRefCache *c, char *err);
void dpo_ref_cache_free(DpoRefCache *c);

// Sequence log-probs (summed, or averaged with length_average) of the 2P rows of a batch under
// hooks: out (2P). rs: a run state large enough for the batch (inference or training).
int dpo_batch_logps(const Model *m, const ModelAdapters *hooks, RunState *rs, const Batch *bt, int length_average,
                    float *out, char *err);

// One micro-batch: policy forward, DPO loss against ref (read at the batch's item indices), and the
// gradient of the SUM of the per-pair losses accumulated into the policy hooks' buffers. Adds the
// pairs' loss and implicit rewards to *sums. Exposed for the finite-difference test.
int dpo_train_batch(const Model *m, const ModelAdapters *policy, RunState *rs, const Batch *bt, const DpoRefCache *ref,
                    const DpoOptions *o, uint64_t *dropout_rng, PairSums *sums, char *err);

// Evaluation over a dataset with its reference cache (policy hooks frozen).
int dpo_evaluate(const Model *m, const ModelAdapters *policy, const Dataset *ds, const DpoRefCache *ref,
                 const DpoOptions *o, int batch_pairs, PairSums *sums, char *err);

// Trains policy (its LoRA / soft prompt) on train; eval and eval_ref may be NULL. The caches must
// have been built with length_average = (o->loss_type == DPO_IPO).
int dpo_train(const Model *m, Adapters *policy, const Dataset *train, const DpoRefCache *train_ref,
              const Dataset *eval, const DpoRefCache *eval_ref, const TrainConfig *tc, const DpoOptions *o,
              const cJSON *training_args, PairEventFn on_event, void *ctx, PairTrainResult *res, char *err);

#endif
