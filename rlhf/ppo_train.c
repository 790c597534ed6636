// ppo_train.c — see ppo_train.h.
#include "rlhf/ppo_train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "datasets/batch.h"
#include "datasets/shuffle.h"
#include "lora/peft.h"
#include "model/common.h"
#include "model/tokenizer.h"
#include "model/transformer.h"
#include "rlhf/masked.h"
#include "rlhf/ppo_loss.h"
#include "rlhf/ppo_math.h"
#include "rlhf/reward_model.h"
#include "rlhf/score_head.h"
#include "sft/checkpoint.h"
#include "sft/metrics.h"
#include "sft/optim.h"
#include "sft/trainer_core.h"

void ppo_config_default(PpoConfig *c) {
    memset(c, 0, sizeof *c);
    train_config_default(&c->train);
    c->train.logging_steps = 1;
    c->gen = gen_params_default();
    c->gen.max_new_tokens = 53;     // TRL v0.12+ response_length
    c->gen.temperature = 0.7f;      // TRL v0.12+
    c->num_mini_batches = 1;
    c->ppo_epochs = 4;
    c->gamma = 1.0f;
    c->lam = 0.95f;
    c->cliprange = 0.2f;
    c->cliprange_value = 0.2f;
    c->vf_coef = 0.1f;
    c->kl_coef = 0.05;
    c->kl_horizon = 10000.0;
    c->kl_estimator = KL_K1;
}

// ------------------------------------------------------------------ reward callbacks

int ppo_score_rule(void *ctx, const PpoSample *samples, int n, float *scores, char *err) {
    const PpoRuleScorer *s = ctx;
    for (int i = 0; i < n; i++) {
        const PpoSample *x = &samples[i];
        int prev = x->prompt_len > 0 ? x->prompt[x->prompt_len - 1] : -1;
        if (reward_rule_score(&s->rule, s->tok, prev, x->response, x->response_len, &scores[i], err)) return -1;
    }
    return 0;
}

static int is_stop_token(const Model *m, int id) {
    return (m->cfg.eos_id >= 0 && id == m->cfg.eos_id) || (m->cfg.bos_id >= 0 && id == m->cfg.bos_id);
}

// The token sequence the RM scores for one sample (malloc'ed into *out, length *len).
static int rm_sequence(const PpoRmScorer *s, const PpoSample *x, int **out, int *len, char *err) {
    const Model *pm = s->policy_model, *rm = s->rm_model;
    int resp_len = x->response_len;
    if (s->end_with_eos && resp_len > 0 && is_stop_token(pm, x->response[resp_len - 1])) resp_len--;
    const int eos = s->end_with_eos ? rm->cfg.eos_id : -1;
    int *ids = NULL, n = 0;
    if (rm == pm) {
        ids = malloc(((size_t)x->prompt_len + resp_len + 1) * sizeof(int));
        if (!ids) return ftk_err(err, "reward model scoring: out of memory");
        memcpy(ids, x->prompt, (size_t)x->prompt_len * sizeof(int));
        memcpy(ids + x->prompt_len, x->response, (size_t)resp_len * sizeof(int));
        n = x->prompt_len + resp_len;
    } else {
        // another base: the text, re-encoded with the RM's tokenizer
        if (!pm->tok || !rm->tok) return ftk_err(err, "reward model scoring: a model has no tokenizer to re-encode with");
        int *all = malloc(((size_t)x->prompt_len + resp_len + 1) * sizeof(int));
        if (!all) return ftk_err(err, "reward model scoring: out of memory");
        memcpy(all, x->prompt, (size_t)x->prompt_len * sizeof(int));
        memcpy(all + x->prompt_len, x->response, (size_t)resp_len * sizeof(int));
        char *text = tokenizer_decode(pm->tok, all, x->prompt_len + resp_len);
        free(all);
        if (!text) return ftk_err(err, "reward model scoring: out of memory");
        int *enc = NULL, n_enc = 0;
        int rc = tokenizer_encode_ex(rm->tok, text, strlen(text), -1, 0, 0, &enc, &n_enc, err);
        free(text);
        if (rc) return -1;
        ids = realloc(enc, ((size_t)n_enc + 1) * sizeof(int));
        if (!ids) {
            free(enc);
            return ftk_err(err, "reward model scoring: out of memory");
        }
        n = n_enc;
    }
    if (eos >= 0) ids[n++] = eos;
    // Too long for the RM's context: drop prompt tokens after the first (BOS).
    const int nv = s->hooks && !s->hooks->disabled ? s->hooks->n_virtual : 0;
    const int cap = rm->cfg.max_seq_len - nv;
    if (n > cap && cap >= 2) {
        int drop = n - cap;
        memmove(ids + 1, ids + 1 + drop, (size_t)(n - 1 - drop) * sizeof(int));
        n = cap;
    }
    *out = ids;
    *len = n;
    return 0;
}

int ppo_score_rm(void *ctx, const PpoSample *samples, int n, float *scores, char *err) {
    const PpoRmScorer *s = ctx;
    int **seqs = calloc((size_t)n, sizeof(int *));
    int *lens = calloc((size_t)n, sizeof(int));
    int rc = -1;
    if (!seqs || !lens) {
        ftk_err(err, "reward model scoring: out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++)
        if (rm_sequence(s, &samples[i], &seqs[i], &lens[i], err)) goto done;
    rc = rm_score_sequences(s->rm_model, s->hooks, s->score_w, (const int *const *)seqs, lens, n, scores, err);
done:
    if (seqs)
        for (int i = 0; i < n; i++) free(seqs[i]);
    free(seqs);
    free(lens);
    return rc;
}

// ------------------------------------------------------------------ rollout buffers

int ppo_rollout_alloc(PpoRollout *r, int B, int P_max, int R, char *err) {
    memset(r, 0, sizeof *r);
    if (B < 1 || P_max < 1 || R < 1) return ftk_err(err, "ppo rollout: bad shape B=%d P=%d R=%d", B, P_max, R);
    size_t BP, BR;
    if (ftk_mul((size_t)B, (size_t)P_max, &BP) || ftk_mul((size_t)B, (size_t)R, &BR))
        return ftk_err(err, "ppo rollout: size overflow");
    r->B = B;
    r->R = R;
    r->P_max = P_max;
    r->prompt_ids = calloc(BP, sizeof(int));
    r->prompt_lens = calloc((size_t)B, sizeof(int));
    r->resp = calloc(BR, sizeof(int));
    r->resp_lens = calloc((size_t)B, sizeof(int));
    r->stopped = calloc((size_t)B, sizeof(int));
    r->mask = calloc(BR, 1);
    float **f[] = {&r->logp, &r->ref_logp, &r->values, &r->entropy, &r->kl, &r->rewards, &r->advantages, &r->returns};
    int ok = r->prompt_ids && r->prompt_lens && r->resp && r->resp_lens && r->stopped && r->mask;
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        *f[i] = calloc(BR, sizeof(float));
        ok = ok && *f[i];
    }
    r->scores = calloc((size_t)B, sizeof(float));
    if (!ok || !r->scores) {
        ppo_rollout_free(r);
        return ftk_err(err, "ppo rollout: out of memory for %d x %d", B, R);
    }
    return 0;
}

void ppo_rollout_free(PpoRollout *r) {
    free(r->prompt_ids);
    free(r->prompt_lens);
    free(r->resp);
    free(r->resp_lens);
    free(r->stopped);
    free(r->mask);
    free(r->logp);
    free(r->ref_logp);
    free(r->values);
    free(r->entropy);
    free(r->kl);
    free(r->rewards);
    free(r->advantages);
    free(r->returns);
    free(r->scores);
    memset(r, 0, sizeof *r);
}

static int hooks_nv(const ModelAdapters *h) { return h && !h->disabled ? h->n_virtual : 0; }

// ------------------------------------------------------------------ one forward over a micro-batch

// Sequences seqs[0..n) of the rollout laid out as one right-padded batch, and the rows that score
// their response tokens. Buffers are sized once (ppo_workspace_create) for the largest micro-batch.
struct PpoWorkspace {
    RunState *rs;
    int batch, P_max, R;   // capacity: sequences, prompt and response tokens per sequence
    int n, Tt, T;          // this micro-batch: sequences, real-token columns, nv + Tt
    int n_tok;             // response tokens
    int *tokens;           // (n, Tt)
    int *rows;             // (n_tok) flat row of the final hidden that predicts the token
    int *targets;          // (n_tok) the response token
    int *flat;             // (n_tok) its index b*R + t in the rollout arrays
    float *h;              // (n_tok, C) final hidden at rows (value head input)
    float *dh;             // (n_tok, C) value head gradient into h
    float *logp, *entropy, *values;                  // (n_tok)
    float *old_logp, *adv, *old_values, *ret, *dv;   // (n_tok) training only
};

void ppo_workspace_free(PpoWorkspace *w) {
    if (!w) return;
    runstate_free(w->rs);
    free(w->tokens);
    free(w->rows);
    free(w->targets);
    free(w->flat);
    free(w->h);
    free(w->dh);
    free(w->logp);
    free(w->entropy);
    free(w->values);
    free(w->old_logp);
    free(w->adv);
    free(w->old_values);
    free(w->ret);
    free(w->dv);
    free(w);
}

int ppo_workspace_create(PpoWorkspace **out, const Model *m, const ModelAdapters *hooks, int rs_flags,
                         int n_virtual_max, int batch_size, int P_max, int R,
                         char *err) {
    *out = NULL;
    if (batch_size < 1 || P_max < 1 || R < 1 || n_virtual_max < 0)
        return ftk_err(err, "ppo workspace: bad shape batch=%d P=%d R=%d nv=%d", batch_size, P_max, R, n_virtual_max);
    PpoWorkspace *w = calloc(1, sizeof *w);
    if (!w) return ftk_err(err, "ppo workspace: out of memory");
    w->batch = batch_size;
    w->P_max = P_max;
    w->R = R;
    const int T_max = n_virtual_max + P_max + R;
    if (hooks ? runstate_create_train(&w->rs, m, hooks, batch_size, T_max, rs_flags, err)
              : runstate_create(&w->rs, m, batch_size, T_max, 1, err)) {
        free(w);
        return -1;
    }
    const size_t nt = (size_t)batch_size * R, C = (size_t)m->cfg.dim;
    w->tokens = malloc((size_t)batch_size * (P_max + R) * sizeof(int));
    w->rows = malloc(nt * sizeof(int));
    w->targets = malloc(nt * sizeof(int));
    w->flat = malloc(nt * sizeof(int));
    w->h = malloc(nt * C * sizeof(float));
    w->dh = malloc(nt * C * sizeof(float));
    float **f[] = {&w->logp, &w->entropy, &w->values, &w->old_logp, &w->adv, &w->old_values, &w->ret, &w->dv};
    int ok = w->tokens && w->rows && w->targets && w->flat && w->h && w->dh;
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        *f[i] = malloc(nt * sizeof(float));
        ok = ok && *f[i];
    }
    if (!ok) {
        ppo_workspace_free(w);
        return ftk_err(err, "ppo workspace: out of memory for %d sequences of %d + %d tokens", batch_size, P_max, R);
    }
    *out = w;
    return 0;
}

static int micro_build(PpoWorkspace *w, const PpoRollout *ro, const int *seqs, int n, int nv, char *err) {
    if (n < 1 || n > w->batch) return ftk_err(err, "ppo: micro-batch of %d sequences, the workspace holds %d", n, w->batch);
    if (ro->P_max > w->P_max || ro->R > w->R)
        return ftk_err(err, "ppo: rollout (%d prompt, %d response tokens) larger than the workspace (%d, %d)", ro->P_max,
                       ro->R, w->P_max, w->R);
    int Tt = 1, n_tok = 0;
    for (int j = 0; j < n; j++) {
        int b = seqs[j];
        if (b < 0 || b >= ro->B) return ftk_err(err, "ppo: sequence index %d outside the rollout's %d", b, ro->B);
        int len = ro->prompt_lens[b] + ro->resp_lens[b];
        if (len > Tt) Tt = len;
        n_tok += ro->resp_lens[b];
    }
    w->n = n;
    w->Tt = Tt;
    w->T = nv + Tt;
    w->n_tok = n_tok;
    int k = 0;
    for (int j = 0; j < n; j++) {
        const int b = seqs[j], P = ro->prompt_lens[b], L = ro->resp_lens[b];
        int *row = w->tokens + (size_t)j * Tt;   // prompt, response, then padding id 0 (never attended)
        memcpy(row, ro->prompt_ids + (size_t)b * ro->P_max, (size_t)P * sizeof(int));
        memcpy(row + P, ro->resp + (size_t)b * ro->R, (size_t)L * sizeof(int));
        for (int t = P + L; t < Tt; t++) row[t] = 0;
        for (int t = 0; t < L; t++, k++) {
            w->rows[k] = j * w->T + nv + P + t - 1;   // the position before response token t
            w->targets[k] = ro->resp[(size_t)b * ro->R + t];
            w->flat[k] = b * ro->R + t;
        }
    }
    return 0;
}

typedef struct {
    const PpoWorkspace *w;
    float eps;
    double norm;
} PolicyGradCtx;

// dL/dlogp of one token of the clipped surrogate, mean over the minibatch's tokens.
static float policy_dlogp(void *ctx, int i, float logp) {
    const PolicyGradCtx *c = ctx;
    float dterm;
    int clipped;
    ppo_policy_term(logp, c->w->old_logp[i], c->w->adv[i], c->eps, c->eps, &dterm, &clipped);
    return (float)(dterm / c->norm);
}

// Forward of the built micro-batch: values (when value_w), then logp and entropy under
// softmax(z / temperature). With pg != NULL also the policy's gradient into d_final_hidden (scaled
// back through the temperature).
static int micro_forward(const Model *m, const ModelAdapters *hooks, PpoWorkspace *w, float temperature,
                         const float *value_w, const float *value_b, uint64_t *dropout_rng, PolicyGradCtx *pg,
                         char *err) {
    const int C = m->cfg.dim;
    if (model_forward(m, hooks, w->rs, w->tokens, w->n, w->Tt, NULL, NULL, dropout_rng, err)) return -1;
    if (w->n_tok == 0) return 0;
    float *hidden = runstate_final_hidden(w->rs);
    gather_rows(w->h, hidden, w->rows, w->n_tok, C);
    if (value_w) scalar_head_forward(w->h, w->n_tok, C, value_w, value_b, w->values);   // (n, C) @ (C, 1)
    // logits / τ = (h / τ) @ lm_head^T: scale the LM head's input rows (each row once; backward reads
    // the pre-norm activations, not final_hidden, so this changes nothing else).
    const float inv_t = temperature > 0 && temperature != 1.0f ? 1.0f / temperature : 1.0f;
    if (inv_t != 1.0f)
        for (int k = 0; k < w->n_tok; k++) {
            float *h = hidden + (size_t)w->rows[k] * C;
            for (int c = 0; c < C; c++) h[c] *= inv_t;
        }
    if (lm_head_logprobs(m, w->rs, w->rows, w->targets, w->n_tok, w->logp, w->entropy, pg ? policy_dlogp : NULL, pg,
                         err))
        return -1;
    if (pg && inv_t != 1.0f) {   // dL/dh = dL/d(h/τ) / τ
        float *dhid = runstate_d_final_hidden(w->rs);
        for (int k = 0; k < w->n_tok; k++) {
            float *d = dhid + (size_t)w->rows[k] * C;
            for (int c = 0; c < C; c++) d[c] *= inv_t;
        }
    }
    return 0;
}

int ppo_forward_rollout(const Model *m, const ModelAdapters *hooks, PpoWorkspace *w, const PpoRollout *ro,
                        float temperature, const float *value_w, const float *value_b, float *logp, float *entropy,
                        float *values, char *err) {
    if (value_w && !values) return ftk_err(err, "ppo: a value head needs a values output");
    const size_t BR = (size_t)ro->B * ro->R;
    memset(logp, 0, BR * sizeof(float));
    if (entropy) memset(entropy, 0, BR * sizeof(float));
    if (values) memset(values, 0, BR * sizeof(float));
    int seqs[64];
    for (int b0 = 0; b0 < ro->B;) {
        int n = ro->B - b0;
        if (n > w->batch) n = w->batch;
        if (n > 64) n = 64;
        for (int j = 0; j < n; j++) seqs[j] = b0 + j;
        if (micro_build(w, ro, seqs, n, hooks_nv(hooks), err)) return -1;
        if (micro_forward(m, hooks, w, temperature, value_w, value_b, NULL, NULL, err)) return -1;
        for (int k = 0; k < w->n_tok; k++) {
            logp[w->flat[k]] = w->logp[k];
            if (entropy) entropy[w->flat[k]] = w->entropy[k];
            if (value_w) values[w->flat[k]] = w->values[k];
        }
        b0 += n;
    }
    return 0;
}

// ------------------------------------------------------------------ advantages

int ppo_compute_advantages(PpoRollout *ro, const PpoConfig *pc, double beta, char *err) {
    const int B = ro->B, R = ro->R;
    const size_t BR = (size_t)B * R;
    float *score_used = malloc((size_t)B * sizeof(float));
    if (!score_used) return ftk_err(err, "ppo: out of memory");
    for (int b = 0; b < B; b++) {
        float s = ro->scores[b];
        if (pc->missing_eos_penalty > 0 && !ro->stopped[b]) s -= pc->missing_eos_penalty;
        score_used[b] = s;
    }
    kl_per_token(ro->logp, ro->ref_logp, ro->mask, BR, pc->kl_estimator, 0.0f, ro->kl);
    int rc = ppo_token_rewards(ro->kl, score_used, ro->mask, B, R, (float)beta, pc->score_clip, ro->rewards, NULL, err);
    if (!rc) rc = gae_advantages(ro->rewards, ro->values, ro->mask, B, R, pc->gamma, pc->lam, ro->advantages,
                                 ro->returns, err);
    if (!rc) rc = masked_whiten(ro->advantages, ro->mask, BR, 1, err);
    free(score_used);
    return rc;
}

// ------------------------------------------------------------------ one micro-batch of an update

int ppo_micro_batch(const Model *m, Adapters *a, const ModelAdapters *hooks, PpoWorkspace *w, const PpoRollout *ro,
                    const int *seqs, int n, double norm, const PpoConfig *pc, uint64_t *dropout_rng, double *loss,
                    PpoMicroStats *st, char *err) {
    if (!a->value_w) return ftk_err(err, "ppo: the policy adapter has no value head");
    if (!(norm > 0)) return ftk_err(err, "ppo: minibatch token count %g must be > 0", norm);
    const int C = m->cfg.dim;
    if (micro_build(w, ro, seqs, n, hooks_nv(hooks), err)) return -1;
    for (int k = 0; k < w->n_tok; k++) {
        const int f = w->flat[k];
        w->old_logp[k] = ro->logp[f];
        w->adv[k] = ro->advantages[f];
        w->old_values[k] = ro->values[f];
        w->ret[k] = ro->returns[f];
    }
    PolicyGradCtx pg = {w, pc->cliprange, norm};
    if (micro_forward(m, hooks, w, pc->gen.temperature, a->value_w, a->value_b, dropout_rng, &pg, err)) return -1;
    if (w->n_tok == 0) return 0;
    PpoPolicyStats ps;
    PpoValueStats vs;
    if (ppo_policy_loss(w->logp, w->old_logp, w->adv, NULL, (size_t)w->n_tok, pc->cliprange, pc->cliprange,
                        (float)norm, w->entropy, NULL, &ps, err))
        return -1;
    if (ppo_value_loss(w->values, w->old_values, w->ret, NULL, (size_t)w->n_tok, pc->cliprange_value, (float)norm, w->dv,
                       &vs, err))
        return -1;
    // value head: dL/dv = vf_coef * dL_v/dv, into the head's weights and, through h, the shared trunk
    for (int k = 0; k < w->n_tok; k++) w->dv[k] *= pc->vf_coef;
    memset(w->dh, 0, (size_t)w->n_tok * C * sizeof(float));
    scalar_head_backward(w->h, w->n_tok, C, a->value_w, w->dv, a->dvalue_w, a->dvalue_b, w->dh);
    scatter_add_rows(runstate_d_final_hidden(w->rs), w->dh, w->rows, w->n_tok, C);
    if (model_backward(m, hooks, w->rs, err)) return -1;
    *loss += (double)ps.loss + (double)pc->vf_coef * vs.loss;
    if (st) {
        st->policy_loss += ps.loss;
        st->value_loss += vs.loss;
        st->clip_frac += ps.clip_frac;
        st->value_clip_frac += vs.clip_frac;
        st->approx_kl += ps.approx_kl;
        st->ratio_mean += ps.ratio_mean;
        st->entropy += ps.entropy;
        st->n_tokens += w->n_tok;
    }
    return 0;
}

// ------------------------------------------------------------------ the loop

static void put_u64(cJSON *o, const char *key, uint64_t x) {
    char buf[24];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)x);
    cJSON_AddStringToObject(o, key, buf);
}

static int get_u64(const cJSON *o, const char *key, uint64_t *x, const char *dir, char *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    char *end = NULL;
    if (!cJSON_IsString(v) || !v->valuestring[0]) goto bad;
    unsigned long long u = strtoull(v->valuestring, &end, 10);
    if (*end) goto bad;
    *x = (uint64_t)u;
    return 0;
bad:
    return ftk_err(err, "%s/trainer_state.json: missing or bad \"%s\" (a PPO checkpoint?)", dir, key);
}

static int get_num(const cJSON *o, const char *key, double *x, const char *dir, char *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v)) return ftk_err(err, "%s/trainer_state.json: missing or bad \"%s\" (a PPO checkpoint?)", dir, key);
    *x = v->valuedouble;
    return 0;
}

static void add_num(cJSON *o, const char *key, double x) { cJSON_AddNumberToObject(o, key, json_round9(x)); }

static int log_step(MetricsLog *ml, const PpoStepStats *s, int64_t opt_step, char *err) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "step", (double)s->step);
    add_num(o, "epoch", s->epoch);
    cJSON_AddNumberToObject(o, "optimizer_step", (double)opt_step);
    add_num(o, "score_mean", s->score_mean);
    add_num(o, "score_std", s->score_std);
    add_num(o, "rlhf_reward", s->rlhf_reward);
    add_num(o, "non_score_reward", s->non_score_reward);
    add_num(o, "kl", s->kl);
    add_num(o, "kl_coef", s->kl_coef);
    add_num(o, "entropy", s->entropy);
    add_num(o, "clip_frac", s->clip_frac);
    add_num(o, "approx_kl", s->approx_kl);
    add_num(o, "ratio_mean", s->ratio_mean);
    add_num(o, "policy_loss", s->policy_loss);
    add_num(o, "value_loss", s->value_loss);
    add_num(o, "value_clip_frac", s->value_clip_frac);
    add_num(o, "grad_norm", s->grad_norm);
    add_num(o, "lr", s->lr);
    add_num(o, "response_length", s->response_length);
    add_num(o, "stop_frac", s->stop_frac);
    add_num(o, "tokens_per_sec", s->tokens_per_sec);
    add_num(o, "gen_seconds", s->gen_seconds);
    add_num(o, "step_seconds", s->step_seconds);
    int rc = metrics_write(ml, o, err);
    cJSON_Delete(o);
    return rc;
}

// Rollout statistics of a step (scores, KL, entropy, lengths) into s.
static void rollout_stats(const PpoRollout *ro, const PpoConfig *pc, double beta, PpoStepStats *s) {
    const int B = ro->B;
    const size_t BR = (size_t)B * ro->R;
    double ssum = 0, ssq = 0, used = 0, len = 0, stops = 0;
    for (int b = 0; b < B; b++) {
        double x = ro->scores[b];
        ssum += x;
        ssq += x * x;
        double u = x - (pc->missing_eos_penalty > 0 && !ro->stopped[b] ? pc->missing_eos_penalty : 0.0);
        if (pc->score_clip > 0) u = fmin(fmax(u, -pc->score_clip), pc->score_clip);
        used += u;
        len += ro->resp_lens[b];
        stops += ro->stopped[b];
    }
    s->score_mean = ssum / B;
    s->score_std = B > 1 ? sqrt(fmax(0.0, (ssq - ssum * ssum / B) / (B - 1))) : 0.0;
    s->kl = kl_sequence_mean(ro->kl, ro->mask, B, ro->R);
    s->kl_coef = beta;
    s->non_score_reward = 0.0 - beta * s->kl;   // (not -0 when the KL is 0)
    s->rlhf_reward = used / B + s->non_score_reward;
    s->entropy = masked_sum(ro->entropy, ro->mask, BR) / fmax(1.0, (double)masked_count(ro->mask, BR));
    s->response_length = len / B;
    s->stop_frac = stops / B;
}

int ppo_train(const Model *m, Adapters *a, const ModelAdapters *ref_hooks, const Dataset *prompts, const PpoConfig *pc,
              PpoScoreFn score_fn, void *score_ctx, const cJSON *training_args, PpoStepFn on_step, void *ctx,
              PpoResult *res, char *err) {
    const TrainConfig *tc = &pc->train;
    memset(res, 0, sizeof *res);
    res->first_score = res->last_score = NAN;
    if (!a->value_w) return ftk_err(err, "ppo: the policy adapter needs a value head (AdapterConfig.value_head = 1)");
    if (tc->batch_size < 1 || tc->grad_accum < 1 || pc->num_mini_batches < 1 || pc->ppo_epochs < 1)
        return ftk_err(err, "ppo: batch size, accumulation, mini-batches and PPO epochs must be >= 1");
    if (pc->gen.max_new_tokens < 1) return ftk_err(err, "ppo: max_new_tokens must be >= 1");
    if (pc->response_length < 0) return ftk_err(err, "ppo: response_length must be >= 0");
    if (!(pc->gen.temperature > 0)) return ftk_err(err, "ppo: sampling temperature must be > 0");
    if (!tc->output_dir) return ftk_err(err, "ppo: no output directory");
    if (!score_fn) return ftk_err(err, "ppo: no reward (reward model or rule)");
    if (prompts->n < 1) return ftk_err(err, "%s: no prompts", prompts->path);
    if (ftk_mkdirs(tc->output_dir, err)) return -1;

    ModelAdapters hooks, ref;
    adapters_hooks(a, 1, &hooks);
    if (ref_hooks) {
        ref = *ref_hooks;
    } else {
        ref = hooks;   // the same base, adapter off: the reference is never a copy of the weights
        ref.disabled = 1;
    }
    const int nv = hooks.n_virtual;
    const int mb_size = tc->batch_size * tc->grad_accum;
    const int P = mb_size * pc->num_mini_batches;   // prompts per rollout
    const int R_cap = pc->response_length > 0 ? pc->response_length : pc->gen.max_new_tokens;
    int P_max = 1;
    for (int i = 0; i < prompts->n; i++)
        if (prompts->seqs[i].len > P_max) P_max = prompts->seqs[i].len;
    const int ref_nv = hooks_nv(&ref);
    if ((nv > ref_nv ? nv : ref_nv) + P_max + R_cap > m->cfg.max_seq_len)
        return ftk_err(err, "ppo: prompts of up to %d tokens + %d response tokens (+%d virtual) exceed the model's "
                            "context of %d: lower --max-prompt-length or --max-new-tokens",
                       P_max, R_cap, nv, m->cfg.max_seq_len);

    PpoRollout ro;
    memset(&ro, 0, sizeof ro);
    PpoWorkspace *ws = NULL;
    DataLoader L;
    memset(&L, 0, sizeof L);
    AdamW opt;
    memset(&opt, 0, sizeof opt);
    TrainerState ts;
    trainer_state_init(&ts);
    MetricsLog ml;
    memset(&ml, 0, sizeof ml);
    int **out_tokens = NULL, *out_lens = NULL, *order = NULL;
    const int **prompt_ptrs = NULL;
    PpoSample *samples = NULL;
    int rc = -1;
    char path[4200];

    if (ppo_rollout_alloc(&ro, P, P_max, R_cap, err)) goto done;
    if (ppo_workspace_create(&ws, m, &hooks, tc->gradient_checkpointing ? RS_GRAD_CHECKPOINT : 0,
                             nv > ref_nv ? nv : ref_nv, tc->batch_size, P_max, R_cap, err))
        goto done;
    if (loader_init(&L, prompts, 1, 1, tc->seed, 0, err)) goto done;
    out_tokens = calloc((size_t)P, sizeof(int *));
    out_lens = calloc((size_t)P, sizeof(int));
    order = malloc((size_t)P * sizeof(int));
    prompt_ptrs = malloc((size_t)P * sizeof(int *));
    samples = malloc((size_t)P * sizeof(PpoSample));
    if (!out_tokens || !out_lens || !order || !prompt_ptrs || !samples) {
        ftk_err(err, "ppo: out of memory for rollout buffers");
        goto done;
    }
    if (trainer_optim_init(&opt, a->n_params, tc, err)) goto done;

    int64_t max_steps = tc->max_steps;
    if (max_steps <= 0) {
        max_steps = (int64_t)ceil(tc->num_train_epochs * (double)prompts->n / (double)P);
        if (max_steps < 1) max_steps = 1;
    }
    const int64_t updates_per_step = (int64_t)pc->ppo_epochs * pc->num_mini_batches;
    LrSchedule sched = {tc->lr_scheduler, tc->learning_rate, tc->warmup_steps, max_steps * updates_per_step};
    uint64_t gen_rng = shuffle_rng_init(tc->seed, 0x5050),        // sampling
        order_rng = shuffle_rng_init(tc->seed, 0x5051),            // minibatch order
        dropout_rng = shuffle_rng_init(tc->seed, 0x5052);          // LoRA dropout
    KlController klc;
    if (pc->target_kl > 0) kl_ctl_adaptive(&klc, pc->kl_coef, pc->target_kl, pc->kl_horizon);
    else kl_ctl_fixed(&klc, pc->kl_coef);
    int64_t step0 = 0;

    if (training_args) {
        if (ftk_path_join(path, sizeof path, tc->output_dir, "training_args.json", err)) goto done;
        if (json_write_atomic(path, training_args, err)) goto done;
    }
    if (ftk_path_join(path, sizeof path, tc->output_dir, "metrics.jsonl", err)) goto done;
    if (tc->resume_from) {
        if (trainer_resume_load(m, a, tc->resume_from, 1, &opt, &ts, err)) goto done;
        double st_d = 0, beta = 0;
        if (get_num(ts.extra, "ppo_step", &st_d, tc->resume_from, err) ||
            get_num(ts.extra, "kl_coef", &beta, tc->resume_from, err) ||
            get_u64(ts.extra, "gen_rng", &gen_rng, tc->resume_from, err) ||
            get_u64(ts.extra, "order_rng", &order_rng, tc->resume_from, err))
            goto done;
        step0 = (int64_t)st_d;
        klc.value = beta;
        if (opt.step != step0 * updates_per_step) {
            ftk_err(err, "%s: %lld optimizer updates for %lld PPO steps, expected %lld per step (same --ppo-epochs and "
                         "--num-mini-batches as the run that saved it?)",
                    tc->resume_from, (long long)opt.step, (long long)step0, (long long)updates_per_step);
            goto done;
        }
        if (trainer_resume_position(&L, &ts, tc->seed, prompts->n, &dropout_rng, &ml, path, step0, err)) goto done;
    } else {
        if (metrics_open(&ml, path, -1, err)) goto done;
    }

    AdapterSaver save = {a, tc->base_model, NULL, NULL};
    const double t_start = ftk_now();
    for (int64_t step = step0; step < max_steps; step++) {
        const double t0 = ftk_now();
        PpoStepStats s;
        memset(&s, 0, sizeof s);
        s.step = step + 1;
        s.max_steps = max_steps;
        // 1. prompts and responses
        for (int i = 0; i < P; i++) {
            const Batch *bt;
            if (loader_next(&L, &bt, err)) goto done;
            const int item = bt->items[0], len = prompts->seqs[item].len;
            memcpy(ro.prompt_ids + (size_t)i * P_max, dataset_seq_ids(prompts, item), (size_t)len * sizeof(int));
            ro.prompt_lens[i] = len;
            prompt_ptrs[i] = ro.prompt_ids + (size_t)i * P_max;
        }
        if (generate(m, &hooks, prompt_ptrs, ro.prompt_lens, P, &pc->gen, &gen_rng, out_tokens, out_lens, NULL, err))
            goto done;
        int R = 1;
        for (int i = 0; i < P; i++) {
            int n = out_lens[i] < R_cap ? out_lens[i] : R_cap;
            if (n < 1) {
                ftk_err(err, "ppo: prompt %d got an empty response (it fills the context)", i);
                goto done;
            }
            ro.resp_lens[i] = n;
            ro.stopped[i] = pc->gen.stop_at_eos && n == out_lens[i] && is_stop_token(m, out_tokens[i][n - 1]);
            if (n > R) R = n;
        }
        if (pc->response_length > 0) R = pc->response_length;
        ro.R = R;   // arrays are laid out (P, R) with this step's R (<= R_cap)
        memset(ro.resp, 0, (size_t)P * R * sizeof(int));
        memset(ro.mask, 0, (size_t)P * R);
        for (int i = 0; i < P; i++) {
            memcpy(ro.resp + (size_t)i * R, out_tokens[i], (size_t)ro.resp_lens[i] * sizeof(int));
            memset(ro.mask + (size_t)i * R, 1, (size_t)ro.resp_lens[i]);
            free(out_tokens[i]);
            out_tokens[i] = NULL;
            res->response_tokens += ro.resp_lens[i];
        }
        s.gen_seconds = ftk_now() - t0;
        // 2. policy logp / entropy / values, reference logp, scores
        if (ppo_forward_rollout(m, &hooks, ws, &ro, pc->gen.temperature, a->value_w, a->value_b, ro.logp,
                                ro.entropy, ro.values, err))
            goto done;
        if (ppo_forward_rollout(m, &ref, ws, &ro, pc->gen.temperature, NULL, NULL, ro.ref_logp, NULL,
                                NULL, err))
            goto done;
        for (int i = 0; i < P; i++)
            samples[i] = (PpoSample){ro.prompt_ids + (size_t)i * P_max, ro.prompt_lens[i], ro.resp + (size_t)i * R,
                                     ro.resp_lens[i]};
        if (score_fn(score_ctx, samples, P, ro.scores, err)) goto done;
        for (int i = 0; i < P; i++)
            if (!isfinite(ro.scores[i])) {
                ftk_err(err, "ppo step %lld: the reward of response %d is not finite", (long long)step + 1, i);
                goto done;
            }
        // 3. rewards, GAE, whitened advantages
        const double beta = klc.value;
        if (ppo_compute_advantages(&ro, pc, beta, err)) goto done;
        rollout_stats(&ro, pc, beta, &s);
        // 4. PPO epochs over shuffled minibatches
        for (int i = 0; i < P; i++) order[i] = i;
        double lr = 0;
        for (int e = 0; e < pc->ppo_epochs; e++) {
            shuffle_ints(order, P, &order_rng);
            for (int k = 0; k < pc->num_mini_batches; k++) {
                const int *mb = order + (size_t)k * mb_size;
                long norm = 0;
                for (int j = 0; j < mb_size; j++) norm += ro.resp_lens[mb[j]];
                adapters_zero_grad(a);
                double loss = 0;
                PpoMicroStats ms;
                memset(&ms, 0, sizeof ms);
                for (int g = 0; g < tc->grad_accum; g++)
                    if (ppo_micro_batch(m, a, &hooks, ws, &ro, mb + (size_t)g * tc->batch_size, tc->batch_size,
                                        (double)norm, pc, &dropout_rng, &loss, &ms, err))
                        goto done;
                double gnorm;  // gradients are already the minibatch mean (normalised by norm)
                if (trainer_update(&opt, a, &sched, tc->max_grad_norm, 1.0f, loss, &gnorm, &lr, err)) goto done;
                s.policy_loss += ms.policy_loss;
                s.value_loss += ms.value_loss;
                s.clip_frac += ms.clip_frac;
                s.value_clip_frac += ms.value_clip_frac;
                s.approx_kl += ms.approx_kl;
                s.ratio_mean += ms.ratio_mean;
                s.grad_norm += gnorm;
            }
        }
        const double nu = (double)updates_per_step;
        s.policy_loss /= nu;
        s.value_loss /= nu;
        s.clip_frac /= nu;
        s.value_clip_frac /= nu;
        s.approx_kl /= nu;
        s.ratio_mean /= nu;
        s.grad_norm /= nu;
        s.lr = lr;
        // 5. β for the next rollout
        kl_ctl_update(&klc, s.kl, P);
        const double now = ftk_now();
        s.step_seconds = now - t0;
        long toks = 0;
        for (int i = 0; i < P; i++) toks += ro.resp_lens[i];
        s.tokens_per_sec = s.step_seconds > 0 ? toks / s.step_seconds : 0;
        DataCursor cur = loader_cursor(&L);
        s.epoch = (double)cur.epoch + (double)cur.position / prompts->n;
        if (log_step(&ml, &s, opt.step, err)) goto done;
        if (isnan(res->first_score)) res->first_score = s.score_mean;
        res->last_score = s.score_mean;
        if (on_step) on_step(ctx, &s);
        const int64_t done_steps = step + 1;
        if (tc->save_steps > 0 && done_steps % tc->save_steps == 0) {
            cJSON *extra = trainer_state_fill(&ts, opt.step, s.epoch, &cur, dropout_rng);
            cJSON_AddNumberToObject(extra, "ppo_step", (double)done_steps);
            cJSON_AddNumberToObject(extra, "kl_coef", klc.value);
            put_u64(extra, "gen_rng", gen_rng);
            put_u64(extra, "order_rng", order_rng);
            if (trainer_checkpoint(tc, &opt, &ts, training_args, &save, err)) goto done;
        }
    }
    if (trainer_save_adapter(tc->output_dir, &save, err)) goto done;
    res->steps_done = max_steps;
    res->seconds = ftk_now() - t_start;
    rc = 0;
done:
    if (out_tokens)
        for (int i = 0; i < P; i++) free(out_tokens[i]);
    free(out_tokens);
    free(out_lens);
    free(order);
    free(prompt_ptrs);
    free(samples);
    metrics_close(&ml);
    trainer_state_free(&ts);
    adamw_free(&opt);
    loader_free(&L);
    ppo_workspace_free(ws);
    ppo_rollout_free(&ro);
    return rc;
}
