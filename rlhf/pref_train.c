// pref_train.c — see pref_train.h.
#include "rlhf/pref_train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/common.h"
#include "model/transformer.h"
#include "sft/checkpoint.h"
#include "sft/metrics.h"
#include "sft/optim.h"
#include "sft/trainer_core.h"

void pair_sums_add(PairSums *acc, const PairSums *x) {
    acc->loss += x->loss;
    acc->correct += x->correct;
    acc->margin += x->margin;
    acc->chosen += x->chosen;
    acc->rejected += x->rejected;
    acc->pairs += x->pairs;
}

int pref_dataset_max_len(const Dataset *ds) {
    int mx = 0;
    if (!ds) return 0;
    for (int s = 0; s < ds->n * ds->seqs_per_item; s++)
        if (ds->seqs[s].len > mx) mx = ds->seqs[s].len;
    return mx;
}

// Means of sums into an event (loss, accuracy, margin, chosen, rejected).
static void event_from_sums(PairEvent *e, const PairSums *s) {
    const double n = s->pairs > 0 ? (double)s->pairs : 1.0;
    e->loss = s->loss / n;
    e->accuracy = s->correct / n;
    e->margin = s->margin / n;
    e->chosen = s->chosen / n;
    e->rejected = s->rejected / n;
}

static int log_line(MetricsLog *ml, const PairObjective *obj, const PairEvent *e, char *err) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return ftk_err(err, "%s: out of memory", ml->path);
    const char *p = e->is_eval ? "eval_" : "";
    char key[96];
    cJSON_AddNumberToObject(o, "step", (double)e->step);
    cJSON_AddNumberToObject(o, "epoch", json_round9(e->epoch));
    snprintf(key, sizeof key, "%sloss", p);
    cJSON_AddNumberToObject(o, key, json_round9(e->loss));
    const char *names[4] = {obj->key_accuracy, obj->key_margin, obj->key_chosen, obj->key_rejected};
    const double vals[4] = {e->accuracy, e->margin, e->chosen, e->rejected};
    for (int k = 0; k < 4; k++) {
        snprintf(key, sizeof key, "%s%s", p, names[k]);
        cJSON_AddNumberToObject(o, key, json_round9(vals[k]));
    }
    if (!e->is_eval) {
        cJSON_AddNumberToObject(o, "lr", json_round9(e->lr));
        cJSON_AddNumberToObject(o, "grad_norm", json_round9(e->grad_norm));
        cJSON_AddNumberToObject(o, "pairs_per_sec", json_round9(e->pairs_per_sec));
    }
    int rc = metrics_write(ml, o, err);
    cJSON_Delete(o);
    return rc;
}

static int run_eval(const PairObjective *obj, MetricsLog *ml, int64_t step, int64_t max_steps, double epoch,
                    PairSums *out, PairEventFn on_event, void *ctx, char *err) {
    memset(out, 0, sizeof *out);
    if (obj->evaluate(obj->ctx, out, err)) return -1;
    PairEvent e;
    memset(&e, 0, sizeof e);
    e.step = step;
    e.max_steps = max_steps;
    e.epoch = epoch;
    e.is_eval = 1;
    e.eta_s = -1;
    event_from_sums(&e, out);
    if (log_line(ml, obj, &e, err)) return -1;
    if (on_event) on_event(ctx, &e);
    return 0;
}

// The training run state, planned for a's adapters as trained (every LoRA and the soft prompt with
// gradients), read from a without rewiring its shared hooks (the objective owns their wiring).
static int pref_runstate(RunState **rs, const Model *m, const Adapters *a, int B, int T_max, int checkpointing,
                         char *err) {
    const size_t n = (size_t)m->cfg.n_layers * LSLOT_COUNT;
    LoraHook *plan = NULL;
    ModelAdapters ad;
    memset(&ad, 0, sizeof ad);
    if (a->hooks) {
        if (!(plan = malloc(n * sizeof *plan))) return ftk_err(err, "pref_train: out of memory");
        memcpy(plan, a->hooks, n * sizeof *plan);
        for (size_t i = 0; i < n; i++)
            if (plan[i].r > 0) plan[i].dA = plan[i].dB = a->grads;   // any non-NULL: "trained"
        ad.hooks = plan;
    }
    if (a->prompt) {
        ad.n_virtual = a->cfg.num_virtual_tokens;
        ad.prompt = a->prompt;
        ad.dprompt = a->dprompt;
    }
    int rc = runstate_create_train(rs, m, &ad, B, T_max, checkpointing ? RS_GRAD_CHECKPOINT : 0, err);
    free(plan);
    return rc;
}

int pref_train(const Model *m, Adapters *a, const Dataset *train, int has_eval, const TrainConfig *tc,
               const cJSON *training_args, const PairObjective *obj, PairEventFn on_event, void *ctx,
               PairTrainResult *res, char *err) {
    memset(res, 0, sizeof *res);
    res->first_loss = res->last_loss = NAN;
    if (tc->batch_size < 1 || tc->grad_accum < 1) return ftk_err(err, "batch size and accumulation must be >= 1");
    if (tc->pack_len > 0) return ftk_err(err, "packing does not apply to preference pairs");
    if (!tc->output_dir) return ftk_err(err, "no output directory");
    if (train->kind != DS_PREFERENCE || train->seqs_per_item != 2)
        return ftk_err(err, "%s: pairwise training needs preference pairs", train->path);
    if (has_eval && !obj->evaluate) return ftk_err(err, "pref_train: the objective has no evaluation");
    if (ftk_mkdirs(tc->output_dir, err)) return -1;

    // (not adapters_hooks: it would rewire a's shared LoRA hooks)
    const int n_virtual = a->prompt ? a->cfg.num_virtual_tokens : 0;
    const int T_max = n_virtual + pref_dataset_max_len(train);
    if (trainer_check_context(m, T_max, n_virtual, err)) return -1;

    RunState *rs = NULL;
    DataLoader L;
    memset(&L, 0, sizeof L);
    AdamW opt;
    memset(&opt, 0, sizeof opt);
    TrainerState ts;
    trainer_state_init(&ts);
    MetricsLog ml;
    memset(&ml, 0, sizeof ml);
    int rc = -1;
    char path[4200];

    if (pref_runstate(&rs, m, a, 2 * tc->batch_size, T_max, tc->gradient_checkpointing, err)) goto done;
    if (loader_init(&L, train, tc->batch_size, 1, tc->seed, 0, err)) goto done;
    if (trainer_optim_init(&opt, a->n_params, tc, err)) goto done;

    const int64_t max_steps = trainer_max_steps(tc, loader_batches_in_epoch(&L));
    LrSchedule sched = {tc->lr_scheduler, tc->learning_rate, tc->warmup_steps, max_steps};
    uint64_t dropout_rng = tc->seed * 0x9E3779B97F4A7C15ull + 1;
    PairSums log_acc;          // training pairs since the last log line
    memset(&log_acc, 0, sizeof log_acc);
    int64_t log_steps = 0;     // optimizer steps since the last log line

    if (trainer_write_args(tc, training_args, path, sizeof path, err)) goto done;
    if (tc->resume_from) {
        if (trainer_resume_load(m, a, tc->resume_from, 0, &opt, &ts, err)) goto done;
        if (trainer_resume_position(&L, &ts, tc->seed, train->n, &dropout_rng, &ml, path, ts.global_step, err))
            goto done;
        // The log accumulators, so a resumed run logs the same means as a straight one.
        const char *keys[6] = {"acc_loss", "acc_correct", "acc_margin", "acc_chosen", "acc_rejected", "acc_pairs"};
        double *dst[5] = {&log_acc.loss, &log_acc.correct, &log_acc.margin, &log_acc.chosen, &log_acc.rejected};
        for (int k = 0; k < 6; k++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(ts.extra, keys[k]);
            if (!cJSON_IsNumber(v)) continue;
            if (k < 5) *dst[k] = v->valuedouble;
            else log_acc.pairs = (long)v->valuedouble;
        }
        const cJSON *ls = cJSON_GetObjectItemCaseSensitive(ts.extra, "acc_steps");
        if (cJSON_IsNumber(ls)) log_steps = (int64_t)ls->valuedouble;
    } else {
        if (metrics_open(&ml, path, -1, err)) goto done;
        if (has_eval && run_eval(obj, &ml, 0, max_steps, 0, &res->eval_before, on_event, ctx, err)) goto done;
    }

    AdapterSaver save = {a, tc->base_model, obj->save_extra, obj->ctx};
    const double t_start = ftk_now();
    double t_log = t_start;
    long pairs_since_log = 0;
    const int64_t first_step = opt.step;
    for (int64_t step = opt.step; step < max_steps; step++) {
        adapters_zero_grad(a);
        PairSums st;
        memset(&st, 0, sizeof st);
        for (int k = 0; k < tc->grad_accum; k++) {
            const Batch *bt;
            if (loader_next(&L, &bt, err)) goto done;
            if (obj->train_batch(obj->ctx, rs, bt, &dropout_rng, &st, err)) goto done;
        }
        if (st.pairs == 0) {
            ftk_err(err, "step %lld: the batch has no pairs", (long long)step + 1);
            goto done;
        }
        double gnorm, lr;
        if (trainer_update(&opt, a, &sched, tc->max_grad_norm, 1.0f / (float)st.pairs, st.loss / (double)st.pairs,
                           &gnorm, &lr, err))
            goto done;
        res->pairs_seen += st.pairs;
        pairs_since_log += st.pairs;
        pair_sums_add(&log_acc, &st);
        log_steps++;
        if (isnan(res->first_loss)) res->first_loss = st.loss / (double)st.pairs;
        const int64_t done_steps = step + 1;
        DataCursor cur = loader_cursor(&L);
        double epoch = (double)cur.epoch + (train->n ? (double)cur.position / train->n : 0.0);
        int is_last = done_steps == max_steps;
        if ((tc->logging_steps > 0 && done_steps % tc->logging_steps == 0) || is_last || done_steps == 1) {
            double now = ftk_now();
            PairEvent e;
            memset(&e, 0, sizeof e);
            e.step = done_steps;
            e.max_steps = max_steps;
            e.epoch = epoch;
            event_from_sums(&e, &log_acc);
            e.lr = lr;
            e.grad_norm = gnorm;
            e.pairs_per_sec = now > t_log ? pairs_since_log / (now - t_log) : 0;
            e.eta_s = (now - t_start) / (double)(done_steps - first_step) * (double)(max_steps - done_steps);
            if (log_line(&ml, obj, &e, err)) goto done;
            if (on_event) on_event(ctx, &e);
            res->last_loss = e.loss;
            memset(&log_acc, 0, sizeof log_acc);
            log_steps = 0;
            t_log = now;
            pairs_since_log = 0;
        }
        if (has_eval && ((tc->eval_steps > 0 && done_steps % tc->eval_steps == 0) || is_last)) {
            if (run_eval(obj, &ml, done_steps, max_steps, epoch, &res->eval_after, on_event, ctx, err)) goto done;
            double l = res->eval_after.loss / (double)res->eval_after.pairs;
            trainer_state_note_eval(&ts, done_steps, l);
        }
        if (tc->save_steps > 0 && done_steps % tc->save_steps == 0) {
            cJSON *extra = trainer_state_fill(&ts, done_steps, epoch, &cur, dropout_rng);
            cJSON_AddNumberToObject(extra, "acc_loss", log_acc.loss);
            cJSON_AddNumberToObject(extra, "acc_correct", log_acc.correct);
            cJSON_AddNumberToObject(extra, "acc_margin", log_acc.margin);
            cJSON_AddNumberToObject(extra, "acc_chosen", log_acc.chosen);
            cJSON_AddNumberToObject(extra, "acc_rejected", log_acc.rejected);
            cJSON_AddNumberToObject(extra, "acc_pairs", (double)log_acc.pairs);
            cJSON_AddNumberToObject(extra, "acc_steps", (double)log_steps);
            if (trainer_checkpoint(tc, &opt, &ts, training_args, &save, err)) goto done;
        }
    }
    if (trainer_save_adapter(tc->output_dir, &save, err)) goto done;
    res->steps_done = max_steps;
    res->seconds = ftk_now() - t_start;
    rc = 0;
done:
    metrics_close(&ml);
    trainer_state_free(&ts);
    adamw_free(&opt);
    loader_free(&L);
    runstate_free(rs);
    return rc;
}
