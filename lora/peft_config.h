// peft_config.h — adapter_config.json of a PEFT adapter directory (FORMATS §2a), read and written.
// Used by peft.c; the public entry points are in lora/peft.h.
#ifndef FTK_PEFT_CONFIG_H
#define FTK_PEFT_CONFIG_H

#include "lora/adapter.h"

// Parses one adapter_config.json (peft_type LORA or PROMPT_TUNING) into the matching fields of cfg
// and ORs ADAPTER_LORA or ADAPTER_PROMPT into cfg->types; other fields of cfg are left alone.
// Only peft_type is required; absent keys take PEFT's defaults. Errors name the file and the key.
// lora_alpha (may be NULL) gets the file's lora_alpha at full double precision.
int peft_config_read(AdapterConfig *cfg, const char *path, const ModelConfig *mc, double *lora_alpha, char *err);

// What a LoRA adapter_config.json states; r / alpha may differ from the training config (the gpt2
// q/k/v blocks are saved as one c_attn adapter of rank n*r).
typedef struct {
    int r;
    double alpha;
    int use_rslora;
    float dropout;
    LoraInit init;
    const char *const *targets;   // target_modules, n_targets names
    int n_targets;
    const int *layers;            // layers_to_transform, or NULL for all
    int n_layers;
    int fan_in_fan_out;           // gpt2 Conv1D
    int score_head;               // modules_to_save ["score"], task_type SEQ_CLS
} PeftLoraFields;

// Writes the JSON exactly as PEFT's save_pretrained does: json.dumps(indent=2, sort_keys=True),
// every field PEFT 0.13 writes, inference_mode true. base may be NULL (written as null).
int peft_config_write_lora(const char *path, const PeftLoraFields *f, const char *base, char *err);
int peft_config_write_prompt(const char *path, const AdapterConfig *cfg, const ModelConfig *mc, const char *base,
                             char *err);

#endif
