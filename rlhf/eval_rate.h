// eval_rate.h — "how often does the policy say WORD": sample continuations of a fixed prompt set and
// count those that match \bWORD\b case-insensitively (the tinystories-pref "dog rate" measurement,
// PROVENANCE: 100 prompts x 10 samples, T 1.0, top-p 0.9, at most 128 new tokens; base rate 7.0%).
// Used by `ftk dpo` and `ftk ppo` (--eval-rate-word) to show that preference training moved the policy.
//
// Word boundaries are ASCII (Python's \b on ASCII text): a word character is [A-Za-z0-9_]. Only the
// new tokens are decoded and searched (the prompt is not), as the PROVENANCE measurement does.
#ifndef FTK_RLHF_EVAL_RATE_H
#define FTK_RLHF_EVAL_RATE_H

#include <stdint.h>

#include "datasets/dataset.h"
#include "model/generate.h"

typedef struct {
    char word[64];            // the word to count (non-empty, no spaces)
    int samples_per_prompt;   // default 10
    GenParams gen;            // default: temperature 1.0, top-p 0.9, top-k off, 128 new tokens, stop at EOS
    uint64_t seed;            // sampling RNG seed, default 8
    int chunk;                // sequences generated per generate() call (KV cache size), default 100
} RateOptions;

void rate_options_default(RateOptions *o);

typedef struct {
    long hits, total;         // samples matching / samples drawn
    double rate;              // hits / total
    double ci_lo, ci_hi;      // Wilson 95% interval
    double mean_new_tokens;   // average continuation length
    double seconds;
} RateResult;

// 1 when text contains word (case-insensitive) with no word character right before or after it.
int text_has_word(const char *text, const char *word);
// Wilson score interval for k successes in n trials at z (1.96 for 95%).
void wilson_interval(long k, long n, double z, double *lo, double *hi);

// Samples samples_per_prompt continuations of every sequence of prompts (a DS_PROMPT Dataset: BOS +
// prompt tokens) under model + hooks (hooks may be NULL or disabled = base model) and counts matches.
// samples_jsonl, when non-NULL, receives one {"prompt_index", "sample", "text", "match"} line per
// sample (written atomically). Deterministic for a given seed.
int word_rate_eval(const Model *m, const ModelAdapters *hooks, const Dataset *prompts, const RateOptions *o,
                   const char *samples_jsonl, RateResult *res, char *err);

#endif
