// ppo_train.h — PPO for language models (RLHF) on a LoRA policy (DESIGN §5, FORMATS §3.2; TRL
// v0.11 PPOTrainer with a shared trunk + value head, defaults of TRL v0.12+). ONE frozen base model
// serves every role, never copied:
//   policy     base + trainable adapter (LoRA and/or soft prompt) + value head v_head.summary (1, C)+(1)
//   reference  the same base with the adapter disabled (ModelAdapters.disabled = 1), or base + a
//              frozen SFT adapter
//   reward     a PpoScoreFn: a reward model (rlhf/reward_model.h, ppo_score_rm) or a rule
//              (rlhf/reward_rule.h, ppo_score_rule)
//
// One PPO step (rollout batch of P = batch_size * grad_accum * num_mini_batches prompts):
//   1. generate() P responses with the policy (KV cache; temperature / top-k / top-p); responses are
//      cut to max_new_tokens and right-padded to R columns (response_length, or the longest)
//   2. over prompt+response: policy logp, entropy and values (one forward), reference logp (one
//      forward with the reference hooks), a score per response (the callback)
//   3. kl_t = logp_t - ref_t; r_t = -β kl_t, + score at the last response token; GAE (γ, λ);
//      advantages whitened over the rollout's response tokens (ppo_math.h, masked.h)
//   4. ppo_epochs passes over the rollout in a fresh random order, each split into num_mini_batches
//      minibatches; a minibatch is one AdamW update over grad_accum micro-batches of batch_size
//      sequences: loss = L_clip + vf_coef L_value, both masked means over the minibatch's response
//      tokens (ppo_loss.h); then global-norm clipping and AdamW
//   5. adaptive β (target_kl > 0: kl_ctl_update with the rollout's sequence-mean KL), metrics line
//      in <output_dir>/metrics.jsonl, checkpoint every save_steps PPO steps
//
// Positions: response token t of a sequence with P prompt tokens is predicted by the final hidden
// state at position nv + P + t - 1; its logp, entropy AND value V_t are read from that row (TRL
// v0.11's values[:, :-1] convention). logp is of the sampling distribution softmax(logits / temperature)
// (TRL v0.12+), so the ratio is taken under the distribution the tokens were drawn from (top-k/top-p
// truncation aside, which PPO implementations ignore too).
//
// Checkpoints (sft/checkpoint.h): checkpoint-N with N = optimizer updates done (the global_step the
// checkpoint module records; ppo_epochs * num_mini_batches per PPO step); the PPO step, the sampling
// and minibatch-order RNGs and β are in trainer_state.json's extras, the prompt cursor in its data
// cursor. A resumed run reproduces the straight run bit for bit.
#ifndef FTK_RLHF_PPO_TRAIN_H
#define FTK_RLHF_PPO_TRAIN_H

#include <stdint.h>
#include <cjson/cJSON.h>

#include "datasets/dataset.h"
#include "lora/adapter.h"
#include "model/generate.h"
#include "rlhf/kl.h"
#include "rlhf/reward_rule.h"
#include "sft/train.h"

// ------------------------------------------------------------------ reward callbacks

typedef struct {
    const int *prompt;     // BOS + prompt tokens, as fed to generate()
    int prompt_len;
    const int *response;   // the sampled tokens (a final EOS/BOS included when the sequence stopped)
    int response_len;
} PpoSample;

// Writes scores[i] for samples[i], i < n.
typedef int (*PpoScoreFn)(void *ctx, const PpoSample *samples, int n, float *scores, char *err);

// ctx: PpoRuleScorer. Scores the decoded continuation with the rule.
typedef struct {
    RewardRule rule;
    const struct Tokenizer *tok;
} PpoRuleScorer;
int ppo_score_rule(void *ctx, const PpoSample *samples, int n, float *scores, char *err);

// ctx: PpoRmScorer. rm_score_sequences on prompt + response. With end_with_eos the sequence scored
// ends in the RM model's EOS (a final stop token of the response is replaced by it, or it is
// appended), which is how the RM saw its training pairs (preference data gets an EOS after each
// side). When rm_model is another model than the policy's, the text is decoded with the policy's
// tokenizer and re-encoded (BOS as the RM tokenizer adds it). A sequence longer than the RM's
// context loses prompt tokens after its first.
typedef struct {
    const Model *policy_model;
    const Model *rm_model;          // == policy_model when the RM adapter sits on the same base
    const ModelAdapters *hooks;     // the RM's frozen adapter (may be NULL)
    const float *score_w;           // (1, C) score head
    int end_with_eos;
} PpoRmScorer;
int ppo_score_rm(void *ctx, const PpoSample *samples, int n, float *scores, char *err);

// ------------------------------------------------------------------ configuration

typedef struct {
    TrainConfig train;          // optimizer, schedule, batch_size (micro-batch), grad_accum, max_steps
                                // (PPO steps; <= 0: num_train_epochs passes over the prompts), seed,
                                // logging/save steps, output_dir, resume_from, base_model
    GenParams gen;              // rollout sampling (max_new_tokens, temperature, top_k, top_p, stop_at_eos)
    int response_length;        // rollout width R; 0 = the longest response of each rollout
    int num_mini_batches;       // TRL 1 (v0.12+)
    int ppo_epochs;             // TRL 4
    float gamma, lam;           // TRL 1.0, 0.95
    float cliprange;            // TRL 0.2
    float cliprange_value;      // TRL 0.2 (<= 0: unclipped value loss)
    float vf_coef;              // TRL 0.1
    double kl_coef;             // initial β, TRL v0.12+ 0.05
    double target_kl;           // > 0: adaptive β (Ziegler et al.), per-sequence KL target
    double kl_horizon;          // adaptive horizon in samples, TRL 10000
    KlEstimator kl_estimator;   // KL_K1 (TRL "kl")
    float score_clip;           // clip scores to ±score_clip (0 = off)
    float missing_eos_penalty;  // subtracted from the score of a response that did not stop (0 = off)
} PpoConfig;

void ppo_config_default(PpoConfig *c);

// ------------------------------------------------------------------ a rollout

typedef struct {
    int B, R;              // sequences, response columns
    int P_max;             // prompt capacity per sequence
    int *prompt_ids;       // (B, P_max) BOS + prompt tokens
    int *prompt_lens;      // (B)
    int *resp;             // (B, R) response ids, 0 past resp_lens
    int *resp_lens;        // (B) 1..R
    int *stopped;          // (B) 1 when the response ends with EOS/BOS
    uint8_t *mask;         // (B, R) t < resp_lens[b]
    float *logp, *ref_logp, *values, *entropy;   // (B, R) from the forwards (0 on padding)
    float *kl, *rewards, *advantages, *returns;  // (B, R)
    float *scores;         // (B) from the reward callback (before clipping / penalties)
} PpoRollout;

int ppo_rollout_alloc(PpoRollout *r, int B, int P_max, int R, char *err);
void ppo_rollout_free(PpoRollout *r);

// The run state (training = 1) and the micro-batch buffers of the forwards below, sized once for
// batch_size sequences of up to P_max prompt + R response tokens (+ n_virtual_max soft-prompt rows:
// the largest of the hooks that will be used with it).
typedef struct PpoWorkspace PpoWorkspace;
// hooks: the trained adapters the run state is planned for (NULL: every activation kept);
// rs_flags: runstate_create_train's.
int ppo_workspace_create(PpoWorkspace **w, const Model *m, const ModelAdapters *hooks, int rs_flags,
                         int n_virtual_max, int batch_size, int P_max, int R, char *err);
void ppo_workspace_free(PpoWorkspace *w);

// Forwards over the rollout's sequences in chunks of the workspace's batch size (no dropout, no
// gradients): writes logp (and entropy when non-NULL) of every response token under `hooks`, and
// values when value_w != NULL (the policy's value head; value_b may be NULL). Padding gets 0.
int ppo_forward_rollout(const Model *m, const ModelAdapters *hooks, PpoWorkspace *w, const PpoRollout *ro,
                        float temperature, const float *value_w, const float *value_b, float *logp, float *entropy,
                        float *values, char *err);

// Step 3: kl, rewards (β, score_clip, missing_eos_penalty), GAE, returns and whitened advantages from
// logp, ref_logp, values and scores.
int ppo_compute_advantages(PpoRollout *ro, const PpoConfig *pc, double beta, char *err);

typedef struct {
    double policy_loss, value_loss, clip_frac, value_clip_frac, approx_kl, ratio_mean, entropy;
    long n_tokens;
} PpoMicroStats;

// Forward + backward of micro-batch seqs[0..n) of the rollout (indices into it): accumulates into
// a->grads the gradient of (L_clip + vf_coef L_value) with both means divided by `norm` (the valid
// tokens of the whole minibatch), and adds the stats, each already divided by norm (so a minibatch's
// micro-batches sum to its means). dropout_rng may be NULL. *loss += this micro-batch's share.
int ppo_micro_batch(const Model *m, Adapters *a, const ModelAdapters *hooks, PpoWorkspace *w, const PpoRollout *ro,
                    const int *seqs, int n, double norm, const PpoConfig *pc, uint64_t *dropout_rng, double *loss,
                    PpoMicroStats *st, char *err);

// ------------------------------------------------------------------ the loop

typedef struct {
    int64_t step, max_steps;    // PPO steps
    double epoch;               // passes over the prompt set
    double score_mean, score_std;
    double kl;                  // mean over sequences of Σ_t kl_t (TRL objective/kl)
    double kl_coef;             // β used for this rollout
    double non_score_reward;    // mean over sequences of Σ_t -β kl_t
    double rlhf_reward;         // mean score (after clip / penalty) + non_score_reward
    double entropy;             // mean per-token entropy of the policy at the rollout
    double response_length;     // mean response tokens
    double stop_frac;           // fraction of responses that ended with EOS/BOS
    double policy_loss, value_loss, clip_frac, value_clip_frac, approx_kl, ratio_mean;  // means over updates
    double grad_norm;           // mean pre-clip norm over updates
    double lr;                  // at the step's last update
    double tokens_per_sec;      // response tokens / step seconds
    double gen_seconds, step_seconds;
} PpoStepStats;

typedef void (*PpoStepFn)(void *ctx, const PpoStepStats *s);

typedef struct {
    int64_t steps_done;
    double first_score, last_score;   // mean score of the first and last step of this run
    double seconds;
    long response_tokens;
} PpoResult;

// Trains a (LoRA/prompt + value head; cfg.value_head must be 1) against score_fn on the prompts
// (a DS_PROMPT dataset). ref_hooks = NULL: the reference is a's hooks with disabled = 1. The final
// adapter (value_head.safetensors included) is saved in pc->train.output_dir.
int ppo_train(const Model *m, Adapters *a, const ModelAdapters *ref_hooks, const Dataset *prompts, const PpoConfig *pc,
              PpoScoreFn score_fn, void *score_ctx, const cJSON *training_args, PpoStepFn on_step, void *ctx,
              PpoResult *res, char *err);

#endif
