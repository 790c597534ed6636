// main.c — `ftk <command> [flags]`: dispatch to one file per subcommand.
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} Sub;

static const Sub SUBS[] = {
    {"info", cmd_info, "describe a model (format, architecture, sizes, trainable parameters for a LoRA config)"},
    {"generate", cmd_generate, "generate text from a prompt (greedy or sampled, optional adapter)"},
    {"logits", cmd_logits, "write the logits of every position to a .npy file"},
    {"tokenize", cmd_tokenize, "print the token ids of a text"},
    {"sft", cmd_sft, "supervised fine-tuning of LoRA / soft-prompt adapters on prompt-response data"},
    {"eval", cmd_eval, "loss and perplexity of a model (+ adapter) on a dataset"},
    {"rm", cmd_rm, "train a reward model (LoRA + score head) on preference pairs"},
    {"score", cmd_score, "print the reward of every record under a reward model"},
    {"ppo", cmd_ppo, "RLHF: improve a LoRA policy against a reward model with PPO"},
    {"dpo", cmd_dpo, "direct preference optimisation of a LoRA policy"},
    {"merge", cmd_merge, "merge adapters into the base weights and write an HF dir or GGUF"},
    {"export-adapter", cmd_export_adapter, "write a LoRA adapter as GGUF for llama.cpp --lora"},
    {"convert", cmd_convert, "convert a model between formats (llama2.c, HF, GGUF)"},
    {"bench", cmd_bench, "benchmark a LoRA training step and decoding on synthetic models"},
};

static void usage(FILE *out) {
    fprintf(out, "ftk — fine-tuning toolkit (LoRA, soft prompts, SFT, reward models, PPO/DPO) for CPUs\n\n"
                 "Usage: ftk <command> [flags]   (ftk <command> --help for its flags)\n\nCommands:\n");
    for (size_t i = 0; i < sizeof SUBS / sizeof SUBS[0]; i++) fprintf(out, "  %-16s %s\n", SUBS[i].name, SUBS[i].summary);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof SUBS / sizeof SUBS[0]; i++)
        if (strcmp(argv[1], SUBS[i].name) == 0) return SUBS[i].run(argc - 2, argv + 2);
    fprintf(stderr, "ftk: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return EXIT_USAGE;
}
