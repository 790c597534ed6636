// cmd_export_adapter.c — `ftk export-adapter --model M --adapter D --output F.gguf`: a LoRA adapter
// (PEFT dir, or a GGUF adapter to re-encode) written as a GGUF LoRA adapter that llama.cpp loads
// with `--lora F.gguf` (lora/export_lora_gguf.h). The file is read back and must reproduce the
// adapter's logits on a probe prompt.
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "lora/adapter_load.h"
#include "lora/export_lora_gguf.h"
#include "lora/export_out.h"
#include "model/common.h"
#include "model/model.h"

// The base name of a path without a .gguf/.bin extension, for general.name fields.
static void base_name(const char *path, char *buf, size_t n) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", path);
    size_t k = strlen(tmp);
    while (k > 1 && tmp[k - 1] == '/') tmp[--k] = 0;
    const char *b = strrchr(tmp, '/');
    snprintf(buf, n, "%s", b ? b + 1 : tmp);
    char *dot = strrchr(buf, '.');
    if (dot && dot != buf && (!strcmp(dot, ".gguf") || !strcmp(dot, ".bin"))) *dot = 0;
}

int cmd_export_adapter(int argc, char **argv) {
    Flag flags[] = {
        {"--model", FLAG_STR, NULL, "base model the adapter was trained on: HF dir, .gguf, or llama2.c .bin"},
        {"--tokenizer", FLAG_STR, NULL, "tokenizer file overriding the model's"},
        {"--adapter", FLAG_STR, NULL, "LoRA adapter: PEFT dir or GGUF LoRA adapter"},
        {"--output", FLAG_STR, NULL, "output .gguf file"},
        {"--dtype", FLAG_STR, "f32", "tensor type: f32, f16, bf16 or q8_0"},
        {"--name", FLAG_STR, NULL, "general.name (default: the adapter's base name)"},
        {"--overwrite", FLAG_BOOL, NULL, "replace an existing output"},
        {"--probe-prompt", FLAG_STR, "Once upon a time", "text whose logits check the written adapter"},
        {"--no-probe", FLAG_BOOL, NULL, "skip the reload-and-compare check"},
        {"--threads", FLAG_INT, "0", "worker threads (0 = one per CPU)"},
        {0},
    };
    Command cmd = {.name = "export-adapter",
                   .summary = "write a LoRA adapter as GGUF for llama.cpp --lora",
                   .usage = "ftk export-adapter --model M --adapter D --output F.gguf [--dtype f32|f16|bf16|q8_0]",
                   .flags = flags};
    cli_parse(&cmd, argc, argv);
    if (!cli_str(&cmd, "--model")) cli_usage_error(&cmd, "--model is required");
    if (!cli_str(&cmd, "--adapter")) cli_usage_error(&cmd, "--adapter is required");
    const char *out = cli_str(&cmd, "--output");
    if (!out) cli_usage_error(&cmd, "--output is required");
    char err[FTK_ERR_LEN];
    ExportDtype dtype;
    if (export_dtype_parse(cli_str(&cmd, "--dtype"), &dtype, err)) cli_usage_error(&cmd, "--dtype: %s", err);
    cli_set_threads(cli_int(&cmd, "--threads"));
    // A file-size limit (ulimit -f) then fails the write with EFBIG, which is cleaned up like a full
    // disk, instead of killing the process half-way.
    signal(SIGXFSZ, SIG_IGN);

    Model m;
    cli_load_model(&m, cli_str(&cmd, "--model"), cli_str(&cmd, "--tokenizer"));
    Adapters a;
    const char *apath = cli_str(&cmd, "--adapter");
    if (adapter_load_any(&a, &m, apath, err)) cli_die("%s", err);
    if (a.prompt)
        cli_die("%s: the adapter has a soft prompt (prompt tuning); llama.cpp's GGUF adapters hold LoRA only, so it "
                "cannot be exported this way", apath);
    if (!a.hooks) cli_die("%s: the adapter has no LoRA weights to export", apath);

    char name[256], base[256];
    if (cli_str(&cmd, "--name")) snprintf(name, sizeof name, "%s", cli_str(&cmd, "--name"));
    else base_name(apath, name, sizeof name);
    base_name(m.path, base, sizeof base);

    const int probe = !cli_bool(&cmd, "--no-probe");
    int *ids = NULL, n_ids = 0;
    float *ref = NULL, *got = NULL;
    if (probe) {
        ModelAdapters hooks;
        adapters_hooks(&a, 0, &hooks);
        hooks.n_virtual = 0;
        hooks.prompt = NULL;
        if (probe_tokens(&m, cli_str(&cmd, "--probe-prompt"), &ids, &n_ids, err) ||
            model_logits_all(&m, &hooks, ids, n_ids, &ref, err))
            cli_die("%s", err);
    }
    StagedOutput so;
    if (staged_begin(&so, out, 0, cli_bool(&cmd, "--overwrite"), err)) cli_die("%s", err);
    if (lora_gguf_save(&a, so.stage, dtype, name, base, err)) {
        staged_abort(&so);
        cli_die("writing %s failed, nothing was left behind: %s", out, err);
    }
    double max_diff = 0, max_ref = 0, tol = 0;
    if (probe) {
        // Read the file back as an adapter of this model and compare the logits it gives.
        Adapters back;
        int bad = lora_gguf_load(&back, &m, so.stage, err);
        if (!bad) {
            ModelAdapters hooks;
            adapters_hooks(&back, 0, &hooks);
            bad = model_logits_all(&m, &hooks, ids, n_ids, &got, err);
            adapters_free(&back);
        }
        if (!bad) {
            size_t total = (size_t)n_ids * (size_t)m.cfg.vocab_size;
            for (size_t i = 0; i < total; i++) {
                double d = fabs((double)got[i] - (double)ref[i]);
                if (isnan(d)) { max_diff = NAN; break; }
                if (d > max_diff) max_diff = d;
                if (fabs((double)ref[i]) > max_ref) max_ref = fabs((double)ref[i]);
            }
            tol = probe_tolerance(dtype, max_ref);
            if (!(max_diff <= tol))
                bad = ftk_err(err, "%s: probe failed: the written adapter gives logits %.3g away from the original's "
                                   "(tolerance %.3g for %s); nothing was written", out, max_diff, tol,
                              export_dtype_name(dtype));
        }
        if (bad) {
            staged_abort(&so);
            cli_die("%s", err);
        }
    }
    if (staged_commit(&so, err)) {
        staged_abort(&so);
        cli_die("%s", err);
    }
    fprintf(stderr, "wrote %s: GGUF LoRA adapter (%s, r %d, %s) for %s; use with llama.cpp --lora %s\n", out,
            m.cfg.arch == ARCH_LLAMA ? "llama" : "gpt2", a.cfg.r, export_dtype_name(dtype), m.path, out);
    if (probe)
        printf("probe: max |delta logit| = %.3g (tolerance %.3g, %s, %d tokens)\n", max_diff, tol,
               export_dtype_name(dtype), n_ids);
    free(ids);
    free(ref);
    free(got);
    adapters_free(&a);
    model_free(&m);
    return 0;
}
