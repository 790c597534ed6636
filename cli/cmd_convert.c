// cmd_convert.c — `ftk convert --model M --output OUT --format hf|gguf [--dtype ...]`: plain
// conversion between the formats ftk reads and writes (llama2.c .bin, HF dir, GGUF), e.g. llama2.c
// -> HF dir or GGUF, HF <-> GGUF. The output is reloaded and its logits on a probe prompt compared
// with the source's before it is renamed into place.
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "lora/export_hf.h"
#include "lora/export_model.h"
#include "model/common.h"
#include "model/model.h"

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

int cmd_convert(int argc, char **argv) {
    Flag flags[] = {
        {"--model", FLAG_STR, NULL, "source model: HF dir, .gguf, or llama2.c .bin"},
        {"--tokenizer", FLAG_STR, NULL, "tokenizer file overriding the model's (e.g. tok512.bin for a llama2.c model)"},
        {"--output", FLAG_STR, NULL, "output: HF directory or .gguf file"},
        {"--format", FLAG_STR, NULL, "hf or gguf (default: gguf when --output ends in .gguf, else hf)"},
        {"--dtype", FLAG_STR, NULL, "f32, f16, bf16 or q8_0 (GGUF only) (default: the source's)"},
        {"--max-shard-size", FLAG_STR, "5GB", "HF: split model.safetensors into shards above this size"},
        {"--name", FLAG_STR, NULL, "GGUF general.name (default: the source's base name)"},
        {"--overwrite", FLAG_BOOL, NULL, "replace an existing output"},
        {"--probe-prompt", FLAG_STR, "Once upon a time", "text whose logits check the written model"},
        {"--probe-tolerance", FLAG_FLOAT, "0", "max |logit difference| allowed (0 = per dtype, see ftk merge --help)"},
        {"--no-probe", FLAG_BOOL, NULL, "skip the reload-and-compare check"},
        {"--threads", FLAG_INT, "0", "worker threads (0 = one per CPU)"},
        {0},
    };
    Command cmd = {.name = "convert",
                   .summary = "convert a model between formats (llama2.c, HF, GGUF)",
                   .usage = "ftk convert --model M --output OUT [--format hf|gguf] [--dtype f32|f16|bf16|q8_0]",
                   .flags = flags};
    cli_parse(&cmd, argc, argv);
    if (!cli_str(&cmd, "--model")) cli_usage_error(&cmd, "--model is required");
    const char *out = cli_str(&cmd, "--output");
    if (!out) cli_usage_error(&cmd, "--output is required");
    char err[FTK_ERR_LEN];
    ExportFormat fmt = ends_with(out, ".gguf") ? EXPORT_FORMAT_GGUF : EXPORT_FORMAT_HF;
    if (cli_str(&cmd, "--format") && parse_export_format(cli_str(&cmd, "--format"), &fmt, err))
        cli_usage_error(&cmd, "--format: %s", err);
    size_t shard = 0;
    if (parse_byte_size(cli_str(&cmd, "--max-shard-size"), &shard, err)) cli_usage_error(&cmd, "--max-shard-size: %s", err);
    if (cli_float(&cmd, "--probe-tolerance") < 0) cli_usage_error(&cmd, "--probe-tolerance must be >= 0");
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

    const int probe = !cli_bool(&cmd, "--no-probe");
    int *ids = NULL, n_ids = 0;
    float *ref = NULL;
    if (probe) {
        if (probe_tokens(&m, cli_str(&cmd, "--probe-prompt"), &ids, &n_ids, err)) cli_die("%s", err);
        if (model_logits_all(&m, NULL, ids, n_ids, &ref, err)) cli_die("%s", err);
    }
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
    ExportResult res;
    if (export_model(&m, out, &x, &res, err)) cli_die("%s", err);
    fprintf(stderr, "converted %s (%s, %s) -> %s (%s, %s)\n", m.path, m.format, m.src_dtype, out,
            fmt == EXPORT_FORMAT_GGUF ? "gguf" : "hf", export_dtype_name(dtype));
    if (res.probed)
        printf("probe: max |delta logit| = %.3g (tolerance %.3g, %s, %d tokens, largest |logit| %.3g)\n", res.max_diff,
               res.tol, export_dtype_name(dtype), n_ids, res.max_ref);
    free(ids);
    free(ref);
    model_free(&m);
    return 0;
}
