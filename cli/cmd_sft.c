// cmd_sft.c — `ftk sft`: LoRA and/or soft-prompt fine-tuning on prompt-response data.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "cli/cli.h"
#include "cli/train_common.h"
#include "datasets/dataset.h"
#include "lora/adapter.h"
#include "model/common.h"
#include "model/generate.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "model/weights_bf16.h"
#include "sft/progress.h"
#include "sft/train.h"

static const Flag SFT_OWN_FLAGS[] = {
    {"--model", FLAG_STR, NULL, "base model: HF dir, .gguf, or llama2.c .bin (frozen)"},
    {"--tokenizer", FLAG_STR, NULL, "tokenizer file overriding the model's"},
    {"--train-file", FLAG_STR, NULL, "training data: JSONL or JSON array, optionally gzipped"},
    {"--eval-file", FLAG_STR, NULL, "validation data (same formats)"},
    {"--validation-split", FLAG_FLOAT, "0", "fraction of --train-file held out for validation when no --eval-file"},
    {"--output-dir", FLAG_STR, NULL, "where adapters, checkpoints and metrics go"},
    {"--overwrite-output-dir", FLAG_BOOL, NULL, "allow an output dir that already holds an adapter"},
    {"--sample-prompt", FLAG_STR, NULL, "greedy sample from this prompt before and after training"},
    {"--sample-tokens", FLAG_INT, "48", "length of those samples"},
    {"--base-dtype", FLAG_STR, "f32", "frozen weights (linears, embeddings, LM head) as f32 or bf16 (bf16 halves "
                                      "their memory; products stay fp32; not with --sample-prompt)"},
    {0},
};

int cmd_sft(int argc, char **argv) {
    Flag flags[CLI_MAX_FLAGS];
    const Flag *groups[] = {SFT_OWN_FLAGS, TRAIN_ADAPTER_FLAGS, TRAIN_DATA_FLAGS, TRAIN_OPT_FLAGS};
    cli_flags_concat(flags, CLI_MAX_FLAGS, groups, 4);
    Command cmd = {.name = "sft",
                   .summary = "supervised fine-tuning of LoRA / soft-prompt adapters on a frozen base",
                   .usage = "ftk sft --model M --train-file F [--eval-file F] --output-dir D [flags]",
                   .flags = flags};
    cli_parse(&cmd, argc, argv);
    if (!cli_str(&cmd, "--model")) cli_usage_error(&cmd, "--model is required");
    if (!cli_str(&cmd, "--train-file")) cli_usage_error(&cmd, "--train-file is required");
    if (!cli_str(&cmd, "--output-dir")) cli_usage_error(&cmd, "--output-dir is required");
    const char *dtype = cli_str(&cmd, "--base-dtype");
    if (strcmp(dtype, "f32") != 0 && strcmp(dtype, "bf16") != 0)
        cli_usage_error(&cmd, "--base-dtype must be f32 or bf16 (got '%s')", dtype);
    const int base_bf16 = strcmp(dtype, "bf16") == 0;
    if (base_bf16 && cli_str(&cmd, "--sample-prompt"))
        cli_usage_error(&cmd, "--sample-prompt needs fp32 base weights (generation); drop it or use --base-dtype f32");
    double vsplit = cli_float(&cmd, "--validation-split");
    if (vsplit < 0 || vsplit >= 1) cli_usage_error(&cmd, "--validation-split must be in [0, 1)");
    TrainConfig tc;
    AdapterConfig ac;
    train_parse_common(&cmd, &tc, &ac, 0);
    const char *out_dir = cli_str(&cmd, "--output-dir");
    train_check_output_dir(out_dir, tc.resume_from, cli_bool(&cmd, "--overwrite-output-dir"));

    Model m;
    cli_load_model(&m, cli_str(&cmd, "--model"), cli_str(&cmd, "--tokenizer"));
    char err[FTK_ERR_LEN];
    Adapters a;
    if (adapters_create(&a, &ac, &m, tc.seed, err)) cli_die("%s", err);   // (prompt init reads fp32 embeddings)
    if (base_bf16) {
        const double mb = model_weight_bytes(&m) / 1048576.0;
        if (model_to_bf16(&m, err)) cli_die("%s", err);
        fprintf(stderr, "base weights: %.0f MiB -> %.0f MiB (linears, embeddings and LM head as bf16)\n", mb,
                model_weight_bytes(&m) / 1048576.0);
    }
    train_print_trainable(&a, &m);

    Dataset train, eval, all;
    int have_eval = 0;
    DatasetOptions dopt = train_dataset_options(&cmd, DS_SFT, &m, a.cfg.num_virtual_tokens * !!(a.cfg.types & ADAPTER_PROMPT));
    TokEncoder enc;
    tok_encoder_init(&enc, m.tok);
    if (dataset_load(&all, cli_str(&cmd, "--train-file"), &dopt, &enc, err)) cli_die("%s", err);
    if (cli_str(&cmd, "--eval-file")) {
        train = all;
        if (dataset_load(&eval, cli_str(&cmd, "--eval-file"), &dopt, &enc, err)) cli_die("%s", err);
        have_eval = 1;
    } else if (vsplit > 0) {
        if (dataset_split(&all, vsplit, tc.seed, &train, &eval, err)) cli_die("%s", err);
        dataset_free(&all);
        have_eval = 1;
    } else {
        train = all;
    }
    train_print_dataset("train", &train);
    if (have_eval) train_print_dataset("eval", &eval);

    const char *sample = cli_str(&cmd, "--sample-prompt");
    int sample_tokens = cli_int(&cmd, "--sample-tokens");
    ModelAdapters hooks;
    adapters_hooks(&a, 0, &hooks);
    if (sample && !tc.resume_from) train_print_sample("before", &m, NULL, sample, sample_tokens);

    cJSON *args = train_args_json(&cmd);
    TrainResult res;
    TrainProgressCtx pctx = {cli_stderr_is_tty(), 0};
    if (sft_train(&m, &a, &train, have_eval ? &eval : NULL, &tc, args, train_print_event, &pctx, &res, err)) {
        if (pctx.tty) fprintf(stderr, "\n");
        cli_die("%s", err);
    }
    fprintf(stderr, "\ntrained %lld steps in %.1f s (%ld target tokens, %.0f tokens/s)\n", (long long)res.steps_done,
            res.seconds, res.tokens_seen, res.seconds > 0 ? res.tokens_seen / res.seconds : 0.0);
    if (have_eval)
        fprintf(stderr, "eval loss: %.4f -> %.4f (perplexity %.3f -> %.3f)\n", res.eval_loss_before,
                res.eval_loss_after, exp(res.eval_loss_before), exp(res.eval_loss_after));
    fprintf(stderr, "adapter saved to %s\n", out_dir);
    if (sample) train_print_sample("after", &m, &hooks, sample, sample_tokens);
    cJSON_Delete(args);
    if (have_eval) dataset_free(&eval);
    dataset_free(&train);
    adapters_free(&a);
    model_free(&m);
    cli_free_flags(&cmd);
    return 0;
}
