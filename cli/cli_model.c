// cli_model.c — loading a model (and optionally an adapter) for a command, or dying with the error.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "model/common.h"
#include "lora/adapter.h"
#include "lora/adapter_load.h"
#include "model/model.h"
#include "model/common.h"

void cli_load_model(Model *m, const char *path, const char *tokenizer) {
    char err[FTK_ERR_LEN];
    if (model_load(m, path, tokenizer, err)) cli_die("%s", err);
    if (!m->tok) cli_die("%s: no tokenizer (pass --tokenizer)", path);
}

void cli_load_adapter(CliAdapter *a, const Model *m, const char *dir) {
    memset(a, 0, sizeof *a);
    if (!dir) return;
    char err[FTK_ERR_LEN];
    Adapters *ad = calloc(1, sizeof *ad);
    if (!ad) cli_die("out of memory");
    if (adapter_load_any(ad, m, dir, err)) cli_die("%s", err);
    adapters_hooks(ad, 0, &a->hooks);
    a->adapters = ad;
    a->active = 1;
}

void cli_load_inference(const Command *cmd, Model *m, CliAdapter *a) {
    cli_set_threads(cli_int(cmd, "--threads"));
    cli_load_model(m, cli_str(cmd, "--model"), cli_str(cmd, "--tokenizer"));
    cli_load_adapter(a, m, cli_str(cmd, "--adapter"));
}

void cli_free_adapter(CliAdapter *a) {
    if (a->adapters) {
        adapters_free(a->adapters);
        free(a->adapters);
    }
    memset(a, 0, sizeof *a);
}

int cli_info_trainable(const ModelConfig *cfg, int r, const char *targets, int n_virtual, size_t *out, char *err) {
    AdapterConfig ac;
    adapter_config_default(&ac);
    ac.types = (r > 0 ? ADAPTER_LORA : 0) | (n_virtual > 0 ? ADAPTER_PROMPT : 0);
    ac.r = r > 0 ? r : 8;
    ac.num_virtual_tokens = n_virtual;
    if (targets) snprintf(ac.target_modules, sizeof ac.target_modules, "%s", targets);
    return adapters_param_count_for(&ac, cfg, out, err);
}
