// cmd_merge.c — `ftk merge --model M --adapter D [--adapter D2 ... --weights 0.7,0.3] --output OUT
// --format hf|gguf [--dtype f32|f16|bf16|q8_0]`: W' = W + s·B·A in fp32 (several adapters: their
// weighted combination, lora/merge.h), written as an HF dir or a GGUF file, then reloaded and probed:
// the max |Δlogit| between base+adapter (unmerged) and the written file must stay within the
// dtype's tolerance, else nothing is written.
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "lora/adapter_load.h"
#include "lora/export_hf.h"
#include "lora/export_model.h"
#include "lora/merge.h"
#include "model/common.h"
#include "model/model.h"

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

// Splits a comma list into at most max entries (a copy is modified). Returns the count.
static int split_list(char *s, char **items, int max) {
    int n = 0;
    for (char *save = NULL, *tok = strtok_r(s, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ') tok++;
        if (n < max) items[n] = tok;
        n++;
    }
    return n;
}

#define MAX_ADAPTERS 64

int cmd_merge(int argc, char **argv) {
    Flag flags[] = {
        {"--model", FLAG_STR, NULL, "base model: HF dir, .gguf, or llama2.c .bin"},
        {"--tokenizer", FLAG_STR, NULL, "tokenizer file overriding the model's"},
        {"--adapter", FLAG_LIST, NULL, "adapter to merge: PEFT dir or GGUF LoRA adapter (repeat for several)"},
        {"--weights", FLAG_STR, NULL, "comma-separated weight per adapter (default 1 each)"},
        {"--combination", FLAG_STR, "cat", "several adapters: cat = sum of w_i*s_i*B_i*A_i (exact weighted sum of the "
                                           "deltas, PEFT combination_type=\"cat\"); linear = PEFT \"linear\" "
                                           "(A and B averaged separately with sqrt(w_i*s_i), equal ranks, cross terms)"},
        {"--output", FLAG_STR, NULL, "output: HF directory or .gguf file"},
        {"--format", FLAG_STR, NULL, "hf or gguf (default: gguf when --output ends in .gguf, else hf)"},
        {"--dtype", FLAG_STR, NULL, "f32, f16, bf16 or q8_0 (GGUF only) (default: the base model's)"},
        {"--max-shard-size", FLAG_STR, "5GB", "HF: split model.safetensors into shards above this size"},
        {"--name", FLAG_STR, NULL, "GGUF general.name (default: the output's base name)"},
        {"--overwrite", FLAG_BOOL, NULL, "replace an existing output"},
        {"--probe-prompt", FLAG_STR, "Once upon a time", "text whose logits check the written model"},
        {"--probe-tolerance", FLAG_FLOAT, "0", "max |logit difference| allowed (0 = per dtype: f32 1e-4, f16 32*2^-11, "
                                               "bf16 32*2^-8, q8_0 64*2^-8, times max(1, largest |logit|))"},
        {"--no-probe", FLAG_BOOL, NULL, "skip the reload-and-compare check"},
        {"--save-soft-prompt", FLAG_BOOL, NULL, "when an adapter has a soft prompt (cannot be merged), write it beside "
                                                "the output as a PEFT prompt-tuning dir instead of failing"},
        {"--threads", FLAG_INT, "0", "worker threads (0 = one per CPU)"},
        {0},
    };
    Command cmd = {.name = "merge",
                   .summary = "merge LoRA adapters into the base weights and write an HF dir or GGUF",
                   .usage = "ftk merge --model M --adapter D [--adapter D2 --weights 0.7,0.3] --output OUT "
                            "[--format hf|gguf] [--dtype f32|f16|bf16|q8_0]",
                   .flags = flags};
    cli_parse(&cmd, argc, argv);
    if (!cli_str(&cmd, "--model")) cli_usage_error(&cmd, "--model is required");
    if (!cli_str(&cmd, "--adapter")) cli_usage_error(&cmd, "--adapter is required");
    const char *out = cli_str(&cmd, "--output");
    if (!out) cli_usage_error(&cmd, "--output is required");
    char err[FTK_ERR_LEN];
    ExportFormat fmt = ends_with(out, ".gguf") ? EXPORT_FORMAT_GGUF : EXPORT_FORMAT_HF;
    if (cli_str(&cmd, "--format") && parse_export_format(cli_str(&cmd, "--format"), &fmt, err))
        cli_usage_error(&cmd, "--format: %s", err);
    LoraCombination how;
    if (lora_combination_parse(cli_str(&cmd, "--combination"), &how, err)) cli_usage_error(&cmd, "--combination: %s", err);
    size_t shard = 0;
    if (parse_byte_size(cli_str(&cmd, "--max-shard-size"), &shard, err)) cli_usage_error(&cmd, "--max-shard-size: %s", err);
    if (cli_float(&cmd, "--probe-tolerance") < 0) cli_usage_error(&cmd, "--probe-tolerance must be >= 0");
    char *adapter_list = strdup(cli_str(&cmd, "--adapter"));
    char *paths[MAX_ADAPTERS];
    int n = split_list(adapter_list, paths, MAX_ADAPTERS);
    if (n < 1 || n > MAX_ADAPTERS) cli_usage_error(&cmd, "--adapter: give 1 to %d adapters", MAX_ADAPTERS);
    double weights[MAX_ADAPTERS];
    for (int i = 0; i < n; i++) weights[i] = 1.0;
    if (cli_str(&cmd, "--weights")) {
        char *wl = strdup(cli_str(&cmd, "--weights"));
        char *items[MAX_ADAPTERS];
        int k = split_list(wl, items, MAX_ADAPTERS);
        if (k != n) cli_usage_error(&cmd, "--weights has %d values for %d adapters", k, n);
        for (int i = 0; i < n; i++) {
            char *end;
            weights[i] = strtod(items[i], &end);
            if (end == items[i] || *end || !isfinite(weights[i])) cli_usage_error(&cmd, "--weights: bad number '%s'", items[i]);
        }
        free(wl);
    }
    cli_set_threads(cli_int(&cmd, "--threads"));
    // A file-size limit (ulimit -f) then fails the write with EFBIG, which is cleaned up like a full
    // disk, instead of killing the process half-way.
    signal(SIGXFSZ, SIG_IGN);

    Model m;
    cli_load_model(&m, cli_str(&cmd, "--model"), cli_str(&cmd, "--tokenizer"));
    ExportDtype dtype = export_dtype_default(&m, fmt == EXPORT_FORMAT_GGUF);
    if (cli_str(&cmd, "--dtype") && export_dtype_parse(cli_str(&cmd, "--dtype"), &dtype, err))
        cli_usage_error(&cmd, "--dtype: %s", err);
    if (fmt == EXPORT_FORMAT_HF && dtype == EXPORT_Q8_0)
        cli_usage_error(&cmd, "--dtype q8_0 is a GGUF type; an HF dir takes f32, f16 or bf16");

    // Adapters. A soft prompt cannot be folded into weights: refuse, or save it beside the output.
    Adapters *ads = calloc((size_t)n, sizeof(Adapters));
    Adapters lora_only[MAX_ADAPTERS];
    const Adapters *to_merge[MAX_ADAPTERS];
    double merge_w[MAX_ADAPTERS];
    int n_merge = 0;
    const Adapters *soft = NULL;
    for (int i = 0; i < n; i++) {
        if (adapter_load_any(&ads[i], &m, paths[i], err)) cli_die("%s", err);
        if (ads[i].score)
            cli_die("%s: the adapter has a score head (a reward model); a merged causal LM cannot hold it", paths[i]);
        if (ads[i].value_w)   // a PPO policy: the value head only trained the critic; the policy is the LoRA
            fprintf(stderr, "note: %s: its PPO value head is not part of the policy and is left out\n", paths[i]);
        if (ads[i].prompt) {
            if (!cli_bool(&cmd, "--save-soft-prompt"))
                cli_die("%s: this adapter has a soft prompt (prompt tuning, %d virtual tokens). Its prompt_embeddings are "
                        "prepended to the input embeddings at run time; they are not a weight delta and cannot be merged "
                        "into the model. Pass --save-soft-prompt to write them beside the output as a PEFT prompt-tuning "
                        "adapter (use it with `ftk generate --adapter` or PeftModel.from_pretrained)",
                        paths[i], ads[i].cfg.num_virtual_tokens);
            if (soft) cli_die("%s: only one adapter may carry a soft prompt", paths[i]);
            soft = &ads[i];
        }
        if (!ads[i].hooks) continue;   // a pure soft-prompt adapter: nothing to merge
        lora_only[n_merge] = ads[i];
        lora_only[n_merge].prompt = NULL;   // shallow view: the LoRA part only
        to_merge[n_merge] = &lora_only[n_merge];
        merge_w[n_merge] = weights[i];
        n_merge++;
    }

    CombinedLora comb = {0};
    ModelAdapters ref_hooks = {0};
    if (n_merge > 0) {
        if (lora_combine(&comb, to_merge, merge_w, n_merge, how, &m.cfg, err)) cli_die("%s", err);
        combined_lora_hooks(&comb, &ref_hooks);
        // One adapter at weight 1: probe against the adapter itself rather than its copy.
        if (n_merge == 1 && merge_w[0] == 1.0) ref_hooks.hooks = to_merge[0]->hooks;
    } else {
        fprintf(stderr, "ftk merge: no LoRA weights to merge; writing the base model with the soft prompt beside it\n");
    }

    // Reference logits of the unmerged model on the probe prompt.
    const int probe = !cli_bool(&cmd, "--no-probe");
    int *ids = NULL, n_ids = 0;
    float *ref = NULL;
    if (probe) {
        if (probe_tokens(&m, cli_str(&cmd, "--probe-prompt"), &ids, &n_ids, err)) cli_die("%s", err);
        if (model_logits_all(&m, n_merge ? &ref_hooks : NULL, ids, n_ids, &ref, err)) cli_die("%s", err);
    }
    if (n_merge > 0 && lora_merge_hooks(&m, comb.hooks, err)) cli_die("%s", err);

    ModelExport x = {0};
    x.format = fmt;
    x.dtype = dtype;
    x.max_shard_bytes = shard;
    x.name = cli_str(&cmd, "--name");
    x.overwrite = cli_bool(&cmd, "--overwrite");
    x.tokenizer_overridden = cli_str(&cmd, "--tokenizer") != NULL;
    x.probe_ids = probe ? ids : NULL;
    x.probe_n = n_ids;
    x.probe_ref = ref;
    x.probe_tol = cli_float(&cmd, "--probe-tolerance");
    x.soft_prompt = soft;
    ExportResult res;
    if (export_model(&m, out, &x, &res, err)) cli_die("%s", err);

    fprintf(stderr, "merged %d adapter%s (%s) into %s -> %s (%s, %s)\n", n_merge, n_merge == 1 ? "" : "s",
            how == COMBINE_CAT ? "cat" : "linear", m.path, out, fmt == EXPORT_FORMAT_GGUF ? "gguf" : "hf",
            export_dtype_name(dtype));
    if (res.probed)
        printf("probe: max |delta logit| = %.3g (tolerance %.3g, %s, %d tokens, largest |logit| %.3g)\n", res.max_diff,
               res.tol, export_dtype_name(dtype), n_ids, res.max_ref);
    if (res.soft_prompt_dir[0])
        fprintf(stderr, "soft prompt (%d virtual tokens) saved to %s: it is not merged; apply it on top of the merged "
                        "model with `ftk generate --model %s --adapter %s` or PeftModel.from_pretrained(model, \"%s\")\n",
                soft->cfg.num_virtual_tokens, res.soft_prompt_dir, out, res.soft_prompt_dir, res.soft_prompt_dir);
    free(ids);
    free(ref);
    combined_lora_free(&comb);
    for (int i = 0; i < n; i++) adapters_free(&ads[i]);
    free(ads);
    free(adapter_list);
    cli_free_flags(&cmd);
    model_free(&m);
    return 0;
}
