// bench_decode.c — timed greedy decoding with the KV cache (see bench_decode.h).
#include "sft/bench_decode.h"

#include <stdlib.h>
#include <string.h>

#include "model/common.h"
#include "model/generate.h"

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int bench_decode(const Model *m, const ModelAdapters *ad, int batch, int prompt_len, int n_new, uint64_t seed,
                 void (*after_prefill)(void *ctx), void *ctx, BenchDecode *out, char *err) {
    memset(out, 0, sizeof *out);
    const int V = m->cfg.vocab_size;
    if (batch < 1 || prompt_len < 1 || n_new < 1) return ftk_err(err, "decode bench: batch, prompt and steps must be >= 1");
    if (batch > 4096) return ftk_err(err, "decode bench: batch %d too large", batch);
    KVCache *kv = NULL;
    if (kvcache_create(&kv, m, batch, prompt_len + n_new, err)) return -1;
    int *prompt = malloc((size_t)prompt_len * sizeof(int));
    int *seqs = malloc((size_t)batch * sizeof(int)), *next = malloc((size_t)batch * sizeof(int));
    float *logits = malloc((size_t)batch * V * sizeof(float));
    double *dt = malloc((size_t)n_new * sizeof(double));
    int rc = -1;
    if (!prompt || !seqs || !next || !logits || !dt) {
        ftk_err(err, "decode bench: out of memory");
        goto done;
    }
    uint64_t rng = seed * 0x9E3779B97F4A7C15ull + 11;
    const double t0 = ftk_now();
    for (int s = 0; s < batch; s++) {
        for (int i = 0; i < prompt_len; i++) prompt[i] = (int)(ftk_rand_u32(&rng) % (uint32_t)V);
        if (kvcache_prefill(m, ad, kv, s, prompt, prompt_len, logits + (size_t)s * V, err)) goto done;
        seqs[s] = s;
        next[s] = argmax(logits + (size_t)s * V, V);
    }
    out->prefill_s = ftk_now() - t0;
    if (after_prefill) after_prefill(ctx);
    for (int k = 0; k < n_new; k++) {
        const double ts = ftk_now();
        if (kvcache_decode(m, ad, kv, seqs, next, batch, logits, err)) goto done;
        for (int s = 0; s < batch; s++) next[s] = argmax(logits + (size_t)s * V, V);
        dt[k] = ftk_now() - ts;
        out->decode_s += dt[k];
    }
    qsort(dt, (size_t)n_new, sizeof(double), cmp_double);
    out->steps = n_new;
    // step k (from 0) attends over prompt_len + k + 1 positions of every layer's K and V, per sequence
    const double mean_len = prompt_len + 0.5 * (n_new + 1);
    out->kv_bytes_step = (double)batch * m->cfg.n_layers * 2.0 * model_kv_dim(&m->cfg) * sizeof(float) * mean_len;
    out->ms_step_min = dt[0] * 1e3;
    out->ms_step_median = (n_new % 2 ? dt[n_new / 2] : 0.5 * (dt[n_new / 2 - 1] + dt[n_new / 2])) * 1e3;
    out->tok_s = batch / (out->ms_step_median * 1e-3);
    rc = 0;
done:
    free(prompt);
    free(seqs);
    free(next);
    free(logits);
    free(dt);
    kvcache_free(kv);
    return rc;
}

size_t bench_decode_weight_bytes(const Model *m, const ModelAdapters *ad) {
    const ModelConfig *c = &m->cfg;
    const size_t C = c->dim, F = c->ffn_dim, qd = model_q_dim(c), qkv = model_qkv_dim(c);
    const int gpt2 = c->arch == ARCH_GPT2;
    size_t per_layer = qkv * C + C * qd + (gpt2 ? 2 : 3) * F * C + 2 * C;   // linears + norm weights
    if (gpt2) per_layer += qkv + C + F + C + 2 * C;                          // biases + norm biases
    size_t floats = per_layer * c->n_layers + C * (gpt2 ? 2 : 1) + (size_t)c->vocab_size * C;
    if (ad && !ad->disabled && ad->hooks)
        for (int i = 0; i < c->n_layers * LSLOT_COUNT; i++) {
            const LoraHook *h = &ad->hooks[i];
            if (h->r > 0) floats += (size_t)h->r * (h->in + h->out);
        }
    return floats * sizeof(float);
}

double bench_decode_bound_tok_s(int batch, size_t weight_bytes, double kv_bytes_step, double bytes_per_s) {
    return batch * bytes_per_s / ((double)weight_bytes + kv_bytes_step);
}
