// shuffle.h — deterministic permutations from a seed (common.h's xorshift64* RNG).
#ifndef FTK_SHUFFLE_H
#define FTK_SHUFFLE_H

#include <stdint.h>

// A well-mixed RNG state for (seed, stream): seeds 1 and 2 give unrelated sequences, and
// different streams (e.g. the validation split and the epoch shuffle) do not share one.
uint64_t shuffle_rng_init(uint64_t seed, uint64_t stream);

// Uniform integer in [0, n) (n > 0), without modulo bias.
uint32_t shuffle_rand_below(uint64_t *rng, uint32_t n);

// Fisher-Yates over idx[0..n); the RNG advances.
void shuffle_ints(int *idx, int n, uint64_t *rng);

#endif
