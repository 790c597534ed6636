// generate.h — incremental decoding with a KV cache, and sampling (greedy, temperature, top-k,
// top-p, seeded). The hot loop of PPO: no allocation per step; the decode of a batch of
// sequences does one sgemm per projection over the batch.
#ifndef FTK_GENERATE_H
#define FTK_GENERATE_H

#include <stdint.h>
#include "model/transformer.h"

typedef struct KVCache KVCache;

int kvcache_create(KVCache **out, const Model *m, int n_seqs, int max_len, char *err);
void kvcache_free(KVCache *kv);
void kvcache_reset(KVCache *kv);          // all sequences back to length 0
int kvcache_len(const KVCache *kv, int seq);

typedef struct {
    int max_new_tokens;   // default 256
    float temperature;    // 0 = greedy
    int top_k;            // 0 = off
    float top_p;          // 1 = off
    int stop_at_eos;      // default 1 (also stops at BOS, as llama2.c does)
} GenParams;

GenParams gen_params_default(void);

// Samples one id from logits (V) (modified in place); rng advances.
int sample_token(float *logits, int V, const GenParams *p, uint64_t *rng);

// Generates continuations for n prompts (token ids, BOS already included as wanted). ad may be NULL
// (soft-prompt rows, if any, are prefilled before each prompt). Outputs per prompt: out_tokens[i]
// malloc'ed array of out_lens[i] NEW token ids (EOS included if produced). If out_logp != NULL,
// out_logp[i] (malloc'ed) holds the log-prob of each new token under the sampling distribution
// before temperature (i.e. log_softmax of the raw logits).
int generate(const Model *m, const ModelAdapters *ad, const int *const *prompts, const int *prompt_lens,
             int n, const GenParams *p, uint64_t *rng, int **out_tokens, int *out_lens,
             float **out_logp, char *err);

#endif
