// reward_model.h — the reward model at run time: base + LoRA (+ soft prompt) + `score` head (1, C)
// read at the LAST REAL token of each right-padded sequence (DESIGN §5).
//
//   r[b] = final_hidden[b*T + n_virtual + len[b] - 1] · score_w        (no bias, as HF's score)
//
// Forward/backward glue for training (rm_train.h), evaluation over a preference Dataset (pairwise
// accuracy, margin, loss), scoring arbitrary token sequences (ftk score, PPO), and loading a saved
// RM directory (a PEFT dir with "score" in modules_to_save, written by lora/peft.h) with checks that
// it was made for this base model and tokenizer.
//
// Typical PPO use (the base Model is shared with the policy; the RM is its own frozen adapter):
//   RewardModel rm;  rm_load(&rm, &model, "rm-dir", err);
//   rm_score_sequences(&model, &rm.hooks, rm.score_w, seqs, lens, n, scores, err);
//   rm_free(&rm);
#ifndef FTK_RLHF_REWARD_MODEL_H
#define FTK_RLHF_REWARD_MODEL_H

#include <stdint.h>

#include "datasets/dataset.h"
#include "lora/adapter.h"
#include "model/transformer.h"

// A loaded, frozen reward model.
typedef struct {
    Adapters adapters;     // LoRA / soft prompt + score head (owned)
    ModelAdapters hooks;   // frozen hooks into adapters (no gradients)
    const float *score_w;  // (1, C) = adapters.score
    int append_eos;        // 1: it was trained on sequences ending in EOS (ftk rm's default), so score
                           // BOS + prompt + response + EOS; from reward_model.json, 1 when absent
} RewardModel;

// Loads an RM directory (peft_load) for model m and checks it: it must hold a score head, its
// shapes must fit m, and when the directory has ftk's reward_model.json (written by rm_save_info)
// the vocabulary size and tokenizer fingerprint must match m's. Errors name the directory.
int rm_load(RewardModel *rm, const Model *m, const char *dir, char *err);
void rm_free(RewardModel *rm);

// Writes <dir>/reward_model.json: {"architecture", "hidden_size", "num_hidden_layers", "vocab_size",
// "tokenizer_fingerprint", "append_eos", "base_model"} so rm_load can refuse a reward model made for
// another base or tokenizer, and scorers know whether to end sequences with EOS.
int rm_save_info(const Model *m, const char *dir, const char *base_model, int append_eos, char *err);
// FNV-1a 64 over the vocabulary pieces (and BOS/EOS ids) of m's tokenizer, as 16 hex digits; "" when
// the model has no tokenizer.
void rm_tokenizer_fingerprint(const Model *m, char out[17]);

// Scores n token sequences (seqs[i] of lens[i] >= 1 tokens, BOS included as the caller wants; the
// reward is read at the last token given, so append EOS when rm.append_eos says the RM was trained so):
// scores[i] = the reward of sequence i. Runs batched forwards (right-padded, in chunks of up to 16
// sequences, with a run state allocated for the call). hooks may be NULL (bare base) but score_w
// may not. Fails when a sequence is empty or longer than the model's context (with the virtual tokens).
int rm_score_sequences(const Model *m, const ModelAdapters *hooks, const float *score_w, const int *const *seqs,
                       const int *lens, int n, float *scores, char *err);

// One batch forward: tokens (B, T) right-padded, lengths[b] real tokens. Fills rows[b] (flat row of
// the last real token in the final hidden, virtual tokens counted) and scores[b]. rs must have been
// created for at least (B, n_virtual + T); training=1 forwards pass dropout_rng (else NULL).
int rm_forward_batch(const Model *m, const ModelAdapters *hooks, RunState *rs, const float *score_w,
                     const int *tokens, const int *lengths, int B, int T, uint64_t *dropout_rng, int *rows,
                     float *scores, char *err);

// Backward of rm_forward_batch from dscores[b] = dL/dr[b]: dscore_w += dscores^T h_last (may be NULL
// for a frozen head), then d_final_hidden[rows[b]] += dscores[b] score_w and model_backward (adapter
// gradients accumulate into hooks' dA/dB/dprompt). rs must be a training run state.
int rm_backward_batch(const Model *m, const ModelAdapters *hooks, RunState *rs, const float *score_w,
                      float *dscore_w, const int *rows, const float *dscores, int B, char *err);

typedef struct {
    long n_pairs;
    double accuracy;       // fraction with r_chosen > r_rejected (strict)
    double margin_mean;    // mean r_chosen - r_rejected
    double loss;           // mean -log σ(r_c - r_r)
    double chosen_mean, rejected_mean;
} RmEvalStats;

// Pairwise evaluation of a preference dataset (pairs in file order, batch_pairs pairs per forward).
// chosen_out / rejected_out (ds->n each, may be NULL) receive every pair's rewards.
int rm_evaluate(const Model *m, const ModelAdapters *hooks, const float *score_w, const Dataset *ds, int batch_pairs,
                RmEvalStats *st, float *chosen_out, float *rejected_out, char *err);

#endif
