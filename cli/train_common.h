// train_common.h — what the training commands (sft, rm, dpo, ppo) share: flag groups with their
// defaults, parsing them into TrainConfig / AdapterConfig, and the human-readable output.
#ifndef FTK_CLI_TRAIN_COMMON_H
#define FTK_CLI_TRAIN_COMMON_H

#include <cjson/cJSON.h>

#include "cli/cli.h"
#include "datasets/dataset.h"
#include "lora/adapter.h"
#include "sft/train.h"

extern const Flag TRAIN_ADAPTER_FLAGS[];   // --peft, --lora-*, --target-modules, --num-virtual-tokens, ...
extern const Flag TRAIN_DATA_FLAGS[];      // --template, --max-seq-length, --packing, ...
extern const Flag TRAIN_OPT_FLAGS[];       // --learning-rate, --batch-size, --max-steps, --seed, ...

// Concatenates {0}-terminated flag groups into out (cap entries incl. the terminator).
void cli_flags_concat(Flag *out, int cap, const Flag *const *groups, int n_groups);

// Reads the three groups into tc and ac (exits 2 on a bad value). heads: ADAPTER_* head flags to set.
void train_parse_common(const Command *cmd, TrainConfig *tc, AdapterConfig *ac, int score_head);
// Refuses an output dir that already holds an adapter (unless overwrite or resuming).
void train_check_output_dir(const char *dir, const char *resume, int overwrite);
DatasetOptions train_dataset_options(const Command *cmd, DatasetKind kind, const Model *m, int n_virtual);
void train_print_trainable(const Adapters *a, const Model *m);
void train_print_dataset(const char *name, const Dataset *ds);
void train_print_sample(const char *label, const Model *m, const ModelAdapters *hooks, const char *prompt, int n);
cJSON *train_args_json(const Command *cmd);   // every flag (given or default) as a JSON object

typedef struct {
    int tty;        // progress line redrawn with \r
    int last_len;
} TrainProgressCtx;
void train_print_event(void *ctx, const TrainEvent *e);

#endif
