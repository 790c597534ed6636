// transformer.c — (STUB: to be implemented).
#include "model/common.h"
#include "model/transformer.h"
int runstate_create(RunState **out, const Model *m, int B, int T, int tr, char *err) { (void)out; (void)m; (void)B; (void)T; (void)tr; return ftk_err(err, "forward not implemented yet"); }
void runstate_free(RunState *rs) { (void)rs; }
float *runstate_final_hidden(RunState *rs) { (void)rs; return 0; }
float *runstate_d_final_hidden(RunState *rs) { (void)rs; return 0; }
int runstate_T(const RunState *rs) { (void)rs; return 0; }
size_t runstate_bytes(const RunState *rs) { (void)rs; return 0; }
int model_forward(const Model *m, const ModelAdapters *ad, RunState *rs, const int *tokens, int B, int Tt,
                  const int *pos, const int *seg, uint64_t *rng, char *err) {
    (void)m; (void)ad; (void)rs; (void)tokens; (void)B; (void)Tt; (void)pos; (void)seg; (void)rng;
    return ftk_err(err, "forward not implemented yet");
}
int model_backward(const Model *m, const ModelAdapters *ad, RunState *rs, char *err) { (void)m; (void)ad; (void)rs; return ftk_err(err, "not implemented"); }
void lm_head_logits(const Model *m, const float *h, int n, float *logits) { (void)m; (void)h; (void)n; (void)logits; }
int lm_head_logprobs(const Model *m, RunState *rs, const int *rows, const int *t, int n, float *logp, float *ent,
                     DLogpFn dfn, void *ctx, char *err) {
    (void)m; (void)rs; (void)rows; (void)t; (void)n; (void)logp; (void)ent; (void)dfn; (void)ctx;
    return ftk_err(err, "not implemented");
}
int model_logits_all(const Model *m, const ModelAdapters *ad, const int *tokens, int Tt, float **logits, char *err) {
    (void)m; (void)ad; (void)tokens; (void)Tt; (void)logits; return ftk_err(err, "not implemented");
}
