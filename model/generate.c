// generate.c — KV-cache prefill/decode (LoRA hooks and soft prompt included) and sampling.
//
// A step runs R rows through the model; each row is (sequence, position, token or soft-prompt row).
// Every projection is one sgemm over the R rows; K (after RoPE) and V of each row are written to its
// sequence's cache, then each run of consecutive rows of one sequence attends over that sequence's
// cache (attention_cached_runs). Prefill = the rows of one prompt; decode = one row per live sequence.
//
// Threads: the products go through par_sgemm (linear_forward, lora_forward, lm_head_logits: a
// single row is a matrix-vector product over blocks of weight rows, so batch-1 decode streams the
// weights on every thread), attention runs over the pool by (sequence, kv head); every buffer a
// step touches is allocated with the cache, so the decode loop allocates nothing. Results are
// bit-identical for any thread count (the cuts depend only on the shapes).
#include "model/generate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/attention_cached.h"
#include "model/common.h"
#include "model/ops.h"
#include "model/parallel.h"

#define PREFILL_CHUNK 128          // rows per prefill step (at most)
#define LORA_SCRATCH_RANK 64       // LoRA scratch holds all rows at once up to this rank

struct KVCache {
    ModelConfig cfg;
    int n_seqs, max_len;
    int qd, kvd, qkv, pre_w;
    float *k, *v;          // (n_seqs, n_layers, max_len, kv_dim); K after RoPE
    int *len;              // (n_seqs) positions filled
    unsigned *mark;        // (n_seqs) stamp used to check that a decode batch has distinct sequences
    unsigned stamp;
    // scratch for one step of up to R = max(n_seqs, PREFILL_CHUNK) rows
    int R;
    int *row_seq, *row_pos, *row_tok;   // row_tok < 0: soft-prompt row -1 - row_tok
    float *x, *h, *mean, *rstd, *qkvb, *att, *branch, *pre, *act, *rope_cos, *rope_sin;
    CachedRun *runs;       // (R) the attention runs of a step
    float *scores;         // attention scratch of every (run, kv head) task of a step
    size_t scores_n;
    float *lora_scratch;
    size_t lora_n;
    void *mem;
};

static size_t cache_index(const KVCache *kv, int seq, int layer, int pos) {
    return (((size_t)seq * kv->cfg.n_layers + layer) * kv->max_len + pos) * kv->kvd;
}

int kvcache_create(KVCache **out, const Model *m, int n_seqs, int max_len, char *err) {
    *out = NULL;
    const ModelConfig *c = &m->cfg;
    if (n_seqs <= 0 || max_len <= 0) return ftk_err(err, "kv cache: invalid shape (%d sequences, %d positions)", n_seqs, max_len);
    if (max_len > c->max_seq_len)
        return ftk_err(err, "kv cache: %d positions exceed the model's %d", max_len, c->max_seq_len);
    KVCache *kv = calloc(1, sizeof *kv);
    if (!kv) return ftk_err(err, "kv cache: out of memory");
    kv->cfg = *c;
    kv->n_seqs = n_seqs;
    kv->max_len = max_len;
    kv->qd = model_q_dim(c);
    kv->kvd = model_kv_dim(c);
    kv->qkv = model_qkv_dim(c);
    kv->pre_w = c->arch == ARCH_LLAMA ? 2 * c->ffn_dim : c->ffn_dim;
    kv->R = n_seqs > PREFILL_CHUNK ? n_seqs : PREFILL_CHUNK;
    const size_t R = kv->R, C = c->dim, F = c->ffn_dim;
    size_t in_max = C > F ? C : F;   // widest input of any linear a LoRA can sit on
    if ((size_t)kv->qd > in_max) in_max = kv->qd;
    const size_t group = (size_t)(c->n_heads / c->n_kv_heads), n_kv = (size_t)c->n_kv_heads;
    kv->lora_n = R * lora_scratch_floats((int)in_max, LORA_SCRATCH_RANK);
    // Attention scratch (attention_cached_task_floats per task): a prefill step is one run of up to
    // PREFILL_CHUNK rows, n_kv tasks of max(rows, group) * max_len; a decode step is up to n_seqs
    // runs of one row, n_seqs * n_kv tasks of group * max_len.
    const size_t chunk = PREFILL_CHUNK > group ? PREFILL_CHUNK : group;
    size_t prefill_scores, decode_scores;
    size_t cache_floats, per_row = 3 * C + kv->qkv + kv->qd + kv->pre_w + F + 2 + (size_t)c->head_dim, scratch_floats, total;
    const size_t runs_bytes = (R * sizeof(CachedRun) + 63) & ~(size_t)63;
    if (ftk_mul(n_kv * chunk, (size_t)max_len, &prefill_scores) ||
        ftk_mul((size_t)n_seqs * n_kv * group, (size_t)max_len, &decode_scores) ||
        ftk_mul((size_t)n_seqs * c->n_layers, (size_t)max_len * kv->kvd, &cache_floats) ||
        ftk_mul(cache_floats, 2, &cache_floats) ||
        ftk_add(R * per_row, prefill_scores > decode_scores ? prefill_scores : decode_scores, &scratch_floats) ||
        ftk_add(scratch_floats, kv->lora_n, &scratch_floats) || ftk_add(cache_floats, scratch_floats, &total) ||
        ftk_mul(total, sizeof(float), &total) || ftk_add(total, runs_bytes, &total)) {
        free(kv);
        return ftk_err(err, "kv cache: %d sequences x %d positions overflow", n_seqs, max_len);
    }
    kv->scores_n = prefill_scores > decode_scores ? prefill_scores : decode_scores;
    size_t int_bytes = (2 * (size_t)n_seqs + 3 * R) * sizeof(int);
    kv->mem = ftk_alloc_big(total + int_bytes);
    if (!kv->mem) {
        free(kv);
        return ftk_err(err, "kv cache: out of memory for %zu bytes (%d sequences x %d positions)", total, n_seqs, max_len);
    }
    kv->runs = kv->mem;
    float *p = (float *)((char *)kv->mem + runs_bytes);
    kv->k = p; p += cache_floats / 2;
    kv->v = p; p += cache_floats / 2;
    kv->x = p; p += R * C;
    kv->h = p; p += R * C;
    kv->branch = p; p += R * C;
    kv->qkvb = p; p += R * kv->qkv;
    kv->att = p; p += R * kv->qd;
    kv->pre = p; p += R * kv->pre_w;
    kv->act = p; p += R * F;
    kv->mean = p; p += R;
    kv->rstd = p; p += R;
    kv->rope_cos = p; p += R * (size_t)(c->head_dim / 2);
    kv->rope_sin = p; p += R * (size_t)(c->head_dim / 2);
    kv->scores = p; p += kv->scores_n;
    kv->lora_scratch = p; p += kv->lora_n;
    int *ip = (int *)p;
    kv->len = ip; ip += n_seqs;
    kv->mark = (unsigned *)ip; ip += n_seqs;
    kv->row_seq = ip; ip += R;
    kv->row_pos = ip; ip += R;
    kv->row_tok = ip;
    *out = kv;
    return 0;
}

void kvcache_free(KVCache *kv) {
    if (!kv) return;
    free(kv->mem);
    free(kv);
}

void kvcache_reset(KVCache *kv) { memset(kv->len, 0, (size_t)kv->n_seqs * sizeof(int)); }

int kvcache_len(const KVCache *kv, int seq) { return seq >= 0 && seq < kv->n_seqs ? kv->len[seq] : 0; }

// ---------------------------------------------------------------------------------------------
// one step over n rows (row_seq/row_pos/row_tok filled); leaves the final-norm output in kv->h

static const LoraHook *hook_at(const ModelAdapters *ad, int l, LoraSlot s) {
    if (!ad || ad->disabled || !ad->hooks) return NULL;
    const LoraHook *h = &ad->hooks[l * LSLOT_COUNT + s];
    return h->r > 0 ? h : NULL;
}

static void apply_hooks(KVCache *kv, const ModelAdapters *ad, int l, const LoraSlot *slots, int n_slots, float *out,
                        int width, const float *x, int n) {
    for (int i = 0; i < n_slots; i++) {
        const LoraHook *h = hook_at(ad, l, slots[i]);
        if (h) lora_forward(out, width, x, n, h, NULL, kv->lora_scratch, kv->lora_n);
    }
}

static void norm_rows(const KVCache *kv, float *out, const float *x, const float *w, const float *b, int n) {
    const ModelConfig *c = &kv->cfg;
    if (c->arch == ARCH_LLAMA) rmsnorm_forward(out, kv->rstd, x, w, n, c->dim, c->norm_eps);
    else layernorm_forward(out, kv->mean, kv->rstd, x, w, b, n, c->dim, c->norm_eps);
}

static void embed_rows(const Model *m, const ModelAdapters *ad, KVCache *kv, int n) {
    const int C = m->cfg.dim;
    for (int r = 0; r < n; r++) {
        const int t = kv->row_tok[r];
        const float *src = t >= 0 ? m->w.tok_emb + (size_t)t * C : ad->prompt + (size_t)(-1 - t) * C;
        float *x = kv->x + (size_t)r * C;
        memcpy(x, src, (size_t)C * sizeof(float));
        if (m->cfg.arch == ARCH_GPT2) {
            const float *pe = m->w.pos_emb + (size_t)kv->row_pos[r] * C;
            for (int i = 0; i < C; i++) x[i] += pe[i];
        }
    }
}

// Runs of consecutive rows of one sequence attend together over that sequence's cache; all runs
// (and kv heads) of the step in one par_for.
static void attend_rows(KVCache *kv, int l, int n) {
    const ModelConfig *c = &kv->cfg;
    const int group = c->n_heads / c->n_kv_heads;
    int n_runs = 0;
    size_t task_floats = 0;
    for (int r0 = 0; r0 < n;) {
        int r1 = r0 + 1;
        while (r1 < n && kv->row_seq[r1] == kv->row_seq[r0] && kv->row_pos[r1] == kv->row_pos[r1 - 1] + 1) r1++;
        const size_t at = cache_index(kv, kv->row_seq[r0], l, 0);
        kv->runs[n_runs++] = (CachedRun){kv->att + (size_t)r0 * kv->qd, kv->qkvb + (size_t)r0 * kv->qkv, kv->k + at,
                                         kv->v + at, r1 - r0, kv->row_pos[r0]};
        const size_t need = attention_cached_task_floats(r1 - r0, kv->row_pos[r0] + r1 - r0, group);
        if (need > task_floats) task_floats = need;
        r0 = r1;
    }
    // fits kv->scores: prefill is one run of <= PREFILL_CHUNK rows, decode n_seqs runs of one row
    attention_cached_runs(kv->runs, n_runs, kv->qd, kv->qkv, c->n_heads, c->n_kv_heads, c->head_dim, kv->scores,
                          task_floats);
}

static const LoraSlot QKV_SLOTS[] = {LSLOT_Q, LSLOT_K, LSLOT_V, LSLOT_QKV};
static const LoraSlot O_SLOT[] = {LSLOT_O};
static const LoraSlot GATE_UP_SLOTS[] = {LSLOT_GATE, LSLOT_UP};
static const LoraSlot DOWN_SLOT[] = {LSLOT_DOWN};

static void step_rows(const Model *m, const ModelAdapters *ad, KVCache *kv, int n) {
    const ModelConfig *c = &m->cfg;
    const int C = c->dim, F = c->ffn_dim, hd = c->head_dim, llama = c->arch == ARCH_LLAMA;
    embed_rows(m, ad, kv, n);
    if (llama) rope_tables(kv->rope_cos, kv->rope_sin, kv->row_pos, n, hd, c->rope_theta);
    for (int l = 0; l < c->n_layers; l++) {
        const LayerWeights *w = &m->w.layers[l];
        // attention block
        norm_rows(kv, kv->h, kv->x, w->attn_norm_w, w->attn_norm_b, n);
        linear_forward(kv->qkvb, kv->h, w->wqkv, w->bqkv, n, C, kv->qkv);   // (n, C) @ (C, qkv)
        apply_hooks(kv, ad, l, QKV_SLOTS, 4, kv->qkvb, kv->qkv, kv->h, n);
        if (llama) {
            rope_forward(kv->qkvb, kv->qkv, n, c->n_heads, hd, kv->rope_cos, kv->rope_sin);
            rope_forward(kv->qkvb + kv->qd, kv->qkv, n, c->n_kv_heads, hd, kv->rope_cos, kv->rope_sin);
        }
        for (int r = 0; r < n; r++) {
            const float *row = kv->qkvb + (size_t)r * kv->qkv;
            size_t at = cache_index(kv, kv->row_seq[r], l, kv->row_pos[r]);
            memcpy(kv->k + at, row + kv->qd, (size_t)kv->kvd * sizeof(float));
            memcpy(kv->v + at, row + kv->qd + kv->kvd, (size_t)kv->kvd * sizeof(float));
        }
        attend_rows(kv, l, n);
        linear_forward(kv->branch, kv->att, w->wo, w->bo, n, kv->qd, C);   // (n, q_dim) @ (q_dim, C)
        apply_hooks(kv, ad, l, O_SLOT, 1, kv->branch, C, kv->att, n);
        residual_forward(kv->x, kv->x, kv->branch, (size_t)n * C);
        // MLP block
        norm_rows(kv, kv->h, kv->x, w->ffn_norm_w, w->ffn_norm_b, n);
        if (llama) {
            linear_forward(kv->pre, kv->h, w->w_gate_up, NULL, n, C, 2 * F);   // (n, C) @ (C, 2F)
            apply_hooks(kv, ad, l, GATE_UP_SLOTS, 2, kv->pre, 2 * F, kv->h, n);
            swiglu_forward(kv->act, kv->pre, n, F);
        } else {
            linear_forward(kv->pre, kv->h, w->w_up, w->b_up, n, C, F);   // (n, C) @ (C, F)
            apply_hooks(kv, ad, l, GATE_UP_SLOTS, 2, kv->pre, F, kv->h, n);
            gelu_forward(kv->act, kv->pre, (size_t)n * F);
        }
        linear_forward(kv->branch, kv->act, w->w_down, w->b_down, n, F, C);   // (n, F) @ (F, C)
        apply_hooks(kv, ad, l, DOWN_SLOT, 1, kv->branch, C, kv->act, n);
        residual_forward(kv->x, kv->x, kv->branch, (size_t)n * C);
    }
    norm_rows(kv, kv->h, kv->x, m->w.out_norm_w, m->w.out_norm_b, n);
    for (int r = 0; r < n; r++)
        if (kv->len[kv->row_seq[r]] < kv->row_pos[r] + 1) kv->len[kv->row_seq[r]] = kv->row_pos[r] + 1;
}

static int check_model(const Model *m, const KVCache *kv, const ModelAdapters *ad, char *err) {
    const ModelConfig *c = &m->cfg;
    if (kv->cfg.dim != c->dim || kv->cfg.n_layers != c->n_layers || kv->cfg.n_kv_heads != c->n_kv_heads ||
        kv->cfg.vocab_size != c->vocab_size || kv->cfg.arch != c->arch || kv->cfg.ffn_dim != c->ffn_dim)
        return ftk_err(err, "kv cache: created for a different model");
    if (model_adapters_validate(m, ad, err)) return -1;
    if (ad && !ad->disabled && ad->hooks)
        for (int i = 0; i < c->n_layers * LSLOT_COUNT; i++)
            if (ad->hooks[i].r > 0 && lora_scratch_floats(ad->hooks[i].in, ad->hooks[i].r) > kv->lora_n)
                return ftk_err(err, "kv cache: LoRA rank %d too large", ad->hooks[i].r);
    return 0;
}

int kvcache_prefill(const Model *m, const ModelAdapters *ad, KVCache *kv, int seq, const int *tokens, int n_tokens,
                    float *logits, char *err) {
    if (check_model(m, kv, ad, err)) return -1;
    if (seq < 0 || seq >= kv->n_seqs) return ftk_err(err, "prefill: sequence %d outside the cache's %d", seq, kv->n_seqs);
    const int nv = ad && !ad->disabled && kv->len[seq] == 0 ? ad->n_virtual : 0;
    if (n_tokens < 0 || (n_tokens == 0 && nv == 0)) return ftk_err(err, "prefill: no tokens");
    const int total = nv + n_tokens, start = kv->len[seq];
    if (total > kv->max_len - start)
        return ftk_err(err, "prefill: %d positions after %d exceed the cache's %d", total, start, kv->max_len);
    for (int i = 0; i < n_tokens; i++)
        if (tokens[i] < 0 || tokens[i] >= m->cfg.vocab_size)
            return ftk_err(err, "prefill: token id %d outside the vocabulary (%d)", tokens[i], m->cfg.vocab_size);
    int n = 0;
    for (int j = 0; j < total; j += n) {
        n = total - j < PREFILL_CHUNK ? total - j : PREFILL_CHUNK;
        for (int r = 0; r < n; r++) {
            kv->row_seq[r] = seq;
            kv->row_pos[r] = start + j + r;
            kv->row_tok[r] = j + r < nv ? -1 - (j + r) : tokens[j + r - nv];
        }
        step_rows(m, ad, kv, n);
    }
    if (logits) lm_head_logits(m, kv->h + (size_t)(n - 1) * m->cfg.dim, 1, logits);
    return 0;
}

int kvcache_decode(const Model *m, const ModelAdapters *ad, KVCache *kv, const int *seqs, const int *tokens, int n,
                   float *logits, char *err) {
    if (check_model(m, kv, ad, err)) return -1;
    if (n <= 0 || n > kv->R) return ftk_err(err, "decode: %d rows (the cache takes 1..%d)", n, kv->R);
    kv->stamp++;
    for (int i = 0; i < n; i++) {
        const int s = seqs[i];
        if (s < 0 || s >= kv->n_seqs) return ftk_err(err, "decode: sequence %d outside the cache's %d", s, kv->n_seqs);
        if (kv->mark[s] == kv->stamp) return ftk_err(err, "decode: sequence %d appears twice in one step", s);
        kv->mark[s] = kv->stamp;
        if (kv->len[s] >= kv->max_len) return ftk_err(err, "decode: sequence %d is full (%d positions)", s, kv->max_len);
        if (tokens[i] < 0 || tokens[i] >= m->cfg.vocab_size)
            return ftk_err(err, "decode: token id %d outside the vocabulary (%d)", tokens[i], m->cfg.vocab_size);
        kv->row_seq[i] = s;
        kv->row_pos[i] = kv->len[s];
        kv->row_tok[i] = tokens[i];
    }
    step_rows(m, ad, kv, n);
    if (logits) lm_head_logits(m, kv->h, n, logits);   // (n, C) @ (C, V)
    return 0;
}

// ---------------------------------------------------------------------------------------------
// sampling

GenParams gen_params_default(void) {
    GenParams p = {256, 0.0f, 0, 1.0f, 1};
    return p;
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

// a before b: higher probability first, then the lower id.
static int prob_before(const ProbIndex *a, const ProbIndex *b) { return a->p > b->p || (a->p == b->p && a->id < b->id); }

static int cmp_prob_desc(const void *pa, const void *pb) {
    const ProbIndex *a = pa, *b = pb;
    return prob_before(a, b) ? -1 : prob_before(b, a) ? 1 : 0;
}

// Min-heap (the worst candidate at the root) used to select the top k.
static void heap_sift_down(ProbIndex *h, int n, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, worst = i;
        if (l < n && prob_before(&h[worst], &h[l])) worst = l;
        if (r < n && prob_before(&h[worst], &h[r])) worst = r;
        if (worst == i) return;
        ProbIndex t = h[i];
        h[i] = h[worst];
        h[worst] = t;
        i = worst;
    }
}

int sample_token_ws(float *logits, int V, const GenParams *p, uint64_t *rng, ProbIndex *work) {
    if (p->temperature <= 0.0f) return argmax(logits, V);
    // unnormalised probabilities q_j = exp((z_j - max) / temperature), in place
    const float mx = logits[argmax(logits, V)];
    double total = 0.0;
    for (int j = 0; j < V; j++) {
        logits[j] = expf((logits[j] - mx) / p->temperature);
        total += logits[j];
    }
    const int use_k = p->top_k > 0 && p->top_k < V, use_p = p->top_p < 1.0f;
    if (!use_k && !use_p) {
        double u = ftk_rand_uniform(rng) * total, cum = 0.0;
        for (int j = 0; j < V; j++) {
            cum += logits[j];
            if (u < cum) return j;
        }
        return argmax(logits, V);   // rounding at the very end
    }
    int n = 0;
    if (use_k) {
        for (int j = 0; j < V; j++) {
            ProbIndex c = {logits[j], j};
            if (n < p->top_k) {
                work[n++] = c;
                if (n == p->top_k)
                    for (int i = n / 2 - 1; i >= 0; i--) heap_sift_down(work, n, i);
            } else if (prob_before(&c, &work[0])) {
                work[0] = c;
                heap_sift_down(work, n, 0);
            }
        }
    } else {
        // Only tokens with q >= (1 - top_p) / (V - 1) of the total can be in the nucleus (the
        // tokens after the nucleus hold at least 1 - top_p of the mass, and there are < V - 1 of them).
        double cutoff = p->top_p > 0.0f && V > 1 ? (1.0 - p->top_p) / (V - 1) * total : 0.0;
        for (int j = 0; j < V; j++)
            if (logits[j] >= cutoff) work[n++] = (ProbIndex){logits[j], j};
        if (n == 0)
            for (int j = 0; j < V; j++) work[n++] = (ProbIndex){logits[j], j};
    }
    qsort(work, (size_t)n, sizeof *work, cmp_prob_desc);
    int keep = n;
    if (use_p) {
        double denom = 0.0, cum = 0.0;
        if (use_k) for (int i = 0; i < n; i++) denom += work[i].p;
        else denom = total;
        for (int i = 0; i < n; i++) {
            cum += work[i].p;
            if (cum > p->top_p * denom) {
                keep = i + 1;
                break;
            }
        }
    }
    double mass = 0.0;
    for (int i = 0; i < keep; i++) mass += work[i].p;
    double u = ftk_rand_uniform(rng) * mass, cum = 0.0;
    for (int i = 0; i < keep; i++) {
        cum += work[i].p;
        if (u < cum) return work[i].id;
    }
    return work[keep - 1].id;
}

int sample_token(float *logits, int V, const GenParams *p, uint64_t *rng) {
    const int need = p->temperature > 0.0f && ((p->top_k > 0 && p->top_k < V) || p->top_p < 1.0f);
    ProbIndex *work = need ? malloc((size_t)V * sizeof *work) : NULL;
    if (need && !work) return -1;
    int id = sample_token_ws(logits, V, p, rng, work);
    free(work);
    return id;
}

// ---------------------------------------------------------------------------------------------
// generate

// log_softmax(z)[id] of raw logits: exp_poly in 16 double lanes (a fixed order: the same bits
// whichever thread computes it), 50x cheaper than a libm exp per vocabulary entry.
static float logprob_of(const float *z, int V, int id) {
    const float mx = row_max(z, V);
    double acc[16] = {0};
    int j = 0;
    for (; j + 16 <= V; j += 16)
        for (int l = 0; l < 16; l++) acc[l] += exp_poly(z[j + l] - mx);
    for (int l = 0; j < V; j++, l++) acc[l] += exp_poly(z[j] - mx);
    double s = 0.0;
    for (int l = 0; l < 16; l++) s += acc[l];
    return (float)((z[id] - mx) - log(s));
}

// The log-probs of the tokens sampled in one step, one task per sequence.
typedef struct {
    const float *logits;
    const int *slot, *seq_of, *lens;
    int *const *tokens;
    float **logp;
    int V;
} LogpJob;

static void logp_task(void *ctx, int k) {
    const LogpJob *j = ctx;
    const int i = j->seq_of[k], t = j->lens[i] - 1;
    j->logp[i][t] = logprob_of(j->logits + (size_t)j->slot[i] * j->V, j->V, j->tokens[i][t]);
}

int generate(const Model *m, const ModelAdapters *ad, const int *const *prompts, const int *prompt_lens, int n,
             const GenParams *p, uint64_t *rng, int **out_tokens, int *out_lens, float **out_logp, char *err) {
    const ModelConfig *c = &m->cfg;
    const int V = c->vocab_size, nv = ad && !ad->disabled ? ad->n_virtual : 0, max_new = p->max_new_tokens;
    if (n <= 0) return ftk_err(err, "generate: no prompts");
    if (max_new < 0) return ftk_err(err, "generate: max_new_tokens %d < 0", max_new);
    if (model_adapters_validate(m, ad, err)) return -1;
    int max_len = 1;
    for (int i = 0; i < n; i++) {
        out_tokens[i] = NULL;
        out_lens[i] = 0;
        if (out_logp) out_logp[i] = NULL;
        if (prompt_lens[i] <= 0) return ftk_err(err, "generate: prompt %d is empty", i);
        if (prompt_lens[i] > c->max_seq_len - nv)
            return ftk_err(err, "generate: prompt %d has %d tokens (+%d virtual), over the model's %d positions", i,
                           prompt_lens[i], nv, c->max_seq_len);
        long need = (long)nv + prompt_lens[i] + max_new;   // positions the sequence can fill (the last token is never fed)
        if (need > max_len) max_len = need > c->max_seq_len ? c->max_seq_len : (int)need;
    }
    KVCache *kv = NULL;
    if (kvcache_create(&kv, m, n, max_len, err)) return -1;
    float *logits = malloc((size_t)n * V * sizeof(float));       // row slot[i] = next-token logits of sequence i
    float *zcopy = out_logp ? malloc((size_t)V * sizeof(float)) : NULL;   // sampling copy (raw logits kept for logp)
    ProbIndex *work = malloc((size_t)V * sizeof *work);
    int *slot = malloc((size_t)n * sizeof(int)), *live = malloc((size_t)n * sizeof(int));
    int *seqs = malloc((size_t)n * sizeof(int)), *toks = malloc((size_t)n * sizeof(int));
    int *sampled = malloc((size_t)n * sizeof(int));   // the sequences that drew a token this step
    int rc = 0;
    if (!logits || !work || !slot || !live || !seqs || !toks || !sampled || (out_logp && !zcopy))
        rc = ftk_err(err, "generate: out of memory");
    for (int i = 0; i < n && rc == 0; i++) {
        out_tokens[i] = malloc((size_t)(max_new > 0 ? max_new : 1) * sizeof(int));
        if (out_logp) out_logp[i] = malloc((size_t)(max_new > 0 ? max_new : 1) * sizeof(float));
        if (!out_tokens[i] || (out_logp && !out_logp[i])) rc = ftk_err(err, "generate: out of memory");
    }
    for (int i = 0; i < n && rc == 0; i++) {
        rc = kvcache_prefill(m, ad, kv, i, prompts[i], prompt_lens[i], logits + (size_t)i * V, err);
        slot[i] = i;
        live[i] = max_new > 0;
    }
    while (rc == 0) {
        // sample the next token of every live sequence, then feed the ones that go on in one batch
        int nd = 0, ns = 0;
        for (int i = 0; i < n; i++) {
            if (!live[i]) continue;
            sampled[ns++] = i;
            float *z = logits + (size_t)slot[i] * V;
            int id;
            if (out_logp) {
                memcpy(zcopy, z, (size_t)V * sizeof(float));
                id = sample_token_ws(zcopy, V, p, rng, work);
            } else {
                id = sample_token_ws(z, V, p, rng, work);
            }
            out_tokens[i][out_lens[i]++] = id;
            int stop = out_lens[i] >= max_new || kv->len[i] >= kv->max_len;
            if (p->stop_at_eos && ((c->eos_id >= 0 && id == c->eos_id) || (c->bos_id >= 0 && id == c->bos_id))) stop = 1;
            if (stop) {
                live[i] = 0;
            } else {
                seqs[nd] = i;
                toks[nd] = id;
                nd++;
            }
        }
        if (out_logp && ns > 0) {
            // logits rows are still those of this step: the log-probs, over the pool, before the decode
            LogpJob lj = {logits, slot, sampled, out_lens, out_tokens, out_logp, V};
            par_for(ns, logp_task, &lj);
        }
        if (nd == 0) break;
        rc = kvcache_decode(m, ad, kv, seqs, toks, nd, logits, err);
        for (int r = 0; r < nd; r++) slot[seqs[r]] = r;
    }
    if (rc != 0)
        for (int i = 0; i < n; i++) {
            free(out_tokens[i]);
            out_tokens[i] = NULL;
            out_lens[i] = 0;
            if (out_logp) {
                free(out_logp[i]);
                out_logp[i] = NULL;
            }
        }
    kvcache_free(kv);
    free(logits); free(zcopy); free(work); free(slot); free(live); free(seqs); free(toks); free(sampled);
    return rc;
}
