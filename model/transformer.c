// transformer.c — batched forward and backward of the frozen base model (llama and gpt2) with the
// LoRA hook and soft-prompt rows, and the activation arena (layout in runstate.h; LM head in lm_head.c).
//
// One layer, llama (gpt2: LayerNorm with bias, no RoPE, biases on every linear, GELU MLP):
//   h1 = rmsnorm(x)                 qkv = h1 @ wqkv^T (+ LoRA Q/K/V)   RoPE(q, k)
//   att = softmax(q k^T / sqrt(hd)) v                                  xmid = x + att @ wo^T (+ LoRA O)
//   h2 = rmsnorm(xmid)              gu = h2 @ w_gate_up^T (+ LoRA GATE/UP)
//   act = silu(gate) * up           x' = xmid + act @ w_down^T (+ LoRA DOWN)
// Training forwards keep every layer's activations; inference forwards reuse one layer's buffers.
#include "model/transformer.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/common.h"
#include "model/ops.h"
#include "model/runstate.h"

// ---------------------------------------------------------------------------------------------
// arena

typedef struct {
    char *base;      // NULL while measuring
    size_t off;
    int overflow;
} Carver;

// Reserves n elements of size elem, 64-byte aligned; returns NULL while measuring.
static void *carve(Carver *cv, size_t n, size_t elem) {
    size_t bytes, end;
    if (ftk_mul(n, elem, &bytes) || ftk_add(cv->off, bytes, &end) || ftk_add(end, 63, &end)) {
        cv->overflow = 1;
        return NULL;
    }
    void *p = cv->base ? cv->base + cv->off : NULL;
    cv->off = end & ~(size_t)63;
    return p;
}

static size_t mul3(size_t a, size_t b, size_t c, int *overflow) {
    size_t ab, abc;
    if (ftk_mul(a, b, &ab) || ftk_mul(ab, c, &abc)) {
        *overflow = 1;
        return 0;
    }
    return abc;
}

static void layout_arena(RunState *rs, Carver *cv) {
    const ModelConfig *c = &rs->cfg;
    const size_t N = (size_t)rs->B_max * rs->T_max, C = c->dim, F = c->ffn_dim, V = c->vocab_size;
    const size_t L = c->n_layers, Ls = rs->training ? L : 1, T = rs->T_max;
    size_t in_max = C > F ? C : F;   // widest input of any linear a LoRA can sit on
    if ((size_t)rs->qd > in_max) in_max = rs->qd;
    int ov = 0;
    rs->positions = carve(cv, N, sizeof(int));
    rs->seg = carve(cv, N, sizeof(int));
    rs->dropout_state = carve(cv, L * LSLOT_COUNT, sizeof(uint64_t));
    rs->needs = carve(cv, L, sizeof(LayerNeeds));
    rs->rope_cos = carve(cv, N * (size_t)(c->head_dim / 2), sizeof(float));
    rs->rope_sin = carve(cv, N * (size_t)(c->head_dim / 2), sizeof(float));
    rs->x = carve(cv, mul3(rs->training ? L + 1 : 1, N, C, &ov), sizeof(float));
    rs->xmid = rs->training ? carve(cv, mul3(L, N, C, &ov), sizeof(float)) : rs->x;
    rs->h1 = carve(cv, mul3(Ls, N, C, &ov), sizeof(float));
    rs->mean1 = carve(cv, Ls * N, sizeof(float));
    rs->rstd1 = carve(cv, Ls * N, sizeof(float));
    rs->qkvb = carve(cv, mul3(Ls, N, rs->qkv, &ov), sizeof(float));
    if (rs->training)
        rs->probs = carve(cv, mul3(L * rs->B_max, c->n_heads, mul3(T, T, 1, &ov), &ov), sizeof(float));
    else
        rs->probs = carve(cv, mul3(T, T, 1, &ov), sizeof(float));
    rs->att = carve(cv, mul3(Ls, N, rs->qd, &ov), sizeof(float));
    rs->branch = carve(cv, N * C, sizeof(float));
    rs->h2 = carve(cv, mul3(Ls, N, C, &ov), sizeof(float));
    rs->mean2 = carve(cv, Ls * N, sizeof(float));
    rs->rstd2 = carve(cv, Ls * N, sizeof(float));
    rs->ffn_pre = carve(cv, mul3(Ls, N, rs->pre_w, &ov), sizeof(float));
    rs->ffn_act = carve(cv, mul3(Ls, N, F, &ov), sizeof(float));
    rs->final_hidden = carve(cv, N * C, sizeof(float));
    rs->final_mean = carve(cv, N, sizeof(float));
    rs->final_rstd = carve(cv, N, sizeof(float));
    if (rs->training) {
        rs->d_final_hidden = carve(cv, N * C, sizeof(float));
        rs->dx = carve(cv, N * C, sizeof(float));
        rs->dh = carve(cv, N * C, sizeof(float));
        rs->dqkv = carve(cv, mul3(N, rs->qkv, 1, &ov), sizeof(float));
        rs->datt = carve(cv, mul3(N, rs->qd, 1, &ov), sizeof(float));
        rs->dffn_pre = carve(cv, mul3(N, rs->pre_w, 1, &ov), sizeof(float));
        rs->dffn_act = carve(cv, mul3(N, F, 1, &ov), sizeof(float));
        rs->dprobs = carve(cv, mul3(T, T, 1, &ov), sizeof(float));
    }
    rs->lora_scratch_n = mul3(N, lora_scratch_floats((int)in_max, LORA_SCRATCH_RANK), 1, &ov);
    rs->lora_scratch = carve(cv, rs->lora_scratch_n, sizeof(float));
    rs->head_h = carve(cv, (size_t)HEAD_CHUNK * C, sizeof(float));
    rs->head_logits = carve(cv, mul3(HEAD_CHUNK, V, 1, &ov), sizeof(float));
    rs->head_dh = carve(cv, (size_t)HEAD_CHUNK * C, sizeof(float));
    if (ov) cv->overflow = 1;
}

int runstate_create(RunState **out, const Model *m, int B, int T_max, int training, char *err) {
    *out = NULL;
    const ModelConfig *c = &m->cfg;
    if (B <= 0 || T_max <= 0) return ftk_err(err, "runstate: invalid batch shape B=%d T=%d", B, T_max);
    if (c->arch == ARCH_GPT2 && T_max > c->max_seq_len)
        return ftk_err(err, "runstate: T=%d exceeds the model's %d positions", T_max, c->max_seq_len);
    if ((size_t)B * (size_t)T_max > (size_t)1 << 30) return ftk_err(err, "runstate: B*T=%d*%d too large", B, T_max);
    RunState *rs = calloc(1, sizeof *rs);
    if (!rs) return ftk_err(err, "runstate: out of memory");
    rs->cfg = *c;
    rs->B_max = B;
    rs->T_max = T_max;
    rs->training = training ? 1 : 0;
    rs->qd = model_q_dim(c);
    rs->kvd = model_kv_dim(c);
    rs->qkv = model_qkv_dim(c);
    rs->pre_w = c->arch == ARCH_LLAMA ? 2 * c->ffn_dim : c->ffn_dim;
    Carver cv = {NULL, 0, 0};
    layout_arena(rs, &cv);
    if (cv.overflow) {
        free(rs);
        return ftk_err(err, "runstate: activation arena for B=%d T=%d overflows", B, T_max);
    }
    rs->bytes = cv.off;
    rs->mem = aligned_alloc(64, cv.off ? cv.off : 64);
    if (!rs->mem) {
        free(rs);
        return ftk_err(err, "runstate: out of memory for a %zu-byte activation arena (B=%d T=%d)", cv.off, B, T_max);
    }
    memset(rs->mem, 0, cv.off);
    Carver real = {rs->mem, 0, 0};
    layout_arena(rs, &real);
    *out = rs;
    return 0;
}

void runstate_free(RunState *rs) {
    if (!rs) return;
    free(rs->mem);
    free(rs);
}

float *runstate_final_hidden(RunState *rs) { return rs->final_hidden; }
float *runstate_d_final_hidden(RunState *rs) { return rs->d_final_hidden; }
int runstate_T(const RunState *rs) { return rs->T; }
size_t runstate_bytes(const RunState *rs) { return rs->bytes; }

// Per-layer slice of an activation buffer (the single slice in inference mode).
static float *slice(const RunState *rs, float *base, int l, size_t per_layer) {
    return base + (rs->training ? (size_t)l : 0) * per_layer;
}

// ---------------------------------------------------------------------------------------------
// adapters

static const LoraHook *hook_at(const ModelAdapters *ad, int l, LoraSlot s) {
    if (!ad || ad->disabled || !ad->hooks) return NULL;
    const LoraHook *h = &ad->hooks[l * LSLOT_COUNT + s];
    return h->r > 0 ? h : NULL;
}

static int hook_trainable(const ModelAdapters *ad, int l, LoraSlot s) {
    const LoraHook *h = hook_at(ad, l, s);
    return h && (h->dA || h->dB);
}

// Input width and fused output width of the linear a slot sits on; 0 when the slot does not exist.
static void slot_dims(const ModelConfig *c, LoraSlot s, int *in, int *width) {
    const int llama = c->arch == ARCH_LLAMA;
    const int pre_w = llama ? 2 * c->ffn_dim : c->ffn_dim;
    *in = 0;
    *width = 0;
    switch (s) {
    case LSLOT_Q: case LSLOT_K: case LSLOT_V: case LSLOT_QKV: *in = c->dim; *width = model_qkv_dim(c); break;
    case LSLOT_O: *in = model_q_dim(c); *width = c->dim; break;
    case LSLOT_GATE: if (llama) { *in = c->dim; *width = pre_w; } break;
    case LSLOT_UP: *in = c->dim; *width = pre_w; break;
    case LSLOT_DOWN: *in = c->ffn_dim; *width = c->dim; break;
    default: break;
    }
}

static const char *slot_name(LoraSlot s) {
    static const char *names[LSLOT_COUNT] = {"q", "k", "v", "qkv", "o", "gate", "up", "down"};
    return names[s];
}

int model_adapters_validate(const Model *m, const ModelAdapters *ad, char *err) {
    if (!ad || ad->disabled) return 0;
    const ModelConfig *c = &m->cfg;
    if (ad->n_virtual < 0 || (ad->n_virtual > 0 && !ad->prompt))
        return ftk_err(err, "adapters: soft prompt of %d rows without embeddings", ad->n_virtual);
    if (!ad->hooks) return 0;
    for (int l = 0; l < c->n_layers; l++)
        for (int s = 0; s < LSLOT_COUNT; s++) {
            const LoraHook *h = &ad->hooks[l * LSLOT_COUNT + s];
            if (h->r <= 0) continue;
            int in, width;
            slot_dims(c, (LoraSlot)s, &in, &width);
            if (width == 0)
                return ftk_err(err, "adapters: layer %d has a LoRA on '%s', which this architecture lacks", l,
                               slot_name((LoraSlot)s));
            if (h->in != in || h->out <= 0 || h->out_offset < 0 || h->out_offset > width - h->out || !h->A || !h->B)
                return ftk_err(err, "adapters: layer %d LoRA '%s' has shape in=%d out=%d offset=%d, linear is (%d -> %d)",
                               l, slot_name((LoraSlot)s), h->in, h->out, h->out_offset, in, width);
            if (!(h->dropout >= 0.0f && h->dropout < 1.0f))
                return ftk_err(err, "adapters: layer %d LoRA '%s' dropout %g not in [0, 1)", l, slot_name((LoraSlot)s),
                               h->dropout);
            if (h->r > (1 << 16))
                return ftk_err(err, "adapters: layer %d LoRA '%s' rank %d too large", l, slot_name((LoraSlot)s), h->r);
        }
    return 0;
}

static int validate_adapters(const RunState *rs, const Model *m, const ModelAdapters *ad, char *err) {
    if (model_adapters_validate(m, ad, err)) return -1;
    if (!ad || ad->disabled || !ad->hooks) return 0;
    for (int i = 0; i < m->cfg.n_layers * LSLOT_COUNT; i++) {
        const LoraHook *h = &ad->hooks[i];
        if (h->r > 0 && lora_scratch_floats(h->in, h->r) > rs->lora_scratch_n)
            return ftk_err(err, "adapters: LoRA rank %d too large for this run state", h->r);
    }
    return 0;
}

// Applies the hooks of the given slots of layer l to a linear's output (N, width).
static void apply_hooks(RunState *rs, const ModelAdapters *ad, int l, const LoraSlot *slots, int n_slots, float *out,
                        int width, const float *x, int N, uint64_t *rng) {
    for (int i = 0; i < n_slots; i++) {
        const LoraHook *h = hook_at(ad, l, slots[i]);
        if (!h) continue;
        if (rng) rs->dropout_state[l * LSLOT_COUNT + slots[i]] = *rng;
        lora_forward(out, width, x, N, h, rng, rs->lora_scratch, rs->lora_scratch_n);
    }
}

// Backward of those hooks: dA/dB, and dx (N, in) += when dx != NULL.
static void hooks_backward(RunState *rs, const ModelAdapters *ad, int l, const LoraSlot *slots, int n_slots,
                           const float *dout, int width, const float *x, int N, float *dx) {
    for (int i = 0; i < n_slots; i++) {
        const LoraHook *h = hook_at(ad, l, slots[i]);
        if (!h) continue;
        if (!dx && !h->dA && !h->dB) continue;
        lora_backward(dx, dout, width, x, N, h, rs->used_dropout, rs->dropout_state[l * LSLOT_COUNT + slots[i]],
                      rs->lora_scratch, rs->lora_scratch_n);
    }
}

static const LoraSlot QKV_SLOTS[] = {LSLOT_Q, LSLOT_K, LSLOT_V, LSLOT_QKV};
static const LoraSlot O_SLOT[] = {LSLOT_O};
static const LoraSlot GATE_UP_SLOTS[] = {LSLOT_GATE, LSLOT_UP};
static const LoraSlot DOWN_SLOT[] = {LSLOT_DOWN};

// ---------------------------------------------------------------------------------------------
// forward

static void norm_forward(const RunState *rs, float *out, float *mean, float *rstd, const float *x, const float *w,
                         const float *b, int N) {
    const ModelConfig *c = &rs->cfg;
    if (c->arch == ARCH_LLAMA) rmsnorm_forward(out, rstd, x, w, N, c->dim, c->norm_eps);
    else layernorm_forward(out, mean, rstd, x, w, b, N, c->dim, c->norm_eps);
}

static void norm_backward(const RunState *rs, float *dx, const float *dout, const float *x, const float *w,
                          const float *mean, const float *rstd, int N) {
    const ModelConfig *c = &rs->cfg;
    if (c->arch == ARCH_LLAMA) rmsnorm_backward(dx, dout, x, w, rstd, N, c->dim);
    else layernorm_backward(dx, dout, x, w, mean, rstd, N, c->dim);
}

static AttnShape attn_shape(const RunState *rs) {
    AttnShape s = {rs->B, rs->T, rs->cfg.n_heads, rs->cfg.n_kv_heads, rs->cfg.head_dim, rs->nv,
                   rs->has_seg ? rs->seg : NULL};
    return s;
}

static void layer_forward(const Model *m, const ModelAdapters *ad, RunState *rs, int l, uint64_t *rng) {
    const ModelConfig *c = &m->cfg;
    const LayerWeights *w = &m->w.layers[l];
    const int N = rs->B * rs->T, C = c->dim, F = c->ffn_dim, llama = c->arch == ARCH_LLAMA;
    const size_t NC = (size_t)rs->B_max * rs->T_max * C, Nmax = (size_t)rs->B_max * rs->T_max;
    float *x_in = slice(rs, rs->x, l, NC);
    float *x_mid = rs->training ? rs->xmid + (size_t)l * NC : x_in;
    float *x_out = rs->training ? rs->x + (size_t)(l + 1) * NC : x_in;
    float *h1 = slice(rs, rs->h1, l, NC), *mean1 = slice(rs, rs->mean1, l, Nmax), *rstd1 = slice(rs, rs->rstd1, l, Nmax);
    float *qkv = slice(rs, rs->qkvb, l, Nmax * rs->qkv);
    float *att = slice(rs, rs->att, l, Nmax * rs->qd);
    float *probs = rs->training ? rs->probs + (size_t)l * rs->B_max * c->n_heads * rs->T_max * rs->T_max : rs->probs;
    float *h2 = slice(rs, rs->h2, l, NC), *mean2 = slice(rs, rs->mean2, l, Nmax), *rstd2 = slice(rs, rs->rstd2, l, Nmax);
    float *pre = slice(rs, rs->ffn_pre, l, Nmax * rs->pre_w), *act = slice(rs, rs->ffn_act, l, Nmax * F);

    // attention block
    norm_forward(rs, h1, mean1, rstd1, x_in, w->attn_norm_w, w->attn_norm_b, N);
    linear_forward(qkv, h1, w->wqkv, w->bqkv, N, C, rs->qkv);   // (N, C) @ (C, qkv)
    apply_hooks(rs, ad, l, QKV_SLOTS, 4, qkv, rs->qkv, h1, N, rng);
    if (llama) {
        rope_forward(qkv, rs->qkv, N, c->n_heads, c->head_dim, rs->rope_cos, rs->rope_sin);
        rope_forward(qkv + rs->qd, rs->qkv, N, c->n_kv_heads, c->head_dim, rs->rope_cos, rs->rope_sin);
    }
    AttnShape shape = attn_shape(rs);
    attention_forward(att, probs, qkv, &shape, rs->training);
    linear_forward(rs->branch, att, w->wo, w->bo, N, rs->qd, C);   // (N, q_dim) @ (q_dim, C)
    apply_hooks(rs, ad, l, O_SLOT, 1, rs->branch, C, att, N, rng);
    residual_forward(x_mid, x_in, rs->branch, (size_t)N * C);

    // MLP block
    norm_forward(rs, h2, mean2, rstd2, x_mid, w->ffn_norm_w, w->ffn_norm_b, N);
    if (llama) {
        linear_forward(pre, h2, w->w_gate_up, NULL, N, C, 2 * F);   // (N, C) @ (C, 2F)
        apply_hooks(rs, ad, l, GATE_UP_SLOTS, 2, pre, 2 * F, h2, N, rng);
        swiglu_forward(act, pre, N, F);
    } else {
        linear_forward(pre, h2, w->w_up, w->b_up, N, C, F);   // (N, C) @ (C, F)
        apply_hooks(rs, ad, l, GATE_UP_SLOTS, 2, pre, F, h2, N, rng);
        gelu_forward(act, pre, (size_t)N * F);
    }
    linear_forward(rs->branch, act, w->w_down, w->b_down, N, F, C);   // (N, F) @ (F, C)
    apply_hooks(rs, ad, l, DOWN_SLOT, 1, rs->branch, C, act, N, rng);
    residual_forward(x_out, x_mid, rs->branch, (size_t)N * C);
}

int model_forward(const Model *m, const ModelAdapters *ad, RunState *rs, const int *tokens, int B, int Tt,
                  const int *pos_ids, const int *seg_ids, uint64_t *dropout_rng, char *err) {
    const ModelConfig *c = &m->cfg;
    if (rs->cfg.dim != c->dim || rs->cfg.n_layers != c->n_layers || rs->cfg.vocab_size != c->vocab_size ||
        rs->cfg.ffn_dim != c->ffn_dim || rs->cfg.n_heads != c->n_heads || rs->cfg.arch != c->arch)
        return ftk_err(err, "forward: the run state was created for a different model");
    rs->B = 0;   // until this forward succeeds there is nothing to differentiate
    const int use_ad = ad && !ad->disabled;
    const int nv = use_ad ? ad->n_virtual : 0;
    if (B <= 0 || Tt <= 0) return ftk_err(err, "forward: invalid batch shape B=%d T=%d", B, Tt);
    const int T = nv + Tt;
    if (B > rs->B_max || T > rs->T_max)
        return ftk_err(err, "forward: batch (%d, %d+%d) exceeds the run state's (%d, %d)", B, nv, Tt, rs->B_max,
                       rs->T_max);
    if (validate_adapters(rs, m, ad, err)) return -1;
    for (size_t i = 0; i < (size_t)B * Tt; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
            return ftk_err(err, "forward: token id %d at index %zu outside the vocabulary (%d)", tokens[i], i,
                           c->vocab_size);
    for (int b = 0; b < B; b++)
        for (int j = 0; j < T; j++) {
            int p = j < nv ? j : nv + (pos_ids ? pos_ids[b * Tt + j - nv] : j - nv);
            if (p < nv && j >= nv) return ftk_err(err, "forward: negative position id %d", p - nv);
            if (c->arch == ARCH_GPT2 && p >= c->max_seq_len)
                return ftk_err(err, "forward: position %d beyond the model's %d positions", p, c->max_seq_len);
            rs->positions[b * T + j] = p;
        }
    rs->B = B;
    rs->T = T;
    rs->Tt = Tt;
    rs->nv = nv;
    rs->has_seg = seg_ids != NULL;
    if (seg_ids) memcpy(rs->seg, seg_ids, (size_t)B * Tt * sizeof(int));
    rs->used_dropout = dropout_rng != NULL;
    const int N = B * T;

    embedding_forward(rs->x, tokens, m->w.tok_emb, nv ? ad->prompt : NULL, nv,
                      c->arch == ARCH_GPT2 ? m->w.pos_emb : NULL, rs->positions, B, Tt, c->dim);
    if (c->arch == ARCH_LLAMA) rope_tables(rs->rope_cos, rs->rope_sin, rs->positions, N, c->head_dim, c->rope_theta);
    for (int l = 0; l < c->n_layers; l++) layer_forward(m, use_ad ? ad : NULL, rs, l, dropout_rng);
    const float *x_last = rs->training ? rs->x + (size_t)c->n_layers * rs->B_max * rs->T_max * c->dim : rs->x;
    norm_forward(rs, rs->final_hidden, rs->final_mean, rs->final_rstd, x_last, m->w.out_norm_w, m->w.out_norm_b, N);
    if (rs->training) memset(rs->d_final_hidden, 0, (size_t)N * c->dim * sizeof(float));
    return 0;
}

// ---------------------------------------------------------------------------------------------
// backward

// Backward of layer l: on entry rs->dx = dL/d(x_out); on exit dL/d(x_in) (when anything below needs it).
static void layer_backward(const Model *m, const ModelAdapters *ad, RunState *rs, int l, const LayerNeeds *nd) {
    const ModelConfig *c = &m->cfg;
    const LayerWeights *w = &m->w.layers[l];
    const int N = rs->B * rs->T, C = c->dim, F = c->ffn_dim, llama = c->arch == ARCH_LLAMA;
    const size_t NC = (size_t)rs->B_max * rs->T_max * C, Nmax = (size_t)rs->B_max * rs->T_max;
    const float *x_in = rs->x + (size_t)l * NC, *x_mid = rs->xmid + (size_t)l * NC;
    const float *h1 = rs->h1 + (size_t)l * NC, *h2 = rs->h2 + (size_t)l * NC;
    const float *qkv = rs->qkvb + (size_t)l * Nmax * rs->qkv, *att = rs->att + (size_t)l * Nmax * rs->qd;
    const float *probs = rs->probs + (size_t)l * rs->B_max * c->n_heads * rs->T_max * rs->T_max;
    const float *pre = rs->ffn_pre + (size_t)l * Nmax * rs->pre_w, *act = rs->ffn_act + (size_t)l * Nmax * F;
    float *dx = rs->dx;

    // MLP block. The residual hands dx to the branch output unchanged (x_out = x_mid + branch).
    const int into_attn = nd->below || nd->attn_train;   // is dL/d(x_mid) needed beyond the residual?
    const int need_dact = into_attn || nd->gate_up_train;
    if (need_dact) linear_backward(rs->dffn_act, dx, w->w_down, N, F, C, 0.0f);   // (N, C) @ (C, F)
    hooks_backward(rs, ad, l, DOWN_SLOT, 1, dx, C, act, N, need_dact ? rs->dffn_act : NULL);
    if (need_dact) {
        if (llama) swiglu_backward(rs->dffn_pre, rs->dffn_act, pre, N, F);
        else gelu_backward(rs->dffn_pre, rs->dffn_act, pre, (size_t)N * F);
        if (into_attn)
            linear_backward(rs->dh, rs->dffn_pre, llama ? w->w_gate_up : w->w_up, N, C, rs->pre_w, 0.0f);  // (N, pre_w) @ (pre_w, C)
        hooks_backward(rs, ad, l, GATE_UP_SLOTS, 2, rs->dffn_pre, rs->pre_w, h2, N, into_attn ? rs->dh : NULL);
        if (into_attn)
            norm_backward(rs, dx, rs->dh, x_mid, w->ffn_norm_w, rs->mean2 + (size_t)l * Nmax, rs->rstd2 + (size_t)l * Nmax, N);
    }
    if (!into_attn) return;

    // attention block; dx now holds dL/d(x_mid) = dL/d(attention branch output)
    const int need_dqkv = nd->below || nd->qkv_train;
    if (need_dqkv) linear_backward(rs->datt, dx, w->wo, N, rs->qd, C, 0.0f);   // (N, C) @ (C, q_dim)
    hooks_backward(rs, ad, l, O_SLOT, 1, dx, C, att, N, need_dqkv ? rs->datt : NULL);
    if (!need_dqkv) return;
    AttnShape shape = attn_shape(rs);
    attention_backward(rs->dqkv, rs->dprobs, rs->datt, qkv, probs, &shape);
    if (llama) {
        rope_backward(rs->dqkv, rs->qkv, N, c->n_heads, c->head_dim, rs->rope_cos, rs->rope_sin);
        rope_backward(rs->dqkv + rs->qd, rs->qkv, N, c->n_kv_heads, c->head_dim, rs->rope_cos, rs->rope_sin);
    }
    if (nd->below) linear_backward(rs->dh, rs->dqkv, w->wqkv, N, C, rs->qkv, 0.0f);   // (N, qkv) @ (qkv, C)
    hooks_backward(rs, ad, l, QKV_SLOTS, 4, rs->dqkv, rs->qkv, h1, N, nd->below ? rs->dh : NULL);
    if (nd->below)
        norm_backward(rs, dx, rs->dh, x_in, w->attn_norm_w, rs->mean1 + (size_t)l * Nmax, rs->rstd1 + (size_t)l * Nmax, N);
}

int model_backward(const Model *m, const ModelAdapters *ad, RunState *rs, char *err) {
    const ModelConfig *c = &m->cfg;
    if (!rs->training) return ftk_err(err, "backward: the run state was created for inference");
    if (rs->B == 0) return ftk_err(err, "backward: no forward to differentiate");
    if (!ad || ad->disabled) return 0;   // nothing trainable
    const int prompt_grad = rs->nv > 0 && ad->dprompt != NULL;
    LayerNeeds *needs = rs->needs;
    int below = prompt_grad;
    for (int l = 0; l < c->n_layers; l++) {
        LayerNeeds *nd = &needs[l];
        nd->below = below;
        nd->qkv_train = hook_trainable(ad, l, LSLOT_Q) || hook_trainable(ad, l, LSLOT_K) ||
                        hook_trainable(ad, l, LSLOT_V) || hook_trainable(ad, l, LSLOT_QKV);
        nd->attn_train = nd->qkv_train || hook_trainable(ad, l, LSLOT_O);
        nd->gate_up_train = hook_trainable(ad, l, LSLOT_GATE) || hook_trainable(ad, l, LSLOT_UP);
        nd->mlp_train = nd->gate_up_train || hook_trainable(ad, l, LSLOT_DOWN);
        below = below || nd->attn_train || nd->mlp_train;
    }
    if (!below) return 0;
    const int N = rs->B * rs->T;
    const size_t NC = (size_t)rs->B_max * rs->T_max * c->dim;
    memset(rs->dx, 0, (size_t)N * c->dim * sizeof(float));
    norm_backward(rs, rs->dx, rs->d_final_hidden, rs->x + (size_t)c->n_layers * NC, m->w.out_norm_w, rs->final_mean,
                  rs->final_rstd, N);
    for (int l = c->n_layers - 1; l >= 0; l--) {
        const LayerNeeds *nd = &needs[l];
        if (!nd->below && !nd->attn_train && !nd->mlp_train) break;   // nothing at or below l learns
        layer_backward(m, ad, rs, l, nd);
    }
    if (prompt_grad) embedding_backward(ad->dprompt, rs->dx, rs->B, rs->T, rs->nv, c->dim);
    return 0;
}

int model_logits_all(const Model *m, const ModelAdapters *ad, const int *tokens, int Tt, float **logits, char *err) {
    *logits = NULL;
    const int nv = ad && !ad->disabled ? ad->n_virtual : 0;
    const int T = nv + Tt;
    RunState *rs;
    if (runstate_create(&rs, m, 1, T, 0, err)) return -1;
    int rc = model_forward(m, ad, rs, tokens, 1, Tt, NULL, NULL, NULL, err);
    if (rc == 0) {
        size_t n;
        if (ftk_mul((size_t)T, (size_t)m->cfg.vocab_size, &n) || !(*logits = malloc(n * sizeof(float)))) {
            rc = ftk_err(err, "logits: out of memory for (%d, %d) logits", T, m->cfg.vocab_size);
        } else {
            lm_head_logits(m, rs->final_hidden, T, *logits);
        }
    }
    runstate_free(rs);
    return rc;
}
