// export_gguf.c — a Model as a GGUF model file (lora/export_gguf.h).
#include "lora/export_gguf.h"

#include <stdlib.h>
#include <string.h>

#include "lora/tokenizer_write.h"
#include "model/common.h"
#include "model/gguf.h"
#include "model/tokenizer.h"

uint32_t export_gguf_file_type(ExportDtype d) {
    switch (d) {
    case EXPORT_F16: return 1;
    case EXPORT_Q8_0: return 7;
    case EXPORT_BF16: return 32;
    default: return 0;
    }
}

static GgmlType weight_type(ExportDtype d, uint64_t ne0) {
    switch (d) {
    case EXPORT_F16: return GGML_TYPE_F16;
    case EXPORT_BF16: return GGML_TYPE_BF16;
    case EXPORT_Q8_0: return ne0 % GGML_QK8_0 == 0 ? GGML_TYPE_Q8_0 : GGML_TYPE_F16;
    default: return GGML_TYPE_F32;
    }
}

// A llama q or k weight, filled during the write: copied, then its rows permuted HF -> Meta.
typedef struct {
    const float *src;
    int n_head, head_dim, cols;
} PermuteFill;

static int fill_permuted(void *ctx, float *dst, size_t n, char *err) {
    const PermuteFill *p = ctx;
    if (n != (size_t)p->n_head * p->head_dim * p->cols) return ftk_err(err, "gguf export: q/k size mismatch");
    memcpy(dst, p->src, n * sizeof(float));
    permute_rows_hf_to_meta(dst, p->n_head, p->head_dim, p->cols);
    return 0;
}

typedef struct {
    GgufWriter *w;
    ExportDtype dtype;
    char *err;
} Out;

// A weight (rows, cols) row-major, or a vector (rows == 0) of cols values.
static int add(Out *o, const char *name, size_t rows, size_t cols, const float *data) {
    if (rows == 0) {
        const uint64_t ne[1] = {cols};
        return gguf_writer_add_tensor_f32(o->w, name, 1, ne, data, GGML_TYPE_F32, o->err);
    }
    const uint64_t ne[2] = {cols, rows};
    return gguf_writer_add_tensor_f32(o->w, name, 2, ne, data, weight_type(o->dtype, cols), o->err);
}

static int add_layer(Out *o, int l, const char *suffix, size_t rows, size_t cols, const float *data) {
    char name[96];
    snprintf(name, sizeof name, "blk.%d.%s", l, suffix);
    return add(o, name, rows, cols, data);
}

static int add_permuted(Out *o, int l, const char *suffix, PermuteFill *pf) {
    char name[96];
    snprintf(name, sizeof name, "blk.%d.%s", l, suffix);
    const uint64_t ne[2] = {(uint64_t)pf->cols, (uint64_t)pf->n_head * pf->head_dim};
    return gguf_writer_add_tensor_fill(o->w, name, 2, ne, fill_permuted, pf, weight_type(o->dtype, ne[0]), o->err);
}

static void default_name(const Model *m, char *buf, size_t n) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", m->path);
    size_t k = strlen(tmp);
    while (k > 1 && tmp[k - 1] == '/') tmp[--k] = 0;
    const char *base = strrchr(tmp, '/');
    base = base ? base + 1 : tmp;
    snprintf(buf, n, "%s", base);
    char *dot = strrchr(buf, '.');
    if (dot && dot != buf && (!strcmp(dot, ".gguf") || !strcmp(dot, ".bin"))) *dot = 0;
}

static int set_hparams(GgufWriter *w, const ModelConfig *c, char *err) {
    const char *a = c->arch == ARCH_LLAMA ? "llama" : "gpt2";
    char k[96];
#define U32(key, v) (snprintf(k, sizeof k, "%s." key, a), gguf_writer_set_u32(w, k, (uint32_t)(v), err))
#define F32(key, v) (snprintf(k, sizeof k, "%s." key, a), gguf_writer_set_f32(w, k, (v), err))
    int rc = U32("context_length", c->max_seq_len) || U32("embedding_length", c->dim) ||
             U32("block_count", c->n_layers) || U32("feed_forward_length", c->ffn_dim) ||
             U32("attention.head_count", c->n_heads);
    if (!rc && c->arch == ARCH_LLAMA)
        rc = U32("attention.head_count_kv", c->n_kv_heads) || F32("rope.freq_base", c->rope_theta) ||
             F32("attention.layer_norm_rms_epsilon", c->norm_eps) || U32("vocab_size", c->vocab_size) ||
             U32("rope.dimension_count", c->head_dim);
    if (!rc && c->arch == ARCH_GPT2) rc = F32("attention.layer_norm_epsilon", c->norm_eps);
#undef U32
#undef F32
    return rc;
}

int export_gguf(const Model *m, const char *path, const GgufExportOptions *opt, char *err) {
    const ModelConfig *c = &m->cfg;
    if (!m->tok) return ftk_err(err, "%s: the model has no tokenizer; a GGUF model must embed one", path);
    const int gpt2 = c->arch == ARCH_GPT2;
    const size_t C = (size_t)c->dim, V = (size_t)c->vocab_size, F = (size_t)c->ffn_dim;
    const size_t qd = (size_t)model_q_dim(c), kvd = (size_t)model_kv_dim(c), qkv = (size_t)model_qkv_dim(c);
    PermuteFill *fills = calloc((size_t)c->n_layers * 2, sizeof(PermuteFill));
    GgufWriter *w = NULL;
    if (!fills) return ftk_err(err, "out of memory");
    int rc = gguf_writer_create(&w, err);
    char name[256];
    if (opt->name) snprintf(name, sizeof name, "%s", opt->name);
    else default_name(m, name, sizeof name);
    char sub[FTK_ERR_LEN] = "";
    if (!rc)
        rc = gguf_writer_set_str(w, "general.architecture", gpt2 ? "gpt2" : "llama", err) ||
             gguf_writer_set_str(w, "general.type", "model", err) || gguf_writer_set_str(w, "general.name", name, err) ||
             set_hparams(w, c, err) || gguf_writer_set_u32(w, "general.file_type", export_gguf_file_type(opt->dtype), err);
    if (!rc && tokenizer_gguf_set_keys(w, m->tok, c->vocab_size, sub)) rc = ftk_err(err, "%s: %s", path, sub);
    if (!rc)
        rc = gguf_writer_set_u32(w, "general.quantization_version", 2, err) ||
             gguf_writer_set_alignment(w, GGUF_DEFAULT_ALIGNMENT, err);
    Out o = {w, opt->dtype, err};
    const ModelWeights *W = &m->w;
    if (!rc) rc = add(&o, "token_embd.weight", V, C, W->tok_emb);
    if (!rc && gpt2) rc = add(&o, "position_embd.weight", (size_t)c->max_seq_len, C, W->pos_emb);
    for (int l = 0; l < c->n_layers && !rc; l++) {
        const LayerWeights *L = &W->layers[l];
        rc = add_layer(&o, l, "attn_norm.weight", 0, C, L->attn_norm_w);
        if (gpt2) {
            rc = rc || add_layer(&o, l, "attn_norm.bias", 0, C, L->attn_norm_b) ||
                 add_layer(&o, l, "attn_qkv.weight", qkv, C, L->wqkv) ||
                 add_layer(&o, l, "attn_qkv.bias", 0, qkv, L->bqkv) ||
                 add_layer(&o, l, "attn_output.weight", C, qd, L->wo) ||
                 add_layer(&o, l, "attn_output.bias", 0, C, L->bo) ||
                 add_layer(&o, l, "ffn_norm.weight", 0, C, L->ffn_norm_w) ||
                 add_layer(&o, l, "ffn_norm.bias", 0, C, L->ffn_norm_b) ||
                 add_layer(&o, l, "ffn_up.weight", F, C, L->w_up) || add_layer(&o, l, "ffn_up.bias", 0, F, L->b_up) ||
                 add_layer(&o, l, "ffn_down.weight", C, F, L->w_down) ||
                 add_layer(&o, l, "ffn_down.bias", 0, C, L->b_down);
        } else {
            PermuteFill *pq = &fills[2 * l], *pk = &fills[2 * l + 1];
            *pq = (PermuteFill){L->wq, c->n_heads, c->head_dim, c->dim};
            *pk = (PermuteFill){L->wk, c->n_kv_heads, c->head_dim, c->dim};
            rc = rc || add_permuted(&o, l, "attn_q.weight", pq) || add_permuted(&o, l, "attn_k.weight", pk) ||
                 add_layer(&o, l, "attn_v.weight", kvd, C, L->wv) ||
                 add_layer(&o, l, "attn_output.weight", C, qd, L->wo) ||
                 add_layer(&o, l, "ffn_norm.weight", 0, C, L->ffn_norm_w) ||
                 add_layer(&o, l, "ffn_gate.weight", F, C, L->w_gate) ||
                 add_layer(&o, l, "ffn_up.weight", F, C, L->w_up) ||
                 add_layer(&o, l, "ffn_down.weight", C, F, L->w_down);
        }
    }
    if (!rc) rc = add(&o, "output_norm.weight", 0, C, W->out_norm_w);
    if (!rc && gpt2) rc = add(&o, "output_norm.bias", 0, C, W->out_norm_b);
    // llama: tied heads have no output tensor (llama.cpp falls back to token_embd); gpt2: the
    // converter always writes output as a copy of token_embd.
    if (!rc && (gpt2 || !c->tied_head)) rc = add(&o, "output.weight", V, C, W->lm_head);
    if (!rc) rc = gguf_writer_write(w, path, err);
    gguf_writer_free(w);
    free(fills);
    return rc ? -1 : 0;
}
