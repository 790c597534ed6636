// model.c — format detection, the weight block, parameter counts, q/k row permutation.
#include "model/model.h"

#include <stdlib.h>
#include <string.h>

#include "model/common.h"
#include "model/loaders.h"
#include "model/tokenizer.h"

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static int has_gguf_magic(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    unsigned char b[4] = {0};
    size_t got = fread(b, 1, 4, f);
    fclose(f);
    return got == 4 && memcmp(b, "GGUF", 4) == 0;
}

int model_load(Model *m, const char *path, const char *tokenizer_path, char *err) {
    memset(m, 0, sizeof *m);
    if (strlen(path) >= sizeof m->path) return ftk_err(err, "%s: path too long", path);
    snprintf(m->path, sizeof m->path, "%s", path);
    if (!ftk_file_exists(path)) return ftk_err(err, "%s: no such file or directory", path);
    int rc;
    if (ftk_is_dir(path)) {
        char cfg[4200];
        snprintf(cfg, sizeof cfg, "%s/config.json", path);
        if (ftk_file_exists(cfg)) {
            rc = load_hf_dir(m, path, err);
        } else {
            // A llama2.c folder: exactly one *.bin model file that is not a tokenizer.
            rc = load_llama2c(m, path, tokenizer_path, err);
        }
    } else if (ends_with(path, ".gguf") || has_gguf_magic(path)) {
        rc = load_gguf(m, path, err);
    } else if (ends_with(path, ".bin")) {
        rc = load_llama2c(m, path, tokenizer_path, err);
    } else if (ends_with(path, "config.json")) {
        return ftk_err(err, "%s: pass the model directory, not config.json", path);
    } else {
        return ftk_err(err, "%s: unknown model format (expected an HF directory with config.json, "
                            "a .gguf file, or a llama2.c .bin)", path);
    }
    if (rc != 0) {
        model_free(m);
        return -1;
    }
    if (tokenizer_path && m->format[0] && strcmp(m->format, "llama2c") != 0) {
        // An explicit tokenizer overrides the one found with the model.
        Tokenizer *t = NULL;
        int trc;
        if (ends_with(tokenizer_path, ".model")) trc = tokenizer_load_spm_model(&t, tokenizer_path, err);
        else if (ends_with(tokenizer_path, ".json")) trc = tokenizer_load_hf_json(&t, tokenizer_path, err);
        else if (ends_with(tokenizer_path, ".gguf")) trc = tokenizer_load_gguf(&t, tokenizer_path, err);
        else trc = tokenizer_load_llama2c(&t, tokenizer_path, m->cfg.vocab_size, err);
        if (trc) { model_free(m); return -1; }
        if (m->tok) tokenizer_free(m->tok);
        m->tok = t;
    }
    if (m->tok && m->tok->n_vocab > m->cfg.vocab_size) {
        int nv = m->tok->n_vocab, mv = m->cfg.vocab_size;
        model_free(m);
        return ftk_err(err, "%s: tokenizer has %d tokens but the model's vocabulary is %d", path, nv, mv);
    }
    return 0;
}

void model_free(Model *m) {
    if (!m) return;
    if (m->w.layers) free(m->w.layers);
    free(m->weight_mem);
    free(m->hf_config_json);
    if (m->tok) tokenizer_free(m->tok);
    memset(m, 0, sizeof *m);
}

// Walks the tensor list of cfg in a fixed order; with base != NULL points the tensors at their
// places, else only counts. Returns the number of floats.
static size_t layout_weights(const ModelConfig *c, ModelWeights *w, float *base) {
    size_t off = 0;
    const size_t C = (size_t)c->dim, V = (size_t)c->vocab_size, F = (size_t)c->ffn_dim;
    const size_t qkv = (size_t)model_qkv_dim(c), qd = (size_t)model_q_dim(c), kvd = (size_t)model_kv_dim(c);
    const int gpt2 = c->arch == ARCH_GPT2;
#define TAKE(ptr, count)                          \
    do {                                          \
        if (base) (ptr) = base + off;             \
        off += (count);                           \
    } while (0)
    TAKE(w->tok_emb, V * C);
    if (gpt2) TAKE(w->pos_emb, (size_t)c->max_seq_len * C);
    for (int l = 0; l < c->n_layers; l++) {
        LayerWeights *L = base ? &w->layers[l] : &(LayerWeights){0};
        TAKE(L->attn_norm_w, C);
        if (gpt2) TAKE(L->attn_norm_b, C);
        TAKE(L->wqkv, qkv * C);
        if (base) {
            L->wq = L->wqkv;
            L->wk = L->wqkv + qd * C;
            L->wv = L->wqkv + (qd + kvd) * C;
        }
        if (gpt2) TAKE(L->bqkv, qkv);
        TAKE(L->wo, C * qd);
        if (gpt2) TAKE(L->bo, C);
        TAKE(L->ffn_norm_w, C);
        if (gpt2) TAKE(L->ffn_norm_b, C);
        if (gpt2) {
            TAKE(L->w_up, F * C);
            TAKE(L->b_up, F);
        } else {
            TAKE(L->w_gate_up, 2 * F * C);
            if (base) {
                L->w_gate = L->w_gate_up;
                L->w_up = L->w_gate_up + F * C;
            }
        }
        TAKE(L->w_down, C * F);
        if (gpt2) TAKE(L->b_down, C);
    }
    TAKE(w->out_norm_w, C);
    if (gpt2) TAKE(w->out_norm_b, C);
    if (c->tied_head) {
        if (base) w->lm_head = w->tok_emb;
    } else {
        TAKE(w->lm_head, V * C);
    }
#undef TAKE
    return off;
}

int model_alloc_weights(Model *m, const ModelConfig *cfg, char *err) {
    const ModelConfig *c = cfg;
    if (c->dim <= 0 || c->n_layers <= 0 || c->n_heads <= 0 || c->n_kv_heads <= 0 || c->vocab_size <= 0 ||
        c->ffn_dim <= 0 || c->head_dim <= 0 || c->max_seq_len <= 0)
        return ftk_err(err, "%s: invalid model dimensions (dim %d, layers %d, heads %d/%d, ffn %d, vocab %d)",
                       m->path, c->dim, c->n_layers, c->n_heads, c->n_kv_heads, c->ffn_dim, c->vocab_size);
    if (c->n_heads % c->n_kv_heads != 0)
        return ftk_err(err, "%s: n_heads %d is not a multiple of n_kv_heads %d", m->path, c->n_heads, c->n_kv_heads);
    if (c->head_dim % 2 != 0 && c->arch == ARCH_LLAMA)
        return ftk_err(err, "%s: head_dim %d must be even for RoPE", m->path, c->head_dim);
    if (c->dim > (1 << 20) || c->n_layers > 4096 || c->vocab_size > (1 << 24) || c->ffn_dim > (1 << 22) ||
        c->max_seq_len > (1 << 24))
        return ftk_err(err, "%s: model dimensions out of range", m->path);
    m->cfg = *cfg;
    ModelWeights probe = {0};
    size_t n = layout_weights(c, &probe, NULL);
    size_t bytes;
    if (ftk_mul(n, sizeof(float), &bytes)) return ftk_err(err, "%s: model too large", m->path);
    // huge pages: decoding reads every weight once per token, and with 4 KiB pages its speed
    // varied by 25% from run to run (TLB misses)
    m->weight_mem = ftk_alloc_big(bytes);
    m->w.layers = calloc((size_t)c->n_layers, sizeof(LayerWeights));
    if (!m->weight_mem || !m->w.layers) {
        free(m->weight_mem);
        free(m->w.layers);
        m->weight_mem = NULL;
        m->w.layers = NULL;
        return ftk_err(err, "%s: out of memory for %zu weights", m->path, n);
    }
    m->n_weight_floats = n;
    layout_weights(c, &m->w, m->weight_mem);
    return 0;
}

size_t model_param_count(const ModelConfig *c) {
    ModelWeights probe = {0};
    size_t n = layout_weights(c, &probe, NULL);
    return n;
}

// W rows are n_head blocks of head_dim rows. Meta order inside a head: (hd/2 pairs, 2);
// HF order: (2 halves, hd/2). to_hf: new[h][half][j] = old[h][j][half].
static void permute_rows(float *w, int n_head, int head_dim, int cols, int to_hf) {
    const int half = head_dim / 2;
    const size_t row_bytes = (size_t)cols * sizeof(float);
    float *tmp = malloc((size_t)head_dim * row_bytes);
    if (!tmp) return;  // callers validated sizes; allocation of one head block cannot fail in practice
    for (int h = 0; h < n_head; h++) {
        float *blk = w + (size_t)h * head_dim * cols;
        memcpy(tmp, blk, (size_t)head_dim * row_bytes);
        for (int j = 0; j < half; j++) {
            for (int s = 0; s < 2; s++) {
                int meta_row = 2 * j + s, hf_row = s * half + j;
                int dst = to_hf ? hf_row : meta_row, src = to_hf ? meta_row : hf_row;
                memcpy(blk + (size_t)dst * cols, tmp + (size_t)src * cols, row_bytes);
            }
        }
    }
    free(tmp);
}

void permute_rows_meta_to_hf(float *w, int n_head, int head_dim, int cols) {
    permute_rows(w, n_head, head_dim, cols, 1);
}

void permute_rows_hf_to_meta(float *w, int n_head, int head_dim, int cols) {
    permute_rows(w, n_head, head_dim, cols, 0);
}
