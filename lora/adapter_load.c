// adapter_load.c — PEFT directory or GGUF LoRA adapter, by what the path is (lora/adapter_load.h).
#include "lora/adapter_load.h"

#include <stdio.h>
#include <string.h>

#include "lora/export_lora_gguf.h"
#include "lora/peft.h"
#include "model/common.h"

static int has_gguf_magic(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    char b[4] = {0};
    size_t got = fread(b, 1, 4, f);
    fclose(f);
    return got == 4 && memcmp(b, "GGUF", 4) == 0;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

int adapter_load_any(Adapters *a, const Model *m, const char *path, char *err) {
    if (!ftk_file_exists(path)) return ftk_err(err, "%s: no such adapter file or directory", path);
    if (ftk_is_dir(path)) return peft_load(a, m, path, err);
    if (ends_with(path, ".gguf") || has_gguf_magic(path)) return lora_gguf_load(a, m, path, err);
    if (ends_with(path, "/adapter_config.json") || ends_with(path, "/adapter_model.safetensors") ||
        !strcmp(path, "adapter_config.json") || !strcmp(path, "adapter_model.safetensors")) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", path);
        char *slash = strrchr(dir, '/');
        if (slash) *slash = 0;
        else snprintf(dir, sizeof dir, ".");
        return peft_load(a, m, dir, err);
    }
    return ftk_err(err, "%s: not an adapter (expected a PEFT adapter directory or a GGUF LoRA adapter .gguf)", path);
}
