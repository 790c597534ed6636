// generate.h — incremental decoding with a KV cache, and sampling (greedy, temperature, top-k,
// top-p, seeded). The hot loop of PPO: no allocation per step; the decode of a batch of
// sequences does one sgemm per projection over the batch.
#ifndef FTK_GENERATE_H
#define FTK_GENERATE_H

#include <stdint.h>
#include "model/transformer.h"

typedef struct KVCache KVCache;

// K (after RoPE) and V of n_seqs sequences of up to max_len (<= cfg.max_seq_len) positions:
// 2 * n_seqs * n_layers * max_len * kv_dim floats, plus everything one step touches (activations of
// max(n_seqs, 128) rows, attention scores max(n_kv_heads * max(128, group), n_seqs * n_heads) *
// max_len floats), so prefill and decode never allocate. Steps run on ftk's pool (parallel.h) and
// give the same bits at any thread count.
int kvcache_create(KVCache **out, const Model *m, int n_seqs, int max_len, char *err);
void kvcache_free(KVCache *kv);
void kvcache_reset(KVCache *kv);          // all sequences back to length 0
int kvcache_len(const KVCache *kv, int seq);

// Appends n_tokens tokens to sequence `seq` (the soft-prompt rows first when the sequence is empty
// and ad has one), batched over the tokens in chunks; writes the next-token logits (V) of the last
// position when logits != NULL. Positions continue from the sequence's length.
int kvcache_prefill(const Model *m, const ModelAdapters *ad, KVCache *kv, int seq, const int *tokens, int n_tokens,
                    float *logits, char *err);
// One decode step for n distinct sequences: appends tokens[i] to sequence seqs[i] and writes its
// next-token logits to logits + i*V. One sgemm per projection for the n rows; each sequence attends
// over its own cache length. No allocation.
int kvcache_decode(const Model *m, const ModelAdapters *ad, KVCache *kv, const int *seqs, const int *tokens, int n,
                   float *logits, char *err);

typedef struct {
    int max_new_tokens;   // default 256
    float temperature;    // 0 = greedy
    int top_k;            // 0 = off
    float top_p;          // 1 = off
    int stop_at_eos;      // default 1 (also stops at BOS, as llama2.c does)
} GenParams;

GenParams gen_params_default(void);

// Samples one id from logits (V) (modified in place). Greedy (temperature 0): argmax, ties to the
// lowest id, rng untouched. Otherwise softmax(logits / temperature), then top-k, then top-p (sorted
// by probability, ties to the lower id: keep tokens up to and including the first whose cumulative
// probability exceeds top_p), renormalised, one ftk_rand_uniform draw.
// sample_token allocates a V-entry workspace when top-k/top-p are on (returns -1 if it cannot);
// sample_token_ws uses the caller's `work` (V entries) and never allocates.
typedef struct {
    float p;
    int id;
} ProbIndex;
int sample_token(float *logits, int V, const GenParams *p, uint64_t *rng);
int sample_token_ws(float *logits, int V, const GenParams *p, uint64_t *rng, ProbIndex *work);

// Generates continuations for n prompts (token ids, BOS already included as wanted). ad may be NULL
// (soft-prompt rows, if any, are prefilled before each prompt). Outputs per prompt: out_tokens[i]
// malloc'ed array of out_lens[i] NEW token ids (EOS included if produced). If out_logp != NULL,
// out_logp[i] (malloc'ed) holds the log-prob of each new token under the sampling distribution
// before temperature (i.e. log_softmax of the raw logits).
// A sequence stops at EOS/BOS (stop_at_eos), after max_new_tokens, or when its next position would
// reach cfg.max_seq_len (n_virtual + prompt length + new tokens <= max_seq_len + 1). Prompts are
// prefilled one by one; every decode step is one batched kvcache_decode over the live sequences.
int generate(const Model *m, const ModelAdapters *ad, const int *const *prompts, const int *prompt_lens,
             int n, const GenParams *p, uint64_t *rng, int **out_tokens, int *out_lens,
             float **out_logp, char *err);

#endif
