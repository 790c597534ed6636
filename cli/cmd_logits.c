// cmd_logits.c — `ftk logits --model M (--prompt TEXT | --tokens 1,2,3) --out FILE.npy`:
// float32 [T, V] logits of every position (row t = the prediction after tokens 0..t).
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "model/common.h"
#include "model/model.h"
#include "model/npy.h"
#include "model/tokenizer.h"
#include "model/transformer.h"

// "1,2,3" -> ids; -1 for anything that is not a non-empty list of ints (a value beyond int range
// included: it must not wrap around into a valid id).
static int parse_ids(const char *s, int **ids, int *n) {
    int cap = 16, k = 0;
    int *out = malloc(sizeof(int) * cap);
    if (!out) cli_die("out of memory");
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < INT_MIN || v > INT_MAX) { free(out); return -1; }
        if (k == cap) {
            int *grown = realloc(out, sizeof(int) * (size_t)cap * 2);
            if (!grown) cli_die("out of memory");
            out = grown;
            cap *= 2;
        }
        out[k++] = (int)v;
        s = end;
        while (*s == ',' || *s == ' ') s++;
    }
    if (k == 0) { free(out); return -1; }
    *ids = out;
    *n = k;
    return 0;
}

int cmd_logits(int argc, char **argv) {
    Flag flags[] = {
        {"--model", FLAG_STR, NULL, "model: HF dir, .gguf, or llama2.c .bin"},
        {"--tokenizer", FLAG_STR, NULL, "tokenizer file overriding the model's"},
        {"--prompt", FLAG_STR, NULL, "text to encode (BOS added as the tokenizer does)"},
        {"--tokens", FLAG_STR, NULL, "comma-separated token ids instead of --prompt"},
        {"--adapter", FLAG_STR, NULL, "PEFT adapter dir (LoRA and/or prompt tuning) to apply"},
        {"--out", FLAG_STR, NULL, "output .npy file (float32 [T, V])"},
        {"--threads", FLAG_INT, "0", "worker threads (0 = one per CPU)"},
        {0},
    };
    Command cmd = {.name = "logits",
                   .summary = "write the logits of every position to a .npy file",
                   .usage = "ftk logits --model M (--prompt TEXT | --tokens 1,2,3) --out FILE.npy",
                   .flags = flags};
    cli_parse(&cmd, argc, argv);
    if (!cli_str(&cmd, "--model")) cli_usage_error(&cmd, "--model is required");
    if (!cli_str(&cmd, "--out")) cli_usage_error(&cmd, "--out is required");
    if (!!cli_str(&cmd, "--prompt") == !!cli_str(&cmd, "--tokens"))
        cli_usage_error(&cmd, "give exactly one of --prompt and --tokens");

    Model m;
    CliAdapter ad;
    cli_load_inference(&cmd, &m, &ad);
    char err[FTK_ERR_LEN];
    int *ids = NULL, n = 0;
    if (cli_str(&cmd, "--tokens")) {
        if (parse_ids(cli_str(&cmd, "--tokens"), &ids, &n)) cli_usage_error(&cmd, "--tokens: expected ids like 1,2,3");
        for (int i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= m.cfg.vocab_size)
                cli_die("--tokens: id %d is outside the vocabulary (0..%d)", ids[i], m.cfg.vocab_size - 1);
    } else if (tokenizer_encode(m.tok, cli_str(&cmd, "--prompt"), -1, -1, &ids, &n, err)) {
        cli_die("%s", err);
    }
    if (n + ad.hooks.n_virtual > m.cfg.max_seq_len)
        cli_die("%d tokens exceed the model's context of %d", n + ad.hooks.n_virtual, m.cfg.max_seq_len);
    float *logits = NULL;
    if (model_logits_all(&m, ad.active ? &ad.hooks : NULL, ids, n, &logits, err)) cli_die("%s", err);
    long shape[2] = {n + ad.hooks.n_virtual, m.cfg.vocab_size};
    if (npy_write_f32(cli_str(&cmd, "--out"), logits, 2, shape, err)) cli_die("%s", err);
    fprintf(stderr, "wrote %s: float32 [%ld, %ld]\n", cli_str(&cmd, "--out"), shape[0], shape[1]);
    free(logits);
    free(ids);
    cli_free_adapter(&ad);
    model_free(&m);
    return 0;
}
