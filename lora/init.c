// init.c — initial values of the trainable tensors, as PEFT / torch would draw them, from one seeded
// ftk_rand stream consumed in flat-buffer order (adapter.h), so a seed fixes every value.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lora/adapter.h"
#include "model/common.h"
#include "model/tokenizer.h"

// U(-bound, bound)
static void fill_uniform(float *x, size_t n, float bound, uint64_t *rng) {
    for (size_t i = 0; i < n; i++) x[i] = bound * (2.0f * ftk_rand_uniform(rng) - 1.0f);
}

static void fill_normal(float *x, size_t n, float std, uint64_t *rng) {
    for (size_t i = 0; i < n; i++) x[i] = std * ftk_rand_normal(rng);
}

// Rows of the token embedding table for `ids`, cycled / truncated to n_virtual rows (PEFT TEXT init).
static int prompt_from_ids(float *prompt, int n_virtual, const int *ids, int n_ids, const Model *m, char *err) {
    const int C = m->cfg.dim;
    if (!m->w.tok_emb) return ftk_err(err, "%s: prompt init needs the model's token embeddings", m->path);
    for (int i = 0; i < n_virtual; i++) {
        int id = ids[i % n_ids];
        if (id < 0 || id >= m->cfg.vocab_size)
            return ftk_err(err, "prompt init: token id %d outside the vocabulary (%d)", id, m->cfg.vocab_size);
        memcpy(prompt + (size_t)i * C, m->w.tok_emb + (size_t)id * C, (size_t)C * sizeof(float));
    }
    return 0;
}

static int init_prompt(Adapters *a, const Model *m, uint64_t *rng, char *err) {
    const AdapterConfig *c = &a->cfg;
    const int nv = c->num_virtual_tokens;
    if (c->prompt_init == PROMPT_INIT_RANDOM) {
        // nn.Embedding's default init: N(0, 1)
        fill_normal(a->prompt, (size_t)nv * m->cfg.dim, 1.0f, rng);
        return 0;
    }
    if (c->prompt_init == PROMPT_INIT_SAMPLE_VOCAB) {
        int *ids = malloc((size_t)nv * sizeof(int));
        if (!ids) return ftk_err(err, "out of memory");
        for (int i = 0; i < nv; i++) ids[i] = (int)(ftk_rand_u32(rng) % (uint32_t)m->cfg.vocab_size);
        int rc = prompt_from_ids(a->prompt, nv, ids, nv, m, err);
        free(ids);
        return rc;
    }
    // TEXT: tokenizer(init_text)["input_ids"] with the tokenizer's defaults (BOS for LLaMA).
    if (!m->tok) return ftk_err(err, "%s: prompt_tuning_init TEXT needs the model's tokenizer", m->path);
    int *ids = NULL, n_ids = 0;
    int rc = tokenizer_encode(m->tok, c->prompt_init_text, -1, -1, &ids, &n_ids, err);
    if (rc) return rc;
    if (n_ids == 0) rc = ftk_err(err, "prompt_tuning_init_text \"%s\" encodes to no tokens", c->prompt_init_text);
    else rc = prompt_from_ids(a->prompt, nv, ids, n_ids, m, err);
    free(ids);
    return rc;
}

int adapters_init(Adapters *a, const Model *m, uint64_t seed, char *err) {
    if (m->cfg.dim != a->mcfg.dim || m->cfg.n_layers != a->mcfg.n_layers || m->cfg.arch != a->mcfg.arch)
        return ftk_err(err, "%s: model does not match the adapters' model configuration", m->path);
    uint64_t rng = seed;
    const int r = a->cfg.r;
    for (int i = 0; i < a->n_views; i++) {
        const AdapterView *v = &a->views[i];
        float *x = a->params + v->offset;
        switch (v->kind) {
        case VIEW_LORA_A:
            // kaiming_uniform_(a=sqrt 5): gain = sqrt(2 / (1 + a^2)) = sqrt(1/3),
            // bound = gain * sqrt(3 / fan_in) = 1 / sqrt(fan_in), fan_in = in = shape[1].
            if (a->cfg.init == LORA_INIT_GAUSSIAN) fill_normal(x, v->numel, 1.0f / (float)r, &rng);
            else fill_uniform(x, v->numel, (float)(1.0 / sqrt((double)v->shape[1])), &rng);
            break;
        case VIEW_LORA_B:
            // B = 0 makes the adapter a no-op at step 0; init=false keeps nn.Linear(r, out)'s own init.
            if (a->cfg.init == LORA_INIT_NONE) fill_uniform(x, v->numel, (float)(1.0 / sqrt((double)r)), &rng);
            else memset(x, 0, v->numel * sizeof(float));
            break;
        case VIEW_PROMPT: {
            int rc = init_prompt(a, m, &rng, err);
            if (rc) return rc;
            break;
        }
        case VIEW_SCORE:
            // transformers' _init_weights for *ForSequenceClassification.score: N(0, initializer_range = 0.02)
            fill_normal(x, v->numel, 0.02f, &rng);
            break;
        case VIEW_VALUE_W:
        case VIEW_VALUE_B:
            // TRL ValueHead = nn.Linear(C, 1) with its default init: weight and bias U(+-1/sqrt(C))
            fill_uniform(x, v->numel, (float)(1.0 / sqrt((double)a->mcfg.dim)), &rng);
            break;
        }
    }
    return 0;
}
