// cmd_eval.c — `ftk eval --model M [--adapter D] --file F`: token-level loss and perplexity on
// the response tokens of a dataset (the same loss `ftk sft` trains and reports).
#include <math.h>
#include <stdio.h>

#include "cli/cli.h"
#include "cli/train_common.h"
#include "datasets/dataset.h"
#include "model/common.h"
#include "model/model.h"
#include "sft/train.h"

static const Flag EVAL_FLAGS[] = {
    {"--model", FLAG_STR, NULL, "base model: HF dir, .gguf, or llama2.c .bin"},
    {"--tokenizer", FLAG_STR, NULL, "tokenizer file overriding the model's"},
    {"--adapter", FLAG_STR, NULL, "PEFT adapter dir (LoRA and/or prompt tuning) to apply"},
    {"--file", FLAG_STR, NULL, "dataset: JSONL or JSON array, optionally gzipped"},
    {"--batch-size", FLAG_INT, "8", "sequences per forward"},
    {"--threads", FLAG_INT, "0", "worker threads (0 = one per CPU)"},
    {0},
};

int cmd_eval(int argc, char **argv) {
    Flag flags[CLI_MAX_FLAGS];
    const Flag *groups[] = {EVAL_FLAGS, TRAIN_DATA_FLAGS};
    cli_flags_concat(flags, CLI_MAX_FLAGS, groups, 2);
    Command cmd = {.name = "eval",
                   .summary = "loss and perplexity of a model (+ adapter) on a dataset's response tokens",
                   .usage = "ftk eval --model M [--adapter D] --file F",
                   .flags = flags};
    cli_parse(&cmd, argc, argv);
    if (!cli_str(&cmd, "--model")) cli_usage_error(&cmd, "--model is required");
    if (!cli_str(&cmd, "--file")) cli_usage_error(&cmd, "--file is required");
    int bs = cli_int(&cmd, "--batch-size");
    if (bs < 1) cli_usage_error(&cmd, "--batch-size must be >= 1");
    Model m;
    CliAdapter ad;
    cli_load_inference(&cmd, &m, &ad);
    char err[FTK_ERR_LEN];
    DatasetOptions dopt = train_dataset_options(&cmd, DS_SFT, &m, ad.hooks.n_virtual);
    TokEncoder enc;
    tok_encoder_init(&enc, m.tok);
    Dataset ds;
    if (dataset_load(&ds, cli_str(&cmd, "--file"), &dopt, &enc, err)) cli_die("%s", err);
    train_print_dataset("eval", &ds);
    double loss;
    long n;
    if (sft_evaluate(&m, ad.active ? &ad.hooks : NULL, &ds, bs, &loss, &n, err)) cli_die("%s", err);
    printf("loss %.6f perplexity %.4f tokens %ld\n", loss, exp(loss), n);
    dataset_free(&ds);
    cli_free_adapter(&ad);
    model_free(&m);
    return 0;
}
