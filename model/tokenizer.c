// tokenizer.c — (STUB: to be implemented).
#include <stdlib.h>
#include "model/common.h"
#include "model/tokenizer.h"
int tokenizer_create(Tokenizer **out, TokKind kind, int n_vocab, const char *const *pieces, const float *scores,
                     const int *types, const char *const *merges, int n_merges, int bos_id, int eos_id, int unk_id,
                     char *err) {
    (void)out; (void)kind; (void)n_vocab; (void)pieces; (void)scores; (void)types; (void)merges; (void)n_merges;
    (void)bos_id; (void)eos_id; (void)unk_id;
    return ftk_err(err, "tokenizer not implemented yet");
}
int tokenizer_load_spm_model(Tokenizer **o, const char *p, char *err) { (void)o; return ftk_err(err, "%s: not implemented", p); }
int tokenizer_load_llama2c(Tokenizer **o, const char *p, int v, char *err) { (void)o; (void)v; return ftk_err(err, "%s: not implemented", p); }
int tokenizer_load_gpt2_files(Tokenizer **o, const char *a, const char *b, char *err) { (void)o; (void)b; return ftk_err(err, "%s: not implemented", a); }
int tokenizer_load_hf_json(Tokenizer **o, const char *p, char *err) { (void)o; return ftk_err(err, "%s: not implemented", p); }
int tokenizer_load_hf_dir(Tokenizer **o, const char *p, char *err) { (void)o; return ftk_err(err, "%s: not implemented", p); }
void tokenizer_free(Tokenizer *t) { free(t); }
int tokenizer_encode(const Tokenizer *t, const char *text, int a, int b, int **ids, int *n, char *err) {
    (void)t; (void)text; (void)a; (void)b; (void)ids; (void)n; return ftk_err(err, "not implemented");
}
char *tokenizer_decode(const Tokenizer *t, const int *ids, int n) { (void)t; (void)ids; (void)n; return NULL; }
int tokenizer_token_bytes(const Tokenizer *t, int prev, int id, char *buf) { (void)t; (void)prev; (void)id; buf[0] = 0; return 0; }
int tokenizer_piece_id(const Tokenizer *t, const char *piece) { (void)t; (void)piece; return -1; }
