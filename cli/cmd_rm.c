// cmd_rm.c — `ftk rm`: train a reward model (frozen base + LoRA + `score` head) on preference pairs.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "cli/cli.h"
#include "cli/rlhf_common.h"
#include "cli/train_common.h"
#include "lora/adapter.h"
#include "model/common.h"
#include "model/tokenizer.h"
#include "rlhf/reward_model.h"
#include "rlhf/rm_train.h"

static const Flag RM_OWN_FLAGS[] = {
    {"--model", FLAG_STR, NULL, "base model: HF dir, .gguf, or llama2.c .bin (frozen)"},
    {"--tokenizer", FLAG_STR, NULL, "tokenizer file overriding the model's"},
    {"--output-dir", FLAG_STR, NULL, "where the reward model (PEFT dir + score head), checkpoints and metrics go"},
    {"--overwrite-output-dir", FLAG_BOOL, NULL, "allow an output dir that already holds an adapter"},
    {"--margin", FLAG_FLOAT, "0", "margin m in -log sigmoid(r_chosen - r_rejected - m), for every pair"},
    {"--center-rewards-coefficient", FLAG_FLOAT, "0", "weight of mean (r_chosen + r_rejected)^2 (TRL suggests 0.01)"},
    {"--eval-batch-size", FLAG_INT, "0", "pairs per evaluation forward (0 = --batch-size)"},
    {0},
};

// Defaults that differ from the shared training flags: a copy of the table with them replaced.
static void set_default(Flag *flags, const char *name, const char *def) {
    for (Flag *f = flags; f->name; f++)
        if (strcmp(f->name, name) == 0) f->def = def;
}

int cmd_rm(int argc, char **argv) {
    Flag flags[CLI_MAX_FLAGS];
    const Flag *groups[] = {RM_OWN_FLAGS, PREF_DATA_FLAGS, TRAIN_ADAPTER_FLAGS, TRAIN_DATA_FLAGS, TRAIN_OPT_FLAGS};
    cli_flags_concat(flags, CLI_MAX_FLAGS, groups, 5);
    // stories260K + tinystories-pref: lr 2e-3, batch 16 pairs, no LoRA dropout reach 100% held-out accuracy
    // in one epoch (TRL's 1e-4 is for full fine-tuning of large models).
    set_default(flags, "--learning-rate", "2e-3");
    set_default(flags, "--batch-size", "16");
    set_default(flags, "--lora-dropout", "0");
    Command cmd = {.name = "rm",
                   .summary = "train a reward model (LoRA + score head on the last real token) on preference pairs; "
                              "--batch-size counts pairs",
                   .usage = "ftk rm --model M --train-file F [--eval-file F] --output-dir D [flags]",
                   .flags = flags};
    cli_parse(&cmd, argc, argv);
    if (!cli_str(&cmd, "--model")) cli_usage_error(&cmd, "--model is required");
    if (!cli_str(&cmd, "--train-file")) cli_usage_error(&cmd, "--train-file is required");
    if (!cli_str(&cmd, "--output-dir")) cli_usage_error(&cmd, "--output-dir is required");
    if (cli_bool(&cmd, "--packing")) cli_usage_error(&cmd, "--packing does not apply to preference pairs");
    TrainConfig tc;
    AdapterConfig ac;
    train_parse_common(&cmd, &tc, &ac, 1);
    if (!(ac.types & ADAPTER_LORA))
        cli_usage_error(&cmd, "the score head is saved with the LoRA adapter (PEFT modules_to_save): use --peft lora or "
                              "--peft lora,prompt");
    RmOptions ro;
    rm_options_default(&ro);
    ro.margin = (float)cli_float(&cmd, "--margin");
    ro.center_coef = (float)cli_float(&cmd, "--center-rewards-coefficient");
    ro.eval_batch = cli_int(&cmd, "--eval-batch-size");
    ro.append_eos = !cli_bool(&cmd, "--no-eos");
    if (ro.center_coef < 0) cli_usage_error(&cmd, "--center-rewards-coefficient must be >= 0");
    if (ro.eval_batch < 0) cli_usage_error(&cmd, "--eval-batch-size must be >= 0");
    const char *out_dir = cli_str(&cmd, "--output-dir");
    train_check_output_dir(out_dir, tc.resume_from, cli_bool(&cmd, "--overwrite-output-dir"));

    Model m;
    cli_load_model(&m, cli_str(&cmd, "--model"), cli_str(&cmd, "--tokenizer"));
    char err[FTK_ERR_LEN];
    Adapters a;
    if (adapters_create(&a, &ac, &m, tc.seed, err)) cli_die("%s", err);
    train_print_trainable(&a, &m);

    Dataset train, eval;
    int have_eval;
    pref_load_datasets(&cmd, &m, a.cfg.types & ADAPTER_PROMPT ? a.cfg.num_virtual_tokens : 0, tc.seed, &train, &eval,
                       &have_eval);

    cJSON *args = train_args_json(&cmd);
    PairTrainResult res;
    PairProgressCtx pctx = {cli_stderr_is_tty(), 0, "acc"};
    if (rm_train(&m, &a, &train, have_eval ? &eval : NULL, &tc, &ro, args, pref_print_event, &pctx, &res, err)) {
        if (pctx.tty) fprintf(stderr, "\n");
        cli_die("%s", err);
    }
    fprintf(stderr, "\ntrained %lld steps in %.1f s (%ld pairs, %.1f pairs/s)\n", (long long)res.steps_done,
            res.seconds, res.pairs_seen, res.seconds > 0 ? res.pairs_seen / res.seconds : 0.0);
    if (have_eval && res.eval_after.pairs > 0) {
        const PairSums *b = &res.eval_before, *f = &res.eval_after;
        if (b->pairs > 0)
            fprintf(stderr, "eval pairwise accuracy: %.4f -> %.4f | mean margin %.4f -> %.4f (%ld pairs)\n",
                    b->correct / b->pairs, f->correct / f->pairs, b->margin / b->pairs, f->margin / f->pairs, f->pairs);
        else
            fprintf(stderr, "eval pairwise accuracy: %.4f | mean margin %.4f (%ld pairs)\n", f->correct / f->pairs,
                    f->margin / f->pairs, f->pairs);
    }
    fprintf(stderr, "reward model saved to %s\n", out_dir);
    cJSON_Delete(args);
    if (have_eval) dataset_free(&eval);
    dataset_free(&train);
    adapters_free(&a);
    model_free(&m);
    return 0;
}
