// gguf_model.c — a llama or gpt2 model from a GGUF file (FORMATS §2c): config from the
// `<arch>.*` keys, weights dequantized to fp32 into ftk's layout, tokenizer from tokenizer.ggml.*.
//
// GGUF dims are ne[0] = innermost, so a PyTorch (rows, cols) weight has ne = {cols, rows}.
// llama q/k rows are stored in Meta's interleaved RoPE order and are permuted to HF order here.
// gpt2's attn_qkv / attn_output / ffn_up / ffn_down are already in Linear (out, in) layout (the
// converter transposed the Conv1D weights).
#include <stdlib.h>
#include <string.h>

#include "model/common.h"
#include "model/gguf.h"
#include "model/loaders.h"
#include "model/tokenizer.h"

typedef struct {
    const GgufFile *f;
    unsigned char *used;          // per tensor: consumed by the loader
    size_t type_elems[32];        // elements of 2-D weights by ggml type (for src_dtype)
    size_t other_elems;           // 2-D weights of types >= 32
} LoadCtx;

// Finds `name`, checks that its shape is the PyTorch shape (rows, cols) (rows = 0 for a 1-D
// tensor of cols elements) and converts it to fp32 into dst.
static int load_tensor(LoadCtx *c, const char *name, size_t rows, size_t cols, float *dst, char *err) {
    const GgufTensor *t = gguf_find_tensor(c->f, name);
    if (!t) return ftk_err(err, "%s: missing tensor '%s'", c->f->path, name);
    const uint64_t want[4] = {cols, rows ? rows : 1, 1, 1};
    if (memcmp(t->ne, want, sizeof want) != 0)
        return ftk_err(err, "%s: tensor '%s' has GGUF shape [%llu, %llu, %llu, %llu], expected [%zu, %zu] "
                            "(ne order: innermost first) from the model config", c->f->path, name,
                       (unsigned long long)t->ne[0], (unsigned long long)t->ne[1], (unsigned long long)t->ne[2],
                       (unsigned long long)t->ne[3], cols, rows ? rows : 1);
    if (gguf_tensor_to_f32(c->f, t, dst, t->n_elems, err)) return -1;
    c->used[t - c->f->tensors] = 1;
    if (rows) {
        if ((unsigned)t->type < 32) c->type_elems[t->type] += t->n_elems;
        else c->other_elems += t->n_elems;
    }
    return 0;
}

static int load_layer_tensor(LoadCtx *c, int l, const char *suffix, size_t rows, size_t cols, float *dst, char *err) {
    char name[128];
    snprintf(name, sizeof name, "blk.%d.%s", l, suffix);
    return load_tensor(c, name, rows, cols, dst, err);
}

// Reads a u32 hyperparameter `<arch>.<key>`; required ones fail when absent.
static int get_hparam(const GgufFile *f, const char *arch, const char *key, int required, int *out, char *err) {
    char full[160];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    uint32_t v;
    int rc = gguf_get_u32(f, full, &v, err);
    if (rc == GGUF_ABSENT) return required ? ftk_err(err, "%s: missing key '%s'", f->path, full) : 0;
    if (rc) return -1;
    if (v == 0 || v > (1u << 30)) return ftk_err(err, "%s: key '%s' = %u is out of range", f->path, full, v);
    *out = (int)v;
    return 0;
}

static int get_fparam(const GgufFile *f, const char *arch, const char *key, float *out, char *err) {
    char full[160];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    int rc = gguf_get_f32(f, full, out, err);
    return rc == GGUF_ABSENT ? 0 : rc;
}

static int read_config(const GgufFile *f, ModelConfig *cfg, char *err) {
    char *arch = NULL;
    int rc = gguf_get_str(f, "general.architecture", &arch, err);
    if (rc == GGUF_ABSENT) return ftk_err(err, "%s: missing key 'general.architecture'", f->path);
    if (rc) return -1;
    memset(cfg, 0, sizeof *cfg);
    if (strcmp(arch, "llama") == 0) cfg->arch = ARCH_LLAMA;
    else if (strcmp(arch, "gpt2") == 0) cfg->arch = ARCH_GPT2;
    else {
        ftk_err(err, "%s: unsupported architecture '%s' (ftk loads llama and gpt2)", f->path, arch);
        free(arch);
        return -1;
    }
    const int gpt2 = cfg->arch == ARCH_GPT2;
    int rope_dims = 0;
    cfg->norm_eps = 1e-5f;
    cfg->rope_theta = 10000.0f;
    if (get_hparam(f, arch, "embedding_length", 1, &cfg->dim, err) ||
        get_hparam(f, arch, "block_count", 1, &cfg->n_layers, err) ||
        get_hparam(f, arch, "attention.head_count", 1, &cfg->n_heads, err) ||
        get_hparam(f, arch, "context_length", 1, &cfg->max_seq_len, err) ||
        get_hparam(f, arch, "feed_forward_length", !gpt2, &cfg->ffn_dim, err) ||
        get_hparam(f, arch, "attention.head_count_kv", 0, &cfg->n_kv_heads, err) ||
        get_hparam(f, arch, "rope.dimension_count", 0, &rope_dims, err) ||
        get_fparam(f, arch, gpt2 ? "attention.layer_norm_epsilon" : "attention.layer_norm_rms_epsilon",
                   &cfg->norm_eps, err) ||
        get_fparam(f, arch, "rope.freq_base", &cfg->rope_theta, err)) {
        free(arch);
        return -1;
    }
    free(arch);
    if (!cfg->n_kv_heads) cfg->n_kv_heads = cfg->n_heads;
    if (gpt2 && cfg->n_kv_heads != cfg->n_heads)
        return ftk_err(err, "%s: gpt2 with head_count_kv %d != head_count %d", f->path, cfg->n_kv_heads, cfg->n_heads);
    if (!cfg->ffn_dim) cfg->ffn_dim = 4 * cfg->dim;
    if (cfg->dim % cfg->n_heads != 0)
        return ftk_err(err, "%s: embedding_length %d is not a multiple of head_count %d", f->path, cfg->dim,
                       cfg->n_heads);
    cfg->head_dim = cfg->dim / cfg->n_heads;
    if (!gpt2 && rope_dims && rope_dims != cfg->head_dim)
        return ftk_err(err, "%s: rope.dimension_count %d != head size %d (partial rotary is not supported)", f->path,
                       rope_dims, cfg->head_dim);
    if (!(cfg->norm_eps > 0.0f && cfg->norm_eps < 1.0f) || !(cfg->rope_theta > 0.0f))
        return ftk_err(err, "%s: bad norm epsilon %g or rope freq_base %g", f->path, cfg->norm_eps, cfg->rope_theta);

    // Vocabulary size and head tying from the tensors themselves.
    const GgufTensor *emb = gguf_find_tensor(f, "token_embd.weight");
    if (!emb) return ftk_err(err, "%s: missing tensor 'token_embd.weight'", f->path);
    if (emb->n_dims != 2 || emb->ne[0] != (uint64_t)cfg->dim || emb->ne[1] == 0 || emb->ne[1] > (1u << 24))
        return ftk_err(err, "%s: tensor 'token_embd.weight' has GGUF shape [%llu, %llu], expected [%d, vocab]", f->path,
                       (unsigned long long)emb->ne[0], (unsigned long long)emb->ne[1], cfg->dim);
    cfg->vocab_size = (int)emb->ne[1];
    const GgufTensor *out = gguf_find_tensor(f, "output.weight");
    // gpt2 converters write `output` as a copy of token_embd: identical bytes mean a tied head.
    cfg->tied_head = !out || (out->type == emb->type && out->n_bytes == emb->n_bytes &&
                              memcmp(out->ne, emb->ne, sizeof emb->ne) == 0 &&
                              memcmp(out->data, emb->data, emb->n_bytes) == 0);
    uint32_t id;
    cfg->bos_id = cfg->eos_id = -1;
    if (gguf_get_u32(f, "tokenizer.ggml.bos_token_id", &id, NULL) == 0 && id < (uint32_t)cfg->vocab_size)
        cfg->bos_id = (int)id;
    if (gguf_get_u32(f, "tokenizer.ggml.eos_token_id", &id, NULL) == 0 && id < (uint32_t)cfg->vocab_size)
        cfg->eos_id = (int)id;
    return 0;
}

static int load_weights(LoadCtx *c, Model *m, char *err) {
    const ModelConfig *cfg = &m->cfg;
    const int gpt2 = cfg->arch == ARCH_GPT2;
    const size_t C = (size_t)cfg->dim, V = (size_t)cfg->vocab_size, F = (size_t)cfg->ffn_dim;
    const size_t qd = (size_t)model_q_dim(cfg), kvd = (size_t)model_kv_dim(cfg), qkv = (size_t)model_qkv_dim(cfg);
    ModelWeights *w = &m->w;
    if (load_tensor(c, "token_embd.weight", V, C, w->tok_emb, err)) return -1;
    if (gpt2 && load_tensor(c, "position_embd.weight", (size_t)cfg->max_seq_len, C, w->pos_emb, err)) return -1;
    for (int l = 0; l < cfg->n_layers; l++) {
        LayerWeights *L = &w->layers[l];
        if (load_layer_tensor(c, l, "attn_norm.weight", 0, C, L->attn_norm_w, err) ||
            load_layer_tensor(c, l, "attn_output.weight", C, qd, L->wo, err) ||
            load_layer_tensor(c, l, "ffn_norm.weight", 0, C, L->ffn_norm_w, err) ||
            load_layer_tensor(c, l, "ffn_up.weight", F, C, L->w_up, err) ||
            load_layer_tensor(c, l, "ffn_down.weight", C, F, L->w_down, err))
            return -1;
        if (gpt2) {
            if (load_layer_tensor(c, l, "attn_norm.bias", 0, C, L->attn_norm_b, err) ||
                load_layer_tensor(c, l, "attn_qkv.weight", qkv, C, L->wqkv, err) ||
                load_layer_tensor(c, l, "attn_qkv.bias", 0, qkv, L->bqkv, err) ||
                load_layer_tensor(c, l, "attn_output.bias", 0, C, L->bo, err) ||
                load_layer_tensor(c, l, "ffn_norm.bias", 0, C, L->ffn_norm_b, err) ||
                load_layer_tensor(c, l, "ffn_up.bias", 0, F, L->b_up, err) ||
                load_layer_tensor(c, l, "ffn_down.bias", 0, C, L->b_down, err))
                return -1;
        } else {
            if (load_layer_tensor(c, l, "attn_q.weight", qd, C, L->wq, err) ||
                load_layer_tensor(c, l, "attn_k.weight", kvd, C, L->wk, err) ||
                load_layer_tensor(c, l, "attn_v.weight", kvd, C, L->wv, err) ||
                load_layer_tensor(c, l, "ffn_gate.weight", F, C, L->w_gate, err))
                return -1;
            // Meta interleaved pairs -> HF rotate-half rows (k with the kv head count)
            permute_rows_meta_to_hf(L->wq, cfg->n_heads, cfg->head_dim, cfg->dim);
            permute_rows_meta_to_hf(L->wk, cfg->n_kv_heads, cfg->head_dim, cfg->dim);
        }
    }
    if (load_tensor(c, "output_norm.weight", 0, C, w->out_norm_w, err)) return -1;
    if (gpt2 && load_tensor(c, "output_norm.bias", 0, C, w->out_norm_b, err)) return -1;
    const GgufTensor *out = gguf_find_tensor(c->f, "output.weight");
    if (!cfg->tied_head) {
        if (load_tensor(c, "output.weight", V, C, w->lm_head, err)) return -1;
    } else if (out) {
        c->used[out - c->f->tensors] = 1;   // a byte-identical copy of token_embd
    }
    // Anything left over would change the model's math (biases, rope_freqs, ...): refuse it.
    for (size_t i = 0; i < c->f->n_tensors; i++)
        if (!c->used[i])
            return ftk_err(err, "%s: unexpected tensor '%s' for architecture %s", c->f->path, c->f->tensors[i].name,
                           gpt2 ? "gpt2" : "llama");
    return 0;
}

// The ggml type holding most elements of the 2-D weights; "mixed" when none holds half of them.
static void set_src_dtype(Model *m, const LoadCtx *c) {
    size_t total = c->other_elems, best = 0;
    int best_t = -1;
    for (int t = 0; t < 32; t++) {
        total += c->type_elems[t];
        if (c->type_elems[t] > best) {
            best = c->type_elems[t];
            best_t = t;
        }
    }
    const char *name = best_t >= 0 && 2 * best >= total ? gguf_type_name((uint32_t)best_t) : "mixed";
    snprintf(m->src_dtype, sizeof m->src_dtype, "%s", name);
}

int load_gguf_weights(Model *m, const char *path, char *err) {
    GgufFile f;
    if (gguf_open(&f, path, err)) return -1;
    ModelConfig cfg;
    if (read_config(&f, &cfg, err)) {
        gguf_close(&f);
        return -1;
    }
    if (!m->path[0]) snprintf(m->path, sizeof m->path, "%s", path);
    LoadCtx c = {0};
    c.f = &f;
    c.used = calloc(f.n_tensors ? f.n_tensors : 1, 1);
    int rc = !c.used ? ftk_err(err, "%s: out of memory", path) : model_alloc_weights(m, &cfg, err);
    if (!rc) rc = load_weights(&c, m, err);
    if (!rc) {
        set_src_dtype(m, &c);
        snprintf(m->format, sizeof m->format, "gguf");
    }
    free(c.used);
    gguf_close(&f);
    return rc;
}

int load_gguf(Model *m, const char *path, char *err) {
    if (load_gguf_weights(m, path, err)) return -1;
    return tokenizer_load_gguf(&m->tok, path, err);
}
