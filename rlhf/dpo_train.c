// dpo_train.c — see dpo_train.h.
#include "rlhf/dpo_train.h"

#include <stdlib.h>
#include <string.h>

#include "model/common.h"
#include "rlhf/masked.h"

void dpo_options_default(DpoOptions *o) {
    memset(o, 0, sizeof *o);
    o->beta = 0.1f;
    o->loss_type = DPO_SIGMOID;
}

int dpo_loss_type_from_name(const char *name, DpoLossType *out) {
    if (strcmp(name, "sigmoid") == 0) *out = DPO_SIGMOID;
    else if (strcmp(name, "ipo") == 0) *out = DPO_IPO;
    else return -1;
    return 0;
}

// Scratch for one batch: the target rows of the final hidden, their targets and log-probs, and the
// same log-probs laid out as a (B, T) grid with its 0/1 mask (rlhf/masked.h works on grids).
typedef struct {
    int *rows, *targets, *cell;   // (n) flat row in the final hidden; target id; cell b*T + t of the grid
    float *logp;                  // (n)
    float *grid;                  // (B*T) logp at targets, 0 elsewhere; reused for dL/dlogp
    uint8_t *mask;                // (B*T)
    int n;
} Gathered;

static void gathered_free(Gathered *g) {
    free(g->rows);
    free(g->targets);
    free(g->cell);
    free(g->logp);
    free(g->grid);
    free(g->mask);
    memset(g, 0, sizeof *g);
}

// Target positions of bt: real token t of row b predicts targets[b, t] from final-hidden row
// b*(nv+T) + nv + t.
static int gather(Gathered *g, const Batch *bt, int nv, char *err) {
    memset(g, 0, sizeof *g);
    const size_t BT = (size_t)bt->B * bt->T;
    g->rows = malloc(BT * sizeof(int));
    g->targets = malloc(BT * sizeof(int));
    g->cell = malloc(BT * sizeof(int));
    g->logp = malloc(BT * sizeof(float));
    g->grid = calloc(BT, sizeof(float));
    g->mask = calloc(BT, sizeof(uint8_t));
    if (!g->rows || !g->targets || !g->cell || !g->logp || !g->grid || !g->mask) {
        gathered_free(g);
        return ftk_err(err, "dpo: out of memory for a batch of %d x %d", bt->B, bt->T);
    }
    for (int b = 0; b < bt->B; b++)
        for (int t = 0; t < bt->T; t++) {
            const int y = bt->targets[b * bt->T + t];
            if (y < 0) continue;
            g->rows[g->n] = b * (nv + bt->T) + nv + t;
            g->targets[g->n] = y;
            g->cell[g->n] = b * bt->T + t;
            g->mask[b * bt->T + t] = 1;
            g->n++;
        }
    return 0;
}

// dL/dlogp = 1 for every target (the real per-token factors are applied afterwards).
static float dlogp_one(void *ctx, int i, float logp) {
    (void)ctx;
    (void)i;
    (void)logp;
    return 1.0f;
}

static int hooks_n_virtual(const ModelAdapters *h) { return h && !h->disabled ? h->n_virtual : 0; }

int dpo_batch_logps(const Model *m, const ModelAdapters *hooks, RunState *rs, const Batch *bt, int length_average,
                    float *out, char *err) {
    Gathered g;
    if (model_forward(m, hooks, rs, bt->tokens, bt->B, bt->T, NULL, NULL, NULL, err)) return -1;
    if (gather(&g, bt, hooks_n_virtual(hooks), err)) return -1;
    int rc = lm_head_logprobs(m, rs, g.rows, g.targets, g.n, g.logp, NULL, NULL, NULL, err);
    if (rc == 0) {
        for (int i = 0; i < g.n; i++) g.grid[g.cell[i]] = g.logp[i];
        seq_logp_sum(g.grid, g.mask, bt->B, bt->T, length_average, out);
    }
    gathered_free(&g);
    return rc;
}

int dpo_ref_cache_build(const Model *m, const ModelAdapters *ref, const Dataset *ds, int batch_pairs, int length_average,
                        DpoRefCache *c, char *err) {
    memset(c, 0, sizeof *c);
    if (ds->kind != DS_PREFERENCE || ds->seqs_per_item != 2) return ftk_err(err, "%s: DPO needs preference pairs", ds->path);
    if (batch_pairs < 1) batch_pairs = 1;
    const int T_max = hooks_n_virtual(ref) + pref_dataset_max_len(ds);
    if (T_max > m->cfg.max_seq_len)
        return ftk_err(err, "%s: sequences of %d positions exceed the model's context %d", ds->path, T_max,
                       m->cfg.max_seq_len);
    c->n = ds->n;
    c->length_average = length_average;
    c->chosen = malloc((size_t)ds->n * sizeof(float));
    c->rejected = malloc((size_t)ds->n * sizeof(float));
    float *lp = malloc((size_t)2 * batch_pairs * sizeof(float));
    RunState *rs = NULL;
    DataLoader L;
    memset(&L, 0, sizeof L);
    int rc = -1;
    if (!c->chosen || !c->rejected || !lp) {
        ftk_err(err, "dpo: out of memory for the reference log-probs of %d pairs", ds->n);
        goto done;
    }
    if (runstate_create(&rs, m, 2 * batch_pairs, T_max, 0, err)) goto done;
    if (loader_init(&L, ds, batch_pairs, 0, 0, 0, err)) goto done;
    const int64_t nb = loader_batches_in_epoch(&L);
    for (int64_t k = 0; k < nb; k++) {
        const Batch *bt;
        if (loader_next(&L, &bt, err)) goto done;
        if (dpo_batch_logps(m, ref, rs, bt, length_average, lp, err)) goto done;
        for (int i = 0; i < bt->n_pairs; i++) {
            c->chosen[bt->items[i]] = lp[i];
            c->rejected[bt->items[i]] = lp[bt->n_pairs + i];
        }
    }
    rc = 0;
done:
    free(lp);
    loader_free(&L);
    runstate_free(rs);
    if (rc) dpo_ref_cache_free(c);
    return rc;
}

void dpo_ref_cache_free(DpoRefCache *c) {
    free(c->chosen);
    free(c->rejected);
    memset(c, 0, sizeof *c);
}

// IPO compares length-averaged log-probs, sigmoid DPO summed ones: the cache must hold the right kind.
static int check_cache_kind(const DpoRefCache *ref, const DpoOptions *o, char *err) {
    const int la = o->loss_type == DPO_IPO;
    if (ref->length_average == la) return 0;
    return ftk_err(err, "dpo: the reference cache holds %s log-probs, loss type %s needs %s",
                   ref->length_average ? "length-averaged" : "summed", la ? "ipo" : "sigmoid",
                   la ? "length-averaged" : "summed");
}

// The reference values of the batch's pairs: ref_c (P), ref_r (P).
static int ref_of_batch(const DpoRefCache *ref, const Batch *bt, float *ref_c, float *ref_r, char *err) {
    for (int i = 0; i < bt->n_pairs; i++) {
        const int item = bt->items[i];
        if (item < 0 || item >= ref->n)
            return ftk_err(err, "dpo: pair %d outside the reference cache of %d pairs", item, ref->n);
        ref_c[i] = ref->chosen[item];
        ref_r[i] = ref->rejected[item];
    }
    return 0;
}

static void add_stats(PairSums *sums, const DpoStats *st, int P) {
    sums->loss += (double)st->loss * P;
    sums->correct += (double)st->reward_accuracy * P;
    sums->margin += (double)st->reward_margin * P;
    sums->chosen += (double)st->reward_chosen * P;
    sums->rejected += (double)st->reward_rejected * P;
    sums->pairs += P;
}

int dpo_train_batch(const Model *m, const ModelAdapters *policy, RunState *rs, const Batch *bt, const DpoRefCache *ref,
                    const DpoOptions *o, uint64_t *dropout_rng, PairSums *sums, char *err) {
    const int P = bt->n_pairs, B = bt->B, C = m->cfg.dim;
    if (P < 1 || B != 2 * P) return ftk_err(err, "dpo: a batch of %d rows is not %d pairs", B, P);
    const int la = o->loss_type == DPO_IPO;
    if (check_cache_kind(ref, o, err)) return -1;
    // pi (2P) policy log-probs, dpi (2P) dL/dpi, ref_c / ref_r (P each)
    float *pi = malloc(sizeof(float) * (size_t)(6 * P));
    if (!pi) return ftk_err(err, "dpo: out of memory");
    float *dpi = pi + 2 * P, *ref_c = pi + 4 * P, *ref_r = pi + 5 * P;
    Gathered g;
    memset(&g, 0, sizeof g);
    int rc = -1;
    if (ref_of_batch(ref, bt, ref_c, ref_r, err)) goto done;
    if (model_forward(m, policy, rs, bt->tokens, B, bt->T, NULL, NULL, dropout_rng, err)) goto done;
    if (gather(&g, bt, hooks_n_virtual(policy), err)) goto done;
    // With dL/dlogp = 1 the LM head leaves d logp_i / dh in row rows[i] of d_final_hidden (each row
    // holds exactly one target); once the loss is known each row is scaled by its real dL/dlogp_i.
    float *dfh = runstate_d_final_hidden(rs);
    if (lm_head_logprobs(m, rs, g.rows, g.targets, g.n, g.logp, NULL, dlogp_one, NULL, err)) goto done;
    for (int i = 0; i < g.n; i++) g.grid[g.cell[i]] = g.logp[i];
    seq_logp_sum(g.grid, g.mask, B, bt->T, la, pi);
    DpoStats st;
    if (dpo_loss(pi, pi + P, ref_c, ref_r, P, o->beta, o->label_smoothing, o->loss_type, dpi, dpi + P, NULL, NULL,
                 &st, err))
        goto done;
    // dpo_loss differentiates the batch mean; the loop wants the sum over pairs.
    for (int i = 0; i < B; i++) dpi[i] *= (float)P;
    seq_logp_sum_backward(dpi, g.mask, B, bt->T, la, g.grid);   // grid := dL/dlogp per token
    for (int i = 0; i < g.n; i++) {
        const float s = g.grid[g.cell[i]];
        float *d = dfh + (size_t)g.rows[i] * C;
        for (int k = 0; k < C; k++) d[k] *= s;
    }
    if (model_backward(m, policy, rs, err)) goto done;
    add_stats(sums, &st, P);
    rc = 0;
done:
    gathered_free(&g);
    free(pi);
    return rc;
}

int dpo_evaluate(const Model *m, const ModelAdapters *policy, const Dataset *ds, const DpoRefCache *ref,
                 const DpoOptions *o, int batch_pairs, PairSums *sums, char *err) {
    memset(sums, 0, sizeof *sums);
    if (ref->n != ds->n) return ftk_err(err, "%s: %d pairs but a reference cache of %d", ds->path, ds->n, ref->n);
    if (check_cache_kind(ref, o, err)) return -1;
    if (batch_pairs < 1) batch_pairs = 1;
    const int la = o->loss_type == DPO_IPO;
    const int T_max = hooks_n_virtual(policy) + pref_dataset_max_len(ds);
    float *pi = malloc(sizeof(float) * (size_t)(4 * batch_pairs));
    RunState *rs = NULL;
    DataLoader L;
    memset(&L, 0, sizeof L);
    int rc = -1;
    if (!pi) {
        ftk_err(err, "dpo evaluation: out of memory");
        goto done;
    }
    float *ref_c = pi + 2 * batch_pairs, *ref_r = ref_c + batch_pairs;
    if (runstate_create(&rs, m, 2 * batch_pairs, T_max, 0, err)) goto done;
    if (loader_init(&L, ds, batch_pairs, 0, 0, 0, err)) goto done;
    const int64_t nb = loader_batches_in_epoch(&L);
    for (int64_t k = 0; k < nb; k++) {
        const Batch *bt;
        if (loader_next(&L, &bt, err)) goto done;
        if (dpo_batch_logps(m, policy, rs, bt, la, pi, err)) goto done;
        if (ref_of_batch(ref, bt, ref_c, ref_r, err)) goto done;
        DpoStats st;
        const int P = bt->n_pairs;
        if (dpo_loss(pi, pi + P, ref_c, ref_r, P, o->beta, o->label_smoothing, o->loss_type, NULL, NULL, NULL, NULL,
                     &st, err))
            goto done;
        add_stats(sums, &st, P);
    }
    rc = 0;
done:
    free(pi);
    loader_free(&L);
    runstate_free(rs);
    return rc;
}

typedef struct {
    const Model *m;
    ModelAdapters hooks;   // gradients on (evaluation forwards just never run backward)
    const Dataset *eval;
    const DpoRefCache *train_ref, *eval_ref;
    const DpoOptions *o;
    int eval_batch;
} DpoCtx;

static int dpo_obj_train(void *ctx, RunState *rs, const Batch *bt, uint64_t *dropout_rng, PairSums *sums, char *err) {
    DpoCtx *c = ctx;
    return dpo_train_batch(c->m, &c->hooks, rs, bt, c->train_ref, c->o, dropout_rng, sums, err);
}

static int dpo_obj_eval(void *ctx, PairSums *sums, char *err) {
    DpoCtx *c = ctx;
    return dpo_evaluate(c->m, &c->hooks, c->eval, c->eval_ref, c->o, c->eval_batch, sums, err);
}

int dpo_train(const Model *m, Adapters *policy, const Dataset *train, const DpoRefCache *train_ref,
              const Dataset *eval, const DpoRefCache *eval_ref, const TrainConfig *tc, const DpoOptions *o,
              const cJSON *training_args, PairEventFn on_event, void *ctx, PairTrainResult *res, char *err) {
    if (train_ref->n != train->n)
        return ftk_err(err, "%s: %d pairs but a reference cache of %d", train->path, train->n, train_ref->n);
    if (eval && (!eval_ref || eval_ref->n != eval->n))
        return ftk_err(err, "%s: the eval set needs its own reference cache", eval->path);
    DpoCtx c;
    memset(&c, 0, sizeof c);
    c.m = m;
    // One set of hooks: adapters_hooks rewires the policy's shared LoraHooks, so a second call with
    // trainable = 0 would switch the LoRA gradients off for training too.
    adapters_hooks(policy, 1, &c.hooks);
    c.eval = eval;
    c.train_ref = train_ref;
    c.eval_ref = eval_ref;
    c.o = o;
    c.eval_batch = o->eval_batch > 0 ? o->eval_batch : tc->batch_size;
    PairObjective obj = {dpo_obj_train, dpo_obj_eval, NULL, &c, "rewards/accuracies", "rewards/margins",
                         "rewards/chosen", "rewards/rejected"};
    return pref_train(m, policy, train, eval != NULL, tc, training_args, &obj, on_event, ctx, res, err);
}
