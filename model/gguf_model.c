// gguf_model.c — GGUF model loader (STUB: to be implemented).
#include "model/common.h"
#include "model/loaders.h"
int load_gguf(Model *m, const char *path, char *err) { (void)m; return ftk_err(err, "%s: GGUF loader not implemented yet", path); }
