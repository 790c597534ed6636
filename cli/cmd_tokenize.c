// cmd_tokenize.c — `ftk tokenize --model M --text TEXT`: the ids on one line.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "model/common.h"
#include "model/model.h"
#include "model/tokenizer.h"

int cmd_tokenize(int argc, char **argv) {
    Flag flags[] = {
        {"--model", FLAG_STR, NULL, "model: HF dir, .gguf, or llama2.c .bin"},
        {"--tokenizer", FLAG_STR, NULL, "tokenizer file overriding the model's"},
        {"--text", FLAG_STR, NULL, "text to encode"},
        {"--bos", FLAG_STR, "auto", "prepend BOS: auto (the tokenizer's default), yes, no"},
        {"--decode", FLAG_BOOL, NULL, "also print the decoded text and the pieces on stderr"},
        {0},
    };
    Command cmd = {.name = "tokenize",
                   .summary = "print the token ids of a text",
                   .usage = "ftk tokenize --model M --text TEXT",
                   .flags = flags};
    cli_parse(&cmd, argc, argv);
    if (!cli_str(&cmd, "--model")) cli_usage_error(&cmd, "--model is required");
    if (!cli_str(&cmd, "--text")) cli_usage_error(&cmd, "--text is required");
    const char *bos = cli_str(&cmd, "--bos");
    int add_bos = -1;
    if (strcmp(bos, "yes") == 0) add_bos = 1;
    else if (strcmp(bos, "no") == 0) add_bos = 0;
    else if (strcmp(bos, "auto") != 0) cli_usage_error(&cmd, "--bos must be auto, yes or no");

    Model m;
    cli_load_model(&m, cli_str(&cmd, "--model"), cli_str(&cmd, "--tokenizer"));
    char err[FTK_ERR_LEN];
    int *ids = NULL, n = 0;
    if (tokenizer_encode(m.tok, cli_str(&cmd, "--text"), add_bos, -1, &ids, &n, err)) cli_die("%s", err);
    for (int i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
    printf("\n");
    if (cli_bool(&cmd, "--decode")) {
        for (int i = 0; i < n; i++) fprintf(stderr, "%d\t'%s'\n", ids[i], m.tok->pieces[ids[i]]);
        char *text = tokenizer_decode(m.tok, ids, n);
        fprintf(stderr, "decoded: %s\n", text ? text : "");
        free(text);
    }
    free(ids);
    model_free(&m);
    return 0;
}
