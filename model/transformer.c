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
#include "model/parallel.h"
#include "model/runstate.h"
#include "model/weights_bf16.h"

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

// Floats in one slice of a per-layer activation (mean and rstd of a norm share the STATS kinds).
static size_t act_slice_floats(const RunState *rs, LayerAct a) {
    const ModelConfig *c = &rs->cfg;
    const size_t N = (size_t)rs->B_max * rs->T_max, C = c->dim, T = rs->T_max;
    switch (a) {
    case ACT_XMID: case ACT_H1: case ACT_H2: return N * C;
    case ACT_STATS1: case ACT_STATS2: return N;
    case ACT_QKV: return N * (size_t)rs->qkv;
    case ACT_LSE: return rs->training ? (size_t)rs->B_max * c->n_heads * T : 1;   // softmax row log-sum-exps
    case ACT_ATT: return N * (size_t)rs->qd;
    case ACT_PRE: return N * (size_t)rs->pre_w;
    case ACT_ACT: return N * (size_t)c->ffn_dim;
    default: return 0;
    }
}

// Slices carved for activation a: the kept ones plus one shared scratch when some layer keeps none.
static size_t act_slices(const RunState *rs, LayerAct a) {
    return (size_t)rs->n_kept[a] + (rs->n_kept[a] < rs->cfg.n_layers ? 1 : 0);
}

static void layout_arena(RunState *rs, Carver *cv, size_t lora_row_floats) {
    const ModelConfig *c = &rs->cfg;
    const size_t N = (size_t)rs->B_max * rs->T_max, C = c->dim, F = c->ffn_dim, V = c->vocab_size;
    const size_t L = c->n_layers;
    int ov = 0;
    size_t slices[ACT_COUNT], per[ACT_COUNT];
    for (int a = 0; a < ACT_COUNT; a++) {
        slices[a] = act_slices(rs, (LayerAct)a);
        per[a] = act_slice_floats(rs, (LayerAct)a);
    }
    rs->positions = carve(cv, N, sizeof(int));
    rs->seg = carve(cv, N, sizeof(int));
    rs->dropout_state = carve(cv, L * LSLOT_COUNT, sizeof(uint64_t));
    rs->layer_rng = carve(cv, L, sizeof(uint64_t));
    rs->needs = carve(cv, L, sizeof(LayerNeeds));
    rs->act_slice = carve(cv, L * ACT_COUNT, sizeof(int));
    rs->rope_cos = carve(cv, N * (size_t)(c->head_dim / 2), sizeof(float));
    rs->rope_sin = carve(cv, N * (size_t)(c->head_dim / 2), sizeof(float));
    rs->x = carve(cv, mul3(rs->training ? L + 1 : 1, N, C, &ov), sizeof(float));
    rs->xmid = rs->training ? carve(cv, mul3(slices[ACT_XMID], per[ACT_XMID], 1, &ov), sizeof(float)) : rs->x;
    rs->h1 = carve(cv, mul3(slices[ACT_H1], per[ACT_H1], 1, &ov), sizeof(float));
    rs->mean1 = carve(cv, mul3(slices[ACT_STATS1], per[ACT_STATS1], 1, &ov), sizeof(float));
    rs->rstd1 = carve(cv, mul3(slices[ACT_STATS1], per[ACT_STATS1], 1, &ov), sizeof(float));
    rs->qkvb = carve(cv, mul3(slices[ACT_QKV], per[ACT_QKV], 1, &ov), sizeof(float));
    rs->att_lse = carve(cv, mul3(slices[ACT_LSE], per[ACT_LSE], 1, &ov), sizeof(float));
    rs->att = carve(cv, mul3(slices[ACT_ATT], per[ACT_ATT], 1, &ov), sizeof(float));
    rs->branch = carve(cv, N * C, sizeof(float));
    rs->h2 = carve(cv, mul3(slices[ACT_H2], per[ACT_H2], 1, &ov), sizeof(float));
    rs->mean2 = carve(cv, mul3(slices[ACT_STATS2], per[ACT_STATS2], 1, &ov), sizeof(float));
    rs->rstd2 = carve(cv, mul3(slices[ACT_STATS2], per[ACT_STATS2], 1, &ov), sizeof(float));
    rs->ffn_pre = carve(cv, mul3(slices[ACT_PRE], per[ACT_PRE], 1, &ov), sizeof(float));
    rs->ffn_act = carve(cv, mul3(slices[ACT_ACT], per[ACT_ACT], 1, &ov), sizeof(float));
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
    }
    rs->lora_scratch_n = mul3(N, lora_row_floats, 1, &ov);
    rs->lora_scratch = carve(cv, rs->lora_scratch_n, sizeof(float));
    rs->head_h = carve(cv, (size_t)HEAD_CHUNK * C, sizeof(float));
    rs->head_logits = carve(cv, mul3(HEAD_CHUNK, V, 1, &ov), sizeof(float));
    rs->head_dh = carve(cv, (size_t)HEAD_CHUNK * C, sizeof(float));
    if (ov) cv->overflow = 1;
}

static void plan_needs(const ModelConfig *c, const ModelAdapters *ad, LayerNeeds *needs);
static void backward_reads(const ModelAdapters *ad, int l, const LayerNeeds *nd, unsigned char reads[ACT_COUNT]);

// keep: (n_layers * ACT_COUNT) 1 = layer l keeps activation a for backward.
static int runstate_build(RunState **out, const Model *m, int B, int T_max, int training, int checkpointing,
                          const unsigned char *keep, size_t lora_row_floats, char *err) {
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
    rs->checkpointing = checkpointing;
    rs->qd = model_q_dim(c);
    rs->kvd = model_kv_dim(c);
    rs->qkv = model_qkv_dim(c);
    rs->pre_w = c->arch == ARCH_LLAMA ? 2 * c->ffn_dim : c->ffn_dim;
    for (int l = 0; l < c->n_layers; l++)
        for (int a = 0; a < ACT_COUNT; a++) rs->n_kept[a] += training && keep[l * ACT_COUNT + a];
    Carver cv = {NULL, 0, 0};
    layout_arena(rs, &cv, lora_row_floats);
    if (cv.overflow) {
        free(rs);
        return ftk_err(err, "runstate: activation arena for B=%d T=%d overflows", B, T_max);
    }
    rs->bytes = cv.off;
    rs->mem = ftk_alloc_big(cv.off);   // zero-filled, huge pages: every product streams it
    if (!rs->mem) {
        free(rs);
        return ftk_err(err, "runstate: out of memory for a %zu-byte activation arena (B=%d T=%d)", cv.off, B, T_max);
    }
    Carver real = {rs->mem, 0, 0};
    layout_arena(rs, &real, lora_row_floats);
    for (int a = 0; a < ACT_COUNT; a++) {
        int k = 0;
        for (int l = 0; l < c->n_layers; l++)
            rs->act_slice[l * ACT_COUNT + a] = training && keep[l * ACT_COUNT + a] ? k++ : rs->n_kept[a];
    }
    *out = rs;
    return 0;
}

int runstate_create(RunState **out, const Model *m, int B, int T_max, int training, char *err) {
    *out = NULL;
    const size_t n = (size_t)m->cfg.n_layers * ACT_COUNT;
    unsigned char *keep = malloc(n ? n : 1);
    if (!keep) return ftk_err(err, "runstate: out of memory");
    memset(keep, 1, n);
    int in_max = m->cfg.dim > m->cfg.ffn_dim ? m->cfg.dim : m->cfg.ffn_dim;   // widest input a LoRA can sit on
    if (model_q_dim(&m->cfg) > in_max) in_max = model_q_dim(&m->cfg);
    int rc = runstate_build(out, m, B, T_max, training, 0, keep, lora_scratch_floats(in_max, LORA_SCRATCH_RANK), err);
    free(keep);
    return rc;
}

int runstate_create_train(RunState **out, const Model *m, const ModelAdapters *ad, int B, int T_max, int flags,
                          char *err) {
    *out = NULL;
    if (model_adapters_validate(m, ad, err)) return -1;
    const ModelConfig *c = &m->cfg;
    const size_t n = (size_t)c->n_layers * ACT_COUNT;
    const int use_ad = ad && !ad->disabled;
    unsigned char *keep = calloc(n ? n : 1, 1);
    LayerNeeds *needs = calloc(c->n_layers ? (size_t)c->n_layers : 1, sizeof *needs);
    if (!keep || !needs) {
        free(keep);
        free(needs);
        return ftk_err(err, "runstate: out of memory");
    }
    const int checkpointing = (flags & RS_GRAD_CHECKPOINT) != 0;
    if (!checkpointing) {
        plan_needs(c, use_ad ? ad : NULL, needs);
        for (int l = 0; l < c->n_layers; l++) backward_reads(use_ad ? ad : NULL, l, &needs[l], keep + (size_t)l * ACT_COUNT);
    }
    size_t row = lora_scratch_floats(1, 1);   // LoRA scratch per row for the widest adapter given
    if (use_ad && ad->hooks)
        for (int i = 0; i < c->n_layers * LSLOT_COUNT; i++) {
            const LoraHook *h = &ad->hooks[i];
            if (h->r > 0 && lora_scratch_floats(h->in, h->r) > row) row = lora_scratch_floats(h->in, h->r);
        }
    int rc = runstate_build(out, m, B, T_max, 1, checkpointing, keep, row, err);
    free(keep);
    free(needs);
    return rc;
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

// Where layer l's activations live: its kept slices, or the shared scratch slices (every one when
// scratch_only: the recomputation of gradient checkpointing, or an inference run state).
typedef struct {
    const float *x_in;
    float *x_mid, *x_out;
    float *h1, *mean1, *rstd1, *qkv, *lse, *att, *h2, *mean2, *rstd2, *pre, *act;
} LayerActs;

static float *act_at(const RunState *rs, float *base, LayerAct a, int l, int scratch_only) {
    const size_t k = rs->training && !scratch_only ? (size_t)rs->act_slice[l * ACT_COUNT + a] : (size_t)rs->n_kept[a];
    return base + k * act_slice_floats(rs, a);
}

static void layer_acts(const RunState *rs, int l, int scratch_only, LayerActs *a) {
    const size_t NC = (size_t)rs->B_max * rs->T_max * rs->cfg.dim;
    float *x_in = rs->training ? rs->x + (size_t)l * NC : rs->x;
    a->x_in = x_in;
    a->x_mid = rs->training ? act_at(rs, rs->xmid, ACT_XMID, l, scratch_only) : x_in;
    a->x_out = rs->training ? rs->x + (size_t)(l + 1) * NC : x_in;
    a->h1 = act_at(rs, rs->h1, ACT_H1, l, scratch_only);
    a->mean1 = act_at(rs, rs->mean1, ACT_STATS1, l, scratch_only);
    a->rstd1 = act_at(rs, rs->rstd1, ACT_STATS1, l, scratch_only);
    a->qkv = act_at(rs, rs->qkvb, ACT_QKV, l, scratch_only);
    a->lse = act_at(rs, rs->att_lse, ACT_LSE, l, scratch_only);
    a->att = act_at(rs, rs->att, ACT_ATT, l, scratch_only);
    a->h2 = act_at(rs, rs->h2, ACT_H2, l, scratch_only);
    a->mean2 = act_at(rs, rs->mean2, ACT_STATS2, l, scratch_only);
    a->rstd2 = act_at(rs, rs->rstd2, ACT_STATS2, l, scratch_only);
    a->pre = act_at(rs, rs->ffn_pre, ACT_PRE, l, scratch_only);
    a->act = act_at(rs, rs->ffn_act, ACT_ACT, l, scratch_only);
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
// what backward reads (the activation plan of a training arena)

static int any_hook(const ModelAdapters *ad, int l, const LoraSlot *slots, int n, int trainable_only) {
    for (int i = 0; i < n; i++)
        if (trainable_only ? hook_trainable(ad, l, slots[i]) : hook_at(ad, l, slots[i]) != NULL) return 1;
    return 0;
}

// Which gradients backward computes in each layer for these adapters (ad may be NULL).
static void plan_needs(const ModelConfig *c, const ModelAdapters *ad, LayerNeeds *needs) {
    int below = ad && ad->n_virtual > 0 && ad->dprompt != NULL;
    for (int l = 0; l < c->n_layers; l++) {
        LayerNeeds *nd = &needs[l];
        nd->below = below;
        nd->qkv_train = any_hook(ad, l, QKV_SLOTS, 4, 1);
        nd->attn_train = nd->qkv_train || hook_trainable(ad, l, LSLOT_O);
        nd->gate_up_train = any_hook(ad, l, GATE_UP_SLOTS, 2, 1);
        nd->mlp_train = nd->gate_up_train || hook_trainable(ad, l, LSLOT_DOWN);
        below = below || nd->attn_train || nd->mlp_train;
    }
}

static int layer_active(const LayerNeeds *nd) { return nd->below || nd->attn_train || nd->mlp_train; }

// The activations layer_backward reads in layer l (x, the layer input, is always kept). A frozen
// hook is read when the input gradient flows through it.
static void backward_reads(const ModelAdapters *ad, int l, const LayerNeeds *nd, unsigned char reads[ACT_COUNT]) {
    memset(reads, 0, ACT_COUNT);
    if (!layer_active(nd)) return;
    const int into_attn = nd->below || nd->attn_train;
    const int need_dact = into_attn || nd->gate_up_train;
    const int need_dqkv = into_attn && (nd->below || nd->qkv_train);
    reads[ACT_ACT] = hook_at(ad, l, LSLOT_DOWN) && (need_dact || hook_trainable(ad, l, LSLOT_DOWN));
    reads[ACT_PRE] = need_dact;
    reads[ACT_H2] = need_dact && (into_attn ? any_hook(ad, l, GATE_UP_SLOTS, 2, 0) : nd->gate_up_train);
    reads[ACT_XMID] = reads[ACT_STATS2] = need_dact && into_attn;
    reads[ACT_ATT] = into_attn && hook_at(ad, l, LSLOT_O) && (need_dqkv || hook_trainable(ad, l, LSLOT_O));
    reads[ACT_QKV] = reads[ACT_LSE] = need_dqkv;
    reads[ACT_H1] = need_dqkv && (nd->below ? any_hook(ad, l, QKV_SLOTS, 4, 0) : nd->qkv_train);
    reads[ACT_STATS1] = need_dqkv && nd->below;
}

static const char *act_name(LayerAct a) {
    static const char *names[ACT_COUNT] = {"residual after attention", "attention norm output", "attention norm statistics",
                                           "q/k/v", "attention probabilities", "attention output", "MLP norm output",
                                           "MLP norm statistics", "MLP pre-activation", "MLP activation"};
    return names[a];
}

// Fails when backward with these adapters would read an activation this training arena computes
// into scratch (it was planned for other adapters).
static int check_plan(RunState *rs, const Model *m, const ModelAdapters *ad, const char *what, char *err) {
    if (!rs->training || rs->checkpointing || !ad || ad->disabled) return 0;
    plan_needs(&m->cfg, ad, rs->needs);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        unsigned char reads[ACT_COUNT];
        backward_reads(ad, l, &rs->needs[l], reads);
        for (int a = 0; a < ACT_COUNT; a++)
            if (reads[a] && rs->act_slice[l * ACT_COUNT + a] == rs->n_kept[a])
                return ftk_err(err, "%s: these adapters need layer %d's %s in backward, which the run state (planned "
                               "for other adapters) does not keep; create it with runstate_create_train for them",
                               what, l, act_name((LayerAct)a));
    }
    return 0;
}

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

// The fp32 weights of a layer's linears. With a bf16 base each call expands that weight into the
// model's one scratch, so use the result before asking for the next weight.
static const float *weight_qkv(const Model *m, const LayerWeights *w) {
    return model_linear_f32(m, w->wqkv, w->wqkv_bf16, (size_t)model_qkv_dim(&m->cfg) * m->cfg.dim);
}
static const float *weight_o(const Model *m, const LayerWeights *w) {
    return model_linear_f32(m, w->wo, w->wo_bf16, (size_t)m->cfg.dim * model_q_dim(&m->cfg));
}
static const float *weight_pre(const Model *m, const LayerWeights *w) {   // llama [gate; up], gpt2 c_fc
    if (m->cfg.arch == ARCH_LLAMA)
        return model_linear_f32(m, w->w_gate_up, w->w_gate_up_bf16, (size_t)2 * m->cfg.ffn_dim * m->cfg.dim);
    return model_linear_f32(m, w->w_up, w->w_up_bf16, (size_t)m->cfg.ffn_dim * m->cfg.dim);
}
static const float *weight_down(const Model *m, const LayerWeights *w) {
    return model_linear_f32(m, w->w_down, w->w_down_bf16, (size_t)m->cfg.dim * m->cfg.ffn_dim);
}

static AttnShape attn_shape(const RunState *rs) {
    AttnShape s = {rs->B, rs->T, rs->cfg.n_heads, rs->cfg.n_kv_heads, rs->cfg.head_dim, rs->nv,
                   rs->has_seg ? rs->seg : NULL};
    return s;
}

// Forward of layer l into the activations acts. recompute: gradient checkpointing's second pass in
// backward; it stops once the MLP activation exists (the down projection's output is not read).
static void layer_forward(const Model *m, const ModelAdapters *ad, RunState *rs, int l, const LayerActs *acts,
                          uint64_t *rng, int recompute) {
    const ModelConfig *c = &m->cfg;
    const LayerWeights *w = &m->w.layers[l];
    const int N = rs->B * rs->T, C = c->dim, F = c->ffn_dim, llama = c->arch == ARCH_LLAMA;
    const float *x_in = acts->x_in;
    float *x_mid = acts->x_mid, *x_out = acts->x_out;
    float *h1 = acts->h1, *mean1 = acts->mean1, *rstd1 = acts->rstd1, *qkv = acts->qkv, *att = acts->att;
    float *lse = acts->lse, *h2 = acts->h2, *mean2 = acts->mean2, *rstd2 = acts->rstd2;
    float *pre = acts->pre, *act = acts->act;
    if (rng) rs->layer_rng[l] = *rng;

    // attention block
    norm_forward(rs, h1, mean1, rstd1, x_in, w->attn_norm_w, w->attn_norm_b, N);
    linear_forward(qkv, h1, weight_qkv(m, w), w->bqkv, N, C, rs->qkv);   // (N, C) @ (C, qkv)
    apply_hooks(rs, ad, l, QKV_SLOTS, 4, qkv, rs->qkv, h1, N, rng);
    if (llama) {
        rope_forward(qkv, rs->qkv, N, c->n_heads, c->head_dim, rs->rope_cos, rs->rope_sin);
        rope_forward(qkv + rs->qd, rs->qkv, N, c->n_kv_heads, c->head_dim, rs->rope_cos, rs->rope_sin);
    }
    AttnShape shape = attn_shape(rs);
    attention_forward(att, rs->training ? lse : NULL, qkv, &shape);
    linear_forward(rs->branch, att, weight_o(m, w), w->bo, N, rs->qd, C);   // (N, q_dim) @ (q_dim, C)
    apply_hooks(rs, ad, l, O_SLOT, 1, rs->branch, C, att, N, rng);
    residual_forward(x_mid, x_in, rs->branch, (size_t)N * C);

    // MLP block
    norm_forward(rs, h2, mean2, rstd2, x_mid, w->ffn_norm_w, w->ffn_norm_b, N);
    if (llama) {
        linear_forward(pre, h2, weight_pre(m, w), NULL, N, C, 2 * F);   // (N, C) @ (C, 2F)
        apply_hooks(rs, ad, l, GATE_UP_SLOTS, 2, pre, 2 * F, h2, N, rng);
        swiglu_forward(act, pre, N, F);
    } else {
        linear_forward(pre, h2, weight_pre(m, w), w->b_up, N, C, F);   // (N, C) @ (C, F)
        apply_hooks(rs, ad, l, GATE_UP_SLOTS, 2, pre, F, h2, N, rng);
        gelu_forward(act, pre, (size_t)N * F);
    }
    if (recompute) return;
    linear_forward(rs->branch, act, weight_down(m, w), w->b_down, N, F, C);   // (N, F) @ (F, C)
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
    if (check_plan(rs, m, use_ad ? ad : NULL, "forward", err)) return -1;
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

    if (attention_reserve(T))
        return ftk_err(err, "forward: out of memory for the attention tiles (%d threads, %d positions)", par_threads(),
                       T);
    embedding_forward(rs->x, tokens, m->w.tok_emb, m->w.tok_emb_bf16, nv ? ad->prompt : NULL, nv,
                      c->arch == ARCH_GPT2 ? m->w.pos_emb : NULL, rs->positions, B, Tt, c->dim);
    if (c->arch == ARCH_LLAMA) rope_tables(rs->rope_cos, rs->rope_sin, rs->positions, N, c->head_dim, c->rope_theta);
    for (int l = 0; l < c->n_layers; l++) {
        LayerActs acts;
        layer_acts(rs, l, rs->checkpointing, &acts);
        layer_forward(m, use_ad ? ad : NULL, rs, l, &acts, dropout_rng, 0);
    }
    const float *x_last = rs->training ? rs->x + (size_t)c->n_layers * rs->B_max * rs->T_max * c->dim : rs->x;
    norm_forward(rs, rs->final_hidden, rs->final_mean, rs->final_rstd, x_last, m->w.out_norm_w, m->w.out_norm_b, N);
    if (rs->training) memset(rs->d_final_hidden, 0, (size_t)N * c->dim * sizeof(float));
    return 0;
}

// ---------------------------------------------------------------------------------------------
// backward

// Backward of layer l from its activations acts: on entry rs->dx = dL/d(x_out); on exit dL/d(x_in)
// (when anything below needs it). backward_reads() lists what this reads; keep the two in step.
static void layer_backward(const Model *m, const ModelAdapters *ad, RunState *rs, int l, const LayerNeeds *nd,
                           const LayerActs *acts) {
    const ModelConfig *c = &m->cfg;
    const LayerWeights *w = &m->w.layers[l];
    const int N = rs->B * rs->T, C = c->dim, F = c->ffn_dim, llama = c->arch == ARCH_LLAMA;
    const float *x_in = acts->x_in, *x_mid = acts->x_mid, *h1 = acts->h1, *h2 = acts->h2;
    const float *qkv = acts->qkv, *att = acts->att, *lse = acts->lse, *pre = acts->pre, *act = acts->act;
    float *dx = rs->dx;

    // MLP block. The residual hands dx to the branch output unchanged (x_out = x_mid + branch).
    const int into_attn = nd->below || nd->attn_train;   // is dL/d(x_mid) needed beyond the residual?
    const int need_dact = into_attn || nd->gate_up_train;
    if (need_dact) linear_backward(rs->dffn_act, dx, weight_down(m, w), N, F, C, 0.0f);   // (N, C) @ (C, F)
    hooks_backward(rs, ad, l, DOWN_SLOT, 1, dx, C, act, N, need_dact ? rs->dffn_act : NULL);
    if (need_dact) {
        if (llama) swiglu_backward(rs->dffn_pre, rs->dffn_act, pre, N, F);
        else gelu_backward(rs->dffn_pre, rs->dffn_act, pre, (size_t)N * F);
        if (into_attn)
            linear_backward(rs->dh, rs->dffn_pre, weight_pre(m, w), N, C, rs->pre_w, 0.0f);  // (N, pre_w) @ (pre_w, C)
        hooks_backward(rs, ad, l, GATE_UP_SLOTS, 2, rs->dffn_pre, rs->pre_w, h2, N, into_attn ? rs->dh : NULL);
        if (into_attn)
            norm_backward(rs, dx, rs->dh, x_mid, w->ffn_norm_w, acts->mean2, acts->rstd2, N);
    }
    if (!into_attn) return;

    // attention block; dx now holds dL/d(x_mid) = dL/d(attention branch output)
    const int need_dqkv = nd->below || nd->qkv_train;
    if (need_dqkv) linear_backward(rs->datt, dx, weight_o(m, w), N, rs->qd, C, 0.0f);   // (N, C) @ (C, q_dim)
    hooks_backward(rs, ad, l, O_SLOT, 1, dx, C, att, N, need_dqkv ? rs->datt : NULL);
    if (!need_dqkv) return;
    AttnShape shape = attn_shape(rs);
    attention_backward(rs->dqkv, rs->datt, qkv, lse, &shape);
    if (llama) {
        rope_backward(rs->dqkv, rs->qkv, N, c->n_heads, c->head_dim, rs->rope_cos, rs->rope_sin);
        rope_backward(rs->dqkv + rs->qd, rs->qkv, N, c->n_kv_heads, c->head_dim, rs->rope_cos, rs->rope_sin);
    }
    if (nd->below) linear_backward(rs->dh, rs->dqkv, weight_qkv(m, w), N, C, rs->qkv, 0.0f);   // (N, qkv) @ (qkv, C)
    hooks_backward(rs, ad, l, QKV_SLOTS, 4, rs->dqkv, rs->qkv, h1, N, nd->below ? rs->dh : NULL);
    if (nd->below)
        norm_backward(rs, dx, rs->dh, x_in, w->attn_norm_w, acts->mean1, acts->rstd1, N);
}

int model_backward(const Model *m, const ModelAdapters *ad, RunState *rs, char *err) {
    const ModelConfig *c = &m->cfg;
    if (!rs->training) return ftk_err(err, "backward: the run state was created for inference");
    if (rs->B == 0) return ftk_err(err, "backward: no forward to differentiate");
    if (!ad || ad->disabled) return 0;   // nothing trainable
    if (check_plan(rs, m, ad, "backward", err)) return -1;
    const int prompt_grad = rs->nv > 0 && ad->dprompt != NULL;
    LayerNeeds *needs = rs->needs;
    plan_needs(c, ad, needs);
    int below = prompt_grad;
    for (int l = 0; l < c->n_layers; l++) below = below || needs[l].attn_train || needs[l].mlp_train;
    if (!below) return 0;
    if (attention_reserve(rs->T))
        return ftk_err(err, "backward: out of memory for the attention tiles (%d threads, %d positions)", par_threads(),
                       rs->T);
    const int N = rs->B * rs->T;
    const size_t NC = (size_t)rs->B_max * rs->T_max * c->dim;
    memset(rs->dx, 0, (size_t)N * c->dim * sizeof(float));
    norm_backward(rs, rs->dx, rs->d_final_hidden, rs->x + (size_t)c->n_layers * NC, m->w.out_norm_w, rs->final_mean,
                  rs->final_rstd, N);
    for (int l = c->n_layers - 1; l >= 0; l--) {
        const LayerNeeds *nd = &needs[l];
        if (!layer_active(nd)) break;   // nothing at or below l learns
        LayerActs acts;
        if (rs->checkpointing) {
            // Recompute this layer's activations from its stored input, with the dropout masks its
            // forward drew (the rng state it began with), into the scratch slices.
            layer_acts(rs, l, 1, &acts);
            uint64_t rng = rs->layer_rng[l];
            layer_forward(m, ad, rs, l, &acts, rs->used_dropout ? &rng : NULL, 1);
        } else {
            layer_acts(rs, l, 0, &acts);
        }
        layer_backward(m, ad, rs, l, nd, &acts);
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
