// weights_bf16.h — frozen base weights stored as bf16 (`--base-dtype bf16`): the layers' linear
// weights (wqkv, wo, w_gate_up / w_up, w_down), the token embedding and the LM head are rounded to
// bf16 (round to nearest even), which halves their memory. Products still run in fp32 through
// cblas_sgemm: the forward and backward expand one linear's weight into an fp32 scratch right
// before its product; the LM head expands blocks of vocabulary rows into per-thread scratch
// (lm_head.c), the embedding expands the rows it gathers. Norms, biases and gpt2's position table
// stay fp32.
//
// Code that reads the float pointers of those linears (generation, merge, export) must refuse a
// bf16 model: model_check_f32_weights() gives the error.
#ifndef FTK_WEIGHTS_BF16_H
#define FTK_WEIGHTS_BF16_H

#include <stddef.h>
#include <stdint.h>

#include "model/model.h"

// fp32 -> bf16, round to nearest even (NaN stays NaN); bf16 -> fp32 is exact.
uint16_t bf16_from_f32(float x);
float bf16_to_f32(uint16_t b);
void bf16_expand(float *dst, const uint16_t *src, size_t n);

// Converts the linear weights of a loaded model to bf16 and frees their fp32 storage (weight_mem
// is rebuilt as one block: the remaining fp32 tensors, the bf16 tensors, the expansion scratch).
// Idempotent.
int model_to_bf16(Model *m, char *err);

// The fp32 weight of a linear: w itself for an fp32 model, else wb (n values) expanded into the
// model's scratch (valid until the next call; one forward/backward at a time per model).
const float *model_linear_f32(const Model *m, const float *w, const uint16_t *wb, size_t n);

// Bytes the weights occupy (fp32 and bf16 tensors; not the expansion scratch).
size_t model_weight_bytes(const Model *m);

// 0 for an fp32 model, else an error saying that `what` needs fp32 weights.
int model_check_f32_weights(const Model *m, const char *what, char *err);

#endif
