// synthetic.c — random-weight models for tests and benchmarks (see synthetic.h).
#include "model/synthetic.h"

#include <math.h>
#include <string.h>

#include "model/common.h"

static void fill_normal(float *w, size_t n, float mean, float std, uint64_t *rng) {
    for (size_t i = 0; i < n; i++) w[i] = mean + std * ftk_rand_normal(rng);
}

int model_init_synthetic(Model *m, const ModelConfig *cfg, uint64_t seed, char *err) {
    memset(m, 0, sizeof *m);
    snprintf(m->path, sizeof m->path, "synthetic");
    ModelConfig c = *cfg;
    if (c.head_dim == 0 && c.n_heads > 0) c.head_dim = c.dim / c.n_heads;
    if (c.n_kv_heads == 0) c.n_kv_heads = c.n_heads;
    if (model_alloc_weights(m, &c, err)) return -1;
    snprintf(m->format, sizeof m->format, "synthetic");
    snprintf(m->src_dtype, sizeof m->src_dtype, "F32");
    uint64_t rng = seed ? seed : 0x9e3779b97f4a7c15ULL;
    const size_t C = c.dim, F = c.ffn_dim, V = c.vocab_size, qd = model_q_dim(&c), qkv = model_qkv_dim(&c);
    const float emb_std = 2.0f / sqrtf((float)C);
    ModelWeights *w = &m->w;
    fill_normal(w->tok_emb, V * C, 0.0f, emb_std, &rng);
    if (w->pos_emb) fill_normal(w->pos_emb, (size_t)c.max_seq_len * C, 0.0f, 1.0f / sqrtf((float)C), &rng);
    for (int l = 0; l < c.n_layers; l++) {
        LayerWeights *L = &w->layers[l];
        fill_normal(L->attn_norm_w, C, 1.0f, 0.1f, &rng);
        if (L->attn_norm_b) fill_normal(L->attn_norm_b, C, 0.0f, 0.1f, &rng);
        fill_normal(L->wqkv, qkv * C, 0.0f, 1.0f / sqrtf((float)C), &rng);
        if (L->bqkv) fill_normal(L->bqkv, qkv, 0.0f, 0.1f, &rng);
        fill_normal(L->wo, C * qd, 0.0f, 1.0f / sqrtf((float)qd), &rng);
        if (L->bo) fill_normal(L->bo, C, 0.0f, 0.1f, &rng);
        fill_normal(L->ffn_norm_w, C, 1.0f, 0.1f, &rng);
        if (L->ffn_norm_b) fill_normal(L->ffn_norm_b, C, 0.0f, 0.1f, &rng);
        if (L->w_gate_up) fill_normal(L->w_gate_up, 2 * F * C, 0.0f, 1.0f / sqrtf((float)C), &rng);
        else fill_normal(L->w_up, F * C, 0.0f, 1.0f / sqrtf((float)C), &rng);
        if (L->b_up) fill_normal(L->b_up, F, 0.0f, 0.1f, &rng);
        fill_normal(L->w_down, C * F, 0.0f, 1.0f / sqrtf((float)F), &rng);
        if (L->b_down) fill_normal(L->b_down, C, 0.0f, 0.1f, &rng);
    }
    fill_normal(w->out_norm_w, C, 1.0f, 0.1f, &rng);
    if (w->out_norm_b) fill_normal(w->out_norm_b, C, 0.0f, 0.1f, &rng);
    if (!c.tied_head) fill_normal(w->lm_head, V * C, 0.0f, emb_std, &rng);
    return 0;
}
