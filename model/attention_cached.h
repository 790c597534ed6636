// attention_cached.h — attention of new query rows against KV caches for generation, over ftk's
// pool: several runs (a run = consecutive new rows of one sequence) at once, one task per
// (run, kv head). The one-run serial form, attention_cached, is declared in ops.h.
#ifndef FTK_ATTENTION_CACHED_H
#define FTK_ATTENTION_CACHED_H

#include <stddef.h>

typedef struct {
    float *out;              // (M, q_dim), rows of stride ldo
    const float *q;          // (M, >= q_dim) query rows (after RoPE), stride ldq
    const float *kc, *vc;    // the run's sequence cache: p0 + M rows of kv_dim (the new rows written)
    int M, p0;               // M query rows at positions p0 .. p0+M-1, causal
} CachedRun;

// Scratch floats one task needs: max(M, group) * (p0 + M) for the widest run of the call.
size_t attention_cached_task_floats(int M, int L, int group);

// Every run, parallel over (run, kv head) with par_for; task t = run * n_kv_heads + kv head uses
// scratch + t * task_floats (so scratch holds n_runs * n_kv_heads * task_floats floats). The
// query heads of a kv group are done together (one (group, hd) matrix when M == 1). The result of a
// task does not depend on which thread runs it: bit-identical for any thread count.
void attention_cached_runs(const CachedRun *runs, int n_runs, int ldo, int ldq, int n_heads, int n_kv_heads,
                           int head_dim, float *scratch, size_t task_floats);

#endif
