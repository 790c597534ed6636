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
