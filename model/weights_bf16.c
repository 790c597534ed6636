// weights_bf16.c — bf16 storage of the frozen linear weights (see weights_bf16.h).
#include "model/weights_bf16.h"

#include <stdlib.h>
#include <string.h>

#include "model/common.h"

uint16_t bf16_from_f32(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);   // NaN: keep it a (quiet) NaN
    // Round to nearest, ties to even: add 0x7fff plus the lowest kept bit, then truncate.
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float bf16_to_f32(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

void bf16_expand(float *dst, const uint16_t *src, size_t n) {
    uint32_t *d = (uint32_t *)(void *)dst;   // same bits as a float: the bf16 value in the high half
    for (size_t i = 0; i < n; i++) d[i] = (uint32_t)src[i] << 16;
}

typedef struct {
    float **f32;        // the tensor's float pointer (set to NULL once converted)
    uint16_t **bf16;    // where its bf16 copy goes; NULL = stays fp32
    size_t n;
    int linear;         // a layer's linear: expanded whole into the scratch before its product
} TensorRef;

// Every tensor of m with its size, in a fixed order; views into fused buffers (wq/wk/wv, llama's
// w_gate/w_up) and a tied lm_head are left out (they are re-pointed after). Returns the count.
static int list_tensors(Model *m, TensorRef *t) {
    const ModelConfig *c = &m->cfg;
    const size_t C = c->dim, F = c->ffn_dim, V = c->vocab_size, qkv = model_qkv_dim(c), qd = model_q_dim(c);
    const int llama = c->arch == ARCH_LLAMA;
    int k = 0;
#define ADD(p, pb, count) do { if (p) t[k++] = (TensorRef){&(p), (pb), (count), (pb) != NULL}; } while (0)
    t[k++] = (TensorRef){&m->w.tok_emb, &m->w.tok_emb_bf16, V * C, 0};
    ADD(m->w.pos_emb, NULL, (size_t)c->max_seq_len * C);
    ADD(m->w.out_norm_w, NULL, C);
    ADD(m->w.out_norm_b, NULL, C);
    if (m->w.lm_head != m->w.tok_emb) t[k++] = (TensorRef){&m->w.lm_head, &m->w.lm_head_bf16, V * C, 0};
    for (int l = 0; l < c->n_layers; l++) {
        LayerWeights *L = &m->w.layers[l];
        ADD(L->attn_norm_w, NULL, C);
        ADD(L->attn_norm_b, NULL, C);
        ADD(L->bqkv, NULL, qkv);
        ADD(L->bo, NULL, C);
        ADD(L->ffn_norm_w, NULL, C);
        ADD(L->ffn_norm_b, NULL, C);
        ADD(L->b_up, NULL, F);
        ADD(L->b_down, NULL, C);
        ADD(L->wqkv, &L->wqkv_bf16, qkv * C);
        ADD(L->wo, &L->wo_bf16, C * qd);
        if (llama) ADD(L->w_gate_up, &L->w_gate_up_bf16, 2 * F * C);
        else ADD(L->w_up, &L->w_up_bf16, F * C);
        ADD(L->w_down, &L->w_down_bf16, C * F);
    }
#undef ADD
    return k;
}

static size_t round16(size_t n) { return (n + 15) & ~(size_t)15; }   // 64-byte steps, in floats

int model_to_bf16(Model *m, char *err) {
    if (m->base_bf16) return 0;
    if (!m->weight_mem || !m->w.layers) return ftk_err(err, "%s: bf16 conversion needs loaded weights", m->path);
    const int max_tensors = 5 + 13 * m->cfg.n_layers;
    TensorRef *t = malloc((size_t)max_tensors * sizeof *t);
    if (!t) return ftk_err(err, "%s: out of memory converting to bf16", m->path);
    const int nt = list_tensors(m, t);
    const int tied = m->w.lm_head == m->w.tok_emb;
    // layout of the new block: fp32 tensors, bf16 tensors (2 per float), scratch of the largest linear
    size_t off = 0, scratch = 0;
    for (int i = 0; i < nt; i++)
        if (!t[i].bf16) off = round16(off + t[i].n);
    const size_t bf16_start = off;
    size_t off16 = 0;   // in bf16 values
    for (int i = 0; i < nt; i++)
        if (t[i].bf16) {
            off16 = (off16 + t[i].n + 31) & ~(size_t)31;
            if (t[i].linear && t[i].n > scratch) scratch = t[i].n;
        }
    const size_t scratch_start = round16(bf16_start + off16 / 2), total = scratch_start + scratch;
    float *mem = ftk_alloc_big(total * sizeof(float));
    if (!mem) {
        free(t);
        return ftk_err(err, "%s: out of memory for the bf16 weights (%zu bytes)", m->path, total * sizeof(float));
    }
    // fill and re-point
    size_t o32 = 0, o16 = 0;
    uint16_t *base16 = (uint16_t *)(void *)(mem + bf16_start);
    for (int i = 0; i < nt; i++) {
        const float *src = *t[i].f32;
        if (!t[i].bf16) {
            memcpy(mem + o32, src, t[i].n * sizeof(float));
            *t[i].f32 = mem + o32;
            o32 = round16(o32 + t[i].n);
        } else {
            uint16_t *dst = base16 + o16;
            for (size_t j = 0; j < t[i].n; j++) dst[j] = bf16_from_f32(src[j]);
            *t[i].bf16 = dst;
            *t[i].f32 = NULL;
            o16 = (o16 + t[i].n + 31) & ~(size_t)31;
        }
    }
    if (tied) {
        m->w.lm_head = NULL;
        m->w.lm_head_bf16 = m->w.tok_emb_bf16;
    }
    for (int l = 0; l < m->cfg.n_layers; l++) {   // views into the converted fused buffers
        LayerWeights *L = &m->w.layers[l];
        L->wq = L->wk = L->wv = NULL;
        L->w_gate = NULL;
        if (m->cfg.arch == ARCH_LLAMA) L->w_up = NULL;
    }
    free(t);
    free(m->weight_mem);
    m->weight_mem = mem;
    m->n_weight_floats = total;
    m->bf16_scratch = mem + scratch_start;
    m->bf16_scratch_floats = scratch;
    m->base_bf16 = 1;
    return 0;
}

const float *model_linear_f32(const Model *m, const float *w, const uint16_t *wb, size_t n) {
    if (w) return w;
    // callers pass the sizes list_tensors used, so n <= the scratch
    bf16_expand(m->bf16_scratch, wb, n);
    return m->bf16_scratch;
}

size_t model_weight_bytes(const Model *m) {
    if (!m->base_bf16) return m->n_weight_floats * sizeof(float);
    return (m->n_weight_floats - m->bf16_scratch_floats) * sizeof(float);
}

int model_check_f32_weights(const Model *m, const char *what, char *err) {
    if (!m->base_bf16) return 0;
    return ftk_err(err, "%s: %s needs fp32 base weights; this model was converted to bf16 (--base-dtype bf16)",
                   m->path, what);
}
