// rlhf_common.h — what the preference commands (rm, dpo, and ppo for the rate measurement) share
// beyond cli/train_common.h: preference data flags and loading, the pairwise progress lines, and
// the "word rate in samples" flags (rlhf/eval_rate.h).
#ifndef FTK_CLI_RLHF_COMMON_H
#define FTK_CLI_RLHF_COMMON_H

#include "cli/cli.h"
#include "datasets/dataset.h"
#include "rlhf/eval_rate.h"
#include "rlhf/pref_train.h"

extern const Flag PREF_DATA_FLAGS[];   // --train-file, --eval-file, --validation-split, --long-prompt
extern const Flag EVAL_RATE_FLAGS[];   // --eval-rate-word, --eval-rate-file, --eval-rate-samples, ...

// Loads --train-file (+ --eval-file, or a --validation-split of the train file) as preference
// pairs with train_dataset_options and --long-prompt; prints their summaries. Exits 1 on errors.
void pref_load_datasets(const Command *cmd, const Model *m, int n_virtual, uint64_t seed, Dataset *train,
                        Dataset *eval, int *have_eval);

typedef struct {
    int tty, last_len;
    const char *acc_label;   // "acc" (RM) or "reward acc" (DPO)
} PairProgressCtx;
void pref_print_event(void *ctx, const PairEvent *e);

// Sets the other --long-prompt values into o (skip, truncate, error).
void pref_long_prompt_option(const Command *cmd, DatasetOptions *o);

// 1 when --eval-rate-word was given.
int eval_rate_requested(const Command *cmd);
// Measures the rate under hooks (NULL = base model) as the flags say and prints
// "<label>: 'dog' in 70/1000 samples = 7.0% (95% CI 5.6-8.8%)" to stderr. Exits 1 on errors.
void eval_rate_run(const Command *cmd, const Model *m, const ModelAdapters *hooks, const char *label,
                   const char *samples_path, RateResult *out);

#endif
