// bench_decode.h — decoding speed with the KV cache for `ftk bench`, and the memory-bandwidth bound
// it is judged against: every decode step reads all fp32 weights once (for all `batch` rows) and
// each sequence's K and V cache, so tokens/s <= batch * bandwidth / (weight bytes + cache bytes).
#ifndef FTK_SFT_BENCH_DECODE_H
#define FTK_SFT_BENCH_DECODE_H

#include <stddef.h>
#include <stdint.h>

#include "model/transformer.h"

typedef struct {
    double tok_s;            // batch / median step time
    double ms_step_median;
    double ms_step_min;
    double prefill_s;        // all prompts together
    double decode_s;         // all decode steps together
    double kv_bytes_step;    // bytes of K and V cache one decode step reads, all sequences, mean over the steps
    int steps;
} BenchDecode;

// `batch` sequences, each prefilled with prompt_len random tokens (seeded), then n_new greedy decode
// steps, each one kvcache_decode over all sequences plus an argmax per row; every step is timed.
// ad may be NULL (base model). after_prefill (may be NULL) is called between the prefill and the
// first decode step, e.g. to reset a profiler.
int bench_decode(const Model *m, const ModelAdapters *ad, int batch, int prompt_len, int n_new, uint64_t seed,
                 void (*after_prefill)(void *ctx), void *ctx, BenchDecode *out, char *err);

// Bytes of fp32 weights one decode step reads: every layer's linears, biases and norms, the final
// norm, the LM head, and the LoRA A and B of ad (the embedding rows of the new tokens and the KV
// cache are counted apart, in BenchDecode.kv_bytes_step).
size_t bench_decode_weight_bytes(const Model *m, const ModelAdapters *ad);

// The bandwidth bound in tokens/s: batch rows per step, a step reading weight_bytes + kv_bytes_step
// at bytes_per_s (the streaming-read bandwidth measured at the decode's thread count).
double bench_decode_bound_tok_s(int batch, size_t weight_bytes, double kv_bytes_step, double bytes_per_s);

#endif
