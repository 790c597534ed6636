// tokenizer_gguf.c — tokenizer from a GGUF file's tokenizer.ggml.* keys (STUB: to be implemented).
#include "model/common.h"
#include "model/tokenizer.h"
int tokenizer_load_gguf(Tokenizer **o, const char *p, char *err) { (void)o; return ftk_err(err, "%s: not implemented", p); }
