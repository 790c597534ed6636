// synthetic.h — a model with random weights of realistic scale, for tests and benchmarks (no files).
#ifndef FTK_SYNTHETIC_H
#define FTK_SYNTHETIC_H

#include <stdint.h>

#include "model/model.h"

// Allocates m's weights for cfg (head_dim 0 = dim / n_heads) and fills them from a seeded RNG:
// linear weights N(0, 1/in), embeddings and the LM head N(0, 4/C), position embeddings N(0, 1/C),
// norm weights N(1, 0.1^2), biases N(0, 0.1^2). No tokenizer (m->tok == NULL).
int model_init_synthetic(Model *m, const ModelConfig *cfg, uint64_t seed, char *err);

#endif
