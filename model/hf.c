// hf.c — Hugging Face directory loader (STUB: to be implemented).
#include "model/common.h"
#include "model/loaders.h"
int load_hf_dir(Model *m, const char *dir, char *err) { (void)m; return ftk_err(err, "%s: HF loader not implemented yet", dir); }
int model_config_from_hf(ModelConfig *cfg, const char *path, char *err) { (void)cfg; return ftk_err(err, "%s: not implemented yet", path); }
