// train.h — the SFT loop: batches -> forward -> loss on response tokens -> backward (adapters
// only) -> clip -> AdamW, with evaluation, logging, checkpoints and exact resume (DESIGN §5).
//
// Loss: the mean of -log p(target) over every target token of the optimizer step (all its
// gradient-accumulation micro-batches together), i.e. a token-level mean as TRL computes it with
// num_items_in_batch; perplexity = exp(loss).
#ifndef FTK_SFT_TRAIN_H
#define FTK_SFT_TRAIN_H

#include <stdint.h>
#include <cjson/cJSON.h>

#include "datasets/batch.h"
#include "datasets/dataset.h"
#include "lora/adapter.h"
#include "sft/schedule.h"

typedef struct {
    double learning_rate;
    LrScheduleType lr_scheduler;
    int warmup_steps;
    int64_t max_steps;          // > 0 overrides num_train_epochs
    double num_train_epochs;
    int batch_size;             // sequences per micro-batch
    int grad_accum;             // micro-batches per optimizer step
    double max_grad_norm;       // 0 = no clipping
    double weight_decay, adam_beta1, adam_beta2, adam_epsilon;
    uint64_t seed;              // data order and dropout
    int pack_len;               // > 0: packing into rows of this length
    int logging_steps, eval_steps, save_steps, save_total_limit;   // 0 = off (eval/save also at the end)
    const char *output_dir;
    const char *resume_from;    // checkpoint dir, or NULL
    const char *base_model;     // written into adapter configs
    int gradient_checkpointing; // keep only layer inputs; backward recomputes (same gradients)
} TrainConfig;

void train_config_default(TrainConfig *c);

// What the loop reports; the CLI decides how to show it (nothing in sft/ prints).
typedef struct {
    int64_t step, max_steps;
    double epoch, loss, lr, grad_norm, tokens_per_sec, eta_s;
    int is_eval;                // eval line: loss = eval loss
} TrainEvent;
typedef void (*TrainEventFn)(void *ctx, const TrainEvent *e);

typedef struct {
    int64_t steps_done;
    double first_loss, last_loss;     // training loss of the first and the last logged step
    double eval_loss_before, eval_loss_after;   // NAN without an eval set
    double seconds;
    long tokens_seen;
} TrainResult;

// Trains a's trainable views on train (eval may be NULL). training_args (may be NULL) is stored
// as training_args.json in the output dir and in every checkpoint.
int sft_train(const Model *m, Adapters *a, const Dataset *train, const Dataset *eval, const TrainConfig *tc,
              const cJSON *training_args, TrainEventFn on_event, void *ctx, TrainResult *res, char *err);

// Mean loss (token-level) of the model + adapters (hooks may be NULL) over every target of ds.
int sft_evaluate(const Model *m, const ModelAdapters *hooks, const Dataset *ds, int batch_size, double *loss,
                 long *n_tokens, char *err);

#endif
