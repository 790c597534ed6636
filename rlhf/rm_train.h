// rm_train.h — reward-model training (TRL RewardTrainer): base frozen, LoRA (+ soft prompt) and the
// `score` head trained on preference pairs with the pairwise loss of rlhf/reward_loss.h
//   L = mean over pairs of -log σ(r_c - r_r - margin) + center_coef * (r_c + r_r)^2
// where r is the score head on the final hidden state of each sequence's LAST REAL token
// (rlhf/reward_model.h). Evaluation: pairwise accuracy (r_c > r_r), mean margin, loss. The output
// dir is a PEFT adapter with modules_to_save ["score"] plus reward_model.json (rm_save_info).
#ifndef FTK_RLHF_RM_TRAIN_H
#define FTK_RLHF_RM_TRAIN_H

#include "rlhf/pref_train.h"

typedef struct {
    float margin;        // constant margin subtracted from r_c - r_r (TRL's "margin" column), default 0
    float center_coef;   // --center-rewards-coefficient, default 0 (TRL suggests 1e-2)
    int eval_batch;      // pairs per evaluation forward (default: the training batch size)
    int append_eos;      // the datasets end sequences with EOS (recorded in reward_model.json), default 1
} RmOptions;

void rm_options_default(RmOptions *o);

// a must have a score head (AdapterConfig.score_head = 1). eval may be NULL.
int rm_train(const Model *m, Adapters *a, const Dataset *train, const Dataset *eval, const TrainConfig *tc,
             const RmOptions *ro, const cJSON *training_args, PairEventFn on_event, void *ctx, PairTrainResult *res,
             char *err);

// The mean reward-model loss (with margin and centering as ro says) of one micro-batch, and the
// gradient of the SUM of its per-pair losses accumulated into a's grads (LoRA, prompt, score).
// Exposed for the finite-difference test. rs: a training run state large enough for bt.
int rm_train_batch(const Model *m, Adapters *a, const ModelAdapters *hooks, RunState *rs, const Batch *bt,
                   const RmOptions *ro, uint64_t *dropout_rng, PairSums *sums, char *err);

#endif
