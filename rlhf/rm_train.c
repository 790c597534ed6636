// rm_train.c — see rm_train.h.
#include "rlhf/rm_train.h"

#include <stdlib.h>
#include <string.h>

#include "model/common.h"
#include "rlhf/reward_loss.h"
#include "rlhf/reward_model.h"

void rm_options_default(RmOptions *o) {
    memset(o, 0, sizeof *o);
    o->append_eos = 1;
}

int rm_train_batch(const Model *m, Adapters *a, const ModelAdapters *hooks, RunState *rs, const Batch *bt,
                   const RmOptions *ro, uint64_t *dropout_rng, PairSums *sums, char *err) {
    const int P = bt->n_pairs, B = bt->B;
    if (P < 1 || B != 2 * P) return ftk_err(err, "reward model: a batch of %d rows is not %d pairs", B, P);
    if (!a->score) return ftk_err(err, "reward model: the adapters have no score head");
    // r (2P): chosen rewards in [0, P), rejected in [P, 2P); dr likewise; margin (P)
    float *r = malloc(sizeof(float) * (size_t)(5 * P));
    int *rows = malloc(sizeof(int) * (size_t)B);
    int rc = -1;
    if (!r || !rows) {
        ftk_err(err, "reward model: out of memory for a batch of %d pairs", P);
        goto done;
    }
    float *dr = r + 2 * P, *margin = r + 4 * P;
    for (int i = 0; i < P; i++) margin[i] = ro->margin;
    if (rm_forward_batch(m, hooks, rs, a->score, bt->tokens, bt->lengths, B, bt->T, dropout_rng, rows, r, err))
        goto done;
    RmLossStats st;
    if (rm_pairwise_loss(r, r + P, margin, P, ro->center_coef, dr, dr + P, &st, err)) goto done;
    // rm_pairwise_loss differentiates the batch MEAN; the loop wants the sum (it divides by the
    // step's pair count once every micro-batch is in).
    for (int i = 0; i < B; i++) dr[i] *= (float)P;
    if (rm_backward_batch(m, hooks, rs, a->score, a->dscore, rows, dr, B, err)) goto done;
    sums->loss += (double)st.loss * P;
    sums->correct += (double)st.accuracy * P;
    sums->margin += (double)st.margin_mean * P;
    sums->chosen += (double)st.chosen_mean * P;
    sums->rejected += (double)st.rejected_mean * P;
    sums->pairs += P;
    rc = 0;
done:
    free(r);
    free(rows);
    return rc;
}

typedef struct {
    const Model *m;
    Adapters *a;
    ModelAdapters hooks;         // gradients on (evaluation forwards just never run backward)
    const Dataset *eval;
    const RmOptions *ro;
    int eval_batch;
} RmCtx;

static int rm_obj_train(void *ctx, RunState *rs, const Batch *bt, uint64_t *dropout_rng, PairSums *sums, char *err) {
    RmCtx *c = ctx;
    return rm_train_batch(c->m, c->a, &c->hooks, rs, bt, c->ro, dropout_rng, sums, err);
}

static int rm_obj_eval(void *ctx, PairSums *sums, char *err) {
    RmCtx *c = ctx;
    RmEvalStats st;
    if (rm_evaluate(c->m, &c->hooks, c->a->score, c->eval, c->eval_batch, &st, NULL, NULL, err)) return -1;
    const double n = (double)st.n_pairs;
    sums->loss = st.loss * n;
    sums->correct = st.accuracy * n;
    sums->margin = st.margin_mean * n;
    sums->chosen = st.chosen_mean * n;
    sums->rejected = st.rejected_mean * n;
    sums->pairs = st.n_pairs;
    return 0;
}

static int rm_obj_save(void *ctx, const char *dir, char *err) {
    RmCtx *c = ctx;
    return rm_save_info(c->m, dir, c->m->path, c->ro->append_eos, err);
}

int rm_train(const Model *m, Adapters *a, const Dataset *train, const Dataset *eval, const TrainConfig *tc,
             const RmOptions *ro, const cJSON *training_args, PairEventFn on_event, void *ctx, PairTrainResult *res,
             char *err) {
    if (!a->score) return ftk_err(err, "reward model: the adapters have no score head (score_head = 1)");
    RmCtx c;
    memset(&c, 0, sizeof c);
    c.m = m;
    c.a = a;
    // One set of hooks for training and evaluation: adapters_hooks rewires a's shared LoraHooks, so
    // a second call with trainable = 0 would switch the LoRA gradients off for training too.
    adapters_hooks(a, 1, &c.hooks);
    c.eval = eval;
    c.ro = ro;
    c.eval_batch = ro->eval_batch > 0 ? ro->eval_batch : tc->batch_size;
    PairObjective obj = {rm_obj_train, rm_obj_eval, rm_obj_save, &c, "accuracy", "margin", "reward_chosen",
                         "reward_rejected"};
    return pref_train(m, a, train, eval != NULL, tc, training_args, &obj, on_event, ctx, res, err);
}
