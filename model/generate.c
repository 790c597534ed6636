// generate.c — (STUB: to be implemented).
#include "model/common.h"
#include "model/generate.h"
int kvcache_create(KVCache **out, const Model *m, int n, int L, char *err) { (void)out; (void)m; (void)n; (void)L; return ftk_err(err, "not implemented"); }
void kvcache_free(KVCache *kv) { (void)kv; }
void kvcache_reset(KVCache *kv) { (void)kv; }
int kvcache_len(const KVCache *kv, int s) { (void)kv; (void)s; return 0; }
GenParams gen_params_default(void) { GenParams p = {256, 0.0f, 0, 1.0f, 1}; return p; }
int sample_token(float *logits, int V, const GenParams *p, uint64_t *rng) { (void)logits; (void)V; (void)p; (void)rng; return 0; }
int generate(const Model *m, const ModelAdapters *ad, const int *const *pr, const int *pl, int n, const GenParams *p,
             uint64_t *rng, int **ot, int *ol, float **olp, char *err) {
    (void)m; (void)ad; (void)pr; (void)pl; (void)n; (void)p; (void)rng; (void)ot; (void)ol; (void)olp;
    return ftk_err(err, "not implemented");
}
