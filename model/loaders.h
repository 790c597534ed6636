// loaders.h — per-format loaders behind model_load (model.c). Each fills m->cfg, m->w (via
// model_alloc_weights), m->tok, m->format and m->src_dtype, or returns an error naming the file.
#ifndef FTK_LOADERS_H
#define FTK_LOADERS_H

#include "model/model.h"

int load_hf_dir(Model *m, const char *dir, char *err);                     // hf.c
// hf.c: config + weights of an HF dir, no tokenizer (m->tok stays NULL); load_hf_dir adds the
// tokenizer. On failure m may hold allocated weights: release with model_free.
int hf_load_weights(Model *m, const char *dir, char *err);
int load_gguf(Model *m, const char *path, char *err);                      // gguf_model.c
// gguf_model.c: config + weights of a GGUF model, no tokenizer (m->tok stays NULL).
// On failure m may hold allocated weights: release with model_free.
int load_gguf_weights(Model *m, const char *path, char *err);
int load_llama2c(Model *m, const char *path, const char *tok_path, char *err);  // llama2c.c
// llama2c.c: config + weights of one llama2.c .bin, no tokenizer (m->tok stays NULL).
// On failure m may hold allocated weights: release with model_free.
int llama2c_load_weights(Model *m, const char *bin_path, char *err);

#endif
