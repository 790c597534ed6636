// rlhf_common.c — see rlhf_common.h.
#include "cli/rlhf_common.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cli/train_common.h"
#include "model/common.h"
#include "model/tokenizer.h"
#include "sft/progress.h"

const Flag PREF_DATA_FLAGS[] = {
    {"--train-file", FLAG_STR, NULL, "preference pairs: {prompt, chosen, rejected} or HH-RLHF {chosen, rejected}; JSONL or JSON array, optionally gzipped"},
    {"--eval-file", FLAG_STR, NULL, "held-out pairs (same formats)"},
    {"--validation-split", FLAG_FLOAT, "0", "fraction of --train-file held out when no --eval-file"},
    {"--long-prompt", FLAG_STR, "skip", "a prompt that leaves no room for a response within --max-seq-length: skip (counted), truncate (cut from the left), error"},
    {0},
};

const Flag EVAL_RATE_FLAGS[] = {
    {"--eval-rate-word", FLAG_STR, NULL, "measure how often samples contain this word (\\bWORD\\b, case-insensitive), before and after training"},
    {"--eval-rate-file", FLAG_STR, NULL, "prompts for that measurement ({prompt} JSONL; default: --eval-file's or --train-file's prompts)"},
    {"--eval-rate-samples", FLAG_INT, "10", "samples per prompt"},
    {"--eval-rate-max-prompts", FLAG_INT, "0", "use only the first N prompts (0 = all)"},
    {"--eval-rate-max-new-tokens", FLAG_INT, "128", "new tokens per sample at most"},
    {"--eval-rate-temperature", FLAG_FLOAT, "1.0", "sampling temperature"},
    {"--eval-rate-top-p", FLAG_FLOAT, "0.9", "nucleus sampling threshold"},
    {"--eval-rate-seed", FLAG_INT, "8", "sampling seed"},
    {"--eval-rate-skip-before", FLAG_BOOL, NULL, "do not measure the rate before training"},
    {0},
};

void pref_long_prompt_option(const Command *cmd, DatasetOptions *o) {
    const char *lp = cli_str(cmd, "--long-prompt");
    if (!lp || strcmp(lp, "skip") == 0) o->long_prompt = LONG_PROMPT_SKIP;
    else if (strcmp(lp, "truncate") == 0) o->long_prompt = LONG_PROMPT_TRUNCATE;
    else if (strcmp(lp, "error") == 0) o->long_prompt = LONG_PROMPT_ERROR;
    else cli_usage_error(cmd, "--long-prompt must be skip, truncate or error (got '%s')", lp);
}

void pref_load_datasets(const Command *cmd, const Model *m, int n_virtual, uint64_t seed, Dataset *train,
                        Dataset *eval, int *have_eval) {
    char err[FTK_ERR_LEN];
    double vsplit = cli_float(cmd, "--validation-split");
    if (vsplit < 0 || vsplit >= 1) cli_usage_error(cmd, "--validation-split must be in [0, 1)");
    DatasetOptions dopt = train_dataset_options(cmd, DS_PREFERENCE, m, n_virtual);
    pref_long_prompt_option(cmd, &dopt);
    TokEncoder enc;
    tok_encoder_init(&enc, m->tok);
    Dataset all;
    if (dataset_load(&all, cli_str(cmd, "--train-file"), &dopt, &enc, err)) cli_die("%s", err);
    *have_eval = 0;
    if (cli_str(cmd, "--eval-file")) {
        *train = all;
        if (dataset_load(eval, cli_str(cmd, "--eval-file"), &dopt, &enc, err)) cli_die("%s", err);
        *have_eval = 1;
    } else if (vsplit > 0) {
        if (all.n < 2) cli_die("%s: %d pair(s) cannot be split for validation", all.path, all.n);
        if (dataset_split(&all, vsplit, seed, train, eval, err)) cli_die("%s", err);
        dataset_free(&all);
        *have_eval = 1;
    } else {
        *train = all;
    }
    train_print_dataset("train", train);
    if (*have_eval) train_print_dataset("eval", eval);
}

void pref_print_event(void *ctx, const PairEvent *e) {
    PairProgressCtx *p = ctx;
    if (e->is_eval) {
        if (p->tty && p->last_len) fprintf(stderr, "\n");
        fprintf(stderr, "eval step %lld/%lld | loss %.4f | %s %.4f | margin %.4f | chosen %.4f | rejected %.4f\n",
                (long long)e->step, (long long)e->max_steps, e->loss, p->acc_label, e->accuracy, e->margin, e->chosen,
                e->rejected);
        p->last_len = 0;
        return;
    }
    char eta[32], line[320];
    progress_hms(eta, sizeof eta, e->eta_s);
    int n = snprintf(line, sizeof line, "step %lld/%lld | loss %.4f | %s %.3f | margin %.4f | lr %.2e | %.1f pairs/s | eta %s",
                     (long long)e->step, (long long)e->max_steps, e->loss, p->acc_label, e->accuracy, e->margin, e->lr,
                     e->pairs_per_sec, eta);
    if (n >= (int)sizeof line) n = (int)sizeof line - 1;
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

int eval_rate_requested(const Command *cmd) { return cli_str(cmd, "--eval-rate-word") != NULL; }

void eval_rate_run(const Command *cmd, const Model *m, const ModelAdapters *hooks, const char *label,
                   const char *samples_path, RateResult *out) {
    char err[FTK_ERR_LEN];
    RateOptions ro;
    rate_options_default(&ro);
    const char *word = cli_str(cmd, "--eval-rate-word");
    if (!word || !word[0] || strlen(word) >= sizeof ro.word) cli_usage_error(cmd, "--eval-rate-word needs a word");
    snprintf(ro.word, sizeof ro.word, "%s", word);
    ro.samples_per_prompt = cli_int(cmd, "--eval-rate-samples");
    ro.gen.max_new_tokens = cli_int(cmd, "--eval-rate-max-new-tokens");
    ro.gen.temperature = (float)cli_float(cmd, "--eval-rate-temperature");
    ro.gen.top_p = (float)cli_float(cmd, "--eval-rate-top-p");
    ro.seed = (uint64_t)cli_int(cmd, "--eval-rate-seed");
    if (ro.samples_per_prompt < 1) cli_usage_error(cmd, "--eval-rate-samples must be >= 1");
    if (ro.gen.max_new_tokens < 1) cli_usage_error(cmd, "--eval-rate-max-new-tokens must be >= 1");
    if (ro.gen.temperature < 0) cli_usage_error(cmd, "--eval-rate-temperature must be >= 0");
    if (!(ro.gen.top_p > 0 && ro.gen.top_p <= 1)) cli_usage_error(cmd, "--eval-rate-top-p must be in (0, 1]");
    const char *file = cli_str(cmd, "--eval-rate-file");
    if (!file) file = cli_str(cmd, "--eval-file");
    if (!file) file = cli_str(cmd, "--train-file");
    if (!file) cli_usage_error(cmd, "--eval-rate-word needs --eval-rate-file");
    DatasetOptions dopt = dataset_options_default(DS_PROMPT);
    dopt.max_seq_length = m->cfg.max_seq_len - ro.gen.max_new_tokens;
    if (dopt.max_seq_length < 2) dopt.max_seq_length = 2;
    TokEncoder enc;
    tok_encoder_init(&enc, m->tok);
    Dataset prompts;
    if (dataset_load(&prompts, file, &dopt, &enc, err)) cli_die("%s", err);
    int max_prompts = cli_int(cmd, "--eval-rate-max-prompts");
    if (max_prompts > 0 && max_prompts < prompts.n) prompts.n = max_prompts;   // the first N items
    if (word_rate_eval(m, hooks, &prompts, &ro, samples_path, out, err)) cli_die("%s", err);
    fprintf(stderr, "%s: '%s' in %ld/%ld samples = %.1f%% (95%% CI %.1f-%.1f%%; %d prompts x %d, T %.2g, top-p %.2g, "
                    "%d new tokens max, mean %.1f; %.1f s)\n",
            label, ro.word, out->hits, out->total, 100 * out->rate, 100 * out->ci_lo, 100 * out->ci_hi, prompts.n,
            ro.samples_per_prompt, (double)ro.gen.temperature, (double)ro.gen.top_p, ro.gen.max_new_tokens,
            out->mean_new_tokens, out->seconds);
    dataset_free(&prompts);
}
