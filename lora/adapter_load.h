// adapter_load.h — one entry point for every adapter file ftk reads: a PEFT directory
// (lora/peft.h) or a GGUF LoRA adapter (lora/export_lora_gguf.h).
#ifndef FTK_ADAPTER_LOAD_H
#define FTK_ADAPTER_LOAD_H

#include "lora/adapter.h"

// path: a PEFT adapter directory, its adapter_config.json / adapter_model.safetensors, or a GGUF
// LoRA adapter (*.gguf or GGUF magic). Loads it for model m into a (adapters_free).
int adapter_load_any(Adapters *a, const Model *m, const char *path, char *err);

#endif
