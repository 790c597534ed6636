// cmd_dpo.c — `ftk dpo`: direct preference optimisation of a LoRA (+ soft prompt) policy against a
// frozen reference (the base model, or an SFT adapter that the policy starts from).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "cli/cli.h"
#include "cli/rlhf_common.h"
#include "cli/train_common.h"
#include "lora/adapter.h"
#include "lora/peft.h"
#include "model/common.h"
#include "rlhf/dpo_train.h"
#include "sft/metrics.h"

static const Flag DPO_OWN_FLAGS[] = {
    {"--model", FLAG_STR, NULL, "base model: HF dir, .gguf, or llama2.c .bin (frozen)"},
    {"--tokenizer", FLAG_STR, NULL, "tokenizer file overriding the model's"},
    {"--output-dir", FLAG_STR, NULL, "where the policy adapter, checkpoints and metrics go"},
    {"--overwrite-output-dir", FLAG_BOOL, NULL, "allow an output dir that already holds an adapter"},
    {"--sft-adapter", FLAG_STR, NULL, "SFT adapter dir: the policy starts from it and the reference is it, frozen "
                                      "(its config replaces the --lora-* / --peft flags)"},
    {"--ref-adapter", FLAG_STR, NULL, "the same as --sft-adapter"},
    {"--beta", FLAG_FLOAT, "0.1", "DPO beta (strength of the pull towards the reference)"},
    {"--label-smoothing", FLAG_FLOAT, "0", "cDPO: probability that a label is flipped, in [0, 0.5]"},
    {"--loss-type", FLAG_STR, "sigmoid", "sigmoid (DPO) or ipo (length-averaged log-probs)"},
    {"--eval-batch-size", FLAG_INT, "0", "pairs per evaluation forward (0 = --batch-size)"},
    {0},
};

static void set_default(Flag *flags, const char *name, const char *def) {
    for (Flag *f = flags; f->name; f++)
        if (strcmp(f->name, name) == 0) f->def = def;
}

// Loads a PEFT dir meant as an SFT policy: LoRA and/or soft prompt, no heads.
static void load_sft_adapter(Adapters *a, const Model *m, const char *dir) {
    char err[FTK_ERR_LEN];
    if (peft_load(a, m, dir, err)) cli_die("%s", err);
    if (a->score) cli_die("%s: is a reward model (it has a score head), not an SFT policy adapter", dir);
    if (a->value_w) cli_die("%s: has a PPO value head; pass the policy adapter without value_head.safetensors", dir);
}

static void write_rates(const char *out_dir, const char *word, const RateResult *before, const RateResult *after) {
    char path[4200], err[FTK_ERR_LEN];
    if (ftk_path_join(path, sizeof path, out_dir, "eval_rate.json", err)) cli_die("%s", err);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "word", word);
    const RateResult *r[2] = {before, after};
    const char *names[2] = {"before", "after"};
    for (int k = 0; k < 2; k++) {
        if (!r[k]) continue;
        cJSON *x = cJSON_AddObjectToObject(o, names[k]);
        cJSON_AddNumberToObject(x, "hits", (double)r[k]->hits);
        cJSON_AddNumberToObject(x, "total", (double)r[k]->total);
        cJSON_AddNumberToObject(x, "rate", json_round9(r[k]->rate));
        cJSON_AddNumberToObject(x, "ci95_low", json_round9(r[k]->ci_lo));
        cJSON_AddNumberToObject(x, "ci95_high", json_round9(r[k]->ci_hi));
        cJSON_AddNumberToObject(x, "mean_new_tokens", json_round9(r[k]->mean_new_tokens));
    }
    if (json_write_atomic(path, o, err)) cli_die("%s", err);
    cJSON_Delete(o);
}

int cmd_dpo(int argc, char **argv) {
    Flag flags[CLI_MAX_FLAGS];
    const Flag *groups[] = {DPO_OWN_FLAGS, PREF_DATA_FLAGS, EVAL_RATE_FLAGS, TRAIN_ADAPTER_FLAGS, TRAIN_DATA_FLAGS,
                            TRAIN_OPT_FLAGS};
    cli_flags_concat(flags, CLI_MAX_FLAGS, groups, 6);
    set_default(flags, "--lora-dropout", "0");
    Command cmd = {.name = "dpo",
                   .summary = "direct preference optimisation of a LoRA policy on preference pairs (reference: the "
                              "base model or --sft-adapter); --batch-size counts pairs",
                   .usage = "ftk dpo --model M --train-file F [--eval-file F] --output-dir D [--sft-adapter S] [flags]",
                   .flags = flags};
    cli_parse(&cmd, argc, argv);
    if (!cli_str(&cmd, "--model")) cli_usage_error(&cmd, "--model is required");
    if (!cli_str(&cmd, "--train-file")) cli_usage_error(&cmd, "--train-file is required");
    if (!cli_str(&cmd, "--output-dir")) cli_usage_error(&cmd, "--output-dir is required");
    if (cli_bool(&cmd, "--packing")) cli_usage_error(&cmd, "--packing does not apply to preference pairs");
    TrainConfig tc;
    AdapterConfig ac;
    train_parse_common(&cmd, &tc, &ac, 0);
    DpoOptions o;
    dpo_options_default(&o);
    o.beta = (float)cli_float(&cmd, "--beta");
    o.label_smoothing = (float)cli_float(&cmd, "--label-smoothing");
    o.eval_batch = cli_int(&cmd, "--eval-batch-size");
    if (dpo_loss_type_from_name(cli_str(&cmd, "--loss-type"), &o.loss_type))
        cli_usage_error(&cmd, "--loss-type must be sigmoid or ipo");
    if (!(o.beta > 0)) cli_usage_error(&cmd, "--beta must be > 0");
    if (!(o.label_smoothing >= 0 && o.label_smoothing <= 0.5f))
        cli_usage_error(&cmd, "--label-smoothing must be in [0, 0.5]");
    if (o.loss_type == DPO_IPO && o.label_smoothing > 0) cli_usage_error(&cmd, "--label-smoothing does not apply to ipo");
    if (o.eval_batch < 0) cli_usage_error(&cmd, "--eval-batch-size must be >= 0");
    const char *sft = cli_str(&cmd, "--sft-adapter"), *ref_dir = cli_str(&cmd, "--ref-adapter");
    if (sft && ref_dir && strcmp(sft, ref_dir) != 0)
        cli_usage_error(&cmd, "--sft-adapter and --ref-adapter name the same thing; give one");
    if (!sft) sft = ref_dir;
    const char *out_dir = cli_str(&cmd, "--output-dir");
    train_check_output_dir(out_dir, tc.resume_from, cli_bool(&cmd, "--overwrite-output-dir"));

    Model m;
    cli_load_model(&m, cli_str(&cmd, "--model"), cli_str(&cmd, "--tokenizer"));
    char err[FTK_ERR_LEN];
    Adapters policy, ref_a;
    ModelAdapters ref_hooks;
    int have_ref_a = 0;
    if (sft) {
        load_sft_adapter(&policy, &m, sft);
        load_sft_adapter(&ref_a, &m, sft);
        have_ref_a = 1;
        adapters_hooks(&ref_a, 0, &ref_hooks);
        fprintf(stderr, "policy starts from %s; reference = that adapter, frozen\n", sft);
    } else {
        if (adapters_create(&policy, &ac, &m, tc.seed, err)) cli_die("%s", err);
        adapters_hooks(&policy, 0, &ref_hooks);
        ref_hooks.disabled = 1;   // the reference is the bare base model
        fprintf(stderr, "reference = the base model (policy adapters disabled)\n");
    }
    train_print_trainable(&policy, &m);
    ModelAdapters policy_hooks;
    adapters_hooks(&policy, 0, &policy_hooks);

    Dataset train, eval;
    int have_eval;
    pref_load_datasets(&cmd, &m, policy_hooks.n_virtual, tc.seed, &train, &eval, &have_eval);

    RateResult before, after;
    const int rate = eval_rate_requested(&cmd);
    const int rate_before = rate && !cli_bool(&cmd, "--eval-rate-skip-before") && !tc.resume_from;
    if (rate_before) eval_rate_run(&cmd, &m, &policy_hooks, "rate before", NULL, &before);

    // Reference log-probs: once per pair, before training (they never change).
    const int la = o.loss_type == DPO_IPO;
    const int eb = o.eval_batch > 0 ? o.eval_batch : tc.batch_size;
    DpoRefCache train_ref, eval_ref;
    double t0 = ftk_now();
    if (dpo_ref_cache_build(&m, &ref_hooks, &train, eb, la, &train_ref, err)) cli_die("%s", err);
    if (have_eval && dpo_ref_cache_build(&m, &ref_hooks, &eval, eb, la, &eval_ref, err)) cli_die("%s", err);
    fprintf(stderr, "reference log-probs of %d%s pairs computed once in %.1f s\n", train.n + (have_eval ? eval.n : 0),
            have_eval ? " (train + eval)" : "", ftk_now() - t0);

    cJSON *args = train_args_json(&cmd);
    PairTrainResult res;
    PairProgressCtx pctx = {cli_stderr_is_tty(), 0, "reward acc"};
    if (dpo_train(&m, &policy, &train, &train_ref, have_eval ? &eval : NULL, have_eval ? &eval_ref : NULL, &tc, &o,
                  args, pref_print_event, &pctx, &res, err)) {
        if (pctx.tty) fprintf(stderr, "\n");
        cli_die("%s", err);
    }
    fprintf(stderr, "\ntrained %lld steps in %.1f s (%ld pairs, %.1f pairs/s)\n", (long long)res.steps_done,
            res.seconds, res.pairs_seen, res.seconds > 0 ? res.pairs_seen / res.seconds : 0.0);
    if (have_eval && res.eval_after.pairs > 0) {
        const PairSums *f = &res.eval_after;
        fprintf(stderr, "eval: loss %.4f | reward accuracy %.4f | reward margin %.4f (%ld pairs)\n", f->loss / f->pairs,
                f->correct / f->pairs, f->margin / f->pairs, f->pairs);
    }
    fprintf(stderr, "policy adapter saved to %s\n", out_dir);
    if (rate) {
        eval_rate_run(&cmd, &m, &policy_hooks, "rate after", NULL, &after);
        write_rates(out_dir, cli_str(&cmd, "--eval-rate-word"), rate_before ? &before : NULL, &after);
    }
    cJSON_Delete(args);
    dpo_ref_cache_free(&train_ref);
    if (have_eval) {
        dpo_ref_cache_free(&eval_ref);
        dataset_free(&eval);
    }
    dataset_free(&train);
    if (have_ref_a) adapters_free(&ref_a);
    adapters_free(&policy);
    model_free(&m);
    return 0;
}
