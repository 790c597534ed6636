// cmd_generate.c — `ftk generate --model M --prompt TEXT [...]`: prints the prompt and its continuation.
#include <stdio.h>
#include <stdlib.h>

#include "cli/cli.h"
#include "model/common.h"
#include "model/generate.h"
#include "model/model.h"
#include "model/tokenizer.h"

int cmd_generate(int argc, char **argv) {
    Flag flags[] = {
        {"--model", FLAG_STR, NULL, "model: HF dir, .gguf, or llama2.c .bin"},
        {"--tokenizer", FLAG_STR, NULL, "tokenizer file overriding the model's"},
        {"--adapter", FLAG_STR, NULL, "PEFT adapter dir (LoRA and/or prompt tuning) to apply"},
        {"--prompt", FLAG_STR, "", "the prompt text (BOS added as the tokenizer does)"},
        {"--max-new-tokens", FLAG_INT, "256", "tokens to generate at most"},
        {"--temperature", FLAG_FLOAT, "0", "sampling temperature; 0 = greedy"},
        {"--top-k", FLAG_INT, "0", "sample from the k most likely tokens (0 = off)"},
        {"--top-p", FLAG_FLOAT, "1.0", "nucleus sampling threshold (1 = off)"},
        {"--seed", FLAG_INT, "42", "random seed for sampling"},
        {"--num-samples", FLAG_INT, "1", "how many continuations to generate (batched)"},
        {"--no-stop", FLAG_BOOL, NULL, "do not stop at EOS"},
        {"--threads", FLAG_INT, "0", "worker threads (0 = one per CPU)"},
        {0},
    };
    Command cmd = {.name = "generate",
                   .summary = "generate text from a prompt",
                   .usage = "ftk generate --model M --prompt TEXT [--max-new-tokens N --temperature T --top-k K --top-p P --seed S]",
                   .flags = flags};
    cli_parse(&cmd, argc, argv);
    if (!cli_str(&cmd, "--model")) cli_usage_error(&cmd, "--model is required");
    GenParams gp = gen_params_default();
    gp.max_new_tokens = cli_int(&cmd, "--max-new-tokens");
    gp.temperature = (float)cli_float(&cmd, "--temperature");
    gp.top_k = cli_int(&cmd, "--top-k");
    gp.top_p = (float)cli_float(&cmd, "--top-p");
    gp.stop_at_eos = !cli_bool(&cmd, "--no-stop");
    int n_samples = cli_int(&cmd, "--num-samples");
    if (gp.max_new_tokens < 0) cli_usage_error(&cmd, "--max-new-tokens must be >= 0");
    if (gp.temperature < 0) cli_usage_error(&cmd, "--temperature must be >= 0");
    if (gp.top_k < 0) cli_usage_error(&cmd, "--top-k must be >= 0");
    if (gp.top_p <= 0 || gp.top_p > 1) cli_usage_error(&cmd, "--top-p must be in (0, 1]");
    if (n_samples < 1) cli_usage_error(&cmd, "--num-samples must be >= 1");

    Model m;
    CliAdapter ad;
    cli_load_inference(&cmd, &m, &ad);
    char err[FTK_ERR_LEN];
    int *ids = NULL, n = 0;
    const char *prompt = cli_str(&cmd, "--prompt");
    if (tokenizer_encode(m.tok, prompt, -1, -1, &ids, &n, err)) cli_die("%s", err);
    if (n == 0) cli_die("the prompt is empty and the tokenizer adds no BOS: give --prompt");
    if (n + ad.hooks.n_virtual >= m.cfg.max_seq_len)
        cli_die("the prompt (%d tokens) fills the model's context of %d", n, m.cfg.max_seq_len);

    const int **prompts = malloc(sizeof(int *) * n_samples);
    int *lens = malloc(sizeof(int) * n_samples), *out_lens = calloc(n_samples, sizeof(int));
    int **out = calloc(n_samples, sizeof(int *));
    if (!prompts || !lens || !out_lens || !out) cli_die("out of memory");
    for (int i = 0; i < n_samples; i++) { prompts[i] = ids; lens[i] = n; }
    uint64_t rng = (uint64_t)cli_int(&cmd, "--seed");
    double t0 = ftk_now();
    if (generate(&m, ad.active ? &ad.hooks : NULL, prompts, lens, n_samples, &gp, &rng, out, out_lens, NULL, err))
        cli_die("%s", err);
    double dt = ftk_now() - t0;
    int total = 0;
    for (int i = 0; i < n_samples; i++) {
        int *all = malloc(sizeof(int) * (n + out_lens[i]));
        if (!all) cli_die("out of memory");
        for (int j = 0; j < n; j++) all[j] = ids[j];
        for (int j = 0; j < out_lens[i]; j++) all[n + j] = out[i][j];
        char *text = tokenizer_decode(m.tok, all, n + out_lens[i]);
        if (n_samples > 1) printf("--- sample %d\n", i + 1);
        printf("%s\n", text ? text : "");
        free(text);
        free(all);
        total += out_lens[i];
        free(out[i]);
    }
    fflush(stdout);
    fprintf(stderr, "[%d tokens in %.2f s, %.1f tokens/s]\n", total, dt, dt > 0 ? total / dt : 0.0);
    free(prompts); free(lens); free(out_lens); free(out); free(ids);
    cli_free_adapter(&ad);
    model_free(&m);
    return 0;
}
