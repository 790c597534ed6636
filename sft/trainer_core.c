// trainer_core.c — see trainer_core.h.
#include "sft/trainer_core.h"

#include <math.h>
#include <string.h>

#include "lora/peft.h"
#include "model/common.h"

int trainer_check_context(const Model *m, int T_max, int n_virtual, char *err) {
    if (T_max > m->cfg.max_seq_len)
        return ftk_err(err, "sequences of %d positions (incl. %d virtual tokens) exceed the model's context %d: "
                            "lower --max-seq-length",
                       T_max, n_virtual, m->cfg.max_seq_len);
    return 0;
}

int64_t trainer_max_steps(const TrainConfig *tc, int64_t batches_per_epoch) {
    int64_t max_steps = tc->max_steps;
    if (max_steps <= 0) {
        double micro = ceil(tc->num_train_epochs * (double)batches_per_epoch);
        max_steps = (int64_t)ceil(micro / tc->grad_accum);
        if (max_steps < 1) max_steps = 1;
    }
    return max_steps;
}

int trainer_write_args(const TrainConfig *tc, const cJSON *training_args, char *metrics_path, size_t n, char *err) {
    if (training_args) {
        if (ftk_path_join(metrics_path, n, tc->output_dir, "training_args.json", err)) return -1;
        if (json_write_atomic(metrics_path, training_args, err)) return -1;
    }
    return ftk_path_join(metrics_path, n, tc->output_dir, "metrics.jsonl", err);
}

int trainer_optim_init(AdamW *opt, size_t n_params, const TrainConfig *tc, char *err) {
    if (adamw_init(opt, n_params, err)) return -1;
    opt->beta1 = tc->adam_beta1;
    opt->beta2 = tc->adam_beta2;
    opt->eps = tc->adam_epsilon;
    opt->weight_decay = tc->weight_decay;
    return 0;
}

int trainer_update(AdamW *opt, Adapters *a, const LrSchedule *sched, double max_grad_norm, float grad_scale,
                   double loss, double *gnorm, double *lr, char *err) {
    // Sum-of-losses gradients -> the step's mean (the loops accumulate sums over micro-batches).
    if (grad_scale != 1.0f)
        for (size_t i = 0; i < a->n_params; i++) a->grads[i] *= grad_scale;
    if (check_loss_finite(loss, opt->step + 1, err)) return -1;
    if (grad_clip(a->grads, a->n_params, max_grad_norm, gnorm, err)) return -1;
    *lr = lr_at(sched, opt->step);
    adamw_step(opt, a->params, a->grads, *lr);
    return 0;
}

int trainer_save_adapter(const char *dir, void *user, char *err) {
    const AdapterSaver *s = user;
    if (peft_save(s->a, dir, s->base_model, err)) return -1;
    return s->save_extra ? s->save_extra(s->extra_ctx, dir, err) : 0;
}

int trainer_load_adapter(const Model *m, Adapters *a, const char *dir, int need_value_head, char *err) {
    Adapters tmp;
    if (peft_load(&tmp, m, dir, err)) return -1;
    const int has_value = tmp.value_w != NULL;
    if (tmp.n_params != a->n_params || (need_value_head && !has_value)) {
        size_t got = tmp.n_params;
        adapters_free(&tmp);
        if (need_value_head)
            return ftk_err(err, "%s: checkpoint adapter has %zu parameters%s, this run's adapter has %zu", dir, got,
                           has_value ? "" : " and no value head", a->n_params);
        return ftk_err(err, "%s: checkpoint adapter has %zu parameters, this run's adapter has %zu (different "
                            "--lora-r / --target-modules / --num-virtual-tokens?)",
                       dir, got, a->n_params);
    }
    memcpy(a->params, tmp.params, a->n_params * sizeof(float));
    adapters_free(&tmp);
    return 0;
}

cJSON *trainer_state_fill(TrainerState *ts, int64_t global_step, double epoch, const DataCursor *cur,
                          uint64_t dropout_rng) {
    ts->global_step = global_step;
    ts->epoch = epoch;
    ts->data_epoch = cur->epoch;
    ts->data_position = cur->position;
    ts->data_rng = cur->epoch_rng;
    ts->dropout_rng = dropout_rng;
    cJSON_Delete(ts->extra);
    ts->extra = cJSON_CreateObject();
    return ts->extra;
}

void trainer_state_note_eval(TrainerState *ts, int64_t step, double loss) {
    if (isnan(ts->best_eval_loss) || loss < ts->best_eval_loss) {
        ts->best_eval_loss = loss;
        ts->best_eval_step = step;
    }
    ts->last_eval_loss = loss;
}

int trainer_checkpoint(const TrainConfig *tc, const AdamW *opt, const TrainerState *ts, const cJSON *training_args,
                       AdapterSaver *save, char *err) {
    return checkpoint_save(tc->output_dir, opt, ts, training_args, trainer_save_adapter, save, tc->save_total_limit,
                           err);
}

int trainer_resume_load(const Model *m, Adapters *a, const char *dir, int need_value_head, AdamW *opt,
                        TrainerState *ts, char *err) {
    if (trainer_load_adapter(m, a, dir, need_value_head, err)) return -1;
    return checkpoint_load(dir, opt, ts, err);
}

int trainer_resume_position(DataLoader *L, const TrainerState *ts, uint64_t seed, int64_t n_items,
                            uint64_t *dropout_rng, MetricsLog *ml, const char *metrics_path, int64_t resume_step,
                            char *err) {
    DataCursor c = {seed, n_items, ts->data_epoch, ts->data_position, ts->data_rng};
    if (loader_restore(L, &c, err)) return -1;
    *dropout_rng = ts->dropout_rng;
    return metrics_open(ml, metrics_path, resume_step, err);
}
