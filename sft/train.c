// train.c — the SFT loop (see train.h).
#include "sft/train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/common.h"
#include "model/transformer.h"
#include "sft/checkpoint.h"
#include "sft/metrics.h"
#include "sft/optim.h"
#include "sft/trainer_core.h"

void train_config_default(TrainConfig *c) {
    memset(c, 0, sizeof *c);
    c->learning_rate = 1e-3;
    c->lr_scheduler = LR_LINEAR;
    c->num_train_epochs = 1.0;
    c->batch_size = 8;
    c->grad_accum = 1;
    c->max_grad_norm = 1.0;
    c->adam_beta1 = 0.9;
    c->adam_beta2 = 0.999;
    c->adam_epsilon = 1e-8;
    c->seed = 42;
    c->logging_steps = 10;
}

static int dataset_max_len(const Dataset *ds) {
    int mx = 0;
    if (!ds) return 0;
    for (int s = 0; s < ds->n * ds->seqs_per_item; s++)
        if (ds->seqs[s].len > mx) mx = ds->seqs[s].len;
    return mx;
}

// dL/dlogp for the summed loss -sum(logp): the step's 1/N is applied to the gradients afterwards,
// once every micro-batch of the step has been seen.
static float dlogp_sum(void *ctx, int i, float logp) {
    (void)ctx;
    (void)i;
    (void)logp;
    return -1.0f;
}

// The rows of the final hidden state that enter the loss and their targets:
// row b*T + n_virtual + t predicts targets[b][t].
static int gather_targets(const Batch *bt, int n_virtual, int *rows, int *targets) {
    const int T = n_virtual + bt->T;
    int n = 0;
    for (int b = 0; b < bt->B; b++)
        for (int t = 0; t < bt->T; t++) {
            int y = bt->targets[b * bt->T + t];
            if (y < 0) continue;
            rows[n] = b * T + n_virtual + t;
            targets[n] = y;
            n++;
        }
    return n;
}

// Scratch of the loss over one batch: per target position, its row in the final hidden state, its
// target id and its log-probability; sized for every position of a (B, T) batch.
typedef struct {
    int *rows, *targets;
    float *logp;
} LossScratch;

static int loss_scratch_alloc(LossScratch *s, int batch_size, int T, const char *what, char *err) {
    size_t cap = (size_t)batch_size * (size_t)T;
    s->rows = malloc(cap * sizeof(int));
    s->targets = malloc(cap * sizeof(int));
    s->logp = malloc(cap * sizeof(float));
    if (!s->rows || !s->targets || !s->logp) return ftk_err(err, "out of memory for %s buffers", what);
    return 0;
}

static void loss_scratch_free(LossScratch *s) {
    free(s->rows);
    free(s->targets);
    free(s->logp);
}

// Forward (+ backward when train) of one batch; adds -sum(logp) to *loss_sum and the target count.
static int run_batch(const Model *m, const ModelAdapters *hooks, RunState *rs, const Batch *bt, int packed,
                     uint64_t *dropout_rng, int train, LossScratch *ls, double *loss_sum, long *count, char *err) {
    const int n_virtual = hooks ? hooks->n_virtual : 0;
    if (model_forward(m, hooks, rs, bt->tokens, bt->B, bt->T, packed ? bt->pos_ids : NULL,
                      packed ? bt->seg_ids : NULL, train ? dropout_rng : NULL, err))
        return -1;
    int n = gather_targets(bt, n_virtual, ls->rows, ls->targets);
    if (n == 0) return 0;
    if (lm_head_logprobs(m, rs, ls->rows, ls->targets, n, ls->logp, NULL, train ? dlogp_sum : NULL, NULL, err))
        return -1;
    double s = 0;
    for (int i = 0; i < n; i++) s -= ls->logp[i];
    *loss_sum += s;
    *count += n;
    if (train && model_backward(m, hooks, rs, err)) return -1;
    return 0;
}

int sft_evaluate(const Model *m, const ModelAdapters *hooks, const Dataset *ds, int batch_size, double *loss,
                 long *n_tokens, char *err) {
    const int n_virtual = hooks && !hooks->disabled ? hooks->n_virtual : 0;
    const int T_max = n_virtual + dataset_max_len(ds);
    RunState *rs = NULL;
    DataLoader L;
    memset(&L, 0, sizeof L);
    LossScratch ls = {0};
    int rc = -1;
    double loss_sum = 0;
    long count = 0;
    if (runstate_create(&rs, m, batch_size, T_max, 0, err)) goto done;
    if (loader_init(&L, ds, batch_size, 0, 0, 0, err)) goto done;
    if (loss_scratch_alloc(&ls, batch_size, T_max, "evaluation", err)) goto done;
    int64_t n_batches = loader_batches_in_epoch(&L);
    for (int64_t i = 0; i < n_batches; i++) {
        const Batch *bt;
        if (loader_next(&L, &bt, err)) goto done;
        if (run_batch(m, hooks, rs, bt, 0, NULL, 0, &ls, &loss_sum, &count, err)) goto done;
    }
    if (count == 0) {
        ftk_err(err, "%s: no target tokens to evaluate", ds->path);
        goto done;
    }
    *loss = loss_sum / (double)count;
    if (n_tokens) *n_tokens = count;
    rc = 0;
done:
    loss_scratch_free(&ls);
    loader_free(&L);
    runstate_free(rs);
    return rc;
}

static void emit(TrainEventFn fn, void *ctx, const TrainEvent *e) {
    if (fn) fn(ctx, e);
}

int sft_train(const Model *m, Adapters *a, const Dataset *train, const Dataset *eval, const TrainConfig *tc,
              const cJSON *training_args, TrainEventFn on_event, void *ctx, TrainResult *res, char *err) {
    memset(res, 0, sizeof *res);
    res->eval_loss_before = res->eval_loss_after = NAN;
    res->first_loss = res->last_loss = NAN;
    if (tc->batch_size < 1 || tc->grad_accum < 1) return ftk_err(err, "batch size and accumulation must be >= 1");
    if (!tc->output_dir) return ftk_err(err, "no output directory");
    if (ftk_mkdirs(tc->output_dir, err)) return -1;

    ModelAdapters hooks;
    adapters_hooks(a, 1, &hooks);
    const int n_virtual = hooks.n_virtual;
    const int packed = tc->pack_len > 0;
    const int T_max = n_virtual + (packed ? tc->pack_len : dataset_max_len(train));
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
    LossScratch ls = {0};
    int rc = -1;
    char path[4200];

    if (runstate_create_train(&rs, m, &hooks, tc->batch_size, T_max, tc->gradient_checkpointing ? RS_GRAD_CHECKPOINT : 0,
                              err))
        goto done;
    if (loader_init(&L, train, tc->batch_size, 1, tc->seed, tc->pack_len, err)) goto done;
    if (loss_scratch_alloc(&ls, tc->batch_size, T_max, "batch", err)) goto done;
    if (trainer_optim_init(&opt, a->n_params, tc, err)) goto done;

    const int64_t max_steps = trainer_max_steps(tc, loader_batches_in_epoch(&L));
    LrSchedule sched = {tc->lr_scheduler, tc->learning_rate, tc->warmup_steps, max_steps};
    uint64_t dropout_rng = tc->seed * 0x9E3779B97F4A7C15ull + 1;
    double loss_accum = 0;     // training losses summed since the last log line
    int64_t loss_accum_steps = 0;

    if (trainer_write_args(tc, training_args, path, sizeof path, err)) goto done;
    if (tc->resume_from) {
        if (trainer_resume_load(m, a, tc->resume_from, 0, &opt, &ts, err)) goto done;
        if (trainer_resume_position(&L, &ts, tc->seed, train->n, &dropout_rng, &ml, path, ts.global_step, err))
            goto done;
        const cJSON *la = cJSON_GetObjectItemCaseSensitive(ts.extra, "loss_accum");
        const cJSON *ls = cJSON_GetObjectItemCaseSensitive(ts.extra, "loss_accum_steps");
        if (cJSON_IsNumber(la) && cJSON_IsNumber(ls)) {
            loss_accum = la->valuedouble;
            loss_accum_steps = (int64_t)ls->valuedouble;
        }
    } else {
        if (metrics_open(&ml, path, -1, err)) goto done;
        if (eval) {
            double l;
            if (sft_evaluate(m, &hooks, eval, tc->batch_size, &l, NULL, err)) goto done;
            res->eval_loss_before = l;
            if (metrics_log_eval(&ml, 0, l, err)) goto done;
            TrainEvent e = {0, max_steps, 0, l, 0, 0, 0, -1, 1};
            emit(on_event, ctx, &e);
        }
    }

    AdapterSaver save = {a, tc->base_model, NULL, NULL};
    const double t_start = ftk_now();
    double t_log = t_start;
    long tokens_since_log = 0;
    const int64_t first_step = opt.step;
    for (int64_t step = opt.step; step < max_steps; step++) {
        adapters_zero_grad(a);
        double loss_sum = 0;
        long count = 0;
        for (int k = 0; k < tc->grad_accum; k++) {
            const Batch *bt;
            if (loader_next(&L, &bt, err)) goto done;
            if (run_batch(m, &hooks, rs, bt, packed, &dropout_rng, 1, &ls, &loss_sum, &count, err))
                goto done;
            for (int b = 0; b < bt->B; b++) tokens_since_log += bt->lengths[b];
        }
        if (count == 0) {
            ftk_err(err, "step %lld: the batch has no target tokens", (long long)step + 1);
            goto done;
        }
        double loss = loss_sum / (double)count;
        double gnorm, lr;
        if (trainer_update(&opt, a, &sched, tc->max_grad_norm, 1.0f / (float)count, loss, &gnorm, &lr, err))
            goto done;
        res->tokens_seen += count;
        loss_accum += loss;
        loss_accum_steps++;
        if (isnan(res->first_loss)) res->first_loss = loss;
        const int64_t done_steps = step + 1;
        DataCursor cur = loader_cursor(&L);
        double epoch = (double)cur.epoch + (train->n ? (double)cur.position / train->n : 0.0);
        int is_last = done_steps == max_steps;
        if ((tc->logging_steps > 0 && done_steps % tc->logging_steps == 0) || is_last || done_steps == 1) {
            double now = ftk_now();
            double tps = now > t_log ? tokens_since_log / (now - t_log) : 0;
            double mean_loss = loss_accum / (double)loss_accum_steps;
            double per_step = (now - t_start) / (double)(done_steps - first_step);
            TrainEvent e = {done_steps, max_steps, epoch, mean_loss, lr, gnorm, tps,
                            per_step * (double)(max_steps - done_steps), 0};
            if (metrics_log_train(&ml, done_steps, epoch, mean_loss, lr, gnorm, tps, err)) goto done;
            emit(on_event, ctx, &e);
            res->last_loss = mean_loss;
            loss_accum = 0;
            loss_accum_steps = 0;
            t_log = now;
            tokens_since_log = 0;
        }
        if (eval && ((tc->eval_steps > 0 && done_steps % tc->eval_steps == 0) || is_last)) {
            double l;
            if (sft_evaluate(m, &hooks, eval, tc->batch_size, &l, NULL, err)) goto done;
            res->eval_loss_after = l;
            if (metrics_log_eval(&ml, done_steps, l, err)) goto done;
            trainer_state_note_eval(&ts, done_steps, l);
            TrainEvent e = {done_steps, max_steps, epoch, l, lr, 0, 0, -1, 1};
            emit(on_event, ctx, &e);
        }
        if (tc->save_steps > 0 && done_steps % tc->save_steps == 0) {
            cJSON *extra = trainer_state_fill(&ts, done_steps, epoch, &cur, dropout_rng);
            cJSON_AddNumberToObject(extra, "loss_accum", loss_accum);
            cJSON_AddNumberToObject(extra, "loss_accum_steps", (double)loss_accum_steps);
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
    loss_scratch_free(&ls);
    loader_free(&L);
    runstate_free(rs);
    return rc;
}
