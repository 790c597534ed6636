// cli_model.c — loading a model (and optionally an adapter) for a command, or dying with the error.
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "model/common.h"
#include "model/model.h"
#include "model/common.h"

void cli_load_model(Model *m, const char *path, const char *tokenizer) {
    char err[FTK_ERR_LEN];
    if (model_load(m, path, tokenizer, err)) cli_die("%s", err);
    if (!m->tok) cli_die("%s: no tokenizer (pass --tokenizer)", path);
}

void cli_load_adapter(CliAdapter *a, const Model *m, const char *dir) {
    (void)m;
    memset(a, 0, sizeof *a);
    if (!dir) return;
    cli_die("%s: adapters are not supported yet", dir);
}

void cli_free_adapter(CliAdapter *a) {
    memset(a, 0, sizeof *a);
}

int cli_info_trainable(const ModelConfig *cfg, int r, const char *targets, int n_virtual, size_t *out, char *err) {
    (void)cfg; (void)r; (void)targets; (void)n_virtual; (void)out;
    return ftk_err(err, "LoRA parameter counting is not available yet");
}
