// cmd_info.c — `ftk info MODEL [--lora-r R --target-modules ...]`: format, architecture, sizes,
// parameter count, dtype, tokenizer; with --lora-r the trainable-parameter line PEFT prints.
// An HF directory is described from config.json alone (no weights are read).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "model/common.h"
#include "model/model.h"
#include "model/tokenizer.h"

int cmd_info(int argc, char **argv) {
    Flag flags[] = {
        {"--model", FLAG_STR, NULL, "model: HF dir (config.json is enough), .gguf, or llama2.c .bin"},
        {"--tokenizer", FLAG_STR, NULL, "tokenizer file overriding the model's"},
        {"--lora-r", FLAG_INT, NULL, "also count the trainable parameters of a LoRA of this rank"},
        {"--target-modules", FLAG_LIST, "q_proj,v_proj", "LoRA target modules (with --lora-r)"},
        {"--num-virtual-tokens", FLAG_INT, "0", "also count a soft prompt of this many tokens"},
        {0},
    };
    Command cmd = {.name = "info",
                   .summary = "describe a model",
                   .usage = "ftk info MODEL [--lora-r R --target-modules q_proj,v_proj]",
                   .flags = flags,
                   .n_positional_max = 1};
    cli_parse(&cmd, argc, argv);
    const char *path = cmd.n_positional ? cmd.positional[0] : cli_str(&cmd, "--model");
    if (!path) cli_usage_error(&cmd, "give the model path");
    char err[FTK_ERR_LEN];
    Model m;
    memset(&m, 0, sizeof m);
    ModelConfig cfg;
    const char *format, *dtype = "?", *tok = "?";
    char cfgpath[4200];
    snprintf(cfgpath, sizeof cfgpath, "%s/config.json", path);
    int config_only = ftk_is_dir(path) && ftk_file_exists(cfgpath);
    if (config_only || (strlen(path) > 11 && strcmp(path + strlen(path) - 11, "config.json") == 0)) {
        if (model_config_from_hf(&cfg, path, err)) cli_die("%s", err);
        format = "Hugging Face (config.json; weights not read)";
    } else {
        cli_load_model(&m, path, cli_str(&cmd, "--tokenizer"));
        cfg = m.cfg;
        format = m.format;
        dtype = m.src_dtype;
        tok = m.tok->kind == TOK_SPM ? "SentencePiece (SPM)" : "byte-level BPE";
    }
    const char *arch = cfg.arch == ARCH_LLAMA ? "llama" : "gpt2";
    char buf[64];
    printf("path:          %s\n", path);
    printf("format:        %s\n", format);
    printf("architecture:  %s\n", arch);
    printf("layers:        %d\n", cfg.n_layers);
    printf("hidden:        %d\n", cfg.dim);
    printf("heads:         %d (kv %d, head_dim %d)\n", cfg.n_heads, cfg.n_kv_heads, cfg.head_dim);
    printf("ffn:           %d\n", cfg.ffn_dim);
    printf("vocab:         %d\n", cfg.vocab_size);
    printf("context:       %d\n", cfg.max_seq_len);
    printf("norm eps:      %g\n", cfg.norm_eps);
    if (cfg.arch == ARCH_LLAMA) printf("rope theta:    %g\n", cfg.rope_theta);
    printf("tied head:     %s\n", cfg.tied_head ? "yes" : "no");
    cli_with_commas(model_param_count(&cfg), buf);
    printf("parameters:    %s\n", buf);
    if (!config_only) {
        printf("dtype:         %s\n", dtype);
        printf("tokenizer:     %s, %d tokens, bos %d, eos %d\n", tok, m.tok->n_vocab, m.tok->bos_id, m.tok->eos_id);
    }
    if (cli_given(&cmd, "--lora-r") || cli_int(&cmd, "--num-virtual-tokens") > 0) {
        size_t trainable = 0;
        if (cli_info_trainable(&cfg, cli_given(&cmd, "--lora-r") ? cli_int(&cmd, "--lora-r") : 0,
                               cli_str(&cmd, "--target-modules"), cli_int(&cmd, "--num-virtual-tokens"), &trainable, err))
            cli_die("%s", err);
        size_t total = model_param_count(&cfg) + trainable;
        char a[64], b[64];
        cli_with_commas(trainable, a);
        cli_with_commas(total, b);
        // The line PEFT's print_trainable_parameters() prints.
        printf("trainable params: %s || all params: %s || trainable%%: %.4f\n", a, b, 100.0 * trainable / total);
    }
    if (!config_only) model_free(&m);
    cli_free_flags(&cmd);
    return 0;
}
