// bench_step.c — one timed LoRA SFT step on a synthetic model (see bench_step.h).
#include "sft/bench_step.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/common.h"
#include "model/ops.h"
#include "model/parallel.h"

int bench_shape(const char *name, int min_positions, ModelConfig *cfg, char *err) {
    memset(cfg, 0, sizeof *cfg);
    cfg->dim = 768;
    cfg->n_layers = 12;
    cfg->n_heads = 12;
    cfg->n_kv_heads = 12;
    cfg->head_dim = 64;
    cfg->max_seq_len = min_positions > 1024 ? min_positions : 1024;
    cfg->norm_eps = 1e-5f;
    cfg->bos_id = cfg->eos_id = -1;
    if (strcmp(name, "gpt2") == 0) {
        cfg->arch = ARCH_GPT2;
        cfg->ffn_dim = 3072;
        cfg->vocab_size = 50257;
        cfg->tied_head = 1;
    } else if (strcmp(name, "llama") == 0) {
        cfg->arch = ARCH_LLAMA;
        cfg->ffn_dim = 2048;
        cfg->vocab_size = 32000;
        cfg->rope_theta = 10000.0f;
        cfg->tied_head = 0;
    } else {
        return ftk_err(err, "unknown benchmark shape '%s' (gpt2 or llama)", name);
    }
    return 0;
}

void bench_step_config_default(BenchStepConfig *c) {
    memset(c, 0, sizeof *c);
    c->batch = 4;
    c->seq = 256;
    c->lora_r = 8;
    c->lora_alpha = 16.0f;
    c->learning_rate = 1e-4;
}

void bench_step_free(BenchStep *bs) {
    adapters_free(&bs->adapters);
    adamw_free(&bs->opt);
    runstate_free(bs->rs);
    free(bs->tokens);
    free(bs->rows);
    free(bs->targets);
    free(bs->logp);
    memset(bs, 0, sizeof *bs);
}

int bench_step_init(BenchStep *bs, const Model *m, const BenchStepConfig *cfg, char *err) {
    memset(bs, 0, sizeof *bs);
    bs->m = m;
    bs->cfg = *cfg;
    const int B = cfg->batch, T = cfg->seq, V = m->cfg.vocab_size;
    if (B < 1 || T < 1) return ftk_err(err, "bench: batch %d x seq %d must be positive", B, T);
    if (T > m->cfg.max_seq_len) return ftk_err(err, "bench: seq %d exceeds the model's %d positions", T, m->cfg.max_seq_len);
    if (!(cfg->mask_fraction >= 0.0 && cfg->mask_fraction < 1.0))
        return ftk_err(err, "bench: mask fraction %g not in [0, 1)", cfg->mask_fraction);
    if ((size_t)B * (size_t)T > (size_t)1 << 24) return ftk_err(err, "bench: batch %d x seq %d too large", B, T);

    AdapterConfig ac;
    adapter_config_default(&ac);
    ac.r = cfg->lora_r;
    ac.alpha = cfg->lora_alpha;
    snprintf(ac.target_modules, sizeof ac.target_modules, "%s", cfg->target_modules);
    if (adapters_create(&bs->adapters, &ac, m, cfg->seed + 1, err)) goto fail;
    adapters_hooks(&bs->adapters, 1, &bs->hooks);
    if (adamw_init(&bs->opt, bs->adapters.n_params, err)) goto fail;
    if (runstate_create_train(&bs->rs, m, &bs->hooks, B, T, cfg->gradient_checkpointing ? RS_GRAD_CHECKPOINT : 0, err))
        goto fail;

    const size_t n = (size_t)B * T;
    bs->tokens = malloc(n * sizeof(int));
    bs->rows = malloc(n * sizeof(int));
    bs->targets = malloc(n * sizeof(int));
    bs->logp = malloc(n * sizeof(float));
    if (!bs->tokens || !bs->rows || !bs->targets || !bs->logp) {
        ftk_err(err, "bench: out of memory for %zu tokens", n);
        goto fail;
    }
    // Row b holds ids s_0 .. s_T: inputs s_0..s_{T-1}, targets s_1..s_T, the first n_masked of them -1.
    uint64_t rng = cfg->seed * 0x9E3779B97F4A7C15ull + 7;
    const int n_masked = (int)lround(cfg->mask_fraction * T);
    for (int b = 0; b < B; b++) {
        int prev = (int)(ftk_rand_u32(&rng) % (uint32_t)V);
        for (int t = 0; t < T; t++) {
            int next = (int)(ftk_rand_u32(&rng) % (uint32_t)V);
            bs->tokens[b * T + t] = prev;
            if (t >= n_masked) {
                bs->rows[bs->n_targets] = b * T + t;
                bs->targets[bs->n_targets] = next;
                bs->n_targets++;
            }
            prev = next;
        }
    }
    if (bs->n_targets == 0) {
        ftk_err(err, "bench: mask fraction %g leaves no targets", cfg->mask_fraction);
        goto fail;
    }
    bs->dropout_rng = cfg->seed + 3;
    return 0;
fail:
    bench_step_free(bs);
    return -1;
}

// dL/dlogp of the token-level mean loss -sum(logp) / n.
static float dlogp_mean(void *ctx, int i, float logp) {
    (void)i;
    (void)logp;
    return -1.0f / (float)*(const int *)ctx;
}

int bench_step_run(BenchStep *bs, BenchStepTimes *t, char *err) {
    const Model *m = bs->m;
    memset(t, 0, sizeof *t);
    par_sgemm_stats_enable(1);
    par_sgemm_stats_reset();
    const double t0 = ftk_now();
    adapters_zero_grad(&bs->adapters);
    if (model_forward(m, &bs->hooks, bs->rs, bs->tokens, bs->cfg.batch, bs->cfg.seq, NULL, NULL, &bs->dropout_rng,
                      err))
        return -1;
    const double t1 = ftk_now();
    if (lm_head_logprobs(m, bs->rs, bs->rows, bs->targets, bs->n_targets, bs->logp, NULL, dlogp_mean, &bs->n_targets,
                         err))
        return -1;
    const double t2 = ftk_now();
    if (model_backward(m, &bs->hooks, bs->rs, err)) return -1;
    const double t3 = ftk_now();
    adamw_step(&bs->opt, bs->adapters.params, bs->adapters.grads, bs->cfg.learning_rate);
    const double t4 = ftk_now();
    par_sgemm_stats(&t->gemm_s, &t->gemm_flops);
    par_sgemm_stats_enable(0);
    double s = 0.0;
    for (int i = 0; i < bs->n_targets; i++) s -= bs->logp[i];
    t->loss = s / bs->n_targets;
    t->forward_s = t1 - t0;
    t->head_s = t2 - t1;
    t->backward_s = t3 - t2;
    t->optim_s = t4 - t3;
    t->total_s = t4 - t0;
    if (!isfinite(t->loss)) return ftk_err(err, "bench: loss is %g", t->loss);
    return 0;
}

uint64_t bench_step_params_hash(const BenchStep *bs) {
    uint64_t h = 1469598103934665603ull;
    const unsigned char *p = (const unsigned char *)bs->adapters.params;
    for (size_t i = 0; i < bs->adapters.n_params * sizeof(float); i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

// ---------------------------------------------------------------------------------------------
// FLOP count: mirrors which products model_forward / model_backward / lm_head_logprobs run.

static const LoraHook *active_hook(const BenchStep *bs, int l, LoraSlot s) {
    const LoraHook *h = bs->hooks.hooks ? &bs->hooks.hooks[l * LSLOT_COUNT + s] : NULL;
    return h && h->r > 0 ? h : NULL;
}

static int slot_trainable(const BenchStep *bs, int l, LoraSlot s) {
    const LoraHook *h = active_hook(bs, l, s);
    return h && (h->dA || h->dB);
}

// Backward products of the hooks on `slots` of layer l (lora_backward), with or without input grads.
static double hooks_backward_flops(const BenchStep *bs, int l, const LoraSlot *slots, int n_slots, double n, int dx) {
    double f = 0.0;
    for (int i = 0; i < n_slots; i++) {
        const LoraHook *h = active_hook(bs, l, slots[i]);
        if (!h || (!dx && !h->dA && !h->dB)) continue;
        f += 2.0 * n * h->out * h->r;                                   // dy B
        if (h->dB) f += 2.0 * n * h->in * h->r + 2.0 * n * h->out * h->r;   // x A^T again, dB
        if (h->dA) f += 2.0 * n * h->r * h->in;                         // dA
        if (dx) f += 2.0 * n * h->r * h->in;                            // (dy B) A
    }
    return f;
}

void bench_step_flops(const BenchStep *bs, BenchFlops *f) {
    memset(f, 0, sizeof *f);
    const ModelConfig *c = &bs->m->cfg;
    const double B = bs->cfg.batch, n = B * bs->cfg.seq, nt = bs->n_targets;
    const int T = bs->cfg.seq;
    const double C = c->dim, F = c->ffn_dim, V = c->vocab_size, L = c->n_layers;
    const double qd = model_q_dim(c), qkv = model_qkv_dim(c);
    const double pre_w = c->arch == ARCH_LLAMA ? 2 * F : F;
    const double w_layer = qkv * C + C * qd + pre_w * C + F * C;   // wqkv, wo, w_gate_up / c_fc, w_down
    f->gemm_params = (size_t)(L * w_layer + V * C);
    for (int i = 0; i < bs->adapters.n_views; i++) {
        ViewKind k = bs->adapters.views[i].kind;
        if (k == VIEW_LORA_A || k == VIEW_LORA_B) f->lora_params += bs->adapters.views[i].numel;
    }
    f->model = 4.0 * f->gemm_params * n + 6.0 * f->lora_params * n + 12.0 * n * T * C * L;

    // forward
    f->linear = 2.0 * n * L * w_layer;
    // per (sequence, head): scores and P V over the causal tiles, 2 products of 2*hd*area each
    const double att_area = attention_score_area(T);
    f->attention = 4.0 * B * qd * att_area * L;
    for (int l = 0; l < c->n_layers; l++)
        for (int s = 0; s < LSLOT_COUNT; s++) {
            const LoraHook *h = active_hook(bs, l, (LoraSlot)s);
            if (h) f->lora += 2.0 * n * ((double)h->in + h->out) * h->r;
        }
    f->head = 4.0 * nt * V * C;

    // backward: the LayerNeeds logic of model_backward (no soft prompt here)
    static const LoraSlot QKV[] = {LSLOT_Q, LSLOT_K, LSLOT_V, LSLOT_QKV}, O[] = {LSLOT_O};
    static const LoraSlot GU[] = {LSLOT_GATE, LSLOT_UP}, DOWN[] = {LSLOT_DOWN};
    int below_of[4096], below = 0;
    const int nl = c->n_layers < 4096 ? c->n_layers : 4096;
    for (int l = 0; l < nl; l++) {
        below_of[l] = below;
        for (int s = 0; s < LSLOT_COUNT; s++) below = below || slot_trainable(bs, l, (LoraSlot)s);
    }
    for (int l = nl - 1; l >= 0; l--) {
        const int qkv_train = slot_trainable(bs, l, LSLOT_Q) || slot_trainable(bs, l, LSLOT_K) ||
                              slot_trainable(bs, l, LSLOT_V) || slot_trainable(bs, l, LSLOT_QKV);
        const int attn_train = qkv_train || slot_trainable(bs, l, LSLOT_O);
        const int gu_train = slot_trainable(bs, l, LSLOT_GATE) || slot_trainable(bs, l, LSLOT_UP);
        const int mlp_train = gu_train || slot_trainable(bs, l, LSLOT_DOWN);
        if (!below_of[l] && !attn_train && !mlp_train) break;
        if (bs->cfg.gradient_checkpointing) {   // backward first recomputes the layer, all but its down projection
            f->linear += 2.0 * n * (qkv * C + C * qd + pre_w * C);
            f->attention += 4.0 * B * qd * att_area;
            for (int s = 0; s < LSLOT_COUNT; s++) {
                const LoraHook *h = s == LSLOT_DOWN ? NULL : active_hook(bs, l, (LoraSlot)s);
                if (h) f->lora += 2.0 * n * ((double)h->in + h->out) * h->r;
            }
        }
        const int into_attn = below_of[l] || attn_train, need_dact = into_attn || gu_train;
        if (need_dact) f->linear += 2.0 * n * C * F;   // down: (n, C) @ (C, F)
        f->lora += hooks_backward_flops(bs, l, DOWN, 1, n, need_dact);
        if (need_dact) {
            if (into_attn) f->linear += 2.0 * n * pre_w * C;
            f->lora += hooks_backward_flops(bs, l, GU, 2, n, into_attn);
        }
        if (!into_attn) continue;
        const int need_dqkv = below_of[l] || qkv_train;
        if (need_dqkv) f->linear += 2.0 * n * C * qd;
        f->lora += hooks_backward_flops(bs, l, O, 1, n, need_dqkv);
        if (!need_dqkv) continue;
        f->attention += 10.0 * B * qd * att_area;   // scores recomputed, dP, dV, dQ, dK
        if (below_of[l]) f->linear += 2.0 * n * qkv * C;
        f->lora += hooks_backward_flops(bs, l, QKV, 4, n, below_of[l]);
    }
    f->executed = f->linear + f->attention + f->head + f->lora;
}
