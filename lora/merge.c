// merge.c — combining adapters and folding LoRA deltas into the base weights (lora/merge.h).
#include "lora/merge.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/common.h"
#include "model/parallel.h"

int lora_combination_parse(const char *s, LoraCombination *out, char *err) {
    if (s && !strcmp(s, "cat")) *out = COMBINE_CAT;
    else if (s && !strcmp(s, "linear")) *out = COMBINE_LINEAR;
    else return ftk_err(err, "unknown combination '%s' (cat, linear)", s ? s : "(null)");
    return 0;
}

static int same_geometry(const ModelConfig *a, const ModelConfig *b) {
    return a->arch == b->arch && a->dim == b->dim && a->n_layers == b->n_layers && a->n_heads == b->n_heads &&
           a->n_kv_heads == b->n_kv_heads && a->head_dim == b->head_dim && a->ffn_dim == b->ffn_dim;
}

void combined_lora_free(CombinedLora *c) {
    if (!c) return;
    free(c->hooks);
    free(c->mem);
    memset(c, 0, sizeof *c);
}

void combined_lora_hooks(const CombinedLora *c, ModelAdapters *out) {
    memset(out, 0, sizeof *out);
    out->hooks = c->hooks;
}

int lora_combine(CombinedLora *out, const Adapters *const *ads, const double *w, int n, LoraCombination how,
                 const ModelConfig *mc, char *err) {
    memset(out, 0, sizeof *out);
    if (n <= 0) return ftk_err(err, "no adapters to combine");
    for (int i = 0; i < n; i++) {
        const Adapters *a = ads[i];
        if (!same_geometry(&a->mcfg, mc))
            return ftk_err(err, "adapter %d was made for a model of another shape (dim %d, %d layers) than this one "
                                "(dim %d, %d layers)", i + 1, a->mcfg.dim, a->mcfg.n_layers, mc->dim, mc->n_layers);
        if (a->prompt)
            return ftk_err(err, "adapter %d has a soft prompt (prompt tuning, %d virtual tokens): prompt embeddings are "
                                "prepended to the input and cannot be merged into the weights", i + 1,
                           a->cfg.num_virtual_tokens);
        // A PPO value head trains the critic only; the policy is the LoRA, so it is left out (the caller says so).
        if (a->score)
            return ftk_err(err, "adapter %d has a score head (a reward model), which is not part of a causal LM and "
                                "cannot be merged", i + 1);
        if (!a->hooks) return ftk_err(err, "adapter %d has no LoRA weights to merge", i + 1);
        if (!isfinite(w[i])) return ftk_err(err, "weight %d is not a finite number", i + 1);
        if (how == COMBINE_LINEAR && w[i] * (double)a->scale < 0.0)
            return ftk_err(err, "combination linear takes sqrt(weight * scale) as PEFT does: weight %d (%g) times scale "
                                "%g is negative; use --combination cat", i + 1, w[i], (double)a->scale);
    }
    const int L = mc->n_layers, NS = L * LSLOT_COUNT;
    out->n_layers = L;
    out->hooks = calloc((size_t)NS, sizeof(LoraHook));
    if (!out->hooks) return ftk_err(err, "out of memory");
    // Pass 1: the combined rank of every slot and the storage it needs.
    size_t total = 0;
    for (int k = 0; k < NS; k++) {
        int R = 0, r0 = 0;
        for (int i = 0; i < n; i++) {
            const LoraHook *h = &ads[i]->hooks[k];
            if (h->r <= 0) continue;
            if (how == COMBINE_LINEAR) {
                if (r0 && h->r != r0) {
                    combined_lora_free(out);
                    return ftk_err(err, "combination linear needs adapters of equal rank (found %d and %d); use "
                                        "--combination cat", r0, h->r);
                }
                r0 = R = h->r;
            } else {
                R += h->r;
            }
        }
        if (!R) continue;
        int in, o, off;
        lora_slot_dims(mc, (LoraSlot)(k % LSLOT_COUNT), &in, &o, &off);
        LoraHook *c = &out->hooks[k];
        c->r = R;
        c->in = in;
        c->out = o;
        c->out_offset = off;
        c->scale = 1.0f;
        size_t a_n = (size_t)R * (size_t)in, b_n = (size_t)o * (size_t)R;
        if (ftk_add(total, a_n, &total) || ftk_add(total, b_n, &total)) {
            combined_lora_free(out);
            return ftk_err(err, "combined adapter too large");
        }
    }
    out->mem = calloc(total ? total : 1, sizeof(float));
    if (!out->mem) {
        combined_lora_free(out);
        return ftk_err(err, "out of memory for the combined adapter (%zu floats)", total);
    }
    out->n_floats = total;
    // Pass 2: fill A' and B'.
    float *p = out->mem;
    for (int k = 0; k < NS; k++) {
        LoraHook *c = &out->hooks[k];
        if (!c->r) continue;
        float *A = p, *B = p + (size_t)c->r * c->in;
        p = B + (size_t)c->out * c->r;
        c->A = A;
        c->B = B;
        const int R = c->r;
        int col = 0;   // cat: first column of B' / row of A' for the next adapter
        int n_here = 0, last = -1;
        for (int i = 0; i < n; i++)
            if (ads[i]->hooks[k].r > 0) { n_here++; last = i; }
        if (n_here == 1) {
            // One adapter on this module: keep A and B as they are and put w·s in the hook's scale,
            // so the merge is exactly (w s) · (B A) as PEFT computes it.
            const LoraHook *h = &ads[last]->hooks[k];
            memcpy(A, h->A, (size_t)R * h->in * sizeof(float));
            memcpy(B, h->B, (size_t)h->out * R * sizeof(float));
            c->scale = (float)(w[last] * (double)h->scale);
            continue;
        }
        for (int i = 0; i < n; i++) {
            const LoraHook *h = &ads[i]->hooks[k];
            if (h->r <= 0) continue;
            const size_t in = (size_t)h->in;
            if (how == COMBINE_CAT) {
                const float ws = (float)(w[i] * (double)h->scale);
                memcpy(A + (size_t)col * in, h->A, (size_t)h->r * in * sizeof(float));
                for (int row = 0; row < h->out; row++)
                    for (int j = 0; j < h->r; j++) B[(size_t)row * R + col + j] = ws * h->B[(size_t)row * h->r + j];
                col += h->r;
            } else {
                const float g = (float)sqrt(w[i] * (double)h->scale);
                for (size_t j = 0; j < (size_t)R * in; j++) A[j] += g * h->A[j];
                for (size_t j = 0; j < (size_t)h->out * R; j++) B[j] += g * h->B[j];
            }
        }
    }
    return 0;
}

// The weight matrix a slot's LoRA output lands in, with its row count (the fused width).
static float *slot_matrix(Model *m, int layer, LoraSlot s) {
    LayerWeights *L = &m->w.layers[layer];
    switch (s) {
    case LSLOT_Q: case LSLOT_K: case LSLOT_V: case LSLOT_QKV: return L->wqkv;
    case LSLOT_O: return L->wo;
    case LSLOT_GATE: return m->cfg.arch == ARCH_LLAMA ? L->w_gate_up : NULL;
    case LSLOT_UP: return m->cfg.arch == ARCH_LLAMA ? L->w_gate_up : L->w_up;
    case LSLOT_DOWN: return L->w_down;
    default: return NULL;
    }
}

int lora_merge_hooks(Model *m, const LoraHook *hooks, char *err) {
    ModelAdapters ad = {0};
    ad.hooks = (LoraHook *)hooks;   // validate only reads
    char sub[FTK_ERR_LEN];
    if (model_adapters_validate(m, &ad, sub)) return ftk_err(err, "merge into %s: %s", m->path, sub);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        for (int s = 0; s < LSLOT_COUNT; s++) {
            const LoraHook *h = &hooks[l * LSLOT_COUNT + s];
            if (h->r <= 0) continue;
            float *W = slot_matrix(m, l, (LoraSlot)s);
            if (!W) return ftk_err(err, "merge into %s: layer %d has no module for LoRA slot %d", m->path, l, s);
            if (!isfinite(h->scale)) return ftk_err(err, "merge into %s: layer %d: scale is not finite", m->path, l);
            // W[off:off+out, :] += scale * B A :  (out, r) @ (r, in) -> (out, in), accumulated (beta 1)
            par_sgemm(CblasNoTrans, CblasNoTrans, h->out, h->in, h->r, h->scale, h->B, h->r, h->A, h->in, 1.0f,
                      W + (size_t)h->out_offset * h->in, h->in);
        }
    }
    // A NaN/Inf in an adapter would silently poison the model: check what was touched (PEFT's safe_merge).
    for (int l = 0; l < m->cfg.n_layers; l++) {
        for (int s = 0; s < LSLOT_COUNT; s++) {
            const LoraHook *h = &hooks[l * LSLOT_COUNT + s];
            if (h->r <= 0) continue;
            const float *W = slot_matrix(m, l, (LoraSlot)s) + (size_t)h->out_offset * h->in;
            for (size_t i = 0; i < (size_t)h->out * h->in; i++)
                if (!isfinite(W[i]))
                    return ftk_err(err, "merge into %s: layer %d slot %d: the merged weights are not finite (NaN/Inf "
                                        "in the adapter?)", m->path, l, s);
        }
    }
    return 0;
}

int lora_merge_adapters(Model *m, const Adapters *a, char *err) {
    if (!a->hooks) return ftk_err(err, "adapter has no LoRA weights to merge");
    if (!same_geometry(&a->mcfg, &m->cfg))
        return ftk_err(err, "adapter was made for a model of another shape than %s", m->path);
    return lora_merge_hooks(m, a->hooks, err);
}
