// shuffle.c — see shuffle.h.
#include "datasets/shuffle.h"

#include "model/common.h"

uint64_t shuffle_rng_init(uint64_t seed, uint64_t stream) {
    // splitmix64 finaliser over seed and stream; never returns 0 (xorshift would stick there).
    uint64_t z = seed + 0x9E3779B97F4A7C15ull * (stream + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return z ? z : 0x9E3779B97F4A7C15ull;
}

uint32_t shuffle_rand_below(uint64_t *rng, uint32_t n) {
    // Reject the top partial block of 2^32 so every residue is equally likely.
    uint32_t limit = (uint32_t)(0x100000000ull - (0x100000000ull % n));
    for (;;) {
        uint32_t x = ftk_rand_u32(rng);
        if (limit == 0 || x < limit) return x % n;   // limit == 0: n divides 2^32
    }
}

void shuffle_ints(int *idx, int n, uint64_t *rng) {
    for (int i = n - 1; i > 0; i--) {
        int j = (int)shuffle_rand_below(rng, (uint32_t)i + 1);
        int t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
}
