// train_common.c — see train_common.h.
#include "cli/train_common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lora/peft.h"
#include "model/common.h"
#include "model/generate.h"
#include "model/tokenizer.h"
#include "sft/checkpoint.h"
#include "sft/progress.h"

const Flag TRAIN_ADAPTER_FLAGS[] = {
    {"--peft", FLAG_STR, "lora", "what to train: lora, prompt (soft prompt), or lora,prompt"},
    {"--lora-r", FLAG_INT, "8", "LoRA rank"},
    {"--lora-alpha", FLAG_FLOAT, "16", "LoRA alpha (scale alpha/r)"},
    {"--lora-dropout", FLAG_FLOAT, "0.05", "dropout on the LoRA input"},
    {"--target-modules", FLAG_LIST, NULL,
     "linears to adapt (llama: q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj; gpt2: c_attn,c_proj,c_fc "
     "or q_proj,v_proj for the c_attn blocks; all-linear) (default: q_proj,v_proj)"},
    {"--layers-to-transform", FLAG_STR, NULL, "comma-separated layer indices to adapt (default: all)"},
    {"--use-rslora", FLAG_BOOL, NULL, "scale by alpha/sqrt(r) (rank-stabilised LoRA)"},
    {"--init-lora-weights", FLAG_STR, "true", "true (kaiming-uniform A, B = 0) or gaussian"},
    {"--num-virtual-tokens", FLAG_INT, "20", "soft-prompt length (with --peft prompt)"},
    {"--prompt-tuning-init", FLAG_STR, "random", "soft-prompt init: random, text, sample_vocab"},
    {"--prompt-tuning-init-text", FLAG_STR, NULL, "text whose embeddings initialise the soft prompt"},
    {0},
};

const Flag TRAIN_DATA_FLAGS[] = {
    {"--template", FLAG_STR, "auto", "record template: auto, plain, alpaca, chatml"},
    {"--max-seq-length", FLAG_INT, "1024", "tokens per sequence at most (prompt is cut from the left first)"},
    {"--packing", FLAG_BOOL, NULL, "pack sequences into rows of --max-seq-length (no cross-attention)"},
    {"--train-on-prompt", FLAG_BOOL, NULL, "put the loss on prompt tokens too"},
    {"--no-eos", FLAG_BOOL, NULL, "do not append EOS after each response"},
    {"--skip-bad-lines", FLAG_BOOL, NULL, "skip and count malformed records instead of failing"},
    {0},
};

const Flag TRAIN_OPT_FLAGS[] = {
    {"--learning-rate", FLAG_FLOAT, "1e-3", "peak learning rate (AdamW)"},
    {"--lr-scheduler-type", FLAG_STR, "linear", "constant, constant_with_warmup, linear, cosine"},
    {"--warmup-steps", FLAG_INT, "0", "linear warmup steps"},
    {"--weight-decay", FLAG_FLOAT, "0", "AdamW decoupled weight decay"},
    {"--adam-beta1", FLAG_FLOAT, "0.9", "AdamW beta1"},
    {"--adam-beta2", FLAG_FLOAT, "0.999", "AdamW beta2"},
    {"--adam-epsilon", FLAG_FLOAT, "1e-8", "AdamW epsilon"},
    {"--max-grad-norm", FLAG_FLOAT, "1.0", "global gradient-norm clipping (0 = off)"},
    {"--max-steps", FLAG_INT, "-1", "optimizer steps (> 0 overrides --num-train-epochs)"},
    {"--num-train-epochs", FLAG_FLOAT, "1", "passes over the training data"},
    {"--batch-size", FLAG_INT, "8", "sequences per micro-batch"},
    {"--gradient-accumulation-steps", FLAG_INT, "1", "micro-batches per optimizer step"},
    {"--seed", FLAG_INT, "42", "seed for initialisation, data order and dropout"},
    {"--logging-steps", FLAG_INT, "10", "log every N steps"},
    {"--eval-steps", FLAG_INT, "0", "evaluate every N steps (0 = before and after training only)"},
    {"--save-steps", FLAG_INT, "0", "write checkpoint-N every N steps (0 = only the final adapter)"},
    {"--save-total-limit", FLAG_INT, "0", "keep at most this many checkpoints (0 = all)"},
    {"--resume-from-checkpoint", FLAG_STR, NULL, "checkpoint dir to continue from, or 'latest'"},
    {"--threads", FLAG_INT, "0", "worker threads (0 = one per CPU)"},
    {"--gradient-checkpointing", FLAG_BOOL, NULL,
     "keep only each layer's input; backward recomputes the layer (activation memory /3, steps ~25% slower)"},
    {0},
};

void cli_flags_concat(Flag *out, int cap, const Flag *const *groups, int n_groups) {
    int k = 0;
    for (int g = 0; g < n_groups; g++)
        for (const Flag *f = groups[g]; f->name; f++) {
            if (k + 1 >= cap) {
                fprintf(stderr, "internal error: too many flags\n");
                abort();
            }
            out[k++] = *f;
        }
    memset(&out[k], 0, sizeof out[k]);
}

// The value of a string flag into a fixed buffer of the config (left as is when unset); a value that
// does not fit is a usage error rather than a silently cut list.
static void copy_flag(const Command *cmd, const char *name, char *dst, size_t n) {
    const char *v = cli_str(cmd, name);
    if (!v) return;
    if (strlen(v) >= n) cli_usage_error(cmd, "%s is too long (%zu bytes, at most %zu)", name, strlen(v), n - 1);
    memcpy(dst, v, strlen(v) + 1);
}

void train_parse_common(const Command *cmd, TrainConfig *tc, AdapterConfig *ac, int score_head) {
    char err[FTK_ERR_LEN];
    train_config_default(tc);
    adapter_config_default(ac);
    const char *peft = cli_str(cmd, "--peft");
    if (strcmp(peft, "lora") == 0) ac->types = ADAPTER_LORA;
    else if (strcmp(peft, "prompt") == 0) ac->types = ADAPTER_PROMPT;
    else if (strcmp(peft, "lora,prompt") == 0 || strcmp(peft, "prompt,lora") == 0) ac->types = ADAPTER_LORA | ADAPTER_PROMPT;
    else cli_usage_error(cmd, "--peft must be lora, prompt or lora,prompt (got '%s')", peft);
    ac->r = cli_int(cmd, "--lora-r");
    ac->alpha = (float)cli_float(cmd, "--lora-alpha");
    ac->dropout = (float)cli_float(cmd, "--lora-dropout");
    ac->use_rslora = cli_bool(cmd, "--use-rslora");
    if (ac->r < 1) cli_usage_error(cmd, "--lora-r must be >= 1");
    if (ac->dropout < 0 || ac->dropout >= 1) cli_usage_error(cmd, "--lora-dropout must be in [0, 1)");
    const char *init = cli_str(cmd, "--init-lora-weights");
    if (strcmp(init, "true") == 0) ac->init = LORA_INIT_DEFAULT;
    else if (strcmp(init, "gaussian") == 0) ac->init = LORA_INIT_GAUSSIAN;
    else if (strcmp(init, "false") == 0) ac->init = LORA_INIT_NONE;
    else cli_usage_error(cmd, "--init-lora-weights must be true, gaussian or false");
    copy_flag(cmd, "--target-modules", ac->target_modules, sizeof ac->target_modules);
    copy_flag(cmd, "--layers-to-transform", ac->layers_to_transform, sizeof ac->layers_to_transform);
    if (ac->types & ADAPTER_PROMPT) {
        ac->num_virtual_tokens = cli_int(cmd, "--num-virtual-tokens");
        if (ac->num_virtual_tokens < 1) cli_usage_error(cmd, "--num-virtual-tokens must be >= 1");
        const char *pi = cli_str(cmd, "--prompt-tuning-init");
        if (strcmp(pi, "random") == 0) ac->prompt_init = PROMPT_INIT_RANDOM;
        else if (strcmp(pi, "text") == 0) ac->prompt_init = PROMPT_INIT_TEXT;
        else if (strcmp(pi, "sample_vocab") == 0) ac->prompt_init = PROMPT_INIT_SAMPLE_VOCAB;
        else cli_usage_error(cmd, "--prompt-tuning-init must be random, text or sample_vocab");
        if (ac->prompt_init == PROMPT_INIT_TEXT) {
            if (!cli_str(cmd, "--prompt-tuning-init-text"))
                cli_usage_error(cmd, "--prompt-tuning-init text needs --prompt-tuning-init-text");
            copy_flag(cmd, "--prompt-tuning-init-text", ac->prompt_init_text, sizeof ac->prompt_init_text);
        }
    }
    ac->score_head = score_head;

    tc->learning_rate = cli_float(cmd, "--learning-rate");
    if (lr_schedule_parse(cli_str(cmd, "--lr-scheduler-type"), &tc->lr_scheduler, err)) cli_usage_error(cmd, "%s", err);
    tc->warmup_steps = cli_int(cmd, "--warmup-steps");
    tc->weight_decay = cli_float(cmd, "--weight-decay");
    tc->adam_beta1 = cli_float(cmd, "--adam-beta1");
    tc->adam_beta2 = cli_float(cmd, "--adam-beta2");
    tc->adam_epsilon = cli_float(cmd, "--adam-epsilon");
    tc->max_grad_norm = cli_float(cmd, "--max-grad-norm");
    tc->max_steps = cli_int(cmd, "--max-steps");
    tc->num_train_epochs = cli_float(cmd, "--num-train-epochs");
    tc->batch_size = cli_int(cmd, "--batch-size");
    tc->grad_accum = cli_int(cmd, "--gradient-accumulation-steps");
    tc->gradient_checkpointing = cli_bool(cmd, "--gradient-checkpointing");
    tc->seed = (uint64_t)cli_int(cmd, "--seed");
    tc->logging_steps = cli_int(cmd, "--logging-steps");
    tc->eval_steps = cli_int(cmd, "--eval-steps");
    tc->save_steps = cli_int(cmd, "--save-steps");
    tc->save_total_limit = cli_int(cmd, "--save-total-limit");
    tc->output_dir = cli_str(cmd, "--output-dir");
    tc->base_model = cli_str(cmd, "--model");
    if (!(tc->learning_rate > 0)) cli_usage_error(cmd, "--learning-rate must be > 0");
    if (tc->batch_size < 1) cli_usage_error(cmd, "--batch-size must be >= 1");
    if (tc->grad_accum < 1) cli_usage_error(cmd, "--gradient-accumulation-steps must be >= 1");
    if (tc->max_steps <= 0 && !(tc->num_train_epochs > 0))
        cli_usage_error(cmd, "give --max-steps > 0 or --num-train-epochs > 0");
    if (tc->warmup_steps < 0 || tc->logging_steps < 0 || tc->eval_steps < 0 || tc->save_steps < 0)
        cli_usage_error(cmd, "step counts must be >= 0");
    const char *resume = cli_str(cmd, "--resume-from-checkpoint");
    if (resume && strcmp(resume, "latest") == 0) {
        static char latest[4200];
        int64_t step;
        if (checkpoint_latest(tc->output_dir, latest, sizeof latest, &step, err)) cli_die("%s", err);
        if (step < 0) cli_die("%s: no checkpoint-* to resume from", tc->output_dir);
        resume = latest;
    }
    tc->resume_from = resume;
    if (cli_bool(cmd, "--packing")) tc->pack_len = cli_int(cmd, "--max-seq-length");
    cli_set_threads(cli_int(cmd, "--threads"));
}

void train_check_output_dir(const char *dir, const char *resume, int overwrite) {
    char p[4200];
    snprintf(p, sizeof p, "%s/adapter_config.json", dir);
    if (!resume && !overwrite && ftk_file_exists(p))
        cli_die("%s already holds an adapter: pass --overwrite-output-dir, or --resume-from-checkpoint", dir);
}

DatasetOptions train_dataset_options(const Command *cmd, DatasetKind kind, const Model *m, int n_virtual) {
    DatasetOptions o = dataset_options_default(kind);
    if (template_from_name(cli_str(cmd, "--template"), &o.template_kind))
        cli_usage_error(cmd, "--template must be auto, plain, alpaca or chatml");
    int max_len = cli_int(cmd, "--max-seq-length");
    if (max_len < 2) cli_usage_error(cmd, "--max-seq-length must be >= 2");
    if (max_len + n_virtual > m->cfg.max_seq_len) {
        max_len = m->cfg.max_seq_len - n_virtual;
        if (cli_given(cmd, "--max-seq-length"))
            fprintf(stderr, "note: --max-seq-length lowered to %d to fit the model's context of %d\n", max_len,
                    m->cfg.max_seq_len);
    }
    o.max_seq_length = max_len;
    o.add_eos = !cli_bool(cmd, "--no-eos");
    o.train_on_prompt = cli_bool(cmd, "--train-on-prompt");
    o.skip_bad_lines = cli_bool(cmd, "--skip-bad-lines");
    return o;
}

void train_print_trainable(const Adapters *a, const Model *m) {
    size_t total = model_param_count(&m->cfg) + a->n_params;
    char t[48], all[48];
    cli_with_commas(a->n_params, t);
    cli_with_commas(total, all);
    fprintf(stderr, "trainable params: %s || all params: %s || trainable%%: %.4f\n", t, all,
            100.0 * (double)a->n_params / (double)total);
}

void train_print_dataset(const char *name, const Dataset *ds) {
    char buf[4096];
    dataset_summary_format(ds, buf, sizeof buf);
    fprintf(stderr, "%s data %s:\n%s\n", name, ds->path, buf);
}

void train_print_sample(const char *label, const Model *m, const ModelAdapters *hooks, const char *prompt, int n) {
    char err[FTK_ERR_LEN];
    int *ids = NULL, n_ids = 0;
    if (tokenizer_encode(m->tok, prompt, -1, -1, &ids, &n_ids, err)) cli_die("%s", err);
    GenParams gp = gen_params_default();
    gp.max_new_tokens = n;
    int *out = NULL, out_len = 0;
    uint64_t rng = 1;
    const int *prompts[1] = {ids};
    if (generate(m, hooks, prompts, &n_ids, 1, &gp, &rng, &out, &out_len, NULL, err)) cli_die("%s", err);
    int *all = malloc(sizeof(int) * (size_t)(n_ids + out_len));
    if (!all) cli_die("out of memory");
    memcpy(all, ids, sizeof(int) * (size_t)n_ids);
    memcpy(all + n_ids, out, sizeof(int) * (size_t)out_len);
    char *text = tokenizer_decode(m->tok, all, n_ids + out_len);
    fprintf(stderr, "sample %-6s | %s\n", label, text ? text : "");
    free(text);
    free(all);
    free(out);
    free(ids);
}

cJSON *train_args_json(const Command *cmd) {
    cJSON *o = cJSON_CreateObject();
    for (int i = 0; cmd->flags[i].name; i++) {
        const Flag *f = &cmd->flags[i];
        const char *v = cmd->value[i];
        const char *key = f->name + 2;
        if (f->type == FLAG_BOOL) {
            cJSON_AddBoolToObject(o, key, v && strcmp(v, "0") != 0);
        } else if (!v) {
            cJSON_AddNullToObject(o, key);
        } else if (f->type == FLAG_INT || f->type == FLAG_FLOAT) {
            cJSON_AddNumberToObject(o, key, strtod(v, NULL));
        } else {
            cJSON_AddStringToObject(o, key, v);
        }
    }
    return o;
}

void train_print_event(void *ctx, const TrainEvent *e) {
    TrainProgressCtx *p = ctx;
    if (e->is_eval) {
        if (p->tty && p->last_len) fprintf(stderr, "\n");
        fprintf(stderr, "eval step %lld/%lld | loss %.4f | ppl %.3f\n", (long long)e->step, (long long)e->max_steps,
                e->loss, exp(e->loss));
        p->last_len = 0;
        return;
    }
    char line[256];
    int n = progress_format(line, sizeof line, e->step, e->max_steps, e->loss, e->lr, e->tokens_per_sec, e->eta_s);
    if (p->tty) {
        fprintf(stderr, "\r%s%*s", line, p->last_len > n ? p->last_len - n : 0, "");
        p->last_len = n;
        if (e->step == e->max_steps) {
            fprintf(stderr, "\n");
            p->last_len = 0;
        }
    } else {
        fprintf(stderr, "%s | grad_norm %.3f | epoch %.2f\n", line, e->grad_norm, e->epoch);
    }
}
