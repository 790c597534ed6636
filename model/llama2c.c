// llama2c.c — llama2.c .bin loader (STUB: to be implemented).
#include "model/common.h"
#include "model/loaders.h"
int load_llama2c(Model *m, const char *path, const char *tok, char *err) { (void)m; (void)tok; return ftk_err(err, "%s: llama2.c loader not implemented yet", path); }
